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

  // Expert kind from activation_type and the SwiGLU attributes.
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
      return failure();
    }
    kind = ExpertKind::Gated;
    act = Activation::Silu;
    if (limit && !(*limit > 0.0 && std::isfinite(*limit))) {
      node.emitError() << "swiglu_limit = " << *limit
                       << " is not supported (must be positive and finite)";
      return failure();
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
      return failure();
    }
    if (fusion != 0) {
      node.emitError() << "swiglu_fusion = " << fusion
                       << " needs activation_type = 'swiglu'";
      return failure();
    }
    if (limit || alpha != 1.0 || beta != 0.0) {
      node.emitError() << "swiglu_limit/activation_alpha/activation_beta "
                          "apply to activation_type = 'swiglu' only";
      return failure();
    }
  }
  if (!(alpha > 0.0)) {
    node.emitError() << "activation_alpha = " << alpha
                     << " is not supported (must be positive)";
    return failure();
  }

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

  // The router: router_probs must be MatMul(input, Wg) with a constant Wg.
  const onnx::NodeProto *router =
      node.getImporter().getProducer(node.getInputName(1));
  DenseElementsAttr routerWeight;
  if (router && router->op_type() == "MatMul" &&
      (router->domain().empty() || router->domain() == "ai.onnx") &&
      router->input_size() == 2 && router->input(0) == node.getInputName(0))
    routerWeight = node.getImporter().getConstant(router->input(1));
  if (!routerWeight) {
    node.emitError()
        << "router_probs (input 1, '" << node.getInputName(1)
        << "') must be MatMul(input, Wg) with a constant Wg; other router "
           "forms are not supported yet";
    return failure();
  }
  auto routerType = cast<RankedTensorType>(routerWeight.getType());
  if (routerType.getRank() != 2 || routerType.getDimSize(0) != hidden ||
      routerType.getElementType() != elementType) {
    node.emitError() << "router weight has type " << routerType
                     << ", expected [" << hidden << ", E] of " << elementType;
    return failure();
  }
  int64_t numExperts = routerType.getDimSize(1);

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
  if (node.hasInput(3)) {
    FailureOr<DenseElementsAttr> fc1Bias =
        getWeight(node, 3, "fc1_experts_bias", 2, elementType);
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
      return e * rows + (kind == ExpertKind::Gated ? 2 * f + parity : f);
    };
    if (kind == ExpertKind::Gated)
      weights.gateBias = gatherElements(
          *fc1Bias, biasType, [&](int64_t i) { return biasRow(i, 0); });
    weights.upBias = gatherElements(*fc1Bias, biasType, [&](int64_t i) {
      return biasRow(i, kind == ExpertKind::Gated ? 1 : 0);
    });
  }
  if (node.hasInput(5)) {
    FailureOr<DenseElementsAttr> fc2Bias =
        getWeight(node, 5, "fc2_experts_bias", 2, elementType);
    if (failed(fc2Bias))
      return failure();
    ArrayRef<int64_t> shape = cast<ShapedType>(fc2Bias->getType()).getShape();
    if (shape[0] != numExperts || shape[1] != hidden) {
      node.emitError() << "fc2_experts_bias has shape [" << shape
                       << "], expected [" << numExperts << ", " << hidden
                       << "]";
      return failure();
    }
    weights.downBias = *fc2Bias;
  }

  auto constant = [&](DenseElementsAttr attr) -> Value {
    if (!attr)
      return {};
    return arith::ConstantOp::create(b, loc, attr);
  };
  Value tokens = input;
  if (inputType.getRank() == 3)
    tokens = tensor::CollapseShapeOp::create(
        b, loc, input, SmallVector<ReassociationIndices>{{0, 1}, {2}});

  auto routing = RoutingAttr::get(
      ctx, k, ScoringFunc::Softmax, renormalize, APFloat(1.0), APFloat(1.0),
      /*n_group=*/0, /*topk_group=*/0, APFloat(0.0), APFloat(0.0));
  auto expert = ExpertAttr::getChecked([&] { return node.emitError(); }, ctx,
                                       kind, act, APFloat(limit.value_or(0.0)),
                                       APFloat(alpha), APFloat(beta));
  if (!expert)
    return failure();
  Value result = LayerOp::create(
      b, loc, tokens.getType(), tokens, constant(routerWeight),
      /*selection_bias=*/Value(), constant(weights.gate), constant(weights.up),
      constant(weights.down), constant(weights.gateBias),
      constant(weights.upBias), constant(weights.downBias),
      /*shared_gate=*/Value(), /*shared_up=*/Value(), /*shared_down=*/Value(),
      /*shared_scale=*/Value(), routing, expert);
  if (inputType.getRank() == 3)
    result = buildExpandShape(b, loc, inputType, result,
                              SmallVector<ReassociationIndices>{{0, 1}, {2}},
                              tensor::getMixedSizes(b, loc, input));
  return node.setResults(result);
}
