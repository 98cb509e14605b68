//===- MoEToLinalg.h - Lower the moe dialect to linalg ----------*- C++ -*-===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#ifndef MOE_CONVERSION_MOETOLINALG_MOETOLINALG_H
#define MOE_CONVERSION_MOETOLINALG_MOETOLINALG_H

#include "mlir/IR/PatternMatch.h"
#include "mlir/Support/LLVM.h"

namespace moe {

/// Adds the patterns that lower the moe ops (except `moe.layer`) to linalg,
/// scf, tensor, arith and math at tensor level. `gateBlockSize` is the
/// number of tokens per block of the fused router matmul of `moe.gate`;
/// `expertParallelRows` the rows per expert on average from which
/// `moe.experts` runs its experts in parallel (0: never); `vectorCombine`
/// lowers `moe.combine` to vector loops where the hidden size allows;
/// `expertColumnBlock` the columns per task of the grouped expert GEMMs
/// (0: the experts one after another).
void populateMoEToLinalgConversionPatterns(mlir::RewritePatternSet &patterns,
                                           int64_t gateBlockSize = 32,
                                           int64_t expertParallelRows = 8,
                                           bool vectorCombine = true,
                                           int64_t expertColumnBlock = 256);

/// Emits a "not supported yet" error on the first moe op under `root` that
/// the patterns cannot lower; succeeds when there is none.
llvm::LogicalResult checkMoEToLinalgSupport(mlir::Operation *root);

} // namespace moe

#endif // MOE_CONVERSION_MOETOLINALG_MOETOLINALG_H
