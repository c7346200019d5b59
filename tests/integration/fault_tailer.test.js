'use strict';
/*
 * The active tailer is killed (kill -9) while numbered updates stream into the
 * mock MongoDB; a standby takes over from the stored resume token. Every
 * subscriber (raw clients on two gateways and a Parse SDK client) must get
 * every update exactly once, in order, on its original socket; the failover
 * time is printed. (tailer_faults.test.js checks the takeover itself and the
 * Redis history; this file checks what subscribers see under a steady stream.)
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');
const F = require('./faultkit');

after(h.teardown);

const CLS = 'BookStockLog';
const LEASE_TTL = 1000;

async function leaderOf(tailers) {
  for (const t of tailers) {
    if (t.alive() && (await F.metrics(t).catch(() => ({}))).tailer_leader === 1) return t;
  }
  return null;
}

h.test('kill -9 of the active tailer under a steady stream of updates: the standby takes over, every subscriber gets every event once, in order', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const [gA, gB] = await Promise.all([
    h.startGateway({ redis, masterKey: h.MASTER_KEY, args: ['--role', 'gateway'] }),
    h.startGateway({ redis, masterKey: h.MASTER_KEY, args: ['--role', 'gateway'] }),
  ]);
  const pub = await h.publisher(redis.port);
  // post-images (the mock keeps them by default): each update event carries
  // the document as that write left it, so n is exact even for quick updates
  const targs = ['--full-document', 'required'];
  const t1 = await M.startTailer({ redis, mongo, role: 'tailer', id: 't1', leaseTtl: LEASE_TTL, args: targs });
  await h.waitFor(async () => (await M.tailerState(pub, CLS)).token, { timeout: 15000, what: 'stream open' });
  const t2 = await M.startTailer({ redis, mongo, role: 'tailer', id: 't2', leaseTtl: LEASE_TTL, args: targs });
  const first = await leaderOf([t1, t2]);
  assert.equal(first, t1, 't1 leads');
  assert.equal((await F.metrics(t2)).tailer_leader, 0, 't2 stands by');

  // four objects, created before anyone subscribes; then updated in turn
  const ids = ['fo0', 'fo1', 'fo2', 'fo3'];
  for (const [i, id] of ids.entries()) await mongo.insert(CLS, { _id: id, n: -1 - i, shelf: 'S' });
  await h.waitFor(async () => Number((await M.tailerState(pub, CLS)).seq) >= ids.length, { what: 'creates published' });

  const subs = [
    await F.rawSubscriber(gA.url, CLS, {}, 'A/raw1'),
    await F.rawSubscriber(gA.url, CLS, { shelf: 'S' }, 'A/raw2'),
    await F.rawSubscriber(gB.url, CLS, { n: { $gte: 0 } }, 'B/raw1'), // enters at the first update
    await F.rawSubscriber(gB.url, CLS, { objectId: { $in: ids } }, 'B/raw2', { masterKey: h.MASTER_KEY }),
  ];
  const sdk = await F.sdkSubscriber(gA.url, CLS, 'A/sdk', (q) => q.equalTo('shelf', 'S'));
  subs.push(sdk);
  const raws = subs.filter((s) => s !== sdk);

  const w = F.startWriter(mongo, { rate: 80, objects: ids });
  await F.waitAll(subs, 80, 10000); // flowing (one second)
  const nAtKill = w.n;
  first.proc.kill('SIGKILL');
  first.stopping = true; // an expected death
  const killedAt = Date.now();
  await F.waitPast(subs, nAtKill, 15000, 'after the kill');
  await h.sleep(1000); // and a second of steady state under the new leader
  const N = await w.stop();
  await F.waitAll(subs, N, 15000);
  await h.sleep(300);

  for (const s of subs) {
    const ns = s.got.map((x) => x.n);
    F.assertExactlyOnceInOrder(s.tag, ns, N);
  }
  // B/raw1 matches from the first update on: its first event is an enter
  assert.equal(subs[2].got[0].op, 'enter');
  assert.ok(subs[2].got.slice(4).every((x) => x.op === 'update'));
  for (const s of [subs[0], subs[1], subs[3], sdk]) assert.ok(s.got.every((x) => x.op === 'update'), `${s.tag}: updates only`);
  for (const c of raws) {
    assert.equal(c.closeInfo, null, `${c.tag}: socket stayed open`);
    assert.deepEqual(c.all.filter((x) => x && x.op === 'error'), [], `${c.tag}: no error frame`);
  }
  assert.equal(sdk.opens, 1, 'the SDK never reconnected');
  assert.equal(sdk.closes, 0);
  assert.equal(sdk.subOpens, 1);

  assert.equal(await leaderOf([t2]), t2, 'the standby leads');
  assert.equal(await pub.client.get(`livequery:${h.APP_ID}:tailer:lease`), 't2');
  const hist = await M.history(pub, CLS);
  assert.deepEqual(hist.map((x) => x.seq), hist.map((_, i) => i + 1), 'the history stream is gap-free');
  assert.equal(hist.length, ids.length + N, 'one stream entry per write');

  const stats = [];
  for (const s of subs) {
    const before = s.got.filter((x) => x.t <= killedAt);
    const lastBefore = before.length ? before[before.length - 1].t : NaN;
    const firstNew = s.got.find((x) => x.n >= nAtKill).t; // necessarily published by the standby
    let maxGap = 0;
    for (let i = 1; i < s.got.length; i++) maxGap = Math.max(maxGap, s.got[i].t - s.got[i - 1].t);
    stats.push({ tag: s.tag, lastBeforeToFirstAfter: firstNew - lastBefore, killToFirstAfter: firstNew - killedAt, maxGap });
  }
  const mB = await F.metrics(gB);
  process.stderr.write(`# tailer failover (lease ttl ${LEASE_TTL} ms, ${N} updates at 80/s, kill at n=${nAtKill}): `
    + `last event before the kill -> first event written after it: ${Math.min(...stats.map((x) => x.lastBeforeToFirstAfter))}..`
    + `${Math.max(...stats.map((x) => x.lastBeforeToFirstAfter))} ms; kill -> first: ${Math.min(...stats.map((x) => x.killToFirstAfter))}..`
    + `${Math.max(...stats.map((x) => x.killToFirstAfter))} ms; largest gap between two deliveries: ${Math.max(...stats.map((x) => x.maxGap))} ms; `
    + `gateway B duplicates dropped ${mB.bus_duplicates_dropped}, gaps repaired ${mB.bus_gaps_repaired}\n`);
  for (const x of stats) {
    assert.ok(x.lastBeforeToFirstAfter < LEASE_TTL * 1.2 + 3000, `${x.tag}: failover took ${x.lastBeforeToFirstAfter} ms`);
  }
});
