/* test_json.c - value semantics, dates, the JSON writer. */
#include "livequery/json.h"
#include "livequery/jsonout.h"
#include "lq_test.h"

static json_t *J(const char *s)
{
    json_error_t e;
    return json_loads(s, JSON_DECODE_ANY, &e);
}

static int eq(const char *a, const char *b)
{
    json_t *x = J(a), *y = J(b);
    int r = lq_json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return r;
}

static void test_equal(void)
{
    ASSERT_TRUE(eq("1", "1.0"));
    ASSERT_TRUE(eq("{\"a\":[1,{\"b\":2}],\"c\":null}", "{\"c\":null,\"a\":[1.0,{\"b\":2}]}"));
    ASSERT_TRUE(!eq("[1,2]", "[2,1]"));
    ASSERT_TRUE(!eq("\"1\"", "1"));
    ASSERT_TRUE(!eq("{\"a\":1}", "{\"a\":1,\"b\":2}"));
    ASSERT_TRUE(!eq("null", "false"));
    ASSERT_TRUE(lq_json_equal(NULL, NULL));
    /* keys compare by length: "k\0a" is not "k" (jansson's API can build such keys) */
    json_t *x = json_object(), *y = json_object();
    json_object_setn_new(x, "k\0a", 3, json_integer(1));
    json_object_set_new(y, "k", json_integer(1));
    int same = lq_json_equal(x, y);
    json_decref(x);
    json_decref(y);
    ASSERT_TRUE(!same);
}

static void test_dates(void)
{
    int64_t ms = 0;
    char buf[32];

    ASSERT_EQ(lq_iso_to_ms("1970-01-01T00:00:00.000Z", &ms), 0);
    ASSERT_EQ(ms, 0);
    ASSERT_EQ(lq_iso_to_ms("2026-11-23T23:29:42.277Z", &ms), 0);
    ASSERT_STREQ(lq_ms_to_iso(ms, buf, sizeof(buf)), "2026-11-23T23:29:42.277Z");
    ASSERT_EQ(lq_iso_to_ms("2026-11-24T01:29:42.277+02:00", &ms), 0);
    ASSERT_STREQ(lq_ms_to_iso(ms, buf, sizeof(buf)), "2026-11-23T23:29:42.277Z");
    ASSERT_EQ(lq_iso_to_ms("2024-02-29", &ms), 0);
    ASSERT_EQ(lq_iso_to_ms("2023-02-29", &ms), -1);
    ASSERT_EQ(lq_iso_to_ms("2026-13-01T00:00:00Z", &ms), -1);
    ASSERT_EQ(lq_iso_to_ms("2026-01-01T00:00:00", &ms), -1); /* no zone */
    ASSERT_EQ(lq_iso_to_ms("yesterday", &ms), -1);
    ASSERT_EQ(lq_iso_to_ms("1969-12-31T23:59:59.999Z", &ms), 0);
    ASSERT_EQ(ms, -1);
    json_t *d = J("{\"__type\":\"Date\",\"iso\":\"2030-01-01T18:00:00.000Z\"}");
    ASSERT_TRUE(lq_json_parse_date(d, &ms));
    ASSERT_EQ(ms, 1893520800000LL);
    json_decref(d);
}

static void test_depth(void)
{
    ASSERT_EQ(lq_json_text_depth("{\"a\":[1,{\"b\":\"[[[[\"}]}", 22, 64), 3);
    ASSERT_EQ(lq_json_text_depth("[[[[[[", 6, 4), 5);
    ASSERT_EQ(lq_json_text_depth("\"\\\"[[[\"", 7, 1), 0);
}

static void test_writer(void)
{
    lq_buf b;
    json_t *v = J("{\"s\":\"a\\\"\\n\\u0001é\",\"n\":[1,0.1,-0.0,1e300,2.5],\"t\":true,\"z\":null}");

    lq_buf_init(&b);
    lq_buf_json(&b, v);
    ASSERT_STREQ(b.data, "{\"s\":\"a\\\"\\n\\u0001é\",\"n\":[1,0.1,0,1e+300,2.5],\"t\":true,\"z\":null}");
    json_decref(v);

    b.len = 0;
    v = J("{\"objectId\":\"o\",\"_rperm\":[\"*\"],\"__type\":\"Object\",\"className\":\"A\",\"a\":1,\"b\":2,"
          "\"ACL\":{},\"createdAt\":\"c\",\"updatedAt\":\"u\"}");
    lq_buf_parse_object(&b, v, NULL);
    ASSERT_STREQ(b.data, "{\"objectId\":\"o\",\"className\":\"A\",\"a\":1,\"b\":2,\"ACL\":{},\"createdAt\":\"c\",\"updatedAt\":\"u\"}");
    b.len = 0;
    const char *keys[] = {"b", NULL};
    lq_buf_parse_object(&b, v, keys);
    ASSERT_STREQ(b.data, "{\"objectId\":\"o\",\"className\":\"A\",\"b\":2,\"ACL\":{},\"createdAt\":\"c\",\"updatedAt\":\"u\"}");
    json_decref(v);
    lq_buf_release(&b);
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {{"equal", test_equal},
                                         {"dates", test_dates},
                                         {"depth", test_depth},
                                         {"writer", test_writer},
                                         {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
