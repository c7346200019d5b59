'use strict';
/*
 * The security matrix: who receives what, decided by sessions, roles (with
 * inheritance), object ACLs, class-level permissions (CLP), pointer
 * permissions and protectedFields, end to end: writes go into the mock
 * MongoDB through its control API, livequeryd's tailer publishes them, its
 * gateway resolves sessions and roles from the same database.
 *
 * Data-driven. The tables below (users, roles, role inheritance, sessions,
 * subscribers, subscriptions, objects and their write scripts) feed a small
 * oracle written here from the rules (reference/parse-mongo-storage.md §2-§3,
 * parse-livequery.md §2 and §4, include/livequery/acl.h): it computes every
 * subscribe reply and every frame each subscriber must receive, without
 * asking the server anything. Then:
 *   1. every subscriber receives exactly the expected frames, per requestId,
 *      in order, compared whole (op, object, original or its absence);
 *   2. every frame any client ever received is scanned: no object or
 *      original its receiver may not read, no protected field, no
 *      sessionToken/authData but the user's own, no "_" key.
 * The CRM classes use the access rules shipped in examples/crm/schema.json.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const A = require('./authfix');

after(h.teardown);

/* ------------------------------------------------------------------ */
/* Test data                                                          */
/* ------------------------------------------------------------------ */

const ACL_CLASS = 'AclCase'; // no _SCHEMA document: no CLP, ACL decides alone
const CRM = ['SigningSchedule', 'BookStockLog', 'EventNote', 'PublisherContact'];
const CLASSES = (process.env.LQ_SECURITY_CLASSES || [ACL_CLASS, ...CRM, '_User'].join(',')).split(',');

const ROLES = [
  { id: 'rStaff0001', name: 'staff' },
  { id: 'rCoord0001', name: 'coordinator' },
  { id: 'rMgr000001', name: 'manager' },
];
/* [parent, child]: members of child get role:parent. rGhost0001 is no _Role:
 * the row contributes nothing (and must not crash anything). */
const PARENTS = [['rStaff0001', 'rCoord0001'], ['rCoord0001', 'rMgr000001'], ['rGhost0001', 'rStaff0001']];

const HOUR = 3600e3;
const USERS = {
  sam: { id: 'uSam000001', roles: ['rStaff0001'], acl: { read: ['*', 'uSam000001'], write: ['uSam000001'] } },
  cora: { id: 'uCora00001', roles: ['rCoord0001'] },
  max: { id: 'uMax000001', roles: ['rMgr000001'] },
  olga: { id: 'uOlga00001', roles: [] },
  eve: { id: 'uEve000001', roles: ['rStaff0001'] },
  rick: { id: 'uRick00001', roles: ['rStaff0001'] },
};
/* Sessions by name; expiresAt relative to the start (null: never expires). */
const SESSIONS = {
  sam: { user: 'sam', expiresIn: HOUR },
  cora: { user: 'cora', expiresIn: HOUR },
  max: { user: 'max', expiresIn: HOUR },
  olga: { user: 'olga', expiresIn: null },
  eve: { user: 'eve', expiresIn: -HOUR },
  rick: { user: 'rick', expiresIn: HOUR },
};

/* Subscribers. connectToken / subToken name a session ('bogus': unknown token). */
const SUBSCRIBERS = [
  { name: 'anon' },
  { name: 'staff', connectToken: 'sam' },
  { name: 'coord', subToken: 'cora' },                       // subscribe-level token only
  { name: 'manager', connectToken: 'olga', subToken: 'max' }, // subscribe-level wins over connect-level
  { name: 'other', connectToken: 'olga' },
  { name: 'expired', connectToken: 'eve' },
  { name: 'revoked', connectToken: 'rick', revokeAfterSubscribe: true },
  { name: 'badSubToken', connectToken: 'sam', subToken: 'bogus' }, // an invalid subscribe-level token is not skipped
  { name: 'bogusConnect', connectToken: 'bogus' },                  // connect is accepted with any token
  { name: 'master', master: true },
];

/* Every subscriber sends every one of these. */
const SUBSCRIPTIONS = [
  { rid: 1, className: ACL_CLASS, where: { status: 'open' } },
  { rid: 2, className: 'SigningSchedule', where: { status: 'confirmed' } },
  { rid: 3, className: 'BookStockLog', where: {} },
  { rid: 4, className: 'EventNote', where: {} },
  { rid: 5, className: 'PublisherContact', where: {} },
  { rid: 6, className: 'PublisherContact', where: { objectId: 'pc00000001' } },     // CLP op "get"
  { rid: 7, className: 'BookStockLog', where: { restockThreshold: { $gt: 0 } } },  // a protected field in where
  { rid: 8, className: 'BookStockLog', where: {}, watch: ['notes'] },             // a protected field in watch
  { rid: 9, className: '_User', where: {} },                                      // requiresAuthentication
  { rid: 10, className: 'EventNote', where: { objectId: 'en00000001' } },          // "get" on a pointer-permission class
];

/* The Parse JS SDK client: sam's token at connect; its subscriptions. */
const SDK_SUBSCRIPTIONS = [
  { rid: 'sdk1', className: ACL_CLASS, where: { status: 'open' } },
  { rid: 'sdk2', className: 'SigningSchedule', where: { status: 'confirmed' } },
];

const U = Object.fromEntries(Object.entries(USERS).map(([k, v]) => [k, v.id]));

/* AclCase objects: [id, what, ACL a, ACL b]. Each runs the same script:
 * create (a) / update n (visible -> visible) / ACL a->b (access lost for some,
 * gained for others) / ACL b->a / leave the query / enter it again / delete.
 * ACL: null = no ACL stored (public); {read, write} lists. */
const ACL_CASES = [
  ['aclPub0001', 'public (no ACL)', null, { read: ['role:coordinator'], write: [] }],
  ['aclStar001', 'public ("*")', { read: ['*'], write: [U.sam] }, { read: [U.cora], write: [U.sam] }],
  ['aclUser001', 'one user', { read: [U.sam], write: [U.sam] }, { read: [U.olga], write: [U.olga] }],
  ['aclRole001', 'one role', { read: ['role:staff'], write: [] }, { read: ['role:manager'], write: [] }],
  ['aclInh0001', 'inherited role', { read: ['role:coordinator'], write: [] }, { read: ['role:staff'], write: [] }],
  ['aclMgr0001', 'top role (direction)', { read: ['role:manager'], write: [] }, { read: ['*'], write: [] }],
  ['aclNone001', 'no read {}', { read: [], write: [] }, { read: [U.sam, 'role:manager'], write: [] }],
  ['aclOther01', 'unrelated user', { read: [U.olga], write: [] }, { read: [], write: [] }],
];

const STAFF_ACL = { read: ['role:staff'], write: ['role:coordinator'] };

/* The write script. Steps: ['ins', class, id, fields, acl] | ['upd', class, id, set, acl?]
 * ('acl' key in upd: change the ACL; null removes it) | ['del', class, id]. */
function buildSteps() {
  const s = [];
  for (const [id, what, a, b] of ACL_CASES) {
    s.push(['ins', ACL_CLASS, id, { kind: what, status: 'open', n: 0 }, a]);
    s.push(['upd', ACL_CLASS, id, { n: 1 }]);
    s.push(['upd', ACL_CLASS, id, {}, b]);
    s.push(['upd', ACL_CLASS, id, { n: 2 }, a]);
    s.push(['upd', ACL_CLASS, id, { status: 'closed' }]);
    s.push(['upd', ACL_CLASS, id, { status: 'open' }]);
    s.push(['del', ACL_CLASS, id]);
  }
  const sig = {
    bookTitle: 'The Winter Orchard', authorName: 'Nadia Reyes', eventDate: { $date: '2026-12-12T18:00:00.000Z' },
    location: 'Main Street store', _p_publisherContact: 'PublisherContact$pc00000001', status: 'confirmed',
    _p_staffLead: `_User$${U.sam}`, attendeeCount: 80,
  };
  s.push(['ins', 'SigningSchedule', 'sig0000001', sig, STAFF_ACL]);
  s.push(['upd', 'SigningSchedule', 'sig0000001', { attendeeCount: 95 }]);
  s.push(['upd', 'SigningSchedule', 'sig0000001', { status: 'tentative' }]);
  s.push(['upd', 'SigningSchedule', 'sig0000001', { status: 'confirmed' }]);
  s.push(['upd', 'SigningSchedule', 'sig0000001', {}, { read: ['role:coordinator'], write: ['role:coordinator'] }]);
  s.push(['upd', 'SigningSchedule', 'sig0000001', { attendeeCount: 96 }, STAFF_ACL]);
  s.push(['del', 'SigningSchedule', 'sig0000001']);
  s.push(['ins', 'SigningSchedule', 'sig0000002', { ...sig, bookTitle: 'Salt and Signal', _p_staffLead: `_User$${U.cora}` }, null]);
  s.push(['upd', 'SigningSchedule', 'sig0000002', { location: 'Harbor branch' }]);
  s.push(['del', 'SigningSchedule', 'sig0000002']);

  const stock = {
    isbn: '978-1-4028-9462-6', bookTitle: 'The Winter Orchard', quantityOnHand: 120, quantityReserved: 30,
    restockThreshold: 5, lastCountedAt: { $date: '2026-11-30T17:00:00.000Z' }, _p_recordedBy: `_User$${U.sam}`,
    _p_signingSchedule: 'SigningSchedule$sig0000001', notes: 'Invoice HH-2291: 46% trade discount',
  };
  s.push(['ins', 'BookStockLog', 'bsl0000001', stock, { read: ['role:staff'], write: ['role:staff'] }]);
  s.push(['upd', 'BookStockLog', 'bsl0000001', { quantityOnHand: 118 }]);
  s.push(['upd', 'BookStockLog', 'bsl0000001', { notes: 'Invoice HH-2291: 48% after the re-order' }]);
  s.push(['upd', 'BookStockLog', 'bsl0000001', { restockThreshold: 0 }]);
  s.push(['upd', 'BookStockLog', 'bsl0000001', { restockThreshold: 3 }]);
  s.push(['del', 'BookStockLog', 'bsl0000001']);

  const note = (author, title) => ({ title, body: 'v1', _p_schedule: 'SigningSchedule$sig0000001', _p_author: `_User$${author}` });
  s.push(['ins', 'EventNote', 'en00000001', note(U.sam, 'by sam'), { read: ['role:staff'], write: [U.sam] }]);
  s.push(['ins', 'EventNote', 'en00000002', note(U.olga, 'by olga'), { read: [U.olga, 'role:staff'], write: [U.olga] }]);
  s.push(['ins', 'EventNote', 'en00000003', note(U.cora, 'by cora, managers only'), { read: ['role:manager'], write: [U.cora] }]);
  for (const id of ['en00000001', 'en00000002', 'en00000003']) s.push(['upd', 'EventNote', id, { body: 'v2' }]);
  s.push(['upd', 'EventNote', 'en00000001', {}, { read: ['role:manager'], write: [U.sam] }]);
  s.push(['upd', 'EventNote', 'en00000001', { body: 'v3' }, { read: ['role:staff'], write: [U.sam] }]);
  for (const id of ['en00000001', 'en00000002', 'en00000003']) s.push(['del', 'EventNote', id]);

  const contact = (name) => ({
    publisherName: name, contactName: 'Lena Ortiz', email: 'lena@harbor.example', phone: '+1 555 0142',
    bookTitles: ['The Winter Orchard'], _p_owner: `_User$${U.max}`, notes: 'co-op budget 1,200 USD',
  });
  s.push(['ins', 'PublisherContact', 'pc00000001', contact('Harbor House Press'), STAFF_ACL]);
  s.push(['ins', 'PublisherContact', 'pc00000002', contact('Quill & Ink'), STAFF_ACL]);
  s.push(['upd', 'PublisherContact', 'pc00000001', { phone: '+1 555 0143' }]);
  s.push(['upd', 'PublisherContact', 'pc00000002', { phone: '+1 555 0199' }]);
  s.push(['del', 'PublisherContact', 'pc00000001']);

  s.push(['ins', '_User', 'uNina00001', {
    username: 'nina', email: 'nina@bookstore.example', emailVerified: false, role: 'staff',
    _hashed_password: '$2y$10$abcdefghijklmnopqrstuuW8Yx2oFq0vB0lCq8l8v5r1rPmQeW3a', _session_token: 'r:legacy0000000000000000000000001',
    _auth_data_facebook: { id: 'fb-1', access_token: 'secret-token' },
  }, { read: ['*', 'uNina00001'], write: ['uNina00001'] }]);
  s.push(['upd', '_User', 'uNina00001', { emailVerified: true }]);
  s.push(['upd', '_User', U.sam, { role: 'senior staff' }]);
  s.push(['upd', '_User', U.cora, { role: 'lead coordinator' }]);
  s.push(['del', '_User', 'uNina00001']);
  return s;
}

/* ------------------------------------------------------------------ */
/* The oracle                                                         */
/* ------------------------------------------------------------------ */

const SCHEMA = A.crmSchema();
const CLP = Object.fromEntries(SCHEMA.map((d) => [d._id, d._metadata.class_permissions]));
const POINTER_FIELDS = Object.fromEntries(SCHEMA.map((d) => [d._id,
  Object.entries(d).filter(([, t]) => typeof t === 'string' && t.startsWith('*')).map(([f]) => f)]));
const MEMBERS = Object.values(USERS).flatMap((u) => u.roles.map((r) => [r, u.id]));

/* role:<name> for every role the user holds: direct memberships, then parents
 * of the roles found, repeatedly (Parse Auth.js). Rows naming no role count
 * for nothing. */
function rolesOf(uid) {
  const name = new Map(ROLES.map((r) => [r.id, r.name]));
  const held = new Set();
  let frontier = MEMBERS.filter(([, u]) => u === uid).map(([r]) => r).filter((r) => name.has(r));
  while (frontier.length) {
    const next = [];
    for (const r of frontier) {
      if (held.has(r)) continue;
      held.add(r);
      for (const [p, c] of PARENTS) if (c === r && name.has(p) && !held.has(p)) next.push(p);
    }
    frontier = next;
  }
  return [...held].map((r) => `role:${name.get(r)}`).sort();
}

const MASTER = { master: true, uid: null, roles: [], group: new Set(['*']) };
const ANON = { master: false, uid: null, roles: [], group: new Set(['*']) };
function userPrincipal(key) {
  const uid = USERS[key].id;
  const roles = rolesOf(uid);
  return { master: false, uid, key, roles, group: new Set(['*', uid, ...roles]) };
}

/* Session table with absolute times, filled in before(). */
let NOW0 = 0;
function sessionValid(name) {
  const s = SESSIONS[name];
  if (!s) return false;
  return s.expiresIn === null || NOW0 + s.expiresIn > Date.now();
}

/* The principal a subscription acts as: 'invalid' for a bad token. */
function principalFor(sub) {
  if (sub.master) return MASTER;
  const tok = sub.subToken || sub.connectToken;
  if (!tok) return ANON;
  if (!sessionValid(tok)) return 'invalid';
  return userPrincipal(SESSIONS[tok].user);
}

function canReadAcl(p, acl) {
  if (p.master || acl === undefined || acl === null) return true;
  return Object.entries(acl).some(([k, v]) => v && v.read === true && p.group.has(k));
}

/* Parse validatePermission + pointer restriction (acl.h lq_clp_check). */
function clpVerdict(className, op, p) {
  const clp = CLP[className];
  if (p.master || !clp) return { v: 'allow' };
  const perms = clp[op] && typeof clp[op] === 'object' ? clp[op] : {};
  if (perms['*']) return { v: 'allow' };
  for (const e of p.group) if (e !== '*' && perms[e] === true) return { v: 'allow' };
  const fields = [...new Set([...(perms.pointerFields || []), ...(clp.readUserFields || [])])];
  if (perms.requiresAuthentication) {
    if (!p.uid) return { v: 'auth' };
    return fields.length ? { v: 'pointer', fields } : { v: 'allow' };
  }
  if (fields.length) {
    if (!p.uid && op === 'get') return { v: 'auth' };
    return { v: 'pointer', fields };
  }
  return { v: 'forbidden' };
}

/* Fields hidden from p in every object of the class (Parse addProtectedFields). */
function protectedStatic(className, where, p) {
  if (p.master) return [];
  if (p.uid && typeof where.objectId === 'string' && where.objectId === p.uid) return [];
  const pf = { ...((CLP[className] && CLP[className].protectedFields) || {}) };
  if (className === '_User') pf['*'] = [...new Set([...(pf['*'] || []), 'email'])];
  const tiers = [];
  if (pf['*']) tiers.push(pf['*']);
  if (p.uid) {
    if (pf.authenticated) tiers.push(pf.authenticated);
    for (const r of p.roles) if (pf[r]) tiers.push(pf[r]);
    if (pf[p.uid]) tiers.push(pf[p.uid]);
  }
  if (!tiers.length) return [];
  return tiers.reduce((acc, t) => acc.filter((f) => t.includes(f))).sort();
}

/* ...plus the per-object rules for _User. */
function hiddenFor(sub, obj) {
  let hidden = [...sub.hidden];
  if (obj.className === '_User') {
    if (sub.p.uid && obj.objectId === sub.p.uid) return [];
    if (!sub.p.master) hidden = [...new Set([...hidden, 'sessionToken', 'authData'])];
  }
  return hidden;
}

function usesField(where, watch, hidden) {
  const top = (k) => k.split('.')[0];
  const walk = (w) => Object.entries(w || {}).some(([k, v]) => {
    if (k === '$or' || k === '$and' || k === '$nor') return Array.isArray(v) && v.some(walk);
    return hidden.includes(top(k));
  });
  return walk(where) || (watch || []).some((f) => hidden.includes(top(f)));
}

/* The reply to one subscribe: {frame} for errors, plus the live subscription
 * ({p, verdict, hidden}) when it is accepted. */
function subscribeOutcome(subscriber, s) {
  const p = principalFor(subscriber);
  if (p === 'invalid') return { error: A.ERR.session(s.rid) };
  const op = Object.keys(s.where).length === 1 && typeof s.where.objectId === 'string' ? 'get' : 'find';
  const verdict = clpVerdict(s.className, op, p);
  if (verdict.v === 'forbidden') return { error: A.ERR.clp(s.className, op, s.rid) };
  if (verdict.v === 'auth') return { error: A.ERR.auth(s.rid) };
  const hidden = protectedStatic(s.className, s.where, p);
  if (usesField(s.where, s.watch, hidden)) return { error: A.ERR.protected(s.rid) };
  return { live: { ...s, p, verdict, hidden } };
}

function matches(where, o) {
  return Object.entries(where).every(([k, c]) => {
    const v = o[k];
    if (c !== null && typeof c === 'object' && !Array.isArray(c) && !c.__type) {
      return Object.entries(c).every(([op, x]) => {
        if (op === '$gt') return v !== undefined && v > x;
        if (op === '$exists') return (v !== undefined) === x;
        throw new Error(`oracle: unsupported operator ${op}`);
      });
    }
    return v === c;
  });
}

function pointerOk(live, o) {
  if (live.verdict.v !== 'pointer') return true;
  if (!live.p.uid) return false;
  return live.verdict.fields.some((f) => {
    const v = o[f];
    const isMe = (x) => x && x.__type === 'Pointer' && x.className === '_User' && x.objectId === live.p.uid;
    return isMe(v) || (Array.isArray(v) && v.some(isMe));
  });
}

const readable = (live, o) => canReadAcl(live.p, o.ACL) && pointerOk(live, o);
const visible = (live, o) => !!o && matches(live.where, o) && readable(live, o);

function project(live, o) {
  const hidden = hiddenFor(live, o);
  const out = {};
  for (const [k, v] of Object.entries(o)) if (!hidden.includes(k)) out[k] = v;
  return out;
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

/* The frame one live subscription gets for a change, or null. */
function frameFor(live, clientId, ch) {
  const base = { clientId, requestId: live.rid };
  if (ch.op === 'delete') {
    return visible(live, ch.before) ? { op: 'delete', ...base, object: project(live, ch.before) } : null;
  }
  const bv = visible(live, ch.before);
  const av = visible(live, ch.after);
  if (bv && av) {
    if (live.watch && !live.watch.some((f) => !same(ch.after[f], ch.before[f]))) return null;
    return { op: 'update', ...base, object: project(live, ch.after), original: project(live, ch.before) };
  }
  if (bv && !av) {
    if (matches(live.where, ch.after) && !readable(live, ch.after)) {
      return { op: 'leave', ...base, object: project(live, ch.before) }; // read access lost
    }
    return { op: 'leave', ...base, object: project(live, ch.after), original: project(live, ch.before) };
  }
  if (!bv && av) {
    if (!ch.before) {
      if (live.watch && !live.watch.some((f) => ch.after[f] !== undefined)) return null;
      return { op: 'create', ...base, object: project(live, ch.after) };
    }
    if (matches(live.where, ch.before) && !readable(live, ch.before)) {
      return { op: 'enter', ...base, object: project(live, ch.after) }; // read access gained
    }
    return { op: 'enter', ...base, object: project(live, ch.after), original: project(live, ch.before) };
  }
  return null;
}

/* ------------------------------------------------------------------ */
/* The world: stored documents and their REST JSON                    */
/* ------------------------------------------------------------------ */

/* REST JSON the tailer makes of a stored document (reference §1). */
function restOf(className, doc) {
  const ptr = POINTER_FIELDS[className] || [];
  const out = { objectId: doc._id, className };
  if (doc._created_at) out.createdAt = doc._created_at.$date;
  if (doc._updated_at) out.updatedAt = doc._updated_at.$date;
  const acl = A.restAcl(doc);
  if (acl) out.ACL = acl;
  for (const [k, v] of Object.entries(doc)) {
    if (k.startsWith('_p_')) {
      const f = k.slice(3);
      if (!ptr.includes(f)) continue;
      const i = v.indexOf('$');
      out[f] = { __type: 'Pointer', className: v.slice(0, i), objectId: v.slice(i + 1) };
    } else if (k.startsWith('_')) {
      continue;
    } else if (v && typeof v === 'object' && v.$date) {
      out[k] = { __type: 'Date', iso: v.$date };
    } else {
      out[k] = v;
    }
  }
  return out;
}

class World {
  constructor() {
    this.docs = new Map();   // "class/id" -> stored doc (extended JSON)
    this.states = new Map(); // "class/id/updatedAt" -> REST JSON (every state ever written)
    this.clock = Date.parse('2026-12-01T09:00:00.000Z');
  }
  key(c, id) { return `${c}/${id}`; }
  remember(c, doc) {
    const r = restOf(c, doc);
    this.states.set(`${c}/${r.objectId}/${r.updatedAt}`, r);
    return r;
  }
  seed(c, doc) { this.docs.set(this.key(c, doc._id), doc); this.remember(c, doc); }
  /* Applies one step to the model. Returns {change, write} where write is
   * the control-API call to make. */
  apply(step) {
    const [kind, c, id] = step;
    const k = this.key(c, id);
    const before = this.docs.get(k);
    if (kind === 'del') {
      this.docs.delete(k);
      return { change: { op: 'delete', className: c, before: restOf(c, before) }, write: (m) => m.remove(c, id) };
    }
    this.clock += 1000;
    const now = A.xdate(this.clock);
    if (kind === 'ins') {
      const [, , , fields, acl] = step;
      const doc = { _id: id, ...fields, ...A.aclFields(acl), _created_at: now, _updated_at: now };
      this.docs.set(k, doc);
      return { change: { op: 'create', className: c, before: null, after: this.remember(c, doc) }, write: (m) => m.insert(c, doc) };
    }
    const [, , , set, acl] = step;
    const doc = { ...before, ...set, _updated_at: now };
    const $set = { ...set, _updated_at: now };
    const unset = [];
    if (step.length > 4) {
      if (acl === null) {
        for (const f of ['_rperm', '_wperm', '_acl']) { delete doc[f]; unset.push(f); }
      } else {
        Object.assign(doc, A.aclFields(acl));
        Object.assign($set, A.aclFields(acl));
      }
    }
    this.docs.set(k, doc);
    return {
      change: { op: 'update', className: c, before: restOf(c, before), after: this.remember(c, doc) },
      write: (m) => m.update(c, id, $set, unset),
    };
  }
}

/* ------------------------------------------------------------------ */
/* The run                                                            */
/* ------------------------------------------------------------------ */

let stack; let world; let tokens;

before(async () => {
  NOW0 = Date.now();
  world = new World();
  tokens = {};
  stack = await A.startAuthStack({
    classes: CLASSES,
    seed: async (mongo) => {
      await A.seedSchema(mongo, SCHEMA);
      for (const r of ROLES) await mongo.insert('_Role', A.roleDoc(r));
      for (const [key, u] of Object.entries(USERS)) {
        const doc = A.userDoc({
          id: u.id, username: key, email: `${key}@bookstore.example`, role: 'staff', acl: u.acl,
          extra: { _hashed_password: '$2y$10$notarealhashnotarealhashnotarealhashnotarealhashnot', _auth_data_facebook: { id: `fb-${key}` } },
        });
        await mongo.insert('_User', doc);
        world.seed('_User', doc);
      }
      for (const [r, u] of MEMBERS) await A.addUserToRole(mongo, r, u);
      for (const [p, c] of PARENTS) await A.addRoleParent(mongo, p, c);
      for (const [name, s] of Object.entries(SESSIONS)) {
        const made = await A.createSession(mongo, USERS[s.user].id, { expiresAt: s.expiresIn === null ? null : NOW0 + s.expiresIn });
        tokens[name] = made;
      }
    },
  });
  /* the gateway knows the CRM's CLPs once an anonymous subscribe is refused */
  for (const c of ['PublisherContact', 'SigningSchedule', 'BookStockLog']) await A.waitClpKnown(stack.gw, c);
  await A.waitClpKnown(stack.gw, 'EventNote', { where: { objectId: 'x' }, code: 101 });
  await A.waitClpKnown(stack.gw, '_User', { code: 101 });
});

function tokenOf(name) {
  if (name === 'bogus') return A.sessionToken();
  return tokens[name].token;
}

/* The independent oracle agrees with the rules as written down (guards the
 * oracle itself against a shared misunderstanding of the direction of
 * _Join:roles:_Role, of the CRM rules and of protectedFields). */
h.test('oracle sanity: role inheritance and the CRM rules as documented', () => {
  assert.deepEqual(rolesOf(U.sam), ['role:staff']);
  assert.deepEqual(rolesOf(U.cora), ['role:coordinator', 'role:staff']);
  assert.deepEqual(rolesOf(U.max), ['role:coordinator', 'role:manager', 'role:staff']);
  assert.deepEqual(rolesOf(U.olga), []);
  const staff = userPrincipal('sam'); const coord = userPrincipal('cora'); const mgr = userPrincipal('max');
  assert.deepEqual(protectedStatic('BookStockLog', {}, staff), ['notes', 'restockThreshold']);
  assert.deepEqual(protectedStatic('BookStockLog', {}, coord), ['notes', 'restockThreshold']);
  assert.deepEqual(protectedStatic('BookStockLog', {}, mgr), []);
  assert.deepEqual(protectedStatic('SigningSchedule', {}, staff), ['publisherContact']);
  assert.deepEqual(protectedStatic('SigningSchedule', {}, coord), []);
  assert.deepEqual(protectedStatic('_User', {}, staff), ['email']);
  assert.deepEqual(protectedStatic('_User', {}, mgr), []);
  assert.equal(clpVerdict('PublisherContact', 'find', coord).v, 'forbidden');
  assert.equal(clpVerdict('PublisherContact', 'find', mgr).v, 'allow');
  assert.equal(clpVerdict('EventNote', 'find', staff).v, 'pointer');
  assert.equal(clpVerdict('EventNote', 'find', mgr).v, 'allow');
  assert.equal(clpVerdict('EventNote', 'get', ANON).v, 'auth');
  assert.equal(clpVerdict('SigningSchedule', 'find', userPrincipal('olga')).v, 'forbidden');
  assert.equal(clpVerdict('_User', 'find', ANON).v, 'auth');
});

h.test('security matrix: subscribe replies, deliveries and a scan of every frame', async (t) => {
  const { gw, mongo } = stack;
  const url = gw.url;

  /* the pacer: a master-key client that sees every write of every class; each
   * write waits for its event, so the tailer's update lookups are exact and
   * the oracle's order is the gateway's order */
  const pacer = await h.wsClient(url);
  await pacer.connect({ masterKey: h.MASTER_KEY });
  const pacerRid = {};
  let prid = 100;
  for (const c of CLASSES) { pacerRid[c] = ++prid; await pacer.subscribe(prid, c, {}); }

  /* 1. connect every subscriber and send every subscription */
  const clients = {};
  const lives = {};  // subscriber name -> Map(rid -> live subscription)
  const errorsWanted = {}; // subscriber name -> every error frame it must receive
  let nReplies = 0;
  for (const sub of SUBSCRIBERS) {
    const c = await h.wsClient(url);
    const extra = {};
    if (sub.master) extra.masterKey = h.MASTER_KEY;
    if (sub.connectToken) extra.sessionToken = tokenOf(sub.connectToken);
    await c.connect(extra); // accepted whatever the token
    clients[sub.name] = c;
    lives[sub.name] = new Map();
    errorsWanted[sub.name] = [];
    const subToken = sub.subToken ? tokenOf(sub.subToken) : undefined;
    for (const s of SUBSCRIPTIONS) {
      const want = subscribeOutcome(sub, s);
      const got = await A.trySubscribe(c, s.rid, s.className, s.where, { watch: s.watch, sessionToken: subToken });
      nReplies++;
      if (want.error) {
        errorsWanted[sub.name].push(want.error);
        assert.deepEqual(got, want.error, `${sub.name} subscribe ${s.rid} (${s.className} ${JSON.stringify(s.where)})`);
      } else {
        assert.deepEqual(got, c.expectedReply('subscribed', s.rid), `${sub.name} subscribe ${s.rid} (${s.className} ${JSON.stringify(s.where)})`);
        lives[sub.name].set(s.rid, { ...want.live, name: sub.name });
      }
    }
  }

  /* the SDK client: stock parse/node with sam's token at connect */
  const P = h.Parse();
  const sdk = h.sdkClient(url, { sessionToken: tokenOf('sam') });
  await h.withTimeout(sdk.ready, 5000, 'SDK open');
  const sdkSubs = {};
  const sdkLives = new Map();
  for (const s of SDK_SUBSCRIPTIONS) {
    const q = new P.Query(s.className);
    for (const [k, v] of Object.entries(s.where)) q.equalTo(k, v);
    const sub = sdk.client.subscribe(q);
    sdkSubs[s.rid] = h.recordSubscription(sub, `sdk ${s.rid}`);
    await h.withTimeout(sub.subscribePromise, 5000, `SDK subscribed ${s.rid}`);
    const want = subscribeOutcome({ connectToken: 'sam' }, s);
    assert.ok(want.live, `oracle: sam may subscribe ${s.rid}`);
    sdkLives.set(s.rid, { ...want.live, name: 'sdk' });
  }
  assert.equal(sdk.errors.length, 0, `SDK errors: ${sdk.errors.map(String).join('; ')}`);

  /* 2. revoke a session that is in use: one 209 per live subscription */
  for (const sub of SUBSCRIBERS.filter((x) => x.revokeAfterSubscribe)) {
    const c = clients[sub.name];
    const rids = [...lives[sub.name].keys()];
    assert.ok(rids.length > 0, `${sub.name} has live subscriptions to lose`);
    await A.revokeSession(mongo, tokens[sub.connectToken].id);
    for (const rid of rids) {
      assert.deepEqual(await A.errorFrame(c, rid, 209, 3000), A.ERR.session(rid), `${sub.name} ${rid}`);
      errorsWanted[sub.name].push(A.ERR.session(rid));
    }
    lives[sub.name].clear();
    assert.ok(c.isOpen, 'the socket stays open after a revoked session');
  }

  /* 3. the writes, with the oracle's expectations */
  const expected = {}; // "name rid" -> [frames]
  const push = (name, rid, f) => { (expected[`${name} ${rid}`] ||= []).push(f); };
  for (const sub of SUBSCRIBERS) for (const s of SUBSCRIPTIONS) expected[`${sub.name} ${s.rid}`] = [];
  for (const s of SDK_SUBSCRIPTIONS) expected[`sdk ${s.rid}`] = [];
  const steps = buildSteps();
  for (const step of steps) {
    const { change, write } = world.apply(step);
    for (const sub of SUBSCRIBERS) {
      for (const live of lives[sub.name].values()) {
        if (live.className !== change.className) continue;
        const f = frameFor(live, clients[sub.name].clientId, change);
        if (f) push(sub.name, live.rid, f);
      }
    }
    for (const live of sdkLives.values()) {
      if (live.className !== change.className) continue;
      const f = frameFor(live, 'sdk', change);
      if (f) push('sdk', live.rid, f);
    }
    await write(mongo);
    const rid = pacerRid[change.className];
    const pred = (x) => x && x.requestId === rid && x.object && x.object.objectId === step[2]
      && (change.op === 'delete' ? x.op === 'delete' : x.object.updatedAt === change.after.updatedAt);
    pred.description = `pacer event for ${step.slice(0, 3).join(' ')}`;
    await pacer.next(pred, 5000);
  }

  /* 4. every subscriber received exactly its frames */
  const eventsOf = (c, rid) => c.all.filter((x) => x && h.EVENT_OPS.includes(x.op) && x.requestId === rid);
  await h.waitFor(() => SUBSCRIBERS.every((sub) => SUBSCRIPTIONS.every((s) => eventsOf(clients[sub.name], s.rid).length >= expected[`${sub.name} ${s.rid}`].length))
    && SDK_SUBSCRIPTIONS.every((s) => sdkSubs[s.rid].all.length >= expected[`sdk ${s.rid}`].length),
  { timeout: 5000, what: 'every expected frame' }).catch(() => {}); // the exact comparison below says what is missing
  await h.sleep(500); // nothing more may arrive

  let nFrames = 0;
  for (const sub of SUBSCRIBERS) {
    const c = clients[sub.name];
    for (const s of SUBSCRIPTIONS) {
      const want = expected[`${sub.name} ${s.rid}`];
      const got = eventsOf(c, s.rid);
      nFrames += want.length;
      compareFrames(`${sub.name} rid ${s.rid} (${s.className} ${JSON.stringify(s.where)}${s.watch ? ` watch ${s.watch}` : ''})`, got, want);
    }
    const order = (a) => a.map((x) => JSON.stringify(sortKeys(x))).sort();
    assert.deepEqual(order(c.all.filter((x) => x && x.op === 'error')), order(errorsWanted[sub.name]),
      `${sub.name}: exactly the expected error frames (subscribe replies and revocations), nothing else`);
    assert.deepEqual(c.all.filter((x) => !x || typeof x !== 'object' || !['connected', 'subscribed', 'error', ...h.EVENT_OPS].includes(x.op)), [],
      `${sub.name}: unexpected frames`);
  }

  /* the SDK saw the same events as the raw staff client would */
  for (const s of SDK_SUBSCRIPTIONS) {
    const want = expected[`sdk ${s.rid}`];
    const got = sdkSubs[s.rid].all;
    const brief = (op, o, orig) => `${op} ${o.objectId || o.id} ${orig ? 'with' : 'without'} original`;
    assert.deepEqual(got.map((e) => brief(e.op, e.object, e.original)), want.map((f) => brief(f.op, f.object, f.original)), `SDK ${s.rid}`);
    for (const [i, e] of got.entries()) {
      const w = want[i];
      assert.equal(e.object.updatedAt.toISOString(), w.object.updatedAt, `SDK ${s.rid} #${i} state`);
      for (const k of ['publisherContact', 'restockThreshold', 'notes']) {
        assert.equal(e.object.has(k), false, `SDK ${s.rid} #${i}: protected field ${k} reached the SDK`);
        if (e.original) assert.equal(e.original.has(k), false, `SDK ${s.rid} #${i}: protected ${k} in original`);
      }
      if (s.className === 'SigningSchedule') assert.equal(e.object.get('attendeeCount'), w.object.attendeeCount);
      if (s.className === ACL_CLASS) assert.equal(e.object.get('n'), w.object.n);
    }
  }
  assert.equal(sdk.errors.length, 0, `SDK errors: ${sdk.errors.map(String).join('; ')}`);

  /* 5. scan every frame every client ever received */
  let nScanned = 0;
  for (const sub of SUBSCRIBERS) {
    const all = new Map(SUBSCRIPTIONS.map((s) => {
      const o = subscribeOutcome(sub, s);
      return [s.rid, o.live ? { ...o.live, name: sub.name } : null];
    }));
    nScanned += scanFrames(sub.name, clients[sub.name].all, all);
  }
  nScanned += scanFrames('pacer', pacer.all, new Map(CLASSES.map((c) => [pacerRid[c], { p: MASTER, verdict: { v: 'allow' }, hidden: [], where: {} }])));
  for (const s of SDK_SUBSCRIPTIONS) {
    const live = sdkLives.get(s.rid);
    for (const e of sdkSubs[s.rid].all) {
      scanObject(`sdk ${s.rid}`, live, { ...e.object.toJSON(), className: s.className });
      if (e.original) scanObject(`sdk ${s.rid} original`, live, { ...e.original.toJSON(), className: s.className });
      nScanned++;
    }
  }

  const dims = `${SUBSCRIBERS.length} raw subscribers + 1 SDK client x ${SUBSCRIPTIONS.length} subscriptions `
    + `(${nReplies} subscribe replies checked), ${steps.length} writes over ${CLASSES.length} classes, `
    + `${nFrames} expected raw frames compared, ${nScanned} frames scanned`;
  t.diagnostic(dims);
  console.log(`# security matrix: ${dims}`);
});

/* Parse Server's own afterSave payloads for _User can carry sessionToken and
 * authData (the tailer never publishes them): only the user and the master
 * key may receive them; email only the user, managers and the master key. */
h.test('_User from Parse Server: sessionToken and authData only to the user and master; email hidden', async () => {
  const { gw, pub } = stack;
  const who = { sam: userPrincipal('sam'), cora: userPrincipal('cora'), max: userPrincipal('max'), master: MASTER };
  const clients = {};
  const lives = {};
  for (const [name, p] of Object.entries(who)) {
    const c = await h.wsClient(gw.url);
    await c.connect(name === 'master' ? { masterKey: h.MASTER_KEY } : { sessionToken: tokens[name].token });
    await c.subscribe(1, '_User', {});
    clients[name] = c;
    lives[name] = { rid: 1, className: '_User', where: {}, p, verdict: { v: 'allow' }, hidden: protectedStatic('_User', {}, p) };
  }
  const t1 = '2026-12-01T12:00:00.000Z'; const t2 = '2026-12-01T12:00:01.000Z';
  const samRec = {
    objectId: U.sam, className: '_User', createdAt: t1, updatedAt: t1, username: 'sam', email: 'sam@bookstore.example',
    role: 'staff', sessionToken: 'r:00000000000000000000000000000abc', authData: { facebook: { id: 'fb-sam', access_token: 'secret' } },
    ACL: { '*': { read: true }, [U.sam]: { read: true, write: true } },
  };
  const samNext = { ...samRec, updatedAt: t2, role: 'senior staff' };
  for (const o of [samRec, samNext]) world.states.set(`_User/${o.objectId}/${o.updatedAt}`, o);
  await pub.parseAfterSave(h.APP_ID, samRec, undefined, CLP._User);
  await pub.parseAfterSave(h.APP_ID, samNext, samRec, CLP._User);
  for (const [name, c] of Object.entries(clients)) {
    const live = lives[name];
    const cr = await c.event(1, U.sam, 5000);
    assert.deepEqual(cr, frameFor(live, c.clientId, { op: 'create', before: null, after: samRec }), `${name} create`);
    const up = await c.event(1, U.sam, 5000);
    assert.deepEqual(up, frameFor(live, c.clientId, { op: 'update', before: samRec, after: samNext }), `${name} update`);
    const self = name === 'sam' || name === 'master';
    assert.equal('sessionToken' in cr.object, self, `${name}: sessionToken`);
    assert.equal('authData' in up.original, self, `${name}: authData in original`);
    assert.equal('email' in up.object, self || name === 'max', `${name}: email`);
    scanFrames(`parse-intake ${name}`, c.all, new Map([[1, live]]));
  }
});

/* ------------------------------------------------------------------ */
/* Comparison and scan                                                */
/* ------------------------------------------------------------------ */

function compareFrames(label, got, want) {
  const brief = (f) => `${f.op} ${f.object && f.object.objectId}@${f.object && f.object.updatedAt}${f.original ? ` (original @${f.original.updatedAt})` : ''}`;
  if (got.length !== want.length || got.some((g, i) => !same(sortKeys(g), sortKeys(want[i])))) {
    const n = Math.max(got.length, want.length);
    for (let i = 0; i < n; i++) {
      if (!got[i] || !want[i] || !same(sortKeys(got[i]), sortKeys(want[i]))) {
        assert.deepEqual(got[i], want[i], `${label}: frame #${i} differs\n  received: ${got.map(brief).join(' | ') || '(none)'}\n  expected: ${want.map(brief).join(' | ') || '(none)'}`);
      }
    }
  }
}

function sortKeys(x) {
  if (Array.isArray(x)) return x.map(sortKeys);
  if (x && typeof x === 'object') return Object.fromEntries(Object.keys(x).sort().map((k) => [k, sortKeys(x[k])]));
  return x;
}

/* Scans frames received by one client. subs: rid -> live subscription (null:
 * the subscription was refused: no event may carry that requestId). Returns
 * the number of object-carrying frames. */
function scanFrames(label, frames, subs) {
  let n = 0;
  for (const f of frames) {
    if (!f || typeof f !== 'object' || !(f.object || f.original)) continue;
    n++;
    const live = subs.get(f.requestId);
    assert.ok(live, `${label}: an event for requestId ${f.requestId}, which it may not hold: ${h.show(f)}`);
    if (f.object) scanObject(`${label} rid ${f.requestId} ${f.op} object`, live, f.object);
    if (f.original) scanObject(`${label} rid ${f.requestId} ${f.op} original`, live, f.original);
  }
  return n;
}

/* One object a subscriber received: it existed in this state, the subscriber
 * may read it (by the state's own ACL, not the frame's), pointer permissions
 * hold, and no hidden, secret or internal key is present. */
function scanObject(label, live, o) {
  const className = o.className;
  const key = `${className}/${o.objectId}/${typeof o.updatedAt === 'string' ? o.updatedAt : new Date(o.updatedAt).toISOString()}`;
  const state = world.states.get(key);
  assert.ok(state, `${label}: ${key} is no state that was ever written`);
  assert.ok(canReadAcl(live.p, state.ACL), `${label}: ${key} is not readable by this subscriber (ACL ${JSON.stringify(state.ACL)})`);
  assert.ok(pointerOk(live, state), `${label}: ${key} does not name this user in ${live.verdict.fields}`);
  const hidden = hiddenFor(live, state);
  for (const k of Object.keys(o)) {
    assert.ok(!hidden.includes(k), `${label}: protected field ${k} of ${key} delivered`);
    assert.ok(!k.startsWith('_'), `${label}: internal key ${k} of ${key} delivered`);
  }
  const self = live.p.master || (className === '_User' && live.p.uid === o.objectId);
  if (!self) {
    assert.ok(!('sessionToken' in o), `${label}: sessionToken of ${key} delivered`);
    assert.ok(!('authData' in o), `${label}: authData of ${key} delivered`);
  }
}
