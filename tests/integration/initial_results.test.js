'use strict';
/*
 * The query op (Parse JS SDK 8's subscription.find(); protocol/PROTOCOL.md
 * "query"): {"op":"query","requestId":n} -> {"op":"result",...,"results":[...]}.
 *
 *  (a) without MongoDB: results from the objects the bus carried, filtered for
 *      the subscriber exactly like its events (where, ACL, CLP protectedFields,
 *      keys, no _ fields), with the real SDK; the bounds and "truncated"; the
 *      errors; metrics.
 *  (b) with MongoDB (the mock, the tailer running): results read from the
 *      collection with a snapshot find and converted like the tailer's events;
 *      a query sent right behind a subscribe that waits for its session lookup
 *      is answered after it.
 *  (c) no gap, no duplicate between the snapshot and the live events, while
 *      writes stream in: every write after the snapshot arrives exactly once
 *      (each object's counter goes on from the result's value one by one) and
 *      the final state is the database's; once with the find slowed down
 *      around its snapshot (events arrive while it is read: held, those in
 *      the snapshot dropped), once with the tailer lagging (events already in
 *      the snapshot arrive after the result: skipped).
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');
const A = require('./authfix');

after(h.teardown);

const QUERY_STATUS = 'open';

/* The raw client's next result (or error) for requestId. */
function resultFrame(c, requestId, timeoutMs) {
  const pred = (x) => x && (x.op === 'result' || x.op === 'error') && x.requestId === requestId;
  pred.description = `result for requestId ${requestId}`;
  return c.next(pred, timeoutMs);
}

/* Waits until everything published before it reached the gateway: a probe
 * client sees an event published after it. */
async function busBarrier(gw, pub, className = 'QBarrier') {
  const c = await h.wsClient(gw.url);
  await c.connect();
  await c.subscribe(1, className, {});
  const id = `b${Date.now()}${Math.random().toString(36).slice(2, 6)}`;
  await pub.change(className, 'create', h.obj({ objectId: id, className }));
  await c.event(1, id, 5000);
  await c.close();
}

h.test('(a) cache mode: the real SDK gets exactly the matching, readable objects, keys applied', async () => {
  const { gw, pub } = await h.startStack({ masterKey: h.MASTER_KEY });
  const CLS = 'QItem';
  // the class's CLP (as a tailer would publish it): 'secretNote' is protected from everyone
  await pub.client.publish(pub.channel, JSON.stringify({
    v: 1, className: CLS, op: 'schema', clp: { find: { '*': true }, get: { '*': true }, protectedFields: { '*': ['secretNote'] } },
  }));
  const o = (id, fields) => h.obj({ objectId: id, className: CLS, ...fields });
  await pub.change(CLS, 'create', o('q1', { status: 'open', qty: 10, title: 'A', secretNote: 's1' }));
  await pub.change(CLS, 'create', o('q2', { status: 'closed', qty: 11, title: 'B' })); // does not match
  await pub.change(CLS, 'create', o('q3', { status: 'open', qty: 12, ACL: { u9: { read: true } } })); // not readable
  await pub.change(CLS, 'create', o('q4', { status: 'open', qty: 3, title: 'D' }));
  await pub.change(CLS, 'update', h.updated(o('q4', { status: 'open', qty: 4, title: 'D', _hidden: 'x' }), {}), o('q4', { status: 'open', qty: 3 }));
  await pub.change(CLS, 'create', o('q5', { status: 'open', qty: 5 }));
  await pub.change(CLS, 'delete', o('q5', { status: 'open', qty: 5 })); // gone
  await pub.change(CLS, 'create', o('q6', { status: 'closed', qty: 6, ACL: { '*': { read: true } } }));
  await pub.change(CLS, 'update', h.updated(o('q6', { status: 'open', qty: 7, ACL: { '*': { read: true } } }), {}),
    o('q6', { status: 'closed', qty: 6, ACL: { '*': { read: true } } })); // now matches
  await pub.parseAfterSave(h.APP_ID, o('q7', { status: 'open', qty: 8 })); // Parse Server's channel feeds it too
  await busBarrier(gw, pub);

  // the real SDK: subscribe with keys (select), then find()
  const P = h.Parse();
  const sdk = h.sdkClient(gw.url, { installationId: 'inst-q' });
  await sdk.ready;
  const q = new P.Query(CLS).equalTo('status', QUERY_STATUS).select('qty', 'secretNote');
  const sub = sdk.client.subscribe(q);
  await h.withTimeout(sub.subscribePromise, 3000, 'sdk subscribed');
  const got = new Promise((resolve) => sub.on('result', resolve));
  sub.find();
  const objects = await h.withTimeout(got, 3000, 'SDK result event');
  const byId = Object.fromEntries(objects.map((x) => [x.id, x]));
  assert.deepEqual(Object.keys(byId).sort(), ['q1', 'q4', 'q6', 'q7']);
  for (const x of objects) {
    assert.ok(x instanceof P.Object);
    assert.equal(x.className, CLS);
    assert.equal(x.has('title'), false, `${x.id}: keys cut title`);
    assert.equal(x.has('secretNote'), false, `${x.id}: protected field delivered`);
    assert.equal(x.has('status'), false, `${x.id}: keys cut status`);
    assert.equal(x.has('_hidden'), false);
  }
  assert.equal(byId.q1.get('qty'), 10);
  assert.equal(byId.q4.get('qty'), 4); // the latest state
  assert.equal(byId.q6.get('qty'), 7);
  assert.equal(byId.q6.getACL().getPublicReadAccess(), true);

  // the frame itself, from a raw client (same rules, most recently changed first)
  const c = await h.wsClient(gw.url);
  await c.connect({ installationId: 'inst-raw' });
  c.installationId = 'inst-raw';
  await c.subscribe(1, CLS, { status: QUERY_STATUS }, { keys: ['qty', 'secretNote'] });
  c.send({ op: 'query', requestId: 1 });
  const f = await resultFrame(c, 1);
  const dates = { createdAt: h.iso(0), updatedAt: h.iso(0) };
  assert.deepEqual(f, {
    op: 'result', clientId: c.clientId, installationId: 'inst-raw', requestId: 1,
    results: [
      { objectId: 'q7', className: CLS, ...dates, qty: 8 },
      { objectId: 'q6', className: CLS, createdAt: h.iso(0), updatedAt: h.iso(1000), qty: 7, ACL: { '*': { read: true } } },
      { objectId: 'q4', className: CLS, createdAt: h.iso(0), updatedAt: h.iso(1000), qty: 4 },
      { objectId: 'q1', className: CLS, ...dates, qty: 10 },
    ],
  });
  // the master key reads every matching object, q3 too, with every field
  const mc = await h.wsClient(gw.url);
  await mc.connect({ masterKey: h.MASTER_KEY });
  await mc.subscribe(1, CLS, { status: QUERY_STATUS });
  mc.send({ op: 'query', requestId: 1 });
  const mf = await resultFrame(mc, 1);
  assert.deepEqual(mf.results.map((x) => x.objectId), ['q7', 'q6', 'q4', 'q3', 'q1']);
  assert.equal(mf.results.find((x) => x.objectId === 'q1').secretNote, 's1');
  assert.equal(mf.results.find((x) => x.objectId === 'q4')._hidden, undefined);

  // a query on a requestId never subscribed: Parse's unknown-subscription error; before connect likewise
  const before = await M.metrics(gw);
  c.send({ op: 'query', requestId: 99 });
  assert.deepEqual(await c.next((x) => x.op === 'error'), {
    op: 'error',
    error: `Cannot find subscription with clientId ${c.clientId} subscriptionId 99. Make sure you subscribe to live query server before querying.`,
    code: 2, reconnect: true, requestId: null,
  });
  const nc = await h.wsClient(gw.url);
  nc.send({ op: 'query', requestId: 1 });
  assert.deepEqual(await nc.next(), {
    op: 'error', error: 'Can not find this client, make sure you connect to server before querying',
    code: 2, reconnect: true, requestId: null,
  });
  const m = await M.metrics(gw);
  assert.equal(m.query_errors - before.query_errors, 2);
  assert.ok(m.queries >= 3 && m.query_results_objects >= 13, JSON.stringify({ q: m.queries, o: m.query_results_objects }));

  // events after the result still arrive as usual
  await pub.change(CLS, 'create', o('q8', { status: 'open', qty: 9 }));
  const ev = await c.event(1, 'q8');
  assert.equal(ev.op, 'create');
});

h.test('(a) cache mode: --max-results and --initial-cache-size bound the result; truncated says so', async () => {
  const redis = await h.startRedis();
  const gw = await h.startGateway({ redis, args: ['--max-results', '2', '--initial-cache-size', '3'] });
  const pub = await h.publisher(redis.port);
  await h.waitBusReady(gw, pub);
  const CLS = 'QBound';
  for (let i = 1; i <= 5; i++) await pub.change(CLS, 'create', h.obj({ objectId: `b${i}`, className: CLS, n: i }));
  await busBarrier(gw, pub);
  const c = await h.wsClient(gw.url);
  await c.connect();
  await c.subscribe(1, CLS, {});
  await c.subscribe(2, CLS, { n: { $lte: 3 } });
  await c.subscribe(3, CLS, { n: 5 });
  c.send({ op: 'query', requestId: 1 });
  const f1 = await resultFrame(c, 1);
  // 3 kept (b5, b4, b3: the most recently changed), 2 sent
  assert.deepEqual(f1.results.map((x) => x.objectId), ['b5', 'b4']);
  assert.equal(f1.truncated, true);
  c.send({ op: 'query', requestId: 2 });
  const f2 = await resultFrame(c, 2);
  assert.deepEqual(f2.results.map((x) => x.objectId), ['b3']); // b1, b2 fell out of the cache
  assert.equal('truncated' in f2, false);
  c.send({ op: 'query', requestId: 3 });
  assert.deepEqual((await resultFrame(c, 3)).results.map((x) => x.objectId), ['b5']);
  // a query right behind a positions subscribe starts once the subscription has its position
  c.send({ op: 'subscribe', requestId: 4, query: { className: CLS, where: {} }, positions: true });
  c.send({ op: 'query', requestId: 4 });
  const first = await c.next((x) => x.requestId === 4);
  assert.equal(first.op, 'subscribed', h.show(first));
  const r4 = await resultFrame(c, 4);
  assert.deepEqual(r4.results.map((x) => x.objectId), ['b5', 'b4']);
  // two queries in a row are both answered
  c.send({ op: 'query', requestId: 3 });
  c.send({ op: 'query', requestId: 3 });
  assert.deepEqual((await resultFrame(c, 3)).results.map((x) => x.objectId), ['b5']);
  assert.deepEqual((await resultFrame(c, 3)).results.map((x) => x.objectId), ['b5']);
});

/* ------------------------------------------------------------------ */
/* MongoDB mode                                                       */
/* ------------------------------------------------------------------ */

const BOOK_SCHEMA = A.schemaDoc('QBook', { title: 'string', qty: 'number', due: 'date', owner: '*_User', cover: 'file' },
  { find: { '*': true }, get: { '*': true }, protectedFields: { '*': ['cost'] } });

function storedBook(id, fields) {
  return {
    _id: id, _created_at: A.xdate('2026-12-01T10:00:00.000Z'), _updated_at: A.xdate('2026-12-01T10:00:01.000Z'),
    ...fields,
  };
}

h.test('(b) MongoDB mode: results read from the collection, converted like events, filtered like events', async () => {
  const stack = await A.startAuthStack({
    classes: ['QBook'],
    seed: async (mongo) => {
      await A.seedSchema(mongo, [BOOK_SCHEMA]);
      await A.seedAuth(mongo, { users: [{ id: 'uQ' }], sessions: [{ name: 'q', userId: 'uQ', token: 'r:qtoken0000000000000000000000000001' }] });
      await mongo.insert('QBook', storedBook('k1', { title: 'One', qty: 1, cost: 9, _p_owner: '_User$uQ', due: A.xdate('2027-01-01T00:00:00.000Z'), cover: 'c1.png', ...A.aclFields({ read: ['*'], write: ['uQ'] }) }));
      await mongo.insert('QBook', storedBook('k2', { title: 'Two', qty: 2, _rperm: ['uOther'], _wperm: [] })); // not readable
      await mongo.insert('QBook', storedBook('k3', { title: 'Three', qty: 30 })); // does not match qty < 10
      await mongo.insert('QBook', storedBook('k4', { title: 'Four', qty: 4, _rperm: ['uQ'], _wperm: ['uQ'], _email_verify_token: 'x' }));
    },
  });
  const { gw, mongo, pub } = stack;
  await A.waitClpKnown(gw, 'QBook', { where: { cost: 1 } }); // the protected field: 119 once the CLP is known

  const P = h.Parse();
  const sdk = h.sdkClient(gw.url, { sessionToken: 'r:qtoken0000000000000000000000000001' });
  await sdk.ready;
  const sub = sdk.client.subscribe(new P.Query('QBook').lessThan('qty', 10).select('title', 'owner', 'due', 'cover', 'cost'));
  await h.withTimeout(sub.subscribePromise, 5000, 'sdk subscribed');
  const got = new Promise((resolve) => sub.on('result', resolve));
  sub.find();
  const objects = await h.withTimeout(got, 5000, 'SDK result');
  assert.deepEqual(objects.map((x) => x.id).sort(), ['k1', 'k4']);
  const k1 = objects.find((x) => x.id === 'k1');
  assert.equal(k1.get('title'), 'One');
  assert.equal(k1.has('qty'), false); // not in keys
  assert.equal(k1.has('cost'), false); // protected
  assert.ok(k1.get('owner') instanceof P.Object && k1.get('owner').id === 'uQ');
  assert.ok(k1.get('due') instanceof Date);
  assert.ok(k1.get('cover') instanceof P.File);
  assert.equal(k1.getACL().getPublicReadAccess(), true);

  // the raw frame: exactly the REST JSON the tailer would publish, cut for this subscriber
  const c = await h.wsClient(gw.url);
  await c.connect({ sessionToken: 'r:qtoken0000000000000000000000000001' });
  await c.subscribe(1, 'QBook', { qty: { $lt: 10 } }, { keys: ['title', 'owner', 'cost'] });
  c.send({ op: 'query', requestId: 1 });
  const f = await resultFrame(c, 1, 5000);
  const stamps = { createdAt: '2026-12-01T10:00:00.000Z', updatedAt: '2026-12-01T10:00:01.000Z' };
  assert.deepEqual(f, {
    op: 'result', clientId: c.clientId, requestId: 1,
    results: [
      { objectId: 'k1', className: 'QBook', ...stamps, title: 'One', owner: { __type: 'Pointer', className: '_User', objectId: 'uQ' }, ACL: { '*': { read: true }, uQ: { write: true } } },
      { objectId: 'k4', className: 'QBook', ...stamps, title: 'Four', ACL: { uQ: { read: true, write: true } } },
    ],
  });
  // an objectId query (read as an _id lookup)
  await c.subscribe(2, 'QBook', { objectId: 'k4' });
  c.send({ op: 'query', requestId: 2 });
  assert.deepEqual((await resultFrame(c, 2, 5000)).results.map((x) => x.objectId), ['k4']);
  await c.subscribe(3, 'QBook', { objectId: 'k2' });
  c.send({ op: 'query', requestId: 3 });
  assert.deepEqual((await resultFrame(c, 3, 5000)).results, []); // exists, not readable

  // a query right behind a subscribe that waits for its session lookup is answered after it
  await mongo.ctl('/delay', { cmd: 'find', coll: '_Session', before_ms: 400 });
  const tok2 = (await A.createSession(mongo, 'uQ')).token;
  const c2 = await h.wsClient(gw.url);
  await c2.connect();
  c2.send({ op: 'subscribe', requestId: 7, query: { className: 'QBook', where: { qty: { $lt: 10 } } }, sessionToken: tok2 });
  c2.send({ op: 'query', requestId: 7 });
  const first = await c2.next(undefined, 5000);
  assert.equal(first.op, 'subscribed', h.show(first));
  const r2 = await resultFrame(c2, 7, 5000);
  assert.equal(r2.op, 'result', h.show(r2));
  assert.deepEqual(r2.results.map((x) => x.objectId), ['k1', 'k4']);
  await mongo.ctl('/delay', { cmd: 'find' });

  // events after the result are delivered as usual
  await mongo.insert('QBook', storedBook('k5', { title: 'Five', qty: 5 }));
  const ev = await c.event(1, 'k5', 5000);
  assert.equal(ev.op, 'create');
  const m = await M.metrics(gw);
  assert.ok(m.queries >= 5, `queries ${m.queries}`);
  assert.equal(m.query_errors, 0);
  await pub.quit();
});

/* ------------------------------------------------------------------ */
/* No gap, no duplicate                                               */
/* ------------------------------------------------------------------ */

const N_OBJ = 6;
const COUNTER = 'QCounter';

/* Writes: updates of random objects, each $inc of its counter `c`, at a
 * steady rate until stop(). Returns {stop, writes}. */
function writer(mongo, intervalMs) {
  let stopped = false;
  let writes = 0;
  const done = (async () => {
    while (!stopped) {
      const id = `c${Math.floor(Math.random() * N_OBJ)}`;
      await mongo.ctl('/update', { coll: COUNTER, id, update: { $inc: { c: 1 } } });
      writes++;
      await h.sleep(intervalMs);
    }
  })();
  return { async stop() { stopped = true; await done; }, get writes() { return writes; } };
}

/* One run: subscribe, let writes stream, query, keep writing, then check that
 * the result plus the later events give every write exactly once. */
async function noGapRun(stack, label, { findDelay, getMoreDelay }) {
  const { gw, mongo } = stack;
  const c = await h.wsClient(gw.url);
  await c.connect();
  await c.subscribe(1, COUNTER, {});
  const w = writer(mongo, 4);
  await h.sleep(300);
  if (findDelay) await mongo.ctl('/delay', { cmd: 'find', coll: COUNTER, ...findDelay });
  if (getMoreDelay) {
    await mongo.ctl('/delay', { cmd: 'getMore', coll: COUNTER, ...getMoreDelay });
    await h.sleep(getMoreDelay.before_ms / 2); // mid-way through a delayed getMore: writes pile up unread
  }
  const m0 = await M.metrics(gw);
  const writesAtQuery = w.writes;
  c.send({ op: 'query', requestId: 1 });
  const res = await resultFrame(c, 1, 10000);
  assert.equal(res.op, 'result', h.show(res));
  await h.sleep(800);
  await w.stop();
  if (getMoreDelay) await mongo.ctl('/delay', { cmd: 'getMore' });
  if (findDelay) await mongo.ctl('/delay', { cmd: 'find' });

  // the database's final counters
  const final = {};
  for (let i = 0; i < N_OBJ; i++) final[`c${i}`] = (await mongo.ctl(`/doc?coll=${COUNTER}&id=c${i}`)).c;
  // the client's view: the result, then every later update, in order
  const idx = c.all.indexOf(res);
  const state = {};
  for (const o of res.results) state[o.objectId] = o.c;
  assert.deepEqual(Object.keys(state).sort(), Object.keys(final).sort(), `${label}: the result has every object`);
  const problems = [];
  let after = 0;
  const check = (frames) => {
    for (const f of frames) {
      if (f.op !== 'update' || f.requestId !== 1) continue;
      after++;
      const id = f.object.objectId;
      if (f.object.c !== state[id] + 1) {
        problems.push(`${id}: after ${state[id]} came ${f.object.c} (${f.object.c <= state[id] ? 'duplicate: already in the snapshot or delivered' : 'gap'})`);
      }
      state[id] = f.object.c;
    }
  };
  // wait until the client has caught up with the database (or time out), then judge
  const deadline = Date.now() + 10000;
  let seen = idx + 1;
  for (;;) {
    check(c.all.slice(seen));
    seen = c.all.length;
    if (Object.keys(final).every((id) => state[id] === final[id]) || Date.now() > deadline) break;
    await h.sleep(100);
  }
  await h.sleep(300); // nothing more may come
  check(c.all.slice(seen));
  const m1 = await M.metrics(gw);
  const held = m1.query_events_held - m0.query_events_held;
  const skipped = m1.query_events_skipped - m0.query_events_skipped;
  console.log(`# ${label}: ${w.writes} writes (${w.writes - writesAtQuery} after the query was sent), `
    + `${res.results.length} objects in the result, ${after} updates after it; held ${held}, skipped ${skipped}`);
  assert.deepEqual(problems, [], `${label}: ${problems.length} out-of-sequence updates`);
  assert.deepEqual(state, final, `${label}: the client's final state is the database's`);
  await c.close();
  return { held, skipped, after };
}

h.test('(c) no gap, no duplicate between the snapshot and the live events', { timeout: 120000 }, async () => {
  const stack = await A.startAuthStack({
    classes: [COUNTER],
    // post-images: each update event carries the exact state it made
    args: ['--full-document', 'required'],
    seed: async (mongo) => {
      for (let i = 0; i < N_OBJ; i++) await mongo.insert(COUNTER, { _id: `c${i}`, c: 0 });
    },
  });
  // the find is slow on both sides of its snapshot: events arrive while it is
  // read, some already in it (dropped), some after it (delivered after the result)
  const a = await noGapRun(stack, 'slow snapshot', { findDelay: { before_ms: 400, after_ms: 400, count: 1 } });
  assert.ok(a.held > 0, 'events were held while the snapshot was read');
  assert.ok(a.skipped > 0, 'events already in the snapshot were dropped');
  // the tailer lags: events already in the snapshot arrive after the result
  const b = await noGapRun(stack, 'lagging tailer', { getMoreDelay: { before_ms: 400 } });
  assert.ok(b.skipped > 0, 'late events already in the snapshot were skipped');

  // more events than a hold may keep while the snapshot is read (a quarter of
  // --max-queue-bytes): the query fails with 155, and no event is lost
  const { mongo } = stack;
  const gw2 = await h.startGateway({
    redis: stack.redis, args: ['--role', 'gateway', '--mongodb-uri', mongo.uri, '--max-queue-bytes', '65536'],
  });
  const c = await h.wsClient(gw2.url);
  await c.connect();
  await c.subscribe(1, COUNTER, {});
  const w = writer(mongo, 4);
  await c.event(1, undefined, 5000); // events flow through this gateway
  await mongo.ctl('/delay', { cmd: 'find', coll: COUNTER, before_ms: 2500, count: 1 });
  c.send({ op: 'query', requestId: 1 });
  const err = await resultFrame(c, 1, 5000);
  assert.deepEqual(err, {
    op: 'error', error: 'too many events for this subscription while its query results were read (limit 10000 events, 16384 bytes); query again',
    code: 155, reconnect: false, requestId: 1,
  });
  await h.sleep(300);
  await w.stop();
  const final = {};
  for (let i = 0; i < N_OBJ; i++) final[`c${i}`] = (await mongo.ctl(`/doc?coll=${COUNTER}&id=c${i}`)).c;
  const state = {};
  const problems = [];
  await h.waitFor(() => {
    for (const f of c.pending.splice(0)) {
      if (f.op === 'result') problems.push('a result after the error');
      if (f.op !== 'update') continue;
      const id = f.object.objectId;
      if (id in state && f.object.c !== state[id] + 1) problems.push(`${id}: after ${state[id]} came ${f.object.c}`);
      state[id] = f.object.c;
    }
    return Object.keys(final).every((id) => state[id] === final[id]);
  }, { timeout: 10000, what: 'the client to catch up with the database' });
  await h.sleep(2500); // the snapshot's late answer is dropped
  for (const f of c.pending) if (f.op === 'result') problems.push('a result after the error');
  assert.deepEqual(problems, []);
  const m = await M.metrics(gw2);
  assert.equal(m.query_errors, 1);
  assert.equal(m.queries, 0);
});
