/* test_proto.c - request vectors (protocol/vectors/requests.txt) and encoders. */
#include <stdio.h>
#include <string.h>

#include "livequery/proto.h"
#include "lq_test.h"

static const char *op_name(lq_op op)
{
    static const char *const n[] = {"connect", "subscribe", "update", "unsubscribe", "query"};
    return n[op];
}

static void test_vectors(void)
{
    FILE *f = fopen(LQ_SOURCE_DIR "/protocol/vectors/requests.txt", "r");
    char line[8192], input[8192] = "";
    int groups = 0, lineno = 0;

    ASSERT_TRUE(f != NULL);
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "> ", 2) == 0) {
            snprintf(input, sizeof(input), "%s", line + 2);
            continue;
        }
        if (strncmp(line, "< ", 2) != 0)
            continue;
        const char *want = line + 2;
        lq_request req;
        lq_error err = {0, ""};
        char got[512];
        lq_parse_result r = lq_proto_parse(input, strlen(input), 64, &req, &err);
        switch (r) {
        case LQ_PARSE_OK:
            snprintf(got, sizeof(got), "ok %s", op_name(req.op));
            lq_request_release(&req);
            break;
        case LQ_PARSE_IGNORE:
            snprintf(got, sizeof(got), "ignore");
            break;
        default:
            snprintf(got, sizeof(got), "error %d %s %s", err.code,
                     r == LQ_PARSE_ERROR ? "true" : "false", err.text);
        }
        if (strcmp(got, want) != 0) {
            fprintf(stderr, "requests.txt:%d: input %s\n", lineno, input);
            ASSERT_STREQ(got, want);
        }
        groups++;
    }
    fclose(f);
    ASSERT_TRUE(groups >= 30);
}

static void test_fields(void)
{
    const char *s = "{\"op\":\"subscribe\",\"requestId\":7,\"query\":{\"className\":\"A\","
                    "\"where\":{\"x\":1},\"keys\":[\"k\"],\"watch\":[\"w\"]},\"sessionToken\":\"r:t\"}";
    lq_request req;
    lq_error err;

    ASSERT_EQ(lq_proto_parse(s, strlen(s), 64, &req, &err), LQ_PARSE_OK);
    ASSERT_EQ(req.op, LQ_OP_SUBSCRIBE);
    ASSERT_TRUE(req.request_id == 7);
    ASSERT_STREQ(req.class_name, "A");
    ASSERT_STREQ(req.session_token, "r:t");
    ASSERT_EQ(json_array_size(req.keys), 1);
    ASSERT_EQ(json_array_size(req.watch), 1);
    ASSERT_TRUE(json_is_object(req.where));
    lq_request_release(&req);
}

/* The resume extension: positions / since (protocol/PROTOCOL.md). */
static void test_positions(void)
{
    const char *a = "{\"op\":\"subscribe\",\"requestId\":1,\"query\":{\"className\":\"A\",\"where\":{}},"
                    "\"since\":{\"epoch\":\"8f0c2a\",\"seq\":9007199254740991}}";
    const char *b = "{\"op\":\"update\",\"requestId\":1,\"query\":{\"className\":\"A\",\"where\":{}},"
                    "\"positions\":true}";
    const char *plain = "{\"op\":\"subscribe\",\"requestId\":1,\"query\":{\"className\":\"A\",\"where\":{}},"
                        "\"positions\":false}";
    const char *bad[] = {
        "{\"op\":\"subscribe\",\"requestId\":1,\"query\":{\"className\":\"A\",\"where\":{}},\"positions\":1}",
        "{\"op\":\"subscribe\",\"requestId\":1,\"query\":{\"className\":\"A\",\"where\":{}},\"since\":{\"epoch\":\"e\",\"seq\":9007199254740992}}",
        "{\"op\":\"subscribe\",\"requestId\":1,\"query\":{\"className\":\"A\",\"where\":{}},\"since\":{\"epoch\":\"0123456789012345678901234567890123456789\",\"seq\":1}}",
        "{\"op\":\"subscribe\",\"requestId\":1,\"query\":{\"className\":\"A\",\"where\":{}},\"since\":{\"seq\":1}}",
        "{\"op\":\"subscribe\",\"requestId\":1,\"query\":{\"className\":\"A\",\"where\":{}},\"since\":[]}",
    };
    lq_request req;
    lq_error err;

    ASSERT_EQ(lq_proto_parse(a, strlen(a), 64, &req, &err), LQ_PARSE_OK);
    ASSERT_TRUE(req.has_since && req.positions);
    ASSERT_STREQ(req.since_epoch, "8f0c2a");
    ASSERT_TRUE(req.since_seq == 9007199254740991LL);
    lq_request_release(&req);
    ASSERT_EQ(lq_proto_parse(b, strlen(b), 64, &req, &err), LQ_PARSE_OK);
    ASSERT_TRUE(req.positions && !req.has_since);
    lq_request_release(&req);
    ASSERT_EQ(lq_proto_parse(plain, strlen(plain), 64, &req, &err), LQ_PARSE_OK);
    ASSERT_TRUE(!req.positions && !req.has_since);
    lq_request_release(&req);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        ASSERT_EQ(lq_proto_parse(bad[i], strlen(bad[i]), 64, &req, &err), LQ_PARSE_ERROR);
        ASSERT_EQ(err.code, 1);
    }
}

static void test_encoders(void)
{
    lq_buf ids, b;
    lq_error err;

    lq_buf_init(&ids);
    lq_buf_init(&b);
    lq_proto_ids(&ids, "C", NULL);
    lq_proto_reply(&b, "connected", &ids, 0, 0);
    ASSERT_STREQ(b.data, "{\"op\":\"connected\",\"clientId\":\"C\"}");
    b.len = 0;
    lq_proto_ids(&ids, "C", "in\"st");
    lq_proto_reply(&b, "subscribed", &ids, 1, 3);
    ASSERT_STREQ(b.data, "{\"op\":\"subscribed\",\"clientId\":\"C\",\"installationId\":\"in\\\"st\",\"requestId\":3}");
    b.len = 0;
    lq_error_set(&err, 102, "$or must be an array");
    lq_proto_error(&b, &err, 0, 1, 9);
    ASSERT_STREQ(b.data, "{\"op\":\"error\",\"error\":\"$or must be an array\",\"code\":102,\"reconnect\":false,\"requestId\":9}");
    b.len = 0;
    lq_error_set(&err, 1, "No enum match for: \"x\"");
    lq_proto_error(&b, &err, 1, 0, 0);
    ASSERT_STREQ(b.data, "{\"op\":\"error\",\"error\":\"No enum match for: \\\"x\\\"\",\"code\":1,\"reconnect\":true,\"requestId\":null}");
    b.len = 0;
    lq_proto_event_head(&b, "update", &ids, 1.5);
    ASSERT_STREQ(b.data, "{\"op\":\"update\",\"clientId\":\"C\",\"installationId\":\"in\\\"st\",\"requestId\":1.5,");
    lq_buf_release(&ids);
    lq_buf_release(&b);
}

/* The query op: {op, requestId} parsed like unsubscribe; the result frame. */
static void test_query(void)
{
    const char *s = "{\"op\":\"query\",\"requestId\":7}";
    lq_request req;
    lq_error err;
    lq_buf ids, b;

    ASSERT_EQ(lq_proto_parse(s, strlen(s), 64, &req, &err), LQ_PARSE_OK);
    ASSERT_EQ(req.op, LQ_OP_QUERY);
    ASSERT_TRUE(req.request_id == 7);
    ASSERT_TRUE(req.class_name == NULL && req.where == NULL);
    lq_request_release(&req);
    s = "{\"op\":\"query\",\"requestId\":1,\"sessionToken\":\"r:x\"}";
    ASSERT_EQ(lq_proto_parse(s, strlen(s), 64, &req, &err), LQ_PARSE_ERROR);
    ASSERT_STREQ(err.text, "Additional properties not allowed");

    lq_buf_init(&ids);
    lq_buf_init(&b);
    lq_proto_ids(&ids, "C", "i");
    lq_proto_result_head(&b, &ids, 2);
    lq_buf_puts(&b, "{\"objectId\":\"a\"}");
    lq_proto_result_tail(&b, 0);
    ASSERT_STREQ(b.data, "{\"op\":\"result\",\"clientId\":\"C\",\"installationId\":\"i\",\"requestId\":2,"
                         "\"results\":[{\"objectId\":\"a\"}]}");
    b.len = 0;
    lq_proto_result_head(&b, &ids, 3);
    lq_proto_result_tail(&b, 1);
    ASSERT_STREQ(b.data, "{\"op\":\"result\",\"clientId\":\"C\",\"installationId\":\"i\",\"requestId\":3,"
                         "\"results\":[],\"truncated\":true}");
    lq_buf_release(&ids);
    lq_buf_release(&b);
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {
        {"vectors", test_vectors}, {"fields", test_fields}, {"positions", test_positions},
        {"encoders", test_encoders}, {"query", test_query}, {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
