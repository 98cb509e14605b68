#!/usr/bin/env bash
# Generates one moe.layer case (test/lib/moe_case.py), compiles it with
# moe-compile, runs it with moe-run and checks it against the float64
# reference. Used by the lit tests in test/Integration.
#   run-case.sh DIR CONFIG [moe_case.py gen options...]
# MOE_CASE_COMPILE_FLAGS: extra moe-compile flags (split on spaces).
# MOE_CASE_CHECK_FLAGS: extra moe_case.py check flags (split on spaces).
set -euo pipefail
dir=$1; config=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
rm -rf "$dir" && mkdir -p "$dir"
/usr/bin/python3 "$here/moe_case.py" gen "$dir" "$config" "$@"
# shellcheck disable=SC2086
moe-compile "$dir/model.mlir" -o "$dir/model.so" ${MOE_CASE_COMPILE_FLAGS:-}
# shellcheck disable=SC2046
moe-run "$dir/model.so" $(cat "$dir/inputs.args") --output=@"$dir/out.npy"
# shellcheck disable=SC2086
/usr/bin/python3 "$here/moe_case.py" check "$dir" ${MOE_CASE_CHECK_FLAGS:-}
