//===- MoERaising.cpp - com.microsoft.MoE to moe.layer --------------------===//
//
// Part of the moe-mlir project.
//
//===----------------------------------------------------------------------===//
//
// Raises ONNX Runtime's `com.microsoft.MoE` to `moe.layer`. The op takes the
// router logits as an input; the importer recovers the router weight from
// the `MatMul(x, Wg)` that computes them, and rearranges the expert weights
// (initializers) into the dialect's layout at import time:
//
//   fc1 [E, 2F, H] (swiglu_fusion = 1, rows interleaved gate/up)
//       -> gate[e, h, f] = fc1[e, 2f, h], up[e, h, f] = fc1[e, 2f + 1, h]
//   fc1 [E, F, H] (plain FFN)  -> up[e, h, f] = fc1[e, f, h]
//   fc2 [E, H, F]              -> down[e, f, h] = fc2[e, h, f]
//
// See docs/ONNXImport.md and shared notes on the op's semantics.
//
//===----------------------------------------------------------------------===//

#include "Importer.h"

#include "moe/Dialect/MoE/IR/MoEOps.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"

#include <cmath>
#include <cstring>

using namespace moe;
using namespace moe::onnx_import;
using namespace mlir;

/// Builds a tensor of `type` whose element at linear index i is `src`'s
/// element at linear index `sourceIndex(i)`.
static DenseElementsAttr
gatherElements(DenseElementsAttr src, RankedTensorType type,
               function_ref<int64_t(int64_t)> sourceIndex) {
  if (src.isSplat())
    return src.resizeSplat(type);
  size_t size = type.getElementType().getIntOrFloatBitWidth() / 8;
  ArrayRef<char> raw = src.getRawData();
  int64_t count = type.getNumElements();
  std::vector<char> out(count * size);
  for (int64_t i = 0; i < count; ++i)
    std::memcpy(out.data() + i * size, raw.data() + sourceIndex(i) * size,
                size);
  return DenseElementsAttr::getFromRawBuffer(type, out);
}

namespace {
/// The expert weights in moe.layer's layout.
struct ExpertWeights {
  DenseElementsAttr gate, up, down, gateBias, upBias, downBias;
};
} // namespace

/// `value` `[B, S, X]` collapsed to `[B * S, X]`; a 2-D value as it is.
static Value collapseRows(OpBuilder &b, Location loc, Value value) {
  if (cast<RankedTensorType>(value.getType()).getRank() == 2)
    return value;
  return tensor::CollapseShapeOp::create(
      b, loc, value, SmallVector<ReassociationIndices>{{0, 1}, {2}});
}

/// The routing plan of the ops: `moe.route` of `logits [T, E]` under
/// `routing`, `moe.dispatch`, the experts that `buildExperts(token indices,
/// expert offsets, destination rows)` builds on `tokens [T, H]`, and
/// `moe.combine`; returns the combined `[T, H]`.
static Value
buildRoutingPlan(OpBuilder &b, Location loc, Value tokens, Value logits,
                 RoutingAttr routing, int64_t numExperts,
                 function_ref<Value(Value, Value, Value)> buildExperts) {
  auto tokensType = cast<RankedTensorType>(tokens.getType());
  Type elementType = tokensType.getElementType();
  int64_t numTokens = tokensType.getDimSize(0);
  int64_t hidden = tokensType.getDimSize(1);
  int64_t k = routing.getK();
  Type i32 = b.getI32Type();
  auto pairType = [&](Type elt) {
    return RankedTensorType::get({numTokens, k}, elt);
  };
  auto route =
      RouteOp::create(b, loc, pairType(i32), pairType(elementType), logits,
                      /*selection_bias=*/Value(),
                      /*token_groups=*/Value(), /*residual=*/Value(), routing);
  int64_t numRows =
      ShapedType::isDynamic(numTokens) ? ShapedType::kDynamic : numTokens * k;
  auto dispatch = DispatchOp::create(
      b, loc, RankedTensorType::get({numRows}, i32),
      RankedTensorType::get({numExperts + 1}, i32), pairType(i32),
      route.getExpertIds(), b.getI64IntegerAttr(numExperts),
      b.getI64IntegerAttr(1), b.getF64FloatAttr(0.0));
  SmallVector<Value> dynSizes;
  if (ShapedType::isDynamic(numTokens))
    dynSizes.push_back(
        arith::MulIOp::create(b, loc, tensor::DimOp::create(b, loc, tokens, 0),
                              arith::ConstantIndexOp::create(b, loc, k)));
  Value dest = tensor::EmptyOp::create(
      b, loc, ArrayRef<int64_t>{numRows, hidden}, elementType, dynSizes);
  Value rows = buildExperts(dispatch.getTokenIndices(),
                            dispatch.getExpertOffsets(), dest);
  return CombineOp::create(b, loc, tokensType, rows, dispatch.getPositions(),
                           route.getWeights(), Value());
}

/// A constant input that must be an initializer of shape `rank`.
static FailureOr<DenseElementsAttr> getWeight(Node &node, unsigned i,
                                              StringRef what, int64_t rank,
                                              Type elementType) {
  DenseElementsAttr attr = node.getConstantInput(i);
  if (!attr) {
    node.emitError() << what << " (input " << i
                     << ") must be an initializer; computed expert weights "
                        "are not supported";
    return failure();
  }
  auto type = cast<RankedTensorType>(attr.getType());
  if (type.getRank() != rank || type.getElementType() != elementType) {
    node.emitError() << what << " (input " << i << ") has type " << type
                     << ", expected a rank-" << rank << " tensor of "
                     << elementType;
    return failure();
  }
  return attr;
}

/// The optional fc1 bias `[E, rows]` (input `fc1Index`) and fc2 bias `[E, H]`
/// (input `fc2Index`) of `com.microsoft.MoE`/`QMoE`, split into gate and up
/// biases `[E, F]` for gated experts (fc1 rows interleaved gate/up).
static LogicalResult
importBiases(Node &node, unsigned fc1Index, unsigned fc2Index,
             int64_t numExperts, int64_t rows, int64_t ffn, int64_t hidden,
             bool gated, Type elementType, DenseElementsAttr &gateBias,
             DenseElementsAttr &upBias, DenseElementsAttr &downBias) {
  if (node.hasInput(fc1Index)) {
    FailureOr<DenseElementsAttr> fc1Bias =
        getWeight(node, fc1Index, "fc1_experts_bias", 2, elementType);
    if (failed(fc1Bias))
      return failure();
    ArrayRef<int64_t> shape = cast<ShapedType>(fc1Bias->getType()).getShape();
    if (shape[0] != numExperts || shape[1] != rows) {
      node.emitError() << "fc1_experts_bias has shape [" << shape
                       << "], expected [" << numExperts << ", " << rows << "]";
      return failure();
    }
    auto biasType = RankedTensorType::get({numExperts, ffn}, elementType);
    auto biasRow = [&](int64_t i, int64_t parity) {
      int64_t f = i % ffn, e = i / ffn;
      return e * rows + (gated ? 2 * f + parity : f);
    };
    if (gated)
      gateBias = gatherElements(*fc1Bias, biasType,
                                [&](int64_t i) { return biasRow(i, 0); });
    upBias = gatherElements(*fc1Bias, biasType, [&](int64_t i) {
      return biasRow(i, gated ? 1 : 0);
    });
  }
  if (node.hasInput(fc2Index)) {
    FailureOr<DenseElementsAttr> fc2Bias =
        getWeight(node, fc2Index, "fc2_experts_bias", 2, elementType);
    if (failed(fc2Bias))
      return failure();
    ArrayRef<int64_t> shape = cast<ShapedType>(fc2Bias->getType()).getShape();
    if (shape[0] != numExperts || shape[1] != hidden) {
      node.emitError() << "fc2_experts_bias has shape [" << shape
                       << "], expected [" << numExperts << ", " << hidden
                       << "]";
      return failure();
    }
    downBias = *fc2Bias;
  }
  return success();
}

/// The expert body of `com.microsoft.MoE`/`QMoE` from `activation_type`,
/// `swiglu_fusion`, `swiglu_limit`, `activation_alpha` and
/// `activation_beta`; null (after an error) when not supported.
static ExpertAttr parseExpert(Node &node) {
  std::string activation = node.getString("activation_type", "relu");
  int64_t fusion = node.getInt("swiglu_fusion", 0);
  std::optional<double> limit = node.getFloat("swiglu_limit");
  double alpha = node.getFloat("activation_alpha", 1.0);
  double beta = node.getFloat("activation_beta", 0.0);
  ExpertKind kind;
  Activation act;
  if (activation == "swiglu") {
    if (fusion != 1) {
      node.emitError() << "swiglu_fusion = " << fusion
                       << " is not supported (only 1: fused, interleaved)";
      return {};
    }
    kind = ExpertKind::Gated;
    act = Activation::Silu;
    if (limit && !(*limit > 0.0 && std::isfinite(*limit))) {
      node.emitError() << "swiglu_limit = " << *limit
                       << " is not supported (must be positive and finite)";
      return {};
    }
  } else {
    kind = ExpertKind::Ffn;
    if (activation == "relu") {
      act = Activation::Relu;
    } else if (activation == "gelu") {
      act = Activation::Gelu;
    } else if (activation == "silu") {
      act = Activation::Silu;
    } else if (activation == "identity") {
      act = Activation::Identity;
    } else {
      node.emitError() << "activation_type = '" << activation
                       << "' is not supported";
      return {};
    }
    if (fusion != 0) {
      node.emitError() << "swiglu_fusion = " << fusion
                       << " needs activation_type = 'swiglu'";
      return {};
    }
    if (limit || alpha != 1.0 || beta != 0.0) {
      node.emitError() << "swiglu_limit/activation_alpha/activation_beta "
                          "apply to activation_type = 'swiglu' only";
      return {};
    }
  }
  if (!(alpha > 0.0)) {
    node.emitError() << "activation_alpha = " << alpha
                     << " is not supported (must be positive)";
    return {};
  }

  return ExpertAttr::getChecked(
      [&] { return node.emitError(); }, node.getContext(), kind, act,
      APFloat(limit.value_or(0.0)), APFloat(alpha), APFloat(beta));
}

LogicalResult onnx_import::importMicrosoftMoE(Node &node) {
  if (failed(node.checkAttributes(
          {"k", "activation_type", "normalize_routing_weights",
           "use_sparse_mixer", "swiglu_fusion", "swiglu_limit",
           "activation_alpha", "activation_beta"})))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = node.getContext();

  if (node.getInt("use_sparse_mixer", 0) != 0) {
    node.emitError() << "use_sparse_mixer = "
                     << node.getInt("use_sparse_mixer", 0)
                     << " is not supported";
    return failure();
  }
  if (node.hasInput(6) || node.hasInput(7)) {
    node.emitError() << "fc3_experts_weights/fc3_experts_bias (inputs 6 and "
                        "7) are not supported";
    return failure();
  }

  ExpertAttr expert = parseExpert(node);
  if (!expert)
    return failure();
  ExpertKind kind = expert.getKind();

  // Hidden states: [T, H] or [B, S, H].
  Value input = node.getInput(0);
  if (!input || !node.hasInput(1) || !node.hasInput(2) || !node.hasInput(4)) {
    node.emitError() << "inputs 0 (input), 1 (router_probs), 2 "
                        "(fc1_experts_weights) and 4 (fc2_experts_weights) "
                        "are required";
    return failure();
  }
  auto inputType = cast<RankedTensorType>(input.getType());
  Type elementType = inputType.getElementType();
  if (!isa<FloatType>(elementType) ||
      (inputType.getRank() != 2 && inputType.getRank() != 3) ||
      inputType.isDynamicDim(inputType.getRank() - 1)) {
    node.emitError() << "input has type " << inputType
                     << "; expected [T, H] or [B, S, H] floats with a static H";
    return failure();
  }
  int64_t hidden = inputType.getDimSize(inputType.getRank() - 1);

  // The router: where router_probs is MatMul(input, Wg) with a constant Wg
  // (plus a constant bias [E]), the op becomes moe.layer with Wg as its
  // router (and the bias as its router_bias). Any other router (logits of a
  // normalized copy of the input, a Wg computed at run time, ...) is routed
  // as given: moe.route of router_probs, moe.dispatch, moe.experts and
  // moe.combine.
  auto isStandard = [](const onnx::NodeProto *n, StringRef opType) {
    return n && n->op_type() == opType &&
           (n->domain().empty() || n->domain() == "ai.onnx") &&
           n->input_size() == 2;
  };
  GraphImporter &importer = node.getImporter();
  const onnx::NodeProto *router = importer.getProducer(node.getInputName(1));
  // An optional constant bias [E] of the logits: Add(MatMul(input, Wg), b).
  DenseElementsAttr routerBias;
  if (isStandard(router, "Add")) {
    for (int i = 0; i < 2; ++i) {
      DenseElementsAttr bias = importer.getConstant(router->input(i));
      const onnx::NodeProto *matmul =
          importer.getProducer(router->input(1 - i));
      if (bias && bias.getType().getRank() == 1 &&
          isStandard(matmul, "MatMul")) {
        routerBias = bias;
        router = matmul;
        break;
      }
    }
  }
  DenseElementsAttr routerWeight;
  if (isStandard(router, "MatMul") && router->input(0) == node.getInputName(0))
    routerWeight = importer.getConstant(router->input(1));
  if (!routerWeight)
    routerBias = {};
  Value logits = node.getInput(1);
  auto logitsType = cast<RankedTensorType>(logits.getType());
  int64_t numExperts = logitsType.getDimSize(logitsType.getRank() - 1);
  if (routerWeight) {
    auto routerType = cast<RankedTensorType>(routerWeight.getType());
    if (routerType.getRank() != 2 || routerType.getDimSize(0) != hidden ||
        routerType.getElementType() != elementType) {
      node.emitError() << "router weight has type " << routerType
                       << ", expected [" << hidden << ", E] of " << elementType;
      return failure();
    }
    numExperts = routerType.getDimSize(1);
    // A bias of another shape or type: the logits are routed as given.
    if (routerBias && (routerBias.getType().getDimSize(0) != numExperts ||
                       routerBias.getElementType() != elementType)) {
      routerBias = {};
      routerWeight = {};
    }
  }
  // The token count: the product of the leading dimensions, where static.
  auto tokenCount = [](RankedTensorType type) {
    int64_t count = 1;
    for (int64_t d : type.getShape().drop_back())
      count = ShapedType::isDynamic(d) || ShapedType::isDynamic(count)
                  ? ShapedType::kDynamic
                  : count * d;
    return count;
  };
  int64_t logitsTokens = tokenCount(logitsType);
  int64_t inputTokens = tokenCount(inputType);
  if ((logitsType.getRank() != 2 &&
       logitsType.getRank() != inputType.getRank()) ||
      ShapedType::isDynamic(numExperts) ||
      logitsType.getElementType() != elementType ||
      (!ShapedType::isDynamic(logitsTokens) &&
       !ShapedType::isDynamic(inputTokens) && logitsTokens != inputTokens)) {
    node.emitError() << "router_probs has type " << logitsType
                     << "; expected [T, E] of " << elementType
                     << " with a static E";
    return failure();
  }

  int64_t k = node.getInt("k", 0);
  if (k < 1 || k > numExperts) {
    node.emitError() << "k = " << k << " must be in [1, " << numExperts << "]";
    return failure();
  }
  bool renormalize = node.getInt("normalize_routing_weights", 0) != 0;

  // Expert weights.
  FailureOr<DenseElementsAttr> fc1 =
      getWeight(node, 2, "fc1_experts_weights", 3, elementType);
  if (failed(fc1))
    return failure();
  FailureOr<DenseElementsAttr> fc2 =
      getWeight(node, 4, "fc2_experts_weights", 3, elementType);
  if (failed(fc2))
    return failure();
  ArrayRef<int64_t> fc1Shape = cast<ShapedType>(fc1->getType()).getShape();
  ArrayRef<int64_t> fc2Shape = cast<ShapedType>(fc2->getType()).getShape();
  int64_t ffn = fc2Shape[2];
  int64_t rows = kind == ExpertKind::Gated ? 2 * ffn : ffn;
  if (fc1Shape[0] != numExperts || fc1Shape[1] != rows ||
      fc1Shape[2] != hidden) {
    node.emitError() << "fc1_experts_weights has shape [" << fc1Shape
                     << "], expected [" << numExperts << ", " << rows << ", "
                     << hidden
                     << "] (E, fusion * F, H; the legacy [E, H, fusion * F] "
                        "layout is not supported)";
    return failure();
  }
  if (fc2Shape[0] != numExperts || fc2Shape[1] != hidden) {
    node.emitError() << "fc2_experts_weights has shape [" << fc2Shape
                     << "], expected [" << numExperts << ", " << hidden
                     << ", F]";
    return failure();
  }

  ExpertWeights weights;
  auto expertType =
      RankedTensorType::get({numExperts, hidden, ffn}, elementType);
  auto fc1Row = [&](int64_t i, int64_t parity) {
    int64_t f = i % ffn, h = (i / ffn) % hidden, e = i / (ffn * hidden);
    int64_t row = kind == ExpertKind::Gated ? 2 * f + parity : f;
    return (e * rows + row) * hidden + h;
  };
  if (kind == ExpertKind::Gated)
    weights.gate = gatherElements(*fc1, expertType,
                                  [&](int64_t i) { return fc1Row(i, 0); });
  weights.up = gatherElements(*fc1, expertType, [&](int64_t i) {
    return fc1Row(i, kind == ExpertKind::Gated ? 1 : 0);
  });
  weights.down = gatherElements(
      *fc2, RankedTensorType::get({numExperts, ffn, hidden}, elementType),
      [&](int64_t i) {
        int64_t h = i % hidden, f = (i / hidden) % ffn, e = i / (hidden * ffn);
        return (e * hidden + h) * ffn + f;
      });
  if (failed(importBiases(node, 3, 5, numExperts, rows, ffn, hidden,
                          kind == ExpertKind::Gated, elementType,
                          weights.gateBias, weights.upBias, weights.downBias)))
    return failure();

  auto constant = [&](DenseElementsAttr attr) -> Value {
    if (!attr)
      return {};
    return arith::ConstantOp::create(b, loc, attr);
  };
  Value tokens = collapseRows(b, loc, input);

  auto routing = RoutingAttr::get(
      ctx, k, ScoringFunc::Softmax, renormalize, APFloat(1.0), APFloat(1.0),
      /*n_group=*/0, /*topk_group=*/0, APFloat(0.0), APFloat(0.0));
  Value result;
  if (routerWeight) {
    result = LayerOp::create(
        b, loc, tokens.getType(), tokens, constant(routerWeight),
        constant(routerBias), /*selection_bias=*/Value(),
        constant(weights.gate), constant(weights.up), constant(weights.down),
        constant(weights.gateBias), constant(weights.upBias),
        constant(weights.downBias),
        /*shared_gate=*/Value(), /*shared_up=*/Value(),
        /*shared_down=*/Value(),
        /*shared_scale=*/Value(), routing, expert);
  } else {
    result = buildRoutingPlan(
        b, loc, tokens, collapseRows(b, loc, logits), routing, numExperts,
        [&](Value tokenIndices, Value offsets, Value dest) -> Value {
          return ExpertsOp::create(
              b, loc, dest.getType(), tokens, tokenIndices, offsets, dest,
              constant(weights.gate), constant(weights.up),
              constant(weights.down), constant(weights.gateBias),
              constant(weights.upBias), constant(weights.downBias), expert,
              b.getI64IntegerAttr(0), /*placement=*/PlacementAttr());
        });
  }
  if (inputType.getRank() == 3)
    result = buildExpandShape(b, loc, inputType, result,
                              SmallVector<ReassociationIndices>{{0, 1}, {2}},
                              tensor::getMixedSizes(b, loc, input));
  return node.setResults(result);
}

//===----------------------------------------------------------------------===//
// com.microsoft.QMoE
//===----------------------------------------------------------------------===//

/// The bytes of a `ui8` initializer as `i8` (the dialect's byte type).
static DenseElementsAttr asBytes(DenseElementsAttr attr) {
  auto type = cast<RankedTensorType>(attr.getType());
  return DenseElementsAttr::getFromRawBuffer(
      RankedTensorType::get(type.getShape(),
                            IntegerType::get(attr.getContext(), 8)),
      attr.getRawData());
}

/// The rows `row(0 .. n-1)` of each expert of a `[E, R, C]` tensor, as
/// `[E, n, C]`.
static DenseElementsAttr selectRows(DenseElementsAttr src, int64_t n,
                                    function_ref<int64_t(int64_t)> row) {
  auto type = cast<RankedTensorType>(src.getType());
  int64_t rows = type.getDimSize(1), cols = type.getDimSize(2);
  auto result = RankedTensorType::get({type.getDimSize(0), n, cols},
                                      type.getElementType());
  return gatherElements(src, result, [&](int64_t i) {
    int64_t c = i % cols, r = (i / cols) % n, e = i / (cols * n);
    return (e * rows + row(r)) * cols + c;
  });
}

LogicalResult onnx_import::importMicrosoftQMoE(Node &node) {
  if (failed(node.checkAttributes(
          {"k", "activation_type", "normalize_routing_weights",
           "use_sparse_mixer", "swiglu_fusion", "swiglu_limit",
           "activation_alpha", "activation_beta", "expert_weight_bits",
           "block_size", "quant_type", "weights_prepacked"})))
    return failure();
  OpBuilder &b = node.getBuilder();
  Location loc = node.getLoc();
  MLIRContext *ctx = node.getContext();

  if (node.getInt("use_sparse_mixer", 0) != 0) {
    node.emitError() << "use_sparse_mixer = "
                     << node.getInt("use_sparse_mixer", 0)
                     << " is not supported";
    return failure();
  }
  std::string quantType = node.getString("quant_type", "int");
  if (quantType != "int") {
    node.emitError() << "quant_type = '" << quantType
                     << "' is not supported (only 'int')";
    return failure();
  }
  if (node.getInt("weights_prepacked", 0) == 1) {
    node.emitError() << "weights_prepacked = 1 is not supported";
    return failure();
  }
  for (unsigned i = 8; i < node.getNumInputs(); ++i)
    if (node.hasInput(i) && i != 11 && i != 12) {
      node.emitError() << "input " << i << " ('" << node.getInputName(i)
                       << "') is not supported: only inputs 0-7 and the "
                          "fc1/fc2 zero points 11-12 (no fc3, router_weights "
                          "or fp8/fp4 scales)";
      return failure();
    }
  int64_t bits = node.getInt("expert_weight_bits", 4);
  if (bits != 4 && bits != 8) {
    node.emitError() << "expert_weight_bits = " << bits
                     << " is not supported (4 or 8)";
    return failure();
  }
  int64_t blockSize = node.getInt("block_size", 0);
  if (blockSize < 0) {
    node.emitError() << "block_size = " << blockSize << " must not be negative";
    return failure();
  }
  ExpertAttr expert = parseExpert(node);
  if (!expert)
    return failure();
  bool gated = expert.isGated();

  Value input = node.getInput(0);
  if (!input || !node.hasInput(1) || !node.hasInput(2) || !node.hasInput(3) ||
      !node.hasInput(5) || !node.hasInput(6)) {
    node.emitError() << "inputs 0 (input), 1 (router_probs), 2 "
                        "(fc1_experts_weights), 3 (fc1_scales), 5 "
                        "(fc2_experts_weights) and 6 (fc2_scales) are required";
    return failure();
  }
  auto inputType = cast<RankedTensorType>(input.getType());
  Type elementType = inputType.getElementType();
  if (!elementType.isF32() ||
      (inputType.getRank() != 2 && inputType.getRank() != 3) ||
      inputType.isDynamicDim(inputType.getRank() - 1)) {
    node.emitError() << "input has type " << inputType
                     << "; expected [T, H] or [B, S, H] f32 with a static H";
    return failure();
  }
  int64_t hidden = inputType.getDimSize(inputType.getRank() - 1);
  Value logits = node.getInput(1);
  auto logitsType = cast<RankedTensorType>(logits.getType());

  // Weights: bytes [E, N, K * bits / 8] and scales [E, N] or [E, N, K / B].
  auto ui8 = IntegerType::get(ctx, 8, IntegerType::Unsigned);
  FailureOr<DenseElementsAttr> fc1 =
      getWeight(node, 2, "fc1_experts_weights", 3, ui8);
  if (failed(fc1))
    return failure();
  FailureOr<DenseElementsAttr> fc2 =
      getWeight(node, 5, "fc2_experts_weights", 3, ui8);
  if (failed(fc2))
    return failure();
  ArrayRef<int64_t> fc1Shape = cast<ShapedType>(fc1->getType()).getShape();
  ArrayRef<int64_t> fc2Shape = cast<ShapedType>(fc2->getType()).getShape();
  int64_t numExperts = fc1Shape[0];
  int64_t ffn = fc2Shape[2] * 8 / bits;
  int64_t rows = gated ? 2 * ffn : ffn;
  if (fc1Shape[1] != rows || fc1Shape[2] * 8 != hidden * bits) {
    node.emitError() << "fc1_experts_weights has shape [" << fc1Shape
                     << "], expected [" << numExperts << ", " << rows << ", "
                     << hidden * bits / 8 << "] (E, fusion * F, H * bits / 8)";
    return failure();
  }
  if (fc2Shape[0] != numExperts || fc2Shape[1] != hidden) {
    node.emitError() << "fc2_experts_weights has shape [" << fc2Shape
                     << "], expected [" << numExperts << ", " << hidden
                     << ", F * bits / 8]";
    return failure();
  }
  if ((logitsType.getRank() != 2 &&
       logitsType.getRank() != inputType.getRank()) ||
      logitsType.getDimSize(logitsType.getRank() - 1) != numExperts) {
    node.emitError() << "router_probs has type " << logitsType
                     << "; expected [T, " << numExperts << "]";
    return failure();
  }
  int64_t k = node.getInt("k", 0);
  if (k < 1 || k > numExperts) {
    node.emitError() << "k = " << k << " must be in [1, " << numExperts << "]";
    return failure();
  }
  auto getScales = [&](unsigned i, StringRef what, int64_t n,
                       int64_t reduction) -> FailureOr<DenseElementsAttr> {
    if (blockSize && reduction % blockSize != 0) {
      node.emitError() << "block_size = " << blockSize << " does not divide "
                       << reduction;
      return failure();
    }
    FailureOr<DenseElementsAttr> scales =
        getWeight(node, i, what, blockSize ? 3 : 2, elementType);
    if (failed(scales))
      return failure();
    ArrayRef<int64_t> shape = cast<ShapedType>(scales->getType()).getShape();
    int64_t blocks = blockSize ? reduction / blockSize : 1;
    if (shape[0] != numExperts || shape[1] != n ||
        (blockSize && shape[2] != blocks)) {
      InFlightDiagnostic diag = node.emitError();
      diag << what << " has shape [" << shape << "], expected [" << numExperts
           << ", " << n;
      if (blockSize)
        diag << ", " << blocks;
      diag << "]";
      return failure();
    }
    return scales->reshape(
        RankedTensorType::get({numExperts, n, blocks}, elementType));
  };
  FailureOr<DenseElementsAttr> fc1Scales =
      getScales(3, "fc1_scales", rows, hidden);
  if (failed(fc1Scales))
    return failure();
  FailureOr<DenseElementsAttr> fc2Scales =
      getScales(6, "fc2_scales", hidden, ffn);
  if (failed(fc2Scales))
    return failure();
  // Zero points (optional, uint8), one per scale, in ONNX Runtime's layout:
  // at 8 bits [E, N] (rows) or [E, N, blocks]; at 4 bits two per byte, low
  // nibble first, along N for rows ([E, ceil(N / 2)]) and along the blocks
  // otherwise ([E, N, ceil(blocks / 2)]). Unpacked to [E, N, blocks] codes
  // in the scales' type.
  auto getZeroPoints = [&](unsigned i, StringRef what, int64_t n,
                           int64_t reduction) -> FailureOr<DenseElementsAttr> {
    if (!node.hasInput(i))
      return DenseElementsAttr();
    FailureOr<DenseElementsAttr> packed =
        getWeight(node, i, what, blockSize ? 3 : 2, ui8);
    if (failed(packed))
      return failure();
    int64_t blocks = blockSize ? reduction / blockSize : 1;
    SmallVector<int64_t> expected = {numExperts, n};
    if (blockSize)
      expected.push_back(bits == 4 ? (blocks + 1) / 2 : blocks);
    else if (bits == 4)
      expected[1] = (n + 1) / 2;
    ArrayRef<int64_t> shape = cast<ShapedType>(packed->getType()).getShape();
    if (shape != ArrayRef<int64_t>(expected)) {
      node.emitError() << what << " has shape [" << shape << "], expected ["
                       << ArrayRef<int64_t>(expected) << "]";
      return failure();
    }
    auto codes = packed->getValues<uint8_t>();
    SmallVector<float> values;
    values.reserve(numExperts * n * blocks);
    for (int64_t e = 0; e < numExperts; ++e)
      for (int64_t r = 0; r < n; ++r)
        for (int64_t blk = 0; blk < blocks; ++blk) {
          if (bits == 8) {
            values.push_back(codes[(e * n + r) * blocks + blk]);
            continue;
          }
          // The packed index and the nibble within its byte.
          int64_t index = blockSize ? (e * n + r) * expected[2] + blk / 2
                                    : e * expected[1] + r / 2;
          int64_t nibble = blockSize ? blk % 2 : r % 2;
          values.push_back((codes[index] >> (4 * nibble)) & 0xF);
        }
    return DenseElementsAttr::get(
        RankedTensorType::get({numExperts, n, blocks}, elementType),
        ArrayRef<float>(values));
  };
  FailureOr<DenseElementsAttr> fc1ZeroPoints =
      getZeroPoints(11, "fc1_zero_points", rows, hidden);
  if (failed(fc1ZeroPoints))
    return failure();
  FailureOr<DenseElementsAttr> fc2ZeroPoints =
      getZeroPoints(12, "fc2_zero_points", hidden, ffn);
  if (failed(fc2ZeroPoints))
    return failure();

  // De-interleave gate (even rows) and up (odd rows) for SwiGLU.
  DenseElementsAttr fc1Bytes = asBytes(*fc1), fc2Bytes = asBytes(*fc2);
  DenseElementsAttr gate, gateScales, up = fc1Bytes, upScales = *fc1Scales;
  DenseElementsAttr gateZeroPoints, upZeroPoints = *fc1ZeroPoints;
  if (gated) {
    auto even = [](int64_t r) { return 2 * r; };
    auto odd = [](int64_t r) { return 2 * r + 1; };
    gate = selectRows(fc1Bytes, ffn, even);
    gateScales = selectRows(*fc1Scales, ffn, even);
    up = selectRows(fc1Bytes, ffn, odd);
    upScales = selectRows(*fc1Scales, ffn, odd);
    if (upZeroPoints) {
      gateZeroPoints = selectRows(*fc1ZeroPoints, ffn, even);
      upZeroPoints = selectRows(*fc1ZeroPoints, ffn, odd);
    }
  }
  DenseElementsAttr gateBias, upBias, downBias;
  if (failed(importBiases(node, 4, 7, numExperts, rows, ffn, hidden, gated,
                          elementType, gateBias, upBias, downBias)))
    return failure();

  // The routing plan: route the logits, dispatch, quantized experts, combine.
  auto constant = [&](DenseElementsAttr attr) -> Value {
    if (!attr)
      return {};
    return arith::ConstantOp::create(b, loc, attr);
  };
  Value tokens = collapseRows(b, loc, input);
  logits = collapseRows(b, loc, logits);
  auto routing =
      RoutingAttr::get(ctx, k, ScoringFunc::Softmax,
                       node.getInt("normalize_routing_weights", 0) != 0,
                       APFloat(1.0), APFloat(1.0), /*n_group=*/0,
                       /*topk_group=*/0, APFloat(0.0), APFloat(0.0));
  Value result = buildRoutingPlan(
      b, loc, tokens, logits, routing, numExperts,
      [&](Value tokenIndices, Value offsets, Value dest) -> Value {
        return QuantizedExpertsOp::create(
            b, loc, dest.getType(), tokens, tokenIndices, offsets, dest,
            constant(gate), constant(gateScales), constant(up),
            constant(upScales), constant(fc2Bytes), constant(*fc2Scales),
            constant(gateBias), constant(upBias), constant(downBias),
            constant(gateZeroPoints), constant(upZeroPoints),
            constant(*fc2ZeroPoints), expert, b.getI64IntegerAttr(bits),
            b.getI64IntegerAttr(0));
      });
  if (inputType.getRank() == 3)
    result = buildExpandShape(b, loc, inputType, result,
                              SmallVector<ReassociationIndices>{{0, 1}, {2}},
                              tensor::getMixedSizes(b, loc, input));
  return node.setResults(result);
}
