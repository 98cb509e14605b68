#!/usr/bin/env bash
# A Mixtral-style decoder written in PyTorch, exported with torch.onnx.export,
# compiled with moe-compile and run with moe-run; its logits are checked
# against PyTorch's float64 output of the same model. See README.md.
#   examples/mixtral-decoder/run.sh [--bin-dir DIR] [--out DIR]
#                                   [--seed S] [--batch B] [--seq S]
# Without --bin-dir it sets up and builds the repository first
# (scripts/setup.sh, scripts/build.sh: both do nothing when up to date) and
# uses build/bin.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=""
out=$root/build/examples/mixtral-decoder
export_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --seed|--batch|--seq) export_args+=("$1" "$2"); shift 2 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  "$root/scripts/setup.sh"
  "$root/scripts/build.sh" "$root/build"
  bin=$root/build/bin
fi
bin=$(cd "$bin" && pwd)
for tool in moe-translate moe-opt moe-compile moe-run; do
  if [ ! -x "$bin/$tool" ]; then
    echo "run.sh: $bin/$tool not found (build with scripts/build.sh)" >&2
    exit 1
  fi
done
mkdir -p "$out"
cd "$out"
echo "run.sh: working in $(pwd)"
rm -f model.onnx model.mlir model.so model.weights model.h y.npy

echo "== exporting: torch.onnx.export -> model.onnx"
# The exporter warns about its handling of the index ops; the check below is
# what tells whether the exported graph is right.
PYTHONWARNINGS=ignore /usr/bin/python3 "$here/export.py" . "${export_args[@]}"

echo "== importing: moe-translate --import-onnx --remarks model.onnx"
"$bin/moe-translate" --import-onnx --remarks model.onnx -o model.mlir 2>&1
layers=$(grep -c " = moe.layer " model.mlir || true)
loops=$(grep -c "scf.for" model.mlir || true)
echo "model.mlir: $layers moe.layer ops, $loops scf.for loops"
if [ "$layers" != 2 ]; then
  echo "run.sh: expected both MoE blocks raised to moe.layer" >&2
  exit 1
fi

echo "== the moe ops after moe-expand and moe-fuse-gating (what moe-compile runs first)"
"$bin/moe-opt" --moe-expand --moe-fuse-gating model.mlir |
  grep -oE "= moe\.[a-z_]+" | sort | uniq -c

echo "== compiling: moe-compile model.onnx -o model.so"
"$bin/moe-compile" model.onnx -o model.so
"$bin/moe-run" model.so --print-signature | grep -v "^weight"

echo "== running: moe-run model.so --input=@x.npy --input=@pos.npy --output=@y.npy"
"$bin/moe-run" model.so --input=@x.npy --input=@pos.npy --output=@y.npy
/usr/bin/python3 "$here/check.py" .

echo "== timing: moe-run --benchmark=20"
"$bin/moe-run" model.so --input=@x.npy --input=@pos.npy --benchmark=20
