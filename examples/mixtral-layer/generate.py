#!/usr/bin/env python3
"""Writes a Mixtral-style MoE layer as an `moe` dialect model, an input and the
float64 reference output.

    /usr/bin/python3 generate.py OUT_DIR [--tokens T] [--hidden H] [--ffn F]
                                 [--experts E] [--top-k K] [--seed S]

OUT_DIR receives:
  model.mlir    func.func @main(%x: tensor<?xHxf32>) -> tensor<?xHxf32> with the
                router and expert weights as dense constants (moe-compile moves
                them into the weights file)
  x.npy         float32 [T, H] input
  expected.npy  float64 [T, H] reference output (numpy, float64 throughout)
"""

import argparse
import os

import numpy as np


def silu(a):
    return a / (1.0 + np.exp(-a))


def reference(x, router, gate, up, down, k):
    """Mixtral: softmax over the router logits, top-k, renormalize, SwiGLU experts."""
    x = x.astype(np.float64)
    logits = x @ router.astype(np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    out = np.zeros_like(x)
    for t in range(x.shape[0]):
        chosen = np.argsort(-p[t], kind="stable")[:k]
        w = p[t, chosen] / p[t, chosen].sum()
        for wi, e in zip(w, chosen):
            h = silu(x[t] @ gate[e].astype(np.float64)) * (x[t] @ up[e].astype(np.float64))
            out[t] += wi * (h @ down[e].astype(np.float64))
    return out


def dense(a):
    """An MLIR dense attribute in hex form (little-endian raw bytes)."""
    return 'dense<"0x%s">' % np.ascontiguousarray(a, dtype="<f4").tobytes().hex().upper()


def tensor_type(shape):
    return "tensor<%sxf32>" % "x".join(str(d) for d in shape)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--seed", type=int, default=None,
                    help="random seed (default: fresh)")
    args = ap.parse_args()

    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    H, F, E, k, T = args.hidden, args.ffn, args.experts, args.top_k, args.tokens
    x = rng.standard_normal((T, H)).astype(np.float32)
    router = (rng.standard_normal((H, E)) / np.sqrt(H)).astype(np.float32)
    gate = (rng.standard_normal((E, H, F)) / np.sqrt(H)).astype(np.float32)
    up = (rng.standard_normal((E, H, F)) / np.sqrt(H)).astype(np.float32)
    down = (rng.standard_normal((E, F, H)) / np.sqrt(F)).astype(np.float32)

    os.makedirs(args.out_dir, exist_ok=True)
    act = "tensor<?x%dxf32>" % H
    with open(os.path.join(args.out_dir, "model.mlir"), "w") as f:
        f.write("// Mixtral-style MoE layer: H=%d F=%d E=%d k=%d (seed %d)\n" % (H, F, E, k, seed))
        f.write("func.func @main(%%x: %s {moe.name = \"x\"}) -> %s {\n" % (act, act))
        for name, a in (("router", router), ("gate", gate), ("up", up), ("down", down)):
            f.write("  %%%s = arith.constant %s : %s\n" % (name, dense(a), tensor_type(a.shape)))
        f.write("  %%y = moe.layer %%x, %%router gate(%%gate : %s) up(%%up : %s) down(%%down : %s)\n"
                % (tensor_type(gate.shape), tensor_type(up.shape), tensor_type(down.shape)))
        f.write("      {expert = #moe.expert<gated, silu>,\n")
        f.write("       routing = #moe.routing<k = %d, renormalize = true>}\n" % k)
        f.write("      : (%s, %s) -> %s\n" % (act, tensor_type(router.shape), act))
        f.write("  return %%y : %s\n}\n" % act)
    np.save(os.path.join(args.out_dir, "x.npy"), x)
    np.save(os.path.join(args.out_dir, "expected.npy"), reference(x, router, gate, up, down, k))
    print("generate: H=%d F=%d E=%d k=%d T=%d seed=%d -> %s" % (H, F, E, k, T, seed, args.out_dir))


if __name__ == "__main__":
    main()
