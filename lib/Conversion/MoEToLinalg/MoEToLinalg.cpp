//===- MoEToLinalg.cpp - Lower the moe dialect to linalg ------------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Tensor-level lowering of the routing plan ops. Routing scores are linalg ops
// over a block of tokens, the top-k choice and the counting sort are scalar
// scf loops over tensors, experts are GEMMs over the rows of one expert at a
// time, and the combine is a per-token reduction.
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/MoEToLinalg/MoEToLinalg.h"
#include "moe/Conversion/ExpertMath.h"
#include "moe/Conversion/Passes.h"
#include "moe/Conversion/RuntimeHooks.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "QuantizedMatmul.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Transforms/DialectConversion.h"
#include "llvm/ADT/TypeSwitch.h"

#include <cmath>
#include <limits>

namespace moe {
#define GEN_PASS_DEF_CONVERTMOETOLINALG
#include "moe/Conversion/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

using utils::IteratorType;

//===----------------------------------------------------------------------===//
// Small builders
//===----------------------------------------------------------------------===//

static RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

static Value indexConst(OpBuilder &b, Location loc, int64_t v) {
  return arith::ConstantIndexOp::create(b, loc, v);
}

static Value floatConst(OpBuilder &b, Location loc, Type type, double v) {
  return arith::ConstantOp::create(b, loc, b.getFloatAttr(type, v));
}

static Value intConst(OpBuilder &b, Location loc, Type type, int64_t v) {
  return arith::ConstantOp::create(b, loc, b.getIntegerAttr(type, v));
}

/// Reads `tensor[indices]` (an integer element) as an index.
static Value extractIndex(OpBuilder &b, Location loc, Value tensor,
                          ValueRange indices) {
  Value v = tensor::ExtractOp::create(b, loc, tensor, indices);
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
}

/// Writes the index `v` into `tensor[indices]` as its integer element type.
static Value insertIndex(OpBuilder &b, Location loc, Value v, Value tensor,
                         ValueRange indices) {
  Type elementType = tensorType(tensor).getElementType();
  Value cast = arith::IndexCastOp::create(b, loc, elementType, v);
  return tensor::InsertOp::create(b, loc, cast, tensor, indices);
}

/// A `tensor.empty` of the given sizes.
static Value emptyTensor(OpBuilder &b, Location loc,
                         ArrayRef<OpFoldResult> sizes, Type elementType) {
  return tensor::EmptyOp::create(b, loc, sizes, elementType);
}

/// A tensor of the given sizes filled with `value`.
static Value filledTensor(OpBuilder &b, Location loc,
                          ArrayRef<OpFoldResult> sizes, Value value) {
  Value empty = emptyTensor(b, loc, sizes, value.getType());
  return linalg::FillOp::create(b, loc, value, empty).getResult(0);
}

/// `a · b` for `a [M, K]` and `b [K, N]` accumulated into `init [M, N]`.
static Value matmul(OpBuilder &b, Location loc, Value lhs, Value rhs,
                    Value init) {
  return linalg::MatmulOp::create(b, loc, ValueRange{lhs, rhs},
                                  ValueRange{init})
      .getResult(0);
}

/// A 2-d `[rows, cols]` tensor holding `bias [cols]` in every row, or zeros
/// without a bias: the accumulator of a GEMM with a bias.
static Value biasInit(OpBuilder &b, Location loc, OpFoldResult rows,
                      OpFoldResult cols, Value bias, Type elementType) {
  if (!bias)
    return filledTensor(b, loc, {rows, cols},
                        floatConst(b, loc, elementType, 0.0));
  Value empty = emptyTensor(b, loc, {rows, cols}, elementType);
  return linalg::BroadcastOp::create(b, loc, bias, empty, ArrayRef<int64_t>{0})
      ->getResult(0);
}

/// Identity and projection maps over a 2-d iteration space.
static AffineMap id2(MLIRContext *ctx) {
  return AffineMap::getMultiDimIdentityMap(2, ctx);
}
static AffineMap dim2(MLIRContext *ctx, unsigned d) {
  return AffineMap::get(2, 0, getAffineDimExpr(d, ctx));
}

/// An elementwise `linalg.generic` over 2-d tensors: `inputs` use `maps`
/// (one per input) and the result `[rows, cols]` is produced by `body`.
static Value
elementwise2d(OpBuilder &b, Location loc, ValueRange inputs,
              ArrayRef<AffineMap> maps, ArrayRef<OpFoldResult> sizes,
              Type elementType,
              function_ref<Value(OpBuilder &, Location, ValueRange)> body) {
  Value init = emptyTensor(b, loc, sizes, elementType);
  SmallVector<AffineMap> allMaps(maps);
  allMaps.push_back(id2(b.getContext()));
  auto op = linalg::GenericOp::create(
      b, loc, init.getType(), inputs, init, allMaps,
      {IteratorType::parallel, IteratorType::parallel},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value v = body(nb, nloc, args.drop_back());
        linalg::YieldOp::create(nb, nloc, v);
      });
  return op.getResult(0);
}

/// A row reduction `[rows, cols] -> [rows]` of `input` with `combine`,
/// starting from `initValue`.
static Value
reduceRows(OpBuilder &b, Location loc, Value input, double initValue,
           function_ref<Value(OpBuilder &, Location, Value, Value)> combine) {
  Type elementType = tensorType(input).getElementType();
  OpFoldResult rows = tensor::getMixedSize(b, loc, input, 0);
  Value init =
      filledTensor(b, loc, {rows}, floatConst(b, loc, elementType, initValue));
  MLIRContext *ctx = b.getContext();
  auto op = linalg::GenericOp::create(
      b, loc, init.getType(), input, init, {id2(ctx), dim2(ctx, 0)},
      {IteratorType::parallel, IteratorType::reduction},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        linalg::YieldOp::create(nb, nloc, combine(nb, nloc, args[0], args[1]));
      });
  return op.getResult(0);
}

/// `1 / (1 + exp(-x))`.
/// Row-wise `softmax(x / temperature)` of a 2-d tensor.
static Value softmaxRows(OpBuilder &b, Location loc, Value x,
                         double temperature) {
  auto type = tensorType(x);
  Type elementType = type.getElementType();
  MLIRContext *ctx = b.getContext();
  SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, x);
  Value max = reduceRows(
      b, loc, x, -std::numeric_limits<double>::infinity(),
      [](OpBuilder &nb, Location nloc, Value v, Value acc) {
        return arith::MaximumFOp::create(nb, nloc, v, acc).getResult();
      });
  Value exps = elementwise2d(
      b, loc, {x, max}, {id2(ctx), dim2(ctx, 0)}, sizes, elementType,
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value d = arith::SubFOp::create(nb, nloc, args[0], args[1]);
        if (temperature != 1.0)
          d = arith::DivFOp::create(
              nb, nloc, d, floatConst(nb, nloc, elementType, temperature));
        return math::ExpOp::create(nb, nloc, d).getResult();
      });
  Value sum = reduceRows(
      b, loc, exps, 0.0, [](OpBuilder &nb, Location nloc, Value v, Value acc) {
        return arith::AddFOp::create(nb, nloc, v, acc).getResult();
      });
  return elementwise2d(
      b, loc, {exps, sum}, {id2(ctx), dim2(ctx, 0)}, sizes, elementType,
      [](OpBuilder &nb, Location nloc, ValueRange args) {
        return arith::DivFOp::create(nb, nloc, args[0], args[1]).getResult();
      });
}

/// Row-wise `x / sum(x)` of a 2-d tensor.
static Value normalizeRows(OpBuilder &b, Location loc, Value x) {
  MLIRContext *ctx = b.getContext();
  Value sum = reduceRows(
      b, loc, x, 0.0, [](OpBuilder &nb, Location nloc, Value v, Value acc) {
        return arith::AddFOp::create(nb, nloc, v, acc).getResult();
      });
  return elementwise2d(
      b, loc, {x, sum}, {id2(ctx), dim2(ctx, 0)},
      tensor::getMixedSizes(b, loc, x), tensorType(x).getElementType(),
      [](OpBuilder &nb, Location nloc, ValueRange args) {
        return arith::DivFOp::create(nb, nloc, args[0], args[1]).getResult();
      });
}

//===----------------------------------------------------------------------===//
// Routing
//===----------------------------------------------------------------------===//

namespace {
/// Builds the routing of one block of tokens from its logits.
struct RoutingBuilder {
  RoutingAttr routing;
  Value selectionBias;
  Type idType;
  /// The group of each token `[b]` (expert_groups), or null.
  Value tokenGroups = {};
  /// The gating residual `[b, E]` added to the logits, or null.
  Value residual = {};

  /// Returns the ids `[b, k]` and weights `[b, k]` of the tokens whose logits
  /// are `logits [b, E]`.
  std::pair<Value, Value> build(OpBuilder &b, Location loc, Value logits) const;

  /// Returns the ids `[T, E]` and weights `[T, E]` of expert-choice routing
  /// over all the tokens' logits `[T, E]`.
  std::pair<Value, Value> buildExpertChoice(OpBuilder &b, Location loc,
                                            Value logits) const;

private:
  Value groupMask(OpBuilder &b, Location loc, Value selection) const;
  Value addResidual(OpBuilder &b, Location loc, Value logits) const;
};
} // namespace

/// Masks the selection scores of the experts outside the `topk_group` best
/// groups to -inf. A group's score is the sum of its two best selection
/// scores (its only one for groups of one expert); ties go to the lower
/// group index.
Value RoutingBuilder::groupMask(OpBuilder &b, Location loc,
                                Value selection) const {
  MLIRContext *ctx = b.getContext();
  auto type = tensorType(selection);
  Type elementType = type.getElementType();
  int64_t numExperts = type.getDimSize(1);
  int64_t numGroups = routing.getNGroup();
  int64_t groupSize = numExperts / numGroups;
  OpFoldResult rows = tensor::getMixedSize(b, loc, selection, 0);
  double negInf = -std::numeric_limits<double>::infinity();

  // The two best scores of each group, over the selection scores viewed as
  // [B, groups, group size] (an expanded view, so every loop has a range).
  AffineExpr d0 = getAffineDimExpr(0, ctx), d1 = getAffineDimExpr(1, ctx),
             d2 = getAffineDimExpr(2, ctx);
  Value grouped = tensor::ExpandShapeOp::create(
      b, loc,
      RankedTensorType::get({type.getDimSize(0), numGroups, groupSize},
                            elementType),
      selection, ArrayRef<ReassociationIndices>{{0}, {1, 2}},
      ArrayRef<OpFoldResult>{rows, b.getIndexAttr(numGroups),
                             b.getIndexAttr(groupSize)});
  Value top = filledTensor(b, loc, {rows, b.getIndexAttr(numGroups)},
                           floatConst(b, loc, elementType, negInf));
  auto twoBest = linalg::GenericOp::create(
      b, loc, TypeRange{top.getType(), top.getType()}, grouped,
      ValueRange{top, top},
      {AffineMap::get(3, 0, {d0, d1, d2}, ctx),
       AffineMap::get(3, 0, {d0, d1}, ctx),
       AffineMap::get(3, 0, {d0, d1}, ctx)},
      {IteratorType::parallel, IteratorType::parallel, IteratorType::reduction},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value v = args[0], first = args[1], second = args[2];
        Value aboveFirst = arith::CmpFOp::create(
            nb, nloc, arith::CmpFPredicate::OGT, v, first);
        Value aboveSecond = arith::CmpFOp::create(
            nb, nloc, arith::CmpFPredicate::OGT, v, second);
        Value newFirst =
            arith::SelectOp::create(nb, nloc, aboveFirst, v, first);
        Value secondCandidate =
            arith::SelectOp::create(nb, nloc, aboveSecond, v, second);
        Value newSecond = arith::SelectOp::create(nb, nloc, aboveFirst, first,
                                                  secondCandidate);
        linalg::YieldOp::create(nb, nloc, ValueRange{newFirst, newSecond});
      });
  Value groupScore = elementwise2d(
      b, loc, {twoBest.getResult(0), twoBest.getResult(1)},
      {id2(ctx), id2(ctx)}, {rows, b.getIndexAttr(numGroups)}, elementType,
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        if (groupSize == 1)
          return args[0];
        return arith::AddFOp::create(nb, nloc, args[0], args[1]).getResult();
      });

  // The rank of each group: how many groups are better.
  Type i64 = b.getI64Type();
  Value rankInit = filledTensor(b, loc, {rows, b.getIndexAttr(numGroups)},
                                intConst(b, loc, i64, 0));
  auto rank = linalg::GenericOp::create(
      b, loc, rankInit.getType(), ValueRange{groupScore, groupScore}, rankInit,
      {AffineMap::get(3, 0, {d0, d1}, ctx), AffineMap::get(3, 0, {d0, d2}, ctx),
       AffineMap::get(3, 0, {d0, d1}, ctx)},
      {IteratorType::parallel, IteratorType::parallel, IteratorType::reduction},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value mine = args[0], other = args[1];
        Value g = linalg::IndexOp::create(nb, nloc, 1);
        Value o = linalg::IndexOp::create(nb, nloc, 2);
        Value greater = arith::CmpFOp::create(
            nb, nloc, arith::CmpFPredicate::OGT, other, mine);
        Value equal = arith::CmpFOp::create(nb, nloc, arith::CmpFPredicate::OEQ,
                                            other, mine);
        Value lower =
            arith::CmpIOp::create(nb, nloc, arith::CmpIPredicate::ult, o, g);
        Value tieWin = arith::AndIOp::create(nb, nloc, equal, lower);
        Value better = arith::OrIOp::create(nb, nloc, greater, tieWin);
        Value inc = arith::ExtUIOp::create(nb, nloc, i64, better);
        linalg::YieldOp::create(
            nb, nloc,
            arith::AddIOp::create(nb, nloc, args[2], inc).getResult());
      });

  // Experts of groups ranked at topk_group or worse become -inf.
  int64_t keep = routing.getTopkGroup();
  return elementwise2d(
      b, loc, {selection, rank.getResult(0)},
      {id2(ctx), AffineMap::get(2, 0, {d0, d1.floorDiv(groupSize)}, ctx)},
      tensor::getMixedSizes(b, loc, selection), elementType,
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value kept =
            arith::CmpIOp::create(nb, nloc, arith::CmpIPredicate::slt, args[1],
                                  intConst(nb, nloc, i64, keep));
        return arith::SelectOp::create(
                   nb, nloc, kept, args[0],
                   floatConst(nb, nloc, elementType, negInf))
            .getResult();
      });
}

/// `logits + residual` (a gating residual), or the logits without one.
Value RoutingBuilder::addResidual(OpBuilder &b, Location loc,
                                  Value logits) const {
  if (!residual)
    return logits;
  MLIRContext *ctx = b.getContext();
  return elementwise2d(
      b, loc, {logits, residual}, {id2(ctx), id2(ctx)},
      tensor::getMixedSizes(b, loc, logits),
      tensorType(logits).getElementType(),
      [](OpBuilder &nb, Location nloc, ValueRange args) {
        return arith::AddFOp::create(nb, nloc, args[0], args[1]).getResult();
      });
}

std::pair<Value, Value> RoutingBuilder::build(OpBuilder &b, Location loc,
                                              Value logits) const {
  logits = addResidual(b, loc, logits);
  MLIRContext *ctx = b.getContext();
  auto type = tensorType(logits);
  Type elementType = type.getElementType();
  int64_t numExperts = type.getDimSize(1);
  int64_t k = routing.getK();
  OpFoldResult rows = tensor::getMixedSize(b, loc, logits, 0);
  SmallVector<OpFoldResult> sizes = {rows, b.getIndexAttr(numExperts)};
  double temperature = routing.getTemperature().convertToDouble();

  // Scores: the values the weights are taken from.
  Value scores;
  switch (routing.getScoring()) {
  case ScoringFunc::Softmax:
    scores = softmaxRows(b, loc, logits, temperature);
    break;
  case ScoringFunc::Sigmoid:
    scores = elementwise2d(b, loc, logits, id2(ctx), sizes, elementType,
                           [](OpBuilder &nb, Location nloc, ValueRange args) {
                             return buildSigmoid(nb, nloc, args[0]);
                           });
    break;
  case ScoringFunc::TopkSoftmax:
    scores = logits;
    break;
  }

  // Selection scores: the scores plus the bias, with the group limit.
  Value selection = scores;
  if (selectionBias)
    selection = elementwise2d(
        b, loc, {scores, selectionBias}, {id2(ctx), dim2(ctx, 1)}, sizes,
        elementType, [](OpBuilder &nb, Location nloc, ValueRange args) {
          return arith::AddFOp::create(nb, nloc, args[0], args[1]).getResult();
        });
  if (routing.isGroupLimited())
    selection = groupMask(b, loc, selection);

  // Per token: k passes of argmax, each below the previous choice in the
  // order (score descending, expert ascending).
  Value ids = emptyTensor(b, loc, {rows, b.getIndexAttr(k)}, idType);
  Value weights = emptyTensor(b, loc, {rows, b.getIndexAttr(k)}, elementType);
  Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
  Value numRows = getValueOrCreateConstantIndexOp(b, loc, rows);
  Value cE = indexConst(b, loc, numExperts), cK = indexConst(b, loc, k);
  double threshold = routing.getThreshold().convertToDouble();
  bool dynamicK = routing.hasDynamicK();
  // Expert groups: the first expert of each group, and one past the last.
  Value groupStarts;
  int64_t numGroups = routing.getExpertGroups().size();
  if (tokenGroups) {
    SmallVector<int64_t> starts = {0};
    for (int64_t size : routing.getExpertGroups())
      starts.push_back(starts.back() + size);
    auto startsType = RankedTensorType::get({numGroups + 1}, b.getIndexType());
    groupStarts = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(startsType, ArrayRef<int64_t>(starts)));
  }
  auto tokenLoop = scf::ForOp::create(
      b, loc, c0, numRows, c1, ValueRange{ids, weights},
      [&](OpBuilder &b, Location loc, Value r, ValueRange tokenArgs) {
        Value inf = floatConst(b, loc, elementType,
                               std::numeric_limits<double>::infinity());
        Value negInf = floatConst(b, loc, elementType,
                                  -std::numeric_limits<double>::infinity());
        Value zero = floatConst(b, loc, elementType, 0.0);
        Value noExpert = indexConst(b, loc, -1);
        Value notDone = arith::ConstantOp::create(b, loc, b.getBoolAttr(false));
        // The token's group [lo, hi), and whether its group id is valid.
        Value groupValid, lo, hi;
        if (tokenGroups) {
          Value g = extractIndex(b, loc, tokenGroups, r);
          groupValid = arith::AndIOp::create(
              b, loc,
              arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sge, g, c0),
              arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, g,
                                    indexConst(b, loc, numGroups)));
          g = arith::SelectOp::create(b, loc, groupValid, g, c0);
          lo = tensor::ExtractOp::create(b, loc, groupStarts, g);
          hi = tensor::ExtractOp::create(
              b, loc, groupStarts,
              arith::AddIOp::create(b, loc, g, c1).getResult());
        }
        auto slotLoop = scf::ForOp::create(
            b, loc, c0, cK, c1,
            ValueRange{tokenArgs[0], tokenArgs[1], inf, noExpert, zero,
                       notDone},
            [&](OpBuilder &b, Location loc, Value j, ValueRange args) {
              Value prevVal = args[2], prevIdx = args[3];
              auto expertLoop = scf::ForOp::create(
                  b, loc, c0, cE, c1, ValueRange{negInf, noExpert},
                  [&](OpBuilder &b, Location loc, Value e, ValueRange best) {
                    Value v = tensor::ExtractOp::create(b, loc, selection,
                                                        ValueRange{r, e});
                    Value below = arith::CmpFOp::create(
                        b, loc, arith::CmpFPredicate::OLT, v, prevVal);
                    Value tied = arith::CmpFOp::create(
                        b, loc, arith::CmpFPredicate::OEQ, v, prevVal);
                    Value after = arith::CmpIOp::create(
                        b, loc, arith::CmpIPredicate::sgt, e, prevIdx);
                    Value eligible = arith::OrIOp::create(
                        b, loc, below,
                        arith::AndIOp::create(b, loc, tied, after));
                    if (tokenGroups)
                      eligible = arith::AndIOp::create(
                          b, loc, eligible,
                          arith::AndIOp::create(
                              b, loc,
                              arith::CmpIOp::create(
                                  b, loc, arith::CmpIPredicate::sge, e, lo),
                              arith::CmpIOp::create(
                                  b, loc, arith::CmpIPredicate::slt, e, hi)));
                    Value none =
                        arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                              best[1], indexConst(b, loc, 0));
                    Value greater = arith::CmpFOp::create(
                        b, loc, arith::CmpFPredicate::OGT, v, best[0]);
                    Value take = arith::AndIOp::create(
                        b, loc, eligible,
                        arith::OrIOp::create(b, loc, none, greater));
                    Value val =
                        arith::SelectOp::create(b, loc, take, v, best[0]);
                    Value idx =
                        arith::SelectOp::create(b, loc, take, e, best[1]);
                    scf::YieldOp::create(b, loc, ValueRange{val, idx});
                  });
              Value bestVal = expertLoop.getResult(0);
              Value bestIdx = expertLoop.getResult(1);
              Value score = tensor::ExtractOp::create(b, loc, scores,
                                                      ValueRange{r, bestIdx});
              Value id = bestIdx, w = score, cum = args[4], done = args[5];
              if (dynamicK) {
                id = arith::SelectOp::create(b, loc, done, noExpert, bestIdx);
                w = arith::SelectOp::create(b, loc, done, zero, score);
                cum = arith::AddFOp::create(b, loc, cum, w);
                done = arith::CmpFOp::create(
                    b, loc, arith::CmpFPredicate::OGE, cum,
                    floatConst(b, loc, elementType, threshold));
              }
              if (tokenGroups) {
                id = arith::SelectOp::create(b, loc, groupValid, id, noExpert);
                w = arith::SelectOp::create(b, loc, groupValid, w, zero);
              }
              Value newIds = insertIndex(b, loc, id, args[0], {r, j});
              Value newWeights =
                  tensor::InsertOp::create(b, loc, w, args[1], {r, j});
              scf::YieldOp::create(
                  b, loc,
                  ValueRange{newIds, newWeights, bestVal, bestIdx, cum, done});
            });
        scf::YieldOp::create(
            b, loc, ValueRange{slotLoop.getResult(0), slotLoop.getResult(1)});
      });
  ids = tokenLoop.getResult(0);
  weights = tokenLoop.getResult(1);

  // Mixing weights.
  if (routing.getScoring() == ScoringFunc::TopkSoftmax)
    weights = softmaxRows(b, loc, weights, temperature);
  else if (routing.getRenormalize())
    weights = normalizeRows(b, loc, weights);
  // A token routed nowhere (group id out of range) keeps weights of 0 through
  // the renormalization or the softmax over its slots.
  if (tokenGroups)
    weights = elementwise2d(
        b, loc, {ids, weights}, {id2(ctx), id2(ctx)},
        tensor::getMixedSizes(b, loc, weights), elementType,
        [&](OpBuilder &nb, Location nloc, ValueRange args) {
          Value none =
              arith::CmpIOp::create(nb, nloc, arith::CmpIPredicate::slt,
                                    args[0], intConst(nb, nloc, idType, 0));
          return arith::SelectOp::create(nb, nloc, none,
                                         floatConst(nb, nloc, elementType, 0.0),
                                         args[1])
              .getResult();
        });
  double scale = routing.getScale().convertToDouble();
  if (scale != 1.0)
    weights = elementwise2d(
        b, loc, weights, id2(ctx), tensor::getMixedSizes(b, loc, weights),
        elementType, [&](OpBuilder &nb, Location nloc, ValueRange args) {
          return arith::MulFOp::create(nb, nloc, args[0],
                                       floatConst(nb, nloc, elementType, scale))
              .getResult();
        });
  return {ids, weights};
}

/// Expert e takes the tokens whose rank in its column of the selection
/// scores is below C. The rank of (t, e) counts the tokens t' with a greater
/// selection score, or an equal one and t' < t: one reduction over t', with
/// no scalar loop (O(T^2 E) comparisons).
std::pair<Value, Value> RoutingBuilder::buildExpertChoice(OpBuilder &b,
                                                          Location loc,
                                                          Value logits) const {
  logits = addResidual(b, loc, logits);
  MLIRContext *ctx = b.getContext();
  auto type = tensorType(logits);
  Type elementType = type.getElementType();
  int64_t numExperts = type.getDimSize(1);
  OpFoldResult rows = tensor::getMixedSize(b, loc, logits, 0);
  SmallVector<OpFoldResult> sizes = {rows, b.getIndexAttr(numExperts)};

  Value scores =
      routing.getScoring() == ScoringFunc::Sigmoid
          ? elementwise2d(b, loc, logits, id2(ctx), sizes, elementType,
                          [](OpBuilder &nb, Location nloc, ValueRange args) {
                            return buildSigmoid(nb, nloc, args[0]);
                          })
          : softmaxRows(b, loc, logits,
                        routing.getTemperature().convertToDouble());
  Value selection = scores;
  if (selectionBias)
    selection = elementwise2d(
        b, loc, {scores, selectionBias}, {id2(ctx), dim2(ctx, 1)}, sizes,
        elementType, [](OpBuilder &nb, Location nloc, ValueRange args) {
          return arith::AddFOp::create(nb, nloc, args[0], args[1]).getResult();
        });

  AffineExpr d0 = getAffineDimExpr(0, ctx), d1 = getAffineDimExpr(1, ctx),
             d2 = getAffineDimExpr(2, ctx);
  Type i64 = b.getI64Type();
  Value rankInit = filledTensor(b, loc, sizes, intConst(b, loc, i64, 0));
  Value rank =
      linalg::GenericOp::create(
          b, loc, rankInit.getType(), ValueRange{selection, selection},
          rankInit,
          {AffineMap::get(3, 0, {d0, d1}, ctx),
           AffineMap::get(3, 0, {d2, d1}, ctx),
           AffineMap::get(3, 0, {d0, d1}, ctx)},
          {IteratorType::parallel, IteratorType::parallel,
           IteratorType::reduction},
          [&](OpBuilder &nb, Location nloc, ValueRange args) {
            Value mine = args[0], other = args[1];
            Value t = linalg::IndexOp::create(nb, nloc, 0);
            Value o = linalg::IndexOp::create(nb, nloc, 2);
            Value greater = arith::CmpFOp::create(
                nb, nloc, arith::CmpFPredicate::OGT, other, mine);
            Value equal = arith::CmpFOp::create(
                nb, nloc, arith::CmpFPredicate::OEQ, other, mine);
            Value lower = arith::CmpIOp::create(
                nb, nloc, arith::CmpIPredicate::ult, o, t);
            Value better = arith::OrIOp::create(
                nb, nloc, greater,
                arith::AndIOp::create(nb, nloc, equal, lower));
            Value inc = arith::ExtUIOp::create(nb, nloc, i64, better);
            linalg::YieldOp::create(
                nb, nloc,
                arith::AddIOp::create(nb, nloc, args[2], inc).getResult());
          })
          .getResult(0);

  Value numTokens = getValueOrCreateConstantIndexOp(b, loc, rows);
  Value capacity = buildExpertChoiceCapacity(
      b, loc, routing, numExperts,
      arith::IndexCastOp::create(b, loc, i64, numTokens));

  double scale = routing.getScale().convertToDouble();
  auto chosen = [&](OpBuilder &nb, Location nloc, Value r) -> Value {
    return arith::CmpIOp::create(nb, nloc, arith::CmpIPredicate::slt, r,
                                 capacity);
  };
  Value ids = elementwise2d(
      b, loc, rank, id2(ctx), sizes, idType,
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value e = arith::IndexCastOp::create(
            nb, nloc, idType, linalg::IndexOp::create(nb, nloc, 1));
        return arith::SelectOp::create(nb, nloc, chosen(nb, nloc, args[0]), e,
                                       intConst(nb, nloc, idType, -1))
            .getResult();
      });
  Value weights = elementwise2d(
      b, loc, {rank, scores}, {id2(ctx), id2(ctx)}, sizes, elementType,
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value w = args[1];
        if (scale != 1.0)
          w = arith::MulFOp::create(nb, nloc, w,
                                    floatConst(nb, nloc, elementType, scale));
        return arith::SelectOp::create(nb, nloc, chosen(nb, nloc, args[0]), w,
                                       floatConst(nb, nloc, elementType, 0.0))
            .getResult();
      });
  return {ids, weights};
}

namespace {
struct RouteOpLowering : public OpConversionPattern<RouteOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(RouteOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    RoutingBuilder builder{op.getRouting(), adaptor.getSelectionBias(),
                           op.getExpertIds().getType().getElementType(),
                           adaptor.getTokenGroups(), adaptor.getResidual()};
    auto [ids, weights] =
        op.getRouting().isExpertChoice()
            ? builder.buildExpertChoice(rewriter, op.getLoc(),
                                        adaptor.getLogits())
            : builder.build(rewriter, op.getLoc(), adaptor.getLogits());
    rewriter.replaceOp(
        op,
        {castTo(rewriter, op.getLoc(), ids, op.getExpertIds().getType()),
         castTo(rewriter, op.getLoc(), weights, op.getWeights().getType())});
    return success();
  }

  static Value castTo(OpBuilder &b, Location loc, Value v, Type type) {
    if (v.getType() == type)
      return v;
    return tensor::CastOp::create(b, loc, type, v);
  }
};

/// A 2-d slice of an `scf.forall` output that one iteration writes: `value`
/// at `offsets`, `sizes` (unit strides).
struct ParallelSlice {
  Value value;
  SmallVector<OpFoldResult> offsets, sizes;
};

/// An `scf.forall` over `count` iterations with shared `outputs`: `body`
/// gets the induction variable and the shared outputs and returns, per
/// output, the slice the iteration inserts into it in parallel.
static SmallVector<Value> forallInsertingSlices(
    OpBuilder &b, Location loc, OpFoldResult count, ValueRange outputs,
    function_ref<SmallVector<ParallelSlice>(OpBuilder &, Location, Value iv,
                                            ValueRange shared)>
        body) {
  auto forall = scf::ForallOp::create(
      b, loc, ArrayRef<OpFoldResult>{count}, outputs, std::nullopt,
      [&](OpBuilder &b, Location loc, ValueRange args) {
        ValueRange shared = args.drop_front();
        SmallVector<ParallelSlice> slices = body(b, loc, args[0], shared);
        auto inParallel = scf::InParallelOp::create(b, loc);
        OpBuilder::InsertionGuard guard(b);
        b.setInsertionPointToStart(inParallel.getBody());
        SmallVector<OpFoldResult> strides(2, b.getIndexAttr(1));
        for (auto [slice, out] : llvm::zip_equal(slices, shared))
          tensor::ParallelInsertSliceOp::create(
              b, loc, slice.value, out, slice.offsets, slice.sizes, strides);
      });
  return SmallVector<Value>(forall.getResults());
}

/// The router matmul and the routing of one block of `blockSize` tokens at a
/// time: the `[T, E]` logits exist only as a `[block, E]` tile. More than one
/// block (chosen at run time) runs the blocks in parallel (an `scf.forall`).
struct GateOpLowering : public OpConversionPattern<GateOp> {
  GateOpLowering(MLIRContext *ctx, int64_t blockSize)
      : OpConversionPattern(ctx), blockSize(blockSize) {}

  LogicalResult
  matchAndRewrite(GateOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value input = adaptor.getInput(), router = adaptor.getRouter();
    auto inputType = tensorType(input);
    Type elementType = inputType.getElementType();
    int64_t hidden = inputType.getDimSize(1);
    int64_t numExperts = tensorType(router).getDimSize(1);
    auto idsType = op.getExpertIds().getType();
    auto weightsType = op.getWeights().getType();
    int64_t k = op.getRouting().getK();

    OpFoldResult tokens = tensor::getMixedSize(rewriter, loc, input, 0);
    Value numTokens = getValueOrCreateConstantIndexOp(rewriter, loc, tokens);
    Value ids = emptyTensor(rewriter, loc, {tokens, rewriter.getIndexAttr(k)},
                            idsType.getElementType());
    Value weights = emptyTensor(
        rewriter, loc, {tokens, rewriter.getIndexAttr(k)}, elementType);
    Value c0 = indexConst(rewriter, loc, 0);
    Value step = indexConst(rewriter, loc, blockSize);
    RoutingBuilder builder{op.getRouting(), adaptor.getSelectionBias(),
                           idsType.getElementType()};
    // The ids and weights of the block of tokens from `t0`, with the offsets
    // and sizes of their slices of the results.
    struct Block {
      Value ids, weights;
      SmallVector<OpFoldResult> offsets, sizes;
    };
    auto routeBlock = [&](OpBuilder &b, Location loc, Value t0) {
      Value left = arith::SubIOp::create(b, loc, numTokens, t0);
      Value rows = arith::MinSIOp::create(b, loc, left, step);
      OpFoldResult zeroAttr = b.getIndexAttr(0), oneAttr = b.getIndexAttr(1);
      Value x = tensor::ExtractSliceOp::create(b, loc, input, {t0, zeroAttr},
                                               {rows, b.getIndexAttr(hidden)},
                                               {oneAttr, oneAttr});
      // The block's logits accumulate into zeros, or into the router bias
      // broadcast over its rows.
      SmallVector<OpFoldResult> logitsSizes = {rows,
                                               b.getIndexAttr(numExperts)};
      Value init;
      if (Value bias = adaptor.getRouterBias())
        init = linalg::BroadcastOp::create(
                   b, loc, bias, emptyTensor(b, loc, logitsSizes, elementType),
                   ArrayRef<int64_t>{0})
                   .getResult()[0];
      else
        init = filledTensor(b, loc, logitsSizes,
                            floatConst(b, loc, elementType, 0.0));
      Value logits = matmul(b, loc, x, router, init);
      RoutingBuilder blockBuilder = builder;
      if (Value groups = adaptor.getTokenGroups())
        blockBuilder.tokenGroups = tensor::ExtractSliceOp::create(
            b, loc, groups, OpFoldResult(t0), OpFoldResult(rows), oneAttr);
      if (Value residual = adaptor.getResidual())
        blockBuilder.residual = tensor::ExtractSliceOp::create(
            b, loc, residual, {t0, zeroAttr},
            {rows, b.getIndexAttr(numExperts)}, {oneAttr, oneAttr});
      auto [blockIds, blockWeights] = blockBuilder.build(b, loc, logits);
      return Block{
          blockIds, blockWeights, {t0, zeroAttr}, {rows, b.getIndexAttr(k)}};
    };
    auto strides = [](OpBuilder &b) {
      return SmallVector<OpFoldResult>{b.getIndexAttr(1), b.getIndexAttr(1)};
    };
    // One block after another.
    auto serial = [&](OpBuilder &b, Location loc) {
      auto loop = scf::ForOp::create(
          b, loc, c0, numTokens, step, ValueRange{ids, weights},
          [&](OpBuilder &b, Location loc, Value t0, ValueRange args) {
            Block block = routeBlock(b, loc, t0);
            Value newIds = tensor::InsertSliceOp::create(
                b, loc, block.ids, args[0], block.offsets, block.sizes,
                strides(b));
            Value newWeights = tensor::InsertSliceOp::create(
                b, loc, block.weights, args[1], block.offsets, block.sizes,
                strides(b));
            scf::YieldOp::create(b, loc, ValueRange{newIds, newWeights});
          });
      return SmallVector<Value>(loop.getResults());
    };
    // The blocks in parallel: more than one block of tokens (prefill).
    auto parallel = [&](OpBuilder &b, Location loc) {
      Value numBlocks = arith::CeilDivUIOp::create(b, loc, numTokens, step);
      return forallInsertingSlices(
          b, loc, numBlocks, ValueRange{ids, weights},
          [&](OpBuilder &b, Location loc, Value i, ValueRange) {
            Value t0 = arith::MulIOp::create(b, loc, i, step);
            Block block = routeBlock(b, loc, t0);
            return SmallVector<ParallelSlice>{
                {block.ids, block.offsets, block.sizes},
                {block.weights, block.offsets, block.sizes}};
          });
    };
    Value many = arith::CmpIOp::create(rewriter, loc, arith::CmpIPredicate::sgt,
                                       numTokens, step);
    auto ifOp = scf::IfOp::create(
        rewriter, loc, many,
        [&](OpBuilder &b, Location loc) {
          scf::YieldOp::create(b, loc, parallel(b, loc));
        },
        [&](OpBuilder &b, Location loc) {
          scf::YieldOp::create(b, loc, serial(b, loc));
        });
    rewriter.replaceOp(
        op, {RouteOpLowering::castTo(rewriter, loc, ifOp.getResult(0), idsType),
             RouteOpLowering::castTo(rewriter, loc, ifOp.getResult(1),
                                     weightsType)});
    return success();
  }

  int64_t blockSize;
};
} // namespace

//===----------------------------------------------------------------------===//
// Dispatch
//===----------------------------------------------------------------------===//

using AssignmentFn = function_ref<SmallVector<Value>(
    OpBuilder &, Location, Value t, Value j, Value expert, Value valid,
    ValueRange state)>;

/// Loops over the assignments `ids[t, j]` in token order, threading `state`
/// through; `expert` is clamped to a valid index and `valid` tells whether
/// the id was not -1.
static SmallVector<Value> forEachAssignment(OpBuilder &b, Location loc,
                                            Value ids, Value numTokens,
                                            int64_t k, ValueRange state,
                                            AssignmentFn body) {
  Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
  Value cK = indexConst(b, loc, k);
  auto outer = scf::ForOp::create(
      b, loc, c0, numTokens, c1, state,
      [&](OpBuilder &b, Location loc, Value t, ValueRange outerState) {
        auto inner = scf::ForOp::create(
            b, loc, c0, cK, c1, outerState,
            [&](OpBuilder &b, Location loc, Value j, ValueRange innerState) {
              Value id = extractIndex(b, loc, ids, {t, j});
              Value valid = arith::CmpIOp::create(
                  b, loc, arith::CmpIPredicate::sge, id, c0);
              Value expert = arith::MaxSIOp::create(b, loc, id, c0);
              scf::YieldOp::create(
                  b, loc, body(b, loc, t, j, expert, valid, innerState));
            });
        scf::YieldOp::create(b, loc, inner.getResults());
      });
  return SmallVector<Value>(outer.getResults());
}

namespace {
/// A counting sort of the assignments by expert.
struct DispatchOpLowering : public OpConversionPattern<DispatchOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(DispatchOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value ids = adaptor.getExpertIds();
    auto idsType = tensorType(ids);
    Type intType = idsType.getElementType();
    int64_t k = idsType.getDimSize(1);
    int64_t numExperts = op.getNumExperts();
    int64_t blockSize = op.getBlockSize();
    double capacityFactor = op.getCapacityFactor().convertToDouble();
    int64_t fixedCapacity = op.getCapacity();
    OpBuilder &b = rewriter;

    Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
    Value cK = indexConst(b, loc, k), cE = indexConst(b, loc, numExperts);
    Value numTokens = getValueOrCreateConstantIndexOp(
        b, loc, tensor::getMixedSize(b, loc, ids, 0));
    Value assignments = arith::MulIOp::create(b, loc, numTokens, cK);

    // Capacity: the fixed one, ceil(capacity_factor * (T * k) / E), or no
    // limit.
    Value capacity = assignments;
    if (fixedCapacity > 0) {
      capacity = indexConst(b, loc, fixedCapacity);
    } else if (capacityFactor > 0.0) {
      Type f64 = b.getF64Type();
      Value n = arith::UIToFPOp::create(
          b, loc, f64,
          arith::IndexCastUIOp::create(b, loc, b.getI64Type(), assignments));
      Value c = arith::MulFOp::create(
          b, loc, floatConst(b, loc, f64, capacityFactor), n);
      c = arith::DivFOp::create(b, loc, c,
                                floatConst(b, loc, f64, double(numExperts)));
      c = math::CeilOp::create(b, loc, c);
      capacity = arith::IndexCastOp::create(
          b, loc, b.getIndexType(),
          arith::FPToSIOp::create(b, loc, b.getI64Type(), c));
    }

    // Counts per expert.
    Value zeroInt = intConst(b, loc, intType, 0);
    Value counts = filledTensor(b, loc, {b.getIndexAttr(numExperts)}, zeroInt);
    counts = forEachAssignment(
        b, loc, ids, numTokens, k, counts,
        [&](OpBuilder &b, Location loc, Value t, Value j, Value e, Value valid,
            ValueRange state) -> SmallVector<Value> {
          Value c = extractIndex(b, loc, state[0], e);
          Value inc = arith::SelectOp::create(
              b, loc, valid, indexConst(b, loc, 1), indexConst(b, loc, 0));
          Value sum = arith::AddIOp::create(b, loc, c, inc);
          return {insertIndex(b, loc, sum, state[0], e)};
        })[0];

    // Exclusive prefix sum of the kept (and padded) counts.
    Value offsets =
        emptyTensor(b, loc, {b.getIndexAttr(numExperts + 1)}, intType);
    Value cBlock = indexConst(b, loc, blockSize);
    auto scan = scf::ForOp::create(
        b, loc, c0, cE, c1, ValueRange{offsets, c0},
        [&](OpBuilder &b, Location loc, Value e, ValueRange args) {
          Value withOffset = insertIndex(b, loc, args[1], args[0], e);
          Value count = extractIndex(b, loc, counts, e);
          Value kept = arith::MinSIOp::create(b, loc, count, capacity);
          if (blockSize > 1) {
            Value up = arith::AddIOp::create(b, loc, kept,
                                             indexConst(b, loc, blockSize - 1));
            kept = arith::MulIOp::create(
                b, loc, arith::DivUIOp::create(b, loc, up, cBlock), cBlock);
          }
          Value next = arith::AddIOp::create(b, loc, args[1], kept);
          scf::YieldOp::create(b, loc, ValueRange{withOffset, next});
        });
    offsets = insertIndex(b, loc, scan.getResult(1), scan.getResult(0), cE);

    // Stable placement in token order.
    auto tokType = op.getTokenIndices().getType();
    SmallVector<OpFoldResult> rowSizes;
    if (tokType.isDynamicDim(0))
      rowSizes.push_back(OpFoldResult(arith::AddIOp::create(
          b, loc, assignments,
          indexConst(b, loc, numExperts * (blockSize - 1)))));
    else
      rowSizes.push_back(b.getIndexAttr(tokType.getDimSize(0)));
    Value minusOne = intConst(b, loc, intType, -1);
    Value tokens = filledTensor(b, loc, rowSizes, minusOne);
    Value positions =
        emptyTensor(b, loc, tensor::getMixedSizes(b, loc, ids), intType);
    Value cursors = filledTensor(b, loc, {b.getIndexAttr(numExperts)}, zeroInt);
    SmallVector<Value> placed = forEachAssignment(
        b, loc, ids, numTokens, k, {tokens, positions, cursors},
        [&](OpBuilder &b, Location loc, Value t, Value j, Value e, Value valid,
            ValueRange state) -> SmallVector<Value> {
          Value cursor = extractIndex(b, loc, state[2], e);
          Value fits = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt,
                                             cursor, capacity);
          Value keep = arith::AndIOp::create(b, loc, valid, fits);
          Value row = arith::AddIOp::create(
              b, loc, extractIndex(b, loc, offsets, e), cursor);
          Value pos = arith::SelectOp::create(b, loc, keep, row,
                                              indexConst(b, loc, -1));
          Value newPositions = insertIndex(b, loc, pos, state[1], {t, j});
          Value inc = arith::SelectOp::create(
              b, loc, valid, indexConst(b, loc, 1), indexConst(b, loc, 0));
          Value newCursors = insertIndex(
              b, loc, arith::AddIOp::create(b, loc, cursor, inc), state[2], e);
          auto ifOp = scf::IfOp::create(
              b, loc, keep,
              [&](OpBuilder &b, Location loc) {
                scf::YieldOp::create(b, loc,
                                     insertIndex(b, loc, t, state[0], row));
              },
              [&](OpBuilder &b, Location loc) {
                scf::YieldOp::create(b, loc, state[0]);
              });
          return {ifOp.getResult(0), newPositions, newCursors};
        });

    rewriter.replaceOp(
        op, {RouteOpLowering::castTo(b, loc, placed[0], tokType),
             RouteOpLowering::castTo(b, loc, offsets,
                                     op.getExpertOffsets().getType()),
             RouteOpLowering::castTo(b, loc, placed[1],
                                     op.getPositions().getType())});
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// Experts
//===----------------------------------------------------------------------===//

/// The `[d1, d2]` (or `[d1]`) slice of expert `e` of a `[E, d1, d2]` (or
/// `[E, d1]`) weight tensor.
static Value sliceExpert(OpBuilder &b, Location loc, Value weights, Value e) {
  if (!weights)
    return {};
  auto type = tensorType(weights);
  SmallVector<OpFoldResult> offsets(type.getRank(), b.getIndexAttr(0));
  offsets[0] = e;
  SmallVector<OpFoldResult> sizes = {b.getIndexAttr(1)};
  for (int64_t d : type.getShape().drop_front())
    sizes.push_back(b.getIndexAttr(d));
  SmallVector<OpFoldResult> strides(type.getRank(), b.getIndexAttr(1));
  auto sliceType = RankedTensorType::get(type.getShape().drop_front(),
                                         type.getElementType());
  return tensor::ExtractSliceOp::create(b, loc, sliceType, weights, offsets,
                                        sizes, strides);
}

namespace {
/// The weights of one FFN: 2-d matrices and 1-d biases (null when absent).
struct FfnWeights {
  Value gate, up, down, gateBias, upBias, downBias;
};
} // namespace

/// The activated hidden rows `act(x · gate + gateBias, x · up + upBias)` of
/// `expert` on the rows `x [n, H]` (`act(x · up + upBias)` for an ungated
/// expert): `[n, F]` for `F` the columns of `w.up`.
static Value buildHidden(OpBuilder &b, Location loc, Value x,
                         const FfnWeights &w, ExpertAttr expert) {
  MLIRContext *ctx = b.getContext();
  Type elementType = tensorType(x).getElementType();
  OpFoldResult rows = tensor::getMixedSize(b, loc, x, 0);
  OpFoldResult ffnSize = b.getIndexAttr(tensorType(w.up).getDimSize(1));
  Value up = matmul(b, loc, x, w.up,
                    biasInit(b, loc, rows, ffnSize, w.upBias, elementType));
  if (!expert.isGated())
    return elementwise2d(b, loc, up, id2(ctx), {rows, ffnSize}, elementType,
                         [&](OpBuilder &nb, Location nloc, ValueRange args) {
                           return buildExpertHidden(nb, nloc, expert, Value(),
                                                    args[0]);
                         });
  Value gate = matmul(b, loc, x, w.gate,
                      biasInit(b, loc, rows, ffnSize, w.gateBias, elementType));
  return elementwise2d(
      b, loc, {gate, up}, {id2(ctx), id2(ctx)}, {rows, ffnSize}, elementType,
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        return buildExpertHidden(nb, nloc, expert, args[0], args[1]);
      });
}

/// The FFN of `expert` on the rows `x [n, H]`.
static Value buildFfn(OpBuilder &b, Location loc, Value x, const FfnWeights &w,
                      ExpertAttr expert) {
  Type elementType = tensorType(x).getElementType();
  OpFoldResult rows = tensor::getMixedSize(b, loc, x, 0);
  OpFoldResult hidden = b.getIndexAttr(tensorType(w.down).getDimSize(1));
  Value hiddenAct = buildHidden(b, loc, x, w, expert);
  return matmul(b, loc, hiddenAct, w.down,
                biasInit(b, loc, rows, hidden, w.downBias, elementType));
}

/// The rows `input[max(tokens[i], 0)]` for a 1-d tensor of token indices.
static Value gatherRows(OpBuilder &b, Location loc, Value input, Value tokens) {
  MLIRContext *ctx = b.getContext();
  auto inputType = tensorType(input);
  return elementwise2d(
      b, loc, tokens, dim2(ctx, 0),
      {tensor::getMixedSize(b, loc, tokens, 0),
       b.getIndexAttr(inputType.getDimSize(1))},
      inputType.getElementType(),
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value t =
            arith::IndexCastOp::create(nb, nloc, nb.getIndexType(), args[0]);
        t = arith::MaxSIOp::create(nb, nloc, t, indexConst(nb, nloc, 0));
        Value h = linalg::IndexOp::create(nb, nloc, 1);
        return tensor::ExtractOp::create(nb, nloc, input, ValueRange{t, h})
            .getResult();
      });
}

/// Whether the rows of an expert may include padding rows (token -1): only
/// offsets from a `moe.dispatch` without block padding are known not to.
static bool mayHavePadding(Value offsets) {
  auto dispatch = offsets.getDefiningOp<DispatchOp>();
  return !dispatch || dispatch.getBlockSize() != 1;
}

/// `rows` where `tokens` (one per row) is a token, `old` where it is padding
/// (-1).
static Value keepPaddingRows(OpBuilder &b, Location loc, Value rows, Value old,
                             Value tokens) {
  MLIRContext *ctx = b.getContext();
  auto merge = linalg::GenericOp::create(
      b, loc, old.getType(), ValueRange{rows, tokens}, old,
      {id2(ctx), dim2(ctx, 0), id2(ctx)},
      {IteratorType::parallel, IteratorType::parallel},
      [&](OpBuilder &nb, Location nloc, ValueRange args) {
        Value real =
            arith::CmpIOp::create(nb, nloc, arith::CmpIPredicate::sge, args[1],
                                  intConst(nb, nloc, args[1].getType(), 0));
        linalg::YieldOp::create(
            nb, nloc,
            arith::SelectOp::create(nb, nloc, real, args[0], args[2])
                .getResult());
      });
  return merge.getResult(0);
}

using RowsFn = function_ref<Value(OpBuilder &, Location, Value rows)>;

/// The rows `[start, start + count)` of the result, computed with
/// `compute` on the input rows of `tokens[start, start + count)`; padding
/// rows keep the values of `dest` when `mayPad`.
static Value computeExpertRows(OpBuilder &b, Location loc, Value input,
                               Value tokens, Value dest, Value start,
                               Value count, bool mayPad, RowsFn compute) {
  OpFoldResult one = b.getIndexAttr(1), zero = b.getIndexAttr(0);
  Value expertTokens = tensor::ExtractSliceOp::create(
      b, loc, tokens, {OpFoldResult(start)}, {OpFoldResult(count)}, {one});
  Value rows = gatherRows(b, loc, input, expertTokens);
  Value result = compute(b, loc, rows);
  int64_t hidden = tensorType(dest).getDimSize(1);
  auto rowsType = RankedTensorType::get({ShapedType::kDynamic, hidden},
                                        tensorType(dest).getElementType());
  if (result.getType() != rowsType)
    result = tensor::CastOp::create(b, loc, rowsType, result);
  if (!mayPad)
    return result;
  Value old = tensor::ExtractSliceOp::create(
      b, loc, dest, {start, zero}, {count, b.getIndexAttr(hidden)}, {one, one});
  return keepPaddingRows(b, loc, result, old, expertTokens);
}

/// The first row and the row count of expert `expert` (a global index).
static std::pair<Value, Value> expertRowRange(OpBuilder &b, Location loc,
                                              Value offsets, Value expert) {
  Value start = extractIndex(b, loc, offsets, expert);
  Value next = arith::AddIOp::create(b, loc, expert, indexConst(b, loc, 1));
  Value end = extractIndex(b, loc, offsets, next);
  return {start, arith::SubIOp::create(b, loc, end, start)};
}

/// Computes the rows of expert `expert` (a global index) with `compute` on
/// its gathered input rows and writes them into `dest`; returns the new
/// `dest`. Nothing is computed when the expert has no rows; padding rows of
/// `dest` are kept when `mayPad`.
static Value
updateExpertRows(OpBuilder &b, Location loc, Value input, Value tokens,
                 Value offsets, Value dest, Value expert, bool mayPad,
                 RowsFn compute,
                 function_ref<void(OpBuilder &, Location)> onDone = nullptr) {
  auto [start, count] = expertRowRange(b, loc, offsets, expert);
  Value any = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt, count,
                                    indexConst(b, loc, 0));
  auto ifOp = scf::IfOp::create(b, loc, dest.getType(), any,
                                /*addThenBlock=*/true, /*addElseBlock=*/true);
  OpBuilder::InsertionGuard guard(b);
  b.setInsertionPointToStart(ifOp.elseBlock());
  scf::YieldOp::create(b, loc, dest);

  b.setInsertionPointToStart(ifOp.thenBlock());
  Value result = computeExpertRows(b, loc, input, tokens, dest, start, count,
                                   mayPad, compute);
  OpFoldResult one = b.getIndexAttr(1), zero = b.getIndexAttr(0);
  int64_t hidden = tensorType(dest).getDimSize(1);
  Value updated = tensor::InsertSliceOp::create(
      b, loc, result, dest, {start, zero}, {count, b.getIndexAttr(hidden)},
      {one, one});
  if (onDone)
    onDone(b, loc);
  scf::YieldOp::create(b, loc, updated);
  return ifOp.getResult(0);
}

/// An `scf.for` over the `count` experts from `first`, threading `dest`;
/// `body` gets the local and the global expert index.
static Value forEachExpert(
    OpBuilder &b, Location loc, int64_t first, int64_t count, Value dest,
    function_ref<Value(OpBuilder &, Location, Value, Value, Value)> body) {
  auto loop = scf::ForOp::create(
      b, loc, indexConst(b, loc, 0), indexConst(b, loc, count),
      indexConst(b, loc, 1), dest,
      [&](OpBuilder &b, Location loc, Value e, ValueRange args) {
        Value global =
            arith::AddIOp::create(b, loc, e, indexConst(b, loc, first));
        scf::YieldOp::create(b, loc, body(b, loc, e, global, args[0]));
      });
  return loop.getResult(0);
}

/// The local indices of the experts among the `count` from `first` that
/// have rows, in order, in the first entries of a `[count]` index tensor,
/// and how many there are.
static std::pair<Value, Value> listActiveExperts(OpBuilder &b, Location loc,
                                                 int64_t first, int64_t count,
                                                 Value offsets) {
  Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
  Value list = tensor::EmptyOp::create(b, loc, ArrayRef<int64_t>{count},
                                       b.getIndexType());
  auto loop = scf::ForOp::create(
      b, loc, c0, indexConst(b, loc, count), c1, ValueRange{c0, list},
      [&](OpBuilder &b, Location loc, Value local, ValueRange args) {
        Value global =
            arith::AddIOp::create(b, loc, local, indexConst(b, loc, first));
        Value rows = expertRowRange(b, loc, offsets, global).second;
        Value any =
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt, rows, c0);
        auto ifOp = scf::IfOp::create(
            b, loc, any,
            [&](OpBuilder &b, Location loc) {
              Value listed =
                  tensor::InsertOp::create(b, loc, local, args[1], args[0]);
              Value n = arith::AddIOp::create(b, loc, args[0], c1);
              scf::YieldOp::create(b, loc, ValueRange{n, listed});
            },
            [&](OpBuilder &b, Location loc) {
              scf::YieldOp::create(b, loc, args);
            });
        scf::YieldOp::create(b, loc, ifOp.getResults());
      });
  return {loop.getResult(1), loop.getResult(0)};
}

/// An `scf.forall` over the `numActive` experts listed (local indices) in
/// `active`, each computing its rows with `compute` (see computeExpertRows)
/// and inserting them into `dest` in parallel. `compute` gets the local
/// expert index and the expert's gathered input rows. Iterating over the
/// experts that have rows, not over all of them, gives each thread about as
/// many experts (OpenMP's static schedule splits the iterations evenly).
static Value forEachExpertInParallel(
    OpBuilder &b, Location loc, int64_t first, Value active, Value numActive,
    Value input, Value tokens, Value offsets, Value dest, bool mayPad,
    function_ref<Value(OpBuilder &, Location, Value local, Value rows)>
        compute) {
  int64_t hidden = tensorType(dest).getDimSize(1);
  return forallInsertingSlices(
      b, loc, numActive, ValueRange{dest},
      [&](OpBuilder &b, Location loc, Value i, ValueRange shared) {
        Value local = tensor::ExtractOp::create(b, loc, active, i);
        Value global =
            arith::AddIOp::create(b, loc, local, indexConst(b, loc, first));
        auto [start, rowCount] = expertRowRange(b, loc, offsets, global);
        Value result = computeExpertRows(
            b, loc, input, tokens, shared[0], start, rowCount, mayPad,
            [&](OpBuilder &b, Location loc, Value rows) {
              return compute(b, loc, local, rows);
            });
        return SmallVector<ParallelSlice>{{result,
                                           {start, b.getIndexAttr(0)},
                                           {rowCount, b.getIndexAttr(hidden)}}};
      })[0];
}

/// The columns per task of a grouped expert GEMM over `n` columns: the divisor
/// of `n` nearest to `wanted` (by ratio; the smaller on a tie) among the
/// multiples of 32 (128 bytes of f32: two threads never share a pair of cache
/// lines, which the adjacent-line prefetcher would fetch for both, nor a
/// 32-column panel of packed weights), else among the multiples of 16, else
/// among all divisors. `wanted` must be positive.
static int64_t nearestColumnBlock(int64_t n, int64_t wanted) {
  for (int64_t unit : {32, 16, 1}) {
    if (n % unit != 0)
      continue;
    int64_t best = 0;
    double bestDistance = 0;
    for (int64_t d = unit; d <= n; d += unit) {
      if (n % d != 0)
        continue;
      double distance = std::abs(std::log(static_cast<double>(d) / wanted));
      if (best == 0 || distance < bestDistance - 1e-12) {
        best = d;
        bestDistance = distance;
      }
    }
    return best;
  }
  return n;
}

/// Columns `[column, column + width)` of a 2-d `matrix` or of a 1-d
/// `vector` (null stays null).
static Value sliceColumns(OpBuilder &b, Location loc, Value v, Value column,
                          int64_t width) {
  auto type = v ? tensorType(v) : RankedTensorType();
  if (!v || type.getShape().back() == width)
    return v;
  OpFoldResult one = b.getIndexAttr(1), zero = b.getIndexAttr(0);
  if (type.getRank() == 1)
    return tensor::ExtractSliceOp::create(
        b, loc, RankedTensorType::get({width}, type.getElementType()), v,
        {OpFoldResult(column)}, {b.getIndexAttr(width)}, {one});
  return tensor::ExtractSliceOp::create(
      b, loc,
      RankedTensorType::get({type.getDimSize(0), width}, type.getElementType()),
      v, {zero, OpFoldResult(column)},
      {b.getIndexAttr(type.getDimSize(0)), b.getIndexAttr(width)}, {one, one});
}

namespace {
/// One task of a grouped expert GEMM: a block of `width` columns from
/// `column` of one expert's matrix, for the expert's rows `[start, start +
/// count)`.
struct GroupedTask {
  Value local, start, count, column;
};
} // namespace

/// The task `iv` of `numActive * blocks` tasks: column block `iv /
/// numActive` (`width` columns) of the `iv % numActive`-th expert listed
/// (local indices) in `active`. Consecutive tasks are different experts' same
/// columns, so the threads' contiguous shares of the tasks (OpenMP's static
/// schedule) each hold about as many columns of every expert: as much work per
/// thread however the rows fall.
static GroupedTask groupedTask(OpBuilder &b, Location loc, Value iv,
                               Value active, Value numActive, int64_t first,
                               Value offsets, int64_t width, int64_t blocks) {
  Value i = iv, column = indexConst(b, loc, 0);
  if (blocks > 1) {
    i = arith::RemUIOp::create(b, loc, iv, numActive);
    Value block = arith::DivUIOp::create(b, loc, iv, numActive);
    column = arith::MulIOp::create(b, loc, block, indexConst(b, loc, width));
  }
  Value local = tensor::ExtractOp::create(b, loc, active, i);
  Value global =
      arith::AddIOp::create(b, loc, local, indexConst(b, loc, first));
  auto [start, count] = expertRowRange(b, loc, offsets, global);
  return {local, start, count, column};
}

/// The experts listed in `active` (local indices, `numActive` of them) as
/// two grouped GEMMs, each an `scf.forall` over (column block, expert) tasks
/// (see groupedTask) of the experts' matrices: the first computes the
/// activated hidden rows of every expert (gate and up columns and their
/// activation, `[rows, F]` in the dispatched row order), the second the
/// down projection's columns of every expert's rows into `dest`. Two
/// parallel regions for the layer, however many experts have rows.
static Value groupedExperts(OpBuilder &b, Location loc, ExpertsOp op,
                            ExpertsOp::Adaptor adaptor, bool mayPad,
                            Value active, Value numActive,
                            int64_t columnBlock) {
  ExpertAttr expert = op.getExpert();
  Value input = adaptor.getInput(), tokens = adaptor.getTokenIndices(),
        offsets = adaptor.getExpertOffsets(), dest = adaptor.getDest();
  int64_t first = op.getFirstExpert();
  Type elementType = tensorType(input).getElementType();
  int64_t ffnSize = tensorType(adaptor.getUp()).getDimSize(2);
  int64_t hidden = tensorType(dest).getDimSize(1);
  int64_t ffnBlock = nearestColumnBlock(ffnSize, columnBlock);
  int64_t hiddenBlock = nearestColumnBlock(hidden, columnBlock);
  int64_t ffnBlocks = ffnSize / ffnBlock, hiddenBlocks = hidden / hiddenBlock;
  OpFoldResult one = b.getIndexAttr(1), zero = b.getIndexAttr(0);
  auto taskCount = [&](int64_t blocks) -> OpFoldResult {
    if (blocks == 1)
      return numActive;
    return arith::MulIOp::create(b, loc, numActive, indexConst(b, loc, blocks))
        .getResult();
  };
  auto expertTokens = [&](OpBuilder &b, Location loc, const GroupedTask &t) {
    return tensor::ExtractSliceOp::create(b, loc, tokens,
                                          {OpFoldResult(t.start)},
                                          {OpFoldResult(t.count)}, {one})
        .getResult();
  };

  // The activated hidden rows, [rows, F].
  OpFoldResult numRows = tensor::getMixedSize(b, loc, tokens, 0);
  Value hiddenInit =
      emptyTensor(b, loc, {numRows, b.getIndexAttr(ffnSize)}, elementType);
  Value hiddenRows = forallInsertingSlices(
      b, loc, taskCount(ffnBlocks), ValueRange{hiddenInit},
      [&](OpBuilder &b, Location loc, Value iv, ValueRange) {
        GroupedTask t = groupedTask(b, loc, iv, active, numActive, first,
                                    offsets, ffnBlock, ffnBlocks);
        Value rows = gatherRows(b, loc, input, expertTokens(b, loc, t));
        auto slice = [&](Value weights) {
          return sliceColumns(b, loc, sliceExpert(b, loc, weights, t.local),
                              t.column, ffnBlock);
        };
        FfnWeights w{
            slice(adaptor.getGate()),     slice(adaptor.getUp()),     {},
            slice(adaptor.getGateBias()), slice(adaptor.getUpBias()), {}};
        Value block = buildHidden(b, loc, rows, w, expert);
        return SmallVector<ParallelSlice>{
            {block, {t.start, t.column}, {t.count, b.getIndexAttr(ffnBlock)}}};
      })[0];

  // The down projection into the destination's rows.
  return forallInsertingSlices(
      b, loc, taskCount(hiddenBlocks), ValueRange{dest},
      [&](OpBuilder &b, Location loc, Value iv, ValueRange shared) {
        GroupedTask t = groupedTask(b, loc, iv, active, numActive, first,
                                    offsets, hiddenBlock, hiddenBlocks);
        Value rows = tensor::ExtractSliceOp::create(
            b, loc, hiddenRows, {t.start, zero},
            {t.count, b.getIndexAttr(ffnSize)}, {one, one});
        Value down = sliceColumns(
            b, loc, sliceExpert(b, loc, adaptor.getDown(), t.local), t.column,
            hiddenBlock);
        Value bias = sliceColumns(
            b, loc, sliceExpert(b, loc, adaptor.getDownBias(), t.local),
            t.column, hiddenBlock);
        Value block =
            matmul(b, loc, rows, down,
                   biasInit(b, loc, t.count, b.getIndexAttr(hiddenBlock), bias,
                            elementType));
        if (mayPad) {
          Value old = tensor::ExtractSliceOp::create(
              b, loc, shared[0], {t.start, t.column},
              {t.count, b.getIndexAttr(hiddenBlock)}, {one, one});
          block = keepPaddingRows(b, loc, block, old, expertTokens(b, loc, t));
        }
        return SmallVector<ParallelSlice>{
            {block,
             {t.start, t.column},
             {t.count, b.getIndexAttr(hiddenBlock)}}};
      })[0];
}

//===----------------------------------------------------------------------===//
// Calls into the runtime's expert cache
//===----------------------------------------------------------------------===//

/// Calls `body(t, id)` for every entry `id >= 0` of `ids [T, k]`.
static void forEachAssignment(
    OpBuilder &b, Location loc, Value ids,
    function_ref<void(OpBuilder &, Location, Value, Value)> body) {
  Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
  Value tokens = tensor::DimOp::create(b, loc, ids, 0);
  Value k = tensor::DimOp::create(b, loc, ids, 1);
  scf::ForOp::create(
      b, loc, c0, tokens, c1, ValueRange{},
      [&](OpBuilder &b, Location loc, Value t, ValueRange) {
        scf::ForOp::create(
            b, loc, c0, k, c1, ValueRange{},
            [&](OpBuilder &b, Location loc, Value j, ValueRange) {
              Value id = extractIndex(b, loc, ids, ValueRange{t, j});
              Value valid = arith::CmpIOp::create(
                  b, loc, arith::CmpIPredicate::sge, id, c0);
              scf::IfOp::create(b, loc, valid, [&](OpBuilder &b, Location loc) {
                body(b, loc, t, id);
                scf::YieldOp::create(b, loc);
              });
              scf::YieldOp::create(b, loc);
            });
        scf::YieldOp::create(b, loc);
      });
}

namespace {
/// A grouped GEMM: each expert runs its FFN on its own rows only. Placed
/// experts first queue the loads of every expert with rows, then acquire
/// each one's slot around its FFN. With `parallelRows` > 0 and at least
/// kMinParallelExperts experts (not placed), a call with at least
/// `parallelRows` rows per expert on average and kMinParallelExperts experts
/// with rows runs the experts in parallel (an `scf.forall` over them, each
/// expert's GEMMs on one thread), and otherwise one expert after another
/// (each GEMM split over the threads by moe-cpu-tile-and-vectorize).
struct ExpertsOpLowering : public OpConversionPattern<ExpertsOp> {
  ExpertsOpLowering(MLIRContext *ctx, int64_t parallelRows, int64_t columnBlock)
      : OpConversionPattern(ctx), parallelRows(parallelRows),
        columnBlock(columnBlock) {}

  /// The fewest experts (and experts with rows) for the expert-parallel
  /// form: it balances the threads' work by giving each a share of the
  /// experts.
  static constexpr int64_t kMinParallelExperts = 16;

  LogicalResult
  matchAndRewrite(ExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    bool mayPad = mayHavePadding(op.getExpertOffsets());
    PlacementAttr placement = op.getPlacementAttr();
    Value layer;
    if (placement) {
      layer =
          intConst(rewriter, loc, rewriter.getI64Type(), placement.getLayer());
      // Queue the loads of the experts this call needs, in the order the
      // loop below acquires them, so loads overlap the computation.
      Value offsets = adaptor.getExpertOffsets();
      scf::ForOp::create(
          rewriter, loc, indexConst(rewriter, loc, 0),
          indexConst(rewriter, loc, op.getNumExperts()),
          indexConst(rewriter, loc, 1), ValueRange{},
          [&](OpBuilder &b, Location loc, Value e, ValueRange) {
            Value start = extractIndex(b, loc, offsets, e);
            Value next =
                arith::AddIOp::create(b, loc, e, indexConst(b, loc, 1));
            Value end = extractIndex(b, loc, offsets, next);
            Value any = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt,
                                              end, start);
            scf::IfOp::create(b, loc, any, [&](OpBuilder &b, Location loc) {
              callRuntimeHook(b, loc, kPrefetchHook, {layer, e});
              scf::YieldOp::create(b, loc);
            });
            scf::YieldOp::create(b, loc);
          });
    }
    auto ffnOf = [&](OpBuilder &b, Location loc, Value local, Value slot,
                     Value rows) {
      FfnWeights w{sliceExpert(b, loc, adaptor.getGate(), slot),
                   sliceExpert(b, loc, adaptor.getUp(), slot),
                   sliceExpert(b, loc, adaptor.getDown(), slot),
                   sliceExpert(b, loc, adaptor.getGateBias(), local),
                   sliceExpert(b, loc, adaptor.getUpBias(), local),
                   sliceExpert(b, loc, adaptor.getDownBias(), local)};
      return buildFfn(b, loc, rows, w, op.getExpert());
    };
    auto serial = [&](OpBuilder &b, Location loc) {
      return serialExperts(b, loc, op, adaptor, layer, mayPad, ffnOf);
    };
    bool expertParallel = !placement && parallelRows > 0 &&
                          op.getNumExperts() >= kMinParallelExperts;
    Value result;
    if (placement || (columnBlock == 0 && !expertParallel)) {
      result = serial(rewriter, loc);
    } else {
      Value active, numActive;
      std::tie(active, numActive) =
          listActiveExperts(rewriter, loc, op.getFirstExpert(),
                            op.getNumExperts(), adaptor.getExpertOffsets());
      auto grouped = [&](OpBuilder &b, Location loc) {
        if (columnBlock == 0)
          return serial(b, loc);
        return groupedExperts(b, loc, op, adaptor, mayPad, active, numActive,
                              columnBlock);
      };
      if (expertParallel) {
        // The rows and the experts that have rows decide at run time: a few
        // busy experts would leave threads idle.
        Value numRows =
            tensor::DimOp::create(rewriter, loc, adaptor.getTokenIndices(), 0);
        Value manyRows = arith::CmpIOp::create(
            rewriter, loc, arith::CmpIPredicate::sge, numRows,
            indexConst(rewriter, loc, parallelRows * op.getNumExperts()));
        Value manyExperts = arith::CmpIOp::create(
            rewriter, loc, arith::CmpIPredicate::sge, numActive,
            indexConst(rewriter, loc, kMinParallelExperts));
        Value many =
            arith::AndIOp::create(rewriter, loc, manyRows, manyExperts);
        auto ifOp = scf::IfOp::create(
            rewriter, loc, many,
            [&](OpBuilder &b, Location loc) {
              Value rows = forEachExpertInParallel(
                  b, loc, op.getFirstExpert(), active, numActive,
                  adaptor.getInput(), adaptor.getTokenIndices(),
                  adaptor.getExpertOffsets(), adaptor.getDest(), mayPad,
                  [&](OpBuilder &b, Location loc, Value local, Value rows) {
                    return ffnOf(b, loc, local, local, rows);
                  });
              scf::YieldOp::create(b, loc, rows);
            },
            [&](OpBuilder &b, Location loc) {
              scf::YieldOp::create(b, loc, grouped(b, loc));
            });
        result = ifOp.getResult(0);
      } else {
        result = grouped(rewriter, loc);
      }
    }
    rewriter.replaceOp(op, result);
    return success();
  }

  /// The experts one after another (placed ones through their cache slots).
  static Value serialExperts(
      OpBuilder &b, Location loc, ExpertsOp op, OpAdaptor adaptor, Value layer,
      bool mayPad,
      function_ref<Value(OpBuilder &, Location, Value, Value, Value)> ffnOf) {
    PlacementAttr placement = op.getPlacementAttr();
    return forEachExpert(
        b, loc, op.getFirstExpert(), op.getNumExperts(), adaptor.getDest(),
        [&](OpBuilder &b, Location loc, Value local, Value global, Value dest) {
          auto compute = [&](OpBuilder &b, Location loc, Value rows) {
            Value slot = local;
            if (placement)
              slot = arith::IndexCastOp::create(
                  b, loc, b.getIndexType(),
                  callRuntimeHook(b, loc, kAcquireHook, {layer, global},
                                  b.getI64Type())[0]);
            return ffnOf(b, loc, local, slot, rows);
          };
          // The slot is released once the rows are in place.
          auto release = [&](OpBuilder &b, Location loc) {
            callRuntimeHook(b, loc, kReleaseHook, {layer, global});
          };
          return updateExpertRows(
              b, loc, adaptor.getInput(), adaptor.getTokenIndices(),
              adaptor.getExpertOffsets(), dest, global, mayPad, compute,
              placement ? function_ref<void(OpBuilder &, Location)>(release)
                        : nullptr);
        });
  }

  int64_t parallelRows;
  int64_t columnBlock;
};

/// Pre-gating predictions become hints to the cache's I/O thread.
struct PrefetchOpLowering : public OpConversionPattern<PrefetchOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(PrefetchOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value layer = intConst(rewriter, loc, rewriter.getI64Type(), op.getLayer());
    forEachAssignment(rewriter, loc, adaptor.getExpertIds(),
                      [&](OpBuilder &b, Location loc, Value, Value id) {
                        callRuntimeHook(b, loc, kPredictHook, {layer, id});
                      });
    rewriter.eraseOp(op);
    return success();
  }
};

/// Each routing decision is reported to the runtime's profile.
struct TraceRoutingOpLowering : public OpConversionPattern<TraceRoutingOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(TraceRoutingOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Type i64 = rewriter.getI64Type();
    Value layer = intConst(rewriter, loc, i64, op.getLayer());
    Value experts = intConst(rewriter, loc, i64, op.getNumExperts());
    forEachAssignment(
        rewriter, loc, adaptor.getExpertIds(),
        [&](OpBuilder &b, Location loc, Value t, Value id) {
          callRuntimeHook(b, loc, kTraceHook, {layer, experts, t, id});
        });
    rewriter.eraseOp(op);
    return success();
  }
};

/// Zero, copy and constant experts; the kinds are static, so each expert is
/// emitted on its own.
struct ZeroComputationExpertsOpLowering
    : public OpConversionPattern<ZeroComputationExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(ZeroComputationExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = rewriter.getContext();
    bool mayPad = mayHavePadding(op.getExpertOffsets());
    Type elementType = tensorType(adaptor.getInput()).getElementType();
    Value dest = adaptor.getDest();
    int64_t constantIndex = 0;
    for (auto [i, attr] : llvm::enumerate(op.getKinds())) {
      ZeroComputationKind kind = cast<ZeroComputationKindAttr>(attr).getValue();
      Value expert = indexConst(rewriter, loc, op.getFirstExpert() + i);
      Value values, mix;
      if (kind == ZeroComputationKind::Constant) {
        Value j = indexConst(rewriter, loc, constantIndex++);
        values = sliceExpert(rewriter, loc, adaptor.getValues(), j);
        mix = sliceExpert(rewriter, loc, adaptor.getMix(), j);
      }
      dest = updateExpertRows(
          rewriter, loc, adaptor.getInput(), adaptor.getTokenIndices(),
          adaptor.getExpertOffsets(), dest, expert, mayPad,
          [&](OpBuilder &b, Location loc, Value rows) -> Value {
            SmallVector<OpFoldResult> sizes =
                tensor::getMixedSizes(b, loc, rows);
            switch (kind) {
            case ZeroComputationKind::Zero:
              return filledTensor(b, loc, sizes,
                                  floatConst(b, loc, elementType, 0.0));
            case ZeroComputationKind::Copy:
              return rows;
            case ZeroComputationKind::Constant:
              break;
            }
            // a = softmax(x·Wc); row = a1·x + a2·v.
            Value init = filledTensor(b, loc, {sizes[0], b.getIndexAttr(2)},
                                      floatConst(b, loc, elementType, 0.0));
            Value a = softmaxRows(b, loc, matmul(b, loc, rows, mix, init), 1.0);
            AffineExpr d0 = getAffineDimExpr(0, ctx);
            return elementwise2d(
                b, loc, {rows, a, a, values},
                {id2(ctx),
                 AffineMap::get(2, 0, {d0, getAffineConstantExpr(0, ctx)}, ctx),
                 AffineMap::get(2, 0, {d0, getAffineConstantExpr(1, ctx)}, ctx),
                 dim2(ctx, 1)},
                sizes, elementType,
                [](OpBuilder &nb, Location nloc, ValueRange args) {
                  Value x = arith::MulFOp::create(nb, nloc, args[1], args[0]);
                  Value v = arith::MulFOp::create(nb, nloc, args[2], args[3]);
                  return arith::AddFOp::create(nb, nloc, x, v).getResult();
                });
          });
    }
    rewriter.replaceOp(op, dest);
    return success();
  }
};

/// The region of `moe.generic_experts`, cloned into the body of an `scf.for`
/// over the experts.
struct GenericExpertsOpLowering : public OpConversionPattern<GenericExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(GenericExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    bool mayPad = mayHavePadding(op.getExpertOffsets());
    Block &body = op.getBody().front();
    Value result = forEachExpert(
        rewriter, loc, op.getFirstExpert(), op.getNumExperts(),
        adaptor.getDest(),
        [&](OpBuilder &b, Location loc, Value local, Value global, Value dest) {
          return updateExpertRows(
              b, loc, adaptor.getInput(), adaptor.getTokenIndices(),
              adaptor.getExpertOffsets(), dest, global, mayPad,
              [&](OpBuilder &b, Location loc, Value rows) {
                IRMapping mapping;
                mapping.map(body.getArgument(0), rows);
                mapping.map(body.getArgument(1), local);
                for (Operation &inner : body.without_terminator())
                  b.clone(inner, mapping);
                auto yield = cast<YieldOp>(body.getTerminator());
                return mapping.lookupOrDefault(yield.getValue());
              });
        });
    rewriter.replaceOp(op, result);
    return success();
  }
};

/// A dense FFN over every token, optionally scaled by `sigmoid(x·scale)`.
struct SharedExpertsOpLowering : public OpConversionPattern<SharedExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(SharedExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = rewriter.getContext();
    Value x = adaptor.getInput();
    Type elementType = tensorType(x).getElementType();
    FfnWeights w{
        adaptor.getGate(), adaptor.getUp(), adaptor.getDown(), {}, {}, {}};
    Value y = buildFfn(rewriter, loc, x, w, op.getExpert());
    if (Value scale = adaptor.getScale()) {
      OpFoldResult rows = tensor::getMixedSize(rewriter, loc, x, 0);
      Value init = filledTensor(rewriter, loc, {rows},
                                floatConst(rewriter, loc, elementType, 0.0));
      auto dot = linalg::GenericOp::create(
          rewriter, loc, init.getType(), ValueRange{x, scale}, init,
          {id2(ctx), dim2(ctx, 1), dim2(ctx, 0)},
          {IteratorType::parallel, IteratorType::reduction},
          [](OpBuilder &nb, Location nloc, ValueRange args) {
            Value p = arith::MulFOp::create(nb, nloc, args[0], args[1]);
            linalg::YieldOp::create(
                nb, nloc,
                arith::AddFOp::create(nb, nloc, args[2], p).getResult());
          });
      y = elementwise2d(
          rewriter, loc, {y, dot.getResult(0)}, {id2(ctx), dim2(ctx, 0)},
          tensor::getMixedSizes(rewriter, loc, y), elementType,
          [](OpBuilder &nb, Location nloc, ValueRange args) {
            return arith::MulFOp::create(nb, nloc, args[0],
                                         buildSigmoid(nb, nloc, args[1]))
                .getResult();
          });
    }
    rewriter.replaceOp(op, RouteOpLowering::castTo(rewriter, loc, y,
                                                   op.getResult().getType()));
    return success();
  }
};

//===----------------------------------------------------------------------===//
// Combine
//===----------------------------------------------------------------------===//

/// `result[t, h] = addend[t, h] + sum_i w[t, i] * rows[pos[t, i], h]` as one
/// `linalg.generic` over `(t, h)`: a reduction per token, no scatter.
/// The per-token weighted sum of the k expert rows. Where the hidden size is
/// a multiple of the vector width (kCombineVectorBits), explicit vector
/// loops: per token, the k positions and weights are read once, then each
/// vector of the hidden dimension is the fused multiply-add of the k rows'
/// vectors (a row read whole: linalg's vectorizer had made the row gathers
/// scalar loads); more than kCombineBlockTokens tokens (chosen at run time)
/// run in parallel blocks of that many tokens (an `scf.forall`). Otherwise,
/// or without `vectorize`, a `linalg.generic` over `[T, H]`.
struct CombineOpLowering : public OpConversionPattern<CombineOp> {
  CombineOpLowering(MLIRContext *ctx, bool vectorize)
      : OpConversionPattern(ctx), vectorize(vectorize) {}

  static constexpr int64_t kCombineVectorBits = 512;
  static constexpr int64_t kCombineBlockTokens = 16;

  static Value buildVectorCombine(OpBuilder &b, Location loc, OpAdaptor adaptor,
                                  int64_t lanes) {
    Value rows = adaptor.getRows(), positions = adaptor.getPositions();
    Value weights = adaptor.getWeights(), addend = adaptor.getAddend();
    Type elementType = tensorType(rows).getElementType();
    int64_t k = tensorType(positions).getDimSize(1);
    int64_t hidden = tensorType(rows).getDimSize(1);
    auto vecType = VectorType::get({lanes}, elementType);
    Value c0 = indexConst(b, loc, 0), c1 = indexConst(b, loc, 1);
    Value numTokens = tensor::DimOp::create(b, loc, positions, 0);
    Value out =
        emptyTensor(b, loc, {numTokens, b.getIndexAttr(hidden)}, elementType);
    Value zero = floatConst(b, loc, elementType, 0.0);
    // Tokens [t0, t0 + n) into `dest` ([n, H]).
    auto combineTokens = [&](OpBuilder &b, Location loc, Value t0, Value dest) {
      Value n = tensor::DimOp::create(b, loc, dest, 0);
      auto tokenLoop = scf::ForOp::create(
          b, loc, c0, n, c1, dest,
          [&](OpBuilder &b, Location loc, Value t, ValueRange tokenArgs) {
            Value token = arith::AddIOp::create(b, loc, t0, t);
            SmallVector<Value> rowOf, weightOf, valid;
            for (int64_t j = 0; j < k; ++j) {
              Value cj = indexConst(b, loc, j);
              Value pos = extractIndex(b, loc, positions, {token, cj});
              valid.push_back(arith::CmpIOp::create(
                  b, loc, arith::CmpIPredicate::sge, pos, c0));
              rowOf.push_back(arith::MaxSIOp::create(b, loc, pos, c0));
              weightOf.push_back(vector::BroadcastOp::create(
                  b, loc, vecType,
                  tensor::ExtractOp::create(b, loc, weights,
                                            ValueRange{token, cj})));
            }
            auto vectorLoop = scf::ForOp::create(
                b, loc, c0, indexConst(b, loc, hidden),
                indexConst(b, loc, lanes), tokenArgs,
                [&](OpBuilder &b, Location loc, Value h, ValueRange args) {
                  auto read = [&](Value source, Value row) -> Value {
                    return vector::TransferReadOp::create(
                        b, loc, vecType, source, ValueRange{row, h}, zero,
                        ArrayRef<bool>{true});
                  };
                  Value acc =
                      addend
                          ? read(addend, token)
                          : vector::BroadcastOp::create(b, loc, vecType, zero)
                                .getResult();
                  for (int64_t j = 0; j < k; ++j) {
                    Value sum = vector::FMAOp::create(
                        b, loc, weightOf[j], read(rows, rowOf[j]), acc);
                    acc = arith::SelectOp::create(b, loc, valid[j], sum, acc);
                  }
                  Value written = vector::TransferWriteOp::create(
                                      b, loc, acc, args[0], ValueRange{t, h},
                                      ArrayRef<bool>{true})
                                      .getResult();
                  scf::YieldOp::create(b, loc, written);
                });
            scf::YieldOp::create(b, loc, vectorLoop.getResults());
          });
      return tokenLoop.getResult(0);
    };
    Value block = indexConst(b, loc, kCombineBlockTokens);
    Value many = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::sgt,
                                       numTokens, block);
    auto ifOp = scf::IfOp::create(
        b, loc, many,
        [&](OpBuilder &b, Location loc) {
          Value numBlocks =
              arith::CeilDivUIOp::create(b, loc, numTokens, block);
          SmallVector<Value> combined = forallInsertingSlices(
              b, loc, numBlocks, ValueRange{out},
              [&](OpBuilder &b, Location loc, Value i, ValueRange shared) {
                Value t0 = arith::MulIOp::create(b, loc, i, block);
                Value n = arith::MinSIOp::create(
                    b, loc, block,
                    arith::SubIOp::create(b, loc, numTokens, t0));
                SmallVector<OpFoldResult> offsets = {t0, b.getIndexAttr(0)};
                SmallVector<OpFoldResult> sizes = {n, b.getIndexAttr(hidden)};
                Value slice = tensor::ExtractSliceOp::create(
                    b, loc, shared[0], offsets, sizes,
                    SmallVector<OpFoldResult>(2, b.getIndexAttr(1)));
                return SmallVector<ParallelSlice>{
                    {combineTokens(b, loc, t0, slice), offsets, sizes}};
              });
          scf::YieldOp::create(b, loc, combined);
        },
        [&](OpBuilder &b, Location loc) {
          scf::YieldOp::create(b, loc, combineTokens(b, loc, c0, out));
        });
    return ifOp.getResult(0);
  }

  LogicalResult
  matchAndRewrite(CombineOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    MLIRContext *ctx = rewriter.getContext();
    Value rows = adaptor.getRows(), positions = adaptor.getPositions();
    Value weights = adaptor.getWeights();
    Type elementType = tensorType(rows).getElementType();
    int64_t k = tensorType(positions).getDimSize(1);
    int64_t hidden = tensorType(rows).getDimSize(1);
    int64_t lanes = kCombineVectorBits / elementType.getIntOrFloatBitWidth();
    if (vectorize && hidden % lanes == 0) {
      Value result = buildVectorCombine(rewriter, loc, adaptor, lanes);
      rewriter.replaceOp(op, RouteOpLowering::castTo(rewriter, loc, result,
                                                     op.getResult().getType()));
      return success();
    }
    SmallVector<OpFoldResult> sizes = {
        tensor::getMixedSize(rewriter, loc, positions, 0),
        rewriter.getIndexAttr(hidden)};
    SmallVector<Value> inputs;
    SmallVector<AffineMap> maps;
    if (Value addend = adaptor.getAddend()) {
      inputs.push_back(addend);
      maps.push_back(id2(ctx));
    }
    bool hasAddend = !inputs.empty();
    Value result = elementwise2d(
        rewriter, loc, inputs, maps, sizes, elementType,
        [&](OpBuilder &b, Location loc, ValueRange args) {
          Value t = linalg::IndexOp::create(b, loc, 0);
          Value h = linalg::IndexOp::create(b, loc, 1);
          Value zero = floatConst(b, loc, elementType, 0.0);
          Value acc = hasAddend ? args[0] : zero;
          for (int64_t i = 0; i < k; ++i) {
            Value ci = indexConst(b, loc, i);
            Value pos = extractIndex(b, loc, positions, {t, ci});
            Value w =
                tensor::ExtractOp::create(b, loc, weights, ValueRange{t, ci});
            Value valid = arith::CmpIOp::create(
                b, loc, arith::CmpIPredicate::sge, pos, indexConst(b, loc, 0));
            Value row =
                arith::MaxSIOp::create(b, loc, pos, indexConst(b, loc, 0));
            Value v =
                tensor::ExtractOp::create(b, loc, rows, ValueRange{row, h});
            Value term = arith::MulFOp::create(b, loc, w, v);
            term = arith::SelectOp::create(b, loc, valid, term, zero);
            acc = arith::AddFOp::create(b, loc, acc, term);
          }
          return acc;
        });
    rewriter.replaceOp(op, RouteOpLowering::castTo(rewriter, loc, result,
                                                   op.getResult().getType()));
    return success();
  }

  bool vectorize;
};
} // namespace

//===----------------------------------------------------------------------===//
// Hash routing
//===----------------------------------------------------------------------===//

namespace {
/// Per token: the expert from the table or the multiplicative hash, -1 for an
/// id or a table entry out of range; weight 1 where an expert was found.
struct HashRouteOpLowering : public OpConversionPattern<HashRouteOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(HashRouteOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    Value tokenIds = adaptor.getTokenIds(), table = adaptor.getTable();
    int64_t numExperts = op.getNumExperts();
    auto idsType = op.getExpertIds().getType();
    auto weightsType = op.getWeights().getType();
    SmallVector<Value> dynamicSizes;
    if (idsType.isDynamicDim(0))
      dynamicSizes.push_back(tensor::DimOp::create(rewriter, loc, tokenIds, 0));
    SmallVector<Value> weightSizes;
    if (weightsType.isDynamicDim(0))
      weightSizes.push_back(tensor::DimOp::create(rewriter, loc, tokenIds, 0));

    Value ids = tensor::GenerateOp::create(
        rewriter, loc, idsType, dynamicSizes,
        [&](OpBuilder &b, Location l, ValueRange idx) {
          Value c0 = indexConst(b, l, 0);
          Value noExpert = indexConst(b, l, -1);
          Value id = extractIndex(b, l, tokenIds, idx[0]);
          Value valid =
              arith::CmpIOp::create(b, l, arith::CmpIPredicate::sge, id, c0);
          Value expert;
          if (table) {
            Value size = tensor::DimOp::create(b, l, table, 0);
            valid = arith::AndIOp::create(
                b, l, valid,
                arith::CmpIOp::create(b, l, arith::CmpIPredicate::slt, id,
                                      size));
            auto lookup = scf::IfOp::create(
                b, l, valid,
                [&](OpBuilder &tb, Location tl) {
                  scf::YieldOp::create(tb, tl, extractIndex(tb, tl, table, id));
                },
                [&](OpBuilder &eb, Location el) {
                  scf::YieldOp::create(eb, el, noExpert);
                });
            expert = lookup.getResult(0);
          } else {
            expert = buildHashExpert(b, l, id, numExperts);
          }
          valid = arith::AndIOp::create(
              b, l, valid,
              arith::AndIOp::create(
                  b, l,
                  arith::CmpIOp::create(b, l, arith::CmpIPredicate::sge, expert,
                                        c0),
                  arith::CmpIOp::create(b, l, arith::CmpIPredicate::slt, expert,
                                        indexConst(b, l, numExperts))));
          expert = arith::SelectOp::create(b, l, valid, expert, noExpert);
          tensor::YieldOp::create(b, l,
                                  arith::IndexCastOp::create(
                                      b, l, idsType.getElementType(), expert));
        });
    Type elementType = weightsType.getElementType();
    Value weights = tensor::GenerateOp::create(
        rewriter, loc, weightsType, weightSizes,
        [&](OpBuilder &b, Location l, ValueRange idx) {
          Value expert = extractIndex(b, l, ids, idx);
          Value found = arith::CmpIOp::create(b, l, arith::CmpIPredicate::sge,
                                              expert, indexConst(b, l, 0));
          tensor::YieldOp::create(
              b, l,
              arith::SelectOp::create(b, l, found,
                                      floatConst(b, l, elementType, 1.0),
                                      floatConst(b, l, elementType, 0.0))
                  .getResult());
        });
    rewriter.replaceOp(op, {ids, weights});
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// Quantized experts
//===----------------------------------------------------------------------===//

namespace {
/// `moe.quantized_experts`: the grouped FFN of `moe.experts` with each GEMM
/// reading the int8/int4 bytes and dequantizing in its loop
/// (`buildQuantizedMatmul`).
struct QuantizedExpertsOpLowering
    : public OpConversionPattern<QuantizedExpertsOp> {
  using OpConversionPattern::OpConversionPattern;

  LogicalResult
  matchAndRewrite(QuantizedExpertsOp op, OpAdaptor adaptor,
                  ConversionPatternRewriter &rewriter) const override {
    Location loc = op.getLoc();
    ExpertAttr expert = op.getExpert();
    int64_t bits = op.getBits(), zeroPoint = op.getZeroPoint();
    int64_t ffn = tensorType(adaptor.getUp()).getDimSize(1);
    int64_t hidden = tensorType(adaptor.getInput()).getDimSize(1);
    Type elementType = tensorType(adaptor.getInput()).getElementType();
    MLIRContext *ctx = rewriter.getContext();
    Value result = forEachExpert(
        rewriter, loc, op.getFirstExpert(), op.getNumExperts(),
        adaptor.getDest(),
        [&](OpBuilder &b, Location loc, Value local, Value global, Value dest) {
          Value gateBias = sliceExpert(b, loc, adaptor.getGateBias(), local);
          Value upBias = sliceExpert(b, loc, adaptor.getUpBias(), local);
          Value downBias = sliceExpert(b, loc, adaptor.getDownBias(), local);
          auto ffnBody = [&](OpBuilder &b, Location loc, Value x) {
            OpFoldResult rows = tensor::getMixedSize(b, loc, x, 0);
            OpFoldResult ffnSize = b.getIndexAttr(ffn);
            auto gemm = [&](Value lhs, Value bytes, Value scales,
                            Value zeroPoints, Value bias, OpFoldResult cols) {
              return buildQuantizedMatmul(
                  b, loc, lhs, bytes, scales, local,
                  biasInit(b, loc, rows, cols, bias, elementType), bits,
                  zeroPoint, zeroPoints);
            };
            Value up = gemm(x, adaptor.getUp(), adaptor.getUpScales(),
                            adaptor.getUpZeroPoints(), upBias, ffnSize);
            Value gate;
            if (expert.isGated())
              gate = gemm(x, adaptor.getGate(), adaptor.getGateScales(),
                          adaptor.getGateZeroPoints(), gateBias, ffnSize);
            SmallVector<Value> inputs = {up};
            if (gate)
              inputs.insert(inputs.begin(), gate);
            SmallVector<AffineMap> maps(inputs.size(), id2(ctx));
            Value act = elementwise2d(
                b, loc, inputs, maps, {rows, ffnSize}, elementType,
                [&](OpBuilder &nb, Location nloc, ValueRange args) {
                  return gate ? buildExpertHidden(nb, nloc, expert, args[0],
                                                  args[1])
                              : buildExpertHidden(nb, nloc, expert, Value(),
                                                  args[0]);
                });
            return gemm(act, adaptor.getDown(), adaptor.getDownScales(),
                        adaptor.getDownZeroPoints(), downBias,
                        b.getIndexAttr(hidden));
          };
          return updateExpertRows(
              b, loc, adaptor.getInput(), adaptor.getTokenIndices(),
              adaptor.getExpertOffsets(), dest, global,
              mayHavePadding(op.getExpertOffsets()), ffnBody);
        });
    rewriter.replaceOp(op, result);
    return success();
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// Entry points
//===----------------------------------------------------------------------===//

void moe::populateMoEToLinalgConversionPatterns(RewritePatternSet &patterns,
                                                int64_t gateBlockSize,
                                                int64_t expertParallelRows,
                                                bool vectorCombine,
                                                int64_t expertColumnBlock) {
  MLIRContext *ctx = patterns.getContext();
  patterns.add<ExpertsOpLowering>(ctx, expertParallelRows, expertColumnBlock);
  patterns.add<CombineOpLowering>(ctx, vectorCombine);
  patterns.add<RouteOpLowering, DispatchOpLowering,
               ZeroComputationExpertsOpLowering, GenericExpertsOpLowering,
               SharedExpertsOpLowering, PrefetchOpLowering,
               TraceRoutingOpLowering, QuantizedExpertsOpLowering>(ctx);
  patterns.add<GateOpLowering>(ctx, gateBlockSize);
  patterns.add<HashRouteOpLowering>(ctx);
}

LogicalResult moe::checkMoEToLinalgSupport(Operation *root) {
  WalkResult result = root->walk([](Operation *op) {
    if (!isa<MoEDialect>(op->getDialect()))
      return WalkResult::advance();
    if (isa<LayerOp>(op)) {
      op->emitOpError("is not lowered by convert-moe-to-linalg; run "
                      "moe-expand first");
      return WalkResult::interrupt();
    }
    if (isa<ExpertSlotsOp>(op)) {
      op->emitOpError("must be realized by moe-compile: its weights become "
                      "expert-cache slots of the compiled model");
      return WalkResult::interrupt();
    }
    if (auto experts = dyn_cast<ExpertsOp>(op);
        experts && experts.getPlacementAttr() &&
        experts.getPlacementAttr().getNumDevices() > 1) {
      op->emitOpError() << "is placed over "
                        << experts.getPlacementAttr().getNumDevices()
                        << " devices; moe-mlir runs a layer on one device "
                           "(a plan over several devices is for "
                           "expert-parallel engines)";
      return WalkResult::interrupt();
    }
    // Expert weight matrices may be narrower (the GEMMs widen them);
    // everything else computes in f32 or f64 (moe-widen-narrow-floats
    // rewrites f16/bf16 ops to f32 first).
    auto check = [&](Type type, bool weights) {
      Type elementType = getElementTypeOrSelf(type);
      if (!isa<FloatType>(elementType) || elementType.isF32() ||
          elementType.isF64() ||
          (weights && (elementType.isF16() || elementType.isBF16())))
        return true;
      op->emitOpError() << "with " << (weights ? "weights" : "element type")
                        << (weights ? " in " : " ") << elementType
                        << " is not supported by convert-moe-to-linalg ("
                        << (weights ? "f16, bf16, f32 and f64 are"
                                    : "f32 and f64 are; "
                                      "moe-widen-narrow-floats computes "
                                      "f16/bf16 ops in f32")
                        << ")";
      return false;
    };
    for (OpOperand &operand : op->getOpOperands())
      if (!check(operand.get().getType(), isExpertWeightMatrix(operand)))
        return WalkResult::interrupt();
    for (Type type : op->getResultTypes())
      if (!check(type, /*weights=*/false))
        return WalkResult::interrupt();
    return WalkResult::advance();
  });
  return failure(result.wasInterrupted());
}

namespace {
struct ConvertMoEToLinalgPass
    : public moe::impl::ConvertMoEToLinalgBase<ConvertMoEToLinalgPass> {
  using ConvertMoEToLinalgBase::ConvertMoEToLinalgBase;

  void runOnOperation() override {
    if (gateBlockSize < 1) {
      getOperation()->emitError("gate-block-size must be positive");
      return signalPassFailure();
    }
    if (expertParallelRows < 0) {
      getOperation()->emitError("expert-parallel-rows must not be negative");
      return signalPassFailure();
    }
    if (expertColumnBlock < 0) {
      getOperation()->emitError("expert-column-block must not be negative");
      return signalPassFailure();
    }
    if (failed(checkMoEToLinalgSupport(getOperation())))
      return signalPassFailure();
    // Placed experts, prefetches and traces call the runtime.
    WalkResult needsRuntime = getOperation()->walk([](Operation *op) {
      if (isa<PrefetchOp, TraceRoutingOp>(op) ||
          (isa<ExpertsOp>(op) && cast<ExpertsOp>(op).getPlacementAttr()))
        return WalkResult::interrupt();
      return WalkResult::advance();
    });
    if (needsRuntime.wasInterrupted()) {
      auto module = dyn_cast<ModuleOp>(getOperation());
      if (!module) {
        getOperation()->emitError(
            "convert-moe-to-linalg must run on the module to lower placed "
            "experts, moe.prefetch and moe.trace_routing (they declare "
            "runtime functions)");
        return signalPassFailure();
      }
      declareRuntimeHooks(module);
    }
    ConversionTarget target(getContext());
    target.addIllegalDialect<MoEDialect>();
    target.markUnknownOpDynamicallyLegal([](Operation *) { return true; });
    RewritePatternSet patterns(&getContext());
    populateMoEToLinalgConversionPatterns(patterns, gateBlockSize,
                                          expertParallelRows, vectorCombine,
                                          expertColumnBlock);
    if (failed(applyPartialConversion(getOperation(), target,
                                      std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
