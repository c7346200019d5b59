'use strict';
/*
 * harness.js - shared helpers for the livequeryd integration tests.
 *
 * Every test file starts its own redis-server and livequeryd on free loopback
 * ports, talks to them with raw `ws` clients and the real Parse JS SDK, and
 * tears everything down in `after(h.teardown)`. Child processes are also
 * killed when the test process exits or gets SIGINT/SIGTERM/SIGHUP, so a
 * failed or interrupted run leaves no orphans behind.
 *
 * Waiting is always on an event (a frame, a port, a PING reply); sleeps are
 * used only for "nothing arrives" windows.
 */
const { spawn, spawnSync } = require('node:child_process');
const net = require('node:net');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const nodeTest = require('node:test');
const assert = require('node:assert/strict');
const WebSocket = require('ws');

const REPO = path.resolve(__dirname, '..', '..');
const REDIS_BIN = process.env.REDIS_SERVER_BIN || '/usr/bin/redis-server';
const APP_ID = 'bookstore';
const MASTER_KEY = 'mk';
const DEFAULT_TIMEOUT = Number(process.env.LQ_TEST_TIMEOUT_MS || 3000);

function gatewayBin() {
  return process.env.LIVEQUERYD_BIN || path.join(REPO, 'build', 'livequeryd');
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/* ------------------------------------------------------------------ */
/* Process and resource bookkeeping                                   */
/* ------------------------------------------------------------------ */

const children = new Set();     // live child processes
const tempDirs = new Set();
const teardowns = [];           // async cleanup functions, run in reverse order
const gateways = [];            // every gateway started, for log dumps

function track(proc) {
  children.add(proc);
  proc.once('exit', () => children.delete(proc));
  return proc;
}

function killAllNow() {
  for (const p of children) {
    try { p.kill('SIGKILL'); } catch { /* already gone */ }
  }
  for (const d of tempDirs) {
    try { fs.rmSync(d, { recursive: true, force: true }); } catch { /* ignore */ }
  }
}

process.on('exit', killAllNow);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killAllNow();
    process.exit(128 + (os.constants.signals[sig] || 1));
  });
}

function onTeardown(fn) {
  teardowns.push(fn);
}

/* Runs every registered cleanup (newest first). Use as `after(h.teardown)`.
 * Fails (after cleaning up) if a gateway exited by itself during the file (a
 * signal or a non-zero status, e.g. a sanitizer report): a crash must never go
 * unnoticed. */
async function teardown() {
  const errors = [];
  while (teardowns.length) {
    const fn = teardowns.pop();
    try { await fn(); } catch (e) { errors.push(e); }
  }
  killAllNow();
  const crashed = gateways.filter((g) => g.crash);
  if (crashed.length) {
    for (const g of crashed) dumpGatewayLogs(g, `gateway crashed: ${g.crash}`);
    throw new Error(`gateway process crashed during the test file: ${crashed.map((g) => g.crash).join('; ')}`);
  }
  if (errors.length) throw errors[0];
}

function dumpGatewayLogs(g, why) {
  const lines = g.logs().split('\n');
  const tail = lines.slice(-200).join('\n');
  process.stderr.write(`\n===== livequeryd :${g.port} logs (${why}; last ${Math.min(lines.length, 200)} lines) =====\n${tail}\n===== end of livequeryd :${g.port} logs =====\n`);
}

function dumpAllLogs(why) {
  for (const g of gateways) dumpGatewayLogs(g, why);
}

/* node:test's test() with a gateway log dump when the body throws. */
function test(name, opts, fn) {
  if (typeof opts === 'function') { fn = opts; opts = {}; }
  return nodeTest.test(name, opts, async (t) => {
    try {
      await fn(t);
    } catch (e) {
      dumpAllLogs(`test failed: ${name}`);
      throw e;
    }
  });
}

/* ------------------------------------------------------------------ */
/* Small async utilities                                              */
/* ------------------------------------------------------------------ */

/* Polls fn until it returns a truthy value. An error thrown by fn is retried,
 * unless it is marked fatal (see fatal()), which aborts the wait at once. */
async function waitFor(fn, { timeout = 5000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      if (e.fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    }
    await sleep(interval);
  }
}

function fatal(message) {
  const e = new Error(message);
  e.fatal = true;
  return e;
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/* The port accepts and answers a complete HTTP request (any status). A bare
 * connect-and-close is deliberately not used as the readiness probe: that case
 * is tested on its own in hostile.test.js. tlsOpts (e.g. {ca}): over TLS. */
function httpAnswers(port, tlsOpts) {
  return new Promise((resolve) => {
    const s = tlsOpts ? require('node:tls').connect({ port, host: '127.0.0.1', ...tlsOpts })
      : net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    const done = (v) => { s.destroy(); resolve(v); };
    s.setTimeout(2000, () => done(false));
    s.once(tlsOpts ? 'secureConnect' : 'connect', () => s.write(`GET /health HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`));
    s.on('data', (d) => { buf += d; if (buf.length >= 12) done(/^HTTP\/1\.[01] \d{3}/.test(buf)); });
    s.once('end', () => done(/^HTTP\/1\.[01] \d{3}/.test(buf)));
    s.once('error', () => done(false));
  });
}

function redisPing(port) {
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    let buf = '';
    const done = (v) => { s.destroy(); resolve(v); };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => { buf += d; if (buf.includes('\r\n')) done(buf.startsWith('+PONG')); });
    s.once('error', () => done(false));
  });
}

function exited(proc) {
  return proc.exitCode !== null || proc.signalCode !== null;
}

async function stopProcess(proc, signal = 'SIGTERM', graceMs = 3000) {
  if (!proc || exited(proc)) return;
  const gone = new Promise((r) => proc.once('exit', r));
  try { proc.kill(signal); } catch { /* gone */ }
  const ok = await Promise.race([gone.then(() => true), sleep(graceMs).then(() => false)]);
  if (!ok) {
    try { proc.kill('SIGKILL'); } catch { /* gone */ }
    await gone;
  }
}

/* Environment for child processes: no LIVEQUERY_* settings leak in from the
 * caller's shell (config.h reads them), unless a test passes them explicitly. */
/* The environment a gateway runs with: no LIVEQUERY_* from the caller, and
 * (for sanitizer builds) LeakSanitizer told about libwebsockets' own leak on a
 * failed listen, so only our leaks fail a test. */
function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('LIVEQUERY_')) env[k] = v;
  env.LSAN_OPTIONS = `suppressions=${path.join(__dirname, '..', 'lsan.supp')}:print_suppressions=0`;
  /* libmongoc keeps its counters in /dev/shm/mongoc-<pid>; one left by a killed
   * process whose pid comes round again makes it warn on stderr at load */
  env.MONGOC_DISABLE_SHM = '1';
  return { ...env, ...extra };
}

/* A process's resident set (VmRSS, KiB) and open file descriptors, from /proc. */
function procStats(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return { rssKb: m ? Number(m[1]) : NaN, fds: fs.readdirSync(`/proc/${pid}/fd`).length };
}

/* ------------------------------------------------------------------ */
/* redis-server                                                       */
/* ------------------------------------------------------------------ */

/* Starts Debian's redis-server on a free port in a temp dir.
 * Returns {port, url, stop(), restart(), logs()}; restart() reuses the port.
 * opts.persist: append-only file with appendfsync always (in the temp dir), so
 * a restart (even after kill()) comes back with every acknowledged write. */
async function startRedis(opts = {}) {
  const port = opts.port || await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lq-redis-'));
  tempDirs.add(dir);
  let proc = null;
  let out = '';
  async function launch() {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
      '--dir', dir, ...(opts.persist ? ['--appendonly', 'yes', '--appendfsync', 'always'] : []), ...(opts.args || [])];
    proc = track(spawn(REDIS_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] }));
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { out += d; });
    const p = proc;
    await waitFor(async () => {
      if (exited(p)) throw fatal(`redis-server exited (${p.exitCode ?? p.signalCode}): ${out.slice(-2000)}`);
      return redisPing(port);
    }, { timeout: 10000, what: `redis-server on port ${port}` });
  }
  await launch();
  const r = {
    port,
    url: `redis://127.0.0.1:${port}`,
    get proc() { return proc; },
    logs: () => out,
    async stop() { await stopProcess(proc, 'SIGTERM'); },
    async restart() { await r.stop(); await launch(); },
    async start() { await launch(); }, // after stop()/kill(): the same port, empty unless opts.persist
    async kill() { await stopProcess(proc, 'SIGKILL'); }, // no shutdown: what a crash looks like
  };
  onTeardown(() => r.stop());
  return r;
}

/* ------------------------------------------------------------------ */
/* livequeryd                                                         */
/* ------------------------------------------------------------------ */

/* Spawns livequeryd on a free port and waits until it accepts and answers HTTP.
 * opts: {redisPort | redis, appId, masterKey, args: [...extra flags], env, port,
 * tls: {ca} (the gateway runs with --tls-cert/--tls-key given in args: probed
 * over TLS trusting ca; url is wss://)}.
 * Returns {port, url, http, proc, logs(), logsSince(offset), logOffset(), stop()}. */
async function startGateway(opts = {}) {
  const bin = gatewayBin();
  if (!fs.existsSync(bin)) throw new Error(`livequeryd binary not found at ${bin} (set LIVEQUERYD_BIN)`);
  const port = opts.port || await freePort();
  const redisPort = opts.redisPort || (opts.redis && opts.redis.port);
  const args = ['--port', String(port), '--host', '127.0.0.1'];
  if (redisPort) args.push('--redis-url', `redis://127.0.0.1:${redisPort}`);
  if (opts.appId !== null) args.push('--app-id', opts.appId || APP_ID);
  if (opts.masterKey) args.push('--master-key', opts.masterKey);
  args.push(...(opts.args || []));

  let log = '';
  const proc = track(spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: cleanEnv(opts.env) }));
  proc.stdout.on('data', (d) => { log += d; });
  proc.stderr.on('data', (d) => { log += d; });
  const g = {
    port,
    url: `${opts.tls ? 'wss' : 'ws'}://127.0.0.1:${port}`,
    http: `${opts.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    wsOpts: opts.tls ? { ...opts.tls } : {}, // `ws` options a client of this gateway needs (its CA)
    proc,
    args,
    stopping: false,
    crash: null,
    logs: () => log,
    logOffset: () => log.length,
    logsSince: (off) => log.slice(off),
    alive: () => !exited(proc),
    async stop() {
      if (g.stopping) return;
      g.stopping = true;
      await stopProcess(proc, 'SIGTERM', 5000);
      /* SIGTERM must end in a clean exit 0: a sanitizer build turns leaks and
       * errors at shutdown into a non-zero status, which fails the file */
      if (!g.crash && proc.exitCode !== 0) {
        g.crash = `livequeryd :${port} did not shut down cleanly on SIGTERM (code ${proc.exitCode}, signal ${proc.signalCode})`;
      }
    },
  };
  proc.once('exit', (code, signal) => {
    if (!g.stopping && (signal || code !== 0)) {
      g.crash = `livequeryd :${port} exited unexpectedly (code ${code}, signal ${signal})`;
    }
  });
  gateways.push(g);
  onTeardown(() => g.stop());
  try {
    await waitFor(async () => {
      if (exited(proc)) throw fatal(`livequeryd exited early (code ${proc.exitCode}, signal ${proc.signalCode})`);
      return httpAnswers(port, opts.tls);
    }, { timeout: 10000, what: `livequeryd answering HTTP on ${port}` });
  } catch (e) {
    dumpGatewayLogs(g, 'startup failed');
    throw e;
  }
  return g;
}

/* ------------------------------------------------------------------ */
/* Redis publisher (node-redis v4)                                    */
/* ------------------------------------------------------------------ */

async function publisher(redisPort, { appId = APP_ID, prefix = 'livequery:' } = {}) {
  const { createClient } = require('redis');
  const c = createClient({
    url: `redis://127.0.0.1:${redisPort}`,
    socket: { reconnectStrategy: () => 100, connectTimeout: 2000 },
  });
  const errors = [];
  c.on('error', (e) => { errors.push(e); });   // expected while redis restarts
  await c.connect();
  const channel = `${prefix}${appId}:changes`;
  const p = {
    client: c,
    channel,
    errors,
    /* Publishes our bus message (protocol/bus.md). Returns the number of
     * Redis subscribers that received it. original: omitted when undefined. */
    change(className, op, object, original, extra = {}) {
      const msg = { v: 1, className, op, object };
      if (original !== undefined) msg.original = original;
      return c.publish(channel, JSON.stringify({ ...msg, ...extra }));
    },
    /* Parse Server's afterSave payload (reference §5). */
    parseAfterSave(app, current, original, clp) {
      const msg = { currentParseObject: { ...current, __type: 'Object' } };
      if (original) msg.originalParseObject = { ...original, __type: 'Object' };
      if (clp) msg.classLevelPermissions = clp;
      return c.publish(`${app}afterSave`, JSON.stringify(msg));
    },
    parseAfterDelete(app, current, clp) {
      const msg = { currentParseObject: { ...current, __type: 'Object' } };
      if (clp) msg.classLevelPermissions = clp;
      return c.publish(`${app}afterDelete`, JSON.stringify(msg));
    },
    raw(ch, text) { return c.publish(ch, text); },
    async quit() { try { await c.quit(); } catch { try { await c.disconnect(); } catch { /* gone */ } } },
  };
  onTeardown(() => p.quit());
  return p;
}

/* ------------------------------------------------------------------ */
/* Frame queue + raw WebSocket client                                 */
/* ------------------------------------------------------------------ */

function show(x) {
  if (typeof x === 'string') return JSON.stringify(x.length > 300 ? `${x.slice(0, 300)}…` : x);
  const s = JSON.stringify(x);
  return s && s.length > 600 ? `${s.slice(0, 600)}…` : s;
}

/* An ordered queue of received items with awaitable, consuming lookups. */
class Inbox {
  constructor(label) {
    this.label = label;
    this.all = [];        // everything ever received, in order
    this.pending = [];    // received and not yet consumed by next()
    this.waiters = new Set();
    this.ended = null;    // reason string once nothing more can arrive
  }
  push(item) {
    this.all.push(item);
    this.pending.push(item);
    this.wake();
  }
  end(reason) {
    if (!this.ended) this.ended = reason;
    this.wake();
  }
  wake() {
    for (const w of [...this.waiters]) w();
  }
  /* next() / next(timeoutMs) / next(pred) / next(pred, timeoutMs):
   * without pred, consumes and returns the next unconsumed item;
   * with pred, consumes and returns the first unconsumed item matching it
   * (others stay pending). Throws on timeout or when the source ended. */
  next(pred, timeoutMs) {
    if (typeof pred === 'number') { timeoutMs = pred; pred = null; }
    const ms = timeoutMs ?? DEFAULT_TIMEOUT;
    const what = pred ? (pred.description || pred.toString().slice(0, 160)) : 'any frame';
    return new Promise((resolve, reject) => {
      let timer = null;
      const check = () => {
        const i = pred ? this.pending.findIndex((x) => { try { return pred(x); } catch { return false; } }) : (this.pending.length ? 0 : -1);
        if (i >= 0) {
          const [item] = this.pending.splice(i, 1);
          cleanup();
          resolve(item);
          return;
        }
        if (this.ended) {
          cleanup();
          reject(new Error(`${this.label}: ended (${this.ended}) while waiting for ${what}; unconsumed: ${this.pendingText()}`));
        }
      };
      const cleanup = () => { clearTimeout(timer); this.waiters.delete(check); };
      timer = setTimeout(() => {
        cleanup();
        reject(new Error(`${this.label}: no ${what} within ${ms} ms; unconsumed: ${this.pendingText()}`));
      }, ms);
      this.waiters.add(check);
      check();
    });
  }
  /* Asserts that no unconsumed item (matching pred, if given) is pending
   * after waiting ms: "nothing (else) arrives". */
  async none(ms = 300, pred) {
    await sleep(ms);
    const bad = this.pending.filter((x) => !pred || pred(x));
    if (bad.length) {
      assert.fail(`${this.label}: expected nothing within ${ms} ms, got ${bad.length}: ${bad.slice(0, 5).map(show).join(' | ')}`);
    }
  }
  pendingText() {
    if (!this.pending.length) return '(none)';
    return `${this.pending.length}: ${this.pending.slice(0, 5).map(show).join(' | ')}${this.pending.length > 5 ? ' …' : ''}`;
  }
}

let clientSeq = 0;

/* A raw WebSocket client that records every frame: parsed JSON when the text
 * parses, else the raw text ({binary:true} frames are recorded as Buffers). */
class WsClient extends Inbox {
  constructor(url, opts = {}) {
    super(`ws#${++clientSeq}`);
    this.url = url;
    this.appId = opts.appId || APP_ID;
    this.clientId = null;
    this.closeInfo = null;
    this.errors = [];
    this.pings = 0;
    this.ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 5000, ...(opts.ws || {}) });
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) { this.push(Buffer.from(data)); return; }
      const text = data.toString('utf8');
      let v;
      try { v = JSON.parse(text); } catch { v = text; }
      this.push(v);
    });
    this.ws.on('ping', () => { this.pings++; });
    this.ws.on('error', (e) => { this.errors.push(e); });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
      this.ws.once('close', (code) => reject(new Error(`closed (${code}) before open`)));
    });
    this.opened.catch(() => {});
    this.closed = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        this.end(`closed with ${code} ${JSON.stringify(this.closeInfo.reason)}`);
        resolve(this.closeInfo);
      });
    });
  }
  get isOpen() { return this.ws.readyState === WebSocket.OPEN; }
  /* Sends an object as JSON, a string as-is (text frame), a Buffer as-is. */
  send(x, opts) {
    if (typeof x === 'string' || Buffer.isBuffer(x)) this.ws.send(x, opts);
    else this.ws.send(JSON.stringify(x), opts);
  }
  /* connect and expect `connected`; returns the frame. */
  async connect(extra = {}) {
    this.send({ op: 'connect', applicationId: this.appId, ...extra });
    const f = await this.next((x) => x && (x.op === 'connected' || x.op === 'error'));
    assert.equal(f.op, 'connected', `connect failed: ${show(f)}`);
    assert.match(f.clientId, UUID_RE);
    this.clientId = f.clientId;
    return f;
  }
  /* subscribe and expect `subscribed` for requestId. */
  async subscribe(requestId, className, where = {}, more = {}, opts = {}) {
    const query = { className, where };
    if (more.keys) query.keys = more.keys;
    if (more.watch) query.watch = more.watch;
    const msg = { op: opts.op || 'subscribe', requestId, query };
    if (more.sessionToken) msg.sessionToken = more.sessionToken;
    this.send(msg);
    const f = await this.next((x) => x && x.requestId === requestId && (x.op === 'subscribed' || x.op === 'error'));
    assert.deepEqual(f, this.expectedReply('subscribed', requestId), `subscribe ${requestId} failed`);
    return f;
  }
  async unsubscribe(requestId) {
    this.send({ op: 'unsubscribe', requestId });
    const f = await this.next((x) => x && ((x.op === 'unsubscribed' && x.requestId === requestId) || x.op === 'error'));
    assert.deepEqual(f, this.expectedReply('unsubscribed', requestId), `unsubscribe ${requestId} failed`);
    return f;
  }
  expectedReply(op, requestId) {
    const r = { op, clientId: this.clientId, requestId };
    if (this.installationId !== undefined) r.installationId = this.installationId;
    return r;
  }
  /* Waits for an event frame (create/enter/update/leave/delete) for requestId
   * whose object has objectId (if given). */
  event(requestId, objectId, timeoutMs) {
    const pred = (x) => x && EVENT_OPS.includes(x.op) && x.requestId === requestId
      && (objectId === undefined || (x.object && x.object.objectId === objectId));
    pred.description = `event for requestId ${requestId}${objectId !== undefined ? ` objectId ${objectId}` : ''}`;
    return this.next(pred, timeoutMs);
  }
  async close() {
    if (this.closeInfo) return this.closeInfo;
    if (this.ws.readyState === WebSocket.CONNECTING) {
      await this.opened.catch(() => {});
    }
    try { this.ws.close(1000); } catch { /* not open */ }
    const r = await Promise.race([this.closed, sleep(2000).then(() => null)]);
    if (!r) { this.ws.terminate(); return this.closed; }
    return r;
  }
}

const EVENT_OPS = ['create', 'enter', 'update', 'leave', 'delete'];
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;

/* Opens a raw client (waits for the WebSocket open). Closed at teardown. */
async function wsClient(url, opts = {}) {
  const c = new WsClient(url, opts);
  onTeardown(() => c.close());
  await withTimeout(c.opened, 5000, `WebSocket open ${url}`);
  return c;
}

/* A client whose handshake may be refused/closed: returns without awaiting open. */
function wsClientNoWait(url, opts = {}) {
  const c = new WsClient(url, opts);
  onTeardown(() => c.close());
  return c;
}

/* ------------------------------------------------------------------ */
/* Parse JS SDK helpers                                               */
/* ------------------------------------------------------------------ */

let parseInitialized = false;
function Parse() {
  const P = require('parse/node');
  if (!parseInitialized) {
    P.initialize(APP_ID);
    parseInitialized = true;
  }
  return P;
}

/* A Parse.LiveQueryClient that is open()ed and closed at teardown.
 * Returns {client, opens, closes, errors}; await `ready` for the first open. */
function sdkClient(url, extra = {}) {
  const P = Parse();
  const client = new P.LiveQueryClient({ applicationId: APP_ID, serverURL: url, ...extra });
  const st = { client, opens: 0, closes: 0, errors: [] };
  client.on('open', () => { st.opens++; });
  client.on('close', () => { st.closes++; });
  client.on('error', (e) => { st.errors.push(e); });
  st.ready = new Promise((resolve) => client.on('open', resolve)); // the SDK emitter has no once()
  client.open();
  onTeardown(async () => { await withTimeout(Promise.resolve(client.close()), 3000, 'SDK close').catch(() => {}); });
  return st;
}

/* Records the five event types of a LiveQuerySubscription into an Inbox:
 * items are {op, object, original (Parse.Object or undefined), response}. */
function recordSubscription(sub, label = 'sdk-sub') {
  const inbox = new Inbox(label);
  for (const op of EVENT_OPS) {
    sub.on(op, (object, a, b) => {
      const P = Parse();
      if (a instanceof P.Object) inbox.push({ op, object, original: a, response: b });
      else inbox.push({ op, object, original: undefined, response: a });
    });
  }
  sub.on('close', () => { inbox.closed = true; });
  sub.on('error', (e) => { (inbox.errors ||= []).push(e); });
  return inbox;
}

/* ------------------------------------------------------------------ */
/* REST objects                                                       */
/* ------------------------------------------------------------------ */

const T0 = Date.parse('2026-11-23T23:29:42.277Z');
function iso(offsetMs = 0) { return new Date(T0 + offsetMs).toISOString(); }

/* A Parse REST JSON object: {objectId, className, createdAt, updatedAt, ...fields}.
 * createdAt/updatedAt default to a fixed 2026 timestamp; fields override. */
function obj({ objectId, className, ...fields }) {
  assert.ok(objectId && className, 'obj() needs objectId and className');
  return { objectId, className, createdAt: iso(0), updatedAt: iso(0), ...fields };
}

/* The same object after an update: fields changed, updatedAt advanced. */
function updated(o, changes, dtMs = 1000) {
  return { ...o, ...changes, updatedAt: new Date(Date.parse(o.updatedAt) + dtMs).toISOString() };
}

function pointer(className, objectId) { return { __type: 'Pointer', className, objectId }; }
function date(isoString) { return { __type: 'Date', iso: isoString }; }

const PUBLIC_CLP = {
  ACL: { '*': { read: true, write: true } }, find: { '*': true }, get: { '*': true }, count: { '*': true },
  create: { '*': true }, update: { '*': true }, delete: { '*': true }, addField: { '*': true }, protectedFields: { '*': [] },
};

/* ------------------------------------------------------------------ */
/* Bus readiness and whole stacks                                     */
/* ------------------------------------------------------------------ */

/* Waits until the gateway delivers events from our change channel (and, with
 * parse:true, from <appId>afterSave): a probe client subscribes to LqProbe and
 * probe objects are published until one comes back. */
async function waitBusReady(gw, pub, { appId = APP_ID, parse = true, timeout = 10000 } = {}) {
  const c = await wsClient(gw.url, { appId, ws: gw.wsOpts });
  try {
    await c.connect();
    await c.subscribe(1, 'LqProbe', {});
    let n = 0;
    const probe = async (send, what) => {
      const deadline = Date.now() + timeout;
      for (;;) {
        const id = `probe${++n}`;
        await send(id);
        try {
          await c.event(1, id, 250);
          return;
        } catch (e) {
          if (c.closeInfo) throw e;
          if (Date.now() > deadline) throw new Error(`gateway :${gw.port} never delivered a ${what} probe event within ${timeout} ms`);
        }
      }
    };
    await probe((id) => pub.change('LqProbe', 'create', obj({ objectId: id, className: 'LqProbe' })), 'bus');
    if (parse) await probe((id) => pub.parseAfterSave(appId, obj({ objectId: id, className: 'LqProbe' })), 'afterSave');
    // drain stragglers from earlier probes
    await sleep(50);
  } catch (e) {
    dumpGatewayLogs(gw, 'bus readiness failed');
    throw e;
  } finally {
    await c.close();
  }
}

/* redis + gateway + publisher, bus ready. opts go to startGateway (plus redisArgs). */
async function startStack(opts = {}) {
  const redis = opts.redis || await startRedis({ args: opts.redisArgs });
  const gw = await startGateway({ ...opts, redis });
  const pub = await publisher(redis.port, { appId: opts.appId || APP_ID });
  if (opts.waitBus !== false) await waitBusReady(gw, pub, { appId: opts.appId || APP_ID });
  return { redis, gw, pub, url: gw.url };
}

/* Runs livequeryd synchronously (CLI tests). */
function runGatewaySync(args, { env, timeout = 5000 } = {}) {
  return spawnSync(gatewayBin(), args, { encoding: 'utf8', timeout, env: cleanEnv(env) });
}

module.exports = {
  APP_ID, MASTER_KEY, REPO, EVENT_OPS, UUID_RE, PUBLIC_CLP, DEFAULT_TIMEOUT,
  gatewayBin, sleep, waitFor, withTimeout, freePort, httpAnswers, redisPing, stopProcess, cleanEnv, procStats,
  startRedis, startGateway, publisher, waitBusReady, startStack, runGatewaySync,
  Inbox, WsClient, wsClient, wsClientNoWait,
  Parse, sdkClient, recordSubscription,
  obj, updated, iso, pointer, date,
  onTeardown, teardown, test, dumpAllLogs, dumpGatewayLogs, show,
};
