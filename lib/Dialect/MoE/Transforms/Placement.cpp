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
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <algorithm>
#include <cmath>
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
      if (!number || *number < 0 || !std::isfinite(*number))
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
/// How much a device may take above the mean token load of a layer when
/// experts move for affinity.
constexpr double kLoadSlack = 1.10;

/// The sizes that matter to the plan of one layer.
struct Sizing {
  int64_t bytes = 0, k = 0, experts = 0;
  /// Experts per device (all of them on one device) and the slots a
  /// device's cache needs at least.
  int64_t perDevice = 0, minSlots = 0;
  /// Static shapes, all the layer's experts: the layer can be placed.
  bool placeable = false;
  /// Experts placed together on one device: a group of group-limited
  /// routing when the devices share the groups evenly, else 1.
  int64_t groupSize = 1;
};

/// One layer's placement: the home device of each expert, the slots of each
/// device's cache and the pinned experts.
struct LayerPlan {
  SmallVector<int64_t> device;
  int64_t slots = 0;
  SmallVector<int64_t> pinned;
  bool resident = false;
};

/// Spreads `experts` experts (or groups of experts placed together) over
/// `devices` devices, `capacity` at most on each (after ExFlow, "Exploiting
/// Inter-Layer Expert Affinity for Accelerating Mixture-of-Experts Model
/// Inference"). `counts[e]`: how often `e` is chosen (empty: no profile,
/// contiguous ranges); `affinity[e][d]`: how many tokens reach `e` from
/// experts of the previous layer on device `d` (empty for the first layer).
SmallVector<int64_t> assignDevices(int64_t devices, int64_t capacity,
                                   ArrayRef<double> counts,
                                   ArrayRef<std::vector<double>> affinity,
                                   int64_t experts) {
  SmallVector<int64_t> device(experts, 0);
  if (devices == 1)
    return device;
  if (counts.empty()) {
    for (int64_t e = 0; e < experts; ++e)
      device[e] = e / capacity;
    return device;
  }
  double total = std::accumulate(counts.begin(), counts.end(), 0.0);
  double limit = std::max(*llvm::max_element(counts),
                          kLoadSlack * total / static_cast<double>(devices));
  SmallVector<double> load(devices, 0.0);
  SmallVector<int64_t> members(devices, 0);
  auto affinityOf = [&](int64_t e, int64_t d) {
    return affinity.empty() ? 0.0 : affinity[e][d];
  };
  auto best = [&](int64_t e) {
    double best = 0;
    for (int64_t d = 0; d < devices; ++d)
      best = std::max(best, affinityOf(e, d));
    return best;
  };
  // Greedy: the experts with the strongest pull first (the busiest first
  // when there is none), each to the device that pulls it most among those
  // with room and load to spare, else to the least loaded with room.
  SmallVector<int64_t> order(experts);
  std::iota(order.begin(), order.end(), 0);
  SmallVector<double> pull(experts);
  for (int64_t e = 0; e < experts; ++e)
    pull[e] = best(e);
  llvm::sort(order, [&](int64_t a, int64_t b) {
    if (pull[a] != pull[b])
      return pull[a] > pull[b];
    if (counts[a] != counts[b])
      return counts[a] > counts[b];
    return a < b;
  });
  for (int64_t e : order) {
    int64_t chosen = -1;
    for (int64_t d = 0; d < devices; ++d) {
      if (members[d] == capacity || load[d] + counts[e] > limit)
        continue;
      if (chosen < 0 || affinityOf(e, d) > affinityOf(e, chosen) ||
          (affinityOf(e, d) == affinityOf(e, chosen) && load[d] < load[chosen]))
        chosen = d;
    }
    if (chosen < 0)
      for (int64_t d = 0; d < devices; ++d)
        if (members[d] < capacity && (chosen < 0 || load[d] < load[chosen]))
          chosen = d;
    device[e] = chosen;
    load[chosen] += counts[e];
    ++members[chosen];
  }
  auto affinityGain = [&](int64_t a, int64_t b) {
    int64_t da = device[a], db = device[b];
    return affinityOf(a, db) + affinityOf(b, da) - affinityOf(a, da) -
           affinityOf(b, db);
  };
  // Where the greedy pass had to overload a device: swaps that lower the
  // busiest device's load, the one that loses the least affinity first.
  for (int step = 0; step < 4 * experts; ++step) {
    int64_t busiest = std::distance(load.begin(), llvm::max_element(load));
    if (load[busiest] <= limit)
      break;
    int64_t bestA = -1, bestB = -1;
    double bestGain = 0;
    for (int64_t a = 0; a < experts; ++a) {
      if (device[a] != busiest)
        continue;
      for (int64_t b = 0; b < experts; ++b) {
        int64_t db = device[b];
        if (db == busiest || counts[b] >= counts[a] ||
            load[db] - counts[b] + counts[a] >= load[busiest])
          continue;
        double gain = affinityGain(a, b);
        if (bestA < 0 || gain > bestGain) {
          bestA = a;
          bestB = b;
          bestGain = gain;
        }
      }
    }
    if (bestA < 0)
      break;
    int64_t db = device[bestB];
    load[busiest] += counts[bestB] - counts[bestA];
    load[db] += counts[bestA] - counts[bestB];
    std::swap(device[bestA], device[bestB]);
  }
  if (affinity.empty())
    return device;
  // Pairwise swaps that keep more tokens on their device without pushing a
  // device past the load limit (or past the larger of the two loads).
  for (int pass = 0; pass < 32; ++pass) {
    bool improved = false;
    for (int64_t a = 0; a < experts; ++a) {
      for (int64_t b = a + 1; b < experts; ++b) {
        int64_t da = device[a], db = device[b];
        if (da == db)
          continue;
        if (affinityGain(a, b) <= 1e-9 * (1.0 + total))
          continue;
        double newA = load[da] - counts[a] + counts[b];
        double newB = load[db] - counts[b] + counts[a];
        if (std::max(newA, newB) >
            std::max(limit, std::max(load[da], load[db])))
          continue;
        std::swap(device[a], device[b]);
        load[da] = newA;
        load[db] = newB;
        improved = true;
      }
    }
    if (!improved)
      break;
  }
  return device;
}

struct PlanPlacementPass
    : public moe::impl::MoEPlanPlacementBase<PlanPlacementPass> {
  using MoEPlanPlacementBase::MoEPlanPlacementBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (devices < 1) {
      emitError(module.getLoc())
          << "moe-plan-placement devices must be at least 1, got "
          << static_cast<int64_t>(devices);
      return signalPassFailure();
    }
    bool budgeted = budget >= 0 || budgetPercent >= 0;
    if (!budgeted && devices == 1 && planFile.empty())
      return;
    if (budgetPercent > 100) {
      emitError(module.getLoc())
          << "budget-percent must be in [0, 100], got " << budgetPercent;
      return signalPassFailure();
    }
    SmallVector<MoELayerInfo> layers = collectLayers(module);
    if (layers.empty() && (devices > 1 || !planFile.empty())) {
      emitError(module.getLoc())
          << "no MoE layer to place: the module has no moe.experts fed by a "
             "moe.dispatch of routed ids (an ONNX model whose MoE blocks were "
             "not raised: moe-compile --remarks says why)";
      return signalPassFailure();
    }
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
    // counts against the budget (of every device) whole.
    SmallVector<Sizing> sizes;
    int64_t total = 0, minimum = 0, fixed = 0;
    for (MoELayerInfo &layer : layers) {
      Sizing s;
      s.experts = layer.numExperts;
      s.k = std::min<int64_t>(layer.recipe.getK(), s.experts);
      s.perDevice = (s.experts + devices - 1) / devices;
      int64_t groups = layer.recipe.getNGroup();
      if (devices > 1 && groups > 1 && groups % devices == 0 &&
          s.experts % groups == 0)
        s.groupSize = s.experts / groups;
      s.minSlots = std::min(s.k, s.perDevice);
      s.placeable = layer.experts.getFirstExpert() == 0 &&
                    layer.experts.getNumExperts() == s.experts;
      for (Value w : {layer.experts.getGate(), layer.experts.getUp(),
                      layer.experts.getDown()})
        if (w && !cast<RankedTensorType>(w.getType()).hasStaticShape())
          s.placeable = false;
      s.bytes = expertBytes(layer.experts);
      if (s.placeable) {
        total += s.bytes * s.perDevice;
        minimum += s.bytes * s.minSlots;
      } else {
        total += s.bytes * s.experts;
        fixed += s.bytes * s.experts;
      }
      sizes.push_back(s);
    }
    if (devices > 1) {
      for (auto [layer, s] : llvm::zip(layers, sizes)) {
        if (s.placeable && s.experts >= devices)
          continue;
        layer.experts.emitOpError()
            << "cannot be spread over " << static_cast<int64_t>(devices)
            << " devices: "
            << (s.placeable ? "it has " + std::to_string(s.experts) + " experts"
                            : std::string("its expert weights have dynamic "
                                          "shapes or it is a shard"));
        return signalPassFailure();
      }
    }
    // `total` is what one device holds with everything resident.
    int64_t budget = budgeted ? this->budget : total;
    if (budgetPercent >= 0)
      budget = static_cast<int64_t>(static_cast<double>(total) * budgetPercent /
                                    100.0);
    if (budget < minimum + fixed) {
      InFlightDiagnostic diag =
          emitError(module.getLoc())
          << "expert budget of " << budget
          << " bytes is below the minimum working set: " << minimum + fixed
          << " bytes are needed (the k experts of each of the " << layers.size()
          << " MoE layers";
      if (devices > 1)
        diag << " on each of " << static_cast<int64_t>(devices) << " devices";
      diag << ", of " << total << " expert bytes in all";
      if (devices > 1)
        diag << " per device";
      if (fixed)
        diag << ", plus " << fixed << " bytes of layers that cannot be placed";
      diag << ")";
      return signalPassFailure();
    }

    // Water-filling: every placed layer gets its minimum slots plus an equal
    // share of the rest; layers whose share covers all their experts stay
    // resident and give back what they do not use.
    SmallVector<bool> resident(layers.size(), false);
    for (auto [i, s] : llvm::enumerate(sizes))
      resident[i] = !s.placeable || budget >= total;
    int64_t extra = budget - minimum - fixed;
    int64_t share = 0;
    for (bool changed = true; changed;) {
      changed = false;
      int64_t open = llvm::count(resident, false);
      if (open == 0)
        break;
      share = extra / open;
      for (auto [i, s] : llvm::enumerate(sizes)) {
        if (resident[i] || s.bytes * s.minSlots + share < s.bytes * s.perDevice)
          continue;
        resident[i] = true;
        extra -= s.bytes * (s.perDevice - s.minSlots);
        changed = true;
      }
    }

    std::vector<LayerPlan> plans(layers.size());
    // The experts of the layer before that stay in fast memory: all of a
    // resident layer's, else its pinned ones.
    SmallVector<int64_t> previousPinned;
    auto allResident = [&](int64_t experts) {
      previousPinned.resize(experts);
      std::iota(previousPinned.begin(), previousPinned.end(), 0);
    };
    for (auto [i, layer] : llvm::enumerate(layers)) {
      const Sizing &s = sizes[i];
      LayerPlan &plan = plans[i];
      plan.resident = resident[i];
      if (!s.placeable) {
        plan.device.assign(s.experts, 0);
        allResident(s.experts);
        continue;
      }
      // Devices: balanced by counts, following the tokens of the layer
      // before. With group-limited routing whose groups the devices share
      // evenly, whole groups are placed, so that a token reaches at most
      // `topk_group` devices (DeepSeek-V3's node-limited routing).
      int64_t unit = s.groupSize;
      int64_t units = s.experts / unit;
      std::vector<std::vector<double>> affinity;
      std::vector<double> counts;
      if (!layerProfiles.empty() && devices > 1) {
        counts.assign(units, 0.0);
        for (auto [e, n] : llvm::enumerate(layerProfiles[i].counts))
          counts[e / unit] += n;
        if (i > 0 && !layerProfiles[i - 1].next.empty() &&
            plans[i - 1].device.size() == layerProfiles[i - 1].next.size()) {
          affinity.assign(units, std::vector<double>(devices, 0.0));
          for (auto [from, row] : llvm::enumerate(layerProfiles[i - 1].next))
            for (int64_t e = 0; e < s.experts; ++e)
              affinity[e / unit][plans[i - 1].device[from]] += row[e];
        }
      }
      SmallVector<int64_t> unitDevice =
          assignDevices(devices, s.perDevice / unit, counts, affinity, units);
      plan.device.resize(s.experts);
      for (int64_t e = 0; e < s.experts; ++e)
        plan.device[e] = unitDevice[e / unit];
      if (plan.resident) {
        plan.slots = s.perDevice;
        allResident(s.experts);
        continue;
      }
      plan.slots = std::min(s.perDevice, s.minSlots + share / s.bytes);
      if (!layerProfiles.empty() && plan.slots > s.minSlots) {
        // Score: how often chosen, plus how often it follows the experts
        // the previous layer keeps resident on the same device.
        std::vector<double> score = layerProfiles[i].counts;
        if (i > 0 && !layerProfiles[i - 1].next.empty())
          for (int64_t from : previousPinned)
            for (int64_t e = 0; e < s.experts; ++e)
              if (plans[i - 1].device[from] == plan.device[e])
                score[e] += layerProfiles[i - 1].next[from][e];
        SmallVector<int64_t> order(s.experts);
        std::iota(order.begin(), order.end(), 0);
        llvm::sort(order, [&](int64_t a, int64_t b) {
          return score[a] > score[b] || (score[a] == score[b] && a < b);
        });
        SmallVector<int64_t> pinnedOn(devices, 0);
        for (int64_t e : order) {
          if (score[e] <= 0)
            break;
          if (pinnedOn[plan.device[e]] == plan.slots - s.minSlots)
            continue;
          ++pinnedOn[plan.device[e]];
          plan.pinned.push_back(e);
        }
      }
      previousPinned = plan.pinned;
    }

    for (auto [i, layer] : llvm::enumerate(layers)) {
      const LayerPlan &plan = plans[i];
      if (!sizes[i].placeable || (plan.resident && devices == 1))
        continue;
      ArrayRef<int64_t> device;
      if (devices > 1)
        device = plan.device;
      place(layer.experts, i, sizes[i].experts, plan.slots, plan.pinned,
            device);
    }
    if (!planFile.empty() && failed(writePlan(module.getLoc(), layers, sizes,
                                              plans, layerProfiles, budget)))
      return signalPassFailure();
  }

  /// Puts `op` in a cache of `slots` slots (on each of its devices).
  void place(ExpertsOp op, int64_t layer, int64_t experts, int64_t slots,
             ArrayRef<int64_t> pinned, ArrayRef<int64_t> device) {
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
    op.setPlacementAttr(PlacementAttr::get(op.getContext(), layer, experts,
                                           slots, pinned, device));
  }

  /// The plan as JSON (docs/ExpertCache.md, "Placement plans"), a layer a
  /// line.
  LogicalResult writePlan(Location loc, ArrayRef<MoELayerInfo> layers,
                          ArrayRef<Sizing> sizes, ArrayRef<LayerPlan> plans,
                          ArrayRef<LayerProfile> layerProfiles,
                          int64_t budget) {
    // The share of the profile's pairs (expert of layer l, expert of layer
    // l + 1) that change device under `deviceOf`; -1 without pairs.
    auto crossDevice = [&](auto deviceOf) {
      double crossed = 0, pairs = 0;
      for (size_t l = 0; l + 1 < layers.size(); ++l)
        for (auto [from, row] : llvm::enumerate(layerProfiles[l].next))
          for (auto [to, n] : llvm::enumerate(row)) {
            pairs += n;
            if (deviceOf(l, from) != deviceOf(l + 1, to))
              crossed += n;
          }
      return pairs > 0 ? crossed / pairs : -1.0;
    };
    std::error_code error;
    llvm::raw_fd_ostream os(planFile, error);
    if (error)
      return emitError(loc) << "cannot write the placement plan '" << planFile
                            << "': " << error.message();
    os << "{\"version\": 1, \"devices\": " << static_cast<int64_t>(devices)
       << ", \"budget_bytes_per_device\": " << budget;
    if (!layerProfiles.empty() && devices > 1) {
      double planned =
          crossDevice([&](size_t l, size_t e) { return plans[l].device[e]; });
      double contiguous = crossDevice([&](size_t l, size_t e) {
        return static_cast<int64_t>(e) / sizes[l].perDevice;
      });
      if (planned >= 0)
        os << ", \"profile_cross_device\": " << llvm::formatv("{0:f4}", planned)
           << ", \"profile_cross_device_contiguous\": "
           << llvm::formatv("{0:f4}", contiguous);
    }
    os << ", \"layers\": [";
    for (size_t i = 0; i < plans.size(); ++i) {
      const Sizing &s = sizes[i];
      const LayerPlan &plan = plans[i];
      os << (i ? ",\n" : "\n") << "  ";
      llvm::json::OStream json(os);
      json.object([&] {
        json.attribute("layer", static_cast<int64_t>(i));
        json.attribute("experts", s.experts);
        json.attribute("k", s.k);
        json.attribute("expert_bytes", s.bytes);
        json.attribute("placed", s.placeable);
        if (s.groupSize > 1)
          json.attribute("group_size", s.groupSize);
        json.attribute("resident", plan.resident);
        json.attribute("slots_per_device", plan.slots ? plan.slots : s.experts);
        json.attribute("pinned", llvm::json::Array(plan.pinned));
        json.attribute("devices", llvm::json::Array(plan.device));
        if (!layerProfiles.empty()) {
          SmallVector<double> load(devices, 0.0);
          for (auto [e, n] : llvm::enumerate(layerProfiles[i].counts))
            load[plan.device[e]] += n;
          json.attribute("device_load", llvm::json::Array(load));
        }
      });
    }
    os << "\n]}\n";
    return success();
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
