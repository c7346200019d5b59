'use strict';
/*
 * The tailer under faults: kill -9 and restart mid-stream, standby failover,
 * a stolen lease, dropped MongoDB connections, resumable errors, history
 * lost (error 286) and invalidate. The invariant everywhere: a gateway's
 * subscriber receives every change exactly once, in order, or is told to
 * resync (error frame with reconnect:true); never a silent gap.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');

after(h.teardown);

/* A gateway-only livequeryd with a master-key raw client subscribed to BookStockLog. */
async function watcher(redis) {
  const gw = await h.startGateway({ redis, masterKey: h.MASTER_KEY, args: ['--role', 'gateway'] });
  const c = await h.wsClient(gw.url);
  await c.connect({ masterKey: h.MASTER_KEY });
  await c.subscribe(1, 'BookStockLog', {});
  return { gw, c };
}

/* Collects n creates from c; asserts objectIds b0..b(n-1) (by field n) each exactly once, in order. */
async function expectCreates(c, from, to, timeoutMs = 30000) {
  const deadline = Date.now() + timeoutMs;
  for (let i = from; i < to; i++) {
    const f = await c.event(1, undefined, Math.max(100, deadline - Date.now()));
    assert.equal(f.op, 'create', `event ${i}: ${JSON.stringify(f).slice(0, 200)}`);
    assert.equal(f.object.n, i, `event ${i} out of order or repeated: got n=${f.object.n}`);
  }
}

async function leader(...gws) {
  for (const g of gws) {
    if (g.alive() && (await M.metrics(g).catch(() => ({}))).tailer_leader === 1) return g;
  }
  return null;
}

h.test('kill -9 of the tailer mid-stream, then a restart: nothing lost, nothing repeated', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const { c } = await watcher(redis);
  const pub = await h.publisher(redis.port);
  const keepAll = ['--stream-max-len', '100000'];
  let t1 = await M.startTailer({ redis, mongo, id: 't1', args: keepAll });
  await h.waitFor(async () => (await M.tailerState(pub, 'BookStockLog')).token, { timeout: 15000, what: 'stream open' });

  const N = 20000; // long enough that the kill lands mid-stream on a fast machine
  const bulk = mongo.bulk('BookStockLog', N, { isbn: 'bulk' });
  await h.waitFor(async () => Number((await M.tailerState(pub, 'BookStockLog')).seq) >= 300,
    { timeout: 20000, interval: 5, what: 'tailer mid-stream' });
  t1.proc.kill('SIGKILL');
  t1.stopping = true; // expected death
  const killedAt = Number((await M.tailerState(pub, 'BookStockLog')).seq);
  await bulk;
  assert.ok(killedAt < N, `killed at seq ${killedAt}: the test needs the kill mid-stream`);

  t1 = await M.startTailer({ redis, mongo, id: 't1-restarted', args: keepAll });
  await h.waitFor(async () => Number((await M.tailerState(pub, 'BookStockLog')).seq) === N,
    { timeout: 30000, what: `all ${N} events published after the restart` });
  const hist = await M.history(pub, 'BookStockLog');
  assert.equal(hist.length, N);
  hist.forEach((x, i) => {
    assert.equal(x.seq, i + 1);
    assert.equal(x.msg.object.n, i, `stream entry ${i} holds n=${x.msg.object.n}`);
  });
  await expectCreates(c, 0, N);
  await c.none(300);
});

h.test('standby takes over within seconds when the active tailer is killed, from the stored token', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const { c } = await watcher(redis);
  const pub = await h.publisher(redis.port);
  const a = await M.startTailer({ redis, mongo, id: 'a', leaseTtl: 1500 });
  const b = await M.startTailer({ redis, mongo, id: 'b', leaseTtl: 1500 });
  await h.waitFor(async () => (await M.tailerState(pub, 'BookStockLog')).token, { timeout: 15000, what: 'stream open' });
  const first = await leader(a, b);
  assert.ok(first, 'one tailer leads');
  const standby = first === a ? b : a;
  assert.equal((await M.metrics(standby)).tailer_leader, 0, 'exactly one leads');
  const health = async (g) => (await (await fetch(`http://127.0.0.1:${g.port}/health`)).json()).tailer;
  assert.equal(await health(first), 'active');
  assert.equal(await health(standby), 'standby');
  assert.equal(await pub.client.get(`livequery:${h.APP_ID}:tailer:lease`), first === a ? 'a' : 'b');

  for (let i = 0; i < 50; i++) await mongo.insert('BookStockLog', { _id: `fo${String(i).padStart(8, '0')}`, n: i });
  await expectCreates(c, 0, 50);
  first.proc.kill('SIGKILL');
  first.stopping = true;
  const killed = Date.now();
  for (let i = 50; i < 100; i++) await mongo.insert('BookStockLog', { _id: `fo${String(i).padStart(8, '0')}`, n: i });
  await expectCreates(c, 50, 100, 15000);
  const takeover = Date.now() - killed;
  assert.ok(takeover < 5000, `takeover took ${takeover} ms`);
  assert.equal((await M.metrics(standby)).tailer_leader, 1);
  const st = await mongo.stats();
  assert.equal(st.change_streams_open['parse.BookStockLog'], 1, 'only the new leader streams');
  process.stderr.write(`# standby takeover after kill -9: ${takeover} ms (lease ttl 1500 ms)\n`);
});

h.test('a tailer whose lease is taken stops publishing at once, and resumes without loss when it gets it back', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const { c } = await watcher(redis);
  const pub = await h.publisher(redis.port);
  const t = await M.startTailer({ redis, mongo, id: 'holder', leaseTtl: 10000 });
  await h.waitFor(async () => (await M.tailerState(pub, 'BookStockLog')).token, { timeout: 15000, what: 'stream open' });
  await mongo.insert('BookStockLog', { _id: 'ls00000000', n: 0 });
  await expectCreates(c, 0, 1);

  const lease = `livequery:${h.APP_ID}:tailer:lease`;
  await pub.client.set(lease, 'usurper', { PX: 60000 });
  await mongo.insert('BookStockLog', { _id: 'ls00000001', n: 1 });
  await h.waitFor(async () => (await M.metrics(t)).tailer_lease_lost >= 1, { what: 'lease loss noticed' });
  await c.none(500);
  assert.equal((await M.history(pub, 'BookStockLog')).length, 1, 'nothing published without the lease');
  assert.equal((await M.metrics(t)).tailer_leader, 0);

  await pub.client.del(lease);
  await expectCreates(c, 1, 2, 20000);
  assert.equal(await pub.client.get(lease), 'holder');
});

h.test('dropped connections and resumable errors are resumed: no loss, no repeat', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const { c } = await watcher(redis);
  const pub = await h.publisher(redis.port);
  await M.startTailer({ redis, mongo });
  await h.waitFor(async () => (await M.tailerState(pub, 'BookStockLog')).token, { timeout: 15000, what: 'stream open' });
  const before = (await mongo.stats()).aggregates['parse.BookStockLog'];
  let n = 0;
  const burst = async (k) => { for (let i = 0; i < k; i++, n++) await mongo.insert('BookStockLog', { _id: `rs${String(n).padStart(8, '0')}`, n }); };
  await burst(10);
  await expectCreates(c, 0, 10);
  await mongo.fault('drop_connection', { coll: 'BookStockLog' });
  await burst(10);
  await expectCreates(c, 10, 20, 15000);
  await mongo.fault('resumable_error', { coll: 'BookStockLog' });
  await burst(10);
  await expectCreates(c, 20, 30, 15000);
  await mongo.fault('resumable_error', { coll: 'BookStockLog', count: 3 }); // libmongoc resumes once, then we re-open
  await burst(10);
  await expectCreates(c, 30, 40, 20000);
  await c.none(300);
  const after2 = (await mongo.stats()).aggregates['parse.BookStockLog'];
  assert.ok(after2 >= before + 3, `the stream was re-opened (${before} -> ${after2} aggregates)`);
  const hist = await M.history(pub, 'BookStockLog');
  assert.deepEqual(hist.map((x) => x.msg.object.n), [...Array(40).keys()]);
});

h.test('history lost (286) and invalidate start a new epoch and make subscribers resync', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const { gw, c } = await watcher(redis);
  const pub = await h.publisher(redis.port);
  let t = await M.startTailer({ redis, mongo });
  await h.waitFor(async () => (await M.tailerState(pub, 'BookStockLog')).token, { timeout: 15000, what: 'stream open' });

  const P = h.Parse();
  const sdk = h.sdkClient(gw.url);
  await sdk.ready;
  const sub = sdk.client.subscribe(new P.Query('BookStockLog'));
  const inbox = h.recordSubscription(sub);
  await h.withTimeout(sub.subscribePromise, 3000, 'sdk subscribed');
  const other = await h.wsClient(gw.url); // subscribed to another class: left alone
  await other.connect();
  await other.subscribe(1, 'EventNote', {});

  await mongo.insert('BookStockLog', { _id: 'hl00000000', n: 0 });
  await expectCreates(c, 0, 1);
  const epoch1 = (await M.tailerState(pub, 'BookStockLog')).epoch;

  // the tailer is down while the oplog rolls over
  await t.stop();
  await mongo.insert('BookStockLog', { _id: 'hl00000001', n: 1 });
  await mongo.truncateHistory();
  t = await M.startTailer({ redis, mongo });
  const err = await c.next((x) => x && x.op === 'error', 15000);
  assert.equal(err.code, 100);
  assert.equal(err.reconnect, true);
  assert.match(err.error, /BookStockLog/);
  const closed = await h.withTimeout(c.closed, 3000, 'resync close');
  assert.equal(closed.code, 1012);
  const st = await M.tailerState(pub, 'BookStockLog');
  assert.notEqual(st.epoch, epoch1, 'a new epoch');
  assert.equal(st.seq, '0');
  assert.equal(other.closeInfo, null, 'a client of another class is not disturbed');

  // the SDK is told, reconnects by itself and gets what follows
  await h.waitFor(() => sdk.errors.length >= 1, { what: 'SDK error event' });
  await h.waitFor(() => sdk.opens >= 2, { timeout: 20000, what: 'SDK reconnected' });
  await h.sleep(500); // resubscribe round trip
  await mongo.insert('BookStockLog', { _id: 'hl00000002', n: 2 });
  const e = await inbox.next((x) => x.object.id === 'hl00000002', 10000);
  assert.equal(e.op, 'create');

  // invalidate (collection dropped): the same
  const c2 = await h.wsClient(gw.url);
  await c2.connect({ masterKey: h.MASTER_KEY });
  await c2.subscribe(1, 'BookStockLog', {});
  const epoch2 = (await M.tailerState(pub, 'BookStockLog')).epoch;
  await mongo.drop('BookStockLog');
  const err2 = await c2.next((x) => x && x.op === 'error', 10000);
  assert.equal(err2.code, 100);
  assert.notEqual((await M.tailerState(pub, 'BookStockLog')).epoch, epoch2);
  // and the tailer keeps watching the re-created collection
  const c3 = await h.wsClient(gw.url);
  await c3.connect({ masterKey: h.MASTER_KEY });
  await c3.subscribe(1, 'BookStockLog', {});
  await mongo.insert('BookStockLog', { _id: 'hl00000003', n: 3 });
  assert.equal((await c3.event(1, 'hl00000003', 10000)).op, 'create');
  const m = await M.metrics(t);
  assert.ok(m.tailer_epochs >= 2 && m.tailer_history_lost >= 1, JSON.stringify(m));
});

h.test('Redis restarted empty while events are written: they are published in a new epoch, subscribers resync', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const { gw, c } = await watcher(redis);
  let pub = await h.publisher(redis.port);
  const t = await M.startTailer({ redis, mongo });
  await h.waitFor(async () => (await M.tailerState(pub, 'BookStockLog')).token, { timeout: 15000, what: 'stream open' });
  await mongo.insert('BookStockLog', { _id: 'rr00000000', n: 0 });
  await expectCreates(c, 0, 1);

  await redis.stop();
  for (let i = 1; i <= 5; i++) await mongo.insert('BookStockLog', { _id: `rr${String(i).padStart(8, '0')}`, n: i });
  await redis.start(); // no persistence: lease, state and history are gone
  const err = await c.next((x) => x && x.op === 'error', 20000);
  assert.equal(err.code, 100, 'the gateway tells the subscriber to resync');
  pub = await h.publisher(redis.port);
  await h.waitFor(async () => Number((await M.tailerState(pub, 'BookStockLog')).seq) >= 5,
    { timeout: 20000, what: 'the events written during the outage published in the new epoch' });
  const hist = await M.history(pub, 'BookStockLog');
  assert.deepEqual(hist.map((x) => x.msg.object.n), [1, 2, 3, 4, 5], 'nothing skipped');
  const c2 = await h.wsClient(gw.url);
  await c2.connect({ masterKey: h.MASTER_KEY });
  await c2.subscribe(1, 'BookStockLog', {});
  await mongo.insert('BookStockLog', { _id: 'rr00000006', n: 6 });
  assert.equal((await c2.event(1, 'rr00000006', 10000)).object.n, 6);
  assert.ok((await M.metrics(t)).tailer_epochs >= 1);
});

h.test('an unreadable stored resume token starts a new epoch, never a silent restart from now', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const { c } = await watcher(redis);
  const pub = await h.publisher(redis.port);
  let t = await M.startTailer({ redis, mongo });
  await h.waitFor(async () => (await M.tailerState(pub, 'BookStockLog')).token, { timeout: 15000, what: 'stream open' });
  await mongo.insert('BookStockLog', { _id: 'ut00000000', n: 0 });
  await expectCreates(c, 0, 1);
  await t.stop();
  const before = await M.tailerState(pub, 'BookStockLog');
  await pub.client.hSet(`livequery:${h.APP_ID}:tailer:BookStockLog`, 'token', '{"_data": not json');
  t = await M.startTailer({ redis, mongo });
  const err = await c.next((x) => x && x.op === 'error', 15000);
  assert.equal(err.code, 100);
  const after2 = await M.tailerState(pub, 'BookStockLog');
  assert.notEqual(after2.epoch, before.epoch);
  assert.match(t.logs(), /stored resume token is unreadable/);
});
