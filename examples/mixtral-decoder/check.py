#!/usr/bin/env python3
"""Compares the compiled model's logits with PyTorch's float64 logits of the
same module: relative L2 error, and the argmax token of every position.

    /usr/bin/python3 check.py DIR [--tol 1e-5]

DIR holds y.npy (moe-run's output), expected.npy (PyTorch, float64) and
torch_f32.npy (PyTorch, float32: its own error is printed for scale).
"""

import argparse
import os
import sys

import numpy as np


def rel_l2(a, ref):
    return np.linalg.norm(a.astype(np.float64) - ref) / np.linalg.norm(ref)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--tol", type=float, default=1e-5)
    args = ap.parse_args()
    y = np.load(os.path.join(args.dir, "y.npy"))
    ref = np.load(os.path.join(args.dir, "expected.npy"))
    ref32 = np.load(os.path.join(args.dir, "torch_f32.npy"))
    if y.dtype != np.float32 or y.shape != ref.shape:
        sys.exit("check: got %s %s, expected float32 %s"
                 % (y.dtype, y.shape, ref.shape))
    err = rel_l2(y, ref)
    same = int((y.argmax(-1) == ref.argmax(-1)).sum())
    print("check: logits %s; relative L2 error vs PyTorch float64 = %.3e "
          "(tolerance %.0e; PyTorch float32's own: %.3e); argmax tokens "
          "agree at %d of %d positions"
          % ("x".join(map(str, y.shape)), err, args.tol, rel_l2(ref32, ref),
             same, y.shape[0] * y.shape[1]))
    if err > args.tol:
        print("check: FAIL")
        sys.exit(1)
    print("check: OK")


if __name__ == "__main__":
    main()
