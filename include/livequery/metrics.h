/*
 * metrics.h - process-wide counters and gauges, rendered as Prometheus text
 * on GET /metrics. Relaxed atomics: any thread may bump them.
 */
#ifndef LIVEQUERY_METRICS_H
#define LIVEQUERY_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define LQ_METRICS(X)                                                                              \
    X(connections_total, counter, "WebSocket connections accepted")                                \
    X(connections_rejected, counter, "connections refused: server full")                          \
    X(connections_rejected_draining, counter, "WebSocket upgrades refused while draining (SIGTERM)") \
    X(connections, gauge, "open WebSocket connections")                                            \
    X(subscriptions, gauge, "live subscriptions")                                                  \
    X(subscription_groups, gauge, "distinct (class, canonical query) groups")                     \
    X(frames_in, counter, "client frames received")                                                \
    X(frames_invalid_json, counter, "client frames dropped: not JSON (no reply)")                 \
    X(frames_too_large, counter, "connections closed: frame over --max-frame-bytes")              \
    X(requests_rejected, counter, "client requests answered with an error frame")                 \
    X(limit_subscriptions, counter, "subscribes refused: over --max-subscriptions (155)")          \
    X(limit_query_size, counter, "subscribes refused: where over --max-query-bytes or 1024 constraints") \
    X(limit_query_depth, counter, "subscribes refused: where nested deeper than --max-query-depth") \
    X(limit_json_depth, counter, "client messages refused: JSON deeper than --max-json-depth")     \
    X(limit_regex, counter, "$regex refused as too long, or a match stopped by the PCRE2 limits")  \
    X(limit_rate, counter, "client messages refused: over --max-messages-per-second")             \
    X(limit_rate_closed, counter, "connections closed (1008): kept sending over their rate")      \
    X(handshakes_timed_out, counter, "connections dropped: HTTP request incomplete after --handshake-timeout") \
    X(events_in, counter, "change events taken from the bus")                                      \
    X(events_unwatched, counter, "change events for classes nobody subscribes to")                \
    X(deliveries, counter, "event frames queued to clients")                                       \
    X(deliveries_withheld_acl, counter, "matches withheld because the ACL denies the subscriber") \
    X(bus_messages_invalid, counter, "bus messages dropped: malformed")                           \
    X(bus_connects, counter, "successful Redis (re)connections")                                   \
    X(bus_connected, gauge, "1 while the Redis subscriber is connected")                          \
    X(slow_consumers_closed, counter, "connections closed: outbound queue over its byte limit")   \
    X(queued_bytes, gauge, "bytes waiting in outbound queues")                                     \
    X(bytes_out, counter, "bytes written to WebSocket clients")                                    \
    X(writes_short, counter, "fan-out writes the kernel took only part of (the rest waits in lws)") \
    X(bus_duplicates_dropped, counter, "bus events dropped: seq already delivered")               \
    X(bus_gaps_repaired, counter, "bus events recovered from the history stream after a seq gap") \
    X(bus_resyncs, counter, "classes whose subscribers were told to resync")                      \
    X(tailer_leader, gauge, "1 while this process holds the tailer lease")                        \
    X(tailer_lease_acquired, counter, "tailer lease acquisitions")                                 \
    X(tailer_lease_lost, counter, "tailer leases lost or given up")                                \
    X(tailer_events_in, counter, "change events read from MongoDB")                                \
    X(tailer_events_published, counter, "change events published to Redis")                        \
    X(tailer_events_unconvertible, counter, "change events skipped: document without _id")        \
    X(tailer_publish_retries, counter, "publish attempts retried (Redis unreachable or failing)")  \
    X(tailer_streams_opened, counter, "change streams opened (first open and every re-open)")     \
    X(tailer_stream_errors, counter, "change streams that failed")                                 \
    X(tailer_resumes, counter, "change streams re-opened from the stored token after a failure")  \
    X(tailer_history_lost, counter, "change streams whose resume point was gone (new epoch)")     \
    X(tailer_epochs, counter, "new epochs started (history lost or invalidate)")                  \
    X(tailer_schema_loads, counter, "_SCHEMA (re)loads")                                           \
    X(tailer_cache_hits, counter, "original or deleted object found in the last-seen cache")      \
    X(tailer_cache_misses, counter, "original or deleted object not in the last-seen cache")      \
    X(tailer_updates_without_original, counter, "updates published without original")             \
    X(tailer_updates_without_document, counter, "updates skipped: document deleted before lookup") \
    X(tailer_deletes_acl_unknown, counter, "deletes published master-only: ACL unknown")            \
    X(tailer_schema_published, counter, "class CLP changes published to gateways")                \
    X(auth_lookups, counter, "session token lookups sent to MongoDB")                             \
    X(auth_lookup_errors, counter, "session token lookups that failed (MongoDB unreachable)")      \
    X(auth_cache_hits, counter, "session tokens answered from the cache")                         \
    X(auth_tokens_invalid, counter, "session tokens found invalid or expired")                    \
    X(auth_sessions_revoked, counter, "sessions in use that became invalid (logout, delete, expiry)") \
    X(auth_role_loads, counter, "role sets read from MongoDB")                                    \
    X(auth_role_changes, counter, "live users whose role set changed")                            \
    X(auth_cache_clears, counter, "clearCache messages from Parse Server")                        \
    X(auth_sessions, gauge, "session tokens in the cache")                                       \
    X(auth_waiting, gauge, "connections waiting for a session lookup")                           \
    X(clp_changes, counter, "class-level permission changes applied")                            \
    X(subscriptions_denied, counter, "subscriptions refused or ended by CLP or protectedFields")   \
    X(deliveries_withheld_clp, counter, "matches withheld by pointer permissions")               \
    X(resumes, counter, "positions subscriptions started (resumed or fresh)")                     \
    X(resume_events, counter, "events replayed to subscriptions resuming from a position")       \
    X(resumes_gone, counter, "resumes refused: the events after the position are gone")          \
    X(deliveries_fields_hidden, counter, "deliveries with protected fields removed")              \
    X(queries, counter, "query ops answered with a result (initial results)")                    \
    X(query_results_objects, counter, "objects sent in query results")                           \
    X(query_errors, counter, "query ops answered with an error")                                 \
    X(query_events_held, counter, "events held while a query's snapshot was read")               \
    X(query_events_skipped, counter, "events not delivered: the query's snapshot already had them")             \
    X(origins_rejected, counter, "WebSocket upgrades refused (HTTP 403): Origin not in --allowed-origins") \
    X(mongodb_connected, gauge, "1 while MongoDB answers: change streams, session lookups, or a ping every 5 s when neither ran") \
    X(tailer_redis_connected, gauge, "1 while the tailer's lease connection gets answers from Redis")

typedef struct lq_metrics {
#define LQ_METRIC_FIELD(name, kind, help) _Atomic int64_t name;
    LQ_METRICS(LQ_METRIC_FIELD)
#undef LQ_METRIC_FIELD
} lq_metrics;

extern lq_metrics lq_m;

#define LQ_METRIC_ADD(name, n) atomic_fetch_add_explicit(&lq_m.name, (int64_t)(n), memory_order_relaxed)
#define LQ_METRIC_INC(name) LQ_METRIC_ADD(name, 1)
#define LQ_METRIC_SET(name, v) atomic_store_explicit(&lq_m.name, (int64_t)(v), memory_order_relaxed)
#define LQ_METRIC_GET(name) atomic_load_explicit(&lq_m.name, memory_order_relaxed)

/* Publish-to-delivery latency (livequery_delivery_latency_seconds, a
 * histogram): us = microseconds from a bus event's `ts` to the moment its
 * frames were handed to the socket writes; negative values (clock skew)
 * count as 0. Lock-free, no allocation; any thread. */
void lq_metrics_observe_delivery_us(int64_t us);

/* Lag gauges, in ms, as measured when the last event arrived:
 * livequery_bus_lag_seconds (gateway: arrival - bus `ts`) and
 * livequery_tailer_lag_seconds (tailer: read - the change's wallTime or
 * clusterTime). Rendered NaN until the first measurement. Any thread. */
void lq_metrics_set_bus_lag_ms(int64_t ms);
void lq_metrics_set_tailer_lag_ms(int64_t ms);

/* The tailer lease's owner as this process last read it from Redis
 * (livequery_tailer_lease_holder{holder="…"} 1); NULL or "": unknown or
 * nobody (no sample rendered). Any thread. */
void lq_metrics_set_lease_holder(const char *id);

/* Renders every metric as Prometheus text (prefix "livequery_") into buf:
 * the LQ_METRICS counters and gauges, then the families above and
 * livequery_drops_total{reason} (built from existing counters).
 * Returns the length written, truncated to cap - 1 and NUL-terminated. */
size_t lq_metrics_render(char *buf, size_t cap);

#endif
