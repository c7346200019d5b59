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

/* Serves until lq_gateway_stop: then stops accepting (the listening socket
 * is closed, so a load balancer sends new clients elsewhere) and closes every
 * connection with 1001 "going away" after what was queued for it, waiting at
 * most --drain-timeout seconds. Returns 0 on a requested stop, -1 on error. */
int lq_gateway_run(lq_gateway *gw);

/* Asks lq_gateway_run to return. Async-signal-safe. */
void lq_gateway_stop(lq_gateway *gw);

/* SIGHUP: reload runs on the service thread at the next wake-up after
 * lq_gateway_reload (async-signal-safe). It may change the settings marked
 * reloadable in the config (the gateway reads them live);
 * lq_gateway_config_changed then applies what the gateway copied at start. */
typedef void (*lq_reload_fn)(void *ud);
void lq_gateway_on_reload(lq_gateway *gw, lq_reload_fn reload, void *ud);
void lq_gateway_reload(lq_gateway *gw);
void lq_gateway_config_changed(lq_gateway *gw);

/* Closes every connection and frees the gateway. Accepts NULL. */
void lq_gateway_free(lq_gateway *gw);

#endif
