'use strict';
/*
 * Session lookups and the request stream of one connection: requests sent
 * while a lookup is in flight are answered in order; a flood of them is
 * bounded; bogus tokens cost one lookup each and never a second; without a
 * MongoDB, or with one that cannot be reached, the client is told clearly and
 * every other client carries on.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');
const A = require('./authfix');

after(h.teardown);

const CLS = 'SigningSchedule';

async function stackWithUser() {
  const st = await A.startAuthStack({ classes: [CLS] });
  await A.seedAuth(st.mongo, { users: [{ id: 'uReq000001', username: 'req' }] });
  const s = await A.createSession(st.mongo, 'uReq000001');
  return { ...st, token: s.token };
}

/* The frames with a requestId (or errors), in arrival order, until n arrived. */
async function replies(c, n, timeoutMs = 5000) {
  const out = [];
  while (out.length < n) {
    const f = await c.next((x) => x && (x.op === 'subscribed' || x.op === 'unsubscribed' || x.op === 'error'),
      timeoutMs);
    out.push(`${f.op}:${f.requestId}${f.code ? `:${f.code}` : ''}`);
  }
  return out;
}

h.test('requests behind a session lookup are answered in the order they were sent', async () => {
  const st = await stackWithUser();
  const c = await h.wsClient(st.url);
  /* all in one burst: the connect's lookup is still in flight for the first subscribe */
  c.send({ op: 'connect', applicationId: h.APP_ID, sessionToken: st.token });
  c.send({ op: 'subscribe', requestId: 1, query: { className: CLS, where: {} } });
  c.send({ op: 'unsubscribe', requestId: 1 });
  c.send({ op: 'subscribe', requestId: 2, query: { className: CLS, where: {} }, sessionToken: 'r:bogus-token-2' });
  c.send({ op: 'subscribe', requestId: 3, query: { className: CLS, where: {} } });
  c.send({ op: 'unsubscribe', requestId: 2 });
  await c.next((x) => x.op === 'connected', 5000);
  assert.deepEqual(await replies(c, 5), [
    'subscribed:1', 'unsubscribed:1', 'error:2:209', 'subscribed:3', 'error:null:2',
  ]);
  /* the subscription made after the wait is live, under the user */
  await st.mongo.insert(CLS, { _id: 'sReq000001', title: 't', _rperm: ['uReq000001'], _wperm: [] });
  const ev = await c.event(3, 'sReq000001', 5000);
  assert.equal(ev.op, 'create');
});

h.test('a bad token is looked up once, however often it is sent; other clients carry on', async () => {
  const st = await stackWithUser();
  const bad = await h.wsClient(st.url);
  await bad.connect();
  const good = await h.wsClient(st.url);
  await good.connect({ sessionToken: st.token });
  assert.equal((await A.trySubscribe(good, 1, CLS, {})).op, 'subscribed');
  const before = await M.metrics(st.gw);
  for (let i = 1; i <= 40; i++) {
    bad.send({ op: 'subscribe', requestId: i, query: { className: CLS, where: {} }, sessionToken: 'r:not-a-session' });
  }
  const got = await replies(bad, 40);
  assert.deepEqual(got, Array.from({ length: 40 }, (_, i) => `error:${i + 1}:209`));
  const m = await M.metrics(st.gw);
  assert.equal(m.auth_lookups - before.auth_lookups, 1, 'one lookup for 40 uses of one bad token');
  assert.ok(m.auth_tokens_invalid >= 1);
  await st.mongo.insert(CLS, { _id: 'sReq000002', title: 't', _rperm: ['uReq000001'], _wperm: [] });
  assert.equal((await good.event(1, 'sReq000002', 5000)).op, 'create', 'the good client still gets events');
});

h.test('a session token longer than 512 bytes is refused (209) without a lookup', async () => {
  const st = await stackWithUser();
  const before = await M.metrics(st.gw);
  const c = await h.wsClient(st.url);
  await c.connect({ sessionToken: `r:${'x'.repeat(600)}` });
  assert.deepEqual(await A.trySubscribe(c, 1, CLS, {}), A.ERR.session(1), 'connect-level');
  assert.deepEqual(await A.trySubscribe(c, 2, CLS, {}, { sessionToken: `r:${'y'.repeat(513)}` }), A.ERR.session(2));
  assert.equal((await A.trySubscribe(c, 3, CLS, {}, { sessionToken: st.token })).op, 'subscribed',
    'its own good token still works');
  const m = await M.metrics(st.gw);
  assert.equal(m.auth_lookups - before.auth_lookups, 1, 'only the good token was looked up');
});

h.test('more than 64 requests waiting on one lookup: the excess is refused (155), the rest answered', async () => {
  /* a MongoDB that never answers keeps the first lookup in flight */
  const redis = await h.startRedis();
  const port = await h.freePort();
  const sink = require('node:net').createServer(() => {}).listen(port, '127.0.0.1');
  h.onTeardown(() => sink.close());
  const gw = await h.startGateway({
    redis, args: ['--role', 'gateway', '--mongodb-uri',
      `mongodb://127.0.0.1:${port}/parse?serverSelectionTimeoutMS=1500&connectTimeoutMS=1500`],
  });
  const c = await h.wsClient(gw.url);
  await c.connect();
  c.send({ op: 'subscribe', requestId: 1, query: { className: CLS, where: {} }, sessionToken: 'r:waits' });
  for (let i = 2; i <= 70; i++) c.send({ op: 'subscribe', requestId: i, query: { className: CLS, where: {} } });
  /* 64 may wait, the head included: requests 65..70 are refused at once */
  for (let i = 0; i < 6; i++) {
    const e = await c.next((x) => x.op === 'error' && x.code === 155, 3000);
    assert.equal(e.error, 'too many requests waiting for a session check (limit 64)');
    assert.equal(e.requestId, null);
  }
  /* MongoDB unreachable: the head gets code 100 with reconnect:true, then the others go through */
  const head = await c.next((x) => x.requestId === 1, 15000);
  assert.deepEqual(head, {
    op: 'error', error: 'Session token could not be checked now; try again', code: 100, reconnect: true, requestId: 1,
  });
  const rest = await replies(c, 63, 10000);
  assert.deepEqual(rest, Array.from({ length: 63 }, (_, i) => `subscribed:${i + 2}`));
  const m = await M.metrics(gw);
  assert.ok(m.auth_lookup_errors >= 1);
  assert.equal(m.auth_waiting, 0);
});

h.test('without --mongodb-uri a token cannot be checked: 209, anonymous subscriptions still work', async () => {
  const { gw, pub } = await h.startStack();
  const c = await h.wsClient(gw.url);
  await c.connect({ sessionToken: 'r:anything' });
  assert.deepEqual(await A.trySubscribe(c, 1, CLS, {}), A.ERR.session(1));
  const anon = await h.wsClient(gw.url);
  await anon.connect();
  assert.equal((await A.trySubscribe(anon, 1, CLS, {})).op, 'subscribed');
  await pub.change(CLS, 'create', { objectId: 'o1', className: CLS });
  assert.equal((await anon.event(1, 'o1', 5000)).op, 'create');
  assert.match(gw.logs(), /session tokens cannot be checked/);
});
