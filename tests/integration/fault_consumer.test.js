'use strict';
/*
 * Consumers that stop reading while events stream: each is cut off at its
 * byte limit (--max-queue-bytes, 256 KiB here) with error 155 and close 1008
 * (protocol/errors.md), the gateway's memory stays bounded, and a normal
 * client's latency is the same with stalled consumers present as without
 * (both measured in the same run; p50/p99 printed).
 *
 * Events are published straight into Redis (our bus format, with seq-less
 * messages), not through the tailer: the gateway is what is under test, and
 * the mock MongoDB could not sustain the volume needed to fill socket buffers.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const F = require('./faultkit');

after(h.teardown);

const QUEUE = 256 * 1024;
const RATE = 250;            // events per second
const PAD = 'x'.repeat(2000); // ~2 KB per event: 0.5 MB/s, so the limit is ~0.5 s of stream
const BASE_MS = 3000;
const STALL_MS = 6000;
const SPAWN_EVERY_MS = 300;  // a new stalled consumer this often during the stall phase
const FLOOD_MB = 64;         // at most, to the stalled consumers after the measurements
const RSS_BOUND_MB = 16;     // growth allowed over the baseline (ASan with a small quarantine)

h.test('stalled consumers are cut off at --max-queue-bytes, the gateway RSS stays bounded, a normal client\'s latency is unaffected', async () => {
  const redis = await h.startRedis({ args: ['--client-output-buffer-limit', 'pubsub 0 0 0'] });
  /* the query op's last-seen cache would keep the flood's objects (by design,
   * bounded by --initial-cache-size objects): off, so RSS measures the queues */
  const s = await h.startStack({ redis, args: ['--max-queue-bytes', String(QUEUE), '--initial-cache-size', '0'],
    env: F.measuredEnv() });
  const pid = s.gw.proc.pid;
  const normal = await F.rawSubscriber(s.url, 'Flow', {}, 'normal');

  let n = 0;
  let phase = 'warmup';
  const sentPhase = [];
  const rss = { warmup: [], base: [], stall: [], flood: [], after: [] };
  const sampler = setInterval(() => { try { rss[phase].push(h.procStats(pid).rssKb); } catch { /* exiting */ } }, 100);
  h.onTeardown(() => clearInterval(sampler));

  /* publishes at RATE for ms; each object carries n and its publish time */
  async function stream(ms) {
    const t0 = Date.now();
    let k = 0;
    while (Date.now() - t0 < ms) {
      const i = n++;
      sentPhase[i] = phase;
      await s.pub.change('Flow', 'create', h.obj({ objectId: `fl${F.pad(i)}`, className: 'Flow', n: i, ts: Date.now(), pad: PAD }));
      k++;
      const wait = t0 + (k * 1000) / RATE - Date.now();
      if (wait > 0) await h.sleep(wait);
    }
  }
  const latencies = (ph) => {
    const out = [];
    for (const x of normal.got) if (sentPhase[x.n] === ph) out.push(x.t - x.ts);
    return out;
  };

  await stream(1000); // warm-up (not measured)
  phase = 'base';
  await stream(BASE_MS);
  phase = 'stall';
  const stalled = [];
  const spawner = (async () => {
    const t0 = Date.now();
    while (Date.now() - t0 < STALL_MS - 500) {
      const c = await h.wsClient(s.url);
      await c.connect();
      F.recordRaw(c, 1, `stalled${stalled.length + 1}`);
      await c.subscribe(1, 'Flow', {});
      await c.subscribe(2, 'Flood', {}); // the flood below is for them only
      c.ws._socket.pause(); // reads nothing from now on
      stalled.push(c);
      await h.sleep(SPAWN_EVERY_MS);
    }
  })();
  await stream(STALL_MS);
  await spawner;
  const N = n;

  // Then a flood of big events only the stalled consumers subscribe to (the
  // kernel takes a few MB per socket before the gateway queues anything), until
  // every one of them is cut off, FLOOD_MB at most: with the limit the gateway
  // holds about QUEUE per stalled consumer; without it, it would hold the flood.
  phase = 'flood';
  const big = 'f'.repeat(16000);
  let flooded = 0;
  let floodN = 0;
  while ((await F.metrics(s.gw)).slow_consumers_closed < stalled.length && flooded < FLOOD_MB * 1048576) {
    const batch = [];
    for (let k = 0; k < 100; k++, floodN++) batch.push(s.pub.change('Flood', 'create', h.obj({ objectId: `fd${F.pad(floodN)}`, className: 'Flood', big })));
    await Promise.all(batch);
    flooded += 100 * (big.length + 150);
    await h.sleep(50);
  }
  await h.sleep(300);
  phase = 'after';
  clearInterval(sampler);
  const rssBase = Math.max(...rss.base) / 1024;
  const rssStall = Math.max(...rss.stall) / 1024;
  const rssPeak = Math.max(...rss.stall, ...rss.flood) / 1024;
  const m = await F.metrics(s.gw);
  process.stderr.write(`# gateway VmRSS: baseline (max of the no-stall phase) ${rssBase.toFixed(1)} MB, peak with stalled consumers ${rssStall.toFixed(1)} MB, `
    + `peak with the ${(flooded / 1048576).toFixed(0)} MB flood to them ${rssPeak.toFixed(1)} MB (+${(rssPeak - rssBase).toFixed(1)} MB, bound +${RSS_BOUND_MB} MB); `
    + `${stalled.length - m.slow_consumers_closed} of ${stalled.length} stalled consumers not cut off\n`);
  assert.ok(rssPeak - rssBase < RSS_BOUND_MB, `gateway RSS grew ${(rssPeak - rssBase).toFixed(1)} MB with stalled consumers (bound ${RSS_BOUND_MB} MB)`);
  assert.equal(m.slow_consumers_closed, stalled.length, `every stalled consumer is cut off (after a ${(flooded / 1048576).toFixed(0)} MB flood)`);

  await h.waitFor(() => normal.got.length >= N || normal.closeInfo, { timeout: 15000, what: `the normal client to get all ${N} events (${normal.got.length})` });
  if (normal.closeInfo) {
    const g = normal.got;
    const tl = g.slice(-40).map((x, i, a) => `${x.n}:${x.t - x.ts}ms${i ? `+${x.t - a[i - 1].t}` : ''}`).join(' ');
    assert.fail(`the normal client was closed ${JSON.stringify(normal.closeInfo)} after ${g.length} of ${N} events; last receipts (n:latency+gap) ${tl}; `
      + `gateway: ${s.gw.logs().split('\n').filter((l) => l.includes(normal.clientId)).join(' | ')}`);
  }
  // the server cut every stalled consumer off (it read nothing, so its queue
  // passed the limit); it reads again and finds the error, then the close
  for (const c of stalled) c.ws._socket.resume();
  for (const c of stalled) {
    const info = await h.withTimeout(c.closed, 10000, `${c.tag} close`);
    assert.deepEqual(info, { code: 1008, reason: 'slow consumer' }, `${c.tag}: close`);
    const frames = c.all;
    const errs = frames.filter((x) => x && x.op === 'error');
    assert.deepEqual(errs, [{ op: 'error', error: `client is too slow: more than ${QUEUE} bytes queued`, code: 155, reconnect: true, requestId: null }],
      `${c.tag}: the 155 error`);
    assert.equal(frames[frames.length - 1].op, 'error', `${c.tag}: the error is the last frame`);
    const ns = c.got.map((x) => x.n);
    assert.ok(ns.length > 0, `${c.tag}: got events before it stalled`);
    F.assertExactlyOnceInOrder(`${c.tag} (a gap-free run until the cut)`, ns, ns[0] + ns.length, ns[0]);
  }
  await h.waitFor(async () => (await F.metrics(s.gw)).connections === 1, { what: 'only the normal client left' });
  F.assertExactlyOnceInOrder('normal client', normal.got.map((x) => x.n), N);
  assert.equal(normal.closeInfo, null);

  const base = latencies('base');
  const stall = latencies('stall');
  const p = (xs, q) => F.percentile(xs, q);
  process.stderr.write(`# ${N} events of ${PAD.length + 150} B at ${RATE}/s; ${stalled.length} stalled consumers (one every ${SPAWN_EVERY_MS} ms), `
    + `queue limit ${QUEUE} B; gateway VmRSS at the end ${(h.procStats(pid).rssKb / 1024).toFixed(1)} MB\n`);
  process.stderr.write(`# normal client latency without stall: p50 ${p(base, 50)} ms p99 ${p(base, 99)} ms max ${Math.max(...base)} ms (${base.length} events); `
    + `with stalled consumers: p50 ${p(stall, 50)} ms p99 ${p(stall, 99)} ms max ${Math.max(...stall)} ms (${stall.length} events)\n`);
  assert.ok(p(stall, 99) < 3 * p(base, 99) + 20, `p99 latency with stalled consumers ${p(stall, 99)} ms vs ${p(base, 99)} ms without`);
  assert.ok(p(stall, 50) < 3 * p(base, 50) + 20, `p50 latency with stalled consumers ${p(stall, 50)} ms vs ${p(base, 50)} ms without`);
});
