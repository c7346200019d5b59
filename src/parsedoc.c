/*
 * parsedoc.c - Parse-on-MongoDB BSON documents to Parse REST JSON, and the
 * schema cache built from `_SCHEMA` (contract: parsedoc.h; rules: reference
 * parse-mongo-storage.md §1 and §3, parse-server MongoTransform.js
 * `mongoObjectToParseObject` and `nestedMongoObjectToNestedParseObject`).
 *
 * Shape:
 *
 *   lq_schema --classes(by name, uthash)--> lq_class_schema --fields(by name, uthash)--> field
 *                                                            +--rels[] (relation fields)
 *                                                            +--clp (class_permissions as JSON)
 *
 * Conversion is one pass over the top-level keys (plus one lookup of _id so
 * objectId comes first). Per field it costs one hash lookup (only when a
 * class schema is given) and the jansson allocations of the value itself;
 * strings are UTF-8 checked once here and handed to jansson's *_nocheck
 * constructors. Input that is not valid UTF-8 (BSON does not guarantee it) is
 * repaired with U+FFFD, so the output always serializes.
 *
 * Thread: a built schema is immutable and shared by reference count; the
 * converters are pure.
 */
#include "livequery/parsedoc.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "livequery/jsonout.h"

#define uthash_malloc(sz) lq_xmalloc(sz)
#define uthash_free(p, sz) free(p)
#include <uthash.h>

/* ------------------------------------------------------------------------ */
/* Schema                                                                    */
/* ------------------------------------------------------------------------ */

typedef struct field {
    UT_hash_handle hh; /* in lq_class_schema.fields, key = name */
    lq_field_type type;
    char *target; /* pointer/relation target class (owned), else NULL */
    size_t name_len;
    char name[]; /* NUL-terminated */
} field;

struct lq_class_schema {
    UT_hash_handle hh; /* in lq_schema.classes, key = name */
    char *name;        /* owned, NUL-terminated */
    size_t name_len;
    field *fields; /* hash by field name */
    field **rels;  /* relation fields in _SCHEMA order (borrowed from fields) */
    size_t nrels;
    json_t *clp; /* _metadata.class_permissions (owned), or NULL */
};

struct lq_schema {
    atomic_int refs;
    lq_class_schema *classes;
};

static json_t *must(json_t *v)
{
    if (v == NULL) {
        fputs("livequeryd: out of memory\n", stderr);
        abort();
    }
    return v;
}

lq_schema *lq_schema_new(void)
{
    lq_schema *s = lq_xcalloc(1, sizeof(*s));
    atomic_init(&s->refs, 1);
    return s;
}

static void class_free(lq_class_schema *c)
{
    field *f, *tmp;

    if (c == NULL)
        return;
    HASH_ITER (hh, c->fields, f, tmp) {
        HASH_DEL(c->fields, f);
        free(f->target);
        free(f);
    }
    free(c->rels);
    json_decref(c->clp);
    free(c->name);
    free(c);
}

static char *xstrndup(const char *s, size_t n)
{
    char *p = lq_xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

/* Type string of a _SCHEMA field (MongoSchemaCollection
 * mongoFieldToParseSchemaField: exact, lower case). *tgt and *tl get the target
 * class of a pointer or relation. */
static lq_field_type parse_type(const char *s, size_t n, const char **tgt, size_t *tl)
{
    static const struct {
        const char *name;
        lq_field_type type;
    } names[] = {
        {"string", LQ_FT_STRING}, {"number", LQ_FT_NUMBER},     {"boolean", LQ_FT_BOOLEAN},
        {"date", LQ_FT_DATE},     {"object", LQ_FT_OBJECT},     {"map", LQ_FT_OBJECT},
        {"array", LQ_FT_ARRAY},   {"geopoint", LQ_FT_GEOPOINT}, {"file", LQ_FT_FILE},
        {"bytes", LQ_FT_BYTES},   {"polygon", LQ_FT_POLYGON},
    };

    *tgt = NULL;
    *tl = 0;
    if (n > 1 && s[0] == '*') {
        *tgt = s + 1;
        *tl = n - 1;
        return LQ_FT_POINTER;
    }
    if (n > 10 && memcmp(s, "relation<", 9) == 0 && s[n - 1] == '>') {
        *tgt = s + 9;
        *tl = n - 10;
        return LQ_FT_RELATION;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strlen(names[i].name) == n && memcmp(names[i].name, s, n) == 0)
            return names[i].type;
    return LQ_FT_UNKNOWN;
}

static void class_add_field(lq_class_schema *c, const char *name, size_t len, const bson_iter_t *v)
{
    const char *tgt = NULL;
    size_t tl = 0;
    lq_field_type t = LQ_FT_UNKNOWN;
    field *f;

    if (BSON_ITER_HOLDS_UTF8(v)) {
        uint32_t n;
        const char *s = bson_iter_utf8(v, &n);
        t = parse_type(s, n, &tgt, &tl);
    }
    HASH_FIND(hh, c->fields, name, len, f);
    if (f == NULL) {
        f = lq_xmalloc(sizeof(*f) + len + 1);
        memset(f, 0, sizeof(*f));
        memcpy(f->name, name, len);
        f->name[len] = '\0';
        f->name_len = len;
        HASH_ADD_KEYPTR(hh, c->fields, f->name, len, f);
    } else { /* duplicate key in the _SCHEMA document: the last one wins */
        free(f->target);
    }
    f->type = t;
    f->target = tgt ? xstrndup(tgt, tl) : NULL;
}

/* Forward: the generic value converter (below). */
static json_t *conv_value(const bson_iter_t *it, int depth);

int lq_schema_add(lq_schema *s, const bson_t *schema_doc, lq_error *err)
{
    bson_iter_t it;
    const char *name;
    uint32_t len;
    lq_class_schema *c, *old;
    field *f, *tmp;

    if (s == NULL || schema_doc == NULL || !bson_iter_init_find(&it, schema_doc, "_id") ||
        !BSON_ITER_HOLDS_UTF8(&it)) {
        lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "_SCHEMA document has no string _id");
        return LQ_ERR_INVAL;
    }
    name = bson_iter_utf8(&it, &len);
    c = lq_xcalloc(1, sizeof(*c));
    c->name = xstrndup(name, len);
    c->name_len = len;

    if (!bson_iter_init(&it, schema_doc)) { /* cannot happen after init_find succeeded */
        class_free(c);
        lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "_SCHEMA document is not valid BSON");
        return LQ_ERR_INVAL;
    }
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        size_t kl = bson_iter_key_len(&it);

        if (strcmp(k, "_id") == 0 || strcmp(k, "_client_permissions") == 0)
            continue;
        if (strcmp(k, "_metadata") == 0) {
            bson_iter_t m;
            if (BSON_ITER_HOLDS_DOCUMENT(&it) && bson_iter_recurse(&it, &m) &&
                bson_iter_find(&m, "class_permissions") && BSON_ITER_HOLDS_DOCUMENT(&m)) {
                json_decref(c->clp);
                c->clp = conv_value(&m, 0);
            }
            continue;
        }
        class_add_field(c, k, kl, &it);
    }

    HASH_ITER (hh, c->fields, f, tmp) {
        if (f->type == LQ_FT_RELATION)
            c->nrels++;
    }
    if (c->nrels) {
        size_t i = 0;
        c->rels = lq_xmalloc(c->nrels * sizeof(*c->rels));
        HASH_ITER (hh, c->fields, f, tmp) { /* uthash iterates in insertion order */
            if (f->type == LQ_FT_RELATION)
                c->rels[i++] = f;
        }
    }

    HASH_FIND(hh, s->classes, c->name, c->name_len, old);
    if (old) {
        HASH_DEL(s->classes, old);
        class_free(old);
    }
    HASH_ADD_KEYPTR(hh, s->classes, c->name, c->name_len, c);
    return LQ_OK;
}

lq_schema *lq_schema_ref(lq_schema *s)
{
    if (s)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void lq_schema_unref(lq_schema *s)
{
    lq_class_schema *c, *tmp;

    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    HASH_ITER (hh, s->classes, c, tmp) {
        HASH_DEL(s->classes, c);
        class_free(c);
    }
    free(s);
}

const lq_class_schema *lq_schema_class(const lq_schema *s, const char *class_name)
{
    lq_class_schema *c = NULL;

    if (s == NULL || class_name == NULL)
        return NULL;
    HASH_FIND(hh, s->classes, class_name, strlen(class_name), c);
    return c;
}

static const field *find_field(const lq_class_schema *cls, const char *name, size_t len)
{
    field *f = NULL;

    if (cls == NULL)
        return NULL;
    HASH_FIND(hh, cls->fields, name, len, f);
    return f;
}

lq_field_type lq_schema_field(const lq_class_schema *cls, const char *name, const char **target)
{
    const field *f = name ? find_field(cls, name, strlen(name)) : NULL;

    if (target)
        *target = f ? f->target : NULL;
    return f ? f->type : LQ_FT_UNKNOWN;
}

const json_t *lq_schema_clp(const lq_class_schema *cls)
{
    return cls ? cls->clp : NULL;
}

size_t lq_schema_count(const lq_schema *s)
{
    return s ? HASH_COUNT(s->classes) : 0;
}

/* ------------------------------------------------------------------------ */
/* Strings: UTF-8 check, repair, keys                                        */
/* ------------------------------------------------------------------------ */

/* Length of the valid UTF-8 sequence at p (jansson's rules: no overlongs,
 * no surrogates, at most U+10FFFF), or 0 when it is not one. */
static size_t utf8_seq(const unsigned char *p, const unsigned char *end)
{
    unsigned c = p[0];
    uint32_t cp;
    size_t len;

    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if ((size_t)(end - p) < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF)))
        return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))
        return 0;
    return len;
}

static int utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;

    while (p < end) {
        size_t l;
        if (*p < 0x80) {
            p++;
            continue;
        }
        if ((l = utf8_seq(p, end)) == 0)
            return 0;
        p += l;
    }
    return 1;
}

/* A copy of s with every byte that does not start a valid sequence replaced
 * by U+FFFD (caller frees); *out_len gets its length. */
static char *utf8_repair(const char *s, size_t n, size_t *out_len)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    char *buf = lq_xmalloc(n * 3 + 1), *o = buf;

    while (p < end) {
        size_t l = utf8_seq(p, end);
        if (l == 0) {
            memcpy(o, "\xEF\xBF\xBD", 3);
            o += 3;
            p++;
        } else {
            memcpy(o, p, l);
            o += l;
            p += l;
        }
    }
    *o = '\0';
    *out_len = (size_t)(o - buf);
    return buf;
}

/* A JSON string of s[0..n) (NULs allowed), repaired if not UTF-8. New reference. */
static json_t *mkstr(const char *s, size_t n)
{
    json_t *v;
    char *fixed;
    size_t fl;

    if (utf8_valid(s, n))
        return must(json_stringn_nocheck(s, n));
    fixed = utf8_repair(s, n, &fl);
    v = must(json_stringn_nocheck(fixed, fl));
    free(fixed);
    return v;
}

/* obj[k] = v (steals v); a key that is not UTF-8 is repaired. */
static void set_key(json_t *obj, const char *k, size_t kl, json_t *v)
{
    char *fixed;
    size_t fl;

    if (utf8_valid(k, kl)) {
        json_object_setn_new_nocheck(obj, k, kl, v);
        return;
    }
    fixed = utf8_repair(k, kl, &fl);
    json_object_setn_new_nocheck(obj, fixed, fl, v);
    free(fixed);
}

#define KEY_IS(k, kl, lit) ((kl) == sizeof(lit) - 1 && memcmp((k), (lit), sizeof(lit) - 1) == 0)

/* ------------------------------------------------------------------------ */
/* Dates                                                                     */
/* ------------------------------------------------------------------------ */

#define JS_DATE_MAX_MS INT64_C(8640000000000000) /* ±100,000,000 days (ECMA-262 TimeClip) */

static char *put_digits(char *p, uint64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

void lq_parsedoc_iso(int64_t ms, char out[32])
{
    int64_t days, rem, z, era, y;
    unsigned doe, yoe, doy, mp, m, d;
    char *p = out;

    if (ms > JS_DATE_MAX_MS)
        ms = JS_DATE_MAX_MS;
    if (ms < -JS_DATE_MAX_MS)
        ms = -JS_DATE_MAX_MS;
    days = ms / 86400000;
    rem = ms % 86400000;
    if (rem < 0) { /* floor division: -1 ms is 1969-12-31T23:59:59.999Z */
        rem += 86400000;
        days--;
    }
    /* civil_from_days (H. Hinnant, proleptic Gregorian) */
    z = days + 719468;
    era = (z >= 0 ? z : z - 146096) / 146097;
    doe = (unsigned)(z - era * 146097);
    yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    mp = (5 * doy + 2) / 153;
    d = doy - (153 * mp + 2) / 5 + 1;
    m = mp < 10 ? mp + 3 : mp - 9;
    y = (int64_t)yoe + era * 400 + (m <= 2);

    if (y >= 0 && y <= 9999) {
        p = put_digits(p, (uint64_t)y, 4);
    } else { /* JS expanded years: +010000, -000001 */
        *p++ = y < 0 ? '-' : '+';
        p = put_digits(p, (uint64_t)(y < 0 ? -y : y), 6);
    }
    *p++ = '-';
    p = put_digits(p, m, 2);
    *p++ = '-';
    p = put_digits(p, d, 2);
    *p++ = 'T';
    p = put_digits(p, (uint64_t)(rem / 3600000), 2);
    *p++ = ':';
    p = put_digits(p, (uint64_t)(rem / 60000 % 60), 2);
    *p++ = ':';
    p = put_digits(p, (uint64_t)(rem / 1000 % 60), 2);
    *p++ = '.';
    p = put_digits(p, (uint64_t)(rem % 1000), 3);
    *p++ = 'Z';
    *p = '\0';
}

static json_t *iso_json(int64_t ms)
{
    char buf[32];
    lq_parsedoc_iso(ms, buf);
    return must(json_string_nocheck(buf));
}

static json_t *typed2(const char *type, const char *k1, json_t *v1, const char *k2, json_t *v2)
{
    json_t *o = must(json_object());
    json_object_set_new_nocheck(o, "__type", must(json_string_nocheck(type)));
    json_object_set_new_nocheck(o, k1, v1);
    if (k2)
        json_object_set_new_nocheck(o, k2, v2);
    return o;
}

static json_t *date_json(int64_t ms)
{
    return typed2("Date", "iso", iso_json(ms), NULL, NULL);
}

/* ------------------------------------------------------------------------ */
/* Bytes                                                                     */
/* ------------------------------------------------------------------------ */

static json_t *bytes_json(const uint8_t *data, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char small[256], *buf, *o;
    size_t olen = (n + 2) / 3 * 4, i = 0;
    json_t *s;

    buf = olen <= sizeof(small) ? small : lq_xmalloc(olen);
    o = buf;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8 | data[i + 2];
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)data[i] << 16;
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = '=';
        *o++ = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1] << 8;
        *o++ = tab[v >> 18];
        *o++ = tab[(v >> 12) & 63];
        *o++ = tab[(v >> 6) & 63];
        *o++ = '=';
    }
    s = must(json_stringn_nocheck(buf, olen));
    if (buf != small)
        free(buf);
    return typed2("Bytes", "base64", s, NULL, NULL);
}

static int b64_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/';
}

/* parse-server BytesCoder.isBase64Value: non-empty, length % 4 == 0, at most
 * two trailing '='. */
static int is_base64(const char *s, size_t n)
{
    size_t pad = 0;

    if (n == 0 || n % 4 != 0)
        return 0;
    if (s[n - 1] == '=')
        pad = s[n - 2] == '=' ? 2 : 1;
    for (size_t i = 0; i < n - pad; i++)
        if (!b64_char((unsigned char)s[i]))
            return 0;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Generic (nested) values                                                   */
/* ------------------------------------------------------------------------ */

static json_t *num_json(const bson_iter_t *it)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_INT32:
        return must(json_integer(bson_iter_int32(it)));
    case BSON_TYPE_INT64:
        return must(json_integer(bson_iter_int64(it)));
    case BSON_TYPE_DOUBLE: {
        double d = bson_iter_double(it);
        return isfinite(d) ? must(json_real(d)) : json_null();
    }
    default:
        return json_null();
    }
}

static int is_num(const bson_iter_t *it)
{
    bson_type_t t = bson_iter_type(it);
    return t == BSON_TYPE_INT32 || t == BSON_TYPE_INT64 || t == BSON_TYPE_DOUBLE;
}

static json_t *conv_doc(const bson_iter_t *parent, int depth)
{
    bson_iter_t c;
    json_t *obj = must(json_object());
    int iso_date = 0, type_date = 0;
    int64_t iso_ms = 0;

    if (!bson_iter_recurse(parent, &c))
        return obj;
    while (bson_iter_next(&c)) {
        const char *k = bson_iter_key(&c);
        size_t kl = bson_iter_key_len(&c);
        json_t *v;

        if (KEY_IS(k, kl, "iso") && BSON_ITER_HOLDS_DATE_TIME(&c)) {
            /* {__type:"Date", iso:<BSON Date>} (dot-notation REST write): iso
             * becomes the ISO string; re-wrapped below if __type is not Date */
            iso_date = 1;
            iso_ms = bson_iter_date_time(&c);
            v = iso_json(iso_ms);
        } else {
            if (KEY_IS(k, kl, "__type")) {
                uint32_t n = 0;
                const char *t = BSON_ITER_HOLDS_UTF8(&c) ? bson_iter_utf8(&c, &n) : NULL;
                type_date = t && n == 4 && memcmp(t, "Date", 4) == 0;
            } else if (KEY_IS(k, kl, "iso")) {
                iso_date = 0;
            }
            v = conv_value(&c, depth + 1);
        }
        set_key(obj, k, kl, v);
    }
    if (iso_date && !type_date)
        json_object_set_new_nocheck(obj, "iso", date_json(iso_ms));
    return obj;
}

static json_t *conv_array(const bson_iter_t *parent, int depth)
{
    bson_iter_t c;
    json_t *arr = must(json_array());

    if (!bson_iter_recurse(parent, &c))
        return arr;
    while (bson_iter_next(&c))
        json_array_append_new(arr, conv_value(&c, depth + 1));
    return arr;
}

/* depth = containers around this value inside the converted value; a
 * container at LQ_PARSEDOC_MAX_DEPTH or deeper becomes null. */
static json_t *conv_value(const bson_iter_t *it, int depth)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        return num_json(it);
    case BSON_TYPE_UTF8:
    case BSON_TYPE_SYMBOL: {
        uint32_t n = 0;
        const char *s =
            BSON_ITER_HOLDS_UTF8(it) ? bson_iter_utf8(it, &n) : bson_iter_symbol(it, &n);
        return mkstr(s ? s : "", s ? n : 0);
    }
    case BSON_TYPE_DOCUMENT:
        return depth >= LQ_PARSEDOC_MAX_DEPTH ? json_null() : conv_doc(it, depth);
    case BSON_TYPE_ARRAY:
        return depth >= LQ_PARSEDOC_MAX_DEPTH ? json_null() : conv_array(it, depth);
    case BSON_TYPE_BINARY: {
        bson_subtype_t st;
        uint32_t n = 0;
        const uint8_t *data = NULL;
        bson_iter_binary(it, &st, &n, &data);
        return bytes_json(data ? data : (const uint8_t *)"", data ? n : 0);
    }
    case BSON_TYPE_OID: {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(it), hex);
        return must(json_stringn_nocheck(hex, 24));
    }
    case BSON_TYPE_BOOL:
        return json_boolean(bson_iter_bool(it));
    case BSON_TYPE_DATE_TIME:
        return date_json(bson_iter_date_time(it));
    case BSON_TYPE_DECIMAL128: {
        bson_decimal128_t dec;
        char buf[BSON_DECIMAL128_STRING];
        if (!bson_iter_decimal128(it, &dec))
            return json_null();
        bson_decimal128_to_string(&dec, buf);
        return must(json_string_nocheck(buf));
    }
    case BSON_TYPE_TIMESTAMP: { /* js-bson Timestamp is an unsigned Long: t * 2^32 + i */
        uint32_t t, i;
        bson_iter_timestamp(it, &t, &i);
        if (t <= INT32_MAX)
            return must(json_integer((json_int_t)(((uint64_t)t << 32) | i)));
        return must(json_real((double)t * 4294967296.0 + (double)i));
    }
    case BSON_TYPE_REGEX: { /* "/pattern/options", as JS RegExp.prototype.toString */
        const char *opts = NULL;
        const char *pat = bson_iter_regex(it, &opts);
        lq_buf b;
        json_t *v;
        lq_buf_init(&b);
        lq_buf_putc(&b, '/');
        lq_buf_puts(&b, pat ? pat : "");
        lq_buf_putc(&b, '/');
        lq_buf_puts(&b, opts ? opts : "");
        v = mkstr(b.data, b.len);
        lq_buf_release(&b);
        return v;
    }
    case BSON_TYPE_CODE:
    case BSON_TYPE_CODEWSCOPE: { /* the code text; the scope is dropped */
        uint32_t n = 0, sl = 0;
        const uint8_t *scope = NULL;
        const char *code = bson_iter_type(it) == BSON_TYPE_CODE
                               ? bson_iter_code(it, &n)
                               : bson_iter_codewscope(it, &n, &sl, &scope);
        return mkstr(code ? code : "", code ? n : 0);
    }
    default: /* null, undefined, MinKey, MaxKey, DBPointer */
        return json_null();
    }
}

json_t *lq_parsedoc_value(const bson_iter_t *it)
{
    return it ? conv_value(it, 0) : json_null();
}

/* ------------------------------------------------------------------------ */
/* Top-level typed fields                                                    */
/* ------------------------------------------------------------------------ */

static int url_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '!' || c == '~' || c == '*' || c == '\'' || c == '(' ||
           c == ')';
}

/* prefix + encodeURIComponent(name); name must be valid UTF-8. New reference. */
static json_t *file_url(const char *prefix, const char *name, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    lq_buf b;
    json_t *v;

    lq_buf_init(&b);
    lq_buf_puts(&b, prefix);
    lq_buf_reserve(&b, n * 3 + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (url_unreserved(c)) {
            b.data[b.len++] = (char)c;
        } else {
            b.data[b.len++] = '%';
            b.data[b.len++] = hex[c >> 4];
            b.data[b.len++] = hex[c & 15];
        }
    }
    v = mkstr(b.data ? b.data : "", b.len);
    lq_buf_release(&b);
    return v;
}

static json_t *file_json(const char *name, size_t n, const lq_parsedoc_opts *opts)
{
    json_t *o = must(json_object()), *nm = mkstr(name, n);

    json_object_set_new_nocheck(o, "__type", must(json_string_nocheck("File")));
    json_object_set_new_nocheck(o, "name", nm);
    if (opts && opts->files_url_prefix)
        json_object_set_new_nocheck(
            o, "url",
            file_url(opts->files_url_prefix, json_string_value(nm), json_string_length(nm)));
    return o;
}

/* FilesController.expandFilesInObject: a top-level {__type:"File",name} without url gets one. */
static void maybe_add_url(json_t *v, const lq_parsedoc_opts *opts)
{
    const json_t *t, *nm;

    if (!opts || !opts->files_url_prefix || !json_is_object(v) || json_object_get(v, "url"))
        return;
    t = json_object_get(v, "__type");
    nm = json_object_get(v, "name");
    if (json_is_string(t) && strcmp(json_string_value(t), "File") == 0 && json_is_string(nm))
        json_object_set_new_nocheck(
            v, "url",
            file_url(opts->files_url_prefix, json_string_value(nm), json_string_length(nm)));
}

/* [lng, lat] -> GeoPoint, or NULL when it is not a 2-element numeric array. */
static json_t *geopoint_json(const bson_iter_t *it)
{
    bson_iter_t c, a0, a1;

    if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &c) || !bson_iter_next(&c) ||
        !is_num(&c))
        return NULL;
    a0 = c;
    if (!bson_iter_next(&c) || !is_num(&c))
        return NULL;
    a1 = c;
    if (bson_iter_next(&c))
        return NULL;
    return typed2("GeoPoint", "latitude", num_json(&a1), "longitude", num_json(&a0));
}

/* GeoJSON {type:"Polygon", coordinates:[[[lng,lat],…],…]} -> Polygon from the
 * first ring, pairs swapped; NULL when it is not that shape (parse-server
 * PolygonCoder.isValidDatabaseObject). */
static json_t *polygon_json(const bson_iter_t *it)
{
    bson_iter_t c, coords, ring, pt;
    int is_polygon = 0, have_coords = 0;
    json_t *out;

    memset(&coords, 0, sizeof(coords));

    if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &c))
        return NULL;
    while (bson_iter_next(&c)) {
        const char *k = bson_iter_key(&c);
        size_t kl = bson_iter_key_len(&c);
        if (KEY_IS(k, kl, "type")) {
            uint32_t n = 0;
            const char *t = BSON_ITER_HOLDS_UTF8(&c) ? bson_iter_utf8(&c, &n) : NULL;
            is_polygon = t && n == 7 && memcmp(t, "Polygon", 7) == 0;
        } else if (KEY_IS(k, kl, "coordinates")) {
            have_coords = BSON_ITER_HOLDS_ARRAY(&c);
            coords = c;
        }
    }
    if (!is_polygon || !have_coords || !bson_iter_recurse(&coords, &ring) ||
        !bson_iter_next(&ring) || !BSON_ITER_HOLDS_ARRAY(&ring) || !bson_iter_recurse(&ring, &pt))
        return NULL;
    out = must(json_array());
    while (bson_iter_next(&pt)) {
        json_t *g = geopoint_json(&pt), *pair;
        if (g == NULL) {
            json_decref(out);
            return NULL;
        }
        pair = must(json_array());
        json_array_append(pair, json_object_get(g, "latitude"));
        json_array_append(pair, json_object_get(g, "longitude"));
        json_decref(g);
        json_array_append_new(out, pair);
    }
    return typed2("Polygon", "coordinates", out, NULL, NULL);
}

static json_t *conv_typed(const bson_iter_t *it, lq_field_type t, const lq_parsedoc_opts *opts)
{
    json_t *v = NULL;

    switch (t) {
    case LQ_FT_FILE:
        if (BSON_ITER_HOLDS_UTF8(it)) {
            uint32_t n;
            const char *s = bson_iter_utf8(it, &n);
            v = file_json(s, n, opts);
        }
        break;
    case LQ_FT_GEOPOINT:
        v = geopoint_json(it);
        break;
    case LQ_FT_POLYGON:
        v = polygon_json(it);
        break;
    case LQ_FT_BYTES:
        if (BSON_ITER_HOLDS_UTF8(it)) {
            uint32_t n;
            const char *s = bson_iter_utf8(it, &n);
            if (is_base64(s, n))
                v = typed2("Bytes", "base64", must(json_stringn_nocheck(s, n)), NULL, NULL);
        }
        break;
    default:
        break;
    }
    return v ? v : conv_value(it, 0);
}

/* ------------------------------------------------------------------------ */
/* Top level: objectId, pointers, ACL, the document                          */
/* ------------------------------------------------------------------------ */

/* "" + _id: string as is, ObjectId as 24 hex, numbers in JS form, anything
 * else as the compact JSON text of its converted value. */
static json_t *id_json(const bson_iter_t *it)
{
    char tmp[64];
    lq_buf b;
    json_t *v;

    switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8:
    case BSON_TYPE_OID:
    case BSON_TYPE_DECIMAL128:
        return conv_value(it, 0);
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        snprintf(tmp, sizeof(tmp), "%" PRId64, bson_iter_as_int64(it));
        return must(json_string_nocheck(tmp));
    case BSON_TYPE_DOUBLE: {
        double d = bson_iter_double(it);
        if (isnan(d))
            return must(json_string_nocheck("NaN"));
        if (isinf(d))
            return must(json_string_nocheck(d > 0 ? "Infinity" : "-Infinity"));
        break;
    }
    default:
        break;
    }
    v = conv_value(it, 0);
    lq_buf_init(&b);
    if (json_is_string(v))
        lq_buf_append(&b, json_string_value(v), json_string_length(v));
    else
        lq_buf_json(&b, v);
    json_decref(v);
    v = mkstr(b.data ? b.data : "", b.len);
    lq_buf_release(&b);
    return v;
}

/* ^_?[A-Za-z][A-Za-z0-9_]*$, at most 128 bytes (Parse class names, system
 * classes included). */
static int class_name_ok(const char *s, size_t n)
{
    size_t i = 0;

    if (n == 0 || n > 128)
        return 0;
    if (s[0] == '_')
        i = 1;
    if (i >= n || !((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z')))
        return 0;
    for (i++; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return 0;
    }
    return 1;
}

/* _p_<f>: f is k[3..kl). */
static void conv_pointer(json_t *out, const char *k, size_t kl, const bson_iter_t *it,
                         const lq_class_schema *cls)
{
    const char *f = k + 3, *s, *dollar;
    size_t fl = kl - 3;
    uint32_t n;

    if (fl == 0 || !BSON_ITER_HOLDS_UTF8(it)) /* null: omitted; other types: dropped */
        return;
    if (cls) {
        const field *fe = find_field(cls, f, fl);
        if (fe == NULL || fe->type != LQ_FT_POINTER)
            return;
    }
    s = bson_iter_utf8(it, &n);
    dollar = memchr(s, '$', n);
    if (dollar == NULL || dollar == s)
        return;
    if (cls == NULL && !class_name_ok(s, (size_t)(dollar - s)))
        return;
    set_key(out, f, fl,
            typed2("Pointer", "className", mkstr(s, (size_t)(dollar - s)), "objectId",
                   mkstr(dollar + 1, n - (size_t)(dollar - s) - 1)));
}

static void acl_add(json_t *acl, const char *who, size_t n, const char *perm)
{
    json_t *e;

    if (!utf8_valid(who, n) || memchr(who, '\0', n))
        return;
    e = json_object_getn(acl, who, n);
    if (e == NULL) {
        e = must(json_object());
        json_object_setn_new_nocheck(acl, who, n, e);
    }
    json_object_set_new_nocheck(e, perm, json_true());
}

/* Entries of _rperm/_wperm: an array's string elements (others ignored); a
 * lone string counts as a one-element array (what Mongo's $in matches). */
static void acl_list(json_t *acl, const bson_iter_t *it, const char *perm)
{
    bson_iter_t c;
    uint32_t n;
    const char *s;

    if (BSON_ITER_HOLDS_UTF8(it)) {
        s = bson_iter_utf8(it, &n);
        acl_add(acl, s, n, perm);
        return;
    }
    if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &c))
        return;
    while (bson_iter_next(&c)) {
        if (BSON_ITER_HOLDS_UTF8(&c)) {
            s = bson_iter_utf8(&c, &n);
            acl_add(acl, s, n, perm);
        }
    }
}

static int present(const bson_iter_t *it)
{
    bson_type_t t = bson_iter_type(it);
    return t != BSON_TYPE_NULL && t != BSON_TYPE_UNDEFINED;
}

/* createdAt/updatedAt: BSON Date -> ISO string, string as is, else nothing.
 * Returns 1 when a value was set. */
static int set_timestamp(json_t *out, const char *name, const bson_iter_t *it)
{
    if (BSON_ITER_HOLDS_DATE_TIME(it)) {
        json_object_set_new_nocheck(out, name, iso_json(bson_iter_date_time(it)));
        return 1;
    }
    if (BSON_ITER_HOLDS_UTF8(it)) {
        json_object_set_new_nocheck(out, name, conv_value(it, 0));
        return 1;
    }
    return 0;
}

json_t *lq_parsedoc_to_rest(const bson_t *doc, const char *class_name, const lq_class_schema *cls,
                            const lq_parsedoc_opts *opts, lq_error *err)
{
    bson_iter_t it, rperm, wperm;
    int have_r = 0, have_w = 0, have_created = 0, have_updated = 0;
    json_t *out;

    memset(&rperm, 0, sizeof(rperm));
    memset(&wperm, 0, sizeof(wperm));

    if (doc == NULL || !bson_iter_init_find(&it, doc, "_id")) {
        lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "document has no _id");
        return NULL;
    }
    out = must(json_object());
    json_object_set_new_nocheck(out, "objectId", id_json(&it));
    if (class_name)
        json_object_set_new_nocheck(out, "className", mkstr(class_name, strlen(class_name)));

    bson_iter_init(&it, doc);
    while (bson_iter_next(&it)) {
        const char *k = bson_iter_key(&it);
        size_t kl = bson_iter_key_len(&it);
        const field *fe;
        json_t *v;

        if (k[0] == '_') {
            if (kl >= 3 && k[1] == 'p' && k[2] == '_') {
                conv_pointer(out, k, kl, &it, cls);
            } else if (KEY_IS(k, kl, "_created_at")) {
                have_created |= set_timestamp(out, "createdAt", &it);
            } else if (KEY_IS(k, kl, "_updated_at")) {
                have_updated |= set_timestamp(out, "updatedAt", &it);
            } else if (KEY_IS(k, kl, "_rperm")) {
                rperm = it;
                have_r = present(&it);
            } else if (KEY_IS(k, kl, "_wperm")) {
                wperm = it;
                have_w = present(&it);
            } else if (KEY_IS(k, kl, "_expiresAt") && BSON_ITER_HOLDS_DATE_TIME(&it)) {
                json_object_set_new_nocheck(out, "expiresAt", date_json(bson_iter_date_time(&it)));
            }
            continue; /* _id handled above; every other '_' key is internal */
        }
        switch (kl) {
        case 3:
            if (memcmp(k, "ACL", 3) == 0) /* computed from _rperm/_wperm only */
                continue;
            break;
        case 8:
            if (memcmp(k, "authData", 8) == 0 || memcmp(k, "objectId", 8) == 0)
                continue;
            break;
        case 9:
            if (memcmp(k, "createdAt", 9) == 0) {
                if (!have_created)
                    set_timestamp(out, "createdAt", &it);
                continue;
            }
            if (memcmp(k, "updatedAt", 9) == 0) {
                if (!have_updated)
                    set_timestamp(out, "updatedAt", &it);
                continue;
            }
            if (memcmp(k, "className", 9) == 0)
                continue;
            break;
        case 12:
            if (memcmp(k, "sessionToken", 12) == 0)
                continue;
            break;
        default:
            break;
        }
        fe = find_field(cls, k, kl);
        if (fe && (fe->type == LQ_FT_FILE || fe->type == LQ_FT_GEOPOINT ||
                   fe->type == LQ_FT_POLYGON || fe->type == LQ_FT_BYTES))
            v = conv_typed(&it, fe->type, opts);
        else
            v = conv_value(&it, 0);
        maybe_add_url(v, opts);
        set_key(out, k, kl, v);
    }

    if (cls) {
        for (size_t i = 0; i < cls->nrels; i++) {
            const field *r = cls->rels[i];
            set_key(
                out, r->name, r->name_len,
                typed2("Relation", "className", mkstr(r->target, strlen(r->target)), NULL, NULL));
        }
    }

    if (have_r || have_w) {
        json_t *acl = must(json_object());
        if (have_r)
            acl_list(acl, &rperm, "read");
        else
            acl_add(acl, "*", 1, "read");
        if (have_w)
            acl_list(acl, &wperm, "write");
        else
            acl_add(acl, "*", 1, "write");
        json_object_set_new_nocheck(out, "ACL", acl);
    }
    return out;
}
