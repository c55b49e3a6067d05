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

# A second coordinator (flags as given) standing by in $WORK/b, on port 0; its
# gRPC URL in B_URL and its dashboard's in B_HTTP once it listens.
B_PID=
start_standby() {
    rm -rf "$WORK/b"
    "$BIN/corral-coordinator" --listen 127.0.0.1:0 --http 127.0.0.1:0 --data-dir "$WORK/b" "$@" \
        >/dev/null 2>"$WORK/b.log" &
    B_PID=$!
    until [ -s "$WORK/b/standby.addr" ] && [ -s "$WORK/b/standby-http.addr" ]; do sleep 0.05; done
    B_URL="http://$(cat "$WORK/b/standby.addr")"
    B_HTTP="http://$(cat "$WORK/b/standby-http.addr")"
}
stop_standby() { [ -z "$B_PID" ] || { kill -TERM "$B_PID" 2>/dev/null || true; wait "$B_PID" 2>/dev/null || true; B_PID=; }; }

# Simulated nodes (`corral-agent --simulate`): NODES x SLOTS in pool sim.
SIM_PID=
start_sim() {
    "$BIN/corral-agent" --pool sim --slots "$SLOTS" --simulate --nodes "$NODES" --work-dir "$WORK/sim" \
        2>"$WORK/sim.log" &
    SIM_PID=$!
}
stop_sim() { [ -z "$SIM_PID" ] || { kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; SIM_PID=; }; }

# A PostgreSQL server of the benchmark's own on this host (Debian's binaries, run as
# the postgres user; default settings, so fsync and synchronous_commit are on),
# listening on a Unix socket in a temp dir. PG_URL names database `bench`, which
# pg_fresh_db makes anew; the coordinator gets the password from PGPASSWORD.
PG_DIR=
pg_start() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PG_DIR=$(mktemp -d /tmp/pgbench.XXXXXX)
    printf 'bench-password' >"$PG_DIR/pw"
    chown -R postgres:postgres "$PG_DIR"
    setpriv --reuid=postgres --regid=postgres --clear-groups -- "$bin/initdb" -D "$PG_DIR/data" -U corral -N \
        -E UTF8 --locale=C --auth=scram-sha-256 --pwfile "$PG_DIR/pw" >"$WORK/initdb.log"
    setpriv --reuid=postgres --regid=postgres --clear-groups -- "$bin/postgres" -D "$PG_DIR/data" -k "$PG_DIR" \
        -c listen_addresses= -p 5432 >"$WORK/postgres.log" 2>&1 &
    PG_PID=$!
    export PGPASSWORD=bench-password
    for _ in $(seq 200); do "$bin/pg_isready" -q -h "$PG_DIR" -p 5432 && break; sleep 0.05; done
    PG_URL="postgres://corral@${PG_DIR//\//%2F}:5432/bench"
}
pg_fresh_db() {
    psql -q -h "$PG_DIR" -p 5432 -U corral -d postgres -c "DROP DATABASE IF EXISTS bench" -c "CREATE DATABASE bench"
}
pg_stop() {
    [ -z "$PG_DIR" ] || { kill -INT "$PG_PID" 2>/dev/null || true; wait "$PG_PID" 2>/dev/null || true; rm -rf "$PG_DIR"; PG_DIR=; }
}

# The median of the numbers on stdin, one a line.
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

trap 'stop_coordinator; rm -rf "$WORK"' EXIT
