#!/usr/bin/env bash
# Failover gap seen by a client, over KILLS kills: each cycle boots a primary (host-a) and a backup
# (host-b) in a fresh topology, starts a client in the client namespace that INCRs in a loop on one
# connection timestamping every reply, and ~1 s in (plus up to 0.2 s of jitter, so the kill lands
# anywhere in a request) kill -9s everything in host-a. Gap = kill -> the client's first reply after
# it: here, to the first reply to a request sent after the kill (a reply to an earlier request can
# still arrive from the primary just after the kill; that one is reported too). The counter must be exact: the first value after the failover = the last before + 1, on the
# same connection, and every value = the one before + 1.
#
#   usage: scripts/bench-failover.sh [KILLS]     (default 20)
#   env:   FAILOVER_TIMEOUT_MS, HEARTBEAT_MS     passed to both VMMs if set (else their defaults)
#          MIRROR=0|1|both   mirrored input (docs/client-gap.md): 1 turns the switch's port mirror on
#                    (netns.sh mirror on) and starts the backup with --mirrored-input; both runs
#                    each kill twice, without and with it, alternating (default 0)
#          HANG=1    SIGSTOP instead of SIGKILL: host-a hangs (no FIN, no RST, as a host that lost
#                    power), so the backup goes live only after the failover timeout and the
#                    client has backed off its retransmission timer; writes bench/failover-hang.*
#
# Also split each gap into kill -> the backup's "GOING LIVE" log line (wall clocks of the same
# machine) and the rest, and reads the client socket's TCP_INFO: retransmissions during the
# failover and the RTO before the kill, to show what dominates. Kill -> GOING LIVE is split
# further: kill -> every thread of host-a's processes has exited (the client polls /proc; the
# last threads still alive and their kernel stacks are logged), kill -> the backup's
# "primary lost", and its "go-live steps" line: exits received but not replayed at the loss,
# and the replay of those. BENCH_KEEP=1 keeps every kill's VM logs.
# Writes bench/failover.md, bench/failover.csv and bench/failover.png (scripts/bench-plot.py).
set -euo pipefail
# shellcheck source=lib/bench-common.sh
source "$(dirname "$0")/lib/bench-common.sh"
bench_init bench-failover.sh "$@"

KILLS="${1:-20}"
[[ "$KILLS" =~ ^[0-9]+$ ]] && [ "$KILLS" -gt 0 ] || bench_die "KILLS must be a positive number (got '$KILLS')"
EXTRA=()
[ -n "${FAILOVER_TIMEOUT_MS:-}" ] && EXTRA+=(--failover-timeout-ms "$FAILOVER_TIMEOUT_MS")
[ -n "${HEARTBEAT_MS:-}" ] && EXTRA+=(--heartbeat-ms "$HEARTBEAT_MS")
bench_need_redis_tools

NAME=failover SIGNAL=KILL TITLE=""
case "${MIRROR:-0}" in
0) MODES=(off) ;;
1) MODES=(on) ;;
both) MODES=(off on) ;;
*) bench_die "MIRROR must be 0, 1 or both (got '${MIRROR}')" ;;
esac
if [ "${HANG:-0}" = 1 ]; then
    NAME=failover-hang SIGNAL=STOP TITLE=" (host-a hangs: SIGSTOP, not SIGKILL)"
fi
CSV="$BENCH_RESULTS/$NAME.csv"
{
    echo "# command: $BENCH_CMDLINE${EXTRA[*]:+ (vmm flags: ${EXTRA[*]})}"
    echo "# date: $(date -u '+%Y-%m-%dT%H:%M:%SZ') nproc: $(nproc)"
    echo "kill,mirror,ok,gap_ms,first_reply_ms,stall_ms,golive_ms,inflight_wait_ms,client_retrans,rto_us_before,last_before,first_after,exact,prekill_p50_us,postkill_p50_us,resent,error,lost_ms,behind,replay_ms,exit_ms"
} >"$CSV"

# Unix time of the first log line of FILE matching REGEX (tracing's RFC 3339 UTC timestamps).
log_time() { # file regex
    local line
    line="$(grep -m1 -E "$2" "$1" || true)"
    [ -n "$line" ] || return 0
    python3 -c 'import sys,datetime; print(datetime.datetime.fromisoformat(sys.argv[1].replace("Z","+00:00")).timestamp())' "${line%% *}"
}

for ((k = 1; k <= KILLS; k++)); do
  for mode in "${MODES[@]}"; do
    bench_topology_up
    PAIR_PRIMARY_ARGS=("${EXTRA[@]}")
    PAIR_BACKUP_ARGS=("${EXTRA[@]}")
    if [ "$mode" = on ]; then
        "$BENCH_REPO/scripts/netns.sh" mirror on
        PAIR_BACKUP_ARGS+=(--mirrored-input)
    fi
    BENCH_SETTLE_S=0.5 bench_start_pair "$HOST_A_IP:7000"

    js="$(ip netns exec "$NS_C" timeout 60 python3 "$BENCH_LIB/benchtools.py" failover "$GUEST_IP:6379" \
        --kill-ns "$NS_A" --kill-after 1 --jitter 0.2 --after 20 --timeout 15 --signal "$SIGNAL" || true)"
    # A hung host-a is killed now that the client has its numbers.
    [ "$SIGNAL" = STOP ] && { ip netns pids "$NS_A" | xargs -r kill -9 2>/dev/null || true; }
    bench_stop primary 1 # killed by the client (or just above): just reap it
    bench_poll "$BENCH_WORK/backup.err" 'GOING LIVE' 10 || true
    sleep 0.2
    f() { bench_json "$js" "$1"; }
    golive=""
    t_live="$(log_time "$BENCH_WORK/backup.err" 'GOING LIVE')"
    if [ -n "$t_live" ] && [ -n "$(f kill_wall)" ]; then
        golive=$(awk -v a="$t_live" -v b="$(f kill_wall)" 'BEGIN { printf "%.1f", (a - b) * 1000 }')
    fi
    resent="$(grep -o 'resent=[0-9]*' "$BENCH_WORK/backup.err" | head -1 | cut -d= -f2 || true)"
    # Where the time to GOING LIVE went: kill -> log-rx finds the primary gone ("primary lost"),
    # the exits it had received but not replayed then, and the replay of those ("go-live steps").
    lost=""
    t_lost="$(log_time "$BENCH_WORK/backup.err" 'primary lost')"
    if [ -n "$t_lost" ] && [ -n "$(f kill_wall)" ]; then
        lost=$(awk -v a="$t_lost" -v b="$(f kill_wall)" 'BEGIN { printf "%.1f", (a - b) * 1000 }')
    fi
    steps="$(grep -m1 'go-live steps' "$BENCH_WORK/backup.err" || true)"
    behind="$(grep -o 'behind=[0-9]*' <<<"$steps" | head -1 | cut -d= -f2 || true)"
    replay="$(grep -o 'replay_ms=[0-9.]*' <<<"$steps" | head -1 | cut -d= -f2 || true)"
    [ -n "$replay" ] && replay=$(awk -v r="$replay" 'BEGIN { printf "%.1f", r }')
    ok=no
    [ "$(f ok)" = True ] && [ -n "$(f gap_ms)" ] && ok=yes
    # A backup that went live before the kill measured nothing (the pair had come apart).
    if [ -n "$golive" ] && awk -v g="$golive" 'BEGIN { exit !(g < 0) }'; then
        ok=no
        js="$(python3 -c 'import json,sys; j=json.loads(sys.argv[1]); j["error"]="the backup went live before the kill"; print(json.dumps(j))' "$js")"
    fi
    exact=no
    [ "$(f exact)" = True ] && exact=yes
    err="$(f error | tr ',' ';')"
    echo "$k,$mode,$ok,$(f gap_ms),$(f first_reply_ms),$(f stall_ms),$golive,$(f inflight_wait_ms),$(f client_retrans),$(f rto_us_before),$(f last_before),$(f first_after),$exact,$(f prekill_p50_us),$(f postkill_p50_us),$resent,$err,$lost,$behind,$replay,$(f exit_ms)" >>"$CSV"
    [ -n "$(f fds)" ] && bench_log "  host-a's open files at the kill: $(f fds)"
    [ -n "$(f exit_last)" ] && bench_log "  the last threads of host-a still alive: $(f exit_last)"
    bench_log "kill $k/$KILLS (mirror $mode): ok=$ok gap $(f gap_ms) ms (kill -> GOING LIVE ${golive:-?} ms; kill -> host-a's processes exited $(f exit_ms) ms -> primary lost ${lost:-?} ms, then ${behind:-?} exits to replay in ${replay:-?} ms), client retransmissions $(f client_retrans), value ${js:+$(f last_before) -> $(f first_after)}${err:+ error: $err}"
    if [ "$ok" != yes ] || [ "${BENCH_KEEP:-0}" = 1 ]; then
        [ "$ok" = yes ] || bench_warn "kill $k failed the check: $js"
        for n in primary backup; do cp "$BENCH_WORK/$n.err" "$BENCH_WORK/$n-kill$k-$mode.err" 2>/dev/null || true; done
    fi
    injected="$(grep -o 'injected=[0-9]*' "$BENCH_WORK/backup.err" | head -1 | cut -d= -f2 || true)"
    [ "$mode" = on ] && bench_log "  mirrored frames injected at go-live: ${injected:-?}"
    bench_stop backup 5
  done
done
bench_topology_down

# ------------------------------------------------------------------ report
MD="$BENCH_RESULTS/$NAME.md"
python3 - "$CSV" "$KILLS" >"$MD.body" <<'EOF'
import csv, sys
allrows = list(csv.DictReader(l for l in open(sys.argv[1]) if not l.startswith("#")))
kills = int(sys.argv[2])
def num(r, k):
    try:
        return float(r[k])
    except (TypeError, ValueError):
        return None
def stats(v):
    v = sorted(x for x in v if x is not None)
    if not v:
        return "-", "-", "-"
    n = len(v)
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return f"{v[0]:.1f}", f"{med:.1f}", f"{v[-1]:.1f}"
def summary(rows, label):
    if label:
        print(f"### {label}")
        print()
    ok = [r for r in rows if r["ok"] == "yes"]
    gaps = [num(r, "gap_ms") for r in rows]
    print(f"{len(ok)} of {len(rows)} kills passed (reply after the failover on the same connection, counter exact).")
    print()
    print("| | min | median | max |")
    print("|---|---:|---:|---:|")
    print("| **gap: kill -> reply to the first request sent after it (ms)** | %s | %s | %s |" % stats(gaps))
    print("| kill -> first reply of any request (ms) | %s | %s | %s |" % stats(num(r, "first_reply_ms") for r in rows))
    print("| longest silence between two replies (ms) | %s | %s | %s |" % stats(num(r, "stall_ms") for r in rows))
    print("| kill -> backup logs GOING LIVE (ms) | %s | %s | %s |" % stats(num(r, "golive_ms") for r in rows))
    print("| kill -> every process in host-a exited (ms) | %s | %s | %s |" % stats(num(r, "exit_ms") for r in rows))
    print("| kill -> backup logs primary lost (ms) | %s | %s | %s |" % stats(num(r, "lost_ms") for r in rows))
    print("| exits received but not replayed at the loss | %s | %s | %s |" % tuple(x.replace(".0", "") for x in stats(num(r, "behind") for r in rows)))
    print("| primary lost -> replay caught up (ms) | %s | %s | %s |" % stats(num(r, "replay_ms") for r in rows))
    print("| GOING LIVE -> first reply (ms) | %s | %s | %s |" % stats(
        (num(r, "gap_ms") - num(r, "golive_ms")) if num(r, "gap_ms") is not None and num(r, "golive_ms") is not None else None for r in rows))
    print("| client's RTO before the kill (ms) | %s | %s | %s |" % stats((num(r, "rto_us_before") or 0) / 1000 if num(r, "rto_us_before") is not None else None for r in rows))
    med = stats(gaps)[1]
    if med != "-":
        print()
        mx = stats(gaps)[2]
        print(f"Target (issue 14) median gap <= 50 ms: **{'met' if float(med) <= 50 else 'missed'}** (median {med} ms); "
              f"max <= 100 ms: **{'met' if float(mx) <= 100 else 'missed'}** (max {mx} ms).")
    rt = [r for r in rows if (num(r, "client_retrans") or 0) > 0]
    nrt = [r for r in rows if num(r, "client_retrans") == 0]
    print()
    print("By whether the client's TCP had to retransmit during the failover:")
    print()
    print("| client retransmitted | kills | gap min | median | max (ms) |")
    print("|---|---:|---:|---:|---:|")
    for name, sub in (("yes", rt), ("no", nrt)):
        print(f"| {name} | {len(sub)} | %s | %s | %s |" % stats(num(r, "gap_ms") for r in sub))

modes = sorted({r["mirror"] for r in allrows}, key=lambda m: m != "off")
for m in modes:
    label = "" if len(modes) == 1 else ("without mirrored input (as before)" if m == "off" else "with mirrored input (netns.sh mirror on, backup --mirrored-input)")
    summary([r for r in allrows if r["mirror"] == m], label)
    print()
if len(modes) == 2:
    def med(m):
        v = sorted(float(r["gap_ms"]) for r in allrows if r["mirror"] == m and r["gap_ms"])
        return v[len(v) // 2] if len(v) % 2 else (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    print(f"Median gap without / with mirrored input, same run: {med('off'):.1f} / {med('on'):.1f} ms.")
    print()
rows = allrows
print()
print("## Per kill")
print()
print("| kill | mirror | ok | gap ms | first reply ms | longest silence ms | kill->GOING LIVE ms | kill->primary lost ms | exits behind | lost->caught up ms | in-flight request waited ms | client retrans | RTO before ms | value before -> after | outputs re-sent | error |")
print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|")
for r in rows:
    rto = num(r, "rto_us_before")
    print(f"| {r['kill']} | {r['mirror']} | {r['ok']} | {r['gap_ms']} | {r['first_reply_ms']} | {r['stall_ms']} | {r['golive_ms']} | {r.get('lost_ms') or ''} | {r.get('behind') or ''} | {r.get('replay_ms') or ''} | {r['inflight_wait_ms']} | {r['client_retrans']} | {'' if rto is None else rto / 1000:} | {r['last_before']} -> {r['first_after']} | {r['resent']} | {r['error']} |")
EOF
{
    echo "# Failover gap seen by a client$TITLE"
    echo
    bench_provenance
    echo "- per kill: fresh topology, \`ftvmm primary\` in host-a + \`ftvmm backup\` in host-b${EXTRA[*]:+ (${EXTRA[*]})}; mirrored input: ${MODES[*]}${MIRROR:+ (MIRROR=$MIRROR)}; a python3 client in the client namespace INCRs in a loop on one connection; after 1 s + U(0, 0.2 s) every process in host-a gets SIG$SIGNAL"
    echo "- gap = kill -> the reply to the client's first request sent after the kill (service restored); also shown: kill -> first reply of any request (may be the dying primary's last), and the longest silence between replies; GOING LIVE from the backup's log timestamp (same machine clock); retransmissions and RTO from the client socket's TCP_INFO"
    if [ "$BENCH_PAIR_RETRIES" -gt 0 ]; then
        echo "- pairs that came apart right after boot (before any kill) and were restarted: $BENCH_PAIR_RETRIES"
    fi
    echo
    cat "$MD.body"
} >"$MD"
rm -f "$MD.body"

bench_finish "bench/$NAME.md, bench/$NAME.csv"
