/*
 * bus.c - Redis subscriber thread and bus message parsing; see bus.h.
 */
#include "livequery/bus.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uthash.h>

#include "livequery/clock.h"
#include "livequery/error.h"
#include "livequery/jsonout.h"
#include "livequery/log.h"
#include "livequery/metrics.h"
#include "livequery/redisconn.h"

#define QUEUE_MAX 65536        /* changes waiting for the service thread before we stop reading */
#define PING_AFTER_MS 3000     /* idle time before we ask Redis for a PONG */
#define DEAD_AFTER_MS 10000    /* no byte from Redis for this long: reconnect */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

/* What this gateway has delivered of one class published with seq/epoch. */
typedef struct class_seq {
    char name[LQ_CLASS_NAME_MAX + 1];
    char epoch[40];
    int64_t seq;
    UT_hash_handle hh;
} class_seq;

/* A class whose CLP this gateway has been handed (LQ_CHANGE_SCHEMA). */
typedef struct clp_known {
    UT_hash_handle hh;
    int mark;
    char name[];
} clp_known;

#define NCHANNELS 4

/* A subscription's request for its class's position (lq_bus_position). */
typedef struct pos_req {
    struct pos_req *next;
    uint64_t token;
    int has_since;
    int64_t since_seq;
    char epoch[40];
    char class_name[LQ_CLASS_NAME_MAX + 1];
} pos_req;

struct lq_bus {
    const lq_config *cfg;
    lq_bus_notify_fn notify;
    void *ud;
    char *channels[NCHANNELS]; /* ours, afterSave, afterDelete, clearCache (lq_bus_channel order) */
    pthread_t thread;
    int started;
    int stop_pipe[2];
    int req_pipe[2]; /* wakes the bus thread for position requests */
    atomic_int stopping;
    atomic_int connected;

    /* bus thread only: ordering and gap repair (protocol/bus.md) */
    class_seq *seqs;
    clp_known *clps;   /* classes announced with LQ_CHANGE_SCHEMA */
    redisContext *cmd; /* a second connection, for XRANGE / HMGET; NULL until needed */
    char *key_base;    /* <prefix><appId>: */

    pthread_mutex_t lock; /* guards head, tail, count, reqs */
    pthread_cond_t drained;
    lq_change *head, *tail;
    size_t count;
    pos_req *reqs, *reqs_tail; /* position requests, oldest first */
};

/*---- message parsing ---------------------------------------------------------*/

/* Makes sure a Parse object carries its className (the SDK needs it). */
/* The value of a string without "\u0000" in it, else NULL. Messages are read
 * with JSON_ALLOW_NUL, as field values may hold U+0000 (MongoDB and Parse
 * store it); names and ids must not, as C strings would cut them short. */
static const char *name_string(const json_t *v)
{
    const char *s = json_string_value(v);
    return s && strlen(s) == json_string_length(v) ? s : NULL;
}

static int object_ok(json_t *obj, const char *class_name)
{
    if (!json_is_object(obj) || !name_string(json_object_get(obj, "objectId")))
        return 0;
    json_t *cn = json_object_get(obj, "className");
    if (cn == NULL)
        json_object_set_new(obj, "className", json_string(class_name));
    else if (!name_string(cn) || strcmp(json_string_value(cn), class_name) != 0)
        return 0;
    return 1;
}

int lq_bus_class_name_valid(const char *name)
{
    static const char join[] = "_Join:";
    char part[LQ_CLASS_NAME_MAX + 1];
    const char *field, *colon;

    if (name == NULL)
        return 0;
    if (strncmp(name, join, sizeof(join) - 1) != 0)
        return lq_class_name_valid(name);
    if (strlen(name) > LQ_CLASS_NAME_MAX)
        return 0;
    field = name + sizeof(join) - 1;
    colon = strchr(field, ':');
    if (colon == NULL || (size_t)(colon - field) > LQ_CLASS_NAME_MAX)
        return 0;
    memcpy(part, field, (size_t)(colon - field));
    part[colon - field] = '\0';
    return lq_class_name_valid(part) && lq_class_name_valid(colon + 1);
}

/* A cluster time "<t>.<i>" (two decimal uint32, no sign, no leading zeros
 * but "0") as (t << 32) | i. 0 on success, -1 when malformed. */
static int parse_ct(const char *s, uint64_t *out)
{
    uint64_t part[2] = {0, 0};

    for (int k = 0; k < 2; k++) {
        const char *start = s;
        while (*s >= '0' && *s <= '9') {
            part[k] = part[k] * 10 + (uint64_t)(*s - '0');
            if (part[k] > UINT32_MAX)
                return -1;
            s++;
        }
        if (s == start || (s - start > 1 && *start == '0'))
            return -1;
        if (k == 0 && *s++ != '.')
            return -1;
    }
    if (*s != '\0')
        return -1;
    *out = part[0] << 32 | part[1];
    return 0;
}

/* Parse Server's <appId>clearCache: any JSON; an object (e.g. {"userId":…})
 * is handed over as is, anything else as NULL. */
static lq_change *parse_clear_cache(const char *payload, size_t len, const char **reason)
{
    json_error_t jerr;
    json_t *root = json_loadb(payload, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    lq_change *ev;

    if (root == NULL) {
        *reason = "not JSON";
        return NULL;
    }
    ev = lq_xcalloc(1, sizeof(*ev));
    ev->op = LQ_CHANGE_CLEAR_CACHE;
    ev->class_name[0] = '\0';
    if (json_is_object(root))
        ev->object = root;
    else
        json_decref(root);
    return ev;
}

lq_change *lq_bus_parse(lq_bus_channel kind, const char *payload, size_t len, const char **reason)
{
    json_error_t jerr;
    json_t *root, *object, *original, *v;
    lq_change *ev = NULL;
    const char *class_name;
    int (*name_valid)(const char *) = lq_class_name_valid;

    if (len > LQ_BUS_MESSAGE_MAX) {
        *reason = "larger than 16 MiB";
        return NULL;
    }
    if (kind == LQ_BUS_PARSE_CLEAR_CACHE)
        return parse_clear_cache(payload, len, reason);
    root = json_loadb(payload, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);

    if (!json_is_object(root)) {
        *reason = root ? "not a JSON object" : "not JSON";
        goto fail;
    }
    ev = lq_xcalloc(1, sizeof(*ev));
    if (kind == LQ_BUS_OURS) {
        const char *op;
        name_valid = lq_bus_class_name_valid;
        v = json_object_get(root, "v");
        if (!json_is_integer(v) || json_integer_value(v) != 1) {
            *reason = "unsupported or missing version v";
            goto fail;
        }
        class_name = name_string(json_object_get(root, "className"));
        op = json_string_value(json_object_get(root, "op"));
        object = json_object_get(root, "object");
        original = json_object_get(root, "original");
        if (op == NULL) {
            *reason = "missing op";
            goto fail;
        } else if (strcmp(op, "create") == 0) {
            ev->op = LQ_CHANGE_CREATE;
        } else if (strcmp(op, "update") == 0) {
            ev->op = LQ_CHANGE_UPDATE;
        } else if (strcmp(op, "delete") == 0) {
            ev->op = LQ_CHANGE_DELETE;
        } else if (strcmp(op, "resync") == 0) {
            ev->op = LQ_CHANGE_RESYNC;
        } else if (strcmp(op, "schema") == 0) {
            ev->op = LQ_CHANGE_SCHEMA;
        } else {
            *reason = "op is not create, update, delete, resync or schema";
            goto fail;
        }
        if (ev->op == LQ_CHANGE_SCHEMA) { /* no seq, no epoch: not ordered with the events */
            v = json_object_get(root, "clp");
            if (!lq_bus_class_name_valid(class_name) || !(json_is_object(v) || json_is_null(v))) {
                *reason = "schema without className, or clp is not an object or null";
                goto fail;
            }
            strcpy(ev->class_name, class_name);
            ev->has_clp = 1;
            ev->clp = json_is_object(v) ? json_incref(v) : NULL;
            v = json_object_get(root, "ts");
            ev->ts_ms = json_is_integer(v) ? json_integer_value(v) : 0;
            json_decref(root);
            return ev;
        }
        v = json_object_get(root, "epoch");
        if (v && (!name_string(v) || json_string_length(v) == 0 ||
                  json_string_length(v) >= sizeof(ev->epoch))) {
            *reason = "epoch is not a string of 1 to 39 bytes";
            goto fail;
        }
        if (v)
            memcpy(ev->epoch, json_string_value(v), json_string_length(v) + 1);
        if (ev->op == LQ_CHANGE_RESYNC) {
            if (!lq_bus_class_name_valid(class_name) || !v) {
                *reason = "resync without className or epoch";
                goto fail;
            }
            strcpy(ev->class_name, class_name);
            json_decref(root);
            return ev;
        }
        v = json_object_get(root, "seq");
        if (v && (!json_is_integer(v) || json_integer_value(v) < 1)) {
            *reason = "seq is not a positive integer";
            goto fail;
        }
        ev->seq = v ? json_integer_value(v) : 0;
        v = json_object_get(root, "ts");
        if (v && !json_is_integer(v)) {
            *reason = "ts is not an integer";
            goto fail;
        }
        ev->ts_ms = v ? json_integer_value(v) : 0;
        v = json_object_get(root, "ct");
        if (v && (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v) ||
                  parse_ct(json_string_value(v), &ev->ct) != 0 || ev->ct == 0)) {
            *reason = "ct is not a cluster time \"<t>.<i>\"";
            goto fail;
        }
    } else {
        object = json_object_get(root, "currentParseObject");
        original = json_object_get(root, "originalParseObject");
        class_name = name_string(json_object_get(object, "className"));
        ev->op = kind == LQ_BUS_PARSE_DELETE ? LQ_CHANGE_DELETE
                 : original                  ? LQ_CHANGE_UPDATE
                                             : LQ_CHANGE_CREATE;
        v = json_object_get(root, "classLevelPermissions");
        if (json_is_object(v)) { /* anything else: as if absent */
            ev->clp = json_incref(v);
            ev->has_clp = 1;
        }
    }
    if (!name_valid(class_name)) {
        *reason = "missing or invalid className";
        goto fail;
    }
    strcpy(ev->class_name, class_name); /* length checked by the validator */
    if (!object_ok(object, ev->class_name)) {
        *reason = "object is missing, has no objectId, or names another class";
        goto fail;
    }
    if (original && !json_is_null(original) && ev->op == LQ_CHANGE_UPDATE) {
        if (!object_ok(original, ev->class_name)) {
            *reason = "original is not an object of the same class";
            goto fail;
        }
        ev->original = json_incref(original);
    } else if (original && !json_is_null(original) && !json_is_object(original)) {
        *reason = "original is not an object";
        goto fail;
    }
    ev->object = json_incref(object);
    json_decref(root);
    return ev;
fail:
    json_decref(root);
    lq_change_free(ev);
    return NULL;
}

/*---- queue -------------------------------------------------------------------*/

/* Appends ev; returns 1 when the queue was empty (the service thread needs a
 * wake-up, which the caller sends once per batch of replies). */
static int enqueue(lq_bus *b, lq_change *ev)
{
    int was_empty;

    pthread_mutex_lock(&b->lock);
    /* backpressure: while the service thread is this far behind, stop reading
     * Redis (Redis buffers for us, up to its pubsub output limit) */
    while (b->count >= QUEUE_MAX && !atomic_load(&b->stopping)) {
        struct timespec ts;
        pthread_mutex_unlock(&b->lock);
        b->notify(b->ud); /* the batch in progress must not wait for its own wake-up */
        pthread_mutex_lock(&b->lock);
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&b->drained, &b->lock, &ts);
    }
    was_empty = b->head == NULL;
    ev->next = NULL;
    if (b->tail)
        b->tail->next = ev;
    else
        b->head = ev;
    b->tail = ev;
    b->count++;
    pthread_mutex_unlock(&b->lock);
    return was_empty;
}

lq_change *lq_bus_take(lq_bus *b)
{
    lq_change *list;

    pthread_mutex_lock(&b->lock);
    list = b->head;
    b->head = b->tail = NULL;
    b->count = 0;
    pthread_cond_signal(&b->drained);
    pthread_mutex_unlock(&b->lock);
    return list;
}

/*---- the subscriber thread ---------------------------------------------------*/

static int serve_positions(lq_bus *b);

/* Sleeps ms, or less when asked to stop; answers position requests meanwhile
 * (Redis is unreachable then: they are told so at once, not kept waiting).
 * Returns 1 when stopping. */
static int nap(lq_bus *b, int ms)
{
    int64_t until = lq_mono_ms() + ms, left;

    while (!atomic_load(&b->stopping) && (left = until - lq_mono_ms()) > 0) {
        struct pollfd p[2] = {{b->stop_pipe[0], POLLIN, 0}, {b->req_pipe[0], POLLIN, 0}};
        if (poll(p, 2, (int)left) > 0 && p[1].revents && serve_positions(b))
            b->notify(b->ud);
    }
    return atomic_load(&b->stopping);
}

/*---- ordering, duplicates and gap repair ------------------------------------------*/

static redisContext *cmd_conn(lq_bus *b)
{
    if (b->cmd == NULL)
        b->cmd = lq_redis_open(b->cfg, 2000, 2000, NULL, 0);
    return b->cmd;
}

static void cmd_drop(lq_bus *b)
{
    if (b->cmd)
        redisFree(b->cmd);
    b->cmd = NULL;
}

/* A command reply that is not used: freed, or, when the command failed on the
 * connection (r NULL), that connection dropped so the next command opens one. */
static void reply_discard(lq_bus *b, redisReply *r)
{
    if (r == NULL)
        cmd_drop(b);
    else
        freeReplyObject(r);
}

/* Tells the class's subscribers to resubscribe; st takes the new epoch. */
static int resync(lq_bus *b, class_seq *st, const char *epoch, int64_t seq, const char *why)
{
    lq_change *ev = lq_xcalloc(1, sizeof(*ev));
    ev->op = LQ_CHANGE_RESYNC;
    strcpy(ev->class_name, st->name);
    snprintf(ev->epoch, sizeof(ev->epoch), "%s", epoch);
    LQ_WARN("events lost: the class's subscribers are told to resync", "class=%s reason=\"%s\" old_epoch=%s epoch=%s last_seq=%lld",
            st->name, why, st->epoch, epoch, (long long)st->seq);
    snprintf(st->epoch, sizeof(st->epoch), "%s", epoch);
    st->seq = seq;
    LQ_METRIC_INC(bus_resyncs);
    return enqueue(b, ev);
}

/* One entry of an XRANGE reply on a history stream (ID, [field "m", message]),
 * parsed; NULL when it is not one of our messages. */
static lq_change *stream_entry(const redisReply *e)
{
    const redisReply *f;
    const char *reason = NULL;

    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || (f = e->element[1])->type != REDIS_REPLY_ARRAY ||
        f->elements < 2 || f->element[1]->type != REDIS_REPLY_STRING)
        return NULL;
    return lq_bus_parse(LQ_BUS_OURS, f->element[1]->str, f->element[1]->len, &reason);
}

/* Queues the events after st->seq up to `to` (inclusive; INT64_MAX: all)
 * from the class's history stream. Returns 1 (wake), 0 (nothing queued), or
 * -1 when history cannot fill the gap (caller resyncs). */
static int repair(lq_bus *b, class_seq *st, int64_t to, int *wake)
{
    char from_id[32], to_id[32];
    redisContext *c = cmd_conn(b);
    redisReply *r;
    int64_t expect = st->seq + 1;

    if (c == NULL)
        return -1;
    snprintf(from_id, sizeof(from_id), "%lld-0", (long long)expect);
    if (to == INT64_MAX)
        snprintf(to_id, sizeof(to_id), "+");
    else
        snprintf(to_id, sizeof(to_id), "%lld-0", (long long)to);
    r = redisCommand(c, "XRANGE %sstream:%s %s %s", b->key_base, st->name, from_id, to_id);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        reply_discard(b, r);
        return -1;
    }
    for (size_t i = 0; i < r->elements; i++) {
        lq_change *ev = stream_entry(r->element[i]);
        if (ev == NULL || ev->seq != expect || strcmp(ev->epoch, st->epoch) != 0) {
            lq_change_free(ev);
            break;
        }
        st->seq = expect++;
        LQ_METRIC_INC(bus_gaps_repaired);
        LQ_METRIC_INC(events_in);
        *wake |= enqueue(b, ev);
    }
    freeReplyObject(r);
    return to == INT64_MAX || st->seq == to ? 0 : -1;
}

/* Orders one of our events that carries seq/epoch (or a resync): drops
 * repeats, repairs gaps from the history stream before delivering, and
 * turns lost history into a resync. Returns 1 when the service thread must
 * be woken. */
static int sequence(lq_bus *b, lq_change *ev)
{
    class_seq *st;
    int wake = 0;

    HASH_FIND_STR(b->seqs, ev->class_name, st);
    if (ev->op == LQ_CHANGE_RESYNC) {
        if (st == NULL) {
            st = lq_xcalloc(1, sizeof(*st));
            strcpy(st->name, ev->class_name);
            HASH_ADD_STR(b->seqs, name, st);
        } else if (strcmp(st->epoch, ev->epoch) == 0) {
            lq_change_free(ev); /* already resynced to this epoch */
            return 0;
        }
        LQ_WARN("publisher started a new epoch: the class's subscribers are told to resync",
                "class=%s old_epoch=%s epoch=%s", ev->class_name, st->epoch, ev->epoch);
        snprintf(st->epoch, sizeof(st->epoch), "%s", ev->epoch);
        st->seq = 0;
        LQ_METRIC_INC(bus_resyncs);
        return enqueue(b, ev);
    }
    if (st == NULL) { /* the first we hear of the class: nothing before it was promised */
        st = lq_xcalloc(1, sizeof(*st));
        strcpy(st->name, ev->class_name);
        snprintf(st->epoch, sizeof(st->epoch), "%s", ev->epoch);
        st->seq = ev->seq;
        HASH_ADD_STR(b->seqs, name, st);
        LQ_METRIC_INC(events_in);
        return enqueue(b, ev);
    }
    if (strcmp(st->epoch, ev->epoch) != 0) {
        wake |= resync(b, st, ev->epoch, ev->seq, "new epoch");
    } else if (ev->seq <= st->seq) {
        LQ_METRIC_INC(bus_duplicates_dropped);
        LQ_DEBUG("bus event dropped: seq already delivered", "class=%s seq=%lld last=%lld",
                 ev->class_name, (long long)ev->seq, (long long)st->seq);
        lq_change_free(ev);
        return 0;
    } else if (ev->seq > st->seq + 1) {
        int64_t had = st->seq;
        if (repair(b, st, ev->seq - 1, &wake) < 0)
            wake |= resync(b, st, ev->epoch, ev->seq, "gap older than the history stream");
        else
            LQ_INFO("bus gap repaired from the history stream", "class=%s from=%lld to=%lld",
                    ev->class_name, (long long)had + 1, (long long)ev->seq - 1);
    }
    st->seq = ev->seq;
    LQ_METRIC_INC(events_in);
    return wake | enqueue(b, ev);
}

/* Remembers that the gateway was handed a CLP for class_name. */
static clp_known *clp_note(lq_bus *b, const char *class_name)
{
    clp_known *k;
    HASH_FIND_STR(b->clps, class_name, k);
    if (k == NULL) {
        size_t n = strlen(class_name);
        k = lq_xcalloc(1, sizeof(*k) + n + 1);
        memcpy(k->name, class_name, n + 1);
        HASH_ADD_KEYPTR(hh, b->clps, k->name, n, k);
    }
    return k;
}

static int enqueue_schema(lq_bus *b, const char *class_name, json_t *clp /* taken */)
{
    lq_change *ev = lq_xcalloc(1, sizeof(*ev));
    ev->op = LQ_CHANGE_SCHEMA;
    snprintf(ev->class_name, sizeof(ev->class_name), "%s", class_name);
    ev->clp = clp;
    ev->has_clp = 1;
    return enqueue(b, ev);
}

/* After a (re)subscribe, before the catch-up: the gateway is handed every
 * class's CLP from the <p>schema hash the tailer keeps, and NULL for each
 * class it was handed one for before that is no longer there. Returns 1 to
 * wake. */
static int schema_sync(lq_bus *b)
{
    redisContext *c = cmd_conn(b);
    redisReply *r = c ? redisCommand(c, "HGETALL %sschema", b->key_base) : NULL;
    clp_known *k, *tmp;
    int wake = 0;
    size_t n = 0;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        LQ_WARN("cannot read the class-level permissions from redis", "key=%sschema error=\"%s\"",
                b->key_base, r ? (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply") : c ? c->errstr : "no connection");
        reply_discard(b, r);
        return 0;
    }
    HASH_ITER(hh, b->clps, k, tmp)
    {
        k->mark = 0;
    }
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        redisReply *f = r->element[i], *v = r->element[i + 1];
        json_t *clp = NULL;
        json_error_t jerr;
        if (f->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING || !lq_bus_class_name_valid(f->str)) {
            LQ_METRIC_INC(bus_messages_invalid);
            LQ_WARN("class-level permissions skipped: bad field in the schema hash", "key=%sschema", b->key_base);
            continue;
        }
        if (strcmp(v->str, "null") != 0) {
            clp = json_loadb(v->str, v->len, JSON_REJECT_DUPLICATES, &jerr);
            if (!json_is_object(clp)) {
                json_decref(clp);
                LQ_METRIC_INC(bus_messages_invalid);
                LQ_WARN("class-level permissions skipped: not a JSON object or null", "key=%sschema class=%s",
                        b->key_base, f->str);
                continue;
            }
        }
        clp_note(b, f->str)->mark = 1;
        wake |= enqueue_schema(b, f->str, clp);
        n++;
    }
    freeReplyObject(r);
    HASH_ITER(hh, b->clps, k, tmp)
    {
        if (!k->mark) { /* gone from the hash: the class has no CLP any more */
            wake |= enqueue_schema(b, k->name, NULL);
            HASH_DEL(b->clps, k);
            free(k);
            n++;
        }
    }
    LQ_DEBUG("class-level permissions read from redis", "classes=%zu", n);
    return wake;
}

/* After a reconnect: whatever was published while we were away is read from
 * the history streams, or the class resyncs. Returns 1 to wake. */
static int catch_up(lq_bus *b)
{
    class_seq *st, *tmp;
    int wake = 0;

    HASH_ITER(hh, b->seqs, st, tmp)
    {
        redisContext *c = cmd_conn(b);
        redisReply *r = c ? redisCommand(c, "HMGET %stailer:%s epoch seq", b->key_base, st->name) : NULL;
        if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
            r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING) {
            int64_t seq = strtoll(r->element[1]->str, NULL, 10);
            if (strcmp(r->element[0]->str, st->epoch) != 0)
                wake |= resync(b, st, r->element[0]->str, seq, "new epoch while disconnected");
            else if (seq > st->seq && repair(b, st, seq, &wake) < 0)
                wake |= resync(b, st, st->epoch, seq, "missed events older than the history stream");
        } else if (r == NULL) {
            cmd_drop(b);
        }
        if (r)
            freeReplyObject(r);
    }
    return wake;
}

/*---- positions: the resume extension -------------------------------------------*/

void lq_bus_position(lq_bus *b, uint64_t token, const char *class_name, const char *since_epoch,
                     int64_t since_seq)
{
    pos_req *q = lq_xcalloc(1, sizeof(*q));
    int was_empty;

    q->token = token;
    snprintf(q->class_name, sizeof(q->class_name), "%s", class_name);
    if (since_epoch) {
        q->has_since = 1;
        snprintf(q->epoch, sizeof(q->epoch), "%s", since_epoch);
        q->since_seq = since_seq;
    }
    pthread_mutex_lock(&b->lock);
    was_empty = b->reqs == NULL;
    if (b->reqs_tail)
        b->reqs_tail->next = q;
    else
        b->reqs = q;
    b->reqs_tail = q;
    pthread_mutex_unlock(&b->lock);
    if (was_empty && write(b->req_pipe[1], "r", 1) < 0) {
        /* the pipe is full: the thread has a wake-up pending anyway */
    }
}

/* Reads the events after q's position from the class's history. Returns the
 * answer to hand over. The bus thread is the only reader of the pub/sub
 * connection, so every live event it queued before this answer was published
 * before the HMGET below: its seq is at most the position returned, and every
 * later one is above it or is skipped by the subscription (registry floor).
 * reachable 0: Redis just failed for an earlier request; answer UNAVAILABLE. */
static lq_change *position_answer(lq_bus *b, const pos_req *q, int reachable)
{
    lq_change *ans = lq_xcalloc(1, sizeof(*ans)), **tail = &ans->replay;
    redisContext *c = reachable ? cmd_conn(b) : NULL;
    redisReply *r = c ? redisCommand(c, "HMGET %stailer:%s epoch seq", b->key_base, q->class_name) : NULL;
    int64_t head, expect;

    ans->op = LQ_CHANGE_POSITION;
    ans->token = q->token;
    snprintf(ans->class_name, sizeof(ans->class_name), "%s", q->class_name);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        reply_discard(b, r);
        ans->status = LQ_POSITION_UNAVAILABLE;
        return ans;
    }
    if (r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        freeReplyObject(r); /* no publisher with history for the class (yet) */
        ans->status = q->has_since ? LQ_POSITION_GONE : LQ_POSITION_OK;
        return ans;
    }
    snprintf(ans->epoch, sizeof(ans->epoch), "%s", r->element[0]->str);
    head = strtoll(r->element[1]->str, NULL, 10);
    ans->seq = head;
    freeReplyObject(r);
    if (!q->has_since)
        return ans;
    if (strcmp(ans->epoch, q->epoch) != 0 || q->since_seq > head) {
        ans->status = LQ_POSITION_GONE;
        return ans;
    }
    if (q->since_seq == head)
        return ans;
    r = redisCommand(c, "XRANGE %sstream:%s %lld-0 %lld-0", b->key_base, q->class_name,
                     (long long)q->since_seq + 1, (long long)head);
    if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
        reply_discard(b, r);
        ans->status = LQ_POSITION_UNAVAILABLE;
        return ans;
    }
    expect = q->since_seq + 1;
    for (size_t i = 0; i < r->elements; i++) {
        lq_change *ev = stream_entry(r->element[i]);
        if (ev == NULL || ev->seq != expect || strcmp(ev->epoch, ans->epoch) != 0 ||
            ev->op == LQ_CHANGE_RESYNC || ev->op == LQ_CHANGE_SCHEMA) {
            lq_change_free(ev);
            break;
        }
        expect++;
        *tail = ev;
        tail = &ev->next;
    }
    freeReplyObject(r);
    if (expect != head + 1) { /* trimmed from the capped stream */
        ans->status = LQ_POSITION_GONE;
        while (ans->replay) {
            lq_change *ev = ans->replay;
            ans->replay = ev->next;
            lq_change_free(ev);
        }
    }
    return ans;
}

/* Answers every waiting position request. Returns 1 to wake. */
static int serve_positions(lq_bus *b)
{
    char drain[64];
    pos_req *q;
    int wake = 0, down = 0;

    while (read(b->req_pipe[0], drain, sizeof(drain)) == (ssize_t)sizeof(drain)) {
    }
    for (;;) {
        pthread_mutex_lock(&b->lock);
        q = b->reqs;
        if (q) {
            b->reqs = q->next;
            if (b->reqs == NULL)
                b->reqs_tail = NULL;
        }
        pthread_mutex_unlock(&b->lock);
        if (q == NULL)
            return wake;
        /* once Redis failed, the rest of the batch is told so without waiting
         * out a connect timeout each */
        lq_change *ans = position_answer(b, q, !down);
        down |= ans->status == LQ_POSITION_UNAVAILABLE;
        LQ_DEBUG("position answered", "class=%s status=%d epoch=%s seq=%lld since=%lld", q->class_name,
                 ans->status, ans->epoch, (long long)ans->seq, (long long)q->since_seq);
        free(q);
        wake |= enqueue(b, ans);
    }
}

/* Handles one reply; returns 1 when the service thread must be woken. */
static int handle_reply(lq_bus *b, redisReply *rep)
{
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return 0; /* PONG and other replies only prove Redis is alive */
    if (strcmp(rep->element[0]->str, "subscribe") == 0) {
        if (rep->element[2]->type == REDIS_REPLY_INTEGER && rep->element[2]->integer == NCHANNELS) {
            atomic_store(&b->connected, 1);
            LQ_METRIC_SET(bus_connected, 1);
            LQ_METRIC_INC(bus_connects);
            LQ_INFO("redis subscribed", "host=%s port=%d channel=%s", b->cfg->redis_host,
                    b->cfg->redis_port, b->channels[0]);
            int wake = schema_sync(b); /* the CLPs first, then the events they govern */
            return wake | catch_up(b);
        }
        return 0;
    }
    if (strcmp(rep->element[0]->str, "message") != 0 || rep->element[1]->type != REDIS_REPLY_STRING ||
        rep->element[2]->type != REDIS_REPLY_STRING)
        return 0;
    const char *ch = rep->element[1]->str;
    lq_bus_channel kind = LQ_BUS_OURS;
    for (int i = 0; i < NCHANNELS; i++)
        if (strcmp(ch, b->channels[i]) == 0)
            kind = (lq_bus_channel)i;
    const char *reason = NULL;
    lq_change *ev = lq_bus_parse(kind, rep->element[2]->str, rep->element[2]->len, &reason);
    if (ev == NULL) {
        LQ_METRIC_INC(bus_messages_invalid);
        LQ_WARN("bus message dropped", "channel=%s reason=\"%s\" bytes=%zu", ch, reason,
                rep->element[2]->len);
        return 0;
    }
    if (ev->op == LQ_CHANGE_SCHEMA) {
        clp_note(b, ev->class_name);
        return enqueue(b, ev);
    }
    if (ev->op == LQ_CHANGE_CLEAR_CACHE)
        return enqueue(b, ev);
    if (kind == LQ_BUS_OURS && (ev->seq > 0 || ev->op == LQ_CHANGE_RESYNC))
        return sequence(b, ev);
    LQ_METRIC_INC(events_in);
    return enqueue(b, ev);
}

static int flush(redisContext *c)
{
    int done = 0;
    while (!done)
        if (redisBufferWrite(c, &done) != REDIS_OK)
            return -1;
    return 0;
}

/* One connection's life: subscribe, then read until error or stop. */
static void session(lq_bus *b, redisContext *c)
{
    int64_t last_rx = lq_mono_ms();
    int ping_out = 0;

    if (redisAppendCommand(c, "SUBSCRIBE %s %s %s %s", b->channels[0], b->channels[1],
                           b->channels[2], b->channels[3]) != REDIS_OK ||
        flush(c))
        return;
    while (!atomic_load(&b->stopping)) {
        struct pollfd p[3] = {{c->fd, POLLIN, 0}, {b->stop_pipe[0], POLLIN, 0}, {b->req_pipe[0], POLLIN, 0}};
        int n = poll(p, 3, 1000);
        int64_t now = lq_mono_ms();
        if (n < 0 && errno != EINTR)
            return;
        if (n > 0 && p[0].revents) {
            void *rep = NULL;
            int wake = 0;
            if (redisBufferRead(c) != REDIS_OK)
                return;
            last_rx = now;
            ping_out = 0;
            while (redisGetReplyFromReader(c, &rep) == REDIS_OK && rep) {
                wake |= handle_reply(b, rep);
                freeReplyObject(rep);
                rep = NULL;
            }
            if (wake) /* one wake-up per read, however many messages it carried */
                b->notify(b->ud);
            if (c->err)
                return;
        }
        /* after the replies read with it: what they queued is older than the answer */
        if (n > 0 && p[2].revents && serve_positions(b))
            b->notify(b->ud);
        if (now - last_rx > DEAD_AFTER_MS) {
            LQ_WARN("redis stopped answering", "host=%s port=%d silent_ms=%lld", b->cfg->redis_host,
                    b->cfg->redis_port, (long long)(now - last_rx));
            return;
        }
        if (now - last_rx > PING_AFTER_MS && !ping_out) {
            if (redisAppendCommand(c, "PING") != REDIS_OK || flush(c))
                return;
            ping_out = 1;
        }
    }
}

static void *bus_main(void *arg)
{
    lq_bus *b = arg;
    int backoff = BACKOFF_MIN_MS, failures = 0;

    while (!atomic_load(&b->stopping)) {
        char why[256];
        redisContext *c = lq_redis_open(b->cfg, 2000, 0, why, sizeof(why));
        if (c == NULL) {
            if (failures++ == 0 || failures % 20 == 0)
                LQ_WARN("redis unreachable, retrying", "host=%s port=%d error=\"%s\" attempts=%d",
                        b->cfg->redis_host, b->cfg->redis_port, why, failures);
            if (nap(b, backoff))
                break;
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        failures = 0;
        backoff = BACKOFF_MIN_MS;
        session(b, c);
        if (atomic_exchange(&b->connected, 0)) {
            LQ_METRIC_SET(bus_connected, 0);
            if (!atomic_load(&b->stopping))
                LQ_WARN("redis connection lost, reconnecting", "host=%s port=%d error=\"%s\"",
                        b->cfg->redis_host, b->cfg->redis_port, c->err ? c->errstr : "closed");
        }
        redisFree(c);
        cmd_drop(b); /* it went down with the subscriber connection (a restarted Redis):
                        the schema sync and catch-up after the resubscribe need a fresh one */
        if (!atomic_load(&b->stopping) && nap(b, BACKOFF_MIN_MS))
            break;
    }
    return NULL;
}

/*---- lifetime ----------------------------------------------------------------*/

static char *format(const char *a, const char *b2, const char *c)
{
    lq_buf s;
    lq_buf_init(&s);
    lq_buf_puts(&s, a);
    lq_buf_puts(&s, b2);
    lq_buf_puts(&s, c);
    return s.data;
}

lq_bus *lq_bus_new(const lq_config *cfg, lq_bus_notify_fn notify, void *ud)
{
    lq_bus *b = lq_xcalloc(1, sizeof(*b));

    b->cfg = cfg;
    b->notify = notify;
    b->ud = ud;
    b->channels[0] = format(cfg->channel_prefix, cfg->app_id, ":changes");
    b->channels[1] = format("", cfg->app_id, "afterSave");
    b->channels[2] = format("", cfg->app_id, "afterDelete");
    b->channels[3] = format("", cfg->app_id, "clearCache");
    b->key_base = format(cfg->channel_prefix, cfg->app_id, ":");
    pthread_mutex_init(&b->lock, NULL);
    pthread_cond_init(&b->drained, NULL);
    if (pipe(b->stop_pipe) != 0)
        b->stop_pipe[0] = b->stop_pipe[1] = -1;
    if (pipe(b->req_pipe) != 0) {
        b->req_pipe[0] = b->req_pipe[1] = -1;
    } else { /* the reader drains without blocking; a full pipe means a wake-up is pending */
        fcntl(b->req_pipe[0], F_SETFL, O_NONBLOCK);
        fcntl(b->req_pipe[1], F_SETFL, O_NONBLOCK);
    }
    return b;
}

int lq_bus_start(lq_bus *b)
{
    if (b->stop_pipe[0] < 0 || b->req_pipe[0] < 0 || pthread_create(&b->thread, NULL, bus_main, b) != 0)
        return LQ_ERR;
    b->started = 1;
    return LQ_OK;
}

void lq_bus_stop(lq_bus *b)
{
    if (b == NULL || !b->started)
        return;
    atomic_store(&b->stopping, 1);
    if (write(b->stop_pipe[1], "x", 1) < 0) {
        /* the thread still sees `stopping` within its poll timeout */
    }
    pthread_mutex_lock(&b->lock);
    pthread_cond_signal(&b->drained);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    b->started = 0;
}

void lq_bus_free(lq_bus *b)
{
    lq_change *ev, *next;

    if (b == NULL)
        return;
    lq_bus_stop(b);
    for (ev = lq_bus_take(b); ev; ev = next) {
        next = ev->next;
        lq_change_free(ev);
    }
    for (int i = 0; i < NCHANNELS; i++)
        free(b->channels[i]);
    free(b->key_base);
    cmd_drop(b);
    class_seq *st, *tmp;
    HASH_ITER(hh, b->seqs, st, tmp)
    {
        HASH_DEL(b->seqs, st);
        free(st);
    }
    clp_known *k, *ktmp;
    HASH_ITER(hh, b->clps, k, ktmp)
    {
        HASH_DEL(b->clps, k);
        free(k);
    }
    if (b->stop_pipe[0] >= 0) {
        close(b->stop_pipe[0]);
        close(b->stop_pipe[1]);
    }
    if (b->req_pipe[0] >= 0) {
        close(b->req_pipe[0]);
        close(b->req_pipe[1]);
    }
    while (b->reqs) {
        pos_req *q = b->reqs;
        b->reqs = q->next;
        free(q);
    }
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->drained);
    free(b);
}

int lq_bus_connected(const lq_bus *b)
{
    return atomic_load(&((lq_bus *)b)->connected);
}
