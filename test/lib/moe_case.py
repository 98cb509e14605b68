#!/usr/bin/env python3
"""Numeric test cases for moe.layer: writes a model and checks a result.

    moe_case.py gen DIR CONFIG [--tokens T] [--static] [--weights-as-inputs]
                               [--dtype f16|bf16|f32|f64] [--seed S]
                               [--expert-rows N0,N1,...] [--weights-dtype f16|bf16]
    moe_case.py check DIR [--tol 1e-5] [--f16-tol 1e-2] [--bf16-tol 1e-2]
                          [--once-rounded]

`gen` draws fresh random weights and inputs (the seed is printed and saved;
pass --seed to replay), and writes DIR/model.mlir (a func.func @main with one
moe.layer; weights are dense constants unless --weights-as-inputs), DIR/in0.npy
[, in1.npy, ...] (the inputs in order) and DIR/expected.npy, the float64
reference of moe_reference.layer. `check` compares DIR/out.npy with it
(relative L2 error) and exits non-zero above the tolerance: --tol for f32 and
f64 cases, --f16-tol and --bf16-tol for 16-bit ones. A 16-bit case draws its
inputs and weights in its type (bf16 .npy inputs and outputs are the bits as
uint16, as moe-run reads and writes them) and its reference is the float64
result of those rounded values. The GPU computes in f32 but rounds the routing
weights, the hidden rows of the experts (tensor-core kernels) and every result
to 16 bits, hence the larger tolerances. The CPU rounds a 16-bit moe.layer
once, its result: --once-rounded checks that as well, the output against the
float64 result rounded to the case's type (round to nearest even), within a
quarter of the type's unit roundoff u (2^-11 for f16, 2^-8 for bf16; a
rounding of each op's result instead is about u). --weights-dtype stores the
expert weight matrices (routed and shared) in f16 or bf16 whatever --dtype
is; the reference computes with the stored values, so the tolerance is
--dtype's.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference  # noqa: E402

# Small versions of the shapes and of the routing/expert variants.
CONFIGS = {
    # Mixtral: S1 shape family (H1024 F3584 E8 k2), scaled down.
    "mixtral": dict(H=64, F=224, E=8, routing=dict(k=2, renormalize=True),
                    expert=dict(kind="gated", activation="silu")),
    # S3's odd widths (F = 352, 2 shared experts Fs = 704) in 32-column
    # panels: tasks of 176 columns start inside a panel, tiles take the
    # columns left over.
    "panels": dict(H=96, F=352, E=8, Fs=704, routing=dict(k=2),
                   expert=dict(kind="gated", activation="silu")),
    # The grouped expert GEMMs in several column blocks of both phases (F =
    # 640: 2 blocks of 320; H = 384: 2 blocks of 192, in 32-column panels),
    # with biases sliced per block.
    "grouped-blocks": dict(H=384, F=640, E=4, biases=True,
                           routing=dict(k=2, renormalize=True),
                           expert=dict(kind="gated", activation="silu")),
    # Widths with no divisor that is a whole vector (H = 3, F = 5): one
    # column block per GEMM, scalar tails.
    "tiny-odd": dict(H=3, F=5, E=3, routing=dict(k=2, renormalize=True),
                     expert=dict(kind="gated", activation="silu")),
    # OLMoE / S2 family (H1024 F512 E64 k8): no renormalization.
    "olmoe": dict(H=64, F=32, E=64, routing=dict(k=8),
                  expert=dict(kind="gated", activation="silu")),
    # DeepSeekMoE / S3 family (E64 k6 + 2 shared experts, concatenated).
    "deepseek-moe": dict(H=64, F=22, E=64, Fs=44, routing=dict(k=6),
                         expert=dict(kind="gated", activation="silu")),
    # DeepSeek-V3: sigmoid, selection bias, group-limited, renormalize, scale.
    "deepseek-v3": dict(H=48, F=16, E=32, Fs=16, bias=True,
                        routing=dict(k=4, scoring="sigmoid", renormalize=True,
                                     scale=2.5, n_group=8, topk_group=3),
                        expert=dict(kind="gated", activation="silu")),
    # Qwen-MoE: shared expert scaled by sigmoid(x . ws); GeGLU (tanh) body.
    "qwen-geglu": dict(H=32, F=24, E=16, Fs=40, shared_scale=True,
                       routing=dict(k=4, renormalize=True),
                       expert=dict(kind="gated", activation="gelu_tanh")),
    # GPT-OSS: softmax after top-k, clamped SwiGLU with biases.
    "gpt-oss": dict(H=32, F=16, E=8, biases=True, big_weights=True,
                    routing=dict(k=2, scoring="topk_softmax"),
                    expert=dict(kind="gated", activation="silu", limit=7.0,
                                alpha=1.702, beta=1.0)),
    # Switch: top-1, ReLU FFN with biases, capacity with token dropping.
    "switch-capacity": dict(H=32, F=64, E=4, biases=True,
                            routing=dict(k=1, capacity_factor=1.0),
                            expert=dict(kind="ffn", activation="relu")),
    # A fixed capacity of 3 assignments per expert, whatever T (k = 2).
    "capacity-fixed": dict(H=32, F=24, E=4, routing=dict(k=2, capacity=3),
                           expert=dict(kind="gated", activation="silu")),
    # Capacity with k = 2 (assignments kept in token order).
    "capacity-k2": dict(H=32, F=24, E=4, routing=dict(k=2, capacity_factor=0.75),
                        expert=dict(kind="gated", activation="silu")),
    # GELU (erf) FFN, top-p dynamic k with temperature.
    "top-p": dict(H=32, F=48, E=8, routing=dict(k=4, temperature=0.7, threshold=0.6,
                                                  renormalize=True),
                  expert=dict(kind="ffn", activation="gelu")),
    # More choices than a warp has lanes (the GPU routing kernel's top-k then
    # writes each choice as it makes it and reads them back).
    "many-k": dict(H=32, F=8, E=48, routing=dict(k=40, renormalize=True),
                   expert=dict(kind="gated", activation="silu")),
    # Wide enough that the skinny (decode) GEMMs split K across blocks
    # (K > 256): SwiGLU; clamped SwiGLU with biases and an F that is not a
    # multiple of 4 (narrower vectors, a partial last strip); shared experts
    # with a sigmoid scale (dense skinny GEMMs, K = 600 for down).
    "mixtral-wide": dict(H=520, F=300, E=4, routing=dict(k=2, renormalize=True),
                         expert=dict(kind="gated", activation="silu")),
    "gpt-oss-wide": dict(H=522, F=290, E=4, biases=True, big_weights=True,
                         routing=dict(k=2, scoring="topk_softmax"),
                         expert=dict(kind="gated", activation="silu", limit=7.0,
                                     alpha=1.702, beta=1.0)),
    "qwen-wide": dict(H=300, F=64, E=8, Fs=600, shared_scale=True,
                      routing=dict(k=4, renormalize=True),
                      expert=dict(kind="gated", activation="gelu_tanh")),
    # Expert choice (Zhou et al. 2022): each expert takes ceil(2 T / 8) tokens.
    "expert-choice": dict(H=32, F=24, E=8, routing=dict(k=8, selection="expert_choice",
                                                         capacity_factor=2.0),
                          expert=dict(kind="gated", activation="silu")),
    # Expert choice with a capacity factor far above T * E: every expert takes
    # every token (C is clamped to T before any integer conversion).
    "expert-choice-all": dict(H=16, F=8, E=4, routing=dict(k=4, selection="expert_choice",
                                                           capacity_factor=1e30),
                              expert=dict(kind="ffn", activation="relu")),
    # Expert choice with an explicit capacity, sigmoid scores, a selection
    # bias, a scale and a shared expert.
    "expert-choice-capacity": dict(H=32, F=16, E=6, Fs=16, bias=True,
                                   routing=dict(k=6, selection="expert_choice", capacity=3,
                                                scoring="sigmoid", scale=1.5),
                                   expert=dict(kind="ffn", activation="gelu")),
}

MLIR_DTYPE = {"f16": ("f16", "<f2"), "bf16": ("bf16", "<u2"), "f32": ("f32", "<f4"),
              "f64": ("f64", "<f8")}
# Storage types of the expert weight matrices (--weights-dtype).
WEIGHT_DTYPES = ("f16", "bf16")
# The unit roundoff of the 16-bit types (2^-p for p bits of precision).
UNIT_ROUNDOFF = {"f16": 2.0 ** -11, "bf16": 2.0 ** -8}
MATRICES = ("gate", "up", "down", "shared_gate", "shared_up", "shared_down")


def to_bf16_bits(a):
    """The bf16 bit patterns (uint16) of `a`, rounded to nearest even."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def from_bf16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def store_weights(a, dtype):
    """`a` stored as `dtype` ("f32", "bf16" or "f16"): (the stored bytes' array,
    its values as floats)."""
    if dtype == "f32":
        stored = np.asarray(a, dtype=np.float32)
        return stored, stored
    if dtype == "bf16":
        bits = to_bf16_bits(a)
        return bits, from_bf16_bits(bits)
    stored = a.astype(np.float16)
    return stored, stored


def tensor_type(shape, elt):
    return "tensor<%s>" % "x".join([("?" if d is None else str(d)) for d in shape] + [elt])


def format_float(v):
    r = repr(float(v))
    # MLIR float literals need a '.' before an exponent (1.0e+30, not 1e+30).
    return r.replace("e", ".0e") if "e" in r and "." not in r else r


def steer_tokens(rng, x, router, k, counts):
    """Inputs that give expert e exactly counts[e] rows (k choices per token):
    the assignments, expert by expert, are dealt to the tokens in k rounds
    (token t takes slots t, t + T, ...), and token t's input is its experts'
    router columns scaled to logits 8, 6, 4... (each column's own share
    dominates: random columns in H dimensions are nearly orthogonal) plus
    small random noise, so the top-k picks them whatever the rounding."""
    T, H = x.shape
    slots = [e for e, n in enumerate(counts) for _ in range(n)]
    if len(counts) != router.shape[1] or len(slots) != T * k or max(counts) > T:
        sys.exit("moe_case: --expert-rows needs %d counts of at most %d summing to %d"
                 % (router.shape[1], T, T * k))
    r = router.astype(np.float64)
    out = 0.05 * rng.standard_normal((T, H))
    for t in range(T):
        for j in range(k):
            col = r[:, slots[t + j * T]]
            out[t] += (8.0 - 2.0 * j) * col / (col @ col)
    top = np.argsort(-(out @ r), axis=1)[:, :k]
    if np.bincount(top.ravel(), minlength=len(counts)).tolist() != list(counts):
        sys.exit("moe_case: --expert-rows: the steered inputs do not route as asked")
    return out


def gen(args):
    cfg = CONFIGS[args.config]
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    elt, npdt = MLIR_DTYPE[args.dtype]
    H, F, E, T = cfg["H"], cfg["F"], cfg["E"], args.tokens
    routing, expert = cfg["routing"], cfg["expert"]
    gated = expert["kind"] == "gated"
    wscale = 4.0 if cfg.get("big_weights") else 1.0

    def values(a):
        """`a` rounded to the case's type (bf16: float32 holding bf16 values)."""
        return store_weights(a, "bf16")[1] if elt == "bf16" else a.astype(npdt)

    def stored_bytes(a):
        return to_bf16_bits(a) if elt == "bf16" and a.dtype == np.float32 else a

    def rand(*shape, fan_in=None):
        a = rng.standard_normal(shape)
        if fan_in:
            a = a * wscale / np.sqrt(fan_in)
        return values(a)

    w = {"router": rand(H, E, fan_in=H)}
    if cfg.get("bias"):
        w["selection_bias"] = (0.1 * rng.standard_normal(E)).astype(npdt)
    if gated:
        w["gate"] = rand(E, H, F, fan_in=H)
    w["up"] = rand(E, H, F, fan_in=H)
    w["down"] = rand(E, F, H, fan_in=F)
    if cfg.get("biases"):
        if gated:
            w["gate_bias"] = rand(E, F)
        w["up_bias"] = rand(E, F)
        w["down_bias"] = rand(E, H)
    if cfg.get("Fs"):
        Fs = cfg["Fs"]
        if gated:
            w["shared_gate"] = rand(H, Fs, fan_in=H)
        w["shared_up"] = rand(H, Fs, fan_in=H)
        w["shared_down"] = rand(Fs, H, fan_in=Fs)
        if cfg.get("shared_scale"):
            w["shared_scale"] = rand(H, fan_in=H)
    # Weight matrices in a narrower storage type: the layer computes with the
    # stored (rounded) values, and so does the reference.
    stored = {}
    if args.weights_dtype:
        for name in MATRICES:
            if name in w:
                stored[name], w[name] = store_weights(w[name], args.weights_dtype)
    welt = {n: (args.weights_dtype if n in stored else elt) for n in w}
    x = values(rng.standard_normal((T, H)))
    if args.expert_rows:
        x = values(steer_tokens(rng, x, w["router"], routing["k"], args.expert_rows))

    os.makedirs(args.dir, exist_ok=True)
    token_dim = T if args.static else None
    act = tensor_type([token_dim, H], elt)
    order = ["selection_bias", "gate", "up", "down", "gate_bias", "up_bias", "down_bias",
             "shared_gate", "shared_up", "shared_down", "shared_scale"]
    params = ["%%x: %s {moe.name = \"x\"}" % act]
    inputs = [stored_bytes(x)]
    body = []
    if args.weights_as_inputs:
        for name in ["router"] + [n for n in order if n in w]:
            params.append("%%%s: %s {moe.name = \"%s\"}"
                          % (name, tensor_type(w[name].shape, welt[name]), name))
            inputs.append(stored.get(name, stored_bytes(w[name])))
    else:
        for name in ["router"] + [n for n in order if n in w]:
            raw = np.ascontiguousarray(stored.get(name, stored_bytes(w[name])))
            raw = raw.tobytes().hex().upper()
            body.append("  %%%s = arith.constant dense<\"0x%s\"> : %s"
                        % (name, raw, tensor_type(w[name].shape, welt[name])))
    operands = "".join(" %s(%%%s : %s)" % (n, n, tensor_type(w[n].shape, welt[n]))
                       for n in order if n in w)
    rparams = ["k = %d" % routing["k"]]
    for key in ["scoring", "renormalize", "temperature", "scale", "n_group", "topk_group",
                "capacity_factor", "threshold", "selection", "capacity"]:
        if key in routing:
            v = routing[key]
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, float):
                v = format_float(v)
            rparams.append("%s = %s" % (key, v))
    eattr = "%s, %s" % (expert["kind"], expert["activation"])
    extra = ["%s = %s" % (key, format_float(expert[key])) for key in ("limit", "alpha", "beta")
             if key in expert]
    if extra:
        eattr += ", " + ", ".join(extra)
    with open(os.path.join(args.dir, "model.mlir"), "w") as f:
        f.write("// %s: seed %d, T = %d\n" % (args.config, seed, T))
        f.write("func.func @main(%s) -> %s {\n" % (", ".join(params), act))
        f.write("\n".join(body) + ("\n" if body else ""))
        f.write("  %%y = moe.layer %%x, %%router%s\n" % operands)
        f.write("      {expert = #moe.expert<%s>, routing = #moe.routing<%s>}\n"
                % (eattr, ", ".join(rparams)))
        f.write("      : (%s, %s) -> %s\n" % (act, tensor_type([H, E], elt), act))
        f.write("  return %%y : %s\n}\n" % act)
    for i, a in enumerate(inputs):
        np.save(os.path.join(args.dir, "in%d.npy" % i), a)
    expected = moe_reference.layer(x, w["router"], routing, expert, w.get("gate"), w["up"],
                                   w["down"], w.get("gate_bias"), w.get("up_bias"),
                                   w.get("down_bias"), w.get("selection_bias"),
                                   w.get("shared_gate"), w.get("shared_up"),
                                   w.get("shared_down"), w.get("shared_scale"))
    np.save(os.path.join(args.dir, "expected.npy"), expected)
    with open(os.path.join(args.dir, "case.json"), "w") as f:
        json.dump(dict(config=args.config, seed=seed, tokens=T, inputs=len(inputs),
                       dtype=args.dtype), f)
    print("moe_case: %s seed=%d T=%d -> %s" % (args.config, seed, T, args.dir))
    print(" ".join("--input=@%s" % os.path.join(args.dir, "in%d.npy" % i)
                   for i in range(len(inputs))),
          file=open(os.path.join(args.dir, "inputs.args"), "w"))


def check(args):
    with open(os.path.join(args.dir, "case.json")) as f:
        case = json.load(f)
    y = np.load(os.path.join(args.dir, "out.npy"))
    dtype = case.get("dtype", "f32")
    if dtype == "bf16":
        y = from_bf16_bits(y)
    y = y.astype(np.float64)
    ref = np.load(os.path.join(args.dir, "expected.npy"))
    if y.shape != ref.shape:
        sys.exit("moe_case: %s (seed %d): shape %s, expected %s"
                 % (case["config"], case["seed"], y.shape, ref.shape))
    norm = max(np.linalg.norm(ref), 1e-300)
    err = np.linalg.norm(y - ref) / norm
    tol = {"f16": args.f16_tol, "bf16": args.bf16_tol}.get(dtype, args.tol)
    ok = err <= tol
    print("moe_case: %s (%s, seed %d, T=%d): relative L2 error %.3e %s %.0e"
          % (case["config"], dtype, case["seed"], case["tokens"], err, "<=" if ok else ">", tol))
    if args.once_rounded:
        if dtype not in UNIT_ROUNDOFF:
            sys.exit("moe_case: --once-rounded needs an f16 or bf16 case")
        rounded = store_weights(ref.astype(np.float32), dtype)[1].astype(np.float64)
        rerr = np.linalg.norm(y - rounded) / norm
        rtol = UNIT_ROUNDOFF[dtype] / 4
        rok = rerr <= rtol
        ok = ok and rok
        print("moe_case: against the float64 result rounded to %s: relative L2 error %.3e %s %.1e"
              % (dtype, rerr, "<=" if rok else ">", rtol))
    sys.exit(0 if ok else 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("config", choices=sorted(CONFIGS))
    g.add_argument("--tokens", type=int, default=7)
    g.add_argument("--static", action="store_true")
    g.add_argument("--weights-as-inputs", action="store_true")
    g.add_argument("--expert-rows", type=lambda v: [int(n) for n in v.split(",")],
                   help="rows per expert, comma-separated (top-k softmax routing): "
                        "inputs steered to give each expert exactly that many")
    g.add_argument("--dtype", choices=sorted(MLIR_DTYPE), default="f32")
    g.add_argument("--weights-dtype", choices=WEIGHT_DTYPES, default=None,
                   help="store the expert weight matrices in this narrower type")
    g.add_argument("--seed", type=int)
    c = sub.add_parser("check")
    c.add_argument("dir")
    c.add_argument("--tol", type=float, default=1e-5)
    c.add_argument("--f16-tol", type=float, default=1e-2)
    c.add_argument("--bf16-tol", type=float, default=1e-2)
    c.add_argument("--once-rounded", action="store_true")
    args = ap.parse_args()
    gen(args) if args.cmd == "gen" else check(args)


if __name__ == "__main__":
    main()
