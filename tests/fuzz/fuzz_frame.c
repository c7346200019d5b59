/*
 * fuzz_frame - one client WebSocket text frame, as the gateway handles it:
 * lq_proto_parse with the default depth limit; the error frame or the reply
 * frame encoded; for subscribe and update, the where compiled with the
 * default query limits and matched against fixed objects, and the keys /
 * watch lists applied to an event body, as a delivery would.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "livequery/event.h"
#include "livequery/jsonout.h"
#include "livequery/proto.h"
#include "livequery/query.h"

#define MAX_FRAME 65536  /* --max-frame-bytes default: larger frames never reach the parser */
#define MAX_DEPTH 64     /* --max-json-depth default */
#define NOW_MS 1795000000000LL

static const char *const objects_text[] = {
    "{\"objectId\":\"HZKPL5sv3j\",\"className\":\"BookStockLog\",\"isbn\":\"978-0-00-000001-1\","
    "\"storeId\":\"s1\",\"quantityOnHand\":10,\"tags\":[\"a\",\"b\",3],"
    "\"createdAt\":\"2026-11-23T23:29:42.277Z\",\"updatedAt\":\"2026-11-23T23:29:43.385Z\","
    "\"startsAt\":{\"__type\":\"Date\",\"iso\":\"2026-12-01T18:00:00.000Z\"},"
    "\"author\":{\"__type\":\"Pointer\",\"className\":\"Author\",\"objectId\":\"au1\"},"
    "\"venue\":{\"name\":\"Main St\",\"seats\":40,\"loc\":{\"__type\":\"GeoPoint\",\"latitude\":40.7,"
    "\"longitude\":-74.0}},\"ACL\":{\"*\":{\"read\":true}}}",
    "{\"objectId\":\"x\",\"title\":null,\"quantityOnHand\":1.5,\"status\":\"confirmed\",\"n\":[[1,2],{}],"
    "\"flag\":true}",
};
static json_t *objects[2];

static void init(void)
{
    if (objects[0])
        return;
    for (size_t i = 0; i < 2; i++)
        if ((objects[i] = json_loads(objects_text[i], 0, NULL)) == NULL)
            abort();
}

/* A NULL-terminated copy of the strings of arr (a validated keys/watch list). */
static const char **strv(const json_t *arr)
{
    if (arr == NULL)
        return NULL;
    size_t n = json_array_size(arr), i;
    const char **v = calloc(n + 1, sizeof(*v));
    if (v == NULL)
        abort();
    for (i = 0; i < n; i++)
        v[i] = json_string_value(json_array_get(arr, i));
    return v;
}

static void subscribe(const lq_request *req)
{
    lq_query_limits lim;
    lq_error err;
    const char *field, *key;

    lq_query_limits_default(&lim);
    lq_query *q = lq_query_compile(req->class_name, req->where, &lim, &err);
    if (q == NULL) {
        if (err.code != LQ_PARSE_ERR_INVALID_QUERY)
            abort();
        return;
    }
    const char **keys = strv(req->keys), **watch = strv(req->watch);
    int cur = lq_query_match(q, objects[0], NOW_MS);
    int orig = lq_query_match(q, objects[1], NOW_MS);
    lq_event_type t = lq_event_classify(LQ_CHANGE_UPDATE, 1, orig, cur);
    if (t != LQ_EV_NONE && lq_event_watch_passes(t, watch, objects[0], objects[1])) {
        lq_body *b = lq_body_event(objects[0], lq_event_has_original(t) ? objects[1] : NULL, keys);
        lq_body_decref(b);
    }
    (void)lq_query_canonical(q);
    (void)lq_query_index_hint(q, &field, &key);
    lq_query_free(q);
    free(keys);
    free(watch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lq_request req;
    lq_error err;
    lq_buf out, ids;

    if (size > MAX_FRAME)
        return 0;
    init();
    lq_buf_init(&out);
    lq_buf_init(&ids);
    switch (lq_proto_parse((const char *)data, size, MAX_DEPTH, &req, &err)) {
    case LQ_PARSE_IGNORE:
        break;
    case LQ_PARSE_ERROR:
    case LQ_PARSE_REFUSED:
        lq_proto_error(&out, &err, 1, 0, 0);
        break;
    case LQ_PARSE_OK:
        lq_proto_ids(&ids, "0b5ba0c2-6f34-4b0a-9f4c-9d2a1f0e8c11", req.installation_id);
        lq_proto_reply(&out, "subscribed", &ids, req.op != LQ_OP_CONNECT, req.request_id);
        if (req.op == LQ_OP_SUBSCRIBE || req.op == LQ_OP_UPDATE)
            subscribe(&req);
        lq_request_release(&req);
        break;
    }
    lq_buf_release(&out);
    lq_buf_release(&ids);
    return 0;
}
