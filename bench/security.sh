#!/usr/bin/env bash
# What locking the doors costs: the throughput run (N `/bin/true` tasks, default
# 10,000, as one array on a local pool of 2 nodes x 1 slot, durable store on, output
# captured) with TLS on (`--tls auto`: CLI, agents and dashboard over TLS) and off,
# both with tokens (they cannot be turned off), alternating in one invocation, RUNS
# times each. With BEFORE=DIR (the target/release of a build from before tokens
# existed), that build runs a third leg: no tokens, no TLS.
# Prints every run and the medians. Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RUNS=${RUNS:-5}
BEFORE=${BEFORE:-}
. bench/common.sh

# One run on the build in $BIN, with the coordinator flags given; prints seconds.
run_once() {
    rm -rf "$WORK/data"
    start_coordinator "$@"
    "$BIN/corral" pool create bench --provider local --nodes 2 --slots-per-node 1 >/dev/null
    wait_idle_nodes bench 2
    local t0 t1
    t0=$(now)
    "$BIN/corral" job submit --pool bench --array "1-$N" --wait -- /bin/true >/dev/null
    t1=$(now)
    stop_coordinator
    echo "$t1 - $t0" | bc -l
}

plain=() tls=() before=()
for run in $(seq "$RUNS"); do
    p=$(run_once)
    t=$(run_once --tls auto)
    line=$(printf 'run %d: tokens %.2fs  tokens+TLS %.2fs  (TLS/plain %.3f)' "$run" "$p" "$t" "$(echo "$t / $p" | bc -l)")
    plain+=("$p") tls+=("$t")
    if [ -n "$BEFORE" ]; then
        b=$(BIN=$BEFORE run_once)
        before+=("$b")
        line+=$(printf '  before tokens %.2fs' "$b")
    fi
    echo "$line"
done
mp=$(printf '%s\n' "${plain[@]}" | median)
mt=$(printf '%s\n' "${tls[@]}" | median)
printf 'median: tokens %.2fs (%.0f tasks/s), tokens+TLS %.2fs (%.0f tasks/s), TLS/plain %.3f (%d tasks, %d runs)\n' \
    "$mp" "$(echo "$N / $mp" | bc -l)" "$mt" "$(echo "$N / $mt" | bc -l)" "$(echo "$mt / $mp" | bc -l)" "$N" "$RUNS"
if [ -n "$BEFORE" ]; then
    mb=$(printf '%s\n' "${before[@]}" | median)
    printf 'median: before tokens %.2fs; tokens/before %.3f, tokens+TLS/before %.3f\n' \
        "$mb" "$(echo "$mp / $mb" | bc -l)" "$(echo "$mt / $mb" | bc -l)"
fi
