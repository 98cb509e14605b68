//===- MoEAttrs.cpp - Attributes of the moe dialect -----------------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace moe;

#include "moe/Dialect/MoE/IR/MoEEnums.cpp.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/Dialect/MoE/IR/MoEAttrs.cpp.inc"

void MoEDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "moe/Dialect/MoE/IR/MoEAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// RoutingAttr
//===----------------------------------------------------------------------===//

LogicalResult RoutingAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                  int64_t k, ScoringFunc scoring,
                                  bool renormalize, APFloat temperatureAttr,
                                  APFloat scaleAttr, int64_t nGroup,
                                  int64_t topkGroup, APFloat capacityFactorAttr,
                                  APFloat thresholdAttr,
                                  SelectionMode selection, int64_t capacity,
                                  ArrayRef<int64_t> expertGroups) {
  double temperature = temperatureAttr.convertToDouble();
  double scale = scaleAttr.convertToDouble();
  double capacityFactor = capacityFactorAttr.convertToDouble();
  double threshold = thresholdAttr.convertToDouble();
  if (k < 1)
    return emitError() << "routing k must be at least 1, got " << k;
  if (!(temperature > 0.0))
    return emitError() << "routing temperature must be positive, got "
                       << temperature;
  if (temperature != 1.0 && scoring == ScoringFunc::Sigmoid)
    return emitError() << "routing temperature applies to softmax scoring "
                          "only, not sigmoid";
  if (!(scale > 0.0))
    return emitError() << "routing scale must be positive, got " << scale;
  if (nGroup < 0 || topkGroup < 0)
    return emitError() << "routing n_group and topk_group must be "
                          "non-negative";
  if (nGroup == 0 && topkGroup != 0)
    return emitError() << "routing topk_group requires n_group";
  if (nGroup > 0 && (topkGroup < 1 || topkGroup > nGroup))
    return emitError() << "routing topk_group must be in [1, n_group = "
                       << nGroup << "], got " << topkGroup;
  if (!(capacityFactor >= 0.0))
    return emitError() << "routing capacity_factor must be non-negative, got "
                       << capacityFactor;
  if (!(threshold >= 0.0 && threshold <= 1.0))
    return emitError() << "routing threshold must be in [0, 1], got "
                       << threshold;
  if (threshold > 0.0 && scoring != ScoringFunc::Softmax)
    return emitError() << "routing threshold (top-p) needs softmax scoring";
  if (capacity < 0)
    return emitError() << "routing capacity must be non-negative, got "
                       << capacity;
  if (llvm::any_of(expertGroups, [](int64_t size) { return size < 1; }))
    return emitError() << "routing expert_groups sizes must be positive";
  if (!expertGroups.empty() &&
      (nGroup > 0 || selection == SelectionMode::ExpertChoice))
    return emitError() << "routing expert_groups cannot be combined with "
                          "n_group or expert_choice";
  if (selection != SelectionMode::ExpertChoice) {
    if (capacity != 0 && capacityFactor != 0.0)
      return emitError() << "routing takes a capacity or a capacity_factor, "
                            "not both";
    return success();
  }
  if (scoring == ScoringFunc::TopkSoftmax)
    return emitError() << "expert_choice routing needs softmax or sigmoid "
                          "scoring";
  if (renormalize || threshold > 0.0 || nGroup > 0)
    return emitError() << "expert_choice routing takes no renormalize, "
                          "threshold or group limit";
  if (capacity == 0 && capacityFactor == 0.0)
    return emitError() << "expert_choice routing needs a capacity or a "
                          "capacity_factor";
  return success();
}

LogicalResult
RoutingAttr::verifyForNumExperts(function_ref<InFlightDiagnostic()> emitError,
                                 int64_t numExperts) const {
  if (isExpertChoice() && getK() != numExperts)
    return emitError() << "expert_choice routing has one slot per expert: k = "
                       << getK() << " must equal the " << numExperts
                       << " experts";
  if (getK() > numExperts)
    return emitError() << "routing k = " << getK() << " exceeds the "
                       << numExperts << " experts";
  if (hasExpertGroups()) {
    int64_t total = 0, smallest = numExperts;
    for (int64_t size : getExpertGroups()) {
      total += size;
      smallest = std::min(smallest, size);
    }
    if (total != numExperts)
      return emitError() << "routing expert_groups sum to " << total
                         << ", not the " << numExperts << " experts";
    if (getK() > smallest)
      return emitError() << "routing k = " << getK() << " exceeds the "
                         << smallest << " experts of the smallest group";
  }
  if (!isGroupLimited())
    return success();
  if (numExperts % getNGroup() != 0)
    return emitError() << "routing n_group = " << getNGroup()
                       << " does not divide the " << numExperts << " experts";
  int64_t eligible = getTopkGroup() * (numExperts / getNGroup());
  if (getK() > eligible)
    return emitError() << "routing k = " << getK() << " exceeds the "
                       << eligible << " experts of the kept groups";
  return success();
}

//===----------------------------------------------------------------------===//
// ExpertAttr
//===----------------------------------------------------------------------===//

LogicalResult ExpertAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                 ExpertKind kind, Activation activation,
                                 APFloat limitAttr, APFloat alphaAttr,
                                 APFloat betaAttr) {
  double limit = limitAttr.convertToDouble();
  double alpha = alphaAttr.convertToDouble();
  double beta = betaAttr.convertToDouble();
  if (!(limit >= 0.0))
    return emitError() << "expert limit must be non-negative, got " << limit;
  if (!(alpha > 0.0))
    return emitError() << "expert alpha must be positive, got " << alpha;
  if (kind == ExpertKind::Ffn && (limit != 0.0 || alpha != 1.0 || beta != 0.0))
    return emitError() << "expert limit, alpha and beta apply to gated "
                          "experts only";
  if (activation != Activation::Silu && (limit != 0.0 || alpha != 1.0))
    return emitError() << "expert limit and alpha need the silu activation";
  return success();
}

//===----------------------------------------------------------------------===//
// PlacementAttr
//===----------------------------------------------------------------------===//

/// The devices of a placement's `devices` list (1 when it is empty).
static int64_t numDevices(ArrayRef<int64_t> devices) {
  return devices.empty() ? 1 : *llvm::max_element(devices) + 1;
}

LogicalResult
PlacementAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                      int64_t layer, int64_t experts, int64_t slots,
                      ArrayRef<int64_t> pinned, ArrayRef<int64_t> devices) {
  if (layer < 0)
    return emitError() << "placement layer must be non-negative, got " << layer;
  if (experts < 1)
    return emitError() << "placement needs at least one expert, got "
                       << experts;
  if (slots < 1 || slots > experts)
    return emitError() << "placement slots must be in [1, " << experts
                       << "], got " << slots;
  if (!devices.empty() && static_cast<int64_t>(devices.size()) != experts)
    return emitError() << "placement devices must give the device of each of "
                       << experts << " experts, got " << devices.size();
  for (int64_t d : devices)
    if (d < 0)
      return emitError() << "placement device must be non-negative, got " << d;
  // Pinned experts per cache: one cache, or one per device.
  llvm::SmallDenseMap<int64_t, int64_t> pinnedPerDevice;
  llvm::SmallDenseSet<int64_t> seen;
  for (int64_t e : pinned) {
    if (e < 0 || e >= experts)
      return emitError() << "placement pins expert " << e << ", outside [0, "
                         << experts << ")";
    if (!seen.insert(e).second)
      return emitError() << "placement pins expert " << e << " twice";
    ++pinnedPerDevice[devices.empty() ? 0 : devices[e]];
  }
  for (int64_t device = 0, e = numDevices(devices); device < e; ++device) {
    int64_t count = pinnedPerDevice.lookup(device);
    if (count < slots)
      continue;
    InFlightDiagnostic diag = emitError()
                              << "placement pins " << count << " experts";
    if (!devices.empty())
      diag << " on device " << device;
    diag << " but has only " << slots << " slots; at least one must stay free";
    return diag;
  }
  return success();
}

int64_t PlacementAttr::getNumDevices() const {
  return numDevices(getDevices());
}
