#!/usr/bin/python3
"""CPU benchmark of one MoE layer: the compiled layer (moe-compile + moe-run) against
ONNX Runtime (com.microsoft.MoE and a standard-op graph) and PyTorch eager, on the same
weights, every output checked against a float64 NumPy reference before it is timed.

Run through bench/run.sh (it sets the thread variables before NumPy/torch load).
See bench/README.md for the methodology.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

# name: (H, F, E, k, Fs)   Fs = shared-expert width (0: none)
SHAPES = {
    "S1": dict(H=1024, F=3584, E=8, k=2, Fs=0, desc="H1024 F3584 E8 k2 (Mixtral-like)"),
    "S2": dict(H=1024, F=512, E=64, k=8, Fs=0, desc="H1024 F512 E64 k8 (OLMoE/Qwen3-like)"),
    "S3": dict(H=1024, F=352, E=64, k=6, Fs=704,
               desc="H1024 F352 E64 k6 + 2 shared F352 (Fs=704) (DeepSeekMoE-like)"),
}
TOKENS = [1, 16, 128, 1024]
QUICK_SHAPES, QUICK_TOKENS = ["S3"], [1, 16]
SEED = 20240611
TOL = 1e-4
DATA_VERSION = 1  # bump when the generation below changes

CONTENDERS = ["ours", "ort_moe", "ort_std", "torch"]
TITLES = {"ours": "moe-mlir (compiled)", "ort_moe": "ORT com.microsoft.MoE",
          "ort_std": "ORT standard ops", "torch": "PyTorch eager (HF loop)"}


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data

def make_weights(name, cfg, t_max):
    """Fixed-seed float32 weights and x [t_max, H]. Rows of x whose top-k choice is a
    near-tie (float64 logit gap between the k-th and (k+1)-th expert < 1e-3 of the logits'
    std) are redrawn, so fp32 rounding in any contender cannot flip an expert choice."""
    H, F, E, k, Fs = cfg["H"], cfg["F"], cfg["E"], cfg["k"], cfg["Fs"]
    rng = np.random.default_rng([SEED, int(name[1:])])

    def normal(shape, std):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std))

    w = {
        "router": normal((H, E), 1.0 / np.sqrt(H)),
        "gate": normal((E, H, F), 1.0 / np.sqrt(H)),
        "up": normal((E, H, F), 1.0 / np.sqrt(H)),
        "down": normal((E, F, H), 1.0 / np.sqrt(F)),
    }
    if Fs:
        w["shared_gate"] = normal((H, Fs), 1.0 / np.sqrt(H))
        w["shared_up"] = normal((H, Fs), 1.0 / np.sqrt(H))
        w["shared_down"] = normal((Fs, H), 1.0 / np.sqrt(Fs))
    x = normal((t_max, H), 1.0)
    r64 = w["router"].astype(np.float64)
    for _ in range(100):
        z = x.astype(np.float64) @ r64
        zs = -np.sort(-z, axis=1)
        gap = zs[:, k - 1] - zs[:, k] if k < E else np.full(len(z), np.inf)
        bad = np.nonzero(gap < 1e-3 * z.std())[0]
        if len(bad) == 0:
            break
        x[bad] = normal((len(bad), H), 1.0)
    else:
        raise RuntimeError("could not draw x without routing near-ties")
    return w, x


def reference(w, x, k):
    """float64 layer: softmax, top-k, renormalize, SwiGLU experts, weighted sum, + shared.
    Returns (y [T,H] float64, topk ids [T,k])."""
    x64 = x.astype(np.float64)
    z = x64 @ w["router"].astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    ids = np.argsort(-p, axis=1, kind="stable")[:, :k]
    pw = np.take_along_axis(p, ids, axis=1)
    pw /= pw.sum(axis=1, keepdims=True)
    y = np.zeros_like(x64)
    for e in np.unique(ids):
        rows, slot = np.nonzero(ids == e)
        xs = x64[rows]
        g = xs @ w["gate"][e].astype(np.float64)
        u = xs @ w["up"][e].astype(np.float64)
        h = g / (1.0 + np.exp(-g)) * u
        y[rows] += pw[rows, slot][:, None] * (h @ w["down"][e].astype(np.float64))
    if "shared_gate" in w:
        g = x64 @ w["shared_gate"].astype(np.float64)
        u = x64 @ w["shared_up"].astype(np.float64)
        y += (g / (1.0 + np.exp(-g)) * u) @ w["shared_down"].astype(np.float64)
    return y, ids


def write_report(prefix, text, data):
    """Prints the markdown `text`; with a `prefix`, also writes it to PREFIX.md and `data` to
    PREFIX.json."""
    print(text)
    if prefix:
        Path(prefix + ".md").write_text(text)
        Path(prefix + ".json").write_text(json.dumps(data, indent=1))
        log(f"wrote {prefix}.md and {prefix}.json")


def rel_l2(y, ref):
    y = np.asarray(y, dtype=np.float64).reshape(ref.shape)
    return float(np.linalg.norm(y - ref) / np.linalg.norm(ref))


WEIGHT_ORDER = ["router", "gate", "up", "down", "shared_gate", "shared_up", "shared_down"]


# The expert matrices and their 16-bit storage, as the tests store them.
sys.path.insert(0, str(REPO / "test" / "lib"))
from moe_case import MATRICES, store_weights  # noqa: E402


def mlir_text(cfg, w, form="args", weights_dtype="f32"):
    """func.func @main with one moe.layer; T is dynamic. form "args": the weights are
    arguments after x (moe-run passes them from .npy files); form "constants": they are dense
    hex constants inside the function (moe-compile outlines them into its .weights file).
    weights_dtype "bf16" or "f16" (constants only): the expert weight matrices are stored in
    that type (rounded), the layer computes in f32."""
    H, k = cfg["H"], cfg["k"]
    if weights_dtype != "f32" and form != "constants":
        raise ValueError("16-bit weights only as constants")

    def ty(a, n=None):
        elt = weights_dtype if n in MATRICES else "f32"
        return "tensor<" + "x".join(map(str, a.shape)) + "x" + elt + ">"

    names = [n for n in WEIGHT_ORDER if n in w]
    xt = f"tensor<?x{H}xf32>"
    args = [f'%x: {xt} {{moe.name = "x"}}']
    body = []
    if form == "args":
        args += [f'%{n}: {ty(w[n])} {{moe.name = "{n}"}}' for n in names]
    else:
        for n in names:
            data = store_weights(w[n], weights_dtype if n in MATRICES else "f32")[0]
            hexdata = np.ascontiguousarray(data).tobytes().hex().upper()
            body.append(f'  %{n} = arith.constant dense<"0x{hexdata}"> : {ty(w[n], n)}\n')
    opnds = "".join(f" {n}(%{n} : {ty(w[n], n)})" for n in names if n != "router")
    return "".join([
        f"// Generated by bench/moe_bench.py: {cfg['desc']}; weights as {form}\n",
        f"func.func @main({', '.join(args)}) -> {xt} {{\n"] + body + [
        f"  %y = moe.layer %x, %router{opnds}\n"
        f"         {{expert = #moe.expert<gated, silu>,\n"
        f"          routing = #moe.routing<k = {k}, renormalize = true>}}\n"
        f"         : ({xt}, {ty(w['router'])}) -> {xt}\n"
        f"  return %y : {xt}\n"
        f"}}\n"])


def prepare_shape(name, cfg, tokens, workdir):
    """Writes (or reuses, if generated by the same recipe) weights, inputs, references,
    the .mlir and both ONNX graphs under workdir/name. Returns a dict of paths and data."""
    d = workdir / name
    d.mkdir(parents=True, exist_ok=True)
    t_max = max(TOKENS)
    key = json.dumps(dict(v=DATA_VERSION, seed=SEED, cfg=cfg, t_max=t_max), sort_keys=True)
    stamp = d / "stamp.json"
    fresh = stamp.exists() and stamp.read_text() == key
    if fresh:
        log(f"{name}: reusing generated data in {d}")
        w = {n: np.load(d / f"{n}.npy", mmap_mode="r") for n in WEIGHT_ORDER
             if (d / f"{n}.npy").exists()}
        x = np.load(d / "x_full.npy")
    else:
        log(f"{name}: generating weights and inputs (seed {SEED})")
        if stamp.exists():
            stamp.unlink()
        w, x = make_weights(name, cfg, t_max)
        for n, a in w.items():
            np.save(d / f"{n}.npy", a)
        np.save(d / "x_full.npy", x)
        import onnx
        import onnx_graphs
        log(f"{name}: building ONNX graphs")
        onnx.save(onnx_graphs.build_moe_op_graph(w, cfg["k"]), str(d / "moe_op.onnx"))
        onnx.save(onnx_graphs.build_standard_graph(w, cfg["k"]), str(d / "standard.onnx"))
        for T in TOKENS:
            np.save(d / f"x_T{T}.npy", np.ascontiguousarray(x[:T]))
            y, ids = reference(w, x[:T], cfg["k"])
            np.save(d / f"ref_T{T}.npy", y)
            np.save(d / f"ids_T{T}.npy", ids)
        stamp.write_text(key)
    (d / "model.mlir").write_text(mlir_text(cfg, w))
    refs = {T: np.load(d / f"ref_T{T}.npy") for T in tokens}
    ids = {T: np.load(d / f"ids_T{T}.npy") for T in tokens}
    return dict(dir=d, w=w, x=x, refs=refs, ids=ids,
                weight_files=[d / f"{n}.npy" for n in WEIGHT_ORDER if n in w])


def rotation_inputs(name, cfg, tokens, n, d):
    """Per T, a stack [n, T, H] of fresh random inputs (the distribution of x) for --rotate;
    returns {T: path}."""
    paths = {}
    for T in tokens:
        path = d / f"xs_T{T}_r{n}.npy"
        if not path.exists():
            rng = np.random.default_rng([SEED, int(name[1:]), T, n])
            np.save(path, rng.standard_normal((n, T, cfg["H"]), dtype=np.float32))
        paths[T] = path
    return paths


# --------------------------------------------------------------------------- machine load

def _cpu_times():
    with open("/proc/stat") as f:
        v = [int(t) for t in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v[:8]), idle


def background_load(seconds=0.5):
    """Fraction of all CPUs busy over `seconds` while this benchmark itself sleeps: the
    load from other processes (a concurrent build makes multi-threaded timings useless)."""
    t0, i0 = _cpu_times()
    time.sleep(seconds)
    t1, i1 = _cpu_times()
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


LOADS = []  # (what, fraction) for every block


def check_load(what, wait_idle, threshold=0.10):
    """Samples the background load before a block; with wait_idle > 0, waits up to that many
    seconds for it to drop under the threshold."""
    load = background_load()
    waited = 0.0
    while load > threshold and waited < wait_idle:
        if waited == 0.0:
            log(f"  waiting for the machine to go idle (background load {100 * load:.0f}%)")
        time.sleep(2.0)
        waited += 2.5
        load = background_load()
    if load > threshold:
        log(f"  WARNING: background load {100 * load:.0f}% before {what}: timings are disturbed")
    LOADS.append(dict(block=what, background_load=round(load, 3), waited_s=waited))
    return load


# --------------------------------------------------------------------------- ceilings

def measure_ceilings(threads, repeats=15):
    import torch
    torch.set_num_threads(threads)
    out = {}
    n = 1024
    a = torch.randn(n, n)
    b = torch.randn(n, n)
    c = torch.empty(n, n)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - t0)
    out["gemm_torch_gflops"] = 2 * n ** 3 / best / 1e9
    an, bn, cn = a.numpy(), b.numpy(), c.numpy()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.matmul(an, bn, out=cn)
        best = min(best, time.perf_counter() - t0)
    out["gemm_numpy_gflops"] = 2 * n ** 3 / best / 1e9
    out["gemm_gflops"] = max(out["gemm_torch_gflops"], out["gemm_numpy_gflops"])

    m = 64 * 1024 * 1024  # 256 MiB per fp32 array: far beyond any cache
    x, y, z = torch.ones(m), torch.ones(m), torch.empty(m)
    bw = {}
    for label, fn, nbytes in [
        ("copy", lambda: z.copy_(x), 2 * 4 * m),
        ("triad", lambda: torch.add(x, y, alpha=3.0, out=z), 3 * 4 * m),
        ("read", lambda: x.sum(), 4 * m),
    ]:
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        bw[label] = nbytes / best / 1e9
    out.update({f"bw_{k}_gbs": v for k, v in bw.items()})
    out["bw_gbs"] = max(bw.values())
    del x, y, z
    out["fma_peak_gflops"] = measure_fma_peak(threads)
    return out


def measure_fma_peak(threads):
    """The vector FMA throughput of `threads` threads (bench/fma_peak.c, built once with
    the project's clang), or 0.0 when it cannot be built or run."""
    exe = HERE / "work" / "fma_peak"
    src = HERE / "fma_peak.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        cc = shutil.which("clang-22") or shutil.which("clang")
        if not cc:
            log("  no clang to build bench/fma_peak.c; FMA peak not measured")
            return 0.0
        exe.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([cc, "-O3", "-march=native", "-ffp-contract=fast", "-fopenmp",
                            str(src), "-o", str(exe)], capture_output=True, text=True)
        if p.returncode != 0:
            log(f"  building bench/fma_peak.c failed: {first_error_line(p.stderr)}")
            return 0.0
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = subprocess.run([str(exe)], capture_output=True, text=True, env=env)
    m = re.search(r"fma_peak_gflops:\s*([0-9.]+)", p.stdout)
    return float(m.group(1)) if m else 0.0


def build_tool(name):
    """bench/NAME.c built with clang -O3 -march=native -fopenmp into work/NAME (rebuilt
    when the source is newer); None when it cannot be built."""
    exe = HERE / "work" / name
    src = HERE / f"{name}.c"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        cc = shutil.which("clang-22") or shutil.which("clang")
        if not cc:
            log(f"  no clang to build bench/{name}.c")
            return None
        exe.parent.mkdir(parents=True, exist_ok=True)
        p = subprocess.run([cc, "-O3", "-march=native", "-fopenmp", str(src), "-o", str(exe)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            log(f"  building bench/{name}.c failed: {first_error_line(p.stderr)}")
            return None
    return exe


def expert_sets(w, x, k):
    """The distinct experts the tokens of x [T, H] select (softmax top-k, as reference)."""
    z = x.astype(np.float64) @ w["router"].astype(np.float64)
    return np.unique(np.argsort(-z, axis=1, kind="stable")[:, :k])


def write_floor_sets(prep, cfg, T, path):
    """Writes to `path` the read floor's expert sets for T: one line per call, the distinct
    experts it reads (the rotated inputs' sets in turn with --rotate, else x[:T]'s)."""
    if T in prep.get("xs", {}):
        sets = [expert_sets(prep["w"], xi, cfg["k"]) for xi in np.load(prep["xs"][T])]
    else:
        sets = [expert_sets(prep["w"], prep["x"][:T], cfg["k"])]
    path.write_text("".join(" ".join(str(int(e)) for e in s) + "\n" for s in sets))
    return path


def read_floor_once(exe, cfg, sets_file, min_time, env):
    """One run of bench/read_floor.c over `sets_file`: (the median/min/max match or None,
    the process)."""
    H, F, E, Fs = cfg["H"], cfg["F"], cfg["E"], cfg["Fs"]
    p = subprocess.run([str(exe), str(3 * H * F), str(E), str(H * E + 3 * H * Fs),
                        str(sets_file), str(min_time)], capture_output=True, text=True,
                       env=env)
    m = re.search(r"median_ms:\s*([0-9.]+)\s+min_ms:\s*([0-9.]+)\s+max_ms:\s*([0-9.]+)",
                  p.stdout)
    return (m if p.returncode == 0 else None), p


def run_floor(cfg, prep, tokens, threads, min_time):
    """The read floor (bench/read_floor.c): per T, the time to stream exactly the weight
    bytes the calls must read (router, shared experts, the distinct experts selected; the
    rotated inputs' sets in turn with --rotate) with the same threads, nothing else."""
    exe = build_tool("read_floor")
    if exe is None:
        return {T: dict(status="unavailable") for T in tokens}
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    res = {}
    for T in tokens:
        sets_file = write_floor_sets(prep, cfg, T, prep["dir"] / f"floor_sets_T{T}.txt")
        m, p = read_floor_once(exe, cfg, sets_file, min_time, env)
        if not m:
            res[T] = dict(status="error", error=first_error_line(p.stderr + p.stdout))
            continue
        res[T] = dict(status="ok", median_ms=float(m.group(1)), min_ms=float(m.group(2)),
                      max_ms=float(m.group(3)))
        log(f"  read floor T={T}: {res[T]['median_ms']:.3f} ms")
    return res


def roofline(cfg, T, ids, ceil):
    H, F, E, k, Fs = cfg["H"], cfg["F"], cfg["E"], cfg["k"], cfg["Fs"]
    flops = 2 * T * H * E + 2 * T * k * 3 * H * F + 2 * T * 3 * H * Fs
    n_used = len(np.unique(ids))
    nbytes = 4 * (n_used * 3 * H * F + H * E + 3 * H * Fs + 2 * T * H)
    t_flop = flops / (ceil["gemm_gflops"] * 1e9)
    t_mem = nbytes / (ceil["bw_gbs"] * 1e9)
    return dict(flops=flops, bytes=nbytes, experts_used=int(n_used),
                roofline_ms=1e3 * max(t_flop, t_mem),
                bound="compute" if t_flop >= t_mem else "memory")


# --------------------------------------------------------------------------- contenders

def time_in_process(fn, min_time):
    warm = []
    w0 = time.perf_counter()
    while len(warm) < 3 or (len(warm) < 50 and time.perf_counter() - w0 < 0.2):
        t0 = time.perf_counter()
        fn()
        warm.append(time.perf_counter() - t0)
    reps = max(5, min(1000, int(np.ceil(min_time / np.median(warm)))))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    ts = np.array(ts) * 1e3
    return dict(median_ms=float(np.median(ts)), min_ms=float(ts.min()),
                max_ms=float(ts.max()), reps=reps)


def hf_layer(torch, w, k, dtype=None):
    """The PyTorch eager peer (bench/hf_loop.py) on the weights `w`, put in nn.Linear layout
    ([out, in]) as a HuggingFace checkpoint holds them, converted to `dtype` if given."""
    from hf_loop import mixtral_block

    def lin(a):
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(a).T))
        return t if dtype is None else t.to(dtype)

    E = w["gate"].shape[0]
    shared = None
    if "shared_gate" in w:
        shared = [lin(w[n]) for n in ("shared_gate", "shared_up", "shared_down")]
    return mixtral_block(torch, lin(w["router"]), [lin(w["gate"][e]) for e in range(E)],
                         [lin(w["up"][e]) for e in range(E)],
                         [lin(w["down"][e]) for e in range(E)], k, shared)


def run_torch(cfg, prep, tokens, threads, min_time):
    import torch
    torch.set_num_threads(threads)
    layer = hf_layer(torch, prep["w"], cfg["k"])

    res = {}
    with torch.inference_mode():
        for T in tokens:
            xt = torch.from_numpy(np.ascontiguousarray(prep["x"][:T]))
            rel = rel_l2(layer(xt).numpy(), prep["refs"][T])
            if not rel <= TOL:
                res[T] = dict(status="mismatch", rel_l2=rel)
                continue
            xs = prep.get("xs", {}).get(T)
            if xs is not None:
                # The timed calls take the stack's inputs in turn (--rotate).
                stack = [torch.from_numpy(a) for a in np.load(xs)]
                turn = iter(range(1 << 62))
                fn = lambda: layer(stack[next(turn) % len(stack)])  # noqa: E731
            else:
                fn = lambda: layer(xt)  # noqa: E731
            res[T] = dict(status="ok", rel_l2=rel, **time_in_process(fn, min_time))
            log(f"  torch T={T}: {res[T]['median_ms']:.3f} ms (rel {rel:.1e})")
    return res


def run_ort(graph_file, prep, tokens, threads, min_time, label):
    node = shutil.which("node")
    if not node:
        return {T: dict(status="error", error="node not found") for T in tokens}
    if not (HERE / "node_modules" / "onnxruntime-node").is_dir():
        return {T: dict(status="error", error="onnxruntime-node not installed (bench/setup.sh)")
                for T in tokens}
    d = prep["dir"]
    spec = dict(model=str(graph_file), threads=threads, min_time_s=min_time, tol=TOL,
                cases=[dict(T=T, x=str(d / f"x_T{T}.npy"), ref=str(d / f"ref_T{T}.npy"),
                            out=str(d / f"y_{label}_T{T}.npy"),
                            **({"xs": str(prep["xs"][T])} if T in prep.get("xs", {}) else {}))
                       for T in tokens])
    spec_file = d / f"{label}_spec.json"
    spec_file.write_text(json.dumps(spec))
    p = subprocess.run([node, str(HERE / "ort_bench.js"), str(spec_file)], capture_output=True,
                       text=True)
    res = {}
    for line in p.stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "session_error" in r:
            return {T: dict(status="error", error="session: " + r["session_error"]) for T in tokens}
        if "error" in r:
            res[r["T"]] = dict(status="error", error=r["error"])
        elif not r["ok"]:
            res[r["T"]] = dict(status="mismatch", rel_l2=r["rel_l2"])
        else:
            res[r["T"]] = dict(status="ok", rel_l2=r["rel_l2"], median_ms=r["median_ms"],
                               min_ms=r["min_ms"], max_ms=r["max_ms"], reps=r["reps"])
            log(f"  {label} T={r['T']}: {r['median_ms']:.3f} ms (rel {r['rel_l2']:.1e})")
    for T in tokens:
        if T not in res:
            err = (p.stderr.strip().splitlines() or [f"node exited {p.returncode}"])[-1]
            res[T] = dict(status="error", error=err[:200])
    return res


def first_error_line(text):
    lines = [l for l in text.splitlines() if l.strip()]
    for l in lines:
        if "error" in l.lower():
            return l.strip()[:240]
    return (lines[-1].strip() if lines else "no output")[:240]


def compile_model(cfg, prep, form, compile_bin, env, name=None, keep_mlir=False,
                  weights_dtype="f32"):
    """Compiles the layer (weights as `form`, expert matrices stored as `weights_dtype`) into
    DIR/NAME.so (default moe_FORM.so). Returns (the library or None, seconds, the error or
    None). The large constants .mlir is removed afterwards unless `keep_mlir` (bench/ab.py
    compiles it with several builds)."""
    d = prep["dir"]
    suffix = "" if weights_dtype == "f32" else "_" + weights_dtype
    mlir = d / ("model.mlir" if form == "args" else f"model_constants{suffix}.mlir")
    if form == "constants" and not (keep_mlir and mlir.exists()):
        log("  writing the model with dense constants (large)")
        mlir.write_text(mlir_text(cfg, prep["w"], "constants", weights_dtype))
    so = d / f"{name or 'moe_' + form}.so"
    for f in (so, so.with_suffix(".weights"), so.with_suffix(".h")):
        if f.exists():
            f.unlink()
    t0 = time.perf_counter()
    p = subprocess.run([str(compile_bin), str(mlir), "-o", str(so)],
                       capture_output=True, text=True, env=env)
    compile_s = time.perf_counter() - t0
    logf = d / f"moe-compile-{form}.log"
    logf.write_text(p.stdout + p.stderr)
    if form == "constants" and mlir.exists() and not keep_mlir:
        mlir.unlink()  # hundreds of MB of hex; the .npy files hold the same data
    if p.returncode != 0 or not so.exists():
        err = first_error_line(p.stderr + p.stdout)
        log(f"  moe-compile ({form}) failed after {compile_s:.1f} s: {err} (log: {logf})")
        return None, compile_s, err
    log(f"  moe-compile ({form}): {compile_s:.1f} s")
    return so, compile_s, None


BENCH_RE = re.compile(r"median_ms:\s*([0-9.eE+-]+)\s+min_ms:\s*([0-9.eE+-]+)\s+"
                      r"max_ms:\s*([0-9.eE+-]+)")


def time_moe_run(cmd, est_ms, min_time, env):
    """`cmd --benchmark=N` (cmd: moe-run, the library and its inputs) with N sized so the
    timed runs take about min_time seconds, from the estimate est_ms and, if the runs took far
    less than that, once more from moe-run's own median. Returns (the median/min/max match or
    None, N, the last process)."""
    m = None
    for _ in range(2):
        reps = max(5, min(1000, int(np.ceil(min_time * 1e3 / max(est_ms, 1e-3)))))
        p = subprocess.run([*cmd, f"--benchmark={reps}"], capture_output=True, text=True,
                           env=env)
        m = BENCH_RE.search(p.stdout)
        if p.returncode != 0 or not m:
            return None, reps, p
        est_ms = float(m.group(1))
        if reps == 1000 or reps * est_ms >= 0.5 * min_time * 1e3:
            break
    return m, reps, p


def run_ours(cfg, prep, tokens, threads, min_time, bin_dir, forms, max_call_s):
    d = prep["dir"]
    compile_bin, run_bin = bin_dir / "moe-compile", bin_dir / "moe-run"
    for b in (compile_bin, run_bin):
        if not os.access(b, os.X_OK):
            return {T: dict(status="unavailable", error=f"{b.name} not built ({b})")
                    for T in tokens}, None
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    st = compile_bin.stat()
    binary = dict(sha256=hashlib.sha256(compile_bin.read_bytes()).hexdigest()[:16],
                  mtime=datetime.datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%d %H:%M:%S"))
    errors = []
    if prep.get("_compiled"):  # a later round (--rounds): the same library
        so, form, compile_s = prep["_compiled"]
    else:
        for form in forms:  # the first form moe-compile accepts is used
            so, compile_s, err = compile_model(cfg, prep, form, compile_bin, env)
            if so:
                prep["_compiled"] = (so, form, compile_s)
                break
            errors.append(f"{form}: {err}")
    if not so:
        return {T: dict(status="compile_failed", error="; ".join(errors)) for T in tokens}, dict(
            seconds=None, weights_form=None, moe_compile=binary)
    ins = [f"--input=@{f}" for f in prep["weight_files"]] if form == "args" else []
    res = {}
    for T in tokens:
        x_in = f"--input=@{d / f'x_T{T}.npy'}"
        y_file = d / f"y_ours_T{T}.npy"
        if y_file.exists():
            y_file.unlink()
        # 1) one plain run whose output is checked; its wall time sizes step 2.
        t0 = time.perf_counter()
        try:
            p = subprocess.run([str(run_bin), str(so), x_in, *ins, f"--output=@{y_file}"],
                               capture_output=True, text=True, env=env, timeout=max_call_s * 30)
        except subprocess.TimeoutExpired:
            res[T] = dict(status="error", error=f"moe-run timed out after {max_call_s * 30:.0f} s")
            log(f"  ours T={T}: {res[T]['error']}")
            continue
        wall = time.perf_counter() - t0
        if p.returncode != 0 or not y_file.exists():
            res[T] = dict(status="error", error=first_error_line(p.stderr + p.stdout))
            log(f"  ours T={T}: moe-run failed: {res[T]['error']}")
            continue
        rel = rel_l2(np.load(y_file), prep["refs"][T])
        if not rel <= TOL:
            res[T] = dict(status="mismatch", rel_l2=rel)
            log(f"  ours T={T}: MISMATCH rel L2 {rel:.3e}")
            continue
        if wall > max_call_s:
            # Too slow to repeat: report that one run's whole-process time (it includes
            # process start and reading the .npy inputs, small next to the call itself).
            res[T] = dict(status="ok", rel_l2=rel, median_ms=wall * 1e3, min_ms=wall * 1e3,
                          max_ms=wall * 1e3, reps=1, single_run=True, weights_form=form)
            log(f"  ours T={T}: {wall:.1f} s for one run (whole process; not repeated, "
                f"> --max-call-s {max_call_s:g})")
            continue
        # 2) the timed runs (moe-run: 1 + 3 warm-up runs, then `reps` timed ones). The first
        # estimate (whole process) is high; if the runs took far less than --min-time,
        # repeat once with the count sized from moe-run's own median.
        est_ms = wall * 1e3
        rotate = ([f"--benchmark-inputs=@{prep['xs'][T]}"] if T in prep.get("xs", {})
                  else [])
        m, reps, p = time_moe_run([str(run_bin), str(so), x_in, *ins, *rotate], est_ms,
                                  min_time, env)
        if not m:
            res[T] = dict(status="error", error=first_error_line(p.stderr + p.stdout))
            continue
        res[T] = dict(status="ok", rel_l2=rel, median_ms=float(m.group(1)),
                      min_ms=float(m.group(2)), max_ms=float(m.group(3)), reps=reps,
                      weights_form=form)
        log(f"  ours T={T}: {res[T]['median_ms']:.3f} ms (rel {rel:.1e}, {reps} runs)")
    return res, dict(seconds=compile_s, weights_form=form, moe_compile=binary)


def merge_rounds(prev, new):
    """One contender's results over --rounds: per T the fastest round's (each round's median
    kept in rounds_ms); a round that failed or mismatched makes the cell that failure."""
    if prev is None:
        merged = {}
        for T, r in new.items():
            merged[T] = dict(r)
            if r.get("status") == "ok":
                merged[T]["rounds_ms"] = [r["median_ms"]]
        return merged
    for T, r in new.items():
        p = prev.get(T)
        if p is None or p.get("status") != "ok":
            continue  # keep the first failure
        if r.get("status") != "ok":
            prev[T] = dict(r)
            continue
        rounds = p["rounds_ms"] + [r["median_ms"]]
        if r["median_ms"] < p["median_ms"]:
            prev[T] = dict(r)
        prev[T]["rounds_ms"] = rounds
    return prev


# --------------------------------------------------------------------------- report

def cell(r):
    if r is None:
        return "not run"
    s = r["status"]
    if s == "ok" and r.get("single_run"):
        return f"~{r['median_ms']:.0f} (1 run)"
    if s == "ok":
        return f"{r['median_ms']:.3f}"
    if s == "mismatch":
        return f"**MISMATCH** (rel L2 {r['rel_l2']:.1e})"
    if s == "compile_failed":
        return "compile failed"
    if s == "unavailable":
        return "not built"
    return "error"


def machine_info():
    cpu = "unknown-cpu"
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown-cpu":
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    info = dict(cpu=cpu, cores=os.cpu_count(), avx512f="avx512f" in flags.split(),
                kernel=platform.release(), python=platform.python_version(),
                numpy=np.__version__)
    try:
        import torch
        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    try:
        pkg = json.loads((HERE / "node_modules" / "onnxruntime-node" / "package.json").read_text())
        info["onnxruntime_node"] = pkg["version"]
    except OSError:
        info["onnxruntime_node"] = None
    try:
        info["node"] = subprocess.run(["node", "--version"], capture_output=True,
                                      text=True).stdout.strip()
    except OSError:
        info["node"] = None
    try:
        info["git_commit"] = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"],
                                            capture_output=True, text=True).stdout.strip()
    except OSError:
        info["git_commit"] = None
    info["openblas_coretype"] = os.environ.get("OPENBLAS_CORETYPE", "(auto)")
    return info


def render_markdown(meta, ceil, rows, shapes):
    L = []
    L.append(f"# MoE layer on CPU: moe-mlir vs peers ({meta['date']})")
    L.append("")
    m = meta["machine"]
    L.append(f"- Machine: {m['cpu']}, {m['cores']} cores (AVX-512: {'yes' if m['avx512f'] else 'no'}), "
             f"kernel {m['kernel']}; all contenders on {meta['threads']} threads")
    L.append(f"- Versions: torch {m['torch']}, onnxruntime-node {m['onnxruntime_node']} (node {m['node']}), "
             f"numpy {m['numpy']}, OPENBLAS_CORETYPE={m['openblas_coretype']}; repo {str(m['git_commit'])[:12]}")
    L.append(f"- Ceilings (best of the measurements at start and end of this run): "
             f"fp32 GEMM 1024^3 **{ceil['gemm_gflops']:.0f} GFLOP/s** "
             f"(torch {ceil['gemm_torch_gflops']:.0f}, numpy {ceil['gemm_numpy_gflops']:.0f}); "
             f"bandwidth **{ceil['bw_gbs']:.1f} GB/s** (copy {ceil['bw_copy_gbs']:.1f}, "
             f"triad {ceil['bw_triad_gbs']:.1f}, read {ceil['bw_read_gbs']:.1f})"
             + (f"; vector FMA peak **{ceil['fma_peak_gflops']:.0f} GFLOP/s** (bench/fma_peak.c; "
                f"the GEMM ceiling is OpenBLAS's, the roofline uses it)"
                if ceil.get("fma_peak_gflops") else ""))
    L.append(f"- Float32 weights, seed {SEED}; every result checked against a float64 reference "
             f"(relative L2 <= {TOL:g}) before timing; times are medians in ms")
    if meta.get("rounds", 1) > 1:
        L.append(f"- **{meta['rounds']} rounds:** the contenders of a shape ran one after another "
                 f"{meta['rounds']} times; each cell is the contender's fastest round (its median "
                 f"over the round's timed calls); the JSON has every round's median")
    if not meta.get("no_floor"):
        L.append("- **Read floor:** bench/read_floor.c streams exactly the weight bytes each "
                 "call must read (router, shared experts, the distinct experts its tokens "
                 "select; the rotated inputs' sets in turn) with the same threads, in every "
                 "round beside the contenders: the memory roofline measured under the same "
                 "conditions (this machine's bandwidth moves by 1.5x within minutes)")
    if meta.get("rotate"):
        L.append(f"- **Rotated inputs:** every contender's timed calls take {meta['rotate']} "
                 f"different random inputs in turn, so a call does not find the previous call's "
                 f"experts in cache (as in decoding); the roofline counts the experts of the "
                 f"checked input")
    worst = max((l["background_load"] for l in meta["background_load"]), default=0.0)
    L.append(f"- Background CPU load from other processes, sampled before each block: "
             f"max {100 * worst:.0f}%"
             + (" -- **WARNING: the machine was busy; these timings are disturbed**"
                if worst > 0.10 else ""))
    if meta.get("quick"):
        L.append("- **--quick run: a smoke test, not a result**")
    L.append("")
    for s in shapes:
        L.append(f"- {s}: {SHAPES[s]['desc']}"
                 + (f"; moe-compile (binary {meta['compile_s'][s]['moe_compile']['sha256']}, built "
                    f"{meta['compile_s'][s]['moe_compile']['mtime']}) took "
                    f"{meta['compile_s'][s]['seconds']:.1f} s with the weights as "
                    f"{meta['compile_s'][s]['weights_form']}"
                    if (meta['compile_s'].get(s) or {}).get('seconds') else ""))
    L.append("")
    hdr = ["shape", "T"] + [TITLES[c] for c in CONTENDERS] + [
        "best peer", "ratio peer/ours", "roofline ms", "bound", "ours % roofline",
        "best peer % roofline", "read floor ms", "ours % read floor",
        "best peer % read floor", "ours % FMA peak", "best peer % FMA peak"]
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "|".join(["---"] * len(hdr)) + "|")
    for r in rows:
        cells = [r["shape"], str(r["T"])] + [cell(r["results"].get(c)) for c in CONTENDERS]
        bp = r.get("best_peer")
        cells.append(f"{TITLES[bp]}" if bp else "-")
        cells.append(f"{r['ratio']:.2f}x" if r.get("ratio") else "-")
        cells.append(f"{r['roofline']['roofline_ms']:.3f}")
        cells.append(r["roofline"]["bound"])
        cells.append(f"{r['ours_pct_roofline']:.0f}%" if r.get("ours_pct_roofline") else "-")
        cells.append(f"{r['peer_pct_roofline']:.0f}%" if r.get("peer_pct_roofline") else "-")
        cells.append(f"{r['floor']['median_ms']:.3f}" if r.get("floor") else "-")
        cells.append(f"{r['ours_pct_floor']:.0f}%" if r.get("ours_pct_floor") else "-")
        cells.append(f"{r['peer_pct_floor']:.0f}%" if r.get("peer_pct_floor") else "-")
        cells.append(f"{r['ours_pct_fma']:.0f}%" if r.get("ours_pct_fma") else "-")
        cells.append(f"{r['peer_pct_fma']:.0f}%" if r.get("peer_pct_fma") else "-")
        L.append("| " + " | ".join(cells) + " |")
    notes = []
    for r in rows:
        for c in CONTENDERS:
            x = r["results"].get(c)
            if x and x["status"] not in ("ok",) and x.get("error"):
                notes.append(f"{TITLES[c]} on {r['shape']} T={r['T']}: {x['status']}: {x['error']}")
    if notes:
        L.append("")
        L.append("Notes:")
        seen = set()
        for n in notes:
            key = re.sub(r" T=\d+", "", n)
            if key in seen:
                continue
            seen.add(key)
            L.append(f"- {n}")
    L.append("")
    return "\n".join(L)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help=f"smoke test: {','.join(QUICK_SHAPES)} x T={QUICK_TOKENS}, short timing; "
                         "results go to the work dir unless --out-dir is given")
    ap.add_argument("--shapes", help="comma-separated subset of " + ",".join(SHAPES))
    ap.add_argument("--tokens", help="comma-separated subset of " + ",".join(map(str, TOKENS)))
    ap.add_argument("--contenders", default=",".join(CONTENDERS),
                    help="comma-separated subset of " + ",".join(CONTENDERS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=None,
                    help="seconds of timed runs per (contender, shape, T) (default 1.0; 0.2 quick)")
    ap.add_argument("--bin-dir", default=str(REPO / "build" / "bin"),
                    help="where moe-compile and moe-run are (default build/bin)")
    ap.add_argument("--weights-form", default="constants,args",
                    help="how the .mlir given to moe-compile holds the weights: 'constants' "
                         "(dense constants, as an ONNX model's initializers: moe-compile stores "
                         "them in its .weights file, expert matrices in column panels) or 'args' "
                         "(function arguments, passed to moe-run as .npy inputs, row-major); a "
                         "list is tried in order until one compiles (default constants,args)")
    ap.add_argument("--max-call-s", type=float, default=20.0,
                    help="a compiled-layer call slower than this (seconds, whole process) is run "
                         "once, not repeated; its one time is reported, marked (default 20)")
    ap.add_argument("--work-dir", default=str(HERE / "work"))
    ap.add_argument("--wait-idle", type=float, default=0.0,
                    help="before each block, wait up to this many seconds for other processes' "
                         "CPU load to drop under 10%% (default 0: only measure and warn)")
    ap.add_argument("--rotate", type=int, default=0, metavar="N",
                    help="the timed calls of every contender take N different inputs in turn "
                         "(fresh random tokens), so that a call does not find the experts of "
                         "the previous one in cache, as in real decoding (default 0: the "
                         "checked input every time)")
    ap.add_argument("--no-floor", action="store_true",
                    help="do not measure the read floor (bench/read_floor.c) beside the "
                         "contenders")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the contenders of a shape one after another this many times "
                         "and report each one's fastest round: on a machine whose bandwidth "
                         "drifts with other tenants' load, the contenders then see the same "
                         "conditions (default 1)")
    ap.add_argument("--out-dir", default=None, help="default bench/results (work dir if --quick)")
    a = ap.parse_args()

    shapes = a.shapes.split(",") if a.shapes else (QUICK_SHAPES if a.quick else list(SHAPES))
    tokens = [int(t) for t in a.tokens.split(",")] if a.tokens else (
        QUICK_TOKENS if a.quick else TOKENS)
    contenders = a.contenders.split(",")
    for s in shapes:
        if s not in SHAPES:
            ap.error(f"unknown shape {s}")
    for t in tokens:
        if t not in TOKENS:
            ap.error(f"T must be one of {TOKENS}")
    for c in contenders:
        if c not in CONTENDERS:
            ap.error(f"unknown contender {c}")
    if a.rotate < 0:
        ap.error("--rotate needs a non-negative count")
    if a.rounds < 1:
        ap.error("--rounds needs a positive count")
    min_time = a.min_time if a.min_time is not None else (0.2 if a.quick else 1.0)
    workdir = Path(a.work_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))

    now = datetime.datetime.now()
    meta = dict(date=now.strftime("%Y-%m-%d %H:%M"), threads=a.threads, quick=a.quick,
                min_time_s=min_time, seed=SEED, tol=TOL, rotate=a.rotate, rounds=a.rounds, no_floor=a.no_floor, machine=machine_info(), compile_s={},
                env={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                     "OPENBLAS_CORETYPE")})
    log(f"machine: {meta['machine']['cpu']}, {meta['machine']['cores']} cores; "
        f"shapes {shapes}, T {tokens}, contenders {contenders}")
    check_load("ceilings (start)", a.wait_idle)
    log("measuring ceilings (start)")
    ceil0 = measure_ceilings(a.threads)
    log(f"  GEMM {ceil0['gemm_gflops']:.0f} GFLOP/s, bandwidth {ceil0['bw_gbs']:.1f} GB/s")

    results = {}
    for s in shapes:
        cfg = SHAPES[s]
        prep = prepare_shape(s, cfg, tokens, workdir)
        if a.rotate:
            prep["xs"] = rotation_inputs(s, cfg, tokens, a.rotate, prep["dir"])
        results[s] = {}
        for rnd in range(a.rounds):
            if a.rounds > 1:
                log(f"{s}: round {rnd + 1} of {a.rounds}")
            got = {}
            if "ours" in contenders:
                log(f"{s}: moe-mlir (compiled)")
                check_load(f"{s} ours", a.wait_idle)
                got["ours"], meta["compile_s"][s] = run_ours(
                    cfg, prep, tokens, a.threads, min_time, Path(a.bin_dir),
                    a.weights_form.split(","), a.max_call_s)
            if "ort_moe" in contenders:
                log(f"{s}: ONNX Runtime, com.microsoft.MoE")
                check_load(f"{s} ort_moe", a.wait_idle)
                got["ort_moe"] = run_ort(prep["dir"] / "moe_op.onnx", prep, tokens,
                                         a.threads, min_time, "ort_moe")
            if "ort_std" in contenders:
                log(f"{s}: ONNX Runtime, standard ops")
                check_load(f"{s} ort_std", a.wait_idle)
                got["ort_std"] = run_ort(prep["dir"] / "standard.onnx", prep, tokens,
                                         a.threads, min_time, "ort_std")
            if "torch" in contenders:
                log(f"{s}: PyTorch eager")
                check_load(f"{s} torch", a.wait_idle)
                got["torch"] = run_torch(cfg, prep, tokens, a.threads, min_time)
            if not a.no_floor:
                log(f"{s}: read floor")
                check_load(f"{s} floor", a.wait_idle)
                got["floor"] = run_floor(cfg, prep, tokens, a.threads, min_time)
            for c, r in got.items():
                results[s][c] = merge_rounds(results[s].get(c), r)
        results[s]["_ids"] = prep["ids"]
        del prep

    check_load("ceilings (end)", a.wait_idle)
    log("measuring ceilings (end)")
    ceil1 = measure_ceilings(a.threads)
    ceil = {k: max(ceil0[k], ceil1[k]) for k in ceil0}
    ceil["start"], ceil["end"] = ceil0, ceil1
    log(f"  GEMM {ceil['gemm_gflops']:.0f} GFLOP/s, bandwidth {ceil['bw_gbs']:.1f} GB/s, "
        f"FMA peak {ceil['fma_peak_gflops']:.0f} GFLOP/s (best of both)")

    rows = []
    for s in shapes:
        for T in tokens:
            rr = {c: results[s][c][T] for c in CONTENDERS if c in results[s]}
            row = dict(shape=s, T=T, results=rr,
                       roofline=roofline(SHAPES[s], T, results[s]["_ids"][T], ceil))
            floor = results[s].get("floor", {}).get(T)
            if floor and floor["status"] == "ok":
                row["floor"] = floor
            peers = [(v["median_ms"], c) for c, v in rr.items() if c != "ours" and v["status"] == "ok"]
            if peers:
                best_ms, best = min(peers)
                row["best_peer"], row["best_peer_ms"] = best, best_ms
                row["peer_pct_roofline"] = 100 * row["roofline"]["roofline_ms"] / best_ms
            ours = rr.get("ours")
            # GFLOP/s achieved (the layer's FLOPs over its time) against the FMA peak.
            peak_ms = (1e3 * row["roofline"]["flops"] / (ceil["fma_peak_gflops"] * 1e9)
                       if ceil.get("fma_peak_gflops") else None)
            if peers and peak_ms:
                row["peer_pct_fma"] = 100 * peak_ms / best_ms
            if ours and ours["status"] == "ok" and peak_ms:
                row["ours_pct_fma"] = 100 * peak_ms / ours["median_ms"]
            if row.get("floor") and peers:
                row["peer_pct_floor"] = 100 * row["floor"]["median_ms"] / best_ms
            if ours and ours["status"] == "ok" and row.get("floor"):
                row["ours_pct_floor"] = 100 * row["floor"]["median_ms"] / ours["median_ms"]
            if ours and ours["status"] == "ok":
                row["ours_pct_roofline"] = 100 * row["roofline"]["roofline_ms"] / ours["median_ms"]
                if peers:
                    row["ratio"] = row["best_peer_ms"] / ours["median_ms"]
            rows.append(row)

    meta["background_load"] = LOADS
    md = render_markdown(meta, ceil, rows, shapes)
    print(md)
    out_dir = Path(a.out_dir) if a.out_dir else (workdir / "results" if a.quick else HERE / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    cpu_slug = re.sub(r"[^A-Za-z0-9]+", "-", meta["machine"]["cpu"]).strip("-") or "cpu"
    base = out_dir / f"{now.strftime('%Y-%m-%d')}-{cpu_slug}{'-quick' if a.quick else ''}"
    if not a.quick and Path(str(base) + ".json").exists():  # keep an earlier run of the day
        base = Path(f"{base}-{now.strftime('%H%M')}")
    Path(str(base) + ".md").write_text(md)
    Path(str(base) + ".json").write_text(json.dumps(dict(meta=meta, ceilings=ceil, shapes={
        s: SHAPES[s] for s in shapes}, rows=rows), indent=1, default=float))
    log(f"wrote {base}.md and {base}.json")
    bad = [r for r in rows for c, v in r["results"].items() if v["status"] == "mismatch"]
    if bad:
        log("MISMATCH: some contender's output differs from the float64 reference; "
            "see the table (those cells were not timed)")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
