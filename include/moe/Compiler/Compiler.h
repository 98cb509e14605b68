//===- Compiler.h - The moe-compile ahead-of-time driver --------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// The library behind `moe-compile`: parses a model, outlines its weights,
// lowers it to the LLVM dialect, adds the glue of docs/CompiledModelABI.md and
// writes the requested artifact (MLIR, LLVM IR, object, shared library or
// executable) together with its weights file and C header.
//
// Errors are reported as MLIR diagnostics on the module's context: with the
// location of the offending IR where there is one, with an unknown location
// for everything else (files, linking).
//
//===----------------------------------------------------------------------===//

#ifndef MOE_COMPILER_COMPILER_H
#define MOE_COMPILER_COMPILER_H

#include "moe/Support/LLVM.h"
#include "moe/Target/ONNX/ImportONNX.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <optional>
#include <string>

namespace llvm {
class SourceMgr;
} // namespace llvm

namespace mlir {
class DialectRegistry;
class MLIRContext;
} // namespace mlir

namespace moe {

/// What `compile` writes.
enum class EmitKind {
  /// The lowered module in the LLVM dialect, glue included (`.mlir`).
  MLIR,
  /// LLVM IR text (`.ll`), before LLVM's optimizations.
  LLVMIR,
  /// A relocatable object file (`.o`), optimized at O3 for the target CPU.
  Object,
  /// A shared library (`.so`) following the compiled-model ABI.
  Library,
  /// A standalone executable: the object linked with the runtime.
  Executable,
  /// The PTX of the GPU kernels (`.ptx`); `--target=cuda` only.
  PTX,
  /// The expert placement plan (`.plan.json`, docs/ExpertCache.md); the
  /// only output of a plan over several devices.
  Plan,
};

/// Parses `--emit=` spellings ("mlir", "llvm", "obj", "lib", "exe", "ptx",
/// "plan").
std::optional<EmitKind> parseEmitKind(StringRef name);
/// The `--emit=` spelling of `kind`.
StringRef stringifyEmitKind(EmitKind kind);

struct CompileOptions {
  EmitKind emit = EmitKind::Library;
  /// "cpu", or "cuda": the moe ops become GPU kernels (docs/CUDA.md), the
  /// library links the CUDA device of the runtime.
  std::string target = "cpu";
  /// With target "cuda": the GPU architecture, "sm_80" or "sm_90".
  std::string gpuArch = "sm_80";
  /// The entry function; empty means the single public `func.func`.
  std::string entry;
  /// The CPU to generate code for: "native" or an LLVM CPU name.
  std::string cpu = "native";
  /// The main output. "-" writes `--emit=mlir|llvm` to stdout and no side
  /// files.
  std::string outputPath;
  /// Constant tensors of the entry function larger than this many bytes are
  /// outlined into the weights file.
  uint64_t weightThresholdBytes = 64;
  /// The compiler driver used to link (`clang`); empty means the one found
  /// when moe-mlir was built, or $MOE_COMPILE_CC.
  std::string linkerDriver;
  /// The runtime static library for `--emit=exe`; empty means the one built
  /// with moe-mlir, or $MOE_RUNTIME_LIB.
  std::string runtimeLibrary;
  /// The CUDA device library (MoERuntimeCUDA) for `--target=cuda
  /// --emit=lib`; empty means the one built with moe-mlir, or
  /// $MOE_RUNTIME_CUDA_LIB.
  std::string cudaRuntimeLibrary;
  /// Bytes of fast memory for expert weights (docs/ExpertCache.md); -1 keeps
  /// every expert resident.
  int64_t expertBudget = -1;
  /// Or, when not negative, this percentage of all expert bytes.
  double expertBudgetPercent = -1;
  /// A routing profile (`moe-run --profile`) for the placement plan.
  std::string placementProfile;
  /// Devices to spread each layer's experts over (expert parallelism, the
  /// budget per device); more than one only with EmitKind::Plan.
  int64_t devices = 1;
  /// How many layers ahead pre-gating predicts experts (0: no prefetch).
  int64_t prefetchDepth = 1;
  /// Report every layer's routing to the runtime (`moe-run --profile`).
  bool instrumentRouting = false;
  /// Options of the CPU lowering (`moe-cpu-pipeline`'s, as `key=value`
  /// pairs separated by spaces), target "cpu" only; `emit-c-interface` and
  /// `generic-alloc` are the library's own and stay fixed.
  std::string cpuPipeline;
  /// Where `-v` progress goes; null means no progress.
  llvm::raw_ostream *progress = nullptr;
};

/// Checks CompileOptions::cpuPipeline: none, or options that parse as
/// `moe-cpu-pipeline` options with `target` "cpu"; reports at `loc`.
mlir::LogicalResult checkCPUPipelineOptions(llvm::StringRef options,
                                            llvm::StringRef target,
                                            mlir::Location loc);

/// An expert budget: bytes, or a percentage of all expert bytes.
struct ExpertBudget {
  int64_t bytes = -1;
  double percent = -1;
};
/// Parses "123", "512K", "64M", "2G" (powers of 1024) or "25%", as the
/// runtime's moe_parse_expert_budget does (it does the parsing).
std::optional<ExpertBudget> parseExpertBudget(StringRef text);

/// Registers the dialects and translations `compile` may meet in its input.
void registerCompilerDialects(mlir::DialectRegistry &registry);

/// Parses the model at `inputPath` ("-" for stdin) into `context`, adding the
/// file to `sourceMgr`; a ".onnx" file goes through the ONNX importer
/// (docs/ONNXImport.md) with `onnxOptions`. Parse errors are reported with
/// their file:line:col location.
OwningOpRef<ModuleOp> parseModelFile(StringRef inputPath,
                                     mlir::MLIRContext &context,
                                     llvm::SourceMgr &sourceMgr,
                                     const ImportONNXOptions &onnxOptions = {});

/// The files `compile` writes next to `mainOutput` for `kind`: the weights
/// file and, for libraries and objects, the C header. Empty when the main
/// output is "-".
struct SideOutputs {
  std::string weightsPath;
  std::string headerPath;
};
SideOutputs getSideOutputs(StringRef mainOutput, EmitKind kind);

/// The default main output for `inputPath` and `kind` ("m.mlir" gives
/// "m.so", "m.o", "m.ll", "m.llvm.mlir", "m.ptx" or "m").
std::string getDefaultOutputPath(StringRef inputPath, EmitKind kind);

/// Checks that `path` can be written (it is no directory and a file can be
/// created beside it) without writing it, as `compile` does before any work;
/// lets a tool fail before it parses its input.
LogicalResult checkOutputPath(StringRef path, Location loc);

/// Compiles `module` in place and writes the outputs. Either every output is
/// written or none is.
LogicalResult compile(ModuleOp module, const CompileOptions &options);

} // namespace moe

#endif // MOE_COMPILER_COMPILER_H
