#!/usr/bin/env bash
# Data plane throughput: `corral file put` and `corral file get` of a SIZE_MB (default
# 1024) file through the coordinator, RUNS times; prints MB/s. Build first:
# cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
. bench/common.sh
head -c "$((SIZE_MB << 20))" /dev/urandom > "$WORK/blob"
start_coordinator
for run in $(seq "$RUNS"); do
    t0=$(now); "$BIN/corral" file put "$WORK/blob" bench/blob >/dev/null; t1=$(now)
    "$BIN/corral" file get bench/blob "$WORK/back" >/dev/null; t2=$(now)
    cmp -s "$WORK/blob" "$WORK/back" || { echo "the file changed on the way" >&2; exit 1; }
    printf 'run %d: put %.0f MB/s, get %.0f MB/s\n' "$run" \
        "$(echo "$SIZE_MB * 1.048576 / ($t1 - $t0)" | bc -l)" "$(echo "$SIZE_MB * 1.048576 / ($t2 - $t1)" | bc -l)"
    rm -f "$WORK/back"
done
