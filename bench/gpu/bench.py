#!/usr/bin/env python3
"""GPU benchmark of one MoE layer: the layer compiled with moe-compile --target=cuda and run by
moe-run, against PyTorch eager (transformers' loop style) on the same card, same weights, in one
run. Every output is checked against a float64 reference (PyTorch, on the GPU) before it is timed.

    bench.py stage DIR                       # here: writes DIR/<model>/model.mlir (splat weights)
    bench.py run --stage DIR --out OUT       # on the GPU machine (bench/gpu/run.sh calls it)

Shapes are bench/moe_bench.py's S1/S2/S3; T in {1, 16, 128, 4096}; f32 and f16. The models are
compiled with splat weights; `run` writes each model's weights file (layout of
docs/CompiledModelABI.md, offsets from `moe-run --print-signature`) with seeded random weights.
Timing: the wall time of a whole call, synchronized (moe-run --benchmark: inputs copied to the
device, the kernels, the result copied back; with --device-io, when moe-run has it, also x and y
kept in device memory; PyTorch: the layer on tensors already on the device, then sync(torch)). Ceilings measured in the same run: device-to-device copy
bandwidth and an f16 matrix product (cuBLAS).
"""

import argparse
import datetime
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {
    "S1": dict(H=1024, F=3584, E=8, k=2, Fs=0, desc="H1024 F3584 E8 k2 (Mixtral-like)"),
    "S2": dict(H=1024, F=512, E=64, k=8, Fs=0, desc="H1024 F512 E64 k8 (OLMoE-like)"),
    "S3": dict(H=1024, F=352, E=64, k=6, Fs=704, desc="H1024 F352 E64 k6 + shared Fs=704"),
}
DTYPES = {"f32": 4, "f16": 2}
TOKENS = [1, 16, 128, 4096]
SEED = 20261125
TOL = {"f32": 1e-4, "f16": 2e-2}
DEV = "cuda"  # --device=cpu: a dry run of the script without a GPU
ORDER = ["router", "gate", "up", "down", "shared_gate", "shared_up", "shared_down"]


def log(msg):
    print(f"[gpu-bench] {msg}", file=sys.stderr, flush=True)


def shapes_of(cfg):
    H, F, E, Fs = cfg["H"], cfg["F"], cfg["E"], cfg["Fs"]
    s = {"router": (H, E), "gate": (E, H, F), "up": (E, H, F), "down": (E, F, H)}
    if Fs:
        s.update(shared_gate=(H, Fs), shared_up=(H, Fs), shared_down=(Fs, H))
    return s


# ------------------------------------------------------------------------------- stage (here)

def stage(args):
    out = Path(args.dir)
    for name, cfg in SHAPES.items():
        for dt in DTYPES:
            d = out / f"{name}-{dt}"
            d.mkdir(parents=True, exist_ok=True)
            shp = shapes_of(cfg)
            ty = {n: "tensor<" + "x".join(map(str, s)) + f"x{dt}>" for n, s in shp.items()}
            xt = f"tensor<?x{cfg['H']}x{dt}>"
            # Distinct splat values: identical constants would share one weight.
            body = "".join(f"  %{n} = arith.constant dense<{0.001 * (i + 1)}> : {ty[n]}\n"
                           for i, n in enumerate(shp))
            opnds = "".join(f" {n}(%{n} : {ty[n]})" for n in shp if n != "router")
            (d / "model.mlir").write_text(
                f"// bench/gpu/bench.py {name} {dt}: weights written at run time\n"
                f"func.func @main(%x: {xt} {{moe.name = \"x\"}}) -> {xt} {{\n{body}"
                f"  %y = moe.layer %x, %router{opnds}\n"
                f"         {{expert = #moe.expert<gated, silu>,\n"
                f"          routing = #moe.routing<k = {cfg['k']}, renormalize = true>}}\n"
                f"         : ({xt}, {ty['router']}) -> {xt}\n  return %y : {xt}\n}}\n")
            (d / "meta.json").write_text(json.dumps(dict(shape=name, dtype=dt, cfg=cfg,
                                                         weights=list(shp))))


# ------------------------------------------------------------------------------- run (there)

def parse_signature(text):
    weights = []
    for line in text.splitlines():
        m = re.match(r"weight (\S+) (\S+) (\S+) offset=(\d+) bytes=(\d+)", line)
        if m:
            weights.append(dict(name=m.group(1), dtype=m.group(2),
                                shape=tuple(map(int, m.group(3).split("x"))),
                                offset=int(m.group(4)), bytes=int(m.group(5))))
    return weights


def make_data(torch, cfg, dt, t_max):
    """Seeded weights and x (on the GPU, in the benchmark dtype). Rows of x whose k-th and
    (k+1)-th float64 logits are closer than 1e-3 of the logits' std are redrawn."""
    tdt = {"f32": torch.float32, "f16": torch.float16}[dt]
    g = torch.Generator(device=DEV).manual_seed(SEED + int(cfg["H"]) + cfg["E"])
    w = {}
    for n, s in shapes_of(cfg).items():
        fan_in = s[-2]
        w[n] = (torch.randn(s, generator=g, device=DEV) / fan_in ** 0.5).to(tdt)
    x = torch.randn((t_max, cfg["H"]), generator=g, device=DEV).to(tdt)
    k = cfg["k"]
    for _ in range(100):
        z = x.double() @ w["router"].double()
        zs = torch.sort(z, dim=1, descending=True).values
        gap = zs[:, k - 1] - zs[:, k]
        bad = torch.nonzero(gap < 1e-3 * z.std()).flatten()
        if bad.numel() == 0:
            break
        x[bad] = torch.randn((bad.numel(), cfg["H"]), generator=g, device=DEV).to(tdt)
    return w, x


def reference(torch, w, x, k):
    x64 = x.double()
    p = torch.softmax(x64 @ w["router"].double(), dim=1)
    pw, ids = torch.topk(p, k, dim=1)
    pw = pw / pw.sum(dim=1, keepdim=True)
    y = torch.zeros_like(x64)
    for e in torch.unique(ids).tolist():
        rows, slot = torch.nonzero(ids == e, as_tuple=True)
        xs = x64[rows]
        h = torch.nn.functional.silu(xs @ w["gate"][e].double()) * (xs @ w["up"][e].double())
        y.index_add_(0, rows, pw[rows, slot][:, None] * (h @ w["down"][e].double()))
    if "shared_gate" in w:
        h = torch.nn.functional.silu(x64 @ w["shared_gate"].double()) * (
            x64 @ w["shared_up"].double())
        y += h @ w["shared_down"].double()
    return y, ids


def torch_layer(torch, w, k, E):
    """bench/hf_loop.py's transformers-loop layer on these weights (nn.Linear layout)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from hf_loop import mixtral_block
    t = [w[n].t().contiguous() for n in ("shared_gate", "shared_up", "shared_down")
         if n in w]
    return mixtral_block(torch, w["router"].t().contiguous(),
                         [w["gate"][e].t().contiguous() for e in range(E)],
                         [w["up"][e].t().contiguous() for e in range(E)],
                         [w["down"][e].t().contiguous() for e in range(E)], k, t or None)


def sync(torch):
    if DEV == "cuda":
        torch.cuda.synchronize()


def time_torch(torch, fn, min_time=0.3):
    for _ in range(3):
        fn()
    sync(torch)
    t0 = time.perf_counter()
    fn()
    sync(torch)
    est = time.perf_counter() - t0
    reps = max(10, min(2000, int(min_time / max(est, 1e-6))))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(torch)
        ts.append((time.perf_counter() - t0) * 1e3)
    ts.sort()
    return dict(median_ms=ts[len(ts) // 2], min_ms=ts[0], max_ms=ts[-1], reps=reps)


def ceilings(torch):
    def rate(fn, warm, reps):
        """Calls per second of fn after `warm` untimed calls."""
        for _ in range(warm):
            fn()
        sync(torch)
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        sync(torch)
        return reps / (time.perf_counter() - t0)

    a = torch.empty(1 << 28 if DEV == "cuda" else 1 << 20, dtype=torch.float32, device=DEV)
    b = torch.empty_like(a)
    bw = 2 * a.numel() * 4 * rate(lambda: b.copy_(a), 3, 20) / 1e9
    del a, b
    n = 8192 if DEV == "cuda" else 256
    half = torch.float16 if DEV == "cuda" else torch.float32
    m1 = torch.randn(n, n, device=DEV, dtype=half)
    m2 = torch.randn(n, n, device=DEV, dtype=half)
    tflops = 2 * n ** 3 * rate(lambda: m1 @ m2, 3, 10) / 1e12
    m1, m2 = m1.float(), m2.float()
    tflops32 = 2 * n ** 3 * rate(lambda: m1 @ m2, 2, 5) / 1e12
    return dict(copy_GBps=bw, f16_mm_TFLOPs=tflops, f32_mm_TFLOPs=tflops32)


def has_device_io(moe_run):
    """Whether this moe-run has --device-io (inputs and outputs kept in device memory)."""
    try:
        p = subprocess.run([moe_run, "--help"], capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return "--device-io" in p.stdout


def parse_bench(stdout, bench_re):
    """(whole-call, device) timings of one moe-run --benchmark output, or None."""
    m = bench_re.search(stdout)
    dm = re.search(r"device_median_ms:\s*([0-9.eE+-]+)\s+device_min_ms:\s*([0-9.eE+-]+)", stdout)
    ours = dict(median_ms=float(m.group(1)), min_ms=float(m.group(2)),
                max_ms=float(m.group(3))) if m else None
    device = dict(median_ms=float(dm.group(1)), min_ms=float(dm.group(2))) if dm else None
    return ours, device


def run(args):
    import numpy as np
    import torch
    stage_dir, out = Path(args.stage), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profiles.txt").unlink(missing_ok=True)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    moe_run = str(stage_dir.parent / "bin" / "moe-run")
    device_io = has_device_io(moe_run)
    tokens = [int(t) for t in args.tokens.split(",")]
    torch.backends.cuda.matmul.allow_tf32 = False
    if DEV == "cuda":
        props = torch.cuda.get_device_properties(0)
        device, sms = props.name, props.multi_processor_count
    else:
        device, sms = "cpu (dry run)", 0
    meta = dict(date=datetime.date.today().isoformat(), device=device, sms=sms, torch=torch.__version__,
                tokens=tokens, device_io=device_io)
    log(f"{device}: measuring ceilings")
    meta["ceilings"] = ceilings(torch)
    log(f"ceilings: {meta['ceilings']}")
    bench_re = re.compile(r"median_ms:\s*([0-9.eE+-]+)\s+min_ms:\s*([0-9.eE+-]+)\s+"
                          r"max_ms:\s*([0-9.eE+-]+)")
    rows = []
    models = sorted(p.parent for p in stage_dir.glob("*/meta.json"))
    if args.models:
        models = [m for m in models if m.name in args.models.split(",")]
    for mdir in models:
        info = json.loads((mdir / "meta.json").read_text())
        cfg, dt, name = info["cfg"], info["dtype"], info["shape"]
        log(f"{mdir.name}: weights")
        w, x = make_data(torch, cfg, dt, max(tokens))
        sig = parse_signature((mdir / "signature").read_text())
        if len(sig) != len(info["weights"]):
            sys.exit(f"{mdir}: signature has {len(sig)} weights, expected {len(info['weights'])}")
        wdir = work / mdir.name
        wdir.mkdir(parents=True, exist_ok=True)
        so = wdir / "model.so"
        so.write_bytes((mdir / "model.so").read_bytes())
        data_bytes = max(s["offset"] + s["bytes"] for s in sig)
        with open(wdir / "model.weights", "wb") as f:
            f.write(b"MOEWGHT1" + struct.pack("<Q", data_bytes) + bytes(48))
            for role, s in zip(info["weights"], sig):
                a = w[role].contiguous().cpu().numpy()
                assert a.shape == s["shape"] and a.nbytes == s["bytes"], (role, s)
                f.seek(64 + s["offset"])
                f.write(a.tobytes())
            f.truncate(64 + data_bytes)
        layer = torch_layer(torch, w, cfg["k"], cfg["E"])
        wbytes = DTYPES[dt]
        for T in tokens:
            xt = x[:T].contiguous()
            ref, ids = reference(torch, w, xt, cfg["k"])
            nref = float(torch.linalg.norm(ref))
            xin = wdir / f"x_T{T}.npy"
            np.save(xin, xt.cpu().numpy())
            yout = wdir / f"y_T{T}.npy"
            row = dict(model=mdir.name, shape=name, dtype=dt, T=T)
            # Bytes a layer must read at least: router, x, the experts hit, shared, y.
            hit = int(torch.unique(ids).numel())
            H, F, Fs = cfg["H"], cfg["F"], cfg["Fs"]
            row["min_bytes"] = wbytes * (H * cfg["E"] + 2 * T * H + hit * 3 * H * F
                                         + 3 * H * Fs)
            row["flops"] = 2 * T * (cfg["k"] * 3 * H * F + 3 * H * Fs + H * cfg["E"])
            with torch.inference_mode():
                yt = layer(xt)
            row["torch_rel_l2"] = float(torch.linalg.norm(yt.double() - ref)) / nref
            if row["torch_rel_l2"] <= TOL[dt]:
                with torch.inference_mode():
                    row["torch"] = time_torch(torch, lambda: layer(xt))
            p = subprocess.run([moe_run, str(so), f"--input=@{xin}", f"--output=@{yout}"],
                               capture_output=True, text=True, timeout=300)
            if p.returncode != 0:
                row["ours_error"] = (p.stderr + p.stdout).strip().splitlines()[-1:]
            else:
                y = torch.from_numpy(np.load(yout).astype(np.float64)).to(DEV)
                row["ours_rel_l2"] = float(torch.linalg.norm(y - ref)) / nref
                if row["ours_rel_l2"] <= TOL[dt]:
                    reps = 200 if T <= 128 else 30
                    p = subprocess.run([moe_run, str(so), f"--input=@{xin}",
                                        f"--benchmark={reps}"],
                                       capture_output=True, text=True, timeout=300)
                    ours, dev = parse_bench(p.stdout, bench_re)
                    if ours:
                        row["ours"] = dict(ours, reps=reps)
                    if ours and dev:
                        row["ours_device"] = dev
                    else:
                        row["ours_error"] = (p.stderr + p.stdout).strip().splitlines()[-1:]
                    if device_io and "ours" in row:
                        # x and y stay in device memory, as PyTorch's tensors do.
                        p = subprocess.run([moe_run, str(so), f"--input=@{xin}",
                                            f"--benchmark={reps}", "--device-io"],
                                           capture_output=True, text=True, timeout=300)
                        dio, _ = parse_bench(p.stdout, bench_re)
                        if dio and p.returncode == 0:
                            row["ours_device_io"] = dict(dio, reps=reps)
                        else:
                            row["ours_device_io_error"] = \
                                (p.stderr + p.stdout).strip().splitlines()[-1:]
            if "ours" in row and (args.profile == "all" or
                                  f"{mdir.name}@{T}" in args.profile.split(",")):
                # Per-kernel device times from the runtime's own profiler
                # (MOE_CUDA_PROFILE: events around every launch; seconds, not minutes),
                # with x and y crossing the bus and with them in device memory.
                text = ""
                for label, extra in (("", []), (" device-io", ["--device-io"])):
                    p = subprocess.run([moe_run, str(so), f"--input=@{xin}", "--benchmark=20"]
                                       + extra, capture_output=True, text=True, timeout=120,
                                       env=dict(os.environ, MOE_CUDA_PROFILE="1"))
                    text += f"## {mdir.name} T={T}{label}\n{p.stderr}"
                # One file for every cell (the device tool returns at most 8 files).
                with open(out / "profiles.txt", "a") as f:
                    f.write(text)
                log(f"  profile: {mdir.name} T={T} -> {out / 'profiles.txt'}")
            if f"{mdir.name}@{T}" in args.ncu.split(","):
                # Per-kernel device times (Nsight Compute), when it is installed.
                ncu = shutil.which("ncu") or "/usr/local/cuda/bin/ncu"
                if os.access(ncu, os.X_OK):
                    # Nsight Compute replays every kernel: keep it short (it did not finish
                    # S1 f16 at T = 4096 in 300 s on an H200).
                    try:
                        p = subprocess.run([ncu] + args.ncu_args.split() + [moe_run, str(so),
                                            f"--input=@{xin}", f"--output=@{yout}"],
                                           capture_output=True, text=True,
                                           timeout=args.ncu_timeout)
                        (out / f"ncu-{mdir.name}-T{T}.txt").write_text(p.stdout + p.stderr)
                        log(f"  ncu: {out / f'ncu-{mdir.name}-T{T}.txt'}")
                    except subprocess.TimeoutExpired as e:
                        # Keep what it printed: where it got stuck.
                        text = "".join(x.decode(errors="replace") if isinstance(x, bytes)
                                       else (x or "") for x in (e.stdout, e.stderr))
                        (out / f"ncu-{mdir.name}-T{T}.txt").write_text(
                            text + f"\n(gave up after {args.ncu_timeout} s)\n")
                        log(f"  ncu: gave up after {args.ncu_timeout} s")
                else:
                    log("  ncu: not installed")
            tm = row.get("torch", {}).get("median_ms")
            om = row.get("ours", {}).get("median_ms")
            im = row.get("ours_device_io", {}).get("median_ms")
            log(f"  {mdir.name} T={T}: ours {om} ms (rel {row.get('ours_rel_l2')}), "
                f"ours device-I/O {im} ms, "
                f"torch {tm} ms (rel {row['torch_rel_l2']:.1e}) {row.get('ours_error', '')}"
                f"{row.get('ours_device_io_error', '')}")
            rows.append(row)
        (wdir / "model.weights").unlink()
    result = dict(meta=meta, rows=rows)
    (out / "gpu-bench.json").write_text(json.dumps(result, indent=1))
    (out / "gpu-bench.md").write_text(render(result))
    print(render(result))


def render(result):
    meta, rows = result["meta"], result["rows"]
    c = meta["ceilings"]
    lines = [f"# GPU benchmark, {meta['date']}, {meta['device']} ({meta['sms']} SMs), "
             f"torch {meta['torch']}", "",
             f"Ceilings measured in this run: device copy {c['copy_GBps']:.0f} GB/s (read + "
             f"write), cuBLAS 8192^3 matrix product {c['f16_mm_TFLOPs']:.0f} TFLOP/s f16, "
             f"{c['f32_mm_TFLOPs']:.0f} TFLOP/s f32.", "",
             "Times: median ms of whole synchronized calls. ours = moe-run --benchmark "
             "(x copied in, kernels, y copied out); torch = transformers-loop eager on device "
             "tensors. ratio = torch / ours (> 1: ours faster). % BW = minimum bytes / time / "
             "copy bandwidth; TFLOP/s = useful FLOPs / time.", "",
             "ours device ms = the device time of the call (moe_model_last_device_ms: "
             "events around the kernels, copies of x and y excluded); % BW and TFLOP/s "
             "use it when present.", "",
             "ratio = torch ms / ours ms (whole calls); device ratio = torch ms / ours device "
             "ms (torch's time includes its launch overhead, ours device time does not "
             "include x and y crossing the bus).", ""]
    dio = meta.get("device_io")
    if dio:
        lines += ["ours device-I/O ms = moe-run --benchmark --device-io: whole synchronized "
                  "calls with x and y in device memory, as torch's (x copied in once, y left "
                  "on the device); device-I/O ratio = torch ms / ours device-I/O ms.", ""]
    head = ("| model | T | ours ms | ours device ms | torch ms | ratio | device ratio | "
            "ours % BW | ours TFLOP/s | rel L2 ours / torch |")
    rule = "|---|---|---|---|---|---|---|---|---|---|"
    if dio:
        head += " ours device-I/O ms | device-I/O ratio |"
        rule += "---|---|"
    lines += [head, rule]
    for r in rows:
        om = r.get("ours", {}).get("median_ms")
        tm = r.get("torch", {}).get("median_ms")
        ratio = f"{tm / om:.2f}" if om and tm else "-"
        dm = r.get("ours_device", {}).get("median_ms")
        km = dm or om
        bw = f"{100 * r['min_bytes'] / (km * 1e-3) / 1e9 / c['copy_GBps']:.1f}" if km else "-"
        tf = f"{r['flops'] / (km * 1e-3) / 1e12:.2f}" if km else "-"
        ours = f"{om:.3f}" if om else ("error: " + " ".join(r.get("ours_error", ["mismatch"])))
        tor = f"{tm:.3f}" if tm else "mismatch"
        rel = f"{r.get('ours_rel_l2', float('nan')):.1e} / {r['torch_rel_l2']:.1e}"
        dev = f"{dm:.3f}" if dm else "-"
        dratio = f"{tm / dm:.2f}" if dm and tm else "-"
        line = (f"| {r['model']} | {r['T']} | {ours} | {dev} | {tor} | {ratio} | {dratio} | "
                f"{bw} | {tf} | {rel} |")
        if dio:
            im = r.get("ours_device_io", {}).get("median_ms")
            if im:
                line += f" {im:.3f} | " + (f"{tm / im:.2f}" if tm else "-") + " |"
            elif "ours_device_io_error" in r:
                line += " error: " + " ".join(r["ours_device_io_error"]) + " | - |"
            else:
                line += " - | - |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage")
    s.add_argument("dir")
    r = sub.add_parser("run")
    r.add_argument("--stage", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--work", default="/tmp/moe-gpu-bench")
    r.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    r.add_argument("--models", default="")
    r.add_argument("--profile", default="",
                   help="MODEL@T,... or all: per-kernel times (MOE_CUDA_PROFILE)")
    r.add_argument("--ncu", default="", help="MODEL@T,...: per-kernel times with ncu")
    r.add_argument("--ncu-timeout", type=float, default=60.0)
    r.add_argument("--ncu-args",
                   default="--metrics gpu__time_duration.sum --print-summary per-kernel",
                   help="ncu's options (e.g. --section SpeedOfLight --section WarpStateStats)")
    r.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    args = ap.parse_args()
    global DEV
    DEV = getattr(args, "device", "cuda")
    stage(args) if args.cmd == "stage" else run(args)


if __name__ == "__main__":
    main()
