/* test_event.c - classification (reference §2 table), watch, ACL, bodies. */
#include "livequery/event.h"
#include "lq_test.h"

static json_t *J(const char *s)
{
    json_error_t e;
    return json_loads(s, 0, &e);
}

static void test_classify(void)
{
    /* update: (original visible, current visible) -> event */
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_UPDATE, 1, 1, 1), LQ_EV_UPDATE);
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_UPDATE, 1, 1, 0), LQ_EV_LEAVE);
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_UPDATE, 1, 0, 1), LQ_EV_ENTER);
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_UPDATE, 1, 0, 0), LQ_EV_NONE);
    /* no original known: visible now is an update, never a guessed enter */
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_UPDATE, 0, 0, 1), LQ_EV_UPDATE);
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_UPDATE, 0, 0, 0), LQ_EV_NONE);
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_CREATE, 0, 0, 1), LQ_EV_CREATE);
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_CREATE, 0, 0, 0), LQ_EV_NONE);
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_DELETE, 0, 0, 1), LQ_EV_DELETE);
    ASSERT_EQ(lq_event_classify(LQ_CHANGE_DELETE, 0, 0, 0), LQ_EV_NONE);
    ASSERT_TRUE(lq_event_has_original(LQ_EV_LEAVE) && !lq_event_has_original(LQ_EV_CREATE) &&
                !lq_event_has_original(LQ_EV_DELETE));
    ASSERT_STREQ(lq_event_name(LQ_EV_ENTER), "enter");
}

static void test_watch(void)
{
    json_t *a = J("{\"title\":\"x\",\"n\":1}"), *b = J("{\"title\":\"x\",\"n\":2}");
    const char *title[] = {"title", NULL}, *n[] = {"n", NULL}, *missing[] = {"zzz", NULL};

    ASSERT_TRUE(!lq_event_watch_passes(LQ_EV_UPDATE, title, b, a));
    ASSERT_TRUE(lq_event_watch_passes(LQ_EV_UPDATE, n, b, a));
    ASSERT_TRUE(lq_event_watch_passes(LQ_EV_UPDATE, NULL, b, a));
    ASSERT_TRUE(lq_event_watch_passes(LQ_EV_CREATE, title, b, NULL));
    ASSERT_TRUE(!lq_event_watch_passes(LQ_EV_CREATE, missing, b, NULL));
    ASSERT_TRUE(lq_event_watch_passes(LQ_EV_ENTER, title, b, a)); /* enter ignores watch */
    ASSERT_TRUE(lq_event_watch_passes(LQ_EV_LEAVE, title, b, a));
    json_decref(a);
    json_decref(b);
}

static void test_acl(void)
{
    const char *cases[][2] = {
        {"{}", "1"},
        {"{\"ACL\":{\"*\":{\"read\":true}}}", "1"},
        {"{\"ACL\":{\"*\":{\"write\":true}}}", "0"},
        {"{\"ACL\":{\"u1\":{\"read\":true}}}", "0"},
        {"{\"ACL\":{}}", "0"},
        {"{\"ACL\":{\"*\":{\"read\":\"true\"}}}", "0"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        json_t *o = J(cases[i][0]);
        ASSERT_EQ(lq_acl_public_read(o), cases[i][1][0] - '0');
        json_decref(o);
    }
}

static void test_body(void)
{
    json_t *o = J("{\"objectId\":\"o\",\"className\":\"A\",\"a\":1,\"b\":2}");
    json_t *p = J("{\"objectId\":\"o\",\"className\":\"A\",\"a\":0,\"b\":2}");
    const char *keys[] = {"a", NULL};
    lq_body *b = lq_body_event(o, p, keys);

    ASSERT_STREQ(b->data, "\"object\":{\"objectId\":\"o\",\"className\":\"A\",\"a\":1},\"original\":{\"objectId\":\"o\",\"className\":\"A\",\"a\":0}}");
    ASSERT_EQ(b->refs, 1);
    lq_body_decref(b);
    b = lq_body_event(o, NULL, NULL);
    ASSERT_STREQ(b->data, "\"object\":{\"objectId\":\"o\",\"className\":\"A\",\"a\":1,\"b\":2}}");
    lq_body_decref(b);
    json_decref(o);
    json_decref(p);
    ASSERT_TRUE(lq_class_name_valid("BookStockLog") && lq_class_name_valid("_User"));
    ASSERT_TRUE(!lq_class_name_valid("") && !lq_class_name_valid("1A") && !lq_class_name_valid("A-B") &&
                !lq_class_name_valid("A.B"));
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {{"classify", test_classify},
                                         {"watch", test_watch},
                                         {"acl", test_acl},
                                         {"body", test_body},
                                         {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
