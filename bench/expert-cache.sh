#!/usr/bin/env bash
# The expert-cache benchmark (docs/ExpertCache.md): an 8-layer model of
# S2-like layers at expert budgets of 25%, 50% and 100%, T in {1, 16}.
#   bench/expert-cache.sh [--quick] [bench/expert_cache.py options...]
# --quick: 2 small layers, for a smoke run. Needs the build (scripts/build.sh)
# and about 16 GB of free disk under bench/work for the full model.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
args=()
if [ "${1:-}" = --quick ]; then
  shift
  args=(--layers 2 --hidden 256 --ffn 128 --steps 4 --work "$root/bench/work/expert-cache-quick"
        --out "$root/bench/work/expert-cache-quick/result")
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
exec /usr/bin/python3 "$root/bench/expert_cache.py" "${args[@]}" "$@"
