/* mongoconn.c - see mongoconn.h. */
#include "livequery/mongoconn.h"

#include <pthread.h>

#include "livequery/log.h"

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
