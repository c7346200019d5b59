/* event.c - see event.h. */
#include "livequery/event.h"

#include <stdlib.h>
#include <string.h>

#include "livequery/json.h"
#include "livequery/jsonout.h"

void lq_change_free(lq_change *ev)
{
    if (ev == NULL)
        return;
    while (ev->replay) {
        lq_change *r = ev->replay;
        ev->replay = r->next;
        lq_change_free(r);
    }
    json_decref(ev->object);
    json_decref(ev->original);
    json_decref(ev->clp);
    free(ev);
}

int lq_class_name_valid(const char *name)
{
    size_t n = 0;
    if (name == NULL)
        return 0;
    for (const char *p = name; *p; p++, n++) {
        char c = *p;
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' ||
                 (n > 0 && c >= '0' && c <= '9');
        if (!ok || n >= LQ_CLASS_NAME_MAX)
            return 0;
    }
    return n > 0;
}

const char *lq_event_name(lq_event_type t)
{
    static const char *const names[] = {"create", "enter", "update", "leave", "delete"};
    return t >= LQ_EV_CREATE && t <= LQ_EV_DELETE ? names[t] : "none";
}

lq_event_type lq_event_classify(lq_change_op op, int has_original, int orig_visible,
                                int cur_visible)
{
    switch (op) {
    case LQ_CHANGE_RESYNC:
    case LQ_CHANGE_SCHEMA:
    case LQ_CHANGE_CLEAR_CACHE:
    case LQ_CHANGE_POSITION:
        return LQ_EV_NONE;
    case LQ_CHANGE_DELETE:
        return cur_visible ? LQ_EV_DELETE : LQ_EV_NONE;
    case LQ_CHANGE_CREATE:
        return cur_visible ? LQ_EV_CREATE : LQ_EV_NONE;
    case LQ_CHANGE_UPDATE:
        if (!has_original)
            return cur_visible ? LQ_EV_UPDATE : LQ_EV_NONE;
        if (orig_visible && cur_visible)
            return LQ_EV_UPDATE;
        if (orig_visible)
            return LQ_EV_LEAVE;
        if (cur_visible)
            return LQ_EV_ENTER;
        return LQ_EV_NONE;
    }
    return LQ_EV_NONE;
}

int lq_event_has_original(lq_event_type t)
{
    return t == LQ_EV_UPDATE || t == LQ_EV_ENTER || t == LQ_EV_LEAVE;
}

int lq_event_watch_passes(lq_event_type t, const char *const *watch, const json_t *object,
                          const json_t *original)
{
    if (watch == NULL || (t != LQ_EV_CREATE && t != LQ_EV_UPDATE))
        return 1;
    for (; *watch; watch++) {
        const json_t *now = json_object_get(object, *watch);
        const json_t *before = original ? json_object_get(original, *watch) : NULL;
        if (!lq_json_equal(now, before))
            return 1;
    }
    return 0;
}

int lq_acl_public_read(const json_t *obj)
{
    const json_t *acl = json_object_get(obj, "ACL");
    if (acl == NULL)
        return 1;
    return json_is_true(json_object_get(json_object_get(acl, "*"), "read"));
}

lq_body *lq_body_new(const char *data, size_t len)
{
    lq_body *b = lq_xmalloc(sizeof(*b) + len + 1);
    b->refs = 1;
    b->len = len;
    memcpy(b->data, data, len);
    b->data[len] = '\0';
    return b;
}

lq_body *lq_body_event(const json_t *object, const json_t *original, const char *const *keys)
{
    return lq_body_event_hiding(object, original, keys, NULL);
}

lq_body *lq_body_event_hiding(const json_t *object, const json_t *original, const char *const *keys,
                              const char *const *hidden)
{
    /* one scratch buffer for the service thread: bodies are built one at a time */
    static _Thread_local lq_buf scratch;

    scratch.len = 0;
    lq_buf_puts(&scratch, "\"object\":");
    lq_buf_parse_object_hiding(&scratch, object, keys, hidden);
    if (original) {
        lq_buf_puts(&scratch, ",\"original\":");
        lq_buf_parse_object_hiding(&scratch, original, keys, hidden);
    }
    lq_buf_putc(&scratch, '}');
    return lq_body_new(scratch.data, scratch.len);
}

void lq_body_incref(lq_body *b)
{
    b->refs++;
}

void lq_body_decref(lq_body *b)
{
    if (b && --b->refs == 0)
        free(b);
}
