/*
 * bus.h - the Redis side of a gateway: one subscriber connection, on a thread
 * of its own, that takes change messages from our channel and from Parse
 * Server's afterSave/afterDelete/clearCache channels (protocol/bus.md), parses and
 * validates them there, and hands finished lq_change records to the lws
 * service thread through a locked queue.
 *
 * Besides object changes it hands over: class-level permissions (op
 * `schema` on our channel -> LQ_CHANGE_SCHEMA; after every (re)subscribe one
 * LQ_CHANGE_SCHEMA per class of the `<p>schema` hash, before any catch-up
 * event), the CLP Parse Server attaches to afterSave/afterDelete (clp,
 * has_clp), and Parse Server's `<appId>clearCache` (LQ_CHANGE_CLEAR_CACHE).
 *
 * Why a thread: hiredis 0.14.1 has no async timeouts and no reconnect, and
 * parsing JSON off the service thread leaves that thread to matching and
 * writing. The thread reconnects with backoff, resubscribes, and detects a
 * silent Redis with PINGs. Clients never notice a Redis outage except that
 * events pause.
 *
 * Thread: lq_bus_new/start/stop/free on the main thread; lq_bus_take on the
 * service thread; the notify callback runs on the bus thread and must only
 * wake the service thread (lws_cancel_service).
 */
#ifndef LIVEQUERY_BUS_H
#define LIVEQUERY_BUS_H

#include <stddef.h>
#include <stdint.h>

#include "livequery/config.h"
#include "livequery/event.h"

typedef struct lq_bus lq_bus;

#define LQ_BUS_MESSAGE_MAX (16u << 20) /* bytes of one bus message (protocol/bus.md) */

typedef void (*lq_bus_notify_fn)(void *ud);

typedef enum lq_bus_channel {
    LQ_BUS_OURS = 0,          /* <prefix><appId>:changes */
    LQ_BUS_PARSE_SAVE = 1,    /* <appId>afterSave */
    LQ_BUS_PARSE_DELETE = 2,  /* <appId>afterDelete */
    LQ_BUS_PARSE_CLEAR_CACHE = 3, /* <appId>clearCache */
} lq_bus_channel;

/* Returns a new, stopped bus for cfg (borrowed; must outlive the bus).
 * notify(ud) is called from the bus thread when the queue becomes non-empty. */
lq_bus *lq_bus_new(const lq_config *cfg, lq_bus_notify_fn notify, void *ud);

/* Starts the bus thread. Returns LQ_OK or LQ_ERR (thread not created). */
int lq_bus_start(lq_bus *b);

/* Stops and joins the thread. Safe to call twice; accepts NULL. */
void lq_bus_stop(lq_bus *b);

/* Stops the bus if needed and frees it with any queued changes. Accepts NULL. */
void lq_bus_free(lq_bus *b);

/* Takes every queued change, oldest first, as a list linked by ->next; the
 * caller owns them (lq_change_free). NULL when empty. */
lq_change *lq_bus_take(lq_bus *b);

/* Asks the bus thread for class_name's position (the resume extension,
 * protocol/PROTOCOL.md), answered by an LQ_CHANGE_POSITION change with this
 * token, queued in order with the events: status OK with the class's epoch
 * and last published seq (both empty/0 when it has no history) and, when
 * since_epoch is given, the events after (since_epoch, since_seq) in replay;
 * GONE when those are no longer all in the history; UNAVAILABLE when Redis
 * could not be read. Service thread. */
void lq_bus_position(lq_bus *b, uint64_t token, const char *class_name, const char *since_epoch,
                     int64_t since_seq);

/* 1 while subscribed to Redis. Any thread. */
int lq_bus_connected(const lq_bus *b);

/* 1 when name may be the className of a message on our channel: a Parse
 * class name (lq_class_name_valid), or `_Join:<field>:<Class>` (the join
 * collections behind relations and roles) where field and Class each are
 * Parse class names; at most LQ_CLASS_NAME_MAX bytes in all. Clients can
 * never subscribe to `_Join:` classes (lq_class_name_valid refuses them). */
int lq_bus_class_name_valid(const char *name);

/* Parses one message of the given channel kind. Returns a new change, or
 * NULL with *reason set to a static description of what is wrong. */
lq_change *lq_bus_parse(lq_bus_channel kind, const char *payload, size_t len, const char **reason);

#endif
