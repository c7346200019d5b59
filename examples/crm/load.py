#!/usr/bin/python3
"""Load the bookstore CRM's access rules and sample data into MongoDB.

Writes examples/crm/schema.json (the `_SCHEMA` documents with their class-level
permissions) and examples/crm/seed.json (roles, role inheritance, users,
sessions, sample objects with ACLs) into a Parse Server database, in the
storage format Parse Server itself uses (see README.md next to this file).

Every document is upserted by `_id`, so running the loader twice changes
nothing; `--reset` first deletes every document of the collections it loads.
Works against a real MongoDB replica set and against tests/mongo/mockmongo.py.

    /usr/bin/python3 examples/crm/load.py --uri 'mongodb://127.0.0.1:27017/parse?replicaSet=rs0'

Needs pymongo (3.11 or later; Debian's python3-pymongo).
"""

import argparse
import os
import sys

from bson import json_util
from bson.objectid import ObjectId

import pymongo
import pymongo.errors

HERE = os.path.dirname(os.path.abspath(__file__))

# Classes whose documents carry an ACL in Parse's storage format.
NO_ACL_CLASSES = ('_Session',)


def read_ext_json(path):
    with open(path, encoding='utf-8') as f:
        return json_util.loads(f.read())


def strip_comments(doc):
    """Drops "$comment" keys (documentation inside the JSON files)."""
    return {k: v for k, v in doc.items() if k != '$comment'}


def legacy_acl(rperm, wperm):
    """Parse's `_acl` copy (MongoTransform addLegacyACL): write entries first
    as {w:true}, then read entries add r:true."""
    acl = {}
    for e in wperm or []:
        acl.setdefault(e, {})['w'] = True
    for e in rperm or []:
        acl.setdefault(e, {})['r'] = True
    return acl


def prepare(coll, doc):
    doc = strip_comments(doc)
    if '_id' not in doc:
        if coll.startswith('_Join:'):
            doc['_id'] = ObjectId()
        else:
            raise ValueError('%s document without _id: %r' % (coll, doc))
    if coll not in NO_ACL_CLASSES and ('_rperm' in doc or '_wperm' in doc) and '_acl' not in doc:
        doc['_acl'] = legacy_acl(doc.get('_rperm'), doc.get('_wperm'))
    return doc


def load_files(schema_path, seed_path):
    """Returns [(collection, [docs])] in load order: _SCHEMA first."""
    out = []
    if schema_path:
        schema = read_ext_json(schema_path)
        if isinstance(schema, dict):
            schema = schema.get('_SCHEMA', [])
        out.append(('_SCHEMA', [strip_comments(d) for d in schema]))
    if seed_path:
        seed = read_ext_json(seed_path)
        for coll, docs in seed.items():
            if coll.startswith('$') or coll.startswith('//'):
                continue
            if not isinstance(docs, list):
                raise ValueError('seed key %r must hold a list of documents' % coll)
            out.append((coll, [prepare(coll, d) for d in docs]))
    return out


def check_references(batches):
    """Warnings for join rows, sessions and pointers that name missing docs."""
    ids = {}
    for coll, docs in batches:
        ids.setdefault(coll, set()).update(str(d['_id']) for d in docs)
    warn = []
    roles, users = ids.get('_Role', set()), ids.get('_User', set())
    for coll, docs in batches:
        for d in docs:
            if coll == '_Join:users:_Role':
                if d.get('owningId') not in roles:
                    warn.append('%s %s: owningId %s is not a seeded _Role' % (coll, d['_id'], d.get('owningId')))
                if d.get('relatedId') not in users:
                    warn.append('%s %s: relatedId %s is not a seeded _User' % (coll, d['_id'], d.get('relatedId')))
            elif coll == '_Join:roles:_Role':
                for k in ('owningId', 'relatedId'):
                    if d.get(k) not in roles:
                        warn.append('%s %s: %s %s is not a seeded _Role' % (coll, d['_id'], k, d.get(k)))
            for k, v in d.items():
                if k.startswith('_p_') and isinstance(v, str) and '$' in v:
                    cls, oid = v.split('$', 1)
                    if cls in ids and oid not in ids[cls]:
                        warn.append('%s %s: %s points to missing %s' % (coll, d['_id'], k, v))
    return warn


def effective_roles(db, prefix, user_id):
    """Role names of a user, resolved the way Parse Server's Auth.js does:
    direct roles from _Join:users:_Role (owningId where relatedId = user), then
    repeatedly the parents from _Join:roles:_Role (owningId where relatedId is
    a role found so far). Join rows naming missing _Role docs count for nothing."""
    users_join = db[prefix + '_Join:users:_Role']
    roles_join = db[prefix + '_Join:roles:_Role']
    role_coll = db[prefix + '_Role']
    ids = [r['owningId'] for r in users_join.find({'relatedId': user_id})]
    found = {}
    frontier = [r for r in role_coll.find({'_id': {'$in': ids}})] if ids else []
    while frontier:
        new_ids = []
        for r in frontier:
            if r['_id'] not in found:
                found[r['_id']] = r.get('name')
                new_ids.append(r['_id'])
        if not new_ids:
            break
        parents = [j['owningId'] for j in roles_join.find({'relatedId': {'$in': new_ids}})]
        parents = [p for p in parents if p not in found]
        frontier = list(role_coll.find({'_id': {'$in': parents}})) if parents else []
    return sorted('role:' + n for n in found.values() if n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--uri', default=os.environ.get('MONGODB_URI', 'mongodb://127.0.0.1:27017/parse?replicaSet=rs0'),
                    help='MongoDB URI; the database comes from its path (default parse), or --db')
    ap.add_argument('--db', help='database name (overrides the URI path)')
    ap.add_argument('--prefix', default='', help="Parse Server's collectionPrefix (default none)")
    ap.add_argument('--schema', default=os.path.join(HERE, 'schema.json'), help='_SCHEMA documents (JSON array)')
    ap.add_argument('--seed', default=os.path.join(HERE, 'seed.json'), help='seed data ({collection: [docs]})')
    ap.add_argument('--no-schema', action='store_true', help='do not load the _SCHEMA documents')
    ap.add_argument('--no-seed', action='store_true', help='do not load the seed data')
    ap.add_argument('--reset', action='store_true',
                    help='first delete every document of the collections being loaded (destructive)')
    ap.add_argument('--timeout-ms', type=int, default=5000, help='server selection timeout')
    ap.add_argument('--quiet', action='store_true')
    args = ap.parse_args(argv)

    batches = load_files(None if args.no_schema else args.schema, None if args.no_seed else args.seed)
    for w in check_references(batches):
        print('warning: %s' % w, file=sys.stderr)

    client = pymongo.MongoClient(args.uri, serverSelectionTimeoutMS=args.timeout_ms)
    try:
        db = client[args.db] if args.db else client.get_default_database('parse')
    except pymongo.errors.ConfigurationError:
        db = client['parse']

    say = (lambda *a: None) if args.quiet else print
    say('loading into %s (prefix %r)' % (db.name, args.prefix))
    for coll, docs in batches:
        c = db[args.prefix + coll]
        if args.reset:
            n = c.delete_many({}).deleted_count
            say('  %-20s reset: %d deleted' % (coll, n))
        inserted = replaced = 0
        for d in docs:
            r = c.replace_one({'_id': d['_id']}, d, upsert=True)
            if r.upserted_id is not None:
                inserted += 1
            else:
                replaced += 1
        say('  %-20s %d inserted, %d replaced' % (coll, inserted, replaced))

    if not args.no_seed:
        users = [d for coll, docs in batches if coll == '_User' for d in docs]
        if users:
            say('effective roles (read back from the database):')
            for u in users:
                roles = effective_roles(db, args.prefix, u['_id'])
                say('  %-10s %-12s %s' % (u.get('username', ''), u['_id'], ', '.join(roles) or '(none)'))
    client.close()
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except (pymongo.errors.PyMongoError, OSError, ValueError) as exc:
        print('load.py: %s' % str(exc).split(', Timeout')[0], file=sys.stderr)
        sys.exit(1)
