#!/usr/bin/env bash
# Rejoining a primary: what a follower costs the group when it comes back, by how it comes back.
#
#   usage: scripts/bench-rejoin.sh [DOWN_LONG_S]      (default 60: the long outage)
#   run it under the tests' lock, as the README does:
#          flock /tmp/ftvmm-tests.lock scripts/bench-rejoin.sh
#
# Every phase boots a primary (host-a) and a follower (host-b) with --data-dir, runs INCR load
# (redis-benchmark -c 4, all the time, also while the follower is down), kills the follower
# with kill -9 and starts it again on the same directory after the outage:
#
#   fresh        the follower's directory is emptied first: a joiner with nothing but the
#                freshly booted guest image (the full-transfer case of the diff code)
#   resume-5s    down 5 s, default backlog (64 MiB): resumes from the backlog
#   diff-5s      down 5 s, --backlog-kib 1: the backlog cannot cover it, pages that differ move
#   resume-long  down DOWN_LONG_S, default backlog (a resume if the backlog still covers it)
#   diff-long    down DOWN_LONG_S, --backlog-kib 1
#   fresh-idle, resume-5s-idle, diff-5s-idle   the same without load (the cores are free)
#
# Every state transfer above is a pre-copy (the default, --precopy on): memory is copied while
# the primary's VM runs and it pauses only for the last round. The phases ending in -stop run
# the same with --precopy off on the primary (stop-and-copy of the pages that differ), for the
# pause without pre-copy:
#   fresh-stop, diff-5s-stop, diff-long-stop, fresh-idle-stop, diff-5s-idle-stop
#
# Measured per phase, from the primary's log: bytes the primary sent (on the wire: state
# transfers and resumed logs go packed, see logging-channel/src/pack.rs; and what they were
# before packing) and the follower's page list it received, the primary's pause (its guest stops while it attaches the follower), and
# the time from the follower's restart to the primary's status showing it "in sync". "Full
# copy" is what the code before the diff transfer sent: every non-zero page of the primary
# (`full_pages` x 4 KiB, the same frames), as measured in the fresh and diff phases.
#
# A second part measures what --fsync always costs: INCR at -c 1 and -c 50 (redis-benchmark,
# 10000 requests) against a pair without --data-dir, with --data-dir (fsync async) and with
# --fsync always.
#
# Writes bench/rejoin.md and bench/rejoin.csv. PHASES="fresh fresh-stop" runs only the phases
# named, each REPEAT times (default 1), skips the --fsync part, writes nothing to bench/ and
# prints the rows: for the spread of one phase on a noisy machine.
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "$0")/lib/bench-common.sh"
bench_init bench-rejoin.sh "$@"
DOWN_LONG="${1:-60}"
[[ "$DOWN_LONG" =~ ^[0-9]+$ ]] && [ "$DOWN_LONG" -gt 0 ] || bench_die "DOWN_LONG_S must be a positive number"
bench_need_redis_tools
DATA="$BENCH_WORK/data"
ST=7100

now() { date +%s.%N; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
# field KEY LINE: the value of key=value (quotes dropped) in a log line
field() { { grep -o " $1=\"\{0,1\}[0-9.]*" <<<"$2" || true; } | head -1 | sed 's/.*=//; s/"//g'; }

start_load() {
    ip netns exec "$NS_C" redis-benchmark -h "$GUEST_IP" -p 6379 -t incr -c 4 -n 100000000 -q \
        >"$BENCH_WORK/load.out" 2>&1 &
    BENCH_PIDS["load"]=$!
}

follower() { # phase extra...
    bench_vm follower "$NS_B" backup --primary "$HOST_A_IP:7000" --tap tap0 --guest-ip "$GUEST_IP/24" \
        --data-dir "$DATA" --checkpoint-secs 2 "${@:2}"
}

CSV="$BENCH_RESULTS/rejoin.csv"
{
    echo "# command: $BENCH_CMDLINE"
    echo "# date: $(date -u '+%Y-%m-%dT%H:%M:%SZ') nproc: $(nproc)"
    echo "phase,down_s,how,bytes_sent,raw_bytes,have_bytes,pages_sent,full_pages,full_copy_bytes,rounds,transfer_ms,pause_ms,in_sync_ms,local_replay_exits"
} >"$CSV"

phase() { # name down_s primary-extra...
    local name="$1" down="$2" line how bytes raw have pages full full_bytes rounds total pause t0 insync local_exits s i
    shift 2
    bench_log "== $name (down ${down} s)"
    bench_topology_up
    rm -rf "$DATA"
    bench_vm primary "$NS_A" primary --listen "$HOST_A_IP:7000" --tap tap0 --guest-ip "$GUEST_IP/24" \
        --status "127.0.0.1:$ST" "$@"
    bench_wait_for primary err 'waiting for its first follower|waiting for a backup' 30
    follower "$name"
    bench_wait_for follower err 'backup paired' 30
    bench_wait_guest primary "$GUEST_IP"
    if [ "${LOAD:-1}" = 1 ]; then start_load; fi
    sleep 5
    bench_wait_for follower err 'checkpoint taken' 30
    # Idle phases: a short burst of writes before the kill, then nothing.
    if [ "${LOAD:-1}" = 0 ]; then ip netns exec "$NS_C" redis-benchmark -h "$GUEST_IP" -t incr -c 4 -n 5000 -q >/dev/null 2>&1 || true; fi
    kill -KILL "${BENCH_PIDS[follower]}"
    wait "${BENCH_PIDS[follower]}" 2>/dev/null || true
    unset "BENCH_PIDS[follower]"
    cp "$BENCH_WORK/follower.err" "$BENCH_WORK/follower-$name-before.err"
    case "$name" in fresh*) rm -rf "$DATA" ;; esac
    sleep "$down"
    t0="$(now)"
    follower "$name"
    insync=""
    for ((i = 0; i < 3000; i++)); do
        s="$(bench_status "$NS_A" $ST)"
        # The restarted follower is the one with an id above 1; "in sync" once it has caught up.
        if python3 -c 'import json,sys; f=json.loads(sys.argv[1])["followers"]; sys.exit(0 if any(x["id"] > 1 and x["state"] == "in sync" for x in f) else 1)' "$s" 2>/dev/null; then
            insync="$(ms_since "$t0")"
            break
        fi
        sleep 0.02
    done
    [ -n "$insync" ] || bench_warn "$name: the follower was not in sync within 60 s"
    line="$(grep -E 'follower resumed from the backlog|new backup joined' "$BENCH_WORK/primary.err" | tail -1 || true)"
    case "$line" in
    *resumed*) how="resume" ;;
    *"asked to resume"*) how="diff" ;;
    *joined*) how="fresh" ;;
    *) how="?" ;;
    esac
    case "$line" in *pre-copy*) how="$how (pre-copy)" ;; *stop-and-copy*) how="$how (stop-and-copy)" ;; esac
    bytes="$(field bytes "$line")"
    raw="$(field raw_bytes "$line")"
    have="$(field have_bytes "$line")"
    pages="$(field pages "$line")"
    full="$(field full_pages "$line")"
    pause="$(field pause_ms "$line")"
    rounds="$(field rounds "$line")"
    total="$(field total_ms "$line")"
    full_bytes=""
    [ -n "$full" ] && full_bytes=$((full * 4096))
    local_exits="$(grep -o 'checkpoint=[0-9]* epoch=[0-9]* position=[0-9]*' "$BENCH_WORK/follower.err" | head -1 |
        sed 's/checkpoint=\([0-9]*\).*position=\([0-9]*\)/\2 \1/' | awk '{ print $1 - $2 }' || true)"
    echo "$name,$down,$how,$bytes,${raw:-},${have:-0},${pages:-0},${full:-},${full_bytes},${rounds:-},${total:-},$pause,$insync,${local_exits:-0}" >>"$CSV"
    bench_log "$name: $how, $bytes bytes sent (${raw:-?} before packing; +${have:-0} of page list), ${pages:-0} of ${full:-?} pages, ${rounds:-0} running rounds, transfer ${total:-?} ms, pause $pause ms, in sync after ${insync:-?} ms"
    cp "$BENCH_WORK/primary.err" "$BENCH_WORK/primary-$name.err"
    cp "$BENCH_WORK/follower.err" "$BENCH_WORK/follower-$name.err"
    bench_stop load 2
    bench_stop primary 15
    bench_wait_exit follower 20 || bench_stop follower
}

run_phase() { # name down_s primary-extra...: phase, if PHASES names it, REPEAT times
    local run
    if [ -n "${PHASES:-}" ] && [[ " $PHASES " != *" $1 "* ]]; then return 0; fi
    for ((run = 1; run <= ${REPEAT:-1}; run++)); do phase "$@"; done
}

run_phase fresh 5
run_phase fresh-stop 5 --precopy off
run_phase resume-5s 5
run_phase diff-5s 5 --backlog-kib 1
run_phase diff-5s-stop 5 --backlog-kib 1 --precopy off
run_phase resume-long "$DOWN_LONG"
run_phase diff-long "$DOWN_LONG" --backlog-kib 1
run_phase diff-long-stop "$DOWN_LONG" --backlog-kib 1 --precopy off
LOAD=0 run_phase fresh-idle 5
LOAD=0 run_phase fresh-idle-stop 5 --precopy off
LOAD=0 run_phase resume-5s-idle 5
LOAD=0 run_phase diff-5s-idle 5 --backlog-kib 1
LOAD=0 run_phase diff-5s-idle-stop 5 --backlog-kib 1 --precopy off

if [ -n "${PHASES:-}" ]; then
    bench_topology_down
    cat "$CSV"
    exit 0
fi

# ------------------------------------------------------------------ the cost of --fsync always
FS_CSV="$BENCH_RESULTS/rejoin-fsync.csv"
echo "follower,clients,rps,p50_ms,p99_ms" >"$FS_CSV"
fsync_phase() { # label follower-extra...
    local label="$1" c r
    shift
    bench_topology_up
    rm -rf "$DATA"
    bench_vm primary "$NS_A" primary --listen "$HOST_A_IP:7000" --tap tap0 --guest-ip "$GUEST_IP/24"
    bench_wait_for primary err 'waiting for its first follower|waiting for a backup' 30
    bench_vm follower "$NS_B" backup --primary "$HOST_A_IP:7000" --tap tap0 --guest-ip "$GUEST_IP/24" "$@"
    bench_wait_for follower err 'backup paired' 30
    bench_wait_guest primary "$GUEST_IP"
    sleep 1
    for c in 1 50; do
        r="$(bench_rb "$GUEST_IP" incr "$c" 10000)"
        read -r rps _avg p50 _p95 p99 _max <<<"$r"
        echo "$label,$c,$rps,$p50,$p99" >>"$FS_CSV"
        bench_log "$label -c $c: $rps rps, p50 $p50 ms, p99 $p99 ms"
    done
    bench_stop primary 15
    bench_wait_exit follower 20 || bench_stop follower
}
fsync_phase "no --data-dir"
fsync_phase "--data-dir (fsync async)" --data-dir "$DATA"
fsync_phase "--data-dir --fsync always" --data-dir "$DATA" --fsync always
bench_topology_down

# ------------------------------------------------------------------ report
MD="$BENCH_RESULTS/rejoin.md"
python3 - "$CSV" "$FS_CSV" "$MD" "$(bench_provenance)" <<'EOF'
import csv, sys
rows = list(csv.DictReader(l for l in open(sys.argv[1]) if not l.startswith("#")))
fs = list(csv.DictReader(open(sys.argv[2])))
full = max((int(r["full_copy_bytes"]) for r in rows if r["full_copy_bytes"]), default=0)
def pct(b):
    return f"{100 * b / full:.1f} %" if full and b is not None else "-"
out = ["# Rejoining: full copy, diff, resume", "", sys.argv[4], "",
       "A follower with `--data-dir` killed (`kill -9`) under INCR load (`redis-benchmark -c 4`, running "
       "throughout) and restarted on its directory after the outage. *Full copy* is every non-zero page of "
       f"the primary, what a state transfer sent before the diff transfer: {full} bytes. *Bytes sent* are the bytes "
       "on the wire: state transfers and resumed logs go packed (zstd, `logging-channel/src/pack.rs`); "
       "*before packing* is what they carried.", "",
       "| phase | down | how | bytes sent | before packing | + page list | total / full copy | pages sent / non-zero | rounds while running | transfer | primary pause | restart to in sync |",
       "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for r in rows:
    total = int(r["bytes_sent"] or 0) + int(r["have_bytes"] or 0)
    pages = f'{r["pages_sent"]} / {r["full_pages"]}' if r["full_pages"] else "-"
    rounds = r["rounds"] or "-"
    transfer = f'{r["transfer_ms"]} ms' if r["transfer_ms"] else "-"
    out.append(f'| {r["phase"]} | {r["down_s"]} s | {r["how"]} | {r["bytes_sent"]} | {r["raw_bytes"] or "-"} | {r["have_bytes"]} | {pct(total)} | {pages} | {rounds} | {transfer} | {r["pause_ms"]} ms | {r["in_sync_ms"]} ms |')
out += ["", "Phases named `-idle` run no load (a burst of 5000 INCRs before the kill, nothing after): the pause when the cores are free.",
        "Phases named `-stop` run the primary with `--precopy off`: the VM stops for the whole copy of the pages that differ. "
        "The others copy while the VM runs (pre-copy; *rounds while running*, round 0 all of memory) and pause for the last round. "
        "A pre-copy resends pages the guest wrote meanwhile, so its pages sent can exceed the non-zero pages. *Transfer* is from the "
        "primary's answer to the end of the state.",
        "", "## What `--fsync always` costs", "", "INCR, 10000 requests (`redis-benchmark`), primary and follower on the same 2 cores, one run each.", "",
        "| follower | clients | requests/s | p50 | p99 |", "|---|---:|---:|---:|---:|"]
for r in fs:
    out.append(f'| {r["follower"]} | {r["clients"]} | {r["rps"]} | {r["p50_ms"]} ms | {r["p99_ms"]} ms |')
open(sys.argv[3], "w").write("\n".join(out) + "\n")
EOF
bench_finish "bench/rejoin.md, bench/rejoin.csv, bench/rejoin-fsync.csv (VM logs: BENCH_KEEP=1)"
