#!/usr/bin/env bash
# Quantized MoE layers (com.microsoft.QMoE, int8/int4): moe-compile vs ONNX Runtime.
#   bench/qmoe_run.sh [--shapes S1,S2] [--tokens 1,16] [--bits 8,4] [--block-size 0] ...
# See bench/README.md ("Quantized experts"). bench/setup.sh once first.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/threads.sh
source "$here/threads.sh"
set_bench_threads "$@"
exec /usr/bin/python3 "$here/qmoe_bench.py" "$@"
