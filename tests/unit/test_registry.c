/* test_registry.c - groups, the equality index, fan-out rules, limits. */
#include <stdlib.h>
#include <string.h>

#include "livequery/registry.h"
#include "lq_test.h"

typedef struct got {
    void *conn;
    lq_event_type type;
    double rid;
    lq_body *body;
} got;

static got deliveries[64];
static size_t ndeliveries;

static void record(void *conn, lq_body *body, lq_event_type type, double rid,
                   const lq_change *pos, void *ud)
{
    (void)ud;
    if (ndeliveries < 64) {
        lq_body_incref(body);
        deliveries[ndeliveries++] = (got){conn, type, rid, body};
    }
}

static void reset(void)
{
    for (size_t i = 0; i < ndeliveries; i++)
        lq_body_decref(deliveries[i].body);
    ndeliveries = 0;
}

static lq_registry *new_registry(int max_subs)
{
    lq_registry_limits lim;
    lq_query_limits_default(&lim.query);
    lim.max_subscriptions = max_subs;
    lim.max_query_bytes = 4096;
    return lq_registry_new(&lim);
}

static int subscribe_as(lq_registry *r, lq_client *c, const char *frame, lq_principals *who,
                        void *tag, lq_error *err)
{
    lq_request req;
    lq_error perr;
    lq_sub_auth auth = {who, tag, 0};
    if (lq_proto_parse(frame, strlen(frame), 64, &req, &perr) != LQ_PARSE_OK)
        return -100;
    int rc = lq_registry_subscribe(r, c, &req, &auth, err);
    lq_request_release(&req);
    return rc;
}

static int subscribe(lq_registry *r, lq_client *c, const char *frame, lq_error *err)
{
    return subscribe_as(r, c, frame, NULL, NULL, err);
}

/* Subscriptions the registry ended, with their errors. */
typedef struct ended {
    void *conn;
    double rid;
    int code;
    char text[256];
} ended;
static ended endings[16];
static size_t nendings;

static void on_revoke(void *conn, double rid, const lq_error *err, void *ud)
{
    (void)ud;
    if (nendings < 16) {
        endings[nendings] = (ended){conn, rid, err->code, ""};
        snprintf(endings[nendings].text, sizeof(endings[nendings].text), "%s", err->text);
        nendings++;
    }
}

static int released_tags;
static void on_tag_release(void *ud, void *tag)
{
    (void)ud;
    (void)tag;
    released_tags++;
}

/* The delivery to conn, or NULL. */
static got *delivery_to(void *conn, double rid)
{
    for (size_t i = 0; i < ndeliveries; i++)
        if (deliveries[i].conn == conn && deliveries[i].rid == rid)
            return &deliveries[i];
    return NULL;
}

static size_t publish(lq_registry *r, lq_change_op op, const char *cls, const char *obj,
                      const char *orig)
{
    json_error_t e;
    lq_change ev;
    memset(&ev, 0, sizeof(ev));
    strcpy(ev.class_name, cls);
    ev.op = op;
    ev.object = json_loads(obj, 0, &e);
    ev.original = orig ? json_loads(orig, 0, &e) : NULL;
    size_t n = lq_registry_dispatch(r, &ev, 0, record, NULL);
    json_decref(ev.object);
    json_decref(ev.original);
    return n;
}

#define SUB(rid, cls, where) \
    "{\"op\":\"subscribe\",\"requestId\":" #rid ",\"query\":{\"className\":\"" cls "\",\"where\":" where "}}"

static void test_groups_share(void)
{
    lq_registry *r = new_registry(10);
    int a, b;
    lq_client *ca = lq_registry_client_new(r, &a, 0), *cb = lq_registry_client_new(r, &b, 0);
    lq_error err;

    ASSERT_EQ(subscribe(r, ca, SUB(1, "B", "{\"q\":{\"$gt\":5},\"s\":\"x\"}"), &err), LQ_OK);
    ASSERT_EQ(subscribe(r, cb, SUB(1, "B", "{\"s\":\"x\",\"q\":{\"$gt\":5.0}}"), &err), LQ_OK);
    ASSERT_EQ(lq_registry_group_count(r), 1);
    ASSERT_EQ(subscribe(r, cb, SUB(2, "B", "{\"s\":\"y\"}"), &err), LQ_OK);
    ASSERT_EQ(lq_registry_group_count(r), 2);
    ASSERT_EQ(lq_registry_sub_count(r), 3);

    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "B", "{\"objectId\":\"o\",\"q\":6,\"s\":\"x\"}", NULL), 2);
    ASSERT_EQ(deliveries[0].type, LQ_EV_CREATE);
    ASSERT_TRUE(deliveries[0].body == deliveries[1].body); /* serialized once */
    reset();
    /* same requestId again replaces; unsubscribing the last member frees the group */
    ASSERT_EQ(subscribe(r, cb, SUB(2, "B", "{\"s\":\"z\"}"), &err), LQ_OK);
    ASSERT_EQ(lq_registry_sub_count(r), 3);
    ASSERT_EQ(lq_registry_unsubscribe(r, cb, 2), LQ_OK);
    ASSERT_EQ(lq_registry_unsubscribe(r, cb, 2), LQ_ERR_NOTFOUND);
    ASSERT_EQ(lq_registry_group_count(r), 1);
    lq_registry_client_free(r, ca);
    ASSERT_EQ(lq_registry_sub_count(r), 1);
    lq_registry_free(r); /* frees cb too */
}

static void test_transitions(void)
{
    lq_registry *r = new_registry(10);
    int a;
    lq_client *c = lq_registry_client_new(r, &a, 0);
    lq_error err;
    const char *o10 = "{\"objectId\":\"o\",\"q\":10}", *o3 = "{\"objectId\":\"o\",\"q\":3}",
               *o8 = "{\"objectId\":\"o\",\"q\":8}";

    ASSERT_EQ(subscribe(r, c, SUB(1, "B", "{\"q\":{\"$gt\":5}}"), &err), LQ_OK);
    publish(r, LQ_CHANGE_CREATE, "B", o10, NULL);
    publish(r, LQ_CHANGE_UPDATE, "B", o3, o10);
    ASSERT_EQ(publish(r, LQ_CHANGE_UPDATE, "B", "{\"objectId\":\"o\",\"q\":4}", o3), 0);
    publish(r, LQ_CHANGE_UPDATE, "B", o8, o3);
    publish(r, LQ_CHANGE_UPDATE, "B", o10, o8);
    publish(r, LQ_CHANGE_DELETE, "B", o10, NULL);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "B", "{\"objectId\":\"p\",\"q\":2}", NULL), 0);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "Other", o10, NULL), 0);
    ASSERT_EQ(ndeliveries, 5);
    ASSERT_EQ(deliveries[0].type, LQ_EV_CREATE);
    ASSERT_EQ(deliveries[1].type, LQ_EV_LEAVE);
    ASSERT_EQ(deliveries[2].type, LQ_EV_ENTER);
    ASSERT_EQ(deliveries[3].type, LQ_EV_UPDATE);
    ASSERT_EQ(deliveries[4].type, LQ_EV_DELETE);
    ASSERT_TRUE(strstr(deliveries[1].body->data, "\"original\":{\"objectId\":\"o\",\"q\":10}") != NULL);
    ASSERT_TRUE(strstr(deliveries[4].body->data, "original") == NULL);
    ASSERT_TRUE(deliveries[0].rid == 1);
    reset();
    lq_registry_free(r);
}

static void test_index(void)
{
    lq_registry *r = new_registry(100000);
    int a;
    lq_client *c = lq_registry_client_new(r, &a, 0);
    lq_error err;
    char frame[256];

    for (int i = 0; i < 2000; i++) {
        snprintf(frame, sizeof(frame), SUB(%d, "B", "{\"isbn\":\"978-%d\"}"), i + 1, i);
        ASSERT_EQ(subscribe(r, c, frame, &err), LQ_OK);
    }
    ASSERT_EQ(subscribe(r, c, SUB(5000, "B", "{\"q\":{\"$lt\":0}}"), &err), LQ_OK); /* unindexed */
    ASSERT_EQ(lq_registry_group_count(r), 2001);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "B", "{\"objectId\":\"o\",\"isbn\":\"978-1234\",\"q\":1}", NULL), 1);
    ASSERT_TRUE(deliveries[0].rid == 1235);
    ASSERT_EQ(lq_registry_last_visited(r), 2); /* its bucket + the unindexed group, not 2001 */
    reset();
    /* an update moving isbn from one value to another reaches both buckets */
    ASSERT_EQ(publish(r, LQ_CHANGE_UPDATE, "B", "{\"objectId\":\"o\",\"isbn\":\"978-7\"}",
                      "{\"objectId\":\"o\",\"isbn\":\"978-6\"}"), 2);
    ASSERT_EQ(deliveries[0].type + deliveries[1].type, LQ_EV_ENTER + LQ_EV_LEAVE);
    reset();
    /* a value too long for the index still matches (its group stays unindexed) */
    char longq[1024], longobj[1024], v[700];
    memset(v, 'k', sizeof(v) - 1);
    v[sizeof(v) - 1] = '\0';
    snprintf(longq, sizeof(longq), SUB(6000, "B", "{\"isbn\":\"%s\"}"), v);
    ASSERT_EQ(subscribe(r, c, longq, &err), LQ_OK);
    snprintf(longobj, sizeof(longobj), "{\"objectId\":\"o\",\"isbn\":\"%s\"}", v);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "B", longobj, NULL), 1);
    ASSERT_TRUE(deliveries[0].rid == 6000);
    reset();
    ASSERT_EQ(lq_registry_unsubscribe(r, c, 6000), LQ_OK);
    /* equality on an array field means contains */
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "B", "{\"objectId\":\"o\",\"isbn\":[\"x\",\"978-9\"]}", NULL), 1);
    ASSERT_TRUE(deliveries[0].rid == 10);
    reset();
    lq_registry_free(r);
}

static void test_acl_and_watch(void)
{
    lq_registry *r = new_registry(10);
    int a, m;
    lq_client *plain = lq_registry_client_new(r, &a, 0), *master = lq_registry_client_new(r, &m, 1);
    lq_error err;

    ASSERT_EQ(subscribe(r, plain, SUB(1, "B", "{}"), &err), LQ_OK);
    ASSERT_EQ(subscribe(r, master, SUB(1, "B", "{}"), &err), LQ_OK);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "B", "{\"objectId\":\"o\",\"ACL\":{\"u1\":{\"read\":true}}}", NULL), 1);
    ASSERT_TRUE(deliveries[0].conn == &m);
    reset();
    /* losing public read: the plain client sees a leave, the master an update */
    ASSERT_EQ(publish(r, LQ_CHANGE_UPDATE, "B", "{\"objectId\":\"o\",\"ACL\":{}}",
                      "{\"objectId\":\"o\",\"ACL\":{\"*\":{\"read\":true}}}"), 2);
    for (size_t i = 0; i < 2; i++)
        ASSERT_EQ(deliveries[i].type, deliveries[i].conn == &a ? LQ_EV_LEAVE : LQ_EV_UPDATE);
    reset();

    const char *w = "{\"op\":\"subscribe\",\"requestId\":2,\"query\":{\"className\":\"B\",\"where\":{},"
                    "\"watch\":[\"status\"],\"keys\":[\"status\"]}}";
    ASSERT_EQ(subscribe(r, plain, w, &err), LQ_OK);
    ASSERT_EQ(publish(r, LQ_CHANGE_UPDATE, "B", "{\"objectId\":\"o\",\"status\":\"a\",\"n\":2}",
                      "{\"objectId\":\"o\",\"status\":\"a\",\"n\":1}"), 2); /* rid 1 twice, not rid 2 */
    reset();
    ASSERT_EQ(publish(r, LQ_CHANGE_UPDATE, "B", "{\"objectId\":\"o\",\"status\":\"b\",\"n\":2}",
                      "{\"objectId\":\"o\",\"status\":\"a\",\"n\":2}"), 3);
    for (size_t i = 0; i < 3; i++)
        if (deliveries[i].rid == 2)
            ASSERT_TRUE(strstr(deliveries[i].body->data, "\"n\"") == NULL);
    reset();

    /* keys ["status,n"] is one odd field name, not the projection [status, n] */
    const char *comma = "{\"op\":\"subscribe\",\"requestId\":3,\"query\":{\"className\":\"B\",\"where\":{},"
                        "\"keys\":[\"n,status\"]}}";
    const char *pair = "{\"op\":\"subscribe\",\"requestId\":4,\"query\":{\"className\":\"B\",\"where\":{},"
                       "\"keys\":[\"n\",\"status\"]}}";
    ASSERT_EQ(subscribe(r, plain, comma, &err), LQ_OK);
    ASSERT_EQ(subscribe(r, plain, pair, &err), LQ_OK);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "B", "{\"objectId\":\"o\",\"status\":\"b\",\"n\":2}", NULL), 5);
    for (size_t i = 0; i < ndeliveries; i++) {
        if (deliveries[i].rid == 3)
            ASSERT_TRUE(strstr(deliveries[i].body->data, "\"n\"") == NULL);
        if (deliveries[i].rid == 4)
            ASSERT_TRUE(strstr(deliveries[i].body->data, "\"n\":2") != NULL);
    }
    reset();
    lq_registry_free(r);
}

static void test_errors(void)
{
    lq_registry *r = new_registry(2);
    int a;
    lq_client *c = lq_registry_client_new(r, &a, 0);
    lq_error err;

    ASSERT_EQ(subscribe(r, c, SUB(1, "A-B", "{}"), &err), LQ_ERR);
    ASSERT_EQ(err.code, 102);
    ASSERT_STREQ(err.text, "invalid className: A-B");
    ASSERT_EQ(subscribe(r, c, SUB(1, "A", "{\"$or\":{}}"), &err), LQ_ERR);
    ASSERT_EQ(err.code, 102);
    ASSERT_EQ(subscribe(r, c, SUB(1, "A", "{}"), &err), LQ_OK);
    ASSERT_EQ(subscribe(r, c, SUB(2, "A", "{}"), &err), LQ_OK);
    ASSERT_EQ(subscribe(r, c, SUB(3, "A", "{}"), &err), LQ_ERR);
    ASSERT_EQ(err.code, 155);
    ASSERT_STREQ(err.text, "too many subscriptions on this connection (limit 2)");
    ASSERT_EQ(subscribe(r, c, SUB(2, "A", "{\"x\":1}"), &err), LQ_OK); /* replacing is not adding */
    char big[6000];
    int n = snprintf(big, sizeof(big), "{\"op\":\"subscribe\",\"requestId\":1,\"query\":{\"className\":\"A\",\"where\":{\"x\":\"");
    memset(big + n, 'a', 4200);
    strcpy(big + n + 4200, "\"}}}");
    ASSERT_EQ(subscribe(r, c, big, &err), LQ_ERR);
    ASSERT_STREQ(err.text, "query is larger than 4096 bytes");
    ASSERT_EQ(lq_registry_client_count(c), 2);
    lq_registry_free(r);
}

static json_t *J(const char *text)
{
    json_error_t e;
    return json_loads(text, 0, &e);
}

/* ACL per principals: users, roles, anonymous; the shapes of leave and enter
 * caused by losing or gaining read access; roles changed live. */
static void test_acl_principals(void)
{
    lq_registry *r = new_registry(10);
    int a, s1, s2, m;
    lq_client *ca = lq_registry_client_new(r, &a, 0), *c1 = lq_registry_client_new(r, &s1, 0),
              *c2 = lq_registry_client_new(r, &s2, 0), *cm = lq_registry_client_new(r, &m, 1);
    lq_principals *u1 = lq_principals_new_user("u1"), *u2 = lq_principals_new_user("u2");
    const char *staff[] = {"staff"};
    lq_error err;

    lq_principals_set_roles(u1, staff, 1);
    ASSERT_EQ(subscribe(r, ca, SUB(1, "N", "{}"), &err), LQ_OK);
    ASSERT_EQ(subscribe_as(r, c1, SUB(1, "N", "{}"), u1, NULL, &err), LQ_OK);
    ASSERT_EQ(subscribe_as(r, c2, SUB(1, "N", "{}"), u2, NULL, &err), LQ_OK);
    ASSERT_EQ(subscribe(r, cm, SUB(1, "N", "{}"), &err), LQ_OK);

    /* role-only: the staff member and the master */
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "N", "{\"objectId\":\"o\",\"v\":1,\"ACL\":{\"role:staff\":{\"read\":true}}}", NULL), 2);
    ASSERT_TRUE(delivery_to(&s1, 1) && delivery_to(&m, 1));
    reset();
    /* user-only, write-only entries do not grant reading */
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "N", "{\"objectId\":\"o\",\"ACL\":{\"u2\":{\"read\":true},\"u1\":{\"write\":true}}}", NULL), 2);
    ASSERT_TRUE(delivery_to(&s2, 1) && delivery_to(&m, 1));
    reset();

    /* public -> u2 only: anonymous and u1 lose read access: leave whose
     * object is the last state they could read, without original */
    ASSERT_EQ(publish(r, LQ_CHANGE_UPDATE, "N",
                      "{\"objectId\":\"o\",\"v\":2,\"ACL\":{\"u2\":{\"read\":true}}}",
                      "{\"objectId\":\"o\",\"v\":1}"), 4);
    got *g = delivery_to(&a, 1);
    ASSERT_TRUE(g && g->type == LQ_EV_LEAVE);
    ASSERT_STREQ(g->body->data, "\"object\":{\"objectId\":\"o\",\"v\":1}}");
    ASSERT_TRUE((g = delivery_to(&s2, 1)) && g->type == LQ_EV_UPDATE && strstr(g->body->data, "\"original\""));
    ASSERT_TRUE((g = delivery_to(&m, 1)) && g->type == LQ_EV_UPDATE);
    reset();
    /* u2 only -> role:staff: u1 gains access: enter without original */
    ASSERT_EQ(publish(r, LQ_CHANGE_UPDATE, "N",
                      "{\"objectId\":\"o\",\"v\":3,\"ACL\":{\"role:staff\":{\"read\":true}}}",
                      "{\"objectId\":\"o\",\"v\":2,\"ACL\":{\"u2\":{\"read\":true}}}"), 3);
    ASSERT_TRUE((g = delivery_to(&s1, 1)) && g->type == LQ_EV_ENTER);
    ASSERT_TRUE(strstr(g->body->data, "\"original\"") == NULL && strstr(g->body->data, "\"v\":3"));
    ASSERT_TRUE((g = delivery_to(&s2, 1)) && g->type == LQ_EV_LEAVE && strstr(g->body->data, "\"v\":2") &&
                strstr(g->body->data, "\"original\"") == NULL);
    reset();
    /* u2 joins staff: the next event follows the new roles */
    lq_principals_set_roles(u2, staff, 1);
    ASSERT_EQ(publish(r, LQ_CHANGE_DELETE, "N", "{\"objectId\":\"o\",\"ACL\":{\"role:staff\":{\"read\":true}}}", NULL), 3);
    ASSERT_TRUE(delivery_to(&s2, 1) && delivery_to(&s1, 1) && !delivery_to(&a, 1));
    reset();
    lq_principals_unref(u1);
    lq_principals_unref(u2);
    lq_registry_free(r); /* the subscriptions held the last references */
}

/* CLP at subscribe and on change; pointer permissions; protectedFields. */
static void test_clp(void)
{
    lq_registry *r = new_registry(10);
    int a, s1, s2;
    lq_client *ca = lq_registry_client_new(r, &a, 0), *c1 = lq_registry_client_new(r, &s1, 0),
              *c2 = lq_registry_client_new(r, &s2, 0);
    lq_principals *u1 = lq_principals_new_user("u1"), *u2 = lq_principals_new_user("u2");
    const char *staff[] = {"staff"}, *mgr[] = {"manager", "staff"};
    lq_error err;
    json_t *clp;

    lq_principals_set_roles(u1, staff, 1);
    lq_principals_set_roles(u2, mgr, 2);
    clp = J("{\"find\":{\"role:staff\":true},\"get\":{\"role:staff\":true},"
            "\"protectedFields\":{\"*\":[\"cost\"],\"role:manager\":[]}}");
    ASSERT_EQ(lq_registry_set_clp(r, "S", clp, on_revoke, NULL), 1);
    ASSERT_EQ(lq_registry_set_clp(r, "S", clp, on_revoke, NULL), 0); /* same: nothing to do */
    json_decref(clp);
    ASSERT_EQ(subscribe(r, ca, SUB(1, "S", "{}"), &err), LQ_ERR);
    ASSERT_EQ(err.code, 119);
    ASSERT_STREQ(err.text, "Permission denied for action find on class S.");
    ASSERT_EQ(subscribe_as(r, c1, SUB(1, "S", "{\"cost\":{\"$gt\":1}}"), u1, NULL, &err), LQ_ERR);
    ASSERT_EQ(err.code, 119);
    ASSERT_STREQ(err.text, "Permission denied");
    ASSERT_EQ(subscribe_as(r, c1, SUB(1, "S", "{}"), u1, NULL, &err), LQ_OK);
    ASSERT_EQ(subscribe_as(r, c2, SUB(1, "S", "{}"), u2, NULL, &err), LQ_OK);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "S", "{\"objectId\":\"o\",\"cost\":5,\"n\":1}", NULL), 2);
    ASSERT_TRUE(strstr(delivery_to(&s1, 1)->body->data, "cost") == NULL);
    ASSERT_TRUE(strstr(delivery_to(&s2, 1)->body->data, "\"cost\":5") != NULL);
    reset();

    /* the CLP now wants managers: the staff subscription ends with 119 */
    clp = J("{\"find\":{\"role:manager\":true}}");
    lq_registry_set_clp(r, "S", clp, on_revoke, NULL);
    json_decref(clp);
    ASSERT_EQ(nendings, 1);
    ASSERT_TRUE(endings[0].conn == &s1 && endings[0].rid == 1 && endings[0].code == 119);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "S", "{\"objectId\":\"p\",\"cost\":5}", NULL), 1);
    ASSERT_TRUE(delivery_to(&s2, 1) && strstr(delivery_to(&s2, 1)->body->data, "\"cost\":5"));
    reset();
    nendings = 0;

    /* pointer permissions: only objects whose owner is the user */
    clp = J("{\"find\":{},\"readUserFields\":[\"owner\"]}");
    lq_registry_set_clp(r, "P", clp, on_revoke, NULL);
    json_decref(clp);
    ASSERT_EQ(subscribe_as(r, c1, SUB(2, "P", "{}"), u1, NULL, &err), LQ_OK);
    ASSERT_EQ(subscribe(r, ca, SUB(2, "P", "{}"), &err), LQ_OK); /* find: allowed, matches nothing */
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "P", "{\"objectId\":\"q\",\"owner\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u2\"}}", NULL), 0);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "P", "{\"objectId\":\"q\",\"owner\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u1\"}}", NULL), 1);
    ASSERT_TRUE(delivery_to(&s1, 2) != NULL);
    reset();
    /* the owner changes: u1 loses it: a leave with the state it could read */
    ASSERT_EQ(publish(r, LQ_CHANGE_UPDATE, "P",
                      "{\"objectId\":\"q\",\"n\":2,\"owner\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u2\"}}",
                      "{\"objectId\":\"q\",\"n\":1,\"owner\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u1\"}}"), 1);
    ASSERT_TRUE(delivery_to(&s1, 2)->type == LQ_EV_LEAVE && strstr(delivery_to(&s1, 2)->body->data, "\"n\":1"));
    reset();
    lq_principals_unref(u1);
    lq_principals_unref(u2);
    lq_registry_free(r);
}

/* A revoked session ends every subscription that used it, and only those;
 * _User objects keep their secrets from everyone but the user. */
static void test_revoke_and_user(void)
{
    lq_registry *r = new_registry(10);
    int a, b;
    lq_client *ca = lq_registry_client_new(r, &a, 0), *cb = lq_registry_client_new(r, &b, 0);
    lq_principals *u1 = lq_principals_new_user("u1"), *u2 = lq_principals_new_user("u2");
    int t1, t2;
    lq_error err;

    lq_registry_set_tag_release(r, on_tag_release, NULL);
    released_tags = 0;
    nendings = 0;
    ASSERT_EQ(subscribe_as(r, ca, SUB(1, "_User", "{}"), u1, &t1, &err), LQ_OK);
    ASSERT_EQ(subscribe_as(r, ca, SUB(2, "N", "{}"), u1, &t1, &err), LQ_OK);
    ASSERT_EQ(subscribe_as(r, cb, SUB(1, "_User", "{}"), u2, &t2, &err), LQ_OK);
    ASSERT_EQ(publish(r, LQ_CHANGE_UPDATE, "_User",
                      "{\"objectId\":\"u1\",\"username\":\"ann\",\"email\":\"a@x\",\"sessionToken\":\"r:s\",\"authData\":{}}",
                      "{\"objectId\":\"u1\",\"username\":\"ann\",\"email\":\"a@x\"}"), 2);
    ASSERT_TRUE(strstr(delivery_to(&a, 1)->body->data, "sessionToken") != NULL); /* herself */
    ASSERT_TRUE(strstr(delivery_to(&a, 1)->body->data, "a@x") != NULL);
    const char *other = delivery_to(&b, 1)->body->data;
    ASSERT_TRUE(strstr(other, "sessionToken") == NULL && strstr(other, "authData") == NULL &&
                strstr(other, "a@x") == NULL && strstr(other, "ann") != NULL);
    reset();
    /* _Session rows (Parse Server stores them without ACL) go to the master only */
    int m;
    lq_client *cm = lq_registry_client_new(r, &m, 1);
    ASSERT_EQ(subscribe_as(r, ca, SUB(3, "_Session", "{}"), u1, &t1, &err), LQ_OK);
    ASSERT_EQ(subscribe(r, cm, SUB(3, "_Session", "{}"), &err), LQ_OK);
    ASSERT_EQ(publish(r, LQ_CHANGE_CREATE, "_Session", "{\"objectId\":\"s\",\"sessionToken\":\"r:x\",\"user\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u1\"}}", NULL), 1);
    ASSERT_TRUE(delivery_to(&m, 3) != NULL);
    reset();
    lq_registry_client_free(r, cm);
    lq_error_set(&err, 209, "Invalid session token");
    ASSERT_EQ(lq_registry_revoke_tag(r, &t1, &err, on_revoke, NULL), 3);
    ASSERT_EQ(nendings, 3);
    ASSERT_TRUE(endings[0].conn == &a && endings[2].conn == &a && endings[0].code == 209);
    ASSERT_EQ(released_tags, 3);
    ASSERT_EQ(lq_registry_sub_count(r), 1);
    nendings = 0;
    lq_principals_unref(u1);
    lq_principals_unref(u2);
    lq_registry_free(r);
    ASSERT_EQ(released_tags, 4);
}

/*---- the query op ------------------------------------------------------------------*/

static size_t publish_ct(lq_registry *r, lq_change_op op, const char *cls, const char *obj, uint64_t ct)
{
    json_error_t e;
    lq_change ev;
    memset(&ev, 0, sizeof(ev));
    strcpy(ev.class_name, cls);
    ev.op = op;
    ev.object = json_loads(obj, 0, &e);
    ev.ct = ct;
    size_t n = lq_registry_dispatch(r, &ev, 0, record, NULL);
    json_decref(ev.object);
    return n;
}

typedef struct objs {
    json_t *v[16];
    size_t n, i;
} objs;

static const json_t *objs_next(void *p)
{
    objs *o = p;
    return o->i < o->n ? o->v[o->i++] : NULL;
}

static void objs_free(objs *o)
{
    for (size_t i = 0; i < o->n; i++)
        json_decref(o->v[i]);
    o->n = 0;
}

/* The result text for c's subscription rid over the candidates. */
static long results(lq_registry *r, lq_client *c, double rid, uint64_t token, objs *o, size_t max_n,
                    size_t max_bytes, char *out, size_t cap, int *trunc)
{
    lq_buf b;
    lq_buf_init(&b);
    o->i = 0;
    long n = lq_registry_results(r, c, rid, token, objs_next, o, 0, max_n, max_bytes, &b, trunc);
    snprintf(out, cap, "%s", b.data ? b.data : "");
    lq_buf_release(&b);
    return n;
}

#define SUBK(rid, cls, where, keys)                                                                \
    "{\"op\":\"subscribe\",\"requestId\":" #rid ",\"query\":{\"className\":\"" cls "\",\"where\":" where \
    ",\"keys\":" keys "}}"

/* Results are what each subscriber would get in a create event: where, ACL,
 * CLP (pointer permissions too), protectedFields, keys, no _ fields. */
static void test_results(void)
{
    lq_registry *r = new_registry(10);
    int a, s1, s2, m;
    lq_client *ca = lq_registry_client_new(r, &a, 0), *c1 = lq_registry_client_new(r, &s1, 0),
              *c2 = lq_registry_client_new(r, &s2, 0), *cm = lq_registry_client_new(r, &m, 1);
    lq_principals *u1 = lq_principals_new_user("u1"), *u2 = lq_principals_new_user("u2");
    const char *staff[] = {"staff"}, *mgr[] = {"manager", "staff"};
    lq_error err;
    char out[2048];
    int trunc;
    objs o = {{NULL}, 0, 0};

    lq_principals_set_roles(u1, staff, 1);
    lq_principals_set_roles(u2, mgr, 2);
    json_t *clp = J("{\"find\":{\"role:staff\":true},\"protectedFields\":{\"*\":[\"cost\"],\"role:manager\":[]}}");
    lq_registry_set_clp(r, "R", clp, on_revoke, NULL);
    json_decref(clp);
    ASSERT_EQ(subscribe_as(r, c1, SUBK(1, "R", "{\"n\":{\"$gte\":1}}", "[\"n\",\"cost\"]"), u1, NULL, &err), LQ_OK);
    ASSERT_EQ(subscribe_as(r, c2, SUB(1, "R", "{\"n\":{\"$gte\":1}}"), u2, NULL, &err), LQ_OK);
    ASSERT_EQ(subscribe(r, cm, SUB(1, "R", "{\"n\":{\"$gte\":1}}"), &err), LQ_OK);
    o.v[o.n++] = J("{\"objectId\":\"o1\",\"className\":\"R\",\"n\":1,\"cost\":5,\"extra\":\"e\",\"ACL\":{\"*\":{\"read\":true}}}");
    o.v[o.n++] = J("{\"objectId\":\"o2\",\"className\":\"R\",\"n\":0}");
    o.v[o.n++] = J("{\"objectId\":\"o3\",\"className\":\"R\",\"n\":2,\"ACL\":{\"u2\":{\"read\":true}}}");
    o.v[o.n++] = J("{\"objectId\":\"o4\",\"className\":\"R\",\"n\":3,\"_secret\":\"x\",\"extra\":\"f\"}");
    ASSERT_EQ(results(r, c1, 1, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), 2);
    ASSERT_STREQ(out, "{\"objectId\":\"o1\",\"className\":\"R\",\"n\":1,\"ACL\":{\"*\":{\"read\":true}}},"
                      "{\"objectId\":\"o4\",\"className\":\"R\",\"n\":3}");
    ASSERT_EQ(trunc, 0);
    ASSERT_EQ(results(r, c2, 1, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), 3);
    ASSERT_TRUE(strstr(out, "\"cost\":5") && strstr(out, "\"o3\"") && strstr(out, "\"extra\":\"f\"") &&
                !strstr(out, "_secret"));
    ASSERT_EQ(results(r, cm, 1, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), 3);
    /* the limits: a visible object left out says truncated; an invisible one does not */
    ASSERT_EQ(results(r, c1, 1, 0, &o, 1, 1 << 20, out, sizeof(out), &trunc), 1);
    ASSERT_EQ(trunc, 1);
    ASSERT_STREQ(out, "{\"objectId\":\"o1\",\"className\":\"R\",\"n\":1,\"ACL\":{\"*\":{\"read\":true}}}");
    ASSERT_EQ(results(r, c1, 1, 0, &o, 2, 1 << 20, out, sizeof(out), &trunc), 2);
    ASSERT_EQ(trunc, 0);
    ASSERT_EQ(results(r, c1, 1, 0, &o, 100, 100, out, sizeof(out), &trunc), 1); /* 63 + 40 bytes */
    ASSERT_EQ(trunc, 1);
    ASSERT_EQ(results(r, c1, 9, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), -1);
    ASSERT_EQ(results(r, c1, 1, 77, &o, 100, 1 << 20, out, sizeof(out), &trunc), -1); /* not holding */
    objs_free(&o);

    /* pointer permissions: only the user's own objects */
    clp = J("{\"find\":{},\"readUserFields\":[\"owner\"]}");
    lq_registry_set_clp(r, "P", clp, on_revoke, NULL);
    json_decref(clp);
    ASSERT_EQ(subscribe_as(r, c1, SUB(2, "P", "{}"), u1, NULL, &err), LQ_OK);
    ASSERT_EQ(subscribe(r, ca, SUB(2, "P", "{}"), &err), LQ_OK);
    o.v[o.n++] = J("{\"objectId\":\"p1\",\"owner\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u2\"}}");
    o.v[o.n++] = J("{\"objectId\":\"p2\",\"owner\":{\"__type\":\"Pointer\",\"className\":\"_User\",\"objectId\":\"u1\"}}");
    ASSERT_EQ(results(r, c1, 2, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), 1);
    ASSERT_TRUE(strstr(out, "\"p2\"") != NULL);
    ASSERT_EQ(results(r, ca, 2, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), 0);
    ASSERT_STREQ(out, "");
    objs_free(&o);

    /* internal classes: the master only; _User: secrets only to the user */
    ASSERT_EQ(subscribe_as(r, c1, SUB(3, "_Session", "{}"), u1, NULL, &err), LQ_OK);
    ASSERT_EQ(subscribe(r, cm, SUB(3, "_Session", "{}"), &err), LQ_OK);
    o.v[o.n++] = J("{\"objectId\":\"s1\",\"ACL\":{\"*\":{\"read\":true}}}");
    ASSERT_EQ(results(r, c1, 3, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), 0);
    ASSERT_EQ(results(r, cm, 3, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), 1);
    objs_free(&o);
    ASSERT_EQ(subscribe_as(r, c1, SUB(4, "_User", "{}"), u1, NULL, &err), LQ_OK);
    ASSERT_EQ(subscribe_as(r, c2, SUB(4, "_User", "{}"), u2, NULL, &err), LQ_OK);
    o.v[o.n++] = J("{\"objectId\":\"u1\",\"username\":\"ann\",\"email\":\"a@x\"}");
    ASSERT_EQ(results(r, c1, 4, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), 1);
    ASSERT_TRUE(strstr(out, "a@x") != NULL);
    ASSERT_EQ(results(r, c2, 4, 0, &o, 100, 1 << 20, out, sizeof(out), &trunc), 1);
    ASSERT_TRUE(strstr(out, "a@x") == NULL && strstr(out, "ann") != NULL);
    objs_free(&o);

    ASSERT_EQ(lq_registry_sub_info(c1, 1, NULL, NULL), 0);
    const char *cls, *where;
    ASSERT_EQ(lq_registry_sub_info(c1, 1, &cls, &where), 0);
    ASSERT_STREQ(cls, "R");
    ASSERT_STREQ(where, "{\"n\":{\"$gte\":1.0}}");
    ASSERT_EQ(lq_registry_sub_info(c1, 5, NULL, NULL), -1);
    lq_principals_unref(u1);
    lq_principals_unref(u2);
    lq_registry_free(r);
}

static int overflows;
static void *overflow_conn;
static double overflow_rid;
static uint64_t overflow_token;
static void on_overflow(void *ud, void *conn, double rid, uint64_t token)
{
    (void)ud;
    overflows++;
    overflow_conn = conn;
    overflow_rid = rid;
    overflow_token = token;
}

/* While a snapshot is read the subscription's events are held; at its
 * cluster time T the held ones after T (or without a cluster time) go out,
 * the others are dropped, and late arrivals at or below T are skipped until
 * the first one after it. Past its bounds a hold overflows: nothing is lost. */
static void test_hold(void)
{
    lq_registry *r = new_registry(10);
    int a, b;
    lq_client *ca = lq_registry_client_new(r, &a, 0), *cb = lq_registry_client_new(r, &b, 0);
    lq_error err;

    lq_registry_set_hold_overflow(r, on_overflow, NULL);
    ASSERT_EQ(subscribe(r, ca, SUB(1, "H", "{}"), &err), LQ_OK);
    ASSERT_EQ(subscribe(r, cb, SUB(1, "H", "{}"), &err), LQ_OK);
    ASSERT_EQ(lq_registry_hold(r, ca, 1, 5, 10, 1 << 20), 1);
    ASSERT_EQ(lq_registry_hold(r, ca, 1, 6, 10, 1 << 20), 0); /* holding already */
    ASSERT_EQ(lq_registry_hold(r, ca, 2, 6, 10, 1 << 20), -1);
    ASSERT_EQ(publish_ct(r, LQ_CHANGE_CREATE, "H", "{\"objectId\":\"x\",\"n\":10}", 10), 1); /* b only */
    ASSERT_TRUE(delivery_to(&b, 1) && !delivery_to(&a, 1));
    publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"x\",\"n\":20}", 20);
    publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"x\",\"n\":0}", 0); /* Parse Server's: no ct */
    publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"x\",\"n\":30}", 30);
    ASSERT_EQ(ndeliveries, 4);
    reset();
    ASSERT_EQ(lq_registry_release(r, ca, 1, 6, 20, record, NULL), -1); /* another token */
    ASSERT_EQ(lq_registry_release(r, ca, 1, 5, 20, record, NULL), 2);
    ASSERT_TRUE(strstr(deliveries[0].body->data, "\"n\":0") && strstr(deliveries[1].body->data, "\"n\":30"));
    ASSERT_EQ(lq_registry_release(r, ca, 1, 5, 20, record, NULL), -1); /* once */
    reset();
    /* the tailer lagging behind the snapshot: at or below T is skipped, until one above it */
    ASSERT_EQ(publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"y\",\"n\":15}", 15), 1); /* b */
    ASSERT_EQ(publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"y\",\"n\":20}", 20), 1); /* b */
    ASSERT_EQ(publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"y\",\"n\":0}", 0), 2);
    ASSERT_EQ(publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"y\",\"n\":21}", 21), 2);
    ASSERT_EQ(publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"y\",\"n\":18}", 18), 2); /* past the floor */
    reset();

    /* ct 0 (the read failed): everything held goes out */
    ASSERT_EQ(lq_registry_hold(r, ca, 1, 7, 10, 1 << 20), 1);
    publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"z\",\"n\":1}", 40);
    publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"z\",\"n\":2}", 41);
    reset();
    ASSERT_EQ(lq_registry_release(r, ca, 1, 7, 0, record, NULL), 2);
    ASSERT_EQ(publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"z\",\"n\":3}", 1), 2); /* no floor */
    reset();

    /* overflow: the owner is told, the held events and this one go out in order */
    overflows = 0;
    ASSERT_EQ(lq_registry_hold(r, ca, 1, 8, 2, 1 << 20), 1);
    publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"o\",\"n\":1}", 50);
    publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"o\",\"n\":2}", 51);
    ASSERT_EQ(overflows, 0);
    reset();
    ASSERT_EQ(publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"o\",\"n\":3}", 52), 4);
    ASSERT_EQ(overflows, 1);
    ASSERT_TRUE(overflow_conn == &a && overflow_rid == 1 && overflow_token == 8);
    ASSERT_TRUE(deliveries[0].conn == &a && deliveries[1].conn == &a && deliveries[2].conn == &a &&
                deliveries[3].conn == &b);
    ASSERT_TRUE(strstr(deliveries[0].body->data, "\"n\":1") && strstr(deliveries[1].body->data, "\"n\":2") &&
                strstr(deliveries[2].body->data, "\"n\":3"));
    ASSERT_EQ(lq_registry_release(r, ca, 1, 8, 52, record, NULL), -1);
    reset();
    /* by bytes too */
    ASSERT_EQ(lq_registry_hold(r, ca, 1, 9, 100, 10), 1);
    ASSERT_EQ(publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"o\",\"n\":4}", 53), 2);
    ASSERT_EQ(overflows, 2);
    reset();

    /* a replaced or removed subscription takes its hold with it */
    ASSERT_EQ(lq_registry_hold(r, ca, 1, 10, 10, 1 << 20), 1);
    publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"o\",\"n\":5}", 54);
    ASSERT_EQ(subscribe(r, ca, SUB(1, "H", "{\"n\":{\"$gt\":0}}"), &err), LQ_OK);
    ASSERT_EQ(lq_registry_release(r, ca, 1, 10, 54, record, NULL), -1);
    ASSERT_EQ(lq_registry_hold(r, ca, 1, 11, 10, 1 << 20), 1);
    publish_ct(r, LQ_CHANGE_UPDATE, "H", "{\"objectId\":\"o\",\"n\":6}", 55);
    ASSERT_EQ(lq_registry_unsubscribe(r, ca, 1), LQ_OK);
    ASSERT_EQ(lq_registry_release(r, ca, 1, 11, 55, record, NULL), -1);
    reset();
    lq_registry_free(r); /* frees holds still in place (LeakSanitizer checks) */
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {{"groups_share", test_groups_share},
                                         {"transitions", test_transitions},
                                         {"index", test_index},
                                         {"acl_and_watch", test_acl_and_watch},
                                         {"errors", test_errors},
                                         {"acl_principals", test_acl_principals},
                                         {"clp", test_clp},
                                         {"revoke_and_user", test_revoke_and_user},
                                         {"results", test_results},
                                         {"hold", test_hold},
                                         {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
