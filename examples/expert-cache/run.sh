#!/usr/bin/env bash
# A model larger than its expert budget: 6 Mixtral-style MoE layers
# (E = 32 experts, k = 4) compiled so that only a quarter of the expert bytes
# stay in RAM; the rest are read from the weights file (O_DIRECT) into an
# expert cache, with pre-gating prefetch. It profiles the routing first, runs
# the model in the three cache modes, prints the cache counters, and checks
# every output against the all-resident model and a float64 reference.
# See README.md.
#   examples/expert-cache/run.sh [--bin-dir DIR] [--out DIR] [--budget P%]
#                                [--hidden H] [--ffn F]
# H and F default to 256 and 512 (0.3 GB of expert weights; the run writes
# about 1.5 GB under --out).
# Without --bin-dir it sets up and builds the repository first.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=""
out=$root/build/examples/expert-cache
budget=25%
hidden=256
ffn=512
while [ $# -gt 0 ]; do
  case "$1" in
    --bin-dir) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --hidden) hidden=$2; shift 2 ;;
    --ffn) ffn=$2; shift 2 ;;
    *) echo "run.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  "$root/scripts/setup.sh"
  "$root/scripts/build.sh" "$root/build"
  bin=$root/build/bin
fi
bin=$(cd "$bin" && pwd)
stack=$root/test/lib/moe_stack.py
py=/usr/bin/python3
rm -rf "$out" && mkdir -p "$out/sample"

echo "== a 6-layer model (H=$hidden, F=$ffn, E=32, k=4) with fresh random weights"
$py "$stack" gen "$out" --layers 6 --hidden "$hidden" --ffn "$ffn" --experts 32 --k 4 \
  --tokens 8 --skew 2
# A second draw of the same model's distribution of inputs, for the profile.
$py - "$out" "$hidden" <<'PY'
import sys, numpy as np
rng = np.random.default_rng()
np.save(sys.argv[1] + "/sample/x.npy",
        rng.standard_normal((64, int(sys.argv[2]))).astype(np.float32))
PY

echo "== 1. all experts resident"
"$bin/moe-compile" "$out/model.mlir" -o "$out/full.so"
"$bin/moe-run" "$out/full.so" --input=@"$out/in0.npy" --output=@"$out/full.npy"

echo "== 2. profile the routing on sample inputs"
"$bin/moe-compile" "$out/model.mlir" --instrument-routing -o "$out/profile.so"
"$bin/moe-run" "$out/profile.so" --input=@"$out/sample/x.npy" --profile="$out/routing.json"
echo "wrote $out/routing.json"

echo "== 3. compile with --expert-budget=$budget (placement from the profile, pre-gating prefetch)"
"$bin/moe-compile" "$out/model.mlir" --expert-budget="$budget" \
  --placement-profile="$out/routing.json" -o "$out/cached.so"
"$bin/moe-run" "$out/cached.so" --print-signature | grep '^cache'
ls -l "$out/full.weights" "$out/cached.weights" | awk '{print $5, $9}'

echo "== 4. run it: on demand, cache only, cache + prefetch (counters on stderr)"
for mode in ondemand lru prefetch; do
  echo "-- --expert-cache=$mode"
  "$bin/moe-run" "$out/cached.so" --input=@"$out/in0.npy" \
    --output=@"$out/cached-$mode.npy" --expert-cache="$mode" --benchmark=5 2>&1
  $py "$stack" close "$out/full.npy" "$out/cached-$mode.npy" --tol 0
done
echo "== 5. all-resident result vs the float64 reference"
$py "$stack" close "$out/expected.npy" "$out/full.npy" --tol 1e-5
echo "== 6. a plan for 4 devices (expert parallelism) from the same profile"
"$bin/moe-compile" "$out/model.mlir" --emit=plan --devices=4 \
  --placement-profile="$out/routing.json" -o "$out/plan4.json"
head -c 160 "$out/plan4.json"; echo " ..."
echo "expert-cache example: OK"
