//===- Placement.cpp - Expert placement, prefetch and routing traces ------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// moe-plan-placement, moe-insert-prefetch and moe-instrument-routing: the
// compile-time half of the tiered expert cache (docs/ExpertCache.md).
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/IR/Dominance.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <algorithm>
#include <numeric>

namespace moe {
#define GEN_PASS_DEF_MOEPLANPLACEMENT
#define GEN_PASS_DEF_MOEINSERTPREFETCH
#define GEN_PASS_DEF_MOEINSTRUMENTROUTING
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

namespace {
/// One MoE layer: its FFN experts and the routing that feeds them.
struct MoELayerInfo {
  ExpertsOp experts;
  /// The `moe.route` or `moe.gate` producing the ids of the dispatch.
  Operation *routing = nullptr;
  Value expertIds;
  RoutingAttr recipe;
  int64_t numExperts = 0;
};
} // namespace

/// The MoE layers of `module` in program order. Layer `i` is the `i`-th
/// `moe.experts` fed by a `moe.dispatch` of routed ids.
static SmallVector<MoELayerInfo> collectLayers(ModuleOp module) {
  SmallVector<MoELayerInfo> layers;
  module.walk([&](ExpertsOp experts) {
    auto dispatch = experts.getExpertOffsets().getDefiningOp<DispatchOp>();
    if (!dispatch)
      return;
    MoELayerInfo info;
    info.experts = experts;
    info.expertIds = dispatch.getExpertIds();
    info.numExperts = dispatch.getNumExperts();
    Operation *def = info.expertIds.getDefiningOp();
    if (auto route = dyn_cast_if_present<RouteOp>(def))
      info.recipe = route.getRouting();
    else if (auto gate = dyn_cast_if_present<GateOp>(def))
      info.recipe = gate.getRouting();
    else
      return;
    info.routing = def;
    layers.push_back(info);
  });
  return layers;
}

/// The bytes of one expert's gate, up and down matrices.
static int64_t expertBytes(ExpertsOp op) {
  int64_t bytes = 0;
  for (Value w : {op.getGate(), op.getUp(), op.getDown()}) {
    if (!w)
      continue;
    auto type = cast<RankedTensorType>(w.getType());
    int64_t elements = 1;
    for (int64_t d : type.getShape().drop_front())
      elements *= d;
    bytes += elements * ((type.getElementTypeBitWidth() + 7) / 8);
  }
  return bytes;
}

//===----------------------------------------------------------------------===//
// moe-plan-placement
//===----------------------------------------------------------------------===//

namespace {
/// The routing profile of one layer (docs/ExpertCache.md).
struct LayerProfile {
  std::vector<double> counts;
  /// next[i][j]: tokens that chose i here and j in the next layer.
  std::vector<std::vector<double>> next;
};
} // namespace

static FailureOr<std::vector<LayerProfile>>
readProfile(StringRef path, Location loc, ArrayRef<MoELayerInfo> layers) {
  auto fail = [&](const Twine &why) {
    return emitError(loc) << "routing profile '" << path << "': " << why;
  };
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer)
    return fail("cannot read it: " + buffer.getError().message());
  llvm::Expected<llvm::json::Value> json =
      llvm::json::parse((*buffer)->getBuffer());
  if (!json)
    return fail("not valid JSON: " + llvm::toString(json.takeError()));
  const llvm::json::Object *root = json->getAsObject();
  const llvm::json::Array *jsonLayers =
      root ? root->getArray("layers") : nullptr;
  if (!jsonLayers)
    return fail("expected an object with a \"layers\" array");
  if (jsonLayers->size() != layers.size())
    return fail("it has " + Twine(jsonLayers->size()) +
                " layers, the model has " + Twine(layers.size()));
  auto readNumbers = [](const llvm::json::Array *array, size_t expected,
                        std::vector<double> &out) {
    if (!array || array->size() != expected)
      return false;
    for (const llvm::json::Value &v : *array) {
      std::optional<double> number = v.getAsNumber();
      if (!number || *number < 0)
        return false;
      out.push_back(*number);
    }
    return true;
  };
  std::vector<LayerProfile> profile(layers.size());
  for (auto [index, value] : llvm::enumerate(*jsonLayers)) {
    size_t experts = layers[index].numExperts;
    const llvm::json::Object *layer = value.getAsObject();
    if (!layer ||
        !readNumbers(layer->getArray("counts"), experts, profile[index].counts))
      return fail("layer " + Twine(index) + " needs \"counts\": " +
                  Twine(experts) + " non-negative numbers");
    const llvm::json::Array *next = layer->getArray("next");
    if (!next || index + 1 == layers.size())
      continue;
    size_t nextExperts = layers[index + 1].numExperts;
    if (next->size() != experts)
      return fail("layer " + Twine(index) + " \"next\" needs " +
                  Twine(experts) + " rows");
    for (const llvm::json::Value &row : *next) {
      profile[index].next.emplace_back();
      if (!readNumbers(row.getAsArray(), nextExperts,
                       profile[index].next.back()))
        return fail("layer " + Twine(index) + " \"next\" rows need " +
                    Twine(nextExperts) + " non-negative numbers");
    }
  }
  return profile;
}

namespace {
struct PlanPlacementPass
    : public moe::impl::MoEPlanPlacementBase<PlanPlacementPass> {
  using MoEPlanPlacementBase::MoEPlanPlacementBase;

  void runOnOperation() override {
    if (budget < 0 && budgetPercent < 0)
      return;
    if (budgetPercent > 100) {
      emitError(getOperation().getLoc())
          << "budget-percent must be in [0, 100], got " << budgetPercent;
      return signalPassFailure();
    }
    ModuleOp module = getOperation();
    SmallVector<MoELayerInfo> layers = collectLayers(module);
    for (MoELayerInfo &layer : layers) {
      if (layer.experts.getPlacementAttr()) {
        layer.experts.emitOpError("is already placed");
        return signalPassFailure();
      }
    }
    std::vector<LayerProfile> layerProfiles;
    if (!profile.empty()) {
      auto read = readProfile(profile, module.getLoc(), layers);
      if (failed(read))
        return signalPassFailure();
      layerProfiles = std::move(*read);
    }

    // Static expert shapes only: a layer we cannot size stays resident and
    // counts against the budget whole.
    struct Sizing {
      int64_t bytes = 0, k = 0, experts = 0;
      bool placeable = false;
    };
    SmallVector<Sizing> sizes;
    int64_t total = 0, minimum = 0, fixed = 0;
    for (MoELayerInfo &layer : layers) {
      Sizing s;
      s.experts = layer.numExperts;
      s.k = std::min<int64_t>(layer.recipe.getK(), s.experts);
      s.placeable = layer.experts.getFirstExpert() == 0 &&
                    layer.experts.getNumExperts() == s.experts;
      for (Value w : {layer.experts.getGate(), layer.experts.getUp(),
                      layer.experts.getDown()})
        if (w && !cast<RankedTensorType>(w.getType()).hasStaticShape())
          s.placeable = false;
      s.bytes = expertBytes(layer.experts);
      total += s.bytes * s.experts;
      if (s.placeable)
        minimum += s.bytes * s.k;
      else
        fixed += s.bytes * s.experts;
      sizes.push_back(s);
    }
    int64_t budget = this->budget;
    if (budgetPercent >= 0)
      budget = static_cast<int64_t>(static_cast<double>(total) * budgetPercent /
                                    100.0);
    if (budget >= total)
      return;
    if (budget < minimum + fixed) {
      InFlightDiagnostic diag =
          emitError(module.getLoc())
          << "expert budget of " << budget
          << " bytes is below the minimum working set: " << minimum + fixed
          << " bytes are needed (the k experts of each of the " << layers.size()
          << " MoE layers, of " << total << " expert bytes in all";
      if (fixed)
        diag << ", plus " << fixed << " bytes of layers that cannot be placed";
      diag << ")";
      return signalPassFailure();
    }

    // Water-filling: every placed layer gets k slots plus an equal share of
    // the rest; layers whose share covers all their experts stay resident
    // and give back what they do not use.
    SmallVector<bool> resident(layers.size(), false);
    for (auto [i, s] : llvm::enumerate(sizes))
      resident[i] = !s.placeable;
    int64_t extra = budget - minimum - fixed;
    int64_t share = 0;
    for (bool changed = true; changed;) {
      changed = false;
      int64_t open = llvm::count(resident, false);
      if (open == 0)
        break;
      share = extra / open;
      for (auto [i, s] : llvm::enumerate(sizes)) {
        if (resident[i] || s.bytes * s.k + share < s.bytes * s.experts)
          continue;
        resident[i] = true;
        extra -= s.bytes * (s.experts - s.k);
        changed = true;
      }
    }

    SmallVector<int64_t> previousPinned;
    for (auto [i, layer] : llvm::enumerate(layers)) {
      const Sizing &s = sizes[i];
      SmallVector<int64_t> pinned;
      if (resident[i]) {
        previousPinned.clear();
        for (int64_t e = 0; e < s.experts; ++e)
          previousPinned.push_back(e);
        continue;
      }
      int64_t slots = std::min(s.experts, s.k + share / s.bytes);
      if (!layerProfiles.empty() && slots > s.k) {
        // Score: how often chosen, plus how often it follows the experts
        // the previous layer keeps resident.
        std::vector<double> score = layerProfiles[i].counts;
        if (i > 0 && !layerProfiles[i - 1].next.empty())
          for (int64_t from : previousPinned)
            for (int64_t e = 0; e < s.experts; ++e)
              score[e] += layerProfiles[i - 1].next[from][e];
        SmallVector<int64_t> order(s.experts);
        std::iota(order.begin(), order.end(), 0);
        llvm::sort(order, [&](int64_t a, int64_t b) {
          return score[a] > score[b] || (score[a] == score[b] && a < b);
        });
        for (int64_t e : order) {
          if (static_cast<int64_t>(pinned.size()) == slots - s.k ||
              score[e] <= 0)
            break;
          pinned.push_back(e);
        }
      }
      previousPinned = pinned;
      place(layer.experts, i, s.experts, slots, pinned);
    }
  }

  /// Puts `op` in a cache of `slots` slots.
  void place(ExpertsOp op, int64_t layer, int64_t experts, int64_t slots,
             ArrayRef<int64_t> pinned) {
    OpBuilder builder(op);
    auto slotsOf = [&](Value weights) -> Value {
      auto type = cast<RankedTensorType>(weights.getType());
      SmallVector<int64_t> shape(type.getShape());
      shape[0] = ShapedType::kDynamic;
      return ExpertSlotsOp::create(
          builder, op.getLoc(),
          RankedTensorType::get(shape, type.getElementType()), weights,
          builder.getI64IntegerAttr(layer));
    };
    if (Value gate = op.getGate())
      op.getGateMutable().assign(slotsOf(gate));
    op.getUpMutable().assign(slotsOf(op.getUp()));
    op.getDownMutable().assign(slotsOf(op.getDown()));
    op.setPlacementAttr(
        PlacementAttr::get(op.getContext(), layer, experts, slots, pinned));
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// moe-insert-prefetch
//===----------------------------------------------------------------------===//

namespace {
struct InsertPrefetchPass
    : public moe::impl::MoEInsertPrefetchBase<InsertPrefetchPass> {
  using MoEInsertPrefetchBase::MoEInsertPrefetchBase;

  void runOnOperation() override {
    if (depth < 0) {
      emitError(getOperation().getLoc())
          << "moe-insert-prefetch depth must be non-negative, got " << depth;
      return signalPassFailure();
    }
    SmallVector<MoELayerInfo> layers = collectLayers(getOperation());
    DominanceInfo dominance(getOperation());
    for (auto [i, layer] : llvm::enumerate(layers)) {
      auto gate = dyn_cast<GateOp>(layer.routing);
      if (!gate)
        continue;
      OpBuilder builder(gate->getContext());
      builder.setInsertionPointAfter(gate);
      for (int64_t d = 1; d <= depth && i + d < layers.size(); ++d) {
        MoELayerInfo next = layers[i + d];
        PlacementAttr placement = next.experts.getPlacementAttr();
        auto nextGate = dyn_cast<GateOp>(next.routing);
        if (!placement || !nextGate)
          continue;
        auto inputType = cast<RankedTensorType>(gate.getInput().getType());
        auto routerType =
            cast<RankedTensorType>(nextGate.getRouter().getType());
        if (inputType.getElementType() != routerType.getElementType() ||
            inputType.getDimSize(1) != routerType.getDimSize(0))
          continue;
        // The later router (and bias) must be available here.
        auto available = [&](Value v) {
          return !v || dominance.properlyDominates(v, gate);
        };
        // A gating residual comes from the layer before: not known yet.
        if (nextGate.getResidual() || !available(nextGate.getRouter()) ||
            !available(nextGate.getRouterBias()) ||
            !available(nextGate.getSelectionBias()) ||
            !available(nextGate.getTokenGroups()))
          continue;
        auto idsType =
            cast<RankedTensorType>(nextGate.getExpertIds().getType());
        auto weightsType =
            cast<RankedTensorType>(nextGate.getWeights().getType());
        SmallVector<int64_t> idsShape(idsType.getShape()),
            weightsShape(weightsType.getShape());
        idsShape[0] = weightsShape[0] = inputType.getDimSize(0);
        auto predicted = GateOp::create(
            builder, gate.getLoc(),
            RankedTensorType::get(idsShape, idsType.getElementType()),
            RankedTensorType::get(weightsShape, weightsType.getElementType()),
            gate.getInput(), nextGate.getRouter(), nextGate.getRouterBias(),
            nextGate.getSelectionBias(), nextGate.getTokenGroups(),
            /*residual=*/Value(), nextGate.getRouting());
        PrefetchOp::create(builder, gate.getLoc(), predicted.getExpertIds(),
                           builder.getI64IntegerAttr(placement.getLayer()));
      }
    }
  }
};
} // namespace

//===----------------------------------------------------------------------===//
// moe-instrument-routing
//===----------------------------------------------------------------------===//

namespace {
struct InstrumentRoutingPass
    : public moe::impl::MoEInstrumentRoutingBase<InstrumentRoutingPass> {
  void runOnOperation() override {
    for (auto [i, layer] : llvm::enumerate(collectLayers(getOperation()))) {
      OpBuilder builder(layer.routing->getContext());
      builder.setInsertionPointAfter(layer.routing);
      TraceRoutingOp::create(builder, layer.routing->getLoc(), layer.expertIds,
                             builder.getI64IntegerAttr(i),
                             builder.getI64IntegerAttr(layer.numExperts));
    }
  }
};
} // namespace
