/*
 * error.h - status codes shared by every module, and the detail record that
 * carries a client-facing Parse error (code + text) out of a parser.
 *
 * Internal functions return LQ_OK (0) or a negative lq_status. Client-facing
 * Parse error codes (1, 2, 4, 102, ...) are documented in protocol/errors.md
 * and only ever travel inside an lq_error.
 */
#ifndef LIVEQUERY_ERROR_H
#define LIVEQUERY_ERROR_H

typedef enum lq_status {
    LQ_OK = 0,
    LQ_ERR = -1,       /* generic failure; detail in an lq_error if one was passed */
    LQ_ERR_NOMEM = -2, /* allocation failed */
    LQ_ERR_INVAL = -3, /* invalid argument or input */
    LQ_ERR_LIMIT = -4, /* a configured limit was reached */
    LQ_ERR_NOTFOUND = -5,
    LQ_ERR_IO = -6,
} lq_status;

/* Parse error codes used on the wire (protocol/errors.md is the contract). */
enum {
    LQ_PARSE_ERR_SCHEMA = 1,           /* request failed schema validation */
    LQ_PARSE_ERR_NO_CLIENT = 2,        /* not connected / unknown subscription */
    LQ_PARSE_ERR_UNKNOWN_OP = 3,
    LQ_PARSE_ERR_KEY = 4,              /* applicationId or key not valid */
    LQ_PARSE_ERR_RESYNC = 100,         /* Parse.Error.CONNECTION_FAILED: events were lost, resubscribe;
                                          also: sessions cannot be checked now */
    LQ_PARSE_ERR_NOT_FOUND = 101,      /* Parse.Error.OBJECT_NOT_FOUND: CLP requiresAuthentication */
    LQ_PARSE_ERR_INVALID_QUERY = 102,  /* Parse.Error.INVALID_QUERY */
    LQ_PARSE_ERR_FORBIDDEN = 119,      /* Parse.Error.OPERATION_FORBIDDEN: CLP, protected field */
    LQ_PARSE_ERR_LIMIT = 155,          /* Parse.Error.REQUEST_LIMIT_EXCEEDED */
    LQ_PARSE_ERR_INVALID_SESSION = 209, /* Parse.Error.INVALID_SESSION_TOKEN */
};

/* A client-facing error: Parse code plus message. text is always NUL-terminated. */
typedef struct lq_error {
    int code;
    char text[256];
} lq_error;

/* Sets err (if not NULL) to code and a printf-formatted message (truncated to fit). */
void lq_error_set(lq_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A short static description of an lq_status. Never NULL. */
const char *lq_strerror(int status);

#endif
