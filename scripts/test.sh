#!/usr/bin/env bash
# Sets up the machine, builds moe-mlir and runs every test: the lit suite in a
# normal build, then the same suite in an ASan+UBSan build.
#   scripts/test.sh              # everything (what CI runs)
#   scripts/test.sh --no-sanitizers
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
sanitizers=1
for arg in "$@"; do
  case "$arg" in
    --no-sanitizers) sanitizers=0 ;;
    *) echo "test.sh: unknown argument '$arg'" >&2; exit 2 ;;
  esac
done

start=$(date +%s)
"$root/scripts/setup.sh"

"$root/scripts/build.sh" "$root/build"
echo "test: lit suite (release build)"
ninja -C "$root/build" check-moe

if [ "$sanitizers" = 1 ]; then
  MOE_SANITIZERS=1 "$root/scripts/build.sh" "$root/build-asan"
  echo "test: lit suite (ASan+UBSan build)"
  ninja -C "$root/build-asan" check-moe
fi
echo "test: all passed in $(( $(date +%s) - start )) s"
