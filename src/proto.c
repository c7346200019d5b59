/*
 * proto.c - client frame parsing and validation, server frame encoding.
 *
 * The schemas below are Parse Server's RequestSchema.js; the walk over them
 * mirrors tv4's order (type, enum, array length, uniqueness, items; for
 * objects: required in schema order, then properties in document order, then
 * additionalProperties) so that every error message is the one Parse sends.
 */
#include "livequery/proto.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "livequery/json.h"
#include "livequery/metrics.h"

typedef enum { P_ANY, P_STRING, P_NUMBER, P_OBJECT, P_OP, P_STRING_SET, P_QUERY } prop_kind;

typedef struct prop {
    const char *name;
    prop_kind kind;
} prop;

typedef struct schema {
    const prop *props;
    const char *const *required;
    int additional; /* additionalProperties allowed */
} schema;

static const prop general_props[] = {{"op", P_OP}, {NULL, P_ANY}};
static const char *const general_req[] = {"op", NULL};
static const schema general_schema = {general_props, general_req, 1};

static const prop connect_props[] = {
    {"op", P_ANY},           {"applicationId", P_STRING}, {"javascriptKey", P_STRING},
    {"masterKey", P_STRING}, {"clientKey", P_STRING},     {"windowsKey", P_STRING},
    {"restAPIKey", P_STRING}, {"sessionToken", P_STRING}, {"installationId", P_STRING},
    {NULL, P_ANY}};
static const char *const connect_req[] = {"op", "applicationId", NULL};
static const schema connect_schema = {connect_props, connect_req, 0};

static const prop query_props[] = {{"className", P_STRING},
                                   {"where", P_OBJECT},
                                   {"keys", P_STRING_SET},
                                   {"watch", P_STRING_SET},
                                   {NULL, P_ANY}};
static const char *const query_req[] = {"where", "className", NULL};
static const schema query_schema = {query_props, query_req, 0};

static const prop subscribe_props[] = {{"op", P_ANY},
                                       {"requestId", P_NUMBER},
                                       {"query", P_QUERY},
                                       {"sessionToken", P_STRING},
                                       {"positions", P_ANY}, /* extension (PROTOCOL.md) */
                                       {"since", P_OBJECT},  /* extension (PROTOCOL.md) */
                                       {NULL, P_ANY}};
static const char *const subscribe_req[] = {"op", "requestId", "query", NULL};
static const schema subscribe_schema = {subscribe_props, subscribe_req, 0};

static const prop unsubscribe_props[] = {{"op", P_ANY}, {"requestId", P_NUMBER}, {NULL, P_ANY}};
static const char *const unsubscribe_req[] = {"op", "requestId", NULL};
static const schema unsubscribe_schema = {unsubscribe_props, unsubscribe_req, 0};

/* unsubscribe's schema also serves query: {op, requestId}, nothing else */
static const char *const op_names[] = {"connect", "subscribe", "update", "unsubscribe", "query"};

/* JavaScript's view of a value's type, as tv4 names it. */
static const char *js_type(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER:
    case JSON_REAL: return "number";
    case JSON_TRUE:
    case JSON_FALSE: return "boolean";
    default: return "null";
    }
}

static int expect_type(const json_t *v, const char *want, lq_error *err)
{
    const char *have = js_type(v);
    if (strcmp(have, want) == 0)
        return 0;
    lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "Invalid type: %s (expected %s)", have, want);
    return -1;
}

static int validate_object(const json_t *obj, const schema *s, lq_error *err);

static int validate_prop(const json_t *v, prop_kind kind, lq_error *err)
{
    switch (kind) {
    case P_ANY:
        return 0;
    case P_STRING:
        return expect_type(v, "string", err);
    case P_NUMBER:
        return expect_type(v, "number", err);
    case P_OBJECT:
        return expect_type(v, "object", err);
    case P_OP: {
        if (expect_type(v, "string", err))
            return -1;
        for (size_t i = 0; i < sizeof(op_names) / sizeof(op_names[0]); i++)
            if (strcmp(json_string_value(v), op_names[i]) == 0)
                return 0;
        lq_buf q;
        lq_buf_init(&q);
        lq_buf_json_string(&q, json_string_value(v), json_string_length(v));
        lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "No enum match for: %s", q.data);
        lq_buf_release(&q);
        return -1;
    }
    case P_STRING_SET: {
        size_t n = json_array_size(v);
        if (expect_type(v, "array", err))
            return -1;
        if (n < 1) {
            lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "Array is too short (%zu), minimum 1", n);
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            for (size_t j = i + 1; j < n; j++)
                if (lq_json_equal(json_array_get(v, i), json_array_get(v, j))) {
                    lq_error_set(err, LQ_PARSE_ERR_SCHEMA,
                                 "Array items are not unique (indices %zu and %zu)", i, j);
                    return -1;
                }
        for (size_t i = 0; i < n; i++)
            if (expect_type(json_array_get(v, i), "string", err))
                return -1;
        return 0;
    }
    case P_QUERY:
        if (expect_type(v, "object", err))
            return -1;
        return validate_object(v, &query_schema, err);
    }
    return 0;
}

static int validate_object(const json_t *obj, const schema *s, lq_error *err)
{
    const char *key;
    json_t *v;

    for (const char *const *r = s->required; *r; r++)
        if (json_object_get(obj, *r) == NULL) {
            lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "Missing required property: %s", *r);
            return -1;
        }
    json_object_foreach((json_t *)obj, key, v) {
        const prop *p;
        for (p = s->props; p->name; p++)
            if (strcmp(p->name, key) == 0)
                break;
        if (p->name) {
            if (validate_prop(v, p->kind, err))
                return -1;
        } else if (!s->additional) {
            lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "Additional properties not allowed");
            return -1;
        }
    }
    return 0;
}

static const char *opt_string(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key)); /* NULL when absent */
}

/* The resume extension: "positions": true asks for each event's position;
 * "since": {"epoch":E,"seq":N} resumes after the position (epoch E, seq N)
 * and implies positions. */
static int parse_position(const json_t *root, lq_request *req, lq_error *err)
{
    const json_t *pos = json_object_get(root, "positions");
    const json_t *since = json_object_get(root, "since");

    if (pos && !json_is_boolean(pos)) {
        lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "positions must be true or false");
        return -1;
    }
    req->positions = json_is_true(pos);
    if (since == NULL)
        return 0;
    const json_t *epoch = json_object_get(since, "epoch");
    const json_t *seq = json_object_get(since, "seq");
    if (json_object_size(since) != 2 || !json_is_string(epoch) || json_string_length(epoch) < 1 ||
        json_string_length(epoch) >= sizeof(req->since_epoch) ||
        strlen(json_string_value(epoch)) != json_string_length(epoch) || !json_is_real(seq) ||
        !(json_real_value(seq) >= 0 && json_real_value(seq) <= 9007199254740991.0) ||
        json_real_value(seq) != floor(json_real_value(seq))) {
        lq_error_set(err, LQ_PARSE_ERR_SCHEMA,
                     "since must be {\"epoch\": a string of 1 to %zu bytes, \"seq\": an integer >= 0}",
                     sizeof(req->since_epoch) - 1);
        return -1;
    }
    memcpy(req->since_epoch, json_string_value(epoch), json_string_length(epoch) + 1);
    req->since_seq = (int64_t)json_real_value(seq); /* numbers are doubles here */
    req->has_since = 1;
    req->positions = 1;
    return 0;
}

lq_parse_result lq_proto_parse(const char *buf, size_t len, int max_depth, lq_request *req,
                               lq_error *err)
{
    json_error_t jerr;
    json_t *root;
    const schema *s;

    memset(req, 0, sizeof(*req));
    if (lq_json_text_depth(buf, len, max_depth) > max_depth) {
        lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "JSON nesting is deeper than %d", max_depth);
        LQ_METRIC_INC(limit_json_depth);
        return LQ_PARSE_REFUSED;
    }
    /* Numbers are doubles, as in JavaScript; duplicate keys are refused rather
     * than resolved (JSON.parse keeps the last), so no two readers of a frame
     * can disagree on what it says. */
    root = json_loadb(buf, len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_DECODE_INT_AS_REAL,
                      &jerr);
    if (root == NULL)
        return LQ_PARSE_IGNORE;

    if (expect_type(root, "object", err) || validate_object(root, &general_schema, err))
        goto fail;
    const char *op = json_string_value(json_object_get(root, "op"));
    if (strcmp(op, "connect") == 0) {
        req->op = LQ_OP_CONNECT;
        s = &connect_schema;
    } else if (strcmp(op, "subscribe") == 0) {
        req->op = LQ_OP_SUBSCRIBE;
        s = &subscribe_schema;
    } else if (strcmp(op, "update") == 0) {
        req->op = LQ_OP_UPDATE;
        s = &subscribe_schema;
    } else if (strcmp(op, "query") == 0) {
        req->op = LQ_OP_QUERY;
        s = &unsubscribe_schema;
    } else {
        req->op = LQ_OP_UNSUBSCRIBE;
        s = &unsubscribe_schema;
    }
    if (validate_object(root, s, err))
        goto fail;

    req->root = root;
    if (req->op == LQ_OP_CONNECT) {
        req->application_id = opt_string(root, "applicationId");
        req->master_key = opt_string(root, "masterKey");
        req->session_token = opt_string(root, "sessionToken");
        req->installation_id = opt_string(root, "installationId");
        /* echoed in every frame the client gets: bound it, or one client
         * could make each of its frames tens of kilobytes */
        if (req->installation_id && strlen(req->installation_id) > LQ_INSTALLATION_ID_MAX) {
            lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "installationId is longer than %d bytes",
                         LQ_INSTALLATION_ID_MAX);
            lq_request_release(req);
            return LQ_PARSE_REFUSED;
        }
        return LQ_PARSE_OK;
    }
    req->request_id = json_real_value(json_object_get(root, "requestId"));
    if (req->op == LQ_OP_UNSUBSCRIBE || req->op == LQ_OP_QUERY)
        return LQ_PARSE_OK;
    const json_t *q = json_object_get(root, "query");
    req->class_name = opt_string(q, "className");
    req->where = json_object_get(q, "where");
    req->keys = json_object_get(q, "keys");
    req->watch = json_object_get(q, "watch");
    req->session_token = opt_string(root, "sessionToken");
    if (parse_position(root, req, err)) {
        lq_request_release(req);
        return LQ_PARSE_ERROR;
    }
    return LQ_PARSE_OK;
fail:
    json_decref(root);
    return LQ_PARSE_ERROR;
}

void lq_request_release(lq_request *req)
{
    if (req == NULL)
        return;
    json_decref(req->root);
    memset(req, 0, sizeof(*req));
}

void lq_proto_request_id(lq_buf *b, double request_id)
{
    lq_buf_json_number(b, request_id);
}

void lq_proto_ids(lq_buf *b, const char *client_id, const char *installation_id)
{
    b->len = 0;
    lq_buf_puts(b, "\"clientId\":");
    lq_buf_json_string(b, client_id, strlen(client_id));
    if (installation_id) {
        lq_buf_puts(b, ",\"installationId\":");
        lq_buf_json_string(b, installation_id, strlen(installation_id));
    }
}

static void head(lq_buf *b, const char *op, const lq_buf *ids)
{
    lq_buf_puts(b, "{\"op\":\"");
    lq_buf_puts(b, op);
    lq_buf_puts(b, "\",");
    lq_buf_append(b, ids->data, ids->len);
}

void lq_proto_reply(lq_buf *b, const char *op, const lq_buf *ids, int has_request_id,
                    double request_id)
{
    head(b, op, ids);
    if (has_request_id) {
        lq_buf_puts(b, ",\"requestId\":");
        lq_proto_request_id(b, request_id);
    }
    lq_buf_putc(b, '}');
}

void lq_proto_error(lq_buf *b, const lq_error *err, int reconnect, int has_request_id,
                    double request_id)
{
    char code[24];

    lq_buf_puts(b, "{\"op\":\"error\",\"error\":");
    lq_buf_json_string(b, err->text, strlen(err->text));
    snprintf(code, sizeof(code), ",\"code\":%d", err->code);
    lq_buf_puts(b, code);
    lq_buf_puts(b, reconnect ? ",\"reconnect\":true,\"requestId\":" : ",\"reconnect\":false,\"requestId\":");
    if (has_request_id)
        lq_proto_request_id(b, request_id);
    else
        lq_buf_puts(b, "null");
    lq_buf_putc(b, '}');
}

void lq_proto_event_head(lq_buf *b, const char *op, const lq_buf *ids, double request_id)
{
    head(b, op, ids);
    lq_buf_puts(b, ",\"requestId\":");
    lq_proto_request_id(b, request_id);
    lq_buf_putc(b, ',');
}

void lq_proto_result_head(lq_buf *b, const lq_buf *ids, double request_id)
{
    head(b, "result", ids);
    lq_buf_puts(b, ",\"requestId\":");
    lq_proto_request_id(b, request_id);
    lq_buf_puts(b, ",\"results\":[");
}

void lq_proto_result_tail(lq_buf *b, int truncated)
{
    lq_buf_puts(b, truncated ? "],\"truncated\":true}" : "]}");
}
