/*
 * demo.h - the demo feed (--demo-feed 1): a simulated event day of the
 * bookstore CRM published through Redis, so the event-day display (web/,
 * served at /display/) and any Parse SDK have something live to show without
 * MongoDB.
 *
 * One thread with its own blocking hiredis connection (redisconn.h) PUBLISHes
 * our v1 change messages (protocol/bus.md, with `ts`, without seq/epoch, so
 * gateways deliver them as they come) on `<channel_prefix><app_id>:changes`:
 *
 *  - at start, `create` for today's signings (SigningSchedule, eventDate at
 *    fixed local times of today) and the BookStockLog row of each one's book
 *    (linked by the `signingSchedule` pointer, same bookTitle and isbn);
 *  - then every 1-2 s one `update` (with `original`): a sale lowers
 *    quantityOnHand (some books fall below restockThreshold; a carton
 *    restocks them), attendeeCount rises, and each signing's status moves
 *    confirmed -> checked-in -> signing -> completed, in order of the day;
 *  - when the last signing is completed the day starts again (every object
 *    back to its morning state, as updates); 2 s after start, then 4, 8, 16 s apart
 *    (a gateway subscribing to Redis after the first publication), then every
 *    30 s, and after each Redis reconnect, the whole current state is
 *    published again as updates, so a page opened later fills even without
 *    a query result (or with one from a gateway cache that missed it).
 *
 * Every object is public ({"*":{"read":true}}) and has fixed objectIds
 * (dSign0000N, dStock000N). Redis unreachable: it retries with backoff
 * (100 ms .. 5 s) and logs once per outage.
 *
 * Thread: lq_demo_start/lq_demo_stop on the main thread.
 */
#ifndef LIVEQUERY_DEMO_H
#define LIVEQUERY_DEMO_H

#include "livequery/config.h"

typedef struct lq_demo lq_demo;

/* Starts the feed thread for cfg (borrowed; must outlive the feed). Returns
 * NULL after logging why when the thread cannot be created. */
lq_demo *lq_demo_start(const lq_config *cfg);

/* Stops the thread (promptly: at most one Redis timeout, ~1 s), joins and
 * frees it. Accepts NULL. */
void lq_demo_stop(lq_demo *d);

#endif
