#!/usr/bin/env python3
"""Raised vs direct: a real torch export against the same layer in the dialect.

    /usr/bin/python3 bench/raised_vs_direct.py [--shapes S1,S2] [--tokens 1,16,128]
                                               [--runs N] [--rounds R] [--out STEM]

For each shape, builds HF transformers' MixtralSparseMoeBlock (the loop form
of test/Target/ONNX/Inputs/torch_models.py) with random weights, exports it
with torch.onnx.export (opset 17, dynamic tokens) and compiles it with
moe-compile (the importer raises the block to moe.layer); writes the same
weights as a moe.layer in MLIR and compiles that too. Both run side by side
with `moe-run --benchmark`, alternating, R rounds of N runs per token count;
the table gives the medians and raised/direct. Outputs are checked equal
(relative L2 <= 1e-6) before timing. Needs the build (scripts/build.sh).
"""

import argparse
import datetime
import os
import re
import subprocess
import sys

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("MOE_BUILD", os.path.join(ROOT, "build"))
TOOLS = os.path.join(BUILD, "bin")
sys.path.insert(0, os.path.join(ROOT, "test", "Target", "ONNX", "Inputs"))
import torch_models  # noqa: E402

SHAPES = {"S1": (1024, 3584, 8, 2), "S2": (1024, 512, 64, 8)}


def log(*args):
    print("raised-vs-direct:", *args, file=sys.stderr, flush=True)


def dense(a):
    return 'dense<"0x%s">' % np.ascontiguousarray(a, "<f4").tobytes().hex().upper()


def ttype(shape):
    return "tensor<%sxf32>" % "x".join("?" if d is None else str(d) for d in shape)


def direct_mlir(block, hidden, experts, k):
    router = block.gate.weight.detach().numpy().T
    gate = np.stack([e.w1.weight.detach().numpy().T for e in block.experts])
    up = np.stack([e.w3.weight.detach().numpy().T for e in block.experts])
    down = np.stack([e.w2.weight.detach().numpy().T for e in block.experts])
    act = ttype([None, hidden])
    lines = ['func.func @main(%%x: %s {moe.name = "x"}) -> %s {' % (act, act)]
    for name, a in (("router", router), ("gate", gate), ("up", up), ("down", down)):
        lines.append("  %%%s = arith.constant %s : %s" % (name, dense(a), ttype(a.shape)))
    lines.append("  %%y = moe.layer %%x, %%router gate(%%gate : %s) up(%%up : %s) down(%%down : %s)"
                 % (ttype(gate.shape), ttype(up.shape), ttype(down.shape)))
    lines.append("      {expert = #moe.expert<gated, silu>, "
                 "routing = #moe.routing<k = %d, renormalize = true>}" % k)
    lines.append("      : (%s, %s) -> %s" % (act, ttype([hidden, experts]), act))
    lines.append("  return %%y : %s\n}" % act)
    return "\n".join(lines) + "\n"


def bench(lib, x_path, runs):
    out = subprocess.run([os.path.join(TOOLS, "moe-run"), lib, "--input=@" + x_path,
                          "--benchmark=%d" % runs], check=True, capture_output=True,
                         text=True).stdout
    return float(re.search(r"median_ms: ([0-9.]+)", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="S1,S2")
    ap.add_argument("--tokens", default="1,16,128")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "work", "raised"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    rows = []
    for shape in args.shapes.split(","):
        hidden, ffn, experts, k = SHAPES[shape]
        work = os.path.join(args.work, shape)
        os.makedirs(work, exist_ok=True)
        torch.manual_seed(0)
        block = torch_models.MixtralSparseMoeBlock(hidden, ffn, experts, k).eval()
        onnx_path = os.path.join(work, "model.onnx")
        with torch.no_grad():
            torch.onnx.export(block, (torch.randn(7, hidden),), onnx_path,
                              opset_version=torch_models.OPSET, input_names=["x"],
                              output_names=["y"],
                              dynamic_axes={"x": {0: "tokens"}, "y": {0: "tokens"}})
        with open(os.path.join(work, "direct.mlir"), "w") as f:
            f.write(direct_mlir(block, hidden, experts, k))
        del block
        libs = {}
        for name, src in (("raised", onnx_path), ("direct", os.path.join(work, "direct.mlir"))):
            libs[name] = os.path.join(work, name + ".so")
            log("compiling", src)
            subprocess.run([os.path.join(TOOLS, "moe-compile"), src, "-o", libs[name]],
                           check=True)
        for t in [int(v) for v in args.tokens.split(",")]:
            x = np.random.default_rng(t).standard_normal((t, hidden)).astype(np.float32)
            x_path = os.path.join(work, "x%d.npy" % t)
            np.save(x_path, x)
            outs = {}
            for name, lib in libs.items():
                y_path = os.path.join(work, "%s-y%d.npy" % (name, t))
                subprocess.run([os.path.join(TOOLS, "moe-run"), lib, "--input=@" + x_path,
                                "--output=@" + y_path], check=True)
                outs[name] = np.load(y_path).astype(np.float64)
            err = (np.linalg.norm(outs["raised"] - outs["direct"]) /
                   np.linalg.norm(outs["direct"]))
            if err > 1e-6:
                log("%s T=%d: outputs differ (relative L2 %.3e)" % (shape, t, err))
                return 1
            times = {"raised": [], "direct": []}
            for _ in range(args.rounds):
                for name in ("raised", "direct"):
                    times[name].append(bench(libs[name], x_path, args.runs))
            raised, direct = min(times["raised"]), min(times["direct"])
            rows.append((shape, t, raised, direct, raised / direct, err))
            log("%s T=%d: raised %.3f ms, direct %.3f ms, ratio %.3f"
                % (shape, t, raised, direct, raised / direct))
    date = datetime.date.today().isoformat()
    stem = args.out or os.path.join(ROOT, "bench", "results", "%s-raised-vs-direct" % date)
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open(stem + ".md", "w") as f:
        f.write("# Raised torch export vs the same layer written in the moe dialect, %s\n\n"
                % date)
        f.write("Machine: %s, OMP_NUM_THREADS=%s. HF MixtralSparseMoeBlock exported with "
                "torch.onnx.export (opset 17), raised by the importer, against a direct "
                "moe.layer with the same weights; best of %d rounds of `moe-run "
                "--benchmark=%d` medians, alternating. Produced by "
                "`bench/raised_vs_direct.py`.\n\n"
                % (cpu, os.environ.get("OMP_NUM_THREADS", "all"), args.rounds, args.runs))
        f.write("| shape | T | raised ms | direct ms | raised / direct | output difference |\n")
        f.write("|---|---|---|---|---|---|\n")
        for shape, t, raised, direct, ratio, err in rows:
            f.write("| %s | %d | %.3f | %.3f | %.3f | %.1e |\n"
                    % (shape, t, raised, direct, ratio, err))
    log("wrote", stem + ".md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
