#!/usr/bin/env bash
# The long fault campaign: ftvmm-torture, one seeded campaign after another, until
# MINUTES have passed; then the totals (operations, kills, pauses, partitions, slow
# links, histories checked, anomalies per mode).
#   usage: sudo scripts/torture.sh [MINUTES=60]
# TORTURE_CAMPAIGN_SECONDS (default 180): the length of one campaign (one group).
# TORTURE_MODES (default "3:sync 3:semi-sync 2:sync 2:semi-sync"): MEMBERS:MODE, in turn.
# TORTURE_SEED (default 1000): the first seed; campaign k uses TORTURE_SEED + k.
# TORTURE_OUT (default target/torture): where summaries, and histories and logs of
# failed campaigns, are kept.
# It runs niced and takes the tests' lock (/tmp/ftvmm-tests.lock) for each campaign.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "torture.sh needs root (network namespaces, TAP devices)" >&2; exit 1; }
[ -e /dev/kvm ] || { echo "torture.sh needs /dev/kvm" >&2; exit 1; }
command -v cargo >/dev/null || PATH="${SUDO_USER:+$(getent passwd "$SUDO_USER" | cut -d: -f6)/.cargo/bin:}$HOME/.cargo/bin:$PATH"
minutes=${1:-60}
campaign=${TORTURE_CAMPAIGN_SECONDS:-180}
read -r -a modes <<<"${TORTURE_MODES:-3:sync 3:semi-sync 2:sync 2:semi-sync}"
seed=${TORTURE_SEED:-1000}
out=${TORTURE_OUT:-target/torture}
mkdir -p "$out"
# ftvmm-torture starts the ftvmm binary it was built with, from the same directory.
nice -n 10 cargo build -p vmm -p ftvmm-tests --bins
bin=target/debug/ftvmm-torture
end=$(($(date +%s) + minutes * 60))
results="$out/results-$(date +%Y%m%dT%H%M%S).txt"
k=0
while [ "$(date +%s)" -lt "$end" ]; do
    left=$((end - $(date +%s)))
    secs=$((left < campaign ? left : campaign))
    [ "$secs" -ge 20 ] || break
    spec=${modes[$((k % ${#modes[@]}))]}
    members=${spec%%:*} mode=${spec#*:} s=$((seed + k))
    echo "== campaign $k: $members members, $mode, seed $s, ${secs}s"
    rc=0
    line=$(nice -n 10 "$bin" --members "$members" --replication "$mode" --seed "$s" --seconds "$secs" \
        --history "$out/seed$s.history" --logs "$out/seed$s.logs" | tail -n 2) || rc=$?
    echo "$line"
    echo "$spec rc=$rc $line" | tr '\n' ' ' >>"$results"
    echo >>"$results"
    # Keep the evidence of failed campaigns only.
    [ "$rc" != 0 ] || rm -f "$out/seed$s.history" "$out/seed$s.logs"
    k=$((k + 1))
done
echo "== $k campaigns in $minutes min; per MEMBERS:MODE (figures summed; rc 1 = an anomaly or a group not whole, 101 = the harness failed):"
awk '
    { mode = $1; rc = $2; n[mode]++; if (rc != "rc=0") failed[mode]++
      for (i = 3; i <= NF; i++) if ($i ~ /^[a-z_]+=[0-9]+$/) { split($i, kv, "="); sum[mode, kv[1]] += kv[2]; keys[kv[1]] = 1 } }
    END { for (m in n) { printf "%s: %d campaigns, %d failed;", m, n[m], failed[m]
                         for (k in keys) printf " %s %d", k, sum[m, k]; printf "\n" } }' "$results"
echo "results: $results"
