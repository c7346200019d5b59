'use strict';
/*
 * The tailer end to end: a write in (our MongoDB wire-protocol test server)
 * -> livequeryd's tailer (libmongoc change streams) -> Redis -> gateway ->
 * the Parse JS SDK and raw WebSocket clients. Every Parse field type, exact
 * `original` and deletes with pre-images, the documented degradation without
 * them, one change stream per collection, _SCHEMA reloads, the tailer role.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');

after(h.teardown);

const FILES = 'http://files.test/parse/files/bookstore/';
const D = (s) => `2026-12-01T10:${s}Z`;

const SCHEMA_SIGNING = {
  _id: 'SigningSchedule', objectId: 'string', createdAt: 'date', updatedAt: 'date',
  title: 'string', attendees: 'number', confirmed: 'boolean', startsAt: 'date', details: 'object',
  tags: 'array', venue: 'geopoint', poster: 'file', checksum: 'bytes', area: 'polygon',
  author: '*_User', books: 'relation<BookStockLog>', big: 'number',
  _metadata: { class_permissions: { find: { '*': true }, get: { '*': true } } },
};

/* A SigningSchedule as Parse Server stores it, and the REST JSON it must become. */
function stored(id, attendees, sec) {
  return {
    _id: id,
    _created_at: M.X.date(D('00:00.000')),
    _updated_at: M.X.date(D(sec)),
    title: 'Winter signing', attendees, confirmed: true,
    startsAt: M.X.date('2026-12-24T15:30:00.125Z'),
    details: { room: 'A', when: M.X.date('1969-07-20T20:17:40.000Z'), who: { __type: 'Pointer', className: '_User', objectId: 'u1' } },
    tags: ['poetry', 7, null],
    venue: [13.4, 52.5],
    poster: 'abc_poster 1.png',
    checksum: M.X.bin('AQID'),
    area: { type: 'Polygon', coordinates: [[[13.0, 52.0], [13.1, 52.0], [13.1, 52.1], [13.0, 52.0]]] },
    _p_author: '_User$u1',
    big: M.X.long('9007199254740993'),
    _rperm: ['*', 'u1'], _wperm: ['u1'],
    _acl: { u1: { w: true, r: true }, '*': { r: true } },
    _tombstone: true, _email_verify_token: 'secret',
  };
}
function rest(id, attendees, sec) {
  return {
    objectId: id, className: 'SigningSchedule',
    createdAt: D('00:00.000'), updatedAt: D(sec),
    title: 'Winter signing', attendees, confirmed: true,
    startsAt: { __type: 'Date', iso: '2026-12-24T15:30:00.125Z' },
    details: { room: 'A', when: { __type: 'Date', iso: '1969-07-20T20:17:40.000Z' }, who: { __type: 'Pointer', className: '_User', objectId: 'u1' } },
    tags: ['poetry', 7, null],
    venue: { __type: 'GeoPoint', latitude: 52.5, longitude: 13.4 },
    poster: { __type: 'File', name: 'abc_poster 1.png', url: `${FILES}abc_poster%201.png` },
    checksum: { __type: 'Bytes', base64: 'AQID' },
    area: { __type: 'Polygon', coordinates: [[52.0, 13.0], [52.0, 13.1], [52.1, 13.1], [52.0, 13.0]] },
    author: { __type: 'Pointer', className: '_User', objectId: 'u1' },
    big: 9007199254740993,
    books: { __type: 'Relation', className: 'BookStockLog' },
    ACL: { '*': { read: true }, u1: { read: true, write: true } },
  };
}


let redis; let mongo; let gw; let pub;
before(async () => {
  redis = await h.startRedis();
  mongo = await M.startMongo({ preimages: true });
  await mongo.insert('_SCHEMA', SCHEMA_SIGNING);
  gw = await M.startTailer({ redis, mongo, args: ['--files-url-prefix', FILES] });
  pub = await h.publisher(redis.port);
  // the tailer has opened its streams and stored a position once state exists
  await h.waitFor(async () => (await M.tailerState(pub, 'SigningSchedule')).token, { timeout: 15000, what: 'tailer stream open' });
});

h.test('a write in MongoDB reaches the SDK and raw clients as REST JSON, every Parse type', async () => {
  const raw = await h.wsClient(gw.url);
  await raw.connect({ masterKey: h.MASTER_KEY });
  await raw.subscribe(1, 'SigningSchedule', {});

  const P = h.Parse();
  const sdk = h.sdkClient(gw.url);
  await sdk.ready;
  const sub = sdk.client.subscribe(new P.Query('SigningSchedule').equalTo('title', 'Winter signing'));
  const inbox = h.recordSubscription(sub);
  await h.withTimeout(sub.subscribePromise, 3000, 'sdk subscribed');

  await mongo.insert('SigningSchedule', stored('sig0000001', 42, '00:00.000'));
  const f = await raw.event(1, 'sig0000001', 5000);
  assert.equal(f.op, 'create');
  assert.deepEqual(f.object, rest('sig0000001', 42, '00:00.000'));
  assert.equal(f.original, undefined);

  const e = await inbox.next(undefined, 5000);
  assert.equal(e.op, 'create');
  const o = e.object;
  assert.equal(o.id, 'sig0000001');
  assert.equal(o.get('attendees'), 42);
  assert.ok(o.get('startsAt') instanceof Date);
  assert.equal(o.get('startsAt').toISOString(), '2026-12-24T15:30:00.125Z');
  assert.ok(o.get('venue') instanceof P.GeoPoint);
  assert.equal(o.get('venue').latitude, 52.5);
  assert.ok(o.get('poster') instanceof P.File);
  assert.equal(o.get('poster').name(), 'abc_poster 1.png');
  assert.ok(o.get('area') instanceof P.Polygon);
  assert.ok(o.get('author') instanceof P.Object);
  assert.equal(o.get('author').id, 'u1');
  assert.ok(o.get('books') instanceof P.Relation);
  assert.ok(o.createdAt instanceof Date);
  assert.equal(o.getACL().getPublicReadAccess(), true);
  assert.equal(o.getACL().getWriteAccess('u1'), true);
  assert.equal(o.get('_rperm'), undefined);
  assert.equal(o.get('_tombstone'), undefined);

  // update: original is the exact pre-image
  await mongo.update('SigningSchedule', 'sig0000001', { attendees: 43, _updated_at: M.X.date(D('00:05.000')) });
  const u = await raw.event(1, 'sig0000001', 5000);
  assert.equal(u.op, 'update');
  assert.deepEqual(u.object, rest('sig0000001', 43, '00:05.000'));
  assert.deepEqual(u.original, rest('sig0000001', 42, '00:00.000'));
  const ue = await inbox.next(undefined, 5000);
  assert.equal(ue.op, 'update');
  assert.equal(ue.object.get('attendees'), 43);
  assert.equal(ue.original.get('attendees'), 42);

  // a replace is an update too
  const replaced = stored('sig0000001', 44, '00:06.000');
  await mongo.replace('SigningSchedule', replaced);
  const r = await raw.event(1, 'sig0000001', 5000);
  assert.equal(r.op, 'update');
  assert.equal(r.object.attendees, 44);
  assert.equal(r.original.attendees, 43);
  assert.equal((await inbox.next(undefined, 5000)).object.get('attendees'), 44);

  // delete carries the deleted object (pre-image), ACL included
  await mongo.remove('SigningSchedule', 'sig0000001');
  const d = await raw.event(1, 'sig0000001', 5000);
  assert.equal(d.op, 'delete');
  assert.deepEqual(d.object, rest('sig0000001', 44, '00:06.000'));
  const de = await inbox.next(undefined, 5000);
  assert.equal(de.op, 'delete');
  assert.equal(de.object.id, 'sig0000001');

  // the history stream holds the same messages, seq 1.. without gaps
  const hist = await M.history(pub, 'SigningSchedule');
  assert.deepEqual(hist.map((x) => x.seq), hist.map((_, i) => i + 1));
  assert.deepEqual(hist.map((x) => x.msg.op), ['create', 'update', 'update', 'delete']);
  assert.ok(hist.every((x) => x.id === `${x.seq}-0`), 'stream ids are <seq>-0');
});

h.test('ACL from _rperm/_wperm decides who receives; absent = public, [] = master only', async () => {
  const pubc = await h.wsClient(gw.url);
  await pubc.connect();
  await pubc.subscribe(1, 'BookStockLog', {});
  const master = await h.wsClient(gw.url);
  await master.connect({ masterKey: h.MASTER_KEY });
  await master.subscribe(1, 'BookStockLog', {});

  await mongo.insert('BookStockLog', { _id: 'noacl00001', isbn: '1', quantityOnHand: 1, _created_at: M.X.date(D('01:00.000')), _updated_at: M.X.date(D('01:00.000')) });
  await mongo.insert('BookStockLog', { _id: 'private001', isbn: '2', quantityOnHand: 2, _rperm: [], _wperm: [] });
  await mongo.insert('BookStockLog', { _id: 'user000001', isbn: '3', quantityOnHand: 3, _rperm: ['u9'], _wperm: ['u9'] });
  await mongo.insert('BookStockLog', { _id: 'marker0001', isbn: '4', quantityOnHand: 4 });

  const seen = [];
  for (let i = 0; i < 4; i++) seen.push((await master.event(1, undefined, 5000)).object);
  assert.deepEqual(seen.map((o) => o.objectId), ['noacl00001', 'private001', 'user000001', 'marker0001']);
  assert.equal(seen[0].ACL, undefined, 'no _rperm/_wperm: no ACL key (public)');
  assert.deepEqual(seen[1].ACL, {}, '[] and []: master only');
  assert.deepEqual(seen[2].ACL, { u9: { read: true, write: true } });

  const a = await pubc.event(1, undefined, 5000);
  assert.equal(a.object.objectId, 'noacl00001');
  const b = await pubc.event(1, undefined, 5000);
  assert.equal(b.object.objectId, 'marker0001', 'the public client must not see private001 or user000001');
});

h.test('exactly one change stream per watched collection, however many subscribe', async () => {
  const clients = [];
  for (let i = 0; i < 3; i++) {
    const c = await h.wsClient(gw.url);
    await c.connect();
    await c.subscribe(1, 'SigningSchedule', { attendees: { $gt: i } });
    await c.subscribe(2, 'BookStockLog', { isbn: String(i) });
    clients.push(c);
  }
  const st = await mongo.stats();
  assert.equal(st.change_streams_open['parse.SigningSchedule'], 1, JSON.stringify(st));
  assert.equal(st.change_streams_open['parse.BookStockLog'], 1, JSON.stringify(st));
  assert.equal(st.change_streams_open['parse._SCHEMA'], 1, JSON.stringify(st));
});

h.test('a _SCHEMA change is picked up: a field becomes a file', async () => {
  const raw = await h.wsClient(gw.url);
  await raw.connect({ masterKey: h.MASTER_KEY });
  await raw.subscribe(1, 'BookStockLog', {});
  await mongo.insert('BookStockLog', { _id: 'cover00001', cover: 'c1.jpg' });
  assert.equal((await raw.event(1, 'cover00001', 5000)).object.cover, 'c1.jpg', 'no schema: a plain string');

  await mongo.insert('_SCHEMA', { _id: 'BookStockLog', objectId: 'string', cover: 'file', shelf: '*Shelf' });
  await h.waitFor(async () => (await M.metrics(gw)).tailer_schema_loads >= 2, { what: 'schema reload' });
  await mongo.insert('BookStockLog', { _id: 'cover00002', cover: 'c2.jpg', _p_shelf: 'Shelf$s1', _p_other: 'X$1' });
  const o = (await raw.event(1, 'cover00002', 5000)).object;
  assert.deepEqual(o.cover, { __type: 'File', name: 'c2.jpg', url: `${FILES}c2.jpg` });
  assert.deepEqual(o.shelf, { __type: 'Pointer', className: 'Shelf', objectId: 's1' });
  assert.equal(o.other, undefined, 'a _p_ field the schema does not type as a pointer is dropped');
});

h.test('without pre-images: original and deletes from the last-seen cache; unknown ACL goes to master only', async () => {
  const m2 = await M.startMongo({ preimages: false });
  const redis2 = await h.startRedis();
  // seen before the tailer starts: the tailer never saw it
  await m2.insert('SigningSchedule', { _id: 'unseen0001', title: 't', attendees: 1 });
  const g2 = await M.startTailer({ redis: redis2, mongo: m2 });
  const pub2 = await h.publisher(redis2.port);
  await h.waitFor(async () => (await M.tailerState(pub2, 'SigningSchedule')).token, { timeout: 15000, what: 'tailer stream open' });

  const pubc = await h.wsClient(g2.url);
  await pubc.connect();
  await pubc.subscribe(1, 'SigningSchedule', {});
  const master = await h.wsClient(g2.url);
  await master.connect({ masterKey: h.MASTER_KEY });
  await master.subscribe(1, 'SigningSchedule', {});

  await m2.insert('SigningSchedule', { _id: 'seen000001', title: 't', attendees: 1 });
  assert.equal((await pubc.event(1, 'seen000001', 5000)).op, 'create');
  await m2.update('SigningSchedule', 'seen000001', { attendees: 2 });
  const u = await pubc.event(1, 'seen000001', 5000);
  assert.equal(u.op, 'update');
  assert.equal(u.original.attendees, 1, 'original from the cache');
  assert.equal(u.object.attendees, 2);

  await m2.update('SigningSchedule', 'unseen0001', { attendees: 5 });
  const u2 = await pubc.event(1, 'unseen0001', 5000);
  assert.equal(u2.op, 'update');
  assert.equal(u2.original, undefined, 'never seen: update without original');

  await m2.remove('SigningSchedule', 'seen000001');
  const d = await pubc.event(1, 'seen000001', 5000);
  assert.equal(d.op, 'delete');
  assert.equal(d.object.attendees, 2, 'deleted object from the cache');

  // forget the cache: a new tailer process; then delete an object it never saw
  await g2.stop();
  const g3 = await M.startTailer({ redis: redis2, mongo: m2 });
  const master3 = await h.wsClient(g3.url);
  await master3.connect({ masterKey: h.MASTER_KEY });
  await master3.subscribe(1, 'SigningSchedule', {});
  const pub3 = await h.wsClient(g3.url);
  await pub3.connect();
  await pub3.subscribe(1, 'SigningSchedule', {});
  await h.waitFor(async () => (await M.metrics(g3)).tailer_leader === 1, { timeout: 10000, what: 'g3 leads' });
  await m2.remove('SigningSchedule', 'unseen0001');
  const dm = await master3.event(1, 'unseen0001', 5000);
  assert.equal(dm.op, 'delete');
  assert.deepEqual(dm.object, { objectId: 'unseen0001', className: 'SigningSchedule', ACL: {} });
  await m2.insert('SigningSchedule', { _id: 'marker0002', title: 't' });
  assert.equal((await pub3.event(1, undefined, 5000)).object.objectId, 'marker0002',
    'the public subscriber must not get a delete whose ACL is unknown');
  assert.ok((await M.metrics(g3)).tailer_deletes_acl_unknown >= 1);
});

h.test('--role tailer publishes and serves only /health and /metrics; --role gateway does not tail', async () => {
  const m3 = await M.startMongo();
  const redis3 = await h.startRedis();
  const gwOnly = await h.startGateway({ redis: redis3, masterKey: h.MASTER_KEY, args: ['--role', 'gateway', '--mongodb-uri', m3.uri] });
  const c = await h.wsClient(gwOnly.url);
  await c.connect();
  await c.subscribe(1, 'BookStockLog', {});
  const tp = await M.startTailer({ redis: redis3, mongo: m3, role: 'tailer' });
  const p3 = await h.publisher(redis3.port);
  await h.waitFor(async () => (await M.tailerState(p3, 'BookStockLog')).token, { timeout: 15000, what: 'tailer-only stream open' });
  const health = await (await fetch(`http://127.0.0.1:${tp.port}/health`)).json();
  /* redis: the tailer's own connection (a tailer-only process has no subscriber) */
  assert.deepEqual({ ...health, draining: undefined }, { status: 'ok', redis: 'connected', connections: 0, tailer: 'active', ready: true, mongodb: 'connected', draining: undefined });
  const refused = h.wsClientNoWait(tp.url);
  const closed = await h.withTimeout(refused.closed, 5000, 'tailer-only refuses WebSocket');
  assert.equal(closed.code, 1008);
  assert.match(closed.reason, /not a gateway/);
  assert.equal((await M.metrics(tp)).tailer_leader, 1, '/metrics is served');
  await m3.insert('BookStockLog', { _id: 'role000001', isbn: 'x' });
  assert.equal((await c.event(1, 'role000001', 5000)).op, 'create');
  const st = await m3.stats();
  assert.equal(st.change_streams_open['parse.BookStockLog'], 1, 'only the tailer-only process watches');
  await tp.stop();
  assert.equal(tp.crash, null);
  assert.match(tp.logs(), /tailer lease released/);
});

h.test('classes stored without an ACL of their own (_Session) go to master-key subscribers only, secrets stripped', async () => {
  const m4 = await M.startMongo();
  const redis4 = await h.startRedis();
  const g4 = await M.startTailer({ redis: redis4, mongo: m4, classes: '_Session' });
  const p4 = await h.publisher(redis4.port);
  await h.waitFor(async () => (await M.tailerState(p4, '_Session')).token, { timeout: 15000, what: 'tailer stream open' });
  const pubc = await h.wsClient(g4.url);
  await pubc.connect();
  await pubc.subscribe(1, '_Session', {});
  const master = await h.wsClient(g4.url);
  await master.connect({ masterKey: h.MASTER_KEY });
  await master.subscribe(1, '_Session', {});
  await m4.insert('_Session', {
    _id: 'sess000001', _session_token: 'r:0123456789abcdef0123456789abcdef', _p_user: '_User$u1',
    createdWith: { action: 'login', authProvider: 'password' }, expiresAt: M.X.date('2027-12-01T00:00:00.000Z'),
    installationId: 'inst-1', _created_at: M.X.date('2026-12-01T00:00:00.000Z'), _updated_at: M.X.date('2026-12-01T00:00:00.000Z'),
  });
  const f = await master.event(1, 'sess000001', 5000);
  assert.deepEqual(f.object.ACL, {}, 'no _rperm stored: master only, never public');
  assert.equal(f.object.sessionToken, undefined, 'the session token never leaves');
  assert.equal(f.object._session_token, undefined);
  assert.deepEqual(f.object.user, { __type: 'Pointer', className: '_User', objectId: 'u1' });
  await pubc.none(300);
});
