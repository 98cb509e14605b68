//===- CUDAPipeline.cpp - From moe ops to PTX -----------------------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Pipelines/CUDAPipeline.h"
#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Conversion/AffineToStandard/AffineToStandard.h"
#include "mlir/Conversion/ConvertToLLVM/ToLLVMPass.h"
#include "mlir/Conversion/GPUCommon/GPUCommonPass.h"
#include "mlir/Conversion/GPUToNVVM/GPUToNVVMPass.h"
#include "mlir/Conversion/MemRefToLLVM/MemRefToLLVM.h"
#include "mlir/Conversion/NVGPUToNVVM/NVGPUToNVVM.h"
#include "mlir/Conversion/ReconcileUnrealizedCasts/ReconcileUnrealizedCasts.h"
#include "mlir/Conversion/SCFToControlFlow/SCFToControlFlow.h"
#include "mlir/Dialect/Bufferization/Transforms/Passes.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/GPU/IR/GPUDialect.h"
#include "mlir/Dialect/GPU/Transforms/Passes.h"
#include "mlir/Dialect/MemRef/Transforms/Passes.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Target/LLVM/NVVM/Target.h"
#include "mlir/Target/LLVMIR/Dialect/Builtin/BuiltinToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/GPU/GPUToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/LLVMIR/LLVMToLLVMIRTranslation.h"
#include "mlir/Target/LLVMIR/Dialect/NVVM/NVVMToLLVMIRTranslation.h"
#include "mlir/Tools/mlir-translate/Translation.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Process.h"

using namespace mlir;

/// The CUDA toolkit to use: the option, else $CUDA_HOME, else
/// /usr/local/cuda when it exists.
static std::string toolkitPath(const moe::CUDAPipelineOptions &options) {
  if (!options.toolkit.empty())
    return options.toolkit;
  if (std::optional<std::string> home = llvm::sys::Process::GetEnv("CUDA_HOME"))
    return *home;
  if (llvm::sys::fs::is_directory("/usr/local/cuda"))
    return "/usr/local/cuda";
  return "";
}

void moe::buildCUDAPipeline(OpPassManager &pm,
                            const CUDAPipelineOptions &options) {
  // moe ops to kernels and launches.
  pm.addPass(createMoEExpand());
  pm.addPass(createMoEFuseGating());
  pm.addPass(createConvertMoEToGPU());
  pm.addPass(createCanonicalizerPass());
  pm.addPass(createCSEPass());

  // Host functions to buffers; the kernels already are on memrefs.
  if (options.lowerHost) {
    bufferization::OneShotBufferizePassOptions bufferize;
    bufferize.bufferizeFunctionBoundaries = true;
    bufferize.functionBoundaryTypeConversion =
        bufferization::LayoutMapOption::IdentityLayoutMap;
    pm.addPass(bufferization::createOneShotBufferizePass(bufferize));
    pm.addPass(createCanonicalizerPass());
    // What bufferization allocated or copied in host code is device memory.
    pm.addPass(createMoEHostBuffersToGPU());
  }

  // Kernels to NVVM.
  GpuNVVMAttachTargetOptions target;
  target.moduleMatcher = moe::kMoEKernelModuleName.str();
  target.chip = options.chip;
  target.features = options.features;
  target.optLevel = options.optLevel;
  pm.addPass(createGpuNVVMAttachTarget(target));
  pm.addPass(createSCFToControlFlowPass());
  OpPassManager &kernels = pm.nest<gpu::GPUModuleOp>();
  kernels.addPass(createConvertNVGPUToNVVMPass());
  kernels.addPass(createConvertGpuOpsToNVVMOps());
  kernels.addPass(createCanonicalizerPass());
  kernels.addPass(createCSEPass());
  kernels.addPass(createReconcileUnrealizedCastsPass());

  // Host side: allocations, copies and launches become asynchronous on one
  // stream per function, then calls of the mgpu* runtime wrappers.
  if (options.lowerHost) {
    pm.addNestedPass<func::FuncOp>(createGpuAsyncRegionPass());
    if (!options.runtimeEntry.empty()) {
      MoEDropEntryWaitOptions dropWait;
      dropWait.entry = options.runtimeEntry;
      pm.addPass(createMoEDropEntryWait(dropWait));
    }
    pm.addPass(memref::createExpandStridedMetadataPass());
    // The offsets of views with dynamic offsets (slices of an expert's
    // weights in a moe.generic_experts region) are affine.apply.
    pm.addPass(createLowerAffinePass());
    pm.addPass(createGpuToLLVMConversionPass());
    pm.addPass(createFinalizeMemRefToLLVMConversionPass());
    pm.addPass(createConvertToLLVMPass());
    pm.addPass(createReconcileUnrealizedCastsPass());
  }

  GpuModuleToBinaryPassOptions binary;
  binary.toolkitPath = toolkitPath(options);
  binary.compilationTarget = options.format;
  pm.addPass(createGpuModuleToBinaryPass(binary));
}

void moe::registerCUDAPipelineDependencies(DialectRegistry &registry) {
  registerBuiltinDialectTranslation(registry);
  registerGPUDialectTranslation(registry);
  registerLLVMDialectTranslation(registry);
  registerNVVMDialectTranslation(registry);
  NVVM::registerNVVMTargetInterfaceExternalModels(registry);
}

void moe::registerCUDAPipeline() {
  PassPipelineRegistration<CUDAPipelineOptions>(
      "moe-cuda-pipeline",
      "Lower moe ops to GPU kernels, compile them to PTX (or cubin) with the "
      "NVVM target and lower the host code to the LLVM dialect",
      buildCUDAPipeline);
}

LogicalResult moe::printPTX(ModuleOp module, llvm::raw_ostream &os) {
  bool any = false;
  for (auto binary : module.getOps<gpu::BinaryOp>()) {
    for (Attribute attr : binary.getObjects()) {
      auto object = dyn_cast<gpu::ObjectAttr>(attr);
      if (!object || object.getFormat() != gpu::CompilationTarget::Assembly)
        continue;
      any = true;
      os << "// gpu.binary @" << binary.getSymName() << " "
         << object.getTarget() << "\n";
      os << object.getObject().getValue();
      if (!object.getObject().getValue().ends_with("\n"))
        os << "\n";
    }
  }
  if (!any)
    return emitError(module.getLoc())
           << "no PTX in the module: no gpu.binary with an isa object";
  return success();
}

void moe::registerMoEToPTXTranslation() {
  static llvm::cl::opt<std::string> chip(
      "ptx-chip", llvm::cl::desc("--moe-to-ptx: GPU architecture"),
      llvm::cl::init("sm_80"));
  static llvm::cl::opt<std::string> features(
      "ptx-features",
      llvm::cl::desc("--moe-to-ptx: PTX features (default: the chip's "
                     "lowest PTX version)"),
      llvm::cl::init(""));
  static llvm::cl::opt<unsigned> optLevel(
      "ptx-opt-level", llvm::cl::desc("--moe-to-ptx: NVPTX optimization level"),
      llvm::cl::init(3));
  TranslateFromMLIRRegistration registration(
      "moe-to-ptx",
      "print the PTX of the kernels of a module (running the CUDA pipeline "
      "first when it has no gpu.binary)",
      [](Operation *op, llvm::raw_ostream &output) -> LogicalResult {
        auto module = dyn_cast<ModuleOp>(op);
        if (!module)
          return op->emitError("expected a builtin.module");
        if (module.getOps<gpu::BinaryOp>().empty()) {
          CUDAPipelineOptions options;
          options.chip = chip;
          options.features = features;
          options.optLevel = optLevel;
          options.format = "isa";
          PassManager pm(module->getName());
          buildCUDAPipeline(pm, options);
          if (failed(pm.run(module)))
            return failure();
        }
        return printPTX(module, output);
      },
      [](DialectRegistry &registry) {
        registerAllDialects(registry);
        registerAllExtensions(registry);
        registry.insert<moe::MoEDialect>();
        registerCUDAPipelineDependencies(registry);
      });
}
