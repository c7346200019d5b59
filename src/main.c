/* main.c - wiring only: configuration, logging, signals, the gateway and the tailer.
 *
 * Exit status: 0 after SIGTERM/SIGINT and a drain; 1 when it cannot run (port
 * in use, unreadable certificate, a thread that cannot start); 2 for a bad
 * configuration (the message names the flag, variable or file line). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "livequery/config.h"
#include "livequery/demo.h"
#include "livequery/gateway.h"
#include "livequery/log.h"
#include "livequery/tailer.h"

static lq_gateway *the_gateway;

static void on_signal(int sig)
{
    if (the_gateway == NULL)
        return;
    if (sig == SIGHUP)
        lq_gateway_reload(the_gateway);
    else
        lq_gateway_stop(the_gateway);
}

/* What SIGHUP re-reads: the same flags, the environment and the config file.
 * A bad new configuration changes nothing (the message says why). */
typedef struct reload_ctx {
    lq_config *cfg;
    int argc;
    char **argv;
} reload_ctx;

static void log_lines(int level, const char *msg, char *text)
{
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char esc[600];
        LQ_LOG(level, msg, "detail=\"%s\"", lq_log_escape(esc, sizeof(esc), line));
    }
}

static void reload(void *ud)
{
    reload_ctx *r = ud;
    lq_config next;
    char *text = NULL;
    size_t len = 0;
    FILE *out = fopen("/dev/null", "w"), *err = open_memstream(&text, &len);
    int rc = -1;

    if (out && err)
        rc = lq_config_parse(&next, r->argc, r->argv, out, err);
    if (out)
        fclose(out);
    if (rc != 0) {
        if (err)
            fclose(err);
        if (text)
            log_lines(LQ_LOG_ERROR, "SIGHUP: new configuration refused, nothing changed", text);
        free(text);
        return;
    }
    int changed = lq_config_reload(r->cfg, &next, err);
    fclose(err);
    lq_config_release(&next);
    lq_log_level = r->cfg->log_level;
    lq_log_format = r->cfg->log_format;
    lq_log_route_lws();
    if (text && *text)
        log_lines(LQ_LOG_WARN, "SIGHUP: setting not reloaded", text);
    free(text);
    lq_gateway_config_changed(the_gateway);
    LQ_INFO("SIGHUP: configuration reloaded", "changed=%d log_level=%d", changed, r->cfg->log_level);
}

/* Connections are file descriptors: take the hard limit we are allowed. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    lq_config cfg;
    struct sigaction sa;
    int rc;

    rc = lq_config_parse(&cfg, argc, argv, stdout, stderr);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    lq_log_level = cfg.log_level;
    lq_log_format = cfg.log_format;
    lq_log_route_lws();
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    lq_tailer *tailer = NULL;
    if ((cfg.role & LQ_ROLE_TAILER) && cfg.mongodb_uri) {
        tailer = lq_tailer_new(&cfg);
        if (tailer == NULL || lq_tailer_start(tailer) != 0) {
            lq_tailer_free(tailer);
            lq_config_release(&cfg);
            return 1;
        }
    } else if (cfg.role & LQ_ROLE_TAILER) {
        LQ_INFO("no --mongodb-uri: the tailer does not run; events come from Redis only", NULL);
    }
    /* a tailer-only process still serves /health and /metrics on --port */
    the_gateway = lq_gateway_new(&cfg);
    if (the_gateway == NULL) {
        lq_tailer_free(tailer);
        lq_config_release(&cfg);
        return 1;
    }
    /* --demo-feed 1: a simulated event day published into Redis (demo.h) */
    lq_demo *demo = cfg.demo_feed ? lq_demo_start(&cfg) : NULL;
    reload_ctx rctx = {&cfg, argc, argv};
    lq_gateway_on_reload(the_gateway, reload, &rctx);
    rc = lq_gateway_run(the_gateway);
    LQ_INFO("shutting down", NULL);
    lq_demo_stop(demo);
    lq_gateway_free(the_gateway);
    the_gateway = NULL;
    lq_tailer_free(tailer);
    lq_config_release(&cfg);
    return rc == 0 ? 0 : 1;
}
