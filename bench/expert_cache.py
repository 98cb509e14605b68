#!/usr/bin/env python3
"""Expert-cache benchmark: decode throughput of a model larger than its budget.

    bench/expert-cache.sh [--quick] [options of this script]

Builds an L-layer stack of S2-like MoE layers (test/lib/moe_stack.py:
H=1024, F=512, E=64, k=8, softmax top-k renormalized, SwiGLU, x += layer(x)),
profiles its routing on sample tokens, compiles it all-resident and with
expert budgets of some percentages of the expert bytes (placement from the
profile, pre-gating prefetch depth 1), and runs decode steps of T tokens, a
fresh random input each step, the same inputs for every configuration:

  - all resident (100%): the weights memory-mapped and warm in RAM (the
    fastest of three runs);
  - per budget: on demand (read at use, no reuse), cache only (LRU slots and
    pinned residents, a layer's loads queued when it starts) and cache +
    pre-gating prefetch.

It reports tokens/s, the ratio to all-resident, the expert cache's counters
(hit rate, prefetch accuracy, bytes read per step, stall time) and the I/O
floor: the bytes a configuration read per step at the disk's O_DIRECT read
bandwidth. A virtual disk's speed drifts by 20-40% within minutes, so that
bandwidth is measured on the weights file right before and right after each
row, and the floor takes their mean (both are reported). The cache's own read rate (bytes / time in reads) is
reported beside it. With --read-gbps R the cache's reads are paced to R GB/s
(MOE_EXPERT_CACHE_READ_GBPS: a slower tier emulated; pick R below the disk's
sustained rate) and the floor is the bytes at exactly R: a known floor, so
`vs floor` measures the cache rather than the disk's drift. Every output is
checked equal to the all-resident output. Writes a Markdown table and JSON.
"""

import argparse
import datetime
import json
import mmap
import os
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUILD = os.environ.get("MOE_BUILD", os.path.join(ROOT, "build"))
sys.path.insert(0, os.path.join(BUILD, "python_packages"))
import moe_mlir  # noqa: E402

TOOLS = os.path.join(BUILD, "bin")


def log(*args):
    print("expert-cache:", *args, file=sys.stderr, flush=True)


def run(cmd, **kw):
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, **kw)


def cpu_name():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def disk_bandwidth(path, slice_bytes, total=1 << 30):
    """O_DIRECT read bandwidth of `path` in bytes/s for reads of one expert
    matrix (`slice_bytes`, 4096-aligned) at random offsets: the cache's
    access pattern."""
    import random
    size = os.path.getsize(path)
    chunk = (slice_bytes + 4095) // 4096 * 4096
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
    buf = mmap.mmap(-1, chunk)
    view = memoryview(buf)
    rng = random.Random(0)
    done, start = 0, time.perf_counter()
    try:
        while done < total:
            offset = rng.randrange(0, (size - chunk) // 4096) * 4096
            done += os.preadv(fd, [view], offset)
    finally:
        os.close(fd)
    return done / (time.perf_counter() - start)


def row_bandwidth(path, slice_bytes):
    """The disk's bandwidth for a row: a shorter probe, taken around it."""
    return disk_bandwidth(path, slice_bytes, total=256 << 20)


def build_models(args, work):
    model = os.path.join(work, "model.mlirbc")
    if not os.path.exists(model):
        run([sys.executable, os.path.join(ROOT, "test/lib/moe_stack.py"), "gen", work,
             "--layers", str(args.layers), "--hidden", str(args.hidden), "--ffn",
             str(args.ffn), "--experts", str(args.experts), "--k", str(args.k),
             "--tokens", "1", "--skew", str(args.skew), "--seed", str(args.seed),
             "--no-reference"])
        run([os.path.join(TOOLS, "moe-opt"), os.path.join(work, "model.mlir"),
             "--emit-bytecode", "-o", model])
        os.remove(os.path.join(work, "model.mlir"))
    libs = {}
    full = os.path.join(work, "full.so")
    if not os.path.exists(full):
        run([os.path.join(TOOLS, "moe-compile"), model, "-o", full])
    libs[100] = full
    profile = os.path.join(work, "profile.json")
    if not os.path.exists(profile):
        prof = os.path.join(work, "profile.so")
        run([os.path.join(TOOLS, "moe-compile"), model, "--instrument-routing", "-o", prof])
        m = moe_mlir.load(prof)
        rng = np.random.default_rng(args.seed + 1)
        for _ in range(args.profile_steps):
            m.run(rng.standard_normal((1, args.hidden)).astype(np.float32))
        m.write_profile(profile)
        del m
        os.remove(prof)
        os.remove(os.path.join(work, "profile.weights"))
    for budget in args.budgets:
        if budget >= 100:
            continue
        lib = os.path.join(work, "b%d.so" % budget)
        if not os.path.exists(lib):
            run([os.path.join(TOOLS, "moe-compile"), model, "--expert-budget=%d%%" % budget,
                 "--placement-profile=" + profile, "-o", lib])
        libs[budget] = lib
    return libs


def measure(lib, mode, inputs, warmup, reference=None):
    m = moe_mlir.load(lib)
    if mode != "resident":
        m.configure_cache(mode=mode)
    for x in warmup:
        m.run(x)
    m.reset_stats()
    outputs = []
    start = time.perf_counter()
    for x in inputs:
        outputs.append(m.run(x)[0])
    elapsed = time.perf_counter() - start
    stats = m.stats()
    same = None
    if reference is not None:
        same = all(np.array_equal(a, b) for a, b in zip(outputs, reference))
    del m
    return elapsed, stats, outputs, same


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=os.path.join(ROOT, "bench", "work", "expert-cache"))
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--ffn", type=int, default=512)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--skew", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--tokens", default="1,16")
    ap.add_argument("--budgets", default="25,50,100")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--profile-steps", type=int, default=64)
    ap.add_argument("--read-gbps", type=float, default=None,
                    help="pace the cache's reads to this many GB/s (an emulated tier) "
                    "and take it as the I/O floor's bandwidth")
    ap.add_argument("--out", default=None, help="results stem (default bench/results/DATE-expert-cache)")
    args = ap.parse_args()
    args.budgets = sorted({int(b) for b in args.budgets.split(",")}, reverse=True)
    tokens = [int(t) for t in args.tokens.split(",")]
    if args.read_gbps is not None:
        if not args.read_gbps > 0:
            ap.error("--read-gbps must be positive")
        os.environ["MOE_EXPERT_CACHE_READ_GBPS"] = repr(args.read_gbps)
    os.makedirs(args.work, exist_ok=True)

    libs = build_models(args, args.work)
    weights = os.path.join(args.work, "full.weights")
    slice_bytes = args.hidden * args.ffn * 4
    bandwidth = disk_bandwidth(weights, slice_bytes)
    expert_bytes = 3 * args.hidden * args.ffn * 4
    all_bytes = expert_bytes * args.experts * args.layers
    log("disk O_DIRECT read: %.2f GB/s; expert bytes: %.2f GiB" % (bandwidth / 1e9,
                                                                   all_bytes / 2**30))

    rows = []
    for t in tokens:
        rng = np.random.default_rng(args.seed + 100 + t)
        warm = [rng.standard_normal((t, args.hidden)).astype(np.float32)
                for _ in range(args.warmup)]
        inputs = [rng.standard_normal((t, args.hidden)).astype(np.float32)
                  for _ in range(args.steps)]
        # All resident is short and CPU-bound (noisy on a shared machine): the
        # fastest of three runs, the baseline least favorable to the cache.
        base_time, _, reference, _ = measure(libs[100], "resident", inputs, warm)
        for _ in range(2):
            base_time = min(base_time, measure(libs[100], "resident", inputs, warm)[0])
        base_tps = t * args.steps / base_time
        rows.append(dict(tokens=t, budget=100, mode="all resident", tokens_per_s=base_tps,
                         ratio=1.0, same=True, stats={}, floor_tps=None))
        log("T=%d all resident: %.2f tokens/s" % (t, base_tps))
        for budget in args.budgets:
            if budget >= 100:
                continue
            for mode, name in (("ondemand", "on demand"), ("lru", "cache only"),
                               ("prefetch", "cache + prefetch")):
                before = row_bandwidth(weights, slice_bytes)
                elapsed, stats, _, same = measure(libs[budget], mode, inputs, warm, reference)
                after = row_bandwidth(weights, slice_bytes)
                row_bw = (args.read_gbps * 1e9 if args.read_gbps
                          else (before + after) / 2)
                tps = t * args.steps / elapsed
                per_step = stats["bytes_read"] / args.steps
                floor_s = per_step / row_bw
                floor_tps = t / floor_s if floor_s > 0 else None
                busy = stats["read_ms"] / 1e3 / elapsed
                rows.append(dict(tokens=t, budget=budget, mode=name, tokens_per_s=tps,
                                 ratio=tps / base_tps, same=same, stats=stats,
                                 floor_tps=floor_tps, bytes_per_step=per_step,
                                 io_busy=busy, disk_gbps=(before / 1e9, after / 1e9),
                                 cache_read_gbps=(stats["bytes_read"] / stats["read_ms"] / 1e6
                                                  if stats["read_ms"] else None)))
                log("T=%d %d%% %s: %.2f tokens/s (%.2fx), %.1f MiB/step, floor %s, "
                    "disk busy %.0f%%, disk %.2f/%.2f GB/s before/after, same=%s"
                    % (t, budget, name, tps, tps / base_tps, per_step / 2**20,
                       "%.2f" % floor_tps if floor_tps else "-", 100 * busy,
                       before / 1e9, after / 1e9, same))

    date = datetime.date.today().isoformat()
    stem = args.out or os.path.join(ROOT, "bench", "results", "%s-expert-cache" % date)
    meta = dict(date=date, cpu=cpu_name(), threads=os.environ.get("OMP_NUM_THREADS", "all"),
                layers=args.layers, hidden=args.hidden, ffn=args.ffn, experts=args.experts,
                k=args.k, skew=args.skew, steps=args.steps, disk_gbps=bandwidth / 1e9,
                read_gbps=args.read_gbps,
                expert_gib=all_bytes / 2**30,
                direct_io=any(r["stats"].get("direct_io") for r in rows))
    with open(stem + ".json", "w") as f:
        json.dump(dict(meta=meta, rows=rows), f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write("# Expert cache: %d-layer S2-like model (H=%d F=%d E=%d k=%d), %s\n\n"
                % (args.layers, args.hidden, args.ffn, args.experts, args.k, date))
        f.write("Machine: %s, OMP_NUM_THREADS=%s. Expert weights: %.2f GiB. Weights file read "
                "with O_DIRECT: %s; its O_DIRECT read bandwidth for one expert matrix at a "
                "random offset, measured at the start of the run: %.2f GB/s%s. "
                "Router skew %.1f; %d decode steps per row, each a fresh random input, the same "
                "for every row; placement from a %d-token routing profile; pre-gating depth 1. "
                "Produced by `bench/expert-cache.sh`.\n\n"
                % (meta["cpu"], meta["threads"], meta["expert_gib"],
                   "yes" if meta["direct_io"] else "no", meta["disk_gbps"],
                   "" if args.read_gbps else
                   " (each row's floor uses the mean of two shorter probes taken right "
                   "before and after it)", args.skew,
                   args.steps, args.profile_steps))
        if args.read_gbps:
            f.write("**Emulated tier:** the cache's reads paced to %.2f GB/s "
                    "(`MOE_EXPERT_CACHE_READ_GBPS`), below the disk's own rate (the probes "
                    "around each row); the I/O floor is the row's bytes at exactly %.2f GB/s.\n\n"
                    % (args.read_gbps, args.read_gbps))
        f.write("| T | budget | mode | tokens/s | vs all resident | hit rate | prefetch accuracy "
                "| MiB read/step | stall ms/step | disk GB/s before / after | cache read GB/s "
                "| I/O floor tokens/s | vs floor | disk busy | same output |\n")
        f.write("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        for r in rows:
            s = r["stats"]
            hit = "%.0f%%" % (100.0 * s["hits"] / s["acquires"]) if s.get("acquires") else "-"
            acc = ("%.0f%%" % (100.0 * s["prefetch_used"] / s["prefetch_loads"])
                   if s.get("prefetch_loads") else "-")
            mib = "%.1f" % (r["bytes_per_step"] / 2**20) if "bytes_per_step" in r else "-"
            stall = "%.1f" % (s["stall_ms"] / args.steps) if s else "-"
            floor = "%.2f" % r["floor_tps"] if r.get("floor_tps") else "-"
            vs_floor = ("%.2f" % (r["floor_tps"] / r["tokens_per_s"])
                        if r.get("floor_tps") else "-")
            busy = "%.0f%%" % (100 * r["io_busy"]) if "io_busy" in r else "-"
            disk = ("%.2f / %.2f" % tuple(r["disk_gbps"])) if r.get("disk_gbps") else "-"
            cache_bw = "%.2f" % r["cache_read_gbps"] if r.get("cache_read_gbps") else "-"
            f.write("| %d | %d%% | %s | %.2f | %.2f | %s | %s | %s | %s | %s | %s | %s | %s | %s "
                    "| %s |\n"
                    % (r["tokens"], r["budget"], r["mode"], r["tokens_per_s"], r["ratio"],
                       hit, acc, mib, stall, disk, cache_bw, floor, vs_floor, busy,
                       "yes" if r["same"] else "NO"))
        f.write("\nI/O floor: the bytes the row read per step at %s; "
                % ("the emulated tier's %.2f GB/s" % args.read_gbps if args.read_gbps else
                   "the mean of the disk bandwidths measured right before and after the row"))
        f.write(
                "`vs floor` is (I/O floor tokens/s) / (tokens/s), how many times the floor's "
                "time a step took (1.0 = at the floor%s). `cache read GB/s`: the bytes the cache "
                "read over the time its I/O thread spent in reads. `disk busy`: the share of the "
                "row's time the cache's I/O thread spent in reads.\n"
                % ("" if args.read_gbps else
                   "; the disk's speed varies within a row too, so values a little under 1 "
                   "occur"))
    log("wrote %s.md and .json" % stem)
    return 0 if all(r["same"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
