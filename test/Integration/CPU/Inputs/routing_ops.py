#!/usr/bin/env python3
"""Routing variants written with the expanded ops, with float64 references:
hash routing through a table or the built-in hash (moe.hash_route),
modality-restricted routing (expert_groups with token_groups, through
moe.route and moe.gate), and gating residuals threaded through a stack of
three layers.

    routing_ops.py gen DIR CASE [--tokens T] [--seed S]   (CASE: see CASES)
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


def experts_and_combine(E, ids, w, k, x="x", g="g", u="u", d="d", n=""):
    """moe.dispatch, moe.experts and moe.combine of `%{x}` over `%{ids}` /
    `%{w}` [T, k]; the result is `%y{n}` (SSA names get the suffix n)."""
    return f"""  %tok{n}, %off{n}, %pos{n} = moe.dispatch %{ids} {{num_experts = {E}}}
      : tensor<?x{k}xi32> -> tensor<?xi32>, tensor<{E + 1}xi32>, tensor<?x{k}xi32>
  %c0{n} = arith.constant 0 : index
  %T{n} = tensor.dim %{x}, %c0{n} : {t(('?', H))}
  %ck{n} = arith.constant {k} : index
  %R{n} = arith.muli %T{n}, %ck{n} : index
  %dest{n} = tensor.empty(%R{n}) : {t(('?', H))}
  %rows{n} = moe.experts %{x}, %tok{n}, %off{n} into %dest{n} gate(%{g} : {t((E, H, F))}) up(%{u} : {t((E, H, F))})
      down(%{d} : {t((E, F, H))}) {{expert = #moe.expert<gated, silu>}}
      : ({t(('?', H))}, tensor<?xi32>, tensor<{E + 1}xi32>, {t(('?', H))}) -> {t(('?', H))}
  %y{n} = moe.combine %rows{n}, %pos{n}, %{w} : ({t(('?', H))}, tensor<?x{k}xi32>, {t(('?', k))}) -> {t(('?', H))}"""


def logits(E, x="x", router="router", n=""):
    """`%l{n} = %{x} . %{router}` as [T, E]."""
    return f"""  %lc0{n} = arith.constant 0 : index
  %lzero{n} = arith.constant 0.0 : f32
  %lT{n} = tensor.dim %{x}, %lc0{n} : {t(('?', H))}
  %le{n} = tensor.empty(%lT{n}) : {t(('?', E))}
  %lz{n} = linalg.fill ins(%lzero{n} : f32) outs(%le{n} : {t(('?', E))}) -> {t(('?', E))}
  %l{n} = linalg.matmul ins(%{x}, %{router} : {t(('?', H))}, {t((H, E))}) outs(%lz{n} : {t(('?', E))}) -> {t(('?', E))}"""


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
  return %y : {t(('?', H))}
}}
"""
    inputs = [x, token_ids] + ([table] if with_table else []) + [gate, up, down]
    return mlir, inputs, out


def groups_case(rng, T, fused):
    # Experts in groups of [3, 2, 3] (moe.route, sigmoid, renormalized) or
    # [4, 4] (moe.gate, softmax after top-k); a few group ids out of range.
    sizes = [4, 4] if fused else [3, 2, 3]
    E, K = sum(sizes), 2
    recipe = dict(k=K, scoring="topk_softmax", expert_groups=sizes) if fused else \
        dict(k=K, scoring="sigmoid", renormalize=True, expert_groups=sizes)
    x = f32(rng.standard_normal((T, H)))
    router = f32(rng.standard_normal((H, E)) / np.sqrt(H))
    groups = rng.integers(0, len(sizes), T).astype(np.int32)
    groups[rng.random(T) < 0.1] = len(sizes)
    groups[rng.random(T) < 0.1] = -1
    gate, up, down = ffn_weights(rng, E)
    ids, w = R.route(x @ router, recipe, token_groups=groups)
    if len(set(ids.flatten().tolist()) - {-1}) < E or (ids[:, 0] < 0).sum() == 0:
        return None  # every expert and the unrouted case must be exercised
    out = mix(x, ids, w, gate, up, down)
    attr = ("k = %d, scoring = topk_softmax" % K if fused else
            "k = %d, scoring = sigmoid, renormalize = true" % K)
    attr += ", expert_groups = [%s]" % ", ".join(map(str, sizes))
    groups_use = " token_groups(%groups : tensor<?xi32>)"
    if fused:
        routing = f"""  %ids, %w = moe.gate %x, %router{groups_use} {{routing = #moe.routing<{attr}>}}
      : ({t(('?', H))}, {t((H, E))}) -> tensor<?x{K}xi32>, {t(('?', K))}"""
    else:
        routing = f"""{logits(E)}
  %ids, %w = moe.route %l{groups_use} {{routing = #moe.routing<{attr}>}}
      : {t(('?', E))} -> tensor<?x{K}xi32>, {t(('?', K))}"""
    mlir = f"""func.func @main(%x: {t(('?', H))}, %groups: tensor<?xi32>, %router: {t((H, E))}, %g: {t((E, H, F))},
    %u: {t((E, H, F))}, %d: {t((E, F, H))}) -> {t(('?', H))} {{
{routing}
{experts_and_combine(E, "ids", "w", K)}
  return %y : {t(('?', H))}
}}
"""
    return mlir, [x, groups, router, gate, up, down], out


def residual_case(rng, T):
    # h1 = x + MoE1(x), h2 = h1 + MoE2(h1), h3 = h2 + MoE3(h2); layer i
    # routes by its logits plus the previous layer's (residual-included)
    # routing logits: moe.route without and with a residual, then moe.gate.
    E, K = 6, 2
    recipe = dict(k=K, renormalize=True)
    x = f32(rng.standard_normal((T, H)))
    inputs, names, args = [x], [], [f"%x: {t(('?', H))}"]
    layers = []
    for i in range(3):
        router = f32(rng.standard_normal((H, E)) / np.sqrt(H))
        gate, up, down = ffn_weights(rng, E)
        layers.append((router, gate, up, down))
        inputs += [router, gate, up, down]
        args += [f"%router{i}: {t((H, E))}", f"%g{i}: {t((E, H, F))}",
                 f"%u{i}: {t((E, H, F))}", f"%d{i}: {t((E, F, H))}"]
    h, prev = x, None
    for router, gate, up, down in layers:
        lg = h @ router
        ids, w = R.route(lg, recipe, residual=prev)
        prev = lg if prev is None else lg + prev
        h = h + mix(h, ids, w, gate, up, down)
    attr = f"#moe.routing<k = {K}, renormalize = true>"
    route_t = f"tensor<?x{K}xi32>, {t(('?', K))}"
    body = f"""{logits(E, "x", "router0", "0")}
  %ids0, %w0 = moe.route %l0 {{routing = {attr}}} : {t(('?', E))} -> {route_t}
{experts_and_combine(E, "ids0", "w0", K, "x", "g0", "u0", "d0", "0")}
  %h1 = arith.addf %x, %y0 : {t(('?', H))}
{logits(E, "h1", "router1", "1")}
  %ids1, %w1 = moe.route %l1 residual(%l0 : {t(('?', E))}) {{routing = {attr}}} : {t(('?', E))} -> {route_t}
  %eff1 = arith.addf %l1, %l0 : {t(('?', E))}
{experts_and_combine(E, "ids1", "w1", K, "h1", "g1", "u1", "d1", "1")}
  %h2 = arith.addf %h1, %y1 : {t(('?', H))}
  %ids2, %w2 = moe.gate %h2, %router2 residual(%eff1 : {t(('?', E))}) {{routing = {attr}}}
      : ({t(('?', H))}, {t((H, E))}) -> {route_t}
{experts_and_combine(E, "ids2", "w2", K, "h2", "g2", "u2", "d2", "2")}
  %h3 = arith.addf %h2, %y2 : {t(('?', H))}"""
    mlir = f"""func.func @main({", ".join(args)}) -> {t(('?', H))} {{
{body}
  return %h3 : {t(('?', H))}
}}
"""
    return mlir, inputs, h


CASES = {
    "hash-table": lambda rng, T: hash_case(rng, T, True),
    "hash-function": lambda rng, T: hash_case(rng, T, False),
    "groups": lambda rng, T: groups_case(rng, T, False),
    "groups-gate": lambda rng, T: groups_case(rng, T, True),
    "residual-stack": residual_case,
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
        sys.exit(R.check_case_output(a.dir))
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
