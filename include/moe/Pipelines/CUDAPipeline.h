//===- CUDAPipeline.h - The CUDA compilation pipeline -----------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PIPELINES_CUDAPIPELINE_H
#define MOE_PIPELINES_CUDAPIPELINE_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

namespace moe {

/// Options of the CUDA pipeline; also the options of `moe-cuda-pipeline`.
struct CUDAPipelineOptions
    : public mlir::PassPipelineOptions<CUDAPipelineOptions> {
  Option<std::string> chip{*this, "chip",
                           llvm::cl::desc("GPU architecture (sm_80, sm_90)"),
                           llvm::cl::init("sm_80")};
  Option<std::string> features{
      *this, "features",
      llvm::cl::desc("PTX features such as +ptx80 (default: the lowest PTX "
                     "version the chip supports)"),
      llvm::cl::init("")};
  Option<unsigned> optLevel{*this, "opt-level",
                            llvm::cl::desc("Optimization level of the NVPTX "
                                           "backend (0-3)"),
                            llvm::cl::init(3)};
  Option<std::string> format{
      *this, "format",
      llvm::cl::desc("What gpu-module-to-binary produces: isa (PTX), bin "
                     "(cubin, needs ptxas) or fatbin"),
      llvm::cl::init("isa")};
  Option<std::string> toolkit{
      *this, "toolkit",
      llvm::cl::desc("CUDA toolkit (libdevice, ptxas); default: $CUDA_HOME, "
                     "else /usr/local/cuda"),
      llvm::cl::init("")};
  Option<bool> lowerHost{
      *this, "lower-host",
      llvm::cl::desc("Also bufferize the host functions and lower them to "
                     "the LLVM dialect (off: stop after the kernels)"),
      llvm::cl::init(true)};
  Option<std::string> runtimeEntry{
      *this, "runtime-entry",
      llvm::cl::desc("The function the moe-mlir runtime calls "
                     "(moe_cuda_run_model): it returns without waiting for "
                     "the GPU, since the runtime waits after copying its "
                     "results (moe-drop-entry-wait; moe-compile sets it)"),
      llvm::cl::init("")};
};

/// Adds to `pm` (anchored on builtin.module) the passes that take a module of
/// tensor-level functions with moe ops to kernels compiled by
/// `gpu-module-to-binary`: moe-expand, moe-fuse-gating, convert-moe-to-gpu,
/// one-shot bufferization of the host functions, nvvm-attach-target,
/// convert-gpu-to-nvvm on the kernels, gpu-to-llvm on the host side, and
/// gpu-module-to-binary (PTX with the default format).
void buildCUDAPipeline(mlir::OpPassManager &pm,
                       const CUDAPipelineOptions &options);

/// Adds to `registry` the LLVM IR translations and the NVVM target
/// interfaces `buildCUDAPipeline` needs to serialize kernels.
void registerCUDAPipelineDependencies(mlir::DialectRegistry &registry);

/// Registers `buildCUDAPipeline` as the `moe-cuda-pipeline` pass pipeline.
void registerCUDAPipeline();

/// Writes the PTX of every PTX (`isa`) object of the `gpu.binary` ops of
/// `module`, each preceded by a comment naming the binary and its target.
/// Fails with an error when there is none.
llvm::LogicalResult printPTX(mlir::ModuleOp module, llvm::raw_ostream &os);

/// Registers the `moe-to-ptx` translation: runs `buildCUDAPipeline` (format
/// isa; options `--ptx-chip`, `--ptx-features`, `--ptx-opt-level`) on a
/// module that has no `gpu.binary` yet and prints the PTX of its kernels.
void registerMoEToPTXTranslation();

} // namespace moe

#endif // MOE_PIPELINES_CUDAPIPELINE_H
