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

#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

#include "livequery/jsonout.h"
#include "livequery/metrics.h"

#define INDEX_KEY_MAX 512 /* bytes of an equality index key, NUL included */

typedef struct keyset {
    struct keyset *next;
    char **names;  /* sorted, NULL-terminated; NULL: all fields */
    int refs;
    int touched;   /* bodies hold this dispatch's frames */
    lq_body *body[2]; /* [0] object only, [1] object + original */
} keyset;

typedef struct group group;
typedef struct cls cls;

typedef struct sub {
    double rid;
    UT_hash_handle hh; /* in client->subs */
    struct sub *prev, *next; /* in group->subs */
    lq_client *client;
    group *g;
    keyset *ks;
    char **watch; /* NULL-terminated, or NULL */
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
    lq_client *prev, *next; /* in registry->clients */
};

struct lq_registry {
    lq_registry_limits lim;
    cls *classes;
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

static void free_strv(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

static void keyset_release(group *g, keyset *ks)
{
    if (--ks->refs > 0)
        return;
    LL_DELETE(g->keysets, ks);
    lq_body_decref(ks->body[0]);
    lq_body_decref(ks->body[1]);
    free_strv(ks->names);
    free(ks);
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

    HASH_DEL(cl->subs, s);
    cl->nsubs--;
    DL_DELETE(g->subs, s);
    g->nsubs--;
    keyset_release(g, s->ks);
    free_strv(s->watch);
    free(s);
    r->nsubs--;
    LQ_METRIC_ADD(subscriptions, -1);
    if (g->nsubs == 0)
        group_free(r, g);
}

void lq_registry_free(lq_registry *r)
{
    if (r == NULL)
        return;
    while (r->clients)
        lq_registry_client_free(r, r->clients);
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
    HASH_ITER(hh, c->subs, s, tmp) {
        sub_remove(r, s);
    }
    DL_DELETE(r->clients, c);
    free(c);
}

int lq_registry_client_count(const lq_client *c)
{
    return c->nsubs;
}

int lq_registry_client_watches(const lq_client *c, const char *class_name)
{
    for (const sub *s = c->subs; s; s = s->hh.next)
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

static int strv_equal(char **a, char **b)
{
    if (a == NULL || b == NULL)
        return a == b;
    for (; *a && *b; a++, b++)
        if (strcmp(*a, *b) != 0)
            return 0;
    return *a == *b;
}

/* The group's keyset for names (taken), shared with every subscriber of the
 * group that asked for the same projection. */
static keyset *keyset_get(group *g, char **names)
{
    keyset *ks;

    LL_FOREACH(g->keysets, ks) {
        if (strv_equal(ks->names, names)) {
            ks->refs++;
            free_strv(names);
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

int lq_registry_subscribe(lq_registry *r, lq_client *cl, const lq_request *req, lq_error *err)
{
    double rid = norm_rid(req->request_id);
    sub *old, *s;
    lq_query *q;

    if (!lq_class_name_valid(req->class_name)) {
        lq_error_set(err, LQ_PARSE_ERR_INVALID_QUERY, "invalid className: %.128s", req->class_name);
        return LQ_ERR;
    }
    HASH_FIND(hh, cl->subs, &rid, sizeof(rid), old);
    if (old == NULL && cl->nsubs >= r->lim.max_subscriptions) {
        lq_error_set(err, LQ_PARSE_ERR_LIMIT, "too many subscriptions on this connection (limit %d)",
                     r->lim.max_subscriptions);
        return LQ_ERR;
    }
    /* json_dumpb with no buffer only measures */
    if (json_dumpb(req->where, NULL, 0, JSON_COMPACT) > r->lim.max_query_bytes) {
        lq_error_set(err, LQ_PARSE_ERR_INVALID_QUERY, "query is larger than %zu bytes",
                     r->lim.max_query_bytes);
        return LQ_ERR;
    }
    q = lq_query_compile(req->class_name, req->where, &r->lim.query, err);
    if (q == NULL)
        return LQ_ERR;
    if (old)
        sub_remove(r, old);

    s = lq_xcalloc(1, sizeof(*s));
    s->rid = rid;
    s->client = cl;
    s->g = group_get(r, req->class_name, q); /* takes q */
    s->ks = keyset_get(s->g, strv_from_json(req->keys, 1));
    s->watch = strv_from_json(req->watch, 0);
    DL_APPEND(s->g->subs, s);
    s->g->nsubs++;
    HASH_ADD(hh, cl->subs, rid, sizeof(s->rid), s);
    cl->nsubs++;
    r->nsubs++;
    LQ_METRIC_INC(subscriptions);
    return LQ_OK;
}

int lq_registry_unsubscribe(lq_registry *r, lq_client *cl, double request_id)
{
    double rid = norm_rid(request_id);
    sub *s;

    HASH_FIND(hh, cl->subs, &rid, sizeof(rid), s);
    if (s == NULL)
        return LQ_ERR_NOTFOUND;
    sub_remove(r, s);
    return LQ_OK;
}

/*---- dispatch ----------------------------------------------------------------*/

typedef struct dispatch {
    lq_registry *r;
    const lq_change *ev;
    int64_t now_ms;
    int pub_cur, pub_orig;
    lq_deliver_fn deliver;
    void *ud;
    size_t delivered;
} dispatch;

static lq_body *keyset_body(dispatch *d, keyset *ks, int with_original)
{
    lq_registry *r = d->r;

    if (!ks->touched) {
        ks->touched = 1;
        if (r->ntouched == r->cap_touched) {
            r->cap_touched = r->cap_touched ? r->cap_touched * 2 : 64;
            r->touched = lq_xrealloc(r->touched, r->cap_touched * sizeof(keyset *));
        }
        r->touched[r->ntouched++] = ks;
    }
    if (ks->body[with_original] == NULL)
        ks->body[with_original] = lq_body_event(d->ev->object, with_original ? d->ev->original : NULL,
                                                (const char *const *)ks->names);
    return ks->body[with_original];
}

static void visit(dispatch *d, group *g)
{
    const lq_change *ev = d->ev;
    int has_orig = ev->original != NULL;
    int m_cur, m_orig;
    lq_event_type t_master, t_public;
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
    t_public = lq_event_classify(ev->op, has_orig, m_orig && d->pub_orig, m_cur && d->pub_cur);

    DL_FOREACH(g->subs, s) {
        lq_event_type t = s->client->master ? t_master : t_public;
        if (t == LQ_EV_NONE) {
            if (t_master != LQ_EV_NONE)
                LQ_METRIC_INC(deliveries_withheld_acl);
            continue;
        }
        if (!lq_event_watch_passes(t, (const char *const *)s->watch, ev->object, ev->original))
            continue;
        lq_body *body = keyset_body(d, s->ks, lq_event_has_original(t) && has_orig);
        d->deliver(s->client->conn, body, t, s->rid, d->ud);
        d->delivered++;
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

size_t lq_registry_dispatch(lq_registry *r, const lq_change *ev, int64_t now_ms,
                            lq_deliver_fn deliver, void *ud)
{
    dispatch d = {r, ev, now_ms, 0, 0, deliver, ud, 0};
    cls *c;
    group *g;
    ifield *f, *ftmp;

    r->visited = 0;
    HASH_FIND_STR(r->classes, ev->class_name, c);
    if (c == NULL) {
        LQ_METRIC_INC(events_unwatched);
        return 0;
    }
    r->stamp++;
    d.pub_cur = lq_acl_public_read(ev->object);
    d.pub_orig = ev->original ? lq_acl_public_read(ev->original) : 0;

    DL_FOREACH(c->unindexed, g) {
        visit(&d, g);
    }
    HASH_ITER(hh, c->fields, f, ftmp) {
        visit_field(&d, f, ev->object);
        visit_field(&d, f, ev->original);
    }
    /* bodies live only as long as the dispatch (plus the references the
     * deliver callback took) */
    for (size_t i = 0; i < r->ntouched; i++) {
        keyset *ks = r->touched[i];
        lq_body_decref(ks->body[0]);
        lq_body_decref(ks->body[1]);
        ks->body[0] = ks->body[1] = NULL;
        ks->touched = 0;
    }
    r->ntouched = 0;
    return d.delivered;
}
