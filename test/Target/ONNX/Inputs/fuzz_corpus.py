"""Writes the seed corpus of moe-onnx-fuzz into DIR: small valid models of
gen.py and e2e.py (standard ops, com.microsoft.MoE, the indexing ops). The
torch.onnx.export models of torch_models.py (which the raising matches) are
added by the callers, torch being slow to start.

Usage: fuzz_corpus.py DIR
"""

import os
import sys

import numpy as np
import onnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import e2e  # noqa: E402
import gen  # noqa: E402


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name in ("elementwise", "matmul", "routing", "shapes", "dynamic",
                 "shape_chain", "moe_swiglu", "moe_gelu_3d"):
        onnx.save(gen.MODELS[name](), os.path.join(out, "gen-%s.onnx" % name))
    for name in ("routing", "dynamic", "indexing", "moe"):
        model = e2e.MODELS[name](np.random.default_rng(0))[0]
        onnx.save(model, os.path.join(out, "e2e-%s.onnx" % name))


if __name__ == "__main__":
    main()
