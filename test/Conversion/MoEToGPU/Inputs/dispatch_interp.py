"""The moe.dispatch kernels of convert-moe-to-gpu on the SIMT interpreter of
test/lib/kernel_interp.py, against a numpy reference of the op's semantics.

    dispatch_interp.py MOE_OPT

Each case lowers one `moe.dispatch` (experts, k, block size, capacity
factor), runs its host function on the interpreter (the host picks the
single-block kernel or count/scan/place at run time) on expert ids drawn
with -1 (no expert), ids out of range and skew (many equal ids in a warp,
drops at capacity), and compares all three results exactly: every row of
`token_indices` (fresh device memory holds a sentinel, so a row nobody
writes shows), the offsets and the positions. Prints one line per case and
the kernels launched; exits non-zero if any fails.
"""

import math
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "lib"))
import kernel_interp as ki  # noqa: E402

MOE_OPT = sys.argv[1] if len(sys.argv) > 1 else "moe-opt"


def lower(E, k, block_size, capacity_factor):
    mlir = """
func.func @dispatch(%%ids: tensor<?x%dxi32>) -> (tensor<?xi32>, tensor<%dxi32>, tensor<?x%dxi32>) {
  %%tok, %%off, %%pos = moe.dispatch %%ids {num_experts = %d, block_size = %d, capacity_factor = %r}
      : tensor<?x%dxi32> -> tensor<?xi32>, tensor<%dxi32>, tensor<?x%dxi32>
  return %%tok, %%off, %%pos : tensor<?xi32>, tensor<%dxi32>, tensor<?x%dxi32>
}
""" % (k, E + 1, k, E, block_size, float(capacity_factor), k, E + 1, k, E + 1, k)
    out = subprocess.run([MOE_OPT, "--convert-moe-to-gpu", "--canonicalize", "--cse",
                          "--mlir-print-op-generic"], input=mlir, capture_output=True, text=True)
    if out.returncode:
        sys.exit(out.stderr)
    return ki.parse_module(out.stdout)


def reference(ids, E, block_size, capacity_factor):
    """token_indices, expert_offsets, positions as moe.dispatch defines them."""
    T, k = ids.shape
    capacity = T * k
    if capacity_factor > 0:
        capacity = math.ceil(capacity_factor * (T * k) / E)
    rows = [[] for _ in range(E)]
    for t in range(T):
        for j in range(k):
            e = int(ids[t, j])
            if 0 <= e < E and len(rows[e]) < capacity:
                rows[e].append((t, j))
    tokens = np.full(T * k + E * (block_size - 1), -1, np.int64)
    offsets = np.zeros(E + 1, np.int64)
    positions = np.full((T, k), -1, np.int64)
    for e in range(E):
        for r, (t, j) in enumerate(rows[e]):
            tokens[offsets[e] + r] = t
            positions[t, j] = offsets[e] + r
        offsets[e + 1] = offsets[e] + -(-len(rows[e]) // block_size) * block_size
    return tokens, offsets, positions


def draw(rng, T, k, E, skew):
    """Ids in [0, E), some -1 and some out of range; with `skew` most
    assignments go to a few experts (capacity drops, long runs of equal ids
    in a warp)."""
    if skew:
        ids = rng.choice(min(E, 3), size=(T, k))
        ids = np.where(rng.random((T, k)) < 0.2, rng.integers(0, E, (T, k)), ids)
    else:
        ids = rng.integers(0, E, (T, k))
    ids = np.where(rng.random((T, k)) < 0.05, -1, ids)
    ids = np.where(rng.random((T, k)) < 0.02, E + rng.integers(0, 3, (T, k)), ids)
    return ids.astype(np.int32)


def run(name, E, k, block_size, capacity_factor, tokens, skew=False, seed=0):
    module = lower(E, k, block_size, capacity_factor)
    rng = np.random.default_rng(seed)
    ok = True
    for T in tokens:
        ids = draw(rng, T, k, E, skew)
        log = []
        got = ki.run_host(module, [ids], log=log)
        want = reference(ids, E, block_size, capacity_factor)
        launched = ",".join(n.replace("moe_dispatch_", "") for n, grid, _ in log if 0 not in grid)
        for label, g, w in zip(("token_indices", "offsets", "positions"), got, want):
            if g.shape != w.shape or not np.array_equal(g, w):
                ok = False
                bad = np.argwhere(g != w) if g.shape == w.shape else "shape %s" % (g.shape,)
                print("FAIL %s T=%d %s: %s" % (name, T, label, str(bad[:5]).replace("\n", " ")))
        print("%s %s T=%d kernels %s" % ("PASS" if ok else "FAIL", name, T, launched))
    return ok


def main():
    ok = True
    # Mixtral-like: one block holds 512 tokens of k = 2.
    ok &= run("E8-k2", 8, 2, 1, 0.0, [0, 1, 7, 255, 256, 257, 512, 513, 700, 3000])
    # Capacity drops (first in token order) and block padding, in one block and over chunks.
    ok &= run("E8-k2-capacity-pad", 8, 2, 16, 1.25, [0, 1, 37, 700], skew=True, seed=1)
    ok &= run("E8-k1-switch", 8, 1, 4, 1.0, [5, 1024, 1025, 2500], skew=True, seed=2)
    # 64 experts, k = 8: a chunk is 128 tokens.
    ok &= run("E64-k8", 64, 8, 1, 0.0, [1, 128, 129, 300], seed=3)
    # 9 chunks: the scan kernel's unrolled steps and its remainder.
    ok &= run("E64-k8-capacity", 64, 8, 8, 1.0, [128, 129, 300, 1100], skew=True, seed=4)
    # Many experts: fewer warps per block, more ballots per pass.
    ok &= run("E1000-k3", 1000, 3, 2, 0.0, [3, 171, 400], seed=5)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
