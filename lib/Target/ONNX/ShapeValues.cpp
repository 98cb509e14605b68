//===- ShapeValues.cpp - Shapes computed from tensor shapes ---------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Exporters compute the shape inputs of Reshape, Expand and ConstantOfShape
// from the shapes of other tensors: Shape -> Gather -> Unsqueeze -> Concat,
// with some arithmetic. Where a dimension is dynamic these are not
// constants. The importer follows them element by element as index values
// (`tensor.dim` and `arith` on `index`), so that the consumers get their
// result sizes directly instead of reading a shape tensor at run time.
//
//===----------------------------------------------------------------------===//

#include "Importer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"
#include "llvm/Support/MathExtras.h"

#include <cstdint>

using namespace moe;
using namespace moe::onnx_import;
using namespace mlir;

/// The rank of output `i`, or -1 where it is unknown.
static int64_t outputRank(Node &node, unsigned i) {
  if (i >= (unsigned)node.getProto().output_size())
    return -1;
  Value value = node.getImporter().lookup(node.getProto().output(i));
  if (!value)
    return -1;
  return cast<RankedTensorType>(value.getType()).getRank();
}

/// `l op r` for the integer ops Add, Sub, Mul, Div (signed, truncating),
/// Equal, Less and Greater (0 or 1); nullopt on overflow, division by zero
/// or another op.
static std::optional<int64_t> foldInt(StringRef op, int64_t l, int64_t r) {
  int64_t v;
  if (op == "Add")
    return llvm::AddOverflow(l, r, v) ? std::nullopt : std::optional(v);
  if (op == "Sub")
    return llvm::SubOverflow(l, r, v) ? std::nullopt : std::optional(v);
  if (op == "Mul")
    return llvm::MulOverflow(l, r, v) ? std::nullopt : std::optional(v);
  if (op == "Div")
    return r == 0 || (r == -1 && l == INT64_MIN) ? std::nullopt
                                                 : std::optional(l / r);
  if (op == "Equal")
    return int64_t(l == r);
  if (op == "Less")
    return int64_t(l < r);
  if (op == "Greater")
    return int64_t(l > r);
  return std::nullopt;
}

/// Whether a shape value element is known to be >= 0: a constant >= 0, a
/// `tensor.dim`, or sums and products of such.
static bool isNonNegative(OpFoldResult element, int depth = 0) {
  if (std::optional<int64_t> c = getConstantIntValue(element))
    return *c >= 0;
  auto value = dyn_cast<Value>(element);
  Operation *def = value ? value.getDefiningOp() : nullptr;
  if (isa_and_nonnull<tensor::DimOp>(def))
    return true;
  if (depth < 8 && isa_and_nonnull<arith::AddIOp, arith::MulIOp>(def))
    return isNonNegative(def->getOperand(0), depth + 1) &&
           isNonNegative(def->getOperand(1), depth + 1);
  return false;
}

/// Elementwise index arithmetic (Add, Sub, Mul, Div) of two shape values
/// with broadcasting of one-element operands; folds constants. Equal only
/// where it is known without running (0 or 1): equal constants, the same
/// value, or a size (>= 0) against a negative constant (torch's
/// `expand(-1, ...)` tests for -1).
static std::optional<SmallVector<OpFoldResult>>
foldBinary(Node &node, ArrayRef<OpFoldResult> lhs, ArrayRef<OpFoldResult> rhs) {
  size_t count = std::max(lhs.size(), rhs.size());
  if ((lhs.size() != count && lhs.size() != 1) ||
      (rhs.size() != count && rhs.size() != 1))
    return std::nullopt;
  StringRef op = node.getOpType();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  SmallVector<OpFoldResult> result;
  for (size_t i = 0; i < count; ++i) {
    OpFoldResult l = lhs[lhs.size() == 1 ? 0 : i];
    OpFoldResult r = rhs[rhs.size() == 1 ? 0 : i];
    std::optional<int64_t> lc = getConstantIntValue(l);
    std::optional<int64_t> rc = getConstantIntValue(r);
    if (lc && rc) {
      std::optional<int64_t> v = foldInt(op, *lc, *rc);
      if (!v)
        return std::nullopt;
      result.push_back(b.getIndexAttr(*v));
      continue;
    }
    if (op == "Equal") {
      if (!lc && !rc && dyn_cast<Value>(l) == dyn_cast<Value>(r))
        result.push_back(b.getIndexAttr(1));
      else if ((lc && *lc < 0 && isNonNegative(r)) ||
               (rc && *rc < 0 && isNonNegative(l)))
        result.push_back(b.getIndexAttr(0));
      else
        return std::nullopt;
      continue;
    }
    Value lv = getValueOrCreateConstantIndexOp(b, loc, l);
    Value rv = getValueOrCreateConstantIndexOp(b, loc, r);
    Value v;
    if (op == "Add")
      v = arith::AddIOp::create(b, loc, lv, rv);
    else if (op == "Sub")
      v = arith::SubIOp::create(b, loc, lv, rv);
    else if (op == "Mul")
      v = arith::MulIOp::create(b, loc, lv, rv);
    else
      v = arith::DivSIOp::create(b, loc, lv, rv);
    result.push_back(v);
  }
  return result;
}

/// Folds elementwise integer/boolean arithmetic on small constant vectors
/// (the shape computations exporters write with constants only, e.g.
/// torch's `expand(-1, G, n)`: Where(Equal(shape, -1 * ones), ones, shape)).
/// Returns whether it bound a constant result.
static bool foldSmallConstants(Node &node) {
  static constexpr int64_t kMaxElements = 64;
  StringRef op = node.getOpType();
  bool binary = op == "Add" || op == "Sub" || op == "Mul" || op == "Equal" ||
                op == "Less" || op == "Greater";
  if (!binary && op != "Where" && op != "Not")
    return false;
  SmallVector<SmallVector<int64_t>> inputs;
  for (unsigned i = 0; i < node.getNumInputs(); ++i) {
    DenseElementsAttr attr = node.getConstantInput(i);
    if (!attr || !isa<IntegerType>(attr.getElementType()) ||
        attr.getType().getRank() > 1 || attr.getNumElements() > kMaxElements)
      return false;
    SmallVector<int64_t> values;
    bool isBool = attr.getElementType().isInteger(1);
    for (const APInt &v : attr.getValues<APInt>())
      values.push_back(isBool ? int64_t(v.getBoolValue()) : v.getSExtValue());
    inputs.push_back(std::move(values));
  }
  size_t count = 1;
  for (const SmallVector<int64_t> &in : inputs)
    count = std::max(count, in.size());
  for (const SmallVector<int64_t> &in : inputs)
    if (in.size() != count && in.size() != 1)
      return false;
  auto at = [&](unsigned i, size_t j) {
    return inputs[i][inputs[i].size() == 1 ? 0 : j];
  };
  Value result = node.getImporter().lookup(node.getProto().output(0));
  if (!result)
    return false;
  auto type = cast<RankedTensorType>(result.getType());
  auto elementType = dyn_cast<IntegerType>(type.getElementType());
  if (!elementType || !type.hasStaticShape() ||
      type.getNumElements() != int64_t(count))
    return false;
  SmallVector<APInt> values;
  for (size_t j = 0; j < count; ++j) {
    int64_t v;
    if (op == "Not") {
      v = !at(0, j);
    } else if (op == "Where") {
      if (inputs.size() != 3)
        return false;
      v = at(0, j) ? at(1, j) : at(2, j);
    } else {
      if (inputs.size() != 2)
        return false;
      std::optional<int64_t> folded = foldInt(op, at(0, j), at(1, j));
      if (!folded)
        return false;
      v = *folded;
    }
    values.push_back(APInt(elementType.getWidth(), uint64_t(v),
                           /*isSigned=*/!elementType.isInteger(1)));
  }
  node.setConstantResult(0, DenseElementsAttr::get(type, values));
  return true;
}

void onnx_import::propagateShapeValues(Node &node) {
  StringRef op = node.getOpType();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  int64_t rank = outputRank(node, 0);
  if (rank < 0 || rank > 1)
    return;
  if (foldSmallConstants(node))
    return;

  if (op == "Shape") {
    Value input = node.getInput(0);
    auto type = cast<RankedTensorType>(input.getType());
    int64_t inputRank = type.getRank();
    int64_t start = node.getInt("start", 0),
            end = node.getInt("end", inputRank);
    if (start < 0)
      start += inputRank;
    if (end < 0)
      end += inputRank;
    start = std::clamp<int64_t>(start, 0, inputRank);
    end = std::clamp<int64_t>(end, start, inputRank);
    SmallVector<OpFoldResult> elements;
    for (int64_t d = start; d < end; ++d) {
      if (ShapedType::isDynamic(type.getDimSize(d)))
        elements.push_back(tensor::DimOp::create(b, loc, input, d).getResult());
      else
        elements.push_back(b.getIndexAttr(type.getDimSize(d)));
    }
    node.setShapeResult(0, elements);
    return;
  }
  // Everything else forwards the shape values of its inputs; outputs the
  // handler folded to constants need none.
  StringRef output = node.getProto().output(0);
  if (node.getImporter().getConstant(output))
    return;
  Value result = node.getImporter().lookup(output);
  bool integerResult = isa<IntegerType>(
      cast<RankedTensorType>(result.getType()).getElementType());
  if (!integerResult)
    return;

  if (op == "Identity" || op == "Unsqueeze" || op == "Squeeze" ||
      op == "Reshape" || op == "Flatten" || op == "Cast") {
    std::optional<SmallVector<OpFoldResult>> in = node.getShapeValue(0);
    if (!in)
      return;
    if (rank == 0 && in->size() != 1)
      return;
    node.setShapeResult(0, *in);
    return;
  }
  if (op == "Gather") {
    std::optional<SmallVector<OpFoldResult>> data = node.getShapeValue(0);
    DenseElementsAttr indices = node.getConstantInput(1);
    if (!data || !indices ||
        cast<RankedTensorType>(node.getInput(0).getType()).getRank() != 1)
      return;
    SmallVector<OpFoldResult> picked;
    for (const APInt &i : indices.getValues<APInt>()) {
      int64_t idx = i.getSExtValue();
      if (idx < 0)
        idx += data->size();
      if (idx < 0 || idx >= (int64_t)data->size())
        return;
      picked.push_back((*data)[idx]);
    }
    node.setShapeResult(0, picked);
    return;
  }
  if (op == "Concat") {
    SmallVector<OpFoldResult> all;
    for (unsigned i = 0; i < node.getNumInputs(); ++i) {
      std::optional<SmallVector<OpFoldResult>> part = node.getShapeValue(i);
      if (!part)
        return;
      llvm::append_range(all, *part);
    }
    node.setShapeResult(0, all);
    return;
  }
  if (op == "Where") {
    // A condition known element by element picks shape values.
    std::optional<SmallVector<OpFoldResult>> cond = node.getShapeValue(0);
    std::optional<SmallVector<OpFoldResult>> yes = node.getShapeValue(1);
    std::optional<SmallVector<OpFoldResult>> no = node.getShapeValue(2);
    if (!cond || !yes || !no)
      return;
    size_t count = std::max({cond->size(), yes->size(), no->size()});
    SmallVector<OpFoldResult> picked;
    for (size_t i = 0; i < count; ++i) {
      auto at = [&](ArrayRef<OpFoldResult> v) -> std::optional<OpFoldResult> {
        if (v.size() == 1)
          return v[0];
        if (v.size() == count)
          return v[i];
        return std::nullopt;
      };
      std::optional<OpFoldResult> c = at(*cond), y = at(*yes), n = at(*no);
      std::optional<int64_t> known = c ? getConstantIntValue(*c) : std::nullopt;
      if (!known || !y || !n)
        return;
      picked.push_back(*known ? *y : *n);
    }
    node.setShapeResult(0, picked);
    return;
  }
  if (op == "ScatterElements") {
    // torch's index_copy_/index_add_ build their Expand shapes by writing
    // sizes into a shape: 1-D data, constant indices, no reduction.
    std::optional<SmallVector<OpFoldResult>> data = node.getShapeValue(0);
    DenseElementsAttr indices = node.getConstantInput(1);
    std::optional<SmallVector<OpFoldResult>> updates = node.getShapeValue(2);
    if (!data || !indices || !updates ||
        (int64_t)updates->size() != indices.getNumElements() ||
        node.getString("reduction", "none") != "none")
      return;
    SmallVector<OpFoldResult> written(*data);
    for (auto [i, index] : llvm::enumerate(indices.getValues<APInt>())) {
      int64_t idx = index.getSExtValue();
      if (idx < 0)
        idx += written.size();
      if (idx < 0 || idx >= (int64_t)written.size())
        return;
      written[idx] = (*updates)[i];
    }
    node.setShapeResult(0, written);
    return;
  }
  if (op == "Add" || op == "Sub" || op == "Mul" || op == "Div" ||
      op == "Equal") {
    std::optional<SmallVector<OpFoldResult>> lhs = node.getShapeValue(0);
    std::optional<SmallVector<OpFoldResult>> rhs = node.getShapeValue(1);
    if (!lhs || !rhs)
      return;
    if (std::optional<SmallVector<OpFoldResult>> result =
            foldBinary(node, *lhs, *rhs))
      node.setShapeResult(0, *result);
    return;
  }
}
