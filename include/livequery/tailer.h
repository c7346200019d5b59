/*
 * tailer.h - the tailer role: MongoDB change streams into Redis
 * (protocol/bus.md "The tailer's keys" is the contract).
 *
 * One thread holds or waits for the Redis lease (SET NX PX, renewed every
 * ttl/5). While this process holds it, one thread per watched class runs one
 * change stream on its collection (never one per subscription) and one more
 * watches `_SCHEMA` and reloads the field types when it changes. Each class's
 * reader converts its events to REST JSON text (parsedoc.h) and queues them to
 * the class's publisher thread, which publishes a batch with one Lua script
 * call that, atomically, checks the lease is still ours and the per-class seq
 * is the one we expect, appends each event to the class's capped stream and
 * PUBLISHes it, and stores the last resume token. A crash leaves the stored
 * token exactly at the last published event; the token is never ahead of it.
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

#endif
