"""Sets the value of one Constant node of an ONNX model (near misses and
malformed variants of exported models).

Usage: set_constant.py IN.onnx OUT.onnx NAME VALUE
  NAME   the Constant's output; VALUE an integer, stored as int64 [1]"""
import sys

import numpy as np
import onnx
from onnx import numpy_helper

model = onnx.load(sys.argv[1])
for node in model.graph.node:
    if node.op_type == "Constant" and node.output[0] == sys.argv[3]:
        node.attribute[0].t.CopyFrom(numpy_helper.from_array(
            np.array([int(sys.argv[4])], np.int64)))
        break
else:
    sys.exit("no Constant '%s'" % sys.argv[3])
onnx.save(model, sys.argv[2])
