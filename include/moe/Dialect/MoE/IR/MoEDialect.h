//===- MoEDialect.h - The moe dialect ---------------------------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEDIALECT_H
#define MOE_DIALECT_MOE_IR_MOEDIALECT_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/Dialect.h"
#include "mlir/IR/DialectImplementation.h"

#include "moe/Dialect/MoE/IR/MoEOpsDialect.h.inc"

#include "moe/Dialect/MoE/IR/MoEEnums.h.inc"

#define GET_ATTRDEF_CLASSES
#include "moe/Dialect/MoE/IR/MoEAttrs.h.inc"

namespace moe {
/// A discardable unit attribute on the reduction of a data-dependent run-time
/// check (the ONNX importer's index checks, read on the host by a
/// cf.assert): a target that cannot read that result on the host drops the
/// check (convert-moe-to-gpu).
inline constexpr llvm::StringLiteral kIndexCheckAttrName = "moe.index_check";
} // namespace moe

#endif // MOE_DIALECT_MOE_IR_MOEDIALECT_H
