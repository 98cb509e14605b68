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

#include "moe/Conversion/ExpertMath.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/FunctionInterfaces.h"

namespace moe::gpu_lowering {
// A header private to lib/Conversion/MoEToGPU, whose sources all use MLIR's
// names unqualified.
using namespace mlir;

/// The identity-layout memref of a ranked tensor type.
mlir::MemRefType bufferType(mlir::Type tensor);

/// The memref of a ranked tensor type with a fully dynamic strided layout:
/// any view of a buffer (a slice of a weight, a reshaped result) converts to
/// it without a copy.
mlir::MemRefType stridedBufferType(mlir::Type tensor);

/// Short builders for the scalar code of the kernels. `ct` is the compute
/// type of floating-point values.
struct KernelBuilder {
  OpBuilder &b;
  Location loc;
  Type ct;

  Value idx(int64_t v) const {
    return arith::ConstantIndexOp::create(b, loc, v);
  }
  Value flt(double v) const {
    return arith::ConstantOp::create(b, loc, b.getFloatAttr(ct, v));
  }
  Value boolean(bool v) const {
    return arith::ConstantOp::create(b, loc, b.getBoolAttr(v));
  }
  Value add(Value x, Value y) const {
    if (isa<FloatType>(x.getType()))
      return arith::AddFOp::create(b, loc, x, y);
    return arith::AddIOp::create(b, loc, x, y);
  }
  Value sub(Value x, Value y) const {
    if (isa<FloatType>(x.getType()))
      return arith::SubFOp::create(b, loc, x, y);
    return arith::SubIOp::create(b, loc, x, y);
  }
  Value mul(Value x, Value y) const {
    if (isa<FloatType>(x.getType()))
      return arith::MulFOp::create(b, loc, x, y);
    return arith::MulIOp::create(b, loc, x, y);
  }
  Value div(Value x, Value y) const {
    if (isa<FloatType>(x.getType()))
      return arith::DivFOp::create(b, loc, x, y);
    return arith::DivUIOp::create(b, loc, x, y);
  }
  Value rem(Value x, Value y) const {
    return arith::RemUIOp::create(b, loc, x, y);
  }
  Value ceilDiv(Value x, int64_t d) const {
    return div(add(x, idx(d - 1)), idx(d));
  }
  Value minI(Value x, Value y) const {
    return arith::MinSIOp::create(b, loc, x, y);
  }
  Value maxI(Value x, Value y) const {
    return arith::MaxSIOp::create(b, loc, x, y);
  }
  Value maxF(Value x, Value y) const {
    return arith::MaximumFOp::create(b, loc, x, y);
  }
  Value minF(Value x, Value y) const {
    return arith::MinimumFOp::create(b, loc, x, y);
  }
  Value cmpI(arith::CmpIPredicate p, Value x, Value y) const {
    return arith::CmpIOp::create(b, loc, p, x, y);
  }
  Value cmpF(arith::CmpFPredicate p, Value x, Value y) const {
    return arith::CmpFOp::create(b, loc, p, x, y);
  }
  Value lt(Value x, Value y) const {
    return cmpI(arith::CmpIPredicate::slt, x, y);
  }
  Value andI(Value x, Value y) const {
    return arith::AndIOp::create(b, loc, x, y);
  }
  Value orI(Value x, Value y) const {
    return arith::OrIOp::create(b, loc, x, y);
  }
  Value select(Value c, Value x, Value y) const {
    return arith::SelectOp::create(b, loc, c, x, y);
  }
  Value exp(Value x) const { return math::ExpOp::create(b, loc, x); }
  Value sigmoid(Value x) const { return buildSigmoid(b, loc, x); }

  /// Loads a float element converted to the compute type.
  Value loadF(Value memref, ValueRange indices) const {
    Value v = memref::LoadOp::create(b, loc, memref, indices);
    return convertFloat(v, ct);
  }
  /// Stores a compute-type value converted to the element type.
  void storeF(Value v, Value memref, ValueRange indices) const {
    Type elementType = cast<MemRefType>(memref.getType()).getElementType();
    memref::StoreOp::create(b, loc, convertFloat(v, elementType), memref,
                            indices);
  }
  /// Loads an integer element as an index.
  Value loadI(Value memref, ValueRange indices) const {
    Value v = memref::LoadOp::create(b, loc, memref, indices);
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
  }
  /// Stores an index as the integer element type.
  void storeI(Value v, Value memref, ValueRange indices) const {
    Type elementType = cast<MemRefType>(memref.getType()).getElementType();
    Value cast = arith::IndexCastOp::create(b, loc, elementType, v);
    memref::StoreOp::create(b, loc, cast, memref, indices);
  }
  Value convertFloat(Value v, Type to) const {
    unsigned from = v.getType().getIntOrFloatBitWidth();
    unsigned width = to.getIntOrFloatBitWidth();
    if (v.getType() == to)
      return v;
    if (from < width || (from == width &&
                         isa<Float16Type>(to) != isa<Float16Type>(v.getType())))
      return arith::ExtFOp::create(b, loc, to, v);
    return arith::TruncFOp::create(b, loc, to, v);
  }
  /// The size of dimension `d` of a memref, a constant when static.
  Value dim(Value memref, int64_t d) const {
    auto type = cast<MemRefType>(memref.getType());
    if (!type.isDynamicDim(d))
      return idx(type.getDimSize(d));
    return memref::DimOp::create(b, loc, memref, d);
  }

  /// `for (iv = lb; iv < ub; iv += step) body(iv)`.
  void loop(Value lb, Value ub, Value step,
            function_ref<void(Value)> body) const {
    scf::ForOp::create(b, loc, lb, ub, step, ValueRange{},
                       [&](OpBuilder &, Location, Value iv, ValueRange) {
                         body(iv);
                         scf::YieldOp::create(b, loc);
                       });
  }
  /// A loop carrying `inits`; `body` returns the next values.
  SmallVector<Value>
  loop(Value lb, Value ub, Value step, ValueRange inits,
       function_ref<SmallVector<Value>(Value, ValueRange)> body) const {
    auto op = scf::ForOp::create(
        b, loc, lb, ub, step, inits,
        [&](OpBuilder &, Location, Value iv, ValueRange args) {
          scf::YieldOp::create(b, loc, body(iv, args));
        });
    return SmallVector<Value>(op.getResults());
  }
  void ifThen(Value cond, function_ref<void()> body) const {
    scf::IfOp::create(b, loc, cond, [&](OpBuilder &, Location) {
      body();
      scf::YieldOp::create(b, loc);
    });
  }

  Value threadId(gpu::Dimension d = gpu::Dimension::x) const {
    return gpu::ThreadIdOp::create(b, loc, d);
  }
  Value blockId(gpu::Dimension d = gpu::Dimension::x) const {
    return gpu::BlockIdOp::create(b, loc, d);
  }
  void barrier() const { gpu::BarrierOp::create(b, loc); }
  /// Whether the data of `mem` is `bytes`-aligned (in a kernel, the same for
  /// every thread). Device allocations are 256-byte aligned, so this only
  /// fails for unusual views.
  Value isAligned(Value mem, int64_t bytes) const {
    Value ptr = memref::ExtractAlignedPointerAsIndexOp::create(b, loc, mem);
    return cmpI(arith::CmpIPredicate::eq, rem(ptr, idx(bytes)), idx(0));
  }
};

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
  /// A copy in host memory of a (small) tensor operand, for host code to
  /// read: a `memref.alloc` marked `moe.host_buffer` (freed by the caller
  /// with memref.dealloc) filled by a `gpu.memcpy`; the host waits for the
  /// stream before it reads it (gpu-async-region).
  mlir::Value hostCopy(mlir::Value tensor) const;
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

/// Calls `fn` on each function under `root` (outside gpu.modules) that
/// launches kernels: host code whose buffers are device memory. Stops at the
/// first failure and returns it.
llvm::LogicalResult forEachLaunchingFunction(
    mlir::Operation *root,
    llvm::function_ref<llvm::LogicalResult(mlir::FunctionOpInterface)> fn);

} // namespace moe::gpu_lowering

#endif // MOE_LIB_CONVERSION_MOETOGPU_KERNELSUPPORT_H
