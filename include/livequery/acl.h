/*
 * acl.h - who may read what: a subscriber's principals, object ACLs,
 * class-level permissions (CLP) and protectedFields, with the semantics of a
 * Parse REST find (reference/parse-mongo-storage.md §2-§3, parse-livequery.md
 * §4). Pure decisions: no I/O, no caches (auth.c resolves sessions and roles;
 * registry.c applies these per delivery).
 *
 * Principals. A subscriber is the master key, an anonymous client, or a user
 * with a set of roles. Parse's aclGroup is ["*", uid, "role:A", ...]. One
 * lq_principals exists per user (shared by every session and subscription of
 * that user) and is updated in place when the user's roles change: decisions
 * always use the current roles.
 *
 * Thread: an lq_principals is owned by the gateway's service thread (the
 * anonymous and master singletons are immutable). Everything else is pure.
 */
#ifndef LIVEQUERY_ACL_H
#define LIVEQUERY_ACL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "livequery/error.h"

typedef struct lq_role_set lq_role_set; /* private: membership hash of roles */

typedef struct lq_principals {
    int refs;
    int master;         /* the master key: every read check passes */
    char *user_id;      /* NULL: anonymous or master */
    char **roles;       /* "role:<name>" entries, sorted, deduplicated, NULL-terminated; never NULL */
    size_t nroles;
    lq_role_set *role_set;
    uint64_t gen;       /* bumped by every lq_principals_set_roles */
    /* scratch for registry.c's per-dispatch memo; not used here */
    uint64_t memo_stamp;
    int memo[4];
} lq_principals;

/* A new user principal (refs 1) with no roles. user_id is copied. */
lq_principals *lq_principals_new_user(const char *user_id);
/* The shared anonymous ("*" only) and master-key principals. ref/unref on
 * them are no-ops; they are never freed. */
lq_principals *lq_principals_anonymous(void);
lq_principals *lq_principals_master(void);
lq_principals *lq_principals_ref(lq_principals *p);
/* Drops a reference; frees at zero. Accepts NULL. */
void lq_principals_unref(lq_principals *p);

/* Replaces the user's roles with names[0..n) (role names WITHOUT the
 * "role:" prefix; duplicates ignored) and bumps gen. Returns 1 when the set
 * changed, 0 when it is the same set (gen still bumped). */
int lq_principals_set_roles(lq_principals *p, const char *const *names, size_t n);

/* 1 when entry ("*", a user id, or "role:<name>") is in p's aclGroup.
 * "*" is in every group; the master principal holds no entries but "*". */
int lq_principals_has(const lq_principals *p, const char *entry);

/* The same test for a caller that checks one entry against many principals:
 * hash = lq_acl_key_hash(entry, len), computed once. */
unsigned lq_acl_key_hash(const char *entry, size_t len);
int lq_principals_has_hashed(const lq_principals *p, const char *entry, size_t len, unsigned hash);

/* Object ACL (REST JSON obj with an optional "ACL"): 1 when p may read obj.
 * Master: 1. No "ACL" key (or ACL null): public, 1. ACL not an object: 0.
 * Otherwise 1 iff some key whose value has "read": true is in p's group. */
int lq_acl_can_read(const lq_principals *p, const json_t *obj);

/*---- class-level permissions ------------------------------------------------*/

typedef enum lq_clp_verdict {
    LQ_CLP_ALLOW = 0,     /* may subscribe; every object is subject to its ACL only */
    LQ_CLP_POINTER,       /* may subscribe; only objects whose pointer fields name the user (lq_clp_pointer_match) */
    LQ_CLP_FORBIDDEN,     /* error 119 "Permission denied for action <op> on class <C>." */
    LQ_CLP_NEED_AUTH,     /* error 101 "Permission denied, user needs to be authenticated." */
} lq_clp_verdict;

/* 1 when where is exactly {"objectId": <string>} (the CLP operation is then
 * "get", else "find"). */
int lq_clp_is_get(const json_t *where);

/* Parse's validatePermission + addPointerPermissions for a read (op "get" when
 * is_get, else "find"), for a subscriber p, against clp (the class's CLP as
 * _SCHEMA _metadata.class_permissions or Parse Server's
 * classLevelPermissions; NULL = no CLP = allow). A CLP without an entry for
 * the op (or a non-object entry) counts as {} (locked), as Parse merges the
 * stored CLP over {find:{},get:{},...}.
 *  1. master, clp NULL -> ALLOW
 *  2. perms["*"] truthy, or perms[e] === true for e in p's group (user id,
 *     "role:X") -> ALLOW
 *  3. fields = perms.pointerFields ∪ clp.readUserFields (arrays of strings)
 *  4. perms.requiresAuthentication truthy: anonymous -> NEED_AUTH; else
 *     fields empty -> ALLOW, else POINTER
 *  5. fields non-empty -> POINTER; but anonymous and is_get -> NEED_AUTH
 *     (REST get answers 101; REST find answers [] — POINTER with no user
 *     matches nothing)
 *  6. else FORBIDDEN.
 * On POINTER, *pointer_fields (if not NULL) gets a new NULL-terminated,
 * deduplicated list (free with lq_strv_free); otherwise it is set to NULL.
 * On FORBIDDEN / NEED_AUTH err (if not NULL) gets the Parse error, with the
 * exact strings above (code 119 / 101). */
lq_clp_verdict lq_clp_check(const json_t *clp, const char *class_name, int is_get,
                            const lq_principals *p, char ***pointer_fields, lq_error *err);

/* For a POINTER verdict: 1 when, for some field f in fields, obj[f] is a
 * Pointer {"__type":"Pointer","className":"_User","objectId":<p's user id>}
 * or an array holding such a pointer. Anonymous p: 0. Master p: 1. */
int lq_clp_pointer_match(const char *const *fields, const lq_principals *p, const json_t *obj);

/*---- protectedFields --------------------------------------------------------*/

/* The fields hidden from p in every object of the class, before object
 * dependent rules (Parse DBC addProtectedFields):
 *  - master, or where.objectId (a string equality) == p's user id: NULL;
 *  - tiers from clp.protectedFields: "*" always applies; "authenticated",
 *    "role:X" (held) and "<userId>" apply to a user; "userField:f" tiers are
 *    left to lq_protected_for_object;
 *  - hidden = the intersection of the applicable tiers' lists (no applicable
 *    tier: nothing hidden);
 *  - class "_User": Parse's default server option protectedFields
 *    {_User:{"*":["email"]}} is merged in first ("email" added to the "*"
 *    tier, which is created if absent).
 * Returns a new sorted, deduplicated NULL-terminated list, or NULL when
 * nothing is hidden. clp may be NULL (then only the _User default applies). */
char **lq_protected_static(const json_t *clp, const char *class_name, const json_t *where,
                           const lq_principals *p);

/* 1 when the class's hidden fields can depend on the object: clp has a
 * "userField:<f>" tier, or class_name is "_User". Then registry.c calls
 * lq_protected_for_object per delivery; otherwise the static list is final. */
int lq_protected_dynamic(const json_t *clp, const char *class_name);

/* The fields hidden from p in obj (Parse filterSensitiveData):
 *  - start from static_hidden (lq_protected_static's list; may be NULL);
 *  - for each "userField:<f>" tier whose obj[f] is a pointer to p's user (or
 *    an array holding one, matched by objectId): intersect with that tier;
 *  - class "_User": if obj.objectId == p's user id, nothing is hidden;
 *    otherwise (p not master) "sessionToken" and "authData" are added.
 * Returns a new sorted NULL-terminated list, or NULL when nothing is hidden. */
char **lq_protected_for_object(const json_t *clp, const char *class_name,
                               const char *const *static_hidden, const lq_principals *p,
                               const json_t *obj);

/* 1 when the query uses a hidden field: a key of where (top-level, or inside
 * $or/$and/$nor at any depth; a dotted key "a.b" uses "a") or an entry of
 * watch (a NULL-terminated list, or NULL; "a.b" uses "a") names a field in
 * hidden. *field (if not NULL) gets the offending name (borrowed from hidden). */
int lq_protected_in_query(const char *const *hidden, const json_t *where,
                          const char *const *watch, const char **field);

/* Frees a NULL-terminated string list. Accepts NULL. */
void lq_strv_free(char **v);
/* 1 when the two lists (NULL or NULL-terminated, compared in order) are equal. */
int lq_strv_equal(const char *const *a, const char *const *b);

#endif
