/*
 * config.c - one table of settings drives flag parsing, environment lookup,
 * the config file, validation, --help and SIGHUP reloads, so they can never
 * disagree.
 */
#include "livequery/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "livequery/jsonout.h"
#include "livequery/log.h"

#ifndef LQ_VERSION
#define LQ_VERSION "0.1.0"
#endif
#ifndef LQ_WEB_ROOT
#define LQ_WEB_ROOT ""
#endif

typedef enum {
    T_STR, T_INT, T_SIZE, T_REDIS_URL, T_LOG_LEVEL, T_LOG_FORMAT, T_EVENT_LOOP, T_ROLE, T_FULLDOC, T_OPT
} setting_type;

typedef struct setting {
    const char *flag; /* without the leading -- */
    const char *env;
    setting_type type;
    size_t offset;
    long long min, max;
    const char *def; /* NULL: unset */
    const char *help;
    int reload;      /* 1: a SIGHUP applies a new value (lq_config_reload) */
} setting;

#define OFF(f) offsetof(lq_config, f)

static const setting settings[] = {
    {"host", "LIVEQUERY_HOST", T_STR, OFF(host), 0, 0, "127.0.0.1", "address to listen on", 0},
    {"port", "LIVEQUERY_PORT", T_INT, OFF(port), 1, 65535, "1337", "TCP port for WebSocket and HTTP", 0},
    {"redis-url", "LIVEQUERY_REDIS_URL", T_REDIS_URL, 0, 0, 0, "redis://127.0.0.1:6379",
     "Redis to take change events from: redis://[:password@]host[:port][/db]", 0},
    {"app-id", "LIVEQUERY_APP_ID", T_STR, OFF(app_id), 0, 0, NULL,
     "Parse application id; clients must connect with it (required)", 0},
    {"master-key", "LIVEQUERY_MASTER_KEY", T_STR, OFF(master_key), 0, 0, NULL,
     "Parse master key; unset: no client gets master-key access", 0},
    {"channel-prefix", "LIVEQUERY_CHANNEL_PREFIX", T_STR, OFF(channel_prefix), 0, 0, "livequery:",
     "prefix of the change channel <prefix><app-id>:changes", 0},
    {"max-frame-bytes", "LIVEQUERY_MAX_FRAME_BYTES", T_SIZE, OFF(max_frame_bytes), 256,
     64LL << 20, "65536", "largest client message; larger ones close the connection (1009)", 1},
    {"max-json-depth", "LIVEQUERY_MAX_JSON_DEPTH", T_INT, OFF(max_json_depth), 4, 1000, "64",
     "deepest nesting accepted in a client message", 1},
    {"max-subscriptions", "LIVEQUERY_MAX_SUBSCRIPTIONS", T_INT, OFF(max_subscriptions), 1,
     1000000, "256", "subscriptions per connection", 1},
    {"max-query-bytes", "LIVEQUERY_MAX_QUERY_BYTES", T_SIZE, OFF(max_query_bytes), 64, 64LL << 20,
     "16384", "largest where clause, serialized", 1},
    {"max-query-depth", "LIVEQUERY_MAX_QUERY_DEPTH", T_INT, OFF(max_query_depth), 1, 100, "16",
     "deepest nesting of a where clause", 1},
    {"max-connections", "LIVEQUERY_MAX_CONNECTIONS", T_INT, OFF(max_connections), 1, 1000000,
     "10000", "WebSocket connections per process; more are closed (1013)", 1},
    {"max-messages-per-second", "LIVEQUERY_MAX_MESSAGES_PER_SECOND", T_INT, OFF(max_msgs_per_s), 1,
     1000000, "100", "client messages per second per connection (sustained); more are refused (155)", 1},
    {"message-burst", "LIVEQUERY_MESSAGE_BURST", T_INT, OFF(msg_burst), 1, 1000000, "512",
     "client messages a connection may send at once above its rate; over 2x this refused within "
     "10 s closes it (1008)", 1},
    {"handshake-timeout", "LIVEQUERY_HANDSHAKE_TIMEOUT", T_INT, OFF(handshake_timeout_s), 1, 300,
     "10", "seconds a new connection has to send its complete HTTP request (upgrade or GET)", 0},
    {"max-queue-bytes", "LIVEQUERY_MAX_QUEUE_BYTES", T_SIZE, OFF(max_queue_bytes), 4096,
     1LL << 32, "4194304", "outbound bytes queued per connection before it is dropped as too slow", 1},
    {"ping-interval", "LIVEQUERY_PING_INTERVAL", T_INT, OFF(ping_interval_s), 1, 3600, "10",
     "seconds between pings; a peer silent for two intervals is dropped", 0},
    {"log-level", "LIVEQUERY_LOG_LEVEL", T_LOG_LEVEL, OFF(log_level), 0, 0, "info",
     "error, warn, info or debug", 1},
    {"log-format", "LIVEQUERY_LOG_FORMAT", T_LOG_FORMAT, OFF(log_format), 0, 0, "logfmt",
     "logfmt (key=value lines) or json (one object per line)", 1},
    {"config", "LIVEQUERY_CONFIG", T_OPT, OFF(config_file), 0, 0, NULL,
     "file of 'setting = value' lines (names as the flags, without --); flags and the environment win over it", 0},
    {"tls-cert", "LIVEQUERY_TLS_CERT", T_STR, OFF(tls_cert), 0, 0, NULL,
     "PEM certificate (chain) file; with --tls-key the port speaks wss:// and https:// only", 0},
    {"tls-key", "LIVEQUERY_TLS_KEY", T_STR, OFF(tls_key), 0, 0, NULL, "PEM private key file for --tls-cert", 0},
    {"allowed-origins", "LIVEQUERY_ALLOWED_ORIGINS", T_STR, OFF(allowed_origins), 0, 0, "*",
     "comma-separated Origin values (e.g. https://crm.example.com) browsers may upgrade from; * any. "
     "Clients that send no Origin (SDKs outside browsers) are not affected", 1},
    {"drain-timeout", "LIVEQUERY_DRAIN_TIMEOUT", T_INT, OFF(drain_timeout_s), 0, 600, "10",
     "SIGTERM: seconds clients get to take their queued events and the close (1001) before exit", 1},
    {"web-root", "LIVEQUERY_WEB_ROOT", T_OPT, OFF(web_root), 0, 0, LQ_WEB_ROOT,
     "directory served at /display/ (the event-day display page); empty: no page", 0},
    {"demo-feed", "LIVEQUERY_DEMO_FEED", T_INT, OFF(demo_feed), 0, 1, "0",
     "1: publish a simulated event day through Redis (for trying it without MongoDB)", 0},
    {"initial-cache-size", "LIVEQUERY_INITIAL_CACHE_SIZE", T_INT, OFF(initial_cache_size), 0,
     10000000, "10000", "without --mongodb-uri: last-seen objects kept per class to answer the query op", 0},
    {"max-results", "LIVEQUERY_MAX_RESULTS", T_INT, OFF(max_results), 1, 100000, "1000",
     "objects in one query result (the query op); more are cut off and the result says so", 1},
    {"io-uring", "LIVEQUERY_IO_URING", T_INT, OFF(io_uring), 0, 1, "1",
     "1: write an event's frames to all its subscribers with one io_uring submission (falls back to "
     "send() where the kernel refuses io_uring); 0: one send() per connection", 0},
    {"event-loop", "LIVEQUERY_EVENT_LOOP", T_EVENT_LOOP, OFF(event_loop), 0, 0, "uv",
     "uv (libuv: epoll, cost per wake-up independent of idle connections) or poll (lws' own poll())", 0},
    {"role", "LIVEQUERY_ROLE", T_ROLE, OFF(role), 0, 0, "both",
     "gateway, tailer or both (the tailer runs only when --mongodb-uri is set)", 0},
    {"mongodb-uri", "LIVEQUERY_MONGODB_URI", T_STR, OFF(mongodb_uri), 0, 0, NULL,
     "MongoDB replica set the tailer reads change streams from (database from the URI path, default parse)", 0},
    {"classes", "LIVEQUERY_CLASSES", T_STR, OFF(classes), 0, 0, "SigningSchedule,BookStockLog",
     "comma-separated Parse classes the tailer watches", 0},
    {"collection-prefix", "LIVEQUERY_COLLECTION_PREFIX", T_STR, OFF(collection_prefix), 0, 0, "",
     "Parse Server's collectionPrefix", 0},
    {"full-document", "LIVEQUERY_FULL_DOCUMENT", T_FULLDOC, OFF(full_document), 0, 0, "updateLookup",
     "change stream fullDocument: updateLookup, or whenAvailable / required with post-images", 0},
    {"files-url-prefix", "LIVEQUERY_FILES_URL_PREFIX", T_STR, OFF(files_url_prefix), 0, 0, NULL,
     "File fields get url = prefix + name, e.g. https://host/parse/files/APPID/", 0},
    {"tailer-id", "LIVEQUERY_TAILER_ID", T_STR, OFF(tailer_id), 0, 0, NULL,
     "this tailer's name in the lease; default host:pid:random", 0},
    {"stream-max-len", "LIVEQUERY_STREAM_MAX_LEN", T_SIZE, OFF(stream_max_len), 1, 100000000,
     "10000", "events kept per class in Redis for gap repair", 0},
    {"lease-ttl", "LIVEQUERY_LEASE_TTL", T_INT, OFF(lease_ttl_ms), 500, 600000, "3000",
     "milliseconds a tailer lease lives unless renewed (every ttl/5); a standby takes over after it", 0},
    {"tailer-cache-size", "LIVEQUERY_TAILER_CACHE_SIZE", T_INT, OFF(tailer_cache_size), 0,
     10000000, "10000", "last-seen objects kept per class for original and deletes without pre-images", 0},
    {"auth-threads", "LIVEQUERY_AUTH_THREADS", T_INT, OFF(auth_threads), 1, 64, "2",
     "threads resolving session tokens and roles in MongoDB (gateway, with --mongodb-uri)", 0},
    {"auth-cache-size", "LIVEQUERY_AUTH_CACHE_SIZE", T_INT, OFF(auth_cache_size), 16, 10000000,
     "100000", "session tokens (valid or not) kept in the gateway's cache", 0},
    {"auth-cache-ttl", "LIVEQUERY_AUTH_CACHE_TTL", T_INT, OFF(auth_cache_ttl_ms), 100, 86400000,
     "30000", "milliseconds an unused cached token is kept (tokens in use stay, kept current by change events)", 0},
    {"auth-revalidate", "LIVEQUERY_AUTH_REVALIDATE", T_INT, OFF(auth_revalidate_s), 0, 86400,
     "300", "seconds between re-reads of tokens in use, a backstop for missed change events; 0: never", 0},
};
#define NSETTINGS (sizeof(settings) / sizeof(settings[0]))

static void usage(FILE *out)
{
    fprintf(out,
            "usage: livequeryd --app-id ID [options]\n"
            "\n"
            "A Parse LiveQuery server: WebSocket clients subscribe to queries, change events\n"
            "arrive through Redis pub/sub. Every option can also be set by its environment\n"
            "variable or in the --config file; a flag wins over the environment, which wins\n"
            "over the file. Options marked (reload) take a new value on SIGHUP.\n\n");
    for (size_t i = 0; i < NSETTINGS; i++) {
        const setting *s = &settings[i];
        fprintf(out, "  --%-18s %s\n  %-20s env %s", s->flag, s->help, "", s->env);
        if (s->def)
            fprintf(out, ", default %s", *s->def ? s->def : "\"\"");
        if (s->reload)
            fputs(" (reload)", out);
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
    case T_OPT: /* a string that may be empty */
        free(*(char **)field);
        *(char **)field = lq_xstrdup(val);
        return 0;
    case T_REDIS_URL:
        return parse_redis_url(cfg, val, err, origin);
    case T_LOG_FORMAT:
        if (strcmp(val, "logfmt") == 0)
            *(int *)field = LQ_LOG_FMT_LOGFMT;
        else if (strcmp(val, "json") == 0)
            *(int *)field = LQ_LOG_FMT_JSON;
        else {
            fprintf(err, "livequeryd: %s: '%s' is not one of logfmt, json\n", origin, val);
            return -1;
        }
        return 0;
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

/* Trims spaces and tabs at both ends, in place. */
static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t')
        s++;
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
        *--e = '\0';
    return s;
}

static const setting *find_setting(const char *name, size_t nlen)
{
    for (size_t k = 0; k < NSETTINGS; k++)
        if (strlen(settings[k].flag) == nlen && strncmp(settings[k].flag, name, nlen) == 0)
            return &settings[k];
    return NULL;
}

/* The config file: one "setting = value" per line, names as the flags
 * without "--", '#' starts a comment line, a value may be in double quotes
 * (kept verbatim inside). Values go to vals[] (owned by the caller). */
static int read_file(const char *path, char *vals[], int lines[], FILE *err)
{
    FILE *f = fopen(path, "r");
    char line[4096];
    int n = 0;

    struct stat st;

    if (f == NULL) {
        fprintf(err, "livequeryd: --config: cannot read '%s': %s\n", path, strerror(errno));
        return -1;
    }
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) { /* not a FIFO or a device to block on */
        fprintf(err, "livequeryd: --config: '%s' is not a regular file\n", path);
        fclose(f);
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char *l, *eq, *name, *val;
        const setting *s;
        n++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            fprintf(err, "livequeryd: %s:%d: line longer than %zu bytes\n", path, n, sizeof(line) - 2);
            goto fail;
        }
        l = trim(line);
        if (*l == '\0' || *l == '#')
            continue;
        eq = strchr(l, '=');
        if (eq == NULL) {
            fprintf(err, "livequeryd: %s:%d: expected 'setting = value'\n", path, n);
            goto fail;
        }
        *eq = '\0';
        name = trim(l);
        val = trim(eq + 1);
        if (strncmp(name, "--", 2) == 0)
            name += 2;
        s = find_setting(name, strlen(name));
        if (s == NULL || strcmp(s->flag, "config") == 0) {
            fprintf(err, "livequeryd: %s:%d: unknown setting '%s' (see --help)\n", path, n, name);
            goto fail;
        }
        size_t vlen = strlen(val);
        if (vlen >= 2 && val[0] == '"' && val[vlen - 1] == '"') {
            val[vlen - 1] = '\0';
            val++;
        }
        size_t k = (size_t)(s - settings);
        free(vals[k]);
        vals[k] = lq_xstrdup(val);
        lines[k] = n;
    }
    fclose(f);
    return 0;
fail:
    fclose(f);
    return -1;
}

int lq_config_list_next(const char **p, const char **item, size_t *len)
{
    const char *s = *p, *o;
    size_t n;

    if (*s == '\0')
        return 0;
    n = strcspn(s, ",");
    *p = s[n] == ',' ? s + n + 1 : s + n;
    o = s;
    while (n && *o == ' ')
        o++, n--;
    while (n && o[n - 1] == ' ')
        n--;
    *item = o;
    *len = n;
    return 1;
}

/* One Origin value: "*" or scheme://host[:port], nothing after. */
static int origin_valid(const char *o, size_t len)
{
    const char *p = memchr(o, ':', len);
    if (len == 1 && o[0] == '*')
        return 1;
    if (p == NULL || (size_t)(p - o) + 3 >= len || p[1] != '/' || p[2] != '/')
        return 0;
    for (const char *q = p + 3; q < o + len; q++)
        if (*q == '/' || *q == ' ' || *q == '?' || *q == '#')
            return 0;
    return 1;
}

int lq_config_parse(lq_config *cfg, int argc, char **argv, FILE *out, FILE *err)
{
    const char *given[NSETTINGS] = {0};
    char *filevals[NSETTINGS] = {0};
    int filelines[NSETTINGS] = {0};
    const char *file = NULL;
    char origin[160];
    int rc = -1;

    memset(cfg, 0, sizeof(*cfg));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        const setting *s;

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
        s = find_setting(a, nlen);
        if (s == NULL) {
            fprintf(err, "livequeryd: unknown option '--%.*s' (see --help)\n", (int)nlen, a);
            goto fail;
        }
        if (eq) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            fprintf(err, "livequeryd: --%s needs a value\n", s->flag);
            goto fail;
        }
        given[s - settings] = val;
    }
    {
        const setting *cs = find_setting("config", 6);
        file = given[cs - settings];
        if (file == NULL && (file = getenv(cs->env)) != NULL && *file == '\0')
            file = NULL;
        if (file && read_file(file, filevals, filelines, err) != 0)
            goto fail;
    }
    for (size_t k = 0; k < NSETTINGS; k++) {
        const setting *s = &settings[k];
        const char *val = given[k];
        if (val) {
            snprintf(origin, sizeof(origin), "--%s", s->flag);
        } else if ((val = getenv(s->env)) != NULL && *val) {
            snprintf(origin, sizeof(origin), "%s", s->env);
        } else if ((val = filevals[k]) != NULL) {
            snprintf(origin, sizeof(origin), "%.100s:%d: %s", file, filelines[k], s->flag);
        } else if ((val = s->def) != NULL) {
            snprintf(origin, sizeof(origin), "default of --%s", s->flag);
        } else {
            continue;
        }
        if (apply(cfg, s, val, err, origin) != 0)
            goto fail;
    }
    if ((cfg->tls_cert == NULL) != (cfg->tls_key == NULL)) {
        fprintf(err, "livequeryd: --tls-cert and --tls-key go together: give both or neither\n");
        goto fail;
    }
    if (cfg->tls_cert) {
        const char *paths[2] = {cfg->tls_cert, cfg->tls_key}, *names[2] = {"--tls-cert", "--tls-key"};
        for (int i = 0; i < 2; i++) {
            FILE *f = fopen(paths[i], "r");
            if (f == NULL) {
                fprintf(err, "livequeryd: %s: cannot read '%s': %s\n", names[i], paths[i], strerror(errno));
                goto fail;
            }
            fclose(f);
        }
    }
    {
        const char *p = cfg->allowed_origins, *o;
        size_t len;
        while (lq_config_list_next(&p, &o, &len)) {
            if (!origin_valid(o, len)) {
                fprintf(err, "livequeryd: --allowed-origins: '%.*s' is not * or scheme://host[:port]\n",
                        (int)len, o);
                goto fail;
            }
        }
    }
    if (cfg->web_root && cfg->web_root[0]) {
        struct stat st;
        if (stat(cfg->web_root, &st) != 0 || !S_ISDIR(st.st_mode)) {
            fprintf(err, "livequeryd: --web-root: '%s' is not a directory (empty: no display page)\n",
                    cfg->web_root);
            goto fail;
        }
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
    if (cfg->demo_feed && cfg->mongodb_uri) {
        fprintf(err, "livequeryd: --demo-feed is for trying it without MongoDB; not with --mongodb-uri\n");
        goto fail;
    }
    rc = 0;
fail:
    for (size_t k = 0; k < NSETTINGS; k++)
        free(filevals[k]);
    if (rc != 0)
        lq_config_release(cfg);
    return rc;
}

/* The value of setting s in cfg, as text (for comparing two configs). */
static void value_text(const lq_config *cfg, const setting *s, char *buf, size_t cap)
{
    const void *field = (const char *)cfg + s->offset;
    switch (s->type) {
    case T_STR:
    case T_OPT:
    case T_FULLDOC:
        snprintf(buf, cap, "%s", *(char *const *)field ? *(char *const *)field : "");
        return;
    case T_SIZE:
        snprintf(buf, cap, "%zu", *(const size_t *)field);
        return;
    case T_REDIS_URL:
        snprintf(buf, cap, "%s:%d/%d:%s", cfg->redis_host ? cfg->redis_host : "", cfg->redis_port,
                 cfg->redis_db, cfg->redis_password ? cfg->redis_password : "");
        return;
    default:
        snprintf(buf, cap, "%d", *(const int *)field);
        return;
    }
}

int lq_config_reload(lq_config *live, const lq_config *next, FILE *err)
{
    char a[512], b[512];
    int changed = 0;

    for (size_t k = 0; k < NSETTINGS; k++) {
        const setting *s = &settings[k];
        value_text(live, s, a, sizeof(a));
        value_text(next, s, b, sizeof(b));
        if (strcmp(a, b) == 0)
            continue;
        if (!s->reload) {
            /* never echo the value: it may be a key or a password */
            fprintf(err, "--%s changed: takes effect only after a restart\n", s->flag);
            continue;
        }
        void *dst = (char *)live + s->offset;
        const void *src = (const char *)next + s->offset;
        if (s->type == T_STR || s->type == T_OPT) {
            free(*(char **)dst);
            *(char **)dst = lq_xstrdup(*(char *const *)src);
        } else if (s->type == T_SIZE) {
            *(size_t *)dst = *(const size_t *)src;
        } else {
            *(int *)dst = *(const int *)src;
        }
        changed++;
    }
    return changed;
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
    free(cfg->config_file);
    free(cfg->tls_cert);
    free(cfg->tls_key);
    free(cfg->allowed_origins);
    free(cfg->web_root);
    memset(cfg, 0, sizeof(*cfg));
}
