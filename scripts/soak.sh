#!/usr/bin/env bash
# Long soak: kill-and-re-pair cycles under INCR load (the test suite runs 3).
#   usage: sudo scripts/soak.sh [CYCLES=30]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "soak.sh needs root (network namespaces, TAP devices)" >&2; exit 1; }
[ -e /dev/kvm ] || { echo "soak.sh needs /dev/kvm" >&2; exit 1; }
SOAK_CYCLES=${1:-30} cargo test --release -p ftvmm-tests --test soak -- --nocapture
