/*
 * test_query.c - the query compiler and matcher: the data tables in
 * tests/query/ (*.test, one check per group, the format is in each file),
 * then what tables cannot express: hostile inputs, limits, canonical forms,
 * index hints and keys, allocation-free matching, and threads.
 */
#include <dirent.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <time.h>

#include "livequery/json.h"
#include "livequery/query.h"
#include "lq_test.h"

#ifndef LQ_SOURCE_DIR
#error "LQ_SOURCE_DIR must name the source tree"
#endif
#define TABLE_DIR LQ_SOURCE_DIR "/tests/query"
#define DEFAULT_NOW "2026-01-01T00:00:00.000Z"

/* ---- helpers ---------------------------------------------------------- */

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (v == NULL)
        fprintf(stderr, "bad JSON in test: %s: %s\n", text, jerr.text);
    return v;
}

static lq_query *compile_text(const char *where, lq_error *err)
{
    json_t *w = parse(where);
    lq_query *q = lq_query_compile("Book", w, NULL, err);
    json_decref(w);
    return q;
}

static int match_text(const lq_query *q, const char *object)
{
    json_t *o = parse(object);
    int r = lq_query_match(q, o, 0);
    json_decref(o);
    return r;
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Frees a chain of single-child containers without jansson's recursion. */
static void free_chain(json_t *v)
{
    while (v != NULL) {
        json_t *child = NULL;
        if (json_is_array(v))
            child = json_array_get(v, 0);
        else if (json_is_object(v) && json_object_size(v) == 1)
            child = json_object_iter_value(json_object_iter(v));
        json_incref(child);
        json_decref(v);
        v = child;
    }
}

/* ---- data tables ------------------------------------------------------ */

struct line {
    char kind; /* '+', '-', '!' */
    int lineno;
    char *text;
    json_t *obj;
};

struct group {
    const char *file;
    int lineno;
    char *where_text;
    int64_t now;
    struct line *lines;
    size_t n, cap;
};

static int tables_groups, tables_failed;

static void group_fail(const struct group *g, int lineno, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void group_fail(const struct group *g, int lineno, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "%s:%d: ", g->file, lineno ? lineno : g->lineno);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n  where: %s\n", g->where_text);
}

/* For a '+' object: the hinted field, or one of its array elements, has the key. */
static int hint_holds(const json_t *obj, const char *field, const char *key)
{
    const json_t *v = json_object_get(obj, field), *e;
    char buf[4096];
    size_t i;

    if (lq_query_value_key(v, buf, sizeof(buf)) >= 0 && strcmp(buf, key) == 0)
        return 1;
    json_array_foreach(v, i, e) {
        if (lq_query_value_key(e, buf, sizeof(buf)) >= 0 && strcmp(buf, key) == 0)
            return 1;
    }
    return 0;
}

/* Runs one group; returns 1 when it passes. */
static int run_group(const struct group *g)
{
    json_t *where = parse(g->where_text), *cwhere = NULL;
    lq_query *q = NULL, *cq = NULL;
    lq_error err = {0};
    const char *field, *key;
    int ok = 1, want_error = 0;

    if (where == NULL) {
        group_fail(g, 0, "where line is not JSON");
        return 0;
    }
    for (size_t i = 0; i < g->n; i++)
        want_error |= g->lines[i].kind == '!';
    q = lq_query_compile("Table", where, NULL, &err);
    if (want_error) {
        if (q != NULL) {
            group_fail(g, 0, "compiled, but an error was expected");
            ok = 0;
        } else if (err.code != LQ_PARSE_ERR_INVALID_QUERY) {
            group_fail(g, 0, "error code is %d, not 102: %s", err.code, err.text);
            ok = 0;
        }
        for (size_t i = 0; ok && i < g->n; i++) {
            if (g->lines[i].kind != '!') {
                group_fail(g, g->lines[i].lineno, "a group with ! lines cannot have +/- lines");
                ok = 0;
            } else if (strstr(err.text, g->lines[i].text) == NULL) {
                group_fail(g, g->lines[i].lineno, "error \"%s\" does not contain \"%s\"", err.text,
                           g->lines[i].text);
                ok = 0;
            }
        }
        goto out;
    }
    if (q == NULL) {
        group_fail(g, 0, "does not compile: %s", err.text);
        ok = 0;
        goto out;
    }
    /* the canonical form must compile to the same canonical form and the same results */
    cwhere = parse(lq_query_canonical(q));
    cq = cwhere ? lq_query_compile("Table", cwhere, NULL, &err) : NULL;
    if (cq == NULL || strcmp(lq_query_canonical(cq), lq_query_canonical(q)) != 0) {
        group_fail(g, 0, "canonical form %s does not round-trip: %s", lq_query_canonical(q),
                   cq ? lq_query_canonical(cq) : err.text);
        ok = 0;
        goto out;
    }
    for (size_t i = 0; i < g->n; i++) {
        const struct line *l = &g->lines[i];
        int want = l->kind == '+', got = lq_query_match(q, l->obj, g->now);
        if (got != want) {
            group_fail(g, l->lineno, "%s %s", want ? "should match:" : "should not match:",
                       l->text);
            ok = 0;
        } else if (lq_query_match(cq, l->obj, g->now) != want) {
            group_fail(g, l->lineno, "canonical form %s disagrees on %s", lq_query_canonical(q),
                       l->text);
            ok = 0;
        }
        if (want && lq_query_index_hint(q, &field, &key) && !hint_holds(l->obj, field, key)) {
            group_fail(g, l->lineno, "matches, but the hint %s does not hold for %s", key, l->text);
            ok = 0;
        }
    }
out:
    lq_query_free(q);
    lq_query_free(cq);
    json_decref(where);
    json_decref(cwhere);
    return ok;
}

static void group_reset(struct group *g)
{
    for (size_t i = 0; i < g->n; i++) {
        free(g->lines[i].text);
        json_decref(g->lines[i].obj);
    }
    free(g->where_text);
    g->where_text = NULL;
    g->n = 0;
    lq_iso_to_ms(DEFAULT_NOW, &g->now);
}

static void group_finish(struct group *g)
{
    if (g->where_text != NULL) {
        tables_groups++;
        lq_test_checks_++;
        if (!run_group(g)) {
            tables_failed++;
            lq_test_failed_++;
        }
    }
    group_reset(g);
}

/* Parses and runs one .test file; returns -1 on a malformed file. */
static int run_table(const char *path, const char *name)
{
    FILE *f = fopen(path, "r");
    struct group g = {.file = name};
    char *buf = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;

    if (f == NULL) {
        fprintf(stderr, "%s: cannot open\n", path);
        return -1;
    }
    group_reset(&g);
    while ((len = getline(&buf, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r'))
            buf[--len] = '\0';
        if (len == 0) {
            group_finish(&g);
            continue;
        }
        if (buf[0] == '#')
            continue;
        if (g.where_text == NULL) {
            g.where_text = strdup(buf);
            g.lineno = lineno;
            continue;
        }
        if (strncmp(buf, "@now ", 5) == 0) {
            if (lq_iso_to_ms(buf + 5, &g.now) != 0) {
                fprintf(stderr, "%s:%d: bad @now date\n", name, lineno);
                rc = -1;
            }
            continue;
        }
        if ((buf[0] != '+' && buf[0] != '-' && buf[0] != '!') || buf[1] != ' ') {
            fprintf(stderr, "%s:%d: a line must start with '+ ', '- ', '! ', '@now ' or '#'\n", name,
                    lineno);
            rc = -1;
            continue;
        }
        if (g.n == g.cap) {
            g.cap = g.cap ? g.cap * 2 : 16;
            g.lines = realloc(g.lines, g.cap * sizeof(*g.lines));
        }
        struct line *l = &g.lines[g.n++];
        l->kind = buf[0];
        l->lineno = lineno;
        l->text = strdup(buf + 2);
        l->obj = l->kind == '!' ? NULL : parse(buf + 2);
        if (l->kind != '!' && !json_is_object(l->obj)) {
            fprintf(stderr, "%s:%d: not a JSON object\n", name, lineno);
            rc = -1;
            g.n--;
            free(l->text);
            json_decref(l->obj);
        }
    }
    group_finish(&g);
    free(g.lines);
    free(buf);
    fclose(f);
    return rc;
}

static int name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_tables(void)
{
    DIR *d = opendir(TABLE_DIR);
    struct dirent *de;
    char *names[64];
    size_t n = 0;
    int malformed = 0;

    ASSERT_TRUE(d != NULL);
    while ((de = readdir(d)) != NULL && n < 64) {
        size_t len = strlen(de->d_name);
        if (len > 5 && strcmp(de->d_name + len - 5, ".test") == 0)
            names[n++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, n, sizeof(*names), name_cmp);
    for (size_t i = 0; i < n; i++) {
        char path[1024];
        int before_groups = tables_groups, before_failed = tables_failed;
        snprintf(path, sizeof(path), "%s/%s", TABLE_DIR, names[i]);
        malformed |= run_table(path, names[i]) != 0;
        printf("  %-22s %3d groups, %d failed\n", names[i], tables_groups - before_groups,
               tables_failed - before_failed);
        free(names[i]);
    }
    ASSERT_TRUE(n >= 8);
    ASSERT_TRUE(tables_groups >= 150);
    ASSERT_EQ(malformed, 0);
}

/* ---- hostile inputs ---------------------------------------------------- */

/* {"$or": [{"$or": [ ... {"a": 1} ... ]}]} nested `levels` deep, built in C. */
static json_t *deep_logical(const char *op, int levels)
{
    json_t *w = json_pack("{s:i}", "a", 1);
    for (int i = 0; i < levels; i++)
        w = json_pack("{s:[o]}", op, w);
    return w;
}

static void test_deep_or(void)
{
    lq_error err = {0};
    double t0 = now_seconds();
    json_t *w = deep_logical("$or", 10000);
    lq_query *q = lq_query_compile("Book", w, NULL, &err);

    free_chain(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_EQ(err.code, 102);
    ASSERT_STREQ(err.text, "query nesting is deeper than 16");
    ASSERT_TRUE(now_seconds() - t0 < 2.0);

    /* exactly at the limit compiles and matches */
    w = deep_logical("$and", 15);
    q = lq_query_compile("Book", w, NULL, &err);
    json_decref(w);
    ASSERT_TRUE(q != NULL);
    ASSERT_EQ(match_text(q, "{\"a\":1}"), 1);
    ASSERT_EQ(match_text(q, "{\"a\":2}"), 0);
    lq_query_free(q);
    w = deep_logical("$nor", 16);
    q = lq_query_compile("Book", w, NULL, &err);
    json_decref(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_STREQ(err.text, "query nesting is deeper than 16");
}

static void test_deep_value(void)
{
    lq_error err = {0};
    json_t *v = json_integer(1), *w;
    lq_query *q;

    for (int i = 0; i < 10000; i++)
        v = json_pack("[o]", v);
    w = json_pack("{s:{s:o}}", "tags", "$in", v);
    q = lq_query_compile("Book", w, NULL, &err);
    json_incref(v);
    json_decref(w);
    free_chain(v);
    ASSERT_TRUE(q == NULL);
    ASSERT_EQ(err.code, 102);
    ASSERT_STREQ(err.text, "query nesting is deeper than 16");

    v = json_object();
    for (int i = 0; i < 10000; i++)
        v = json_pack("{s:o}", "a", v);
    w = json_pack("{s:o}", "meta", v);
    q = lq_query_compile("Book", w, NULL, &err);
    free_chain(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_STREQ(err.text, "query nesting is deeper than 16");
}

static void test_huge_in(void)
{
    lq_error err = {0};
    json_t *list = json_array(), *w;
    lq_query *q;
    double t0;

    for (int i = 0; i < 100000; i++)
        json_array_append_new(list, json_integer(i));
    w = json_pack("{s:{s:o}}", "n", "$in", list);
    t0 = now_seconds();
    q = lq_query_compile("Book", w, NULL, &err);
    ASSERT_TRUE(now_seconds() - t0 < 1.0);
    json_decref(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_EQ(err.code, 102);
    ASSERT_STREQ(err.text, "query has more than 1024 constraints and list elements");

    /* 1000 elements are fine */
    list = json_array();
    for (int i = 0; i < 1000; i++)
        json_array_append_new(list, json_integer(i * 2));
    w = json_pack("{s:{s:o}}", "n", "$in", list);
    q = lq_query_compile("Book", w, NULL, &err);
    json_decref(w);
    ASSERT_TRUE(q != NULL);
    ASSERT_EQ(match_text(q, "{\"n\":1998}"), 1);
    ASSERT_EQ(match_text(q, "{\"n\":1999}"), 0);
    lq_query_free(q);

    /* a 100k-key where clause */
    w = json_object();
    for (int i = 0; i < 100000; i++) {
        char k[16];
        snprintf(k, sizeof(k), "f%d", i);
        json_object_set_new(w, k, json_integer(i));
    }
    q = lq_query_compile("Book", w, NULL, &err);
    json_decref(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_STREQ(err.text, "query has more than 1024 constraints and list elements");
}

static void test_catastrophic_regex(void)
{
    lq_error err = {0};
    lq_query *q = compile_text("{\"s\":{\"$regex\":\"(a+)+$\"}}", &err);
    char subject[128];
    json_t *o;
    double t0;

    ASSERT_TRUE(q != NULL);
    memset(subject, 'a', 100);
    subject[100] = 'b';
    subject[101] = '\0';
    o = json_pack("{s:s}", "s", subject);
    t0 = now_seconds();
    for (int i = 0; i < 10; i++)
        ASSERT_EQ(lq_query_match(q, o, 0), 0);
    ASSERT_TRUE(now_seconds() - t0 < 2.0);
    json_decref(o);
    ASSERT_EQ(match_text(q, "{\"s\":\"aaaa\"}"), 1);
    ASSERT_EQ(match_text(q, "{\"s\":[\"x\",\"aaaa\"]}"), 1);
    lq_query_free(q);
}

static void test_huge_strings(void)
{
    size_t n = 8u << 20;
    char *big = malloc(n + 1);
    json_t *o, *w;
    lq_query *q;
    lq_error err = {0};

    ASSERT_TRUE(big != NULL);
    memset(big, 'a', n);
    big[n] = '\0';
    o = json_pack("{s:s}", "s", big);
    w = json_pack("{s:s}", "s", big);
    q = lq_query_compile("Book", w, NULL, &err);
    json_decref(w);
    ASSERT_TRUE(q != NULL);
    ASSERT_EQ(lq_query_match(q, o, 0), 1);
    lq_query_free(q);

    q = compile_text("{\"s\":{\"$regex\":\"b$\"}}", &err);
    ASSERT_TRUE(q != NULL);
    ASSERT_EQ(lq_query_match(q, o, 0), 0);
    lq_query_free(q);
    q = compile_text("{\"s\":{\"$regex\":\"^a{10}\"}}", &err);
    ASSERT_EQ(lq_query_match(q, o, 0), 1);
    lq_query_free(q);
    q = compile_text("{\"s\":{\"$gt\":\"a\"}}", &err);
    ASSERT_EQ(lq_query_match(q, o, 0), 1);
    lq_query_free(q);

    /* a pattern longer than max_regex_len is refused; one at the limit is not */
    char pat[1100];
    memset(pat, 'x', sizeof(pat));
    pat[1025] = '\0';
    w = json_pack("{s:{s:s}}", "s", "$regex", pat);
    q = lq_query_compile("Book", w, NULL, &err);
    json_decref(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_STREQ(err.text, "$regex is longer than 1024 bytes");
    pat[1024] = '\0';
    w = json_pack("{s:{s:s}}", "s", "$regex", pat);
    q = lq_query_compile("Book", w, NULL, &err);
    json_decref(w);
    ASSERT_TRUE(q != NULL);
    lq_query_free(q);
    json_decref(o);
    free(big);
}

static void test_custom_limits(void)
{
    lq_query_limits lim;
    lq_error err = {0};
    json_t *w;
    lq_query *q;

    lq_query_limits_default(&lim);
    ASSERT_EQ(lim.max_depth, 16);
    ASSERT_EQ(lim.max_nodes, 1024);
    ASSERT_EQ(lim.max_regex_len, 1024);
    ASSERT_EQ(lim.regex_match_limit, 100000);
    ASSERT_EQ(lim.regex_depth_limit, 1000);

    lim.max_depth = 2;
    w = parse("{\"$or\":[{\"$or\":[{\"a\":1}]}]}");
    q = lq_query_compile("Book", w, &lim, &err);
    json_decref(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_STREQ(err.text, "query nesting is deeper than 2");
    w = parse("{\"$or\":[{\"a\":1}]}");
    q = lq_query_compile("Book", w, &lim, &err);
    json_decref(w);
    ASSERT_TRUE(q != NULL);
    lq_query_free(q);
    w = parse("{\"a.b.c\":1}");
    q = lq_query_compile("Book", w, &lim, &err);
    json_decref(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_STREQ(err.text, "field name has more than 2 parts: a.b.c");

    lq_query_limits_default(&lim);
    lim.max_nodes = 4;
    w = parse("{\"a\":{\"$in\":[1,2,3]}}");
    q = lq_query_compile("Book", w, &lim, &err);
    json_decref(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_STREQ(err.text, "query has more than 4 constraints and list elements");
    w = parse("{\"a\":{\"$in\":[1,2]}}");
    q = lq_query_compile("Book", w, &lim, &err);
    json_decref(w);
    ASSERT_TRUE(q != NULL);
    lq_query_free(q);

    lq_query_limits_default(&lim);
    lim.max_regex_len = 3;
    w = parse("{\"a\":{\"$regex\":\"abcd\"}}");
    q = lq_query_compile("Book", w, &lim, &err);
    json_decref(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_STREQ(err.text, "$regex is longer than 3 bytes");

    /* the match and depth limits apply: a subject that matches with the
     * defaults does not match once either limit is too small for it */
    static const char *const re = "{\"a\":{\"$regex\":\"^(a|b)*c$\"}}";
    static const char *const subject = "{\"a\":\"abababababababababababababababababababc\"}";
    for (int i = 0; i < 3; i++) {
        lq_query_limits_default(&lim);
        if (i == 1)
            lim.regex_match_limit = 20;
        if (i == 2)
            lim.regex_depth_limit = 10;
        w = parse(re);
        q = lq_query_compile("Book", w, &lim, &err);
        json_decref(w);
        ASSERT_TRUE(q != NULL);
        ASSERT_EQ(match_text(q, "{\"a\":\"abc\"}"), 1);
        ASSERT_EQ(match_text(q, subject), i == 0);
        lq_query_free(q);
    }
}

/* ---- API edges --------------------------------------------------------- */

static void test_api_edges(void)
{
    lq_error err = {0};
    lq_query *q;
    json_t *arr = json_array();

    ASSERT_TRUE(lq_query_compile("Book", arr, NULL, &err) == NULL);
    ASSERT_EQ(err.code, 102);
    ASSERT_STREQ(err.text, "where must be a JSON object");
    json_decref(arr);
    err.code = 0;
    ASSERT_TRUE(lq_query_compile("Book", NULL, NULL, &err) == NULL);
    ASSERT_EQ(err.code, 102);
    ASSERT_TRUE(compile_text("{\"$or\":1}", NULL) == NULL); /* err may be NULL */
    lq_query_free(NULL);

    q = compile_text("{}", &err);
    ASSERT_TRUE(q != NULL);
    ASSERT_STREQ(lq_query_class(q), "Book");
    ASSERT_STREQ(lq_query_canonical(q), "{}");
    ASSERT_EQ(lq_query_match(q, NULL, 0), 0);
    arr = json_array();
    ASSERT_EQ(lq_query_match(q, arr, 0), 0);
    json_decref(arr);
    ASSERT_EQ(match_text(q, "{\"a\":1}"), 1);
    ASSERT_EQ(lq_query_match(NULL, NULL, 0), 0);
    lq_query_free(q);

    /* keys with an embedded NUL are refused */
    json_t *w = json_object();
    json_object_setn_new(w, "a\0b", 3, json_integer(1));
    q = lq_query_compile("Book", w, NULL, &err);
    json_decref(w);
    ASSERT_TRUE(q == NULL);
    ASSERT_EQ(err.code, 102);
    ASSERT_TRUE(strstr(err.text, "invalid key name") != NULL);

    /* strings with an embedded NUL compare by length */
    w = json_pack("{s:s#}", "s", "a\0b", (int)3);
    q = lq_query_compile("Book", w, NULL, &err);
    ASSERT_TRUE(q != NULL);
    ASSERT_EQ(lq_query_match(q, w, 0), 1);
    json_decref(w);
    w = json_pack("{s:s#}", "s", "a\0c", (int)3);
    ASSERT_EQ(lq_query_match(q, w, 0), 0);
    json_decref(w);
    lq_query_free(q);

    /* values whose keys differ only after an embedded NUL stay distinct */
    json_t *wa = json_pack("{s:o}", "m", json_object()), *wb = json_pack("{s:o}", "m", json_object());
    json_object_setn_new(json_object_get(wa, "m"), "k\0a", 3, json_integer(1));
    json_object_setn_new(json_object_get(wb, "m"), "k\0b", 3, json_integer(1));
    lq_query *qa = lq_query_compile("Book", wa, NULL, &err);
    lq_query *qb = lq_query_compile("Book", wb, NULL, &err);
    ASSERT_TRUE(qa != NULL && qb != NULL);
    ASSERT_TRUE(strcmp(lq_query_canonical(qa), lq_query_canonical(qb)) != 0);
    lq_query_free(qa);
    lq_query_free(qb);
    json_decref(wa);
    json_decref(wb);

    /* nothing is retained from `where` */
    w = parse("{\"s\":\"x\",\"t\":{\"$in\":[\"a\",{\"k\":[1]}]},\"u\":{\"$regex\":\"^q\"}}");
    q = lq_query_compile("Book", w, NULL, &err);
    ASSERT_TRUE(q != NULL);
    ASSERT_EQ(w->refcount, 1);
    json_decref(w);
    ASSERT_EQ(match_text(q, "{\"s\":\"x\",\"t\":{\"k\":[1]},\"u\":\"qq\"}"), 1);
    lq_query_free(q);
}

/* ---- canonical forms ---------------------------------------------------- */

static void assert_same_canonical(const char *a, const char *b, int same, int *ok)
{
    lq_error err = {0};
    lq_query *qa = compile_text(a, &err), *qb = compile_text(b, &err);

    *ok = qa && qb && (strcmp(lq_query_canonical(qa), lq_query_canonical(qb)) == 0) == same;
    if (!*ok)
        fprintf(stderr, "canonical %s:\n  %s -> %s\n  %s -> %s\n", same ? "differs" : "is equal",
                a, qa ? lq_query_canonical(qa) : err.text, b, qb ? lq_query_canonical(qb) : "-");
    lq_query_free(qa);
    lq_query_free(qb);
}

static void test_canonical(void)
{
    static const struct { const char *a, *b; int same; } cases[] = {
        {"{\"a\":1,\"b\":2}", "{\"b\":2,\"a\":1}", 1},
        {"{\"a\":{\"$in\":[3,1,2]}}", "{\"a\":{\"$in\":[1,2,3]}}", 1},
        {"{\"a\":{\"$in\":[3,1,2,1]}}", "{\"a\":{\"$in\":[1,2,3]}}", 1},
        {"{\"a\":{\"$nin\":[\"y\",\"x\"]}}", "{\"a\":{\"$nin\":[\"x\",\"y\"]}}", 1},
        {"{\"a\":{\"$all\":[2,1]}}", "{\"a\":{\"$all\":[1,2]}}", 1},
        {"{\"a\":{\"$containedBy\":[2,1]}}", "{\"a\":{\"$containedBy\":[1,2]}}", 1},
        {"{\"$or\":[{\"b\":1},{\"a\":1}]}", "{\"$or\":[{\"a\":1},{\"b\":1}]}", 1},
        {"{\"$and\":[{\"b\":1},{\"a\":1}]}", "{\"$and\":[{\"a\":1},{\"b\":1}]}", 1},
        {"{\"$nor\":[{\"b\":1},{\"a\":1}]}", "{\"$nor\":[{\"a\":1},{\"b\":1}]}", 1},
        {"{\"a\":1.0}", "{\"a\":1}", 1},
        {"{\"a\":-0.0}", "{\"a\":0}", 1},
        {"{\"a\":{\"$gt\":2.0,\"$lt\":5}}", "{\"a\":{\"$lt\":5.0,\"$gt\":2}}", 1},
        {"{\"m\":{\"y\":1,\"x\":[1.0,2]}}", "{\"m\":{\"x\":[1,2],\"y\":1}}", 1},
        {"{\"s\":{\"$regex\":\"a\",\"$options\":\"mi\"}}",
         "{\"s\":{\"$options\":\"im\",\"$regex\":\"a\"}}", 1},
        {"{\"a\":1}", "{\"a\":2}", 0},
        {"{\"a\":1}", "{\"a\":\"1\"}", 0},
        {"{\"a\":1.5}", "{\"a\":1}", 0},
        {"{\"a\":{\"$in\":[1,2]}}", "{\"a\":{\"$in\":[1,3]}}", 0},
        {"{\"a\":{\"$in\":[1,2]}}", "{\"a\":{\"$nin\":[1,2]}}", 0},
        {"{\"a\":[1,2]}", "{\"a\":[2,1]}", 0}, /* array equality is ordered */
        {"{\"a\":1}", "{\"b\":1}", 0},
        {"{\"$or\":[{\"a\":1},{\"b\":1}]}", "{\"$and\":[{\"a\":1},{\"b\":1}]}", 0},
        {"{\"s\":{\"$regex\":\"a\"}}", "{\"s\":{\"$regex\":\"a\",\"$options\":\"i\"}}", 0},
    };
    lq_error err = {0};
    lq_query *q;
    int ok;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        assert_same_canonical(cases[i].a, cases[i].b, cases[i].same, &ok);
        ASSERT_TRUE(ok);
    }
    q = compile_text("{\"b\":{\"$in\":[2,1.0]},\"a\":\"x\",\"$or\":[{\"z\":true},{\"y\":null}]}",
                     &err);
    ASSERT_TRUE(q != NULL);
    ASSERT_STREQ(lq_query_canonical(q),
                 "{\"$or\":[{\"y\":null},{\"z\":true}],\"a\":\"x\",\"b\":{\"$in\":[1,2]}}");
    lq_query_free(q);
}

/* ---- index hints and keys ---------------------------------------------- */

static void hint_of(const char *where, const char *want_field, const char *want_key, int *ok)
{
    lq_error err = {0};
    lq_query *q = compile_text(where, &err);
    const char *field = NULL, *key = NULL;
    int has = q ? lq_query_index_hint(q, &field, &key) : -1;

    if (want_field == NULL)
        *ok = has == 0;
    else
        *ok = has == 1 && strcmp(field, want_field) == 0 && strcmp(key, want_key) == 0;
    if (!*ok)
        fprintf(stderr, "hint of %s: got %d %s %s, want %s %s (%s)\n", where, has,
                field ? field : "-", key ? key : "-", want_field ? want_field : "none",
                want_key ? want_key : "", q ? "" : err.text);
    lq_query_free(q);
}

static void test_index_hint(void)
{
    static const struct { const char *where, *field, *key; } cases[] = {
        {"{\"status\":\"new\",\"objectId\":\"a1\"}", "objectId", "s:a1"},
        {"{\"status\":\"new\"}", "status", "s:new"},
        {"{\"z\":1,\"b\":true,\"m\":\"x\"}", "b", "b:1"},
        {"{\"b\":false}", "b", "b:0"},
        {"{\"q\":10.0}", "q", "n:10"},
        {"{\"q\":{\"$eq\":2.5}}", "q", "n:2.5"},
        {"{\"q\":{\"$eq\":-0.0}}", "q", "n:0"},
        {"{\"p\":{\"__type\":\"Pointer\",\"className\":\"C\",\"objectId\":\"i\"}}", "p", "p:C$i"},
        {"{\"q\":{\"$gt\":1,\"$eq\":3}}", "q", "n:3"},
        {"{\"q\":{\"$ne\":1}}", NULL, NULL},
        {"{\"q\":{\"$in\":[1]}}", NULL, NULL},
        {"{\"q\":null}", NULL, NULL},
        {"{\"q\":[1,2]}", NULL, NULL},
        {"{\"q\":{\"a\":1}}", NULL, NULL},
        {"{\"a.b\":1}", NULL, NULL},
        {"{\"createdAt\":\"2026-01-02T03:04:05.678Z\"}", NULL, NULL},
        {"{\"d\":{\"__type\":\"Date\",\"iso\":\"2026-01-02T03:04:05.678Z\"}}", NULL, NULL},
        {"{\"$or\":[{\"a\":1}]}", NULL, NULL},
        {"{\"$and\":[{\"a\":1}]}", NULL, NULL},
        {"{}", NULL, NULL},
    };
    int ok;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        hint_of(cases[i].where, cases[i].field, cases[i].key, &ok);
        ASSERT_TRUE(ok);
    }
}

static void test_value_key(void)
{
    char buf[64];
    json_t *v;

#define KEY_IS(json, want)                                                                   \
    do {                                                                                     \
        v = parse(json);                                                                     \
        int n_ = lq_query_value_key(v, buf, sizeof(buf));                                    \
        json_decref(v);                                                                      \
        ASSERT_EQ(n_, (long long)strlen(want));                                              \
        ASSERT_STREQ(buf, want);                                                             \
    } while (0)
#define NO_KEY(json)                                                                         \
    do {                                                                                     \
        v = parse(json);                                                                     \
        ASSERT_EQ(lq_query_value_key(v, buf, sizeof(buf)), -1);                              \
        json_decref(v);                                                                      \
    } while (0)

    KEY_IS("\"abc\"", "s:abc");
    KEY_IS("\"\"", "s:");
    KEY_IS("1", "n:1");
    KEY_IS("1.0", "n:1");
    KEY_IS("-0.0", "n:0");
    KEY_IS("0.1", "n:0.10000000000000001");
    KEY_IS("1e300", "n:1.0000000000000001e+300");
    KEY_IS("true", "b:1");
    KEY_IS("false", "b:0");
    KEY_IS("{\"__type\":\"Pointer\",\"className\":\"C\",\"objectId\":\"x\"}", "p:C$x");
    KEY_IS("{\"__type\":\"Object\",\"className\":\"C\",\"objectId\":\"x\",\"a\":1}", "p:C$x");
    NO_KEY("null");
    NO_KEY("[1]");
    NO_KEY("{\"a\":1}");
    NO_KEY("{\"__type\":\"Pointer\",\"className\":\"C\"}");
    NO_KEY("{\"__type\":\"Date\",\"iso\":\"2026-01-01T00:00:00Z\"}");
    ASSERT_EQ(lq_query_value_key(NULL, buf, sizeof(buf)), -1);

    v = json_string("abcdef");
    ASSERT_EQ(lq_query_value_key(v, buf, 9), 8);
    ASSERT_EQ(lq_query_value_key(v, buf, 8), -1);
    json_decref(v);
    v = json_integer(123456);
    ASSERT_EQ(lq_query_value_key(v, buf, 4), -1);
    json_decref(v);
    v = json_stringn("a\0b", 3);
    ASSERT_EQ(lq_query_value_key(v, buf, sizeof(buf)), 5);
    ASSERT_TRUE(memcmp(buf, "s:a\0b", 6) == 0);
    json_decref(v);
#undef KEY_IS
#undef NO_KEY
}

/* ---- allocation-free matching ------------------------------------------ */

static long jansson_allocs;

static void *counting_malloc(size_t n)
{
    jansson_allocs++;
    return malloc(n);
}

static void test_match_allocation_free(void)
{
    static const char *const wheres[] = {
        "{\"isbn\":\"978-1\",\"quantityOnHand\":{\"$gte\":5,\"$lt\":100}}",
        "{\"tags\":{\"$all\":[\"x\",\"y\"]},\"meta.a.b\":{\"$in\":[1,2]}}",
        "{\"$or\":[{\"isbn\":{\"$regex\":\"^97\",\"$options\":\"i\"}},{\"missing\":null}]}",
        "{\"createdAt\":{\"$lt\":{\"$relativeTime\":\"in 1 day\"}},\"publisherContact\":"
        "{\"__type\":\"Pointer\",\"className\":\"PublisherContact\",\"objectId\":\"p1\"}}",
        "{\"location\":{\"$nearSphere\":{\"__type\":\"GeoPoint\",\"latitude\":40,\"longitude\":-74},"
        "\"$maxDistanceInKilometers\":100}}",
        "{\"area\":{\"$geoIntersects\":{\"$point\":{\"__type\":\"GeoPoint\",\"latitude\":0.5,"
        "\"longitude\":0.5}}},\"tags\":{\"$containedBy\":[\"x\",\"y\"]},\"x\":{\"$nin\":[1]}}",
        "{\"$nor\":[{\"meta\":{\"a\":{\"b\":2}}}],\"eventDate\":{\"$exists\":true}}",
    };
    const char *object =
        "{\"objectId\":\"a1\",\"className\":\"BookStockLog\",\"createdAt\":"
        "\"2026-01-02T03:04:05.678Z\",\"updatedAt\":\"2026-01-02T03:04:05.678Z\",\"isbn\":\"978-1\","
        "\"quantityOnHand\":10,\"tags\":[\"x\",\"y\"],\"eventDate\":{\"__type\":\"Date\",\"iso\":"
        "\"2030-01-01T18:00:00.000Z\"},\"publisherContact\":{\"__type\":\"Pointer\",\"className\":"
        "\"PublisherContact\",\"objectId\":\"p1\"},\"location\":{\"__type\":\"GeoPoint\","
        "\"latitude\":40.0,\"longitude\":-73.9},\"area\":{\"__type\":\"Polygon\",\"coordinates\":"
        "[[0,0],[0,1],[1,1],[1,0]]},\"meta\":{\"a\":{\"b\":1}},\"ACL\":{\"*\":{\"read\":true}}}";
    enum { NQ = sizeof(wheres) / sizeof(wheres[0]) };
    lq_query *q[NQ];
    lq_error err = {0};
    json_t *o = parse(object);
    int64_t now;
    long before;
    int matched = 0;

    lq_iso_to_ms("2026-01-02T00:00:00Z", &now);
    for (size_t i = 0; i < NQ; i++) {
        q[i] = compile_text(wheres[i], &err);
        if (q[i] == NULL)
            fprintf(stderr, "%s: %s\n", wheres[i], err.text);
        ASSERT_TRUE(q[i] != NULL);
    }
    for (size_t i = 0; i < NQ; i++) /* warm up the per-thread regex scratch */
        lq_query_match(q[i], o, now);
    before = jansson_allocs;
    for (int r = 0; r < 1000; r++)
        for (size_t i = 0; i < NQ; i++)
            matched += lq_query_match(q[i], o, now);
    ASSERT_EQ(jansson_allocs - before, 0);
    ASSERT_EQ(matched, 1000 * (int)NQ);
    for (size_t i = 0; i < NQ; i++)
        lq_query_free(q[i]);
    json_decref(o);
}

/* ---- threads ----------------------------------------------------------- */

struct thread_arg {
    const lq_query *q;
    int hits;
};

static void *thread_main(void *p)
{
    struct thread_arg *a = p;
    json_t *yes = parse("{\"s\":\"Hello World\"}"), *no = parse("{\"s\":\"goodbye\"}");

    for (int i = 0; i < 2000; i++)
        a->hits += lq_query_match(a->q, yes, 0) + lq_query_match(a->q, no, 0);
    json_decref(yes);
    json_decref(no);
    return NULL;
}

static void test_threads(void)
{
    lq_error err = {0};
    lq_query *q = compile_text("{\"s\":{\"$regex\":\"^hello\\\\s+w\",\"$options\":\"i\"}}", &err);
    pthread_t t[4];
    struct thread_arg args[4];

    ASSERT_TRUE(q != NULL);
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){q, 0};
        ASSERT_EQ(pthread_create(&t[i], NULL, thread_main, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ASSERT_EQ(args[i].hits, 2000);
    }
    lq_query_free(q);
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {
        {"tables", test_tables},
        {"deep_or", test_deep_or},
        {"deep_value", test_deep_value},
        {"huge_in", test_huge_in},
        {"catastrophic_regex", test_catastrophic_regex},
        {"huge_strings", test_huge_strings},
        {"custom_limits", test_custom_limits},
        {"api_edges", test_api_edges},
        {"canonical", test_canonical},
        {"index_hint", test_index_hint},
        {"value_key", test_value_key},
        {"match_allocation_free", test_match_allocation_free},
        {"threads", test_threads},
        {NULL, NULL},
    };

    setvbuf(stdout, NULL, _IOLBF, 0);
    json_set_alloc_funcs(counting_malloc, free);
    return lq_test_run(cases, argc, argv);
}
