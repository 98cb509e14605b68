#!/usr/bin/python3
"""CPU benchmark of quantized MoE layers: one com.microsoft.QMoE ONNX model per shape and
bit width, compiled by moe-compile (imported to moe.quantized_experts) and run by moe-run,
against the same file run by ONNX Runtime's QMoE kernel; side by side in one run, every
output checked against a float64 reference that dequantizes the same codes.

    bench/qmoe_run.sh [--shapes S1,S2] [--tokens 1,16] [--bits 8,4] [--block-size 0]
                      [--zero-points] [--threads 2] [--min-time 1.0] [--wait-idle S]
                      [--out-dir DIR]

See bench/README.md ("Quantized experts") for the method.
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import moe_bench as B  # noqa: E402

DATA_VERSION = 1


def quantize(w, bits, block_size, zero_points=False):
    """w [E, N, K] float32 -> (uint8 codes packed [E, N, K * bits / 8], float32 scales
    [E, N] (block_size 0: per row) or [E, N, K / block_size], float64 dequantized [E, N, K],
    uint8 zero points or None). Symmetric: zero point 2^(bits - 1) (ONNX Runtime's QMoE
    default), scale = max|w| / (zp-1). With `zero_points`, asymmetric: each row's or block's
    [min, max] onto [0, 2^bits - 1] with an integer zero point, in ONNX Runtime's layout (at
    4 bits two per byte, low nibble first, along the rows for row-wise scales, along the
    blocks otherwise)."""
    E, N, K = w.shape
    top = (1 << bits) - 1
    blocks = K // block_size if block_size else 1
    wb = w.astype(np.float64).reshape(E, N, blocks, K // blocks)
    if zero_points:
        lo, hi = wb.min(axis=-1), wb.max(axis=-1)
        scales = ((hi - lo) / top).astype(np.float32)
        zp = np.clip(np.rint(-lo / scales.astype(np.float64)), 0, top)
    else:
        zp = np.full(wb.shape[:-1], 1 << (bits - 1), np.float64)
        scales = (np.abs(wb).max(axis=-1) / ((1 << (bits - 1)) - 1)).astype(np.float32)
    s64 = scales.astype(np.float64)[..., None]
    codes = np.clip(np.rint(wb / s64) + zp[..., None], 0, top)
    deq = (s64 * (codes - zp[..., None])).reshape(E, N, K)
    codes = codes.astype(np.uint8).reshape(E, N, K)
    if bits == 4:
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
    z = None
    if zero_points:
        z = zp.astype(np.uint8) if block_size else zp[..., 0].astype(np.uint8)
        if bits == 4:
            if z.shape[-1] % 2:
                z = np.concatenate([z, np.zeros(z.shape[:-1] + (1,), np.uint8)], axis=-1)
            z = z[..., 0::2] | (z[..., 1::2] << 4)
        z = np.ascontiguousarray(z)
    return (np.ascontiguousarray(codes), (scales if block_size else scales[..., 0]), deq, z)


def build_case(name, cfg, bits, block_size, tokens, workdir, zero_points=False):
    """Writes DIR/model.onnx (MatMul router + QMoE), x_T*.npy and ref_T*.npy."""
    H, F, E, k = cfg["H"], cfg["F"], cfg["E"], cfg["k"]
    d = workdir / f"{name}-int{bits}-b{block_size}{'-zp' if zero_points else ''}"
    d.mkdir(parents=True, exist_ok=True)
    stamp = d / "stamp.json"
    recipe = dict(v=DATA_VERSION, bv=B.DATA_VERSION, seed=B.SEED, tokens=max(tokens))
    w, x = B.make_weights(name, cfg, max(tokens))
    if not (stamp.exists() and json.loads(stamp.read_text()) == recipe):
        # fc1 [E, 2F, H]: row 2f = gate column f, row 2f + 1 = up column f; fc2 [E, H, F].
        fc1 = np.empty((E, 2 * F, H), dtype=np.float32)
        fc1[:, 0::2] = np.transpose(w["gate"], (0, 2, 1))
        fc1[:, 1::2] = np.transpose(w["up"], (0, 2, 1))
        fc2 = np.ascontiguousarray(np.transpose(w["down"], (0, 2, 1)))
        q1, s1, d1, z1 = quantize(fc1, bits, block_size, zero_points)
        q2, s2, d2, z2 = quantize(fc2, bits, block_size, zero_points)
        deq = dict(router=w["router"], gate=np.transpose(d1[:, 0::2], (0, 2, 1)),
                   up=np.transpose(d1[:, 1::2], (0, 2, 1)), down=np.transpose(d2, (0, 2, 1)))
        attrs = dict(k=k, activation_type="swiglu", swiglu_fusion=1,
                     normalize_routing_weights=1, activation_alpha=1.0, activation_beta=0.0,
                     expert_weight_bits=bits)
        if block_size:
            attrs["block_size"] = block_size
        ins = ["x", "logits", "fc1", "fc1_scales", "", "fc2", "fc2_scales"]
        arrays = [("router", w["router"]), ("fc1", q1), ("fc1_scales", s1), ("fc2", q2),
                  ("fc2_scales", s2)]
        if zero_points:
            ins += ["", "", "", "", "fc1_zero_points", "fc2_zero_points"]
            arrays += [("fc1_zero_points", z1), ("fc2_zero_points", z2)]
        nodes = [helper.make_node("MatMul", ["x", "router"], ["logits"], name="router"),
                 helper.make_node("QMoE", ins, ["y"], name="qmoe", domain="com.microsoft",
                                  **attrs)]
        inits = [numpy_helper.from_array(a, n) for n, a in arrays]
        graph = helper.make_graph(
            nodes, "qmoe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", H])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["T", H])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                        helper.make_opsetid("com.microsoft", 1)])
        onnx.save(model, d / "model.onnx")
        for T in tokens:
            np.save(d / f"x_T{T}.npy", x[:T])
            np.save(d / f"ref_T{T}.npy", B.reference(deq, x[:T], k)[0])
        stamp.write_text(json.dumps(recipe))
    refs = {T: np.load(d / f"ref_T{T}.npy") for T in tokens}
    weight_bytes = os.path.getsize(d / "model.onnx")
    return dict(dir=d, refs=refs, weight_bytes=weight_bytes)


def run_ours(prep, tokens, threads, min_time, bin_dir):
    d = prep["dir"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    so = d / "moe.so"
    t0 = time.perf_counter()
    p = subprocess.run([str(bin_dir / "moe-compile"), str(d / "model.onnx"), "-o", str(so)],
                       capture_output=True, text=True, env=env)
    compile_s = time.perf_counter() - t0
    if p.returncode != 0:
        err = B.first_error_line(p.stderr + p.stdout)
        return {T: dict(status="compile_failed", error=err) for T in tokens}, compile_s
    B.log(f"  moe-compile: {compile_s:.1f} s")
    res = {}
    run = str(bin_dir / "moe-run")
    for T in tokens:
        x_in = f"--input=@{d / f'x_T{T}.npy'}"
        y_file = d / f"y_ours_T{T}.npy"
        p = subprocess.run([run, str(so), x_in, f"--output=@{y_file}"], capture_output=True,
                           text=True, env=env)
        if p.returncode != 0:
            res[T] = dict(status="error", error=B.first_error_line(p.stderr + p.stdout))
            continue
        rel = B.rel_l2(np.load(y_file), prep["refs"][T])
        if not rel <= B.TOL:
            res[T] = dict(status="mismatch", rel_l2=rel)
            B.log(f"  ours T={T}: MISMATCH rel L2 {rel:.3e}")
            continue
        m, reps, p = B.time_moe_run([run, str(so), x_in], 1.0, min_time, env)
        if not m:
            res[T] = dict(status="error", error=B.first_error_line(p.stderr + p.stdout))
            continue
        res[T] = dict(status="ok", rel_l2=rel, median_ms=float(m.group(1)),
                      min_ms=float(m.group(2)), max_ms=float(m.group(3)), reps=reps)
        B.log(f"  ours T={T}: {res[T]['median_ms']:.3f} ms (rel {rel:.1e}, {reps} runs)")
    return res, compile_s


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="S1,S2")
    ap.add_argument("--tokens", default="1,16")
    ap.add_argument("--bits", default="8,4")
    ap.add_argument("--block-size", type=int, default=0,
                    help="scales per block of this many reduction values (0: one per row)")
    ap.add_argument("--zero-points", action="store_true",
                    help="asymmetric quantization with explicit zero points (inputs 11-12)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=1.0)
    ap.add_argument("--bin-dir", default=str(B.REPO / "build" / "bin"))
    ap.add_argument("--work-dir", default=str(B.HERE / "work" / "qmoe"))
    ap.add_argument("--wait-idle", type=float, default=0.0)
    ap.add_argument("--out-dir", default=str(B.HERE / "results"))
    a = ap.parse_args()
    shapes = a.shapes.split(",")
    tokens = [int(t) for t in a.tokens.split(",")]
    bits_list = [int(b) for b in a.bits.split(",")]
    work, bin_dir = Path(a.work_dir), Path(a.bin_dir)
    meta = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                machine=B.machine_info(), threads=a.threads, block_size=a.block_size,
                zero_points=a.zero_points, min_time_s=a.min_time)
    rows = []
    for name in shapes:
        cfg = B.SHAPES[name]
        for bits in bits_list:
            B.log(f"{name} int{bits} (block size {a.block_size or 'row'})")
            prep = build_case(name, cfg, bits, a.block_size, tokens, work, a.zero_points)
            load = B.check_load(f"{name} int{bits}", a.wait_idle)
            ours, compile_s = run_ours(prep, tokens, a.threads, a.min_time, bin_dir)
            ort = B.run_ort(prep["dir"] / "model.onnx", prep, tokens, a.threads, a.min_time,
                            f"ort_qmoe{bits}")
            for T in tokens:
                o, r = ours[T], ort[T]
                ratio = (r["median_ms"] / o["median_ms"]
                         if o["status"] == "ok" and r["status"] == "ok" else None)
                rows.append(dict(shape=name, bits=bits, T=T, ours=o, ort_qmoe=r, ratio=ratio,
                                 compile_s=compile_s, background_load=load))
    cpu = re.sub(r"[^A-Za-z0-9]+", "-", meta["machine"]["cpu"]).strip("-")
    out = Path(a.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scales = (f"b{a.block_size}" if a.block_size else "rowwise") + ("-zp" if a.zero_points
                                                                     else "")
    stem = out / f"{datetime.date.today().isoformat()}-qmoe-{scales}-{cpu}"
    stem.with_suffix(".json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1,
                                                    default=str))
    L = ["# Quantized MoE layer (com.microsoft.QMoE): moe-compile vs ONNX Runtime", "",
         f"{meta['date']}, {meta['machine']['cpu']}, {a.threads} threads, "
         f"onnxruntime-node {meta['machine'].get('onnxruntime_node')}, scales "
         f"{'per row' if not a.block_size else f'per block of {a.block_size}'}"
         f"{', explicit zero points (asymmetric)' if a.zero_points else ''}, "
         f"git {str(meta['machine'].get('git_commit'))[:10]}. Median ms of one layer call; "
         f"ratio = ORT ms / ours ms (> 1: moe-mlir faster). Every output matched a float64 "
         f"reference on the dequantized weights (rel. L2 <= {B.TOL:g}) before timing.", "",
         "| shape | bits | T | moe-mlir ms | ORT QMoE ms | ratio ORT/ours | background load |",
         "|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['shape']} | int{r['bits']} | {r['T']} | {B.cell(r['ours'])} | "
                 f"{B.cell(r['ort_qmoe'])} | "
                 f"{'%.2fx' % r['ratio'] if r['ratio'] else '-'} | "
                 f"{100 * r['background_load']:.0f}% |")
    stem.with_suffix(".md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    B.log(f"wrote {stem}.md and .json")
    bad = any(r[c]["status"] == "mismatch" for r in rows for c in ("ours", "ort_qmoe"))
    sys.exit(2 if bad else 0)


if __name__ == "__main__":
    main()
