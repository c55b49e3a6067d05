#!/usr/bin/env bash
# What bounds hold, measured:
#  1. a task printing SIZE (default 4 GiB) to stdout on a static agent: the agent's
#     peak RSS and the longest the coordinator went without hearing from the node
#     (heartbeat age, sampled every 50 ms), with the default --max-output (1 GiB
#     kept) and heartbeats every 1 s;
#  2. with a data dir on a 64 MiB tmpfs (needs root), filled: how long the first
#     submit takes to be answered UNAVAILABLE, and the next one.
# The coordinator's memory per queued task is bench/million.sh.
# Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-4294967296}
. bench/common.sh

start_coordinator
"$BIN/corral" pool create print --slots-per-node 1 >/dev/null
"$BIN/corral-agent" --pool print --slots 1 --work-dir "$WORK/agent" 2>"$WORK/agent.log" &
AGENT=$!
wait_idle_nodes print 1
node=$("$BIN/corral" -o json node list --pool print | awk -F'"' '/"id"/ {print $4; exit}')
t0=$(now)
"$BIN/corral" job submit --pool print -- sh -c "head -c $SIZE /dev/zero | tr '\\0' x" >/dev/null
peak=0 gap=0
while [ "$("$BIN/corral" -o json job show 1 | awk -F'"' '/"state"/ {print $4; exit}')" = active ]; do
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$AGENT/status")
    [ "$rss" -gt "$peak" ] && peak=$rss
    age=$("$BIN/corral" -o json node show "$node" | awk -F': ' '/heartbeat_age_ms/ {gsub(/,/, "", $2); print $2}')
    [ "$age" -gt "$gap" ] && gap=$age
    sleep 0.05
done
t1=$(now)
state=$("$BIN/corral" -o json job show 1 | awk -F'"' '/"state"/ {print $4; exit}')
attempts=$("$BIN/corral" -o json task show 1 0 | grep -c '"attempt":' || true)
printf 'printed %d bytes in %.1fs (job %s, %d attempt(s)): agent peak RSS %d MiB, longest heartbeat age %d ms\n' \
    "$SIZE" "$(echo "$t1 - $t0" | bc -l)" "$state" "$attempts" $((peak / 1024)) "$gap"
kill "$AGENT"
wait "$AGENT" 2>/dev/null || true
stop_coordinator

# 2. A full disk.
rm -rf "$WORK/data" && mkdir -p "$WORK/data"
mount -t tmpfs -o size=64m tmpfs "$WORK/data"
trap 'stop_coordinator; umount "$WORK/data" 2>/dev/null; rm -rf "$WORK"' EXIT
start_coordinator
"$BIN/corral" pool create disk --slots-per-node 1 >/dev/null
dd if=/dev/zero of="$WORK/data/filler" bs=1M 2>/dev/null || true
t0=$(now)
"$BIN/corral" job submit --pool disk -- true >/dev/null 2>"$WORK/first.err" || true
t1=$(now)
"$BIN/corral" job submit --pool disk -- true >/dev/null 2>"$WORK/second.err" || true
t2=$(now)
rm -f "$WORK/data/filler" # so that the coordinator can save what it holds, and stop
printf 'full disk: first submit answered in %.2fs (%s), the next in %.3fs (%s)\n' \
    "$(echo "$t1 - $t0" | bc -l)" "$(cut -c1-40 "$WORK/first.err")" \
    "$(echo "$t2 - $t1" | bc -l)" "$(cut -c1-40 "$WORK/second.err")"
