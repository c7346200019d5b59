'use strict';
/*
 * Connection churn: 10,000 connect/subscribe/disconnect cycles, 50 at a time,
 * half closing cleanly (close 1000) and half dropping the TCP connection
 * abruptly. Afterwards the gateway holds nothing of them: the connections,
 * subscriptions and subscription_groups gauges are 0, its open file
 * descriptors are back to the baseline and its RSS near it; a bystander
 * subscribed throughout got every event published meanwhile, once, in order.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');
const h = require('./harness');
const F = require('./faultkit');

after(h.teardown);

const CYCLES = Number(process.env.LQ_CHURN_CYCLES || 10000);
const CONCURRENCY = 50;
const RSS_SLACK_MB = 20;
const FD_SLACK = 2;

/* One cycle: open, connect, subscribe (one of 100 queries), then close
 * cleanly (even i) or destroy the socket (odd i). Resolves when done. */
function cycle(url, i) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 10000 });
    const timer = setTimeout(() => { ws.terminate(); reject(new Error(`cycle ${i}: stuck`)); }, 20000);
    const done = (e) => { clearTimeout(timer); if (e) reject(e); else resolve(); };
    ws.on('error', (e) => done(new Error(`cycle ${i}: ${e.message}`)));
    ws.on('open', () => ws.send(JSON.stringify({ op: 'connect', applicationId: h.APP_ID })));
    ws.on('message', (data) => {
      const f = JSON.parse(data.toString());
      if (f.op === 'connected') {
        ws.send(JSON.stringify({ op: 'subscribe', requestId: 1, query: { className: 'Churn', where: { k: i % 100 } } }));
      } else if (f.op === 'subscribed') {
        if (i % 2 === 0) {
          ws.once('close', (code) => done(code === 1000 ? null : new Error(`cycle ${i}: close ${code}`)));
          ws.close(1000);
        } else {
          ws._socket.destroy(); // no close frame, no FIN handshake waited for
          ws.once('close', () => done());
        }
      } else if (f.op === 'error') {
        done(new Error(`cycle ${i}: ${data}`));
      }
    });
  });
}

h.test(`${CYCLES} connect/subscribe/disconnect cycles (${CONCURRENCY} at a time, half abrupt): gauges to 0, fds and RSS back to baseline`, async () => {
  const s = await h.startStack({ env: F.measuredEnv() });
  const pid = s.gw.proc.pid;
  const bystander = await F.rawSubscriber(s.url, 'Churn', {}, 'bystander');

  // warm-up: let the first connections allocate what is allocated once
  for (let i = 0; i < 100; i += CONCURRENCY) await Promise.all([...Array(CONCURRENCY).keys()].map((k) => cycle(s.url, i + k)));
  await h.waitFor(async () => (await F.metrics(s.gw)).connections === 1, { what: 'warm-up connections gone' });
  await h.sleep(200);
  const base = h.procStats(pid);
  let peak = base.rssKb;
  let peakFds = base.fds;
  const sampler = setInterval(() => {
    try { const st = h.procStats(pid); peak = Math.max(peak, st.rssKb); peakFds = Math.max(peakFds, st.fds); } catch { /* gone */ }
  }, 100);
  h.onTeardown(() => clearInterval(sampler));

  // events published throughout, for the bystander
  let published = 0;
  let publishing = true;
  const publisher = (async () => {
    while (publishing) {
      const n = published++;
      await s.pub.change('Churn', 'create', h.obj({ objectId: `ch${F.pad(n)}`, className: 'Churn', n, k: n % 100 }));
      await h.sleep(20);
    }
  })();

  const t0 = Date.now();
  let next = 0;
  let finished = 0;
  const worker = async () => {
    while (next < CYCLES) {
      const i = next++;
      await cycle(s.url, i);
      finished++;
    }
  };
  await Promise.all([...Array(CONCURRENCY).keys()].map(worker));
  const churnMs = Date.now() - t0;
  publishing = false;
  await publisher;
  assert.equal(finished, CYCLES);

  let m;
  await h.waitFor(async () => {
    m = await F.metrics(s.gw);
    return m.connections === 1 && m.subscriptions === 1 && m.subscription_groups === 1;
  }, { timeout: 15000, what: 'gauges back to the bystander alone' }).catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(m)}`); });
  let afterSt;
  await h.waitFor(() => { afterSt = h.procStats(pid); return afterSt.fds <= base.fds + FD_SLACK; },
    { timeout: 10000, what: 'fds back to the baseline' }).catch((e) => { throw new Error(`${e.message}: baseline ${base.fds}, now ${afterSt.fds}`); });
  clearInterval(sampler);
  await F.waitAll([bystander], published, 10000);
  F.assertExactlyOnceInOrder('bystander', bystander.got.map((x) => x.n), published);
  assert.equal(bystander.closeInfo, null);
  await bystander.close();
  await h.waitFor(async () => { m = await F.metrics(s.gw); return m.connections === 0 && m.subscriptions === 0 && m.subscription_groups === 0; },
    { what: 'every gauge at 0' });
  const end = h.procStats(pid);
  assert.equal(m.connections_total, 100 + CYCLES + 2, 'every cycle was one connection (plus the bystander and the bus probe)');
  assert.equal(m.slow_consumers_closed, 0);

  const mb = (kb) => (kb / 1024).toFixed(1);
  process.stderr.write(`# ${CYCLES} cycles in ${churnMs} ms (${Math.round(CYCLES / (churnMs / 1000))}/s, concurrency ${CONCURRENCY}); `
    + `${published} events to the bystander meanwhile\n`);
  process.stderr.write(`# gateway VmRSS baseline ${mb(base.rssKb)} MB, peak ${mb(peak)} MB, after ${mb(end.rssKb)} MB (+${mb(end.rssKb - base.rssKb)} MB, `
    + `allowed +${RSS_SLACK_MB} MB); open fds baseline ${base.fds}, peak ${peakFds}, after ${end.fds}\n`);
  assert.ok(end.fds <= base.fds + FD_SLACK, `fds ${base.fds} -> ${end.fds}`);
  assert.ok(end.rssKb - base.rssKb < RSS_SLACK_MB * 1024, `RSS ${mb(base.rssKb)} -> ${mb(end.rssKb)} MB`);
  assert.ok(churnMs < 45000, `the churn took ${churnMs} ms`);
});
