//===- OpHandlers.cpp - Handlers of the default ONNX domain ---------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// One handler per ONNX op of the default domain, each turning a node into
// upstream tensor-level IR (linalg, tensor, arith, math) and inferring the
// result shapes. The table at the end lists the opsets each one supports.
//
//===----------------------------------------------------------------------===//

#include "Importer.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Arith/Utils/Utils.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Math/IR/Math.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/Dialect/Utils/ReshapeOpsUtils.h"
#include "mlir/IR/AffineMap.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/Support/MathExtras.h"

#include <limits>
#include <numeric>

using namespace moe;
using namespace moe::onnx_import;
using namespace mlir;

/// The newest opset the handlers were written against.
static constexpr int64_t kMaxOpset = 21;

static bool isFloat(Type type) { return isa<FloatType>(type); }

static Type elementTypeOf(Value value) {
  return cast<RankedTensorType>(value.getType()).getElementType();
}

static int64_t rankOf(Value value) {
  return cast<RankedTensorType>(value.getType()).getRank();
}

/// Fails unless inputs [0, count) are present and share one element type.
static LogicalResult checkSameElementType(Node &node, unsigned count) {
  Type type;
  for (unsigned i = 0; i < count; ++i) {
    if (!node.hasInput(i)) {
      node.emitError() << "input " << i << " is required";
      return failure();
    }
    Type t = elementTypeOf(node.getInput(i));
    if (type && t != type) {
      node.emitError() << "inputs have different element types (" << type
                       << " and " << t << ")";
      return failure();
    }
    type = t;
  }
  return success();
}

static LogicalResult requireFloat(Node &node, Type type) {
  if (isFloat(type))
    return success();
  node.emitError() << "element type " << type << " is not supported";
  return failure();
}

/// Sorted, normalized, duplicate-free axes.
static FailureOr<SmallVector<int64_t>>
normalizeAxes(Node &node, ArrayRef<int64_t> axes, int64_t rank) {
  SmallVector<int64_t> result;
  for (int64_t axis : axes) {
    FailureOr<int64_t> a = normalizeAxis(node, axis, rank);
    if (failed(a))
      return failure();
    if (llvm::is_contained(result, *a)) {
      node.emitError() << "axis " << axis << " appears twice";
      return failure();
    }
    result.push_back(*a);
  }
  llvm::sort(result);
  return result;
}

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

namespace {
enum class BinaryKind { Add, Sub, Mul, Div, Pow, Max, Min };
enum class CompareKind { Equal, Less, LessOrEqual, Greater, GreaterOrEqual };
enum class UnaryKind {
  Sigmoid,
  Tanh,
  Erf,
  Relu,
  Exp,
  Log,
  Sqrt,
  Neg,
  Abs,
  Reciprocal,
  Floor,
  Ceil,
  Sin,
  Cos,
  Softplus,
  Not,
};
} // namespace

static Value buildBinary(OpBuilder &b, Location loc, BinaryKind kind, Value x,
                         Value y) {
  bool fp = isFloat(x.getType());
  switch (kind) {
  case BinaryKind::Add:
    return fp ? arith::AddFOp::create(b, loc, x, y).getResult()
              : arith::AddIOp::create(b, loc, x, y).getResult();
  case BinaryKind::Sub:
    return fp ? arith::SubFOp::create(b, loc, x, y).getResult()
              : arith::SubIOp::create(b, loc, x, y).getResult();
  case BinaryKind::Mul:
    return fp ? arith::MulFOp::create(b, loc, x, y).getResult()
              : arith::MulIOp::create(b, loc, x, y).getResult();
  case BinaryKind::Div:
    return fp ? arith::DivFOp::create(b, loc, x, y).getResult()
              : arith::DivSIOp::create(b, loc, x, y).getResult();
  case BinaryKind::Pow:
    return math::PowFOp::create(b, loc, x, y);
  case BinaryKind::Max:
    return fp ? arith::MaximumFOp::create(b, loc, x, y).getResult()
              : arith::MaxSIOp::create(b, loc, x, y).getResult();
  case BinaryKind::Min:
    return fp ? arith::MinimumFOp::create(b, loc, x, y).getResult()
              : arith::MinSIOp::create(b, loc, x, y).getResult();
  }
  llvm_unreachable("unknown binary kind");
}

template <BinaryKind Kind> static LogicalResult importBinary(Node &node) {
  if (failed(node.checkAttributes({})) || failed(checkSameElementType(node, 2)))
    return failure();
  Type type = elementTypeOf(node.getInput(0));
  if ((Kind == BinaryKind::Pow) && failed(requireFloat(node, type)))
    return failure();
  if (type.isInteger(1)) {
    node.emitError() << "boolean arithmetic is not supported";
    return failure();
  }
  FailureOr<Value> result =
      buildElementwise(node, {node.getInput(0), node.getInput(1)}, type,
                       [](OpBuilder &b, Location loc, ValueRange args) {
                         return buildBinary(b, loc, Kind, args[0], args[1]);
                       });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

/// Max, Min and Sum take any number of inputs.
template <BinaryKind Kind> static LogicalResult importVariadic(Node &node) {
  unsigned count = node.getNumInputs();
  if (failed(node.checkAttributes({})) ||
      failed(checkSameElementType(node, count)))
    return failure();
  SmallVector<Value> operands;
  for (unsigned i = 0; i < count; ++i)
    operands.push_back(node.getInput(i));
  FailureOr<Value> result =
      buildElementwise(node, operands, elementTypeOf(operands[0]),
                       [](OpBuilder &b, Location loc, ValueRange args) {
                         Value acc = args[0];
                         for (Value arg : args.drop_front())
                           acc = buildBinary(b, loc, Kind, acc, arg);
                         return acc;
                       });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

template <CompareKind Kind> static LogicalResult importCompare(Node &node) {
  if (failed(node.checkAttributes({})) || failed(checkSameElementType(node, 2)))
    return failure();
  OpBuilder &builder = node.getBuilder();
  FailureOr<Value> result = buildElementwise(
      node, {node.getInput(0), node.getInput(1)}, builder.getI1Type(),
      [](OpBuilder &b, Location loc, ValueRange args) -> Value {
        if (isFloat(args[0].getType())) {
          arith::CmpFPredicate pred;
          switch (Kind) {
          case CompareKind::Equal:
            pred = arith::CmpFPredicate::OEQ;
            break;
          case CompareKind::Less:
            pred = arith::CmpFPredicate::OLT;
            break;
          case CompareKind::LessOrEqual:
            pred = arith::CmpFPredicate::OLE;
            break;
          case CompareKind::Greater:
            pred = arith::CmpFPredicate::OGT;
            break;
          case CompareKind::GreaterOrEqual:
            pred = arith::CmpFPredicate::OGE;
            break;
          }
          return arith::CmpFOp::create(b, loc, pred, args[0], args[1]);
        }
        arith::CmpIPredicate pred;
        switch (Kind) {
        case CompareKind::Equal:
          pred = arith::CmpIPredicate::eq;
          break;
        case CompareKind::Less:
          pred = arith::CmpIPredicate::slt;
          break;
        case CompareKind::LessOrEqual:
          pred = arith::CmpIPredicate::sle;
          break;
        case CompareKind::Greater:
          pred = arith::CmpIPredicate::sgt;
          break;
        case CompareKind::GreaterOrEqual:
          pred = arith::CmpIPredicate::sge;
          break;
        }
        return arith::CmpIOp::create(b, loc, pred, args[0], args[1]);
      });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

static Value buildSigmoid(OpBuilder &b, Location loc, Value x) {
  Value one = createScalar(b, loc, x.getType(), 1.0);
  Value neg = arith::NegFOp::create(b, loc, x);
  Value exp = math::ExpOp::create(b, loc, neg);
  Value den = arith::AddFOp::create(b, loc, one, exp);
  return arith::DivFOp::create(b, loc, one, den);
}

static Value buildUnary(OpBuilder &b, Location loc, UnaryKind kind, Value x) {
  Type type = x.getType();
  switch (kind) {
  case UnaryKind::Sigmoid:
    return buildSigmoid(b, loc, x);
  case UnaryKind::Tanh:
    return math::TanhOp::create(b, loc, x);
  case UnaryKind::Erf:
    return math::ErfOp::create(b, loc, x);
  case UnaryKind::Relu: {
    Value zero = createScalar(b, loc, type, 0.0);
    if (isFloat(type))
      return arith::MaximumFOp::create(b, loc, x, zero);
    return arith::MaxSIOp::create(b, loc, x, zero);
  }
  case UnaryKind::Exp:
    return math::ExpOp::create(b, loc, x);
  case UnaryKind::Log:
    return math::LogOp::create(b, loc, x);
  case UnaryKind::Sqrt:
    return math::SqrtOp::create(b, loc, x);
  case UnaryKind::Neg:
    if (isFloat(type))
      return arith::NegFOp::create(b, loc, x);
    return arith::SubIOp::create(b, loc, createScalar(b, loc, type, 0.0), x);
  case UnaryKind::Abs:
    if (isFloat(type))
      return math::AbsFOp::create(b, loc, x);
    return math::AbsIOp::create(b, loc, x);
  case UnaryKind::Reciprocal:
    return arith::DivFOp::create(b, loc, createScalar(b, loc, type, 1.0), x);
  case UnaryKind::Floor:
    return math::FloorOp::create(b, loc, x);
  case UnaryKind::Ceil:
    return math::CeilOp::create(b, loc, x);
  case UnaryKind::Sin:
    return math::SinOp::create(b, loc, x);
  case UnaryKind::Cos:
    return math::CosOp::create(b, loc, x);
  case UnaryKind::Softplus:
    return math::Log1pOp::create(b, loc, math::ExpOp::create(b, loc, x));
  case UnaryKind::Not:
    return arith::XOrIOp::create(
        b, loc, x, arith::ConstantOp::create(b, loc, b.getBoolAttr(true)));
  }
  llvm_unreachable("unknown unary kind");
}

template <UnaryKind Kind> static LogicalResult importUnary(Node &node) {
  if (failed(node.checkAttributes({})) || failed(checkSameElementType(node, 1)))
    return failure();
  Type type = elementTypeOf(node.getInput(0));
  bool intOk = Kind == UnaryKind::Relu || Kind == UnaryKind::Neg ||
               Kind == UnaryKind::Abs;
  if (Kind == UnaryKind::Not) {
    if (!type.isInteger(1)) {
      node.emitError() << "element type " << type << " is not supported";
      return failure();
    }
  } else if (!intOk || type.isInteger(1)) {
    if (failed(requireFloat(node, type)))
      return failure();
  }
  FailureOr<Value> result =
      buildElementwise(node, {node.getInput(0)}, type,
                       [](OpBuilder &b, Location loc, ValueRange args) {
                         return buildUnary(b, loc, Kind, args[0]);
                       });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

static LogicalResult importLeakyRelu(Node &node) {
  if (failed(node.checkAttributes({"alpha"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  Type type = elementTypeOf(node.getInput(0));
  if (failed(requireFloat(node, type)))
    return failure();
  double alpha = node.getFloat("alpha", 0.01);
  FailureOr<Value> result = buildElementwise(
      node, {node.getInput(0)}, type,
      [&](OpBuilder &b, Location loc, ValueRange args) -> Value {
        Value x = args[0];
        Value zero = createScalar(b, loc, type, 0.0);
        Value scaled =
            arith::MulFOp::create(b, loc, x, createScalar(b, loc, type, alpha));
        Value positive =
            arith::CmpFOp::create(b, loc, arith::CmpFPredicate::OGT, x, zero);
        return arith::SelectOp::create(b, loc, positive, x, scaled);
      });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

/// Gelu (opset 20) with `approximate` = none or tanh.
static Value buildGelu(OpBuilder &b, Location loc, Value x, bool tanhApprox) {
  Type type = x.getType();
  Value half = createScalar(b, loc, type, 0.5);
  Value one = createScalar(b, loc, type, 1.0);
  Value inner;
  if (tanhApprox) {
    // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    Value x3 =
        arith::MulFOp::create(b, loc, x, arith::MulFOp::create(b, loc, x, x));
    Value poly = arith::AddFOp::create(
        b, loc, x,
        arith::MulFOp::create(b, loc, createScalar(b, loc, type, 0.044715),
                              x3));
    Value scaled = arith::MulFOp::create(
        b, loc, createScalar(b, loc, type, 0.7978845608028654), poly);
    inner = math::TanhOp::create(b, loc, scaled);
  } else {
    Value scaled = arith::MulFOp::create(
        b, loc, x, createScalar(b, loc, type, 0.7071067811865476));
    inner = math::ErfOp::create(b, loc, scaled);
  }
  Value sum = arith::AddFOp::create(b, loc, one, inner);
  return arith::MulFOp::create(b, loc, arith::MulFOp::create(b, loc, half, x),
                               sum);
}

static LogicalResult importGelu(Node &node) {
  if (failed(node.checkAttributes({"approximate"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  Type type = elementTypeOf(node.getInput(0));
  if (failed(requireFloat(node, type)))
    return failure();
  std::string approximate = node.getString("approximate", "none");
  if (approximate != "none" && approximate != "tanh") {
    node.emitError() << "approximate = '" << approximate
                     << "' is not supported";
    return failure();
  }
  bool tanhApprox = approximate == "tanh";
  FailureOr<Value> result =
      buildElementwise(node, {node.getInput(0)}, type,
                       [&](OpBuilder &b, Location loc, ValueRange args) {
                         return buildGelu(b, loc, args[0], tanhApprox);
                       });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

static LogicalResult importWhere(Node &node) {
  if (failed(node.checkAttributes({})))
    return failure();
  for (unsigned i = 0; i < 3; ++i) {
    if (!node.hasInput(i)) {
      node.emitError() << "input " << i << " is required";
      return failure();
    }
  }
  if (!elementTypeOf(node.getInput(0)).isInteger(1)) {
    node.emitError() << "the condition must be a bool tensor";
    return failure();
  }
  Type type = elementTypeOf(node.getInput(1));
  if (elementTypeOf(node.getInput(2)) != type) {
    node.emitError() << "inputs have different element types";
    return failure();
  }
  FailureOr<Value> result = buildElementwise(
      node, {node.getInput(0), node.getInput(1), node.getInput(2)}, type,
      [](OpBuilder &b, Location loc, ValueRange args) -> Value {
        return arith::SelectOp::create(b, loc, args[0], args[1], args[2]);
      });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

/// Clip: `min(max(x, lo), hi)`, the bounds optional scalar inputs (opset
/// 11+) or float attributes (opset 6-10).
static LogicalResult importClip(Node &node) {
  bool attributes = node.getOpset() < 11;
  if (failed(node.checkAttributes(attributes ? ArrayRef<StringRef>{"min", "max"}
                                             : ArrayRef<StringRef>{})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  Value input = node.getInput(0);
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Type type = elementTypeOf(input);
  SmallVector<Value> operands = {input};
  std::optional<double> lo, hi;
  if (attributes) {
    lo = node.getFloat("min");
    hi = node.getFloat("max");
    if (!isa<FloatType>(type)) {
      node.emitError() << "Clip before opset 11 takes float tensors only";
      return failure();
    }
  }
  // Which operands the body reads for the bounds (-1: none).
  int loArg = -1, hiArg = -1;
  for (unsigned i = 1; i < 3 && !attributes; ++i) {
    if (!node.hasInput(i))
      continue;
    Value bound = node.getInput(i);
    auto boundType = cast<RankedTensorType>(bound.getType());
    if (boundType.getElementType() != type || boundType.getNumElements() != 1) {
      node.emitError() << "input " << i << " (" << (i == 1 ? "min" : "max")
                       << ") must be a scalar of "
                       << "the input's element type, got " << boundType;
      return failure();
    }
    if (boundType.getRank() > 0)
      bound = tensor::CollapseShapeOp::create(
          b, loc, RankedTensorType::get({}, type), bound,
          SmallVector<ReassociationIndices>{});
    (i == 1 ? loArg : hiArg) = operands.size();
    operands.push_back(bound);
  }
  if (!isa<FloatType>(type) && !isa<IntegerType>(type)) {
    node.emitError() << "Clip takes float or integer tensors";
    return failure();
  }
  FailureOr<Value> result = buildElementwise(
      node, operands, type,
      [&](OpBuilder &nb, Location nloc, ValueRange args) -> Value {
        auto bound = [&](int arg, std::optional<double> value) -> Value {
          if (arg >= 0)
            return args[arg];
          if (value)
            return arith::ConstantOp::create(nb, nloc,
                                             nb.getFloatAttr(type, *value));
          return {};
        };
        Value v = args[0];
        bool isFloat = isa<FloatType>(type);
        if (Value l = bound(loArg, lo))
          v = isFloat ? Value(arith::MaximumFOp::create(nb, nloc, v, l))
                      : Value(arith::MaxSIOp::create(nb, nloc, v, l));
        if (Value h = bound(hiArg, hi))
          v = isFloat ? Value(arith::MinimumFOp::create(nb, nloc, v, h))
                      : Value(arith::MinSIOp::create(nb, nloc, v, h));
        return v;
      });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

static LogicalResult importCast(Node &node) {
  if (failed(node.checkAttributes({"to", "saturate"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  FailureOr<Type> to = node.getImporter().convertElementType(
      node.getInt("to", 0), [&] { return node.emitError(); }, "attribute 'to'");
  if (failed(to))
    return failure();
  Type from = elementTypeOf(node.getInput(0));
  Type target = *to;
  if (from == target)
    return node.setResults(node.getInput(0));
  FailureOr<Value> result = buildElementwise(
      node, {node.getInput(0)}, target,
      [&](OpBuilder &b, Location loc, ValueRange args) -> Value {
        Value x = args[0];
        if (isFloat(from) && isFloat(target)) {
          if (from.getIntOrFloatBitWidth() < target.getIntOrFloatBitWidth())
            return arith::ExtFOp::create(b, loc, target, x);
          if (from.getIntOrFloatBitWidth() > target.getIntOrFloatBitWidth())
            return arith::TruncFOp::create(b, loc, target, x);
          // f16 <-> bf16 go through f32.
          Value wide = arith::ExtFOp::create(b, loc, b.getF32Type(), x);
          return arith::TruncFOp::create(b, loc, target, wide);
        }
        if (isFloat(from)) {
          if (target.isInteger(1))
            return arith::CmpFOp::create(b, loc, arith::CmpFPredicate::UNE, x,
                                         createScalar(b, loc, from, 0.0));
          return arith::FPToSIOp::create(b, loc, target, x);
        }
        if (isFloat(target)) {
          if (from.isInteger(1))
            return arith::UIToFPOp::create(b, loc, target, x);
          return arith::SIToFPOp::create(b, loc, target, x);
        }
        if (target.isInteger(1))
          return arith::CmpIOp::create(b, loc, arith::CmpIPredicate::ne, x,
                                       createScalar(b, loc, from, 0.0));
        unsigned fromWidth = from.getIntOrFloatBitWidth();
        unsigned toWidth = target.getIntOrFloatBitWidth();
        if (fromWidth > toWidth)
          return arith::TruncIOp::create(b, loc, target, x);
        if (from.isInteger(1))
          return arith::ExtUIOp::create(b, loc, target, x);
        return arith::ExtSIOp::create(b, loc, target, x);
      });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

//===----------------------------------------------------------------------===//
// Contractions
//===----------------------------------------------------------------------===//

/// The type a product of `type` elements accumulates in: f32 for f16 and
/// bf16 (a sum rounded to 8 or 11 bits at each step loses the product; ONNX
/// Runtime's and PyTorch's kernels accumulate in f32 too), else `type`.
static Type accumulationType(Type type) {
  auto floatType = dyn_cast<FloatType>(type);
  if (floatType && floatType.getWidth() < 32)
    return Float32Type::get(type.getContext());
  return type;
}

/// The scalar `value` widened to the float `type` where narrower.
static Value widenScalar(OpBuilder &b, Location loc, Value value, Type type) {
  if (value.getType() == type)
    return value;
  return arith::ExtFOp::create(b, loc, type, value);
}

/// `value` with `type` elements: float elements widened (to compute in
/// accumulationType) or rounded (the result, once); itself if they are.
static FailureOr<Value> convertFloats(Node &node, Value value, Type type) {
  Type from = elementTypeOf(value);
  if (from == type)
    return value;
  bool widen = from.getIntOrFloatBitWidth() < type.getIntOrFloatBitWidth();
  return buildElementwise(
      node, {value}, type, [&](OpBuilder &b, Location loc, ValueRange args) {
        if (widen)
          return arith::ExtFOp::create(b, loc, type, args[0]).getResult();
        return arith::TruncFOp::create(b, loc, type, args[0]).getResult();
      });
}

/// numpy.matmul for ranks >= 1, in accumulationType of the operands'
/// element type (callers round the result).
static FailureOr<Value> buildMatMul(Node &node, Value lhs, Value rhs) {
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  auto lhsType = cast<RankedTensorType>(lhs.getType());
  auto rhsType = cast<RankedTensorType>(rhs.getType());
  if (lhsType.getRank() == 0 || rhsType.getRank() == 0) {
    node.emitError() << "MatMul operands must have rank >= 1";
    return failure();
  }
  // Vectors become matrices and the unit dimension is dropped at the end.
  bool lhsVector = lhsType.getRank() == 1, rhsVector = rhsType.getRank() == 1;
  if (lhsVector)
    lhs = insertUnitDims(b, loc, lhs, {0});
  if (rhsVector)
    rhs = insertUnitDims(b, loc, rhs, {1});
  lhsType = cast<RankedTensorType>(lhs.getType());
  rhsType = cast<RankedTensorType>(rhs.getType());
  int64_t lhsRank = lhsType.getRank(), rhsRank = rhsType.getRank();
  Type accumulator = accumulationType(lhsType.getElementType());
  int64_t k = lhsType.getDimSize(lhsRank - 1);
  int64_t k2 = rhsType.getDimSize(rhsRank - 2);
  if (!ShapedType::isDynamic(k) && !ShapedType::isDynamic(k2) && k != k2) {
    node.emitError() << "MatMul contraction sizes differ (" << k << " and "
                     << k2 << ")";
    return failure();
  }

  Value result;
  if (rhsRank == 2) {
    // [..., M, K] x [K, N]: fold the leading dimensions into M.
    Value flat = lhs;
    SmallVector<OpFoldResult> lhsDims = getDims(b, loc, lhs);
    if (lhsRank > 2) {
      ReassociationIndices rows;
      for (int64_t d = 0; d < lhsRank - 1; ++d)
        rows.push_back(d);
      flat = tensor::CollapseShapeOp::create(
          b, loc, lhs, SmallVector<ReassociationIndices>{rows, {lhsRank - 1}});
    }
    result = buildMatmul2D(b, loc, flat, rhs, accumulator);
    if (lhsRank > 2) {
      SmallVector<int64_t> shape(lhsType.getShape().drop_back());
      shape.push_back(rhsType.getDimSize(1));
      SmallVector<OpFoldResult> sizes(ArrayRef(lhsDims).drop_back());
      sizes.push_back(getDims(b, loc, rhs)[1]);
      ReassociationIndices rows;
      for (int64_t d = 0; d < lhsRank - 1; ++d)
        rows.push_back(d);
      result = buildExpandShape(
          b, loc, RankedTensorType::get(shape, accumulator), result,
          SmallVector<ReassociationIndices>{rows, {lhsRank - 1}}, sizes);
    }
  } else {
    // Batched, with broadcasting over the batch dimensions.
    int64_t rank = std::max(lhsRank, rhsRank);
    int64_t batch = rank - 2;
    MLIRContext *ctx = node.getContext();
    // Loop dimensions: batch..., m, n, k.
    SmallVector<int64_t> shape;
    SmallVector<OpFoldResult> sizes;
    SmallVector<OpFoldResult> lhsDims = getDims(b, loc, lhs);
    SmallVector<OpFoldResult> rhsDims = getDims(b, loc, rhs);
    auto batchMap = [&](RankedTensorType type, int64_t d) -> AffineExpr {
      int64_t od = d - (rank - type.getRank());
      int64_t size = type.getDimSize(od);
      return size == 1 ? getAffineConstantExpr(0, ctx)
                       : getAffineDimExpr(d, ctx);
    };
    for (int64_t d = 0; d < batch; ++d) {
      int64_t lo = d - (rank - lhsRank), ro = d - (rank - rhsRank);
      int64_t ls = lo >= 0 ? lhsType.getDimSize(lo) : 1;
      int64_t rs = ro >= 0 ? rhsType.getDimSize(ro) : 1;
      if (ls != 1 && rs != 1 && !ShapedType::isDynamic(ls) &&
          !ShapedType::isDynamic(rs) && ls != rs) {
        node.emitError() << "MatMul batch dimensions cannot be broadcast";
        return failure();
      }
      if (ls != 1 && (rs == 1 || !ShapedType::isDynamic(ls) ||
                      ShapedType::isDynamic(rs))) {
        shape.push_back(ls);
        sizes.push_back(lhsDims[lo]);
      } else if (rs != 1) {
        shape.push_back(rs);
        sizes.push_back(rhsDims[ro]);
      } else {
        shape.push_back(1);
        sizes.push_back(b.getIndexAttr(1));
      }
    }
    shape.push_back(lhsType.getDimSize(lhsRank - 2));
    sizes.push_back(lhsDims[lhsRank - 2]);
    shape.push_back(rhsType.getDimSize(rhsRank - 1));
    sizes.push_back(rhsDims[rhsRank - 1]);

    SmallVector<AffineExpr> lhsExprs, rhsExprs, outExprs;
    for (int64_t d = rank - lhsRank; d < batch; ++d)
      lhsExprs.push_back(batchMap(lhsType, d));
    for (int64_t d = rank - rhsRank; d < batch; ++d)
      rhsExprs.push_back(batchMap(rhsType, d));
    for (int64_t d = 0; d < batch; ++d)
      outExprs.push_back(getAffineDimExpr(d, ctx));
    AffineExpr m = getAffineDimExpr(batch, ctx);
    AffineExpr n = getAffineDimExpr(batch + 1, ctx);
    AffineExpr kk = getAffineDimExpr(batch + 2, ctx);
    lhsExprs.append({m, kk});
    rhsExprs.append({kk, n});
    outExprs.append({m, n});
    SmallVector<AffineMap> maps = {AffineMap::get(rank + 1, 0, lhsExprs, ctx),
                                   AffineMap::get(rank + 1, 0, rhsExprs, ctx),
                                   AffineMap::get(rank + 1, 0, outExprs, ctx)};
    SmallVector<utils::IteratorType> iterators(rank,
                                               utils::IteratorType::parallel);
    iterators.push_back(utils::IteratorType::reduction);
    Value zero = createScalar(b, loc, accumulator, 0.0);
    Value init = linalg::FillOp::create(b, loc, zero,
                                        createEmpty(b, loc, sizes, accumulator))
                     .getResult(0);
    bool fp = isFloat(accumulator);
    result =
        linalg::GenericOp::create(
            b, loc, TypeRange{init.getType()}, ValueRange{lhs, rhs},
            ValueRange{init}, maps, iterators,
            [&](OpBuilder &nb, Location nl, ValueRange args) {
              Value prod =
                  buildBinary(nb, nl, BinaryKind::Mul,
                              widenScalar(nb, nl, args[0], accumulator),
                              widenScalar(nb, nl, args[1], accumulator));
              Value sum =
                  fp ? arith::AddFOp::create(nb, nl, args[2], prod).getResult()
                     : arith::AddIOp::create(nb, nl, args[2], prod).getResult();
              linalg::YieldOp::create(nb, nl, sum);
            })
            .getResult(0);
  }
  int64_t outRank = rankOf(result);
  if (lhsVector && rhsVector)
    return dropUnitDims(b, loc, result, {outRank - 2, outRank - 1});
  if (lhsVector)
    return dropUnitDims(b, loc, result, {outRank - 2});
  if (rhsVector)
    return dropUnitDims(b, loc, result, {outRank - 1});
  return result;
}

static LogicalResult importMatMul(Node &node) {
  if (failed(node.checkAttributes({})) || failed(checkSameElementType(node, 2)))
    return failure();
  if (elementTypeOf(node.getInput(0)).isInteger(1))
    return requireFloat(node, elementTypeOf(node.getInput(0)));
  FailureOr<Value> result =
      buildMatMul(node, node.getInput(0), node.getInput(1));
  if (failed(result))
    return failure();
  result = convertFloats(node, *result, elementTypeOf(node.getInput(0)));
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

static Value buildTranspose(OpBuilder &b, Location loc, Value value,
                            ArrayRef<int64_t> perm) {
  auto type = cast<RankedTensorType>(value.getType());
  SmallVector<OpFoldResult> dims = getDims(b, loc, value);
  SmallVector<OpFoldResult> sizes;
  for (int64_t p : perm)
    sizes.push_back(dims[p]);
  Value init = createEmpty(b, loc, sizes, type.getElementType());
  return linalg::TransposeOp::create(b, loc, value, init, perm).getResult()[0];
}

static LogicalResult importGemm(Node &node) {
  if (failed(node.checkAttributes({"alpha", "beta", "transA", "transB"})) ||
      failed(checkSameElementType(node, 2)))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Value a = node.getInput(0), bm = node.getInput(1);
  Type type = elementTypeOf(a);
  if (failed(requireFloat(node, type)))
    return failure();
  if (rankOf(a) != 2 || rankOf(bm) != 2) {
    node.emitError() << "A and B must be matrices";
    return failure();
  }
  if (node.getInt("transA", 0))
    a = buildTranspose(b, loc, a, {1, 0});
  if (node.getInt("transB", 0))
    bm = buildTranspose(b, loc, bm, {1, 0});
  FailureOr<Value> product = buildMatMul(node, a, bm);
  if (failed(product))
    return failure();
  double alpha = node.getFloat("alpha", 1.0);
  double beta = node.getFloat("beta", 1.0);
  SmallVector<Value> operands = {*product};
  if (node.hasInput(2) && beta != 0.0) {
    if (elementTypeOf(node.getInput(2)) != type) {
      node.emitError() << "C has a different element type";
      return failure();
    }
    operands.push_back(node.getInput(2));
  }
  if (alpha == 1.0 && operands.size() == 1) {
    product = convertFloats(node, *product, type);
    if (failed(product))
      return failure();
    return node.setResults(*product);
  }
  // alpha * AB + beta * C in the product's accumulation type, rounded once.
  Type accumulator = elementTypeOf(*product);
  FailureOr<Value> result = buildElementwise(
      node, operands, type, [&](OpBuilder &nb, Location nl, ValueRange args) {
        Value acc = args[0];
        if (alpha != 1.0)
          acc = arith::MulFOp::create(nb, nl, acc,
                                      createScalar(nb, nl, accumulator, alpha));
        if (args.size() > 1) {
          Value c = widenScalar(nb, nl, args[1], accumulator);
          if (beta != 1.0)
            c = arith::MulFOp::create(nb, nl, c,
                                      createScalar(nb, nl, accumulator, beta));
          acc = arith::AddFOp::create(nb, nl, acc, c);
        }
        if (acc.getType() != type)
          acc = arith::TruncFOp::create(nb, nl, type, acc);
        return acc;
      });
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

//===----------------------------------------------------------------------===//
// Reductions and normalizations
//===----------------------------------------------------------------------===//

using CombineFn = function_ref<Value(OpBuilder &, Location, Value element,
                                     Value accumulator)>;

/// Reduces `input` over the sorted `axes`, dropping them.
static Value buildReduction(OpBuilder &b, Location loc, Value input,
                            ArrayRef<int64_t> axes, Value initScalar,
                            CombineFn combine) {
  auto type = cast<RankedTensorType>(input.getType());
  MLIRContext *ctx = b.getContext();
  int64_t rank = type.getRank();
  SmallVector<OpFoldResult> dims = getDims(b, loc, input);
  SmallVector<OpFoldResult> sizes;
  SmallVector<AffineExpr> outExprs;
  SmallVector<utils::IteratorType> iterators;
  for (int64_t d = 0; d < rank; ++d) {
    if (llvm::is_contained(axes, d)) {
      iterators.push_back(utils::IteratorType::reduction);
      continue;
    }
    iterators.push_back(utils::IteratorType::parallel);
    sizes.push_back(dims[d]);
    outExprs.push_back(getAffineDimExpr(d, ctx));
  }
  Value init =
      linalg::FillOp::create(b, loc, initScalar,
                             createEmpty(b, loc, sizes, initScalar.getType()))
          .getResult(0);
  SmallVector<AffineMap> maps = {AffineMap::getMultiDimIdentityMap(rank, ctx),
                                 AffineMap::get(rank, 0, outExprs, ctx)};
  return linalg::GenericOp::create(
             b, loc, TypeRange{init.getType()}, ValueRange{input},
             ValueRange{init}, maps, iterators,
             [&](OpBuilder &nb, Location nl, ValueRange args) {
               linalg::YieldOp::create(nb, nl,
                                       combine(nb, nl, args[0], args[1]));
             })
      .getResult(0);
}

/// An elementwise op over `full` and `reduced` (`full` with the sorted `axes`
/// dropped), the reduced value broadcast along the axes.
static Value buildWithReduced(OpBuilder &b, Location loc, Value full,
                              Value reduced, ArrayRef<int64_t> axes,
                              ElementwiseBody body) {
  auto type = cast<RankedTensorType>(full.getType());
  MLIRContext *ctx = b.getContext();
  int64_t rank = type.getRank();
  SmallVector<AffineExpr> reducedExprs;
  for (int64_t d = 0; d < rank; ++d)
    if (!llvm::is_contained(axes, d))
      reducedExprs.push_back(getAffineDimExpr(d, ctx));
  SmallVector<AffineMap> maps = {AffineMap::getMultiDimIdentityMap(rank, ctx),
                                 AffineMap::get(rank, 0, reducedExprs, ctx),
                                 AffineMap::getMultiDimIdentityMap(rank, ctx)};
  Value init =
      createEmpty(b, loc, getDims(b, loc, full), type.getElementType());
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::parallel);
  return linalg::GenericOp::create(
             b, loc, TypeRange{init.getType()}, ValueRange{full, reduced},
             ValueRange{init}, maps, iterators,
             [&](OpBuilder &nb, Location nl, ValueRange args) {
               linalg::YieldOp::create(nb, nl,
                                       body(nb, nl, args.take_front(2)));
             })
      .getResult(0);
}

static Value buildSoftmax(OpBuilder &b, Location loc, Value input, int64_t axis,
                          bool logSoftmax) {
  Type type = elementTypeOf(input);
  Value minusInf = arith::ConstantOp::create(
      b, loc, b.getFloatAttr(type, -std::numeric_limits<double>::infinity()));
  Value max = buildReduction(
      b, loc, input, {axis}, minusInf,
      [](OpBuilder &nb, Location nl, Value x, Value acc) {
        return arith::MaximumFOp::create(nb, nl, x, acc).getResult();
      });
  Value exp = buildWithReduced(
      b, loc, input, max, {axis},
      [](OpBuilder &nb, Location nl, ValueRange args) -> Value {
        return math::ExpOp::create(
            nb, nl, arith::SubFOp::create(nb, nl, args[0], args[1]));
      });
  Value sum =
      buildReduction(b, loc, exp, {axis}, createScalar(b, loc, type, 0),
                     [](OpBuilder &nb, Location nl, Value x, Value acc) {
                       return arith::AddFOp::create(nb, nl, x, acc).getResult();
                     });
  if (logSoftmax) {
    Value shifted = buildWithReduced(
        b, loc, input, max, {axis},
        [](OpBuilder &nb, Location nl, ValueRange args) -> Value {
          return arith::SubFOp::create(nb, nl, args[0], args[1]);
        });
    return buildWithReduced(
        b, loc, shifted, sum, {axis},
        [](OpBuilder &nb, Location nl, ValueRange args) -> Value {
          return arith::SubFOp::create(nb, nl, args[0],
                                       math::LogOp::create(nb, nl, args[1]));
        });
  }
  return buildWithReduced(
      b, loc, exp, sum, {axis},
      [](OpBuilder &nb, Location nl, ValueRange args) -> Value {
        return arith::DivFOp::create(nb, nl, args[0], args[1]);
      });
}

template <bool LogSoftmax> static LogicalResult importSoftmax(Node &node) {
  if (failed(node.checkAttributes({"axis"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  Value input = node.getInput(0);
  if (failed(requireFloat(node, elementTypeOf(input))))
    return failure();
  int64_t rank = rankOf(input);
  int64_t defaultAxis = node.getOpset() >= 13 ? -1 : 1;
  FailureOr<int64_t> axis =
      normalizeAxis(node, node.getInt("axis", defaultAxis), rank);
  if (failed(axis))
    return failure();
  // Before opset 13 the input is coerced to 2-D at `axis`; that is the
  // per-axis softmax only when `axis` is the last dimension.
  if (node.getOpset() < 13 && *axis != rank - 1) {
    node.emitError() << "axis " << *axis
                     << " other than the last is not supported before opset 13";
    return failure();
  }
  // 16-bit inputs: the maximum, exponentials and sum in f32, the result
  // rounded once.
  Type type = elementTypeOf(input);
  FailureOr<Value> wide = convertFloats(node, input, accumulationType(type));
  if (failed(wide))
    return failure();
  FailureOr<Value> result = convertFloats(
      node,
      buildSoftmax(node.getBuilder(), node.getLoc(), *wide, *axis, LogSoftmax),
      type);
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

namespace {
enum class ReduceKind { Sum, Mean, Max, Min };
} // namespace

template <ReduceKind Kind> static LogicalResult importReduce(Node &node) {
  if (failed(
          node.checkAttributes({"axes", "keepdims", "noop_with_empty_axes"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Value input = node.getInput(0);
  Type type = elementTypeOf(input);
  if (type.isInteger(1) || (Kind == ReduceKind::Mean && !isFloat(type)))
    return requireFloat(node, type);
  int64_t rank = rankOf(input);
  // Axes are an input from opset 13 (ReduceSum) or 18 (the others).
  int64_t axesInputSince = Kind == ReduceKind::Sum ? 13 : 18;
  SmallVector<int64_t> rawAxes;
  if (node.getOpset() >= axesInputSince) {
    if (node.getAttr("axes")) {
      node.emitError() << "attribute 'axes' is not supported from opset "
                       << axesInputSince;
      return failure();
    }
    if (node.hasInput(1)) {
      FailureOr<SmallVector<int64_t>> axes = node.getConstantInts(1, "axes");
      if (failed(axes))
        return failure();
      rawAxes = *axes;
    }
  } else if (std::optional<SmallVector<int64_t>> axes = node.getInts("axes")) {
    rawAxes = *axes;
  }
  if (rawAxes.empty()) {
    if (node.getInt("noop_with_empty_axes", 0))
      return node.setResults(input);
    for (int64_t d = 0; d < rank; ++d)
      rawAxes.push_back(d);
  }
  FailureOr<SmallVector<int64_t>> axes = normalizeAxes(node, rawAxes, rank);
  if (failed(axes))
    return failure();
  // Sums of 16-bit floats accumulate in f32 and are rounded once.
  Type resultType = type;
  if (Kind == ReduceKind::Sum || Kind == ReduceKind::Mean) {
    type = accumulationType(type);
    FailureOr<Value> wide = convertFloats(node, input, type);
    if (failed(wide))
      return failure();
    input = *wide;
  }
  bool fp = isFloat(type);
  Value init;
  switch (Kind) {
  case ReduceKind::Sum:
  case ReduceKind::Mean:
    init = createScalar(b, loc, type, 0.0);
    break;
  case ReduceKind::Max:
  case ReduceKind::Min: {
    bool max = Kind == ReduceKind::Max;
    if (fp) {
      double inf = std::numeric_limits<double>::infinity();
      init = arith::ConstantOp::create(b, loc,
                                       b.getFloatAttr(type, max ? -inf : inf));
    } else {
      unsigned width = type.getIntOrFloatBitWidth();
      APInt value = max ? APInt::getSignedMinValue(width)
                        : APInt::getSignedMaxValue(width);
      init = arith::ConstantOp::create(b, loc, b.getIntegerAttr(type, value));
    }
    break;
  }
  }
  Value result = buildReduction(
      b, loc, input, *axes, init,
      [&](OpBuilder &nb, Location nl, Value x, Value acc) -> Value {
        switch (Kind) {
        case ReduceKind::Sum:
        case ReduceKind::Mean:
          return buildBinary(nb, nl, BinaryKind::Add, x, acc);
        case ReduceKind::Max:
          return buildBinary(nb, nl, BinaryKind::Max, x, acc);
        case ReduceKind::Min:
          return buildBinary(nb, nl, BinaryKind::Min, x, acc);
        }
        llvm_unreachable("unknown reduction");
      });
  if (Kind == ReduceKind::Mean) {
    // Divide by the number of reduced elements.
    SmallVector<OpFoldResult> dims = getDims(b, loc, input);
    Value count = arith::ConstantIndexOp::create(b, loc, 1);
    for (int64_t axis : *axes)
      count = arith::MulIOp::create(
          b, loc, count, getValueOrCreateConstantIndexOp(b, loc, dims[axis]));
    Value countInt = arith::IndexCastOp::create(b, loc, b.getI64Type(), count);
    Value countFp = arith::SIToFPOp::create(b, loc, type, countInt);
    result = *buildElementwise(
        node, {result}, type,
        [&](OpBuilder &nb, Location nl, ValueRange args) -> Value {
          return arith::DivFOp::create(nb, nl, args[0], countFp);
        });
  }
  FailureOr<Value> rounded = convertFloats(node, result, resultType);
  if (failed(rounded))
    return failure();
  result = *rounded;
  if (node.getInt("keepdims", 1))
    result = insertUnitDims(b, loc, result, *axes);
  return node.setResults(result);
}

/// LayerNormalization (opset 17) and com.microsoft's
/// SimplifiedLayerNormalization (RMSNorm): normalizes over [axis, rank).
static FailureOr<Value> buildNormalization(Node &node, bool subtractMean) {
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Value input = node.getInput(0);
  Type resultType = elementTypeOf(input);
  if (failed(requireFloat(node, resultType)))
    return failure();
  // 16-bit inputs normalize in f32 (LayerNormalization's stash_type 1),
  // rounded once at the end.
  Type type = accumulationType(resultType);
  FailureOr<Value> wide = convertFloats(node, input, type);
  if (failed(wide))
    return failure();
  input = *wide;
  int64_t rank = rankOf(input);
  FailureOr<int64_t> axis = normalizeAxis(node, node.getInt("axis", -1), rank);
  if (failed(axis))
    return failure();
  SmallVector<int64_t> axes;
  for (int64_t d = *axis; d < rank; ++d)
    axes.push_back(d);
  double epsilon = node.getFloat("epsilon", 1e-5);
  SmallVector<OpFoldResult> dims = getDims(b, loc, input);
  Value count = arith::ConstantIndexOp::create(b, loc, 1);
  for (int64_t d : axes)
    count = arith::MulIOp::create(
        b, loc, count, getValueOrCreateConstantIndexOp(b, loc, dims[d]));
  Value countFp = arith::SIToFPOp::create(
      b, loc, type, arith::IndexCastOp::create(b, loc, b.getI64Type(), count));
  Value zero = createScalar(b, loc, type, 0.0);
  auto add = [](OpBuilder &nb, Location nl, Value x, Value acc) -> Value {
    return arith::AddFOp::create(nb, nl, x, acc);
  };
  Value centered = input;
  if (subtractMean) {
    Value sum = buildReduction(b, loc, input, axes, zero, add);
    centered = buildWithReduced(
        b, loc, input, sum, axes,
        [&](OpBuilder &nb, Location nl, ValueRange args) -> Value {
          Value mean = arith::DivFOp::create(nb, nl, args[1], countFp);
          return arith::SubFOp::create(nb, nl, args[0], mean);
        });
  }
  Value squares = buildReduction(
      b, loc, centered, axes, zero,
      [](OpBuilder &nb, Location nl, Value x, Value acc) -> Value {
        return arith::AddFOp::create(nb, nl,
                                     arith::MulFOp::create(nb, nl, x, x), acc);
      });
  Value normalized = buildWithReduced(
      b, loc, centered, squares, axes,
      [&](OpBuilder &nb, Location nl, ValueRange args) -> Value {
        Value var = arith::DivFOp::create(nb, nl, args[1], countFp);
        Value eps = createScalar(nb, nl, type, epsilon);
        Value rstd = math::RsqrtOp::create(
            nb, nl, arith::AddFOp::create(nb, nl, var, eps));
        return arith::MulFOp::create(nb, nl, args[0], rstd);
      });
  SmallVector<Value> operands = {normalized, node.getInput(1)};
  if (node.hasInput(2))
    operands.push_back(node.getInput(2));
  return buildElementwise(
      node, operands, resultType,
      [&](OpBuilder &nb, Location nl, ValueRange args) -> Value {
        Value result = arith::MulFOp::create(
            nb, nl, args[0], widenScalar(nb, nl, args[1], type));
        if (args.size() > 2)
          result = arith::AddFOp::create(nb, nl, result,
                                         widenScalar(nb, nl, args[2], type));
        if (result.getType() != resultType)
          result = arith::TruncFOp::create(nb, nl, resultType, result);
        return result;
      });
}

static LogicalResult importLayerNormalization(Node &node) {
  if (failed(node.checkAttributes({"axis", "epsilon", "stash_type"})) ||
      failed(checkSameElementType(node, 2)))
    return failure();
  if (node.getInt("stash_type", 1) != 1) {
    node.emitError() << "stash_type other than 1 (float) is not supported";
    return failure();
  }
  FailureOr<Value> result = buildNormalization(node, /*subtractMean=*/true);
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

static LogicalResult importSimplifiedLayerNormalization(Node &node) {
  if (failed(node.checkAttributes({"axis", "epsilon", "stash_type"})) ||
      failed(checkSameElementType(node, 2)))
    return failure();
  if (node.getInt("stash_type", 1) != 1) {
    node.emitError() << "stash_type other than 1 (float) is not supported";
    return failure();
  }
  FailureOr<Value> result = buildNormalization(node, /*subtractMean=*/false);
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

//===----------------------------------------------------------------------===//
// TopK
//===----------------------------------------------------------------------===//

/// One selection step of TopK: the best element along `axis` that `mask`
/// does not exclude, as (value, index) with `axis` dropped. Ties go to the
/// lower index, as in ONNX.
static std::pair<Value, Value> buildSelectBest(OpBuilder &b, Location loc,
                                               Value input, Value mask,
                                               int64_t axis, bool largest) {
  auto type = cast<RankedTensorType>(input.getType());
  Type elementType = type.getElementType();
  MLIRContext *ctx = b.getContext();
  int64_t rank = type.getRank();
  SmallVector<OpFoldResult> dims = getDims(b, loc, input);
  SmallVector<OpFoldResult> sizes;
  SmallVector<AffineExpr> outExprs;
  SmallVector<utils::IteratorType> iterators;
  for (int64_t d = 0; d < rank; ++d) {
    if (d == axis) {
      iterators.push_back(utils::IteratorType::reduction);
      continue;
    }
    iterators.push_back(utils::IteratorType::parallel);
    sizes.push_back(dims[d]);
    outExprs.push_back(getAffineDimExpr(d, ctx));
  }
  Value valueInit =
      linalg::FillOp::create(b, loc, createScalar(b, loc, elementType, 0.0),
                             createEmpty(b, loc, sizes, elementType))
          .getResult(0);
  Value indexInit =
      linalg::FillOp::create(b, loc, createScalar(b, loc, b.getI64Type(), -1.0),
                             createEmpty(b, loc, sizes, b.getI64Type()))
          .getResult(0);
  AffineMap identity = AffineMap::getMultiDimIdentityMap(rank, ctx);
  AffineMap outMap = AffineMap::get(rank, 0, outExprs, ctx);
  auto generic = linalg::GenericOp::create(
      b, loc, TypeRange{valueInit.getType(), indexInit.getType()},
      ValueRange{input, mask}, ValueRange{valueInit, indexInit},
      {identity, identity, outMap, outMap}, iterators,
      [&](OpBuilder &nb, Location nl, ValueRange args) {
        Value x = args[0], excluded = args[1], best = args[2],
              bestIndex = args[3];
        Value i = arith::IndexCastOp::create(
            nb, nl, nb.getI64Type(), linalg::IndexOp::create(nb, nl, axis));
        Value better, equal;
        if (isFloat(elementType)) {
          better = arith::CmpFOp::create(nb, nl,
                                         largest ? arith::CmpFPredicate::OGT
                                                 : arith::CmpFPredicate::OLT,
                                         x, best);
          equal =
              arith::CmpFOp::create(nb, nl, arith::CmpFPredicate::OEQ, x, best);
        } else {
          better = arith::CmpIOp::create(nb, nl,
                                         largest ? arith::CmpIPredicate::sgt
                                                 : arith::CmpIPredicate::slt,
                                         x, best);
          equal =
              arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::eq, x, best);
        }
        Value none =
            arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::slt, bestIndex,
                                  createScalar(nb, nl, nb.getI64Type(), 0.0));
        Value lower = arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::slt,
                                            i, bestIndex);
        Value tieWin = arith::AndIOp::create(nb, nl, equal, lower);
        Value wins = arith::OrIOp::create(
            nb, nl, none, arith::OrIOp::create(nb, nl, better, tieWin));
        Value allowed = arith::XOrIOp::create(
            nb, nl, excluded,
            arith::ConstantOp::create(nb, nl, nb.getBoolAttr(true)));
        Value take = arith::AndIOp::create(nb, nl, wins, allowed);
        Value newBest = arith::SelectOp::create(nb, nl, take, x, best);
        Value newIndex = arith::SelectOp::create(nb, nl, take, i, bestIndex);
        linalg::YieldOp::create(nb, nl, ValueRange{newBest, newIndex});
      });
  return {generic.getResult(0), generic.getResult(1)};
}

/// The largest K of TopK (one selection pass each).
static constexpr int64_t kMaxTopK = 1024;

static LogicalResult importTopK(Node &node) {
  if (failed(node.checkAttributes({"axis", "largest", "sorted"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = node.getContext();
  Value input = node.getInput(0);
  auto type = cast<RankedTensorType>(input.getType());
  Type elementType = type.getElementType();
  if (elementType.isInteger(1))
    return requireFloat(node, elementType);
  int64_t rank = type.getRank();
  FailureOr<int64_t> axis = normalizeAxis(node, node.getInt("axis", -1), rank);
  if (failed(axis))
    return failure();
  FailureOr<SmallVector<int64_t>> kValues = node.getConstantInts(1, "K");
  if (failed(kValues))
    return failure();
  if (kValues->size() != 1 || (*kValues)[0] < 1) {
    node.emitError() << "K must hold one positive value";
    return failure();
  }
  int64_t k = (*kValues)[0];
  int64_t axisSize = type.getDimSize(*axis);
  if (!ShapedType::isDynamic(axisSize) && k > axisSize) {
    node.emitError() << "K = " << k << " exceeds the axis size " << axisSize;
    return failure();
  }
  // One selection pass per k is built: bound the IR.
  if (k > kMaxTopK) {
    node.emitError() << "K = " << k << " is larger than " << kMaxTopK
                     << ", the most selection passes the importer builds";
    return failure();
  }
  bool largest = node.getInt("largest", 1) != 0;

  SmallVector<OpFoldResult> dims = getDims(b, loc, input);
  Value falseValue = arith::ConstantOp::create(b, loc, b.getBoolAttr(false));
  Value mask = linalg::FillOp::create(b, loc, falseValue,
                                      createEmpty(b, loc, dims, b.getI1Type()))
                   .getResult(0);
  SmallVector<AffineExpr> reducedExprs;
  for (int64_t d = 0; d < rank; ++d)
    if (d != *axis)
      reducedExprs.push_back(getAffineDimExpr(d, ctx));
  AffineMap reducedMap = AffineMap::get(rank, 0, reducedExprs, ctx);
  AffineMap identity = AffineMap::getMultiDimIdentityMap(rank, ctx);
  SmallVector<utils::IteratorType> iterators(rank,
                                             utils::IteratorType::parallel);
  int64_t axisDim = *axis;
  SmallVector<Value> bestValues, bestIndices;
  for (int64_t j = 0; j < k; ++j) {
    auto [best, bestIndex] =
        buildSelectBest(b, loc, input, mask, *axis, largest);
    bestValues.push_back(best);
    bestIndices.push_back(bestIndex);
    if (j + 1 == k)
      break;
    // Exclude the chosen element from the next steps.
    mask = linalg::GenericOp::create(
               b, loc, TypeRange{mask.getType()}, ValueRange{bestIndex},
               ValueRange{mask}, {reducedMap, identity}, iterators,
               [&](OpBuilder &nb, Location nl, ValueRange args) {
                 Value i = arith::IndexCastOp::create(
                     nb, nl, nb.getI64Type(),
                     linalg::IndexOp::create(nb, nl, axisDim));
                 Value hit = arith::CmpIOp::create(
                     nb, nl, arith::CmpIPredicate::eq, i, args[0]);
                 linalg::YieldOp::create(
                     nb, nl,
                     arith::OrIOp::create(nb, nl, args[1], hit).getResult());
               })
               .getResult(0);
  }

  // Assemble the k selections along the axis: element j of the axis is the
  // j-th selection.
  SmallVector<OpFoldResult> outSizes = dims;
  outSizes[*axis] = b.getIndexAttr(k);
  Value valuesInit = createEmpty(b, loc, outSizes, elementType);
  Value indicesInit = createEmpty(b, loc, outSizes, b.getI64Type());
  SmallVector<Value> operands(bestValues);
  llvm::append_range(operands, bestIndices);
  SmallVector<AffineMap> maps(2 * k, reducedMap);
  maps.append({identity, identity});
  auto assemble = linalg::GenericOp::create(
      b, loc, TypeRange{valuesInit.getType(), indicesInit.getType()}, operands,
      ValueRange{valuesInit, indicesInit}, maps, iterators,
      [&](OpBuilder &nb, Location nl, ValueRange args) {
        Value j = linalg::IndexOp::create(nb, nl, axisDim);
        Value value = args[k - 1], index = args[2 * k - 1];
        for (int64_t s = k - 2; s >= 0; --s) {
          Value isS =
              arith::CmpIOp::create(nb, nl, arith::CmpIPredicate::eq, j,
                                    arith::ConstantIndexOp::create(nb, nl, s));
          value = arith::SelectOp::create(nb, nl, isS, args[s], value);
          index = arith::SelectOp::create(nb, nl, isS, args[k + s], index);
        }
        linalg::YieldOp::create(nb, nl, ValueRange{value, index});
      });
  Value values = assemble.getResult(0), indices = assemble.getResult(1);
  return node.setResults({values, indices});
}

//===----------------------------------------------------------------------===//
// Shapes and data movement
//===----------------------------------------------------------------------===//

/// Reshapes `input` to `shape`/`sizes` through collapse_shape/expand_shape.
static Value buildReshape(OpBuilder &b, Location loc, Value input,
                          ArrayRef<int64_t> shape,
                          ArrayRef<OpFoldResult> sizes) {
  auto srcType = cast<RankedTensorType>(input.getType());
  auto dstType = RankedTensorType::get(shape, srcType.getElementType());
  if (srcType == dstType)
    return input;
  int64_t srcRank = srcType.getRank(), dstRank = dstType.getRank();
  if (srcRank != dstRank && srcRank > 0 && dstRank > 0) {
    if (std::optional<SmallVector<ReassociationIndices>> groups =
            getReassociationIndicesForReshape(srcType, dstType)) {
      if (srcRank > dstRank)
        return tensor::CollapseShapeOp::create(b, loc, dstType, input, *groups);
      return buildExpandShape(b, loc, dstType, input, *groups, sizes);
    }
  }
  // General case: through a 1-D tensor.
  Value flat = input;
  if (srcRank == 0) {
    flat = tensor::ExpandShapeOp::create(
        b, loc, RankedTensorType::get({1}, srcType.getElementType()), input,
        SmallVector<ReassociationIndices>{},
        SmallVector<OpFoldResult>{b.getIndexAttr(1)});
  } else if (srcRank > 1) {
    ReassociationIndices all;
    for (int64_t d = 0; d < srcRank; ++d)
      all.push_back(d);
    flat = tensor::CollapseShapeOp::create(
        b, loc, input, SmallVector<ReassociationIndices>{all});
  }
  if (dstRank == 0)
    return tensor::CollapseShapeOp::create(b, loc, dstType, flat,
                                           SmallVector<ReassociationIndices>{});
  if (dstRank == 1) {
    if (flat.getType() == dstType)
      return flat;
    return tensor::CastOp::create(b, loc, dstType, flat);
  }
  ReassociationIndices all;
  for (int64_t d = 0; d < dstRank; ++d)
    all.push_back(d);
  return buildExpandShape(b, loc, dstType, flat,
                          SmallVector<ReassociationIndices>{all}, sizes);
}

static LogicalResult importReshape(Node &node) {
  if (failed(node.checkAttributes({"allowzero"})))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Value input = node.getInput(0);
  if (!input) {
    node.emitError() << "input 0 is required";
    return failure();
  }
  FailureOr<SmallVector<OpFoldResult>> target =
      node.getShapeOperand(1, "shape");
  if (failed(target))
    return failure();
  bool allowZero = node.getInt("allowzero", 0) != 0;
  auto srcType = cast<RankedTensorType>(input.getType());
  SmallVector<OpFoldResult> srcDims = getDims(b, loc, input);
  SmallVector<int64_t> shape;
  SmallVector<OpFoldResult> sizes;
  int64_t inferred = -1;
  for (auto [i, element] : llvm::enumerate(*target)) {
    std::optional<int64_t> constant = getConstantIntValue(element);
    if (!constant) {
      // A size computed from the shapes of other tensors.
      shape.push_back(ShapedType::kDynamic);
      sizes.push_back(element);
      continue;
    }
    int64_t s = *constant;
    if (s == 0 && !allowZero) {
      if ((int64_t)i >= srcType.getRank()) {
        node.emitError() << "shape copies dimension " << i
                         << " that the input does not have";
        return failure();
      }
      shape.push_back(srcType.getDimSize(i));
      sizes.push_back(srcDims[i]);
    } else if (s == -1) {
      if (inferred >= 0) {
        node.emitError() << "shape has more than one -1";
        return failure();
      }
      inferred = i;
      shape.push_back(ShapedType::kDynamic);
      sizes.push_back(OpFoldResult());
    } else if (s < 0) {
      node.emitError() << "shape has a negative size " << s;
      return failure();
    } else {
      shape.push_back(s);
      sizes.push_back(b.getIndexAttr(s));
    }
  }
  if (inferred >= 0) {
    int64_t known = 1;
    bool dynamic = false;
    for (auto [i, s] : llvm::enumerate(shape)) {
      if ((int64_t)i == inferred)
        continue;
      if (ShapedType::isDynamic(s))
        dynamic = true;
      else if (llvm::MulOverflow(known, s, known)) {
        node.emitError() << "the shape's sizes overflow";
        return failure();
      }
    }
    if (srcType.hasStaticShape() && !dynamic) {
      int64_t total = srcType.getNumElements();
      if (known == 0 || total % known != 0) {
        node.emitError() << "cannot reshape " << srcType << " to the shape";
        return failure();
      }
      shape[inferred] = total / known;
      sizes[inferred] = b.getIndexAttr(total / known);
    } else {
      Value total = arith::ConstantIndexOp::create(b, loc, 1);
      for (OpFoldResult dim : srcDims)
        total = arith::MulIOp::create(
            b, loc, total, getValueOrCreateConstantIndexOp(b, loc, dim));
      Value others = arith::ConstantIndexOp::create(b, loc, 1);
      for (auto [i, size] : llvm::enumerate(sizes))
        if ((int64_t)i != inferred)
          others = arith::MulIOp::create(
              b, loc, others, getValueOrCreateConstantIndexOp(b, loc, size));
      sizes[inferred] =
          arith::DivUIOp::create(b, loc, total, others).getResult();
    }
  } else if (srcType.hasStaticShape() &&
             llvm::none_of(shape, ShapedType::isDynamic)) {
    int64_t total = 1;
    bool overflow = false;
    for (int64_t s : shape)
      overflow |= llvm::MulOverflow(total, s, total);
    if (overflow || total != srcType.getNumElements()) {
      node.emitError() << "cannot reshape " << srcType << " to the shape";
      return failure();
    }
  }
  return node.setResults(buildReshape(b, loc, input, shape, sizes));
}

static LogicalResult importFlatten(Node &node) {
  if (failed(node.checkAttributes({"axis"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  Value input = node.getInput(0);
  int64_t rank = rankOf(input);
  int64_t axis = node.getInt("axis", 1);
  if (axis < 0)
    axis += rank;
  if (axis < 0 || axis > rank) {
    node.emitError() << "axis is out of range";
    return failure();
  }
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  // [d0 * ... * d(axis-1), d(axis) * ... * d(rank-1)]
  Value flat = input;
  if (axis == 0 || axis == rank)
    flat = insertUnitDims(b, loc, input, {axis == 0 ? 0 : rank});
  int64_t split = axis == 0 ? 1 : axis;
  int64_t flatRank = rankOf(flat);
  ReassociationIndices left, right;
  for (int64_t d = 0; d < flatRank; ++d)
    (d < split ? left : right).push_back(d);
  return node.setResults(Value(tensor::CollapseShapeOp::create(
      b, loc, flat, SmallVector<ReassociationIndices>{left, right})));
}

static LogicalResult importTranspose(Node &node) {
  if (failed(node.checkAttributes({"perm"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  Value input = node.getInput(0);
  int64_t rank = rankOf(input);
  SmallVector<int64_t> perm;
  if (std::optional<SmallVector<int64_t>> given = node.getInts("perm")) {
    perm = *given;
  } else {
    for (int64_t d = rank - 1; d >= 0; --d)
      perm.push_back(d);
  }
  SmallVector<int64_t> sorted(perm);
  llvm::sort(sorted);
  for (int64_t d = 0; d < rank; ++d) {
    if ((int64_t)sorted.size() != rank || sorted[d] != d) {
      node.emitError() << "perm is not a permutation of the " << rank
                       << " dimensions";
      return failure();
    }
  }
  return node.setResults(
      buildTranspose(node.getBuilder(), node.getLoc(), input, perm));
}

/// Squeeze/Unsqueeze axes: an attribute before opset 13, an input after.
static FailureOr<std::optional<SmallVector<int64_t>>>
getAxesOperand(Node &node) {
  if (node.getOpset() >= 13) {
    if (node.getAttr("axes")) {
      node.emitError() << "attribute 'axes' is not supported from opset 13";
      return failure();
    }
    if (!node.hasInput(1))
      return std::optional<SmallVector<int64_t>>();
    FailureOr<SmallVector<int64_t>> axes = node.getConstantInts(1, "axes");
    if (failed(axes))
      return failure();
    return std::optional<SmallVector<int64_t>>(*axes);
  }
  return node.getInts("axes");
}

static LogicalResult importUnsqueeze(Node &node) {
  if (failed(node.checkAttributes({"axes"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  FailureOr<std::optional<SmallVector<int64_t>>> axes = getAxesOperand(node);
  if (failed(axes))
    return failure();
  if (!*axes) {
    node.emitError() << "axes are required";
    return failure();
  }
  Value input = node.getInput(0);
  FailureOr<SmallVector<int64_t>> normalized =
      normalizeAxes(node, **axes, rankOf(input) + (*axes)->size());
  if (failed(normalized))
    return failure();
  Value result =
      insertUnitDims(node.getBuilder(), node.getLoc(), input, *normalized);
  if (DenseElementsAttr constant = node.getConstantInput(0))
    node.setConstantResult(
        0, constant.reshape(cast<ShapedType>(result.getType())));
  return node.setResults(result);
}

static LogicalResult importSqueeze(Node &node) {
  if (failed(node.checkAttributes({"axes"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  FailureOr<std::optional<SmallVector<int64_t>>> axes = getAxesOperand(node);
  if (failed(axes))
    return failure();
  Value input = node.getInput(0);
  auto type = cast<RankedTensorType>(input.getType());
  SmallVector<int64_t> dims;
  if (*axes) {
    FailureOr<SmallVector<int64_t>> normalized =
        normalizeAxes(node, **axes, type.getRank());
    if (failed(normalized))
      return failure();
    dims = *normalized;
    for (int64_t d : dims) {
      if (type.getDimSize(d) != 1) {
        node.emitError() << "dimension " << d << " of " << type
                         << " is not a static 1";
        return failure();
      }
    }
  } else {
    for (int64_t d = 0; d < type.getRank(); ++d) {
      if (ShapedType::isDynamic(type.getDimSize(d))) {
        node.emitError() << "squeezing all unit dimensions of " << type
                         << " needs a static shape";
        return failure();
      }
      if (type.getDimSize(d) == 1)
        dims.push_back(d);
    }
  }
  Value result = dropUnitDims(node.getBuilder(), node.getLoc(), input, dims);
  if (DenseElementsAttr constant = node.getConstantInput(0))
    node.setConstantResult(
        0, constant.reshape(cast<ShapedType>(result.getType())));
  return node.setResults(result);
}

static LogicalResult importConcat(Node &node) {
  unsigned count = node.getNumInputs();
  if (failed(node.checkAttributes({"axis"})) ||
      failed(checkSameElementType(node, count)))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Value first = node.getInput(0);
  auto firstType = cast<RankedTensorType>(first.getType());
  int64_t rank = firstType.getRank();
  FailureOr<int64_t> axis = normalizeAxis(node, node.getInt("axis", 0), rank);
  if (failed(axis))
    return failure();
  SmallVector<OpFoldResult> sizes = getDims(b, loc, first);
  SmallVector<int64_t> shape(firstType.getShape());
  bool allConstant = true;
  for (unsigned i = 0; i < count; ++i)
    allConstant &= (bool)node.getConstantInput(i);
  for (unsigned i = 1; i < count; ++i) {
    auto type = cast<RankedTensorType>(node.getInput(i).getType());
    if (type.getRank() != rank) {
      node.emitError() << "inputs have different ranks";
      return failure();
    }
    for (int64_t d = 0; d < rank; ++d) {
      int64_t s = type.getDimSize(d);
      if (d == *axis) {
        shape[d] = ShapedType::isDynamic(shape[d]) || ShapedType::isDynamic(s)
                       ? ShapedType::kDynamic
                       : shape[d] + s;
        continue;
      }
      if (!ShapedType::isDynamic(s) && !ShapedType::isDynamic(shape[d]) &&
          s != shape[d]) {
        node.emitError() << "inputs differ in dimension " << d;
        return failure();
      }
      if (ShapedType::isDynamic(shape[d]) && !ShapedType::isDynamic(s)) {
        shape[d] = s;
        sizes[d] = b.getIndexAttr(s);
      }
    }
  }
  // Offsets along the axis.
  SmallVector<OpFoldResult> offsets;
  OpFoldResult offset = b.getIndexAttr(0);
  SmallVector<SmallVector<OpFoldResult>> inputSizes;
  for (unsigned i = 0; i < count; ++i) {
    offsets.push_back(offset);
    SmallVector<OpFoldResult> dims = getDims(b, loc, node.getInput(i));
    inputSizes.push_back(dims);
    std::optional<int64_t> a = getConstantIntValue(offset);
    std::optional<int64_t> s = getConstantIntValue(dims[*axis]);
    if (a && s)
      offset = b.getIndexAttr(*a + *s);
    else
      offset = arith::AddIOp::create(
                   b, loc, getValueOrCreateConstantIndexOp(b, loc, offset),
                   getValueOrCreateConstantIndexOp(b, loc, dims[*axis]))
                   .getResult();
  }
  sizes[*axis] = offset;
  Value result = createEmpty(b, loc, sizes, firstType.getElementType());
  SmallVector<OpFoldResult> strides(rank, b.getIndexAttr(1));
  for (unsigned i = 0; i < count; ++i) {
    SmallVector<OpFoldResult> at(rank, b.getIndexAttr(0));
    at[*axis] = offsets[i];
    result = tensor::InsertSliceOp::create(b, loc, node.getInput(i), result, at,
                                           inputSizes[i], strides);
  }
  if (shape != cast<RankedTensorType>(result.getType()).getShape())
    result = tensor::CastOp::create(
        b, loc, RankedTensorType::get(shape, firstType.getElementType()),
        result);
  if (allConstant && rank == 1) {
    // Fold small shape computations (Concat of constant shapes).
    SmallVector<Attribute> elements;
    for (unsigned i = 0; i < count; ++i)
      llvm::append_range(elements,
                         node.getConstantInput(i).getValues<Attribute>());
    node.setConstantResult(
        0,
        DenseElementsAttr::get(cast<ShapedType>(result.getType()), elements));
  }
  return node.setResults(result);
}

static LogicalResult importGather(Node &node) {
  if (failed(node.checkAttributes({"axis"})))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = node.getContext();
  Value data = node.getInput(0), indices = node.getInput(1);
  if (!data || !indices) {
    node.emitError() << "data and indices are required";
    return failure();
  }
  auto dataType = cast<RankedTensorType>(data.getType());
  auto indicesType = cast<RankedTensorType>(indices.getType());
  if (!isa<IntegerType>(indicesType.getElementType()) ||
      indicesType.getElementType().isInteger(1)) {
    node.emitError() << "indices must be integers";
    return failure();
  }
  int64_t rank = dataType.getRank();
  FailureOr<int64_t> axis = normalizeAxis(node, node.getInt("axis", 0), rank);
  if (failed(axis))
    return failure();
  int64_t indicesRank = indicesType.getRank();
  SmallVector<OpFoldResult> dataDims = getDims(b, loc, data);
  SmallVector<OpFoldResult> indicesDims = getDims(b, loc, indices);
  SmallVector<OpFoldResult> sizes;
  for (int64_t d = 0; d < *axis; ++d)
    sizes.push_back(dataDims[d]);
  llvm::append_range(sizes, indicesDims);
  for (int64_t d = *axis + 1; d < rank; ++d)
    sizes.push_back(dataDims[d]);
  int64_t outRank = sizes.size();
  SmallVector<AffineExpr> indexExprs;
  for (int64_t d = 0; d < indicesRank; ++d)
    indexExprs.push_back(getAffineDimExpr(*axis + d, ctx));
  // Data-dependent indices are checked at run time (never read out of
  // bounds).
  checkIndicesAtRunTime(node, indices, {dataDims[*axis]});
  Value init = createEmpty(b, loc, sizes, dataType.getElementType());
  Value axisSize = getValueOrCreateConstantIndexOp(b, loc, dataDims[*axis]);
  SmallVector<utils::IteratorType> iterators(outRank,
                                             utils::IteratorType::parallel);
  Value result =
      linalg::GenericOp::create(
          b, loc, TypeRange{init.getType()}, ValueRange{indices},
          ValueRange{init},
          {AffineMap::get(outRank, 0, indexExprs, ctx),
           AffineMap::getMultiDimIdentityMap(outRank, ctx)},
          iterators,
          [&](OpBuilder &nb, Location nl, ValueRange args) {
            Value index =
                arith::IndexCastOp::create(nb, nl, nb.getIndexType(), args[0]);
            // Negative indices count from the end.
            Value zero = arith::ConstantIndexOp::create(nb, nl, 0);
            Value negative = arith::CmpIOp::create(
                nb, nl, arith::CmpIPredicate::slt, index, zero);
            Value wrapped = arith::AddIOp::create(nb, nl, index, axisSize);
            index = arith::SelectOp::create(nb, nl, negative, wrapped, index);
            SmallVector<Value> coords;
            for (int64_t d = 0; d < *axis; ++d)
              coords.push_back(linalg::IndexOp::create(nb, nl, d));
            coords.push_back(index);
            for (int64_t d = *axis + 1; d < rank; ++d)
              coords.push_back(
                  linalg::IndexOp::create(nb, nl, d - 1 + indicesRank));
            Value element = tensor::ExtractOp::create(nb, nl, data, coords);
            linalg::YieldOp::create(nb, nl, element);
          })
          .getResult(0);
  result.getDefiningOp()->setAttr(kGuardedAttr, b.getUnitAttr());
  // Fold gathers from constant shape vectors.
  DenseElementsAttr constData = node.getConstantInput(0);
  DenseElementsAttr constIndices = node.getConstantInput(1);
  if (constData && constIndices && rank == 1 && indicesRank <= 1) {
    SmallVector<Attribute> all(constData.getValues<Attribute>());
    SmallVector<Attribute> picked;
    for (const APInt &i : constIndices.getValues<APInt>()) {
      int64_t idx = i.getSExtValue();
      if (idx < 0)
        idx += all.size();
      if (idx < 0 || idx >= (int64_t)all.size()) {
        node.emitError() << "index " << i.getSExtValue() << " is out of range";
        return failure();
      }
      picked.push_back(all[idx]);
    }
    node.setConstantResult(
        0, DenseElementsAttr::get(cast<ShapedType>(result.getType()), picked));
  }
  return node.setResults(result);
}

static LogicalResult importSlice(Node &node) {
  if (failed(node.checkAttributes({})))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Value input = node.getInput(0);
  if (!input) {
    node.emitError() << "input 0 is required";
    return failure();
  }
  auto type = cast<RankedTensorType>(input.getType());
  int64_t rank = type.getRank();
  FailureOr<SmallVector<int64_t>> starts = node.getConstantInts(1, "starts");
  if (failed(starts))
    return failure();
  // Ends known only at run time (e.g. `[:x.shape[0]]` on a dynamic extent)
  // are read from the tensor; everything else must be constant.
  Value runtimeEnds;
  FailureOr<SmallVector<int64_t>> ends = SmallVector<int64_t>();
  if (node.hasInput(2) && !node.getConstantInput(2)) {
    runtimeEnds = node.getInput(2);
    auto endsType = cast<RankedTensorType>(runtimeEnds.getType());
    if (endsType.getRank() != 1 ||
        endsType.getDimSize(0) != (int64_t)starts->size() ||
        !isa<IntegerType>(endsType.getElementType())) {
      node.emitError() << "run-time ends must be a 1-d integer tensor of "
                       << starts->size() << " elements, got " << endsType;
      return failure();
    }
    ends->assign(starts->size(), 0);
  } else {
    ends = node.getConstantInts(2, "ends");
    if (failed(ends))
      return failure();
  }
  SmallVector<int64_t> axes, steps(starts->size(), 1);
  if (node.hasInput(3)) {
    FailureOr<SmallVector<int64_t>> given = node.getConstantInts(3, "axes");
    if (failed(given))
      return failure();
    axes = *given;
  } else {
    for (int64_t d = 0; d < (int64_t)starts->size(); ++d)
      axes.push_back(d);
  }
  if (node.hasInput(4)) {
    FailureOr<SmallVector<int64_t>> given = node.getConstantInts(4, "steps");
    if (failed(given))
      return failure();
    steps = *given;
  }
  if (ends->size() != starts->size() || axes.size() != starts->size() ||
      steps.size() != starts->size()) {
    node.emitError() << "starts, ends, axes and steps differ in length";
    return failure();
  }
  SmallVector<OpFoldResult> offsets(rank, b.getIndexAttr(0));
  SmallVector<OpFoldResult> sizes = getDims(b, loc, input);
  SmallVector<OpFoldResult> strides(rank, b.getIndexAttr(1));
  SmallVector<int64_t> shape(type.getShape());
  for (auto [i, rawAxis] : llvm::enumerate(axes)) {
    FailureOr<int64_t> axis = normalizeAxis(node, rawAxis, rank);
    if (failed(axis))
      return failure();
    int64_t dim = type.getDimSize(*axis);
    int64_t step = steps[i];
    if (step <= 0) {
      node.emitError() << "step " << step << " is not supported";
      return failure();
    }
    if (ShapedType::isDynamic(dim) || runtimeEnds) {
      // start/end clamped to [0, dim] at run time.
      Value size = getValueOrCreateConstantIndexOp(b, loc, sizes[*axis]);
      Value zero = arith::ConstantIndexOp::create(b, loc, 0);
      auto clamp = [&](Value v) -> Value {
        v = arith::MaxSIOp::create(b, loc, v, zero);
        return arith::MinSIOp::create(b, loc, v, size);
      };
      auto clampBound = [&](int64_t bound) -> Value {
        bound =
            std::clamp<int64_t>(bound, -(int64_t(1) << 62), int64_t(1) << 62);
        Value v = arith::ConstantIndexOp::create(b, loc, bound);
        if (bound < 0)
          v = arith::AddIOp::create(b, loc, v, size);
        return clamp(v);
      };
      Value start = clampBound((*starts)[i]);
      Value end;
      if (runtimeEnds) {
        // A negative end counts from the back; INT64_MAX-like ends clamp.
        Value raw = tensor::ExtractOp::create(
            b, loc, runtimeEnds,
            ValueRange{arith::ConstantIndexOp::create(b, loc, i)});
        Value v = arith::IndexCastOp::create(b, loc, b.getIndexType(), raw);
        Value negative =
            arith::CmpIOp::create(b, loc, arith::CmpIPredicate::slt, v, zero);
        v = arith::SelectOp::create(b, loc, negative,
                                    arith::AddIOp::create(b, loc, v, size), v);
        end = clamp(v);
      } else {
        end = clampBound((*ends)[i]);
      }
      Value extent = arith::MaxSIOp::create(
          b, loc, arith::SubIOp::create(b, loc, end, start), zero);
      if (step != 1)
        extent = arith::CeilDivSIOp::create(
            b, loc, extent, arith::ConstantIndexOp::create(b, loc, step));
      offsets[*axis] = start;
      sizes[*axis] = extent;
      strides[*axis] = b.getIndexAttr(step);
      shape[*axis] = ShapedType::kDynamic;
      continue;
    }
    int64_t start = (*starts)[i], end = (*ends)[i];
    if (start < 0)
      start += dim;
    if (end < 0)
      end += dim;
    start = std::clamp<int64_t>(start, 0, dim);
    end = std::clamp<int64_t>(end, 0, dim);
    int64_t size = end > start ? (end - start - 1) / step + 1 : 0;
    offsets[*axis] = b.getIndexAttr(start);
    sizes[*axis] = b.getIndexAttr(size);
    strides[*axis] = b.getIndexAttr(step);
    shape[*axis] = size;
  }
  auto resultType = RankedTensorType::get(shape, type.getElementType());
  Value result = tensor::ExtractSliceOp::create(b, loc, resultType, input,
                                                offsets, sizes, strides);
  return node.setResults(result);
}

static LogicalResult importSplit(Node &node) {
  if (failed(node.checkAttributes({"axis", "split", "num_outputs"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Value input = node.getInput(0);
  auto type = cast<RankedTensorType>(input.getType());
  int64_t rank = type.getRank();
  FailureOr<int64_t> axis = normalizeAxis(node, node.getInt("axis", 0), rank);
  if (failed(axis))
    return failure();
  int64_t dim = type.getDimSize(*axis);
  if (ShapedType::isDynamic(dim)) {
    node.emitError() << "splitting a dynamic dimension is not supported";
    return failure();
  }
  int64_t outputs = node.getProto().output_size();
  SmallVector<int64_t> parts;
  if (node.getOpset() >= 13 && node.hasInput(1)) {
    FailureOr<SmallVector<int64_t>> given = node.getConstantInts(1, "split");
    if (failed(given))
      return failure();
    parts = *given;
  } else if (std::optional<SmallVector<int64_t>> given =
                 node.getInts("split")) {
    parts = *given;
  } else {
    int64_t chunk = (dim + outputs - 1) / outputs;
    for (int64_t i = 0; i < outputs; ++i)
      parts.push_back(std::min(chunk, dim - i * chunk));
  }
  int64_t total = 0;
  for (int64_t p : parts)
    total += p;
  if ((int64_t)parts.size() != outputs || total != dim ||
      llvm::any_of(parts, [](int64_t p) { return p < 0; })) {
    node.emitError() << "split sizes do not match dimension " << *axis << " of "
                     << type << " and the " << outputs << " outputs";
    return failure();
  }
  SmallVector<Value> results;
  int64_t offset = 0;
  SmallVector<OpFoldResult> dims = getDims(b, loc, input);
  for (int64_t p : parts) {
    SmallVector<OpFoldResult> offsets(rank, b.getIndexAttr(0));
    SmallVector<OpFoldResult> sizes = dims;
    SmallVector<OpFoldResult> strides(rank, b.getIndexAttr(1));
    offsets[*axis] = b.getIndexAttr(offset);
    sizes[*axis] = b.getIndexAttr(p);
    SmallVector<int64_t> shape(type.getShape());
    shape[*axis] = p;
    results.push_back(tensor::ExtractSliceOp::create(
        b, loc, RankedTensorType::get(shape, type.getElementType()), input,
        offsets, sizes, strides));
    offset += p;
  }
  return node.setResults(results);
}

static LogicalResult importShape(Node &node) {
  if (failed(node.checkAttributes({"start", "end"})) ||
      failed(checkSameElementType(node, 1)))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Value input = node.getInput(0);
  auto type = cast<RankedTensorType>(input.getType());
  int64_t rank = type.getRank();
  int64_t start = node.getInt("start", 0), end = node.getInt("end", rank);
  if (start < 0)
    start += rank;
  if (end < 0)
    end += rank;
  start = std::clamp<int64_t>(start, 0, rank);
  end = std::clamp<int64_t>(end, start, rank);
  auto resultType = RankedTensorType::get({end - start}, b.getI64Type());
  ArrayRef<int64_t> dims = type.getShape().slice(start, end - start);
  if (llvm::none_of(dims, ShapedType::isDynamic)) {
    auto attr = DenseElementsAttr::get(resultType, dims);
    node.setConstantResult(0, attr);
    return node.setResults(Value(arith::ConstantOp::create(b, loc, attr)));
  }
  SmallVector<Value> elements;
  for (int64_t d = start; d < end; ++d)
    elements.push_back(arith::IndexCastOp::create(
        b, loc, b.getI64Type(), tensor::DimOp::create(b, loc, input, d)));
  return node.setResults(
      Value(tensor::FromElementsOp::create(b, loc, resultType, elements)));
}

static LogicalResult importConstantOfShape(Node &node) {
  if (failed(node.checkAttributes({"value"})))
    return failure();
  OpBuilder &b = node.getBuilder();
  FailureOr<SmallVector<OpFoldResult>> sizes = node.getShapeOperand(0, "shape");
  if (failed(sizes))
    return failure();
  SmallVector<int64_t> shape;
  for (OpFoldResult size : *sizes) {
    std::optional<int64_t> constant = getConstantIntValue(size);
    if (constant && *constant < 0) {
      node.emitError() << "shape has a negative size " << *constant;
      return failure();
    }
    shape.push_back(constant ? *constant : ShapedType::kDynamic);
  }
  Attribute element = b.getF32FloatAttr(0.0f);
  Type elementType = b.getF32Type();
  if (const onnx::AttributeProto *value = node.getAttr("value")) {
    FailureOr<DenseElementsAttr> tensor = node.getImporter().convertTensor(
        value->t(), [&] { return node.emitError(); });
    if (failed(tensor))
      return failure();
    if (tensor->getNumElements() != 1) {
      node.emitError() << "value must hold one element";
      return failure();
    }
    elementType = tensor->getElementType();
    element = *tensor->getValues<Attribute>().begin();
  }
  auto type = RankedTensorType::get(shape, elementType);
  if (!type.hasStaticShape()) {
    Value init = createEmpty(b, node.getLoc(), *sizes, elementType);
    Value fill =
        arith::ConstantOp::create(b, node.getLoc(), cast<TypedAttr>(element));
    return node.setResults(
        linalg::FillOp::create(b, node.getLoc(), fill, init).getResult(0));
  }
  auto attr = DenseElementsAttr::get(type, element);
  if (type.getRank() <= 1 && isa<IntegerType>(elementType))
    node.setConstantResult(0, attr);
  return node.setResults(
      Value(arith::ConstantOp::create(b, node.getLoc(), attr)));
}

static LogicalResult importConstant(Node &node) {
  OpBuilder &b = node.getBuilder();
  if (node.getProto().attribute_size() != 1) {
    node.emitError() << "exactly one value attribute is required";
    return failure();
  }
  const onnx::AttributeProto &attr = node.getProto().attribute(0);
  DenseElementsAttr value;
  StringRef name = attr.name();
  if (name == "value") {
    FailureOr<DenseElementsAttr> tensor = node.getImporter().convertTensor(
        attr.t(), [&] { return node.emitError(); });
    if (failed(tensor))
      return failure();
    value = *tensor;
  } else if (name == "value_float") {
    value = DenseElementsAttr::get(RankedTensorType::get({}, b.getF32Type()),
                                   attr.f());
  } else if (name == "value_floats") {
    SmallVector<float> floats(attr.floats().begin(), attr.floats().end());
    value = DenseElementsAttr::get(
        RankedTensorType::get({(int64_t)floats.size()}, b.getF32Type()),
        ArrayRef<float>(floats));
  } else if (name == "value_int") {
    value = DenseElementsAttr::get(RankedTensorType::get({}, b.getI64Type()),
                                   (int64_t)attr.i());
  } else if (name == "value_ints") {
    SmallVector<int64_t> ints(attr.ints().begin(), attr.ints().end());
    value = DenseElementsAttr::get(
        RankedTensorType::get({(int64_t)ints.size()}, b.getI64Type()),
        ArrayRef<int64_t>(ints));
  } else {
    node.emitError() << "attribute '" << name << "' is not supported";
    return failure();
  }
  node.setConstantResult(0, value);
  return node.setResults(
      Value(arith::ConstantOp::create(b, node.getLoc(), value)));
}

static LogicalResult importIdentity(Node &node) {
  if (failed(node.checkAttributes({})) || failed(checkSameElementType(node, 1)))
    return failure();
  if (DenseElementsAttr constant = node.getConstantInput(0))
    node.setConstantResult(0, constant);
  return node.setResults(node.getInput(0));
}

static LogicalResult importExpand(Node &node) {
  if (failed(node.checkAttributes({})))
    return failure();
  Value input = node.getInput(0);
  if (!input) {
    node.emitError() << "input 0 is required";
    return failure();
  }
  FailureOr<SmallVector<OpFoldResult>> shape = node.getShapeOperand(1, "shape");
  if (failed(shape))
    return failure();
  for (OpFoldResult size : *shape) {
    std::optional<int64_t> constant = getConstantIntValue(size);
    if (constant && *constant < 0) {
      node.emitError() << "shape has a negative size " << *constant;
      return failure();
    }
  }
  OpBuilder &b = node.getBuilder();
  Type type = elementTypeOf(input);
  // Broadcast against an empty tensor of the target shape; only its shape
  // matters.
  Value shapeTensor = createEmpty(b, node.getLoc(), *shape, type);
  // Not checked at run time: torch exports Expand an input whose dynamic
  // dimension is 1 at run time to a computed shape, which the broadcast
  // above takes for equal (a known gap, docs/ONNXImport.md).
  FailureOr<Value> result = buildElementwise(
      node, {input, shapeTensor}, type,
      [](OpBuilder &, Location, ValueRange args) { return args[0]; },
      /*checkDynamic=*/false);
  if (failed(result))
    return failure();
  return node.setResults(*result);
}

/// CumSum along a constant axis (torch.cumsum; exclusive and reverse too):
/// an `scf.for` over the axis carrying the running sum of the slices and the
/// result.
static LogicalResult importCumSum(Node &node) {
  if (failed(node.checkAttributes({"exclusive", "reverse"})))
    return failure();
  Value input = node.getInput(0);
  if (!input || !node.hasInput(1)) {
    node.emitError() << "inputs 0 (x) and 1 (axis) are required";
    return failure();
  }
  DenseElementsAttr axisAttr = node.getConstantInput(1);
  if (!axisAttr || axisAttr.getNumElements() != 1 ||
      !isa<IntegerType>(axisAttr.getElementType())) {
    node.emitError() << "axis (input 1) must be a constant integer scalar";
    return failure();
  }
  auto type = cast<RankedTensorType>(input.getType());
  Type elementType = type.getElementType();
  if (!isa<FloatType, IntegerType>(elementType) || elementType.isInteger(1)) {
    node.emitError() << "CumSum takes float or integer tensors, got " << type;
    return failure();
  }
  FailureOr<int64_t> axis =
      normalizeAxis(node, (*axisAttr.getValues<APInt>().begin()).getSExtValue(),
                    type.getRank());
  if (failed(axis))
    return failure();
  bool exclusive = node.getInt("exclusive", 0) != 0;
  bool reverse = node.getInt("reverse", 0) != 0;
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  SmallVector<OpFoldResult> sizes = tensor::getMixedSizes(b, loc, input);
  SmallVector<OpFoldResult> sliceSizes(sizes);
  sliceSizes[*axis] = b.getIndexAttr(1);
  Value zero = arith::ConstantOp::create(b, loc, b.getZeroAttr(elementType));
  Value acc = linalg::FillOp::create(
                  b, loc, zero, createEmpty(b, loc, sliceSizes, elementType))
                  .getResult(0);
  Value result = createEmpty(b, loc, sizes, elementType);
  Value c0 = arith::ConstantIndexOp::create(b, loc, 0);
  Value c1 = arith::ConstantIndexOp::create(b, loc, 1);
  Value n = getValueOrCreateConstantIndexOp(b, loc, sizes[*axis]);
  SmallVector<OpFoldResult> strides(type.getRank(), b.getIndexAttr(1));
  auto loop = scf::ForOp::create(
      b, loc, c0, n, c1, ValueRange{acc, result},
      [&](OpBuilder &lb, Location l, Value i, ValueRange args) {
        Value at = reverse ? arith::SubIOp::create(
                                 lb, l, arith::SubIOp::create(lb, l, n, c1), i)
                           : i;
        SmallVector<OpFoldResult> offsets(type.getRank(), lb.getIndexAttr(0));
        offsets[*axis] = at;
        Value slice = tensor::ExtractSliceOp::create(lb, l, input, offsets,
                                                     sliceSizes, strides);
        // Exclusive: the sum before this slice is written first. The sum is
        // updated in place (the loop's running sum stays one buffer).
        Value written = args[1];
        if (exclusive)
          written = tensor::InsertSliceOp::create(lb, l, args[0], written,
                                                  offsets, sliceSizes, strides);
        Value sum = linalg::AddOp::create(lb, l, ValueRange{args[0], slice},
                                          ValueRange{args[0]})
                        .getResult(0);
        if (!exclusive)
          written = tensor::InsertSliceOp::create(lb, l, sum, written, offsets,
                                                  sliceSizes, strides);
        scf::YieldOp::create(lb, l, ValueRange{sum, written});
      });
  return node.setResults(loop.getResult(1));
}

/// Tile: each dimension `d` repeated `repeats[d]` times, as a broadcast to
/// `[..., repeats[d], in[d], ...]` and a collapse of each such pair.
static LogicalResult importTile(Node &node) {
  if (failed(node.checkAttributes({})) || failed(checkSameElementType(node, 1)))
    return failure();
  Value input = node.getInput(0);
  FailureOr<SmallVector<OpFoldResult>> repeats =
      node.getShapeOperand(1, "repeats");
  if (failed(repeats))
    return failure();
  auto inputType = cast<RankedTensorType>(input.getType());
  if ((int64_t)repeats->size() != inputType.getRank()) {
    node.emitError() << "repeats has " << repeats->size()
                     << " elements for an input of rank "
                     << inputType.getRank();
    return failure();
  }
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  SmallVector<OpFoldResult> inputSizes = tensor::getMixedSizes(b, loc, input);
  SmallVector<OpFoldResult> sizes;
  SmallVector<int64_t> added;
  SmallVector<ReassociationIndices> groups;
  for (auto [d, repeat] : llvm::enumerate(*repeats)) {
    std::optional<int64_t> constant = getConstantIntValue(repeat);
    if (constant && *constant < 0) {
      node.emitError() << "repeats has a negative value " << *constant;
      return failure();
    }
    int64_t pos = sizes.size();
    if (constant == 1) {
      groups.push_back({pos});
    } else {
      added.push_back(pos);
      groups.push_back({pos, pos + 1});
      sizes.push_back(repeat);
    }
    sizes.push_back(inputSizes[d]);
  }
  if (added.empty())
    return node.setResults(input);
  Value empty = createEmpty(b, loc, sizes, inputType.getElementType());
  auto broadcast = linalg::BroadcastOp::create(b, loc, input, empty, added);
  Value result =
      tensor::CollapseShapeOp::create(b, loc, broadcast.getResult()[0], groups);
  return node.setResults(result);
}

/// Range with a start or limit known only at run time (e.g. `arange(seq)`
/// on a dynamic shape): `tensor.generate` of `max(0, ceil((limit - start) /
/// delta))` elements `start + i * delta`.
static LogicalResult importDynamicRange(Node &node, DenseElementsAttr start,
                                        DenseElementsAttr limit,
                                        DenseElementsAttr delta) {
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  Type type = elementTypeOf(node.getInput(0));
  int64_t d = (*delta.getValues<APInt>().begin()).getSExtValue();
  if (d == 0) {
    node.emitError() << "delta must not be 0";
    return failure();
  }
  for (unsigned i = 0; i < 2; ++i) {
    auto inputType = cast<RankedTensorType>(node.getInput(i).getType());
    if (inputType.getRank() > 1 || inputType.getNumElements() != 1) {
      node.emitError() << "input " << i << " must be a scalar, got "
                       << inputType;
      return failure();
    }
  }
  auto scalar = [&](unsigned i, DenseElementsAttr constant) -> Value {
    if (constant)
      return arith::ConstantIndexOp::create(
          b, loc, (*constant.getValues<APInt>().begin()).getSExtValue());
    Value input = node.getInput(i);
    auto inputType = cast<RankedTensorType>(input.getType());
    SmallVector<Value> indices(inputType.getRank(),
                               arith::ConstantIndexOp::create(b, loc, 0));
    Value v = tensor::ExtractOp::create(b, loc, input, indices);
    return arith::IndexCastOp::create(b, loc, b.getIndexType(), v);
  };
  Value s = scalar(0, start), l = scalar(1, limit);
  Value span = d > 0 ? arith::SubIOp::create(b, loc, l, s)
                     : arith::SubIOp::create(b, loc, s, l);
  Value count = arith::CeilDivSIOp::create(
      b, loc, span, arith::ConstantIndexOp::create(b, loc, d > 0 ? d : -d));
  count = arith::MaxSIOp::create(b, loc, count,
                                 arith::ConstantIndexOp::create(b, loc, 0));
  auto resultType = RankedTensorType::get({ShapedType::kDynamic}, type);
  auto generate = tensor::GenerateOp::create(
      b, loc, resultType, ValueRange{count},
      [&](OpBuilder &nb, Location nloc, ValueRange indices) {
        Value step = arith::MulIOp::create(
            nb, nloc, indices[0], arith::ConstantIndexOp::create(nb, nloc, d));
        Value v = arith::AddIOp::create(nb, nloc, s, step);
        tensor::YieldOp::create(
            nb, nloc,
            arith::IndexCastOp::create(nb, nloc, type, v).getResult());
      });
  return node.setResults(generate.getResult());
}

static LogicalResult importRange(Node &node) {
  if (failed(node.checkAttributes({})) || failed(checkSameElementType(node, 3)))
    return failure();
  OpBuilder &b = node.getBuilder();
  DenseElementsAttr start = node.getConstantInput(0);
  DenseElementsAttr limit = node.getConstantInput(1);
  DenseElementsAttr delta = node.getConstantInput(2);
  Type type = elementTypeOf(node.getInput(0));
  if (isa<IntegerType>(type) && delta && (!start || !limit))
    return importDynamicRange(node, start, limit, delta);
  if (!start || !limit || !delta || !isa<IntegerType>(type)) {
    node.emitError() << "only integer ranges with a constant delta are "
                        "supported";
    return failure();
  }
  int64_t s = (*start.getValues<APInt>().begin()).getSExtValue();
  int64_t l = (*limit.getValues<APInt>().begin()).getSExtValue();
  int64_t d = (*delta.getValues<APInt>().begin()).getSExtValue();
  if (d == 0) {
    node.emitError() << "delta must not be 0";
    return failure();
  }
  SmallVector<APInt> values;
  for (int64_t v = s; d > 0 ? v < l : v > l; v += d)
    values.push_back(APInt(type.getIntOrFloatBitWidth(), v, true));
  auto attr = DenseElementsAttr::get(
      RankedTensorType::get({(int64_t)values.size()}, type), values);
  node.setConstantResult(0, attr);
  return node.setResults(
      Value(arith::ConstantOp::create(b, node.getLoc(), attr)));
}

//===----------------------------------------------------------------------===//
// The table
//===----------------------------------------------------------------------===//

ArrayRef<OpHandlerInfo> onnx_import::getStandardOpHandlers() {
  static const OpHandlerInfo table[] = {
      {"", "Abs", 6, kMaxOpset, importUnary<UnaryKind::Abs>},
      {"", "Add", 7, kMaxOpset, importBinary<BinaryKind::Add>},
      {"", "ArgMax", 11, kMaxOpset, importArgMax},
      {"", "ArgMin", 11, kMaxOpset, importArgMin},
      {"", "Cast", 6, kMaxOpset, importCast},
      {"", "Ceil", 6, kMaxOpset, importUnary<UnaryKind::Ceil>},
      {"", "Concat", 4, kMaxOpset, importConcat},
      {"", "Constant", 9, kMaxOpset, importConstant},
      {"", "ConstantOfShape", 9, kMaxOpset, importConstantOfShape},
      {"", "Cos", 7, kMaxOpset, importUnary<UnaryKind::Cos>},
      {"", "Div", 7, kMaxOpset, importBinary<BinaryKind::Div>},
      {"", "Einsum", 12, kMaxOpset, importEinsum},
      {"", "Equal", 7, kMaxOpset, importCompare<CompareKind::Equal>},
      {"", "Erf", 9, kMaxOpset, importUnary<UnaryKind::Erf>},
      {"", "Exp", 6, kMaxOpset, importUnary<UnaryKind::Exp>},
      {"", "Expand", 8, kMaxOpset, importExpand},
      {"", "Tile", 6, kMaxOpset, importTile},
      {"", "CumSum", 11, kMaxOpset, importCumSum},
      {"", "Flatten", 1, kMaxOpset, importFlatten},
      {"", "Floor", 6, kMaxOpset, importUnary<UnaryKind::Floor>},
      {"", "Gather", 1, kMaxOpset, importGather},
      {"", "GatherElements", 11, kMaxOpset, importGatherElements},
      {"", "GatherND", 11, kMaxOpset, importGatherND},
      {"", "Gelu", 20, kMaxOpset, importGelu},
      {"", "Gemm", 7, kMaxOpset, importGemm},
      {"", "Greater", 7, kMaxOpset, importCompare<CompareKind::Greater>},
      {"", "GreaterOrEqual", 12, kMaxOpset,
       importCompare<CompareKind::GreaterOrEqual>},
      {"", "Identity", 1, kMaxOpset, importIdentity},
      {"", "LayerNormalization", 17, kMaxOpset, importLayerNormalization},
      {"", "LeakyRelu", 6, kMaxOpset, importLeakyRelu},
      {"", "Less", 7, kMaxOpset, importCompare<CompareKind::Less>},
      {"", "LessOrEqual", 12, kMaxOpset,
       importCompare<CompareKind::LessOrEqual>},
      {"", "Log", 6, kMaxOpset, importUnary<UnaryKind::Log>},
      {"", "LogSoftmax", 1, kMaxOpset, importSoftmax<true>},
      {"", "MatMul", 1, kMaxOpset, importMatMul},
      {"", "Max", 8, kMaxOpset, importVariadic<BinaryKind::Max>},
      {"", "Min", 8, kMaxOpset, importVariadic<BinaryKind::Min>},
      {"", "Mul", 7, kMaxOpset, importBinary<BinaryKind::Mul>},
      {"", "Neg", 6, kMaxOpset, importUnary<UnaryKind::Neg>},
      {"", "NonZero", 9, kMaxOpset, importNonZero},
      {"", "Not", 1, kMaxOpset, importUnary<UnaryKind::Not>},
      {"", "OneHot", 9, kMaxOpset, importOneHot},
      {"", "Pow", 7, kMaxOpset, importBinary<BinaryKind::Pow>},
      {"", "Range", 11, kMaxOpset, importRange},
      {"", "Reciprocal", 6, kMaxOpset, importUnary<UnaryKind::Reciprocal>},
      {"", "ReduceMax", 1, kMaxOpset, importReduce<ReduceKind::Max>},
      {"", "ReduceMean", 1, kMaxOpset, importReduce<ReduceKind::Mean>},
      {"", "ReduceMin", 1, kMaxOpset, importReduce<ReduceKind::Min>},
      {"", "ReduceSum", 1, kMaxOpset, importReduce<ReduceKind::Sum>},
      {"", "Relu", 6, kMaxOpset, importUnary<UnaryKind::Relu>},
      {"", "Reshape", 5, kMaxOpset, importReshape},
      {"", "ScatterElements", 11, kMaxOpset, importScatterElements},
      {"", "ScatterND", 11, kMaxOpset, importScatterND},
      {"", "Shape", 1, kMaxOpset, importShape},
      {"", "Sigmoid", 6, kMaxOpset, importUnary<UnaryKind::Sigmoid>},
      {"", "SimplifiedLayerNormalization", 1, kMaxOpset,
       importSimplifiedLayerNormalization},
      {"", "Sin", 7, kMaxOpset, importUnary<UnaryKind::Sin>},
      {"", "Slice", 10, kMaxOpset, importSlice},
      {"", "Softmax", 1, kMaxOpset, importSoftmax<false>},
      {"", "Softplus", 1, kMaxOpset, importUnary<UnaryKind::Softplus>},
      {"", "Split", 2, kMaxOpset, importSplit},
      {"", "Sqrt", 6, kMaxOpset, importUnary<UnaryKind::Sqrt>},
      {"", "Squeeze", 1, kMaxOpset, importSqueeze},
      {"", "Sub", 7, kMaxOpset, importBinary<BinaryKind::Sub>},
      {"", "Sum", 8, kMaxOpset, importVariadic<BinaryKind::Add>},
      {"", "Tanh", 6, kMaxOpset, importUnary<UnaryKind::Tanh>},
      {"", "TopK", 10, kMaxOpset, importTopK},
      {"", "Transpose", 1, kMaxOpset, importTranspose},
      {"", "Trilu", 14, kMaxOpset, importTrilu},
      {"", "Unsqueeze", 1, kMaxOpset, importUnsqueeze},
      {"", "Where", 9, kMaxOpset, importWhere},
      {"", "Clip", 6, kMaxOpset, importClip},
  };
  return table;
}

ArrayRef<OpHandlerInfo> onnx_import::getMicrosoftOpHandlers() {
  static const OpHandlerInfo table[] = {
      {"com.microsoft", "Gelu", 1, 1, importGelu},
      {"com.microsoft", "MoE", 1, 1, importMicrosoftMoE},
      {"com.microsoft", "QMoE", 1, 1, importMicrosoftQMoE},
  };
  return table;
}
