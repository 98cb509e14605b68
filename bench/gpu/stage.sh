#!/usr/bin/env bash
# Prepares the GPU suite for a machine that has a GPU but no LLVM/MLIR: every
# model is compiled here (moe-compile --target=cuda), and DIR gets moe-run, the
# compiled numeric cases with their inputs and float64 references, and the
# benchmark models. bench/gpu/run.sh runs it on the GPU machine:
#
#   bench/gpu/stage.sh [DIR]          # here (default DIR: gpu-stage/)
#   bench/gpu/run.sh DIR RESULTS_DIR  # there, from the repository root
#
# The benchmark models are compiled with splat weights (so that nothing large
# is written or moved); bench/gpu/bench.py writes their weights files with
# seeded random values on the GPU machine. See docs/CUDA.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$repo/gpu-stage}
bin=${MOE_BIN_DIR:-$repo/build/bin}
py=/usr/bin/python3
for tool in moe-compile moe-run; do
  [[ -x $bin/$tool ]] || { echo "stage.sh: $bin/$tool is not built (scripts/build.sh)" >&2; exit 1; }
done
rm -rf "$dir" && mkdir -p "$dir/bin" "$dir/cases" "$dir/bench"
cp "$bin/moe-run" "$dir/bin/"
# The Python package's runtime half (no MLIR; ctypes over libmoe_runtime.so,
# so any Python 3 with numpy loads it), for bench/gpu/python_device.py.
pkg=$bin/../python_packages/moe_mlir
if [[ -f $pkg/libmoe_runtime.so ]]; then
  mkdir -p "$dir/python/moe_mlir"
  cp "$pkg"/__init__.py "$pkg"/_errors.py "$pkg"/_moe_runtime.py "$pkg"/libmoe_runtime.so \
    "$dir/python/moe_mlir/"
fi
# The device-memory API's check (test/runtime/Inputs/device_api.c), run by
# run.sh on every one-input case.
/usr/bin/clang-22 -O1 -I"$repo/runtime/include" "$repo/test/runtime/Inputs/device_api.c" \
  "$bin/../lib/libMoERuntime.a" -lstdc++ -ldl -lpthread -lm -o "$dir/bin/device_api"

# Numeric cases (test/lib/moe_case.py). The f32/f64 ones of test/CUDA/run.test
# and a few more for both chips (sm_80 PTX is JIT-compiled by the driver on
# newer GPUs: the two libraries of a case share its weights file); the rest for
# sm_90 only, so that the stage stays under the 64 MiB a device call carries.
both=(
  "mixtral --tokens 1" "mixtral --tokens 37" "mixtral --tokens 64 --static --weights-as-inputs"
  "mixtral --tokens 9 --dtype f64" "olmoe --tokens 33" "olmoe --tokens 700"
  "deepseek-moe --tokens 21" "deepseek-v3 --tokens 20" "gpt-oss --tokens 17"
  "switch-capacity --tokens 25" "capacity-k2 --tokens 30" "top-p --tokens 11"
  "qwen-geglu --tokens 13" "mixtral --tokens 0" "mixtral --tokens 513")
sm90=(
  "expert-choice --tokens 21" "expert-choice --tokens 1" "expert-choice-capacity --tokens 13"
  "expert-choice-all --tokens 6" "many-k --tokens 19" "capacity-fixed --tokens 9"
  # f16 (tensor-core expert GEMMs, the skinny ones at small T; moe_case.py
  # check uses its f16 tolerance).
  "mixtral --tokens 37 --dtype f16" "mixtral --tokens 513 --dtype f16"
  "mixtral --tokens 64 --static --weights-as-inputs --dtype f16" "mixtral --tokens 0 --dtype f16"
  "olmoe --tokens 700 --dtype f16" "deepseek-moe --tokens 21 --dtype f16"
  "deepseek-v3 --tokens 20 --dtype f16" "gpt-oss --tokens 17 --dtype f16"
  "switch-capacity --tokens 25 --dtype f16" "capacity-k2 --tokens 30 --dtype f16"
  "top-p --tokens 11 --dtype f16" "qwen-geglu --tokens 13 --dtype f16"
  "expert-choice --tokens 21 --dtype f16"
  # Wide enough that the skinny GEMMs split K over blocks.
  "mixtral-wide --tokens 1" "qwen-wide --tokens 3" "mixtral-wide --tokens 1 --dtype f16")
# The generators of test/Integration/CPU/Inputs: hash routing and token groups
# (routing_ops.py), MoE++ zero, copy and constant experts and region experts
# (matmul + tanh, padded, with a residual addition, convolution, attention:
# explicit_ops.py), int8, int4 and both in one model (quantized_experts.py).
generated=("hash-table --tokens 29" "hash-function --tokens 23" "groups-gate --tokens 45"
  "zero-computation --tokens 23" "zero-computation --tokens 300"
  "int8 --tokens 1" "int8 --tokens 21" "int4 --tokens 1" "int4 --tokens 16"
  "mixed --tokens 11" "int8 --tokens 600" "int8-zp --tokens 7" "int4-zp --tokens 16"
  "generic --tokens 40" "generic-padded --tokens 13" "generic-residual --tokens 300"
  "conv --tokens 9" "attention --tokens 11" "attention --tokens 200")
n=0
stage_case() { # "ARCH..." GENERATOR CASE ARGS...: one case, a library per chip
  local archs=$1 gen=$2 arch; shift 2
  n=$((n + 1))
  local d=$dir/cases/$(printf '%02d' $n)-$1-${3}
  $py "$repo/$gen" gen "$d" "$@" > /dev/null
  for arch in $archs; do
    "$bin/moe-compile" --target=cuda --gpu-arch=$arch "$d/model.mlir" -o "$d/model-$arch.so"
    rm -f "$d/model-$arch.h"
  done
  # The libraries share one weights file (the same constants).
  for arch in $archs; do
    [[ -f $d/model-$arch.weights ]] && mv "$d/model-$arch.weights" "$d/model.weights"
  done
  rm -f "$d/model.mlir" "$d/inputs.args"
  echo "$*" > "$d/what"
  [[ $gen == test/lib/moe_case.py ]] || echo "$gen" > "$d/checker"
}
# shellcheck disable=SC2086
for c in "${both[@]}"; do stage_case "sm_80 sm_90" test/lib/moe_case.py $c; done
# shellcheck disable=SC2086
for c in "${sm90[@]}"; do stage_case sm_90 test/lib/moe_case.py $c; done
for c in "${generated[@]}"; do
  gen=test/Integration/CPU/Inputs/routing_ops.py
  case $c in
    zero-computation* | generic* | conv* | attention*)
      gen=test/Integration/CPU/Inputs/explicit_ops.py ;;
    int8* | int4* | mixed*) gen=test/Integration/CPU/Inputs/quantized_experts.py ;;
  esac
  # shellcheck disable=SC2086
  stage_case sm_90 $gen $c
done
# Whole ONNX models exported here by torch.onnx.export (test/Target/ONNX/
# Inputs/torch_models.py, checked by it against PyTorch in float32 and
# float64): the tiny decoder LM (every op around the MoE layers as the naive
# kernels of the tensor compute), hash routing, MoMa's modality groups and
# transformers' GPT-OSS MLP (router bias, top-k softmax, clamped SwiGLU with
# biases), GPT-OSS's router in Mixtral's loop, GShard's top-1 einsum form with
# a capacity (static T; and a dynamic T: the traced, fixed capacity),
# transformers' Switch MLP (capacity, dropped tokens passed through),
# tanh-GELU FFN experts, MoE++'s zero-computation
# experts and gating residual, top-p routing, and transformers' loops over
# the experts hit (Mixtral 4.52+ and 5, GPT-OSS's CPU branch).
for m in decoder hash moma gptoss gptoss_router_loop capacity_einsum \
  capacity_einsum_dynamic switch_hf mixtral_gelu_tanh moe_plus_plus gating_residual top_p \
  mixtral_hit mixtral_v5 gptoss_cpu; do
  n=$((n + 1))
  d=$dir/cases/$(printf '%02d' $n)-onnx-$m
  $py "$repo/test/Target/ONNX/Inputs/torch_models.py" gen $m "$d" > /dev/null 2>&1
  "$bin/moe-compile" --target=cuda --gpu-arch=sm_90 "$d/model.onnx" -o "$d/model-sm_90.so"
  mv "$d/model-sm_90.weights" "$d/model.weights"
  rm -f "$d/model-sm_90.h" "$d/model.onnx"
  echo "onnx $m" > "$d/what"
  echo test/Target/ONNX/Inputs/torch_models.py > "$d/checker"
done
echo "stage.sh: $n numeric cases" >&2

# The expert cache's GPU tier (docs/ExpertCache.md): each case compiled
# all-resident and with an expert budget; run.sh checks the budgeted library
# in every cache mode against the all-resident one (1e-6) and that against
# the float64 reference.
tier() { # NAME BUDGET GENERATOR ARGS...
  local name=$1 budget=$2 gen=$3 d=$dir/tier/$1; shift 3
  mkdir -p "$d"
  $py "$repo/$gen" gen "$d" "$@" > /dev/null
  "$bin/moe-compile" --target=cuda --gpu-arch=sm_90 "$d/model.mlir" -o "$d/full.so"
  "$bin/moe-compile" --target=cuda --gpu-arch=sm_90 --expert-budget="$budget" \
    "$d/model.mlir" -o "$d/q.so"
  rm -f "$d"/*.h "$d/model.mlir" "$d/inputs.args"
  echo "$gen $* --expert-budget=$budget" > "$d/what"
}
tier stack-t9 25% test/lib/moe_stack.py --layers 3 --experts 8 --k 2 --tokens 9
# A routing profile on the GPU (--instrument-routing: moe.trace_routing's ids
# copied to the host) must equal the CPU library's, written here.
d=$dir/tier/stack-t9
$py "$repo/test/lib/moe_stack.py" gen "$d/gen" --layers 3 --experts 8 --k 2 --tokens 9 \
  --skew 2 > /dev/null
"$bin/moe-compile" --target=cuda --gpu-arch=sm_90 --instrument-routing "$d/gen/model.mlir" \
  -o "$d/prof.so"
"$bin/moe-compile" --instrument-routing "$d/gen/model.mlir" -o "$d/gen/cpu-prof.so"
"$bin/moe-run" "$d/gen/cpu-prof.so" --input=@"$d/gen/in0.npy" --profile="$d/cpu-profile.json"
mv "$d/gen/in0.npy" "$d/prof-in0.npy"
rm -rf "$d/gen" "$d/prof.h"
tier stack-t1 20% test/lib/moe_stack.py --layers 3 --experts 16 --k 2 --tokens 1 --skew 3
tier stack-t300 25% test/lib/moe_stack.py --layers 2 --experts 8 --k 2 --tokens 300
tier mixtral-f16 50% test/lib/moe_case.py mixtral --tokens 37 --dtype f16
tier mixtral-f16-t1 25% test/lib/moe_case.py mixtral --tokens 1 --dtype f16

# The GPU tier's benchmark model (bench/gpu/tier.py; weights written there).
$py "$repo/bench/gpu/tier.py" stage "$dir/tier-bench" --bin "$bin"

# Benchmark models: S1/S2/S3 of bench/moe_bench.py, f32 and f16, dynamic T.
$py "$repo/bench/gpu/bench.py" stage "$dir/bench"
for m in "$dir"/bench/*/model.mlir; do
  d=$(dirname "$m")
  "$bin/moe-compile" --target=cuda --gpu-arch=sm_90 "$m" -o "$d/model.so"
  "$bin/moe-run" "$d/model.so" --print-signature > "$d/signature"
  rm -f "$d/model.weights" "$d/model.h"
done
du -sh "$dir" >&2
