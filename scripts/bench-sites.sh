#!/usr/bin/env bash
# Multi-leader sites: convergence after a partition, site-link bytes per write, and what
# peers cost a site's own INCR throughput.
#
#   usage: scripts/bench-sites.sh [WRITES] [N]
#
#   WRITES  conflicting writes made during the partition, split over the three sites
#           (default 10000): INCR and SET on the same 100 keys at every site, merge policy
#   N       redis-benchmark INCR requests per throughput run (default 100000, -c 50)
#
# 1. Three standalone sites (scripts/sites-netns.sh, prefix NETNS_PREFIX, default bsites-).
#    All site links cut; WRITES/3 writes pipelined at each site; links healed; the time
#    until all three SITES DIGESTs agree (polled every ~20 ms) is the convergence time.
# 2. Bytes per write: IP bytes through the inter-site router while the healed sites catch
#    up (TCP/IP headers and ACKs included), divided by the writes and by the 2 peers each
#    write goes to.
# 3. INCR throughput at site 1 with 0, 1 and 2 peer sites (--sites naming site 1 alone,
#    sites 1-2, sites 1-3; all of them running and linked), and with no --sites at all;
#    three rounds in rotating order, the median of each reported.
# Writes bench/sites.md. Needs root, /dev/kvm, redis-tools; takes the test lock
# (/tmp/ftvmm-tests.lock) so it does not measure other VMs on this machine.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
WRITES="${1:-10000}"
N="${2:-100000}"
export NETNS_PREFIX="${NETNS_PREFIX:-bsites-}"
P="$NETNS_PREFIX"
SITES="1=10.78.1.10:6380,2=10.78.2.10:6380,3=10.78.3.10:6380"
FTVMM="${FTVMM:-$REPO/target/release/ftvmm}"
WORK="$(mktemp -d /tmp/ftvmm-bench-sites.XXXXXX)"
OUT="${BENCH_OUT_DIR:-$REPO/bench}/sites.md"
declare -a PIDS=()

log() { echo "[bench-sites $(date +%H:%M:%S)] $*" >&2; }
die() {
    echo "bench-sites: error: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "must run as root"
command -v redis-benchmark >/dev/null || die "redis-benchmark not found: install redis-tools"
if ! [[ "$WRITES" =~ ^[0-9]+$ ]] || [ "$WRITES" -lt 3 ]; then die "WRITES must be a number >= 3"; fi
[[ "$N" =~ ^[0-9]+$ ]] || die "N must be a number of requests"
if [ "${FTVMM_BUILD:-1}" != 0 ]; then
    log "cargo build --release"
    (cd "$REPO" && cargo build --release --quiet --bin ftvmm) || die "cargo build failed"
fi

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() {
    local rc=$?
    set +e
    stop_all
    "$REPO/scripts/sites-netns.sh" down >/dev/null 2>&1
    [ "$rc" -eq 0 ] && rm -rf "$WORK" || echo "bench-sites: VM logs kept in $WORK" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

exec {LOCK}>/tmp/ftvmm-tests.lock
log "waiting for the test lock"
flock "$LOCK"

cli() { # site args...
    local s="$1"
    shift
    ip netns exec "${P}s$s-client" redis-cli -h "10.78.$s.10" "$@"
}

boot_site() { # site [extra flags...]
    local s="$1"
    shift
    ip netns exec "${P}s$s-host-a" "$FTVMM" run --tap tap0 --guest-ip "10.78.$s.10/24" --gateway "10.78.$s.254" \
        "$@" >"$WORK/site$s.out" 2>"$WORK/site$s.err" &
    PIDS+=($!)
    local i
    for i in $(seq 1 200); do
        [ "$(cli "$s" PING 2>/dev/null)" = PONG ] && return
        sleep 0.05
    done
    die "site $s did not answer PING"
}

site_flags() { echo --site-id "$1" --sites "$SITES" --conflict merge; }
# Site 1 with only the first PEERS other sites in its --sites (and they with the same list).
peer_flags() { # site peers
    local list="1=10.78.1.10:6380" s
    for s in $(seq 2 $(($2 + 1))); do list="$list,$s=10.78.$s.10:6380"; done
    echo --site-id "$1" --sites "$list" --conflict merge
}

digests_equal() {
    local a b c
    a="$(cli 1 SITES DIGEST)" && b="$(cli 2 SITES DIGEST)" && c="$(cli 3 SITES DIGEST)" || return 1
    [ "$a" = "$b" ] && [ "$b" = "$c" ]
}

router_bytes() { # sum of bytes received by the router on all three site ports
    local s sum=0 v
    for s in 1 2 3; do
        v="$(ip netns exec "${P}wan" cat "/sys/class/net/s$s/statistics/rx_bytes")"
        sum=$((sum + v))
    done
    echo "$sum"
}

ms_now() { echo $(($(date +%s%N) / 1000000)); }

"$REPO/scripts/sites-netns.sh" down >/dev/null 2>&1 || true
"$REPO/scripts/sites-netns.sh" up >/dev/null

# ---------------------------------------------------------------- 1 + 2: convergence
log "three sites, merge policy"
for s in 1 2 3; do
    # shellcheck disable=SC2046 # the flags are words
    boot_site "$s" $(site_flags "$s")
done
sleep 1
for s in 1 2 3; do "$REPO/scripts/sites-netns.sh" link "$s" down; done
per_site=$((WRITES / 3))
log "partitioned; $per_site conflicting writes at each site"
writers=()
for s in 1 2 3; do
    for i in $(seq 1 "$per_site"); do
        k=$((i % 100))
        if ((i % 2)); then echo "INCR c$k"; else echo "SET s$k site$s-$i"; fi
    done >"$WORK/writes$s.txt"
    cli "$s" <"$WORK/writes$s.txt" >/dev/null &
    writers+=($!)
done
wait "${writers[@]}"
sleep 0.5
total=$((per_site * 3))
before="$(router_bytes)"
t0="$(ms_now)"
for s in 1 2 3; do "$REPO/scripts/sites-netns.sh" link "$s" up; done
until digests_equal; do
    [ $(($(ms_now) - t0)) -lt 60000 ] || die "no convergence within 60 s"
    sleep 0.02
done
t1="$(ms_now)"
converge_ms=$((t1 - t0))
sleep 0.5
after="$(router_bytes)"
bytes_per_write=$(((after - before) / (total * 2)))
counter_sum="$(cli 1 GET c1)"
log "converged $converge_ms ms after healing ($total writes); $bytes_per_write link bytes per write per peer; c1 = $counter_sum"
stop_all

# ---------------------------------------------------------------- 3: INCR throughput
rb() { # site -> ops/s
    ip netns exec "${P}s$1-client" redis-benchmark -h "10.78.$1.10" -t incr -c 50 -n "$N" --csv 2>/dev/null |
        sed 1d | tr -d '"' | awk -F, 'NF >= 2 { print $2; exit }'
}
declare -A RPS=() RUNS=()
CONFIGS=(none 0 1 2)
for round in 0 1 2; do
  for j in 0 1 2 3; do
    peers="${CONFIGS[$(((j + round) % 4))]}"
    if [ "$peers" = none ]; then
        boot_site 1
    else
        # shellcheck disable=SC2046
        boot_site 1 $(peer_flags 1 "$peers")
        for s in $(seq 2 $((peers + 1))); do
            # shellcheck disable=SC2046
            boot_site "$s" $(peer_flags "$s" "$peers")
        done
        sleep 1
    fi
    rps="$(rb 1)"
    RUNS[$peers]="${RUNS[$peers]:-} $rps"
    log "INCR at site 1, peers: $peers -> $rps ops/s"
    stop_all
  done
done
for peers in "${CONFIGS[@]}"; do
    # shellcheck disable=SC2086 # one run per word
    RPS[$peers]="$(printf '%s\n' ${RUNS[$peers]} | sort -n | sed -n 2p)"
done
ratio1=$(python3 -c "print(f'{${RPS[1]}/${RPS[0]}:.2f}')")
ratio2=$(python3 -c "print(f'{${RPS[2]}/${RPS[0]}:.2f}')")
ratio_plain=$(python3 -c "print(f'{${RPS[0]}/${RPS[none]}:.2f}')")

mkdir -p "$(dirname "$OUT")"
cat >"$OUT" <<MD
# Multi-leader sites

Command: \`scripts/bench-sites.sh $WRITES $N\` on $(nproc) cores, $(date -u '+%Y-%m-%d %H:%M UTC'); three standalone
sites (one VM each) on one machine, merge policy.

| measure | value |
|---|---:|
| conflicting writes during the partition (INCR/SET on 100 shared keys, all three sites) | $total |
| convergence after healing (all SITES DIGESTs equal) | $converge_ms ms |
| site-link bytes per write per peer (IP bytes through the router, headers and ACKs included) | $bytes_per_write |
| INCR -c 50, site 1 without --sites | ${RPS[none]} ops/s |
| INCR -c 50, site 1 with 0 peers (--sites lists only itself) | ${RPS[0]} ops/s ($ratio_plain x without --sites) |
| INCR -c 50, site 1 with 1 peer linked | ${RPS[1]} ops/s (${ratio1} x 0 peers) |
| INCR -c 50, site 1 with 2 peers linked | ${RPS[2]} ops/s (${ratio2} x 0 peers) |

Throughput: redis-benchmark -t incr -c 50 -n $N, median of three runs (runs: none${RUNS[none]}; 0 peers${RUNS[0]};
1 peer${RUNS[1]}; 2 peers${RUNS[2]}). All VMs share the same $(nproc) cores, so a peer's own CPU use counts against
site 1 here; on separate machines it would not.
MD
cat "$OUT"
