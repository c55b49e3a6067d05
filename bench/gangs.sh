#!/usr/bin/env bash
# Multi-node tasks (needs OpenMPI: mpicc, mpirun).
# 1. An MPI allreduce across N (NS: 2 3) real agents on this host (2 slots each), from
#    `job submit --nodes N --wait` to its exit, against plain `mpirun -np 2N` over the
#    same hostfile with an ssh-less launcher that starts each daemon here (a two-line
#    sh script as OpenMPI's plm_rsh_agent), alternating, RUNS (7) times each.
# 2. Gang start on simulated nodes (SIMS: 64 256, 1 slot each): one task across all
#    of them, from submit to done (scheduling, the whole-gang assignment to every
#    node, the durable store), RUNS times.
# Prints every run and the medians. Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${NS:-2 3}
SIMS=${SIMS:-64 256}
RUNS=${RUNS:-7}
. bench/common.sh
trap 'stop_agents; stop_coordinator; rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

AGENTS=()
stop_agents() {
    for p in "${AGENTS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${AGENTS[@]}"; do wait "$p" 2>/dev/null || true; done
    AGENTS=()
}
secs() { echo "$2 - $1" | bc -l; }

cat >"$WORK/allreduce.c" <<'EOF'
#include <mpi.h>
#include <stdio.h>
int main(int argc, char **argv) {
    MPI_Init(&argc, &argv);
    int rank; long one = 1, sum = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Allreduce(&one, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) printf("%ld ranks\n", sum);
    MPI_Finalize();
    return 0;
}
EOF
mpicc -o "$WORK/allreduce" "$WORK/allreduce.c"
printf '#!/bin/sh\nhost=$1; shift\nexec sh -c "$*"\n' >"$WORK/localrsh"
chmod +x "$WORK/localrsh"
MPI_ENV=(--env OMPI_ALLOW_RUN_AS_ROOT=1 --env OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 --env OMPI_MCA_btl=tcp,self
    --env OMPI_MCA_btl_tcp_if_include=lo --env OMPI_MCA_oob_tcp_if_include=lo)

for n in $NS; do
    rm -rf "$WORK/data"
    start_coordinator
    "$BIN/corral" pool create mpi --slots-per-node 2 >/dev/null
    for i in $(seq "$n"); do
        "$BIN/corral-agent" --pool mpi --slots 2 --work-dir "$WORK/agent$i" --token-file "$CORRAL_TOKEN_FILE" \
            >>"$WORK/agents.log" 2>&1 &
        AGENTS+=($!)
    done
    wait_idle_nodes mpi "$n"
    : >"$WORK/hosts"
    for i in $(seq "$n"); do echo "h$i slots=2" >>"$WORK/hosts"; done
    np=$((2 * n))
    corral_t=() plain_t=()
    for run in $(seq "$RUNS"); do
        t0=$(now)
        "$BIN/corral" job submit --pool mpi --nodes "$n" --wait "${MPI_ENV[@]}" -- mpirun -np "$np" "$WORK/allreduce" >/dev/null
        t1=$(now)
        OMPI_MCA_plm_rsh_agent="$WORK/localrsh" OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include=lo \
            OMPI_MCA_oob_tcp_if_include=lo mpirun -np "$np" --hostfile "$WORK/hosts" "$WORK/allreduce" >/dev/null
        t2=$(now)
        c=$(secs "$t0" "$t1") p=$(secs "$t1" "$t2")
        printf 'N=%d run %d: corral %.3fs  plain mpirun %.3fs\n' "$n" "$run" "$c" "$p"
        corral_t+=("$c") plain_t+=("$p")
    done
    mc=$(printf '%s\n' "${corral_t[@]}" | median) mp=$(printf '%s\n' "${plain_t[@]}" | median)
    printf 'N=%d medians of %d: corral %.3fs, plain mpirun %.3fs (%.2fx; corral adds %.0f ms)\n' \
        "$n" "$RUNS" "$mc" "$mp" "$(echo "$mc / $mp" | bc -l)" "$(echo "($mc - $mp) * 1000" | bc -l)"
    stop_agents
    stop_coordinator
done

for sims in $SIMS; do
    rm -rf "$WORK/data"
    start_coordinator
    "$BIN/corral" pool create sim --slots-per-node 1 >/dev/null
    "$BIN/corral-agent" --pool sim --slots 1 --simulate --nodes "$sims" --work-dir "$WORK/sim" \
        --token-file "$CORRAL_TOKEN_FILE" >>"$WORK/sim.log" 2>&1 &
    AGENTS+=($!)
    wait_idle_nodes sim "$sims"
    times=()
    for run in $(seq "$RUNS"); do
        t0=$(now)
        "$BIN/corral" job submit --pool sim --nodes "$sims" --wait -- true >/dev/null
        t1=$(now)
        times+=("$(secs "$t0" "$t1")")
        printf '%d simulated nodes run %d: %.3fs\n' "$sims" "$run" "${times[-1]}"
    done
    printf '%d simulated nodes: median of %d, submit to done: %.3fs\n' "$sims" "$RUNS" \
        "$(printf '%s\n' "${times[@]}" | median)"
    stop_agents
    stop_coordinator
done
