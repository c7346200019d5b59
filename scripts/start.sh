#!/usr/bin/env bash
# Quick start: install dependencies, build, and run livequeryd in the foreground.
# With no Redis URL (flag --redis-url or LIVEQUERY_REDIS_URL) it starts a private
# redis-server on a free loopback port and stops it again on exit.
# Defaults: app id "bookstore", port 1337. Extra arguments go to livequeryd.
# Without a MongoDB URI (--mongodb-uri, LIVEQUERY_MONGODB_URI or the --config file)
# it runs the demo feed (--demo-feed 1, unless --demo-feed is given): a simulated
# event day for the display page at http://127.0.0.1:<port>/display/.
set -euo pipefail
export MONGOC_DISABLE_SHM=1 # libmongoc counters in-process: no /dev/shm file, no warning at start
cd "$(dirname "$0")/.."

./scripts/deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DBUILD_TESTING=OFF >/dev/null
cmake --build build -j"$(nproc)" >/dev/null

args=("$@")
want_redis=1
[ -n "${LIVEQUERY_REDIS_URL:-}" ] && want_redis=0
for a in "$@"; do case "$a" in --redis-url|--redis-url=*) want_redis=0 ;; esac; done

want_demo=1
[ -n "${LIVEQUERY_MONGODB_URI:-}" ] && want_demo=0
[ -n "${LIVEQUERY_DEMO_FEED:-}" ] && want_demo=0
config_file="${LIVEQUERY_CONFIG:-}"
prev=""
for a in "$@"; do
    case "$a" in
        --mongodb-uri|--mongodb-uri=*|--demo-feed|--demo-feed=*) want_demo=0 ;;
        --config=*) config_file="${a#--config=}" ;;
    esac
    [ "$prev" = "--config" ] && config_file="$a"
    prev="$a"
done
if [ -n "$config_file" ] && [ -f "$config_file" ] &&
    grep -Eq '^[[:space:]]*(mongodb-uri|demo-feed)[[:space:]]*=' "$config_file"; then
    want_demo=0
fi
[ "$want_demo" = 1 ] && args+=(--demo-feed 1)

redis_pid=""
cleanup() { [ -n "$redis_pid" ] && kill "$redis_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

if [ "$want_redis" = 1 ]; then
    port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p .run/redis
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$PWD/.run/redis" \
        --logfile "$PWD/.run/redis/redis.log" &
    redis_pid=$!
    for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
    args+=(--redis-url "redis://127.0.0.1:$port")
    echo "started a private redis-server on 127.0.0.1:$port (publish events there)"
fi

app_id="${LIVEQUERY_APP_ID:-bookstore}"
lq_port="${LIVEQUERY_PORT:-1337}"
display_q=""; [ "$app_id" != bookstore ] && display_q="?appId=${app_id}"
cat <<MSG
livequeryd: ws://127.0.0.1:${lq_port}/  (app id '${app_id}')
  JS SDK:  Parse.initialize('${app_id}'); Parse.liveQueryServerURL = 'ws://127.0.0.1:${lq_port}/';
  events:  PUBLISH livequery:${app_id}:changes '{"v":1,"className":"BookStockLog","op":"create","object":{"objectId":"a1","quantityOnHand":3}}'
  health:  curl http://127.0.0.1:${lq_port}/health    metrics: /metrics    stop: Ctrl-C
  display: http://127.0.0.1:${lq_port}/display/${display_q}  (the event-day page)
MSG
if [ "$want_demo" = 1 ]; then
    echo "  demo feed: no MongoDB URI given, so a simulated event day (SigningSchedule, BookStockLog) is published into Redis; open the display URL"
fi
./build/livequeryd --app-id "$app_id" --port "$lq_port" "${args[@]}" &
lq_pid=$!
trap 'kill $lq_pid 2>/dev/null; cleanup' EXIT INT TERM
wait "$lq_pid"
