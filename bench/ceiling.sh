#!/usr/bin/env bash
# The coordinator alone: simulated nodes (`corral-agent --simulate`) run nothing and
# report each task succeeded at once, so what is timed is scheduling, the durable
# store and the streams.
#
# 1. N (default 200,000) tasks as one array on NODES (4) simulated nodes x SLOTS (64),
#    durable store on, timed from `job submit --wait` to its exit, RUNS (3) times.
# 2. Throughput by queue depth: DEPTHS (1000 100000 1000000) tasks queued before the
#    nodes join, timed from starting the nodes to the last task done.
# 3. Many small jobs: JOBS (10,000) jobs of 10 tasks queued, then the nodes start;
#    timed to the last job done.
# Prints every run and the medians. Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
NODES=${NODES:-4}
SLOTS=${SLOTS:-64}
RUNS=${RUNS:-3}
DEPTHS=${DEPTHS:-1000 100000 1000000}
JOBS=${JOBS:-10000}
. bench/common.sh

trap 'stop_sim; stop_coordinator; rm -rf "$WORK"' EXIT
# Waits until no job of pool sim is active.
wait_drained() {
    while [ "$("$BIN/corral" -o json pool show sim | grep -o '"active_jobs": [0-9]*' | grep -o '[0-9]*$')" != 0 ]; do
        sleep 0.02
    done
}
TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

echo "== $N tasks, $NODES simulated nodes x $SLOTS slots, submit to completed"
times=()
for run in $(seq "$RUNS"); do
    rm -rf "$WORK/data"
    start_coordinator
    "$BIN/corral" pool create sim --slots-per-node "$SLOTS" >/dev/null
    start_sim
    wait_idle_nodes sim "$NODES"
    c0=$(cpu_ticks "$COORD_PID")
    t0=$(now)
    "$BIN/corral" job submit --pool sim --array "1-$N" --wait -- /bin/true >/dev/null
    t1=$(now)
    c1=$(cpu_ticks "$COORD_PID")
    stop_sim
    stop_coordinator
    t=$(echo "$t1 - $t0" | bc -l)
    printf 'run %d: %.2fs, %.0f tasks/s, coordinator cpu %.1f us/task\n' "$run" "$t" "$(echo "$N / $t" | bc -l)" \
        "$(echo "($c1 - $c0) * 1000000 / $TICKS / $N" | bc -l)"
    times+=("$t")
done
m=$(printf '%s\n' "${times[@]}" | median)
printf 'median: %.2fs, %.0f tasks/s (%d tasks, %d runs)\n' "$m" "$(echo "$N / $m" | bc -l)" "$N" "$RUNS"

# Starts a fresh coordinator with pool sim, runs the queueing command given, then
# starts the nodes; prints the seconds from their start to the pool's last job done.
queued_then_drained() {
    rm -rf "$WORK/data"
    start_coordinator
    "$BIN/corral" pool create sim --slots-per-node "$SLOTS" >/dev/null
    "$@"
    local t0 t1
    t0=$(now)
    start_sim
    wait_drained
    t1=$(now)
    stop_sim
    stop_coordinator
    echo "$t1 - $t0" | bc -l
}
one_array() { "$BIN/corral" job submit --pool sim --array "1-$1" -- /bin/true >/dev/null; }
small_jobs() {
    seq "$JOBS" | xargs -P 4 -n 50 sh -c 'for i; do "$0" job submit --pool sim --array 1-10 -- /bin/true >/dev/null; done' "$BIN/corral"
}

echo "== queue depth: tasks queued before $NODES nodes x $SLOTS slots join, nodes started to all done"
for depth in $DEPTHS; do
    t=$(queued_then_drained one_array "$depth")
    printf 'depth %d: %.2fs, %.0f tasks/s\n' "$depth" "$t" "$(echo "$depth / $t" | bc -l)"
done

echo "== $JOBS jobs of 10 tasks queued, then $NODES nodes x $SLOTS slots join"
t=$(queued_then_drained small_jobs)
printf '%d jobs: %.2fs, %.0f jobs/s, %.0f tasks/s\n' "$JOBS" "$t" "$(echo "$JOBS / $t" | bc -l)" "$(echo "$JOBS * 10 / $t" | bc -l)"
