#!/usr/bin/env bash
# redis-benchmark against the guest's KV server: `ftvmm run` vs `ftvmm record`, side by side in
# one run (both VMs up at once, each test run against one then the other, order alternating), as
# ratios record/run. These machines are noisy: compare ratios from one run, not absolutes.
#
#   usage: scripts/bench-redis.sh [N]        N requests per test (default 20000)
#
# Tests PING (PING_MBULK), SET, GET, INCR at -c 1 and -c 50. Topology: its own namespaces
# (NETNS_PREFIX, default bench-); `run` in host-a as 10.77.0.10, `record` in host-b as
# 10.77.0.11 (log in a temp dir), redis-benchmark in the client namespace.
# Writes bench/redis.md and bench/redis.csv. Needs root and /dev/kvm; see scripts/lib/bench-common.sh
# for the environment it reads.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "$0")/lib/bench-common.sh"
bench_init bench-redis.sh "$@"

N="${1:-20000}"
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -gt 0 ] || bench_die "N must be a positive number of requests (got '$N')"
TESTS=(PING_MBULK SET GET INCR)
CLIENTS=(1 50)

bench_need_redis_tools
bench_log "topology up (prefix $NETNS_PREFIX)"
bench_topology_up

REC_LOG="$BENCH_WORK/record.ftlog"
bench_vm run "$NS_A" run --tap tap0 --guest-ip "$GUEST_IP/24"
bench_vm record "$NS_B" record --log "$REC_LOG" --tap tap0 --guest-ip "$GUEST2_IP/24"
bench_wait_guest run "$GUEST_IP"
bench_wait_guest record "$GUEST2_IP"
bench_log "both VMs answer PING; benchmarking ($N requests per test)"

CSV="$BENCH_RESULTS/redis.csv"
{
    echo "# command: $BENCH_CMDLINE"
    echo "# date: $(date -u '+%Y-%m-%dT%H:%M:%SZ') nproc: $(nproc)"
    echo "config,test,clients,requests,rps,avg_ms,p50_ms,p95_ms,p99_ms,max_ms"
} >"$CSV"
declare -A R=()
i=0
for c in "${CLIENTS[@]}"; do
    for t in "${TESTS[@]}"; do
        # Alternate which config goes first so slow drift of the machine cancels out.
        if ((i % 2 == 0)); then order=(run record); else order=(record run); fi
        i=$((i + 1))
        for cfg in "${order[@]}"; do
            ip="$GUEST_IP"
            [ "$cfg" = record ] && ip="$GUEST2_IP"
            read -r rps avg p50 p95 p99 max < <(bench_rb "$ip" "$t" "$c" "$N")
            R[$cfg.$t.$c]="$rps $p50 $p99"
            echo "$cfg,$t,$c,$N,$rps,$avg,$p50,$p95,$p99,$max" >>"$CSV"
            bench_log "$cfg $t -c $c: $rps ops/s p50 $p50 ms p99 $p99 ms"
        done
    done
done

bench_stop run
bench_stop record
log_bytes=$(stat -c %s "$REC_LOG" 2>/dev/null || echo 0)
total_req=$((N * ${#TESTS[@]} * ${#CLIENTS[@]}))

MD="$BENCH_RESULTS/redis.md"
{
    echo "# redis-benchmark: ftvmm run vs ftvmm record"
    echo
    bench_provenance
    echo "- $N requests per test; run (host-a, $GUEST_IP) and record (host-b, $GUEST2_IP) both up, tests alternate between them"
    echo
    echo "| test | -c | run ops/s | record ops/s | record/run | run p50 ms | record p50 ms | run p99 ms | record p99 ms |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    for c in "${CLIENTS[@]}"; do
        for t in "${TESTS[@]}"; do
            read -r ra pa qa <<<"${R[run.$t.$c]}"
            read -r rb pb qb <<<"${R[record.$t.$c]}"
            echo "| $t | $c | $ra | $rb | $(bench_ratio "$rb" "$ra") | $pa | $pb | $qa | $qb |"
        done
    done
    echo
    echo "Record log: $log_bytes bytes for $total_req benchmark requests (plus PINGs and timer ticks): $(awk -v a="$log_bytes" -v b="$total_req" 'BEGIN { printf "%.0f", a / b }') bytes/request."
} >"$MD"

bench_finish "bench/redis.md and bench/redis.csv"
