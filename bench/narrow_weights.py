#!/usr/bin/python3
"""16-bit expert weights on the CPU: the compiled layer with its expert weight matrices stored
in f32, bf16 and f16 (computed in f32 either way), PyTorch eager (the HF loop) with the model
in bf16 and in f32, and the read floors of the f32 and the 16-bit bytes, interleaved round by
round on the CPU benchmark's layers, so that all meet the machine's bandwidth phases alike.

    /usr/bin/python3 bench/narrow_weights.py [--shapes S1,S2,S3] [--tokens 1,16,128] \\
        [--rounds 5] [--rotate 64] [--min-time 0.5] [--threads 2] [--bin-dir build/bin] \\
        [--work-dir bench/work] [--out PREFIX]

Every output is checked first against the float64 result of the weights it computes with
(the 16-bit ones rounded as stored): the compiled layers to 1e-4 (they compute in f32),
PyTorch bf16 to 3e-2 (its activations are bf16 too; where its bf16 logits flip a routing
choice it misses that, and its cell says "mismatch" and is not timed). ONNX Runtime is not in it: its CPU
com.microsoft.MoE takes f32 weights only. Reports per cell the median of the rounds' medians;
`--out PREFIX` writes PREFIX.md and PREFIX.json. docs/Performance.md quotes a run."""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
from pathlib import Path

# The BLAS and OpenMP thread counts are read when numpy and torch load (bench/threads.sh
# does this for bench/run.sh).
for _i, _arg in enumerate(sys.argv):
    if _arg.startswith("--threads"):
        _n = _arg.split("=", 1)[1] if "=" in _arg else sys.argv[_i + 1]
        break
else:
    _n = "2"
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = _n

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import moe_bench as mb  # noqa: E402

DTYPES = ("f32", "bf16", "f16")
TORCH_TOL = {"bf16": 3e-2, "f32": mb.TOL}


def floor_once(exe, cfg, sets, min_time, env, bytes_per_weight):
    """The read floor of the call's bytes with expert matrices of `bytes_per_weight` bytes
    (router f32): read_floor.c counts floats, so the 16-bit experts are half as many."""
    H, F, E, Fs = cfg["H"], cfg["F"], cfg["E"], cfg["Fs"]
    expert = 3 * H * F * bytes_per_weight // 4
    fixed = H * E + 3 * H * Fs * bytes_per_weight // 4
    p = subprocess.run([str(exe), str(expert), str(E), str(fixed), str(sets), str(min_time)],
                       capture_output=True, text=True, env=env)
    m = mb.BENCH_RE.search(p.stdout)
    if p.returncode != 0 or not m:
        sys.exit("narrow_weights: read floor failed: " + mb.first_error_line(p.stderr + p.stdout))
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="S1,S2,S3")
    ap.add_argument("--tokens", default="1,16,128")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rotate", type=int, default=64)
    ap.add_argument("--min-time", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bin-dir", default=str(mb.REPO / "build" / "bin"))
    ap.add_argument("--work-dir", default=str(HERE / "work"))
    ap.add_argument("--out", help="write PREFIX.md and PREFIX.json")
    a = ap.parse_args()
    shapes, tokens = a.shapes.split(","), [int(t) for t in a.tokens.split(",")]
    for s in shapes:
        if s not in mb.SHAPES:
            sys.exit(f"narrow_weights: unknown shape {s} (known: {', '.join(mb.SHAPES)})")
    for t in tokens:
        if t not in mb.TOKENS:
            sys.exit(f"narrow_weights: T must be one of {mb.TOKENS}")
    bin_dir = Path(a.bin_dir).resolve()
    for tool in ("moe-compile", "moe-run"):
        if not os.access(bin_dir / tool, os.X_OK):
            sys.exit(f"narrow_weights: {bin_dir / tool} is not an executable")
    floor_exe = mb.build_tool("read_floor")
    if floor_exe is None:
        sys.exit("narrow_weights: cannot build bench/read_floor.c")
    import torch
    torch.set_num_threads(a.threads)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    rows = []
    compile_s = {}
    for s in shapes:
        cfg = mb.SHAPES[s]
        prep = mb.prepare_shape(s, cfg, tokens, Path(a.work_dir))
        d = prep["dir"]
        xs = mb.rotation_inputs(s, cfg, tokens, a.rotate, d)
        # The weights each variant computes with, and their float64 references.
        weights = {dt: {n: (mb.store_weights(v, dt)[1] if n in mb.MATRICES else v)
                        for n, v in prep["w"].items()} for dt in DTYPES}
        refs = {dt: {T: mb.reference(weights[dt], prep["x"][:T], cfg["k"])[0] for T in tokens}
                for dt in DTYPES}
        libs = {}
        for dt in DTYPES:
            mb.log(f"{s}: compiling with {dt} expert weights")
            so, secs, err = mb.compile_model(cfg, prep, "constants", bin_dir / "moe-compile",
                                             env, name=f"nw-{dt}", weights_dtype=dt)
            if not so:
                sys.exit(f"narrow_weights: {s} {dt}: moe-compile failed: {err}")
            libs[dt], compile_s[f"{s}-{dt}"] = so, secs
        layers = {tdt: mb.hf_layer(torch, weights[tdt] if tdt == "bf16" else prep["w"],
                                   cfg["k"],
                                   getattr(torch, {"bf16": "bfloat16", "f32": "float32"}[tdt]))
                  for tdt in TORCH_TOL}
        for T in tokens:
            sets = mb.write_floor_sets(dict(prep, xs=xs), cfg, T, d / f"floor_sets_nw_T{T}.txt")
            x_in = f"--input=@{d / f'x_T{T}.npy'}"
            est, errs = {}, {}
            for dt in DTYPES:
                out = d / f"y_nw_{dt}_T{T}.npy"
                p = subprocess.run([str(bin_dir / "moe-run"), str(libs[dt]), x_in,
                                    f"--output=@{out}"], capture_output=True, text=True, env=env)
                if p.returncode != 0:
                    sys.exit(f"narrow_weights: {s} {dt} T={T}: "
                             f"{mb.first_error_line(p.stderr + p.stdout)}")
                errs[dt] = mb.rel_l2(np.load(out), refs[dt][T])
                if not errs[dt] <= mb.TOL:
                    sys.exit(f"narrow_weights: {s} {dt} T={T}: output mismatch "
                             f"(relative L2 {errs[dt]:.2e})")
                est[dt] = 1.0
            stacks = {}
            with torch.inference_mode():
                for tdt, tol in TORCH_TOL.items():
                    tt = getattr(torch, {"bf16": "bfloat16", "f32": "float32"}[tdt])
                    y = layers[tdt](torch.from_numpy(prep["x"][:T]).to(tt)).float().numpy()
                    ref = refs["bf16" if tdt == "bf16" else "f32"][T]
                    errs["torch_" + tdt] = mb.rel_l2(y, ref)
                    if not errs["torch_" + tdt] <= tol:
                        # bf16 logits can flip a near-tie of the routing: the cell says
                        # so and is not timed.
                        mb.log(f"  torch {tdt} {s} T={T}: output mismatch (relative L2 "
                               f"{errs['torch_' + tdt]:.2e}); not timed")
                        continue
                    stacks[tdt] = [torch.from_numpy(v).to(tt) for v in np.load(xs[T])]
            got = {k: [] for k in ["f32", "bf16", "f16", "torch_bf16", "torch_f32",
                                   "floor_f32", "floor_16"]}
            for rnd in range(a.rounds):
                for dt in DTYPES:
                    cmd = [str(bin_dir / "moe-run"), str(libs[dt]), x_in,
                           f"--benchmark-inputs=@{xs[T]}"]
                    m, _, p = mb.time_moe_run(cmd, est[dt], a.min_time, env)
                    if not m:
                        sys.exit(f"narrow_weights: {s} {dt} T={T}: "
                                 f"{mb.first_error_line(p.stderr + p.stdout)}")
                    est[dt] = float(m.group(1))
                    got[dt].append(est[dt])
                    if dt != "f16":
                        key = "floor_f32" if dt == "f32" else "floor_16"
                        got[key].append(floor_once(floor_exe, cfg, sets, a.min_time / 2, env,
                                                   4 if dt == "f32" else 2))
                with torch.inference_mode():
                    for tdt in stacks:
                        turn = iter(range(1 << 62))
                        stack, layer = stacks[tdt], layers[tdt]
                        r = mb.time_in_process(lambda: layer(stack[next(turn) % len(stack)]),
                                               a.min_time)
                        got["torch_" + tdt].append(r["median_ms"])
                mb.log(f"  {s} T={T} round {rnd + 1}: " + ", ".join(
                    f"{k} {v[-1]:.3f}" for k, v in got.items() if v))
            med = {k: statistics.median(v) for k, v in got.items() if v}
            rows.append(dict(shape=s, T=T, median_ms=med, rounds_ms=got, rel_l2=errs))
    info = mb.machine_info()
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"# 16-bit expert weights on the CPU ({when})", "",
             f"- Machine: {info.get('cpu', '?')}, {a.threads} threads; {a.rounds} rounds of "
             f"{a.min_time:g} s per contender, {a.rotate} rotated inputs; medians of the "
             "rounds' medians, ms",
             "- ours: moe-compile'd layer, expert matrices stored as f32 / bf16 / f16 (computed "
             "in f32); torch: PyTorch eager (HF loop), model in bf16 / f32; floor: streaming "
             "the call's weight bytes at 4 / 2 bytes per expert weight",
             "- bf16 vs f32: ours f32 ms / ours bf16 ms; vs torch bf16: torch bf16 ms / ours "
             "bf16 ms; floor share: floor 16-bit ms / ours bf16 ms", "",
             "| shape | T | ours f32 | ours bf16 | ours f16 | torch bf16 | torch f32 | "
             "floor f32 | floor 16-bit | bf16 vs f32 | vs torch bf16 | bf16 floor share |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m, e = r["median_ms"], r["rel_l2"]

        def torch_cell(tdt):
            k = "torch_" + tdt
            return f"{m[k]:.3f}" if k in m else f"mismatch (rel {e[k]:.1e})"
        vs_torch = (f"{m['torch_bf16'] / m['bf16']:.2f}x" if "torch_bf16" in m else "-")
        lines.append(
            f"| {r['shape']} | {r['T']} | {m['f32']:.3f} | {m['bf16']:.3f} | {m['f16']:.3f} | "
            f"{torch_cell('bf16')} | {torch_cell('f32')} | {m['floor_f32']:.3f} | "
            f"{m['floor_16']:.3f} | {m['f32'] / m['bf16']:.2f}x | {vs_torch} | "
            f"{100 * m['floor_16'] / m['bf16']:.0f}% |")
    mb.write_report(a.out, "\n".join(lines) + "\n", dict(
        when=when, machine=info, threads=a.threads, rounds=a.rounds, rotate=a.rotate,
        min_time=a.min_time, compile_s=compile_s, rows=rows))


if __name__ == "__main__":
    main()
