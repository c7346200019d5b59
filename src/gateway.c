/*
 * gateway.c - libwebsockets server, Parse LiveQuery connections, outbound
 * queues; see gateway.h.
 *
 * Outbound path. Each connection has a ring of (shared body, event type,
 * requestId) entries, bounded in bytes. The body of an event is serialized
 * once per subscription group view (registry.c); only the short head
 * {"op":…,"clientId":…,"requestId":…, differs per subscriber and is written
 * at send time. As many queued frames as fit in one batch are framed here
 * (server frames are unmasked, so a header is 2, 4 or 10 bytes) and written
 * with a single lws_write(LWS_WRITE_RAW): DESIGN's measurements put one frame
 * per write at ~150k frames/s and 16 per write near 1M/s. permessage-deflate
 * is not offered, so raw frames stay valid. Frames an event batch queued are
 * written right after the batch when the socket can take them; otherwise (and
 * for replies to requests) on lws' WRITEABLE callback (BENCHMARKS.md).
 *
 * A consumer whose queue passes --max-queue-bytes loses its queue, gets one
 * error frame (code 155) and is closed (1008) once that is written, or by an
 * lws timeout if it never reads again: memory stays bounded and no other
 * connection waits for it.
 */
#include "livequery/gateway.h"

#include <uv.h> /* before libwebsockets.h, which then declares its libuv API */

#include <libwebsockets.h>
#include <liburing.h>
#include <uthash.h>
#include <utlist.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>

#include "livequery/acl.h"
#include "livequery/auth.h"
#include "livequery/bus.h"
#include "livequery/clock.h"
#include "livequery/event.h"
#include "livequery/json.h"
#include "livequery/jsonout.h"
#include "livequery/log.h"
#include "livequery/metrics.h"
#include "livequery/objcache.h"
#include "livequery/proto.h"
#include "livequery/registry.h"
#include "livequery/snapshot.h"

/* Bytes framed into one lws_write. ~16-30 typical frames: DESIGN measured the
 * gain flattening out near 16 frames per write, and what the kernel does not
 * take at once lws copies aside, so a larger batch only costs memory. */
#define BATCH_BYTES (8 * 1024)
#define FAN_RING 1024            /* connections written per io_uring submission, at most */
#define FAN_BYTES (1024 * 1024)  /* ... and bytes: gw->fan stays ~1 MiB, kept between batches */
#define FRAME_HEAD_EST 64        /* head bytes besides ids, for queue accounting */
#define SLOW_CLOSE_SECS 5        /* a culled client that never reads is cut after this */
#define HANDSHAKE_SLACK_MS 100   /* lws' timeout fires at whole seconds; the loop clock is cached */
#define MAX_PARKED 64            /* requests a connection may queue behind a session lookup */
#define MAX_QUERIES 16           /* query ops of one connection waiting for their snapshot */
#define HOLD_EVENTS 10000        /* events one subscription may hold while its snapshot is read */
#define AUTH_TICK_MS 500         /* session expiry and revalidation are checked this often */
#define TOKEN_MAX 512            /* longer session tokens are refused unlooked-up (Parse's are 34 bytes):
                                    the cache holds up to --auth-cache-size of them */

/* A request waiting for a session lookup, with the session it waits on. */
typedef struct parked {
    struct parked *next;
    lq_request req;
    lq_session *sess; /* a reference, or NULL (the request does not need one) */
} parked;

/* A query op waiting for its snapshot (MongoDB), or for its subscription's
 * position (the resume extension) before it starts. */
typedef struct pquery {
    uint64_t token;         /* its hold and its snapshot job; 0 while waiting */
    UT_hash_handle hh;      /* in gw->pqueries by token, once reading */
    struct pquery *cnext;   /* in conn.pq */
    struct conn *c;
    double rid;
    int asked;              /* query ops this read answers (repeats while it runs join it) */
    int64_t t0_ms;
} pquery;

typedef struct qentry {
    lq_body *body;
    double rid;
    int type;       /* lq_event_type, or -1: body is a whole frame */
    uint32_t bytes; /* what it counts against the limit, fixed when queued */
} qentry;

/* Per-connection state: lws's per-session user data, zeroed by lws.
 * It is ONLY read or written from the lws service thread. */
typedef struct conn {
    struct lws *wsi;
    struct lq_gateway *gw;
    struct conn *prev, *next; /* in gw->conns */
    lq_client *client;   /* NULL until `connect` succeeded */
    char client_id[37];
    lq_buf ids;          /* "clientId":"…","installationId":"…" */
    lq_buf rx;           /* a message arriving in fragments */
    int64_t rl_tokens;   /* message token bucket, in thousandths of a message */
    int64_t rl_last_ms;  /* loop time the bucket was last topped up */
    int64_t rl_window_ms; /* start of the current window of refused messages */
    int rl_refused;      /* messages refused in that window */
    int rl_closed;       /* closing for flooding: later messages are dropped */
    qentry *q;
    uint32_t qhead, qlen, qcap;
    size_t qbytes;
    int counted;         /* included in gw->nconns */
    struct conn *dirty_next; /* in gw->dirty while a dispatch queued frames for it */
    int dirty;
    int closing;         /* send what is queued, then close */
    int close_sent;      /* our close frame is out; waiting for the peer's */
    int close_code;
    const char *close_reason;
    char *http_body;     /* GET /health, /metrics */
    size_t http_len;
    char *token;         /* the connect-level sessionToken, or NULL */
    int bad_token;       /* the connect-level token was refused unlooked-up (too long) */
    lq_session *sess;    /* its session (a reference; looked up at connect), or NULL */
    parked *parked, *parked_tail; /* requests held back while the head waits for a session */
    int nparked;
    lq_session *waiting; /* the session the head request waits on, or NULL */
    pquery *pq;          /* its query ops in progress */
    int npq;
    struct conn *wait_next; /* in waiting->ud's list */
} conn;

struct lq_gateway {
    const lq_config *cfg;
    struct lws_context *ctx;
    lq_registry *reg;
    lq_query_limits qlim; /* the registry's, for snapshot reads */
    lq_objcache *cache;   /* without MongoDB: last-seen objects for the query op, else NULL */
    pquery *pqueries;     /* query ops reading a snapshot, by token */
    lq_buf result;        /* one query result frame */
    lq_bus *bus;
    lq_auth *auth;  /* NULL with --role tailer, and once freeing */
    lws_sorted_usec_list_t auth_tick;
    lq_session **unref; /* session references to drop outside auth hooks */
    size_t nunref, capunref;
    lws_retry_bo_t retry;
    volatile sig_atomic_t stop;
    volatile sig_atomic_t reload; /* SIGHUP seen: call reload_fn on the service thread */
    lq_reload_fn reload_fn;
    void *reload_ud;
    uv_loop_t *uv;  /* &uv_loop when running on libuv; NULL on lws' poll loop */
    uv_loop_t uv_loop;
    void *foreign_loops[1];
    struct lws_http_mount display; /* --web-root served at /display */
    int draining;   /* shutting down: closing every connection with 1001 */
    int drained;    /* drain over: every connection gone, or the deadline passed */
    int64_t drain_deadline;
    lws_sorted_usec_list_t drain_tick;
    conn *conns;
    int nconns;
    int dispatching; /* inside drain_bus: new frames go on the dirty list */
    conn *dirty;     /* connections to flush when the batch of events is done */
    int64_t queued_bytes; /* sum of every conn.qbytes; a plain field: one thread */
    uint64_t last_token; /* the last positions subscription's handle (lq_sub_auth.token) */
    lq_buf out;     /* LWS_PRE + a batch of frames */
    lq_buf scratch; /* one frame or head at a time */
    lq_buf posframe; /* one frame of a positions subscription */
    /* fan-out writes (flush_dirty) */
    int ring_ok;           /* gw->ring is set up */
    struct io_uring ring;
    lq_buf fan;            /* LWS_PRE + every pending connection's framed batch */
    struct fanent { conn *c; size_t off, len; } *fan_v;
    size_t fan_cap;
    int64_t *lat_ts;       /* ts (ms) of the events a batch delivered: latency after its flush */
    size_t nlat, caplat;
};

/* Monotonic milliseconds for per-message bookkeeping: on libuv the loop's
 * cached time (updated once per wake-up, no system call); on lws' poll loop
 * its clock (vDSO clock_gettime). */
static int64_t loop_ms(const lq_gateway *gw)
{
    return gw->uv ? (int64_t)uv_now(gw->uv) : (int64_t)(lws_now_usecs() / 1000);
}

/*---- outbound queue ----------------------------------------------------------*/

/* What a frame counts against --max-queue-bytes. */
static size_t frame_bytes(const conn *c, const lq_body *body, int type)
{
    return body->len + (type >= 0 ? c->ids.len + FRAME_HEAD_EST : 0);
}

static void queue_clear(conn *c)
{
    while (c->qlen) {
        qentry *e = &c->q[c->qhead];
        lq_body_decref(e->body);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    if (c->qbytes)
        c->gw->queued_bytes -= (int64_t)c->qbytes;
    c->qbytes = 0;
}

static void push(conn *c, lq_body *body, int type, double rid)
{
    if (c->qlen == c->qcap) {
        uint32_t ncap = c->qcap ? c->qcap * 2 : 2; /* most connections are idle */
        qentry *nq = lq_xmalloc(ncap * sizeof(qentry));
        for (uint32_t i = 0; i < c->qlen; i++)
            nq[i] = c->q[(c->qhead + i) % c->qcap];
        free(c->q);
        c->q = nq;
        c->qcap = ncap;
        c->qhead = 0;
    }
    qentry *e = &c->q[(c->qhead + c->qlen) % c->qcap];
    lq_body_incref(body);
    e->body = body;
    e->type = type;
    e->rid = rid;
    e->bytes = (uint32_t)frame_bytes(c, body, type);
    c->qlen++;
    size_t n = e->bytes;
    c->qbytes += n;
    c->gw->queued_bytes += (int64_t)n;
    if (c->qlen == 1) {
        if (c->gw->dispatching) {
            if (!c->dirty) {
                c->dirty = 1;
                c->dirty_next = c->gw->dirty;
                c->gw->dirty = c;
            }
        } else {
            lws_callback_on_writable(c->wsi);
        }
    }
}

static void close_after_flush(conn *c, int code, const char *reason)
{
    c->closing = 1;
    c->close_code = code;
    c->close_reason = reason;
    lws_callback_on_writable(c->wsi);
}

static void send_error(lq_gateway *gw, conn *c, const lq_error *err, int reconnect, int has_rid,
                       double rid);

static void slow_consumer(lq_gateway *gw, conn *c)
{
    lq_error err;
    size_t had = c->qbytes;

    queue_clear(c);
    lq_error_set(&err, LQ_PARSE_ERR_LIMIT, "client is too slow: more than %zu bytes queued",
                 gw->cfg->max_queue_bytes);
    send_error(gw, c, &err, 1, 0, 0);
    close_after_flush(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "slow consumer");
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, SLOW_CLOSE_SECS);
    LQ_METRIC_INC(slow_consumers_closed);
    LQ_WARN("slow consumer dropped", "client=%s queued_bytes=%zu limit=%zu", c->client_id, had,
            gw->cfg->max_queue_bytes);
}

/* Queues a frame unless the connection is closing; culls it if over its limit. */
static void enqueue(lq_gateway *gw, conn *c, lq_body *body, int type, double rid)
{
    if (c->closing)
        return;
    if (c->qbytes + frame_bytes(c, body, type) > gw->cfg->max_queue_bytes) {
        slow_consumer(gw, c);
        return;
    }
    push(c, body, type, rid);
}

static void send_frame(lq_gateway *gw, conn *c, const lq_buf *frame)
{
    lq_body *b = lq_body_new(frame->data, frame->len);
    enqueue(gw, c, b, -1, 0);
    lq_body_decref(b);
}

static void send_error(lq_gateway *gw, conn *c, const lq_error *err, int reconnect, int has_rid,
                       double rid)
{
    gw->scratch.len = 0;
    lq_proto_error(&gw->scratch, err, reconnect, has_rid, rid);
    LQ_METRIC_INC(requests_rejected);
    if (lq_log_level >= LQ_LOG_DEBUG) {
        char text[320];
        LQ_DEBUG("error sent", "client=%s code=%d error=\"%s\"", c->client_id[0] ? c->client_id : "-",
                 err->code, lq_log_escape(text, sizeof(text), err->text));
    }
    send_frame(gw, c, &gw->scratch);
}

static void send_reply(lq_gateway *gw, conn *c, const char *op, int has_rid, double rid)
{
    gw->scratch.len = 0;
    lq_proto_reply(&gw->scratch, op, &c->ids, has_rid, rid);
    send_frame(gw, c, &gw->scratch);
}

static size_t ws_header(unsigned char *h, size_t len)
{
    h[0] = 0x81; /* FIN + text */
    if (len < 126) {
        h[1] = (unsigned char)len;
        return 2;
    }
    if (len < 65536) {
        h[1] = 126;
        h[2] = (unsigned char)(len >> 8);
        h[3] = (unsigned char)len;
        return 4;
    }
    h[1] = 127;
    for (int i = 0; i < 8; i++)
        h[2 + i] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
    return 10;
}

/* res bytes of the len at p went out (res < 0: -errno); the rest goes to
 * lws_write, which keeps it and asks for WRITEABLE (the bytes before p + res
 * are ours: headroom enough for lws). 0, or -1 when the connection is broken. */
static int hand_rest(struct lws *wsi, unsigned char *p, size_t len, int res)
{
    if (res == -EAGAIN || res == -EWOULDBLOCK || res == -EINTR)
        res = 0;
    if (res < 0)
        return -1;
    if ((size_t)res == len)
        return 0;
    LQ_METRIC_INC(writes_short);
    return lws_write(wsi, p + res, len - (size_t)res, LWS_WRITE_RAW) < (int)(len - (size_t)res) ? -1 : 0;
}

/* Writes n framed bytes (p has LWS_PRE bytes of headroom before it) on a
 * WebSocket connection. Straight to the socket when lws holds nothing back:
 * lws_write on libuv costs more than the send itself (perf: its bookkeeping,
 * and a POLLOUT re-arm per call that libuv turns into two epoll_ctl); what the
 * kernel does not take goes to lws (hand_rest). TLS connections always go
 * through lws. 0, or -1 when the connection is broken. */
static int send_raw(struct lws *wsi, unsigned char *p, size_t n)
{
    if (lws_is_ssl(wsi) || lws_partial_buffered(wsi))
        return lws_write(wsi, p, n, LWS_WRITE_RAW) < (int)n ? -1 : 0;
    ssize_t w = send(lws_get_socket_fd(wsi), p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    return hand_rest(wsi, p, n, w < 0 ? -errno : (int)w);
}

/* Frames as many of c's queued entries as fit in one batch onto out (from
 * out->len on) and takes them off the queue. */
static void frame_batch(lq_gateway *gw, conn *c, lq_buf *out)
{
    lq_buf *head = &gw->scratch;
    size_t start = out->len, freed = 0;

    while (c->qlen) {
        qentry *e = &c->q[c->qhead];
        head->len = 0;
        if (e->type >= 0)
            lq_proto_event_head(head, lq_event_name(e->type), &c->ids, e->rid);
        size_t plen = head->len + e->body->len;
        if (out->len > start && out->len - start + plen + 10 > BATCH_BYTES)
            break;
        lq_buf_reserve(out, plen + 10 + LWS_PRE);
        out->len += ws_header((unsigned char *)out->data + out->len, plen);
        memcpy(out->data + out->len, head->data, head->len);
        out->len += head->len;
        memcpy(out->data + out->len, e->body->data, e->body->len);
        out->len += e->body->len;

        freed += e->bytes; /* not recomputed: a second connect changes ids.len */
        lq_body_decref(e->body);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    c->qbytes -= freed;
    gw->queued_bytes -= (int64_t)freed;
    if (c->qlen == 0 && c->qcap > 1024) { /* a past backlog does not keep its ring */
        free(c->q);
        c->q = NULL;
        c->qcap = 0;
        c->qhead = 0;
    }
}

/* Frames as many queued entries as fit in one batch and writes them. */
static int write_batch(lq_gateway *gw, conn *c)
{
    lq_buf *out = &gw->out;

    out->len = LWS_PRE;
    frame_batch(gw, c, out);
    size_t n = out->len - LWS_PRE;
    if (send_raw(c->wsi, (unsigned char *)out->data + LWS_PRE, n) < 0)
        return -1;
    LQ_METRIC_ADD(bytes_out, n);
    if (c->qlen || c->closing)
        lws_callback_on_writable(c->wsi);
    return 0;
}

/* A fan-out write finished (res as for hand_rest): the rest to lws, and
 * WRITEABLE when more is queued; a broken connection is cut. */
static void fan_done(conn *c, unsigned char *p, size_t len, int res)
{
    if (hand_rest(c->wsi, p, len, res) < 0) {
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
        return;
    }
    LQ_METRIC_ADD(bytes_out, len);
    if (c->qlen || c->closing)
        lws_callback_on_writable(c->wsi);
}

/* Sends the framed batches of gw->fan_v[0..n) with one io_uring submission:
 * one system call for n connections instead of n (bench/send_floor.c: about
 * half the CPU per frame on this machine, where each system call is
 * expensive). MSG_DONTWAIT: a socket that cannot take it all answers at once
 * with what it took, and the rest is lws' (fan_done). Every entry is finished
 * exactly once: waited for until all n have completed; if the ring fails, the
 * ring is dropped (with what it had not submitted) and the entries not yet
 * completed go out with send(). */
static void fan_submit(lq_gateway *gw, size_t n)
{
    struct io_uring_cqe *cqe;
    size_t seen = 0;

    for (size_t i = 0; i < n; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&gw->ring); /* n <= ring size: never NULL */
        io_uring_prep_send(sqe, lws_get_socket_fd(gw->fan_v[i].c->wsi),
                           gw->fan.data + gw->fan_v[i].off, gw->fan_v[i].len,
                           MSG_DONTWAIT | MSG_NOSIGNAL);
        io_uring_sqe_set_data64(sqe, i);
    }
    while (seen < n) {
        int rc = io_uring_submit_and_wait(&gw->ring, 1);
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) {
            LQ_WARN("io_uring failed; fan-out writes use send() from now on", "error=%d", -rc);
            io_uring_queue_exit(&gw->ring);
            gw->ring_ok = 0;
            for (size_t i = 0; i < n; i++)
                if (gw->fan_v[i].c) {
                    unsigned char *p = (unsigned char *)gw->fan.data + gw->fan_v[i].off;
                    ssize_t w = send(lws_get_socket_fd(gw->fan_v[i].c->wsi), p, gw->fan_v[i].len,
                                     MSG_DONTWAIT | MSG_NOSIGNAL);
                    fan_done(gw->fan_v[i].c, p, gw->fan_v[i].len, w < 0 ? -errno : (int)w);
                }
            return;
        }
        while (io_uring_peek_cqe(&gw->ring, &cqe) == 0) {
            size_t i = (size_t)io_uring_cqe_get_data64(cqe);
            int res = cqe->res;
            io_uring_cqe_seen(&gw->ring, cqe);
            if (i >= n || gw->fan_v[i].c == NULL)
                continue;
            fan_done(gw->fan_v[i].c, (unsigned char *)gw->fan.data + gw->fan_v[i].off,
                     gw->fan_v[i].len, res);
            gw->fan_v[i].c = NULL; /* finished */
            seen++;
        }
    }
}

/* Writes the frames the last batch of events queued, on every connection that
 * got some: one io_uring submission per FAN_RING connections, or one send()
 * each. A connection lws holds a partial write for (or a TLS one) waits for /
 * goes through WRITEABLE and lws. */
static void flush_dirty(lq_gateway *gw)
{
    conn *c;
    size_t n = 0;

    gw->fan.len = LWS_PRE; /* headroom for lws_write of a remainder */
    while ((c = gw->dirty) != NULL) {
        gw->dirty = c->dirty_next;
        c->dirty = 0;
        if (c->qlen == 0 || c->closing)
            continue;
        if (lws_partial_buffered(c->wsi)) { /* no system call to know */
            lws_callback_on_writable(c->wsi);
            continue;
        }
        if (!gw->ring_ok || lws_is_ssl(c->wsi)) {
            if (write_batch(gw, c) < 0) /* it asks for WRITEABLE itself if more is queued */
                lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
            continue;
        }
        if (n == gw->fan_cap) {
            gw->fan_cap = gw->fan_cap ? gw->fan_cap * 2 : 64;
            gw->fan_v = lq_xrealloc(gw->fan_v, gw->fan_cap * sizeof(*gw->fan_v));
        }
        gw->fan_v[n].c = c;
        gw->fan_v[n].off = gw->fan.len;
        frame_batch(gw, c, &gw->fan);
        gw->fan_v[n].len = gw->fan.len - gw->fan_v[n].off;
        if (++n == FAN_RING || gw->fan.len >= FAN_BYTES) {
            fan_submit(gw, n);
            n = 0;
            gw->fan.len = LWS_PRE;
        }
    }
    if (n)
        fan_submit(gw, n);
    if (gw->fan.cap > 2 * FAN_BYTES) { /* a giant frame does not keep its buffer */
        lq_buf_release(&gw->fan);
        lq_buf_init(&gw->fan);
    }
}

/* Sends our close frame ourselves, framed like our data frames: lws 4.1.6 on
 * libuv drops the close frame of lws_close_reason() when a WRITEABLE callback
 * returns -1 (the peer sees 1006). lws answers the peer's closing reply and
 * then closes; the timeout covers a peer that never replies. */
static int send_close(conn *c)
{
    unsigned char buf[LWS_PRE + 2 + 125], *p = buf + LWS_PRE;
    size_t rlen = strlen(c->close_reason);

    if (rlen > 123) /* control frame payloads are at most 125 bytes */
        rlen = 123;
    p[0] = 0x88; /* FIN + close */
    p[1] = (unsigned char)(2 + rlen);
    p[2] = (unsigned char)(c->close_code >> 8);
    p[3] = (unsigned char)c->close_code;
    memcpy(p + 4, c->close_reason, rlen);
    if (lws_write(c->wsi, p, 4 + rlen, LWS_WRITE_RAW) < (int)(4 + rlen))
        return -1;
    c->close_sent = 1;
    lws_set_timeout(c->wsi, PENDING_TIMEOUT_CLOSE_ACK, 3);
    return 0;
}

/*---- requests ----------------------------------------------------------------*/

static void client_id_new(char out[37])
{
    unsigned char r[16];
    if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
        for (size_t i = 0; i < sizeof(r); i++) /* getrandom cannot fail for 16 bytes after boot */
            r[i] = (unsigned char)rand();
    }
    r[6] = (unsigned char)((r[6] & 0x0f) | 0x40); /* version 4 */
    r[8] = (unsigned char)((r[8] & 0x3f) | 0x80); /* variant 10 */
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", r[0],
             r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13], r[14],
             r[15]);
}

/* Compares secrets in time independent of where they differ. */
static int secret_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d = la != lb;
    for (size_t i = 0; i < la; i++)
        d |= (unsigned char)(a[i] ^ b[i % (lb ? lb : 1)]);
    return d == 0 && lb > 0;
}

/* Drops a session reference. Deferred: a reference can fall inside an auth
 * hook (a revocation removes the subscriptions that held it), where the
 * session must stay alive; flush_unref runs after every lq_auth_poll. */
static void session_drop(lq_gateway *gw, lq_session *s)
{
    if (s == NULL || gw->auth == NULL)
        return;
    if (gw->nunref == gw->capunref) {
        gw->capunref = gw->capunref ? gw->capunref * 2 : 64;
        gw->unref = lq_xrealloc(gw->unref, gw->capunref * sizeof(lq_session *));
    }
    gw->unref[gw->nunref++] = s;
}

static void flush_unref(lq_gateway *gw)
{
    for (size_t i = 0; i < gw->nunref; i++)
        if (gw->auth)
            lq_auth_release(gw->auth, gw->unref[i]);
    gw->nunref = 0;
}

static void tag_release(void *ud, void *tag)
{
    session_drop(ud, tag);
}

/* A subscription the registry removed (session revoked, CLP or roles changed). */
static void revoked(void *connp, double rid, const lq_error *err, void *ud)
{
    lq_gateway *gw = ud;
    conn *c = connp;
    char text[320];

    send_error(gw, c, err, 0, 1, rid);
    LQ_INFO("subscription ended", "client=%s code=%d error=\"%s\"", c->client_id, err->code,
            lq_log_escape(text, sizeof(text), err->text));
}

static void unwait(conn *c)
{
    lq_session *s = c->waiting;
    conn **pp;

    if (s == NULL)
        return;
    for (pp = (conn **)&s->ud; *pp; pp = &(*pp)->wait_next) {
        if (*pp == c) {
            *pp = c->wait_next;
            break;
        }
    }
    c->wait_next = NULL;
    c->waiting = NULL;
    LQ_METRIC_ADD(auth_waiting, -1);
}

static void handle_request(lq_gateway *gw, conn *c, lq_request *req, lq_session *sess);
static void resume(lq_gateway *gw, conn *c);
static void on_query(lq_gateway *gw, conn *c, const lq_request *req);
static void queries_drop(lq_gateway *gw, conn *c, int all, double rid);
static void queries_start(lq_gateway *gw, conn *c, double rid);
static void hook_job_done(void *ud, void *arg);

static void hook_session_changed(void *ud, lq_session *s)
{
    lq_gateway *gw = ud;
    conn *w = s->ud;

    s->ud = NULL;
    while (w) { /* connections whose head request waited on s */
        conn *next = w->wait_next;
        w->wait_next = NULL;
        w->waiting = NULL;
        LQ_METRIC_ADD(auth_waiting, -1);
        resume(gw, w);
        w = next;
    }
    if (s->state == LQ_SESSION_INVALID) {
        lq_error err;
        lq_error_set(&err, LQ_PARSE_ERR_INVALID_SESSION, "Invalid session token");
        size_t n = lq_registry_revoke_tag(gw->reg, s, &err, revoked, gw);
        if (n)
            LQ_INFO("session ended: subscriptions told", "session=%s why=\"%s\" subscriptions=%zu",
                    s->session_id[0] ? s->session_id : "-", s->why ? s->why : "-", n);
    }
}

static void hook_roles_changed(void *ud, lq_principals *p)
{
    lq_gateway *gw = ud;
    LQ_INFO("roles changed", "user=%s roles=%zu", p->user_id ? p->user_id : "-", p->nroles);
    lq_registry_recheck(gw->reg, p, revoked, gw);
}

static const lq_auth_hooks auth_hooks = {hook_session_changed, hook_roles_changed, hook_job_done};

static void auth_poll(lq_gateway *gw)
{
    if (gw->auth == NULL)
        return;
    lq_auth_poll(gw->auth, lq_wall_ms(), &auth_hooks, gw);
    flush_unref(gw);
}

static void on_connect(lq_gateway *gw, conn *c, const lq_request *req)
{
    lq_error err;
    int master = 0;

    if (strcmp(req->application_id, gw->cfg->app_id) != 0) {
        lq_error_set(&err, LQ_PARSE_ERR_KEY, "applicationId does not match this server");
        send_error(gw, c, &err, 0, 0, 0);
        return;
    }
    if (req->master_key) {
        if (gw->cfg->master_key == NULL || !secret_equal(req->master_key, gw->cfg->master_key)) {
            lq_error_set(&err, LQ_PARSE_ERR_KEY, "Key in request is not valid");
            send_error(gw, c, &err, 0, 0, 0);
            LQ_WARN("connect refused: wrong master key", "peer_client=%s",
                    c->client_id[0] ? c->client_id : "-");
            return;
        }
        master = 1;
    }
    /* a second connect starts a new client: new id, no subscriptions */
    queries_drop(gw, c, 1, 0);
    lq_registry_client_free(gw->reg, c->client);
    free(c->token);
    c->token = NULL;
    session_drop(gw, c->sess);
    c->sess = NULL;
    c->bad_token = 0;
    if (!master && req->session_token && strlen(req->session_token) > TOKEN_MAX) {
        c->bad_token = 1; /* refused at subscribe, like any invalid token */
    } else if (!master && req->session_token && req->session_token[0] && gw->auth) {
        /* looked up now, so the first subscribe rarely waits; an invalid
         * token is accepted here (as Parse does) and refused at subscribe */
        c->token = lq_xstrdup(req->session_token);
        c->sess = lq_auth_get(gw->auth, c->token);
    }
    client_id_new(c->client_id);
    lq_proto_ids(&c->ids, c->client_id, req->installation_id);
    /* kept for the connection's life, so no slack: ~190 bytes per connection */
    c->ids.data = lq_xrealloc(c->ids.data, c->ids.len + 1);
    c->ids.cap = c->ids.len + 1;
    c->client = lq_registry_client_new(gw->reg, c, master);
    send_reply(gw, c, "connected", 0, 0);
    LQ_DEBUG("client connected", "client=%s master=%d", c->client_id, master);
}

/* The session a subscribe acts under: its own sessionToken first, then the
 * connect-level one (reference §4). A new reference, or NULL (anonymous). */
static lq_session *subscribe_session(lq_gateway *gw, conn *c, const lq_request *req)
{
    if (gw->auth == NULL || lq_registry_client_is_master(c->client))
        return NULL;
    if (req->session_token && req->session_token[0])
        return lq_auth_get(gw->auth, req->session_token);
    if (c->token)
        return lq_auth_get(gw->auth, c->token);
    return NULL;
}

/* Handles a subscribe/update. sess: the session a parked request waited on
 * (its reference is consumed), or NULL on first sight. Returns 1 when the
 * request must wait for a session lookup (the caller parks it with
 * *wait, a reference), 0 when it was answered. */
static int on_subscribe(lq_gateway *gw, conn *c, const lq_request *req, lq_session *sess,
                        lq_session **wait)
{
    lq_error err;
    lq_sub_auth auth = {NULL, NULL, 0};

    if (c->client == NULL) {
        session_drop(gw, sess);
        lq_error_set(&err, LQ_PARSE_ERR_NO_CLIENT,
                     "Can not find this client, make sure you connect to server before subscribing");
        send_error(gw, c, &err, 1, 0, 0);
        return 0;
    }
    if (sess == NULL && !lq_registry_client_is_master(c->client) &&
        (req->session_token && req->session_token[0] ? strlen(req->session_token) > TOKEN_MAX
                                                     : c->bad_token)) {
        LQ_METRIC_INC(auth_tokens_invalid);
        lq_error_set(&err, LQ_PARSE_ERR_INVALID_SESSION, "Invalid session token");
        send_error(gw, c, &err, 0, 1, req->request_id);
        return 0;
    }
    if (sess == NULL)
        sess = subscribe_session(gw, c, req);
    if (sess) {
        switch (sess->state) {
        case LQ_SESSION_PENDING:
            *wait = sess;
            return 1;
        case LQ_SESSION_VALID:
            auth.who = sess->who;
            auth.tag = sess; /* the subscription holds this reference */
            break;
        case LQ_SESSION_INVALID:
            LQ_DEBUG("subscribe refused: invalid session token", "client=%s why=\"%s\"", c->client_id,
                     sess->why ? sess->why : "-");
            session_drop(gw, sess);
            lq_error_set(&err, LQ_PARSE_ERR_INVALID_SESSION, "Invalid session token");
            send_error(gw, c, &err, 0, 1, req->request_id);
            return 0;
        case LQ_SESSION_UNAVAILABLE:
            session_drop(gw, sess);
            lq_error_set(&err, LQ_PARSE_ERR_RESYNC,
                         "Session token could not be checked now; try again");
            send_error(gw, c, &err, 1, 1, req->request_id);
            return 0;
        }
    }
    if (req->positions)
        auth.token = ++gw->last_token;
    if (lq_registry_subscribe(gw->reg, c->client, req, &auth, &err) != LQ_OK) {
        session_drop(gw, sess);
        send_error(gw, c, &err, 0, 1, req->request_id);
        return 0;
    }
    queries_drop(gw, c, 0, req->request_id); /* the replaced subscription's, if any */
    if (req->positions) { /* paused until the bus answers: on_position */
        lq_bus_position(gw->bus, auth.token, req->class_name, req->has_since ? req->since_epoch : NULL,
                        req->since_seq);
        return 0;
    }
    send_reply(gw, c, "subscribed", 1, req->request_id);
    return 0;
}

static void on_unsubscribe(lq_gateway *gw, conn *c, const lq_request *req)
{
    lq_error err;

    if (c->client == NULL) {
        lq_error_set(&err, LQ_PARSE_ERR_NO_CLIENT,
                     "Can not find this client, make sure you connect to server before unsubscribing");
        send_error(gw, c, &err, 1, 0, 0);
        return;
    }
    if (lq_registry_unsubscribe(gw->reg, c->client, req->request_id) != LQ_OK) {
        lq_buf rid;
        lq_buf_init(&rid);
        lq_proto_request_id(&rid, req->request_id);
        lq_error_set(&err, LQ_PARSE_ERR_NO_CLIENT,
                     "Cannot find subscription with clientId %s subscriptionId %s. Make sure you "
                     "subscribe to live query server before unsubscribing.",
                     c->client_id, rid.data);
        lq_buf_release(&rid);
        send_error(gw, c, &err, 1, 0, 0);
        return;
    }
    queries_drop(gw, c, 0, req->request_id);
    send_reply(gw, c, "unsubscribed", 1, req->request_id);
}

/* Adds req (taken) to c's parked requests: at the head when it is the one
 * that waits (sess, a reference), else at the tail. */
static void park(conn *c, lq_request *req, lq_session *sess, int at_head)
{
    parked *p = lq_xcalloc(1, sizeof(*p));

    p->req = *req;
    p->sess = sess;
    if (at_head) {
        p->next = c->parked;
        c->parked = p;
        if (c->parked_tail == NULL)
            c->parked_tail = p;
    } else {
        if (c->parked_tail)
            c->parked_tail->next = p;
        else
            c->parked = p;
        c->parked_tail = p;
    }
    c->nparked++;
    if (sess && c->waiting == NULL) {
        c->waiting = sess;
        c->wait_next = sess->ud;
        sess->ud = c;
        LQ_METRIC_INC(auth_waiting);
    }
}

/* Answers req (taken), or parks it when it must wait for a session. sess:
 * the session a parked request waited on (a reference), or NULL. */
static void handle_request(lq_gateway *gw, conn *c, lq_request *req, lq_session *sess)
{
    lq_session *wait = NULL;

    switch (req->op) {
    case LQ_OP_CONNECT:
        on_connect(gw, c, req);
        break;
    case LQ_OP_SUBSCRIBE:
    case LQ_OP_UPDATE: /* update = re-subscribe under the same requestId */
        if (on_subscribe(gw, c, req, sess, &wait)) {
            park(c, req, wait, 1);
            return;
        }
        break;
    case LQ_OP_UNSUBSCRIBE:
        on_unsubscribe(gw, c, req);
        break;
    case LQ_OP_QUERY:
        on_query(gw, c, req);
        break;
    }
    lq_request_release(req);
}

/* The session c waited on is settled: answer its parked requests in order
 * until one has to wait again. */
static void resume(lq_gateway *gw, conn *c)
{
    parked *p;

    while (c->waiting == NULL && (p = c->parked) != NULL) {
        c->parked = p->next;
        if (c->parked == NULL)
            c->parked_tail = NULL;
        c->nparked--;
        lq_request req = p->req;
        lq_session *sess = p->sess;
        free(p);
        handle_request(gw, c, &req, sess);
    }
}

static void on_message(lq_gateway *gw, conn *c, const char *buf, size_t len, int binary)
{
    lq_request req;
    lq_error err;

    LQ_METRIC_INC(frames_in);
    if (binary) {
        LQ_METRIC_INC(frames_invalid_json);
        LQ_DEBUG("binary frame ignored", "client=%s bytes=%zu", c->client_id, len);
        return;
    }
    switch (lq_proto_parse(buf, len, gw->cfg->max_json_depth, &req, &err)) {
    case LQ_PARSE_IGNORE:
        LQ_METRIC_INC(frames_invalid_json);
        LQ_DEBUG("non-JSON frame ignored", "client=%s bytes=%zu", c->client_id, len);
        return;
    case LQ_PARSE_ERROR:
        send_error(gw, c, &err, 1, 0, 0);
        return;
    case LQ_PARSE_REFUSED:
        send_error(gw, c, &err, 0, 0, 0);
        return;
    case LQ_PARSE_OK:
        break;
    }
    if (c->parked) { /* requests are answered in order: wait behind the head */
        if (c->nparked >= MAX_PARKED) {
            lq_error_set(&err, LQ_PARSE_ERR_LIMIT,
                         "too many requests waiting for a session check (limit %d)", MAX_PARKED);
            send_error(gw, c, &err, 1, 0, 0);
            lq_request_release(&req);
            return;
        }
        park(c, &req, NULL, 0);
        return;
    }
    handle_request(gw, c, &req, NULL);
}

/*---- events from the bus -----------------------------------------------------*/

/* `,"epoch":"…","seq":N` of a positions subscription (the resume extension). */
static void put_position(lq_buf *b, const char *epoch, int64_t seq)
{
    char num[32];
    lq_buf_puts(b, ",\"epoch\":");
    lq_buf_json_string(b, epoch, strlen(epoch));
    snprintf(num, sizeof(num), ",\"seq\":%lld", (long long)seq);
    lq_buf_puts(b, num);
}

static void deliver(void *connp, lq_body *body, lq_event_type type, double rid,
                    const lq_change *pos, void *ud)
{
    lq_gateway *gw = ud;
    conn *c = connp;

    if (pos == NULL || pos->seq <= 0) { /* the common case: a shared body */
        enqueue(gw, c, body, type, rid);
        return;
    }
    /* a positions subscription: a frame of its own, head + position + body */
    lq_buf *f = &gw->posframe;
    f->len = 0;
    lq_proto_event_head(f, lq_event_name(type), &c->ids, rid);
    f->len--; /* the head ends with the comma before the body */
    put_position(f, pos->epoch, pos->seq);
    lq_buf_putc(f, ',');
    lq_buf_append(f, body->data, body->len);
    send_frame(gw, c, f);
}

/* The bus answered a positions subscription (lq_bus_position): it is told
 * `subscribed` with its position, gets the events it missed, and goes live;
 * or it is removed with an error when they are gone or unreadable. */
static void on_position(lq_gateway *gw, const lq_change *ans, int64_t now)
{
    void *cp;
    double rid;
    conn *c;
    lq_error err;

    if (!lq_registry_paused(gw->reg, ans->token, &cp, &rid))
        return; /* unsubscribed, replaced or disconnected meanwhile */
    c = cp;
    if (ans->status != LQ_POSITION_OK) {
        int gone = ans->status == LQ_POSITION_GONE;
        if (gone) {
            LQ_METRIC_INC(resumes_gone);
            lq_error_set(&err, LQ_PARSE_ERR_RESYNC,
                         "Live query events for class %s after the given position are no longer "
                         "available; query again and subscribe without since",
                         ans->class_name);
        } else {
            lq_error_set(&err, LQ_PARSE_ERR_RESYNC,
                         "Live query position for class %s could not be read now; try again",
                         ans->class_name);
        }
        lq_registry_unsubscribe(gw->reg, c->client, rid);
        queries_drop(gw, c, 0, rid);
        send_error(gw, c, &err, !gone, 1, rid);
        LQ_INFO("positions subscription refused", "client=%s class=%s reason=%s", c->client_id,
                ans->class_name, gone ? "gone" : "unavailable");
        return;
    }
    gw->scratch.len = 0;
    lq_proto_reply(&gw->scratch, "subscribed", &c->ids, 1, rid);
    if (ans->epoch[0]) {
        gw->scratch.len--; /* the closing brace */
        put_position(&gw->scratch, ans->epoch, ans->seq);
        lq_buf_putc(&gw->scratch, '}');
    }
    send_frame(gw, c, &gw->scratch);
    long n = lq_registry_activate(gw->reg, ans->token, ans->replay, ans->seq, now, deliver, gw);
    queries_start(gw, c, rid); /* query ops that waited for the position */
    size_t replayed = 0;
    for (const lq_change *ev = ans->replay; ev; ev = ev->next)
        replayed++;
    LQ_METRIC_INC(resumes);
    LQ_METRIC_ADD(resume_events, replayed);
    if (n > 0)
        LQ_METRIC_ADD(deliveries, n);
    LQ_DEBUG("positions subscription live", "client=%s class=%s epoch=%s seq=%lld replayed=%zu delivered=%ld",
             c->client_id, ans->class_name, ans->epoch, (long long)ans->seq, replayed, n);
}

/* The class's history is lost: every connection subscribed to it gets an
 * error with reconnect:true and is closed, so SDKs reconnect, resubscribe
 * and refetch (protocol/PROTOCOL.md, difference 12; protocol/errors.md, code 100). */
static void resync_class(lq_gateway *gw, const lq_change *ev)
{
    lq_error err;
    int n = 0;

    lq_error_set(&err, LQ_PARSE_ERR_RESYNC,
                 "Live query events for class %s were lost; reconnect and resubscribe to resync",
                 ev->class_name);
    for (conn *c = gw->conns; c; c = c->next) {
        if (c->client == NULL || c->closing || !lq_registry_client_watches(c->client, ev->class_name))
            continue;
        send_error(gw, c, &err, 1, 0, 0);
        close_after_flush(c, 1012, "resync");
        n++;
    }
    LQ_WARN("subscribers told to resync", "class=%s epoch=%s connections=%d", ev->class_name,
            ev->epoch, n);
}

/* Delivery latency (livequery_delivery_latency_seconds): the ts of each
 * event a batch delivered, observed once the batch's frames are written. */
static void latency_note(lq_gateway *gw, int64_t ts_ms)
{
    if (gw->nlat == gw->caplat) {
        gw->caplat = gw->caplat ? gw->caplat * 2 : 256;
        gw->lat_ts = lq_xrealloc(gw->lat_ts, gw->caplat * sizeof(int64_t));
    }
    gw->lat_ts[gw->nlat++] = ts_ms;
}

static void latency_observe(lq_gateway *gw)
{
    struct timespec t;

    if (gw->nlat == 0)
        return;
    clock_gettime(CLOCK_REALTIME, &t);
    int64_t now_us = (int64_t)t.tv_sec * 1000000 + t.tv_nsec / 1000;
    for (size_t i = 0; i < gw->nlat; i++)
        lq_metrics_observe_delivery_us(now_us - gw->lat_ts[i] * 1000);
    gw->nlat = 0;
}

static void drain_bus(lq_gateway *gw)
{
    lq_change *ev, *next;
    int64_t now = lq_wall_ms(), last_ts = 0;

    size_t n = 0;

    gw->dispatching = 1;
    for (ev = lq_bus_take(gw->bus); ev; ev = next) {
        next = ev->next;
        switch (ev->op) {
        case LQ_CHANGE_RESYNC:
            if (gw->auth && lq_auth_watches_class(ev->class_name)) {
                lq_auth_on_change(gw->auth, ev); /* their events were lost: re-read what is in use */
                auth_poll(gw);
            }
            resync_class(gw, ev);
            lq_objcache_apply(gw->cache, ev);
            break;
        case LQ_CHANGE_SCHEMA:
            if (lq_registry_set_clp(gw->reg, ev->class_name, ev->clp, revoked, gw))
                LQ_INFO("class-level permissions changed", "class=%s clp=%s", ev->class_name,
                        ev->clp ? "set" : "none");
            break;
        case LQ_CHANGE_POSITION:
            on_position(gw, ev, now);
            break;
        case LQ_CHANGE_CLEAR_CACHE: {
            const char *uid = json_string_value(json_object_get(ev->object, "userId"));
            if (gw->auth)
                lq_auth_clear_cache(gw->auth, uid);
            auth_poll(gw);
            break;
        }
        default:
            /* Parse Server's messages carry the CLP in force at the write */
            if (ev->has_clp && lq_registry_set_clp(gw->reg, ev->class_name, ev->clp, revoked, gw))
                LQ_INFO("class-level permissions changed", "class=%s source=parse-server",
                        ev->class_name);
            if (gw->auth && lq_auth_watches_class(ev->class_name)) {
                /* before later events of the batch: a logout stops delivery at once */
                lq_auth_on_change(gw->auth, ev);
                auth_poll(gw);
            }
            lq_objcache_apply(gw->cache, ev); /* the query op without MongoDB */
            {
                size_t d = lq_registry_dispatch(gw->reg, ev, now, deliver, gw);
                n += d;
                if (d && ev->ts_ms > 0)
                    latency_note(gw, ev->ts_ms);
            }
            break;
        }
        if (ev->ts_ms > 0 && ev->op != LQ_CHANGE_POSITION)
            last_ts = ev->ts_ms;
        lq_change_free(ev);
    }
    gw->dispatching = 0;
    LQ_METRIC_ADD(deliveries, n); /* once per batch: no atomic per delivery */
    if (last_ts)
        lq_metrics_set_bus_lag_ms(now - last_ts);

    /* Write now rather than on the next WRITEABLE round: asking lws for
     * WRITEABLE arms and disarms POLLOUT, two to four epoll_ctl calls per
     * connection and event, and a loop iteration of latency. A socket that
     * cannot take data (or holds a partial write) waits for WRITEABLE. */
    flush_dirty(gw);
    latency_observe(gw);
}

/*---- the query op: initial results (protocol/PROTOCOL.md "query") ----------------
 *
 * Without MongoDB the answer comes at once from the objects the bus carried
 * (objcache.h): the cache is fed on this thread as events are dispatched, so
 * the result and the events before and after it line up by construction.
 * With MongoDB the subscription's events are held (registry.h) from the
 * moment the op is accepted, a snapshot read runs on an auth lookup thread
 * (snapshot.h), and when it comes back at cluster time T the result is sent,
 * then the held events after T; those at or before T (and later arrivals
 * still at or before T: the tailer lagging) are in the result already. */

static void query_error(lq_gateway *gw, conn *c, double rid, int asked, const lq_error *err,
                        int reconnect, int has_rid)
{
    for (int i = 0; i < asked; i++)
        send_error(gw, c, err, reconnect, has_rid, rid);
    LQ_METRIC_ADD(query_errors, asked);
}

/* Documents one snapshot reads at most: 10 x --max-results, at least 1000. */
static size_t scan_max(const lq_gateway *gw)
{
    size_t n = (size_t)gw->cfg->max_results * 10;
    return n < 1000 ? 1000 : n;
}

/* Unlinks q from its connection (and the reading table) and frees it. */
static void pquery_free(lq_gateway *gw, pquery *q)
{
    conn *c = q->c;

    for (pquery **pp = &c->pq; *pp; pp = &(*pp)->cnext) {
        if (*pp == q) {
            *pp = q->cnext;
            break;
        }
    }
    c->npq--;
    if (q->token)
        HASH_DEL(gw->pqueries, q);
    free(q);
}

/* Forgets c's query ops (all, or those of requestId rid): their subscription
 * is gone or replaced, so they get no answer (a result still being read is
 * dropped when it arrives). */
static void queries_drop(lq_gateway *gw, conn *c, int all, double rid)
{
    pquery *q, *next;

    for (q = c->pq; q; q = next) {
        next = q->cnext;
        if (all || q->rid == rid)
            pquery_free(gw, q);
    }
}

typedef struct arr_it {
    json_t **v;
    size_t n, i;
} arr_it;

static const json_t *arr_next(void *p)
{
    arr_it *it = p;
    return it->i < it->n ? it->v[it->i++] : NULL;
}

/* Sends c the result frame of its subscription rid (asked times) built from
 * the candidates next(it) yields; more: the source itself was cut short.
 * Returns the objects in it, or -1 (nothing sent) when the subscription is
 * gone or no longer holds for token (0: no hold needed). */
static long send_result(lq_gateway *gw, conn *c, double rid, uint64_t token,
                        const json_t *(*next)(void *), void *it, int more, int asked)
{
    lq_buf *b = &gw->result;
    int truncated;

    b->len = 0;
    lq_proto_result_head(b, &c->ids, rid);
    /* half the queue limit: a whole result must fit in a connection's queue */
    long n = lq_registry_results(gw->reg, c->client, rid, token, next, it, lq_wall_ms(),
                                 (size_t)gw->cfg->max_results, gw->cfg->max_queue_bytes / 2, b,
                                 &truncated);
    if (n < 0)
        return -1;
    lq_proto_result_tail(b, truncated || more);
    for (int i = 0; i < asked; i++)
        send_frame(gw, c, b);
    if (b->cap > 4 * BATCH_BYTES) { /* a large result does not keep its buffer */
        lq_buf_release(b);
        lq_buf_init(b);
    }
    LQ_METRIC_ADD(queries, asked);
    LQ_METRIC_ADD(query_results_objects, n * asked);
    return n;
}

/* Starts q: answers it from the cache, or holds the subscription's events
 * and queues the snapshot read. */
static void query_begin(lq_gateway *gw, pquery *q)
{
    conn *c = q->c;
    const char *cls, *where;
    lq_error err;

    if (lq_registry_sub_info(c->client, q->rid, &cls, &where) < 0) {
        pquery_free(gw, q);
        return;
    }
    if (gw->cache) {
        lq_objcache_iter it;
        lq_objcache_iter_init(&it, gw->cache, cls);
        long n = send_result(gw, c, q->rid, 0, lq_objcache_next, &it, 0, q->asked);
        LQ_DEBUG("query answered from the cache", "client=%s class=%s results=%ld cached=%zu", c->client_id,
                 cls, n, lq_objcache_count(gw->cache, cls));
        pquery_free(gw, q);
        return;
    }
    q->token = ++gw->last_token;
    /* the result may take half the queue limit, what was held a quarter: both
     * go into the queue at once and must not make a slow consumer of it */
    lq_registry_hold(gw->reg, c->client, q->rid, q->token, HOLD_EVENTS, gw->cfg->max_queue_bytes / 4);
    lq_snapshot *snap = lq_snapshot_new(q->token, cls, where, &gw->qlim, gw->cfg, scan_max(gw), lq_wall_ms());
    if (gw->auth == NULL || lq_auth_submit(gw->auth, lq_snapshot_run, lq_snapshot_drop, snap) != LQ_OK) {
        lq_snapshot_free(snap);
        lq_registry_release(gw->reg, c->client, q->rid, q->token, 0, deliver, gw);
        lq_error_set(&err, LQ_PARSE_ERR_RESYNC,
                     "Live query results for class %s could not be read now; try again", cls);
        query_error(gw, c, q->rid, q->asked, &err, 0, 1);
        q->token = 0; /* not in the reading table */
        pquery_free(gw, q);
        return;
    }
    HASH_ADD(hh, gw->pqueries, token, sizeof(q->token), q);
}

/* c's subscription rid got its position: its query ops start now. */
static void queries_start(lq_gateway *gw, conn *c, double rid)
{
    pquery *q, *next;

    for (q = c->pq; q; q = next) {
        next = q->cnext;
        if (q->token == 0 && q->rid == rid)
            query_begin(gw, q);
    }
}

static void on_query(lq_gateway *gw, conn *c, const lq_request *req)
{
    double rid = req->request_id;
    lq_error err;
    pquery *q;

    if (c->client == NULL) {
        lq_error_set(&err, LQ_PARSE_ERR_NO_CLIENT,
                     "Can not find this client, make sure you connect to server before querying");
        query_error(gw, c, 0, 1, &err, 1, 0);
        return;
    }
    int state = lq_registry_sub_info(c->client, rid, NULL, NULL);
    if (state < 0) { /* as Parse answers an unsubscribe of an unknown requestId */
        lq_buf id;
        lq_buf_init(&id);
        lq_proto_request_id(&id, rid);
        lq_error_set(&err, LQ_PARSE_ERR_NO_CLIENT,
                     "Cannot find subscription with clientId %s subscriptionId %s. Make sure you "
                     "subscribe to live query server before querying.",
                     c->client_id, id.data);
        lq_buf_release(&id);
        query_error(gw, c, 0, 1, &err, 1, 0);
        return;
    }
    for (q = c->pq; q; q = q->cnext) {
        if (q->rid == rid) { /* one in progress: its result answers this one too */
            q->asked++;
            return;
        }
    }
    if (c->npq >= MAX_QUERIES) {
        lq_error_set(&err, LQ_PARSE_ERR_LIMIT,
                     "too many queries waiting for their results on this connection (limit %d)",
                     MAX_QUERIES);
        query_error(gw, c, rid, 1, &err, 0, 1);
        return;
    }
    q = lq_xcalloc(1, sizeof(*q));
    q->c = c;
    q->rid = rid;
    q->asked = 1;
    q->t0_ms = lq_wall_ms();
    q->cnext = c->pq;
    c->pq = q;
    c->npq++;
    if (state == 1)
        return; /* waits for its position (the resume extension): on_position starts it */
    query_begin(gw, q);
}

/* A snapshot read is back (auth.h job_done): the result, then the held
 * events it does not contain. */
static void hook_job_done(void *ud, void *arg)
{
    lq_gateway *gw = ud;
    lq_snapshot *snap = arg;
    pquery *q;
    lq_error err;

    HASH_FIND(hh, gw->pqueries, &snap->token, sizeof(snap->token), q);
    if (q == NULL) { /* its connection or subscription is gone, or its hold overflowed */
        lq_snapshot_free(snap);
        return;
    }
    conn *c = q->c;
    if (snap->status != LQ_SNAPSHOT_OK) {
        long d = lq_registry_release(gw->reg, c->client, q->rid, q->token, 0, deliver, gw);
        if (d >= 0) {
            if (snap->status == LQ_SNAPSHOT_NO_CLUSTER_TIME)
                lq_error_set(&err, LQ_PARSE_ERR_RESYNC,
                             "Live query results for class %s need MongoDB 5.0 or later (snapshot reads)",
                             snap->class_name);
            else
                lq_error_set(&err, LQ_PARSE_ERR_RESYNC,
                             "Live query results for class %s could not be read now; try again",
                             snap->class_name);
            query_error(gw, c, q->rid, q->asked, &err, 0, 1);
            if (d > 0)
                LQ_METRIC_ADD(deliveries, d);
        }
        LQ_WARN("query results could not be read", "client=%s class=%s why=\"%s\"", c->client_id,
                snap->class_name,
                snap->status == LQ_SNAPSHOT_NO_CLUSTER_TIME ? "no atClusterTime in the reply" : snap->why);
    } else {
        arr_it it = {snap->objects, snap->n, 0};
        long n = send_result(gw, c, q->rid, q->token, arr_next, &it, snap->more, q->asked);
        if (n >= 0) {
            long d = lq_registry_release(gw->reg, c->client, q->rid, q->token, snap->ct, deliver, gw);
            if (d > 0)
                LQ_METRIC_ADD(deliveries, d);
            LQ_DEBUG("query answered from MongoDB",
                     "client=%s class=%s results=%ld matched=%zu scanned=%zu more=%d by_id=%d "
                     "cluster_time=%u.%u read_ms=%lld total_ms=%lld released=%ld",
                     c->client_id, snap->class_name, n, snap->n, snap->scanned, snap->more,
                     snap->pushed_down, (unsigned)(snap->ct >> 32), (unsigned)(snap->ct & 0xffffffffu),
                     (long long)snap->took_ms, (long long)(lq_wall_ms() - q->t0_ms), d);
        }
    }
    pquery_free(gw, q);
    lq_snapshot_free(snap);
}

/* A subscription held more events than allowed while its snapshot was read
 * (registry.h): the query fails; the registry delivers what it held. */
static void hold_overflow(void *ud, void *connp, double rid, uint64_t token)
{
    lq_gateway *gw = ud;
    conn *c = connp;
    pquery *q;
    lq_error err;

    HASH_FIND(hh, gw->pqueries, &token, sizeof(token), q);
    lq_error_set(&err, LQ_PARSE_ERR_LIMIT,
                 "too many events for this subscription while its query results were read "
                 "(limit %d events, %zu bytes); query again",
                 HOLD_EVENTS, gw->cfg->max_queue_bytes / 4);
    query_error(gw, c, rid, q ? q->asked : 1, &err, 0, 1);
    if (q)
        pquery_free(gw, q);
    LQ_WARN("query failed: too many events held", "client=%s", c->client_id);
}

/*---- HTTP: /health, /ready and /metrics -----------------------------------------*/

/* The /health and /ready body; returns 1 when ready: a gateway's Redis
 * subscriber is connected and, with --mongodb-uri, MongoDB answers; a
 * tailer-only process (active or standby) reaches Redis and MongoDB. */
static int health_json(lq_gateway *gw, lq_buf *body)
{
    const lq_config *cfg = gw->cfg;
    char tmp[256];
    int has_mongo = cfg->mongodb_uri && cfg->mongodb_uri[0];
    int tailer_on = (cfg->role & LQ_ROLE_TAILER) && has_mongo;
    const char *tailer = !tailer_on ? "off" : LQ_METRIC_GET(tailer_leader) ? "active" : "standby";
    /* a gateway's subscriber, else a tailer's lease connection */
    int redis_ok = gw->bus ? lq_bus_connected(gw->bus) : tailer_on && LQ_METRIC_GET(tailer_redis_connected);
    int mongo_ok = has_mongo && LQ_METRIC_GET(mongodb_connected);
    /* a draining gateway is alive but wants no new clients */
    int ready = (gw->bus || tailer_on) && redis_ok && (!has_mongo || mongo_ok) && !gw->draining;

    snprintf(tmp, sizeof(tmp),
             "{\"status\":\"ok\",\"redis\":\"%s\",\"connections\":%d,\"tailer\":\"%s\","
             "\"ready\":%s,\"mongodb\":\"%s\",\"draining\":%s}\n",
             !gw->bus && !tailer_on ? "n/a" : redis_ok ? "connected" : "disconnected", gw->nconns,
             tailer, ready ? "true" : "false", !has_mongo ? "n/a" : mongo_ok ? "connected" : "disconnected",
             gw->draining ? "true" : "false");
    lq_buf_puts(body, tmp);
    return ready;
}

static int http_request(lq_gateway *gw, conn *c, struct lws *wsi, const char *path)
{
    unsigned char hdr[LWS_PRE + 512], *start = hdr + LWS_PRE, *p = start, *end = hdr + sizeof(hdr);
    const char *type = "text/plain; charset=utf-8";
    unsigned int status = HTTP_STATUS_OK;
    lq_buf body;

    lq_buf_init(&body);
    if (strcmp(path, "/health") == 0 || strcmp(path, "/ready") == 0) {
        if (!health_json(gw, &body) && path[1] == 'r')
            status = HTTP_STATUS_SERVICE_UNAVAILABLE;
        type = "application/json";
    } else if (strcmp(path, "/metrics") == 0) {
        LQ_METRIC_SET(queued_bytes, gw->queued_bytes);
        lq_buf_reserve(&body, 32768); /* ~14 KB today (tests check nothing is cut off) */
        body.len = lq_metrics_render(body.data, body.cap);
        type = "text/plain; version=0.0.4";
    } else if (strcmp(path, "/") == 0) {
        lq_buf_puts(&body, "livequeryd: Parse LiveQuery over WebSocket. GET /health, /ready, /metrics\n");
    } else {
        status = HTTP_STATUS_NOT_FOUND;
        lq_buf_puts(&body, "not found\n");
    }
    c->http_body = body.data ? body.data : lq_xstrdup("");
    c->http_len = body.len;
    if (lws_add_http_common_headers(wsi, status, type, c->http_len, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return 1;
    lws_callback_on_writable(wsi);
    return 0;
}

static int http_writeable(conn *c, struct lws *wsi)
{
    lq_buf b;
    int rc;

    if (c->http_body == NULL)
        return 0;
    lq_buf_init(&b);
    lq_buf_reserve(&b, LWS_PRE + c->http_len);
    memcpy(b.data + LWS_PRE, c->http_body, c->http_len);
    rc = lws_write(wsi, (unsigned char *)b.data + LWS_PRE, c->http_len, LWS_WRITE_HTTP_FINAL);
    lq_buf_release(&b);
    free(c->http_body);
    c->http_body = NULL;
    if (rc < (int)c->http_len)
        return -1;
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

/*---- the lws protocol callback ---------------------------------------------------*/

static void drain_check(lq_gateway *gw);

static void conn_release(lq_gateway *gw, conn *c)
{
    unwait(c);
    while (c->parked) {
        parked *p = c->parked;
        c->parked = p->next;
        lq_request_release(&p->req);
        session_drop(gw, p->sess);
        free(p);
    }
    c->parked_tail = NULL;
    c->nparked = 0;
    queries_drop(gw, c, 1, 0);
    session_drop(gw, c->sess);
    c->sess = NULL;
    free(c->token);
    c->token = NULL;
    lq_registry_client_free(gw->reg, c->client);
    c->client = NULL;
    queue_clear(c);
    free(c->q);
    c->q = NULL;
    c->qcap = 0;
    lq_buf_release(&c->ids);
    lq_buf_release(&c->rx);
    free(c->http_body);
    c->http_body = NULL;
    if (c->counted) {
        DL_DELETE(gw->conns, c);
        gw->nconns--;
        LQ_METRIC_ADD(connections, -1);
        c->counted = 0;
    }
}

/* Message rate (--max-messages-per-second, --message-burst): a token bucket
 * per connection, in thousandths of a message so that refilling needs no
 * division. O(1) per message, no system call. A message over the rate is
 * refused unhandled; the first refused in a RATE_WINDOW_MS window is answered
 * with one error frame (code 155, the refused request's requestId when it has
 * one), the others in that window silently. More than 2 x burst refused in a
 * window closes the connection (1008 "too many messages"): protocol/errors.md.
 * Returns 1 when the message may be handled. */
#define RATE_WINDOW_MS 10000

static void rate_init(lq_gateway *gw, conn *c)
{
    c->rl_last_ms = loop_ms(gw);
    c->rl_tokens = (int64_t)gw->cfg->msg_burst * 1000;
    c->rl_window_ms = c->rl_last_ms - RATE_WINDOW_MS;
}

static int rate_admit(lq_gateway *gw, conn *c, const char *buf, size_t len)
{
    int64_t now = loop_ms(gw), cap = (int64_t)gw->cfg->msg_burst * 1000;
    int burst = gw->cfg->msg_burst;

    if (c->rl_closed)
        return 0;
    if (now > c->rl_last_ms) {
        c->rl_tokens += (now - c->rl_last_ms) * gw->cfg->max_msgs_per_s;
        if (c->rl_tokens > cap)
            c->rl_tokens = cap;
        c->rl_last_ms = now;
    }
    if (c->rl_tokens >= 1000) {
        c->rl_tokens -= 1000;
        return 1;
    }
    LQ_METRIC_INC(frames_in);
    LQ_METRIC_INC(limit_rate);
    if (now - c->rl_window_ms >= RATE_WINDOW_MS) {
        c->rl_window_ms = now;
        c->rl_refused = 0;
    }
    if (c->rl_refused++ == 0) {
        /* once per window: worth a parse for the requestId */
        lq_error err;
        int has_rid = 0;
        double rid = 0;
        if (lq_json_text_depth(buf, len, gw->cfg->max_json_depth) <= gw->cfg->max_json_depth) {
            json_t *root = json_loadb(buf, len, 0, NULL);
            json_t *r = json_object_get(root, "requestId");
            if (json_is_number(r)) {
                has_rid = 1;
                rid = json_number_value(r);
            }
            json_decref(root);
        }
        lq_error_set(&err, LQ_PARSE_ERR_LIMIT,
                     "too many messages on this connection (limit %d per second)",
                     gw->cfg->max_msgs_per_s);
        send_error(gw, c, &err, 0, has_rid, rid);
        LQ_WARN("client over its message rate: messages refused", "client=%s limit=%d burst=%d",
                c->client_id[0] ? c->client_id : "-", gw->cfg->max_msgs_per_s, burst);
    } else if (c->rl_refused > 2 * burst) {
        c->rl_closed = 1;
        LQ_METRIC_INC(limit_rate_closed);
        LQ_WARN("client kept flooding, closing", "client=%s refused=%d window_ms=%d",
                c->client_id[0] ? c->client_id : "-", c->rl_refused, RATE_WINDOW_MS);
        close_after_flush(c, LWS_CLOSE_STATUS_POLICY_VIOLATION, "too many messages");
        lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, SLOW_CLOSE_SECS);
    }
    return 0;
}

static int on_receive(lq_gateway *gw, conn *c, struct lws *wsi, const char *in, size_t len)
{
    int final = lws_is_final_fragment(wsi) && lws_remaining_packet_payload(wsi) == 0;

    if (c->rx.len + len > gw->cfg->max_frame_bytes) {
        LQ_METRIC_INC(frames_too_large);
        LQ_WARN("frame too large, closing", "client=%s limit=%zu", c->client_id[0] ? c->client_id : "-",
                gw->cfg->max_frame_bytes);
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, (unsigned char *)"frame too large",
                         15);
        return -1;
    }
    if (final && c->rx.len == 0) { /* the common case: whole message in one piece, no copy */
        if (rate_admit(gw, c, in, len))
            on_message(gw, c, in, len, lws_frame_is_binary(wsi));
        return 0;
    }
    lq_buf_append(&c->rx, in, len);
    if (final) {
        if (rate_admit(gw, c, c->rx.data, c->rx.len))
            on_message(gw, c, c->rx.data, c->rx.len, lws_frame_is_binary(wsi));
        c->rx.len = 0;
        if (c->rx.cap > 64 * 1024) /* do not keep a large buffer for an idle client */
            lq_buf_release(&c->rx);
    }
    return 0;
}

/* 1 when origin (olen bytes) is allowed by list, --allowed-origins: "*" or
 * one of its comma-separated entries (spaces around an entry ignored),
 * compared case-insensitively. */
static int origin_allowed(const char *list, const char *origin, size_t olen)
{
    const char *p = list, *o;
    size_t len;

    while (lq_config_list_next(&p, &o, &len))
        if ((len == 1 && o[0] == '*') || (len == olen && strncasecmp(o, origin, len) == 0))
            return 1;
    return 0;
}

/* A WebSocket upgrade whose Origin is not in --allowed-origins (read at each
 * upgrade: SIGHUP may change it) is refused with 403. No Origin header (not
 * a browser): allowed. Returns nonzero to refuse. */
static int origin_filter(lq_gateway *gw, struct lws *wsi)
{
    char origin[512], esc[600], peer[64];
    const char *list = gw->cfg->allowed_origins;
    int n;

    if (list == NULL || strcmp(list, "*") == 0)
        return 0;
    n = lws_hdr_total_length(wsi, WSI_TOKEN_ORIGIN);
    if (n <= 0)
        return 0;
    if (n >= (int)sizeof(origin) || lws_hdr_copy(wsi, origin, sizeof(origin), WSI_TOKEN_ORIGIN) < 0)
        snprintf(origin, sizeof(origin), "(%d bytes)", n); /* longer than any we could allow */
    else if (origin_allowed(list, origin, strlen(origin)))
        return 0;
    LQ_METRIC_INC(origins_rejected);
    lws_get_peer_simple(wsi, peer, sizeof(peer));
    LQ_WARN("connection refused: origin not allowed", "origin=\"%s\" peer=%s",
            lq_log_escape(esc, sizeof(esc), origin), peer);
    lws_set_opaque_user_data(wsi, NULL); /* a complete request: no handshake timeout */
    lws_return_http_status(wsi, HTTP_STATUS_FORBIDDEN, "origin not allowed");
    return -1;
}

static int callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                    size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    lq_gateway *gw = ctx ? lws_context_user(ctx) : NULL;
    conn *c = user;

    switch (reason) {
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        if (gw && gw->reload) {
            gw->reload = 0;
            if (gw->reload_fn)
                gw->reload_fn(gw->reload_ud);
        }
        if (gw && gw->bus)
            drain_bus(gw);
        if (gw)
            auth_poll(gw);
        if (gw && gw->stop && gw->uv && !gw->draining)
            uv_stop(gw->uv); /* lws_service returns: lq_gateway_run drains */
        return 0;

    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        /* a TCP connection accepted: it has --handshake-timeout to send a
         * complete request (lws' header-table timeout, timeout_secs_ah_idle).
         * Its accept time rides in the opaque pointer (there is no per-session
         * data yet) until the request is complete; see WSI_DESTROY. */
        if (gw)
            lws_set_opaque_user_data(wsi, (void *)(uintptr_t)(loop_ms(gw) + 1));
        return 0;

    case LWS_CALLBACK_WSI_DESTROY:
        if (gw && lws_get_opaque_user_data(wsi)) {
            int64_t lived = loop_ms(gw) - ((int64_t)(uintptr_t)lws_get_opaque_user_data(wsi) - 1);
            lws_set_opaque_user_data(wsi, NULL);
            /* still without a complete request: the peer left by itself
             * before the timeout, or lws dropped it at the timeout */
            if (lived >= (int64_t)gw->cfg->handshake_timeout_s * 1000 - HANDSHAKE_SLACK_MS) {
                LQ_METRIC_INC(handshakes_timed_out);
                LQ_INFO("connection dropped: request incomplete after the handshake timeout",
                        "timeout_s=%d lived_ms=%lld", gw->cfg->handshake_timeout_s, (long long)lived);
            }
        }
        return 0;

    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        if (gw && gw->draining) { /* stop accepting: new clients go to another gateway */
            LQ_METRIC_INC(connections_rejected_draining);
            return 1;
        }
        return gw ? origin_filter(gw, wsi) : 0;

    case LWS_CALLBACK_ESTABLISHED:
        lws_set_opaque_user_data(wsi, NULL); /* the handshake is complete */
        c->wsi = wsi;
        c->gw = gw;
        lq_buf_init(&c->ids);
        lq_buf_init(&c->rx);
        rate_init(gw, c);
        LQ_METRIC_INC(connections_total);
        if (gw->draining) {
            lws_close_reason(wsi, LWS_CLOSE_STATUS_GOINGAWAY, (unsigned char *)"going away", 10);
            return -1;
        }
        if (gw->bus == NULL) { /* --role tailer: HTTP (/health, /metrics) only */
            lws_close_reason(wsi, LWS_CLOSE_STATUS_POLICY_VIOLATION,
                             (unsigned char *)"not a gateway (--role tailer)", 29);
            return -1;
        }
        if (gw->nconns >= gw->cfg->max_connections) {
            LQ_METRIC_INC(connections_rejected);
            LQ_WARN("connection refused: server full", "limit=%d", gw->cfg->max_connections);
            lws_close_reason(wsi, (enum lws_close_status)1013 /* try again later */, (unsigned char *)"server is full",
                             14);
            return -1;
        }
        gw->nconns++;
        DL_APPEND(gw->conns, c);
        c->counted = 1;
        LQ_METRIC_INC(connections);
        return 0;

    case LWS_CALLBACK_RECEIVE:
        return on_receive(gw, c, wsi, in, len);

    case LWS_CALLBACK_SERVER_WRITEABLE:
        if (c->qlen)
            return write_batch(gw, c);
        if (c->closing && !c->close_sent)
            return send_close(c);
        return 0;

    case LWS_CALLBACK_CLOSED:
        conn_release(gw, c);
        if (gw->draining)
            drain_check(gw);
        return 0;

    case LWS_CALLBACK_HTTP:
        lws_set_opaque_user_data(wsi, NULL); /* a complete request */
        return http_request(gw, c, wsi, in ? (const char *)in : "/");

    case LWS_CALLBACK_HTTP_WRITEABLE:
        return c ? http_writeable(c, wsi) : 0;

    case LWS_CALLBACK_CLOSED_HTTP:
        if (c) { /* NULL when the peer left before sending a request */
            free(c->http_body);
            c->http_body = NULL;
        }
        return 0;

    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols protocols[] = {
    /* rx_buffer_size small: lws allocates it per connection (+ LWS_PRE), and
     * messages are reassembled in conn.rx anyway (a subscribe arrives in two
     * or three pieces). 1024 cost 900 bytes more per idle connection
     * (BENCHMARKS.md, memory) */
    {"livequery", callback, sizeof(conn), 128, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/*---- lifetime ------------------------------------------------------------------*/

static void ignore_signal(void *handle, int signum)
{
    (void)handle;
    (void)signum;
}

static void wake(void *ud)
{
    lq_gateway *gw = ud;
    lws_cancel_service(gw->ctx);
}

/* Session expiry and revalidation run on a timer besides the wake-ups. */
static void auth_tick(lws_sorted_usec_list_t *sul)
{
    lq_gateway *gw = lws_container_of(sul, lq_gateway, auth_tick);
    auth_poll(gw);
    lws_sul_schedule(gw->ctx, 0, &gw->auth_tick, auth_tick, AUTH_TICK_MS * LWS_US_PER_MS);
}

lq_gateway *lq_gateway_new(const lq_config *cfg)
{
    struct lws_context_creation_info info;
    lq_gateway *gw = lq_xcalloc(1, sizeof(*gw));
    lq_registry_limits lim;

    gw->cfg = cfg;
    lq_buf_init(&gw->out);
    lq_buf_init(&gw->scratch);
    lq_buf_init(&gw->posframe);
    lq_buf_init(&gw->result);
    lq_buf_init(&gw->fan);
    if (cfg->io_uring) {
        int rc = io_uring_queue_init(FAN_RING, &gw->ring, 0);
        gw->ring_ok = rc == 0;
        if (rc != 0) /* e.g. a seccomp profile that forbids it */
            LQ_WARN("io_uring unavailable; fan-out writes use send()", "error=%d", -rc);
    }
    lq_query_limits_default(&lim.query);
    lim.query.max_depth = cfg->max_query_depth;
    lim.max_subscriptions = cfg->max_subscriptions;
    lim.max_query_bytes = cfg->max_query_bytes;
    gw->reg = lq_registry_new(&lim);
    gw->qlim = lim.query;
    lq_registry_set_hold_overflow(gw->reg, hold_overflow, gw);

    /* lws pings a connection idle for one interval and drops it when nothing
     * valid (a PONG or data) arrived for two */
    gw->retry.secs_since_valid_ping = (uint16_t)cfg->ping_interval_s;
    gw->retry.secs_since_valid_hangup = (uint16_t)(cfg->ping_interval_s * 2);

    memset(&info, 0, sizeof(info));
    info.port = cfg->port;
    info.iface = cfg->host;
    info.protocols = protocols;
    info.user = gw;
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6;
    if (cfg->event_loop == LQ_LOOP_UV) {
        /* epoll through libuv: a wake-up costs what is ready, not what is
         * connected (lws' poll() scans every descriptor each time). The loop
         * is ours (lws joins it as a foreign loop), so we run and stop it;
         * signals stay ours too (main.c). */
        if (uv_loop_init(&gw->uv_loop) != 0) {
            LQ_ERROR("cannot create the libuv loop", NULL);
            lq_gateway_free(gw);
            return NULL;
        }
        gw->uv = &gw->uv_loop;
        gw->foreign_loops[0] = gw->uv;
        info.foreign_loops = gw->foreign_loops;
        info.pcontext = &gw->ctx;
        info.options |= LWS_SERVER_OPTION_LIBUV | LWS_SERVER_OPTION_UV_NO_SIGSEGV_SIGFPE_SPIN;
        info.signal_cb = ignore_signal;
    }
    if (cfg->web_root && cfg->web_root[0] && (cfg->role & LQ_ROLE_GATEWAY)) {
        /* the event-day display page: static files served by lws itself
         * (no bytes of ours on that path); other paths come to callback() */
        gw->display.mountpoint = "/display";
        gw->display.mountpoint_len = 8;
        gw->display.origin = cfg->web_root;
        gw->display.def = "index.html";
        gw->display.origin_protocol = LWSMPRO_FILE;
        gw->display.cache_max_age = 60;
        gw->display.cache_reusable = 1;
        gw->display.cache_revalidate = 1;
        info.mounts = &gw->display;
    }
    info.retry_and_idle_policy = &gw->retry;
    /* slow loris: lws 4.1.6 gives a new connection a header table at accept
     * and drops it timeout_secs_ah_idle later unless its request is complete
     * (bytes trickling in do not extend it; measured). timeout_secs bounds
     * lws' other waits on the network; it was 10 s before the setting. */
    info.timeout_secs = (unsigned int)cfg->handshake_timeout_s;
    info.timeout_secs_ah_idle = (unsigned int)cfg->handshake_timeout_s;
    info.max_http_header_pool = 64;
    if (cfg->tls_cert) {
        /* TLS only on this port (lws' OpenSSL): a plain ws:// or http://
         * client fails its handshake. HTTP/1.1 only: the fan-out writes
         * WebSocket frames through lws_write(RAW), which HTTP/2 would not
         * carry. */
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = cfg->tls_cert;
        info.ssl_private_key_filepath = cfg->tls_key;
        info.alpn = "http/1.1";
    }
    gw->ctx = lws_create_context(&info);
    /* on libuv lws returns a context even when its vhost could not listen */
    if (gw->ctx == NULL || lws_get_vhost_by_name(gw->ctx, "default") == NULL) {
        LQ_ERROR("cannot listen", "host=%s port=%d tls=%s", cfg->host, cfg->port,
                 cfg->tls_cert ? "on (or the certificate or key is unusable)" : "off");
        lq_gateway_free(gw);
        return NULL;
    }
    if (cfg->role & LQ_ROLE_GATEWAY) {
        gw->auth = lq_auth_new(cfg, wake, gw);
        lq_registry_set_tag_release(gw->reg, tag_release, gw);
        if (lq_auth_start(gw->auth) != LQ_OK) {
            LQ_ERROR("cannot start the session lookup threads", NULL);
            lq_gateway_free(gw);
            return NULL;
        }
        if (cfg->mongodb_uri == NULL)
            LQ_INFO("no --mongodb-uri: session tokens cannot be checked; subscriptions that give "
                    "one are refused (209)", NULL);
        if (cfg->mongodb_uri == NULL) { /* the query op answers from what the bus carried */
            gw->cache = lq_objcache_new((size_t)cfg->initial_cache_size);
            LQ_INFO("no --mongodb-uri: query results come from the objects seen on the bus since start",
                    "initial_cache_size=%d max_results=%d", cfg->initial_cache_size, cfg->max_results);
        }
        auth_tick(&gw->auth_tick);
        gw->bus = lq_bus_new(cfg, wake, gw);
        if (lq_bus_start(gw->bus) != LQ_OK) {
            LQ_ERROR("cannot start the redis thread", NULL);
            lq_gateway_free(gw);
            return NULL;
        }
    }
    LQ_INFO("listening", "host=%s port=%d tls=%s app_id=%s redis=%s:%d event_loop=%s fanout=%s websocket=%s",
            cfg->host, cfg->port, cfg->tls_cert ? "on" : "off", cfg->app_id, cfg->redis_host,
            cfg->redis_port, gw->uv ? "uv" : "poll", gw->ring_ok ? "io_uring" : "send",
            gw->bus ? "on" : "off (tailer only: /health, /ready and /metrics)");
    return gw;
}

/* Ends the drain once no connection is left or the deadline has passed. */
static void drain_check(lq_gateway *gw)
{
    if (gw->drained || (gw->nconns > 0 && lq_wall_ms() < gw->drain_deadline))
        return;
    gw->drained = 1;
    if (gw->uv)
        uv_stop(gw->uv);
}

static void drain_tick(lws_sorted_usec_list_t *sul)
{
    lq_gateway *gw = lws_container_of(sul, lq_gateway, drain_tick);
    drain_check(gw);
    if (!gw->drained)
        lws_sul_schedule(gw->ctx, 0, &gw->drain_tick, drain_tick, 100 * LWS_US_PER_MS);
}

/* On libuv: runs the loop until uv_stop. On poll: one wait and its work. */
static int service(lq_gateway *gw)
{
    if (gw->uv) {
        uv_run(gw->uv, UV_RUN_DEFAULT);
        return 0;
    }
    return lws_service(gw->ctx, 0);
}

int lq_gateway_run(lq_gateway *gw)
{
    conn *c;

    while (!gw->stop)
        if (service(gw) < 0)
            return -1;

    /* Going away: every client gets what is already queued, then a 1001 close,
     * so SDKs reconnect (to another gateway) at once instead of timing out. */
    gw->draining = 1;
    gw->drain_deadline = lq_wall_ms() + (int64_t)gw->cfg->drain_timeout_s * 1000;
    LQ_INFO("draining", "connections=%d", gw->nconns);
    DL_FOREACH(gw->conns, c) {
        close_after_flush(c, LWS_CLOSE_STATUS_GOINGAWAY, "going away");
    }
    drain_tick(&gw->drain_tick);
    while (!gw->drained)
        if (service(gw) < 0)
            break;
    lws_sul_cancel(&gw->drain_tick);
    return 0;
}

void lq_gateway_on_reload(lq_gateway *gw, lq_reload_fn reload, void *ud)
{
    gw->reload_fn = reload;
    gw->reload_ud = ud;
}

void lq_gateway_reload(lq_gateway *gw)
{
    gw->reload = 1;
    if (gw->ctx)
        lws_cancel_service(gw->ctx);
}

void lq_gateway_config_changed(lq_gateway *gw)
{
    lq_registry_limits lim;
    lq_query_limits_default(&lim.query);
    lim.query.max_depth = gw->cfg->max_query_depth;
    lim.max_subscriptions = gw->cfg->max_subscriptions;
    lim.max_query_bytes = gw->cfg->max_query_bytes;
    lq_registry_set_limits(gw->reg, &lim);
    gw->qlim = lim.query;
}

void lq_gateway_stop(lq_gateway *gw)
{
    gw->stop = 1;
    if (gw->ctx)
        lws_cancel_service(gw->ctx);
}

void lq_gateway_free(lq_gateway *gw)
{
    if (gw == NULL)
        return;
    lq_bus_stop(gw->bus);
    /* auth first: its threads wake the context. Session references still
     * held by connections and subscriptions go with it (every release below
     * sees gw->auth == NULL and does nothing). */
    if (gw->ctx)
        lws_sul_cancel(&gw->auth_tick);
    lq_auth_free(gw->auth);
    gw->auth = NULL;
    gw->nunref = 0;
    if (gw->ctx)
        lws_context_destroy(gw->ctx); /* closes every connection: CLOSED frees their clients */
    if (gw->uv) {
        /* On a foreign loop lws destroys in stages: each call to
         * lws_context_destroy advances one once the loop has run the handle
         * closes of the previous; lws writes NULL to gw->ctx (info.pcontext)
         * when it is done. */
        for (int stage = 0; gw->ctx && stage < 4; stage++) {
            for (int i = 0; i < 16; i++)
                uv_run(gw->uv, UV_RUN_NOWAIT);
            if (gw->ctx)
                lws_context_destroy(gw->ctx);
        }
        /* Nothing else runs on this loop. Handles lws still holds must not be
         * run any more: their callbacks live in lws' libuv plugin, which the
         * last destroy stage unloads. */
        if (gw->ctx || uv_loop_close(gw->uv) != 0)
            LQ_DEBUG("libuv loop left open at exit", NULL);
    }
    lq_bus_free(gw->bus);
    while (gw->pqueries) { /* their connections are gone: nobody to answer */
        pquery *q = gw->pqueries;
        HASH_DEL(gw->pqueries, q);
        free(q);
    }
    lq_objcache_free(gw->cache);
    lq_registry_free(gw->reg);
    free(gw->unref);
    lq_buf_release(&gw->out);
    lq_buf_release(&gw->scratch);
    lq_buf_release(&gw->posframe);
    lq_buf_release(&gw->result);
    lq_buf_release(&gw->fan);
    free(gw->fan_v);
    free(gw->lat_ts);
    if (gw->ring_ok)
        io_uring_queue_exit(&gw->ring);
    free(gw);
}
