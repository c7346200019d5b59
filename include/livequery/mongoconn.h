/*
 * mongoconn.h - what every libmongoc user in the process shares: library
 * initialization and its log messages routed into ours (log.h).
 *
 * Thread: lq_mongo_init may be called from any thread, any number of times.
 */
#ifndef LIVEQUERY_MONGOCONN_H
#define LIVEQUERY_MONGOCONN_H

#include <mongoc/mongoc.h>
#include <stdint.h>

/* mongoc_init() and the log handler, once per process. */
void lq_mongo_init(void);

/* A client pool for uri_text (--mongodb-uri), error API version 2. Unless
 * the URI sets them: serverSelectionTimeoutMS 5000 (fail and retry fast
 * rather than block a thread for libmongoc's 30 s), socketTimeoutMS
 * socket_timeout_ms, appName appname. *uri gets the parsed URI (destroy it
 * after the pool) and *db the database (borrowed from *uri; "parse" when the
 * URI names none). NULL after logging why (an invalid URI). Calls
 * lq_mongo_init. */
mongoc_client_pool_t *lq_mongo_pool_new(const char *uri_text, const char *appname,
                                        int32_t socket_timeout_ms, mongoc_uri_t **uri,
                                        const char **db);

/* MongoDB reachability as this process last saw it (the gauge
 * mongodb_connected, /health, /ready): every user of MongoDB reports what
 * its last operation found (1 answered, 0 failed). Any thread. */
void lq_mongo_note(int reachable);

/* A thread that pings MongoDB (the `ping` command) at start and then every
 * interval_ms unless another operation reported reachability within that
 * time (lq_mongo_note): so the state is real when nothing else reads
 * MongoDB (a gateway before its first session lookup, a standby tailer).
 * Its client is its own, with 1 s connect and server-selection timeouts, so
 * a ping (and lq_mongo_pinger_stop) never waits long. NULL after logging why. */
typedef struct lq_mongo_pinger lq_mongo_pinger;
lq_mongo_pinger *lq_mongo_pinger_start(const char *uri_text, int interval_ms);

/* Stops and joins the thread, frees. Accepts NULL. */
void lq_mongo_pinger_stop(lq_mongo_pinger *p);

#endif
