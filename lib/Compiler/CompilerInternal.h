//===- CompilerInternal.h - Pieces of the moe-compile driver ----*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// The stages of `moe::compile`, shared between the files of lib/Compiler.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_LIB_COMPILER_COMPILERINTERNAL_H
#define MOE_LIB_COMPILER_COMPILERINTERNAL_H

#include "moe/Compiler/Compiler.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinAttributeInterfaces.h"
#include "llvm/ADT/SmallVector.h"

#include <memory>
#include <string>

namespace llvm {
class LLVMContext;
class Module;
class TargetMachine;
} // namespace llvm

namespace moe {
namespace compiler {

/// One `input`, `weight` or `output` line of the signature.
struct TensorSpec {
  std::string name;
  /// The ABI spelling of the element type ("f32", "u8", ...).
  std::string dtype;
  /// Extents; ShapedType::kDynamic for `?`.
  SmallVector<int64_t> shape;
};

/// A weight: where it lives in the data section and the constant holding it.
struct WeightSpec {
  TensorSpec tensor;
  uint64_t offset = 0;
  uint64_t bytes = 0;
  ElementsAttr value;
  /// The layer whose expert cache holds slices of it, or -1: then the
  /// runtime passes slot buffers instead of the mapped tensor.
  int64_t cacheLayer = -1;
};

/// The expert cache of one placed layer (a `cache` line).
struct CacheLayerSpec {
  int64_t layer = 0;
  int64_t experts = 0;
  int64_t slots = 0;
  SmallVector<int64_t> pinned;
};

/// The entry point of a compiled model, as docs/CompiledModelABI.md
/// describes it.
struct ModelSignature {
  SmallVector<TensorSpec> inputs;
  SmallVector<WeightSpec> weights;
  SmallVector<TensorSpec> outputs;
  SmallVector<CacheLayerSpec> cacheLayers;
  /// Size of the weights data section (a multiple of 64).
  uint64_t dataBytes = 0;

  /// The signature text, one line per entry, each ending in '\n'.
  std::string str() const;
};

/// The alignment of every weight in the data section, and the header size.
constexpr uint64_t kWeightAlignment = 64;
/// The file alignment of weights in an expert cache, for direct I/O.
constexpr uint64_t kCachedWeightAlignment = 4096;

/// Chooses the entry function: `name` if non-empty, else the single public
/// `func.func` with a body. Reports an error listing the candidates.
FailureOr<func::FuncOp> selectEntry(ModuleOp module, StringRef name);

/// Renames the symbols that would collide with the ABI's own (`main`,
/// `moe_model_run`, ...) and returns the entry's possibly new name.
FailureOr<std::string> renameReservedSymbols(ModuleOp module,
                                             func::FuncOp entry);

/// Checks that every argument and result of `entry` is a ranked tensor of an
/// ABI element type, records them as inputs and outputs, and outlines the
/// constant tensors larger than `thresholdBytes` into trailing arguments
/// recorded as weights; with `outlineMoEOperands`, also every smaller one
/// that a moe op uses (the CUDA target: a constant left in the library is
/// host memory, which a kernel cannot read). Marks all arguments read-only
/// for bufferization.
FailureOr<ModelSignature>
buildSignatureAndOutlineWeights(func::FuncOp entry, uint64_t thresholdBytes,
                                bool outlineMoEOperands = false);

/// Assigns the weights their offsets in the data section, in order: each on
/// a 64-byte boundary, and weights in an expert cache on a 4096-byte file
/// boundary (the data section starts at byte 64) for direct I/O. Sets
/// `dataBytes`.
void layOutWeights(ModelSignature &signature);

/// Runs the placement passes (docs/ExpertCache.md) the options ask for on
/// the module, then realizes each `moe.expert_slots` of `entry`: its weight
/// argument becomes a slot buffer `[?, ...]` of the layer's cache and the
/// signature records the cache. Lays the weights out again. With a
/// `planFile`, only plans (every layer, for `options.devices` devices) and
/// writes the plan there ("-": stdout).
LogicalResult planExpertPlacement(ModuleOp module, func::FuncOp entry,
                                  ModelSignature &signature,
                                  const CompileOptions &options,
                                  StringRef planFile = "");

/// Writes the weights file (header and data section) to `os`.
LogicalResult writeWeightsFile(const ModelSignature &signature,
                               llvm::raw_ostream &os, Location loc);

/// Writes the C header declaring the ABI symbols to `os`.
void writeHeader(const ModelSignature &signature, StringRef guardName,
                 llvm::raw_ostream &os);

/// Lowers `module` to the LLVM dialect (with the CUDA pipeline for target
/// "cuda": kernels as PTX in a `gpu.binary`); the entry gets a C interface.
LogicalResult lowerToLLVMDialect(ModuleOp module, func::FuncOp entry,
                                 const CompileOptions &options);

/// Adds `moe_model_signature` and `moe_model_run` (and, with `withMain`, a
/// `main` calling the runtime's `moe_run_main`) to the lowered module; every
/// other function definition becomes internal. With `cuda`, `moe_model_run`
/// goes through `moe_cuda_run_model` (moe/runtime/cuda.h), which moves the
/// arguments and results between host and device memory, and the optional
/// CUDA symbols of docs/CompiledModelABI.md are added (`moe_model_take_error`,
/// `moe_model_run_device`, `moe_model_device_alloc`, ...).
LogicalResult addABIGlue(ModuleOp module, StringRef entryName,
                         const ModelSignature &signature, bool withMain,
                         bool cuda);

/// Creates the target machine for the host triple and `cpu` ("native" picks
/// the host CPU and its features).
FailureOr<std::unique_ptr<llvm::TargetMachine>>
createTargetMachine(StringRef cpu, Location loc);

/// Translates the lowered module to LLVM IR for `targetMachine`.
std::unique_ptr<llvm::Module>
translateToLLVMIR(ModuleOp module, llvm::LLVMContext &llvmContext,
                  llvm::TargetMachine &targetMachine);

/// Optimizes `llvmModule` at O3 and writes an object file to `path`.
LogicalResult emitObjectFile(llvm::Module &llvmModule,
                             llvm::TargetMachine &targetMachine, StringRef path,
                             Location loc);

/// Links `objectPath` into a shared library or executable at `outputPath`
/// with the clang driver; reports the exact command on failure.
LogicalResult linkObject(StringRef objectPath, StringRef outputPath,
                         EmitKind kind, const CompileOptions &options,
                         Location loc);

} // namespace compiler
} // namespace moe

#endif // MOE_LIB_COMPILER_COMPILERINTERNAL_H
