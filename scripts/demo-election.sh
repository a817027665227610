#!/usr/bin/env bash
# The election demo: a three-member replica group (`ftvmm replica`) on three "hosts"
# (network namespaces on this machine), a client INCRementing a counter over one TCP
# connection, and the primary's host killed twice in a row. Each time the two
# survivors elect the most up-to-date one, which goes live with the same state and
# connection; the killed member is started again with the same command and comes
# back as a follower. At the end the counter must be exact on the one connection.
#
#   sudo scripts/demo-election.sh [--kills N] [--no-build]
#
#   --kills N    how many primaries to kill (default 2)
#   --no-build   use target/release/ftvmm as it is
#
# Needs root, /dev/kvm and python3. Uses the namespaces demo-host-a/-b/-c, demo-client
# and demo-lan (scripts/netns.sh with NETNS_PREFIX=demo-) and removes them on exit.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/lib/find-cargo.sh
. "$REPO/scripts/lib/find-cargo.sh"

KILLS=2
BUILD=1
while [ "$#" -gt 0 ]; do
    case "$1" in
    --kills) KILLS="${2:-}"; shift 2 ;;
    --kills=*) KILLS="${1#*=}"; shift ;;
    --no-build) BUILD=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -n 's/^# \{0,1\}//p'; exit 0 ;;
    *) echo "demo-election.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
    esac
done
[[ "$KILLS" =~ ^[1-9][0-9]*$ ]] || { echo "demo-election.sh: --kills takes a positive number" >&2; exit 2; }

if [ -t 1 ]; then
    BOLD=$'\033[1m' RED=$'\033[1;31m' GREEN=$'\033[1;32m' DIM=$'\033[2m' OFF=$'\033[0m' CLR=$'\r\033[K'
else
    BOLD='' RED='' GREEN='' DIM='' OFF='' CLR=''
fi
die() { printf '%sdemo-election.sh: %s%s\n' "$RED" "$*" "$OFF" >&2; exit 1; }
say() { printf '%s%s\n' "$CLR" "$*"; }

[ "$(id -u)" -eq 0 ] || die "needs root (namespaces, TAP devices); run: sudo $0"
[ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm is missing or not usable: ftvmm runs real VMs"
command -v python3 >/dev/null 2>&1 || die "python3 not found (apt-get install python3)"
command -v ip >/dev/null 2>&1 || die "'ip' not found (apt-get install iproute2)"

export NETNS_PREFIX=demo-
NETNS="$REPO/scripts/netns.sh"
HOSTS=(host-a host-b host-c)
GUEST=10.77.0.10
STATUS=127.0.0.1:7070
GROUP="1=10.77.0.1:7200,2=10.77.0.2:7200,3=10.77.0.3:7200"
exec 9>/tmp/ftvmm-demo.lock
flock -n 9 || die "another demo is running (lock /tmp/ftvmm-demo.lock)"
LOGS="$(mktemp -d /tmp/ftvmm-demo-election.XXXXXX)"
CTL="$LOGS/client"
mkdir -p "$CTL"

BIN="$REPO/target/release/ftvmm"
if [ "$BUILD" -eq 1 ] || [ ! -x "$BIN" ]; then
    find_cargo || die "${FIND_CARGO_HELP}$0"
    printf '%s  cargo build --release ...%s' "$DIM" "$OFF"
    CARGO_TARGET_DIR="$REPO/target" cargo build --release >"$LOGS/build.log" 2>&1 || die "cargo build --release failed ($LOGS/build.log)"
    say ""
fi

declare -A PIDS
CLIENT_PID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    [ -n "$CLIENT_PID" ] && kill "$CLIENT_PID" 2>/dev/null
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
    "$NETNS" down >/dev/null 2>&1
    say "${DIM}logs: $LOGS${OFF}"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
ms_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
GEN=0
start_member() { # index
    local i="$1"
    GEN=$((GEN + 1))
    # Each member votes and replicates over TLS with its own certificate of the group's CA.
    [ -d "$LOGS/certs" ] || "$BIN" certs init "$LOGS/certs" --members "$(IFS=,; echo "${HOSTS[*]}")" >/dev/null
    FTVMM_LOG=info NO_COLOR=1 ip netns exec "demo-${HOSTS[i]}" "$BIN" replica --id $((i + 1)) --group "$GROUP" \
        --tls-dir "$LOGS/certs/${HOSTS[i]}" \
        --data-dir "$LOGS/data-$((i + 1))" --tap tap0 --guest-ip "$GUEST/24" --status "$STATUS" \
        >"$LOGS/m$((i + 1)).console" 2>>"$LOGS/m$((i + 1)).log" &
    PIDS[$i]=$!
    disown "${PIDS[$i]}" # killed on purpose: no "Killed" job notice
}
role() { # index: what member i says it is
    local js
    js="$(ip netns exec "demo-${HOSTS[$1]}" "$BIN" status "$STATUS" 2>/dev/null || true)"
    [[ "$js" =~ \"member_role\":\"([a-z]+)\" ]] && echo "${BASH_REMATCH[1]}" || echo down
}
primary() { # [exclude]
    local i
    for i in 0 1 2; do
        [ "$i" = "${1:--1}" ] && continue
        [ "$(role "$i")" = primary ] && { echo "$i"; return 0; }
    done
    return 0
}
wait_for() { # secs what cmd...
    local secs="$1" what="$2" t0
    shift 2
    t0="$(now)"
    until "$@"; do
        [ "$(ms_since "$t0")" -lt $((secs * 1000)) ] || die "timed out waiting for $what (logs: $LOGS)"
        sleep 0.1
    done
}
has_primary() { [ -n "$(primary "${1:-}")" ]; }
follows() { [ "$(role "$1")" = follower ]; }

say "${BOLD}ftvmm election demo${OFF}: three members elect a primary; its host is killed $KILLS times"
"$NETNS" down >/dev/null 2>&1 || true
"$NETNS" up >/dev/null || die "cannot build the namespaces (scripts/netns.sh up)"
for i in 0 1 2; do start_member "$i"; done
wait_for 20 "the first election" has_primary
P="$(primary)"
say "  member $((P + 1)) (${HOSTS[P]}) was elected: $(sed -n 's/.*ELECTED: \(member [0-9]* is primary of epoch [0-9]*\).*/\1/p' "$LOGS/m$((P + 1)).log" | tail -1)"
for i in 0 1 2; do [ "$i" = "$P" ] || wait_for 20 "member $((i + 1)) to follow" follows "$i"; done
say "  the other two follow it: ${GREEN}protected${OFF}, output leaves once a majority holds the log"

q() { printf '%q ' "$@"; }
NODES=()
for i in 0 1 2; do NODES+=(--node "member-$((i + 1))=$(q ip netns exec "demo-${HOSTS[i]}" "$BIN" status "$STATUS")"); done
ip netns exec demo-client python3 "$REPO/scripts/demo_client.py" --server "$GUEST:6379" --control "$CTL" "${NODES[@]}" &
CLIENT_PID=$!
sleep 4

for ((k = 1; k <= KILLS; k++)); do
    P="$(primary)"
    [ -n "$P" ] || die "no primary before kill $k"
    printf '\n%s*** kill %d: killing %s (member %d, the primary) ***%s\n' "$RED" "$k" "${HOSTS[P]}" $((P + 1)) "$OFF"
    T0="$(now)"
    "$NETNS" kill "${HOSTS[P]}"
    wait_for 10 "a new primary" has_primary "$P"
    N="$(primary "$P")"
    LINE="$(grep 'ELECTED' "$LOGS/m$((N + 1)).log" | tail -1)"
    say "  ${GREEN}member $((N + 1)) elected${OFF} ($(echo "$LINE" | sed -n 's/.*primary of epoch \([0-9]*\).*/epoch \1/p'), in status $(ms_since "$T0") ms after the kill): votes $(echo "$LINE" | sed -n 's/.* votes=\(.*\) vote_ms.*/\1/p')"
    sleep 1
    printf '%s*** starting member %d again with the same command ***%s\n' "$BOLD" $((P + 1)) "$OFF"
    start_member "$P"
    wait_for 30 "member $((P + 1)) to rejoin" follows "$P"
    say "  member $((P + 1)) rejoined as a follower: $(grep -o 'member [0-9]* is primary of epoch [0-9]*: following it' "$LOGS/m$((P + 1)).log" | tail -1)"
    sleep 3
done

touch "$CTL/stop"
wait "$CLIENT_PID" && RC=0 || RC=$?
CLIENT_PID=""
say ""
if [ -f "$CTL/result" ]; then
    FINAL="$(sed -n 's/^final=//p' "$CTL/result")" EXACT="$(sed -n 's/^exact=//p' "$CTL/result")"
    CONN="$(sed -n 's/^connection=//p' "$CTL/result")"
    say "counter $FINAL, acknowledged writes all there: $EXACT; the one connection: $CONN"
fi
[ "$RC" -eq 0 ] && say "${GREEN}ok${OFF}: two failovers by election, no acknowledged write lost, the connection survived" ||
    die "the client saw a problem (see above; logs in $LOGS)"
