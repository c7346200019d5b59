'use strict';
/*
 * Operating it: the config file and SIGHUP reload, SIGTERM drain, exit
 * codes, structured logs, and no secret ever in a log line.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const h = require('./harness');
const M = require('./mongo');
const A = require('./authfix');

after(h.teardown);

const CLS = 'SigningSchedule';

function tmpFile(name, text) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'lq-life-'));
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
}

/* The subscribe reply for requestId: 'subscribed' or 'error:<code>'. */
async function trySub(c, requestId) {
  c.send({ op: 'subscribe', requestId, query: { className: CLS, where: {} } });
  const f = await c.next((x) => x && x.requestId === requestId && (x.op === 'subscribed' || x.op === 'error'));
  return f.op === 'error' ? `error:${f.code}` : f.op;
}

h.test('config file: read at start, SIGHUP reloads what it can, refuses a bad file and changes nothing', async () => {
  const redis = await h.startRedis();
  const conf = tmpFile('livequeryd.conf', '# test\nmax-subscriptions = 2\nlog-format = logfmt\n');
  const gw = await h.startGateway({ redis, args: ['--config', conf] });
  const c = await h.wsClient(gw.url);
  await c.connect();
  assert.deepEqual([await trySub(c, 1), await trySub(c, 2), await trySub(c, 3)],
    ['subscribed', 'subscribed', 'error:155'], 'the file\'s limit of 2 applies');

  /* a larger limit, JSON logs, and a setting that needs a restart */
  fs.writeFileSync(conf, 'max-subscriptions = 4\nlog-format = json\nchannel-prefix = other:\n');
  let off = gw.logOffset();
  gw.proc.kill('SIGHUP');
  await h.waitFor(() => /"msg":"SIGHUP: configuration reloaded"/.test(gw.logsSince(off)),
    { timeout: 5000, what: 'a JSON log line saying the configuration was reloaded' });
  const lines = gw.logsSince(off).split('\n').filter(Boolean);
  for (const l of lines) assert.doesNotThrow(() => JSON.parse(l), `every line after the reload is JSON: ${l}`);
  assert.ok(lines.some((l) => /--channel-prefix changed: takes effect only after a restart/.test(l)),
    `the unreloadable setting is named:\n${lines.join('\n')}`);
  assert.deepEqual([await trySub(c, 3), await trySub(c, 4), await trySub(c, 5)],
    ['subscribed', 'subscribed', 'error:155'], 'the new limit of 4 applies to the same connection');

  /* a bad value: the old configuration stays whole */
  fs.writeFileSync(conf, 'max-subscriptions = 10\nmax-connections = lots\n');
  off = gw.logOffset();
  gw.proc.kill('SIGHUP');
  await h.waitFor(() => /new configuration refused, nothing changed/.test(gw.logsSince(off)),
    { timeout: 5000, what: 'the refusal in the log' });
  assert.match(gw.logsSince(off), /max-connections: 'lots' is not a whole number/);
  assert.equal(await trySub(c, 6), 'error:155', 'the limit is still 4');
  assert.ok(gw.alive(), 'still running');
  const health = await (await fetch(`${gw.http}/health`)).json();
  assert.equal(health.status, 'ok');
});

h.test('exit codes: 2 for a bad configuration (flag, environment or file line), 1 when it cannot listen', async () => {
  const bad = tmpFile('bad.conf', 'app-id = bookstore\n\nmax-queue-bytes = 1\n');
  let r = h.runGatewaySync(['--config', bad]);
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stderr, `livequeryd: ${bad}:3: max-queue-bytes: '1' is not a whole number from 4096 to 4294967296\n`);
  r = h.runGatewaySync(['--app-id', 'x'], { env: { LIVEQUERY_LOG_FORMAT: 'xml' } });
  assert.equal(r.status, 2);
  assert.match(r.stderr, /^livequeryd: LIVEQUERY_LOG_FORMAT: 'xml' is not one of logfmt, json\n$/);
  r = h.runGatewaySync(['--app-id', 'x', '--tls-cert', bad]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--tls-cert and --tls-key go together/);
  /* a port someone else holds */
  const srv = net.createServer().listen(0, '127.0.0.1');
  await new Promise((res) => srv.once('listening', res));
  r = h.runGatewaySync(['--app-id', 'x', '--port', String(srv.address().port), '--redis-url', 'redis://127.0.0.1:1'],
    { env: { LSAN_OPTIONS: `suppressions=${path.join(h.REPO, 'tests', 'lsan-failed-start.supp')}:print_suppressions=0` } });
  srv.close();
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /cannot listen/);
});

/* A raw upgraded socket that never reads again: its close handshake cannot
 * finish, so the drain has to wait for it until --drain-timeout. */
async function stuckClient(port) {
  const s = net.connect(port, '127.0.0.1');
  await new Promise((res, rej) => { s.once('connect', res); s.once('error', rej); });
  const key = crypto.randomBytes(16).toString('base64');
  s.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
    + `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  await new Promise((res) => s.once('data', res));
  s.pause();
  h.onTeardown(() => s.destroy());
  return s;
}

h.test('SIGTERM drains: queued events then 1001 to every client, no new upgrades, /ready 503, exit 0 within --drain-timeout', async () => {
  const { gw, pub } = await h.startStack({ args: ['--drain-timeout', '3'] });
  const c = await h.wsClient(gw.url);
  await c.connect();
  await c.subscribe(1, CLS);
  const stuck = await stuckClient(gw.port);
  for (let i = 0; i < 20; i++) await pub.change(CLS, 'create', h.obj({ objectId: `d${i}`, className: CLS, n: i }));
  /* taken from the bus (queued or written): what the drain must still deliver */
  await h.waitFor(async () => (await M.metrics(gw)).events_in >= 20, { what: 'the 20 events dispatched' });
  const t0 = Date.now();
  const stopped = gw.stop(); // SIGTERM; fails the file unless the exit status is 0
  const close = await c.closed;
  assert.equal(close.code, 1001, 'told to go elsewhere');
  const got = c.all.filter((f) => f && f.op === 'create').map((f) => f.object.n);
  assert.deepEqual(got, [...Array(20).keys()], 'every queued event arrived before the close');

  /* the stuck client keeps the drain open: meanwhile, nothing new gets in */
  const late = h.wsClientNoWait(gw.url);
  await assert.rejects(late.opened, 'a new WebSocket upgrade during the drain is refused');
  const ready = await fetch(`${gw.http}/ready`);
  assert.equal(ready.status, 503, '/ready says not ready while draining');
  assert.equal((await ready.json()).draining, true);

  await stopped;
  const took = Date.now() - t0;
  assert.equal(gw.proc.exitCode, 0, 'a drain ends in exit status 0');
  assert.ok(took >= 2500 && took < 6000, `waited for the stuck client until --drain-timeout 3 s (took ${took} ms)`);
  assert.match(gw.logs(), /msg="draining" connections=2/);
  stuck.destroy();
});

h.test('no session token, key or password ever appears in the logs (debug level, JSON and logfmt)', async () => {
  const MK = `mk-${crypto.randomBytes(12).toString('hex')}`;
  const WRONG_MK = `wrong-${crypto.randomBytes(12).toString('hex')}`;
  const REDIS_PW = `pw-${crypto.randomBytes(12).toString('hex')}`;
  const MONGO_PW = `mpw-${crypto.randomBytes(12).toString('hex')}`;
  const BOGUS = A.sessionToken();

  const st = await A.startAuthStack({ classes: [CLS], args: ['--log-level', 'debug', '--log-format', 'json', '--master-key', MK] });
  await A.seedAuth(st.mongo, { users: [{ id: 'uLog000001', username: 'logger' }] });
  const s = await A.createSession(st.mongo, 'uLog000001');
  const secrets = [MK, WRONG_MK, REDIS_PW, MONGO_PW, s.token, BOGUS, s.token.slice(2), BOGUS.slice(2)];

  const c = await h.wsClient(st.url);
  await c.connect({ sessionToken: s.token });
  await c.subscribe(1, CLS, {}, { sessionToken: s.token });
  c.send({ op: 'subscribe', requestId: 2, query: { className: CLS, where: {} }, sessionToken: BOGUS });
  await c.next((x) => x && x.requestId === 2 && x.op === 'error');
  c.send({ op: 'bogus', sessionToken: s.token, masterKey: MK });
  c.send(`{"op":"subscribe","sessionToken":"${s.token}", broken`);
  c.send({ op: 'subscribe', requestId: 3, query: { className: CLS, where: { $where: s.token } }, sessionToken: s.token });
  const m = await h.wsClient(st.url);
  await m.connect({ masterKey: MK });
  const w = await h.wsClient(st.url);
  w.send({ op: 'connect', applicationId: h.APP_ID, masterKey: WRONG_MK, sessionToken: BOGUS });
  await w.next((x) => x && (x.op === 'connected' || x.op === 'error'));
  await A.revokeSession(st.mongo, s.id); // the logout reaches the live subscription
  await c.next((x) => x && x.op === 'error' && x.code === 209, 10000);
  await st.gw.stop();

  /* Redis with a password, MongoDB with credentials in the URI */
  const r2 = await h.startRedis();
  const admin = await h.publisher(r2.port);
  await admin.client.configSet('requirepass', REDIS_PW);
  await admin.quit(); // it would keep reconnecting (without the password) after r2 stops
  const deadMongo = await h.freePort();
  const g2 = await h.startGateway({
    args: ['--redis-url', `redis://:${REDIS_PW}@127.0.0.1:${r2.port}`, '--log-level', 'debug',
      '--mongodb-uri', `mongodb://lq:${MONGO_PW}@127.0.0.1:${deadMongo}/parse?replicaSet=rs0&serverSelectionTimeoutMS=300`,
      '--role', 'gateway', '--master-key', MK],
  });
  const c2 = await h.wsClient(g2.url);
  await c2.connect();
  c2.send({ op: 'subscribe', requestId: 1, query: { className: CLS, where: {} }, sessionToken: BOGUS });
  await c2.next((x) => x && x.requestId === 1 && x.op === 'error', 10000);
  await r2.stop(); // reconnect attempts are logged
  await h.sleep(500);
  await g2.stop();

  const logs = st.gw.logs() + g2.logs();
  const jsonLines = st.gw.logs().split('\n').filter(Boolean);
  assert.ok(jsonLines.length > 10, 'the debug run logged');
  for (const l of jsonLines) {
    let o = null;
    try { o = JSON.parse(l); } catch { /* reported below */ }
    assert.ok(o && o.ts && o.level && o.msg, `structured: ${l}\n${st.gw.logs()}`);
  }
  assert.ok(/invalid|revoked/i.test(logs), 'the bad token and the logout were logged (without the token)');
  for (const secret of secrets) {
    assert.ok(!logs.includes(secret), `a secret (${secret.slice(0, 4)}…) appears in the logs:\n`
      + logs.split('\n').filter((l) => l.includes(secret)).join('\n'));
  }
});
