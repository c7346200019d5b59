#!/usr/bin/python3
"""mockmongo: a stateful MongoDB wire-protocol test server (replica-set primary).

Stands in for a MongoDB 6 primary so that the change-stream tailer (libmongoc)
can be tested without a real mongod.  Written for Debian's /usr/bin/python3 with
python3-mockupdb (wire parsing, accept loop) and python3-pymongo (bson).

See tests/mongo/README.md for the command line and the HTTP control API.
"""

import argparse
import copy
import datetime
import gc
import itertools
import json
import os
import random
import select
import signal
import socket
import stat
import string
import struct
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import bson
import bson.errors
from bson import json_util
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.timestamp import Timestamp

import mockupdb

UTC = datetime.timezone.utc
# Decode wire documents as plain dicts with tz-aware UTC datetimes (same as
# bson.json_util.loads), instead of mockupdb's OrderedDict default.
mockupdb.CODEC_OPTIONS = CodecOptions(tz_aware=True, tzinfo=UTC)


def _cheap_repr(self):
    return '<%s>' % self.__class__.__name__


# mockupdb formats repr(request) eagerly for its (disabled) logging; keep it cheap.
for _cls in (mockupdb.Request, mockupdb.OpQuery, mockupdb.OpKillCursors):
    _cls.__repr__ = _cheap_repr

OP_REPLY = 1
OP_MSG = 2013
MORE_TO_COME = 2

VERBOSE = False


def log(msg):
    sys.stderr.write('mockmongo: %s\n' % msg)
    sys.stderr.flush()


def vlog(msg):
    if VERBOSE:
        log(msg)


# --------------------------------------------------------------------------
# errors

class MongoError(Exception):
    def __init__(self, code, code_name, errmsg, labels=None):
        Exception.__init__(self, errmsg)
        self.code = code
        self.code_name = code_name
        self.errmsg = errmsg
        self.labels = labels

    def doc(self):
        d = {'ok': 0.0, 'errmsg': self.errmsg, 'code': self.code,
             'codeName': self.code_name}
        if self.labels:
            d['errorLabels'] = list(self.labels)
        return d


class Hangup(Exception):
    """Close the client connection instead of replying."""


class BadRequest(Exception):
    """Control API: HTTP 400."""


def history_lost():
    return MongoError(286, 'ChangeStreamHistoryLost',
                      'Resume of change stream was not possible, as the resume '
                      'point may no longer be in the oplog.')


# --------------------------------------------------------------------------
# BSON encoding
#
# Debian's pymongo 3.11 has no C extension, so bson.encode is pure Python and
# was most of the cost of a change-stream reply. This encoder produces the same
# bytes as bson.encode for the types it knows (and asks bson for the element of
# any other type), and splices RawDoc values (already encoded documents, such as
# rendered change events) into replies without re-encoding them.

class RawDoc(bytes):
    """An encoded BSON document, embedded as is by encode_doc/encode_top."""
    __slots__ = ()


_pack_i = struct.Struct('<i').pack
_pack_q = struct.Struct('<q').pack
_pack_d = struct.Struct('<d').pack
_pack_II = struct.Struct('<II').pack
_EPOCH_AWARE = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = datetime.datetime(1970, 1, 1)
_ONE_MS = datetime.timedelta(milliseconds=1)
_INDEX_NAMES = [b'%d\x00' % i for i in range(1024)]
_KEY_NAMES = {}


def _name(key):
    """The element name (key + NUL) as bytes, cached."""
    b = _KEY_NAMES.get(key)
    if b is None:
        if type(key) is not str:
            if not isinstance(key, str):
                raise bson.errors.InvalidDocument('documents must have only string keys, key was %r' % (key,))
            key = str(key)
        if '\x00' in key:
            raise bson.errors.InvalidDocument('BSON keys / regex patterns must not contain a NUL character')
        b = key.encode('utf-8') + b'\x00'
        if len(_KEY_NAMES) < 20000:
            _KEY_NAMES[key] = b
    return b


def _millis(dt):
    if dt.utcoffset() is not None:
        return (dt - _EPOCH_AWARE) // _ONE_MS
    return (dt - _EPOCH_NAIVE) // _ONE_MS


def _el_str(name, v):
    b = v.encode('utf-8')
    return b'\x02' + name + _pack_i(len(b) + 1) + b + b'\x00'


def _el_int(name, v):
    if -2147483648 <= v <= 2147483647:
        return b'\x10' + name + _pack_i(v)
    if -9223372036854775808 <= v <= 9223372036854775807:
        return b'\x12' + name + _pack_q(v)
    return _el_other(name, v)


def _el_other(name, v):
    """Any other type: let bson encode the element."""
    if isinstance(v, RawDoc):
        return b'\x03' + name + v
    if isinstance(v, dict):
        return b'\x03' + name + encode_doc(v)
    enc = bson.encode({name[:-1].decode('utf-8'): v})
    return enc[4:-1]


def _el_list(name, v):
    return b'\x04' + name + _encode_array(v)


_EL = {
    str: _el_str,
    int: _el_int,
    bool: lambda name, v: b'\x08' + name + (b'\x01' if v else b'\x00'),
    float: lambda name, v: b'\x01' + name + _pack_d(v),
    type(None): lambda name, v: b'\x0a' + name,
    dict: lambda name, v: b'\x03' + name + encode_doc(v),
    RawDoc: lambda name, v: b'\x03' + name + v,
    list: _el_list,
    tuple: _el_list,
    datetime.datetime: lambda name, v: b'\x09' + name + _pack_q(_millis(v)),
    ObjectId: lambda name, v: b'\x07' + name + v.binary,
    Int64: lambda name, v: b'\x12' + name + _pack_q(v),
    Timestamp: lambda name, v: b'\x11' + name + _pack_II(v.inc, v.time),
}


def _encode_array(v):
    names = _INDEX_NAMES
    parts = []
    for i, x in enumerate(v):
        name = names[i] if i < 1024 else b'%d\x00' % i
        parts.append(_EL.get(type(x), _el_other)(name, x))
    body = b''.join(parts)
    return _pack_i(len(body) + 5) + body + b'\x00'


def encode_doc(d):
    """BSON of a document, keys in their order (what bson does for embedded documents)."""
    el = _EL
    parts = [el.get(type(v), _el_other)(_name(k), v) for k, v in d.items()]
    body = b''.join(parts)
    return _pack_i(len(body) + 5) + body + b'\x00'


def encode_top(d):
    """BSON of a top-level document: like bson.encode, "_id" goes first."""
    if '_id' in d and next(iter(d)) != '_id':
        d = {'_id': d['_id'], **d}
    return encode_doc(d)


def dcopy(v):
    """Deep copy of a document value: dicts and lists are copied, scalars (immutable) shared."""
    t = type(v)
    if t is dict:
        return {k: dcopy(x) for k, x in v.items()}
    if t is list:
        return [dcopy(x) for x in v]
    if t in _IMMUTABLE:
        return v
    return copy.deepcopy(v)


_IMMUTABLE = frozenset([str, int, bool, float, type(None), datetime.datetime, ObjectId, Int64,
                        Timestamp, bytes])


# --------------------------------------------------------------------------
# document helpers

ID_CHARS = string.ascii_letters + string.digits


_ID_PAIRS = [a + b for a in ID_CHARS for b in ID_CHARS]   # 62 * 62 = 3844


def gen_id(rng=random.SystemRandom()):
    x = rng.randrange(62 ** 10)   # uniform over the 10-character ids
    p = _ID_PAIRS
    x, a = divmod(x, 3844)
    x, b = divmod(x, 3844)
    x, c = divmod(x, 3844)
    x, d = divmod(x, 3844)
    return p[a] + p[b] + p[c] + p[d] + p[x]


def id_key(v):
    """Hashable, type-aware key for an _id value."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return ('b', v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return ('n', v)
    if isinstance(v, ObjectId):
        return ('o', v.binary)
    return ('x', encode_doc({'v': v}))


def same_doc(a, b):
    return encode_top(a) == encode_top(b)


_MISSING = object()


def get_path(doc, path):
    cur = doc
    for part in path.split('.'):
        if isinstance(cur, dict):
            if part not in cur:
                return _MISSING
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit():
            i = int(part)
            if i >= len(cur):
                return _MISSING
            cur = cur[i]
        else:
            return _MISSING
    return cur


def _parent(doc, path, create):
    parts = path.split('.')
    cur = doc
    for part in parts[:-1]:
        if isinstance(cur, dict):
            nxt = cur.get(part, _MISSING)
            if nxt is _MISSING or nxt is None and create:
                if not create:
                    return None, None
                nxt = {}
                cur[part] = nxt
            cur = nxt
        elif isinstance(cur, list) and part.isdigit():
            i = int(part)
            if i >= len(cur):
                if not create:
                    return None, None
                while len(cur) <= i:
                    cur.append(None)
                cur[i] = {}
            cur = cur[i]
        else:
            if not create:
                return None, None
            raise MongoError(28, 'PathNotViable',
                             "Cannot create field in element for path '%s'" % path)
    return cur, parts[-1]


def set_path(doc, path, value):
    parent, last = _parent(doc, path, True)
    if isinstance(parent, list):
        i = int(last)
        while len(parent) <= i:
            parent.append(None)
        parent[i] = value
    else:
        parent[last] = value


def unset_path(doc, path):
    parent, last = _parent(doc, path, False)
    if parent is None:
        return False
    if isinstance(parent, list):
        if last.isdigit() and int(last) < len(parent):
            parent[int(last)] = None
            return True
        return False
    if last in parent:
        del parent[last]
        return True
    return False


def _cmp_key(v):
    if v is None or v is _MISSING:
        return (0, 0)
    if isinstance(v, bool):
        return (5, v)
    if isinstance(v, (int, float)):
        return (1, v)
    if isinstance(v, str):
        return (2, v)
    if isinstance(v, datetime.datetime):
        if v.tzinfo is None:
            v = v.replace(tzinfo=UTC)
        return (6, v.timestamp())
    if isinstance(v, ObjectId):
        return (4, v.binary)
    return (9, repr(v))


def _eq(a, b):
    if isinstance(a, list) and not isinstance(b, list):
        return any(_eq(x, b) for x in a)
    if a is _MISSING:
        return b is None
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        try:
            return same_doc({'v': a}, {'v': b})
        except Exception:
            return a == b
    return _cmp_key(a) == _cmp_key(b) if type(a) != type(b) else a == b


def _cmp(a, b, op):
    vals = a if isinstance(a, list) else [a]
    for x in vals:
        if x is _MISSING:
            continue
        ka, kb = _cmp_key(x), _cmp_key(b)
        if ka[0] != kb[0]:
            continue
        if ((op == '$gt' and ka > kb) or (op == '$gte' and ka >= kb) or
                (op == '$lt' and ka < kb) or (op == '$lte' and ka <= kb)):
            return True
    return False


def match(doc, query):
    for k, cond in query.items():
        if k == '$and':
            if not all(match(doc, q) for q in cond):
                return False
            continue
        if k == '$or':
            if not any(match(doc, q) for q in cond):
                return False
            continue
        if k == '$nor':
            if any(match(doc, q) for q in cond):
                return False
            continue
        if k.startswith('$'):
            raise MongoError(2, 'BadValue', 'unknown top level operator: %s' % k)
        val = get_path(doc, k)
        if isinstance(cond, dict) and cond and all(c.startswith('$') for c in cond):
            for op, arg in cond.items():
                if op == '$eq':
                    ok = _eq(val, arg)
                elif op == '$ne':
                    ok = not _eq(val, arg)
                elif op == '$in':
                    ok = any(_eq(val, a) for a in arg)
                elif op == '$nin':
                    ok = not any(_eq(val, a) for a in arg)
                elif op == '$exists':
                    ok = (val is not _MISSING) == bool(arg)
                elif op in ('$gt', '$gte', '$lt', '$lte'):
                    ok = _cmp(val, arg, op)
                elif op == '$all':
                    ok = isinstance(val, list) and all(_eq(val, a) for a in arg)
                elif op == '$size':
                    ok = isinstance(val, list) and len(val) == arg
                else:
                    raise MongoError(2, 'BadValue', 'unsupported query operator: %s' % op)
                if not ok:
                    return False
        else:
            if not _eq(val, cond):
                return False
    return True


def apply_update(old, upd, inserting):
    """Apply an operator update to a copy of old. Returns (new, updated, removed)."""
    new = dcopy(old)
    updated = {}
    removed = []
    for op, fields in upd.items():
        if not isinstance(fields, dict):
            raise MongoError(9, 'FailedToParse', 'Modifiers operate on fields but we found type %s instead' % type(fields).__name__)
        for path, arg in fields.items():
            if path == '_id' or path.startswith('_id.'):
                if op in ('$set', '$setOnInsert') and _eq(old.get('_id'), arg):
                    continue
                raise MongoError(66, 'ImmutableField', "Performing an update on the path '_id' would modify the immutable field '_id'")
            cur = get_path(new, path)
            if op == '$set':
                set_path(new, path, arg)
                updated[path] = arg
            elif op == '$setOnInsert':
                if inserting:
                    set_path(new, path, arg)
            elif op == '$unset':
                if unset_path(new, path):
                    removed.append(path)
            elif op in ('$inc', '$mul'):
                base = 0 if cur is _MISSING or cur is None else cur
                if not isinstance(base, (int, float)):
                    raise MongoError(14, 'TypeMismatch', 'Cannot apply %s to a value of non-numeric type' % op)
                v = base + arg if op == '$inc' else base * arg
                if cur is _MISSING and op == '$mul':
                    v = 0
                set_path(new, path, v)
                updated[path] = v
            elif op == '$currentDate':
                v = datetime.datetime.now(UTC).replace(microsecond=datetime.datetime.now().microsecond // 1000 * 1000)
                set_path(new, path, v)
                updated[path] = v
            elif op in ('$push', '$addToSet'):
                items = arg['$each'] if isinstance(arg, dict) and '$each' in arg else [arg]
                if cur is _MISSING or cur is None:
                    arr = []
                    for it in items:
                        if op == '$push' or not any(_eq(x, it) and same_doc({'v': x}, {'v': it}) for x in arr):
                            arr.append(it)
                    set_path(new, path, arr)
                    updated[path] = arr
                elif not isinstance(cur, list):
                    raise MongoError(2, 'BadValue', 'The field %s must be an array' % path)
                else:
                    start = len(cur)
                    for it in items:
                        if op == '$push' or not any(same_doc({'v': x}, {'v': it}) for x in cur):
                            cur.append(it)
                    for i in range(start, len(cur)):
                        updated['%s.%d' % (path, i)] = cur[i]
            elif op in ('$pullAll', '$pull'):
                if isinstance(cur, list):
                    if op == '$pullAll':
                        keep = [x for x in cur if not any(same_doc({'v': x}, {'v': a}) for a in arg)]
                    elif isinstance(arg, dict) and arg and all(k.startswith('$') for k in arg):
                        keep = [x for x in cur if not match({'v': x}, {'v': arg})]
                    else:
                        keep = [x for x in cur if not same_doc({'v': x}, {'v': arg})]
                    if len(keep) != len(cur):
                        set_path(new, path, keep)
                        updated[path] = keep
            elif op == '$rename':
                if cur is not _MISSING:
                    unset_path(new, path)
                    removed.append(path)
                    set_path(new, arg, cur)
                    updated[arg] = cur
            else:
                raise MongoError(9, 'FailedToParse', 'Unknown modifier: %s' % op)
    return new, updated, removed


def is_operator_update(u):
    return isinstance(u, dict) and len(u) > 0 and all(k.startswith('$') for k in u)


def project(doc, proj):
    if not proj:
        return doc
    incl = [k for k, v in proj.items() if k != '_id' and v]
    excl = [k for k, v in proj.items() if k != '_id' and not v]
    keep_id = proj.get('_id', 1)
    if incl:
        out = {}
        if keep_id and '_id' in doc:
            out['_id'] = doc['_id']
        for k in incl:
            v = get_path(doc, k)
            if v is not _MISSING:
                set_path(out, k, dcopy(v))
        return out
    out = dcopy(doc)
    for k in excl:
        unset_path(out, k)
    if not keep_id:
        out.pop('_id', None)
    return out


# --------------------------------------------------------------------------
# resume tokens: {"_data": "82" + 16 hex digits of the oplog index + kind}
# kind "01" = the token of an event, "00" = a high-water mark (postBatchResumeToken)

def make_token(idx, event):
    return {'_data': '82%016X%s' % (idx, '01' if event else '00')}


def parse_token(tok):
    try:
        data = tok['_data']
        if not (isinstance(data, str) and len(data) == 20 and data.startswith('82')):
            raise ValueError
        return int(data[2:18], 16), data[18:] == '01'
    except Exception:
        raise MongoError(260, 'InvalidResumeToken', 'Invalid resume token: %r' % (tok,))


# --------------------------------------------------------------------------
# state

class Entry(object):
    # ts: (seconds, counter) of clusterTime; wall_ms: wallTime in ms since the epoch
    __slots__ = ('idx', 'ts', 'wall_ms', 'op', 'db', 'coll', 'id', 'doc', 'ud',
                 'pre', 'post', 'invalidates', 'raw_doc', 'raw')

    def __init__(self, op, db, coll, id=_MISSING, doc=None, ud=None, pre=None, post=None,
                 invalidates=False, raw_doc=None):
        self.op = op
        self.db = db
        self.coll = coll
        self.id = id
        self.doc = doc
        self.ud = ud
        self.pre = pre
        self.post = post
        self.invalidates = invalidates
        self.raw_doc = raw_doc    # encode_doc(doc), if the writer already has it
        self.raw = None           # rendered events: {variant: RawDoc}


# the parts of a change event that are the same for every event
_E_ID = b'\x03_id\x00' + _pack_i(37) + b'\x02_data\x00' + _pack_i(21)   # + 20 chars + b'\0\0'
_E_OPS = {}   # operationType -> its element
_E_CT = b'\x11clusterTime\x00'
_E_WT = b'\x09wallTime\x00'
_E_FD = b'\x03fullDocument\x00'
_E_FD_NULL = b'\x0afullDocument\x00'
_E_PRE = b'\x03fullDocumentBeforeChange\x00'
_E_PRE_NULL = b'\x0afullDocumentBeforeChange\x00'
_E_NS = b'\x03ns\x00'
_E_UD = b'\x03updateDescription\x00'
_E_DK = b'\x03documentKey\x00'


def _raw_event(parts):
    body = b''.join(parts)
    return RawDoc(_pack_i(len(body) + 5) + body + b'\x00')


class Cursor(object):
    def __init__(self, cid, db, coll, pos, full_doc, before):
        self.id = cid
        self.db = db
        self.coll = coll            # None = whole database
        self.pos = pos
        self.full_doc = full_doc
        self.before = before
        self.conn = None
        self.ns = '%s.%s' % (db, coll) if coll else '%s.$cmd.aggregate' % db
        self.stat_ns = '%s.%s' % (db, coll if coll else '*')
        # how this cursor renders an event (see Store._event): fullDocument of
        # an update: 0 = none, 1 = post-image, 2 = looked up; pre-image: 0/1
        self.fd_mode = {'updateLookup': 2, 'whenAvailable': 1, 'required': 1}.get(full_doc, 0)
        self.pre_mode = 1 if before in ('whenAvailable', 'required') else 0


class Fault(object):
    def __init__(self, kind, db, coll, count, on):
        self.kind = kind
        self.db = db
        self.coll = coll
        self.count = count
        self.on = on


class Delay(object):
    """Slows one command down (control /delay): before_ms before it is run,
    after_ms between running it and sending its reply."""
    def __init__(self, coll, before_ms, after_ms, count):
        self.coll = coll
        self.before_ms = before_ms
        self.after_ms = after_ms
        self.count = count        # commands left to delay; None: until changed


class Conn(object):
    def __init__(self, sock, cid):
        self.sock = sock
        self.id = cid
        self.prefetch = None   # (cursor, limit) to render ahead after the reply is sent


class Store(object):
    """All state, guarded by one lock (self.lock; `with self.cv` takes it).

    A getMore that waits for events waits on the condition of its namespace
    ((db, coll), or (db, None) for a database-wide stream), which shares that
    lock: a write wakes only the streams of its collection (and of its
    database), not every idle stream.

    Stored documents are never changed in place (updates copy), so events and
    documents may share them, and their encoded BSON can be cached.
    """

    def __init__(self, rs, images_default, max_wire):
        self.rs = rs
        self.images_default = images_default
        self.max_wire = max_wire
        self.port = 0
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.conds = {}       # (db, coll or None) -> Condition(self.lock)
        self.colls = {}       # (db, coll) -> {idkey: doc}
        self.images = {}      # (db, coll) -> [pre, post]
        self.oplog = []       # oplog[i] has idx == base + i
        self.base = 1
        self.next_idx = 1
        self.min_valid = 0    # resume positions < min_valid are lost
        # (seconds, counter) of the last write; the counter starts at 1 so that
        # op_time() (a snapshot's atClusterTime) is never equal to the
        # clusterTime of a later write
        self.last_ts = (int(time.time()), 1)
        self.cursors = {}
        self.orphaned = set()
        self.faults = []
        self.stats_aggregates = {}
        self.getmores = 0
        self.killcursors = 0
        self.conns_open = 0
        self.conns_total = 0
        self.faults_fired = 0
        self.stopping = False
        self.rng = random.Random()
        self.raw_ns = {}      # (db, coll) -> the ns element of its events
        self.delays = {}      # command name -> Delay (see /delay)
        self.delays_applied = 0

    # -- wake-ups (call with the lock held) ---------------------------------
    def cond(self, db, coll):
        c = self.conds.get((db, coll))
        if c is None:
            c = self.conds[(db, coll)] = threading.Condition(self.lock)
        return c

    def wake(self, db, coll):
        """Wakes the getMores waiting on (db, coll) and on the whole of db."""
        c = self.conds.get((db, coll))
        if c is not None:
            c.notify_all()
        c = self.conds.get((db, None))
        if c is not None:
            c.notify_all()

    def wake_all(self):
        for c in self.conds.values():
            c.notify_all()

    # -- oplog -------------------------------------------------------------
    def _next_ts(self, now):
        t, i = self.last_ts
        if now > t:
            self.last_ts = (now, 1)
        else:
            self.last_ts = (t, i + 1)
        return self.last_ts

    def op_time(self):
        """The cluster time of the last write: every event with a clusterTime
        <= it is in the data, every later write gets a greater one."""
        return Timestamp(*self.last_ts)

    def _append(self, e, notify=True):
        e.idx = self.next_idx
        self.next_idx += 1
        ms = time.time_ns() // 1000000
        e.ts = self._next_ts(ms // 1000)
        e.wall_ms = ms
        self.oplog.append(e)
        if notify:
            self.wake(e.db, e.coll)
        return e

    def _entry(self, idx):
        i = idx - self.base
        if 0 <= i < len(self.oplog):
            return self.oplog[i]
        return None

    def _imgs(self, db, coll):
        return self.images.get((db, coll)) or [self.images_default, self.images_default]

    def _coll(self, db, coll, create):
        c = self.colls.get((db, coll))
        if c is None and create:
            c = self.colls[(db, coll)] = {}
        return c

    # -- writes (call with the lock held) -------------------------------------
    def w_insert(self, db, coll, doc, notify=True, owned=False):
        """owned: doc is a fresh object nobody else changes (no copy is made)."""
        if '_id' not in doc:
            doc = {'_id': gen_id(self.rng), **doc}
        c = self._coll(db, coll, True)
        k = id_key(doc['_id'])
        if k in c:
            raise MongoError(11000, 'DuplicateKey',
                             'E11000 duplicate key error collection: %s.%s index: _id_ dup key: { _id: %r }' % (db, coll, doc['_id']))
        if not owned:
            doc = dcopy(doc)
        c[k] = doc
        pre, post = self._imgs(db, coll)
        return self._append(Entry('insert', db, coll, id=doc['_id'], doc=doc,
                                  post=doc if post else None), notify)

    def w_replace(self, db, coll, old, new):
        c = self._coll(db, coll, True)
        new = dcopy(new)
        if old is not None:
            new = {'_id': old['_id'], **{k: v for k, v in new.items() if k != '_id'}}
        c[id_key(new['_id'])] = new
        pre, post = self._imgs(db, coll)
        if old is None:
            return self._append(Entry('insert', db, coll, id=new['_id'], doc=new,
                                      post=new if post else None))
        return self._append(Entry('replace', db, coll, id=new['_id'], doc=new,
                                  pre=old if pre else None, post=new if post else None))

    def w_update(self, db, coll, old, upd, upsert_id=_MISSING):
        """old: the current doc (or None for an upsert insert)."""
        inserting = old is None
        base = old if old is not None else {'_id': upsert_id}
        new, updated, removed = apply_update(base, upd, inserting)
        if inserting:
            if '_id' not in new:
                new = {'_id': ObjectId(), **new}
            return self.w_insert(db, coll, new, owned=True)
        if same_doc(old, new):
            return None
        c = self._coll(db, coll, True)
        c[id_key(new['_id'])] = new
        pre, post = self._imgs(db, coll)
        ud = {'updatedFields': updated, 'removedFields': removed, 'truncatedArrays': []}
        return self._append(Entry('update', db, coll, id=new['_id'], ud=ud,
                                  pre=old if pre else None, post=new if post else None))

    def w_delete(self, db, coll, doc):
        c = self._coll(db, coll, False)
        del c[id_key(doc['_id'])]
        pre, post = self._imgs(db, coll)
        return self._append(Entry('delete', db, coll, id=doc['_id'], pre=doc if pre else None))

    def w_bulk(self, db, coll, n, tpl):
        """Inserts {_id: <generated>, n: i, **tpl} for i < n (tpl has no _id),
        waking the streams once. Returns the first and last entries.

        The documents share the template's values (stored documents are never
        changed in place), and their BSON is spliced from the template's."""
        tpl = dcopy(tpl)
        raw_tpl = None if 'n' in tpl else encode_doc(tpl)[4:-1]
        rng = self.rng
        c = self._coll(db, coll, True)
        post = self._imgs(db, coll)[1]
        append = self._append
        first = last = None
        for i in range(n):
            _id = gen_id(rng)
            doc = {'_id': _id, 'n': i, **tpl}
            raw = None
            if raw_tpl is not None:
                body = b''.join((_el_str(b'_id\x00', _id), _el_int(b'n\x00', i), raw_tpl))
                raw = _pack_i(len(body) + 5) + body + b'\x00'
            if _id in c:
                self.w_insert(db, coll, doc)   # duplicate key: raises
            c[_id] = doc
            last = append(Entry('insert', db, coll, _id, doc, None, None, doc if post else None,
                                False, raw), False)
            if first is None:
                first = last
        self.wake(db, coll)
        return first, last

    def w_drop(self, db, coll):
        self.colls.pop((db, coll), None)
        e = self._append(Entry('drop', db, coll), False)
        self._append(Entry('invalidate', db, coll, invalidates=True))
        return e

    def find_docs(self, db, coll, filt):
        c = self.colls.get((db, coll))
        if not c:
            return []
        if filt and len(filt) == 1 and '_id' in filt and not (
                isinstance(filt['_id'], dict) and any(k.startswith('$') for k in filt['_id'])):
            d = c.get(id_key(filt['_id']))
            return [d] if d is not None else []
        if not filt:
            return list(c.values())
        return [d for d in c.values() if match(d, filt)]

    # -- delays ------------------------------------------------------------
    def take_delay(self, cmd, coll):
        """The Delay for this command on coll, if one applies (counts it)."""
        with self.cv:
            d = self.delays.get(cmd)
            if d is None or (d.coll is not None and d.coll != coll):
                return None
            if d.count is not None:
                if d.count <= 0:
                    return None
                d.count -= 1
            self.delays_applied += 1
            return d

    # -- faults ------------------------------------------------------------
    def take_fault(self, where, db, coll):
        if not self.faults:
            return None
        for f in self.faults:
            if f.count <= 0:
                continue
            if where not in f.on:
                continue
            if f.coll is not None and (f.coll != coll or f.db != db):
                continue
            f.count -= 1
            self.faults = [x for x in self.faults if x.count > 0]
            self.faults_fired += 1
            log('fault %s fired on %s %s.%s' % (f.kind, where, db, coll))
            return f
        return None

    def raise_fault(self, f):
        if f.kind == 'drop_connection':
            raise Hangup()
        if f.kind == 'resumable_error':
            raise MongoError(6, 'HostUnreachable', 'injected', ['ResumableChangeStreamError'])
        if f.kind == 'history_lost':
            raise history_lost()
        if f.kind == 'fatal':
            raise MongoError(2, 'BadValue', 'injected fatal')
        raise MongoError(1, 'InternalError', 'unknown fault %s' % f.kind)

    # -- change streams ----------------------------------------------------
    def _event(self, e, cur):
        """The change event of oplog entry e for cursor cur, as a RawDoc.

        e is one the cursor sees (its db and collection, not a noop, not an
        invalidate for a database-wide stream). Rendered events are cached on
        the entry by variant, except updates with updateLookup (the document
        is read when the reply is built)."""
        op = e.op
        if op == 'update':
            fd = cur.fd_mode
            if fd == 1 and e.post is None and cur.full_doc == 'required':
                raise MongoError(280, 'ChangeStreamFatalError',
                                 'Change stream was configured to require a post-image for all update, '
                                 'delete and replace events, but the post-image was not found for event: '
                                 '%s' % make_token(e.idx, True)['_data'])
            pre = cur.pre_mode
        elif op == 'replace' or op == 'delete':
            fd = 0
            pre = cur.pre_mode
        else:
            fd = pre = 0
        if pre and e.pre is None and cur.before == 'required':
            raise MongoError(280, 'ChangeStreamFatalError',
                             'Change stream was configured to require a pre-image for all update, '
                             'delete and replace events, but the pre-image was not found for event: '
                             '%s' % make_token(e.idx, True)['_data'])
        variant = fd * 2 + pre
        if e.raw is not None:
            ev = e.raw.get(variant)
            if ev is not None:
                return ev
        ev = self._render(e, fd, pre)
        if fd != 2:
            if e.raw is None:
                e.raw = {variant: ev}
            else:
                e.raw[variant] = ev
        return ev

    def _render(self, e, fd, pre):
        op = e.op
        ts_time, ts_inc = e.ts
        opel = _E_OPS.get(op)
        if opel is None:
            opel = _E_OPS[op] = _el_str(b'operationType\x00', op)
        parts = [_E_ID, b'82%016X01\x00\x00' % e.idx, opel,
                 _E_CT, _pack_II(ts_inc, ts_time),
                 _E_WT, _pack_q(e.wall_ms)]
        if op == 'invalidate':
            return _raw_event(parts)
        ns = self.raw_ns.get((e.db, e.coll))
        if ns is None:
            ns = self.raw_ns[(e.db, e.coll)] = _E_NS + encode_doc({'db': e.db, 'coll': e.coll})
        if op == 'drop':
            parts.append(ns)
            return _raw_event(parts)
        if op == 'insert' or op == 'replace':
            if e.raw_doc is None:
                e.raw_doc = encode_doc(e.doc)
            parts.append(_E_FD)
            parts.append(e.raw_doc)
        elif op == 'update' and fd:
            if fd == 2:
                c = self.colls.get((e.db, e.coll))
                d = c.get(id_key(e.id)) if c else None
            else:
                d = e.post
            if d is None:
                parts.append(_E_FD_NULL)
            else:
                parts.append(_E_FD)
                parts.append(encode_doc(d))
        parts.append(ns)
        parts.append(_E_DK)
        v = e.id
        body = _EL.get(type(v), _el_other)(b'_id\x00', v)
        parts.append(_pack_i(len(body) + 5))
        parts.append(body)
        parts.append(b'\x00')
        if op == 'update':
            parts.append(_E_UD)
            parts.append(encode_doc(e.ud))
        if pre and op != 'insert':
            if e.pre is None:
                parts.append(_E_PRE_NULL)
            else:
                parts.append(_E_PRE)
                parts.append(encode_doc(e.pre))
        return _raw_event(parts)

    def collect(self, cur, limit, max_bytes=8 * 1024 * 1024):
        """Events after cur.pos, as RawDocs. Returns (batch, invalidated, last_was_event)."""
        batch = []
        size = 0
        oplog = self.oplog
        i = max(cur.pos + 1 - self.base, 0)
        n = len(oplog)
        db, coll = cur.db, cur.coll
        last_event = False
        while i < n and len(batch) < limit:
            e = oplog[i]
            if (e.db != db or (coll is not None and e.coll != coll) or e.op == 'noop'
                    or (coll is None and e.op == 'invalidate')):
                # not for this stream: skip without a function call
                cur.pos = e.idx
                last_event = False
                i += 1
                continue
            try:
                ev = self._event(e, cur)
            except MongoError:
                if batch:
                    break
                raise
            if max_bytes and batch:
                size += len(ev)
                if size > max_bytes:
                    break
            batch.append(ev)
            cur.pos = e.idx
            last_event = True
            if e.op == 'invalidate':
                return batch, True, True
            i += 1
        if i >= n:
            # scanned to the end: position is the current end of the oplog
            if cur.pos < self.next_idx - 1:
                cur.pos = self.next_idx - 1
                last_event = False
        return batch, False, last_event

    def new_cursor_id(self):
        while True:
            cid = self.rng.randint(1, 2 ** 62)
            if cid not in self.cursors:
                return cid

    def open_cursors_by_ns(self):
        out = {}
        for c in self.cursors.values():
            out[c.stat_ns] = out.get(c.stat_ns, 0) + 1
        return out

    def prefetch(self, cur, limit, sock, chunk=128, max_bytes=8 * 1024 * 1024):
        """Renders (into the entries' caches) the events that the next getMore
        of cur will return, while its client is busy with the reply just sent,
        so that getMore only splices them. Takes the lock a chunk at a time, and
        stops as soon as the client's next request arrives. cur.pos is not moved."""
        pos = cur.pos
        done = size = 0
        lookup = cur.fd_mode == 2
        db, coll = cur.db, cur.coll
        while done < limit and size <= max_bytes:
            try:
                if select.select([sock], [], [], 0)[0]:
                    return   # the next request is here: serve it
            except (OSError, ValueError):
                return
            with self.lock:
                if self.stopping or self.cursors.get(cur.id) is not cur:
                    return
                oplog = self.oplog
                i = max(pos + 1 - self.base, 0)
                end = min(len(oplog), i + chunk)
                if i >= end:
                    return
                while i < end and done < limit:
                    e = oplog[i]
                    i += 1
                    pos = e.idx
                    if (e.db != db or (coll is not None and e.coll != coll) or e.op == 'noop'
                            or (coll is None and e.op == 'invalidate')):
                        continue
                    done += 1
                    if lookup and e.op == 'update':
                        continue   # not cached: rendered when the reply is built
                    try:
                        size += len(self._event(e, cur))
                    except Exception:
                        return   # the getMore itself will report it
                    if e.op == 'invalidate':
                        return

    def kill_cursor(self, cid, orphan=False):
        c = self.cursors.pop(cid, None)
        if c is not None:
            if orphan:
                self.orphaned.add(cid)
            # a getMore blocked on it returns "cursor not found" now
            cc = self.conds.get((c.db, c.coll))
            if cc is not None:
                cc.notify_all()
        return c


# --------------------------------------------------------------------------
# wire protocol

class Server(mockupdb.MockupDB):
    """MockupDB with our own per-connection loop: no global lock, no queue."""

    def __init__(self, store, port, handler):
        mockupdb.MockupDB.__init__(self, port=port)
        self.store = store
        self.handler = handler

    def _server_loop(self, client, client_addr):
        st = self.store
        with st.cv:
            st.conns_open += 1
            st.conns_total += 1
            conn = Conn(client, st.conns_total)
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        vlog('connection %d from %s' % (conn.id, client_addr))
        try:
            while not self._stopped:
                try:
                    request = mockupdb.mock_server_receive_request(client, self)
                except (OSError, EOFError):
                    break
                except Exception as exc:
                    log('error: cannot parse request: %r' % (exc,))
                    break
                try:
                    self.handler(request, conn)
                except Hangup:
                    try:
                        client.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    break
                except OSError:
                    break
                except Exception:
                    log('error: handler crashed:\n' + traceback.format_exc())
                    break
        finally:
            with st.cv:
                st.conns_open -= 1
                # a cursor whose connection is gone is orphaned (libmongoc cannot use it any more)
                for cid in [c.id for c in st.cursors.values() if c.conn is conn]:
                    st.kill_cursor(cid, orphan=True)
            try:
                client.close()
            except OSError:
                pass
            vlog('connection %d closed' % conn.id)


_reply_ids = itertools.count(1)


def send_op_msg(conn, request, doc):
    payload = encode_top(doc)
    data = b'\x00\x00\x00\x00\x00' + payload
    conn.sock.sendall(struct.pack('<iiii', 16 + len(data), next(_reply_ids) & 0x7fffffff,
                                  request.request_id, OP_MSG) + data)


def send_op_reply(conn, request, doc):
    payload = encode_top(doc)
    data = struct.pack('<iqii', 0, 0, 0, 1) + payload
    conn.sock.sendall(struct.pack('<iiii', 16 + len(data), next(_reply_ids) & 0x7fffffff,
                                  request.request_id, OP_REPLY) + data)


class Wire(object):
    def __init__(self, store):
        self.st = store

    def handle(self, request, conn):
        if isinstance(request, mockupdb.OpMsg):
            cmd = dict(request.doc)
            db = cmd.get('$db', 'admin')
            reply = self.run(cmd, db, conn)
            if request.flags & MORE_TO_COME:
                conn.prefetch = None
                return
            send_op_msg(conn, request, reply)
            if conn.prefetch is not None:
                cur, limit = conn.prefetch
                conn.prefetch = None
                self.st.prefetch(cur, limit, conn.sock)
        elif isinstance(request, mockupdb.Command):
            cmd = dict(request.doc)
            if '$query' in cmd:
                cmd = dict(cmd['$query'])
            vlog('conn %d: legacy OP_QUERY command %s' % (conn.id, next(iter(cmd), '')))
            reply = self.run(cmd, request.namespace, conn)
            conn.prefetch = None
            send_op_reply(conn, request, reply)
        elif isinstance(request, mockupdb.OpQuery):
            send_op_reply(conn, request, {'$err': 'legacy OP_QUERY not supported', 'code': 352, 'ok': 0})
        elif isinstance(request, mockupdb.OpGetMore):
            send_op_reply(conn, request, {'$err': 'legacy OP_GET_MORE not supported', 'code': 352, 'ok': 0})
        else:
            log('error: unsupported opcode %r' % (request,))

    def run(self, cmd, db, conn):
        name = next(iter(cmd)) if cmd else ''
        vlog('conn %d: %s %s' % (conn.id, db, name))
        try:
            fn = self.COMMANDS.get(name) or self.COMMANDS.get(name.lower())
            if fn is None:
                raise MongoError(59, 'CommandNotFound', 'no such command: %s' % name)
            reply = fn(self, cmd, db, conn)
            reply.setdefault('ok', 1.0)
            return reply
        except MongoError as exc:
            if exc.code in (59, 2, 9, 14, 28, 1) and 'injected' not in exc.errmsg:
                log('error: conn %d: %s.%s -> %d %s' % (conn.id, db, name, exc.code, exc.errmsg))
            else:
                vlog('conn %d: %s -> error %d' % (conn.id, name, exc.code))
            return exc.doc()

    # ---- handshake & misc
    def c_hello(self, cmd, db, conn):
        st = self.st
        me = '127.0.0.1:%d' % st.port
        now = datetime.datetime.now(UTC)
        return {
            'helloOk': True,
            'ismaster': True, 'isWritablePrimary': True, 'secondary': False,
            'setName': st.rs, 'setVersion': 1,
            'hosts': [me], 'primary': me, 'me': me,
            'electionId': ObjectId('7fffffff0000000000000001'),
            'minWireVersion': 0, 'maxWireVersion': st.max_wire,
            'logicalSessionTimeoutMinutes': 30,
            'maxBsonObjectSize': 16777216, 'maxMessageSizeBytes': 48000000,
            'maxWriteBatchSize': 100000,
            'localTime': now.replace(microsecond=now.microsecond // 1000 * 1000),
            'connectionId': conn.id,
            'readOnly': False,
            'ok': 1.0,
        }

    def c_ok(self, cmd, db, conn):
        return {'ok': 1.0}

    def c_buildinfo(self, cmd, db, conn):
        return {'version': '6.0.0', 'versionArray': [6, 0, 0, 0], 'gitVersion': 'mockmongo',
                'bits': 64, 'maxBsonObjectSize': 16777216, 'ok': 1.0}

    def c_kill_cursors(self, cmd, db, conn):
        st = self.st
        killed, missing = [], []
        with st.cv:
            st.killcursors += 1
            for cid in cmd.get('cursors', []):
                if st.kill_cursor(int(cid)) is not None:
                    killed.append(Int64(cid))
                else:
                    missing.append(Int64(cid))
        return {'cursorsKilled': killed, 'cursorsNotFound': missing, 'cursorsAlive': [],
                'cursorsUnknown': [], 'ok': 1.0}

    # ---- change streams
    def c_aggregate(self, cmd, db, conn):
        st = self.st
        pipeline = cmd.get('pipeline') or []
        if not pipeline or '$changeStream' not in pipeline[0]:
            raise MongoError(2, 'BadValue', 'mockmongo only supports $changeStream aggregations')
        cs = pipeline[0]['$changeStream'] or {}
        coll = cmd['aggregate']
        if not isinstance(coll, str):
            coll = None
        if cs.get('allChangesForCluster'):
            raise MongoError(2, 'BadValue', 'mockmongo: cluster-wide change streams not supported')
        full_doc = cs.get('fullDocument', 'default')
        before = cs.get('fullDocumentBeforeChange', 'off')
        if full_doc not in ('default', 'updateLookup', 'whenAvailable', 'required'):
            raise MongoError(2, 'BadValue', "unknown fullDocument mode '%s'" % full_doc)
        if before not in ('off', 'whenAvailable', 'required'):
            raise MongoError(2, 'BadValue', "unknown fullDocumentBeforeChange mode '%s'" % before)
        n_opts = sum(1 for k in ('resumeAfter', 'startAfter', 'startAtOperationTime') if k in cs)
        if n_opts > 1:
            raise MongoError(50865 if 'startAfter' in cs else 40674, 'Location',
                             'Only one type of resume option is allowed, but multiple were found.')
        batch_size = (cmd.get('cursor') or {}).get('batchSize')
        limit = 101 if batch_size is None else int(batch_size)   # server default first batch
        with st.cv:
            ns_key = '%s.%s' % (db, coll if coll else '*')
            st.stats_aggregates[ns_key] = st.stats_aggregates.get(ns_key, 0) + 1
            f = st.take_fault('aggregate', db, coll)
            if f:
                st.raise_fault(f)
            if 'resumeAfter' in cs or 'startAfter' in cs:
                tok = cs.get('resumeAfter', cs.get('startAfter'))
                pos, is_event = parse_token(tok)
                if pos < st.min_valid:
                    raise history_lost()
                if 'resumeAfter' in cs and is_event:
                    e = st._entry(pos)
                    if e is not None and e.op == 'invalidate':
                        raise MongoError(260, 'InvalidResumeToken',
                                         'Attempting to resume a change stream using \'resumeAfter\' is not '
                                         'allowed from an invalidate notification.')
            elif 'startAtOperationTime' in cs:
                ts = cs['startAtOperationTime']
                if not isinstance(ts, Timestamp):
                    raise MongoError(14, 'TypeMismatch', 'startAtOperationTime must be a Timestamp')
                pos = st.base - 1
                for e in st.oplog:
                    if e.ts < (ts.time, ts.inc):
                        pos = e.idx
                    else:
                        break
                if pos < st.min_valid:
                    first = st._entry(st.min_valid)
                    if first is not None and (ts.time, ts.inc) < first.ts:
                        raise history_lost()
                    pos = st.min_valid
            else:
                pos = st.next_idx - 1
            cid = st.new_cursor_id()
            cur = Cursor(cid, db, coll, pos, full_doc, before)
            cur.conn = conn
            batch, invalidated, last_event = st.collect(cur, limit) if limit > 0 else ([], False, False)
            if not invalidated:
                st.cursors[cid] = cur
                if batch:
                    conn.prefetch = (cur, 1000)
            reply = {'cursor': {'id': Int64(0 if invalidated else cid), 'ns': cur.ns,
                                'firstBatch': batch,
                                'postBatchResumeToken': make_token(cur.pos, last_event)},
                     'operationTime': st.op_time(), 'ok': 1.0}
        return reply

    def c_getmore(self, cmd, db, conn):
        st = self.st
        cid = int(cmd['getMore'])
        with st.cv:
            cur0 = st.cursors.get(cid)
        delay = st.take_delay('getMore', cur0.coll if cur0 else None)
        if delay and delay.before_ms:
            time.sleep(delay.before_ms / 1000.0)
        batch_size = cmd.get('batchSize')
        limit = 1000 if not batch_size else int(batch_size)
        max_time = cmd.get('maxTimeMS')
        max_time = 1.0 if max_time is None else int(max_time) / 1000.0
        with st.cv:
            st.getmores += 1
            cur = st.cursors.get(cid)
            if cur is None:
                labels = ['ResumableChangeStreamError'] if cid in st.orphaned else None
                raise MongoError(43, 'CursorNotFound', 'cursor id %d not found' % cid, labels)
            cur.conn = conn
            deadline = time.monotonic() + max_time
            while True:
                f = st.take_fault('getMore', cur.db, cur.coll)
                if f:
                    if f.kind == 'drop_connection':
                        st.kill_cursor(cid, orphan=True)
                    else:
                        st.kill_cursor(cid)
                    st.raise_fault(f)
                if st.cursors.get(cid) is not cur:
                    raise MongoError(43, 'CursorNotFound', 'cursor id %d not found (killed)' % cid)
                try:
                    batch, invalidated, last_event = st.collect(cur, limit)
                except MongoError:
                    st.kill_cursor(cid)
                    raise
                if batch or st.stopping:
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                st.cond(cur.db, cur.coll).wait(remaining)
            if invalidated:
                st.kill_cursor(cid)
            elif batch:
                conn.prefetch = (cur, limit)
            reply = {'cursor': {'id': Int64(0 if invalidated else cid), 'ns': cur.ns,
                                'nextBatch': batch,
                                'postBatchResumeToken': make_token(cur.pos, last_event)},
                     'operationTime': st.op_time(), 'ok': 1.0}
        return reply

    # ---- CRUD
    def c_find(self, cmd, db, conn):
        st = self.st
        coll = cmd['find']
        filt = cmd.get('filter') or {}
        rc = cmd.get('readConcern') or {}
        level = rc.get('level')
        if level not in (None, 'local', 'majority', 'available', 'linearizable', 'snapshot'):
            raise MongoError(9, 'FailedToParse', "readConcern level '%s' is not supported" % level)
        delay = st.take_delay('find', coll)
        if delay and delay.before_ms:
            time.sleep(delay.before_ms / 1000.0)
        with st.cv:
            docs = st.find_docs(db, coll, filt)
            # readConcern snapshot (MongoDB 5+): the reply names the point in
            # time that was read; every change event with a clusterTime <= it
            # is in docs, every later one is not
            at = st.op_time() if level == 'snapshot' else None
        sort = cmd.get('sort')
        if sort:
            for k, d in reversed(list(sort.items())):
                docs = sorted(docs, key=lambda x: _cmp_key(get_path(x, k)), reverse=(d < 0))
        skip = int(cmd.get('skip') or 0)
        limit = abs(int(cmd.get('limit') or 0))
        docs = docs[skip:]
        if limit:
            docs = docs[:limit]
        proj = cmd.get('projection')
        if proj:
            docs = [project(d, proj) for d in docs]
        if delay and delay.after_ms:
            # the snapshot is taken: writes made meanwhile are after it
            time.sleep(delay.after_ms / 1000.0)
        cursor = {'id': Int64(0), 'ns': '%s.%s' % (db, coll), 'firstBatch': docs}
        if at is not None:
            cursor['atClusterTime'] = at
        return {'cursor': cursor, 'ok': 1.0}

    def c_insert(self, cmd, db, conn):
        st = self.st
        coll = cmd['insert']
        docs = cmd.get('documents') or []
        ordered = cmd.get('ordered', True)
        n = 0
        errors = []
        with st.cv:
            for i, d in enumerate(docs):
                try:
                    st.w_insert(db, coll, d)
                    n += 1
                except MongoError as exc:
                    errors.append({'index': i, 'code': exc.code, 'errmsg': exc.errmsg})
                    if ordered:
                        break
        r = {'n': n, 'ok': 1.0}
        if errors:
            r['writeErrors'] = errors
        return r

    def c_update(self, cmd, db, conn):
        st = self.st
        coll = cmd['update']
        ordered = cmd.get('ordered', True)
        n = nmod = 0
        upserted = []
        errors = []
        with st.cv:
            for i, u in enumerate(cmd.get('updates') or []):
                try:
                    q = u.get('q') or {}
                    upd = u.get('u')
                    if isinstance(upd, list):
                        raise MongoError(2, 'BadValue', 'mockmongo: pipeline updates not supported')
                    docs = st.find_docs(db, coll, q)
                    if not u.get('multi'):
                        docs = docs[:1]
                    if not docs:
                        if u.get('upsert'):
                            seed = {k: v for k, v in q.items()
                                    if not k.startswith('$') and not (isinstance(v, dict) and any(x.startswith('$') for x in v))}
                            if is_operator_update(upd):
                                sid = seed.get('_id', _MISSING)
                                base_upd = {'$set': {k: v for k, v in seed.items() if k != '_id'}}
                                merged = dict(upd)
                                if base_upd['$set']:
                                    merged = {'$set': {**base_upd['$set'], **upd.get('$set', {})},
                                              **{k: v for k, v in upd.items() if k != '$set'}}
                                if sid is _MISSING:
                                    sid = ObjectId()
                                e = st.w_update(db, coll, None, merged, upsert_id=sid)
                            else:
                                nd = dict(upd)
                                if '_id' not in nd:
                                    nd = {'_id': seed.get('_id', ObjectId()), **nd}
                                e = st.w_insert(db, coll, nd)
                            n += 1
                            upserted.append({'index': i, '_id': e.id})
                        continue
                    for d in docs:
                        n += 1
                        if is_operator_update(upd):
                            e = st.w_update(db, coll, d, upd)
                        else:
                            if any(k.startswith('$') for k in upd):
                                raise MongoError(9, 'FailedToParse', 'cannot mix operators and fields')
                            e = None if same_doc(d, {'_id': d['_id'], **{k: v for k, v in upd.items() if k != '_id'}}) \
                                else st.w_replace(db, coll, d, upd)
                        if e is not None:
                            nmod += 1
                except MongoError as exc:
                    errors.append({'index': i, 'code': exc.code, 'errmsg': exc.errmsg})
                    if ordered:
                        break
        r = {'n': n, 'nModified': nmod, 'ok': 1.0}
        if upserted:
            r['upserted'] = upserted
        if errors:
            r['writeErrors'] = errors
        return r

    def c_delete(self, cmd, db, conn):
        st = self.st
        coll = cmd['delete']
        n = 0
        with st.cv:
            for d in cmd.get('deletes') or []:
                docs = st.find_docs(db, coll, d.get('q') or {})
                if d.get('limit'):
                    docs = docs[:1]
                for doc in docs:
                    st.w_delete(db, coll, doc)
                    n += 1
        return {'n': n, 'ok': 1.0}

    def c_drop(self, cmd, db, conn):
        st = self.st
        coll = cmd['drop']
        with st.cv:
            if (db, coll) not in st.colls:
                raise MongoError(26, 'NamespaceNotFound', 'ns not found')
            st.w_drop(db, coll)
        return {'ns': '%s.%s' % (db, coll), 'nIndexesWas': 1, 'ok': 1.0}

    def c_create(self, cmd, db, conn):
        st = self.st
        coll = cmd['create']
        with st.cv:
            st._coll(db, coll, True)
            img = cmd.get('changeStreamPreAndPostImages')
            if img is not None:
                en = bool(img.get('enabled'))
                st.images[(db, coll)] = [en, en]
        return {'ok': 1.0}

    def c_collmod(self, cmd, db, conn):
        st = self.st
        coll = cmd['collMod']
        img = cmd.get('changeStreamPreAndPostImages')
        with st.cv:
            if img is not None:
                en = bool(img.get('enabled'))
                st.images[(db, coll)] = [en, en]
        return {'ok': 1.0}

    def c_list_collections(self, cmd, db, conn):
        st = self.st
        with st.cv:
            names = sorted(c for (d, c) in st.colls if d == db)
        batch = [{'name': n, 'type': 'collection', 'options': {}, 'info': {'readOnly': False}} for n in names]
        filt = cmd.get('filter') or {}
        batch = [b for b in batch if match(b, filt)]
        return {'cursor': {'id': Int64(0), 'ns': '%s.$cmd.listCollections' % db, 'firstBatch': batch}, 'ok': 1.0}

    COMMANDS = {
        'hello': c_hello, 'ismaster': c_hello, 'isMaster': c_hello,
        'ping': c_ok, 'endSessions': c_ok, 'endsessions': c_ok, 'getLastError': c_ok,
        'getlasterror': c_ok, 'abortTransaction': c_ok, 'commitTransaction': c_ok,
        'buildInfo': c_buildinfo, 'buildinfo': c_buildinfo,
        'killCursors': c_kill_cursors, 'killcursors': c_kill_cursors,
        'aggregate': c_aggregate,
        'getMore': c_getmore, 'getmore': c_getmore,
        'find': c_find, 'insert': c_insert, 'update': c_update, 'delete': c_delete,
        'drop': c_drop, 'create': c_create, 'collMod': c_collmod,
        'listCollections': c_list_collections,
    }


# --------------------------------------------------------------------------
# control API

def _dumps(obj):
    return json_util.dumps(obj, json_options=json_util.RELAXED_JSON_OPTIONS)


class Control(object):
    def __init__(self, store):
        self.st = store

    def _db(self, body):
        return body.get('db') or 'parse'

    def _coll(self, body):
        c = body.get('coll')
        if not isinstance(c, str) or not c:
            raise BadRequest('missing "coll"')
        return c

    def _get(self, db, coll, _id):
        c = self.st.colls.get((db, coll))
        return c.get(id_key(_id)) if c else None

    def insert(self, body):
        db, coll = self._db(body), self._coll(body)
        doc = body.get('doc')
        if not isinstance(doc, dict):
            raise BadRequest('missing "doc"')
        with self.st.cv:
            e = self.st.w_insert(db, coll, doc)
        return {'ok': True, 'id': e.id, 'token': make_token(e.idx, True)}

    def update(self, body):
        db, coll = self._db(body), self._coll(body)
        if 'id' not in body:
            raise BadRequest('missing "id"')
        upd = dict(body.get('update') or {})
        if body.get('set'):
            upd['$set'] = {**upd.get('$set', {}), **body['set']}
        if body.get('unset'):
            uns = body['unset']
            uns = {k: '' for k in uns} if isinstance(uns, list) else uns
            upd['$unset'] = {**upd.get('$unset', {}), **uns}
        if body.get('inc'):
            upd['$inc'] = body['inc']
        if not upd:
            raise BadRequest('nothing to update (set/unset/inc/update)')
        with self.st.cv:
            old = self._get(db, coll, body['id'])
            if old is None:
                if not body.get('upsert'):
                    raise BadRequest('no document with that id')
                e = self.st.w_update(db, coll, None, upd, upsert_id=body['id'])
            else:
                e = self.st.w_update(db, coll, old, upd)
        return {'ok': True, 'id': body['id'], 'changed': e is not None,
                'token': make_token(e.idx, True) if e else None}

    def replace(self, body):
        db, coll = self._db(body), self._coll(body)
        doc = body.get('doc')
        if not isinstance(doc, dict) or '_id' not in doc:
            raise BadRequest('"doc" with "_id" required')
        with self.st.cv:
            old = self._get(db, coll, doc['_id'])
            e = self.st.w_replace(db, coll, old, doc)
        return {'ok': True, 'id': e.id, 'token': make_token(e.idx, True)}

    def delete(self, body):
        db, coll = self._db(body), self._coll(body)
        if 'id' not in body:
            raise BadRequest('missing "id"')
        with self.st.cv:
            old = self._get(db, coll, body['id'])
            if old is None:
                raise BadRequest('no document with that id')
            e = self.st.w_delete(db, coll, old)
        return {'ok': True, 'id': e.id, 'token': make_token(e.idx, True)}

    def drop(self, body):
        db, coll = self._db(body), self._coll(body)
        with self.st.cv:
            e = self.st.w_drop(db, coll)
        return {'ok': True, 'token': make_token(e.idx, True),
                'invalidate_token': make_token(e.idx + 1, True)}

    def bulk(self, body):
        db, coll = self._db(body), self._coll(body)
        n = int(body.get('n') or 0)
        tpl = {k: v for k, v in (body.get('template') or {}).items() if k != '_id'}
        st = self.st
        # The documents and entries live as long as the oplog: no garbage
        # collection while they are made, then keep them out of later ones
        # (full collections that scanned the whole oplog took a third of the time).
        gc_was = gc.isenabled()
        gc.disable()
        try:
            with st.cv:
                first, last = st.w_bulk(db, coll, n, tpl)
        finally:
            gc.freeze()
            if gc_was:
                gc.enable()
        return {'ok': True, 'n': n,
                'first_token': make_token(first.idx, True) if first else None,
                'last_token': make_token(last.idx, True) if last else None}

    def images(self, body):
        db, coll = self._db(body), self._coll(body)
        with self.st.cv:
            cur = list(self.st._imgs(db, coll))
            if 'pre' in body:
                cur[0] = bool(body['pre'])
            if 'post' in body:
                cur[1] = bool(body['post'])
            self.st.images[(db, coll)] = cur
        return {'ok': True, 'pre': cur[0], 'post': cur[1]}

    def fault(self, body):
        kind = body.get('kind')
        st = self.st
        db = self._db(body)
        coll = body.get('coll')
        count = int(body.get('count', 1))
        if kind == 'invalidate':
            if not coll:
                raise BadRequest('invalidate needs "coll"')
            with st.cv:
                e = st._append(Entry('invalidate', db, coll, invalidates=True))
            log('fault invalidate emitted for %s.%s' % (db, coll))
            return {'ok': True, 'token': make_token(e.idx, True)}
        if kind not in ('drop_connection', 'resumable_error', 'history_lost', 'fatal'):
            raise BadRequest('unknown fault kind %r' % (kind,))
        on = body.get('on')
        if on is None:
            on = ['getMore', 'aggregate'] if kind == 'history_lost' else ['getMore']
        elif isinstance(on, str):
            on = ['getMore', 'aggregate'] if on == 'both' else [on]
        with st.cv:
            st.faults.append(Fault(kind, db, coll, count, on))
            # blocked getMores of the targeted streams re-check faults now
            if coll is None:
                st.wake_all()
            else:
                cc = st.conds.get((db, coll))
                if cc is not None:
                    cc.notify_all()
        log('fault %s armed (count %d, coll %s, on %s)' % (kind, count, coll or '*', '+'.join(on)))
        return {'ok': True}

    def delay(self, body):
        cmd = body.get('cmd')
        if cmd not in ('find', 'getMore'):
            raise BadRequest('delay: cmd must be "find" or "getMore"')
        before = int(body.get('before_ms', 0))
        after = int(body.get('after_ms', 0))
        count = body.get('count')
        if before < 0 or after < 0 or before > 60000 or after > 60000:
            raise BadRequest('delay: before_ms and after_ms must be 0..60000')
        with self.st.cv:
            if before == 0 and after == 0:
                self.st.delays.pop(cmd, None)
            else:
                self.st.delays[cmd] = Delay(body.get('coll'), before, after,
                                            None if count is None else int(count))
        log('delay %s: before %d ms, after %d ms (coll %s, count %s)' % (cmd, before, after,
                                                                         body.get('coll') or '*', count))
        return {'ok': True}

    def clear_faults(self, body):
        with self.st.cv:
            self.st.faults = []
        return {'ok': True}

    def truncate_history(self, body):
        st = self.st
        with st.cv:
            e = st._append(Entry('noop', '', ''), False)
            st.oplog = [e]
            st.base = e.idx
            st.min_valid = e.idx
        log('oplog history truncated at %d' % e.idx)
        return {'ok': True}

    def stats(self, q):
        st = self.st
        with st.cv:
            return {'ok': True,
                    'aggregates': dict(st.stats_aggregates),
                    'change_streams_open': st.open_cursors_by_ns(),
                    'getmores': st.getmores, 'killcursors': st.killcursors,
                    'connections': st.conns_open, 'connections_total': st.conns_total,
                    'oplog': len(st.oplog), 'faults_pending': sum(f.count for f in st.faults),
                    'faults_fired': st.faults_fired, 'delays_applied': st.delays_applied,
                    'op_time': st.op_time()}

    def doc(self, q):
        db = (q.get('db') or ['parse'])[0]
        coll = (q.get('coll') or [''])[0]
        raw = (q.get('id') or [None])[0]
        if not coll or raw is None:
            raise BadRequest('coll and id required')
        _id = raw
        if raw.startswith('{') or raw.startswith('"'):
            _id = json_util.loads(raw)
        with self.st.cv:
            d = self._get(db, coll, _id)
        return d

    POST = {'/insert': insert, '/update': update, '/replace': replace, '/delete': delete,
            '/drop': drop, '/bulk': bulk, '/images': images, '/fault': fault, '/delay': delay,
            '/clear_faults': clear_faults, '/truncate_history': truncate_history}
    GET = {'/stats': stats, '/doc': doc}


def make_http_handler(control):
    class H(BaseHTTPRequestHandler):
        protocol_version = 'HTTP/1.1'
        # headers and body go out in two writes: without TCP_NODELAY the body
        # waits for the client's delayed ACK (~25-40 ms per request)
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):
            if VERBOSE:
                log('http: ' + fmt % args)

        def _send(self, code, obj, raw=False):
            body = (obj if raw else _dumps(obj)).encode()
            self.send_response(code)
            self.send_header('Content-Type', 'application/json')
            self.send_header('Content-Length', str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _run(self, fn, arg):
            try:
                self._send(200, fn(control, arg))
            except (BadRequest, MongoError, ValueError, KeyError, TypeError) as exc:
                msg = exc.errmsg if isinstance(exc, MongoError) else str(exc)
                log('error: control %s: %s' % (self.path, msg))
                self._send(400, {'ok': False, 'error': msg})
            except Exception as exc:
                log('error: control %s crashed:\n%s' % (self.path, traceback.format_exc()))
                self._send(500, {'ok': False, 'error': repr(exc)})

        def do_GET(self):
            u = urlparse(self.path)
            fn = Control.GET.get(u.path)
            if fn is None:
                return self._send(404, {'ok': False, 'error': 'not found'})
            self._run(fn, parse_qs(u.query))

        def do_POST(self):
            u = urlparse(self.path)
            n = int(self.headers.get('Content-Length') or 0)
            raw = self.rfile.read(n) if n else b''
            fn = Control.POST.get(u.path)
            if fn is None:
                return self._send(404, {'ok': False, 'error': 'not found'})
            try:
                body = json_util.loads(raw.decode() or '{}')
                if not isinstance(body, dict):
                    raise ValueError('body must be a JSON object')
            except Exception as exc:
                return self._send(400, {'ok': False, 'error': 'bad JSON: %s' % exc})
            self._run(fn, body)

    return H


# --------------------------------------------------------------------------
# main

def main():
    global VERBOSE
    ap = argparse.ArgumentParser(description='MongoDB wire-protocol test server')
    ap.add_argument('--port', type=int, default=0)
    ap.add_argument('--control-port', type=int, default=0)
    ap.add_argument('--rs', default='rs0')
    ap.add_argument('--preimages', choices=('on', 'off'), default='on')
    ap.add_argument('--max-wire', type=int, default=17)
    ap.add_argument('--stdin-watch', choices=('auto', 'on', 'off'), default='auto',
                    help='exit when stdin reaches EOF (auto: only if stdin is a pipe or socket)')
    ap.add_argument('--verbose', action='store_true')
    args = ap.parse_args()
    VERBOSE = args.verbose

    store = Store(args.rs, args.preimages == 'on', args.max_wire)
    wire = Wire(store)
    srv = Server(store, args.port, wire.handle)
    store.port = srv.run()

    httpd = ThreadingHTTPServer(('127.0.0.1', args.control_port), make_http_handler(Control(store)))
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()

    done = threading.Event()

    def on_signal(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    watch = args.stdin_watch == 'on'
    if args.stdin_watch == 'auto':
        try:
            mode = os.fstat(0).st_mode
            watch = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
        except OSError:
            watch = False
    if watch:
        def stdin_loop():
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            done.set()
        threading.Thread(target=stdin_loop, daemon=True).start()

    sys.stdout.write(json.dumps({'mongo_port': store.port, 'control_port': httpd.server_address[1],
                                 'rs': args.rs}, separators=(',', ':')) + '\n')
    sys.stdout.flush()
    while not done.wait(0.5):
        pass
    with store.cv:
        store.stopping = True
        store.wake_all()
    try:
        httpd.socket.close()
        srv._stopped = True
        srv._listening_sock.close()
    except Exception:
        pass
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == '__main__':
    main()
