#!/usr/bin/env bash
# Hosts on one machine: the test topology of docs/design.md ("Test topology").
#
#   scripts/netns.sh up                  build it (idempotent; repairs a partial one)
#   scripts/netns.sh down                delete it (kills what still runs in it); no-op if absent
#   scripts/netns.sh status              namespaces, links and addresses
#   scripts/netns.sh link HOST down|up   take HOST's uplink down (a partition) or up (heal)
#   scripts/netns.sh kill HOST           kill -9 every process in HOST's namespace, and wait until they are gone
#   scripts/netns.sh mirror on|off       mirrored input: every frame sent to the guest's MAC reaches every host's tap0
#
# HOST is one of host-a, host-b, host-c, host-d, client, lan.
#
# Namespaces (NAME = ${NETNS_PREFIX}host-a etc.; NETNS_PREFIX defaults to empty):
#
#   lan     bridge sw0 (the LAN switch); veth ports host-a, host-b, client
#   host-a  bridge br0 = 10.77.0.1/24 with ports uplink (veth to sw0) and tap0 (persistent TAP)
#   host-b  bridge br0 = 10.77.0.2/24 with ports uplink (veth to sw0) and tap0 (persistent TAP)
#   host-c, host-d  the same, 10.77.0.3 and 10.77.0.4 (more followers of a group)
#   client  eth0 = 10.77.0.100/24 (veth to sw0)
#
# Mirrored input (`mirror on`, docs/client-gap.md): the switch copies every frame sent
# to the guest's MAC to every host port (a port mirror / SPAN on a real switch), and
# each host hands such frames from its uplink straight to tap0, so a backup VMM started
# with --mirrored-input holds the requests a dying primary never logged. Done with tc
# (u32 + mirred, which this kernel has; flower and gact it may not): on each switch
# port, mirror to every other host port and redirect (steal) to the last one, so each
# host gets exactly one copy and the bridge none.
#
# The VMM opens tap0 by name (single queue). Its guest is 10.77.0.10, MAC
# 52:54:00:4d:00:0a (the VMM's default for that address), on both hosts. The subnet's first three octets come from
# NETNS_SUBNET (default 10.77.0). Interface names are fixed and per namespace,
# so they stay short whatever the prefix; nothing is created in the root
# namespace (veth pairs are made directly inside their namespaces).
set -euo pipefail

PREFIX="${NETNS_PREFIX:-}"
SUBNET="${NETNS_SUBNET:-10.77.0}"

HOST_A_IP="$SUBNET.1"
HOST_B_IP="$SUBNET.2"
HOST_C_IP="$SUBNET.3"
HOST_D_IP="$SUBNET.4"
GUEST_IP="$SUBNET.10"
CLIENT_IP="$SUBNET.100"
# The VMM's default: 52:54:00 and the last three bytes of the guest's address.
IFS=. read -r _ o2 o3 o4 <<<"$GUEST_IP"
GUEST_MAC="$(printf '52:54:00:%02x:%02x:%02x' "$o2" "$o3" "$o4")"

die() {
    echo "netns.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[[ "$PREFIX" =~ ^[A-Za-z0-9_.-]*$ ]] || die "NETNS_PREFIX '$PREFIX' may only contain letters, digits, '_', '.', '-'"
[[ "$SUBNET" =~ ^[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] || die "NETNS_SUBNET '$SUBNET' must be three octets, e.g. 10.77.0"

NS_A="${PREFIX}host-a"
NS_B="${PREFIX}host-b"
NS_C="${PREFIX}client"
NS_LAN="${PREFIX}lan"
NS_HC="${PREFIX}host-c"
NS_HD="${PREFIX}host-d"
ALL_NS=("$NS_A" "$NS_B" "$NS_HC" "$NS_HD" "$NS_C" "$NS_LAN")

require_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (creates network namespaces); try: sudo $0 $*"
    command -v ip >/dev/null || die "'ip' not found: install iproute2"
}

ns_exists() {
    # awk reads all its input: no SIGPIPE for ip under pipefail (unlike grep -q).
    ip netns list | awk -v n="$1" '$1 == n { found = 1 } END { exit !found }'
}

link_exists() { # ns dev
    ip -n "$1" link show dev "$2" >/dev/null 2>&1
}

# Short host name (host-a, ...) -> namespace name.
ns_of() {
    case "$1" in
    host-a | host-b | host-c | host-d | client | lan) echo "${PREFIX}$1" ;;
    *) die "unknown host '$1' (expected host-a, host-b, host-c, host-d, client or lan)" ;;
    esac
}

# Interface of HOST that connects it to the switch.
uplink_of() {
    case "$1" in
    host-a | host-b | host-c | host-d) echo uplink ;;
    client) echo eth0 ;;
    *) die "'$1' has no uplink (expected host-a, host-b, host-c, host-d or client)" ;;
    esac
}

ns_sysctl() { # ns key value; tolerate keys that do not exist (e.g. IPv6 compiled out)
    local f="/proc/sys/${2//.//}"
    ip netns exec "$1" sh -c "[ ! -e '$f' ] || echo '$3' > '$f'"
}

make_bridge() { # ns name
    if ! link_exists "$1" "$2"; then
        ip -n "$1" link add "$2" type bridge stp_state 0 forward_delay 0
    fi
    ip -n "$1" link set "$2" type bridge stp_state 0 forward_delay 0
    ip -n "$1" link set "$2" up
}

# veth with end $2 in namespace $1 and end $4 in namespace $3 (both created in place).
make_veth() { # ns1 dev1 ns2 dev2
    if link_exists "$1" "$2" && link_exists "$3" "$4"; then
        return
    fi
    # Half a pair cannot be repaired: drop what is left and make it again.
    ip -n "$1" link del "$2" 2>/dev/null || true
    ip -n "$3" link del "$4" 2>/dev/null || true
    ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
}

up_host() { # short-name address
    local ns
    ns="$(ns_of "$1")"
    make_veth "$ns" uplink "$NS_LAN" "$1"
    ip -n "$NS_LAN" link set "$1" master sw0
    ip -n "$NS_LAN" link set "$1" up
    make_bridge "$ns" br0
    ip -n "$ns" link set uplink master br0
    ip -n "$ns" link set uplink up
    if ! link_exists "$ns" tap0; then
        ip -n "$ns" tuntap add dev tap0 mode tap
    fi
    ip -n "$ns" link set tap0 master br0
    ip -n "$ns" link set tap0 up
    ip -n "$ns" addr replace "$2/24" dev br0
}

cmd_up() {
    local ns
    for ns in "${ALL_NS[@]}"; do
        ns_exists "$ns" || ip netns add "$ns"
        # Before any interface exists, so none gets an IPv6 link-local address.
        ns_sysctl "$ns" net.ipv6.conf.default.disable_ipv6 1
        ns_sysctl "$ns" net.ipv6.conf.all.disable_ipv6 1
        ip -n "$ns" link set lo up
    done

    make_bridge "$NS_LAN" sw0

    up_host host-a "$HOST_A_IP"
    up_host host-b "$HOST_B_IP"
    up_host host-c "$HOST_C_IP"
    up_host host-d "$HOST_D_IP"

    make_veth "$NS_C" eth0 "$NS_LAN" client
    ip -n "$NS_LAN" link set client master sw0
    ip -n "$NS_LAN" link set client up
    ip -n "$NS_C" link set eth0 up
    ip -n "$NS_C" addr replace "$CLIENT_IP/24" dev eth0

    printf '%-16s %-14s %s\n' \
        "$NS_A" "$HOST_A_IP" "primary VMM (br0; TAP tap0)" \
        "$NS_B" "$HOST_B_IP" "backup VMM (br0; TAP tap0)" \
        "$NS_HC" "$HOST_C_IP" "another follower (br0; TAP tap0)" \
        "$NS_HD" "$HOST_D_IP" "another follower (br0; TAP tap0)" \
        "$NS_C" "$CLIENT_IP" "client (eth0)" \
        "guest" "$GUEST_IP" "guest VM, MAC $GUEST_MAC (on tap0 of the active host)" \
        "$NS_LAN" "-" "switch (bridge sw0)"
}

kill_ns() { # ns
    local pids
    pids="$(ip netns pids "$1" 2>/dev/null || true)"
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086 # one pid per word
        kill -9 $pids 2>/dev/null || true
    fi
}

cmd_down() {
    local ns
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            # A process left inside would keep the namespace (and its links) alive.
            kill_ns "$ns"
            ip netns del "$ns"
        fi
    done
}

cmd_status() {
    local ns any=0
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            any=1
            echo "== $ns"
            ip -n "$ns" -br addr show | sed 's/^/   /'
        else
            echo "== $ns (absent)"
        fi
    done
    [ "$any" -eq 1 ] || echo "(topology is down)"
}

cmd_link() { # host up|down
    [ $# -eq 2 ] || usage
    local ns dev
    ns="$(ns_of "$1")"
    dev="$(uplink_of "$1")"
    case "$2" in
    up | down) ;;
    *) die "link: expected 'up' or 'down', got '$2'" ;;
    esac
    ns_exists "$ns" || die "namespace $ns does not exist (run: $0 up)"
    ip -n "$ns" link set "$dev" "$2"
}

cmd_kill() { # host
    [ $# -eq 1 ] || usage
    local ns
    ns="$(ns_of "$1")"
    ns_exists "$ns" || die "namespace $ns does not exist"
    kill_ns "$ns"
    # A killed VMM can take a while to exit on a loaded host (tearing down its VM); until
    # it has, its ports are still bound, and whatever starts next on this "host" (as after
    # a reboot) would find them in use. Wait until the namespace is empty (up to 10 s).
    local i
    for i in $(seq 100); do
        [ -z "$(ip netns pids "$ns" 2>/dev/null || true)" ] && return 0
        sleep 0.1
    done
    die "processes in $ns survived kill -9 for 10 s: $(ip netns pids "$ns" | tr '\n' ' ')"
}

# tc u32 match of the guest's MAC as the destination: at ingress the offsets are from the
# network header, so the Ethernet destination is 14 bytes before it.
mac_match() {
    local m="${GUEST_MAC//:/}"
    echo "match u16 0x${m:0:4} 0xffff at -14 match u32 0x${m:4:8} 0xffffffff at -12"
}

cmd_mirror() { # on|off
    [ $# -eq 1 ] || usage
    local port dev ns others actions i
    case "$1" in
    on | off) ;;
    *) die "mirror: expected 'on' or 'off', got '$1'" ;;
    esac
    ns_exists "$NS_LAN" || die "namespace $NS_LAN does not exist (run: $0 up)"
    local hosts=(host-a host-b host-c host-d)
    for port in client "${hosts[@]}"; do
        ip netns exec "$NS_LAN" tc qdisc del dev "$port" clsact 2>/dev/null || true
    done
    for port in "${hosts[@]}"; do
        ip netns exec "$(ns_of "$port")" tc qdisc del dev uplink clsact 2>/dev/null || true
    done
    [ "$1" = on ] || return 0
    # shellcheck disable=SC2207 # the match is several words on purpose
    local match=($(mac_match))
    for port in client "${hosts[@]}"; do
        others=()
        for dev in "${hosts[@]}"; do
            [ "$dev" = "$port" ] || others+=("$dev")
        done
        actions=()
        for ((i = 0; i < ${#others[@]}; i++)); do
            if [ "$i" -lt $((${#others[@]} - 1)) ]; then
                actions+=(action mirred egress mirror dev "${others[$i]}")
            else
                actions+=(action mirred egress redirect dev "${others[$i]}")
            fi
        done
        ip netns exec "$NS_LAN" tc qdisc add dev "$port" clsact
        ip netns exec "$NS_LAN" tc filter add dev "$port" ingress pref 10 protocol all u32 "${match[@]}" "${actions[@]}"
    done
    # A backup host's bridge learned the guest's MAC on its uplink (the live guest's
    # broadcasts came from there) and would drop the copies: hand them to tap0 directly.
    for port in "${hosts[@]}"; do
        ns="$(ns_of "$port")"
        ip netns exec "$ns" tc qdisc add dev uplink clsact
        ip netns exec "$ns" tc filter add dev uplink ingress pref 10 protocol all u32 "${match[@]}" \
            action mirred egress redirect dev tap0
    done
}

[ $# -ge 1 ] || usage
cmd="$1"
shift
case "$cmd" in
up | down | status | link | kill | mirror) ;;
-h | --help | help) usage ;;
*) die "unknown command '$cmd' (expected up, down, status, link, kill or mirror)" ;;
esac
require_root "$cmd" "$@"
case "$cmd" in
up) [ $# -eq 0 ] || usage; cmd_up ;;
down) [ $# -eq 0 ] || usage; cmd_down ;;
status) [ $# -eq 0 ] || usage; cmd_status ;;
link) cmd_link "$@" ;;
kill) cmd_kill "$@" ;;
mirror) cmd_mirror "$@" ;;
esac
