/*
 * lq_mongo_read - the baseline for the tailer benchmark: reads N change
 * events from one collection with libmongoc and does nothing with them.
 * Same watch options as the tailer. Prints "ready" once the stream is open,
 * then, after the N-th event, one JSON line:
 *   {"events":N,"last_event_wall_ms":T,"cpu_ms":C}
 *
 *   lq_mongo_read URI COLLECTION N
 */
#include <mongoc/mongoc.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

static long long wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000LL +
           (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: lq_mongo_read URI COLLECTION N\n");
        return 2;
    }
    long n = atol(argv[3]), got = 0;
    bson_error_t error;
    mongoc_init();
    mongoc_uri_t *uri = mongoc_uri_new_with_error(argv[1], &error);
    if (!uri) {
        fprintf(stderr, "lq_mongo_read: %s\n", error.message);
        return 2;
    }
    mongoc_client_t *client = mongoc_client_new_from_uri(uri);
    const char *db = mongoc_uri_get_database(uri);
    mongoc_collection_t *coll = mongoc_client_get_collection(client, db ? db : "parse", argv[2]);
    bson_t pipeline = BSON_INITIALIZER;
    bson_t *opts = BCON_NEW("fullDocument", "updateLookup", "fullDocumentBeforeChange",
                            "whenAvailable", "maxAwaitTimeMS", BCON_INT64(1000));
    mongoc_change_stream_t *cs = mongoc_collection_watch(coll, &pipeline, opts);
    const bson_t *doc, *reply;
    /* one empty round so the cursor exists before the writer starts */
    if (mongoc_change_stream_next(cs, &doc))
        got++;
    if (mongoc_change_stream_error_document(cs, &error, &reply)) {
        fprintf(stderr, "lq_mongo_read: %s\n", error.message);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    long long c0 = cpu_ms();
    time_t deadline = time(NULL) + 120;
    while (got < n && time(NULL) < deadline) {
        if (mongoc_change_stream_next(cs, &doc))
            got++;
        else if (mongoc_change_stream_error_document(cs, &error, &reply)) {
            fprintf(stderr, "lq_mongo_read: %s\n", error.message);
            return 1;
        }
    }
    printf("{\"events\":%ld,\"last_event_wall_ms\":%lld,\"cpu_ms\":%lld}\n", got, wall_ms(),
           cpu_ms() - c0);
    mongoc_change_stream_destroy(cs);
    bson_destroy(opts);
    mongoc_collection_destroy(coll);
    mongoc_client_destroy(client);
    mongoc_uri_destroy(uri);
    mongoc_cleanup();
    return got == n ? 0 : 1;
}
