'use strict';
/*
 * The MongoDB side of the tailer tests: starts tests/mongo/mockmongo.py (our
 * wire-protocol test server, Debian's python3-mockupdb) and drives it through
 * its HTTP control API; and starts livequeryd processes that run the tailer.
 */
const { spawn } = require('node:child_process');
const path = require('node:path');
const readline = require('node:readline');
const h = require('./harness');

const MOCK = path.join(h.REPO, 'tests', 'mongo', 'mockmongo.py');
const PYTHON = '/usr/bin/python3'; // Debian's, with python3-mockupdb and python3-pymongo

/* Starts the test server. opts: {preimages: true|false, args: []}.
 * Returns {port, uri, ctl(path, body), stats(), insert/update/replace/remove/fault/..., stop()}. */
async function startMongo(opts = {}) {
  const args = [MOCK, '--port', '0', '--control-port', '0', '--preimages', opts.preimages === false ? 'off' : 'on',
    ...(opts.args || [])];
  const proc = spawn(PYTHON, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let log = '';
  proc.stderr.on('data', (d) => { log += d; });
  const ready = await h.withTimeout(new Promise((resolve, reject) => {
    const rl = readline.createInterface({ input: proc.stdout });
    rl.once('line', (line) => { try { resolve(JSON.parse(line)); } catch (e) { reject(e); } });
    proc.once('exit', (code) => reject(new Error(`mockmongo exited (${code}): ${log.slice(-2000)}`)));
  }), 15000, 'mockmongo ready');
  const base = `http://127.0.0.1:${ready.control_port}`;
  async function ctl(p, body) {
    const res = await fetch(base + p, body === undefined ? {} : {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    const j = await res.json();
    if (!res.ok || j.ok === false) throw new Error(`mockmongo ${p}: ${res.status} ${JSON.stringify(j)}`);
    return j;
  }
  const m = {
    port: ready.mongo_port,
    uri: `mongodb://127.0.0.1:${ready.mongo_port}/parse?replicaSet=${ready.rs || 'rs0'}`,
    proc,
    logs: () => log,
    ctl,
    stats: () => ctl('/stats'),
    insert: (coll, doc) => ctl('/insert', { coll, doc }),
    update: (coll, id, set = {}, unset = []) => ctl('/update', { coll, id, set, unset }),
    replace: (coll, doc) => ctl('/replace', { coll, doc }),
    remove: (coll, id) => ctl('/delete', { coll, id }),
    drop: (coll) => ctl('/drop', { coll }),
    bulk: (coll, n, template) => ctl('/bulk', { coll, n, template }),
    images: (coll, pre, post) => ctl('/images', { coll, pre, post }),
    fault: (kind, more = {}) => ctl('/fault', { kind, ...more }),
    truncateHistory: () => ctl('/truncate_history', {}),
    async stop() {
      if (proc.exitCode !== null || proc.signalCode) return;
      proc.stdin.end();
      await h.stopProcess(proc, 'SIGTERM', 3000);
    },
  };
  h.onTeardown(() => m.stop());
  return m;
}

/* Extended JSON helpers for documents sent to the control API. */
const X = {
  date: (iso) => ({ $date: iso }),
  bin: (base64) => ({ $binary: { base64, subType: '00' } }),
  long: (n) => ({ $numberLong: String(n) }),
};

/* A livequeryd that runs the tailer (and, unless role says otherwise, a gateway).
 * opts: {redis, mongo, classes, leaseTtl, role, args, id}. */
async function startTailer(opts = {}) {
  const args = ['--mongodb-uri', opts.mongo.uri, '--lease-ttl', String(opts.leaseTtl || 1000),
    '--classes', opts.classes || 'SigningSchedule,BookStockLog', ...(opts.args || [])];
  if (opts.id) args.push('--tailer-id', opts.id);
  if (opts.role) args.push('--role', opts.role);
  return h.startGateway({ redis: opts.redis, masterKey: h.MASTER_KEY, args, env: opts.env });
}

/* Reads the history stream of a class: [{seq, msg}] in order. */
async function history(pub, className, appId = h.APP_ID) {
  const entries = await pub.client.xRange(`livequery:${appId}:stream:${className}`, '-', '+');
  return entries.map((e) => { const msg = JSON.parse(e.message.m); return { id: e.id, seq: msg.seq, msg }; });
}

async function tailerState(pub, className, appId = h.APP_ID) {
  return pub.client.hGetAll(`livequery:${appId}:tailer:${className}`);
}

/* Every metric include/livequery/metrics.h declares. */
const DECLARED_METRICS = [...require('node:fs')
  .readFileSync(require('node:path').join(__dirname, '..', '..', 'include', 'livequery', 'metrics.h'), 'utf8')
  .matchAll(/^\s*X\((\w+),/gm)].map((m) => m[1]);

/* Reads a gateway's /metrics into {name: value}; every declared metric must be
 * there (a render buffer too small would cut the last ones off). */
async function metrics(gw) {
  const res = await fetch(`http://127.0.0.1:${gw.port}/metrics`);
  const text = await res.text();
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^livequery_(\w+) (-?[\d.]+)$/.exec(line);
    if (m) out[m[1]] = Number(m[2]);
  }
  const missing = DECLARED_METRICS.filter((n) => !(n in out));
  if (missing.length) throw new Error(`/metrics lacks ${missing.join(', ')}`);
  return out;
}

module.exports = { startMongo, startTailer, history, tailerState, metrics, X };
