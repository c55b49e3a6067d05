#!/usr/bin/env bash
# Dispatch over HTTP: N (default 1,000) `POST /api/templates/t/dispatch`, each with a
# 1 KiB payload stored as an object and a job made durably (the store's fsync), from
# one keep-alive connection and from 8, against the HTTP round trip with nothing
# behind it (N `GET /healthz` on one connection). Then the time until every
# dispatched job (one task: `cat "$CORRAL_PAYLOAD"` on a local pool of 2 nodes x 1
# slot) has completed. All legs alternate in one invocation, RUNS (3) times; prints
# every run and the medians. Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
RUNS=${RUNS:-3}
. bench/common.sh

wait_done() { # jobs expected
    for _ in $(seq 6000); do
        done=$("$BIN/corral" -o json job list | grep -c '"state": "completed"' || true)
        [ "$done" -ge "$1" ] && return 0
        sleep 0.05
    done
    echo "the dispatched jobs did not complete" >&2
    return 1
}

declare -A RESULTS
for run in $(seq "$RUNS"); do
    for threads in 1 8; do
        rm -rf "$WORK/data"
        start_coordinator
        "$BIN/corral" pool create bench --provider local --nodes 2 --slots-per-node 1 >/dev/null
        wait_idle_nodes bench 2
        "$BIN/corral" template create t --pool bench --payload required -- sh -c 'cat "$CORRAL_PAYLOAD" >/dev/null' >/dev/null
        floor=$(python3 bench/dispatch.py "$HTTP_URL" "$CORRAL_TOKEN_FILE" "$N" 1 --healthz)
        sync
        t0=$(now)
        accept=$(python3 bench/dispatch.py "$HTTP_URL" "$CORRAL_TOKEN_FILE" "$N" "$threads")
        wait_done "$N"
        t1=$(now)
        stop_coordinator
        all=$(echo "$t1 - $t0" | bc -l)
        printf 'run %s threads %s: healthz %ss, dispatch %ss (%s/s), all done %.3fs\n' \
            "$run" "$threads" "$floor" "$accept" "$(echo "$N / $accept" | bc)" "$all"
        RESULTS[floor]+="$floor "$'\n'
        RESULTS[accept$threads]+="$accept"$'\n'
        RESULTS[all$threads]+="$all"$'\n'
    done
done
m() { echo -n "${RESULTS[$1]}" | tr -s ' \n' '\n' | sed '/^$/d' | median; }
echo "medians over $RUNS runs of $N:"
echo "  GET /healthz, 1 connection:   $(m floor)s"
for threads in 1 8; do
    a=$(m "accept$threads")
    echo "  dispatch, $threads connection(s):   ${a}s ($(echo "$N / $a" | bc) dispatches/s); all jobs done after $(m "all$threads")s"
done
