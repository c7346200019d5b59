/*
 * jsonout.h - a growable byte buffer and a compact JSON writer for the frames
 * we send.
 *
 * Why not json_dumps: frames are written straight from the event's borrowed
 * json_t with the projection applied (no deep copy per subscriber view), and
 * reals are written in their shortest round-trip form (0.1, not jansson's
 * 0.10000000000000001), as Parse Server's JSON.stringify does.
 *
 * Thread: an lq_buf belongs to the thread that uses it.
 */
#ifndef LIVEQUERY_JSONOUT_H
#define LIVEQUERY_JSONOUT_H

#include <jansson.h>
#include <stddef.h>

typedef struct lq_buf {
    char *data; /* NUL-terminated when len < cap; owned */
    size_t len;
    size_t cap;
} lq_buf;

/* Initializes an empty buffer (no allocation). */
void lq_buf_init(lq_buf *b);
/* Frees b's storage and re-initializes it. Accepts NULL. */
void lq_buf_release(lq_buf *b);
/* Ensures room for n more bytes; aborts on out-of-memory. */
void lq_buf_reserve(lq_buf *b, size_t n);
void lq_buf_append(lq_buf *b, const void *p, size_t n);
void lq_buf_puts(lq_buf *b, const char *s);
void lq_buf_putc(lq_buf *b, char c);
/* Appends s (n bytes, UTF-8) as a quoted, escaped JSON string. */
void lq_buf_json_string(lq_buf *b, const char *s, size_t n);
/* Appends a number in JavaScript's JSON.stringify form (integral values
 * without a fraction, shortest round-trip digits otherwise). */
void lq_buf_json_number(lq_buf *b, double v);
/* Appends v (borrowed) as compact JSON. */
void lq_buf_json(lq_buf *b, const json_t *v);

/* Appends a Parse object (borrowed) as it is sent to clients: keys starting
 * with '_' (internal, and __type) are left out. When keys is not NULL it is
 * a NULL-terminated list of field names; only those plus className,
 * objectId, createdAt, updatedAt and ACL are written. */
void lq_buf_parse_object(lq_buf *b, const json_t *obj, const char *const *keys);

/* As lq_buf_parse_object, also leaving out the fields named in hidden (a
 * NULL-terminated list, or NULL): protectedFields. className and objectId
 * are always written. */
void lq_buf_parse_object_hiding(lq_buf *b, const json_t *obj, const char *const *keys,
                                const char *const *hidden);

/* malloc/realloc that abort on out-of-memory (h2o_mem_alloc, Redis zmalloc). */
void *lq_xmalloc(size_t n);
void *lq_xcalloc(size_t n, size_t size);
void *lq_xrealloc(void *p, size_t n);
char *lq_xstrdup(const char *s);
/* A new string a + b + c (c may be ""). */
char *lq_xconcat(const char *a, const char *b, const char *c);

#endif
