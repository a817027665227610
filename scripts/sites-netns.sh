#!/usr/bin/env bash
# Three sites on one machine, for multi-leader tests and benchmarks.
#
#   scripts/sites-netns.sh up              build it (idempotent)
#   scripts/sites-netns.sh down            delete it (kills what still runs in it)
#   scripts/sites-netns.sh status          namespaces and addresses
#   scripts/sites-netns.sh link N down|up  cut site N off from the other sites (a partition), or heal
#
# Each site N (1..3) is a whole scripts/netns.sh topology with NETNS_PREFIX=<prefix>sN-
# and NETNS_SUBNET=10.78.N: hosts sN-host-a (10.78.N.1) and sN-host-b (10.78.N.2), each
# with a TAP bridged to the site's LAN, a client sN-client (10.78.N.100), and the site's
# guest at 10.78.N.10 (site link on port 6380, gateway 10.78.N.254).
#
# A router namespace <prefix>wan joins the sites' LANs: a veth "wan" port on each
# site's switch, its other end sN in the router with 10.78.N.254/24, forwarding on.
# `link N down` takes sN down: site N's guest can no longer reach the others, while
# its own clients still reach it (they are on its LAN).
set -euo pipefail

PREFIX="${NETNS_PREFIX:-}"
SITES=3
HERE="$(cd "$(dirname "$0")" && pwd)"
WAN="${PREFIX}wan"

die() {
    echo "sites-netns.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ "$PREFIX" =~ ^[A-Za-z0-9_.-]*$ ]] || die "NETNS_PREFIX '$PREFIX' may only contain letters, digits, '_', '.', '-'"
[ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces)"

site_netns() { # N args...
    local n="$1"
    shift
    NETNS_PREFIX="${PREFIX}s${n}-" NETNS_SUBNET="10.78.${n}" "$HERE/netns.sh" "$@"
}

ns_exists() {
    ip netns list | awk -v n="$1" '$1 == n { found = 1 } END { exit !found }'
}

cmd_up() {
    local n lan
    ns_exists "$WAN" || ip netns add "$WAN"
    ip netns exec "$WAN" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
    ip -n "$WAN" link set lo up
    for n in $(seq 1 "$SITES"); do
        site_netns "$n" up >/dev/null
        lan="${PREFIX}s${n}-lan"
        if ! ip -n "$WAN" link show dev "s$n" >/dev/null 2>&1; then
            ip -n "$lan" link del wan 2>/dev/null || true
            ip link add "s$n" netns "$WAN" type veth peer name wan netns "$lan"
        fi
        ip -n "$lan" link set wan master sw0
        ip -n "$lan" link set wan up
        ip -n "$WAN" addr replace "10.78.$n.254/24" dev "s$n"
        ip -n "$WAN" link set "s$n" up
        echo "site $n: guest 10.78.$n.10 (hosts ${PREFIX}s$n-host-a, ${PREFIX}s$n-host-b; client ${PREFIX}s$n-client 10.78.$n.100)"
    done
}

cmd_down() {
    local n pids
    for n in $(seq 1 "$SITES"); do
        site_netns "$n" down
    done
    if ns_exists "$WAN"; then
        pids="$(ip netns pids "$WAN" 2>/dev/null || true)"
        # shellcheck disable=SC2086 # one pid per word
        [ -z "$pids" ] || kill -9 $pids 2>/dev/null || true
        ip netns del "$WAN"
    fi
}

cmd_link() { # N up|down
    [ $# -eq 2 ] || usage
    [[ "$1" =~ ^[1-3]$ ]] || die "link: site must be 1..$SITES, got '$1'"
    case "$2" in
    up | down) ;;
    *) die "link: expected 'up' or 'down', got '$2'" ;;
    esac
    ns_exists "$WAN" || die "namespace $WAN does not exist (run: $0 up)"
    ip -n "$WAN" link set "s$1" "$2"
}

[ $# -ge 1 ] || usage
cmd="$1"
shift
case "$cmd" in
up) cmd_up ;;
down) cmd_down ;;
status)
    for n in $(seq 1 "$SITES"); do site_netns "$n" status; done
    ns_exists "$WAN" && ip -n "$WAN" -br addr show
    ;;
link) cmd_link "$@" ;;
*) usage ;;
esac
