#!/usr/bin/env bash
# Failover time: from a SIGKILL of the leading coordinator to the first task run
# under the standby that takes over, with QUEUED tasks waiting (default: 1,000,
# 100,000 and 1,000,000), RUNS (3) times each, with the default lease (3 s).
#
# Two release coordinators on one PostgreSQL database of this script's own (on this
# host, default settings), sharing a file:// object store; one simulated node
# (64 slots) that knows both. The array is submitted with --begin a moment after
# the kill, so no task runs before it and the first one to run is the new
# leader's; its first success is seen by polling the standby's HTTP API (a
# standby answers 307, a leader JSON). Also printed: the standby's own part (from
# "leading" to "state restored", from its JSON log).
#
# MODE=midrun: half of QUEUED are run first (on the simulated node, which finishes
# them at once) in an open job, which stays active, so QUEUED/2 tasks each have a
# task row and an attempt row that the new leader restores; the other half is the
# array that waits.
# Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
SIZES=${SIZES:-1000 100000 1000000}
RUNS=${RUNS:-3}
. bench/common.sh
trap 'stop_sim; stop_coordinator; stop_standby; pg_stop; rm -rf "$WORK"' EXIT
pg_start
NODES=1
SLOTS=64

# A leader and a standby on a fresh database, and the simulated node, idle.
start_pair() {
    pg_fresh_db
    rm -rf "$WORK/data" "$WORK/objects" "$WORK/sim"
    mkdir -p "$WORK/objects"
    local args=(--store "$PG_URL" --store-url "file://$WORK/objects")
    start_coordinator "${args[@]}"
    "$BIN/corral" pool create sim --slots-per-node "$SLOTS" >/dev/null
    start_standby --log-format json "${args[@]}"
    CORRAL_COORDINATOR="$URL,$B_URL" start_sim
    wait_idle_nodes sim 1
}

# When the standby took the lease, and when it had the state, in seconds after $1
# (from its JSON log).
standby_times() {
    jq -r 'select(.fields.message | test("^leading|^state restored")) | .timestamp' "$WORK/b.log" |
        python3 -c 'import sys,datetime as d; t=[d.datetime.fromisoformat(l.strip().replace("Z","+00:00")).timestamp()-'"$1"' for l in sys.stdin]; print(t[0], t[1])'
}

failover_run() { # queued, ran
    start_pair
    local job=1
    if [ "$2" -gt 0 ]; then
        # An open job (it stays active, so all it holds is restored) whose tasks run
        # first: each leaves a task row and an attempt row.
        "$BIN/corral" job submit --pool sim --open >/dev/null
        "$BIN/corral" job add-tasks 1 --id ran --array "1-$2" -- /bin/true >/dev/null
        until curl_api -f "$HTTP_URL/api/jobs/1" 2>/dev/null | jq -e ".counts.succeeded == $2" >/dev/null 2>&1; do
            sleep 0.05
        done
        job=2
    fi
    # Whole seconds, far enough ahead for the submit of the largest array.
    local begin=$(( $(date +%s) + 25 ))
    "$BIN/corral" job submit --pool sim --array "1-$1" --begin "$(date -u -d "@$begin" +%Y-%m-%dT%H:%M:%S+00:00)" \
        -- /bin/true >/dev/null
    # Kill a little before the tasks become ready: none runs under the old leader.
    sleep "$(echo "$begin - $(now) - 0.3" | bc -l)"
    local t0 t1
    t0=$(now)
    kill -KILL "$COORD_PID"
    wait "$COORD_PID" 2>/dev/null || true
    COORD_PID=
    until curl_api -f "$B_HTTP/api/jobs/$job" 2>/dev/null | jq -e '.counts.succeeded > 0' >/dev/null 2>&1; do
        sleep 0.01
    done
    t1=$(now)
    local led
    led=$(standby_times "$t0")
    stop_sim
    stop_standby
    echo "$(echo "$t1 - $t0" | bc -l) $led"
}

# What each size means: all queued, or (midrun) half run and half queued.
what() { if [ "${MODE:-queued}" = midrun ]; then echo "$(($1 / 2)) run + $(($1 / 2)) queued"; else echo "$1 queued"; fi; }

declare -A total leased restored
for run in $(seq "$RUNS"); do
    for q in $SIZES; do
        if [ "${MODE:-queued}" = midrun ]; then
            read -r t lease state < <(failover_run $((q / 2)) $((q / 2)))
        else
            read -r t lease state < <(failover_run "$q" 0)
        fi
        total[$q]+="$t "
        leased[$q]+="$lease "
        restored[$q]+="$state "
        printf 'run %d, %s: first task %.2fs after the kill (lease taken %.2fs, state restored %.2fs)\n' \
            "$run" "$(what "$q")" "$t" "$lease" "$state"
    done
done
echo "== medians ($RUNS runs), seconds after the SIGKILL"
for q in $SIZES; do
    printf '%s: first task %.2f, lease taken %.2f, state restored %.2f\n' "$(what "$q")" \
        "$(printf '%s\n' ${total[$q]} | median)" "$(printf '%s\n' ${leased[$q]} | median)" \
        "$(printf '%s\n' ${restored[$q]} | median)"
done
