//===- CodeGen.cpp - LLVM IR, object files and linking --------------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "CompilerInternal.h"
#include "moe/Compiler/ToolPaths.h"

#include "mlir/ExecutionEngine/OptUtils.h"
#include "mlir/Target/LLVMIR/Export.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/IR/LegacyPassManager.h"
#include "llvm/IR/Module.h"
#include "llvm/MC/MCSubtargetInfo.h"
#include "llvm/MC/TargetRegistry.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/Program.h"
#include "llvm/Support/TargetSelect.h"
#include "llvm/Target/TargetMachine.h"
#include "llvm/Target/TargetOptions.h"
#include "llvm/TargetParser/Host.h"
#include "llvm/TargetParser/SubtargetFeature.h"

using namespace mlir;
using namespace moe;
using namespace moe::compiler;

FailureOr<std::unique_ptr<llvm::TargetMachine>>
compiler::createTargetMachine(StringRef cpu, Location loc) {
  llvm::InitializeNativeTarget();
  llvm::InitializeNativeTargetAsmPrinter();

  llvm::Triple triple(llvm::sys::getProcessTriple());
  std::string error;
  const llvm::Target *target =
      llvm::TargetRegistry::lookupTarget(triple, error);
  if (!target)
    return emitError(loc) << "no LLVM target for '" << triple.str()
                          << "': " << error;

  std::string cpuName = cpu.str();
  llvm::SubtargetFeatures features;
  if (cpu == "native") {
    cpuName = llvm::sys::getHostCPUName().str();
    for (const auto &feature : llvm::sys::getHostCPUFeatures())
      features.AddFeature(feature.first(), feature.second);
  }
  std::unique_ptr<llvm::TargetMachine> machine(target->createTargetMachine(
      triple, cpuName, features.getString(), llvm::TargetOptions(),
      llvm::Reloc::PIC_, std::nullopt, llvm::CodeGenOptLevel::Aggressive));
  if (!machine)
    return emitError(loc) << "cannot create a target machine for '"
                          << triple.str() << "'";
  if (!machine->getMCSubtargetInfo()->isCPUStringValid(cpuName))
    return emitError(loc) << "unknown CPU '" << cpuName << "' for target '"
                          << triple.str() << "' (from --mcpu)";
  return machine;
}

std::unique_ptr<llvm::Module>
compiler::translateToLLVMIR(ModuleOp module, llvm::LLVMContext &llvmContext,
                            llvm::TargetMachine &targetMachine) {
  std::unique_ptr<llvm::Module> llvmModule =
      translateModuleToLLVMIR(module, llvmContext, "moe_model");
  if (!llvmModule)
    return nullptr;
  llvmModule->setTargetTriple(targetMachine.getTargetTriple());
  llvmModule->setDataLayout(targetMachine.createDataLayout());
  return llvmModule;
}

LogicalResult compiler::emitObjectFile(llvm::Module &llvmModule,
                                       llvm::TargetMachine &targetMachine,
                                       StringRef path, Location loc) {
  auto optimize = makeOptimizingTransformer(/*optLevel=*/3, /*sizeLevel=*/0,
                                            &targetMachine);
  if (llvm::Error error = optimize(&llvmModule))
    return emitError(loc) << "LLVM optimization failed: "
                          << llvm::toString(std::move(error));

  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return emitError(loc) << "cannot write '" << path << "': " << ec.message();
  llvm::legacy::PassManager codegen;
  if (targetMachine.addPassesToEmitFile(codegen, os, nullptr,
                                        llvm::CodeGenFileType::ObjectFile))
    return emitError(loc) << "the target cannot emit object files";
  codegen.run(llvmModule);
  os.close();
  if (os.has_error())
    return emitError(loc) << "cannot write '" << path
                          << "': " << os.error().message();
  return success();
}

/// `value` if non-empty, else $`envName` if set, else `fallback`.
static std::string pickPath(StringRef value, const char *envName,
                            StringRef fallback) {
  if (!value.empty())
    return value.str();
  if (std::optional<std::string> env = llvm::sys::Process::GetEnv(envName))
    if (!env->empty())
      return *env;
  return fallback.str();
}

/// The library that pickPath(`value`, `envName`, `fallback`) names, or an
/// error if it does not exist: `what` it is, the CMake `target` that builds
/// it and `how` to name another.
static FailureOr<std::string> findLibrary(StringRef value, const char *envName,
                                          StringRef fallback, StringRef what,
                                          StringRef target, StringRef how,
                                          Location loc) {
  std::string path = pickPath(value, envName, fallback);
  if (llvm::sys::fs::exists(path))
    return path;
  return emitError(loc) << "the " << what << " '" << path
                        << "' does not exist; build the " << target
                        << " target or " << how;
}

/// Quotes `arg` for a POSIX shell when it needs it.
static std::string shellQuote(StringRef arg) {
  if (!arg.empty() && llvm::all_of(arg, [](char c) {
        return llvm::isAlnum(c) || StringRef("-_./=,+:@").contains(c);
      }))
    return arg.str();
  std::string quoted = "'";
  for (char c : arg) {
    if (c == '\'')
      quoted += "'\\''";
    else
      quoted.push_back(c);
  }
  return quoted + "'";
}

LogicalResult compiler::linkObject(StringRef objectPath, StringRef outputPath,
                                   EmitKind kind, const CompileOptions &options,
                                   Location loc) {
  std::string driver =
      pickPath(options.linkerDriver, "MOE_COMPILE_CC", MOE_COMPILE_CLANG_PATH);
  std::string openMPDir = MOE_COMPILE_OPENMP_LIBRARY_DIR;
  SmallVector<std::string> args = {driver};
  if (kind == EmitKind::Library)
    args.push_back("-shared");
  args.append({"-o", outputPath.str(), objectPath.str()});
  if (kind == EmitKind::Executable) {
    FailureOr<std::string> runtime = findLibrary(
        options.runtimeLibrary, "MOE_RUNTIME_LIB",
        MOE_COMPILE_RUNTIME_LIBRARY_PATH, "runtime library", "MoERuntime",
        "pass --runtime-lib (or set MOE_RUNTIME_LIB)", loc);
    if (failed(runtime))
      return failure();
    args.append({*runtime, "-rdynamic"});
  }
  if (options.target == "cuda") {
    FailureOr<std::string> cudaRuntime = findLibrary(
        options.cudaRuntimeLibrary, "MOE_RUNTIME_CUDA_LIB",
        MOE_COMPILE_RUNTIME_CUDA_LIBRARY_PATH, "CUDA runtime library",
        "MoERuntimeCUDA", "set MOE_RUNTIME_CUDA_LIB", loc);
    if (failed(cudaRuntime))
      return failure();
    // The mgpu* functions stay private to the library; it loads libcuda
    // itself at run time.
    args.append({*cudaRuntime, "-Wl,--exclude-libs,ALL", "-lstdc++", "-ldl"});
  } else {
    // The heap functions of the compiled code (the pipeline's generic-alloc;
    // runtime/support/ModelAlloc.c), hidden inside the library.
    FailureOr<std::string> support =
        findLibrary("", "MOE_MODEL_SUPPORT_LIB", MOE_COMPILE_MODEL_SUPPORT_PATH,
                    "model support library", "MoEModelSupport",
                    "set MOE_MODEL_SUPPORT_LIB", loc);
    if (failed(support))
      return failure();
    args.push_back(*support);
  }
  // libomp runs the parallel loops; MLIR's C runner utilities provide
  // memrefCopy, which strided memref copies lower to. Both are recorded as
  // dependencies only when the object uses them: the runner utilities pull in
  // libMLIR and libLLVM, which a machine that only runs models lacks (a CUDA
  // model, whose host code calls neither, needs no LLVM installation).
  args.append({"-L" + openMPDir, "-Wl,--as-needed", "-lomp",
               "-lmlir_c_runner_utils", "-Wl,--no-as-needed",
               "-Wl,-rpath," + openMPDir, "-lm"});
  if (kind == EmitKind::Executable) {
    args.append({"-lstdc++", "-ldl", "-lpthread"});
    // An instrumented runtime library needs the sanitizer runtimes.
    if (MOE_COMPILE_SANITIZERS)
      args.push_back("-fsanitize=address,undefined");
  }

  std::string command;
  llvm::raw_string_ostream commandStream(command);
  llvm::interleave(
      args, commandStream,
      [&](const std::string &arg) { commandStream << shellQuote(arg); }, " ");

  llvm::ErrorOr<std::string> program = llvm::sys::findProgramByName(driver);
  if (!program)
    return emitError(loc) << "cannot find the linker driver '" << driver
                          << "' (set it with --linker or MOE_COMPILE_CC); "
                             "the link command was: "
                          << command;

  SmallString<128> logPath;
  if (std::error_code ec = llvm::sys::fs::createTemporaryFile(
          "moe-compile-link", "log", logPath))
    return emitError(loc) << "cannot create a temporary file: " << ec.message();
  llvm::FileRemover logRemover(logPath);
  SmallVector<StringRef> argRefs(args.begin(), args.end());
  std::optional<StringRef> redirects[] = {std::nullopt, StringRef(logPath),
                                          StringRef(logPath)};
  std::string errorMessage;
  int status = llvm::sys::ExecuteAndWait(*program, argRefs, std::nullopt,
                                         redirects, 0, 0, &errorMessage);
  if (status == 0)
    return success();
  std::string output;
  if (auto buffer = llvm::MemoryBuffer::getFile(logPath))
    output = StringRef((*buffer)->getBuffer()).rtrim().str();
  InFlightDiagnostic diag = emitError(loc) << "linking failed";
  if (status < 0)
    diag << " (" << errorMessage << ")";
  else
    diag << " with exit code " << status;
  diag << "; the command was:\n  " << command;
  if (!output.empty())
    diag << "\n" << output;
  return failure();
}
