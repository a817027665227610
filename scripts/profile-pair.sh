#!/usr/bin/env bash
# Where the CPU goes when a pair serves INCRs at -c 1: CPU time per thread of the primary
# and the backup over N requests (from /proc), and a system-wide perf profile
# (cpu-clock sampling; these machines have no PMU) summarised by thread.
#   usage: sudo scripts/profile-pair.sh [N=20000]     (needs perf: apt-get install linux-perf)
#   env:   PRIMARY_PIN, BACKUP_PIN   extra flags for each VMM, e.g. "--vcpu-cpu 0" and "--vcpu-cpu 1"
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TAP devices)" >&2; exit 1; }
[ -e /dev/kvm ] || { echo "needs /dev/kvm" >&2; exit 1; }
command -v perf >/dev/null || { echo "needs perf (apt-get install linux-perf)" >&2; exit 1; }
N=${1:-20000}
cargo build --release --quiet --bin ftvmm
B=$PWD/target/release/ftvmm
export NETNS_PREFIX=pf-
OUT=$(mktemp -d)
cleanup() {
    for h in host-a host-b; do ip netns pids "pf-$h" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
    scripts/netns.sh down >/dev/null 2>&1 || true
    rm -rf "$OUT"
}
trap cleanup EXIT INT TERM
# CPU ticks (user + system) per thread name of process $1.
threads() {
    for t in /proc/"$1"/task/*; do
        read -r -a st <<<"$(sed 's/.*) //' "$t/stat")"
        echo "$(cat "$t/comm") $(( st[11] + st[12] ))"
    done | awk '{a[$1] += $2} END {for (k in a) print k, a[k]}' | sort
}
scripts/netns.sh up >/dev/null
"$B" certs init "$OUT/certs" --members 2 >/dev/null
# SECURITY (default: TLS with the certificates above) may be --insecure, to profile without.
SEC_A=${SECURITY:---tls-dir $OUT/certs/member-1}
SEC_B=${SECURITY:---tls-dir $OUT/certs/member-2}
# shellcheck disable=SC2086 # the flags are words
ip netns exec pf-host-a "$B" primary --listen 10.77.0.1:7000 $SEC_A --tap tap0 --guest-ip 10.77.0.10/24 ${PRIMARY_PIN:-} >/dev/null 2>&1 &
sleep 0.3
# shellcheck disable=SC2086
ip netns exec pf-host-b "$B" backup --primary 10.77.0.1:7000 $SEC_B --tap tap0 --guest-ip 10.77.0.10/24 ${BACKUP_PIN:-} >/dev/null 2>&1 &
sleep 2
P=$(ip netns pids pf-host-a | head -1); Q=$(ip netns pids pf-host-b | head -1)
threads "$P" >"$OUT/p0"; threads "$Q" >"$OUT/q0"
echo "command: ${PRIMARY_PIN:+PRIMARY_PIN=\"$PRIMARY_PIN\" }${BACKUP_PIN:+BACKUP_PIN=\"$BACKUP_PIN\" }scripts/profile-pair.sh $N   ($(date -u +%Y-%m-%d), $(nproc) cores)"
perf record -q -e cpu-clock -F 2000 -a -o "$OUT/perf.data" -- \
    ip netns exec pf-client redis-benchmark -h 10.77.0.10 -t incr -n "$N" -c 1 -q 2>&1 | tr '\r' '\n' | grep 'per second'
threads "$P" >"$OUT/p1"; threads "$Q" >"$OUT/q1"
tick_us=$(( 1000000 / $(getconf CLK_TCK) ))
for side in p:primary q:backup; do
    echo "${side#*:}: CPU per request by thread (us)"
    join "$OUT/${side%%:*}0" "$OUT/${side%%:*}1" | awk -v n="$N" -v t="$tick_us" '$3 > $2 {printf "  %-12s %6.1f\n", $1, ($3 - $2) * t / n}'
done
echo "share of all samples by thread (both VMs' vCPUs are named vcpu0; swapper is idle):"
perf report -i "$OUT/perf.data" --sort comm --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -8
