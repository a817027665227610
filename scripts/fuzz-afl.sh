#!/usr/bin/env bash
# Coverage-guided fuzzing of one ftvmm-fuzz target with AFL++ (cargo-afl).
#
#   scripts/fuzz-afl.sh TARGET [SECONDS]     # TARGET: log-frame log-file channel state resp sites-wire sites-link
#
# Needs `cargo install cargo-afl` once (it builds AFL++ for this rustc). Builds the
# harness in fuzz/afl (outside the workspace), writes a seed corpus of valid inputs
# with fuzz-long, fuzzes for SECONDS (default 300) at nice 19, and prints executions,
# crashes and hangs from AFL++'s fuzzer_stats. Findings stay in fuzz/afl/out/TARGET.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/find-cargo.sh
. "$REPO/scripts/lib/find-cargo.sh"
find_cargo || { echo "fuzz-afl.sh: ${FIND_CARGO_HELP}$0" >&2; exit 1; }
TARGET="${1:?usage: scripts/fuzz-afl.sh TARGET [SECONDS]}"
SECONDS_TO_RUN="${2:-300}"
cargo afl --version >/dev/null 2>&1 || { echo "fuzz-afl.sh: cargo-afl is missing: cargo install cargo-afl" >&2; exit 1; }
cd "$REPO"
cargo build --release -q -p ftvmm-fuzz --bin fuzz-long
SEEDS="$REPO/fuzz/afl/out/$TARGET-seeds"
OUT="$REPO/fuzz/afl/out/$TARGET"
rm -rf "$SEEDS" "$OUT"
"$REPO/target/release/fuzz-long" seeds "$TARGET" "$SEEDS" 16
(cd fuzz/afl && cargo afl build --release -q)
# No core_pattern or CPU governor changes on a shared machine: tell AFL++ so.
export AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_SKIP_CPUFREQ=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1
FTVMM_FUZZ_TARGET="$TARGET" nice -n 19 cargo afl fuzz -V "$SECONDS_TO_RUN" -i "$SEEDS" -o "$OUT" \
    "$REPO/fuzz/afl/target/release/ftvmm-fuzz-afl" >"$OUT.log" 2>&1 || {
    echo "fuzz-afl.sh: afl-fuzz failed; the end of its output:" >&2
    tail -20 "$OUT.log" >&2
    exit 1
}
stats="$OUT/default/fuzzer_stats"
printf '%s: ' "$TARGET"
awk -F' *: *' '$1=="execs_done"||$1=="execs_per_sec"||$1=="corpus_count"||$1=="edges_found"||$1=="total_edges"||$1=="saved_crashes"||$1=="saved_hangs"||$1=="run_time"{printf "%s %s  ", $1, $2} END {print ""}' "$stats"
