/* error.c - lq_error formatting and lq_strerror. */
#include "livequery/error.h"

#include <stdarg.h>
#include <stdio.h>

void lq_error_set(lq_error *err, int code, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL)
        return;
    err->code = code;
    va_start(ap, fmt);
    vsnprintf(err->text, sizeof(err->text), fmt, ap);
    va_end(ap);
}

const char *lq_strerror(int status)
{
    switch (status) {
    case LQ_OK:
        return "ok";
    case LQ_ERR_NOMEM:
        return "out of memory";
    case LQ_ERR_INVAL:
        return "invalid argument";
    case LQ_ERR_LIMIT:
        return "limit reached";
    case LQ_ERR_NOTFOUND:
        return "not found";
    case LQ_ERR_IO:
        return "i/o error";
    default:
        return "error";
    }
}
