#!/usr/bin/env python3
"""Stacks of MoE layers, for the expert cache tests and benchmark.

    moe_stack.py gen DIR [--layers L] [--hidden H] [--ffn F] [--experts E]
                         [--k K] [--tokens T] [--seed S] [--skew A]
                         [--affinity R] [--extra-inputs N] [--no-reference]
    moe_stack.py close A.npy B.npy [--tol 1e-6]

`gen` draws fresh random weights and input (the seed is printed; --seed
replays it) and writes DIR/model.mlir: a func.func @main applying L
Mixtral-style moe.layer ops (softmax top-k, renormalized, SwiGLU) one after
the other, x <- x + layer_l(x), with the weights as dense constants (so that
moe-compile outlines them into the weights file and --expert-budget can place
them). It also writes DIR/in0.npy, DIR/inputs.args and DIR/expected.npy, the
float64 reference (test/lib/moe_reference.py). --skew A > 0 adds A * (a
fixed ramp) to the router columns so that some experts are chosen far more
often than others, as in trained models. --affinity R in (0, 1] plants
inter-layer expert affinity: layer l + 1's router column pi_l(j) is R times
layer l's column j plus sqrt(1 - R^2) times a fresh one (pi_l a random
permutation), so that tokens that choose j in layer l tend to choose pi_l(j)
in layer l + 1 (DIR/planted.json lists the permutations). --extra-inputs N
also writes in1.npy .. inN.npy, more inputs of T tokens from the same
distribution (held out from a profile of in0.npy). `close` compares two
outputs: the relative L2 error of B against A must be <= tol.
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moe_reference  # noqa: E402

ROUTING = dict(k=2, renormalize=True)
EXPERT = dict(kind="gated", activation="silu")


def tensor_type(shape):
    return "tensor<%s>" % "x".join([("?" if d is None else str(d)) for d in shape] + ["f32"])


def gen(args):
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    L, H, F, E, T = args.layers, args.hidden, args.ffn, args.experts, args.tokens
    routing = dict(ROUTING, k=args.k)

    def rand(*shape, fan_in):
        return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype("<f4")

    layers = []
    permutations = []
    for _ in range(L):
        router = rand(H, E, fan_in=H)
        if args.affinity and layers:
            r = args.affinity
            planted = np.empty_like(router)
            permutations.append(rng.permutation(E))
            planted[:, permutations[-1]] = layers[-1]["router"]
            router = (r * planted + np.sqrt(1 - r * r) * router).astype("<f4")
        if args.skew:
            router += (args.skew * np.linspace(-1.0, 1.0, E) *
                       np.abs(rng.standard_normal((H, 1))) / np.sqrt(H)).astype("<f4")
        layers.append(dict(router=router, gate=rand(E, H, F, fan_in=H),
                           up=rand(E, H, F, fan_in=H), down=rand(E, F, H, fan_in=F)))
    x = rng.standard_normal((T, H)).astype("<f4")

    os.makedirs(args.dir, exist_ok=True)
    act = tensor_type([None, H])
    with open(os.path.join(args.dir, "model.mlir"), "w") as f:
        f.write("// moe_stack: seed %d, %d layers, H=%d F=%d E=%d k=%d, T=%d\n"
                % (seed, L, H, F, E, args.k, T))
        f.write("func.func @main(%%x0: %s {moe.name = \"x\"}) -> %s {\n" % (act, act))
        for i, w in enumerate(layers):
            for name in ("router", "gate", "up", "down"):
                raw = np.ascontiguousarray(w[name]).tobytes().hex().upper()
                f.write("  %%%s%d = arith.constant dense<\"0x%s\"> : %s\n"
                        % (name, i, raw, tensor_type(w[name].shape)))
            f.write("  %%y%d = moe.layer %%x%d, %%router%d gate(%%gate%d : %s) "
                    "up(%%up%d : %s) down(%%down%d : %s)\n"
                    % (i, i, i, i, tensor_type(w["gate"].shape), i,
                       tensor_type(w["up"].shape), i, tensor_type(w["down"].shape)))
            f.write("      {expert = #moe.expert<gated, silu>, "
                    "routing = #moe.routing<k = %d, renormalize = true>}\n" % args.k)
            f.write("      : (%s, %s) -> %s\n" % (act, tensor_type([H, E]), act))
            f.write("  %%x%d = arith.addf %%x%d, %%y%d : %s\n" % (i + 1, i, i, act))
        f.write("  return %%x%d : %s\n}\n" % (L, act))
    if permutations:
        # permutations[l][j]: layer l + 1's expert planted to follow j of l.
        with open(os.path.join(args.dir, "planted.json"), "w") as f:
            json.dump([p.tolist() for p in permutations], f)
    np.save(os.path.join(args.dir, "in0.npy"), x)
    for i in range(args.extra_inputs):
        np.save(os.path.join(args.dir, "in%d.npy" % (i + 1)),
                rng.standard_normal((T, H)).astype("<f4"))
    with open(os.path.join(args.dir, "inputs.args"), "w") as f:
        f.write("--input=@%s\n" % os.path.join(args.dir, "in0.npy"))
    if args.no_reference:
        layers = []
    ref = x.astype(np.float64)
    for w in layers:
        ref = ref + moe_reference.layer(ref, w["router"], routing, EXPERT, w["gate"], w["up"],
                                        w["down"])
    if not args.no_reference:
        np.save(os.path.join(args.dir, "expected.npy"), ref)
    expert_bytes = 3 * H * F * 4
    print("moe_stack: seed=%d layers=%d E=%d expert_bytes=%d all_experts=%d -> %s"
          % (seed, L, E, expert_bytes, expert_bytes * E * L, args.dir))


def close(args):
    a = np.load(args.a).astype(np.float64)
    b = np.load(args.b).astype(np.float64)
    if a.shape != b.shape:
        print("moe_stack: shape mismatch %s vs %s" % (a.shape, b.shape))
        return 1
    err = np.linalg.norm(b - a) / max(np.linalg.norm(a), 1e-300)
    ok = err <= args.tol
    print("moe_stack: relative L2 error %.3e %s %g" % (err, "<=" if ok else ">", args.tol))
    return 0 if ok else 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("dir")
    g.add_argument("--layers", type=int, default=3)
    g.add_argument("--hidden", type=int, default=32)
    g.add_argument("--ffn", type=int, default=32)
    g.add_argument("--experts", type=int, default=8)
    g.add_argument("--k", type=int, default=2)
    g.add_argument("--tokens", type=int, default=5)
    g.add_argument("--skew", type=float, default=0.0)
    g.add_argument("--affinity", type=float, default=0.0)
    g.add_argument("--extra-inputs", type=int, default=0)
    g.add_argument("--seed", type=int)
    g.add_argument("--no-reference", action="store_true",
                   help="skip expected.npy (large benchmark models)")
    c = sub.add_parser("close")
    c.add_argument("a")
    c.add_argument("b")
    c.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    if args.cmd == "gen":
        gen(args)
        return 0
    return close(args)


if __name__ == "__main__":
    sys.exit(main())
