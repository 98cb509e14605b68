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
# lit lists the slowest tests after each suite (for a run that grows long).
export LIT_OPTS="${LIT_OPTS:---time-tests}"
# Disk: the packages take about 2.6 GB (2.3 GB of Debian packages, their
# downloads while they install), the checkout with npm's packages, both builds
# and their test outputs about 1.3 GB at its peak. Too little space shows up as odd failures deep in the
# run ("No space left on device"), so say so up front.
free_gb() { df -Pk "$root" | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }'; }
echo "test: $(free_gb) GB free on $(df -P "$root" | awk 'NR == 2 { print $6 }')"
if awk -v f="$(free_gb)" 'BEGIN { exit !(f < 3) }'; then
  echo "test: warning: less than 3 GB free; set-up, two builds and their test" \
    "outputs may not fit" >&2
fi
"$root/scripts/setup.sh"

"$root/scripts/build.sh" "$root/build"
echo "test: lit suite (release build)"
ninja -C "$root/build" check-moe
echo "test: release suite passed after $(( $(date +%s) - start )) s; $(free_gb) GB free"

if [ "$sanitizers" = 1 ]; then
  # The release suite passed: its outputs (models, weights files) are not
  # needed any more, and the ASan run writes its own.
  find "$root/build/test" -depth -type d -name Output -exec rm -rf {} +
  MOE_SANITIZERS=1 "$root/scripts/build.sh" "$root/build-asan"
  echo "test: lit suite (ASan+UBSan build)"
  ninja -C "$root/build-asan" check-moe
fi
echo "test: all passed in $(( $(date +%s) - start )) s"
