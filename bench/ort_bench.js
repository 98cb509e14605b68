#!/usr/bin/env node
// Runs one ONNX model under onnxruntime-node (CPU EP) for several token counts:
// for each case, one run whose output is checked against a float64 reference (relative L2);
// only if it matches, warm-up runs and timed runs (each session.run timed on its own).
//
//   node ort_bench.js SPEC.json
// SPEC: {"model": path, "threads": 2, "min_time_s": 1.0, "tol": 1e-4,
//        "cases": [{"T": 16, "x": "x.npy", "ref": "ref.npy", "out": "y.npy" (optional)}]}
// Prints one JSON object per line: {"T", "rel_l2", "ok", "median_ms", "min_ms", "max_ms",
// "reps"} or {"T", "error"}; or a single {"session_error"} if the model does not load.
'use strict';
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const {readNpy, writeNpyF32} = require('./npy.js');

function relL2(y, ref) {
  let num = 0; let den = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = y[i] - ref[i];
    num += d * d; den += ref[i] * ref[i];
  }
  return Math.sqrt(num) / Math.sqrt(den);
}

function median(a) {
  const s = [...a].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : 0.5 * (s[m - 1] + s[m]);
}

async function main() {
  const spec = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
  const threads = spec.threads || 2;
  const minTime = spec.min_time_s || 1.0;
  const tol = spec.tol || 1e-4;
  let session;
  try {
    session = await ort.InferenceSession.create(spec.model, {
      executionProviders: ['cpu'],
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
    });
  } catch (e) {
    console.log(JSON.stringify({session_error: String(e.message || e).split('\n')[0]}));
    return;
  }
  const inName = session.inputNames[0];
  const outName = session.outputNames[0];
  for (const c of spec.cases) {
    try {
      const x = readNpy(c.x);
      const ref = readNpy(c.ref);
      const feeds = {[inName]: new ort.Tensor('float32', x.data, x.shape)};
      const y = (await session.run(feeds))[outName];
      // c.xs: a stack [N, ...x.shape] whose rows the timed runs take in turn.
      let rotation = [feeds];
      if (c.xs) {
        const xs = readNpy(c.xs);
        const n = xs.shape[0], size = x.data.length;
        rotation = [];
        for (let i = 0; i < n; i++)
          rotation.push({[inName]: new ort.Tensor('float32', xs.data.subarray(i * size, (i + 1) * size), x.shape)});
      }
      let turn = 0;
      const run = async () => (await session.run(rotation[turn++ % rotation.length]))[outName];
      const rel = relL2(y.data, ref.data);
      if (c.out) writeNpyF32(c.out, y.data, y.dims);
      const ok = Number.isFinite(rel) && rel <= tol;
      if (!ok) {
        console.log(JSON.stringify({T: c.T, rel_l2: rel, ok: false}));
        continue;
      }
      // Warm-up: at least 3 runs and 0.2 s.
      const warm = [];
      const w0 = process.hrtime.bigint();
      while (warm.length < 3 || (warm.length < 50 && Number(process.hrtime.bigint() - w0) < 2e8)) {
        const t0 = process.hrtime.bigint();
        await run();
        warm.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      const est = median(warm);
      const reps = Math.max(5, Math.min(1000, Math.ceil(minTime * 1000 / est)));
      const times = [];
      for (let i = 0; i < reps; i++) {
        const t0 = process.hrtime.bigint();
        await run();
        times.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      console.log(JSON.stringify({T: c.T, rel_l2: rel, ok: true, median_ms: median(times),
        min_ms: Math.min(...times), max_ms: Math.max(...times), reps}));
    } catch (e) {
      console.log(JSON.stringify({T: c.T, error: String(e.message || e).split('\n')[0]}));
    }
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
