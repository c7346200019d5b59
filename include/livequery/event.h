/*
 * event.h - change events as they enter a gateway, the five LiveQuery event
 * types, and the per-subscriber rules that turn one into the other
 * (reference §2): classification from (original, current) visibility, the
 * `watch` filter, the first part of ACL evaluation, and the shared frame body.
 *
 * Thread: lq_change is built on the bus thread and handed over whole to the
 * lws service thread; lq_body is only touched by the service thread.
 */
#ifndef LIVEQUERY_EVENT_H
#define LIVEQUERY_EVENT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef enum lq_change_op {
    LQ_CHANGE_CREATE,
    LQ_CHANGE_UPDATE,
    LQ_CHANGE_DELETE,
    LQ_CHANGE_RESYNC, /* history of the class was lost: its subscribers must resubscribe (no object) */
    LQ_CHANGE_SCHEMA, /* the class's CLP is now clp (NULL: the class has none); no object */
    LQ_CHANGE_CLEAR_CACHE, /* Parse Server's <appId>clearCache: object = {"userId":…} or NULL; class_name "" */
    LQ_CHANGE_POSITION, /* the answer to lq_bus_position: token, status, epoch/seq, replay */
} lq_change_op;

#define LQ_CLASS_NAME_MAX 128

/* One change of one object, from our bus channel or Parse Server's. */
typedef struct lq_change {
    struct lq_change *next;               /* hand-off queue link */
    char class_name[LQ_CLASS_NAME_MAX + 1];
    lq_change_op op;
    json_t *object;   /* owned: REST JSON after the change (the deleted object for delete); NULL for resync */
    json_t *original; /* owned: REST JSON before the change, or NULL */
    json_t *clp;      /* owned: the class's CLP carried with the change (Parse Server's
                         classLevelPermissions; LQ_CHANGE_SCHEMA), or NULL */
    int has_clp;      /* 1 when the message carried a CLP (clp NULL then means "none") */
    int64_t seq;      /* 0 when the publisher gave none */
    char epoch[40];   /* "" when the publisher gave none */
    int64_t ts_ms;    /* publish time, 0 when unknown */
    uint64_t ct;      /* MongoDB cluster time of the change, (t << 32) | i; 0 when the
                         publisher gave none (Parse Server's channels) */
    /* LQ_CHANGE_POSITION only */
    uint64_t token;   /* the requester's handle */
    int status;       /* lq_position_status */
    struct lq_change *replay; /* owned: the events after the asked position, oldest first */
} lq_change;

typedef enum lq_position_status {
    LQ_POSITION_OK = 0,      /* epoch/seq: the class's position; replay: what followed `since` */
    LQ_POSITION_GONE,        /* the events after `since` are no longer all in the history */
    LQ_POSITION_UNAVAILABLE, /* Redis could not be read; try again */
} lq_position_status;

/* Frees ev and the objects it owns. Accepts NULL. */
void lq_change_free(lq_change *ev);

/* 1 when name is a Parse class name: ^[A-Za-z_][A-Za-z0-9_]*$, at most LQ_CLASS_NAME_MAX bytes. */
int lq_class_name_valid(const char *name);

typedef enum lq_event_type {
    LQ_EV_NONE = -1,
    LQ_EV_CREATE = 0,
    LQ_EV_ENTER,
    LQ_EV_UPDATE,
    LQ_EV_LEAVE,
    LQ_EV_DELETE,
} lq_event_type;

/* "create", "enter", "update", "leave", "delete". */
const char *lq_event_name(lq_event_type t);

/* The event a subscriber gets. orig_visible / cur_visible: the state before /
 * after the change matches the query and the subscriber may read it. For
 * delete only cur_visible counts (the deleted object). has_original is 0 when
 * the publisher did not know the previous state of an update: then a visible
 * object is an `update` (enter and leave cannot be told apart). */
lq_event_type lq_event_classify(lq_change_op op, int has_original, int orig_visible,
                                int cur_visible);

/* Whether an event of type t carries `original`. */
int lq_event_has_original(lq_event_type t);

/* The `watch` rule: for create and update, at least one watched field must
 * differ between object and original (a create passes when one is defined).
 * watch is a NULL-terminated list or NULL (no filter). Other types pass. */
int lq_event_watch_passes(lq_event_type t, const char *const *watch, const json_t *object,
                          const json_t *original);

/* ACL, first part: 1 when obj has no ACL or ACL["*"].read is true. */
int lq_acl_public_read(const json_t *obj);

/* A frame body shared by every subscriber of one view of one event:
 * "object":{…}[,"original":{…}]} — the per-subscriber head goes in front. */
typedef struct lq_body {
    int refs;
    size_t len;
    char data[];
} lq_body;

/* Returns a new body (refs 1) holding a copy of data[0..len). */
lq_body *lq_body_new(const char *data, size_t len);
/* Builds the event body for object/original (original NULL: omitted) with the
 * keys projection (NULL-terminated list, or NULL for every field). New reference. */
lq_body *lq_body_event(const json_t *object, const json_t *original, const char *const *keys);
/* As lq_body_event, leaving out the fields in hidden (NULL-terminated, or NULL). */
lq_body *lq_body_event_hiding(const json_t *object, const json_t *original, const char *const *keys,
                              const char *const *hidden);
void lq_body_incref(lq_body *b);
/* Drops a reference; frees at zero. Accepts NULL. */
void lq_body_decref(lq_body *b);

#endif
