/*
 * demo.c - see demo.h.
 */
#include "livequery/demo.h"

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "livequery/clock.h"
#include "livequery/json.h"
#include "livequery/log.h"
#include "livequery/redisconn.h"

#define DEMO_N 6
#define DEMO_REFRESH_MS (30 * 1000) /* whole state published again this often */
#define DEMO_REFRESH_FIRST_MS 2000   /* ... and 2, 4, 8, 16 s after start (gateways subscribing late) */
#define DEMO_CONNECT_MS 500
#define DEMO_IO_MS 1000
#define DEMO_BACKOFF_MIN_MS 100
#define DEMO_BACKOFF_MAX_MS 5000
#define DEMO_CARTON 24 /* copies in one restock */

enum { ST_CONFIRMED = 0, ST_CHECKED_IN, ST_SIGNING, ST_COMPLETED };
static const char *const status_name[] = {"confirmed", "checked-in", "signing", "completed"};

/* A signing of the day and the stock of its book, as they are in the morning.
 * Staff and publisher ids are the CRM seed's (examples/crm/seed.json). */
typedef struct demo_seed {
    int hour, minute;
    const char *author, *book, *isbn, *location, *staff_lead, *publisher;
    int attendees, on_hand, reserved, threshold;
    int sales; /* sales during the signing before it is completed */
} demo_seed;

static const demo_seed seeds[DEMO_N] = {
    {10, 0, "Nadia Reyes", "The Winter Orchard", "978-1-4028-9462-6", "Main Street store, reading room",
     "uSami00001", "pcHarbor01", 34, 52, 8, 40, 12},
    {11, 30, "Tomas Berg", "Salt and Signal", "978-0-3064-0615-7", "Harbor branch", "uTess00001",
     "pcQuill001", 16, 30, 4, 25, 10},
    {13, 0, "Amara Okafor", "Lanterns Over Lagos", "978-1-9848-7731-4", "Main Street store, children's corner",
     "uCole00001", "pcHarbor01", 41, 90, 12, 20, 14},
    {14, 30, "Ilse Varga", "The Cartographer's Daughter", "978-0-5255-6192-7", "Main Street store, front tables",
     "uSami00001", "pcQuill001", 27, 45, 6, 30, 12},
    {16, 0, "Ravi Menon", "Monsoon Ledger", "978-1-6680-2247-4", "Harbor branch, upstairs", "uTess00001",
     "pcHarbor01", 22, 70, 10, 25, 11},
    {18, 30, "Claire Dubois", "Small Hours", "978-0-3995-9018-4", "Main Street store, reading room",
     "uCole00001", "pcQuill001", 55, 38, 5, 30, 13},
};

typedef struct demo_row {
    int64_t event_ms; /* eventDate: today (local) at the seed's time */
    int status, attendees, on_hand, reserved, sold;
    int64_t sign_updated, stock_updated, counted;
} demo_row;

struct lq_demo {
    const lq_config *cfg;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stopping;
    char *channel;
    redisContext *rc;
    int outage_logged;
    int announce; /* the next whole-state publication is logged at info (first after a connect) */
    uint64_t rng;
    int64_t created_ms;
    demo_row row[DEMO_N];
};

/* ------------------------------------------------------------------ */

static uint64_t next_rand(lq_demo *d)
{
    d->rng ^= d->rng << 13;
    d->rng ^= d->rng >> 7;
    d->rng ^= d->rng << 17;
    return d->rng;
}

static int rand_between(lq_demo *d, int lo, int hi) /* inclusive */
{
    return lo + (int)(next_rand(d) % (uint64_t)(hi - lo + 1));
}

/* Today (local time) at hh:mm, in ms since the epoch. */
static int64_t today_at(int hour, int minute)
{
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    tm.tm_hour = hour;
    tm.tm_min = minute;
    tm.tm_sec = 0;
    tm.tm_isdst = -1;
    return (int64_t)mktime(&tm) * 1000;
}

static void morning(lq_demo *d, int i, int64_t now)
{
    const demo_seed *s = &seeds[i];
    demo_row *r = &d->row[i];
    r->event_ms = today_at(s->hour, s->minute);
    r->status = ST_CONFIRMED;
    r->attendees = s->attendees;
    r->on_hand = s->on_hand;
    r->reserved = s->reserved;
    r->sold = 0;
    r->sign_updated = r->stock_updated = r->counted = now;
}

static json_t *pointer(const char *class_name, const char *id)
{
    return json_pack("{s:s, s:s, s:s}", "__type", "Pointer", "className", class_name, "objectId", id);
}

static json_t *date(int64_t ms)
{
    char b[80];
    return json_pack("{s:s, s:s}", "__type", "Date", "iso", lq_ms_to_iso(ms, b, sizeof b));
}

static json_t *acl_public(void)
{
    return json_pack("{s:{s:b}}", "*", "read", 1);
}

static void sign_id(char *buf, size_t cap, int i) { snprintf(buf, cap, "dSign%05d", i + 1); }
static void stock_id(char *buf, size_t cap, int i) { snprintf(buf, cap, "dStock%04d", i + 1); }

static json_t *signing_json(const lq_demo *d, int i)
{
    const demo_seed *s = &seeds[i];
    const demo_row *r = &d->row[i];
    char id[24], c[80], u[80];
    sign_id(id, sizeof id, i);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:s, s:o, s:s, s:o, s:i, s:o}",
                     "objectId", id, "className", "SigningSchedule",
                     "createdAt", lq_ms_to_iso(d->created_ms, c, sizeof c),
                     "updatedAt", lq_ms_to_iso(r->sign_updated, u, sizeof u),
                     "bookTitle", s->book, "authorName", s->author, "eventDate", date(r->event_ms),
                     "location", s->location,
                     "publisherContact", pointer("PublisherContact", s->publisher),
                     "status", status_name[r->status],
                     "staffLead", pointer("_User", s->staff_lead), "attendeeCount", r->attendees,
                     "ACL", acl_public());
}

static json_t *stock_json(const lq_demo *d, int i)
{
    const demo_seed *s = &seeds[i];
    const demo_row *r = &d->row[i];
    char id[24], sid[24], c[80], u[80];
    stock_id(id, sizeof id, i);
    sign_id(sid, sizeof sid, i);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:i, s:o, s:o, s:o, s:o}",
                     "objectId", id, "className", "BookStockLog",
                     "createdAt", lq_ms_to_iso(d->created_ms, c, sizeof c),
                     "updatedAt", lq_ms_to_iso(r->stock_updated, u, sizeof u),
                     "isbn", s->isbn, "bookTitle", s->book, "quantityOnHand", r->on_hand,
                     "quantityReserved", r->reserved, "restockThreshold", s->threshold,
                     "lastCountedAt", date(r->counted), "recordedBy", pointer("_User", s->staff_lead),
                     "signingSchedule", pointer("SigningSchedule", sid), "ACL", acl_public());
}

/* ------------------------------------------------------------------ */
/* Waiting and Redis                                                  */
/* ------------------------------------------------------------------ */

/* Sleeps ms unless stopped first. Returns 1 when stopping. */
static int nap(lq_demo *d, int ms)
{
    struct timespec ts;
    int stop;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&d->lock);
    while (!d->stopping && pthread_cond_timedwait(&d->cond, &d->lock, &ts) == 0)
        ;
    stop = d->stopping;
    pthread_mutex_unlock(&d->lock);
    return stop;
}

static int stopping(lq_demo *d)
{
    int s;
    pthread_mutex_lock(&d->lock);
    s = d->stopping;
    pthread_mutex_unlock(&d->lock);
    return s;
}

/* why may point into d->rc: logged before the context is freed. */
static void drop_redis(lq_demo *d, const char *why)
{
    if (!d->outage_logged) {
        LQ_WARN("demo feed lost redis; retrying", "error=\"%s\"", why);
        d->outage_logged = 1;
    }
    if (d->rc) {
        redisFree(d->rc);
        d->rc = NULL;
    }
}

/* Connects with backoff. Returns 0 when connected, -1 when stopping. */
static int connect_redis(lq_demo *d)
{
    int backoff = DEMO_BACKOFF_MIN_MS;
    while (d->rc == NULL) {
        char why[256] = "";
        if (stopping(d))
            return -1;
        d->rc = lq_redis_open(d->cfg, DEMO_CONNECT_MS, DEMO_IO_MS, why, sizeof why);
        if (d->rc) {
            LQ_INFO("demo feed connected to redis", "host=%s port=%d channel=%s", d->cfg->redis_host,
                    d->cfg->redis_port, d->channel);
            d->outage_logged = 0;
            d->announce = 1;
            break;
        }
        if (!d->outage_logged) {
            LQ_WARN("demo feed cannot reach redis; retrying", "host=%s port=%d error=\"%s\"",
                    d->cfg->redis_host, d->cfg->redis_port, why);
            d->outage_logged = 1;
        }
        if (nap(d, backoff))
            return -1;
        backoff = backoff * 2 > DEMO_BACKOFF_MAX_MS ? DEMO_BACKOFF_MAX_MS : backoff * 2;
    }
    return 0;
}

/* PUBLISHes one change (takes object and original). Returns the number of
 * Redis subscribers that got it, or -1 (connection dropped). */
static long long publish(lq_demo *d, const char *class_name, const char *op, json_t *object,
                         json_t *original)
{
    json_t *m = json_pack("{s:i, s:s, s:s, s:o}", "v", 1, "className", class_name, "op", op, "object",
                          object);
    long long n = -1;
    char *text;
    redisReply *r;

    if (m == NULL) {
        json_decref(original);
        return -1;
    }
    if (original)
        json_object_set_new(m, "original", original);
    json_object_set_new(m, "ts", json_integer(lq_wall_ms()));
    text = json_dumps(m, JSON_COMPACT);
    json_decref(m);
    if (text == NULL || d->rc == NULL) {
        free(text);
        return -1;
    }
    r = redisCommand(d->rc, "PUBLISH %s %b", d->channel, text, strlen(text));
    free(text);
    if (r && r->type == REDIS_REPLY_INTEGER)
        n = r->integer;
    else
        drop_redis(d, r && r->type == REDIS_REPLY_ERROR ? r->str : d->rc->errstr);
    if (r)
        freeReplyObject(r);
    return n;
}

/* Publishes every object: op "create" (first time), or "update" with
 * original = the object itself (a refresh). Returns the fewest subscribers
 * any message reached, or -1. */
static long long publish_all(lq_demo *d, int create)
{
    long long least = -1;
    for (int i = 0; i < DEMO_N; i++) {
        for (int k = 0; k < 2; k++) {
            json_t *o = k == 0 ? signing_json(d, i) : stock_json(d, i);
            json_t *orig = create ? NULL : json_deep_copy(o);
            long long n = publish(d, k == 0 ? "SigningSchedule" : "BookStockLog", create ? "create" : "update",
                                  o, orig);
            if (n < 0)
                return -1;
            if (least < 0 || n < least)
                least = n;
        }
    }
    return least;
}

/* ------------------------------------------------------------------ */
/* The day                                                            */
/* ------------------------------------------------------------------ */

/* Publishes an update of signing i from its state before (taken). */
static long long update_signing(lq_demo *d, int i, json_t *before)
{
    d->row[i].sign_updated = lq_wall_ms();
    return publish(d, "SigningSchedule", "update", signing_json(d, i), before);
}

static long long update_stock(lq_demo *d, int i, json_t *before)
{
    int64_t now = lq_wall_ms();
    d->row[i].stock_updated = now;
    d->row[i].counted = now;
    return publish(d, "BookStockLog", "update", stock_json(d, i), before);
}

static long long more_attendees(lq_demo *d, int i, int max)
{
    json_t *before = signing_json(d, i);
    d->row[i].attendees += rand_between(d, 1, max);
    return update_signing(d, i, before);
}

static long long next_status(lq_demo *d, int i)
{
    json_t *before = signing_json(d, i);
    d->row[i].status++;
    LQ_INFO("demo feed: signing status", "author=\"%s\" status=%s", seeds[i].author,
            status_name[d->row[i].status]);
    return update_signing(d, i, before);
}

static long long sale(lq_demo *d, int i)
{
    demo_row *r = &d->row[i];
    json_t *before = stock_json(d, i);
    int n = rand_between(d, 1, 3);
    if (r->reserved > 0 && rand_between(d, 0, 3) == 0) { /* a reserved copy picked up */
        r->reserved--;
        n = 1;
    }
    if (n > r->on_hand)
        n = r->on_hand;
    r->on_hand -= n;
    r->sold++;
    return update_stock(d, i, before);
}

static long long restock(lq_demo *d, int i)
{
    json_t *before = stock_json(d, i);
    d->row[i].on_hand += DEMO_CARTON;
    LQ_INFO("demo feed: restock", "book=\"%s\" quantityOnHand=%d", seeds[i].book, d->row[i].on_hand);
    return update_stock(d, i, before);
}

/* Every object back to its morning state (today's date), as updates. */
static long long new_day(lq_demo *d)
{
    int64_t now = lq_wall_ms();
    long long least = -1;
    LQ_INFO("demo feed: the day is over; it starts again", NULL);
    for (int i = 0; i < DEMO_N; i++) {
        json_t *sb = signing_json(d, i), *kb = stock_json(d, i);
        long long a, b;
        morning(d, i, now);
        a = publish(d, "SigningSchedule", "update", signing_json(d, i), sb);
        if (a < 0) {
            json_decref(kb);
            return -1;
        }
        b = publish(d, "BookStockLog", "update", stock_json(d, i), kb);
        if (b < 0)
            return -1;
        if (least < 0 || a < least)
            least = a;
        if (b < least)
            least = b;
    }
    return least;
}

/* One change of the simulated day. Returns what publish returned. */
static long long step(lq_demo *d)
{
    int cur = -1, roll = rand_between(d, 0, 99);
    for (int i = 0; i < DEMO_N && cur < 0; i++)
        if (d->row[i].status != ST_COMPLETED)
            cur = i;
    if (cur < 0)
        return new_day(d);

    demo_row *r = &d->row[cur];
    int later = cur + 1 < DEMO_N ? rand_between(d, cur + 1, DEMO_N - 1) : cur;
    switch (r->status) {
    case ST_CONFIRMED: /* the author is on the way; RSVPs come in */
        return roll < 60 ? next_status(d, cur) : more_attendees(d, roll < 80 ? cur : later, 3);
    case ST_CHECKED_IN: /* the queue forms */
        return roll < 50 ? next_status(d, cur) : more_attendees(d, cur, 4);
    default: /* signing */
        if (r->sold >= seeds[cur].sales)
            return next_status(d, cur);
        if (r->on_hand < seeds[cur].threshold && roll < 20)
            return restock(d, cur);
        if (roll < 70 && r->on_hand > 0)
            return sale(d, cur);
        if (r->on_hand == 0)
            return restock(d, cur);
        return more_attendees(d, roll < 90 ? cur : later, 3);
    }
}

static void *demo_main(void *arg)
{
    lq_demo *d = arg;
    int full = 1, create = 1; /* the whole state is due; as creates until they were heard */
    int64_t last_full = 0;
    int refresh_ms = DEMO_REFRESH_FIRST_MS, next_refresh_ms = DEMO_REFRESH_FIRST_MS;

    LQ_INFO("demo feed started: a simulated event day", "channel=%s signings=%d", d->channel, DEMO_N);
    for (;;) {
        long long n;
        if (connect_redis(d) != 0)
            break;
        if (full) {
            n = publish_all(d, create);
            if (n < 0) { /* reconnect, then the same again (a pause: the connect may succeed
                          * while PUBLISH keeps failing, e.g. refused by an ACL) */
                if (nap(d, 1000))
                    break;
                continue;
            }
            if (n > 0) { /* heard by at least one gateway; else again next tick */
                LQ_LOG(d->announce ? LQ_LOG_INFO : LQ_LOG_DEBUG, "demo feed published the day's state",
                       "op=%s signings=%d subscribers=%lld", create ? "create" : "update", DEMO_N, n);
                d->announce = 0;
                full = create = 0;
                last_full = lq_mono_ms();
                /* "heard" may have been another subscriber than this process's
                 * gateway: repeat soon after start, then every DEMO_REFRESH_MS */
                next_refresh_ms = refresh_ms;
                refresh_ms = refresh_ms * 2 > DEMO_REFRESH_MS ? DEMO_REFRESH_MS : refresh_ms * 2;
            }
        }
        if (nap(d, rand_between(d, 1000, 2000)))
            break;
        if (full)
            continue;
        if (lq_mono_ms() - last_full >= next_refresh_ms) {
            full = 1;
            continue;
        }
        n = step(d);
        if (n <= 0)
            full = 1; /* missed (Redis gone, or nobody subscribed): the whole state again */
    }
    if (d->rc)
        redisFree(d->rc);
    d->rc = NULL;
    LQ_INFO("demo feed stopped", NULL);
    return NULL;
}

lq_demo *lq_demo_start(const lq_config *cfg)
{
    lq_demo *d = calloc(1, sizeof *d);
    pthread_condattr_t ca;
    size_t len;
    int64_t now = lq_wall_ms();

    if (d == NULL)
        return NULL;
    d->cfg = cfg;
    len = strlen(cfg->channel_prefix) + strlen(cfg->app_id) + sizeof ":changes";
    d->channel = malloc(len);
    if (d->channel == NULL) {
        free(d);
        return NULL;
    }
    snprintf(d->channel, len, "%s%s:changes", cfg->channel_prefix, cfg->app_id);
    d->rng = (uint64_t)now * 2654435761u ^ (uint64_t)getpid() ^ 0x9e3779b97f4a7c15ull;
    if (d->rng == 0)
        d->rng = 1;
    d->created_ms = now;
    for (int i = 0; i < DEMO_N; i++)
        morning(d, i, now);
    pthread_mutex_init(&d->lock, NULL);
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&d->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&d->thread, NULL, demo_main, d) != 0) {
        LQ_ERROR("demo feed: cannot create its thread", NULL);
        pthread_cond_destroy(&d->cond);
        pthread_mutex_destroy(&d->lock);
        free(d->channel);
        free(d);
        return NULL;
    }
    return d;
}

void lq_demo_stop(lq_demo *d)
{
    if (d == NULL)
        return;
    pthread_mutex_lock(&d->lock);
    d->stopping = 1;
    pthread_cond_broadcast(&d->cond);
    pthread_mutex_unlock(&d->lock);
    pthread_join(d->thread, NULL);
    pthread_cond_destroy(&d->cond);
    pthread_mutex_destroy(&d->lock);
    free(d->channel);
    free(d);
}
