#!/usr/bin/env bash
# bench/peer/peer.sh - run Parse Server 9.x's own LiveQuery server as a benchmark peer.
#
#   bench/peer/peer.sh start WORKDIR REDIS_URL PORT CPU
#       Creates a throwaway PostgreSQL cluster under WORKDIR/pg (free loopback port,
#       fsync off), starts Parse Server + its LiveQuery server (bench/peer/server.js)
#       in one Node process pinned with `taskset -c CPU`, HTTP at
#       http://127.0.0.1:PORT/parse and LiveQuery at ws://127.0.0.1:PORT/, waits
#       until /parse/health is OK and Redis reports its subscription to
#       bookstoreafterSave, then prints the Node PID (one line on stdout).
#       Logs: WORKDIR/server.log (Node), WORKDIR/pg/postgres.log. State: WORKDIR/peer.state.
#       On failure it prints why (and the server log tail) on stderr, stops what it
#       started and exits non-zero.
#   bench/peer/peer.sh stop WORKDIR
#       Stops Node (TERM, then KILL after 5 s) and PostgreSQL (pg_ctl stop -m immediate).
#       Safe to run twice, or after a failed start.
#
# Needs: bench/peer/setup.sh run once (PostgreSQL + node_modules), node, taskset,
# redis-cli, runuser, python3. Must run as root (initdb/postgres run as the
# `postgres` OS user through runuser).
set -euo pipefail

STARTED_WORK=
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
READY_TIMEOUT=${PEER_READY_TIMEOUT:-60}
APP_ID=bookstore
CHANNEL="${APP_ID}afterSave"
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

die() { echo "peer.sh: $*" >&2; exit 1; }
usage() {
    echo "usage: peer.sh start WORKDIR REDIS_URL PORT CPU | peer.sh stop WORKDIR" >&2
    exit 2
}

pg_bindir() { # newest /usr/lib/postgresql/*/bin with initdb
    local d best=''
    while IFS= read -r d; do
        [ -x "$d/initdb" ] && best=$d
    done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
    [ -n "$best" ] || return 1
    echo "$best"
}

free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

port_free() { # port
    "$PY" -c 'import socket,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1]))); s.close()' "$1" 2>/dev/null
}

log_tail() { # file: last lines, without Parse's startup deprecation warnings
    grep -v 'DeprecationWarning' "$1" | tail -n 30 >&2 || true
}

health_ok() { # port
    "$PY" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request, json
try:
    with urllib.request.urlopen("http://127.0.0.1:%s/parse/health" % sys.argv[1], timeout=2) as r:
        sys.exit(0 if r.status == 200 and json.load(r).get("status") == "ok" else 1)
except Exception:
    sys.exit(1)
EOF
}

numsub() { # redis_url channel -> subscriber count (or empty)
    redis-cli -u "$1" --raw pubsub numsub "$2" 2>/dev/null | sed -n '2{s/[^0-9]//g;p}'
}

# ---- stop ------------------------------------------------------------------------
do_stop() { # workdir
    local work=$1 state="$1/peer.state" NODE_PID='' PGBIN='' PGDATA=''
    [ -f "$state" ] || return 0
    # shellcheck disable=SC1090
    . "$state"
    # Only our Node (not a process that reused the PID after it died).
    if [ -n "$NODE_PID" ] && tr '\0' ' ' 2>/dev/null <"/proc/$NODE_PID/cmdline" | grep -q "$HERE/server.js"; then
        kill -TERM "$NODE_PID" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$NODE_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$NODE_PID" 2>/dev/null || true
        for _ in $(seq 20); do
            kill -0 "$NODE_PID" 2>/dev/null || break
            sleep 0.1
        done
    fi
    if [ -n "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" stop -D "$PGDATA" -m immediate -w -t 30 \
            >>"$work/pg/pg_ctl.log" 2>&1 || {
            # pg_ctl failed: kill the postmaster named in postmaster.pid
            local pm
            pm=$(head -n1 "$PGDATA/postmaster.pid" 2>/dev/null || true)
            if [ -n "$pm" ]; then kill -KILL "$pm" 2>/dev/null || true; fi
        }
    fi
    rm -f "$state"
}

# ---- start -------------------------------------------------------------------------
do_start() { # workdir redis_url port cpu
    local work=$1 redis_url=$2 port=$3 cpu=$4
    local pgbin pgroot pgdata pgport node_pid t0 n

    case "$port" in ''|*[!0-9]*) die "PORT must be a number: '$port'";; esac
    case "$cpu" in ''|*[!0-9,-]*) die "CPU must be a taskset cpu list: '$cpu'";; esac
    [ "$(id -u)" = 0 ] || die "must run as root (postgres runs as the postgres user via runuser)"
    for tool in node taskset redis-cli runuser; do
        command -v "$tool" >/dev/null || die "$tool is required"
    done
    [ -d "$HERE/node_modules/parse-server" ] || die "parse-server is not installed: run bench/peer/setup.sh"
    pgbin=$(pg_bindir) || die "PostgreSQL (initdb) not found under /usr/lib/postgresql/*/bin: run bench/peer/setup.sh"
    id postgres >/dev/null 2>&1 || die "no 'postgres' OS user: run bench/peer/setup.sh"

    mkdir -p "$work"
    work=$(cd "$work" && pwd)
    if [ -f "$work/peer.state" ]; then
        die "$work/peer.state exists: a peer may be running there (peer.sh stop $work)"
    fi
    port_free "$port" || die "port $port on 127.0.0.1 is already in use"
    redis-cli -u "$redis_url" ping >/dev/null 2>&1 || die "Redis at $redis_url does not answer PING"
    n=$(numsub "$redis_url" "$CHANNEL")
    [ "${n:-0}" = 0 ] || die "$CHANNEL already has $n subscriber(s) on $redis_url (another peer?)"

    t0=$(date +%s.%N)
    # From here on, anything that fails stops what was started.
    STARTED_WORK=$work
    # shellcheck disable=SC2154 # rc is assigned inside the trap
    trap 'rc=$?; if [ $rc -ne 0 ]; then do_stop "$STARTED_WORK"; fi; exit $rc' EXIT
    trap 'exit 130' INT TERM

    # The postgres user must reach WORKDIR/pg; a mktemp -d WORKDIR is 0700 root:
    # give "others" search (x) permission on it, never read.
    chmod o+x "$work"
    pgroot="$work/pg"
    pgdata="$pgroot/data"
    rm -rf "$pgroot"
    mkdir -p "$pgroot"
    chown postgres: "$pgroot"
    chmod 700 "$pgroot"
    runuser -u postgres -- test -w "$pgroot" \
        || die "the postgres user cannot write $pgroot (a parent directory is not searchable by others?)"
    pgport=$(free_port)
    cat >"$work/peer.state" <<EOF
NODE_PID=
PGBIN=$pgbin
PGDATA=$pgdata
EOF

    runuser -u postgres -- "$pgbin/initdb" -D "$pgdata" -U postgres --auth=trust \
        --encoding=UTF8 --locale=C --no-sync >"$pgroot/initdb.log" 2>&1 \
        || { tail -n 20 "$pgroot/initdb.log" >&2; die "initdb failed ($pgroot/initdb.log)"; }
    runuser -u postgres -- "$pgbin/pg_ctl" start -D "$pgdata" -w -t 30 -l "$pgroot/postgres.log" \
        -o "-c listen_addresses=127.0.0.1 -p $pgport -c unix_socket_directories=$pgroot -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        </dev/null >"$pgroot/pg_ctl.log" 2>&1 \
        || { tail -n 20 "$pgroot/postgres.log" >&2 2>/dev/null || true; die "PostgreSQL did not start ($pgroot/postgres.log)"; }
    runuser -u postgres -- "$pgbin/createdb" -h 127.0.0.1 -p "$pgport" -U postgres parse \
        >>"$pgroot/pg_ctl.log" 2>&1 || die "createdb failed ($pgroot/pg_ctl.log)"

    # Node: exec'd by taskset, so $! is the Node process itself. All fds away from
    # the caller's terminal/pipe so `pid=$(peer.sh start ...)` returns.
    (
        cd "$work"
        export PEER_PORT="$port" PEER_REDIS_URL="$redis_url" \
            PEER_DATABASE_URI="postgres://postgres@127.0.0.1:$pgport/parse" \
            PARSE_SERVER_LOGS_FOLDER=null NODE_ENV=production
        exec taskset -c "$cpu" node "$HERE/server.js"
    ) </dev/null >"$work/server.log" 2>&1 &
    node_pid=$!
    sed -i "s/^NODE_PID=.*/NODE_PID=$node_pid/" "$work/peer.state"

    for _ in $(seq $((READY_TIMEOUT * 5))); do
        if ! kill -0 "$node_pid" 2>/dev/null; then
            echo "peer.sh: Parse Server exited during startup; $work/server.log:" >&2
            log_tail "$work/server.log"
            exit 1
        fi
        if health_ok "$port" && [ "$(numsub "$redis_url" "$CHANNEL")" = 1 ]; then
            trap - EXIT INT TERM
            echo "peer.sh: Parse Server 9 LiveQuery peer ready: pid $node_pid, ws://127.0.0.1:$port/, cpu $cpu, postgres 127.0.0.1:$pgport, $(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN{printf "%.1f", t1-t0}') s" >&2
            echo "$node_pid"
            return 0
        fi
        sleep 0.2
    done
    echo "peer.sh: not ready after ${READY_TIMEOUT}s (health: $(health_ok "$port" && echo ok || echo no), $CHANNEL subscribers: $(numsub "$redis_url" "$CHANNEL")); $work/server.log:" >&2
    log_tail "$work/server.log"
    exit 1
}

[ $# -ge 1 ] || usage
case "$1" in
    start) [ $# -eq 5 ] || usage; do_start "$2" "$3" "$4" "$5" ;;
    stop)  [ $# -eq 2 ] || usage; do_stop "$2" ;;
    *) usage ;;
esac
