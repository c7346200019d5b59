'use strict';
/*
 * Limits against abuse (protocol/errors.md, README "Running it"): the message
 * rate per connection (--max-messages-per-second, --message-burst), slow-loris
 * handshakes (--handshake-timeout) and regex cost. Each test asserts the
 * behaviour and its metric, and that a bystander client on the same gateway
 * keeps receiving every event of a ticker (published every 25 ms) promptly.
 *
 * LQ_TEST_VERBOSE=1 prints the measured figures.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const h = require('./harness');
const { metrics } = require('./mongo');

let redis;
let pub;
const tick = { n: 0, stopped: false, done: null };

before(async () => {
  redis = await h.startRedis();
  pub = await h.publisher(redis.port);
  tick.done = (async () => {
    while (!tick.stopped) {
      const n = ++tick.n;
      await pub.change('Heartbeat', 'create', h.obj({ objectId: `hb${n}`, className: 'Heartbeat', n, t: Date.now() }));
      await h.sleep(25);
    }
  })();
  h.onTeardown(async () => { tick.stopped = true; await tick.done.catch(() => {}); });
});
after(h.teardown);

function report(text) {
  if (process.env.LQ_TEST_VERBOSE) process.stderr.write(`abuse: ${text}\n`);
}

async function gateway(args = []) {
  const gw = await h.startGateway({ redis, args });
  await h.waitBusReady(gw, pub);
  return gw;
}

/* A client subscribed to the ticker's Heartbeat events. check() waits for an
 * event published after the call, asserts every heartbeat since the first
 * arrived once and in order and the client is still open, and returns the
 * worst latency (publish to receipt, ms) of those received since `from`
 * (an index into seen, e.g. mark() before the abuse). */
async function bystander(gw, label = 'bystander') {
  const c = await h.wsClient(gw.url);
  const seen = [];
  c.ws.on('message', (d) => {
    let f;
    try { f = JSON.parse(d); } catch { return; }
    if (f && f.op === 'create' && f.requestId === 1 && f.object && f.object.className === 'Heartbeat') {
      seen.push({ n: f.object.n, ms: Date.now() - f.object.t });
    }
  });
  await c.connect();
  await c.subscribe(1, 'Heartbeat', {});
  await h.waitFor(() => seen.length > 0, { what: `${label}: a first heartbeat` });
  return {
    c,
    seen,
    mark: () => seen.length,
    async check(from = 0) {
      const target = tick.n + 1;
      await h.waitFor(() => seen.length && seen[seen.length - 1].n >= target,
        { timeout: 5000, what: `${label}: heartbeat ${target} (got up to ${seen.length ? seen[seen.length - 1].n : '-'})` });
      for (let i = 1; i < seen.length; i++) {
        assert.equal(seen[i].n, seen[i - 1].n + 1, `${label}: heartbeats arrive in order, none lost or repeated`);
      }
      assert.equal(c.closeInfo, null, `${label} is still open`);
      return Math.max(...seen.slice(from).map((s) => s.ms));
    },
  };
}

const delta = (m0, m1, name) => m1[name] - m0[name];

/* ---------------- messages per second ---------------- */

const RATE = 4;   // one token per 250 ms: little trickles in while a burst is read, even under load
const BURST = 40;
let rateGw;
let rateBystander;

h.test(`over its rate (${RATE}/s, burst ${BURST}) a client gets one error 155 with the refused requestId; its later requests within the rate are served`, async () => {
  rateGw = await gateway(['--max-messages-per-second', String(RATE), '--message-burst', String(BURST)]);
  rateBystander = await bystander(rateGw, 'rate bystander');
  const from = rateBystander.mark();
  const m0 = await metrics(rateGw);
  const c = await h.wsClient(rateGw.url);
  await c.connect(); // 1 message of the burst
  const N = 50;
  for (let r = 1; r <= N; r++) c.send({ op: 'subscribe', requestId: r, query: { className: 'Rate', where: {} } });
  // the bucket holds BURST - 1 more (plus what trickles in meanwhile)
  let k = 0;
  for (;;) {
    const f = await c.next(3000);
    if (f.op === 'subscribed') {
      assert.deepEqual(f, { op: 'subscribed', clientId: c.clientId, requestId: k + 1 }, 'replies in order');
      k++;
      continue;
    }
    assert.deepEqual(f, {
      op: 'error', error: `too many messages on this connection (limit ${RATE} per second)`, code: 155, reconnect: false, requestId: k + 1,
    }, 'the first refused request is answered with the rate error and its requestId');
    break;
  }
  assert.ok(k >= BURST - 1 && k <= BURST + 1, `about a burst admitted: ${k} subscribes of ${N}`);
  // the other refused requests get no reply; a token that trickled in while the burst was
  // being read (a loaded machine) may have admitted one of them
  await h.sleep(400);
  const admitted = Array.from({ length: k }, (_, i) => i + 1);
  for (const f of c.pending.splice(0)) {
    assert.ok(f.op === 'subscribed' && f.requestId > k + 1, `only replies to admitted requests follow: ${h.show(f)}`);
    admitted.push(f.requestId);
  }
  assert.ok(admitted.length <= BURST + 2, `admitted ${admitted.length}`);
  let m1 = await metrics(rateGw);
  assert.equal(delta(m0, m1, 'limit_rate'), N - admitted.length, 'limit_rate counts every refused message');
  assert.equal(delta(m0, m1, 'limit_rate_closed'), 0);
  assert.equal(c.closeInfo, null, 'a client over its rate is not closed');

  // within the rate again: served. The refused subscriptions do not exist.
  await h.sleep(1100); // > RATE tokens back
  c.send({ op: 'unsubscribe', requestId: k + 1 });
  assert.equal((await c.next()).code, 2, `refused subscribe ${k + 1} made no subscription`);
  await c.subscribe(100, 'Rate', {});
  await pub.change('Rate', 'create', h.obj({ objectId: 'Rate000001', className: 'Rate' }));
  const got = [];
  for (let i = 0; i <= admitted.length; i++) {
    got.push((await c.next((x) => x && x.op === 'create' && x.object.objectId === 'Rate000001')).requestId);
  }
  assert.deepEqual(got.sort((a, b) => a - b), [...admitted, 100].sort((a, b) => a - b),
    'every admitted subscription, and only those, gets the event');
  await c.none(200, (x) => x && x.op === 'create');

  // a second burst in the same 10 s window: refused again, but silently (one error per window)
  const m2 = await metrics(rateGw);
  for (let r = 200; r < 230; r++) c.send({ op: 'unsubscribe', requestId: r });
  await h.waitFor(async () => delta(m2, await metrics(rateGw), 'limit_rate') >= 10, { what: 'second burst refused' });
  await h.sleep(300);
  assert.deepEqual(c.pending.filter((f) => f.code !== 2), [], 'no second rate error within the window');
  m1 = await metrics(rateGw);
  assert.equal(c.closeInfo, null);
  const worst = await rateBystander.check(from);
  report(`rate: ${k} of ${N} subscribes admitted at once (${N - k} refused, one error frame); a second burst in the window `
    + `refused ${delta(m2, m1, 'limit_rate')} silently; bystander worst latency ${worst} ms`);
  assert.ok(worst < 500, `bystander latency stayed small (${worst} ms)`);
});

h.test(`a client that keeps flooding (over 2 x ${BURST} refused) is closed with 1008 "too many messages"`, async () => {
  const from = rateBystander.mark();
  const m0 = await metrics(rateGw);
  const c = await h.wsClient(rateGw.url);
  await c.connect();
  const t0 = Date.now();
  for (let r = 1; r <= 400; r++) c.send({ op: 'subscribe', requestId: r, query: { className: 'Flood', where: {} } });
  const info = await h.withTimeout(c.closed, 5000, 'the flooding client to be closed');
  assert.equal(info.code, 1008, `close code (reason ${JSON.stringify(info.reason)})`);
  assert.equal(info.reason, 'too many messages');
  const errors = c.all.filter((f) => f && f.op === 'error');
  assert.equal(errors.length, 1, `exactly one error frame: ${h.show(errors)}`);
  assert.equal(errors[0].code, 155);
  const m1 = await metrics(rateGw);
  assert.equal(delta(m0, m1, 'limit_rate_closed'), 1);
  assert.ok(delta(m0, m1, 'limit_rate') > 2 * BURST, `limit_rate counted the refused messages (${delta(m0, m1, 'limit_rate')})`);
  // the gateway and everyone else carry on
  const worst = await rateBystander.check(from);
  report(`flood: closed ${Date.now() - t0} ms after the flood began; bystander worst latency ${worst} ms`);
  assert.ok(worst < 500, `bystander latency stayed small (${worst} ms)`);
  const d = await h.wsClient(rateGw.url);
  await d.connect();
  await d.subscribe(1, 'Flood', {});
});

h.test('default limits: a stock SDK reconnecting with --max-subscriptions subscriptions (connect + 256 subscribes at once) is never refused', async () => {
  const gw = await gateway();
  const m0 = await metrics(gw);
  for (let round = 0; round < 2; round++) { // connect, resubscribe everything, "reconnect", again
    const c = await h.wsClient(gw.url);
    c.send({ op: 'connect', applicationId: h.APP_ID });
    for (let r = 1; r <= 256; r++) c.send({ op: 'subscribe', requestId: r, query: { className: 'Sdk', where: { r } } });
    const f = await c.next();
    assert.equal(f.op, 'connected');
    c.clientId = f.clientId;
    for (let r = 1; r <= 256; r++) assert.deepEqual(await c.next(), { op: 'subscribed', clientId: c.clientId, requestId: r });
    await c.close();
  }
  const m1 = await metrics(gw);
  assert.equal(delta(m0, m1, 'limit_rate'), 0, 'nothing refused for rate');
  await gw.stop();
});

/* ---------------- slow-loris handshakes ---------------- */

const UPGRADE = (port) => [
  'GET / HTTP/1.1', `Host: 127.0.0.1:${port}`, 'Upgrade: websocket', 'Connection: Upgrade',
  'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', 'User-Agent: slow', '', '',
].join('\r\n');

/* A TCP client that writes the upgrade request `step` bytes every `everyMs`
 * (and stops after `maxMs`, then closes itself if the server has not).
 * Resolves {ms (connect to close), sent, reply} when the socket closes. */
function trickle(port, { step = 1, everyMs = 300, maxMs = 60000 } = {}) {
  return new Promise((resolve) => {
    const req = UPGRADE(port);
    const sock = net.connect({ port, host: '127.0.0.1' });
    const st = { sent: 0, reply: '', t0: 0 };
    let timer = null;
    let stop = null;
    sock.on('error', () => {});
    sock.once('connect', () => {
      st.t0 = Date.now();
      timer = setInterval(() => {
        if (st.sent < req.length) {
          sock.write(req.slice(st.sent, st.sent + step));
          st.sent += step;
        }
      }, everyMs);
      stop = setTimeout(() => sock.destroy(), maxMs);
    });
    sock.on('data', (d) => { st.reply += d; });
    sock.once('close', () => {
      clearInterval(timer);
      clearTimeout(stop);
      resolve({ ms: Date.now() - st.t0, sent: st.sent, reply: st.reply, complete: st.sent >= req.length });
    });
    st.sock = sock;
  });
}

h.test('slow loris: connections trickling their upgrade request are dropped at --handshake-timeout; others connect meanwhile', async () => {
  const TIMEOUT_S = 2;
  const gw = await gateway(['--handshake-timeout', String(TIMEOUT_S)]);
  const b = await bystander(gw);
  const from = b.mark();
  const m0 = await metrics(gw);
  const N = 5;
  const loris = Array.from({ length: N }, () => trickle(gw.port, { step: 1, everyMs: 300 }));
  // a peer that gives up by itself before the timeout is not a timed-out handshake
  const quitter = trickle(gw.port, { step: 1, everyMs: 100, maxMs: 500 });
  await h.sleep(500);
  // meanwhile a normal client connects, subscribes and receives events
  const t0 = Date.now();
  const c = await h.wsClient(gw.url);
  await c.connect();
  const connectMs = Date.now() - t0;
  await c.subscribe(1, 'Heartbeat', {});
  await c.event(1, undefined, 2000);
  const results = await Promise.all(loris);
  for (const r of results) {
    assert.ok(!r.complete, `the request was still incomplete (${r.sent} bytes sent)`);
    assert.ok(r.ms >= TIMEOUT_S * 1000 - 200 && r.ms <= TIMEOUT_S * 1000 + 1500,
      `dropped ${r.ms} ms after connecting (expected about ${TIMEOUT_S} s)`);
    assert.equal(r.reply, '', 'nothing answered');
  }
  const q = await quitter;
  assert.ok(q.ms < TIMEOUT_S * 1000 - 500, `the quitter left by itself (${q.ms} ms)`);
  const m1 = await metrics(gw);
  assert.equal(delta(m0, m1, 'handshakes_timed_out'), N, 'handshakes_timed_out counts the dropped slow handshakes, not the quitter');

  // a slow handshake that completes within the timeout is served and not counted
  const slowOk = await trickle(gw.port, { step: 20, everyMs: 100, maxMs: TIMEOUT_S * 1000 + 1000 }); // ~1 s
  assert.ok(slowOk.complete, 'the whole request was sent');
  assert.match(slowOk.reply, /^HTTP\/1\.1 101 /, 'upgraded');
  assert.ok(slowOk.ms >= TIMEOUT_S * 1000 + 900, `the upgraded connection was not dropped (closed by the test after ${slowOk.ms} ms)`);
  const m2 = await metrics(gw);
  assert.equal(delta(m1, m2, 'handshakes_timed_out'), 0, 'a handshake completed in time is not counted');
  assert.ok(gw.alive());
  const worst = await b.check(from);
  report(`slow loris: closed after ${results.map((r) => r.ms).join(', ')} ms (timeout ${TIMEOUT_S} s); quitter ${q.ms} ms; `
    + `a normal client connected in ${connectMs} ms meanwhile; bystander worst latency ${worst} ms`);
  assert.ok(connectMs < 1000, `the normal client connected promptly (${connectMs} ms)`);
  assert.ok(worst < 500, `bystander latency stayed small (${worst} ms)`);
});

/* ---------------- regex cost ---------------- */

h.test('a catastrophic regex does not stall the gateway: the event is treated as no match, counted, others unaffected', async () => {
  const gw = await gateway();
  const b = await bystander(gw);
  const from = b.mark();
  const evil = await h.wsClient(gw.url);
  await evil.connect();
  await evil.subscribe(1, 'Regex', { name: { $regex: '^(a+)+$' } });
  const all = await h.wsClient(gw.url);
  await all.connect();
  await all.subscribe(1, 'Regex', {});
  const m0 = await metrics(gw);

  const t0 = Date.now();
  await pub.change('Regex', 'create', h.obj({ objectId: 'Evil000001', className: 'Regex', name: `${'a'.repeat(30)}b` }));
  await all.event(1, 'Evil000001', 5000);
  const processedMs = Date.now() - t0;
  const m1 = await metrics(gw);
  assert.ok(delta(m0, m1, 'limit_regex') >= 1, `limit_regex counts the match stopped by the PCRE2 limit (${delta(m0, m1, 'limit_regex')})`);
  // the subscription still matches what it should
  await pub.change('Regex', 'create', h.obj({ objectId: 'Good000001', className: 'Regex', name: 'aaaa' }));
  const f = await evil.event(1, undefined, 3000);
  assert.equal(f.object.objectId, 'Good000001', 'the catastrophic object did not match; the next matching one did');
  assert.equal(delta(m1, await metrics(gw), 'limit_regex'), 0, 'a normal match is not counted');

  // a burst of such events: the bystander's heartbeats stay prompt
  const mark = b.mark();
  const tb = Date.now();
  for (let i = 0; i < 20; i++) {
    await pub.change('Regex', 'create', h.obj({ objectId: `Evil1${String(i).padStart(5, '0')}`, className: 'Regex', name: `${'a'.repeat(30)}b` }));
  }
  await all.event(1, 'Evil100019', 5000);
  const burstMs = Date.now() - tb;
  const m2 = await metrics(gw);
  assert.ok(delta(m1, m2, 'limit_regex') >= 20, `each catastrophic match counted (${delta(m1, m2, 'limit_regex')})`);
  await evil.none(200);
  const worstDuring = await b.check(mark);
  const worst = await b.check(from);
  report(`regex: catastrophic event delivered to a sibling subscriber ${processedMs} ms after publishing; `
    + `20 more published and delivered in ${burstMs} ms; bystander worst latency ${worst} ms (${worstDuring} ms around the burst)`);
  assert.ok(processedMs < 500, `the catastrophic event was processed promptly (${processedMs} ms)`);
  assert.ok(worst < 500, `bystander latency stayed small (${worst} ms)`);
  await gw.stop();
});

h.test('an over-long $regex is refused at subscribe with 102 and counted', async () => {
  const gw = await gateway();
  const c = await h.wsClient(gw.url);
  await c.connect();
  const m0 = await metrics(gw);
  c.send({ op: 'subscribe', requestId: 3, query: { className: 'Regex', where: { name: { $regex: 'a'.repeat(1025) } } } });
  assert.deepEqual(await c.next(), {
    op: 'error', error: '$regex is longer than 1024 bytes', code: 102, reconnect: false, requestId: 3,
  });
  const m1 = await metrics(gw);
  assert.equal(delta(m0, m1, 'limit_regex'), 1);
  await c.subscribe(4, 'Regex', { name: { $regex: 'a'.repeat(1024) } });
  assert.equal(delta(m1, await metrics(gw), 'limit_regex'), 0, 'a pattern at the limit is accepted and not counted');
  await gw.stop();
});

/* ---------------- the settings ---------------- */

h.test('--help lists the abuse settings with their variables and defaults; bad values exit 2 naming the flag', async () => {
  const r = h.runGatewaySync(['--help']);
  assert.equal(r.status, 0, `exit status (stderr: ${r.stderr})`);
  for (const [flag, env, def] of [['--max-messages-per-second', 'LIVEQUERY_MAX_MESSAGES_PER_SECOND', '100'],
    ['--message-burst', 'LIVEQUERY_MESSAGE_BURST', '512'], ['--handshake-timeout', 'LIVEQUERY_HANDSHAKE_TIMEOUT', '10']]) {
    assert.match(r.stdout, new RegExp(`${flag} .*\\n\\s+env ${env}, default ${def}( \\(reload\\))?\\n`), `--help lists ${flag}`);
  }
  const port = String(await h.freePort());
  for (const [args, env, mention] of [
    [['--max-messages-per-second', '0'], {}, /--max-messages-per-second/],
    [['--message-burst', 'lots'], {}, /--message-burst/],
    [['--handshake-timeout', '0'], {}, /--handshake-timeout/],
    [[], { LIVEQUERY_HANDSHAKE_TIMEOUT: '-3' }, /LIVEQUERY_HANDSHAKE_TIMEOUT/],
  ]) {
    const b = h.runGatewaySync(['--port', port, '--app-id', h.APP_ID, ...args], { env });
    assert.equal(b.status, 2, `exit status for ${args.join(' ')} ${JSON.stringify(env)} (stderr: ${b.stderr})`);
    assert.match(b.stderr, mention);
    assert.equal(b.stderr.trim().split('\n').length, 1, 'one line');
  }
});
