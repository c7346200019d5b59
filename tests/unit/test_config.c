/* test_config.c - flags, environment, validation messages. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "livequery/config.h"
#include "livequery/log.h"
#include "lq_test.h"

static char errbuf[1024];

static int parse(lq_config *cfg, int argc, const char **argv)
{
    FILE *out = fopen("/dev/null", "w");
    FILE *err = fmemopen(errbuf, sizeof(errbuf), "w");
    memset(errbuf, 0, sizeof(errbuf));
    int rc = lq_config_parse(cfg, argc, (char **)argv, out, err);
    fclose(out);
    fclose(err);
    return rc;
}

static void test_defaults_and_flags(void)
{
    lq_config cfg;
    const char *argv[] = {"lq", "--app-id", "bookstore", "--port=4000", "--redis-url",
                    "redis://:secret@10.0.0.1:6380/2", "--master-key", "mk", NULL};

    unsetenv("LIVEQUERY_PORT");
    ASSERT_EQ(parse(&cfg, 8, argv), 0);
    ASSERT_STREQ(cfg.app_id, "bookstore");
    ASSERT_EQ(cfg.port, 4000);
    ASSERT_STREQ(cfg.host, "127.0.0.1");
    ASSERT_STREQ(cfg.redis_host, "10.0.0.1");
    ASSERT_EQ(cfg.redis_port, 6380);
    ASSERT_EQ(cfg.redis_db, 2);
    ASSERT_STREQ(cfg.redis_password, "secret");
    ASSERT_STREQ(cfg.master_key, "mk");
    ASSERT_EQ(cfg.max_frame_bytes, 65536);
    ASSERT_EQ(cfg.max_subscriptions, 256);
    lq_config_release(&cfg);
}

static void test_env(void)
{
    lq_config cfg;
    const char *argv[] = {"lq", NULL};
    const char *argv2[] = {"lq", "--port", "5000", NULL};

    setenv("LIVEQUERY_APP_ID", "envapp", 1);
    setenv("LIVEQUERY_PORT", "4444", 1);
    ASSERT_EQ(parse(&cfg, 1, argv), 0);
    ASSERT_STREQ(cfg.app_id, "envapp");
    ASSERT_EQ(cfg.port, 4444);
    lq_config_release(&cfg);
    ASSERT_EQ(parse(&cfg, 3, argv2), 0); /* the flag wins */
    ASSERT_EQ(cfg.port, 5000);
    lq_config_release(&cfg);
    setenv("LIVEQUERY_PORT", "seven", 1);
    ASSERT_EQ(parse(&cfg, 1, argv), -1);
    ASSERT_STREQ(errbuf, "livequeryd: LIVEQUERY_PORT: 'seven' is not a whole number from 1 to 65535\n");
    unsetenv("LIVEQUERY_PORT");
    unsetenv("LIVEQUERY_APP_ID");
}

static void test_errors(void)
{
    lq_config cfg;
    const char *a1[] = {"lq", NULL};
    const char *a2[] = {"lq", "--app-id", "x", "--redis-url", "http://x", NULL};
    const char *a3[] = {"lq", "--app-id", "x", "--bogus", "1", NULL};
    const char *a4[] = {"lq", "--app-id", NULL};
    const char *a5[] = {"lq", "--app-id", "x", "--max-queue-bytes", "10", NULL};
    const char *a6[] = {"lq", "--help", NULL};

    ASSERT_EQ(parse(&cfg, 1, a1), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --app-id (or LIVEQUERY_APP_ID) is required\n");
    ASSERT_EQ(parse(&cfg, 5, a2), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --redis-url: 'http://x' is not a redis:// URL\n");
    ASSERT_EQ(parse(&cfg, 5, a3), -1);
    ASSERT_STREQ(errbuf, "livequeryd: unknown option '--bogus' (see --help)\n");
    ASSERT_EQ(parse(&cfg, 2, a4), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --app-id needs a value\n");
    ASSERT_EQ(parse(&cfg, 5, a5), -1);
    ASSERT_TRUE(strstr(errbuf, "--max-queue-bytes: '10' is not a whole number from 4096") != NULL);
    ASSERT_EQ(parse(&cfg, 2, a6), 1);
}

static void test_tailer_settings(void)
{
    lq_config cfg;
    const char *a1[] = {"lq", "--app-id", "a", NULL};
    const char *a2[] = {"lq", "--app-id", "a", "--role", "tailer", NULL};
    const char *a3[] = {"lq", "--app-id", "a", "--role", "both", "--mongodb-uri", "mongodb://m/db?replicaSet=rs0",
                        "--classes", "SigningSchedule,Bad-Name", NULL};
    const char *a4[] = {"lq", "--app-id", "a", "--full-document", "always", NULL};
    const char *a5[] = {"lq", "--app-id", "a", "--role", "tailer", "--mongodb-uri", "mongodb://m/",
                        "--classes", "_User,EventNote", "--lease-ttl", "1500", NULL};
    const char *a6[] = {"lq", "--app-id", "a", "--role", "edge", NULL};

    ASSERT_EQ(parse(&cfg, 3, a1), 0);
    ASSERT_EQ(cfg.role, LQ_ROLE_BOTH);
    ASSERT_TRUE(cfg.mongodb_uri == NULL);
    ASSERT_STREQ(cfg.classes, "SigningSchedule,BookStockLog");
    ASSERT_STREQ(cfg.collection_prefix, "");
    ASSERT_STREQ(cfg.full_document, "updateLookup");
    ASSERT_EQ(cfg.lease_ttl_ms, 3000);
    ASSERT_EQ(cfg.stream_max_len, 10000);
    ASSERT_EQ(cfg.tailer_cache_size, 10000);
    lq_config_release(&cfg);
    ASSERT_EQ(parse(&cfg, 5, a2), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --role tailer needs --mongodb-uri (or LIVEQUERY_MONGODB_URI)\n");
    ASSERT_EQ(parse(&cfg, 9, a3), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --classes: 'Bad-Name' is not a Parse class name\n");
    ASSERT_EQ(parse(&cfg, 5, a4), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --full-document: 'always' is not one of updateLookup, whenAvailable, required\n");
    ASSERT_EQ(parse(&cfg, 11, a5), 0);
    ASSERT_EQ(cfg.role, LQ_ROLE_TAILER);
    ASSERT_STREQ(cfg.classes, "_User,EventNote");
    ASSERT_EQ(cfg.lease_ttl_ms, 1500);
    lq_config_release(&cfg);
    ASSERT_EQ(parse(&cfg, 5, a6), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --role: 'edge' is not one of gateway, tailer, both\n");
}

static void test_abuse_limits(void)
{
    lq_config cfg;
    const char *a1[] = {"lq", "--app-id", "a", NULL};
    const char *a2[] = {"lq", "--app-id", "a", "--max-messages-per-second", "20", "--message-burst=40",
                        "--handshake-timeout", "3", NULL};
    const char *a3[] = {"lq", "--app-id", "a", "--max-messages-per-second", "0", NULL};
    const char *a4[] = {"lq", "--app-id", "a", "--message-burst", "-1", NULL};
    const char *a5[] = {"lq", "--app-id", "a", "--handshake-timeout", "0", NULL};
    const char *a6[] = {"lq", "--app-id", "a", "--handshake-timeout", "301", NULL};
    const char *a7[] = {"lq", "--app-id", "a", "--max-messages-per-second", "1e3", NULL};
    const char *a8[] = {"lq", "--app-id", "a", "--handshake-timeout", "5", NULL};

    unsetenv("LIVEQUERY_MAX_MESSAGES_PER_SECOND");
    unsetenv("LIVEQUERY_MESSAGE_BURST");
    unsetenv("LIVEQUERY_HANDSHAKE_TIMEOUT");
    ASSERT_EQ(parse(&cfg, 3, a1), 0);
    ASSERT_EQ(cfg.max_msgs_per_s, 100);
    ASSERT_EQ(cfg.msg_burst, 512);
    ASSERT_EQ(cfg.handshake_timeout_s, 10);
    /* a stock SDK reconnecting sends connect + one subscribe per subscription at once */
    ASSERT_TRUE(cfg.msg_burst >= cfg.max_subscriptions + 1);
    lq_config_release(&cfg);
    ASSERT_EQ(parse(&cfg, 8, a2), 0);
    ASSERT_EQ(cfg.max_msgs_per_s, 20);
    ASSERT_EQ(cfg.msg_burst, 40);
    ASSERT_EQ(cfg.handshake_timeout_s, 3);
    lq_config_release(&cfg);
    ASSERT_EQ(parse(&cfg, 5, a3), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --max-messages-per-second: '0' is not a whole number from 1 to 1000000\n");
    ASSERT_EQ(parse(&cfg, 5, a4), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --message-burst: '-1' is not a whole number from 1 to 1000000\n");
    ASSERT_EQ(parse(&cfg, 5, a5), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --handshake-timeout: '0' is not a whole number from 1 to 300\n");
    ASSERT_EQ(parse(&cfg, 5, a6), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --handshake-timeout: '301' is not a whole number from 1 to 300\n");
    ASSERT_EQ(parse(&cfg, 5, a7), -1);
    ASSERT_TRUE(strstr(errbuf, "--max-messages-per-second: '1e3'") != NULL);

    /* environment variables, and the flag winning over them */
    setenv("LIVEQUERY_MAX_MESSAGES_PER_SECOND", "7", 1);
    setenv("LIVEQUERY_MESSAGE_BURST", "9", 1);
    setenv("LIVEQUERY_HANDSHAKE_TIMEOUT", "4", 1);
    ASSERT_EQ(parse(&cfg, 3, a1), 0);
    ASSERT_EQ(cfg.max_msgs_per_s, 7);
    ASSERT_EQ(cfg.msg_burst, 9);
    ASSERT_EQ(cfg.handshake_timeout_s, 4);
    lq_config_release(&cfg);
    ASSERT_EQ(parse(&cfg, 5, a8), 0);
    ASSERT_EQ(cfg.handshake_timeout_s, 5);
    lq_config_release(&cfg);
    setenv("LIVEQUERY_MESSAGE_BURST", "many", 1);
    ASSERT_EQ(parse(&cfg, 3, a1), -1);
    ASSERT_STREQ(errbuf, "livequeryd: LIVEQUERY_MESSAGE_BURST: 'many' is not a whole number from 1 to 1000000\n");
    setenv("LIVEQUERY_MESSAGE_BURST", "9", 1);
    setenv("LIVEQUERY_HANDSHAKE_TIMEOUT", "0", 1);
    ASSERT_EQ(parse(&cfg, 3, a1), -1);
    ASSERT_STREQ(errbuf, "livequeryd: LIVEQUERY_HANDSHAKE_TIMEOUT: '0' is not a whole number from 1 to 300\n");
    unsetenv("LIVEQUERY_MAX_MESSAGES_PER_SECOND");
    unsetenv("LIVEQUERY_MESSAGE_BURST");
    unsetenv("LIVEQUERY_HANDSHAKE_TIMEOUT");
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* The config file: names as the flags, comments, quotes; precedence
 * flag > environment > file > default; errors name the file and the line. */
static void test_config_file(void)
{
    lq_config cfg;
    char path[] = "/tmp/lq-config-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    const char *a1[] = {"lq", "--config", path, NULL};
    const char *a2[] = {"lq", "--config", path, "--port", "7001", NULL};
    const char *a3[] = {"lq", "--config", "/nonexistent/lq.conf", NULL};

    unsetenv("LIVEQUERY_PORT");
    unsetenv("LIVEQUERY_APP_ID");
    write_file(path, "# livequeryd\n\napp-id = bookstore\nport=7000\n  master-key = \"a b#c\"  \n"
                     "--max-subscriptions = 9\nlog-format = json\n");
    ASSERT_EQ(parse(&cfg, 3, a1), 0);
    ASSERT_STREQ(cfg.app_id, "bookstore");
    ASSERT_EQ(cfg.port, 7000);
    ASSERT_STREQ(cfg.master_key, "a b#c");
    ASSERT_EQ(cfg.max_subscriptions, 9);
    ASSERT_EQ(cfg.log_format, LQ_LOG_FMT_JSON);
    ASSERT_STREQ(cfg.config_file, path);
    ASSERT_EQ(cfg.max_frame_bytes, 65536); /* not in the file: the default */
    lq_config_release(&cfg);

    setenv("LIVEQUERY_PORT", "7002", 1); /* the environment wins over the file */
    ASSERT_EQ(parse(&cfg, 3, a1), 0);
    ASSERT_EQ(cfg.port, 7002);
    lq_config_release(&cfg);
    ASSERT_EQ(parse(&cfg, 5, a2), 0); /* and a flag over both */
    ASSERT_EQ(cfg.port, 7001);
    lq_config_release(&cfg);
    unsetenv("LIVEQUERY_PORT");

    setenv("LIVEQUERY_CONFIG", path, 1); /* the file named by the environment */
    const char *a0[] = {"lq", NULL};
    ASSERT_EQ(parse(&cfg, 1, a0), 0);
    ASSERT_EQ(cfg.port, 7000);
    lq_config_release(&cfg);
    unsetenv("LIVEQUERY_CONFIG");

    write_file(path, "app-id = x\nport = 70000\n");
    ASSERT_EQ(parse(&cfg, 3, a1), -1);
    char want[256];
    snprintf(want, sizeof(want), "livequeryd: %s:2: port: '70000' is not a whole number from 1 to 65535\n", path);
    ASSERT_STREQ(errbuf, want);
    write_file(path, "app-id = x\n\nbogus = 1\n");
    ASSERT_EQ(parse(&cfg, 3, a1), -1);
    snprintf(want, sizeof(want), "livequeryd: %s:3: unknown setting 'bogus' (see --help)\n", path);
    ASSERT_STREQ(errbuf, want);
    write_file(path, "app-id x\n");
    ASSERT_EQ(parse(&cfg, 3, a1), -1);
    snprintf(want, sizeof(want), "livequeryd: %s:1: expected 'setting = value'\n", path);
    ASSERT_STREQ(errbuf, want);
    write_file(path, "config = /etc/other\n");
    ASSERT_EQ(parse(&cfg, 3, a1), -1);
    ASSERT_TRUE(strstr(errbuf, ":1: unknown setting 'config'") != NULL);
    ASSERT_EQ(parse(&cfg, 3, a3), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --config: cannot read '/nonexistent/lq.conf': No such file or directory\n");
    unlink(path);
}

static void test_new_settings(void)
{
    lq_config cfg;
    const char *a1[] = {"lq", "--app-id", "a", NULL};
    const char *a2[] = {"lq", "--app-id", "a", "--tls-cert", "/etc/hostname", NULL};
    const char *a3[] = {"lq", "--app-id", "a", "--tls-cert", "/nope.pem", "--tls-key", "/etc/hostname", NULL};
    const char *a4[] = {"lq", "--app-id", "a", "--allowed-origins", "https://a.example, http://b:8080", NULL};
    const char *a5[] = {"lq", "--app-id", "a", "--allowed-origins", "https://a.example/path", NULL};
    const char *a6[] = {"lq", "--app-id", "a", "--web-root", "/nonexistent-dir", NULL};
    const char *a7[] = {"lq", "--app-id", "a", "--web-root", "", "--log-format", "yaml", NULL};
    const char *a8[] = {"lq", "--app-id", "a", "--demo-feed", "1", "--mongodb-uri", "mongodb://m/", NULL};

    ASSERT_EQ(parse(&cfg, 3, a1), 0);
    ASSERT_STREQ(cfg.host, "127.0.0.1"); /* safe defaults: loopback, limits on, plain */
    ASSERT_STREQ(cfg.allowed_origins, "*");
    ASSERT_TRUE(cfg.tls_cert == NULL && cfg.tls_key == NULL);
    ASSERT_EQ(cfg.drain_timeout_s, 10);
    ASSERT_EQ(cfg.log_format, LQ_LOG_FMT_LOGFMT);
    ASSERT_EQ(cfg.demo_feed, 0);
    ASSERT_EQ(cfg.max_results, 1000);
    ASSERT_EQ(cfg.initial_cache_size, 10000);
    lq_config_release(&cfg);
    ASSERT_EQ(parse(&cfg, 5, a2), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --tls-cert and --tls-key go together: give both or neither\n");
    ASSERT_EQ(parse(&cfg, 7, a3), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --tls-cert: cannot read '/nope.pem': No such file or directory\n");
    ASSERT_EQ(parse(&cfg, 5, a4), 0);
    lq_config_release(&cfg);
    ASSERT_EQ(parse(&cfg, 5, a5), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --allowed-origins: 'https://a.example/path' is not * or scheme://host[:port]\n");
    ASSERT_EQ(parse(&cfg, 5, a6), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --web-root: '/nonexistent-dir' is not a directory (empty: no display page)\n");
    ASSERT_EQ(parse(&cfg, 7, a7), -1);
    ASSERT_STREQ(errbuf, "livequeryd: --log-format: 'yaml' is not one of logfmt, json\n");
    ASSERT_EQ(parse(&cfg, 7, a8), -1);
    ASSERT_TRUE(strstr(errbuf, "--demo-feed") != NULL);
}

/* SIGHUP: reloadable settings change in place; others are named (never their
 * values, which may be secrets) and keep their old value. */
static void test_reload(void)
{
    lq_config live, next;
    const char *a1[] = {"lq", "--app-id", "a", "--master-key", "old-secret", NULL};
    const char *a2[] = {"lq", "--app-id", "a", "--master-key", "new-secret", "--max-subscriptions", "3",
                        "--log-level", "debug", "--allowed-origins", "https://x.example", "--port", "9",
                        NULL};
    char text[512] = {0};
    FILE *err = fmemopen(text, sizeof(text), "w");

    ASSERT_EQ(parse(&live, 5, a1), 0);
    ASSERT_EQ(parse(&next, 13, a2), 0);
    ASSERT_EQ(lq_config_reload(&live, &next, err), 3);
    fclose(err);
    ASSERT_EQ(live.max_subscriptions, 3);
    ASSERT_EQ(live.log_level, 3);
    ASSERT_STREQ(live.allowed_origins, "https://x.example");
    ASSERT_EQ(live.port, 1337);
    ASSERT_STREQ(live.master_key, "old-secret");
    ASSERT_TRUE(strstr(text, "--port changed: takes effect only after a restart") != NULL);
    ASSERT_TRUE(strstr(text, "--master-key changed") != NULL);
    ASSERT_TRUE(strstr(text, "secret") == NULL);
    lq_config_release(&next);
    lq_config_release(&live);
}

/* --help lists every setting with its environment variable. */
static void test_help(void)
{
    static char out[32768];
    lq_config cfg;
    const char *a[] = {"lq", "--help", NULL};
    FILE *o = fmemopen(out, sizeof(out), "w");
    ASSERT_EQ(lq_config_parse(&cfg, 2, (char **)a, o, stderr), 1);
    fclose(o);
    const char *flags[] = {"--config", "--tls-cert", "--tls-key", "--allowed-origins", "--log-format",
                           "--drain-timeout", "--web-root", "--demo-feed", "--max-results",
                           "--initial-cache-size", "--mongodb-uri", "--max-queue-bytes", NULL};
    for (int i = 0; flags[i]; i++)
        ASSERT_TRUE(strstr(out, flags[i]) != NULL);
    ASSERT_TRUE(strstr(out, "env LIVEQUERY_ALLOWED_ORIGINS, default * (reload)") != NULL);
}

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {{"defaults_and_flags", test_defaults_and_flags},
                                         {"env", test_env},
                                         {"errors", test_errors},
                                         {"tailer_settings", test_tailer_settings},
                                         {"abuse_limits", test_abuse_limits},
                                         {"config_file", test_config_file},
                                         {"new_settings", test_new_settings},
                                         {"reload", test_reload},
                                         {"help", test_help},
                                         {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
