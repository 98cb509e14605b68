//===- RuntimeHooks.cpp - Calls from compiled code into the runtime -------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Conversion/RuntimeHooks.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"

using namespace mlir;

void moe::declareRuntimeHooks(ModuleOp module) {
  OpBuilder b = OpBuilder::atBlockBegin(module.getBody());
  Type i64 = b.getI64Type();
  auto declare = [&](StringRef name, TypeRange args, TypeRange results) {
    if (module.lookupSymbol(name))
      return;
    auto fn = func::FuncOp::create(b, module.getLoc(), name,
                                   b.getFunctionType(args, results));
    fn.setPrivate();
  };
  declare(kAcquireHook, {i64, i64}, {i64});
  declare(kReleaseHook, {i64, i64}, {});
  declare(kPrefetchHook, {i64, i64}, {});
  declare(kPredictHook, {i64, i64}, {});
  declare(kTraceHook, {i64, i64, i64, i64}, {});
}

ValueRange moe::callRuntimeHook(OpBuilder &b, Location loc, StringRef name,
                                ValueRange args, TypeRange results) {
  SmallVector<Value> casted;
  for (Value arg : args)
    casted.push_back(arg.getType().isIndex() ? arith::IndexCastOp::create(
                                                   b, loc, b.getI64Type(), arg)
                                             : arg);
  return func::CallOp::create(b, loc, name, results, casted).getResults();
}
