//===- Builders.cpp - IR building helpers of the ONNX importer ------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//

#include "Importer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/ControlFlow/IR/ControlFlowOps.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/AffineMap.h"
#include "mlir/IR/Matchers.h"

using namespace moe;
using namespace moe::onnx_import;
using namespace mlir;

FailureOr<int64_t> onnx_import::normalizeAxis(Node &node, int64_t axis,
                                              int64_t rank) {
  if (axis < -rank || axis >= rank) {
    node.emitError() << "axis " << axis << " is out of range for rank " << rank;
    return failure();
  }
  return axis < 0 ? axis + rank : axis;
}

SmallVector<OpFoldResult> onnx_import::getDims(OpBuilder &b, Location loc,
                                               Value value) {
  return tensor::getMixedSizes(b, loc, value);
}

Value onnx_import::createEmpty(OpBuilder &b, Location loc,
                               ArrayRef<OpFoldResult> sizes, Type elementType) {
  return tensor::EmptyOp::create(b, loc, sizes, elementType);
}

Value onnx_import::createScalar(OpBuilder &b, Location loc, Type type,
                                double value) {
  if (auto floatType = dyn_cast<FloatType>(type))
    return arith::ConstantOp::create(b, loc, b.getFloatAttr(floatType, value));
  return arith::ConstantOp::create(
      b, loc, b.getIntegerAttr(type, static_cast<int64_t>(value)));
}

/// A run-time check of the import: `cf.assert(ok)` with the message
/// "<op> node '<name>': <detail>", marked for the import's cleanup, which
/// drops it with the op it guards (ImportONNX.cpp).
static void addRuntimeCheck(Node &node, Value ok, const Twine &detail) {
  OpBuilder &b = node.getBuilder();
  std::string message =
      (node.getOpType() + " node '" + node.getName() + "': " + detail).str();
  auto check = cf::AssertOp::create(b, node.getLoc(), ok, message);
  check->setAttr(kGuardAttr, b.getUnitAttr());
}

void onnx_import::checkIndicesAtRunTime(Node &node, Value indices,
                                        ArrayRef<OpFoldResult> sizes) {
  auto type = cast<RankedTensorType>(indices.getType());
  if (matchPattern(indices, m_Constant()) || sizes.empty() ||
      (type.getRank() == 0 && sizes.size() != 1))
    return;
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = b.getContext();
  int64_t rank = type.getRank();
  // all(-size <= i < size), a reduction of the whole tensor into an i1.
  Value init = tensor::FromElementsOp::create(
      b, loc, RankedTensorType::get({}, b.getI1Type()),
      ValueRange{arith::ConstantOp::create(b, loc, b.getBoolAttr(true))});
  SmallVector<Value> bounds;
  for (OpFoldResult size : sizes)
    bounds.push_back(getValueOrCreateConstantIndexOp(b, loc, size));
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::reduction);
  auto all = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, ValueRange{indices}, ValueRange{init},
      {AffineMap::getMultiDimIdentityMap(rank, ctx),
       AffineMap::get(rank, 0, {}, ctx)},
      iterators, [&](OpBuilder &nb, Location nl, ValueRange args) {
        Value index =
            arith::IndexCastOp::create(nb, nl, nb.getIndexType(), args[0]);
        Value size = bounds[0];
        if (bounds.size() > 1) {
          // The size of the position along the last axis.
          Value at = linalg::IndexOp::create(nb, nl, rank - 1);
          for (size_t j = 1; j < bounds.size(); ++j) {
            Value isJ = arith::CmpIOp::create(
                nb, nl, arith::CmpIPredicate::eq, at,
                arith::ConstantIndexOp::create(nb, nl, j));
            size = arith::SelectOp::create(nb, nl, isJ, bounds[j], size);
          }
        }
        Value low = arith::SubIOp::create(
            nb, nl, arith::ConstantIndexOp::create(nb, nl, 0), size);
        Value ok = arith::AndIOp::create(
            nb, nl,
            arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::sge, index,
                                  low),
            arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::slt, index,
                                  size));
        linalg::YieldOp::create(
            nb, nl, arith::AndIOp::create(nb, nl, ok, args[1]).getResult());
      });
  // Kept after the import: a target that cannot read the result on the host
  // drops the check (convert-moe-to-gpu).
  all->setAttr(kIndexCheckAttrName, b.getUnitAttr());
  Value ok = tensor::ExtractOp::create(b, loc, all.getResult(0), ValueRange{});
  addRuntimeCheck(node, ok,
                  "an index is out of range for the data at run time");
}

void onnx_import::checkDimsAtRunTime(Node &node, Value a,
                                     ArrayRef<int64_t> dimsA, Value b,
                                     ArrayRef<int64_t> dimsB, StringRef what) {
  OpBuilder &builder = node.getBuilder();
  Location loc = node.getLoc();
  auto typeA = cast<RankedTensorType>(a.getType());
  auto typeB = cast<RankedTensorType>(b.getType());
  for (auto [da, db] : llvm::zip(dimsA, dimsB)) {
    if (!typeA.isDynamicDim(da) && !typeB.isDynamicDim(db))
      continue;
    Value same =
        arith::CmpIOp::create(builder, loc, arith::CmpIPredicate::eq,
                              tensor::DimOp::create(builder, loc, a, da),
                              tensor::DimOp::create(builder, loc, b, db));
    addRuntimeCheck(node, same, what + " differ in size at run time");
  }
}

FailureOr<Value> onnx_import::buildElementwise(Node &node, ValueRange operands,
                                               Type resultElementType,
                                               ElementwiseBody body,
                                               bool checkDynamic) {
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  int64_t rank = 0;
  for (Value operand : operands)
    rank = std::max(rank, cast<RankedTensorType>(operand.getType()).getRank());

  // Numpy broadcasting, aligned on the trailing dimensions. A dynamic
  // dimension is assumed not to be a broadcast 1; the code checks at run time
  // that it equals the other operands' size there (a cf.assert, which ends
  // the call with an error: moe-lower-runtime-checks), so that shapes that
  // do not broadcast never read out of bounds.
  SmallVector<int64_t> shape(rank, 1);
  SmallVector<OpFoldResult> sizes(rank, b.getIndexAttr(1));
  // Per dimension, the operand dimensions that must agree at run time.
  SmallVector<SmallVector<std::pair<Value, int64_t>>> mustAgree(rank);
  for (int64_t d = 0; d < rank; ++d) {
    std::optional<int64_t> staticSize;
    Value dynamicSource;
    int64_t dynamicDim = 0;
    for (Value operand : operands) {
      auto type = cast<RankedTensorType>(operand.getType());
      int64_t od = d - (rank - type.getRank());
      if (od < 0)
        continue;
      int64_t size = type.getDimSize(od);
      if (size != 1)
        mustAgree[d].push_back({operand, od});
      if (ShapedType::isDynamic(size)) {
        if (!dynamicSource) {
          dynamicSource = operand;
          dynamicDim = od;
        }
        continue;
      }
      if (size == 1)
        continue;
      if (staticSize && *staticSize != size) {
        node.emitError() << "operand shapes cannot be broadcast together";
        return failure();
      }
      staticSize = size;
    }
    if (staticSize) {
      shape[d] = *staticSize;
      sizes[d] = b.getIndexAttr(*staticSize);
    } else if (dynamicSource) {
      shape[d] = ShapedType::kDynamic;
      sizes[d] =
          tensor::DimOp::create(b, loc, dynamicSource, dynamicDim).getResult();
    }
  }
  for (int64_t d = 0; d < rank && checkDynamic; ++d) {
    if (mustAgree[d].size() < 2)
      continue;
    Value expected;
    for (auto [operand, od] : mustAgree[d]) {
      if (!cast<RankedTensorType>(operand.getType()).isDynamicDim(od))
        continue;
      if (!expected)
        expected = getValueOrCreateConstantIndexOp(b, loc, sizes[d]);
      Value size = tensor::DimOp::create(b, loc, operand, od);
      Value same = arith::CmpIOp::create(b, loc, arith::CmpIPredicate::eq, size,
                                         expected);
      addRuntimeCheck(node, same,
                      "the operand shapes do not broadcast together (result "
                      "dimension " +
                          Twine(d) +
                          " differs between operands at run time; a dynamic "
                          "dimension of size 1 is not broadcast)");
    }
  }

  MLIRContext *ctx = node.getContext();
  SmallVector<AffineMap> maps;
  for (Value operand : operands) {
    auto type = cast<RankedTensorType>(operand.getType());
    SmallVector<AffineExpr> exprs;
    for (int64_t od = 0; od < type.getRank(); ++od) {
      int64_t d = od + rank - type.getRank();
      if (type.getDimSize(od) == 1 && shape[d] != 1)
        exprs.push_back(getAffineConstantExpr(0, ctx));
      else
        exprs.push_back(getAffineDimExpr(d, ctx));
    }
    maps.push_back(AffineMap::get(rank, 0, exprs, ctx));
  }
  maps.push_back(AffineMap::getMultiDimIdentityMap(rank, ctx));
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::parallel);
  Value init = createEmpty(b, loc, sizes, resultElementType);
  auto generic = linalg::GenericOp::create(
      b, loc, TypeRange{init.getType()}, operands, ValueRange{init}, maps,
      iterators, [&](OpBuilder &nested, Location nestedLoc, ValueRange args) {
        Value result = body(nested, nestedLoc, args.drop_back());
        linalg::YieldOp::create(nested, nestedLoc, result);
      });
  generic->setAttr(kGuardedAttr, b.getUnitAttr());
  return generic.getResult(0);
}

Value onnx_import::insertUnitDims(OpBuilder &b, Location loc, Value value,
                                  ArrayRef<int64_t> axes) {
  if (axes.empty())
    return value;
  auto type = cast<RankedTensorType>(value.getType());
  int64_t rank = type.getRank() + axes.size();
  SmallVector<OpFoldResult> srcSizes = getDims(b, loc, value);
  SmallVector<int64_t> shape;
  SmallVector<OpFoldResult> sizes;
  SmallVector<ReassociationIndices> groups;
  ReassociationIndices pending;
  int64_t src = 0;
  for (int64_t d = 0; d < rank; ++d) {
    if (llvm::is_contained(axes, d)) {
      shape.push_back(1);
      sizes.push_back(b.getIndexAttr(1));
      if (groups.empty() || src == 0)
        pending.push_back(d);
      else
        groups.back().push_back(d);
      continue;
    }
    shape.push_back(type.getDimSize(src));
    sizes.push_back(srcSizes[src]);
    pending.push_back(d);
    groups.push_back(pending);
    pending.clear();
    ++src;
  }
  auto resultType = RankedTensorType::get(shape, type.getElementType());
  if (type.getRank() == 0)
    groups.clear();
  return tensor::ExpandShapeOp::create(b, loc, resultType, value, groups,
                                       sizes);
}

Value onnx_import::dropUnitDims(OpBuilder &b, Location loc, Value value,
                                ArrayRef<int64_t> axes) {
  if (axes.empty())
    return value;
  auto type = cast<RankedTensorType>(value.getType());
  SmallVector<int64_t> shape;
  SmallVector<ReassociationIndices> groups;
  ReassociationIndices pending;
  for (int64_t d = 0; d < type.getRank(); ++d) {
    if (llvm::is_contained(axes, d)) {
      if (groups.empty())
        pending.push_back(d);
      else
        groups.back().push_back(d);
      continue;
    }
    shape.push_back(type.getDimSize(d));
    pending.push_back(d);
    groups.push_back(pending);
    pending.clear();
  }
  auto resultType = RankedTensorType::get(shape, type.getElementType());
  if (shape.empty())
    groups.clear();
  return tensor::CollapseShapeOp::create(b, loc, resultType, value, groups);
}

Value onnx_import::buildMatmul2D(OpBuilder &b, Location loc, Value lhs,
                                 Value rhs, Type accumulator) {
  auto lhsType = cast<RankedTensorType>(lhs.getType());
  Type elementType = accumulator ? accumulator : lhsType.getElementType();
  SmallVector<OpFoldResult> sizes = {getDims(b, loc, lhs)[0],
                                     getDims(b, loc, rhs)[1]};
  Value zero = createScalar(b, loc, elementType, 0.0);
  Value init = createEmpty(b, loc, sizes, elementType);
  Value filled = linalg::FillOp::create(b, loc, zero, init).getResult(0);
  return linalg::MatmulOp::create(b, loc, TypeRange{filled.getType()},
                                  ValueRange{lhs, rhs}, ValueRange{filled})
      .getResult(0);
}

Value onnx_import::buildExpandShape(OpBuilder &b, Location loc,
                                    RankedTensorType type, Value value,
                                    ArrayRef<ReassociationIndices> groups,
                                    ArrayRef<OpFoldResult> sizes) {
  bool severalDynamic = false;
  for (const ReassociationIndices &group : groups)
    severalDynamic |= llvm::count_if(group, [&](int64_t d) {
                        return type.isDynamicDim(d);
                      }) > 1;
  if (!severalDynamic)
    return tensor::ExpandShapeOp::create(b, loc, type, value, groups, sizes);
  // A group with several dynamic sizes: expand-strided-metadata cannot take
  // such an expand_shape apart, so reshape by a shape tensor instead.
  SmallVector<Value> extents;
  for (OpFoldResult size : sizes)
    extents.push_back(arith::IndexCastOp::create(
        b, loc, b.getI64Type(), getValueOrCreateConstantIndexOp(b, loc, size)));
  Value shape = tensor::FromElementsOp::create(
      b, loc, RankedTensorType::get({(int64_t)extents.size()}, b.getI64Type()),
      extents);
  return tensor::ReshapeOp::create(b, loc, type, value, shape);
}
