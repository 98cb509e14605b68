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

/// The `[E]` bias `value` broadcasts over the tokens (`linalg.broadcast`
/// along dimension 0, used once), or null.
static Value broadcastBias(Value value) {
  auto broadcast = value.getDefiningOp<linalg::BroadcastOp>();
  if (!broadcast || broadcast.getDimensions() != ArrayRef<int64_t>{0} ||
      !broadcast->hasOneUse())
    return {};
  return broadcast.getInput();
}

std::optional<RouterMatmul> moe::matchRouterMatmul(RouteOp route) {
  auto matmul = route.getLogits().getDefiningOp<linalg::MatmulOp>();
  // Not transposed, not shared with other users, accumulating into zeros or
  // a broadcast bias.
  if (!matmul || matmul.hasUserDefinedMaps() || !matmul->hasOneUse())
    return std::nullopt;
  Value init = matmul.getOutputs()[0];
  Value bias = broadcastBias(init);
  if (!bias && !isZeroFill(init))
    return std::nullopt;
  Value input = matmul.getInputs()[0], router = matmul.getInputs()[1];
  Type elementType = route.getWeights().getType().getElementType();
  if (cast<RankedTensorType>(input.getType()).getElementType() != elementType ||
      cast<RankedTensorType>(router.getType()).getElementType() !=
          elementType ||
      (bias &&
       cast<RankedTensorType>(bias.getType()).getElementType() != elementType))
    return std::nullopt;
  return RouterMatmul{input, router, bias};
}

namespace {
struct FuseRouterMatmul : public OpRewritePattern<RouteOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(RouteOp op,
                                PatternRewriter &rewriter) const override {
    if (op.getRouting().isExpertChoice())
      return rewriter.notifyMatchFailure(
          op, "expert choice needs the logits of all tokens");
    std::optional<RouterMatmul> matmul = matchRouterMatmul(op);
    if (!matmul)
      return rewriter.notifyMatchFailure(
          op, "logits are not an untransposed linalg.matmul into zeros or a "
              "broadcast bias, of the routing's element type, used by the "
              "routing only");
    rewriter.replaceOpWithNewOp<GateOp>(
        op, op.getExpertIds().getType(), op.getWeights().getType(),
        matmul->input, matmul->router, matmul->bias, op.getSelectionBias(),
        op.getTokenGroups(), op.getResidual(), op.getRouting());
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
