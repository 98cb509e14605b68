#!/usr/bin/env bash
# Quantized MoE layers (com.microsoft.QMoE, int8/int4): moe-compile vs ONNX Runtime.
#   bench/qmoe_run.sh [--shapes S1,S2] [--tokens 1,16] [--bits 8,4] [--block-size 0] ...
# See bench/README.md ("Quantized experts"). bench/setup.sh once first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
threads=2
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case "${args[i]}" in
    --threads) threads="${args[i+1]}" ;;
    --threads=*) threads="${args[i]#--threads=}" ;;
  esac
done
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
exec /usr/bin/python3 "$here/qmoe_bench.py" "$@"
