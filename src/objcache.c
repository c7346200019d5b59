/* objcache.c - see objcache.h. */
#include "livequery/objcache.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>
#include <utlist.h>

#include "livequery/jsonout.h"

typedef struct ent {
    char *id;        /* the objectId */
    UT_hash_handle hh;
    json_t *obj;     /* a reference */
    struct ent *prev, *next; /* most recently changed first */
} ent;

typedef struct klass {
    char *name;
    UT_hash_handle hh;
    ent *by_id;
    ent *order;
    size_t n;
} klass;

struct lq_objcache {
    size_t per_class;
    klass *classes;
    size_t total;
};

lq_objcache *lq_objcache_new(size_t per_class)
{
    lq_objcache *c = lq_xcalloc(1, sizeof(*c));
    c->per_class = per_class;
    return c;
}

static void ent_remove(lq_objcache *c, klass *k, ent *e)
{
    HASH_DEL(k->by_id, e);
    DL_DELETE(k->order, e);
    k->n--;
    c->total--;
    json_decref(e->obj);
    free(e->id);
    free(e);
}

static void klass_clear(lq_objcache *c, klass *k)
{
    while (k->order)
        ent_remove(c, k, k->order);
}

void lq_objcache_free(lq_objcache *c)
{
    klass *k, *tmp;

    if (c == NULL)
        return;
    HASH_ITER(hh, c->classes, k, tmp) {
        klass_clear(c, k);
        HASH_DEL(c->classes, k);
        free(k->name);
        free(k);
    }
    free(c);
}

static klass *klass_get(lq_objcache *c, const char *name, int create)
{
    klass *k;

    HASH_FIND_STR(c->classes, name, k);
    if (k || !create)
        return k;
    k = lq_xcalloc(1, sizeof(*k));
    k->name = lq_xstrdup(name);
    HASH_ADD_KEYPTR(hh, c->classes, k->name, strlen(k->name), k);
    return k;
}

void lq_objcache_apply(lq_objcache *c, const lq_change *ev)
{
    klass *k;
    ent *e;
    const char *id;

    if (c == NULL || strncmp(ev->class_name, "_Join:", 6) == 0)
        return;
    if (ev->op == LQ_CHANGE_RESYNC) { /* what was kept may have missed changes */
        if ((k = klass_get(c, ev->class_name, 0)) != NULL)
            klass_clear(c, k);
        return;
    }
    if (ev->op != LQ_CHANGE_CREATE && ev->op != LQ_CHANGE_UPDATE && ev->op != LQ_CHANGE_DELETE)
        return;
    id = json_string_value(json_object_get(ev->object, "objectId"));
    if (id == NULL)
        return;
    k = klass_get(c, ev->class_name, ev->op != LQ_CHANGE_DELETE && c->per_class > 0);
    if (k == NULL)
        return;
    HASH_FIND_STR(k->by_id, id, e);
    if (ev->op == LQ_CHANGE_DELETE) {
        if (e)
            ent_remove(c, k, e);
        return;
    }
    if (e) { /* the new state, now the most recently changed */
        json_decref(e->obj);
        e->obj = json_incref(ev->object);
        DL_DELETE(k->order, e);
        DL_PREPEND(k->order, e);
        return;
    }
    e = lq_xcalloc(1, sizeof(*e));
    e->id = lq_xstrdup(id);
    e->obj = json_incref(ev->object);
    HASH_ADD_KEYPTR(hh, k->by_id, e->id, strlen(e->id), e);
    DL_PREPEND(k->order, e);
    k->n++;
    c->total++;
    while (k->n > c->per_class) /* the least recently changed goes */
        ent_remove(c, k, k->order->prev);
}

size_t lq_objcache_count(const lq_objcache *c, const char *class_name)
{
    klass *k = c ? klass_get((lq_objcache *)c, class_name, 0) : NULL;
    return k ? k->n : 0;
}

size_t lq_objcache_total(const lq_objcache *c)
{
    return c ? c->total : 0;
}

void lq_objcache_iter_init(lq_objcache_iter *it, const lq_objcache *c, const char *class_name)
{
    klass *k = c ? klass_get((lq_objcache *)c, class_name, 0) : NULL;
    it->next = k ? k->order : NULL;
}

const json_t *lq_objcache_next(void *itp)
{
    lq_objcache_iter *it = itp;
    const ent *e = it->next;

    if (e == NULL)
        return NULL;
    it->next = e->next;
    return e->obj;
}
