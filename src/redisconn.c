/*
 * redisconn.c - see redisconn.h.
 */
#include "livequery/redisconn.h"

#include <stdio.h>

static int command_ok(redisContext *c, redisReply *r, const char *what, char *why, size_t why_len)
{
    int ok = r && r->type != REDIS_REPLY_ERROR;
    if (!ok && why_len)
        snprintf(why, why_len, "%s: %s", what, r ? r->str : c->errstr);
    if (r)
        freeReplyObject(r);
    return ok;
}

redisContext *lq_redis_open(const lq_config *cfg, int connect_ms, int io_ms, char *why, size_t why_len)
{
    struct timeval tv = {connect_ms / 1000, (connect_ms % 1000) * 1000};
    redisContext *c = redisConnectWithTimeout(cfg->redis_host, cfg->redis_port, tv);

    if (c == NULL || c->err) {
        if (why_len)
            snprintf(why, why_len, "%s", c ? c->errstr : "out of memory");
        goto fail;
    }
    if (io_ms > 0) {
        struct timeval io = {io_ms / 1000, (io_ms % 1000) * 1000};
        redisSetTimeout(c, io);
    }
    redisEnableKeepAlive(c);
    if (cfg->redis_password &&
        !command_ok(c, redisCommand(c, "AUTH %s", cfg->redis_password), "AUTH", why, why_len))
        goto fail;
    if (cfg->redis_db &&
        !command_ok(c, redisCommand(c, "SELECT %d", cfg->redis_db), "SELECT", why, why_len))
        goto fail;
    return c;
fail:
    if (c)
        redisFree(c);
    return NULL;
}
