#!/usr/bin/env python3
"""Rewrites an f32 ONNX model as an f16 one, the way a model exported in half
precision holds its data: float initializers, Constant tensors, graph inputs,
outputs and value_info, and Casts to float become float16.

    onnx_to_f16.py IN.onnx OUT.onnx [IN.npy OUT.npy ...]

Each IN.npy OUT.npy pair after the models is an input converted likewise.
(This machine's torch cannot run, hence export, half-precision matmuls on the
CPU.)"""

import sys

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

F32, F16 = TensorProto.FLOAT, TensorProto.FLOAT16


def to_f16(tensor):
    if tensor.data_type == F32:
        a = numpy_helper.to_array(tensor).astype(np.float16)
        tensor.CopyFrom(numpy_helper.from_array(a, tensor.name))


def main():
    if len(sys.argv) < 3 or len(sys.argv) % 2 != 1:
        sys.exit(__doc__)
    model = onnx.load(sys.argv[1])
    g = model.graph
    for t in g.initializer:
        to_f16(t)
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.tensor_type.elem_type == F32:
            vi.type.tensor_type.elem_type = F16
    for node in g.node:
        for a in node.attribute:
            if node.op_type == "Cast" and a.name == "to" and a.i == F32:
                a.i = F16
            if a.type == onnx.AttributeProto.TENSOR:
                to_f16(a.t)
    onnx.save(model, sys.argv[2])
    for src, dst in zip(sys.argv[3::2], sys.argv[4::2]):
        np.save(dst, np.load(src).astype(np.float16))


if __name__ == "__main__":
    main()
