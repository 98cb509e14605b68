//===- Expand.cpp - moe.layer to its explicit routing plan ----------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace moe {
#define GEN_PASS_DEF_MOEEXPAND
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

/// A `tensor.empty` `[rows, cols]`, with `rows` taken from `dynRows` when it
/// is dynamic.
static Value emptyTensor(OpBuilder &b, Location loc, int64_t rows,
                         Value dynRows, int64_t cols, Type elementType) {
  SmallVector<Value> dynSizes;
  if (ShapedType::isDynamic(rows))
    dynSizes.push_back(dynRows);
  return tensor::EmptyOp::create(b, loc, ArrayRef<int64_t>{rows, cols},
                                 elementType, dynSizes);
}

/// A zero-filled `[rows, cols]` tensor (see emptyTensor).
static Value zeroTensor(OpBuilder &b, Location loc, int64_t rows, Value dynRows,
                        int64_t cols, Type elementType) {
  Value zero = arith::ConstantOp::create(b, loc, b.getZeroAttr(elementType));
  return linalg::FillOp::create(
             b, loc, zero,
             emptyTensor(b, loc, rows, dynRows, cols, elementType))
      .getResult(0);
}

namespace {
struct ExpandLayer : public OpRewritePattern<LayerOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(LayerOp op,
                                PatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    auto inputType = cast<RankedTensorType>(op.getInput().getType());
    Type elementType = inputType.getElementType();
    Type indexType = rewriter.getI32Type();
    int64_t tokens = inputType.getDimSize(0);
    int64_t hidden = inputType.getDimSize(1);
    int64_t numExperts = op.getNumExperts();
    RoutingAttr routing = op.getRouting();
    int64_t k = routing.getK();

    Value dynTokens;
    if (ShapedType::isDynamic(tokens))
      dynTokens = tensor::DimOp::create(rewriter, loc, op.getInput(), 0);

    // Router logits, accumulated into zeros or into the router bias
    // broadcast over the tokens.
    Value logitsInit;
    if (Value bias = op.getRouterBias())
      logitsInit = linalg::BroadcastOp::create(
                       rewriter, loc, bias,
                       emptyTensor(rewriter, loc, tokens, dynTokens, numExperts,
                                   elementType),
                       ArrayRef<int64_t>{0})
                       .getResult()[0];
    else
      logitsInit =
          zeroTensor(rewriter, loc, tokens, dynTokens, numExperts, elementType);
    Value logits = linalg::MatmulOp::create(
                       rewriter, loc, ValueRange{op.getInput(), op.getRouter()},
                       ValueRange{logitsInit})
                       .getResult(0);

    // Routing.
    auto pairType = [&](Type elt) {
      return RankedTensorType::get({tokens, k}, elt);
    };
    auto route = RouteOp::create(
        rewriter, loc, pairType(indexType), pairType(elementType), logits,
        op.getSelectionBias(), Value(), Value(), routing);

    // Dispatch. Capacity is carried out by the dispatch, except with expert
    // choice, where the routing already keeps C tokens per expert.
    int64_t rows =
        ShapedType::isDynamic(tokens) ? ShapedType::kDynamic : tokens * k;
    auto dispatch = DispatchOp::create(
        rewriter, loc, RankedTensorType::get({rows}, indexType),
        RankedTensorType::get({numExperts + 1}, indexType), pairType(indexType),
        route.getExpertIds(), rewriter.getI64IntegerAttr(numExperts),
        rewriter.getI64IntegerAttr(1),
        rewriter.getF64FloatAttr(
            routing.isExpertChoice()
                ? 0.0
                : routing.getCapacityFactor().convertToDouble()),
        rewriter.getI64IntegerAttr(
            routing.isExpertChoice() ? 0 : routing.getCapacity()));

    // Experts over the permuted rows.
    Value dynRows;
    if (ShapedType::isDynamic(rows)) {
      Value kValue = arith::ConstantIndexOp::create(rewriter, loc, k);
      dynRows = arith::MulIOp::create(rewriter, loc, dynTokens, kValue);
    }
    SmallVector<Value> dynSizes;
    if (dynRows)
      dynSizes.push_back(dynRows);
    Value dest = tensor::EmptyOp::create(
        rewriter, loc, ArrayRef<int64_t>{rows, hidden}, elementType, dynSizes);
    auto experts = ExpertsOp::create(
        rewriter, loc, dest.getType(), op.getInput(),
        dispatch.getTokenIndices(), dispatch.getExpertOffsets(), dest,
        op.getGate(), op.getUp(), op.getDown(), op.getGateBias(),
        op.getUpBias(), op.getDownBias(), op.getExpert(),
        rewriter.getI64IntegerAttr(0), /*placement=*/PlacementAttr());

    // Shared experts, added in the combine.
    Value shared;
    if (op.hasSharedExperts())
      shared = SharedExpertsOp::create(rewriter, loc, inputType, op.getInput(),
                                       op.getSharedGate(), op.getSharedUp(),
                                       op.getSharedDown(), op.getSharedScale(),
                                       op.getExpert());

    rewriter.replaceOpWithNewOp<CombineOp>(op, inputType, experts.getResult(),
                                           dispatch.getPositions(),
                                           route.getWeights(), shared);
    return success();
  }
};

struct MoEExpandPass : public moe::impl::MoEExpandBase<MoEExpandPass> {
  using MoEExpandBase::MoEExpandBase;

  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<ExpandLayer>(&getContext());
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
