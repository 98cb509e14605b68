#!/usr/bin/env bash
# Fuzzes the ONNX importer with libFuzzer for SECONDS (default 600), starting
# from a seed corpus of valid models (gen.py, e2e.py and torch.onnx.export
# MoE blocks). New inputs go to fuzz-onnx/corpus, crashes and timeouts to
# fuzz-onnx/ (reproduce with `moe-onnx-fuzz FILE`).
#
# Usage: scripts/fuzz-onnx.sh [SECONDS] [BUILD_DIR]
set -euo pipefail

seconds=${1:-600}
root=$(cd "$(dirname "$0")/.." && pwd)
build=${2:-$root/build}
fuzzer=$build/bin/moe-onnx-fuzz
inputs=$root/test/Target/ONNX/Inputs
work=${FUZZ_ONNX_DIR:-$PWD/fuzz-onnx}

if [ ! -x "$fuzzer" ]; then
  echo "fuzz-onnx: $fuzzer not found; build it with: ninja -C $build moe-onnx-fuzz" >&2
  exit 1
fi
mkdir -p "$work/corpus" "$work/seeds"
/usr/bin/python3 "$inputs/fuzz_corpus.py" "$work/seeds"
for model in mixtral dense_shared switch; do
  if [ ! -f "$work/seeds/torch-$model.onnx" ]; then
    /usr/bin/python3 "$inputs/torch_models.py" gen "$model" "$work/torch-$model"
    cp "$work/torch-$model/model.onnx" "$work/seeds/torch-$model.onnx"
  fi
done
exec "$fuzzer" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=4096 \
  -artifact_prefix="$work/" "$work/corpus" "$work/seeds"
