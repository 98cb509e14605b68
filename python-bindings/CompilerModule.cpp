//===- CompilerModule.cpp - The compiler half of moe_mlir -----------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// `moe_mlir._moe_mlir`: `compile` runs the moe-compile driver
// (include/moe/Compiler/Compiler.h) and collects its diagnostics as text. It
// links libMLIR; the runtime half (RuntimeModule.cpp) does not, so that
// compiled models load and run where MLIR is not installed.
// moe_mlir/__init__.py builds the public API on top of both.
//
// LLVM and MLIR are built without exceptions; this file is compiled with
// them (pybind11 needs them), and no exception crosses an LLVM/MLIR frame.
//
//===----------------------------------------------------------------------===//

#include "PythonErrors.h"
#include "moe/Compiler/Compiler.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace py = pybind11;
using namespace mlir;
using moe::python::raise;

namespace {

//===----------------------------------------------------------------------===//
// Compilation
//===----------------------------------------------------------------------===//

/// A SourceMgrDiagnosticHandler whose rendering can be called directly.
class DiagnosticPrinter : public SourceMgrDiagnosticHandler {
public:
  using SourceMgrDiagnosticHandler::emitDiagnostic;
  using SourceMgrDiagnosticHandler::SourceMgrDiagnosticHandler;
};

/// Collects every diagnostic of a context as the text moe-compile prints
/// (file:line:col, the source line and a caret where the location is in a
/// parsed buffer), split into errors and the rest.
class DiagnosticCollector {
public:
  DiagnosticCollector(llvm::SourceMgr &sourceMgr, MLIRContext &context)
      : stream(text), printer(sourceMgr, &context, stream),
        handler(&context, [this](Diagnostic &diag) {
          collect(diag);
          return success();
        }) {}

  std::vector<std::string> errors;
  std::vector<std::string> others;

private:
  static StringRef severityName(DiagnosticSeverity severity) {
    switch (severity) {
    case DiagnosticSeverity::Error:
      return "error";
    case DiagnosticSeverity::Warning:
      return "warning";
    case DiagnosticSeverity::Note:
      return "note";
    case DiagnosticSeverity::Remark:
      return "remark";
    }
    llvm_unreachable("unknown severity");
  }

  void collect(Diagnostic &diag) {
    size_t start = text.size();
    if (isa<UnknownLoc>(diag.getLocation())) {
      // As moe-compile prints them, without its "moe-compile: " prefix.
      stream << severityName(diag.getSeverity()) << ": " << diag << "\n";
      for (Diagnostic &note : diag.getNotes())
        stream << "note: " << note << "\n";
    } else {
      printer.emitDiagnostic(diag);
    }
    std::string rendered = text.substr(start);
    while (!rendered.empty() && rendered.back() == '\n')
      rendered.pop_back();
    if (diag.getSeverity() == DiagnosticSeverity::Error)
      errors.push_back(std::move(rendered));
    else
      others.push_back(std::move(rendered));
  }

  std::string text;
  llvm::raw_string_ostream stream;
  DiagnosticPrinter printer;
  ScopedDiagnosticHandler handler;
};

struct CompileRequest {
  /// A file path, or the model itself when `isBuffer`.
  std::string source;
  bool isBuffer = false;
  /// For buffers: the name used in locations, the format ("mlir" or "onnx")
  /// and the directory of ONNX external data.
  std::string bufferName;
  std::string format;
  std::string modelDir;
  /// "input" prints the parsed module; anything else goes to moe::compile.
  std::string emit;
  moe::CompileOptions options;
  bool remarks = false;
};

struct CompileOutcome {
  bool ok = false;
  std::vector<std::string> errors;
  std::vector<std::string> others;
  /// The parsed module's text for emit "input".
  std::string inputText;
};

/// Runs without the GIL: touches no Python object.
CompileOutcome runCompile(const CompileRequest &request) {
  DialectRegistry registry;
  moe::registerCompilerDialects(registry);
  MLIRContext context(registry);
  llvm::SourceMgr sourceMgr;
  DiagnosticCollector diagnostics(sourceMgr, context);
  moe::ImportONNXOptions onnxOptions;
  onnxOptions.remarks = request.remarks;

  OwningOpRef<ModuleOp> module;
  if (!request.isBuffer) {
    module =
        moe::parseModelFile(request.source, context, sourceMgr, onnxOptions);
  } else if (request.format == "onnx") {
    module = moe::importONNX(request.source, request.bufferName,
                             request.modelDir, &context, onnxOptions);
  } else {
    sourceMgr.AddNewSourceBuffer(llvm::MemoryBuffer::getMemBufferCopy(
                                     request.source, request.bufferName),
                                 llvm::SMLoc());
    module = parseSourceFile<ModuleOp>(sourceMgr, ParserConfig(&context));
    if (!module)
      emitError(UnknownLoc::get(&context))
          << "cannot parse '" << request.bufferName << "'";
  }

  CompileOutcome outcome;
  if (module) {
    if (request.emit == "input") {
      llvm::raw_string_ostream os(outcome.inputText);
      module->print(os);
      os << "\n";
      outcome.ok = true;
    } else {
      outcome.ok = succeeded(moe::compile(*module, request.options));
    }
  }
  outcome.errors = std::move(diagnostics.errors);
  outcome.others = std::move(diagnostics.others);
  return outcome;
}

/// The native `compile`: raises CompileError with the compiler's
/// diagnostics; returns (non-error diagnostics, module text for "input").
py::tuple compileModel(py::object source, bool isBuffer,
                       const std::string &bufferName, const std::string &format,
                       const std::string &modelDir, const std::string &emit,
                       const std::string &output, const std::string &target,
                       const std::string &entry, const std::string &cpu,
                       uint64_t weightThreshold, const std::string &linker,
                       const std::string &runtimeLibrary, bool remarks,
                       const std::string &expertBudget,
                       const std::string &placementProfile,
                       int64_t prefetchDepth, bool instrumentRouting,
                       const std::string &gpuArch, int64_t devices,
                       const std::string &cpuPipeline) {
  CompileRequest request;
  request.isBuffer = isBuffer;
  request.source =
      isBuffer ? std::string(py::bytes(source)) : source.cast<std::string>();
  request.bufferName = bufferName;
  request.format = format;
  request.modelDir = modelDir;
  request.emit = emit;
  request.remarks = remarks;
  if (emit != "input") {
    std::optional<moe::EmitKind> kind = moe::parseEmitKind(emit);
    if (!kind)
      throw py::value_error("unknown emit '" + emit +
                            "'; expected input, mlir, llvm, obj, lib, exe, "
                            "ptx or plan");
    request.options.emit = *kind;
    request.options.outputPath = output;
  }
  request.options.target = target;
  request.options.entry = entry;
  request.options.cpu = cpu;
  request.options.weightThresholdBytes = weightThreshold;
  request.options.linkerDriver = linker;
  request.options.runtimeLibrary = runtimeLibrary;
  if (!expertBudget.empty()) {
    std::optional<moe::ExpertBudget> budget =
        moe::parseExpertBudget(expertBudget);
    if (!budget)
      throw py::value_error("bad expert_budget '" + expertBudget +
                            "'; expected bytes (e.g. 512M, 2G) or a "
                            "percentage (e.g. 25%)");
    request.options.expertBudget = budget->bytes;
    request.options.expertBudgetPercent = budget->percent;
  }
  request.options.placementProfile = placementProfile;
  request.options.prefetchDepth = prefetchDepth;
  request.options.instrumentRouting = instrumentRouting;
  request.options.devices = devices;
  // Checked (parse, values, target) by moe::compile: a CompileError.
  request.options.cpuPipeline = cpuPipeline;
  if (!gpuArch.empty()) {
    if (target != "cuda")
      throw py::value_error("gpu_arch needs target=\"cuda\"");
    request.options.gpuArch = gpuArch;
  }

  CompileOutcome outcome;
  {
    py::gil_scoped_release release;
    outcome = runCompile(request);
  }
  if (!outcome.ok) {
    std::vector<std::string> all = outcome.errors;
    all.insert(all.end(), outcome.others.begin(), outcome.others.end());
    std::string message;
    for (const std::string &error : outcome.errors)
      message += (message.empty() ? "" : "\n") + error;
    if (message.empty())
      message = "compilation failed without a diagnostic";
    raise("CompileError", message, py::cast(all));
  }
  return py::make_tuple(outcome.others,
                        emit == "input" ? py::object(py::str(outcome.inputText))
                                        : py::object(py::none()));
}

} // namespace

PYBIND11_MODULE(_moe_mlir, m) {
  m.doc() =
      "The compiler half of moe_mlir: the moe-compile driver (links libMLIR).";
  m.def("compile", &compileModel, py::arg("source"), py::arg("is_buffer"),
        py::arg("buffer_name"), py::arg("format"), py::arg("model_dir"),
        py::arg("emit"), py::arg("output"), py::arg("target"), py::arg("entry"),
        py::arg("cpu"), py::arg("weight_threshold"), py::arg("linker"),
        py::arg("runtime_lib"), py::arg("remarks"), py::arg("expert_budget"),
        py::arg("placement_profile"), py::arg("prefetch_depth"),
        py::arg("instrument_routing"), py::arg("gpu_arch"), py::arg("devices"),
        py::arg("cpu_pipeline"));
}
