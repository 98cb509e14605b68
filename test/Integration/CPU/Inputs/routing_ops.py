#!/usr/bin/env python3
"""Routing variants written with the expanded ops, with float64 references:
hash routing through a table or the built-in hash (moe.hash_route).

    routing_ops.py gen DIR {hash-table|hash-function} [--tokens T] [--seed S]
    routing_ops.py check DIR

`gen` writes DIR/model.mlir, DIR/in*.npy (float inputs as float32, token ids
as int32), DIR/inputs.args and DIR/expected.npy; `check` compares
DIR/out.npy (relative L2 <= 1e-5).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "lib"))
import moe_reference as R  # noqa: E402

H, F = 16, 24
SWIGLU = dict(kind="gated", activation="silu")


def f32(a):
    """The value the model sees: rounded to float32, then exact in float64."""
    return a.astype(np.float32).astype(np.float64)


def t(shape, elt="f32"):
    return "tensor<%sx%s>" % ("x".join(str(d) for d in shape), elt)


def experts_and_combine(E, ids, w, k):
    """moe.dispatch, moe.experts and moe.combine over `%{ids}` / `%{w}` [T, k]."""
    return f"""  %tok, %off, %pos = moe.dispatch %{ids} {{num_experts = {E}}}
      : tensor<?x{k}xi32> -> tensor<?xi32>, tensor<{E + 1}xi32>, tensor<?x{k}xi32>
  %c0 = arith.constant 0 : index
  %T = tensor.dim %x, %c0 : {t(('?', H))}
  %ck = arith.constant {k} : index
  %R = arith.muli %T, %ck : index
  %dest = tensor.empty(%R) : {t(('?', H))}
  %rows = moe.experts %x, %tok, %off into %dest gate(%g : {t((E, H, F))}) up(%u : {t((E, H, F))})
      down(%d : {t((E, F, H))}) {{expert = #moe.expert<gated, silu>}}
      : ({t(('?', H))}, tensor<?xi32>, tensor<{E + 1}xi32>, {t(('?', H))}) -> {t(('?', H))}
  %y = moe.combine %rows, %pos, %{w} : ({t(('?', H))}, tensor<?x{k}xi32>, {t(('?', k))}) -> {t(('?', H))}
  return %y : {t(('?', H))}"""


def ffn_weights(rng, E):
    gate = rng.standard_normal((E, H, F)) / np.sqrt(H)
    up = rng.standard_normal((E, H, F)) / np.sqrt(H)
    down = rng.standard_normal((E, F, H)) / np.sqrt(F)
    return [f32(a) for a in (gate, up, down)]


def mix(x, ids, w, gate, up, down):
    """sum over a token's slots of weight * expert FFN, skipping id -1."""
    out = np.zeros_like(x)
    for tok in range(x.shape[0]):
        for i in range(ids.shape[1]):
            e = ids[tok, i]
            if e >= 0:
                out[tok] += w[tok, i] * R.expert_ffn(x[tok][None], SWIGLU, gate[e], up[e], down[e])[0]
    return out


def hash_case(rng, T, with_table):
    # Token ids from a vocabulary of V, plus a few ids out of range (negative,
    # past the table); the table maps ids to experts, a few entries invalid.
    E, V = 5, 40
    x = f32(rng.standard_normal((T, H)))
    token_ids = rng.integers(0, V, T).astype(np.int32)
    token_ids[rng.random(T) < 0.15] = -3
    if with_table:
        token_ids[rng.random(T) < 0.15] = V + 7
        table = rng.integers(0, E, V).astype(np.int32)
        table[rng.random(V) < 0.1] = E
        table[rng.random(V) < 0.1] = -1
    gate, up, down = ffn_weights(rng, E)
    ids = np.full((T, 1), -1, dtype=np.int64)
    for tok, i in enumerate(token_ids.tolist()):
        if with_table:
            e = table[i] if 0 <= i < V else -1
        else:
            e = ((i * 2654435761) % 2**32) % E if i >= 0 else -1
        ids[tok, 0] = e if 0 <= e < E else -1
    if len(set(ids[:, 0].tolist()) - {-1}) < E or -1 not in ids:
        return None  # every expert and the unrouted case must be exercised
    out = mix(x, ids, np.ones((T, 1)), gate, up, down)
    table_arg = f", %table: {t((V,), 'i32')}" if with_table else ""
    table_use = f" table(%table : {t((V,), 'i32')})" if with_table else ""
    mlir = f"""func.func @main(%x: {t(('?', H))}, %ids_in: tensor<?xi32>{table_arg}, %g: {t((E, H, F))},
    %u: {t((E, H, F))}, %d: {t((E, F, H))}) -> {t(('?', H))} {{
  %ids, %w = moe.hash_route %ids_in{table_use} {{num_experts = {E}}}
      : tensor<?xi32> -> tensor<?x1xi32>, {t(('?', 1))}
{experts_and_combine(E, "ids", "w", 1)}
}}
"""
    inputs = [x, token_ids] + ([table] if with_table else []) + [gate, up, down]
    return mlir, inputs, out


CASES = {
    "hash-table": lambda rng, T: hash_case(rng, T, True),
    "hash-function": lambda rng, T: hash_case(rng, T, False),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["gen", "check"])
    ap.add_argument("dir")
    ap.add_argument("case", nargs="?", choices=sorted(CASES))
    ap.add_argument("--tokens", type=int, default=9)
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    if a.cmd == "check":
        info = json.load(open(os.path.join(a.dir, "case.json")))
        y = np.load(os.path.join(a.dir, "out.npy")).astype(np.float64)
        ref = np.load(os.path.join(a.dir, "expected.npy"))
        err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
        ok = y.shape == ref.shape and err <= 1e-5
        print("%s (seed %d, T=%d): relative L2 error %.3e %s 1e-05"
              % (info["case"], info["seed"], info["tokens"], err, "<=" if ok else ">"))
        sys.exit(0 if ok else 1)
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    case = CASES[a.case](np.random.default_rng(seed), a.tokens)
    while case is None:  # draw until every path of interest is taken
        seed = (seed + 1) % 2**32
        case = CASES[a.case](np.random.default_rng(seed), a.tokens)
    mlir, inputs, out = case
    os.makedirs(a.dir, exist_ok=True)
    open(os.path.join(a.dir, "model.mlir"), "w").write(mlir)
    args = []
    for i, arr in enumerate(inputs):
        p = os.path.join(a.dir, "in%d.npy" % i)
        np.save(p, arr if arr.dtype == np.int32 else arr.astype(np.float32))
        args.append("--input=@" + p)
    open(os.path.join(a.dir, "inputs.args"), "w").write(" ".join(args))
    np.save(os.path.join(a.dir, "expected.npy"), out)
    json.dump(dict(case=a.case, seed=seed, tokens=a.tokens), open(os.path.join(a.dir, "case.json"), "w"))


if __name__ == "__main__":
    main()
