//===- moe-onnx-fuzz.cpp - libFuzzer target for the ONNX importer ---------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Feeds arbitrary bytes to the ONNX importer as a serialized ModelProto. The
// importer must either build a module that verifies or fail with a
// diagnostic; crashes, sanitizer reports and modules that do not verify are
// bugs. External data is looked up in a directory that does not exist, so a
// run reads no files.
//
//===----------------------------------------------------------------------===//

#include "moe/Target/ONNX/ImportONNX.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/ErrorHandling.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  mlir::MLIRContext context(mlir::MLIRContext::Threading::DISABLED);
  // Failing is fine; it must be by a diagnostic.
  mlir::ScopedDiagnosticHandler silence(
      &context, [](mlir::Diagnostic &) { return mlir::success(); });
  llvm::StringRef bytes(reinterpret_cast<const char *>(data), size);
  moe::ImportONNXOptions options;
  options.remarks = true;
  mlir::OwningOpRef<mlir::ModuleOp> module = moe::importONNX(
      bytes, "fuzz.onnx", "/nonexistent/moe-onnx-fuzz", &context, options);
  if (module && mlir::failed(mlir::verify(*module)))
    llvm::report_fatal_error("the importer returned a module that does not "
                             "verify");
  return 0;
}
