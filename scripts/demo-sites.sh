#!/usr/bin/env bash
# One write conflict, resolved by each policy: three sites, the links between them cut,
# the same keys written at all three, the links healed, and what every site then reads.
#
#   sudo scripts/demo-sites.sh [lww|site-id|manual|merge ...]     (default: all four)
#
# Uses scripts/sites-netns.sh (prefix NETNS_PREFIX, default demo-sites-) and the debug
# ftvmm (FTVMM to override). Site 2's clock is set 2 s ahead, so under lww its writes win;
# under site-id site 3 wins regardless; manual lists the siblings, then RESOLVEs; merge adds
# the counters, joins the strings and unions the sets.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
export NETNS_PREFIX="${NETNS_PREFIX:-demo-sites-}"
P="$NETNS_PREFIX"
FTVMM="${FTVMM:-$REPO/target/debug/ftvmm}"
SITES="1=10.78.1.10:6380,2=10.78.2.10:6380,3=10.78.3.10:6380"
POLICIES=("$@")
[ ${#POLICIES[@]} -gt 0 ] || POLICIES=(lww site-id manual merge)
declare -a PIDS=()

[ "$(id -u)" -eq 0 ] || { echo "demo-sites: run as root" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "demo-sites: install redis-tools" >&2; exit 1; }
[ -x "$FTVMM" ] || (cd "$REPO" && cargo build --quiet --bin ftvmm)

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap 'stop_all; "$REPO/scripts/sites-netns.sh" down >/dev/null 2>&1' EXIT

cli() { local s="$1"; shift; ip netns exec "${P}s$s-client" redis-cli -h "10.78.$s.10" "$@"; }
say() { printf '\n\033[1m%s\033[0m\n' "$*"; }

"$REPO/scripts/sites-netns.sh" down >/dev/null 2>&1 || true
"$REPO/scripts/sites-netns.sh" up >/dev/null
for policy in "${POLICIES[@]}"; do
    say "=== --conflict $policy"
    for s in 1 2 3; do
        offset=0
        [ "$s" = 2 ] && offset=2000
        ip netns exec "${P}s$s-host-a" "$FTVMM" run --tap tap0 --guest-ip "10.78.$s.10/24" --gateway "10.78.$s.254" \
            --site-id "$s" --sites "$SITES" --conflict "$policy" --clock-offset-ms "$offset" >/dev/null 2>&1 &
        PIDS+=($!)
    done
    for s in 1 2 3; do until [ "$(cli "$s" PING 2>/dev/null)" = PONG ]; do sleep 0.1; done; done
    cli 1 SET n 10 >/dev/null
    sleep 1
    say "partition: every site cut off from the others; each writes the same keys"
    for s in 1 2 3; do "$REPO/scripts/sites-netns.sh" link "$s" down; done
    for s in 1 2 3; do
        echo "site $s: INCR n -> $(cli "$s" INCR n)   SET s from-$s -> $(cli "$s" SET s "from-$s")   SADD set m$s -> $(cli "$s" SADD set "m$s")"
    done
    say "heal"
    for s in 1 2 3; do "$REPO/scripts/sites-netns.sh" link "$s" up; done
    until "$REPO/scripts/sites-check.sh" "${P}s1-client@10.78.1.10" "${P}s2-client@10.78.2.10" "${P}s3-client@10.78.3.10" >/dev/null; do
        sleep 0.1
    done
    for s in 1 2 3; do
        echo "site $s reads: n = $(cli "$s" GET n)   s = $(cli "$s" GET s)   set = $(cli "$s" SMEMBERS set | tr '\n' ' ')"
    done
    if [ "$policy" = manual ]; then
        say "site 1: CONFLICTS s (origin site, HLC timestamp, value)"
        cli 1 CONFLICTS s
        say "site 1: RESOLVE s chosen"
        cli 1 RESOLVE s chosen
        sleep 0.5
        for s in 1 2 3; do echo "site $s reads: s = $(cli "$s" GET s)"; done
    fi
    cli 1 INFO sites | grep -E "sites_(conflicts|lost_writes|conflicted_keys)" | tr -d '\r'
    "$REPO/scripts/sites-check.sh" "${P}s1-client@10.78.1.10" "${P}s2-client@10.78.2.10" "${P}s3-client@10.78.3.10" | tail -1
    stop_all
done
