"""The FFN kernels of convert-moe-to-gpu (moe.experts, moe.shared_experts) on
the SIMT interpreter of test/lib/kernel_interp.py, against numpy.

    ffn_interp.py MOE_OPT

Each case builds one op, lowers it with MOE_OPT --convert-moe-to-gpu, runs
its kernels over the grids the host code would launch and compares every
written row with a float64 reference of the same rounded inputs (for f16 and
bf16 the hidden rows are rounded to the element type too, as the kernels
do). Rows that must not be written (padding rows, rows of other experts)
hold a sentinel that must survive; the output of shared experts starts as
NaN, so every element must be written. Prints one line per case and exits
non-zero if any fails.
"""

import math
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "lib"))
import kernel_interp as ki  # noqa: E402
import moe_reference as ref  # noqa: E402

MOE_OPT = sys.argv[1] if len(sys.argv) > 1 else "moe-opt"
# Relative max error per row: f32 accumulation, and the rounding of the
# result (f16 2^-11, bf16 2^-8) and of the hidden rows.
TOL = {"f64": 1e-12, "f32": 1e-5, "f16": 2e-3, "bf16": 2e-2}
# numpy types of the buffers (bf16 values are held as float64, rounded).
NPDT = {"f16": np.float16, "f32": np.float32, "f64": np.float64, "bf16": np.float64}


def lower(mlir, module=False):
    """The kernels of `mlir` after convert-moe-to-gpu, or the whole module
    (generic form) with `module`."""
    out = subprocess.run([MOE_OPT, "--convert-moe-to-gpu", "--canonicalize", "--cse",
                          "--mlir-print-op-generic"], input=mlir, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    if module:
        return out.stdout
    return ki.find_kernels(ki.parse_module(out.stdout))


def rounder(dtype):
    if dtype == "bf16":
        return np.vectorize(ki.to_bf16, otypes=[np.float64])
    return lambda a: np.asarray(a).astype(NPDT[dtype]).astype(np.float64)


def buf(a, dtype, base=256):
    if dtype == "bf16":
        m = ki.buffer(np.asarray(a, np.float64), "bf16")
    else:
        m = ki.buffer(np.asarray(a).astype(NPDT[dtype]))
    m.base = base
    return m


def fresh(shape, dtype, fill):
    return ki.Memref(np.full(shape, fill, dtype=NPDT[dtype]), dtype)


def launch(dtype, narrow=False, large=False):
    """Rows and columns per tile and threads per block of the GEMM kernels:
    SIMT (f32 128 x 64, f64 64 x 64; the narrow variants f32 32 x 128, f64
    32 x 64) or tensor cores (64 x 64; the large variant 128 x 128)."""
    if large:
        return (128, 128, (256, 1, 1))
    if narrow:
        return {"f32": (32, 128, (256, 1, 1)), "f64": (32, 64, (256, 1, 1))}[dtype]
    return {"f32": (128, 64, (256, 1, 1)), "f64": (64, 64, (256, 1, 1))}.get(
        dtype, (64, 64, (128, 1, 1)))


def hidden_ref(x, gate, up, gb, ub, expert):
    ex = dict(ref.EXPERT_DEFAULTS, **expert)
    u = x @ up + (0.0 if ub is None else ub)
    if ex["kind"] != "gated":
        return ref._activation(u, ex["activation"])
    g = x @ gate + (0.0 if gb is None else gb)
    if ex["limit"] > 0.0:
        g = np.minimum(g, ex["limit"])
        u = np.clip(u, -ex["limit"], ex["limit"])
    return ref._activation(g, ex["activation"], ex["alpha"]) * (u + ex["beta"])


def check(worst, dtype, rows):
    ok = worst <= TOL[dtype]
    return ok, "%d rows, max relative error %.2e %s %.0e" % (rows, worst, "<=" if ok else ">",
                                                             TOL[dtype])


def attr(expert):
    text = "%s, %s" % (expert["kind"], expert["activation"])
    if "limit" in expert:
        text += ", limit = %r, alpha = %r, beta = %r" % (expert["limit"], expert["alpha"],
                                                          expert["beta"])
    return text


def host_inputs(dtype, arrays):
    """Host function arguments: f16 as float16, f32 as float32, f64 and bf16
    as float64 (bf16 rounded by kernel_interp.buffer); integers as they
    are."""
    return [a if a.dtype.kind == "i" else a.astype(NPDT[dtype]) for a in arrays]


def launched(log, kernel):
    """Whether the host launched `kernel` with a non-empty grid."""
    return any(k == kernel and 0 not in grid for k, grid, _ in log)


def experts(dtype, H, F, counts, expert, biases=False, first=0, total=None, pad=0.3,
            base=256, seed=0, host=False, weight_base=256, narrow=False, large=False):
    """moe.experts over experts [first, first + len(counts)) of `total`, with
    counts[e] rows each (a fraction `pad` of them padding, token -1). The
    tiled kernels (the `_narrow` SIMT ones with `narrow`, the `_large`
    tensor-core ones with `large`) are launched directly; with `host`, the host function runs and picks the path itself
    (`host` names the kernel it must launch: the skinny GEMMs for few rows
    per expert, the narrow SIMT tiles for a few dozen), with the up weights
    at address `weight_base`."""
    rng = np.random.default_rng(seed)
    rnd = rounder(dtype)
    E = len(counts)
    total = total or E
    rows = [int(rng.integers(0, 5)) for _ in range(total)]
    rows[first:first + E] = counts
    offsets = np.zeros(total + 1, np.int32)
    offsets[1:] = np.cumsum(rows)
    R = int(offsets[-1])
    T = max(1, R // 2 + 1)
    tokens = rng.integers(0, T, R).astype(np.int32)
    tokens[rng.random(R) < pad] = -1
    gated = expert["kind"] == "gated"
    x = rnd(rng.standard_normal((T, H)))
    up = rnd(rng.standard_normal((E, H, F)) / math.sqrt(H))
    gate = rnd(rng.standard_normal((E, H, F)) / math.sqrt(H)) if gated else None
    down = rnd(rng.standard_normal((E, F, H)) / math.sqrt(F))
    ub = rnd(rng.standard_normal((E, F))) if biases else None
    gb = rnd(rng.standard_normal((E, F))) if biases and gated else None
    db = rnd(rng.standard_normal((E, H))) if biases else None

    t = lambda *shape: "tensor<%sx%s>" % ("x".join(map(str, shape)), dtype)
    act = "tensor<?x%dx%s>" % (H, dtype)
    operands = []
    if gated:
        operands.append("gate(%%wg : %s)" % t(E, H, F))
    operands += ["up(%%wu : %s)" % t(E, H, F), "down(%%wd : %s)" % t(E, F, H)]
    if biases:
        if gated:
            operands.append("gate_bias(%%bg : %s)" % t(E, F))
        operands += ["up_bias(%%bu : %s)" % t(E, F), "down_bias(%%bd : %s)" % t(E, H)]
    mlir = """func.func @f(%%x: %(act)s, %%tok: tensor<?xi32>, %%off: tensor<%(n)dxi32>, %%dest: %(act)s,
    %%wg: %(w)s, %%wu: %(w)s, %%wd: %(d)s, %%bg: %(b)s, %%bu: %(b)s, %%bd: %(bd)s) -> %(act)s {
  %%y = moe.experts %%x, %%tok, %%off into %%dest %(ops)s
      {expert = #moe.expert<%(ex)s>, first_expert = %(first)d}
      : (%(act)s, tensor<?xi32>, tensor<%(n)dxi32>, %(act)s) -> %(act)s
  return %%y : %(act)s
}
""" % dict(act=act, n=total + 1, w=t(E, H, F), d=t(E, F, H), b=t(E, F), bd=t(E, H),
           ops=" ".join(operands), ex=attr(expert), first=first)
    kernels = lower(mlir)
    mma = dtype in ("f16", "bf16")
    tile_m, tile_n, block = launch(dtype, narrow, large)
    sentinel = 1234.0
    if host:
        zeros = lambda *shape: np.zeros(shape)
        log = []
        y = ki.run_host(
            ki.parse_module(lower(mlir, module=True)),
            host_inputs(dtype, [x, tokens, offsets, np.full((R, H), sentinel),
                                gate if gated else zeros(E, H, F), up, down,
                                gb if gb is not None else zeros(E, F),
                                ub if biases else zeros(E, F), db if biases else zeros(E, H)]),
            log=log, bases={5: weight_base})[0].astype(np.float64)
        want = host if isinstance(host, str) else "moe_experts_up_skinny"
        if not launched(log, want):
            return False, "the host did not launch %s" % want
        # dest (the sentinel) went through the element type.
        return compare(y, dtype, x, tokens, offsets, first, E, total, gate, up, down, gb, ub,
                       db, expert, float(rnd(sentinel)), mma)
    tok_b, off_b = ki.buffer(tokens), ki.buffer(offsets)
    hidden = fresh((R, F), dtype, np.nan)
    out = fresh((R, H), dtype, sentinel)
    args = [tok_b, off_b, buf(x, dtype, base)] + ([buf(gate, dtype)] if gated else [])
    args += [buf(up, dtype)] + ([buf(gb, dtype)] if gb is not None else [])
    args += ([buf(ub, dtype)] if biases else []) + [hidden]
    grid_x = -(-R // tile_m) + E
    # The host launches the cp.async kernels only on 16-byte-aligned operands.
    def kernel(name):
        if narrow:
            return kernels[name + "_narrow"]
        if large:
            return kernels[name + "_large"]
        unaligned = name + "_unaligned"
        return kernels[unaligned if base % 16 and unaligned in kernels else name]
    ki.Interpreter(kernel("moe_experts_up")).run((grid_x, -(-F // tile_n)), block, args)
    args = [tok_b, off_b, hidden, buf(down, dtype, base)]
    args += ([buf(db, dtype)] if biases else []) + [out]
    ki.Interpreter(kernel("moe_experts_down")).run((grid_x, -(-H // tile_n)), block, args)
    return compare(out.array.astype(np.float64), dtype, x, tokens, offsets, first, E, total,
                   gate, up, down, gb, ub, db, expert, sentinel, mma)


def compare(y, dtype, x, tokens, offsets, first, E, total, gate, up, down, gb, ub, db, expert,
            sentinel, mma):
    """Checks the rows of moe.experts' result `y` (see experts)."""
    rnd = rounder(dtype)
    worst, checked = 0.0, 0
    for e in range(total):
        for row in range(offsets[e], offsets[e + 1]):
            mine = first <= e < first + E
            if not mine or tokens[row] < 0:
                if not (y[row] == sentinel).all():
                    return False, "row %d (expert %d, token %d) was written" % (row, e,
                                                                             tokens[row])
                continue
            le = e - first
            pick = lambda a: None if a is None else a[le]
            h = hidden_ref(x[tokens[row]][None], pick(gate), up[le], pick(gb), pick(ub), expert)
            if mma:
                h = rnd(h)
            r = (h @ down[le] + (0.0 if db is None else db[le]))[0]
            worst = max(worst, np.abs(y[row] - r).max() / max(np.abs(r).max(), 1e-6))
            checked += 1
    return check(worst, dtype, checked)


def shared(dtype, H, F, T, expert, scale=True, base=256, seed=0, host=False, narrow=False,
           large=False):
    """moe.shared_experts (dense, 2-d weights) with an optional row scale;
    with `host`, the host function runs and picks the path (see experts)."""
    rng = np.random.default_rng(seed)
    rnd = rounder(dtype)
    gated = expert["kind"] == "gated"
    x = rnd(rng.standard_normal((T, H)))
    up = rnd(rng.standard_normal((H, F)) / math.sqrt(H))
    gate = rnd(rng.standard_normal((H, F)) / math.sqrt(H)) if gated else None
    down = rnd(rng.standard_normal((F, H)) / math.sqrt(F))
    sc = rnd(rng.standard_normal(H) / math.sqrt(H)) if scale else None
    t = lambda *shape: "tensor<%sx%s>" % ("x".join(map(str, shape)), dtype)
    act = "tensor<?x%dx%s>" % (H, dtype)
    operands = (["gate(%%sg : %s)" % t(H, F)] if gated else []) + [
        "up(%%su : %s)" % t(H, F), "down(%%sd : %s)" % t(F, H)]
    if scale:
        operands.append("scale(%%s : %s)" % t(H))
    mlir = """func.func @f(%%x: %(act)s, %%sg: %(w)s, %%su: %(w)s, %%sd: %(d)s, %%s: %(s)s) -> %(act)s {
  %%y = moe.shared_experts %%x %(ops)s {expert = #moe.expert<%(ex)s>} : %(act)s -> %(act)s
  return %%y : %(act)s
}
""" % dict(act=act, w=t(H, F), d=t(F, H), s=t(H), ops=" ".join(operands), ex=attr(expert))
    kernels = lower(mlir)
    mma = dtype in ("f16", "bf16")
    tile_m, tile_n, block = launch(dtype, narrow, large)
    suffix = "_narrow" if narrow else "_large" if large else ""
    if host:
        log = []
        zeros = lambda *shape: np.zeros(shape)
        y = ki.run_host(ki.parse_module(lower(mlir, module=True)),
                        host_inputs(dtype, [x, gate if gated else zeros(H, F), up, down,
                                            sc if scale else zeros(H)]),
                        log=log)[0]
        want = host if isinstance(host, str) else "moe_shared_up_skinny"
        if T and not launched(log, want):
            return False, "the host did not launch %s" % want
        return compare_shared(y.astype(np.float64), dtype, x, gate, up, down, sc, expert, mma)
    xb = buf(x, dtype, base)
    hidden = fresh((T, F), dtype, np.nan)
    out = fresh((T, H), dtype, np.nan)
    row_scale = None
    if scale:
        ct = "f64" if dtype == "f64" else "f32"
        row_scale = ki.Memref(np.full((T,), np.nan, NPDT[ct]), ct)
        if T:
            ki.Interpreter(kernels["moe_shared_scale"]).run(
                (-(-T // 128), 1), (128, 1, 1), [xb, buf(sc, dtype), row_scale])
    if T:
        args = [xb] + ([buf(gate, dtype)] if gated else []) + [buf(up, dtype), hidden]
        ki.Interpreter(kernels["moe_shared_up" + suffix]).run((-(-T // tile_m), -(-F // tile_n)), block,
                                                     args)
        args = [hidden, buf(down, dtype, base)] + ([row_scale] if scale else []) + [out]
        ki.Interpreter(kernels["moe_shared_down" + suffix]).run((-(-T // tile_m), -(-H // tile_n)),
                                                       block, args)
    return compare_shared(out.array.astype(np.float64), dtype, x, gate, up, down, sc, expert,
                          mma)


def compare_shared(y, dtype, x, gate, up, down, sc, expert, mma):
    """Checks moe.shared_experts' result `y` (see shared)."""
    rnd = rounder(dtype)
    T = x.shape[0]
    h = hidden_ref(x, gate, up, None, None, expert)
    if mma:
        h = rnd(h)
    r = h @ down
    if sc is not None:
        r = r / (1.0 + np.exp(-(x @ sc)))[:, None]
    if np.isnan(y).any():
        return False, "an output element was not written"
    worst = max([np.abs(y[i] - r[i]).max() / max(np.abs(r[i]).max(), 1e-6) for i in range(T)],
                default=0.0)
    return check(worst, dtype, T)


SWIGLU = dict(kind="gated", activation="silu")
CLAMPED = dict(kind="gated", activation="silu", limit=7.0, alpha=1.702, beta=1.0)
CASES = [
    # The SIMT kernel (f32 128 x 64 tiles, f64 64 x 64). Odd sizes: elementwise
    # staging loads only; partial row, column and K tiles.
    ("f32 experts, clamped SwiGLU, biases",
     lambda: experts("f32", 33, 70, [17, 0, 20], CLAMPED, biases=True)),
    ("f64 experts, clamped SwiGLU, biases",
     lambda: experts("f64", 33, 70, [17, 0, 20], CLAMPED, biases=True, seed=14)),
    # Multiples of 4: 16-byte vector loads of A and B; two row tiles of one
    # expert; one K step and a partial one (F = 20).
    ("f32 experts, H 64 F 20, 150 rows",
     lambda: experts("f32", 64, 20, [150, 3], SWIGLU, biases=True, seed=15)),
    ("f64 experts, GELU FFN, H 34 F 22, 70 rows",
     lambda: experts("f64", 34, 22, [70, 0, 5], dict(kind="ffn", activation="gelu"),
                     seed=16)),
    # A vector-friendly size but a misaligned input (elementwise A loads).
    ("f32 experts, misaligned input and down weights",
     lambda: experts("f32", 32, 24, [33, 20], SWIGLU, base=260, seed=17)),
    ("f32 experts 1-2 of 4, ReLU, H 17 F 9",
     lambda: experts("f32", 17, 9, [3, 130], dict(kind="ffn", activation="relu"), first=1,
                     total=4, pad=0.0, seed=18)),
    ("f32 experts, no rows", lambda: experts("f32", 16, 8, [0, 0], SWIGLU, seed=19)),
    ("f32 shared experts, row scale", lambda: shared("f32", 24, 40, 19, SWIGLU)),
    ("f64 shared experts, GELU tanh FFN, row scale",
     lambda: shared("f64", 20, 12, 70, dict(kind="ffn", activation="gelu_tanh"), seed=20)),
    ("f32 shared experts, 130 tokens",
     lambda: shared("f32", 16, 12, 130, SWIGLU, scale=False, seed=21)),
    ("f32 shared experts, no tokens", lambda: shared("f32", 16, 12, 0, SWIGLU)),
    # Sizes that are not multiples of 8: elementwise staging loads only;
    # partial row, column and K tiles.
    ("f16 experts, H 33 F 70, biases",
     lambda: experts("f16", 33, 70, [17, 0, 20], CLAMPED, biases=True)),
    ("bf16 experts, H 33 F 70, biases",
     lambda: experts("bf16", 33, 70, [17, 0, 20], CLAMPED, biases=True, seed=1)),
    # Multiples of 8: 16-byte vector loads; several row tiles per expert.
    ("f16 experts, H 64 F 128, 134 rows",
     lambda: experts("f16", 64, 128, [70, 64], SWIGLU, seed=3)),
    ("bf16 experts, GELU FFN, H 72 F 40, biases",
     lambda: experts("bf16", 72, 40, [65, 1], dict(kind="ffn", activation="gelu"),
                     biases=True, seed=4)),
    # Vector loads for one GEMM's A and the other's B only (F = 22).
    ("f16 experts, H 64 F 22",
     lambda: experts("f16", 64, 22, [30, 0, 70], SWIGLU, biases=True, seed=7)),
    # A 16-byte-aligned size but a buffer that is not: the elementwise loads.
    ("bf16 experts, misaligned input and down weights",
     lambda: experts("bf16", 64, 128, [33, 70], SWIGLU, base=258, seed=8)),
    # A slice of the experts (first_expert), tiny sizes, no padding rows.
    ("f16 experts 1-2 of 4, ReLU, H 17 F 9",
     lambda: experts("f16", 17, 9, [3, 130], dict(kind="ffn", activation="relu"), first=1,
                     total=4, pad=0.0, seed=5)),
    ("f16 experts, no rows", lambda: experts("f16", 64, 128, [0, 0], SWIGLU, seed=9)),
    ("f16 shared experts, row scale", lambda: shared("f16", 24, 40, 19, SWIGLU)),
    ("bf16 shared experts, GELU tanh FFN, row scale",
     lambda: shared("bf16", 64, 72, 70, dict(kind="ffn", activation="gelu_tanh"), seed=2)),
    ("f16 shared experts, 130 tokens", lambda: shared("f16", 64, 72, 130, SWIGLU, scale=False)),
    ("f16 shared experts, no tokens", lambda: shared("f16", 64, 72, 0, SWIGLU)),
    # The skinny GEMMs (few rows per expert, picked by the host): K split over
    # blocks (H 300 > 256), 16-byte and narrower vectors, a misaligned weight
    # buffer (element loads), a slice of the experts, f32 and the rounding of
    # f16/bf16 hidden rows, dense shared experts with a row scale.
    ("f16 skinny experts, clamped SwiGLU, biases, H 300 F 64",
     lambda: experts("f16", 300, 64, [3, 0, 1, 5], CLAMPED, biases=True, seed=10, host=True)),
    ("bf16 skinny experts, misaligned up weights, H 40 F 36",
     lambda: experts("bf16", 40, 36, [2, 6], SWIGLU, seed=11, host=True, weight_base=258)),
    ("f32 skinny experts 1-2 of 4, ReLU, H 20 F 300",
     lambda: experts("f32", 20, 300, [1, 4], dict(kind="ffn", activation="relu"), first=1,
                     total=4, biases=True, seed=12, host=True)),
    ("f16 skinny shared experts, row scale, H 24 F 40",
     lambda: shared("f16", 24, 40, 6, SWIGLU, seed=13, host=True)),
    # The narrow SIMT tiles (32 rows): partial row, column and K tiles with
    # element loads; vector loads, two row tiles of one expert and a partial
    # K step (K 40 = 32 + 8); a misaligned input; f64; dense shared experts.
    ("f32 narrow experts, clamped SwiGLU, biases, H 33 F 70",
     lambda: experts("f32", 33, 70, [17, 0, 20], CLAMPED, biases=True, seed=22, narrow=True)),
    ("f32 narrow experts, H 40 F 136, 45 rows",
     lambda: experts("f32", 40, 136, [45, 3], SWIGLU, biases=True, seed=23, narrow=True)),
    ("f32 narrow experts, misaligned input and down weights",
     lambda: experts("f32", 32, 24, [33, 20], SWIGLU, base=260, seed=24, narrow=True)),
    ("f64 narrow experts, GELU FFN, H 34 F 22, 70 rows",
     lambda: experts("f64", 34, 22, [70, 0, 5], dict(kind="ffn", activation="gelu"),
                     seed=25, narrow=True)),
    ("f32 narrow shared experts, row scale",
     lambda: shared("f32", 24, 40, 45, SWIGLU, seed=26, narrow=True)),
    ("f64 narrow shared experts, no row scale",
     lambda: shared("f64", 20, 12, 33, SWIGLU, scale=False, seed=27, narrow=True)),
    # The host picks the narrow tiles above 8 and up to 32 rows per expert
    # (dense: up to 256 rows), the wide ones beyond.
    ("f32 experts through the host: narrow tiles, 2 x 20 rows",
     lambda: experts("f32", 20, 36, [20, 20], SWIGLU, pad=0.0, seed=28,
                     host="moe_experts_up_narrow")),
    ("f32 experts through the host: wide tiles, 2 x 40 rows",
     lambda: experts("f32", 20, 36, [40, 40], SWIGLU, pad=0.0, seed=29,
                     host="moe_experts_up")),
    ("f32 shared experts through the host: narrow tiles, 40 rows",
     lambda: shared("f32", 16, 24, 40, SWIGLU, seed=30, host="moe_shared_up_narrow")),
    # The large tensor-core tiles (128 x 128, 8 warps, K steps of 16 in 4
    # stages; the host takes them for GEMMs without a gate): two row tiles of
    # one expert, a partial column tile (136 = 128 + 8) and a partial K step
    # (72 = 4 x 16 + 8); both GEMMs of a GELU FFN; the down GEMM of SwiGLU
    # experts; dense shared experts.
    ("f16 large experts, GELU FFN, biases, H 72 F 136",
     lambda: experts("f16", 72, 136, [130, 0, 20], dict(kind="ffn", activation="gelu"),
                     biases=True, seed=31, large=True)),
    ("bf16 large experts, ReLU FFN, H 40 F 64",
     lambda: experts("bf16", 40, 64, [70, 150], dict(kind="ffn", activation="relu"),
                     seed=32, large=True)),
    ("f16 large shared experts, GELU FFN, row scale, H 24 F 136",
     lambda: shared("f16", 24, 136, 140, dict(kind="ffn", activation="gelu"), seed=33,
                    large=True)),
    # The host picks them from 128 rows per expert on average (dense: 1024).
    ("f16 experts through the host: large tiles, 2 x 130 rows",
     lambda: experts("f16", 16, 24, [130, 130], SWIGLU, pad=0.0, seed=34,
                     host="moe_experts_down_large")),
    ("f16 FFN experts through the host: large tiles, 2 x 130 rows",
     lambda: experts("f16", 16, 24, [130, 130], dict(kind="ffn", activation="gelu"), pad=0.0,
                     seed=36, host="moe_experts_up_large")),
    ("f16 experts through the host: small tiles, 2 x 120 rows",
     lambda: experts("f16", 16, 24, [120, 120], SWIGLU, pad=0.0, seed=35,
                     host="moe_experts_down")),
]


def run_cases(cases, label):
    """Runs (name, case) pairs, a PASS/FAIL line each; exits non-zero if any
    failed."""
    failed = 0
    for name, case in cases:
        try:
            ok, result = case()
        except ki.KernelError as e:
            ok, result = False, "kernel error: %s" % e
        failed += not ok
        print("%s %s: %s" % ("PASS" if ok else "FAIL", name, result), flush=True)
    print("%s: %d of %d cases failed" % (label, failed, len(cases)))
    sys.exit(1 if failed else 0)


def main():
    run_cases(CASES, "ffn_interp")


if __name__ == "__main__":
    main()
