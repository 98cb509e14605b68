"""runtime-checks.test from Python: a failed run-time check raises
moe_mlir.ModelError, and the same loaded model then runs a good input.

Usage: runtime_checks.py MODEL.so DIR   (DIR holds a, b, c and c3 .npy)
"""

import os
import sys

import numpy as np

import moe_mlir

lib, d = sys.argv[1], sys.argv[2]
a, b, c, c3 = (np.load(os.path.join(d, n + ".npy")) for n in ("a", "b", "c", "c3"))
m = moe_mlir.load(lib)
try:
    m.run(a, b, c3)
    print("no error")
except moe_mlir.ModelError as e:
    print("ModelError:", e)
y = m.run(a, b, c)[0]
ref = a.astype(np.float64) + b.astype(np.float64) * c
rel = np.linalg.norm(y - ref) / np.linalg.norm(ref)
print("then: rel %.2e %s" % (rel, "ok" if rel < 1e-6 else "WRONG"))
