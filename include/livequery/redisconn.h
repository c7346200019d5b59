/*
 * redisconn.h - one way to open a blocking hiredis connection to the
 * configured Redis, shared by the bus (gateway) and the tailer: connect with
 * a timeout, optional reply timeout, TCP keepalive, AUTH when a password is
 * configured, SELECT when the database is not 0.
 *
 * Thread: any; the returned context belongs to the caller's thread.
 */
#ifndef LIVEQUERY_REDISCONN_H
#define LIVEQUERY_REDISCONN_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "livequery/config.h"

/* Returns a ready connection, or NULL with why (why_len bytes, may be 0)
 * set to what failed. io_ms 0: replies are waited for without a timeout
 * (a subscriber polls its socket itself). */
redisContext *lq_redis_open(const lq_config *cfg, int connect_ms, int io_ms, char *why,
                            size_t why_len);

#endif
