#!/usr/bin/python3
"""Writes the text seed corpora of tests/fuzz/corpus/{frame,query,bus,config}
from the repository's own data; run from anywhere, output is committed.

  frame   client lines of protocol/golden/*.txt and protocol/vectors/requests.txt
  query   tests/query/*.test groups: where NUL a `+` object (and one `-` object)
  bus     `! publish/afterSave/afterDelete` lines of protocol/golden/*.txt and the
          payloads of tests/unit/test_bus.c, first byte = lq_bus_channel
  config  argv lists of tests/unit/test_config.c and README.md examples, NUL-separated

The BSON corpus comes from make_bson_seeds.py. Existing files of these four
directories are replaced.
"""
import glob
import json
import os
import re

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
C_LIT = r'"(?:[^"\\\n]|\\.)*"'


def c_string(lits):
    """The value of adjacent C string literals (the escapes our tests use)."""
    s = "".join(x[1:-1] for x in re.findall(C_LIT, lits))
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), s)


def write(target, items):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    for f in glob.glob(os.path.join(d, "*")):
        os.remove(f)
    seen = set()
    for name, data in items:
        if isinstance(data, str):
            data = data.encode()
        if data in seen:
            continue
        seen.add(data)
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)
    print(f"{target}: {len(seen)} files")


def golden_lines(prefix):
    for path in sorted(glob.glob(os.path.join(ROOT, "protocol", "golden", "*.txt"))):
        base = os.path.basename(path)[:-4]
        n = 0
        for line in open(path, encoding="utf-8"):
            line = line.rstrip("\n")
            if line.startswith(prefix):
                n += 1
                yield base, n, line[len(prefix):]


def frame():
    items = []
    for base, n, line in golden_lines("> "):
        items.append((f"golden-{base}-{n}", line))
    n = 0
    for line in open(os.path.join(ROOT, "protocol", "vectors", "requests.txt"), encoding="utf-8"):
        if line.startswith("> "):
            n += 1
            items.append((f"vector-{n:02d}", line[2:].rstrip("\n")))
    items.append(("deep-array", "[" * 70 + "]" * 70))
    items.append(("subscribe-deep-where", '{"op":"subscribe","requestId":1,"query":{"className":"B","where":'
                  + '{"a":' * 20 + "1" + "}" * 20 + "}}"))
    return items


def query():
    items = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "query", "*.test"))):
        base = os.path.basename(path)[:-5]
        groups, cur = [], []
        for line in open(path, encoding="utf-8"):
            line = line.rstrip("\n")
            if line.startswith("#"):
                continue
            if not line.strip():
                if cur:
                    groups.append(cur)
                cur = []
            else:
                cur.append(line)
        if cur:
            groups.append(cur)
        for i, g in enumerate(groups, 1):
            where = g[0]
            plus = [l[2:] for l in g[1:] if l.startswith("+ ")]
            minus = [l[2:] for l in g[1:] if l.startswith("- ")]
            if plus:
                items.append((f"{base}-{i:02d}-match", where + "\0" + plus[0]))
            elif minus:
                items.append((f"{base}-{i:02d}-nomatch", where + "\0" + minus[-1]))
            else:
                items.append((f"{base}-{i:02d}-refused", where))
    return items


def bus():
    kinds = {"publish ": 0, "afterSave ": 1, "afterDelete ": 2}
    items = []
    for base, n, line in golden_lines("! "):
        for k, b in kinds.items():
            if line.startswith(k):
                items.append((f"golden-{base}-{n}-{k.strip()}", bytes([b]) + line[len(k):].encode()))
    src = open(os.path.join(ROOT, "tests", "unit", "test_bus.c"), encoding="utf-8").read()
    kind = {"LQ_BUS_OURS": 0, "LQ_BUS_PARSE_SAVE": 1, "LQ_BUS_PARSE_DELETE": 2,
            "LQ_BUS_PARSE_CLEAR_CACHE": 3}
    for i, m in enumerate(re.finditer(r'(LQ_BUS_[A-Z_]+),\s*((?:' + C_LIT + r'\s*)+)', src), 1):
        if m.group(1) in kind:
            items.append((f"unit-{i:02d}-{m.group(1)[7:].lower()}",
                          bytes([kind[m.group(1)]]) + c_string(m.group(2)).encode()))
    for i, s in enumerate(['{"userId":"abc"}', "{}", "null", '"abc"', "42", '["u"]'], 1):
        items.append((f"clearcache-{i}", b"\3" + s.encode()))
    items.append(("bus-md-parse-save",
                  b"\1" + json.dumps({"currentParseObject": {"objectId": "HZKPL5sv3j", "__type": "Object",
                      "className": "BookStockLog", "quantityOnHand": 12, "ACL": {"*": {"read": True}}},
                      "originalParseObject": {"objectId": "HZKPL5sv3j", "__type": "Object",
                      "className": "BookStockLog", "quantityOnHand": 10},
                      "classLevelPermissions": {"find": {"*": True}, "get": {"requiresAuthentication": True},
                          "protectedFields": {"*": ["isbn"], "userField:owner": []},
                          "readUserFields": ["owner"]}}, separators=(",", ":")).encode()))
    return items


def config():
    items = []
    src = open(os.path.join(ROOT, "tests", "unit", "test_config.c"), encoding="utf-8").read()
    for i, m in enumerate(re.finditer(r'char \*\w+\[\] = \{((?:\s*' + C_LIT + r'\s*,)*)\s*NULL\}', src), 1):
        args = [c_string(x) for x in re.findall(C_LIT, m.group(1))][1:]
        items.append((f"unit-{i:02d}", "\0".join(args)))
    readme = [
        ["--app-id", "bookstore", "--master-key", "mk", "--port", "1337", "--host", "0.0.0.0"],
        ["--app-id=bookstore", "--role", "tailer", "--mongodb-uri",
         "mongodb://db1,db2/parse?replicaSet=rs0", "--classes", "SigningSchedule,BookStockLog,_User",
         "--full-document", "required", "--files-url-prefix", "http://localhost:1337/parse/files/bookstore/",
         "--collection-prefix", "app_", "--lease-ttl", "3000", "--stream-max-len", "10000",
         "--tailer-cache-size", "0", "--tailer-id", "host:1:abc"],
        ["--app-id", "b", "--role", "gateway", "--event-loop", "poll", "--max-frame-bytes", "65536",
         "--max-json-depth", "64", "--max-subscriptions", "256", "--max-query-bytes", "16384",
         "--max-query-depth", "16", "--max-connections", "10000", "--max-queue-bytes", "4194304",
         "--ping-interval", "10"],
        ["--app-id", "b", "--mongodb-uri", "mongodb://m/", "--auth-threads", "2", "--auth-cache-size",
         "100000", "--auth-cache-ttl", "30000", "--auth-revalidate", "0",
         "--redis-url", "redis://:p%40ss@[::1]:6380/15"],
        ["--version"],
        ["-h"],
        ["--app-id", "x", "--master-key="],
        ["--app-id", "x", "--redis-url", "redis://h"],
        ["--app-id", "x", "--port", "99999999999999999999"],
        ["--app-id", "x", "--classes", ",,,", "--mongodb-uri", "m"],
    ]
    for i, args in enumerate(readme, 1):
        items.append((f"flags-{i:02d}", "\0".join(args)))
    return items


if __name__ == "__main__":
    write("frame", frame())
    write("query", query())
    write("bus", bus())
    write("config", config())
