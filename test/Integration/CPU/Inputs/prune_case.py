#!/usr/bin/env python3
"""moe-prune-experts end to end: a two-layer model (layer 0 with constant
weights, biases, a selection bias and a shared expert; layer 1 with weights
as inputs), a random routing profile, and the float64 reference of the same
layers routing among the kept experts only.

    prune_case.py gen DIR --keep N [--tokens T] [--seed S]
    prune_case.py check DIR

`gen` writes DIR/model.mlir, DIR/profile.json, DIR/in*.npy, DIR/inputs.args,
DIR/keep and DIR/expected.npy; `check` compares DIR/out.npy (relative L2 <=
1e-5).
"""

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "lib"))
import moe_reference as R  # noqa: E402

H, F, Fs, E = 32, 24, 16, 8
ROUTING = [dict(k=2, renormalize=True), dict(k=2, scoring="sigmoid", scale=1.5)]
EXPERT = dict(kind="gated", activation="silu")


def f32(a):
    return a.astype(np.float32).astype(np.float64)


def t(shape):
    return "tensor<%sxf32>" % "x".join("?" if d is None else str(d) for d in shape)


def const(name, a):
    raw = np.ascontiguousarray(a.astype(np.float32)).tobytes().hex().upper()
    return "  %%%s = arith.constant dense<\"0x%s\"> : %s" % (name, raw, t(a.shape))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cmd", choices=["gen", "check"])
    ap.add_argument("dir")
    ap.add_argument("--keep", type=int)
    ap.add_argument("--tokens", type=int, default=19)
    ap.add_argument("--seed", type=int)
    a = ap.parse_args()
    if a.cmd == "check":
        info = json.load(open(os.path.join(a.dir, "case.json")))
        sys.exit(R.check_case_output(a.dir, "prune keep=%d" % info["keep"]))

    seed = a.seed if a.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = np.random.default_rng(seed)
    T, keep = a.tokens, a.keep
    rnd = lambda *s, fan=1: f32(rng.standard_normal(s) / np.sqrt(fan))
    x = rnd(T, H)
    layers = []
    for _ in range(2):
        layers.append(dict(router=rnd(H, E, fan=H), gate=rnd(E, H, F, fan=H),
                           up=rnd(E, H, F, fan=H), down=rnd(E, F, H, fan=F)))
    l0 = layers[0]
    l0.update(selection_bias=f32(0.1 * rng.standard_normal(E)), gate_bias=rnd(E, F),
              up_bias=rnd(E, F), down_bias=rnd(E, H), shared_gate=rnd(H, Fs, fan=H),
              shared_up=rnd(H, Fs, fan=H), shared_down=rnd(Fs, H, fan=Fs))
    # Counts with ties (few distinct values) so the tie rule matters.
    counts = [rng.integers(0, 6, E).tolist() for _ in range(2)]

    # Reference: each layer routes among its kept experts only.
    h = x
    for layer, routing, c in zip(layers, ROUTING, counts):
        kept = sorted(sorted(range(E), key=lambda e: (-c[e], e))[:keep])
        w = {n: (v[:, kept] if n == "router" else v[kept] if n in (
            "selection_bias", "gate", "up", "down", "gate_bias", "up_bias", "down_bias") else v)
            for n, v in layer.items()}
        h = R.layer(h, w["router"], routing, EXPERT, w["gate"], w["up"], w["down"],
                    w.get("gate_bias"), w.get("up_bias"), w.get("down_bias"),
                    w.get("selection_bias"), w.get("shared_gate"), w.get("shared_up"),
                    w.get("shared_down"))
    expected = h

    act = t((None, H))
    body = [const(n, v) for n, v in l0.items()]
    body.append(f"""  %h = moe.layer %x, %router selection_bias(%selection_bias : {t((E,))})
      gate(%gate : {t((E, H, F))}) up(%up : {t((E, H, F))}) down(%down : {t((E, F, H))})
      gate_bias(%gate_bias : {t((E, F))}) up_bias(%up_bias : {t((E, F))}) down_bias(%down_bias : {t((E, H))})
      shared_gate(%shared_gate : {t((H, Fs))}) shared_up(%shared_up : {t((H, Fs))}) shared_down(%shared_down : {t((Fs, H))})
      {{expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2, renormalize = true>}}
      : ({act}, {t((H, E))}) -> {act}
  %y = moe.layer %h, %r1 gate(%g1 : {t((E, H, F))}) up(%u1 : {t((E, H, F))}) down(%d1 : {t((E, F, H))})
      {{expert = #moe.expert<gated, silu>, routing = #moe.routing<k = 2, scoring = sigmoid, scale = 1.5>}}
      : ({act}, {t((H, E))}) -> {act}
  return %y : {act}""")
    params = [f"%x: {act}", f"%r1: {t((H, E))}", f"%g1: {t((E, H, F))}",
              f"%u1: {t((E, H, F))}", f"%d1: {t((E, F, H))}"]
    inputs = [x, layers[1]["router"], layers[1]["gate"], layers[1]["up"], layers[1]["down"]]
    os.makedirs(a.dir, exist_ok=True)
    with open(os.path.join(a.dir, "model.mlir"), "w") as f:
        f.write("func.func @main(%s) -> %s {\n%s\n}\n" % (", ".join(params), act, "\n".join(body)))
    json.dump({"layers": [{"counts": c} for c in counts]},
              open(os.path.join(a.dir, "profile.json"), "w"))
    args = []
    for i, arr in enumerate(inputs):
        p = os.path.join(a.dir, "in%d.npy" % i)
        np.save(p, arr.astype(np.float32))
        args.append("--input=@" + p)
    open(os.path.join(a.dir, "inputs.args"), "w").write(" ".join(args))
    np.save(os.path.join(a.dir, "expected.npy"), expected)
    json.dump(dict(keep=keep, seed=seed, tokens=T), open(os.path.join(a.dir, "case.json"), "w"))


if __name__ == "__main__":
    main()
