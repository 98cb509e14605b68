#!/usr/bin/env python3
"""Models in the expanded form that moe.layer cannot express, with their
float64 references: FFN experts beside MoE++ zero-computation experts, and
region (generic) experts: a matmul + tanh body, convolution experts (MoE CNNs)
and attention experts (mixture of attention heads).

    explicit_ops.py gen DIR {zero-computation[-wide]|padded|generic[-padded|-residual]|
                             conv|attention}
                    [--tokens T]
                    [--seed S]
    explicit_ops.py check DIR

`gen` writes DIR/model.mlir (weights as inputs), DIR/in*.npy, DIR/inputs.args
and DIR/expected.npy; `check` compares DIR/out.npy (relative L2 <= 1e-5).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "lib"))
import moe_reference as R  # noqa: E402

H, F, K = 16, 24, 2


def f32(a):
    """The value the model sees: rounded to float32, then exact in float64."""
    return a.astype(np.float32).astype(np.float64)


def t(shape):
    return "tensor<%sxf32>" % "x".join(str(d) for d in shape)


def plan(E, recipe, block_size=1):
    """The router matmul, moe.route, moe.dispatch and the empty [R, H]
    destination shared by the models (defines %T, %w, %tok, %off, %pos,
    %dest and %zero); with `block_size` > 1 each expert's rows are padded to
    a multiple of it (R = T*k + E*(block_size - 1))."""
    pad = E * (block_size - 1)
    return f"""  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %T = tensor.dim %x, %c0 : {t(('?', H))}
  %e = tensor.empty(%T) : {t(('?', E))}
  %z = linalg.fill ins(%zero : f32) outs(%e : {t(('?', E))}) -> {t(('?', E))}
  %logits = linalg.matmul ins(%x, %router : {t(('?', H))}, {t((H, E))}) outs(%z : {t(('?', E))}) -> {t(('?', E))}
  %ids, %w = moe.route %logits {{routing = #moe.routing<k = {K}, {recipe}>}}
      : {t(('?', E))} -> tensor<?x{K}xi32>, {t(('?', K))}
  %tok, %off, %pos = moe.dispatch %ids {{num_experts = {E}, block_size = {block_size}}}
      : tensor<?x{K}xi32> -> tensor<?xi32>, tensor<{E + 1}xi32>, tensor<?x{K}xi32>
  %c{K} = arith.constant {K} : index
  %cpad = arith.constant {pad} : index
  %TK = arith.muli %T, %c{K} : index
  %R = arith.addi %TK, %cpad : index
  %dest = tensor.empty(%R) : {t(('?', H))}"""


def zero_computation(rng, T, n_ffn=3):
    # Experts 0 to n_ffn - 1: SwiGLU FFNs; then zero, copy, constant (MoE++).
    # With 16 FFN experts or more and enough tokens, the compiled moe.experts
    # runs them in parallel (an scf.forall) and must leave the rows of the
    # other experts as they are.
    E = n_ffn + 3
    x = rng.standard_normal((T, H))
    router = rng.standard_normal((H, E)) / np.sqrt(H)
    gate = rng.standard_normal((n_ffn, H, F)) / np.sqrt(H)
    up = rng.standard_normal((n_ffn, H, F)) / np.sqrt(H)
    down = rng.standard_normal((n_ffn, F, H)) / np.sqrt(F)
    values = rng.standard_normal((1, H))
    mix = rng.standard_normal((1, H, 2)) / np.sqrt(H)
    x, router, gate, up, down, values, mix = inputs = [
        f32(a) for a in (x, router, gate, up, down, values, mix)]
    ids, w = R.route(x @ router, dict(k=K, renormalize=True))
    if not {n_ffn, n_ffn + 1, n_ffn + 2} <= set(ids.flatten().tolist()):
        return None  # the zero-computation experts would go untested
    out = np.zeros((T, H))
    for tok in range(T):
        for i in range(K):
            e = ids[tok, i]
            xt = x[tok]
            if e < n_ffn:
                y = R.expert_ffn(xt[None], dict(kind="gated", activation="silu"),
                                 gate[e], up[e], down[e])[0]
            elif e == n_ffn:
                y = np.zeros(H)
            elif e == n_ffn + 1:
                y = xt
            else:
                a = xt @ mix[0]
                a = np.exp(a - a.max()); a /= a.sum()
                y = a[0] * xt + a[1] * values[0]
            out[tok] += w[tok, i] * y
    mlir = f"""func.func @main(%x: {t(('?', H))}, %router: {t((H, E))}, %g: {t((n_ffn, H, F))},
    %u: {t((n_ffn, H, F))}, %d: {t((n_ffn, F, H))}, %v: {t((1, H))}, %m: {t((1, H, 2))}) -> {t(('?', H))} {{
{plan(E, "renormalize = true")}
  %r0 = moe.experts %x, %tok, %off into %dest gate(%g : {t((n_ffn, H, F))}) up(%u : {t((n_ffn, H, F))})
      down(%d : {t((n_ffn, F, H))}) {{expert = #moe.expert<gated, silu>}}
      : ({t(('?', H))}, tensor<?xi32>, tensor<{E + 1}xi32>, {t(('?', H))}) -> {t(('?', H))}
  %r1 = moe.zero_computation_experts %x, %tok, %off into %r0
      constants(%v, %m : {t((1, H))}, {t((1, H, 2))})
      {{first_expert = {n_ffn}, kinds = [#moe.zero_computation<zero>, #moe.zero_computation<copy>, #moe.zero_computation<constant>]}}
      : ({t(('?', H))}, tensor<?xi32>, tensor<{E + 1}xi32>, {t(('?', H))}) -> {t(('?', H))}
  %y = moe.combine %r1, %pos, %w : ({t(('?', H))}, tensor<?x{K}xi32>, {t(('?', K))}) -> {t(('?', H))}
  return %y : {t(('?', H))}
}}
"""
    return mlir, inputs, out


def padded(rng, T, E=16):
    # moe.dispatch pads each expert's rows to a multiple of 4 (rows of token
    # -1): moe.experts must leave the padding rows as they are (here, of an
    # empty tensor: never read) and compute the others; with 8 or more rows
    # per expert and 16 experts that have rows, in parallel.
    x = rng.standard_normal((T, H))
    router = rng.standard_normal((H, E)) / np.sqrt(H)
    gate = rng.standard_normal((E, H, F)) / np.sqrt(H)
    up = rng.standard_normal((E, H, F)) / np.sqrt(H)
    down = rng.standard_normal((E, F, H)) / np.sqrt(F)
    x, router, gate, up, down = inputs = [f32(a) for a in (x, router, gate, up, down)]
    ids, w = R.route(x @ router, dict(k=K, renormalize=True))
    out = np.zeros((T, H))
    for tok in range(T):
        for i in range(K):
            e = ids[tok, i]
            out[tok] += w[tok, i] * R.expert_ffn(
                x[tok][None], dict(kind="gated", activation="silu"), gate[e], up[e], down[e])[0]
    mlir = f"""func.func @main(%x: {t(('?', H))}, %router: {t((H, E))}, %g: {t((E, H, F))},
    %u: {t((E, H, F))}, %d: {t((E, F, H))}) -> {t(('?', H))} {{
{plan(E, "renormalize = true", block_size=4)}
  %r = moe.experts %x, %tok, %off into %dest gate(%g : {t((E, H, F))}) up(%u : {t((E, H, F))})
      down(%d : {t((E, F, H))}) {{expert = #moe.expert<gated, silu>}}
      : ({t(('?', H))}, tensor<?xi32>, tensor<{E + 1}xi32>, {t(('?', H))}) -> {t(('?', H))}
  %y = moe.combine %r, %pos, %w : ({t(('?', H))}, tensor<?x{K}xi32>, {t(('?', K))}) -> {t(('?', H))}
  return %y : {t(('?', H))}
}}
"""
    return mlir, inputs, out


def generic(rng, T, block_size=1, residual=False):
    # Region experts: y = tanh(rows . W_e) + b_e, W captured from above.
    # With `block_size` > 1 each expert's rows are padded (padding rows must
    # be left alone); with `residual` the layer's input is added to its
    # output (tensor compute beside the moe ops).
    E = 4
    x = rng.standard_normal((T, H))
    router = rng.standard_normal((H, E)) / np.sqrt(H)
    W = rng.standard_normal((E, H, H)) / np.sqrt(H)
    b = rng.standard_normal((E, H))
    x, router, W, b = inputs = [f32(a) for a in (x, router, W, b)]
    ids, w = R.route(x @ router, dict(k=K, scoring="sigmoid"))
    if len(set(ids.flatten().tolist())) < E:
        return None  # every region expert must run
    out = np.zeros((T, H))
    for tok in range(T):
        for i in range(K):
            e = ids[tok, i]
            out[tok] += w[tok, i] * (np.tanh(x[tok] @ W[e]) + b[e])
    if residual:
        out += x
    ret = "%y"
    add = ""
    if residual:
        ret = "%h"
        add = f"\n  %h = arith.addf %x, %y : {t(('?', H))}"
    mlir = f"""func.func @main(%x: {t(('?', H))}, %router: {t((H, E))}, %W: {t((E, H, H))}, %b: {t((E, H))}) -> {t(('?', H))} {{
{plan(E, "scoring = sigmoid", block_size)}
  %rows = moe.generic_experts %x, %tok, %off into %dest {{first_expert = 0, num_experts = {E}}}
      : ({t(('?', H))}, tensor<?xi32>, tensor<{E + 1}xi32>, {t(('?', H))}) -> {t(('?', H))} {{
  ^bb0(%in: {t(('?', H))}, %ex: index):
    %c0i = arith.constant 0 : index
    %n = tensor.dim %in, %c0i : {t(('?', H))}
    %we = tensor.extract_slice %W[%ex, 0, 0] [1, {H}, {H}] [1, 1, 1] : {t((E, H, H))} to {t((H, H))}
    %be = tensor.extract_slice %b[%ex, 0] [1, {H}] [1, 1] : {t((E, H))} to tensor<{H}xf32>
    %acc0 = tensor.empty(%n) : {t(('?', H))}
    %acc = linalg.fill ins(%zero : f32) outs(%acc0 : {t(('?', H))}) -> {t(('?', H))}
    %p = linalg.matmul ins(%in, %we : {t(('?', H))}, {t((H, H))}) outs(%acc : {t(('?', H))}) -> {t(('?', H))}
    %th = math.tanh %p : {t(('?', H))}
    %bb = linalg.broadcast ins(%be : tensor<{H}xf32>) outs(%acc0 : {t(('?', H))}) dimensions = [0]
    %r = arith.addf %th, %bb : {t(('?', H))}
    moe.yield %r : {t(('?', H))}
  }}
  %y = moe.combine %rows, %pos, %w : ({t(('?', H))}, tensor<?x{K}xi32>, {t(('?', K))}) -> {t(('?', H))}{add}
  return {ret} : {t(('?', H))}
}}
"""
    return mlir, inputs, out


def conv(rng, T):
    # Convolution experts (MoE CNNs): each row is a 1-D signal of L = H / C
    # positions with C channels; expert e applies a width-3 'same' convolution
    # (linalg.conv_1d_nwc_wcf) with its own filter [3, C, C], then ReLU.
    E, C = 4, 2
    L = H // C
    x = rng.standard_normal((T, H))
    router = rng.standard_normal((H, E)) / np.sqrt(H)
    Wc = rng.standard_normal((E, 3, C, C)) / np.sqrt(3 * C)
    x, router, Wc = inputs = [f32(a) for a in (x, router, Wc)]
    ids, w = R.route(x @ router, dict(k=K, renormalize=True))
    if len(set(ids.flatten().tolist())) < E:
        return None
    out = np.zeros((T, H))
    for tok in range(T):
        sig = np.pad(x[tok].reshape(L, C), ((1, 1), (0, 0)))
        for i in range(K):
            e = ids[tok, i]
            y = np.zeros((L, C))
            for pos in range(L):
                for r in range(3):
                    y[pos] += sig[pos + r] @ Wc[e, r]
            out[tok] += w[tok, i] * np.maximum(y, 0.0).reshape(H)
    mlir = f"""func.func @main(%x: {t(('?', H))}, %router: {t((H, E))}, %Wc: {t((E, 3, C, C))}) -> {t(('?', H))} {{
{plan(E, "renormalize = true")}
  %rows = moe.generic_experts %x, %tok, %off into %dest {{first_expert = 0, num_experts = {E}}}
      : ({t(('?', H))}, tensor<?xi32>, tensor<{E + 1}xi32>, {t(('?', H))}) -> {t(('?', H))} {{
  ^bb0(%in: {t(('?', H))}, %ex: index):
    %c0i = arith.constant 0 : index
    %n = tensor.dim %in, %c0i : {t(('?', H))}
    %sig = tensor.expand_shape %in [[0], [1, 2]] output_shape [%n, {L}, {C}] : {t(('?', H))} into {t(('?', L, C))}
    %padded = tensor.pad %sig low[0, 1, 0] high[0, 1, 0] {{
    ^bb1(%i0: index, %i1: index, %i2: index):
      tensor.yield %zero : f32
    }} : {t(('?', L, C))} to {t(('?', L + 2, C))}
    %we = tensor.extract_slice %Wc[%ex, 0, 0, 0] [1, 3, {C}, {C}] [1, 1, 1, 1] : {t((E, 3, C, C))} to {t((3, C, C))}
    %o0 = tensor.empty(%n) : {t(('?', L, C))}
    %o = linalg.fill ins(%zero : f32) outs(%o0 : {t(('?', L, C))}) -> {t(('?', L, C))}
    %conv = linalg.conv_1d_nwc_wcf {{dilations = dense<1> : tensor<1xi64>, strides = dense<1> : tensor<1xi64>}}
        ins(%padded, %we : {t(('?', L + 2, C))}, {t((3, C, C))}) outs(%o : {t(('?', L, C))}) -> {t(('?', L, C))}
    %relu = arith.maximumf %conv, %o : {t(('?', L, C))}
    %flat = tensor.collapse_shape %relu [[0], [1, 2]] : {t(('?', L, C))} into {t(('?', H))}
    moe.yield %flat : {t(('?', H))}
  }}
  %y = moe.combine %rows, %pos, %w : ({t(('?', H))}, tensor<?x{K}xi32>, {t(('?', K))}) -> {t(('?', H))}
  return %y : {t(('?', H))}
}}
"""
    return mlir, inputs, out


def attention(rng, T):
    # Attention experts (mixture of attention heads, MoA): expert e owns the
    # query and output projections of one head, keys and values are shared:
    # y = softmax(rows Wq_e (x Wk)^T / sqrt(D)) (x Wv) Wo_e over all T tokens.
    E, D = 4, 8
    x = rng.standard_normal((T, H))
    router = rng.standard_normal((H, E)) / np.sqrt(H)
    Wq = rng.standard_normal((E, H, D)) / np.sqrt(H)
    Wo = rng.standard_normal((E, D, H)) / np.sqrt(D)
    Wk = rng.standard_normal((H, D)) / np.sqrt(H)
    Wv = rng.standard_normal((H, D)) / np.sqrt(H)
    x, router, Wq, Wo, Wk, Wv = inputs = [f32(a) for a in (x, router, Wq, Wo, Wk, Wv)]
    ids, w = R.route(x @ router, dict(k=K, renormalize=True))
    if len(set(ids.flatten().tolist())) < min(E, T * K):
        return None
    keys, values = x @ Wk, x @ Wv
    out = np.zeros((T, H))
    for tok in range(T):
        for i in range(K):
            e = ids[tok, i]
            s = (x[tok] @ Wq[e]) @ keys.T / np.sqrt(D)
            p = np.exp(s - s.max())
            p /= p.sum()
            out[tok] += w[tok, i] * ((p @ values) @ Wo[e])
    scale = repr(float(np.float32(1.0 / np.sqrt(D))))
    mlir = f"""func.func @main(%x: {t(('?', H))}, %router: {t((H, E))}, %Wq: {t((E, H, D))}, %Wo: {t((E, D, H))}, %Wk: {t((H, D))}, %Wv: {t((H, D))}) -> {t(('?', H))} {{
{plan(E, "renormalize = true")}
  %ed = tensor.empty(%T) : {t(('?', D))}
  %zd = linalg.fill ins(%zero : f32) outs(%ed : {t(('?', D))}) -> {t(('?', D))}
  %keys = linalg.matmul ins(%x, %Wk : {t(('?', H))}, {t((H, D))}) outs(%zd : {t(('?', D))}) -> {t(('?', D))}
  %values = linalg.matmul ins(%x, %Wv : {t(('?', H))}, {t((H, D))}) outs(%zd : {t(('?', D))}) -> {t(('?', D))}
  %ekt = tensor.empty(%T) : {t((D, '?'))}
  %kt = linalg.transpose ins(%keys : {t(('?', D))}) outs(%ekt : {t((D, '?'))}) permutation = [1, 0]
  %rows = moe.generic_experts %x, %tok, %off into %dest {{first_expert = 0, num_experts = {E}}}
      : ({t(('?', H))}, tensor<?xi32>, tensor<{E + 1}xi32>, {t(('?', H))}) -> {t(('?', H))} {{
  ^bb0(%in: {t(('?', H))}, %ex: index):
    %c0i = arith.constant 0 : index
    %n = tensor.dim %in, %c0i : {t(('?', H))}
    %wq = tensor.extract_slice %Wq[%ex, 0, 0] [1, {H}, {D}] [1, 1, 1] : {t((E, H, D))} to {t((H, D))}
    %wo = tensor.extract_slice %Wo[%ex, 0, 0] [1, {D}, {H}] [1, 1, 1] : {t((E, D, H))} to {t((D, H))}
    %eq = tensor.empty(%n) : {t(('?', D))}
    %zq = linalg.fill ins(%zero : f32) outs(%eq : {t(('?', D))}) -> {t(('?', D))}
    %q = linalg.matmul ins(%in, %wq : {t(('?', H))}, {t((H, D))}) outs(%zq : {t(('?', D))}) -> {t(('?', D))}
    %es = tensor.empty(%n, %T) : tensor<?x?xf32>
    %zs = linalg.fill ins(%zero : f32) outs(%es : tensor<?x?xf32>) -> tensor<?x?xf32>
    %s = linalg.matmul ins(%q, %kt : {t(('?', D))}, {t((D, '?'))}) outs(%zs : tensor<?x?xf32>) -> tensor<?x?xf32>
    %en = tensor.empty(%n) : tensor<?xf32>
    %ninf = arith.constant 0xFF800000 : f32
    %m0 = linalg.fill ins(%ninf : f32) outs(%en : tensor<?xf32>) -> tensor<?xf32>
    %m = linalg.reduce ins(%s : tensor<?x?xf32>) outs(%m0 : tensor<?xf32>) dimensions = [1]
      (%a: f32, %b: f32) {{
        %mx = arith.maximumf %a, %b : f32
        linalg.yield %mx : f32
      }}
    %p = linalg.generic {{indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i, j)>],
                          iterator_types = ["parallel", "parallel"]}}
        ins(%s, %m : tensor<?x?xf32>, tensor<?xf32>) outs(%es : tensor<?x?xf32>) {{
      ^bb1(%sv: f32, %mv: f32, %o: f32):
        %sc = arith.constant {scale} : f32
        %d = arith.subf %sv, %mv : f32
        %ds = arith.mulf %d, %sc : f32
        %ex2 = math.exp %ds : f32
        linalg.yield %ex2 : f32
      }} -> tensor<?x?xf32>
    %l0 = linalg.fill ins(%zero : f32) outs(%en : tensor<?xf32>) -> tensor<?xf32>
    %l = linalg.reduce ins(%p : tensor<?x?xf32>) outs(%l0 : tensor<?xf32>) dimensions = [1]
      (%a: f32, %b: f32) {{
        %sm = arith.addf %a, %b : f32
        linalg.yield %sm : f32
      }}
    %pn = linalg.generic {{indexing_maps = [affine_map<(i, j) -> (i, j)>, affine_map<(i, j) -> (i)>, affine_map<(i, j) -> (i, j)>],
                           iterator_types = ["parallel", "parallel"]}}
        ins(%p, %l : tensor<?x?xf32>, tensor<?xf32>) outs(%es : tensor<?x?xf32>) {{
      ^bb1(%pv: f32, %lv: f32, %o: f32):
        %dv = arith.divf %pv, %lv : f32
        linalg.yield %dv : f32
      }} -> tensor<?x?xf32>
    %att = linalg.matmul ins(%pn, %values : tensor<?x?xf32>, {t(('?', D))}) outs(%zq : {t(('?', D))}) -> {t(('?', D))}
    %eh = tensor.empty(%n) : {t(('?', H))}
    %zh = linalg.fill ins(%zero : f32) outs(%eh : {t(('?', H))}) -> {t(('?', H))}
    %r = linalg.matmul ins(%att, %wo : {t(('?', D))}, {t((D, H))}) outs(%zh : {t(('?', H))}) -> {t(('?', H))}
    moe.yield %r : {t(('?', H))}
  }}
  %y = moe.combine %rows, %pos, %w : ({t(('?', H))}, tensor<?x{K}xi32>, {t(('?', K))}) -> {t(('?', H))}
  return %y : {t(('?', H))}
}}
"""
    return mlir, inputs, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["gen", "check"])
    ap.add_argument("dir")
    ap.add_argument("case", nargs="?",
                    choices=["zero-computation", "zero-computation-wide", "padded", "generic",
                             "generic-padded", "generic-residual", "conv", "attention"])
    ap.add_argument("--tokens", type=int, default=9)
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    if a.cmd == "check":
        sys.exit(R.check_case_output(a.dir))
    build = {"zero-computation": zero_computation,
             "zero-computation-wide": lambda rng, T: zero_computation(rng, T, n_ffn=17),
             "padded": padded,
             "generic": generic,
             "generic-padded": lambda rng, T: generic(rng, T, block_size=4),
             "generic-residual": lambda rng, T: generic(rng, T, residual=True),
             "conv": conv, "attention": attention}[a.case]
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    case = build(np.random.default_rng(seed), a.tokens)
    while case is None:  # draw until every expert of interest is chosen
        seed = (seed + 1) % 2**32
        case = build(np.random.default_rng(seed), a.tokens)
    mlir, inputs, out = case
    os.makedirs(a.dir, exist_ok=True)
    open(os.path.join(a.dir, "model.mlir"), "w").write(mlir)
    args = []
    for i, arr in enumerate(inputs):
        p = os.path.join(a.dir, "in%d.npy" % i)
        np.save(p, arr.astype(np.float32))
        args.append("--input=@" + p)
    open(os.path.join(a.dir, "inputs.args"), "w").write(" ".join(args))
    np.save(os.path.join(a.dir, "expected.npy"), out)
    json.dump(dict(case=a.case, seed=seed, tokens=a.tokens), open(os.path.join(a.dir, "case.json"), "w"))


if __name__ == "__main__":
    main()
