#!/usr/bin/env bash
# Installs every Debian package moe-mlir needs to build and test. Idempotent:
# packages that are already installed are skipped, so a second run is fast.
set -euo pipefail

PKGS=(
  # Build.
  cmake ninja-build ccache lld clang-22 clang-format libclang-rt-22-dev
  # LLVM/MLIR 22 (libMLIR.so, mlir-tblgen, lit, FileCheck).
  llvm-22-dev llvm-22-tools libmlir-22-dev mlir-22-tools libomp-22-dev
  # ONNX import.
  libprotobuf-dev protobuf-compiler libonnx-dev
  # Test references and model generators (Debian's /usr/bin/python3).
  python3-numpy python3-onnx python3-pytest
  # lit's per-test time limit (test/lit.cfg.py).
  python3-psutil
  # The moe_mlir Python module (python-bindings/).
  pybind11-dev python3-dev
  # PyTorch: the torch.onnx.export MoE models of test/Target/ONNX.
  python3-torch
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# Node.js runs ONNX Runtime (npm onnxruntime-node), the peer the ONNX tests
# compare with; any node >= 18 will do (Debian's, or one already installed).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  missing+=(nodejs npm)
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
else
  echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  archives=/var/cache/apt/archives
  before=$(ls "$archives"/*.deb 2>/dev/null | sort || true)
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
  # The downloaded .deb files (about 0.7 GB) are not needed once installed;
  # only the ones this install fetched go, not what was cached before.
  fetched=$(comm -13 <(echo "$before") \
    <(ls "$archives"/*.deb 2>/dev/null | sort || true))
  if [ -n "$fetched" ]; then
    echo "setup: removing $(echo "$fetched" | wc -l) downloaded .deb files"
    echo "$fetched" | xargs -d '\n' $SUDO rm -f
  fi
fi

# ONNX Runtime for the tests (test/Target/ONNX/ort-compare.test) and bench/:
# onnxruntime-node pinned in bench/package-lock.json. Its postinstall would
# download CUDA binaries from outside npm; the CPU build is in the package.
root=$(cd "$(dirname "$0")/.." && pwd)
if ! (cd "$root/bench" && NODE_PATH= node -e "require('onnxruntime-node')" \
      >/dev/null 2>&1); then
  echo "setup: npm ci in bench/ (onnxruntime-node)"
  for attempt in 1 2 3; do
    if (cd "$root/bench" && ONNXRUNTIME_NODE_INSTALL=skip \
        npm ci --no-audit --no-fund --loglevel=error); then
      break
    fi
    [ "$attempt" = 3 ] && { echo "setup: npm ci failed" >&2; exit 1; }
    echo "setup: npm ci failed, retrying in 10 s" >&2
    sleep 10
  done
fi
