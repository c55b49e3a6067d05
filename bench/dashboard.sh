#!/usr/bin/env bash
# Dashboard API latency with a job of 1,000,000 tasks (goal: every page < 100 ms).
# A local pool of 2 nodes x 2 slots works through the job (`sleep 2` tasks) while
# each page the dashboard uses is fetched REPS times with curl; prints the median
# and the slowest fetch of each. Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
REPS=${REPS:-21}
. bench/common.sh


start_coordinator
"$BIN/corral" pool create bench --provider local --nodes 2 --slots-per-node 2 >/dev/null
wait_idle_nodes bench 2
t0=$(now)
job=$("$BIN/corral" -o json job submit --pool bench --array "0-$((N - 1))" -- sleep 2 | grep -o '"job_id": [0-9]*' | grep -o '[0-9]*')
printf 'submitted %d tasks in %.2fs\n' "$N" "$(echo "$(now) - $t0" | bc -l)"
# Let some tasks finish, so the pages mix states.
sleep 5

pages=(
    "/api/pools"
    "/api/nodes"
    "/api/jobs?limit=50"
    "/api/jobs/$job"
    "/api/jobs/$job/tasks?offset=0&limit=50"
    "/api/jobs/$job/tasks?offset=999950&limit=50"
    "/api/jobs/$job/tasks?state=ready&offset=500000&limit=50"
    "/api/jobs/$job/tasks?state=succeeded&limit=50"
    "/api/jobs/$job/tasks?state=running&limit=50"
    "/api/jobs/$job/tasks/999999"
    "/api/jobs/$job/tasks/0/log?stream=stdout"
    "/api/events?after=0&limit=100"
    "/metrics"
)
printf '%-58s %10s %10s\n' page median_ms max_ms
for page in "${pages[@]}"; do
    times=()
    for _ in $(seq "$REPS"); do
        times+=("$(curl_api -o /dev/null -w '%{time_total}' "$HTTP_URL$page")")
    done
    med=$(printf '%s\n' "${times[@]}" | median)
    max=$(printf '%s\n' "${times[@]}" | sort -n | tail -1)
    printf '%-58s %10.1f %10.1f\n' "$page" "$(echo "$med * 1000" | bc -l)" "$(echo "$max * 1000" | bc -l)"
done
"$BIN/corral" job cancel "$job" >/dev/null
