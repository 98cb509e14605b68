//===- QuantizedMatmul.cpp - GEMMs on int8/int4 expert weights ------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// The GEMMs of `moe.quantized_experts`. The weights stay in their bytes: each
// step of the reduction loop loads the codes of a few output rows, turns them
// into floats as they are (a zero extension, for 4 bits a mask and a shift,
// and a conversion), and feeds them to the accumulators of every token row of
// the register tile; each block's sums are scaled once at the end of the block.
// At one token (decode) the loop is bound by reading the weights, so reading
// 1 or 0.5 bytes per weight instead of 4 is the point.
//
//===----------------------------------------------------------------------===//

#include "QuantizedMatmul.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Vector/IR/VectorOps.h"

#include <algorithm>
#include <cassert>

using namespace mlir;

/// The largest divisor of `range` that is at most `size`.
static int64_t largestDivisor(int64_t range, int64_t size) {
  for (int64_t d = std::min(size, range); d > 1; --d)
    if (range % d == 0)
      return d;
  return 1;
}

namespace {
/// Builds the loops of one quantized GEMM; see `buildQuantizedMatmul`.
struct QuantizedMatmulBuilder {
  /// Widest vector of f32 lanes, output rows and token rows per register
  /// tile, and output columns per parallel task.
  static constexpr int64_t kMaxLanes = 16;
  static constexpr int64_t kTileColumns = 4;
  static constexpr int64_t kTileRows = 2;
  static constexpr int64_t kTaskColumns = 128;

  OpBuilder &b;
  Location loc;
  Value x, bytes, scales, expert;
  int64_t bits, zeroPoint;
  /// Explicit zero points `[E, N, K / B]`, or null (the symmetric one).
  Value zeroPoints;
  Type elementType;
  int64_t reduction, blocks, blockSize, lanes;

  Value index(int64_t v) { return arith::ConstantIndexOp::create(b, loc, v); }

  /// Reduction indices per step of the K loop: `lanes` codes at 8 bits,
  /// `lanes` bytes of two codes each at 4 bits.
  int64_t step() const { return bits == 4 ? 2 * lanes : lanes; }

  /// The codes `q` (as floats, unsigned) of output row `n` for the `step()`
  /// reduction indices from `k`: one `[lanes]` vector at 8 bits; at 4 bits
  /// two, the codes of the even indices (low nibbles) and of the odd ones
  /// (high nibbles), so the codes are never shuffled (the inputs are split
  /// instead, once per row). The zero point is not subtracted here: each
  /// block adds `-zp * sum(x)` once (fewer instructions per code than
  /// centering every code, about 20% less time for int4 at decode).
  SmallVector<Value> loadCodes(OpBuilder &b, Location loc, Value n, Value k) {
    auto i8 = b.getI8Type();
    auto bytesType = VectorType::get({lanes}, i8);
    Value byteIndex = k;
    if (bits == 4)
      byteIndex = arith::DivUIOp::create(b, loc, k, index(2));
    Value pad = arith::ConstantOp::create(b, loc, b.getIntegerAttr(i8, 0));
    Value codes = vector::TransferReadOp::create(
        b, loc, bytesType, bytes, ValueRange{expert, n, byteIndex}, pad,
        ArrayRef<bool>{true});
    // The codes as they are (unsigned), zero-extended to 32 bits (x86 has no
    // byte shifts), the nibbles split by a mask and a shift. The zero point
    // is subtracted once per block (`zp * sum x`), not per code.
    auto wideType = VectorType::get({lanes}, b.getI32Type());
    auto wideSplat = [&](int64_t v) -> Value {
      return arith::ConstantOp::create(
          b, loc,
          DenseElementsAttr::get(wideType,
                                 b.getIntegerAttr(b.getI32Type(), v)));
    };
    Value wide = arith::ExtUIOp::create(b, loc, wideType, codes);
    SmallVector<Value> parts;
    if (bits == 8) {
      parts = {wide};
    } else {
      parts = {arith::AndIOp::create(b, loc, wide, wideSplat(0xF)),
               arith::ShRUIOp::create(b, loc, wide, wideSplat(4))};
    }
    auto floatType = VectorType::get({lanes}, elementType);
    SmallVector<Value> values;
    for (Value part : parts)
      values.push_back(arith::SIToFPOp::create(b, loc, floatType, part));
    return values;
  }

  /// The inputs of row `m` for the `step()` reduction indices from `k`,
  /// matching `loadWeights`: at 4 bits split into even and odd indices.
  SmallVector<Value> loadInputs(OpBuilder &b, Location loc, Value m, Value k,
                                Value padding) {
    auto type = VectorType::get({step()}, elementType);
    Value v = vector::TransferReadOp::create(b, loc, type, x, ValueRange{m, k},
                                             padding, ArrayRef<bool>{true});
    if (bits != 4)
      return {v};
    auto split = vector::DeinterleaveOp::create(b, loc, v);
    return {split.getRes1(), split.getRes2()};
  }

  /// `tile[m0 + i, n0 + j] += sum_k x[m0 + i, k] W[col0 + n0 + j, k]` for
  /// `rows x cols` entries; `col0` is the task's first output column.
  Value buildRegisterTile(OpBuilder &b, Location loc, Value tile, Value m0,
                          Value n0, Value col0, int64_t rows, int64_t cols) {
    auto vectorType = VectorType::get({lanes}, elementType);
    Value zero = arith::ConstantOp::create(
        b, loc, DenseElementsAttr::get(vectorType, b.getZeroAttr(elementType)));
    Value padding =
        arith::ConstantOp::create(b, loc, b.getZeroAttr(elementType));
    SmallVector<Value> rowIndex, columnIndex;
    for (int64_t i = 0; i < rows; ++i)
      rowIndex.push_back(arith::AddIOp::create(b, loc, m0, index(i)));
    for (int64_t j = 0; j < cols; ++j)
      columnIndex.push_back(arith::AddIOp::create(
          b, loc, arith::AddIOp::create(b, loc, col0, n0), index(j)));
    SmallVector<Value> init(rows * cols, zero);
    // The loop also sums each row's inputs over the block (one accumulator
    // per row after the tile's): sum (q - zp) x = sum q x - zp sum x, with zp
    // the block's explicit zero point or the symmetric one.
    SmallVector<Value> kInit(rows * cols + rows, zero);
    // Per block: sum (q - zp) * x in `accs` from zero, then scale the sums
    // into the totals (one FMA per accumulator per block).
    auto blockLoop = scf::ForOp::create(
        b, loc, index(0), index(blocks), index(1), init,
        [&](OpBuilder &b, Location loc, Value block, ValueRange totals) {
          Value k0 = arith::MulIOp::create(b, loc, block, index(blockSize));
          Value k1 = arith::AddIOp::create(b, loc, k0, index(blockSize));
          auto kLoop = scf::ForOp::create(
              b, loc, k0, k1, index(step()), kInit,
              [&](OpBuilder &b, Location loc, Value k, ValueRange accs) {
                SmallVector<SmallVector<Value>> weights, inputs;
                for (Value n : columnIndex)
                  weights.push_back(loadCodes(b, loc, n, k));
                for (Value m : rowIndex)
                  inputs.push_back(loadInputs(b, loc, m, k, padding));
                SmallVector<Value> next;
                for (int64_t i = 0; i < rows; ++i)
                  for (int64_t j = 0; j < cols; ++j) {
                    Value acc = accs[i * cols + j];
                    for (auto [w, in] : llvm::zip(weights[j], inputs[i]))
                      acc = vector::FMAOp::create(b, loc, w, in, acc);
                    next.push_back(acc);
                  }
                for (int64_t i = 0; i < rows; ++i) {
                  Value sum = accs[rows * cols + i];
                  for (Value in : inputs[i])
                    sum = arith::AddFOp::create(b, loc, sum, in);
                  next.push_back(sum);
                }
                scf::YieldOp::create(b, loc, next);
              });
          auto perColumn = [&](Value mem, Value n) -> Value {
            return vector::BroadcastOp::create(
                b, loc, vectorType,
                tensor::ExtractOp::create(b, loc, mem,
                                          ValueRange{expert, n, block}));
          };
          // -zp, per column: the explicit zero points or the symmetric one.
          Value symmetric;
          if (!zeroPoints)
            symmetric = arith::ConstantOp::create(
                b, loc,
                DenseElementsAttr::get(
                    vectorType,
                    b.getFloatAttr(elementType, -double(zeroPoint))));
          SmallVector<Value> scale, shift;
          for (Value n : columnIndex) {
            scale.push_back(perColumn(scales, n));
            shift.push_back(zeroPoints ? arith::NegFOp::create(
                                             b, loc, perColumn(zeroPoints, n))
                                             .getResult()
                                       : symmetric);
          }
          SmallVector<Value> next;
          for (int64_t i = 0; i < rows; ++i)
            for (int64_t j = 0; j < cols; ++j) {
              Value sum = kLoop.getResult(i * cols + j);
              sum = vector::FMAOp::create(
                  b, loc, shift[j], kLoop.getResult(rows * cols + i), sum);
              next.push_back(vector::FMAOp::create(b, loc, sum, scale[j],
                                                   totals[i * cols + j]));
            }
          scf::YieldOp::create(b, loc, next);
        });
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < cols; ++j) {
        Value n = arith::AddIOp::create(b, loc, n0, index(j));
        Value sum =
            vector::ReductionOp::create(b, loc, vector::CombiningKind::ADD,
                                        blockLoop.getResult(i * cols + j));
        Value old =
            tensor::ExtractOp::create(b, loc, tile, ValueRange{rowIndex[i], n});
        tile = tensor::InsertOp::create(b, loc,
                                        arith::AddFOp::create(b, loc, old, sum),
                                        tile, ValueRange{rowIndex[i], n});
      }
    return tile;
  }

  /// The rows of `tile [M, taskColumns]` in blocks of `rows` from `lower`
  /// up to the last whole block, the columns in blocks of `cols`; returns the
  /// tile and the first row left.
  std::pair<Value, Value> buildRowLoop(Value tile, Value col0, Value lower,
                                       int64_t rows, int64_t cols,
                                       int64_t taskColumns) {
    Value numRows = tensor::DimOp::create(b, loc, tile, 0);
    Value step = index(rows);
    Value left = arith::SubIOp::create(b, loc, numRows, lower);
    Value upper = arith::AddIOp::create(
        b, loc, lower,
        arith::MulIOp::create(
            b, loc, arith::DivUIOp::create(b, loc, left, step), step));
    auto rowLoop = scf::ForOp::create(
        b, loc, lower, upper, step, tile,
        [&](OpBuilder &b, Location loc, Value m0, ValueRange rowArgs) {
          auto columnLoop = scf::ForOp::create(
              b, loc, index(0), index(taskColumns), index(cols), rowArgs,
              [&](OpBuilder &b, Location loc, Value n0, ValueRange args) {
                scf::YieldOp::create(b, loc,
                                     buildRegisterTile(b, loc, args[0], m0, n0,
                                                       col0, rows, cols));
              });
          scf::YieldOp::create(b, loc, columnLoop.getResults());
        });
    return {rowLoop.getResult(0), upper};
  }

  Value build(Value acc) {
    auto accType = cast<RankedTensorType>(acc.getType());
    int64_t columns = accType.getDimSize(1);
    int64_t taskColumns = largestDivisor(columns, kTaskColumns);
    int64_t cols = largestDivisor(taskColumns, kTileColumns);
    OpFoldResult zero = b.getIndexAttr(0), one = b.getIndexAttr(1);
    auto forall = scf::ForallOp::create(
        b, loc, ArrayRef<OpFoldResult>{zero},
        ArrayRef<OpFoldResult>{b.getIndexAttr(columns)},
        ArrayRef<OpFoldResult>{b.getIndexAttr(taskColumns)}, ValueRange{acc},
        std::nullopt);
    OpBuilder::InsertionGuard guard(b);
    b.setInsertionPointToStart(forall.getBody());
    Value col0 = forall.getInductionVar(0);
    Value shared = forall.getRegionIterArgs()[0];
    OpFoldResult numRows = tensor::getMixedSize(b, loc, shared, 0);
    SmallVector<OpFoldResult> offsets = {zero, col0};
    SmallVector<OpFoldResult> sizes = {numRows, b.getIndexAttr(taskColumns)};
    SmallVector<OpFoldResult> strides = {one, one};
    Value tile =
        tensor::ExtractSliceOp::create(b, loc, shared, offsets, sizes, strides);
    Value lower = index(0);
    for (int64_t rows = kTileRows; rows >= 1; rows /= 2)
      std::tie(tile, lower) =
          buildRowLoop(tile, col0, lower, rows, cols, taskColumns);
    b.setInsertionPointToStart(forall.getTerminator().getBody());
    tensor::ParallelInsertSliceOp::create(b, loc, tile, shared, offsets, sizes,
                                          strides);
    return forall.getResult(0);
  }
};
} // namespace

Value moe::buildQuantizedMatmul(OpBuilder &b, Location loc, Value x,
                                Value bytes, Value scales, Value expert,
                                Value acc, int64_t bits, int64_t zeroPoint,
                                Value zeroPoints) {
  auto xType = cast<RankedTensorType>(x.getType());
  int64_t reduction = xType.getDimSize(1);
  int64_t blocks = cast<RankedTensorType>(scales.getType()).getDimSize(2);
  int64_t blockSize = reduction / blocks;
  // The widest vector whose step divides a block (a block of 4-bit codes has
  // an even size, and a step at 4 bits is two codes per lane).
  int64_t perLane = bits == 4 ? 2 : 1;
  int64_t lanes = QuantizedMatmulBuilder::kMaxLanes;
  while (lanes > 1 && blockSize % (lanes * perLane) != 0)
    lanes /= 2;
  QuantizedMatmulBuilder builder{
      b,         loc,    x,         bytes,      scales,
      expert,    bits,   zeroPoint, zeroPoints, xType.getElementType(),
      reduction, blocks, blockSize, lanes};
  return builder.build(acc);
}
