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
 * lq_parsedoc_write_rest (at the end) is the same conversion written as text
 * straight from the BSON; the rules it shares with to_rest (key kinds,
 * pointers, ACL entries, GeoPoint/Polygon shapes, base64, url encoding, ISO
 * dates, odd _id types) are single functions used by both.
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

/* Standard base64 (with '=' padding) of data[0..n) into out, which needs
 * (n + 2) / 3 * 4 bytes. Returns that length. */
static size_t b64_encode(const uint8_t *data, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *o = out;
    size_t i = 0;

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
    return (size_t)(o - out);
}

static json_t *bytes_json(const uint8_t *data, size_t n)
{
    char small[256], *buf;
    size_t olen = (n + 2) / 3 * 4;
    json_t *s;

    buf = olen <= sizeof(small) ? small : lq_xmalloc(olen);
    b64_encode(data, n, buf);
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

/* Appends encodeURIComponent(name) (raw, no JSON quoting: the result is
 * plain ASCII) to b. name must be valid UTF-8. */
static void url_encode(lq_buf *b, const char *name, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";

    lq_buf_reserve(b, n * 3);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (url_unreserved(c)) {
            b->data[b->len++] = (char)c;
        } else {
            b->data[b->len++] = '%';
            b->data[b->len++] = hex[c >> 4];
            b->data[b->len++] = hex[c & 15];
        }
    }
    b->data[b->len] = '\0';
}

/* prefix + encodeURIComponent(name); name must be valid UTF-8. New reference. */
static json_t *file_url(const char *prefix, const char *name, size_t n)
{
    lq_buf b;
    json_t *v;

    lq_buf_init(&b);
    lq_buf_puts(&b, prefix);
    url_encode(&b, name, n);
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
    if (json_is_string(t) && json_string_length(t) == 4 &&
        memcmp(json_string_value(t), "File", 4) == 0 && json_is_string(nm))
        json_object_set_new_nocheck(
            v, "url",
            file_url(opts->files_url_prefix, json_string_value(nm), json_string_length(nm)));
}

/* [lng, lat]: a 2-element array of numbers; *lng and *lat get the elements. */
static int geopoint_parts(const bson_iter_t *it, bson_iter_t *lng, bson_iter_t *lat)
{
    bson_iter_t c;

    if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &c) || !bson_iter_next(&c) ||
        !is_num(&c))
        return 0;
    *lng = c;
    if (!bson_iter_next(&c) || !is_num(&c))
        return 0;
    *lat = c;
    return !bson_iter_next(&c);
}

/* [lng, lat] -> GeoPoint, or NULL when it is not a 2-element numeric array. */
static json_t *geopoint_json(const bson_iter_t *it)
{
    bson_iter_t a0, a1;

    if (!geopoint_parts(it, &a0, &a1))
        return NULL;
    return typed2("GeoPoint", "latitude", num_json(&a1), "longitude", num_json(&a0));
}

/* GeoJSON {type:"Polygon", coordinates:[[[lng,lat],…],…]}: *pt gets an
 * iterator over the first ring's points (before the first). 0 when it is not
 * that shape (the points themselves are not checked here). */
static int polygon_ring(const bson_iter_t *it, bson_iter_t *pt)
{
    bson_iter_t c, coords, ring;
    int is_polygon = 0, have_coords = 0;

    memset(&coords, 0, sizeof(coords));

    if (!BSON_ITER_HOLDS_DOCUMENT(it) || !bson_iter_recurse(it, &c))
        return 0;
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
    return is_polygon && have_coords && bson_iter_recurse(&coords, &ring) &&
           bson_iter_next(&ring) && BSON_ITER_HOLDS_ARRAY(&ring) && bson_iter_recurse(&ring, pt);
}

/* Polygon from the first ring, pairs swapped; NULL when it is not that shape
 * or a point is not [lng, lat] (parse-server PolygonCoder.isValidDatabaseObject). */
static json_t *polygon_json(const bson_iter_t *it)
{
    bson_iter_t pt;
    json_t *out;

    if (!polygon_ring(it, &pt))
        return NULL;
    out = must(json_array());
    while (bson_iter_next(&pt)) {
        bson_iter_t a0, a1;
        json_t *pair;
        if (!geopoint_parts(&pt, &a0, &a1)) {
            json_decref(out);
            return NULL;
        }
        pair = must(json_array());
        json_array_append_new(pair, num_json(&a1));
        json_array_append_new(pair, num_json(&a0));
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

/* _p_<f> with value "Cls$id": the parts of the pointer, borrowed from the
 * document (f is k[3..kl)). 0 when it is dropped (see parsedoc.h). */
typedef struct ptr_parts {
    const char *f, *cls, *id;
    size_t fl, cls_len, id_len;
} ptr_parts;

static int pointer_parts(const char *k, size_t kl, const bson_iter_t *it,
                         const lq_class_schema *cls, ptr_parts *p)
{
    const char *s, *dollar;
    uint32_t n;

    p->f = k + 3;
    p->fl = kl - 3;
    if (p->fl == 0 || !BSON_ITER_HOLDS_UTF8(it)) /* null: omitted; other types: dropped */
        return 0;
    if (cls) {
        const field *fe = find_field(cls, p->f, p->fl);
        if (fe == NULL || fe->type != LQ_FT_POINTER)
            return 0;
    }
    s = bson_iter_utf8(it, &n);
    dollar = memchr(s, '$', n);
    if (dollar == NULL || dollar == s)
        return 0;
    if (cls == NULL && !class_name_ok(s, (size_t)(dollar - s)))
        return 0;
    p->cls = s;
    p->cls_len = (size_t)(dollar - s);
    p->id = dollar + 1;
    p->id_len = n - p->cls_len - 1;
    return 1;
}

/* One ACL entry: who gets read (write 0) or write (write 1). */
typedef void (*acl_fn)(void *ctx, const char *who, size_t n, int write);

/* Entries of _rperm/_wperm: an array's string elements (others ignored); a
 * lone string counts as a one-element array (what Mongo's $in matches).
 * Entries that are not valid UTF-8 or hold a NUL are skipped. */
static void acl_each(const bson_iter_t *it, int write, acl_fn fn, void *ctx)
{
    bson_iter_t c;
    uint32_t n;
    const char *s;

    if (BSON_ITER_HOLDS_UTF8(it)) {
        s = bson_iter_utf8(it, &n);
        if (utf8_valid(s, n) && !memchr(s, '\0', n))
            fn(ctx, s, n, write);
        return;
    }
    if (!BSON_ITER_HOLDS_ARRAY(it) || !bson_iter_recurse(it, &c))
        return;
    while (bson_iter_next(&c)) {
        if (BSON_ITER_HOLDS_UTF8(&c)) {
            s = bson_iter_utf8(&c, &n);
            if (utf8_valid(s, n) && !memchr(s, '\0', n))
                fn(ctx, s, n, write);
        }
    }
}

/* The ACL rules (parsedoc.h): entries in the order they are first named,
 * each with read before write. Called only when have_r || have_w. */
static void acl_build(acl_fn fn, void *ctx, int have_r, const bson_iter_t *rperm, int have_w,
                      const bson_iter_t *wperm)
{
    if (have_r)
        acl_each(rperm, 0, fn, ctx);
    else
        fn(ctx, "*", 1, 0);
    if (have_w)
        acl_each(wperm, 1, fn, ctx);
    else
        fn(ctx, "*", 1, 1);
}

static void acl_json_add(void *ctx, const char *who, size_t n, int write)
{
    json_t *acl = ctx, *e = json_object_getn(acl, who, n);

    if (e == NULL) {
        e = must(json_object());
        json_object_setn_new_nocheck(acl, who, n, e);
    }
    json_object_set_new_nocheck(e, write ? "write" : "read", json_true());
}

static json_t *acl_json(int have_r, const bson_iter_t *rperm, int have_w, const bson_iter_t *wperm)
{
    json_t *acl = must(json_object());
    acl_build(acl_json_add, acl, have_r, rperm, have_w, wperm);
    return acl;
}

static int present(const bson_iter_t *it)
{
    bson_type_t t = bson_iter_type(it);
    return t != BSON_TYPE_NULL && t != BSON_TYPE_UNDEFINED;
}

/* What a top-level key becomes. */
typedef enum top_kind {
    TK_FIELD,           /* a field, converted by its value (and schema type) */
    TK_DROP,            /* internal, secret or computed: left out */
    TK_POINTER,         /* _p_<f> */
    TK_CREATED,         /* _created_at */
    TK_UPDATED,         /* _updated_at */
    TK_RPERM,           /* _rperm */
    TK_WPERM,           /* _wperm */
    TK_EXPIRES,         /* _expiresAt (used when a Date) */
    TK_LEGACY_CREATED,  /* createdAt (used unless _created_at came first) */
    TK_LEGACY_UPDATED,  /* updatedAt (likewise) */
} top_kind;

static inline top_kind top_key_kind(const char *k, size_t kl)
{
    if (k[0] == '_') {
        if (kl >= 3 && k[1] == 'p' && k[2] == '_')
            return TK_POINTER;
        if (KEY_IS(k, kl, "_created_at"))
            return TK_CREATED;
        if (KEY_IS(k, kl, "_updated_at"))
            return TK_UPDATED;
        if (KEY_IS(k, kl, "_rperm"))
            return TK_RPERM;
        if (KEY_IS(k, kl, "_wperm"))
            return TK_WPERM;
        if (KEY_IS(k, kl, "_expiresAt"))
            return TK_EXPIRES;
        return TK_DROP; /* _id handled apart; every other '_' key is internal */
    }
    switch (kl) {
    case 3:
        if (memcmp(k, "ACL", 3) == 0) /* computed from _rperm/_wperm only */
            return TK_DROP;
        break;
    case 8:
        if (memcmp(k, "authData", 8) == 0 || memcmp(k, "objectId", 8) == 0)
            return TK_DROP;
        break;
    case 9:
        if (memcmp(k, "createdAt", 9) == 0)
            return TK_LEGACY_CREATED;
        if (memcmp(k, "updatedAt", 9) == 0)
            return TK_LEGACY_UPDATED;
        if (memcmp(k, "className", 9) == 0)
            return TK_DROP;
        break;
    case 12:
        if (memcmp(k, "sessionToken", 12) == 0)
            return TK_DROP;
        break;
    default:
        break;
    }
    return TK_FIELD;
}

/* A typed conversion applies to the field (else the generic one). */
static inline int special_type(const field *fe)
{
    return fe && (fe->type == LQ_FT_FILE || fe->type == LQ_FT_GEOPOINT ||
                  fe->type == LQ_FT_POLYGON || fe->type == LQ_FT_BYTES);
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

static int master_only(const lq_parsedoc_opts *opts)
{
    return opts && opts->master_only;
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
        ptr_parts pp;
        json_t *v;

        switch (top_key_kind(k, kl)) {
        case TK_FIELD:
            fe = find_field(cls, k, kl);
            v = special_type(fe) ? conv_typed(&it, fe->type, opts) : conv_value(&it, 0);
            maybe_add_url(v, opts);
            set_key(out, k, kl, v);
            break;
        case TK_POINTER:
            if (pointer_parts(k, kl, &it, cls, &pp))
                set_key(out, pp.f, pp.fl,
                        typed2("Pointer", "className", mkstr(pp.cls, pp.cls_len), "objectId",
                               mkstr(pp.id, pp.id_len)));
            break;
        case TK_CREATED:
            have_created |= set_timestamp(out, "createdAt", &it);
            break;
        case TK_UPDATED:
            have_updated |= set_timestamp(out, "updatedAt", &it);
            break;
        case TK_RPERM:
            rperm = it;
            have_r = present(&it);
            break;
        case TK_WPERM:
            wperm = it;
            have_w = present(&it);
            break;
        case TK_EXPIRES:
            if (BSON_ITER_HOLDS_DATE_TIME(&it))
                json_object_set_new_nocheck(out, "expiresAt", date_json(bson_iter_date_time(&it)));
            break;
        case TK_LEGACY_CREATED:
            if (!have_created)
                set_timestamp(out, "createdAt", &it);
            break;
        case TK_LEGACY_UPDATED:
            if (!have_updated)
                set_timestamp(out, "updatedAt", &it);
            break;
        case TK_DROP:
            break;
        }
    }

    if (cls) {
        for (size_t i = 0; i < cls->nrels; i++) {
            const field *r = cls->rels[i];
            set_key(
                out, r->name, r->name_len,
                typed2("Relation", "className", mkstr(r->target, strlen(r->target)), NULL, NULL));
        }
    }

    if (master_only(opts))
        json_object_set_new_nocheck(out, "ACL", must(json_object()));
    else if (have_r || have_w)
        json_object_set_new_nocheck(out, "ACL", acl_json(have_r, &rperm, have_w, &wperm));
    return out;
}

/* ------------------------------------------------------------------------ */
/* The direct writer: BSON -> compact JSON text                              */
/* ------------------------------------------------------------------------ */
/*
 * lq_parsedoc_write_rest mirrors lq_parsedoc_to_rest rule by rule, writing
 * text as it goes; the text is the one lq_buf_json gives for to_rest's object
 * (tests compare them byte for byte). The one thing a stream cannot do is
 * jansson's "a later key replaces an earlier one in place": duplicate BSON
 * keys, a pointer or relation named like a field, _created_at after a legacy
 * createdAt, keys that only collide once repaired to U+FFFD. So every object
 * written records its keys (borrowed pointers, a small stack array) and
 * checks them when it closes; a duplicate, or a key that needed repair, makes
 * the whole document go through to_rest + lq_buf_json instead. Real
 * documents never take that path.
 */

typedef struct wkey {
    const char *k;
    uint32_t len, h;
} wkey;

typedef struct writer {
    lq_buf *b;
    const lq_parsedoc_opts *opts;
    int redo; /* write the document with the jansson path instead */
    wkey *keys;
    size_t nkeys, cap;
    wkey local[64];
} writer;

static inline void wr_room(lq_buf *b, size_t n)
{
    if (b->len + n + 1 > b->cap)
        lq_buf_reserve(b, n);
}

static inline void wr_mem(lq_buf *b, const void *p, size_t n)
{
    wr_room(b, n);
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static inline void wr_ch(lq_buf *b, char c)
{
    wr_room(b, 1);
    b->data[b->len++] = c;
}

#define WR_LIT(b, lit) wr_mem((b), (lit), sizeof(lit) - 1)

/* The body of a JSON string (no quotes), escaped as lq_buf_json_string does,
 * bytes that do not start a valid UTF-8 sequence written as U+FFFD (as
 * mkstr repairs). Returns the number of bytes replaced. */
static size_t wr_str_body(lq_buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s, *end = p + n, *run = p;
    size_t bad = 0;

    wr_room(b, n + 2);
    while (p < end) {
        unsigned c = *p;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            p++;
            continue;
        }
        if (c >= 0x80) {
            size_t l = utf8_seq(p, end);
            if (l) {
                p += l;
                continue;
            }
            wr_mem(b, run, (size_t)(p - run));
            wr_mem(b, "\xEF\xBF\xBD", 3);
            bad++;
        } else {
            wr_mem(b, run, (size_t)(p - run));
            switch (c) {
            case '"': WR_LIT(b, "\\\""); break;
            case '\\': WR_LIT(b, "\\\\"); break;
            case '\b': WR_LIT(b, "\\b"); break;
            case '\f': WR_LIT(b, "\\f"); break;
            case '\n': WR_LIT(b, "\\n"); break;
            case '\r': WR_LIT(b, "\\r"); break;
            case '\t': WR_LIT(b, "\\t"); break;
            default: {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                wr_mem(b, u, 6);
            }
            }
        }
        run = ++p;
    }
    wr_mem(b, run, (size_t)(p - run));
    return bad;
}

static inline void wr_str(lq_buf *b, const char *s, size_t n)
{
    wr_ch(b, '"');
    wr_str_body(b, s, n);
    wr_ch(b, '"');
}

static void wr_i64(lq_buf *b, int64_t v)
{
    char tmp[24], *p = tmp + sizeof(tmp);
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;

    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    wr_mem(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* lq_buf_json_number's text, without its snprintf for integral values. */
static void wr_double(lq_buf *b, double d)
{
    if (!isfinite(d))
        WR_LIT(b, "null");
    else if (d == floor(d) && fabs(d) < 9007199254740992.0)
        wr_i64(b, (int64_t)d); /* -0.0 -> "0", as lq_buf_json_number */
    else
        lq_buf_json_number(b, d);
}

/* num_json's value. */
static void wr_num(lq_buf *b, const bson_iter_t *it)
{
    switch (bson_iter_type(it)) {
    case BSON_TYPE_INT32:
        wr_i64(b, bson_iter_int32(it));
        break;
    case BSON_TYPE_INT64:
        wr_i64(b, bson_iter_int64(it));
        break;
    case BSON_TYPE_DOUBLE:
        wr_double(b, bson_iter_double(it));
        break;
    default:
        WR_LIT(b, "null");
    }
}

static void wr_iso_str(lq_buf *b, int64_t ms)
{
    char iso[32];
    lq_parsedoc_iso(ms, iso);
    wr_ch(b, '"');
    wr_mem(b, iso, strlen(iso));
    wr_ch(b, '"');
}

static void wr_date(lq_buf *b, int64_t ms)
{
    WR_LIT(b, "{\"__type\":\"Date\",\"iso\":");
    wr_iso_str(b, ms);
    wr_ch(b, '}');
}

static void wr_bytes(lq_buf *b, const uint8_t *data, size_t n)
{
    size_t olen = (n + 2) / 3 * 4;

    WR_LIT(b, "{\"__type\":\"Bytes\",\"base64\":\"");
    wr_room(b, olen + 2);
    b->len += b64_encode(data, n, b->data + b->len);
    WR_LIT(b, "\"}");
}

/* ---- keys and duplicates ---- */

static void key_push(writer *w, const char *k, size_t kl)
{
    uint32_t h = 2166136261u;

    for (size_t i = 0; i < kl; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    if (w->nkeys == w->cap) {
        size_t cap = w->cap * 2;
        if (w->keys == w->local) {
            w->keys = lq_xmalloc(cap * sizeof(*w->keys));
            memcpy(w->keys, w->local, sizeof(w->local));
        } else {
            w->keys = lq_xrealloc(w->keys, cap * sizeof(*w->keys));
        }
        w->cap = cap;
    }
    w->keys[w->nkeys].k = k;
    w->keys[w->nkeys].len = (uint32_t)kl;
    w->keys[w->nkeys].h = h;
    w->nkeys++;
}

static int wkey_cmp(const void *pa, const void *pb)
{
    const wkey *a = pa, *b = pb;

    if (a->h != b->h)
        return a->h < b->h ? -1 : 1;
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return memcmp(a->k, b->k, a->len);
}

/* Closes an object whose keys start at mark: any two equal -> redo. */
static void keys_close(writer *w, size_t mark)
{
    wkey *a = w->keys + mark;
    size_t n = w->nkeys - mark;

    if (n <= 24) {
        for (size_t i = 1; i < n; i++)
            for (size_t j = 0; j < i; j++)
                if (a[i].h == a[j].h && wkey_cmp(&a[i], &a[j]) == 0)
                    w->redo = 1;
    } else {
        qsort(a, n, sizeof(*a), wkey_cmp);
        for (size_t i = 1; i < n; i++)
            if (wkey_cmp(&a[i - 1], &a[i]) == 0)
                w->redo = 1;
    }
    w->nkeys = mark;
}

/* ,"key": (the comma unless first). k must stay valid until the object closes. */
static void wr_key(writer *w, int *first, const char *k, size_t kl)
{
    if (!*first)
        wr_ch(w->b, ',');
    *first = 0;
    wr_ch(w->b, '"');
    if (wr_str_body(w->b, k, kl)) /* repaired keys may collide: leave them to jansson */
        w->redo = 1;
    WR_LIT(w->b, "\":");
    key_push(w, k, kl);
}

#define WR_KEY_LIT(w, first, lit) wr_key((w), (first), (lit), sizeof(lit) - 1)

/* ---- generic values (conv_value) ---- */

static void wr_value(writer *w, const bson_iter_t *it, int depth);

/* The last __type of the document at it is the string "Date" (conv_doc's type_date). */
static int doc_type_is_date(const bson_iter_t *parent)
{
    bson_iter_t c;
    int type_date = 0;

    if (!bson_iter_recurse(parent, &c))
        return 0;
    while (bson_iter_next(&c)) {
        if (KEY_IS(bson_iter_key(&c), bson_iter_key_len(&c), "__type")) {
            uint32_t n = 0;
            const char *t = BSON_ITER_HOLDS_UTF8(&c) ? bson_iter_utf8(&c, &n) : NULL;
            type_date = t && n == 4 && memcmp(t, "Date", 4) == 0;
        }
    }
    return type_date;
}

/* The value converts to the string "File" (maybe_add_url's __type test). */
static int iter_is_file_str(const bson_iter_t *it)
{
    uint32_t n = 0, sl = 0;
    const uint8_t *scope = NULL;
    const char *s = NULL;

    switch (bson_iter_type(it)) {
    case BSON_TYPE_UTF8: s = bson_iter_utf8(it, &n); break;
    case BSON_TYPE_SYMBOL: s = bson_iter_symbol(it, &n); break;
    case BSON_TYPE_CODE: s = bson_iter_code(it, &n); break;
    case BSON_TYPE_CODEWSCOPE: s = bson_iter_codewscope(it, &n, &sl, &scope); break;
    default: return 0; /* other string results (ObjectId, Decimal128, Regex) are never "File" */
    }
    return s && n == 4 && memcmp(s, "File", 4) == 0;
}

/* ,"url":"<prefix><encoded name>" for a name that is valid UTF-8 or not. */
static void wr_url(lq_buf *b, const char *prefix, const char *name, size_t n)
{
    WR_LIT(b, ",\"url\":\"");
    wr_str_body(b, prefix, strlen(prefix));
    if (utf8_valid(name, n)) {
        url_encode(b, name, n);
    } else {
        size_t fl;
        char *fixed = utf8_repair(name, n, &fl);
        url_encode(b, fixed, fl);
        free(fixed);
    }
    wr_ch(b, '"');
}

/* conv_doc; top: a top-level field's value, which gets maybe_add_url. */
static void wr_doc(writer *w, const bson_iter_t *parent, int depth, int top)
{
    lq_buf *b = w->b;
    bson_iter_t c, type_it, name_it;
    int first = 1, type_date = -1, have_type = 0, have_name = 0, have_url = 0;
    size_t mark = w->nkeys;

    wr_ch(b, '{');
    if (bson_iter_recurse(parent, &c)) {
        while (bson_iter_next(&c) && !w->redo) {
            const char *k = bson_iter_key(&c);
            size_t kl = bson_iter_key_len(&c);

            wr_key(w, &first, k, kl);
            if (KEY_IS(k, kl, "iso") && BSON_ITER_HOLDS_DATE_TIME(&c)) {
                /* {__type:"Date", iso:<BSON Date>}: a string under a Date, else a Date
                 * (a second "iso" is a duplicate: redo) */
                if (type_date < 0)
                    type_date = doc_type_is_date(parent);
                if (type_date)
                    wr_iso_str(b, bson_iter_date_time(&c));
                else
                    wr_date(b, bson_iter_date_time(&c));
            } else {
                wr_value(w, &c, depth + 1);
            }
            if (top) {
                if (KEY_IS(k, kl, "__type")) {
                    type_it = c;
                    have_type = 1;
                } else if (KEY_IS(k, kl, "name")) {
                    name_it = c;
                    have_name = 1;
                } else if (KEY_IS(k, kl, "url")) {
                    have_url = 1;
                }
            }
        }
    }
    if (have_type && have_name && !have_url && !w->redo && iter_is_file_str(&type_it)) {
        /* a stored REST File without url (rare): the name as conv_value gives it */
        json_t *nm = conv_value(&name_it, depth + 1);
        if (json_is_string(nm))
            wr_url(b, w->opts->files_url_prefix, json_string_value(nm), json_string_length(nm));
        json_decref(nm);
    }
    wr_ch(b, '}');
    keys_close(w, mark);
}

static void wr_array(writer *w, const bson_iter_t *parent, int depth)
{
    bson_iter_t c;
    int first = 1;

    wr_ch(w->b, '[');
    if (bson_iter_recurse(parent, &c)) {
        while (bson_iter_next(&c) && !w->redo) {
            if (!first)
                wr_ch(w->b, ',');
            first = 0;
            wr_value(w, &c, depth + 1);
        }
    }
    wr_ch(w->b, ']');
}

static void wr_value(writer *w, const bson_iter_t *it, int depth)
{
    lq_buf *b = w->b;

    switch (bson_iter_type(it)) {
    case BSON_TYPE_DOUBLE:
    case BSON_TYPE_INT32:
    case BSON_TYPE_INT64:
        wr_num(b, it);
        break;
    case BSON_TYPE_UTF8: {
        uint32_t n = 0;
        const char *s = bson_iter_utf8(it, &n);
        wr_str(b, s ? s : "", s ? n : 0);
        break;
    }
    case BSON_TYPE_SYMBOL: {
        uint32_t n = 0;
        const char *s = bson_iter_symbol(it, &n);
        wr_str(b, s ? s : "", s ? n : 0);
        break;
    }
    case BSON_TYPE_DOCUMENT:
        if (depth >= LQ_PARSEDOC_MAX_DEPTH)
            WR_LIT(b, "null");
        else
            wr_doc(w, it, depth, 0);
        break;
    case BSON_TYPE_ARRAY:
        if (depth >= LQ_PARSEDOC_MAX_DEPTH)
            WR_LIT(b, "null");
        else
            wr_array(w, it, depth);
        break;
    case BSON_TYPE_BINARY: {
        bson_subtype_t st;
        uint32_t n = 0;
        const uint8_t *data = NULL;
        bson_iter_binary(it, &st, &n, &data);
        wr_bytes(b, data ? data : (const uint8_t *)"", data ? n : 0);
        break;
    }
    case BSON_TYPE_OID: {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(it), hex);
        wr_ch(b, '"');
        wr_mem(b, hex, 24);
        wr_ch(b, '"');
        break;
    }
    case BSON_TYPE_BOOL:
        if (bson_iter_bool(it))
            WR_LIT(b, "true");
        else
            WR_LIT(b, "false");
        break;
    case BSON_TYPE_DATE_TIME:
        wr_date(b, bson_iter_date_time(it));
        break;
    case BSON_TYPE_DECIMAL128: {
        bson_decimal128_t dec;
        char buf[BSON_DECIMAL128_STRING];
        if (!bson_iter_decimal128(it, &dec)) {
            WR_LIT(b, "null");
            break;
        }
        bson_decimal128_to_string(&dec, buf);
        wr_str(b, buf, strlen(buf));
        break;
    }
    case BSON_TYPE_TIMESTAMP: {
        uint32_t t, i;
        bson_iter_timestamp(it, &t, &i);
        if (t <= INT32_MAX)
            wr_i64(b, (int64_t)(((uint64_t)t << 32) | i));
        else
            wr_double(b, (double)t * 4294967296.0 + (double)i);
        break;
    }
    case BSON_TYPE_REGEX: {
        const char *opts = NULL;
        const char *pat = bson_iter_regex(it, &opts);
        /* repairing the parts is repairing the whole: '/' never continues a sequence */
        WR_LIT(b, "\"/");
        wr_str_body(b, pat ? pat : "", pat ? strlen(pat) : 0);
        wr_ch(b, '/');
        wr_str_body(b, opts ? opts : "", opts ? strlen(opts) : 0);
        wr_ch(b, '"');
        break;
    }
    case BSON_TYPE_CODE:
    case BSON_TYPE_CODEWSCOPE: {
        uint32_t n = 0, sl = 0;
        const uint8_t *scope = NULL;
        const char *code = bson_iter_type(it) == BSON_TYPE_CODE
                               ? bson_iter_code(it, &n)
                               : bson_iter_codewscope(it, &n, &sl, &scope);
        wr_str(b, code ? code : "", code ? n : 0);
        break;
    }
    default:
        WR_LIT(b, "null");
    }
}

/* ---- top level ---- */

/* A top-level field's value: conv_typed, else conv_value (+ maybe_add_url). */
static void wr_field(writer *w, const bson_iter_t *it, const field *fe)
{
    lq_buf *b = w->b;
    const lq_parsedoc_opts *opts = w->opts;
    bson_iter_t a0, a1, pt;

    switch (special_type(fe) ? fe->type : LQ_FT_UNKNOWN) {
    case LQ_FT_FILE:
        if (BSON_ITER_HOLDS_UTF8(it)) {
            uint32_t n;
            const char *s = bson_iter_utf8(it, &n);
            WR_LIT(b, "{\"__type\":\"File\",\"name\":");
            wr_str(b, s, n);
            if (opts && opts->files_url_prefix)
                wr_url(b, opts->files_url_prefix, s, n);
            wr_ch(b, '}');
            return;
        }
        break;
    case LQ_FT_GEOPOINT:
        if (geopoint_parts(it, &a0, &a1)) {
            WR_LIT(b, "{\"__type\":\"GeoPoint\",\"latitude\":");
            wr_num(b, &a1);
            WR_LIT(b, ",\"longitude\":");
            wr_num(b, &a0);
            wr_ch(b, '}');
            return;
        }
        break;
    case LQ_FT_POLYGON:
        if (polygon_ring(it, &pt)) {
            bson_iter_t p = pt;
            int ok = 1, first = 1;
            while (ok && bson_iter_next(&p))
                ok = geopoint_parts(&p, &a0, &a1);
            if (!ok)
                break;
            WR_LIT(b, "{\"__type\":\"Polygon\",\"coordinates\":[");
            while (bson_iter_next(&pt)) {
                geopoint_parts(&pt, &a0, &a1);
                if (!first)
                    wr_ch(b, ',');
                first = 0;
                wr_ch(b, '[');
                wr_num(b, &a1);
                wr_ch(b, ',');
                wr_num(b, &a0);
                wr_ch(b, ']');
            }
            WR_LIT(b, "]}");
            return;
        }
        break;
    case LQ_FT_BYTES:
        if (BSON_ITER_HOLDS_UTF8(it)) {
            uint32_t n;
            const char *s = bson_iter_utf8(it, &n);
            if (is_base64(s, n)) {
                WR_LIT(b, "{\"__type\":\"Bytes\",\"base64\":");
                wr_str(b, s, n);
                wr_ch(b, '}');
                return;
            }
        }
        break;
    default:
        break;
    }
    if (BSON_ITER_HOLDS_DOCUMENT(it))
        wr_doc(w, it, 0, opts && opts->files_url_prefix);
    else
        wr_value(w, it, 0);
}

/* createdAt/updatedAt as set_timestamp: 1 when written. */
static int wr_timestamp(writer *w, int *first, const char *name, const bson_iter_t *it)
{
    if (BSON_ITER_HOLDS_DATE_TIME(it)) {
        wr_key(w, first, name, strlen(name));
        wr_iso_str(w->b, bson_iter_date_time(it));
        return 1;
    }
    if (BSON_ITER_HOLDS_UTF8(it)) {
        wr_key(w, first, name, strlen(name));
        wr_value(w, it, 0);
        return 1;
    }
    return 0;
}

/* ACL entries collected for writing; more than fit -> acl_json. */
#define ACL_MAX 32
typedef struct acl_acc {
    struct {
        const char *who;
        size_t n;
        unsigned char read, write;
    } e[ACL_MAX];
    size_t n;
    int overflow;
} acl_acc;

static void acl_acc_add(void *ctx, const char *who, size_t n, int write)
{
    acl_acc *a = ctx;
    size_t i;

    for (i = 0; i < a->n; i++)
        if (a->e[i].n == n && memcmp(a->e[i].who, who, n) == 0)
            break;
    if (i == a->n) {
        if (a->n == ACL_MAX) {
            a->overflow = 1;
            return;
        }
        a->e[i].who = who;
        a->e[i].n = n;
        a->e[i].read = a->e[i].write = 0;
        a->n++;
    }
    if (write)
        a->e[i].write = 1;
    else
        a->e[i].read = 1;
}

static void wr_acl(lq_buf *b, int have_r, const bson_iter_t *rperm, int have_w,
                   const bson_iter_t *wperm)
{
    acl_acc a;

    a.n = 0;
    a.overflow = 0;
    acl_build(acl_acc_add, &a, have_r, rperm, have_w, wperm);
    if (a.overflow) {
        json_t *acl = acl_json(have_r, rperm, have_w, wperm);
        lq_buf_json(b, acl);
        json_decref(acl);
        return;
    }
    wr_ch(b, '{');
    for (size_t i = 0; i < a.n; i++) {
        if (i)
            wr_ch(b, ',');
        wr_str(b, a.e[i].who, a.e[i].n); /* valid UTF-8, no NUL (acl_each) */
        if (a.e[i].read && a.e[i].write) /* read is always named before write */
            WR_LIT(b, ":{\"read\":true,\"write\":true}");
        else if (a.e[i].read)
            WR_LIT(b, ":{\"read\":true}");
        else
            WR_LIT(b, ":{\"write\":true}");
    }
    wr_ch(b, '}');
}

/* objectId: id_json's string; the common ids without jansson. */
static void wr_id(lq_buf *b, const bson_iter_t *it)
{
    if (BSON_ITER_HOLDS_UTF8(it)) {
        uint32_t n;
        const char *s = bson_iter_utf8(it, &n);
        wr_str(b, s, n);
    } else if (BSON_ITER_HOLDS_OID(it)) {
        char hex[25];
        bson_oid_to_string(bson_iter_oid(it), hex);
        wr_ch(b, '"');
        wr_mem(b, hex, 24);
        wr_ch(b, '"');
    } else {
        json_t *v = id_json(it);
        lq_buf_json(b, v);
        json_decref(v);
    }
}

/* The document (after its _id was found) into w; w->redo when it must be redone. */
static void write_doc(writer *w, const bson_t *doc, const bson_iter_t *id, const char *class_name,
                      const lq_class_schema *cls)
{
    lq_buf *b = w->b;
    bson_iter_t it, rperm, wperm;
    int have_r = 0, have_w = 0, have_created = 0, have_updated = 0, first = 1;

    memset(&rperm, 0, sizeof(rperm));
    memset(&wperm, 0, sizeof(wperm));

    wr_ch(b, '{');
    WR_KEY_LIT(w, &first, "objectId");
    wr_id(b, id);
    if (class_name) {
        WR_KEY_LIT(w, &first, "className");
        wr_str(b, class_name, strlen(class_name));
    }

    bson_iter_init(&it, doc);
    while (bson_iter_next(&it) && !w->redo) {
        const char *k = bson_iter_key(&it);
        size_t kl = bson_iter_key_len(&it);
        ptr_parts pp;

        switch (top_key_kind(k, kl)) {
        case TK_FIELD:
            wr_key(w, &first, k, kl);
            wr_field(w, &it, find_field(cls, k, kl));
            break;
        case TK_POINTER:
            if (pointer_parts(k, kl, &it, cls, &pp)) {
                wr_key(w, &first, pp.f, pp.fl);
                WR_LIT(b, "{\"__type\":\"Pointer\",\"className\":");
                wr_str(b, pp.cls, pp.cls_len);
                WR_LIT(b, ",\"objectId\":");
                wr_str(b, pp.id, pp.id_len);
                wr_ch(b, '}');
            }
            break;
        case TK_CREATED:
            have_created |= wr_timestamp(w, &first, "createdAt", &it);
            break;
        case TK_UPDATED:
            have_updated |= wr_timestamp(w, &first, "updatedAt", &it);
            break;
        case TK_RPERM:
            rperm = it;
            have_r = present(&it);
            break;
        case TK_WPERM:
            wperm = it;
            have_w = present(&it);
            break;
        case TK_EXPIRES:
            if (BSON_ITER_HOLDS_DATE_TIME(&it)) {
                WR_KEY_LIT(w, &first, "expiresAt");
                wr_date(b, bson_iter_date_time(&it));
            }
            break;
        case TK_LEGACY_CREATED:
            if (!have_created)
                wr_timestamp(w, &first, "createdAt", &it);
            break;
        case TK_LEGACY_UPDATED:
            if (!have_updated)
                wr_timestamp(w, &first, "updatedAt", &it);
            break;
        case TK_DROP:
            break;
        }
    }

    if (cls) {
        for (size_t i = 0; i < cls->nrels; i++) {
            const field *r = cls->rels[i];
            wr_key(w, &first, r->name, r->name_len);
            WR_LIT(b, "{\"__type\":\"Relation\",\"className\":");
            wr_str(b, r->target, strlen(r->target));
            wr_ch(b, '}');
        }
    }

    if (master_only(w->opts)) {
        WR_KEY_LIT(w, &first, "ACL");
        WR_LIT(b, "{}");
    } else if (have_r || have_w) {
        WR_KEY_LIT(w, &first, "ACL");
        wr_acl(b, have_r, &rperm, have_w, &wperm);
    }
    wr_ch(b, '}');
    keys_close(w, 0);
}

int lq_parsedoc_write_rest(lq_buf *out, const bson_t *doc, const char *class_name,
                           const lq_class_schema *cls, const lq_parsedoc_opts *opts, lq_error *err)
{
    bson_iter_t id;
    writer w;
    size_t start;

    if (out == NULL) {
        lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "no output buffer");
        return LQ_ERR_INVAL;
    }
    if (doc == NULL || !bson_iter_init_find(&id, doc, "_id")) {
        lq_error_set(err, LQ_PARSE_ERR_SCHEMA, "document has no _id");
        return LQ_ERR_INVAL;
    }
    start = out->len;
    w.b = out;
    w.opts = opts;
    w.redo = 0;
    w.keys = w.local;
    w.nkeys = 0;
    w.cap = sizeof(w.local) / sizeof(w.local[0]);

    write_doc(&w, doc, &id, class_name, cls);
    if (w.redo) { /* duplicate keys: jansson settles them (see above) */
        json_t *v = lq_parsedoc_to_rest(doc, class_name, cls, opts, NULL);
        out->len = start;
        if (v) /* always: _id was found */
            lq_buf_json(out, v);
        json_decref(v);
    }
    if (w.keys != w.local)
        free(w.keys);
    out->data[out->len] = '\0';
    return LQ_OK;
}
