#!/usr/bin/env node
// Runs an ONNX model under ONNX Runtime (npm onnxruntime-node, CPU EP, as
// installed in bench/node_modules by scripts/setup.sh) on .npy inputs and
// writes each output as OUT_DIR/ort<i>.npy (float32), for the tests that
// compare moe-mlir with ONNX Runtime.
//   node test/lib/ort_run.js MODEL.onnx OUT_DIR IN0.npy [IN1.npy ...]
'use strict';
const fs = require('fs');
const path = require('path');

let ort;
try {
  ort = require('onnxruntime-node');
} catch (e) {
  console.error('ort_run: onnxruntime-node is not installed (run scripts/setup.sh, which ' +
                'runs npm ci in bench/): ' + e.message);
  process.exit(2);
}

const {readNpy, writeNpyF32} = require(path.join(__dirname, '..', '..', 'bench', 'npy.js'));

async function main() {
  const [model, outDir, ...inputs] = process.argv.slice(2);
  if (!model || !outDir || inputs.length === 0) {
    console.error('usage: ort_run.js MODEL.onnx OUT_DIR IN0.npy [IN1.npy ...]');
    process.exit(2);
  }
  const session = await ort.InferenceSession.create(model,
      {intraOpNumThreads: 1, graphOptimizationLevel: 'all'});
  if (inputs.length !== session.inputNames.length) {
    console.error(`ort_run: the model has ${session.inputNames.length} inputs, got ${inputs.length}`);
    process.exit(2);
  }
  const feeds = {};
  session.inputNames.forEach((name, i) => {
    const a = readNpy(inputs[i]);
    feeds[name] = new ort.Tensor(a.type, a.data, a.shape);
  });
  const results = await session.run(feeds);
  session.outputNames.forEach((name, i) => {
    const t = results[name];
    const data = t.type === 'float32' ? t.data : Float32Array.from(t.data, Number);
    writeNpyF32(path.join(outDir, `ort${i}.npy`), data, t.dims);
    console.log(`ort_run: ${name} ${t.type} [${t.dims.join(', ')}] -> ort${i}.npy`);
  });
}

main().catch((e) => { console.error('ort_run: ' + e.message); process.exit(1); });
