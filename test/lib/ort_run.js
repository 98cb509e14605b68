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

const DTYPES = {'<f4': ['float32', Float32Array], '<f8': ['float64', Float64Array],
                '<i8': ['int64', BigInt64Array], '<i4': ['int32', Int32Array]};

function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',')
      .map((s) => s.trim()).filter((s) => s.length).map(Number);
  const kind = DTYPES[descr];
  if (!kind) throw new Error(`${file}: unsupported dtype ${descr}`);
  const [type, Ctor] = kind;
  const n = shape.reduce((a, b) => a * b, 1);
  const off = hstart + hlen;
  const ab = buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + n * Ctor.BYTES_PER_ELEMENT);
  return new ort.Tensor(type, new Ctor(ab), shape);
}

function writeNpyF32(file, data, shape) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const pre = Buffer.alloc(10);
  pre.write('\x93NUMPY', 0, 'latin1');
  pre[6] = 1; pre[7] = 0;
  pre.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([pre, Buffer.from(header, 'latin1'),
    Buffer.from(data.buffer, data.byteOffset, data.byteLength)]));
}

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
  session.inputNames.forEach((name, i) => { feeds[name] = readNpy(inputs[i]); });
  const results = await session.run(feeds);
  session.outputNames.forEach((name, i) => {
    const t = results[name];
    const data = t.type === 'float32' ? t.data : Float32Array.from(t.data, Number);
    writeNpyF32(path.join(outDir, `ort${i}.npy`), data, t.dims);
    console.log(`ort_run: ${name} ${t.type} [${t.dims.join(', ')}] -> ort${i}.npy`);
  });
}

main().catch((e) => { console.error('ort_run: ' + e.message); process.exit(1); });
