/* metrics.c - see metrics.h. */
#include "livequery/metrics.h"

#include <inttypes.h>
#include <stdio.h>

lq_metrics lq_m;

size_t lq_metrics_render(char *buf, size_t cap)
{
    size_t n = 0;
    int w;

#define LQ_METRIC_RENDER(name, kind, help)                                                         \
    w = snprintf(buf + n, cap - n, "# HELP livequery_" #name " " help "\n# TYPE livequery_" #name \
                                   " " #kind "\nlivequery_" #name " %" PRId64 "\n",               \
                 LQ_METRIC_GET(name));                                                             \
    if (w < 0 || (size_t)w >= cap - n)                                                             \
        return n;                                                                                  \
    n += (size_t)w;
    LQ_METRICS(LQ_METRIC_RENDER)
#undef LQ_METRIC_RENDER
    return n;
}
