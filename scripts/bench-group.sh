#!/usr/bin/env bash
# What a replica group costs, per replication mode and number of followers (issue 9): INCR at
# -c 1 and -c 50 against (a) `ftvmm run`, unreplicated, and (b) a primary with 1, 2 or 3
# followers in each mode: sync, semi-sync, async and quorum:2 (2 and 3 followers only). p50/p99
# latency, throughput, held time (output produced -> released), log bytes per request, and CPU
# per request by thread (measured, so that a missed target is explained by data).
#
#   usage: scripts/bench-group.sh [N]     N requests per redis-benchmark test (default 5000)
#   env:   FAILOVER_TIMEOUT_MS=10000      passed to every member. Up to five VMMs share 2 cores
#                                         here; with 1000 ms followers heard nothing for over a
#                                         second and went live (halting the primary), with 3000 ms
#                                         primaries dropped followers for "no ack for 3000 ms".
#                                         This bench measures the steady state, not detection.
#          LOCK_WAIT_S=120                longest wait for the tests' lock per phase (below)
#
# Targets, computed from this one run (ratios side by side; these machines are noisy):
#   T1  async's added p50 <= 0.2 x sync's added p50, with the same number of followers
#   T2  semi-sync with 3 followers: added p50 <= 1.25 x sync with 1 follower
# "added p50" is (b)'s INCR -c 1 p50 minus (a)'s, with (a) measured in the same phase, right
# before or after (b) (the order alternates), so slow drift of the machine cancels out.
#
# Topology: its own namespaces (NETNS_PREFIX, default bench-); (a) in host-a as 10.77.0.11 on
# tap1, up for the whole run; (b) 10.77.0.10: the primary in host-a, followers in host-b, host-c,
# host-d, all with --arbiter file:DIR (a second follower needs an arbiter; a fresh DIR per group,
# though old claims would not block a new group). Every process of every VM
# runs on this machine's cores: the "hosts" share them.
#
# The measuring part of each phase holds /tmp/ftvmm-tests.lock, the lock the integration tests
# take, so another engineer's test run does not share the cores with a measurement (the script
# says when and how long it waited). A phase that could not get it within LOCK_WAIT_S is
# measured anyway and marked in the report (column "lock"), rather than waiting out a soak.
#
# Writes bench/group.md, bench/group.csv, bench/group-cpu.csv and bench/group.png
# (scripts/bench-plot.py), only at the end of a complete run.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "$0")/lib/bench-common.sh"
bench_init bench-group.sh "$@"

N="${1:-5000}"
if ! [[ "$N" =~ ^[0-9]+$ ]] || [ "$N" -eq 0 ]; then bench_die "N must be a positive number of requests (got '$N')"; fi
FO_MS="${FAILOVER_TIMEOUT_MS:-10000}"
LOCK_WAIT_S="${LOCK_WAIT_S:-120}"
if [ "$LOCK_WAIT_S" != 120 ]; then BENCH_CMDLINE="LOCK_WAIT_S=$LOCK_WAIT_S $BENCH_CMDLINE"; fi
CLIENTS=(1 50)
# mode followers. Ordered by follower count, so that the configs the targets compare with the
# same followers run minutes apart at most.
# GROUP_PHASES="sync 1,async 1" runs a subset (to try the script; the targets need them all).
PHASES=("sync 1" "semi-sync 1" "async 1"
    "sync 2" "semi-sync 2" "async 2" "quorum:2 2"
    "sync 3" "semi-sync 3" "async 3" "quorum:2 3")
if [ -n "${GROUP_PHASES:-}" ]; then
    IFS=, read -r -a PHASES <<<"$GROUP_PHASES"
    BENCH_CMDLINE="GROUP_PHASES=\"$GROUP_PHASES\" $BENCH_CMDLINE"
fi
FOLLOWER_NS=("${NETNS_PREFIX}host-b" "${NETNS_PREFIX}host-c" "${NETNS_PREFIX}host-d")
ST_A=7110 ST_P=7100 ST_F=7101 # status ports; each follower has its own namespace (and loopback)
TESTS_LOCK=/tmp/ftvmm-tests.lock
CPU_SNAP="$BENCH_LIB/cpu-snap.py"

bench_need_redis_tools
bench_has_status || bench_die "this ftvmm has no status endpoint (needed for held time and log bytes)"
bench_log "topology up (prefix $NETNS_PREFIX)"
bench_topology_up
bench_add_tap "$NS_A" tap1

# (a): unreplicated, up for the whole run.
bench_vm a "$NS_A" run --tap tap1 --guest-ip "$GUEST2_IP/24" --status "127.0.0.1:$ST_A"
bench_wait_guest a "$GUEST2_IP"

CSV="$BENCH_RESULTS/group.csv"
CPU_CSV="$BENCH_RESULTS/group-cpu.csv"
for f in "$CSV" "$CPU_CSV"; do
    {
        echo "# command: $BENCH_CMDLINE"
        echo "# date: $(date -u '+%Y-%m-%dT%H:%M:%SZ') nproc: $(nproc)"
    } >"$f"
done
echo "mode,followers,config,clients,requests,rps,avg_ms,p50_ms,p95_ms,p99_ms,max_ms,held_p50_us,held_p99_us,log_bytes_per_req_per_follower,log_bytes_per_req_total" >>"$CSV"
echo "mode,followers,clients,config,seconds,machine_busy_pct,machine_cpu_us_per_req,vm_cpu_us_per_req,primary_vcpu_run_us,primary_vcpu_wait_us,primary_other_run_us,followers_vcpu_run_us,followers_vcpu_wait_us,followers_other_run_us,others_ms_per_s,others_top,threads_run_wait_us" >>"$CPU_CSV"

declare -A R=() HELD=() LB=() CPU=() INTACT=() LOCKED=()
RESTARTS=()
LOCK_WAITED=0
now() { date +%s.%N; }

# cpu_snap FILE: snapshot of every VMM process now running (a, primary, f1..f3).
cpu_snap() {
    local specs=() k
    for k in a primary f1 f2 f3; do
        if bench_alive "$k"; then specs+=("$k=${BENCH_PIDS[$k]}"); fi
    done
    python3 "$CPU_SNAP" snap "${specs[@]}" >"$1"
}

# cpu_row MODE F C CONFIG BEFORE AFTER N: one line of group-cpu.csv, and CPU[...] for the report.
cpu_row() {
    local mode="$1" f="$2" c="$3" cfg="$4" js
    js="$(python3 "$CPU_SNAP" diff "$5" "$6" "$7")"
    # Sum by role: the VM measured (the run VM for (a), the group for (b)), its vCPU threads
    # ("vcpu0") and the rest; per-request us; the run-queue wait is the contention.
    local row
    row="$(python3 - "$js" "$cfg" <<'EOF'
import json, sys
d = json.loads(sys.argv[1]); cfg = sys.argv[2]
procs = d["procs"]
def part(names, vcpu):
    run = wait = 0.0
    for n in names:
        for comm, (r, w) in procs.get(n, {}).items():
            if (comm == "vcpu0") == vcpu:
                run += r; wait += w
    return run, wait
lead = ["a"] if cfg == "a" else ["primary"]
fols = [] if cfg == "a" else [n for n in procs if n.startswith("f")]
pv = part(lead, True); po = part(lead, False)
fv = part(fols, True); fo = part(fols, False)
vm = pv[0] + po[0] + fv[0] + fo[0]
top = ";".join("%s:%s" % (k.split()[0], v) for k, v in d["others_top"][:4])
# Every thread of every VMM measured, "proc/comm=run/wait" (us per request), busiest first.
ths = sorted(((r, w, "%s/%s" % (n, comm)) for n in lead + fols for comm, (r, w) in procs.get(n, {}).items()), reverse=True)
threads = ";".join("%s=%s/%s" % (k, r, w) for r, w, k in ths if r >= 0.5 or w >= 0.5)
print(",".join(str(x) for x in [d["seconds"], d["busy_pct"], d["machine_cpu_us_per_req"], round(vm, 1),
      round(pv[0], 1), round(pv[1], 1), round(po[0], 1), round(fv[0], 1), round(fv[1], 1), round(fo[0], 1),
      d["others_ms_per_s"], top, threads]))
EOF
)"
    echo "$mode,$f,$c,$cfg,$row" >>"$CPU_CSV"
    CPU[$mode.$f.$c.$cfg]="$row"
}

# start_group MODE F: primary in host-a, F followers joining one after another; a group that
# came apart as it formed (a follower went live on a stall) is stopped, noted and started
# again, up to 3 times.
start_group() {
    local try
    for ((try = 1; try <= 3; try++)); do
        start_group_once "$@"
        if group_intact "$2"; then return 0; fi
        bench_warn "the group $1 x$2 came apart as it formed (try $try): started again"
        RESTARTS+=("$1 x$2")
        cp "$BENCH_WORK/primary.err" "$BENCH_WORK/primary-broken-${1/:/-}-$2-$try.err"
        stop_group "$2"
    done
    bench_die "could not get an intact group $1 x$2 in 3 tries"
}

start_group_once() {
    local mode="$1" f="$2" i arb
    # A fresh arbiter per start (not needed since group names: each start is a new group).
    arb="$(mktemp -d "$BENCH_WORK/arbiter-${mode/:/-}-$f.XXXX")"
    local common=(--tap tap0 --guest-ip "$GUEST_IP/24" --arbiter "file:$arb" --failover-timeout-ms "$FO_MS" --status "127.0.0.1:$ST_P")
    bench_vm primary "$NS_A" primary --listen "$HOST_A_IP:7000" --replication "$mode" "${common[@]}"
    for ((i = 1; i <= f; i++)); do
        common[-1]="127.0.0.1:$ST_F"
        bench_vm "f$i" "${FOLLOWER_NS[i - 1]}" backup --primary "$HOST_A_IP:7000" "${common[@]}"
        bench_wait_for "f$i" err 'backup paired' 30
    done
    bench_wait_guest primary "$GUEST_IP"
    sleep 1 # let the followers settle into lockstep before anything is measured
}

# group_intact F: the primary lists F followers and none dropped or went live.
group_intact() {
    local f="$1" js
    js="$(bench_status "$NS_A" $ST_P)"
    python3 -c '
import json, sys
d = json.loads(sys.argv[1]); f = int(sys.argv[2])
fs = d.get("followers", [])
ok = d.get("role") == "primary" and len(fs) == f and all(x.get("state") != "dropped" for x in fs)
sys.exit(0 if ok else 1)' "$js" "$f" 2>/dev/null || return 1
    local i
    for ((i = 1; i <= f; i++)); do
        ! grep -q 'GOING LIVE' "$BENCH_WORK/f$i.err" || return 1
    done
}

stop_group() {
    local f="$1" i
    # A clean stop of the primary ends its followers' logs; they exit by themselves.
    bench_stop primary 15
    for ((i = 1; i <= f; i++)); do
        bench_wait_exit "f$i" 10 || bench_stop "f$i"
    done
}

# take_tests_lock KEY: the integration tests' lock (they boot VMs on the same cores), waiting
# at most LOCK_WAIT_S; LOCKED[KEY] says whether it was taken.
take_tests_lock() {
    local k="$1" mode="${1%.*}" f="${1##*.}"
    local w0 waited
    w0="$(now)"
    exec {TL_FD}>"$TESTS_LOCK"
    LOCKED[$k]=yes
    if ! flock -n "$TL_FD"; then
        bench_log "waiting for $TESTS_LOCK (another engineer's tests are running; at most ${LOCK_WAIT_S}s)"
        # flock -w in the background, so that a signal ends the wait (bash runs traps only
        # between commands); registered so that the cleanup stops it too. A long test (a soak)
        # can hold the lock for many minutes: then this phase is measured anyway, and the
        # report says so.
        flock -w "$LOCK_WAIT_S" "$TL_FD" &
        BENCH_PIDS[testslock]=$!
        wait "${BENCH_PIDS[testslock]}" || LOCKED[$k]=no
        unset "BENCH_PIDS[testslock]"
    fi
    waited="$(awk -v a="$w0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
    LOCK_WAITED="$(awk -v a="$LOCK_WAITED" -v b="$waited" 'BEGIN { print a + b }')"
    [ "$waited" = 0.0 ] || bench_log "waited ${waited}s for $TESTS_LOCK"
    [ "${LOCKED[$k]}" = yes ] || bench_log "NOT holding $TESTS_LOCK: measuring $mode x$f while another test run may use the cores"
}

release_tests_lock() {
    [ "${LOCKED[$1]}" = no ] || flock -u "$TL_FD"
    exec {TL_FD}>&-
}

# bench_phase MODE F
bench_phase() {
    local mode="$1" f="$2" k="$1.$2" i=0 c cfg order ip rps avg p50 p95 p99 max s0 s1 t0 t1 idle
    bench_log "== $mode, $f follower(s)"
    local try
    for ((try = 1; ; try++)); do
        start_group "$mode" "$f"
        take_tests_lock "$k"
        # A follower may have been dropped while we waited: measure only an intact group.
        if group_intact "$f"; then break; fi
        [ "$try" -lt 3 ] || bench_die "the group $mode x$f keeps coming apart before it is measured"
        bench_warn "the group $mode x$f came apart before it was measured (try $try): started again"
        RESTARTS+=("$mode x$f")
        release_tests_lock "$k"
        cp "$BENCH_WORK/primary.err" "$BENCH_WORK/primary-broken-${mode/:/-}-$f-w$try.err"
        stop_group "$f"
    done

    # Timer ticks are logged whatever the load: the idle rate, to net them out of log bytes.
    s0="$(bench_status "$NS_A" $ST_P)"
    t0="$(now)"
    sleep 1
    s1="$(bench_status "$NS_A" $ST_P)"
    t1="$(now)"
    idle=$(awk -v a="$(bench_json "$s0" log_bytes)" -v b="$(bench_json "$s1" log_bytes)" -v t0="$t0" -v t1="$t1" \
        'BEGIN { printf "%.0f", (b - a) / (t1 - t0) }')

    for c in "${CLIENTS[@]}"; do
        if ((i % 2 == 0)); then order=(a b); else order=(b a); fi
        i=$((i + 1))
        for cfg in "${order[@]}"; do
            ip="$GUEST2_IP"
            [ "$cfg" = b ] && ip="$GUEST_IP"
            s0="$(bench_status "$NS_A" $ST_P)"
            t0="$(now)"
            cpu_snap "$BENCH_WORK/cpu0.json"
            read -r rps avg p50 p95 p99 max < <(bench_rb "$ip" INCR "$c" "$N")
            cpu_snap "$BENCH_WORK/cpu1.json"
            cpu_row "$mode" "$f" "$c" "$cfg" "$BENCH_WORK/cpu0.json" "$BENCH_WORK/cpu1.json" "$N"
            local hp50="" hp99="" lbf="" lbt=""
            if [ "$cfg" = b ]; then
                s1="$(bench_status "$NS_A" $ST_P)"
                t1="$(now)"
                # The primary's recent held times (its last 4096 outputs: this test's).
                hp50="$(bench_json "$s1" held_p50_us)"
                hp99="$(bench_json "$s1" held_p99_us)"
                # log_bytes counts every byte sent to every follower; net of idle ticks.
                lbt=$(awk -v a="$(bench_json "$s0" log_bytes)" -v b="$(bench_json "$s1" log_bytes)" -v n="$N" \
                    -v idle="$idle" -v dt="$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" \
                    'BEGIN { printf "%.1f", (b - a - idle * dt) / n }')
                lbf=$(awk -v t="$lbt" -v f="$f" 'BEGIN { printf "%.1f", t / f }')
                HELD[$k.$c]="$hp50 $hp99"
                LB[$k.$c]="$lbf $lbt"
            fi
            R[$k.$c.$cfg]="$rps $p50 $p99"
            echo "$mode,$f,$cfg,$c,$N,$rps,$avg,$p50,$p95,$p99,$max,$hp50,$hp99,$lbf,$lbt" >>"$CSV"
            bench_log "$mode x$f $cfg INCR -c $c: $rps ops/s p50 $p50 ms p99 $p99 ms${hp50:+ held p50 $hp50 us}${lbf:+ log $lbf B/req/follower}"
        done
    done
    release_tests_lock "$k"

    INTACT[$k]=yes
    if ! group_intact "$f"; then
        INTACT[$k]=no
        bench_warn "the group $mode x$f lost a follower during the run (see $BENCH_WORK/primary-$mode-$f.err)"
    fi
    stop_group "$f"
    cp "$BENCH_WORK/primary.err" "$BENCH_WORK/primary-${mode/:/-}-$f.err"
}

T_RUN0="$(now)"
for p in "${PHASES[@]}"; do
    read -r mode f <<<"$p"
    bench_phase "$mode" "$f"
done
bench_stop a
RUN_S="$(awk -v a="$T_RUN0" -v b="$(now)" 'BEGIN { printf "%.0f", b - a }')"

# ------------------------------------------------------------------ report
us() { awk -v v="$1" 'BEGIN { if (v == "" || v == "-") print "-"; else printf "%.0f", v * 1000 }'; } # ms -> us
# added MODE F C: (b) p50 - (a) p50 of the same phase, in us.
added() {
    local ra pa qa rb pb qb
    read -r ra pa qa <<<"${R[$1.$2.$3.a]:-}"
    read -r rb pb qb <<<"${R[$1.$2.$3.b]:-}"
    awk -v a="$pa" -v b="$pb" 'BEGIN { if (a == "" || b == "") print "-"; else printf "%.0f", (b - a) * 1000 }'
}
# verdict RATIO LIMIT
verdict() { awk -v r="$1" -v l="$2" 'BEGIN { if (r == "-") print "-"; else print (r <= l) ? "PASS" : "MISS" }'; }
# A ratio of added latencies means nothing when the denominator is not positive: "-".
ratio_of() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b <= 0) print "-"; else printf "%.2f", a / b }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

MD="$BENCH_RESULTS/group.md"
{
    echo "# Replica groups: replication modes x followers, INCR"
    echo
    bench_provenance
    echo "- $N INCRs per redis-benchmark test; (a) \`ftvmm run\` ($GUEST2_IP, host-a, tap1) up for the whole run; per phase, one group (b) ($GUEST_IP): primary in host-a, followers in host-b, host-c, host-d, \`--arbiter file:\` (fresh per group), \`--failover-timeout-ms $FO_MS\`; each test runs against (a) then (b), order alternating; run took ${RUN_S} s"
    echo "- **every VM shares this machine's $(nproc) cores** (the \"hosts\" are namespaces), and the machine is shared with other engineers' work: the CPU table below says how busy it was"
    nolock=()
    for p in "${PHASES[@]}"; do
        read -r mode f <<<"$p"
        [ "${LOCKED[$mode.$f]}" = yes ] || nolock+=("$mode x$f")
    done
    echo "- measuring held /tmp/ftvmm-tests.lock (the integration tests' lock) in $((${#PHASES[@]} - ${#nolock[@]})) of ${#PHASES[@]} phases; time spent waiting for it: ${LOCK_WAITED} s${nolock:+; **measured without it** (another test run held it over ${LOCK_WAIT_S} s): ${nolock[*]}}"
    if [ "${#RESTARTS[@]}" -gt 0 ]; then
        echo "- groups that came apart as they formed and were started again: ${RESTARTS[*]}"
    fi
    echo "- intact = no follower was dropped and none went live during the phase (no: part of it ran with fewer followers)"
    echo
    echo "## Targets (from this run)"
    echo
    echo "added p50 = (b) INCR -c 1 p50 - (a) INCR -c 1 p50, (a) measured in the same phase."
    echo
    echo "| target | numerator | denominator | ratio | limit | verdict |"
    echo "|---|---:|---:|---:|---:|---|"
    for f in 1 2 3; do
        aa="$(added async "$f" 1)"
        sa="$(added sync "$f" 1)"
        r="$(ratio_of "$aa" "$sa")"
        echo "| T1: async added p50 / sync added p50, $f follower(s) | $aa us | $sa us | $r | 0.20 | $(verdict "$r" 0.2) |"
    done
    ss3="$(added semi-sync 3 1)"
    s1="$(added sync 1 1)"
    r="$(ratio_of "$ss3" "$s1")"
    echo "| T2: semi-sync x3 added p50 / sync x1 added p50 | $ss3 us | $s1 us | $r | 1.25 | $(verdict "$r" 1.25) |"
    echo
    echo "## INCR latency and throughput"
    echo
    echo "Latencies as redis-benchmark reports them (ms; 1 us resolution here); held: the primary's output held time over its last 4096 outputs, read right after the (b) test; log B/req: log sent per request to each follower (and to all), net of timer ticks at the idle rate."
    echo
    echo "| mode | followers | -c | (a) ops/s | (b) ops/s | b/a | (a) p50 | (b) p50 | added p50 us | (a) p99 | (b) p99 | held p50 / p99 us | log B/req per follower (all) | intact | lock |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"
    for c in "${CLIENTS[@]}"; do
        arps=() ap50=() ap99=()
        for p in "${PHASES[@]}"; do
            read -r mode f <<<"$p"
            read -r ra pa qa <<<"${R[$mode.$f.$c.a]}"
            arps+=("$ra") ap50+=("$pa") ap99+=("$qa")
        done
        echo "| unreplicated (a), median of ${#PHASES[@]} phases | 0 | $c | $(echo "${arps[*]}" | median) | | | $(echo "${ap50[*]}" | median) | | | $(echo "${ap99[*]}" | median) | | | | | |"
        for p in "${PHASES[@]}"; do
            read -r mode f <<<"$p"
            k="$mode.$f"
            read -r ra pa qa <<<"${R[$k.$c.a]}"
            read -r rb pb qb <<<"${R[$k.$c.b]}"
            read -r hp50 hp99 <<<"${HELD[$k.$c]}"
            read -r lbf lbt <<<"${LB[$k.$c]}"
            echo "| $mode | $f | $c | $ra | $rb | $(bench_ratio "$rb" "$ra") | $pa | $pb | $(added "$mode" "$f" "$c") | $qa | $qb | $hp50 / $hp99 | $lbf ($lbt) | ${INTACT[$k]} | ${LOCKED[$k]} |"
        done
    done
    echo
    echo "## Where the CPU went (INCR -c 1, per request, us)"
    echo
    echo "From /proc/PID/task/*/schedstat over each -c 1 test (scripts/lib/cpu-snap.py): run = time on a CPU, wait = time runnable but waiting for a CPU (contention). 'other threads' are output, ack-rx, log-tx, log-rx, nic-rx. Machine busy: all $(nproc) cores, from /proc/stat; 'outside' is CPU used by processes other than the VMMs (redis-benchmark, other engineers' work), with the largest named."
    echo
    echo "| config | machine busy % | machine CPU us/req | VMMs CPU us/req | primary vCPU run / wait | primary other threads | followers' vCPUs run / wait | followers' other threads | outside (ms/s) | largest outside |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    for p in "${PHASES[@]}"; do
        read -r mode f <<<"$p"
        for cfg in a b; do
            IFS=, read -r _secs busy mcpu vm pvr pvw por fvr fvw for_ oth top _ths <<<"${CPU[$mode.$f.1.$cfg]}"
            name="$mode x$f (b)"
            [ "$cfg" = a ] && name="(a) run, in the $mode x$f phase"
            if [ "$cfg" = a ]; then
                echo "| $name | $busy | $mcpu | $vm | $pvr / $pvw | $por | - | - | $oth | ${top//;/, } |"
            else
                echo "| $name | $busy | $mcpu | $vm | $pvr / $pvw | $por | $fvr / $fvw | $for_ | $oth | ${top//;/, } |"
            fi
        done
    done
    echo
    echo "### By thread, for the configurations the targets compare (INCR -c 1, us per request, run / wait)"
    echo
    echo "f1..f3 are the followers (host-b, host-c, host-d); (a) is the unreplicated VM measured in the same phase."
    echo
    echo "| config | threads, busiest first |"
    echo "|---|---|"
    for p in "sync 1" "async 1" "sync 3" "semi-sync 3" "async 3"; do
        read -r mode f <<<"$p"
        for cfg in a b; do
            row="${CPU[$mode.$f.1.$cfg]:-}"
            [ -n "$row" ] || continue
            ths="${row##*,}"
            echo "| $mode x$f ($cfg) | ${ths//;/, } |"
        done
    done
} >"$MD"

bench_finish "bench/group.md, bench/group.csv, bench/group-cpu.csv, bench/group.png"
