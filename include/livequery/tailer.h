/*
 * tailer.h - the tailer role: MongoDB change streams into Redis
 * (protocol/bus.md "The tailer's keys" is the contract).
 *
 * One thread holds or waits for the Redis lease (SET NX PX, renewed every
 * ttl/5). While this process holds it, one thread per watched class runs one
 * change stream on its collection (never one per subscription) and one more
 * watches `_SCHEMA` and reloads the field types when it changes. The watched
 * classes are --classes plus, always, the auth collections `_Session`,
 * `_User`, `_Role`, `_Join:users:_Role` and `_Join:roles:_Role` (each once),
 * whose events let gateways invalidate their session and role caches
 * (auth.h); they are published master-only (`"ACL":{}`), except `_Role` and
 * `_User`, which keep their ACL. Each class's
 * reader converts its events to REST JSON text (parsedoc.h) and queues them to
 * the class's publisher thread, which publishes a batch with one Lua script
 * call that, atomically, checks the lease is still ours and the per-class seq
 * is the one we expect, appends each event to the class's capped stream and
 * PUBLISHes it, and stores the last resume token. A crash leaves the stored
 * token exactly at the last published event; the token is never ahead of it.
 *
 * Class-level permissions: at every (re)load of `_SCHEMA` while the lease is
 * held, the `_metadata.class_permissions` of each class that changed since
 * the last publication (compact JSON text; no CLP or a class gone = "null")
 * is written to the `<p>schema` hash and PUBLISHed as an op `schema`
 * message (no seq), both by one lease-checked script call; the first load
 * of a term writes the whole hash (fields of classes no longer in `_SCHEMA`
 * removed). A failed publication is retried by reloading after a backoff.
 *
 * Failures: a stream that fails is re-opened from the stored token with
 * backoff (100 ms .. 5 s). History lost (286) or `invalidate` starts a new
 * epoch: the stream is cleared and a `resync` message tells gateways to make
 * the class's subscribers resubscribe. Losing the lease stops publishing at
 * once (the script refuses) and the stream threads wait for it again.
 *
 * Thread: lq_tailer_new/start/stop/free on the main thread; everything else
 * runs on the tailer's own threads (libmongoc blocks).
 */
#ifndef LIVEQUERY_TAILER_H
#define LIVEQUERY_TAILER_H

#include <bson/bson.h>

#include "livequery/config.h"

typedef struct lq_tailer lq_tailer;

/* A new, stopped tailer for cfg (borrowed; must outlive it), or NULL after
 * logging why (bad URI). */
lq_tailer *lq_tailer_new(const lq_config *cfg);

/* Starts the threads. LQ_OK or LQ_ERR. */
int lq_tailer_start(lq_tailer *t);

/* Stops and joins every thread, releasing the lease if held. Safe twice; accepts NULL. */
void lq_tailer_stop(lq_tailer *t);

/* Stops if needed and frees. Accepts NULL. */
void lq_tailer_free(lq_tailer *t);

/* Internal, exposed for tests/fuzz/fuzz_bson.c: a change stream's resume
 * token (borrowed) as the text stored in Redis, which bson_new_from_json reads
 * back. Returns a new malloc'd string; never NULL. */
char *lq__tailer_token_text(const bson_t *tok);

#endif
