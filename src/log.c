/* log.c - logfmt or JSON lines; see log.h. */
#include "livequery/log.h"

#include <libwebsockets.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "livequery/json.h"

int lq_log_level = LQ_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

int lq_log_format = LQ_LOG_FMT_LOGFMT;

/* Appends s[0..n) to line as the inside of a JSON string. */
static size_t json_chars(char *line, size_t at, size_t cap, const char *s, size_t n)
{
    for (size_t i = 0; i < n && at + 7 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            line[at++] = '\\';
            line[at++] = (char)ch;
        } else if (ch < 0x20) {
            at += (size_t)snprintf(line + at, cap - at, "\\u%04x", ch);
        } else {
            line[at++] = (char)ch;
        }
    }
    return at;
}

static int is_number(const char *s, size_t n)
{
    size_t i = 0, digits = 0;
    if (i < n && s[i] == '-')
        i++;
    for (; i < n && s[i] >= '0' && s[i] <= '9'; i++)
        digits++;
    if (i < n && s[i] == '.' && digits)
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            ;
    return digits > 0 && digits < 16 && i == n && !(s[s[0] == '-'] == '0' && digits > 1);
}

/* The logfmt fields (key=value key="quoted \"value\"") as JSON members. */
static size_t json_fields(char *line, size_t at, size_t cap, const char *f)
{
    char val[1024];
    while (*f && at + 16 < cap) {
        const char *k, *eq;
        size_t vn = 0;
        int quoted = 0;
        while (*f == ' ')
            f++;
        if (*f == '\0')
            break;
        k = f;
        eq = f + strcspn(f, "= ");
        if (*eq != '=') { /* a bare word: keep it, under "extra" */
            f = eq;
            line[at++] = ',';
            at += (size_t)snprintf(line + at, cap - at, "\"extra\":\"");
            at = json_chars(line, at, cap, k, (size_t)(eq - k));
            if (at + 1 < cap)
                line[at++] = '"';
            continue;
        }
        f = eq + 1;
        if (*f == '"') {
            quoted = 1;
            for (f++; *f && *f != '"'; f++) {
                if (*f == '\\' && f[1])
                    f++;
                if (vn + 1 < sizeof(val))
                    val[vn++] = *f;
            }
            if (*f == '"')
                f++;
        } else {
            for (; *f && *f != ' '; f++)
                if (vn + 1 < sizeof(val))
                    val[vn++] = *f;
        }
        line[at++] = ',';
        line[at++] = '"';
        at = json_chars(line, at, cap, k, (size_t)(eq - k));
        if (at + 4 >= cap)
            break;
        line[at++] = '"';
        line[at++] = ':';
        if (!quoted && is_number(val, vn)) {
            if (at + vn + 1 < cap) {
                memcpy(line + at, val, vn);
                at += vn;
            }
        } else {
            line[at++] = '"';
            at = json_chars(line, at, cap, val, vn);
            if (at + 1 < cap)
                line[at++] = '"';
        }
    }
    return at;
}

void lq_log_write(int level, const char *msg, const char *fields, ...)
{
    char line[4096], fbuf[2048], when[64];
    struct timespec ts;
    size_t n;

    clock_gettime(CLOCK_REALTIME, &ts);
    lq_ms_to_iso((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, when, sizeof(when));
    const char *lname = level_names[level < 0 ? 0 : level > 3 ? 3 : level];
    fbuf[0] = '\0';
    if (fields && *fields) {
        va_list ap;
        va_start(ap, fields);
        int m = vsnprintf(fbuf, sizeof(fbuf), fields, ap);
        va_end(ap);
        if (m < 0)
            fbuf[0] = '\0';
        for (char *p = fbuf; *p; p++) /* one event, one line: whatever a field holds */
            if ((unsigned char)*p < 0x20)
                *p = ' ';
    }
    if (lq_log_format == LQ_LOG_FMT_JSON) {
        n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", when, lname);
        n = json_chars(line, n, sizeof(line) - 8, msg, strlen(msg));
        line[n++] = '"';
        n = json_fields(line, n, sizeof(line) - 4, fbuf);
        line[n++] = '}';
    } else {
        n = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s msg=\"", when, lname);
        /* the message is ours, but escape quotes anyway so every line stays parseable */
        for (const char *p = msg; *p && n < sizeof(line) - 4; p++) {
            if (*p == '"' || *p == '\\')
                line[n++] = '\\';
            line[n++] = (*p == '\n') ? ' ' : *p;
        }
        line[n++] = '"';
        if (fbuf[0]) {
            size_t fl = strnlen(fbuf, sizeof(line) - n - 3);
            line[n++] = ' ';
            memcpy(line + n, fbuf, fl);
            n += fl;
        }
    }
    line[n++] = '\n';
    fwrite(line, 1, n, stderr);
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
