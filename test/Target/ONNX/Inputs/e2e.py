"""End-to-end checks of imported ONNX models: builds a model, random inputs
and a float64 numpy reference of its math; after moe-compile and moe-run,
compares the outputs (relative L2 error <= 1e-5, exact for integers).

Usage: e2e.py gen MODEL DIR     writes DIR/model.onnx, DIR/in<i>.npy, DIR/ref<i>.npy
       e2e.py check DIR         compares DIR/out<i>.npy with DIR/ref<i>.npy
"""

import glob
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


def make(nodes, inputs, outputs, inits, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, inits)
    opsets = [helper.make_opsetid("", 17)] + [
        helper.make_opsetid(d, v) for d, v in extra_opsets]
    return helper.make_model(graph, opset_imports=opsets)


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def block(rng):
    """A small decoder-like block: embedding gather, LayerNorm, projections,
    Split, SiLU gating, a causal softmax, RMS-style normalization, Gemm."""
    B, S, V, H, Fd = 2, 4, 11, 8, 6
    n = helper.make_node
    emb = rng.standard_normal((V, H)).astype(np.float32)
    ln_s = rng.standard_normal(H).astype(np.float32)
    ln_b = rng.standard_normal(H).astype(np.float32)
    w_in = rng.standard_normal((H, 2 * Fd)).astype(np.float32) / 3
    w_out = rng.standard_normal((Fd, H)).astype(np.float32) / 3
    g_w = rng.standard_normal((H, H)).astype(np.float32) / 3
    g_c = rng.standard_normal(H).astype(np.float32)
    mask = np.tril(np.ones((S, S), dtype=bool))
    nodes = [
        n("Gather", ["emb", "ids"], ["x"], axis=0),                      # [B,S,H]
        n("LayerNormalization", ["x", "ln_s", "ln_b"], ["xn"], axis=-1,
          epsilon=1e-5),
        n("MatMul", ["xn", "w_in"], ["h"]),                              # [B,S,2F]
        n("Split", ["h", "split"], ["g", "u"], axis=-1),
        n("Sigmoid", ["g"], ["sg"]),
        n("Mul", ["g", "sg"], ["silu"]),
        n("Mul", ["silu", "u"], ["gu"]),
        n("MatMul", ["gu", "w_out"], ["y"]),                             # [B,S,H]
        n("Add", ["x", "y"], ["res"]),
        # causal attention scores of res with itself
        n("Transpose", ["res"], ["resT"], perm=[0, 2, 1]),
        n("MatMul", ["res", "resT"], ["scores"]),                         # [B,S,S]
        n("Sqrt", ["hdim"], ["scale"]),
        n("Div", ["scores", "scale"], ["scaled"]),
        n("Where", ["mask", "scaled", "neg"], ["masked"]),
        n("Softmax", ["masked"], ["attn"], axis=-1),
        n("MatMul", ["attn", "res"], ["ctx"]),                            # [B,S,H]
        # RMS norm with Pow/ReduceMean/Sqrt/Reciprocal
        n("Pow", ["ctx", "two"], ["sq"]),
        n("ReduceMean", ["sq"], ["ms"], axes=[-1], keepdims=1),
        n("Add", ["ms", "eps"], ["mse"]),
        n("Sqrt", ["mse"], ["rms"]),
        n("Reciprocal", ["rms"], ["inv"]),
        n("Mul", ["ctx", "inv"], ["normed"]),
        # last position through Gemm, then Tanh
        n("Slice", ["normed", "st", "en", "ax"], ["last"]),              # [B,1,H]
        n("Squeeze", ["last", "ax"], ["last2"]),                          # [B,H]
        n("Gemm", ["last2", "g_w", "g_c"], ["gm"], alpha=0.5, beta=2.0),
        n("Tanh", ["gm"], ["out1"]),
        n("Concat", ["out1", "out1"], ["cat"], axis=0),                   # [2B,H]
        n("ReduceMax", ["cat"], ["mx"], axes=[1], keepdims=0),           # [2B]
        n("Cast", ["ids"], ["idsf"], to=F),
        n("ReduceSum", ["idsf", "ax1"], ["idsum"], keepdims=0),          # [B]
    ]
    inits = [
        init("emb", emb), init("ln_s", ln_s), init("ln_b", ln_b),
        init("w_in", w_in), init("w_out", w_out),
        init("split", np.array([Fd, Fd], dtype=np.int64)),
        init("hdim", np.array(float(H), dtype=np.float32)),
        init("mask", mask), init("neg", np.array(-1e9, dtype=np.float32)),
        init("two", np.array(2.0, dtype=np.float32)),
        init("eps", np.array(1e-6, dtype=np.float32)),
        init("st", np.array([-1], dtype=np.int64)),
        init("en", np.array([S], dtype=np.int64)),
        init("ax", np.array([1], dtype=np.int64)),
        init("ax1", np.array([1], dtype=np.int64)),
        init("g_w", g_w), init("g_c", g_c),
    ]
    m = make(nodes, [vi("ids", [B, S], I64)],
             [vi("normed", [B, S, H]), vi("out1", [B, H]), vi("mx", [2 * B]),
              vi("idsum", [B])], inits)
    ids = rng.integers(-V, V, size=(B, S)).astype(np.int64)

    d = lambda a: np.asarray(a, dtype=np.float64)
    x = d(emb)[np.where(ids < 0, ids + V, ids)]
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    xn = (x - mu) / np.sqrt(var + 1e-5) * d(ln_s) + d(ln_b)
    h = xn @ d(w_in)
    g, u = h[..., :Fd], h[..., Fd:]
    y = (g * sigmoid(g) * u) @ d(w_out)
    res = x + y
    scores = res @ np.transpose(res, (0, 2, 1)) / np.sqrt(H)
    attn = softmax(np.where(mask, scores, -1e9))
    ctx = attn @ res
    normed = ctx / np.sqrt((ctx ** 2).mean(-1, keepdims=True) + 1e-6)
    out1 = np.tanh(0.5 * (normed[:, -1, :] @ d(g_w)) + 2.0 * d(g_c))
    mx = np.concatenate([out1, out1], 0).max(1)
    idsum = ids.astype(np.float64).sum(1)
    return m, [ids], [normed, out1, mx, idsum]


def routing(rng):
    """Softmax, TopK (largest and smallest), ReduceSum renormalization."""
    T, E, k = 6, 8, 3
    n = helper.make_node
    nodes = [
        n("Softmax", ["z"], ["p"], axis=-1),
        n("TopK", ["p", "k"], ["v", "i"], axis=-1),
        n("ReduceSum", ["v", "axes"], ["s"], keepdims=1),
        n("Div", ["v", "s"], ["w"]),
        n("TopK", ["z", "k"], ["lv", "li"], axis=-1, largest=0),
    ]
    m = make(nodes, [vi("z", [T, E])],
             [vi("w", [T, k]), vi("i", [T, k], I64), vi("li", [T, k], I64)],
             [init("k", np.array([k], dtype=np.int64)),
              init("axes", np.array([-1], dtype=np.int64))])
    z = rng.standard_normal((T, E)).astype(np.float32)
    p = softmax(z.astype(np.float64))
    idx = np.argsort(-p, axis=-1, kind="stable")[:, :k]
    v = np.take_along_axis(p, idx, -1)
    lidx = np.argsort(z, axis=-1, kind="stable")[:, :k]
    return m, [z], [v / v.sum(-1, keepdims=True), idx, lidx]


def dynamic(rng):
    """A dynamic batch dimension through MatMul, Add, Relu and Reshape."""
    n = helper.make_node
    w = rng.standard_normal((4, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    nodes = [
        n("MatMul", ["x", "w"], ["h"]),
        n("Add", ["h", "b"], ["hb"]),
        n("Relu", ["hb"], ["r"]),
        n("Reshape", ["r", "shape"], ["out"]),
    ]
    m = make(nodes, [vi("x", ["batch", 4])], [vi("out", ["batch", 3, 2])],
             [init("w", w), init("b", b),
              init("shape", np.array([-1, 3, 2], dtype=np.int64))])
    x = rng.standard_normal((7, 4)).astype(np.float32)
    out = np.maximum(x.astype(np.float64) @ w + b, 0).reshape(-1, 3, 2)
    return m, [x], [out]


def moe(rng):
    """A Mixtral-style com.microsoft.MoE (SwiGLU, top-2, renormalized)."""
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
    m = make(nodes, [vi("x", [T, Hd])], [vi("y", [T, Hd])],
             [init("wg", wg), init("fc1", fc1), init("fc2", fc2)],
             extra_opsets=[("com.microsoft", 1)])
    xd = x.astype(np.float64)
    p = softmax(xd @ wg)
    y = np.zeros((T, Hd))
    for t in range(T):
        top = np.argsort(-p[t], kind="stable")[:k]
        wts = p[t, top] / p[t, top].sum()
        for e, we in zip(top, wts):
            g = xd[t] @ w1[e]
            u = xd[t] @ w3[e]
            y[t] += we * ((g * sigmoid(g) * u) @ w2[e])
    return m, [x], [y]


def moe_variant(rng, gated, router_bias=False, flat=False):
    """com.microsoft.MoE on [B, S, H] with biases: GPT-OSS's clamped SwiGLU
    (limit, alpha, beta; top-2, no renormalization) or a GELU FFN (top-1).
    With `router_bias` the logits are x·Wg + bg, as GPT-OSS's router has
    them; with `flat` the input is [B * S, H] (ONNX Runtime's CPU kernel
    takes 2-d inputs only)."""
    from math import erf
    B, S, Hd, Fd, En = 2, 3, 8, 12, 4
    shape = [B * S, Hd] if flat else [B, S, Hd]
    k = 2 if gated else 1
    limit, alpha, beta = 7.0, 1.702, 1.0
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    wg = rng.standard_normal((Hd, En)).astype(np.float32)
    rows = 2 * Fd if gated else Fd
    fc1 = (rng.standard_normal((En, rows, Hd)) * 1.5).astype(np.float32)
    b1 = rng.standard_normal((En, rows)).astype(np.float32)
    fc2 = (rng.standard_normal((En, Hd, Fd)) / 3).astype(np.float32)
    b2 = rng.standard_normal((En, Hd)).astype(np.float32)
    attrs = dict(k=k)
    if gated:
        attrs.update(activation_type="swiglu", swiglu_fusion=1,
                     swiglu_limit=limit, activation_alpha=alpha,
                     activation_beta=beta)
    else:
        attrs.update(activation_type="gelu", normalize_routing_weights=1)
    bg = rng.standard_normal(En).astype(np.float32)
    n = helper.make_node
    nodes = [
        n("MatMul", ["x", "wg"], ["xw" if router_bias else "logits"],
          name="router"),
        n("MoE", ["x", "logits", "fc1", "b1", "fc2", "b2"], ["y"],
          name="moe0", domain="com.microsoft", **attrs),
    ]
    inits = [init("wg", wg), init("fc1", fc1), init("b1", b1),
             init("fc2", fc2), init("b2", b2)]
    if router_bias:
        nodes.insert(1, n("Add", ["xw", "bg"], ["logits"], name="router_bias"))
        inits.append(init("bg", bg))
    m = make(nodes, [vi("x", shape)], [vi("y", shape)], inits,
             extra_opsets=[("com.microsoft", 1)])
    # The float32 values ORT reads for the attributes.
    limit, alpha, beta = (float(np.float32(v)) for v in (limit, alpha, beta))
    xd = x.reshape(-1, Hd).astype(np.float64)
    p = softmax(xd @ wg + (bg if router_bias else 0.0))
    y = np.zeros_like(xd)
    verf = np.vectorize(erf)
    for t in range(xd.shape[0]):
        top = np.argsort(-p[t], kind="stable")[:k]
        wts = p[t, top] if gated else p[t, top] / p[t, top].sum()
        for e, we in zip(top, wts):
            a = fc1[e].astype(np.float64) @ xd[t] + b1[e]
            if gated:
                g = np.minimum(a[0::2], limit)
                u = np.clip(a[1::2], -limit, limit)
                h = g * sigmoid(alpha * g) * (u + beta)
            else:
                h = 0.5 * a * (1 + verf(a / np.sqrt(2)))
            y[t] += we * (fc2[e].astype(np.float64) @ h + b2[e])
    return m, [x], [y.reshape(shape)]


def indexing(rng):
    """The indexing ops of exported MoE blocks with data-dependent results:
    NonZero (dynamic count), OneHot, ScatterElements (add), ScatterND,
    GatherElements, GatherND, ArgMax, ArgMin, Trilu, Einsum, and
    ConstantOfShape/Expand of a shape computed at run time."""
    n = helper.make_node
    T, E = 4, 5
    nodes = [
        n("Greater", ["x", "zero"], ["pos"]),
        n("NonZero", ["pos"], ["nz"]),                                  # [2, N]
        n("OneHot", ["ids", "depth", "onoff"], ["oh"], axis=-1),         # [3, E]
        n("Slice", ["x", "s0", "s2", "ax0"], ["x01"]),                   # [2, E]
        n("ScatterElements", ["x", "sidx", "x01"], ["se"], axis=0,
          reduction="add"),
        n("ScatterND", ["x", "ndidx", "x01"], ["snd"]),
        n("GatherElements", ["x", "gidx"], ["ge"], axis=1),              # [T, 2]
        n("GatherND", ["x", "gnd_idx"], ["gnd"]),                        # [2]
        n("ArgMax", ["x"], ["amax"], axis=1, keepdims=0),
        n("ArgMin", ["x"], ["amin"], axis=0, keepdims=1, select_last_index=1),
        n("Trilu", ["x", "one"], ["tri"], upper=0),
        n("Einsum", ["x", "x"], ["ein"], equation="ij,kj->ik"),
        n("Shape", ["nz"], ["nzs"]),
        n("ConstantOfShape", ["nzs"], ["ones"],
          value=helper.make_tensor("v", F, [1], [1.5])),                 # [2, N]
        n("Expand", ["col", "nzs"], ["ex"]),                             # [2, N]
        n("Add", ["ones", "ex"], ["onesx"]),
    ]
    sidx = np.array([[1, 0, 3, 3, 2], [1, 2, 0, 3, 1]], dtype=np.int64)
    ndidx = np.array([[3], [-3]], dtype=np.int64)
    gidx = np.array([[0, 4], [1, 1], [-1, 2], [3, 0]], dtype=np.int64)
    gnd_idx = np.array([[0, 1], [3, -1]], dtype=np.int64)
    inits = [
        init("zero", np.array(0.0, dtype=np.float32)),
        init("depth", np.array(E, dtype=np.int64)),
        init("onoff", np.array([0.25, 2.0], dtype=np.float32)),
        init("s0", np.array([0], dtype=np.int64)),
        init("s2", np.array([2], dtype=np.int64)),
        init("ax0", np.array([0], dtype=np.int64)),
        init("sidx", sidx), init("ndidx", ndidx), init("gidx", gidx),
        init("gnd_idx", gnd_idx),
        init("one", np.array(1, dtype=np.int64)),
        init("col", np.array([[1.0], [2.0]], dtype=np.float32)),
    ]
    m = make(nodes, [vi("x", [T, E]), vi("ids", [3], I64)],
             [vi("nz", [2, "n"], I64), vi("oh", [3, E]), vi("se", [T, E]),
              vi("snd", [T, E]), vi("ge", [T, 2]), vi("gnd", [2]),
              vi("amax", [T], I64), vi("amin", [1, E], I64),
              vi("tri", [T, E]), vi("ein", [T, T]), vi("onesx", [2, "n"])],
             inits)
    x = rng.standard_normal((T, E)).astype(np.float32)
    x[1, 2] = x[1, 4] = x[1].max() + 1  # an ArgMax tie: the first wins
    x[3, 0] = x[0, 0] = x[:, 0].min() - 1  # an ArgMin tie: the last wins
    ids = np.array([4, -1, 0], dtype=np.int64)
    d = x.astype(np.float64)
    nz = np.stack(np.nonzero(x > 0)).astype(np.int64)
    oh = np.where(np.arange(E)[None, :] == (ids % E)[:, None], 2.0, 0.25)
    se = d.copy()
    for i in range(2):
        for j in range(E):
            se[sidx[i, j], j] += d[i, j]
    snd = d.copy()
    snd[3] = d[0]
    snd[1] = d[1]
    ge = np.take_along_axis(d, gidx % E, axis=1)
    gnd = np.array([d[0, 1], d[3, E - 1]])
    amax = np.argmax(d, axis=1)
    amin = (T - 1 - np.argmin(d[::-1], axis=0))[None, :]
    tri = np.tril(d, 1)
    ein = d @ d.T
    onesx = 1.5 + np.broadcast_to(np.array([[1.0], [2.0]]), nz.shape)
    return m, [x, ids], [nz, oh, se, snd, ge, gnd, amax, amin, tri, ein,
                         onesx]


def tile_clip(rng):
    """Tile with constant repeats and with repeats computed from the input's
    dynamic shape at run time (torch's `repeat`), Clip with both bounds,
    a max only (torch's `clamp(max=...)`), a min only, and on int64, and
    CumSum (along the dynamic axis; exclusive and reversed on int64)."""
    n = helper.make_node
    H = 3
    nodes = [
        n("Tile", ["x", "rep"], ["tile"]),                       # [2T, 3H]
        n("Shape", ["x"], ["xs"]),
        n("Gather", ["xs", "zero_i"], ["t0"], axis=0),           # T
        n("Unsqueeze", ["t0", "s0"], ["t1"]),                    # [T]
        n("Concat", ["one", "t1"], ["rep_t"], axis=0),           # [1, T]
        n("Tile", ["x", "rep_t"], ["tile_t"]),                   # [T, T*H]
        n("Clip", ["x", "lo", "hi"], ["clip"]),
        n("Clip", ["x", "", "hi"], ["clip_max"]),
        n("Clip", ["x", "lo"], ["clip_min"]),
        n("Clip", ["ids", "lo_i", "hi_i"], ["clip_i"]),
        n("CumSum", ["x", "zero_i"], ["cumsum"]),
        n("CumSum", ["ids", "zero_i"], ["cumsum_i"], exclusive=1, reverse=1),
    ]
    inits = [
        init("rep", np.array([2, 3], dtype=np.int64)),
        init("zero_i", np.array(0, dtype=np.int64)),
        init("s0", np.array([0], dtype=np.int64)),
        init("one", np.array([1], dtype=np.int64)),
        init("lo", np.array(-0.5, dtype=np.float32)),
        init("hi", np.array(0.75, dtype=np.float32)),
        init("lo_i", np.array(-2, dtype=np.int64)),
        init("hi_i", np.array(3, dtype=np.int64)),
    ]
    m = make(nodes, [vi("x", ["t", H]), vi("ids", [6], I64)],
             [vi("tile", ["a", 3 * H]), vi("tile_t", ["t", "b"]),
              vi("clip", ["t", H]), vi("clip_max", ["t", H]),
              vi("clip_min", ["t", H]), vi("clip_i", [6], I64),
              vi("cumsum", ["t", H]), vi("cumsum_i", [6], I64)],
             inits)
    T = 5
    x = rng.standard_normal((T, H)).astype(np.float32)
    ids = rng.integers(-6, 7, 6).astype(np.int64)
    d = x.astype(np.float64)
    return m, [x, ids], [np.tile(d, (2, 3)), np.tile(d, (1, T)),
                         np.clip(d, -0.5, 0.75), np.minimum(d, 0.75),
                         np.maximum(d, -0.5), np.clip(ids, -2, 3),
                         np.cumsum(d, axis=0),
                         np.cumsum(ids[::-1])[::-1] - ids]


def qmoe(rng, bits, block_size, shape3d=False, biases=False, zero_points=False):
    """com.microsoft.QMoE (SwiGLU fused and interleaved, top-2, renormalized)
    with `bits`-bit weights (uint8, 4-bit codes low nibble first), scales per
    row (block_size 0) or per block, and the symmetric zero point 2^(bits-1)
    or (`zero_points`) random ones, inputs 11-12 in ONNX Runtime's layout (at
    4 bits two per byte, low nibble first, along the rows for row-wise
    scales and along the blocks otherwise); the reference dequantizes the
    same codes in float64."""
    T, Hd, Fd, En, k = 6, 32, 48, 4, 2
    zp = 1 << (bits - 1)
    pack = 8 // bits

    def quant(n_rows, red):
        codes = rng.integers(0, 2 * zp, size=(En, n_rows, red)).astype(np.uint8)
        blocks = red // block_size if block_size else 1
        scales = (rng.uniform(0.5, 1.5, size=(En, n_rows, blocks)) / (zp * np.sqrt(red))).astype(np.float32)
        zps = (rng.integers(0, 2 * zp, size=(En, n_rows, blocks)) if zero_points
               else np.full((En, n_rows, blocks), zp)).astype(np.uint8)
        w = np.repeat(scales.astype(np.float64), red // blocks, axis=-1) * (
            codes.astype(np.float64) - np.repeat(zps.astype(np.float64), red // blocks, axis=-1))
        if bits == 4:
            codes = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
        z = zps if block_size else zps[..., 0]
        if bits == 4:
            if z.shape[-1] % 2:
                z = np.concatenate([z, np.zeros(z.shape[:-1] + (1,), np.uint8)], axis=-1)
            z = (z[..., 0::2] | (z[..., 1::2] << 4)).astype(np.uint8)
        return codes, (scales if block_size else scales[..., 0]), w, z

    fc1, fc1_s, w1, z1 = quant(2 * Fd, Hd)   # [E, 2F, H]: rows gate, up interleaved
    fc2, fc2_s, w2, z2 = quant(Hd, Fd)       # [E, H, F]
    assert fc1.shape[2] == Hd // pack
    x_shape = [2, 3, Hd] if shape3d else [T, Hd]
    x = rng.standard_normal(x_shape).astype(np.float32)
    wg = rng.standard_normal((Hd, En)).astype(np.float32) / 4
    b1 = rng.standard_normal((En, 2 * Fd)).astype(np.float32) if biases else None
    b2 = rng.standard_normal((En, Hd)).astype(np.float32) if biases else None
    n = helper.make_node
    attrs = dict(k=k, activation_type="swiglu", swiglu_fusion=1,
                 normalize_routing_weights=1, expert_weight_bits=bits)
    if block_size:
        attrs["block_size"] = block_size
    ins = ["x", "logits", "fc1", "fc1_s", "b1" if biases else "", "fc2", "fc2_s"]
    inits = [init("wg", wg), init("fc1", fc1), init("fc1_s", fc1_s), init("fc2", fc2),
             init("fc2_s", fc2_s)]
    if biases:
        ins.append("b2")
        inits += [init("b1", b1), init("b2", b2)]
    if zero_points:
        ins += [""] * (8 - len(ins)) + ["", "", "", "z1", "z2"]
        inits += [init("z1", z1), init("z2", z2)]
    nodes = [
        n("MatMul", ["x", "wg"], ["logits"], name="router"),
        n("QMoE", ins, ["y"], name="qmoe0", domain="com.microsoft", **attrs),
    ]
    m = make(nodes, [vi("x", x_shape)], [vi("y", x_shape)], inits,
             extra_opsets=[("com.microsoft", 1)])
    xd = x.astype(np.float64).reshape(-1, Hd)
    p = softmax(xd @ wg.astype(np.float64))
    y = np.zeros_like(xd)
    for t in range(xd.shape[0]):
        top = np.argsort(-p[t], kind="stable")[:k]
        wts = p[t, top] / p[t, top].sum()
        for e, we in zip(top, wts):
            h1 = w1[e] @ xd[t] + (0 if b1 is None else b1[e])
            g, u = h1[0::2], h1[1::2]
            y[t] += we * (w2[e] @ (g * sigmoid(g) * u) + (0 if b2 is None else b2[e]))
    return m, [x], [y.reshape(x_shape)]


MODELS = {
    "block": block,
    "indexing": indexing,
    "tile_clip": tile_clip,
    "routing": routing,
    "dynamic": dynamic,
    "moe": moe,
    "moe_gptoss": lambda rng: moe_variant(rng, gated=True),
    "moe_gelu": lambda rng: moe_variant(rng, gated=False),
    "moe_gptoss_router_bias": lambda rng: moe_variant(rng, gated=True,
                                                      router_bias=True),
    "moe_gptoss_router_bias_2d": lambda rng: moe_variant(
        rng, gated=True, router_bias=True, flat=True),
    "qmoe_int8": lambda rng: qmoe(rng, 8, 0),
    "qmoe_int4": lambda rng: qmoe(rng, 4, 16, biases=True),
    "qmoe_int8_blocks": lambda rng: qmoe(rng, 8, 16),
    # Explicit zero points: int8 per row, int4 per block (with biases), int4
    # per row (two rows' zero points per byte).
    "qmoe_int8_zp": lambda rng: qmoe(rng, 8, 0, zero_points=True),
    "qmoe_int4_zp": lambda rng: qmoe(rng, 4, 16, biases=True, zero_points=True),
    "qmoe_int4_rows_zp": lambda rng: qmoe(rng, 4, 0, zero_points=True),
}


def gen(name, out_dir):
    rng = np.random.default_rng(2024)
    m, inputs, refs = MODELS[name](rng)
    onnx.checker.check_model(m)
    onnx.save(m, os.path.join(out_dir, "model.onnx"))
    for i, a in enumerate(inputs):
        np.save(os.path.join(out_dir, "in%d.npy" % i), a)
    for i, r in enumerate(refs):
        np.save(os.path.join(out_dir, "ref%d.npy" % i), r)


def check(out_dir):
    refs = sorted(glob.glob(os.path.join(out_dir, "ref*.npy")))
    for i in range(len(refs)):
        ref = np.load(os.path.join(out_dir, "ref%d.npy" % i))
        out = np.load(os.path.join(out_dir, "out%d.npy" % i))
        if out.shape != ref.shape:
            print("out%d: shape %s, expected %s" % (i, out.shape, ref.shape))
            continue
        if np.issubdtype(ref.dtype, np.integer):
            ok = np.array_equal(out, ref)
            print("out%d: %s %s exact" % (i, "OK" if ok else "MISMATCH",
                                          out.dtype))
            continue
        err = np.linalg.norm(out.astype(np.float64) - ref) / max(
            np.linalg.norm(ref), 1e-30)
        print("out%d: %s %s rel_l2=%.3g" % (i, "OK" if err <= 1e-5 else
                                             "MISMATCH", out.dtype, err))


if __name__ == "__main__":
    if sys.argv[1] == "gen":
        gen(sys.argv[2], sys.argv[3])
    else:
        check(sys.argv[2])
