#!/usr/bin/python3
"""Writes to a real MongoDB for tests/integration/real_mongo.test.js.

Reads one JSON command per line on stdin, answers one JSON line on stdout:
  {"op":"insert","coll":C,"doc":{...extended JSON...}}
  {"op":"update","coll":C,"id":I,"set":{...}}
  {"op":"delete","coll":C,"id":I}
  {"op":"images","coll":C}      create C and try to enable pre/post images
  {"op":"drop","coll":C}
Answer: {"ok":true,...} or {"ok":false,"error":"..."}. URI in argv[1].
Uses Debian's python3-pymongo (bson.json_util for extended JSON).
"""
import json
import sys

from bson import json_util
from pymongo import MongoClient


def main():
    client = MongoClient(sys.argv[1], serverSelectionTimeoutMS=5000)
    db = client.get_default_database(default="parse")
    for line in sys.stdin:
        try:
            cmd = json_util.loads(line)
            coll = db[cmd["coll"]]
            op = cmd["op"]
            out = {"ok": True}
            if op == "insert":
                coll.insert_one(cmd["doc"])
            elif op == "update":
                coll.update_one({"_id": cmd["id"]}, {"$set": cmd["set"]})
            elif op == "delete":
                coll.delete_one({"_id": cmd["id"]})
            elif op == "drop":
                coll.drop()
            elif op == "images":
                if cmd["coll"] not in db.list_collection_names():
                    db.create_collection(cmd["coll"])
                try:
                    db.command("collMod", cmd["coll"], changeStreamPreAndPostImages={"enabled": True})
                    out["images"] = True
                except Exception as e:  # older server or no privilege: degraded mode
                    out["images"] = False
                    out["why"] = str(e)
            else:
                raise ValueError("unknown op " + op)
        except Exception as e:
            out = {"ok": False, "error": str(e)}
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
