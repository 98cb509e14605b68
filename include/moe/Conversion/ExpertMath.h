//===- ExpertMath.h - Scalar math of routing and expert bodies --*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// The elementwise math that every lowering of the moe dialect emits the same
// way (in linalg bodies on the CPU, in GPU kernels): arith/math ops on one
// scalar float value, so both targets compute the same function.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CONVERSION_EXPERTMATH_H
#define MOE_CONVERSION_EXPERTMATH_H

#include "moe/Dialect/MoE/IR/MoEDialect.h"

#include "mlir/IR/Builders.h"

namespace moe {

/// `1 / (1 + exp(-x))`.
mlir::Value buildSigmoid(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x);

/// The hidden value of an FFN expert from its projections (biases already
/// added): `act(up)` for `ffn` experts (`gate` is null), and for `gated`
/// experts `act_alpha(g) * (u + beta)` with `g`, `u` clamped by `limit` when
/// it is set (GPT-OSS), as #moe.expert describes.
mlir::Value buildExpertHidden(mlir::OpBuilder &b, mlir::Location loc,
                              ExpertAttr expert, mlir::Value gate,
                              mlir::Value up);

/// The per-expert token count C of expert-choice routing as an i64, from
/// `numTokens` (i64): `capacity` when the recipe sets it, else
/// `ceil(capacity_factor * T / E)` computed in f64 and clamped to T before
/// the conversion (a huge factor cannot overflow); at most T either way.
mlir::Value buildExpertChoiceCapacity(mlir::OpBuilder &b, mlir::Location loc,
                                      RoutingAttr routing, int64_t numExperts,
                                      mlir::Value numTokens);

/// The expert of `moe.hash_route` without a table for token id `id` (an
/// index): Knuth's multiplicative hash `((id * 2654435761) mod 2^32) mod E`,
/// as an index.
mlir::Value buildHashExpert(mlir::OpBuilder &b, mlir::Location loc,
                            mlir::Value id, int64_t numExperts);

} // namespace moe

#endif // MOE_CONVERSION_EXPERTMATH_H
