'use strict';
/*
 * faultkit.js - helpers shared by the fault_*.test.js and churn.test.js files:
 * a steady writer of numbered changes into the mock MongoDB, per-subscriber
 * recorders that timestamp every event on receipt, the exactly-once-in-order
 * check, percentiles, and a small TCP forwarding proxy (a stand-in load
 * balancer).
 */
const net = require('node:net');
const assert = require('node:assert/strict');
const h = require('./harness');

const pad = (i) => String(i).padStart(8, '0');

/* Writes numbered changes into the mock at `rate` per second, paced by the
 * clock (not by the round trip), until stop(). Each write carries n (0, 1, 2,
 * …) and wts (the write time, ms). By default inserts `${prefix}${pad(n)}` into
 * coll; with opts.objects = [ids], updates those objects in turn (n set on the
 * i-th write to objects[n % objects.length]).
 * w.n: writes done so far; w.at[n]: when write n was acknowledged. */
function startWriter(mongo, opts = {}) {
  const coll = opts.coll || 'BookStockLog';
  const rate = opts.rate || 80;
  const prefix = opts.prefix || 'w';
  const w = { n: 0, at: [], stopped: false, errors: [] };
  const t0 = Date.now();
  const loop = async () => {
    while (!w.stopped) {
      const n = w.n;
      const wts = Date.now();
      try {
        if (opts.objects) {
          await mongo.update(coll, opts.objects[n % opts.objects.length], { n, wts });
        } else {
          await mongo.insert(coll, { _id: `${prefix}${pad(n)}`, n, wts, ...(opts.fields || {}) });
        }
      } catch (e) {
        w.errors.push(e);
        w.stopped = true;
        throw e;
      }
      w.at[n] = Date.now();
      w.n = n + 1;
      const next = t0 + ((n + 1) * 1000) / rate;
      const wait = next - Date.now();
      if (wait > 0) await h.sleep(wait);
    }
  };
  w.done = loop();
  w.done.catch(() => {});
  w.stop = async () => { w.stopped = true; await w.done; return w.n; };
  h.onTeardown(() => { w.stopped = true; return w.done.catch(() => {}); });
  return w;
}

/* Timestamps a raw client's event frames for one requestId: c.got = [{n, t, op,
 * ts}] in arrival order (n = object.n, ts = object.ts, t = receipt time).
 * Every frame is still in c.all. */
function recordRaw(c, requestId = 1, label = '') {
  c.got = [];
  c.tag = label || c.label;
  c.ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let f;
    try { f = JSON.parse(data.toString('utf8')); } catch { return; }
    if (f && h.EVENT_OPS.includes(f.op) && f.requestId === requestId && f.object) c.got.push({ n: f.object.n, t: Date.now(), op: f.op, ts: f.object.ts });
  });
  return c;
}

/* A raw client on url, connected and subscribed (requestId 1) to className
 * with `where`, recording. */
async function rawSubscriber(url, className, where = {}, label = '', connectExtra = {}) {
  const c = await h.wsClient(url);
  await c.connect(connectExtra);
  recordRaw(c, 1, label);
  await c.subscribe(1, className, where);
  return c;
}

/* A Parse SDK LiveQueryClient on url subscribed to new Parse.Query(className):
 * s.got = [{n, t}] (every create/update, timestamped), s.subOpens = subscription
 * 'open' events (the first subscribe and every resubscribe after a reconnect),
 * s.subOpenAt = their times. */
async function sdkSubscriber(url, className, label = 'sdk', configure) {
  const P = h.Parse();
  const s = h.sdkClient(url);
  // runs before the SDK's close() (teardowns run newest first): close() does not
  // cancel a pending reconnect timer, which would then reconnect forever and keep
  // the test process alive when a test fails while the SDK is reconnecting
  h.onTeardown(() => { clearTimeout(s.client.reconnectHandle); s.client.reconnectHandle = null; });
  s.tag = label;
  s.got = [];
  s.subOpens = 0;
  s.subOpenAt = [];
  s.openAt = [];
  s.closeAt = [];
  s.client.on('open', () => s.openAt.push(Date.now()));
  s.client.on('close', () => s.closeAt.push(Date.now()));
  await h.withTimeout(s.ready, 5000, `${label} open`);
  const q = new P.Query(className);
  if (configure) configure(q);
  const sub = s.client.subscribe(q);
  s.sub = sub;
  for (const op of h.EVENT_OPS) sub.on(op, (o) => s.got.push({ n: o.get('n'), t: Date.now(), op }));
  sub.on('open', () => { s.subOpens++; s.subOpenAt.push(Date.now()); });
  await h.withTimeout(sub.subscribePromise, 5000, `${label} subscribed`);
  await h.waitFor(() => s.subOpens >= 1, { timeout: 3000, what: `${label} subscription open` });
  return s;
}

/* Asserts that ns is exactly from, from+1, …, to-1: nothing lost, nothing
 * repeated, nothing reordered; the message names the first difference. */
function assertExactlyOnceInOrder(label, ns, to, from = 0) {
  const want = to - from;
  const seen = new Map();
  for (const n of ns) seen.set(n, (seen.get(n) || 0) + 1);
  const missing = [];
  for (let i = from; i < to; i++) if (!seen.has(i)) missing.push(i);
  const dups = [...seen].filter(([, k]) => k > 1).map(([n, k]) => `${n}x${k}`);
  let firstBad = -1;
  for (let i = 0; i < Math.max(ns.length, want); i++) if (ns[i] !== from + i) { firstBad = i; break; }
  if (firstBad >= 0) {
    assert.fail(`${label}: expected n = ${from}..${to - 1} exactly once in order; got ${ns.length} events; `
      + `missing ${missing.length} [${missing.slice(0, 10).join(',')}${missing.length > 10 ? ',…' : ''}], `
      + `duplicated ${dups.length} [${dups.slice(0, 10).join(',')}], first difference at index ${firstBad}: `
      + `…${JSON.stringify(ns.slice(Math.max(0, firstBad - 3), firstBad + 4))}`);
  }
}

/* Waits until every subscriber has `count` events (fails early on a closed raw
 * client). On a timeout, names what is missing (events are n = 0..count-1). */
async function waitAll(subs, count, timeout = 20000) {
  await h.waitFor(() => {
    for (const s of subs) {
      if (s.closeInfo) throw Object.assign(new Error(`${s.tag}: closed ${JSON.stringify(s.closeInfo)}`), { fatal: true });
    }
    return subs.every((s) => s.got.length >= count);
  }, {
    timeout,
    interval: 20,
    what: `every subscriber to get ${count} events (${subs.map((s) => `${s.tag}:${s.got.length}`).join(' ')})`,
  }).catch((e) => {
    if (e.fatal) throw e;
    for (const s of subs) assertExactlyOnceInOrder(`${s.tag} (${e.message})`, s.got.map((x) => x.n), count);
    throw e;
  });
}

/* Waits until every subscriber has received an event with n >= n0 (fails early
 * on a closed raw client). */
async function waitPast(subs, n0, timeout = 20000, what = '') {
  const last = (s) => (s.got.length ? s.got[s.got.length - 1].n : -1);
  await h.waitFor(() => {
    for (const s of subs) {
      if (s.closeInfo) throw Object.assign(new Error(`${s.tag}: closed ${JSON.stringify(s.closeInfo)} at n=${last(s)}; error frames ${JSON.stringify(s.all.filter((x) => x && x.op === 'error'))}`), { fatal: true });
    }
    return subs.every((s) => last(s) >= n0);
  }, { timeout, interval: 10, what: `${what || 'delivery'}: every subscriber past n=${n0} (${subs.map((s) => `${s.tag}:${last(s)}`).join(' ')})` });
}

function percentile(xs, p) {
  if (!xs.length) return NaN;
  const a = [...xs].sort((x, y) => x - y);
  return a[Math.min(a.length - 1, Math.max(0, Math.ceil((p / 100) * a.length) - 1))];
}

/* A TCP forwarding proxy on a free port: each new client connection goes to
 * the first backend (in order) that accepts it; a refused backend is skipped.
 * When either side closes, so does the other. backends: [port, …] (mutable).
 * Returns {port, url, backends, conns: [{backend}], close()}. */
async function startProxy(backends) {
  const px = { backends, conns: [], sockets: new Set() };
  const server = net.createServer((client) => {
    px.sockets.add(client);
    client.once('close', () => px.sockets.delete(client));
    client.pause();
    client.on('error', () => {});
    const tryBackend = (i) => {
      if (i >= px.backends.length) { client.destroy(); return; }
      const up = net.connect({ port: px.backends[i], host: '127.0.0.1' });
      px.sockets.add(up);
      up.once('close', () => px.sockets.delete(up));
      up.once('error', () => { if (!up.connected) tryBackend(i + 1); else client.destroy(); });
      up.once('connect', () => {
        up.connected = true;
        px.conns.push({ backend: px.backends[i], at: Date.now() });
        client.pipe(up);
        up.pipe(client);
        client.resume();
        client.once('close', () => up.destroy());
        up.once('end', () => client.end());
        up.once('close', () => client.end());
      });
    };
    tryBackend(0);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  px.port = server.address().port;
  px.url = `ws://127.0.0.1:${px.port}`;
  px.close = () => new Promise((r) => {
    for (const s of px.sockets) s.destroy();
    server.close(() => r());
  });
  h.onTeardown(() => px.close());
  return px;
}

/* ASAN_OPTIONS for a gateway whose RSS is measured: a small quarantine, so
 * freed memory is not held (ASan keeps up to 256 MB of freed blocks by
 * default, which would hide or fake growth). Harmless without ASan. */
function measuredEnv() {
  const base = process.env.ASAN_OPTIONS ? `${process.env.ASAN_OPTIONS}:` : '';
  return { ASAN_OPTIONS: `${base}quarantine_size_mb=4:thread_local_quarantine_size_kb=64` };
}

/* A gateway's /metrics as {name: value}. Unlike mongo.js' metrics(), no check
 * that every metric metrics.h declares is rendered (that has its own test). */
async function metrics(gw) {
  const text = await (await fetch(`http://127.0.0.1:${gw.port}/metrics`)).text();
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^livequery_(\w+) (-?[\d.]+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  return out;
}

module.exports = {
  metrics, pad, startWriter, recordRaw, rawSubscriber, sdkSubscriber, assertExactlyOnceInOrder, waitAll, waitPast,
  percentile, startProxy, measuredEnv,
};
