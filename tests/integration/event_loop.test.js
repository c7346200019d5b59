'use strict';
/*
 * Both event loops (--event-loop uv, the default, and poll) serve the same
 * protocol: events arrive in order, and SIGTERM ends every connection with
 * 1001 "going away" (our own close frame on either loop) and exit status 0.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');

let redis; let pub;

before(async () => {
  redis = await h.startRedis();
  pub = await h.publisher(redis.port);
});
after(h.teardown);

for (const loop of ['uv', 'poll']) {
  h.test(`--event-loop ${loop}: create/update/delete in order, then 1001 on SIGTERM`, async () => {
    const gw = await h.startGateway({ redis, args: ['--event-loop', loop] });
    await h.waitBusReady(gw, pub);
    assert.match(gw.logs(), new RegExp(`event_loop=${loop}`), 'the gateway reports the loop it runs');
    const c = await h.wsClient(gw.url);
    await c.connect();
    await c.subscribe(1, 'BookStockLog', { quantityOnHand: { $gt: 5 } });

    const a = h.obj({ objectId: `Loop${loop}`, className: 'BookStockLog', quantityOnHand: 10 });
    const b = { ...a, quantityOnHand: 12 };
    await pub.change('BookStockLog', 'create', a);
    await pub.change('BookStockLog', 'update', b, a);
    await pub.change('BookStockLog', 'delete', b);
    for (const [op, qty] of [['create', 10], ['update', 12], ['delete', 12]]) {
      const f = await c.next();
      assert.equal(f.op, op);
      assert.equal(f.object.quantityOnHand, qty);
    }
    await gw.stop();
    const closed = await c.closed;
    assert.deepEqual(closed, { code: 1001, reason: 'going away' });
    assert.equal(gw.proc.exitCode, 0);
  });
}
