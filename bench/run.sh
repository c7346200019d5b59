#!/usr/bin/env bash
# bench/run.sh - build livequeryd and lq_bench (Release), start a private
# redis-server and livequeryd on free loopback ports, run the benchmark
# scenarios, write bench/results/<date>.md and print it.
#
#   bench/run.sh              # the whole run, < 5 minutes
#
# Environment:
#   LQ_BENCH_SERVER_CPU=0     core livequeryd is pinned to
#   LQ_BENCH_CLIENT_CPU=1     core lq_bench and redis-server are pinned to
#   LQ_BENCH_OUT=path.md      where to write the results (default bench/results/<date>.md)
#   LQ_BENCH_ONLY=name        run one scenario: b1k | b1k-15k | b10k | s10k | s10k-conns | b1k-lws | acl
#   LQ_BENCH_LOOPS="uv poll"  livequeryd --event-loop values; every scenario runs once per loop
#                             (the first is the default one the Parse comparison uses)
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
APP_ID=bookstore
CHANNEL="livequery:$APP_ID:changes"

for tool in cmake redis-server redis-cli python3 taskset timeout; do
    command -v "$tool" >/dev/null || { echo "run.sh: $tool is required" >&2; exit 2; }
done
if [ "$(nproc)" -lt 2 ]; then
    echo "run.sh: needs 2 cores (server and load generator pinned apart); nproc=$(nproc)" >&2
    exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/lq-bench.XXXXXX")
REDIS_PID=
SERVER_PID=

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
cmake --build "$BUILD" -j"$(nproc)" --target livequeryd lq_bench acl_bench >>"$WORK/cmake.log" 2>&1 \
    || { cat "$WORK/cmake.log" >&2; exit 2; }
LIVEQUERYD="$BUILD/livequeryd"
LQ_BENCH="$BUILD/bench/lq_bench"

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

# run_scenario ID LABEL lq_bench-args...
run_scenario() {
    local id=$1 label=$2
    shift 2
    if [ -n "$ONLY" ] && [ "$ONLY" != "$id" ]; then
        return 0
    fi
    local port i rc
    label="$label — $EVENT_LOOP"
    id="$id-$EVENT_LOOP"
    port=$(free_port)
    # a fresh server per scenario: its RSS at rest and peak belong to this scenario
    taskset -c "$SERVER_CPU" "$LIVEQUERYD" --port "$port" --host 127.0.0.1 \
        --redis-url "redis://127.0.0.1:$REDIS_PORT" --app-id "$APP_ID" \
        --max-connections 20000 --max-subscriptions 256 --max-queue-bytes 4194304 \
        --event-loop "$EVENT_LOOP" --log-level warn 2>>"$WORK/server-$id.log" &
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
    echo "== $label" >&2
    rc=0
    timeout 70 taskset -c "$CLIENT_CPU" "$LQ_BENCH" --json --label "$label" \
        --url "ws://127.0.0.1:$port/" --redis "redis://127.0.0.1:$REDIS_PORT" \
        --server-pid "$SERVER_PID" --timeout 60 "$@" >"$WORK/$id.json" || rc=$?
    if [ "$rc" != 0 ]; then
        FAILED=1
        echo "run.sh: scenario '$label' FAILED (lq_bench exit $rc)" >&2
        if [ ! -s "$WORK/$id.json" ]; then
            printf '{"label":"%s","ok":false,"failure":"lq_bench exit %s"}\n' "$label" "$rc" >"$WORK/$id.json"
        fi
    fi
    cat "$WORK/$id.json" >>"$WORK/results.jsonl"
    stop_pid "$SERVER_PID"
    SERVER_PID=
    sleep 2 # let the kernel finish closing this scenario's sockets
    if [ -s "$WORK/server-$id.log" ]; then
        echo "-- livequeryd said (scenario $id):" >&2
        tail -n 5 "$WORK/server-$id.log" >&2
    fi
}

# ---- the scenarios ------------------------------------------------------------------
LOOPS=${LQ_BENCH_LOOPS:-uv poll}
PRIMARY=${LOOPS%% *}
for EVENT_LOOP in $LOOPS; do
# 1,000 subscribers, as fast as the publisher can go: capacity
run_scenario b1k "broadcast 1k subs, full speed" \
    --scenario broadcast --connections 1000 --subs-per-conn 1 --events 2000 --warmup 20
# 1,000 subscribers at 15,000 deliveries/s (15 events/s x 1,000): Parse Server's measured point
run_scenario b1k-15k "broadcast 1k subs, 15k deliveries/s" \
    --scenario broadcast --connections 1000 --subs-per-conn 1 --events 150 --rate 15 --warmup 5
# 10,000 connections, one subscription each, full speed
run_scenario b10k "broadcast 10k conns, full speed" \
    --scenario broadcast --connections 10000 --subs-per-conn 1 --events 200 --warmup 3
# 10,000 distinct subscriptions (1,000 connections x 10), each event matches exactly one
run_scenario s10k "selective 10k subs (1k conns x 10), full speed" \
    --scenario selective --connections 1000 --subs-per-conn 10 --events 50000 --warmup 100
# 10,000 distinct subscriptions on 10,000 connections, 1,000 events/s: the cost of one
# event when the server holds many connections
run_scenario s10k-conns "selective 10k conns x 1, 1k events/s" \
    --scenario selective --connections 10000 --subs-per-conn 1 --events 5000 --rate 1000 --warmup 20
# scenario 1 again with lws's own WebSocket client parser in lq_bench (interop check; this
# client costs more CPU per frame than the server, so it measures the client)
if [ "$EVENT_LOOP" = "$PRIMARY" ]; then
    run_scenario b1k-lws "broadcast 1k subs, full speed, --client lws" \
        --scenario broadcast --connections 1000 --subs-per-conn 1 --events 2000 --warmup 20 --client lws
fi
done

# ---- report ---------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$ROOT" status --porcelain -- src include 2>/dev/null)" ]; then
    COMMIT="$COMMIT (+ uncommitted changes in src/ or include/)"
fi
MODEL=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')
LQ_BENCH_PRIMARY="$PRIMARY" LQ_BENCH_COMMIT="$COMMIT" LQ_BENCH_MODEL="$MODEL" LQ_BENCH_DATE="$(date '+%Y-%m-%d %H:%M %Z')" \
    python3 - "$WORK/results.jsonl" >"$OUT" <<'PY'
import json, os, platform, sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]

def f(r, k, fmt="{:.0f}"):
    v = r.get(k)
    if v is None or (isinstance(v, (int, float)) and v < 0):
        return "–"
    return fmt.format(v)

print("# livequeryd benchmark, {}".format(os.environ["LQ_BENCH_DATE"]))
print()
print("Machine: {} cores, {}; kernel {}. livequeryd {} (Release), pinned to core 0; "
      "lq_bench and redis-server pinned to core 1; loopback TCP.".format(
          os.cpu_count(), os.environ["LQ_BENCH_MODEL"], platform.release(),
          os.environ["LQ_BENCH_COMMIT"]))
print()
metrics = [
    ("result", lambda r: "ok" if r.get("ok") else "**FAILED: {}**".format(r.get("failure"))),
    ("connections × subs/conn", lambda r: "{} × {}".format(f(r, "connections"), f(r, "subs_per_conn"))),
    ("connect+subscribe (s)", lambda r: f(r, "connect_subscribe_s", "{:.2f}")),
    ("events published (rate/s)", lambda r: "{} ({})".format(
        f(r, "events"), "full speed" if not r.get("rate") else "{:.0f}".format(r["rate"]))),
    ("deliveries received / expected", lambda r: "{} / {}".format(f(r, "deliveries"), f(r, "expected"))),
    ("**deliveries/s**", lambda r: "**{}**".format(f(r, "deliveries_per_s"))),
    ("latency p50 (ms)", lambda r: f(r, "lat_p50_ms", "{:.2f}")),
    ("latency p99 (ms)", lambda r: f(r, "lat_p99_ms", "{:.2f}")),
    ("latency p99.9 (ms)", lambda r: f(r, "lat_p999_ms", "{:.2f}")),
    ("latency max (ms)", lambda r: f(r, "lat_max_ms", "{:.2f}")),
    ("server RSS at rest (MB)", lambda r: "–" if r.get("server_rss_before_kb") is None else "{:.1f}".format(r["server_rss_before_kb"] / 1024)),
    ("server RSS after subscribe (MB)", lambda r: "–" if r.get("server_rss_after_sub_kb") is None else "{:.1f}".format(r["server_rss_after_sub_kb"] / 1024)),
    ("server RSS peak (MB)", lambda r: "–" if r.get("server_rss_peak_kb") is None else "{:.1f}".format(r["server_rss_peak_kb"] / 1024)),
    ("RSS per connection (KB)", lambda r: "–" if r.get("rss_per_conn_bytes") is None else "{:.2f}".format(r["rss_per_conn_bytes"] / 1024)),
    ("RSS per subscription (KB)", lambda r: "–" if r.get("rss_per_sub_bytes") is None else "{:.2f}".format(r["rss_per_sub_bytes"] / 1024)),
    ("server CPU in window (% of 1 core)", lambda r: f(r, "server_cpu_pct")),
    ("server CPU user / kernel (s)", lambda r: "{} / {}".format(f(r, "server_user_s", "{:.2f}"), f(r, "server_sys_s", "{:.2f}"))),
    ("server CPU µs per delivery", lambda r: f(r, "cpu_us_per_delivery", "{:.2f}")),
    ("lq_bench receiver CPU (% of window)", lambda r: f(r, "bench_rx_cpu_pct")),
    ("lq_bench client", lambda r: r.get("client", "–")),
]
print("| | " + " | ".join(r.get("label", "?") for r in rows) + " |")
print("|---|" + "---:|" * len(rows))
for name, fn in metrics:
    print("| {} | {} |".format(name, " | ".join(fn(r) for r in rows)))
print()

# ratios against Parse Server's figures in DESIGN.md ("Facts measured"): measured earlier on
# this kind of machine, NOT in this run
print("Against Parse Server 9.10 LiveQuery (DESIGN.md: 15–18k deliveries/s, p50 27 ms / p99 52 ms "
      "at 15k/s, 12–15 KB per subscriber, 150 MB at rest; measured earlier on this kind of "
      "machine, not in this run):")
print()
by = {r.get("label", ""): r for r in rows}
PRIMARY = os.environ["LQ_BENCH_PRIMARY"]
def get(label, loop=PRIMARY):
    r = by.get(label + " — " + loop)
    return r if r and r.get("ok") else None
full = get("broadcast 1k subs, full speed")
rate = get("broadcast 1k subs, 15k deliveries/s")
if full:
    d = full["deliveries_per_s"]
    print("- throughput, 1,000 subscribers: {:.0f} deliveries/s = {:.1f}–{:.1f}× Parse".format(
        d, d / 18000, d / 15000))
def vs(ours, theirs):
    ours = max(ours, 1e-3)
    if ours <= theirs:
        return "{:.1f}× lower".format(theirs / ours)
    return "**{:.1f}× higher**".format(ours / theirs)
if rate:
    print("- latency at 15k deliveries/s: p50 {:.2f} ms vs 27 ms ({}), p99 {:.2f} ms vs 52 ms ({})".format(
        rate["lat_p50_ms"], vs(rate["lat_p50_ms"], 27), rate["lat_p99_ms"], vs(rate["lat_p99_ms"], 52)))
src = get("broadcast 10k conns, full speed") or full
if src and src.get("rss_per_conn_bytes", -1) > 0:
    kb = src["rss_per_conn_bytes"] / 1024
    print("- memory per subscriber ({}): {:.2f} KB = {:.1f}–{:.1f}× less than 12–15 KB".format(
        src["label"], kb, 12 / kb, 15 / kb))
if full and full.get("server_rss_before_kb", -1) > 0:
    mb = full["server_rss_before_kb"] / 1024
    print("- at rest: {:.1f} MB = {:.0f}× less than 150 MB".format(mb, 150 / mb))
loops = sorted({r["label"].rsplit(" — ", 1)[1] for r in rows if " — " in r.get("label", "")})
if len(loops) > 1:
    print()
    print("Event loops side by side (same run; ratio = {} / other):".format(PRIMARY))
    print()
    print("| scenario | " + " | ".join("{} deliveries/s | {} CPU µs/delivery".format(l, l) for l in loops) + " |")
    print("|---|" + "---:|---:|" * len(loops))
    bases = []
    for r in rows:
        b = r.get("label", "").rsplit(" — ", 1)[0]
        if b not in bases:
            bases.append(b)
    for b in bases:
        cells = []
        for l in loops:
            r = get(b, l)
            cells += ["{:.0f}".format(r["deliveries_per_s"]) if r else "–",
                      "{:.2f}".format(r["cpu_us_per_delivery"]) if r and r.get("cpu_us_per_delivery") else "–"]
        print("| {} | {} |".format(b, " | ".join(cells)))
print()
print("Latency at full speed is mostly queueing (every event is published at once); "
      "compare latency only at a fixed rate. See bench/README.md.")
PY

# authorization cost per delivery (in process, no sockets; bench/acl_bench.c): the
# public-only scenario against half the objects role-restricted, same run
if [ -z "$ONLY" ] || [ "$ONLY" = acl ]; then
    {
        echo
        echo "## Authorization per delivery (bench/acl_bench.c, in process, pinned to core $SERVER_CPU)"
        echo
        taskset -c "$SERVER_CPU" "$BUILD/bench/acl_bench" --subs 1000 --events 20000 --rounds 5
    } >>"$OUT" || FAILED=1
fi

cat "$OUT"
echo "== written to $OUT" >&2
exit "$FAILED"
