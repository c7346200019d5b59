'use strict';
/*
 * Live invalidation: what a subscriber may see changes while it is
 * subscribed, and the gateway follows the database at once, without a
 * reconnect (DESIGN decision 9, include/livequery/auth.h):
 *   - logout (the _Session is deleted): every subscription of that session
 *     gets error 209 and nothing afterwards; the socket stays open;
 *   - a session's expiresAt passes: the same, within ~1.5 s;
 *   - a user is added to / removed from a role (_Join:users:_Role row);
 *   - a role gets / loses a parent (_Join:roles:_Role row), inherited by the
 *     members of the child role and of its descendants;
 *   - a class's CLP changes in _SCHEMA: subscriptions now denied get error
 *     119 and end, the others continue under the new protectedFields;
 *   - the _User is deleted: its sessions are revoked.
 * Every write goes into the mock MongoDB through its control API; the
 * latency from the write to the frame that shows its effect is measured,
 * printed and bounded.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const { performance } = require('node:perf_hooks');
const h = require('./harness');
const A = require('./authfix');

after(h.teardown);

const LIVE = 'LiveDoc';  // no CLP: ACL decides
const CLPC = 'ClpCase';  // a CLP that the test changes
const BOUND_MS = 2000;
const EXPIRY_BOUND_MS = 2500;

const ROLES = [
  { id: 'rStaff0001', name: 'staff' },
  { id: 'rCoord0001', name: 'coordinator' },
  { id: 'rMgr000001', name: 'manager' },
  { id: 'rAudit0001', name: 'auditor' },
];
const PARENTS = [['rStaff0001', 'rCoord0001'], ['rCoord0001', 'rMgr000001']];
const USERS = {
  sam: ['rStaff0001'], cora: ['rCoord0001'], max: ['rMgr000001'], olga: [],
  lou: ['rStaff0001'], exa: ['rStaff0001'], dan: ['rStaff0001'],
};
const uid = (name) => `u${name[0].toUpperCase()}${name.slice(1)}`.padEnd(10, '0');

const CLP_BEFORE = {
  find: { 'role:staff': true }, get: { 'role:staff': true }, count: { 'role:staff': true },
  create: { 'role:staff': true }, update: { 'role:staff': true }, delete: { 'role:staff': true }, addField: {},
  protectedFields: { '*': [] },
};
const CLP_AFTER = {
  ...CLP_BEFORE,
  find: { 'role:coordinator': true }, get: { 'role:coordinator': true },
  protectedFields: { '*': ['secret'], 'role:manager': [] },
};

let stack; let pacer; const S = {}; // sessions by name
const latencies = [];

before(async () => {
  stack = await A.startAuthStack({
    classes: [LIVE, CLPC, '_User'], // _User: its delete must reach the gateway
    seed: async (mongo) => {
      await A.seedSchema(mongo, [A.schemaDoc(CLPC, { title: 'string', secret: 'string', n: 'number' }, CLP_BEFORE)]);
      for (const r of ROLES) await mongo.insert('_Role', A.roleDoc(r));
      for (const [name, roles] of Object.entries(USERS)) {
        await mongo.insert('_User', A.userDoc({ id: uid(name), username: name, email: `${name}@bookstore.example` }));
        for (const r of roles) await A.addUserToRole(mongo, r, uid(name));
        S[name] = await A.createSession(mongo, uid(name));
      }
      S.lou2 = await A.createSession(mongo, uid('lou'));
      for (const [p, c] of PARENTS) await A.addRoleParent(mongo, p, c);
    },
  });
  await A.waitClpKnown(stack.gw, CLPC);
  pacer = await h.wsClient(stack.url);
  await pacer.connect({ masterKey: h.MASTER_KEY });
  await pacer.subscribe(101, LIVE, {});
  await pacer.subscribe(102, CLPC, {});
});

/* ------------------------------------------------------------------ */
/* Helpers                                                            */
/* ------------------------------------------------------------------ */

/* Records the arrival time (performance.now()) of every frame of c. */
function stamped(c) {
  c.times = [];
  c.ws.on('message', () => { c.times[c.all.length - 1] = performance.now(); });
  return c;
}
const arrival = (c, frame) => c.times[c.all.indexOf(frame)];

async function client(connect = {}) {
  const c = stamped(await h.wsClient(stack.url));
  await c.connect(connect);
  return c;
}

let clock = Date.parse('2026-12-01T10:00:00.000Z');
const rid = { [LIVE]: 101, [CLPC]: 102 };

/* Waits until the pacer (master key, every object) saw this state: the
 * gateway has dispatched the write to everybody. */
function pacerSaw(cls, id, updatedAt) {
  const pred = (x) => x && x.requestId === rid[cls] && x.object && x.object.objectId === id && x.object.updatedAt === updatedAt;
  pred.description = `pacer: ${cls} ${id} @${updatedAt}`;
  return pacer.next(pred, 5000);
}

async function put(cls, id, fields, acl) {
  clock += 1000;
  const at = A.xdate(clock);
  await stack.mongo.insert(cls, { _id: id, ...fields, ...A.aclFields(acl), _created_at: at, _updated_at: at });
  await pacerSaw(cls, id, at.$date);
  return at.$date;
}

async function bump(cls, id, set = {}) {
  clock += 1000;
  const at = A.xdate(clock);
  await stack.mongo.update(cls, id, { ...set, _updated_at: at });
  await pacerSaw(cls, id, at.$date);
  return at.$date;
}

const eventFor = (c, r, id, updatedAt) => c.all.find((x) => x && h.EVENT_OPS.includes(x.op) && x.requestId === r
  && x.object && x.object.objectId === id && (updatedAt === undefined || x.object.updatedAt === updatedAt));

/* Rewrites obj until every client in cs has an event for it (the role change
 * took effect). Returns {frames: [per client], ms: [per client latency]}. */
async function bumpUntilSeen(t0, cs, r, cls, id, timeout = 4000) {
  const deadline = performance.now() + timeout;
  const found = new Array(cs.length).fill(null);
  for (let k = 1; ; k++) {
    const at = await bump(cls, id, { n: 1000 + k });
    await h.sleep(20);
    cs.forEach((c, i) => { if (!found[i]) found[i] = eventFor(c, r, id, at) || null; });
    if (found.every(Boolean)) break;
    if (performance.now() > deadline) {
      throw new Error(`no event for ${id} reached ${cs.filter((_, i) => !found[i]).map((c) => c.label).join(', ')} within ${timeout} ms`);
    }
    await h.sleep(80);
  }
  return { frames: found, ms: cs.map((c, i) => arrival(c, found[i]) - t0) };
}

/* Rewrites obj and then a public marker until no client in cs receives obj's
 * event any more while each still receives the marker's. Returns the latency
 * per client (arrival of the first marker not preceded by obj). */
async function bumpUntilGone(t0, cs, r, cls, id, markerId, timeout = 4000) {
  const deadline = performance.now() + timeout;
  const gone = new Array(cs.length).fill(null);
  for (let k = 1; ; k++) {
    const atObj = await bump(cls, id, { n: 2000 + k });
    const atMark = await bump(cls, markerId, { n: 2000 + k });
    for (const [i, c] of cs.entries()) {
      if (gone[i] !== null) continue;
      const mark = await c.next((x) => x && x.requestId === r && x.object && x.object.objectId === markerId && x.object.updatedAt === atMark, 3000);
      if (!eventFor(c, r, id, atObj)) gone[i] = arrival(c, mark) - t0;
    }
    if (gone.every((x) => x !== null)) return gone;
    if (performance.now() > deadline) throw new Error(`${id} still delivered after ${timeout} ms`);
    await h.sleep(80);
  }
}

function record(what, ms, bound = BOUND_MS) {
  latencies.push({ what, ms, bound });
  console.log(`# latency ${what}: ${ms.toFixed(1)} ms (bound ${bound} ms)`);
  assert.ok(ms < bound, `${what}: ${ms.toFixed(1)} ms, over the ${bound} ms bound`);
}

/* ------------------------------------------------------------------ */
/* Scenarios                                                          */
/* ------------------------------------------------------------------ */

h.test('logout: deleting the _Session ends each of its subscriptions with 209, the socket stays usable', async () => {
  const c = await client({ sessionToken: S.lou.token });
  await c.subscribe(1, LIVE, {});
  await c.subscribe(2, CLPC, {});
  const at = await put(LIVE, 'ldLogout01', { n: 0 }, { read: ['role:staff'], write: [] });
  assert.equal((await c.event(1, 'ldLogout01')).object.updatedAt, at, 'lou reads role:staff objects before the logout');

  const t0 = performance.now();
  await A.revokeSession(stack.mongo, S.lou.id);
  const e1 = await A.errorFrame(c, 1, undefined, 3000);
  const e2 = await A.errorFrame(c, 2, undefined, 3000);
  assert.deepEqual(e1, A.ERR.session(1));
  assert.deepEqual(e2, A.ERR.session(2));
  record('logout -> 209 (rid 1)', arrival(c, e1) - t0);
  record('logout -> 209 (rid 2)', arrival(c, e2) - t0);

  // nothing afterwards, on either class, for any kind of object
  await bump(LIVE, 'ldLogout01', { n: 1 });
  await put(LIVE, 'ldLogout02', { n: 0 }, null);
  await put(CLPC, 'ccLogout01', { title: 't', secret: 's', n: 0 }, { read: ['role:staff'], write: [] });
  await c.none(300, (x) => x && x.op !== 'error');
  assert.equal(c.all.filter((x) => x && x.op === 'error').length, 2, 'exactly one 209 per subscription');
  assert.ok(c.isOpen, 'the socket stays open');

  // the same socket subscribes again with another session of the same user
  await c.subscribe(3, LIVE, {}, { sessionToken: S.lou2.token });
  const at2 = await bump(LIVE, 'ldLogout01', { n: 2 });
  assert.equal((await c.event(3, 'ldLogout01')).object.updatedAt, at2);
  // and the revoked token is refused from now on
  assert.deepEqual(await A.trySubscribe(c, 4, LIVE, {}, { sessionToken: S.lou.token }), A.ERR.session(4));
});

h.test('expiry: a session whose expiresAt passes while subscribed gets 209 within ~1.5 s', async () => {
  const ttl = 2500;
  const s = await A.createSession(stack.mongo, uid('exa'), { expiresAt: Date.now() + ttl });
  const c = await client();
  await c.subscribe(1, LIVE, {}, { sessionToken: s.token });
  const at = await put(LIVE, 'ldExpiry01', { n: 0 }, { read: ['role:staff'], write: [] });
  assert.equal((await c.event(1, 'ldExpiry01')).object.updatedAt, at, 'valid before expiresAt');

  const e = await A.errorFrame(c, 1, undefined, ttl + EXPIRY_BOUND_MS + 1000);
  const arrivedWall = Date.now() - (performance.now() - arrival(c, e));
  assert.deepEqual(e, A.ERR.session(1));
  assert.ok(arrivedWall >= s.expiresAt - 50, `209 came ${s.expiresAt - arrivedWall} ms before expiresAt`);
  record('expiresAt passed -> 209', arrivedWall - s.expiresAt, EXPIRY_BOUND_MS);

  await bump(LIVE, 'ldExpiry01', { n: 1 });
  await c.none(300, (x) => x && x.op !== 'error');
  assert.ok(c.isOpen);
});

h.test('role membership: adding a user to a role and removing it change the next events, no reconnect', async () => {
  const c = await client({ sessionToken: S.olga.token });
  c.label = 'olga';
  await c.subscribe(1, LIVE, {});
  await put(LIVE, 'ldMarker01', { n: 0 }, null); // public
  await c.event(1, 'ldMarker01');
  await put(LIVE, 'ldStaff001', { n: 0 }, { read: ['role:staff'], write: [] });
  await bump(LIVE, 'ldStaff001', { n: 1 });
  await c.none(300, (x) => x && x.object && x.object.objectId === 'ldStaff001');

  // add: olga joins staff
  let t0 = performance.now();
  const row = await A.addUserToRole(stack.mongo, 'rStaff0001', uid('olga'));
  const seen = await bumpUntilSeen(t0, [c], 1, LIVE, 'ldStaff001');
  const f = seen.frames[0];
  assert.equal(f.op, 'update', 'both states are readable under the new roles');
  assert.ok(f.original, 'update carries original');
  record('user added to role -> first event', seen.ms[0]);
  assert.ok(c.isOpen);

  // remove: olga leaves staff
  t0 = performance.now();
  await A.removeJoin(stack.mongo, row);
  const gone = await bumpUntilGone(t0, [c], 1, LIVE, 'ldStaff001', 'ldMarker01');
  record('user removed from role -> events stop', gone[0]);
  const cut = c.all.length;
  await bump(LIVE, 'ldStaff001', { n: 3000 });
  await bump(LIVE, 'ldMarker01', { n: 3000 });
  await c.event(1, 'ldMarker01');
  assert.equal(c.all.slice(cut).filter((x) => x && x.object && x.object.objectId === 'ldStaff001').length, 0,
    'no frame (not even a leave) for the object once the role is gone');
});

h.test('role inheritance: a role gaining and losing a parent reaches members of the child and its descendants', async () => {
  const cora = await client({ sessionToken: S.cora.token }); cora.label = 'cora (coordinator)';
  const max = await client({ sessionToken: S.max.token }); max.label = 'max (manager, via coordinator)';
  const sam = await client({ sessionToken: S.sam.token }); sam.label = 'sam (staff: the parent of coordinator)';
  for (const c of [cora, max, sam]) await c.subscribe(1, LIVE, {});
  await put(LIVE, 'ldMarker02', { n: 0 }, null);
  for (const c of [cora, max, sam]) await c.event(1, 'ldMarker02');
  await put(LIVE, 'ldAudit001', { n: 0 }, { read: ['role:auditor'], write: [] });
  for (const c of [cora, max, sam]) await c.none(200, (x) => x && x.object && x.object.objectId === 'ldAudit001');

  // auditor.roles gets coordinator: members of coordinator (and of manager, a child of coordinator) get role:auditor
  let t0 = performance.now();
  const row = await A.addRoleParent(stack.mongo, 'rAudit0001', 'rCoord0001');
  const seen = await bumpUntilSeen(t0, [cora, max], 1, LIVE, 'ldAudit001');
  record('role parent added -> coordinator member sees', seen.ms[0]);
  record('role parent added -> manager member (inherited) sees', seen.ms[1]);
  for (const fr of seen.frames) assert.equal(fr.op, 'update');
  await bump(LIVE, 'ldMarker02', { n: 1 });
  await sam.event(1, 'ldMarker02');
  assert.equal(sam.all.filter((x) => x && x.object && x.object.objectId === 'ldAudit001').length, 0,
    'staff is the parent of coordinator, not its child: no role:auditor for staff members');

  t0 = performance.now();
  await A.removeJoin(stack.mongo, row);
  const gone = await bumpUntilGone(t0, [cora, max], 1, LIVE, 'ldAudit001', 'ldMarker02');
  record('role parent removed -> coordinator member stops', gone[0]);
  record('role parent removed -> manager member stops', gone[1]);
});

h.test('CLP change: denied subscriptions get 119 and end, the others continue under the new protectedFields', async () => {
  const sam = await client({ sessionToken: S.sam.token });
  const cora = await client({ sessionToken: S.cora.token });
  const max = await client({ sessionToken: S.max.token });
  const olga = await client({ sessionToken: S.olga.token });
  await sam.subscribe(1, CLPC, {});
  await cora.subscribe(1, CLPC, {});
  await cora.subscribe(2, CLPC, { secret: { $exists: true } });
  await max.subscribe(1, CLPC, {});
  assert.deepEqual(await A.trySubscribe(olga, 1, CLPC, {}), A.ERR.clp(CLPC, 'find', 1), 'olga holds no role:staff');

  const at = await put(CLPC, 'ccSecret01', { title: 'plan', secret: 's1', n: 0 }, { read: ['role:staff'], write: [] });
  for (const [c, r] of [[sam, 1], [cora, 1], [cora, 2], [max, 1]]) {
    const f = await c.event(r, 'ccSecret01');
    assert.equal(f.object.updatedAt, at);
    assert.equal(f.object.secret, 's1', 'secret is not protected yet');
  }

  const t0 = performance.now();
  await A.setClp(stack.mongo, CLPC, CLP_AFTER);
  const es = await A.errorFrame(sam, 1, undefined, 3000);
  assert.deepEqual(es, A.ERR.clp(CLPC, 'find', 1), 'staff lost find');
  record('CLP change -> 119 for a subscription now denied', arrival(sam, es) - t0);
  const ec = await A.errorFrame(cora, 2, undefined, 3000);
  assert.deepEqual(ec, A.ERR.protected(2), 'a where on a field that is now protected');
  record('CLP change -> 119 for a where on a now-protected field', arrival(cora, ec) - t0);

  // cora's rid 1 continues without secret; max (role:manager) still sees it
  const deadline = performance.now() + 4000;
  let first = null;
  for (let k = 1; !first; k++) {
    const atk = await bump(CLPC, 'ccSecret01', { n: k });
    const f = await cora.next((x) => x && x.requestId === 1 && x.object && x.object.updatedAt === atk, 3000);
    if (!('secret' in f.object)) first = f;
    else if (performance.now() > deadline) throw new Error('secret still delivered to cora 4 s after the CLP change');
  }
  record('CLP change -> new protectedFields applied', arrival(cora, first) - t0);
  assert.equal(first.op, 'update');
  assert.ok(!('secret' in first.original), 'protected in original too');
  const atMax = await bump(CLPC, 'ccSecret01', { n: 100 });
  const fm = await max.next((x) => x && x.requestId === 1 && x.object && x.object.updatedAt === atMax, 3000);
  assert.equal(fm.object.secret, 's1', 'role:manager is exempt');
  assert.equal(fm.original.secret, 's1');
  const fc = await cora.next((x) => x && x.requestId === 1 && x.object && x.object.updatedAt === atMax, 3000);
  assert.ok(!('secret' in fc.object) && !('secret' in fc.original));

  // ended subscriptions stay ended
  await sam.none(300, (x) => x && h.EVENT_OPS.includes(x.op) && x.object && x.object.updatedAt > at);
  await cora.none(0, (x) => x && x.requestId === 2 && h.EVENT_OPS.includes(x.op) && x.object.updatedAt > at);
  assert.ok(sam.isOpen && cora.isOpen);
  // a new subscribe follows the new CLP
  assert.deepEqual(await A.trySubscribe(sam, 3, CLPC, {}), A.ERR.clp(CLPC, 'find', 3));
  assert.deepEqual(await A.trySubscribe(cora, 3, CLPC, { secret: 's1' }), A.ERR.protected(3));
  await max.subscribe(3, CLPC, { secret: 's1' });
});

h.test('deleting the _User revokes its sessions', async () => {
  const c = await client({ sessionToken: S.dan.token });
  await c.subscribe(1, LIVE, {});
  const t0 = performance.now();
  await stack.mongo.remove('_User', uid('dan'));
  const e = await A.errorFrame(c, 1, undefined, 3000);
  assert.deepEqual(e, A.ERR.session(1));
  record('_User deleted -> 209', arrival(c, e) - t0);
  await put(LIVE, 'ldDan00001', { n: 0 }, null);
  await c.none(300, (x) => x && x.op !== 'error');
});

h.test('latency summary', (t) => {
  const lines = latencies.map((l) => `${l.what.padEnd(58)} ${l.ms.toFixed(1).padStart(8)} ms  (< ${l.bound})`);
  for (const l of lines) t.diagnostic(l);
  console.log(['# auth invalidation latencies (write -> frame):', ...lines.map((l) => `#   ${l}`)].join('\n'));
});
