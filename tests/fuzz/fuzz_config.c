/*
 * fuzz_config - the command line: the input split at NUL bytes is argv[1..]
 * (at most MAX_ARGS; argv[0] is "livequeryd"), parsed by lq_config_parse
 * with out and err on /dev/null, then released. LIVEQUERY_* variables are
 * removed from the environment once, so a run depends on the input alone.
 *
 * Oracles (config.h): the result is 0, 1 or -1; on 0 the required settings
 * are there and within their ranges.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "livequery/config.h"

#define MAX_ARGS 64

extern char **environ;
static FILE *devnull;

static void init(void)
{
    if (devnull)
        return;
    devnull = fopen("/dev/null", "w");
    if (devnull == NULL)
        abort();
    /* unsetenv changes environ: restart the scan after each removal */
    for (int again = 1; again;) {
        again = 0;
        for (char **e = environ; *e; e++) {
            if (strncmp(*e, "LIVEQUERY_", 10) == 0) {
                char name[256];
                size_t n = strcspn(*e, "=");
                snprintf(name, sizeof(name), "%.*s", (int)n, *e);
                unsetenv(name);
                again = 1;
                break;
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *argv[MAX_ARGS + 2];
    char prog[] = "livequeryd";
    int argc = 0;
    lq_config cfg;

    if (size > 16384)
        return 0;
    init();
    char *copy = malloc(size + 1);
    if (copy == NULL)
        abort();
    memcpy(copy, data, size);
    copy[size] = '\0';
    argv[argc++] = prog;
    for (size_t at = 0; at < size && argc <= MAX_ARGS;) {
        argv[argc++] = copy + at;
        at += strlen(copy + at) + 1;
    }
    argv[argc] = NULL;

    int rc = lq_config_parse(&cfg, argc, argv, devnull, devnull);
    if (rc == 0) {
        if (cfg.app_id == NULL || cfg.host == NULL || cfg.redis_host == NULL ||
            cfg.port < 0 || cfg.port > 65535 || cfg.max_json_depth < 1 ||
            (cfg.master_key && cfg.master_key[0] == '\0'))
            abort();
    } else if (rc != 1 && rc != -1) {
        abort();
    }
    lq_config_release(&cfg);
    free(copy);
    return 0;
}
