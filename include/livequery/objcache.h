/*
 * objcache.h - the gateway's last-seen objects, per class, for the query op
 * when there is no MongoDB to read (protocol/PROTOCOL.md "query", cache
 * mode).
 *
 * Fed with every change the gateway dispatches, in dispatch order: a create
 * or update puts the object (its state after the change) in its class,
 * replacing any earlier state, as the most recently changed; a delete
 * removes it; a resync (history lost) empties the class. Every class seen on
 * the bus is kept (whether or not anyone subscribes: a later subscriber's
 * query sees objects changed before it subscribed), except the `_Join:`
 * collections (nobody can subscribe to them). Each class keeps at most
 * per_class objects: past that, the least recently changed goes. What it
 * holds is therefore only what the bus carried since the gateway started,
 * bounded: possibly incomplete, never ahead of the events delivered.
 *
 * Objects are held by reference (the change's own json_t), not copied.
 *
 * Thread: the lws service thread only.
 */
#ifndef LIVEQUERY_OBJCACHE_H
#define LIVEQUERY_OBJCACHE_H

#include <jansson.h>
#include <stddef.h>

#include "livequery/event.h"

typedef struct lq_objcache lq_objcache;

/* A cache of at most per_class objects per class (0: keeps nothing). */
lq_objcache *lq_objcache_new(size_t per_class);
/* Frees c and its references. Accepts NULL. */
void lq_objcache_free(lq_objcache *c);

/* Applies one change (borrowed; its object is referenced, not copied). */
void lq_objcache_apply(lq_objcache *c, const lq_change *ev);

/* Objects of class_name in the cache. */
size_t lq_objcache_count(const lq_objcache *c, const char *class_name);
/* Objects in all classes. */
size_t lq_objcache_total(const lq_objcache *c);

/* Walks one class, most recently changed first: lq_objcache_next(&it) yields
 * each object (borrowed) until NULL. The cache must not change meanwhile. */
typedef struct lq_objcache_iter {
    const void *next;
} lq_objcache_iter;
void lq_objcache_iter_init(lq_objcache_iter *it, const lq_objcache *c, const char *class_name);
const json_t *lq_objcache_next(void *it);

#endif
