//===- MoEOps.h - Operations of the moe dialect -----------------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_IR_MOEOPS_H
#define MOE_DIALECT_MOE_IR_MOEOPS_H

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/ControlFlowInterfaces.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#define GET_OP_CLASSES
#include "moe/Dialect/MoE/IR/MoEOps.h.inc"

namespace moe {
/// Whether `use` is a gate, up or down weight matrix operand (routed or
/// shared) of moe.layer, moe.experts or moe.shared_experts: the operands that
/// may be stored in a narrower float type than the activations.
bool isExpertWeightMatrix(mlir::OpOperand &use);
} // namespace moe

#endif // MOE_DIALECT_MOE_IR_MOEOPS_H
