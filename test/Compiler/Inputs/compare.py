"""Helpers for the moe-compile tests: inputs, float64 references, weights.

Run with /usr/bin/python3 (lit's %python), which has numpy.
  gen DIR ROWS               write DIR/x.npy: ROWS x 16 random float32
  check-affine DIR           compare DIR/y.npy and DIR/z.npy with x·W + b, x·S
  check-weights FILE         check the header and the data of affine's weights
"""

import struct
import sys

import numpy as np


def affine_constants():
    W = np.array([[((8 * i + j) % 7 - 3) / 8 for j in range(8)] for i in range(16)])
    b = np.array([(j - 4) / 4 for j in range(8)])
    S = np.full((16, 8), 0.25)
    return W, b, S


def gen(directory, rows):
    rng = np.random.default_rng(1234)
    x = rng.standard_normal((int(rows), 16)).astype(np.float32)
    np.save(f"{directory}/x.npy", x)


def check_close(name, got, want):
    if got.shape != want.shape:
        sys.exit(f"{name}: shape {got.shape}, expected {want.shape}")
    err = np.max(np.abs(got.astype(np.float64) - want)) if want.size else 0.0
    if not np.allclose(got, want, rtol=1e-5, atol=1e-5):
        sys.exit(f"{name}: max abs error {err}")
    print(f"{name}: OK {got.dtype} {'x'.join(map(str, got.shape))}")


def check_affine(directory):
    W, b, S = affine_constants()
    x = np.load(f"{directory}/x.npy").astype(np.float64)
    check_close("y", np.load(f"{directory}/y.npy"), x @ W + b)
    check_close("z", np.load(f"{directory}/z.npy"), x @ S)


def check_weights(path):
    data = open(path, "rb").read()
    magic, size = data[:8], struct.unpack("<Q", data[8:16])[0]
    if data[16:64] != bytes(48):
        sys.exit("header bytes 16..64 are not zero")
    print(f"magic {magic.decode()} size {size} file {len(data)}")
    W, _, S = affine_constants()
    got_w = np.frombuffer(data, np.float32, 128, 64).reshape(16, 8)
    got_s = np.frombuffer(data, np.float32, 128, 64 + 512).reshape(16, 8)
    print("W", "matches" if np.array_equal(got_w, W.astype(np.float32)) else "differs")
    print("S", "matches" if np.array_equal(got_s, S.astype(np.float32)) else "differs")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"gen": gen, "check-affine": check_affine, "check-weights": check_weights}[command](*args)
