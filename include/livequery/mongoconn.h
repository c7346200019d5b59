/*
 * mongoconn.h - what every libmongoc user in the process shares: library
 * initialization and its log messages routed into ours (log.h).
 *
 * Thread: lq_mongo_init may be called from any thread, any number of times.
 */
#ifndef LIVEQUERY_MONGOCONN_H
#define LIVEQUERY_MONGOCONN_H

/* mongoc_init() and the log handler, once per process. */
void lq_mongo_init(void);

#endif
