/* test_parsedoc.c - _SCHEMA cache and BSON -> Parse REST JSON (parsedoc.h). */
#include "livequery/parsedoc.h"

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

static json_t *rest_o(const char *doc_json, const char *cls_name, int with_schema,
                      const lq_parsedoc_opts *o)
{
    bson_t *doc = B(doc_json);
    lq_error err = {0, ""};
    json_t *v;

    if (doc == NULL)
        return NULL;
    v = lq_parsedoc_to_rest(doc, cls_name, with_schema ? lq_schema_class(g_schema, cls_name) : NULL,
                            o, &err);
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

    snprintf(buf, sizeof(buf), "{\"v\":%s}", ext);
    doc = B(buf);
    if (doc && bson_iter_init_find(&it, doc, "v"))
        v = lq_parsedoc_value(&it);
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
        json_t *v = lq_parsedoc_to_rest(doc, "C3", lq_schema_class(s, "C3"), NULL, NULL);
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
    lq_parsedoc_opts o = {"https://files.example.com/files/bookstore/"};

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
    lq_parsedoc_opts o = {"https://f.example/app/"};
    lq_parsedoc_opts none = {NULL};

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
            BSON_APPEND_BINARY(doc, "v", subtypes[s], (const uint8_t *)cases[i].raw,
                               (uint32_t)cases[i].n);
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
        BSON_APPEND_BINARY(doc, "v", BSON_SUBTYPE_BINARY, big, sizeof(big));
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

    ASSERT_TRUE(lq_parsedoc_to_rest(doc, "C", NULL, NULL, &err) == NULL);
    ASSERT_EQ(err.code, LQ_PARSE_ERR_SCHEMA);
    ASSERT_STREQ(err.text, "document has no _id");
    ASSERT_TRUE(lq_parsedoc_to_rest(doc, "C", NULL, NULL, NULL) == NULL);
    bson_destroy(doc);
    err.code = 0;
    ASSERT_TRUE(lq_parsedoc_to_rest(NULL, "C", NULL, NULL, &err) == NULL);
    ASSERT_EQ(err.code, LQ_PARSE_ERR_SCHEMA);
    /* the empty document */
    doc = bson_new();
    ASSERT_TRUE(lq_parsedoc_to_rest(doc, "C", NULL, NULL, NULL) == NULL);
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
            json_t *v = lq_parsedoc_to_rest(doc, "C", NULL, NULL, NULL);
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
    v = lq_parsedoc_to_rest(doc, "C\xfe", NULL, NULL, NULL);
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
    lq_parsedoc_opts o = {"http://f/"};
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
            v = lq_parsedoc_to_rest(&view, "C", cls[round % 3 == 0 ? d : 0], &o, NULL);
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
                json_decref(lq_parsedoc_to_rest(&view, "C", cls[d], &o, NULL));
        }
        free(copy);
        bson_destroy(doc);
    }
    ASSERT_TRUE(converted > 1000);
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
        {NULL, NULL},
    };
    int rc;

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
    lq_schema_unref(g_schema);
    return rc;
}
