/*
 * auth.h - session tokens and roles, read from MongoDB the way Parse Server
 * stores them (reference/parse-mongo-storage.md §2), cached in the gateway
 * and kept current by change events (DESIGN decision 9).
 *
 * A token resolves through `_Session` (`_session_token`, `_p_user`,
 * `expiresAt`) to a `_User` that must exist; then the user's roles through
 * `_Join:users:_Role` (owningId = role, relatedId = user) and, repeatedly,
 * `_Join:roles:_Role` (owningId = parent, relatedId = child) upwards: members
 * of a child role get the parent's name (cycles cut, rows naming missing
 * `_Role` docs contribute nothing). A session is VALID only once its user's
 * roles are loaded, so the first decision about a subscriber is already
 * complete.
 *
 * Lookups run on --auth-threads threads with a mongoc_client_pool; the lws
 * service thread never blocks. Results come back through a locked queue; the
 * threads call wake(ud) (lws_cancel_service) and the service thread applies
 * them in lq_auth_poll.
 *
 * Invalidation, all on the service thread:
 *  - lq_auth_on_change with change events of `_Session` (update: new
 *    expiresAt / user re-read; delete: the session is revoked at once),
 *    `_User` (delete: every session of the user is revoked), `_Role` and
 *    `_Join:roles:_Role` (every live user's roles are re-read),
 *    `_Join:users:_Role` (the user named by relatedId, in object or
 *    original, is re-read; when the event names no user, every live user);
 *  - lq_auth_clear_cache (Parse Server's <appId>clearCache): every live
 *    user's roles are re-read (Parse sends it on every `_Role` write, naming
 *    the writer, not the users the write affects);
 *  - expiry: a VALID session past its expiresAt becomes INVALID at the next
 *    lq_auth_poll (the gateway polls at least once a second);
 *  - races: a lookup answered after an event that invalidates what it read
 *    is discarded and re-run (the answer can never resurrect a revoked
 *    session or restore a removed role);
 *  - backstop: sessions in use are re-read every --auth-revalidate seconds.
 * Unused entries (no reference) live --auth-cache-ttl ms; at most
 * --auth-cache-size entries are kept (least recently used go first). Invalid
 * tokens are cached too, so a client repeating a bad token costs one lookup.
 *
 * Without --mongodb-uri every token is INVALID ("no MongoDB configured").
 * When MongoDB cannot be reached a lookup ends UNAVAILABLE (not cached); a
 * session in use stays VALID through an outage.
 *
 * Thread: every function except the worker threads' own is called on the
 * service thread only.
 */
#ifndef LIVEQUERY_AUTH_H
#define LIVEQUERY_AUTH_H

#include <stdint.h>

#include "livequery/acl.h"
#include "livequery/config.h"
#include "livequery/event.h"

typedef struct lq_auth lq_auth;

typedef enum lq_session_state {
    LQ_SESSION_PENDING = 0, /* lookup in flight */
    LQ_SESSION_VALID,       /* who is set */
    LQ_SESSION_INVALID,     /* not found, expired, revoked, user missing: Parse error 209 */
    LQ_SESSION_UNAVAILABLE, /* MongoDB could not be asked: retry later (not cached) */
} lq_session_state;

/* One cached token. Fields are read-only for callers, except `ud`. */
typedef struct lq_session {
    lq_session_state state;
    lq_principals *who;       /* VALID: the user's principals (shared by the user's sessions), else NULL */
    char session_id[64];      /* the _Session objectId once known, else "" */
    int64_t expires_ms;       /* 0: never expires */
    const char *why;          /* INVALID / UNAVAILABLE: a static reason for logs ("not found", "expired",
                                 "revoked", "user missing", "no MongoDB configured", ...) */
    void *ud;                 /* the caller's (gateway: connections waiting on this session) */
} lq_session;

typedef void (*lq_auth_wake_fn)(void *ud);

typedef struct lq_auth_hooks {
    /* s changed state: PENDING -> VALID / INVALID / UNAVAILABLE, VALID -> INVALID
     * (revoked or expired). Called for referenced sessions only. */
    void (*session_changed)(void *ud, lq_session *s);
    /* The roles of a live user changed (p->roles already updated). */
    void (*roles_changed)(void *ud, lq_principals *p);
    /* A job of lq_auth_submit is done: arg comes back to its owner (may be NULL: dropped). */
    void (*job_done)(void *ud, void *arg);
} lq_auth_hooks;

/* A new auth cache for cfg (borrowed; must outlive it). wake(wake_ud) is
 * called from worker threads when results are ready. Never NULL. */
lq_auth *lq_auth_new(const lq_config *cfg, lq_auth_wake_fn wake, void *wake_ud);
/* Starts the worker threads (none without cfg->mongodb_uri). LQ_OK or LQ_ERR. */
int lq_auth_start(lq_auth *a);
/* Stops and joins the threads; frees everything. Sessions still referenced
 * are freed too. Accepts NULL. */
void lq_auth_free(lq_auth *a);

/* The session for token, with a new reference (release with
 * lq_auth_release). A cached entry is returned as is (PENDING, VALID or
 * INVALID); a new, UNAVAILABLE or stale one starts a lookup and is PENDING.
 * token must be a non-empty string. Never NULL. */
lq_session *lq_auth_get(lq_auth *a, const char *token);
/* Drops a reference from lq_auth_get. Accepts NULL. */
void lq_auth_release(lq_auth *a, lq_session *s);

/* Applies finished lookups, expiries and revalidations; calls the hooks.
 * now_ms: wall clock. Hooks may call lq_auth_get/lq_auth_release. */
void lq_auth_poll(lq_auth *a, int64_t now_ms, const lq_auth_hooks *hooks, void *ud);

/* 1 when changes of class_name concern the cache (_Session, _User, _Role,
 * _Join:users:_Role, _Join:roles:_Role). */
int lq_auth_watches_class(const char *class_name);
/* A change event (borrowed) of such a class. Effects reach the hooks at the
 * next lq_auth_poll. */
void lq_auth_on_change(lq_auth *a, const lq_change *ev);
/* Parse Server's clearCache (user_id may be NULL). */
void lq_auth_clear_cache(lq_auth *a, const char *user_id);

/* Another module's MongoDB read on the lookup threads (the query op's
 * snapshot, snapshot.h): run(arg, client, db) is called on one of them with
 * its pooled client and the database name; arg then comes back through
 * hooks->job_done at a later lq_auth_poll, in completion order, on the
 * service thread. drop(arg) frees an arg that is never handed back (freed
 * with the cache). Lookups and these jobs share the threads, first come
 * first served. Returns LQ_OK, or LQ_ERR when there is no MongoDB or the
 * queue is full (nothing queued: arg is still the caller's). */
struct _mongoc_client_t;
typedef void (*lq_auth_job_fn)(void *arg, struct _mongoc_client_t *client, const char *db);
int lq_auth_submit(lq_auth *a, lq_auth_job_fn run, void (*drop)(void *arg), void *arg);

/* Number of cached tokens (tests, metrics). */
size_t lq_auth_count(const lq_auth *a);

#endif
