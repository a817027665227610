#!/usr/bin/env bash
# Have the sites converged? Asks every site for the digest of its replicated keyspace.
#
#   scripts/sites-check.sh [NS@]HOST[:PORT] ...
#
# HOST:PORT is a site's KV server (port 6379 by default); NS@ runs the query inside
# network namespace NS (as root), for sites that live in namespaces. Prints one line
# per site (digest, own writes, what it applied from each peer, conflicted keys) and
# exits 0 when every digest is equal, 1 when they differ, 2 when a site cannot be asked.
set -euo pipefail

[ $# -ge 1 ] || {
    sed -n '4,9p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
command -v redis-cli >/dev/null || {
    echo "sites-check: redis-cli not found: install redis-tools" >&2
    exit 2
}

ask() { # target command...
    local target="$1" ns="" hostport host port
    shift
    hostport="$target"
    if [[ "$target" == *@* ]]; then
        ns="${target%%@*}"
        hostport="${target#*@}"
    fi
    host="${hostport%%:*}"
    port=6379
    [[ "$hostport" == *:* ]] && port="${hostport##*:}"
    if [ -n "$ns" ]; then
        ip netns exec "$ns" redis-cli -h "$host" -p "$port" "$@"
    else
        redis-cli -h "$host" -p "$port" "$@"
    fi
}

first=""
same=1
for target in "$@"; do
    if ! info="$(ask "$target" INFO sites 2>&1)" || [[ "$info" != *sites_digest:* ]]; then
        echo "sites-check: cannot read the site at $target: ${info:-no reply}" >&2
        exit 2
    fi
    field() { printf '%s\n' "$info" | tr -d '\r' | awk -F: -v k="$1" '$1 == k { print $2 }'; }
    digest="$(field sites_digest)"
    peers="$(printf '%s\n' "$info" | tr -d '\r' | awk -F: '/^sites_peer_/ { sub("sites_peer_", "", $1); printf "%s%s:%s", sep, $1, $2; sep = " " }')"
    printf 'site %-3s %-28s digest %s  writes %s  conflicted %s  peers %s\n' \
        "$(field site_id)" "$target" "$digest" "$(($(field sites_next_seq) - 1))" "$(field sites_conflicted_keys)" "$peers"
    if [ -z "$first" ]; then
        first="$digest"
    elif [ "$digest" != "$first" ]; then
        same=0
    fi
done
if [ "$same" -eq 1 ]; then
    echo "converged: $# sites, digest $first"
    exit 0
fi
echo "NOT converged: digests differ"
exit 1
