"""Generates inputs for the runtime tests and checks their outputs.

Every check compares against a float64 NumPy reference computed from fresh
random inputs and exits non-zero on a mismatch.
"""

import os
import struct
import sys

import numpy as np

rng = np.random.default_rng()


def write_weights(path, arrays):
    """Writes a weights file per docs/CompiledModelABI.md; arrays are laid out
    in order, each at the next multiple of 64. Returns the offsets."""
    data = b""
    offsets = []
    for array in arrays:
        data += b"\0" * (-len(data) % 64)
        offsets.append(len(data))
        data += np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<")).tobytes()
    data += b"\0" * (-len(data) % 64)
    with open(path, "wb") as f:
        f.write(b"MOEWGHT1" + struct.pack("<Q", len(data)) + b"\0" * 48 + data)
    return offsets


def affine_gen(d, version="1.0"):
    rows = int(rng.integers(1, 17))
    x = rng.standard_normal((rows, 4)).astype(np.float32)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    major, minor = (int(v) for v in version.split("."))
    with open(os.path.join(d, "x.npy"), "wb") as f:
        np.lib.format.write_array(f, x, version=(major, minor))
    np.save(os.path.join(d, "w.npy"), w)
    np.save(os.path.join(d, "b.npy"), b)
    assert write_weights(os.path.join(d, "affine.weights"), [w, b]) == [0, 64]


def affine_check(d, out="y.npy"):
    x = np.load(os.path.join(d, "x.npy")).astype(np.float64)
    w = np.load(os.path.join(d, "w.npy")).astype(np.float64)
    b = np.load(os.path.join(d, "b.npy")).astype(np.float64)
    y = np.load(os.path.join(d, out))
    assert y.dtype == np.float32, y.dtype
    assert y.shape == (x.shape[0], 3), y.shape
    np.testing.assert_allclose(y.astype(np.float64), x @ w + b, rtol=1e-5, atol=1e-6)


def affine_bad_inputs(d):
    """Inputs that are wrong in every way moe-run must reject."""
    np.save(os.path.join(d, "wide.npy"), np.zeros((2, 5), np.float32))
    np.save(os.path.join(d, "rank1.npy"), np.zeros(4, np.float32))
    np.save(os.path.join(d, "f64.npy"), np.zeros((2, 4), np.float64))
    np.save(os.path.join(d, "u16.npy"), np.ones((2, 4), np.uint16))
    np.save(os.path.join(d, "fortran.npy"), np.asfortranarray(np.zeros((2, 4), np.float32)))
    np.save(os.path.join(d, "bigendian.npy"), np.zeros((2, 4), ">f4"))
    np.save(os.path.join(d, "complex.npy"), np.zeros((2, 4), np.complex64))
    with open(os.path.join(d, "text.npy"), "w") as f:
        f.write("1 2 3 4\n")
    np.save(os.path.join(d, "good.npy"), np.zeros((2, 4), np.float32))
    with open(os.path.join(d, "good.npy"), "rb") as f:
        data = f.read()
    with open(os.path.join(d, "truncated.npy"), "wb") as f:
        f.write(data[:-3])
    with open(os.path.join(d, "header-cut.npy"), "wb") as f:
        f.write(data[:40])
    with open(os.path.join(d, "bad-header.npy"), "wb") as f:
        f.write(data.replace(b"'shape'", b"'shapf'"))
    with open(os.path.join(d, "control-header.npy"), "wb") as f:
        f.write(data.replace(b"'shape'", b"'sh\npe'"))


def corrupt_weights(src, dst, mode):
    with open(src, "rb") as f:
        data = bytearray(f.read())
    if mode == "bad-magic":
        data[0:8] = b"MOEWGHT0"
    elif mode == "truncated":
        data = data[:-20]
    elif mode == "short-data":
        # A valid header whose data section ends before weight 'b'.
        data[8:16] = struct.pack("<Q", 64)
        data = data[:128]
    elif mode == "tiny":
        data = data[:30]
    else:
        raise SystemExit("unknown mode " + mode)
    with open(dst, "wb") as f:
        f.write(data)


def views_gen(d):
    a = rng.integers(-1000, 1000, (2, 3)).astype(np.int32)
    n = int(rng.integers(2, 12))
    b = rng.standard_normal(n)
    np.save(os.path.join(d, "a.npy"), a)
    np.save(os.path.join(d, "b.npy"), b)


def views_check(d):
    a = np.load(os.path.join(d, "a.npy"))
    b = np.load(os.path.join(d, "b.npy"))
    out = {name: np.load(os.path.join(d, name + ".npy"))
           for name in ["t", "u", "alias", "tail", "sum", "positive", "constant"]}
    expected = {
        "t": a.T,
        "u": a,
        "alias": b,
        "tail": b[1:],
        "sum": np.array(np.sum(b.astype(np.float64))),
        "positive": b > 0,
        "constant": np.array([1.5, -2.0, 3.25], np.float32),
    }
    for name, want in expected.items():
        got = out[name]
        assert got.dtype == want.dtype, (name, got.dtype, want.dtype)
        assert got.shape == want.shape, (name, got.shape, want.shape)
        if got.dtype.kind == "f":
            np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)


def tier_gen(d):
    """Weights and expert ids of Inputs/fake_tier_model.c: 6 experts of two
    2x4 matrices, every expert chosen (so 3 slots need batches)."""
    w = rng.standard_normal((6, 2, 4)).astype(np.float32)
    v = rng.standard_normal((6, 2, 4)).astype(np.float32)
    np.save(os.path.join(d, "w.npy"), w)
    np.save(os.path.join(d, "v.npy"), v)
    assert write_weights(os.path.join(d, "tier.weights"), [w, v]) == [0, 192]
    ids = np.concatenate([rng.permutation(6), rng.integers(-1, 6, 7)]).astype(np.int32)
    np.save(os.path.join(d, "ids.npy"), ids)


def tier_check(d, out):
    """y[i] = (w[ids[i]], v[ids[i]]) exactly (rows of ids -1 are not
    checked)."""
    w = np.load(os.path.join(d, "w.npy")).reshape(6, 8)
    v = np.load(os.path.join(d, "v.npy")).reshape(6, 8)
    ids = np.load(os.path.join(d, "ids.npy"))
    y = np.load(os.path.join(d, out))
    assert y.shape == (len(ids), 16), y.shape
    for i, e in enumerate(ids):
        if e >= 0:
            np.testing.assert_array_equal(y[i], np.concatenate([w[e], v[e]]),
                                          err_msg="row %d (expert %d)" % (i, e))


def main():
    command, args = sys.argv[1], sys.argv[2:]
    {
        "affine-gen": affine_gen,
        "affine-check": affine_check,
        "affine-bad-inputs": affine_bad_inputs,
        "corrupt-weights": corrupt_weights,
        "views-gen": views_gen,
        "views-check": views_check,
        "tier-gen": tier_gen,
        "tier-check": tier_check,
    }[command](*args)


if __name__ == "__main__":
    main()
