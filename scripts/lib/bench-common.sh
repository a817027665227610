# shellcheck shell=bash
# Shared by scripts/bench-redis.sh, bench-output-rule.sh and bench-failover.sh. Source it, then
# call `bench_init NAME "$@"`. It gives:
#
#   root and /dev/kvm checks, a lock per NETNS_PREFIX, a work dir ($BENCH_WORK) for VM logs,
#   an EXIT/INT/TERM trap that kills every process started with bench_spawn and tears the
#   topology down, the binaries ($FTVMM, $RELAY; built with cargo unless FTVMM_BUILD=0),
#   topology helpers (bench_topology_up/down), process helpers (bench_spawn, bench_stop,
#   bench_wait_for), redis-benchmark in the client namespace (bench_rb), status probes.
#
# Environment:
#   NETNS_PREFIX      namespace prefix (default: bench-), so benches never touch others' topologies
#   FTVMM_TARGET_DIR  cargo target dir holding release/ftvmm (default: target, the repo's own)
#   FTVMM_BUILD=0     do not run cargo build (use the binaries as they are)
#   BENCH_KEEP=1      keep the work dir (VM stdout/stderr) even on success
#   BENCH_OUT_DIR     where results go (default: bench/ in the repo)
#   FTVMM_SOURCE_REV  what to name as the binaries' source in the results (default: the repo's HEAD)

BENCH_REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BENCH_LIB="$BENCH_REPO/scripts/lib"
BENCH_OUT="${BENCH_OUT_DIR:-$BENCH_REPO/bench}"
export NETNS_PREFIX="${NETNS_PREFIX:-bench-}"
NS_A="${NETNS_PREFIX}host-a"
NS_B="${NETNS_PREFIX}host-b"
NS_C="${NETNS_PREFIX}client"
NS_LAN="${NETNS_PREFIX}lan"
SUBNET="${NETNS_SUBNET:-10.77.0}"
HOST_A_IP="$SUBNET.1"
HOST_B_IP="$SUBNET.2"
GUEST_IP="$SUBNET.10"
# A second guest address, for a second VM running at the same time as the first (its own MAC
# follows from the address).
GUEST2_IP="$SUBNET.11"
CLIENT_IP="$SUBNET.100"

declare -A BENCH_PIDS=()
BENCH_NAME=""
BENCH_CMDLINE=""
BENCH_WORK=""
BENCH_OK=0
BENCH_WARNED=0

# A warning worth keeping the VM logs for.
bench_warn() {
    BENCH_WARNED=1
    echo "[$BENCH_NAME $(date +%H:%M:%S)] WARNING: $*" >&2
}

bench_log() { echo "[$BENCH_NAME $(date +%H:%M:%S)] $*" >&2; }
bench_die() {
    echo "$BENCH_NAME: error: $*" >&2
    exit 1
}

# bench_init NAME "$@": checks, lock, work dir, trap, binaries.
bench_init() {
    BENCH_NAME="$1"
    shift
    BENCH_CMDLINE="scripts/$BENCH_NAME${*:+ $*}"
    # Settings that change what is measured go in front, as they were given.
    local v
    for v in RELAY_DELAYS SAMPLES FAILOVER_TIMEOUT_MS HEARTBEAT_MS NETNS_PREFIX TLS_COMPARE ROUNDS; do
        if [ -n "${!v+x}" ] && { [ "$v" != NETNS_PREFIX ] || [ "${!v}" != bench- ]; }; then
            BENCH_CMDLINE="$v=\"${!v}\" $BENCH_CMDLINE"
        fi
    done
    [ "$(id -u)" -eq 0 ] || bench_die "must run as root (it creates network namespaces and TAPs); try: sudo $BENCH_CMDLINE"
    [ -e /dev/kvm ] || bench_die "/dev/kvm is missing: ftvmm boots real VMs and needs KVM on this machine"
    [ -r /dev/kvm ] && [ -w /dev/kvm ] || bench_die "/dev/kvm is not readable and writable"
    command -v ip >/dev/null || bench_die "'ip' not found: install iproute2"
    command -v python3 >/dev/null || bench_die "python3 not found"

    # One bench per prefix at a time; a second one would tear the first one's topology down.
    exec {BENCH_LOCK_FD}>"/tmp/ftvmm-bench-${NETNS_PREFIX}.lock"
    flock -n "$BENCH_LOCK_FD" || bench_die "another bench is running with NETNS_PREFIX=$NETNS_PREFIX (lock /tmp/ftvmm-bench-${NETNS_PREFIX}.lock); use another NETNS_PREFIX"

    BENCH_WORK="$(mktemp -d "/tmp/ftvmm-$BENCH_NAME.XXXXXX")"
    trap bench_cleanup EXIT
    trap 'bench_log "interrupted"; exit 130' INT
    trap 'bench_log "terminated"; exit 143' TERM
    mkdir -p "$BENCH_OUT"
    BENCH_RESULTS="$BENCH_WORK/results"
    mkdir -p "$BENCH_RESULTS"
    bench_find_binaries
}

bench_find_binaries() {
    local tdir="${FTVMM_TARGET_DIR:-target}"
    case "$tdir" in /*) ;; *) tdir="$BENCH_REPO/$tdir" ;; esac
    if [ "${FTVMM_BUILD:-1}" != 0 ]; then
        bench_log "cargo build --release (target dir $tdir)"
        (cd "$BENCH_REPO" && CARGO_TARGET_DIR="$tdir" cargo build --release --quiet --bin ftvmm --bin ftvmm-relay) ||
            bench_die "cargo build failed (set FTVMM_BUILD=0 to use existing binaries in $tdir/release)"
    fi
    FTVMM="$tdir/release/ftvmm"
    RELAY="$tdir/release/ftvmm-relay"
    [ -x "$FTVMM" ] || bench_die "$FTVMM not found: build it (cargo build --release) or set FTVMM_TARGET_DIR"
    [ -x "$RELAY" ] || bench_die "$RELAY not found: build it (cargo build --release) or set FTVMM_TARGET_DIR"
}

bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    bench_stop_all
    bench_topology_down
    if [ -n "$BENCH_WORK" ] && [ -d "$BENCH_WORK" ]; then
        if [ "$BENCH_OK" = 1 ] && [ "$BENCH_WARNED" = 0 ] && [ "${BENCH_KEEP:-0}" != 1 ]; then
            rm -rf "$BENCH_WORK"
        else
            echo "$BENCH_NAME: VM logs kept in $BENCH_WORK" >&2
        fi
    fi
    exit "$rc"
}

# ------------------------------------------------------------------ tools

bench_need_redis_tools() {
    command -v redis-benchmark >/dev/null && command -v redis-cli >/dev/null && return
    bench_log "installing redis-tools (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-tools >/dev/null ||
        bench_die "could not install redis-tools"
}

# True if this ftvmm has the status endpoint (`--status` and `ftvmm status`).
BENCH_HAS_STATUS=""
bench_has_status() {
    if [ -z "$BENCH_HAS_STATUS" ]; then
        BENCH_HAS_STATUS=0
        local top run
        top="$("$FTVMM" --help 2>/dev/null || true)"
        run="$("$FTVMM" run --help 2>/dev/null || true)"
        if grep -qE '^ +status ' <<<"$top" && grep -q -- '--status' <<<"$run"; then
            BENCH_HAS_STATUS=1
        fi
    fi
    [ "$BENCH_HAS_STATUS" = 1 ]
}

# The --status flag for a VM, or nothing when this ftvmm has none.
bench_status_flag() { # port
    if bench_has_status; then echo "--status 127.0.0.1:$1"; fi
}

# One status snapshot (JSON) of the VM serving status on 127.0.0.1:PORT in NS; empty if none.
bench_status() { # ns port
    bench_has_status || return 0
    ip netns exec "$1" "$FTVMM" status "127.0.0.1:$2" 2>/dev/null || true
}

# Field of a flat JSON object: bench_json '{"a":1}' a -> 1
bench_json() {
    python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2" 2>/dev/null || true
}

# ------------------------------------------------------------------ topology

bench_topology_up() {
    "$BENCH_REPO/scripts/netns.sh" down >/dev/null
    "$BENCH_REPO/scripts/netns.sh" up >/dev/null
}

bench_topology_down() {
    "$BENCH_REPO/scripts/netns.sh" down >/dev/null 2>&1 || true
}

# A second persistent TAP on HOST's bridge, for a second VM on that host.
bench_add_tap() { # ns tapname
    ip -n "$1" link show dev "$2" >/dev/null 2>&1 || ip -n "$1" tuntap add dev "$2" mode tap
    ip -n "$1" link set "$2" master br0
    ip -n "$1" link set "$2" up
}

# ------------------------------------------------------------------ processes

# bench_spawn NAME NS CMD...: start CMD in namespace NS in the background, stdout and stderr to
# $BENCH_WORK/NAME.out and NAME.err; remembers its pid (ip netns exec execs CMD: same pid).
bench_spawn() {
    local name="$1" ns="$2"
    shift 2
    NO_COLOR=1 FTVMM_LOG="${FTVMM_LOG:-info}" ip netns exec "$ns" "$@" >"$BENCH_WORK/$name.out" 2>"$BENCH_WORK/$name.err" &
    BENCH_PIDS[$name]=$!
}

bench_alive() { # name
    local pid="${BENCH_PIDS[$1]:-}"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# bench_wait_for NAME out|err REGEX [TIMEOUT_S]: wait until NAME's stdout/stderr matches.
bench_wait_for() {
    local name="$1" stream="$2" re="$3" timeout="${4:-30}" i
    local f="$BENCH_WORK/$name.$stream"
    for ((i = 0; i < timeout * 20; i++)); do
        if grep -qE "$re" "$f" 2>/dev/null; then return 0; fi
        if ! bench_alive "$name"; then
            grep -qE "$re" "$f" 2>/dev/null && return 0
            bench_dump "$name"
            bench_die "$name exited before printing /$re/"
        fi
        sleep 0.05
    done
    bench_dump "$name"
    bench_die "$name did not print /$re/ within ${timeout}s"
}

# bench_poll FILE REGEX [TIMEOUT_S]: like bench_wait_for but returns 1 instead of failing.
bench_poll() {
    local i
    for ((i = 0; i < ${3:-10} * 20; i++)); do
        grep -qE "$2" "$1" 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

bench_dump() { # name
    echo "---- $1 stdout (tail)" >&2
    tail -n 20 "$BENCH_WORK/$1.out" >&2 2>/dev/null || true
    echo "---- $1 stderr (tail)" >&2
    tail -n 30 "$BENCH_WORK/$1.err" >&2 2>/dev/null || true
}

# bench_stop NAME [TIMEOUT_S]: SIGTERM, then SIGKILL after TIMEOUT_S; reaps it. Returns 0.
bench_stop() {
    local name="$1" timeout="${2:-10}" pid i
    pid="${BENCH_PIDS[$name]:-}"
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < timeout * 20; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            bench_log "$name (pid $pid) ignored SIGTERM for ${timeout}s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
    unset "BENCH_PIDS[$name]"
}

# bench_wait_exit NAME [TIMEOUT_S]: wait for NAME to exit by itself; 1 if it did not.
bench_wait_exit() {
    local name="$1" timeout="${2:-10}" pid i
    pid="${BENCH_PIDS[$name]:-}"
    [ -n "$pid" ] || return 0
    for ((i = 0; i < timeout * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || {
            wait "$pid" 2>/dev/null || true
            unset "BENCH_PIDS[$name]"
            return 0
        }
        sleep 0.05
    done
    return 1
}

bench_stop_all() {
    local name
    for name in "${!BENCH_PIDS[@]}"; do
        kill -TERM "${BENCH_PIDS[$name]}" 2>/dev/null || true
    done
    sleep 0.3
    for name in "${!BENCH_PIDS[@]}"; do
        bench_stop "$name" 3
    done
}

# ------------------------------------------------------------------ VMs

# The bench's replica group certificates (`ftvmm certs init`, once per run).
bench_certs() {
    [ -d "$BENCH_WORK/certs" ] || "$FTVMM" certs init "$BENCH_WORK/certs" --members 9 >/dev/null ||
        bench_die "ftvmm certs init failed"
}

# bench_vm NAME NS MODE [ARGS...]: start `ftvmm MODE ARGS...` in NS (not waiting). A
# replicating MODE (primary, backup, replica) gets a member certificate of the bench's
# group (--tls-dir), unless ARGS say --insecure (a bench that measures without TLS) or
# --tls-dir themselves.
BENCH_TLS_NEXT=0
bench_vm() {
    local name="$1" ns="$2" mode="$3"
    shift 3
    case "$mode" in
        primary | backup | replica)
            if [[ " $* " != *" --insecure "* && " $* " != *" --tls-dir "* ]]; then
                bench_certs
                BENCH_TLS_NEXT=$((BENCH_TLS_NEXT % 9 + 1))
                set -- --tls-dir "$BENCH_WORK/certs/member-$BENCH_TLS_NEXT" "$@"
            fi
            ;;
    esac
    bench_spawn "$name" "$ns" "$FTVMM" "$mode" "$@"
}

# The guest prints this on its console (the VMM's stdout) once its server listens.
BENCH_READY_RE='kv-server: listening'

# bench_wait_guest NAME IP: console says it listens and it answers PING from the client.
bench_wait_guest() {
    local name="$1" ip="$2" i
    bench_wait_for "$name" out "$BENCH_READY_RE" 30
    for ((i = 0; i < 100; i++)); do
        if [ "$(ip netns exec "$NS_C" timeout 2 redis-cli -h "$ip" ping 2>/dev/null)" = PONG ]; then return 0; fi
        sleep 0.1
    done
    bench_dump "$name"
    bench_die "guest $ip ($name) does not answer PING from $NS_C"
}

# Log lines that say a pair came apart while both ran (checked after every pairing).
BENCH_BROKEN_P='UNPROTECTED|backup lost'
BENCH_BROKEN_B='GOING LIVE|primary lost'
BENCH_PAIR_RETRIES=0
BENCH_PAIR_BROKEN_NOTES=()

# True if the running pair primary/backup is still paired (neither side gave the other up).
bench_pair_intact() {
    ! grep -qE "$BENCH_BROKEN_P" "$BENCH_WORK/primary.err" 2>/dev/null &&
        ! grep -qE "$BENCH_BROKEN_B" "$BENCH_WORK/backup.err" 2>/dev/null
}

# bench_start_pair CONNECT: primary in host-a listening on $HOST_A_IP:7000, backup in host-b
# connecting to CONNECT (the primary, or a relay to it), extra flags from the arrays
# PAIR_PRIMARY_ARGS and PAIR_BACKUP_ARGS. Waits until the guest answers, then checks (after
# BENCH_SETTLE_S, default 1 s) that the pair is still intact; a pair that came apart at boot
# (seen on loaded machines: the primary's ack timeout runs out while the backup still loads the
# boot state) is stopped, noted and started again, up to 5 times.
bench_start_pair() {
    local connect="$1" try
    for ((try = 1; try <= 5; try++)); do
        bench_vm primary "$NS_A" primary --listen "$HOST_A_IP:7000" --tap tap0 --guest-ip "$GUEST_IP/24" "${PAIR_PRIMARY_ARGS[@]}"
        # A backup that reaches a relay before the primary listens fails its handshake: wait.
        bench_wait_for primary err 'waiting for (a backup|its first follower)' 30
        bench_vm backup "$NS_B" backup --primary "$connect" --tap tap0 --guest-ip "$GUEST_IP/24" "${PAIR_BACKUP_ARGS[@]}"
        bench_wait_for backup err 'backup paired' 30
        bench_wait_guest primary "$GUEST_IP"
        sleep "${BENCH_SETTLE_S:-1}"
        if bench_pair_intact; then
            return 0
        fi
        BENCH_PAIR_RETRIES=$((BENCH_PAIR_RETRIES + 1))
        local why
        why="$(grep -hE "$BENCH_BROKEN_P|$BENCH_BROKEN_B" "$BENCH_WORK/primary.err" "$BENCH_WORK/backup.err" | sed 's/^[^ ]* *//' | tr '\n' ';')"
        BENCH_PAIR_BROKEN_NOTES+=("$why")
        bench_warn "the pair came apart right after boot (try $try): $why"
        cp "$BENCH_WORK/primary.err" "$BENCH_WORK/primary-broken$BENCH_PAIR_RETRIES.err"
        cp "$BENCH_WORK/backup.err" "$BENCH_WORK/backup-broken$BENCH_PAIR_RETRIES.err"
        bench_stop primary 5
        bench_stop backup 5
    done
    bench_die "could not get an intact pair in 5 tries"
}

# ------------------------------------------------------------------ measuring

# bench_rb IP TEST CLIENTS N: redis-benchmark from the client namespace; prints
# "rps avg p50 p95 p99 max" (ms). A time limit guards against redis-benchmark spinning forever
# when the server goes away.
bench_rb() {
    local ip="$1" test="$2" c="$3" n="$4" out limit
    limit=$((60 + n / 100))
    out="$(ip netns exec "$NS_C" timeout "$limit" redis-benchmark -h "$ip" -p 6379 -t "$test" -c "$c" -n "$n" --csv 2>"$BENCH_WORK/rb.err")" ||
        {
            cat "$BENCH_WORK/rb.err" >&2
            bench_die "redis-benchmark -t $test -c $c -n $n against $ip failed (or took over ${limit}s)"
        }
    echo "$out" | sed 1d | tr -d '"' | awk -F, 'NF >= 8 { print $2, $3, $5, $6, $7, $8; exit }'
}

# TCP ping-pong floor: server in NS_SRV on ADDR, client in NS_CLI to CONNECT_ADDR.
# Prints the client's JSON summary.
bench_pingpong() { # ns_cli connect_addr [count] [max_seconds]
    ip netns exec "$1" timeout 60 python3 "$BENCH_LIB/benchtools.py" pp-client "$2" --count "${3:-5000}" --max-seconds "${4:-4}"
}

bench_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "" || b == "") print "-"; else printf "%.2f", a / b }'; }
bench_sub() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print "-"; else printf "%.3f", a - b }'; }

# Header lines for every results file: what made it, where, when.
bench_provenance() {
    echo "- command: \`$BENCH_CMDLINE\`"
    local src
    if [ -n "${FTVMM_SOURCE_REV:-}" ]; then
        src="$FTVMM_SOURCE_REV"
    else
        src="$(git -C "$BENCH_REPO" rev-parse --short HEAD)$(git -C "$BENCH_REPO" diff --quiet HEAD -- vmm guest logging-channel resp-kv 2>/dev/null || echo ' + uncommitted changes')"
    fi
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); machine: $(nproc) cores ($(uname -r)), load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); ftvmm built from $src"
}

# Results are written to $BENCH_RESULTS (in the work dir) and only moved to bench/ by
# bench_publish at the end of a complete run, so an interrupted run leaves bench/ as it was.
bench_publish() {
    local f
    for f in "$BENCH_RESULTS"/*; do
        [ -e "$f" ] || continue
        mv -f "$f" "$BENCH_OUT/"
    done
}

# Draw the plots from whatever CSVs exist under bench/ (best effort: a plot is not a result).
bench_plot() {
    python3 "$BENCH_REPO/scripts/bench-plot.py" "$BENCH_OUT" || bench_log "plotting failed (results are in the CSV/markdown files)"
}

# End of a complete run: publish the results, draw the plots, show the report
# (`$MD`, written under $BENCH_RESULTS), list what was written ($1).
bench_finish() {
    bench_publish
    MD="$BENCH_OUT/$(basename "$MD")"
    bench_plot
    echo
    cat "$MD"
    echo
    echo "(written to $1)"
    BENCH_OK=1
}
