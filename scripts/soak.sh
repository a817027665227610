#!/usr/bin/env bash
# Long soak: kill-and-re-pair cycles under INCR load (the test suite runs 5).
# After every cycle a new client (ARP cache emptied) must reach the guest and the
# new primary must be protected again; the last line sums it up.
#   usage: sudo scripts/soak.sh [CYCLES=30]
# SOAK_MAX_REPLAY_LAG (default: the monitor's default, 1024 exits) sets the
# flow-control limit; the exit index passes it many times in a long soak.
# SOAK_FAILOVER_TIMEOUT_MS (default 500, the monitor's) for a machine shared with other work.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "soak.sh needs root (network namespaces, TAP devices)" >&2; exit 1; }
[ -e /dev/kvm ] || { echo "soak.sh needs /dev/kvm" >&2; exit 1; }
# The tests start the ftvmm binary of their own profile: build it first.
cargo build --release -p vmm --bins
SOAK_CYCLES=${1:-30} SOAK_MAX_REPLAY_LAG=${SOAK_MAX_REPLAY_LAG:-1024} \
    cargo test --release -p ftvmm-tests --test soak -- --nocapture
