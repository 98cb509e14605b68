//===- Passes.h - Transformations of the moe dialect ------------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_DIALECT_MOE_TRANSFORMS_PASSES_H
#define MOE_DIALECT_MOE_TRANSFORMS_PASSES_H

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlow.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"
#include "mlir/Pass/Pass.h"

#include <optional>
#include <utility>

namespace moe {

class RouteOp;

/// The router matmul `input [T, H] · router [H, E] (+ bias [E])` that
/// computes the logits of a `moe.route`.
struct RouterMatmul {
  mlir::Value input, router, bias;
};

/// The router matmul that computes the logits of `route`, when it can be
/// folded into the routing: a plain `linalg.matmul` into a zero fill or into
/// a `[E]` bias broadcast over the tokens (`bias`), used by `route` only, of
/// `route`'s element type. moe-fuse-gating folds it into `moe.gate`;
/// convert-moe-to-gpu folds it into the routing kernel of expert choice,
/// which moe-fuse-gating leaves as `moe.route`.
std::optional<RouterMatmul> matchRouterMatmul(RouteOp route);

#define GEN_PASS_DECL
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"

#define GEN_PASS_REGISTRATION
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"

} // namespace moe

#endif // MOE_DIALECT_MOE_TRANSFORMS_PASSES_H
