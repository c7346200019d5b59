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
 * Authorization (acl.h) is decided here, per subscription and per delivery:
 * each subscription has its principals (master, anonymous, or a user with
 * roles, shared and kept current by auth.c) and, from the class's CLP, a
 * verdict (all objects, or only those whose pointer fields name the user) and
 * a static set of hidden fields, computed at subscribe and again whenever the
 * CLP or the principals' roles change (lq_registry_set_clp,
 * lq_registry_recheck). Per event, the ACL of each state is evaluated once per
 * principals (not per subscription), then each subscriber gets
 * create/enter/update/leave/delete from what it may see: losing read access
 * is a `leave` whose object is the last state it could read (no original);
 * gaining it is an `enter` without original. Frame bodies are shared by every
 * subscriber of a group with the same keys, hidden fields and shape.
 *
 * Thread: owned by the lws service thread; nothing here is locked.
 */
#ifndef LIVEQUERY_REGISTRY_H
#define LIVEQUERY_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "livequery/acl.h"
#include "livequery/error.h"
#include "livequery/event.h"
#include "livequery/proto.h"
#include "livequery/query.h"

typedef struct lq_registry lq_registry;

/* Positions subscriptions one connection may have waiting for their position
 * at once (each is a history read on the bus thread); more get 155. */
#define LQ_MAX_PAUSED 16
typedef struct lq_client lq_client;

typedef struct lq_registry_limits {
    lq_query_limits query;
    int max_subscriptions; /* per client */
    size_t max_query_bytes;
} lq_registry_limits;

/* Called when a subscription that carried a tag (lq_sub_auth.tag) is removed,
 * for any reason: the owner of the tag drops what it held for it. */
typedef void (*lq_tag_release_fn)(void *ud, void *tag);

/* Returns a new, empty registry. lim is copied. release (may be NULL) is
 * called with ud for each removed tagged subscription. */
lq_registry *lq_registry_new(const lq_registry_limits *lim);
void lq_registry_set_tag_release(lq_registry *r, lq_tag_release_fn release, void *ud);
/* New limits for subscriptions made from now on (SIGHUP); existing ones stay. */
void lq_registry_set_limits(lq_registry *r, const lq_registry_limits *lim);
/* Frees r with every client and subscription still in it (clients included). Accepts NULL. */
void lq_registry_free(lq_registry *r);

/* Registers a client (one per connected WebSocket). conn is the caller's
 * handle, passed back to the deliver callback; master: the client connected
 * with the master key. Returns a client owned by r. */
lq_client *lq_registry_client_new(lq_registry *r, void *conn, int master);
/* Removes the client and all its subscriptions. Accepts NULL. Must not be
 * called from inside lq_registry_dispatch's callback. */
void lq_registry_client_free(lq_registry *r, lq_client *c);
/* 1 when c connected with the master key. Accepts NULL (0). */
int lq_registry_client_is_master(const lq_client *c);
/* Number of subscriptions the client holds. */
int lq_registry_client_count(const lq_client *c);

/* 1 when c has a subscription on class_name. */
int lq_registry_client_watches(const lq_client *c, const char *class_name);

/* Who a subscription acts as. who NULL: the master principal when the
 * client connected with the master key, else anonymous. tag: the caller's
 * handle for the session behind who (lq_registry_revoke_tag), or NULL. */
typedef struct lq_sub_auth {
    lq_principals *who; /* borrowed; the subscription takes a reference */
    void *tag;
    uint64_t token;     /* a positions subscription (req->positions): the caller's
                           handle for it while it waits for its position, != 0 */
} lq_sub_auth;

/* Subscribes c with a validated subscribe/update request (borrowed; where
 * and watch are referenced, nothing else is kept). A subscription with the
 * same requestId is replaced. auth may be NULL. Returns LQ_OK, or LQ_ERR with
 * err set (102 invalid query or className, 155 too many subscriptions, 119 /
 * 101 CLP denies, 119 "Permission denied" for a protected field in where or
 * watch); on error nothing changes (the replaced subscription stays).
 * A subscription asking for positions (req->positions) starts paused: it
 * gets no events until lq_registry_activate (auth->token names it). */
int lq_registry_subscribe(lq_registry *r, lq_client *c, const lq_request *req,
                          const lq_sub_auth *auth, lq_error *err);

/* Called for each subscription a re-check or revocation removes: conn and
 * rid identify it, err is the Parse error to tell the client. */
typedef void (*lq_revoke_fn)(void *conn, double rid, const lq_error *err, void *ud);

/* Sets the CLP of class_name (borrowed, copied by reference; NULL: none) and,
 * if it differs from the current one, re-checks every subscription of the
 * class: those now denied are removed (revoke called), the others get the
 * new verdict and hidden fields. Returns 1 when the CLP changed. */
int lq_registry_set_clp(lq_registry *r, const char *class_name, const json_t *clp,
                        lq_revoke_fn revoke, void *ud);
/* The CLP in force for class_name (borrowed), or NULL. */
const json_t *lq_registry_clp(const lq_registry *r, const char *class_name);

/* Re-checks every subscription acting as p (its roles changed). */
void lq_registry_recheck(lq_registry *r, const lq_principals *p, lq_revoke_fn revoke, void *ud);

/* Removes every subscription with this tag (a revoked session), calling
 * revoke with err for each. Returns how many. */
size_t lq_registry_revoke_tag(lq_registry *r, void *tag, const lq_error *err, lq_revoke_fn revoke,
                              void *ud);

/* Removes c's subscription requestId. Returns LQ_OK or LQ_ERR_NOTFOUND. */
int lq_registry_unsubscribe(lq_registry *r, lq_client *c, double request_id);

/* Called once per delivery: body is borrowed (incref to keep it), rid is the
 * subscription's requestId; pos: the event, when the subscription wants each
 * event's epoch and seq in its frames (positions), else NULL. */
typedef void (*lq_deliver_fn)(void *conn, lq_body *body, lq_event_type type, double rid,
                              const lq_change *pos, void *ud);

/* Fans one change (borrowed) out to every subscription it concerns, calling
 * deliver for each. now_ms is the current time ($relativeTime). Returns the
 * number of deliveries. */
size_t lq_registry_dispatch(lq_registry *r, const lq_change *ev, int64_t now_ms,
                            lq_deliver_fn deliver, void *ud);

/* The paused subscription named token: sets *conn and *rid and returns 1, or
 * returns 0 (it was removed or replaced meanwhile). */
int lq_registry_paused(const lq_registry *r, uint64_t token, void **conn, double *rid);

/* Starts the paused subscription named token: each change of replay
 * (borrowed list, oldest first) is delivered to it alone, as a dispatch
 * would have, then it takes live events, except those of its class with a
 * seq at or below floor (already covered by the position it was given).
 * Returns the deliveries made, or -1 when there is no such subscription. */
long lq_registry_activate(lq_registry *r, uint64_t token, const lq_change *replay, int64_t floor,
                          int64_t now_ms, lq_deliver_fn deliver, void *ud);

/*---- the query op (protocol/PROTOCOL.md "query") ----------------------------------
 *
 * Results are filtered by the code that filters live events: each candidate
 * object is what the subscription would get in a `create` event of it (its
 * where, the object's ACL, the CLP and pointer permissions, protectedFields,
 * its `keys`, no `_` fields), `watch` aside.
 *
 * While a snapshot is read elsewhere (MongoDB), the subscription's events are
 * held (lq_registry_hold): kept in order, by reference, instead of delivered.
 * lq_registry_release then delivers those the snapshot does not contain and
 * skips, until the first later one, events the snapshot already had. */

/* c's subscription rid: 1 when it waits for its position (the resume
 * extension), 0 when it is live, -1 when there is none. Sets *class_name and
 * *where (its where clause as compact JSON) when not NULL (borrowed: valid
 * until the subscription changes). */
int lq_registry_sub_info(const lq_client *c, double rid, const char **class_name, const char **where);

/* Appends to out, comma-separated, the views of the candidate objects (REST
 * JSON of the subscription's class, borrowed; next(it) yields them until
 * NULL) that c's subscription rid may see, at most max_objects of them and
 * max_bytes in all; *truncated is set when a visible object was left out for
 * those limits. token != 0: only while the subscription holds for that token.
 * Returns the number of objects appended, or -1 (out unchanged) when there is
 * no such subscription (or it does not hold for token). */
long lq_registry_results(lq_registry *r, lq_client *c, double rid, uint64_t token,
                         const json_t *(*next)(void *it), void *it, int64_t now_ms,
                         size_t max_objects, size_t max_bytes, lq_buf *out, int *truncated);

/* Called when a hold passes its bounds: the query named token of (conn, rid)
 * must be answered with an error. Its held events are delivered right after,
 * and the hold ends (nothing is lost). */
typedef void (*lq_hold_overflow_fn)(void *ud, void *conn, double rid, uint64_t token);
void lq_registry_set_hold_overflow(lq_registry *r, lq_hold_overflow_fn fn, void *ud);

/* Starts holding the deliveries of c's subscription rid for the query op
 * named token (!= 0): at most max_events events and max_bytes (each event
 * counts its body and LQ_HELD_HEAD_BYTES for the head its frame will get),
 * past which the hold overflows (above). Returns 1 when started, 0 when the
 * subscription holds already (for another token), -1 when there is none. */
#define LQ_HELD_HEAD_BYTES 128
int lq_registry_hold(lq_registry *r, lq_client *c, double rid, uint64_t token, size_t max_events,
                     size_t max_bytes);

/* Ends the hold named token: held events whose cluster time is above ct, or
 * that have none, are delivered in order; those at or below ct are dropped;
 * and later events with a cluster time at or below ct are skipped until the
 * first one above it (ct 0: everything held is delivered, nothing skipped).
 * Returns the deliveries made, or -1 when the subscription is gone, was
 * replaced, or does not hold for token. */
long lq_registry_release(lq_registry *r, lq_client *c, double rid, uint64_t token, uint64_t ct,
                         lq_deliver_fn deliver, void *ud);

/* Counts, for metrics and tests. */
size_t lq_registry_group_count(const lq_registry *r);
size_t lq_registry_sub_count(const lq_registry *r);
/* Groups whose query was evaluated by the last dispatch (tests the index). */
size_t lq_registry_last_visited(const lq_registry *r);

#endif
