/* test_bus.c - bus message parsing (protocol/bus.md), both intakes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "livequery/bus.h"
#include "lq_test.h"

static lq_change *parse(lq_bus_channel kind, const char *s, const char **why)
{
    *why = NULL;
    return lq_bus_parse(kind, s, strlen(s), why);
}

static void test_ours(void)
{
    const char *why;
    lq_change *ev = parse(LQ_BUS_OURS,
                          "{\"v\":1,\"className\":\"BookStockLog\",\"op\":\"update\",\"object\":{\"objectId\":\"a\",\"q\":2},"
                          "\"original\":{\"objectId\":\"a\",\"q\":1},\"seq\":7,\"epoch\":\"e\",\"ts\":123}",
                          &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_STREQ(ev->class_name, "BookStockLog");
    ASSERT_EQ(ev->op, LQ_CHANGE_UPDATE);
    ASSERT_EQ(ev->seq, 7);
    ASSERT_EQ(ev->ts_ms, 123);
    /* className is added to objects that lack it: the SDK needs it */
    ASSERT_STREQ(json_string_value(json_object_get(ev->object, "className")), "BookStockLog");
    ASSERT_STREQ(json_string_value(json_object_get(ev->original, "className")), "BookStockLog");
    lq_change_free(ev);

    ev = parse(LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"},\"original\":{\"objectId\":\"a\"}}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_TRUE(ev->original == NULL); /* original only means something on update */
    lq_change_free(ev);
}

/* ct: the MongoDB cluster time of a change, "<t>.<i>" -> (t << 32) | i (protocol/bus.md). */
static void test_cluster_time(void)
{
    static const char *const bad[] = {"\"1\"", "\"1.\"", "\".1\"", "\"01.2\"", "\"1.02\"", "\"-1.2\"",
                                      "\"1.2.3\"", "\"4294967296.0\"", "\"1.4294967296\"", "\"0.0\"",
                                      "\" 1.2\"", "\"1.2 \"", "12", "null", "{}", "\"1.2\\u0000\""};
    const char *why;
    char msg[256];
    lq_change *ev = parse(LQ_BUS_OURS,
                          "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"},"
                          "\"seq\":1,\"epoch\":\"e\",\"ct\":\"1764000000.7\"}",
                          &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_TRUE(ev->ct == ((uint64_t)1764000000 << 32 | 7));
    lq_change_free(ev);
    ev = parse(LQ_BUS_OURS,
               "{\"v\":1,\"className\":\"B\",\"op\":\"update\",\"object\":{\"objectId\":\"a\"},"
               "\"ct\":\"4294967295.4294967295\"}",
               &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_TRUE(ev->ct == UINT64_MAX);
    lq_change_free(ev);
    ev = parse(LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_TRUE(ev->ct == 0); /* optional */
    lq_change_free(ev);
    /* Parse Server's messages never have one (a field of that name is ignored) */
    ev = parse(LQ_BUS_PARSE_SAVE, "{\"currentParseObject\":{\"objectId\":\"H\",\"className\":\"B\"},\"ct\":\"1.1\"}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_TRUE(ev->ct == 0);
    lq_change_free(ev);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(msg, sizeof(msg),
                 "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"},\"ct\":%s}", bad[i]);
        ev = parse(LQ_BUS_OURS, msg, &why);
        if (ev != NULL)
            fprintf(stderr, "accepted ct %s\n", bad[i]);
        ASSERT_TRUE(ev == NULL);
        ASSERT_STREQ(why, "ct is not a cluster time \"<t>.<i>\"");
    }
}

static void test_parse_server(void)
{
    const char *why;
    lq_change *ev = parse(LQ_BUS_PARSE_SAVE,
                          "{\"currentParseObject\":{\"isbn\":\"978\",\"quantityOnHand\":12,\"objectId\":\"H\",\"__type\":\"Object\","
                          "\"className\":\"BookStockLog\"},\"originalParseObject\":{\"quantityOnHand\":10,\"objectId\":\"H\","
                          "\"__type\":\"Object\",\"className\":\"BookStockLog\"},\"classLevelPermissions\":{}}",
                          &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->op, LQ_CHANGE_UPDATE);
    ASSERT_TRUE(ev->original != NULL);
    lq_change_free(ev);
    ev = parse(LQ_BUS_PARSE_SAVE, "{\"currentParseObject\":{\"objectId\":\"H\",\"className\":\"B\"}}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->op, LQ_CHANGE_CREATE);
    lq_change_free(ev);
    ev = parse(LQ_BUS_PARSE_DELETE, "{\"currentParseObject\":{\"objectId\":\"H\",\"className\":\"B\"}}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->op, LQ_CHANGE_DELETE);
    lq_change_free(ev);
}

static void test_join_classes(void)
{
    const char *why;
    ASSERT_TRUE(lq_bus_class_name_valid("BookStockLog"));
    ASSERT_TRUE(lq_bus_class_name_valid("_Session"));
    ASSERT_TRUE(lq_bus_class_name_valid("_Join:users:_Role"));
    ASSERT_TRUE(lq_bus_class_name_valid("_Join:roles:_Role"));
    ASSERT_TRUE(lq_bus_class_name_valid("_Join:books:SigningSchedule"));
    ASSERT_TRUE(!lq_bus_class_name_valid(NULL));
    ASSERT_TRUE(!lq_bus_class_name_valid(""));
    ASSERT_TRUE(!lq_bus_class_name_valid("_Join:"));
    ASSERT_TRUE(!lq_bus_class_name_valid("_Join:users"));
    ASSERT_TRUE(!lq_bus_class_name_valid("_Join:users:"));
    ASSERT_TRUE(!lq_bus_class_name_valid("_Join::_Role"));
    ASSERT_TRUE(!lq_bus_class_name_valid("_Join:1users:_Role"));
    ASSERT_TRUE(!lq_bus_class_name_valid("_Join:users:_Role:x"));
    ASSERT_TRUE(!lq_bus_class_name_valid("_Join:users:Ro le"));
    /* clients still cannot name them */
    ASSERT_TRUE(!lq_class_name_valid("_Join:users:_Role"));

    /* at most LQ_CLASS_NAME_MAX bytes in all */
    char name[LQ_CLASS_NAME_MAX + 2];
    memcpy(name, "_Join:f:", 8);
    memset(name + 8, 'C', sizeof(name) - 8);
    name[LQ_CLASS_NAME_MAX] = '\0';
    ASSERT_TRUE(lq_bus_class_name_valid(name));
    name[LQ_CLASS_NAME_MAX] = 'C';
    name[LQ_CLASS_NAME_MAX + 1] = '\0';
    ASSERT_TRUE(!lq_bus_class_name_valid(name));

    /* the tailer's messages for the join collections: create, delete, resync */
    lq_change *ev = parse(LQ_BUS_OURS,
                          "{\"v\":1,\"className\":\"_Join:users:_Role\",\"op\":\"create\",\"object\":{\"objectId\":"
                          "\"65a1b2c3d4e5f60718293a4b\",\"className\":\"_Join:users:_Role\",\"relatedId\":\"u1\","
                          "\"owningId\":\"r1\",\"ACL\":{}},\"seq\":3,\"epoch\":\"e\",\"ts\":9}",
                          &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_STREQ(ev->class_name, "_Join:users:_Role");
    ASSERT_EQ(ev->op, LQ_CHANGE_CREATE);
    ASSERT_EQ(ev->seq, 3);
    ASSERT_STREQ(json_string_value(json_object_get(ev->object, "relatedId")), "u1");
    ASSERT_EQ(ev->has_clp, 0);
    lq_change_free(ev);
    ev = parse(LQ_BUS_OURS,
               "{\"v\":1,\"className\":\"_Join:roles:_Role\",\"op\":\"delete\",\"object\":{\"objectId\":\"x\"}}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->op, LQ_CHANGE_DELETE);
    ASSERT_STREQ(json_string_value(json_object_get(ev->object, "className")), "_Join:roles:_Role");
    lq_change_free(ev);
    ev = parse(LQ_BUS_OURS, "{\"v\":1,\"className\":\"_Join:users:_Role\",\"op\":\"resync\",\"epoch\":\"e2\",\"seq\":0}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->op, LQ_CHANGE_RESYNC);
    ASSERT_STREQ(ev->class_name, "_Join:users:_Role");
    lq_change_free(ev);
}

static void test_schema(void)
{
    const char *why;
    lq_change *ev = parse(LQ_BUS_OURS,
                          "{\"v\":1,\"className\":\"SigningSchedule\",\"op\":\"schema\",\"clp\":{\"find\":{\"*\":true},"
                          "\"protectedFields\":{\"*\":[\"email\"]}},\"ts\":1763940583385}",
                          &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->op, LQ_CHANGE_SCHEMA);
    ASSERT_STREQ(ev->class_name, "SigningSchedule");
    ASSERT_EQ(ev->has_clp, 1);
    ASSERT_TRUE(json_is_object(ev->clp));
    ASSERT_TRUE(json_is_true(json_object_get(json_object_get(ev->clp, "find"), "*")));
    ASSERT_TRUE(ev->object == NULL && ev->original == NULL);
    ASSERT_EQ(ev->seq, 0);
    ASSERT_STREQ(ev->epoch, "");
    ASSERT_EQ(ev->ts_ms, 1763940583385LL);
    lq_change_free(ev);

    /* null: the class has no CLP (any more) */
    ev = parse(LQ_BUS_OURS, "{\"v\":1,\"className\":\"_User\",\"op\":\"schema\",\"clp\":null}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->op, LQ_CHANGE_SCHEMA);
    ASSERT_EQ(ev->has_clp, 1);
    ASSERT_TRUE(ev->clp == NULL);
    lq_change_free(ev);

    /* seq/epoch on a schema message are not for ordering: ignored */
    ev = parse(LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"schema\",\"clp\":{},\"seq\":5,\"epoch\":\"e\"}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->seq, 0);
    ASSERT_STREQ(ev->epoch, "");
    lq_change_free(ev);

    /* events on our channel never carry a CLP */
    ev = parse(LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"},\"clp\":{}}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->has_clp, 0);
    ASSERT_TRUE(ev->clp == NULL);
    lq_change_free(ev);
}

static void test_parse_server_clp(void)
{
    const char *why;
    lq_change *ev = parse(LQ_BUS_PARSE_SAVE,
                          "{\"currentParseObject\":{\"objectId\":\"H\",\"className\":\"B\"},"
                          "\"classLevelPermissions\":{\"get\":{\"role:staff\":true},\"find\":{}}}",
                          &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->has_clp, 1);
    ASSERT_TRUE(json_is_object(ev->clp));
    ASSERT_TRUE(json_is_true(json_object_get(json_object_get(ev->clp, "get"), "role:staff")));
    json_t *clp = json_incref(ev->clp);
    lq_change_free(ev); /* the change owned its own reference */
    ASSERT_EQ(clp->refcount, 1);
    json_decref(clp);

    ev = parse(LQ_BUS_PARSE_DELETE,
               "{\"currentParseObject\":{\"objectId\":\"H\",\"className\":\"B\"},\"classLevelPermissions\":{}}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->op, LQ_CHANGE_DELETE);
    ASSERT_EQ(ev->has_clp, 1);
    ASSERT_TRUE(json_is_object(ev->clp) && json_object_size(ev->clp) == 0);
    lq_change_free(ev);

    /* absent, or not an object: no CLP carried */
    ev = parse(LQ_BUS_PARSE_SAVE, "{\"currentParseObject\":{\"objectId\":\"H\",\"className\":\"B\"}}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->has_clp, 0);
    ASSERT_TRUE(ev->clp == NULL);
    lq_change_free(ev);
    ev = parse(LQ_BUS_PARSE_SAVE, "{\"currentParseObject\":{\"objectId\":\"H\",\"className\":\"B\"},\"classLevelPermissions\":null}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->has_clp, 0);
    ASSERT_TRUE(ev->clp == NULL);
    lq_change_free(ev);
}

static void test_clear_cache(void)
{
    const char *why;
    lq_change *ev = parse(LQ_BUS_PARSE_CLEAR_CACHE, "{\"userId\":\"abc\"}", &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(ev->op, LQ_CHANGE_CLEAR_CACHE);
    ASSERT_STREQ(ev->class_name, "");
    ASSERT_TRUE(json_is_object(ev->object));
    ASSERT_STREQ(json_string_value(json_object_get(ev->object, "userId")), "abc");
    ASSERT_TRUE(ev->original == NULL && ev->clp == NULL && ev->has_clp == 0);
    ASSERT_EQ(ev->seq, 0);
    lq_change_free(ev);

    /* Parse Server sends {"userId":…}; other JSON still means "clear" */
    static const char *const other[] = {"{}", "null", "\"abc\"", "42", "[\"u\"]"};
    for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
        ev = parse(LQ_BUS_PARSE_CLEAR_CACHE, other[i], &why);
        ASSERT_TRUE(ev != NULL);
        ASSERT_EQ(ev->op, LQ_CHANGE_CLEAR_CACHE);
        ASSERT_STREQ(ev->class_name, "");
        if (i == 0)
            ASSERT_TRUE(json_is_object(ev->object));
        else
            ASSERT_TRUE(ev->object == NULL);
        lq_change_free(ev);
    }

    size_t n = LQ_BUS_MESSAGE_MAX + 1;
    char *big = malloc(n);
    memset(big, ' ', n);
    why = NULL;
    ASSERT_TRUE(lq_bus_parse(LQ_BUS_PARSE_CLEAR_CACHE, big, n, &why) == NULL);
    free(big);
    ASSERT_STREQ(why, "larger than 16 MiB");
}

static void test_invalid(void)
{
    static const struct {
        lq_bus_channel kind;
        const char *msg, *why;
    } cases[] = {
        {LQ_BUS_OURS, "nope", "not JSON"},
        {LQ_BUS_OURS, "[1]", "not a JSON object"},
        {LQ_BUS_OURS, "{\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "unsupported or missing version v"},
        {LQ_BUS_OURS, "{\"v\":2,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "unsupported or missing version v"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"upsert\",\"object\":{\"objectId\":\"a\"}}", "op is not create, update, delete, resync or schema"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"object\":{\"objectId\":\"a\"}}", "missing op"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B-1\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "missing or invalid className"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"create\"}", "object is missing, has no objectId, or names another class"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":5}}", "object is missing, has no objectId, or names another class"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\",\"className\":\"C\"}}", "object is missing, has no objectId, or names another class"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"update\",\"object\":{\"objectId\":\"a\"},\"original\":[1]}", "original is not an object of the same class"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"},\"seq\":0}", "seq is not a positive integer"},
        {LQ_BUS_OURS, "{\"v\":1,\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "not JSON"},
        {LQ_BUS_PARSE_SAVE, "{\"currentParseObject\":{\"objectId\":\"H\"}}", "missing or invalid className"},
        {LQ_BUS_PARSE_DELETE, "{}", "missing or invalid className"},
        /* _Join: classes only on our channel, and only in the _Join:<field>:<Class> form */
        {LQ_BUS_PARSE_SAVE, "{\"currentParseObject\":{\"objectId\":\"H\",\"className\":\"_Join:users:_Role\"}}", "missing or invalid className"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"_Join:users\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "missing or invalid className"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"_Join:users:_Role:x\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "missing or invalid className"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"_Join::_Role\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "missing or invalid className"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"_Join:users:\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "missing or invalid className"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"_Join:us-ers:_Role\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "missing or invalid className"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"Join:users:_Role\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}", "missing or invalid className"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"_Join:users:_Role\",\"op\":\"create\",\"object\":{\"objectId\":\"a\",\"className\":\"_Role\"}}", "object is missing, has no objectId, or names another class"},
        /* schema */
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"schema\"}", "schema without className, or clp is not an object or null"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"schema\",\"clp\":[1]}", "schema without className, or clp is not an object or null"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"schema\",\"clp\":\"null\"}", "schema without className, or clp is not an object or null"},
        {LQ_BUS_OURS, "{\"v\":1,\"op\":\"schema\",\"clp\":{}}", "schema without className, or clp is not an object or null"},
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B-1\",\"op\":\"schema\",\"clp\":{}}", "schema without className, or clp is not an object or null"},
        {LQ_BUS_OURS, "{\"className\":\"B\",\"op\":\"schema\",\"clp\":{}}", "unsupported or missing version v"},
        /* clearCache: anything that is JSON is taken; the rest is not */
        {LQ_BUS_PARSE_CLEAR_CACHE, "", "not JSON"},
        {LQ_BUS_PARSE_CLEAR_CACHE, "{\"userId\":", "not JSON"},
        {LQ_BUS_PARSE_CLEAR_CACHE, "{\"userId\":\"a\",\"userId\":\"b\"}", "not JSON"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *why;
        lq_change *ev = parse(cases[i].kind, cases[i].msg, &why);
        if (ev != NULL)
            fprintf(stderr, "case %zu: accepted %s\n", i, cases[i].msg);
        ASSERT_TRUE(ev == NULL);
        ASSERT_STREQ(why, cases[i].why);
    }
}

/* Found by fuzz_bson (tests/fuzz/regressions/bson/string-with-nul-dropped-by-bus):
 * a stored string holding U+0000 is published as "\u0000", which jansson refused
 * without JSON_ALLOW_NUL, so every gateway dropped the event. Names and ids
 * with U+0000 are still refused. */
static void test_nul_in_values(void)
{
    const char *why;
    lq_change *ev = parse(LQ_BUS_OURS,
                          "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\","
                          "\"title\":\"x\\u0000y\"},\"epoch\":\"e\",\"seq\":1}",
                          &why);
    ASSERT_TRUE(ev != NULL);
    ASSERT_EQ(json_string_length(json_object_get(ev->object, "title")), 3);
    lq_change_free(ev);
    ev = parse(LQ_BUS_PARSE_SAVE, "{\"currentParseObject\":{\"objectId\":\"H\",\"className\":\"B\",\"t\":\"\\u0000\"}}", &why);
    ASSERT_TRUE(ev != NULL);
    lq_change_free(ev);

    static const char *const refused[] = {
        "{\"v\":1,\"className\":\"B\\u0000x\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"}}",
        "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\\u0000b\"}}",
        "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\",\"className\":\"B\\u0000\"}}",
        "{\"v\":1,\"className\":\"B\",\"op\":\"create\",\"object\":{\"objectId\":\"a\"},\"epoch\":\"e\\u0000\"}",
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        ev = parse(LQ_BUS_OURS, refused[i], &why);
        ASSERT_TRUE(ev == NULL);
    }
}

static void test_too_large(void)
{
    size_t n = LQ_BUS_MESSAGE_MAX + 1;
    char *big = malloc(n);
    const char *why = NULL;

    memset(big, ' ', n); /* never parsed: refused on size alone */
    ASSERT_TRUE(lq_bus_parse(LQ_BUS_OURS, big, n, &why) == NULL);
    free(big);
    ASSERT_STREQ(why, "larger than 16 MiB");
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {
        {"ours", test_ours},
        {"cluster_time", test_cluster_time},
        {"parse_server", test_parse_server},
        {"join_classes", test_join_classes},
        {"schema", test_schema},
        {"nul_in_values", test_nul_in_values},
        {"parse_server_clp", test_parse_server_clp},
        {"clear_cache", test_clear_cache},
        {"invalid", test_invalid},
        {"too_large", test_too_large},
        {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
