//===- Compiler.cpp - The moe-compile ahead-of-time driver ----------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Runs the stages of `moe::compile` in order and writes the outputs through
// temporary files that are renamed only once every stage has succeeded.
//
//===----------------------------------------------------------------------===//

#include "CompilerInternal.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"
#include "moe/Pipelines/CUDAPipeline.h"
#include "moe/Pipelines/Pipelines.h"
#include "moe/Target/ONNX/ImportONNX.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Target/LLVMIR/Dialect/All.h"
#include "llvm/ADT/StringSwitch.h"
#include "llvm/IR/LLVMContext.h"
#include "llvm/IR/Module.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FileUtilities.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Target/TargetMachine.h"

#include <chrono>

using namespace mlir;
using namespace moe;
using namespace moe::compiler;

std::optional<EmitKind> moe::parseEmitKind(StringRef name) {
  return llvm::StringSwitch<std::optional<EmitKind>>(name)
      .Case("mlir", EmitKind::MLIR)
      .Case("llvm", EmitKind::LLVMIR)
      .Case("obj", EmitKind::Object)
      .Case("lib", EmitKind::Library)
      .Case("exe", EmitKind::Executable)
      .Case("ptx", EmitKind::PTX)
      .Case("plan", EmitKind::Plan)
      .Default(std::nullopt);
}

StringRef moe::stringifyEmitKind(EmitKind kind) {
  switch (kind) {
  case EmitKind::MLIR:
    return "mlir";
  case EmitKind::LLVMIR:
    return "llvm";
  case EmitKind::Object:
    return "obj";
  case EmitKind::Library:
    return "lib";
  case EmitKind::Executable:
    return "exe";
  case EmitKind::PTX:
    return "ptx";
  case EmitKind::Plan:
    return "plan";
  }
  llvm_unreachable("unknown EmitKind");
}

void moe::registerCompilerDialects(DialectRegistry &registry) {
  mlir::registerAllDialects(registry);
  mlir::registerAllExtensions(registry);
  mlir::registerAllToLLVMIRTranslations(registry);
  registerCUDAPipelineDependencies(registry);
  registry.insert<moe::MoEDialect>();
}

OwningOpRef<ModuleOp>
moe::parseModelFile(StringRef inputPath, MLIRContext &context,
                    llvm::SourceMgr &sourceMgr,
                    const ImportONNXOptions &onnxOptions) {
  Location loc = UnknownLoc::get(&context);
  if (llvm::sys::path::extension(inputPath) == ".onnx")
    return importONNXFile(inputPath, &context, onnxOptions);
  std::string errorMessage;
  std::unique_ptr<llvm::MemoryBuffer> file =
      openInputFile(inputPath, &errorMessage);
  if (!file) {
    emitError(loc) << "cannot open '" << inputPath << "': " << errorMessage;
    return nullptr;
  }
  sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
  OwningOpRef<ModuleOp> module =
      parseSourceFile<ModuleOp>(sourceMgr, ParserConfig(&context));
  if (!module)
    emitError(loc) << "cannot parse '" << inputPath << "'";
  return module;
}

/// `path` without a trailing `extension`, or `path` if it does not end so.
static StringRef dropExtension(StringRef path, StringRef extension) {
  if (path.ends_with(extension) && path.size() > extension.size() &&
      !path.drop_back(extension.size()).ends_with("/"))
    return path.drop_back(extension.size());
  return path;
}

SideOutputs moe::getSideOutputs(StringRef mainOutput, EmitKind kind) {
  SideOutputs side;
  if (mainOutput == "-")
    return side;
  // The runtime looks for `MODEL.so` minus ".so" plus ".weights", and for an
  // executable's own path plus ".weights".
  StringRef stem = mainOutput;
  switch (kind) {
  case EmitKind::MLIR:
    stem = dropExtension(dropExtension(mainOutput, ".mlir"), ".llvm");
    break;
  case EmitKind::LLVMIR:
    stem = dropExtension(mainOutput, ".ll");
    break;
  case EmitKind::Object:
    stem = dropExtension(mainOutput, ".o");
    break;
  case EmitKind::Library:
    stem = dropExtension(mainOutput, ".so");
    break;
  case EmitKind::Executable:
    break;
  case EmitKind::PTX:
  case EmitKind::Plan:
    // Only the kernels, or the plan: no weights, no header.
    return side;
  }
  side.weightsPath = (stem + ".weights").str();
  if (kind == EmitKind::Library || kind == EmitKind::Object)
    side.headerPath = (stem + ".h").str();
  return side;
}

std::string moe::getDefaultOutputPath(StringRef inputPath, EmitKind kind) {
  StringRef stem = inputPath;
  if (inputPath == "-")
    stem = "model";
  else if (!llvm::sys::path::extension(inputPath).empty())
    stem = inputPath.drop_back(llvm::sys::path::extension(inputPath).size());
  switch (kind) {
  case EmitKind::MLIR:
    return (stem + ".llvm.mlir").str();
  case EmitKind::LLVMIR:
    return (stem + ".ll").str();
  case EmitKind::Object:
    return (stem + ".o").str();
  case EmitKind::Library:
    return (stem + ".so").str();
  case EmitKind::Executable:
    return stem == inputPath ? (stem + ".exe").str() : stem.str();
  case EmitKind::PTX:
    return (stem + ".ptx").str();
  case EmitKind::Plan:
    return (stem + ".plan.json").str();
  }
  llvm_unreachable("unknown EmitKind");
}

/// Creates an empty temporary file beside `finalPath` (which must not be a
/// directory) and returns its name.
static FailureOr<std::string> createTempBeside(StringRef finalPath,
                                               Location loc) {
  if (llvm::sys::fs::is_directory(finalPath))
    return emitError(loc) << "cannot write '" << finalPath
                          << "': it is a directory";
  SmallString<128> model(finalPath);
  model += ".tmp-%%%%%%";
  SmallString<128> temp;
  int fd;
  if (std::error_code ec = llvm::sys::fs::createUniqueFile(model, fd, temp))
    return emitError(loc) << "cannot write '" << finalPath
                          << "': " << ec.message();
  llvm::sys::Process::SafelyCloseFileDescriptor(fd);
  return temp.str().str();
}

LogicalResult moe::checkOutputPath(StringRef path, Location loc) {
  FailureOr<std::string> temp = createTempBeside(path, loc);
  if (failed(temp))
    return failure();
  llvm::sys::fs::remove(*temp);
  return success();
}

namespace {
/// Output files written under temporary names next to their final ones and
/// renamed together by `commit`; the destructor removes what was not.
class OutputFiles {
public:
  explicit OutputFiles(Location loc) : loc(loc) {}
  ~OutputFiles() {
    if (committed)
      return;
    for (const Entry &entry : entries)
      llvm::sys::fs::remove(entry.temp);
  }

  /// Reserves a temporary file for `finalPath` and returns its name.
  FailureOr<std::string> add(StringRef finalPath) {
    FailureOr<std::string> temp = createTempBeside(finalPath, loc);
    if (failed(temp))
      return failure();
    entries.push_back({*temp, finalPath.str()});
    return entries.back().temp;
  }

  LogicalResult commit() {
    for (const Entry &entry : entries)
      if (std::error_code ec = llvm::sys::fs::rename(entry.temp, entry.final))
        return emitError(loc)
               << "cannot write '" << entry.final << "': " << ec.message();
    committed = true;
    return success();
  }

private:
  struct Entry {
    std::string temp;
    std::string final;
  };
  Location loc;
  SmallVector<Entry> entries;
  bool committed = false;
};

/// Runs a stage and, with progress on, prints its name and time.
class StageRunner {
public:
  explicit StageRunner(llvm::raw_ostream *progress) : progress(progress) {}

  template <typename Fn> LogicalResult run(StringRef name, Fn &&fn) {
    auto start = std::chrono::steady_clock::now();
    LogicalResult result = fn();
    if (progress) {
      std::chrono::duration<double, std::milli> elapsed =
          std::chrono::steady_clock::now() - start;
      *progress << "moe-compile: " << name << ": "
                << llvm::format("%.1f", elapsed.count()) << " ms"
                << (failed(result) ? " (failed)" : "") << "\n";
    }
    return result;
  }

private:
  llvm::raw_ostream *progress;
};
} // namespace

/// Writes `path` with `write(os)`.
template <typename Fn>
static LogicalResult writeFile(StringRef path, Location loc, Fn &&write) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec, llvm::sys::fs::OF_None);
  if (ec)
    return emitError(loc) << "cannot write '" << path << "': " << ec.message();
  if (failed(write(os)))
    return failure();
  os.close();
  if (os.has_error())
    return emitError(loc) << "cannot write '" << path
                          << "': " << os.error().message();
  return success();
}

LogicalResult moe::checkCPUPipelineOptions(StringRef options, StringRef target,
                                           Location loc) {
  if (options.empty())
    return success();
  if (target != "cpu")
    return emitError(loc) << "--cpu-pipeline needs --target=cpu";
  CPUPipelineOptions parsed;
  std::string message;
  llvm::raw_string_ostream os(message);
  if (failed(parsed.parseFromString(options, os))) {
    // Some parse errors go to stderr by themselves (llvm::cl's value
    // parsers), others to `message`.
    InFlightDiagnostic diag = emitError(loc)
                              << "bad --cpu-pipeline='" << options << "'";
    if (!StringRef(message).trim().empty())
      diag << ": " << StringRef(message).trim();
    return diag;
  }
  return success();
}

/// Rejects unknown targets and the combinations a target does not support.
static LogicalResult checkTargetOptions(const CompileOptions &options,
                                        Location loc) {
  EmitKind kind = options.emit;
  if (failed(checkCPUPipelineOptions(options.cpuPipeline, options.target, loc)))
    return failure();
  if (options.target == "cpu") {
    if (kind == EmitKind::PTX)
      return emitError(loc) << "--emit=ptx needs --target=cuda";
    return success();
  }
  if (options.target != "cuda")
    return emitError(loc) << "unknown target '" << options.target
                          << "'; expected 'cpu' or 'cuda'";
  if (options.gpuArch != "sm_80" && options.gpuArch != "sm_90")
    return emitError(loc) << "unsupported --gpu-arch='" << options.gpuArch
                          << "'; expected sm_80 or sm_90";
  if (kind == EmitKind::Object)
    return emitError(loc)
           << "--target=cuda does not support --emit="
           << stringifyEmitKind(kind)
           << "; use --emit=lib (a library for moe-run and the runtime), exe, "
              "ptx, llvm or mlir";
  return success();
}

LogicalResult moe::compile(ModuleOp module, const CompileOptions &options) {
  MLIRContext *context = module.getContext();
  Location loc = UnknownLoc::get(context);
  EmitKind kind = options.emit;
  if (options.outputPath.empty())
    return emitError(loc) << "no output file given";
  bool toStdout = options.outputPath == "-";
  if (toStdout && kind != EmitKind::MLIR && kind != EmitKind::LLVMIR &&
      kind != EmitKind::PTX && kind != EmitKind::Plan)
    return emitError(loc) << "'-o -' works only with --emit=mlir, "
                             "--emit=llvm, --emit=ptx or --emit=plan";
  if (failed(checkTargetOptions(options, loc)))
    return failure();
  if (options.devices < 1)
    return emitError(loc) << "--devices must be at least 1, got "
                          << options.devices;
  if (options.devices > 1 && kind != EmitKind::Plan)
    return emitError(loc)
           << "a placement over " << options.devices
           << " devices can only be written as a plan (--emit=plan): "
              "moe-mlir runs a layer on one device";
  bool cuda = options.target == "cuda";

  // Reserve every output first, so an unwritable path fails before any work.
  OutputFiles outputs(loc);
  SideOutputs side = getSideOutputs(options.outputPath, kind);
  std::string mainTemp, weightsTemp, headerTemp;
  if (!toStdout) {
    FailureOr<std::string> temp = outputs.add(options.outputPath);
    if (failed(temp))
      return failure();
    mainTemp = *temp;
    if (!side.weightsPath.empty()) {
      if (failed(temp = outputs.add(side.weightsPath)))
        return failure();
      weightsTemp = *temp;
    }
    if (!side.headerPath.empty()) {
      if (failed(temp = outputs.add(side.headerPath)))
        return failure();
      headerTemp = *temp;
    }
  }

  StageRunner stages(options.progress);
  std::unique_ptr<llvm::TargetMachine> targetMachine;
  if (kind != EmitKind::MLIR && kind != EmitKind::PTX &&
      kind != EmitKind::Plan &&
      failed(stages.run("target", [&]() -> LogicalResult {
        auto machine = createTargetMachine(options.cpu, loc);
        if (failed(machine))
          return failure();
        targetMachine = std::move(*machine);
        return success();
      })))
    return failure();

  func::FuncOp entry;
  std::string entryName;
  ModelSignature signature;
  if (failed(stages.run("select-entry", [&]() -> LogicalResult {
        FailureOr<func::FuncOp> selected = selectEntry(module, options.entry);
        if (failed(selected))
          return failure();
        entry = *selected;
        FailureOr<std::string> name = renameReservedSymbols(module, entry);
        if (failed(name))
          return failure();
        entryName = *name;
        return success();
      })))
    return failure();
  // On the CPU target the expert weight matrices go to the weights file in
  // column panels, which the expert GEMMs stream (docs/CompiledModelABI.md).
  // The expert cache moves experts in their row-major layout, so a budget
  // keeps that.
  bool cached = options.expertBudget >= 0 || options.expertBudgetPercent >= 0 ||
                kind == EmitKind::Plan;
  if (options.target == "cpu" && !cached &&
      failed(stages.run("pack-weights", [&]() -> LogicalResult {
        PassManager pm(module.getContext(), func::FuncOp::getOperationName());
        pm.addPass(createMoEPackExpertWeights());
        return pm.run(entry);
      })))
    return failure();
  if (failed(stages.run("outline-weights", [&]() -> LogicalResult {
        FailureOr<ModelSignature> built = buildSignatureAndOutlineWeights(
            entry, options.weightThresholdBytes,
            /*outlineMoEOperands=*/options.target == "cuda");
        if (failed(built))
          return failure();
        signature = std::move(*built);
        return success();
      })))
    return failure();
  if (kind == EmitKind::Plan) {
    if (failed(stages.run("plan-placement", [&] {
          return planExpertPlacement(module, entry, signature, options,
                                     toStdout ? "-" : mainTemp);
        })))
      return failure();
    return outputs.commit();
  }
  bool placement = cached || options.instrumentRouting;
  if (placement && failed(stages.run("plan-placement", [&] {
        return planExpertPlacement(module, entry, signature, options);
      })))
    return failure();
  if (failed(stages.run(
          "lower", [&] { return lowerToLLVMDialect(module, entry, options); })))
    return failure();
  if (kind == EmitKind::PTX) {
    if (toStdout)
      return printPTX(module, llvm::outs());
    if (failed(stages.run("write-ptx", [&] {
          return writeFile(mainTemp, loc, [&](llvm::raw_ostream &os) {
            return printPTX(module, os);
          });
        })))
      return failure();
    return outputs.commit();
  }
  if (failed(stages.run("abi-glue", [&] {
        return addABIGlue(module, entryName, signature,
                          kind == EmitKind::Executable, cuda);
      })))
    return failure();

  if (kind == EmitKind::MLIR) {
    if (toStdout) {
      module.print(llvm::outs());
      llvm::outs() << "\n";
    } else if (failed(stages.run("write-mlir", [&] {
                 return writeFile(mainTemp, loc, [&](llvm::raw_ostream &os) {
                   module.print(os);
                   os << "\n";
                   return success();
                 });
               }))) {
      return failure();
    }
  } else {
    llvm::LLVMContext llvmContext;
    std::unique_ptr<llvm::Module> llvmModule;
    if (failed(stages.run("translate", [&]() -> LogicalResult {
          llvmModule = translateToLLVMIR(module, llvmContext, *targetMachine);
          if (!llvmModule)
            return emitError(loc) << "translation to LLVM IR failed";
          return success();
        })))
      return failure();
    if (kind == EmitKind::LLVMIR) {
      if (toStdout)
        llvmModule->print(llvm::outs(), nullptr);
      else if (failed(writeFile(mainTemp, loc, [&](llvm::raw_ostream &os) {
                 llvmModule->print(os, nullptr);
                 return success();
               })))
        return failure();
    } else if (kind == EmitKind::Object) {
      if (failed(stages.run("codegen", [&] {
            return emitObjectFile(*llvmModule, *targetMachine, mainTemp, loc);
          })))
        return failure();
    } else {
      SmallString<128> objectPath;
      if (std::error_code ec = llvm::sys::fs::createTemporaryFile(
              "moe-compile", "o", objectPath))
        return emitError(loc)
               << "cannot create a temporary file: " << ec.message();
      llvm::FileRemover objectRemover(objectPath);
      if (failed(stages.run("codegen", [&] {
            return emitObjectFile(*llvmModule, *targetMachine, objectPath, loc);
          })))
        return failure();
      if (failed(stages.run("link", [&] {
            return linkObject(objectPath, mainTemp, kind, options, loc);
          })))
        return failure();
    }
  }

  if (toStdout)
    return success();
  if (failed(stages.run("write-weights", [&] {
        return writeFile(weightsTemp, loc, [&](llvm::raw_ostream &os) {
          return writeWeightsFile(signature, os, loc);
        });
      })))
    return failure();
  if (!headerTemp.empty() &&
      failed(writeFile(headerTemp, loc, [&](llvm::raw_ostream &os) {
        writeHeader(signature, llvm::sys::path::stem(side.headerPath), os);
        return success();
      })))
    return failure();
  return outputs.commit();
}
