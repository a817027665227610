#!/usr/bin/env bash
# The one-command demo: a primary and a backup VM in lockstep on two "hosts"
# (network namespaces on this machine), a client INCRementing a counter on the
# guest's KV server over one TCP connection, then kill -9 of the primary's whole
# host. The backup goes live with the same state and the same connection; the
# client shows the gap and checks the counter stayed exact. Then a fresh backup
# joins the new primary and protection comes back.
#
#   sudo scripts/demo.sh [--no-rejoin] [--no-build]
#
#   --no-rejoin   stop after the failover (no new backup in host-a)
#   --no-build    use target/release/ftvmm as it is (by default `cargo build
#                 --release` runs first: a second when it is up to date)
#
# Needs root (namespaces, TAP devices), /dev/kvm and python3. Uses the
# namespaces demo-host-a, demo-host-b, demo-client and demo-lan (scripts/netns.sh
# with NETNS_PREFIX=demo-) and removes them on exit, error or Ctrl-C.
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
for arg in "$@"; do
    case "$arg" in
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

if [ -t 1 ]; then
    BOLD=$'\033[1m' RED=$'\033[1;31m' GREEN=$'\033[1;32m' DIM=$'\033[2m' OFF=$'\033[0m'
else
    BOLD='' RED='' GREEN='' DIM='' OFF=''
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
NS_A=demo-host-a NS_B=demo-host-b NS_C=demo-client
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

# start_vmm NAME NS ARGS...: runs ftvmm in NS; console -> NAME.console, logs -> NAME.log
start_vmm() {
    local name="$1" ns="$2"
    shift 2
    FTVMM_LOG=info NO_COLOR=1 ip netns exec "$ns" "$BIN" "$@" >"$LOGS/$name.console" 2>"$LOGS/$name.log" &
    disown $! # not our job to report when the host is killed
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
# pair_state: 0 paired, 1 not yet, 2 the pair split (the primary lost the backup at once)
pair_state() {
    alive "$PID_A" || die "the primary exited: $(tail -n 3 "$LOGS/host-a-primary.log")"
    if grep -q 'backup lost' "$LOGS/host-a-primary.log" || grep -q 'GOING LIVE' "$LOGS/host-b-backup.log"; then
        return 2
    fi
    alive "$PID_B" || die "the backup exited: $(tail -n 3 "$LOGS/host-b-backup.log")"
    grep -q 'kv-server: listening' "$LOGS/host-a-primary.console" && protected "$NS_A" && return 0
    return 1
}
went_live() {
    alive "$PID_B" || die "the backup exited instead of going live: $(tail -n 3 "$LOGS/host-b-backup.log")"
    grep -q 'GOING LIVE' "$LOGS/host-b-backup.log"
}
rejoin_split() { grep -q 'GOING LIVE' "$LOGS/host-a-backup2.log" || grep -q 'backup lost' "$LOGS/host-b-backup.log"; }
rejoined() {
    alive "$PID_A2" || return 2
    ! rejoin_split || return 2
    protected "$NS_B"
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

# --- 1. two hosts, a primary and a backup ------------------------------------------------
T_START="$(now)"
say "${BOLD}ftvmm demo${OFF}: a primary VM and a backup VM in lockstep on two hosts; then the primary's host dies"
"$NETNS" down >/dev/null 2>&1 || true # leftovers of an earlier run that was killed -9
"$NETNS" up >/dev/null
say "  hosts: $NS_A 10.77.0.1 (primary), $NS_B 10.77.0.2 (backup), $NS_C 10.77.0.100; guest VM $GUEST"

# Should the pair split as it forms (a backup lost before its first ack), start both again.
PAIR_RETRIES=0
ATTEMPTS=4
for ((attempt = 1; ; attempt++)); do
    T_PAIR="$(now)"
    PID_A="$(start_vmm host-a-primary "$NS_A" primary --listen 10.77.0.1:7000 "${VM_ARGS[@]}")"
    PID_B="$(start_vmm host-b-backup "$NS_B" backup --primary 10.77.0.1:7000 --listen 10.77.0.2:7000 "${VM_ARGS[@]}")"
    rc=1
    until [ "$rc" -ne 1 ]; do
        sleep 0.1
        rc=0
        pair_state || rc=$?
        [ "$(elapsed_ms "$T_PAIR")" -lt 30000 ] || die "timed out after 30 s waiting for the primary and the backup to pair (logs: $LOGS)"
    done
    if [ "$rc" -eq 0 ]; then
        # The split shows within the failover timeout of pairing: make sure it did not.
        sleep 0.4
        rc=0
        pair_state || rc=$?
        [ "$rc" -ne 0 ] || break
    fi
    [ "$attempt" -lt "$ATTEMPTS" ] || die "the pair split right after pairing $ATTEMPTS times (logs: $LOGS)"
    PAIR_RETRIES=$((PAIR_RETRIES + 1))
    say "  ${DIM}attempt $attempt: the pair split as it formed; starting both again${OFF}"
    "$NETNS" kill host-a
    "$NETNS" kill host-b
    for f in host-a-primary host-b-backup; do
        for ext in log console; do mv "$LOGS/$f.$ext" "$LOGS/$f.attempt$attempt.$ext"; done
    done
    sleep 0.2
done
say "  primary in $NS_A and backup in $NS_B paired in $(elapsed_ms "$T_PAIR") ms: ${GREEN}protected${OFF}, every output held until the backup has the log"

# --- 2. the client -------------------------------------------------------------------------------
q() { printf '%q ' "$@"; }
ip netns exec "$NS_C" python3 "$REPO/scripts/demo_client.py" \
    --server "$GUEST:6379" --control "$CTL" \
    --node "host-a=$(q ip netns exec "$NS_A" "$BIN" status "$STATUS")" \
    --node "host-b=$(q ip netns exec "$NS_B" "$BIN" status "$STATUS")" &
CLIENT_PID=$!
sleep_watching_client 5 || true

# --- 3. kill the primary's host --------------------------------------------------------------------
client_alive || die "the client stopped before the kill (see above)"
printf '\n%s*** killing host-a (primary) ***%s %s(kill -9 of every process in %s)%s\n' "$RED" "$OFF" "$DIM" "$NS_A" "$OFF"
"$NETNS" kill host-a
KILL_T="$(now)"
echo "$KILL_T" >"$CTL/kill.tmp" && mv "$CTL/kill.tmp" "$CTL/kill"
wait_until 10 "the backup to go live" went_live
# When and why the backup went live, from its own log (RFC 3339 UTC timestamps).
LIVE_TS="$(grep -m1 'GOING LIVE' "$LOGS/host-b-backup.log" | cut -d' ' -f1)"
LIVE_T="$(date -d "$LIVE_TS" +%s.%N)"
echo "$LIVE_T" >"$CTL/live.tmp" && mv "$CTL/live.tmp" "$CTL/live"
LIVE_MS="$(awk -v a="$KILL_T" -v b="$LIVE_T" 'BEGIN { printf "%.0f", (b - a) * 1000 }')"
LOST_WHY="$(sed -n 's/.*primary lost: //p' "$LOGS/host-b-backup.log" | head -n 1)"
sleep_watching_client 4 || REJOIN=0

# --- 4. a new backup joins the new primary ---------------------------------------------------------
JOIN=''
if [ "$REJOIN" -eq 1 ]; then
    printf '\n%s*** starting a fresh backup in host-a: it joins host-b, the new primary ***%s\n' "$BOLD" "$OFF"
    T_JOIN="$(now)"
    PID_A2="$(start_vmm host-a-backup2 "$NS_A" backup --primary 10.77.0.2:7000 --listen 10.77.0.1:7000 "${VM_ARGS[@]}")"
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
        PAUSE="$(sed -n 's/.*new backup joined.*pause_ms="\{0,1\}\([0-9.]*\).*/\1/p' "$LOGS/host-b-backup.log" | tail -n 1)"
        JOIN="ok"
        sleep_watching_client 3 || true
        # Still a pair at the end?
        if rejoin_split || ! protected "$NS_B"; then JOIN="split"; fi
    else
        JOIN="failed"
    fi
    if [ "$JOIN" != ok ]; then
        # Do not leave a second live copy of the guest on the LAN.
        kill -9 "$PID_A2" 2>/dev/null || true
        printf '\r\033[K%s  the new backup did not stay joined (see %s/host-a-backup2.log); stopped it%s\n' "$RED" "$LOGS" "$OFF"
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
say "  failover:    first reply ${BOLD}${R[gap_ms]:-?} ms${OFF} after kill -9 of host-a, from host-b (live ${LIVE_MS} ms after the kill; it noticed: ${LOST_WHY:-?})"
if [ "${R[connection]}" = survived ]; then
    say "  connection:  ${GREEN}survived${OFF} (no reconnect: the backup took over the guest's TCP state)"
else
    say "  connection:  ${RED}${R[connection]}${OFF}"
fi
case "$JOIN" in
ok) say "  rejoin:      new backup in host-a joined host-b in ${JOIN_MS} ms; the guest paused ${PAUSE:-?} ms for the state transfer; protected again" ;;
failed | split) say "  rejoin:      ${RED}the new backup did not stay joined${OFF} (host-a-backup2.log, host-b-backup.log)" ;;
esac
[ "$PAIR_RETRIES" -eq 0 ] || say "  note:        the pair split as it formed $PAIR_RETRIES time(s) and was started again (ftvmm's first-ack race; *.attempt*.log)"
say "  logs:        $LOGS  (host-a-primary.log, host-b-backup.log$([ -z "$JOIN" ] || echo ", host-a-backup2.log"); *.console = guest serial)"
say "  total:       $(elapsed_ms "$T_START") ms; tearing down the namespaces"

[ "$CLIENT_RC" -eq 0 ] && [ "${R[exact]}" = yes ] && [ "${R[connection]}" = survived ]
