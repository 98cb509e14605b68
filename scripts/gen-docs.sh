#!/usr/bin/env bash
# Regenerates docs/generated/ from the ODS definitions (dialect, ops,
# attributes, passes). A lit test fails when the committed copy is stale.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
ninja -C "$build" mlir-doc >/dev/null
mkdir -p "$root/docs/generated"
find "$build/docs" -name '*.md' -exec cp {} "$root/docs/generated/" \;
echo "gen-docs: $(ls "$root/docs/generated" | wc -l) files in docs/generated/"
