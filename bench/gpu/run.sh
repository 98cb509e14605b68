#!/usr/bin/env bash
# Runs the GPU suite staged by bench/gpu/stage.sh, on a machine with a GPU,
# from the repository root: the numeric cases (each output against its
# float64 reference, relative L2 <= 1e-4, 1e-2 for f16 cases), the expert cache's GPU tier
# (TIER- lines), then the benchmarks: the GPU tier's (bench/gpu/tier.py; GPU_TIER_BENCH=0
# skips it) and the layer's against PyTorch eager (bench/gpu/bench.py; GPU_LAYER_BENCH=0
# skips it). Needs python3 with numpy and torch.
#   bench/gpu/run.sh STAGE_DIR RESULTS_DIR [--numerics-only] [bench.py run options]
set -uo pipefail
stage=$1 out=$2; shift 2
mkdir -p "$out"
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$out/gpu.txt"
# One case: its libraries one after another (they share the case's out.npy).
run_case() {
  local d=$1 ins=() f lib arch weights out_run res dio api
  ins=()
  for f in $(ls "$d"/in*.npy | sort -V); do ins+=("--input=@$f"); done
  for lib in "$d"/model-*.so; do
    arch=${lib##*/model-}; arch=${arch%.so}
    weights=()
    [[ -f $d/model.weights ]] && weights=(--weights="$d/model.weights")
    rm -f "$d/out.npy"
    # A crash prints nothing of its own: say which signal ended moe-run.
    if out_run=$("$stage/bin/moe-run" "$lib" "${weights[@]}" "${ins[@]}" --output=@"$d/out.npy" 2>&1 ||
                 { rc=$?; echo "moe-run exited with status $rc$( ((rc > 128)) &&
                   echo " (signal $(kill -l $((rc - 128))))")"; exit $rc; }) &&
       res=$(if [[ -f $d/checker ]]; then "$py" "$(cat "$d/checker")" check "$d"
             else "$py" test/lib/moe_case.py check "$d" --tol 1e-4; fi 2>&1); then
      echo "PASS $arch $(cat "$d/what"): $res"
      # Inputs and outputs in device memory: bit for bit the host path's result.
      rm -f "$d/out-devio.npy"
      if dio=$("$stage/bin/moe-run" "$lib" "${weights[@]}" "${ins[@]}" --device-io \
                 --output=@"$d/out-devio.npy" 2>&1) && cmp -s "$d/out.npy" "$d/out-devio.npy"; then
        echo "DEVIO-PASS $arch $(cat "$d/what"): moe-run --device-io identical"
      else
        echo "DEVIO-FAIL $arch $(cat "$d/what"): moe-run --device-io: ${dio:-differs from the host path}"
      fi
      if [[ ${#ins[@]} -eq 1 && -x $stage/bin/device_api ]]; then
        if api=$("$stage/bin/device_api" cuda "$lib" "${ins[0]#--input=@}" \
                   ${weights[0]:+"${weights[0]#--weights=}"} 2>&1); then
          echo "DEVIO-PASS $arch $(cat "$d/what"): device_api $(echo "$api" | grep -c identical) identical"
        else
          echo "DEVIO-FAIL $arch $(cat "$d/what"): device_api: $(echo "$api" | tr '\n' ';')"
        fi
      fi
    else
      echo "FAIL $arch $(cat "$d/what"): $out_run ${res:-}"
    fi
    res= out_run=
  done
}
export -f run_case
export stage py
# The cases run in parallel (the GPU machine has the cores; each moe-run and
# checker spends most of its time starting up), each writing its lines to
# its result.txt; they are printed in order. GPU_SUITE_JOBS sets how many.
# GPU_CASES=0 skips them (e.g. a rerun of the tier checks and benchmark).
start=$SECONDS
: > "$out/numerics.txt"
if [[ ${GPU_CASES:-1} != 0 ]]; then
  ls -d "$stage"/cases/*/ | xargs -P "${GPU_SUITE_JOBS:-8}" -I{} \
    bash -c 'd=${1%/}; run_case "$d" > "$d/result.txt" 2>&1' _ {}
  for d in "$stage"/cases/*/; do cat "${d%/}/result.txt"; done 2>&1 | tee "$out/numerics.txt"
  echo "numerics: $((SECONDS - start)) s"
fi
# The expert cache's GPU tier: each budgeted library, in every cache mode,
# against the all-resident one (relative L2 <= 1e-6: the same kernels on the
# same weights), which is checked against the float64 reference first.
tier_case() {
  local d=$1 what ins=() f m out res
  what=$(cat "$d/what")
  for f in $(ls "$d"/in*.npy | sort -V); do ins+=("--input=@$f"); done
  # A hang (a deadlocked cache) must not eat the device time: 120 s each.
  if ! out=$(timeout 120 "$stage/bin/moe-run" "$d/full.so" "${ins[@]}" --output=@"$d/full.npy" 2>&1); then
    echo "TIER-FAIL $what: all-resident run: $out"
    return
  fi
  if [[ $what == test/lib/moe_stack.py* ]]; then
    res=$("$py" test/lib/moe_stack.py close "$d/expected.npy" "$d/full.npy" --tol 1e-4 2>&1)
  else
    cp "$d/full.npy" "$d/out.npy"
    res=$("$py" test/lib/moe_case.py check "$d" --tol 1e-4 2>&1)
  fi || { echo "TIER-FAIL $what: all-resident against float64: $res"; return; }
  for m in ondemand lru prefetch; do
    if out=$(timeout 120 "$stage/bin/moe-run" "$d/q.so" "${ins[@]}" --expert-cache=$m \
               --output=@"$d/q-$m.npy" 2>&1) &&
       res=$("$py" test/lib/moe_stack.py close "$d/full.npy" "$d/q-$m.npy" 2>&1); then
      echo "TIER-PASS $what --expert-cache=$m: $res;" \
        "$(echo "$out" | grep -o 'acquires=.*evictions=[0-9]*')"
    else
      echo "TIER-FAIL $what --expert-cache=$m: $out ${res:-}"
    fi
    res=
  done
  # The routing profile of an instrumented library against the CPU's.
  if [[ -f $d/prof.so ]]; then
    if out=$(timeout 120 "$stage/bin/moe-run" "$d/prof.so" --input=@"$d/prof-in0.npy" \
               --profile="$d/profile.json" 2>&1) &&
       res=$("$py" -c 'import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
same = a["layers"] == b["layers"]
print("identical to the CPU library'"'"'s" if same else "differs from the CPU library'"'"'s")
sys.exit(0 if same else 1)' "$d/cpu-profile.json" "$d/profile.json" 2>&1); then
      echo "TIER-PASS $what --instrument-routing: routing profile $res"
    else
      echo "TIER-FAIL $what --instrument-routing: $out ${res:-}"
    fi
  fi
}
if [[ -d $stage/tier ]]; then
  for d in "$stage"/tier/*/; do tier_case "${d%/}"; done 2>&1 | tee -a "$out/numerics.txt"
fi
# The Python device API (bench/gpu/python_device.py) on two staged cases,
# where stage.sh staged the package's runtime half (ctypes: any Python 3 with
# numpy).
if [[ -d $stage/python/moe_mlir ]]; then
  if PYTHONPATH=$stage/python "$py" -c 'import moe_mlir' 2>/dev/null; then
    for d in "$stage"/cases/*/; do
      d=${d%/}
      case $(cat "$d/what") in
        "mixtral --tokens 1" | "mixtral --tokens 37 --dtype f16") ;;
        *) continue ;;
      esac
      PYTHONPATH=$stage/python "$py" bench/gpu/python_device.py "$d" 2>&1 ||
        echo "PYTHON-FAIL $(cat "$d/what"): python_device.py exited with status $?"
    done
  else
    echo "PYTHON-SKIP: $("$py" --version 2>&1) cannot load the staged moe_mlir:" \
      "$(PYTHONPATH=$stage/python "$py" -c 'import moe_mlir' 2>&1 | tail -1)"
  fi
fi 2>&1 | tee -a "$out/numerics.txt"
grep -c '^PASS' "$out/numerics.txt" | sed 's/^/passed: /'
grep -c '^FAIL' "$out/numerics.txt" | sed 's/^/failed: /'
grep -c '^DEVIO-PASS' "$out/numerics.txt" | sed 's/^/device-io passed: /'
grep -c '^DEVIO-FAIL' "$out/numerics.txt" | sed 's/^/device-io failed: /'
grep -c '^TIER-PASS' "$out/numerics.txt" | sed 's/^/tier passed: /'
grep -c '^TIER-FAIL' "$out/numerics.txt" | sed 's/^/tier failed: /'
grep -c '^PYTHON-PASS' "$out/numerics.txt" | sed 's/^/python passed: /'
grep -c '^PYTHON-FAIL' "$out/numerics.txt" | sed 's/^/python failed: /'
[[ ${1:-} == --numerics-only ]] && exit 0
# The GPU tier's benchmark (bench/gpu/tier.py), where stage.sh staged it;
# GPU_TIER_BENCH=0 skips it, GPU_LAYER_BENCH=0 the layer benchmark below.
if [[ -d $stage/tier-bench && ${GPU_TIER_BENCH:-1} != 0 ]]; then
  PYTHONUNBUFFERED=1 "$py" bench/gpu/tier.py run --stage "$stage/tier-bench" --out "$out"
fi
[[ ${GPU_LAYER_BENCH:-1} == 0 ]] && exit 0
PYTHONUNBUFFERED=1 "$py" bench/gpu/bench.py run --stage "$stage/bench" --out "$out" "$@"
