/* jsonout.c - see jsonout.h. */
#include "livequery/jsonout.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *lq_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) {
        fputs("livequeryd: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *lq_xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (p == NULL) {
        fputs("livequeryd: out of memory\n", stderr);
        abort();
    }
    return p;
}

void *lq_xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (p == NULL) {
        fputs("livequeryd: out of memory\n", stderr);
        abort();
    }
    return p;
}

char *lq_xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    return memcpy(lq_xmalloc(n), s, n);
}

char *lq_xconcat(const char *a, const char *b, const char *c)
{
    size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
    char *s = lq_xmalloc(la + lb + lc + 1);
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    memcpy(s + la + lb, c, lc + 1);
    return s;
}

void lq_buf_init(lq_buf *b)
{
    b->data = NULL;
    b->len = b->cap = 0;
}

void lq_buf_release(lq_buf *b)
{
    if (b == NULL)
        return;
    free(b->data);
    lq_buf_init(b);
}

void lq_buf_reserve(lq_buf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    b->data = lq_xrealloc(b->data, cap);
    b->cap = cap;
}

void lq_buf_append(lq_buf *b, const void *p, size_t n)
{
    lq_buf_reserve(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void lq_buf_puts(lq_buf *b, const char *s)
{
    lq_buf_append(b, s, strlen(s));
}

void lq_buf_putc(lq_buf *b, char c)
{
    lq_buf_reserve(b, 1);
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
}

void lq_buf_json_string(lq_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;

    lq_buf_reserve(b, n + 2);
    lq_buf_putc(b, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        lq_buf_append(b, s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': lq_buf_append(b, "\\\"", 2); break;
        case '\\': lq_buf_append(b, "\\\\", 2); break;
        case '\b': lq_buf_append(b, "\\b", 2); break;
        case '\f': lq_buf_append(b, "\\f", 2); break;
        case '\n': lq_buf_append(b, "\\n", 2); break;
        case '\r': lq_buf_append(b, "\\r", 2); break;
        case '\t': lq_buf_append(b, "\\t", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            lq_buf_append(b, u, 6);
        }
        }
    }
    lq_buf_append(b, s + run, n - run);
    lq_buf_putc(b, '"');
}

void lq_buf_json_number(lq_buf *b, double v)
{
    char tmp[40];
    int n;

    if (!isfinite(v)) { /* JSON.stringify writes null for NaN and Infinity */
        lq_buf_append(b, "null", 4);
        return;
    }
    if (v == floor(v) && fabs(v) < 9007199254740992.0) {
        n = snprintf(tmp, sizeof(tmp), "%.0f", v);
        if (n == 2 && tmp[0] == '-' && tmp[1] == '0')
            n = snprintf(tmp, sizeof(tmp), "0");
    } else {
        for (int prec = 15; prec <= 17; prec++) {
            n = snprintf(tmp, sizeof(tmp), "%.*g", prec, v);
            if (strtod(tmp, NULL) == v)
                break;
        }
    }
    lq_buf_append(b, tmp, (size_t)n);
}

static int always_kept(const char *k)
{
    return strcmp(k, "className") == 0 || strcmp(k, "objectId") == 0 ||
           strcmp(k, "createdAt") == 0 || strcmp(k, "updatedAt") == 0 || strcmp(k, "ACL") == 0;
}

static int listed(const char *k, const char *const *keys)
{
    for (; *keys; keys++)
        if (strcmp(k, *keys) == 0)
            return 1;
    return 0;
}

/* Writes an object's members; as_parse_object applies the Parse output rules
 * of lq_buf_parse_object (no '_' keys, the keys projection, hidden fields). */
static void write_object_x(lq_buf *b, const json_t *obj, int as_parse_object, const char *const *keys,
                           const char *const *hidden)
{
    const char *k;
    size_t klen;
    json_t *x;
    int first = 1;

    lq_buf_putc(b, '{');
    json_object_keylen_foreach((json_t *)obj, k, klen, x) {
        if (as_parse_object && (k[0] == '_' || (keys && !always_kept(k) && !listed(k, keys)) ||
                                (hidden && listed(k, hidden) && strcmp(k, "className") != 0 &&
                                 strcmp(k, "objectId") != 0)))
            continue;
        if (!first)
            lq_buf_putc(b, ',');
        first = 0;
        lq_buf_json_string(b, k, klen);
        lq_buf_putc(b, ':');
        lq_buf_json(b, x);
    }
    lq_buf_putc(b, '}');
}

static void write_object(lq_buf *b, const json_t *obj, int as_parse_object, const char *const *keys)
{
    write_object_x(b, obj, as_parse_object, keys, NULL);
}

void lq_buf_json(lq_buf *b, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        write_object(b, v, 0, NULL);
        break;
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        lq_buf_putc(b, '[');
        json_array_foreach(v, i, x) {
            if (i)
                lq_buf_putc(b, ',');
            lq_buf_json(b, x);
        }
        lq_buf_putc(b, ']');
        break;
    }
    case JSON_STRING:
        lq_buf_json_string(b, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER: {
        char tmp[32];
        int n = snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
        lq_buf_append(b, tmp, (size_t)n);
        break;
    }
    case JSON_REAL:
        lq_buf_json_number(b, json_real_value(v));
        break;
    case JSON_TRUE:
        lq_buf_append(b, "true", 4);
        break;
    case JSON_FALSE:
        lq_buf_append(b, "false", 5);
        break;
    default:
        lq_buf_append(b, "null", 4);
    }
}

void lq_buf_parse_object(lq_buf *b, const json_t *obj, const char *const *keys)
{
    write_object(b, obj, 1, keys);
}

void lq_buf_parse_object_hiding(lq_buf *b, const json_t *obj, const char *const *keys,
                                const char *const *hidden)
{
    write_object_x(b, obj, 1, keys, hidden);
}
