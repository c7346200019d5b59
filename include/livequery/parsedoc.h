/*
 * parsedoc.h - Parse-on-MongoDB documents (BSON, as Parse Server stores them)
 * to Parse REST JSON (what GET /classes/<C>/<id> returns), and the schema
 * cache built from `_SCHEMA` that tells the field types.
 *
 * The rules are reference/parse-mongo-storage.md §1 and §3; protocol/bus.md
 * "Objects from the tailer" is the contract for what leaves the converter:
 *
 *   _id                      -> objectId (string; ObjectId as 24 hex; other types as text)
 *   _created_at/_updated_at  -> createdAt/updatedAt, ISO strings YYYY-MM-DDTHH:mm:ss.sssZ
 *                               (legacy top-level createdAt/updatedAt BSON Dates likewise)
 *   _p_<f> "Cls$id"          -> f: {"__type":"Pointer","className":"Cls","objectId":"id"}
 *   BSON Date (any depth)    -> {"__type":"Date","iso":…}
 *   file-typed string        -> {"__type":"File","name":…[,"url":prefix+urlencoded(name)]}
 *   geopoint-typed [lng,lat] -> {"__type":"GeoPoint","latitude":lat,"longitude":lng}
 *   polygon-typed GeoJSON    -> {"__type":"Polygon","coordinates":[[lat,lng],…]}
 *   BSON Binary (any depth)  -> {"__type":"Bytes","base64":…}; a bytes-typed string likewise
 *   relation-typed field     -> {"__type":"Relation","className":target} (synthesized)
 *   _rperm/_wperm            -> ACL (see below)
 *   every other "_" key      -> dropped (never leaves the server), as are authData and
 *                               sessionToken (_User/_Session secrets)
 *
 * ACL: both _rperm and _wperm absent (or null) -> no "ACL" key (public).
 * Otherwise ACL = {entry:{"read":true}} for _rperm entries merged with
 * {"write":true} for _wperm entries; an absent/null _rperm next to a present
 * _wperm adds "*":{"read":true} (missing _rperm is public read in Parse), and
 * the reverse adds "*":{"write":true}. [] and [] -> "ACL":{} (master only).
 *
 * Without a schema entry for the class, types are inferred: _p_ values of the
 * form "Cls$id" become pointers, Dates and Binary convert by BSON type, and
 * files, geopoints, polygons and relations stay as stored (documented in
 * protocol/bus.md).
 *
 * Details settled in parsedoc.c (each is tested in tests/unit/test_parsedoc.c):
 *  - Key order: objectId, className, the document's fields in BSON order,
 *    synthesized relations, ACL. A relation field always gets the synthesized
 *    value (parse-server overwrites a stored one too).
 *  - objectId: "" + _id as JS would: string as is, ObjectId as 24 hex, Int32/
 *    Int64/Double/Decimal128 as number text; any other type as the compact
 *    JSON text of its converted value.
 *  - _p_<f>: class schema given -> converted only when f is typed pointer
 *    (className = text before the FIRST '$', objectId = the rest), else
 *    dropped. No class schema -> converted only when the text before the first
 *    '$' is a class name (^_?[A-Za-z][A-Za-z0-9_]*$, <= 128 bytes). null,
 *    non-strings and strings without '$' are dropped.
 *  - _created_at/_updated_at win over legacy createdAt/updatedAt. A string
 *    value is copied as is; other non-Date types are dropped.
 *  - _expiresAt (a Date) -> expiresAt {"__type":"Date"} on any class, as
 *    parse-server does; stored top-level objectId, className and ACL keys are
 *    ignored (they are computed).
 *  - Dates: JS toJSON; years outside 0000-9999 use JS expanded years
 *    (+010000-01-01T…, -000001-…); ms beyond JS's range (±8.64e15) are
 *    clamped to it (parse-server would throw "invalid date").
 *  - Binary: every subtype (0 generic, 2 old binary, 3/4 UUID, 5 MD5, 6
 *    encrypted, 0x80+ user) becomes Bytes of its payload. A string in a
 *    bytes-typed field becomes Bytes only when it is base64 (parse-server
 *    BytesCoder.isBase64Value), else it stays a string.
 *  - GeoPoint needs a 2-element array of numbers; Polygon needs type
 *    "Polygon" and a first ring of such pairs; otherwise converted generically.
 *    With files_url_prefix, any top-level {"__type":"File","name"} without a
 *    url also gets one (FilesController.expandFilesInObject).
 *  - Other BSON types: Decimal128 -> string ("1.5", "NaN"), Timestamp ->
 *    integer t*2^32+i (a js-bson Long), Regex -> "/pattern/options", Code and
 *    CodeWScope -> the code text, Symbol -> string; Undefined, MinKey, MaxKey,
 *    DBPointer -> null. {__type:"Date", iso:<BSON Date>} -> iso as a string.
 *  - Strings and keys that are not valid UTF-8 are repaired (U+FFFD per bad
 *    byte); ACL entries that are not valid UTF-8 are ignored.
 *  - Documents/arrays nested LQ_PARSEDOC_MAX_DEPTH deep (a field's own value
 *    is level 0) become null. Malformed BSON stops the iteration at the bad
 *    element; no input crashes the converter.
 *  - A key given twice (at any depth: repeated BSON keys, keys equal once
 *    repaired; at the top level also a pointer or relation named like a
 *    field, _p_objectId, _p_ACL, _created_at after a legacy createdAt, a
 *    stored expiresAt next to _expiresAt) keeps its first position and gets
 *    the last value (jansson's replace in place). lq_parsedoc_write_rest
 *    writes each key once: such rare documents go through
 *    lq_parsedoc_to_rest + lq_buf_json.
 *  - opts->master_only: "ACL":{} whatever _rperm/_wperm hold (in the ACL's
 *    place: last, or where a _p_ACL pointer put "ACL").
 *
 * Thread: a schema is immutable once built and reference-counted
 * (atomically), so tailer threads may share one; everything else is pure.
 */
#ifndef LIVEQUERY_PARSEDOC_H
#define LIVEQUERY_PARSEDOC_H

#include <bson/bson.h>
#include <jansson.h>

#include "livequery/error.h"
#include "livequery/jsonout.h"

/* Containers deeper than this inside one value are replaced by null. */
#define LQ_PARSEDOC_MAX_DEPTH 100

typedef enum lq_field_type {
    LQ_FT_UNKNOWN = 0, /* not in the schema */
    LQ_FT_STRING,
    LQ_FT_NUMBER,
    LQ_FT_BOOLEAN,
    LQ_FT_DATE,
    LQ_FT_OBJECT, /* also legacy "map" */
    LQ_FT_ARRAY,
    LQ_FT_GEOPOINT,
    LQ_FT_FILE,
    LQ_FT_BYTES,
    LQ_FT_POLYGON,
    LQ_FT_POINTER,  /* "*<Target>" */
    LQ_FT_RELATION, /* "relation<Target>" */
} lq_field_type;

typedef struct lq_schema lq_schema;
typedef struct lq_class_schema lq_class_schema;

/* A new, empty schema (refs 1). */
lq_schema *lq_schema_new(void);

/* Adds (or replaces) the class described by one `_SCHEMA` document (its _id
 * is the class name). Returns LQ_OK, or LQ_ERR_INVAL with err set when the
 * document has no string _id; unknown type strings (and non-string values)
 * are kept as LQ_FT_UNKNOWN. _metadata.class_permissions is converted with
 * lq_parsedoc_value. schema_doc is borrowed. Only while the schema is being
 * built (before sharing). */
int lq_schema_add(lq_schema *s, const bson_t *schema_doc, lq_error *err);

lq_schema *lq_schema_ref(lq_schema *s);
/* Drops a reference; frees at zero. Accepts NULL. */
void lq_schema_unref(lq_schema *s);

/* The class, or NULL when the schema has no such class. s may be NULL. */
const lq_class_schema *lq_schema_class(const lq_schema *s, const char *class_name);

/* The type of one field; *target (if not NULL) gets the target class of a
 * pointer or relation (borrowed from the schema), else NULL. LQ_FT_UNKNOWN
 * when cls is NULL or the field is not in it. Hash lookups, no scan. */
lq_field_type lq_schema_field(const lq_class_schema *cls, const char *field, const char **target);

/* _metadata.class_permissions as JSON (borrowed), or NULL when the class has none. */
const json_t *lq_schema_clp(const lq_class_schema *cls);

/* Number of classes (for logs and tests). */
size_t lq_schema_count(const lq_schema *s);

typedef struct lq_parsedoc_opts {
    const char *files_url_prefix; /* File url = prefix + urlencoded name; NULL: no "url" */
    int master_only;              /* "ACL":{} whatever is stored, even none (_Session, ...) */
} lq_parsedoc_opts;

/* Converts one stored object to REST JSON with "className" and "objectId"
 * set. cls may be NULL (types inferred, see above); opts may be NULL;
 * class_name NULL leaves "className" out. doc is borrowed.
 * Returns a new object, or NULL with err set (code LQ_PARSE_ERR_SCHEMA) when
 * doc is NULL, not iterable or has no _id. */
json_t *lq_parsedoc_to_rest(const bson_t *doc, const char *class_name, const lq_class_schema *cls,
                            const lq_parsedoc_opts *opts, lq_error *err);

/* The tailer's per-event path: appends the same REST object as
 * lq_parsedoc_to_rest, as compact JSON text, straight from the BSON, without
 * building a jansson tree. "Same" means json_loads of the text is
 * lq_json_equal to lq_parsedoc_to_rest's result with the same arguments
 * (numbers: integers as integers, doubles in lq_buf_json_number's form; the
 * key order is the same); in fact the text is byte for byte lq_buf_json of
 * that result, and no object in it has a key twice. With opts->master_only
 * the ACL is {}. Returns LQ_OK, or LQ_ERR_INVAL with err set (code
 * LQ_PARSE_ERR_SCHEMA: out or doc NULL, no _id) and out untouched.
 * Ordinary documents cost no allocation besides out's growth (the duplicate
 * key check spills to the heap past 64 keys in open objects); jansson is
 * used for odd _id types, ACLs of more than 32 entries, stored REST Files
 * that get a url, and documents with a key given twice (see above). */
int lq_parsedoc_write_rest(lq_buf *out, const bson_t *doc, const char *class_name,
                           const lq_class_schema *cls, const lq_parsedoc_opts *opts, lq_error *err);

/* One BSON value (any depth) as REST JSON, with the nested rules only (Date,
 * Binary, ObjectId -> hex, Decimal128 -> string, Int64 -> integer, NaN and
 * infinities -> null). New reference; never NULL. */
json_t *lq_parsedoc_value(const bson_iter_t *it);

/* ISO-8601 UTC text of ms since the epoch, JS toJSON form; out needs 32 bytes. */
void lq_parsedoc_iso(int64_t ms, char out[32]);

#endif
