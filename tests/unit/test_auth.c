/*
 * test_auth.c - session tokens and roles against the MongoDB wire-protocol
 * test server (tests/mongo/mockmongo.py): lookups, roles with inheritance and
 * cycles, the cache, expiry, change events, races, the revalidation
 * backstop, and the no-MongoDB / unreachable cases. Also the other modules'
 * jobs on the lookup threads: the query op's snapshot read (snapshot.h).
 *
 * The mock is started once; fixtures are written with libmongoc directly.
 * Each case drives lq_auth_poll in a loop woken by the wake callback.
 */
#include <errno.h>
#include <mongoc/mongoc.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "livequery/auth.h"
#include "livequery/json.h"
#include "livequery/log.h"
#include "livequery/metrics.h"
#include "livequery/snapshot.h"
#include "lq_test.h"

#define PYTHON "/usr/bin/python3"
#define MOCK LQ_SOURCE_DIR "/tests/mongo/mockmongo.py"

/*---- the mock server and fixtures ---------------------------------------------*/

static pid_t mock_pid = -1;
static int mock_in = -1, mock_out = -1;
static char mongo_uri[128];
static mongoc_client_t *mc;
static int64_t t0; /* fixture time */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int mock_start(void)
{
    int in[2], out[2];
    if (access(PYTHON, X_OK) != 0 || access(MOCK, R_OK) != 0) {
        fprintf(stderr, "test_auth needs %s and %s (scripts/deps.sh installs python3-mockupdb, "
                        "python3-pymongo)\n", PYTHON, MOCK);
        return -1;
    }
    if (pipe(in) != 0 || pipe(out) != 0)
        return -1;
    mock_pid = fork();
    if (mock_pid < 0)
        return -1;
    if (mock_pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        execl(PYTHON, PYTHON, MOCK, "--port", "0", "--control-port", "0", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    mock_in = in[1];
    mock_out = out[0];

    char line[512];
    size_t n = 0;
    int64_t deadline = mono_ms() + 20000;
    while (n < sizeof(line) - 1) {
        struct pollfd pfd = {mock_out, POLLIN, 0};
        int left = (int)(deadline - mono_ms());
        if (left <= 0 || poll(&pfd, 1, left) <= 0)
            break;
        ssize_t r = read(mock_out, line + n, 1);
        if (r <= 0)
            break;
        if (line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    json_error_t e;
    json_t *j = json_loads(line, 0, &e);
    json_t *port = json_object_get(j, "mongo_port");
    if (!json_is_integer(port)) {
        fprintf(stderr, "mockmongo did not start (first line: '%s')\n", line);
        json_decref(j);
        return -1;
    }
    snprintf(mongo_uri, sizeof(mongo_uri), "mongodb://127.0.0.1:%d/?replicaSet=rs0",
             (int)json_integer_value(port));
    json_decref(j);
    return 0;
}

static void mock_stop(void)
{
    if (mock_in >= 0)
        close(mock_in); /* the mock exits when stdin closes */
    if (mock_pid > 0) {
        int64_t deadline = mono_ms() + 3000;
        while (waitpid(mock_pid, NULL, WNOHANG) == 0) {
            if (mono_ms() > deadline) {
                kill(mock_pid, SIGTERM);
                waitpid(mock_pid, NULL, 0);
                break;
            }
            usleep(10000);
        }
    }
    if (mock_out >= 0)
        close(mock_out);
}

static void must(bool ok, const bson_error_t *e, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fixture %s failed: %s\n", what, e->message);
        exit(1);
    }
}

static void ins(const char *coll_name, bson_t *doc)
{
    bson_error_t e;
    mongoc_collection_t *c = mongoc_client_get_collection(mc, "parse", coll_name);
    must(mongoc_collection_insert_one(c, doc, NULL, NULL, &e), &e, "insert");
    mongoc_collection_destroy(c);
    bson_destroy(doc);
}

static void del(const char *coll_name, bson_t *filter)
{
    bson_error_t e;
    mongoc_collection_t *c = mongoc_client_get_collection(mc, "parse", coll_name);
    must(mongoc_collection_delete_one(c, filter, NULL, NULL, &e), &e, "delete");
    mongoc_collection_destroy(c);
    bson_destroy(filter);
}

static void set_name(const char *role_id, const char *name)
{
    bson_error_t e;
    mongoc_collection_t *c = mongoc_client_get_collection(mc, "parse", "_Role");
    bson_t *q = BCON_NEW("_id", BCON_UTF8(role_id));
    bson_t *u = BCON_NEW("$set", "{", "name", BCON_UTF8(name), "}");
    must(mongoc_collection_update_one(c, q, u, NULL, NULL, &e), &e, "update");
    bson_destroy(q);
    bson_destroy(u);
    mongoc_collection_destroy(c);
}

static void user(const char *id)
{
    ins("_User", BCON_NEW("_id", BCON_UTF8(id), "username", BCON_UTF8(id)));
}

/* expires: 0 none; legacy: store as _expiresAt */
static void session(const char *id, const char *token, const char *uid, int64_t expires, int legacy)
{
    char p[64];
    bson_t *d = BCON_NEW("_id", BCON_UTF8(id), "_session_token", BCON_UTF8(token));
    if (uid) {
        snprintf(p, sizeof(p), "_User$%s", uid);
        BSON_APPEND_UTF8(d, "_p_user", p);
    }
    if (expires)
        BSON_APPEND_DATE_TIME(d, legacy ? "_expiresAt" : "expiresAt", expires);
    ins("_Session", d);
}

static void role(const char *id, const char *name)
{
    ins("_Role", BCON_NEW("_id", BCON_UTF8(id), "name", BCON_UTF8(name)));
}

/* A row of owner's relation: users (member = user id) or roles (member = child role id). */
static void join(const char *rel, const char *owner, const char *member)
{
    ins(strcmp(rel, "users") == 0 ? "_Join:users:_Role" : "_Join:roles:_Role",
        BCON_NEW("owningId", BCON_UTF8(owner), "relatedId", BCON_UTF8(member)));
}

static void unjoin(const char *rel, const char *owner, const char *member)
{
    del(strcmp(rel, "users") == 0 ? "_Join:users:_Role" : "_Join:roles:_Role",
        BCON_NEW("owningId", BCON_UTF8(owner), "relatedId", BCON_UTF8(member)));
}

/*
 * Roles (parent <- child: members of the child get the parent):
 *   coordinator <- staff, manager <- coordinator, manager <- admin,
 *   loopA <- manager, loopB <- loopA, loopA <- loopB (a cycle),
 *   (missing rGhost) <- staff, other <- (missing rGhost2).
 * Members: staff: alice, dave; admin: bob; (missing rMissing): carol.
 */
static void fixtures(void)
{
    t0 = now_ms();
    const char *users[] = {"uA", "uB", "uC", "uD", "uE", "uF"};
    for (size_t i = 0; i < sizeof(users) / sizeof(users[0]); i++)
        user(users[i]);
    role("rStaff", "staff");
    role("rCoord", "coordinator");
    role("rMgr", "manager");
    role("rAdmin", "admin");
    role("rLoopA", "loopA");
    role("rLoopB", "loopB");
    role("rOther", "other");
    join("roles", "rCoord", "rStaff");
    join("roles", "rMgr", "rCoord");
    join("roles", "rMgr", "rAdmin");
    join("roles", "rLoopA", "rMgr");
    join("roles", "rLoopB", "rLoopA");
    join("roles", "rLoopA", "rLoopB");
    join("roles", "rGhost", "rStaff");
    join("roles", "rOther", "rGhost2");
    join("users", "rStaff", "uA");
    join("users", "rStaff", "uD");
    join("users", "rAdmin", "uB");
    join("users", "rMissing", "uC");

    session("sA", "r:alice1", "uA", t0 + 3600000, 0);
    session("sA2", "r:alice2", "uA", 0, 0);
    session("sB", "r:bob1", "uB", 0, 0);
    session("sC", "r:carol1", "uC", t0 + 3600000, 1);
    session("sD", "r:dave1", "uD", 0, 0);
    session("sE", "r:erin1", "uE", 0, 0);
    session("sF", "r:frank1", "uF", 0, 0);
    session("sX1", "r:expired", "uA", t0 - 1000, 0);
    session("sX2", "r:expired2", "uA", t0 - 1000, 1);
    session("sG", "r:ghostuser", "nobody", 0, 0);
    session("sN", "r:nouser", NULL, 0, 0);
}

/*---- driving lq_auth ----------------------------------------------------------*/

static atomic_int woke;

static void on_wake(void *ud)
{
    (void)ud;
    atomic_store(&woke, 1);
}

typedef struct rec {
    int changed;            /* session_changed calls */
    int saw_valid;          /* ... with state VALID */
    lq_session *last;
    lq_session_state last_state;
    int roles;              /* roles_changed calls */
    char roles_user[64];
    char roles_str[512];
} rec;

static void roles_text(const lq_principals *p, char *buf, size_t cap)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; p && i < p->nroles; i++)
        n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", i ? "," : "", p->roles[i]);
}

static void on_session_changed(void *ud, lq_session *s)
{
    rec *r = ud;
    r->changed++;
    r->last = s;
    r->last_state = s->state;
    if (s->state == LQ_SESSION_VALID)
        r->saw_valid++;
}

static void on_roles_changed(void *ud, lq_principals *p)
{
    rec *r = ud;
    r->roles++;
    snprintf(r->roles_user, sizeof(r->roles_user), "%s", p->user_id ? p->user_id : "");
    roles_text(p, r->roles_str, sizeof(r->roles_str));
}

static const lq_auth_hooks hooks = {on_session_changed, on_roles_changed, NULL};

static void poll_once(lq_auth *a, rec *r)
{
    atomic_store(&woke, 0);
    lq_auth_poll(a, now_ms(), &hooks, r);
}

/* Waits for a wake-up (or step ms). */
static void nap(int step_ms)
{
    int64_t until = mono_ms() + step_ms;
    while (!atomic_load(&woke) && mono_ms() < until)
        usleep(200);
}

/* Polls until cond holds (1) or timeout_ms passes (0). Naps at most 10 ms at a time. */
#define POLL_UNTIL(a, r, cond, timeout_ms)                                                   \
    ({                                                                                       \
        int64_t dl_ = mono_ms() + (timeout_ms);                                              \
        int ok_ = 0;                                                                         \
        for (;;) {                                                                           \
            poll_once((a), (r));                                                             \
            if (cond) {                                                                      \
                ok_ = 1;                                                                     \
                break;                                                                       \
            }                                                                                \
            if (mono_ms() >= dl_)                                                            \
                break;                                                                       \
            nap(10);                                                                         \
        }                                                                                    \
        ok_;                                                                                 \
    })

static lq_config cfg_mongo(void)
{
    lq_config c;
    memset(&c, 0, sizeof(c));
    c.mongodb_uri = mongo_uri;
    c.collection_prefix = (char *)"";
    c.auth_threads = 2;
    c.auth_cache_size = 1000;
    c.auth_cache_ttl_ms = 30000;
    c.auth_revalidate_s = 0;
    return c;
}

static lq_auth *started(const lq_config *c)
{
    lq_auth *a = lq_auth_new(c, on_wake, NULL);
    if (lq_auth_start(a) != LQ_OK) {
        lq_auth_free(a);
        return NULL;
    }
    return a;
}

/* Gets token and waits for the lookup to end. */
static lq_session *resolve(lq_auth *a, rec *r, const char *token)
{
    lq_session *s = lq_auth_get(a, token);
    POLL_UNTIL(a, r, s->state != LQ_SESSION_PENDING, 5000);
    return s;
}

static lq_change *change(const char *cls, lq_change_op op, const char *object, const char *original)
{
    static lq_change ev;
    json_error_t e;
    json_decref(ev.object);
    json_decref(ev.original);
    memset(&ev, 0, sizeof(ev));
    snprintf(ev.class_name, sizeof(ev.class_name), "%s", cls);
    ev.op = op;
    ev.object = object ? json_loads(object, 0, &e) : NULL;
    ev.original = original ? json_loads(original, 0, &e) : NULL;
    return &ev;
}

static void change_done(void)
{
    lq_change *ev = change("", LQ_CHANGE_CREATE, NULL, NULL);
    (void)ev;
}

#define ROLES_ALICE "role:coordinator,role:loopA,role:loopB,role:manager,role:staff"
#define ROLES_BOB "role:admin,role:loopA,role:loopB,role:manager"

/*---- cases ----------------------------------------------------------------------*/

static void test_watches_class(void)
{
    ASSERT_TRUE(lq_auth_watches_class("_Session"));
    ASSERT_TRUE(lq_auth_watches_class("_User"));
    ASSERT_TRUE(lq_auth_watches_class("_Role"));
    ASSERT_TRUE(lq_auth_watches_class("_Join:users:_Role"));
    ASSERT_TRUE(lq_auth_watches_class("_Join:roles:_Role"));
    ASSERT_TRUE(!lq_auth_watches_class("GameScore"));
    ASSERT_TRUE(!lq_auth_watches_class("_Installation"));
    ASSERT_TRUE(!lq_auth_watches_class(""));
}

static void test_valid_roles(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    rec r = {0};
    char buf[512];
    ASSERT_TRUE(a != NULL);
    int64_t lookups = LQ_METRIC_GET(auth_lookups), loads = LQ_METRIC_GET(auth_role_loads);

    lq_session *s = lq_auth_get(a, "r:alice1");
    ASSERT_EQ(s->state, LQ_SESSION_PENDING);
    ASSERT_TRUE(s->who == NULL);
    ASSERT_TRUE(POLL_UNTIL(a, &r, s->state != LQ_SESSION_PENDING, 5000));
    ASSERT_EQ(s->state, LQ_SESSION_VALID);
    ASSERT_EQ(r.changed, 1);
    ASSERT_TRUE(r.last == s);
    ASSERT_STREQ(s->session_id, "sA");
    ASSERT_EQ(s->expires_ms, t0 + 3600000);
    ASSERT_STREQ(s->who->user_id, "uA");
    roles_text(s->who, buf, sizeof(buf));
    ASSERT_STREQ(buf, ROLES_ALICE); /* inherited, sorted, the cycle cut, the ghost ignored */
    ASSERT_EQ(LQ_METRIC_GET(auth_lookups), lookups + 1);
    ASSERT_EQ(LQ_METRIC_GET(auth_role_loads), loads + 1);

    /* the direction: admin's members get manager (and up), not staff or coordinator */
    lq_session *b = resolve(a, &r, "r:bob1");
    ASSERT_EQ(b->state, LQ_SESSION_VALID);
    ASSERT_EQ(b->expires_ms, 0);
    roles_text(b->who, buf, sizeof(buf));
    ASSERT_STREQ(buf, ROLES_BOB);

    /* a member of a missing role has none; legacy _expiresAt is read */
    lq_session *cs = resolve(a, &r, "r:carol1");
    ASSERT_EQ(cs->state, LQ_SESSION_VALID);
    ASSERT_EQ(cs->who->nroles, 0);
    ASSERT_EQ(cs->expires_ms, t0 + 3600000);

    /* two sessions of one user share its principals */
    lq_session *s2 = resolve(a, &r, "r:alice2");
    ASSERT_EQ(s2->state, LQ_SESSION_VALID);
    ASSERT_TRUE(s2->who == s->who);
    ASSERT_EQ(r.roles, 0);
    ASSERT_EQ(lq_auth_count(a), 4);
    ASSERT_EQ(LQ_METRIC_GET(auth_sessions), 4);

    lq_auth_release(a, s);
    lq_auth_release(a, b);
    lq_auth_release(a, cs);
    lq_auth_release(a, s2);
    ASSERT_EQ(lq_auth_count(a), 4); /* cached while unused */
    lq_auth_free(a);
}

static void test_invalid_cached(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    rec r = {0};
    ASSERT_TRUE(a != NULL);
    int64_t invalid = LQ_METRIC_GET(auth_tokens_invalid);

    lq_session *s = resolve(a, &r, "r:unknown");
    ASSERT_EQ(s->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(s->why, "not found");
    ASSERT_TRUE(s->who == NULL);
    lq_auth_release(a, s);

    int64_t lookups = LQ_METRIC_GET(auth_lookups), hits = LQ_METRIC_GET(auth_cache_hits);
    lq_session *again = lq_auth_get(a, "r:unknown");
    ASSERT_TRUE(again == s);
    ASSERT_EQ(again->state, LQ_SESSION_INVALID);
    poll_once(a, &r);
    ASSERT_EQ(LQ_METRIC_GET(auth_lookups), lookups);
    ASSERT_EQ(LQ_METRIC_GET(auth_cache_hits), hits + 1);
    lq_auth_release(a, again);

    lq_session *x = resolve(a, &r, "r:expired");
    ASSERT_EQ(x->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(x->why, "expired");
    ASSERT_STREQ(x->session_id, "sX1");
    lq_session *x2 = resolve(a, &r, "r:expired2");
    ASSERT_EQ(x2->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(x2->why, "expired");
    lq_session *g = resolve(a, &r, "r:ghostuser");
    ASSERT_EQ(g->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(g->why, "user missing");
    lq_session *n = resolve(a, &r, "r:nouser");
    ASSERT_EQ(n->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(n->why, "no user");
    ASSERT_EQ(LQ_METRIC_GET(auth_tokens_invalid), invalid + 5);
    ASSERT_EQ(r.changed, 5);
    ASSERT_EQ(r.saw_valid, 0);
    lq_auth_release(a, x);
    lq_auth_release(a, x2);
    lq_auth_release(a, g);
    lq_auth_release(a, n);
    ASSERT_EQ(lq_auth_count(a), 5);
    lq_auth_free(a);
}

static void test_expiry_while_referenced(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    rec r = {0};
    ASSERT_TRUE(a != NULL);
    int64_t revoked = LQ_METRIC_GET(auth_sessions_revoked);
    int64_t exp = now_ms() + 1500;
    session("sSoon", "r:soon", "uA", exp, 0);

    lq_session *s = resolve(a, &r, "r:soon");
    ASSERT_EQ(s->state, LQ_SESSION_VALID);
    ASSERT_EQ(s->expires_ms, exp);
    ASSERT_TRUE(POLL_UNTIL(a, &r, s->state != LQ_SESSION_VALID, 4000));
    int64_t at = now_ms();
    ASSERT_TRUE(at >= exp);
    ASSERT_TRUE(at < exp + 500);
    ASSERT_EQ(s->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(s->why, "expired");
    ASSERT_TRUE(s->who == NULL);
    ASSERT_EQ(r.changed, 2);
    ASSERT_TRUE(r.last == s && r.last_state == LQ_SESSION_INVALID);
    ASSERT_EQ(LQ_METRIC_GET(auth_sessions_revoked), revoked + 1);
    lq_auth_release(a, s);
    lq_auth_free(a);
}

static void test_session_delete_event(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    rec r = {0};
    ASSERT_TRUE(a != NULL);

    lq_session *s = resolve(a, &r, "r:erin1");
    ASSERT_EQ(s->state, LQ_SESSION_VALID);
    del("_Session", BCON_NEW("_id", BCON_UTF8("sE")));
    /* a delete from the tailer carries only the objectId */
    lq_auth_on_change(a, change("_Session", LQ_CHANGE_DELETE,
                                "{\"objectId\":\"sE\",\"className\":\"_Session\",\"ACL\":{}}", NULL));
    ASSERT_EQ(s->state, LQ_SESSION_INVALID); /* at once: no other caller can see it VALID */
    ASSERT_EQ(r.changed, 1);
    poll_once(a, &r);
    ASSERT_EQ(r.changed, 2);
    ASSERT_TRUE(r.last == s);
    ASSERT_STREQ(s->why, "revoked");
    ASSERT_TRUE(s->who == NULL);
    lq_auth_release(a, s);

    /* the revoked token stays cached */
    int64_t lookups = LQ_METRIC_GET(auth_lookups);
    s = lq_auth_get(a, "r:erin1");
    ASSERT_EQ(s->state, LQ_SESSION_INVALID);
    ASSERT_EQ(LQ_METRIC_GET(auth_lookups), lookups);
    lq_auth_release(a, s);
    change_done();
    lq_auth_free(a);
}

static void test_session_update_event(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    rec r = {0};
    char obj[512], past[40];
    ASSERT_TRUE(a != NULL);

    lq_session *s = resolve(a, &r, "r:alice1");
    ASSERT_EQ(s->state, LQ_SESSION_VALID);
    /* the same user, a new expiresAt in the past: expired at the next poll */
    lq_ms_to_iso(now_ms() - 1000, past, sizeof(past));
    snprintf(obj, sizeof(obj),
             "{\"objectId\":\"sA\",\"user\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"uA\"},"
             "\"expiresAt\":{\"__type\":\"Date\",\"iso\":\"%s\"}}", past);
    lq_auth_on_change(a, change("_Session", LQ_CHANGE_UPDATE, obj, NULL));
    poll_once(a, &r);
    ASSERT_EQ(s->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(s->why, "expired");
    ASSERT_EQ(r.changed, 2);
    lq_auth_release(a, s);
    change_done();
    lq_auth_free(a);
}

static void test_user_delete_event(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    rec r = {0};
    ASSERT_TRUE(a != NULL);

    lq_session *s = resolve(a, &r, "r:frank1");
    ASSERT_EQ(s->state, LQ_SESSION_VALID);
    del("_User", BCON_NEW("_id", BCON_UTF8("uF")));
    lq_auth_on_change(a, change("_User", LQ_CHANGE_DELETE, "{\"objectId\":\"uF\",\"className\":\"_User\"}", NULL));
    poll_once(a, &r);
    ASSERT_EQ(s->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(s->why, "user missing");
    ASSERT_EQ(r.changed, 2);
    lq_auth_release(a, s);
    change_done();
    lq_auth_free(a);
}

static void test_join_users_event(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    rec r = {0};
    char buf[512];
    ASSERT_TRUE(a != NULL);

    lq_session *cs = resolve(a, &r, "r:carol1");
    lq_session *as = resolve(a, &r, "r:alice1");
    ASSERT_EQ(cs->state, LQ_SESSION_VALID);
    ASSERT_EQ(cs->who->nroles, 0);
    lq_principals *carol = cs->who;
    uint64_t gen = carol->gen;

    /* carol joins staff: the event names her */
    int64_t loads = LQ_METRIC_GET(auth_role_loads), changes = LQ_METRIC_GET(auth_role_changes);
    join("users", "rStaff", "uC");
    lq_auth_on_change(a, change("_Join:users:_Role", LQ_CHANGE_CREATE,
                                "{\"objectId\":\"j1\",\"relatedId\":\"uC\",\"owningId\":\"rStaff\"}", NULL));
    ASSERT_TRUE(POLL_UNTIL(a, &r, r.roles == 1, 5000));
    ASSERT_STREQ(r.roles_user, "uC");
    ASSERT_STREQ(r.roles_str, ROLES_ALICE);
    ASSERT_TRUE(cs->who == carol); /* updated in place */
    ASSERT_TRUE(carol->gen > gen);
    ASSERT_EQ(LQ_METRIC_GET(auth_role_loads), loads + 1); /* only carol re-read */
    ASSERT_EQ(LQ_METRIC_GET(auth_role_changes), changes + 1);

    /* she leaves: a delete that names nobody re-reads every live user */
    unjoin("users", "rStaff", "uC");
    lq_auth_on_change(a, change("_Join:users:_Role", LQ_CHANGE_DELETE,
                                "{\"objectId\":\"j1\",\"className\":\"_Join:users:_Role\",\"ACL\":{}}", NULL));
    ASSERT_TRUE(POLL_UNTIL(a, &r, r.roles == 2, 5000));
    ASSERT_STREQ(r.roles_user, "uC");
    ASSERT_STREQ(r.roles_str, "");
    ASSERT_TRUE(POLL_UNTIL(a, &r, LQ_METRIC_GET(auth_role_loads) >= loads + 3, 5000));
    poll_once(a, &r);
    ASSERT_EQ(r.roles, 2); /* alice re-read, unchanged: no hook */
    roles_text(as->who, buf, sizeof(buf));
    ASSERT_STREQ(buf, ROLES_ALICE);
    ASSERT_EQ(r.changed, 2); /* only the two lookups */
    lq_auth_release(a, cs);
    lq_auth_release(a, as);
    change_done();
    lq_auth_free(a);
}

static void test_role_events_and_clear_cache(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    rec r = {0};
    char buf[512];
    ASSERT_TRUE(a != NULL);

    lq_session *as = resolve(a, &r, "r:alice1");
    lq_session *bs = resolve(a, &r, "r:bob1");
    lq_session *cs = resolve(a, &r, "r:carol1");
    lq_auth_release(a, cs); /* carol: cached, not in use */
    ASSERT_EQ(lq_auth_count(a), 3);

    /* _Role renamed: every live user is re-read; bob's set changed */
    int64_t loads = LQ_METRIC_GET(auth_role_loads);
    set_name("rAdmin", "administrator");
    lq_auth_on_change(a, change("_Role", LQ_CHANGE_UPDATE, "{\"objectId\":\"rAdmin\",\"name\":\"administrator\"}",
                                "{\"objectId\":\"rAdmin\",\"name\":\"admin\"}"));
    ASSERT_EQ(lq_auth_count(a), 2); /* carol's unused session left the cache instead */
    ASSERT_TRUE(POLL_UNTIL(a, &r, r.roles == 1, 5000));
    ASSERT_STREQ(r.roles_user, "uB");
    ASSERT_STREQ(r.roles_str, "role:administrator,role:loopA,role:loopB,role:manager");
    ASSERT_TRUE(POLL_UNTIL(a, &r, LQ_METRIC_GET(auth_role_loads) >= loads + 2, 5000));
    ASSERT_EQ(LQ_METRIC_GET(auth_role_loads), loads + 2);
    poll_once(a, &r);
    ASSERT_EQ(r.roles, 1);
    set_name("rAdmin", "admin");

    /* _Join:roles:_Role: other <- staff gives alice "other"; bob is re-read too
     * and gets "admin" back (renamed in MongoDB without an event) */
    join("roles", "rOther", "rStaff");
    lq_auth_on_change(a, change("_Join:roles:_Role", LQ_CHANGE_CREATE,
                                "{\"objectId\":\"j2\",\"relatedId\":\"rStaff\",\"owningId\":\"rOther\"}", NULL));
    ASSERT_TRUE(POLL_UNTIL(a, &r, lq_principals_has(as->who, "role:other") &&
                                      lq_principals_has(bs->who, "role:admin"), 5000));
    ASSERT_EQ(r.roles, 3);
    roles_text(as->who, buf, sizeof(buf));
    ASSERT_STREQ(buf, "role:coordinator,role:loopA,role:loopB,role:manager,role:other,role:staff");
    roles_text(bs->who, buf, sizeof(buf));
    ASSERT_STREQ(buf, ROLES_BOB);
    unjoin("roles", "rOther", "rStaff");

    /* clearCache (Parse names the writer): every live user is re-read */
    int64_t clears = LQ_METRIC_GET(auth_cache_clears);
    lq_auth_clear_cache(a, "someWriter");
    ASSERT_EQ(LQ_METRIC_GET(auth_cache_clears), clears + 1);
    ASSERT_TRUE(POLL_UNTIL(a, &r, r.roles == 4, 5000));
    ASSERT_STREQ(r.roles_user, "uA");
    ASSERT_STREQ(r.roles_str, ROLES_ALICE);
    roles_text(bs->who, buf, sizeof(buf));
    ASSERT_STREQ(buf, ROLES_BOB);

    /* the clearCache change event does the same */
    clears = LQ_METRIC_GET(auth_cache_clears);
    loads = LQ_METRIC_GET(auth_role_loads);
    lq_auth_on_change(a, change("", LQ_CHANGE_CLEAR_CACHE, "{\"userId\":\"x\"}", NULL));
    ASSERT_EQ(LQ_METRIC_GET(auth_cache_clears), clears + 1);
    ASSERT_TRUE(POLL_UNTIL(a, &r, LQ_METRIC_GET(auth_role_loads) >= loads + 2, 5000));
    lq_auth_release(a, as);
    lq_auth_release(a, bs);
    change_done();
    lq_auth_free(a);
}

/* Revocation events that arrive while a lookup is in flight, or after its
 * answer is queued but not applied: the answer is discarded and re-read. */
static void test_races(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    rec r = {0};
    ASSERT_TRUE(a != NULL);

    /* the event right after the get */
    session("sR1", "r:race1", "uA", 0, 0);
    lq_session *s = lq_auth_get(a, "r:race1");
    del("_Session", BCON_NEW("_id", BCON_UTF8("sR1")));
    lq_auth_on_change(a, change("_Session", LQ_CHANGE_DELETE, "{\"objectId\":\"sR1\"}", NULL));
    ASSERT_TRUE(POLL_UNTIL(a, &r, s->state != LQ_SESSION_PENDING, 5000));
    ASSERT_EQ(s->state, LQ_SESSION_INVALID);
    ASSERT_EQ(r.saw_valid, 0);
    lq_auth_release(a, s);

    /* the answer (VALID) is queued before the event: it must not win */
    session("sR2", "r:race2", "uA", 0, 0);
    int64_t lookups = LQ_METRIC_GET(auth_lookups);
    atomic_store(&woke, 0);
    s = lq_auth_get(a, "r:race2");
    nap(5000); /* a worker answered; nothing applied yet */
    ASSERT_TRUE(atomic_load(&woke));
    ASSERT_EQ(s->state, LQ_SESSION_PENDING);
    del("_Session", BCON_NEW("_id", BCON_UTF8("sR2")));
    lq_auth_on_change(a, change("_Session", LQ_CHANGE_DELETE, "{\"objectId\":\"sR2\"}", NULL));
    ASSERT_TRUE(POLL_UNTIL(a, &r, s->state != LQ_SESSION_PENDING, 5000));
    ASSERT_EQ(s->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(s->why, "not found");
    ASSERT_EQ(r.saw_valid, 0);
    ASSERT_EQ(LQ_METRIC_GET(auth_lookups), lookups + 2); /* re-run */
    lq_auth_release(a, s);

    /* roles: dave's answer (with staff) is queued, then he leaves staff */
    int64_t loads = LQ_METRIC_GET(auth_role_loads);
    atomic_store(&woke, 0);
    s = lq_auth_get(a, "r:dave1");
    nap(5000);
    ASSERT_TRUE(atomic_load(&woke));
    unjoin("users", "rStaff", "uD");
    lq_auth_on_change(a, change("_Join:users:_Role", LQ_CHANGE_DELETE, NULL,
                                "{\"objectId\":\"j3\",\"relatedId\":\"uD\",\"owningId\":\"rStaff\"}"));
    ASSERT_TRUE(POLL_UNTIL(a, &r, s->state != LQ_SESSION_PENDING, 5000));
    ASSERT_EQ(s->state, LQ_SESSION_VALID);
    ASSERT_EQ(s->who->nroles, 0); /* never the old set */
    ASSERT_EQ(LQ_METRIC_GET(auth_role_loads), loads + 2);
    lq_auth_release(a, s);

    /* a ROLES answer queued before a newer change is re-read too */
    s = resolve(a, &r, "r:dave1");
    join("users", "rStaff", "uD");
    atomic_store(&woke, 0);
    lq_auth_on_change(a, change("_Join:users:_Role", LQ_CHANGE_CREATE, "{\"relatedId\":\"uD\"}", NULL));
    nap(5000); /* the answer with staff is queued */
    ASSERT_TRUE(atomic_load(&woke));
    unjoin("users", "rStaff", "uD");
    lq_auth_on_change(a, change("_Join:users:_Role", LQ_CHANGE_DELETE, "{\"relatedId\":\"uD\"}", NULL));
    loads = LQ_METRIC_GET(auth_role_loads);
    ASSERT_TRUE(POLL_UNTIL(a, &r, LQ_METRIC_GET(auth_role_loads) >= loads + 1, 5000));
    POLL_UNTIL(a, &r, 0, 200); /* let the re-read answer arrive */
    ASSERT_EQ(s->who->nroles, 0);
    ASSERT_EQ(r.roles, 0); /* the stale set was never applied */
    lq_auth_release(a, s);
    change_done();
    lq_auth_free(a);
}

static void test_revalidate(void)
{
    lq_config c = cfg_mongo();
    c.auth_revalidate_s = 1;
    lq_auth *a = started(&c);
    rec r = {0};
    ASSERT_TRUE(a != NULL);
    session("sV", "r:reval", "uB", 0, 0);

    lq_session *s = resolve(a, &r, "r:reval");
    ASSERT_EQ(s->state, LQ_SESSION_VALID);
    /* deleted behind our back: no event; the backstop finds out */
    del("_Session", BCON_NEW("_id", BCON_UTF8("sV")));
    int64_t start = mono_ms();
    ASSERT_TRUE(POLL_UNTIL(a, &r, s->state != LQ_SESSION_VALID, 4000));
    ASSERT_TRUE(mono_ms() - start >= 500);
    ASSERT_EQ(s->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(s->why, "not found");
    ASSERT_EQ(r.changed, 2);
    lq_auth_release(a, s);
    lq_auth_free(a);
}

static void test_no_mongo(void)
{
    lq_config c;
    memset(&c, 0, sizeof(c));
    c.auth_cache_size = 2;
    c.auth_cache_ttl_ms = 100;
    lq_auth *a = lq_auth_new(&c, on_wake, NULL);
    rec r = {0};
    ASSERT_EQ(lq_auth_start(a), LQ_OK);

    lq_session *s = lq_auth_get(a, "r:any");
    ASSERT_EQ(s->state, LQ_SESSION_INVALID);
    ASSERT_STREQ(s->why, "no MongoDB configured");
    ASSERT_EQ(lq_auth_count(a), 1);
    lq_session *s2 = lq_auth_get(a, "r:any");
    ASSERT_TRUE(s2 == s);
    poll_once(a, &r);
    ASSERT_EQ(r.changed, 0);
    lq_auth_release(a, s);
    lq_auth_release(a, s2);

    /* the size bound and the TTL apply to unused entries */
    lq_auth_release(a, lq_auth_get(a, "r:t2"));
    lq_auth_release(a, lq_auth_get(a, "r:t3"));
    ASSERT_EQ(lq_auth_count(a), 2);
    lq_session *held = lq_auth_get(a, "r:held");
    ASSERT_EQ(held->state, LQ_SESSION_INVALID);
    ASSERT_EQ(lq_auth_count(a), 2);
    usleep(150000);
    poll_once(a, &r);
    ASSERT_EQ(lq_auth_count(a), 1); /* only the referenced one */
    lq_auth_free(a);                /* frees the referenced one too */
}

/*---- jobs of other modules: the query op's snapshot ------------------------------*/

static lq_snapshot *snap_done[8];
static int nsnap_done;

static void on_job_done(void *ud, void *arg)
{
    (void)ud;
    if (nsnap_done < 8)
        snap_done[nsnap_done++] = arg;
    else
        lq_snapshot_drop(arg);
}

static const lq_auth_hooks job_hooks = {on_session_changed, on_roles_changed, on_job_done};

static void run_snapshot(lq_auth *a, const char *cls, const char *where, size_t scan_max, lq_snapshot **out)
{
    lq_config c = cfg_mongo();
    lq_query_limits lim;
    lq_query_limits_default(&lim);
    nsnap_done = 0;
    lq_snapshot *s = lq_snapshot_new(42, cls, where, &lim, &c, scan_max, now_ms());
    s->files_url_prefix = NULL; /* c is on this stack frame */
    ASSERT_EQ(lq_auth_submit(a, lq_snapshot_run, lq_snapshot_drop, s), LQ_OK);
    int64_t deadline = mono_ms() + 5000;
    while (nsnap_done == 0 && mono_ms() < deadline) {
        atomic_store(&woke, 0);
        lq_auth_poll(a, now_ms(), &job_hooks, NULL);
        if (nsnap_done == 0)
            nap(10);
    }
    *out = s;
    ASSERT_EQ(nsnap_done, 1);
    ASSERT_TRUE(snap_done[0] == s);
}

/* Objects of the snapshot by objectId, as compact JSON. */
static const json_t *snap_obj(const lq_snapshot *s, const char *id)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(json_string_value(json_object_get(s->objects[i], "objectId")), id) == 0)
            return s->objects[i];
    return NULL;
}

static void test_snapshot_job(void)
{
    lq_config c = cfg_mongo();
    lq_auth *a = started(&c);
    ASSERT_TRUE(a != NULL);
    ins("_SCHEMA", BCON_NEW("_id", BCON_UTF8("SnapUnit"), "n", BCON_UTF8("number"), "owner",
                            BCON_UTF8("*_User")));
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof(id), "su%d", i);
        bson_t *d = BCON_NEW("_id", BCON_UTF8(id), "n", BCON_INT32(i), "_p_owner", BCON_UTF8("_User$uA"),
                             "_created_at", BCON_DATE_TIME(1764000000000), "_rperm", "[", BCON_UTF8("uA"), "]",
                             "_wperm", "[", "]", "_hashed_password", BCON_UTF8("x"));
        ins("SnapUnit", d);
    }
    /* the where is applied to the converted objects; the read names its cluster time */
    lq_snapshot *s;
    run_snapshot(a, "SnapUnit", "{\"n\":{\"$gte\":2}}", 100, &s);
    ASSERT_EQ(s->status, LQ_SNAPSHOT_OK);
    ASSERT_TRUE(s->ct != 0);
    ASSERT_EQ(s->n, 3);
    ASSERT_EQ(s->scanned, 5);
    ASSERT_EQ(s->more, 0);
    ASSERT_EQ(s->pushed_down, 0);
    const json_t *o = snap_obj(s, "su3");
    ASSERT_TRUE(o != NULL);
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    ASSERT_STREQ(text, "{\"ACL\":{\"uA\":{\"read\":true}},\"className\":\"SnapUnit\","
                       "\"createdAt\":\"2025-11-24T16:00:00.000Z\",\"n\":3,\"objectId\":\"su3\","
                       "\"owner\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"uA\"}}");
    free(text);
    uint64_t ct1 = s->ct;
    lq_snapshot_free(s);

    /* objectId equality is pushed down as an _id lookup */
    run_snapshot(a, "SnapUnit", "{\"objectId\":\"su1\"}", 100, &s);
    ASSERT_EQ(s->status, LQ_SNAPSHOT_OK);
    ASSERT_EQ(s->pushed_down, 1);
    ASSERT_EQ(s->scanned, 1);
    ASSERT_EQ(s->n, 1);
    ASSERT_TRUE(snap_obj(s, "su1") != NULL);
    ASSERT_TRUE(s->ct >= ct1);
    lq_snapshot_free(s);

    /* the scan bound: more documents than scan_max */
    run_snapshot(a, "SnapUnit", "{}", 3, &s);
    ASSERT_EQ(s->status, LQ_SNAPSHOT_OK);
    ASSERT_EQ(s->scanned, 3);
    ASSERT_EQ(s->n, 3);
    ASSERT_EQ(s->more, 1);
    lq_snapshot_free(s);

    /* a later write has a later cluster time */
    ins("SnapUnit", BCON_NEW("_id", BCON_UTF8("su9"), "n", BCON_INT32(9)));
    run_snapshot(a, "SnapUnit", "{\"n\":9}", 100, &s);
    ASSERT_EQ(s->n, 1);
    ASSERT_TRUE(s->ct > ct1);
    lq_snapshot_free(s);

    /* a job still queued when the cache goes is dropped, not leaked */
    lq_query_limits lim;
    lq_query_limits_default(&lim);
    for (int i = 0; i < 4; i++)
        ASSERT_EQ(lq_auth_submit(a, lq_snapshot_run, lq_snapshot_drop,
                                 lq_snapshot_new(7, "SnapUnit", "{}", &lim, &c, 10, now_ms())),
                  LQ_OK);
    lq_auth_free(a);
}

static void test_snapshot_no_mongo(void)
{
    lq_config c;
    memset(&c, 0, sizeof(c));
    lq_auth *a = lq_auth_new(&c, on_wake, NULL);
    ASSERT_EQ(lq_auth_start(a), LQ_OK);
    ASSERT_EQ(lq_auth_submit(a, lq_snapshot_run, lq_snapshot_drop, NULL), LQ_ERR);
    lq_auth_free(a);
}

static void test_unavailable(void)
{
    lq_config c = cfg_mongo();
    c.mongodb_uri = (char *)"mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=200&connectTimeoutMS=200";
    lq_auth *a = started(&c);
    rec r = {0};
    ASSERT_TRUE(a != NULL);
    int saved = lq_log_level;
    lq_log_level = -1; /* the expected warnings */
    int64_t errors = LQ_METRIC_GET(auth_lookup_errors), lookups = LQ_METRIC_GET(auth_lookups);

    lq_session *s = resolve(a, &r, "r:alice1");
    ASSERT_EQ(s->state, LQ_SESSION_UNAVAILABLE);
    ASSERT_TRUE(s->why != NULL);
    ASSERT_EQ(r.changed, 1);
    ASSERT_EQ(LQ_METRIC_GET(auth_lookup_errors), errors + 1);
    ASSERT_EQ(lq_auth_count(a), 0); /* not cached */
    lq_session *s2 = lq_auth_get(a, "r:alice1");
    ASSERT_TRUE(s2 != s);
    ASSERT_EQ(s2->state, LQ_SESSION_PENDING);
    ASSERT_TRUE(POLL_UNTIL(a, &r, LQ_METRIC_GET(auth_lookups) >= lookups + 2, 2000));
    lq_auth_release(a, s);
    lq_auth_release(a, s2);
    lq_auth_free(a);
    lq_log_level = saved;
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {
        {"watches_class", test_watches_class},
        {"valid_roles", test_valid_roles},
        {"invalid_cached", test_invalid_cached},
        {"expiry_while_referenced", test_expiry_while_referenced},
        {"session_delete_event", test_session_delete_event},
        {"session_update_event", test_session_update_event},
        {"user_delete_event", test_user_delete_event},
        {"join_users_event", test_join_users_event},
        {"role_events_and_clear_cache", test_role_events_and_clear_cache},
        {"races", test_races},
        {"revalidate", test_revalidate},
        {"no_mongo", test_no_mongo},
        {"unavailable", test_unavailable},
        {"snapshot_job", test_snapshot_job},
        {"snapshot_no_mongo", test_snapshot_no_mongo},
        {NULL, NULL},
    };
    lq_log_level = LQ_LOG_WARN;
    signal(SIGPIPE, SIG_IGN);
    if (mock_start() != 0) {
        mock_stop();
        return 1;
    }
    mongoc_init();
    mc = mongoc_client_new(mongo_uri);
    fixtures();
    int rc = lq_test_run(cases, argc, argv);
    mongoc_client_destroy(mc);
    mongoc_cleanup();
    mock_stop();
    return rc;
}
