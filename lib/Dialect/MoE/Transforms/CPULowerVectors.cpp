//===- CPULowerVectors.cpp - 1-d vectors before the LLVM conversion -------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/MemRef/IR/MemRef.h"
#include "mlir/Dialect/Vector/Transforms/LoweringPatterns.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

namespace moe {
#define GEN_PASS_DEF_MOECPULOWERVECTORS
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

/// Whether `type` is a vector of rank 2 or more.
static bool isNdVector(Type type) {
  auto vectorType = dyn_cast<VectorType>(type);
  return vectorType && vectorType.getRank() > 1;
}

namespace {
struct MoECPULowerVectorsPass
    : public moe::impl::MoECPULowerVectorsBase<MoECPULowerVectorsPass> {
  using MoECPULowerVectorsBase::MoECPULowerVectorsBase;

  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    vector::populateCastAwayVectorLeadingOneDimPatterns(patterns);
    vector::populateVectorTransferDropUnitDimsPatterns(patterns);
    vector::populateVectorTransferPermutationMapLoweringPatterns(patterns);
    vector::populateVectorTransferLoweringPatterns(patterns,
                                                   /*maxTransferRank=*/1);
    vector::populateVectorBroadcastLoweringPatterns(patterns);
    vector::populateVectorShapeCastLoweringPatterns(patterns);
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      return signalPassFailure();

    WalkResult result = getOperation().walk([](Operation *op) {
      if (!isa_and_nonnull<vector::VectorDialect>(op->getDialect()) ||
          llvm::none_of(llvm::concat<const Type>(op->getOperandTypes(),
                                                 op->getResultTypes()),
                        isNdVector))
        return WalkResult::advance();
      op->emitOpError("has a vector of rank 2 or more, which the CPU "
                      "pipeline does not lower to LLVM");
      return WalkResult::interrupt();
    });
    if (result.wasInterrupted())
      signalPassFailure();
  }
};
} // namespace
