#!/usr/bin/env bash
# What a standby costs in steady state: a release leader on this script's own
# PostgreSQL with NODES (10,000) simulated nodes heartbeating (every 1 s, the
# default), and a standby beside it. Over WINDOW (30) seconds each, alternating
# ROUNDS (3) times: the CPU of the PostgreSQL server (all its processes) without
# the standby and with it, and the standby's own CPU and memory.
# Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
NODES=${NODES:-10000}
SLOTS=1
WINDOW=${WINDOW:-30}
ROUNDS=${ROUNDS:-3}
. bench/common.sh
trap 'stop_sim; stop_coordinator; stop_standby; pg_stop; rm -rf "$WORK"' EXIT
pg_start
pg_fresh_db
mkdir -p "$WORK/objects"
ARGS=(--store "$PG_URL" --store-url "file://$WORK/objects")
start_coordinator "${ARGS[@]}"
"$BIN/corral" pool create sim --slots-per-node "$SLOTS" >/dev/null
start_sim
wait_idle_nodes sim "$NODES" || { sleep 20; wait_idle_nodes sim "$NODES"; }

ticks() { # CPU seconds (user + system) of the processes given
    local t=0
    for pid in "$@"; do
        t=$(( t + $(awk '{print $14 + $15}' "/proc/$pid/stat" 2>/dev/null || echo 0) ))
    done
    echo "$t / $(getconf CLK_TCK)" | bc -l
}
pg_cpu() { ticks $(pgrep -u postgres); }
window() { # -> PostgreSQL CPU seconds over WINDOW, and the standby's if running
    local p0 b0 p1 b1
    p0=$(pg_cpu); b0=$( [ -z "$B_PID" ] && echo 0 || ticks "$B_PID")
    sleep "$WINDOW"
    p1=$(pg_cpu); b1=$( [ -z "$B_PID" ] && echo 0 || ticks "$B_PID")
    echo "$(echo "$p1 - $p0" | bc -l) $(echo "$b1 - $b0" | bc -l)"
}
for round in $(seq "$ROUNDS"); do
    read -r pg _ < <(window)
    printf 'round %d without standby: PostgreSQL %.2f CPU-s in %ds\n' "$round" "$pg" "$WINDOW"
    start_standby "${ARGS[@]}"
    read -r pg standby < <(window)
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$B_PID/status")
    printf 'round %d with standby:    PostgreSQL %.2f CPU-s in %ds; standby %.3f CPU-s, %d KiB resident\n' \
        "$round" "$pg" "$WINDOW" "$standby" "$rss"
    stop_standby
done
