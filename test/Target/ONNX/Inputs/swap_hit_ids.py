"""Near misses of a GPT-OSS export with a loop over the experts hit.

Usage: swap_hit_ids.py IN.onnx OUT.onnx [--self]
  default  the first iteration's gate_up_proj is gathered at the second
           iteration's id
  --self   that Gather's index is its own output (a cycle: malformed; the
           importer must not recurse forever on it)"""
import sys

import onnx

model = onnx.load(sys.argv[1])
gathers = [n for n in model.graph.node
           if n.op_type == "Gather" and n.input[0] == "experts.gate_up_proj"]
assert len(gathers) >= 2, "no loop over the experts hit"
if sys.argv[3:] == ["--self"]:
    gathers[0].input[1] = gathers[0].output[0]
else:
    gathers[0].input[1] = gathers[1].input[1]
onnx.save(model, sys.argv[2])
