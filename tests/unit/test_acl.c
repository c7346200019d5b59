/* test_acl.c - ACL/CLP/protectedFields vectors (protocol/vectors/acl.json)
 * and the principals' lifecycle. */
#include <stdio.h>
#include <string.h>

#include "livequery/acl.h"
#include "lq_test.h"

#ifndef LQ_SOURCE_DIR
#error "LQ_SOURCE_DIR must name the source tree"
#endif
#define VECTORS LQ_SOURCE_DIR "/protocol/vectors/acl.json"

/*---- vectors ----------------------------------------------------------------*/

/* The principals a case describes: {"master":bool,"user":id|null,"roles":[...]}. */
static lq_principals *principals_of(const json_t *d)
{
    if (json_is_true(json_object_get(d, "master")))
        return lq_principals_master();
    const char *uid = json_string_value(json_object_get(d, "user"));
    if (uid == NULL)
        return lq_principals_anonymous();
    lq_principals *p = lq_principals_new_user(uid);
    const json_t *roles = json_object_get(d, "roles");
    const char *names[64];
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(roles) && n < 64; i++)
        names[n++] = json_string_value(json_array_get(roles, i));
    lq_principals_set_roles(p, names, n);
    return p;
}

/* A JSON array of the list's strings, or null for a NULL list (new reference). */
static json_t *strv_json(char **v)
{
    if (v == NULL)
        return json_null();
    json_t *a = json_array();
    for (char **s = v; *s; s++)
        json_array_append_new(a, json_string(*s));
    return a;
}

/* A NULL-terminated borrowed view of a JSON array of strings; NULL for null. */
static const char **strv_view(const json_t *a, const char **buf, size_t cap)
{
    if (!json_is_array(a))
        return NULL;
    size_t n = 0;
    for (; n < json_array_size(a) && n + 1 < cap; n++)
        buf[n] = json_string_value(json_array_get(a, n));
    buf[n] = NULL;
    return buf;
}

static const char *const verdicts[] = {"ALLOW", "POINTER", "FORBIDDEN", "NEED_AUTH"};

/* Runs one case; returns its actual result as JSON (new reference) to be
 * compared with "want" (and writes extra checks' outcome into *extra_ok). */
static json_t *run_case(const json_t *c, lq_principals *p, int *extra_ok, char *msg, size_t cap)
{
    const char *fn = json_string_value(json_object_get(c, "fn"));
    const json_t *clp = json_object_get(c, "clp"), *where = json_object_get(c, "where");
    const json_t *obj = json_object_get(c, "obj");
    const char *cls = json_string_value(json_object_get(c, "class"));
    const char *buf[64];

    if (json_is_null(clp))
        clp = NULL;
    *extra_ok = 1;
    if (strcmp(fn, "can_read") == 0)
        return json_boolean(lq_acl_can_read(p, obj));
    if (strcmp(fn, "is_get") == 0)
        return json_boolean(lq_clp_is_get(where));
    if (strcmp(fn, "pointer_match") == 0)
        return json_boolean(
            lq_clp_pointer_match(strv_view(json_object_get(c, "fields"), buf, 64), p, obj));
    if (strcmp(fn, "clp_check") == 0) {
        char **fields = (char **)"not set";
        lq_error err = {0, ""};
        lq_clp_verdict v = lq_clp_check(clp, cls, lq_clp_is_get(where), p, &fields, &err);
        json_t *want_fields = json_object_get(c, "fields");
        json_t *got_fields = strv_json(fields);
        if (!json_equal(got_fields, want_fields ? want_fields : json_null())) {
            snprintf(msg, cap, "pointer fields differ");
            *extra_ok = 0;
        }
        json_decref(got_fields);
        lq_strv_free(fields);
        json_int_t code = json_integer_value(json_object_get(c, "code"));
        const char *text = json_string_value(json_object_get(c, "error"));
        if (v == LQ_CLP_FORBIDDEN || v == LQ_CLP_NEED_AUTH || code != 0) {
            if (err.code != code || text == NULL || strcmp(err.text, text) != 0) {
                snprintf(msg, cap, "error %d \"%s\"", err.code, err.text);
                *extra_ok = 0;
            }
        }
        return json_string(verdicts[v]);
    }
    if (strcmp(fn, "protected_static") == 0) {
        char **got = lq_protected_static(clp, cls, where, p);
        json_t *r = strv_json(got);
        lq_strv_free(got);
        return r;
    }
    if (strcmp(fn, "protected_for_object") == 0) {
        char **st = NULL;
        const char **stv = NULL;
        if (json_object_get(c, "static") != NULL)
            stv = strv_view(json_object_get(c, "static"), buf, 64);
        else
            stv = (const char **)(st = lq_protected_static(clp, cls, where, p));
        char **got = lq_protected_for_object(clp, cls, stv, p, obj);
        lq_strv_free(st);
        const json_t *dyn = json_object_get(c, "dynamic");
        if (dyn != NULL && json_is_true(dyn) != lq_protected_dynamic(clp, cls)) {
            snprintf(msg, cap, "lq_protected_dynamic differs");
            *extra_ok = 0;
        }
        json_t *r = strv_json(got);
        lq_strv_free(got);
        return r;
    }
    if (strcmp(fn, "in_query") == 0) {
        const char *field = NULL;
        const char **hidden = strv_view(json_object_get(c, "hidden"), buf, 64);
        const char *wbuf[64];
        const json_t *wj = json_object_get(c, "watch");
        const char **watch = wj ? strv_view(wj, wbuf, 64) : NULL;
        int r = lq_protected_in_query(hidden, where, watch, &field);
        const char *want_field = json_string_value(json_object_get(c, "field"));
        if (want_field && (field == NULL || strcmp(field, want_field) != 0)) {
            snprintf(msg, cap, "field %s", field ? field : "(null)");
            *extra_ok = 0;
        }
        return json_boolean(r);
    }
    snprintf(msg, cap, "unknown fn");
    *extra_ok = 0;
    return json_null();
}

static void test_vectors(void)
{
    json_error_t jerr;
    json_t *cases = json_load_file(VECTORS, 0, &jerr);
    int failed = 0;

    if (cases == NULL)
        fprintf(stderr, "%s:%d: %s\n", VECTORS, jerr.line, jerr.text);
    ASSERT_TRUE(json_is_array(cases));
    for (size_t i = 0; i < json_array_size(cases); i++) {
        const json_t *c = json_array_get(cases, i);
        lq_principals *p = principals_of(json_object_get(c, "principals"));
        char msg[128] = "";
        int extra_ok;
        json_t *got = run_case(c, p, &extra_ok, msg, sizeof(msg));
        const json_t *want = json_object_get(c, "want");
        if (!extra_ok || want == NULL || !json_equal(got, (json_t *)want)) {
            char *g = json_dumps(got, JSON_ENCODE_ANY | JSON_COMPACT);
            char *w = want ? json_dumps(want, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
            fprintf(stderr, "acl.json case %zu (%s: %s): got %s, want %s %s\n", i,
                    json_string_value(json_object_get(c, "fn")),
                    json_string_value(json_object_get(c, "why")), g, w ? w : "(missing)", msg);
            free(g);
            free(w);
            failed++;
        }
        json_decref(got);
        lq_principals_unref(p);
    }
    size_t n = json_array_size(cases);
    json_decref(cases);
    ASSERT_EQ(failed, 0);
    ASSERT_TRUE(n >= 60);
}

/*---- principals -------------------------------------------------------------*/

static void test_singletons(void)
{
    lq_principals *a = lq_principals_anonymous(), *m = lq_principals_master();

    ASSERT_TRUE(a == lq_principals_anonymous() && m == lq_principals_master() && a != m);
    ASSERT_TRUE(lq_principals_ref(a) == a);
    ASSERT_EQ(a->refs, 1);
    lq_principals_unref(a);
    lq_principals_unref(a);
    lq_principals_unref(m);
    ASSERT_EQ(a->refs, 1);
    ASSERT_EQ(m->refs, 1);
    ASSERT_TRUE(!a->master && a->user_id == NULL && a->roles != NULL && a->roles[0] == NULL);
    ASSERT_TRUE(m->master && m->user_id == NULL && m->roles != NULL && m->nroles == 0);
    ASSERT_TRUE(lq_principals_has(a, "*") && !lq_principals_has(a, "u1"));
    ASSERT_TRUE(lq_principals_has(m, "*") && !lq_principals_has(m, "role:A"));
    /* immutable: set_roles refuses them */
    const char *names[] = {"A"};
    ASSERT_EQ(lq_principals_set_roles(a, names, 1), 0);
    ASSERT_EQ(a->nroles, 0);
    ASSERT_EQ(a->gen, 0);
    lq_principals_unref(NULL);
}

static void test_refs(void)
{
    lq_principals *p = lq_principals_new_user("u1");

    ASSERT_EQ(p->refs, 1);
    ASSERT_STREQ(p->user_id, "u1");
    ASSERT_TRUE(p->roles != NULL && p->roles[0] == NULL && p->nroles == 0 && !p->master);
    ASSERT_TRUE(lq_principals_ref(p) == p);
    ASSERT_EQ(p->refs, 2);
    lq_principals_unref(p);
    ASSERT_EQ(p->refs, 1);
    ASSERT_TRUE(lq_principals_has(p, "u1") && lq_principals_has(p, "*"));
    ASSERT_TRUE(!lq_principals_has(p, "u2") && !lq_principals_has(p, NULL));
    lq_principals_unref(p); /* freed: ASan reports a leak otherwise */
}

static void test_set_roles(void)
{
    lq_principals *p = lq_principals_new_user("u1");
    const char *ab[] = {"B", "A", "B"}, *ba[] = {"A", "B"}, *c[] = {"C"};

    ASSERT_EQ(lq_principals_set_roles(p, ab, 3), 1);
    ASSERT_EQ(p->gen, 1);
    ASSERT_EQ(p->nroles, 2);
    ASSERT_STREQ(p->roles[0], "role:A");
    ASSERT_STREQ(p->roles[1], "role:B");
    ASSERT_TRUE(p->roles[2] == NULL);
    ASSERT_TRUE(lq_principals_has(p, "role:A") && lq_principals_has(p, "role:B"));
    ASSERT_TRUE(!lq_principals_has(p, "A") && !lq_principals_has(p, "role:C"));

    /* the same set in another order: unchanged, gen still bumped */
    ASSERT_EQ(lq_principals_set_roles(p, ba, 2), 0);
    ASSERT_EQ(p->gen, 2);
    ASSERT_EQ(p->nroles, 2);

    ASSERT_EQ(lq_principals_set_roles(p, c, 1), 1);
    ASSERT_EQ(p->gen, 3);
    ASSERT_TRUE(lq_principals_has(p, "role:C") && !lq_principals_has(p, "role:A"));

    ASSERT_EQ(lq_principals_set_roles(p, NULL, 0), 1);
    ASSERT_EQ(p->gen, 4);
    ASSERT_TRUE(p->nroles == 0 && p->roles != NULL && p->roles[0] == NULL);
    ASSERT_TRUE(!lq_principals_has(p, "role:C"));
    ASSERT_EQ(lq_principals_set_roles(p, NULL, 0), 0);
    ASSERT_EQ(p->gen, 5);

    /* many roles: the hash finds every one */
    char names_buf[300][8];
    const char *names[300];
    for (int i = 0; i < 300; i++) {
        snprintf(names_buf[i], sizeof(names_buf[i]), "r%d", i);
        names[i] = names_buf[i];
    }
    ASSERT_EQ(lq_principals_set_roles(p, names, 300), 1);
    ASSERT_EQ(p->nroles, 300);
    for (int i = 0; i < 300; i++) {
        char e[16];
        snprintf(e, sizeof(e), "role:r%d", i);
        ASSERT_TRUE(lq_principals_has(p, e));
    }
    ASSERT_TRUE(!lq_principals_has(p, "role:r300"));
    lq_principals_unref(p);
}

/*---- out-parameters and lists -----------------------------------------------*/

static void test_clp_outputs(void)
{
    json_t *clp = json_pack("{s:{s:[s]}, s:{s:[s]}}", "find", "pointerFields", "owner", "get",
                            "pointerFields", "owner");
    lq_principals *p = lq_principals_new_user("u1");
    char **fields = (char **)"junk";
    lq_error err = {7, "untouched"};

    /* NULL out-parameters are allowed; the list is not leaked */
    ASSERT_EQ(lq_clp_check(clp, "C", 0, p, NULL, NULL), LQ_CLP_POINTER);
    /* not POINTER: *pointer_fields is NULL; ALLOW leaves err alone */
    ASSERT_EQ(lq_clp_check(NULL, "C", 0, p, &fields, &err), LQ_CLP_ALLOW);
    ASSERT_TRUE(fields == NULL);
    ASSERT_EQ(err.code, 7);
    ASSERT_EQ(lq_clp_check(clp, "C", 1, lq_principals_anonymous(), &fields, &err),
              LQ_CLP_NEED_AUTH);
    ASSERT_TRUE(fields == NULL);
    ASSERT_EQ(err.code, 101);
    json_decref(clp);
    lq_principals_unref(p);
}

static void test_strv(void)
{
    const char *a[] = {"x", "y", NULL}, *b[] = {"x", "y", NULL}, *c[] = {"x", NULL};
    const char *e[] = {NULL};

    ASSERT_TRUE(lq_strv_equal(a, b));
    ASSERT_TRUE(!lq_strv_equal(a, c) && !lq_strv_equal(c, a));
    ASSERT_TRUE(lq_strv_equal(NULL, NULL));
    ASSERT_TRUE(!lq_strv_equal(NULL, e) && !lq_strv_equal(a, NULL));
    lq_strv_free(NULL);
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {
        {"vectors", test_vectors},
        {"singletons", test_singletons},
        {"refs", test_refs},
        {"set_roles", test_set_roles},
        {"clp_outputs", test_clp_outputs},
        {"strv", test_strv},
        {NULL, NULL},
    };
    return lq_test_run(cases, argc, argv);
}
