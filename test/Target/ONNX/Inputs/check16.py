#!/usr/bin/env python3
"""Checks a 16-bit model's output against its float64 reference.

    check16.py OUT.npy REF64.npy

OUT is f16 (<f2) or bf16 (its bits as uint16, as moe-run writes them). Prints
the relative L2 error against REF64 and against REF64 rounded to OUT's type
(round to nearest even), and exits non-zero unless the first is at most the
type's unit roundoff u (2^-11 for f16, 2^-8 for bf16: a result rounded once
is within u of the exact one, elementwise) and the second at most u / 4 (the
result is the float64 one rounded once, up to a few last-bit differences
where f32 arithmetic and float64 straddle a rounding boundary; rounding each
op's result instead, as the graph's own ops do, is about u)."""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "lib"))
from moe_case import from_bf16_bits, store_weights  # noqa: E402


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, ref = np.load(sys.argv[1]), np.load(sys.argv[2]).astype(np.float64)
    if out.dtype == np.uint16:
        name, unit = "bf16", 2.0 ** -8
        out = from_bf16_bits(out)
        rounded = store_weights(ref.astype(np.float32), "bf16")[1]
    elif out.dtype == np.float16:
        name, unit = "f16", 2.0 ** -11
        rounded = store_weights(ref.astype(np.float32), "f16")[1]
    else:
        sys.exit("check16: %s is %s, not f16 or bf16 bits" % (sys.argv[1], out.dtype))
    if out.shape != ref.shape:
        sys.exit("check16: shape %s, expected %s" % (out.shape, ref.shape))
    out, rounded = out.astype(np.float64), rounded.astype(np.float64)
    norm = max(np.linalg.norm(ref), 1e-300)
    err = np.linalg.norm(out - ref) / norm
    rerr = np.linalg.norm(out - rounded) / norm
    ok = err <= unit and rerr <= unit / 4
    print("%s %s: relative L2 error %.2e (u = %.1e), against the rounded reference %.2e"
          % (name, "ok" if ok else "FAIL", err, unit, rerr))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
