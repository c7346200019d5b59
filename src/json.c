/* json.c - value semantics shared by query matching and event classification. */
#include "livequery/json.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

double lq_json_number(const json_t *v)
{
    return json_is_integer(v) ? (double)json_integer_value(v) : json_real_value(v);
}

int lq_json_equal(const json_t *a, const json_t *b)
{
    if (a == b)
        return 1;
    if (a == NULL || b == NULL)
        return 0;
    if (json_is_number(a) && json_is_number(b)) {
        if (json_is_integer(a) && json_is_integer(b))
            return json_integer_value(a) == json_integer_value(b);
        return lq_json_number(a) == lq_json_number(b);
    }
    if (json_typeof(a) != json_typeof(b))
        return 0;
    switch (json_typeof(a)) {
    case JSON_STRING:
        return json_string_length(a) == json_string_length(b) &&
               memcmp(json_string_value(a), json_string_value(b), json_string_length(a)) == 0;
    case JSON_ARRAY: {
        size_t n = json_array_size(a);
        if (n != json_array_size(b))
            return 0;
        for (size_t i = 0; i < n; i++)
            if (!lq_json_equal(json_array_get(a, i), json_array_get(b, i)))
                return 0;
        return 1;
    }
    case JSON_OBJECT: {
        const char *k;
        size_t klen;
        json_t *va;
        if (json_object_size(a) != json_object_size(b))
            return 0;
        /* by length: a key may hold a NUL ("k\u0000a" is not "k") */
        json_object_keylen_foreach((json_t *)a, k, klen, va) {
            if (!lq_json_equal(va, json_object_getn(b, k, klen)))
                return 0;
        }
        return 1;
    }
    default: /* true, false, null: same type is equal */
        return 1;
    }
}

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

int lq_iso_to_ms(const char *s, int64_t *ms)
{
    int y, mo, d, h = 0, mi = 0, se = 0, frac = 0, tzs = 0;
    const char *p = s;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

    if (s == NULL || digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' ||
        digits(&p, 2, &d))
        return -1;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1])
        return -1;
    if (mo == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return -1;
    if (*p == 'T' || *p == 't' || *p == ' ') {
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
            return -1;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &se))
                return -1;
            if (*p == '.') {
                int n = 0;
                p++;
                while (*p >= '0' && *p <= '9') {
                    if (n < 3)
                        frac = frac * 10 + (*p - '0');
                    n++;
                    p++;
                }
                if (n == 0)
                    return -1;
                for (; n < 3; n++)
                    frac *= 10;
            }
        }
        if (h > 23 || mi > 59 || se > 60)
            return -1;
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-') {
            int sign = *p++ == '-' ? -1 : 1, th, tm;
            if (digits(&p, 2, &th))
                return -1;
            if (*p == ':')
                p++;
            if (digits(&p, 2, &tm) || th > 23 || tm > 59)
                return -1;
            tzs = sign * (th * 3600 + tm * 60);
        } else {
            return -1; /* a time without a zone is ambiguous: refuse it */
        }
    }
    if (*p != '\0')
        return -1;
    *ms = (days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se - tzs) *
              1000 +
          frac;
    return 0;
}

char *lq_ms_to_iso(int64_t ms, char *buf, size_t cap)
{
    time_t secs = (time_t)(ms >= 0 ? ms / 1000 : (ms - 999) / 1000);
    int milli = (int)(ms - (int64_t)secs * 1000);
    struct tm tm;

    gmtime_r(&secs, &tm);
    snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, milli);
    return buf;
}

int lq_json_parse_date(const json_t *v, int64_t *ms)
{
    const json_t *t, *iso;

    if (!json_is_object(v))
        return 0;
    t = json_object_get(v, "__type");
    if (!json_is_string(t) || strcmp(json_string_value(t), "Date") != 0)
        return 0;
    iso = json_object_get(v, "iso");
    if (!json_is_string(iso))
        return 0;
    return lq_iso_to_ms(json_string_value(iso), ms) == 0;
}

int lq_json_text_depth(const char *buf, size_t len, int limit)
{
    int depth = 0, max = 0, in_str = 0;

    for (size_t i = 0; i < len; i++) {
        char c = buf[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > max) {
                max = depth;
                if (max > limit)
                    return limit + 1;
            }
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return max;
}
