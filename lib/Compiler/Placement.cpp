//===- Placement.cpp - Expert placement in the compiled model -------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Runs moe-plan-placement and moe-insert-prefetch for `--expert-budget`
// (moe-instrument-routing for `--instrument-routing`) and turns the planned
// `moe.expert_slots` into slot-buffer arguments of the entry, recorded in the
// signature as `cache` lines and `layer=` weights (docs/ExpertCache.md).
//
//===----------------------------------------------------------------------===//

#include "CompilerInternal.h"
#include "moe/Dialect/MoE/IR/MoEOps.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"
#include "moe/runtime/runtime.h"

#include "mlir/Pass/PassManager.h"

using namespace mlir;
using namespace moe;
using namespace moe::compiler;

std::optional<ExpertBudget> moe::parseExpertBudget(StringRef text) {
  // The runtime's parser (moe-run --expert-budget takes the same syntax).
  ExpertBudget budget;
  if (!moe_parse_expert_budget(text.str().c_str(), &budget.bytes,
                               &budget.percent))
    return std::nullopt;
  return budget;
}

LogicalResult compiler::planExpertPlacement(ModuleOp module, func::FuncOp entry,
                                            ModelSignature &signature,
                                            const CompileOptions &options,
                                            StringRef planFile) {
  bool place = options.expertBudget >= 0 || options.expertBudgetPercent >= 0 ||
               !planFile.empty();
  if (!place && !options.instrumentRouting)
    return success();
  Location loc = entry.getLoc();
  if (options.prefetchDepth < 0)
    return emitError(loc) << "--prefetch-depth must be non-negative, got "
                          << options.prefetchDepth;

  PassManager pm(module.getContext());
  pm.addPass(createMoEExpand());
  pm.addPass(createMoEFuseGating());
  if (options.instrumentRouting && planFile.empty())
    pm.addPass(createMoEInstrumentRouting());
  if (place) {
    MoEPlanPlacementOptions plan;
    plan.budget = options.expertBudget;
    plan.budgetPercent = options.expertBudgetPercent;
    plan.profile = options.placementProfile;
    plan.devices = options.devices;
    plan.planFile = planFile.str();
    pm.addPass(createMoEPlanPlacement(plan));
    if (options.prefetchDepth > 0 && planFile.empty()) {
      MoEInsertPrefetchOptions prefetch;
      prefetch.depth = options.prefetchDepth;
      pm.addPass(createMoEInsertPrefetch(prefetch));
    }
  }
  if (failed(pm.run(module)))
    return failure();
  if (!planFile.empty())
    return success();

  // Realize the slots: each one views a weight argument used by nothing
  // else.
  unsigned firstWeight = signature.inputs.size();
  SmallVector<ExpertSlotsOp> slotsOps;
  module.walk([&](ExpertSlotsOp op) { slotsOps.push_back(op); });
  for (ExpertSlotsOp op : slotsOps) {
    auto arg = dyn_cast<BlockArgument>(op.getWeights());
    if (!arg || arg.getOwner()->getParentOp() != entry ||
        arg.getArgNumber() < firstWeight)
      return op.emitOpError()
             << "views a tensor that is not a weight of the entry; only "
                "constant expert weights can be placed in an expert cache";
    WeightSpec &weight = signature.weights[arg.getArgNumber() - firstWeight];
    for (Operation *user : arg.getUsers()) {
      auto other = dyn_cast<ExpertSlotsOp>(user);
      if (!other || other.getLayer() != op.getLayer())
        return op.emitOpError()
               << "weight '" << weight.tensor.name
               << "' is used outside the expert cache of layer "
               << op.getLayer() << "; it cannot be placed";
    }
    weight.cacheLayer = op.getLayer();
    if (arg.getType() != op.getType())
      arg.setType(op.getType());
    op.replaceAllUsesWith(arg);
    op.erase();
  }
  if (!slotsOps.empty()) {
    SmallVector<Type> inputs(entry.getBody().getArgumentTypes());
    entry.setFunctionType(FunctionType::get(
        module.getContext(), inputs, entry.getFunctionType().getResults()));
  }

  module.walk([&](ExpertsOp op) {
    if (PlacementAttr placement = op.getPlacementAttr())
      signature.cacheLayers.push_back(
          {placement.getLayer(), placement.getExperts(), placement.getSlots(),
           SmallVector<int64_t>(placement.getPinned())});
  });
  layOutWeights(signature);
  return success();
}
