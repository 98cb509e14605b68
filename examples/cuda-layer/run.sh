#!/usr/bin/env bash
# The Mixtral-style layer of examples/mixtral-layer compiled for an NVIDIA GPU:
# PTX checked by ptxas, a --target=cuda library, and, where a CUDA driver and
# GPU are present, a run checked against float64 and timed (host and device
# time). Without a GPU the library still loads and says why it cannot run.
#   examples/cuda-layer/run.sh [--bin-dir DIR] [--out DIR] [--gpu-arch sm_80|sm_90]
#                              [generate.py options, e.g. --tokens 64]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/build/bin out=$root/build/example-cuda arch=sm_90
while [[ $# -gt 0 ]]; do
  case $1 in
    --bin-dir) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --gpu-arch) arch=$2; shift 2 ;;
    *) break ;;
  esac
done
py=/usr/bin/python3

echo "== 1. generate the layer (f32, weights as constants)"
$py "$root/examples/mixtral-layer/generate.py" "$out" "$@"

echo "== 2. the kernels as PTX for $arch"
"$bin/moe-compile" --target=cuda --gpu-arch="$arch" --emit=ptx "$out/model.mlir" -o "$out/model.ptx"
grep -c '^.visible .entry' "$out/model.ptx" | sed 's/^/kernels: /'
ptxas=${CUDA_HOME:-/usr/local/cuda}/bin/ptxas
if [[ -x $ptxas ]]; then
  "$ptxas" -arch="$arch" "$out/model.ptx" -o "$out/model.cubin"
  echo "ptxas -arch=$arch: OK"
else
  echo "ptxas not found ($ptxas): PTX not assembled"
fi

echo "== 3. the library: moe-compile --target=cuda --gpu-arch=$arch"
"$bin/moe-compile" --target=cuda --gpu-arch="$arch" "$out/model.mlir" -o "$out/model.so"
"$bin/moe-run" "$out/model.so" --print-signature

echo "== 4. run on the GPU"
rm -f "$out/y.npy"
if "$bin/moe-run" "$out/model.so" --input=@"$out/x.npy" --output=@"$out/y.npy" 2> "$out/run.err"; then
  $py "$root/examples/mixtral-layer/check.py" "$out/y.npy" "$out/expected.npy"
  "$bin/moe-run" "$out/model.so" --input=@"$out/x.npy" --benchmark=50
  echo "cuda-layer example: OK (ran on the GPU)"
else
  cat "$out/run.err"
  [[ -e $out/y.npy ]] && { echo "cuda-layer example: an output was written after an error"; exit 1; }
  grep -q "CUDA" "$out/run.err" || { echo "cuda-layer example: unexpected error"; exit 1; }
  echo "cuda-layer example: OK (compiled; no usable GPU here, so nothing ran)"
fi
