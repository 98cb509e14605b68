//===- EmitCInterface.cpp - Give public functions a C interface -----------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/IR/BuiltinOps.h"

namespace moe {
#define GEN_PASS_DEF_MOEEMITCINTERFACE
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

namespace {
struct MoEEmitCInterfacePass
    : public moe::impl::MoEEmitCInterfaceBase<MoEEmitCInterfacePass> {
  using MoEEmitCInterfaceBase::MoEEmitCInterfaceBase;

  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (func.isPublic() && !func.isExternal())
        func->setAttr("llvm.emit_c_interface", UnitAttr::get(&getContext()));
  }
};
} // namespace
