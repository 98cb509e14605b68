//===- moe-translate.cpp - moe-mlir translation driver --------------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// mlir-translate with the ONNX importer (`--import-onnx`) and moe-opt's
// dialects registered.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Pipelines/CUDAPipeline.h"
#include "moe/Target/ONNX/ImportONNX.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/InitAllDialects.h"
#include "mlir/InitAllExtensions.h"
#include "mlir/Tools/mlir-translate/MlirTranslateMain.h"
#include "mlir/Tools/mlir-translate/Translation.h"

int main(int argc, char **argv) {
  moe::registerImportONNXTranslation();
  moe::registerMoEToPTXTranslation();
  // Print MLIR back out, with every dialect moe-opt knows.
  mlir::TranslateFromMLIRRegistration roundTrip(
      "mlir-to-mlir", "parse and print an MLIR module",
      [](mlir::Operation *op, llvm::raw_ostream &output) {
        op->print(output);
        return mlir::success();
      },
      [](mlir::DialectRegistry &registry) {
        mlir::registerAllDialects(registry);
        mlir::registerAllExtensions(registry);
        registry.insert<moe::MoEDialect>();
      });
  return mlir::failed(
      mlir::mlirTranslateMain(argc, argv, "moe-mlir translation driver\n"));
}
