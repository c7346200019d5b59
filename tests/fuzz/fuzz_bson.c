/*
 * fuzz_bson - a BSON document from MongoDB, as the tailer converts it: the
 * input is the raw document (bson_init_static checks only its length header
 * and final NUL, so the converter sees malformed elements too).
 *
 *  - as a stored object: lq_parsedoc_to_rest and lq_parsedoc_write_rest,
 *    without a schema, and with the class schema of a fixed `_SCHEMA`
 *    document (typed fields, pointer, relation, date, file, geopoint,
 *    polygon, bytes), with a files url prefix and master-only;
 *  - as a change event (tailer.c handle_event): fullDocument and
 *    fullDocumentBeforeChange converted, the result wrapped in our bus
 *    message and parsed back by lq_bus_parse, the _id resume token written
 *    as text by lq__tailer_token_text and read back;
 *  - as a `_SCHEMA` document: lq_schema_add, its fields and CLP looked up,
 *    and the input converted with its own class schema.
 *
 * Oracles (parsedoc.h, bus.md, tailer.c): write_rest's text is byte for byte
 * lq_buf_json of to_rest's object, and both fail together; the tailer's
 * message is accepted by a gateway (unless an objectId holds U+0000); a
 * {_data} token's text reads back.
 */
#include <bson/bson.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "livequery/bus.h"
#include "livequery/event.h"
#include "livequery/jsonout.h"
#include "livequery/parsedoc.h"
#include "livequery/tailer.h"

static const char schema_json[] =
    "{\"_id\":\"SigningSchedule\",\"objectId\":\"string\",\"createdAt\":\"date\","
    "\"updatedAt\":\"date\",\"title\":\"string\",\"startsAt\":\"date\",\"seats\":\"number\","
    "\"confirmed\":\"boolean\",\"details\":\"object\",\"tags\":\"array\",\"poster\":\"file\","
    "\"venue\":\"geopoint\",\"area\":\"polygon\",\"blob\":\"bytes\",\"author\":\"*Author\","
    "\"owner\":\"*_User\",\"attendees\":\"relation<_User>\",\"legacy\":\"map\",\"odd\":7,"
    "\"_metadata\":{\"class_permissions\":{\"find\":{\"*\":true},\"get\":{\"role:staff\":true},"
    "\"protectedFields\":{\"*\":[\"blob\"]}},\"fields_options\":{\"title\":{\"required\":true}}}}";

static lq_schema *schema;
static const lq_class_schema *cls;

static void init(void)
{
    bson_error_t berr;
    lq_error err;
    if (schema)
        return;
    bson_t *doc = bson_new_from_json((const uint8_t *)schema_json, -1, &berr);
    schema = lq_schema_new();
    if (doc == NULL || lq_schema_add(schema, doc, &err) != LQ_OK)
        abort();
    cls = lq_schema_class(schema, "SigningSchedule");
    if (cls == NULL)
        abort();
    bson_destroy(doc);
}

/* Converts doc both ways and checks they agree. When msg is not NULL and
 * the conversion succeeds, the object is appended to it. Returns 1 when
 * converted. */
static int convert(const bson_t *doc, const char *class_name, const lq_class_schema *c,
                   const lq_parsedoc_opts *opts, lq_buf *msg)
{
    lq_error e1, e2;
    lq_buf text, want;
    json_t *obj = lq_parsedoc_to_rest(doc, class_name, c, opts, &e1);

    lq_buf_init(&text);
    lq_buf_init(&want);
    int rc = lq_parsedoc_write_rest(&text, doc, class_name, c, opts, &e2);
    if ((obj == NULL) != (rc != LQ_OK))
        abort();
    if (obj) {
        lq_buf_json(&want, obj);
        if (want.len != text.len || memcmp(want.data, text.data, text.len) != 0)
            abort();
        if (msg)
            lq_buf_append(msg, text.data, text.len);
    } else if (text.len != 0) {
        abort(); /* out untouched on failure */
    }
    json_decref(obj);
    lq_buf_release(&text);
    lq_buf_release(&want);
    return obj != NULL;
}

/* The subdocument at key of ev into *sub; 0 when absent or not a document. */
static int subdoc(const bson_t *ev, const char *key, bson_t *sub)
{
    bson_iter_t it;
    const uint8_t *p;
    uint32_t len;
    if (!bson_iter_init_find(&it, ev, key) || !BSON_ITER_HOLDS_DOCUMENT(&it))
        return 0;
    bson_iter_document(&it, &len, &p);
    return bson_init_static(sub, p, len);
}

/* 1 when the object or original of the message in m has an objectId holding
 * U+0000 (a MongoDB _id may): gateways refuse those (bus.c name_string). */
static int id_has_nul(const lq_buf *m)
{
    json_t *root = json_loadb(m->data, m->len, JSON_ALLOW_NUL, NULL);
    int nul = 0;
    const char *keys[] = {"object", "original"};
    for (size_t i = 0; i < 2; i++) {
        json_t *id = json_object_get(json_object_get(root, keys[i]), "objectId");
        nul |= json_is_string(id) && strlen(json_string_value(id)) != json_string_length(id);
    }
    json_decref(root);
    return nul;
}

/* handle_event's path for an update: the message a gateway must accept. */
static void as_event(const bson_t *ev)
{
    static const lq_parsedoc_opts opts = {"https://files.example.com/app/", 0};
    bson_t full, before, tok;
    lq_buf msg;
    const char *reason;

    if (subdoc(ev, "_id", &tok)) {
        /* Our own writer (MongoDB's {_data: "<hex>"} tokens) must round-trip.
         * Other tokens go through libbson's extended JSON, which may write
         * text it cannot read back (a corrupt nested document it accepts);
         * class_term treats an unreadable stored token as lost history. */
        bson_error_t berr;
        char *text = lq__tailer_token_text(&tok);
        bson_t *back = bson_new_from_json((const uint8_t *)text, -1, &berr);
        if (strncmp(text, "{\"_data\":\"", 10) == 0 && back == NULL)
            abort();
        if (back)
            bson_destroy(back);
        free(text);
    }
    if (!subdoc(ev, "fullDocument", &full))
        return;
    lq_buf_init(&msg);
    lq_buf_puts(&msg, "{\"v\":1,\"className\":\"SigningSchedule\",\"op\":\"update\",\"object\":");
    if (convert(&full, "SigningSchedule", cls, &opts, &msg)) {
        size_t at = msg.len;
        lq_buf_puts(&msg, ",\"original\":");
        if (!subdoc(ev, "fullDocumentBeforeChange", &before) ||
            !convert(&before, "SigningSchedule", cls, &opts, &msg))
            msg.len = at;
        lq_buf_puts(&msg, ",\"seq\":1,\"epoch\":\"0123456789abcdef\",\"ts\":1795000000000}");
        lq_change *ch = lq_bus_parse(LQ_BUS_OURS, msg.data, msg.len, &reason);
        if (ch == NULL && !id_has_nul(&msg))
            abort();
        lq_change_free(ch);
    }
    lq_buf_release(&msg);
}

/* The input as a `_SCHEMA` document. */
static void as_schema(const bson_t *doc)
{
    lq_error err;
    bson_iter_t it;
    const char *target;
    lq_schema *s = lq_schema_new();

    if (lq_schema_add(s, doc, &err) == LQ_OK && bson_iter_init_find(&it, doc, "_id") &&
        BSON_ITER_HOLDS_UTF8(&it)) {
        const lq_class_schema *c = lq_schema_class(s, bson_iter_utf8(&it, NULL));
        if (c && bson_iter_init(&it, doc)) {
            while (bson_iter_next(&it))
                (void)lq_schema_field(c, bson_iter_key(&it), &target);
            (void)lq_schema_clp(c);
            convert(doc, NULL, c, NULL, NULL);
        }
    }
    lq_schema_unref(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const lq_parsedoc_opts files = {"http://localhost:1337/files/bookstore/", 0};
    static const lq_parsedoc_opts master = {NULL, 1};
    bson_t doc;

    if (size > (1u << 20))
        return 0;
    init();
    if (!bson_init_static(&doc, data, size))
        return 0;
    convert(&doc, "SigningSchedule", NULL, NULL, NULL);
    convert(&doc, "SigningSchedule", cls, &files, NULL);
    convert(&doc, NULL, cls, &master, NULL);
    as_event(&doc);
    as_schema(&doc);
    return 0;
}
