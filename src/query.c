/*
 * query.c - a Parse `where` clause compiled into an immutable matcher tree.
 *
 * Design: the where clause arrives from an untrusted client once, but the
 * matcher runs for every change event against every subscription, so all the
 * work that can be done once is done at compile time: keys are split into path
 * segments, dates, pointers and geopoints are decoded into C values, regexes
 * are compiled, and every limit (depth, node count, pattern length) is checked
 * before any recursion so hostile JSON cannot exhaust the stack.  The tree
 * lives in one arena owned by the query, which makes the matcher
 * allocation-free and freeing trivial.  Matching follows MongoDB (what a
 * Parse REST find does): a path that crosses an array of objects fans out,
 * a scalar condition on an array field holds when any element satisfies it,
 * and $ne / $nin / $exists:false are negations of the whole positive test.
 */
#define PCRE2_CODE_UNIT_WIDTH 8

#include "livequery/query.h"

#include <ctype.h>
#include <math.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "livequery/json.h"
#include "livequery/metrics.h"

#define EARTH_RADIUS_KM 6371.0
#define EARTH_RADIUS_MILES 3959.0

/* ---- compiled tree ---------------------------------------------------- */

enum vkind { V_NULL, V_BOOL, V_NUM, V_STR, V_DATE, V_REL, V_PTR, V_JSON };

struct value {
    enum vkind kind;
    union {
        int b;                                              /* V_BOOL */
        struct { double d; json_int_t i; int is_int; } num; /* V_NUM */
        struct { const char *p; size_t len; } str;          /* V_STR */
        int64_t ms;                        /* V_DATE: instant; V_REL: offset from now */
        struct { const char *cls, *id; size_t cls_len, id_len; } ptr; /* V_PTR */
        json_t *json;                      /* V_JSON: owned copy, deep equality */
    } u;
};

struct geo {
    double lat, lng;
};

enum node_kind {
    N_AND, N_OR, N_NOR,          /* logical: kids */
    N_EQ,                        /* val; $ne is a negated N_EQ */
    N_IN,                        /* list; $nin is a negated N_IN */
    N_ALL, N_CONTAINED_BY,       /* list */
    N_CMP,                       /* cmp */
    N_EXISTS,                    /* $exists:false is a negated N_EXISTS */
    N_REGEX,                     /* re */
    N_SPHERE,                    /* $nearSphere, $geoWithin.$centerSphere */
    N_BOX,                       /* $within.$box */
    N_POLYGON,                   /* $geoWithin.$polygon */
    N_INTERSECTS,                /* $geoIntersects.$point, field is a Polygon */
};

enum cmp_op { CMP_LT, CMP_LTE, CMP_GT, CMP_GTE };

struct path {
    size_t n;
    const char **seg;
    long *index;  /* per segment: its value when all digits (an array index), else -1 */
    int date_str; /* createdAt / updatedAt: an ISO string is a date */
};

struct node {
    enum node_kind kind;
    int negate;
    const struct path *path; /* NULL for logical nodes */
    union {
        struct { struct node **v; size_t n; } kids;
        struct value val;
        struct { struct value *v; size_t n; } list;
        struct { enum cmp_op op; struct value val; } cmp;
        pcre2_code *re;
        struct { struct geo c; double max; } sphere; /* max in radians */
        struct { struct geo sw, ne; } box;
        struct { struct geo *pts; size_t n; } poly;
        struct geo point;
    } u;
};

/* Arena chunk; data is aligned for any object. */
struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
};

/* Resources outside the arena, released by lq_query_free. */
struct owned {
    struct owned *next;
    pcre2_code *re;
    json_t *json;
};

struct lq_query {
    const char *class_name;
    char *canonical; /* from json_dumps: free() */
    const struct node *root;
    pcre2_match_context *mctx;
    const char *hint_field, *hint_key;
    struct chunk *arena;
    struct owned *owned;
};

/* ---- limits, arena ---------------------------------------------------- */

void lq_query_limits_default(lq_query_limits *lim)
{
    lim->max_depth = 16;
    lim->max_nodes = 1024;
    lim->max_regex_len = 1024;
    lim->regex_match_limit = 100000;
    lim->regex_depth_limit = 1000;
}

struct compiler {
    const lq_query_limits *lim;
    lq_error *err;
    lq_query *q;
    long nodes;
};

static int fail(struct compiler *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct compiler *c, const char *fmt, ...)
{
    va_list ap;

    if (c->err) {
        c->err->code = LQ_PARSE_ERR_INVALID_QUERY;
        va_start(ap, fmt);
        vsnprintf(c->err->text, sizeof(c->err->text), fmt, ap);
        va_end(ap);
    }
    return -1;
}

static void *arena_alloc(struct compiler *c, size_t size)
{
    struct chunk *ch = c->q->arena;
    size_t align = sizeof(max_align_t);

    size = (size + align - 1) / align * align;
    if (size == 0)
        size = align;
    if (ch == NULL || ch->cap - ch->used < size) {
        /* small first: one query per distinct subscription, most of them one
         * equality: 384 bytes in one chunk) */
        size_t cap = ch == NULL ? 384 : ch->cap < 8192 ? ch->cap * 2 : 8192;
        if (cap < size)
            cap = size;
        ch = malloc(sizeof(*ch) + cap);
        if (ch == NULL) {
            fail(c, "out of memory compiling the query");
            return NULL;
        }
        ch->cap = cap;
        ch->used = 0;
        ch->next = c->q->arena;
        c->q->arena = ch;
    }
    void *p = (char *)ch->data + ch->used;
    ch->used += size;
    memset(p, 0, size);
    return p;
}

static char *arena_strndup(struct compiler *c, const char *s, size_t len)
{
    char *p = arena_alloc(c, len + 1);
    if (p != NULL) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static int own(struct compiler *c, pcre2_code *re, json_t *json)
{
    struct owned *o = arena_alloc(c, sizeof(*o));
    if (o == NULL) {
        pcre2_code_free(re);
        json_decref(json);
        return -1;
    }
    o->re = re;
    o->json = json;
    o->next = c->q->owned;
    c->q->owned = o;
    return 0;
}

/* Counts n more nodes against max_nodes; checked before any work on them. */
static int count(struct compiler *c, size_t n)
{
    if ((long)n > (long)c->lim->max_nodes - c->nodes) {
        LQ_METRIC_INC(limit_query_size);
        return fail(c, "query has more than %d constraints and list elements",
                    c->lim->max_nodes);
    }
    c->nodes += (long)n;
    return 0;
}

static struct node *new_node(struct compiler *c, enum node_kind kind, const struct path *path)
{
    struct node *n;

    if (count(c, 1))
        return NULL;
    n = arena_alloc(c, sizeof(*n));
    if (n != NULL) {
        n->kind = kind;
        n->path = path;
    }
    return n;
}

/* Checks the nesting depth and size of a constraint value, never recursing
 * deeper than max_depth; level is the nesting of v itself. */
static int check_value(struct compiler *c, const json_t *v, int level)
{
    size_t i;
    const char *k;
    json_t *e;

    if (!json_is_object(v) && !json_is_array(v))
        return 0;
    if (level > c->lim->max_depth) {
        LQ_METRIC_INC(limit_query_depth);
        return fail(c, "query nesting is deeper than %d", c->lim->max_depth);
    }
    if (count(c, json_is_array(v) ? json_array_size(v) : json_object_size(v)))
        return -1;
    if (json_is_array(v)) {
        json_array_foreach(v, i, e) {
            if (check_value(c, e, level + 1))
                return -1;
        }
    } else {
        json_object_foreach((json_t *)v, k, e) {
            if (check_value(c, e, level + 1))
                return -1;
        }
    }
    return 0;
}

/* ---- value decoding (shared by compile and match) ---------------------- */

static int str_is(const json_t *v, const char *s)
{
    return json_is_string(v) && strcmp(json_string_value(v), s) == 0;
}

/* A Parse type tag other than "Object" makes an object opaque to paths. */
static int is_typed(const json_t *v)
{
    const json_t *t = json_object_get(v, "__type");
    return json_is_string(t) && !str_is(t, "Object");
}

/* A Pointer (or a full Object standing for one): className and objectId. */
static int pointer_parts(const json_t *v, const json_t **cls, const json_t **id)
{
    const json_t *t;

    if (!json_is_object(v))
        return 0;
    t = json_object_get(v, "__type");
    if (!str_is(t, "Pointer") && !str_is(t, "Object"))
        return 0;
    *cls = json_object_get(v, "className");
    *id = json_object_get(v, "objectId");
    return json_is_string(*cls) && json_is_string(*id);
}

/* The instant of x: a Date object, or an ISO string in a createdAt-like field. */
static int as_date(const json_t *x, int date_str, int64_t *ms)
{
    if (date_str && json_is_string(x))
        return lq_iso_to_ms(json_string_value(x), ms) == 0;
    return lq_json_parse_date(x, ms);
}

static int geopoint(const json_t *v, struct geo *g)
{
    const json_t *lat, *lng;

    if (!json_is_object(v) || !str_is(json_object_get(v, "__type"), "GeoPoint"))
        return 0;
    lat = json_object_get(v, "latitude");
    lng = json_object_get(v, "longitude");
    if (!json_is_number(lat) || !json_is_number(lng))
        return 0;
    g->lat = lq_json_number(lat);
    g->lng = lq_json_number(lng);
    return 1;
}

/* A [a, b] pair of numbers: lat_first selects [lat, lng] over [lng, lat]. */
static int geo_pair(const json_t *v, int lat_first, struct geo *g)
{
    const json_t *a = json_array_get(v, 0), *b = json_array_get(v, 1);

    if (!json_is_array(v) || json_array_size(v) != 2 || !json_is_number(a) || !json_is_number(b))
        return 0;
    g->lat = lq_json_number(lat_first ? a : b);
    g->lng = lq_json_number(lat_first ? b : a);
    return 1;
}

static int geo_valid(const struct geo *g)
{
    return g->lat >= -90.0 && g->lat <= 90.0 && g->lng >= -180.0 && g->lng <= 180.0;
}

/* Great-circle distance in radians (haversine), as Parse.GeoPoint.radiansTo. */
static double geo_radians(const struct geo *a, const struct geo *b)
{
    double d2r = M_PI / 180.0;
    double sdlat = sin((a->lat - b->lat) * d2r / 2), sdlng = sin((a->lng - b->lng) * d2r / 2);
    double h = sdlat * sdlat + cos(a->lat * d2r) * cos(b->lat * d2r) * sdlng * sdlng;
    return 2 * asin(sqrt(h < 1.0 ? h : 1.0));
}

/* One polygon edge a-b of the ray cast (latitude as x, longitude as y, as
 * Parse.Polygon.containsPoint). Returns 1 when p lies on the edge. */
static int edge_step(struct geo a, struct geo b, struct geo p, int *inside)
{
    double cross = (b.lat - a.lat) * (p.lng - a.lng) - (b.lng - a.lng) * (p.lat - a.lat);

    if (cross == 0 && p.lat >= fmin(a.lat, b.lat) && p.lat <= fmax(a.lat, b.lat) &&
        p.lng >= fmin(a.lng, b.lng) && p.lng <= fmax(a.lng, b.lng))
        return 1;
    if ((a.lng > p.lng) != (b.lng > p.lng) &&
        p.lat < (b.lat - a.lat) * (p.lng - a.lng) / (b.lng - a.lng) + a.lat)
        *inside = !*inside;
    return 0;
}

/* ---- $relativeTime ---------------------------------------------------- */

struct token {
    const char *p;
    size_t n;
};

static int tok_is(const struct token *t, const char *s)
{
    return t->n == strlen(s) && memcmp(t->p, s, t->n) == 0;
}

static long unit_seconds(const struct token *t)
{
    static const struct { const char *name; long secs; } units[] = {
        {"yr", 31536000}, {"yrs", 31536000}, {"year", 31536000}, {"years", 31536000},
        {"wk", 604800},   {"wks", 604800},   {"week", 604800},   {"weeks", 604800},
        {"d", 86400},     {"day", 86400},    {"days", 86400},
        {"hr", 3600},     {"hrs", 3600},     {"hour", 3600},     {"hours", 3600},
        {"min", 60},      {"mins", 60},      {"minute", 60},     {"minutes", 60},
        {"sec", 1},       {"secs", 1},       {"second", 1},      {"seconds", 1},
    };
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++)
        if (tok_is(t, units[i].name))
            return units[i].secs;
    return 0;
}

static int tok_integer(const struct token *t, int64_t *out)
{
    size_t i = (t->n > 0 && (t->p[0] == '-' || t->p[0] == '+')) ? 1 : 0;
    int64_t v = 0;

    if (i == t->n)
        return 0;
    for (; i < t->n; i++) {
        if (t->p[i] < '0' || t->p[i] > '9')
            return 0;
        if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, t->p[i] - '0', &v))
            return 0;
    }
    *out = t->p[0] == '-' ? -v : v;
    return 1;
}

/* Parses Parse Server's relative time ("3 days ago", "in 1 hr 30 min", "now")
 * into an offset in ms from now. On error writes the reason into why. */
static int relative_time(const char *text, size_t len, int64_t *offset_ms, char *why, size_t cap)
{
    char *low = malloc(len + 1);
    struct token *tok = malloc((len / 2 + 1) * sizeof(*tok));
    size_t ntok = 0, first, last;
    int64_t secs = 0;
    int rc = -1, future, past, now;

    if (low == NULL || tok == NULL) {
        snprintf(why, cap, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < len; i++)
        low[i] = (char)tolower((unsigned char)text[i]);
    low[len] = '\0';
    for (size_t i = 0; i < len;) { /* split on ' ' only, dropping empty parts */
        size_t j = i;
        while (j < len && low[j] != ' ')
            j++;
        if (j > i)
            tok[ntok++] = (struct token){low + i, j - i};
        i = j + 1;
    }
    now = strlen(low) == len && strcmp(low, "now") == 0;
    future = ntok > 0 && tok_is(&tok[0], "in");
    past = ntok > 0 && tok_is(&tok[ntok - 1], "ago");
    if (!future && !past && !now) {
        snprintf(why, cap, "Time should either start with 'in' or end with 'ago'");
        goto out;
    }
    if (future && past) {
        snprintf(why, cap, "Time cannot have both 'in' and 'ago'");
        goto out;
    }
    first = future ? 1 : 0;
    last = future ? ntok : ntok - 1; /* "now" strips itself, as Parse Server does */
    if ((last - first) % 2 != 0) {
        snprintf(why, cap, "Invalid time string. Dangling unit or number.");
        goto out;
    }
    for (size_t i = first; i < last; i += 2) {
        int64_t num, part;
        long unit = unit_seconds(&tok[i + 1]);
        if (!tok_integer(&tok[i], &num)) {
            snprintf(why, cap, "'%.*s' is not an integer.", (int)(tok[i].n > 40 ? 40 : tok[i].n),
                     tok[i].p);
            goto out;
        }
        if (unit == 0) {
            snprintf(why, cap, "Invalid interval: '%.*s'",
                     (int)(tok[i + 1].n > 40 ? 40 : tok[i + 1].n), tok[i + 1].p);
            goto out;
        }
        if (__builtin_mul_overflow(num, unit, &part) || __builtin_add_overflow(secs, part, &secs)) {
            snprintf(why, cap, "Time is out of range.");
            goto out;
        }
    }
    if (__builtin_mul_overflow(secs, past ? -1000 : 1000, offset_ms)) {
        snprintf(why, cap, "Time is out of range.");
        goto out;
    }
    if (now)
        *offset_ms = 0;
    rc = 0;
out:
    free(low);
    free(tok);
    return rc;
}

/* ---- compiling -------------------------------------------------------- */

static int is_date_field(const char *key)
{
    return strcmp(key, "createdAt") == 0 || strcmp(key, "updatedAt") == 0;
}

static const char *const refused_ops[] = {
    "$inQuery", "$notInQuery", "$select", "$dontSelect", "$relatedTo", "$text", NULL,
};

static int is_refused(const char *key)
{
    for (int i = 0; refused_ops[i] != NULL; i++)
        if (strcmp(key, refused_ops[i]) == 0)
            return 1;
    return 0;
}

static const struct path *compile_path(struct compiler *c, const char *key, size_t klen)
{
    struct path *p;
    size_t nseg = 1, i, start;

    if (klen != strlen(key) || klen == 0 || key[0] == '_')
        goto bad;
    for (i = 0; i < klen; i++)
        nseg += key[i] == '.';
    if (nseg > (size_t)c->lim->max_depth) {
        LQ_METRIC_INC(limit_query_depth);
        fail(c, "field name has more than %d parts: %.64s", c->lim->max_depth, key);
        return NULL;
    }
    p = arena_alloc(c, sizeof(*p));
    if (p == NULL || (p->seg = arena_alloc(c, nseg * sizeof(*p->seg))) == NULL ||
        (p->index = arena_alloc(c, nseg * sizeof(*p->index))) == NULL)
        return NULL;
    for (i = 0, start = 0; i <= klen; i++) {
        if (i < klen && key[i] != '.')
            continue;
        if (i == start || key[start] == '$')
            goto bad;
        if ((p->seg[p->n] = arena_strndup(c, key + start, i - start)) == NULL)
            return NULL;
        p->index[p->n] = i - start <= 9 && strspn(p->seg[p->n], "0123456789") == i - start
                             ? strtol(p->seg[p->n], NULL, 10)
                             : -1;
        p->n++;
        start = i + 1;
    }
    p->date_str = nseg == 1 && is_date_field(key);
    return p;
bad:
    fail(c, "invalid key name: %.64s", key);
    return NULL;
}

static int is_operator_object(const json_t *v)
{
    void *it = json_is_object(v) ? json_object_iter((json_t *)v) : NULL;
    return it != NULL && json_object_iter_key(it)[0] == '$';
}

static int has_operator_key(const json_t *v)
{
    const char *k;
    json_t *e;

    json_object_foreach((json_t *)v, k, e) {
        if (k[0] == '$')
            return 1;
    }
    return 0;
}

static json_t *canon_value(const json_t *v);

/* Decodes an equality operand: null, boolean, number, string (a date for
 * createdAt/updatedAt), Pointer, Date, or any other object/array compared by
 * deep equality. `what` names the operator for messages. */
static int compile_value(struct compiler *c, const struct path *path, const char *what,
                         const json_t *v, struct value *out)
{
    const json_t *cls, *id, *t;

    switch (json_typeof(v)) {
    case JSON_NULL:
        out->kind = V_NULL;
        return 0;
    case JSON_TRUE:
    case JSON_FALSE:
        out->kind = V_BOOL;
        out->u.b = json_is_true(v);
        return 0;
    case JSON_INTEGER:
    case JSON_REAL:
        out->kind = V_NUM;
        out->u.num.is_int = json_is_integer(v);
        out->u.num.i = json_is_integer(v) ? json_integer_value(v) : 0;
        out->u.num.d = lq_json_number(v);
        return 0;
    case JSON_STRING:
        if (path->date_str) {
            out->kind = V_DATE;
            if (lq_iso_to_ms(json_string_value(v), &out->u.ms) != 0)
                return fail(c, "invalid date for %s in %s: %.40s", path->seg[0], what,
                            json_string_value(v));
            return 0;
        }
        out->kind = V_STR;
        out->u.str.len = json_string_length(v);
        out->u.str.p = arena_strndup(c, json_string_value(v), out->u.str.len);
        return out->u.str.p ? 0 : -1;
    case JSON_OBJECT:
        if (json_object_get(v, "$relativeTime") != NULL)
            return fail(c, "$relativeTime can only be used with the $lt, $lte, $gt, and $gte "
                           "operators");
        t = json_object_get(v, "__type");
        if (str_is(t, "Pointer") || str_is(t, "Object")) {
            if (!pointer_parts(v, &cls, &id))
                return fail(c, "invalid Pointer in %s: className and objectId must be strings",
                            what);
            out->kind = V_PTR;
            out->u.ptr.cls_len = json_string_length(cls);
            out->u.ptr.id_len = json_string_length(id);
            out->u.ptr.cls = arena_strndup(c, json_string_value(cls), out->u.ptr.cls_len);
            out->u.ptr.id = arena_strndup(c, json_string_value(id), out->u.ptr.id_len);
            return out->u.ptr.cls && out->u.ptr.id ? 0 : -1;
        }
        if (str_is(t, "Date")) {
            out->kind = V_DATE;
            if (!lq_json_parse_date(v, &out->u.ms))
                return fail(c, "invalid Date in %s", what);
            return 0;
        }
        if (has_operator_key(v))
            return fail(c, "unexpected operator in a value of %s", what);
        /* other objects compare by deep equality, like arrays */
        /* fall through */
    case JSON_ARRAY:
        out->kind = V_JSON;
        out->u.json = canon_value(v);
        if (out->u.json == NULL)
            return fail(c, "out of memory compiling the query");
        return own(c, NULL, out->u.json);
    }
    return fail(c, "invalid value in %s", what);
}

/* Operand of $lt/$lte/$gt/$gte: number, string, date or $relativeTime. */
static int compile_cmp_value(struct compiler *c, const struct path *path, const char *op,
                             const char *key, const json_t *v, struct value *out)
{
    const json_t *rel = json_object_get(v, "$relativeTime");
    char why[160];

    if (rel != NULL) {
        if (!json_is_string(rel) || json_object_size(v) != 1)
            return fail(c, "bad $relativeTime (%.64s) value. $relativeTime must be a string "
                        "and the only key",
                        key);
        out->kind = V_REL;
        if (relative_time(json_string_value(rel), json_string_length(rel), &out->u.ms, why,
                          sizeof(why)))
            return fail(c, "bad $relativeTime (%.64s) value. %s", key, why);
        return 0;
    }
    if (json_is_number(v) || json_is_string(v) || lq_json_parse_date(v, &out->u.ms))
        return compile_value(c, path, op, v, out);
    return fail(c, "%s needs a number, string, Date or $relativeTime", op);
}

static int compile_list(struct compiler *c, struct node *n, const char *op, const json_t *arr)
{
    size_t i;
    json_t *e;

    if (!json_is_array(arr))
        return fail(c, "%s must be an array", op);
    n->u.list.n = json_array_size(arr);
    n->u.list.v = arena_alloc(c, n->u.list.n * sizeof(*n->u.list.v));
    if (n->u.list.v == NULL)
        return -1;
    json_array_foreach(arr, i, e) {
        if (compile_value(c, n->path, op, e, &n->u.list.v[i]))
            return -1;
    }
    return 0;
}

static int compile_regex(struct compiler *c, struct node *n, const json_t *pattern,
                         const json_t *options)
{
    uint32_t flags = PCRE2_UTF | PCRE2_NEVER_BACKSLASH_C;
    int errcode;
    PCRE2_SIZE erroff;
    PCRE2_UCHAR msg[160];

    if (!json_is_string(pattern))
        return fail(c, "$regex must be a string");
    if (json_string_length(pattern) > c->lim->max_regex_len) {
        LQ_METRIC_INC(limit_regex);
        return fail(c, "$regex is longer than %zu bytes", c->lim->max_regex_len);
    }
    if (options != NULL && !json_is_string(options))
        return fail(c, "$options must be a string");
    for (const char *o = options ? json_string_value(options) : ""; *o; o++) {
        switch (*o) {
        case 'i': flags |= PCRE2_CASELESS; break;
        case 'm': flags |= PCRE2_MULTILINE; break;
        case 's': flags |= PCRE2_DOTALL; break;
        case 'x': flags |= PCRE2_EXTENDED; break;
        default: return fail(c, "invalid $options value: only i, m, s and x are supported");
        }
    }
    n->u.re = pcre2_compile((PCRE2_SPTR)json_string_value(pattern), json_string_length(pattern),
                            flags, &errcode, &erroff, NULL);
    if (n->u.re == NULL) {
        pcre2_get_error_message(errcode, msg, sizeof(msg));
        return fail(c, "Invalid regular expression: %s at offset %zu", (const char *)msg,
                    (size_t)erroff);
    }
    if (own(c, n->u.re, NULL))
        return -1;
    if (c->q->mctx == NULL) {
        c->q->mctx = pcre2_match_context_create(NULL);
        if (c->q->mctx == NULL)
            return fail(c, "out of memory compiling the query");
        pcre2_set_match_limit(c->q->mctx, c->lim->regex_match_limit);
        pcre2_set_depth_limit(c->q->mctx, c->lim->regex_depth_limit);
    }
    return 0;
}

static int compile_geopoint(struct compiler *c, const char *what, const json_t *v, struct geo *g)
{
    if (!geopoint(v, g))
        return fail(c, "%s needs a GeoPoint", what);
    if (!geo_valid(g))
        return fail(c, "%s: GeoPoint latitude must be in [-90, 90] and longitude in "
                       "[-180, 180]", what);
    return 0;
}

static int compile_distance(struct compiler *c, const char *what, const json_t *v, double *out)
{
    if (!json_is_number(v) || lq_json_number(v) < 0)
        return fail(c, "%s must be a number >= 0", what);
    *out = lq_json_number(v);
    return 0;
}

/* $nearSphere with at most one of the $maxDistance* modifiers from ops. */
static int compile_near(struct compiler *c, struct node *n, const json_t *ops)
{
    static const struct { const char *key; double per_radian; } mods[] = {
        {"$maxDistance", 1.0},
        {"$maxDistanceInRadians", 1.0},
        {"$maxDistanceInKilometers", EARTH_RADIUS_KM},
        {"$maxDistanceInMiles", EARTH_RADIUS_MILES},
    };
    int found = 0;

    if (compile_geopoint(c, "$nearSphere", json_object_get(ops, "$nearSphere"), &n->u.sphere.c))
        return -1;
    n->u.sphere.max = INFINITY;
    for (size_t i = 0; i < sizeof(mods) / sizeof(mods[0]); i++) {
        const json_t *v = json_object_get(ops, mods[i].key);
        double d = 0;
        if (v == NULL)
            continue;
        if (found++)
            return fail(c, "$nearSphere takes only one of $maxDistance, $maxDistanceInRadians, "
                           "$maxDistanceInKilometers, $maxDistanceInMiles");
        if (compile_distance(c, mods[i].key, v, &d))
            return -1;
        n->u.sphere.max = d / mods[i].per_radian;
    }
    return 0;
}

static int compile_box(struct compiler *c, struct node *n, const json_t *within)
{
    const json_t *box = json_object_get(within, "$box");

    if (!json_is_object(within) || json_object_size(within) != 1 || !json_is_array(box) ||
        json_array_size(box) != 2)
        return fail(c, "$within needs {\"$box\": [southwest GeoPoint, northeast GeoPoint]}");
    if (compile_geopoint(c, "$within $box", json_array_get(box, 0), &n->u.box.sw) ||
        compile_geopoint(c, "$within $box", json_array_get(box, 1), &n->u.box.ne))
        return -1;
    if (n->u.box.sw.lat > n->u.box.ne.lat || n->u.box.sw.lng > n->u.box.ne.lng)
        return fail(c, "$within $box: the first GeoPoint must be south-west of the second "
                       "(a box cannot cross the 180th meridian)");
    return 0;
}

static int compile_polygon(struct compiler *c, struct node *n, const json_t *poly)
{
    const json_t *pts = poly;
    size_t i;
    json_t *e;

    if (json_is_object(poly)) { /* Parse Polygon: coordinates are [lat, lng] */
        if (!str_is(json_object_get(poly, "__type"), "Polygon"))
            return fail(c, "$geoWithin $polygon must be a Polygon or an array of GeoPoints");
        pts = json_object_get(poly, "coordinates");
    }
    if (!json_is_array(pts) || json_array_size(pts) < 3)
        return fail(c, "$geoWithin $polygon needs at least 3 points");
    n->kind = N_POLYGON;
    n->u.poly.n = json_array_size(pts);
    n->u.poly.pts = arena_alloc(c, n->u.poly.n * sizeof(*n->u.poly.pts));
    if (n->u.poly.pts == NULL)
        return -1;
    json_array_foreach(pts, i, e) {
        struct geo *g = &n->u.poly.pts[i];
        if (!geopoint(e, g) && !geo_pair(e, 1, g))
            return fail(c, "$geoWithin $polygon: point %zu is not a GeoPoint or a [latitude, "
                           "longitude] pair", i);
        if (!geo_valid(g))
            return fail(c, "$geoWithin $polygon: point %zu is out of range", i);
    }
    return 0;
}

static int compile_geo_within(struct compiler *c, struct node *n, const json_t *arg)
{
    const json_t *poly = json_object_get(arg, "$polygon");
    const json_t *sphere = json_object_get(arg, "$centerSphere");

    if (!json_is_object(arg) || json_object_size(arg) != 1 || (poly == NULL && sphere == NULL))
        return fail(c, "$geoWithin needs exactly one of $polygon or $centerSphere");
    if (poly != NULL)
        return compile_polygon(c, n, poly);
    /* $centerSphere: [[lng, lat] or GeoPoint, radians], as Parse Server */
    n->kind = N_SPHERE;
    if (!json_is_array(sphere) || json_array_size(sphere) != 2)
        return fail(c, "$geoWithin $centerSphere needs [[longitude, latitude] or GeoPoint, "
                       "radius in radians]");
    if (!geopoint(json_array_get(sphere, 0), &n->u.sphere.c) &&
        !geo_pair(json_array_get(sphere, 0), 0, &n->u.sphere.c))
        return fail(c, "$geoWithin $centerSphere: invalid center point");
    if (!geo_valid(&n->u.sphere.c))
        return fail(c, "$geoWithin $centerSphere: center point is out of range");
    return compile_distance(c, "$geoWithin $centerSphere radius", json_array_get(sphere, 1),
                            &n->u.sphere.max);
}

/* The operators of {field: {$op: arg, ...}}; modifiers are read by their op. */
enum op {
    OP_EQ, OP_NE, OP_LT, OP_LTE, OP_GT, OP_GTE, OP_IN, OP_NIN, OP_ALL, OP_CONTAINED_BY,
    OP_EXISTS, OP_REGEX, OP_OPTIONS, OP_NEAR, OP_MAXDIST, OP_WITHIN, OP_GEO_WITHIN,
    OP_GEO_INTERSECTS, OP_UNKNOWN,
};

static enum op op_lookup(const char *key)
{
    static const struct { const char *name; enum op op; } ops[] = {
        {"$eq", OP_EQ},
        {"$ne", OP_NE},
        {"$lt", OP_LT},
        {"$lte", OP_LTE},
        {"$gt", OP_GT},
        {"$gte", OP_GTE},
        {"$in", OP_IN},
        {"$nin", OP_NIN},
        {"$all", OP_ALL},
        {"$containedBy", OP_CONTAINED_BY},
        {"$exists", OP_EXISTS},
        {"$regex", OP_REGEX},
        {"$options", OP_OPTIONS},
        {"$nearSphere", OP_NEAR},
        {"$maxDistance", OP_MAXDIST},
        {"$maxDistanceInRadians", OP_MAXDIST},
        {"$maxDistanceInKilometers", OP_MAXDIST},
        {"$maxDistanceInMiles", OP_MAXDIST},
        {"$within", OP_WITHIN},
        {"$geoWithin", OP_GEO_WITHIN},
        {"$geoIntersects", OP_GEO_INTERSECTS},
    };
    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
        if (strcmp(key, ops[i].name) == 0)
            return ops[i].op;
    return OP_UNKNOWN;
}

/* One operator of an operator object; appends its node (if any) to *out. */
static int compile_op(struct compiler *c, const struct path *path, const char *field,
                      const char *key, const json_t *arg, const json_t *ops, struct node **out)
{
    static const enum cmp_op cmps[] = {[OP_LT] = CMP_LT, [OP_LTE] = CMP_LTE, [OP_GT] = CMP_GT,
                                       [OP_GTE] = CMP_GTE};
    enum op op = op_lookup(key);
    struct node *n;

    *out = NULL;
    if (op == OP_UNKNOWN) {
        if (is_refused(key))
            return fail(c, "%s is not supported in live queries", key);
        if (strcmp(key, "$relativeTime") == 0)
            return fail(c, "$relativeTime can only be used as the value of $lt, $lte, $gt or "
                           "$gte");
        return fail(c, "unknown operator: %.64s", key);
    }
    if (op == OP_OPTIONS) {
        if (json_object_get(ops, "$regex") == NULL)
            return fail(c, "$options needs $regex");
        return 0;
    }
    if (op == OP_MAXDIST) {
        if (json_object_get(ops, "$nearSphere") == NULL)
            return fail(c, "%s needs $nearSphere", key);
        return 0;
    }
    n = new_node(c, N_EQ, path);
    if (n == NULL)
        return -1;
    *out = n;
    switch (op) {
    case OP_NE:
        n->negate = 1;
        /* fall through */
    case OP_EQ:
        return compile_value(c, path, key, arg, &n->u.val);
    case OP_LT:
    case OP_LTE:
    case OP_GT:
    case OP_GTE:
        n->kind = N_CMP;
        n->u.cmp.op = cmps[op];
        return compile_cmp_value(c, path, key, field, arg, &n->u.cmp.val);
    case OP_NIN:
        n->negate = 1;
        /* fall through */
    case OP_IN:
        n->kind = N_IN;
        return compile_list(c, n, key, arg);
    case OP_ALL:
        n->kind = N_ALL;
        return compile_list(c, n, key, arg);
    case OP_CONTAINED_BY:
        n->kind = N_CONTAINED_BY;
        return compile_list(c, n, key, arg);
    case OP_EXISTS:
        if (!json_is_boolean(arg))
            return fail(c, "$exists must be a boolean");
        n->kind = N_EXISTS;
        n->negate = json_is_false(arg);
        return 0;
    case OP_REGEX:
        n->kind = N_REGEX;
        return compile_regex(c, n, arg, json_object_get(ops, "$options"));
    case OP_NEAR:
        n->kind = N_SPHERE;
        return compile_near(c, n, ops);
    case OP_WITHIN:
        n->kind = N_BOX;
        return compile_box(c, n, arg);
    case OP_GEO_WITHIN:
        return compile_geo_within(c, n, arg);
    case OP_GEO_INTERSECTS:
        n->kind = N_INTERSECTS;
        if (!json_is_object(arg) || json_object_size(arg) != 1)
            return fail(c, "$geoIntersects needs {\"$point\": GeoPoint}");
        return compile_geopoint(c, "$geoIntersects $point", json_object_get(arg, "$point"),
                                &n->u.point);
    default:
        return fail(c, "unknown operator: %.64s", key);
    }
}

/* A growable list of nodes used while compiling one where object. */
struct nodevec {
    struct node **v;
    size_t n, cap;
};

static int push(struct compiler *c, struct nodevec *vec, struct node *n)
{
    if (vec->n == vec->cap) {
        size_t cap = vec->cap ? vec->cap * 2 : 8;
        struct node **v = realloc(vec->v, cap * sizeof(*v));
        if (v == NULL)
            return fail(c, "out of memory compiling the query");
        vec->v = v;
        vec->cap = cap;
    }
    vec->v[vec->n++] = n;
    return 0;
}

/* {field: value} or {field: {$op: arg, ...}}: appends one node per condition. */
static int compile_field(struct compiler *c, const char *key, size_t klen, const json_t *val,
                         int depth, struct nodevec *kids)
{
    const struct path *path = compile_path(c, key, klen);
    struct node *n;
    const char *op;
    json_t *arg;

    if (path == NULL)
        return -1;
    if (!is_operator_object(val)) {
        if (check_value(c, val, depth + 1))
            return -1;
        n = new_node(c, N_EQ, path);
        if (n == NULL || compile_value(c, path, "equality", val, &n->u.val))
            return -1;
        return push(c, kids, n);
    }
    json_object_foreach((json_t *)val, op, arg) {
        if (op[0] != '$')
            return fail(c, "cannot mix operators and plain keys in the value of %.64s", key);
        if (check_value(c, arg, depth + 1) || compile_op(c, path, key, op, arg, val, &n))
            return -1;
        if (n != NULL && push(c, kids, n))
            return -1;
    }
    return 0;
}

static struct node *compile_where(struct compiler *c, const json_t *where, int depth);

static struct node *compile_logical(struct compiler *c, const char *key, const json_t *arr,
                                    int depth)
{
    enum node_kind kind = key[1] == 'o' ? N_OR : key[1] == 'a' ? N_AND : N_NOR;
    struct node *n;
    size_t i;
    json_t *e;

    if (!json_is_array(arr)) {
        fail(c, "%s must be an array", key); /* Parse Server's exact text */
        return NULL;
    }
    if (json_array_size(arr) == 0) {
        fail(c, "%s must not be an empty array", key);
        return NULL;
    }
    n = new_node(c, kind, NULL);
    if (n == NULL)
        return NULL;
    n->u.kids.n = json_array_size(arr);
    n->u.kids.v = arena_alloc(c, n->u.kids.n * sizeof(*n->u.kids.v));
    if (n->u.kids.v == NULL)
        return NULL;
    json_array_foreach(arr, i, e) {
        if (!json_is_object(e)) {
            fail(c, "%s must be an array of query objects", key);
            return NULL;
        }
        n->u.kids.v[i] = compile_where(c, e, depth + 1);
        if (n->u.kids.v[i] == NULL)
            return NULL;
    }
    return n;
}

/* A where object at nesting depth `depth` (1 for the top): an AND node. */
static struct node *compile_where(struct compiler *c, const json_t *where, int depth)
{
    struct nodevec kids = {0};
    struct node *n, *and = NULL;
    const char *key;
    size_t klen;
    json_t *val;

    if (depth > c->lim->max_depth) {
        LQ_METRIC_INC(limit_query_depth);
        fail(c, "query nesting is deeper than %d", c->lim->max_depth);
        return NULL;
    }
    json_object_keylen_foreach((json_t *)where, key, klen, val) {
        if (strcmp(key, "$or") == 0 || strcmp(key, "$and") == 0 || strcmp(key, "$nor") == 0) {
            n = compile_logical(c, key, val, depth);
            if (n == NULL || push(c, &kids, n))
                goto out;
        } else if (key[0] == '$' && is_refused(key)) {
            fail(c, "%s is not supported in live queries", key);
            goto out;
        } else if (compile_field(c, key, klen, val, depth, &kids)) {
            goto out;
        }
    }
    n = new_node(c, N_AND, NULL);
    if (n == NULL || (n->u.kids.v = arena_alloc(c, (kids.n + 1) * sizeof(*kids.v))) == NULL)
        goto out;
    n->u.kids.n = kids.n;
    if (kids.n)
        memcpy(n->u.kids.v, kids.v, kids.n * sizeof(*kids.v));
    and = n;
out:
    free(kids.v);
    return and;
}

/* ---- canonical form --------------------------------------------------- */

/* A deep copy of v with integral reals as integers and -0 as 0, keeping keys
 * whole (json_deep_copy cuts them at an embedded NUL). Depth was checked. */
static json_t *canon_value(const json_t *v)
{
    json_t *out, *e;
    const char *k;
    size_t i, klen;

    switch (json_typeof(v)) {
    case JSON_REAL: {
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) <= 9007199254740992.0)
            return json_integer((json_int_t)d);
        return json_real(d);
    }
    case JSON_ARRAY:
        out = json_array();
        json_array_foreach(v, i, e) {
            if (out == NULL || json_array_append_new(out, canon_value(e)))
                goto fail;
        }
        return out;
    case JSON_OBJECT:
        out = json_object();
        json_object_keylen_foreach((json_t *)v, k, klen, e) {
            if (out == NULL || json_object_setn_new(out, k, klen, canon_value(e)))
                goto fail;
        }
        return out;
    default:
        return json_deep_copy(v);
    }
fail:
    json_decref(out);
    return NULL;
}

static char *dump(const json_t *v)
{
    return json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
}

struct sorted {
    char *text;
    json_t *v;
};

static int sorted_cmp(const void *a, const void *b)
{
    return strcmp(((const struct sorted *)a)->text, ((const struct sorted *)b)->text);
}

/* The elements of arr canonicalized by fn, sorted by their text, duplicates removed:
 * the order and multiplicity of these lists do not change what matches. */
static json_t *canon_set(const json_t *arr, json_t *(*fn)(const json_t *))
{
    size_t n = json_array_size(arr), i;
    struct sorted *s = calloc(n ? n : 1, sizeof(*s));
    json_t *out = json_array();
    int ok = s != NULL && out != NULL;

    for (i = 0; ok && i < n; i++) {
        s[i].v = fn(json_array_get(arr, i));
        s[i].text = s[i].v ? dump(s[i].v) : NULL;
        ok = s[i].text != NULL;
    }
    if (ok)
        qsort(s, n, sizeof(*s), sorted_cmp);
    for (i = 0; ok && i < n; i++)
        if (i == 0 || strcmp(s[i].text, s[i - 1].text) != 0)
            ok = json_array_append(out, s[i].v) == 0;
    for (i = 0; s != NULL && i < n; i++) {
        free(s[i].text);
        json_decref(s[i].v);
    }
    free(s);
    if (!ok) {
        json_decref(out);
        return NULL;
    }
    return out;
}

/* $options with its letters sorted and deduplicated. */
static json_t *canon_options(const json_t *v)
{
    char buf[8];
    size_t n = 0;

    for (const char *l = "imsx"; *l; l++)
        if (strchr(json_string_value(v), *l))
            buf[n++] = *l;
    buf[n] = '\0';
    return json_string(buf);
}

static json_t *canon_where(const json_t *where);

static json_t *canon_field(const json_t *val)
{
    json_t *out;
    const char *op;
    json_t *arg;

    if (!is_operator_object(val))
        return canon_value(val);
    out = json_object();
    json_object_foreach((json_t *)val, op, arg) {
        json_t *c;
        if (strcmp(op, "$in") == 0 || strcmp(op, "$nin") == 0 || strcmp(op, "$all") == 0 ||
            strcmp(op, "$containedBy") == 0)
            c = canon_set(arg, canon_value);
        else if (strcmp(op, "$options") == 0)
            c = canon_options(arg);
        else
            c = canon_value(arg);
        if (out == NULL || json_object_set_new(out, op, c)) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

static json_t *canon_where(const json_t *where)
{
    json_t *out = json_object(), *val;
    const char *key;

    json_object_foreach((json_t *)where, key, val) {
        json_t *c;
        if (strcmp(key, "$or") == 0 || strcmp(key, "$and") == 0 || strcmp(key, "$nor") == 0)
            c = canon_set(val, canon_where);
        else
            c = canon_field(val);
        if (out == NULL || json_object_set_new(out, key, c)) {
            json_decref(out);
            return NULL;
        }
    }
    return out;
}

/* ---- index keys ------------------------------------------------------- */

static int key_write(char *buf, size_t cap, const char *prefix, const char *a, size_t alen,
                     const char *b, size_t blen)
{
    size_t plen = strlen(prefix), len = plen + alen + (b ? 1 + blen : 0);

    if (buf == NULL || len + 1 > cap || len > INT32_MAX)
        return -1;
    memcpy(buf, prefix, plen);
    memcpy(buf + plen, a, alen);
    if (b != NULL) {
        buf[plen + alen] = '$';
        memcpy(buf + plen + alen + 1, b, blen);
    }
    buf[len] = '\0';
    return (int)len;
}

static int number_key(double d, char *buf, size_t cap)
{
    int n;

    if (d == 0)
        d = 0; /* -0 and 0 are equal, so they share a key */
    n = buf ? snprintf(buf, cap, "n:%.17g", d) : -1;
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

int lq_query_value_key(const json_t *v, char *buf, size_t cap)
{
    const json_t *cls, *id;

    if (v == NULL)
        return -1;
    switch (json_typeof(v)) {
    case JSON_STRING:
        return key_write(buf, cap, "s:", json_string_value(v), json_string_length(v), NULL, 0);
    case JSON_INTEGER:
    case JSON_REAL:
        return number_key(lq_json_number(v), buf, cap);
    case JSON_TRUE:
        return key_write(buf, cap, "b:1", "", 0, NULL, 0);
    case JSON_FALSE:
        return key_write(buf, cap, "b:0", "", 0, NULL, 0);
    case JSON_OBJECT:
        if (pointer_parts(v, &cls, &id))
            return key_write(buf, cap, "p:", json_string_value(cls), json_string_length(cls),
                             json_string_value(id), json_string_length(id));
        return -1;
    default:
        return -1;
    }
}

/* The index key of a compiled equality operand, in the arena; NULL if none. */
static const char *value_key(struct compiler *c, const struct value *v)
{
    size_t cap = 40;
    char *buf;

    if (v->kind == V_STR)
        cap = v->u.str.len + 3;
    else if (v->kind == V_PTR)
        cap = v->u.ptr.cls_len + v->u.ptr.id_len + 4;
    else if (v->kind != V_NUM && v->kind != V_BOOL)
        return NULL;
    buf = arena_alloc(c, cap);
    if (buf == NULL)
        return NULL;
    switch (v->kind) {
    case V_STR:
        key_write(buf, cap, "s:", v->u.str.p, v->u.str.len, NULL, 0);
        break;
    case V_PTR:
        key_write(buf, cap, "p:", v->u.ptr.cls, v->u.ptr.cls_len, v->u.ptr.id, v->u.ptr.id_len);
        break;
    case V_NUM:
        number_key(v->u.num.d, buf, cap);
        break;
    default:
        key_write(buf, cap, v->u.b ? "b:1" : "b:0", "", 0, NULL, 0);
        break;
    }
    return buf;
}

/* Picks the equality hint among the top-level conditions: objectId first,
 * then the smallest field name, so equal canonical forms get equal hints. */
static int find_hint(struct compiler *c)
{
    const struct node *best = NULL;
    const struct node *root = c->q->root;

    for (size_t i = 0; i < root->u.kids.n; i++) {
        const struct node *n = root->u.kids.v[i];
        if (n->kind != N_EQ || n->negate || n->path->n != 1)
            continue;
        enum vkind k = n->u.val.kind;
        if (k != V_STR && k != V_NUM && k != V_BOOL && k != V_PTR)
            continue;
        if (best == NULL) {
            best = n;
            continue;
        }
        int n_id = strcmp(n->path->seg[0], "objectId") == 0;
        int b_id = strcmp(best->path->seg[0], "objectId") == 0;
        if ((n_id && !b_id) || (n_id == b_id && strcmp(n->path->seg[0], best->path->seg[0]) < 0))
            best = n;
    }
    if (best == NULL)
        return 0;
    c->q->hint_field = best->path->seg[0];
    c->q->hint_key = value_key(c, &best->u.val);
    return c->q->hint_key ? 0 : -1;
}

/* ---- public compile / free --------------------------------------------- */

lq_query *lq_query_compile(const char *class_name, const json_t *where,
                           const lq_query_limits *lim, lq_error *err)
{
    lq_query_limits defaults;
    struct compiler c;
    json_t *canon;

    if (lim == NULL) {
        lq_query_limits_default(&defaults);
        lim = &defaults;
    }
    c = (struct compiler){.lim = lim, .err = err, .q = calloc(1, sizeof(lq_query))};
    if (c.q == NULL) {
        fail(&c, "out of memory compiling the query");
        return NULL;
    }
    if (!json_is_object(where)) {
        fail(&c, "where must be a JSON object");
        goto fail;
    }
    c.q->class_name = arena_strndup(&c, class_name ? class_name : "",
                                    class_name ? strlen(class_name) : 0);
    if (c.q->class_name == NULL || (c.q->root = compile_where(&c, where, 1)) == NULL ||
        find_hint(&c))
        goto fail;
    canon = canon_where(where);
    c.q->canonical = canon ? dump(canon) : NULL;
    json_decref(canon);
    if (c.q->canonical == NULL) {
        fail(&c, "out of memory compiling the query");
        goto fail;
    }
    return c.q;
fail:
    lq_query_free(c.q);
    return NULL;
}

void lq_query_free(lq_query *q)
{
    if (q == NULL)
        return;
    for (struct owned *o = q->owned; o != NULL; o = o->next) {
        pcre2_code_free(o->re);
        json_decref(o->json);
    }
    pcre2_match_context_free(q->mctx);
    free(q->canonical);
    while (q->arena != NULL) {
        struct chunk *next = q->arena->next;
        free(q->arena);
        q->arena = next;
    }
    free(q);
}

const char *lq_query_canonical(const lq_query *q)
{
    return q->canonical;
}

const char *lq_query_class(const lq_query *q)
{
    return q->class_name;
}

int lq_query_index_hint(const lq_query *q, const char **field, const char **value_key_out)
{
    if (q == NULL || q->hint_field == NULL)
        return 0;
    *field = q->hint_field;
    *value_key_out = q->hint_key;
    return 1;
}

/* ---- matching (no allocation past the first regex match per thread) ---- */

struct mctx {
    const lq_query *q;
    int64_t now_ms;
};

static int num_cmp(const json_t *x, const struct value *v)
{
    if (json_is_integer(x) && v->u.num.is_int) {
        json_int_t a = json_integer_value(x);
        return (a > v->u.num.i) - (a < v->u.num.i);
    }
    double a = lq_json_number(x);
    return (a > v->u.num.d) - (a < v->u.num.d);
}

static int str_cmp(const json_t *x, const struct value *v)
{
    size_t xl = json_string_length(x), n = xl < v->u.str.len ? xl : v->u.str.len;
    int c = memcmp(json_string_value(x), v->u.str.p, n);
    if (c != 0)
        return c < 0 ? -1 : 1;
    return (xl > v->u.str.len) - (xl < v->u.str.len);
}

static int jstr_eq(const json_t *x, const char *p, size_t len)
{
    return json_string_length(x) == len && memcmp(json_string_value(x), p, len) == 0;
}

/* x (present, not expanded if an array) equals the operand v. */
static int eq_scalar(const struct value *v, const json_t *x, int date_str)
{
    const json_t *cls, *id;
    int64_t ms;

    switch (v->kind) {
    case V_NULL:
        return json_is_null(x);
    case V_BOOL:
        return json_is_boolean(x) && json_is_true(x) == v->u.b;
    case V_NUM:
        return json_is_number(x) && num_cmp(x, v) == 0;
    case V_STR:
        return json_is_string(x) && jstr_eq(x, v->u.str.p, v->u.str.len);
    case V_DATE:
        return as_date(x, date_str, &ms) && ms == v->u.ms;
    case V_PTR:
        return pointer_parts(x, &cls, &id) && jstr_eq(cls, v->u.ptr.cls, v->u.ptr.cls_len) &&
               jstr_eq(id, v->u.ptr.id, v->u.ptr.id_len);
    case V_JSON:
        return lq_json_equal(v->u.json, x);
    default:
        return 0;
    }
}

/* Equality on a field value (NULL when missing): null matches missing, and a
 * non-array operand also matches an array field holding an equal element. */
static int eq_value(const struct value *v, const json_t *x, int date_str)
{
    size_t i;
    const json_t *e;

    if (x == NULL)
        return v->kind == V_NULL;
    if (eq_scalar(v, x, date_str))
        return 1;
    if (json_is_array(x) && !(v->kind == V_JSON && json_is_array(v->u.json))) {
        json_array_foreach(x, i, e) {
            if (eq_scalar(v, e, 0))
                return 1;
        }
    }
    return 0;
}

static int in_list(const struct node *n, const json_t *x, int date_str)
{
    for (size_t i = 0; i < n->u.list.n; i++)
        if (eq_scalar(&n->u.list.v[i], x, date_str))
            return 1;
    return 0;
}

static int cmp_scalar(const struct node *n, const json_t *x, const struct mctx *m)
{
    const struct value *v = &n->u.cmp.val;
    int64_t ms, t;
    int c;

    switch (v->kind) {
    case V_NUM:
        if (!json_is_number(x))
            return 0;
        c = num_cmp(x, v);
        break;
    case V_STR:
        if (!json_is_string(x))
            return 0;
        c = str_cmp(x, v);
        break;
    case V_DATE:
    case V_REL:
        if (!as_date(x, n->path->date_str, &ms))
            return 0;
        t = v->u.ms;
        if (v->kind == V_REL && __builtin_add_overflow(m->now_ms, v->u.ms, &t))
            t = v->u.ms < 0 ? INT64_MIN : INT64_MAX;
        c = (ms > t) - (ms < t);
        break;
    default:
        return 0;
    }
    switch (n->u.cmp.op) {
    case CMP_LT: return c < 0;
    case CMP_LTE: return c <= 0;
    case CMP_GT: return c > 0;
    default: return c >= 0;
    }
}

/* Regex scratch space: one match data per thread, created on first use and
 * freed by a thread-specific destructor when the thread exits. */
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static int md_key_ok;

static void md_free(void *md)
{
    pcre2_match_data_free(md);
}

static void md_key_init(void)
{
    md_key_ok = pthread_key_create(&md_key, md_free) == 0;
}

static pcre2_match_data *thread_match_data(void)
{
    static _Thread_local pcre2_match_data *md;

    if (md == NULL) {
        pthread_once(&md_once, md_key_init);
        if (!md_key_ok)
            return NULL;
        md = pcre2_match_data_create(1, NULL);
        if (md != NULL && pthread_setspecific(md_key, md) != 0) {
            pcre2_match_data_free(md);
            md = NULL;
        }
    }
    return md;
}

static int regex_scalar(const struct node *n, const json_t *x, const struct mctx *m)
{
    pcre2_match_data *md;
    int rc;

    if (!json_is_string(x) || n->path->date_str || (md = thread_match_data()) == NULL)
        return 0;
    /* no match, a bad subject and a hit match/depth limit all count as no match */
    rc = pcre2_match(n->u.re, (PCRE2_SPTR)json_string_value(x), json_string_length(x), 0, 0, md,
                     m->q->mctx);
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT)
        LQ_METRIC_INC(limit_regex); /* relaxed atomic: matching may run on any thread */
    return rc >= 0;
}

static int polygon_field(const json_t *x, struct geo p)
{
    const json_t *pts = json_object_get(x, "coordinates");
    size_t n = json_array_size(pts);
    struct geo a, b;
    int inside = 0;

    if (!str_is(json_object_get(x, "__type"), "Polygon") || n < 3 ||
        !geo_pair(json_array_get(pts, n - 1), 1, &a))
        return 0;
    for (size_t i = 0; i < n; i++, a = b) {
        if (!geo_pair(json_array_get(pts, i), 1, &b))
            return 0;
        if (edge_step(a, b, p, &inside))
            return 1;
    }
    return inside;
}

static int geo_scalar(const struct node *n, const json_t *x)
{
    struct geo g;
    int inside = 0;

    if (n->kind == N_INTERSECTS)
        return polygon_field(x, n->u.point);
    if (!geopoint(x, &g))
        return 0;
    switch (n->kind) {
    case N_SPHERE:
        return geo_radians(&g, &n->u.sphere.c) <= n->u.sphere.max;
    case N_BOX:
        return g.lat >= n->u.box.sw.lat && g.lat <= n->u.box.ne.lat &&
               g.lng >= n->u.box.sw.lng && g.lng <= n->u.box.ne.lng;
    default: /* N_POLYGON */
        for (size_t i = 0, j = n->u.poly.n - 1; i < n->u.poly.n; j = i++)
            if (edge_step(n->u.poly.pts[j], n->u.poly.pts[i], g, &inside))
                return 1;
        return inside;
    }
}

/* A comparison, regex or geo condition on one value (not an array). */
static int scalar_test(const struct node *n, const json_t *x, const struct mctx *m)
{
    switch (n->kind) {
    case N_CMP:
        return cmp_scalar(n, x, m);
    case N_REGEX:
        return regex_scalar(n, x, m);
    default:
        return geo_scalar(n, x);
    }
}

/* The condition n on one field value x (NULL when missing), before negation. */
static int leaf(const struct node *n, const json_t *x, const struct mctx *m)
{
    int ds = n->path->date_str;
    size_t i, j;
    const json_t *e;

    switch (n->kind) {
    case N_EXISTS:
        return x != NULL;
    case N_EQ:
        return eq_value(&n->u.val, x, ds);
    case N_IN:
        for (i = 0; i < n->u.list.n; i++)
            if (eq_value(&n->u.list.v[i], x, ds))
                return 1;
        return 0;
    case N_ALL:
        if (!json_is_array(x) || n->u.list.n == 0)
            return 0;
        for (i = 0; i < n->u.list.n; i++) {
            int found = 0;
            json_array_foreach(x, j, e) {
                if ((found = eq_scalar(&n->u.list.v[i], e, 0)))
                    break;
            }
            if (!found)
                return 0;
        }
        return 1;
    case N_CONTAINED_BY:
        if (!json_is_array(x))
            return 0;
        json_array_foreach(x, j, e) {
            if (!in_list(n, e, 0))
                return 0;
        }
        return 1;
    default:
        break;
    }
    if (x == NULL)
        return 0;
    if (!json_is_array(x))
        return scalar_test(n, x, m);
    json_array_foreach(x, j, e) { /* any element of an array field */
        if (scalar_test(n, e, m))
            return 1;
    }
    return 0;
}

/* Resolves path segments i.. from cur (the value reached so far): objects
 * descend, an array either takes a numeric index or fans out to its object
 * elements, typed values (Pointer, Date, ...) are opaque. 1 when any resolved
 * value satisfies the condition. Recursion depth is bounded by path->n. */
static int walk(const struct node *n, const json_t *cur, size_t i, const struct mctx *m)
{
    const struct path *p = n->path;
    size_t k;
    const json_t *e;
    int any_object = 0;

    if (i == p->n)
        return leaf(n, cur, m);
    if (json_is_object(cur) && (i == 0 || !is_typed(cur)))
        return walk(n, json_object_get(cur, p->seg[i]), i + 1, m);
    if (json_is_array(cur)) {
        if (p->index[i] >= 0)
            return walk(n, json_array_get(cur, (size_t)p->index[i]), i + 1, m);
        json_array_foreach(cur, k, e) {
            if (!json_is_object(e) || is_typed(e))
                continue;
            any_object = 1;
            if (walk(n, e, i, m))
                return 1;
        }
        return any_object ? 0 : leaf(n, NULL, m);
    }
    return leaf(n, NULL, m);
}

static int eval(const struct node *n, const json_t *obj, const struct mctx *m)
{
    size_t i;

    switch (n->kind) {
    case N_AND:
        for (i = 0; i < n->u.kids.n; i++)
            if (!eval(n->u.kids.v[i], obj, m))
                return 0;
        return 1;
    case N_OR:
        for (i = 0; i < n->u.kids.n; i++)
            if (eval(n->u.kids.v[i], obj, m))
                return 1;
        return 0;
    case N_NOR:
        for (i = 0; i < n->u.kids.n; i++)
            if (eval(n->u.kids.v[i], obj, m))
                return 0;
        return 1;
    default:
        return walk(n, obj, 0, m) != n->negate;
    }
}

int lq_query_match(const lq_query *q, const json_t *object, int64_t now_ms)
{
    struct mctx m = {q, now_ms};

    if (q == NULL || !json_is_object(object))
        return 0;
    return eval(q->root, object, &m);
}
