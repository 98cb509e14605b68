//===- MoEToGPU.h - Lower the moe dialect to GPU kernels --------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CONVERSION_MOETOGPU_MOETOGPU_H
#define MOE_CONVERSION_MOETOGPU_MOETOGPU_H

#include "mlir/IR/PatternMatch.h"
#include "mlir/Support/LLVM.h"

namespace moe {

/// The name of the `gpu.module` that holds the kernels of the moe ops.
constexpr llvm::StringLiteral kMoEKernelModuleName = "moe_kernels";

/// Marks a `memref.alloc` in host code that is meant to be host memory (the
/// host reads it); moe-host-buffers-to-gpu makes every other one a device
/// buffer.
constexpr llvm::StringLiteral kHostBufferAttrName = "moe.host_buffer";

/// Adds the patterns that lower `moe.gate`, `moe.route`, `moe.dispatch`,
/// `moe.experts`, `moe.shared_experts` and `moe.combine` to `gpu.launch_func`
/// of kernels written on memrefs (in the `gpu.module @moe_kernels` of the
/// enclosing `builtin.module`, which gets `gpu.container_module`). Operands
/// cross into buffers through `bufferization.to_buffer`, results come back
/// through `bufferization.to_tensor` of `gpu.alloc` buffers, so the host
/// function is bufferized afterwards.
void populateMoEToGPUConversionPatterns(mlir::RewritePatternSet &patterns);

/// Adds the patterns that turn tensor compute on the host into naive GPU
/// kernels: elementwise arith/math on tensors (through linalg), every linalg
/// op on tensors (one thread per element of its parallel loops, which runs
/// its reduction loops), `tensor.pad` with an invariant padding value and
/// `tensor.insert_slice` of the same rank. Each reads views of its operands
/// (any strides) and writes a new `gpu.alloc` buffer. convert-moe-to-gpu
/// applies them after the moe ops, so that the code around the MoE layers
/// and the bodies of `moe.generic_experts` run on the GPU too.
void populateHostComputeToGPUPatterns(mlir::RewritePatternSet &patterns);

/// Emits an error on the first moe op under `root` that the patterns do not
/// lower (naming the op and why); succeeds when there is none.
llvm::LogicalResult checkMoEToGPUSupport(mlir::Operation *root);

} // namespace moe

#endif // MOE_CONVERSION_MOETOGPU_MOETOGPU_H
