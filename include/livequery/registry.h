/*
 * registry.h - who is subscribed to what, and the fan-out of one change event
 * to the subscribers it concerns.
 *
 * Two indexes, as in Redis' pubsub.c: client -> its subscriptions (by
 * requestId), and class -> subscription groups. Subscriptions whose class and
 * canonical query are equal share one group, so a query is matched once per
 * event however many subscribe to it. Groups are indexed by one equality
 * constraint (lq_query_index_hint), so an event only visits the groups it can
 * match: cost per event does not grow with subscriptions that cannot match.
 * Within a group, subscribers with the same `keys` share one frame body per
 * event, serialized once.
 *
 * Thread: owned by the lws service thread; nothing here is locked.
 */
#ifndef LIVEQUERY_REGISTRY_H
#define LIVEQUERY_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "livequery/error.h"
#include "livequery/event.h"
#include "livequery/proto.h"
#include "livequery/query.h"

typedef struct lq_registry lq_registry;
typedef struct lq_client lq_client;

typedef struct lq_registry_limits {
    lq_query_limits query;
    int max_subscriptions; /* per client */
    size_t max_query_bytes;
} lq_registry_limits;

/* Returns a new, empty registry. lim is copied. */
lq_registry *lq_registry_new(const lq_registry_limits *lim);
/* Frees r with every client and subscription still in it (clients included). Accepts NULL. */
void lq_registry_free(lq_registry *r);

/* Registers a client (one per connected WebSocket). conn is the caller's
 * handle, passed back to the deliver callback; master: the client connected
 * with the master key. Returns a client owned by r. */
lq_client *lq_registry_client_new(lq_registry *r, void *conn, int master);
/* Removes the client and all its subscriptions. Accepts NULL. Must not be
 * called from inside lq_registry_dispatch's callback. */
void lq_registry_client_free(lq_registry *r, lq_client *c);
/* Number of subscriptions the client holds. */
int lq_registry_client_count(const lq_client *c);

/* 1 when c has a subscription on class_name. */
int lq_registry_client_watches(const lq_client *c, const char *class_name);

/* Subscribes c with a validated subscribe/update request (borrowed; nothing
 * is kept from it). A subscription with the same requestId is replaced.
 * Returns LQ_OK, or LQ_ERR with err set (102 invalid query or className,
 * 155 too many subscriptions); on error nothing changes. */
int lq_registry_subscribe(lq_registry *r, lq_client *c, const lq_request *req, lq_error *err);

/* Removes c's subscription requestId. Returns LQ_OK or LQ_ERR_NOTFOUND. */
int lq_registry_unsubscribe(lq_registry *r, lq_client *c, double request_id);

/* Called once per delivery: body is borrowed (incref to keep it), rid is the
 * subscription's requestId. */
typedef void (*lq_deliver_fn)(void *conn, lq_body *body, lq_event_type type, double rid,
                              void *ud);

/* Fans one change (borrowed) out to every subscription it concerns, calling
 * deliver for each. now_ms is the current time ($relativeTime). Returns the
 * number of deliveries. */
size_t lq_registry_dispatch(lq_registry *r, const lq_change *ev, int64_t now_ms,
                            lq_deliver_fn deliver, void *ud);

/* Counts, for metrics and tests. */
size_t lq_registry_group_count(const lq_registry *r);
size_t lq_registry_sub_count(const lq_registry *r);
/* Groups whose query was evaluated by the last dispatch (tests the index). */
size_t lq_registry_last_visited(const lq_registry *r);

#endif
