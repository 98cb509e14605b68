//===- MoEOps.cpp - Operations of the moe dialect -------------------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/STLExtras.h"

using namespace mlir;
using namespace moe;

//===----------------------------------------------------------------------===//
// Shape helpers
//===----------------------------------------------------------------------===//

/// Whether two extents can be equal at run time.
static bool compatible(int64_t a, int64_t b) {
  return ShapedType::isDynamic(a) || ShapedType::isDynamic(b) || a == b;
}

static std::string dimStr(int64_t d) {
  return ShapedType::isDynamic(d) ? "?" : std::to_string(d);
}

static RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// Checks that `value` (named `name`) has rank `expected.size()` and extents
/// compatible with `expected` (dynamic entries match anything).
static LogicalResult checkShape(Operation *op, Value value, StringRef name,
                                ArrayRef<int64_t> expected) {
  auto type = tensorType(value);
  auto describe = [&](InFlightDiagnostic diag) -> LogicalResult {
    diag << name << " must have shape [";
    llvm::interleaveComma(expected, diag,
                          [&](int64_t d) { diag << dimStr(d); });
    diag << "], got " << type;
    return diag;
  };
  if (type.getRank() != static_cast<int64_t>(expected.size()))
    return describe(op->emitOpError());
  for (auto [got, want] : llvm::zip(type.getShape(), expected))
    if (!compatible(got, want))
      return describe(op->emitOpError());
  return success();
}

/// Checks that `value` has the element type `elementType`.
static LogicalResult checkElementType(Operation *op, Value value,
                                      StringRef name, Type elementType) {
  Type got = tensorType(value).getElementType();
  if (got == elementType)
    return success();
  return op->emitOpError() << name << " must have element type " << elementType
                           << ", got " << got;
}

/// Checks shape and element type of an optional operand (null passes).
static LogicalResult checkOptional(Operation *op, Value value, StringRef name,
                                   ArrayRef<int64_t> shape, Type elementType) {
  if (!value)
    return success();
  if (failed(checkShape(op, value, name, shape)))
    return failure();
  return checkElementType(op, value, name, elementType);
}

/// Checks the weights of an FFN expert (batched over `numExperts` when it is
/// not nullopt, a single dense FFN otherwise) against the hidden size `hidden`
/// and the element type `elementType`.
static LogicalResult verifyFfnWeights(Operation *op, ExpertAttr expert,
                                      Value gate, Value up, Value down,
                                      Value gateBias, Value upBias,
                                      Value downBias, int64_t hidden,
                                      std::optional<int64_t> numExperts,
                                      Type elementType) {
  if (expert.isGated() && !gate)
    return op->emitOpError("gated experts need gate weights");
  if (!expert.isGated() && gate)
    return op->emitOpError("ffn experts take no gate weights");
  if (!expert.isGated() && gateBias)
    return op->emitOpError("ffn experts take no gate bias");

  auto upType = tensorType(up);
  int64_t batchRank = numExperts ? 1 : 0;
  if (upType.getRank() != 2 + batchRank)
    return op->emitOpError() << "up weights must have rank " << 2 + batchRank
                             << ", got " << upType;
  int64_t ffn = upType.getDimSize(1 + batchRank);
  if (ShapedType::isDynamic(ffn))
    return op->emitOpError("up weights must have a static FFN size");
  SmallVector<int64_t> prefix;
  if (numExperts)
    prefix.push_back(*numExperts);
  auto shape = [&](std::initializer_list<int64_t> dims) {
    SmallVector<int64_t> s(prefix);
    s.append(dims.begin(), dims.end());
    return s;
  };
  if (failed(checkShape(op, up, "up weights", shape({hidden, ffn}))) ||
      failed(checkShape(op, down, "down weights", shape({ffn, hidden}))))
    return failure();
  if (gate &&
      failed(checkShape(op, gate, "gate weights", shape({hidden, ffn}))))
    return failure();
  if (gateBias && failed(checkShape(op, gateBias, "gate bias", shape({ffn}))))
    return failure();
  if (upBias && failed(checkShape(op, upBias, "up bias", shape({ffn}))))
    return failure();
  if (downBias &&
      failed(checkShape(op, downBias, "down bias", shape({hidden}))))
    return failure();
  // The weight matrices may be stored in a narrower float type than the
  // activations (bf16 weights of an f32 layer: half the bytes to read); they
  // are computed in the activations' type.
  for (auto [value, name] : {std::pair<Value, StringRef>{gate, "gate weights"},
                             {up, "up weights"},
                             {down, "down weights"}}) {
    if (!value)
      continue;
    Type got = tensorType(value).getElementType();
    if (got != elementType &&
        (!isa<FloatType>(got) || !isa<FloatType>(elementType) ||
         got.getIntOrFloatBitWidth() > elementType.getIntOrFloatBitWidth()))
      return op->emitOpError()
             << name << " must have element type " << elementType
             << " or a narrower float type, got " << got;
  }
  for (auto [value, name] : {std::pair<Value, StringRef>{gateBias, "gate bias"},
                             {upBias, "up bias"},
                             {downBias, "down bias"}})
    if (value && failed(checkElementType(op, value, name, elementType)))
      return failure();
  // One storage type for all of an FFN's matrices.
  Type weightType = tensorType(up).getElementType();
  for (auto [value, name] : {std::pair<Value, StringRef>{gate, "gate weights"},
                             {down, "down weights"}})
    if (value && tensorType(value).getElementType() != weightType)
      return op->emitOpError()
             << name << " must have the element type of the up weights ("
             << weightType << "), got " << tensorType(value).getElementType();
  return success();
}

bool moe::isExpertWeightMatrix(OpOperand &use) {
  Operation *owner = use.getOwner();
  auto contains = [&](MutableOperandRange range) {
    return llvm::any_of(range, [&](OpOperand &o) { return &o == &use; });
  };
  if (auto layer = dyn_cast<LayerOp>(owner))
    return contains(layer.getGateMutable()) || contains(layer.getUpMutable()) ||
           contains(layer.getDownMutable()) ||
           contains(layer.getSharedGateMutable()) ||
           contains(layer.getSharedUpMutable()) ||
           contains(layer.getSharedDownMutable());
  if (auto experts = dyn_cast<ExpertsOp>(owner))
    return contains(experts.getGateMutable()) ||
           contains(experts.getUpMutable()) ||
           contains(experts.getDownMutable());
  if (auto shared = dyn_cast<SharedExpertsOp>(owner))
    return contains(shared.getGateMutable()) ||
           contains(shared.getUpMutable()) || contains(shared.getDownMutable());
  return false;
}

/// Checks a hidden-state tensor `[T, H]` with a static H; returns H.
static FailureOr<int64_t> verifyHidden(Operation *op, Value value,
                                       StringRef name) {
  auto type = tensorType(value);
  if (type.getRank() != 2)
    return op->emitOpError() << name << " must have rank 2, got " << type;
  if (type.isDynamicDim(1))
    return op->emitOpError() << name << " must have a static hidden size";
  return type.getDimSize(1);
}

/// Checks a router `[H, E]` against the hidden size; returns E.
static FailureOr<int64_t> verifyRouter(Operation *op, Value router,
                                       int64_t hidden) {
  auto type = tensorType(router);
  if (type.getRank() != 2 || type.isDynamicDim(1))
    return op->emitOpError()
           << "router must have shape [H, E] with a static E, got " << type;
  if (failed(checkShape(op, router, "router", {hidden, type.getDimSize(1)})))
    return failure();
  return type.getDimSize(1);
}

/// Checks the `[T, k]` results of a routing op.
static LogicalResult verifyRoutingResults(Operation *op, RoutingAttr routing,
                                          int64_t numExperts, int64_t tokens,
                                          Value ids, Value weights,
                                          Value selectionBias,
                                          Value tokenGroups, Value residual,
                                          Type scoreElementType) {
  if (failed(routing.verifyForNumExperts([&] { return op->emitOpError(); },
                                         numExperts)))
    return failure();
  int64_t k = routing.getK();
  if (failed(checkShape(op, ids, "expert ids", {tokens, k})) ||
      failed(checkShape(op, weights, "weights", {tokens, k})))
    return failure();
  if (failed(checkElementType(op, weights, "weights", scoreElementType)))
    return failure();
  if (failed(checkOptional(op, selectionBias, "selection bias", {numExperts},
                           scoreElementType)))
    return failure();
  if (routing.hasExpertGroups() && !tokenGroups)
    return op->emitOpError("routing expert_groups needs token_groups");
  if (tokenGroups && !routing.hasExpertGroups())
    return op->emitOpError("token_groups need routing expert_groups");
  if (tokenGroups &&
      failed(checkShape(op, tokenGroups, "token groups", {tokens})))
    return failure();
  return checkOptional(op, residual, "residual", {tokens, numExperts},
                       scoreElementType);
}

/// Checks `expert_offsets [N + 1]` covers experts up to `endExpert`.
static LogicalResult verifyOffsets(Operation *op, Value offsets,
                                   int64_t endExpert) {
  auto type = tensorType(offsets);
  if (type.getRank() != 1 || type.isDynamicDim(0))
    return op->emitOpError() << "expert offsets must have a static shape [E + "
                                "1], got "
                             << type;
  if (type.getDimSize(0) < endExpert + 1)
    return op->emitOpError()
           << "expert offsets cover " << type.getDimSize(0) - 1
           << " experts, but the op uses experts up to " << endExpert - 1;
  return success();
}

/// Common checks of the ops that fill the permuted rows of `dest`; returns H.
static FailureOr<int64_t> verifyRowsOp(Operation *op, Value input,
                                       Value tokenIndices, Value offsets,
                                       Value dest, Value result,
                                       int64_t endExpert) {
  FailureOr<int64_t> hidden = verifyHidden(op, input, "input");
  if (failed(hidden))
    return failure();
  auto tokType = tensorType(tokenIndices);
  if (tokType.getRank() != 1)
    return op->emitOpError()
           << "token indices must have rank 1, got " << tokType;
  if (failed(verifyOffsets(op, offsets, endExpert)))
    return failure();
  if (failed(checkShape(op, dest, "dest", {tokType.getDimSize(0), *hidden})))
    return failure();
  Type elementType = tensorType(input).getElementType();
  if (failed(checkElementType(op, dest, "dest", elementType)))
    return failure();
  if (dest.getType() != result.getType())
    return op->emitOpError() << "result type " << result.getType()
                             << " must match dest type " << dest.getType();
  return *hidden;
}

//===----------------------------------------------------------------------===//
// Routing canonicalization helpers
//===----------------------------------------------------------------------===//

/// The recipe with the parts that cannot change the result removed: a
/// renormalization of weights that already sum to one, and a group limit that
/// keeps every group. Returns a null attribute when nothing changes.
static RoutingAttr simplifyRouting(RoutingAttr routing, int64_t numExperts) {
  bool renormalize = routing.getRenormalize();
  bool weightsSumToOne =
      routing.getScoring() == ScoringFunc::TopkSoftmax ||
      (routing.getScoring() == ScoringFunc::Softmax &&
       routing.getK() == numExperts && !routing.hasDynamicK());
  if (renormalize && weightsSumToOne)
    renormalize = false;
  int64_t nGroup = routing.getNGroup(), topkGroup = routing.getTopkGroup();
  if (nGroup > 0 && topkGroup == nGroup)
    nGroup = topkGroup = 0;
  if (renormalize == routing.getRenormalize() && nGroup == routing.getNGroup())
    return {};
  return RoutingAttr::get(
      routing.getContext(), routing.getK(), routing.getScoring(), renormalize,
      routing.getTemperature(), routing.getScale(), nGroup, topkGroup,
      routing.getCapacityFactor(), routing.getThreshold(),
      routing.getSelection(), routing.getCapacity(), routing.getExpertGroups());
}

/// Whether a selection bias cannot change the choice: a splat constant adds
/// the same amount to every expert's score (and to every group's score), so
/// the order, and thus the choice, stays the same.
static bool isSplatConstant(Value bias) {
  if (!bias)
    return false;
  DenseElementsAttr attr;
  return matchPattern(bias, m_Constant(&attr)) && attr.isSplat();
}

namespace {
/// Simplifies the routing recipe and drops a selection bias that cannot
/// change the choice, for any op with `routing` and `selection_bias`.
template <typename OpTy>
struct SimplifyRoutingPattern : public OpRewritePattern<OpTy> {
  using OpRewritePattern<OpTy>::OpRewritePattern;

  LogicalResult matchAndRewrite(OpTy op,
                                PatternRewriter &rewriter) const override {
    RoutingAttr simplified = simplifyRouting(op.getRouting(), numExperts(op));
    bool dropBias = isSplatConstant(op.getSelectionBias());
    if (!simplified && !dropBias)
      return rewriter.notifyMatchFailure(op, "routing is already minimal");
    rewriter.modifyOpInPlace(op, [&] {
      if (simplified)
        op.setRoutingAttr(simplified);
      if (dropBias)
        op.getSelectionBiasMutable().clear();
    });
    return success();
  }

  static int64_t numExperts(RouteOp op) {
    return tensorType(op.getLogits()).getDimSize(1);
  }
  static int64_t numExperts(LayerOp op) { return op.getNumExperts(); }
};
} // namespace

//===----------------------------------------------------------------------===//
// LayerOp
//===----------------------------------------------------------------------===//

int64_t LayerOp::getNumExperts() {
  return tensorType(getRouter()).getDimSize(1);
}

LogicalResult LayerOp::verify() {
  Operation *op = getOperation();
  FailureOr<int64_t> hidden = verifyHidden(op, getInput(), "input");
  if (failed(hidden))
    return failure();
  FailureOr<int64_t> numExperts = verifyRouter(op, getRouter(), *hidden);
  if (failed(numExperts))
    return failure();
  Type elementType = tensorType(getInput()).getElementType();
  if (failed(checkElementType(op, getRouter(), "router", elementType)))
    return failure();
  if (failed(getRouting().verifyForNumExperts([&] { return emitOpError(); },
                                              *numExperts)))
    return failure();
  if (getRouting().hasExpertGroups())
    return emitOpError("takes no token groups for routing expert_groups; use "
                       "moe.route");
  if (failed(checkOptional(op, getRouterBias(), "router bias", {*numExperts},
                           elementType)))
    return failure();
  if (failed(checkOptional(op, getSelectionBias(), "selection bias",
                           {*numExperts}, elementType)))
    return failure();
  if (failed(verifyFfnWeights(op, getExpert(), getGate(), getUp(), getDown(),
                              getGateBias(), getUpBias(), getDownBias(),
                              *hidden, *numExperts, elementType)))
    return failure();

  bool anyShared =
      getSharedGate() || getSharedUp() || getSharedDown() || getSharedScale();
  if (anyShared) {
    if (!getSharedUp() || !getSharedDown())
      return emitOpError("shared experts need shared_up and shared_down");
    if (failed(verifyFfnWeights(op, getExpert(), getSharedGate(), getSharedUp(),
                                getSharedDown(), {}, {}, {}, *hidden,
                                std::nullopt, elementType)))
      return failure();
    if (failed(checkOptional(op, getSharedScale(), "shared scale", {*hidden},
                             elementType)))
      return failure();
  }
  if (getResult().getType() != getInput().getType())
    return emitOpError() << "result type " << getResult().getType()
                         << " must match input type " << getInput().getType();
  return success();
}

void LayerOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                          MLIRContext *context) {
  results.add<SimplifyRoutingPattern<LayerOp>>(context);
}

//===----------------------------------------------------------------------===//
// RouteOp / GateOp
//===----------------------------------------------------------------------===//

LogicalResult RouteOp::verify() {
  auto logitsType = tensorType(getLogits());
  if (logitsType.getRank() != 2 || logitsType.isDynamicDim(1))
    return emitOpError() << "logits must have shape [T, E] with a static E, "
                            "got "
                         << logitsType;
  return verifyRoutingResults(
      *this, getRouting(), logitsType.getDimSize(1), logitsType.getDimSize(0),
      getExpertIds(), getWeights(), getSelectionBias(), getTokenGroups(),
      getResidual(), logitsType.getElementType());
}

void RouteOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                          MLIRContext *context) {
  results.add<SimplifyRoutingPattern<RouteOp>>(context);
}

LogicalResult GateOp::verify() {
  Operation *op = getOperation();
  FailureOr<int64_t> hidden = verifyHidden(op, getInput(), "input");
  if (failed(hidden))
    return failure();
  FailureOr<int64_t> numExperts = verifyRouter(op, getRouter(), *hidden);
  if (failed(numExperts))
    return failure();
  Type elementType = tensorType(getInput()).getElementType();
  if (failed(checkElementType(op, getRouter(), "router", elementType)))
    return failure();
  if (getRouting().isExpertChoice())
    return emitOpError("cannot route by expert_choice: each expert's choice "
                       "needs the logits of all tokens; use moe.route");
  if (failed(checkOptional(op, getRouterBias(), "router bias", {*numExperts},
                           elementType)))
    return failure();
  return verifyRoutingResults(op, getRouting(), *numExperts,
                              tensorType(getInput()).getDimSize(0),
                              getExpertIds(), getWeights(), getSelectionBias(),
                              getTokenGroups(), getResidual(), elementType);
}

//===----------------------------------------------------------------------===//
// DispatchOp
//===----------------------------------------------------------------------===//

int64_t DispatchOp::getNumRows(int64_t numTokens) {
  if (ShapedType::isDynamic(numTokens))
    return ShapedType::kDynamic;
  int64_t k = tensorType(getExpertIds()).getDimSize(1);
  return numTokens * k + getNumExperts() * (getBlockSize() - 1);
}

LogicalResult DispatchOp::verify() {
  auto idsType = tensorType(getExpertIds());
  if (idsType.getRank() != 2 || idsType.isDynamicDim(1))
    return emitOpError() << "expert ids must have shape [T, k] with a static "
                            "k, got "
                         << idsType;
  if (getCapacityFactor().convertToDouble() < 0.0)
    return emitOpError("capacity_factor must be non-negative");
  if (getCapacity() > 0 && !getCapacityFactor().isZero())
    return emitOpError("takes a capacity or a capacity_factor, not both");
  int64_t tokens = idsType.getDimSize(0), k = idsType.getDimSize(1);
  int64_t numExperts = getNumExperts();
  if (failed(checkShape(*this, getTokenIndices(), "token indices",
                        {getNumRows(tokens)})) ||
      failed(checkShape(*this, getExpertOffsets(), "expert offsets",
                        {numExperts + 1})) ||
      failed(checkShape(*this, getPositions(), "positions", {tokens, k})))
    return failure();
  if (tensorType(getExpertOffsets()).isDynamicDim(0))
    return emitOpError("expert offsets must have a static shape");
  Type indexType = idsType.getElementType();
  for (auto [value, name] :
       {std::pair<Value, StringRef>{getTokenIndices(), "token indices"},
        {getExpertOffsets(), "expert offsets"},
        {getPositions(), "positions"}})
    if (failed(checkElementType(*this, value, name, indexType)))
      return failure();
  return success();
}

namespace {
/// When every token chooses every expert (k = E, fixed k), the counting sort
/// has a closed form: expert e owns rows [e*T, (e+1)*T) in token order, so
/// row r holds token r mod T, and assignment (t, i) sits at row ids[t,i]*T + t.
struct DispatchAllExperts : public OpRewritePattern<DispatchOp> {
  using OpRewritePattern::OpRewritePattern;

  LogicalResult matchAndRewrite(DispatchOp op,
                                PatternRewriter &rewriter) const override {
    RoutingAttr routing;
    if (auto route = op.getExpertIds().getDefiningOp<RouteOp>())
      routing = route.getRouting();
    else if (auto gate = op.getExpertIds().getDefiningOp<GateOp>())
      routing = gate.getRouting();
    if (!routing)
      return rewriter.notifyMatchFailure(op, "expert ids of unknown origin");
    if (routing.getK() != static_cast<int64_t>(op.getNumExperts()) ||
        routing.hasDynamicK() || routing.isExpertChoice())
      return rewriter.notifyMatchFailure(op,
                                         "tokens do not choose all experts");
    if (op.getBlockSize() != 1 || !op.getCapacityFactor().isZero() ||
        op.getCapacity() != 0)
      return rewriter.notifyMatchFailure(op, "padding or capacity");

    Location loc = op.getLoc();
    Value ids = op.getExpertIds();
    Type indexType = tensorType(ids).getElementType();
    Value c0 = arith::ConstantIndexOp::create(rewriter, loc, 0);
    Value tokens = tensor::DimOp::create(rewriter, loc, ids, c0);
    auto toIndexType = [&](OpBuilder &b, Value v) -> Value {
      return arith::IndexCastOp::create(b, loc, indexType, v);
    };
    auto dynamicSizes = [&](RankedTensorType type,
                            ValueRange sizes) -> SmallVector<Value> {
      SmallVector<Value> dyn;
      for (auto [i, size] : llvm::enumerate(sizes))
        if (type.isDynamicDim(i))
          dyn.push_back(size);
      return dyn;
    };

    auto tokType = tensorType(op.getTokenIndices());
    Value numRows = arith::MulIOp::create(
        rewriter, loc, tokens,
        arith::ConstantIndexOp::create(rewriter, loc, op.getNumExperts()));
    Value tokenIndices = tensor::GenerateOp::create(
        rewriter, loc, tokType, dynamicSizes(tokType, {numRows}),
        [&](OpBuilder &b, Location l, ValueRange idx) {
          Value t = arith::RemUIOp::create(b, l, idx[0], tokens);
          tensor::YieldOp::create(b, l, toIndexType(b, t));
        });

    auto offType = tensorType(op.getExpertOffsets());
    Value offsets = tensor::GenerateOp::create(
        rewriter, loc, offType, ValueRange{},
        [&](OpBuilder &b, Location l, ValueRange idx) {
          Value off = arith::MulIOp::create(b, l, idx[0], tokens);
          tensor::YieldOp::create(b, l, toIndexType(b, off));
        });

    auto posType = tensorType(op.getPositions());
    Value c1 = arith::ConstantIndexOp::create(rewriter, loc, 1);
    Value k = tensor::DimOp::create(rewriter, loc, ids, c1);
    Value positions = tensor::GenerateOp::create(
        rewriter, loc, posType, dynamicSizes(posType, {tokens, k}),
        [&](OpBuilder &b, Location l, ValueRange idx) {
          Value id = tensor::ExtractOp::create(b, l, ids, idx);
          Value expert = arith::IndexCastOp::create(b, l, b.getIndexType(), id);
          Value row = arith::AddIOp::create(
              b, l, arith::MulIOp::create(b, l, expert, tokens), idx[0]);
          tensor::YieldOp::create(b, l, toIndexType(b, row));
        });
    rewriter.replaceOp(op, {tokenIndices, offsets, positions});
    return success();
  }
};
} // namespace

void DispatchOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                             MLIRContext *context) {
  results.add<DispatchAllExperts>(context);
}

//===----------------------------------------------------------------------===//
// ExpertsOp
//===----------------------------------------------------------------------===//

int64_t ExpertsOp::getNumExperts() {
  if (PlacementAttr placement = getPlacementAttr())
    return placement.getExperts();
  return tensorType(getUp()).getDimSize(0);
}

LogicalResult ExpertsOp::verify() {
  Operation *op = getOperation();
  auto upType = tensorType(getUp());
  PlacementAttr placement = getPlacementAttr();
  if (!placement && (upType.getRank() != 3 || upType.isDynamicDim(0)))
    return emitOpError() << "up weights must have shape [E, H, F] with a "
                            "static E, got "
                         << upType;
  int64_t numExperts = getNumExperts();
  FailureOr<int64_t> hidden =
      verifyRowsOp(op, getInput(), getTokenIndices(), getExpertOffsets(),
                   getDest(), getResult(), getFirstExpert() + numExperts);
  if (failed(hidden))
    return failure();
  if (!placement)
    return verifyFfnWeights(op, getExpert(), getGate(), getUp(), getDown(),
                            getGateBias(), getUpBias(), getDownBias(), *hidden,
                            numExperts,
                            tensorType(getInput()).getElementType());
  // Placed: the matrices are slot buffers with a leading extent of their
  // own; the biases are still per expert.
  if (failed(verifyFfnWeights(op, getExpert(), getGate(), getUp(), getDown(),
                              getGateBias(), getUpBias(), getDownBias(),
                              *hidden, ShapedType::kDynamic,
                              tensorType(getInput()).getElementType())))
    return failure();
  for (Value bias : {getGateBias(), getUpBias(), getDownBias()})
    if (bias && !compatible(tensorType(bias).getDimSize(0), numExperts))
      return emitOpError() << "biases must have a leading extent of the "
                           << numExperts << " placed experts, got "
                           << bias.getType();
  if (getFirstExpert() != 0)
    return emitOpError("placement needs first_expert = 0");
  return success();
}

//===----------------------------------------------------------------------===//
// ExpertSlotsOp
//===----------------------------------------------------------------------===//

LogicalResult ExpertSlotsOp::verify() {
  auto weightsType = tensorType(getWeights());
  auto slotsType = tensorType(getSlots());
  if (weightsType.getRank() < 2 || !weightsType.hasStaticShape())
    return emitOpError() << "weights must be a static [E, ...] tensor, got "
                         << weightsType;
  SmallVector<int64_t> expected(weightsType.getShape());
  expected[0] = ShapedType::kDynamic;
  if (slotsType.getShape() != ArrayRef<int64_t>(expected) ||
      slotsType.getElementType() != weightsType.getElementType())
    return emitOpError() << "slots must have type "
                         << RankedTensorType::get(expected,
                                                  weightsType.getElementType())
                         << ", got " << slotsType;
  return success();
}

//===----------------------------------------------------------------------===//
// ZeroComputationExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult ZeroComputationExpertsOp::verify() {
  Operation *op = getOperation();
  int64_t numExperts = getKinds().size();
  if (numExperts == 0)
    return emitOpError("needs at least one expert kind");
  FailureOr<int64_t> hidden =
      verifyRowsOp(op, getInput(), getTokenIndices(), getExpertOffsets(),
                   getDest(), getResult(), getFirstExpert() + numExperts);
  if (failed(hidden))
    return failure();
  int64_t numConstant = llvm::count_if(getKinds(), [](Attribute kind) {
    return cast<ZeroComputationKindAttr>(kind).getValue() ==
           ZeroComputationKind::Constant;
  });
  if (numConstant == 0 && getValues())
    return emitOpError("takes constants only with constant experts");
  if (numConstant > 0 && !getValues())
    return emitOpError() << "needs constants for its " << numConstant
                         << " constant experts";
  if (numConstant == 0)
    return success();
  Type elementType = tensorType(getInput()).getElementType();
  if (failed(checkOptional(op, getValues(), "constant values",
                           {numConstant, *hidden}, elementType)))
    return failure();
  return checkOptional(op, getMix(), "constant mix", {numConstant, *hidden, 2},
                       elementType);
}

//===----------------------------------------------------------------------===//
// GenericExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult GenericExpertsOp::verify() {
  return verifyRowsOp(*this, getInput(), getTokenIndices(), getExpertOffsets(),
                      getDest(), getResult(),
                      getFirstExpert() + getNumExperts());
}

LogicalResult GenericExpertsOp::verifyRegions() {
  Block &body = getBody().front();
  auto inputType = tensorType(getInput());
  auto rowsType =
      RankedTensorType::get({ShapedType::kDynamic, inputType.getDimSize(1)},
                            inputType.getElementType());
  if (body.getNumArguments() != 2 ||
      body.getArgument(0).getType() != rowsType ||
      !body.getArgument(1).getType().isIndex())
    return emitOpError() << "body must take (" << rowsType << ", index)";
  auto yield = body.empty() ? YieldOp() : dyn_cast<YieldOp>(body.back());
  if (!yield)
    return emitOpError("body must end with moe.yield");
  auto yieldType = tensorType(yield.getValue());
  if (yieldType.getRank() != 2 ||
      yieldType.getElementType() != rowsType.getElementType() ||
      !compatible(yieldType.getDimSize(1), rowsType.getDimSize(1)))
    return emitOpError() << "body must yield " << rowsType << ", got "
                         << yieldType;
  return success();
}

//===----------------------------------------------------------------------===//
// SharedExpertsOp
//===----------------------------------------------------------------------===//

LogicalResult SharedExpertsOp::verify() {
  Operation *op = getOperation();
  FailureOr<int64_t> hidden = verifyHidden(op, getInput(), "input");
  if (failed(hidden))
    return failure();
  Type elementType = tensorType(getInput()).getElementType();
  if (failed(verifyFfnWeights(op, getExpert(), getGate(), getUp(), getDown(),
                              {}, {}, {}, *hidden, std::nullopt, elementType)))
    return failure();
  if (failed(checkOptional(op, getScale(), "scale", {*hidden}, elementType)))
    return failure();
  if (getResult().getType() != getInput().getType())
    return emitOpError() << "result type " << getResult().getType()
                         << " must match input type " << getInput().getType();
  return success();
}

//===----------------------------------------------------------------------===//
// CombineOp
//===----------------------------------------------------------------------===//

LogicalResult CombineOp::verify() {
  Operation *op = getOperation();
  FailureOr<int64_t> hidden = verifyHidden(op, getRows(), "rows");
  if (failed(hidden))
    return failure();
  auto posType = tensorType(getPositions());
  if (posType.getRank() != 2 || posType.isDynamicDim(1))
    return emitOpError() << "positions must have shape [T, k] with a static "
                            "k, got "
                         << posType;
  int64_t tokens = posType.getDimSize(0), k = posType.getDimSize(1);
  Type elementType = tensorType(getRows()).getElementType();
  if (failed(checkShape(op, getWeights(), "weights", {tokens, k})) ||
      failed(checkElementType(op, getWeights(), "weights", elementType)) ||
      failed(checkShape(op, getResult(), "result", {tokens, *hidden})) ||
      failed(checkElementType(op, getResult(), "result", elementType)))
    return failure();
  if (getAddend() && getAddend().getType() != getResult().getType())
    return emitOpError() << "addend type " << getAddend().getType()
                         << " must match result type " << getResult().getType();
  return success();
}

//===----------------------------------------------------------------------===//
// HashRouteOp
//===----------------------------------------------------------------------===//

LogicalResult HashRouteOp::verify() {
  auto idsType = tensorType(getTokenIds());
  if (idsType.getRank() != 1)
    return emitOpError() << "token ids must have rank 1, got " << idsType;
  if (getTable()) {
    auto tableType = tensorType(getTable());
    if (tableType.getRank() != 1)
      return emitOpError() << "table must have rank 1, got " << tableType;
    if (tableType.getDimSize(0) == 0)
      return emitOpError("table must not be empty");
  }
  int64_t tokens = idsType.getDimSize(0);
  return failure(
      failed(checkShape(*this, getExpertIds(), "expert ids", {tokens, 1})) ||
      failed(checkShape(*this, getWeights(), "weights", {tokens, 1})));
}

#define GET_OP_CLASSES
#include "moe/Dialect/MoE/IR/MoEOps.cpp.inc"

//===----------------------------------------------------------------------===//
// QuantizedExpertsOp
//===----------------------------------------------------------------------===//

int64_t QuantizedExpertsOp::getNumExperts() {
  return tensorType(getUp()).getDimSize(0);
}

/// Checks one quantized matrix `name`: bytes `[E, N, K * bits / 8]` and
/// scales `[E, N, K / B]` of `elementType`, with blocks of whole bytes.
static LogicalResult verifyQuantizedMatrix(Operation *op, Value bytes,
                                           Value scales, Value zeroPoints,
                                           StringRef name, int64_t numExperts,
                                           int64_t rows, int64_t reduction,
                                           int64_t bits, Type elementType) {
  if (reduction * bits % 8 != 0)
    return op->emitOpError()
           << name << " weights: a reduction size of " << reduction << " at "
           << bits << " bits is not a whole number of bytes";
  if (failed(checkShape(op, bytes, (name + " weights").str(),
                        {numExperts, rows, reduction * bits / 8})))
    return failure();
  std::string scalesName = (name + " scales").str();
  auto scalesType = tensorType(scales);
  if (scalesType.getRank() != 3 || scalesType.isDynamicDim(2) ||
      scalesType.getDimSize(2) < 1)
    return op->emitOpError()
           << scalesName
           << " must have shape [E, N, K / block] with a static, positive "
              "block count, got "
           << scalesType;
  int64_t blocks = scalesType.getDimSize(2);
  if (failed(checkShape(op, scales, scalesName, {numExperts, rows, blocks})) ||
      failed(checkElementType(op, scales, scalesName, elementType)))
    return failure();
  if (reduction % blocks != 0 || (reduction / blocks) * bits % 8 != 0)
    return op->emitOpError()
           << scalesName << ": " << blocks << " blocks do not split the "
           << reduction << " reduction values into blocks of whole bytes";
  // One zero point per scale.
  return checkOptional(op, zeroPoints, (name + " zero points").str(),
                       {numExperts, rows, blocks}, elementType);
}

LogicalResult QuantizedExpertsOp::verify() {
  Operation *op = getOperation();
  int64_t bits = getBits();
  if (bits != 4 && bits != 8)
    return emitOpError() << "bits must be 4 or 8, got " << bits;
  auto upType = tensorType(getUp());
  if (upType.getRank() != 3 || upType.isDynamicDim(0) || upType.isDynamicDim(1))
    return emitOpError() << "up weights must have shape [E, F, H * bits / 8] "
                            "with static E and F, got "
                         << upType;
  int64_t numExperts = upType.getDimSize(0), ffn = upType.getDimSize(1);
  FailureOr<int64_t> hidden =
      verifyRowsOp(op, getInput(), getTokenIndices(), getExpertOffsets(),
                   getDest(), getResult(), getFirstExpert() + numExperts);
  if (failed(hidden))
    return failure();
  ExpertAttr expert = getExpert();
  if (expert.isGated() && !getGate())
    return emitOpError("gated experts need gate weights");
  if (!expert.isGated() && getGate())
    return emitOpError("ffn experts take no gate weights");
  if (!expert.isGated() && getGateBias())
    return emitOpError("ffn experts take no gate bias");
  if (!getGate() != !getGateScales())
    return emitOpError("gate weights and gate scales go together");
  if (!getGate() && getGateZeroPoints())
    return emitOpError("gate zero points need gate weights");
  Type elementType = tensorType(getInput()).getElementType();
  if (getGate() && failed(verifyQuantizedMatrix(
                       op, getGate(), getGateScales(), getGateZeroPoints(),
                       "gate", numExperts, ffn, *hidden, bits, elementType)))
    return failure();
  if (failed(verifyQuantizedMatrix(op, getUp(), getUpScales(),
                                   getUpZeroPoints(), "up", numExperts, ffn,
                                   *hidden, bits, elementType)) ||
      failed(verifyQuantizedMatrix(op, getDown(), getDownScales(),
                                   getDownZeroPoints(), "down", numExperts,
                                   *hidden, ffn, bits, elementType)))
    return failure();
  if (failed(checkOptional(op, getGateBias(), "gate bias", {numExperts, ffn},
                           elementType)) ||
      failed(checkOptional(op, getUpBias(), "up bias", {numExperts, ffn},
                           elementType)))
    return failure();
  return checkOptional(op, getDownBias(), "down bias", {numExperts, *hidden},
                       elementType);
}
