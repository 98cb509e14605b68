//===- ImportONNX.h - ONNX model importer -----------------------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Turns an ONNX ModelProto into a module holding `func.func @main` built from
// upstream tensor ops (linalg, tensor, arith, math) and, where the model uses
// ONNX Runtime's `com.microsoft.MoE`, `moe.layer`.
//
// Every failure is reported as one MLIR diagnostic on the context: a model
// that cannot be parsed, missing external data, or a node whose op type,
// opset, data type or attributes the importer does not support.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_TARGET_ONNX_IMPORTONNX_H
#define MOE_TARGET_ONNX_IMPORTONNX_H

#include "moe/Support/LLVM.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace mlir {
class DialectRegistry;
class MLIRContext;
} // namespace mlir

namespace moe {

struct ImportONNXOptions {
  /// Emit a remark at each MoE block candidate (a TopK or ArgMax of router
  /// scores) saying whether it was raised to `moe.layer`, and why not.
  bool remarks = false;
};

/// Imports the serialized ModelProto `bytes`. `fileName` names the model in
/// diagnostics and locations; external-data tensors are read relative to
/// `modelDir`. Returns null after emitting a diagnostic on failure.
OwningOpRef<ModuleOp> importONNX(StringRef bytes, StringRef fileName,
                                 StringRef modelDir, MLIRContext *context,
                                 const ImportONNXOptions &options = {});

/// Reads and imports the model at `path` (external data relative to its
/// directory).
OwningOpRef<ModuleOp> importONNXFile(StringRef path, MLIRContext *context,
                                     const ImportONNXOptions &options = {});

/// Adds the dialects the importer creates to `registry`.
void registerImportONNXDialects(DialectRegistry &registry);

/// Registers the `--import-onnx` translation with mlir-translate's registry,
/// and its `--remarks` option.
void registerImportONNXTranslation();

} // namespace moe

#endif // MOE_TARGET_ONNX_IMPORTONNX_H
