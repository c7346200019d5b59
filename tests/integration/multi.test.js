'use strict';
/*
 * Two gateway processes on one Redis: one publish reaches the clients of both,
 * each exactly once; each gateway only serves its own clients.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

let redis; let g1; let g2; let pub;

before(async () => {
  redis = await h.startRedis();
  [g1, g2] = await Promise.all([h.startGateway({ redis }), h.startGateway({ redis })]);
  pub = await h.publisher(redis.port);
  await h.waitBusReady(g1, pub);
  await h.waitBusReady(g2, pub);
});
after(h.teardown);

async function subscribed(gw, requestId, where) {
  const c = await h.wsClient(gw.url);
  await c.connect();
  await c.subscribe(requestId, 'BookStockLog', where);
  return c;
}

h.test('one publish reaches clients of both gateways, each exactly once', async () => {
  const a1 = await subscribed(g1, 1, { storeId: 'multi' });
  const a2 = await subscribed(g1, 1, { storeId: 'multi' });
  const b1 = await subscribed(g2, 1, { storeId: 'multi' });
  const b2 = await subscribed(g2, 5, { storeId: 'multi', quantityOnHand: { $gt: 5 } });
  const quiet = await subscribed(g2, 1, { storeId: 'elsewhere' });

  const ids = [];
  for (let i = 1; i <= 10; i++) {
    const o = h.obj({ objectId: `Multi${String(i).padStart(5, '0')}`, className: 'BookStockLog', storeId: 'multi', quantityOnHand: i });
    ids.push(o.objectId);
    const receivers = await pub.change('BookStockLog', 'create', o);
    assert.ok(receivers >= 2, `both gateways must be subscribed to the change channel (PUBLISH reached ${receivers})`);
  }
  for (const [name, c] of [['g1 client 1', a1], ['g1 client 2', a2], ['g2 client 1', b1]]) {
    for (const id of ids) {
      const f = await c.next();
      assert.equal(f.op, 'create', `${name}`);
      assert.equal(f.requestId, 1, `${name}`);
      assert.equal(f.clientId, c.clientId, `${name}: frame carries this client's id`);
      assert.equal(f.object.objectId, id, `${name}: events in publish order, each once`);
    }
  }
  for (const id of ids.slice(5)) {
    const f = await b2.next();
    assert.equal(f.requestId, 5);
    assert.equal(f.object.objectId, id, 'g2 client with qty>5 gets 6..10 once each');
  }
  await a1.none(300);
  for (const c of [a2, b1, b2, quiet]) await c.none(0);

  // clientIds are distinct across gateways
  const idsSeen = new Set([a1, a2, b1, b2, quiet].map((c) => c.clientId));
  assert.equal(idsSeen.size, 5, 'every connection has its own clientId');
});

h.test('Parse Server afterSave/afterDelete also reach both gateways once', async () => {
  const a = await subscribed(g1, 3, { storeId: 'parse-multi' });
  const b = await subscribed(g2, 4, { storeId: 'parse-multi' });
  const o1 = h.obj({ objectId: 'MultiParse', className: 'BookStockLog', storeId: 'parse-multi', quantityOnHand: 1 });
  const o2 = h.updated(o1, { quantityOnHand: 2 });
  await pub.parseAfterSave(h.APP_ID, o1, undefined, h.PUBLIC_CLP);
  await pub.parseAfterSave(h.APP_ID, o2, o1, h.PUBLIC_CLP);
  await pub.parseAfterDelete(h.APP_ID, o2, h.PUBLIC_CLP);
  for (const [c, rid] of [[a, 3], [b, 4]]) {
    const ops = [];
    for (let i = 0; i < 3; i++) {
      const f = await c.next();
      assert.equal(f.requestId, rid);
      assert.equal(f.object.objectId, 'MultiParse');
      ops.push(f.op);
    }
    assert.deepEqual(ops, ['create', 'update', 'delete']);
  }
  await a.none(300);
  await b.none(0);
});

h.test('stopping one gateway does not affect the other', async () => {
  const b = await subscribed(g2, 1, { storeId: 'survivor' });
  const a = await subscribed(g1, 1, { storeId: 'survivor' });
  await g1.stop();
  const info = await h.withTimeout(a.closed, 5000, 'g1 client closed by shutdown');
  assert.equal(info.code, 1001, `a gateway shutting down closes with 1001 going away (got ${info.code} ${info.reason})`);
  const o = h.obj({ objectId: 'Survivor01', className: 'BookStockLog', storeId: 'survivor' });
  await pub.change('BookStockLog', 'create', o);
  const f = await b.next();
  assert.equal(f.object.objectId, 'Survivor01');
  assert.ok(g2.alive());
});
