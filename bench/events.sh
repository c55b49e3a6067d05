#!/usr/bin/env bash
# The event feed under load: N (default 10,000) `/bin/true` tasks on a local pool
# of 2 nodes x 1 slot, run RUNS times without and RUNS times with a follower
# (`corral -o json events --follow`), alternating. Prints the job's wall time each
# way, the events recorded, how fast the follower received them (events/s from the
# submit until it had the last one), how far behind it was when the job ended, and
# how fast a reader gets the whole backlog afterwards.
# Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RUNS=${RUNS:-3}
. bench/common.sh

last_event() { curl_api "$HTTP_URL/api/events?limit=1" | grep -o '"last_id":[0-9]*' | grep -o '[0-9]*$'; }

plain=() followed=() rates=() catchups=()
for run in $(seq "$RUNS"); do
    for mode in plain followed; do
        rm -rf "$WORK/data"
        start_coordinator
        "$BIN/corral" pool create bench --provider local --nodes 2 --slots-per-node 1 >/dev/null
        wait_idle_nodes bench 2
        first=$(last_event)
        follower=
        if [ "$mode" = followed ]; then
            "$BIN/corral" -o json events --follow --after "$first" >"$WORK/feed" &
            follower=$!
        fi
        t0=$(now)
        "$BIN/corral" job submit --pool bench --array "1-$N" --wait -- /bin/true >/dev/null
        t1=$(now)
        job=$(echo "$t1 - $t0" | bc -l)
        if [ -n "$follower" ]; then
            last=$(last_event)
            while [ "$(tail -n 1 "$WORK/feed" | grep -o '"id":[0-9]*' | grep -o '[0-9]*$' || echo 0)" -lt "$last" ]; do
                sleep 0.01
            done
            t2=$(now)
            kill "$follower" 2>/dev/null || true
            wait "$follower" 2>/dev/null || true
            got=$(wc -l <"$WORK/feed")
            rate=$(echo "$got / ($t2 - $t0)" | bc -l)
            printf 'run %d followed: job %.2fs, %d events received, %.0f events/s, caught up %.2fs after the job ended\n' \
                "$run" "$job" "$got" "$rate" "$(echo "$t2 - $t1" | bc -l)"
            # And a reader catching up on the whole backlog at once.
            t3=$(now)
            backlog=$("$BIN/corral" -o json events --after "$first" | wc -l)
            catchup=$(echo "$backlog / ($(now) - $t3)" | bc -l)
            printf '        backlog: %d events read in one go at %.0f events/s\n' "$backlog" "$catchup"
            followed+=("$job") rates+=("$rate") catchups+=("$catchup")
        else
            printf 'run %d plain:    job %.2fs, %d events recorded\n' "$run" "$job" "$(( $(last_event) - first ))"
            plain+=("$job")
        fi
        stop_coordinator
    done
done
mp=$(printf '%s\n' "${plain[@]}" | median)
mf=$(printf '%s\n' "${followed[@]}" | median)
mr=$(printf '%s\n' "${rates[@]}" | median)
mc=$(printf '%s\n' "${catchups[@]}" | median)
printf 'median: job %.2fs without a follower, %.2fs with (ratio %.2f); follower %.0f events/s live, %.0f events/s reading the backlog (%d tasks, %d runs)\n' \
    "$mp" "$mf" "$(echo "$mf / $mp" | bc -l)" "$mr" "$mc" "$N" "$RUNS"
