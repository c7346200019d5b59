'use strict';
/*
 * Configured limits: --max-connections, keepalive (--ping-interval),
 * slow consumers (--max-queue-bytes), and the command line itself.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const net = require('node:net');
const h = require('./harness');

let redis;
let pub;

before(async () => {
  // pubsub output buffer unlimited: the slow-consumer test floods the gateway on purpose
  redis = await h.startRedis({ args: ['--client-output-buffer-limit', 'pubsub 0 0 0'] });
  pub = await h.publisher(redis.port);
});
after(h.teardown);

/* ---------------- command line ---------------- */

const FLAGS = ['--port', '--host', '--redis-url', '--app-id', '--master-key', '--max-frame-bytes', '--max-json-depth',
  '--max-subscriptions', '--max-query-bytes', '--max-connections', '--max-queue-bytes', '--ping-interval', '--log-level',
  '--channel-prefix', '--event-loop', '--help'];

h.test('--help exits 0 and lists every flag', () => {
  const r = h.runGatewaySync(['--help']);
  assert.equal(r.error, undefined, `spawn failed: ${r.error}`);
  assert.equal(r.status, 0, `exit status (stderr: ${r.stderr})`);
  for (const f of FLAGS) assert.ok(r.stdout.includes(f), `--help output lists ${f}:\n${r.stdout}`);
});

const badCases = [
  { name: '--port abc', args: ['--port', 'abc', '--redis-url', 'redis://127.0.0.1:1', '--app-id', 'bookstore'], mention: /port/ },
  { name: '--port 70000', args: ['--port', '70000', '--redis-url', 'redis://127.0.0.1:1', '--app-id', 'bookstore'], mention: /port/ },
  { name: '--redis-url http://x', args: ['--port', 'PORT', '--redis-url', 'http://x', '--app-id', 'bookstore'], mention: /redis/i },
  { name: 'missing --app-id', args: ['--port', 'PORT', '--redis-url', 'redis://127.0.0.1:1'], mention: /app.?id/i },
  { name: '--max-frame-bytes -5', args: ['--port', 'PORT', '--app-id', 'bookstore', '--max-frame-bytes', '-5'], mention: /max-frame-bytes/ },
  { name: '--max-connections abc', args: ['--port', 'PORT', '--app-id', 'bookstore', '--max-connections', 'abc'], mention: /max-connections/ },
  { name: '--log-level loud', args: ['--port', 'PORT', '--app-id', 'bookstore', '--log-level', 'loud'], mention: /log-level/ },
  { name: '--event-loop select', args: ['--port', 'PORT', '--app-id', 'bookstore', '--event-loop', 'select'], mention: /event-loop/ },
  { name: 'unknown flag --bogus', args: ['--port', 'PORT', '--app-id', 'bookstore', '--bogus'], mention: /bogus/ },
];

for (const c of badCases) {
  h.test(`bad command line: ${c.name} exits 2 with a one-line error`, async () => {
    const port = await h.freePort();
    const args = c.args.map((a) => (a === 'PORT' ? String(port) : a));
    const r = h.runGatewaySync(args);
    assert.equal(r.error, undefined, `the process must exit by itself (${r.error})`);
    assert.equal(r.status, 2, `exit status for ${c.name} (stderr: ${JSON.stringify(r.stderr)})`);
    const err = r.stderr.replace(/\n$/, '');
    assert.ok(err.length > 0, 'an error message on stderr');
    assert.ok(!err.includes('\n'), `exactly one line on stderr, got: ${JSON.stringify(r.stderr)}`);
    assert.match(err, c.mention, 'the message names the bad flag');
  });
}

h.test('--version exits 0 and prints a version', () => {
  const r = h.runGatewaySync(['--version']);
  assert.equal(r.status, 0, `exit status (stderr: ${r.stderr})`);
  assert.ok(r.stdout.trim().length > 0, 'prints something');
});

h.test('a port already in use: exits with an error naming the port, no crash', async () => {
  const busy = net.createServer();
  await new Promise((r) => busy.listen(0, '127.0.0.1', r));
  h.onTeardown(() => new Promise((r) => busy.close(r)));
  const port = busy.address().port;
  const r = h.runGatewaySync(['--port', String(port), '--host', '127.0.0.1', '--redis-url', `redis://127.0.0.1:${redis.port}`,
    '--app-id', 'bookstore'], {
    // lws 4.1.6 leaks on a failed lws_create_context: suppressed for this start only
    env: { LSAN_OPTIONS: `suppressions=${path.join(h.REPO, 'tests', 'lsan-failed-start.supp')}:print_suppressions=0` },
  });
  assert.equal(r.error, undefined, `the process must exit by itself (${r.error})`);
  assert.equal(r.signal, null, `exited normally, not on ${r.signal} (stderr: ${r.stderr})`);
  assert.notEqual(r.status, 0, 'a non-zero exit status');
  assert.doesNotMatch(r.stderr, /runtime error|AddressSanitizer|LeakSanitizer|Segmentation/, 'no sanitizer report or crash');
  assert.ok(r.stderr.includes(String(port)), `the error names the port: ${r.stderr}`);
});

/* ---------------- --max-connections ---------------- */

h.test('--max-connections N: connection N+1 is closed with 1013 "server is full"', async () => {
  const N = 3;
  const gw = await h.startGateway({ redis, args: ['--max-connections', String(N)] });
  const cs = [];
  for (let i = 0; i < N; i++) {
    const c = await h.wsClient(gw.url);
    await c.connect();
    cs.push(c);
  }
  const extra = h.wsClientNoWait(gw.url);
  const info = await h.withTimeout(extra.closed, 5000, 'the extra connection to be closed');
  assert.equal(info.code, 1013, `close code (reason ${JSON.stringify(info.reason)}, errors ${extra.errors.map(String)})`);
  assert.equal(info.reason, 'server is full');
  // the N admitted connections still work
  for (const [i, c] of cs.entries()) await c.subscribe(i + 1, 'Seat', {});
  // a freed slot admits a new connection
  await cs.pop().close();
  const admitted = await h.waitFor(async () => {
    const c = h.wsClientNoWait(gw.url);
    try {
      await h.withTimeout(c.opened, 2000, 'open');
      c.send({ op: 'connect', applicationId: h.APP_ID });
      const f = await c.next(1000);
      if (f.op === 'connected') return c;
    } catch { /* still full: try again */ }
    await c.close();
    return null;
  }, { timeout: 5000, interval: 100, what: 'a connection to be admitted after one closed' });
  assert.ok(admitted.isOpen);
  await gw.stop();
});

/* ---------------- keepalive ---------------- */

/* A hand-written WebSocket client on a raw TCP socket: completes the upgrade,
 * then reads frames (counting pings) and never answers anything. */
function silentPeer(port) {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const st = { sock, pings: 0, closeFrames: 0, upgraded: false, closed: null };
    let buf = Buffer.alloc(0);
    st.closedP = new Promise((r) => sock.once('close', () => { st.closed = Date.now(); r(st.closed); }));
    sock.on('error', () => {});
    sock.once('connect', () => {
      sock.write([
        'GET /silent HTTP/1.1', `Host: 127.0.0.1:${port}`, 'Upgrade: websocket', 'Connection: Upgrade',
        'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version: 13', '', '',
      ].join('\r\n'));
    });
    sock.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      if (!st.upgraded) {
        const end = buf.indexOf('\r\n\r\n');
        if (end < 0) return;
        const head = buf.subarray(0, end).toString();
        if (!/^HTTP\/1\.1 101/.test(head)) { reject(new Error(`upgrade refused: ${head}`)); sock.destroy(); return; }
        if (!head.includes('s3pPLMBiTxaQ9kYGzzhZRbK+xOo=')) { reject(new Error(`bad Sec-WebSocket-Accept: ${head}`)); sock.destroy(); return; }
        st.upgraded = Date.now();
        buf = buf.subarray(end + 4);
        resolve(st);
      }
      for (;;) { // server frames are unmasked
        if (buf.length < 2) return;
        let len = buf[1] & 0x7f;
        let off = 2;
        if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
        else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
        if (buf.length < off + len) return;
        const opcode = buf[0] & 0x0f;
        if (opcode === 0x9) st.pings++;
        if (opcode === 0x8) st.closeFrames++;
        buf = buf.subarray(off + len);
      }
    });
    sock.once('close', () => reject(new Error('closed before the upgrade')));
  });
}

h.test('keepalive: a peer that never answers pings is dropped; a normal client stays', async () => {
  const gw = await h.startGateway({ redis, args: ['--ping-interval', '1'] });
  const normal = await h.wsClient(gw.url);
  await normal.connect();
  const peer = await silentPeer(gw.port);
  const closedAt = await h.withTimeout(peer.closedP, 6000, 'the silent peer to be dropped');
  const dropMs = closedAt - peer.upgraded;
  assert.ok(peer.pings >= 1, `the silent peer was pinged (${peer.pings} pings)`);
  assert.ok(dropMs <= 4500, `dropped ${dropMs} ms after the handshake (expected about 2-3 s with --ping-interval 1)`);
  assert.ok(dropMs >= 900, `dropped only after missing a ping (${dropMs} ms)`);
  // the ponging client outlives several periods
  const remaining = 5000 - (Date.now() - peer.upgraded);
  if (remaining > 0) await h.sleep(remaining);
  assert.equal(normal.closeInfo, null, 'the normal client was not dropped');
  assert.ok(normal.pings >= 3, `the normal client was pinged every second (${normal.pings} pings)`);
  await normal.subscribe(1, 'Alive', {});
  await gw.stop();
});

/* ---------------- slow consumer ---------------- */

h.test('slow consumer: over --max-queue-bytes it gets code 155 and is closed; others get everything', async () => {
  const QUEUE = 65536;
  const gw = await h.startGateway({ redis, args: ['--max-queue-bytes', String(QUEUE)] });
  await h.waitBusReady(gw, pub);
  const fast = await h.wsClient(gw.url);
  await fast.connect();
  await fast.subscribe(1, 'Bulk', {});
  const slow = await h.wsClient(gw.url);
  await slow.connect();
  await slow.subscribe(1, 'Bulk', {});
  slow.ws._socket.pause();

  const TOTAL = 1600;       // 1600 x ~8 KB = ~13 MB: far more than kernel buffers + the queue
  const BATCH = 4;          // <= 32 KB in flight, so the fast client never nears the limit
  const pad = 'p'.repeat(8000);
  let fastCount = 0;
  for (let i = 1; i <= TOTAL; i += BATCH) {
    for (let k = i; k < i + BATCH && k <= TOTAL; k++) {
      await pub.change('Bulk', 'create', h.obj({ objectId: `bulk${k}`, className: 'Bulk', k, pad }));
    }
    const lastInBatch = Math.min(i + BATCH - 1, TOTAL);
    for (; fastCount < lastInBatch;) {
      const f = await fast.next(5000);
      assert.equal(f.op, 'create', `fast client frame ${fastCount + 1}: ${h.show(f)}`);
      assert.equal(f.object.k, fastCount + 1, 'fast client gets every event in order');
      fastCount++;
    }
  }
  assert.equal(fastCount, TOTAL);
  assert.equal(fast.closeInfo, null, 'the fast client was not affected');

  slow.ws._socket.resume();
  const info = await h.withTimeout(slow.closed, 10000, 'the slow client to be closed');
  const events = slow.all.filter((f) => f && f.op === 'create' && f.requestId === 1);
  assert.ok(events.length < TOTAL, `the slow client was cut off (got ${events.length} of ${TOTAL})`);
  events.forEach((f, i) => assert.equal(f.object.k, i + 1, 'what the slow client did get is a gap-free prefix'));
  const errors = slow.all.filter((f) => f && f.op === 'error');
  if (errors.length) {
    assert.deepEqual(errors, [{
      op: 'error', error: `client is too slow: more than ${QUEUE} bytes queued`, code: 155, reconnect: true, requestId: null,
    }]);
    assert.equal(slow.all[slow.all.length - 1].op, 'error', 'the 155 error is the last frame');
  }
  if (process.env.LQ_TEST_VERBOSE) process.stderr.write(`slow consumer: ${events.length} events, errors ${JSON.stringify(errors)}, close ${JSON.stringify(info)}\n`);
  assert.equal(info.code, 1008, `close code (reason ${JSON.stringify(info.reason)}; got ${events.length} events, error frames ${errors.length})`);
  assert.equal(info.reason, 'slow consumer');
  assert.ok(gw.alive());
  await fast.subscribe(2, 'Bulk', { k: 1 });
  await gw.stop();
});
