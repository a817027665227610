#!/usr/bin/env bash
# The long fault campaign: ftvmm-torture, one seeded campaign after another, until
# MINUTES have passed; after each campaign, the running totals (operations, kills,
# partitions, pauses, histories checked, anomalies); at the end, the totals per mode.
#   usage: sudo scripts/torture.sh [MINUTES=60]
# TORTURE_CAMPAIGN_SECONDS (default 180): the length of one campaign (one group).
# TORTURE_MODES (default "3:sync 3:semi-sync 2:sync 2:semi-sync"): MEMBERS:MODE, in turn.
# TORTURE_SEED (default 1000): the first seed; campaign k uses TORTURE_SEED + k.
# TORTURE_MIX (optional): the fault kinds' weights, ftvmm-torture's --mix (e.g.
# "kill=14,pause=1,cut=2,one-way=1,slow=1,witness=1" for a run aiming at kills).
# TORTURE_OUT (default target/torture): where summaries, and histories and logs of
# failed campaigns, are kept.
# TORTURE_WITNESS (optional): "etcd" gives 2-member groups an etcd witness (killed with
# kill -9 and restarted on its data for a witness outage) instead of a file witness.
# NETNS_PREFIX (optional): the namespaces' prefix (default: a unique one per campaign).
# It builds once, copies the two binaries to TORTURE_OUT/bin (so a rebuild of the work
# tree does not change a run under way), runs niced and takes the tests' lock
# (/tmp/ftvmm-tests.lock) for each campaign.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "torture.sh needs root (network namespaces, TAP devices)" >&2; exit 1; }
[ -e /dev/kvm ] || { echo "torture.sh needs /dev/kvm" >&2; exit 1; }
command -v cargo >/dev/null || PATH="${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin:}$HOME/.cargo/bin:$PATH"
for tool in nft tc; do
    command -v "$tool" >/dev/null || { echo "torture.sh needs $tool (see scripts/lib/test-deps; scripts/test.sh installs it)" >&2; exit 1; }
done
minutes=${1:-60}
[[ "$minutes" =~ ^[0-9]+$ ]] || { echo "usage: $0 [MINUTES]" >&2; exit 2; }
campaign=${TORTURE_CAMPAIGN_SECONDS:-180}
read -r -a modes <<<"${TORTURE_MODES:-3:sync 3:semi-sync 2:sync 2:semi-sync}"
seed=${TORTURE_SEED:-1000}
mix=(${TORTURE_MIX:+--mix "$TORTURE_MIX"})
case "${TORTURE_WITNESS:-file}" in
    file | etcd) ;;
    *) echo "TORTURE_WITNESS=$TORTURE_WITNESS: expected file or etcd" >&2; exit 2 ;;
esac
out=${TORTURE_OUT:-target/torture}
mkdir -p "$out/bin"
# ftvmm-torture starts the ftvmm binary it sits beside.
nice -n 10 cargo build -p vmm -p ftvmm-tests --bins
cp target/debug/ftvmm target/debug/ftvmm-torture "$out/bin/"
bin=$out/bin/ftvmm-torture
end=$(($(date +%s) + minutes * 60))
results="$out/results-$(date +%Y%m%dT%H%M%S).txt"
: >"$results"

# The figures of every campaign so far, summed: per MEMBERS:MODE with "by mode", else in all.
totals() { # [by-mode]
    awk -v by="${1:-}" '
        { mode = (by == "" ? "all" : $1); n[mode]++; if ($2 != "rc=0") failed[mode]++
          for (i = 3; i <= NF; i++) if ($i ~ /^[a-z_]+=[0-9]+$/) { split($i, kv, "="); sum[mode, kv[1]] += kv[2]; keys[kv[1]] = 1 } }
        END { for (m in n) { printf "%s: %d campaigns, %d failed;", m, n[m], failed[m] + 0
                             split("ops kills pauses partitions one_way slow_links witness_outages wipes sealed unrecovered nemesis_failures cas_ok histories anomalies lost", order, " ")
                             for (j = 1; j in order; j++) if (order[j] in keys) printf " %s %d", order[j], sum[m, order[j]]
                             printf "\n" } }' "$results"
}

k=0
while [ "$(date +%s)" -lt "$end" ]; do
    left=$((end - $(date +%s)))
    secs=$((left < campaign ? left : campaign))
    [ "$secs" -ge 20 ] || break
    spec=${modes[$((k % ${#modes[@]}))]}
    members=${spec%%:*} mode=${spec#*:} s=$((seed + k))
    witness=()
    [ "$members" != 2 ] || witness=(--witness "${TORTURE_WITNESS:-file}")
    echo "== $(date -u +%H:%M:%S) campaign $k: $members members, $mode, seed $s, ${secs}s"
    echo "   again: sudo ${NETNS_PREFIX:+NETNS_PREFIX=$NETNS_PREFIX }$bin --members $members --replication $mode --seed $s --seconds $secs ${mix[*]} ${witness[*]}"
    rc=0
    line=$(nice -n 10 "$bin" --members "$members" --replication "$mode" --seed "$s" --seconds "$secs" "${mix[@]}" "${witness[@]}" \
        --history "$out/seed$s.history" --logs "$out/seed$s.logs" | tail -n 2) || rc=$?
    echo "$line"
    echo "$spec rc=$rc $line" | tr '\n' ' ' >>"$results"
    echo >>"$results"
    # Keep the evidence of failed campaigns only.
    [ "$rc" != 0 ] || rm -f "$out/seed$s.history" "$out/seed$s.logs"
    k=$((k + 1))
    echo "   running totals: $(totals)"
done
echo "== $k campaigns in $minutes min; per MEMBERS:MODE (figures summed; rc 1 = an anomaly or a group not whole, 101 = the harness failed):"
totals by-mode
totals
echo "results: $results"
