#!/usr/bin/env bash
# Which frames, sent by the new primary's host at go-live, make a stock Linux client resend the
# request it lost with the old primary? (docs/client-gap.md explains the answer.)
# Builds namespaces ftvmm-probe-{s,r,c} (server, router, client; addresses 10.99.1.0/24 and
# 10.99.2.0/24 exist only inside them), runs scripts/lib/retransmit_probe.py for each variant,
# prints the reply time per trial and the median per variant, and removes the namespaces.
#   usage: sudo scripts/probe-client-retransmit.sh [TRIALS=5]
set -euo pipefail
cd "$(dirname "$0")"
[ "$(id -u)" = 0 ] || { echo "needs root (network namespaces)" >&2; exit 1; }
TRIALS="${1:-5}"
P=ftvmm-probe-
down() { for n in s c r; do ip netns del "$P$n" 2>/dev/null || true; done; }
up() {
    down
    for n in s c r; do ip netns add "$P$n"; ip -n "$P$n" link set lo up; done
    ip link add veth-s netns "${P}s" type veth peer name veth-rs netns "${P}r"
    ip link add veth-c netns "${P}c" type veth peer name veth-rc netns "${P}r"
    ip -n "${P}s" addr add 10.99.1.1/24 dev veth-s
    ip -n "${P}r" addr add 10.99.1.254/24 dev veth-rs
    ip -n "${P}c" addr add 10.99.2.1/24 dev veth-c
    ip -n "${P}r" addr add 10.99.2.254/24 dev veth-rc
    ip -n "${P}s" link set veth-s up
    ip -n "${P}c" link set veth-c up
    ip -n "${P}r" link set veth-rs up
    ip -n "${P}r" link set veth-rc up
    ip -n "${P}s" route add default via 10.99.1.254
    ip -n "${P}c" route add default via 10.99.2.254
    ip netns exec "${P}r" sysctl -qw net.ipv4.ip_forward=1
    sleep 0.3
}
trap down EXIT INT TERM
echo "client: $(uname -r), tcp_sack=$(sysctl -n net.ipv4.tcp_sack) tcp_recovery=$(sysctl -n net.ipv4.tcp_recovery) tcp_early_retrans=$(sysctl -n net.ipv4.tcp_early_retrans)"
# variant DROP_S: a kill-like loss (3 ms, before the client's first timer) for every variant, and
# a timeout-like one (450 ms: the client has resent once, into the outage, and backed off).
for run in "none 0.003" "dupack 0.003" "dsack 0.003" "window 0.003" "resend 0.003" "icmp 0.003" "none 0.45" "dupack 0.45" "icmp 0.45"; do
    read -r v d <<<"$run"
    up
    timeout 120 python3 lib/retransmit_probe.py "$v" "$TRIALS" "$d" | tee /tmp/ftvmm-probe.$$.jsonl
    python3 - "$v" "$d" /tmp/ftvmm-probe.$$.jsonl <<'PY'
import json, sys
r = sorted(json.loads(l)["reply_ms"] for l in open(sys.argv[3]) if l.strip())
print(f"== {sys.argv[1]:7} outage {float(sys.argv[2]) * 1000:5.0f} ms: reply after median {r[len(r) // 2]:.1f} ms (min {r[0]:.1f}, max {r[-1]:.1f}, {len(r)} trials)")
PY
    rm -f /tmp/ftvmm-probe.$$.jsonl
done
