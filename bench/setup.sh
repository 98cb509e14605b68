#!/usr/bin/env bash
# Installs what bench/ needs beyond scripts/setup.sh. Idempotent.
#   apt: python3-numpy python3-onnx python3-torch (Debian's; used with /usr/bin/python3), and
#        libopenblas0-openmp: without it Debian's numpy and torch (BLAS_INFO=generic) run on the
#        reference BLAS (libblas3), ~1 GFLOP/s; OpenBLAS takes over libblas.so.3 via alternatives
#   npm: onnxruntime-node, pinned in bench/package.json + package-lock.json (npm ci)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

pkgs=(python3-numpy python3-onnx python3-torch libopenblas0-openmp)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# apt/dpkg may be busy (another build installing): wait for the lock rather than fight it.
apt_retry() {
  local i
  for i in $(seq 1 60); do
    if "$@"; then return 0; fi
    echo "bench/setup.sh: '$*' failed (lock held?), retrying in 10 s ($i/60)" >&2
    sleep 10
  done
  return 1
}

if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) -ne 0 ]] && sudo="sudo"
  echo "bench/setup.sh: installing ${missing[*]}"
  apt_retry $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt_retry $sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
    install -y -qq --no-install-recommends "${missing[@]}"
fi

command -v node >/dev/null || { echo "bench/setup.sh: node (v18+) is required" >&2; exit 1; }
cd "$here"
# onnxruntime-node's postinstall downloads CUDA EP binaries from outside the npm registry; the CPU
# build is in the npm package itself, so skip that step.
export ONNXRUNTIME_NODE_INSTALL=skip
if [[ -f package-lock.json ]]; then
  if [[ ! -d node_modules/onnxruntime-node ]] || ! node -e "require('onnxruntime-node')" 2>/dev/null; then
    npm ci --no-audit --no-fund
  fi
else
  npm install --no-audit --no-fund
fi
echo "bench/setup.sh: ok"
