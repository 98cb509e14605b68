#!/usr/bin/python3
"""A/B of two or more moe-mlir builds on the CPU benchmark's layers, interleaved with the
read floor: for each shape and token count, in every round, each build's compiled layer and
then the read floor run in turn, so that every build meets the machine's bandwidth phases
alike (this machine's bandwidth moves by up to 1.5x within minutes). Reports per build the
median and minimum of its rounds' medians and the median of its rounds' floor shares (the
floor's time measured right after it over its own time), and the ratio of each build's
median to the first build's.

    /usr/bin/python3 bench/ab.py --bin-dirs BASE/build/bin,build/bin --labels base,new \\
        [--shapes S1,S2,S3] [--tokens 1,16] [--rotate 64] [--rounds 8] [--min-time 0.3] \\
        [--threads 2] [--weights-form constants|args] [--work-dir bench/work] [--out PREFIX]

Each bin dir needs moe-compile and moe-run; every build compiles the same layer (the
weights as dense constants, as the benchmark's first form, or with --weights-form=args as
inputs) and its output is checked against the float64 reference before any timing.
`--out PREFIX` writes PREFIX.md and PREFIX.json.
docs/Performance.md quotes runs of it; bench/README.md says how to build a baseline."""

import argparse
import datetime
import hashlib
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import moe_bench as mb  # noqa: E402


def build_info(bin_dir):
    """The commit of the checkout a bin dir was built from (when it lies inside one) and a
    hash of its moe-compile."""
    commit = subprocess.run(["git", "-C", str(bin_dir), "rev-parse", "--short=12", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    digest = hashlib.sha256((bin_dir / "moe-compile").read_bytes()).hexdigest()[:16]
    return dict(dir=str(bin_dir), commit=commit or None, moe_compile_sha256=digest)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dirs", required=True,
                    help="comma-separated bin dirs (moe-compile, moe-run); the first is the base")
    ap.add_argument("--labels", help="comma-separated names of the builds (default b0, b1...)")
    ap.add_argument("--shapes", default="S1,S2,S3")
    ap.add_argument("--tokens", default="1,16")
    ap.add_argument("--rotate", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--min-time", type=float, default=0.3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", default=str(HERE / "work"))
    ap.add_argument("--weights-form", choices=["constants", "args"], default="constants",
                    help="weights as dense constants (packed in panels by moe-compile) or as "
                         "inputs (row-major, read from .npy files)")
    ap.add_argument("--out", help="write PREFIX.md and PREFIX.json")
    a = ap.parse_args()
    bins = [Path(b).resolve() for b in a.bin_dirs.split(",")]
    labels = a.labels.split(",") if a.labels else [f"b{i}" for i in range(len(bins))]
    if len(bins) < 2 or len(labels) != len(bins):
        sys.exit("ab: --bin-dirs needs two or more dirs and --labels one name per dir")
    for b in bins:
        for tool in ("moe-compile", "moe-run"):
            if not os.access(b / tool, os.X_OK):
                sys.exit(f"ab: {b / tool} is not an executable")
    shapes, tokens = a.shapes.split(","), [int(t) for t in a.tokens.split(",")]
    for s in shapes:
        if s not in mb.SHAPES:
            sys.exit(f"ab: unknown shape {s} (known: {', '.join(mb.SHAPES)})")
    floor_exe = mb.build_tool("read_floor")
    if floor_exe is None:
        sys.exit("ab: cannot build bench/read_floor.c")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    workdir = Path(a.work_dir)
    rows = []
    for s in shapes:
        cfg = mb.SHAPES[s]
        prep = mb.prepare_shape(s, cfg, tokens, workdir)
        xs = prep["xs"] = mb.rotation_inputs(s, cfg, tokens, a.rotate, prep["dir"])
        libs = {}
        for label, b in zip(labels, bins):
            mb.log(f"{s}: compiling with {label} ({b})")
            so, _, err = mb.compile_model(cfg, prep, a.weights_form, b / "moe-compile", env,
                                          name=f"ab-{label}-{a.weights_form}",
                                          keep_mlir=True)
            if not so:
                sys.exit(f"ab: {label}: moe-compile failed: {err}")
            libs[label] = so
        (prep["dir"] / "model_constants.mlir").unlink(missing_ok=True)
        for T in tokens:
            sets = mb.write_floor_sets(prep, cfg, T,
                                       prep["dir"] / f"floor_sets_ab_T{T}.txt")
            x_in = f"--input=@{prep['dir'] / f'x_T{T}.npy'}"
            w_in = ([f"--input=@{f}" for f in prep["weight_files"]]
                    if a.weights_form == "args" else [])
            est = {}
            for label, b in zip(labels, bins):
                out = prep["dir"] / f"y_ab_{label}_T{T}.npy"
                p = subprocess.run([str(b / "moe-run"), str(libs[label]), x_in, *w_in,
                                    f"--output=@{out}"], capture_output=True, text=True, env=env)
                if p.returncode != 0:
                    sys.exit(f"ab: {label} {s} T={T}: {mb.first_error_line(p.stderr + p.stdout)}")
                rel = mb.rel_l2(np.load(out), prep["refs"][T])
                if not rel <= mb.TOL:
                    sys.exit(f"ab: {label} {s} T={T}: output mismatch (relative L2 {rel:.2e})")
                est[label] = 1.0
            got = {label: [] for label in labels}
            for rnd in range(a.rounds):
                for label, b in zip(labels, bins):
                    cmd = [str(b / "moe-run"), str(libs[label]), x_in, *w_in,
                           f"--benchmark-inputs=@{xs[T]}"]
                    m, _, p = mb.time_moe_run(cmd, est[label], a.min_time, env)
                    if not m:
                        sys.exit(f"ab: {label} {s} T={T}: "
                                 f"{mb.first_error_line(p.stderr + p.stdout)}")
                    ms = float(m.group(1))
                    est[label] = ms
                    m, p = mb.read_floor_once(floor_exe, cfg, sets, a.min_time / 2, env)
                    if not m:
                        sys.exit("ab: read floor failed: "
                                 f"{mb.first_error_line(p.stderr + p.stdout)}")
                    fl = float(m.group(1))
                    got[label].append((ms, fl))
                    mb.log(f"  {s} T={T} round {rnd + 1}: {label} {ms:.3f} ms, floor {fl:.3f} ms")
            base = statistics.median(ms for ms, _ in got[labels[0]])
            for label in labels:
                v = got[label]
                med = statistics.median(ms for ms, _ in v)
                rows.append(dict(shape=s, T=T, build=label, median_ms=med,
                                 min_ms=min(ms for ms, _ in v),
                                 floor_share=statistics.median(fl / ms for ms, fl in v),
                                 vs_first=base / med, rounds=[list(r) for r in v]))
    info = mb.machine_info()
    builds = {label: build_info(b) for label, b in zip(labels, bins)}
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    lines = [f"# A/B of moe-mlir builds, interleaved with the read floor ({when})", "",
             f"- Machine: {info.get('cpu', '?')}, {a.threads} threads; "
             f"{a.rounds} rounds of {a.min_time:g} s per build, {a.rotate} rotated inputs, "
             f"weights as {a.weights_form}",
             "- Builds: " + "; ".join(
                 f"{label} = {i['dir']} (checkout {i['commit'] or '?'}, moe-compile "
                 f"{i['moe_compile_sha256']})" for label, i in builds.items()),
             "- floor share: the median over the rounds of (read floor ms right after the "
             "build's run) / (the build's ms); vs first: the first build's median ms over "
             "this one's", "",
             "| shape | T | build | median ms | min ms | floor share | vs first |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['T']} | {r['build']} | {r['median_ms']:.3f} | "
                     f"{r['min_ms']:.3f} | {100 * r['floor_share']:.0f}% | "
                     f"{r['vs_first']:.2f}x |")
    mb.write_report(a.out, "\n".join(lines) + "\n", dict(
        when=when, machine=info, threads=a.threads, rounds=a.rounds, rotate=a.rotate,
        min_time=a.min_time, weights_form=a.weights_form, builds=builds, rows=rows))


if __name__ == "__main__":
    main()
