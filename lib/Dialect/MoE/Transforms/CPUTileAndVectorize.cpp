//===- CPUTileAndVectorize.cpp - Tile and vectorize linalg for the CPU ----===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/TilingInterface.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/ADT/StringSet.h"

namespace moe {
#define GEN_PASS_DEF_MOECPUTILEANDVECTORIZE
#include "moe/Dialect/MoE/Transforms/Passes.h.inc"
} // namespace moe

using namespace mlir;
using namespace moe;

/// The largest divisor of `range` that is at most `size`.
static int64_t largestDivisor(int64_t range, int64_t size) {
  for (int64_t d = std::min(size, range); d > 1; --d)
    if (range % d == 0)
      return d;
  return 1;
}

/// Tiles `op` into `loopType` loops with `sizes`, shrunk on static
/// dimensions to divisors of the dimension (so that tiles stay static and
/// need no masks) and dropped where a tile would cover the dimension.
/// Returns the tiled op and the loops, or the op itself and no loops when
/// nothing is tiled.
static FailureOr<std::pair<Operation *, SmallVector<LoopLikeOpInterface>>>
tile(RewriterBase &rewriter, Operation *op, ArrayRef<int64_t> sizes,
     scf::SCFTilingOptions::LoopType loopType) {
  auto linalgOp = dyn_cast<linalg::LinalgOp>(op);
  if (!linalgOp)
    return failure();
  SmallVector<int64_t> effective(sizes);
  for (auto [size, range] :
       llvm::zip(effective, linalgOp.getStaticLoopRanges())) {
    if (size == 0 || ShapedType::isDynamic(range))
      continue;
    size = size >= range ? 0 : largestDivisor(range, size);
  }
  if (llvm::all_of(effective, [](int64_t s) { return s == 0; }))
    return std::make_pair(op, SmallVector<LoopLikeOpInterface>());
  scf::SCFTilingOptions options;
  options.setLoopType(loopType);
  options.setTileSizes(getAsIndexOpFoldResult(op->getContext(), effective));
  rewriter.setInsertionPoint(op);
  FailureOr<scf::SCFTilingResult> result =
      scf::tileUsingSCF(rewriter, cast<TilingInterface>(op), options);
  if (failed(result) || result->tiledOps.size() != 1)
    return failure();
  rewriter.replaceOp(op, result->replacements);
  return std::make_pair(result->tiledOps.front(), result->loops);
}

/// Vectorizes `op` with `vectorSizes`, its static loop ranges when empty;
/// leaves it alone when it cannot. `assumeExact` states that the dynamic
/// dimensions equal the vector sizes (no masks).
static void vectorize(RewriterBase &rewriter, Operation *op,
                      ArrayRef<int64_t> vectorSizes, bool assumeExact,
                      bool namedContraction) {
  auto linalgOp = dyn_cast<linalg::LinalgOp>(op);
  if (!linalgOp)
    return;
  SmallVector<int64_t> sizes(vectorSizes);
  if (sizes.empty()) {
    sizes = linalgOp.getStaticLoopRanges();
    if (llvm::any_of(sizes, ShapedType::isDynamic))
      return;
  }
  if (failed(linalg::vectorizeOpPrecondition(op, sizes)))
    return;
  rewriter.setInsertionPoint(op);
  FailureOr<linalg::VectorizationResult> result = linalg::vectorize(
      rewriter, op, sizes, {}, /*vectorizeNDExtract=*/false,
      /*flatten1DDepthwiseConv=*/false, assumeExact, namedContraction);
  if (failed(result))
    return;
  if (result->replacements.empty())
    rewriter.eraseOp(op);
  else
    rewriter.replaceOp(op, result->replacements);
}

/// The only matmul nested in `loop`.
static linalg::MatmulOp findMatmul(Operation *loop) {
  linalg::MatmulOp found;
  loop->walk([&](linalg::MatmulOp op) { found = op; });
  return found;
}

/// Tiles a matmul into register tiles and vectorizes them. A dynamic M
/// (the rows of an expert) is peeled: full tiles of `registers[0]` rows
/// and a remainder of single rows, so that no vector needs a mask.
static void tileAndVectorizeMatmul(RewriterBase &rewriter, Operation *op,
                                   ArrayRef<int64_t> parallel,
                                   int64_t reductionTile,
                                   ArrayRef<int64_t> registers) {
  using LoopType = scf::SCFTilingOptions::LoopType;
  auto tiled =
      tile(rewriter, op, {parallel[0], parallel[1], 0}, LoopType::ForallOp);
  if (succeeded(tiled))
    tiled =
        tile(rewriter, tiled->first, {0, 0, reductionTile}, LoopType::ForOp);
  if (failed(tiled))
    return;
  bool dynamicM = ShapedType::isDynamic(
      cast<linalg::LinalgOp>(tiled->first).getStaticLoopRanges()[0]);
  tiled = tile(rewriter, tiled->first, registers, LoopType::ForOp);
  if (failed(tiled))
    return;
  if (!dynamicM || tiled->second.empty()) {
    vectorize(rewriter, tiled->first, {}, false, true);
    return;
  }
  auto mLoop = dyn_cast<scf::ForOp>(tiled->second.front().getOperation());
  if (!mLoop)
    return;
  SmallVector<int64_t> fullTile =
      cast<linalg::LinalgOp>(tiled->first).getStaticLoopRanges();
  fullTile[0] = registers[0];
  if (llvm::any_of(fullTile, ShapedType::isDynamic))
    return;
  scf::ForOp partial;
  if (failed(scf::peelForLoopAndSimplifyBounds(rewriter, mLoop, partial)))
    return;
  vectorize(rewriter, findMatmul(mLoop), fullTile, /*assumeExact=*/true, true);
  if (!partial)
    return;
  auto rows = tile(rewriter, findMatmul(partial), {1, 0, 0}, LoopType::ForOp);
  if (succeeded(rows))
    vectorize(rewriter, rows->first, {}, false, true);
}

/// Whether `op` is a 2-d elementwise linalg op on tensors with a static
/// inner dimension.
static bool isElementwise2d(linalg::LinalgOp op) {
  if (isa<linalg::MatmulOp>(op) || !op.hasPureTensorSemantics() ||
      op.getNumLoops() != 2 || op.getNumReductionLoops() != 0)
    return false;
  return !ShapedType::isDynamic(op.getStaticLoopRanges()[1]);
}

namespace {
struct MoECPUTileAndVectorizePass
    : public moe::impl::MoECPUTileAndVectorizeBase<MoECPUTileAndVectorizePass> {
  using MoECPUTileAndVectorizeBase::MoECPUTileAndVectorizeBase;

  void runOnOperation() override {
    SmallVector<int64_t> parallel(parallelTileSizes.begin(),
                                  parallelTileSizes.end());
    if (parallel.empty())
      parallel = {0, 128};
    SmallVector<int64_t> registers(registerTileSizes.begin(),
                                   registerTileSizes.end());
    if (registers.empty())
      registers = {8, 32, 1};
    if (parallel.size() != 2 || registers.size() != 3 ||
        llvm::any_of(registers, [](int64_t s) { return s < 1; }) ||
        llvm::any_of(parallel, [](int64_t s) { return s < 0; }) ||
        reductionTileSize < 0 || vectorSize < 1) {
      getOperation().emitError()
          << "moe-cpu-tile-and-vectorize needs 2 non-negative parallel tile "
             "sizes, 3 positive register tile sizes, a non-negative reduction "
             "tile size and a positive vector size";
      return signalPassFailure();
    }

    IRRewriter rewriter(&getContext());
    SmallVector<linalg::MatmulOp> matmuls;
    getOperation().walk([&](linalg::MatmulOp op) {
      if (op.hasPureTensorSemantics() && !op.hasUserDefinedMaps())
        matmuls.push_back(op);
    });
    for (linalg::MatmulOp matmul : matmuls)
      tileAndVectorizeMatmul(rewriter, matmul, parallel, reductionTileSize,
                             registers);

    SmallVector<linalg::LinalgOp> elementwise;
    getOperation().walk([&](linalg::LinalgOp op) {
      if (isElementwise2d(op))
        elementwise.push_back(op);
    });
    for (linalg::LinalgOp op : elementwise) {
      auto tiled = tile(rewriter, op, {1, vectorSize},
                        scf::SCFTilingOptions::LoopType::ForOp);
      if (succeeded(tiled))
        vectorize(rewriter, tiled->first, {}, false, false);
    }

    // Vectors of one row become 1-d: transfers with unit dimensions do not
    // lower to LLVM.
    RewritePatternSet patterns(&getContext());
    vector::populateCastAwayVectorLeadingOneDimPatterns(patterns);
    vector::populateVectorTransferDropUnitDimsPatterns(patterns);
    if (approximateMath) {
      llvm::StringSet<> approximated = {"exp",      "tanh",      "erf",
                                        "math.exp", "math.tanh", "math.erf"};
      populateMathPolynomialApproximationPatterns(
          patterns,
          [&](StringRef name) { return approximated.contains(name); });
    }
    if (failed(applyPatternsGreedily(getOperation(), std::move(patterns))))
      signalPassFailure();
  }
};
} // namespace
