"""Removes the outputs of one node of an ONNX model (a malformed variant of
an exported model).

Usage: drop_outputs.py IN.onnx OUT.onnx NODE"""
import sys

import onnx

model = onnx.load(sys.argv[1])
for node in model.graph.node:
    if node.name == sys.argv[3]:
        del node.output[:]
        break
else:
    sys.exit("no node '%s'" % sys.argv[3])
onnx.save(model, sys.argv[2])
