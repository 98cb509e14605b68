#!/usr/bin/env python3
"""A 16-bit ONNX model of the ops that sum many terms: MatMul (2-D, N-D x
2-D, batched) and Gemm (alpha, beta, C, transB) on long contractions (K =
512), Softmax, ReduceSum, ReduceMean and LayerNormalization over 512
elements; its random inputs and the float64 results of the stored (rounded)
values.

    ops16.py f16|bf16 DIR

Writes DIR/model.onnx, DIR/in0.npy, in1.npy, in2.npy (bf16 as uint16 bits,
the .npy form moe-run reads) and DIR/ref64_<i>.npy for the outputs mm2,
mm3, bmm, gemm, softmax, sum, mean and norm."""

import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "lib"))
from moe_case import store_weights  # noqa: E402

K = 512


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("f16", "bf16"):
        sys.exit(__doc__)
    dtype, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    elem = TensorProto.FLOAT16 if dtype == "f16" else TensorProto.BFLOAT16

    def stored(a):
        """(the values as float64, the bytes as numpy stores them)."""
        data, values = store_weights(a.astype(np.float32), dtype)
        return values.astype(np.float64), data

    def tensor(name, a):
        return helper.make_tensor(name, elem, a.shape, stored(a)[1].tobytes(), raw=True)

    def vi(name, shape):
        return helper.make_tensor_value_info(name, elem, shape)

    w = rng.standard_normal((K, 24)) / np.sqrt(K)
    wt = rng.standard_normal((24, K)) / np.sqrt(K)
    c = rng.standard_normal(24)
    scale = 1.0 + 0.1 * rng.standard_normal(K)
    bias = 0.1 * rng.standard_normal(K)
    a = rng.standard_normal((3, K))
    a3 = rng.standard_normal((2, 3, K))
    b3 = rng.standard_normal((2, K, 5)) / np.sqrt(K)
    n = helper.make_node
    nodes = [
        n("MatMul", ["a", "w"], ["mm2"], name="mm2d"),
        n("MatMul", ["a3", "w"], ["mm3"], name="mm3x2"),
        n("MatMul", ["a3", "b3"], ["bmm"], name="bmm"),
        n("Gemm", ["a", "wt", "c"], ["gemm"], name="gemm0", alpha=1.5, beta=0.5,
          transB=1),
        n("Softmax", ["a"], ["softmax"], name="softmax0", axis=-1),
        n("ReduceSum", ["a", "axes"], ["sum"], name="sum0", keepdims=0),
        n("ReduceMean", ["a3"], ["mean"], name="mean0", axes=[2], keepdims=1),
        n("LayerNormalization", ["a3", "scale", "bias"], ["norm"], name="norm0",
          axis=-1, epsilon=1e-5),
    ]
    graph = helper.make_graph(
        nodes, "g", [vi("a", [3, K]), vi("a3", [2, 3, K]), vi("b3", [2, K, 5])],
        [vi("mm2", [3, 24]), vi("mm3", [2, 3, 24]), vi("bmm", [2, 3, 5]),
         vi("gemm", [3, 24]), vi("softmax", [3, K]), vi("sum", [3]),
         vi("mean", [2, 3, 1]), vi("norm", [2, 3, K])],
        [tensor("w", w), tensor("wt", wt), tensor("c", c), tensor("scale", scale),
         tensor("bias", bias),
         helper.make_tensor("axes", TensorProto.INT64, [1], [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              os.path.join(out, "model.onnx"))
    for i, x in enumerate((a, a3, b3)):
        np.save(os.path.join(out, "in%d.npy" % i), stored(x)[1])
    (a, _), (a3, _), (b3, _) = stored(a), stored(a3), stored(b3)
    (w, _), (wt, _), (c, _) = stored(w), stored(wt), stored(c)
    (scale, _), (bias, _) = stored(scale), stored(bias)
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    centered = a3 - a3.mean(axis=-1, keepdims=True)
    norm = centered / np.sqrt((centered ** 2).mean(axis=-1, keepdims=True) + 1e-5)
    refs = (a @ w, a3 @ w, a3 @ b3, 1.5 * (a @ wt.T) + 0.5 * c,
            e / e.sum(axis=-1, keepdims=True), a.sum(axis=1),
            a3.mean(axis=2, keepdims=True), norm * scale + bias)
    for i, r in enumerate(refs):
        np.save(os.path.join(out, "ref64_%d.npy" % i), r)


if __name__ == "__main__":
    main()
