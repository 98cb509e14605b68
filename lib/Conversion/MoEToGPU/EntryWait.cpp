//===- EntryWait.cpp - Drop the entry function's final GPU wait -----------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// moe-drop-entry-wait: the function the moe-mlir runtime calls does not wait
// for the GPU before it returns; the runtime's copies of its results follow
// its work on the same stream, and the runtime waits once after them.
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/SymbolTable.h"

namespace moe {
#define GEN_PASS_DEF_MOEDROPENTRYWAIT
#include "moe/Conversion/Passes.h.inc"
} // namespace moe

using namespace mlir;

namespace {
struct MoEDropEntryWaitPass
    : public moe::impl::MoEDropEntryWaitBase<MoEDropEntryWaitPass> {
  using MoEDropEntryWaitBase::MoEDropEntryWaitBase;

  void runOnOperation() override {
    if (entry.empty())
      return;
    ModuleOp module = getOperation();
    auto func = module.lookupSymbol<func::FuncOp>(entry);
    if (!func || func.isExternal()) {
      module.emitError() << "moe-drop-entry-wait: no function '" << entry
                         << "' with a body in the module";
      return signalPassFailure();
    }
    // A caller in the module would read the results without the wait.
    std::optional<SymbolTable::UseRange> uses =
        SymbolTable::getSymbolUses(func, module);
    if (!uses || !uses->empty())
      return;
    func.walk([](func::ReturnOp ret) {
      auto wait = dyn_cast_or_null<gpu::WaitOp>(ret->getPrevNode());
      if (wait && !wait.getAsyncToken())
        wait.erase();
    });
  }
};
} // namespace
