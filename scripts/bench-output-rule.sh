#!/usr/bin/env bash
# The price of the Output Rule, in one run: (a) `ftvmm run` unreplicated vs (b) primary + backup,
# redis-benchmark INCR, SET, GET at -c 1 and -c 50, as ratios b/a and added latency b-a, against
# the floor: the logging channel's own round trip on the same path (a 1-byte TCP ping-pong
# host-b -> host-a, TCP_NODELAY), measured in the same run. Then (b) again with ftvmm-relay on the
# logging channel adding D ms each way (the round trip grows by 2*D), with the floor measured
# through an identical relay, to show the added latency tracks the round trip.
#
#   usage: scripts/bench-output-rule.sh [N]     N requests per redis-benchmark test (default 20000;
#                                               fewer at -c 1 behind a delaying relay, see below)
#   env:   RELAY_DELAYS="0 0.5 1 5"   one-way delays (ms) to repeat (b) with; "" for none. A relay
#                                     that only takes whole milliseconds skips fractional ones.
#          SAMPLES=3000               per-request latencies collected per config for the plot
#          PINNED=1                   also run the direct setting pinned twice (0: skip): "pinned", (a)
#                                     and the primary on CPU 0 (--cpu 0), the backup on CPU 1 (--cpu 1),
#                                     as two hosts would keep them apart; "vcpus-pinned", only the vCPU
#                                     threads so (--vcpu-cpu 0 / 1). The other phases leave placement to Linux
#          TLS_COMPARE=1              the cost of TLS instead: the direct setting ROUNDS times (default 2)
#                                     over TLS and ROUNDS times with --insecure, alternating, and a table
#                                     of TLS vs --insecure (added p50 at -c 1, b/a throughput at -c 50);
#                                     no relay or pinned phases unless RELAY_DELAYS/PINNED say so. Writes
#                                     bench/output-rule-tls.{md,csv}, -settings.csv, -latency-samples.csv
#          FAILOVER_TIMEOUT_MS=1000   passed to the pair (ftvmm's default is 200): on a loaded 2-core
#                                     machine a VMM thread can stall for 100+ ms, and a backup that
#                                     hears nothing for 200 ms goes live while the primary runs,
#                                     which ends (b) mid-run. This bench measures the steady state.
#
# The pair replicates over TLS (a certificate per VMM from one `ftvmm certs init`), as deployed,
# unless a setting's name says insecure (--insecure). Both VMs are up at once: (a) in host-a as 10.77.0.11 on a second TAP, (b) the pair as 10.77.0.10
# (primary in host-a, backup in host-b); every test runs against (a) then (b), order alternating.
# Per setting it also reports the primary's held-time summary (printed at exit), log bytes per
# request and backup lag (from `ftvmm status`, skipped when this ftvmm has no status endpoint).
# Writes bench/output-rule.md, bench/output-rule.csv, bench/output-rule-settings.csv,
# bench/latency-samples.csv, and bench/latency.png (scripts/bench-plot.py).
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "$0")/lib/bench-common.sh"
bench_init bench-output-rule.sh "$@"

N="${1:-20000}"
[[ "$N" =~ ^[0-9]+$ ]] && [ "$N" -gt 0 ] || bench_die "N must be a positive number of requests (got '$N')"
TLS_COMPARE="${TLS_COMPARE:-0}"
ROUNDS="${ROUNDS:-2}"
OUTNAME=output-rule SAMPNAME=latency-samples
if [ "$TLS_COMPARE" = 1 ]; then
    OUTNAME=output-rule-tls SAMPNAME=output-rule-tls-latency-samples
    read -r -a DELAYS <<<"${RELAY_DELAYS-}"
    PINNED="${PINNED:-0}"
else
    read -r -a DELAYS <<<"${RELAY_DELAYS-0 0.5 1 5}"
    PINNED="${PINNED:-1}"
fi
SAMPLES="${SAMPLES:-3000}"
# The pair's security flags in the current phase (none: TLS, bench_vm gives certificates).
SEC=()
# Set for the pinned phase only: where the primary and the backup run.
PIN_P=() PIN_B=()
FO_MS="${FAILOVER_TIMEOUT_MS:-1000}"
TESTS=(INCR SET GET)
CLIENTS=(1 50)
# The primary listens on $HOST_A_IP:$PORT_LOG (bench_start_pair).
PORT_LOG=7000 PORT_PP=7002 RELAY_LOG=7001 RELAY_PP=7003
ST_A=7110 ST_P=7100 ST_B=7101

bench_need_redis_tools
HAS_STATUS=0
bench_has_status && HAS_STATUS=1
[ "$HAS_STATUS" = 1 ] || bench_log "this ftvmm has no status endpoint: skipping log bytes per request and backup lag"

bench_log "topology up (prefix $NETNS_PREFIX)"
bench_topology_up
bench_add_tap "$NS_A" tap1

# Does the relay take fractional milliseconds? (A refused value exits at once with a usage error.)
relay_takes() { # ms
    local rc=0
    ip netns exec "$NS_B" timeout 0.5 "$RELAY" --listen 127.0.0.1:0 --connect 127.0.0.1:9 --delay-ms "$1" >/dev/null 2>&1 || rc=$?
    [ "$rc" = 124 ]
}

# (a): unreplicated, up for the whole run.
# shellcheck disable=SC2046 # the status flag is two words or none
bench_vm a "$NS_A" run --tap tap1 --guest-ip "$GUEST2_IP/24" $(bench_status_flag $ST_A)
bench_wait_guest a "$GUEST2_IP"
# The floor's server, on host-a's own address, like the primary's --listen.
bench_spawn ppserver "$NS_A" python3 "$BENCH_LIB/benchtools.py" pp-server "$HOST_A_IP:$PORT_PP"
bench_wait_for ppserver out 'listening' 10

CSV="$BENCH_RESULTS/$OUTNAME.csv"
SET_CSV="$BENCH_RESULTS/$OUTNAME-settings.csv"
SAMP_CSV="$BENCH_RESULTS/$SAMPNAME.csv"
for f in "$CSV" "$SET_CSV" "$SAMP_CSV"; do
    {
        echo "# command: $BENCH_CMDLINE"
        echo "# date: $(date -u '+%Y-%m-%dT%H:%M:%SZ') nproc: $(nproc)"
    } >"$f"
done
echo "setting,delay_ms_each_way,config,test,clients,requests,rps,avg_ms,p50_ms,p95_ms,p99_ms,max_ms,log_bytes_per_req" >>"$CSV"
echo "setting,delay_ms_each_way,rtt_n,rtt_p50_us,rtt_p99_us,held_outputs,held_p50_us,held_p90_us,held_p99_us,held_max_us,lag_exits_p50,lag_exits_max,lag_ms_max,idle_log_bytes_per_s" >>"$SET_CSV"
echo "config,seq,us" >>"$SAMP_CSV"

declare -A R=() LB=() FLOOR=() HELD=() LAG=() IDLE=() SAMP=()
SETTINGS=()
SKIPPED=()
WENT_LIVE=()

now() { date +%s.%N; }

# bench_phase SETTING DELAY: one pair, benchmarked against (a).
bench_phase() {
    local setting="$1" delay="$2" connect="$HOST_A_IP:$PORT_LOG" ppaddr="$HOST_A_IP:$PORT_PP"
    local n1="$N" i=0 c t cfg order ip rps avg p50 p95 p99 max s0 s1 t0 t1 lb
    bench_log "== setting: $setting"
    if [ "$delay" != none ]; then
        # Both directions delayed: the round trip grows by 2*delay.
        bench_spawn relay-log "$NS_B" "$RELAY" --listen "127.0.0.1:$RELAY_LOG" --connect "$HOST_A_IP:$PORT_LOG" \
            --delay-up-ms "$delay" --delay-down-ms "$delay"
        bench_spawn relay-pp "$NS_B" "$RELAY" --listen "127.0.0.1:$RELAY_PP" --connect "$HOST_A_IP:$PORT_PP" \
            --delay-up-ms "$delay" --delay-down-ms "$delay"
        bench_wait_for relay-log out 'relay listening' 10
        bench_wait_for relay-pp out 'relay listening' 10
        connect="127.0.0.1:$RELAY_LOG"
        ppaddr="127.0.0.1:$RELAY_PP"
        # Keep each -c 1 test to a few seconds when every request waits a delayed round trip.
        n1=$(awk -v n="$N" -v d="$delay" 'BEGIN { m = (d > 0) ? int(4000 / (2 * d)) : n; if (m < 300) m = 300; print (m < n) ? m : n }')
    fi
    # shellcheck disable=SC2207 # the status flag is two words or none
    PAIR_PRIMARY_ARGS=($(bench_status_flag $ST_P) --failover-timeout-ms "$FO_MS" "${PIN_P[@]}" "${SEC[@]}")
    # shellcheck disable=SC2207
    PAIR_BACKUP_ARGS=($(bench_status_flag $ST_B) --failover-timeout-ms "$FO_MS" "${PIN_B[@]}" "${SEC[@]}")
    bench_start_pair "$connect"

    # The floor, on the same path, with the pair up (and idle).
    local pp
    pp="$(bench_pingpong "$NS_B" "$ppaddr" 5000 4)"
    FLOOR[$setting]="$(bench_json "$pp" n) $(bench_json "$pp" p50_us) $(bench_json "$pp" p99_us)"
    bench_log "floor (TCP ping-pong host-b -> host-a via $ppaddr): $pp"

    local samples="$BENCH_WORK/status-$setting.jsonl"
    IDLE[$setting]="-"
    if [ "$HAS_STATUS" = 1 ]; then
        s0="$(bench_status "$NS_A" $ST_P)"
        t0="$(now)"
        sleep 1
        s1="$(bench_status "$NS_A" $ST_P)"
        t1="$(now)"
        IDLE[$setting]=$(awk -v a="$(bench_json "$s0" log_bytes)" -v b="$(bench_json "$s1" log_bytes)" -v t0="$t0" -v t1="$t1" \
            'BEGIN { printf "%.0f", (b - a) / (t1 - t0) }')
        bench_spawn sampler "$NS_A" python3 "$BENCH_LIB/benchtools.py" status-sampler "127.0.0.1:$ST_P" --out "$samples" --interval 0.2
    fi

    for c in "${CLIENTS[@]}"; do
        for t in "${TESTS[@]}"; do
            if ((i % 2 == 0)); then order=(a b); else order=(b a); fi
            i=$((i + 1))
            local n="$N"
            [ "$c" = 1 ] && n="$n1"
            for cfg in "${order[@]}"; do
                ip="$GUEST2_IP"
                [ "$cfg" = b ] && ip="$GUEST_IP"
                [ "$cfg" = b ] && [ "$HAS_STATUS" = 1 ] && { s0="$(bench_status "$NS_A" $ST_P)"; t0="$(now)"; }
                read -r rps avg p50 p95 p99 max < <(bench_rb "$ip" "$t" "$c" "$n")
                lb=""
                if [ "$cfg" = b ] && [ "$HAS_STATUS" = 1 ]; then
                    s1="$(bench_status "$NS_A" $ST_P)"
                    t1="$(now)"
                    # Net of the timer ticks logged meanwhile at the idle rate.
                    lb=$(awk -v a="$(bench_json "$s0" log_bytes)" -v b="$(bench_json "$s1" log_bytes)" -v n="$n" \
                        -v idle="${IDLE[$setting]}" -v dt="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
                        'BEGIN { if (a == "" || b == "") print ""; else printf "%.1f", (b - a - idle * dt) / n }')
                fi
                R[$setting.$cfg.$t.$c]="$rps $p50 $p99 $n"
                [ "$cfg" = b ] && LB[$setting.$t.$c]="${lb:--}"
                echo "$setting,$delay,$cfg,$t,$c,$n,$rps,$avg,$p50,$p95,$p99,$max,$lb" >>"$CSV"
                bench_log "$setting $cfg $t -c $c -n $n: $rps ops/s p50 $p50 ms p99 $p99 ms${lb:+ log $lb B/req}"
            done
        done
    done

    # Per-request latency distributions (sequential INCR, one connection) for the plot.
    local label js
    if [ "$delay" = none ]; then
        js="$(ip netns exec "$NS_C" timeout 60 python3 "$BENCH_LIB/benchtools.py" latency "$GUEST2_IP:6379" \
            --label "a: run" --count "$SAMPLES" --max-seconds 6 --out "$SAMP_CSV")"
        SAMP["a: run"]="$js"
    fi
    label="b: primary+backup ($setting)"
    js="$(ip netns exec "$NS_C" timeout 60 python3 "$BENCH_LIB/benchtools.py" latency "$GUEST_IP:6379" \
        --label "$label" --count "$SAMPLES" --max-seconds 6 --out "$SAMP_CSV")"
    SAMP[$label]="$js"

    [ "$HAS_STATUS" = 1 ] && bench_stop sampler

    # Before stopping: at a clean stop the pair comes apart on purpose.
    if ! bench_pair_intact; then
        bench_warn "the pair came apart during setting $setting: (b) was not replicated for part of it (see $BENCH_WORK/backup-$setting.err)"
        WENT_LIVE+=("$setting")
    fi
    # A clean primary stop ends the backup too; the primary prints its held-time summary.
    bench_stop primary 15
    bench_wait_exit backup 10 || {
        bench_log "backup still running 10 s after the primary stopped: stopping it"
        bench_stop backup
    }
    local line
    line="$(grep 'output held by the Output Rule' "$BENCH_WORK/primary.err" | tail -1 || true)"
    bench_log "primary: ${line:-no held-time summary line}"
    HELD[$setting]="$(for k in outputs p50_us p90_us p99_us max_us; do
        v="$(grep -o "$k=[0-9]*" <<<"$line" | head -1 | cut -d= -f2)"
        printf '%s ' "${v:--}"
    done)"
    LAG[$setting]="- - -"
    if [ -s "$samples" ]; then
        # Lag in exits while the benchmarks ran, and in ms at the exit rate of the moment.
        LAG[$setting]="$(python3 - "$samples" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [r for r in rows if r.get("role") == "primary"]
lags = sorted(r.get("lag_exits", 0) for r in rows)
ms = []
for p, q in zip(rows, rows[1:]):
    rate = (q["exit_index"] - p["exit_index"]) / max(1e-6, q["t"] - p["t"])
    if rate > 0:
        ms.append(q.get("lag_exits", 0) / rate * 1000)
if lags:
    print(lags[len(lags) // 2], lags[-1], "%.2f" % max(ms) if ms else "-")
else:
    print("- - -")
EOF
)"
    fi
    for f in primary backup; do cp "$BENCH_WORK/$f.err" "$BENCH_WORK/$f-$setting.err"; done
    if [ "$delay" != none ]; then
        bench_stop relay-log
        bench_stop relay-pp
    fi
    read -r fn fp50 fp99 <<<"${FLOOR[$setting]}"
    read -r ho hp50 hp90 hp99 hmax <<<"${HELD[$setting]}"
    read -r l50 lmax lms <<<"${LAG[$setting]}"
    echo "$setting,${delay/none/},$fn,$fp50,$fp99,$ho,$hp50,$hp90,$hp99,$hmax,$l50,$lmax,$lms,${IDLE[$setting]}" >>"$SET_CSV"
    SETTINGS+=("$setting")
}

if [ "$TLS_COMPARE" = 1 ]; then
    # Alternating, so that the machine's load drifts over both alike.
    for ((r = 1; r <= ROUNDS; r++)); do
        SEC=()
        bench_phase "tls-$r" none
        SEC=(--insecure) # measured without TLS on purpose: the baseline TLS is compared with
        bench_phase "insecure-$r" none
        SEC=()
    done
else
    bench_phase direct none
fi
for d in "${DELAYS[@]}"; do
    if ! relay_takes "$d"; then
        bench_log "ftvmm-relay does not take --delay-ms $d (whole milliseconds only?): skipping +$d ms"
        SKIPPED+=("$d")
        continue
    fi
    bench_phase "relay +${d}ms" "$d"
done
if [ "$PINNED" = 1 ] && [ "$(nproc)" -ge 2 ]; then
    # (a) again, pinned where the primary will be, so "unreplicated pinned" is like for like.
    bench_stop a
    # shellcheck disable=SC2046
    bench_vm a "$NS_A" run --tap tap1 --guest-ip "$GUEST2_IP/24" $(bench_status_flag $ST_A) --cpu 0
    bench_wait_guest a "$GUEST2_IP"
    PIN_P=(--cpu 0) PIN_B=(--cpu 1)
    bench_phase pinned none
    # Only the vCPU threads apart (they are most of the CPU); the other threads go where Linux puts them.
    bench_stop a
    # shellcheck disable=SC2046
    bench_vm a "$NS_A" run --tap tap1 --guest-ip "$GUEST2_IP/24" $(bench_status_flag $ST_A) --vcpu-cpu 0
    bench_wait_guest a "$GUEST2_IP"
    PIN_P=(--vcpu-cpu 0) PIN_B=(--vcpu-cpu 1)
    bench_phase vcpus-pinned none
    PIN_P=() PIN_B=()
fi

bench_stop a
bench_stop ppserver

# ------------------------------------------------------------------ report
MD="$BENCH_RESULTS/$OUTNAME.md"
us() { awk -v v="$1" 'BEGIN { if (v == "" || v == "-") print "-"; else printf "%.0f", v * 1000 }'; } # ms -> us
{
    echo "# The Output Rule: unreplicated (a) vs primary + backup (b)"
    echo
    bench_provenance
    echo "- (a) \`ftvmm run\` ($GUEST2_IP, host-a, tap1) and (b) \`ftvmm primary\` (host-a) + \`ftvmm backup\` (host-b) ($GUEST_IP) up at once; each redis-benchmark test runs against (a) then (b), order alternating; $N requests per test (fewer at -c 1 behind a delaying relay: column n)"
    echo "- the pair runs with --failover-timeout-ms $FO_MS (see the script's header)"
    echo "- setting \`pinned\`: the direct path with (a) and the primary on CPU 0 (\`--cpu 0\`) and the backup on CPU 1 (\`--cpu 1\`), as two hosts keep them apart; \`vcpus-pinned\`: only the vCPU threads so (\`--vcpu-cpu 0\` / \`1\`), the other threads where Linux puts them; every other setting leaves placement to Linux (shared cores); redis-benchmark is never pinned"
    echo "- floor: 1-byte TCP ping-pong (python3, TCP_NODELAY) host-b -> $HOST_A_IP, the logging channel's path, through an identical relay when there is one, measured with the pair up"
    echo
    echo "## Floor: the logging channel's round trip"
    echo
    echo "| logging channel | round trips | RTT p50 us | RTT p99 us |"
    echo "|---|---:|---:|---:|"
    for s in "${SETTINGS[@]}"; do
        read -r fn fp50 fp99 <<<"${FLOOR[$s]}"
        echo "| $s | $fn | $fp50 | $fp99 |"
    done
    echo
    echo "## Added latency at -c 1 against the floor (target: added p50 <= 2 x RTT p50)"
    echo
    echo "| logging channel | test | RTT p50 us | a p50 us | b p50 us | added p50 us | added / RTT | <= 2x |"
    echo "|---|---|---:|---:|---:|---:|---:|---|"
    for s in "${SETTINGS[@]}"; do
        read -r fn fp50 fp99 <<<"${FLOOR[$s]}"
        for t in "${TESTS[@]}"; do
            read -r ra pa qa na <<<"${R[$s.a.$t.1]}"
            read -r rb pb qb nb <<<"${R[$s.b.$t.1]}"
            add=$(awk -v a="$pa" -v b="$pb" 'BEGIN { printf "%.0f", (b - a) * 1000 }')
            mult=$(awk -v x="$add" -v r="$fp50" 'BEGIN { printf "%.2f", x / r }')
            ok=$(awk -v m="$mult" 'BEGIN { print (m <= 2) ? "yes" : "no" }')
            echo "| $s | $t | $fp50 | $(us "$pa") | $(us "$pb") | $add | $mult | $ok |"
        done
    done
    echo
    echo "## Targets (issue 14)"
    echo
    echo "| target | measured | verdict |"
    echo "|---|---:|---|"
    for s in direct pinned vcpus-pinned; do
        [ -n "${FLOOR[$s]:-}" ] || continue
        read -r fn fp50 fp99 <<<"${FLOOR[$s]}"
        read -r ra pa qa na <<<"${R[$s.a.INCR.1]}"
        read -r rb pb qb nb <<<"${R[$s.b.INCR.1]}"
        lim=2
        [ "$s" != direct ] && lim=1.3
        mult=$(awk -v a="$pa" -v b="$pb" -v r="$fp50" 'BEGIN { printf "%.2f", (b - a) * 1000 / r }')
        echo "| $s: INCR -c 1 added p50 <= $lim x RTT p50 | $mult x | $(awk -v m="$mult" -v l="$lim" 'BEGIN { print (m <= l) ? "met" : "**MISS**" }') |"
    done
    for s in direct pinned vcpus-pinned; do
        [ -n "${FLOOR[$s]:-}" ] || continue
        read -r ra pa qa na <<<"${R[$s.a.INCR.50]}"
        read -r rb pb qb nb <<<"${R[$s.b.INCR.50]}"
        x=$(bench_ratio "$rb" "$ra")
        lim=0.8
        [ "$s" != direct ] && lim=0.85
        echo "| $s: INCR -c 50 throughput >= $lim x unreplicated | $x | $(awk -v m="$x" -v l="$lim" 'BEGIN { print (m >= l) ? "met" : "**MISS**" }') |"
    done
    echo
    if [ "$TLS_COMPARE" = 1 ]; then
        echo "## TLS vs --insecure (target: TLS adds <= 10% to the added p50 at -c 1, costs <= 5% of -c 50 throughput)"
        echo
        echo "Added p50 = b p50 - a p50 at -c 1 (us); throughput = b/a ops/s at -c 50. Mean over the rounds."
        echo
        echo "| test | TLS added p50 us | insecure added p50 us | TLS / insecure | TLS b/a -c 50 | insecure b/a -c 50 | TLS / insecure |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        for t in "${TESTS[@]}"; do
            declare -A sum=()
            for kind in tls insecure; do
                sum[$kind.add]=0 sum[$kind.x]=0
                for ((r = 1; r <= ROUNDS; r++)); do
                    read -r ra pa qa na <<<"${R[$kind-$r.a.$t.1]}"
                    read -r rb pb qb nb <<<"${R[$kind-$r.b.$t.1]}"
                    sum[$kind.add]=$(awk -v s="${sum[$kind.add]}" -v a="$pa" -v b="$pb" 'BEGIN { print s + (b - a) * 1000 }')
                    read -r ra pa qa na <<<"${R[$kind-$r.a.$t.50]}"
                    read -r rb pb qb nb <<<"${R[$kind-$r.b.$t.50]}"
                    sum[$kind.x]=$(awk -v s="${sum[$kind.x]}" -v a="$ra" -v b="$rb" 'BEGIN { print s + b / a }')
                done
            done
            echo "$t ${sum[tls.add]} ${sum[insecure.add]} ${sum[tls.x]} ${sum[insecure.x]}" | awk -v n="$ROUNDS" \
                '{ printf "| %s | %.0f | %.0f | %.2f | %.3f | %.3f | %.3f |\n", $1, $2 / n, $3 / n, ($3 != 0) ? $2 / $3 : 0, $4 / n, $5 / n, ($5 != 0) ? $4 / $5 : 0 }'
        done
        echo
    fi
    echo "## redis-benchmark: throughput and latency"
    echo
    echo "Latencies in ms as redis-benchmark reports them (its resolution is 1 us at these values). log B/req: growth of the primary's log per request during the (b) test, net of timer ticks at the idle rate."
    echo
    echo "| logging channel | test | -c | n | a ops/s | b ops/s | b/a | a p50 | b p50 | b-a p50 | a p99 | b p99 | b-a p99 | log B/req |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${SETTINGS[@]}"; do
        for c in "${CLIENTS[@]}"; do
            for t in "${TESTS[@]}"; do
                read -r ra pa qa na <<<"${R[$s.a.$t.$c]}"
                read -r rb pb qb nb <<<"${R[$s.b.$t.$c]}"
                echo "| $s | $t | $c | $nb | $ra | $rb | $(bench_ratio "$rb" "$ra") | $pa | $pb | $(bench_sub "$pb" "$pa") | $qa | $qb | $(bench_sub "$qb" "$qa") | ${LB[$s.$t.$c]} |"
            done
        done
    done
    echo
    echo "## Held time (the primary's summary at exit, all outputs of the setting) and backup lag"
    echo
    echo "Lag: the primary's \`lag_exits\` (exit index minus the backup's replayed-through) sampled every 200 ms while the benchmarks ran; in ms at the exit rate of the moment. Idle log: bytes/s logged with no requests (timer ticks)."
    echo
    echo "| logging channel | outputs | held p50 us | p90 us | p99 us | max us | lag p50 exits | lag max exits | lag max ms | idle log B/s |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for s in "${SETTINGS[@]}"; do
        read -r ho hp50 hp90 hp99 hmax <<<"${HELD[$s]}"
        read -r l50 lmax lms <<<"${LAG[$s]}"
        echo "| $s | $ho | $hp50 | $hp90 | $hp99 | $hmax | $l50 | $lmax | $lms | ${IDLE[$s]} |"
    done
    echo
    echo "## Per-request latency (python3 client, sequential INCR on one connection; plot: latency.png)"
    echo
    echo "| config | n | p50 us | p90 us | p99 us | max us |"
    echo "|---|---:|---:|---:|---:|---:|"
    labels=("a: run")
    for s in "${SETTINGS[@]}"; do labels+=("b: primary+backup ($s)"); done
    for k in "${labels[@]}"; do
        js="${SAMP[$k]:-}"
        [ -n "$js" ] || continue
        echo "| $k | $(bench_json "$js" n) | $(bench_json "$js" p50_us) | $(bench_json "$js" p90_us) | $(bench_json "$js" p99_us) | $(bench_json "$js" max_us) |"
    done
    if [ "${#WENT_LIVE[@]}" -gt 0 ]; then
        echo
        echo "**Warning:** the pair came apart (backup lost / went live while the primary ran) during: ${WENT_LIVE[*]}; (b) numbers there are partly unreplicated."
    fi
    if [ "$BENCH_PAIR_RETRIES" -gt 0 ]; then
        echo
        echo "Pairs that came apart right after boot and were restarted: $BENCH_PAIR_RETRIES (${BENCH_PAIR_BROKEN_NOTES[*]})"
    fi
    if [ "${#SKIPPED[@]}" -gt 0 ]; then
        echo
        echo "Skipped relay delays (ftvmm-relay takes whole milliseconds only): ${SKIPPED[*]} ms."
    fi
} >"$MD"

bench_finish "bench/$OUTNAME.md, bench/$OUTNAME.csv, bench/$OUTNAME-settings.csv, bench/$SAMPNAME.csv, bench/latency.png"
