/*
 * acl_bench.c - what authorization costs per delivery, in process: the
 * registry's fan-out (lq_registry_dispatch: match, ACL, CLP, protectedFields,
 * shared bodies) with 1000 subscribers, with and without restricted objects.
 * No sockets: the number isolates the decision work the issue asks about.
 *
 *   acl_bench [--subs 1000] [--events 20000] [--rounds 5]
 *
 * Scenarios (all run in this process, interleaved round by round, and
 * compared as ratios against "public"):
 *   public      every object public; subscribers are 1000 users (10 roles each)
 *   half-role   half the objects readable by role:staff only (held by half
 *               the users), half public
 *   clp         half-role + the class CLP: find needs role:staff ... or
 *               readUserFields, protectedFields hide one field from all but
 *               role:manager
 *   master      public objects, master-key subscribers (no ACL work at all)
 * Prints a Markdown table: ns per delivery, deliveries per event, ratio.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "livequery/acl.h"
#include "livequery/proto.h"
#include "livequery/registry.h"

static size_t delivered;

static void deliver(void *conn, lq_body *body, lq_event_type type, double rid,
                    const lq_change *pos, void *ud)
{
    (void)conn;
    (void)type;
    (void)rid;
    (void)ud;
    lq_body_incref(body); /* what the gateway's queue does */
    lq_body_decref(body);
    delivered++;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct scenario {
    const char *name;
    int restricted; /* half the objects role-restricted */
    int clp;
    int master;
    lq_registry *r;
    lq_change *events;
    double secs;
    size_t deliveries;
} scenario;

/* One state of stock log i: quantity qty, updated at second sec. */
static json_t *stock_state(int i, int qty, int sec, const char *acl)
{
    char buf[1024];
    json_error_t e;

    snprintf(buf, sizeof(buf),
             "{\"objectId\":\"bk%05d\",\"className\":\"BookStockLog\",\"isbn\":\"978-%d\","
             "\"storeId\":\"s1\",\"quantityOnHand\":%d,\"costPrice\":12.5,"
             "\"createdAt\":\"2026-11-23T23:29:42.277Z\",\"updatedAt\":\"2026-11-23T23:29:%02d.385Z\","
             "\"ACL\":%s}",
             i % 1000, i % 1000, qty, sec, acl);
    return json_loads(buf, 0, &e);
}

static lq_change *make_events(int n, int restricted)
{
    lq_change *ev = calloc((size_t)n, sizeof(*ev));

    for (int i = 0; i < n; i++) {
        const char *acl = restricted && (i & 1) ? "{\"role:staff\":{\"read\":true},\"u7\":{\"read\":true,\"write\":true}}"
                                                : "{\"*\":{\"read\":true}}";
        strcpy(ev[i].class_name, "BookStockLog");
        ev[i].op = LQ_CHANGE_UPDATE;
        ev[i].object = stock_state(i, 10 + i % 50, 43, acl);
        ev[i].original = stock_state(i, 9 + i % 50, 42, acl);
    }
    return ev;
}

static void setup(scenario *sc, int nsubs, lq_principals **users)
{
    lq_registry_limits lim;
    lq_query_limits_default(&lim.query);
    lim.max_subscriptions = 16;
    lim.max_query_bytes = 16384;
    sc->r = lq_registry_new(&lim);
    if (sc->clp) {
        json_error_t e;
        json_t *clp = json_loads("{\"find\":{\"role:staff\":true},\"get\":{\"role:staff\":true},"
                                 "\"readUserFields\":[\"owner\"],"
                                 "\"protectedFields\":{\"*\":[\"costPrice\"],\"role:manager\":[]}}",
                                 0, &e);
        lq_registry_set_clp(sc->r, "BookStockLog", clp, NULL, NULL);
        json_decref(clp);
    }
    for (int i = 0; i < nsubs; i++) {
        static int conns[100000];
        lq_client *c = lq_registry_client_new(sc->r, &conns[i], sc->master);
        const char *frame = "{\"op\":\"subscribe\",\"requestId\":1,\"query\":{\"className\":"
                            "\"BookStockLog\",\"where\":{\"storeId\":\"s1\"}}}";
        lq_request req;
        lq_error err;
        lq_sub_auth auth = {sc->master ? NULL : users[i], NULL, 0};
        if (lq_proto_parse(frame, strlen(frame), 64, &req, &err) != LQ_PARSE_OK ||
            lq_registry_subscribe(sc->r, c, &req, &auth, &err) != LQ_OK) {
            fprintf(stderr, "acl_bench: subscribe failed: %s\n", err.text);
            exit(1);
        }
        lq_request_release(&req);
    }
}

int main(int argc, char **argv)
{
    int nsubs = 1000, nevents = 20000, rounds = 5;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--subs") == 0)
            nsubs = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--events") == 0)
            nevents = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--rounds") == 0)
            rounds = atoi(argv[i + 1]);
    }
    if (nsubs < 2 || nsubs > 100000 || nevents < 1 || rounds < 1) {
        fprintf(stderr, "usage: acl_bench [--subs 2..100000] [--events N] [--rounds N]\n");
        return 2;
    }

    /* users: 10 roles each; half hold staff, every tenth manager */
    lq_principals **users = calloc((size_t)nsubs, sizeof(*users));
    for (int i = 0; i < nsubs; i++) {
        char uid[16], rn[10][16];
        const char *names[12];
        size_t n = 0;
        snprintf(uid, sizeof(uid), "u%d", i);
        users[i] = lq_principals_new_user(uid);
        for (int k = 0; k < 10; k++) {
            snprintf(rn[k], sizeof(rn[k]), "team%d", (i + k) % 40);
            names[n++] = rn[k];
        }
        if (i % 2 == 0)
            names[n++] = "staff";
        if (i % 10 == 0)
            names[n++] = "manager";
        lq_principals_set_roles(users[i], names, n);
    }

    scenario sc[] = {
        {"public", 0, 0, 0, NULL, NULL, 0, 0},
        {"half-role", 1, 0, 0, NULL, NULL, 0, 0},
        {"clp", 1, 1, 0, NULL, NULL, 0, 0},
        {"master", 0, 0, 1, NULL, NULL, 0, 0},
    };
    size_t nsc = sizeof(sc) / sizeof(sc[0]);
    for (size_t s = 0; s < nsc; s++) {
        setup(&sc[s], nsubs, users);
        sc[s].events = make_events(nevents, sc[s].restricted);
    }
    for (int r = 0; r < rounds; r++) {
        for (size_t s = 0; s < nsc; s++) {
            delivered = 0;
            double t0 = now_s();
            for (int i = 0; i < nevents; i++)
                lq_registry_dispatch(sc[s].r, &sc[s].events[i], 0, deliver, NULL);
            sc[s].secs += now_s() - t0;
            sc[s].deliveries += delivered;
        }
    }
    double base = sc[0].secs * 1e9 / (double)sc[0].deliveries;
    printf("acl_bench: %d subscribers (users with 10-12 roles), %d events x %d rounds, interleaved\n\n",
           nsubs, nevents, rounds);
    printf("| scenario | deliveries/event | ns/delivery | ns/event | vs public (per delivery) |\n");
    printf("|---|---|---|---|---|\n");
    for (size_t s = 0; s < nsc; s++) {
        double per = sc[s].secs * 1e9 / (double)(sc[s].deliveries ? sc[s].deliveries : 1);
        printf("| %s | %.1f | %.0f | %.0f | %.2fx |\n", sc[s].name,
               (double)sc[s].deliveries / (double)(nevents * rounds), per,
               sc[s].secs * 1e9 / (double)(nevents * rounds), per / base);
    }
    for (size_t s = 0; s < nsc; s++) {
        for (int i = 0; i < nevents; i++) {
            json_decref(sc[s].events[i].object);
            json_decref(sc[s].events[i].original);
        }
        free(sc[s].events);
        lq_registry_free(sc[s].r);
    }
    for (int i = 0; i < nsubs; i++)
        lq_principals_unref(users[i]);
    free(users);
    return 0;
}
