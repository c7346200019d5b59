'use strict';
/*
 * Authorization when Parse Server is the publisher (no tailer): the CLP each
 * afterSave message carries is enforced, a change of it re-checks live
 * subscriptions, and Parse Server's <appId>clearCache makes the gateway re-read
 * roles (nothing else tells it about role changes then). Sessions still come
 * from MongoDB (the mock), read by the gateway's lookup threads.
 */
const { after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const M = require('./mongo');
const A = require('./authfix');

after(h.teardown);

const CLS = 'Notice';
const CLP_STAFF = {
  find: { 'role:staff': true }, get: { 'role:staff': true }, count: {}, create: { '*': true },
  update: {}, delete: {}, addField: {}, protectedFields: { '*': ['secret'], 'role:manager': [] },
};

async function stack() {
  const redis = await h.startRedis();
  const mongo = await M.startMongo({});
  await A.seedAuth(mongo, {
    roles: [{ id: 'rStaffPS01', name: 'staff' }],
    users: [{ id: 'uAnnPS0001', username: 'ann' }, { id: 'uBobPS0001', username: 'bob' }],
    members: [['rStaffPS01', 'uAnnPS0001']],
  });
  const ann = await A.createSession(mongo, 'uAnnPS0001');
  const bob = await A.createSession(mongo, 'uBobPS0001');
  const gw = await h.startGateway({ redis, args: ['--role', 'gateway', '--mongodb-uri', mongo.uri] });
  const pub = await h.publisher(redis.port);
  await h.waitBusReady(gw, pub);
  return { redis, mongo, gw, pub, ann, bob };
}

function rest(objectId, fields, acl) {
  return { objectId, className: CLS, createdAt: h.iso(0), updatedAt: h.iso(0), ...fields, ACL: acl };
}

h.test("Parse Server's classLevelPermissions: enforced per event and re-checked live", async () => {
  const s = await stack();
  const anon = await h.wsClient(s.gw.url);
  await anon.connect();
  const ann = await h.wsClient(s.gw.url);
  await ann.connect({ sessionToken: s.ann.token });
  /* no CLP known yet for the class: both may subscribe */
  assert.equal((await A.trySubscribe(anon, 1, CLS, {})).op, 'subscribed');
  assert.equal((await A.trySubscribe(ann, 1, CLS, {})).op, 'subscribed');

  const o = rest('nPS0000001', { title: 'signing', secret: 'margin 40%' }, { '*': { read: true } });
  await s.pub.parseAfterSave(h.APP_ID, o, undefined, CLP_STAFF);
  /* the message's CLP applies before its event: the anonymous subscription ends */
  assert.deepEqual(await anon.next((x) => x.op === 'error', 5000), A.ERR.clp(CLS, 'find', 1));
  const ev = await ann.event(1, 'nPS0000001', 5000);
  assert.equal(ev.op, 'create');
  assert.equal(ev.object.title, 'signing');
  assert.ok(!('secret' in ev.object), 'protected field removed');
  await anon.none(300, (x) => x.requestId === 1 && x.op !== 'error');
  /* a later subscribe is refused at once under the CLP now known */
  assert.deepEqual(await A.trySubscribe(anon, 2, CLS, {}), A.ERR.clp(CLS, 'find', 2));
});

h.test("Parse Server's clearCache: roles are re-read, live subscriptions follow", async () => {
  const s = await stack();
  const bob = await h.wsClient(s.gw.url);
  await bob.connect({ sessionToken: s.bob.token });
  assert.equal((await A.trySubscribe(bob, 1, 'Board', {})).op, 'subscribed');
  const staffOnly = { 'role:staff': { read: true } };
  await s.pub.parseAfterSave(h.APP_ID, { ...rest('bPS0000001', { n: 1 }, staffOnly), className: 'Board' });
  await bob.none(400, (x) => x.requestId === 1);

  /* bob joins staff in the database; with no tailer only clearCache tells the gateway */
  await A.addUserToRole(s.mongo, 'rStaffPS01', 'uBobPS0001');
  const before = await M.metrics(s.gw);
  await s.pub.client.publish(`${h.APP_ID}clearCache`, JSON.stringify({ userId: 'someoneElse' }));
  /* auth_role_changes counts on the gateway's service thread once the new roles are in
   * force (auth_role_loads counts on a lookup thread, before they are) */
  await h.waitFor(async () => (await M.metrics(s.gw)).auth_role_changes > before.auth_role_changes,
    { timeout: 5000, what: 'roles re-read and applied after clearCache' });
  await s.pub.parseAfterSave(h.APP_ID, { ...rest('bPS0000002', { n: 2 }, staffOnly), className: 'Board' });
  const ev = await bob.event(1, 'bPS0000002', 5000);
  assert.equal(ev.op, 'create');
  assert.equal((await M.metrics(s.gw)).auth_cache_clears, before.auth_cache_clears + 1);
});
