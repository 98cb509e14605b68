#!/usr/bin/env python3
"""A DeepSeek-V3-style MoE block written as `moe.layer` from Python, compiled
and run with the moe_mlir module, checked against the float64 reference.

    PYTHONPATH=build/python_packages /usr/bin/python3 examples/deepseek-python/run.py
        [--tokens T ...] [--hidden H] [--ffn F] [--experts E] [--groups G]
        [--top-groups TG] [--top-k K] [--shared-ffn FS] [--seed S] [--show-ir]

The block: sigmoid router scores; a per-expert selection bias that steers which
experts are chosen but not their weights; group-limited top-k (the experts are
split into G groups, each group is scored by the sum of its two best biased
scores, only the best TG groups are eligible); the k chosen sigmoid scores
renormalized and scaled by 2.5; SwiGLU experts; always-on shared experts
(one SwiGLU FFN of width FS) added to the routed output.
"""

import argparse
import os
import sys
import time

import numpy as np

import moe_mlir

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "test", "lib"))
import moe_reference  # noqa: E402

TOLERANCE = 1e-5


def dense(a):
    """An MLIR dense attribute holding `a` as little-endian f32 bytes."""
    return 'dense<"0x%s">' % np.ascontiguousarray(a, "<f4").tobytes().hex().upper()


def ttype(shape):
    return "tensor<%sxf32>" % "x".join("?" if d is None else str(d) for d in shape)


def build_model(w, routing):
    """The .mlir text: func.func @main(%x: tensor<?xHxf32>) with one moe.layer
    whose weights are dense constants (moe-compile moves them into the
    weights file)."""
    H, E = w["router"].shape
    act = ttype([None, H])
    lines = ['func.func @main(%%x: %s {moe.name = "x"}) -> (%s {moe.name = "y"}) {'
             % (act, act)]
    for name, a in w.items():
        lines.append('  %%%s = arith.constant {moe.name = "%s"} %s : %s'
                     % (name, name, dense(a), ttype(a.shape)))
    operands = " ".join("%s(%%%s : %s)" % (name, name, ttype(w[name].shape))
                        for name in ["selection_bias", "gate", "up", "down",
                                     "shared_gate", "shared_up", "shared_down"])
    params = ", ".join([
        "k = %d" % routing["k"], "scoring = sigmoid", "renormalize = true",
        "scale = %r" % routing["scale"], "n_group = %d" % routing["n_group"],
        "topk_group = %d" % routing["topk_group"]])
    lines += [
        "  %%y = moe.layer %%x, %%router %s" % operands,
        "      {expert = #moe.expert<gated, silu>, routing = #moe.routing<%s>}" % params,
        "      : (%s, %s) -> %s" % (act, ttype([H, E]), act),
        "  return %%y : %s" % act,
        "}",
    ]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, nargs="+", default=[1, 17, 64])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--ffn", type=int, default=64)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--groups", type=int, default=8)
    ap.add_argument("--top-groups", type=int, default=4)
    ap.add_argument("--top-k", type=int, default=6)
    ap.add_argument("--shared-ffn", type=int, default=128)
    ap.add_argument("--seed", type=int, default=None, help="default: fresh")
    ap.add_argument("--show-ir", action="store_true",
                    help="print the parsed module (weights elided) and the size of "
                         "each lowered form")
    args = ap.parse_args()
    if args.experts % args.groups:
        ap.error("--experts must be a multiple of --groups")

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    H, F, E, Fs = args.hidden, args.ffn, args.experts, args.shared_ffn

    def rand(*shape, fan_in):
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)

    w = {
        "router": rand(H, E, fan_in=H),
        "selection_bias": (0.1 * rng.standard_normal(E)).astype(np.float32),
        "gate": rand(E, H, F, fan_in=H),
        "up": rand(E, H, F, fan_in=H),
        "down": rand(E, F, H, fan_in=F),
        "shared_gate": rand(H, Fs, fan_in=H),
        "shared_up": rand(H, Fs, fan_in=H),
        "shared_down": rand(Fs, H, fan_in=Fs),
    }
    routing = dict(k=args.top_k, scoring="sigmoid", renormalize=True, scale=2.5,
                   n_group=args.groups, topk_group=args.top_groups)
    expert = dict(kind="gated", activation="silu")
    text = build_model(w, routing)
    print("deepseek-python: seed %d; H=%d F=%d E=%d (%d groups, top %d) k=%d, shared F=%d"
          % (seed, H, F, E, args.groups, args.top_groups, args.top_k, Fs))

    if args.show_ir:
        parsed = moe_mlir.compile(text.encode(), emit="input")
        for line in parsed.splitlines():
            print("  " + (line[:120] + " ..." if len(line) > 120 else line))
        for emit in ("mlir", "llvm"):
            ir = moe_mlir.compile(text.encode(), emit=emit)
            print("deepseek-python: emit=%s: %d lines" % (emit, ir.count("\n")))

    start = time.perf_counter()
    model = moe_mlir.compile(text.encode())
    print("deepseek-python: compiled in %.2f s: %r" % (time.perf_counter() - start, model))

    ok = True
    for T in args.tokens:
        x = rng.standard_normal((T, H)).astype(np.float32)
        start = time.perf_counter()
        (y,) = model.run(x)
        elapsed = time.perf_counter() - start
        ref = moe_reference.layer(
            x, w["router"], routing, expert, w["gate"], w["up"], w["down"],
            selection_bias=w["selection_bias"], shared_gate=w["shared_gate"],
            shared_up=w["shared_up"], shared_down=w["shared_down"])
        err = np.linalg.norm(y.astype(np.float64) - ref) / np.linalg.norm(ref)
        good = y.shape == ref.shape and err <= TOLERANCE
        ok &= good
        print("deepseek-python: T=%-4d run %.2f ms, relative L2 error %.2e %s %.0e"
              % (T, elapsed * 1e3, err, "<=" if good else ">", TOLERANCE))
    print("deepseek-python: %s" % ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
