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

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages present"
  exit 0
fi

echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
