#!/usr/bin/env bash
# Queue capacity: accept N (default 1,000,000) tasks as one array durably on a pool
# with no nodes, and report the submit time and the coordinator's memory.
# Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000000}
. bench/common.sh
start_coordinator
"$BIN/corral" pool create idle --slots-per-node 1 >/dev/null
rss() { awk '/^VmRSS/ {print $2}' "/proc/$COORD_PID/status"; }
before=$(rss)
t0=$(now)
"$BIN/corral" job submit --pool idle --array "1-$N" -- /bin/true >/dev/null
t1=$(now)
"$BIN/corral" -o json job show 1 | grep -q "\"ready\": $N"
after=$(rss)
printf 'accepted %d tasks durably in %.3fs; coordinator RSS %d MiB before, %d MiB holding them (+%d MiB, %.0f B/task)\n' \
    "$N" "$(echo "$t1 - $t0" | bc -l)" $((before / 1024)) $((after / 1024)) $(((after - before) / 1024)) \
    "$(echo "($after - $before) * 1024 / $N" | bc -l)"
# And after a restart, from the store:
stop_coordinator
t2=$(now)
start_coordinator
"$BIN/corral" -o json job show 1 | grep -q "\"ready\": $N"
t3=$(now)
printf 'restarted and restored them in %.3fs; RSS %d MiB\n' "$(echo "$t3 - $t2" | bc -l)" $(($(rss) / 1024))
