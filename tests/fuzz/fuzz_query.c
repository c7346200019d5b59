/*
 * fuzz_query - a `where` compiled and matched: the input is two JSON texts
 * separated by the first NUL byte, the where (an object, as lq_proto_parse
 * hands it over) and a REST object to match (no NUL: a fixed object).
 * Compiled with the default limits and with tight ones; matched, printed in
 * canonical form, asked for its index hint; the index key of each top-level
 * value of the object is written into a small buffer.
 *
 * Oracles beyond the sanitizers: a refusal is always code 102; a query whose
 * index hint is (field, key) cannot match an object whose field has neither
 * that key nor an array element with it (query.h).
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "livequery/query.h"

#define NOW_MS 1795000000000LL

static const char default_object[] =
    "{\"objectId\":\"HZKPL5sv3j\",\"className\":\"BookStockLog\",\"quantityOnHand\":10,"
    "\"tags\":[\"a\",\"b\"],\"createdAt\":\"2026-11-23T23:29:42.277Z\","
    "\"startsAt\":{\"__type\":\"Date\",\"iso\":\"2026-12-01T18:00:00.000Z\"},"
    "\"author\":{\"__type\":\"Pointer\",\"className\":\"Author\",\"objectId\":\"au1\"}}";

/* 1 when v (the object's field) could satisfy an equality on value_key. */
static int hint_allows(const json_t *v, const char *value_key)
{
    char buf[512];
    size_t i;
    json_t *e;
    if (lq_query_value_key(v, buf, sizeof(buf)) >= 0 && strcmp(buf, value_key) == 0)
        return 1;
    json_array_foreach(v, i, e)
        if (lq_query_value_key(e, buf, sizeof(buf)) >= 0 && strcmp(buf, value_key) == 0)
            return 1;
    /* keys too long for buf are not compared: assume they could match */
    return lq_query_value_key(v, buf, sizeof(buf)) < 0 && json_is_string(v);
}

static void run(const json_t *where, const json_t *object, const lq_query_limits *lim)
{
    lq_error err;
    const char *field, *key;
    lq_query *q = lq_query_compile("BookStockLog", where, lim, &err);
    if (q == NULL) {
        if (err.code != LQ_PARSE_ERR_INVALID_QUERY)
            abort();
        return;
    }
    int m = lq_query_match(q, object, NOW_MS);
    (void)lq_query_canonical(q);
    if (strcmp(lq_query_class(q), "BookStockLog") != 0)
        abort();
    if (lq_query_index_hint(q, &field, &key) && m && json_is_object(object) &&
        !hint_allows(json_object_get(object, field), key))
        abort();
    lq_query_free(q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    size_t wlen = nul ? (size_t)(nul - data) : size;
    lq_query_limits lim, tight;
    json_t *where, *object;
    const char *k;
    json_t *v;

    if (size > 65536)
        return 0;
    where = json_loadb(text, wlen, JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL, NULL);
    if (nul)
        object = json_loadb(text + wlen + 1, size - wlen - 1, JSON_DECODE_ANY, NULL);
    else
        object = json_loads(default_object, 0, NULL);
    if (json_is_object(where)) {
        lq_query_limits_default(&lim);
        tight = lim;
        tight.max_depth = 2;
        tight.max_nodes = 8;
        tight.max_regex_len = 8;
        tight.regex_match_limit = 10;
        tight.regex_depth_limit = 2;
        run(where, object, &lim);
        run(where, object, &tight);
    }
    json_object_foreach(object, k, v) {
        char small[24];
        (void)lq_query_value_key(v, small, sizeof(small));
    }
    json_decref(where);
    json_decref(object);
    return 0;
}
