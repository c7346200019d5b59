/*
 * app.js - the event-day display. Plain WebSocket code speaking the Parse
 * LiveQuery protocol (protocol/PROTOCOL.md) to the server that served the
 * page: no SDK, no build step.
 *
 *  - connects with applicationId = ?appId=<id> (default "bookstore"), anonymously;
 *  - subscribes to today's SigningSchedule rows (eventDate within the local
 *    day) and to BookStockLog; a stock row belongs to a signing through its
 *    `signingSchedule` pointer, or else through the same bookTitle;
 *  - after each `subscribed` it asks {"op":"query","requestId":n} for the
 *    first paint. The `result` replaces what the page held for that class
 *    (one marked `truncated` only adds to it);
 *    events that arrived before the result are kept when they are newer
 *    (updatedAt) than the result's copy, and every event after it wins. A
 *    server without the op (an error frame with requestId null) or no answer
 *    within 5 s: the page goes on with the events alone;
 *  - create/enter/update set an object, leave/delete remove it;
 *  - reconnects by itself with backoff (0.5 s doubling to 10 s, jittered),
 *    resubscribes and queries again; resubscribes at local midnight.
 */
'use strict';
(function () {
  const params = new URLSearchParams(location.search);
  const APP_ID = params.get('appId') || 'bookstore';
  const WS_URL = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/';
  const QUERY_TIMEOUT_MS = 5000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;

  const STATUS_LABEL = {
    tentative: 'Tentative',
    confirmed: 'Confirmed',
    scheduled: 'Scheduled',
    'checked-in': 'Author here',
    signing: 'Signing now',
    completed: 'Finished',
    cancelled: 'Cancelled',
    canceled: 'Cancelled',
  };

  const $ = (id) => document.getElementById(id);
  const tbody = document.querySelector('#signings tbody');

  /* requestId -> subscription. objects: objectId -> REST object. */
  const subs = {
    1: { className: 'SigningSchedule', where: todayWhere, objects: new Map() },
    2: { className: 'BookStockLog', where: () => ({}), objects: new Map() },
  };

  let ws = null;
  let attempt = 0;
  let retryTimer = null;
  let countdownTimer = null;
  let lastEventAt = null;
  let queries = []; /* subscriptions whose query is unanswered, in the order sent */

  /* ---------------------------------------------------------------- */
  /* Dates                                                            */
  /* ---------------------------------------------------------------- */

  function dayBounds(now = new Date()) {
    const start = new Date(now.getFullYear(), now.getMonth(), now.getDate());
    const end = new Date(now.getFullYear(), now.getMonth(), now.getDate() + 1);
    return { start, end };
  }

  function todayWhere() {
    const { start, end } = dayBounds();
    return {
      eventDate: {
        $gte: { __type: 'Date', iso: start.toISOString() },
        $lt: { __type: 'Date', iso: end.toISOString() },
      },
    };
  }

  function toDate(v) {
    if (v == null) return null;
    const d = new Date(typeof v === 'object' ? v.iso : v);
    return isNaN(d.getTime()) ? null : d;
  }

  function ms(v) {
    const d = toDate(v);
    return d ? d.getTime() : 0;
  }

  function hhmm(d) {
    return d ? d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' }) : '—';
  }

  /* ---------------------------------------------------------------- */
  /* Connection                                                       */
  /* ---------------------------------------------------------------- */

  function setConn(state, label) {
    const el = $('conn');
    el.dataset.state = state;
    el.querySelector('.label').textContent = label;
    document.body.classList.toggle('stale', state !== 'live');
  }

  function setMessage(text, isError) {
    const el = $('message');
    el.textContent = text || '';
    el.classList.toggle('error', !!isError);
  }

  function send(msg) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
  }

  function connect() {
    clearTimeout(retryTimer);
    clearInterval(countdownTimer);
    setConn('connecting', attempt ? 'Reconnecting…' : 'Connecting…');
    for (const s of Object.values(subs)) resetSub(s);
    queries = [];
    let sock;
    try {
      sock = new WebSocket(WS_URL);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = () => send({ op: 'connect', applicationId: APP_ID });
    sock.onmessage = (e) => {
      if (sock !== ws) return;
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      onFrame(m);
    };
    sock.onclose = () => {
      if (sock !== ws) return;
      ws = null;
      scheduleReconnect();
    };
    sock.onerror = () => { /* a close follows */ };
  }

  function scheduleReconnect() {
    for (const s of Object.values(subs)) clearTimeout(s.queryTimer);
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
    const delay = Math.round(base * (0.5 + Math.random() * 0.5));
    attempt++;
    const due = Date.now() + delay;
    const tick = () => {
      const left = Math.max(0, Math.ceil((due - Date.now()) / 1000));
      setConn('offline', `Offline — retrying in ${left} s`);
    };
    tick();
    countdownTimer = setInterval(tick, 250);
    retryTimer = setTimeout(connect, delay);
  }

  function resetSub(s) {
    clearTimeout(s.queryTimer);
    s.subscribed = false;
    s.queryPending = false;
    s.buffer = [];
  }

  function subscribeAll() {
    for (const [rid, s] of Object.entries(subs)) {
      resetSub(s);
      send({ op: 'subscribe', requestId: Number(rid), query: { className: s.className, where: s.where() } });
    }
  }

  /* ---------------------------------------------------------------- */
  /* Frames                                                           */
  /* ---------------------------------------------------------------- */

  function onFrame(m) {
    const s = m.requestId != null ? subs[m.requestId] : null;
    switch (m.op) {
      case 'connected':
        attempt = 0;
        setConn('connecting', 'Subscribing…');
        setMessage('');
        subscribeAll();
        break;
      case 'subscribed':
        if (!s) break;
        s.subscribed = true;
        setConn('live', 'Live');
        /* first paint: the objects the subscription matches now */
        clearTimeout(s.queryTimer);
        s.queryPending = true;
        s.buffer = [];
        s.queryTimer = setTimeout(() => queryDone(s, 'timeout'), QUERY_TIMEOUT_MS);
        queries.push(s);
        send({ op: 'query', requestId: m.requestId });
        break;
      case 'result':
        if (s && s.queryPending) applyResult(s, Array.isArray(m.results) ? m.results : [], m.truncated === true);
        break;
      case 'create':
      case 'enter':
      case 'update':
      case 'leave':
      case 'delete':
        if (s && m.object && m.object.objectId) onEvent(s, m.op, m.object);
        break;
      case 'error':
        onError(m, s);
        break;
      default:
        break;
    }
  }

  function onEvent(s, op, object) {
    if (s.queryPending) s.buffer.push({ op, object });
    if (op === 'leave' || op === 'delete') s.objects.delete(object.objectId);
    else s.objects.set(object.objectId, object);
    lastEventAt = new Date();
    render();
  }

  function queryDone(s, how) {
    clearTimeout(s.queryTimer);
    queries = queries.filter((x) => x !== s);
    s.queryPending = false;
    s.buffer = [];
    document.body.dataset.query = how;
  }

  /* The result replaces the class's objects (a truncated one, over the
   * server's result limit, only adds to them); an event that came before it
   * stays if it is newer than the result's copy of its object. */
  function applyResult(s, results, truncated) {
    const next = truncated ? new Map(s.objects) : new Map();
    for (const o of results) if (o && o.objectId) next.set(o.objectId, o);
    for (const { op, object } of s.buffer) {
      const had = next.get(object.objectId);
      if (op === 'leave' || op === 'delete') {
        if (had && ms(object.updatedAt) >= ms(had.updatedAt)) next.delete(object.objectId);
      } else if (!had || ms(object.updatedAt) > ms(had.updatedAt)) {
        next.set(object.objectId, object);
      }
    }
    s.objects = next;
    queryDone(s, 'result');
    render();
  }

  function onError(m, s) {
    if (s && !s.subscribed) {
      /* the subscription itself was refused (CLP, ACL, limits) */
      setMessage(`${s.className}: ${m.error} (code ${m.code})`, true);
      return;
    }
    if (s && s.queryPending) {
      queryDone(s, 'error');
      return;
    }
    if (m.requestId == null && m.code === 1 && queries.length) {
      /* a server without the query op answers each one with a schema error
       * that names no request: it is the oldest unanswered query's */
      queryDone(queries[0], 'unsupported');
      return;
    }
    setMessage(`${m.error} (code ${m.code})`, true);
  }

  /* ---------------------------------------------------------------- */
  /* Rendering                                                        */
  /* ---------------------------------------------------------------- */

  const norm = (t) => (typeof t === 'string' ? t.trim().toLowerCase() : '');

  /* The stock row of a signing: linked by pointer, else the same title; the
   * most recently updated one when there are several. */
  function stockFor(signing) {
    let best = null;
    let bestByTitle = null;
    for (const o of subs[2].objects.values()) {
      const p = o.signingSchedule;
      if (p && p.objectId === signing.objectId) {
        if (!best || ms(o.updatedAt) > ms(best.updatedAt)) best = o;
      } else if (!p && norm(o.bookTitle) && norm(o.bookTitle) === norm(signing.bookTitle)) {
        if (!bestByTitle || ms(o.updatedAt) > ms(bestByTitle.updatedAt)) bestByTitle = o;
      }
    }
    return best || bestByTitle;
  }

  function isNum(v) { return typeof v === 'number' && isFinite(v); }

  function setText(el, text) {
    if (el.textContent === text) return;
    const first = !el.dataset.seen;
    el.textContent = text;
    el.dataset.seen = '1';
    if (!first) {
      el.classList.remove('changed');
      void el.offsetWidth; // restart the flash
      el.classList.add('changed');
    }
  }

  function rowFor(id) {
    let tr = tbody.querySelector(`tr[data-id="${CSS.escape(id)}"]`);
    if (tr) return tr;
    tr = document.createElement('tr');
    tr.dataset.id = id;
    tr.innerHTML =
      '<td class="c-time"></td>' +
      '<td class="c-who"><div class="author"></div><div class="book"></div></td>' +
      '<td class="c-location"></td>' +
      '<td class="c-status"><span class="status"></span></td>' +
      '<td class="c-attendees"></td>' +
      '<td class="c-stock"><span class="badge">LOW</span><span class="onhand"></span><div class="sub"></div></td>';
    return tr;
  }

  function render() {
    const { start, end } = dayBounds();
    const list = [...subs[1].objects.values()]
      .filter((o) => {
        const t = ms(o.eventDate);
        return t >= start.getTime() && t < end.getTime();
      })
      .sort((a, b) => ms(a.eventDate) - ms(b.eventDate) || String(a.objectId).localeCompare(b.objectId));

    const keep = new Set();
    let prev = null;
    for (const o of list) {
      const tr = rowFor(o.objectId);
      keep.add(tr);
      const status = typeof o.status === 'string' ? o.status : '';
      tr.classList.toggle('now', status === 'signing');
      tr.classList.toggle('done', status === 'completed' || status === 'cancelled' || status === 'canceled');
      setText(tr.querySelector('.c-time'), hhmm(toDate(o.eventDate)));
      setText(tr.querySelector('.author'), o.authorName || '');
      setText(tr.querySelector('.book'), o.bookTitle || '');
      setText(tr.querySelector('.c-location'), o.location || '');
      const st = tr.querySelector('.status');
      st.dataset.status = status;
      setText(st, STATUS_LABEL[status] || status || '—');
      setText(tr.querySelector('.c-attendees'), isNum(o.attendeeCount) ? String(o.attendeeCount) : '—');

      const stock = stockFor(o);
      const cell = tr.querySelector('.c-stock');
      const onHand = stock && isNum(stock.quantityOnHand) ? stock.quantityOnHand : null;
      const threshold = stock && isNum(stock.restockThreshold) ? stock.restockThreshold : null;
      const low = onHand !== null && threshold !== null && onHand < threshold;
      cell.classList.toggle('low', low);
      tr.classList.toggle('low', low);
      cell.dataset.stockId = stock ? stock.objectId : '';
      setText(cell.querySelector('.onhand'), onHand !== null ? String(onHand) : '—');
      const sub = [];
      if (stock && isNum(stock.quantityReserved)) sub.push(`${stock.quantityReserved}\u00a0reserved`);
      if (threshold !== null) sub.push(`reorder below\u00a0${threshold}`);
      cell.querySelector('.sub').textContent = sub.join(' · ');

      /* keep DOM order = time order, moving only what is out of place */
      const want = prev ? prev.nextSibling : tbody.firstChild;
      if (want !== tr) tbody.insertBefore(tr, want);
      prev = tr;
    }
    for (const tr of [...tbody.children]) if (!keep.has(tr)) tr.remove();

    const empty = $('empty');
    empty.hidden = list.length > 0;
    empty.textContent = $('conn').dataset.state === 'live' ? 'No signings today.' : "Waiting for today's signings…";
    $('updated').textContent = lastEventAt ? `Last change ${lastEventAt.toLocaleTimeString()}` : '';
  }

  /* ---------------------------------------------------------------- */
  /* Clock, midnight                                                  */
  /* ---------------------------------------------------------------- */

  function tickClock() {
    const now = new Date();
    $('clock').textContent = hhmm(now);
    $('today').textContent = now.toLocaleDateString([], { weekday: 'long', day: 'numeric', month: 'long' });
  }

  function atMidnight() {
    const { end } = dayBounds();
    setTimeout(() => {
      render();
      /* a new day: resubscribe with the new day's range (reconnects at once) */
      if (ws) { attempt = 0; ws.close(); }
      atMidnight();
    }, end.getTime() - Date.now() + 1000);
  }

  tickClock();
  setInterval(tickClock, 5000);
  atMidnight();
  render();
  connect();
})();
