'use strict';
/*
 * A gateway is stopped (SIGTERM) under a steady stream, behind a TCP proxy
 * that stands in for a load balancer (a new connection goes to the first
 * backend that accepts). Its clients get the 1001 close protocol/errors.md
 * promises ("going away"), after a gap-free prefix of the stream; the Parse
 * SDK reconnects through the proxy to the other gateway and resubscribes on
 * its own, then gets every event written from then on, once and in order; a
 * client of the other gateway sees nothing of it.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');
const F = require('./faultkit');

after(h.teardown);

const CLS = 'BookStockLog';

h.test('gateway SIGTERM behind a proxy: raw clients get 1001 going away, the SDK reconnects to the other gateway and resubscribes by itself', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const [gA, gB] = await Promise.all([
    h.startGateway({ redis, args: ['--role', 'gateway'] }),
    h.startGateway({ redis, args: ['--role', 'gateway'] }),
  ]);
  const pub = await h.publisher(redis.port);
  await M.startTailer({ redis, mongo, role: 'tailer' });
  await h.waitFor(async () => (await M.tailerState(pub, CLS)).token, { timeout: 15000, what: 'stream open' });
  const proxy = await F.startProxy([gA.port, gB.port]);

  const viaProxy = await F.rawSubscriber(proxy.url, CLS, {}, 'proxy/raw');
  const sdk = await F.sdkSubscriber(proxy.url, CLS, 'proxy/sdk');
  assert.ok(proxy.conns.every((c) => c.backend === gA.port), 'both went to gateway A');
  assert.equal((await F.metrics(gA)).connections, 2);
  const bystander = await F.rawSubscriber(gB.url, CLS, {}, 'B/raw');

  const w = F.startWriter(mongo, { rate: 80, prefix: 'gt' });
  await F.waitAll([viaProxy, sdk, bystander], 40, 10000);

  const termAt = Date.now();
  const stopped = gA.stop(); // SIGTERM; fails the file unless it exits 0
  const info = await h.withTimeout(viaProxy.closed, 5000, 'the raw client closed by the shutdown');
  const closedAt = Date.now();
  assert.deepEqual(info, { code: 1001, reason: 'going away' }, 'protocol/errors.md: 1001 going away');
  assert.deepEqual(viaProxy.all.filter((x) => x && x.op === 'error'), [], 'no error frame before the close');
  const rawNs = viaProxy.got.map((x) => x.n);
  F.assertExactlyOnceInOrder('proxy/raw before the close', rawNs, rawNs.length);
  await stopped;
  assert.equal(gA.proc.exitCode, 0, 'gateway A exited cleanly');

  await h.waitFor(() => sdk.subOpens >= 2, { timeout: 15000, what: 'the SDK resubscribed through the proxy' });
  const sdkOpenAt = sdk.openAt[1];
  const resubAt = sdk.subOpenAt[1];
  assert.equal(proxy.conns[proxy.conns.length - 1].backend, gB.port, 'the SDK reconnected to gateway B');
  const nAtResub = w.n;
  // a raw client that reconnects by hand is served by B as well
  const again = await F.rawSubscriber(proxy.url, CLS, {}, 'proxy/raw-again');
  const nAgain = w.n;
  await h.waitFor(() => sdk.got.length && sdk.got[sdk.got.length - 1].n >= nAtResub + 40,
    { timeout: 10000, what: 'SDK events after the resubscribe' });
  const N = await w.stop();
  await F.waitAll([bystander], N, 10000);
  await h.waitFor(() => sdk.got.length && sdk.got[sdk.got.length - 1].n === N - 1
    && again.got.length && again.got[again.got.length - 1].n === N - 1, { timeout: 10000, what: 'the last event' });
  await h.sleep(300);

  F.assertExactlyOnceInOrder('B/raw (bystander)', bystander.got.map((x) => x.n), N);
  assert.equal(bystander.closeInfo, null);
  const ns = sdk.got.map((x) => x.n);
  const cut = ns.findIndex((n, i) => i > 0 && n !== ns[i - 1] + 1);
  assert.ok(cut > 0, `the SDK missed the events written while it was reconnecting (a jump in ${JSON.stringify(ns.slice(0, 5))}…)`);
  F.assertExactlyOnceInOrder('SDK via A', ns.slice(0, cut), cut);
  F.assertExactlyOnceInOrder('SDK via B', ns.slice(cut), N, ns[cut]);
  assert.ok(ns[cut] <= nAtResub, `the SDK got everything written after it resubscribed (from n=${ns[cut]}, resubscribed at n=${nAtResub})`);
  const againNs = again.got.map((x) => x.n);
  F.assertExactlyOnceInOrder('proxy/raw-again', againNs, N, againNs[0]);
  assert.ok(againNs[0] <= nAgain);
  assert.equal(sdk.closes, 1, 'one close (the shutdown)');
  assert.deepEqual(sdk.errors, [], 'the SDK got no error event');
  const mB = await F.metrics(gB);
  assert.equal(mB.connections, 3, 'gateway B now serves the SDK, the re-connected raw client and the bystander');

  process.stderr.write(`# gateway SIGTERM: raw client closed (1001 going away) after ${closedAt - termAt} ms; `
    + `SDK 'open' on gateway B after ${sdkOpenAt - termAt} ms, subscription 'open' (resubscribed) after ${resubAt - termAt} ms `
    + `(the SDK waits a random 0-1 s before reconnecting, and emits the subscription 'open' 200 ms after 'subscribed'); `
    + `SDK got n=0..${ns[cut - 1]} from A, ${ns[cut]}..${N - 1} from B\n`);
});
