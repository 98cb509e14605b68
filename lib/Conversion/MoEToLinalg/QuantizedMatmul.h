//===- QuantizedMatmul.h - GEMMs on int8/int4 expert weights ----*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef LIB_CONVERSION_MOETOLINALG_QUANTIZEDMATMUL_H
#define LIB_CONVERSION_MOETOLINALG_QUANTIZEDMATMUL_H

#include "mlir/IR/Builders.h"

namespace moe {

/// `acc + x · W_e^T` for `x [M, K]`, `acc [M, N]` and expert `e` of the
/// quantized weights `bytes [E, N, K * bits / 8]` (unsigned codes, 4-bit ones
/// low nibble first) with `scales [E, N, K / B]`:
/// `W_e[n, k] = scales[e, n, k / B] * (q[n, k] - zp)`, where `zp` is
/// `zeroPoints[e, n, k / B]` when `zeroPoints` is given (in the scales'
/// type) and `zeroPoint` else (any constant; the op's symmetric one is
/// 2^(bits - 1)). Emitted as
/// vector loops on tensors: an `scf.forall` over column blocks, register
/// tiles of rows x columns whose weights are dequantized from the bytes once
/// per tile step and used by every row, never a dequantized weight copy.
mlir::Value buildQuantizedMatmul(mlir::OpBuilder &b, mlir::Location loc,
                                 mlir::Value x, mlir::Value bytes,
                                 mlir::Value scales, mlir::Value expert,
                                 mlir::Value acc, int64_t bits,
                                 int64_t zeroPoint,
                                 mlir::Value zeroPoints = {});

} // namespace moe

#endif // LIB_CONVERSION_MOETOLINALG_QUANTIZEDMATMUL_H
