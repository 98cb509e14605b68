#!/usr/bin/env python3
"""Builds the Mixtral-style decoder of model.py with random weights, exports it
to ONNX with torch.onnx.export, and writes an input and PyTorch's outputs.

    /usr/bin/python3 export.py OUT_DIR [--seed S] [--batch B] [--seq S]

OUT_DIR receives:
  model.onnx      opset 17, inputs 'input_ids' and 'position_ids' (int64
                  [batch, seq]) and output 'logits' (float32 [batch, seq,
                  vocab]), both axes dynamic (traced on [1, 4])
  x.npy           int64 [B, S] random token ids (default 2 x 9)
  pos.npy         int64 [B, S] their positions 0..S-1
  expected.npy    float64 logits from a float64 copy of the same module
  torch_f32.npy   float32 logits from the module itself

The seed (fresh unless given) draws the weights and the token ids. Ids whose
top-2 routing is a near-tie in some MoE layer (the float64 gap between the
2nd and 3rd expert's probability below 1e-5, so float32 rounding could pick
another expert) are redrawn.
"""

import argparse
import copy
import os
import random
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import MixtralDecoder, MixtralSparseMoeBlock, randomize  # noqa: E402

OPSET = 17
MIN_ROUTING_GAP = 1e-5


def routing_gaps(model64, ids, pos):
    """The smallest gap between the k-th and (k+1)-th routing probability over
    every token and MoE layer of the float64 model."""
    gaps = []

    def hook(module, inputs, _output):
        x = inputs[0].reshape(-1, inputs[0].shape[-1])
        p = torch.softmax(module.gate(x), dim=-1)
        top = torch.sort(p, dim=-1, descending=True).values
        gaps.append((top[:, module.top_k - 1] - top[:, module.top_k]).min())

    handles = [m.register_forward_hook(hook) for m in model64.modules()
               if isinstance(m, MixtralSparseMoeBlock)]
    with torch.no_grad():
        model64(ids, pos)
    for h in handles:
        h.remove()
    return float(min(gaps))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=None,
                    help="random seed (default: fresh)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=9)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    g = torch.Generator().manual_seed(seed)

    model = MixtralDecoder().eval()
    randomize(model, g)
    config = model.config
    if not 1 <= args.seq <= config["max_positions"]:
        sys.exit("export: --seq must be in 1..%d" % config["max_positions"])
    model64 = copy.deepcopy(model).double()

    pos = torch.arange(args.seq).expand(args.batch, args.seq).contiguous()
    for attempt in range(100):
        ids = torch.randint(0, config["vocab"], (args.batch, args.seq),
                            generator=g)
        gap = routing_gaps(model64, ids, pos)
        if gap >= MIN_ROUTING_GAP:
            break
        print("export: routing near-tie (gap %.1e), redrawing the ids" % gap)
    else:
        sys.exit("export: no input without routing near-ties in 100 draws")

    print("export: seed %d; vocab=%d hidden=%d heads=%d kv_heads=%d layers=%d, "
          "MoE: %d SwiGLU experts of width %d, top-%d; input ids [%d, %d]"
          % (seed, config["vocab"], config["hidden"], config["heads"],
             config["kv_heads"], config["layers"], config["experts"],
             config["ffn"], config["top_k"], args.batch, args.seq))

    os.makedirs(args.out_dir, exist_ok=True)
    path = os.path.join(args.out_dir, "model.onnx")
    trace = (torch.randint(0, config["vocab"], (1, 4), generator=g),
             torch.arange(4).reshape(1, 4))
    dynamic = {0: "batch", 1: "seq"}
    with torch.no_grad():
        # Debian's torch 1.13 has only the TorchScript-based exporter.
        torch.onnx.export(model, trace, path, opset_version=OPSET,
                          input_names=["input_ids", "position_ids"],
                          output_names=["logits"],
                          dynamic_axes={"input_ids": dynamic,
                                        "position_ids": dynamic,
                                        "logits": dynamic})
        y32 = model(ids, pos)
        y64 = model64(ids, pos)
    np.save(os.path.join(args.out_dir, "x.npy"), ids.numpy())
    np.save(os.path.join(args.out_dir, "pos.npy"), pos.numpy())
    np.save(os.path.join(args.out_dir, "expected.npy"), y64.numpy())
    np.save(os.path.join(args.out_dir, "torch_f32.npy"), y32.numpy())
    print("export: wrote %s (%d bytes)" % (path, os.path.getsize(path)))


if __name__ == "__main__":
    main()
