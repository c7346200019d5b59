#!/usr/bin/python3
"""acl_seed.py - seeds the MongoDB test server (tests/mongo/mockmongo.py) for the ACL-heavy
benchmark: N users, one session each (token PREFIX<i>, what `lq_bench --session-prefix PREFIX`
sends), one role, and every K-th user (i % K == 0) a member of it; Parse Server's storage format
(reference/parse-mongo-storage.md).

    acl_seed.py CONTROL_PORT N PREFIX ROLE K
"""
import datetime
import json
import sys
import urllib.request

port, n, prefix, role, k = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5])
now = datetime.datetime.now(datetime.timezone.utc)


def date(t):
    return {"$date": t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"}


def insert(coll, doc):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/insert", method="POST",
                                 data=json.dumps({"coll": coll, "doc": doc}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        if r.status != 200:
            raise SystemExit(f"acl_seed.py: insert into {coll} failed: {r.status}")


stamps = {"_created_at": date(now), "_updated_at": date(now)}
role_id = "benchRole01"
insert("_Role", {"_id": role_id, "name": role, "_rperm": ["*"], "_wperm": [], **stamps})
for i in range(n):
    uid = f"benchU{i:06d}"
    insert("_User", {"_id": uid, "username": uid, "_rperm": [uid], "_wperm": [uid], **stamps})
    insert("_Session", {"_id": f"benchS{i:06d}", "_session_token": f"{prefix}{i}", "_p_user": f"_User${uid}",
                        "createdWith": {"action": "login", "authProvider": "password"},
                        "expiresAt": date(now + datetime.timedelta(days=1)), **stamps})
    if i % k == 0:
        insert("_Join:users:_Role", {"_id": {"$oid": f"{i:024x}"}, "owningId": role_id, "relatedId": uid})
print(f"acl_seed.py: {n} users and sessions, role {role} with {(n + k - 1) // k} members", file=sys.stderr)
