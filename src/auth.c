/*
 * auth.c - see auth.h.
 *
 * Concept. The cache maps a token to an entry whose public part is the
 * lq_session the gateway holds. Entries that some caller references are on
 * the `inuse` list; unreferenced ones are on the `lru` list (head = released
 * last), where the TTL and the size bound remove them from the tail. An entry
 * taken out of the cache while still referenced (evicted by an event, or
 * UNAVAILABLE, which is never cached) moves to the `zombies` list and is
 * freed at its last release. Internal holds (`hold`) keep an entry alive
 * across hook calls, which may release it.
 *
 * A VALID entry is linked to its user (one `user` per user id, owning one
 * reference on the user's lq_principals) and holds a reference on the
 * principals itself; the user goes away with its last VALID entry.
 *
 * Worker threads run jobs (SESSION: token -> session -> user -> roles;
 * ROLES: user -> roles) and return them, filled in, on the result queue; the
 * service thread applies results in lq_auth_poll. A result is matched to its
 * entry or user by a job sequence number, so a result for something evicted
 * or re-queried meanwhile is ignored.
 *
 * Races. Every invalidating event bumps `counter` and is recorded in a ring
 * (kind, id, counter); events that concern everything record their counter
 * in `roles_all` / `all`. A job carries the counter at the moment it was
 * queued (`stamp`); a result that an event with a higher counter concerns
 * (its session id, its token, its user, its user's roles) is discarded and
 * the job queued again, so an answer read before a change never overrides
 * the change. If the ring wrapped past the stamp, the result is re-run too.
 *
 * Thread: struct lq_auth, entries and users belong to the service thread;
 * only the job and result queues (under `qlock` / `rlock`) and the worker's
 * own stack are touched by worker threads.
 */
#include "livequery/auth.h"

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uthash.h>
#include <utlist.h>

#include "livequery/clock.h"
#include "livequery/error.h"
#include "livequery/json.h"
#include "livequery/jsonout.h"
#include "livequery/log.h"
#include "livequery/mongoconn.h"
#include "livequery/metrics.h"

#define JOB_QUEUE_MAX 65536   /* queued lookups; beyond, a lookup ends UNAVAILABLE */
#define RING_SIZE 1024        /* remembered invalidations (races) */
#define MAX_ROLES 10000       /* bound on one user's role walk */
#define SCAN_INTERVAL_MS 1000 /* expiry / revalidation scan of the sessions in use */
#define WARN_INTERVAL_MS 10000
#define MONGO_PING_MS 5000     /* with no lookup for this long, MongoDB is pinged (mongodb_connected) */

/*---- types -------------------------------------------------------------------------*/

typedef struct entry entry;
typedef struct user user;

typedef struct dlist {
    entry *head;
} dlist;

struct entry {
    lq_session s;       /* public part */
    char *token;
    int refs;           /* callers' references (lq_auth_get) */
    int hold;           /* internal references (pending hook calls) */
    int noted;          /* in a->notes */
    uint64_t job_seq;   /* the SESSION job in flight, 0: none */
    int64_t idle_since; /* refs dropped to 0 at (wall ms) */
    int64_t reval_ms;   /* VALID: next backstop re-read */
    user *u;            /* VALID: the user */
    entry *u_prev, *u_next;
    dlist *on;          /* lru, inuse or zombies */
    entry *prev, *next;
    int sid_indexed;
    UT_hash_handle hh;  /* a->tokens by token */
    UT_hash_handle hs;  /* a->sids by s.session_id */
};

struct user {
    char *uid;
    lq_principals *p;   /* one reference */
    entry *sessions;    /* VALID entries of this user */
    uint64_t roles_seq; /* ROLES job in flight, 0: none */
    int roles_want;     /* a ROLES job is needed but the queue was full */
    int rnoted;         /* p is in a->rnotes */
    UT_hash_handle hh;
};

enum { JOB_SESSION = 1, JOB_ROLES, JOB_CALL };
enum { R_NONE = 0, R_VALID, R_INVALID, R_UNAVAILABLE };

typedef struct job {
    struct job *next;
    int kind;
    uint64_t seq;
    uint64_t stamp;
    char *key;          /* token (SESSION) or user id (ROLES) */
    /* results */
    int outcome;
    const char *why;
    char *sid;          /* SESSION: the _Session objectId when found */
    char *uid;          /* SESSION: the user id when known */
    int64_t expires_ms;
    char **roles;       /* role names without "role:" */
    size_t nroles;
    /* JOB_CALL: another module's read (lq_auth_submit) */
    lq_auth_job_fn run;
    void (*drop)(void *arg);
    void *arg;
} job;

enum { RK_SESSION = 1, RK_TOKEN, RK_USER, RK_ROLES };

typedef struct ring_ent {
    uint64_t counter;
    int kind;
    char id[64];
} ring_ent;

struct lq_auth {
    const lq_config *cfg;
    lq_auth_wake_fn wake;
    void *wake_ud;
    int ttl_ms, cache_size, nthreads;
    int has_mongo;

    /* service thread */
    entry *tokens;
    entry *sids;
    user *users;
    dlist lru, inuse, zombies;
    uint64_t seq;
    uint64_t counter, roles_all, all, ring_lost;
    ring_ent ring[RING_SIZE];
    unsigned ring_pos;
    int roles_want;
    int64_t next_scan_ms;
    entry **notes;
    size_t nnotes, capnotes;
    lq_principals **rnotes;
    size_t nrnotes, caprnotes;

    /* MongoDB (read-only once started) */
    mongoc_uri_t *uri;
    mongoc_client_pool_t *pool;
    const char *db;
    char *c_session, *c_user, *c_role, *c_join_users, *c_join_roles;

    /* hand-off */
    pthread_mutex_t qlock;
    pthread_cond_t qcond;
    job *q_head, *q_tail;
    size_t q_len;
    int stopping;
    pthread_mutex_t rlock;
    job *r_head, *r_tail;
    pthread_t *threads;
    int started;
    _Atomic int64_t last_warn_ms;
    lq_mongo_pinger *pinger; /* keeps mongodb_connected real while no lookup runs */
};

/*---- small helpers -----------------------------------------------------------------*/


/* A token for logs: its first 6 characters and an ellipsis, never more. */
/* A token as logs may show it: never the token, nor a prefix of it (Parse
 * tokens are "r:" + hex), only a hash to tell log lines about one token apart. */
static const char *tok_short(char *buf, size_t cap, const char *token)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)token; *p; p++)
        h = (h ^ *p) * 16777619u;
    snprintf(buf, cap, "#%08x", h);
    return buf;
}

static void strv_free(char **v, size_t n)
{
    if (v == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void job_free(job *j)
{
    if (j == NULL)
        return;
    free(j->key);
    free(j->sid);
    free(j->uid);
    strv_free(j->roles, j->nroles);
    free(j);
}

/* Clears a job's results before it is queued again. */
static void job_reset(job *j)
{
    free(j->sid);
    free(j->uid);
    strv_free(j->roles, j->nroles);
    j->sid = j->uid = NULL;
    j->roles = NULL;
    j->nroles = 0;
    j->outcome = R_NONE;
    j->why = NULL;
    j->expires_ms = 0;
    j->next = NULL;
}

static void update_gauge(const lq_auth *a)
{
    LQ_METRIC_SET(auth_sessions, HASH_COUNT(a->tokens));
}

/*---- lists -------------------------------------------------------------------------*/

/* Lists are utlist DL lists: head->prev is the tail. */
static void dl_remove(entry *e)
{
    dlist *l = e->on;
    if (l == NULL)
        return;
    DL_DELETE(l->head, e);
    e->prev = e->next = NULL;
    e->on = NULL;
}

static void dl_push_head(dlist *l, entry *e)
{
    dl_remove(e);
    DL_PREPEND(l->head, e);
    e->on = l;
}

static entry *dl_tail(const dlist *l)
{
    return l->head ? l->head->prev : NULL;
}

/*---- the race ring -----------------------------------------------------------------*/

static void ring_add(lq_auth *a, int kind, const char *id)
{
    ring_ent *r = &a->ring[a->ring_pos % RING_SIZE];
    if (r->counter > a->ring_lost)
        a->ring_lost = r->counter;
    r->counter = ++a->counter;
    r->kind = kind;
    snprintf(r->id, sizeof(r->id), "%s", id);
    a->ring_pos++;
}

/* 1 when an event newer than stamp concerns (kind, id). */
static int ring_hit(const lq_auth *a, int kind, const char *id, uint64_t stamp)
{
    char key[64];
    if (id == NULL)
        return 0;
    snprintf(key, sizeof(key), "%s", id);
    for (size_t i = 0; i < RING_SIZE; i++) {
        const ring_ent *r = &a->ring[i];
        if (r->counter > stamp && r->kind == kind && strcmp(r->id, key) == 0)
            return 1;
    }
    return 0;
}

/* 1 when what the job read may have been changed by an event since it was queued. */
static int result_stale(const lq_auth *a, const job *j)
{
    if (j->outcome == R_UNAVAILABLE)
        return 0;
    if (a->ring_lost > j->stamp || a->all > j->stamp)
        return 1;
    if (j->kind == JOB_SESSION) {
        if (ring_hit(a, RK_TOKEN, j->key, j->stamp) || ring_hit(a, RK_SESSION, j->sid, j->stamp))
            return 1;
    }
    const char *uid = j->kind == JOB_SESSION ? j->uid : j->key;
    if (ring_hit(a, RK_USER, uid, j->stamp))
        return 1;
    if (j->outcome == R_VALID &&
        (a->roles_all > j->stamp || ring_hit(a, RK_ROLES, uid, j->stamp)))
        return 1;
    return 0;
}

/*---- hand-off queues ---------------------------------------------------------------*/

/* Queues j (stamped now). 0, or -1 when the queue is full (j not taken). */
static int enqueue(lq_auth *a, job *j)
{
    j->stamp = a->counter;
    j->next = NULL;
    pthread_mutex_lock(&a->qlock);
    if (a->q_len >= JOB_QUEUE_MAX) {
        pthread_mutex_unlock(&a->qlock);
        return -1;
    }
    if (a->q_tail)
        a->q_tail->next = j;
    else
        a->q_head = j;
    a->q_tail = j;
    a->q_len++;
    pthread_cond_signal(&a->qcond);
    pthread_mutex_unlock(&a->qlock);
    return 0;
}

static void push_result(lq_auth *a, job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&a->rlock);
    if (a->r_tail)
        a->r_tail->next = j;
    else
        a->r_head = j;
    a->r_tail = j;
    pthread_mutex_unlock(&a->rlock);
    if (a->wake)
        a->wake(a->wake_ud);
}

/*---- MongoDB side (worker threads) -------------------------------------------------*/

static void warn_mongo(lq_auth *a, const char *what, const bson_error_t *err)
{
    int64_t now = lq_wall_ms(), last = atomic_load(&a->last_warn_ms);
    LQ_METRIC_INC(auth_lookup_errors);
    if (now - last >= WARN_INTERVAL_MS && atomic_compare_exchange_strong(&a->last_warn_ms, &last, now))
        LQ_WARN("auth cannot read MongoDB; the lookup is UNAVAILABLE", "what=%s code=%u error=\"%s\"",
                what, err->code, err->message);
}

/* An _id (string or ObjectId) as a new string, or NULL. */
static char *id_text(const bson_iter_t *it)
{
    if (BSON_ITER_HOLDS_UTF8(it))
        return lq_xstrdup(bson_iter_utf8(it, NULL));
    if (BSON_ITER_HOLDS_OID(it)) {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(it), hex);
        return lq_xstrdup(hex);
    }
    return NULL;
}

/* A date field (BSON date, or an ISO string) in ms; 0 when absent. */
static int64_t date_field(const bson_t *doc, const char *key)
{
    bson_iter_t it;
    if (!bson_iter_init_find(&it, doc, key))
        return 0;
    if (BSON_ITER_HOLDS_DATE_TIME(&it)) {
        int64_t ms = bson_iter_date_time(&it);
        return ms == 0 ? 1 : ms; /* the epoch itself is "long expired", not "never" */
    }
    if (BSON_ITER_HOLDS_UTF8(&it)) {
        int64_t ms;
        if (lq_iso_to_ms(bson_iter_utf8(&it, NULL), &ms) == 0)
            return ms == 0 ? 1 : ms;
    }
    return 0;
}

/* Finds documents; calls fn(doc, ud) for each. 0, or -1 after warning. */
static int find_each(lq_auth *a, mongoc_client_t *client, const char *coll_name, const bson_t *filter,
                     const bson_t *opts, void (*fn)(const bson_t *doc, void *ud), void *ud)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(client, a->db, coll_name);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, opts, NULL);
    const bson_t *doc;
    bson_error_t error;
    int rc = 0;
    while (mongoc_cursor_next(cur, &doc))
        fn(doc, ud);
    if (mongoc_cursor_error(cur, &error)) {
        warn_mongo(a, coll_name, &error);
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    return rc;
}

/* A set of strings (role ids). */
typedef struct idn {
    UT_hash_handle hh;
    char s[];
} idn;

static int idset_add(idn **set, const char *s)
{
    idn *n;
    HASH_FIND_STR(*set, s, n);
    if (n)
        return 0;
    size_t len = strlen(s);
    n = lq_xcalloc(1, sizeof(*n) + len + 1);
    memcpy(n->s, s, len + 1);
    HASH_ADD_STR(*set, s, n);
    return 1;
}

static void idset_free(idn **set)
{
    idn *n, *tmp;
    HASH_ITER(hh, *set, n, tmp) {
        HASH_DEL(*set, n);
        free(n);
    }
}

typedef struct strv {
    char **v;
    size_t n, cap;
} strv;

static void strv_push(strv *sv, const char *s)
{
    if (sv->n == sv->cap) {
        sv->cap = sv->cap ? sv->cap * 2 : 8;
        sv->v = lq_xrealloc(sv->v, sv->cap * sizeof(char *));
    }
    sv->v[sv->n++] = lq_xstrdup(s);
}

typedef struct walk {
    idn **seen;  /* every role id met */
    strv *next;  /* newly met ids */
    strv *ids;   /* _Role docs found: ids */
    strv *names; /* and names */
} walk;

/* A _Join row: its owningId, if new, into next. */
static void on_join_row(const bson_t *doc, void *ud)
{
    walk *w = ud;
    bson_iter_t it;
    if (bson_iter_init_find(&it, doc, "owningId") && BSON_ITER_HOLDS_UTF8(&it)) {
        const char *id = bson_iter_utf8(&it, NULL);
        if (idset_add(w->seen, id))
            strv_push(w->next, id);
    }
}

/* A _Role doc: its id and name. */
static void on_role_doc(const bson_t *doc, void *ud)
{
    walk *w = ud;
    bson_iter_t it;
    char *id = NULL;
    if (bson_iter_init_find(&it, doc, "_id"))
        id = id_text(&it);
    if (id == NULL)
        return;
    strv_push(w->ids, id);
    free(id);
    if (bson_iter_init_find(&it, doc, "name") && BSON_ITER_HOLDS_UTF8(&it))
        strv_push(w->names, bson_iter_utf8(&it, NULL));
}

static void append_in(bson_t *filter, const char *field, const strv *ids)
{
    bson_t cond, arr;
    char kbuf[16];
    const char *key;
    BSON_APPEND_DOCUMENT_BEGIN(filter, field, &cond);
    BSON_APPEND_ARRAY_BEGIN(&cond, "$in", &arr);
    for (size_t i = 0; i < ids->n; i++) {
        bson_uint32_to_string((uint32_t)i, &key, kbuf, sizeof(kbuf));
        bson_append_utf8(&arr, key, -1, ids->v[i], -1);
    }
    bson_append_array_end(&cond, &arr);
    bson_append_document_end(filter, &cond);
}

static void strv_clear(strv *sv)
{
    strv_free(sv->v, sv->n);
    memset(sv, 0, sizeof(*sv));
}

/* The user's role names, inherited ones included (parse-mongo-storage.md §2):
 * direct roles through _Join:users:_Role, then parents through
 * _Join:roles:_Role (owningId = parent of relatedId) until nothing new. Only
 * existing _Role docs contribute and lead on. 0, or -1 (MongoDB failed). */
static int load_roles(lq_auth *a, mongoc_client_t *client, const char *uid, job *j)
{
    idn *seen = NULL;
    strv next = {0}, ids = {0}, names = {0}, frontier = {0};
    walk w = {&seen, &next, &ids, &names};
    bson_t filter, opts = BSON_INITIALIZER, ropts = BSON_INITIALIZER, proj;
    int rc = 0;

    LQ_METRIC_INC(auth_role_loads);
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "owningId", 1);
    bson_append_document_end(&opts, &proj);
    BSON_APPEND_DOCUMENT_BEGIN(&ropts, "projection", &proj);
    BSON_APPEND_INT32(&proj, "_id", 1);
    BSON_APPEND_INT32(&proj, "name", 1);
    bson_append_document_end(&ropts, &proj);

    bson_init(&filter);
    BSON_APPEND_UTF8(&filter, "relatedId", uid);
    rc = find_each(a, client, a->c_join_users, &filter, &opts, on_join_row, &w);
    bson_destroy(&filter);

    while (rc == 0 && next.n > 0) {
        /* next: role ids not met before; keep those that exist */
        bson_init(&filter);
        append_in(&filter, "_id", &next);
        rc = find_each(a, client, a->c_role, &filter, &ropts, on_role_doc, &w);
        bson_destroy(&filter);
        strv_clear(&next);
        if (rc != 0 || ids.n == 0)
            break;
        if (HASH_COUNT(seen) >= MAX_ROLES) {
            LQ_WARN("auth stops a role walk: too many roles", "user=%s limit=%d", uid, MAX_ROLES);
            break;
        }
        /* their parents */
        strv_clear(&frontier);
        frontier = ids;
        memset(&ids, 0, sizeof(ids));
        bson_init(&filter);
        append_in(&filter, "relatedId", &frontier);
        rc = find_each(a, client, a->c_join_roles, &filter, &opts, on_join_row, &w);
        bson_destroy(&filter);
    }
    if (rc == 0) {
        j->roles = names.v;
        j->nroles = names.n;
        memset(&names, 0, sizeof(names));
    }
    strv_clear(&names);
    strv_clear(&ids);
    strv_clear(&next);
    strv_clear(&frontier);
    idset_free(&seen);
    bson_destroy(&opts);
    bson_destroy(&ropts);
    return rc;
}

/* The first document matching filter, copied into *out. 1 found, 0 none, -1 error. */
static int find_one(lq_auth *a, mongoc_client_t *client, const char *coll_name, const bson_t *filter,
                    const bson_t *projection, bson_t **out)
{
    bson_t opts = BSON_INITIALIZER;
    BSON_APPEND_INT64(&opts, "limit", 1);
    BSON_APPEND_BOOL(&opts, "singleBatch", true);
    BSON_APPEND_DOCUMENT(&opts, "projection", projection);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, a->db, coll_name);
    mongoc_cursor_t *cur = mongoc_collection_find_with_opts(coll, filter, &opts, NULL);
    const bson_t *doc;
    bson_error_t error;
    int rc = 0;
    *out = NULL;
    if (mongoc_cursor_next(cur, &doc)) {
        *out = bson_copy(doc);
        rc = 1;
    } else if (mongoc_cursor_error(cur, &error)) {
        warn_mongo(a, coll_name, &error);
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    bson_destroy(&opts);
    return rc;
}

static void settle(job *j, int outcome, const char *why)
{
    j->outcome = outcome;
    j->why = why;
}

/* Settles j from a find_one result when it found nothing (rc 0: invalid,
 * `missing`) or failed (rc < 0: unavailable). 1 when a document was found. */
static int found(job *j, int rc, const char *missing)
{
    if (rc < 0)
        settle(j, R_UNAVAILABLE, "MongoDB unavailable");
    else if (rc == 0)
        settle(j, R_INVALID, missing);
    return rc > 0;
}

static void run_session(lq_auth *a, mongoc_client_t *client, job *j)
{
    bson_t filter, proj;
    bson_t *doc = NULL;
    bson_iter_t it;
    int rc;

    LQ_METRIC_INC(auth_lookups);
    bson_init(&filter);
    BSON_APPEND_UTF8(&filter, "_session_token", j->key);
    bson_init(&proj);
    BSON_APPEND_INT32(&proj, "_id", 1);
    BSON_APPEND_INT32(&proj, "_p_user", 1);
    BSON_APPEND_INT32(&proj, "expiresAt", 1);
    BSON_APPEND_INT32(&proj, "_expiresAt", 1);
    rc = find_one(a, client, a->c_session, &filter, &proj, &doc);
    bson_destroy(&filter);
    bson_destroy(&proj);
    if (!found(j, rc, "not found"))
        return;
    if (bson_iter_init_find(&it, doc, "_id"))
        j->sid = id_text(&it);
    if (bson_iter_init_find(&it, doc, "_p_user") && BSON_ITER_HOLDS_UTF8(&it)) {
        const char *p = bson_iter_utf8(&it, NULL);
        if (strncmp(p, "_User$", 6) == 0 && p[6] != '\0')
            j->uid = lq_xstrdup(p + 6);
    }
    j->expires_ms = date_field(doc, "expiresAt");
    if (j->expires_ms == 0)
        j->expires_ms = date_field(doc, "_expiresAt");
    bson_destroy(doc);
    if (j->uid == NULL) {
        settle(j, R_INVALID, "no user");
        return;
    }
    if (j->expires_ms != 0 && j->expires_ms <= lq_wall_ms()) {
        settle(j, R_INVALID, "expired");
        return;
    }
    bson_init(&filter);
    BSON_APPEND_UTF8(&filter, "_id", j->uid);
    bson_init(&proj);
    BSON_APPEND_INT32(&proj, "_id", 1);
    rc = find_one(a, client, a->c_user, &filter, &proj, &doc);
    bson_destroy(&filter);
    bson_destroy(&proj);
    if (doc)
        bson_destroy(doc);
    if (!found(j, rc, "user missing"))
        return;
    if (load_roles(a, client, j->uid, j) < 0) {
        settle(j, R_UNAVAILABLE, "MongoDB unavailable");
        return;
    }
    j->outcome = R_VALID;
}

static void *worker_main(void *arg)
{
    lq_auth *a = arg;
    mongoc_client_t *client = mongoc_client_pool_pop(a->pool);
    for (;;) {
        pthread_mutex_lock(&a->qlock);
        while (a->q_head == NULL && !a->stopping)
            pthread_cond_wait(&a->qcond, &a->qlock);
        if (a->stopping) {
            pthread_mutex_unlock(&a->qlock);
            break;
        }
        job *j = a->q_head;
        a->q_head = j->next;
        if (a->q_head == NULL)
            a->q_tail = NULL;
        a->q_len--;
        pthread_mutex_unlock(&a->qlock);

        if (j->kind == JOB_CALL) {
            j->run(j->arg, client, a->db);
        } else if (j->kind == JOB_SESSION) {
            run_session(a, client, j);
        } else if (load_roles(a, client, j->key, j) < 0) {
            settle(j, R_UNAVAILABLE, "MongoDB unavailable");
        } else {
            j->outcome = R_VALID;
        }
        if (j->kind != JOB_CALL) /* a call reports on its own (lq_mongo_note) */
            lq_mongo_note(j->outcome != R_UNAVAILABLE); /* mongodb_connected, /ready */
        push_result(a, j);
    }
    mongoc_client_pool_push(a->pool, client);
    return NULL;
}

/*---- entries and users (service thread) -------------------------------------------*/

static void note_session(lq_auth *a, entry *e)
{
    if (e->refs == 0 || e->noted)
        return;
    if (a->nnotes == a->capnotes) {
        a->capnotes = a->capnotes ? a->capnotes * 2 : 16;
        a->notes = lq_xrealloc(a->notes, a->capnotes * sizeof(*a->notes));
    }
    e->noted = 1;
    e->hold++;
    a->notes[a->nnotes++] = e;
}

static int user_live(const user *u)
{
    for (const entry *e = u->sessions; e; e = e->u_next)
        if (e->refs > 0)
            return 1;
    return 0;
}

static void note_roles(lq_auth *a, user *u)
{
    if (u->rnoted)
        return;
    if (a->nrnotes == a->caprnotes) {
        a->caprnotes = a->caprnotes ? a->caprnotes * 2 : 16;
        a->rnotes = lq_xrealloc(a->rnotes, a->caprnotes * sizeof(*a->rnotes));
    }
    u->rnoted = 1;
    a->rnotes[a->nrnotes++] = lq_principals_ref(u->p);
}

/* Sets u's roles; notes the change for roles_changed when u is live. */
static void user_set_roles(lq_auth *a, user *u, char **names, size_t n)
{
    if (lq_principals_set_roles(u->p, (const char *const *)names, n) == 1 && user_live(u)) {
        LQ_METRIC_INC(auth_role_changes);
        note_roles(a, u);
    }
}

static user *user_get(lq_auth *a, const char *uid, int create)
{
    user *u;
    HASH_FIND_STR(a->users, uid, u);
    if (u || !create)
        return u;
    u = lq_xcalloc(1, sizeof(*u));
    u->uid = lq_xstrdup(uid);
    u->p = lq_principals_new_user(uid);
    HASH_ADD_KEYPTR(hh, a->users, u->uid, strlen(u->uid), u);
    return u;
}

static void user_free(lq_auth *a, user *u)
{
    if (u->roles_want)
        a->roles_want--;
    HASH_DEL(a->users, u);
    lq_principals_unref(u->p);
    free(u->uid);
    free(u);
}

static void link_user(entry *e, user *u)
{
    e->u = u;
    DL_PREPEND2(u->sessions, e, u_prev, u_next);
    e->s.who = lq_principals_ref(u->p);
}

static void unlink_user(lq_auth *a, entry *e)
{
    user *u = e->u;
    if (u == NULL)
        return;
    DL_DELETE2(u->sessions, e, u_prev, u_next);
    e->u = NULL;
    e->u_prev = e->u_next = NULL;
    lq_principals_unref(e->s.who);
    e->s.who = NULL;
    if (u->sessions == NULL)
        user_free(a, u);
}

static void sid_index(lq_auth *a, entry *e)
{
    entry *other;
    if (e->s.session_id[0] == '\0' || e->sid_indexed || e->on == &a->zombies)
        return;
    HASH_FIND(hs, a->sids, e->s.session_id, strlen(e->s.session_id), other);
    if (other) {
        HASH_DELETE(hs, a->sids, other);
        other->sid_indexed = 0;
    }
    HASH_ADD(hs, a->sids, s.session_id[0], strlen(e->s.session_id), e);
    e->sid_indexed = 1;
}

static entry *sid_find(lq_auth *a, const char *sid)
{
    char key[64];
    entry *e;
    snprintf(key, sizeof(key), "%s", sid);
    HASH_FIND(hs, a->sids, key, strlen(key), e);
    return e;
}

static void entry_free(entry *e)
{
    free(e->token);
    free(e);
}

static void maybe_free(lq_auth *a, entry *e)
{
    if (e->on == &a->zombies && e->refs == 0 && e->hold == 0) {
        dl_remove(e);
        entry_free(e);
    }
}

/* Takes e out of the cache: the next lq_auth_get of its token starts afresh.
 * Freed now unless referenced or held. */
static void detach(lq_auth *a, entry *e)
{
    if (e->on == &a->zombies)
        return;
    HASH_DELETE(hh, a->tokens, e);
    if (e->sid_indexed) {
        HASH_DELETE(hs, a->sids, e);
        e->sid_indexed = 0;
    }
    e->job_seq = 0;
    if (e->s.state == LQ_SESSION_VALID && e->refs == 0)
        unlink_user(a, e);
    dl_push_head(&a->zombies, e);
    maybe_free(a, e);
    update_gauge(a);
}

/* VALID -> INVALID (why), with the hook for a referenced session. */
static void make_invalid(lq_auth *a, entry *e, const char *why)
{
    if (e->s.state != LQ_SESSION_VALID)
        return;
    unlink_user(a, e);
    e->s.state = LQ_SESSION_INVALID;
    e->s.why = why;
    e->job_seq = 0;
    LQ_METRIC_INC(auth_tokens_invalid);
    if (e->refs > 0)
        LQ_METRIC_INC(auth_sessions_revoked);
    note_session(a, e);
}

/* Starts a SESSION job for e. 0, or -1 when the queue is full. */
static int start_session_job(lq_auth *a, entry *e)
{
    job *j = lq_xcalloc(1, sizeof(*j));
    j->kind = JOB_SESSION;
    j->seq = ++a->seq;
    j->key = lq_xstrdup(e->token);
    if (enqueue(a, j) < 0) {
        job_free(j);
        return -1;
    }
    e->job_seq = j->seq;
    return 0;
}

/* A new lookup for a PENDING entry; a full queue makes it UNAVAILABLE at the
 * next poll (a result is pushed as if a worker had answered). */
static void start_lookup(lq_auth *a, entry *e)
{
    e->s.state = LQ_SESSION_PENDING;
    e->s.why = NULL;
    if (start_session_job(a, e) == 0)
        return;
    job *j = lq_xcalloc(1, sizeof(*j));
    j->kind = JOB_SESSION;
    j->seq = e->job_seq = ++a->seq;
    j->key = lq_xstrdup(e->token);
    settle(j, R_UNAVAILABLE, "lookup queue full");
    LQ_WARN("auth lookup queue full", "max=%d", JOB_QUEUE_MAX);
    push_result(a, j);
}

static void start_roles(lq_auth *a, user *u)
{
    if (u->roles_seq != 0)
        return; /* the one in flight is re-run if stale */
    job *j = lq_xcalloc(1, sizeof(*j));
    j->kind = JOB_ROLES;
    j->seq = ++a->seq;
    j->key = lq_xstrdup(u->uid);
    if (enqueue(a, j) < 0) {
        job_free(j);
        if (!u->roles_want)
            a->roles_want++;
        u->roles_want = 1;
        return;
    }
    if (u->roles_want) {
        u->roles_want = 0;
        a->roles_want--;
    }
    u->roles_seq = j->seq;
}

/* u's roles may have changed: re-read them if u is live; otherwise its
 * (unreferenced) sessions simply leave the cache. */
static void roles_changed_for(lq_auth *a, user *u)
{
    if (user_live(u)) {
        start_roles(a, u);
        return;
    }
    entry *e = u->sessions, *next;
    while (e) { /* the last detach frees u */
        next = e->u_next;
        detach(a, e);
        e = next;
    }
}

static void roles_changed_all(lq_auth *a)
{
    user *u, *tmp;
    a->roles_all = ++a->counter;
    HASH_ITER(hh, a->users, u, tmp) {
        roles_changed_for(a, u);
    }
}

/*---- results (service thread) ------------------------------------------------------*/

static void apply_session(lq_auth *a, job *j, int64_t now)
{
    entry *e;
    char tb[32];
    HASH_FIND_STR(a->tokens, j->key, e);
    if (e == NULL || e->job_seq != j->seq)
        return;
    int reval = e->s.state == LQ_SESSION_VALID;
    if (!reval && e->s.state != LQ_SESSION_PENDING) {
        e->job_seq = 0;
        return;
    }
    e->job_seq = 0;
    if (j->outcome == R_UNAVAILABLE) {
        if (reval)
            return; /* a session in use stays VALID through an outage */
        e->s.state = LQ_SESSION_UNAVAILABLE;
        e->s.why = j->why;
        note_session(a, e);
        detach(a, e); /* never cached */
        return;
    }
    if (j->outcome == R_INVALID) {
        LQ_DEBUG("auth session invalid", "token=%s why=\"%s\"", tok_short(tb, sizeof(tb), e->token), j->why);
        if (reval) {
            make_invalid(a, e, j->why);
            return;
        }
        if (j->sid)
            snprintf(e->s.session_id, sizeof(e->s.session_id), "%s", j->sid);
        e->s.state = LQ_SESSION_INVALID;
        e->s.why = j->why;
        e->s.expires_ms = j->expires_ms;
        sid_index(a, e);
        LQ_METRIC_INC(auth_tokens_invalid);
        note_session(a, e);
        return;
    }
    /* VALID */
    if (reval) {
        if (strcmp(e->u->uid, j->uid) != 0) {
            make_invalid(a, e, "revoked");
            detach(a, e);
            return;
        }
        e->s.expires_ms = j->expires_ms;
        user_set_roles(a, e->u, j->roles, j->nroles);
    } else {
        user *u = user_get(a, j->uid, 1);
        int fresh = u->sessions == NULL;
        if (fresh)
            lq_principals_set_roles(u->p, (const char *const *)j->roles, j->nroles);
        else
            user_set_roles(a, u, j->roles, j->nroles);
        snprintf(e->s.session_id, sizeof(e->s.session_id), "%s", j->sid ? j->sid : "");
        e->s.expires_ms = j->expires_ms;
        e->s.state = LQ_SESSION_VALID;
        e->s.why = NULL;
        link_user(e, u);
        sid_index(a, e);
        if (a->cfg->auth_revalidate_s > 0)
            e->reval_ms = now + (int64_t)a->cfg->auth_revalidate_s * 1000;
        note_session(a, e);
    }
    if (e->s.expires_ms != 0 && e->s.expires_ms < a->next_scan_ms)
        a->next_scan_ms = e->s.expires_ms;
}

static void apply_roles(lq_auth *a, job *j)
{
    user *u;
    HASH_FIND_STR(a->users, j->key, u);
    if (u == NULL || u->roles_seq != j->seq)
        return;
    u->roles_seq = 0;
    if (j->outcome == R_VALID)
        user_set_roles(a, u, j->roles, j->nroles);
    /* UNAVAILABLE: the user keeps its roles; the backstop re-reads them */
}

static void apply_result(lq_auth *a, job *j, int64_t now)
{
    if (result_stale(a, j)) {
        /* discard and run again, if still wanted */
        entry *e = NULL;
        user *u = NULL;
        if (j->kind == JOB_SESSION)
            HASH_FIND_STR(a->tokens, j->key, e);
        else
            HASH_FIND_STR(a->users, j->key, u);
        if ((e && e->job_seq == j->seq) || (u && u->roles_seq == j->seq)) {
            job_reset(j);
            if (enqueue(a, j) == 0)
                return;
            settle(j, R_UNAVAILABLE, "lookup queue full");
            /* falls through: an UNAVAILABLE result never overrides a change */
        } else {
            job_free(j);
            return;
        }
    }
    if (j->kind == JOB_SESSION)
        apply_session(a, j, now);
    else
        apply_roles(a, j);
    job_free(j);
}

/*---- public API --------------------------------------------------------------------*/

lq_auth *lq_auth_new(const lq_config *cfg, lq_auth_wake_fn wake, void *wake_ud)
{
    lq_auth *a = lq_xcalloc(1, sizeof(*a));
    a->cfg = cfg;
    a->wake = wake;
    a->wake_ud = wake_ud;
    a->ttl_ms = cfg->auth_cache_ttl_ms > 0 ? cfg->auth_cache_ttl_ms : 30000;
    a->cache_size = cfg->auth_cache_size > 0 ? cfg->auth_cache_size : 100000;
    a->nthreads = cfg->auth_threads > 0 ? cfg->auth_threads : 1;
    a->has_mongo = cfg->mongodb_uri != NULL && cfg->mongodb_uri[0] != '\0';
    pthread_mutex_init(&a->qlock, NULL);
    pthread_cond_init(&a->qcond, NULL);
    pthread_mutex_init(&a->rlock, NULL);
    return a;
}

int lq_auth_start(lq_auth *a)
{
    const lq_config *cfg = a->cfg;
    if (!a->has_mongo || a->started)
        return LQ_OK;
    /* a lookup waits at most the server selection timeout before it ends UNAVAILABLE */
    a->pool = lq_mongo_pool_new(cfg->mongodb_uri, "livequeryd-auth", 10000, &a->uri, &a->db);
    if (a->pool == NULL)
        return LQ_ERR;
    /* each thread holds one client for good: never more threads than clients */
    int32_t max_pool = mongoc_uri_get_option_as_int32(a->uri, MONGOC_URI_MAXPOOLSIZE, 100);
    if (max_pool > 0 && a->nthreads > max_pool)
        a->nthreads = max_pool;
    const char *prefix = cfg->collection_prefix ? cfg->collection_prefix : "";
    a->c_session = lq_xconcat(prefix, "_Session", "");
    a->c_user = lq_xconcat(prefix, "_User", "");
    a->c_role = lq_xconcat(prefix, "_Role", "");
    a->c_join_users = lq_xconcat(prefix, "_Join:users:_Role", "");
    a->c_join_roles = lq_xconcat(prefix, "_Join:roles:_Role", "");
    a->threads = lq_xcalloc((size_t)a->nthreads, sizeof(pthread_t));
    for (int i = 0; i < a->nthreads; i++) {
        if (pthread_create(&a->threads[i], NULL, worker_main, a) != 0) {
            LQ_ERROR("cannot start an auth thread", NULL);
            a->nthreads = i;
            a->started = 1;
            return LQ_ERR;
        }
    }
    a->started = 1;
    a->pinger = lq_mongo_pinger_start(cfg->mongodb_uri, MONGO_PING_MS);
    LQ_INFO("auth started", "db=%s threads=%d cache_size=%d cache_ttl_ms=%d revalidate_s=%d", a->db,
            a->nthreads, a->cache_size, a->ttl_ms, cfg->auth_revalidate_s);
    return LQ_OK;
}

static void free_list(lq_auth *a, dlist *l)
{
    entry *e = l->head, *next;
    while (e) {
        next = e->next;
        if (e->u)
            unlink_user(a, e);
        lq_principals_unref(e->s.who);
        entry_free(e);
        e = next;
    }
    l->head = NULL;
}

static void free_jobs(job *j)
{
    while (j) {
        job *next = j->next;
        if (j->kind == JOB_CALL && j->drop)
            j->drop(j->arg); /* never handed back */
        job_free(j);
        j = next;
    }
}

void lq_auth_free(lq_auth *a)
{
    if (a == NULL)
        return;
    if (a->started) {
        pthread_mutex_lock(&a->qlock);
        a->stopping = 1;
        pthread_cond_broadcast(&a->qcond);
        pthread_mutex_unlock(&a->qlock);
        for (int i = 0; i < a->nthreads; i++)
            pthread_join(a->threads[i], NULL);
    }
    lq_mongo_pinger_stop(a->pinger);
    free_jobs(a->q_head);
    free_jobs(a->r_head);
    for (size_t i = 0; i < a->nrnotes; i++)
        lq_principals_unref(a->rnotes[i]);
    free(a->rnotes);
    free(a->notes);
    HASH_CLEAR(hh, a->tokens);
    HASH_CLEAR(hs, a->sids);
    free_list(a, &a->lru);
    free_list(a, &a->inuse);
    free_list(a, &a->zombies);
    user *u, *tmp;
    HASH_ITER(hh, a->users, u, tmp) {
        user_free(a, u);
    }
    if (a->pool)
        mongoc_client_pool_destroy(a->pool);
    if (a->uri)
        mongoc_uri_destroy(a->uri);
    free(a->c_session);
    free(a->c_user);
    free(a->c_role);
    free(a->c_join_users);
    free(a->c_join_roles);
    free(a->threads);
    pthread_mutex_destroy(&a->qlock);
    pthread_cond_destroy(&a->qcond);
    pthread_mutex_destroy(&a->rlock);
    free(a);
    LQ_METRIC_SET(auth_sessions, 0);
}

/* Drops unreferenced entries past their TTL, and beyond the size bound. */
static void sweep(lq_auth *a, int64_t now)
{
    while (dl_tail(&a->lru) && (dl_tail(&a->lru)->idle_since + a->ttl_ms <= now ||
                           HASH_COUNT(a->tokens) > (unsigned)a->cache_size))
        detach(a, dl_tail(&a->lru));
}

lq_session *lq_auth_get(lq_auth *a, const char *token)
{
    int64_t now = lq_wall_ms();
    entry *e;
    HASH_FIND_STR(a->tokens, token, e);
    if (e && e->refs == 0 && e->idle_since + a->ttl_ms <= now) {
        detach(a, e); /* stale: look it up again */
        e = NULL;
    }
    if (e) {
        if (e->s.state == LQ_SESSION_VALID && e->refs == 0 && e->s.expires_ms != 0 &&
            e->s.expires_ms <= now)
            make_invalid(a, e, "expired");
        LQ_METRIC_INC(auth_cache_hits);
        if (e->refs++ == 0)
            dl_push_head(&a->inuse, e);
        return &e->s;
    }
    e = lq_xcalloc(1, sizeof(*e));
    e->token = lq_xstrdup(token);
    e->refs = 1;
    HASH_ADD_KEYPTR(hh, a->tokens, e->token, strlen(e->token), e);
    dl_push_head(&a->inuse, e);
    if (!a->has_mongo) {
        e->s.state = LQ_SESSION_INVALID;
        e->s.why = "no MongoDB configured";
        LQ_METRIC_INC(auth_tokens_invalid);
    } else {
        start_lookup(a, e);
    }
    sweep(a, now);
    update_gauge(a);
    return &e->s;
}

/* Drops a caller's reference; 1 when e went to the lru list (0: still in
 * use, or a detached entry, which may be freed). */
static int release_entry(lq_auth *a, entry *e, int64_t now)
{
    if (--e->refs > 0)
        return 0;
    if (e->on == &a->zombies) {
        if (e->s.state == LQ_SESSION_VALID)
            unlink_user(a, e);
        maybe_free(a, e);
        return 0;
    }
    e->idle_since = now;
    dl_push_head(&a->lru, e);
    return 1;
}

void lq_auth_release(lq_auth *a, lq_session *s)
{
    if (a == NULL || s == NULL)
        return;
    entry *e = (entry *)s;
    int64_t now = lq_wall_ms();
    if (release_entry(a, e, now))
        sweep(a, now);
}

/* Expiry and the revalidation backstop for the sessions in use. */
static void scan(lq_auth *a, int64_t now)
{
    int64_t next = now + SCAN_INTERVAL_MS;
    int reval_ms = a->cfg->auth_revalidate_s > 0 ? a->cfg->auth_revalidate_s * 1000 : 0;
    for (entry *e = a->inuse.head; e; e = e->next) {
        if (e->s.state != LQ_SESSION_VALID)
            continue;
        if (e->s.expires_ms != 0 && e->s.expires_ms <= now) {
            make_invalid(a, e, "expired");
            continue;
        }
        if (e->s.expires_ms != 0 && e->s.expires_ms < next)
            next = e->s.expires_ms;
        if (reval_ms > 0 && e->reval_ms <= now) {
            e->reval_ms = now + reval_ms;
            if (e->job_seq == 0)
                start_session_job(a, e); /* queue full: next period */
        }
    }
    a->next_scan_ms = next;
}

void lq_auth_poll(lq_auth *a, int64_t now_ms, const lq_auth_hooks *hooks, void *ud)
{
    job *j;
    pthread_mutex_lock(&a->rlock);
    j = a->r_head;
    a->r_head = a->r_tail = NULL;
    pthread_mutex_unlock(&a->rlock);
    job *calls = NULL, **calls_tail = &calls;
    while (j) {
        job *next = j->next;
        if (j->kind == JOB_CALL) { /* handed back with the hooks, below */
            j->next = NULL;
            *calls_tail = j;
            calls_tail = &j->next;
        } else {
            apply_result(a, j, now_ms);
        }
        j = next;
    }
    if (a->roles_want > 0) {
        user *u, *tmp;
        HASH_ITER(hh, a->users, u, tmp) {
            if (u->roles_want)
                start_roles(a, u);
        }
    }
    if (now_ms >= a->next_scan_ms)
        scan(a, now_ms);
    sweep(a, now_ms);

    /* hooks last: they may call lq_auth_get / lq_auth_release */
    while (a->nnotes > 0 || a->nrnotes > 0) {
        size_t nn = a->nnotes, nr = a->nrnotes;
        entry **notes = a->notes;
        lq_principals **rnotes = a->rnotes;
        a->notes = NULL;
        a->rnotes = NULL;
        a->nnotes = a->capnotes = a->nrnotes = a->caprnotes = 0;
        for (size_t i = 0; i < nn; i++) {
            entry *e = notes[i];
            e->noted = 0;
            if (e->refs > 0 && hooks && hooks->session_changed)
                hooks->session_changed(ud, &e->s);
        }
        for (size_t i = 0; i < nn; i++) {
            entry *e = notes[i];
            e->hold--;
            maybe_free(a, e);
        }
        for (size_t i = 0; i < nr; i++) {
            lq_principals *p = rnotes[i];
            user *u;
            HASH_FIND_STR(a->users, p->user_id, u);
            if (u && u->p == p) {
                u->rnoted = 0;
                if (hooks && hooks->roles_changed)
                    hooks->roles_changed(ud, p);
            }
            lq_principals_unref(p);
        }
        free(notes);
        free(rnotes);
    }
    while (calls) {
        job *next = calls->next;
        if (hooks && hooks->job_done)
            hooks->job_done(ud, calls->arg);
        else if (calls->drop)
            calls->drop(calls->arg);
        job_free(calls);
        calls = next;
    }
    update_gauge(a);
}

int lq_auth_submit(lq_auth *a, lq_auth_job_fn run, void (*drop)(void *arg), void *arg)
{
    if (!a->has_mongo || !a->started || a->nthreads == 0)
        return LQ_ERR;
    job *j = lq_xcalloc(1, sizeof(*j));
    j->kind = JOB_CALL;
    j->run = run;
    j->drop = drop;
    j->arg = arg;
    if (enqueue(a, j) != 0) {
        free(j);
        return LQ_ERR;
    }
    return LQ_OK;
}

int lq_auth_watches_class(const char *class_name)
{
    static const char *const classes[] = {"_Session", "_User", "_Role", "_Join:users:_Role",
                                          "_Join:roles:_Role"};
    if (class_name == NULL)
        return 0;
    for (size_t i = 0; i < sizeof(classes) / sizeof(classes[0]); i++)
        if (strcmp(class_name, classes[i]) == 0)
            return 1;
    return 0;
}

/*---- change events -----------------------------------------------------------------*/

static const char *jstr(const json_t *o, const char *key)
{
    const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* The objectId of a pointer field, or NULL. */
static const char *jptr(const json_t *o, const char *key)
{
    const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    return jstr(v, "objectId");
}

static const char *ev_str(const lq_change *ev, const char *key)
{
    const char *s = jstr(ev->object, key);
    return s ? s : jstr(ev->original, key);
}

/* Everything may have changed (history lost): re-read whatever is in use. */
static void invalidate_all(lq_auth *a)
{
    a->all = ++a->counter;
    a->roles_all = a->all;
    while (dl_tail(&a->lru))
        detach(a, dl_tail(&a->lru));
    for (entry *e = a->inuse.head, *next; e; e = next) {
        next = e->next;
        if (e->s.state == LQ_SESSION_VALID) {
            if (e->job_seq == 0)
                start_session_job(a, e);
        } else if (e->s.state == LQ_SESSION_INVALID) {
            detach(a, e);
        }
    }
}

static void on_session(lq_auth *a, const lq_change *ev)
{
    const char *sid = ev_str(ev, "objectId");
    const char *token = ev_str(ev, "sessionToken");
    entry *e;
    if (token) {
        ring_add(a, RK_TOKEN, token);
        HASH_FIND_STR(a->tokens, token, e);
        if (e && e->s.state == LQ_SESSION_INVALID && ev->op != LQ_CHANGE_DELETE)
            detach(a, e); /* e.g. cached "not found" before the session existed */
    }
    if (sid == NULL)
        return;
    ring_add(a, RK_SESSION, sid);
    e = sid_find(a, sid);
    if (e == NULL)
        return;
    if (ev->op == LQ_CHANGE_DELETE) {
        if (e->s.state == LQ_SESSION_VALID)
            LQ_INFO("auth session revoked", "session=%s", e->s.session_id);
        make_invalid(a, e, "revoked");
        return;
    }
    if (e->s.state != LQ_SESSION_VALID) {
        detach(a, e); /* an updated session may be usable again: ask afresh */
        return;
    }
    const char *uid = jptr(ev->object, "user");
    if (uid == NULL) {
        if (e->job_seq == 0 && start_session_job(a, e) < 0)
            make_invalid(a, e, "revoked"); /* cannot re-read it: fail closed */
        return;
    }
    if (strcmp(uid, e->u->uid) != 0) {
        make_invalid(a, e, "revoked");
        detach(a, e);
        return;
    }
    int64_t ms = 0;
    const json_t *exp = json_object_get(ev->object, "expiresAt");
    if (exp && !json_is_null(exp) && !lq_json_parse_date(exp, &ms) &&
        !(json_is_string(exp) && lq_iso_to_ms(json_string_value(exp), &ms) == 0)) {
        if (e->job_seq == 0 && start_session_job(a, e) < 0)
            make_invalid(a, e, "revoked"); /* unreadable and cannot re-read it: fail closed */
        return;
    }
    if (exp && !json_is_null(exp) && ms == 0)
        ms = 1;
    e->s.expires_ms = ms;
    if (ms != 0 && ms < a->next_scan_ms)
        a->next_scan_ms = ms;
}

static void on_user(lq_auth *a, const lq_change *ev)
{
    const char *uid = ev_str(ev, "objectId");
    if (ev->op != LQ_CHANGE_DELETE || uid == NULL)
        return;
    ring_add(a, RK_USER, uid);
    user *u = user_get(a, uid, 0);
    if (u == NULL)
        return;
    LQ_INFO("auth user deleted: its sessions are revoked", "user=%s", uid);
    for (entry *e = u->sessions, *next; e; e = next) {
        next = e->u_next;
        make_invalid(a, e, "user missing"); /* the last one frees u */
    }
}

static void on_join_users(lq_auth *a, const lq_change *ev)
{
    const char *uids[2] = {jstr(ev->object, "relatedId"), jstr(ev->original, "relatedId")};
    if (uids[0] == NULL && uids[1] == NULL) {
        roles_changed_all(a);
        return;
    }
    for (int i = 0; i < 2; i++) {
        if (uids[i] == NULL || (i == 1 && uids[0] && strcmp(uids[0], uids[1]) == 0))
            continue;
        ring_add(a, RK_ROLES, uids[i]);
        user *u = user_get(a, uids[i], 0);
        if (u)
            roles_changed_for(a, u);
    }
}

void lq_auth_on_change(lq_auth *a, const lq_change *ev)
{
    if (ev->op == LQ_CHANGE_CLEAR_CACHE) {
        lq_auth_clear_cache(a, jstr(ev->object, "userId"));
        return;
    }
    if (!lq_auth_watches_class(ev->class_name) || ev->op == LQ_CHANGE_SCHEMA)
        return;
    if (ev->op == LQ_CHANGE_RESYNC) {
        LQ_INFO("auth re-reads every session and role: change history lost", "class=%s", ev->class_name);
        invalidate_all(a);
        return;
    }
    if (strcmp(ev->class_name, "_Session") == 0)
        on_session(a, ev);
    else if (strcmp(ev->class_name, "_User") == 0)
        on_user(a, ev);
    else if (strcmp(ev->class_name, "_Join:users:_Role") == 0)
        on_join_users(a, ev);
    else /* _Role, _Join:roles:_Role */
        roles_changed_all(a);
    update_gauge(a);
}

void lq_auth_clear_cache(lq_auth *a, const char *user_id)
{
    (void)user_id; /* names the writer, not the users the write affects */
    LQ_METRIC_INC(auth_cache_clears);
    roles_changed_all(a);
    update_gauge(a);
}

size_t lq_auth_count(const lq_auth *a)
{
    return HASH_COUNT(a->tokens);
}
