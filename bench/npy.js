// NumPy .npy files for the node scripts that drive ONNX Runtime
// (bench/ort_bench.js, test/lib/ort_run.js): C-order arrays of f32, f64, i64
// and i32; float32 files written.
'use strict';
const fs = require('fs');

// descr -> [ONNX Runtime tensor type, typed array]
const DTYPES = {'<f4': ['float32', Float32Array], '<f8': ['float64', Float64Array],
                '<i8': ['int64', BigInt64Array], '<i4': ['int32', Int32Array]};

/// {data (a typed array over a fresh, aligned buffer), shape, type (ORT's)}.
function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const hlen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const hstart = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', hstart, hstart + hlen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: Fortran order`);
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',')
      .map((s) => s.trim()).filter((s) => s.length).map(Number);
  const kind = DTYPES[descr];
  if (!kind) throw new Error(`${file}: unsupported dtype ${descr}`);
  const [type, Ctor] = kind;
  const off = hstart + hlen;
  const n = shape.reduce((a, b) => a * b, 1);
  const ab = buf.buffer.slice(buf.byteOffset + off, buf.byteOffset + off + n * Ctor.BYTES_PER_ELEMENT);
  return {data: new Ctor(ab), shape, type};
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

module.exports = {readNpy, writeNpyF32};
