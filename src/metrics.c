/* metrics.c - see metrics.h. */
#include "livequery/metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

lq_metrics lq_m;

/* livequery_delivery_latency_seconds: upper bounds in microseconds; one
 * count per bucket (made cumulative when rendered, so the rendered buckets
 * and _count always agree), the sum in microseconds. */
static const int64_t lat_bound_us[] = {1000,   2500,   5000,    10000,   25000,   50000,  100000,
                                       250000, 500000, 1000000, 2500000, 5000000, 10000000};
static const char *const lat_le[] = {"0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
                                     "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};
#define LAT_N (sizeof(lat_bound_us) / sizeof(lat_bound_us[0]))
static _Atomic int64_t lat_count[LAT_N + 1]; /* the last one: +Inf */
static _Atomic int64_t lat_sum_us;

#define LAG_UNKNOWN INT64_MIN
static _Atomic int64_t bus_lag_ms = LAG_UNKNOWN, tailer_lag_ms = LAG_UNKNOWN;

static pthread_mutex_t holder_lock = PTHREAD_MUTEX_INITIALIZER;
static char holder[256];

void lq_metrics_observe_delivery_us(int64_t us)
{
    size_t i = 0;
    if (us < 0)
        us = 0;
    while (i < LAT_N && us > lat_bound_us[i])
        i++;
    atomic_fetch_add_explicit(&lat_count[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&lat_sum_us, us, memory_order_relaxed);
}

void lq_metrics_set_bus_lag_ms(int64_t ms)
{
    atomic_store_explicit(&bus_lag_ms, ms, memory_order_relaxed);
}

void lq_metrics_set_tailer_lag_ms(int64_t ms)
{
    atomic_store_explicit(&tailer_lag_ms, ms, memory_order_relaxed);
}

void lq_metrics_set_lease_holder(const char *id)
{
    pthread_mutex_lock(&holder_lock);
    snprintf(holder, sizeof(holder), "%s", id ? id : "");
    pthread_mutex_unlock(&holder_lock);
}

/* Appends to buf at *n; 0, or -1 when it did not fit (buf stays terminated). */
static int put(char *buf, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int put(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(buf + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (w < 0 || (size_t)w >= cap - *n) {
        buf[*n] = '\0';
        return -1;
    }
    *n += (size_t)w;
    return 0;
}

/* A label value escaped for the text format (\\, \", \n). */
static void label_escape(char *out, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        if (*s == '\\' || *s == '"' || *s == '\n')
            out[o++] = '\\';
        out[o++] = *s == '\n' ? 'n' : *s;
    }
    out[o] = '\0';
}

static int put_lag(char *buf, size_t cap, size_t *n, const char *name, const char *help, int64_t ms)
{
    if (put(buf, cap, n, "# HELP livequery_%s %s\n# TYPE livequery_%s gauge\n", name, help, name) < 0)
        return -1;
    if (ms == LAG_UNKNOWN)
        return put(buf, cap, n, "livequery_%s NaN\n", name);
    return put(buf, cap, n, "livequery_%s %s%" PRId64 ".%03" PRId64 "\n", name, ms < 0 ? "-" : "",
               (ms < 0 ? -ms : ms) / 1000, (ms < 0 ? -ms : ms) % 1000);
}

/* The histogram, the lag gauges, the lease holder and the drops family. */
static int render_more(char *buf, size_t cap, size_t *n)
{
    static const char lat_name[] = "livequery_delivery_latency_seconds";
    int64_t cum = 0, sum = atomic_load_explicit(&lat_sum_us, memory_order_relaxed);

    if (put(buf, cap, n,
            "# HELP %s seconds from a live bus event's ts (set by its publisher; protocol/bus.md) to the "
            "end of the fan-out writes that handed its frames to the sockets; one observation per event "
            "delivered to at least one subscriber (not per subscriber); events without ts, and replays, "
            "are not observed\n# TYPE %s histogram\n",
            lat_name, lat_name) < 0)
        return -1;
    for (size_t i = 0; i <= LAT_N; i++) {
        cum += atomic_load_explicit(&lat_count[i], memory_order_relaxed);
        if (put(buf, cap, n, "%s_bucket{le=\"%s\"} %" PRId64 "\n", lat_name, i < LAT_N ? lat_le[i] : "+Inf",
                cum) < 0)
            return -1;
    }
    if (put(buf, cap, n, "%s_sum %" PRId64 ".%06" PRId64 "\n%s_count %" PRId64 "\n", lat_name,
            sum / 1000000, sum % 1000000, lat_name, cum) < 0)
        return -1;

    if (put_lag(buf, cap, n, "bus_lag_seconds",
                "gateway: arrival time minus ts of the last bus event that carried one, measured when it "
                "arrived (NaN before the first)",
                atomic_load_explicit(&bus_lag_ms, memory_order_relaxed)) < 0 ||
        put_lag(buf, cap, n, "tailer_lag_seconds",
                "tailer: read time minus the wallTime (else clusterTime) of the last change event read "
                "from MongoDB, measured when it was read (NaN before the first)",
                atomic_load_explicit(&tailer_lag_ms, memory_order_relaxed)) < 0)
        return -1;

    char esc[2 * sizeof(holder) + 1];
    pthread_mutex_lock(&holder_lock);
    label_escape(esc, sizeof(esc), holder);
    pthread_mutex_unlock(&holder_lock);
    if (put(buf, cap, n,
            "# HELP livequery_tailer_lease_holder the tailer id holding the lease, as this tailer last "
            "read it from Redis (no sample: no tailer here, Redis unreachable, or nobody holds it)\n"
            "# TYPE livequery_tailer_lease_holder gauge\n") < 0)
        return -1;
    if (esc[0] && put(buf, cap, n, "livequery_tailer_lease_holder{holder=\"%s\"} 1\n", esc) < 0)
        return -1;

    /* each reason is also a counter of its own (named after the colon) */
    const struct {
        const char *reason;
        int64_t v;
    } drops[] = {
        {"slow_consumer", LQ_METRIC_GET(slow_consumers_closed)},  /* connections, queue dropped */
        {"acl", LQ_METRIC_GET(deliveries_withheld_acl)},          /* event frames */
        {"clp", LQ_METRIC_GET(deliveries_withheld_clp)},          /* event frames */
        {"rate", LQ_METRIC_GET(limit_rate)},                      /* client messages */
        {"frame_too_large", LQ_METRIC_GET(frames_too_large)},     /* connections */
        {"invalid_json", LQ_METRIC_GET(frames_invalid_json)},     /* client frames */
        {"server_full", LQ_METRIC_GET(connections_rejected)},     /* connections */
        {"origin", LQ_METRIC_GET(origins_rejected)},              /* upgrades */
        {"handshake_timeout", LQ_METRIC_GET(handshakes_timed_out)}, /* connections */
        {"bus_invalid", LQ_METRIC_GET(bus_messages_invalid)},     /* bus messages */
        {"bus_duplicate", LQ_METRIC_GET(bus_duplicates_dropped)}, /* bus events */
    };
    if (put(buf, cap, n,
            "# HELP livequery_drops_total what was dropped or refused, by reason; each is also its own "
            "counter: slow_consumer=slow_consumers_closed acl=deliveries_withheld_acl "
            "clp=deliveries_withheld_clp rate=limit_rate frame_too_large=frames_too_large "
            "invalid_json=frames_invalid_json server_full=connections_rejected origin=origins_rejected "
            "handshake_timeout=handshakes_timed_out bus_invalid=bus_messages_invalid "
            "bus_duplicate=bus_duplicates_dropped\n# TYPE livequery_drops_total counter\n") < 0)
        return -1;
    for (size_t i = 0; i < sizeof(drops) / sizeof(drops[0]); i++)
        if (put(buf, cap, n, "livequery_drops_total{reason=\"%s\"} %" PRId64 "\n", drops[i].reason,
                drops[i].v) < 0)
            return -1;
    return 0;
}

size_t lq_metrics_render(char *buf, size_t cap)
{
    size_t n = 0;
    int w;

#define LQ_METRIC_RENDER(name, kind, help)                                                         \
    w = snprintf(buf + n, cap - n, "# HELP livequery_" #name " " help "\n# TYPE livequery_" #name \
                                   " " #kind "\nlivequery_" #name " %" PRId64 "\n",               \
                 LQ_METRIC_GET(name));                                                             \
    if (w < 0 || (size_t)w >= cap - n)                                                             \
        return n;                                                                                  \
    n += (size_t)w;
    LQ_METRICS(LQ_METRIC_RENDER)
#undef LQ_METRIC_RENDER
    render_more(buf, cap, &n);
    return n;
}
