//===- HostBuffers.cpp - Host buffers of launching functions to the GPU ---===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// moe-host-buffers-to-gpu: after bufferization, the memref.alloc and
// memref.copy that it created in a function that launches kernels become
// gpu.alloc and gpu.memcpy, since every buffer there is device memory.
//
//===----------------------------------------------------------------------===//

#include "KernelSupport.h"
#include "moe/Conversion/MoEToGPU/MoEToGPU.h"
#include "moe/Conversion/Passes.h"

#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "mlir/Interfaces/ViewLikeInterface.h"

namespace moe {
#define GEN_PASS_DEF_MOEHOSTBUFFERSTOGPU
#include "moe/Conversion/Passes.h.inc"
} // namespace moe

using namespace mlir;

namespace {
struct MoEHostBuffersToGPUPass
    : public moe::impl::MoEHostBuffersToGPUBase<MoEHostBuffersToGPUPass> {
  void runOnOperation() override {
    if (failed(moe::gpu_lowering::forEachLaunchingFunction(
            getOperation(),
            [&](FunctionOpInterface func) { return convert(func); })))
      signalPassFailure();
  }

  /// Whether `use` is the host reading or writing the buffer: an element
  /// load or store, the shape operand of memref.reshape (bufferized
  /// tensor.from_elements of a shape), or its dealloc.
  static bool isHostUse(OpOperand &use) {
    Operation *user = use.getOwner();
    if (isa<memref::LoadOp, memref::DeallocOp>(user))
      return true;
    if (auto store = dyn_cast<memref::StoreOp>(user))
      return use.get() == store.getMemRef();
    if (auto reshape = dyn_cast<memref::ReshapeOp>(user))
      return use.get() == reshape.getShape();
    return false;
  }

  /// The buffers and copies of `func`, which launches kernels. A buffer
  /// that only the host reads and writes (a shape for memref.reshape) stays
  /// in host memory, as does one marked moe.host_buffer.
  LogicalResult convert(FunctionOpInterface func) {
    SmallVector<memref::AllocOp> allocs;
    llvm::SmallPtrSet<Value, 8> hostBuffers;
    SmallVector<memref::CopyOp> copies;
    WalkResult result = func->walk([&](Operation *op) {
      if (auto alloc = dyn_cast<memref::AllocOp>(op)) {
        // The first host element access, and whether anything else (a
        // kernel, a copy) uses the buffer.
        OpOperand *hostAccess = nullptr;
        bool deviceUse = false;
        for (OpOperand &use : alloc->getUses()) {
          if (!isHostUse(use))
            deviceUse = true;
          else if (!hostAccess && !isa<memref::DeallocOp>(use.getOwner()))
            hostAccess = &use;
        }
        if (alloc->hasAttr(moe::kHostBufferAttrName) || !deviceUse) {
          hostBuffers.insert(alloc);
          return WalkResult::advance();
        }
        if (hostAccess) {
          hostAccess->getOwner()->emitOpError()
              << "reads or writes on the host a buffer that also is device "
                 "memory (a kernel or a copy uses it); the CUDA target "
                 "cannot run it";
          return WalkResult::interrupt();
        }
        allocs.push_back(alloc);
      } else if (auto copy = dyn_cast<memref::CopyOp>(op)) {
        copies.push_back(copy);
      }
      return WalkResult::advance();
    });
    if (result.wasInterrupted())
      return failure();
    IRRewriter rewriter(func.getContext());
    for (memref::CopyOp copy : copies) {
      if (hostBuffers.contains(copy.getSource()) &&
          hostBuffers.contains(copy.getTarget()))
        continue;
      auto source = cast<MemRefType>(copy.getSource().getType());
      auto target = cast<MemRefType>(copy.getTarget().getType());
      if (!source.getLayout().isIdentity() || !target.getLayout().isIdentity())
        return copy.emitOpError()
               << "copies a strided view of device memory on the host; the "
                  "CUDA target has no kernel for it";
      rewriter.setInsertionPoint(copy);
      rewriter.replaceOpWithNewOp<gpu::MemcpyOp>(
          copy, TypeRange{}, ValueRange{}, copy.getTarget(), copy.getSource());
    }
    for (memref::AllocOp alloc : allocs) {
      if (!alloc.getType().getLayout().isIdentity() ||
          !alloc.getSymbolOperands().empty())
        return alloc.emitOpError()
               << "allocates a buffer with a non-identity layout in a "
                  "function that launches kernels; the CUDA target puts such "
                  "buffers in device memory and cannot";
      rewriter.setInsertionPoint(alloc);
      auto device = gpu::AllocOp::create(
          rewriter, alloc.getLoc(), alloc.getType(), Type(), ValueRange{},
          alloc.getDynamicSizes(), ValueRange{}, /*hostShared=*/false);
      for (Operation *user : llvm::make_early_inc_range(alloc->getUsers())) {
        if (auto dealloc = dyn_cast<memref::DeallocOp>(user)) {
          rewriter.setInsertionPoint(dealloc);
          rewriter.replaceOpWithNewOp<gpu::DeallocOp>(
              dealloc, TypeRange{}, ValueRange{}, device.getMemref());
        }
      }
      rewriter.replaceOp(alloc, device.getMemref());
    }
    return checkHostAccesses(func);
  }

  /// The buffer that `memref` views: through view-like ops (subviews,
  /// reshapes, casts) to the op or argument that made it.
  static Value rootBuffer(Value memref) {
    while (Operation *def = memref.getDefiningOp()) {
      auto view = dyn_cast<ViewLikeOpInterface>(def);
      if (!view)
        break;
      memref = view.getViewSource();
    }
    return memref;
  }

  /// Element accesses on the host of device memory (the function's
  /// arguments and gpu.alloc buffers) would fault at run time: an error
  /// naming the op. Buffers of unknown origin (e.g. loop-carried) pass.
  static LogicalResult checkHostAccesses(FunctionOpInterface func) {
    Block *entry = &func.getFunctionBody().front();
    auto isDevice = [&](Value memref) {
      Value root = rootBuffer(memref);
      if (auto arg = dyn_cast<BlockArgument>(root))
        return arg.getOwner() == entry;
      return isa_and_nonnull<gpu::AllocOp>(root.getDefiningOp());
    };
    WalkResult result = func->walk([&](Operation *op) {
      Value memref;
      if (auto load = dyn_cast<memref::LoadOp>(op))
        memref = load.getMemRef();
      else if (auto store = dyn_cast<memref::StoreOp>(op))
        memref = store.getMemRef();
      else if (auto copy = dyn_cast<memref::CopyOp>(op))
        memref =
            isDevice(copy.getSource()) ? copy.getSource() : copy.getTarget();
      if (!memref || !isDevice(memref))
        return WalkResult::advance();
      op->emitOpError() << "accesses device memory on the host (a function "
                           "argument or a gpu.alloc buffer of a function "
                           "that launches kernels); the CUDA target cannot "
                           "run it";
      return WalkResult::interrupt();
    });
    return failure(result.wasInterrupted());
  }
};
} // namespace
