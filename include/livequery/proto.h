/*
 * proto.h - Parse LiveQuery client frames: bytes -> validated request, and the
 * encoders for the server's reply frames. No I/O, no connection state.
 *
 * Validation reproduces Parse Server's tv4 schema checks message for message
 * (reference §1): the general schema first, then the op's schema, visiting an
 * object's required properties in schema order and its present properties in
 * document order, first error wins.
 *
 * Thread: pure; any thread.
 */
#ifndef LIVEQUERY_PROTO_H
#define LIVEQUERY_PROTO_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "livequery/error.h"
#include "livequery/jsonout.h"

#define LQ_INSTALLATION_ID_MAX 256 /* bytes; it is echoed in every frame */

typedef enum lq_op {
    LQ_OP_CONNECT,
    LQ_OP_SUBSCRIBE,
    LQ_OP_UPDATE,
    LQ_OP_UNSUBSCRIBE,
    LQ_OP_QUERY, /* Parse 8's subscription.find(): the current results of a subscription */
} lq_op;

typedef struct lq_request {
    lq_op op;
    json_t *root;             /* owned: the parsed frame; the pointers below borrow from it */
    double request_id;        /* subscribe / update / unsubscribe / query */
    const char *application_id; /* connect */
    const char *master_key;     /* connect; NULL when absent */
    const char *session_token;  /* connect or subscribe; NULL when absent */
    const char *installation_id; /* connect; NULL when absent */
    const char *class_name;     /* subscribe / update */
    const json_t *where;        /* subscribe / update: a JSON object */
    const json_t *keys;         /* subscribe / update: array of unique strings, or NULL */
    const json_t *watch;        /* subscribe / update: array of unique strings, or NULL */
    /* subscribe / update, the resume extension (protocol/PROTOCOL.md) */
    int positions;              /* frames carry each event's epoch and seq */
    int has_since;              /* resume after (since_epoch, since_seq); implies positions */
    char since_epoch[40];
    int64_t since_seq;
} lq_request;

typedef enum lq_parse_result {
    LQ_PARSE_OK = 0,     /* *req is filled; release it with lq_request_release */
    LQ_PARSE_IGNORE = 1, /* not JSON: drop without reply, as Parse does */
    LQ_PARSE_ERROR = 2,  /* *err holds the Parse error to send (requestId null, reconnect true) */
    LQ_PARSE_REFUSED = 3, /* as LQ_PARSE_ERROR, but reconnect false: retrying cannot help */
} lq_parse_result;

/* Parses and validates one client message buf[0..len). max_depth bounds the
 * JSON nesting (checked before any allocation: deeper input is refused with
 * code 1, LQ_PARSE_REFUSED). On LQ_PARSE_OK the caller owns req->root. */
lq_parse_result lq_proto_parse(const char *buf, size_t len, int max_depth, lq_request *req,
                               lq_error *err);

/* Releases what lq_proto_parse stored in req. Accepts NULL. */
void lq_request_release(lq_request *req);

/* Appends the JSON text of a requestId as JavaScript would print it. */
void lq_proto_request_id(lq_buf *b, double request_id);

/* Builds the per-connection fragment "clientId":"…"[,"installationId":"…"]
 * that every server frame carries, into b (reset first). */
void lq_proto_ids(lq_buf *b, const char *client_id, const char *installation_id);

/* Appends {"op":"<op>",<ids>,"requestId":<id>} (connected: no requestId when
 * has_request_id is 0). */
void lq_proto_reply(lq_buf *b, const char *op, const lq_buf *ids, int has_request_id,
                    double request_id);

/* Appends {"op":"error","error":…,"code":…,"reconnect":…,"requestId":…|null}. */
void lq_proto_error(lq_buf *b, const lq_error *err, int reconnect, int has_request_id,
                    double request_id);

/* Appends the head of an event frame, up to and including the comma before
 * the shared body: {"op":"<op>",<ids>,"requestId":<id>, */
void lq_proto_event_head(lq_buf *b, const char *op, const lq_buf *ids, double request_id);

/* The query op's answer (protocol/PROTOCOL.md "query"), in two parts around
 * the objects: lq_proto_result_head appends
 * {"op":"result",<ids>,"requestId":<id>,"results":[ and lq_proto_result_tail
 * appends ] and, when truncated, ,"truncated":true, then the closing brace. */
void lq_proto_result_head(lq_buf *b, const lq_buf *ids, double request_id);
void lq_proto_result_tail(lq_buf *b, int truncated);

#endif
