'use strict';
/*
 * TLS on the listening port (--tls-cert / --tls-key: wss:// and https://
 * only) and the Origin check at upgrade (--allowed-origins).
 *
 * The certificate is a fresh self-signed one for 127.0.0.1 / localhost. The
 * Parse JS SDK runs in a child node process that trusts it through
 * NODE_EXTRA_CA_CERTS, so the certificate is really verified (the same child
 * without it must fail); raw clients pass it as `ca`.
 */
const { after, before } = require('node:test');
const assert = require('node:assert/strict');
const { spawn, execFileSync } = require('node:child_process');
const fs = require('node:fs');
const https = require('node:https');
const os = require('node:os');
const path = require('node:path');
const readline = require('node:readline');
const WebSocket = require('ws');
const h = require('./harness');
const { metrics } = require('./faultkit');

after(h.teardown);

let dir, certFile, keyFile, ca;

before(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lq-tls-'));
  h.onTeardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  certFile = path.join(dir, 'cert.pem');
  keyFile = path.join(dir, 'key.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'pipe' });
  ca = fs.readFileSync(certFile, 'utf8');
});

/* GET over https with our CA: {status, body}. */
function httpsGet(url, opts = {}) {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, ...opts }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.setTimeout(5000, () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

/* The Parse JS SDK in a child process: subscribes to BookStockLog
 * quantityOnHand > 5 and prints one JSON line per happening. */
const SDK_CHILD = `
const Parse = require('parse/node');
Parse.initialize('bookstore');
Parse.liveQueryServerURL = process.env.LQ_URL;
const out = (o) => process.stdout.write(JSON.stringify({ t: Date.now(), ...o }) + '\\n');
Parse.LiveQuery.on('error', (e) => out({ ev: 'error', error: String((e && (e.message || (e.error && (e.error.code || e.error.message)))) || e) }));
Parse.LiveQuery.on('open', () => out({ ev: 'socket-open' }));
const q = new Parse.Query('BookStockLog');
q.greaterThan('quantityOnHand', 5);
const t0 = Date.now();
q.subscribe().then((sub) => {
  sub.on('open', () => out({ ev: 'open', ms: Date.now() - t0 }));
  for (const e of ['create', 'enter', 'update', 'leave', 'delete']) {
    sub.on(e, (o, orig) => out({ ev: e, id: o.id, q: o.get('quantityOnHand'), origQ: orig && orig.get ? orig.get('quantityOnHand') : undefined }));
  }
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
`;

function sdkChild(url, env) {
  const child = spawn(process.execPath, ['-e', SDK_CHILD], {
    cwd: path.join(h.REPO, 'tests'), // parse/node from tests/node_modules
    env: { ...process.env, LQ_URL: url, ...env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const inbox = new h.Inbox('sdk-child');
  let stderr = '';
  child.stderr.on('data', (d) => { stderr += d; });
  readline.createInterface({ input: child.stdout }).on('line', (l) => { try { inbox.push(JSON.parse(l)); } catch { inbox.push(l); } });
  child.once('exit', (code) => inbox.end(`child exited ${code}: ${stderr.slice(-500)}`));
  const stop = async () => { child.stdin.end(); await h.stopProcess(child, 'SIGTERM', 2000); };
  h.onTeardown(stop);
  return { child, inbox, stop, stderr: () => stderr };
}

const tlsArgs = () => ['--tls-cert', certFile, '--tls-key', keyFile];

h.test('wss://: the Parse JS SDK verifies the certificate, subscribes and gets create and update', async () => {
  const redis = await h.startRedis();
  const gw = await h.startGateway({ redis, args: tlsArgs(), tls: { ca } });
  assert.match(gw.url, /^wss:/);
  assert.match(gw.logs(), /msg="listening".* tls=on/);
  const pub = await h.publisher(redis.port);
  await h.waitBusReady(gw, pub, { parse: false });

  const t0 = Date.now();
  const sdk = sdkChild(`${gw.url}/`, { NODE_EXTRA_CA_CERTS: certFile });
  const open = await sdk.inbox.next((x) => x.ev === 'open' || x.ev === 'error', 15000);
  assert.equal(open.ev, 'open', `SDK failed: ${JSON.stringify(open)} ${sdk.stderr()}`);
  const subscribeMs = open.t - t0;

  const o = h.obj({ objectId: 'tls0000001', className: 'BookStockLog', quantityOnHand: 10 });
  const p1 = Date.now();
  await pub.change('BookStockLog', 'create', o, undefined, { ts: p1 });
  const created = await sdk.inbox.next((x) => x.ev === 'create', 5000);
  assert.deepEqual([created.id, created.q], ['tls0000001', 10]);
  const p2 = Date.now();
  await pub.change('BookStockLog', 'update', h.updated(o, { quantityOnHand: 12 }), o, { ts: p2 });
  const upd = await sdk.inbox.next((x) => x.ev === 'update', 5000);
  assert.deepEqual([upd.id, upd.q, upd.origQ], ['tls0000001', 12, 10]);
  const rtt = [created.t - p1, upd.t - p2];
  console.log(`# TLS: SDK process start to subscribed ${subscribeMs} ms (incl. node + parse load, TLS handshake, 200 ms SDK delay); publish -> SDK event ${rtt.join(' / ')} ms`);

  const m = /^livequery_deliveries (\d+)$/m.exec((await httpsGet(`${gw.http}/metrics`)).body);
  assert.ok(m && Number(m[1]) >= 2, 'frames went out over TLS');
  assert.equal(sdk.inbox.all.filter((x) => x.ev === 'error').length, 0);
  await sdk.stop();

  /* the same SDK without the CA: the self-signed certificate is refused */
  const bad = sdkChild(`${gw.url}/`, {});
  const err = await bad.inbox.next((x) => x.ev === 'error' || x.ev === 'open', 10000);
  assert.equal(err.ev, 'error');
  assert.match(err.error, /self[- ]signed|SELF_SIGNED|certificate/i);
  await bad.stop();
});

h.test('the TLS port refuses plain ws:// and http://; https:// /health works with the CA, not without', async () => {
  const redis = await h.startRedis();
  const gw = await h.startGateway({ redis, args: tlsArgs(), tls: { ca } });

  const plain = new h.WsClient(`ws://127.0.0.1:${gw.port}/`);
  h.onTeardown(() => plain.close());
  await assert.rejects(h.withTimeout(plain.opened, 8000, 'plain ws'), 'plain ws:// must not open on the TLS port');
  await assert.rejects(fetch(`http://127.0.0.1:${gw.port}/health`), 'plain http:// must fail on the TLS port');

  const r = await httpsGet(`${gw.http}/health`);
  assert.equal(r.status, 200);
  const health = JSON.parse(r.body);
  assert.equal(health.status, 'ok');
  assert.equal(typeof health.ready, 'boolean');
  assert.equal((await httpsGet(`${gw.http}/metrics`)).status, 200);
  await assert.rejects(httpsGet(`${gw.http}/health`, { ca: undefined }), /self[- ]signed|certificate/i);

  /* a raw wss client with the CA: the whole protocol works */
  const c = await h.wsClient(gw.url, { ws: { ca } });
  await c.connect();
  await c.subscribe(1, 'BookStockLog', {});
  const wssNoCa = new h.WsClient(gw.url);
  h.onTeardown(() => wssNoCa.close());
  await assert.rejects(h.withTimeout(wssNoCa.opened, 5000, 'wss without CA'), /self[- ]signed|certificate/i);
});

/* Opens a WebSocket with the given Origin (or none): {open: true} or
 * {status} of the refused upgrade. */
function tryOrigin(url, origin, wsOpts = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: 5000, ...(origin ? { origin } : {}), ...wsOpts });
    ws.once('open', () => { ws.close(); resolve({ open: true }); });
    ws.once('unexpected-response', (req, res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => { resolve({ status: res.statusCode, body }); ws.terminate(); });
    });
    ws.once('error', (e) => reject(e));
  });
}

h.test('--allowed-origins: another Origin is refused at upgrade (403, metric, log); listed ones (any case), none, and * pass', async () => {
  const redis = await h.startRedis();
  const gw = await h.startGateway({ redis, args: ['--allowed-origins', 'https://crm.example.com, http://localhost:8080'] });
  const before = await metrics(gw);
  const off = gw.logOffset();

  const evil = await tryOrigin(gw.url, 'https://evil.example');
  assert.equal(evil.status, 403, `evil origin: ${JSON.stringify(evil)}`);
  const wrongPort = await tryOrigin(gw.url, 'https://crm.example.com:8443');
  assert.equal(wrongPort.status, 403);
  const nul = await tryOrigin(gw.url, 'null');
  assert.equal(nul.status, 403);

  assert.deepEqual(await tryOrigin(gw.url, 'https://crm.example.com'), { open: true });
  assert.deepEqual(await tryOrigin(gw.url, 'HTTPS://CRM.Example.COM'), { open: true }, 'compared case-insensitively');
  assert.deepEqual(await tryOrigin(gw.url, 'http://localhost:8080'), { open: true }, 'entries are trimmed');
  assert.deepEqual(await tryOrigin(gw.url), { open: true }, 'no Origin (not a browser) passes');

  /* an allowed browser client gets the whole protocol */
  const c = await h.wsClient(gw.url, { ws: { origin: 'https://crm.example.com' } });
  await c.connect();
  await c.subscribe(1, 'BookStockLog', {});

  const m = await metrics(gw);
  assert.equal(m.origins_rejected - before.origins_rejected, 3);
  const text = await (await fetch(`http://127.0.0.1:${gw.port}/metrics`)).text();
  assert.match(text, /^livequery_drops_total\{reason="origin"\} 3$/m);
  await h.waitFor(() => (gw.logsSince(off).match(/connection refused: origin not allowed/g) || []).length === 3,
    { what: 'three refusal log lines' });
  assert.match(gw.logsSince(off), /origin not allowed" origin="https:\/\/evil.example" peer=127\.0\.0\.1/);

  /* "*" (also the default) allows every Origin */
  const all = await h.startGateway({ redis, args: ['--allowed-origins', '*'] });
  assert.deepEqual(await tryOrigin(all.url, 'https://evil.example'), { open: true });
  assert.equal((await metrics(all)).origins_rejected, 0);

  /* over TLS too */
  const tgw = await h.startGateway({ redis, args: [...tlsArgs(), '--allowed-origins', 'https://crm.example.com'], tls: { ca } });
  assert.equal((await tryOrigin(tgw.url, 'https://evil.example', { ca })).status, 403);
  assert.deepEqual(await tryOrigin(tgw.url, 'https://crm.example.com', { ca }), { open: true });
});

h.test('--allowed-origins is read at each upgrade: a SIGHUP with a new list applies to the next connection', async () => {
  const redis = await h.startRedis();
  const conf = path.join(dir, 'origins.conf');
  fs.writeFileSync(conf, 'allowed-origins = https://a.example\n');
  const gw = await h.startGateway({ redis, args: ['--config', conf] });
  assert.deepEqual(await tryOrigin(gw.url, 'https://a.example'), { open: true });
  assert.equal((await tryOrigin(gw.url, 'https://b.example')).status, 403);
  const kept = await h.wsClient(gw.url, { ws: { origin: 'https://a.example' } });
  await kept.connect();

  fs.writeFileSync(conf, 'allowed-origins = https://b.example\n');
  const off = gw.logOffset();
  gw.proc.kill('SIGHUP');
  await h.waitFor(() => /configuration reloaded/.test(gw.logsSince(off)), { what: 'SIGHUP reload logged' });
  assert.equal((await tryOrigin(gw.url, 'https://a.example')).status, 403, 'no longer listed');
  assert.deepEqual(await tryOrigin(gw.url, 'https://b.example'), { open: true }, 'newly listed');
  assert.ok(kept.isOpen, 'connections already open are not affected');
});
