/*
 * query.h - a Parse `where` clause compiled once, at subscribe time, into an
 * immutable matcher; then matched against Parse REST JSON objects, per event.
 *
 * Semantics are those of a REST find on MongoDB (DESIGN decision 2), not
 * Parse LiveQuery's QueryTools where they differ:
 *   - createdAt / updatedAt compare as dates (they arrive as ISO strings);
 *   - {f: null} and {f: {$eq: null}} match null or missing; {$ne: null}
 *     matches only a present, non-null value;
 *   - no cross-type comparison ($lt of a number against a string is false);
 *   - scalar equality against an array field means "array contains";
 *   - subdocument equality is deep equality;
 *   - $regex runs on PCRE2 with match and depth limits, so no pattern can
 *     backtrack forever; a pattern that hits the limit does not match (and
 *     bumps the limit_regex metric, as does a pattern refused as too long).
 * Operators needing the database ($inQuery, $select, $relatedTo, $text, ...)
 * are refused at compile time with code 102 rather than silently never
 * matching. protocol/PROTOCOL.md lists every operator and every difference.
 *
 * Thread: a compiled lq_query is immutable; lq_query_match may run on any
 * thread (regex scratch space is per thread).
 */
#ifndef LIVEQUERY_QUERY_H
#define LIVEQUERY_QUERY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "livequery/error.h"

typedef struct lq_query lq_query;

typedef struct lq_query_limits {
    int max_depth;               /* nesting of sub-objects, $or/$and/$nor; default 16 */
    int max_nodes;               /* constraints and list elements in total; default 1024 */
    size_t max_regex_len;        /* bytes of one $regex pattern; default 1024 */
    uint32_t regex_match_limit;  /* PCRE2 match limit; default 100000 */
    uint32_t regex_depth_limit;  /* PCRE2 depth limit; default 1000 */
} lq_query_limits;

/* Fills *lim with the defaults above. */
void lq_query_limits_default(lq_query_limits *lim);

/* Compiles `where` (borrowed; must be a JSON object) for class_name.
 * lim may be NULL for the defaults.
 * Returns a new query owned by the caller (free with lq_query_free), or NULL
 * with err set to code 102 (LQ_PARSE_ERR_INVALID_QUERY) and a message fit to
 * send to the client, e.g. "$or must be an array",
 * "Invalid regular expression: ...", "unknown operator: $foo",
 * "query nesting is deeper than 16". Nothing is retained from `where`. */
lq_query *lq_query_compile(const char *class_name, const json_t *where,
                           const lq_query_limits *lim, lq_error *err);

/* Frees q. Accepts NULL. */
void lq_query_free(lq_query *q);

/* 1 when the REST JSON object (borrowed) satisfies q, 0 otherwise (also for
 * NULL or a non-object). now_ms is the current time in ms since the epoch,
 * used by $relativeTime. */
int lq_query_match(const lq_query *q, const json_t *object, int64_t now_ms);

/* The canonical form of the where clause: equal for queries that match the
 * same objects by construction (keys sorted; elements of $or $and $nor $in
 * $nin $all $containedBy sorted; 1.0 written as 1). Borrowed; valid while q
 * lives. Two subscriptions share a group iff class and canonical form match. */
const char *lq_query_canonical(const lq_query *q);

/* The class name given at compile time. Borrowed. */
const char *lq_query_class(const lq_query *q);

/* Equality index hint. If q requires, at its top level (an implicit AND), a
 * field to equal a string, number, boolean or Pointer (plain value or $eq),
 * returns 1 and sets *field (borrowed, e.g. "objectId", "status",
 * "publisherContact") and *value_key (borrowed) to the index key of that value
 * as lq_query_value_key would write it. objectId is preferred when present.
 * Otherwise returns 0. An object can only match q if its field equals that
 * value, or is an array holding an element whose key is value_key. */
int lq_query_index_hint(const lq_query *q, const char **field, const char **value_key);

/* Writes the index key of a scalar JSON value (borrowed) into buf:
 * "s:<string>", "n:<%.17g of the number>", "b:1"/"b:0", or
 * "p:<className>$<objectId>" for a Pointer object.
 * Returns the length written (excluding the NUL), or -1 when v has no key
 * (null, array, other objects) or the key does not fit in cap. */
int lq_query_value_key(const json_t *v, char *buf, size_t cap);

#endif
