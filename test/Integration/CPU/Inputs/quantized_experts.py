#!/usr/bin/env python3
"""moe.quantized_experts models (int8 / int4 expert weights) with float64
references that dequantize the same codes independently (moe_reference).

    quantized_experts.py gen DIR {int8|int4|mixed} [--tokens T] [--seed S]
    quantized_experts.py check DIR

- int8: gated SwiGLU, 8-bit codes, gate/up in blocks of 32 along H, down with
  one scale per row.
- int4: gated SwiGLU, 4-bit codes (two per byte), blocks of 16 everywhere.
- mixed: experts 0-3 at 8 bits and 4-7 at 4 bits (two ops filling one
  buffer), biases on the 4-bit experts.
- int8-zp, int4-zp: as int8 and int4 but quantized asymmetrically (each
  block's codes span its [min, max], with an explicit zero point per block:
  the `*_zero_points` operands).

`gen` writes DIR/model.mlir (weights as constants, x as the input),
DIR/in0.npy, DIR/inputs.args and DIR/expected.npy; `check` compares
DIR/out.npy (relative L2 <= 1e-5: the reference uses the same codes, so the
only error is float32 arithmetic).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "lib"))
import moe_reference as R  # noqa: E402

H, F, E, K = 64, 96, 8, 2
SWIGLU = dict(kind="gated", activation="silu")


def quantize(rng, w, bits, blocks, asymmetric=False):
    """Quantization of w [n, N, Kr]: symmetric (per-block scales from the
    block's max |w|, zero point 2^(bits - 1)) or asymmetric (each block's
    [min, max] onto [0, 2^bits - 1], an integer zero point per block); codes
    rounded and clipped. Returns (packed bytes as int8 [n, N, Kr * bits / 8],
    scales float32 [n, N, blocks], zero points float32 [n, N, blocks] or
    None)."""
    n, rows, red = w.shape
    top = (1 << bits) - 1
    wb = w.reshape(n, rows, blocks, red // blocks)
    if asymmetric:
        # Blocks shifted off zero, so that the zero points spread over the
        # code range instead of sitting at 2^(bits - 1).
        wb = wb + rng.uniform(-1.0, 1.0, wb.shape[:-1] + (1,)) * np.abs(wb).max(axis=-1,
                                                                           keepdims=True)
        lo, hi = wb.min(axis=-1), wb.max(axis=-1)
        scales = ((hi - lo) / top).astype(np.float32)
        zp = np.clip(np.rint(-lo / scales.astype(np.float64)), 0, top).astype(np.float32)
    else:
        zp = np.full(wb.shape[:-1], 1 << (bits - 1), np.float32)
        scales = (np.abs(wb).max(axis=-1) / ((1 << (bits - 1)) - 1)).astype(np.float32)
    codes = np.rint(wb / scales[..., None].astype(np.float64)) + zp[..., None]
    codes = np.clip(codes, 0, top).astype(np.uint8).reshape(n, rows, red)
    if bits == 4:
        codes = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    return codes.view(np.int8), scales, (zp if asymmetric else None)


def hex_const(name, a, elt):
    shape = "x".join(str(d) for d in a.shape)
    raw = np.ascontiguousarray(a).tobytes().hex().upper()
    return '  %%%s = arith.constant dense<"0x%s"> : tensor<%sx%s>' % (name, raw, shape, elt)


def ttype(a, elt):
    return "tensor<%sx%s>" % ("x".join(str(d) for d in a.shape), elt)


def expert_group(rng, prefix, n, bits, gate_up_blocks, down_blocks, biases,
                 asymmetric=False):
    """Random float weights for n experts, quantized; returns the constants'
    MLIR, the operand text, and the dequantized float64 [H,F]/[F,H] weights."""
    gate = rng.standard_normal((n, F, H)) / np.sqrt(H)
    up = rng.standard_normal((n, F, H)) / np.sqrt(H)
    down = rng.standard_normal((n, H, F)) / np.sqrt(F)
    consts, operands, deq, zero_points = [], [], {}, []
    for name, w, blocks in (("gate", gate, gate_up_blocks), ("up", up, gate_up_blocks),
                            ("down", down, down_blocks)):
        q, s, zp = quantize(rng, w, bits, blocks, asymmetric)
        consts += [hex_const(prefix + name, q, "i8"), hex_const(prefix + name + "_s", s, "f32")]
        operands.append("%s(%%%s, %%%s : %s, %s)" % (name, prefix + name, prefix + name + "_s",
                                                     ttype(q, "i8"), ttype(s, "f32")))
        deq[name] = np.swapaxes(R.dequantize(q, s, bits, zp), 1, 2)  # [n, K, N]
        if zp is not None:
            zero_points.append((name, zp))
    if biases:
        for name, size in (("gate_bias", F), ("up_bias", F), ("down_bias", H)):
            bvec = rng.standard_normal((n, size)).astype(np.float32)
            consts.append(hex_const(prefix + name, bvec, "f32"))
            operands.append("%s(%%%s : %s)" % (name, prefix + name, ttype(bvec, "f32")))
            deq[name] = bvec.astype(np.float64)
    # After the biases, as the op's assembly format orders them.
    for name, zp in zero_points:
        consts.append(hex_const(prefix + name + "_zp", zp, "f32"))
        operands.append("%s_zero_points(%%%s : %s)" % (name, prefix + name + "_zp",
                                                       ttype(zp, "f32")))
    return consts, " ".join(operands), deq


def build(rng, T, case):
    x = rng.standard_normal((T, H)).astype(np.float32)
    router = (rng.standard_normal((H, E)) / np.sqrt(H)).astype(np.float32)
    asymmetric = case.endswith("-zp")
    if case.startswith("int8"):
        groups = [(0, E, 8, 2, 1, False)]
    elif case.startswith("int4"):
        groups = [(0, E, 4, H // 16, F // 16, case == "int4-zp")]
    else:
        groups = [(0, 4, 8, 1, 3, False), (4, 4, 4, 4, 1, True)]
    consts = [hex_const("router", router, "f32")]
    ops, experts = [], {}
    dest = "%dest"
    for i, (first, n, bits, gub, db, biases) in enumerate(groups):
        c, operands, deq = expert_group(rng, "g%d_" % i, n, bits, gub, db, biases, asymmetric)
        consts += c
        for j in range(n):
            experts[first + j] = {k: v[j] for k, v in deq.items()}
        ops.append("""  %%r%d = moe.quantized_experts %%x, %%tok, %%off into %s
      %s
      {bits = %d, first_expert = %d, expert = #moe.expert<gated, silu>}
      : (tensor<?x%dxf32>, tensor<?xi32>, tensor<%dxi32>, tensor<?x%dxf32>) -> tensor<?x%dxf32>"""
                   % (i, dest, operands, bits, first, H, E + 1, H, H))
        dest = "%%r%d" % i
    x64, router64 = x.astype(np.float64), router.astype(np.float64)
    ids, w = R.route(x64 @ router64, dict(k=K, renormalize=True))
    out = np.zeros((T, H))
    for tok in range(T):
        for i in range(K):
            e = experts[ids[tok, i]]
            out[tok] += w[tok, i] * R.expert_ffn(x64[tok][None], SWIGLU, e["gate"], e["up"],
                                                 e["down"], e.get("gate_bias"),
                                                 e.get("up_bias"), e.get("down_bias"))[0]
    act = "tensor<?x%dxf32>" % H
    mlir = """func.func @main(%%x: %s {moe.name = "x"}) -> %s {
%s
  %%c0 = arith.constant 0 : index
  %%zero = arith.constant 0.0 : f32
  %%T = tensor.dim %%x, %%c0 : %s
  %%e = tensor.empty(%%T) : tensor<?x%dxf32>
  %%z = linalg.fill ins(%%zero : f32) outs(%%e : tensor<?x%dxf32>) -> tensor<?x%dxf32>
  %%logits = linalg.matmul ins(%%x, %%router : %s, tensor<%dx%dxf32>) outs(%%z : tensor<?x%dxf32>) -> tensor<?x%dxf32>
  %%ids, %%w = moe.route %%logits {routing = #moe.routing<k = %d, renormalize = true>}
      : tensor<?x%dxf32> -> tensor<?x%dxi32>, tensor<?x%dxf32>
  %%tok, %%off, %%pos = moe.dispatch %%ids {num_experts = %d}
      : tensor<?x%dxi32> -> tensor<?xi32>, tensor<%dxi32>, tensor<?x%dxi32>
  %%ck = arith.constant %d : index
  %%R = arith.muli %%T, %%ck : index
  %%dest = tensor.empty(%%R) : %s
%s
  %%y = moe.combine %s, %%pos, %%w : (%s, tensor<?x%dxi32>, tensor<?x%dxf32>) -> %s
  return %%y : %s
}
""" % (act, act, "\n".join(consts), act, E, E, E, act, H, E, E, E, K, E, K, K, E, K, E + 1, K,
       K, act, "\n".join(ops), dest, act, K, K, act, act)
    return mlir, x, out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["gen", "check"])
    ap.add_argument("dir")
    ap.add_argument("case", nargs="?", choices=["int8", "int4", "mixed", "int8-zp", "int4-zp"])
    ap.add_argument("--tokens", type=int, default=9)
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    if a.cmd == "check":
        sys.exit(R.check_case_output(a.dir))
    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    mlir, x, out = build(np.random.default_rng(seed), a.tokens, a.case)
    os.makedirs(a.dir, exist_ok=True)
    open(os.path.join(a.dir, "model.mlir"), "w").write(mlir)
    p = os.path.join(a.dir, "in0.npy")
    np.save(p, x)
    open(os.path.join(a.dir, "inputs.args"), "w").write("--input=@" + p)
    np.save(os.path.join(a.dir, "expected.npy"), out)
    json.dump(dict(case=a.case, seed=seed, tokens=a.tokens),
              open(os.path.join(a.dir, "case.json"), "w"))
    print("quantized_experts: %s seed=%d T=%d -> %s" % (a.case, seed, a.tokens, a.dir))


if __name__ == "__main__":
    main()
