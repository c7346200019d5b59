/* log.c - logfmt lines; see log.h. */
#include "livequery/log.h"

#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int lq_log_level = LQ_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void lq_log_write(int level, const char *msg, const char *fields, ...)
{
    char line[2048];
    struct timespec ts;
    struct tm tm;
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(line, sizeof(line), "ts=%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ level=%s msg=\"",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                 ts.tv_nsec / 1000000, level_names[level < 0 ? 0 : level > 3 ? 3 : level]);
    /* the message is ours, but escape quotes anyway so every line stays parseable */
    for (const char *p = msg; *p && n < (int)sizeof(line) - 4; p++) {
        if (*p == '"' || *p == '\\')
            line[n++] = '\\';
        line[n++] = (*p == '\n') ? ' ' : *p;
    }
    line[n++] = '"';
    if (fields && *fields && n < (int)sizeof(line) - 2) {
        va_list ap;
        line[n++] = ' ';
        va_start(ap, fields);
        int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fields, ap);
        va_end(ap);
        if (m > 0) {
            int end = n + (m < (int)sizeof(line) - n - 1 ? m : (int)sizeof(line) - n - 2);
            for (int i = n; i < end; i++) /* one event, one line: whatever a field holds */
                if ((unsigned char)line[i] < 0x20)
                    line[i] = ' ';
            n = end;
        }
    }
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, stderr);
}

const char *lq_log_escape(char *buf, size_t cap, const char *s)
{
    size_t n = 0;

    for (; *s && n + 2 < cap; s++) {
        if (*s == '"' || *s == '\\')
            buf[n++] = '\\';
        buf[n++] = *s;
    }
    buf[n] = '\0';
    return buf;
}

int lq_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

static void lws_emit(int level, const char *line)
{
    char msg[512];
    size_t n = strlen(line);

    /* lws lines end with a newline and may carry a "[timestamp] X: " prefix */
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    if (n >= sizeof(msg))
        n = sizeof(msg) - 1;
    memcpy(msg, line, n);
    msg[n] = '\0';
    lq_log_write(level == LLL_ERR ? LQ_LOG_ERROR : LQ_LOG_WARN, msg, "component=lws");
}

void lq_log_route_lws(void)
{
    int mask = LLL_ERR;
    if (lq_log_level >= LQ_LOG_DEBUG)
        mask |= LLL_WARN;
    lws_set_log_level(mask, lws_emit);
}
