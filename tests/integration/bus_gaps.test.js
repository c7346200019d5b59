'use strict';
/*
 * The gateway side of seq/epoch (protocol/bus.md "Ordering and gap repair"),
 * driven by hand through Redis, without a tailer: a repeated seq is dropped,
 * a gap is filled from the class's history stream before later events are
 * delivered, a gap older than the stream or a new epoch makes the class's
 * subscribers resync, and events missed while Redis was away are caught up.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');

let s;
before(async () => { s = await h.startStack({ masterKey: h.MASTER_KEY }); });
after(h.teardown);

const CLS = 'BookStockLog';
const STREAM = `livequery:${h.APP_ID}:stream:${CLS}`;
const STATE = `livequery:${h.APP_ID}:tailer:${CLS}`;

function message(seq, epoch, n) {
  return JSON.stringify({
    v: 1, className: CLS, op: 'create', seq, epoch, ts: Date.now(),
    object: h.obj({ objectId: `g${String(n).padStart(9, '0')}`, className: CLS, n }),
  });
}
/* What the tailer's script does, split so tests can leave parts out. */
async function record(seq, epoch, n) {
  const m = message(seq, epoch, n);
  await s.pub.client.xAdd(STREAM, `${seq}-0`, { m });
  await s.pub.client.hSet(STATE, { epoch, seq: String(seq) });
  return m;
}
async function sub() {
  const c = await h.wsClient(s.url);
  await c.connect({ masterKey: h.MASTER_KEY });
  await c.subscribe(1, CLS, {});
  return c;
}
async function ns(c, k) {
  const out = [];
  for (let i = 0; i < k; i++) out.push((await c.event(1, undefined, 3000)).object.n);
  return out;
}

h.test('a repeated seq is dropped; a gap is repaired from the stream, in order', async () => {
  const c = await sub();
  const E = 'e1';
  await s.pub.raw(s.pub.channel, await record(1, E, 1));
  assert.deepEqual(await ns(c, 1), [1]);
  await s.pub.raw(s.pub.channel, message(1, E, 1)); // a repeat (a tailer crash replays the event in flight)
  for (let i = 2; i <= 4; i++) await record(i, E, i); // in the stream, never published
  await s.pub.raw(s.pub.channel, await record(5, E, 5));
  assert.deepEqual(await ns(c, 4), [2, 3, 4, 5]);
  await c.none(300);
  const m = await M.metrics(s.gw);
  assert.equal(m.bus_duplicates_dropped, 1);
  assert.equal(m.bus_gaps_repaired, 3);
});

h.test('a gap older than the stream makes the class resync; other classes are left alone', async () => {
  const c = await sub();
  const other = await h.wsClient(s.url);
  await other.connect();
  await other.subscribe(1, 'SigningSchedule', {});
  const E = 'e1';
  await s.pub.client.xTrim(STREAM, 'MAXLEN', 0);
  await s.pub.raw(s.pub.channel, await record(9, E, 9)); // 6..8 are nowhere
  const err = await c.next((x) => x && x.op === 'error', 3000);
  assert.deepEqual(Object.keys(err).sort(), ['code', 'error', 'op', 'reconnect', 'requestId']);
  assert.equal(err.code, 100);
  assert.equal(err.reconnect, true);
  assert.equal(err.requestId, null);
  assert.equal((await h.withTimeout(c.closed, 3000, 'close')).code, 1012);
  assert.equal(other.closeInfo, null);
  assert.ok((await M.metrics(s.gw)).bus_resyncs >= 1);

  // after the resync, delivery continues from seq 9
  const c2 = await sub();
  await s.pub.raw(s.pub.channel, await record(10, E, 10));
  assert.deepEqual(await ns(c2, 1), [10]);
});

h.test('a new epoch (resync message or an event of another epoch) makes the class resync', async () => {
  const c = await sub();
  await s.pub.raw(s.pub.channel, JSON.stringify({ v: 1, className: CLS, op: 'resync', epoch: 'e2', seq: 0, reason: 'test' }));
  assert.equal((await c.next((x) => x && x.op === 'error', 3000)).code, 100);
  const c2 = await sub();
  await s.pub.client.del(STREAM);
  await s.pub.raw(s.pub.channel, await record(1, 'e2', 1));
  assert.deepEqual(await ns(c2, 1), [1]);
  await s.pub.client.del(STREAM); // a new epoch starts a new stream
  await s.pub.raw(s.pub.channel, await record(1, 'e3', 2)); // an epoch it never heard announced
  assert.equal((await c2.next((x) => x && x.op === 'error', 3000)).code, 100);
});

h.test('events published while Redis was unreachable for the gateway are caught up from the stream', async () => {
  const c = await sub();
  await s.pub.client.del(STREAM);
  await s.pub.raw(s.pub.channel, JSON.stringify({ v: 1, className: CLS, op: 'resync', epoch: 'e4', seq: 0 }));
  await c.next((x) => x && x.op === 'error', 3000);
  const c2 = await sub();
  await s.pub.raw(s.pub.channel, await record(1, 'e4', 1));
  assert.deepEqual(await ns(c2, 1), [1]);
  // two events are recorded but their PUBLISH never reaches the gateway (as
  // when its subscriber connection was down), then the connection drops
  await record(2, 'e4', 2);
  await record(3, 'e4', 3);
  await c2.none(200);
  const clients = await s.pub.client.sendCommand(['CLIENT', 'LIST', 'TYPE', 'pubsub']);
  const ids = [...clients.matchAll(/id=(\d+)/g)].map((x) => x[1]);
  assert.ok(ids.length >= 1);
  for (const id of ids) await s.pub.client.sendCommand(['CLIENT', 'KILL', 'ID', id]);
  assert.deepEqual(await ns(c2, 2), [2, 3], 'caught up after the resubscribe');
});

h.test('a new epoch started while the gateway was disconnected makes the class resync on reconnect', async () => {
  const c = await sub();
  await s.pub.client.del(STREAM);
  await record(1, 'e5', 1); // recorded, never published to this gateway
  const clients = await s.pub.client.sendCommand(['CLIENT', 'LIST', 'TYPE', 'pubsub']);
  for (const id of [...clients.matchAll(/id=(\d+)/g)].map((x) => x[1])) await s.pub.client.sendCommand(['CLIENT', 'KILL', 'ID', id]);
  const err = await c.next((x) => x && x.op === 'error', 5000);
  assert.equal(err.code, 100);
  assert.equal(err.reconnect, true);
});
