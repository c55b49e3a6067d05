#!/usr/bin/env bash
# Word count over SIZE_MB (default 1024) of generated text, three ways, RUNS times
# each (alternating), medians at the end:
#   corral: `corral job mapreduce` on a local pool of 2 nodes x 1 slot, mapper and
#           reducer small awk scripts (the mapper counts within its split, as
#           Hadoop's in-mapper combining does);
#   pipeline: `tr -s ' ' '\n' | sort | uniq -c`, what one does without a cluster;
#   dask: Dask bag's word count on a LocalCluster of 2 workers (needs
#         `pip install "dask[distributed]"`; skipped if missing).
# Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${SIZE_MB:-1024}
RUNS=${RUNS:-3}
. bench/common.sh

corpus="$WORK/corpus.txt"
python3 bench/make_corpus.py "$corpus" "$SIZE_MB"
M=${M:-$(( (SIZE_MB + 63) / 64 ))}
MAPPER='awk '\''{ for (i = 1; i <= NF; i++) c[$i]++ } END { for (w in c) print w "\t" c[w] }'\'''
REDUCER='awk -F"\t" '\''{ c[$1] += $2 } END { for (w in c) print w "\t" c[w] }'\'''

have_dask=1
python3 -c 'import dask.distributed' 2>/dev/null || have_dask=0

start_coordinator
"$BIN/corral" pool create wc --provider local --nodes 2 --slots-per-node 1 >/dev/null
wait_idle_nodes wc 2
"$BIN/corral" file put "$corpus" corpus/text.txt >/dev/null

c_all=() p_all=() d_all=() map_all=() red_all=()
for run in $(seq "$RUNS"); do
    rm -rf "$WORK/out"
    t0=$(now)
    summary=$("$BIN/corral" -o json job mapreduce --pool wc --input store:corpus/text.txt --map-tasks "$M" \
        --reduce-tasks 2 --mapper "$MAPPER" --reducer "$REDUCER" --output-dir "$WORK/out")
    t1=$(now)
    c=$(echo "$t1 - $t0" | bc -l)
    map_s=$(echo "$summary" | python3 -c 'import json,sys; print(json.load(sys.stdin)["map_ms"]/1000)')
    red_s=$(echo "$summary" | python3 -c 'import json,sys; print(json.load(sys.stdin)["reduce_ms"]/1000)')
    words=$(cat "$WORK"/out/part-* | wc -l)

    t2=$(now)
    LC_ALL=C tr -s ' ' '\n' < "$corpus" | LC_ALL=C sort -S 1G --parallel=2 | uniq -c > "$WORK/pipeline.txt"
    t3=$(now)
    p=$(echo "$t3 - $t2" | bc -l)
    pwords=$(grep -cv '^ *[0-9]* *$' "$WORK/pipeline.txt" || true)
    # Same counts, word for word?
    awk 'NF == 2 { print $2 "\t" $1 }' "$WORK/pipeline.txt" | LC_ALL=C sort > "$WORK/pipeline.norm"
    cat "$WORK"/out/part-* | LC_ALL=C sort > "$WORK/corral.norm"
    if cmp -s "$WORK/pipeline.norm" "$WORK/corral.norm"; then same=same; else same=DIFFERENT; fi

    d=NaN
    if [ "$have_dask" = 1 ]; then
        d=$(python3 bench/dask_wordcount.py "$corpus" 2>/dev/null | awk '{print $1}')
    fi
    printf 'run %d: corral %.2fs (map %.2fs, shuffle+reduce %.2fs, %d words, counts %s as the pipeline)  pipeline %.2fs (%d words)  dask %ss\n' \
        "$run" "$c" "$map_s" "$red_s" "$words" "$same" "$p" "$pwords" "$d"
    c_all+=("$c") p_all+=("$p") d_all+=("$d") map_all+=("$map_s") red_all+=("$red_s")
done
printf 'median of %d runs, %d MiB: corral %.2fs (map %.2fs, shuffle+reduce %.2fs)  pipeline %.2fs  dask %s\n' "$RUNS" "$SIZE_MB" \
    "$(printf '%s\n' "${c_all[@]}" | median)" "$(printf '%s\n' "${map_all[@]}" | median)" \
    "$(printf '%s\n' "${red_all[@]}" | median)" "$(printf '%s\n' "${p_all[@]}" | median)" \
    "$(printf '%s\n' "${d_all[@]}" | median)"
