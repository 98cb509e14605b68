//===- LowerRuntimeChecks.cpp - cf.assert to the runtime's fail hook ------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// A failed run-time check must end the model call with an error, not the
// process: cf.assert becomes a branch to a call of `moe_rt_fail(message)`,
// which the runtime binds through `moe_model_bind_host` and which does not
// return (docs/CompiledModelABI.md).
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/ControlFlow/IR/ControlFlowOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/StringMap.h"

namespace moe {
#define GEN_PASS_DEF_MOELOWERRUNTIMECHECKS
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

static constexpr StringLiteral kFailHook = "moe_rt_fail";

namespace {
struct MoELowerRuntimeChecksPass
    : public moe::impl::MoELowerRuntimeChecksBase<MoELowerRuntimeChecksPass> {
  using MoELowerRuntimeChecksBase::MoELowerRuntimeChecksBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    SmallVector<cf::AssertOp> checks;
    // Host code only: kernels in nested modules (gpu.module) keep theirs.
    module.walk([&](cf::AssertOp op) {
      if (SymbolTable::getNearestSymbolTable(op->getParentOp()) == module)
        checks.push_back(op);
    });
    if (checks.empty())
      return;
    MLIRContext *ctx = &getContext();
    OpBuilder b(ctx);
    auto ptrType = LLVM::LLVMPointerType::get(ctx);
    b.setInsertionPointToEnd(module.getBody());
    auto hook = module.lookupSymbol<LLVM::LLVMFuncOp>(kFailHook);
    if (!hook)
      hook = LLVM::LLVMFuncOp::create(
          b, module.getLoc(), kFailHook,
          LLVM::LLVMFunctionType::get(LLVM::LLVMVoidType::get(ctx), {ptrType}));
    // One NUL-terminated global per distinct message.
    llvm::StringMap<LLVM::GlobalOp> messages;
    auto messageGlobal = [&](StringRef text) {
      LLVM::GlobalOp &global = messages[text];
      if (global)
        return global;
      std::string data = text.str();
      data.push_back('\0');
      auto type =
          LLVM::LLVMArrayType::get(IntegerType::get(ctx, 8), data.size());
      b.setInsertionPointToStart(module.getBody());
      global = LLVM::GlobalOp::create(
          b, module.getLoc(), type, /*isConstant=*/true, LLVM::Linkage::Private,
          ("moe_check_message_" + Twine(messages.size() - 1)).str(),
          b.getStringAttr(data));
      return global;
    };
    for (cf::AssertOp op : checks) {
      Location loc = op.getLoc();
      Block *block = op->getBlock();
      Block *continuation = block->splitBlock(op->getIterator());
      Block *fail = b.createBlock(continuation);
      LLVM::GlobalOp global = messageGlobal(op.getMsg());
      b.setInsertionPointToStart(fail);
      Value message = LLVM::AddressOfOp::create(b, loc, global);
      LLVM::CallOp::create(b, loc, hook, ValueRange{message});
      LLVM::UnreachableOp::create(b, loc);
      b.setInsertionPointToEnd(block);
      cf::CondBranchOp::create(b, loc, op.getArg(), continuation, fail);
      op.erase();
    }
  }
};
} // namespace
