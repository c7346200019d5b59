/* test_bus.c - bus message parsing (protocol/bus.md), both intakes. */
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
        {LQ_BUS_OURS, "{\"v\":1,\"className\":\"B\",\"op\":\"upsert\",\"object\":{\"objectId\":\"a\"}}", "op is not create, update, delete or resync"},
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
        {"ours", test_ours}, {"parse_server", test_parse_server}, {"invalid", test_invalid}, {"too_large", test_too_large}, {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
