#!/usr/bin/env bash
# Throughput on real tasks: N (default 10,000) `/bin/true` tasks as one array on a
# local pool of 2 nodes x 1 slot (durable store on, stdout/stderr captured), against
#  - the limit: the fastest bare spawn loop here, a shell loop under `xargs -P 2`
#    (`seq N | xargs -P 2 -n N/10 sh -c 'for i; do /bin/true; done' _`);
#  - `seq N | xargs -P 2 -n 1 /bin/true` (one xargs spawn per task: not the limit);
#  - with HQ=path/to/hq, HyperQueue (2 workers --cpus 1, `hq submit --array 1-N
#    --wait`, its default stdout/stderr files), each timed from submit to done.
# All alternate in one invocation, RUNS (5) times, each leg starting after a `sync`
# (what one leg wrote is not flushed by the next one's fsyncs); prints every run, the
# medians and the ratios to the limit. Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RUNS=${RUNS:-5}
HQ=${HQ:-}
. bench/common.sh
CHUNK=$(( N >= 10 ? N / 10 : 1 ))

TICKS=$(getconf CLK_TCK)
# User + system CPU ticks of the given processes, summed.
cpu_ticks() { for p in "$@"; do awk '{print $14 + $15}' "/proc/$p/stat"; done | awk '{s += $1} END {print s + 0}'; }
secs() { echo "$2 - $1" | bc -l; }

HQ_PIDS=()
stop_hq() {
    [ -z "$HQ" ] || "$HQ" server stop --server-dir "$WORK/hq" >/dev/null 2>&1 || true
    for p in "${HQ_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    HQ_PIDS=()
}
trap 'stop_hq; stop_coordinator; rm -rf "$WORK"' EXIT
hq_run() {
    rm -rf "$WORK/hq" "$WORK/hq-out" && mkdir -p "$WORK/hq-out"
    "$HQ" server start --server-dir "$WORK/hq" >"$WORK/hq-server.log" 2>&1 &
    HQ_PIDS+=($!)
    for _ in $(seq 200); do [ -f "$WORK/hq/hq-current/access.json" ] && break; sleep 0.05; done
    for _ in 1 2; do
        "$HQ" worker start --cpus 1 --server-dir "$WORK/hq" >>"$WORK/hq-worker.log" 2>&1 &
        HQ_PIDS+=($!)
    done
    for _ in $(seq 400); do
        [ "$("$HQ" worker list --server-dir "$WORK/hq" --output-mode json | grep -o '"id"' | wc -l)" -ge 2 ] && break
        sleep 0.05
    done
    local t0 t1
    t0=$(now)
    (cd "$WORK/hq-out" && "$HQ" submit --server-dir "$WORK/hq" --array "1-$N" --wait -- /bin/true >/dev/null 2>>"$WORK/hq-submit.log")
    t1=$(now)
    stop_hq
    # Its 2N output files are not left for the next leg's fsyncs to flush.
    rm -rf "$WORK/hq-out" && sync
    secs "$t0" "$t1"
}

limit_t=() n1_t=() corral_t=() hq_t=()
for run in $(seq "$RUNS"); do
    t0=$(now)
    seq "$N" | xargs -P 2 -n "$CHUNK" sh -c 'for i; do /bin/true; done' _
    t1=$(now)
    l=$(secs "$t0" "$t1")

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
    rm -rf "$WORK/data" && sync
    c=$(secs "$t0" "$t1")

    t0=$(now)
    seq "$N" | xargs -P 2 -n 1 /bin/true
    t1=$(now)
    x=$(secs "$t0" "$t1")

    h=
    [ -z "$HQ" ] || h=$(hq_run)

    printf 'run %d: limit %.2fs  xargs -n 1 %.2fs  corral %.2fs (%.0f tasks/s, %.2fx the limit; cpu/task: coordinator %.0fus, agents %.0fus)' \
        "$run" "$l" "$x" "$c" "$(echo "$N / $c" | bc -l)" "$(echo "$c / $l" | bc -l)" \
        "$(echo "($c1 - $c0) * 1000000 / $TICKS / $N" | bc -l)" "$(echo "($a1 - $a0) * 1000000 / $TICKS / $N" | bc -l)"
    [ -z "$h" ] || printf '  hyperqueue %.2fs (%.2fx the limit; corral %.2fx faster)' "$h" "$(echo "$h / $l" | bc -l)" "$(echo "$h / $c" | bc -l)"
    echo
    limit_t+=("$l") n1_t+=("$x") corral_t+=("$c")
    [ -z "$h" ] || hq_t+=("$h")
done
ml=$(printf '%s\n' "${limit_t[@]}" | median)
row() { printf '%-44s %6.2fs  %5.2f\n' "$1" "$2" "$(echo "$2 / $ml" | bc -l)"; }
echo "medians of $RUNS runs, $N tasks (wall, ratio to the limit):"
row "the limit (sh loop under xargs -P 2)" "$ml"
row "xargs -P 2 -n 1 /bin/true" "$(printf '%s\n' "${n1_t[@]}" | median)"
mc=$(printf '%s\n' "${corral_t[@]}" | median)
row "corral (local pool 2x1, durable, output kept)" "$mc"
if [ -n "$HQ" ]; then
    mh=$(printf '%s\n' "${hq_t[@]}" | median)
    row "hyperqueue ($("$HQ" --version 2>/dev/null | head -1))" "$mh"
    printf 'corral is %.2fx faster than hyperqueue (median wall times)\n' "$(echo "$mh / $mc" | bc -l)"
fi
