#!/usr/bin/env python3
"""Compares an output .npy with the float64 reference: relative L2 error.

    /usr/bin/python3 check.py OUT.npy EXPECTED.npy [--tol 1e-5]
"""

import argparse
import sys

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("out")
ap.add_argument("expected")
ap.add_argument("--tol", type=float, default=1e-5)
args = ap.parse_args()
y = np.load(args.out).astype(np.float64)
ref = np.load(args.expected)
if y.shape != ref.shape:
    sys.exit("check: shape %s, expected %s" % (y.shape, ref.shape))
err = np.linalg.norm(y - ref) / np.linalg.norm(ref)
print("check: relative L2 error vs float64 reference = %.3e (tolerance %.0e)" % (err, args.tol))
sys.exit(0 if err <= args.tol else 1)
