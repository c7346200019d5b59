/* test_objcache.c - the last-seen objects behind the query op without MongoDB. */
#include <string.h>

#include "livequery/objcache.h"
#include "lq_test.h"

static void apply(lq_objcache *c, lq_change_op op, const char *cls, const char *obj)
{
    json_error_t e;
    lq_change ev;
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.class_name, sizeof(ev.class_name), "%s", cls);
    ev.op = op;
    ev.object = obj ? json_loads(obj, 0, &e) : NULL;
    lq_objcache_apply(c, &ev);
    json_decref(ev.object);
}

/* The objectIds of a class, most recently changed first, joined by commas. */
static const char *ids(const lq_objcache *c, const char *cls)
{
    static char out[256];
    lq_objcache_iter it;
    const json_t *o;
    out[0] = '\0';
    lq_objcache_iter_init(&it, c, cls);
    while ((o = lq_objcache_next(&it)) != NULL) {
        if (out[0])
            strcat(out, ",");
        strcat(out, json_string_value(json_object_get(o, "objectId")));
    }
    return out;
}

static void test_lifecycle(void)
{
    lq_objcache *c = lq_objcache_new(3);

    apply(c, LQ_CHANGE_CREATE, "A", "{\"objectId\":\"a\",\"n\":1}");
    apply(c, LQ_CHANGE_CREATE, "A", "{\"objectId\":\"b\",\"n\":1}");
    apply(c, LQ_CHANGE_CREATE, "B", "{\"objectId\":\"a\",\"n\":9}");
    ASSERT_STREQ(ids(c, "A"), "b,a");
    ASSERT_EQ(lq_objcache_count(c, "A"), 2);
    ASSERT_EQ(lq_objcache_total(c), 3);
    /* an update replaces the state and makes it the most recent */
    apply(c, LQ_CHANGE_UPDATE, "A", "{\"objectId\":\"a\",\"n\":2}");
    ASSERT_STREQ(ids(c, "A"), "a,b");
    lq_objcache_iter it;
    lq_objcache_iter_init(&it, c, "A");
    ASSERT_EQ(json_integer_value(json_object_get(lq_objcache_next(&it), "n")), 2);
    /* an update of an object never seen is kept too (its state is complete) */
    apply(c, LQ_CHANGE_UPDATE, "A", "{\"objectId\":\"c\",\"n\":1}");
    ASSERT_STREQ(ids(c, "A"), "c,a,b");
    /* the bound: the least recently changed goes */
    apply(c, LQ_CHANGE_CREATE, "A", "{\"objectId\":\"d\",\"n\":1}");
    ASSERT_STREQ(ids(c, "A"), "d,c,a");
    /* delete removes; a delete of something unknown changes nothing */
    apply(c, LQ_CHANGE_DELETE, "A", "{\"objectId\":\"c\"}");
    apply(c, LQ_CHANGE_DELETE, "A", "{\"objectId\":\"zz\"}");
    apply(c, LQ_CHANGE_DELETE, "Z", "{\"objectId\":\"zz\"}");
    ASSERT_STREQ(ids(c, "A"), "d,a");
    /* resync empties the class; other kinds of change are ignored */
    apply(c, LQ_CHANGE_SCHEMA, "A", NULL);
    apply(c, LQ_CHANGE_RESYNC, "A", NULL);
    ASSERT_STREQ(ids(c, "A"), "");
    ASSERT_STREQ(ids(c, "B"), "a");
    /* _Join: rows are not kept (nobody subscribes to them) */
    apply(c, LQ_CHANGE_CREATE, "_Join:users:_Role", "{\"objectId\":\"j\"}");
    ASSERT_EQ(lq_objcache_count(c, "_Join:users:_Role"), 0);
    ASSERT_STREQ(ids(c, "Nope"), "");
    lq_objcache_free(c);

    c = lq_objcache_new(0); /* --initial-cache-size 0: nothing kept */
    apply(c, LQ_CHANGE_CREATE, "A", "{\"objectId\":\"a\"}");
    ASSERT_EQ(lq_objcache_total(c), 0);
    lq_objcache_free(c);
    lq_objcache_free(NULL);
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {{"lifecycle", test_lifecycle}, {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
