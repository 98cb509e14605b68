#!/usr/bin/env bash
# CPU benchmark of the MoE layer against its peers. See bench/README.md.
#   bench/run.sh [--quick] [--shapes S1,S2,S3] [--tokens 1,16,128,1024] [--threads 2] ...
# (bench/setup.sh once first.)
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
# Thread counts must be fixed before NumPy/OpenBLAS/torch load; the compiled layer gets
# OMP_NUM_THREADS too. OPENBLAS_CORETYPE is left as the environment has it (and recorded).
export OMP_NUM_THREADS="$threads" OPENBLAS_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads"
exec /usr/bin/python3 "$here/moe_bench.py" "$@"
