# Helpers for the benchmark scripts: start a release coordinator on port 0 in a
# temp dir, and stop it (and its local agents) on exit.
BIN=${BIN:-target/release}
WORK=$(mktemp -d)
COORD_PID=

start_coordinator() {
    rm -f "$WORK/data/coordinator.addr" "$WORK/data/http.addr"
    "$BIN/corral-coordinator" --listen "${LISTEN:-127.0.0.1:0}" --http 127.0.0.1:0 --data-dir "$WORK/data" "$@" \
        >"$WORK/coordinator.out" 2>"$WORK/coordinator.log" &
    COORD_PID=$!
    for _ in $(seq 200); do
        [ -s "$WORK/data/coordinator.addr" ] && [ -s "$WORK/data/http.addr" ] && break
        sleep 0.05
    done
    local scheme=http
    case " $* " in *" --tls "*) scheme=https ;; esac
    URL="$scheme://$(cat "$WORK/data/coordinator.addr")"
    HTTP_URL="$scheme://$(cat "$WORK/data/http.addr")"
    export CORRAL_COORDINATOR=$URL
    # Every request carries a token: the admin one the coordinator wrote.
    export CORRAL_TOKEN_FILE="$WORK/data/admin.token"
    if [ "$scheme" = https ]; then export CORRAL_CA_CERT="$WORK/data/tls/ca.pem"; else unset CORRAL_CA_CERT; fi
}

# curl with the admin token (from a header file, not the command line) and, with
# TLS on, the coordinator's CA.
curl_api() {
    (umask 077 && printf 'Authorization: Bearer %s\n' "$(cat "$CORRAL_TOKEN_FILE")" >"$WORK/auth.header")
    curl -s -H @"$WORK/auth.header" ${CORRAL_CA_CERT:+--cacert "$CORRAL_CA_CERT"} "$@"
}

stop_coordinator() {
    if [ -n "$COORD_PID" ]; then
        kill -TERM "$COORD_PID" 2>/dev/null || true
        wait "$COORD_PID" 2>/dev/null || true
        COORD_PID=
    fi
}

wait_idle_nodes() { # pool count
    for _ in $(seq 400); do
        n=$("$BIN/corral" -o json node list --pool "$1" | grep -c '"state": "idle"' || true)
        [ "$n" -ge "$2" ] && return 0
        sleep 0.05
    done
    echo "nodes did not come up" >&2
    return 1
}

now() { date +%s.%N; }

# One throughput run on the build in $BIN, with the coordinator flags given: N
# `/bin/true` tasks as one array on a local pool of 2 nodes x 1 slot, timed from
# `job submit --wait` to its exit; prints seconds.
throughput_run() {
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

# The median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

trap 'stop_coordinator; rm -rf "$WORK"' EXIT
