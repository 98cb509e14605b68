"""Expected data of test/Compiler/weights.mlir (run with /usr/bin/python3).
  data FILE    check the weights file's header and tensors
  gen DIR      write DIR/x.npy
  check DIR    compare DIR/o0..o3.npy with a float64 reference
"""

import struct
import sys

import numpy as np

R = (np.arange(32) - 16) / 4
I8 = np.array([(k * 37) % 256 - 128 for k in range(100)], dtype=np.int8)
I1 = np.array([k % 3 == 0 for k in range(80)])


def report(name, ok):
    print(name, ("matches" if ok else "differs") if sys.argv[1] == "data" else ("OK" if ok else "WRONG"))


def data(path):
    raw = open(path, "rb").read()
    assert raw[:8] == b"MOEWGHT1", raw[:8]
    print("size", struct.unpack("<Q", raw[8:16])[0], "file", len(raw))
    body = raw[64:]
    report("r", np.array_equal(np.frombuffer(body, np.float32, 32, 0), R.astype(np.float32)))
    report("i8", np.array_equal(np.frombuffer(body, np.int8, 100, 128), I8))
    report("i1", np.array_equal(np.frombuffer(body, np.uint8, 80, 256), I1.astype(np.uint8)))


def gen(directory):
    x = np.random.default_rng(7).standard_normal(32).astype(np.float32)
    np.save(f"{directory}/x.npy", x)


def check(directory):
    x = np.load(f"{directory}/x.npy").astype(np.float64)
    out = [np.load(f"{directory}/o{i}.npy") for i in range(4)]
    report("sum", np.allclose(out[0], x + 2 * R, rtol=1e-6, atol=1e-6))
    report("i8", out[1].dtype == np.int8 and np.array_equal(out[1], I8))
    report("i1", out[2].dtype == np.bool_ and np.array_equal(out[2], I1))
    report("small", np.array_equal(out[3], [1.0, 2.0, 3.0, 4.0]))


if __name__ == "__main__":
    {"data": data, "gen": gen, "check": check}[sys.argv[1]](*sys.argv[2:])
