'use strict';
/*
 * What the tailer publishes for sessions, roles and class-level permissions
 * (protocol/bus.md): the auth collections (_Session, _Role, _Join:users:_Role,
 * _Join:roles:_Role) are always watched, whatever --classes says, and
 * published master-only; _SCHEMA's class_permissions go to the <p>schema
 * hash and out as `schema` messages, only when they change. Read straight
 * from Redis (a raw subscriber on the change channel): no gateway needed,
 * except the last test, which checks that a gateway reads the hash.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');

after(h.teardown);

const KEY = (what) => `livequery:${h.APP_ID}:${what}`;

/* Everything published on the change channel, parsed, in order. */
async function channelInbox(pub) {
  const sub = pub.client.duplicate();
  sub.on('error', () => { /* teardown */ });
  await sub.connect();
  const inbox = new h.Inbox('changes');
  await sub.subscribe(pub.channel, (text) => inbox.push(JSON.parse(text)));
  h.onTeardown(async () => { try { await sub.quit(); } catch { /* gone */ } });
  return inbox;
}

/* <p>schema as a plain object (node-redis gives a null-prototype one). */
async function schemaHash(pub) {
  return { ...(await pub.client.hGetAll(KEY('schema'))) };
}

const isSchema = (className) => Object.assign((m) => m.op === 'schema' && m.className === className,
  { description: `schema message for ${className}` });
const isEvent = (className, op, objectId) => Object.assign(
  (m) => m.className === className && m.op === op && m.object && m.object.objectId === objectId,
  { description: `${op} of ${className} ${objectId}` });

h.test('the auth collections are watched without --classes and published master-only', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo({ preimages: true });
  const pub = await h.publisher(redis.port);
  const inbox = await channelInbox(pub);
  // a join row the tailer never sees inserted, in a collection without pre-images:
  // its delete can only carry the objectId
  await mongo.images('_Join:roles:_Role', false, false);
  await mongo.insert('_Join:roles:_Role', { _id: { $oid: '65a1b2c3d4e5f60718293a4c' }, relatedId: 'rChild', owningId: 'rParent' });
  const t = await M.startTailer({ redis, mongo, role: 'tailer', classes: 'BookStockLog,_Session' });
  for (const c of ['_Session', '_Role', '_Join:users:_Role', '_Join:roles:_Role']) {
    await h.waitFor(async () => (await M.tailerState(pub, c)).token, { timeout: 15000, what: `tailer stream on ${c}` });
  }
  const st = await mongo.stats();
  for (const c of ['BookStockLog', '_Session', '_Role', '_Join:users:_Role', '_Join:roles:_Role', '_SCHEMA']) {
    assert.equal(st.change_streams_open[`parse.${c}`], 1, `one stream on ${c}: ${JSON.stringify(st.change_streams_open)}`);
  }

  // _Session: insert, then delete (pre-image): master only, no secret
  await mongo.insert('_Session', {
    _id: 'sess000001', _session_token: 'r:0123456789abcdef0123456789abcdef', _p_user: '_User$u1',
    expiresAt: M.X.date('2027-12-01T00:00:00.000Z'), installationId: 'inst-1',
    _created_at: M.X.date('2026-12-01T00:00:00.000Z'), _updated_at: M.X.date('2026-12-01T00:00:00.000Z'),
  });
  await mongo.remove('_Session', 'sess000001');
  const sc = await inbox.next(isEvent('_Session', 'create', 'sess000001'), 5000);
  const sd = await inbox.next(isEvent('_Session', 'delete', 'sess000001'), 5000);
  for (const m of [sc, sd]) {
    assert.deepEqual(m.object.ACL, {}, 'master only');
    assert.equal(m.object.className, '_Session');
    assert.deepEqual(m.object.user, { __type: 'Pointer', className: '_User', objectId: 'u1' });
    assert.equal(m.object.sessionToken, undefined);
    assert.equal(m.object._session_token, undefined);
    assert.equal(m.epoch, (await M.tailerState(pub, '_Session')).epoch);
  }
  assert.equal(sd.seq, sc.seq + 1);

  // _Join:users:_Role: an ObjectId _id becomes 24 hex; relatedId/owningId stay strings
  const oid = '65a1b2c3d4e5f60718293a4b';
  await mongo.insert('_Join:users:_Role', { _id: { $oid: oid }, relatedId: 'u1', owningId: 'r1' });
  const j = await inbox.next(isEvent('_Join:users:_Role', 'create', oid), 5000);
  assert.deepEqual(j.object, { objectId: oid, className: '_Join:users:_Role', relatedId: 'u1', owningId: 'r1', ACL: {} });
  assert.equal(j.seq, 1);
  assert.equal(typeof j.epoch, 'string');
  const hist = await M.history(pub, '_Join:users:_Role');
  assert.deepEqual(hist.map((x) => x.id), ['1-0']);
  assert.deepEqual(hist[0].msg, j, 'the history stream under <p>stream:_Join:users:_Role holds the same message');
  const state = await pub.client.hGetAll(KEY('tailer:_Join:users:_Role'));
  assert.equal(state.seq, '1');

  // a delete with neither pre-image nor cached copy still names the object
  await mongo.remove('_Join:roles:_Role', { $oid: '65a1b2c3d4e5f60718293a4c' });
  const jd = await inbox.next(isEvent('_Join:roles:_Role', 'delete', '65a1b2c3d4e5f60718293a4c'), 5000);
  assert.deepEqual(jd.object, { objectId: '65a1b2c3d4e5f60718293a4c', className: '_Join:roles:_Role', ACL: {} });

  // _Role keeps its own ACL (it is what decides who may read the role)
  await mongo.insert('_Role', { _id: 'role000001', name: 'staff', _rperm: ['*'], _wperm: ['u1'] });
  const r = await inbox.next(isEvent('_Role', 'create', 'role000001'), 5000);
  assert.deepEqual(r.object.ACL, { '*': { read: true }, u1: { write: true } });
  assert.equal(r.object.name, 'staff');
  assert.ok((await M.metrics(t)).tailer_events_published >= 5);
});

h.test('_SCHEMA class_permissions: the <p>schema hash and `schema` messages, only on change', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const pub = await h.publisher(redis.port);
  const inbox = await channelInbox(pub);
  const clpA = { find: { '*': true }, get: { '*': true }, create: { 'role:staff': true } };
  await mongo.insert('_SCHEMA', { _id: 'SigningSchedule', objectId: 'string', title: 'string', _metadata: { class_permissions: clpA } });
  await mongo.insert('_SCHEMA', { _id: 'BookStockLog', objectId: 'string', isbn: 'string' });
  // left by an earlier tailer for a class _SCHEMA no longer has
  await pub.client.hSet(KEY('schema'), 'Gone', JSON.stringify({ get: {} }));

  const t = await M.startTailer({ redis, mongo, role: 'tailer' });
  // the first load of the term writes the whole hash
  const first = await inbox.next(isSchema('SigningSchedule'), 15000);
  assert.deepEqual(first, { v: 1, className: 'SigningSchedule', op: 'schema', clp: clpA, ts: first.ts });
  assert.equal(typeof first.ts, 'number');
  assert.equal(first.seq, undefined, 'schema messages have no seq');
  const gone = await inbox.next(isSchema('Gone'), 5000);
  assert.equal(gone.clp, null);
  assert.deepEqual(await schemaHash(pub), {
    SigningSchedule: JSON.stringify(clpA),
    BookStockLog: 'null',
  });
  await inbox.none(300, (m) => m.op === 'schema'); // BookStockLog had none and still has none: no message
  const loads0 = (await M.metrics(t)).tailer_schema_loads;
  assert.equal((await M.metrics(t)).tailer_schema_published, 2);

  // class_permissions changed: one message, the hash follows
  const clpB = { find: { 'role:staff': true }, get: { 'role:staff': true }, protectedFields: { '*': ['email'] } };
  await mongo.update('_SCHEMA', 'SigningSchedule', { '_metadata.class_permissions': clpB });
  const changed = await inbox.next(isSchema('SigningSchedule'), 10000);
  assert.deepEqual(changed.clp, clpB);
  assert.equal(await pub.client.hGet(KEY('schema'), 'SigningSchedule'), JSON.stringify(clpB));

  // a class gets its first CLP
  await mongo.update('_SCHEMA', 'BookStockLog', { _metadata: { class_permissions: { find: {} } } });
  assert.deepEqual((await inbox.next(isSchema('BookStockLog'), 10000)).clp, { find: {} });
  assert.equal(await pub.client.hGet(KEY('schema'), 'BookStockLog'), '{"find":{}}');

  // a reload that changes no CLP publishes nothing
  await mongo.update('_SCHEMA', 'BookStockLog', { cover: 'file' });
  await h.waitFor(async () => (await M.metrics(t)).tailer_schema_loads >= loads0 + 3, { timeout: 10000, what: 'schema reload' });
  await inbox.none(500, (m) => m.op === 'schema');
  assert.equal((await M.metrics(t)).tailer_schema_published, 4);

  // a class removed from _SCHEMA: clp null
  await mongo.remove('_SCHEMA', 'SigningSchedule');
  assert.equal((await inbox.next(isSchema('SigningSchedule'), 10000)).clp, null);
  assert.equal(await pub.client.hGet(KEY('schema'), 'SigningSchedule'), 'null');

  // a new term (restart) rewrites the hash whole: wrong fields corrected, stray ones removed,
  // and only real changes are published
  await t.stop();
  await pub.client.hSet(KEY('schema'), 'BookStockLog', '{"find":{"*":true}}');
  await pub.client.hSet(KEY('schema'), 'Stray', 'null');
  await mongo.update('_SCHEMA', 'BookStockLog', { isbn: 'number' }); // while nobody tails
  const t2 = await M.startTailer({ redis, mongo, role: 'tailer' });
  assert.deepEqual((await inbox.next(isSchema('BookStockLog'), 15000)).clp, { find: {} });
  await h.waitFor(async () => !(await pub.client.hExists(KEY('schema'), 'Stray')), { what: 'stray field removed' });
  assert.deepEqual(await schemaHash(pub), { BookStockLog: '{"find":{}}' });
  await inbox.none(300, (m) => m.op === 'schema');
  assert.equal((await M.metrics(t2)).tailer_schema_published, 1);
});

h.test('schema publishing is fenced by the lease', async () => {
  const redis = await h.startRedis();
  const mongo = await M.startMongo();
  const pub = await h.publisher(redis.port);
  const inbox = await channelInbox(pub);
  await mongo.insert('_SCHEMA', { _id: 'BookStockLog', _metadata: { class_permissions: { find: { '*': true } } } });
  const t = await M.startTailer({ redis, mongo, role: 'tailer', leaseTtl: 10000 });
  await inbox.next(isSchema('BookStockLog'), 15000);

  await pub.client.set(KEY('tailer:lease'), 'usurper', { PX: 60000 });
  await mongo.update('_SCHEMA', 'BookStockLog', { _metadata: { class_permissions: { find: {} } } });
  await h.waitFor(async () => (await M.metrics(t)).tailer_lease_lost >= 1, { timeout: 10000, what: 'lease loss noticed' });
  await inbox.none(500, (m) => m.op === 'schema');
  assert.equal(await pub.client.hGet(KEY('schema'), 'BookStockLog'), '{"find":{"*":true}}', 'nothing written without the lease');

  await pub.client.del(KEY('tailer:lease'));
  assert.deepEqual((await inbox.next(isSchema('BookStockLog'), 15000)).clp, { find: {} }, 'published once the lease is back');
  assert.equal(await pub.client.hGet(KEY('schema'), 'BookStockLog'), '{"find":{}}');
});

h.test('a gateway reads the <p>schema hash when it subscribes, and takes schema and clearCache messages', async () => {
  const redis = await h.startRedis();
  const pub = await h.publisher(redis.port);
  await pub.client.hSet(KEY('schema'), { A: '{"find":{}}', B: 'null', C: 'not json' });
  const gw = await h.startGateway({ redis, masterKey: h.MASTER_KEY, args: ['--role', 'gateway', '--log-level', 'debug'] });
  await h.waitFor(() => /class-level permissions read from redis.*classes=2/.test(gw.logs()), { what: 'schema hash read' });
  assert.match(gw.logs(), /class-level permissions skipped: not a JSON object or null.*C/);
  await h.waitBusReady(gw, pub);
  await pub.change('A', 'schema', undefined, undefined, { clp: { get: {} } });
  await pub.raw(`${h.APP_ID}clearCache`, JSON.stringify({ userId: 'u1' }));
  await pub.raw(`${h.APP_ID}clearCache`, 'not json');
  await h.waitFor(() => /bus message dropped.*clearCache.*not JSON/.test(gw.logs()), { what: 'bad clearCache message logged' });
  // and ordinary delivery still works afterwards
  const c = await h.wsClient(gw.url);
  await c.connect({ masterKey: h.MASTER_KEY });
  await c.subscribe(1, 'A', {});
  await pub.change('A', 'create', { objectId: 'a1', className: 'A' });
  assert.equal((await c.event(1, 'a1', 5000)).op, 'create');
});
