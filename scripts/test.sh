#!/usr/bin/env bash
# README's test command: everything the test suite needs, then the whole suite.
#
#   sudo scripts/test.sh [CARGO-TEST-ARGS...]
#
# 1. Checks for root (the tests create network namespaces and TAP devices) and
#    a usable /dev/kvm (they boot real VMs).
# 2. Installs with apt-get whatever scripts/lib/test-deps lists and is missing
#    (iproute2, redis-tools, etcd-server, etcd-client, ...).
# 3. Runs `cargo test --workspace --no-fail-fast`, so one failing test binary
#    does not hide the verdict on the others, and ends with a summary: passed,
#    failed, the failing tests and how to rerun each failing binary.
#
# Arguments go to cargo test, e.g. `sudo scripts/test.sh --test split_brain`.
# The full output is kept in target/test.log. Exit status: cargo test's.
# CI (.ci/run) runs this same script.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
# shellcheck source=scripts/lib/find-cargo.sh
. "$REPO/scripts/lib/find-cargo.sh"

die() {
    echo "test.sh: $*" >&2
    exit 1
}
say() { printf '\n== %s\n' "$*"; }

# --- 1. root and KVM -----------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "needs root: the tests create network namespaces and TAP devices, and missing packages are installed with apt-get; run: sudo $0 $*"
[ -c /dev/kvm ] || die "/dev/kvm is missing: the tests boot real VMs and need KVM (enable virtualization in the BIOS or the VM host; load kvm_intel, kvm_amd or kvm_pvm)"
[ -r /dev/kvm ] && [ -w /dev/kvm ] || die "/dev/kvm cannot be opened read-write"

# --- 2. packages ---------------------------------------------------------------------
missing=()
while read -r cmd pkg _; do
    [ -n "$cmd" ] && [ "${cmd:0:1}" != '#' ] || continue
    [ -n "$pkg" ] || die "scripts/lib/test-deps: '$cmd' has no package"
    command -v "$cmd" >/dev/null 2>&1 && continue
    [[ " ${missing[*]} " == *" $pkg "* ]] || missing+=("$pkg")
done <"$REPO/scripts/lib/test-deps"
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing: ${missing[*]} (Debian package names, see scripts/lib/test-deps); no apt-get here: install them with your package manager and run again"
    say "installing what the tests need: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    T_APT=$SECONDS
    apt-get update -qq || die "apt-get update failed (network? /etc/apt/sources.list?)"
    apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed (see above)"
    while read -r cmd pkg _; do
        [ -n "$cmd" ] && [ "${cmd:0:1}" != '#' ] || continue
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd is still missing after apt-get install $pkg"
    done <"$REPO/scripts/lib/test-deps"
    echo "installed in $((SECONDS - T_APT)) s"
fi

# --- 3. the suite --------------------------------------------------------------------
find_cargo || die "${FIND_CARGO_HELP}$0"
# flock -n only asks: the tests themselves queue on this lock (tests/src/pair.rs).
if ! flock -n /tmp/ftvmm-tests.lock true 2>/dev/null; then
    echo "note: another test run holds /tmp/ftvmm-tests.lock; the tests that boot VMs wait for it"
fi

# The whole workspace, unless the arguments pick packages (`-p vmm --lib` on top of
# --workspace would run every package's unit tests).
scope=(--workspace)
for arg in "$@"; do
    case "$arg" in
    --) break ;;
    -p* | --package | --package=*) scope=() ;;
    esac
done

# The tests run target/<profile>/ftvmm, which `cargo test -p ftvmm-tests` alone does not
# build: with packages picked, build it first, or the tests would run a stale monitor.
if [ ${#scope[@]} -eq 0 ]; then
    profile=()
    for arg in "$@"; do
        case "$arg" in
        --) break ;;
        --release) profile=(--release) ;;
        esac
    done
    cargo build -q -p vmm --bins "${profile[@]}" || die "building the ftvmm binary failed (see above)"
fi

mkdir -p target
LOG="$REPO/target/test.log"
say "cargo test ${scope[*]} --no-fail-fast $* (output also in target/test.log; a first build takes minutes)"
T0=$SECONDS
set +e
cargo test "${scope[@]}" --no-fail-fast "$@" 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
secs=$((SECONDS - T0))

# --- summary -------------------------------------------------------------------------
# libtest prints one "test result:" line per test binary, and "test NAME ... FAILED"
# per failed test; cargo names each failing binary as "`-p PKG --test NAME`".
read -r binaries passed failed ignored < <(awk '
    /^test result: / { n++; for (i = 1; i <= NF; i++) {
        if ($(i) ~ /^passed;/) p += $(i - 1); if ($(i) ~ /^failed;/) f += $(i - 1); if ($(i) ~ /^ignored;/) g += $(i - 1) } }
    END { print n + 0, p + 0, f + 0, g + 0 }' "$LOG")
say "summary: $passed passed, $failed failed, $ignored ignored, in $binaries test targets ($((secs / 60)) min $((secs % 60)) s)"
if [ "$failed" -gt 0 ]; then
    echo "failed tests:"
    sed -n 's/^test \(.*\) \.\.\. FAILED$/  \1/p' "$LOG" | sort -u
fi
if [ "$rc" -ne 0 ]; then
    targets="$(grep -o -- '`-p [^`]*`' "$LOG" | tr -d '`' | sort -u || true)"
    if [ -n "$targets" ]; then
        echo "rerun a failing binary with:"
        while read -r t; do echo "  sudo scripts/test.sh $t"; done <<<"$targets"
    fi
    [ "$failed" -gt 0 ] || echo "cargo test failed without a failed test (a build error? a crashed test binary?): see target/test.log"
    echo "FAILED (cargo test exit $rc)"
else
    echo "OK: the whole suite passed"
fi
exit "$rc"
