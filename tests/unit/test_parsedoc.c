/* test_parsedoc.c - _SCHEMA cache and BSON -> Parse REST JSON (parsedoc.h). */
#include "livequery/parsedoc.h"

#include <math.h>
#include <stdint.h>

#include "livequery/json.h"
#include "livequery/jsonout.h"
#include "lq_test.h"

/* ---- helpers ------------------------------------------------------------ */

static lq_schema *g_schema;

static const char *const schema_docs[] = {
    "{\"_id\":\"SigningSchedule\",\"objectId\":\"string\",\"createdAt\":\"date\","
    "\"updatedAt\":\"date\",\"bookTitle\":\"string\",\"authorName\":\"string\","
    "\"eventDate\":\"date\",\"location\":\"string\",\"publisherContact\":\"*PublisherContact\","
    "\"status\":\"string\",\"staffLead\":\"*_User\",\"attendeeCount\":\"number\","
    "\"poster\":\"file\",\"attendees\":\"relation<_User>\","
    "\"_metadata\":{\"class_permissions\":{\"find\":{\"*\":true},\"get\":{\"*\":true},"
    "\"count\":{\"*\":true},\"create\":{\"role:Staff\":true},\"update\":{\"role:Staff\":true},"
    "\"delete\":{\"role:Manager\":true},\"addField\":{},\"protectedFields\":{\"*\":[]}},"
    "\"indexes\":{\"_id_\":{\"_id\":1}}}}",
    "{\"_id\":\"BookStockLog\",\"objectId\":\"string\",\"createdAt\":\"date\","
    "\"updatedAt\":\"date\",\"isbn\":\"string\",\"bookTitle\":\"string\","
    "\"quantityOnHand\":\"number\",\"quantityReserved\":\"number\",\"restockThreshold\":\"number\","
    "\"lastCountedAt\":\"date\",\"recordedBy\":\"*_User\",\"signingSchedule\":\"*SigningSchedule\","
    "\"notes\":\"string\"}",
    "{\"_id\":\"Everything\",\"s\":\"string\",\"n\":\"number\",\"b\":\"boolean\",\"d\":\"date\","
    "\"o\":\"object\",\"m\":\"map\",\"a\":\"array\",\"g\":\"geopoint\",\"f\":\"file\","
    "\"y\":\"bytes\",\"poly\":\"polygon\",\"ptr\":\"*Thing\",\"rel\":\"relation<Tag>\","
    "\"weird\":\"Strange\",\"num\":5,\"star\":\"*\",\"emptyrel\":\"relation<>\","
    "\"Date\":\"Date\",\"_client_permissions\":{\"x\":1}}",
    "{\"_id\":\"_User\",\"objectId\":\"string\",\"username\":\"string\",\"email\":\"string\","
    "\"emailVerified\":\"boolean\",\"authData\":\"object\"}",
    "{\"_id\":\"_Session\",\"user\":\"*_User\",\"installationId\":\"string\","
    "\"sessionToken\":\"string\",\"expiresAt\":\"date\",\"createdWith\":\"object\"}",
    "{\"_id\":\"_Role\",\"name\":\"string\",\"users\":\"relation<_User>\","
    "\"roles\":\"relation<_Role>\"}",
    NULL,
};

static bson_t *B(const char *json)
{
    bson_error_t e;
    bson_t *b = bson_new_from_json((const uint8_t *)json, -1, &e);
    if (b == NULL)
        fprintf(stderr, "bad test BSON (%s): %s\n", e.message, json);
    return b;
}

static json_t *J(const char *s)
{
    json_error_t e;
    json_t *v = json_loads(s, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (v == NULL)
        fprintf(stderr, "bad test JSON (%s): %s\n", e.text, s);
    return v;
}

static char *text(const json_t *v)
{
    lq_buf b;
    lq_buf_init(&b);
    if (v)
        lq_buf_json(&b, v);
    else
        lq_buf_puts(&b, "(null)");
    lq_buf_putc(&b, '\0');
    return b.data;
}

/* Steals got. json_equal (integer 1 != real 1.0 on purpose). */
static int json_is_(const char *file, int line, json_t *got, const char *want)
{
    json_t *w = J(want);
    int ok = got && w && json_equal(got, w);
    if (!ok) {
        char *g = text(got);
        fprintf(stderr, "%s:%d: JSON differs\n  got:  %s\n  want: %s\n", file, line, g, want);
        free(g);
    }
    json_decref(w);
    json_decref(got);
    return ok;
}
#define JSON_IS(got, want) ASSERT_TRUE(json_is_(__FILE__, __LINE__, (got), (want)))

/* Steals got. Exact compact text: checks key order too. */
static int text_is_(const char *file, int line, json_t *got, const char *want)
{
    char *g = text(got);
    int ok = strcmp(g, want) == 0;
    if (!ok)
        fprintf(stderr, "%s:%d: text differs\n  got:  %s\n  want: %s\n", file, line, g, want);
    free(g);
    json_decref(got);
    return ok;
}
#define TEXT_IS(got, want) ASSERT_TRUE(text_is_(__FILE__, __LINE__, (got), (want)))

/* ---- the writer's contract ------------------------------------------------ */

/* jansson allocations, counted: the writer's own path makes none for ordinary
 * documents, its duplicate-key fallback (to_rest) does. */
static long g_jansson_allocs;

static void *counting_malloc(size_t n)
{
    g_jansson_allocs++;
    return malloc(n);
}

/* 1 when a and b (and every object inside) list their keys in the same order. */
static int same_order(const json_t *a, const json_t *b)
{
    if (json_is_object(a) && json_is_object(b)) {
        void *ia = json_object_iter((json_t *)a), *ib = json_object_iter((json_t *)b);
        while (ia && ib) {
            size_t la = json_object_iter_key_len(ia), lb = json_object_iter_key_len(ib);
            if (la != lb || memcmp(json_object_iter_key(ia), json_object_iter_key(ib), la) != 0 ||
                !same_order(json_object_iter_value(ia), json_object_iter_value(ib)))
                return 0;
            ia = json_object_iter_next((json_t *)a, ia);
            ib = json_object_iter_next((json_t *)b, ib);
        }
        return ia == NULL && ib == NULL;
    }
    if (json_is_array(a) && json_is_array(b)) {
        for (size_t i = 0; i < json_array_size(a) && i < json_array_size(b); i++)
            if (!same_order(json_array_get(a, i), json_array_get(b, i)))
                return 0;
    }
    return 1;
}

static int g_contract_runs, g_contract_direct;

/* lq_parsedoc_write_rest against want (to_rest's result for the same
 * arguments, NULL when it failed): appended after a prefix, the text is
 * lq_buf_json(want) byte for byte, json_loads of it (duplicate keys rejected)
 * is lq_json_equal to want with the same key order; on failure the buffer is
 * unchanged. *allocs (if not NULL) gets the jansson allocations it made. */
static int writer_same_(const char *file, int line, const bson_t *doc, const char *cn,
                        const lq_class_schema *cls, const lq_parsedoc_opts *o, const json_t *want,
                        long *allocs)
{
    static const char prefix[] = "[prefix]";
    lq_buf b, wb;
    lq_error e = {0, ""};
    json_error_t je;
    json_t *got = NULL;
    long before;
    int rc, ok;
    const char *why = "";

    g_contract_runs++;
    lq_buf_init(&b);
    lq_buf_init(&wb);
    lq_buf_puts(&b, prefix);
    before = g_jansson_allocs;
    rc = lq_parsedoc_write_rest(&b, doc, cn, cls, o, &e);
    if (allocs)
        *allocs = g_jansson_allocs - before;
    if (rc == LQ_OK && g_jansson_allocs == before)
        g_contract_direct++;
    if (want == NULL) {
        ok = rc != LQ_OK && e.code == LQ_PARSE_ERR_SCHEMA && b.len == sizeof(prefix) - 1 &&
             strcmp(b.data, prefix) == 0;
        why = "error path";
    } else {
        lq_buf_json(&wb, want);
        ok = rc == LQ_OK && b.len >= sizeof(prefix) - 1 && memcmp(b.data, prefix, 8) == 0 &&
             b.data[b.len] == '\0';
        why = "status/prefix";
        if (ok) {
            ok = b.len - (sizeof(prefix) - 1) == wb.len &&
                 memcmp(b.data + sizeof(prefix) - 1, wb.data, wb.len) == 0;
            why = "text differs from lq_buf_json(to_rest)";
        }
        if (ok) {
            got = json_loadb(b.data + sizeof(prefix) - 1, b.len - (sizeof(prefix) - 1),
                             JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
            ok = got != NULL;
            why = got ? "" : je.text;
        }
        if (ok) {
            ok = lq_json_equal(got, want) && same_order(got, want);
            why = "not lq_json_equal / key order";
        }
    }
    if (!ok) {
        lq_test_failed_++;
        fprintf(stderr, "%s:%d: write_rest breaks the contract (%s, rc %d)\n  write: %.*s\n  "
                        "to_rest: %s\n",
                file, line, why, rc, (int)(b.len > 2000 ? 2000 : b.len), b.data ? b.data : "",
                wb.data ? wb.data : "(null)");
    }
    json_decref(got);
    lq_buf_release(&b);
    lq_buf_release(&wb);
    return ok;
}

/* lq_parsedoc_to_rest, plus the writer's contract for the same input, and
 * master_only for both paths (to_rest with master_only is to_rest with ACL
 * set to {}, in place or at the end). */
static json_t *to_rest_(const char *file, int line, const bson_t *doc, const char *cn,
                        const lq_class_schema *cls, const lq_parsedoc_opts *o, lq_error *err)
{
    json_t *v = lq_parsedoc_to_rest(doc, cn, cls, o, err);
    lq_parsedoc_opts mo = {o ? o->files_url_prefix : NULL, 1};
    json_t *vm = lq_parsedoc_to_rest(doc, cn, cls, &mo, NULL);

    writer_same_(file, line, doc, cn, cls, o, v, NULL);
    writer_same_(file, line, doc, cn, cls, &mo, vm, NULL);
    if (v) {
        json_t *want = json_deep_copy(v);
        lq_buf a, b;
        lq_buf_init(&a);
        lq_buf_init(&b);
        json_object_set_new(want, "ACL", json_object());
        lq_buf_json(&a, want);
        lq_buf_json(&b, vm);
        if (vm == NULL || strcmp(a.data, b.data) != 0) {
            lq_test_failed_++;
            fprintf(stderr, "%s:%d: master_only\n  got:  %s\n  want: %s\n", file, line,
                    b.data ? b.data : "(null)", a.data);
        }
        lq_buf_release(&a);
        lq_buf_release(&b);
        json_decref(want);
    } else if (vm != NULL) {
        lq_test_failed_++;
        fprintf(stderr, "%s:%d: master_only converted what to_rest did not\n", file, line);
    }
    json_decref(vm);
    return v;
}
#define TO_REST(doc, cn, cls, o, err) to_rest_(__FILE__, __LINE__, (doc), (cn), (cls), (o), (err))

static json_t *rest_o(const char *doc_json, const char *cls_name, int with_schema,
                      const lq_parsedoc_opts *o)
{
    bson_t *doc = B(doc_json);
    lq_error err = {0, ""};
    json_t *v;

    if (doc == NULL)
        return NULL;
    v = TO_REST(doc, cls_name, with_schema ? lq_schema_class(g_schema, cls_name) : NULL, o, &err);
    if (v == NULL)
        fprintf(stderr, "to_rest failed: %s\n", err.text);
    bson_destroy(doc);
    return v;
}

static json_t *rest(const char *doc_json, const char *cls_name, int with_schema)
{
    return rest_o(doc_json, cls_name, with_schema, NULL);
}

/* The value of {"v": <bson ext json>} through lq_parsedoc_value. */
static json_t *value_of(const char *ext)
{
    char buf[1024];
    bson_t *doc;
    bson_iter_t it;
    json_t *v = NULL;

    snprintf(buf, sizeof(buf), "{\"_id\":\"x\",\"v\":%s}", ext);
    doc = B(buf);
    if (doc && bson_iter_init_find(&it, doc, "v"))
        v = lq_parsedoc_value(&it);
    if (doc) /* and as a field, through both converters */
        json_decref(TO_REST(doc, "C", NULL, NULL, NULL));
    bson_destroy(doc);
    return v;
}

/* ---- dates -------------------------------------------------------------- */

static void test_iso(void)
{
    static const struct {
        int64_t ms;
        const char *iso;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {-1, "1969-12-31T23:59:59.999Z"},
        {-1000, "1969-12-31T23:59:59.000Z"},
        {-86400001, "1969-12-30T23:59:59.999Z"},
        {951782400000, "2000-02-29T00:00:00.000Z"},
        {1763940582277, "2025-11-23T23:29:42.277Z"},
        {253402300799999, "9999-12-31T23:59:59.999Z"},
        {253402300800000, "+010000-01-01T00:00:00.000Z"},
        {-62167219200000, "0000-01-01T00:00:00.000Z"},
        {-62167219200001, "-000001-12-31T23:59:59.999Z"},
        {-62198755200000, "-000001-01-01T00:00:00.000Z"},
        {1000000000000000, "+033658-09-27T01:46:40.000Z"},
        {-1000000000000000, "-029719-04-05T22:13:20.000Z"},
        {8640000000000000, "+275760-09-13T00:00:00.000Z"},
        {-8640000000000000, "-271821-04-20T00:00:00.000Z"},
        /* beyond JS's Date range: clamped */
        {8640000000000001, "+275760-09-13T00:00:00.000Z"},
        {INT64_MAX, "+275760-09-13T00:00:00.000Z"},
        {INT64_MIN, "-271821-04-20T00:00:00.000Z"},
    };
    char buf[32], ref[32];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        lq_parsedoc_iso(cases[i].ms, buf);
        ASSERT_STREQ(buf, cases[i].iso);
    }
    /* agrees with json.c's formatter (and round-trips through its parser) from 1900 to 2100 */
    for (int64_t ms = -2208988800000LL; ms < 4102444800000LL; ms += 86399999LL * 7 + 12345) {
        int64_t back = 0;
        lq_parsedoc_iso(ms, buf);
        lq_ms_to_iso(ms, ref, sizeof(ref));
        ASSERT_STREQ(buf, ref);
        ASSERT_EQ(lq_iso_to_ms(buf, &back), 0);
        ASSERT_EQ(back, ms);
    }
}

/* ---- schema ------------------------------------------------------------- */

static void test_schema_types(void)
{
    const lq_class_schema *c = lq_schema_class(g_schema, "Everything");
    const char *t = "x";

    ASSERT_EQ(lq_schema_count(g_schema), 6);
    ASSERT_TRUE(c != NULL);
    ASSERT_TRUE(lq_schema_class(g_schema, "Nope") == NULL);
    ASSERT_TRUE(lq_schema_class(NULL, "Everything") == NULL);
    ASSERT_EQ(lq_schema_field(c, "s", &t), LQ_FT_STRING);
    ASSERT_TRUE(t == NULL);
    ASSERT_EQ(lq_schema_field(c, "n", NULL), LQ_FT_NUMBER);
    ASSERT_EQ(lq_schema_field(c, "b", NULL), LQ_FT_BOOLEAN);
    ASSERT_EQ(lq_schema_field(c, "d", NULL), LQ_FT_DATE);
    ASSERT_EQ(lq_schema_field(c, "o", NULL), LQ_FT_OBJECT);
    ASSERT_EQ(lq_schema_field(c, "m", NULL), LQ_FT_OBJECT);
    ASSERT_EQ(lq_schema_field(c, "a", NULL), LQ_FT_ARRAY);
    ASSERT_EQ(lq_schema_field(c, "g", NULL), LQ_FT_GEOPOINT);
    ASSERT_EQ(lq_schema_field(c, "f", NULL), LQ_FT_FILE);
    ASSERT_EQ(lq_schema_field(c, "y", NULL), LQ_FT_BYTES);
    ASSERT_EQ(lq_schema_field(c, "poly", NULL), LQ_FT_POLYGON);
    ASSERT_EQ(lq_schema_field(c, "ptr", &t), LQ_FT_POINTER);
    ASSERT_STREQ(t, "Thing");
    ASSERT_EQ(lq_schema_field(c, "rel", &t), LQ_FT_RELATION);
    ASSERT_STREQ(t, "Tag");
    /* unknown type strings, non-strings, malformed pointer/relation, wrong case */
    ASSERT_EQ(lq_schema_field(c, "weird", &t), LQ_FT_UNKNOWN);
    ASSERT_TRUE(t == NULL);
    ASSERT_EQ(lq_schema_field(c, "num", NULL), LQ_FT_UNKNOWN);
    ASSERT_EQ(lq_schema_field(c, "star", NULL), LQ_FT_UNKNOWN);
    ASSERT_EQ(lq_schema_field(c, "emptyrel", NULL), LQ_FT_UNKNOWN);
    ASSERT_EQ(lq_schema_field(c, "Date", NULL), LQ_FT_UNKNOWN);
    /* not fields */
    ASSERT_EQ(lq_schema_field(c, "_id", NULL), LQ_FT_UNKNOWN);
    ASSERT_EQ(lq_schema_field(c, "_client_permissions", NULL), LQ_FT_UNKNOWN);
    ASSERT_EQ(lq_schema_field(c, "missing", NULL), LQ_FT_UNKNOWN);
    ASSERT_EQ(lq_schema_field(NULL, "s", &t), LQ_FT_UNKNOWN);
    ASSERT_TRUE(t == NULL);
    ASSERT_TRUE(lq_schema_clp(c) == NULL);
    ASSERT_TRUE(lq_schema_clp(NULL) == NULL);

    c = lq_schema_class(g_schema, "_Session");
    ASSERT_EQ(lq_schema_field(c, "user", &t), LQ_FT_POINTER);
    ASSERT_STREQ(t, "_User");
}

static void test_schema_clp(void)
{
    const lq_class_schema *c = lq_schema_class(g_schema, "SigningSchedule");
    lq_schema *s = lq_schema_new();
    bson_t *doc;
    lq_error err = {0, ""};

    ASSERT_TRUE(c != NULL);
    JSON_IS(json_deep_copy(lq_schema_clp(c)),
            "{\"find\":{\"*\":true},\"get\":{\"*\":true},\"count\":{\"*\":true},"
            "\"create\":{\"role:Staff\":true},\"update\":{\"role:Staff\":true},"
            "\"delete\":{\"role:Manager\":true},\"addField\":{},\"protectedFields\":{\"*\":[]}}");
    ASSERT_EQ(lq_schema_field(c, "_metadata", NULL), LQ_FT_UNKNOWN);

    /* pointerFields, readUserFields, requiresAuthentication, a Date inside */
    doc = B("{\"_id\":\"Doc\",\"owner\":\"*_User\",\"_metadata\":{\"class_permissions\":{"
            "\"get\":{\"pointerFields\":[\"owner\"],\"requiresAuthentication\":true},"
            "\"readUserFields\":[\"owner\"],\"writeUserFields\":[],"
            "\"protectedFields\":{\"userField:owner\":[\"secret\"]},"
            "\"odd\":{\"$date\":\"2020-01-01T00:00:00.000Z\"}}}}");
    ASSERT_EQ(lq_schema_add(s, doc, &err), LQ_OK);
    bson_destroy(doc);
    JSON_IS(json_deep_copy(lq_schema_clp(lq_schema_class(s, "Doc"))),
            "{\"get\":{\"pointerFields\":[\"owner\"],\"requiresAuthentication\":true},"
            "\"readUserFields\":[\"owner\"],\"writeUserFields\":[],"
            "\"protectedFields\":{\"userField:owner\":[\"secret\"]},"
            "\"odd\":{\"__type\":\"Date\",\"iso\":\"2020-01-01T00:00:00.000Z\"}}");

    /* replacing a class: new fields and CLP, count unchanged */
    doc = B("{\"_id\":\"Doc\",\"owner\":\"string\",\"_metadata\":{\"indexes\":{}}}");
    ASSERT_EQ(lq_schema_add(s, doc, &err), LQ_OK);
    bson_destroy(doc);
    ASSERT_EQ(lq_schema_count(s), 1);
    ASSERT_EQ(lq_schema_field(lq_schema_class(s, "Doc"), "owner", NULL), LQ_FT_STRING);
    ASSERT_TRUE(lq_schema_clp(lq_schema_class(s, "Doc")) == NULL);

    /* class_permissions null or not an object: none */
    doc = B("{\"_id\":\"Doc2\",\"_metadata\":{\"class_permissions\":null}}");
    ASSERT_EQ(lq_schema_add(s, doc, &err), LQ_OK);
    bson_destroy(doc);
    ASSERT_TRUE(lq_schema_clp(lq_schema_class(s, "Doc2")) == NULL);

    /* no _id, non-string _id */
    doc = B("{\"a\":\"string\"}");
    ASSERT_EQ(lq_schema_add(s, doc, &err), LQ_ERR_INVAL);
    ASSERT_STREQ(err.text, "_SCHEMA document has no string _id");
    bson_destroy(doc);
    doc = B("{\"_id\":7,\"a\":\"string\"}");
    ASSERT_EQ(lq_schema_add(s, doc, NULL), LQ_ERR_INVAL);
    bson_destroy(doc);
    ASSERT_EQ(lq_schema_count(s), 2);

    /* refcount: the extra reference keeps it alive */
    ASSERT_TRUE(lq_schema_ref(s) == s);
    lq_schema_unref(s);
    ASSERT_EQ(lq_schema_count(s), 2);
    lq_schema_unref(s);
    lq_schema_unref(NULL);
    ASSERT_TRUE(lq_schema_ref(NULL) == NULL);
}

static void test_schema_many_fields(void)
{
    /* hash lookups with many classes and fields (and a duplicate key: last wins) */
    lq_schema *s = lq_schema_new();
    char name[32], key[32];

    for (int i = 0; i < 300; i++) {
        bson_t *doc = bson_new();
        snprintf(name, sizeof(name), "C%d", i);
        BSON_APPEND_UTF8(doc, "_id", name);
        for (int j = 0; j < 50; j++) {
            snprintf(key, sizeof(key), "f%d", j);
            BSON_APPEND_UTF8(doc, key, j % 2 ? "number" : "relation<T>");
        }
        BSON_APPEND_UTF8(doc, "f0", "string");
        ASSERT_EQ(lq_schema_add(s, doc, NULL), LQ_OK);
        bson_destroy(doc);
    }
    ASSERT_EQ(lq_schema_count(s), 300);
    ASSERT_EQ(lq_schema_field(lq_schema_class(s, "C299"), "f49", NULL), LQ_FT_NUMBER);
    ASSERT_EQ(lq_schema_field(lq_schema_class(s, "C17"), "f48", NULL), LQ_FT_RELATION);
    ASSERT_EQ(lq_schema_field(lq_schema_class(s, "C17"), "f0", NULL), LQ_FT_STRING);
    ASSERT_EQ(lq_schema_field(lq_schema_class(s, "C17"), "f50", NULL), LQ_FT_UNKNOWN);
    {
        /* f0 was re-typed: it is no longer synthesized as a relation */
        bson_t *doc = B("{\"_id\":\"x\"}");
        json_t *v = TO_REST(doc, "C3", lq_schema_class(s, "C3"), NULL, NULL);
        bson_destroy(doc);
        ASSERT_TRUE(v != NULL);
        ASSERT_TRUE(json_object_get(v, "f0") == NULL);
        ASSERT_TRUE(json_object_get(v, "f2") != NULL);
        ASSERT_EQ(json_object_size(v), 2 + 24);
        json_decref(v);
    }
    lq_schema_unref(s);
}

/* ---- realistic documents ------------------------------------------------- */

static const char signing_doc[] =
    "{\"_id\":\"Xk3pL9qR2a\",\"_created_at\":{\"$date\":\"2026-11-20T15:04:05.123Z\"},"
    "\"_updated_at\":{\"$date\":\"2026-11-23T23:29:42.277Z\"},"
    "\"bookTitle\":\"The Quiet Shelf\",\"authorName\":\"Mara Ellison\","
    "\"eventDate\":{\"$date\":\"2026-12-05T18:30:00.000Z\"},"
    "\"location\":\"Main Street Books, Reading Room\","
    "\"_p_publisherContact\":\"PublisherContact$Pc7Hq2Lm9Z\",\"status\":\"confirmed\","
    "\"_p_staffLead\":\"_User$u8FhR2kL1m\",\"attendeeCount\":{\"$numberInt\":\"42\"},"
    "\"poster\":\"b7e1_quiet shelf.png\","
    "\"_rperm\":[\"*\",\"role:Staff\"],\"_wperm\":[\"role:Staff\",\"u8FhR2kL1m\"],"
    "\"_acl\":{\"role:Staff\":{\"w\":true,\"r\":true},\"u8FhR2kL1m\":{\"w\":true},"
    "\"*\":{\"r\":true}}}";

static void test_signing_schedule(void)
{
    lq_parsedoc_opts o = {"https://files.example.com/files/bookstore/", 0};

    /* exact text: key order objectId, className, fields in BSON order, relations, ACL */
    TEXT_IS(rest_o(signing_doc, "SigningSchedule", 1, &o),
            "{\"objectId\":\"Xk3pL9qR2a\",\"className\":\"SigningSchedule\","
            "\"createdAt\":\"2026-11-20T15:04:05.123Z\",\"updatedAt\":\"2026-11-23T23:29:42.277Z\","
            "\"bookTitle\":\"The Quiet Shelf\",\"authorName\":\"Mara Ellison\","
            "\"eventDate\":{\"__type\":\"Date\",\"iso\":\"2026-12-05T18:30:00.000Z\"},"
            "\"location\":\"Main Street Books, Reading Room\","
            "\"publisherContact\":{\"__type\":\"Pointer\",\"className\":\"PublisherContact\","
            "\"objectId\":\"Pc7Hq2Lm9Z\"},\"status\":\"confirmed\","
            "\"staffLead\":{\"__type\":\"Pointer\",\"className\":\"_User\","
            "\"objectId\":\"u8FhR2kL1m\"},\"attendeeCount\":42,"
            "\"poster\":{\"__type\":\"File\",\"name\":\"b7e1_quiet shelf.png\","
            "\"url\":\"https://files.example.com/files/bookstore/b7e1_quiet%20shelf.png\"},"
            "\"attendees\":{\"__type\":\"Relation\",\"className\":\"_User\"},"
            "\"ACL\":{\"*\":{\"read\":true},\"role:Staff\":{\"read\":true,\"write\":true},"
            "\"u8FhR2kL1m\":{\"write\":true}}}");
    /* without the schema: pointers inferred, the file stays a string, no relation */
    JSON_IS(rest(signing_doc, "SigningSchedule", 0),
            "{\"objectId\":\"Xk3pL9qR2a\",\"className\":\"SigningSchedule\","
            "\"createdAt\":\"2026-11-20T15:04:05.123Z\",\"updatedAt\":\"2026-11-23T23:29:42.277Z\","
            "\"bookTitle\":\"The Quiet Shelf\",\"authorName\":\"Mara Ellison\","
            "\"eventDate\":{\"__type\":\"Date\",\"iso\":\"2026-12-05T18:30:00.000Z\"},"
            "\"location\":\"Main Street Books, Reading Room\","
            "\"publisherContact\":{\"__type\":\"Pointer\",\"className\":\"PublisherContact\","
            "\"objectId\":\"Pc7Hq2Lm9Z\"},\"status\":\"confirmed\","
            "\"staffLead\":{\"__type\":\"Pointer\",\"className\":\"_User\","
            "\"objectId\":\"u8FhR2kL1m\"},\"attendeeCount\":42,"
            "\"poster\":\"b7e1_quiet shelf.png\","
            "\"ACL\":{\"*\":{\"read\":true},\"role:Staff\":{\"read\":true,\"write\":true},"
            "\"u8FhR2kL1m\":{\"write\":true}}}");
}

static void test_book_stock_log(void)
{
    static const char doc[] =
        "{\"_id\":\"HZKPL5sv3j\",\"isbn\":\"978-0-14-312755-0\",\"bookTitle\":\"The Quiet Shelf\","
        "\"quantityOnHand\":12,\"quantityReserved\":{\"$numberLong\":\"3\"},"
        "\"restockThreshold\":{\"$numberDouble\":\"2.5\"},"
        "\"lastCountedAt\":{\"$date\":\"2026-11-23T23:29:42.000Z\"},"
        "\"_p_recordedBy\":\"_User$u8FhR2kL1m\",\"_p_signingSchedule\":\"SigningSchedule$"
        "Xk3pL9qR2a\","
        "\"notes\":\"Two boxes held back for the signing \u00e9dition\",\"_rperm\":[\"*\"],"
        "\"_wperm\":[\"role:Staff\"],\"_acl\":{\"role:Staff\":{\"w\":true},\"*\":{\"r\":true}},"
        "\"_created_at\":{\"$date\":\"2026-11-23T23:29:42.277Z\"},"
        "\"_updated_at\":{\"$date\":\"2026-11-23T23:29:43.385Z\"}}";
    static const char want[] =
        "{\"objectId\":\"HZKPL5sv3j\",\"className\":\"BookStockLog\",\"isbn\":\"978-0-14-312755-"
        "0\","
        "\"bookTitle\":\"The Quiet Shelf\",\"quantityOnHand\":12,\"quantityReserved\":3,"
        "\"restockThreshold\":2.5,"
        "\"lastCountedAt\":{\"__type\":\"Date\",\"iso\":\"2026-11-23T23:29:42.000Z\"},"
        "\"recordedBy\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":"
        "\"u8FhR2kL1m\"},"
        "\"signingSchedule\":{\"__type\":\"Pointer\",\"className\":\"SigningSchedule\","
        "\"objectId\":\"Xk3pL9qR2a\"},\"notes\":\"Two boxes held back for the signing "
        "\u00e9dition\","
        "\"createdAt\":\"2026-11-23T23:29:42.277Z\",\"updatedAt\":\"2026-11-23T23:29:43.385Z\","
        "\"ACL\":{\"*\":{\"read\":true},\"role:Staff\":{\"write\":true}}}";

    TEXT_IS(rest(doc, "BookStockLog", 1), want);
    TEXT_IS(rest(doc, "BookStockLog", 0), want);
}

/* ---- field types ---------------------------------------------------------- */

static const char everything_doc[] =
    "{\"_id\":\"e1\",\"s\":\"hello\",\"n\":1.5,\"n2\":{\"$numberLong\":\"9007199254740993\"},"
    "\"n3\":-7,\"b\":true,\"d\":{\"$date\":{\"$numberLong\":\"-1\"}},"
    "\"o\":{\"when\":{\"$date\":\"2020-02-02T02:02:02.002Z\"},\"raw\":{\"$binary\":"
    "{\"base64\":\"aGVsbG8=\",\"subType\":\"00\"}},\"deep\":{\"list\":[1,\"x\",null]}},"
    "\"m\":{\"k\":\"v\"},\"a\":[1,\"x\",{\"$date\":\"1969-07-20T20:17:40.000Z\"},[true]],"
    "\"g\":[-122.4194,{\"$numberInt\":\"37\"}],\"f\":\"pic one.png\","
    "\"y\":{\"$binary\":{\"base64\":\"//79/Ps=\",\"subType\":\"00\"}},\"y2\":\"aGVsbG8=\","
    "\"poly\":{\"type\":\"Polygon\",\"coordinates\":[[[0,0],[0,1.5],[1,1],[0,0]]]},"
    "\"nul\":null}";

static void test_types_with_schema(void)
{
    JSON_IS(rest(everything_doc, "Everything", 1),
            "{\"objectId\":\"e1\",\"className\":\"Everything\",\"s\":\"hello\",\"n\":1.5,"
            "\"n2\":9007199254740993,\"n3\":-7,\"b\":true,"
            "\"d\":{\"__type\":\"Date\",\"iso\":\"1969-12-31T23:59:59.999Z\"},"
            "\"o\":{\"when\":{\"__type\":\"Date\",\"iso\":\"2020-02-02T02:02:02.002Z\"},"
            "\"raw\":{\"__type\":\"Bytes\",\"base64\":\"aGVsbG8=\"},\"deep\":{\"list\":[1,\"x\","
            "null]}},"
            "\"m\":{\"k\":\"v\"},"
            "\"a\":[1,\"x\",{\"__type\":\"Date\",\"iso\":\"1969-07-20T20:17:40.000Z\"},[true]],"
            "\"g\":{\"__type\":\"GeoPoint\",\"latitude\":37,\"longitude\":-122.4194},"
            "\"f\":{\"__type\":\"File\",\"name\":\"pic one.png\"},"
            "\"y\":{\"__type\":\"Bytes\",\"base64\":\"//79/Ps=\"},"
            "\"y2\":\"aGVsbG8=\","
            "\"poly\":{\"__type\":\"Polygon\",\"coordinates\":[[0,0],[1.5,0],[1,1],[0,0]]},"
            "\"nul\":null,\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    /* int64 above 2^53 stays an exact integer */
    {
        json_t *v = rest(everything_doc, "Everything", 1);
        ASSERT_TRUE(v != NULL);
        ASSERT_TRUE(json_is_integer(json_object_get(v, "n2")));
        ASSERT_EQ(json_integer_value(json_object_get(v, "n2")), 9007199254740993LL);
        json_decref(v);
    }
}

static void test_types_without_schema(void)
{
    /* files, geopoints, polygons stay as stored; binary still converts */
    JSON_IS(rest(everything_doc, "Everything", 0),
            "{\"objectId\":\"e1\",\"className\":\"Everything\",\"s\":\"hello\",\"n\":1.5,"
            "\"n2\":9007199254740993,\"n3\":-7,\"b\":true,"
            "\"d\":{\"__type\":\"Date\",\"iso\":\"1969-12-31T23:59:59.999Z\"},"
            "\"o\":{\"when\":{\"__type\":\"Date\",\"iso\":\"2020-02-02T02:02:02.002Z\"},"
            "\"raw\":{\"__type\":\"Bytes\",\"base64\":\"aGVsbG8=\"},\"deep\":{\"list\":[1,\"x\","
            "null]}},"
            "\"m\":{\"k\":\"v\"},"
            "\"a\":[1,\"x\",{\"__type\":\"Date\",\"iso\":\"1969-07-20T20:17:40.000Z\"},[true]],"
            "\"g\":[-122.4194,37],\"f\":\"pic one.png\","
            "\"y\":{\"__type\":\"Bytes\",\"base64\":\"//79/Ps=\"},\"y2\":\"aGVsbG8=\","
            "\"poly\":{\"type\":\"Polygon\",\"coordinates\":[[[0,0],[0,1.5],[1,1],[0,0]]]},"
            "\"nul\":null}");
    /* a class the schema does not know is the same as no schema */
    JSON_IS(rest("{\"_id\":\"a\",\"g\":[1,2]}", "NotInSchema", 1),
            "{\"objectId\":\"a\",\"className\":\"NotInSchema\",\"g\":[1,2]}");
}

static void test_typed_fallbacks(void)
{
    /* values of the wrong shape in typed fields convert generically */
    JSON_IS(rest("{\"_id\":\"a\",\"g\":[1,2,3],\"f\":5,\"poly\":{\"type\":\"Point\","
                 "\"coordinates\":[1,2]},\"y\":\"not base64!\",\"d\":\"2020-01-01\"}",
                 "Everything", 1),
            "{\"objectId\":\"a\",\"className\":\"Everything\",\"g\":[1,2,3],\"f\":5,"
            "\"poly\":{\"type\":\"Point\",\"coordinates\":[1,2]},\"y\":\"not base64!\","
            "\"d\":\"2020-01-01\",\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    JSON_IS(rest("{\"_id\":\"a\",\"g\":[\"1\",2],\"poly\":{\"type\":\"Polygon\","
                 "\"coordinates\":[[[0,0],[1]]]},\"y\":\"abc\"}",
                 "Everything", 1),
            "{\"objectId\":\"a\",\"className\":\"Everything\",\"g\":[\"1\",2],"
            "\"poly\":{\"type\":\"Polygon\",\"coordinates\":[[[0,0],[1]]]},\"y\":\"abc\","
            "\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    JSON_IS(rest("{\"_id\":\"a\",\"g\":{\"__type\":\"GeoPoint\",\"latitude\":1,\"longitude\":2},"
                 "\"poly\":{\"coordinates\":[[[0,0]]],\"type\":\"Polygon\"},\"y\":\"YQ==\"}",
                 "Everything", 1),
            "{\"objectId\":\"a\",\"className\":\"Everything\","
            "\"g\":{\"__type\":\"GeoPoint\",\"latitude\":1,\"longitude\":2},"
            "\"poly\":{\"__type\":\"Polygon\",\"coordinates\":[[0,0]]},"
            "\"y\":{\"__type\":\"Bytes\",\"base64\":\"YQ==\"},"
            "\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
}

static void test_files(void)
{
    lq_parsedoc_opts o = {"https://f.example/app/", 0};
    lq_parsedoc_opts none = {NULL, 0};

    JSON_IS(rest_o("{\"_id\":\"a\",\"f\":\"my pic+1\u00e9!~*()'.png\"}", "Everything", 1, &o),
            "{\"objectId\":\"a\",\"className\":\"Everything\",\"f\":{\"__type\":\"File\","
            "\"name\":\"my pic+1\u00e9!~*()'.png\","
            "\"url\":\"https://f.example/app/my%20pic%2B1%C3%A9!~*()'.png\"},"
            "\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    JSON_IS(rest_o("{\"_id\":\"a\",\"f\":\"x.png\"}", "Everything", 1, &none),
            "{\"objectId\":\"a\",\"className\":\"Everything\",\"f\":{\"__type\":\"File\","
            "\"name\":\"x.png\"},\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    /* REST File objects pass through; top-level ones without url get one (expandFilesInObject) */
    JSON_IS(
        rest_o("{\"_id\":\"a\",\"doc\":{\"__type\":\"File\",\"name\":\"a b\"},"
               "\"kept\":{\"__type\":\"File\",\"name\":\"c\",\"url\":\"http://x/c\"},"
               "\"nested\":{\"inner\":{\"__type\":\"File\",\"name\":\"d\"}},"
               "\"list\":[{\"__type\":\"File\",\"name\":\"e\"}]}",
               "Other", 0, &o),
        "{\"objectId\":\"a\",\"className\":\"Other\","
        "\"doc\":{\"__type\":\"File\",\"name\":\"a b\",\"url\":\"https://f.example/app/a%20b\"},"
        "\"kept\":{\"__type\":\"File\",\"name\":\"c\",\"url\":\"http://x/c\"},"
        "\"nested\":{\"inner\":{\"__type\":\"File\",\"name\":\"d\"}},"
        "\"list\":[{\"__type\":\"File\",\"name\":\"e\"}]}");
}

/* ---- pointers ------------------------------------------------------------- */

static void test_pointers(void)
{
    /* schema pointer: className from the value, split at the first '$' */
    JSON_IS(rest("{\"_id\":\"a\",\"_p_ptr\":\"Other$x$y\"}", "Everything", 1),
            "{\"objectId\":\"a\",\"className\":\"Everything\",\"ptr\":{\"__type\":\"Pointer\","
            "\"className\":\"Other\",\"objectId\":\"x$y\"},"
            "\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    /* schema has the class: non-pointer field and unknown field dropped; null omitted;
       non-strings and strings without '$' dropped */
    JSON_IS(rest("{\"_id\":\"a\",\"_p_s\":\"Thing$1\",\"_p_nope\":\"Thing$2\",\"_p_ptr\":null}",
                 "Everything", 1),
            "{\"objectId\":\"a\",\"className\":\"Everything\","
            "\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    JSON_IS(rest("{\"_id\":\"a\",\"_p_ptr\":5}", "Everything", 1),
            "{\"objectId\":\"a\",\"className\":\"Everything\","
            "\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    JSON_IS(rest("{\"_id\":\"a\",\"_p_ptr\":\"Thing\"}", "Everything", 1),
            "{\"objectId\":\"a\",\"className\":\"Everything\","
            "\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    JSON_IS(rest("{\"_id\":\"a\",\"_p_ptr\":\"$abc\"}", "Everything", 1),
            "{\"objectId\":\"a\",\"className\":\"Everything\","
            "\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    /* inferred without a schema entry */
    JSON_IS(rest("{\"_id\":\"a\",\"_p_owner\":\"_User$u1\",\"_p_team\":\"Team_2$t1\","
                 "\"_p_bad\":\"not a class$x\",\"_p_bad2\":\"9Lives$x\",\"_p_bad3\":\"noDollar\","
                 "\"_p_nul\":null,\"_p_num\":1,\"_p_\":\"A$b\",\"_p_empty\":\"A$\"}",
                 "Free", 0),
            "{\"objectId\":\"a\",\"className\":\"Free\","
            "\"owner\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u1\"},"
            "\"team\":{\"__type\":\"Pointer\",\"className\":\"Team_2\",\"objectId\":\"t1\"},"
            "\"empty\":{\"__type\":\"Pointer\",\"className\":\"A\",\"objectId\":\"\"}}");
    /* nested pointers (stored as REST subdocuments) pass through */
    JSON_IS(rest("{\"_id\":\"a\",\"list\":[{\"__type\":\"Pointer\",\"className\":\"_User\","
                 "\"objectId\":\"u1\"}],\"o\":{\"p\":{\"__type\":\"Pointer\",\"className\":\"T\","
                 "\"objectId\":\"t\"}}}",
                 "Free", 0),
            "{\"objectId\":\"a\",\"className\":\"Free\",\"list\":[{\"__type\":\"Pointer\","
            "\"className\":\"_User\",\"objectId\":\"u1\"}],\"o\":{\"p\":{\"__type\":\"Pointer\","
            "\"className\":\"T\",\"objectId\":\"t\"}}}");
}

/* ---- ACL ------------------------------------------------------------------ */

static void test_acl(void)
{
    JSON_IS(rest("{\"_id\":\"a\"}", "C", 0), "{\"objectId\":\"a\",\"className\":\"C\"}");
    JSON_IS(rest("{\"_id\":\"a\",\"_rperm\":null,\"_wperm\":null}", "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\"}");
    JSON_IS(rest("{\"_id\":\"a\",\"_rperm\":[\"*\",\"u1\"]}", "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"ACL\":{\"*\":{\"read\":true,\"write\":true},"
            "\"u1\":{\"read\":true}}}");
    JSON_IS(rest("{\"_id\":\"a\",\"_wperm\":[\"u1\"]}", "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"ACL\":{\"*\":{\"read\":true},"
            "\"u1\":{\"write\":true}}}");
    JSON_IS(rest("{\"_id\":\"a\",\"_rperm\":null,\"_wperm\":[\"u1\"]}", "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"ACL\":{\"*\":{\"read\":true},"
            "\"u1\":{\"write\":true}}}");
    JSON_IS(rest("{\"_id\":\"a\",\"_rperm\":[],\"_wperm\":[]}", "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"ACL\":{}}");
    JSON_IS(rest("{\"_id\":\"a\",\"_wperm\":[\"u1\"],\"_rperm\":[\"role:Staff\",\"u1\"]}", "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"ACL\":{\"role:Staff\":{\"read\":true},"
            "\"u1\":{\"read\":true,\"write\":true}}}");
    /* non-string entries ignored; a lone string counts as one entry */
    JSON_IS(
        rest("{\"_id\":\"a\",\"_rperm\":[\"u1\",5,null,{\"x\":1},[\"u2\"]],\"_wperm\":[]}", "C", 0),
        "{\"objectId\":\"a\",\"className\":\"C\",\"ACL\":{\"u1\":{\"read\":true}}}");
    JSON_IS(rest("{\"_id\":\"a\",\"_rperm\":\"*\",\"_wperm\":7}", "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"ACL\":{\"*\":{\"read\":true}}}");
    /* legacy _acl and a stored ACL key are ignored */
    JSON_IS(rest("{\"_id\":\"a\",\"_acl\":{\"u1\":{\"r\":true}},\"ACL\":{\"u9\":{\"read\":true}}}",
                 "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\"}");
    /* ACL is the last key, after synthesized relations */
    TEXT_IS(
        rest("{\"_rperm\":[\"*\"],\"_id\":\"r1\",\"name\":\"Staff\",\"_wperm\":[]}", "_Role", 1),
        "{\"objectId\":\"r1\",\"className\":\"_Role\",\"name\":\"Staff\","
        "\"users\":{\"__type\":\"Relation\",\"className\":\"_User\"},"
        "\"roles\":{\"__type\":\"Relation\",\"className\":\"_Role\"},"
        "\"ACL\":{\"*\":{\"read\":true}}}");
}

/* ---- internal keys, _User, _Session -------------------------------------- */

static void test_internal_keys(void)
{
    JSON_IS(rest("{\"_id\":\"u1\",\"username\":\"mara\",\"email\":\"mara@example.com\","
                 "\"emailVerified\":true,\"_hashed_password\":\"$2b$10$abc\","
                 "\"_email_verify_token\":\"t\",\"_perishable_token\":\"p\","
                 "\"_perishable_token_expires_at\":{\"$date\":\"2026-01-01T00:00:00Z\"},"
                 "\"_password_changed_at\":{\"$date\":\"2026-01-01T00:00:00Z\"},"
                 "\"_password_history\":[\"h\"],\"_failed_login_count\":2,"
                 "\"_account_lockout_expires_at\":{\"$date\":\"2026-01-01T00:00:00Z\"},"
                 "\"_tombstone\":true,\"_session_token\":\"r:abc\","
                 "\"_auth_data_facebook\":{\"id\":\"1\",\"access_token\":\"s\"},"
                 "\"authData\":{\"anonymous\":{\"id\":\"x\"}},\"sessionToken\":\"r:def\","
                 "\"__type\":\"Object\",\"_metadata\":{},\"_foo\":1,\"_\":2,"
                 "\"objectId\":\"fake\",\"className\":\"Fake\","
                 "\"_rperm\":[\"u1\"],\"_wperm\":[\"u1\"]}",
                 "_User", 1),
            "{\"objectId\":\"u1\",\"className\":\"_User\",\"username\":\"mara\","
            "\"email\":\"mara@example.com\",\"emailVerified\":true,"
            "\"ACL\":{\"u1\":{\"read\":true,\"write\":true}}}");
    /* _Session: secret dropped, user pointer, expiresAt Date, no ACL */
    JSON_IS(rest("{\"_id\":\"s1\",\"_session_token\":\"r:0123\",\"_p_user\":\"_User$u1\","
                 "\"createdWith\":{\"action\":\"login\",\"authProvider\":\"password\"},"
                 "\"expiresAt\":{\"$date\":\"2027-11-23T23:29:42.277Z\"},"
                 "\"installationId\":\"i1\",\"sessionToken\":\"r:0123\","
                 "\"_created_at\":{\"$date\":\"2026-11-23T23:29:42.277Z\"},"
                 "\"_updated_at\":{\"$date\":\"2026-11-23T23:29:42.277Z\"}}",
                 "_Session", 1),
            "{\"objectId\":\"s1\",\"className\":\"_Session\","
            "\"user\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u1\"},"
            "\"createdWith\":{\"action\":\"login\",\"authProvider\":\"password\"},"
            "\"expiresAt\":{\"__type\":\"Date\",\"iso\":\"2027-11-23T23:29:42.277Z\"},"
            "\"installationId\":\"i1\",\"createdAt\":\"2026-11-23T23:29:42.277Z\","
            "\"updatedAt\":\"2026-11-23T23:29:42.277Z\"}");
    /* legacy _expiresAt */
    JSON_IS(rest("{\"_id\":\"s1\",\"_expiresAt\":{\"$date\":\"2027-01-01T00:00:00.000Z\"}}",
                 "_Session", 0),
            "{\"objectId\":\"s1\",\"className\":\"_Session\","
            "\"expiresAt\":{\"__type\":\"Date\",\"iso\":\"2027-01-01T00:00:00.000Z\"}}");
    /* no className when class_name is NULL */
    JSON_IS(rest("{\"_id\":\"a\",\"x\":1}", NULL, 0), "{\"objectId\":\"a\",\"x\":1}");
}

/* ---- dates at the top level ---------------------------------------------- */

static void test_timestamps(void)
{
    JSON_IS(rest("{\"_id\":\"a\",\"_created_at\":{\"$date\":{\"$numberLong\":\"-86400001\"}},"
                 "\"_updated_at\":{\"$date\":{\"$numberLong\":\"1\"}}}",
                 "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"createdAt\":\"1969-12-30T23:59:59.999Z\","
            "\"updatedAt\":\"1970-01-01T00:00:00.001Z\"}");
    /* legacy keys alone */
    JSON_IS(rest("{\"_id\":\"a\",\"createdAt\":{\"$date\":\"2015-01-01T00:00:00.500Z\"},"
                 "\"updatedAt\":{\"$date\":\"2015-01-02T00:00:00.000Z\"}}",
                 "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"createdAt\":\"2015-01-01T00:00:00.500Z\","
            "\"updatedAt\":\"2015-01-02T00:00:00.000Z\"}");
    /* _created_at wins whichever comes first */
    JSON_IS(rest("{\"_id\":\"a\",\"createdAt\":{\"$date\":\"2015-01-01T00:00:00.000Z\"},"
                 "\"_created_at\":{\"$date\":\"2016-01-01T00:00:00.000Z\"},"
                 "\"_updated_at\":{\"$date\":\"2016-01-01T00:00:00.000Z\"},"
                 "\"updatedAt\":{\"$date\":\"2015-01-01T00:00:00.000Z\"}}",
                 "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"createdAt\":\"2016-01-01T00:00:00.000Z\","
            "\"updatedAt\":\"2016-01-01T00:00:00.000Z\"}");
    /* a string is kept, other types dropped */
    JSON_IS(rest("{\"_id\":\"a\",\"_created_at\":\"2016-01-01T00:00:00.000Z\","
                 "\"_updated_at\":5}",
                 "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"createdAt\":\"2016-01-01T00:00:00.000Z\"}");
    /* far years */
    JSON_IS(rest("{\"_id\":\"a\",\"d\":{\"$date\":{\"$numberLong\":\"253402300800000\"}},"
                 "\"e\":{\"$date\":{\"$numberLong\":\"-62167219200001\"}}}",
                 "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\","
            "\"d\":{\"__type\":\"Date\",\"iso\":\"+010000-01-01T00:00:00.000Z\"},"
            "\"e\":{\"__type\":\"Date\",\"iso\":\"-000001-12-31T23:59:59.999Z\"}}");
}

/* ---- nested values and odd BSON types ------------------------------------- */

static void test_nested_dates(void)
{
    /* {__type:"Date", iso:<BSON Date>} -> iso string (dot-notation writes) */
    JSON_IS(value_of("{\"__type\":\"Date\",\"iso\":{\"$date\":\"2020-05-05T05:05:05.005Z\"}}"),
            "{\"__type\":\"Date\",\"iso\":\"2020-05-05T05:05:05.005Z\"}");
    JSON_IS(value_of("{\"iso\":{\"$date\":\"2020-05-05T05:05:05.005Z\"},\"__type\":\"Date\"}"),
            "{\"iso\":\"2020-05-05T05:05:05.005Z\",\"__type\":\"Date\"}");
    JSON_IS(value_of("{\"__type\":\"Date\",\"iso\":\"2020-05-05T05:05:05.005Z\"}"),
            "{\"__type\":\"Date\",\"iso\":\"2020-05-05T05:05:05.005Z\"}");
    /* iso under some other __type stays a Date */
    JSON_IS(value_of("{\"__type\":\"Other\",\"iso\":{\"$date\":\"2020-05-05T05:05:05.005Z\"}}"),
            "{\"__type\":\"Other\",\"iso\":{\"__type\":\"Date\",\"iso\":\"2020-05-05T05:05:05."
            "005Z\"}}");
    JSON_IS(value_of("{\"iso\":{\"$date\":\"2020-05-05T05:05:05.005Z\"}}"),
            "{\"iso\":{\"__type\":\"Date\",\"iso\":\"2020-05-05T05:05:05.005Z\"}}");
    JSON_IS(value_of("[[{\"d\":{\"$date\":{\"$numberLong\":\"-1\"}}}]]"),
            "[[{\"d\":{\"__type\":\"Date\",\"iso\":\"1969-12-31T23:59:59.999Z\"}}]]");
}

static void test_binary(void)
{
    static const struct {
        const char *raw;
        size_t n;
        const char *b64;
    } cases[] = {
        {"", 0, ""},
        {"f", 1, "Zg=="},
        {"fo", 2, "Zm8="},
        {"foo", 3, "Zm9v"},
        {"foob", 4, "Zm9vYg=="},
        {"fooba", 5, "Zm9vYmE="},
        {"foobar", 6, "Zm9vYmFy"},
    };
    const bson_subtype_t subtypes[] = {BSON_SUBTYPE_BINARY,    BSON_SUBTYPE_BINARY_DEPRECATED,
                                       BSON_SUBTYPE_UUID,      BSON_SUBTYPE_MD5,
                                       BSON_SUBTYPE_ENCRYPTED, BSON_SUBTYPE_USER};
    char want[128];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        for (size_t s = 0; s < sizeof(subtypes) / sizeof(subtypes[0]); s++) {
            bson_t *doc = bson_new();
            bson_iter_t it;
            BSON_APPEND_UTF8(doc, "_id", "b");
            BSON_APPEND_BINARY(doc, "v", subtypes[s], (const uint8_t *)cases[i].raw,
                               (uint32_t)cases[i].n);
            json_decref(TO_REST(doc, "C", NULL, NULL, NULL));
            ASSERT_TRUE(bson_iter_init_find(&it, doc, "v"));
            snprintf(want, sizeof(want), "{\"__type\":\"Bytes\",\"base64\":\"%s\"}", cases[i].b64);
            JSON_IS(lq_parsedoc_value(&it), want);
            bson_destroy(doc);
        }
    }
    /* a long one (heap path) */
    {
        uint8_t big[300];
        bson_t *doc = bson_new();
        bson_iter_t it;
        json_t *v;
        const char *b;
        for (int i = 0; i < 300; i++)
            big[i] = (uint8_t)i;
        BSON_APPEND_UTF8(doc, "_id", "b");
        BSON_APPEND_BINARY(doc, "v", BSON_SUBTYPE_BINARY, big, sizeof(big));
        json_decref(TO_REST(doc, "C", NULL, NULL, NULL));
        ASSERT_TRUE(bson_iter_init_find(&it, doc, "v"));
        v = lq_parsedoc_value(&it);
        bson_destroy(doc);
        b = json_string_value(json_object_get(v, "base64"));
        ASSERT_TRUE(b != NULL);
        ASSERT_EQ(strlen(b), 400);
        ASSERT_TRUE(strncmp(b, "AAECAwQF", 8) == 0);
        ASSERT_STREQ(b + 392, "JicoKSor");
        json_decref(v);
    }
    /* nested in arrays and objects, and at the top level */
    JSON_IS(rest("{\"_id\":\"a\",\"list\":[{\"$binary\":{\"base64\":\"AQID\",\"subType\":\"04\"}}],"
                 "\"top\":{\"$binary\":{\"base64\":\"AQID\",\"subType\":\"80\"}}}",
                 "C", 0),
            "{\"objectId\":\"a\",\"className\":\"C\",\"list\":[{\"__type\":\"Bytes\","
            "\"base64\":\"AQID\"}],\"top\":{\"__type\":\"Bytes\",\"base64\":\"AQID\"}}");
}

static void test_odd_types(void)
{
    JSON_IS(value_of("{\"$oid\":\"5f1d7a4e2b3c4d5e6f708192\"}"), "\"5f1d7a4e2b3c4d5e6f708192\"");
    JSON_IS(value_of("{\"$numberDecimal\":\"1.50\"}"), "\"1.50\"");
    JSON_IS(value_of("{\"$numberDecimal\":\"NaN\"}"), "\"NaN\"");
    JSON_IS(value_of("{\"$numberDouble\":\"NaN\"}"), "null");
    JSON_IS(value_of("{\"$numberDouble\":\"Infinity\"}"), "null");
    JSON_IS(value_of("{\"$numberDouble\":\"-Infinity\"}"), "null");
    JSON_IS(value_of("{\"$numberDouble\":\"-0.0\"}"), "-0.0");
    JSON_IS(value_of("{\"$numberLong\":\"-9223372036854775808\"}"), "-9223372036854775808");
    JSON_IS(value_of("{\"$numberInt\":\"-2147483648\"}"), "-2147483648");
    JSON_IS(value_of("{\"$regularExpression\":{\"pattern\":\"^a.b\",\"options\":\"im\"}}"),
            "\"/^a.b/im\"");
    JSON_IS(value_of("{\"$timestamp\":{\"t\":5,\"i\":7}}"), "21474836487");
    JSON_IS(value_of("{\"$timestamp\":{\"t\":4294967295,\"i\":0}}"), "18446744069414584320.0");
    JSON_IS(value_of("{\"$code\":\"function(){}\"}"), "\"function(){}\"");
    JSON_IS(value_of("{\"$code\":\"f()\",\"$scope\":{\"x\":1}}"), "\"f()\"");
    JSON_IS(value_of("{\"$symbol\":\"sym\"}"), "\"sym\"");
    JSON_IS(value_of("{\"$minKey\":1}"), "null");
    JSON_IS(value_of("{\"$maxKey\":1}"), "null");
    JSON_IS(value_of("{\"$undefined\":true}"), "null");
    JSON_IS(
        value_of(
            "{\"$dbPointer\":{\"$ref\":\"c\",\"$id\":{\"$oid\":\"5f1d7a4e2b3c4d5e6f708192\"}}}"),
        "null");
    JSON_IS(value_of("[true,false,null,\"s\",{}]"), "[true,false,null,\"s\",{}]");
    JSON_IS(lq_parsedoc_value(NULL), "null");
    /* all of them inside one document, as fields */
    JSON_IS(
        rest(
            "{\"_id\":\"a\",\"r\":{\"$regularExpression\":{\"pattern\":\"x\",\"options\":\"\"}},"
            "\"u\":{\"$undefined\":true},\"k\":{\"$minKey\":1},"
            "\"o\":{\"$oid\":\"5f1d7a4e2b3c4d5e6f708192\"},\"dec\":{\"$numberDecimal\":\"-1E+3\"}}",
            "C", 0),
        "{\"objectId\":\"a\",\"className\":\"C\",\"r\":\"/x/\",\"u\":null,\"k\":null,"
        "\"o\":\"5f1d7a4e2b3c4d5e6f708192\",\"dec\":\"-1E+3\"}");
}

static void test_object_ids(void)
{
    JSON_IS(rest("{\"_id\":{\"$oid\":\"5f1d7a4e2b3c4d5e6f708192\"}}", "C", 0),
            "{\"objectId\":\"5f1d7a4e2b3c4d5e6f708192\",\"className\":\"C\"}");
    JSON_IS(rest("{\"_id\":1}", "_GlobalConfig", 0),
            "{\"objectId\":\"1\",\"className\":\"_GlobalConfig\"}");
    JSON_IS(rest("{\"_id\":{\"$numberLong\":\"-9007199254740993\"}}", "C", 0),
            "{\"objectId\":\"-9007199254740993\",\"className\":\"C\"}");
    JSON_IS(rest("{\"_id\":1.5}", "C", 0), "{\"objectId\":\"1.5\",\"className\":\"C\"}");
    JSON_IS(rest("{\"_id\":{\"$numberDouble\":\"NaN\"}}", "C", 0),
            "{\"objectId\":\"NaN\",\"className\":\"C\"}");
    JSON_IS(rest("{\"_id\":true}", "C", 0), "{\"objectId\":\"true\",\"className\":\"C\"}");
    JSON_IS(rest("{\"_id\":null}", "C", 0), "{\"objectId\":\"null\",\"className\":\"C\"}");
    JSON_IS(rest("{\"_id\":{\"a\":[1,\"b\"]}}", "C", 0),
            "{\"objectId\":\"{\\\"a\\\":[1,\\\"b\\\"]}\",\"className\":\"C\"}");
    JSON_IS(rest("{\"_id\":{\"$date\":{\"$numberLong\":\"0\"}}}", "C", 0),
            "{\"objectId\":\"{\\\"__type\\\":\\\"Date\\\",\\\"iso\\\":\\\"1970-01-01T00:00:00."
            "000Z\\\"}\","
            "\"className\":\"C\"}");
}

static void test_no_id(void)
{
    bson_t *doc = B("{\"name\":\"x\",\"_rperm\":[\"*\"]}");
    lq_error err = {0, ""};

    ASSERT_TRUE(TO_REST(doc, "C", NULL, NULL, &err) == NULL);
    ASSERT_EQ(err.code, LQ_PARSE_ERR_SCHEMA);
    ASSERT_STREQ(err.text, "document has no _id");
    ASSERT_TRUE(TO_REST(doc, "C", NULL, NULL, NULL) == NULL);
    bson_destroy(doc);
    err.code = 0;
    ASSERT_TRUE(TO_REST(NULL, "C", NULL, NULL, &err) == NULL);
    ASSERT_EQ(err.code, LQ_PARSE_ERR_SCHEMA);
    /* the empty document */
    doc = bson_new();
    ASSERT_TRUE(TO_REST(doc, "C", NULL, NULL, NULL) == NULL);
    bson_destroy(doc);
}

static void test_relations(void)
{
    /* synthesized after the fields, a stored value under the name is replaced in place */
    TEXT_IS(rest("{\"_id\":\"r\",\"roles\":[1,2],\"name\":\"Admin\"}", "_Role", 1),
            "{\"objectId\":\"r\",\"className\":\"_Role\","
            "\"roles\":{\"__type\":\"Relation\",\"className\":\"_Role\"},\"name\":\"Admin\","
            "\"users\":{\"__type\":\"Relation\",\"className\":\"_User\"}}");
    /* no schema: nothing synthesized, stored values stay */
    JSON_IS(rest("{\"_id\":\"r\",\"roles\":[1,2],\"name\":\"Admin\"}", "_Role", 0),
            "{\"objectId\":\"r\",\"className\":\"_Role\",\"roles\":[1,2],\"name\":\"Admin\"}");
}

/* ---- robustness --------------------------------------------------------- */

/* Raw BSON: {"_id":"x","deep":{"a":{"a":…{}…}}} with `levels` documents under "deep"
 * (arrays when arr: keys "0"). */
static bson_t *deep_doc(int levels, int arr)
{
    size_t inner = 5 + 8 * (size_t)(levels - 1), len;
    uint8_t *buf = lq_xmalloc(inner), *p = buf;
    bson_t sub, *doc;

    for (int k = levels - 1; k > 0; k--) {
        uint32_t l = (uint32_t)(5 + 8 * k);
        memcpy(p, &l, 4); /* little-endian host assumed (x86/arm64) */
        p += 4;
        *p++ = arr ? 0x04 : 0x03;
        *p++ = arr ? '0' : 'a';
        *p++ = 0;
    }
    memcpy(p, "\x05\x00\x00\x00\x00", 5);
    p += 5;
    for (int k = levels - 1; k > 0; k--)
        *p++ = 0;
    len = (size_t)(p - buf);
    doc = bson_new();
    BSON_APPEND_UTF8(doc, "_id", "x");
    if (bson_init_static(&sub, buf, len)) {
        if (arr)
            BSON_APPEND_ARRAY(doc, "deep", &sub);
        else
            BSON_APPEND_DOCUMENT(doc, "deep", &sub);
    }
    free(buf);
    return doc;
}

static int json_depth(const json_t *v)
{
    int d = 0;
    while (json_is_object(v) || json_is_array(v)) {
        d++;
        v = json_is_object(v) ? json_object_get(v, "a") : json_array_get(v, 0);
    }
    return json_is_null(v) ? d : -1;
}

static void test_deep_nesting(void)
{
    const int levels[] = {99, 100, 101, 150, 200000};
    for (int arr = 0; arr < 2; arr++) {
        for (size_t i = 0; i < sizeof(levels) / sizeof(levels[0]); i++) {
            bson_t *doc = deep_doc(levels[i], arr);
            json_t *v = TO_REST(doc, "C", NULL, NULL, NULL);
            const json_t *deep;
            ASSERT_TRUE(v != NULL);
            deep = json_object_get(v, "deep");
            ASSERT_TRUE(deep != NULL);
            if (levels[i] <= LQ_PARSEDOC_MAX_DEPTH) { /* all there; the innermost is empty */
                int d = 0;
                while (json_is_object(deep) || json_is_array(deep)) {
                    const json_t *next =
                        json_is_object(deep) ? json_object_get(deep, "a") : json_array_get(deep, 0);
                    d++;
                    if (next == NULL)
                        break;
                    deep = next;
                }
                ASSERT_EQ(d, levels[i]);
            } else { /* 100 containers, then null */
                ASSERT_EQ(json_depth(deep), LQ_PARSEDOC_MAX_DEPTH);
            }
            json_decref(v);
            bson_destroy(doc);
        }
    }
}

static void test_bad_utf8(void)
{
    bson_t *doc = bson_new();
    json_t *v;

    BSON_APPEND_UTF8(doc, "_id", "i\xff");
    bson_append_utf8(doc, "s", -1, "a\xff\xc3(b\xed\xa0\x80\xf4\x90\x80\x80\xc3", -1);
    bson_append_utf8(doc, "nul", -1, "a\0b", 3);
    bson_append_int32(doc, "k\xc3", -1, 1);
    {
        bson_t arr;
        BSON_APPEND_ARRAY_BEGIN(doc, "_rperm", &arr);
        BSON_APPEND_UTF8(&arr, "0", "ok");
        BSON_APPEND_UTF8(&arr, "1", "bad\xff");
        bson_append_utf8(&arr, "2", -1, "nu\0l", 4);
        bson_append_array_end(doc, &arr);
    }
    BSON_APPEND_UTF8(doc, "_p_ptr", "_User$u\xff");
    v = TO_REST(doc, "C\xfe", NULL, NULL, NULL);
    bson_destroy(doc);
    ASSERT_TRUE(v != NULL);
    {
        char *s = json_dumps(v, JSON_COMPACT); /* must serialize: all strings valid */
        ASSERT_TRUE(s != NULL);
        free(s);
    }
    JSON_IS(v,
            "{\"objectId\":\"i\\ufffd\",\"className\":\"C\\ufffd\","
            "\"s\":\"a\\ufffd\\ufffd(b\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\\ufffd\","
            "\"nul\":\"a\\u0000b\",\"k\\ufffd\":1,"
            "\"ptr\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u\\ufffd\"},"
            "\"ACL\":{\"ok\":{\"read\":true},\"*\":{\"write\":true}}}");
}

/* Mutated and truncated BSON never crashes (ASan/UBSan builds check memory). */
static void test_mutations(void)
{
    lq_parsedoc_opts o = {"http://f/", 0};
    const char *srcs[] = {signing_doc, everything_doc};
    const lq_class_schema *cls[] = {lq_schema_class(g_schema, "SigningSchedule"),
                                    lq_schema_class(g_schema, "Everything")};
    uint32_t seed = 12345;
    int converted = 0;

    for (size_t d = 0; d < 2; d++) {
        bson_t *doc = B(srcs[d]);
        const uint8_t *data = bson_get_data(doc);
        uint32_t len = doc->len;
        uint8_t *copy = lq_xmalloc(len);
        ASSERT_TRUE(doc != NULL);
        for (int round = 0; round < 8000; round++) {
            bson_t view;
            json_t *v;
            int flips = 1 + round % 4;
            memcpy(copy, data, len);
            for (int f = 0; f < flips; f++) {
                seed = seed * 1103515245u + 12345u;
                uint32_t pos = 4 + (seed >> 8) % (len - 5); /* keep the outer length */
                seed = seed * 1103515245u + 12345u;
                copy[pos] = (uint8_t)(seed >> 16);
            }
            if (!bson_init_static(&view, copy, len))
                continue;
            v = TO_REST(&view, "C", cls[round % 3 == 0 ? d : 0], &o, NULL);
            if (v) {
                char *s = json_dumps(v, JSON_COMPACT);
                ASSERT_TRUE(s != NULL);
                free(s);
                converted++;
                json_decref(v);
            }
        }
        /* truncations with a patched length */
        for (uint32_t n = 5; n < len; n++) {
            bson_t view;
            memcpy(copy, data, n);
            memcpy(copy, &n, 4);
            copy[n - 1] = 0;
            if (bson_init_static(&view, copy, n))
                json_decref(TO_REST(&view, "C", cls[d], &o, NULL));
        }
        free(copy);
        bson_destroy(doc);
    }
    ASSERT_TRUE(converted > 1000);
}


/* ---- lq_parsedoc_write_rest ------------------------------------------------ */

/* The writer's result for doc_json as a string (caller frees); *allocs gets
 * the jansson allocations it made (0: its own path, no fallback). */
static char *write_o(const char *doc_json, const char *cls_name, int with_schema,
                     const lq_parsedoc_opts *o, long *allocs)
{
    bson_t *doc = B(doc_json);
    const lq_class_schema *cls = with_schema ? lq_schema_class(g_schema, cls_name) : NULL;
    lq_buf b;
    long before = g_jansson_allocs;
    json_t *v;

    lq_buf_init(&b);
    if (doc == NULL || lq_parsedoc_write_rest(&b, doc, cls_name, cls, o, NULL) != LQ_OK)
        lq_buf_puts(&b, "(failed)");
    *allocs = g_jansson_allocs - before;
    if (doc) { /* and the contract, with and without master_only */
        v = TO_REST(doc, cls_name, cls, o, NULL);
        json_decref(v);
    }
    bson_destroy(doc);
    return b.data;
}

static int write_is_(const char *file, int line, const char *doc_json, const char *cls_name,
                     int with_schema, const lq_parsedoc_opts *o, int fallback, const char *want)
{
    long allocs = 0;
    char *got = write_o(doc_json, cls_name, with_schema, o, &allocs);
    int ok = got && strcmp(got, want) == 0 && (fallback ? allocs > 0 : allocs == 0);

    if (!ok)
        fprintf(stderr,
                "%s:%d: write_rest\n  got:  %s (%ld jansson allocations)\n  want: %s (%s)\n",
                file, line, got ? got : "(null)", allocs, want,
                fallback ? "through to_rest" : "direct");
    free(got);
    return ok;
}
/* fallback: 1 when the document must take the to_rest path (duplicate keys). */
#define WRITE_IS(doc, cls, sch, o, fallback, want)                                                \
    ASSERT_TRUE(write_is_(__FILE__, __LINE__, (doc), (cls), (sch), (o), (fallback), (want)))

static void test_write_direct(void)
{
    lq_parsedoc_opts o = {"https://files.example.com/files/bookstore/", 0};
    static const char bsl[] =
        "{\"_id\":\"HZKPL5sv3j\",\"quantityReserved\":{\"$numberLong\":\"3\"},"
        "\"restockThreshold\":{\"$numberDouble\":\"2.5\"},\"_rperm\":[\"*\"],"
        "\"_wperm\":[\"role:Staff\"],\"_created_at\":{\"$date\":\"2026-11-23T23:29:42.277Z\"}}";
    long allocs = 0;
    char *t;

    /* the tailer's documents are written without jansson */
    WRITE_IS(signing_doc, "SigningSchedule", 1, &o, 0,
             "{\"objectId\":\"Xk3pL9qR2a\",\"className\":\"SigningSchedule\","
             "\"createdAt\":\"2026-11-20T15:04:05.123Z\","
             "\"updatedAt\":\"2026-11-23T23:29:42.277Z\","
             "\"bookTitle\":\"The Quiet Shelf\",\"authorName\":\"Mara Ellison\","
             "\"eventDate\":{\"__type\":\"Date\",\"iso\":\"2026-12-05T18:30:00.000Z\"},"
             "\"location\":\"Main Street Books, Reading Room\","
             "\"publisherContact\":{\"__type\":\"Pointer\",\"className\":\"PublisherContact\","
             "\"objectId\":\"Pc7Hq2Lm9Z\"},\"status\":\"confirmed\","
             "\"staffLead\":{\"__type\":\"Pointer\",\"className\":\"_User\","
             "\"objectId\":\"u8FhR2kL1m\"},\"attendeeCount\":42,"
             "\"poster\":{\"__type\":\"File\",\"name\":\"b7e1_quiet shelf.png\","
             "\"url\":\"https://files.example.com/files/bookstore/b7e1_quiet%20shelf.png\"},"
             "\"attendees\":{\"__type\":\"Relation\",\"className\":\"_User\"},"
             "\"ACL\":{\"*\":{\"read\":true},\"role:Staff\":{\"read\":true,\"write\":true},"
             "\"u8FhR2kL1m\":{\"write\":true}}}");
    WRITE_IS(bsl, "BookStockLog", 1, NULL, 0,
             "{\"objectId\":\"HZKPL5sv3j\",\"className\":\"BookStockLog\",\"quantityReserved\":3,"
             "\"restockThreshold\":2.5,\"createdAt\":\"2026-11-23T23:29:42.277Z\","
             "\"ACL\":{\"*\":{\"read\":true},\"role:Staff\":{\"write\":true}}}");
    t = write_o(signing_doc, "SigningSchedule", 0, NULL, &allocs);
    ASSERT_EQ(allocs, 0);
    free(t);
    t = write_o(everything_doc, "Everything", 1, &o, &allocs);
    ASSERT_EQ(allocs, 0);
    free(t);
    t = write_o(everything_doc, "Everything", 0, &o, &allocs);
    ASSERT_EQ(allocs, 0);
    free(t);
    /* numbers: int64 beyond 2^53 exact, doubles shortest, -0 and non-finite */
    WRITE_IS("{\"_id\":\"n\",\"a\":{\"$numberLong\":\"-9223372036854775808\"},"
             "\"b\":{\"$numberLong\":\"9007199254740993\"},\"c\":0.1,\"d\":1e300,\"e\":-0.0,"
             "\"f\":{\"$numberDouble\":\"NaN\"},\"g\":{\"$numberDouble\":\"-Infinity\"},"
             "\"h\":1.0,\"i\":9007199254740994.0,\"j\":-2.5e-7,"
             "\"t\":{\"$timestamp\":{\"t\":4294967295,\"i\":1}}}",
             "C", 0, NULL, 0,
             "{\"objectId\":\"n\",\"className\":\"C\",\"a\":-9223372036854775808,"
             "\"b\":9007199254740993,\"c\":0.1,\"d\":1e+300,\"e\":0,\"f\":null,\"g\":null,\"h\":1,"
             "\"i\":9007199254740994,\"j\":-2.5e-07,\"t\":1.8446744069414584e+19}");
    /* strings: escapes, NUL, invalid UTF-8 repaired in values */
    {
        bson_t *doc = bson_new();
        lq_buf b;
        BSON_APPEND_UTF8(doc, "_id", "q\"\\");
        bson_append_utf8(doc, "s", -1, "a\"b\\c\n\t\x01\x1f\x7f\0z\xff\xe2\x82", 15);
        lq_buf_init(&b);
        ASSERT_EQ(lq_parsedoc_write_rest(&b, doc, NULL, NULL, NULL, NULL), LQ_OK);
        ASSERT_STREQ(b.data, "{\"objectId\":\"q\\\"\\\\\",\"s\":\"a\\\"b\\\\c\\n\\t\\u0001\\u001f"
                             "\x7f\\u0000z\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"}");
        lq_buf_release(&b);
        json_decref(TO_REST(doc, NULL, NULL, NULL, NULL));
        bson_destroy(doc);
    }
}

static void test_write_errors(void)
{
    bson_t *doc = B("{\"name\":\"x\",\"_rperm\":[\"*\"]}");
    bson_t *empty = bson_new(), *ok = B("{\"_id\":\"a\"}");
    lq_error err = {0, ""};
    lq_buf b;

    /* an empty buffer stays empty (no allocation) */
    lq_buf_init(&b);
    ASSERT_EQ(lq_parsedoc_write_rest(&b, doc, "C", NULL, NULL, &err), LQ_ERR_INVAL);
    ASSERT_EQ(err.code, LQ_PARSE_ERR_SCHEMA);
    ASSERT_STREQ(err.text, "document has no _id");
    ASSERT_TRUE(b.data == NULL && b.len == 0 && b.cap == 0);
    ASSERT_EQ(lq_parsedoc_write_rest(&b, NULL, "C", NULL, NULL, NULL), LQ_ERR_INVAL);
    ASSERT_EQ(lq_parsedoc_write_rest(NULL, ok, "C", NULL, NULL, &err), LQ_ERR_INVAL);
    /* a buffer with text keeps it */
    lq_buf_puts(&b, "{\"before\":1}");
    ASSERT_EQ(lq_parsedoc_write_rest(&b, empty, "C", NULL, NULL, NULL), LQ_ERR_INVAL);
    ASSERT_EQ(b.len, 12);
    ASSERT_STREQ(b.data, "{\"before\":1}");
    /* appending works after it */
    ASSERT_EQ(lq_parsedoc_write_rest(&b, ok, "C", NULL, NULL, NULL), LQ_OK);
    ASSERT_STREQ(b.data, "{\"before\":1}{\"objectId\":\"a\",\"className\":\"C\"}");
    lq_buf_release(&b);
    json_decref(TO_REST(doc, "C", NULL, NULL, NULL));
    json_decref(TO_REST(empty, "C", NULL, NULL, NULL));
    bson_destroy(doc);
    bson_destroy(empty);
    bson_destroy(ok);
}

static void test_write_master_only(void)
{
    lq_parsedoc_opts mo = {NULL, 1};

    /* stored ACL or not, public or not: {} */
    WRITE_IS("{\"_id\":\"s1\",\"_p_user\":\"_User$u1\",\"_rperm\":[\"*\"],\"_wperm\":[\"*\"],"
             "\"installationId\":\"i1\"}",
             "_Session", 1, &mo, 0,
             "{\"objectId\":\"s1\",\"className\":\"_Session\",\"user\":{\"__type\":\"Pointer\","
             "\"className\":\"_User\",\"objectId\":\"u1\"},\"installationId\":\"i1\",\"ACL\":{}}");
    WRITE_IS("{\"_id\":\"s1\"}", "_Session", 1, &mo, 0,
             "{\"objectId\":\"s1\",\"className\":\"_Session\",\"ACL\":{}}");
    WRITE_IS("{\"_id\":\"r\",\"_wperm\":[]}", "_Role", 1, &mo, 0,
             "{\"objectId\":\"r\",\"className\":\"_Role\","
             "\"users\":{\"__type\":\"Relation\",\"className\":\"_User\"},"
             "\"roles\":{\"__type\":\"Relation\",\"className\":\"_Role\"},\"ACL\":{}}");
    TEXT_IS(rest_o("{\"_id\":\"s1\",\"_rperm\":[\"u1\"]}", "_Session", 1, &mo),
            "{\"objectId\":\"s1\",\"className\":\"_Session\",\"ACL\":{}}");
    TEXT_IS(rest_o("{\"_id\":\"s1\"}", "_Session", 0, &mo),
            "{\"objectId\":\"s1\",\"className\":\"_Session\",\"ACL\":{}}");
}

static void test_write_duplicates(void)
{
    lq_parsedoc_opts o = {"http://f/", 0};

    /* a repeated field: the last value, in the first one's place */
    WRITE_IS("{\"_id\":\"a\",\"x\":1,\"y\":2,\"x\":3}", "C", 0, NULL, 1,
             "{\"objectId\":\"a\",\"className\":\"C\",\"x\":3,\"y\":2}");
    /* nested, at any depth */
    WRITE_IS("{\"_id\":\"a\",\"o\":{\"a\":1,\"b\":[{\"c\":1,\"c\":{\"d\":2}}],\"a\":2}}", "C", 0,
             NULL, 1,
             "{\"objectId\":\"a\",\"className\":\"C\",\"o\":{\"a\":2,\"b\":[{\"c\":{\"d\":2}}]}}");
    /* _created_at after a legacy createdAt replaces it in place */
    WRITE_IS("{\"_id\":\"a\",\"createdAt\":{\"$date\":\"2015-01-01T00:00:00.000Z\"},\"x\":1,"
             "\"_created_at\":{\"$date\":\"2016-01-01T00:00:00.000Z\"}}",
             "C", 0, NULL, 1,
             "{\"objectId\":\"a\",\"className\":\"C\",\"createdAt\":\"2016-01-01T00:00:00.000Z\","
             "\"x\":1}");
    /* ... but after it is simply ignored (no duplicate) */
    WRITE_IS("{\"_id\":\"a\",\"_created_at\":{\"$date\":\"2016-01-01T00:00:00.000Z\"},"
             "\"createdAt\":{\"$date\":\"2015-01-01T00:00:00.000Z\"},\"x\":1}",
             "C", 0, NULL, 0,
             "{\"objectId\":\"a\",\"className\":\"C\",\"createdAt\":\"2016-01-01T00:00:00.000Z\","
             "\"x\":1}");
    /* a pointer and a field of one name; _p_objectId replaces the objectId (as to_rest) */
    WRITE_IS("{\"_id\":\"a\",\"owner\":\"x\",\"_p_owner\":\"_User$u1\"}", "C", 0, NULL, 1,
             "{\"objectId\":\"a\",\"className\":\"C\",\"owner\":{\"__type\":\"Pointer\","
             "\"className\":\"_User\",\"objectId\":\"u1\"}}");
    WRITE_IS("{\"_id\":\"a\",\"_p_objectId\":\"A$b\"}", "C", 0, NULL, 1,
             "{\"objectId\":{\"__type\":\"Pointer\",\"className\":\"A\",\"objectId\":\"b\"},"
             "\"className\":\"C\"}");
    /* _p_ACL then the computed ACL (or master_only's) */
    WRITE_IS("{\"_id\":\"a\",\"_p_ACL\":\"A$b\",\"x\":1,\"_rperm\":[\"u\"]}", "C", 0, NULL, 1,
             "{\"objectId\":\"a\",\"className\":\"C\",\"ACL\":{\"u\":{\"read\":true},"
             "\"*\":{\"write\":true}},\"x\":1}");
    /* a stored value under a relation's name (the synthesized value wins, in place) */
    WRITE_IS("{\"_id\":\"r\",\"users\":[\"u1\"],\"name\":\"Admin\"}", "_Role", 1, NULL, 1,
             "{\"objectId\":\"r\",\"className\":\"_Role\","
             "\"users\":{\"__type\":\"Relation\",\"className\":\"_User\"},\"name\":\"Admin\","
             "\"roles\":{\"__type\":\"Relation\",\"className\":\"_Role\"}}");
    /* _expiresAt and expiresAt */
    WRITE_IS("{\"_id\":\"s\",\"expiresAt\":1,"
             "\"_expiresAt\":{\"$date\":\"2027-01-01T00:00:00.000Z\"}}",
             "C", 0, NULL, 1,
             "{\"objectId\":\"s\",\"className\":\"C\",\"expiresAt\":{\"__type\":\"Date\","
             "\"iso\":\"2027-01-01T00:00:00.000Z\"}}");
    /* two iso keys in a dot-notation Date */
    WRITE_IS("{\"_id\":\"a\",\"d\":{\"iso\":{\"$date\":\"2020-01-01T00:00:00.000Z\"},"
             "\"__type\":\"Other\",\"iso\":\"x\"}}",
             "C", 0, NULL, 1,
             "{\"objectId\":\"a\",\"className\":\"C\",\"d\":{\"iso\":\"x\",\"__type\":\"Other\"}}");
    /* a REST File with two names: the url is the last one's */
    WRITE_IS("{\"_id\":\"a\",\"f\":{\"__type\":\"File\",\"name\":\"a\",\"name\":\"b c\"}}", "C", 0,
             &o, 1,
             "{\"objectId\":\"a\",\"className\":\"C\",\"f\":{\"__type\":\"File\",\"name\":\"b c\","
             "\"url\":\"http://f/b%20c\"}}");
    /* keys that only collide once repaired */
    {
        bson_t *doc = bson_new();
        bson_t sub;
        BSON_APPEND_UTF8(doc, "_id", "a");
        BSON_APPEND_INT32(doc, "k\xff", 1);
        BSON_APPEND_INT32(doc, "k\xef\xbf\xbd", 2);
        BSON_APPEND_DOCUMENT_BEGIN(doc, "o", &sub);
        BSON_APPEND_INT32(&sub, "\xfe", 1);
        BSON_APPEND_INT32(&sub, "\xff", 2);
        bson_append_document_end(doc, &sub);
        JSON_IS(TO_REST(doc, "C", NULL, NULL, NULL),
                "{\"objectId\":\"a\",\"className\":\"C\",\"k\\ufffd\":2,\"o\":{\"\\ufffd\":2}}");
        bson_destroy(doc);
    }
}

/* Objects with many keys (the sort check, the key stack on the heap), big ACLs. */
static void test_write_large(void)
{
    char key[32];
    long allocs;

    for (int dup = 0; dup < 2; dup++) {
        bson_t *doc = bson_new(), sub, arr;
        lq_buf b;
        BSON_APPEND_UTF8(doc, "_id", "big");
        for (int i = 0; i < 300; i++) {
            snprintf(key, sizeof(key), "f%d", i);
            BSON_APPEND_INT32(doc, key, i);
        }
        BSON_APPEND_DOCUMENT_BEGIN(doc, "map", &sub);
        for (int i = 0; i < 200; i++) {
            snprintf(key, sizeof(key), "u%d", i);
            BSON_APPEND_UTF8(&sub, key, key);
        }
        if (dup)
            BSON_APPEND_UTF8(&sub, "u17", "again");
        bson_append_document_end(doc, &sub);
        BSON_APPEND_ARRAY_BEGIN(doc, "_rperm", &arr);
        for (int i = 0; i < 100; i++) {
            snprintf(key, sizeof(key), "%d", i);
            BSON_APPEND_UTF8(&arr, key, i % 3 ? "role:x" : key); /* repeats too */
        }
        bson_append_array_end(doc, &arr);
        json_decref(TO_REST(doc, "C", NULL, NULL, NULL));
        lq_buf_init(&b);
        allocs = g_jansson_allocs;
        ASSERT_EQ(lq_parsedoc_write_rest(&b, doc, "C", NULL, NULL, NULL), LQ_OK);
        allocs = g_jansson_allocs - allocs;
        lq_buf_release(&b);
        bson_destroy(doc);
        /* the ACL (35 entries) goes through jansson (~150 allocations); the dup
         * through to_rest (one per value at least) */
        ASSERT_TRUE(dup ? allocs > 1000 : (allocs > 0 && allocs < 400));
    }
    /* 32 ACL entries still direct */
    {
        bson_t *doc = bson_new(), arr;
        lq_buf b;
        BSON_APPEND_UTF8(doc, "_id", "acl");
        BSON_APPEND_ARRAY_BEGIN(doc, "_wperm", &arr);
        for (int i = 0; i < 31; i++) {
            snprintf(key, sizeof(key), "%d", i);
            BSON_APPEND_UTF8(&arr, key, key);
        }
        bson_append_array_end(doc, &arr);
        json_decref(TO_REST(doc, "C", NULL, NULL, NULL));
        lq_buf_init(&b);
        allocs = g_jansson_allocs;
        ASSERT_EQ(lq_parsedoc_write_rest(&b, doc, "C", NULL, NULL, NULL), LQ_OK);
        allocs = g_jansson_allocs - allocs;
        lq_buf_release(&b);
        bson_destroy(doc);
        ASSERT_EQ(allocs, 0);
    }
}

/* Rarer shapes through both converters: REST Files with odd __type/name
 * types, a prefix that needs escaping and repair, typed fields of odd values. */
static void test_write_odd_shapes(void)
{
    lq_parsedoc_opts o = {"http://f/\"q\"\xff/", 0};
    const lq_class_schema *ev = lq_schema_class(g_schema, "Everything");
    bson_t *doc = bson_new(), sub;

    BSON_APPEND_UTF8(doc, "_id", "a");
    BSON_APPEND_UTF8(doc, "f", "n\xffm e"); /* file-typed, name not UTF-8 */
    BSON_APPEND_DOCUMENT_BEGIN(doc, "sym", &sub);
    BSON_APPEND_SYMBOL(&sub, "__type", "File");
    BSON_APPEND_CODE(&sub, "name", "x/y");
    bson_append_document_end(doc, &sub);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "oid", &sub);
    BSON_APPEND_CODE(&sub, "__type", "File");
    {
        bson_oid_t oid;
        bson_oid_init_from_string(&oid, "5f1d7a4e2b3c4d5e6f708192");
        BSON_APPEND_OID(&sub, "name", &oid);
    }
    bson_append_document_end(doc, &sub);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "badname", &sub);
    BSON_APPEND_UTF8(&sub, "name", "\xfe!");
    BSON_APPEND_UTF8(&sub, "__type", "File");
    bson_append_document_end(doc, &sub);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "nulurl", &sub);
    BSON_APPEND_UTF8(&sub, "__type", "File");
    BSON_APPEND_UTF8(&sub, "name", "n");
    BSON_APPEND_NULL(&sub, "url");
    bson_append_document_end(doc, &sub);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "numname", &sub);
    BSON_APPEND_UTF8(&sub, "__type", "File");
    BSON_APPEND_INT32(&sub, "name", 5);
    bson_append_document_end(doc, &sub);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "nultype", &sub);
    bson_append_utf8(&sub, "__type", -1, "File\0x", 6);
    BSON_APPEND_UTF8(&sub, "name", "n");
    bson_append_document_end(doc, &sub);
    BSON_APPEND_DOCUMENT_BEGIN(doc, "poly", &sub); /* polygon of odd numbers */
    {
        bson_t c, ring, pt;
        BSON_APPEND_UTF8(&sub, "type", "Polygon");
        BSON_APPEND_ARRAY_BEGIN(&sub, "coordinates", &c);
        BSON_APPEND_ARRAY_BEGIN(&c, "0", &ring);
        BSON_APPEND_ARRAY_BEGIN(&ring, "0", &pt);
        BSON_APPEND_INT64(&pt, "0", INT64_MAX);
        BSON_APPEND_DOUBLE(&pt, "1", NAN);
        bson_append_array_end(&ring, &pt);
        BSON_APPEND_ARRAY_BEGIN(&ring, "1", &pt);
        BSON_APPEND_DOUBLE(&pt, "0", -0.0);
        BSON_APPEND_DOUBLE(&pt, "1", 1e-320);
        bson_append_array_end(&ring, &pt);
        bson_append_array_end(&c, &ring);
        bson_append_array_end(&sub, &c);
    }
    bson_append_document_end(doc, &sub);
    BSON_APPEND_UTF8(doc, "y", "");  /* bytes-typed: empty is not base64 */
    BSON_APPEND_ARRAY_BEGIN(doc, "g", &sub); /* geopoint of int64 */
    BSON_APPEND_INT64(&sub, "0", -5);
    BSON_APPEND_DOUBLE(&sub, "1", INFINITY);
    bson_append_array_end(doc, &sub);

    JSON_IS(TO_REST(doc, "Everything", ev, &o, NULL),
            "{\"objectId\":\"a\",\"className\":\"Everything\","
            "\"f\":{\"__type\":\"File\",\"name\":\"n\\ufffdm e\","
            "\"url\":\"http://f/\\\"q\\\"\\ufffd/n%EF%BF%BDm%20e\"},"
            "\"sym\":{\"__type\":\"File\",\"name\":\"x/y\","
            "\"url\":\"http://f/\\\"q\\\"\\ufffd/x%2Fy\"},"
            "\"oid\":{\"__type\":\"File\",\"name\":\"5f1d7a4e2b3c4d5e6f708192\","
            "\"url\":\"http://f/\\\"q\\\"\\ufffd/5f1d7a4e2b3c4d5e6f708192\"},"
            "\"badname\":{\"name\":\"\\ufffd!\",\"__type\":\"File\","
            "\"url\":\"http://f/\\\"q\\\"\\ufffd/%EF%BF%BD!\"},"
            "\"nulurl\":{\"__type\":\"File\",\"name\":\"n\",\"url\":null},"
            "\"numname\":{\"__type\":\"File\",\"name\":5},"
            "\"nultype\":{\"__type\":\"File\\u0000x\",\"name\":\"n\"},"
            "\"poly\":{\"__type\":\"Polygon\",\"coordinates\":[[null,9223372036854775807],"
            "[1e-320,-0.0]]},"
            "\"y\":\"\",\"g\":{\"__type\":\"GeoPoint\",\"latitude\":null,\"longitude\":-5},"
            "\"rel\":{\"__type\":\"Relation\",\"className\":\"Tag\"}}");
    bson_destroy(doc);
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {
        {"iso", test_iso},
        {"schema_types", test_schema_types},
        {"schema_clp", test_schema_clp},
        {"schema_many_fields", test_schema_many_fields},
        {"signing_schedule", test_signing_schedule},
        {"book_stock_log", test_book_stock_log},
        {"types_with_schema", test_types_with_schema},
        {"types_without_schema", test_types_without_schema},
        {"typed_fallbacks", test_typed_fallbacks},
        {"files", test_files},
        {"pointers", test_pointers},
        {"acl", test_acl},
        {"internal_keys", test_internal_keys},
        {"timestamps", test_timestamps},
        {"nested_dates", test_nested_dates},
        {"binary", test_binary},
        {"odd_types", test_odd_types},
        {"object_ids", test_object_ids},
        {"no_id", test_no_id},
        {"relations", test_relations},
        {"deep_nesting", test_deep_nesting},
        {"bad_utf8", test_bad_utf8},
        {"mutations", test_mutations},
        {"write_direct", test_write_direct},
        {"write_errors", test_write_errors},
        {"write_master_only", test_write_master_only},
        {"write_duplicates", test_write_duplicates},
        {"write_large", test_write_large},
        {"write_odd_shapes", test_write_odd_shapes},
        {NULL, NULL},
    };
    int rc;

    json_set_alloc_funcs(counting_malloc, free);
    g_schema = lq_schema_new();
    for (const char *const *d = schema_docs; *d; d++) {
        bson_t *doc = B(*d);
        lq_error err = {0, ""};
        if (doc == NULL || lq_schema_add(g_schema, doc, &err) != LQ_OK) {
            fprintf(stderr, "cannot build the test schema: %s\n", err.text);
            return 1;
        }
        bson_destroy(doc);
    }
    rc = lq_test_run(cases, argc, argv);
    printf("write_rest contract checked on %d inputs (%d written without jansson)\n",
           g_contract_runs, g_contract_direct);
    lq_schema_unref(g_schema);
    return rc;
}
