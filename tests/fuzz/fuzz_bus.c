/*
 * fuzz_bus - one message from Redis: the first byte picks the channel kind
 * (our changes channel, Parse Server's afterSave / afterDelete / clearCache),
 * the rest is the payload for lq_bus_parse. A parsed change then goes where
 * a gateway sends it: object ACL and CLP checks, protectedFields, the event
 * body, for an anonymous client and for a user with roles.
 *
 * Oracles: a refusal always gives a reason; an accepted change has a valid
 * class name for its channel and an object where its op needs one.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "livequery/acl.h"
#include "livequery/bus.h"
#include "livequery/event.h"

static lq_principals *user;

static void init(void)
{
    static const char *const roles[] = {"manager", "staff"};
    if (user)
        return;
    user = lq_principals_new_user("u1");
    lq_principals_set_roles(user, roles, 2);
}

static void deliver(const lq_change *ev, lq_principals *p)
{
    char **ptr = NULL, **hidden, **per_obj;
    lq_error err;
    int is_get = 0;

    switch (lq_clp_check(ev->clp, ev->class_name, is_get, p, &ptr, &err)) {
    case LQ_CLP_POINTER:
        (void)lq_clp_pointer_match((const char *const *)ptr, p, ev->object);
        break;
    case LQ_CLP_ALLOW:
    case LQ_CLP_FORBIDDEN:
    case LQ_CLP_NEED_AUTH:
        break;
    }
    lq_strv_free(ptr);
    if (ev->object == NULL)
        return;
    hidden = lq_protected_static(ev->clp, ev->class_name, NULL, p);
    per_obj = lq_protected_dynamic(ev->clp, ev->class_name)
                  ? lq_protected_for_object(ev->clp, ev->class_name, (const char *const *)hidden, p,
                                            ev->object)
                  : NULL;
    if (lq_acl_can_read(p, ev->object)) {
        int orig = ev->original && lq_acl_can_read(p, ev->original);
        lq_body *b = lq_body_event_hiding(ev->object, orig ? ev->original : NULL, NULL,
                                          (const char *const *)(per_obj ? per_obj : hidden));
        lq_body_decref(b);
    }
    lq_strv_free(hidden);
    lq_strv_free(per_obj);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *reason = NULL;
    lq_change *ev;
    lq_bus_channel kind;

    if (size < 1)
        return 0;
    init();
    kind = (lq_bus_channel)(data[0] % 4);
    ev = lq_bus_parse(kind, (const char *)data + 1, size - 1, &reason);
    if (ev == NULL) {
        if (reason == NULL)
            abort();
        return 0;
    }
    if (ev->next != NULL || memchr(ev->class_name, 0, sizeof(ev->class_name)) == NULL)
        abort();
    if (kind == LQ_BUS_PARSE_CLEAR_CACHE) {
        if (ev->op != LQ_CHANGE_CLEAR_CACHE)
            abort();
    } else {
        int ok = kind == LQ_BUS_OURS ? lq_bus_class_name_valid(ev->class_name)
                                     : lq_class_name_valid(ev->class_name);
        int needs_object = ev->op == LQ_CHANGE_CREATE || ev->op == LQ_CHANGE_UPDATE ||
                           ev->op == LQ_CHANGE_DELETE;
        if (!ok || (needs_object && !json_is_object(ev->object)))
            abort();
        deliver(ev, lq_principals_anonymous());
        deliver(ev, user);
    }
    lq_change_free(ev);
    return 0;
}
