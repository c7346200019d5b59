/* mongoconn.c - see mongoconn.h. */
#include "livequery/mongoconn.h"

#include <mongoc/mongoc.h>
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
