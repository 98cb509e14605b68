//===- InitAll.h - Register every moe dialect and pass ----------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_INITALL_H
#define MOE_INITALL_H

#include "moe/Conversion/Passes.h"
#include "moe/Dialect/MoE/IR/MoEDialect.h"
#include "moe/Dialect/MoE/Transforms/Passes.h"
#include "moe/Pipelines/CUDAPipeline.h"
#include "moe/Pipelines/Pipelines.h"

#include "mlir/IR/DialectRegistry.h"

namespace moe {

/// Adds the dialects of moe-mlir to `registry`.
inline void registerAllDialects(mlir::DialectRegistry &registry) {
  registry.insert<MoEDialect>();
  registerCUDAPipelineDependencies(registry);
}

/// Registers every pass and pipeline of moe-mlir with the global registry.
inline void registerAllPasses() {
  registerMoEPasses();
  registerMoEConversionPasses();
  registerCPUPipeline();
  registerCUDAPipeline();
}

} // namespace moe

#endif // MOE_INITALL_H
