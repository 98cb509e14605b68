#!/usr/bin/env bash
# CPU benchmark of the MoE layer against its peers. See bench/README.md.
#   bench/run.sh [--quick] [--shapes S1,S2,S3] [--tokens 1,16,128,1024] [--threads 2] ...
# (bench/setup.sh once first.)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=bench/threads.sh
source "$here/threads.sh"
set_bench_threads "$@"
exec /usr/bin/python3 "$here/moe_bench.py" "$@"
