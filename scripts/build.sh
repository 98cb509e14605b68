#!/usr/bin/env bash
# Configures and builds moe-mlir into a build directory.
#   scripts/build.sh [BUILD_DIR] [extra cmake args...]
# BUILD_DIR defaults to build/. MOE_SANITIZERS=1 adds ASan+UBSan.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
shift || true

args=(-G Ninja -S "$root" -B "$build"
  -DCMAKE_BUILD_TYPE=Release
  -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22
  -DLLVM_USE_LINKER=lld
  -DMLIR_DIR=/usr/lib/llvm-22/lib/cmake/mlir)
if [ "${MOE_SANITIZERS:-0}" = 1 ]; then
  args+=(-DMOE_ENABLE_SANITIZERS=ON)
fi

if [ ! -f "$build/build.ninja" ]; then
  echo "build: configuring $build"
  mkdir -p "$build"
  cmake "${args[@]}" "$@" >"$build/configure.log" 2>&1 || {
    cat "$build/configure.log"; exit 1; }
fi
echo "build: building $build"
ninja -C "$build" -j"${MOE_JOBS:-$(nproc)}"
