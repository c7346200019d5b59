/*
 * registry.c - subscriptions, groups, the equality index and the fan-out.
 *
 * Shape (see registry.h for the why):
 *
 *   registry --classes--> cls --groups(by canonical query)--> group --subs--> sub <--subs(by requestId)-- client
 *                          |                                    |
 *                          +--fields(by name)--> ifield --buckets(by value key)--> bucket --groups--> group
 *                          +--unindexed--> group (no equality constraint to index on)
 *
 * A group sits in exactly one list: its bucket's, or its class's unindexed
 * list. During one dispatch every group is visited at most once (stamp).
 */
#include "livequery/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

#include "livequery/json.h"
#include "livequery/jsonout.h"
#include "livequery/metrics.h"

#define INDEX_KEY_MAX 512 /* bytes of an equality index key, NUL included */

/* An interned set of hidden (protected) field names: subscriptions with equal
 * sets share one, so bodies can be shared by pointer comparison. */
typedef struct hidden {
    char *key; /* the names joined by \x1f */
    UT_hash_handle hh;
    char **names; /* sorted, NULL-terminated, non-empty */
    int refs;
} hidden;

/* The shapes of an event body. */
enum { SHAPE_OBJECT = 0, SHAPE_BOTH = 1, SHAPE_ORIGINAL_AS_OBJECT = 2 };

typedef struct kbody {
    const hidden *hid;
    int shape;
    lq_body *body;
} kbody;

typedef struct keyset {
    struct keyset *next;
    char **names;  /* sorted, NULL-terminated; NULL: all fields */
    int refs;
    int touched;   /* bodies hold this dispatch's frames */
    kbody *bodies; /* this dispatch's bodies, by (hidden, shape) */
    int nbodies, capbodies;
} keyset;

typedef struct group group;
typedef struct cls cls;

/* The query op: one event a subscription got while its snapshot was read. */
typedef struct held {
    struct held *next;
    lq_body *body; /* a reference */
    int type;      /* lq_event_type */
    uint64_t ct;   /* the event's cluster time, 0: none */
    int64_t seq;   /* a positions subscription: the event's position */
    char epoch[];
} held;

/* A subscription's events held while a snapshot is read for its query op. */
typedef struct qhold {
    uint64_t token;
    held *head, *tail;
    size_t n, bytes, max_n, max_bytes;
} qhold;

typedef struct sub {
    double rid;
    /* in client->subs: a list, not a hash. A client holds a few subscriptions
     * (at most --max-subscriptions), looked up only on (un)subscribe, and a
     * uthash table costs ~600 bytes per client before its first entry. */
    struct sub *cprev, *cnext;
    struct sub *prev, *next; /* in group->subs */
    lq_client *client;
    group *g;
    keyset *ks;
    char **watch; /* NULL-terminated, or NULL */
    lq_principals *who; /* referenced */
    void *tag;          /* the caller's session handle, or NULL */
    char *where;        /* compact JSON text, for re-checks: a jansson tree kept
                         * per subscription cost ~260 bytes, the text ~40 */
    int verdict;        /* LQ_CLP_ALLOW or LQ_CLP_POINTER */
    char **ptr_fields;  /* LQ_CLP_POINTER: the pointer fields */
    hidden *hid;        /* static hidden fields, or NULL */
    /* the resume extension */
    uint8_t gate;       /* paused, or a floor to pass: checked per delivery */
    uint8_t paused;     /* waiting for its position: no events */
    uint8_t positions;  /* frames carry epoch and seq */
    int64_t floor;      /* events of the class with seq <= floor are skipped */
    uint64_t token;     /* while paused: its key in registry->paused */
    UT_hash_handle phh; /* in registry->paused */
    /* the query op */
    qhold *qh;          /* a snapshot is being read: deliveries are held, or NULL */
    uint64_t ct_floor;  /* after a snapshot at this cluster time: events with a lower or equal
                         * ct are skipped (the snapshot had them) until one above it; 0: none */
} sub;

typedef struct bucket {
    char *key;
    UT_hash_handle hh;
    group *groups;
} bucket;

typedef struct ifield {
    char *name;
    UT_hash_handle hh;
    bucket *buckets;
    int ngroups;
} ifield;

struct group {
    char *canonical;
    UT_hash_handle hh; /* in cls->groups */
    group *prev, *next; /* in a bucket's list or cls->unindexed */
    lq_query *q;
    cls *c;
    ifield *field; /* NULL: unindexed */
    bucket *bucket;
    sub *subs;
    int nsubs;
    keyset *keysets;
    uint64_t stamp;
};

struct cls {
    char *name;
    UT_hash_handle hh;
    group *groups;
    group *unindexed;
    ifield *fields;
};

struct lq_client {
    void *conn;
    int master;
    sub *subs;
    int nsubs;
    int npaused;            /* of its subs, those waiting for their position */
    lq_client *prev, *next; /* in registry->clients */
};

/* The CLP in force for a class, kept whether or not anyone subscribes. */
typedef struct clpent {
    char *name;
    UT_hash_handle hh;
    json_t *clp;
    int dynamic; /* hidden fields depend on the object (lq_protected_dynamic) */
} clpent;

struct lq_registry {
    lq_registry_limits lim;
    lq_tag_release_fn tag_release;
    void *tag_ud;
    lq_hold_overflow_fn hold_overflow;
    void *hold_ud;
    clpent *clps;
    hidden *hiddens;
    int sweep_hiddens; /* a dispatch interned per-object hidden sets */
    cls *classes;
    sub *paused; /* positions subscriptions waiting for their position, by token */
    lq_client *clients;
    uint64_t stamp;
    size_t ngroups, nsubs;
    size_t visited; /* groups evaluated by the last dispatch */
    keyset **touched; /* keysets holding bodies during a dispatch */
    size_t ntouched, cap_touched;
};

/*---- lifetime --------------------------------------------------------------*/

lq_registry *lq_registry_new(const lq_registry_limits *lim)
{
    lq_registry *r = lq_xcalloc(1, sizeof(*r));
    r->lim = *lim;
    return r;
}

void lq_registry_set_limits(lq_registry *r, const lq_registry_limits *lim)
{
    r->lim = *lim;
}

void lq_registry_set_tag_release(lq_registry *r, lq_tag_release_fn release, void *ud)
{
    r->tag_release = release;
    r->tag_ud = ud;
}

void lq_registry_set_hold_overflow(lq_registry *r, lq_hold_overflow_fn fn, void *ud)
{
    r->hold_overflow = fn;
    r->hold_ud = ud;
}

static void qhold_free(qhold *h)
{
    if (h == NULL)
        return;
    while (h->head) {
        held *e = h->head;
        h->head = e->next;
        lq_body_decref(e->body);
        free(e);
    }
    free(h);
}

static void keyset_release(group *g, keyset *ks)
{
    if (--ks->refs > 0)
        return;
    LL_DELETE(g->keysets, ks);
    for (int i = 0; i < ks->nbodies; i++)
        lq_body_decref(ks->bodies[i].body);
    free(ks->bodies);
    lq_strv_free(ks->names);
    free(ks);
}

/*---- hidden field sets --------------------------------------------------------*/

/* The interned set for names (taken; NULL or empty: NULL), with a reference. */
static hidden *hidden_get(lq_registry *r, char **names)
{
    lq_buf key;
    hidden *h;

    if (names == NULL || names[0] == NULL) {
        lq_strv_free(names);
        return NULL;
    }
    lq_buf_init(&key);
    for (char **p = names; *p; p++) {
        if (p != names)
            lq_buf_putc(&key, '\x1f');
        lq_buf_puts(&key, *p);
    }
    HASH_FIND(hh, r->hiddens, key.data, key.len, h);
    if (h) {
        lq_buf_release(&key);
        lq_strv_free(names);
        h->refs++;
        return h;
    }
    h = lq_xcalloc(1, sizeof(*h));
    h->key = key.data; /* taken */
    h->names = names;
    h->refs = 1;
    HASH_ADD_KEYPTR(hh, r->hiddens, h->key, key.len, h);
    return h;
}

static void hidden_put(lq_registry *r, hidden *h)
{
    if (h == NULL || --h->refs > 0)
        return;
    HASH_DEL(r->hiddens, h);
    free(h->key);
    lq_strv_free(h->names);
    free(h);
}

/* The union of two sorted lists (either may be NULL), as a new list or NULL. */
static char **strv_union(const char *const *a, const char *const *b)
{
    size_t n = 0, m = 0;
    char **v;

    for (const char *const *p = a; p && *p; p++)
        n++;
    for (const char *const *p = b; p && *p; p++)
        n++;
    if (n == 0)
        return NULL;
    v = lq_xcalloc(n + 1, sizeof(char *));
    while ((a && *a) || (b && *b)) {
        int c = !(a && *a) ? 1 : !(b && *b) ? -1 : strcmp(*a, *b);
        if (c <= 0) {
            v[m++] = lq_xstrdup(*a);
            if (c == 0)
                b++;
            a++;
        } else {
            v[m++] = lq_xstrdup(*b);
            b++;
        }
    }
    v[m] = NULL;
    return v;
}

static void group_free(lq_registry *r, group *g)
{
    cls *c = g->c;

    HASH_DEL(c->groups, g);
    if (g->bucket) {
        DL_DELETE(g->bucket->groups, g);
        if (g->bucket->groups == NULL) {
            HASH_DEL(g->field->buckets, g->bucket);
            free(g->bucket->key);
            free(g->bucket);
        }
        if (--g->field->ngroups == 0) {
            HASH_DEL(c->fields, g->field);
            free(g->field->name);
            free(g->field);
        }
    } else {
        DL_DELETE(c->unindexed, g);
    }
    lq_query_free(g->q);
    free(g->canonical);
    free(g);
    r->ngroups--;
    LQ_METRIC_ADD(subscription_groups, -1);
    if (c->groups == NULL) {
        HASH_DEL(r->classes, c);
        free(c->name);
        free(c);
    }
}

static void sub_remove(lq_registry *r, sub *s)
{
    lq_client *cl = s->client;
    group *g = s->g;

    DL_DELETE2(cl->subs, s, cprev, cnext);
    cl->nsubs--;
    if (s->paused) {
        HASH_DELETE(phh, r->paused, s);
        cl->npaused--;
    }
    DL_DELETE(g->subs, s);
    g->nsubs--;
    keyset_release(g, s->ks);
    lq_strv_free(s->watch);
    lq_strv_free(s->ptr_fields);
    qhold_free(s->qh);
    hidden_put(r, s->hid);
    free(s->where);
    lq_principals_unref(s->who);
    if (s->tag && r->tag_release)
        r->tag_release(r->tag_ud, s->tag);
    free(s);
    r->nsubs--;
    LQ_METRIC_ADD(subscriptions, -1);
    if (g->nsubs == 0)
        group_free(r, g);
}

static void clpent_free(lq_registry *r, clpent *ce)
{
    HASH_DEL(r->clps, ce);
    free(ce->name);
    json_decref(ce->clp);
    free(ce);
}

void lq_registry_free(lq_registry *r)
{
    if (r == NULL)
        return;
    clpent *ce, *ctmp;

    while (r->clients)
        lq_registry_client_free(r, r->clients);
    HASH_ITER(hh, r->clps, ce, ctmp) {
        clpent_free(r, ce);
    }
    free(r->touched);
    free(r);
}

lq_client *lq_registry_client_new(lq_registry *r, void *conn, int master)
{
    lq_client *c = lq_xcalloc(1, sizeof(*c));
    c->conn = conn;
    c->master = master;
    DL_APPEND(r->clients, c);
    return c;
}

void lq_registry_client_free(lq_registry *r, lq_client *c)
{
    sub *s, *tmp;

    if (c == NULL)
        return;
    DL_FOREACH_SAFE2(c->subs, s, tmp, cnext) {
        sub_remove(r, s);
    }
    DL_DELETE(r->clients, c);
    free(c);
}

int lq_registry_client_is_master(const lq_client *c)
{
    return c != NULL && c->master;
}

int lq_registry_client_count(const lq_client *c)
{
    return c->nsubs;
}

int lq_registry_client_watches(const lq_client *c, const char *class_name)
{
    for (const sub *s = c->subs; s; s = s->cnext)
        if (strcmp(s->g->c->name, class_name) == 0)
            return 1;
    return 0;
}

size_t lq_registry_group_count(const lq_registry *r)
{
    return r->ngroups;
}

size_t lq_registry_sub_count(const lq_registry *r)
{
    return r->nsubs;
}

size_t lq_registry_last_visited(const lq_registry *r)
{
    return r->visited;
}

/*---- subscribe ---------------------------------------------------------------*/

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A NULL-terminated copy of a JSON string array. For keys (top_level), a
 * dotted name "a.b" selects its top-level field "a", names are sorted and
 * duplicates dropped, so equal projections share one keyset. */
static char **strv_from_json(const json_t *arr, int top_level)
{
    size_t n = json_array_size(arr), m = 0;
    char **v;

    if (arr == NULL)
        return NULL;
    v = lq_xcalloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        size_t len = top_level ? strcspn(s, ".") : strlen(s);
        v[m++] = strndup(s, len);
    }
    if (top_level) {
        qsort(v, m, sizeof(char *), cmp_str);
        size_t w = 0;
        for (size_t i = 0; i < m; i++) {
            if (w > 0 && strcmp(v[w - 1], v[i]) == 0) {
                free(v[i]);
                continue;
            }
            v[w++] = v[i];
        }
        m = w;
    }
    v[m] = NULL;
    return v;
}

/* The group's keyset for names (taken), shared with every subscriber of the
 * group that asked for the same projection. */
static keyset *keyset_get(group *g, char **names)
{
    keyset *ks;

    LL_FOREACH(g->keysets, ks) {
        if (lq_strv_equal((const char *const *)ks->names, (const char *const *)names)) {
            ks->refs++;
            lq_strv_free(names);
            return ks;
        }
    }
    ks = lq_xcalloc(1, sizeof(*ks));
    ks->names = names;
    ks->refs = 1;
    LL_PREPEND(g->keysets, ks);
    return ks;
}

static group *group_get(lq_registry *r, const char *class_name, lq_query *q)
{
    cls *c;
    group *g;
    const char *canonical = lq_query_canonical(q);
    const char *field, *vkey;

    HASH_FIND_STR(r->classes, class_name, c);
    if (c == NULL) {
        c = lq_xcalloc(1, sizeof(*c));
        c->name = lq_xstrdup(class_name);
        HASH_ADD_KEYPTR(hh, r->classes, c->name, strlen(c->name), c);
    }
    HASH_FIND_STR(c->groups, canonical, g);
    if (g) {
        lq_query_free(q);
        return g;
    }
    g = lq_xcalloc(1, sizeof(*g));
    g->q = q;
    g->c = c;
    g->canonical = lq_xstrdup(canonical);
    HASH_ADD_KEYPTR(hh, c->groups, g->canonical, strlen(g->canonical), g);
    /* a value key longer than visit_bucket's buffer could never be looked up:
     * such a group stays unindexed (correct, only slower) */
    if (lq_query_index_hint(q, &field, &vkey) && strlen(vkey) < INDEX_KEY_MAX) {
        ifield *f;
        bucket *b;
        HASH_FIND_STR(c->fields, field, f);
        if (f == NULL) {
            f = lq_xcalloc(1, sizeof(*f));
            f->name = lq_xstrdup(field);
            HASH_ADD_KEYPTR(hh, c->fields, f->name, strlen(f->name), f);
        }
        HASH_FIND_STR(f->buckets, vkey, b);
        if (b == NULL) {
            b = lq_xcalloc(1, sizeof(*b));
            b->key = lq_xstrdup(vkey);
            HASH_ADD_KEYPTR(hh, f->buckets, b->key, strlen(b->key), b);
        }
        f->ngroups++;
        g->field = f;
        g->bucket = b;
        DL_APPEND(b->groups, g);
    } else {
        DL_APPEND(c->unindexed, g);
    }
    r->ngroups++;
    LQ_METRIC_INC(subscription_groups);
    return g;
}

static double norm_rid(double rid)
{
    return rid == 0 ? 0.0 : rid; /* -0.0 and 0.0 are one key */
}

/*---- authorization ---------------------------------------------------------------*/

static const clpent *clp_find(const lq_registry *r, const char *class_name)
{
    clpent *ce;
    HASH_FIND_STR(r->clps, class_name, ce);
    return ce;
}

const json_t *lq_registry_clp(const lq_registry *r, const char *class_name)
{
    const clpent *ce = clp_find(r, class_name);
    return ce ? ce->clp : NULL;
}

/* What a subscriber of class_name with where/watch acting as who may see,
 * under the class's current CLP. Returns LQ_OK with *verdict, *ptr_fields
 * (new, or NULL) and *hid (a reference, or NULL), or LQ_ERR with err set. */
static int authorize(lq_registry *r, const char *class_name, const json_t *where,
                     char **watch, const lq_principals *who, int *verdict,
                     char ***ptr_fields, hidden **hid, lq_error *err)
{
    const json_t *clp = lq_registry_clp(r, class_name);
    char **names;
    const char *field = NULL;
    lq_clp_verdict v;

    *ptr_fields = NULL;
    *hid = NULL;
    v = lq_clp_check(clp, class_name, lq_clp_is_get(where), who, ptr_fields, err);
    if (v != LQ_CLP_ALLOW && v != LQ_CLP_POINTER)
        return LQ_ERR;
    names = lq_protected_static(clp, class_name, where, who);
    if (lq_protected_in_query((const char *const *)names, where, (const char *const *)watch,
                              &field)) {
        lq_error_set(err, LQ_PARSE_ERR_FORBIDDEN, "Permission denied");
        lq_strv_free(names);
        lq_strv_free(*ptr_fields);
        *ptr_fields = NULL;
        return LQ_ERR;
    }
    *verdict = v;
    *hid = hidden_get(r, names);
    return LQ_OK;
}

/* The client's subscription with request id rid (normalized), or NULL. */
static sub *client_sub(const lq_client *cl, double rid)
{
    for (sub *s = cl->subs; s; s = s->cnext)
        if (s->rid == rid)
            return s;
    return NULL;
}

int lq_registry_subscribe(lq_registry *r, lq_client *cl, const lq_request *req,
                          const lq_sub_auth *auth, lq_error *err)
{
    double rid = norm_rid(req->request_id);
    sub *old, *s;
    lq_query *q;
    lq_principals *who;
    int verdict;
    char **ptr_fields, **watch;
    hidden *hid;

    if (!lq_class_name_valid(req->class_name)) {
        lq_error_set(err, LQ_PARSE_ERR_INVALID_QUERY, "invalid className: %.128s", req->class_name);
        return LQ_ERR;
    }
    old = client_sub(cl, rid);
    if (old == NULL && cl->nsubs >= r->lim.max_subscriptions) {
        lq_error_set(err, LQ_PARSE_ERR_LIMIT, "too many subscriptions on this connection (limit %d)",
                     r->lim.max_subscriptions);
        LQ_METRIC_INC(limit_subscriptions);
        return LQ_ERR;
    }
    if (req->positions && cl->npaused - (old && old->paused) >= LQ_MAX_PAUSED) {
        /* each costs a history read on the bus thread, which live events wait behind */
        lq_error_set(err, LQ_PARSE_ERR_LIMIT,
                     "too many subscriptions waiting for their position on this connection (limit %d)",
                     LQ_MAX_PAUSED);
        return LQ_ERR;
    }
    /* json_dumpb with no buffer only measures */
    if (json_dumpb(req->where, NULL, 0, JSON_COMPACT) > r->lim.max_query_bytes) {
        lq_error_set(err, LQ_PARSE_ERR_INVALID_QUERY, "query is larger than %zu bytes",
                     r->lim.max_query_bytes);
        LQ_METRIC_INC(limit_query_size);
        return LQ_ERR;
    }
    q = lq_query_compile(req->class_name, req->where, &r->lim.query, err);
    if (q == NULL)
        return LQ_ERR;
    who = auth && auth->who ? auth->who
          : cl->master      ? lq_principals_master()
                            : lq_principals_anonymous();
    watch = strv_from_json(req->watch, 0);
    if (authorize(r, req->class_name, req->where, watch, who, &verdict, &ptr_fields, &hid,
                  err) != LQ_OK) {
        lq_strv_free(watch);
        lq_query_free(q);
        LQ_METRIC_INC(subscriptions_denied);
        return LQ_ERR;
    }
    if (old)
        sub_remove(r, old);

    s = lq_xcalloc(1, sizeof(*s));
    s->rid = rid;
    s->client = cl;
    s->who = lq_principals_ref(who);
    s->tag = auth ? auth->tag : NULL;
    s->where = json_dumps(req->where, JSON_COMPACT);
    if (s->where == NULL) {
        fputs("livequeryd: out of memory\n", stderr);
        abort();
    }
    s->verdict = verdict;
    s->ptr_fields = ptr_fields;
    s->hid = hid;
    s->g = group_get(r, req->class_name, q); /* takes q */
    s->ks = keyset_get(s->g, strv_from_json(req->keys, 1));
    s->watch = watch;
    if (req->positions) {
        s->positions = 1;
        s->paused = s->gate = 1;
        s->token = auth ? auth->token : 0;
        HASH_ADD(phh, r->paused, token, sizeof(s->token), s);
        cl->npaused++;
    }
    DL_APPEND(s->g->subs, s);
    s->g->nsubs++;
    DL_APPEND2(cl->subs, s, cprev, cnext);
    cl->nsubs++;
    r->nsubs++;
    LQ_METRIC_INC(subscriptions);
    return LQ_OK;
}

/* Subscriptions to remove after a walk (removing while walking a group's
 * list would free the group under the walker). */
typedef struct doomed {
    sub **v;
    size_t n, cap;
    lq_error *errs;
} doomed;

static void doom(doomed *d, sub *s, const lq_error *err)
{
    if (d->n == d->cap) {
        d->cap = d->cap ? d->cap * 2 : 16;
        d->v = lq_xrealloc(d->v, d->cap * sizeof(sub *));
        d->errs = lq_xrealloc(d->errs, d->cap * sizeof(lq_error));
    }
    d->v[d->n] = s;
    d->errs[d->n] = *err;
    d->n++;
}

static size_t doom_execute(lq_registry *r, doomed *d, lq_revoke_fn revoke, void *ud)
{
    for (size_t i = 0; i < d->n; i++) {
        sub *s = d->v[i];
        void *conn = s->client->conn;
        double rid = s->rid;
        sub_remove(r, s);
        if (revoke)
            revoke(conn, rid, &d->errs[i], ud);
    }
    free(d->v);
    free(d->errs);
    return d->n;
}

/* Re-authorizes s in place; a subscription now denied is doomed. */
static void recheck_sub(lq_registry *r, sub *s, doomed *d)
{
    lq_error err;
    int verdict;
    char **ptr_fields;
    hidden *hid;

    json_t *where = json_loads(s->where, JSON_ALLOW_NUL, NULL);
    int rc;

    if (where == NULL) { /* it was dumped from a valid tree: only memory can fail */
        lq_error_set(&err, LQ_PARSE_ERR_RESYNC, "cannot re-check the subscription; subscribe again");
        doom(d, s, &err);
        return;
    }
    rc = authorize(r, s->g->c->name, where, s->watch, s->who, &verdict, &ptr_fields, &hid, &err);
    json_decref(where);
    if (rc != LQ_OK) {
        LQ_METRIC_INC(subscriptions_denied);
        doom(d, s, &err);
        return;
    }
    lq_strv_free(s->ptr_fields);
    s->ptr_fields = ptr_fields;
    s->verdict = verdict;
    hidden_put(r, s->hid);
    s->hid = hid;
}

int lq_registry_set_clp(lq_registry *r, const char *class_name, const json_t *clp,
                        lq_revoke_fn revoke, void *ud)
{
    clpent *ce;
    cls *c;
    group *g, *gtmp;
    sub *s;
    doomed d = {0};

    HASH_FIND_STR(r->clps, class_name, ce);
    if (ce ? lq_json_equal(ce->clp, clp) : clp == NULL)
        return 0;
    if (clp == NULL) {
        clpent_free(r, ce);
    } else {
        if (ce == NULL) {
            ce = lq_xcalloc(1, sizeof(*ce));
            ce->name = lq_xstrdup(class_name);
            HASH_ADD_KEYPTR(hh, r->clps, ce->name, strlen(ce->name), ce);
        }
        json_decref(ce->clp);
        ce->clp = json_incref((json_t *)clp);
        ce->dynamic = lq_protected_dynamic(clp, class_name);
    }
    LQ_METRIC_INC(clp_changes);
    HASH_FIND_STR(r->classes, class_name, c);
    if (c) {
        HASH_ITER(hh, c->groups, g, gtmp) {
            DL_FOREACH(g->subs, s) {
                recheck_sub(r, s, &d);
            }
        }
    }
    doom_execute(r, &d, revoke, ud);
    return 1;
}

void lq_registry_recheck(lq_registry *r, const lq_principals *p, lq_revoke_fn revoke, void *ud)
{
    doomed d = {0};

    for (lq_client *cl = r->clients; cl; cl = cl->next)
        for (sub *s = cl->subs; s; s = s->cnext)
            if (s->who == p)
                recheck_sub(r, s, &d);
    doom_execute(r, &d, revoke, ud);
}

size_t lq_registry_revoke_tag(lq_registry *r, void *tag, const lq_error *err, lq_revoke_fn revoke,
                              void *ud)
{
    doomed d = {0};

    if (tag == NULL)
        return 0;
    for (lq_client *cl = r->clients; cl; cl = cl->next)
        for (sub *s = cl->subs; s; s = s->cnext)
            if (s->tag == tag)
                doom(&d, s, err);
    return doom_execute(r, &d, revoke, ud);
}

int lq_registry_unsubscribe(lq_registry *r, lq_client *cl, double request_id)
{
    double rid = norm_rid(request_id);
    sub *s;

    s = client_sub(cl, rid);
    if (s == NULL)
        return LQ_ERR_NOTFOUND;
    sub_remove(r, s);
    return LQ_OK;
}

/*---- dispatch ----------------------------------------------------------------*/

/* An event state's ACL, read once per dispatch: the entries granting read.
 * Per subscriber only these few entries are looked up in its principals. */
#define ACL_VIEW_MAX 16
typedef struct acl_view {
    int everyone;  /* no ACL, or "*" may read */
    int nobody;    /* no state, or an ACL that is not an object */
    int overflow;  /* more entries than fit: ask lq_acl_can_read */
    int n;
    const char *keys[ACL_VIEW_MAX];
    size_t lens[ACL_VIEW_MAX];
    unsigned hashes[ACL_VIEW_MAX];
} acl_view;

static void acl_view_init(acl_view *v, const json_t *obj)
{
    const json_t *acl;
    const char *k;
    json_t *e;

    memset(v, 0, sizeof(*v));
    if (obj == NULL) {
        v->nobody = 1;
        return;
    }
    acl = json_object_get(obj, "ACL");
    if (acl == NULL || json_is_null(acl)) {
        v->everyone = 1;
        return;
    }
    if (!json_is_object(acl)) {
        v->nobody = 1;
        return;
    }
    json_object_foreach((json_t *)acl, k, e) {
        if (!json_is_true(json_object_get(e, "read")))
            continue;
        if (strcmp(k, "*") == 0) {
            v->everyone = 1;
            return;
        }
        if (v->n == ACL_VIEW_MAX) {
            v->overflow = 1;
            return;
        }
        v->keys[v->n] = k;
        v->lens[v->n] = strlen(k);
        v->hashes[v->n] = lq_acl_key_hash(k, v->lens[v->n]);
        v->n++;
    }
}

static int acl_view_reads(const acl_view *v, const lq_principals *p, const json_t *obj)
{
    if (v->everyone)
        return 1;
    if (v->nobody)
        return 0;
    if (v->overflow)
        return lq_acl_can_read(p, obj);
    for (int i = 0; i < v->n; i++)
        if (lq_principals_has_hashed(p, v->keys[i], v->lens[i], v->hashes[i]))
            return 1;
    return 0;
}

typedef struct dispatch {
    lq_registry *r;
    const lq_change *ev;
    int64_t now_ms;
    const clpent *clp; /* the class's CLP entry, or NULL */
    lq_deliver_fn deliver;
    void *ud;
    size_t delivered;
    size_t withheld_acl, withheld_clp, hidden; /* metrics, added once per dispatch */
    int dynamic;       /* hidden fields depend on the object (userField tiers, _User) */
    int internal;      /* _Session, _Join:…, _Installation, …: master-key subscribers only */
    acl_view acl[2];   /* [0] object, [1] original */
} dispatch;

/* Principals' memo stamps: one counter for every registry of the process,
 * since the anonymous and master principals are shared. */
static uint64_t dispatch_stamp;

static lq_body *keyset_body(dispatch *d, keyset *ks, const hidden *hid, int shape)
{
    lq_registry *r = d->r;
    const lq_change *ev = d->ev;
    kbody *kb;

    if (!ks->touched) {
        ks->touched = 1;
        if (r->ntouched == r->cap_touched) {
            r->cap_touched = r->cap_touched ? r->cap_touched * 2 : 64;
            r->touched = lq_xrealloc(r->touched, r->cap_touched * sizeof(keyset *));
        }
        r->touched[r->ntouched++] = ks;
    }
    for (int i = 0; i < ks->nbodies; i++)
        if (ks->bodies[i].hid == hid && ks->bodies[i].shape == shape)
            return ks->bodies[i].body;
    if (ks->nbodies == ks->capbodies) {
        ks->capbodies = ks->capbodies ? ks->capbodies * 2 : 2;
        ks->bodies = lq_xrealloc(ks->bodies, (size_t)ks->capbodies * sizeof(kbody));
    }
    kb = &ks->bodies[ks->nbodies++];
    kb->hid = hid;
    kb->shape = shape;
    kb->body = lq_body_event_hiding(shape == SHAPE_ORIGINAL_AS_OBJECT ? ev->original : ev->object,
                                    shape == SHAPE_BOTH ? ev->original : NULL,
                                    (const char *const *)ks->names,
                                    hid ? (const char *const *)hid->names : NULL);
    return kb->body;
}

/* ACL reads of the event's two states for p, once per dispatch per principals. */
static void acl_reads(dispatch *d, lq_principals *p, int *cur, int *orig)
{
    if (d->acl[0].everyone && (d->acl[1].everyone || d->acl[1].nobody)) { /* the common case */
        *cur = 1;
        *orig = !d->acl[1].nobody;
        return;
    }
    if (p->memo_stamp != dispatch_stamp) {
        p->memo_stamp = dispatch_stamp;
        p->memo[0] = acl_view_reads(&d->acl[0], p, d->ev->object);
        p->memo[1] = acl_view_reads(&d->acl[1], p, d->ev->original);
    }
    *cur = p->memo[0];
    *orig = p->memo[1];
}

/* The hidden set for one delivery: the subscription's static set, or, when
 * the class's hidden fields depend on the object, the union of what each
 * state sent hides (interned; released at the end of the dispatch by
 * hiddens_sweep, since subscriptions hold no reference to it). */
static const hidden *delivery_hidden(dispatch *d, const sub *s, int shape)
{
    const lq_change *ev = d->ev;
    const char *clsname = ev->class_name;
    const json_t *clp = d->clp ? d->clp->clp : NULL;
    const char *const *st = s->hid ? (const char *const *)s->hid->names : NULL;
    char **a = NULL, **b = NULL, **u;
    hidden *h;

    if (!d->dynamic || s->who->master)
        return s->hid;
    if (shape != SHAPE_ORIGINAL_AS_OBJECT)
        a = lq_protected_for_object(clp, clsname, st, s->who, ev->object);
    if (shape != SHAPE_OBJECT && ev->original)
        b = lq_protected_for_object(clp, clsname, st, s->who, ev->original);
    u = strv_union((const char *const *)a, (const char *const *)b);
    lq_strv_free(a);
    lq_strv_free(b);
    h = hidden_get(d->r, u);
    if (h) {
        h->refs--; /* swept after the dispatch if nobody else holds it */
        d->r->sweep_hiddens = 1;
    }
    return h;
}

/* Which states of the event s may read (*read_cur, *read_orig), and the event
 * it gets from that (LQ_EV_NONE: none); watch is not applied. The one place
 * that decides what a subscriber may see of an object: live events, replays
 * and query results (lq_registry_results) all come through here. */
static lq_event_type sub_event(dispatch *d, sub *s, int m_cur, int m_orig, lq_event_type t_master,
                               int *read_cur, int *read_orig)
{
    const lq_change *ev = d->ev;
    int has_orig = ev->original != NULL;
    lq_principals *who = s->who;

    *read_cur = 1;
    *read_orig = has_orig;
    if (!who->master && d->internal) {
        *read_cur = *read_orig = 0; /* whatever their ACL says (Parse Server stores none) */
    } else if (!who->master) {
        acl_reads(d, who, read_cur, read_orig);
        if (s->verdict == LQ_CLP_POINTER) {
            const char *const *pf = (const char *const *)s->ptr_fields;
            int ptr_cur = *read_cur && lq_clp_pointer_match(pf, who, ev->object);
            int ptr_orig = *read_orig && lq_clp_pointer_match(pf, who, ev->original);
            if ((m_cur && *read_cur && !ptr_cur) || (m_orig && *read_orig && !ptr_orig))
                d->withheld_clp++;
            *read_cur = ptr_cur;
            *read_orig = ptr_orig;
        }
    }
    return who->master ? t_master
                       : lq_event_classify(ev->op, has_orig, m_orig && *read_orig, m_cur && *read_cur);
}

/* What the subscriber may see of each state, for an event t. */
static int sub_shape(const lq_change *ev, lq_event_type t, int read_cur, int read_orig)
{
    if (!lq_event_has_original(t) || ev->original == NULL)
        return SHAPE_OBJECT;
    if (t == LQ_EV_LEAVE && !read_cur)
        return SHAPE_ORIGINAL_AS_OBJECT; /* lost read access: the last state it could read */
    if (t == LQ_EV_ENTER && !read_orig)
        return SHAPE_OBJECT; /* gained read access: the before state was not its to see */
    return SHAPE_BOTH;
}

/* A delivery to s, or the lq_change standing for a held one (positions). */
static void deliver_to(dispatch *d, sub *s, lq_body *body, lq_event_type t, const lq_change *ev)
{
    d->deliver(s->client->conn, body, t, s->rid, s->positions ? ev : NULL, d->ud);
    d->delivered++;
}

/* Delivers s's held events whose cluster time is above ct, or that have
 * none, in order (ct 0: every one), drops the others and ends the hold.
 * Returns how many were skipped. */
static size_t hold_flush(dispatch *d, sub *s, uint64_t ct)
{
    qhold *h = s->qh;
    size_t skipped = 0;
    lq_change pos;

    s->qh = NULL;
    memset(&pos, 0, sizeof(pos));
    for (held *e = h->head; e; e = e->next) {
        if (ct != 0 && e->ct != 0 && e->ct <= ct) {
            skipped++;
            continue;
        }
        pos.seq = e->seq;
        snprintf(pos.epoch, sizeof(pos.epoch), "%s", e->epoch);
        pos.ct = e->ct;
        deliver_to(d, s, e->body, (lq_event_type)e->type, &pos);
    }
    qhold_free(h);
    if (skipped)
        LQ_METRIC_ADD(query_events_skipped, skipped);
    return skipped;
}

/* Keeps one delivery for s while its query's snapshot is read. Past the
 * hold's bounds the query fails (hold_overflow tells its owner) and what
 * was held goes out now, this one after it: no event is ever lost. */
static void hold_add(dispatch *d, sub *s, lq_body *body, lq_event_type t)
{
    const lq_change *ev = d->ev;
    qhold *h = s->qh;

    if (h->n >= h->max_n || h->bytes + body->len + LQ_HELD_HEAD_BYTES > h->max_bytes) {
        lq_registry *r = d->r;
        if (r->hold_overflow)
            r->hold_overflow(r->hold_ud, s->client->conn, s->rid, h->token);
        hold_flush(d, s, 0);
        deliver_to(d, s, body, t, ev);
        return;
    }
    size_t elen = s->positions ? strlen(ev->epoch) + 1 : 1;
    held *e = lq_xmalloc(sizeof(*e) + elen);
    e->next = NULL;
    e->body = body;
    lq_body_incref(body);
    e->type = t;
    e->ct = ev->ct;
    e->seq = s->positions ? ev->seq : 0;
    memcpy(e->epoch, s->positions ? ev->epoch : "", elen);
    if (h->tail)
        h->tail->next = e;
    else
        h->head = e;
    h->tail = e;
    h->n++;
    h->bytes += body->len + LQ_HELD_HEAD_BYTES;
    LQ_METRIC_INC(query_events_held);
}

/* One subscriber of a group whose query matched a state of the event. */
static void visit_sub(dispatch *d, sub *s, int m_cur, int m_orig, lq_event_type t_master)
{
    const lq_change *ev = d->ev;
    int read_cur, read_orig;
    lq_event_type t;

    if (s->ct_floor && ev->ct) { /* the query op: after a snapshot, rare */
        if (ev->ct <= s->ct_floor) {
            LQ_METRIC_INC(query_events_skipped); /* the snapshot had it (the tailer lagged) */
            return;
        }
        s->ct_floor = 0; /* past the snapshot: later events of the class are later still */
    }
    t = sub_event(d, s, m_cur, m_orig, t_master, &read_cur, &read_orig);
    if (t == LQ_EV_NONE) {
        if (t_master != LQ_EV_NONE)
            d->withheld_acl++;
        return;
    }
    if (!lq_event_watch_passes(t, (const char *const *)s->watch, ev->object, ev->original))
        return;
    int shape = sub_shape(ev, t, read_cur, read_orig);
    const hidden *hid = delivery_hidden(d, s, shape);
    if (hid)
        d->hidden++;
    lq_body *body = keyset_body(d, s->ks, hid, shape);
    if (s->qh) { /* the query op: a snapshot is being read */
        hold_add(d, s, body, t);
        return;
    }
    deliver_to(d, s, body, t, ev);
}

static void visit(dispatch *d, group *g)
{
    const lq_change *ev = d->ev;
    int has_orig = ev->original != NULL;
    int m_cur, m_orig;
    lq_event_type t_master;
    sub *s;

    if (g->stamp == d->r->stamp)
        return;
    g->stamp = d->r->stamp;
    d->r->visited++;
    m_cur = lq_query_match(g->q, ev->object, d->now_ms);
    m_orig = has_orig && lq_query_match(g->q, ev->original, d->now_ms);
    if (!m_cur && !m_orig)
        return;
    t_master = lq_event_classify(ev->op, has_orig, m_orig, m_cur);

    DL_FOREACH(g->subs, s) {
        if (s->gate) { /* the resume extension: rare */
            if (s->paused || (ev->seq > 0 && ev->seq <= s->floor))
                continue;
            if (ev->seq > 0)
                s->gate = 0; /* past its floor: later seqs are higher (a new epoch closes it) */
        }
        visit_sub(d, s, m_cur, m_orig, t_master);
    }
}

static void visit_bucket(dispatch *d, ifield *f, const json_t *v)
{
    char key[INDEX_KEY_MAX];
    bucket *b;
    group *g, *tmp;

    if (lq_query_value_key(v, key, sizeof(key)) < 0)
        return;
    HASH_FIND_STR(f->buckets, key, b);
    if (b == NULL)
        return;
    DL_FOREACH_SAFE(b->groups, g, tmp) {
        visit(d, g);
    }
}

static void visit_field(dispatch *d, ifield *f, const json_t *obj)
{
    const json_t *v = obj ? json_object_get(obj, f->name) : NULL;
    size_t i;
    json_t *e;

    if (v == NULL)
        return;
    if (json_is_array(v)) { /* equality on an array field means "contains" */
        json_array_foreach(v, i, e) {
            visit_bucket(d, f, e);
        }
    } else {
        visit_bucket(d, f, v);
    }
}

/* Sets d up for one event of class c's subscriptions. */
static void dispatch_begin(dispatch *d, lq_registry *r, const lq_change *ev, int64_t now_ms,
                           lq_deliver_fn deliver, void *ud)
{
    memset(d, 0, sizeof(*d));
    d->r = r;
    d->ev = ev;
    d->now_ms = now_ms;
    d->deliver = deliver;
    d->ud = ud;
    r->stamp++;
    dispatch_stamp++;
    d->clp = clp_find(r, ev->class_name);
    d->dynamic = (d->clp && d->clp->dynamic) || strcmp(ev->class_name, "_User") == 0;
    d->internal = ev->class_name[0] == '_' && strcmp(ev->class_name, "_User") != 0 &&
                  strcmp(ev->class_name, "_Role") != 0;
    acl_view_init(&d->acl[0], ev->object);
    acl_view_init(&d->acl[1], ev->original);
}

/* Releases what the dispatch built and adds its metrics. */
static void dispatch_end(dispatch *d)
{
    lq_registry *r = d->r;

    /* bodies live only as long as the dispatch (plus the references the
     * deliver callback took) */
    for (size_t i = 0; i < r->ntouched; i++) {
        keyset *ks = r->touched[i];
        for (int j = 0; j < ks->nbodies; j++)
            lq_body_decref(ks->bodies[j].body);
        ks->nbodies = 0;
        ks->touched = 0;
    }
    r->ntouched = 0;
    if (d->withheld_acl)
        LQ_METRIC_ADD(deliveries_withheld_acl, d->withheld_acl);
    if (d->withheld_clp)
        LQ_METRIC_ADD(deliveries_withheld_clp, d->withheld_clp);
    if (d->hidden)
        LQ_METRIC_ADD(deliveries_fields_hidden, d->hidden);
    if (r->sweep_hiddens) { /* per-object hidden sets nobody holds */
        hidden *h, *htmp;
        HASH_ITER(hh, r->hiddens, h, htmp) {
            if (h->refs == 0) {
                h->refs = 1;
                hidden_put(r, h);
            }
        }
        r->sweep_hiddens = 0;
    }
}

size_t lq_registry_dispatch(lq_registry *r, const lq_change *ev, int64_t now_ms,
                            lq_deliver_fn deliver, void *ud)
{
    dispatch d;
    cls *c;
    group *g;
    ifield *f, *ftmp;

    r->visited = 0;
    HASH_FIND_STR(r->classes, ev->class_name, c);
    if (c == NULL) {
        LQ_METRIC_INC(events_unwatched);
        return 0;
    }
    dispatch_begin(&d, r, ev, now_ms, deliver, ud);
    DL_FOREACH(c->unindexed, g) {
        visit(&d, g);
    }
    HASH_ITER(hh, c->fields, f, ftmp) {
        visit_field(&d, f, ev->object);
        visit_field(&d, f, ev->original);
    }
    dispatch_end(&d);
    return d.delivered;
}

/*---- the resume extension ------------------------------------------------------*/

int lq_registry_paused(const lq_registry *r, uint64_t token, void **conn, double *rid)
{
    sub *s;

    HASH_FIND(phh, r->paused, &token, sizeof(token), s);
    if (s == NULL)
        return 0;
    *conn = s->client->conn;
    *rid = s->rid;
    return 1;
}

long lq_registry_activate(lq_registry *r, uint64_t token, const lq_change *replay, int64_t floor,
                          int64_t now_ms, lq_deliver_fn deliver, void *ud)
{
    sub *s;
    long n = 0;

    HASH_FIND(phh, r->paused, &token, sizeof(token), s);
    if (s == NULL)
        return -1;
    HASH_DELETE(phh, r->paused, s);
    s->client->npaused--;
    s->paused = 0;
    s->floor = floor;
    s->gate = floor > 0;
    for (const lq_change *ev = replay; ev; ev = ev->next) {
        dispatch d;
        int has_orig = ev->original != NULL;
        if (ev->op != LQ_CHANGE_CREATE && ev->op != LQ_CHANGE_UPDATE && ev->op != LQ_CHANGE_DELETE)
            continue;
        if (strcmp(ev->class_name, s->g->c->name) != 0)
            continue;
        int m_cur = lq_query_match(s->g->q, ev->object, now_ms);
        int m_orig = has_orig && lq_query_match(s->g->q, ev->original, now_ms);
        if (!m_cur && !m_orig)
            continue;
        dispatch_begin(&d, r, ev, now_ms, deliver, ud);
        visit_sub(&d, s, m_cur, m_orig, lq_event_classify(ev->op, has_orig, m_orig, m_cur));
        dispatch_end(&d);
        n += (long)d.delivered;
    }
    return n;
}

/*---- the query op ----------------------------------------------------------------*/

int lq_registry_sub_info(const lq_client *c, double rid, const char **class_name, const char **where)
{
    const sub *s = c ? client_sub(c, norm_rid(rid)) : NULL;
    if (s == NULL)
        return -1;
    if (class_name)
        *class_name = s->g->c->name;
    if (where)
        *where = s->where;
    return s->paused;
}

/* The view of obj (an object of s's class) that s would get in a create
 * event, without watch: appended to out when s's query matches it and s may
 * read it. Returns 1 when appended. */
static int sub_view(lq_registry *r, sub *s, const json_t *obj, int64_t now_ms, lq_buf *out)
{
    lq_change ev;
    dispatch d;
    int read_cur, read_orig;

    if (!json_is_object(obj) || !lq_query_match(s->g->q, obj, now_ms))
        return 0;
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.class_name, sizeof(ev.class_name), "%s", s->g->c->name);
    ev.op = LQ_CHANGE_CREATE;
    ev.object = (json_t *)obj; /* only read */
    dispatch_begin(&d, r, &ev, now_ms, NULL, NULL);
    lq_event_type t = sub_event(&d, s, 1, 0, LQ_EV_CREATE, &read_cur, &read_orig);
    if (t == LQ_EV_CREATE) {
        const hidden *hid = delivery_hidden(&d, s, SHAPE_OBJECT);
        lq_buf_parse_object_hiding(out, obj, (const char *const *)s->ks->names,
                                   hid ? (const char *const *)hid->names : NULL);
    }
    d.withheld_acl = d.withheld_clp = 0; /* live-delivery metrics: not for results */
    dispatch_end(&d);
    return t == LQ_EV_CREATE;
}

long lq_registry_results(lq_registry *r, lq_client *c, double rid, uint64_t token,
                         const json_t *(*next)(void *it), void *it, int64_t now_ms,
                         size_t max_objects, size_t max_bytes, lq_buf *out, int *truncated)
{
    sub *s = c ? client_sub(c, norm_rid(rid)) : NULL;
    const json_t *obj;
    long n = 0;
    size_t start = out->len;

    *truncated = 0;
    if (s == NULL || (token != 0 && (s->qh == NULL || s->qh->token != token)))
        return -1;
    while ((obj = next(it)) != NULL) {
        size_t before = out->len;
        if (n > 0)
            lq_buf_putc(out, ',');
        if (!sub_view(r, s, obj, now_ms, out)) {
            out->len = before;
            continue;
        }
        if ((size_t)n >= max_objects || out->len - start > max_bytes) {
            out->len = before; /* a visible object that does not fit */
            *truncated = 1;
            break;
        }
        n++;
    }
    if (out->cap > out->len)
        out->data[out->len] = '\0';
    return n;
}

int lq_registry_hold(lq_registry *r, lq_client *c, double rid, uint64_t token, size_t max_events,
                     size_t max_bytes)
{
    sub *s = c ? client_sub(c, norm_rid(rid)) : NULL;

    (void)r;
    if (s == NULL)
        return -1;
    if (s->qh)
        return 0;
    s->qh = lq_xcalloc(1, sizeof(*s->qh));
    s->qh->token = token;
    s->qh->max_n = max_events;
    s->qh->max_bytes = max_bytes;
    s->ct_floor = 0; /* the new snapshot is later than any earlier one */
    return 1;
}

long lq_registry_release(lq_registry *r, lq_client *c, double rid, uint64_t token, uint64_t ct,
                         lq_deliver_fn deliver, void *ud)
{
    sub *s = c ? client_sub(c, norm_rid(rid)) : NULL;
    dispatch d;

    if (s == NULL || s->qh == NULL || s->qh->token != token)
        return -1;
    memset(&d, 0, sizeof(d));
    d.r = r;
    d.deliver = deliver;
    d.ud = ud;
    hold_flush(&d, s, ct);
    s->ct_floor = ct;
    return (long)d.delivered;
}
