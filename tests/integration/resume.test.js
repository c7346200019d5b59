'use strict';
/*
 * The resume extension (protocol/PROTOCOL.md "Extensions"): a subscription
 * asking for positions gets the class's position in `subscribed` and each
 * event's epoch/seq in its frames; one subscribing with `since` gets the
 * events it missed from the history stream, each once and in order, before
 * live ones, or a code-100 error when they are gone. Through the whole chain:
 * our MongoDB test server -> tailer -> Redis -> gateway -> raw WebSocket.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');

after(h.teardown);

const CLS = 'BookStockLog';
const STREAM_MAX = 200;
let redis, mongo, gw, pub;
let nextId = 0;

before(async () => {
  redis = await h.startRedis();
  mongo = await M.startMongo();
  gw = await M.startTailer({ redis, mongo, classes: CLS, args: ['--stream-max-len', String(STREAM_MAX)] });
  pub = await h.publisher(redis.port);
  await h.waitFor(async () => (await M.tailerState(pub, CLS)).token !== undefined, { timeout: 15000, what: 'stream open' });
});

const id = () => `rz${String(nextId++).padStart(8, '0')}`;
const state = async () => { const s = await M.tailerState(pub, CLS); return { epoch: s.epoch, seq: Number(s.seq || 0) }; };
async function published(seq) {
  await h.waitFor(async () => (await state()).seq >= seq, { timeout: 15000, what: `tailer at seq ${seq}` });
}

async function client() {
  const c = await h.wsClient(gw.url);
  await c.connect();
  return c;
}
/* Sends a subscribe with the extension fields; returns the reply (subscribed or error). */
async function psub(c, requestId, where, ext, className = CLS) {
  c.send({ op: 'subscribe', requestId, query: { className, where }, ...ext });
  return c.next((x) => x && x.requestId === requestId && (x.op === 'subscribed' || x.op === 'error'));
}
const brief = (f) => ({ op: f.op, id: f.object.objectId, n: f.object.n, shelf: f.object.shelf, epoch: f.epoch, seq: f.seq });
async function events(c, rid, k, timeoutMs = 10000) {
  const out = [];
  for (let i = 0; i < k; i++) out.push(brief(await c.event(rid, undefined, timeoutMs)));
  return out;
}

h.test('positions: subscribed carries the class position, each event its epoch and seq; plain subscriptions are unchanged', async () => {
  for (let i = 0; i < 3; i++) await mongo.insert(CLS, { _id: id(), shelf: 'A', n: i });
  await published(3);
  const st = await state();
  const c = await client();
  await c.subscribe(1, CLS, { shelf: 'A' });
  const sub = await psub(c, 2, { shelf: 'A' }, { positions: true });
  assert.deepEqual(sub, { ...c.expectedReply('subscribed', 2), epoch: st.epoch, seq: st.seq });

  await mongo.insert(CLS, { _id: id(), shelf: 'B', n: 100 }); // not matched: still takes a seq
  const a = id();
  await mongo.insert(CLS, { _id: a, shelf: 'A', n: 101 });
  const plain = await c.event(1, a);
  const pos = await c.event(2, a);
  assert.equal('seq' in plain || 'epoch' in plain, false, `a plain subscription got a position: ${h.show(plain)}`);
  assert.equal(pos.epoch, st.epoch);
  assert.equal(pos.seq, st.seq + 2);
  const { epoch: _e, seq: _s, requestId: _r1, ...restPos } = pos;
  const { requestId: _r2, ...restPlain } = plain;
  assert.deepEqual(restPos, restPlain, 'the same frame apart from requestId and position');
  await c.none(200);
});

h.test('resume: events missed while away arrive once, in order, as create/leave/enter/update/delete, then live ones', async () => {
  const witness = await client();
  await psub(witness, 1, { shelf: 'A' }, { positions: true });
  const c = await client();
  await psub(c, 1, { shelf: 'A' }, { positions: true });
  const x = id(), y = id(), z = id();
  await mongo.insert(CLS, { _id: x, shelf: 'A', n: 1 });
  await mongo.insert(CLS, { _id: y, shelf: 'B', n: 2 });
  const [seen] = await events(c, 1, 1);
  const w0 = await events(witness, 1, 1);
  assert.deepEqual(w0, [seen]);
  await c.close();

  // while away: leave, enter, update, an unmatched create, create, delete
  await mongo.update(CLS, x, { shelf: 'B' });
  await mongo.update(CLS, y, { shelf: 'A' });
  await mongo.update(CLS, y, { n: 3 });
  await mongo.insert(CLS, { _id: id(), shelf: 'C', n: 4 });
  await mongo.insert(CLS, { _id: z, shelf: 'A', n: 5 });
  await mongo.remove(CLS, z);
  const missed = await events(witness, 1, 5);
  assert.deepEqual(missed.map((e) => e.op), ['leave', 'enter', 'update', 'create', 'delete']);

  const before = (await M.metrics(gw)).resume_events;
  const c2 = await client();
  const sub = await psub(c2, 7, { shelf: 'A' }, { since: { epoch: seen.epoch, seq: seen.seq } });
  assert.equal(sub.op, 'subscribed', h.show(sub));
  assert.equal(sub.epoch, seen.epoch);
  assert.equal(sub.seq, missed[missed.length - 1].seq, 'subscribed names the last event replayed');
  assert.deepEqual(await events(c2, 7, 5), missed, 'replayed = what the witness got while we were away');
  const first = c2.all.findIndex((f) => f && f.op === 'subscribed' && f.requestId === 7);
  const firstEvent = c2.all.findIndex((f) => f && h.EVENT_OPS.includes(f.op));
  assert.ok(first < firstEvent, 'subscribed comes before the replayed events');

  const live = id();
  await mongo.insert(CLS, { _id: live, shelf: 'A', n: 6 });
  const [l1] = await events(c2, 7, 1);
  const [l2] = await events(witness, 1, 1);
  assert.deepEqual(l1, l2);
  assert.equal(l1.seq, missed[missed.length - 1].seq + 1);
  await c2.none(300);
  const m = await M.metrics(gw);
  assert.ok(m.resume_events - before >= 6, `resume_events grew by ${m.resume_events - before}`); // 6 class events after seen, 1 unmatched
});

h.test('resume while writes keep coming, three times: no gap, no repeat, in order', async () => {
  const c0 = await client();
  await psub(c0, 1, { shelf: 'S' }, { positions: true });
  const N = 150;
  let stop = false;
  const writer = (async () => {
    for (let i = 0; i < N && !stop; i++) {
      await mongo.insert(CLS, { _id: id(), shelf: 'S', n: i });
      await h.sleep(4);
    }
  })();
  const got = [];
  let c = c0;
  let rid = 1;
  try {
    for (let round = 0; round < 3; round++) {
      const k = 10 + round * 5;
      got.push(...await events(c, rid, k));
      await c.close(); // abrupt for the event stream: some are in flight
      await h.sleep(60);
      const last = got[got.length - 1];
      c = await client();
      rid++;
      const sub = await psub(c, rid, { shelf: 'S' }, { since: { epoch: last.epoch, seq: last.seq } });
      assert.equal(sub.op, 'subscribed', h.show(sub));
    }
    while (got.length === 0 || got[got.length - 1].n < N - 1) got.push(...await events(c, rid, 1));
  } finally {
    stop = true;
    await writer;
  }
  const ns = got.map((e) => e.n);
  const n0 = ns[0];
  assert.deepEqual(ns, Array.from({ length: N - n0 }, (_, i) => n0 + i), 'every event once, in order');
  for (let i = 1; i < got.length; i++) assert.equal(got[i].seq, got[i - 1].seq + 1, `seq after ${got[i - 1].seq}`);
  await c.none(300);
});

h.test('gone: trimmed history, another epoch or a future seq get error 100 with the requestId; the connection carries on', async () => {
  const st0 = await state();
  const bulk = STREAM_MAX + 20;
  await mongo.bulk(CLS, bulk, { shelf: 'Z' });
  await published(st0.seq + bulk);
  const st = await state();
  const before = (await M.metrics(gw)).resumes_gone;
  const c = await client();
  const cases = [
    { epoch: st.epoch, seq: st0.seq }, // the stream keeps only the last STREAM_MAX
    { epoch: `${st.epoch}x`, seq: st.seq },
    { epoch: st.epoch, seq: st.seq + 1000 },
  ];
  let rid = 10;
  for (const since of cases) {
    const f = await psub(c, ++rid, { shelf: 'Z' }, { since });
    assert.equal(f.op, 'error', `since ${JSON.stringify(since)}: ${h.show(f)}`);
    assert.equal(f.code, 100);
    assert.equal(f.reconnect, false);
    assert.match(f.error, /no longer available; query again and subscribe without since/);
  }
  // the refused subscriptions do not exist; the connection still works
  const z = id();
  await mongo.insert(CLS, { _id: z, shelf: 'Z', n: 0 });
  await c.subscribe(20, CLS, { shelf: 'Z' });
  const y = id();
  await mongo.insert(CLS, { _id: y, shelf: 'Z', n: 1 });
  await c.event(20, y);
  await c.none(300, (f) => f && f.requestId >= 11 && f.requestId <= 13);
  // from the current position: nothing to replay, live from there
  const ok = await psub(c, 21, { shelf: 'Z' }, { since: { epoch: st.epoch, seq: (await state()).seq } });
  assert.equal(ok.op, 'subscribed', h.show(ok));
  assert.equal((await M.metrics(gw)).resumes_gone - before, cases.length);
  assert.ok(c.isOpen);
});

h.test('malformed positions or since: a schema error (code 1), nothing subscribed', async () => {
  const c = await client();
  const bad = [
    { positions: 'yes' },
    { since: { epoch: 5, seq: 1 } },
    { since: { epoch: 'e', seq: -1 } },
    { since: { epoch: 'e', seq: 1.5 } },
    { since: { epoch: '', seq: 1 } },
    { since: { epoch: 'e'.repeat(40), seq: 1 } },
    { since: { epoch: 'e', seq: 1, more: 1 } },
    { since: 'e:1' },
  ];
  for (const [i, ext] of bad.entries()) {
    c.send({ op: 'subscribe', requestId: 30 + i, query: { className: CLS, where: {} }, ...ext });
    const f = await c.next((x) => x && x.op === 'error' || (x && x.requestId === 30 + i));
    assert.equal(f.op, 'error', `${JSON.stringify(ext)}: ${h.show(f)}`);
    assert.equal(f.code, 1, `${JSON.stringify(ext)}: ${h.show(f)}`);
  }
  await mongo.insert(CLS, { _id: id(), shelf: 'A', n: 0 });
  await c.none(300);
});

h.test('hand-driven race: live events at or below the position given are not delivered again', async () => {
  // by hand through Redis, on a class the tailer does not watch: what the tailer's script does
  const K = 'SigningSchedule';
  const E = 'hand1';
  const message = (seq) => JSON.stringify({
    v: 1, className: K, op: 'create', seq, epoch: E, ts: Date.now(),
    object: h.obj({ objectId: `hd${String(seq).padStart(8, '0')}`, className: K, n: seq }),
  });
  const record = async (seq) => {
    await pub.client.xAdd(`livequery:${h.APP_ID}:stream:${K}`, `${seq}-0`, { m: message(seq) });
    await pub.client.hSet(`livequery:${h.APP_ID}:tailer:${K}`, { epoch: E, seq: String(seq) });
  };
  const ns = async (c, rid, k) => (await events(c, rid, k, 3000)).map((e) => e.n);
  const live = await client();
  await live.subscribe(1, K, {});
  for (const seq of [1, 2]) { await record(seq); await pub.raw(pub.channel, message(seq)); }
  assert.deepEqual(await ns(live, 1, 2), [1, 2]);
  for (const seq of [3, 4, 5]) await record(seq); // in the history, not yet heard live

  const r = await client();
  const sub = await psub(r, 1, {}, { since: { epoch: E, seq: 2 } }, K);
  assert.deepEqual([sub.op, sub.seq], ['subscribed', 5]);
  assert.deepEqual(await ns(r, 1, 3), [3, 4, 5]);
  await pub.raw(pub.channel, message(5)); // arrives live after the replay: the gap 3..4 is repaired
  assert.deepEqual(await ns(live, 1, 3), [3, 4, 5]);
  await record(6);
  await pub.raw(pub.channel, message(6));
  assert.deepEqual(await ns(live, 1, 1), [6]);
  assert.deepEqual(await ns(r, 1, 1), [6], 'after the replay only what is new: 3..5 not again');
  await r.none(300);
});

h.test(`at most 16 positions subscriptions of a connection wait for their position; more get 155 at once`, async () => {
  const c = await client();
  await pub.client.sendCommand(['CLIENT', 'PAUSE', '1500', 'ALL']); // the bus thread's reads wait
  const t0 = Date.now();
  for (let i = 0; i < 20; i++) c.send({ op: 'subscribe', requestId: 100 + i, query: { className: CLS, where: {} }, positions: true });
  const refused = [];
  for (let i = 0; i < 4; i++) refused.push(await c.next((x) => x && x.op === 'error', 1000));
  assert.ok(Date.now() - t0 < 1400, 'refused at once, not after the pause');
  for (const f of refused) {
    assert.equal(f.code, 155);
    assert.match(f.error, /too many subscriptions waiting for their position on this connection \(limit 16\)/);
  }
  assert.deepEqual(refused.map((f) => f.requestId), [116, 117, 118, 119]);
  for (let i = 0; i < 16; i++) {
    const f = await c.next((x) => x && x.requestId === 100 + i, 5000);
    assert.equal(f.op, 'subscribed', h.show(f));
  }
});

h.test('Redis unreachable: a positions subscribe gets error 100 reconnect:true at once, and works once Redis is back', async () => {
  const r2 = await h.startRedis();
  const g2 = await h.startGateway({ redis: r2 });
  const c = await h.wsClient(g2.url);
  await c.connect();
  await r2.stop();
  const t0 = Date.now();
  for (const rid of [1, 2]) {
    const f = await psub(c, rid, {}, rid === 1 ? { positions: true } : { since: { epoch: 'e', seq: 1 } });
    assert.equal(f.op, 'error', h.show(f));
    assert.equal(f.code, 100);
    assert.equal(f.reconnect, true);
    assert.match(f.error, new RegExp(`Live query position for class ${CLS} could not be read now; try again`));
  }
  assert.ok(Date.now() - t0 < 2000, `answered at once, not after connect timeouts (${Date.now() - t0} ms)`);
  await r2.start();
  await h.waitFor(async () => (await M.metrics(g2)).bus_connected === 1, { timeout: 10000, what: 'bus reconnected' });
  const ok = await psub(c, 3, {}, { positions: true });
  assert.deepEqual(ok, c.expectedReply('subscribed', 3), 'no history for the class yet: no position');
  assert.ok(c.isOpen);
});
