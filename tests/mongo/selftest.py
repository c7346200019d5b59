#!/usr/bin/python3
"""Self-test for mockmongo.py, using Debian's pymongo 3.11.

Run: /usr/bin/python3 tests/mongo/selftest.py   (exit 0 on success)
"""

import json
import os
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request

from bson import json_util
from bson.timestamp import Timestamp
from pymongo import MongoClient
from pymongo.errors import OperationFailure

HERE = os.path.dirname(os.path.abspath(__file__))
MOCK = os.path.join(HERE, 'mockmongo.py')

passed = 0
failed = 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print('FAIL: %s' % what)
        frame = traceback.extract_stack()[-2]
        print('      at line %d' % frame.lineno)
    return cond


class Mock(object):
    def __init__(self, *args):
        self.proc = subprocess.Popen(['/usr/bin/python3', MOCK] + list(args),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        info = json.loads(self.proc.stdout.readline())
        self.port = info['mongo_port']
        self.cport = info['control_port']
        self.rs = info['rs']

    def call(self, path, body=None, expect_ok=True):
        url = 'http://127.0.0.1:%d%s' % (self.cport, path)
        data = None if body is None else json_util.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method='GET' if body is None else 'POST')
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                out = json_util.loads(r.read().decode())
        except urllib.error.HTTPError as exc:
            out = json.loads(exc.read().decode())
            out['_status'] = exc.code
        if expect_ok and not (isinstance(out, dict) and out.get('ok') is True) and out is not None \
                and path.split('?')[0] != '/doc':
            raise AssertionError('control %s failed: %r' % (path, out))
        return out

    def client(self):
        return MongoClient('127.0.0.1', self.port, replicaSet=self.rs,
                           serverSelectionTimeoutMS=5000, heartbeatFrequencyMS=500)

    def stop(self):
        self.proc.stdin.close()   # EOF on stdin => mockmongo exits
        try:
            return self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def nxt(cs, timeout=5.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ev = cs.try_next()
        if ev is not None:
            return ev
    raise AssertionError('no change event within %.1fs' % timeout)


def read_seq(cs, n, timeout=10.0):
    out = []
    deadline = time.time() + timeout
    while len(out) < n and time.time() < deadline:
        ev = cs.try_next()
        if ev is not None:
            out.append(ev['fullDocument']['seq'])
    return out


def t_handshake_and_misc(m, c):
    db = c.parse
    check(c.admin.command('ping')['ok'] == 1, 'ping')
    check(c.server_info()['version'] == '6.0.0', 'buildInfo version')
    hello = c.admin.command('hello')
    check(hello['setName'] == 'rs0' and hello['isWritablePrimary'] and hello['hosts'] == ['127.0.0.1:%d' % m.port],
          'hello reply')
    try:
        db.command('frobnicate')
        check(False, 'unknown command must fail')
    except OperationFailure as exc:
        check(exc.code == 59, 'unknown command -> 59 (got %r)' % exc.code)
    r = m.call('/insert', {'doc': {'a': 1}}, expect_ok=False)
    check(r.get('_status') == 400 and r['ok'] is False, 'control 400 on missing coll')


def t_control_events(m, c):
    coll = c.parse.Ctl
    with coll.watch(max_await_time_ms=200, full_document='updateLookup') as cs:
        r = m.call('/insert', {'coll': 'Ctl', 'doc': {'_id': 'o1', 'score': 1,
                                                      '_created_at': {'$date': '2024-01-02T03:04:05.006Z'}}})
        check(r['id'] == 'o1' and r['token']['_data'].startswith('82'), 'insert reply')
        r2 = m.call('/insert', {'coll': 'Ctl', 'doc': {'x': 1}})
        check(isinstance(r2['id'], str) and len(r2['id']) == 10, 'generated 10-char id')
        ev = nxt(cs)
        check(ev['operationType'] == 'insert' and ev['documentKey'] == {'_id': 'o1'}
              and ev['fullDocument']['score'] == 1 and ev['ns'] == {'db': 'parse', 'coll': 'Ctl'}
              and isinstance(ev['clusterTime'], Timestamp) and ev['_id'] == r['token'],
              'insert event shape: %r' % ev)
        check(ev['fullDocument']['_created_at'].year == 2024, 'ext JSON $date stored as date')
        nxt(cs)
        m.call('/update', {'coll': 'Ctl', 'id': 'o1', 'set': {'score': 2, 'p.q': 'z'}, 'unset': ['_created_at']})
        ev = nxt(cs)
        check(ev['operationType'] == 'update'
              and ev['updateDescription'] == {'updatedFields': {'score': 2, 'p.q': 'z'},
                                              'removedFields': ['_created_at'], 'truncatedArrays': []}
              and ev['fullDocument'] == {'_id': 'o1', 'score': 2, 'p': {'q': 'z'}},
              'update event: %r' % ev)
        m.call('/replace', {'coll': 'Ctl', 'doc': {'_id': 'o1', 'score': 9}})
        ev = nxt(cs)
        check(ev['operationType'] == 'replace' and ev['fullDocument'] == {'_id': 'o1', 'score': 9}, 'replace event')
        check(m.call('/doc?coll=Ctl&id=o1') == {'_id': 'o1', 'score': 9}, 'GET /doc')
        m.call('/delete', {'coll': 'Ctl', 'id': 'o1'})
        ev = nxt(cs)
        check(ev['operationType'] == 'delete' and ev['documentKey'] == {'_id': 'o1'} and 'fullDocument' not in ev,
              'delete event')
        check(m.call('/doc?coll=Ctl&id=o1') is None, 'GET /doc after delete -> null')
        st = m.call('/stats')
        check(st['change_streams_open'].get('parse.Ctl') == 1, 'one open stream: %r' % st)
    time.sleep(0.2)
    st = m.call('/stats')
    check(st['change_streams_open'].get('parse.Ctl') is None, 'stream closed after killCursors: %r' % st)


def t_pymongo_writes(m, c):
    coll = c.parse.Wire
    with coll.watch(max_await_time_ms=200, ) as cs:
        coll.insert_one({'_id': 'w1', 'n': 1, 'tags': ['a']})
        coll.insert_many([{'_id': 'w2', 'n': 2}, {'_id': 'w3', 'n': 3}])
        coll.update_one({'_id': 'w1'}, {'$set': {'n': 10}, '$unset': {'zz': ''}, '$push': {'tags': 'b'}})
        coll.update_one({'_id': 'w1'}, {'$set': {'n': 10}})         # no-op: no event (as on MongoDB)
        coll.update_one({'_id': 'w4'}, {'$set': {'n': 4}}, upsert=True)
        coll.replace_one({'_id': 'w2'}, {'n': 22})
        coll.delete_one({'_id': 'w3'})
        evs = [nxt(cs) for _ in range(7)]
        ops = [e['operationType'] for e in evs]
        check(ops == ['insert', 'insert', 'insert', 'update', 'insert', 'replace', 'delete'], 'ops %r' % ops)
        check(evs[3]['updateDescription']['updatedFields'] == {'n': 10, 'tags.1': 'b'}
              and 'fullDocument' not in evs[3], 'update via wire: %r' % evs[3])
        check(evs[4]['fullDocument'] == {'_id': 'w4', 'n': 4}, 'upsert insert %r' % evs[4])
    check(sorted(d['_id'] for d in coll.find({'n': {'$in': [4, 22]}})) == ['w2', 'w4'], 'find $in')
    check([d['_id'] for d in coll.find({'_id': 'w1'})] == ['w1'], 'find by _id')
    check(coll.find_one({'_id': 'nope'}) is None, 'find none')
    check([d['n'] for d in coll.find({}, sort=[('n', -1)], limit=2)] == [22, 10], 'find sort/limit')


def t_fault_resume(m, c, kind):
    coll = c.parse['R_' + kind]
    name = coll.name
    with coll.watch(max_await_time_ms=200, full_document='updateLookup') as cs:
        cs.try_next()
        m.call('/fault', {'kind': kind, 'coll': name})
        for i in range(20):
            m.call('/insert', {'coll': name, 'doc': {'seq': i}})
        got = read_seq(cs, 20)
        check(got == list(range(20)), '%s: resumed without loss/dup: %r' % (kind, got))
        st = m.call('/stats')
        check(st['faults_pending'] == 0, '%s: fault fired' % kind)
        check(st['change_streams_open'].get('parse.' + name) == 1, '%s: exactly one open stream %r' % (kind, st))
        check(st['aggregates'].get('parse.' + name) == 2, '%s: two aggregates (initial + resume): %r' % (kind, st))


def t_history_lost(m, c):
    coll = c.parse.Hist
    with coll.watch(max_await_time_ms=200, ) as cs:
        cs.try_next()
        m.call('/fault', {'kind': 'history_lost', 'coll': 'Hist'})
        try:
            cs.try_next()
            check(False, 'history_lost must raise')
        except OperationFailure as exc:
            check(exc.code == 286, 'history_lost -> 286 (got %r)' % exc.code)
    tok = m.call('/insert', {'coll': 'Hist', 'doc': {'a': 1}})['token']
    m.call('/insert', {'coll': 'Hist', 'doc': {'a': 2}})
    with coll.watch(max_await_time_ms=200, resume_after=tok) as cs:
        check(nxt(cs)['fullDocument']['a'] == 2, 'resume_after token')
    m.call('/truncate_history', {})
    try:
        with coll.watch(max_await_time_ms=200, resume_after=tok) as cs:
            cs.try_next()
        check(False, 'resume after truncate must raise')
    except OperationFailure as exc:
        check(exc.code == 286, 'resume after truncate -> 286 (got %r)' % exc.code)
    # a stream opened after truncation resumes fine
    with coll.watch(max_await_time_ms=200, ) as cs:
        cs.try_next()
        m.call('/fault', {'kind': 'drop_connection', 'coll': 'Hist'})
        m.call('/insert', {'coll': 'Hist', 'doc': {'seq': 0}})
        check(read_seq(cs, 1) == [0], 'resume after truncate within new history')


def t_invalidate(m, c):
    coll = c.parse.Inv
    m.call('/insert', {'coll': 'Inv', 'doc': {'_id': 'i1'}})
    with coll.watch(max_await_time_ms=200, ) as cs:
        cs.try_next()
        m.call('/drop', {'coll': 'Inv'})
        ev1 = nxt(cs)
        ev2 = nxt(cs)
        check(ev1['operationType'] == 'drop' and ev1['ns'] == {'db': 'parse', 'coll': 'Inv'}, 'drop event')
        check(ev2['operationType'] == 'invalidate' and 'ns' not in ev2, 'invalidate event')
        check(not cs.alive, 'stream closed after invalidate')
        inv_tok = ev2['_id']
    check(m.call('/doc?coll=Inv&id=i1') is None, 'drop emptied the collection')
    try:
        with coll.watch(max_await_time_ms=200, resume_after=inv_tok) as cs:
            cs.try_next()
        check(False, 'resumeAfter invalidate must fail')
    except OperationFailure as exc:
        check(exc.code == 260, 'resumeAfter invalidate -> 260 (got %r)' % exc.code)
    with coll.watch(max_await_time_ms=200, start_after=inv_tok) as cs:
        m.call('/insert', {'coll': 'Inv', 'doc': {'_id': 'i2'}})
        check(nxt(cs)['documentKey'] == {'_id': 'i2'}, 'startAfter invalidate')
    with coll.watch(max_await_time_ms=200, ) as cs:
        cs.try_next()
        m.call('/fault', {'kind': 'invalidate', 'coll': 'Inv'})
        check(nxt(cs)['operationType'] == 'invalidate', 'fault invalidate')
    check(m.call('/doc?coll=Inv&id=i2') is not None, 'fault invalidate keeps data')
    with coll.watch(max_await_time_ms=200, ) as cs:
        cs.try_next()
        coll.drop()
        check([nxt(cs)['operationType'], nxt(cs)['operationType']] == ['drop', 'invalidate'], 'drop via wire')


def t_fatal(m, c):
    coll = c.parse.Fat
    with coll.watch(max_await_time_ms=200, ) as cs:
        cs.try_next()
        m.call('/fault', {'kind': 'fatal', 'coll': 'Fat'})
        try:
            cs.try_next()
            check(False, 'fatal must raise')
        except OperationFailure as exc:
            check(exc.code == 2, 'fatal -> 2 (got %r)' % exc.code)


def t_images(m, c):
    db = c.parse

    def open_cs(coll, **opts):
        r = db.command({'aggregate': coll, 'pipeline': [{'$changeStream': opts}], 'cursor': {}})
        return r['cursor']['id']

    def more(coll, cid):
        return db.command({'getMore': cid, 'collection': coll, 'maxTimeMS': 500})['cursor']['nextBatch']

    m.call('/insert', {'coll': 'Img', 'doc': {'_id': 'k', 'v': 1}})
    cid = open_cs('Img', fullDocument='whenAvailable', fullDocumentBeforeChange='required')
    m.call('/update', {'coll': 'Img', 'id': 'k', 'set': {'v': 2}})
    m.call('/update', {'coll': 'Img', 'id': 'k', 'set': {'v': 3}})
    b = more('Img', cid)
    check(len(b) == 2 and b[0]['fullDocument'] == {'_id': 'k', 'v': 2}
          and b[0]['fullDocumentBeforeChange'] == {'_id': 'k', 'v': 1}
          and b[1]['fullDocument'] == {'_id': 'k', 'v': 3}, 'pre/post images %r' % b)
    ts0 = b[0]['clusterTime']
    m.call('/images', {'coll': 'Img', 'pre': False, 'post': False})
    m.call('/update', {'coll': 'Img', 'id': 'k', 'set': {'v': 4}})
    try:
        more('Img', cid)
        check(False, 'required pre-image missing must fail')
    except OperationFailure as exc:
        check(exc.code == 280, 'missing required pre-image -> 280 (got %r)' % exc.code)
    cid = open_cs('Img', fullDocument='whenAvailable', fullDocumentBeforeChange='whenAvailable')
    m.call('/update', {'coll': 'Img', 'id': 'k', 'set': {'v': 5}})
    b = more('Img', cid)
    check(len(b) == 1 and b[0]['fullDocument'] is None and b[0]['fullDocumentBeforeChange'] is None,
          'whenAvailable without images -> null %r' % b)
    # startAtOperationTime
    m.call('/insert', {'coll': 'Img', 'doc': {'_id': 'sat'}})
    cs = c.parse.Img.watch(max_await_time_ms=200, start_at_operation_time=ts0)
    ops = [nxt(cs)['operationType'] for _ in range(5)]
    check(ops == ['update', 'update', 'update', 'update', 'insert'], 'startAtOperationTime %r' % ops)
    cs.close()


def t_concurrent(m, c):
    import threading
    results = {}

    def worker(name):
        with c.parse[name].watch(max_await_time_ms=2000) as cs:
            results[name] = read_seq(cs, 10, timeout=8)

    names = ['Con%d' % i for i in range(4)]
    ths = [threading.Thread(target=worker, args=(n,)) for n in names]
    for t in ths:
        t.start()
    deadline = time.time() + 5
    # wait for these four: a stream of an earlier test may still be open (its
    # killCursors not yet handled), so counting all open streams is not enough
    while time.time() < deadline and not all(
            'parse.' + n in m.call('/stats')['change_streams_open'] for n in names):
        time.sleep(0.05)
    st = m.call('/stats')
    check(all(st['change_streams_open'].get('parse.' + n) == 1 for n in names), 'one stream per coll %r' % st)
    for i in range(10):
        for n in names:
            m.call('/insert', {'coll': n, 'doc': {'seq': i}})
    for t in ths:
        t.join(10)
    check(all(results.get(n) == list(range(10)) for n in names), 'concurrent blocked streams %r' % results)


def t_throughput(m, c):
    coll = c.parse.Bulk
    n = 20000
    with coll.watch(max_await_time_ms=200, batch_size=1000) as cs:
        cs.try_next()
        t0 = time.time()
        m.call('/bulk', {'coll': 'Bulk', 'n': n, 'template': {'k': 'v'}})
        t1 = time.time()
        cnt = 0
        last = -1
        ok = True
        while cnt < n and time.time() - t0 < 20:
            ev = cs.try_next()
            if ev is None:
                continue
            ok = ok and ev['fullDocument']['n'] == last + 1
            last = ev['fullDocument']['n']
            cnt += 1
        t2 = time.time()
    check(cnt == n and ok, 'bulk: got %d/%d in order' % (cnt, n))
    print('throughput: bulk insert %d in %.2fs (%.0f/s); pymongo read %.0f events/s'
          % (n, t1 - t0, n / (t1 - t0), cnt / max(t2 - t1, 1e-6)))


def t_snapshot(m, c):
    """find with readConcern snapshot: cursor.atClusterTime T; events with a
    clusterTime <= T are in the reply, later writes are not (and have a
    greater clusterTime); /delay slows find down around its snapshot."""
    import threading
    db = c.parse
    with db.Snap.watch(max_await_time_ms=200) as cs:
        for i in range(3):
            m.call('/insert', {'coll': 'Snap', 'doc': {'_id': 's%d' % i, 'n': i}})
        evs = [nxt(cs) for _ in range(3)]
        r = db.command('find', 'Snap', readConcern={'level': 'snapshot'})
        at = r['cursor'].get('atClusterTime')
        check(isinstance(at, Timestamp), 'snapshot find has atClusterTime (%r)' % (at,))
        check(sorted(d['_id'] for d in r['cursor']['firstBatch']) == ['s0', 's1', 's2'], 'snapshot docs')
        check(all(e['clusterTime'] <= at for e in evs), 'earlier events <= atClusterTime')
        m.call('/update', {'coll': 'Snap', 'id': 's0', 'set': {'n': 10}})
        e = nxt(cs)
        check(e['clusterTime'] > at, 'a later write has clusterTime > atClusterTime')
        plain = db.command('find', 'Snap')
        check('atClusterTime' not in plain['cursor'], 'no atClusterTime without readConcern snapshot')
        # /delay: the snapshot is taken before after_ms; a write during the wait is not in it
        m.call('/delay', {'cmd': 'find', 'coll': 'Snap', 'after_ms': 400, 'count': 1})
        out = {}

        def reader():
            t0 = time.time()
            out['r'] = db.command('find', 'Snap', readConcern={'level': 'snapshot'})
            out['dt'] = time.time() - t0
        th = threading.Thread(target=reader)
        th.start()
        time.sleep(0.15)
        m.call('/update', {'coll': 'Snap', 'id': 's1', 'set': {'n': 11}})
        th.join()
        at2 = out['r']['cursor']['atClusterTime']
        docs = {d['_id']: d['n'] for d in out['r']['cursor']['firstBatch']}
        check(out['dt'] >= 0.35, 'delayed find took %.2fs' % out['dt'])
        check(docs == {'s0': 10, 's1': 1, 's2': 2}, 'write during the delay is not in the snapshot (%r)' % docs)
        e = nxt(cs)
        check(e['clusterTime'] > at2, 'that write is after atClusterTime')
        check(m.call('/stats')['delays_applied'] >= 1, 'delays_applied counted')
        t1 = time.time()
        db.command('find', 'Snap', readConcern={'level': 'snapshot'})
        check(time.time() - t1 < 0.3, 'count:1 delay applies once')
    # a fresh server: a snapshot before the first write is below that write's clusterTime
    m2 = Mock('--rs', 'snap')
    c2 = m2.client()
    try:
        with c2.parse.A.watch(max_await_time_ms=200) as cs:
            at = c2.parse.command('find', 'A', readConcern={'level': 'snapshot'})['cursor']['atClusterTime']
            m2.call('/insert', {'coll': 'A', 'doc': {'_id': 'a'}})
            e = nxt(cs)
            check(e['clusterTime'] > at, 'first write after an empty snapshot: %r > %r' % (e['clusterTime'], at))
    finally:
        c2.close()
        m2.stop()


def main():
    t0 = time.time()
    m = Mock()
    c = m.client()
    try:
        for name, fn in [('handshake', t_handshake_and_misc), ('control', t_control_events),
                         ('pymongo writes', t_pymongo_writes),
                         ('drop_connection', lambda m, c: t_fault_resume(m, c, 'drop_connection')),
                         ('resumable_error', lambda m, c: t_fault_resume(m, c, 'resumable_error')),
                         ('history_lost', t_history_lost), ('invalidate', t_invalidate),
                         ('fatal', t_fatal), ('images', t_images), ('snapshot', t_snapshot),
                         ('concurrent', t_concurrent), ('throughput', t_throughput)]:
            ts = time.time()
            try:
                fn(m, c)
            except Exception:
                global failed
                failed += 1
                print('FAIL: %s raised:\n%s' % (name, traceback.format_exc()))
            print('  %-16s %.2fs' % (name, time.time() - ts))
    finally:
        c.close()
        rc = m.stop()
        check(rc == 0, 'mockmongo exits 0 on stdin EOF (rc=%r)' % rc)
    # SIGTERM path
    m2 = Mock('--rs', 'other')
    check(m2.rs == 'other', '--rs')
    m2.proc.terminate()
    check(m2.proc.wait(5) == 0, 'exit 0 on SIGTERM')
    m2.proc.stdin.close()
    print('%d passed, %d failed (%.1fs)' % (passed, failed, time.time() - t0))
    return 0 if failed == 0 else 1


if __name__ == '__main__':
    sys.exit(main())
