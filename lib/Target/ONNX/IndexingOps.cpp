//===- IndexingOps.cpp - Indexing ops with data-dependent results ---------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Handlers of the default ONNX domain that index tensors by data: NonZero
// (whose output size depends on the data), OneHot, ScatterElements,
// ScatterND, GatherElements, GatherND, ArgMax/ArgMin, Trilu and Einsum.
// Parallel ones are `linalg.generic`s; the scatters and NonZero, which write
// in an order that depends on the data, are `scf.for` nests over tensors
// carried in iter_args.
//
//===----------------------------------------------------------------------===//

#include "Importer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/AffineMap.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

using namespace moe;
using namespace moe::onnx_import;
using namespace mlir;

static RankedTensorType typeOf(Value value) {
  return cast<RankedTensorType>(value.getType());
}

static bool isIndexElementType(Type type) {
  return isa<IntegerType>(type) && !type.isInteger(1);
}

/// `value` (an integer or index) as an index.
static Value toIndex(OpBuilder &b, Location loc, Value value) {
  if (value.getType().isIndex())
    return value;
  return arith::IndexCastOp::create(b, loc, b.getIndexType(), value);
}

/// An index in [-size, size) wrapped to [0, size) (negative indices count
/// from the end).
static Value wrapIndex(OpBuilder &b, Location loc, Value index, Value size) {
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value negative =
      arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, index, zero);
  Value wrapped = arith::AddIOp::create(b, loc, index, size);
  return arith::SelectOp::create(b, loc, negative, wrapped, index);
}

/// `0 <= index < size` (unsigned compare).
static Value inBounds(OpBuilder &b, Location loc, Value index, Value size) {
  return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ult, index, size);
}

/// A loop nest over `sizes` carrying `iterArgs`; `body` gets the induction
/// variables and the current iter_args and returns the next ones.
using LoopBody = function_ref<SmallVector<Value>(
    OpBuilder &, Location, ValueRange ivs, ValueRange iterArgs)>;
static SmallVector<Value> buildLoopNest(OpBuilder &b, Location loc,
                                        ArrayRef<OpFoldResult> sizes,
                                        ValueRange iterArgs, LoopBody body) {
  SmallVector<Value> lbs, ubs, steps;
  Value zero = arith::ConstantIndexOp::create(b, loc, 0);
  Value one = arith::ConstantIndexOp::create(b, loc, 1);
  for (OpFoldResult size : sizes) {
    lbs.push_back(zero);
    ubs.push_back(getValueOrCreateConstantIndexOp(b, loc, size));
    steps.push_back(one);
  }
  if (sizes.empty())
    return body(b, loc, {}, iterArgs);
  scf::LoopNest nest = scf::buildLoopNest(
      b, loc, lbs, ubs, steps, iterArgs,
      [&](OpBuilder &nb, Location nl, ValueRange ivs, ValueRange args) {
        return scf::ValueVector(body(nb, nl, ivs, args));
      });
  return SmallVector<Value>(nest.results);
}

/// An `scf.if` yielding `thenBody`'s values when `cond` holds and `current`
/// otherwise.
static SmallVector<Value> buildIfElseKeep(
    OpBuilder &b, Location loc, Value cond, ValueRange current,
    function_ref<SmallVector<Value>(OpBuilder &, Location)> thenBody) {
  auto ifOp = scf::IfOp::create(
      b, loc, cond,
      [&](OpBuilder &tb, Location tl) {
        scf::YieldOp::create(tb, tl, thenBody(tb, tl));
      },
      [&](OpBuilder &eb, Location el) {
        scf::YieldOp::create(eb, el, current);
      });
  return SmallVector<Value>(ifOp.getResults());
}

//===----------------------------------------------------------------------===//
// NonZero
//===----------------------------------------------------------------------===//

LogicalResult onnx_import::importNonZero(Node &node) {
  if (failed(node.checkAttributes({})))
    return failure();
  Value input = node.getInput(0);
  if (!input) {
    node.emitError() << "input 0 is required";
    return failure();
  }
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = node.getContext();
  RankedTensorType type = typeOf(input);
  int64_t rank = type.getRank();
  if (rank == 0) {
    node.emitError() << "a 0-D input is not supported";
    return failure();
  }
  Type elementType = type.getElementType();
  auto isNonZero = [&](OpBuilder &nb, Location nl, Value x) -> Value {
    if (isa<FloatType>(elementType))
      return arith::CmpFOp::create(nb, nl, arith::CmpFPredicate::UNE, x,
                                   createScalar(nb, nl, elementType, 0.0));
    return arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::ne, x,
                                 createScalar(nb, nl, elementType, 0.0));
  };

  // The count of nonzero elements, the extent of the result.
  Type i64 = b.getI64Type();
  Value zeroCount =
      linalg::FillOp::create(b, loc, createScalar(b, loc, i64, 0.0),
                             createEmpty(b, loc, {}, i64))
          .getResult(0);
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::reduction);
  Value count =
      linalg::GenericOp::create(
          b, loc, TypeRange{zeroCount.getType()}, ValueRange{input},
          ValueRange{zeroCount},
          {AffineMap::getMultiDimIdentityMap(rank, ctx),
           AffineMap::get(rank, 0, {}, ctx)},
          iterators,
          [&](OpBuilder &nb, Location nl, ValueRange args) {
            Value one = arith::ExtUIOp::create(nb, nl, nb.getI64Type(),
                                               isNonZero(nb, nl, args[0]));
            linalg::YieldOp::create(
                nb, nl, Value(arith::AddIOp::create(nb, nl, args[1], one)));
          })
          .getResult(0);
  Value n = toIndex(b, loc, tensor::ExtractOp::create(b, loc, count));

  // The coordinates, in row-major order of the input.
  Value init = createEmpty(b, loc, {b.getIndexAttr(rank), n}, i64);
  Value start = arith::ConstantIndexOp::create(b, loc, 0);
  SmallVector<Value> results = buildLoopNest(
      b, loc, getDims(b, loc, input), ValueRange{init, start},
      [&](OpBuilder &nb, Location nl, ValueRange ivs, ValueRange args) {
        Value x = tensor::ExtractOp::create(nb, nl, input, ivs);
        return buildIfElseKeep(
            nb, nl, isNonZero(nb, nl, x), args,
            [&](OpBuilder &tb, Location tl) {
              Value out = args[0], pos = args[1];
              for (int64_t d = 0; d < rank; ++d) {
                Value coord =
                    arith::IndexCastOp::create(tb, tl, tb.getI64Type(), ivs[d]);
                Value row = arith::ConstantIndexOp::create(tb, tl, d);
                out = tensor::InsertOp::create(tb, tl, coord, out,
                                               ValueRange{row, pos});
              }
              Value next = arith::AddIOp::create(
                  tb, tl, pos, arith::ConstantIndexOp::create(tb, tl, 1));
              return SmallVector<Value>{out, next};
            });
      });
  return node.setResults(results[0]);
}

//===----------------------------------------------------------------------===//
// OneHot
//===----------------------------------------------------------------------===//

LogicalResult onnx_import::importOneHot(Node &node) {
  if (failed(node.checkAttributes({"axis"})))
    return failure();
  Value indices = node.getInput(0), values = node.getInput(2);
  if (!indices || !node.hasInput(1) || !values) {
    node.emitError() << "indices, depth and values are required";
    return failure();
  }
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = node.getContext();
  DenseElementsAttr depthAttr = node.getConstantInput(1);
  if (!depthAttr || depthAttr.getNumElements() != 1) {
    node.emitError() << "depth (input 1) must be a constant with one element";
    return failure();
  }
  int64_t depth;
  if (isa<FloatType>(depthAttr.getElementType()))
    depth =
        (int64_t)(*depthAttr.getValues<APFloat>().begin()).convertToDouble();
  else
    depth = (*depthAttr.getValues<APInt>().begin()).getSExtValue();
  if (depth <= 0 || depth > (int64_t(1) << 31)) {
    node.emitError() << "depth " << depth << " is not supported";
    return failure();
  }
  RankedTensorType valuesType = typeOf(values);
  if (valuesType.getRank() != 1 ||
      (!ShapedType::isDynamic(valuesType.getDimSize(0)) &&
       valuesType.getDimSize(0) != 2)) {
    node.emitError() << "values must be a 1-D tensor of two elements";
    return failure();
  }
  RankedTensorType indicesType = typeOf(indices);
  Type indexElement = indicesType.getElementType();
  if (indexElement.isInteger(1)) {
    node.emitError() << "indices must be numbers";
    return failure();
  }
  int64_t rank = indicesType.getRank() + 1;
  FailureOr<int64_t> axis = normalizeAxis(node, node.getInt("axis", -1), rank);
  if (failed(axis))
    return failure();
  SmallVector<OpFoldResult> sizes = getDims(b, loc, indices);
  sizes.insert(sizes.begin() + *axis, b.getIndexAttr(depth));
  Type elementType = valuesType.getElementType();
  Value off = tensor::ExtractOp::create(
      b, loc, values, ValueRange{arith::ConstantIndexOp::create(b, loc, 0)});
  Value on = tensor::ExtractOp::create(
      b, loc, values, ValueRange{arith::ConstantIndexOp::create(b, loc, 1)});
  Value init = createEmpty(b, loc, sizes, elementType);
  SmallVector<AffineExpr> indexExprs;
  for (int64_t d = 0; d < rank; ++d)
    if (d != *axis)
      indexExprs.push_back(getAffineDimExpr(d, ctx));
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::parallel);
  Value result =
      linalg::GenericOp::create(
          b, loc, TypeRange{init.getType()}, ValueRange{indices},
          ValueRange{init},
          {AffineMap::get(rank, 0, indexExprs, ctx),
           AffineMap::getMultiDimIdentityMap(rank, ctx)},
          iterators,
          [&](OpBuilder &nb, Location nl, ValueRange args) {
            Value index = args[0];
            if (isa<FloatType>(indexElement))
              index = arith::FPToSIOp::create(nb, nl, nb.getI64Type(), index);
            index = toIndex(nb, nl, index);
            index = wrapIndex(nb, nl, index,
                              arith::ConstantIndexOp::create(nb, nl, depth));
            Value hot =
                arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::eq, index,
                                      linalg::IndexOp::create(nb, nl, *axis));
            linalg::YieldOp::create(
                nb, nl, Value(arith::SelectOp::create(nb, nl, hot, on, off)));
          })
          .getResult(0);
  return node.setResults(result);
}

//===----------------------------------------------------------------------===//
// Scatter
//===----------------------------------------------------------------------===//

/// The `reduction` attribute of ScatterElements/ScatterND (opset 16+).
static FailureOr<StringRef> getReduction(Node &node) {
  std::string reduction = node.getString("reduction", "none");
  for (StringRef known : {"none", "add", "mul", "max", "min"})
    if (reduction == known)
      return known;
  node.emitError() << "reduction '" << reduction << "' is not supported";
  return failure();
}

/// `old` combined with `update` under `reduction`.
static Value combineScatter(OpBuilder &b, Location loc, StringRef reduction,
                            Value old, Value update) {
  bool isFloat = isa<FloatType>(update.getType());
  if (reduction == "add")
    return isFloat ? Value(arith::AddFOp::create(b, loc, old, update))
                   : Value(arith::AddIOp::create(b, loc, old, update));
  if (reduction == "mul")
    return isFloat ? Value(arith::MulFOp::create(b, loc, old, update))
                   : Value(arith::MulIOp::create(b, loc, old, update));
  if (reduction == "max")
    return isFloat ? Value(arith::MaximumFOp::create(b, loc, old, update))
                   : Value(arith::MaxSIOp::create(b, loc, old, update));
  if (reduction == "min")
    return isFloat ? Value(arith::MinimumFOp::create(b, loc, old, update))
                   : Value(arith::MinSIOp::create(b, loc, old, update));
  return update;
}

/// Fails unless `data`, `indices` (integers) and, when given, `updates` are
/// present and `data`/`updates` share an element type.
static LogicalResult checkIndexing(Node &node, Value data, Value indices,
                                   Value updates, bool needUpdates) {
  if (!data || !indices || (needUpdates && !updates)) {
    node.emitError() << (needUpdates ? "data, indices and updates are required"
                                     : "data and indices are required");
    return failure();
  }
  if (!isIndexElementType(typeOf(indices).getElementType())) {
    node.emitError() << "indices must be integers";
    return failure();
  }
  if (updates &&
      typeOf(updates).getElementType() != typeOf(data).getElementType()) {
    node.emitError() << "data and updates have different element types";
    return failure();
  }
  return success();
}

LogicalResult onnx_import::importScatterElements(Node &node) {
  if (failed(node.checkAttributes({"axis", "reduction"})))
    return failure();
  Value data = node.getInput(0), indices = node.getInput(1),
        updates = node.getInput(2);
  if (failed(checkIndexing(node, data, indices, updates, true)))
    return failure();
  FailureOr<StringRef> reduction = getReduction(node);
  if (failed(reduction))
    return failure();
  int64_t rank = typeOf(data).getRank();
  if (typeOf(indices).getRank() != rank || typeOf(updates).getRank() != rank ||
      rank == 0) {
    node.emitError() << "data, indices and updates must have the same "
                        "nonzero rank";
    return failure();
  }
  for (int64_t d = 0; d < rank; ++d) {
    int64_t i = typeOf(indices).getDimSize(d),
            u = typeOf(updates).getDimSize(d);
    if (!ShapedType::isDynamic(i) && !ShapedType::isDynamic(u) && i != u) {
      node.emitError() << "indices and updates differ in dimension " << d;
      return failure();
    }
  }
  FailureOr<int64_t> axis = normalizeAxis(node, node.getInt("axis", 0), rank);
  if (failed(axis))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  SmallVector<OpFoldResult> dataDims = getDims(b, loc, data);
  Value axisSize = getValueOrCreateConstantIndexOp(b, loc, dataDims[*axis]);
  // The loop reads the updates at the indices' positions.
  SmallVector<int64_t> all = llvm::to_vector(llvm::seq<int64_t>(0, rank));
  checkDimsAtRunTime(node, indices, all, updates, all, "indices and updates");
  // Updates whose index is out of range are dropped.
  SmallVector<Value> results = buildLoopNest(
      b, loc, getDims(b, loc, indices), ValueRange{data},
      [&](OpBuilder &nb, Location nl, ValueRange ivs, ValueRange args) {
        Value index =
            toIndex(nb, nl, tensor::ExtractOp::create(nb, nl, indices, ivs));
        index = wrapIndex(nb, nl, index, axisSize);
        SmallVector<Value> coords(ivs);
        coords[*axis] = index;
        Value ok = inBounds(nb, nl, index, axisSize);
        for (int64_t d = 0; d < rank; ++d) {
          if (d == *axis)
            continue;
          Value size = getValueOrCreateConstantIndexOp(nb, nl, dataDims[d]);
          ok =
              arith::AndIOp::create(nb, nl, ok, inBounds(nb, nl, ivs[d], size));
        }
        return buildIfElseKeep(
            nb, nl, ok, args, [&](OpBuilder &tb, Location tl) {
              Value update = tensor::ExtractOp::create(tb, tl, updates, ivs);
              if (*reduction != "none")
                update = combineScatter(
                    tb, tl, *reduction,
                    tensor::ExtractOp::create(tb, tl, args[0], coords), update);
              return SmallVector<Value>{
                  tensor::InsertOp::create(tb, tl, update, args[0], coords)};
            });
      });
  results[0].getDefiningOp()->setAttr(kGuardedAttr, b.getUnitAttr());
  return node.setResults(results[0]);
}

LogicalResult onnx_import::importScatterND(Node &node) {
  if (failed(node.checkAttributes({"reduction"})))
    return failure();
  Value data = node.getInput(0), indices = node.getInput(1),
        updates = node.getInput(2);
  if (failed(checkIndexing(node, data, indices, updates, true)))
    return failure();
  FailureOr<StringRef> reduction = getReduction(node);
  if (failed(reduction))
    return failure();
  RankedTensorType indicesType = typeOf(indices);
  int64_t rank = typeOf(data).getRank(), q = indicesType.getRank();
  int64_t k = q ? indicesType.getDimSize(q - 1) : ShapedType::kDynamic;
  if (q == 0 || ShapedType::isDynamic(k) || k > rank || k < 1) {
    node.emitError() << "the last dimension of indices must be static and "
                        "in [1, rank of data]";
    return failure();
  }
  // updates: indices.shape[:-1] + data.shape[k:].
  if (typeOf(updates).getRank() != q - 1 + rank - k) {
    node.emitError() << "updates must have rank " << (q - 1 + rank - k);
    return failure();
  }
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  SmallVector<OpFoldResult> dataDims = getDims(b, loc, data);
  // The loop runs over the updates, reading the indices at their leading
  // positions and writing the data at their trailing ones.
  SmallVector<int64_t> lead = llvm::to_vector(llvm::seq<int64_t>(0, q - 1));
  checkDimsAtRunTime(node, indices, lead, updates, lead, "indices and updates");
  checkDimsAtRunTime(
      node, data, llvm::to_vector(llvm::seq<int64_t>(k, rank)), updates,
      llvm::to_vector(llvm::seq<int64_t>(q - 1, q - 1 + rank - k)),
      "data and updates");
  SmallVector<Value> results = buildLoopNest(
      b, loc, getDims(b, loc, updates), ValueRange{data},
      [&](OpBuilder &nb, Location nl, ValueRange ivs, ValueRange args) {
        SmallVector<Value> coords;
        Value ok = arith::ConstantOp::create(nb, nl, nb.getBoolAttr(true));
        for (int64_t j = 0; j < k; ++j) {
          SmallVector<Value> at(ivs.take_front(q - 1));
          at.push_back(arith::ConstantIndexOp::create(nb, nl, j));
          Value size = getValueOrCreateConstantIndexOp(nb, nl, dataDims[j]);
          Value index = wrapIndex(
              nb, nl,
              toIndex(nb, nl, tensor::ExtractOp::create(nb, nl, indices, at)),
              size);
          ok = arith::AndIOp::create(nb, nl, ok, inBounds(nb, nl, index, size));
          coords.push_back(index);
        }
        llvm::append_range(coords, ivs.drop_front(q - 1));
        return buildIfElseKeep(
            nb, nl, ok, args, [&](OpBuilder &tb, Location tl) {
              Value update = tensor::ExtractOp::create(tb, tl, updates, ivs);
              if (*reduction != "none")
                update = combineScatter(
                    tb, tl, *reduction,
                    tensor::ExtractOp::create(tb, tl, args[0], coords), update);
              return SmallVector<Value>{
                  tensor::InsertOp::create(tb, tl, update, args[0], coords)};
            });
      });
  results[0].getDefiningOp()->setAttr(kGuardedAttr, b.getUnitAttr());
  return node.setResults(results[0]);
}

//===----------------------------------------------------------------------===//
// Gather
//===----------------------------------------------------------------------===//

/// A `linalg.generic` over `sizes` whose element is `data` at the coordinates
/// `coords` computes from the loop indices.
static Value buildGatherGeneric(
    OpBuilder &b, Location loc, Value data, ArrayRef<OpFoldResult> sizes,
    ValueRange inputs, ArrayRef<AffineMap> inputMaps,
    function_ref<SmallVector<Value>(OpBuilder &, Location, ValueRange args)>
        coords) {
  MLIRContext *ctx = b.getContext();
  int64_t rank = sizes.size();
  Value init = createEmpty(b, loc, sizes, typeOf(data).getElementType());
  SmallVector<AffineMap> maps(inputMaps);
  maps.push_back(AffineMap::getMultiDimIdentityMap(rank, ctx));
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::parallel);
  return linalg::GenericOp::create(
             b, loc, TypeRange{init.getType()}, inputs, ValueRange{init}, maps,
             iterators,
             [&](OpBuilder &nb, Location nl, ValueRange args) {
               Value element = tensor::ExtractOp::create(
                   nb, nl, data, coords(nb, nl, args.drop_back()));
               linalg::YieldOp::create(nb, nl, element);
             })
      .getResult(0);
}

LogicalResult onnx_import::importGatherElements(Node &node) {
  if (failed(node.checkAttributes({"axis"})))
    return failure();
  Value data = node.getInput(0), indices = node.getInput(1);
  if (failed(checkIndexing(node, data, indices, Value(), false)))
    return failure();
  int64_t rank = typeOf(data).getRank();
  if (typeOf(indices).getRank() != rank || rank == 0) {
    node.emitError() << "data and indices must have the same nonzero rank";
    return failure();
  }
  FailureOr<int64_t> axis = normalizeAxis(node, node.getInt("axis", 0), rank);
  if (failed(axis))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  OpFoldResult axisDim = getDims(b, loc, data)[*axis];
  Value axisSize = getValueOrCreateConstantIndexOp(b, loc, axisDim);
  checkIndicesAtRunTime(node, indices, {axisDim});
  Value result = buildGatherGeneric(
      b, loc, data, getDims(b, loc, indices), ValueRange{indices},
      {AffineMap::getMultiDimIdentityMap(rank, node.getContext())},
      [&](OpBuilder &nb, Location nl, ValueRange args) {
        SmallVector<Value> coords;
        for (int64_t d = 0; d < rank; ++d)
          coords.push_back(linalg::IndexOp::create(nb, nl, d));
        coords[*axis] = wrapIndex(nb, nl, toIndex(nb, nl, args[0]), axisSize);
        return coords;
      });
  result.getDefiningOp()->setAttr(kGuardedAttr, b.getUnitAttr());
  return node.setResults(result);
}

LogicalResult onnx_import::importGatherND(Node &node) {
  if (failed(node.checkAttributes({"batch_dims"})))
    return failure();
  if (node.getInt("batch_dims", 0) != 0) {
    node.emitError() << "batch_dims != 0 is not supported";
    return failure();
  }
  Value data = node.getInput(0), indices = node.getInput(1);
  if (failed(checkIndexing(node, data, indices, Value(), false)))
    return failure();
  RankedTensorType indicesType = typeOf(indices);
  int64_t rank = typeOf(data).getRank(), q = indicesType.getRank();
  int64_t k = q ? indicesType.getDimSize(q - 1) : ShapedType::kDynamic;
  if (q == 0 || ShapedType::isDynamic(k) || k > rank || k < 1) {
    node.emitError() << "the last dimension of indices must be static and "
                        "in [1, rank of data]";
    return failure();
  }
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = node.getContext();
  SmallVector<OpFoldResult> dataDims = getDims(b, loc, data);
  SmallVector<OpFoldResult> sizes = getDims(b, loc, indices);
  sizes.pop_back();
  llvm::append_range(sizes, ArrayRef<OpFoldResult>(dataDims).drop_front(k));
  int64_t outRank = sizes.size();
  checkIndicesAtRunTime(node, indices,
                        ArrayRef<OpFoldResult>(dataDims).take_front(k));
  Value result = buildGatherGeneric(
      b, loc, data, sizes, ValueRange{}, {},
      [&](OpBuilder &nb, Location nl, ValueRange) {
        SmallVector<Value> prefix;
        for (int64_t d = 0; d < q - 1; ++d)
          prefix.push_back(linalg::IndexOp::create(nb, nl, d));
        SmallVector<Value> coords;
        for (int64_t j = 0; j < k; ++j) {
          SmallVector<Value> at(prefix);
          at.push_back(arith::ConstantIndexOp::create(nb, nl, j));
          Value size = getValueOrCreateConstantIndexOp(nb, nl, dataDims[j]);
          coords.push_back(wrapIndex(
              nb, nl,
              toIndex(nb, nl, tensor::ExtractOp::create(nb, nl, indices, at)),
              size));
        }
        for (int64_t d = q - 1; d < outRank; ++d)
          coords.push_back(linalg::IndexOp::create(nb, nl, d));
        return coords;
      });
  (void)ctx;
  result.getDefiningOp()->setAttr(kGuardedAttr, b.getUnitAttr());
  return node.setResults(result);
}

//===----------------------------------------------------------------------===//
// ArgMax, ArgMin
//===----------------------------------------------------------------------===//

static LogicalResult importArgReduce(Node &node, bool largest) {
  if (failed(node.checkAttributes({"axis", "keepdims", "select_last_index"})))
    return failure();
  Value input = node.getInput(0);
  if (!input) {
    node.emitError() << "input 0 is required";
    return failure();
  }
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = node.getContext();
  RankedTensorType type = typeOf(input);
  int64_t rank = type.getRank();
  FailureOr<int64_t> axis = normalizeAxis(node, node.getInt("axis", 0), rank);
  if (failed(axis))
    return failure();
  bool last = node.getInt("select_last_index", 0) != 0;
  Type elementType = type.getElementType();
  if (elementType.isInteger(1)) {
    node.emitError() << "bool inputs are not supported";
    return failure();
  }
  SmallVector<OpFoldResult> dims = getDims(b, loc, input);
  SmallVector<OpFoldResult> sizes;
  SmallVector<AffineExpr> outExprs;
  SmallVector<utils::IteratorType> iterators;
  for (int64_t d = 0; d < rank; ++d) {
    if (d == *axis) {
      iterators.push_back(utils::IteratorType::reduction);
      continue;
    }
    iterators.push_back(utils::IteratorType::parallel);
    sizes.push_back(dims[d]);
    outExprs.push_back(getAffineDimExpr(d, ctx));
  }
  Type i64 = b.getI64Type();
  // The best value so far and its index; -1 before the first element.
  Value valueInit =
      linalg::FillOp::create(b, loc, createScalar(b, loc, elementType, 0.0),
                             createEmpty(b, loc, sizes, elementType))
          .getResult(0);
  Value indexInit =
      linalg::FillOp::create(b, loc, createScalar(b, loc, i64, -1.0),
                             createEmpty(b, loc, sizes, i64))
          .getResult(0);
  AffineMap outMap = AffineMap::get(rank, 0, outExprs, ctx);
  auto generic = linalg::GenericOp::create(
      b, loc, TypeRange{valueInit.getType(), indexInit.getType()},
      ValueRange{input}, ValueRange{valueInit, indexInit},
      {AffineMap::getMultiDimIdentityMap(rank, ctx), outMap, outMap}, iterators,
      [&](OpBuilder &nb, Location nl, ValueRange args) {
        Value x = args[0], best = args[1], bestIndex = args[2];
        Value i = arith::IndexCastOp::create(
            nb, nl, nb.getI64Type(), linalg::IndexOp::create(nb, nl, *axis));
        Value better;
        if (isa<FloatType>(elementType)) {
          arith::CmpFPredicate pred = largest
                                          ? (last ? arith::CmpFPredicate::OGE
                                                  : arith::CmpFPredicate::OGT)
                                          : (last ? arith::CmpFPredicate::OLE
                                                  : arith::CmpFPredicate::OLT);
          better = arith::CmpFOp::create(nb, nl, pred, x, best);
        } else {
          arith::CmpIPredicate pred = largest
                                          ? (last ? arith::CmpIPredicate::sge
                                                  : arith::CmpIPredicate::sgt)
                                          : (last ? arith::CmpIPredicate::sle
                                                  : arith::CmpIPredicate::slt);
          better = arith::CmpIOp::create(nb, nl, pred, x, best);
        }
        Value first =
            arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::slt, bestIndex,
                                  createScalar(nb, nl, nb.getI64Type(), 0.0));
        Value take = arith::OrIOp::create(nb, nl, first, better);
        linalg::YieldOp::create(
            nb, nl,
            ValueRange{arith::SelectOp::create(nb, nl, take, x, best),
                       arith::SelectOp::create(nb, nl, take, i, bestIndex)});
      });
  Value result = generic.getResult(1);
  if (node.getInt("keepdims", 1) != 0)
    result = insertUnitDims(b, loc, result, {*axis});
  return node.setResults(result);
}

LogicalResult onnx_import::importArgMax(Node &node) {
  return importArgReduce(node, /*largest=*/true);
}

LogicalResult onnx_import::importArgMin(Node &node) {
  return importArgReduce(node, /*largest=*/false);
}

//===----------------------------------------------------------------------===//
// Trilu
//===----------------------------------------------------------------------===//

LogicalResult onnx_import::importTrilu(Node &node) {
  if (failed(node.checkAttributes({"upper"})))
    return failure();
  Value input = node.getInput(0);
  if (!input) {
    node.emitError() << "input 0 is required";
    return failure();
  }
  RankedTensorType type = typeOf(input);
  int64_t rank = type.getRank();
  if (rank < 2) {
    node.emitError() << "the input must have rank 2 or more";
    return failure();
  }
  int64_t k = 0;
  if (node.hasInput(1)) {
    FailureOr<SmallVector<int64_t>> given = node.getConstantInts(1, "k");
    if (failed(given))
      return failure();
    if (given->size() != 1) {
      node.emitError() << "k must hold one element";
      return failure();
    }
    k = (*given)[0];
  }
  bool upper = node.getInt("upper", 1) != 0;
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = node.getContext();
  Type elementType = type.getElementType();
  Value init = createEmpty(b, loc, getDims(b, loc, input), elementType);
  AffineMap identity = AffineMap::getMultiDimIdentityMap(rank, ctx);
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::parallel);
  Value result =
      linalg::GenericOp::create(
          b, loc, TypeRange{init.getType()}, ValueRange{input},
          ValueRange{init}, {identity, identity}, iterators,
          [&](OpBuilder &nb, Location nl, ValueRange args) {
            Value row = arith::IndexCastOp::create(
                nb, nl, nb.getI64Type(),
                linalg::IndexOp::create(nb, nl, rank - 2));
            Value col = arith::IndexCastOp::create(
                nb, nl, nb.getI64Type(),
                linalg::IndexOp::create(nb, nl, rank - 1));
            // Kept: col - row >= k (upper) or col - row <= k (lower).
            Value diff = arith::SubIOp::create(nb, nl, col, row);
            Value kv =
                arith::ConstantOp::create(nb, nl, nb.getI64IntegerAttr(k));
            Value keep = arith::CmpIOp::create(
                nb, nl,
                upper ? arith::CmpIPredicate::sge : arith::CmpIPredicate::sle,
                diff, kv);
            Value zero = elementType.isInteger(1)
                             ? Value(arith::ConstantOp::create(
                                   nb, nl, nb.getBoolAttr(false)))
                             : createScalar(nb, nl, elementType, 0.0);
            linalg::YieldOp::create(
                nb, nl,
                Value(arith::SelectOp::create(nb, nl, keep, args[0], zero)));
          })
          .getResult(0);
  return node.setResults(result);
}

//===----------------------------------------------------------------------===//
// Einsum
//===----------------------------------------------------------------------===//

LogicalResult onnx_import::importEinsum(Node &node) {
  if (failed(node.checkAttributes({"equation"})))
    return failure();
  std::string equation;
  for (char c : node.getString("equation", ""))
    if (c != ' ')
      equation.push_back(c);
  StringRef eq(equation);
  if (eq.contains('.')) {
    node.emitError() << "ellipsis in the equation is not supported";
    return failure();
  }
  auto [lhs, rhs] = eq.split("->");
  bool explicitOutput = eq.contains("->");
  SmallVector<StringRef> terms;
  lhs.split(terms, ',');
  unsigned count = node.getNumInputs();
  if (terms.size() != count || count == 0) {
    node.emitError() << "equation '" << equation << "' names " << terms.size()
                     << " operands, the node has " << count;
    return failure();
  }
  // Every label, in order of appearance, with its size.
  SmallVector<char> labels;
  SmallVector<OpFoldResult> labelSizes;
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Type elementType;
  SmallVector<Value> operands;
  llvm::StringMap<unsigned> uses;
  for (unsigned i = 0; i < count; ++i) {
    Value operand = node.getInput(i);
    if (!operand) {
      node.emitError() << "input " << i << " is required";
      return failure();
    }
    RankedTensorType type = typeOf(operand);
    if (!elementType)
      elementType = type.getElementType();
    if (type.getElementType() != elementType || !isa<FloatType>(elementType)) {
      node.emitError() << "inputs must share one float element type";
      return failure();
    }
    StringRef term = terms[i];
    if ((int64_t)term.size() != type.getRank()) {
      node.emitError() << "term '" << term << "' does not match the rank of "
                       << type;
      return failure();
    }
    SmallVector<OpFoldResult> dims = getDims(b, loc, operand);
    for (auto [d, c] : llvm::enumerate(term)) {
      if (!llvm::isAlpha(c)) {
        node.emitError() << "label '" << c << "' is not a letter";
        return failure();
      }
      if (term.take_front(d).contains(c)) {
        node.emitError() << "repeated label '" << c
                         << "' in one term (a diagonal) is not supported";
        return failure();
      }
      ++uses[StringRef(&c, 1)];
      auto it = llvm::find(labels, c);
      if (it == labels.end()) {
        labels.push_back(c);
        labelSizes.push_back(dims[d]);
        continue;
      }
      OpFoldResult &known = labelSizes[it - labels.begin()];
      std::optional<int64_t> a = getConstantIntValue(known);
      std::optional<int64_t> s = getConstantIntValue(dims[d]);
      if (a && s && *a != *s) {
        node.emitError() << "label '" << c << "' has sizes " << *a << " and "
                         << *s;
        return failure();
      }
      if (!a && s)
        known = dims[d];
    }
    operands.push_back(operand);
  }
  std::string output;
  if (explicitOutput) {
    output = rhs.str();
    for (auto [d, c] : llvm::enumerate(output)) {
      if (!llvm::is_contained(labels, c) ||
          StringRef(output).take_front(d).contains(c)) {
        node.emitError() << "output label '" << c
                         << "' is repeated or not in the inputs";
        return failure();
      }
    }
  } else {
    // Implicit output: the labels used once, in alphabetical order.
    for (char c : labels)
      if (uses[StringRef(&c, 1)] == 1)
        output.push_back(c);
    llvm::sort(output);
  }
  // Loops: the output labels, then the reduced ones.
  SmallVector<char> loops(output.begin(), output.end());
  for (char c : labels)
    if (!llvm::is_contained(loops, c))
      loops.push_back(c);
  MLIRContext *ctx = node.getContext();
  int64_t numLoops = loops.size();
  auto loopOf = [&](char c) {
    return (unsigned)(llvm::find(loops, c) - loops.begin());
  };
  SmallVector<AffineMap> maps;
  for (StringRef term : terms) {
    SmallVector<AffineExpr> exprs;
    for (char c : term)
      exprs.push_back(getAffineDimExpr(loopOf(c), ctx));
    maps.push_back(AffineMap::get(numLoops, 0, exprs, ctx));
  }
  SmallVector<AffineExpr> outExprs;
  SmallVector<OpFoldResult> outSizes;
  for (char c : output) {
    outExprs.push_back(getAffineDimExpr(loopOf(c), ctx));
    outSizes.push_back(labelSizes[llvm::find(labels, c) - labels.begin()]);
  }
  maps.push_back(AffineMap::get(numLoops, 0, outExprs, ctx));
  SmallVector<utils::IteratorType> iterators;
  for (int64_t l = 0; l < numLoops; ++l)
    iterators.push_back(l < (int64_t)output.size()
                            ? utils::IteratorType::parallel
                            : utils::IteratorType::reduction);
  Value init =
      linalg::FillOp::create(b, loc, createScalar(b, loc, elementType, 0.0),
                             createEmpty(b, loc, outSizes, elementType))
          .getResult(0);
  Value result =
      linalg::GenericOp::create(
          b, loc, TypeRange{init.getType()}, operands, ValueRange{init}, maps,
          iterators,
          [&](OpBuilder &nb, Location nl, ValueRange args) {
            Value product = args[0];
            for (Value arg : args.drop_front().drop_back())
              product = arith::MulFOp::create(nb, nl, product, arg);
            linalg::YieldOp::create(
                nb, nl,
                Value(arith::AddFOp::create(nb, nl, args.back(), product)));
          })
          .getResult(0);
  return node.setResults(result);
}
