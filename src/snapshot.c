/* snapshot.c - see snapshot.h. */
#include "livequery/snapshot.h"

#include <bson/bson.h>
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "livequery/clock.h"
#include "livequery/error.h"
#include "livequery/jsonout.h"
#include "livequery/log.h"
#include "livequery/parsedoc.h"
#include "livequery/query.h"


lq_snapshot *lq_snapshot_new(uint64_t token, const char *class_name, const char *where,
                             const lq_query_limits *lim, const lq_config *cfg, size_t scan_max,
                             int64_t now_ms)
{
    lq_snapshot *s = lq_xcalloc(1, sizeof(*s));
    const char *prefix = cfg->collection_prefix ? cfg->collection_prefix : "";

    s->token = token;
    snprintf(s->class_name, sizeof(s->class_name), "%s", class_name);
    s->collection = lq_xconcat(prefix, class_name, "");
    s->schema_collection = lq_xconcat(prefix, "_SCHEMA", "");
    s->where = lq_xstrdup(where);
    s->lim = *lim;
    s->files_url_prefix = cfg->files_url_prefix;
    s->scan_max = scan_max;
    s->now_ms = now_ms;
    return s;
}

void lq_snapshot_free(lq_snapshot *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n; i++)
        json_decref(s->objects[i]);
    free(s->objects);
    free(s->collection);
    free(s->schema_collection);
    free(s->where);
    free(s);
}

void lq_snapshot_drop(void *arg)
{
    lq_snapshot_free(arg);
}

static void fail(lq_snapshot *s, const char *what, const bson_error_t *e)
{
    int n = snprintf(s->why, sizeof(s->why), "%s: ", what);
    s->status = LQ_SNAPSHOT_UNAVAILABLE;
    if (n > 0 && (size_t)n < sizeof(s->why))
        snprintf(s->why + n, sizeof(s->why) - (size_t)n, "%.120s (code %u)", e ? e->message : "-",
                 e ? e->code : 0);
}

/* The class's _SCHEMA entry, as the tailer loads it (NULL: none; types are
 * then inferred, as the tailer does for a class missing from _SCHEMA).
 * 0, or -1 after fail(). */
static int load_schema(lq_snapshot *s, mongoc_client_t *client, const char *db, lq_schema **out)
{
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db, s->schema_collection);
    bson_t filter = BSON_INITIALIZER, opts = BSON_INITIALIZER;
    mongoc_cursor_t *cur;
    const bson_t *doc;
    bson_error_t error;
    int rc = 0;

    *out = NULL;
    BSON_APPEND_UTF8(&filter, "_id", s->class_name);
    BSON_APPEND_INT64(&opts, "limit", 1);
    cur = mongoc_collection_find_with_opts(coll, &filter, &opts, NULL);
    if (mongoc_cursor_next(cur, &doc)) {
        lq_error err;
        lq_schema *schema = lq_schema_new();
        if (lq_schema_add(schema, doc, &err) != LQ_OK)
            LQ_WARN("query: a _SCHEMA document is unreadable; types are inferred", "class=%s reason=\"%s\"",
                    s->class_name, err.text);
        *out = schema;
    }
    if (mongoc_cursor_error(cur, &error)) {
        fail(s, "reading _SCHEMA", &error);
        lq_schema_unref(*out);
        *out = NULL;
        rc = -1;
    }
    mongoc_cursor_destroy(cur);
    mongoc_collection_destroy(coll);
    bson_destroy(&filter);
    bson_destroy(&opts);
    return rc;
}

/* The pushed-down filter: {_id: <objectId>} when the where requires an
 * objectId (both the string and, for 24 hex digits, the ObjectId, as the
 * tailer turns either into that objectId); else {}. */
static void push_down(lq_snapshot *s, const lq_query *q, bson_t *filter)
{
    const char *field, *key;

    if (!lq_query_index_hint(q, &field, &key) || strcmp(field, "objectId") != 0 ||
        strncmp(key, "s:", 2) != 0)
        return;
    const char *id = key + 2;
    s->pushed_down = 1;
    if (bson_oid_is_valid(id, strlen(id)) && strlen(id) == 24) {
        bson_t in, arr;
        bson_oid_t oid;
        bson_oid_init_from_string(&oid, id);
        BSON_APPEND_DOCUMENT_BEGIN(filter, "_id", &in);
        BSON_APPEND_ARRAY_BEGIN(&in, "$in", &arr);
        BSON_APPEND_UTF8(&arr, "0", id);
        BSON_APPEND_OID(&arr, "1", &oid);
        bson_append_array_end(&in, &arr);
        bson_append_document_end(filter, &in);
    } else {
        BSON_APPEND_UTF8(filter, "_id", id);
    }
}

/* One document: converted as the tailer converts events, parsed as the bus
 * parses messages, kept when the where matches. */
static void take(lq_snapshot *s, const bson_t *doc, const lq_class_schema *cls, const lq_query *q,
                 lq_buf *buf)
{
    lq_parsedoc_opts opts = {s->files_url_prefix, 0};
    lq_error err;
    json_error_t jerr;

    /* what the tailer publishes master-only (tailer.c add_class) */
    opts.master_only = s->class_name[0] == '_' && strcmp(s->class_name, "_User") != 0 &&
                       strcmp(s->class_name, "_Role") != 0;
    buf->len = 0;
    if (lq_parsedoc_write_rest(buf, doc, s->class_name, cls, &opts, &err) != LQ_OK) {
        LQ_WARN("query: a document cannot be converted; left out", "class=%s reason=\"%s\"", s->class_name,
                err.text);
        return;
    }
    json_t *obj = json_loadb(buf->data, buf->len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!json_is_object(obj)) {
        json_decref(obj);
        return;
    }
    if (!lq_query_match(q, obj, s->now_ms)) {
        json_decref(obj);
        return;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->objects = lq_xrealloc(s->objects, s->cap * sizeof(json_t *));
    }
    s->objects[s->n++] = obj;
}

/* cursor.atClusterTime of a find reply as (t << 32) | i, or 0. */
static uint64_t at_cluster_time(const bson_t *reply)
{
    bson_iter_t it;
    uint32_t t, i;

    if (!bson_iter_init(&it, reply) || !bson_iter_find_descendant(&it, "cursor.atClusterTime", &it) ||
        !BSON_ITER_HOLDS_TIMESTAMP(&it))
        return 0;
    bson_iter_timestamp(&it, &t, &i);
    return (uint64_t)t << 32 | i;
}

void lq_snapshot_run(void *arg, struct _mongoc_client_t *client, const char *db)
{
    lq_snapshot *s = arg;
    int64_t t0 = lq_wall_ms();
    lq_query *q = NULL;
    lq_schema *schema = NULL;
    mongoc_client_session_t *session = NULL;
    mongoc_server_description_t *sd = NULL;
    mongoc_cursor_t *cur = NULL;
    bson_t cmd = BSON_INITIALIZER, filter = BSON_INITIALIZER, opts = BSON_INITIALIZER, rc_opts,
           reply;
    bson_error_t error;
    json_error_t jerr;
    lq_error err;
    lq_buf buf;
    const bson_t *doc;

    s->status = LQ_SNAPSHOT_UNAVAILABLE; /* until the read is complete */
    lq_buf_init(&buf);
    bson_init(&reply);
    json_t *where = json_loads(s->where, JSON_ALLOW_NUL, &jerr);
    if (where)
        q = lq_query_compile(s->class_name, where, &s->lim, &err);
    json_decref(where);
    if (q == NULL) { /* it compiled at subscribe: only memory gets here */
        fail(s, "compiling the where", NULL);
        goto out;
    }
    if (load_schema(s, client, db, &schema) < 0)
        goto out;
    push_down(s, q, &filter);

    /* one server and one session for the find and its getMores: a snapshot
     * cursor is continued where it was opened */
    sd = mongoc_client_select_server(client, false, NULL, &error);
    if (sd == NULL) {
        fail(s, "selecting a server", &error);
        goto out;
    }
    session = mongoc_client_start_session(client, NULL, &error);
    if (session == NULL) {
        fail(s, "starting a session", &error);
        goto out;
    }
    BSON_APPEND_UTF8(&cmd, "find", s->collection);
    BSON_APPEND_DOCUMENT(&cmd, "filter", &filter);
    BSON_APPEND_INT64(&cmd, "limit", (int64_t)s->scan_max + 1); /* one more: are there more? */
    bson_t rc;
    BSON_APPEND_DOCUMENT_BEGIN(&opts, "readConcern", &rc);
    BSON_APPEND_UTF8(&rc, "level", "snapshot");
    bson_append_document_end(&opts, &rc);
    BSON_APPEND_INT32(&opts, "serverId", (int32_t)mongoc_server_description_id(sd));
    if (!mongoc_client_session_append(session, &opts, &error)) {
        fail(s, "starting a session", &error);
        goto out;
    }
    bson_destroy(&reply);
    if (!mongoc_client_read_command_with_opts(client, db, &cmd, NULL, &opts, &reply, &error)) {
        fail(s, "find", &error);
        goto out;
    }
    s->ct = at_cluster_time(&reply);
    if (s->ct == 0) {
        s->status = LQ_SNAPSHOT_NO_CLUSTER_TIME;
        goto out;
    }
    /* the reply's first batch, then getMores on the same server and session */
    bson_init(&rc_opts);
    BSON_APPEND_INT32(&rc_opts, "serverId", (int32_t)mongoc_server_description_id(sd));
    mongoc_client_session_append(session, &rc_opts, NULL);
    cur = mongoc_cursor_new_from_command_reply_with_opts(client, bson_copy(&reply), &rc_opts);
    bson_destroy(&rc_opts);
    const lq_class_schema *cls = lq_schema_class(schema, s->class_name);
    while (mongoc_cursor_next(cur, &doc)) {
        if (s->scanned == s->scan_max) {
            s->more = 1;
            break;
        }
        s->scanned++;
        take(s, doc, cls, q, &buf);
    }
    if (!s->more && mongoc_cursor_error(cur, &error)) {
        fail(s, "reading the find cursor", &error);
        goto out;
    }
    s->status = LQ_SNAPSHOT_OK;
out:
    if (s->status != LQ_SNAPSHOT_OK) {
        for (size_t i = 0; i < s->n; i++)
            json_decref(s->objects[i]);
        s->n = 0;
    }
    if (cur)
        mongoc_cursor_destroy(cur);
    if (session)
        mongoc_client_session_destroy(session);
    if (sd)
        mongoc_server_description_destroy(sd);
    bson_destroy(&reply);
    bson_destroy(&cmd);
    bson_destroy(&filter);
    bson_destroy(&opts);
    lq_schema_unref(schema);
    lq_query_free(q);
    lq_buf_release(&buf);
    s->took_ms = lq_wall_ms() - t0;
}
