#!/usr/bin/env bash
# Two builds on one workload, alternating in one invocation: the throughput run (N
# `/bin/true` tasks, default 10,000, one array on a local pool of 2 nodes x 1 slot,
# durable store, output captured) on this build ($BIN) and on BEFORE=DIR (the
# target/release of another commit), RUNS times each (default 5).
# Prints every run and the medians. Build both first.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RUNS=${RUNS:-5}
BEFORE=${BEFORE:?set BEFORE to the target/release directory of the build to compare with}
. bench/common.sh

this=() before=()
for run in $(seq "$RUNS"); do
    a=$(throughput_run)
    b=$(BIN=$BEFORE throughput_run)
    this+=("$a") before+=("$b")
    printf 'run %d: this build %.2fs  before %.2fs  (this/before %.3f)\n' "$run" "$a" "$b" "$(echo "$a / $b" | bc -l)"
done
ma=$(printf '%s\n' "${this[@]}" | median)
mb=$(printf '%s\n' "${before[@]}" | median)
printf 'median of %d: this build %.2fs (%.0f tasks/s)  before %.2fs (%.0f tasks/s)  ratio %.3f\n' \
    "$RUNS" "$ma" "$(echo "$N / $ma" | bc -l)" "$mb" "$(echo "$N / $mb" | bc -l)" "$(echo "$ma / $mb" | bc -l)"
