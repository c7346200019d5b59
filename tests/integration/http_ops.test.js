'use strict';
/*
 * The operations endpoints: GET /health (liveness: 200 while the process
 * serves), GET /ready (200 when ready, 503 when not: Redis, and MongoDB when
 * --mongodb-uri is given; for a tailer-only process its lease connection and
 * MongoDB), and GET /metrics as Prometheus text: the delivery latency
 * histogram, bus and tailer lag gauges, the lease holder, drops by reason.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');

after(h.teardown);

async function get(gw, p) {
  const res = await fetch(`http://127.0.0.1:${gw.port}${p}`);
  const text = await res.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: res.status, json, text };
}

/* Waits until GET /ready answers `status`; returns the last answer. */
async function readyIs(gw, status, what, timeout = 10000) {
  let last;
  const t0 = Date.now();
  try {
    await h.waitFor(async () => { last = await get(gw, '/ready'); return last.status === status; },
      { timeout, what: `${what}: /ready ${status}` });
  } catch (e) {
    e.message += ` (last answer: ${last && last.status} ${last && last.text.trim()})`;
    throw e;
  }
  last.ms = Date.now() - t0;
  return last;
}

/* Parses Prometheus text exposition format 0.0.4 strictly enough to catch
 * what a scraper would refuse: every line is a HELP, a TYPE or a sample;
 * HELP and TYPE come once per family, before its samples; sample names
 * belong to a declared family (histograms: _bucket/_sum/_count); label sets
 * are well formed; values are numbers, NaN or +Inf. Returns {families,
 * samples: [{name, labels, value}]}. */
function parseProm(text) {
  assert.ok(text.endsWith('\n'), '/metrics ends with a newline');
  const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
  const families = new Map(); // name -> {type, help}
  const samples = [];
  const lines = text.slice(0, -1).split('\n');
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    let m;
    if ((m = new RegExp(`^# HELP (${NAME}) (.*)$`).exec(line))) {
      const f = families.get(m[1]) || {};
      assert.ok(!f.help, `HELP twice (${where})`);
      assert.ok(!f.samples, `HELP after samples (${where})`);
      assert.ok(!/\\[^\\n]/.test(m[2]), `bad escape in HELP (${where})`);
      f.help = m[2];
      families.set(m[1], f);
    } else if ((m = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line))) {
      const f = families.get(m[1]) || {};
      assert.ok(!f.type, `TYPE twice (${where})`);
      assert.ok(!f.samples, `TYPE after samples (${where})`);
      f.type = m[2];
      families.set(m[1], f);
    } else if ((m = new RegExp(`^(${NAME})(\\{[^}]*\\})? (\\S+)$`).exec(line))) {
      const [, name, labelText, valueText] = m;
      assert.match(valueText, /^(-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|NaN|[+-]Inf)$/, `bad value (${where})`);
      const labels = {};
      if (labelText) {
        const inner = labelText.slice(1, -1);
        const re = new RegExp(`(${NAME})="((?:[^"\\\\\\n]|\\\\[\\\\"n])*)"(,|$)`, 'y');
        let pos = 0;
        while (pos < inner.length) {
          re.lastIndex = pos;
          const lm = re.exec(inner);
          assert.ok(lm, `bad labels (${where})`);
          assert.ok(!(lm[1] in labels), `label twice (${where})`);
          labels[lm[1]] = lm[2];
          pos = re.lastIndex;
        }
      }
      let fam = families.get(name) ? name : null;
      for (const suf of ['_bucket', '_sum', '_count']) {
        if (!fam && name.endsWith(suf) && families.get(name.slice(0, -suf.length))?.type === 'histogram') fam = name.slice(0, -suf.length);
      }
      assert.ok(fam, `sample of an undeclared family (${where})`);
      const f = families.get(fam);
      assert.ok(f.type && f.help, `sample before HELP/TYPE (${where})`);
      f.samples = (f.samples || 0) + 1;
      const value = valueText === 'NaN' ? NaN : valueText === '+Inf' ? Infinity : valueText === '-Inf' ? -Infinity : Number(valueText);
      samples.push({ name, labels, value, family: fam });
    } else {
      assert.fail(`not Prometheus text (${where})`);
    }
  }
  return { families, samples };
}

/* The /health and /ready fields this file is about (others, e.g. draining, are tested elsewhere). */
const pick = (j) => ({ status: j.status, redis: j.redis, connections: j.connections, tailer: j.tailer, ready: j.ready, mongodb: j.mongodb });

const HIST = 'livequery_delivery_latency_seconds';

/* The histogram's buckets [{le, count}] in order, with _sum and _count. */
function histogram(parsed) {
  const buckets = parsed.samples.filter((s) => s.name === `${HIST}_bucket`)
    .map((s) => ({ le: s.labels.le === '+Inf' ? Infinity : Number(s.labels.le), count: s.value }));
  const one = (n) => parsed.samples.find((s) => s.name === n).value;
  return { buckets, sum: one(`${HIST}_sum`), count: one(`${HIST}_count`) };
}

function checkHistogram(hist) {
  assert.equal(hist.buckets.length, 14, 'fixed buckets .001 … 10 and +Inf');
  assert.deepEqual(hist.buckets.map((b) => b.le), [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, Infinity]);
  for (let i = 1; i < hist.buckets.length; i++) {
    assert.ok(hist.buckets[i].count >= hist.buckets[i - 1].count, `buckets are cumulative: ${JSON.stringify(hist.buckets)}`);
  }
  assert.equal(hist.buckets[hist.buckets.length - 1].count, hist.count, '+Inf bucket = _count');
}

const bucketAt = (hist, le) => hist.buckets.find((b) => b.le === le).count;

h.test('/metrics: latency histogram, bus lag, drops by reason; every line is Prometheus text', async () => {
  const { redis, gw, pub } = await h.startStack();
  const c = await h.wsClient(gw.url);
  await c.connect();
  await c.subscribe(1, 'BookStockLog', {});
  const watcher2 = await h.wsClient(gw.url);
  await watcher2.connect();
  await watcher2.subscribe(7, 'BookStockLog', {});

  const first = parseProm((await get(gw, '/metrics')).text);
  const h0 = histogram(first);
  checkHistogram(h0);

  /* five events published 300 ms "ago": each observed once (two
   * subscribers), all in the (0.25, 0.5] bucket */
  for (let i = 0; i < 5; i++) {
    await pub.change('BookStockLog', 'create', h.obj({ objectId: `lat${i}`, className: 'BookStockLog' }), undefined, { ts: Date.now() - 300 });
    await c.event(1, `lat${i}`);
    await watcher2.event(7, `lat${i}`);
  }
  /* an event nobody receives (no subscriber of the class) is not observed */
  await pub.change('Nobody', 'create', h.obj({ objectId: 'n1', className: 'Nobody' }), undefined, { ts: Date.now() - 300 });
  /* and one without ts neither */
  await pub.change('BookStockLog', 'create', h.obj({ objectId: 'nots', className: 'BookStockLog' }));
  await c.event(1, 'nots');

  const p1 = parseProm((await get(gw, '/metrics')).text);
  const h1 = histogram(p1);
  checkHistogram(h1);
  assert.equal(h1.count - h0.count, 5, 'one observation per delivered event with ts, not per subscriber');
  assert.equal(bucketAt(h1, 0.25) - bucketAt(h0, 0.25), 0, 'none at or under 250 ms');
  assert.equal(bucketAt(h1, 0.5) - bucketAt(h0, 0.5), 5, 'all five within 500 ms');
  assert.ok(h1.sum - h0.sum >= 1.5 && h1.sum - h0.sum < 2.5, `_sum grew by ~5 x 0.3 s: ${h1.sum - h0.sum}`);

  /* bus lag: arrival - ts of the last event that carried one */
  await pub.change('BookStockLog', 'create', h.obj({ objectId: 'lag1', className: 'BookStockLog' }), undefined, { ts: Date.now() - 2000 });
  await c.event(1, 'lag1');
  const p2 = parseProm((await get(gw, '/metrics')).text);
  const lag = p2.samples.find((s) => s.name === 'livequery_bus_lag_seconds');
  assert.ok(lag, 'bus lag gauge present');
  assert.ok(lag.value >= 1.95 && lag.value < 3, `bus lag ~2 s: ${lag.value}`);
  assert.equal(p2.families.get('livequery_bus_lag_seconds').type, 'gauge');
  assert.equal(p2.families.get(HIST).type, 'histogram');
  /* a gateway without a tailer: no tailer lag yet, no lease holder sample */
  assert.ok(Number.isNaN(p2.samples.find((s) => s.name === 'livequery_tailer_lag_seconds').value));
  assert.equal(p2.samples.filter((s) => s.name === 'livequery_tailer_lease_holder').length, 0);

  /* drops by reason: one family, each reason equal to its own counter */
  const plain = Object.fromEntries(p2.samples.filter((s) => !Object.keys(s.labels).length).map((s) => [s.name.replace(/^livequery_/, ''), s.value]));
  const drops = Object.fromEntries(p2.samples.filter((s) => s.name === 'livequery_drops_total').map((s) => [s.labels.reason, s.value]));
  const of = { slow_consumer: 'slow_consumers_closed', acl: 'deliveries_withheld_acl', clp: 'deliveries_withheld_clp', rate: 'limit_rate',
    frame_too_large: 'frames_too_large', invalid_json: 'frames_invalid_json', server_full: 'connections_rejected', origin: 'origins_rejected',
    handshake_timeout: 'handshakes_timed_out', bus_invalid: 'bus_messages_invalid', bus_duplicate: 'bus_duplicates_dropped' };
  assert.deepEqual(Object.keys(drops).sort(), Object.keys(of).sort());
  for (const [reason, counter] of Object.entries(of)) assert.equal(drops[reason], plain[counter], `drops_total{reason="${reason}"} = ${counter}`);
  await pub.raw(pub.channel, 'not json');
  c.send('not json either');
  await h.waitFor(async () => {
    const t = (await get(gw, '/metrics')).text;
    return /^livequery_drops_total\{reason="bus_invalid"\} [1-9]/m.test(t) && /^livequery_drops_total\{reason="invalid_json"\} [1-9]/m.test(t);
  }, { what: 'bus_invalid and invalid_json drops counted' });

  /* every declared counter and gauge is still there (nothing cut off) */
  await M.metrics(gw);
  const size = (await get(gw, '/metrics')).text.length;
  assert.ok(size < 32768, `/metrics is ${size} bytes, under its buffer`);
  void redis;
});

h.test('/health stays 200; /ready follows Redis: 503 while it is down, 200 once back', async () => {
  const redis = await h.startRedis();
  const gw = await h.startGateway({ redis });
  const ok = await readyIs(gw, 200, 'redis up');
  assert.deepEqual(pick(ok.json), { status: 'ok', redis: 'connected', connections: 0, tailer: 'off', ready: true, mongodb: 'n/a' });
  const health = await get(gw, '/health');
  assert.equal(health.status, 200);
  assert.deepEqual(health.json, ok.json, '/health has the same JSON');

  await redis.kill();
  const down = await readyIs(gw, 503, 'redis killed');
  assert.equal(down.json.ready, false);
  assert.equal(down.json.redis, 'disconnected');
  const live = await get(gw, '/health');
  assert.equal(live.status, 200, '/health is liveness: still 200');
  assert.equal(live.json.redis, 'disconnected');
  assert.equal(live.json.ready, false);
  assert.equal((await M.metrics(gw)).bus_connected, 0);

  console.log(`# /ready 503 ${down.ms} ms after Redis was killed`);
  await redis.start();
  const back = await readyIs(gw, 200, 'redis restarted', 15000);
  console.log(`# /ready 200 ${back.ms} ms after Redis restarted`);
  assert.equal(back.json.redis, 'connected');
  assert.equal(back.json.ready, true);
});

h.test('--mongodb-uri: /ready 503 with MongoDB unreachable, 200 with the mock MongoDB; tailer-only processes', async () => {
  const redis = await h.startRedis();
  const dead = await h.freePort(); // nothing listens there
  const g1 = await h.startGateway({ redis, args: ['--role', 'gateway', '--mongodb-uri', `mongodb://127.0.0.1:${dead}/parse?replicaSet=rs0`] });
  await h.sleep(1500); // the first ping has been answered by now (refused at once)
  const r1 = await readyIs(g1, 503, 'dead MongoDB');
  assert.equal(r1.json.mongodb, 'disconnected');
  assert.equal(r1.json.redis, 'connected', 'Redis is fine: MongoDB alone makes it unready');
  assert.equal((await get(g1, '/health')).status, 200);
  assert.equal((await M.metrics(g1)).mongodb_connected, 0);

  const mongo = await M.startMongo();
  const g2 = await h.startGateway({ redis, args: ['--role', 'gateway', '--mongodb-uri', mongo.uri] });
  const r2 = await readyIs(g2, 200, 'mock MongoDB (a gateway that made no lookup: the auth ping)');
  assert.deepEqual(pick(r2.json), { status: 'ok', redis: 'connected', connections: 0, tailer: 'off', ready: true, mongodb: 'connected' });
  assert.equal((await M.metrics(g2)).mongodb_connected, 1);

  /* tailer-only: an active one and a standby, both ready; both see the same holder */
  const ta = await M.startTailer({ redis, mongo, role: 'tailer', id: 'tailer-a' });
  const pub = await h.publisher(redis.port);
  await h.waitFor(async () => (await M.tailerState(pub, 'BookStockLog')).token, { timeout: 15000, what: 'tailer-a stream open' });
  const tb = await M.startTailer({ redis, mongo, role: 'tailer', id: 'tailer-b' });
  const ra = await readyIs(ta, 200, 'active tailer');
  assert.deepEqual([ra.json.tailer, ra.json.redis, ra.json.mongodb], ['active', 'connected', 'connected']);
  const rb = await readyIs(tb, 200, 'standby tailer');
  assert.deepEqual([rb.json.tailer, rb.json.redis, rb.json.mongodb], ['standby', 'connected', 'connected']);
  for (const t of [ta, tb]) {
    await h.waitFor(async () => /^livequery_tailer_lease_holder\{holder="tailer-a"\} 1$/m.test((await get(t, '/metrics')).text),
      { what: `:${t.port} sees tailer-a holding the lease` });
  }

  /* tailer lag: read time - the change's wallTime; the mock stamps it at the write */
  await mongo.insert('BookStockLog', { _id: 'lag0000001', n: 1 });
  await h.waitFor(async () => {
    const m = /^livequery_tailer_lag_seconds (\S+)$/m.exec((await get(ta, '/metrics')).text);
    return m && m[1] !== 'NaN' && Number(m[1]) >= 0 && Number(m[1]) < 5;
  }, { what: 'tailer lag measured' });
  parseProm((await get(ta, '/metrics')).text);

  /* MongoDB goes away: the gateway's ping notices (every 5 s). The tailers
   * go first: a change stream blocked on a dead server would slow their exit */
  await ta.stop();
  await tb.stop();
  await mongo.stop();
  const gone = await readyIs(g2, 503, 'mock MongoDB stopped', 12000);
  console.log(`# /ready 503 ${gone.ms} ms after the mock MongoDB stopped (idle gateway: the 5 s ping)`);
  assert.equal(gone.json.mongodb, 'disconnected');
  assert.equal((await get(g2, '/health')).status, 200);
});
