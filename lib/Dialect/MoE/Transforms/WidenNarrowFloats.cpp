//===- WidenNarrowFloats.cpp - moe ops on f16/bf16 computed in f32 --------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Verifier.h"

namespace moe {
#define GEN_PASS_DEF_MOEWIDENNARROWFLOATS
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

/// `type` with an f32 element type where it is a tensor of a float type
/// narrower than 32 bits; null otherwise.
static RankedTensorType widened(Type type) {
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor)
    return {};
  auto element = dyn_cast<FloatType>(tensor.getElementType());
  if (!element || element.getWidth() >= 32)
    return {};
  return tensor.clone(Float32Type::get(type.getContext()));
}

/// Whether `op` computes on narrow floats: a narrow float result, or a
/// narrow float operand other than an expert weight matrix.
static bool hasNarrowActivations(Operation *op) {
  if (llvm::any_of(op->getResultTypes(),
                   [](Type t) { return static_cast<bool>(widened(t)); }))
    return true;
  return llvm::any_of(op->getOpOperands(), [](OpOperand &operand) {
    return widened(operand.get().getType()) && !isExpertWeightMatrix(operand);
  });
}

/// Rewrites `op` in place to compute in f32 (see the pass description).
static void widen(Operation *op) {
  OpBuilder b(op);
  Location loc = op->getLoc();
  for (OpOperand &operand : op->getOpOperands()) {
    RankedTensorType type = widened(operand.get().getType());
    if (!type || isExpertWeightMatrix(operand))
      continue;
    operand.set(arith::ExtFOp::create(b, loc, type, operand.get()));
  }
  b.setInsertionPointAfter(op);
  for (OpResult result : op->getResults()) {
    RankedTensorType type = widened(result.getType());
    if (!type)
      continue;
    Type original = result.getType();
    result.setType(type);
    auto rounded = arith::TruncFOp::create(b, loc, original, result);
    result.replaceAllUsesExcept(rounded, rounded);
  }
}

namespace {
struct MoEWidenNarrowFloatsPass
    : public moe::impl::MoEWidenNarrowFloatsBase<MoEWidenNarrowFloatsPass> {
  void runOnOperation() override {
    SmallVector<Operation *> ops;
    getOperation().walk([&](Operation *op) {
      if (isa<MoEDialect>(op->getDialect()) &&
          !isa<GenericExpertsOp, YieldOp>(op) &&
          !op->getParentOfType<GenericExpertsOp>() && hasNarrowActivations(op))
        ops.push_back(op);
    });
    for (Operation *op : ops) {
      widen(op);
      if (failed(mlir::verify(op))) {
        op->emitOpError("cannot be computed in f32 by moe-widen-narrow-floats");
        return signalPassFailure();
      }
    }
  }
};
} // namespace
