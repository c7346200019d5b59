'use strict';
/*
 * Hostile clients and hostile bus messages. A bystander client is subscribed
 * for the whole file while a ticker publishes numbered events; at the end it
 * must have received every one of them, in order, exactly once, and the
 * gateway process must still be alive.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const h = require('./harness');
const { metrics } = require('./mongo');

const MAX_FRAME = 65536;
const MAX_SUBS = 256;      // the default
const MAX_QUERY = 16384;   // the default
let s;
let bystander;
const tick = { n: 0, stopped: false, done: null };

before(async () => {
  // --message-burst: the subscription test sends 3000 requests at once (abuse.test.js tests the rate)
  s = await h.startStack({ args: ['--max-frame-bytes', String(MAX_FRAME), '--message-burst', '5000'] });
  bystander = await h.wsClient(s.url);
  await bystander.connect();
  await bystander.subscribe(1, 'Heartbeat', {});
  tick.done = (async () => {
    while (!tick.stopped) {
      const n = ++tick.n;
      await s.pub.change('Heartbeat', 'create', h.obj({ objectId: `hb${n}`, className: 'Heartbeat', n }));
      await h.sleep(40);
    }
  })();
  h.onTeardown(async () => { tick.stopped = true; await tick.done.catch(() => {}); });
});
after(h.teardown);

async function connected() {
  const c = await h.wsClient(s.url);
  await c.connect();
  return c;
}

h.test('deeply nested JSON (10000 levels) gets error code 1 and the connection keeps working', async () => {
  const m0 = await metrics(s.gw);
  const c = await h.wsClient(s.url);
  c.send('['.repeat(10000) + ']'.repeat(10000));
  assert.deepEqual(await c.next(), { op: 'error', error: 'JSON nesting is deeper than 64', code: 1, reconnect: false, requestId: null });
  c.send(`{"op":"connect","applicationId":"bookstore","x":${'{"a":'.repeat(10000)}1${'}'.repeat(10000)}}`);
  assert.deepEqual(await c.next(), { op: 'error', error: 'JSON nesting is deeper than 64', code: 1, reconnect: false, requestId: null });
  await c.connect();
  // 60 levels is within the limit: whatever the reply, it is not the JSON depth error
  c.send(`{"op":"subscribe","requestId":1,"query":{"className":"Deep","where":${'{"a":'.repeat(57)}1${'}'.repeat(57)}}}`);
  const f = await c.next();
  assert.ok(!(f.op === 'error' && f.code === 1), `60 levels must not be a code-1 error: ${JSON.stringify(f)}`);
  assert.equal(c.closeInfo, null);
  const m1 = await metrics(s.gw);
  assert.equal(m1.limit_json_depth - m0.limit_json_depth, 2, 'limit_json_depth counts the two refused frames');
  assert.equal(m1.limit_query_depth - m0.limit_query_depth, 1, `limit_query_depth counts the 57-level where (${JSON.stringify(f)})`);
});

h.test('a frame larger than --max-frame-bytes is closed with 1009 "frame too large"', async () => {
  const c = await connected();
  const big = JSON.stringify({ op: 'subscribe', requestId: 1, query: { className: 'Big', where: { s: 'x'.repeat(MAX_FRAME + 10) } } });
  c.send(big);
  const info = await h.withTimeout(c.closed, 5000, 'close after an oversized frame');
  assert.equal(info.code, 1009, `close code (reason ${JSON.stringify(info.reason)})`);
  assert.equal(info.reason, 'frame too large');
  assert.deepEqual(c.pending, [], 'no frame other than the close');
});

h.test('a fragmented message larger than --max-frame-bytes is also refused with 1009', async () => {
  const c = await connected();
  const half = 'x'.repeat(MAX_FRAME / 2 + 100);
  c.ws.send(`{"op":"connect","applicationId":"bookstore","installationId":"${half}`, { fin: false });
  c.ws.send(half, { fin: false });
  c.ws.send('"}', { fin: true });
  const info = await h.withTimeout(c.closed, 5000, 'close after an oversized fragmented message');
  assert.equal(info.code, 1009);
  assert.equal(info.reason, 'frame too large');
});

h.test('invalid UTF-8 in a text frame closes the connection with 1007', async () => {
  const c = await connected();
  c.send(Buffer.from([0x7b, 0x22, 0x6f, 0x70, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]), { binary: false });
  const info = await h.withTimeout(c.closed, 5000, 'close after invalid UTF-8');
  assert.equal(info.code, 1007, `close code (reason ${JSON.stringify(info.reason)})`);
});

h.test('binary frames are ignored like non-JSON text', async () => {
  const c = await connected();
  c.send(Buffer.from(JSON.stringify({ op: 'subscribe', requestId: 1, query: { className: 'Bin', where: {} } })), { binary: true });
  await c.none(300);
  await c.subscribe(2, 'Bin', {});
  assert.equal(c.closeInfo, null);
});

h.test(`thousands of subscriptions: code 155 after ${MAX_SUBS}, earlier ones still work`, async () => {
  const m0 = await metrics(s.gw);
  const c = await connected();
  const total = 3000;
  for (let r = 1; r <= total; r++) {
    c.send({ op: 'subscribe', requestId: r, query: { className: 'Crowd', where: { kind: 'crowd' } } });
  }
  for (let r = 1; r <= total; r++) {
    const f = await c.next(5000);
    if (r <= MAX_SUBS) {
      assert.deepEqual(f, { op: 'subscribed', clientId: c.clientId, requestId: r }, `reply to subscribe ${r}`);
    } else {
      assert.deepEqual(f, {
        op: 'error', error: `too many subscriptions on this connection (limit ${MAX_SUBS})`, code: 155, reconnect: false, requestId: r,
      }, `reply to subscribe ${r}`);
    }
  }
  await s.pub.change('Crowd', 'create', h.obj({ objectId: 'Crowd00001', className: 'Crowd', kind: 'crowd' }));
  const got = new Set();
  for (let i = 0; i < MAX_SUBS; i++) {
    const f = await c.next(5000);
    assert.equal(f.op, 'create');
    assert.equal(f.object.objectId, 'Crowd00001');
    got.add(f.requestId);
  }
  assert.deepEqual([...got].sort((a, b) => a - b), Array.from({ length: MAX_SUBS }, (_, i) => i + 1), 'one create per live subscription 1..N');
  await c.none(300);
  // the limit counts live subscriptions: freeing one makes room for one more
  await c.unsubscribe(1);
  await c.subscribe(5001, 'Crowd', { kind: 'crowd' });
  c.send({ op: 'subscribe', requestId: 5002, query: { className: 'Crowd', where: {} } });
  assert.deepEqual(await c.next(), {
    op: 'error', error: `too many subscriptions on this connection (limit ${MAX_SUBS})`, code: 155, reconnect: false, requestId: 5002,
  });
  const m1 = await metrics(s.gw);
  assert.equal(m1.limit_subscriptions - m0.limit_subscriptions, total - MAX_SUBS + 1, 'limit_subscriptions counts every refused subscribe');
  assert.equal(m1.limit_rate - m0.limit_rate, 0);
});

h.test('a query over --max-query-bytes gets 102', async () => {
  const m0 = await metrics(s.gw);
  const c = await connected();
  c.send({ op: 'subscribe', requestId: 7, query: { className: 'Big', where: { title: 'y'.repeat(MAX_QUERY + 100) } } });
  assert.deepEqual(await c.next(), {
    op: 'error', error: `query is larger than ${MAX_QUERY} bytes`, code: 102, reconnect: false, requestId: 7,
  });
  assert.equal((await metrics(s.gw)).limit_query_size - m0.limit_query_size, 1, 'limit_query_size counts it');
  c.send({ op: 'unsubscribe', requestId: 7 });
  assert.equal((await c.next()).code, 2, 'the refused subscription does not exist');
  await c.subscribe(8, 'Big', { title: 'y'.repeat(1000) });
});

h.test('malformed bus messages change nothing; later valid events still arrive', async () => {
  const c = await connected();
  await c.subscribe(1, 'Target', {});
  const ch = s.pub.channel;
  const good = (id) => h.obj({ objectId: id, className: 'Target' });
  const bad = [
    'not json at all',
    '',
    '{"v":1,"className":"Target","op":"create","object":',
    '[]',
    '42',
    'null',
    JSON.stringify({ v: 2, className: 'Target', op: 'create', object: good('BadV000001') }),
    JSON.stringify({ v: '1', className: 'Target', op: 'create', object: good('BadV000002') }),
    JSON.stringify({ className: 'Target', op: 'create', object: good('BadV000003') }),
    JSON.stringify({ v: 1, className: 'Target', op: 'create' }),
    JSON.stringify({ v: 1, className: 'Target', op: 'create', object: null }),
    JSON.stringify({ v: 1, className: 'Target', op: 'create', object: 'str' }),
    JSON.stringify({ v: 1, className: 'Target', op: 'create', object: { className: 'Target' } }),
    JSON.stringify({ v: 1, className: 'Target', op: 'create', object: { objectId: 7, className: 'Target' } }),
    JSON.stringify({ v: 1, className: 'Target', op: 'explode', object: good('BadOp00001') }),
    JSON.stringify({ v: 1, op: 'create', object: good('BadCls0001') }),
    JSON.stringify({ v: 1, className: 5, op: 'create', object: good('BadCls0002') }),
    JSON.stringify({ v: 1, className: 'Tar get', op: 'create', object: good('BadCls0003') }),
    JSON.stringify({ v: 1, className: 'Target', op: 'update', object: good('BadOrig001'), original: 'nope' }),
    Buffer.from([0x7b, 0xff, 0xfe, 0x7d]),
    // hostile but not necessarily invalid: nobody subscribes to Other, so only survival is asserted
    `{"v":1,"className":"Other","op":"create","object":{"objectId":"Deep000001","className":"Other","d":${'['.repeat(100000)}${']'.repeat(100000)}}}`,
    `{"v":1,"className":"Other","op":"create","object":{"objectId":"Deep000002","className":"Other","d":${'{"a":'.repeat(100000)}1${'}'.repeat(100000)}}}`,
    JSON.stringify({ v: 1, className: 'Other', op: 'create', object: h.obj({ objectId: 'Huge000001', className: 'Other', pad: 'z'.repeat(17 * 1024 * 1024) }) }),
  ];
  const mark = s.gw.logOffset();
  for (const m of bad) await s.pub.raw(ch, m);
  // Parse Server channels too
  for (const m of ['garbage', '{}', '{"currentParseObject":null}', '{"currentParseObject":{"className":"Target"}}',
    '{"currentParseObject":"x"}', '{"currentParseObject":{"objectId":"PBad000001"}}']) {
    await s.pub.raw(`${h.APP_ID}afterSave`, m);
    await s.pub.raw(`${h.APP_ID}afterDelete`, m);
  }
  await s.pub.change('Target', 'create', good('Good000001'));
  const f = await c.next(5000);
  assert.deepEqual(f, { op: 'create', clientId: c.clientId, requestId: 1, object: good('Good000001') },
    'the first frame after the bad messages is the valid event (none of the bad ones was delivered)');
  await c.none(300);
  assert.ok(s.gw.alive(), 'gateway survived the bad bus messages');
  const logs = s.gw.logsSince(mark);
  assert.ok(logs.includes(ch), `bad messages are logged with their channel ${ch}`);
  assert.ok(logs.includes(`${h.APP_ID}afterSave`), `bad messages are logged with their channel ${h.APP_ID}afterSave`);
});

h.test('many connections opened and dropped abruptly do not disturb others', async () => {
  const cs = [];
  for (let i = 0; i < 50; i++) cs.push(h.wsClientNoWait(s.url));
  await Promise.all(cs.map((c) => c.opened.catch(() => {})));
  cs.forEach((c, i) => {
    if (i % 2) c.send({ op: 'connect', applicationId: 'bookstore' });
    c.send({ op: 'subscribe', requestId: 1, query: { className: 'Heartbeat', where: {} } });
  });
  cs.forEach((c) => c.ws.terminate());
  const c = await connected();
  await c.subscribe(1, 'Heartbeat', {});
  await c.next((f) => f.op === 'create', 3000);
});

/* Opens a TCP connection, writes `bytes` (if any) and closes it at once. */
function tcpHitAndRun(port, bytes) {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    sock.on('error', () => resolve());
    sock.once('connect', () => {
      if (bytes) sock.write(bytes);
      sock.end();
      sock.destroy();
      resolve();
    });
  });
}

h.test('TCP connections dropped before or during the HTTP upgrade do not crash the gateway', async () => {
  const port = s.gw.port;
  const key = 'dGhlIHNhbXBsZSBub25jZQ==';
  const cases = [
    null,                                                     // connect, then close: no bytes at all
    'GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpg',               // half a request line/header
    Buffer.from([0x00, 0xff, 0x16, 0x03, 0x01, 0x02, 0x00]),  // binary garbage (e.g. a TLS hello)
    `GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    'GET /nothing-here HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', // plain HTTP, closed before the answer
  ];
  for (const bytes of cases) {
    for (let i = 0; i < 3; i++) await tcpHitAndRun(port, bytes);
  }
  // a ws client closed while its handshake is still in flight
  for (let i = 0; i < 5; i++) h.wsClientNoWait(s.url).ws.terminate();
  await h.sleep(300); // a crash on the dropped sockets would show by now
  assert.ok(s.gw.alive(), `gateway process alive after dropped handshakes (${s.gw.crash || 'running'})`);
  // the gateway still serves: a fresh client gets a live event end to end
  const c = await connected();
  await c.subscribe(1, 'Heartbeat', {});
  await c.next((f) => f.op === 'create', 3000);
});

h.test('the bystander received every event and the gateway is alive', async () => {
  tick.stopped = true;
  await tick.done;
  const last = tick.n;
  await bystander.next((f) => f && f.object && f.object.n === last, 5000);
  const ns = bystander.all.filter((f) => f && f.op === 'create' && f.requestId === 1).map((f) => f.object.n);
  assert.deepEqual(ns, Array.from({ length: last }, (_, i) => i + 1), `bystander got all ${last} events in order exactly once`);
  assert.ok(last > 20, `the ticker ran throughout (${last} events)`);
  const others = bystander.all.filter((f) => !(f && f.op === 'create'));
  assert.deepEqual(others.map((f) => f.op), ['connected', 'subscribed'], 'the bystander saw no errors');
  assert.equal(bystander.closeInfo, null);
  assert.ok(s.gw.alive(), 'gateway process alive');
  const c = await connected();
  await c.subscribe(1, 'Heartbeat', {});
});
