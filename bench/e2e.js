#!/usr/bin/env node
'use strict';
/*
 * bench/e2e.js - write-to-screen latency through the whole pipeline:
 * a write in the MongoDB test server -> livequeryd tailer (change stream) ->
 * Redis -> livequeryd gateway -> WebSocket subscribers.
 *
 * Starts a private redis-server, tests/mongo/mockmongo.py and one livequeryd
 * (both roles; build-bench/livequeryd, built by bench/tailer.py or run.sh),
 * connects C raw WebSocket clients subscribed to BookStockLog, then inserts
 * at R documents/s for S seconds, each carrying its send time; every
 * delivery's latency is receive time - send time (one clock: same machine).
 * The insert itself (an HTTP call into the Python test server, at most 4 in
 * flight) is inside the measured time, as a client's write would be.
 *
 *   node bench/e2e.js        # env: LQ_E2E_CLIENTS (100), LQ_E2E_RATE (500), LQ_E2E_SECONDS (10)
 * Prints a Markdown table; exit 1 if any delivery is missing or repeated.
 */
const { spawn, spawnSync } = require('node:child_process');
const net = require('node:net');
const path = require('node:path');
const readline = require('node:readline');

const ROOT = path.resolve(__dirname, '..');
const WebSocket = require(path.join(ROOT, 'tests', 'node_modules', 'ws'));
const CLIENTS = Number(process.env.LQ_E2E_CLIENTS || 100);
const RATE = Number(process.env.LQ_E2E_RATE || 500);
const SECONDS = Number(process.env.LQ_E2E_SECONDS || 10);
const BIN = process.env.LIVEQUERYD_BIN || path.join(ROOT, 'build-bench', 'livequeryd');
const procs = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}
function start(cmd, args, opts = {}) {
  const p = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'], ...opts });
  procs.push(p);
  return p;
}
async function waitFor(fn, ms, what) {
  const end = Date.now() + ms;
  while (Date.now() < end) { if (await fn().catch(() => false)) return; await sleep(50); }
  throw new Error(`timed out: ${what}`);
}

async function main() {
  if (spawnSync(BIN, ['--version']).status !== 0) throw new Error(`${BIN} missing: run bench/tailer.py or bench/run.sh first (they build it)`);
  const rport = await freePort();
  start('redis-server', ['--port', String(rport), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
  const mock = start('/usr/bin/python3', [path.join(ROOT, 'tests', 'mongo', 'mockmongo.py'), '--port', '0', '--control-port', '0']);
  const ready = JSON.parse(await new Promise((r) => readline.createInterface({ input: mock.stdout }).once('line', r)));
  const ctl = `http://127.0.0.1:${ready.control_port}`;
  const port = await freePort();
  start(BIN, ['--app-id', 'bookstore', '--port', String(port), '--redis-url', `redis://127.0.0.1:${rport}`,
    '--mongodb-uri', `mongodb://127.0.0.1:${ready.mongo_port}/parse?replicaSet=rs0`, '--log-level', 'warn']);
  await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/health`)).ok, 10000, 'livequeryd');
  await waitFor(async () => (await (await fetch(`http://127.0.0.1:${port}/health`)).json()).tailer === 'active', 10000, 'tailer active');
  await sleep(1500); // streams open

  const lat = [];
  const seen = new Map();
  const clients = [];
  for (let i = 0; i < CLIENTS; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`, { perMessageDeflate: false });
    await new Promise((r, j) => { ws.once('open', r); ws.once('error', j); });
    ws.on('message', (d) => {
      const now = Date.now();
      const f = JSON.parse(d);
      if (f.op === 'create') {
        lat.push(now - f.object.t0);
        seen.set(f.object.objectId, (seen.get(f.object.objectId) || 0) + 1);
      } else if (f.op === 'connected') ws.send(JSON.stringify({ op: 'subscribe', requestId: 1, query: { className: 'BookStockLog', where: {} } }));
      else if (f.op === 'subscribed') ws.subscribed = true;
    });
    ws.send(JSON.stringify({ op: 'connect', applicationId: 'bookstore' }));
    clients.push(ws);
  }
  await waitFor(async () => clients.every((c) => c.subscribed), 10000, 'subscribed');

  const total = RATE * SECONDS;
  const t0 = Date.now();
  let sent = 0;
  const inflight = new Set();
  while (sent < total) {
    const due = Math.floor(((Date.now() - t0) / 1000) * RATE);
    // at most 4 writes in flight: the test server's HTTP side (HTTP/1.0, listen backlog 5)
    // drops connection attempts beyond that, and a retried SYN costs a second
    while (sent < Math.min(due, total) && inflight.size < 4) {
      const id = `e2e${String(sent).padStart(7, '0')}`;
      const p = fetch(`${ctl}/insert`, { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ coll: 'BookStockLog', doc: { _id: id, n: sent, t0: Date.now(), isbn: '978', quantityOnHand: 5 } }) });
      inflight.add(p);
      p.finally(() => inflight.delete(p));
      sent++;
    }
    await sleep(1);
  }
  await Promise.all(inflight);
  await waitFor(async () => lat.length >= total * CLIENTS, 20000, 'all deliveries').catch(() => {});
  const elapsed = (Date.now() - t0) / 1000;
  lat.sort((a, b) => a - b);
  const q = (x) => lat[Math.min(lat.length - 1, Math.floor(x * lat.length))];
  const missing = [...Array(total).keys()].filter((i) => seen.get(`e2e${String(i).padStart(7, '0')}`) !== CLIENTS).length;
  console.log(`| writes | subscribers | deliveries received / expected | write→screen p50 | p95 | p99 | max |`);
  console.log(`|---:|---:|---:|---:|---:|---:|---:|`);
  console.log(`| ${total} at ${RATE}/s | ${CLIENTS} | ${lat.length} / ${total * CLIENTS} | ${q(0.5)} ms | ${q(0.95)} ms | ${q(0.99)} ms | ${lat[lat.length - 1]} ms |`);
  const slow = lat.filter((x) => x >= 500).length;
  console.log(`\n(${elapsed.toFixed(1)} s; ${slow} deliveries took 500 ms or more; objects delivered to every subscriber exactly once: ${total - missing} of ${total})`);
  for (const c of clients) c.terminate();
  return missing === 0 && lat.length === total * CLIENTS ? 0 : 1;
}

main().then((rc) => { for (const p of procs) p.kill('SIGTERM'); process.exit(rc); },
  (e) => { console.error(e); for (const p of procs) p.kill('SIGKILL'); process.exit(2); });
