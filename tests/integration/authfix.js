'use strict';
/*
 * authfix.js - sessions, roles, ACLs and class-level permissions for the
 * security tests, written into the mock MongoDB (tests/mongo/mockmongo.py)
 * through its HTTP control API in Parse Server's own storage format
 * (reference/parse-mongo-storage.md §1-§3):
 *
 *   _User      {_id, username, email, _rperm, _wperm, _acl, _created_at, _updated_at, ...}
 *   _Session   {_id, _session_token: "r:<32 hex>", _p_user: "_User$<uid>", expiresAt: Date, createdWith}
 *              (no ACL: Parse writes sessions with the master key)
 *   _Role      {_id, name, _rperm, _wperm, ...}
 *   _Join:users:_Role  {_id: ObjectId, owningId: <roleId>, relatedId: <userId>}   user is a member of role
 *   _Join:roles:_Role  {_id: ObjectId, owningId: <parentId>, relatedId: <childId>} members of child get role:parent
 *   _SCHEMA    {_id: className, <field>: <type>, _metadata: {class_permissions: {...}}}
 *
 * Also: the stack these tests run on (redis + mock + livequeryd running its
 * tailer and gateway against the mock) and a few frame helpers. Nothing here
 * decides who may see what: the tests' oracles do that from their own tables.
 */
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const h = require('./harness');
const M = require('./mongo');

const CRM_DIR = path.join(h.REPO, 'examples', 'crm');

/* ------------------------------------------------------------------ */
/* Ids, tokens, dates                                                 */
/* ------------------------------------------------------------------ */

const ALNUM = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/* A Parse objectId: 10 random alphanumerics. */
function newObjectId(len = 10) {
  const b = crypto.randomBytes(len);
  let s = '';
  for (let i = 0; i < len; i++) s += ALNUM[b[i] % ALNUM.length];
  return s;
}

/* A fresh revocable session token as Parse Server makes them: "r:" + 32 hex. */
function sessionToken() {
  return `r:${crypto.randomBytes(16).toString('hex')}`;
}

/* 24-hex MongoDB ObjectId text, and its extended JSON form. */
function newOid() {
  return crypto.randomBytes(12).toString('hex');
}
const oid = (hex) => ({ $oid: hex });

/* A BSON Date in extended JSON, from epoch ms, a Date or an ISO string. */
function xdate(t) {
  const iso = typeof t === 'string' ? t : new Date(t).toISOString();
  return { $date: iso };
}

/* ------------------------------------------------------------------ */
/* ACL                                                                */
/* ------------------------------------------------------------------ */

/* Parse's legacy _acl copy (MongoTransform addLegacyACL): write entries first
 * as {w:true}, then read entries add r:true. */
function legacyAcl(rperm, wperm) {
  const out = {};
  for (const e of wperm || []) out[e] = { ...(out[e] || {}), w: true };
  for (const e of rperm || []) out[e] = { ...(out[e] || {}), r: true };
  return out;
}

/* Storage fields for an ACL given as lists: {read:[...], write:[...]} ->
 * {_rperm, _wperm, _acl}. Entries: "*", a user id, "role:<name>".
 * aclFields(null) -> {} (no ACL at all: public). */
function aclFields(spec) {
  if (spec == null) return {};
  const read = [...(spec.read || [])];
  const write = [...(spec.write || [])];
  return { _rperm: read, _wperm: write, _acl: legacyAcl(read, write) };
}

/* The same from a REST ACL map {"*":{read:true}, "uid":{read:true,write:true}}
 * (DBC transformObjectACL: keys with neither right are dropped). */
function aclFromRest(rest) {
  if (rest == null) return {};
  const read = []; const write = [];
  for (const [k, v] of Object.entries(rest)) {
    if (v && v.read) read.push(k);
    if (v && v.write) write.push(k);
  }
  return aclFields({ read, write });
}

/* The REST ACL map Parse derives from stored _rperm/_wperm (DBC
 * untransformObjectACL), or undefined when the document has neither. */
function restAcl(doc) {
  if (doc._rperm === undefined && doc._wperm === undefined) return undefined;
  const out = {};
  for (const e of doc._rperm || []) out[e] = { ...(out[e] || {}), read: true };
  for (const e of doc._wperm || []) out[e] = { ...(out[e] || {}), write: true };
  return out;
}

/* ------------------------------------------------------------------ */
/* Documents in Parse's storage format                                */
/* ------------------------------------------------------------------ */

const T_SEED = Date.parse('2026-11-30T08:00:00.000Z');

function stamps(ms = T_SEED) {
  return { _created_at: xdate(ms), _updated_at: xdate(ms) };
}

/* A _User. acl: {read:[..], write:[..]} (default: the user rw, as Parse's
 * enforcePrivateUsers signup does). extra: more stored keys, e.g.
 * _hashed_password, _auth_data_facebook, _session_token. */
function userDoc({ id, username, email, role, acl, extra = {} }) {
  const a = acl === undefined ? { read: [id], write: [id] } : acl;
  const d = { _id: id, username: username || id };
  if (email !== undefined) d.email = email;
  if (role !== undefined) d.role = role;
  return { ...d, emailVerified: false, ...aclFields(a), ...stamps(), ...extra };
}

/* A _Role: name, ACL {"*": read, "role:manager": write} by default. */
function roleDoc({ id, name, acl }) {
  return { _id: id, name, ...aclFields(acl === undefined ? { read: ['*'], write: ['role:manager'] } : acl), ...stamps() };
}

/* A _Session. expiresAt: epoch ms / Date / ISO string; null = no expiresAt
 * (never expires); undefined = one hour from now. */
function sessionDoc({ id, token, userId, expiresAt, action = 'login' }) {
  const d = {
    _id: id || newObjectId(),
    _session_token: token || sessionToken(),
    _p_user: `_User$${userId}`,
    createdWith: action === 'login' || action === 'signup' ? { action, authProvider: 'password' } : { action },
    ...stamps(Date.now()),
  };
  const exp = expiresAt === undefined ? Date.now() + 3600e3 : expiresAt;
  if (exp !== null) d.expiresAt = xdate(exp);
  return d;
}

/* A relation row. */
function joinDoc(owningId, relatedId, id = newOid()) {
  return { _id: oid(id), owningId, relatedId };
}

const USERS_JOIN = '_Join:users:_Role';
const ROLES_JOIN = '_Join:roles:_Role';

/* ------------------------------------------------------------------ */
/* Writing into the mock                                              */
/* ------------------------------------------------------------------ */

/* Seeds users, roles, memberships, role inheritance and sessions.
 *   users:    [{id, username, email, role, acl, extra}]
 *   roles:    [{id, name, acl}]
 *   members:  [[roleId, userId], ...]          -> _Join:users:_Role rows
 *   parents:  [[parentRoleId, childRoleId], ...] -> _Join:roles:_Role rows (members of child get role:parent)
 *   sessions: [{name, id, token, userId, expiresAt}]
 * Returns {sessions: {name: {id, token, userId}}, members: [{coll, id, owningId, relatedId}], parents: [...]}. */
async function seedAuth(mongo, { users = [], roles = [], members = [], parents = [], sessions = [] }) {
  for (const r of roles) await mongo.insert('_Role', roleDoc(r));
  for (const u of users) await mongo.insert('_User', userDoc(u));
  const out = { sessions: {}, members: [], parents: [] };
  for (const [roleId, userId] of members) out.members.push(await addUserToRole(mongo, roleId, userId));
  for (const [parentId, childId] of parents) out.parents.push(await addRoleParent(mongo, parentId, childId));
  for (const s of sessions) {
    const made = await createSession(mongo, s.userId, s);
    out.sessions[s.name || made.id] = made;
  }
  return out;
}

/* user becomes a member of role. Returns the row handle for removeJoin. */
async function addUserToRole(mongo, roleId, userId) {
  const d = joinDoc(roleId, userId);
  await mongo.insert(USERS_JOIN, d);
  return { coll: USERS_JOIN, id: d._id.$oid, owningId: roleId, relatedId: userId };
}

/* childRole is added to parentRole's `roles` relation: members of childRole
 * (and of its descendants) get role:<parent name>. */
async function addRoleParent(mongo, parentRoleId, childRoleId) {
  const d = joinDoc(parentRoleId, childRoleId);
  await mongo.insert(ROLES_JOIN, d);
  return { coll: ROLES_JOIN, id: d._id.$oid, owningId: parentRoleId, relatedId: childRoleId };
}

/* Deletes a relation row made by addUserToRole / addRoleParent. */
async function removeJoin(mongo, row) {
  return mongo.ctl('/delete', { coll: row.coll, id: oid(row.id) });
}

/* Inserts a _Session for userId. opts: {id, token, expiresAt, action}.
 * Returns {id, token, userId, expiresAt (ms or null)}. */
async function createSession(mongo, userId, opts = {}) {
  const d = sessionDoc({ ...opts, userId });
  await mongo.insert('_Session', d);
  return { id: d._id, token: d._session_token, userId, expiresAt: d.expiresAt ? Date.parse(d.expiresAt.$date) : null };
}

/* Logout: Parse Server deletes the _Session document. */
async function revokeSession(mongo, sessionId) {
  return mongo.remove('_Session', sessionId);
}

/* Moves a session's expiresAt (ms / Date / ISO). */
async function setSessionExpiry(mongo, sessionId, expiresAt) {
  return mongo.update('_Session', sessionId, { expiresAt: xdate(expiresAt) });
}

/* Writes (replaces) _SCHEMA documents. */
async function seedSchema(mongo, docs) {
  for (const d of docs) await mongo.replace('_SCHEMA', d);
}

/* A class's CLP changes the way Parse Server writes it: one $set of
 * _metadata.class_permissions. */
async function setClp(mongo, className, clp) {
  return mongo.update('_SCHEMA', className, { '_metadata.class_permissions': clp });
}

/* A _SCHEMA document: fields {name: type} plus a CLP (omit: none). */
function schemaDoc(className, fields, clp) {
  const d = { _id: className, objectId: 'string', createdAt: 'date', updatedAt: 'date', ...fields };
  if (clp !== undefined) d._metadata = { class_permissions: clp };
  return d;
}

/* examples/crm/schema.json: the CRM's _SCHEMA documents (plain JSON). */
function crmSchema() {
  return JSON.parse(fs.readFileSync(path.join(CRM_DIR, 'schema.json'), 'utf8'));
}

/* The class_permissions of one CRM class. */
function crmClp(className) {
  const d = crmSchema().find((x) => x._id === className);
  if (!d) throw new Error(`examples/crm/schema.json has no ${className}`);
  return d._metadata.class_permissions;
}

/* examples/crm/seed.json as {collection: [docs]} in extended JSON (what the
 * control API takes), without the "$comment" keys and with _acl derived. */
function crmSeed() {
  const raw = JSON.parse(fs.readFileSync(path.join(CRM_DIR, 'seed.json'), 'utf8'));
  const out = {};
  for (const [coll, docs] of Object.entries(raw)) {
    if (coll.startsWith('$') || !Array.isArray(docs)) continue;
    out[coll] = docs.map((d) => {
      const c = { ...d };
      delete c.$comment;
      if (coll !== '_Session' && (c._rperm || c._wperm) && !c._acl) c._acl = legacyAcl(c._rperm, c._wperm);
      return c;
    });
  }
  return out;
}

/* ------------------------------------------------------------------ */
/* The stack: redis + mock MongoDB + livequeryd (tailer and gateway)   */
/* ------------------------------------------------------------------ */

/* The collections a tailer always watches for the gateways' session and role
 * caches (protocol/bus.md "Sessions, roles and the auth collections").
 * _User is not among them: list it in `classes` when _User changes matter
 * (deleting a user revokes its sessions; live _User queries). */
const AUTH_COLLECTIONS = ['_Session', '_Role', USERS_JOIN, ROLES_JOIN];

/* Starts redis and the mock (pre-images on), lets seed(mongo) write the
 * initial data, then starts one livequeryd with --mongodb-uri of the mock and
 * --role both (its tailer watches `classes` and publishes them; its gateway
 * resolves sessions and roles from the same mock), and waits until the
 * tailer streams are open (the classes and the auth collections).
 * opts: {classes: [..], seed: async (mongo) => {}, args: [..], env: {}}.
 * LQ_AUTH_EXTRA_ARGS (space-separated) adds flags, e.g. for a build that
 * needs the auth collections named. */
async function startAuthStack(opts = {}) {
  const redis = await h.startRedis();
  const mongo = await M.startMongo({ preimages: true });
  if (opts.seed) await opts.seed(mongo);
  const extra = (process.env.LQ_AUTH_EXTRA_ARGS || '').split(/\s+/).filter(Boolean);
  const classes = opts.classes || ['SigningSchedule', 'BookStockLog'];
  const gw = await M.startTailer({
    redis, mongo, role: 'both', classes: classes.join(','), args: [...(opts.args || []), ...extra], env: opts.env,
  });
  const pub = await h.publisher(redis.port);
  for (const c of classes) {
    await h.waitFor(async () => (await M.tailerState(pub, c)).token, { timeout: 15000, what: `tailer stream for ${c}` });
  }
  await waitAuthWatched(pub, mongo);
  return { redis, mongo, gw, pub, url: gw.url };
}

/* Waits until the tailer has opened its streams on the auth collections
 * (its state hash for each has a resume token, as for any class): live
 * invalidation depends on them. Fails with what the mock sees otherwise. */
async function waitAuthWatched(pub, mongo, timeoutMs = 15000) {
  try {
    for (const c of AUTH_COLLECTIONS) {
      await h.waitFor(async () => (await M.tailerState(pub, c)).token, { timeout: timeoutMs, what: `tailer stream on ${c}` });
    }
  } catch (e) {
    const st = await mongo.stats().catch(() => null);
    throw new Error(`${e.message}: the tailer does not watch the auth collections ${AUTH_COLLECTIONS.join(', ')}, so sessions `
      + `and roles cannot be invalidated live (streams open on the mock: ${JSON.stringify(st && st.change_streams_open)})`);
  }
}

/* Waits until the gateway knows className's CLP: a probe client with `who`
 * (connect extras, e.g. {} for anonymous) subscribes until it gets the error
 * code `code` (default 119) instead of `subscribed`. */
async function waitClpKnown(gw, className, { who = {}, where = {}, code = 119, timeout = 10000 } = {}) {
  const c = await h.wsClient(gw.url);
  try {
    await c.connect(who);
    let rid = 0;
    const deadline = Date.now() + timeout;
    for (;;) {
      rid++;
      const f = await trySubscribe(c, rid, className, where);
      if (f.op === 'error' && f.code === code) return;
      if (f.op === 'subscribed') await c.unsubscribe(rid);
      if (Date.now() > deadline) throw new Error(`gateway never applied the CLP of ${className}: last reply ${h.show(f)}`);
      await h.sleep(100);
    }
  } finally {
    await c.close();
  }
}

/* ------------------------------------------------------------------ */
/* Frames                                                             */
/* ------------------------------------------------------------------ */

/* Sends subscribe and returns the reply for requestId (subscribed or error),
 * without judging it. more: {keys, watch, sessionToken}. */
async function trySubscribe(c, requestId, className, where = {}, more = {}, timeoutMs) {
  const query = { className, where };
  if (more.keys) query.keys = more.keys;
  if (more.watch) query.watch = more.watch;
  const msg = { op: 'subscribe', requestId, query };
  if (more.sessionToken) msg.sessionToken = more.sessionToken;
  c.send(msg);
  const pred = (x) => x && x.requestId === requestId && (x.op === 'subscribed' || x.op === 'error');
  pred.description = `subscribe reply for requestId ${requestId}`;
  return c.next(pred, timeoutMs);
}

/* The exact error frames of the security rules. */
const ERR = {
  session: (requestId) => ({ op: 'error', error: 'Invalid session token', code: 209, reconnect: false, requestId }),
  clp: (className, op, requestId) => ({
    op: 'error', error: `Permission denied for action ${op} on class ${className}.`, code: 119, reconnect: false, requestId,
  }),
  auth: (requestId) => ({
    op: 'error', error: 'Permission denied, user needs to be authenticated.', code: 101, reconnect: false, requestId,
  }),
  protected: (requestId) => ({ op: 'error', error: 'Permission denied', code: 119, reconnect: false, requestId }),
};

/* Waits for an error frame with requestId (and code, if given). */
function errorFrame(c, requestId, code, timeoutMs) {
  const pred = (x) => x && x.op === 'error' && x.requestId === requestId && (code === undefined || x.code === code);
  pred.description = `error${code !== undefined ? ` ${code}` : ''} for requestId ${requestId}`;
  return c.next(pred, timeoutMs);
}

module.exports = {
  CRM_DIR, USERS_JOIN, ROLES_JOIN, AUTH_COLLECTIONS, T_SEED,
  newObjectId, sessionToken, newOid, oid, xdate,
  legacyAcl, aclFields, aclFromRest, restAcl,
  userDoc, roleDoc, sessionDoc, joinDoc, schemaDoc,
  seedAuth, addUserToRole, addRoleParent, removeJoin, createSession, revokeSession, setSessionExpiry,
  seedSchema, setClp, crmSchema, crmClp, crmSeed,
  startAuthStack, waitAuthWatched, waitClpKnown,
  trySubscribe, errorFrame, ERR,
};
