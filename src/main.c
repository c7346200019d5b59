/* main.c - wiring only: configuration, logging, signals, the gateway. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>

#include "livequery/config.h"
#include "livequery/gateway.h"
#include "livequery/log.h"

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

    the_gateway = lq_gateway_new(&cfg);
    if (the_gateway == NULL) {
        lq_config_release(&cfg);
        return 1;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    rc = lq_gateway_run(the_gateway);
    LQ_INFO("shutting down", NULL);
    lq_gateway_free(the_gateway);
    the_gateway = NULL;
    lq_config_release(&cfg);
    return rc == 0 ? 0 : 1;
}
