#!/usr/bin/env bash
# The two stores side by side, alternating in one invocation, RUNS (3) times each:
# 1. the simulated ceiling (as bench/ceiling.sh's first part): N (200,000) tasks as
#    one array on NODES (4) simulated nodes x SLOTS (64), `job submit --wait`;
# 2. throughput on real tasks (as bench/throughput.sh): T (10,000) `/bin/true` tasks
#    on a local pool of 2 nodes x 1 slot;
# 3. restart: QUEUED (1,000,000) tasks queued (one array) on a pool with no nodes,
#    the coordinator SIGKILLed, timed from its new start to its first answer.
# SQLite in the data dir, and PostgreSQL on this host (a server of this script's own,
# default settings: fsync and synchronous_commit on). Prints every run and medians.
# LEGS picks the parts (default: ceiling real restart).
# Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
T=${T:-10000}
QUEUED=${QUEUED:-1000000}
NODES=${NODES:-4}
SLOTS=${SLOTS:-64}
RUNS=${RUNS:-3}
LEGS=${LEGS:-ceiling real restart}
. bench/common.sh
trap 'stop_sim; stop_coordinator; pg_stop; rm -rf "$WORK"' EXIT
pg_start

# The coordinator flags of a store, on a fresh one.
fresh() {
    rm -rf "$WORK/data"
    case "$1" in
        sqlite) ARGS=(--store sqlite) ;;
        postgres) pg_fresh_db; ARGS=(--store "$PG_URL") ;;
    esac
}
ceiling_run() {
    fresh "$1"
    start_coordinator "${ARGS[@]}"
    "$BIN/corral" pool create sim --slots-per-node "$SLOTS" >/dev/null
    start_sim
    wait_idle_nodes sim "$NODES"
    local t0 t1
    t0=$(now)
    "$BIN/corral" job submit --pool sim --array "1-$N" --wait -- /bin/true >/dev/null
    t1=$(now)
    stop_sim
    stop_coordinator
    echo "$t1 - $t0" | bc -l
}
real_run() {
    fresh "$1"
    local saved=$N
    N=$T
    sync
    throughput_run "${ARGS[@]}"
    N=$saved
}
restart_run() {
    fresh "$1"
    start_coordinator "${ARGS[@]}"
    "$BIN/corral" pool create idle --slots-per-node 1 >/dev/null
    "$BIN/corral" job submit --pool idle --array "1-$QUEUED" -- /bin/true >/dev/null
    kill -KILL "$COORD_PID"
    wait "$COORD_PID" 2>/dev/null || true
    COORD_PID=
    local t0 t1
    t0=$(now)
    start_coordinator "${ARGS[@]}"
    until "$BIN/corral" job list >/dev/null 2>&1; do sleep 0.01; done
    t1=$(now)
    stop_coordinator
    echo "$t1 - $t0" | bc -l
}

declare -A results
for run in $(seq "$RUNS"); do
    for leg in $LEGS; do
        for store in sqlite postgres; do
            t=$("${leg}_run" "$store")
            results[$leg.$store]+="$t "
            case $leg in
                ceiling) printf 'run %d %-8s ceiling: %.2fs, %.0f tasks/s\n' "$run" "$store" "$t" "$(echo "$N / $t" | bc -l)" ;;
                real) printf 'run %d %-8s %d real tasks: %.2fs, %.0f tasks/s\n' "$run" "$store" "$T" "$t" "$(echo "$T / $t" | bc -l)" ;;
                restart) printf 'run %d %-8s restart with %d queued: %.2fs\n' "$run" "$store" "$QUEUED" "$t" ;;
            esac
        done
    done
done
echo "== medians ($RUNS runs)"
for leg in $LEGS; do
    for store in sqlite postgres; do
        m=$(printf '%s\n' ${results[$leg.$store]} | median)
        case $leg in
            ceiling) printf '%-8s ceiling: %.2fs, %.0f tasks/s\n' "$store" "$m" "$(echo "$N / $m" | bc -l)" ;;
            real) printf '%-8s %d real tasks: %.2fs, %.0f tasks/s\n' "$store" "$T" "$m" "$(echo "$T / $m" | bc -l)" ;;
            restart) printf '%-8s restart with %d queued: %.2fs\n' "$store" "$QUEUED" "$m" ;;
        esac
    done
done
