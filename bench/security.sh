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

plain=() tls=() before=()
for run in $(seq "$RUNS"); do
    p=$(throughput_run)
    t=$(throughput_run --tls auto)
    line=$(printf 'run %d: tokens %.2fs  tokens+TLS %.2fs  (TLS/plain %.3f)' "$run" "$p" "$t" "$(echo "$t / $p" | bc -l)")
    plain+=("$p") tls+=("$t")
    if [ -n "$BEFORE" ]; then
        b=$(BIN=$BEFORE throughput_run)
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
