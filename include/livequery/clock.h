/*
 * clock.h - millisecond clocks: monotonic (timeouts, intervals) and wall
 * (timestamps that leave the process, $relativeTime, session expiry).
 */
#ifndef LIVEQUERY_CLOCK_H
#define LIVEQUERY_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t lq_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t lq_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
