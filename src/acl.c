/*
 * acl.c - see acl.h.
 *
 * Concept: a Parse read is allowed in two layers. The class-level permission
 * (CLP) decides once, at subscribe time, whether the subscriber may run the
 * query at all (possibly only over objects whose pointer fields name it);
 * the object ACL and the protectedFields decide per delivered object. The
 * per-delivery functions (lq_acl_can_read, lq_clp_pointer_match) only walk
 * borrowed JSON and the principal's role hash: they never allocate.
 *
 * Role membership is a uthash set keyed by the "role:<name>" strings of
 * p->roles (the keys are borrowed from that array), so an ACL or CLP key is
 * tested in O(1) whatever the number of roles the user holds.
 */
#include "livequery/acl.h"

#include <stdlib.h>
#include <string.h>
#include <uthash.h>

#include "livequery/jsonout.h"

/* Parse.Error.OPERATION_FORBIDDEN, and OBJECT_NOT_FOUND (the code Parse
 * Server uses for "needs to be authenticated"). */
#define LQ_ACL_ERR_FORBIDDEN LQ_PARSE_ERR_FORBIDDEN
#define LQ_ACL_ERR_NEED_AUTH LQ_PARSE_ERR_NOT_FOUND

#define ROLE_PREFIX "role:"
#define ROLE_PREFIX_LEN 5
#define USERFIELD_PREFIX "userField:"
#define USERFIELD_PREFIX_LEN 10

struct lq_role_set {
    const char *entry; /* borrowed from lq_principals.roles */
    UT_hash_handle hh;
};

/*---- string lists -----------------------------------------------------------*/

/* A growable NULL-terminated list of owned strings. */
typedef struct strv {
    char **v;
    size_t n, cap;
} strv;

static int strv_has(const strv *s, const char *x)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->v[i], x) == 0)
            return 1;
    return 0;
}

/* Appends x (steals it) unless it is already there (then frees it). */
static void strv_add_owned(strv *s, char *x)
{
    if (strv_has(s, x)) {
        free(x);
        return;
    }
    if (s->n + 2 > s->cap) {
        s->cap = s->cap ? s->cap * 2 : 8;
        s->v = lq_xrealloc(s->v, s->cap * sizeof(*s->v));
    }
    s->v[s->n++] = x;
    s->v[s->n] = NULL;
}

/* Appends a copy of x unless it is already there. */
static void strv_add(strv *s, const char *x)
{
    if (!strv_has(s, x))
        strv_add_owned(s, lq_xstrdup(x));
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The list, sorted; NULL (and nothing allocated) when empty. */
static char **strv_finish_sorted(strv *s)
{
    if (s->n == 0) {
        free(s->v);
        return NULL;
    }
    qsort(s->v, s->n, sizeof(*s->v), cmp_str);
    return s->v;
}

void lq_strv_free(char **v)
{
    if (v == NULL)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

int lq_strv_equal(const char *const *a, const char *const *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    for (; *a && *b; a++, b++)
        if (strcmp(*a, *b) != 0)
            return 0;
    return *a == NULL && *b == NULL;
}

/* 1 when the JSON array arr holds the string x. */
static int json_array_has_string(const json_t *arr, const char *x)
{
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(arr, i));
        if (s && strcmp(s, x) == 0)
            return 1;
    }
    return 0;
}

/* JavaScript truthiness of a JSON value (absent = undefined = false). */
static int js_truthy(const json_t *v)
{
    switch (v ? json_typeof(v) : JSON_NULL) {
    case JSON_TRUE:
    case JSON_OBJECT:
    case JSON_ARRAY:
        return 1;
    case JSON_STRING:
        return json_string_length(v) > 0;
    case JSON_INTEGER:
        return json_integer_value(v) != 0;
    case JSON_REAL:
        return json_real_value(v) != 0.0; /* NaN cannot come out of a JSON text */
    default:
        return 0;
    }
}

/*---- principals -------------------------------------------------------------*/

static char *no_roles[] = {NULL};
static lq_principals anonymous_p = {.refs = 1, .roles = no_roles};
static lq_principals master_p = {.refs = 1, .master = 1, .roles = no_roles};

static int is_singleton(const lq_principals *p)
{
    return p == &anonymous_p || p == &master_p;
}

lq_principals *lq_principals_anonymous(void)
{
    return &anonymous_p;
}

lq_principals *lq_principals_master(void)
{
    return &master_p;
}

lq_principals *lq_principals_new_user(const char *user_id)
{
    lq_principals *p = lq_xcalloc(1, sizeof(*p));
    p->refs = 1;
    p->user_id = lq_xstrdup(user_id);
    p->roles = lq_xcalloc(1, sizeof(*p->roles));
    return p;
}

lq_principals *lq_principals_ref(lq_principals *p)
{
    if (p != NULL && !is_singleton(p))
        p->refs++;
    return p;
}

/* Frees the roles and their hash (not p->roles' replacement). */
static void roles_release(lq_principals *p)
{
    /* Entries were added in array order, so the hash head is the array's
     * first element: remember it before HASH_CLEAR resets the head. */
    lq_role_set *entries = p->role_set;
    HASH_CLEAR(hh, p->role_set);
    free(entries);
    lq_strv_free(p->roles);
    p->roles = NULL;
    p->nroles = 0;
}

void lq_principals_unref(lq_principals *p)
{
    if (p == NULL || is_singleton(p) || --p->refs > 0)
        return;
    roles_release(p);
    free(p->user_id);
    free(p);
}

int lq_principals_set_roles(lq_principals *p, const char *const *names, size_t n)
{
    strv s = {NULL, 0, 0};

    if (p == NULL || is_singleton(p))
        return 0; /* the singletons are immutable and hold no roles */
    for (size_t i = 0; i < n; i++) {
        if (names[i] == NULL)
            continue;
        size_t len = strlen(names[i]);
        char *e = lq_xmalloc(ROLE_PREFIX_LEN + len + 1);
        memcpy(e, ROLE_PREFIX, ROLE_PREFIX_LEN);
        memcpy(e + ROLE_PREFIX_LEN, names[i], len + 1);
        strv_add_owned(&s, e);
    }
    size_t count = s.n;
    char **roles = strv_finish_sorted(&s);
    if (roles == NULL)
        roles = lq_xcalloc(1, sizeof(*roles));

    p->gen++;
    if (lq_strv_equal((const char *const *)roles, (const char *const *)p->roles)) {
        lq_strv_free(roles);
        return 0;
    }
    roles_release(p);
    p->roles = roles;
    p->nroles = count;
    if (count > 0) {
        lq_role_set *entries = lq_xcalloc(count, sizeof(*entries));
        for (size_t i = 0; i < count; i++) {
            entries[i].entry = roles[i];
            HASH_ADD_KEYPTR(hh, p->role_set, entries[i].entry, strlen(entries[i].entry),
                            &entries[i]);
        }
    }
    return 1;
}

int lq_principals_has(const lq_principals *p, const char *entry)
{
    if (p == NULL || entry == NULL)
        return 0;
    if (strcmp(entry, "*") == 0)
        return 1;
    if (p->master)
        return 0;
    if (p->user_id != NULL && strcmp(entry, p->user_id) == 0)
        return 1;
    if (p->role_set != NULL && strncmp(entry, ROLE_PREFIX, ROLE_PREFIX_LEN) == 0) {
        lq_role_set *found = NULL;
        HASH_FIND_STR(p->role_set, entry, found);
        return found != NULL;
    }
    return 0;
}

unsigned lq_acl_key_hash(const char *entry, size_t len)
{
    unsigned h;
    HASH_VALUE(entry, len, h);
    return h;
}

int lq_principals_has_hashed(const lq_principals *p, const char *entry, size_t len, unsigned hash)
{
    if (p == NULL)
        return 0;
    if (len == 1 && entry[0] == '*')
        return 1;
    if (p->master)
        return 0;
    if (p->user_id != NULL && strcmp(entry, p->user_id) == 0)
        return 1;
    if (p->role_set != NULL && len > ROLE_PREFIX_LEN && memcmp(entry, ROLE_PREFIX, ROLE_PREFIX_LEN) == 0) {
        lq_role_set *found = NULL;
        HASH_FIND_BYHASHVALUE(hh, p->role_set, entry, len, hash, found);
        return found != NULL;
    }
    return 0;
}

/*---- object ACL -------------------------------------------------------------*/

int lq_acl_can_read(const lq_principals *p, const json_t *obj)
{
    const char *key;
    json_t *v;

    if (p == NULL)
        return 0;
    if (p->master)
        return 1;
    const json_t *acl = json_object_get(obj, "ACL");
    if (acl == NULL || json_is_null(acl))
        return 1;
    if (!json_is_object(acl))
        return 0;
    json_object_foreach ((json_t *)acl, key, v) {
        if (json_is_true(json_object_get(v, "read")) && lq_principals_has(p, key))
            return 1;
    }
    return 0;
}

/*---- class-level permissions ------------------------------------------------*/

int lq_clp_is_get(const json_t *where)
{
    return json_is_object(where) && json_object_size(where) == 1 &&
           json_is_string(json_object_get(where, "objectId"));
}

/* Adds the strings of the JSON array arr (others ignored) to s. */
static void add_string_array(strv *s, const json_t *arr)
{
    size_t n = json_array_size(arr);
    for (size_t i = 0; i < n; i++) {
        const char *f = json_string_value(json_array_get(arr, i));
        if (f != NULL)
            strv_add(s, f);
    }
}

lq_clp_verdict lq_clp_check(const json_t *clp, const char *class_name, int is_get,
                            const lq_principals *p, char ***pointer_fields, lq_error *err)
{
    const char *op = is_get ? "get" : "find";
    const char *key;
    json_t *v;
    strv fields = {NULL, 0, 0};
    lq_clp_verdict verdict;

    if (pointer_fields != NULL)
        *pointer_fields = NULL;
    if (p == NULL)
        p = &anonymous_p;
    /* A CLP that is not an object (JSON null included) is no CLP. */
    if (p->master || !json_is_object(clp))
        return LQ_CLP_ALLOW;
    const json_t *perms = json_object_get(clp, op);
    if (!json_is_object(perms))
        perms = NULL; /* locked: as {} */

    if (js_truthy(json_object_get(perms, "*")))
        return LQ_CLP_ALLOW;
    if (perms != NULL) {
        json_object_foreach ((json_t *)perms, key, v) {
            if (json_is_true(v) && strcmp(key, "*") != 0 && lq_principals_has(p, key))
                return LQ_CLP_ALLOW;
        }
    }

    add_string_array(&fields, json_object_get(perms, "pointerFields"));
    add_string_array(&fields, json_object_get(clp, "readUserFields"));
    int anonymous = p->user_id == NULL;

    if (js_truthy(json_object_get(perms, "requiresAuthentication")))
        verdict = anonymous ? LQ_CLP_NEED_AUTH : fields.n == 0 ? LQ_CLP_ALLOW : LQ_CLP_POINTER;
    else if (fields.n > 0)
        verdict = anonymous && is_get ? LQ_CLP_NEED_AUTH : LQ_CLP_POINTER;
    else
        verdict = LQ_CLP_FORBIDDEN;

    if (verdict == LQ_CLP_POINTER && pointer_fields != NULL) {
        *pointer_fields = fields.v; /* n > 0: never NULL */
        fields.v = NULL;
    }
    lq_strv_free(fields.v);
    if (verdict == LQ_CLP_FORBIDDEN)
        lq_error_set(err, LQ_ACL_ERR_FORBIDDEN, "Permission denied for action %s on class %s.", op,
                     class_name ? class_name : "");
    else if (verdict == LQ_CLP_NEED_AUTH)
        lq_error_set(err, LQ_ACL_ERR_NEED_AUTH,
                     "Permission denied, user needs to be authenticated.");
    return verdict;
}

/* 1 when v is {"__type":"Pointer","className":"_User","objectId":uid}. */
static int is_user_pointer(const json_t *v, const char *uid)
{
    const char *t = json_string_value(json_object_get(v, "__type"));
    const char *c = json_string_value(json_object_get(v, "className"));
    const char *id = json_string_value(json_object_get(v, "objectId"));
    return t && c && id && strcmp(t, "Pointer") == 0 && strcmp(c, "_User") == 0 &&
           strcmp(id, uid) == 0;
}

int lq_clp_pointer_match(const char *const *fields, const lq_principals *p, const json_t *obj)
{
    if (p == NULL)
        return 0;
    if (p->master)
        return 1;
    if (p->user_id == NULL)
        return 0;
    for (; fields && *fields; fields++) {
        const json_t *v = json_object_get(obj, *fields);
        if (json_is_array(v)) {
            size_t n = json_array_size(v);
            for (size_t i = 0; i < n; i++)
                if (is_user_pointer(json_array_get(v, i), p->user_id))
                    return 1;
        } else if (is_user_pointer(v, p->user_id)) {
            return 1;
        }
    }
    return 0;
}

/*---- protectedFields --------------------------------------------------------*/

/* One applicable protectedFields tier: its JSON list (NULL: none), plus
 * "email" for the "*" tier of _User (Parse's default server option). */
typedef struct tier {
    const json_t *list;
    int with_email;
} tier;

static int tier_has(const tier *t, const char *f)
{
    return (t->with_email && strcmp(f, "email") == 0) || json_array_has_string(t->list, f);
}

char **lq_protected_static(const json_t *clp, const char *class_name, const json_t *where,
                           const lq_principals *p)
{
    const json_t *pf = json_object_get(clp, "protectedFields");
    int is_user_class = class_name && strcmp(class_name, "_User") == 0;
    tier *tiers = NULL;
    size_t ntiers = 0, cap = 0;
    const char *key;
    json_t *v;
    strv out = {NULL, 0, 0};

    if (p == NULL || p->master)
        return NULL;
    /* Parse: aclGroup.indexOf(query.objectId) > -1, for a plain string id. */
    const char *qid = json_string_value(json_object_get(where, "objectId"));
    if (qid != NULL && p->user_id != NULL && strcmp(qid, p->user_id) == 0)
        return NULL;
    if (!json_is_object(pf))
        pf = NULL;

    int star_seen = 0;
    json_object_foreach ((json_t *)pf, key, v) {
        int applies;
        if (strcmp(key, "*") == 0)
            applies = star_seen = 1;
        else if (p->user_id == NULL || strncmp(key, USERFIELD_PREFIX, USERFIELD_PREFIX_LEN) == 0)
            applies = 0;
        else if (strcmp(key, "authenticated") == 0 || strcmp(key, p->user_id) == 0)
            applies = 1;
        else
            applies = strncmp(key, ROLE_PREFIX, ROLE_PREFIX_LEN) == 0 && lq_principals_has(p, key);
        int with_email = is_user_class && strcmp(key, "*") == 0;
        /* a null or non-list tier constrains nothing (Parse skips falsy sets) */
        if (!applies || (!json_is_array(v) && !with_email))
            continue;
        if (ntiers == cap) {
            cap = cap ? cap * 2 : 4;
            tiers = lq_xrealloc(tiers, cap * sizeof(*tiers));
        }
        tiers[ntiers].list = json_is_array(v) ? v : NULL;
        tiers[ntiers].with_email = with_email;
        ntiers++;
    }
    if (is_user_class && !star_seen) {
        if (ntiers == cap) {
            cap = cap ? cap * 2 : 4;
            tiers = lq_xrealloc(tiers, cap * sizeof(*tiers));
        }
        tiers[ntiers].list = NULL;
        tiers[ntiers].with_email = 1;
        ntiers++;
    }

    /* The intersection is a subset of the first tier: test its members. */
    if (ntiers > 0) {
        size_t n = json_array_size(tiers[0].list);
        for (size_t i = 0; i <= n; i++) {
            const char *f = i < n ? json_string_value(json_array_get(tiers[0].list, i))
                                  : tiers[0].with_email ? "email" : NULL;
            if (f == NULL)
                continue;
            size_t t = 1;
            while (t < ntiers && tier_has(&tiers[t], f))
                t++;
            if (t == ntiers)
                strv_add(&out, f);
        }
    }
    free(tiers);
    return strv_finish_sorted(&out);
}

int lq_protected_dynamic(const json_t *clp, const char *class_name)
{
    const char *key;
    json_t *v;

    if (class_name && strcmp(class_name, "_User") == 0)
        return 1;
    const json_t *pf = json_object_get(clp, "protectedFields");
    if (!json_is_object(pf))
        return 0;
    json_object_foreach ((json_t *)pf, key, v) {
        if (strncmp(key, USERFIELD_PREFIX, USERFIELD_PREFIX_LEN) == 0)
            return 1;
    }
    return 0;
}

/* Parse filterSensitiveData: obj[f] (or an element of it) has objectId uid;
 * className is not checked. */
static int names_user(const json_t *v, const char *uid)
{
    if (json_is_array(v)) {
        size_t n = json_array_size(v);
        for (size_t i = 0; i < n; i++) {
            const char *id = json_string_value(json_object_get(json_array_get(v, i), "objectId"));
            if (id && strcmp(id, uid) == 0)
                return 1;
        }
        return 0;
    }
    const char *id = json_string_value(json_object_get(v, "objectId"));
    return id && strcmp(id, uid) == 0;
}

char **lq_protected_for_object(const json_t *clp, const char *class_name,
                               const char *const *static_hidden, const lq_principals *p,
                               const json_t *obj)
{
    const char *key;
    json_t *v;
    strv out = {NULL, 0, 0};

    if (p == NULL || p->master)
        return NULL;
    int is_user_class = class_name && strcmp(class_name, "_User") == 0;
    if (is_user_class && p->user_id != NULL) {
        const char *oid = json_string_value(json_object_get(obj, "objectId"));
        if (oid != NULL && strcmp(oid, p->user_id) == 0)
            return NULL;
    }
    for (const char *const *f = static_hidden; f && *f; f++)
        strv_add(&out, *f);

    const json_t *pf = json_object_get(clp, "protectedFields");
    if (p->user_id != NULL && out.n > 0 && json_is_object(pf)) {
        json_object_foreach ((json_t *)pf, key, v) {
            if (strncmp(key, USERFIELD_PREFIX, USERFIELD_PREFIX_LEN) != 0 || !json_is_array(v))
                continue;
            if (!names_user(json_object_get(obj, key + USERFIELD_PREFIX_LEN), p->user_id))
                continue;
            size_t k = 0; /* keep only the fields this tier hides too */
            for (size_t i = 0; i < out.n; i++) {
                if (json_array_has_string(v, out.v[i]))
                    out.v[k++] = out.v[i];
                else
                    free(out.v[i]);
            }
            out.n = k;
            out.v[k] = NULL;
        }
    }
    if (is_user_class) {
        strv_add(&out, "sessionToken");
        strv_add(&out, "authData");
    }
    return strv_finish_sorted(&out);
}

/* 1 when hidden names the field of the (possibly dotted) key; *field gets it. */
static int hidden_field(const char *const *hidden, const char *key, const char **field)
{
    size_t len = strcspn(key, ".");
    for (; *hidden; hidden++) {
        if (strncmp(*hidden, key, len) == 0 && (*hidden)[len] == '\0') {
            if (field != NULL)
                *field = *hidden;
            return 1;
        }
    }
    return 0;
}

static int where_uses(const char *const *hidden, const json_t *where, const char **field)
{
    const char *key;
    json_t *v;

    json_object_foreach ((json_t *)where, key, v) {
        if (strcmp(key, "$or") == 0 || strcmp(key, "$and") == 0 || strcmp(key, "$nor") == 0) {
            size_t n = json_array_size(v);
            for (size_t i = 0; i < n; i++)
                if (where_uses(hidden, json_array_get(v, i), field))
                    return 1;
        } else if (hidden_field(hidden, key, field)) {
            return 1;
        }
    }
    return 0;
}

int lq_protected_in_query(const char *const *hidden, const json_t *where,
                          const char *const *watch, const char **field)
{
    if (hidden == NULL || *hidden == NULL)
        return 0;
    if (json_is_object(where) && where_uses(hidden, where, field))
        return 1;
    for (; watch && *watch; watch++)
        if (hidden_field(hidden, *watch, field))
            return 1;
    return 0;
}
