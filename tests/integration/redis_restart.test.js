'use strict';
/*
 * Redis goes away and comes back on the same port while events stream in.
 * The gateway reconnects (and says so in its log) and delivery resumes on the
 * SAME client connections: neither a raw ws client nor the Parse SDK sees a
 * close or a reconnect.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const P = h.Parse();
let s;

before(async () => {
  s = await h.startStack({});
});
after(h.teardown);

/* Publishes Tick {n} every 50 ms; publish failures while Redis is down are ignored. */
function ticker(pub) {
  const t = { n: 0, stopped: false };
  const loop = async () => {
    while (!t.stopped) {
      const n = ++t.n;
      pub.change('Tick', 'create', h.obj({ objectId: `tick${n}`, className: 'Tick', n })).catch(() => {});
      await h.sleep(50);
    }
  };
  t.done = loop();
  t.stop = async () => { t.stopped = true; await t.done; };
  return t;
}

h.test('delivery resumes on the same connections after redis restarts', async () => {
  const raw = await h.wsClient(s.url);
  await raw.connect();
  await raw.subscribe(1, 'Tick', {});

  const sdk = h.sdkClient(s.url);
  await h.withTimeout(sdk.ready, 3000, 'SDK open');
  const sub = sdk.client.subscribe(new P.Query('Tick'));
  const sdkInbox = h.recordSubscription(sub, 'sdk-tick');
  await h.withTimeout(sub.subscribePromise, 3000, 'SDK subscribed');

  const tick = ticker(s.pub);
  h.onTeardown(() => tick.stop());
  const rawN = (f) => (f && f.op === 'create' && f.object && typeof f.object.n === 'number' ? f.object.n : -1);
  const above = (n) => { const p = (f) => rawN(f) > n; p.description = `a Tick with n > ${n}`; return p; };
  const sdkAbove = (n) => { const p = (e) => e.object.get('n') > n; p.description = `an SDK Tick with n > ${n}`; return p; };

  // flowing before the outage
  await raw.next(above(3), 5000);
  await sdkInbox.next(sdkAbove(3), 5000);

  for (const [round, outageMs] of [[1, 300], [2, 2500]]) {
    const logMark = s.gw.logOffset();
    await s.redis.stop();
    await h.sleep(outageMs); // the outage itself
    await s.redis.restart();
    const restartedAt = tick.n;
    // The gateway must resubscribe by itself; events published after that arrive.
    const f = await raw.next(above(restartedAt), 20000).catch((e) => {
      throw new Error(`round ${round}: raw client got no event published after the redis restart: ${e.message}`);
    });
    assert.equal(f.clientId, raw.clientId, 'same clientId: same connection, same session');
    await sdkInbox.next(sdkAbove(restartedAt), 20000).catch((e) => {
      throw new Error(`round ${round}: SDK got no event published after the redis restart: ${e.message}`);
    });
    const logs = s.gw.logsSince(logMark);
    assert.match(logs, /redis/i, `round ${round}: the gateway log mentions redis after the restart`);
    assert.ok(logs.split('\n').some((l) => /redis/i.test(l) && /(re)?connect|subscrib/i.test(l)),
      `round ${round}: the gateway log shows it reconnected to redis; got:\n${logs}`);
    assert.equal(raw.closeInfo, null, `round ${round}: raw socket never closed`);
    assert.ok(raw.isOpen);
    assert.equal(sdk.opens, 1, `round ${round}: the SDK never reconnected (opens=${sdk.opens})`);
    assert.equal(sdk.closes, 0, `round ${round}: the SDK socket never closed`);
  }

  await tick.stop();
  // Events that arrived: strictly increasing n, no duplicates (on both clients).
  const ns = raw.all.filter((x) => rawN(x) > 0).map(rawN);
  for (let i = 1; i < ns.length; i++) assert.ok(ns[i] > ns[i - 1], `raw: ticks in order without duplicates (… ${ns[i - 1]}, ${ns[i]} …)`);
  const sdkNs = sdkInbox.all.map((e) => e.object.get('n'));
  for (let i = 1; i < sdkNs.length; i++) assert.ok(sdkNs[i] > sdkNs[i - 1], `sdk: ticks in order without duplicates (… ${sdkNs[i - 1]}, ${sdkNs[i]} …)`);
  // The last tick published reaches both, still on the original sockets.
  const last = h.obj({ objectId: 'tickLast', className: 'Tick', n: 1e9 });
  await s.pub.change('Tick', 'create', last);
  await raw.next(above(1e9 - 1), 5000);
  await sdkInbox.next(sdkAbove(1e9 - 1), 5000);
  assert.equal(raw.closeInfo, null);
  assert.equal(sdk.opens, 1);
  assert.ok(s.gw.alive(), 'gateway still running');
  const errs = raw.all.filter((x) => x && x.op === 'error');
  if (errs.length) process.stderr.write(`note: error frames seen by the raw client: ${JSON.stringify(errs)}\n`);
});

h.test('new connections work after the restarts', async () => {
  const c = await h.wsClient(s.url);
  await c.connect();
  await c.subscribe(1, 'Tick', { n: 42 });
  await s.pub.change('Tick', 'create', h.obj({ objectId: 'tick42', className: 'Tick', n: 42 }));
  const f = await c.next();
  assert.deepEqual(f, { op: 'create', clientId: c.clientId, requestId: 1, object: h.obj({ objectId: 'tick42', className: 'Tick', n: 42 }) });
});
