#!/usr/bin/env bash
# Throughput: N (default 10,000) `/bin/true` tasks as one array on a local pool of
# 2 nodes x 1 slot (durable store on, stdout/stderr captured), against the bare
# spawn loop `seq N | xargs -P 2 -n 1 /bin/true`, alternating, RUNS times each.
# Prints every run and the medians. Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RUNS=${RUNS:-5}
. bench/common.sh

TICKS=$(getconf CLK_TCK)
# User + system CPU ticks of the given processes, summed.
cpu_ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s + 0}'; }

corral_times=() bare_times=() ratios=()
for run in $(seq "$RUNS"); do
    rm -rf "$WORK/data"
    start_coordinator
    "$BIN/corral" pool create bench --provider local --nodes 2 --slots-per-node 1 >/dev/null
    wait_idle_nodes bench 2
    agents=$("$BIN/corral" -o json node list | grep '"pid"' | grep -o '[0-9]*')
    c0=$(cpu_ticks "$COORD_PID") a0=$(cpu_ticks $agents)
    t0=$(now)
    "$BIN/corral" job submit --pool bench --array "1-$N" --wait -- /bin/true >/dev/null
    t1=$(now)
    c1=$(cpu_ticks "$COORD_PID") a1=$(cpu_ticks $agents)
    stop_coordinator
    t2=$(now)
    seq "$N" | xargs -P 2 -n 1 /bin/true
    t3=$(now)
    c=$(echo "$t1 - $t0" | bc -l) b=$(echo "$t3 - $t2" | bc -l)
    r=$(echo "$c / $b" | bc -l)
    printf 'run %d: corral %.2fs (%.0f tasks/s)  bare %.2fs  ratio %.2f  cpu/task: coordinator %.0fus, agents %.0fus\n' \
        "$run" "$c" "$(echo "$N / $c" | bc -l)" "$b" "$r" \
        "$(echo "($c1 - $c0) * 1000000 / $TICKS / $N" | bc -l)" "$(echo "($a1 - $a0) * 1000000 / $TICKS / $N" | bc -l)"
    corral_times+=("$c") bare_times+=("$b") ratios+=("$r")
done
mc=$(printf '%s\n' "${corral_times[@]}" | median)
mb=$(printf '%s\n' "${bare_times[@]}" | median)
mr=$(printf '%s\n' "${ratios[@]}" | median)
printf 'median: corral %.2fs (%.0f tasks/s), bare %.2fs, ratio %.2f (%d tasks, %d runs)\n' "$mc" "$(echo "$N / $mc" | bc -l)" "$mb" "$mr" "$N" "$RUNS"
