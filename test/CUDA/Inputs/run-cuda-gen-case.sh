#!/usr/bin/env bash
# Like run-cuda-case.sh, for the generators of test/Integration/CPU/Inputs
# (routing_ops.py, explicit_ops.py, quantized_experts.py): generates one case,
# compiles it for the GPU, runs it with moe-run and checks it against the
# generator's float64 reference.
#   run-cuda-gen-case.sh GENERATOR DIR ARCH CASE [generator options...]
set -euo pipefail
gen=$1 dir=$2 arch=$3; shift 3
rm -rf "$dir"
/usr/bin/python3 "$gen" gen "$dir" "$@" > /dev/null
moe-compile --target=cuda --gpu-arch="$arch" "$dir/model.mlir" -o "$dir/model.so"
# shellcheck disable=SC2046
moe-run "$dir/model.so" $(cat "$dir/inputs.args") --output=@"$dir/out.npy"
/usr/bin/python3 "$gen" check "$dir"
