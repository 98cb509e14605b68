//===- KernelSupport.cpp - Kernels and launches of convert-moe-to-gpu -----===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "KernelSupport.h"
#include "moe/Conversion/MoEToGPU/MoEToGPU.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinOps.h"

using namespace mlir;
using namespace moe;
using namespace moe::gpu_lowering;

MemRefType gpu_lowering::bufferType(Type tensor) {
  auto type = cast<RankedTensorType>(tensor);
  return MemRefType::get(type.getShape(), type.getElementType());
}

MemRefType gpu_lowering::stridedBufferType(Type tensor) {
  auto type = cast<RankedTensorType>(tensor);
  SmallVector<int64_t> strides(type.getRank(), ShapedType::kDynamic);
  auto layout =
      StridedLayoutAttr::get(type.getContext(), ShapedType::kDynamic, strides);
  return MemRefType::get(type.getShape(), type.getElementType(), layout);
}

gpu::GPUModuleOp gpu_lowering::getKernelModule(RewriterBase &rewriter,
                                               Operation *op) {
  auto module = op->getParentOfType<ModuleOp>();
  if (auto existing =
          module.lookupSymbol<gpu::GPUModuleOp>(kMoEKernelModuleName))
    return existing;
  if (!module->hasAttr(gpu::GPUDialect::getContainerModuleAttrName()))
    rewriter.modifyOpInPlace(module, [&] {
      module->setAttr(gpu::GPUDialect::getContainerModuleAttrName(),
                      rewriter.getUnitAttr());
    });
  OpBuilder::InsertionGuard guard(rewriter);
  rewriter.setInsertionPointToEnd(module.getBody());
  return gpu::GPUModuleOp::create(rewriter, module.getLoc(),
                                  kMoEKernelModuleName);
}

Kernel gpu_lowering::createKernel(RewriterBase &rewriter, Operation *op,
                                  StringRef base, TypeRange argTypes,
                                  TypeRange workgroupTypes, int64_t blockX,
                                  int64_t blockY) {
  gpu::GPUModuleOp module = getKernelModule(rewriter, op);
  std::string name = base.str();
  for (unsigned i = 0; module.lookupSymbol(name); ++i)
    name = (base + "_" + Twine(i)).str();
  rewriter.setInsertionPointToEnd(module.getBody());
  auto func = gpu::GPUFuncOp::create(
      rewriter, op->getLoc(), name,
      rewriter.getFunctionType(argTypes, TypeRange{}), workgroupTypes);
  func->setAttr(gpu::GPUDialect::getKernelFuncAttrName(),
                rewriter.getUnitAttr());
  func.setKnownBlockSizeAttr(
      rewriter.getDenseI32ArrayAttr({int32_t(blockX), int32_t(blockY), 1}));
  Block &entry = func.getBody().front();
  rewriter.setInsertionPointToStart(&entry);
  gpu::ReturnOp::create(rewriter, op->getLoc());
  rewriter.setInsertionPointToStart(&entry);
  // Every workgroup buffer 16-byte aligned: kernels read and write them as
  // 16-byte vectors (tiles), and LLVM combines adjacent scalar accesses into
  // vector ones too (it did, on a [threads x 4] f32 buffer of the routing
  // kernel, which ptxas then placed 4-byte aligned: a misaligned address on
  // an H200).
  for (unsigned i = 0, e = workgroupTypes.size(); i < e; ++i)
    func.setWorkgroupAttributionAttr(i, LLVM::LLVMDialect::getAlignAttrName(),
                                     rewriter.getI64IntegerAttr(16));
  Kernel kernel{func, {}, {}};
  for (unsigned i = 0, e = argTypes.size(); i < e; ++i)
    kernel.args.push_back(entry.getArgument(i));
  for (BlockArgument arg : func.getWorkgroupAttributions())
    kernel.workgroup.push_back(arg);
  return kernel;
}

Value Host::buffer(Value tensor) const {
  if (!tensor)
    return {};
  // Read-only: kernels only read their operands' buffers (results are new
  // device buffers), so bufferization must not copy a function argument or
  // a constant before a kernel reads it. Such a copy would be a memref.alloc
  // and memref.copy on the host, which cannot read device memory.
  return bufferization::ToBufferOp::create(
      rewriter, loc, bufferType(tensor.getType()), tensor, /*readOnly=*/true);
}

Value Host::view(Value tensor) const {
  return bufferization::ToBufferOp::create(
      rewriter, loc, stridedBufferType(tensor.getType()), tensor,
      /*readOnly=*/true);
}

Value Host::hostCopy(Value tensor) const {
  auto type = cast<RankedTensorType>(tensor.getType());
  SmallVector<Value> sizes;
  for (int64_t d = 0, e = type.getRank(); d < e; ++d)
    if (type.isDynamicDim(d))
      sizes.push_back(tensor::DimOp::create(rewriter, loc, tensor, d));
  auto alloc = memref::AllocOp::create(rewriter, loc, bufferType(type), sizes);
  alloc->setAttr(kHostBufferAttrName, rewriter.getUnitAttr());
  gpu::MemcpyOp::create(rewriter, loc, Type(), ValueRange{}, alloc,
                        buffer(tensor));
  return alloc;
}

Value Host::alloc(MemRefType type, ValueRange dynamicSizes) const {
  return gpu::AllocOp::create(rewriter, loc, type, Type(), ValueRange{},
                              dynamicSizes, ValueRange{}, false)
      .getMemref();
}

void Host::dealloc(Value memref) const {
  gpu::DeallocOp::create(rewriter, loc, Type(), ValueRange{}, memref);
}

Value Host::rowsInto(RankedTensorType resultType, Value numRows,
                     Value dest) const {
  SmallVector<Value> dynamicSizes;
  if (resultType.isDynamicDim(0))
    dynamicSizes.push_back(numRows);
  Value out = alloc(bufferType(resultType), dynamicSizes);
  if (!dest.getDefiningOp<tensor::EmptyOp>())
    gpu::MemcpyOp::create(rewriter, loc, Type(), ValueRange{}, out,
                          buffer(dest));
  return out;
}

Value Host::tensor(Type type, Value memref) const {
  return bufferization::ToTensorOp::create(rewriter, loc, type, memref,
                                           /*restrict=*/true,
                                           /*writable=*/true);
}

void Host::launch(const Kernel &kernel, Value gridX, Value gridY,
                  int64_t blockX, int64_t blockY, ValueRange args,
                  Value gridZ) const {
  Value one = arith::ConstantIndexOp::create(rewriter, loc, 1);
  gpu::KernelDim3 grid{gridX, gridY, gridZ ? gridZ : one};
  gpu::KernelDim3 block{arith::ConstantIndexOp::create(rewriter, loc, blockX),
                        arith::ConstantIndexOp::create(rewriter, loc, blockY),
                        one};
  gpu::LaunchFuncOp::create(rewriter, loc, kernel.func, grid, block, Value(),
                            args);
}

LogicalResult gpu_lowering::forEachLaunchingFunction(
    Operation *root, function_ref<LogicalResult(FunctionOpInterface)> fn) {
  WalkResult result = root->walk<WalkOrder::PreOrder>([&](Operation *op) {
    if (isa<gpu::GPUModuleOp>(op))
      return WalkResult::skip();
    auto func = dyn_cast<FunctionOpInterface>(op);
    if (!func)
      return WalkResult::advance();
    bool launches = false;
    func->walk([&](gpu::LaunchFuncOp) { launches = true; });
    if (launches && failed(fn(func)))
      return WalkResult::interrupt();
    return WalkResult::skip();
  });
  return failure(result.wasInterrupted());
}
