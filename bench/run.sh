#!/usr/bin/env bash
# bench/run.sh - the whole benchmark suite in one command: builds livequeryd and
# the load generators (Release), installs the Parse Server peer (PostgreSQL from
# Debian, parse-server from npm; bench/peer/), runs every scenario against
# livequeryd and the broadcast, selective and connect-storm ones against Parse
# Server's LiveQuery too, in the same invocation, then writes
#   bench/results/<date>.md        the report (bench/report.py): every figure, ratios, targets
#   bench/results/<date>.jsonl     one JSON record per scenario and server
#   bench/results/plots/*.png      the plots (bench/plot.sh, gnuplot)
#
#   bench/run.sh                          # everything, ~20 minutes
#   LQ_BENCH_PEER=0 bench/run.sh          # livequeryd only
#   LQ_BENCH_ONLY="b1k s1k" bench/run.sh  # some scenarios (ids: see SCENARIOS below)
#
# Environment:
#   LQ_BENCH_SERVER_CPU=0     core the server under test (livequeryd or Parse's node) is pinned to
#   LQ_BENCH_CLIENT_CPU=1     core lq_bench and redis-server are pinned to
#   LQ_BENCH_OUT=path.md      where to write the report (default bench/results/<date>.md)
#   LQ_BENCH_ONLY="ids"       run only these scenarios (also: acl-inproc, tailer, floor)
#   LQ_BENCH_PEER=0           skip Parse Server
#   LQ_BENCH_LOOPS="uv"       livequeryd --event-loop values; each scenario runs once per loop
#                             (the first is the one compared with Parse)
#   LQ_BENCH_LIVEQUERYD=path  the livequeryd binary to measure (default: the Release build here), e.g. an
#                             older commit's, to compare two builds in one sitting
#
# Everything started here is stopped on exit (trap). Exit status: 0 when every
# scenario delivered exactly what was expected, 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD="$ROOT/build-bench"
SERVER_CPU=${LQ_BENCH_SERVER_CPU:-0}
CLIENT_CPU=${LQ_BENCH_CLIENT_CPU:-1}
DATE=$(date +%Y-%m-%d)
OUT=${LQ_BENCH_OUT:-"$ROOT/bench/results/$DATE.md"}
ONLY=${LQ_BENCH_ONLY:-}
PEER=${LQ_BENCH_PEER:-1}
JSONL="${OUT%.md}.jsonl"
PLOTS="$(dirname "$OUT")/plots"
APP_ID=bookstore
CHANNEL="livequery:$APP_ID:changes"

"$ROOT/scripts/deps.sh" >&2 # the build dependencies and redis-server (apt, npm), as for the tests
for tool in cmake redis-server redis-cli python3 taskset timeout; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "run.sh: needs 2 cores (server and load generator pinned apart); nproc=$(nproc)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lq-bench.XXXXXX")
chmod 755 "$WORK" # the peer's PostgreSQL runs as user postgres under it
REDIS_PID=
SERVER_PID=
PEER_DIR=
MOCK_PID=

stop_pid() { # pid: TERM, wait up to 5 s, then KILL
    local pid=$1 i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# shellcheck disable=SC2317 # called by the trap
cleanup() {
    [ -z "$PEER_DIR" ] || "$ROOT/bench/peer/peer.sh" stop "$PEER_DIR" >/dev/null 2>&1 || true
    stop_pid "$MOCK_PID"
    stop_pid "$SERVER_PID"
    stop_pid "$REDIS_PID"
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ---- build -------------------------------------------------------------------
echo "== building (Release) in $BUILD" >&2
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >"$WORK/cmake.log" 2>&1 \
    || { cat "$WORK/cmake.log" >&2; exit 2; }
cmake --build "$BUILD" -j"$(nproc)" --target livequeryd lq_bench acl_bench send_floor >>"$WORK/cmake.log" 2>&1 \
    || { cat "$WORK/cmake.log" >&2; exit 2; }
LIVEQUERYD="${LQ_BENCH_LIVEQUERYD:-$BUILD/livequeryd}" # another build to compare with: LQ_BENCH_LIVEQUERYD=path
LQ_BENCH="$BUILD/bench/lq_bench"
if [ "$PEER" = 1 ]; then
    echo "== installing the Parse Server peer (bench/peer/setup.sh)" >&2
    "$ROOT/bench/peer/setup.sh" >&2 || { echo "run.sh: the Parse Server peer could not be installed" >&2; exit 2; }
fi

# ---- redis ---------------------------------------------------------------------
REDIS_PORT=$(free_port)
# pubsub output limit off: a slow server must show up as latency, not as a
# disconnect by Redis; no persistence.
taskset -c "$CLIENT_CPU" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" \
    --appendonly no --client-output-buffer-limit "pubsub 0 0 0" \
    --logfile "$WORK/redis.log" &
REDIS_PID=$!
for i in $(seq 51); do
    if [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
        break
    fi
    if [ "$i" = 51 ]; then
        echo "run.sh: redis-server did not start" >&2
        cat "$WORK/redis.log" >&2
        exit 2
    fi
    sleep 0.1
done

# ---- one scenario ----------------------------------------------------------------
FAILED=0
: >"$WORK/results.jsonl"

want() { # id: is this scenario selected?
    [ -z "$ONLY" ] && return 0
    case " $ONLY " in *" $1 "*) return 0 ;; esac
    return 1
}

# record ID SERVER JSONFILE: tag lq_bench's JSON line with the scenario id and server
record() {
    python3 - "$1" "$2" "$3" "${EVENT_LOOP:-}" >>"$WORK/results.jsonl" <<'PY'
import json, sys
id_, server, path, loop = sys.argv[1:5]
try:
    r = json.loads(open(path).read().strip().splitlines()[-1])
except Exception as e:  # lq_bench died before printing
    r = {"ok": False, "failure": "no report from lq_bench (%s)" % e}
r.update(id=id_, server=server)
if not r.get("burst"):  # lq_bench prints 0 when not bursting
    r.pop("burst", None)
    r.pop("burst_interval_ms", None)
if server == "livequeryd" and loop:
    r["event_loop"] = loop
print(json.dumps(r))
PY
}

# bench SERVER ID LABEL URL PID lq_bench-args...
bench() {
    local server=$1 id=$2 label=$3 url=$4 pid=$5 rc=0
    shift 5
    echo "== $server: $label" >&2
    timeout 400 taskset -c "$CLIENT_CPU" "$LQ_BENCH" --json --label "$label" \
        --url "$url" --redis "redis://127.0.0.1:$REDIS_PORT" \
        --server-pid "$pid" "$@" >"$WORK/$server-$id.json" || rc=$?
    if [ "$rc" != 0 ]; then
        FAILED=1
        echo "run.sh: $server scenario '$label' FAILED (lq_bench exit $rc)" >&2
    fi
    record "$id" "$server" "$WORK/$server-$id.json"
}

# ours ID LABEL [livequeryd args ... --] lq_bench-args...: a fresh livequeryd per scenario,
# so its RSS at rest and peak belong to that scenario
ours() {
    local id=$1 label=$2 port i extra=()
    shift 2
    want "$id" || return 0
    if [ "${1:-}" = "--server" ]; then
        shift
        while [ "$1" != "--" ]; do extra+=("$1"); shift; done
        shift
    fi
    port=$(free_port)
    taskset -c "$SERVER_CPU" "$LIVEQUERYD" --port "$port" --host 127.0.0.1 \
        --redis-url "redis://127.0.0.1:$REDIS_PORT" --app-id "$APP_ID" \
        --max-connections 20000 --max-subscriptions 256 --max-queue-bytes 4194304 \
        --event-loop "$EVENT_LOOP" --log-level warn "${extra[@]}" 2>>"$WORK/server-$id.log" &
    SERVER_PID=$!
    for i in $(seq 100); do
        if [ "$(redis-cli -p "$REDIS_PORT" pubsub numsub "$CHANNEL" 2>/dev/null | tail -n 1)" = 1 ]; then
            break
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null || [ "$i" = 100 ]; then
            echo "run.sh: livequeryd did not start or did not subscribe to $CHANNEL" >&2
            cat "$WORK/server-$id.log" >&2
            exit 2
        fi
        sleep 0.1
    done
    sleep 0.5 # let it settle: "RSS at rest" is read by lq_bench before connecting
    bench livequeryd "$id" "$label" "ws://127.0.0.1:$port/" "$SERVER_PID" "$@"
    stop_pid "$SERVER_PID"
    SERVER_PID=
    sleep 2 # let the kernel finish closing this scenario's sockets
    if [ -s "$WORK/server-$id.log" ]; then
        echo "-- livequeryd said (scenario $id):" >&2
        tail -n 5 "$WORK/server-$id.log" >&2
    fi
}

# parse ID LABEL lq_bench-args...: a fresh Parse Server (and PostgreSQL) per scenario
parse() {
    local id=$1 label=$2 port pid
    shift 2
    [ "$PEER" = 1 ] || return 0
    want "$id" || return 0
    port=$(free_port)
    PEER_DIR="$WORK/peer-$id"
    mkdir -p "$PEER_DIR"
    if ! pid=$("$ROOT/bench/peer/peer.sh" start "$PEER_DIR" "redis://127.0.0.1:$REDIS_PORT" "$port" "$SERVER_CPU"); then
        echo "run.sh: Parse Server did not start (scenario $id)" >&2
        FAILED=1
        printf '{"id":"%s","server":"parse-server","label":"%s","ok":false,"failure":"Parse Server did not start"}\n' \
            "$id" "$label" >>"$WORK/results.jsonl"
        PEER_DIR=
        return 0
    fi
    sleep 2 # settle, as for livequeryd: RSS at rest is read before connecting
    bench parse-server "$id" "$label" "ws://127.0.0.1:$port/" "$pid" --format parse "$@"
    "$ROOT/bench/peer/peer.sh" stop "$PEER_DIR" >/dev/null 2>&1 || true
    PEER_DIR=
    sleep 2
}

# ---- the scenarios ------------------------------------------------------------------
# Each broadcast/selective figure is measured on both servers where the issue asks for it;
# Parse gets fewer events where it would otherwise take minutes (the figures are rates and
# per-event costs, so the counts need not match).
LOOPS=${LQ_BENCH_LOOPS:-uv}
for EVENT_LOOP in $LOOPS; do
# broadcast: capacity, 1,000 and 10,000 subscribers, events as fast as the publisher goes
ours  b1k "broadcast 1k subs, full speed" \
    --scenario broadcast --connections 1000 --events 4000 --warmup 20
ours  b10k "broadcast 10k subs, full speed" \
    --scenario broadcast --connections 10000 --events 300 --warmup 3
# latency at Parse Server's measured point, 15,000 deliveries/s
ours  b1k-15k "broadcast 1k subs, 15 events/s" \
    --scenario broadcast --connections 1000 --events 150 --rate 15 --warmup 5
ours  b10k-15k "broadcast 10k subs, 1.5 events/s" \
    --scenario broadcast --connections 10000 --events 15 --rate 1.5 --warmup 2
# event-day bursts: 20 events (20,000 deliveries) at once every 2 s
ours  b1k-burst "broadcast 1k subs, bursts of 20 every 2 s" \
    --scenario broadcast --connections 1000 --events 100 --burst 20 --burst-interval-ms 2000 --warmup 5
# selective: distinct equality subscriptions (isbn), each event matches one; the cost of
# an event as the subscriptions grow 100x on the same 1,000 connections. As fast as the
# server goes, so the CPU per event is the work per event: at a fixed rate of a few hundred
# events/s this VM's wake-up cost dominates (perf: ~45 % in pvm_irq_enable) and blurs it.
ours  s1k "selective 1k subs (1k conns x 1), full speed" \
    --scenario selective --connections 1000 --subs-per-conn 1 --events 30000 --warmup 50
ours  s10k "selective 10k subs (1k conns x 10), full speed" \
    --scenario selective --connections 1000 --subs-per-conn 10 --events 30000 --warmup 50
ours  s100k "selective 100k subs (1k conns x 100), full speed" \
    --scenario selective --connections 1000 --subs-per-conn 100 --events 30000 --warmup 50
ours  s10k-conns "selective 10k conns x 1, 1,000 events/s" \
    --scenario selective --connections 10000 --subs-per-conn 1 --events 5000 --rate 1000 --warmup 20
# idle: memory per subscribed connection (19,500: this machine's fd limit is 20,000)
ours  idle10k "idle 10k conns, distinct subscriptions" \
    --scenario idle --connections 10000 --hold 3
ours  idle19k "idle 19.5k conns, distinct subscriptions" \
    --scenario idle --connections 19500 --hold 3
ours  idle19k-shared "idle 19.5k conns, one shared query" \
    --scenario idle --idle-query shared --connections 19500 --hold 3
done
EVENT_LOOP=${LOOPS%% *}

# ACL-heavy: 1,000 subscribers, each a distinct user with a session; every other event is
# readable only by role:signingStaff, which half the users have. Sessions and roles are
# resolved by livequeryd (--role gateway) from the MongoDB test server.
if want acl1k; then
    echo "== seeding the MongoDB test server for acl1k" >&2
    /usr/bin/python3 "$ROOT/tests/mongo/mockmongo.py" --port 0 --control-port 0 >"$WORK/mock.out" 2>"$WORK/mock.log" &
    MOCK_PID=$!
    for i in $(seq 100); do [ -s "$WORK/mock.out" ] && break; sleep 0.1; done
    MONGO_PORT=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["mongo_port"])' "$WORK/mock.out")
    CTL_PORT=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["control_port"])' "$WORK/mock.out")
    taskset -c "$CLIENT_CPU" /usr/bin/python3 "$ROOT/bench/acl_seed.py" "$CTL_PORT" 1000 r:bench signingStaff 2
    ours acl1k "ACL-heavy: 1k users, half the events role-restricted" \
        --server --role gateway --mongodb-uri "mongodb://127.0.0.1:$MONGO_PORT/parse?replicaSet=rs0" -- \
        --scenario broadcast --connections 1000 --events 2000 --warmup 10 \
        --session-prefix r:bench --restricted-role signingStaff --members-every 2
    stop_pid "$MOCK_PID"
    MOCK_PID=
fi

# the peer: Parse Server 9.10's LiveQuery, same load generator, same Redis, same cores
parse b1k "broadcast 1k subs, full speed" \
    --scenario broadcast --connections 1000 --events 300 --warmup 5 --idle-timeout 20
parse b10k "broadcast 10k subs, full speed" \
    --scenario broadcast --connections 10000 --events 30 --warmup 1 --idle-timeout 30
parse b1k-15k "broadcast 1k subs, 15 events/s" \
    --scenario broadcast --connections 1000 --events 150 --rate 15 --warmup 5 --idle-timeout 20
parse b10k-15k "broadcast 10k subs, 1.5 events/s" \
    --scenario broadcast --connections 10000 --events 15 --rate 1.5 --warmup 1 --idle-timeout 30
parse b1k-burst "broadcast 1k subs, bursts of 20 every 2 s" \
    --scenario broadcast --connections 1000 --events 100 --burst 20 --burst-interval-ms 2000 --warmup 5 --idle-timeout 20
# Parse matches every subscription of the class against every event (about 220 ms per event
# at 10k subscriptions, measured), so its selective runs get few events at low rates; it is
# saturated at each of them, so its CPU per event is its work per event too
parse s1k "selective 1k subs (1k conns x 1), 100 events/s" \
    --scenario selective --connections 1000 --subs-per-conn 1 --events 500 --rate 100 --warmup 10 --idle-timeout 30
parse s10k "selective 10k subs (1k conns x 10), 2 events/s" \
    --scenario selective --connections 1000 --subs-per-conn 10 --events 40 --rate 2 --warmup 2 --idle-timeout 60
parse s100k "selective 100k subs (1k conns x 100), 0.2 events/s" \
    --scenario selective --connections 1000 --subs-per-conn 100 --events 5 --rate 0.2 --warmup 1 --idle-timeout 120 \
    --timeout 380

# the tailer alone: change events per second from the MongoDB test server into Redis
# (bench/tailer.py; its record joins the others, its own table goes at the end)
if want tailer; then
    echo "== tailer (bench/tailer.py)" >&2
    LQ_BENCH_OUT="$WORK/tailer.md" LQ_BENCH_JSONL="$WORK/results.jsonl" python3 "$ROOT/bench/tailer.py" \
        >/dev/null 2>>"$WORK/tailer.log" || { FAILED=1; tail -n 20 "$WORK/tailer.log" >&2; }
fi

# ---- report ---------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
cp "$WORK/results.jsonl" "$JSONL"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain -- src include 2>/dev/null)" ]; then
    COMMIT="$COMMIT (+ uncommitted changes in src/ or include/)"
fi
MODEL=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
MACHINE="$(nproc) cores ($MODEL), $(free -g | awk '/Mem:/{print $2}') GiB, kernel $(uname -r); server pinned to core $SERVER_CPU, lq_bench and redis-server to core $CLIENT_CPU; loopback TCP"
python3 "$ROOT/bench/report.py" "$JSONL" --title "livequeryd and Parse Server LiveQuery, side by side" \
    --meta "date=$(date '+%Y-%m-%d %H:%M %Z')" "commit=$COMMIT" "machine=$MACHINE" \
    "peer=Parse Server $(node -p 'require(process.argv[1]).version' "$ROOT/bench/peer/node_modules/parse-server/package.json" 2>/dev/null || echo '-') on Node $(node --version 2>/dev/null || echo '-'), PostgreSQL from Debian" \
    >"$OUT"
LQ_PLOT_WHERE="2 cores, server on 1, loopback" "$ROOT/bench/plot.sh" "$JSONL" "$PLOTS" >&2 || FAILED=1

# the kernel's floor for a fan-out: N sends on N loopback sockets, from one core
if want floor; then
    {
        echo
        echo "## The floor: one send per subscriber (bench/send_floor.c, same run)"
        echo
        taskset -c "$SERVER_CPU" "$BUILD/bench/send_floor" --connections 1000 --rounds 200 \
            --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU"
    } >>"$OUT" || FAILED=1
fi

# authorization cost per delivery (in process, no sockets; bench/acl_bench.c): the
# public-only scenario against half the objects role-restricted, same run
if want acl-inproc; then
    {
        echo
        echo "## Authorization per delivery (bench/acl_bench.c, in process, pinned to core $SERVER_CPU)"
        echo
        taskset -c "$SERVER_CPU" "$BUILD/bench/acl_bench" --subs 1000 --events 20000 --rounds 5
    } >>"$OUT" || FAILED=1
fi

if [ -s "$WORK/tailer.md" ]; then
    { echo; sed 's/^# /## /' "$WORK/tailer.md"; } >>"$OUT"
fi

cat "$OUT"
echo "== written to $OUT, $JSONL and $PLOTS/" >&2
exit "$FAILED"
