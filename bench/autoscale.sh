#!/usr/bin/env bash
# Autoscaling speed on a local pool (1 slot per node, min 0, max 3, idle timeout
# 2 s): a burst of N (default 60) one-second tasks is submitted to the empty pool.
# Reports the time from submission to the first task running, to 3 nodes up, to the
# job's end, and from the job's end to 0 nodes; then the same burst on a fixed pool
# of 3 for comparison. RUNS times (default 3). Build first: cargo build --release --workspace
# PROVIDER=docker does the same with containers of IMAGE (default corral-agent:latest,
# built by docker/agent-image.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-60}
RUNS=${RUNS:-3}
PROVIDER=${PROVIDER:-local}
IMAGE=${IMAGE:-corral-agent:latest}
case "$PROVIDER" in
    local) POOL=(--provider local) ;;
    docker) POOL=(--provider docker --image "$IMAGE"); LISTEN=0.0.0.0:0 ;;
    *) echo "PROVIDER is local or docker" >&2; exit 2 ;;
esac
. bench/common.sh
containers() { docker ps -aq --filter "label=corral.coordinator=$(cat "$WORK/data/instance")" | wc -l; }
live() { "$BIN/corral" -o json node list --pool "$1" | grep -cE '"state": "(idle|running)"' || true; }
running() { "$BIN/corral" -o json job show "$1" | awk -F': ' '/"running"/ {gsub(/,/, "", $2); print $2; exit}'; }
state() { "$BIN/corral" -o json job show "$1" | awk -F'"' '/"state"/ {print $4; exit}'; }

for run in $(seq "$RUNS"); do
    rm -rf "$WORK/data"
    start_coordinator
    "$BIN/corral" pool create auto "${POOL[@]}" --slots-per-node 1 --autoscale --min 0 --max 3 --idle-timeout 2s >/dev/null
    "$BIN/corral" pool create fixed "${POOL[@]}" --slots-per-node 1 --nodes 3 >/dev/null
    wait_idle_nodes fixed 3
    t0=$(now)
    job=$("$BIN/corral" -o json job submit --pool auto --array "1-$N" -- sleep 1 | awk -F': ' '/job_id/ {gsub(/,/, "", $2); print $2}')
    first="" full="" done_at=""
    while :; do
        t=$(now)
        [ -z "$first" ] && [ "$(running "$job")" -ge 1 ] && first=$(echo "$t - $t0" | bc -l)
        [ -z "$full" ] && [ "$(live auto)" -ge 3 ] && full=$(echo "$t - $t0" | bc -l)
        if [ "$(state "$job")" != active ]; then done_at=$t; break; fi
        sleep 0.02
    done
    while [ "$(live auto)" -gt 0 ]; do sleep 0.05; done
    released=$(echo "$(now) - $done_at" | bc -l)
    t1=$(now)
    "$BIN/corral" job submit --pool fixed --array "1-$N" --wait -- sleep 1 >/dev/null
    fixed=$(echo "$(now) - $t1" | bc -l)
    printf 'run %d: first task running %.2fs, 3 nodes up %.2fs, burst done %.2fs, released %.2fs after; fixed pool of 3: %.2fs\n' \
        "$run" "$first" "$full" "$(echo "$done_at - $t0" | bc -l)" "$released" "$fixed"
    if [ "$PROVIDER" = docker ]; then
        # Containers outlive their coordinator: delete the pools and wait for them to go.
        "$BIN/corral" pool delete auto >/dev/null
        "$BIN/corral" pool delete fixed >/dev/null
        while [ "$(containers)" -gt 0 ]; do sleep 0.1; done
    fi
    stop_coordinator
done
