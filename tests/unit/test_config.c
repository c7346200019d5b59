/* test_config.c - flags, environment, validation messages. */
#include <stdlib.h>
#include <string.h>

#include "livequery/config.h"
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

int main(int argc, char **argv)
{
    static const lq_test_case cases[] = {{"defaults_and_flags", test_defaults_and_flags},
                                         {"env", test_env},
                                         {"errors", test_errors},
                                         {"tailer_settings", test_tailer_settings},
                                         {"abuse_limits", test_abuse_limits},
                                         {NULL, NULL}};
    return lq_test_run(cases, argc, argv);
}
