/*
 * tailer.c - MongoDB change streams into Redis; see tailer.h and
 * protocol/bus.md "The tailer".
 */
#include "livequery/tailer.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <mongoc/mongoc.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "livequery/clock.h"
#include "livequery/error.h"
#include "livequery/event.h"
#include "livequery/jsonout.h"
#include "livequery/log.h"
#include "livequery/mongoconn.h"
#include "livequery/metrics.h"
#include "livequery/parsedoc.h"
#include "livequery/redisconn.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define AWAIT_MS 1000         /* maxAwaitTimeMS of a getMore: how often an idle stream looks up */
#define TOKEN_IDLE_MS 1000    /* an idle stream stores its advancing resume token this often */
#define REDIS_TIMEOUT_S 5
#define PIPELINE_MAX 256      /* events per publish script call */
#define BATCH_BYTES (1 << 20) /* ... or fewer once their messages pass this size */
#define QUEUE_MAX 4096        /* events read but not yet published, per class */
#define MONGO_PING_MS 5000    /* with no stream reading, MongoDB is pinged this often (mongodb_connected) */

/* One script does every write, so each is atomic and fenced by the lease.
 * KEYS: lease, state hash, stream.  ARGV: owner, mode, epoch, seq, token,
 * message, maxlen, channel[, token, message]...  Modes:
 *   events - state must be (epoch, seq): for each (token, message) pair in
 *            order, XADD seq+1 and PUBLISH; then store the last seq and token.
 *            A batch is all or nothing.
 *   token  - state must be (epoch, seq): store the token only
 *   epoch  - start a new epoch: clear the stream, seq 0, token; PUBLISH message if any */
static const char PUBLISH_LUA[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('NOTLEADER lease not held') end\n"
    "if ARGV[2] == 'epoch' then\n"
    "  redis.call('DEL', KEYS[3])\n"
    "  redis.call('HSET', KEYS[2], 'epoch', ARGV[3], 'seq', 0, 'token', ARGV[5])\n"
    "  if ARGV[6] ~= '' then redis.call('PUBLISH', ARGV[8], ARGV[6]) end\n"
    "  return 0\n"
    "end\n"
    "local st = redis.call('HMGET', KEYS[2], 'epoch', 'seq')\n"
    "if st[1] ~= ARGV[3] or tonumber(st[2]) ~= tonumber(ARGV[4]) then return redis.error_reply('STALE state moved') end\n"
    "if ARGV[2] == 'token' then redis.call('HSET', KEYS[2], 'token', ARGV[5]) return tonumber(ARGV[4]) end\n"
    "local seq = tonumber(ARGV[4])\n"
    "local token = ARGV[5]\n"
    "for i = 5, #ARGV, 4 do\n"
    "  seq = seq + 1\n"
    "  token = ARGV[i]\n"
    "  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[7], seq .. '-0', 'm', ARGV[i + 1])\n"
    "  redis.call('PUBLISH', ARGV[8], ARGV[i + 1])\n"
    "end\n"
    "redis.call('HSET', KEYS[2], 'seq', seq, 'token', token)\n"
    "return seq\n";

/* The class-level permissions gateways enforce (protocol/bus.md "schema"):
 * KEYS: lease, <p>schema.  ARGV: owner, mode, ts, channel, then (className,
 * CLP as compact JSON or "null", message) triples. For each class whose
 * field differs (absent = "null"): HSET, and PUBLISH its message when the
 * value changes. Mode "full" (the first load of a leadership term) also
 * removes the fields of classes not given, publishing clp null for those
 * that had one. Returns the number of messages published. */
static const char SCHEMA_LUA[] =
    "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('NOTLEADER lease not held') end\n"
    "local n = 0\n"
    "local seen = {}\n"
    "for i = 5, #ARGV, 3 do\n"
    "  local c, v = ARGV[i], ARGV[i + 1]\n"
    "  seen[c] = true\n"
    "  local old = redis.call('HGET', KEYS[2], c)\n"
    "  if old ~= v then\n"
    "    redis.call('HSET', KEYS[2], c, v)\n"
    "    if (old or 'null') ~= v then\n"
    "      redis.call('PUBLISH', ARGV[4], ARGV[i + 2])\n"
    "      n = n + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if ARGV[2] == 'full' then\n"
    "  for _, c in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
    "    if not seen[c] then\n"
    "      local old = redis.call('HGET', KEYS[2], c)\n"
    "      redis.call('HDEL', KEYS[2], c)\n"
    "      if old ~= 'null' then\n"
    "        redis.call('PUBLISH', ARGV[4], '{\"v\":1,\"className\":' .. cjson.encode(c) ..\n"
    "                    ',\"op\":\"schema\",\"clp\":null,\"ts\":' .. ARGV[3] .. '}')\n"
    "        n = n + 1\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "return n\n";

static const char RENEW_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
    "return 0\n";
static const char RELEASE_LUA[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";

/* Last-seen objects of one class (without pre-images), least recently used first. */
typedef struct cached {
    char *id;
    char *text; /* the object's REST JSON as last published */
    size_t len;
    UT_hash_handle hh;
} cached;

typedef struct stream_ctx {
    lq_tailer *t;
    char class_name[LQ_CLASS_NAME_MAX + 1];
    char *collection;
    int is_schema; /* the _SCHEMA watcher: reloads the schema, publishes the CLPs (no seq) */
    int master_only; /* _Session, _Installation, ...: stored without ACL, never public */
    int has_preimages; /* seen a pre-image this term: no last-seen cache */
    pthread_t thread;
    int started;
    redisContext *redis;
    char sha[41]; /* of PUBLISH_LUA on this connection's server */

    /* the published state, as Redis has it */
    int64_t seq;
    char epoch[40];
    char *token; /* canonical extended JSON of the stored resume token, or NULL */

    char *state_key, *stream_key;
    cached *cache;
    size_t ncache;
    lq_buf msg; /* the message being built (reader thread) */

    /* events on their way to Redis: the reader appends, the publisher thread
     * pipelines them (one script each, up to PIPELINE_MAX per round trip) */
    pthread_t pub_thread;
    int pub_started;
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    struct pending *qhead, *qtail;
    size_t qlen;
    int inflight;   /* the publisher holds a batch */
    char *pub_token; /* token of the last event Redis confirmed (survives a Redis that lost its data) */
    int pub_failed; /* a publish failed: the reader ends its term, state reloads from Redis */
    redisContext *pub_redis;
    char pub_sha[41];
} stream_ctx;

typedef struct pending {
    struct pending *next;
    int64_t seq;
    char *epoch; /* borrowed from the stream's term: constant while queued */
    char *token; /* owned */
    char *msg;   /* owned */
    size_t len;
} pending;

/* A class's CLP as published (compact JSON text, "null": none). */
typedef struct clp_entry {
    UT_hash_handle hh;
    char *text;
    char name[];
} clp_entry;

struct lq_tailer {
    const lq_config *cfg;
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    const char *db;
    char id[160];
    char *lease_key, *channel, *schema_key;
    lq_parsedoc_opts conv;

    atomic_int stopping;
    atomic_int leader;     /* 1 while the lease is ours */
    atomic_int generation; /* +1 at every acquisition: stream threads restart their state */
    int stop_pipe[2];
    pthread_t lease_thread;
    int started;

    stream_ctx *streams; /* the classes, then the _SCHEMA watcher */
    size_t nstreams;

    pthread_mutex_t schema_lock;
    lq_schema *schema;
    int schema_generation; /* leadership generation the schema was loaded in */

    /* _SCHEMA watcher thread only: the CLPs published in this term */
    clp_entry *clps;
    int clp_generation; /* leadership generation clps was published in (0: none) */

    lq_mongo_pinger *pinger; /* mongodb_connected while no stream runs (standby) */
};

/* Sleeps ms, or less when stopping. Returns 1 when stopping. */
static int nap(lq_tailer *t, int ms)
{
    struct pollfd p = {t->stop_pipe[0], POLLIN, 0};
    if (!atomic_load(&t->stopping))
        poll(&p, 1, ms);
    return atomic_load(&t->stopping);
}

static void random_hex(char *out, size_t nbytes)
{
    unsigned char raw[32];
    static const char hex[] = "0123456789abcdef";
    if (nbytes > sizeof(raw))
        nbytes = sizeof(raw);
    if (getrandom(raw, nbytes, 0) != (ssize_t)nbytes) {
        uint64_t x = (uint64_t)lq_wall_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)out;
        for (size_t i = 0; i < nbytes; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            raw[i] = (unsigned char)(x >> 56);
        }
    }
    for (size_t i = 0; i < nbytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * nbytes] = '\0';
}

/*---- Redis -------------------------------------------------------------------*/

/* A blocking connection with timeouts, authenticated, on the configured
 * database, with the publish script loaded (sha, 41 bytes). NULL on failure. */
static redisContext *redis_open(lq_tailer *t, char *sha)
{
    redisContext *c = lq_redis_open(t->cfg, 2000, REDIS_TIMEOUT_S * 1000, NULL, 0);
    if (c && sha) {
        redisReply *r = redisCommand(c, "SCRIPT LOAD %s", PUBLISH_LUA);
        int ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
        if (ok)
            memcpy(sha, r->str, 41);
        if (r)
            freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            c = NULL;
        }
    }
    return c;
}

typedef enum { PUB_OK, PUB_LOST, PUB_STOP } pub_result;

/* Runs the publish script in mode "token" or "epoch" (events go through the
 * publisher thread) until it succeeds, the lease is lost, or we stop.
 * Retries a Redis outage with backoff: nothing is skipped meanwhile. */
static pub_result run_script(stream_ctx *s, const char *mode, const char *epoch, int64_t seq,
                             const char *token, const char *msg, size_t msg_len)
{
    lq_tailer *t = s->t;
    int backoff = BACKOFF_MIN_MS, failures = 0;
    char seqbuf[24], maxlen[24];

    snprintf(seqbuf, sizeof(seqbuf), "%lld", (long long)seq);
    snprintf(maxlen, sizeof(maxlen), "%zu", t->cfg->stream_max_len);
    for (;;) {
        if (atomic_load(&t->stopping))
            return PUB_STOP;
        if (!atomic_load(&t->leader))
            return PUB_LOST;
        if (s->redis == NULL && (s->redis = redis_open(t, s->sha)) == NULL) {
            if (failures++ % 20 == 0)
                LQ_WARN("tailer cannot reach redis, holding the event", "class=%s attempts=%d",
                        s->class_name, failures);
            LQ_METRIC_INC(tailer_publish_retries);
            if (nap(t, backoff))
                return PUB_STOP;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        const char *argv[] = {"EVALSHA", s->sha, "3", t->lease_key, s->state_key, s->stream_key,
                              t->id, mode, epoch, seqbuf, token ? token : "", msg ? msg : "",
                              maxlen, t->channel};
        size_t lens[sizeof(argv) / sizeof(argv[0])];
        for (size_t i = 0; i < sizeof(argv) / sizeof(argv[0]); i++)
            lens[i] = strlen(argv[i]);
        if (msg)
            lens[11] = msg_len;
        redisReply *r = redisCommandArgv(s->redis, (int)(sizeof(argv) / sizeof(argv[0])), argv, lens);
        if (r == NULL) {
            /* the script may or may not have run: retrying is safe, a repeat gets STALE */
            LQ_WARN("tailer lost redis while publishing, retrying", "class=%s error=\"%s\"",
                    s->class_name, s->redis->errstr);
            redisFree(s->redis);
            s->redis = NULL;
            LQ_METRIC_INC(tailer_publish_retries);
            if (nap(t, backoff))
                return PUB_STOP;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        if (r->type != REDIS_REPLY_ERROR) {
            freeReplyObject(r);
            return PUB_OK;
        }
        if (strncmp(r->str, "NOSCRIPT", 8) == 0) { /* Redis restarted without its script cache */
            freeReplyObject(r);
            redisFree(s->redis);
            s->redis = NULL;
            continue;
        }
        if (strncmp(r->str, "STALE", 5) == 0) {
            /* Either our own previous attempt ran before its reply was lost, or
             * another tailer published: look at what Redis has. */
            freeReplyObject(r);
            r = redisCommand(s->redis, "HMGET %s epoch seq token", s->state_key);
            int ours = r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
                       r->element[0]->type == REDIS_REPLY_STRING &&
                       strcmp(r->element[0]->str, epoch) == 0 &&
                       r->element[1]->type == REDIS_REPLY_STRING &&
                       strtoll(r->element[1]->str, NULL, 10) == seq &&
                       r->element[2]->type == REDIS_REPLY_STRING &&
                       strcmp(r->element[2]->str, token ? token : "") == 0;
            if (r)
                freeReplyObject(r);
            if (ours)
                return PUB_OK;
            LQ_ERROR("tailer state moved under us: another tailer published; standing down",
                     "class=%s", s->class_name);
            atomic_store(&t->leader, 0);
            LQ_METRIC_SET(tailer_leader, 0);
            return PUB_LOST;
        }
        if (strncmp(r->str, "NOTLEADER", 9) == 0) {
            freeReplyObject(r);
            if (atomic_exchange(&t->leader, 0)) {
                LQ_METRIC_INC(tailer_lease_lost);
                LQ_METRIC_SET(tailer_leader, 0);
                LQ_WARN("tailer lease lost: publishing stopped", "class=%s", s->class_name);
            }
            return PUB_LOST;
        }
        LQ_ERROR("tailer publish script failed", "class=%s error=\"%s\"", s->class_name, r->str);
        freeReplyObject(r);
        LQ_METRIC_INC(tailer_publish_retries);
        if (nap(t, backoff))
            return PUB_STOP;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

/*---- the publisher thread (one per class) ---------------------------------------------*/

static void pending_free(pending *p)
{
    while (p) {
        pending *next = p->next;
        free(p->token);
        free(p->msg);
        free(p);
        p = next;
    }
}

/* Publishes a batch with one script call (all or nothing). Returns 1 on
 * success; on failure the connection is dropped and 0 is returned: the
 * reader then restarts its term from Redis' state. */
static int publish_batch(stream_ctx *s, pending *batch, size_t n)
{
    lq_tailer *t = s->t;
    char seqbuf[24], maxlen[24];
    redisReply *r = NULL;
    size_t argc = 10 + 4 * n, i = 0;

    if (s->pub_redis == NULL && (s->pub_redis = redis_open(t, s->pub_sha)) == NULL) {
        LQ_WARN("tailer cannot reach redis to publish", "class=%s", s->class_name);
        return 0;
    }
    /* argv: EVALSHA sha 3 k1 k2 k3 owner events epoch seq, then per event
     * (token, message, maxlen, channel) - the first pair sits where ARGV[5..8]
     * are, the rest follow with the same stride so the script loops by 4 */
    const char **argv = lq_xmalloc(argc * sizeof(*argv));
    size_t *lens = lq_xmalloc(argc * sizeof(*lens));
    snprintf(seqbuf, sizeof(seqbuf), "%lld", (long long)(batch->seq - 1));
    snprintf(maxlen, sizeof(maxlen), "%zu", t->cfg->stream_max_len);
    argv[i++] = "EVALSHA";
    argv[i++] = s->pub_sha;
    argv[i++] = "3";
    argv[i++] = t->lease_key;
    argv[i++] = s->state_key;
    argv[i++] = s->stream_key;
    argv[i++] = t->id;
    argv[i++] = "events";
    argv[i++] = batch->epoch;
    argv[i++] = seqbuf;
    for (pending *p = batch; p; p = p->next) {
        argv[i] = p->token;
        lens[i++] = strlen(p->token);
        argv[i] = p->msg;
        lens[i++] = p->len;
        argv[i++] = maxlen;
        argv[i++] = t->channel;
    }
    for (size_t k = 0; k < i; k++)
        if (k < 10 || (k - 10) % 4 >= 2)
            lens[k] = strlen(argv[k]);
    r = redisCommandArgv(s->pub_redis, (int)i, argv, lens);
    free(argv);
    free(lens);
    if (r == NULL) {
        LQ_WARN("tailer lost redis while publishing; resuming from the stored token",
                "class=%s error=\"%s\"", s->class_name, s->pub_redis->errstr);
        goto fail;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        if (strncmp(r->str, "NOTLEADER", 9) == 0) {
            if (atomic_exchange(&t->leader, 0)) {
                LQ_METRIC_INC(tailer_lease_lost);
                LQ_METRIC_SET(tailer_leader, 0);
                LQ_WARN("tailer lease lost: publishing stopped", "class=%s", s->class_name);
            }
        } else if (strncmp(r->str, "STALE", 5) == 0) {
            LQ_ERROR("tailer state moved under us: another tailer published; reloading",
                     "class=%s seq=%lld", s->class_name, (long long)batch->seq);
        } else {
            LQ_ERROR("tailer publish script failed", "class=%s error=\"%s\"", s->class_name, r->str);
        }
        goto fail;
    }
    freeReplyObject(r);
    LQ_METRIC_ADD(tailer_events_published, n);
    return 1;
fail:
    LQ_METRIC_INC(tailer_publish_retries);
    if (r)
        freeReplyObject(r);
    redisFree(s->pub_redis);
    s->pub_redis = NULL;
    return 0;
}

static void *publisher_main(void *arg)
{
    stream_ctx *s = arg;
    lq_tailer *t = s->t;

    pthread_mutex_lock(&s->qlock);
    for (;;) {
        while (s->qhead == NULL && !atomic_load(&t->stopping))
            pthread_cond_wait(&s->qcond, &s->qlock);
        if (atomic_load(&t->stopping))
            break; /* what is queued is re-read from the stored token next time */
        pending *batch = s->qhead, *last = batch;
        size_t n = 1, bytes = batch->len;
        for (; n < PIPELINE_MAX && last->next && bytes < BATCH_BYTES; n++) {
            last = last->next;
            bytes += last->len;
        }
        s->qlen -= n;
        s->qhead = last->next;
        if (s->qhead == NULL)
            s->qtail = NULL;
        last->next = NULL;
        s->inflight = 1;
        pthread_mutex_unlock(&s->qlock);

        int ok = publish_batch(s, batch, n);

        pthread_mutex_lock(&s->qlock);
        if (ok) {
            pending *tail = batch;
            while (tail->next)
                tail = tail->next;
            free(s->pub_token);
            s->pub_token = tail->token; /* taken over */
            tail->token = NULL;
        }
        pending_free(batch);
        s->inflight = 0;
        if (!ok) {
            s->pub_failed = 1;
            pending_free(s->qhead);
            s->qhead = s->qtail = NULL;
            s->qlen = 0;
        }
        pthread_cond_broadcast(&s->qcond);
    }
    pending_free(s->qhead);
    s->qhead = s->qtail = NULL;
    s->qlen = 0;
    pthread_cond_broadcast(&s->qcond);
    pthread_mutex_unlock(&s->qlock);
    if (s->pub_redis) {
        redisFree(s->pub_redis);
        s->pub_redis = NULL;
    }
    return NULL;
}

/* Hands one event to the publisher; waits while the queue is full. Returns
 * 0 when the term must end (a publish failed, or stopping). */
static int queue_event(stream_ctx *s, int64_t seq, const char *token, char *msg, size_t len)
{
    pending *p = lq_xcalloc(1, sizeof(*p));
    p->seq = seq;
    p->epoch = s->epoch;
    p->token = lq_xstrdup(token);
    p->msg = msg;
    p->len = len;
    pthread_mutex_lock(&s->qlock);
    while (s->qlen >= QUEUE_MAX && !s->pub_failed && !atomic_load(&s->t->stopping))
        pthread_cond_wait(&s->qcond, &s->qlock);
    int ok = !s->pub_failed && !atomic_load(&s->t->stopping);
    if (ok) {
        if (s->qtail)
            s->qtail->next = p;
        else
            s->qhead = p;
        s->qtail = p;
        if (s->qlen++ == 0) /* the publisher only ever waits for an empty queue */
            pthread_cond_broadcast(&s->qcond);
    }
    pthread_mutex_unlock(&s->qlock);
    if (!ok)
        pending_free(p);
    return ok;
}

/* Waits until everything queued is published. Returns 0 when a publish
 * failed (the term must end) or we stop. */
static int queue_drain(stream_ctx *s)
{
    pthread_mutex_lock(&s->qlock);
    while ((s->qhead || s->inflight) && !s->pub_failed && !atomic_load(&s->t->stopping))
        pthread_cond_wait(&s->qcond, &s->qlock);
    int ok = !s->pub_failed && !atomic_load(&s->t->stopping);
    pthread_mutex_unlock(&s->qlock);
    return ok;
}

static int queue_failed(stream_ctx *s)
{
    pthread_mutex_lock(&s->qlock);
    int f = s->pub_failed;
    pthread_mutex_unlock(&s->qlock);
    return f;
}

static pub_result new_epoch(stream_ctx *s, const char *reason, const char *token);

/* Reads (epoch, seq, token) from Redis; creates a first epoch if there is
 * none. Returns PUB_OK, PUB_LOST or PUB_STOP. */
static pub_result load_state(stream_ctx *s)
{
    lq_tailer *t = s->t;
    int backoff = BACKOFF_MIN_MS;

    for (;;) {
        if (atomic_load(&t->stopping))
            return PUB_STOP;
        if (!atomic_load(&t->leader))
            return PUB_LOST;
        if (s->redis == NULL)
            s->redis = redis_open(t, s->sha);
        redisReply *r = s->redis ? redisCommand(s->redis, "HMGET %s epoch seq token", s->state_key) : NULL;
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
            free(s->token);
            s->token = NULL;
            if (r->element[0]->type == REDIS_REPLY_STRING && r->element[0]->len > 0 &&
                r->element[0]->len < sizeof(s->epoch)) {
                memcpy(s->epoch, r->element[0]->str, r->element[0]->len + 1);
                s->seq = r->element[1]->type == REDIS_REPLY_STRING ? strtoll(r->element[1]->str, NULL, 10) : 0;
                if (r->element[2]->type == REDIS_REPLY_STRING && r->element[2]->len > 0)
                    s->token = lq_xstrdup(r->element[2]->str);
                freeReplyObject(r);
                return PUB_OK;
            }
            freeReplyObject(r);
            pthread_mutex_lock(&s->qlock);
            char *resume = s->pub_token ? lq_xstrdup(s->pub_token) : NULL;
            pthread_mutex_unlock(&s->qlock);
            if (resume) {
                /* Redis lost our state (flushed, or restarted without persistence)
                 * and its history with it: a new epoch, from the last event it had
                 * confirmed, so what followed is published rather than skipped */
                pub_result pr = new_epoch(s, "redis lost the tailer state and history", resume);
                free(resume);
                return pr;
            }
            /* no state yet: the first epoch, starting now (nothing before it was promised) */
            random_hex(s->epoch, 8);
            s->seq = 0;
            LQ_INFO("tailer starts a first epoch", "class=%s epoch=%s", s->class_name, s->epoch);
            return run_script(s, "epoch", s->epoch, 0, NULL, NULL, 0);
        }
        if (r)
            freeReplyObject(r);
        if (s->redis) {
            redisFree(s->redis);
            s->redis = NULL;
        }
        if (nap(t, backoff))
            return PUB_STOP;
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
    }
}

/*---- schema --------------------------------------------------------------------*/

static lq_schema *schema_get(lq_tailer *t)
{
    pthread_mutex_lock(&t->schema_lock);
    lq_schema *s = t->schema ? lq_schema_ref(t->schema) : NULL;
    pthread_mutex_unlock(&t->schema_lock);
    return s;
}

static void clp_entry_free(clp_entry *e)
{
    free(e->text);
    free(e);
}

static void clps_free(clp_entry **set)
{
    clp_entry *e, *tmp;
    HASH_ITER(hh, *set, e, tmp)
    {
        HASH_DEL(*set, e);
        clp_entry_free(e);
    }
}

static clp_entry *clps_put(clp_entry **set, const char *name, char *text /* taken */)
{
    size_t n = strlen(name);
    clp_entry *e;
    HASH_FIND(hh, *set, name, n, e);
    if (e) {
        free(e->text);
    } else {
        e = lq_xcalloc(1, sizeof(*e) + n + 1);
        memcpy(e->name, name, n + 1);
        HASH_ADD_KEYPTR(hh, *set, e->name, n, e);
    }
    e->text = text;
    return e;
}

/* Appends one class's (className, CLP text, message) to the script's args. */
static void clp_args(lq_buf *args, size_t *offs, size_t *n, const char *name, const char *text, int64_t ts)
{
    char num[32];
    offs[(*n)++] = args->len;
    lq_buf_append(args, name, strlen(name) + 1);
    offs[(*n)++] = args->len;
    lq_buf_append(args, text, strlen(text) + 1);
    offs[(*n)++] = args->len;
    lq_buf_puts(args, "{\"v\":1,\"className\":");
    lq_buf_json_string(args, name, strlen(name));
    lq_buf_puts(args, ",\"op\":\"schema\",\"clp\":");
    lq_buf_puts(args, text);
    snprintf(num, sizeof(num), ",\"ts\":%lld}", (long long)ts);
    lq_buf_append(args, num, strlen(num) + 1);
}

/* Publishes the CLPs of a freshly loaded schema (protocol/bus.md "schema"):
 * fresh maps each class of _SCHEMA to its CLP text. The first load of a term
 * writes the whole <p>schema hash; later ones only the classes whose CLP
 * changed since (a class gone from _SCHEMA becomes "null"). On LQ_OK the
 * published set becomes fresh (taken); on LQ_ERR nothing changed here and
 * the caller reloads after a backoff, which tries again. */
static int clps_publish(stream_ctx *s, clp_entry **fresh, int generation)
{
    lq_tailer *t = s->t;
    int full = t->clp_generation != generation;
    int64_t ts = lq_wall_ms();
    clp_entry *e, *tmp, *old;
    size_t count = HASH_COUNT(*fresh) + HASH_COUNT(t->clps);
    size_t *offs = lq_xcalloc(3 * count + 8, sizeof(*offs));
    size_t nargs = 0;
    lq_buf args;
    int rc = LQ_OK;

    lq_buf_init(&args);
    HASH_ITER(hh, *fresh, e, tmp)
    {
        HASH_FIND_STR(t->clps, e->name, old);
        if (full || strcmp(old ? old->text : "null", e->text) != 0)
            clp_args(&args, offs, &nargs, e->name, e->text, ts);
    }
    if (!full) {
        HASH_ITER(hh, t->clps, old, tmp)
        {
            HASH_FIND_STR(*fresh, old->name, e);
            if (e == NULL && strcmp(old->text, "null") != 0)
                clp_args(&args, offs, &nargs, old->name, "null", ts);
        }
    }
    if (full || nargs > 0) {
        char tsbuf[24];
        snprintf(tsbuf, sizeof(tsbuf), "%lld", (long long)ts);
        size_t argc = 9 + nargs;
        const char **argv = lq_xcalloc(argc, sizeof(*argv));
        size_t *lens = lq_xcalloc(argc, sizeof(*lens));
        const char *head[] = {"EVAL", SCHEMA_LUA, "2", t->lease_key, t->schema_key, t->id,
                              full ? "full" : "changes", tsbuf, t->channel};
        for (size_t i = 0; i < 9; i++)
            argv[i] = head[i];
        for (size_t i = 0; i < nargs; i++)
            argv[9 + i] = args.data + offs[i];
        for (size_t i = 0; i < argc; i++)
            lens[i] = strlen(argv[i]);
        if (s->redis == NULL)
            s->redis = redis_open(t, NULL);
        redisReply *r = s->redis ? redisCommandArgv(s->redis, (int)argc, argv, lens) : NULL;
        if (r && r->type == REDIS_REPLY_INTEGER) {
            LQ_METRIC_ADD(tailer_schema_published, (uint64_t)r->integer);
            LQ_INFO("tailer published the class-level permissions", "mode=%s classes=%zu messages=%lld",
                    full ? "full" : "changes", nargs / 3, (long long)r->integer);
        } else if (r && r->type == REDIS_REPLY_ERROR && strncmp(r->str, "NOTLEADER", 9) == 0) {
            if (atomic_exchange(&t->leader, 0)) {
                LQ_METRIC_INC(tailer_lease_lost);
                LQ_METRIC_SET(tailer_leader, 0);
                LQ_WARN("tailer lease lost: publishing stopped", "class=%s", "_SCHEMA");
            }
            rc = LQ_ERR;
        } else {
            LQ_WARN("tailer cannot publish the class-level permissions; retrying", "error=\"%s\"",
                    r && r->type == REDIS_REPLY_ERROR ? r->str
                    : s->redis && s->redis->err    ? s->redis->errstr
                                                   : "redis unreachable");
            LQ_METRIC_INC(tailer_publish_retries);
            rc = LQ_ERR;
        }
        if (r)
            freeReplyObject(r);
        if (r == NULL && s->redis) {
            redisFree(s->redis);
            s->redis = NULL;
        }
        free(argv);
        free(lens);
    }
    if (rc == LQ_OK) {
        clps_free(&t->clps);
        t->clps = *fresh;
        *fresh = NULL;
        t->clp_generation = generation;
    }
    lq_buf_release(&args);
    free(offs);
    return rc;
}

/* Reads the whole _SCHEMA collection and swaps it in, then publishes the
 * class-level permissions that changed. LQ_OK or LQ_ERR. */
static int schema_reload(stream_ctx *sc, mongoc_client_t *client, int generation)
{
    lq_tailer *t = sc->t;
    char *name = lq_xconcat(t->cfg->collection_prefix, "_SCHEMA", "");
    mongoc_collection_t *coll = mongoc_client_get_collection(client, t->db, name);
    bson_t filter = BSON_INITIALIZER;
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, &filter, NULL, NULL);
    lq_schema *s = lq_schema_new();
    const bson_t *doc;
    bson_error_t error;
    clp_entry *fresh = NULL, *e, *tmp;
    int rc = LQ_OK;

    while (mongoc_cursor_next(cur, &doc)) {
        lq_error err;
        bson_iter_t it;
        if (lq_schema_add(s, doc, &err) != LQ_OK) {
            LQ_WARN("tailer skips a _SCHEMA document", "reason=\"%s\"", err.text);
            continue;
        }
        if (bson_iter_init_find(&it, doc, "_id") && BSON_ITER_HOLDS_UTF8(&it)) {
            const char *cls = bson_iter_utf8(&it, NULL);
            if (lq_class_name_valid(cls))
                clps_put(&fresh, cls, NULL); /* the text once the schema is complete */
            else
                LQ_WARN("tailer does not publish the CLP of a _SCHEMA class with an invalid name",
                        "class=\"%s\"", cls);
        }
    }
    if (mongoc_cursor_error(cur, &error)) {
        LQ_WARN("tailer cannot read _SCHEMA", "error=\"%s\"", error.message);
        lq_schema_unref(s);
        rc = LQ_ERR;
    } else {
        HASH_ITER(hh, fresh, e, tmp)
        {
            const json_t *clp = lq_schema_clp(lq_schema_class(s, e->name));
            char *text = clp ? json_dumps(clp, JSON_COMPACT) : NULL;
            e->text = lq_xstrdup(text ? text : "null");
            free(text);
        }
        pthread_mutex_lock(&t->schema_lock);
        lq_schema_unref(t->schema);
        t->schema = s;
        t->schema_generation = generation;
        pthread_mutex_unlock(&t->schema_lock);
        LQ_METRIC_INC(tailer_schema_loads);
        LQ_INFO("tailer loaded the schema", "classes=%zu", lq_schema_count(s));
        rc = clps_publish(sc, &fresh, generation);
    }
    clps_free(&fresh);
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    bson_destroy(&filter);
    free(name);
    return rc;
}

/*---- the last-seen cache -------------------------------------------------------*/

static const cached *cache_get(stream_ctx *s, const char *id)
{
    cached *e;
    HASH_FIND_STR(s->cache, id, e);
    if (e == NULL) {
        LQ_METRIC_INC(tailer_cache_misses);
        return NULL;
    }
    LQ_METRIC_INC(tailer_cache_hits);
    return e;
}

static void cached_free(cached *e)
{
    free(e->text);
    free(e->id);
    free(e);
}

static void cache_drop(stream_ctx *s, const char *id)
{
    cached *e;
    HASH_FIND_STR(s->cache, id, e);
    if (e) {
        HASH_DEL(s->cache, e);
        cached_free(e);
        s->ncache--;
    }
}

/* Remembers text[0..len) as the object's last published state. */
static void cache_put(stream_ctx *s, const char *id, const char *text, size_t len)
{
    cached *e;
    if (s->t->cfg->tailer_cache_size <= 0)
        return;
    HASH_FIND_STR(s->cache, id, e);
    if (e) { /* most recently used goes to the end */
        HASH_DEL(s->cache, e);
        free(e->text);
    } else {
        if (s->ncache >= (size_t)s->t->cfg->tailer_cache_size) {
            cached *old = s->cache; /* hash order is insertion order: the oldest */
            HASH_DEL(s->cache, old);
            cached_free(old);
            s->ncache--;
        }
        e = lq_xcalloc(1, sizeof(*e));
        e->id = lq_xstrdup(id);
        s->ncache++;
    }
    e->text = lq_xmalloc(len + 1);
    memcpy(e->text, text, len);
    e->text[len] = '\0';
    e->len = len;
    HASH_ADD_KEYPTR(hh, s->cache, e->id, strlen(e->id), e);
}

static void cache_clear(stream_ctx *s)
{
    cached *e, *tmp;
    HASH_ITER(hh, s->cache, e, tmp)
    {
        HASH_DEL(s->cache, e);
        cached_free(e);
    }
    s->ncache = 0;
}

/* The collection has pre-images: the cache is not needed (until the next term). */
static void saw_preimage(stream_ctx *s)
{
    if (!s->has_preimages) {
        s->has_preimages = 1;
        cache_clear(s);
        LQ_INFO("tailer sees pre-images: original and deletes are exact, the cache is off",
                "class=%s", s->class_name);
    }
}

/*---- events --------------------------------------------------------------------*/

/* A resume token as text that bson_new_from_json reads back (malloc'd).
 * MongoDB's tokens are {_data: "<hex>"}: written directly, without libbson's
 * printf-based extended JSON, which showed in the per-event profile. */
char *lq__tailer_token_text(const bson_t *tok)
{
    bson_iter_t it;
    if (bson_count_keys(tok) == 1 && bson_iter_init_find(&it, tok, "_data") && BSON_ITER_HOLDS_UTF8(&it)) {
        uint32_t n;
        const char *data = bson_iter_utf8(&it, &n);
        int plain = 1;
        for (uint32_t i = 0; i < n && plain; i++)
            plain = (data[i] >= '0' && data[i] <= '9') || (data[i] >= 'A' && data[i] <= 'Z') ||
                    (data[i] >= 'a' && data[i] <= 'z');
        if (plain) {
            char *out = lq_xmalloc(n + 16);
            memcpy(out, "{\"_data\":\"", 10);
            memcpy(out + 10, data, n);
            memcpy(out + 10 + n, "\"}", 3);
            return out;
        }
    }
    char *ext = bson_as_canonical_extended_json(tok, NULL);
    char *out = lq_xstrdup(ext ? ext : "{}");
    bson_free(ext);
    return out;
}

/* A new epoch: history before it is gone, gateways resync the class. */
static pub_result new_epoch(stream_ctx *s, const char *reason, const char *token)
{
    char epoch[40];
    if (!queue_drain(s)) /* the events before it go out first, in their epoch */
        return PUB_LOST;
    random_hex(epoch, 8);
    json_t *m = json_pack("{s:i,s:s,s:s,s:s,s:i,s:s,s:I}", "v", 1, "className", s->class_name,
                          "op", "resync", "epoch", epoch, "seq", 0, "reason", reason, "ts",
                          (json_int_t)lq_wall_ms());
    char *text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    LQ_ERROR("tailer starts a new epoch: subscribers of the class must resync", "class=%s reason=\"%s\" old_epoch=%s epoch=%s last_seq=%lld",
             s->class_name, reason, s->epoch, epoch, (long long)s->seq);
    pub_result r = run_script(s, "epoch", epoch, 0, token, text, strlen(text));
    free(text);
    if (r == PUB_OK) {
        memcpy(s->epoch, epoch, sizeof(epoch));
        s->seq = 0;
        free(s->token);
        s->token = token ? lq_xstrdup(token) : NULL;
        cache_clear(s);
        LQ_METRIC_INC(tailer_epochs);
    }
    return r;
}

static void key_text(const bson_iter_t *it, char *out, size_t cap)
{
    if (BSON_ITER_HOLDS_UTF8(it))
        snprintf(out, cap, "%s", bson_iter_utf8(it, NULL));
    else if (BSON_ITER_HOLDS_OID(it))
        bson_oid_to_string(bson_iter_oid(it), out);
    else if (BSON_ITER_HOLDS_INT32(it))
        snprintf(out, cap, "%d", bson_iter_int32(it));
    else if (BSON_ITER_HOLDS_INT64(it))
        snprintf(out, cap, "%lld", (long long)bson_iter_int64(it));
    else
        snprintf(out, cap, "?");
}

/* Appends the REST JSON of the subdocument at key of ev to out. Returns 1,
 * or 0 (out unchanged) when it is absent, null or unconvertible. */
static int write_at(stream_ctx *s, lq_buf *out, const bson_t *ev, const char *key,
                    const lq_class_schema *cls)
{
    bson_iter_t it;
    const uint8_t *data;
    uint32_t len;
    bson_t doc;
    lq_error err;

    if (!bson_iter_init_find(&it, ev, key) || !BSON_ITER_HOLDS_DOCUMENT(&it))
        return 0;
    bson_iter_document(&it, &len, &data);
    if (!bson_init_static(&doc, data, len))
        return 0;
    lq_parsedoc_opts opts = s->t->conv;
    opts.master_only = s->master_only;
    if (lq_parsedoc_write_rest(out, &doc, s->class_name, cls, &opts, &err) != LQ_OK) {
        LQ_WARN("tailer cannot convert a document", "class=%s reason=\"%s\"", s->class_name, err.text);
        return 0;
    }
    return 1;
}

/* Appends the object as it was before this event: the pre-image if the
 * event has one, else the object as last published (cache). Returns 0 with
 * out unchanged when neither is known. */
static int write_previous(stream_ctx *s, lq_buf *out, const bson_t *ev, const char *id,
                          const lq_class_schema *cls)
{
    const cached *c;
    if (write_at(s, out, ev, "fullDocumentBeforeChange", cls)) {
        saw_preimage(s);
        return 1;
    }
    if (id[0] && (c = cache_get(s, id)) != NULL) {
        lq_buf_append(out, c->text, c->len);
        return 1;
    }
    return 0;
}

typedef enum { EV_DONE, EV_REOPEN, EV_LOST, EV_STOP } ev_result;

/* livequery_tailer_lag_seconds: now - the event's wallTime (MongoDB 6+),
 * else its clusterTime (whole seconds). */
static void note_lag(const bson_t *ev)
{
    bson_iter_t it;
    if (bson_iter_init_find(&it, ev, "wallTime") && BSON_ITER_HOLDS_DATE_TIME(&it)) {
        lq_metrics_set_tailer_lag_ms(lq_wall_ms() - bson_iter_date_time(&it));
    } else if (bson_iter_init_find(&it, ev, "clusterTime") && BSON_ITER_HOLDS_TIMESTAMP(&it)) {
        uint32_t secs, inc;
        bson_iter_timestamp(&it, &secs, &inc);
        lq_metrics_set_tailer_lag_ms(lq_wall_ms() - (int64_t)secs * 1000);
    }
}

/* Handles one change event. *reopen_token is set (owned) when the stream
 * must be re-opened after it (invalidate). */
static ev_result handle_event(stream_ctx *s, const bson_t *ev, char **reopen_token)
{
    bson_iter_t it, key;
    const char *type = NULL;
    char id[128] = "";
    char *token = NULL;
    const char *op = NULL;
    ev_result result = EV_DONE;
    lq_schema *schema = schema_get(s->t);
    const lq_class_schema *cls = lq_schema_class(schema, s->class_name);
    lq_buf *m = &s->msg;
    size_t obj_at = 0, obj_len = 0;
    uint32_t ct_t = 0, ct_i = 0;

    if (bson_iter_init_find(&it, ev, "operationType") && BSON_ITER_HOLDS_UTF8(&it))
        type = bson_iter_utf8(&it, NULL);
    if (bson_iter_init_find(&it, ev, "_id") && BSON_ITER_HOLDS_DOCUMENT(&it)) {
        const uint8_t *data;
        uint32_t len;
        bson_t tok;
        bson_iter_document(&it, &len, &data);
        if (bson_init_static(&tok, data, len))
            token = lq__tailer_token_text(&tok);
    }
    if (bson_iter_init_find(&it, ev, "documentKey") && bson_iter_recurse(&it, &key) &&
        bson_iter_find(&key, "_id"))
        key_text(&key, id, sizeof(id));
    /* the change's cluster time: gateways line snapshot reads up with it (the query op) */
    if (bson_iter_init_find(&it, ev, "clusterTime") && BSON_ITER_HOLDS_TIMESTAMP(&it))
        bson_iter_timestamp(&it, &ct_t, &ct_i);
    if (type == NULL || token == NULL) {
        LQ_WARN("tailer skips a change event without operationType or _id", "class=%s", s->class_name);
        goto out;
    }
    LQ_METRIC_INC(tailer_events_in);
    note_lag(ev);

    /* the message is built as text, straight from the BSON (protocol/bus.md):
     * {"v":1,"className":…,"op":…,"object":{…}[,"original":{…}],"seq":…,"epoch":…[,"ct":"<t>.<i>"],"ts":…} */
    m->len = 0;
    lq_buf_puts(m, "{\"v\":1,\"className\":");
    lq_buf_json_string(m, s->class_name, strlen(s->class_name));
    if (strcmp(type, "insert") == 0) {
        op = "create";
        lq_buf_puts(m, ",\"op\":\"create\",\"object\":");
        obj_at = m->len;
        if (!write_at(s, m, ev, "fullDocument", cls)) {
            LQ_METRIC_INC(tailer_events_unconvertible);
            op = NULL;
        }
        obj_len = m->len - obj_at;
    } else if (strcmp(type, "update") == 0 || strcmp(type, "replace") == 0) {
        op = "update";
        lq_buf_puts(m, ",\"op\":\"update\",\"object\":");
        obj_at = m->len;
        if (!write_at(s, m, ev, "fullDocument", cls)) {
            /* updateLookup found no document: it was deleted since; its delete event follows */
            LQ_METRIC_INC(tailer_updates_without_document);
            LQ_DEBUG("tailer skips an update of a document deleted since", "class=%s objectId=%s",
                     s->class_name, id);
            op = NULL;
        } else {
            obj_len = m->len - obj_at;
            lq_buf_puts(m, ",\"original\":");
            if (!write_previous(s, m, ev, id, cls)) {
                m->len -= strlen(",\"original\":");
                LQ_METRIC_INC(tailer_updates_without_original);
            }
        }
    } else if (strcmp(type, "delete") == 0) {
        op = "delete";
        lq_buf_puts(m, ",\"op\":\"delete\",\"object\":");
        obj_at = m->len;
        if (!write_previous(s, m, ev, id, cls)) {
            /* neither a pre-image nor a cached copy: the ACL is unknown, so only
             * master-key subscribers may see it (protocol/bus.md) */
            LQ_METRIC_INC(tailer_deletes_acl_unknown);
            lq_buf_puts(m, "{\"objectId\":");
            lq_buf_json_string(m, id, strlen(id));
            lq_buf_puts(m, ",\"className\":");
            lq_buf_json_string(m, s->class_name, strlen(s->class_name));
            lq_buf_puts(m, ",\"ACL\":{}}");
        }
        obj_len = m->len - obj_at;
    } else if (strcmp(type, "invalidate") == 0) {
        pub_result r = new_epoch(s, "invalidate: the collection was dropped or renamed", token);
        result = r == PUB_OK ? EV_REOPEN : r == PUB_LOST ? EV_LOST : EV_STOP;
        if (result == EV_REOPEN) {
            *reopen_token = token;
            token = NULL;
        }
        goto out;
    } else {
        goto out; /* drop, rename, dropDatabase: the invalidate that follows handles them */
    }

    if (op) {
        char num[32];
        int n = snprintf(num, sizeof(num), ",\"seq\":%lld", (long long)(s->seq + 1));
        lq_buf_append(m, num, (size_t)n);
        lq_buf_puts(m, ",\"epoch\":");
        lq_buf_json_string(m, s->epoch, strlen(s->epoch));
        if (ct_t != 0 || ct_i != 0) {
            n = snprintf(num, sizeof(num), ",\"ct\":\"%u.%u\"", ct_t, ct_i);
            lq_buf_append(m, num, (size_t)n);
        }
        n = snprintf(num, sizeof(num), ",\"ts\":%lld}", (long long)lq_wall_ms());
        lq_buf_append(m, num, (size_t)n);
        /* the cache keeps the object as published; the queue takes a copy of the message */
        if (id[0]) {
            if (strcmp(op, "delete") == 0)
                cache_drop(s, id);
            else if (!s->has_preimages)
                cache_put(s, id, m->data + obj_at, obj_len);
        }
        char *text = lq_xmalloc(m->len + 1);
        memcpy(text, m->data, m->len);
        text[m->len] = '\0';
        if (!queue_event(s, s->seq + 1, token, text, m->len)) {
            result = EV_LOST;
            goto out;
        }
        s->seq++;
    }
    free(s->token);
    s->token = lq_xstrdup(token);
out:
    free(token);
    lq_schema_unref(schema);
    return result;
}

/*---- the stream threads ----------------------------------------------------------*/

static mongoc_change_stream_t *open_stream(stream_ctx *s, mongoc_client_t *client, const char *token)
{
    lq_tailer *t = s->t;
    mongoc_collection_t *coll = mongoc_client_get_collection(client, t->db, s->collection);
    bson_t pipeline = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    mongoc_change_stream_t *cs;

    if (!s->is_schema) {
        BSON_APPEND_UTF8(&opts, "fullDocument", t->cfg->full_document);
        BSON_APPEND_UTF8(&opts, "fullDocumentBeforeChange", "whenAvailable");
    }
    BSON_APPEND_INT64(&opts, "maxAwaitTimeMS", AWAIT_MS);
    if (token) {
        bson_error_t e;
        bson_t *tok = bson_new_from_json((const uint8_t *)token, -1, &e);
        if (tok) {
            /* startAfter also works after an invalidate, where resumeAfter fails */
            BSON_APPEND_DOCUMENT(&opts, "startAfter", tok);
            bson_destroy(tok);
        } else { /* class_term checked it: only a bug gets here */
            LQ_ERROR("tailer ignores an unreadable resume token", "class=%s error=\"%s\"",
                     s->class_name, e.message);
        }
    }
    cs = mongoc_collection_watch(coll, &pipeline, &opts);
    bson_destroy(&pipeline);
    bson_destroy(&opts);
    mongoc_collection_destroy(coll);
    return cs;
}

static int is_history_lost(const bson_error_t *e, const bson_t *reply)
{
    bson_iter_t it;
    if (e->code == 286 || e->code == 136 /* CappedPositionLost */)
        return 1;
    if (reply && bson_iter_init_find(&it, reply, "codeName") && BSON_ITER_HOLDS_UTF8(&it) &&
        strcmp(bson_iter_utf8(&it, NULL), "ChangeStreamHistoryLost") == 0)
        return 1;
    return 0;
}

/* Stores the stream's advancing position while nothing is published, so a
 * restart after a long quiet spell does not start from a rolled-over oplog. */
static pub_result store_idle_token(stream_ctx *s, mongoc_change_stream_t *cs)
{
    const bson_t *tok = mongoc_change_stream_get_resume_token(cs);
    if (tok == NULL)
        return PUB_OK;
    if (!queue_drain(s))
        return PUB_LOST;
    char *text = lq__tailer_token_text(tok);
    pub_result r = PUB_OK;
    if (text && (s->token == NULL || strcmp(text, s->token) != 0)) {
        r = run_script(s, "token", s->epoch, s->seq, text, NULL, 0);
        if (r == PUB_OK) {
            free(s->token);
            s->token = lq_xstrdup(text);
        }
    }
    free(text);
    return r;
}

/* Empties the publish queue and waits for the publisher to be idle, so a
 * new term starts from what Redis has. */
static void queue_reset(stream_ctx *s)
{
    pthread_mutex_lock(&s->qlock);
    pending_free(s->qhead);
    s->qhead = s->qtail = NULL;
    s->qlen = 0;
    while (s->inflight)
        pthread_cond_wait(&s->qcond, &s->qlock);
    s->pub_failed = 0;
    pthread_mutex_unlock(&s->qlock);
}

/* One term of a class stream: from the state in Redis until the lease is
 * lost, we stop, or a publish fails (then the caller starts another term
 * after a backoff, re-reading from the stored token). */
static void class_term(stream_ctx *s, int generation)
{
    lq_tailer *t = s->t;
    mongoc_client_t *client = mongoc_client_pool_pop(t->pool);
    int backoff = BACKOFF_MIN_MS;

    queue_reset(s);
    if (load_state(s) != PUB_OK)
        goto out;
    if (s->token) {
        /* a token we cannot read cannot resume: continuity is lost, say so */
        bson_error_t e;
        bson_t *tok = bson_new_from_json((const uint8_t *)s->token, -1, &e);
        if (tok)
            bson_destroy(tok);
        else if (new_epoch(s, "the stored resume token is unreadable", NULL) != PUB_OK)
            goto out;
    }
    cache_clear(s); /* another tailer may have published since we last held the lease */
    s->has_preimages = 0;
    LQ_INFO("tailer stream starting", "class=%s collection=%s epoch=%s seq=%lld resume=%s",
            s->class_name, s->collection, s->epoch, (long long)s->seq, s->token ? "stored token" : "now");
    while (!atomic_load(&t->stopping) && atomic_load(&t->leader) &&
           atomic_load(&t->generation) == generation) {
        mongoc_change_stream_t *cs = open_stream(s, client, s->token);
        const bson_t *doc, *reply = NULL;
        bson_error_t error;
        int64_t last_store = lq_mono_ms();
        int failed = 0;

        LQ_METRIC_INC(tailer_streams_opened);
        while (!atomic_load(&t->stopping) && atomic_load(&t->leader) &&
               atomic_load(&t->generation) == generation) {
            if (mongoc_change_stream_next(cs, &doc)) {
                char *reopen = NULL;
                lq_mongo_note(1);
                ev_result r = handle_event(s, doc, &reopen);
                backoff = BACKOFF_MIN_MS;
                if (r == EV_REOPEN) {
                    free(s->token);
                    s->token = reopen ? lq_xstrdup(reopen) : NULL;
                    free(reopen);
                    break;
                }
                if (r != EV_DONE || queue_failed(s))
                    break;
                continue;
            }
            if (queue_failed(s))
                break;
            if (mongoc_change_stream_error_document(cs, &error, &reply)) {
                LQ_METRIC_INC(tailer_stream_errors);
                if (is_history_lost(&error, reply)) {
                    LQ_METRIC_INC(tailer_history_lost);
                    if (new_epoch(s, "history lost: the resume point is no longer in the oplog", NULL) != PUB_OK)
                        break;
                } else {
                    lq_mongo_note(0);
                    LQ_WARN("tailer change stream failed; reopening from the stored token",
                            "class=%s code=%u error=\"%s\" backoff_ms=%d", s->class_name,
                            error.code, error.message, backoff);
                    failed = 1;
                }
                break;
            }
            lq_mongo_note(1); /* an empty getMore: MongoDB answered */
            if (lq_mono_ms() - last_store >= TOKEN_IDLE_MS) {
                if (store_idle_token(s, cs) != PUB_OK)
                    break;
                last_store = lq_mono_ms();
            }
        }
        mongoc_change_stream_destroy(cs);
        if (queue_failed(s))
            break;
        if (failed) {
            LQ_METRIC_INC(tailer_resumes);
            if (nap(t, backoff))
                break;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        }
    }
out:
    queue_reset(s);
    mongoc_client_pool_push(t->pool, client);
}

/* One leadership term of the _SCHEMA watcher. */
static void schema_term(stream_ctx *s, int generation)
{
    lq_tailer *t = s->t;
    mongoc_client_t *client = mongoc_client_pool_pop(t->pool);
    int backoff = BACKOFF_MIN_MS;

    while (!atomic_load(&t->stopping) && atomic_load(&t->leader) &&
           atomic_load(&t->generation) == generation) {
        /* open first, then load: a change between the two is seen by the stream */
        mongoc_change_stream_t *cs = open_stream(s, client, NULL);
        const bson_t *doc, *reply;
        bson_error_t error;
        int failed = schema_reload(s, client, generation) != LQ_OK;

        while (!failed && !atomic_load(&t->stopping) && atomic_load(&t->leader) &&
               atomic_load(&t->generation) == generation) {
            if (mongoc_change_stream_next(cs, &doc)) {
                lq_mongo_note(1);
                /* reload at once: draining first would wait out a getMore's
                 * maxAwaitTimeMS (1 s) when nothing more is there; _SCHEMA
                 * changes are rare, and a reload that finds no CLP change
                 * publishes nothing */
                if (schema_reload(s, client, generation) != LQ_OK)
                    failed = 1;
                backoff = BACKOFF_MIN_MS;
            } else if (mongoc_change_stream_error_document(cs, &error, &reply)) {
                lq_mongo_note(0);
                LQ_WARN("tailer _SCHEMA stream failed; reopening", "code=%u error=\"%s\"",
                        error.code, error.message);
                failed = 1;
            }
        }
        mongoc_change_stream_destroy(cs);
        if (failed) {
            if (nap(t, backoff))
                break;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        }
    }
    mongoc_client_pool_push(t->pool, client);
}

static void *stream_main(void *arg)
{
    stream_ctx *s = arg;
    lq_tailer *t = s->t;

    while (!atomic_load(&t->stopping)) {
        if (!atomic_load(&t->leader)) {
            nap(t, 50);
            continue;
        }
        int generation = atomic_load(&t->generation);
        if (s->is_schema) {
            schema_term(s, generation);
        } else {
            /* the schema is loaded by its watcher; wait briefly for it, but do not
             * wait forever (types are inferred without it) */
            for (int i = 0; i < 100 && !atomic_load(&t->stopping); i++) {
                pthread_mutex_lock(&t->schema_lock);
                int ready = t->schema_generation == generation;
                pthread_mutex_unlock(&t->schema_lock);
                if (ready || nap(t, 50))
                    break;
            }
            /* a term that ends while we still lead (a publish failed, Redis went
             * away) starts over from Redis' state after a backoff */
            int backoff = BACKOFF_MIN_MS;
            for (;;) {
                class_term(s, generation);
                if (atomic_load(&t->stopping) || !atomic_load(&t->leader) ||
                    atomic_load(&t->generation) != generation || nap(t, backoff))
                    break;
                backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            }
        }
        while (atomic_load(&t->leader) && atomic_load(&t->generation) == generation &&
               !atomic_load(&t->stopping))
            nap(t, 50); /* lost our term some other way: wait for the next */
    }
    if (s->redis) {
        redisFree(s->redis);
        s->redis = NULL;
    }
    return NULL;
}

/*---- the lease -------------------------------------------------------------------*/

/* Reads who holds the lease (livequery_tailer_lease_holder) after an
 * attempt that found it was not ours. NULL when the connection broke. */
static redisReply *read_holder(lq_tailer *t, redisContext *c)
{
    redisReply *r = redisCommand(c, "GET %s", t->lease_key);
    if (r && r->type == REDIS_REPLY_STRING)
        lq_metrics_set_lease_holder(r->str);
    else if (r)
        lq_metrics_set_lease_holder(NULL); /* nobody: free for the next attempt */
    return r;
}

static void *lease_main(void *arg)
{
    lq_tailer *t = arg;
    const int ttl = t->cfg->lease_ttl_ms, every = ttl / 5;
    redisContext *c = NULL;
    int64_t last_ok = 0;
    int failures = 0;

    while (!atomic_load(&t->stopping)) {
        if (c == NULL && (c = redis_open(t, NULL)) == NULL) {
            if (failures++ % 20 == 0)
                LQ_WARN("tailer lease: redis unreachable", "host=%s port=%d", t->cfg->redis_host,
                        t->cfg->redis_port);
        }
        redisReply *r = NULL;
        if (c && !atomic_load(&t->leader)) {
            r = redisCommand(c, "SET %s %s NX PX %d", t->lease_key, t->id, ttl);
            if (r && r->type == REDIS_REPLY_STATUS) {
                last_ok = lq_mono_ms();
                atomic_fetch_add(&t->generation, 1);
                atomic_store(&t->leader, 1);
                LQ_METRIC_SET(tailer_leader, 1);
                LQ_METRIC_INC(tailer_lease_acquired);
                LQ_INFO("tailer lease acquired: this tailer publishes", "id=%s ttl_ms=%d", t->id, ttl);
                lq_metrics_set_lease_holder(t->id);
            } else if (r && r->type == REDIS_REPLY_NIL) {
                freeReplyObject(r);
                r = read_holder(t, c);
            }
        } else if (c) {
            r = redisCommand(c, "EVAL %s 1 %s %s %d", RENEW_LUA, t->lease_key, t->id, ttl);
            if (r && r->type == REDIS_REPLY_INTEGER && r->integer == 1) {
                last_ok = lq_mono_ms();
                lq_metrics_set_lease_holder(t->id);
            } else if (r && r->type == REDIS_REPLY_INTEGER) {
                if (atomic_exchange(&t->leader, 0)) {
                    LQ_METRIC_INC(tailer_lease_lost);
                    LQ_WARN("tailer lease lost to another tailer: publishing stopped", "id=%s", t->id);
                }
                freeReplyObject(r);
                r = read_holder(t, c);
            }
        }
        /* answered (an error reply too: Redis is there) */
        LQ_METRIC_SET(tailer_redis_connected, r != NULL);
        if (r == NULL)
            lq_metrics_set_lease_holder(NULL); /* unknown while Redis cannot be read */
        if (r == NULL && c) {
            redisFree(c);
            c = NULL;
        }
        if (r)
            freeReplyObject(r);
        /* cannot renew: past ttl minus one period another tailer may hold it */
        if (atomic_load(&t->leader) && lq_mono_ms() - last_ok > ttl - every) {
            atomic_store(&t->leader, 0);
            LQ_METRIC_INC(tailer_lease_lost);
            LQ_WARN("tailer cannot renew its lease: publishing stopped", "id=%s", t->id);
        }
        LQ_METRIC_SET(tailer_leader, atomic_load(&t->leader));
        nap(t, every);
    }
    if (atomic_exchange(&t->leader, 0) && c) {
        redisReply *r = redisCommand(c, "EVAL %s 1 %s %s", RELEASE_LUA, t->lease_key, t->id);
        if (r)
            freeReplyObject(r);
        LQ_INFO("tailer lease released", "id=%s", t->id);
    }
    LQ_METRIC_SET(tailer_leader, 0);
    LQ_METRIC_SET(tailer_redis_connected, 0);
    lq_metrics_set_lease_holder(NULL);
    if (c)
        redisFree(c);
    return NULL;
}

/*---- lifetime --------------------------------------------------------------------*/

/* Watched whenever the tailer runs, --classes or not: gateways invalidate
 * their session and role caches from these (auth.h); _User for deleted users. */
static const char *const AUTH_CLASSES[] = {"_Session", "_User", "_Role", "_Join:users:_Role", "_Join:roles:_Role"};

/* Adds a class stream for name[0..len), unless it is there already. */
static void add_class(lq_tailer *t, const char *name, size_t len)
{
    for (size_t i = 0; i < t->nstreams; i++)
        if (strlen(t->streams[i].class_name) == len && memcmp(t->streams[i].class_name, name, len) == 0)
            return;
    stream_ctx *s = &t->streams[t->nstreams++];
    s->t = t;
    memcpy(s->class_name, name, len);
    s->class_name[len] = '\0';
    /* classes stored without an ACL of their own (_Session, _Installation,
     * _Join:…) go to master-key subscribers only; _User and _Role keep theirs */
    s->master_only = s->class_name[0] == '_' && strcmp(s->class_name, "_User") != 0 &&
                     strcmp(s->class_name, "_Role") != 0;
    s->collection = lq_xconcat(t->cfg->collection_prefix, s->class_name, "");
    char *base = lq_xconcat(t->cfg->channel_prefix, t->cfg->app_id, ":");
    s->state_key = lq_xconcat(base, "tailer:", s->class_name);
    s->stream_key = lq_xconcat(base, "stream:", s->class_name);
    free(base);
}

lq_tailer *lq_tailer_new(const lq_config *cfg)
{
    lq_tailer *t;

    t = lq_xcalloc(1, sizeof(*t));
    t->cfg = cfg;
    t->stop_pipe[0] = t->stop_pipe[1] = -1;
    pthread_mutex_init(&t->schema_lock, NULL);
    t->pool = lq_mongo_pool_new(cfg->mongodb_uri, "livequeryd-tailer", 30000, &t->uri, &t->db);
    if (t->pool == NULL) {
        lq_tailer_free(t);
        return NULL;
    }
    if (cfg->tailer_id) {
        snprintf(t->id, sizeof(t->id), "%s", cfg->tailer_id);
    } else {
        char host[64] = "host", rnd[9];
        gethostname(host, sizeof(host) - 1);
        random_hex(rnd, 4);
        snprintf(t->id, sizeof(t->id), "%s:%d:%s", host, (int)getpid(), rnd);
    }
    t->lease_key = lq_xconcat(cfg->channel_prefix, cfg->app_id, ":tailer:lease");
    t->channel = lq_xconcat(cfg->channel_prefix, cfg->app_id, ":changes");
    t->schema_key = lq_xconcat(cfg->channel_prefix, cfg->app_id, ":schema");
    t->conv.files_url_prefix = cfg->files_url_prefix;

    /* the classes, the auth collections, then the _SCHEMA watcher */
    size_t n = 1 + sizeof(AUTH_CLASSES) / sizeof(AUTH_CLASSES[0]);
    for (const char *p = cfg->classes; *p; p++)
        n += *p == ',';
    t->streams = lq_xcalloc(n + 1, sizeof(*t->streams));
    for (size_t i = 0; i < n + 1; i++) {
        lq_buf_init(&t->streams[i].msg);
        pthread_mutex_init(&t->streams[i].qlock, NULL);
        pthread_cond_init(&t->streams[i].qcond, NULL);
    }
    const char *p = cfg->classes;
    while (*p) {
        size_t len = strcspn(p, ",");
        if (len > 0 && len <= LQ_CLASS_NAME_MAX)
            add_class(t, p, len);
        p += len;
        if (*p == ',')
            p++;
    }
    for (size_t i = 0; i < sizeof(AUTH_CLASSES) / sizeof(AUTH_CLASSES[0]); i++)
        add_class(t, AUTH_CLASSES[i], strlen(AUTH_CLASSES[i]));
    stream_ctx *sc = &t->streams[t->nstreams++];
    sc->t = t;
    sc->is_schema = 1;
    snprintf(sc->class_name, sizeof(sc->class_name), "_SCHEMA");
    sc->collection = lq_xconcat(cfg->collection_prefix, "_SCHEMA", "");
    if (pipe(t->stop_pipe) != 0) {
        LQ_ERROR("tailer: pipe failed", "error=\"%s\"", strerror(errno));
        lq_tailer_free(t);
        return NULL;
    }
    return t;
}

int lq_tailer_start(lq_tailer *t)
{
    LQ_INFO("tailer starting", "id=%s db=%s classes=%s auth_classes=_Session,_User,_Role,_Join:users:_Role,_Join:roles:_Role fullDocument=%s lease_ttl_ms=%d stream_max_len=%zu",
            t->id, t->db, t->cfg->classes, t->cfg->full_document, t->cfg->lease_ttl_ms,
            t->cfg->stream_max_len);
    if (pthread_create(&t->lease_thread, NULL, lease_main, t) != 0)
        return LQ_ERR;
    t->started = 1;
    t->pinger = lq_mongo_pinger_start(t->cfg->mongodb_uri, MONGO_PING_MS);
    for (size_t i = 0; i < t->nstreams; i++) {
        stream_ctx *s = &t->streams[i];
        if (!s->is_schema) {
            if (pthread_create(&s->pub_thread, NULL, publisher_main, s) != 0) {
                lq_tailer_stop(t);
                return LQ_ERR;
            }
            s->pub_started = 1;
        }
        if (pthread_create(&s->thread, NULL, stream_main, s) != 0) {
            lq_tailer_stop(t);
            return LQ_ERR;
        }
        s->started = 1;
    }
    return LQ_OK;
}

void lq_tailer_stop(lq_tailer *t)
{
    if (t == NULL || !t->started)
        return;
    atomic_store(&t->stopping, 1);
    if (write(t->stop_pipe[1], "x", 1) < 0) {
        /* threads still see `stopping` within a second */
    }
    /* streams first: they must not publish after the lease is released */
    for (size_t i = 0; i < t->nstreams; i++) {
        stream_ctx *s = &t->streams[i];
        pthread_mutex_lock(&s->qlock); /* wake a publisher or a reader waiting on the queue */
        pthread_cond_broadcast(&s->qcond);
        pthread_mutex_unlock(&s->qlock);
    }
    for (size_t i = 0; i < t->nstreams; i++) {
        stream_ctx *s = &t->streams[i];
        if (s->started)
            pthread_join(s->thread, NULL);
        if (s->pub_started)
            pthread_join(s->pub_thread, NULL);
        s->started = s->pub_started = 0;
    }
    pthread_join(t->lease_thread, NULL);
    lq_mongo_pinger_stop(t->pinger);
    t->pinger = NULL;
    t->started = 0;
}

void lq_tailer_free(lq_tailer *t)
{
    if (t == NULL)
        return;
    lq_tailer_stop(t);
    for (size_t i = 0; i < t->nstreams; i++) {
        stream_ctx *s = &t->streams[i];
        cache_clear(s);
        lq_buf_release(&s->msg);
        pending_free(s->qhead);
        free(s->pub_token);
        pthread_mutex_destroy(&s->qlock);
        pthread_cond_destroy(&s->qcond);
        free(s->collection);
        free(s->state_key);
        free(s->stream_key);
        free(s->token);
    }
    free(t->streams);
    if (t->pool)
        mongoc_client_pool_destroy(t->pool);
    if (t->uri)
        mongoc_uri_destroy(t->uri);
    lq_schema_unref(t->schema);
    free(t->lease_key);
    free(t->channel);
    free(t->schema_key);
    clps_free(&t->clps);
    if (t->stop_pipe[0] >= 0) {
        close(t->stop_pipe[0]);
        close(t->stop_pipe[1]);
    }
    pthread_mutex_destroy(&t->schema_lock);
    free(t);
}
