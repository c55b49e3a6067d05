#!/usr/bin/env bash
# Queue triggers (needs Debian's redis-server and rabbitmq-server; run as root).
# 1. Messages to jobs: N (10000) messages waiting in a Redis stream / a RabbitMQ
#    queue, then `trigger create` on them, timed to the trigger's `fired` = N (each
#    a one-task job of `true` on simulated nodes, which finish at once), against
#    a plain consumer (QB: coordinator/examples/queue_bench.rs: take, acknowledge,
#    one at a time) draining N other messages of the same broker, alternating,
#    RUNS (5) times each.
# 2. Backpressure: BIG (1000000) messages in a Redis stream, a trigger with
#    --max-active 100 on a pool with no nodes (its jobs stay queued): the
#    coordinator's RSS before, and once it has its 100 jobs and 10 s have passed.
# BROKERS ("redis amqp") picks which. Prints every run and the medians. Build first: cargo build --release --workspace
#    and cargo build --release -p corral-coordinator --example queue_bench
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-10000}
RUNS=${RUNS:-5}
BIG=${BIG:-1000000}
NODES=${NODES:-4}
SLOTS=${SLOTS:-64}
QB=${QB:-target/release/examples/queue_bench}
. bench/common.sh
REDIS_PID= RABBIT_PID=
trap 'stop_sim; stop_coordinator; stop_brokers; rm -rf "$WORK"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT=$(free_port) AMQP_PORT=$(free_port) EPMD_PORT=$(free_port)
stop_brokers() {
    [ -z "$REDIS_PID" ] || kill "$REDIS_PID" 2>/dev/null || true
    [ -z "$RABBIT_PID" ] || kill -KILL -- "-$RABBIT_PID" 2>/dev/null || true
    # epmd daemonizes out of the node's group: found by the port it was given.
    for p in $(pgrep -x epmd || true); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "ERL_EPMD_PORT=$EPMD_PORT"; then kill -KILL "$p"; fi
    done
}
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >/dev/null 2>&1 &
REDIS_PID=$!
mkdir -p "$WORK/rmq" && echo '[].' >"$WORK/rmq/plugins"
HOME=$WORK/rmq ERL_EPMD_PORT=$EPMD_PORT RABBITMQ_NODE_PORT=$AMQP_PORT RABBITMQ_DIST_PORT=$(free_port) \
    RABBITMQ_NODENAME=rabbit$AMQP_PORT@localhost RABBITMQ_MNESIA_BASE=$WORK/rmq/mnesia \
    RABBITMQ_LOG_BASE=$WORK/rmq/log RABBITMQ_ENABLED_PLUGINS_FILE=$WORK/rmq/plugins \
    setsid /usr/lib/rabbitmq/bin/rabbitmq-server >/dev/null 2>&1 &
RABBIT_PID=$!
until (echo >"/dev/tcp/127.0.0.1/$AMQP_PORT") 2>/dev/null && (echo >"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null; do
    sleep 0.2
done
REDIS=redis://127.0.0.1:$REDIS_PORT/0 AMQP=amqp://guest@127.0.0.1:$AMQP_PORT/%2f

rm -rf "$WORK/data"
start_coordinator
"$BIN/corral" pool create sim --slots-per-node "$SLOTS" >/dev/null
start_sim
wait_idle_nodes sim "$NODES"
"$BIN/corral" template create nothing --pool sim -- true >/dev/null
fired() {
    if ! kill -0 "$COORD_PID" 2>/dev/null; then
        echo "the coordinator died; its log ends:" >&2
        tail -40 "$WORK/coordinator.log" >&2
        exit 1
    fi
    "$BIN/corral" -o json trigger show "$1" | grep -o '"fired": [0-9]*' | grep -o '[0-9]*$'
}
secs() { echo "$2 - $1" | bc -l; }

for broker in ${BROKERS:-redis amqp}; do
    trig=() plain=()
    for run in $(seq "$RUNS"); do
        name=q$broker$run
        if [ $broker = redis ]; then
            "$QB" fill "$REDIS" "$name" "$N" && "$QB" fill "$REDIS" "p$name" "$N"
            source="$REDIS?stream=$name&group=corral"
        else
            "$QB" fill "$AMQP" "$name" "$N" && "$QB" fill "$AMQP" "p$name" "$N"
            source="amqp://127.0.0.1:$AMQP_PORT/%2f?queue=$name"
        fi
        t0=$(now)
        "$BIN/corral" trigger create "$name" --template nothing --source "$source" >/dev/null
        until [ "$(fired "$name")" -ge "$N" ]; do sleep 0.05; done
        t1=$(now)
        "$BIN/corral" trigger delete "$name" >/dev/null
        if [ $broker = redis ]; then "$QB" drain "$REDIS" "p$name" plain "$N" >/dev/null; else "$QB" drain "$AMQP" "p$name" "$N" >/dev/null; fi
        t2=$(now)
        c=$(secs "$t0" "$t1") p=$(secs "$t1" "$t2")
        printf '%s run %d: trigger %.3fs (%.0f msg/s)  plain consumer %.3fs (%.0f msg/s)\n' \
            "$broker" "$run" "$c" "$(echo "$N / $c" | bc -l)" "$p" "$(echo "$N / $p" | bc -l)"
        trig+=("$c") plain+=("$p")
    done
    mc=$(printf '%s\n' "${trig[@]}" | median) mp=$(printf '%s\n' "${plain[@]}" | median)
    printf '%s medians of %d, %d messages: trigger %.3fs (%.0f msg/s), plain consumer %.3fs (%.0f msg/s); %.1fx\n' \
        "$broker" "$RUNS" "$N" "$mc" "$(echo "$N / $mc" | bc -l)" "$mp" "$(echo "$N / $mp" | bc -l)" \
        "$(echo "$mc / $mp" | bc -l)"
done

rss() { awk '/VmRSS/ {print $2}' "/proc/$COORD_PID/status"; }
"$BIN/corral" pool create idle --slots-per-node 1 >/dev/null
"$BIN/corral" template create held --pool idle -- true >/dev/null
"$QB" fill "$REDIS" big "$BIG"
before=$(rss)
"$BIN/corral" trigger create big --template held --max-active 100 --source "$REDIS?stream=big&group=corral" >/dev/null
until [ "$(fired big)" -ge 100 ]; do sleep 0.1; done
sleep 10
printf 'backpressure: %d messages waiting, --max-active 100: %s jobs made; coordinator RSS %d MiB before, %d MiB after\n' \
    "$BIG" "$(fired big)" "$((before / 1024))" "$(($(rss) / 1024))"
