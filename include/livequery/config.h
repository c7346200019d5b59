/*
 * config.h - command line flags, LIVEQUERY_* environment variables and an
 * optional config file (--config / LIVEQUERY_CONFIG) parsed into one
 * validated struct. Precedence: flag > environment > file > default.
 *
 * Thread: built once on the main thread before anything starts; read-only after.
 */
#ifndef LIVEQUERY_CONFIG_H
#define LIVEQUERY_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { LQ_LOOP_UV = 0, LQ_LOOP_POLL = 1 };

/* Roles: which halves of livequeryd this process runs (bit set). */
enum { LQ_ROLE_GATEWAY = 1, LQ_ROLE_TAILER = 2, LQ_ROLE_BOTH = 3 };

typedef struct lq_config {
    char *host;            /* bind address; default 127.0.0.1 */
    int port;              /* default 1337 */
    char *redis_host;      /* from redis_url; default 127.0.0.1 */
    int redis_port;        /* default 6379 */
    int redis_db;          /* from redis://host:port/N; default 0 */
    char *redis_password;  /* from redis://:pass@host; NULL if none */
    char *app_id;          /* required */
    char *master_key;      /* NULL: no client may act with the master key */
    char *channel_prefix;  /* our bus channel is <prefix><app_id>:changes; default "livequery:" */

    size_t max_frame_bytes;     /* largest client frame; default 65536 */
    int max_json_depth;         /* deepest client JSON; default 64 */
    int max_subscriptions;      /* per connection; default 256 */
    size_t max_query_bytes;     /* serialized where; default 16384 */
    int max_query_depth;        /* default 16 */
    int max_connections;        /* per process; default 10000 */
    int max_msgs_per_s;         /* client messages per second per connection (token bucket rate); default 100 */
    int msg_burst;              /* the bucket's size: messages a connection may send at once; default 512 */
    int handshake_timeout_s;    /* seconds a new TCP connection has to complete its HTTP request; default 10 */
    size_t max_queue_bytes;     /* outbound bytes queued per connection; default 4 MiB */
    int ping_interval_s;        /* WebSocket ping period; a peer silent for 2 periods is dropped; default 10 */
    int log_level;              /* 0 error, 1 warn, 2 info, 3 debug; default 2 */
    int log_format;             /* LQ_LOG_FMT_LOGFMT (default) or LQ_LOG_FMT_JSON (log.h) */
    char *config_file;          /* the file read, or NULL */
    char *tls_cert;             /* PEM certificate chain; with tls_key: wss:// and https:// */
    char *tls_key;              /* PEM private key */
    char *allowed_origins;      /* comma-separated Origin values allowed to upgrade; "*" any (default) */
    int drain_timeout_s;        /* SIGTERM: seconds clients get to take their close; default 10 */
    char *web_root;             /* directory served at /display/ (the event-day page); "" none */
    int demo_feed;              /* 1: publish a simulated event day through Redis (no MongoDB) */
    int initial_cache_size;     /* objects per class kept for the query op without MongoDB; default 10000 */
    int max_results;            /* objects in one query result; default 1000 */
    int io_uring;               /* fan-out writes through io_uring (default 1) */
    int event_loop;             /* LQ_LOOP_UV (epoll, the default) or LQ_LOOP_POLL */

    int role;                   /* LQ_ROLE_*; default both (the tailer only with mongodb_uri) */
    char *mongodb_uri;          /* NULL: no tailer */
    char *classes;              /* comma-separated classes the tailer watches */
    char *collection_prefix;    /* Parse collectionPrefix; default "" */
    char *full_document;        /* change stream fullDocument: updateLookup (default), whenAvailable, required */
    char *files_url_prefix;     /* File url = prefix + name; NULL: files carry no url */
    char *tailer_id;            /* lease owner name; default host:pid:random */
    size_t stream_max_len;      /* entries kept per class in the Redis history stream; default 10000 */
    int lease_ttl_ms;           /* tailer lease; renewed every ttl/5; default 3000 */
    int tailer_cache_size;      /* last-seen objects kept per class without pre-images; default 10000 */

    int auth_threads;           /* session/role lookup threads (gateway with mongodb_uri); default 2 */
    int auth_cache_size;        /* cached session tokens; default 100000 */
    int auth_cache_ttl_ms;      /* unused cached tokens expire after this; default 30000 */
    int auth_revalidate_s;      /* tokens in use are re-read this often; 0 never; default 300 */
} lq_config;

/* Parses argv, the environment and the config file into *cfg (zeroed first).
 * Returns 0 on success; 1 when --help or --version was printed to out (the
 * caller should exit 0); -1 after printing a one-line error naming the bad
 * flag or variable to err (the caller should exit 2). */
int lq_config_parse(lq_config *cfg, int argc, char **argv, FILE *out, FILE *err);

/* What a SIGHUP may change in a running process: copies the reloadable
 * settings (limits, log level and format, allowed origins, drain timeout)
 * from next into live, and writes to err a line for each other setting that
 * differs (it needs a restart). Returns the number of settings changed. */
int lq_config_reload(lq_config *live, const lq_config *next, FILE *err);

/* Walks a comma-separated list (--allowed-origins, --classes): sets *item
 * and *len to the next entry with the spaces around it trimmed and returns 1,
 * or returns 0 at the end. *p starts at the list and is advanced. */
int lq_config_list_next(const char **p, const char **item, size_t *len);

/* Frees the strings in cfg. Accepts NULL. */
void lq_config_release(lq_config *cfg);

#endif
