/*
 * gateway.h - the WebSocket server: libwebsockets on its own poll loop, one
 * service thread, Parse LiveQuery connections, per-connection bounded
 * outbound queues, and GET /health and /metrics on the same port.
 *
 * Thread: lq_gateway_new/run/free on the main thread, which becomes the lws
 * service thread inside lq_gateway_run. lq_gateway_stop may be called from a
 * signal handler or any thread.
 */
#ifndef LIVEQUERY_GATEWAY_H
#define LIVEQUERY_GATEWAY_H

#include "livequery/config.h"

typedef struct lq_gateway lq_gateway;

/* Creates the listening server and the Redis bus for cfg (borrowed; must
 * outlive the gateway). Returns NULL after logging why (e.g. port in use). */
lq_gateway *lq_gateway_new(const lq_config *cfg);

/* Serves until lq_gateway_stop, then closes every connection with 1001
 * "going away" after what was queued for it (at most 3 s). Returns 0 on a
 * requested stop, -1 on error. */
int lq_gateway_run(lq_gateway *gw);

/* Asks lq_gateway_run to return. Async-signal-safe. */
void lq_gateway_stop(lq_gateway *gw);

/* Closes every connection and frees the gateway. Accepts NULL. */
void lq_gateway_free(lq_gateway *gw);

#endif
