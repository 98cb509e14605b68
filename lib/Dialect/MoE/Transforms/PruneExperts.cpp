//===- PruneExperts.cpp - Drop the least-used experts of each layer -------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Matchers.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <numeric>

namespace moe {
#define GEN_PASS_DEF_MOEPRUNEEXPERTS
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

/// Reads the per-layer expert counts of a routing profile; reports errors
/// through `emitError`.
static FailureOr<SmallVector<SmallVector<double>>>
readProfile(StringRef path, function_ref<InFlightDiagnostic()> emitError) {
  auto buffer = llvm::MemoryBuffer::getFile(path);
  if (!buffer)
    return emitError() << "cannot read routing profile '" << path
                       << "': " << buffer.getError().message();
  llvm::Expected<llvm::json::Value> json =
      llvm::json::parse((*buffer)->getBuffer());
  if (!json)
    return emitError() << "routing profile '" << path << "' is not valid JSON: "
                       << llvm::toString(json.takeError());
  auto malformed = [&]() -> InFlightDiagnostic {
    return emitError() << "routing profile '" << path
                       << "' must be {\"layers\": [{\"counts\": [numbers >= "
                          "0, ...]}, ...]}";
  };
  const llvm::json::Object *root = json->getAsObject();
  const llvm::json::Array *layers = root ? root->getArray("layers") : nullptr;
  if (!layers)
    return malformed();
  SmallVector<SmallVector<double>> result;
  for (const llvm::json::Value &layer : *layers) {
    const llvm::json::Object *object = layer.getAsObject();
    const llvm::json::Array *counts =
        object ? object->getArray("counts") : nullptr;
    if (!counts)
      return malformed();
    SmallVector<double> &row = result.emplace_back();
    for (const llvm::json::Value &count : *counts) {
      std::optional<double> number = count.getAsNumber();
      if (!number || !(*number >= 0.0))
        return malformed();
      row.push_back(*number);
    }
  }
  return result;
}

/// The `keep` experts with the highest counts (ties: lower index), ascending.
static SmallVector<int64_t> mostUsed(ArrayRef<double> counts, int64_t keep) {
  SmallVector<int64_t> order(counts.size());
  std::iota(order.begin(), order.end(), 0);
  llvm::stable_sort(
      order, [&](int64_t a, int64_t b) { return counts[a] > counts[b]; });
  order.resize(keep);
  llvm::sort(order);
  return order;
}

/// Runs of consecutive indices in `kept` as (first, length) pairs.
static SmallVector<std::pair<int64_t, int64_t>> runs(ArrayRef<int64_t> kept) {
  SmallVector<std::pair<int64_t, int64_t>> result;
  for (int64_t e : kept) {
    if (!result.empty() && result.back().first + result.back().second == e)
      ++result.back().second;
    else
      result.push_back({e, 1});
  }
  return result;
}

/// `value` restricted to the indices `kept` along `dim`: a smaller constant
/// when it is a dense constant, slices copied into a new tensor otherwise.
static Value selectExperts(OpBuilder &b, Location loc, Value value, int64_t dim,
                           ArrayRef<int64_t> kept) {
  auto type = cast<RankedTensorType>(value.getType());
  SmallVector<int64_t> shape(type.getShape());
  int64_t numExperts = shape[dim];
  shape[dim] = kept.size();
  auto newType = RankedTensorType::get(shape, type.getElementType());

  DenseElementsAttr dense;
  unsigned bits = type.getElementTypeBitWidth();
  if (matchPattern(value, m_Constant(&dense)) && bits % 8 == 0) {
    if (dense.isSplat())
      return arith::ConstantOp::create(b, loc, dense.resizeSplat(newType));
    ArrayRef<char> raw = dense.getRawData();
    int64_t outer = 1, inner = bits / 8;
    for (int64_t d = 0; d < dim; ++d)
      outer *= type.getDimSize(d);
    for (int64_t d = dim + 1; d < type.getRank(); ++d)
      inner *= type.getDimSize(d);
    std::vector<char> data;
    data.reserve(outer * kept.size() * inner);
    for (int64_t o = 0; o < outer; ++o)
      for (int64_t e : kept) {
        const char *begin = raw.data() + (o * numExperts + e) * inner;
        data.insert(data.end(), begin, begin + inner);
      }
    return arith::ConstantOp::create(
        b, loc, DenseElementsAttr::getFromRawBuffer(newType, data));
  }

  SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, value);
  SmallVector<OpFoldResult> offsets(type.getRank(), b.getIndexAttr(0));
  SmallVector<OpFoldResult> strides(type.getRank(), b.getIndexAttr(1));
  SmallVector<OpFoldResult> newSizes(sizes);
  newSizes[dim] = b.getIndexAttr(kept.size());
  Value result =
      tensor::EmptyOp::create(b, loc, newSizes, type.getElementType());
  int64_t at = 0;
  for (auto [first, length] : runs(kept)) {
    SmallVector<OpFoldResult> from(offsets), to(offsets), runSizes(sizes);
    from[dim] = b.getIndexAttr(first);
    to[dim] = b.getIndexAttr(at);
    runSizes[dim] = b.getIndexAttr(length);
    Value slice =
        tensor::ExtractSliceOp::create(b, loc, value, from, runSizes, strides);
    result = tensor::InsertSliceOp::create(b, loc, slice, result, to, runSizes,
                                           strides);
    at += length;
  }
  return result;
}

namespace {
struct MoEPruneExpertsPass
    : public moe::impl::MoEPruneExpertsBase<MoEPruneExpertsPass> {
  using MoEPruneExpertsBase::MoEPruneExpertsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto emitError = [&] { return module.emitError("moe-prune-experts: "); };
    if (keep < 1) {
      emitError() << "needs keep >= 1, got " << static_cast<int64_t>(keep);
      return signalPassFailure();
    }
    if (profile.empty()) {
      emitError() << "needs profile=<routing profile JSON>";
      return signalPassFailure();
    }
    FailureOr<SmallVector<SmallVector<double>>> counts =
        readProfile(profile, emitError);
    if (failed(counts))
      return signalPassFailure();

    SmallVector<LayerOp> layers;
    module.walk([&](LayerOp op) { layers.push_back(op); });
    for (auto [index, op] : llvm::enumerate(layers))
      if (failed(prune(op, index, *counts)))
        return signalPassFailure();
  }

  LogicalResult prune(LayerOp op, size_t index,
                      ArrayRef<SmallVector<double>> counts) {
    int64_t numExperts = op.getNumExperts();
    if (index >= counts.size())
      return op.emitOpError()
             << "is layer " << index << " but the routing profile has "
             << counts.size() << " layers";
    if (static_cast<int64_t>(counts[index].size()) != numExperts)
      return op.emitOpError()
             << "has " << numExperts << " experts but routing profile layer "
             << index << " has " << counts[index].size() << " counts";
    if (keep >= numExperts)
      return success();
    RoutingAttr routing = op.getRouting();
    if (routing.isGroupLimited() || routing.hasExpertGroups())
      return op.emitOpError("cannot prune experts under group-limited routing "
                            "(n_group or expert_groups)");
    if (!routing.isExpertChoice() && routing.getK() > keep)
      return op.emitOpError()
             << "routes to k = " << routing.getK()
             << " experts, more than keep = " << static_cast<int64_t>(keep);

    SmallVector<int64_t> kept = mostUsed(counts[index], keep);
    OpBuilder b(op);
    Location loc = op.getLoc();
    auto select = [&](Value v, int64_t dim) {
      return selectExperts(b, loc, v, dim, kept);
    };
    auto replace = [&](OpOperand &operand, int64_t dim) {
      Value old = operand.get();
      operand.set(select(old, dim));
      if (Operation *def = old.getDefiningOp();
          def && isa<arith::ConstantOp>(def) && def->use_empty())
        def->erase();
    };
    replace(op.getRouterMutable(), 1);
    replace(op.getUpMutable(), 0);
    replace(op.getDownMutable(), 0);
    for (MutableOperandRange range :
         {op.getRouterBiasMutable(), op.getSelectionBiasMutable(),
          op.getGateMutable(), op.getGateBiasMutable(), op.getUpBiasMutable(),
          op.getDownBiasMutable()})
      if (!range.empty())
        replace(range[0], 0);
    if (routing.isExpertChoice())
      op.setRoutingAttr(RoutingAttr::get(
          op.getContext(), keep, routing.getScoring(), routing.getRenormalize(),
          routing.getTemperature(), routing.getScale(), routing.getNGroup(),
          routing.getTopkGroup(), routing.getCapacityFactor(),
          routing.getThreshold(), routing.getSelection(), routing.getCapacity(),
          routing.getExpertGroups()));
    return success();
  }
};
} // namespace
