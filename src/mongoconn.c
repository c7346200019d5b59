/* mongoconn.c - see mongoconn.h. */
#include "livequery/mongoconn.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "livequery/clock.h"
#include "livequery/log.h"
#include "livequery/metrics.h"

static void route_mongoc_log(mongoc_log_level_t level, const char *domain, const char *message, void *ud)
{
    (void)ud;
    if (level <= MONGOC_LOG_LEVEL_CRITICAL)
        LQ_ERROR("libmongoc", "domain=%s message=\"%s\"", domain, message);
    else if (level == MONGOC_LOG_LEVEL_WARNING)
        LQ_WARN("libmongoc", "domain=%s message=\"%s\"", domain, message);
    else if (level <= MONGOC_LOG_LEVEL_INFO)
        LQ_DEBUG("libmongoc", "domain=%s message=\"%s\"", domain, message);
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void start(void)
{
    mongoc_init();
    mongoc_log_set_handler(route_mongoc_log, NULL);
}

void lq_mongo_init(void)
{
    pthread_once(&once, start);
}

mongoc_client_pool_t *lq_mongo_pool_new(const char *uri_text, const char *appname,
                                        int32_t socket_timeout_ms, mongoc_uri_t **uri,
                                        const char **db)
{
    bson_error_t error;
    mongoc_uri_t *u;
    mongoc_client_pool_t *pool;

    lq_mongo_init();
    *uri = NULL;
    u = mongoc_uri_new_with_error(uri_text, &error);
    if (u == NULL) {
        LQ_ERROR("invalid --mongodb-uri", "error=\"%s\"", error.message);
        return NULL;
    }
    if (!mongoc_uri_has_option(u, MONGOC_URI_SERVERSELECTIONTIMEOUTMS))
        mongoc_uri_set_option_as_int32(u, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000);
    if (!mongoc_uri_has_option(u, MONGOC_URI_SOCKETTIMEOUTMS))
        mongoc_uri_set_option_as_int32(u, MONGOC_URI_SOCKETTIMEOUTMS, socket_timeout_ms);
    if (!mongoc_uri_has_option(u, MONGOC_URI_APPNAME))
        mongoc_uri_set_appname(u, appname);
    pool = mongoc_client_pool_new(u);
    if (pool == NULL) {
        LQ_ERROR("cannot create a MongoDB client pool", NULL);
        mongoc_uri_destroy(u);
        return NULL;
    }
    mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2);
    *db = mongoc_uri_get_database(u);
    if (*db == NULL)
        *db = "parse";
    *uri = u;
    return pool;
}

/*---- reachability ----------------------------------------------------------------*/

static _Atomic int64_t noted_ms; /* monotonic ms of the last lq_mongo_note; 0 never */

void lq_mongo_note(int reachable)
{
    LQ_METRIC_SET(mongodb_connected, reachable ? 1 : 0);
    atomic_store_explicit(&noted_ms, lq_mono_ms(), memory_order_relaxed);
}

struct lq_mongo_pinger {
    mongoc_uri_t *uri;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond; /* signalled at stop */
    int stopping;
    int interval_ms;
};

/* One ping on a client of its own; a failed one drops the client, so the
 * next starts afresh (a single-threaded client that failed would wait out
 * its 5 s cooldown). 1 answered, 0 not. */
static int ping_once(lq_mongo_pinger *p, mongoc_client_t **client)
{
    bson_t cmd = BSON_INITIALIZER, reply;
    bson_error_t error;
    int ok;

    if (*client == NULL) {
        *client = mongoc_client_new_from_uri(p->uri);
        if (*client == NULL)
            return 0;
        mongoc_client_set_error_api(*client, MONGOC_ERROR_API_VERSION_2);
    }
    BSON_APPEND_INT32(&cmd, "ping", 1);
    ok = mongoc_client_command_simple(*client, "admin", &cmd, NULL, &reply, &error);
    bson_destroy(&cmd);
    bson_destroy(&reply);
    if (!ok) {
        LQ_DEBUG("mongodb ping failed", "code=%u error=\"%s\"", error.code, error.message);
        mongoc_client_destroy(*client);
        *client = NULL;
    }
    return ok;
}

static void *pinger_main(void *arg)
{
    lq_mongo_pinger *p = arg;
    mongoc_client_t *client = NULL;

    pthread_mutex_lock(&p->lock);
    while (!p->stopping) {
        int64_t last = atomic_load_explicit(&noted_ms, memory_order_relaxed);
        int64_t due = last == 0 ? 0 : last + p->interval_ms - lq_mono_ms();
        if (due <= 0) {
            pthread_mutex_unlock(&p->lock);
            lq_mongo_note(ping_once(p, &client));
            pthread_mutex_lock(&p->lock);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += due / 1000;
        ts.tv_nsec += (long)(due % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cond, &p->lock, &ts);
    }
    pthread_mutex_unlock(&p->lock);
    if (client)
        mongoc_client_destroy(client);
    return NULL;
}

lq_mongo_pinger *lq_mongo_pinger_start(const char *uri_text, int interval_ms)
{
    bson_error_t error;
    lq_mongo_pinger *p;
    mongoc_uri_t *u;

    lq_mongo_init();
    u = mongoc_uri_new_with_error(uri_text, &error);
    if (u == NULL) {
        LQ_ERROR("invalid --mongodb-uri", "error=\"%s\"", error.message);
        return NULL;
    }
    /* short, whatever the URI says: the answer is only "reachable or not" */
    mongoc_uri_set_option_as_int32(u, MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 1000);
    mongoc_uri_set_option_as_int32(u, MONGOC_URI_CONNECTTIMEOUTMS, 1000);
    mongoc_uri_set_option_as_int32(u, MONGOC_URI_SOCKETTIMEOUTMS, 2000);
    mongoc_uri_set_appname(u, "livequeryd-ping");
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        mongoc_uri_destroy(u);
        return NULL;
    }
    p->uri = u;
    p->interval_ms = interval_ms;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->cond, NULL);
    if (pthread_create(&p->thread, NULL, pinger_main, p) != 0) {
        LQ_ERROR("cannot start the mongodb ping thread", NULL);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->cond);
        mongoc_uri_destroy(u);
        free(p);
        return NULL;
    }
    return p;
}

void lq_mongo_pinger_stop(lq_mongo_pinger *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_signal(&p->cond);
    pthread_mutex_unlock(&p->lock);
    pthread_join(p->thread, NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->cond);
    mongoc_uri_destroy(p->uri);
    free(p);
}
