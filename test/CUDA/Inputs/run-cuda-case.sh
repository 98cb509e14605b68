#!/usr/bin/env bash
# Like test/lib/run-case.sh, for --target=cuda: generates one moe.layer case
# (test/lib/moe_case.py), compiles it for the GPU, runs it with moe-run and
# checks it against the float64 reference.
#   run-cuda-case.sh DIR ARCH CONFIG [moe_case.py gen options...]
set -euo pipefail
dir=$1; arch=$2; config=$3; shift 3
lib=$(cd "$(dirname "$0")/../../lib" && pwd)
rm -rf "$dir" && mkdir -p "$dir"
/usr/bin/python3 "$lib/moe_case.py" gen "$dir" "$config" "$@"
moe-compile --target=cuda --gpu-arch="$arch" "$dir/model.mlir" -o "$dir/model.so"
# shellcheck disable=SC2046
moe-run "$dir/model.so" $(cat "$dir/inputs.args") --output=@"$dir/out.npy"
/usr/bin/python3 "$lib/moe_case.py" check "$dir" --tol 1e-4
