//===- FuseGating.cpp - Fuse the router matmul into the routing -----------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace moe {
#define GEN_PASS_DEF_MOEFUSEGATING
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

/// Whether `value` is a `linalg.fill` of zero.
static bool isZeroFill(Value value) {
  auto fill = value.getDefiningOp<linalg::FillOp>();
  if (!fill)
    return false;
  Value scalar = fill.getInputs()[0];
  return matchPattern(scalar, m_AnyZeroFloat()) ||
         matchPattern(scalar, m_Zero());
}

namespace {
struct FuseRouterMatmul : public OpRewritePattern<RouteOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(RouteOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getRouting().isExpertChoice())
      return rewriter.notifyMatchFailure(
          op, "expert choice needs the logits of all tokens");
    auto matmul = op.getLogits().getDefiningOp<linalg::MatmulOp>();
    if (!matmul)
      return rewriter.notifyMatchFailure(op, "logits are not a linalg.matmul");
    if (matmul.hasUserDefinedMaps())
      return rewriter.notifyMatchFailure(op, "matmul has transposed operands");
    if (!matmul->hasOneUse())
      return rewriter.notifyMatchFailure(op, "logits have other users");
    if (!isZeroFill(matmul.getOutputs()[0]))
      return rewriter.notifyMatchFailure(op,
                                         "matmul accumulates into non-zero");
    Value input = matmul.getInputs()[0], router = matmul.getInputs()[1];
    Type elementType = op.getWeights().getType().getElementType();
    if (cast<RankedTensorType>(input.getType()).getElementType() !=
            elementType ||
        cast<RankedTensorType>(router.getType()).getElementType() !=
            elementType)
      return rewriter.notifyMatchFailure(op, "matmul mixes element types");
    rewriter.replaceOpWithNewOp<GateOp>(
        op, op.getExpertIds().getType(), op.getWeights().getType(), input,
        router, op.getSelectionBias(), op.getTokenGroups(), op.getResidual(),
        op.getRouting());
    return success();
  }
};

struct MoEFuseGatingPass
    : public moe::impl::MoEFuseGatingBase<MoEFuseGatingPass> {
  using MoEFuseGatingBase::MoEFuseGatingBase;

  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseRouterMatmul>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
