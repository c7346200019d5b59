'use strict';
/*
 * MongoDB faults (injected by the mock) under a steady stream of numbered
 * inserts, seen from the subscribers: dropped connections and resumable errors
 * are resumed by the tailer without loss, repeat or reorder (every subscriber
 * keeps its socket); lost history (error 286) starts a new epoch, and every
 * subscriber of the class gets the code-100 error with reconnect:true and the
 * 1012 close (protocol/errors.md), after a gap-free prefix; a Parse SDK client
 * reconnects, resubscribes and receives what is written afterwards.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');
const F = require('./faultkit');

after(h.teardown);

const CLS = 'BookStockLog';

async function stack() {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const gw = await h.startGateway({ redis, masterKey: h.MASTER_KEY, args: ['--role', 'gateway'] });
  const pub = await h.publisher(redis.port);
  const t = await M.startTailer({ redis, mongo, role: 'tailer' });
  await h.waitFor(async () => (await M.tailerState(pub, CLS)).token, { timeout: 15000, what: 'stream open' });
  return { redis, mongo, gw, pub, t };
}

h.test('dropped MongoDB connections and resumable errors under a steady stream: every subscriber gets every event once, in order', async () => {
  const { mongo, gw, t } = await stack();
  const subs = [
    await F.rawSubscriber(gw.url, CLS, {}, 'raw1'),
    await F.rawSubscriber(gw.url, CLS, { kind: 'f' }, 'raw2'),
    await F.rawSubscriber(gw.url, CLS, { n: { $gte: 0 } }, 'raw3', { masterKey: h.MASTER_KEY }),
  ];
  const sdk = await F.sdkSubscriber(gw.url, CLS, 'sdk');
  subs.push(sdk);
  const raws = subs.filter((s) => s !== sdk);
  const st0 = await mongo.stats();
  const w = F.startWriter(mongo, { rate: 80, prefix: 'mf', fields: { kind: 'f' } });
  await F.waitAll(subs, 30, 10000);

  const faults = [
    ['drop_connection', {}],
    ['resumable_error', {}],
    ['resumable_error', { count: 3 }], // libmongoc resumes once by itself, then the tailer re-opens
    ['drop_connection', { count: 2 }],
    ['resumable_error', { on: 'both', count: 2 }], // the re-open (aggregate) fails too
    ['resumable_error', { on: 'both', count: 6 }], // libmongoc gives up: the tailer re-opens from its stored token
    ['fatal', {}], // a non-resumable error: the tailer re-opens from its stored token
  ];
  const marks = [];
  for (const [kind, more] of faults) {
    const fired0 = (await mongo.stats()).faults_fired;
    await mongo.fault(kind, { coll: CLS, ...more });
    const nAt = w.n;
    await h.waitFor(async () => (await mongo.stats()).faults_fired >= fired0 + (more.count || 1),
      { timeout: 15000, what: `${kind} fired` });
    // the stream is back: events written after the fault reach everyone
    await F.waitPast(subs, nAt + 20, 20000, `after ${kind} x${more.count || 1}`);
    marks.push(`${kind}x${more.count || 1}@n=${nAt}`);
  }
  const N = await w.stop();
  await F.waitAll(subs, N, 15000);
  await h.sleep(300);
  for (const s of subs) F.assertExactlyOnceInOrder(s.tag, s.got.map((x) => x.n), N);
  for (const c of raws) {
    assert.equal(c.closeInfo, null, `${c.tag}: socket stayed open`);
    assert.deepEqual(c.all.filter((x) => x && x.op === 'error'), [], `${c.tag}: no error frame`);
  }
  assert.equal(sdk.opens, 1);
  assert.equal(sdk.closes, 0);
  const st = await mongo.stats();
  const m = await F.metrics(t);
  assert.ok(st.aggregates[`parse.${CLS}`] > st0.aggregates[`parse.${CLS}`] + 3, 'the change stream was re-opened');
  assert.equal(m.tailer_epochs, 0, 'no new epoch');
  process.stderr.write(`# ${N} events through ${marks.join(', ')}; change-stream aggregates ${st0.aggregates[`parse.${CLS}`]} -> `
    + `${st.aggregates[`parse.${CLS}`]}, tailer resumes ${m.tailer_resumes}, stream errors ${m.tailer_stream_errors}\n`);
});

h.test('history lost (286) under a steady stream: subscribers get error 100 (reconnect:true) and close 1012; the SDK resubscribes and gets later events', async () => {
  const { mongo, gw, pub, t } = await stack();
  const raws = [
    await F.rawSubscriber(gw.url, CLS, {}, 'raw1'),
    await F.rawSubscriber(gw.url, CLS, { kind: 'h' }, 'raw2', { masterKey: h.MASTER_KEY }),
  ];
  const sdk = await F.sdkSubscriber(gw.url, CLS, 'sdk');
  const other = await F.rawSubscriber(gw.url, 'SigningSchedule', {}, 'other-class');
  const epoch1 = (await M.tailerState(pub, CLS)).epoch;
  const w = F.startWriter(mongo, { rate: 80, prefix: 'hl', fields: { kind: 'h' } });
  await F.waitAll([...raws, sdk], 30, 10000);

  await mongo.fault('history_lost', { coll: CLS, on: 'getMore' });
  const faultAt = Date.now();
  for (const c of raws) {
    const info = await h.withTimeout(c.closed, 15000, `${c.tag} closed after the resync error`);
    assert.equal(info.code, 1012, `${c.tag}: close code`);
    assert.equal(info.reason, 'resync', `${c.tag}: close reason`);
    const errs = c.all.filter((x) => x && x.op === 'error');
    assert.deepEqual(errs, [{
      op: 'error', code: 100, reconnect: true, requestId: null,
      error: `Live query events for class ${CLS} were lost; reconnect and resubscribe to resync`,
    }], `${c.tag}: exactly one error frame, the resync`);
    assert.equal(c.all[c.all.length - 1].op, 'error', `${c.tag}: the error is the last frame before the close`);
    // what it did get is a gap-free prefix: nothing lost silently, nothing repeated
    const ns = c.got.map((x) => x.n);
    F.assertExactlyOnceInOrder(`${c.tag} (before the resync)`, ns, ns.length);
  }
  const closedAt = Date.now();
  assert.notEqual((await M.tailerState(pub, CLS)).epoch, epoch1, 'a new epoch');
  assert.equal(other.closeInfo, null, 'a subscriber of another class is left alone');

  // the SDK is told, reconnects on its own and resubscribes
  await h.waitFor(() => sdk.subOpens >= 2, { timeout: 15000, what: 'the SDK resubscribed' });
  assert.ok(sdk.errors.length >= 1, 'the SDK client got an error event');
  assert.ok(sdk.opens >= 2 && sdk.closes >= 1, `the SDK reconnected (opens ${sdk.opens}, closes ${sdk.closes})`);
  const resubAt = sdk.subOpenAt[1];
  const nAtResub = w.n; // written after the SDK's subscription was open again
  await h.waitFor(() => sdk.got.length && sdk.got[sdk.got.length - 1].n >= nAtResub + 40,
    { timeout: 15000, what: 'SDK events after the resubscribe' });
  const N = await w.stop();
  await h.waitFor(() => sdk.got.length && sdk.got[sdk.got.length - 1].n === N - 1, { timeout: 10000, what: 'SDK gets the last event' });
  await h.sleep(300);
  // before the resync: a gap-free prefix; after the resubscribe: every event written from then on, once, in order
  const ns = sdk.got.map((x) => x.n);
  const cut = ns.findIndex((n, i) => i > 0 && n !== ns[i - 1] + 1);
  assert.ok(cut > 0, 'the SDK saw a jump across the resync (events written while it was away)');
  F.assertExactlyOnceInOrder('sdk before the resync', ns.slice(0, cut), cut);
  F.assertExactlyOnceInOrder('sdk after the resync', ns.slice(cut), N, ns[cut]);
  assert.ok(ns[cut] <= nAtResub, `the SDK gets everything written after it resubscribed (from n=${ns[cut]}, resubscribed at n=${nAtResub})`);
  const m = await F.metrics(t);
  assert.ok(m.tailer_history_lost >= 1 && m.tailer_epochs >= 1, JSON.stringify(m));
  assert.ok((await F.metrics(gw)).bus_resyncs >= 1);
  process.stderr.write(`# history lost: fault -> raw clients closed 1012 in ${closedAt - faultAt} ms; `
    + `SDK resubscribed ${resubAt - faultAt} ms after the fault; SDK got n=${ns.slice(0, cut).length ? `0..${ns[cut - 1]}` : '-'}, then ${ns[cut]}..${N - 1}\n`);
});
