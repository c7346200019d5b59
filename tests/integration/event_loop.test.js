'use strict';
/*
 * Both event loops (--event-loop uv, the default, and poll) serve the same
 * protocol: events arrive in order, and SIGTERM ends every connection with
 * 1001 "going away" (our own close frame on either loop) and exit status 0.
 */
const { before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./harness');
const { metrics } = require('./faultkit');

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

/* Both fan-out write paths (--io-uring 1: one submission for every connection
 * an event batch wrote to; 0: one send() each) deliver every frame whole and in
 * order: to readers that keep up, to one that stalls for a while (its backlog
 * goes out on WRITEABLE) and, for a frame larger than the kernel takes in one
 * write (6 MB), with the remainder handed to lws (writes_short counts those). */
for (const uring of ['1', '0']) {
  h.test(`--io-uring ${uring}: every frame whole and in order, with a stalled reader and a short write`, async () => {
    const gw = await h.startGateway({ redis, args: ['--io-uring', uring, '--max-queue-bytes', '268435456'] });
    await h.waitBusReady(gw, pub);
    assert.match(gw.logs(), new RegExp(`fanout=${uring === '1' ? 'io_uring' : 'send'}`),
      'the gateway reports the write path it uses');
    const clients = [];
    for (let i = 0; i < 3; i++) {
      const c = await h.wsClient(gw.url);
      await c.connect();
      await c.subscribe(1, 'BookStockLog', { quantityOnHand: { $gt: 0 } });
      clients.push(c);
    }
    const m0 = await metrics(gw);
    clients[2].ws._socket.pause(); // reads nothing until resumed
    const N = 401;
    const BIG = 200; // this one is 6 MB: more than a socket takes in one write
    const pad = (i) => (i === BIG ? 'y'.repeat(6 * 1024 * 1024) : 'x'.repeat(2000));
    for (let i = 0; i < N; i++) {
      const o = h.obj({ objectId: `U${uring}x${i}`, className: 'BookStockLog', quantityOnHand: i + 1, pad: pad(i) });
      await pub.change('BookStockLog', 'create', o);
    }
    await h.sleep(200);
    clients[2].ws._socket.resume();
    for (const c of clients) {
      for (let i = 0; i < N; i++) {
        const f = await c.next(15000);
        assert.equal(f.op, 'create');
        assert.equal(f.object.objectId, `U${uring}x${i}`);
        assert.equal(f.object.pad, pad(i));
      }
    }
    const m1 = await metrics(gw);
    assert.ok(m1.writes_short > m0.writes_short, 'the 6 MB frame went out in more than one write');
    await gw.stop();
  });
}
