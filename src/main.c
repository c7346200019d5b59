/* main.c - wiring only: configuration, logging, signals, the gateway and the tailer. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "livequery/config.h"
#include "livequery/gateway.h"
#include "livequery/log.h"
#include "livequery/tailer.h"

static lq_gateway *the_gateway;

static void on_signal(int sig)
{
    (void)sig;
    if (the_gateway)
        lq_gateway_stop(the_gateway);
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
    lq_log_route_lws();
    raise_fd_limit();
    signal(SIGPIPE, SIG_IGN);

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

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
    rc = lq_gateway_run(the_gateway);
    LQ_INFO("shutting down", NULL);
    lq_gateway_free(the_gateway);
    the_gateway = NULL;
    lq_tailer_free(tailer);
    lq_config_release(&cfg);
    return rc == 0 ? 0 : 1;
}
