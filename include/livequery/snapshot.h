/*
 * snapshot.h - the query op's read of one class from MongoDB
 * (protocol/PROTOCOL.md "query"): the subscription's current objects, as of
 * a cluster time that lines up with the change events the tailer publishes.
 *
 * The read is a `find` on the class's collection with readConcern
 * "snapshot": MongoDB (5.0+) reads one point in time and names it in the
 * reply (cursor.atClusterTime, T). Every change event with clusterTime <= T
 * is in what was read, every later one is not; the tailer puts each event's
 * clusterTime on the bus ("ct", protocol/bus.md), so the gateway can drop
 * the events the snapshot already has and deliver the others: no gap, no
 * duplicate (registry.h, lq_registry_release).
 *
 * What is pushed down: only `objectId` equality (the where's index hint,
 * query.h) becomes an `_id` filter. Everything else is filtered here, after
 * each document is converted to REST JSON exactly as the tailer converts
 * events (lq_parsedoc_write_rest with the class's `_SCHEMA` entry, then
 * parsed as the bus parses messages), with the subscription's own compiled
 * where; the gateway then applies the per-subscriber rules (registry.h,
 * lq_registry_results). The scan reads at most scan_max documents; when the
 * collection has more, `more` is set (the result says truncated).
 *
 * Thread: made and read on the service thread; lq_snapshot_run runs on an
 * auth lookup thread (lq_auth_submit) in between, with no other access.
 */
#ifndef LIVEQUERY_SNAPSHOT_H
#define LIVEQUERY_SNAPSHOT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "livequery/config.h"
#include "livequery/event.h"
#include "livequery/query.h"

typedef enum lq_snapshot_status {
    LQ_SNAPSHOT_OK = 0,           /* ct and objects are set */
    LQ_SNAPSHOT_UNAVAILABLE,      /* MongoDB could not be read (why) */
    LQ_SNAPSHOT_NO_CLUSTER_TIME,  /* the server answered without atClusterTime (MongoDB < 5.0) */
} lq_snapshot_status;

typedef struct lq_snapshot {
    /* asked */
    uint64_t token;                         /* the requester's handle */
    char class_name[LQ_CLASS_NAME_MAX + 1];
    char *collection;                       /* --collection-prefix + class */
    char *schema_collection;                /* --collection-prefix + _SCHEMA */
    char *where;                            /* the subscription's where, compact JSON */
    lq_query_limits lim;                    /* what it was compiled with at subscribe */
    const char *files_url_prefix;           /* borrowed from the config */
    size_t scan_max;                        /* documents read at most */
    int64_t now_ms;                         /* $relativeTime */
    /* answered */
    lq_snapshot_status status;
    char why[200];                          /* UNAVAILABLE: for logs */
    uint64_t ct;                            /* atClusterTime as (t << 32) | i */
    json_t **objects;                       /* owned: REST JSON of the documents the where matches */
    size_t n, cap;
    size_t scanned;                         /* documents read */
    int more;                               /* the scan stopped at scan_max with documents left */
    int pushed_down;                        /* the read was an _id lookup */
    int64_t took_ms;
} lq_snapshot;

/* A read of class_name's objects matching where (compact JSON, copied; lim:
 * the query limits it was compiled with), for cfg's collections (borrowed;
 * must outlive the snapshot). */
lq_snapshot *lq_snapshot_new(uint64_t token, const char *class_name, const char *where,
                             const lq_query_limits *lim, const lq_config *cfg, size_t scan_max,
                             int64_t now_ms);
/* Frees s and its objects. Accepts NULL. */
void lq_snapshot_free(lq_snapshot *s);
/* As an lq_auth_job_fn (auth.h): frees arg. */
void lq_snapshot_drop(void *arg);

/* The read (an lq_auth_job_fn: arg is the lq_snapshot, client a pooled
 * mongoc_client_t, db the database). Fills in the answer. */
struct _mongoc_client_t;
void lq_snapshot_run(void *arg, struct _mongoc_client_t *client, const char *db);

#endif
