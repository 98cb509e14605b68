"""Generates the small ONNX models of the importer tests.

Usage: gen.py MODEL OUT.onnx [extra]   (run with Debian's /usr/bin/python3)
"""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT
I64 = TensorProto.INT64


def vi(name, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def model(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset)] + [
        helper.make_opsetid(d, v) for d, v in extra_opsets
    ]
    return helper.make_model(graph, opset_imports=opsets, producer_name="gen.py")


def elementwise():
    n = helper.make_node
    nodes = [
        n("Add", ["x", "y"], ["add"], name="add0"),
        n("Sub", ["add", "y"], ["sub"], name="sub0"),
        n("Mul", ["sub", "x"], ["mul"], name="mul0"),
        n("Div", ["mul", "y"], ["div"], name="div0"),
        n("Sigmoid", ["div"], ["sig"], name="sig0"),
        n("Tanh", ["sig"], ["tanh"], name="tanh0"),
        n("Erf", ["tanh"], ["erf"], name="erf0"),
        n("Relu", ["erf"], ["out"], name="relu0"),
    ]
    return model(nodes, [vi("x", [2, 3]), vi("y", [3])], [vi("out", [2, 3])])


def matmul():
    n = helper.make_node
    nodes = [
        n("MatMul", ["a", "w"], ["mm2"], name="mm2d"),
        n("MatMul", ["a3", "w"], ["mm3"], name="mm3x2"),
        n("MatMul", ["a3", "b3"], ["bmm"], name="bmm"),
        n("Gemm", ["a", "wt", "c"], ["gemm"], name="gemm0", alpha=2.0,
          beta=0.5, transB=1),
    ]
    inits = [
        init("w", np.arange(12, dtype=np.float32).reshape(3, 4)),
        init("wt", np.arange(12, dtype=np.float32).reshape(4, 3)),
        init("c", np.ones(4, dtype=np.float32)),
    ]
    return model(
        nodes,
        [vi("a", [2, 3]), vi("a3", [5, 2, 3]), vi("b3", [5, 3, 6])],
        [vi("mm2", [2, 4]), vi("mm3", [5, 2, 4]), vi("bmm", [5, 2, 6]),
         vi("gemm", [2, 4])],
        inits,
    )


def routing():
    n = helper.make_node
    nodes = [
        n("Softmax", ["x"], ["p"], name="softmax0", axis=-1),
        n("TopK", ["p", "k"], ["vals", "idx"], name="topk0", axis=-1),
        n("ReduceSum", ["vals", "axes"], ["sum"], name="rsum0", keepdims=1),
        n("Div", ["vals", "sum"], ["w"], name="renorm"),
    ]
    inits = [init("k", np.array([2], dtype=np.int64)),
             init("axes", np.array([-1], dtype=np.int64))]
    return model(nodes, [vi("x", [4, 8])],
                 [vi("w", [4, 2]), vi("idx", [4, 2], TensorProto.INT64)], inits)


def shapes():
    n = helper.make_node
    nodes = [
        n("Reshape", ["x", "shape"], ["r"], name="reshape0"),
        n("Transpose", ["r"], ["t"], name="transpose0", perm=[1, 0, 2]),
        n("Unsqueeze", ["t", "ax0"], ["u"], name="unsqueeze0"),
        n("Squeeze", ["u", "ax0"], ["s"], name="squeeze0"),
        n("Concat", ["s", "s"], ["c"], name="concat0", axis=2),
        n("Gather", ["c", "gidx"], ["g"], name="gather0", axis=2),
        n("Constant", [], ["one"], name="const0",
          value=numpy_helper.from_array(np.array(1.0, dtype=np.float32))),
        n("Add", ["g", "one"], ["ga"], name="add0"),
        n("Cast", ["ga"], ["i"], name="cast0", to=TensorProto.INT32),
        n("Identity", ["i"], ["out"], name="id0"),
    ]
    inits = [
        init("shape", np.array([0, -1, 2], dtype=np.int64)),
        init("ax0", np.array([0], dtype=np.int64)),
        init("gidx", np.array([[3, 0], [-1, 1]], dtype=np.int64)),
    ]
    return model(nodes, [vi("x", [2, 6])], [vi("out", [3, 2, 2, 2],
                                                 TensorProto.INT32)], inits)


def shape_chain():
    """Shape -> Gather -> Unsqueeze -> Concat feeding Reshape, folded at
    import time."""
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["s"], name="shape0"),
        n("Gather", ["s", "i0"], ["d0"], name="gather0", axis=0),
        n("Unsqueeze", ["d0", "ax0"], ["d0v"], name="unsqueeze0"),
        n("Concat", ["d0v", "minus1"], ["target"], name="concat0", axis=0),
        n("Reshape", ["x", "target"], ["out"], name="reshape0"),
    ]
    inits = [init("i0", np.array(0, dtype=np.int64)),
             init("ax0", np.array([0], dtype=np.int64)),
             init("minus1", np.array([-1], dtype=np.int64))]
    return model(nodes, [vi("x", [2, 3, 4])], [vi("out", [2, 12])], inits)


def dynamic():
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "w"], ["h"], name="mm0"),
        n("Add", ["h", "b"], ["hb"], name="add0"),
        n("Softmax", ["hb"], ["out"], name="softmax0"),
    ]
    inits = [init("w", np.ones((4, 3), dtype=np.float32)),
             init("b", np.zeros(3, dtype=np.float32))]
    return model(nodes, [vi("x", ["batch", 4])], [vi("out", ["batch", 3])],
                 inits)


def add_dynamic():
    """y = a + b * c with three independently dynamic [n, 4] inputs: the
    shapes must agree at run time."""
    n = helper.make_node
    nodes = [n("Mul", ["b", "c"], ["bc"], name="mul0"),
             n("Add", ["a", "bc"], ["y"], name="add0")]
    return model(nodes, [vi("a", ["n", 4]), vi("b", ["m", 4]), vi("c", ["p", 4])],
                 [vi("y", ["n", 4])])


def gather_dynamic():
    """y = data[idx] (Gather, axis 0) and z = GatherND(data, pairs): indices
    from the inputs, checked at run time."""
    n = helper.make_node
    nodes = [n("Gather", ["data", "idx"], ["y"], name="gather0", axis=0),
             n("GatherND", ["data", "pairs"], ["z"], name="gathernd0")]
    return model(nodes, [vi("data", ["n", 4]), vi("idx", ["m"], I64),
                         vi("pairs", ["p", 2], I64)],
                 [vi("y", ["m", 4]), vi("z", ["p"])])


def external(path):
    m = matmul_small()
    onnx.save_model(m, path, save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin",
                    size_threshold=0)
    return None


def matmul_small():
    n = helper.make_node
    w = np.array([[1.5, -2.0], [0.25, 4.0]], dtype=np.float32)
    return model([n("MatMul", ["x", "w"], ["y"], name="mm0")],
                 [vi("x", [1, 2])], [vi("y", [1, 2])], [init("w", w)])


def unsupported_op():
    n = helper.make_node
    return model([n("LRN", ["x"], ["y"], name="lrn0", size=3)],
                 [vi("x", [1, 2, 3, 3])], [vi("y", [1, 2, 3, 3])])


def unsupported_attr():
    n = helper.make_node
    return model([n("Transpose", ["x"], ["y"], name="t0", perm=[1, 0],
                    flavor="strawberry")],
                 [vi("x", [2, 3])], [vi("y", [3, 2])])


def unsupported_dtype():
    n = helper.make_node
    return model([n("Identity", ["x"], ["y"], name="id0")],
                 [vi("x", [2], TensorProto.STRING)],
                 [vi("y", [2], TensorProto.STRING)])


def unsupported_opset():
    n = helper.make_node
    m = model([n("Relu", ["x"], ["y"], name="relu0")],
              [vi("x", [2])], [vi("y", [2])], opset=17)
    m.opset_import[0].version = 99
    return m


def undefined_input():
    n = helper.make_node
    return model([n("Relu", ["nowhere"], ["y"], name="relu0")],
                 [vi("x", [2])], [vi("y", [2])])


def indexing_error(kind):
    """One invalid use of each of the indexing ops' checks."""
    n = helper.make_node
    I64 = TensorProto.INT64
    if kind == "einsum_ellipsis":
        return model([n("Einsum", ["x", "x"], ["y"], name="e0",
                        equation="...i,...i->...")],
                     [vi("x", [2, 3])], [vi("y", [2])])
    if kind == "onehot_depth":
        return model([n("OneHot", ["i", "d", "v"], ["y"], name="oh0")],
                     [vi("i", [3], I64), vi("d", [], I64), vi("v", [2])],
                     [vi("y", [3, 4])])
    if kind == "scatter_reduction":
        return model([n("ScatterElements", ["x", "i", "x"], ["y"], name="s0",
                        reduction="xor")],
                     [vi("x", [2, 3]), vi("i", [2, 3], I64)],
                     [vi("y", [2, 3])], opset=18)
    if kind == "topk_large":
        return model([n("TopK", ["x", "k"], ["v", "i"], name="tk0")],
                     [vi("x", [2, "n"])], [vi("v", [2, "k"]), vi("i", [2, "k"], I64)],
                     [init("k", np.array([100000], dtype=np.int64))])
    if kind == "tile_rank":
        return model([n("Tile", ["x", "r"], ["y"], name="tile0")],
                     [vi("x", [2, 3])], [vi("y", [2, 3])],
                     [init("r", np.array([1, 2, 3], dtype=np.int64))])
    if kind == "tile_negative":
        return model([n("Tile", ["x", "r"], ["y"], name="tile0")],
                     [vi("x", [2, 3])], [vi("y", [2, 3])],
                     [init("r", np.array([1, -2], dtype=np.int64))])
    if kind == "clip_bound":
        return model([n("Clip", ["x", "lo"], ["y"], name="clip0")],
                     [vi("x", [2, 3])], [vi("y", [2, 3])],
                     [init("lo", np.array([0.0, 1.0], dtype=np.float32))])
    raise SystemExit("unknown indexing error " + kind)


# --- com.microsoft.MoE -------------------------------------------------------

E, H, FF = 2, 3, 2


def moe_model(x_shape, attrs, fc1, fc2, fc1_bias=None, fc2_bias=None,
              wg_const=True, router_from_x=True, fc3=False, seed=0):
    rng = np.random.default_rng(seed)
    n = helper.make_node
    inputs = [vi("x", x_shape)]
    inits = [init("fc1", fc1), init("fc2", fc2)]
    wg = rng.standard_normal((x_shape[-1], fc1.shape[0])).astype(np.float32)
    if wg_const:
        inits.append(init("wg", wg))
    else:
        inputs.append(vi("wg", list(wg.shape)))
    router_in = "x" if router_from_x else "x2"
    nodes = []
    if not router_from_x:
        nodes.append(n("Relu", ["x"], ["x2"], name="relu0"))
    nodes.append(n("MatMul", [router_in, "wg"], ["logits"], name="router"))
    moe_inputs = ["x", "logits", "fc1", "", "fc2"]
    if fc1_bias is not None:
        inits.append(init("fc1_b", fc1_bias))
        moe_inputs[3] = "fc1_b"
    if fc2_bias is not None:
        inits.append(init("fc2_b", fc2_bias))
        moe_inputs.append("fc2_b")
    if fc3:
        inits.append(init("fc3", np.zeros((fc1.shape[0], FF, x_shape[-1]),
                                          dtype=np.float32)))
        while len(moe_inputs) < 6:
            moe_inputs.append("")
        moe_inputs.append("fc3")
    nodes.append(n("MoE", moe_inputs, ["y"], name="moe0",
                   domain="com.microsoft", **attrs))
    return model(nodes, inputs, [vi("y", x_shape)], inits,
                 extra_opsets=[("com.microsoft", 1)])


def distinguishable_fc1(rows):
    # fc1[e, r, h] = 100 e + 10 r + h
    e, r, h = np.meshgrid(np.arange(E), np.arange(rows), np.arange(H),
                          indexing="ij")
    return (100 * e + 10 * r + h).astype(np.float32)


def distinguishable_fc2():
    # fc2[e, h, f] = 1000 + 100 e + 10 h + f
    e, h, f = np.meshgrid(np.arange(E), np.arange(H), np.arange(FF),
                          indexing="ij")
    return (1000 + 100 * e + 10 * h + f).astype(np.float32)


def moe_swiglu():
    fc1_bias = (np.arange(E * 2 * FF, dtype=np.float32).reshape(E, 2 * FF)
                + 0.5)
    return moe_model([4, H], dict(k=1, activation_type="swiglu",
                                  swiglu_fusion=1, normalize_routing_weights=1,
                                  swiglu_limit=7.0, activation_alpha=1.702,
                                  activation_beta=1.0),
                     distinguishable_fc1(2 * FF), distinguishable_fc2(),
                     fc1_bias=fc1_bias)


def moe_gelu_3d():
    return moe_model([2, 5, H], dict(k=2, activation_type="gelu"),
                     distinguishable_fc1(FF), distinguishable_fc2(),
                     fc1_bias=np.ones((E, FF), dtype=np.float32),
                     fc2_bias=np.full((E, H), 2.0, dtype=np.float32))


def moe_error(kind):
    base = dict(k=1, activation_type="swiglu", swiglu_fusion=1)
    fc1, fc2 = distinguishable_fc1(2 * FF), distinguishable_fc2()
    if kind == "sparse_mixer":
        return moe_model([4, H], dict(base, use_sparse_mixer=1), fc1, fc2)
    if kind == "fusion2":
        return moe_model([4, H], dict(base, swiglu_fusion=2), fc1, fc2)
    if kind == "fc3":
        return moe_model([4, H], base, fc1, fc2, fc3=True)
    if kind == "router_not_matmul_of_x":
        return moe_model([4, H], base, fc1, fc2, router_from_x=False)
    if kind == "router_not_constant":
        return moe_model([4, H], base, fc1, fc2, wg_const=False)
    if kind == "activation":
        return moe_model([4, H], dict(k=1, activation_type="softsign"), fc1,
                         fc2)
    raise SystemExit("unknown MoE error kind " + kind)


# --- com.microsoft.QMoE ------------------------------------------------------

def qmoe_model(attrs, bits=8, extra_inputs=(), fc1_dtype=np.uint8,
               scales_rows=None):
    """QMoE with E = 2, H = 4, F = 2; fc1 byte [e, r, c] = 16 e + 4 r + c and
    fc1 scale [e, r] = 10 e + r + 1, so the de-interleaved constants say
    where they came from."""
    n = helper.make_node
    Hq, Fq, Eq = 4, 2, 2
    cols = Hq * bits // 8
    e, r, c = np.meshgrid(np.arange(Eq), np.arange(2 * Fq), np.arange(cols),
                          indexing="ij")
    fc1 = (16 * e + 4 * r + c).astype(fc1_dtype)
    fc1_s = (10 * np.arange(Eq)[:, None] + np.arange(2 * Fq)[None, :] + 1
             ).astype(np.float32)
    if scales_rows is not None:
        fc1_s = fc1_s[:, :scales_rows]
    fc2 = np.full((Eq, Hq, Fq * bits // 8), 7, dtype=np.uint8)
    fc2_s = np.ones((Eq, Hq), dtype=np.float32)
    wg = np.ones((Hq, Eq), dtype=np.float32)
    inits = [init("wg", wg), init("fc1", fc1), init("fc1_s", fc1_s),
             init("fc2", fc2), init("fc2_s", fc2_s)]
    ins = ["x", "logits", "fc1", "fc1_s", "", "fc2", "fc2_s"]
    for i, name, *value in extra_inputs:
        # A given value, else zeros of the row-wise zero points' shape.
        inits.append(init(name, value[0] if value else
                          np.zeros((Eq, 2 * Fq), dtype=np.uint8)))
        while len(ins) < i:
            ins.append("")
        ins.append(name)
    nodes = [n("MatMul", ["x", "wg"], ["logits"], name="router"),
             n("QMoE", ins, ["y"], name="qmoe0", domain="com.microsoft",
               **attrs)]
    return model(nodes, [vi("x", [3, Hq])], [vi("y", [3, Hq])], inits,
                 extra_opsets=[("com.microsoft", 1)])


QMOE_BASE = dict(k=1, activation_type="swiglu", swiglu_fusion=1,
                 expert_weight_bits=8)


def qmoe_error(kind):
    if kind == "bits":
        return qmoe_model(dict(QMOE_BASE, expert_weight_bits=2))
    if kind == "quant_type":
        return qmoe_model(dict(QMOE_BASE, quant_type="fp4"))
    if kind == "zero_points":
        return qmoe_model(QMOE_BASE, extra_inputs=[(13, "fc3_zp")])
    if kind == "zero_points_shape":
        return qmoe_model(QMOE_BASE, extra_inputs=[
            (11, "fc1_zp", np.zeros((2, 3), dtype=np.uint8))])
    if kind == "float_weights":
        return qmoe_model(QMOE_BASE, fc1_dtype=np.float32)
    if kind == "scales":
        return qmoe_model(QMOE_BASE, scales_rows=3)
    if kind == "block_size":
        return qmoe_model(dict(QMOE_BASE, block_size=3))
    raise SystemExit("unknown QMoE error kind " + kind)


# --- End-to-end ---------------------------------------------------------------

def moe_e2e(path, data_dir):
    """A Mixtral-style com.microsoft.MoE (SwiGLU, top-2, renormalized) with
    random weights, its input and the float64 reference output."""
    rng = np.random.default_rng(7)
    T, Hd, Fd, En, k = 5, 16, 24, 4, 2
    x = rng.standard_normal((T, Hd)).astype(np.float32)
    wg = rng.standard_normal((Hd, En)).astype(np.float32)
    w1 = (rng.standard_normal((En, Hd, Fd)) / 4).astype(np.float32)
    w3 = (rng.standard_normal((En, Hd, Fd)) / 4).astype(np.float32)
    w2 = (rng.standard_normal((En, Fd, Hd)) / 4).astype(np.float32)
    fc1 = np.empty((En, 2 * Fd, Hd), dtype=np.float32)
    fc1[:, 0::2, :] = np.transpose(w1, (0, 2, 1))
    fc1[:, 1::2, :] = np.transpose(w3, (0, 2, 1))
    fc2 = np.transpose(w2, (0, 2, 1)).copy()
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wg"], ["logits"], name="router"),
        n("MoE", ["x", "logits", "fc1", "", "fc2"], ["y"], name="moe0",
          domain="com.microsoft", k=k, activation_type="swiglu",
          swiglu_fusion=1, normalize_routing_weights=1),
    ]
    m = model(nodes, [vi("x", [T, Hd])], [vi("y", [T, Hd])],
              [init("wg", wg), init("fc1", fc1), init("fc2", fc2)],
              extra_opsets=[("com.microsoft", 1)])
    onnx.save(m, path)

    # float64 reference
    xd = x.astype(np.float64)
    logits = xd @ wg.astype(np.float64)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = np.zeros((T, Hd))
    for t in range(T):
        top = np.argsort(-p[t], kind="stable")[:k]
        w = p[t, top] / p[t, top].sum()
        for e, we in zip(top, w):
            g = xd[t] @ w1[e].astype(np.float64)
            u = xd[t] @ w3[e].astype(np.float64)
            h = g / (1 + np.exp(-g)) * u
            y[t] += we * (h @ w2[e].astype(np.float64))
    np.save(os.path.join(data_dir, "x.npy"), x)
    np.save(os.path.join(data_dir, "ref.npy"), y)


def dynamic_range():
    """arange over a dynamic extent (HF's position ids): Range(0, T, 1) added
    to every column of x, and Range(T, 0, -2) as a second output."""
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["s"], name="shape0"),
        n("Gather", ["s", "i0"], ["t"], name="gather0", axis=0),
        n("Range", ["zero", "t", "one"], ["r"], name="range0"),
        n("Cast", ["r"], ["rf"], name="cast0", to=TensorProto.FLOAT),
        n("Unsqueeze", ["rf", "ax1"], ["rc"], name="unsqueeze0"),
        n("Add", ["x", "rc"], ["out"], name="add0"),
        n("Range", ["t", "zero", "minus2"], ["down"], name="range1"),
    ]
    inits = [init("i0", np.array(0, dtype=np.int64)),
             init("zero", np.array(0, dtype=np.int64)),
             init("one", np.array(1, dtype=np.int64)),
             init("minus2", np.array(-2, dtype=np.int64)),
             init("ax1", np.array([1], dtype=np.int64))]
    return model(nodes, [vi("x", ["T", 4])],
                 [vi("out", ["T", 4]), vi("down", ["D"], TensorProto.INT64)], inits)


def dynamic_slice():
    """Slices with ends known only at run time: a [16, 4] table cut to the
    token count ([:T], as HF slices its rotary cache) and added to x, and
    x[:, :H // 2] with H // 2 computed from the shape (rotate_half)."""
    n = helper.make_node
    nodes = [
        n("Shape", ["x"], ["s"], name="shape0"),
        n("Gather", ["s", "i0"], ["t"], name="gather0", axis=0),
        n("Unsqueeze", ["t", "ax0"], ["tv"], name="unsqueeze0"),
        n("Slice", ["table", "zero1", "tv", "ax0"], ["rows"], name="slice0"),
        n("Add", ["x", "rows"], ["out"], name="add0"),
        n("Gather", ["s", "i1"], ["h"], name="gather1", axis=0),
        n("Div", ["h", "two"], ["half"], name="div0"),
        n("Unsqueeze", ["half", "ax0"], ["halfv"], name="unsqueeze1"),
        n("Slice", ["x", "zero1", "halfv", "ax1"], ["left"], name="slice1"),
    ]
    inits = [init("i0", np.array(0, dtype=np.int64)),
             init("i1", np.array(1, dtype=np.int64)),
             init("two", np.array(2, dtype=np.int64)),
             init("zero1", np.array([0], dtype=np.int64)),
             init("ax0", np.array([0], dtype=np.int64)),
             init("ax1", np.array([1], dtype=np.int64)),
             init("table", np.arange(64, dtype=np.float32).reshape(16, 4))]
    return model(nodes, [vi("x", ["T", 4])],
                 [vi("out", ["T", 4]), vi("left", ["T", "L"])], inits)


def capacity_truncated():
    """The start of GShard's capacity gating, one_hot(argmax(softmax(x W)))
    and its CumSum over the tokens, with nothing after it (the fuzzer found
    that the matcher read the missing Sub)."""
    n = helper.make_node
    E = 4
    nodes = [
        n("MatMul", ["x", "w"], ["logits"]),
        n("Softmax", ["logits"], ["gates"], axis=1),
        n("ArgMax", ["gates"], ["top"], axis=1, keepdims=0),
        n("OneHot", ["top", "depth", "onoff"], ["mask"], axis=-1),
        n("CumSum", ["mask", "zero"], ["y"]),
    ]
    return model(nodes, [vi("x", [5, 3])], [vi("y", [5, E], TensorProto.INT64)],
                 [init("w", np.arange(3 * E, dtype=np.float32).reshape(3, E)),
                  init("depth", np.array(E, dtype=np.int64)),
                  init("onoff", np.array([0, 1], dtype=np.int64)),
                  init("zero", np.array(0, dtype=np.int64))])


MODELS = {
    "elementwise": elementwise,
    "capacity_truncated": capacity_truncated,
    "matmul": matmul,
    "routing": routing,
    "shapes": shapes,
    "dynamic": dynamic,
    "add_dynamic": add_dynamic,
    "gather_dynamic": gather_dynamic,
    "shape_chain": shape_chain,
    "dynamic_range": dynamic_range,
    "dynamic_slice": dynamic_slice,
    "matmul_small": matmul_small,
    "unsupported_op": unsupported_op,
    "unsupported_attr": unsupported_attr,
    "unsupported_dtype": unsupported_dtype,
    "unsupported_opset": unsupported_opset,
    "undefined_input": undefined_input,
    "moe_swiglu": moe_swiglu,
    "moe_gelu_3d": moe_gelu_3d,
    "qmoe_swiglu": lambda: qmoe_model(QMOE_BASE),
    # fc1 zero point [e, r] = 10 e + r + 100 (row-wise, 8 bits) and fc2's
    # [e, r] = 5 e + r.
    "qmoe_zero_points": lambda: qmoe_model(QMOE_BASE, extra_inputs=[
        (11, "fc1_zp", (10 * np.arange(2)[:, None] + np.arange(4)[None, :] + 100
                        ).astype(np.uint8)),
        (12, "fc2_zp", (5 * np.arange(2)[:, None] + np.arange(4)[None, :]
                        ).astype(np.uint8))]),
    "uint8_cast": lambda: model(
        [helper.make_node("Cast", ["x"], ["y"], name="cast0",
                          to=TensorProto.FLOAT)],
        [vi("x", [2], TensorProto.UINT8)], [vi("y", [2])]),
}


def main():
    name, out = sys.argv[1], sys.argv[2]
    if name == "external":
        external(out)
        return
    if name == "moe_e2e":
        moe_e2e(out, sys.argv[3])
        return
    if name.startswith("moe_error:"):
        m = moe_error(name.split(":", 1)[1])
    elif name.startswith("qmoe_error:"):
        m = qmoe_error(name.split(":", 1)[1])
    elif name.startswith("indexing_error:"):
        m = indexing_error(name.split(":", 1)[1])
    else:
        m = MODELS[name]()
    onnx.save(m, out)


if __name__ == "__main__":
    main()
