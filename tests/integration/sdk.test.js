'use strict';
/*
 * The real Parse JS SDK (npm parse 8.6.2, parse/node) against livequeryd:
 * Parse.LiveQueryClient and the Parse.liveQueryServerURL + query.subscribe()
 * path, all five event types, keys/watch, unsubscribe, createdAt as a date,
 * ACL with and without the master key, and Parse Server's afterSave/afterDelete
 * intake with Date and Pointer fields.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

const P = h.Parse();
let s;

before(async () => {
  s = await h.startStack({ masterKey: h.MASTER_KEY });
});
after(h.teardown);

const T = (sec) => `2026-11-23T23:29:${sec}Z`;
function stock(objectId, qty, updatedSec, more = {}) {
  return h.obj({
    objectId, className: 'BookStockLog', isbn: '978-0-00-000001-1', storeId: 's1', quantityOnHand: qty,
    createdAt: T('42.277'), updatedAt: T(updatedSec), ...more,
  });
}

/* Subscribes q on an SDK client; resolves once the server answered `subscribed`. */
async function sdkSubscribe(client, q, label) {
  const sub = client.subscribe(q);
  const inbox = h.recordSubscription(sub, label);
  await h.withTimeout(sub.subscribePromise, 3000, `${label} subscribed`);
  return { sub, inbox };
}

function assertStock(o, { id, qty, updatedAt }, what) {
  assert.ok(o instanceof P.Object, `${what}: not a Parse.Object`);
  assert.equal(o.className, 'BookStockLog', `${what}: className`);
  assert.equal(o.id, id, `${what}: id`);
  assert.equal(o.get('quantityOnHand'), qty, `${what}: quantityOnHand`);
  assert.equal(o.get('isbn'), '978-0-00-000001-1', `${what}: isbn`);
  assert.equal(o.get('storeId'), 's1', `${what}: storeId`);
  assert.ok(o.createdAt instanceof Date, `${what}: createdAt is a Date`);
  assert.equal(o.createdAt.toISOString(), T('42.277'), `${what}: createdAt`);
  if (updatedAt) assert.equal(o.updatedAt.toISOString(), T(updatedAt), `${what}: updatedAt`);
}

/* Publishes the reference §8 sequence for objectId id (through `send`) and
 * checks the SDK sees create, update, leave, enter, update, delete in order. */
async function sequenceThroughSdk(inbox, id, send) {
  const s1 = stock(id, 10, '42.277');
  const s2 = stock(id, 12, '43.385');
  const s3 = stock(id, 3, '44.001');
  const s4 = stock(id, 4, '44.502');
  const s5 = stock(id, 8, '45.003');
  const s6 = stock(id, 9, '45.504');
  const s7 = stock(id, 9, '46.362');
  await send('create', s1);
  let e = await inbox.next();
  assert.equal(e.op, 'create');
  assertStock(e.object, { id, qty: 10, updatedAt: '42.277' }, 'create object');
  assert.equal(e.original, undefined, 'create has no original');

  await send('update', s2, s1);
  e = await inbox.next();
  assert.equal(e.op, 'update');
  assertStock(e.object, { id, qty: 12, updatedAt: '43.385' }, 'update object');
  assertStock(e.original, { id, qty: 10, updatedAt: '42.277' }, 'update original');

  await send('update', s3, s2);
  e = await inbox.next();
  assert.equal(e.op, 'leave');
  assertStock(e.object, { id, qty: 3, updatedAt: '44.001' }, 'leave object');
  assertStock(e.original, { id, qty: 12 }, 'leave original');

  await send('update', s4, s3); // 3 -> 4: nothing
  await send('update', s5, s4);
  e = await inbox.next();
  assert.equal(e.op, 'enter', `3->4 must send nothing, then 4->8 enter; got ${e.op} qty ${e.object.get('quantityOnHand')}`);
  assertStock(e.object, { id, qty: 8, updatedAt: '45.003' }, 'enter object');
  assertStock(e.original, { id, qty: 4 }, 'enter original');

  await send('update', s6, s5);
  e = await inbox.next();
  assert.equal(e.op, 'update');
  assertStock(e.object, { id, qty: 9 }, 'second update object');
  assertStock(e.original, { id, qty: 8 }, 'second update original');

  await send('delete', s7);
  e = await inbox.next();
  assert.equal(e.op, 'delete');
  assertStock(e.object, { id, qty: 9, updatedAt: '46.362' }, 'delete object');
  assert.equal(e.original, undefined, 'delete has no original');

  await send('create', stock(`${id}2`, 2, '47.000')); // does not match
  await inbox.none(300);
}

const viaBus = (op, object, original) => s.pub.change('BookStockLog', op, object, original);

h.test('LiveQueryClient receives create, update, leave, enter, update, delete with object and original', async () => {
  const st = h.sdkClient(s.url);
  await h.withTimeout(st.ready, 3000, 'SDK open');
  assert.match(st.client.id, h.UUID_RE, 'SDK learned a UUID clientId');
  const q = new P.Query('BookStockLog').greaterThan('quantityOnHand', 5);
  const { inbox } = await sdkSubscribe(st.client, q, 'seq');
  await sequenceThroughSdk(inbox, 'SdkSeq0001', viaBus);
  assert.equal(st.opens, 1, 'the SDK connected exactly once');
  assert.equal(st.closes, 0, 'the SDK socket never closed');
  assert.deepEqual(st.errors, [], 'no SDK errors');
});

h.test('Parse.liveQueryServerURL + query.subscribe() (default client, installationId echoed)', async () => {
  P.liveQueryServerURL = s.url;
  h.onTeardown(async () => { await h.withTimeout(Promise.resolve(P.LiveQuery.close()), 3000, 'default client close').catch(() => {}); });
  const q = new P.Query('BookStockLog').equalTo('storeId', 'default-path');
  const sub = await h.withTimeout(q.subscribe(), 5000, 'query.subscribe()');
  const inbox = h.recordSubscription(sub, 'default');
  const o1 = stock('SdkDef0001', 1, '42.277', { storeId: 'default-path' });
  await viaBus('create', o1);
  let e = await inbox.next();
  assert.equal(e.op, 'create');
  assert.equal(e.object.id, 'SdkDef0001');
  assert.equal(e.object.get('storeId'), 'default-path');
  assert.equal(typeof e.response.installationId, 'string', 'the default client sends an installationId, which must be echoed');
  assert.ok(e.response.installationId.length > 0);
  assert.match(e.response.clientId, h.UUID_RE);

  const o2 = h.updated(o1, { quantityOnHand: 2 });
  await viaBus('update', o2, o1);
  e = await inbox.next();
  assert.equal(e.op, 'update');
  assert.equal(e.object.get('quantityOnHand'), 2);
  assert.equal(e.original.get('quantityOnHand'), 1);

  const o3 = h.updated(o2, { storeId: 'elsewhere' });
  await viaBus('update', o3, o2);
  e = await inbox.next();
  assert.equal(e.op, 'leave');
  assert.equal(e.object.get('storeId'), 'elsewhere');
  assert.equal(e.original.get('storeId'), 'default-path');

  const o4 = h.updated(o3, { storeId: 'default-path' });
  await viaBus('update', o4, o3);
  e = await inbox.next();
  assert.equal(e.op, 'enter');
  assert.equal(e.original.get('storeId'), 'elsewhere');

  await viaBus('delete', o4);
  e = await inbox.next();
  assert.equal(e.op, 'delete');
  assert.equal(e.object.id, 'SdkDef0001');
  await inbox.none(200);
});

h.test('keys via query.select and watch via query.watch', async () => {
  const st = h.sdkClient(s.url);
  await h.withTimeout(st.ready, 3000, 'SDK open');
  const qKeys = new P.Query('BookStockLog').equalTo('storeId', 'keys-store').select('quantityOnHand');
  const { inbox: keys } = await sdkSubscribe(st.client, qKeys, 'keys');
  const qWatch = new P.Query('BookStockLog').equalTo('storeId', 'watch-store').watch('quantityOnHand');
  const { inbox: watch } = await sdkSubscribe(st.client, qWatch, 'watch');

  const k1 = stock('SdkKeys001', 10, '42.277', { storeId: 'keys-store', ACL: { '*': { read: true } } });
  const k2 = h.updated(k1, { quantityOnHand: 11 });
  await viaBus('create', k1);
  await viaBus('update', k2, k1);
  let e = await keys.next();
  assert.equal(e.op, 'create');
  assert.equal(e.object.id, 'SdkKeys001');
  assert.equal(e.object.className, 'BookStockLog');
  assert.equal(e.object.get('quantityOnHand'), 10);
  assert.equal(e.object.get('isbn'), undefined, 'isbn is not in keys');
  assert.equal(e.object.get('storeId'), undefined, 'storeId is not in keys (only used in where)');
  assert.ok(e.object.createdAt instanceof Date && e.object.updatedAt instanceof Date, 'createdAt/updatedAt always kept');
  assert.equal(e.object.getACL().getPublicReadAccess(), true, 'ACL always kept');
  e = await keys.next();
  assert.equal(e.op, 'update');
  assert.equal(e.object.get('quantityOnHand'), 11);
  assert.equal(e.original.get('quantityOnHand'), 10);
  assert.equal(e.object.get('isbn'), undefined);
  assert.equal(e.original.get('isbn'), undefined, 'keys also applies to original');

  const w1 = stock('SdkWatch01', 10, '42.277', { storeId: 'watch-store' });
  const w2 = h.updated(w1, { isbn: '978-0-00-000002-8' });           // watched field unchanged
  const w3 = h.updated(w2, { quantityOnHand: 7 });                   // watched field changed
  await viaBus('create', w1);
  e = await watch.next();
  assert.equal(e.op, 'create');
  assert.equal(e.object.get('quantityOnHand'), 10);
  await viaBus('update', w2, w1);
  await viaBus('update', w3, w2);
  e = await watch.next();
  assert.equal(e.op, 'update', 'the isbn-only update must be suppressed by watch');
  assert.equal(e.object.get('quantityOnHand'), 7);
  assert.equal(e.original.get('quantityOnHand'), 10);
  assert.equal(e.object.get('isbn'), '978-0-00-000002-8', 'watch does not project');
  await watch.none(200);
  await keys.none(0);
});

h.test('unsubscribe stops delivery', async () => {
  const st = h.sdkClient(s.url);
  await h.withTimeout(st.ready, 3000, 'SDK open');
  const { sub, inbox } = await sdkSubscribe(st.client, new P.Query('Shelf').equalTo('zone', 'A'), 'unsub');
  const { inbox: marker } = await sdkSubscribe(st.client, new P.Query('Shelf').equalTo('zone', 'marker'), 'marker');
  await s.pub.change('Shelf', 'create', h.obj({ objectId: 'ShelfA0001', className: 'Shelf', zone: 'A' }));
  const e = await inbox.next();
  assert.equal(e.object.id, 'ShelfA0001');
  await h.withTimeout(st.client.unsubscribe(sub), 3000, 'unsubscribed');
  await s.pub.change('Shelf', 'create', h.obj({ objectId: 'ShelfA0002', className: 'Shelf', zone: 'A' }));
  await s.pub.change('Shelf', 'create', h.obj({ objectId: 'ShelfM0001', className: 'Shelf', zone: 'marker' }));
  const m = await marker.next();
  assert.equal(m.object.id, 'ShelfM0001');
  await inbox.none(200);
});

h.test('createdAt/updatedAt compare as dates (Parse bug fixed)', async () => {
  const st = h.sdkClient(s.url);
  await h.withTimeout(st.ready, 3000, 'SDK open');
  const { inbox: after2030 } = await sdkSubscribe(st.client,
    new P.Query('Ledger').greaterThan('createdAt', new Date('2030-01-01T00:00:00Z')), 'createdAt>2030');
  const { inbox: after2026 } = await sdkSubscribe(st.client,
    new P.Query('Ledger').greaterThan('createdAt', new Date('2026-01-01T00:00:00Z')), 'createdAt>2026');
  const { inbox: updBefore2030 } = await sdkSubscribe(st.client,
    new P.Query('Ledger').lessThanOrEqualTo('updatedAt', new Date('2030-01-01T00:00:00Z')), 'updatedAt<=2030');
  const o2026 = h.obj({ objectId: 'Ledger2026', className: 'Ledger', createdAt: '2026-11-23T23:29:42.277Z', updatedAt: '2026-11-23T23:29:42.277Z' });
  const o2031 = h.obj({ objectId: 'Ledger2031', className: 'Ledger', createdAt: '2031-02-01T00:00:00.000Z', updatedAt: '2031-02-01T00:00:00.000Z' });
  await s.pub.change('Ledger', 'create', o2026);
  await s.pub.change('Ledger', 'create', o2031);
  let e = await after2030.next();
  assert.equal(e.object.id, 'Ledger2031', 'createdAt > 2030 must not match an object created in 2026');
  e = await after2026.next();
  assert.equal(e.object.id, 'Ledger2026');
  e = await after2026.next();
  assert.equal(e.object.id, 'Ledger2031');
  e = await updBefore2030.next();
  assert.equal(e.object.id, 'Ledger2026');
  await after2030.none(200);
  await after2026.none(0);
  await updBefore2030.none(0);
});

h.test('ACL: a non-public object reaches only a master-key client', async () => {
  const plain = h.sdkClient(s.url);
  const master = h.sdkClient(s.url, { masterKey: h.MASTER_KEY });
  await h.withTimeout(Promise.all([plain.ready, master.ready]), 3000, 'SDK open');
  const { inbox: p } = await sdkSubscribe(plain.client, new P.Query('Vault'), 'plain');
  const { inbox: m } = await sdkSubscribe(master.client, new P.Query('Vault'), 'master');
  const priv = h.obj({ objectId: 'VaultPriv1', className: 'Vault', ACL: { u1: { read: true } }, secret: 'x' });
  const none = h.obj({ objectId: 'VaultNone1', className: 'Vault', ACL: {}, secret: 'y' });
  const pub = h.obj({ objectId: 'VaultPub01', className: 'Vault', ACL: { '*': { read: true } }, secret: 'z' });
  const noAcl = h.obj({ objectId: 'VaultNoAcl', className: 'Vault', secret: 'w' });
  for (const o of [priv, none, pub, noAcl]) await s.pub.change('Vault', 'create', o);

  let e = await p.next();
  assert.equal(e.object.id, 'VaultPub01', 'the plain client must get only the public object first (private ones withheld)');
  e = await p.next();
  assert.equal(e.object.id, 'VaultNoAcl');
  await p.none(200);

  for (const id of ['VaultPriv1', 'VaultNone1', 'VaultPub01', 'VaultNoAcl']) {
    e = await m.next();
    assert.equal(e.op, 'create');
    assert.equal(e.object.id, id, 'the master-key client gets every object, in order');
  }
  assert.equal(e.object.get('secret'), 'w');
  await m.none(0);
});

h.test('Parse Server afterSave/afterDelete intake: 5 event types, Date and Pointer fields', async () => {
  const st = h.sdkClient(s.url);
  await h.withTimeout(st.ready, 3000, 'SDK open');
  const store = P.Object.extend('Store').createWithoutData('s1');
  const q = new P.Query('SigningSchedule').equalTo('store', store).greaterThan('startsAt', new Date('2029-01-01T00:00:00Z'));
  const { inbox } = await sdkSubscribe(st.client, q, 'parse-intake');
  const app = h.APP_ID;
  const clp = h.PUBLIC_CLP;
  const s1 = h.obj({
    objectId: 'Sign000001', className: 'SigningSchedule', title: 'Signing', status: 'confirmed',
    store: h.pointer('Store', 's1'), startsAt: h.date('2030-01-01T18:00:00.000Z'),
  });
  const s2 = h.updated(s1, { title: 'Signing (moved)' });
  const s3 = h.updated(s2, { startsAt: h.date('2028-06-01T10:00:00.000Z') });
  const s4 = h.updated(s3, { startsAt: h.date('2031-03-01T10:00:00.000Z') });
  const other = h.obj({ objectId: 'Sign000002', className: 'SigningSchedule', store: h.pointer('Store', 's2'), startsAt: h.date('2030-01-01T18:00:00.000Z') });

  await s.pub.parseAfterSave(app, other, undefined, clp);  // other store: no event
  await s.pub.parseAfterSave(app, s1, undefined, clp);
  let e = await inbox.next();
  assert.equal(e.op, 'create');
  assert.equal(e.object.id, 'Sign000001');
  assert.equal(e.object.className, 'SigningSchedule');
  assert.ok(e.object.get('startsAt') instanceof Date, 'Date field decoded to a Date');
  assert.equal(e.object.get('startsAt').toISOString(), '2030-01-01T18:00:00.000Z');
  const ptr = e.object.get('store');
  assert.ok(ptr instanceof P.Object, 'Pointer decoded to a Parse.Object');
  assert.equal(ptr.className, 'Store');
  assert.equal(ptr.id, 's1');
  assert.equal(e.original, undefined);

  await s.pub.parseAfterSave(app, s2, s1, clp);
  e = await inbox.next();
  assert.equal(e.op, 'update');
  assert.equal(e.object.get('title'), 'Signing (moved)');
  assert.equal(e.original.get('title'), 'Signing');
  assert.equal(e.original.get('startsAt').toISOString(), '2030-01-01T18:00:00.000Z');

  await s.pub.parseAfterSave(app, s3, s2, clp);
  e = await inbox.next();
  assert.equal(e.op, 'leave');
  assert.equal(e.object.get('startsAt').toISOString(), '2028-06-01T10:00:00.000Z');
  assert.equal(e.original.get('startsAt').toISOString(), '2030-01-01T18:00:00.000Z');

  await s.pub.parseAfterSave(app, s4, s3, clp);
  e = await inbox.next();
  assert.equal(e.op, 'enter');
  assert.equal(e.object.get('startsAt').toISOString(), '2031-03-01T10:00:00.000Z');
  assert.equal(e.original.get('startsAt').toISOString(), '2028-06-01T10:00:00.000Z');
  assert.equal(e.object.get('store').id, 's1');

  await s.pub.parseAfterDelete(app, s4, clp);
  e = await inbox.next();
  assert.equal(e.op, 'delete');
  assert.equal(e.object.id, 'Sign000001');
  assert.equal(e.original, undefined);
  await inbox.none(200);
});

h.test('Parse Server intake: the reference §8 sequence through the SDK', async () => {
  const st = h.sdkClient(s.url);
  await h.withTimeout(st.ready, 3000, 'SDK open');
  const { inbox } = await sdkSubscribe(st.client, new P.Query('BookStockLog').greaterThan('quantityOnHand', 5), 'parse-seq');
  await sequenceThroughSdk(inbox, 'SdkParse01', (op, object, original) => (op === 'delete'
    ? s.pub.parseAfterDelete(h.APP_ID, object, h.PUBLIC_CLP)
    : s.pub.parseAfterSave(h.APP_ID, object, original, h.PUBLIC_CLP)));
});
