//===- moe-compile.cpp - The moe-mlir ahead-of-time compiler --------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// A thin main over moe::compile; see docs/Tools.md and
// docs/CompiledModelABI.md.
//
//===----------------------------------------------------------------------===//

#include "moe/Compiler/Compiler.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>

using namespace mlir;

namespace cl = llvm::cl;

static cl::OptionCategory category("moe-compile options");

static cl::opt<std::string> inputPath(cl::Positional, cl::desc("INPUT.mlir"),
                                      cl::Required, cl::cat(category));
static cl::opt<std::string>
    outputPath("o", cl::desc("Output file (default: from the input name)"),
               cl::value_desc("OUT"), cl::cat(category));
static cl::opt<std::string>
    emit("emit",
         cl::desc("What to write: mlir, llvm, obj, lib, exe, ptx (the "
                  "kernels of --target=cuda) or plan (the expert placement "
                  "plan, JSON)"),
         cl::value_desc("kind"), cl::init("lib"), cl::cat(category));
static cl::opt<std::string>
    target("target", cl::desc("Target: cpu or cuda (docs/CUDA.md)"),
           cl::init("cpu"), cl::cat(category));
static cl::opt<std::string>
    gpuArch("gpu-arch",
            cl::desc("GPU architecture for --target=cuda: sm_80 (default) or "
                     "sm_90"),
            cl::value_desc("sm_XX"), cl::init("sm_80"), cl::cat(category));
static cl::opt<std::string>
    entry("entry", cl::desc("Entry function (default: the single public one)"),
          cl::value_desc("NAME"), cl::cat(category));
static cl::opt<std::string>
    mcpu("mcpu", cl::desc("CPU to generate code for (default: native)"),
         cl::value_desc("cpu"), cl::init("native"), cl::cat(category));
static cl::opt<uint64_t> weightThreshold(
    "weight-threshold",
    cl::desc("Outline constant tensors larger than this many bytes"),
    cl::init(64), cl::cat(category));
static cl::opt<std::string> linker(
    "linker",
    cl::desc("Compiler driver used to link (default: $MOE_COMPILE_CC, else "
             "the clang found at build time)"),
    cl::value_desc("path"), cl::cat(category));
static cl::opt<std::string> runtimeLib(
    "runtime-lib",
    cl::desc("Runtime library for --emit=exe (default: $MOE_RUNTIME_LIB, else "
             "the one built with moe-mlir)"),
    cl::value_desc("path"), cl::cat(category));
static cl::opt<std::string> expertBudget(
    "expert-budget",
    cl::desc("Fast memory for expert weights: BYTES (suffixes K, M, G: "
             "powers of 1024) or P% of all expert bytes; experts that do "
             "not fit are read from the weights file into an expert cache "
             "(docs/ExpertCache.md). Default: all resident"),
    cl::value_desc("size"), cl::cat(category));
static cl::opt<std::string> placementProfile(
    "placement-profile",
    cl::desc("Routing profile (from moe-run --profile) that chooses the "
             "experts kept resident under --expert-budget"),
    cl::value_desc("file.json"), cl::cat(category));
static cl::opt<int64_t> devices(
    "devices",
    cl::desc("Spread each layer's experts over this many devices (expert "
             "parallelism; --expert-budget is then per device). More than 1 "
             "only with --emit=plan: moe-mlir runs a layer on one device"),
    cl::init(1), cl::cat(category));
static cl::opt<int64_t> prefetchDepth(
    "prefetch-depth",
    cl::desc("Under --expert-budget, predict the experts of this many later "
             "layers with their routers (pre-gating) and prefetch them; 0 "
             "disables it (default 1)"),
    cl::init(1), cl::cat(category));
static cl::opt<std::string> cpuPipeline(
    "cpu-pipeline",
    cl::desc("Options of the CPU lowering (moe-cpu-pipeline's, space "
             "separated), e.g. 'single-pass-rows=0 prefetch-distance=64' "
             "(docs/CLI.md)"),
    cl::value_desc("options"), cl::cat(category));
static cl::opt<bool> instrumentRouting(
    "instrument-routing",
    cl::desc("Report every layer's routing to the runtime, for moe-run "
             "--profile"),
    cl::init(false), cl::cat(category));
static cl::opt<bool> verbose("v", cl::desc("Print each stage and its time"),
                             cl::cat(category));
static cl::opt<bool> remarks(
    "remarks",
    cl::desc("ONNX input: report which MoE blocks were raised to moe.layer, "
             "and why others were not"),
    cl::cat(category));

/// Prints diagnostics without a location as "moe-compile: error: ...";
/// located ones go to the source manager handler (file:line:col).
static LogicalResult printUnlocated(Diagnostic &diag) {
  if (!isa<UnknownLoc>(diag.getLocation()))
    return failure();
  llvm::raw_ostream &os = llvm::errs();
  os << "moe-compile: ";
  switch (diag.getSeverity()) {
  case DiagnosticSeverity::Error:
    os << "error: ";
    break;
  case DiagnosticSeverity::Warning:
    os << "warning: ";
    break;
  case DiagnosticSeverity::Note:
    os << "note: ";
    break;
  case DiagnosticSeverity::Remark:
    os << "remark: ";
    break;
  }
  os << diag << "\n";
  for (Diagnostic &note : diag.getNotes())
    os << "moe-compile: note: " << note << "\n";
  return success();
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  cl::HideUnrelatedOptions(category);
  cl::ParseCommandLineOptions(argc, argv,
                              "moe-mlir ahead-of-time model compiler\n");

  DialectRegistry registry;
  moe::registerCompilerDialects(registry);
  MLIRContext context(registry);
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler locatedHandler(sourceMgr, &context);
  context.getDiagEngine().registerHandler(printUnlocated);

  moe::CompileOptions options;
  std::optional<moe::EmitKind> kind = moe::parseEmitKind(emit);
  if (!kind) {
    llvm::errs() << "moe-compile: error: unknown --emit=" << emit
                 << "; expected mlir, llvm, obj, lib, exe, ptx or plan\n";
    return 1;
  }
  if (gpuArch.getNumOccurrences() && target != "cuda") {
    llvm::errs() << "moe-compile: error: --gpu-arch needs --target=cuda\n";
    return 1;
  }
  if (!expertBudget.empty()) {
    std::optional<moe::ExpertBudget> budget =
        moe::parseExpertBudget(expertBudget);
    if (!budget) {
      llvm::errs() << "moe-compile: error: bad --expert-budget='"
                   << expertBudget
                   << "'; expected bytes (e.g. 512M, 2G) or a percentage "
                      "(e.g. 25%)\n";
      return 1;
    }
    options.expertBudget = budget->bytes;
    options.expertBudgetPercent = budget->percent;
  } else if (prefetchDepth.getNumOccurrences() ||
             (placementProfile.getNumOccurrences() &&
              *kind != moe::EmitKind::Plan)) {
    llvm::errs() << "moe-compile: error: --placement-profile and "
                    "--prefetch-depth need --expert-budget\n";
    return 1;
  }
  // Before the model is parsed (a large one takes a while).
  if (failed(moe::checkCPUPipelineOptions(cpuPipeline, target,
                                          UnknownLoc::get(&context))))
    return 1;
  options.cpuPipeline = cpuPipeline;
  options.devices = devices;
  options.placementProfile = placementProfile;
  options.prefetchDepth = prefetchDepth;
  options.instrumentRouting = instrumentRouting;
  options.emit = *kind;
  options.target = target;
  options.gpuArch = gpuArch;
  options.entry = entry;
  options.cpu = mcpu;
  options.weightThresholdBytes = weightThreshold;
  options.linkerDriver = linker;
  options.runtimeLibrary = runtimeLib;
  options.outputPath = outputPath.empty()
                           ? moe::getDefaultOutputPath(inputPath, *kind)
                           : outputPath.getValue();
  if (verbose)
    options.progress = &llvm::errs();

  // An output that cannot be written fails now, not after parsing a model
  // of hundreds of MB. The side outputs (.weights, .h) go beside it.
  if (options.outputPath != "-" &&
      failed(
          moe::checkOutputPath(options.outputPath, UnknownLoc::get(&context))))
    return 1;

  auto start = std::chrono::steady_clock::now();
  OwningOpRef<ModuleOp> module = moe::parseModelFile(
      inputPath, context, sourceMgr, moe::ImportONNXOptions{remarks});
  if (verbose) {
    std::chrono::duration<double, std::milli> elapsed =
        std::chrono::steady_clock::now() - start;
    llvm::errs() << "moe-compile: parse: "
                 << llvm::format("%.1f", elapsed.count()) << " ms"
                 << (module ? "" : " (failed)") << "\n";
  }
  if (!module || failed(moe::compile(*module, options)))
    return 1;
  if (verbose)
    llvm::errs() << "moe-compile: wrote " << options.outputPath << "\n";
  return 0;
}
