#!/usr/bin/env bash
# The one-command demo: a primary and a backup VM in lockstep on two "hosts"
# (network namespaces on this machine), a client INCRementing a counter on the
# guest's KV server over one TCP connection, then kill -9 of the primary's whole
# host. The backup goes live with the same state and the same connection; the
# client shows the gap and checks the counter stayed exact. Then a fresh backup
# joins the new primary and protection comes back.
#
#   sudo scripts/demo.sh [--followers N] [--no-rejoin] [--no-build]
#
#   --followers N  a primary with N followers (1 to 3; default 1, a pair), in
#                  host-b, host-c, host-d, sync replication. With 2 or more
#                  every member gets a file arbiter (a directory in the logs
#                  dir): after the kill the followers race for it, the winner
#                  goes live and the others stand down (exit 7).
#   --no-rejoin    stop after the failover (no new backup in host-a)
#   --no-build     use target/release/ftvmm as it is (by default `cargo build
#                  --release` runs first: a second when it is up to date)
#
# Needs root (namespaces, TAP devices), /dev/kvm and python3. Uses the
# namespaces demo-host-a, demo-host-b (-c, -d), demo-client and demo-lan
# (scripts/netns.sh with NETNS_PREFIX=demo-) and removes them on exit, error
# or Ctrl-C.
# FTVMM_BIN_DIR overrides where the ftvmm binary is taken from (default
# target/release of this repository). VMM logs go to a directory in /tmp, named
# at the end.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/lib/find-cargo.sh
. "$REPO/scripts/lib/find-cargo.sh"

REJOIN=1
BUILD=1
FOLLOWERS=1
while [ "$#" -gt 0 ]; do
    arg="$1"
    shift
    case "$arg" in
    --followers=*) FOLLOWERS="${arg#*=}" ;;
    --followers)
        [ "$#" -gt 0 ] || { echo "demo.sh: --followers needs a number (1 to 3)" >&2; exit 2; }
        FOLLOWERS="$1"
        shift
        ;;
    --no-rejoin) REJOIN=0 ;;
    --rejoin) REJOIN=1 ;;
    --no-build) BUILD=0 ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'
        exit 0
        ;;
    *)
        echo "demo.sh: unknown option '$arg' (try --help)" >&2
        exit 2
        ;;
    esac
done
case "$FOLLOWERS" in
1 | 2 | 3) ;;
*)
    echo "demo.sh: --followers takes 1, 2 or 3 (one per host: host-b, host-c, host-d), not '$FOLLOWERS'" >&2
    exit 2
    ;;
esac

if [ -t 1 ]; then
    BOLD=$'\033[1m' RED=$'\033[1;31m' GREEN=$'\033[1;32m' DIM=$'\033[2m' OFF=$'\033[0m'
    CLR=$'\r\033[K' # over the client's status line
else
    BOLD='' RED='' GREEN='' DIM='' OFF='' CLR=''
fi
die() {
    printf '%sdemo.sh: %s%s\n' "$RED" "$*" "$OFF" >&2
    exit 1
}
say() { printf '%s\n' "$*"; }

# --- preflight ---------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "needs root (it creates network namespaces and TAP devices); run: sudo $0 $*"
[ -c /dev/kvm ] || die "/dev/kvm is missing: ftvmm runs real VMs and needs KVM (enable virtualization / load kvm_intel or kvm_amd)"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm is not usable (no read/write access)"
# Beyond a base system the demo needs only these two (and cargo, unless the binary is built).
command -v python3 >/dev/null 2>&1 || die "python3 not found: the demo's client is scripts/demo_client.py (standard library only); install it: apt-get install python3"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 7))' 2>/dev/null || die "python3 >= 3.7 needed for scripts/demo_client.py (apt-get install python3)"
command -v ip >/dev/null 2>&1 || die "'ip' not found: install it: apt-get install iproute2"

export NETNS_PREFIX=demo-
NS_A=demo-host-a NS_C=demo-client
# Followers, in the order they join: host, namespace, address (scripts/netns.sh).
F_HOST=(host-b host-c host-d)
F_IP=(10.77.0.2 10.77.0.3 10.77.0.4)
F_HOST=("${F_HOST[@]:0:FOLLOWERS}")
NETNS="$REPO/scripts/netns.sh"
GUEST=10.77.0.10
STATUS=127.0.0.1:7070
# ftvmm's default failover timeout, unless FTVMM_DEMO_FAILOVER_MS says otherwise. It does
# not slow this demo's failover: the backup sees the dead primary's connection close at once
# (the timeout is for silent failures).
VM_ARGS=(--tap tap0 --guest-ip "$GUEST/24" --status "$STATUS")
[ -n "${FTVMM_DEMO_FAILOVER_MS:-}" ] && VM_ARGS+=(--failover-timeout-ms "$FTVMM_DEMO_FAILOVER_MS")

# One demo at a time: a second one would tear down the first one's namespaces.
exec 9>/tmp/ftvmm-demo.lock
flock -n 9 || die "another scripts/demo.sh is running (lock /tmp/ftvmm-demo.lock)"

LOGS="$(mktemp -d /tmp/ftvmm-demo.XXXXXX)"
CTL="$LOGS/client"
mkdir -p "$CTL"
# A second follower needs an arbiter: without one every follower of a dead
# primary would go live. A file arbiter in a directory all the "hosts" see
# (namespaces share the filesystem), as shared storage would be between hosts.
if [ "$FOLLOWERS" -ge 2 ]; then
    mkdir -p "$LOGS/arbiter"
    VM_ARGS+=(--arbiter "file:$LOGS/arbiter")
fi

# A binary left over from an older checkout may not know the flags used here, so
# cargo is asked every time: a second when target/release is up to date.
if [ -n "${FTVMM_BIN_DIR:-}" ]; then
    BIN="$FTVMM_BIN_DIR/ftvmm"
    [ -x "$BIN" ] || die "FTVMM_BIN_DIR is set but $BIN does not exist"
else
    BIN="$REPO/target/release/ftvmm"
    if [ "$BUILD" -eq 1 ] || [ ! -x "$BIN" ]; then
        if ! find_cargo; then
            [ -x "$BIN" ] || die "$BIN is missing and ${FIND_CARGO_HELP}$0"
            say "${DIM}cargo is not on PATH: using $BIN as it is${OFF}"
        else
            if [ -x "$BIN" ]; then
                printf '%s  cargo build --release ...%s' "$DIM" "$OFF"
            else
                printf '%s  building ftvmm and its guest: cargo build --release (a first build takes minutes) ...%s' "$DIM" "$OFF"
            fi
            if ! CARGO_TARGET_DIR="$REPO/target" cargo build --release >"$LOGS/build.log" 2>&1; then
                echo
                tail -n 25 "$LOGS/build.log" >&2
                die "cargo build --release failed (full log: $LOGS/build.log)"
            fi
            if grep -q 'Compiling' "$LOGS/build.log"; then
                printf '%s done%s\n' "$DIM" "$OFF"
            elif [ -t 1 ]; then
                printf '\r\033[K' # up to date: nothing worth a line
            else
                echo " up to date"
            fi
        fi
    fi
fi

# --- teardown, whatever happens -------------------------------------------------
CLIENT_PID=''
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    [ -z "$CLIENT_PID" ] || disown "$CLIENT_PID" 2>/dev/null || true
    "$NETNS" down >/dev/null 2>&1 || true # kill -9 of everything in demo-*, then delete them
    if [ "$rc" -eq 130 ]; then
        printf '\n%sinterrupted; topology removed; VMM logs kept in %s%s\n' "$RED" "$LOGS" "$OFF" >&2
    elif [ "$rc" -ne 0 ]; then
        printf '\n%sdemo stopped (exit %d); topology removed; VMM logs kept in %s%s\n' "$RED" "$rc" "$LOGS" "$OFF" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- helpers ------------------------------------------------------------------------
if [ -n "${EPOCHREALTIME:-}" ]; then
    now() { printf '%s' "${EPOCHREALTIME/,/.}"; } # bash >= 5: no fork
else
    now() { date +%s.%N; }
fi
elapsed_ms() { # since $1 (a now)
    local t
    t="$(now)"
    awk -v a="$1" -v b="$t" 'BEGIN { printf "%.0f", (b - a) * 1000 }'
}

# start_vmm NAME NS ARGS...: runs ftvmm in NS; console -> NAME.console, logs -> NAME.log,
# and its exit status -> NAME.rc when it ends (a subshell in the root namespace waits for it,
# so a follower that stands down can be told apart from one that crashed). Prints the
# subshell's pid: alive while ftvmm runs.
start_vmm() {
    local name="$1" ns="$2"
    shift 2
    # Every host's VMM replicates over TLS with its own certificate of the demo group's CA.
    [ -d "$LOGS/certs" ] || "$BIN" certs init "$LOGS/certs" --members host-a,host-b,host-c,host-d >/dev/null
    local mode="$1"
    shift
    set -- "$mode" --tls-dir "$LOGS/certs/${ns#demo-}" "$@"
    (
        rc=0
        FTVMM_LOG=info NO_COLOR=1 ip netns exec "$ns" "$BIN" "$@" >"$LOGS/$name.console" 2>"$LOGS/$name.log" || rc=$?
        echo "$rc" >"$LOGS/$name.rc"
    ) </dev/null >/dev/null 2>&1 & # not holding our $(...) open, nor saying "Killed" at the kill
    disown $!                       # not our job to report when the host is killed
    echo $!
}

status_of() { ip netns exec "$1" "$BIN" status "$STATUS" 2>/dev/null || true; }

# wait_until SECONDS WHAT CHECK...: polls CHECK until it succeeds; dies after SECONDS.
wait_until() {
    local secs="$1" what="$2" t0
    shift 2
    t0="$(now)"
    until "$@"; do
        if [ "$(elapsed_ms "$t0")" -gt $((secs * 1000)) ]; then
            die "timed out after ${secs}s waiting for $what (logs: $LOGS)"
        fi
        sleep 0.1
    done
}

alive() { kill -0 "$1" 2>/dev/null; }
protected() { [[ "$(status_of "$1")" == *'"protected":true'* ]]; }
flog() { echo "$LOGS/${F_HOST[$1]}-backup.log"; } # follower i's VMM log
# in_sync_count: how many followers the primary (host-a) lists as "in sync".
in_sync_count() {
    status_of "$NS_A" | python3 -c 'import json,sys
try: print(sum(f.get("state") == "in sync" for f in json.load(sys.stdin).get("followers", [])))
except ValueError: print(0)'
}
# group_state: 0 all followers in sync, 1 not yet, 2 the group split as it formed (the primary
# dropped a follower, or a follower went live)
group_state() {
    local i
    alive "$PID_A" || die "the primary exited: $(tail -n 3 "$LOGS/host-a-primary.log")"
    grep -qE 'backup lost|UNPROTECTED' "$LOGS/host-a-primary.log" && return 2
    for i in "${!F_HOST[@]}"; do
        [ -n "${PID_F[i]:-}" ] || continue
        grep -q 'GOING LIVE' "$(flog "$i")" && return 2
        alive "${PID_F[i]}" || die "the follower in ${F_HOST[i]} exited: $(tail -n 3 "$(flog "$i")")"
    done
    grep -q 'kv-server: listening' "$LOGS/host-a-primary.console" && protected "$NS_A" &&
        [ "$(in_sync_count)" -ge "${#PID_F[@]}" ] && return 0
    return 1
}
# wait_group_state SECONDS: group_state until it is not 1; sets GS.
wait_group_state() {
    local t0
    t0="$(now)"
    GS=1
    until [ "$GS" -ne 1 ]; do
        sleep 0.1
        GS=0
        group_state || GS=$?
        [ "$(elapsed_ms "$t0")" -lt $(($1 * 1000)) ] || die "timed out after $1 s waiting for the group to form (logs: $LOGS)"
    done
}
# went_live: WINNER = index of the follower that went live. Dies if every follower exited.
went_live() {
    local i any=0
    for i in "${!F_HOST[@]}"; do
        if grep -q 'GOING LIVE' "$(flog "$i")"; then
            WINNER="$i"
            return 0
        fi
        alive "${PID_F[i]}" && any=1
    done
    [ "$any" -eq 1 ] || die "every follower exited and none went live: $(for i in "${!F_HOST[@]}"; do tail -n 2 "$(flog "$i")"; done)"
    return 1
}
# losers_done: every follower but the winner has exited.
losers_done() {
    local i
    for i in "${!F_HOST[@]}"; do
        [ "$i" = "$WINNER" ] || [ -f "$LOGS/${F_HOST[i]}-backup.rc" ] || return 1
    done
}
rejoin_split() { grep -q 'GOING LIVE' "$LOGS/host-a-backup2.log" || grep -qE 'backup lost|UNPROTECTED' "$(flog "$WINNER")"; }
rejoined() {
    alive "$PID_A2" || return 2
    ! rejoin_split || return 2
    protected "$NS_W"
}
client_alive() { alive "$CLIENT_PID"; }

# sleep_watching_client SECONDS: returns early (1) if the client has stopped.
sleep_watching_client() {
    local t0
    t0="$(now)"
    while [ "$(elapsed_ms "$t0")" -lt $(($1 * 1000)) ]; do
        client_alive || return 1
        sleep 0.1
    done
}

# --- 1. the hosts, a primary and its followers --------------------------------------------------
T_START="$(now)"
if [ "$FOLLOWERS" -eq 1 ]; then
    say "${BOLD}ftvmm demo${OFF}: a primary VM and a backup VM in lockstep on two hosts; then the primary's host dies"
else
    say "${BOLD}ftvmm demo${OFF}: a primary VM and $FOLLOWERS followers in lockstep on $((FOLLOWERS + 1)) hosts; then the primary's host dies"
fi
"$NETNS" down >/dev/null 2>&1 || true # leftovers of an earlier run that was killed -9
"$NETNS" up >/dev/null
HOSTS_LINE="$NS_A 10.77.0.1 (primary)"
for i in "${!F_HOST[@]}"; do
    HOSTS_LINE+=", demo-${F_HOST[i]} ${F_IP[i]} ($([ "$FOLLOWERS" -eq 1 ] && echo backup || echo "follower $((i + 1))"))"
done
say "  hosts: $HOSTS_LINE, $NS_C 10.77.0.100; guest VM $GUEST"
[ "$FOLLOWERS" -eq 1 ] || say "  replication: sync (output waits for every follower); arbiter: file:$LOGS/arbiter"

# Should the group split as it forms (a follower lost before its first ack), start it again.
PAIR_RETRIES=0
ATTEMPTS=4
for ((attempt = 1; ; attempt++)); do
    T_PAIR="$(now)"
    PID_F=()
    PID_A="$(start_vmm host-a-primary "$NS_A" primary --listen 10.77.0.1:7000 "${VM_ARGS[@]}")"
    # Followers join one after another, each once the previous one is in sync (a group
    # takes its followers in turn; each join is a state transfer of the running VM).
    for i in "${!F_HOST[@]}"; do
        PID_F[i]="$(start_vmm "${F_HOST[i]}-backup" "demo-${F_HOST[i]}" backup --primary 10.77.0.1:7000 --listen "${F_IP[i]}:7000" "${VM_ARGS[@]}")"
        wait_group_state 30
        [ "$GS" -eq 0 ] || break
    done
    if [ "$GS" -eq 0 ]; then
        # The split shows within the failover timeout of pairing: make sure it did not.
        sleep 0.4
        GS=0
        group_state || GS=$?
        [ "$GS" -ne 0 ] || break
    fi
    [ "$attempt" -lt "$ATTEMPTS" ] || die "the group split right after forming $ATTEMPTS times (logs: $LOGS)"
    PAIR_RETRIES=$((PAIR_RETRIES + 1))
    say "  ${DIM}attempt $attempt: the group split as it formed; starting it again${OFF}"
    "$NETNS" kill host-a
    for h in "${F_HOST[@]}"; do "$NETNS" kill "$h"; done
    sleep 0.2
    for f in host-a-primary "${F_HOST[@]/%/-backup}"; do
        for ext in log console rc; do [ ! -e "$LOGS/$f.$ext" ] || mv "$LOGS/$f.$ext" "$LOGS/$f.attempt$attempt.$ext"; done
    done
    # Old claims would not block the next primary (every start is a new group); a fresh
    # arbiter per attempt only keeps what `ftvmm arbiter list` shows about this one.
    [ "$FOLLOWERS" -eq 1 ] || { rm -rf "$LOGS/arbiter"; mkdir -p "$LOGS/arbiter"; }
done
if [ "$FOLLOWERS" -eq 1 ]; then
    say "  primary in $NS_A and backup in demo-host-b paired in $(elapsed_ms "$T_PAIR") ms: ${GREEN}protected${OFF}, every output held until the backup has the log"
else
    say "  primary in $NS_A and $FOLLOWERS followers (${F_HOST[*]}) in sync after $(elapsed_ms "$T_PAIR") ms: ${GREEN}protected${OFF}, every output held until every follower has the log"
fi

# --- 2. the client -------------------------------------------------------------------------------
q() { printf '%q ' "$@"; }
NODES=(--node "host-a=$(q ip netns exec "$NS_A" "$BIN" status "$STATUS")")
for h in "${F_HOST[@]}"; do NODES+=(--node "$h=$(q ip netns exec "demo-$h" "$BIN" status "$STATUS")"); done
ip netns exec "$NS_C" python3 "$REPO/scripts/demo_client.py" \
    --server "$GUEST:6379" --control "$CTL" "${NODES[@]}" &
CLIENT_PID=$!
sleep_watching_client 5 || true

# --- 3. kill the primary's host --------------------------------------------------------------------
client_alive || die "the client stopped before the kill (see above)"
printf '\n%s*** killing host-a (primary) ***%s %s(kill -9 of every process in %s)%s\n' "$RED" "$OFF" "$DIM" "$NS_A" "$OFF"
"$NETNS" kill host-a
KILL_T="$(now)"
echo "$KILL_T" >"$CTL/kill.tmp" && mv "$CTL/kill.tmp" "$CTL/kill"
WINNER=''
wait_until 10 "a follower to go live" went_live
W_HOST="${F_HOST[WINNER]}" W_IP="${F_IP[WINNER]}" NS_W="demo-${F_HOST[WINNER]}"
W_LOG="$(flog "$WINNER")"
# When and why the follower went live, from its own log (RFC 3339 UTC timestamps).
LIVE_TS="$(grep -m1 'GOING LIVE' "$W_LOG" | cut -d' ' -f1)"
LIVE_T="$(date -d "$LIVE_TS" +%s.%N)"
echo "$LIVE_T" >"$CTL/live.tmp" && mv "$CTL/live.tmp" "$CTL/live"
LIVE_MS="$(awk -v a="$KILL_T" -v b="$LIVE_T" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"
LOST_WHY="$(sed -n 's/.*primary lost: //p' "$W_LOG" | head -n 1)"
# The others lost the race for the arbiter: they must stand down (exit 7), not go live.
STOOD=''
if [ "$FOLLOWERS" -ge 2 ]; then
    wait_until 10 "the other followers to stand down" losers_done
    STOOD_OK=1
    for i in "${!F_HOST[@]}"; do
        [ "$i" = "$WINNER" ] && continue
        rc="$(cat "$LOGS/${F_HOST[i]}-backup.rc")"
        STOOD+="${STOOD:+, }${F_HOST[i]} exit $rc"
        [ "$rc" = 7 ] || STOOD_OK=0
        ! grep -q 'GOING LIVE' "$(flog "$i")" || STOOD_OK=0
    done
    if [ "$STOOD_OK" -eq 1 ]; then
        printf '%s  %s%s went live; the others stood down: %s (7 = stood down, lost the arbiter)%s\n' "$CLR" "$GREEN" "$W_HOST" "$STOOD" "$OFF"
    else
        printf '%s  %s%s went live, but not every other follower stood down: %s%s\n' "$CLR" "$RED" "$W_HOST" "$STOOD" "$OFF"
    fi
fi
sleep_watching_client 4 || REJOIN=0

# --- 4. a new backup joins the new primary ---------------------------------------------------------
JOIN=''
if [ "$REJOIN" -eq 1 ]; then
    printf '\n%s*** starting a fresh backup in host-a: it joins %s, the new primary ***%s\n' "$BOLD" "$W_HOST" "$OFF"
    T_JOIN="$(now)"
    PID_A2="$(start_vmm host-a-backup2 "$NS_A" backup --primary "$W_IP:7000" --listen 10.77.0.1:7000 "${VM_ARGS[@]}")"
    t0="$(now)"
    while true; do
        rc=0
        rejoined || rc=$?
        [ "$rc" -eq 1 ] || break # 0 joined, 2 failed
        client_alive || break
        [ "$(elapsed_ms "$t0")" -lt 15000 ] || break
        sleep 0.1
    done
    if [ "$rc" -eq 0 ]; then
        JOIN_MS="$(elapsed_ms "$T_JOIN")"
        PAUSE="$(sed -n 's/.*new backup joined.*pause_ms="\{0,1\}\([0-9.]*\).*/\1/p' "$W_LOG" | tail -n 1)"
        JOIN="ok"
        sleep_watching_client 3 || true
        # Still a pair at the end?
        if rejoin_split || ! protected "$NS_W"; then JOIN="split"; fi
    else
        JOIN="failed"
    fi
    if [ "$JOIN" != ok ]; then
        # Do not leave a second live copy of the guest on the LAN.
        kill -9 "$PID_A2" 2>/dev/null || true
        "$NETNS" kill host-a
        printf '%s%s  the new backup did not stay joined (see %s/host-a-backup2.log); stopped it%s\n' "$CLR" "$RED" "$LOGS" "$OFF"
        sleep_watching_client 1 || true
    fi
fi

# --- 5. stop the client, summary --------------------------------------------------------------------
touch "$CTL/stop"
CLIENT_RC=0
wait "$CLIENT_PID" || CLIENT_RC=$?
CLIENT_PID=''
[ -f "$CTL/result" ] || die "the client left no result (exit $CLIENT_RC)"
declare -A R
while IFS='=' read -r k v; do R[$k]="$v"; done <"$CTL/result"

say ""
say "${BOLD}summary${OFF}"
say "  requests:    ${R[acked]} INCRs acknowledged, all on ONE TCP connection (${R[local]} -> $GUEST:6379)"
if [ "${R[exact]}" = yes ]; then
    say "  counter:     ${GREEN}${R[final]} = requests acknowledged (exact: every reply was the previous + 1, nothing lost, no reset)${OFF}"
else
    say "  counter:     ${RED}NOT EXACT: final value '${R[final]}', ${R[acked]} acknowledged ${R[error]}${OFF}"
fi
say "  failover:    first reply ${BOLD}${R[gap_ms]:-?} ms${OFF} after kill -9 of host-a, from $W_HOST (live ${LIVE_MS} ms after the kill; it noticed: ${LOST_WHY:-?})"
if [ "$FOLLOWERS" -ge 2 ]; then
    if [ "$STOOD_OK" -eq 1 ]; then
        say "  election:    $W_HOST won the arbiter (file:$LOGS/arbiter) and went live; ${GREEN}the others stood down${OFF}: $STOOD"
    else
        say "  election:    $W_HOST went live; ${RED}the others did not all stand down${OFF}: $STOOD"
    fi
fi
if [ "${R[connection]}" = survived ]; then
    say "  connection:  ${GREEN}survived${OFF} (no reconnect: the new primary took over the guest's TCP state)"
else
    say "  connection:  ${RED}${R[connection]}${OFF}"
fi
case "$JOIN" in
ok) say "  rejoin:      new backup in host-a joined $W_HOST in ${JOIN_MS} ms; the guest paused ${PAUSE:-?} ms for the state transfer; protected again" ;;
failed | split) say "  rejoin:      ${RED}the new backup did not stay joined${OFF} (host-a-backup2.log, $W_HOST-backup.log)" ;;
esac
[ "$PAIR_RETRIES" -eq 0 ] || say "  note:        the group split as it formed $PAIR_RETRIES time(s) and was started again (a first-ack race; *.attempt*.log)"
F_LOGS="${F_HOST[*]/%/-backup.log}"
say "  logs:        $LOGS  (host-a-primary.log, ${F_LOGS// /, }$([ -z "$JOIN" ] || echo ", host-a-backup2.log"); *.console = guest serial)"
say "  total:       $(elapsed_ms "$T_START") ms; tearing down the namespaces"

[ "$CLIENT_RC" -eq 0 ] && [ "${R[exact]}" = yes ] && [ "${R[connection]}" = survived ] && { [ "$FOLLOWERS" -eq 1 ] || [ "$STOOD_OK" -eq 1 ]; }
