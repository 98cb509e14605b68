//===- RuntimeHooks.h - Calls from compiled code into the runtime -*- C++
//-*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// The runtime functions the expert-cache and profiling ops lower to on every
// target (docs/ExpertCache.md): `moe-compile` defines them in the library as
// calls through the table the runtime passes to `moe_model_bind_host`.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CONVERSION_RUNTIMEHOOKS_H
#define MOE_CONVERSION_RUNTIMEHOOKS_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinOps.h"

namespace moe {

/// `slot = acquire(layer, expert)`: the expert's slot in the layer's slot
/// buffers, loaded (on the GPU: its copy ordered before later work).
inline constexpr llvm::StringLiteral kAcquireHook = "moe_rt_expert_acquire";
/// `release(layer, expert)`: the slot may be reused once the work queued so
/// far is done.
inline constexpr llvm::StringLiteral kReleaseHook = "moe_rt_expert_release";
/// `prefetch(layer, expert)`: the running layer needs the expert soon.
inline constexpr llvm::StringLiteral kPrefetchHook = "moe_rt_expert_prefetch";
/// `predict(layer, expert)`: a pre-gating prediction for a later layer.
inline constexpr llvm::StringLiteral kPredictHook = "moe_rt_expert_predict";
/// `trace(layer, numExperts, token, expert)`: one routing decision.
inline constexpr llvm::StringLiteral kTraceHook = "moe_rt_trace_routing";

/// Declares the hook functions (private, i64 arguments) in `module` where
/// absent.
void declareRuntimeHooks(mlir::ModuleOp module);

/// Calls hook `name` with index or i64 arguments (index ones cast to i64).
mlir::ValueRange callRuntimeHook(mlir::OpBuilder &b, mlir::Location loc,
                                 llvm::StringRef name, mlir::ValueRange args,
                                 mlir::TypeRange results = {});

} // namespace moe

#endif // MOE_CONVERSION_RUNTIMEHOOKS_H
