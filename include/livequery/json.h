/*
 * json.h - small jansson helpers with the value semantics of a Parse REST find
 * on MongoDB: numbers compare by value (1 == 1.0), dates are ISO-8601 strings
 * or {"__type":"Date","iso":...}.
 *
 * Thread: pure functions, safe from any thread on values that thread owns.
 */
#ifndef LIVEQUERY_JSON_H
#define LIVEQUERY_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* 1 when a and b are deeply equal (objects unordered, arrays ordered,
 * integer and real compared numerically), 0 otherwise. NULL equals only NULL. */
int lq_json_equal(const json_t *a, const json_t *b);

/* Parses an ISO-8601 timestamp "YYYY-MM-DDTHH:MM:SS[.fff][Z|+hh:mm|-hh:mm]"
 * (a date alone "YYYY-MM-DD" is midnight UTC) into milliseconds since the
 * epoch. Returns 0 on success, -1 (and leaves *ms alone) on anything else. */
int lq_iso_to_ms(const char *s, int64_t *ms);

/* Formats ms since the epoch as "YYYY-MM-DDTHH:MM:SS.fffZ" into buf
 * (at least 25 bytes). Returns buf. */
char *lq_ms_to_iso(int64_t ms, char *buf, size_t cap);

/* If v is a Parse Date {"__type":"Date","iso":"..."} with a valid iso,
 * stores its time and returns 1; otherwise returns 0. */
int lq_json_parse_date(const json_t *v, int64_t *ms);

/* The value of a JSON number as a double. v must be a number. */
double lq_json_number(const json_t *v);

/* Maximum nesting depth of the JSON text in buf[0..len), counting [ and {
 * outside strings. Stops early and returns limit+1 once the depth exceeds
 * limit. Does not validate the text. */
int lq_json_text_depth(const char *buf, size_t len, int limit);

#endif
