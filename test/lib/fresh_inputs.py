#!/usr/bin/env python3
"""Redraws the inputs DIR/in<i>.npy of a generated test case with fresh random
values of the same shape and dtype: floats from N(0, 1), integers uniform in
[0, max + 1) of the old values (e.g. token ids below the vocabulary size).

    fresh_inputs.py DIR
"""

import glob
import os
import sys

import numpy as np


def main():
    directory = sys.argv[1]
    rng = np.random.default_rng()
    paths = sorted(glob.glob(os.path.join(directory, "in[0-9]*.npy")))
    if not paths:
        print("fresh_inputs: no in<i>.npy in %s" % directory)
        return 1
    for path in paths:
        old = np.load(path)
        if np.issubdtype(old.dtype, np.floating):
            new = rng.standard_normal(old.shape).astype(old.dtype)
        else:
            new = rng.integers(0, int(old.max()) + 1, size=old.shape).astype(old.dtype)
        np.save(path, new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
