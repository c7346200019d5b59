'use strict';
// bench/peer/check.js - smoke test of a running peer (peer.sh start):
//
//   node bench/peer/check.js PORT REDIS_URL
//
// Opens one WebSocket to ws://127.0.0.1:PORT/, connects as application
// "bookstore" and subscribes
//   requestId 1: BookStockLog {"quantityOnHand":{"$gt":0}}   (broadcast query)
//   requestId 2: BookStockLog {"isbn":"978-1"}               (selective, matches)
//   requestId 3: BookStockLog {"isbn":"978-2"}               (selective, must not match)
// then PUBLISHes Parse's own afterSave / afterDelete messages on Redis and checks:
//   A. the payload as Parse publishes it minus classLevelPermissions -> update on 1 and 2, not 3
//   B. the same with "sentUs":<µs> in both objects -> the value is echoed verbatim
//      in the delivered frame (first "sentUs": in the frame is the object's)
//   C. the same with classLevelPermissions (public find/get), as Parse's publisher sends it
//   D. bookstoreafterDelete -> delete on 1 and 2, not 3
// Prints every frame; exit status 0 when all checks pass, 1 otherwise.

const path = require('path');
const peerDir = __dirname;
// ws and redis are parse-server's own dependencies (npm hoists them); resolve them
// from parse-server's location so this keeps working if they are not hoisted.
const psDir = path.dirname(require.resolve('parse-server/package.json', { paths: [peerDir] }));
const WebSocket = require(require.resolve('ws', { paths: [psDir] }));
const { createClient } = require(require.resolve('redis', { paths: [psDir] }));

const [port, redisURL] = process.argv.slice(2);
if (!port || !redisURL) {
  console.error('usage: node check.js PORT REDIS_URL');
  process.exit(2);
}

const APP = 'bookstore';
const WAIT_MS = 5000; // for an expected frame
const QUIET_MS = 500; // after the expected frames, how long to listen for unexpected ones

function baseObject(extra, updatedAt) {
  return Object.assign(
    {
      isbn: '978-1',
      quantityOnHand: 10,
      createdAt: '2026-11-23T23:29:42.277Z',
      updatedAt,
      objectId: 'abc123',
      __type: 'Object',
      className: 'BookStockLog',
      ACL: { '*': { read: true } },
    },
    extra
  );
}
// The exact payload from the brief (Parse's own format, no classLevelPermissions).
const PAYLOAD_A =
  '{"currentParseObject":{"isbn":"978-1","quantityOnHand":10,"createdAt":"2026-11-23T23:29:42.277Z","updatedAt":"2026-11-23T23:29:42.277Z","objectId":"abc123","__type":"Object","className":"BookStockLog","ACL":{"*":{"read":true}}},"originalParseObject":{"isbn":"978-1","quantityOnHand":9,"createdAt":"2026-11-23T23:29:42.277Z","updatedAt":"2026-11-23T23:29:41.277Z","objectId":"abc123","__type":"Object","className":"BookStockLog","ACL":{"*":{"read":true}}}}';

let failures = 0;
function check(ok, what) {
  console.log(`${ok ? 'PASS' : 'FAIL'} ${what}`);
  if (!ok) failures++;
}

const frames = []; // {t, raw, msg}
let waiters = [];
function onFrame(raw) {
  const msg = JSON.parse(raw);
  frames.push({ raw, msg });
  console.log(`  <- ${raw}`);
  waiters = waiters.filter(w => !w(msg));
}
function waitFor(pred, what, ms = WAIT_MS) {
  return new Promise((resolve, reject) => {
    const found = frames.find(f => pred(f.msg));
    if (found) return resolve(found);
    const timer = setTimeout(() => reject(new Error(`timeout (${ms} ms) waiting for ${what}`)), ms);
    waiters.push(msg => {
      if (!pred(msg)) return false;
      clearTimeout(timer);
      resolve(frames[frames.length - 1]);
      return true;
    });
  });
}
const sleep = ms => new Promise(r => setTimeout(r, ms));

// Publish one message, expect `op` for requestIds 1 and 2 only; returns the frame for 1.
async function scenario(name, pub, channel, message, op) {
  console.log(`\n== ${name}`);
  frames.length = 0;
  const n = await pub.publish(channel, message);
  console.log(`  PUBLISH ${channel} (${message.length} bytes) -> ${n} receiver(s)`);
  check(n === 1, `${name}: one Redis subscriber received the PUBLISH`);
  let f1 = null;
  for (const rid of [1, 2]) {
    try {
      const f = await waitFor(m => m.op === op && m.requestId === rid, `${op} for requestId ${rid}`);
      if (rid === 1) f1 = f;
      check(true, `${name}: ${op} delivered for requestId ${rid}`);
    } catch (e) {
      check(false, `${name}: ${e.message}`);
    }
  }
  await sleep(QUIET_MS);
  const stray = frames.filter(f => f.msg.requestId === 3 || (f.msg.op !== op && f.msg.op !== undefined));
  check(stray.length === 0, `${name}: nothing for requestId 3 ({"isbn":"978-2"}) and no other frame`);
  const dup = frames.filter(f => f.msg.requestId === 1).length;
  check(dup <= 1, `${name}: no duplicate for requestId 1 (${dup})`);
  return f1;
}

async function main() {
  const pub = createClient({ url: redisURL });
  pub.on('error', e => console.error('redis error:', e.message));
  await pub.connect();

  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  ws.on('message', data => onFrame(data.toString()));
  ws.on('close', () => console.log('  (websocket closed)'));
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  const send = obj => {
    const s = JSON.stringify(obj);
    console.log(`  -> ${s}`);
    ws.send(s);
  };

  console.log('== connect + subscribe');
  send({ op: 'connect', applicationId: APP });
  await waitFor(m => m.op === 'connected', 'connected');
  check(true, 'connected');
  const subs = [
    [1, { quantityOnHand: { $gt: 0 } }],
    [2, { isbn: '978-1' }],
    [3, { isbn: '978-2' }],
  ];
  for (const [requestId, where] of subs) {
    send({ op: 'subscribe', requestId, query: { className: 'BookStockLog', where } });
  }
  for (const [requestId] of subs) {
    try {
      await waitFor(m => (m.op === 'subscribed' || m.op === 'error') && m.requestId === requestId, `subscribed ${requestId}`);
    } catch (e) {
      check(false, e.message);
    }
  }
  const subErr = frames.filter(f => f.msg.op === 'error');
  check(subErr.length === 0, 'all three subscriptions answered "subscribed"');

  // A. the brief's payload, no classLevelPermissions
  const fa = await scenario('A: afterSave without classLevelPermissions', pub, `${APP}afterSave`, PAYLOAD_A, 'update');
  if (fa) {
    const o = fa.msg.object || {};
    check(
      o.isbn === '978-1' && o.quantityOnHand === 10 && o.objectId === 'abc123' && fa.msg.original && fa.msg.original.quantityOnHand === 9,
      'A: delivered object/original carry the published fields'
    );
  }

  // B. extra field sentUs (a CLOCK_REALTIME µs stamp, as lq_bench sends it)
  const sentUs = Date.now() * 1000 + 123;
  const msgB = JSON.stringify({
    currentParseObject: baseObject({ sentUs }, '2026-11-23T23:29:42.277Z'),
    originalParseObject: baseObject({ quantityOnHand: 9, sentUs: 0 }, '2026-11-23T23:29:41.277Z'),
  });
  const fb = await scenario('B: extra field "sentUs" in the object', pub, `${APP}afterSave`, msgB, 'update');
  if (fb) {
    check(fb.msg.object && fb.msg.object.sentUs === sentUs, `B: object.sentUs echoed as the same number (${sentUs})`);
    const i = fb.raw.indexOf('"sentUs":');
    const echoed = i < 0 ? null : fb.raw.slice(i + 9).match(/^-?\d+/);
    check(
      echoed && echoed[0] === String(sentUs),
      `B: first "sentUs": in the raw frame is the object's, verbatim digits (${echoed && echoed[0]})`
    );
  }
  const fb3 = await scenario(
    'B2: "sentUs":123 (the brief\'s value)',
    pub,
    `${APP}afterSave`,
    JSON.stringify({
      currentParseObject: baseObject({ sentUs: 123 }, '2026-11-23T23:29:42.277Z'),
      originalParseObject: baseObject({ quantityOnHand: 9 }, '2026-11-23T23:29:41.277Z'),
    }),
    'update'
  );
  if (fb3) check(fb3.raw.includes('"sentUs":123'), 'B2: raw frame contains "sentUs":123');

  // C. with classLevelPermissions as Parse's own publisher includes them
  const msgC = JSON.stringify({
    currentParseObject: baseObject({}, '2026-11-23T23:29:42.277Z'),
    originalParseObject: baseObject({ quantityOnHand: 9 }, '2026-11-23T23:29:41.277Z'),
    classLevelPermissions: {
      find: { '*': true },
      get: { '*': true },
      count: { '*': true },
      create: { '*': true },
      update: { '*': true },
      delete: { '*': true },
      addField: { '*': true },
      protectedFields: { '*': [] },
    },
  });
  await scenario('C: afterSave with classLevelPermissions (public)', pub, `${APP}afterSave`, msgC, 'update');

  // D. afterDelete
  const msgD = JSON.stringify({ currentParseObject: baseObject({}, '2026-11-23T23:29:43.277Z') });
  await scenario('D: afterDelete', pub, `${APP}afterDelete`, msgD, 'delete');

  ws.close();
  await pub.quit();
  console.log(`\n${failures === 0 ? 'OK' : 'FAILED'}: ${failures} check(s) failed`);
  process.exit(failures === 0 ? 0 : 1);
}

main().catch(e => {
  console.error('check.js:', e && e.message ? e.message : e);
  process.exit(1);
});
