#!/usr/bin/env bash
# Multi-node tasks (needs OpenMPI: mpicc, mpirun).
# 1. An MPI allreduce across N (NS: 2 3) real agents on this host (2 slots each), from
#    `job submit --nodes N --wait` to its exit, against plain `mpirun -np 2N` over the
#    same hostfile with an ssh-less launcher that starts each daemon here (a two-line
#    sh script as OpenMPI's plm_rsh_agent), alternating, RUNS (7) times each.
#    With NETNS=1 (as root), each agent runs in a network namespace of its own with
#    its own address on a bridge (as separate machines would), and so does each
#    daemon of the plain mpirun (its launcher enters the host's namespace with
#    `ip netns exec`); both mpiruns run in the first namespace, MPI over the bridge.
# 2. Gang start on simulated nodes (SIMS: 64 256, 1 slot each): one task across all
#    of them, from submit to done (scheduling, the whole-gang assignment to every
#    node, the durable store), RUNS times.
# Prints every run and the medians. Build first: cargo build --release --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
NS=${NS:-2 3}
SIMS=${SIMS:-64 256}
RUNS=${RUNS:-7}
NETNS=${NETNS:-}
. bench/common.sh
trap 'stop_agents; stop_coordinator; drop_net; rm -rf "$WORK"' EXIT
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

AGENTS=()
stop_agents() {
    for p in "${AGENTS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${AGENTS[@]}"; do wait "$p" 2>/dev/null || true; done
    AGENTS=()
}
secs() { echo "$2 - $1" | bc -l; }

# Namespaces: a bridge in a hub namespace, the host on a veth at $SUBNET.1, and
# namespace i (cbg$TAG-i) at $SUBNET.(11+i).
TAG=$(($$ % 100000)) SUBNET=10.214.$(($$ % 250)) SPACES=()
make_net() { # count
    local hub=cbghub$TAG
    ip netns add "$hub" && SPACES+=("$hub")
    ip -n "$hub" link set lo up
    ip -n "$hub" link add br0 type bridge && ip -n "$hub" link set br0 up
    ip link add "cbh$TAG" type veth peer name "cbb$TAG"
    ip link set "cbb$TAG" netns "$hub" && ip -n "$hub" link set "cbb$TAG" master br0 up
    ip addr add "$SUBNET.1/24" dev "cbh$TAG" && ip link set "cbh$TAG" up
    for i in $(seq 0 $(($1 - 1))); do
        local space=cbg$TAG-$i
        ip netns add "$space" && SPACES+=("$space")
        ip -n "$space" link set lo up
        ip link add "cbi$TAG$i" type veth peer name "cbo$TAG$i"
        ip link set "cbi$TAG$i" netns "$space" && ip link set "cbo$TAG$i" netns "$hub"
        ip -n "$hub" link set "cbo$TAG$i" master br0 up
        ip -n "$space" addr add "$SUBNET.$((11 + i))/24" dev "cbi$TAG$i" && ip -n "$space" link set "cbi$TAG$i" up
    done
}
drop_net() {
    for s in "${SPACES[@]}"; do ip netns del "$s" 2>/dev/null || true; done
    [ -z "$NETNS" ] || ip link del "cbh$TAG" 2>/dev/null || true
    SPACES=()
}

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
# Each daemon gets session files of its own (as corral gives each launch): daemons
# side by side on one host otherwise race for one directory under /tmp and crash.
own_tmp='export OMPI_MCA_orte_tmpdir_base=$(mktemp -d -p '"$WORK"')'
printf '#!/bin/sh\nhost=$1; shift\n%s\nexec sh -c "$*"\n' "$own_tmp" >"$WORK/localrsh"
# In namespaces: the daemon for $SUBNET.(11+i) runs in namespace i.
printf '#!/bin/sh\nhost=$1; shift\n%s\nexec ip netns exec "cbg%s-$((${host##*.} - 11))" sh -c "$*"\n' \
    "$own_tmp" "$TAG" >"$WORK/nsrsh"
chmod +x "$WORK/localrsh" "$WORK/nsrsh"
IFS_NET=lo RSH=$WORK/localrsh IN_NS=()
if [ -n "$NETNS" ]; then
    IFS_NET=$SUBNET.0/24 RSH=$WORK/nsrsh IN_NS=(ip netns exec "cbg$TAG-0")
fi
MPI_ENV=(--env OMPI_ALLOW_RUN_AS_ROOT=1 --env OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 --env OMPI_MCA_btl=tcp,self
    --env "OMPI_MCA_btl_tcp_if_include=$IFS_NET" --env "OMPI_MCA_oob_tcp_if_include=$IFS_NET")

for n in $NS; do
    rm -rf "$WORK/data"
    if [ -n "$NETNS" ]; then
        make_net "$n"
        # (Plaintext beyond loopback is refused unless asked for: this bench has no TLS.)
        LISTEN=$SUBNET.1:0 start_coordinator --allow-plaintext
    else
        start_coordinator
    fi
    "$BIN/corral" pool create mpi --slots-per-node 2 >/dev/null
    for i in $(seq "$n"); do
        enter=()
        [ -z "$NETNS" ] || enter=(ip netns exec "cbg$TAG-$((i - 1))")
        "${enter[@]}" "$BIN/corral-agent" --pool mpi --slots 2 --work-dir "$WORK/agent$i" \
            --token-file "$CORRAL_TOKEN_FILE" >>"$WORK/agents.log" 2>&1 &
        AGENTS+=($!)
    done
    wait_idle_nodes mpi "$n"
    : >"$WORK/hosts"
    for i in $(seq "$n"); do
        if [ -n "$NETNS" ]; then echo "$SUBNET.$((10 + i)) slots=2"; else echo "h$i slots=2"; fi >>"$WORK/hosts"
    done
    np=$((2 * n))
    corral_t=() plain_t=()
    for run in $(seq "$RUNS"); do
        t0=$(now)
        "$BIN/corral" job submit --pool mpi --nodes "$n" --wait "${MPI_ENV[@]}" -- mpirun -np "$np" "$WORK/allreduce" >/dev/null
        t1=$(now)
        OMPI_MCA_plm_rsh_agent="$RSH" OMPI_MCA_btl=tcp,self OMPI_MCA_btl_tcp_if_include="$IFS_NET" \
            OMPI_MCA_oob_tcp_if_include="$IFS_NET" "${IN_NS[@]}" mpirun -np "$np" --hostfile "$WORK/hosts" \
            "$WORK/allreduce" >/dev/null
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
    drop_net
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
