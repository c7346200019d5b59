/*
 * lq_bench.c - load generator for livequeryd (Parse LiveQuery over WebSocket).
 *
 * One lws client thread (the main thread, lws's own poll loop) holds N
 * WebSocket connections and counts what arrives (two receive paths, --client
 * raw|lws: see "WebSocket side"); a second thread PUBLISHes change events
 * into Redis with hiredis (sync API). Each event carries its publish wall time in the object
 * ("sentUs", CLOCK_REALTIME microseconds); the receiver finds it with a
 * substring search and records publish->receive latency in a log-linear
 * histogram (no per-frame allocation, no per-frame output).
 *
 * Phases:
 *   1. connect storm: open N connections, at most --batch handshakes in flight;
 *      each connection pipelines {"op":"connect"} and K subscribes; wait until
 *      every "subscribed" arrived.
 *   2. warmup: W events (sentUs 0), wait for all their deliveries.
 *   3. measure: M events, as fast as possible (--rate 0) or at R events/s;
 *      wait until every expected delivery arrived (or nothing arrives for
 *      --idle-timeout seconds: loss, exit 1).
 *
 * Server figures come from /proc/<--server-pid>: VmRSS before connecting,
 * after subscribing, VmHWM at the end; utime+stime over the measure window.
 *
 * See bench/README.md for what each figure means.
 */
#define _GNU_SOURCE /* memmem */
#include <errno.h>
#include <hiredis/hiredis.h>
#include <libwebsockets.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define CLASS_NAME "BookStockLog"
#define MAX_FRAME_OUT 512      /* our connect/subscribe frames */
#define PIPELINE 32            /* PUBLISHes per round trip at full speed */
#define DRAIN_AFTER_DONE_US 200000 /* look for duplicates this long after the last expected */

/*---- options -----------------------------------------------------------------*/

enum scenario { SC_BROADCAST, SC_SELECTIVE, SC_IDLE };

static struct {
    char host[256];
    int port;
    char path[256];
    char redis_host[256];
    int redis_port;
    char channel[256];
    char app_id[128];
    long connections;
    long subs_per_conn;
    enum scenario scenario;
    long events;
    double rate;
    long warmup;
    long server_pid;
    int json;
    long batch;
    double idle_timeout;
    double timeout;
    const char *label;
    int raw; /* --client raw (default) or lws */
    int parse_format; /* --format parse: Parse Server's <appId>afterSave payload */
    long burst;       /* --burst N: publish N events at once every --burst-interval-ms */
    double burst_interval_ms;
    double hold_s;    /* --hold S (idle): wait this long before reading the server's RSS */
    int shared_query; /* --idle-query shared: idle connections all subscribe to one query */
    const char *session_prefix; /* --session-prefix P: connection i subscribes with token P<i> */
    const char *restricted_role; /* --restricted-role R: odd events readable by role:R only */
    long members_every; /* --members-every K: connections i % K == 0 are in that role */
} opt;

/*---- clocks --------------------------------------------------------------------*/

static int64_t wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static double thread_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double process_cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/*---- the server process, from /proc ----------------------------------------------*/

/* VmRSS and VmHWM in kB; -1 when unknown. */
static void proc_mem(long pid, long *rss_kb, long *hwm_kb)
{
    char path[64], line[256];
    FILE *f;

    *rss_kb = *hwm_kb = -1;
    if (pid <= 0)
        return;
    snprintf(path, sizeof(path), "/proc/%ld/status", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            *rss_kb = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "VmHWM:", 6) == 0)
            *hwm_kb = strtol(line + 6, NULL, 10);
    }
    fclose(f);
}

/* utime and stime in seconds; both -1 when unknown. */
static void proc_cpu_split(long pid, double *user_s, double *sys_s)
{
    char path[64], buf[1024];
    FILE *f;
    size_t n;
    char *p;
    unsigned long long ut = 0, st = 0;

    *user_s = *sys_s = -1;
    if (pid <= 0)
        return;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    f = fopen(path, "r");
    if (f == NULL)
        return;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')'); /* comm may contain spaces */
    if (p == NULL)
        return;
    /* after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
     * cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return;
    *user_s = (double)ut / (double)sysconf(_SC_CLK_TCK);
    *sys_s = (double)st / (double)sysconf(_SC_CLK_TCK);
}

/*---- latency histogram (log-linear, ~0.1% precision) ---------------------------------*/

#define H_LIN 2048 /* exact below 2048 us */
#define H_SUB 1024
#define H_NB (H_LIN + 54 * H_SUB)

static uint64_t hist[H_NB];
static uint64_t hist_n;
static uint64_t hist_max;

static unsigned hist_index(uint64_t v)
{
    if (v < H_LIN)
        return (unsigned)v;
    int e = (63 - __builtin_clzll(v)) - 10; /* >= 1 */
    return H_LIN + (unsigned)(e - 1) * H_SUB + (unsigned)((v >> e) - H_SUB);
}

static uint64_t hist_value(unsigned i)
{
    if (i < H_LIN)
        return i;
    unsigned e = (i - H_LIN) / H_SUB + 1;
    uint64_t m = (i - H_LIN) % H_SUB + H_SUB;
    return (m << e) + ((1ull << e) >> 1); /* middle of the bucket */
}

static void hist_add(int64_t us)
{
    uint64_t v = us < 0 ? 0 : (uint64_t)us;
    hist[hist_index(v)]++;
    hist_n++;
    if (v > hist_max)
        hist_max = v;
}

/* Value at quantile q in microseconds; -1 when empty. */
static double hist_quantile(double q)
{
    if (hist_n == 0)
        return -1;
    uint64_t want = (uint64_t)(q * (double)hist_n);
    if (want < 1)
        want = 1;
    if (want > hist_n)
        want = hist_n;
    uint64_t seen = 0;
    for (unsigned i = 0; i < H_NB; i++) {
        seen += hist[i];
        if (seen >= want) {
            uint64_t v = hist_value(i);
            return (double)(v > hist_max ? hist_max : v);
        }
    }
    return (double)hist_max;
}

/*---- shared state ---------------------------------------------------------------------*/

enum pub_state { PUB_IDLE, PUB_WARMUP, PUB_MEASURE, PUB_DONE, PUB_FAILED };

typedef struct bconn {
    struct lws *wsi;
    uint32_t idx;
    uint32_t sent;     /* frames written: connect, then subscribes */
    uint8_t open;      /* WebSocket established and not closed */
    uint8_t gone;      /* failed or closed */
    /* --client raw: our own framing */
    uint8_t hs_sent, hs_done;
    uint8_t hlen, hneed, in_payload; /* frame header bytes held / needed */
    uint8_t fin, opcode;
    uint8_t pong_due, close_due, ping_len;
    unsigned char hdr[14];
    unsigned char ping[125];
    uint64_t need;     /* payload bytes of the current frame still to come */
    char *frag;        /* a frame or message that came in pieces; the upgrade answer */
    size_t frag_len, frag_cap;
} bconn;

static struct {
    struct lws_context *ctx;
    bconn *conns;
    long next_to_open;
    long in_flight;    /* handshakes not finished */
    long established;
    long failed;       /* connection errors */
    long dropped;      /* closed by the peer after being established */
    long connected;    /* "connected" replies */
    long subscribed;   /* "subscribed" replies */
    long errors;       /* "error" frames */
    long other_events; /* event frames whose sentUs could not be read */
    int shutting_down;
    lws_sorted_usec_list_t tick;

    /* written by the lws thread, read by the publisher */
    atomic_long warm_deliveries;
    atomic_long deliveries;
    atomic_llong last_delivery_mono;

    /* written by the publisher, read by the lws thread */
    atomic_int pub_state;
    atomic_int pub_stop; /* main thread gave up: stop publishing */
    atomic_long published;
    atomic_llong first_pub_wall;
    atomic_llong first_pub_mono;
    atomic_llong last_pub_mono;
    _Atomic double user_at_first_pub, sys_at_first_pub;
    char pub_error[512];
} g;

static long n_subscriptions(void)
{
    return opt.connections * opt.subs_per_conn;
}

static long per_event_deliveries(void)
{
    return opt.scenario == SC_BROADCAST ? n_subscriptions() : opt.scenario == SC_SELECTIVE ? 1 : 0;
}

/* Subscriptions that may read an event restricted to --restricted-role. */
static long member_subscriptions(void)
{
    long k = opt.members_every > 0 ? opt.members_every : 2;
    return (opt.connections + k - 1) / k * opt.subs_per_conn;
}

/* Event n is role-restricted (odd n) when --restricted-role is given. */
static int restricted(long n)
{
    return opt.restricted_role != NULL && (n & 1);
}

/* Deliveries expected for events [0, m). */
static long expected_deliveries(long m)
{
    if (opt.restricted_role == NULL || opt.scenario != SC_BROADCAST)
        return m * per_event_deliveries();
    long odd = m / 2;
    return (m - odd) * n_subscriptions() + odd * member_subscriptions();
}

/*---- publisher thread (hiredis, sync) --------------------------------------------------------*/

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng_next(void)
{
    uint64_t x = rng_state; /* xorshift64 */
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

/* One update event on BookStockLog, sentUs first in "object" so the receiver finds it early:
 * our bus format v1 (protocol/bus.md), or with --format parse the payload Parse Server
 * publishes on <appId>afterSave (reference §5/§8), which livequeryd also reads. */
static int format_event(char *buf, size_t cap, long n, int64_t sent_us)
{
    long target = opt.scenario == SC_SELECTIVE ? (long)(rng_next() % (uint64_t)n_subscriptions())
                                               : n % 1000;
    long qty = 10 + n % 50;
    char acl[192];
    if (restricted(n))
        snprintf(acl, sizeof(acl), "{\"role:%s\":{\"read\":true}}", opt.restricted_role);
    else
        snprintf(acl, sizeof(acl), "{\"*\":{\"read\":true}}");
    int len;
    if (opt.parse_format)
        len = snprintf(
            buf, cap,
            "{\"currentParseObject\":{\"sentUs\":%lld,\"objectId\":\"bk%07ld\",\"isbn\":\"978-%ld\","
            "\"storeId\":\"s1\",\"quantityOnHand\":%ld,"
            "\"createdAt\":\"2026-11-23T23:29:42.277Z\",\"updatedAt\":\"2026-11-23T23:29:43.385Z\","
            "\"ACL\":%s,\"__type\":\"Object\",\"className\":\"" CLASS_NAME "\"},"
            "\"originalParseObject\":{\"objectId\":\"bk%07ld\",\"isbn\":\"978-%ld\","
            "\"storeId\":\"s1\",\"quantityOnHand\":%ld,"
            "\"createdAt\":\"2026-11-23T23:29:42.277Z\",\"updatedAt\":\"2026-11-23T23:29:42.277Z\","
            "\"ACL\":%s,\"__type\":\"Object\",\"className\":\"" CLASS_NAME "\"}}",
            (long long)sent_us, target, target, qty, acl, target, target, qty - 1, acl);
    else
        len = snprintf(
            buf, cap,
            "{\"v\":1,\"className\":\"" CLASS_NAME "\",\"op\":\"update\","
            "\"object\":{\"sentUs\":%lld,\"objectId\":\"bk%07ld\",\"className\":\"" CLASS_NAME "\","
            "\"isbn\":\"978-%ld\",\"storeId\":\"s1\",\"quantityOnHand\":%ld,"
            "\"createdAt\":\"2026-11-23T23:29:42.277Z\",\"updatedAt\":\"2026-11-23T23:29:43.385Z\","
            "\"ACL\":%s},"
            "\"original\":{\"objectId\":\"bk%07ld\",\"className\":\"" CLASS_NAME "\","
            "\"isbn\":\"978-%ld\",\"storeId\":\"s1\",\"quantityOnHand\":%ld,"
            "\"createdAt\":\"2026-11-23T23:29:42.277Z\",\"updatedAt\":\"2026-11-23T23:29:42.277Z\","
            "\"ACL\":%s},"
            "\"ts\":%lld}",
            (long long)sent_us, target, target, qty, acl, target, target, qty - 1, acl,
            (long long)(sent_us > 0 ? sent_us / 1000 : wall_us() / 1000));
    return len > 0 && (size_t)len < cap ? len : -1;
}

static size_t append(char *dst, size_t cap, size_t o, const char *src)
{
    while (*src && o + 1 < cap)
        dst[o++] = *src++;
    dst[o] = '\0';
    return o;
}

static void pub_fail(const char *what, redisContext *rc)
{
    char msg[sizeof(g.pub_error)];
    size_t o = append(msg, sizeof(msg), 0, what);
    if (rc && rc->err) {
        o = append(msg, sizeof(msg), o, ": ");
        o = append(msg, sizeof(msg), o, rc->errstr);
    }
    memcpy(g.pub_error, msg, o + 1);
    atomic_store(&g.pub_state, PUB_FAILED);
    lws_cancel_service(g.ctx);
}

/* Checks a PUBLISH reply: it must say one receiver at least (the server). */
static int publish_reply_ok(redisReply *r)
{
    int ok = r && r->type == REDIS_REPLY_INTEGER && r->integer >= 1;
    if (r && r->type == REDIS_REPLY_INTEGER && r->integer < 1) {
        size_t o = append(g.pub_error, sizeof(g.pub_error), 0, "PUBLISH on ");
        o = append(g.pub_error, sizeof(g.pub_error), o, opt.channel);
        append(g.pub_error, sizeof(g.pub_error), o,
               " reached no subscriber: is livequeryd subscribed to this Redis?");
    }
    if (r)
        freeReplyObject(r);
    return ok;
}

static void sleep_until_mono(int64_t t_us)
{
    struct timespec ts = {.tv_sec = (time_t)(t_us / 1000000), .tv_nsec = (long)(t_us % 1000000) * 1000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void *publisher(void *arg)
{
    struct timeval tv = {5, 0};
    redisContext *rc = redisConnectWithTimeout(opt.redis_host, opt.redis_port, tv);
    char buf[2048];
    int len;
    redisReply *r;

    (void)arg;
    if (rc == NULL || rc->err) {
        pub_fail("cannot connect to Redis", rc);
        if (rc)
            redisFree(rc);
        return NULL;
    }
    redisSetTimeout(rc, tv);

    /* warmup: sentUs 0, one at a time */
    atomic_store(&g.pub_state, PUB_WARMUP);
    for (long i = 0; i < opt.warmup; i++) {
        len = format_event(buf, sizeof(buf), i, 0);
        r = redisCommand(rc, "PUBLISH %s %b", opt.channel, buf, (size_t)len);
        if (!publish_reply_ok(r)) {
            pub_fail(g.pub_error[0] ? g.pub_error : "PUBLISH failed", rc);
            redisFree(rc);
            return NULL;
        }
    }
    int64_t deadline = mono_us() + (int64_t)(opt.idle_timeout * 1e6) + 10000000;
    while (atomic_load(&g.warm_deliveries) < expected_deliveries(opt.warmup)) {
        if (atomic_load(&g.pub_stop) || mono_us() > deadline) {
            pub_fail("warmup deliveries did not all arrive", NULL);
            redisFree(rc);
            return NULL;
        }
        usleep(1000);
    }

    /* measure */
    double u0, s0;
    proc_cpu_split(opt.server_pid, &u0, &s0);
    atomic_store(&g.user_at_first_pub, u0);
    atomic_store(&g.sys_at_first_pub, s0);
    int64_t t0 = mono_us();
    atomic_store(&g.first_pub_mono, t0);
    atomic_store(&g.first_pub_wall, wall_us());
    atomic_store(&g.pub_state, PUB_MEASURE);
    if (opt.burst > 0 || opt.rate <= 0) {
        /* pipelined: --burst events at once every --burst-interval-ms, or at full
         * speed PIPELINE at a time, back to back */
        long per = opt.burst > 0 ? opt.burst : PIPELINE;
        for (long i = 0, b = 0; i < opt.events && !atomic_load(&g.pub_stop); b++) {
            if (opt.burst > 0)
                sleep_until_mono(t0 + (int64_t)((double)b * opt.burst_interval_ms * 1000.0));
            long n = opt.events - i < per ? opt.events - i : per;
            for (long j = 0; j < n; j++) {
                len = format_event(buf, sizeof(buf), i + j, wall_us());
                redisAppendCommand(rc, "PUBLISH %s %b", opt.channel, buf, (size_t)len);
            }
            for (long j = 0; j < n; j++) {
                void *rp = NULL;
                if (redisGetReply(rc, &rp) != REDIS_OK || !publish_reply_ok(rp)) {
                    pub_fail(g.pub_error[0] ? g.pub_error : "PUBLISH failed", rc);
                    redisFree(rc);
                    return NULL;
                }
            }
            i += n;
            atomic_store(&g.published, i);
        }
    } else {
        double period_us = 1e6 / opt.rate;
        for (long i = 0; i < opt.events && !atomic_load(&g.pub_stop); i++) {
            sleep_until_mono(t0 + (int64_t)((double)i * period_us));
            len = format_event(buf, sizeof(buf), i, wall_us());
            r = redisCommand(rc, "PUBLISH %s %b", opt.channel, buf, (size_t)len);
            if (!publish_reply_ok(r)) {
                pub_fail(g.pub_error[0] ? g.pub_error : "PUBLISH failed", rc);
                redisFree(rc);
                return NULL;
            }
            atomic_store(&g.published, i + 1);
        }
    }
    atomic_store(&g.last_pub_mono, mono_us());
    atomic_store(&g.pub_state, PUB_DONE);
    redisFree(rc);
    lws_cancel_service(g.ctx);
    return NULL;
}

/*---- WebSocket side ------------------------------------------------------------------------*/

/*
 * Two receive paths, both on lws client connections in lws's poll loop:
 *
 * --client lws: lws does the WebSocket handshake and framing
 *   (LWS_CALLBACK_CLIENT_RECEIVE). lws 4.1's client parser walks every
 *   payload byte through its state machine, which costs about as much CPU
 *   per frame as the server spends sending it.
 * --client raw (default): an lws "RAW" client connection; this file sends the
 *   upgrade request and reads the server's unmasked frames straight out of
 *   lws's read buffer (header, then a memcpy-free payload), so the load
 *   generator stays well ahead of the server on a 2-core machine.
 *
 * Both count, time and validate frames the same way (on_message).
 */

#define TX_CAP (16 * 1024)
static unsigned char txbuf[LWS_PRE + TX_CAP];
static uint64_t mask_rng = 0x2545f4914f6cdd1dull; /* lws thread only */

/* The i-th frame a connection sends: 0 is connect, then its subscribes. */
static int client_frame(const bconn *c, uint32_t i, char *p, size_t cap)
{
    int len;

    if (i == 0)
        return snprintf(p, cap, "{\"op\":\"connect\",\"applicationId\":\"%s\"}", opt.app_id);
    long j = (long)i - 1;
    long sub = (long)c->idx * opt.subs_per_conn + j;
    char tok[160] = "";
    if (opt.session_prefix)
        snprintf(tok, sizeof(tok), ",\"sessionToken\":\"%s%u\"", opt.session_prefix, c->idx);
    if (opt.scenario == SC_BROADCAST || (opt.scenario == SC_IDLE && opt.shared_query))
        len = snprintf(p, cap,
                       "{\"op\":\"subscribe\",\"requestId\":%ld,\"query\":{\"className\":\"" CLASS_NAME
                       "\",\"where\":{\"quantityOnHand\":{\"$gt\":0}}}%s}",
                       j + 1, tok);
    else
        len = snprintf(p, cap,
                       "{\"op\":\"subscribe\",\"requestId\":%ld,\"query\":{\"className\":\"" CLASS_NAME
                       "\",\"where\":{\"isbn\":\"978-%ld\"}}%s}",
                       j + 1, sub, tok);
    return len;
}

static int64_t parse_sent_us(const char *buf, size_t len)
{
    static const char key[] = "\"sentUs\":";
    const char *p = memmem(buf, len, key, sizeof(key) - 1);
    if (p == NULL)
        return -1;
    p += sizeof(key) - 1;
    const char *end = buf + len;
    int64_t v = 0;
    if (p >= end || *p < '0' || *p > '9')
        return -1;
    while (p < end && *p >= '0' && *p <= '9')
        v = v * 10 + (*p++ - '0');
    return v;
}

/* One whole text message from the server. */
static void on_message(bconn *c, const char *buf, size_t len)
{
    static const char op[] = "{\"op\":\"";
    const char *name = buf + sizeof(op) - 1;
    size_t rest = len >= sizeof(op) - 1 ? len - (sizeof(op) - 1) : 0;

    if (len < sizeof(op) - 1 || memcmp(buf, op, sizeof(op) - 1) != 0) {
        g.errors++;
        if (g.errors <= 3)
            fprintf(stderr, "lq_bench: unexpected frame on connection %u: %.*s\n", c->idx,
                    (int)(len > 200 ? 200 : len), buf);
        return;
    }
    if (rest >= 10 && memcmp(name, "connected\"", 10) == 0) {
        g.connected++;
        return;
    }
    if (rest >= 11 && memcmp(name, "subscribed\"", 11) == 0) {
        g.subscribed++;
        return;
    }
    if (rest >= 6 && memcmp(name, "error\"", 6) == 0) {
        g.errors++;
        if (g.errors <= 3)
            fprintf(stderr, "lq_bench: error frame on connection %u: %.*s\n", c->idx,
                    (int)(len > 300 ? 300 : len), buf);
        return;
    }
    /* an event: create / enter / update / leave / delete */
    int64_t sent = parse_sent_us(buf, len);
    if (sent < 0) {
        g.other_events++;
        return;
    }
    if (sent == 0) {
        atomic_fetch_add_explicit(&g.warm_deliveries, 1, memory_order_relaxed);
        return;
    }
    hist_add(wall_us() - sent);
    atomic_fetch_add_explicit(&g.deliveries, 1, memory_order_relaxed);
    atomic_store_explicit(&g.last_delivery_mono, mono_us(), memory_order_relaxed);
}

static void frag_append(bconn *c, const void *p, size_t n)
{
    if (c->frag_len + n > c->frag_cap) {
        size_t cap = c->frag_cap ? c->frag_cap : 1024;
        while (cap < c->frag_len + n)
            cap *= 2;
        char *np = realloc(c->frag, cap);
        if (np == NULL) {
            fprintf(stderr, "lq_bench: out of memory\n");
            exit(2);
        }
        c->frag = np;
        c->frag_cap = cap;
    }
    memcpy(c->frag + c->frag_len, p, n);
    c->frag_len += n;
}

static void conn_ready(bconn *c)
{
    c->open = 1;
    g.in_flight--;
    g.established++;
    lws_callback_on_writable(c->wsi);
}

static void conn_failed(bconn *c, const char *why)
{
    if (!c->gone && !c->open) {
        g.in_flight--;
        g.failed++;
        if (g.failed <= 3)
            fprintf(stderr, "lq_bench: connection %u failed: %s\n", c->idx, why ? why : "(no reason)");
    }
    c->gone = 1;
    c->wsi = NULL;
}

static void conn_closed(bconn *c)
{
    if (c->open) {
        c->open = 0;
        if (!g.shutting_down) {
            g.dropped++;
            if (g.dropped <= 3)
                fprintf(stderr, "lq_bench: connection %u closed by the server\n", c->idx);
        }
    } else {
        conn_failed(c, "closed before the handshake completed");
    }
    c->gone = 1;
    c->wsi = NULL;
}

/*-- --client lws ---*/

static int lws_write_next(bconn *c)
{
    char *p = (char *)txbuf + LWS_PRE;
    int len = client_frame(c, c->sent, p, TX_CAP);

    if (len <= 0 || len >= TX_CAP)
        return -1;
    if (lws_write(c->wsi, txbuf + LWS_PRE, (size_t)len, LWS_WRITE_TEXT) < len)
        return -1;
    c->sent++;
    if (c->sent < 1 + opt.subs_per_conn)
        lws_callback_on_writable(c->wsi);
    return 0;
}

static void lws_on_receive(bconn *c, struct lws *wsi, const char *in, size_t len)
{
    int final = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;

    if (final && c->frag_len == 0) { /* whole message in one piece: no copy */
        on_message(c, in, len);
        return;
    }
    frag_append(c, in, len);
    if (final) {
        on_message(c, c->frag, c->frag_len);
        c->frag_len = 0;
    }
}

static int callback_lws(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len)
{
    bconn *c = user;

    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c)
            conn_failed(c, in ? (const char *)in : NULL);
        return 0;
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        conn_ready(c);
        return 0;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (c->sent < 1 + opt.subs_per_conn)
            return lws_write_next(c);
        return 0;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        lws_on_receive(c, wsi, in, len);
        return 0;
    case LWS_CALLBACK_CLIENT_CLOSED:
        if (c && !c->gone)
            conn_closed(c);
        return 0;
    default:
        return 0;
    }
}

/*-- --client raw ---*/

/* Appends one masked client frame (RFC 6455 5.3) at dst; returns its length. */
static size_t ws_frame(unsigned char *dst, int opcode, const void *payload, size_t len)
{
    const unsigned char *src = payload;
    unsigned char key[4];
    size_t h;

    dst[0] = (unsigned char)(0x80 | opcode);
    if (len < 126) {
        dst[1] = (unsigned char)(0x80 | len);
        h = 2;
    } else {
        dst[1] = 0x80 | 126;
        dst[2] = (unsigned char)(len >> 8);
        dst[3] = (unsigned char)len;
        h = 4;
    }
    mask_rng ^= mask_rng << 13;
    mask_rng ^= mask_rng >> 7;
    mask_rng ^= mask_rng << 17;
    memcpy(key, &mask_rng, 4);
    memcpy(dst + h, key, 4);
    h += 4;
    for (size_t i = 0; i < len; i++)
        dst[h + i] = src[i] ^ key[i & 3];
    return h + len;
}

static int raw_writeable(bconn *c)
{
    unsigned char *o = txbuf + LWS_PRE;
    size_t n = 0;
    int close_after = 0;

    if (!c->hs_sent) {
        int len = snprintf((char *)o, TX_CAP,
                           "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                           "Connection: Upgrade\r\nSec-WebSocket-Key: bHFfYmVuY2gta2V5LTAwMQ==\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n",
                           opt.path, opt.host, opt.port);
        if (len <= 0 || len >= TX_CAP)
            return -1;
        n = (size_t)len;
        c->hs_sent = 1;
    } else if (c->hs_done) {
        char tmp[MAX_FRAME_OUT];
        if (c->pong_due) {
            n += ws_frame(o + n, 0xA, c->ping, c->ping_len);
            c->pong_due = 0;
        }
        while (c->sent < 1 + opt.subs_per_conn && n + MAX_FRAME_OUT + 16 < TX_CAP) {
            int len = client_frame(c, c->sent, tmp, sizeof(tmp));
            if (len <= 0 || len >= (int)sizeof(tmp))
                return -1;
            n += ws_frame(o + n, 0x1, tmp, (size_t)len);
            c->sent++;
        }
        if (c->close_due) {
            n += ws_frame(o + n, 0x8, "\x03\xe8", 2); /* 1000 */
            close_after = 1;
        }
    }
    if (n && lws_write(c->wsi, o, n, LWS_WRITE_RAW) < (int)n)
        return -1;
    if (close_after)
        return -1;
    if (c->hs_done && (c->sent < 1 + opt.subs_per_conn || c->pong_due))
        lws_callback_on_writable(c->wsi);
    return 0;
}

/* A complete frame from the server. Returns -1 to close. */
static int raw_frame(bconn *c, const unsigned char *p, size_t len)
{
    switch (c->opcode) {
    case 0x1:
        if (!c->fin) { /* livequeryd never fragments; not worth supporting here */
            g.errors++;
            fprintf(stderr, "lq_bench: fragmented message on connection %u: unsupported\n", c->idx);
            return -1;
        }
        on_message(c, (const char *)p, len);
        return 0;
    case 0x9: /* ping: answer with the same payload */
        c->ping_len = (uint8_t)(len > sizeof(c->ping) ? sizeof(c->ping) : len);
        memcpy(c->ping, p, c->ping_len);
        c->pong_due = 1;
        lws_callback_on_writable(c->wsi);
        return 0;
    case 0xA:
        return 0;
    case 0x8:
        c->close_due = 1;
        lws_callback_on_writable(c->wsi);
        return 0;
    default:
        g.errors++;
        if (g.errors <= 3)
            fprintf(stderr, "lq_bench: unexpected opcode %d on connection %u\n", c->opcode, c->idx);
        return -1;
    }
}

/* Frames out of a byte stream: header bytes one by one, payload in bulk. */
static int raw_frames(bconn *c, const unsigned char *p, size_t n)
{
    while (n) {
        if (!c->in_payload) {
            c->hdr[c->hlen++] = *p++;
            n--;
            if (c->hlen == 2) {
                unsigned l7 = c->hdr[1] & 0x7f;
                if (c->hdr[1] & 0x80) {
                    g.errors++;
                    fprintf(stderr, "lq_bench: masked frame from the server on connection %u\n",
                            c->idx);
                    return -1;
                }
                c->hneed = (uint8_t)(2 + (l7 == 126 ? 2 : l7 == 127 ? 8 : 0));
            }
            if (c->hlen < 2 || c->hlen < c->hneed)
                continue;
            uint64_t plen = c->hdr[1] & 0x7f;
            if (plen == 126)
                plen = (uint64_t)c->hdr[2] << 8 | c->hdr[3];
            else if (plen == 127) {
                plen = 0;
                for (int i = 0; i < 8; i++)
                    plen = plen << 8 | c->hdr[2 + i];
            }
            c->fin = (c->hdr[0] & 0x80) != 0;
            c->opcode = c->hdr[0] & 0x0f;
            c->need = plen;
            c->hlen = 0;
            c->in_payload = 1;
            if (plen == 0) {
                c->in_payload = 0;
                if (raw_frame(c, (const unsigned char *)"", 0) < 0)
                    return -1;
            }
            continue;
        }
        size_t take = n < c->need ? n : (size_t)c->need;
        if (c->frag_len == 0 && take == c->need) { /* the whole payload is here: no copy */
            c->need = 0;
            c->in_payload = 0;
            if (raw_frame(c, p, take) < 0)
                return -1;
        } else {
            frag_append(c, p, take);
            c->need -= take;
            if (c->need == 0) {
                int rc;
                c->in_payload = 0;
                rc = raw_frame(c, (const unsigned char *)c->frag, c->frag_len);
                c->frag_len = 0;
                if (rc < 0)
                    return -1;
            }
        }
        p += take;
        n -= take;
    }
    return 0;
}

static int raw_rx(bconn *c, const unsigned char *in, size_t len)
{
    if (c->hs_done)
        return raw_frames(c, in, len);

    /* the HTTP answer to the upgrade: collect it whole */
    frag_append(c, in, len);
    char *end = memmem(c->frag, c->frag_len, "\r\n\r\n", 4);
    if (end == NULL)
        return c->frag_len > 8192 ? -1 : 0;
    if (c->frag_len < 12 || memcmp(c->frag, "HTTP/1.1 101", 12) != 0) {
        conn_failed(c, "the server refused the WebSocket upgrade");
        return -1;
    }
    size_t used = (size_t)(end + 4 - c->frag), rest = c->frag_len - used;
    c->hs_done = 1;
    conn_ready(c);
    if (rest == 0) {
        c->frag_len = 0;
        return 0;
    }
    unsigned char *tmp = malloc(rest); /* rare: frames right behind the 101 */
    if (tmp == NULL)
        return -1;
    memcpy(tmp, c->frag + used, rest);
    c->frag_len = 0;
    int rc = raw_frames(c, tmp, rest);
    free(tmp);
    return rc;
}

static int callback_raw(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                        size_t len)
{
    bconn *c = user;

    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        if (c)
            conn_failed(c, in ? (const char *)in : NULL);
        return 0;
    case LWS_CALLBACK_RAW_CONNECTED:
        lws_callback_on_writable(wsi);
        return 0;
    case LWS_CALLBACK_RAW_WRITEABLE:
        return raw_writeable(c);
    case LWS_CALLBACK_RAW_RX:
        return raw_rx(c, in, len);
    case LWS_CALLBACK_RAW_CLOSE:
        if (c && !c->gone)
            conn_closed(c);
        return 0;
    default:
        return 0;
    }
}

static const struct lws_protocols protocols[] = {
    /* rx buffer (lws mode): an event frame is ~540 bytes; larger messages are reassembled */
    {"lq-bench", callback_lws, 0, 2048, 0, NULL, 0},
    {"lq-bench-raw", callback_raw, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static void open_more(void)
{
    while (g.next_to_open < opt.connections && g.in_flight < opt.batch) {
        bconn *c = &g.conns[g.next_to_open];
        struct lws_client_connect_info ci;

        memset(&ci, 0, sizeof(ci));
        c->idx = (uint32_t)g.next_to_open;
        ci.context = g.ctx;
        ci.address = opt.host;
        ci.port = opt.port;
        ci.path = opt.path;
        ci.host = opt.host;
        ci.origin = opt.host;
        ci.protocol = NULL; /* no subprotocol header */
        ci.ietf_version_or_minus_one = -1;
        ci.userdata = c;
        ci.pwsi = &c->wsi;
        if (opt.raw) {
            ci.method = "RAW";
            ci.local_protocol_name = protocols[1].name;
        } else {
            ci.local_protocol_name = protocols[0].name;
        }
        g.next_to_open++;
        g.in_flight++;
        if (lws_client_connect_via_info(&ci) == NULL && !c->gone)
            conn_failed(c, "lws_client_connect_via_info failed");
    }
}

static void on_tick(lws_sorted_usec_list_t *sul)
{
    /* only here so lws_service returns often enough for the main loop's checks */
    lws_sul_schedule(g.ctx, 0, sul, on_tick, 50 * LWS_US_PER_MS);
}

/*---- options parsing ----------------------------------------------------------------------*/

static void usage(FILE *f)
{
    fprintf(f,
            "usage: lq_bench --url ws://127.0.0.1:PORT/ --redis redis://127.0.0.1:PORT [options]\n"
            "  --connections N       WebSocket connections (default 1000)\n"
            "  --subs-per-conn K     subscriptions per connection (default 1)\n"
            "  --scenario S          broadcast (every subscription matches every event) or\n"
            "                        selective (subscription i: isbn 978-<i>; each event hits one)\n"
            "  --events M            measured events to publish (default 1000)\n"
            "  --rate R              events/s; 0 = as fast as possible (default 0)\n"
            "  --warmup W            warmup events, not measured (default 10)\n"
            "  --server-pid PID      livequeryd's pid, for RSS and CPU figures\n"
            "  --app-id ID           (default bookstore)\n"
            "  --channel-prefix P    (default livequery:)\n"
            "  --batch B             handshakes in flight during the connect storm (default 256)\n"
            "  --idle-timeout S      give up when nothing arrives for S seconds (default 5)\n"
            "  --timeout S           give up after S seconds in all (default 240)\n"
            "  --label TEXT          scenario label in the report\n"
            "  --client raw|lws      raw (default): lws RAW client connections, WebSocket framing\n"
            "                        done here (cheap); lws: lws's own WebSocket client parser\n"
            "  --format ours|parse   ours (default): bus format v1 on <prefix><app>:changes;\n"
            "                        parse: Parse Server's payload on <app>afterSave\n"
            "  --burst N             publish N events at once every --burst-interval-ms\n"
            "  --burst-interval-ms T (default 1000)\n"
            "  --hold S              idle scenario: seconds to wait before reading RSS (default 2)\n"
            "  --idle-query Q        idle: distinct (default; isbn 978-<i> each) or shared (one query)\n"
            "  --session-prefix P    connection i subscribes with sessionToken P<i>\n"
            "  --restricted-role R   odd events are readable by role:R only (broadcast)\n"
            "  --members-every K     connections i %% K == 0 belong to that role (default 2)\n"
            "  --json                one JSON line instead of the human-readable report\n");
}

static int parse_hostport(const char *s, const char *scheme, char *host, size_t hcap, int *port,
                          char *path, size_t pcap)
{
    size_t sl = strlen(scheme);
    if (strncmp(s, scheme, sl) != 0)
        return -1;
    s += sl;
    const char *at = strchr(s, '@'); /* redis://:pass@host is not supported: a private bench Redis */
    if (at)
        return -1;
    const char *colon = strchr(s, ':');
    const char *slash = strchr(s, '/');
    if (colon == NULL || (slash && slash < colon))
        return -1;
    size_t hl = (size_t)(colon - s);
    if (hl == 0 || hl >= hcap)
        return -1;
    memcpy(host, s, hl);
    host[hl] = '\0';
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (p <= 0 || p > 65535 || (*end && *end != '/'))
        return -1;
    *port = (int)p;
    if (path) {
        snprintf(path, pcap, "%s", *end ? end : "/");
    }
    return 0;
}

static long num_arg(const char *name, const char *v, long lo, long hi)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (errno || *end || n < lo || n > hi) {
        fprintf(stderr, "lq_bench: bad value for %s: %s\n", name, v);
        exit(2);
    }
    return n;
}

static double dbl_arg(const char *name, const char *v, double lo)
{
    char *end;
    double d = strtod(v, &end);
    if (*end || !(d >= lo)) {
        fprintf(stderr, "lq_bench: bad value for %s: %s\n", name, v);
        exit(2);
    }
    return d;
}

static void parse_args(int argc, char **argv)
{
    const char *url = NULL, *redis = NULL, *prefix = "livequery:";

    opt.connections = 1000;
    opt.subs_per_conn = 1;
    opt.scenario = SC_BROADCAST;
    opt.events = 1000;
    opt.warmup = 10;
    opt.batch = 256;
    opt.idle_timeout = 5;
    opt.timeout = 240;
    opt.raw = 1;
    opt.burst_interval_ms = 1000;
    opt.hold_s = 2;
    opt.members_every = 2;
    snprintf(opt.app_id, sizeof(opt.app_id), "bookstore");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--json") == 0) {
            opt.json = 1;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            exit(0);
        }
        if (v == NULL) {
            fprintf(stderr, "lq_bench: %s needs a value (or is unknown)\n", a);
            usage(stderr);
            exit(2);
        }
        i++;
        if (strcmp(a, "--url") == 0)
            url = v;
        else if (strcmp(a, "--redis") == 0)
            redis = v;
        else if (strcmp(a, "--connections") == 0)
            opt.connections = num_arg(a, v, 1, 1000000);
        else if (strcmp(a, "--subs-per-conn") == 0)
            opt.subs_per_conn = num_arg(a, v, 1, 10000);
        else if (strcmp(a, "--scenario") == 0) {
            if (strcmp(v, "broadcast") == 0)
                opt.scenario = SC_BROADCAST;
            else if (strcmp(v, "selective") == 0)
                opt.scenario = SC_SELECTIVE;
            else if (strcmp(v, "idle") == 0)
                opt.scenario = SC_IDLE;
            else {
                fprintf(stderr, "lq_bench: --scenario is broadcast, selective or idle\n");
                exit(2);
            }
        } else if (strcmp(a, "--events") == 0)
            opt.events = num_arg(a, v, 1, 1000000000);
        else if (strcmp(a, "--rate") == 0)
            opt.rate = dbl_arg(a, v, 0);
        else if (strcmp(a, "--warmup") == 0)
            opt.warmup = num_arg(a, v, 0, 1000000);
        else if (strcmp(a, "--server-pid") == 0)
            opt.server_pid = num_arg(a, v, 1, 1L << 30);
        else if (strcmp(a, "--app-id") == 0)
            snprintf(opt.app_id, sizeof(opt.app_id), "%s", v);
        else if (strcmp(a, "--channel-prefix") == 0)
            prefix = v;
        else if (strcmp(a, "--batch") == 0)
            opt.batch = num_arg(a, v, 1, 100000);
        else if (strcmp(a, "--idle-timeout") == 0)
            opt.idle_timeout = dbl_arg(a, v, 0.1);
        else if (strcmp(a, "--timeout") == 0)
            opt.timeout = dbl_arg(a, v, 1);
        else if (strcmp(a, "--label") == 0)
            opt.label = v;
        else if (strcmp(a, "--format") == 0) {
            if (strcmp(v, "ours") == 0)
                opt.parse_format = 0;
            else if (strcmp(v, "parse") == 0)
                opt.parse_format = 1;
            else {
                fprintf(stderr, "lq_bench: --format is ours or parse\n");
                exit(2);
            }
        } else if (strcmp(a, "--burst") == 0)
            opt.burst = num_arg(a, v, 1, 1000000);
        else if (strcmp(a, "--burst-interval-ms") == 0)
            opt.burst_interval_ms = dbl_arg(a, v, 1);
        else if (strcmp(a, "--hold") == 0)
            opt.hold_s = dbl_arg(a, v, 0);
        else if (strcmp(a, "--idle-query") == 0) {
            if (strcmp(v, "shared") == 0)
                opt.shared_query = 1;
            else if (strcmp(v, "distinct") == 0)
                opt.shared_query = 0;
            else {
                fprintf(stderr, "lq_bench: --idle-query is distinct or shared\n");
                exit(2);
            }
        } else if (strcmp(a, "--session-prefix") == 0)
            opt.session_prefix = v;
        else if (strcmp(a, "--restricted-role") == 0)
            opt.restricted_role = v;
        else if (strcmp(a, "--members-every") == 0)
            opt.members_every = num_arg(a, v, 1, 1000000);
        else if (strcmp(a, "--client") == 0) {
            if (strcmp(v, "raw") == 0)
                opt.raw = 1;
            else if (strcmp(v, "lws") == 0)
                opt.raw = 0;
            else {
                fprintf(stderr, "lq_bench: --client is raw or lws\n");
                exit(2);
            }
        }
        else {
            fprintf(stderr, "lq_bench: unknown option %s\n", a);
            usage(stderr);
            exit(2);
        }
    }
    if (url == NULL || redis == NULL) {
        fprintf(stderr, "lq_bench: --url and --redis are required\n");
        usage(stderr);
        exit(2);
    }
    if (parse_hostport(url, "ws://", opt.host, sizeof(opt.host), &opt.port, opt.path,
                       sizeof(opt.path)) != 0) {
        fprintf(stderr, "lq_bench: --url must look like ws://HOST:PORT/PATH (no TLS): %s\n", url);
        exit(2);
    }
    if (parse_hostport(redis, "redis://", opt.redis_host, sizeof(opt.redis_host), &opt.redis_port,
                       NULL, 0) != 0) {
        fprintf(stderr, "lq_bench: --redis must look like redis://HOST:PORT: %s\n", redis);
        exit(2);
    }
    if (opt.parse_format)
        snprintf(opt.channel, sizeof(opt.channel), "%safterSave", opt.app_id);
    else
        snprintf(opt.channel, sizeof(opt.channel), "%s%s:changes", prefix, opt.app_id);
}

static void raise_fd_limit(long need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    if ((long)rl.rlim_cur < need) {
        fprintf(stderr, "lq_bench: need %ld file descriptors, the limit is %ld (ulimit -Hn)\n", need,
                (long)rl.rlim_cur);
        exit(2);
    }
}

/*---- report --------------------------------------------------------------------------------*/

typedef struct report {
    long rss_before, rss_after, hwm_end, rss_end;
    double connect_s;
    double window_s;
    double server_cpu_s, server_user_s, server_sys_s;
    double bench_rx_cpu_s, bench_cpu_s;
    double publish_s;
    long delivered, expected, published;
    int ok;
    const char *failure;
} report;

/* s as a JSON string literal (or null), for the few free-text fields. */
static const char *json_str(const char *s, char *buf, size_t cap)
{
    size_t o = 0;
    if (s == NULL)
        return "null";
    buf[o++] = '"';
    for (; *s && o + 3 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            buf[o++] = '\\';
        buf[o++] = ch < 0x20 ? ' ' : (char)ch;
    }
    buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static double ms(double us)
{
    return us < 0 ? -1 : us / 1000.0;
}

static void print_report(const report *r)
{
    long subs = n_subscriptions();
    double dps = r->window_s > 0 ? (double)r->delivered / r->window_s : 0;
    double rss_per_conn = r->rss_before >= 0 && r->rss_after >= 0
                              ? (double)(r->rss_after - r->rss_before) * 1024.0 / (double)opt.connections
                              : -1;
    double rss_per_sub = rss_per_conn >= 0 ? rss_per_conn / (double)opt.subs_per_conn : -1;
    double cpu_pct = r->server_cpu_s >= 0 && r->window_s > 0 ? 100.0 * r->server_cpu_s / r->window_s : -1;
    double cpu_per = r->server_cpu_s >= 0 && r->delivered > 0 ? r->server_cpu_s * 1e6 / (double)r->delivered
                                                             : -1;
    double rx_pct = r->window_s > 0 ? 100.0 * r->bench_rx_cpu_s / r->window_s : -1;
    double pub_rate = r->publish_s > 0 ? (double)r->published / r->publish_s : 0;
    const char *sc = opt.scenario == SC_BROADCAST   ? "broadcast"
                     : opt.scenario == SC_SELECTIVE ? "selective"
                                                    : "idle";
    char fbuf[1100], lbuf[600], rbuf[300];

    if (opt.json) {
        printf("{\"label\":%s,\"scenario\":\"%s\",\"client\":\"%s\",\"ok\":%s,\"failure\":%s,"
               "\"connections\":%ld,\"subs_per_conn\":%ld,\"subscriptions\":%ld,"
               "\"connect_subscribe_s\":%.3f,\"events\":%ld,\"warmup\":%ld,\"rate\":%.1f,"
               "\"publish_rate\":%.1f,\"deliveries\":%ld,\"expected\":%ld,\"lost\":%ld,"
               "\"window_s\":%.3f,\"deliveries_per_s\":%.0f,"
               "\"lat_p50_ms\":%.3f,\"lat_p99_ms\":%.3f,\"lat_p999_ms\":%.3f,\"lat_max_ms\":%.3f,"
               "\"server_rss_before_kb\":%ld,\"server_rss_after_sub_kb\":%ld,\"server_rss_end_kb\":%ld,"
               "\"server_rss_peak_kb\":%ld,\"rss_per_conn_bytes\":%.0f,\"rss_per_sub_bytes\":%.0f,"
               "\"server_cpu_s\":%.2f,\"server_user_s\":%.2f,\"server_sys_s\":%.2f,"
               "\"server_cpu_pct\":%.1f,\"cpu_us_per_delivery\":%.3f,"
               "\"bench_rx_cpu_s\":%.2f,\"bench_rx_cpu_pct\":%.1f,\"bench_cpu_s\":%.2f,"
               "\"connection_errors\":%ld,\"connections_dropped\":%ld,\"error_frames\":%ld,"
               "\"format\":\"%s\",\"burst\":%ld,\"burst_interval_ms\":%.0f,\"restricted_role\":%s}\n",
               json_str(opt.label ? opt.label : sc, lbuf, sizeof(lbuf)), sc, opt.raw ? "raw" : "lws",
               r->ok ? "true" : "false", json_str(r->failure, fbuf, sizeof(fbuf)), opt.connections,
               opt.subs_per_conn, subs, r->connect_s, opt.events, opt.warmup, opt.rate, pub_rate,
               r->delivered, r->expected, r->expected - r->delivered, r->window_s, dps,
               ms(hist_quantile(0.50)), ms(hist_quantile(0.99)), ms(hist_quantile(0.999)),
               hist_n ? (double)hist_max / 1000.0 : -1.0, r->rss_before, r->rss_after, r->rss_end,
               r->hwm_end, rss_per_conn, rss_per_sub, r->server_cpu_s, r->server_user_s,
               r->server_sys_s, cpu_pct, cpu_per, r->bench_rx_cpu_s, rx_pct,
               r->bench_cpu_s, g.failed, g.dropped, g.errors, opt.parse_format ? "parse" : "ours",
               opt.burst, opt.burst_interval_ms,
               json_str(opt.restricted_role, rbuf, sizeof(rbuf)));
        fflush(stdout);
        return;
    }
    printf("lq_bench %s%s%s (--client %s)\n", sc, opt.label ? " - " : "", opt.label ? opt.label : "",
           opt.raw ? "raw" : "lws");
    printf("  connections          %ld x %ld subscriptions = %ld subscriptions\n", opt.connections,
           opt.subs_per_conn, subs);
    printf("  connect+subscribe    %.3f s (%.0f subscriptions/s)\n", r->connect_s,
           r->connect_s > 0 ? (double)subs / r->connect_s : 0);
    if (opt.rate > 0)
        printf("  events published     %ld at %.1f/s asked, %.1f/s achieved (+%ld warmup)\n",
               r->published, opt.rate, pub_rate, opt.warmup);
    else
        printf("  events published     %ld at full speed, %.0f/s (+%ld warmup)\n", r->published,
               pub_rate, opt.warmup);
    printf("  deliveries           %ld / %ld expected%s\n", r->delivered, r->expected,
           r->delivered == r->expected ? "" : "   <-- MISMATCH");
    printf("  deliveries/s         %.0f (first publish -> last delivery: %.3f s)\n", dps, r->window_s);
    printf("  latency ms           p50 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", ms(hist_quantile(0.50)),
           ms(hist_quantile(0.99)), ms(hist_quantile(0.999)), hist_n ? (double)hist_max / 1000.0 : -1.0);
    if (opt.server_pid > 0) {
        printf("  server RSS MB        before %.1f  after subscribe %.1f  end %.1f  peak %.1f\n",
               r->rss_before / 1024.0, r->rss_after / 1024.0, r->rss_end / 1024.0, r->hwm_end / 1024.0);
        printf("  RSS per connection   %.0f bytes (%.0f per subscription)\n", rss_per_conn, rss_per_sub);
        printf("  server CPU           %.2f s in the window (%.0f%% of one core; user %.2f s, kernel %.2f s), "
               "%.3f us per delivery\n",
               r->server_cpu_s, cpu_pct, r->server_user_s, r->server_sys_s, cpu_per);
    }
    if (r->window_s > 0)
        printf("  bench CPU            receiver thread %.2f s (%.0f%% of the window), process %.2f s\n",
               r->bench_rx_cpu_s, rx_pct, r->bench_cpu_s);
    if (g.failed || g.dropped || g.errors || g.other_events)
        printf("  problems             connection errors %ld, dropped %ld, error frames %ld, "
               "events without sentUs %ld\n",
               g.failed, g.dropped, g.errors, g.other_events);
    if (!r->ok)
        printf("  FAILED: %s\n", r->failure ? r->failure : "?");
    fflush(stdout);
}

/* Server CPU since the first measured publish. */
static void server_cpu_window(report *r)
{
    double u, sy;
    proc_cpu_split(opt.server_pid, &u, &sy);
    if (u < 0 || atomic_load(&g.user_at_first_pub) < 0) {
        r->server_cpu_s = r->server_user_s = r->server_sys_s = -1;
        return;
    }
    r->server_user_s = u - atomic_load(&g.user_at_first_pub);
    r->server_sys_s = sy - atomic_load(&g.sys_at_first_pub);
    r->server_cpu_s = r->server_user_s + r->server_sys_s;
}

/*---- main ----------------------------------------------------------------------------------*/

int main(int argc, char **argv)
{
    struct lws_context_creation_info info;
    report r;
    pthread_t pub;
    int pub_started = 0;
    int64_t t_start, t_connected = 0, t_done = 0, drain_until = 0;
    double rx_cpu0 = 0, proc_cpu0 = 0;
    long dummy;

    memset(&r, 0, sizeof(r));
    parse_args(argc, argv);
    raise_fd_limit(opt.connections + 64);
    lws_set_log_level(LLL_ERR, NULL);

    g.conns = calloc((size_t)opt.connections, sizeof(bconn));
    if (g.conns == NULL) {
        fprintf(stderr, "lq_bench: out of memory\n");
        return 2;
    }
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = protocols;
    info.pt_serv_buf_size = 64 * 1024; /* bigger reads: fewer syscalls per frame */
    info.timeout_secs = 30;
    g.ctx = lws_create_context(&info);
    if (g.ctx == NULL) {
        fprintf(stderr, "lq_bench: lws_create_context failed\n");
        return 2;
    }
    lws_sul_schedule(g.ctx, 0, &g.tick, on_tick, 50 * LWS_US_PER_MS);

    r.rss_after = -1;
    proc_mem(opt.server_pid, &r.rss_before, &dummy);
    r.expected = opt.scenario == SC_IDLE ? 0 : expected_deliveries(opt.events);
    r.ok = 1;
    t_start = mono_us();

    for (;;) {
        int64_t now = mono_us();
        int ps = atomic_load(&g.pub_state);

        if (now - t_start > (int64_t)(opt.timeout * 1e6)) {
            r.ok = 0;
            r.failure = "overall timeout";
            break;
        }
        if (t_connected && opt.scenario == SC_IDLE) {
            /* idle: hold every connection and subscription, then read the server's RSS */
            if (now - t_connected >= (int64_t)(opt.hold_s * 1e6)) {
                proc_mem(opt.server_pid, &r.rss_after, &dummy);
                if (g.failed || g.dropped || g.errors) {
                    r.ok = 0;
                    r.failure = "connections dropped or error frames while idle";
                }
                break;
            }
        } else if (!pub_started) {
            open_more();
            if (g.failed || g.dropped) {
                r.ok = 0;
                r.failure = "connections failed during the connect storm";
                break;
            }
            if (g.subscribed >= n_subscriptions() && opt.scenario == SC_IDLE) {
                t_connected = now;
                r.connect_s = (double)(t_connected - t_start) / 1e6;
            } else if (g.subscribed >= n_subscriptions()) {
                t_connected = now;
                r.connect_s = (double)(t_connected - t_start) / 1e6;
                proc_mem(opt.server_pid, &r.rss_after, &dummy);
                if (pthread_create(&pub, NULL, publisher, NULL) != 0) {
                    r.ok = 0;
                    r.failure = "cannot start the publisher thread";
                    break;
                }
                pub_started = 1;
            } else if (g.errors) {
                r.ok = 0;
                r.failure = "the server answered connect/subscribe with an error";
                break;
            }
        } else if (ps == PUB_FAILED) {
            r.ok = 0;
            r.failure = g.pub_error;
            break;
        } else if (ps == PUB_MEASURE || ps == PUB_DONE) {
            if (rx_cpu0 == 0) {
                rx_cpu0 = thread_cpu_s();
                proc_cpu0 = process_cpu_s();
            }
            long got = atomic_load(&g.deliveries);
            if (t_done == 0 && ps == PUB_DONE && got >= r.expected) {
                t_done = now;
                server_cpu_window(&r);
                r.bench_rx_cpu_s = thread_cpu_s() - rx_cpu0;
                r.bench_cpu_s = process_cpu_s() - proc_cpu0;
                drain_until = now + DRAIN_AFTER_DONE_US;
            }
            if (t_done && now >= drain_until)
                break;
            if (t_done == 0 && ps == PUB_DONE) {
                int64_t last = atomic_load(&g.last_delivery_mono);
                int64_t lastpub = atomic_load(&g.last_pub_mono);
                if (last < lastpub)
                    last = lastpub;
                if (now - last > (int64_t)(opt.idle_timeout * 1e6)) {
                    r.ok = 0;
                    r.failure = "deliveries missing: nothing arrived for --idle-timeout seconds";
                    server_cpu_window(&r);
                    r.bench_rx_cpu_s = thread_cpu_s() - rx_cpu0;
                    r.bench_cpu_s = process_cpu_s() - proc_cpu0;
                    break;
                }
            }
        }
        if (lws_service(g.ctx, 0) < 0) {
            r.ok = 0;
            r.failure = "lws_service failed";
            break;
        }
    }

    if (pub_started) {
        atomic_store(&g.pub_stop, 1);
        pthread_join(pub, NULL);
    }
    r.delivered = atomic_load(&g.deliveries);
    r.published = atomic_load(&g.published);
    if (atomic_load(&g.first_pub_mono)) {
        int64_t last = atomic_load(&g.last_delivery_mono);
        r.window_s = (double)(last - atomic_load(&g.first_pub_mono)) / 1e6;
        if (r.window_s < 0)
            r.window_s = 0;
        int64_t lp = atomic_load(&g.last_pub_mono);
        r.publish_s = lp ? (double)(lp - atomic_load(&g.first_pub_mono)) / 1e6 : 0;
    }
    proc_mem(opt.server_pid, &r.rss_end, &r.hwm_end);
    if (r.ok && r.delivered != r.expected) {
        r.ok = 0;
        r.failure = r.delivered > r.expected ? "more deliveries than expected (duplicates)"
                                             : "deliveries lost";
    }
    if (r.ok && (g.dropped || g.errors || g.other_events)) {
        r.ok = 0;
        r.failure = "connections dropped or error frames during the run";
    }
    print_report(&r);
    if (!r.ok)
        fprintf(stderr, "lq_bench: FAILED: %s (deliveries %ld of %ld expected, lost %ld)\n",
                r.failure, r.delivered, r.expected, r.expected - r.delivered);

    g.shutting_down = 1;
    lws_context_destroy(g.ctx);
    for (long i = 0; i < opt.connections; i++)
        free(g.conns[i].frag);
    free(g.conns);
    return r.ok ? 0 : 1;
}
