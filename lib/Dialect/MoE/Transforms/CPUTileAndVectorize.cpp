//===- CPUTileAndVectorize.cpp - Tile and vectorize linalg for the CPU ----===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "moe/Dialect/MoE/Transforms/Passes.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/SCF/Transforms/TileUsingInterface.h"
#include "mlir/Dialect/SCF/Transforms/Transforms.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "mlir/Dialect/Vector/Transforms/VectorRewritePatterns.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/Interfaces/TilingInterface.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/ADT/SetVector.h"
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
  // One flag per vector dimension: the vectorizer reads as many as there are
  // sizes.
  SmallVector<bool> scalableDims(sizes.size(), false);
  if (failed(linalg::vectorizeOpPrecondition(op, sizes, scalableDims)))
    return;
  rewriter.setInsertionPoint(op);
  FailureOr<linalg::VectorizationResult> result = linalg::vectorize(
      rewriter, op, sizes, scalableDims, /*vectorizeNDExtract=*/false,
      /*flatten1DDepthwiseConv=*/false, assumeExact, namedContraction);
  if (failed(result))
    return;
  if (result->replacements.empty())
    rewriter.eraseOp(op);
  else
    rewriter.replaceOp(op, result->replacements);
}

namespace {
/// The fewest rows of a register tile that prefetches its weight panels.
constexpr int64_t kPrefetchRows = 4;
/// The most weight vectors a single-pass tile reads per row of K: four
/// 32-column panels, four concurrent streams per thread (a one-row tile 256
/// columns wide, eight panels, was slower on the benchmark machine).
constexpr int64_t kSinglePassVectors = 8;
/// The most rows of a single-pass tile: one vector of accumulators per row
/// already takes 16 registers (a taller tile would spill).
constexpr int64_t kMaxSinglePassRows = 16;

/// The shape of the vectorized matmul: vector lanes, columns of a
/// parallel task, rows of the right-hand side per reduction block and the
/// register tiles, from the tallest to one row.
struct MatmulPlan {
  int64_t lanes;
  int64_t taskColumns;
  int64_t reductionBlock;
  SmallVector<std::pair<int64_t, int64_t>> registerTiles;
  /// K steps ahead that tiles of kPrefetchRows rows or more prefetch panels
  /// (0: never).
  int64_t prefetchDistance = 0;
  /// Single-pass tiles for weights in panels: for `rows` (1 to the size of
  /// the list) rows, the columns of a register tile of exactly that height
  /// that walks all of K (see buildSinglePass). Empty: none.
  SmallVector<int64_t> singlePassColumns;
};
} // namespace

/// Plans a `[M, k] x [k, n]` matmul: `lanes` is the widest vector (at most
/// `vectorSize` f32 lanes wide) no wider than `n`, and the `n mod lanes`
/// columns past the last whole vector are a tail of narrower vectors (see
/// buildReductionBlock; an odd width such as 522 = 32 x 16 + 10 keeps 16-lane
/// vectors for all but 10 columns: vectors of the largest power of two dividing
/// `n`, 2 lanes there, made register tiles of hundreds of accumulators, slow to
/// run and to compile); the task columns are a multiple of it that divides
/// `n` (all of `n` with a tail), the register tile columns a multiple of it
/// up to the task's (a task's last tile in a row takes the columns left
/// over); the reduction block is the largest divisor of `k` up
/// to `reductionTile` (all of `k` when 0). The register tiles are
/// `registers` and then tiles of half as many rows down to one row, each as
/// wide as the same number of accumulators allows within a task.
static MatmulPlan planMatmul(int64_t n, int64_t k, int64_t bitWidth,
                             int64_t vectorSize, int64_t parallelColumns,
                             int64_t reductionTile, ArrayRef<int64_t> registers,
                             int64_t singlePassRows) {
  int64_t lanes = std::max<int64_t>(1, vectorSize * 32 / bitWidth);
  while (lanes > n && lanes > 1)
    lanes /= 2;
  int64_t tail = n % lanes;
  int64_t blocks = n / lanes;
  int64_t taskBlocks =
      parallelColumns == 0 || tail != 0
          ? blocks
          : largestDivisor(blocks,
                           std::max<int64_t>(1, parallelColumns / lanes));
  int64_t reductionBlock =
      reductionTile == 0 ? k : largestDivisor(k, reductionTile);
  MatmulPlan plan{
      lanes, tail != 0 ? n : taskBlocks * lanes, reductionBlock, {}, 0, {}};
  auto columns = [&](int64_t wanted) {
    return lanes * std::clamp<int64_t>(wanted / lanes, 1, taskBlocks);
  };
  plan.registerTiles.push_back({registers[0], columns(registers[1])});
  for (int64_t rows = registers[0] / 2; rows >= 1; rows /= 2)
    plan.registerTiles.push_back(
        {rows, columns(registers[0] * registers[1] / rows)});
  // Single-pass tiles: as many accumulators as the vector registers leave
  // room for beside the weight vectors (AVX-512 has 32 registers of 512 bits,
  // narrower targets 16), in a power of two of vectors per row, at most
  // kSinglePassVectors.
  int64_t accumulators = (lanes * bitWidth >= 512 ? 32 : 16) - 4;
  for (int64_t rows = 1; rows <= singlePassRows; ++rows) {
    int64_t vectors = llvm::bit_floor<uint64_t>(
        std::clamp<int64_t>(accumulators / rows, 1, kSinglePassVectors));
    plan.singlePassColumns.push_back(columns(vectors * lanes));
  }
  return plan;
}

namespace {
/// Where a matmul's left-hand side rows come from: `lhs` itself, or, for a
/// left-hand side that is a row gather (`lhs[i, :] = source[row(tokens[i]),
/// :]`, as convert-moe-to-linalg builds for an expert's input rows), the
/// rows of `source` read in place: row `i` of the matmul (plus `rowOffset`,
/// for a tile of the gathered rows) reads `source[rowOf(tokens[i])]`, so the
/// gathered copy is never written.
struct LhsAccess {
  Value lhs;
  Value source, tokens, rowOffset;
  /// The gather op, which the matmul no longer reads.
  Operation *gather = nullptr;
  /// The gather's row of a token value (its index computation, cloned).
  std::function<Value(OpBuilder &, Location, Value)> rowOf;

  bool gathered() const { return static_cast<bool>(source); }
  /// The row of the matrix that `tensor.extract` reads for matmul row `row`.
  Value sourceRow(OpBuilder &b, Location loc, Value row) const {
    if (!gathered())
      return row;
    Value i = rowOffset ? arith::AddIOp::create(b, loc, rowOffset, row) : row;
    Value token = tensor::ExtractOp::create(b, loc, tokens, ValueRange{i});
    return rowOf(b, loc, token);
  }
  Value matrix() const { return gathered() ? source : lhs; }
};
} // namespace

namespace {
/// Where a matmul's right-hand side comes from: `rhs` itself, or, for (slices
/// of) a `linalg.unpack` of column panels as moe-pack-expert-weights makes
/// them, the panels read in place: element `[k, c]` of `rhs` is
/// `packed[matrix, (c + columnOffset) / P, k + rowOffset, (c + columnOffset)
/// % P]` (no `matrix` index for 2-d weights), so a vector of columns within
/// one panel is one contiguous load and the unpacked matrix is never made.
struct RhsAccess {
  Value rhs;
  Value packed, matrix, rowOffset, columnOffset;
  int64_t panel = 0;

  bool isPacked() const { return static_cast<bool>(packed); }

  /// A column of `rhs` as the indices the loads need.
  struct Column {
    Value column, panel, inner;
  };
  Column column(OpBuilder &b, Location loc, Value column) const {
    if (!isPacked())
      return {column, Value(), Value()};
    Value absolute = arith::AddIOp::create(b, loc, columnOffset, column);
    Value width = arith::ConstantIndexOp::create(b, loc, panel);
    return {column, arith::DivUIOp::create(b, loc, absolute, width),
            arith::RemUIOp::create(b, loc, absolute, width)};
  }
  /// Row `k` of `rhs` as the row the loads index: `k` itself, or the row of
  /// the panels' unsliced matrix.
  Value row(OpBuilder &b, Location loc, Value k) const {
    return isPacked() ? arith::AddIOp::create(b, loc, rowOffset, k) : k;
  }
  /// The indices into `packed` of `row` (see row()) and column `c`.
  SmallVector<Value> panelIndices(Value row, const Column &c) const {
    SmallVector<Value> indices;
    if (matrix)
      indices.push_back(matrix);
    indices.append({c.panel, row, c.inner});
    return indices;
  }
  /// The vector of `type` at `row` (see row()) from column `c`. Weights
  /// stored in a narrower float type (bf16 or f16 for f32) are loaded as
  /// they are and widened.
  Value read(OpBuilder &b, Location loc, VectorType type, Value row,
             const Column &c) const {
    Value source = isPacked() ? packed : rhs;
    Type stored = getElementTypeOrSelf(source.getType());
    auto storedType = VectorType::get(type.getShape(), stored);
    Value padding = arith::ConstantOp::create(b, loc, b.getZeroAttr(stored));
    SmallVector<bool> inBounds = {true};
    Value loaded;
    if (!isPacked())
      loaded = vector::TransferReadOp::create(b, loc, storedType, rhs,
                                              ValueRange{row, c.column},
                                              padding, inBounds);
    else
      loaded = vector::TransferReadOp::create(
          b, loc, storedType, packed, panelIndices(row, c), padding, inBounds);
    if (stored == type.getElementType())
      return loaded;
    return arith::ExtFOp::create(b, loc, type, loaded);
  }
};
} // namespace

/// The panel access of `rhs` (see RhsAccess) when it is a chain of unit-stride
/// slices (a 2-d slice of a 2-d tensor, or a matrix of a 3-d one) of a
/// linalg.unpack with `outer_dims_perm = [0, 2, 1]` (3-d) or `[1, 0]` (2-d)
/// and one static inner tile on the last dimension, a multiple of `lanes`;
/// otherwise just `rhs`. Offsets are added up at the insertion point of `b`.
static RhsAccess findRhsAccess(OpBuilder &b, Location loc, Value rhs,
                               int64_t lanes) {
  RhsAccess access;
  access.rhs = rhs;
  SmallVector<OpFoldResult> rowOffsets, columnOffsets;
  OpFoldResult matrix;
  Value v = rhs;
  while (auto slice = v.getDefiningOp<tensor::ExtractSliceOp>()) {
    if (!slice.hasUnitStride() || slice.getType().getRank() != 2)
      return access;
    SmallVector<OpFoldResult> offsets = slice.getMixedOffsets();
    int64_t sourceRank = slice.getSourceType().getRank();
    if (sourceRank == 3 && !matrix &&
        isConstantIntValue(slice.getMixedSizes()[0], 1)) {
      matrix = offsets[0];
      offsets.erase(offsets.begin());
    } else if (sourceRank != 2) {
      return access;
    }
    rowOffsets.push_back(offsets[0]);
    columnOffsets.push_back(offsets[1]);
    v = slice.getSource();
  }
  auto unpack = v.getDefiningOp<linalg::UnPackOp>();
  if (!unpack)
    return access;
  int64_t rank = unpack.getDestType().getRank();
  SmallVector<int64_t> perm =
      rank == 3 ? SmallVector<int64_t>{0, 2, 1} : SmallVector<int64_t>{1, 0};
  ArrayRef<int64_t> tiles = unpack.getStaticInnerTiles();
  if ((rank == 3) != static_cast<bool>(matrix) ||
      unpack.getInnerDimsPos() != ArrayRef<int64_t>{rank - 1} ||
      unpack.getOuterDimsPerm() != ArrayRef<int64_t>(perm) ||
      tiles.size() != 1 || ShapedType::isDynamic(tiles[0]) ||
      tiles[0] % lanes != 0)
    return access;
  auto sum = [&](ArrayRef<OpFoldResult> terms) {
    Value total = arith::ConstantIndexOp::create(b, loc, 0);
    for (OpFoldResult term : terms)
      if (!isConstantIntValue(term, 0))
        total = arith::AddIOp::create(
            b, loc, total, getValueOrCreateConstantIndexOp(b, loc, term));
    return total;
  };
  access.packed = unpack.getSource();
  access.panel = tiles[0];
  if (matrix)
    access.matrix = getValueOrCreateConstantIndexOp(b, loc, matrix);
  access.rowOffset = sum(rowOffsets);
  access.columnOffset = sum(columnOffsets);
  return access;
}

/// `acc[m0 : m0+rows, n0 : n0+cols] += lhs[m0 : m0+rows, k0 : k0+kSize] ·
/// rhs[k0 : k0+kSize, n0 : n0+cols]` with the accumulator tile in
/// `rows * cols / lanes` 1-d vectors carried across the K loop: per k, one
/// vector load per column block of `rhs`, one broadcast per row of `lhs` and
/// one `vector.fma` per accumulator.
static Value buildRegisterTile(OpBuilder &b, Location loc, const LhsAccess &lhs,
                               const RhsAccess &rhs, Value acc, Value m0,
                               Value n0, Value k0, int64_t kSize, int64_t rows,
                               int64_t cols, int64_t lanes,
                               int64_t prefetchDistance) {
  auto accType = cast<RankedTensorType>(acc.getType());
  Type elementType = accType.getElementType();
  auto vectorType = VectorType::get({lanes}, elementType);
  int64_t columnBlocks = cols / lanes;
  auto index = [&](int64_t v) -> Value {
    return arith::ConstantIndexOp::create(b, loc, v);
  };
  Value padding = arith::ConstantOp::create(b, loc, b.getZeroAttr(elementType));
  SmallVector<bool> inBounds = {true};
  SmallVector<Value> rowIndices, lhsRows, columnIndices;
  SmallVector<RhsAccess::Column> rhsColumns;
  for (int64_t i = 0; i < rows; ++i) {
    rowIndices.push_back(
        i == 0 ? m0 : arith::AddIOp::create(b, loc, m0, index(i)).getResult());
    lhsRows.push_back(lhs.sourceRow(b, loc, rowIndices.back()));
  }
  for (int64_t j = 0; j < columnBlocks; ++j)
    columnIndices.push_back(
        j == 0
            ? n0
            : arith::AddIOp::create(b, loc, n0, index(j * lanes)).getResult());
  for (Value column : columnIndices)
    rhsColumns.push_back(rhs.column(b, loc, column));
  // Tiles of several rows spend long enough on each weight vector that the
  // hardware prefetcher falls behind the panel stream; they prefetch the
  // panel rows `prefetchDistance` ahead (an address past the panel is only
  // a hint, never a fault).
  Value prefetchBuffer;
  if (rhs.isPacked() && prefetchDistance > 0 && rows >= kPrefetchRows) {
    auto packedType = cast<RankedTensorType>(rhs.packed.getType());
    prefetchBuffer = bufferization::ToBufferOp::create(
        b, loc,
        MemRefType::get(packedType.getShape(), packedType.getElementType()),
        rhs.packed, /*readOnly=*/true);
  }

  SmallVector<Value> accumulators;
  for (Value row : rowIndices)
    for (Value column : columnIndices)
      accumulators.push_back(vector::TransferReadOp::create(
          b, loc, vectorType, acc, ValueRange{row, column}, padding, inBounds));
  auto kLoop = scf::ForOp::create(
      b, loc, k0, arith::AddIOp::create(b, loc, k0, index(kSize)), index(1),
      accumulators,
      [&](OpBuilder &b, Location loc, Value k, ValueRange iterArgs) {
        Value row = rhs.row(b, loc, k);
        SmallVector<Value> rhsVectors;
        for (const RhsAccess::Column &column : rhsColumns)
          rhsVectors.push_back(rhs.read(b, loc, vectorType, row, column));
        if (prefetchBuffer) {
          Value ahead =
              arith::AddIOp::create(b, loc, row, index(prefetchDistance));
          for (const RhsAccess::Column &column : rhsColumns)
            memref::PrefetchOp::create(b, loc, prefetchBuffer,
                                       rhs.panelIndices(ahead, column),
                                       /*isWrite=*/false, /*localityHint=*/3,
                                       /*isDataCache=*/true);
        }
        SmallVector<Value> next;
        for (auto [i, row] : llvm::enumerate(lhsRows)) {
          Value a = tensor::ExtractOp::create(b, loc, lhs.matrix(),
                                              ValueRange{row, k});
          // A narrower left-hand side (16-bit activations of an imported
          // MatMul accumulating in f32) is widened as it is read.
          if (a.getType() != elementType)
            a = arith::ExtFOp::create(b, loc, elementType, a);
          Value splat = vector::BroadcastOp::create(b, loc, vectorType, a);
          for (auto [j, rhsVector] : llvm::enumerate(rhsVectors))
            next.push_back(vector::FMAOp::create(
                b, loc, splat, rhsVector, iterArgs[i * columnBlocks + j]));
        }
        scf::YieldOp::create(b, loc, next);
      });
  // The vectors are written last row and last column first. One-shot
  // bufferization takes a 1-d vector written at constant indices [0, 0] for an
  // overwrite of the whole tensor (its "reads the destination" check zips the
  // shapes and stops at the vector's rank): were that the first write into an
  // accumulator that another op also uses (CSE shares identical zero fills),
  // the accumulator would not be copied and the other tiles would start from
  // uninitialized memory. In this order the first write of a tile is at
  // [0, 0] only when the tile is one vector, and then only in a tensor that
  // one vector does cover.
  Value result = acc;
  for (int64_t i = rows - 1; i >= 0; --i)
    for (int64_t j = columnBlocks - 1; j >= 0; --j)
      result = vector::TransferWriteOp::create(
                   b, loc, kLoop.getResult(i * columnBlocks + j), result,
                   ValueRange{rowIndices[i], columnIndices[j]}, inBounds)
                   ->getResult(0);
  return result;
}

/// `acc += lhs[:, k0 : k0+kSize] · rhs[k0 : k0+kSize, :]` on tensors as
/// loops over register tiles: the rows in blocks of each register tile's
/// height in turn (the tallest first, then the rows left over), the columns
/// in blocks of its width.
static Value buildReductionBlock(OpBuilder &b, Location loc,
                                 const LhsAccess &lhs, const RhsAccess &rhs,
                                 Value acc, Value k0, int64_t kSize,
                                 const MatmulPlan &plan) {
  auto index = [&](int64_t v) -> Value {
    return arith::ConstantIndexOp::create(b, loc, v);
  };
  Value numRows = tensor::DimOp::create(b, loc, acc, 0);
  int64_t numColumns = cast<RankedTensorType>(acc.getType()).getDimSize(1);
  Value lower = index(0), result = acc;
  for (auto [rows, cols] : plan.registerTiles) {
    Value step = index(rows);
    Value left = arith::SubIOp::create(b, loc, numRows, lower);
    Value full = arith::MulIOp::create(
        b, loc, arith::DivUIOp::create(b, loc, left, step), step);
    Value upper = arith::AddIOp::create(b, loc, lower, full);
    auto rowLoop = scf::ForOp::create(
        b, loc, lower, upper, step, result,
        [&, rows = rows, cols = cols](OpBuilder &b, Location loc, Value m0,
                                      ValueRange rowArgs) {
          // The tail of columns past the last whole vector first, in vectors
          // of the largest power of two dividing its width (so that no first
          // write of a tile is a vector at [0, 0] narrower than the
          // accumulator; see buildRegisterTile), then whole tiles, then one
          // narrower tile for the whole vectors left over.
          int64_t tail = numColumns % plan.lanes;
          int64_t body = numColumns - tail;
          int64_t whole = body / cols * cols;
          Value tiles = rowArgs[0];
          if (tail)
            tiles = buildRegisterTile(b, loc, lhs, rhs, tiles, m0, index(body),
                                      k0, kSize, rows, tail, tail & -tail,
                                      plan.prefetchDistance);
          auto columnLoop = scf::ForOp::create(
              b, loc, index(0), index(whole), index(cols), tiles,
              [&](OpBuilder &b, Location loc, Value n0, ValueRange args) {
                scf::YieldOp::create(
                    b, loc,
                    buildRegisterTile(b, loc, lhs, rhs, args[0], m0, n0, k0,
                                      kSize, rows, cols, plan.lanes,
                                      plan.prefetchDistance));
              });
          tiles = columnLoop.getResult(0);
          if (whole < body)
            tiles = buildRegisterTile(b, loc, lhs, rhs, tiles, m0, index(whole),
                                      k0, kSize, rows, body - whole, plan.lanes,
                                      plan.prefetchDistance);
          scf::YieldOp::create(b, loc, tiles);
        });
    result = rowLoop.getResult(0);
    lower = upper;
  }
  return result;
}

/// `acc += lhs · rhs` in passes over blocks of weights: an `scf.for` over
/// blocks of `plan.reductionBlock` rows of `rhs` (a block stays in cache while
/// every row tile uses it), each computed by `buildReductionBlock`.
static Value buildBlockedLoops(OpBuilder &b, Location loc, const LhsAccess &lhs,
                               const RhsAccess &rhs, Value acc,
                               const MatmulPlan &plan) {
  int64_t reduction = cast<RankedTensorType>(lhs.lhs.getType()).getDimSize(1);
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  if (plan.reductionBlock == reduction)
    return buildReductionBlock(b, loc, lhs, rhs, acc, zero, reduction, plan);
  auto loop = scf::ForOp::create(
      b, loc, zero, arith::ConstantIndexOp::create(b, loc, reduction),
      arith::ConstantIndexOp::create(b, loc, plan.reductionBlock), acc,
      [&](OpBuilder &b, Location loc, Value k0, ValueRange args) {
        scf::YieldOp::create(b, loc,
                             buildReductionBlock(b, loc, lhs, rhs, args[0], k0,
                                                 plan.reductionBlock, plan));
      });
  return loop.getResult(0);
}

/// `acc += lhs · rhs` for exactly `rows` rows of `lhs` in one pass over the
/// weights: register tiles `rows` high (plan.singlePassColumns) walk all of K
/// (tiles of kPrefetchRows rows or more prefetch their panels). Blocks of K
/// exist so that the tiles of several passes find a block in L2; with one pass
/// they only cut each panel's stream short, and the rows left over after the
/// tallest tiles (5 = 4 + 1, 7 = 4 + 2 + 1) cost passes that the other
/// thread's stream does not hide (S1 at T = 16 on the benchmark machine: the
/// layer at 90% of its read floor with the passes, 96% without;
/// docs/Passes.md).
static Value buildSinglePass(OpBuilder &b, Location loc, const LhsAccess &lhs,
                             const RhsAccess &rhs, Value acc, int64_t rows,
                             const MatmulPlan &plan) {
  int64_t reduction = cast<RankedTensorType>(lhs.lhs.getType()).getDimSize(1);
  MatmulPlan single = plan;
  single.registerTiles = {{rows, plan.singlePassColumns[rows - 1]}};
  return buildReductionBlock(b, loc, lhs, rhs, acc,
                             arith::ConstantIndexOp::create(b, loc, 0),
                             reduction, single);
}

/// `acc += lhs · rhs`. With weights in panels and at most as many rows as
/// there are single-pass tiles (a run-time choice for a dynamic M: an
/// `scf.if` and an `scf.index_switch` over the row count), one pass of tiles
/// exactly as high as the rows (buildSinglePass); otherwise passes over
/// blocks of K (buildBlockedLoops).
static Value buildMatmulLoops(OpBuilder &b, Location loc, const LhsAccess &lhs,
                              const RhsAccess &rhs, Value acc,
                              const MatmulPlan &plan) {
  int64_t singlePassRows = plan.singlePassColumns.size();
  if (!rhs.isPacked() || singlePassRows == 0)
    return buildBlockedLoops(b, loc, lhs, rhs, acc, plan);
  auto accType = cast<RankedTensorType>(acc.getType());
  int64_t staticRows = accType.getDimSize(0);
  if (!ShapedType::isDynamic(staticRows)) {
    if (staticRows >= 1 && staticRows <= singlePassRows)
      return buildSinglePass(b, loc, lhs, rhs, acc, staticRows, plan);
    return buildBlockedLoops(b, loc, lhs, rhs, acc, plan);
  }
  Value numRows = tensor::DimOp::create(
      b, loc, acc, arith::ConstantIndexOp::create(b, loc, 0));
  Value few = arith::CmpIOp::create(
      b, loc, arith::CmpIPredicate::ule, numRows,
      arith::ConstantIndexOp::create(b, loc, singlePassRows));
  auto ifOp = scf::IfOp::create(
      b, loc, few,
      [&](OpBuilder &b, Location loc) {
        SmallVector<int64_t> cases =
            llvm::to_vector(llvm::seq<int64_t>(1, singlePassRows + 1));
        auto switchOp = scf::IndexSwitchOp::create(
            b, loc, TypeRange{accType}, numRows, cases, cases.size());
        // No rows: nothing to add.
        {
          OpBuilder::InsertionGuard guard(b);
          b.createBlock(&switchOp.getDefaultRegion());
          scf::YieldOp::create(b, loc, acc);
        }
        for (auto [i, rows] : llvm::enumerate(cases)) {
          OpBuilder::InsertionGuard guard(b);
          b.createBlock(&switchOp.getCaseRegions()[i]);
          scf::YieldOp::create(
              b, loc, buildSinglePass(b, loc, lhs, rhs, acc, rows, plan));
        }
        scf::YieldOp::create(b, loc, switchOp.getResults());
      },
      [&](OpBuilder &b, Location loc) {
        scf::YieldOp::create(b, loc,
                             buildBlockedLoops(b, loc, lhs, rhs, acc, plan));
      });
  return ifOp.getResult(0);
}

/// The ops a gather's row computation may use: index casts, signed max and
/// min, and constants.
static bool isRowOp(Operation *op) {
  return op && isa<arith::IndexCastOp, arith::MaxSIOp, arith::MinSIOp,
                   arith::ConstantOp>(op);
}

/// Clones into `b` the computation of `v` inside a linalg body from the body
/// argument `arg`, with `replacement` for `arg` (isRowOp ops only). Null if
/// `v` uses anything else.
static Value cloneRowComputation(OpBuilder &b, Location loc, Value v,
                                 BlockArgument arg, Value replacement) {
  if (v == arg)
    return replacement;
  Operation *def = v.getDefiningOp();
  if (!isRowOp(def))
    return Value();
  IRMapping mapping;
  for (Value operand : def->getOperands()) {
    Value cloned = cloneRowComputation(b, loc, operand, arg, replacement);
    if (!cloned)
      return Value();
    mapping.map(operand, cloned);
  }
  return b.clone(*def, mapping)->getResult(0);
}

/// Whether cloneRowComputation can clone `v` from `arg`.
static bool isRowComputation(Value v, BlockArgument arg) {
  if (v == arg)
    return true;
  Operation *def = v.getDefiningOp();
  if (!isRowOp(def))
    return false;
  return llvm::all_of(def->getOperands(), [&](Value operand) {
    return isRowComputation(operand, arg);
  });
}

/// The row-gather access of `lhs` (see LhsAccess), or just `lhs`: `lhs` (or
/// a slice of it with all its columns) is made by a 2-d linalg.generic with
/// one 1-d integer input indexed by the row, whose body yields
/// `tensor.extract %source[row(%in), linalg.index 1]` with `%source` from
/// outside the body and `row` built from `%in` by cloneRowComputation's ops.
static LhsAccess findLhsAccess(Value lhs) {
  LhsAccess access;
  access.lhs = lhs;
  Value gathered = lhs;
  tensor::ExtractSliceOp slice = lhs.getDefiningOp<tensor::ExtractSliceOp>();
  if (slice) {
    auto sourceType = slice.getSourceType();
    if (sourceType.getRank() != 2 || !slice.hasUnitStride() ||
        ShapedType::isDynamic(sourceType.getDimSize(1)) ||
        !isConstantIntValue(slice.getMixedOffsets()[1], 0) ||
        !isConstantIntValue(slice.getMixedSizes()[1], sourceType.getDimSize(1)))
      return access;
    gathered = slice.getSource();
  }
  auto generic = gathered.getDefiningOp<linalg::GenericOp>();
  if (!generic || generic.getNumDpsInputs() != 1 ||
      generic.getNumDpsInits() != 1 || generic.getNumLoops() != 2 ||
      generic.getNumReductionLoops() != 0 || !generic.hasPureTensorSemantics())
    return access;
  MLIRContext *ctx = generic.getContext();
  AffineExpr d0 = getAffineDimExpr(0, ctx), d1 = getAffineDimExpr(1, ctx);
  SmallVector<AffineMap> maps = generic.getIndexingMapsArray();
  Value tokens = generic.getDpsInputs()[0];
  auto tokensType = dyn_cast<RankedTensorType>(tokens.getType());
  if (!tokensType || tokensType.getRank() != 1 ||
      !tokensType.getElementType().isSignlessInteger() ||
      maps[0] != AffineMap::get(2, 0, {d0}, ctx) ||
      maps[1] != AffineMap::get(2, 0, {d0, d1}, ctx))
    return access;
  Block &body = generic.getRegion().front();
  auto yield = cast<linalg::YieldOp>(body.getTerminator());
  auto extract = yield.getValues()[0].getDefiningOp<tensor::ExtractOp>();
  if (!extract || extract.getIndices().size() != 2 ||
      generic.getRegion().isAncestor(extract.getTensor().getParentRegion()))
    return access;
  auto column = extract.getIndices()[1].getDefiningOp<linalg::IndexOp>();
  if (!column || column.getDim() != 1)
    return access;
  BlockArgument in = body.getArgument(0);
  Value rowExpr = extract.getIndices()[0];
  if (!isRowComputation(rowExpr, in))
    return access;
  access.gather = generic;
  access.source = extract.getTensor();
  access.tokens = tokens;
  // Rows of a slice start at its offset (made only now that it is used).
  if (slice) {
    OpBuilder b(slice);
    access.rowOffset = getValueOrCreateConstantIndexOp(
        b, slice.getLoc(), slice.getMixedOffsets()[0]);
  }
  access.rowOf = [rowExpr, in](OpBuilder &b, Location loc, Value token) {
    return cloneRowComputation(b, loc, rowExpr, in, token);
  };
  return access;
}

/// Tiles a matmul with static K and N into an `scf.forall` over column
/// blocks (and row blocks when `parallel[0]` is set), each lowered by
/// `buildMatmulLoops`; a matmul already inside an `scf.forall` is one task.
static void tileAndVectorizeMatmul(RewriterBase &rewriter, linalg::MatmulOp op,
                                   ArrayRef<int64_t> parallel,
                                   int64_t reductionTile,
                                   ArrayRef<int64_t> registers,
                                   int64_t vectorSize, int64_t prefetchDistance,
                                   int64_t singlePassRows,
                                   SetVector<Operation *> &gathers) {
  SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  Type elementType = getElementTypeOrSelf(op.getDpsInits()[0].getType());
  if (ShapedType::isDynamic(ranges[1]) || ShapedType::isDynamic(ranges[2]) ||
      !elementType.isIntOrFloat() || !isa<FloatType>(elementType))
    return;
  // Inside an scf.forall (convert-moe-to-linalg's experts in parallel) a
  // matmul is one thread's work: one task.
  SmallVector<int64_t> tasks(parallel);
  if (op->getParentOfType<scf::ForallOp>())
    tasks.assign(tasks.size(), 0);
  MatmulPlan plan = planMatmul(
      ranges[1], ranges[2], elementType.getIntOrFloatBitWidth(), vectorSize,
      tasks[1], reductionTile, registers, singlePassRows);
  plan.prefetchDistance = prefetchDistance;
  int64_t taskColumns = plan.taskColumns == ranges[1] ? 0 : plan.taskColumns;
  auto tiled = tile(rewriter, op, {tasks[0], taskColumns, 0},
                    scf::SCFTilingOptions::LoopType::ForallOp);
  if (failed(tiled))
    return;
  auto matmul = cast<linalg::MatmulOp>(tiled->first);
  LhsAccess lhs = findLhsAccess(matmul.getDpsInputs()[0]);
  if (lhs.gather)
    gathers.insert(lhs.gather);
  rewriter.setInsertionPoint(matmul);
  RhsAccess rhs = findRhsAccess(rewriter, matmul.getLoc(),
                                matmul.getDpsInputs()[1], plan.lanes);
  Value result = buildMatmulLoops(rewriter, matmul.getLoc(), lhs, rhs,
                                  matmul.getDpsInits()[0], plan);
  rewriter.replaceOp(matmul, result);
}

/// Whether `type` has a whole number of bytes per element: vector loads and
/// stores of `i1` would pack bits where memrefs hold one byte per element.
static bool hasByteElements(Type type) {
  Type elementType = getElementTypeOrSelf(type);
  return elementType.isIntOrIndexOrFloat() && !elementType.isIndex() &&
         elementType.getIntOrFloatBitWidth() % 8 == 0;
}

/// Whether `op` is a 2-d elementwise linalg op on tensors with a static
/// inner dimension and byte-sized elements.
static bool isElementwise2d(linalg::LinalgOp op) {
  if (isa<linalg::MatmulOp>(op) || !op.hasPureTensorSemantics() ||
      op.getNumLoops() != 2 || op.getNumReductionLoops() != 0)
    return false;
  if (!llvm::all_of(op->getOperandTypes(), hasByteElements))
    return false;
  return !ShapedType::isDynamic(op.getStaticLoopRanges()[1]);
}

/// Erases the unused tensor.extract_slice ops that read `op`'s result,
/// directly or through other such slices.
static void eraseDeadSlices(RewriterBase &rewriter, Operation *op) {
  for (Operation *user : llvm::make_early_inc_range(op->getUsers())) {
    if (!isa<tensor::ExtractSliceOp>(user))
      continue;
    eraseDeadSlices(rewriter, user);
    if (user->use_empty())
      rewriter.eraseOp(user);
  }
}

namespace {
struct MoECPUTileAndVectorizePass
    : public moe::impl::MoECPUTileAndVectorizeBase<MoECPUTileAndVectorizePass> {
  using MoECPUTileAndVectorizeBase::MoECPUTileAndVectorizeBase;

  void runOnOperation() override {
    SmallVector<int64_t> parallel(parallelTileSizes.begin(),
                                  parallelTileSizes.end());
    if (parallel.empty())
      parallel = {0, 256};
    SmallVector<int64_t> registers(registerTileSizes.begin(),
                                   registerTileSizes.end());
    if (registers.empty())
      registers = {8, 32};
    if (parallel.size() != 2 || registers.size() != 2 ||
        llvm::any_of(registers, [](int64_t s) { return s < 1; }) ||
        llvm::any_of(parallel, [](int64_t s) { return s < 0; }) ||
        reductionTileSize < 0 || vectorSize < 1 || prefetchDistance < 0 ||
        singlePassRows < 0 || singlePassRows > kMaxSinglePassRows) {
      getOperation().emitError()
          << "moe-cpu-tile-and-vectorize needs 2 non-negative parallel tile "
             "sizes, a non-negative reduction tile size, 2 positive register "
             "tile sizes, a positive vector size, a non-negative prefetch "
             "distance and a single-pass row count from 0 to "
          << kMaxSinglePassRows;
      return signalPassFailure();
    }

    IRRewriter rewriter(&getContext());
    SmallVector<linalg::MatmulOp> matmuls;
    getOperation().walk([&](linalg::MatmulOp op) {
      if (op.hasPureTensorSemantics() && !op.hasUserDefinedMaps())
        matmuls.push_back(op);
    });
    SetVector<Operation *> gathers;
    for (linalg::MatmulOp matmul : matmuls)
      tileAndVectorizeMatmul(rewriter, matmul, parallel, reductionTileSize,
                             registers, vectorSize, prefetchDistance,
                             singlePassRows, gathers);
    // Row gathers that the matmuls now read in place are not materialized
    // (a gather that something else reads stays; its slices are dead).
    for (Operation *gather : gathers) {
      Value init = cast<linalg::GenericOp>(gather).getDpsInits()[0];
      for (Operation *user : llvm::make_early_inc_range(gather->getUsers())) {
        if (isa<tensor::ExtractSliceOp>(user) && user->use_empty()) {
          rewriter.eraseOp(user);
        } else if (auto dim = dyn_cast<tensor::DimOp>(user)) {
          // Its shape is its init's.
          rewriter.modifyOpInPlace(
              dim, [&] { dim.getSourceMutable().assign(init); });
        }
      }
      if (gather->use_empty())
        rewriter.eraseOp(gather);
    }

    // Panels the matmuls now read in place are not unpacked; an unpack that
    // something else reads becomes a transpose and copy.
    SmallVector<linalg::UnPackOp> unpacks;
    getOperation().walk([&](linalg::UnPackOp op) { unpacks.push_back(op); });
    for (linalg::UnPackOp unpack : unpacks) {
      eraseDeadSlices(rewriter, unpack);
      if (unpack->use_empty()) {
        rewriter.eraseOp(unpack);
        continue;
      }
      rewriter.setInsertionPoint(unpack);
      if (failed(linalg::lowerUnPack(rewriter, unpack))) {
        unpack.emitError("cannot lower this linalg.unpack for the CPU");
        return signalPassFailure();
      }
    }

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
