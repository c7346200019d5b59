#!/usr/bin/python3
"""Writes tests/fuzz/corpus/bson: BSON documents as the tailer meets them.

  crm-*      stored objects of examples/crm/seed.json (Parse's MongoDB format)
  schema-*   the `_SCHEMA` documents of examples/crm/schema.json
  types-*    one document per BSON type and per Parse storage rule (parsedoc.h)
  event-*    change stream events (insert, update with pre-image, delete, invalidate)
  raw-*      hand-assembled bytes libbson accepts at bson_init_static but that
             are odd inside: invalid UTF-8, repeated keys, truncated elements

Needs Debian's python3-pymongo (`bson`): /usr/bin/python3 make_bson_seeds.py.
Existing files of the directory are replaced.
"""
import datetime
import glob
import json
import os
import struct
import uuid

import bson
from bson import json_util
from bson.binary import Binary
from bson.code import Code
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus", "bson")
UTC = datetime.timezone.utc


def d(y, mo, day, h=0, mi=0, s=0, ms=0):
    return datetime.datetime(y, mo, day, h, mi, s, ms * 1000, tzinfo=UTC)


def doc(elements):
    """A BSON document from raw elements (type byte + cstring key + value)."""
    body = b"".join(elements)
    return struct.pack("<i", len(body) + 5) + body + b"\0"


def el_str(key, raw):
    return b"\x02" + key + b"\0" + struct.pack("<i", len(raw) + 1) + raw + b"\0"


def el_int(key, v):
    return b"\x10" + key + b"\0" + struct.pack("<i", v)


def el_doc(key, raw_doc, t=b"\x03"):
    return t + key + b"\0" + raw_doc


def crm():
    seed = json_util.loads(open(os.path.join(ROOT, "examples", "crm", "seed.json")).read())
    for cls, rows in seed.items():
        if not isinstance(rows, list):
            continue
        for i, row in enumerate(rows[:3], 1):
            row = {k: v for k, v in row.items() if k != "$comment"}
            yield f"crm-{cls.replace(':', '_')}-{i}", bson.encode(row)


def schema():
    for s in json.load(open(os.path.join(ROOT, "examples", "crm", "schema.json"))):
        yield f"schema-{s['_id']}", bson.encode(s)
    yield "schema-all-types", bson.encode({
        "_id": "SigningSchedule", "title": "string", "seats": "number", "ok": "boolean",
        "startsAt": "date", "details": "object", "legacy": "map", "tags": "array",
        "venue": "geopoint", "poster": "file", "blob": "bytes", "area": "polygon",
        "author": "*Author", "attendees": "relation<_User>", "bad": "relation<", "odd": 7,
        "_client_permissions": {}, "_metadata": {"class_permissions": {
            "find": {"*": True}, "get": {"requiresAuthentication": True},
            "update": {"pointerFields": ["owner"]}, "readUserFields": ["owner"],
            "protectedFields": {"*": ["blob"], "role:manager": []}}}})


def types():
    base = {"_id": "obj0000001", "_created_at": d(2026, 11, 23, 23, 29, 42, 277),
            "_updated_at": d(2026, 11, 23, 23, 29, 43, 385)}

    def t(name, fields):
        return f"types-{name}", bson.encode({**base, **fields})

    yield t("scalars", {"s": "text", "i": 7, "l": Int64(1 << 53), "f": 1.5, "nan": float("nan"),
                        "inf": float("-inf"), "neg0": -0.0, "b": True, "n": None})
    yield t("dates", {"startsAt": d(2026, 12, 1, 18), "old": d(1, 1, 1),
                      "epoch": datetime.datetime(1970, 1, 1, tzinfo=UTC),
                      "_expiresAt": d(2027, 1, 1), "nested": {"when": [d(2000, 2, 29)]},
                      "restDate": {"__type": "Date", "iso": d(2026, 1, 2)}})
    yield t("binary", {"blob": Binary(b"\x00\x01\xff" * 5), "old": Binary(b"ab", 2),
                       "uuid": Binary(uuid.UUID(int=1).bytes, 4), "md5": Binary(b"0" * 16, 5),
                       "enc": Binary(b"e", 6), "user": Binary(b"u", 0x80), "b64": "AAEC/w==",
                       "notb64": "not base64!"})
    yield t("odd-types", {"dec": Decimal128("1.5"), "decnan": Decimal128("NaN"),
                          "ts": Timestamp(1700000000, 7), "re": Regex("^a.*b$", "imsx"),
                          "code": Code("function(){return 1}"),
                          "scope": Code("x", {"y": 1}), "oid": ObjectId("058d7eb37dbdc5cec5e0df0b"),
                          "min": MinKey(), "max": MaxKey(), "ref": DBRef("Coll", "id1", "db")})
    yield t("pointers", {"_p_author": "Author$au1", "_p_owner": "_User$u1", "_p_bad": "no-dollar",
                         "_p_num": 5, "_p_null": None, "_p_objectId": "X$y", "_p_ACL": "A$b",
                         "_p_weird": "Not A Class$x$y", "author": "shadowed"})
    yield t("acl", {"_rperm": ["*", "role:staff", "u1"], "_wperm": ["role:manager"],
                    "_acl": {"u1": {"r": True, "w": True}}})
    yield t("acl-write-only", {"_wperm": ["u1"], "_rperm": None})
    yield t("acl-empty", {"_rperm": [], "_wperm": []})
    yield t("acl-many", {"_rperm": [f"u{i}" for i in range(40)], "_wperm": [f"role:r{i}" for i in range(40)]})
    yield t("geo-file-relation", {"venue": [-74.0, 40.7], "badvenue": [1], "poster": "tfss-poster.png",
                                  "area": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 0]]]},
                                  "attendees": "stored relation", "restFile":
                                  {"__type": "File", "name": "a b/ü.txt"}})
    yield t("secrets", {"authData": {"facebook": {"id": "1"}}, "sessionToken": "r:abc",
                        "_hashed_password": "$2b$10$x", "_email_verify_token": "t", "username": "u"})
    yield t("legacy-dates", {"createdAt": d(2020, 1, 1), "updatedAt": "2020-01-02T00:00:00.000Z",
                             "expiresAt": d(2030, 1, 1)})
    yield t("nested", {"a": {"b": {"c": [1, {"d": [[], {}]}]}}, "arr": [[[[1]]]],
                       "deep": json.loads("[" * 105 + "]" * 105)})
    yield t("keys", {"className": "Other", "objectId": "stored", "ACL": {"*": {"read": True}},
                     "unicode-é": "ü", "": "empty key", "a.b": 1, "$dollar": 2})
    yield "types-oid-id", bson.encode({"_id": ObjectId("5a90c005da7e8b289c02816a"), "x": 1})
    yield "types-int-id", bson.encode({"_id": 42, "x": Int64(-1)})
    yield "types-doc-id", bson.encode({"_id": {"a": [1, "b"]}, "x": 1})
    yield "types-no-id", bson.encode({"x": 1})
    yield "types-empty", bson.encode({})


def events():
    full = {"_id": "ssWinter01", "bookTitle": "The Winter Orchard", "status": "confirmed",
            "_p_author": "Author$au1", "startsAt": d(2026, 12, 12, 18), "_rperm": ["role:staff"],
            "_wperm": ["u1"], "_created_at": d(2026, 10, 10, 14), "_updated_at": d(2026, 11, 29, 10, 15)}
    before = {**full, "status": "tentative", "_updated_at": d(2026, 11, 28)}
    tok = {"_data": "8265A1B2C3000000012B022C0100296E5A1004" + "AB" * 16 + "463C5F6964003C73735769" + "04"}
    ns = {"db": "parse", "coll": "SigningSchedule"}
    key = {"_id": "ssWinter01"}
    yield "event-insert", bson.encode({"_id": tok, "operationType": "insert", "fullDocument": full,
                                       "ns": ns, "documentKey": key})
    yield "event-update-preimage", bson.encode({
        "_id": tok, "operationType": "update", "clusterTime": Timestamp(1700000000, 1),
        "fullDocument": full, "fullDocumentBeforeChange": before, "ns": ns, "documentKey": key,
        "updateDescription": {"updatedFields": {"status": "confirmed"}, "removedFields": []}})
    yield "event-replace-nolookup", bson.encode({"_id": tok, "operationType": "replace",
                                                 "fullDocument": None, "documentKey": key})
    yield "event-delete", bson.encode({"_id": tok, "operationType": "delete",
                                       "fullDocumentBeforeChange": before,
                                       "documentKey": {"_id": ObjectId("5a90c005da7e8b289c02816a")}})
    yield "event-invalidate", bson.encode({"_id": {"_data": "82ZZ"}, "operationType": "invalidate"})
    yield "event-token-odd", bson.encode({"_id": {"_data": "not hex!", "_typeBits": Binary(b"\x01")},
                                          "operationType": "insert", "fullDocument": {"_id": 1}})


def raw():
    yield "raw-invalid-utf8", doc([el_str(b"_id", b"id\xff1"), el_str(b"s", b"a\xc3\x28b\xed\xa0\x80"),
                                   el_str(b"k\xfe", b"v"), el_int(b"n", 1)])
    yield "raw-nul-in-string", doc([el_str(b"_id", b"a\0b"), el_str(b"s", b"x\0y")])
    yield "raw-repeated-keys", doc([el_str(b"_id", b"a"), el_int(b"x", 1), el_int(b"x", 2),
                                    el_str(b"_p_x", b"C$d"), el_str(b"_created_at", b"s"),
                                    el_str(b"createdAt", b"t")])
    yield "raw-truncated-element", doc([el_str(b"_id", b"a"), b"\x02s\0" + struct.pack("<i", 100) + b"abc"])
    inner_bad = struct.pack("<i", 9) + b"\x10x\0\x01\0"  # claims 9 bytes, holds 8
    yield "raw-bad-subdoc", doc([el_str(b"_id", b"a"), el_doc(b"o", inner_bad + b"\0")])
    yield "raw-unknown-type", doc([el_str(b"_id", b"a"), b"\x42z\0" + b"\0" * 8])
    yield "raw-acl-bad-utf8", doc([el_str(b"_id", b"a"),
                                   el_doc(b"_rperm", doc([el_str(b"0", b"u\xff"), el_str(b"1", b"*")]), b"\x04")])
    yield "raw-rperm-not-array", doc([el_str(b"_id", b"a"), el_str(b"_rperm", b"*")])


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in glob.glob(os.path.join(OUT, "*")):
        os.remove(f)
    n = 0
    for gen in (crm, schema, types, events, raw):
        for name, data in gen():
            with open(os.path.join(OUT, name), "wb") as f:
                f.write(data)
            n += 1
    print(f"bson: {n} files")


if __name__ == "__main__":
    main()
