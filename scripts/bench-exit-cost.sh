#!/usr/bin/env bash
# Cost per exit of ftvmm's vCPU loop against a bare KVM_RUN loop on the same
# guest, and the extra cost of recording. One run, side by side, as ratios
# (these machines are noisy; compare ratios, not absolutes).
#   usage: scripts/bench-exit-cost.sh [EXITS]
set -euo pipefail
cd "$(dirname "$0")/.."
EXITS=${1:-300000}
[ -e /dev/kvm ] || { echo "needs /dev/kvm" >&2; exit 1; }
cargo build --release --quiet --bin ftvmm --example bare_loop --example exit_probe
BIN=target/release/ftvmm
LOG=$(mktemp --suffix=.ftlog)
CERTS=$(mktemp -d)
trap 'rm -rf "$LOG" "$CERTS"' EXIT
# The pair below replicates over TLS, as deployed: a group of two.
"$BIN" certs init "$CERTS/group" --members 2 >/dev/null

ns_of() { sed -n 's/.*ns_per_exit=\([0-9]*\).*/\1/p' | tail -1; }
ftvmm_ns() { FTVMM_LOG=info "$BIN" "$@" --workload exit-storm --stop-at-exit "$EXITS" 2>&1 >/dev/null | sed 's/\x1b\[[0-9;]*m//g' | ns_of; }

bare=$(target/release/examples/bare_loop "$EXITS" | sed -n 's/.* \([0-9]*\) ns\/exit/\1/p')
loop0=$(ftvmm_ns run --tick-hz 0)
run1k=$(ftvmm_ns run --tick-hz 1000)
rec1k=$(ftvmm_ns record --log "$LOG" --tick-hz 1000)
logsize=$(stat -c %s "$LOG")

# A primary streaming to a follower on this machine (loopback), ns/exit of the primary's loop:
# shared cores, then the primary on CPU 0 and the follower on CPU 1 (--cpu; two hosts).
PORT=$((17000 + RANDOM % 1000))
stream_ns() { # primary-cpu-flags follower-cpu-flags
    local err ns
    err=$(mktemp)
    # shellcheck disable=SC2086 # the flags are zero or two words
    FTVMM_LOG=info "$BIN" backup --primary "127.0.0.1:$PORT" --tls-dir "$CERTS/group/member-2" --workload exit-storm \
        --tick-hz 1000 $2 >/dev/null 2>"$err.b" &
    local bpid=$!
    # shellcheck disable=SC2086
    ns=$(FTVMM_LOG=info "$BIN" primary --listen "127.0.0.1:$PORT" --tls-dir "$CERTS/group/member-1" --workload exit-storm --tick-hz 1000 \
        --stop-at-exit "$EXITS" $1 2>&1 >/dev/null | sed 's/\x1b\[[0-9;]*m//g' | ns_of)
    wait "$bpid" 2>/dev/null || true
    rm -f "$err" "$err.b"
    PORT=$((PORT + 1))
    echo "${ns:-0}"
}
stream=$(stream_ns "" "")
pinned=$(stream_ns "--cpu 0" "--cpu 1")

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
echo "command: scripts/bench-exit-cost.sh $EXITS   ($(date -u +%Y-%m-%d), $(nproc) cores)"
printf '%-44s %10s %8s\n' "loop" "ns/exit" "ratio"
printf '%-44s %10s %8s\n' "bare KVM_RUN loop (examples/bare_loop)" "$bare" "1.000"
printf '%-44s %10s %8s\n' "ftvmm run, no timer" "$loop0" "$(ratio "$loop0" "$bare")"
printf '%-44s %10s %8s\n' "ftvmm run, 1000 Hz timer" "$run1k" "$(ratio "$run1k" "$bare")"
printf '%-44s %10s %8s\n' "ftvmm record, 1000 Hz timer" "$rec1k" "$(ratio "$rec1k" "$bare")"
printf '%-44s %10s %8s\n' "ftvmm primary + follower, 1000 Hz, shared" "$stream" "$(ratio "$stream" "$bare")"
printf '%-44s %10s %8s\n' "ftvmm primary + follower, 1000 Hz, pinned" "$pinned" "$(ratio "$pinned" "$bare")"
echo
echo "ftvmm loop / bare loop:          $(ratio "$loop0" "$bare")   (target <= 1.10)"
echo "record / run (same timer):       $(ratio "$rec1k" "$run1k")   (target <= 1.05)"
echo "primary streaming / record:       $(ratio "$stream" "$rec1k") shared cores, $(ratio "$pinned" "$rec1k") pinned apart"
echo "log size: $logsize bytes for $EXITS exits"
echo
# What one exit costs, and what the register read for a logged entry adds (KVM_CAP_SYNC_REGS).
target/release/examples/exit_probe "$EXITS"
