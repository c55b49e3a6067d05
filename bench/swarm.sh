#!/usr/bin/env bash
# Many nodes: for each count in COUNTS (100 1000 10000), that many simulated nodes
# (`corral-agent --simulate --nodes N`, one process, each node its own connection,
# session and heartbeats) join one pool and heartbeat every second (the default) for
# DURATION seconds (60). Prints the coordinator's CPU over that time as a share of
# one core, its resident memory, and how many nodes were lost (should be 0).
# Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
COUNTS=${COUNTS:-100 1000 10000}
DURATION=${DURATION:-60}
# Every node is a connection, in the simulator and in the coordinator.
ulimit -n "$(ulimit -Hn)"
. bench/common.sh

SIM_PID=
stop_sim() { [ -z "$SIM_PID" ] || { kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=; }; }
trap 'stop_sim; stop_coordinator; rm -rf "$WORK"' EXIT
TICKS=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
count_state() { "$BIN/corral" -o json node list --pool swarm | grep -c "\"state\": \"$1\"" || true; }

for count in $COUNTS; do
    rm -rf "$WORK/data"
    start_coordinator
    "$BIN/corral" pool create swarm --slots-per-node 1 >/dev/null
    t0=$(now)
    RUST_LOG=warn "$BIN/corral-agent" --pool swarm --slots 1 --simulate --nodes "$count" --work-dir "$WORK/sim" \
        2>"$WORK/sim.log" &
    SIM_PID=$!
    while [ "$(count_state idle)" -lt "$count" ]; do sleep 0.2; done
    t1=$(now)
    c0=$(cpu_ticks "$COORD_PID") s0=$(now)
    sleep "$DURATION"
    c1=$(cpu_ticks "$COORD_PID") s1=$(now)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$COORD_PID/status")
    idle=$(count_state idle) lost=$(count_state lost)
    printf '%d nodes: joined in %.1fs; over %ds: coordinator %.1f%% of one core, RSS %d MiB; idle %d, lost %d\n' \
        "$count" "$(echo "$t1 - $t0" | bc -l)" "$DURATION" \
        "$(echo "($c1 - $c0) * 100 / $TICKS / ($s1 - $s0)" | bc -l)" "$((rss / 1024))" "$idle" "$lost"
    stop_sim
    stop_coordinator
done
