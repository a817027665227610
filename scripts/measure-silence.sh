#!/usr/bin/env bash
# How long a peer stays silent on the logging channel, idle and under load: the number
# the failover timeout must stay well above (README, "Choosing the timeouts").
# Reads `max_peer_silence_us` from `ftvmm status` on both sides.
#   usage: sudo scripts/measure-silence.sh [REQUESTS=100000]
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces, TAP devices)" >&2; exit 1; }
[ -e /dev/kvm ] || { echo "needs /dev/kvm" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "needs redis-benchmark (apt-get install redis-tools)" >&2; exit 1; }
N=${1:-100000}
cargo build --release --quiet --bin ftvmm
B=target/release/ftvmm
export NETNS_PREFIX=sil-
cleanup() {
    for h in host-a host-b; do ip netns pids "sil-$h" 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
    scripts/netns.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM
CERTS=$(mktemp -d)
trap 'cleanup; rm -rf "$CERTS"' EXIT INT TERM
"$B" certs init "$CERTS/group" --members 2 >/dev/null
scripts/netns.sh up >/dev/null
# A long timeout, so a stall is measured instead of ending the pair.
ip netns exec sil-host-a "$B" primary --listen 10.77.0.1:7000 --tls-dir "$CERTS/group/member-1" --tap tap0 --guest-ip 10.77.0.10/24 \
    --status 127.0.0.1:7070 --failover-timeout-ms 5000 >/dev/null 2>&1 &
sleep 0.3
ip netns exec sil-host-b "$B" backup --primary 10.77.0.1:7000 --tls-dir "$CERTS/group/member-2" --tap tap0 --guest-ip 10.77.0.10/24 \
    --status 127.0.0.1:7070 --failover-timeout-ms 5000 >/dev/null 2>&1 &
sleep 2
silence() { ip netns exec "sil-$1" "$B" status 127.0.0.1:7070 | grep -o '"max_peer_silence_us":[0-9]*' | cut -d: -f2; }
sleep 5
echo "command: scripts/measure-silence.sh $N   ($(date -u +%Y-%m-%d), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "idle 5 s:          primary heard its backup at most every $(silence host-a) us, backup its primary every $(silence host-b) us"
timeout 120 ip netns exec sil-client redis-benchmark -h 10.77.0.10 -t incr,set,get -n "$N" -c 50 -q 2>&1 | tr '\r' '\n' | grep 'per second' || true
echo "after -c 50 load:  primary $(silence host-a) us, backup $(silence host-b) us (heartbeat 20 ms)"
