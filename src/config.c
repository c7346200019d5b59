/*
 * config.c - one table of settings drives flag parsing, environment lookup,
 * validation and --help, so the three can never disagree.
 */
#include "livequery/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "livequery/jsonout.h"
#include "livequery/log.h"

#ifndef LQ_VERSION
#define LQ_VERSION "0.1.0"
#endif

typedef enum { T_STR, T_INT, T_SIZE, T_REDIS_URL, T_LOG_LEVEL, T_EVENT_LOOP, T_ROLE, T_FULLDOC } setting_type;

typedef struct setting {
    const char *flag; /* without the leading -- */
    const char *env;
    setting_type type;
    size_t offset;
    long long min, max;
    const char *def; /* NULL: unset */
    const char *help;
} setting;

#define OFF(f) offsetof(lq_config, f)

static const setting settings[] = {
    {"host", "LIVEQUERY_HOST", T_STR, OFF(host), 0, 0, "127.0.0.1", "address to listen on"},
    {"port", "LIVEQUERY_PORT", T_INT, OFF(port), 1, 65535, "1337", "TCP port for WebSocket and HTTP"},
    {"redis-url", "LIVEQUERY_REDIS_URL", T_REDIS_URL, 0, 0, 0, "redis://127.0.0.1:6379",
     "Redis to take change events from: redis://[:password@]host[:port][/db]"},
    {"app-id", "LIVEQUERY_APP_ID", T_STR, OFF(app_id), 0, 0, NULL,
     "Parse application id; clients must connect with it (required)"},
    {"master-key", "LIVEQUERY_MASTER_KEY", T_STR, OFF(master_key), 0, 0, NULL,
     "Parse master key; unset: no client gets master-key access"},
    {"channel-prefix", "LIVEQUERY_CHANNEL_PREFIX", T_STR, OFF(channel_prefix), 0, 0, "livequery:",
     "prefix of the change channel <prefix><app-id>:changes"},
    {"max-frame-bytes", "LIVEQUERY_MAX_FRAME_BYTES", T_SIZE, OFF(max_frame_bytes), 256,
     64LL << 20, "65536", "largest client message; larger ones close the connection (1009)"},
    {"max-json-depth", "LIVEQUERY_MAX_JSON_DEPTH", T_INT, OFF(max_json_depth), 4, 1000, "64",
     "deepest nesting accepted in a client message"},
    {"max-subscriptions", "LIVEQUERY_MAX_SUBSCRIPTIONS", T_INT, OFF(max_subscriptions), 1,
     1000000, "256", "subscriptions per connection"},
    {"max-query-bytes", "LIVEQUERY_MAX_QUERY_BYTES", T_SIZE, OFF(max_query_bytes), 64, 64LL << 20,
     "16384", "largest where clause, serialized"},
    {"max-query-depth", "LIVEQUERY_MAX_QUERY_DEPTH", T_INT, OFF(max_query_depth), 1, 100, "16",
     "deepest nesting of a where clause"},
    {"max-connections", "LIVEQUERY_MAX_CONNECTIONS", T_INT, OFF(max_connections), 1, 1000000,
     "10000", "WebSocket connections per process; more are closed (1013)"},
    {"max-messages-per-second", "LIVEQUERY_MAX_MESSAGES_PER_SECOND", T_INT, OFF(max_msgs_per_s), 1,
     1000000, "100", "client messages per second per connection (sustained); more are refused (155)"},
    {"message-burst", "LIVEQUERY_MESSAGE_BURST", T_INT, OFF(msg_burst), 1, 1000000, "512",
     "client messages a connection may send at once above its rate; over 2x this refused within "
     "10 s closes it (1008)"},
    {"handshake-timeout", "LIVEQUERY_HANDSHAKE_TIMEOUT", T_INT, OFF(handshake_timeout_s), 1, 300,
     "10", "seconds a new connection has to send its complete HTTP request (upgrade or GET)"},
    {"max-queue-bytes", "LIVEQUERY_MAX_QUEUE_BYTES", T_SIZE, OFF(max_queue_bytes), 4096,
     1LL << 32, "4194304", "outbound bytes queued per connection before it is dropped as too slow"},
    {"ping-interval", "LIVEQUERY_PING_INTERVAL", T_INT, OFF(ping_interval_s), 1, 3600, "10",
     "seconds between pings; a peer silent for two intervals is dropped"},
    {"log-level", "LIVEQUERY_LOG_LEVEL", T_LOG_LEVEL, OFF(log_level), 0, 0, "info",
     "error, warn, info or debug"},
    {"io-uring", "LIVEQUERY_IO_URING", T_INT, OFF(io_uring), 0, 1, "1",
     "1: write an event's frames to all its subscribers with one io_uring submission (falls back to "
     "send() where the kernel refuses io_uring); 0: one send() per connection"},
    {"event-loop", "LIVEQUERY_EVENT_LOOP", T_EVENT_LOOP, OFF(event_loop), 0, 0, "uv",
     "uv (libuv: epoll, cost per wake-up independent of idle connections) or poll (lws' own poll())"},
    {"role", "LIVEQUERY_ROLE", T_ROLE, OFF(role), 0, 0, "both",
     "gateway, tailer or both (the tailer runs only when --mongodb-uri is set)"},
    {"mongodb-uri", "LIVEQUERY_MONGODB_URI", T_STR, OFF(mongodb_uri), 0, 0, NULL,
     "MongoDB replica set the tailer reads change streams from (database from the URI path, default parse)"},
    {"classes", "LIVEQUERY_CLASSES", T_STR, OFF(classes), 0, 0, "SigningSchedule,BookStockLog",
     "comma-separated Parse classes the tailer watches"},
    {"collection-prefix", "LIVEQUERY_COLLECTION_PREFIX", T_STR, OFF(collection_prefix), 0, 0, "",
     "Parse Server's collectionPrefix"},
    {"full-document", "LIVEQUERY_FULL_DOCUMENT", T_FULLDOC, OFF(full_document), 0, 0, "updateLookup",
     "change stream fullDocument: updateLookup, or whenAvailable / required with post-images"},
    {"files-url-prefix", "LIVEQUERY_FILES_URL_PREFIX", T_STR, OFF(files_url_prefix), 0, 0, NULL,
     "File fields get url = prefix + name, e.g. https://host/parse/files/APPID/"},
    {"tailer-id", "LIVEQUERY_TAILER_ID", T_STR, OFF(tailer_id), 0, 0, NULL,
     "this tailer's name in the lease; default host:pid:random"},
    {"stream-max-len", "LIVEQUERY_STREAM_MAX_LEN", T_SIZE, OFF(stream_max_len), 1, 100000000,
     "10000", "events kept per class in Redis for gap repair"},
    {"lease-ttl", "LIVEQUERY_LEASE_TTL", T_INT, OFF(lease_ttl_ms), 500, 600000, "3000",
     "milliseconds a tailer lease lives unless renewed (every ttl/5); a standby takes over after it"},
    {"tailer-cache-size", "LIVEQUERY_TAILER_CACHE_SIZE", T_INT, OFF(tailer_cache_size), 0,
     10000000, "10000", "last-seen objects kept per class for original and deletes without pre-images"},
    {"auth-threads", "LIVEQUERY_AUTH_THREADS", T_INT, OFF(auth_threads), 1, 64, "2",
     "threads resolving session tokens and roles in MongoDB (gateway, with --mongodb-uri)"},
    {"auth-cache-size", "LIVEQUERY_AUTH_CACHE_SIZE", T_INT, OFF(auth_cache_size), 16, 10000000,
     "100000", "session tokens (valid or not) kept in the gateway's cache"},
    {"auth-cache-ttl", "LIVEQUERY_AUTH_CACHE_TTL", T_INT, OFF(auth_cache_ttl_ms), 100, 86400000,
     "30000", "milliseconds an unused cached token is kept (tokens in use stay, kept current by change events)"},
    {"auth-revalidate", "LIVEQUERY_AUTH_REVALIDATE", T_INT, OFF(auth_revalidate_s), 0, 86400,
     "300", "seconds between re-reads of tokens in use, a backstop for missed change events; 0: never"},
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static void usage(FILE *out)
{
    fprintf(out,
            "usage: livequeryd --app-id ID [options]\n"
            "\n"
            "A Parse LiveQuery server: WebSocket clients subscribe to queries, change events\n"
            "arrive through Redis pub/sub. Every option can also be set by its environment\n"
            "variable; a flag wins over the environment.\n\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &settings[i];
        fprintf(out, "  --%-18s %s\n  %-20s env %s", s->flag, s->help, "", s->env);
        if (s->def)
            fprintf(out, ", default %s", s->def);
        fputc('\n', out);
    }
    fprintf(out, "  --%-18s %s\n  --%-18s %s\n", "help", "print this help and exit", "version",
            "print the version and exit");
}

static int parse_redis_url(lq_config *cfg, const char *url, FILE *err, const char *origin)
{
    const char *p = url, *at, *host, *colon, *slash;
    char *end;

    if (strncmp(p, "redis://", 8) != 0) {
        fprintf(err, "livequeryd: %s: '%s' is not a redis:// URL\n", origin, url);
        return -1;
    }
    p += 8;
    free(cfg->redis_host);
    free(cfg->redis_password);
    cfg->redis_host = NULL;
    cfg->redis_password = NULL;
    cfg->redis_port = 6379;
    cfg->redis_db = 0;
    slash = strchr(p, '/');
    at = strchr(p, '@');
    if (at && (!slash || at < slash)) {
        const char *pw = memchr(p, ':', (size_t)(at - p));
        pw = pw ? pw + 1 : p; /* redis://user:pass@ or redis://pass@ */
        cfg->redis_password = strndup(pw, (size_t)(at - pw));
        p = at + 1;
    }
    host = p;
    colon = strchr(p, ':');
    if (colon && slash && colon > slash)
        colon = NULL;
    size_t hlen = colon ? (size_t)(colon - host) : slash ? (size_t)(slash - host) : strlen(host);
    if (hlen == 0) {
        fprintf(err, "livequeryd: %s: '%s' has no host\n", origin, url);
        return -1;
    }
    cfg->redis_host = strndup(host, hlen);
    if (colon) {
        errno = 0;
        long port = strtol(colon + 1, &end, 10);
        if (errno || end == colon + 1 || port < 1 || port > 65535 || (*end && *end != '/')) {
            fprintf(err, "livequeryd: %s: '%s' has an invalid port\n", origin, url);
            return -1;
        }
        cfg->redis_port = (int)port;
    }
    if (slash && slash[1]) {
        errno = 0;
        long db = strtol(slash + 1, &end, 10);
        if (errno || *end || db < 0 || db > 1000) {
            fprintf(err, "livequeryd: %s: '%s' has an invalid database number\n", origin, url);
            return -1;
        }
        cfg->redis_db = (int)db;
    }
    return 0;
}

static int apply(lq_config *cfg, const setting *s, const char *val, FILE *err, const char *origin)
{
    char *end;
    void *field = (char *)cfg + s->offset;

    switch (s->type) {
    case T_STR:
        if (*val == '\0' && s->def == NULL && strcmp(s->flag, "master-key") != 0) {
            fprintf(err, "livequeryd: %s: must not be empty\n", origin);
            return -1;
        }
        free(*(char **)field);
        *(char **)field = lq_xstrdup(val);
        return 0;
    case T_REDIS_URL:
        return parse_redis_url(cfg, val, err, origin);
    case T_LOG_LEVEL: {
        int l = lq_log_level_parse(val);
        if (l < 0) {
            fprintf(err, "livequeryd: %s: '%s' is not one of error, warn, info, debug\n", origin,
                    val);
            return -1;
        }
        *(int *)field = l;
        return 0;
    }
    case T_EVENT_LOOP:
        if (strcmp(val, "uv") == 0)
            *(int *)field = LQ_LOOP_UV;
        else if (strcmp(val, "poll") == 0)
            *(int *)field = LQ_LOOP_POLL;
        else {
            fprintf(err, "livequeryd: %s: '%s' is not one of uv, poll\n", origin, val);
            return -1;
        }
        return 0;
    case T_ROLE:
        if (strcmp(val, "gateway") == 0)
            *(int *)field = LQ_ROLE_GATEWAY;
        else if (strcmp(val, "tailer") == 0)
            *(int *)field = LQ_ROLE_TAILER;
        else if (strcmp(val, "both") == 0)
            *(int *)field = LQ_ROLE_BOTH;
        else {
            fprintf(err, "livequeryd: %s: '%s' is not one of gateway, tailer, both\n", origin, val);
            return -1;
        }
        return 0;
    case T_FULLDOC:
        if (strcmp(val, "updateLookup") != 0 && strcmp(val, "whenAvailable") != 0 &&
            strcmp(val, "required") != 0) {
            fprintf(err, "livequeryd: %s: '%s' is not one of updateLookup, whenAvailable, required\n",
                    origin, val);
            return -1;
        }
        free(*(char **)field);
        *(char **)field = lq_xstrdup(val);
        return 0;
    case T_INT:
    case T_SIZE: {
        errno = 0;
        long long v = strtoll(val, &end, 10);
        if (errno || end == val || *end || v < s->min || v > s->max) {
            fprintf(err, "livequeryd: %s: '%s' is not a whole number from %lld to %lld\n", origin,
                    val, s->min, s->max);
            return -1;
        }
        if (s->type == T_INT)
            *(int *)field = (int)v;
        else
            *(size_t *)field = (size_t)v;
        return 0;
    }
    }
    return -1;
}

int lq_config_parse(lq_config *cfg, int argc, char **argv, FILE *out, FILE *err)
{
    const char *given[NSETTINGS] = {0};
    char origin[96];

    memset(cfg, 0, sizeof(*cfg));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        size_t k;

        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(out);
            return 1;
        }
        if (strcmp(a, "--version") == 0) {
            fprintf(out, "livequeryd %s\n", LQ_VERSION);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0) {
            fprintf(err, "livequeryd: unexpected argument '%s' (see --help)\n", a);
            goto fail;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t nlen = eq ? (size_t)(eq - a) : strlen(a);
        for (k = 0; k < NSETTINGS; k++)
            if (strlen(settings[k].flag) == nlen && strncmp(settings[k].flag, a, nlen) == 0)
                break;
        if (k == NSETTINGS) {
            fprintf(err, "livequeryd: unknown option '--%.*s' (see --help)\n", (int)nlen, a);
            goto fail;
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(err, "livequeryd: --%s needs a value\n", settings[k].flag);
            goto fail;
        }
        given[k] = val;
    }
    for (size_t k = 0; k < NSETTINGS; k++) {
        const setting *s = &settings[k];
        const char *val = given[k];
        if (val) {
            snprintf(origin, sizeof(origin), "--%s", s->flag);
        } else if ((val = getenv(s->env)) != NULL && *val) {
            snprintf(origin, sizeof(origin), "%s", s->env);
        } else if ((val = s->def) != NULL) {
            snprintf(origin, sizeof(origin), "default of --%s", s->flag);
        } else {
            continue;
        }
        if (apply(cfg, s, val, err, origin) != 0)
            goto fail;
    }
    if (cfg->app_id == NULL) {
        fprintf(err, "livequeryd: --app-id (or LIVEQUERY_APP_ID) is required\n");
        goto fail;
    }
    if (cfg->role == LQ_ROLE_TAILER && cfg->mongodb_uri == NULL) {
        fprintf(err, "livequeryd: --role tailer needs --mongodb-uri (or LIVEQUERY_MONGODB_URI)\n");
        goto fail;
    }
    if (cfg->mongodb_uri) {
        /* every class must be a valid name: it becomes a collection, a key and a channel field */
        const char *p = cfg->classes;
        int n = 0;
        while (*p) {
            size_t len = strcspn(p, ",");
            int ok = len > 0 && len <= 128 && (isalpha((unsigned char)p[0]) || p[0] == '_');
            for (size_t j = 1; ok && j < len; j++)
                ok = isalnum((unsigned char)p[j]) || p[j] == '_';
            if (!ok) {
                fprintf(err, "livequeryd: --classes: '%.*s' is not a Parse class name\n", (int)len, p);
                goto fail;
            }
            n++;
            p += len;
            if (*p == ',')
                p++;
        }
        if (n == 0) {
            fprintf(err, "livequeryd: --classes: no class given\n");
            goto fail;
        }
    }
    if (cfg->master_key && cfg->master_key[0] == '\0') {
        free(cfg->master_key);
        cfg->master_key = NULL;
    }
    return 0;
fail:
    lq_config_release(cfg);
    return -1;
}

void lq_config_release(lq_config *cfg)
{
    if (cfg == NULL)
        return;
    free(cfg->host);
    free(cfg->redis_host);
    free(cfg->redis_password);
    free(cfg->app_id);
    free(cfg->master_key);
    free(cfg->channel_prefix);
    free(cfg->mongodb_uri);
    free(cfg->classes);
    free(cfg->collection_prefix);
    free(cfg->full_document);
    free(cfg->files_url_prefix);
    free(cfg->tailer_id);
    memset(cfg, 0, sizeof(*cfg));
}
