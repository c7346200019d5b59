'use strict';
/*
 * Redis is killed (SIGKILL) and restarted on the same port, with its data
 * (append-only file, appendfsync always), while a steady stream of numbered
 * inserts goes into the mock MongoDB -> tailer -> Redis -> two gateways.
 * Every subscriber (raw clients on both gateways and a Parse SDK client) must
 * get every event exactly once and in order, on the same socket throughout:
 * what was published while a gateway was away is caught up from the history
 * stream (protocol/bus.md), nobody is told to resync.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');
const F = require('./faultkit');

after(h.teardown);

const CLS = 'BookStockLog';

h.test('Redis kill -9 and restart with its data under a steady stream: every subscriber gets every event once, in order, on the same socket', async () => {
  const redis = await h.startRedis({ persist: true });
  const mongo = await M.startMongo();
  const [gA, gB] = await Promise.all([
    h.startGateway({ redis, masterKey: h.MASTER_KEY, args: ['--role', 'gateway'] }),
    h.startGateway({ redis, masterKey: h.MASTER_KEY, args: ['--role', 'gateway'] }),
  ]);
  const pub = await h.publisher(redis.port);
  await M.startTailer({ redis, mongo, role: 'tailer', leaseTtl: 2000 });
  await h.waitFor(async () => (await M.tailerState(pub, CLS)).token, { timeout: 15000, what: 'stream open' });

  const subs = [
    await F.rawSubscriber(gA.url, CLS, {}, 'A/raw1'),
    await F.rawSubscriber(gA.url, CLS, { run: 'r' }, 'A/raw2'),
    await F.rawSubscriber(gA.url, CLS, { n: { $gte: 0 } }, 'A/raw3', { masterKey: h.MASTER_KEY }),
    await F.rawSubscriber(gB.url, CLS, {}, 'B/raw1'),
    await F.rawSubscriber(gB.url, CLS, { run: 'r' }, 'B/raw2'),
  ];
  const sdk = await F.sdkSubscriber(gB.url, CLS, 'B/sdk');
  subs.push(sdk);
  const raws = subs.filter((s) => s !== sdk);

  const w = F.startWriter(mongo, { rate: 80, prefix: 'rk', fields: { run: 'r' } });
  await F.waitAll(subs, 40, 10000); // flowing everywhere

  const rounds = [];
  for (const outageMs of [400, 2500]) {
    const m0 = await Promise.all([F.metrics(gA), F.metrics(gB)]);
    const mark = [gA.logOffset(), gB.logOffset()];
    await redis.kill();
    const nAtKill = w.n;
    await h.sleep(outageMs);
    await redis.start();
    const restartedAt = Date.now();
    const nAtRestart = w.n; // events 0..nAtRestart-1 were written before Redis was back
    // every subscriber gets an event written after the restart (so it has caught up the outage)
    await F.waitPast(subs, nAtRestart, 25000, `after the restart (outage ${outageMs} ms)`);
    const r = { outageMs, nAtKill, nAtRestart, subs: {} };
    for (const s of subs) {
      const first = s.got.find((x) => x.t >= restartedAt);
      const caught = s.got.find((x) => x.n === nAtRestart - 1);
      r.subs[s.tag] = { first: first.t - restartedAt, caughtUp: caught.t - restartedAt };
    }
    await h.waitFor(async () => (await F.metrics(gA)).bus_connected === 1 && (await F.metrics(gB)).bus_connected === 1,
      { what: 'both gateways reconnected to Redis' });
    const m1 = await Promise.all([F.metrics(gA), F.metrics(gB)]);
    r.metrics = m1.map((m, i) => ({
      bus_connects: m.bus_connects - m0[i].bus_connects,
      bus_gaps_repaired: m.bus_gaps_repaired - m0[i].bus_gaps_repaired,
      bus_duplicates_dropped: m.bus_duplicates_dropped - m0[i].bus_duplicates_dropped,
      bus_resyncs: m.bus_resyncs - m0[i].bus_resyncs,
    }));
    r.logs = [gA.logsSince(mark[0]), gB.logsSince(mark[1])];
    rounds.push(r);
  }
  const N = await w.stop();
  await F.waitAll(subs, N, 20000);
  await h.sleep(300); // nothing more (no late duplicate) may follow

  for (const s of subs) F.assertExactlyOnceInOrder(s.tag, s.got.map((x) => x.n), N);
  for (const c of raws) {
    assert.equal(c.closeInfo, null, `${c.tag}: socket stayed open`);
    assert.ok(c.isOpen, `${c.tag}: socket open`);
    const errs = c.all.filter((x) => x && x.op === 'error');
    assert.deepEqual(errs, [], `${c.tag}: no error frame`);
  }
  assert.equal(sdk.opens, 1, 'the SDK never reconnected');
  assert.equal(sdk.closes, 0, 'the SDK socket never closed');
  assert.equal(sdk.subOpens, 1, 'the SDK never resubscribed');
  assert.deepEqual(sdk.errors, [], 'no SDK error');

  for (const [i, r] of rounds.entries()) {
    const firsts = Object.values(r.subs).map((x) => x.first);
    const caught = Object.values(r.subs).map((x) => x.caughtUp);
    process.stderr.write(`# round ${i + 1}: Redis down ${r.outageMs} ms (killed at n=${r.nAtKill}, back at n=${r.nAtRestart}); `
      + `restart -> first event delivered: ${Math.min(...firsts)}..${Math.max(...firsts)} ms, `
      + `-> caught up (n=${r.nAtRestart - 1} delivered): ${Math.min(...caught)}..${Math.max(...caught)} ms; `
      + `per subscriber ${JSON.stringify(r.subs)}\n`);
    process.stderr.write(`#   gateway metric deltas A ${JSON.stringify(r.metrics[0])} B ${JSON.stringify(r.metrics[1])}\n`);
    for (const [g, m] of r.metrics.entries()) {
      assert.ok(m.bus_connects >= 1, `round ${i + 1} gateway ${'AB'[g]}: bus_connects counts the reconnect`);
      assert.equal(m.bus_resyncs, 0, `round ${i + 1} gateway ${'AB'[g]}: no resync (history was kept)`);
    }
    for (const [g, log] of r.logs.entries()) {
      assert.match(log, /redis subscribed/, `round ${i + 1} gateway ${'AB'[g]}: resubscribed`);
      assert.doesNotMatch(log, /told to resync/, `round ${i + 1} gateway ${'AB'[g]}`);
    }
  }
  const mA = await F.metrics(gA);
  const mB = await F.metrics(gB);
  // the events of the outage reached each gateway either live (the tailer
  // published after the gateway resubscribed) or by catch-up/gap repair; over
  // both rounds at least one gateway must have used the history stream
  const repaired = rounds.reduce((a, r) => a + r.metrics[0].bus_gaps_repaired + r.metrics[1].bus_gaps_repaired, 0);
  process.stderr.write(`# gap repair over both rounds: ${repaired} events; totals A ${JSON.stringify({ c: mA.bus_connects, g: mA.bus_gaps_repaired, d: mA.bus_duplicates_dropped })} `
    + `B ${JSON.stringify({ c: mB.bus_connects, g: mB.bus_gaps_repaired, d: mB.bus_duplicates_dropped })}; ${N} events in all\n`);
  assert.ok(repaired > 0, 'some events were caught up from the history stream');
});

/* protocol/bus.md: "After every (re)subscribe to Redis the gateway first reads
 * HGETALL <p>schema": a CLP that changed while the gateway was away must be in
 * force once it is back, even if the `schema` message itself was missed. */
h.test('Redis kill -9 and restart: a CLP stored while the gateway was away is read on resubscribe and applied', async () => {
  const redis = await h.startRedis({ persist: true });
  const s = await h.startStack({ redis, masterKey: h.MASTER_KEY });
  const c = await h.wsClient(s.url);
  await c.connect();
  await c.subscribe(7, 'Ledger', {});
  await s.pub.change('Ledger', 'create', h.obj({ objectId: 'led1', className: 'Ledger' }));
  await c.event(7, 'led1');
  for (let attempt = 1; ; attempt++) {
    await redis.kill();
    await h.sleep(1200); // the gateway is in its reconnect backoff
    await redis.start();
    await s.pub.client.hSet(`livequery:${h.APP_ID}:schema`, 'Ledger', JSON.stringify({ find: {}, get: {} }));
    // the CLP must have been stored before the gateway resubscribed, else retry
    if ((await F.metrics(s.gw)).bus_connected === 0) break;
    assert.ok(attempt < 5, 'the gateway always resubscribed before the CLP could be stored');
    await s.pub.client.hDel(`livequery:${h.APP_ID}:schema`, 'Ledger');
  }
  await h.waitFor(async () => (await F.metrics(s.gw)).bus_connected === 1, { timeout: 10000, what: 'gateway resubscribed' });
  const err = await c.next((x) => x && x.op === 'error', 3000).catch(async (e) => {
    throw new Error(`the subscriber was not told that the CLP now refuses it (the gateway did not re-read <p>schema after the restart?): ${e.message} hash=${JSON.stringify(await s.pub.client.hGetAll(`livequery:${h.APP_ID}:schema`))} metrics=${JSON.stringify(await F.metrics(s.gw))}\n${s.gw.logs().split('\n').filter((l) => /redis|schema|class-level/.test(l)).join('\n')}`);
  });
  assert.deepEqual(err, { op: 'error', code: 119, error: 'Permission denied for action find on class Ledger.', reconnect: false, requestId: 7 });
  await s.pub.change('Ledger', 'create', h.obj({ objectId: 'led2', className: 'Ledger' }));
  await c.none(300, (x) => x && x.op === 'create');
  assert.doesNotMatch(s.gw.logs(), /cannot read the class-level permissions/);
});
