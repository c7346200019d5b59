/*
 * log.h - leveled structured lines on stderr, logfmt (the default) or JSON:
 *   ts=2026-11-23T23:59:00.123Z level=info msg="redis connected" host=127.0.0.1 port=6379
 *   {"ts":"2026-11-23T23:59:00.123Z","level":"info","msg":"redis connected","host":"127.0.0.1","port":6379}
 * Fields are always written as logfmt (key=value, key="quoted"); the JSON form
 * is made from them, numbers as numbers.
 * LQ_LOG is a macro so that arguments are not evaluated when the level is off
 * (Redis serverLog). Session tokens and keys must never be passed to it.
 *
 * Thread: safe from any thread (one fprintf per line; stderr is unbuffered
 * per line and stdio locks the stream).
 */
#ifndef LIVEQUERY_LOG_H
#define LIVEQUERY_LOG_H

#include <stddef.h>

enum { LQ_LOG_ERROR = 0, LQ_LOG_WARN = 1, LQ_LOG_INFO = 2, LQ_LOG_DEBUG = 3 };

enum { LQ_LOG_FMT_LOGFMT = 0, LQ_LOG_FMT_JSON = 1 };

extern int lq_log_level;
extern int lq_log_format; /* LQ_LOG_FMT_*; set once at start and on SIGHUP (main thread) */

/* Writes one line: msg is the human message (quoted), fields is an optional
 * printf format for extra key=value pairs (may be NULL). */
void lq_log_write(int level, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

#define LQ_LOG(level, ...)                                                             \
    do {                                                                               \
        if ((level) <= lq_log_level)                                                   \
            lq_log_write((level), __VA_ARGS__);                                        \
    } while (0)
#define LQ_ERROR(...) LQ_LOG(LQ_LOG_ERROR, __VA_ARGS__)
#define LQ_WARN(...) LQ_LOG(LQ_LOG_WARN, __VA_ARGS__)
#define LQ_INFO(...) LQ_LOG(LQ_LOG_INFO, __VA_ARGS__)
#define LQ_DEBUG(...) LQ_LOG(LQ_LOG_DEBUG, __VA_ARGS__)

/* Copies s into buf (cap bytes, truncated) with '"' and '\\' escaped, for a
 * quoted logfmt value that came from a client. Returns buf. */
const char *lq_log_escape(char *buf, size_t cap, const char *s);

/* Parses "error" | "warn" | "info" | "debug"; returns the level or -1. */
int lq_log_level_parse(const char *name);

/* Routes libwebsockets' own errors and warnings through lq_log_write. */
void lq_log_route_lws(void);

#endif
