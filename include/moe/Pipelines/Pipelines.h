//===- Pipelines.h - Compilation pipelines of moe-mlir ----------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_PIPELINES_PIPELINES_H
#define MOE_PIPELINES_PIPELINES_H

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassOptions.h"

namespace moe {

/// Options of the CPU pipeline; also the options of `moe-cpu-pipeline`.
struct CPUPipelineOptions
    : public mlir::PassPipelineOptions<CPUPipelineOptions> {
  Option<bool> enableOpenMP{
      *this, "enable-openmp",
      llvm::cl::desc("Run the parallel loops with OpenMP (link libomp)"),
      llvm::cl::init(true)};
  Option<bool> vectorize{
      *this, "vectorize",
      llvm::cl::desc("Tile and vectorize the linalg ops and moe.combine (off: "
                     "plain loops)"),
      llvm::cl::init(true)};
  ListOption<int64_t> parallelTileSizes{
      *this, "parallel-tile-sizes",
      llvm::cl::desc(
          "M,N block of a matmul per parallel task (default 0,256)")};
  Option<int64_t> reductionTileSize{
      *this, "reduction-tile-size",
      llvm::cl::desc("K block of a matmul (0 = untiled)"), llvm::cl::init(256)};
  ListOption<int64_t> registerTileSizes{
      *this, "register-tile-sizes",
      llvm::cl::desc("M,N register tile of a matmul (default 8,32)")};
  Option<int64_t> prefetchDistance{
      *this, "prefetch-distance",
      llvm::cl::desc("K steps ahead that tall register tiles prefetch weight "
                     "panels (0 = never)"),
      llvm::cl::init(32)};
  Option<int64_t> singlePassRows{
      *this, "single-pass-rows",
      llvm::cl::desc(
          "Up to this many rows, a matmul on weights in panels is "
          "one pass of tiles as high as its rows (0 = never, at most 16)"),
      llvm::cl::init(8)};
  Option<int64_t> vectorSize{*this, "vector-size",
                             llvm::cl::desc("Lanes of an f32 vector"),
                             llvm::cl::init(16)};
  Option<int64_t> gateBlockSize{
      *this, "gate-block-size",
      llvm::cl::desc("Tokens per block of the fused router matmul"),
      llvm::cl::init(32)};
  Option<int64_t> expertParallelRows{
      *this, "expert-parallel-rows",
      llvm::cl::desc("Rows per expert on average from which the experts of a "
                     "layer (16 or more) run in parallel, each on one thread "
                     "(0 = never)"),
      llvm::cl::init(8)};
  Option<int64_t> expertColumnBlock{
      *this, "expert-column-block",
      llvm::cl::desc("Columns of an expert matrix per task of the grouped "
                     "expert GEMMs (0 = the experts one after another)"),
      llvm::cl::init(256)};
  Option<bool> genericAlloc{
      *this, "generic-alloc",
      llvm::cl::desc("Heap buffers through _mlir_memref_to_llvm_alloc/free "
                     "(moe-compile links its caching versions) instead of "
                     "malloc/free"),
      llvm::cl::init(false)};
  Option<bool> emitCInterface{
      *this, "emit-c-interface",
      llvm::cl::desc("Give the public functions llvm.emit_c_interface"),
      llvm::cl::init(true)};
};

/// Adds to `pm` (anchored on builtin.module) the passes that take a module of
/// tensor-level functions with moe ops down to the LLVM dialect, ready for
/// `translateModuleToLLVMIR`: moe-expand, moe-fuse-gating,
/// convert-moe-to-linalg, tiling + vectorization, parallel loops (OpenMP),
/// one-shot bufferization with identity-layout function boundaries, buffer
/// deallocation and the conversions to LLVM.
void buildCPUPipeline(mlir::OpPassManager &pm,
                      const CPUPipelineOptions &options);

/// Adds to `registry` the dialects and interface implementations that
/// `buildCPUPipeline` needs (bufferization, tiling, convert-to-llvm) and the
/// LLVM IR translations of its output. A tool that does not register all of
/// MLIR's extensions must call it before creating its context.
void registerCPUPipelineDependencies(mlir::DialectRegistry &registry);

/// Registers `buildCPUPipeline` as the `moe-cpu-pipeline` pass pipeline.
void registerCPUPipeline();

} // namespace moe

#endif // MOE_PIPELINES_PIPELINES_H
