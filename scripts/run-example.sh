#!/usr/bin/env bash
# The main job: set up, build, compile an example Mixtral-style MoE layer to a
# native CPU library, run it, check it against a float64 reference, and time it.
#   scripts/run-example.sh [generate.py options, e.g. --tokens 64 --hidden 512]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/build/example

"$root/scripts/setup.sh"
"$root/scripts/build.sh" "$root/build"

echo "== generating the model"
/usr/bin/python3 "$root/examples/mixtral-layer/generate.py" "$out" "$@"
echo "== compiling: moe-compile model.mlir -o model.so"
"$root/build/bin/moe-compile" "$out/model.mlir" -o "$out/model.so" -v
echo "== running: moe-run model.so --input=@x.npy --output=@y.npy"
rm -f "$out/y.npy"
"$root/build/bin/moe-run" "$out/model.so" --input=@"$out/x.npy" --output=@"$out/y.npy"
/usr/bin/python3 "$root/examples/mixtral-layer/check.py" "$out/y.npy" "$out/expected.npy"
echo "== timing: moe-run --benchmark=20"
"$root/build/bin/moe-run" "$out/model.so" --input=@"$out/x.npy" --benchmark=20
