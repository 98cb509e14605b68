"""The two ONNX graphs of the MoE layer that ONNX Runtime runs in the benchmark.

Both take `x [T, H]` (T symbolic) and carry every weight as an initializer, so ONNX Runtime
can prepack what it wants to, as it would for a deployed model.

- `build_moe_op_graph`: ORT's fused `com.microsoft.MoE` contrib op (layout measured in
  shared/notes/onnxruntime-moe-op.md): the router is a separate MatMul whose logits the op
  softmaxes itself; fc1 [E, 2F, H] holds gate/up rows interleaved (`swiglu_fusion=1`,
  gate at even rows); fc2 [E, H, F]. Shared experts (the op has no input for them) are
  standard MatMul/Sigmoid/Mul ops followed by an Add.
- `build_standard_graph`: the HuggingFace-transformers loop written in standard ONNX ops:
  router MatMul, Softmax, TopK, renormalize, then for every expert (unrolled)
  Equal/NonZero to find its (token, slot) pairs, Gather of those token rows, the SwiGLU
  MLP as MatMuls, scaling by the gathered routing weight and ScatterND(reduction=add)
  into the output (index_add_ in torch terms).
"""

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17  # ScatterND reduction='add' needs >= 16


def _init(name, array):
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def _const_i64(name, values):
    return numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)


def _io(H):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", H])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", H])
    return x, y


def _shared_nodes(w, nodes, inits, routed_out, out_name):
    """y = routed_out + (silu(x@sg) * (x@su)) @ sd, or just routed_out renamed."""
    if w.get("shared_gate") is None:
        nodes.append(helper.make_node("Identity", [routed_out], [out_name]))
        return
    inits += [_init("shared_gate", w["shared_gate"]), _init("shared_up", w["shared_up"]),
              _init("shared_down", w["shared_down"])]
    nodes += [
        helper.make_node("MatMul", ["x", "shared_gate"], ["sh_g"]),
        helper.make_node("MatMul", ["x", "shared_up"], ["sh_u"]),
        helper.make_node("Sigmoid", ["sh_g"], ["sh_sig"]),
        helper.make_node("Mul", ["sh_g", "sh_sig"], ["sh_silu"]),
        helper.make_node("Mul", ["sh_silu", "sh_u"], ["sh_h"]),
        helper.make_node("MatMul", ["sh_h", "shared_down"], ["sh_y"]),
        helper.make_node("Add", [routed_out, "sh_y"], [out_name]),
    ]


def build_moe_op_graph(w, k):
    gate, up, down = w["gate"], w["up"], w["down"]
    E, H, F = gate.shape
    fc1 = np.empty((E, 2 * F, H), dtype=np.float32)
    fc1[:, 0::2, :] = gate.transpose(0, 2, 1)  # gate rows (get the SiLU) at even rows
    fc1[:, 1::2, :] = up.transpose(0, 2, 1)  # linear ("up") rows at odd rows
    fc2 = down.transpose(0, 2, 1)  # [E, H, F]
    inits = [_init("router", w["router"]), _init("fc1", fc1), _init("fc2", fc2)]
    del fc1
    nodes = [
        helper.make_node("MatMul", ["x", "router"], ["logits"]),
        helper.make_node(
            "MoE", ["x", "logits", "fc1", "", "fc2"], ["routed"], domain="com.microsoft",
            k=k, activation_type="swiglu", swiglu_fusion=1, normalize_routing_weights=1,
            activation_alpha=1.0, activation_beta=0.0),
    ]
    _shared_nodes(w, nodes, inits, "routed", "y")
    x, y = _io(H)
    graph = helper.make_graph(nodes, "moe_op", [x], [y], inits)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="moe-mlir-bench")


def build_standard_graph(w, k):
    gate, up, down = w["gate"], w["up"], w["down"]
    E, H, F = gate.shape
    inits = [_init("router", w["router"]), _const_i64("k", [k]), _const_i64("axis_last", [-1]),
             _const_i64("ax0", [0]), _const_i64("ax1", [1]), _const_i64("zero_i", 0)]
    nodes = [
        helper.make_node("MatMul", ["x", "router"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        helper.make_node("TopK", ["probs", "k"], ["topv", "topi"], axis=-1, largest=1, sorted=1),
        helper.make_node("ReduceSum", ["topv", "axis_last"], ["topsum"], keepdims=1),
        helper.make_node("Div", ["topv", "topsum"], ["rw"]),  # [T, k] renormalized weights
        helper.make_node("Shape", ["x"], ["x_shape"]),
        helper.make_node("ConstantOfShape", ["x_shape"], ["acc_0"],
                         value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])),
    ]
    acc = "acc_0"
    for e in range(E):
        p = f"e{e}_"
        inits += [_init(p + "gate", gate[e]), _init(p + "up", up[e]), _init(p + "down", down[e]),
                  _const_i64(p + "id", e)]
        nodes += [
            # idx, top_x = torch.where(expert_mask[e]) -> (token, slot) pairs of expert e
            helper.make_node("Equal", ["topi", p + "id"], [p + "hit"]),  # [T, k]
            helper.make_node("NonZero", [p + "hit"], [p + "nz"]),  # [2, n]
            helper.make_node("Transpose", [p + "nz"], [p + "pairs"], perm=[1, 0]),  # [n, 2]
            helper.make_node("Gather", [p + "nz", "zero_i"], [p + "tok"], axis=0),  # [n]
            helper.make_node("GatherND", ["rw", p + "pairs"], [p + "w"]),  # [n]
            helper.make_node("Gather", ["x", p + "tok"], [p + "xs"], axis=0),  # [n, H]
            helper.make_node("MatMul", [p + "xs", p + "gate"], [p + "g"]),
            helper.make_node("MatMul", [p + "xs", p + "up"], [p + "u"]),
            helper.make_node("Sigmoid", [p + "g"], [p + "sig"]),
            helper.make_node("Mul", [p + "g", p + "sig"], [p + "silu"]),
            helper.make_node("Mul", [p + "silu", p + "u"], [p + "h"]),
            helper.make_node("MatMul", [p + "h", p + "down"], [p + "y"]),  # [n, H]
            helper.make_node("Unsqueeze", [p + "w", "ax1"], [p + "w2"]),  # [n, 1]
            helper.make_node("Mul", [p + "y", p + "w2"], [p + "yw"]),
            helper.make_node("Unsqueeze", [p + "tok", "ax1"], [p + "tok2"]),  # [n, 1]
            # final.index_add_(0, top_x, y)
            helper.make_node("ScatterND", [acc, p + "tok2", p + "yw"], [f"acc_{e + 1}"],
                             reduction="add"),
        ]
        acc = f"acc_{e + 1}"
    _shared_nodes(w, nodes, inits, acc, "y")
    x, y = _io(H)
    graph = helper.make_graph(nodes, "moe_standard", [x], [y], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="moe-mlir-bench")
    onnx.checker.check_model(model)
    return model
