'use strict';
/*
 * Opt-in: the tailer against a real MongoDB 6/7 replica set. Set
 * LIVEQUERY_TEST_MONGO_URI (e.g. mongodb://127.0.0.1:27017/lqtest?replicaSet=rs0, the
 * docker-compose MongoDB) to run it; otherwise it is skipped with a message.
 * Writes go through tests/mongo/realwrite.py (pymongo); the test uses a fresh
 * collection per run and drops it at the end.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const h = require('./harness');
const M = require('./mongo');

const URI = process.env.LIVEQUERY_TEST_MONGO_URI;
after(h.teardown);

if (!URI) {
  process.stderr.write('# real MongoDB test SKIPPED: set LIVEQUERY_TEST_MONGO_URI to a MongoDB 6/7 replica set to run it\n');
}

function writer() {
  const p = spawn('/usr/bin/python3', [path.join(h.REPO, 'tests', 'mongo', 'realwrite.py'), URI], { stdio: ['pipe', 'pipe', 'inherit'] });
  h.onTeardown(() => p.kill());
  const rl = readline.createInterface({ input: p.stdout });
  const waiting = [];
  rl.on('line', (l) => waiting.shift()(JSON.parse(l)));
  return async (cmd) => {
    const r = await h.withTimeout(new Promise((resolve) => { waiting.push(resolve); p.stdin.write(`${JSON.stringify(cmd)}\n`); }), 10000, cmd.op);
    if (!r.ok) throw new Error(`${cmd.op}: ${r.error}`);
    return r;
  };
}

h.test('real MongoDB: insert, update, delete and drop reach a subscriber', { skip: URI ? false : 'LIVEQUERY_TEST_MONGO_URI is not set' }, async () => {
  const cls = `LqTest${Date.now().toString(36)}`;
  const w = writer();
  const img = await w({ op: 'images', coll: cls });
  const redis = await h.startRedis();
  const gw = await M.startTailer({ redis, mongo: { uri: URI }, classes: cls, args: img.images ? ['--full-document', 'required'] : [] });
  const pub = await h.publisher(redis.port);
  await h.waitFor(async () => (await M.tailerState(pub, cls)).token, { timeout: 20000, what: 'tailer stream open' });
  const c = await h.wsClient(gw.url);
  await c.connect({ masterKey: h.MASTER_KEY });
  await c.subscribe(1, cls, {});
  try {
    await w({ op: 'insert', coll: cls, doc: { _id: 'real000001', n: 1, when: { $date: '2026-12-01T10:00:00.000Z' }, _p_owner: '_User$u1', _rperm: ['*'], _wperm: [] } });
    const f = await c.event(1, 'real000001', 10000);
    assert.equal(f.op, 'create');
    assert.deepEqual(f.object, {
      objectId: 'real000001', className: cls, n: 1, when: { __type: 'Date', iso: '2026-12-01T10:00:00.000Z' },
      owner: { __type: 'Pointer', className: '_User', objectId: 'u1' }, ACL: { '*': { read: true } },
    });
    await w({ op: 'update', coll: cls, id: 'real000001', set: { n: 2 } });
    const u = await c.event(1, 'real000001', 10000);
    assert.equal(u.op, 'update');
    assert.equal(u.object.n, 2);
    assert.equal(u.original.n, 1);
    await w({ op: 'delete', coll: cls, id: 'real000001' });
    const d = await c.event(1, 'real000001', 10000);
    assert.equal(d.op, 'delete');
    assert.equal(d.object.n, 2);
    await w({ op: 'drop', coll: cls });
    const e = await c.next((x) => x && x.op === 'error', 10000);
    assert.equal(e.code, 100, 'dropping the collection (invalidate) makes subscribers resync');
  } finally {
    await w({ op: 'drop', coll: cls }).catch(() => {});
  }
});
