//===- KernelSupport.h - Kernels and launches for MoEToGPU ------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// What the lowerings of convert-moe-to-gpu share: creating a kernel in the
// `gpu.module @moe_kernels` of the module, and the host side of a launch
// (operand buffers, device allocations, result tensors, `gpu.launch_func`).
// Private to lib/Conversion/MoEToGPU.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_CONVERSION_MOETOGPU_KERNELSUPPORT_H
#define MOE_LIB_CONVERSION_MOETOGPU_KERNELSUPPORT_H

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/PatternMatch.h"

namespace moe::gpu_lowering {

/// The identity-layout memref of a ranked tensor type.
mlir::MemRefType bufferType(mlir::Type tensor);

/// The memref of a ranked tensor type with a fully dynamic strided layout:
/// any view of a buffer (a slice of a weight, a reshaped result) converts to
/// it without a copy.
mlir::MemRefType stridedBufferType(mlir::Type tensor);

/// A kernel being built: its function and its arguments.
struct Kernel {
  mlir::gpu::GPUFuncOp func;
  llvm::SmallVector<mlir::Value> args;
  llvm::SmallVector<mlir::Value> workgroup;
};

/// The `gpu.module` that holds the moe kernels of the module around `op`,
/// created (and the module marked as a container) on first use.
mlir::gpu::GPUModuleOp getKernelModule(mlir::RewriterBase &rewriter,
                                       mlir::Operation *op);

/// Creates an empty kernel named `base` (uniqued) taking `argTypes`, with
/// workgroup buffers of `workgroupTypes`, and sets the insertion point of
/// `rewriter` into its body; the caller restores it.
Kernel createKernel(mlir::RewriterBase &rewriter, mlir::Operation *op,
                    llvm::StringRef base, mlir::TypeRange argTypes,
                    mlir::TypeRange workgroupTypes, int64_t blockX,
                    int64_t blockY = 1);

/// Host-side code around the launches of one op.
struct Host {
  mlir::RewriterBase &rewriter;
  mlir::Location loc;

  /// The buffer of a tensor operand (identity layout).
  mlir::Value buffer(mlir::Value tensor) const;
  /// The buffer of a tensor operand as a view of any layout.
  mlir::Value view(mlir::Value tensor) const;
  /// A device buffer of `type` (its dynamic sizes in order).
  mlir::Value alloc(mlir::MemRefType type, mlir::ValueRange dynamicSizes) const;
  void dealloc(mlir::Value memref) const;
  /// The result buffer of an op that writes the rows of its experts "into"
  /// `dest` (`moe.experts` and its variants): `[numRows, H]`, holding
  /// `dest`'s rows first unless `dest` is a `tensor.empty` (rows of other
  /// experts pass through).
  mlir::Value rowsInto(mlir::RankedTensorType resultType, mlir::Value numRows,
                       mlir::Value dest) const;
  /// The tensor of a result buffer, which nothing else aliases.
  mlir::Value tensor(mlir::Type type, mlir::Value memref) const;
  void launch(const Kernel &kernel, mlir::Value gridX, mlir::Value gridY,
              int64_t blockX, int64_t blockY, mlir::ValueRange args,
              mlir::Value gridZ = {}) const;
};

/// Adds the lowering of `moe.generic_experts` (HostCompute.cpp).
void populateGenericExpertsToGPUPatterns(mlir::RewritePatternSet &patterns);

} // namespace moe::gpu_lowering

#endif // MOE_LIB_CONVERSION_MOETOGPU_KERNELSUPPORT_H
