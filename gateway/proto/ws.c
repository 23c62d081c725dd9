/* gateway/proto/ws.c — the WebSocket session: after its opening (ws-open.c), a
 * frame-by-frame relay.
 *
 * Relay model. One coroutine drives both sides and never blocks on a write (as the TCP
 * relay: a blocking write in a single coroutine would deadlock against an echo peer). The
 * frame layer is ours (frame_recv(), frame_put(); the rules in common/ws-frame.h): the
 * bytes a side sends are parsed where they were read, in the pooled input buffer, and
 * unmasked there eight bytes at a time; frames are written into the pooled output buffer,
 * masked towards the backend with a fresh key per frame. A data frame received from one
 * side is forwarded to the other as a frame with the same opcode, FIN bit and length, its
 * payload passed on piece by piece as it arrives (one piece per read): fragmentation is
 * preserved, a message of any size streams through, and the only copy is into the output
 * buffer. Control frames are ours: pings are answered on the side they came from, pongs
 * end a keepalive wait, and a close is forwarded to the other side, whose answer is
 * forwarded back (so each peer sees the other's close code and reason), bounded by
 * close_timeout.
 *
 * Why not wslay's frame layer, which this relay used before: it copied every byte into
 * its own 4 KiB buffer, unmasked and masked a byte at a time with a modulo each, and needed
 * a 4 KiB context per busy side; callgrind put the relay at 3.9k user-space instructions
 * per 64-byte message (nginx's byte tunnel: 0.7k), a quarter of them in wslay.
 *
 * A frame can only start on a side at a frame boundary, so our own control frames (pongs,
 * pings, closes) wait while a forwarded frame is half sent ("due"); a close that never
 * finds a boundary is cut at close_timeout, when both connections are simply closed.
 *
 * Backpressure: a side is read only while the other side's queue (pooled buffers handed
 * to libuv plus the output being gathered) is under high_water, so a slow reader stops
 * its peer through TCP instead of growing our memory.
 *
 * Memory while idle: the cg_conn, this session, and the coroutine's saved stack, no
 * buffer. An input buffer is given back as soon as it is parsed; the 126 bytes of a
 * control frame's payload are taken only while one arrives, from a small per-worker
 * (per-thread) cache.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "coro/io.h"
#include "common/handshake.h"
#include "base/log.h"
#include "common/rand.h"
#include "core/conn.h"
#include "core/relay.h"
#include "core/gen.h"
#include "config/route.h"
#include "guard/tokenbucket.h"
#include "common/utf8.h"
#include "common/ws-frame.h"
#include "core/worker.h"
#include "proto/refusal.h"
#include "proto/ws.h"
#include "proto/ws-int.h"

/* ------------------------------------------------------------------ output */

static void side_gone(struct side *x);

static inline uint64_t queued(const struct side *x)
{
    return coro_stream_queued(st_of(x)) + (x->out ? x->out->len - x->out->off : 0);
}

/* Hands the gathered output of <x> to its stream. */
static void flush_out(struct side *x)
{
    struct sess *s = sess_of(x);
    struct coro_buf *b = x->out;
    int err;

    if (!b)
        return;
    x->out = NULL;
    if (x->gone || x->shut) {
        coro_buf_put(s->c->w->sched, b);
        return;
    }
    if (x->client) {
        CG_STAT_ADD(s->c->w->stats.bytes_out, b->len);
        CG_STAT_ADD(s->c->l->stats.bytes_out, b->len);
    }
    err = coro_write_nowait(st_of(x), b);
    if (err < 0)
        side_gone(x);
}

/* Appends <len> bytes at <data> to what <x> will be sent, masked with <key> from payload
 * offset <phase> (modulo 4) unless <key> is NULL. Returns 0 or UV_ENOMEM. */
static int out_copy(struct side *x, const void *data, size_t len, const uint8_t *key,
                    unsigned phase)
{
    struct coro_buf *b;
    const uint8_t *p = data;
    size_t n;

    while (len > 0) {
        b = x->out;
        if (!b) {
            b = x->out = coro_buf_get(sched_of(x), 0);
            if (!b)
                return UV_ENOMEM;
        }
        n = b->cap - b->len < len ? b->cap - b->len : len;
        if (key) {
            cg_ws_mask_copy((uint8_t *)b->data + b->len, p, n, key, phase);
            phase = (phase + (unsigned)n) & 3;
        } else {
            memcpy(b->data + b->len, p, n);
        }
        b->len += (uint32_t)n;
        p += n;
        len -= n;
        if (b->len == b->cap)
            flush_out(x);
    }
    return 0;
}

static int out_put(struct side *x, const void *data, size_t len)
{
    return out_copy(x, data, len, NULL, 0);
}

/* ------------------------------------------------------------------ frames */

/* Sends <x> a frame of <len> bytes at <data>: masked with a fresh key towards the backend
 * (we are its client, RFC 6455 §5.3), as it is towards the client. Returns 0, or UV_ENOMEM
 * (the caller gives <x> up). */
static int frame_put(struct side *x, int fin, unsigned rsv, unsigned op, const uint8_t *data,
                     size_t len)
{
    uint8_t hdr[CG_WS_HDR_MAX], key[4];
    size_t n;

    if (x->client)
        return out_put(x, hdr, cg_ws_hdr_write(hdr, fin, rsv, op, len, NULL)) < 0 ||
               out_put(x, data, len) < 0 ? UV_ENOMEM : 0;
    cg_rand_bytes(key, sizeof(key));
    n = cg_ws_hdr_write(hdr, fin, rsv, op, len, key);
    return out_put(x, hdr, n) < 0 || out_copy(x, data, len, key, 0) < 0 ? UV_ENOMEM : 0;
}

/* The next piece of what <x> sent (struct piece), parsed from x->in, which is read from
 * the socket when it is empty (and given back to the pool once parsed: a piece's payload
 * points into it until the next call). A piece never spans two reads: a frame that
 * arrives in several comes as several pieces. Returns 1 with a piece in <io>; 0 when
 * more bytes must arrive first (x->rerr set when the stream ended or failed); -1 for what
 * the frame layer refuses (x->t_hdr holds the header's first two bytes): a control frame
 * fragmented or longer than 125 bytes, a length not in its shortest form or of 2^63
 * bytes or more. */
static int frame_recv(struct side *x, struct piece *io)
{
    struct coro_buf *b = x->in;
    const uint8_t *h = x->t_hdr, *key;
    uint8_t *p;
    size_t avail, n, hs;
    uint64_t len;
    ssize_t r;

    for (;;) {
        if (b && b->off == b->len) {
            coro_buf_put(sched_of(x), b);
            x->in = b = NULL;
        }
        if (!b) {
            r = coro_try_read(st_of(x), &b);
            if (r < 0) {
                if (r != UV_EAGAIN)
                    x->rerr = (int32_t)r;
                return 0;
            }
            x->in = b;
            if (x->client) {
                struct cg_conn *c = sess_of(x)->c;

                CG_STAT_ADD(c->w->stats.bytes_in, (uint64_t)r);
                CG_STAT_ADD(c->l->stats.bytes_in, (uint64_t)r);
            }
        }
        p = (uint8_t *)b->data + b->off;
        avail = b->len - b->off;
        if (x->t_need == 0 && x->t_rem == 0) {          /* a frame boundary */
            x->t_need = 2;
            x->t_have = 0;
            x->t_phase = 0;
        }
        if (x->t_need) {                                /* in a header */
            /* A whole header in this read (nearly always): taken at once. */
            if (x->t_have == 0 && avail >= 2 && avail >= (hs = cg_ws_hdr_size(p[1]))) {
                x->t_need = (uint8_t)hs;
                memcpy(x->t_hdr, p, hs);
                x->t_have = x->t_need;
                p += x->t_need;
                avail -= x->t_need;
                b->off += x->t_need;
            }
            while (avail > 0 && x->t_have < x->t_need) {
                x->t_hdr[x->t_have++] = *p++;
                avail--;
                b->off++;
                if (x->t_have == 2)
                    x->t_need = (uint8_t)cg_ws_hdr_size(h[1]);
            }
            if (x->t_have < x->t_need)
                continue;
            len = cg_ws_payload_len(h);
            if ((h[0] & 0x08) && (!(h[0] & 0x80) || len > 125))
                return -1;
            if (((h[1] & 0x7f) == 126 && len < 126) ||
                ((h[1] & 0x7f) == 127 && (len < 65536 || len >> 63)))
                return -1;
            x->t_need = 0;
            x->t_rem = len;
        }
        /* The payload, or what of it this read holds: with the header, when it came in
         * the same read (a small message is one piece, not a header piece and then its
         * payload); a header alone is a piece of its own, so that a frame is checked
         * (frame_start()) before its payload arrives. */
        n = avail < x->t_rem ? avail : (size_t)x->t_rem;
        if (n && (h[1] & 0x80)) {
            key = h + cg_ws_hdr_size(h[1]) - 4;
            cg_ws_mask_copy(p, p, n, key, x->t_phase);
            x->t_phase = (uint8_t)((x->t_phase + n) & 3);
        }
        b->off += (uint32_t)n;
        x->t_rem -= n;
        io->fin = h[0] >> 7;
        io->rsv = (h[0] >> 4) & 7;
        io->opcode = h[0] & 0xf;
        io->mask = h[1] >> 7;
        io->payload_length = cg_ws_payload_len(h);
        io->data = p;
        io->data_length = n;
        return 1;
    }
}

/* Control-frame buffers given back, for the next control frame on this thread (each worker
 * runs its sessions on its own thread). At most SPARE_MAX, kept as long as the worker runs
 * (cg_protocols_fill()'s worker_end empties them). */
static __thread struct work *spares;
static __thread unsigned     nspares;

/* <x>'s control-frame buffer, from the spares or new. NULL when out of memory. */
static struct work *work_of(struct side *x)
{
    struct work *wk = x->wk;

    if (wk)
        return wk;
    wk = spares;
    if (wk) {
        spares = wk->next;
        nspares--;
    } else {
        wk = malloc(sizeof(*wk));
        if (!wk)
            return NULL;
    }
    wk->next = NULL;
    wk->ctl_len = 0;
    x->wk = wk;
    return wk;
}

/* Takes <x>'s buffer away, into the spares unless they are full. */
static void work_put(struct side *x)
{
    struct work *wk = x->wk;

    if (!wk)
        return;
    x->wk = NULL;
    if (nspares >= SPARE_MAX) {
        free(wk);
        return;
    }
    wk->next = spares;
    spares = wk;
    nspares++;
}

static void spares_free(void)
{
    struct work *wk;

    while ((wk = spares) != NULL) {
        spares = wk->next;
        free(wk);
    }
    nspares = 0;
}

/* Gives back <x>'s control-frame buffer unless a control frame is still arriving (the
 * relay is about to park). */
static void trim(struct side *x)
{
    if (x->wk && !(x->in_frame && x->in_op >= 8))
        work_put(x);
}

/* ------------------------------------------------------------------ closing */

static void begin_closing(struct sess *s)
{
    if (!s->close_at)
        s->close_at = s->now + s->c->lc->close_timeout_ms;
}

static void start_close(struct side *x, unsigned code, const char *reason);

/* Abandons <x>: nothing more is read from or written to it. Its peer learns by a close
 * unless <x> had sent its own. */
static void side_gone(struct side *x)
{
    struct sess *s = sess_of(x);
    struct side *y = peer_of(x);

    if (x->gone)
        return;
    cg_conn_closing(sess_of(x)->c, x->rerr < 0 && x->rerr != UV_EOF ? CG_CLOSE_ERROR
                                   : x->client ? CG_CLOSE_CLIENT : CG_CLOSE_SERVER);
    x->gone = 1;
    x->eof = 1;
    x->fwd = 0;
    x->ping_due = x->close_due = 0;
    coro_buf_put(sched_of(x), x->in);
    x->in = NULL;
    begin_closing(s);
    /* Gone without a close of its own: the peer learns with one. A plain TCP backend that
     * closed cleanly ended the conversation (1000); one that failed, or a WebSocket backend
     * that vanished without a close, is a bad gateway (1014). */
    if (!x->close_rcvd) {
        if (y->client) {
            if (x->raw && x->rerr == UV_EOF)
                start_close(y, 1000, "upstream closed");
            else
                start_close(y, 1014, "upstream went away");
        } else {
            start_close(y, 1001, "client went away");
        }
    }
}

static void send_control(struct side *x, uint8_t op, const uint8_t *data, size_t len)
{
    if (frame_put(x, 1, 0, op, data, len) < 0)
        side_gone(x);
}

/* Sends a close with <code> (1005: none) and <reason> of <len> bytes to <x>. */
static void send_close(struct side *x, unsigned code, const void *reason, size_t len)
{
    struct sess *s = sess_of(x);
    uint8_t buf[125] = { 0 };
    size_t n = 0;

    if (code != 1005) {
        if (len > sizeof(buf) - 2)
            len = sizeof(buf) - 2;
        buf[0] = (uint8_t)(code >> 8);
        buf[1] = (uint8_t)code;
        if (len)
            memcpy(buf + 2, reason, len);
        n = 2 + len;
    }
    x->close_due = 0;
    x->ping_due = 0;
    send_control(x, CG_WS_OP_CLOSE, buf, n);
    x->close_sent = 1;
    if (x->client)
        CG_STAT_ADD(s->c->w->stats.ws_close_sent[cg_ws_close_index(code)], 1);
    begin_closing(s);
}

/* Starts closing <x> with our own <code> and static <reason>: now if <x> is at a frame
 * boundary, else when it gets there. A raw backend is shut down instead. */
/* The closes of a failed client (enum fail): its own, and the backend's. */
static const struct {
    uint16_t    code;
    const char *client;
    const char *backend;
} fails[] = {
    [FAIL_PROTOCOL] = { 1002, "protocol error", "client protocol error" },
    [FAIL_UTF8] = { 1007, "invalid UTF-8", "client protocol error" },
    [FAIL_TOO_BIG] = { 1009, "message too big", "client sent a message too big" },
    [FAIL_RATE] = { 1008, "message rate limit", "client over its rate limit" },
};

static void start_close(struct side *x, unsigned code, const char *reason)
{
    struct sess *s = sess_of(x);

    begin_closing(s);
    if (x->gone || x->close_sent || x->close_due)
        return;
    if (x->client && s->fail) {
        /* The client was failed: whatever else ends the session, it hears why. */
        code = fails[s->fail].code;
        reason = fails[s->fail].client;
    }
    if (x->raw) {
        flush_out(x);
        if (!x->gone && !x->shut) {
            x->shut = 1;
            if (coro_shutdown(st_of(x)) < 0)
                side_gone(x);
        }
        return;
    }
    x->close_code = (uint16_t)code;
    x->close_reason = reason;
    x->close_due = 1;
}

static void close_both(struct sess *s, unsigned client_code, const char *client_reason,
                       unsigned backend_code, const char *backend_reason)
{
    start_close(&s->cl, client_code, client_reason);
    start_close(&s->be, backend_code, backend_reason);
}

/* Fails the client for <f>: nothing more it sends is forwarded; the backend is closed
 * first (1001), and what it still sends until its close answer goes to the client, which
 * gets its own close after that (start_close() at the backend's close, its end, or
 * close_timeout): a client's valid messages just before its violation, or its oversized
 * message, are answered as they would have been. */
static void fail_client(struct sess *s, enum fail f)
{
    struct side *be = &s->be;

    if (!s->fail)
        s->fail = (uint8_t)f;
    s->cl.fwd = 0;
    cg_conn_closing(s->c, CG_CLOSE_PROTOCOL);
    start_close(be, 1001, fails[f].backend);
    if (be->gone || be->close_rcvd || be->eof)
        start_close(&s->cl, 0, NULL);           /* no answer to wait for */
}

/* Out of memory for <x>'s frame context after the upgrade: the session is shed as a
 * server under load sheds one, 1013 "try again later" to the client and 1001 to the
 * backend, as far as memory allows; what <x> still sends is read and dropped. */
static void shed(struct side *x)
{
    struct sess *s = sess_of(x);

    cg_conn_closing(s->c, CG_CLOSE_LOCAL);
    x->input = IN_DRAIN;
    x->fwd = 0;
    close_both(s, 1013, "try again later", 1001, "gateway out of memory");
}

/* Sends our own control frames that became due during the pass (forwarded frames went
 * out first: a close follows the data it ends). */
static void send_due(struct side *x)
{
    struct sess *s = sess_of(x);

    if (x->raw || x->gone)
        return;
    if (x->ping_due) {
        x->ping_due = 0;
        send_control(x, CG_WS_OP_PING, (const uint8_t *)"corogate", 8);
        s->ping_at = s->now;
    }
    if (x->close_due && !x->gone)
        send_close(x, x->close_code, x->close_reason,
                   x->close_reason ? strlen(x->close_reason) : 0);
}

/* A protocol violation by <x> of <kind>: 1002, or 1007 for UTF-8 (RFC 6455 §7.1.7: we fail
 * the connection and process nothing more it sends).
 *
 * A client's violation closes the backend side first (1001): what the client sent before
 * the violation was forwarded, and the backend's answers to it, until its close, still go
 * to the client; then the client gets its 1002 or 1007 (start_close(), at the backend's
 * close, or its end, or close_timeout). A backend's violation gets the client a 1014. */
static void violation(struct side *x, enum cg_ws_proto_stat kind, int framing)
{
    struct sess *s = sess_of(x);
    unsigned code = kind == CG_WSP_UTF8 ? 1007 : 1002;

    if (x->client)
        CG_STAT_ADD(s->c->w->stats.ws_proto_errors[kind], 1);
    else
        CG_STAT_ADD(s->c->w->stats.ws_upstream_proto_errors, 1);
    cg_debug("websocket %s: protocol error (%s): closing %u", x->client ? "client" : "upstream",
             cg_ws_proto_name(kind), code);
    x->input = framing ? IN_DRAIN : IN_DISCARD;
    if (x->client) {
        fail_client(s, kind == CG_WSP_UTF8 ? FAIL_UTF8 : FAIL_PROTOCOL);
    } else {
        x->fwd = 0;
        cg_conn_closing(s->c, CG_CLOSE_SERVER);
        close_both(s, 1014, "upstream protocol error",
                   code, kind == CG_WSP_UTF8 ? "invalid UTF-8" : "protocol error");
    }
}

/* ------------------------------------------------------------------ receiving frames */

/* Applies the client's message rate limit to a frame of <len> bytes (<first>: the first
 * of a message). Returns 0, or -1 when it closed the connection (action close). */
static int rate_limit(struct sess *s, uint64_t len, int first)
{
    const struct cg_listener_conf *lc = s->c->lc;
    struct rate *r = s->rate;

    if (!r)
        return 0;
    if (lc->rate_limit_action == CG_RATE_CLOSE) {
        if ((!first || cg_tb_take(&r->msgs, 1, s->now)) && cg_tb_take(&r->bytes, len, s->now))
            return 0;
        CG_STAT_ADD(s->c->w->stats.ws_rate_limited, 1);
        s->cl.input = IN_DISCARD;
        fail_client(s, FAIL_RATE);
        return -1;
    }
    /* delay: charge now, stop reading at the next frame boundary while in debt */
    if (first)
        cg_tb_force(&r->msgs, 1, s->now);
    cg_tb_force(&r->bytes, len, s->now);
    return 0;
}

/* 1 while the client's reads are paused by the rate limit (action delay). */
static int rate_paused(struct sess *s)
{
    uint64_t a, b;

    if (!s->rate || s->c->lc->rate_limit_action != CG_RATE_DELAY || s->cl.input != IN_FRAMES)
        return 0;
    a = cg_tb_wait_ms(&s->rate->msgs, 1, s->now);
    b = cg_tb_wait_ms(&s->rate->bytes, 1, s->now);
    if (!a && !b) {
        s->rate_noted = 0;
        return 0;
    }
    s->rate_until = s->now + (a > b ? a : b);
    if (!s->rate_noted) {
        s->rate_noted = 1;
        CG_STAT_ADD(s->c->w->stats.ws_rate_limited, 1);
    }
    return 1;
}

/* The first piece of a frame from <x>. Returns 0, or -1 after a violation or limit. */
static int frame_start(struct side *x, const struct piece *io)
{
    struct sess *s = sess_of(x);
    struct side *y = peer_of(x);
    uint8_t op = io->opcode;

    x->in_frame = 1;
    x->in_op = op;
    x->in_fin = io->fin;
    x->in_rsv = io->rsv;
    x->in_len = x->in_rem = io->payload_length;
    x->fwd = 0;
    x->piece_sent = 0;
    if (x->client) {
        s->last_rx = s->now;
        s->ping_at = 0;         /* any frame shows the client is alive */
    }
    if (op >= 8) {
        if (!work_of(x)) {
            shed(x);
            return -1;
        }
        x->wk->ctl_len = 0;
    }
    if (x->input != IN_FRAMES)
        return 0;
    if (x->client && !io->mask)
        return violation(x, CG_WSP_UNMASKED, 0), -1;
    if (!x->client && io->mask)
        return violation(x, CG_WSP_UNMASKED, 0), -1;
    /* RSV1 marks a compressed message when permessage-deflate was negotiated (RFC 7692
     * §6): on the first frame of a data message only. No other bit has a meaning. */
    if ((io->rsv & ~CG_WS_RSV1) ||
        ((io->rsv & CG_WS_RSV1) && (!s->deflate || op == CG_WS_OP_CONT ||
                                        op >= 8)))
        return violation(x, CG_WSP_RSV, 0), -1;
    if (op > CG_WS_OP_BINARY && op != CG_WS_OP_CLOSE && op != CG_WS_OP_PING &&
        op != CG_WS_OP_PONG)
        return violation(x, CG_WSP_OPCODE, 0), -1;
    if (op >= 8)
        return 0;
    if ((op == CG_WS_OP_CONT) != (x->msg_op != 0))
        return violation(x, CG_WSP_CONTINUATION, 0), -1;
    if (op != CG_WS_OP_CONT) {
        x->msg_op = op;
        x->msg_z = (io->rsv & CG_WS_RSV1) != 0;
        x->msg_len = 0;
        x->utf8 = CG_UTF8_ACCEPT;
    }
    x->msg_len += io->payload_length;
    if (x->client && x->msg_len > s->c->lc->max_message_size) {
        CG_STAT_ADD(s->c->w->stats.ws_too_big, 1);
        x->input = IN_DISCARD;
        fail_client(s, FAIL_TOO_BIG);
        return -1;
    }
    if (x->client && rate_limit(s, io->payload_length, op != CG_WS_OP_CONT) < 0)
        return -1;
    s->last_data = s->now;
    x->fwd = !y->gone && !y->close_sent && !y->close_due && !y->shut;
    return 0;
}

/* Passes the piece <io> of <x>'s current data frame on to its peer, as a frame of its own:
 * a frame that arrived whole leaves as it came; one that arrives in pieces leaves as
 * fragments of the same message (RFC 6455 §5.4 lets an intermediary refragment; the RSV1
 * of permessage-deflate stays on the message's first frame). So the peer's side is at a
 * frame boundary after every piece: our pongs and closes never wait for the rest of a
 * long frame, and a close can always be sent. */
static void forward(struct side *x, const struct piece *io)
{
    struct side *y = peer_of(x);

    if (y->raw) {
        if (out_put(y, io->data, io->data_length) < 0)
            side_gone(y);
        return;
    }
    if (io->data_length == 0 && x->in_rem > 0)
        return;                 /* nothing to pass on yet */
    if (frame_put(y, x->in_fin && x->in_rem == 0, x->piece_sent ? 0 : x->in_rsv,
                  x->piece_sent ? CG_WS_OP_CONT : x->in_op, io->data, io->data_length) < 0) {
        side_gone(y);
        return;
    }
    x->piece_sent = 1;
}

static void on_close_frame(struct side *x)
{
    struct sess *s = sess_of(x);
    struct side *y = peer_of(x);
    const uint8_t *p = x->wk->ctl;
    size_t len = x->wk->ctl_len;
    unsigned code = 1005;

    if (x->input == IN_FRAMES) {
        if (len == 1)
            return violation(x, CG_WSP_CLOSE, 0);
        if (len >= 2) {
            code = (unsigned)p[0] << 8 | p[1];
            if (!cg_ws_close_code_is_valid(code))
                return violation(x, CG_WSP_CLOSE, 0);
            if (!cg_utf8_is_valid(p + 2, len - 2))
                return violation(x, CG_WSP_UTF8, 0);
        }
    } else if (len >= 2) {
        code = (unsigned)p[0] << 8 | p[1];
    }
    x->close_rcvd = 1;
    x->rcvd_code = (uint16_t)code;
    cg_conn_closing(s->c, x->client ? CG_CLOSE_CLIENT : CG_CLOSE_SERVER);
    x->eof = 1;                 /* nothing may follow a close */
    if (x->client)
        CG_STAT_ADD(s->c->w->stats.ws_close_rcvd[cg_ws_close_index(code)], 1);
    begin_closing(s);
    if (!y->gone && !y->close_sent && !y->close_due && !y->shut) {
        if (y->raw) {
            start_close(y, code, NULL);     /* shuts the TCP backend down */
            send_close(x, code, p + 2, len >= 2 ? len - 2 : 0);
        } else if (y->client && s->fail) {
            start_close(y, 0, NULL);        /* the backend is done: now the client's 1002 */
        } else {
            send_close(y, code, p + 2, len >= 2 ? len - 2 : 0);   /* forwarded */
        }
    } else if (!x->close_sent && !x->close_due) {
        /* Nobody to forward it to: answer it ourselves. */
        if (x->client && s->fail)
            start_close(x, 0, NULL);
        else
            send_close(x, code, p + 2, len >= 2 ? len - 2 : 0);
    }
}

/* The last piece of a frame from <x>. */
static void frame_end(struct side *x)
{
    struct sess *s = sess_of(x);

    x->in_frame = 0;
    if (x->in_op < 8) {
        if (!x->in_fin)
            return;
        if (x->input == IN_FRAMES && x->msg_op == CG_WS_OP_TEXT && !x->msg_z &&
            x->utf8 != CG_UTF8_ACCEPT)
            return violation(x, CG_WSP_UTF8, 0);
        x->msg_op = 0;
        if (x->fwd) {
            CG_STAT_ADD(*(x->client ? &s->c->w->stats.ws_msgs_in : &s->c->w->stats.ws_msgs_out), 1);
            cg_conn_log_msg(s->c, !x->client);
        }
        return;
    }
    if (!x->wk)
        return;                 /* shed for want of its buffer (frame_start()) */
    switch (x->in_op) {
    case CG_WS_OP_PING:
        /* Every ping gets its pong, in order, at once: <x> is always at a frame boundary
         * (forward()), also between the fragments of a message. */
        if (!x->close_sent && !x->close_due && x->input == IN_FRAMES)
            send_control(x, CG_WS_OP_PONG, x->wk->ctl, x->wk->ctl_len);
        break;
    case CG_WS_OP_PONG:
        break;                  /* frame_start() already ended the keepalive wait */
    case CG_WS_OP_CLOSE:
        on_close_frame(x);
        break;
    }
}

/* One piece of a frame from <x>. */
static void on_piece(struct side *x, const struct piece *io)
{
    if (!x->in_frame)
        frame_start(x, io);     /* on error it leaves x->fwd = 0: the frame is dropped */
    x->in_rem -= io->data_length;
    if (x->in_op < 8) {
        if (x->fwd && x->msg_op == CG_WS_OP_TEXT && !x->msg_z) {
            x->utf8 = cg_utf8_feed(x->utf8, io->data, io->data_length);
            /* An incomplete character at the very end of the message is an error too;
             * catch it before the last piece goes out. */
            if (x->utf8 == CG_UTF8_REJECT ||
                (x->in_rem == 0 && x->in_fin && x->utf8 != CG_UTF8_ACCEPT))
                violation(x, CG_WSP_UTF8, 0);
        }
        if (x->fwd)
            forward(x, io);
    } else if (io->data_length && x->wk) {
        memcpy(x->wk->ctl + x->wk->ctl_len, io->data, io->data_length);
        x->wk->ctl_len += (uint8_t)io->data_length;
    }
    if (x->in_rem == 0)
        frame_end(x);
}

/* Reads and drops whatever <x> sends, until EOF. */
static int drain(struct side *x)
{
    struct coro_buf *b;
    ssize_t n;
    int progress = 0;

    coro_buf_put(sched_of(x), x->in);
    x->in = NULL;
    while ((n = coro_try_read(st_of(x), &b)) > 0) {
        coro_buf_put(sched_of(x), b);
        progress = 1;
    }
    if (n != UV_EAGAIN) {
        x->eof = 1;
        x->rerr = (int32_t)n;
    }
    return progress;
}

static void on_read_end(struct side *x)
{
    x->eof = 1;
    if (!x->close_rcvd)
        side_gone(x);
}

/* Processes what the WebSocket side <x> sent. Returns 1 on progress, 0 when it must wait. */
static int pump_ws(struct side *x)
{
    struct sess *s = sess_of(x);
    struct side *y = peer_of(x);
    struct piece io;
    size_t budget = PUMP_BUDGET;
    int progress = 0, r;

    while (!x->gone && !x->eof) {
        if (x->input == IN_DRAIN)
            return drain(x) | progress;
        if (!x->in_frame) {
            if (x->input == IN_FRAMES && !y->gone && queued(y) > s->c->lc->high_water)
                break;          /* backpressure: the peer is slow */
            if (queued(x) > s->c->lc->high_water)
                break;          /* <x> does not read its own answers (a flood of pings) */
            if (x->client && rate_paused(s))
                break;
        }
        r = frame_recv(x, &io);
        if (r == 0) {
            if (x->rerr)
                on_read_end(x);
            break;
        }
        if (r < 0) {
            /* Only the frame layer's own checks: a control frame fragmented or longer
             * than 125 bytes, or a length not in its shortest form. */
            const uint8_t *h = x->t_hdr;
            int ctl = (h[0] & 0x08) && (!(h[0] & 0x80) || (h[1] & 0x7f) > 125);

            if (x->input == IN_FRAMES)
                violation(x, ctl ? CG_WSP_CONTROL : CG_WSP_LENGTH, 1);
            x->input = IN_DRAIN;
            continue;
        }
        progress = 1;
        on_piece(x, &io);
        if (x->in && x->in->off == x->in->len) {
            coro_buf_put(sched_of(x), x->in);      /* parsed: not held while parked */
            x->in = NULL;
        }
        if (io.data_length >= budget)
            break;
        budget -= io.data_length;
    }
    return progress;
}

/* Processes what the raw TCP backend <x> sent: each chunk becomes a binary message. */
static int pump_raw(struct side *x)
{
    struct sess *s = sess_of(x);
    struct side *y = peer_of(x);
    struct coro_buf *b;
    int progress = 0;
    ssize_t n;

    while (!x->gone && !x->eof) {
        if (!y->gone && queued(y) > s->c->lc->high_water)
            break;
        n = coro_try_read(st_of(x), &b);
        if (n == UV_EAGAIN)
            break;
        if (n < 0) {
            x->rerr = (int32_t)n;
            on_read_end(x);
            break;
        }
        progress = 1;
        if (!y->gone && !y->close_sent && !y->close_due) {
            if (frame_put(y, 1, 0, CG_WS_OP_BINARY, (const uint8_t *)b->data + b->off,
                          (size_t)n) < 0)
                side_gone(y);
            s->last_data = s->now;
            CG_STAT_ADD(s->c->w->stats.ws_msgs_out, 1);
            cg_conn_log_msg(s->c, 1);
        }
        coro_buf_put(s->c->w->sched, b);
    }
    return progress;
}

/* ------------------------------------------------------------------ the relay */

/* 1 when nothing more is to be done with <x>. After a framing error (IN_DRAIN) the
 * connection is failed (RFC 6455 §7.1.7): our close is enough. */
static int side_done(const struct side *x)
{
    if (x->gone)
        return 1;
    if (x->raw)
        return x->eof || x->shut;
    return x->close_sent && (x->close_rcvd || x->eof || x->input == IN_DRAIN);
}

/* Acts on the timeouts due at s->now. Returns 1 when the close handshake ran out of time. */
static int check_timers(struct sess *s)
{
    const struct cg_listener_conf *lc = s->c->lc;

    if (s->close_at)
        return s->now >= s->close_at;
    if (s->expire_at && s->now >= s->expire_at) {
        CG_STAT_ADD(s->c->w->stats.lifetime_closes, 1);
        cg_conn_closing(s->c, CG_CLOSE_LIFETIME);
        close_both(s, 1001, "connection lifetime", 1001, "client connection lifetime");
        return 0;
    }
    if (lc->idle_timeout_ms && s->now - s->last_data >= lc->idle_timeout_ms) {
        CG_STAT_ADD(s->c->w->stats.idle_timeouts, 1);
        cg_conn_closing(s->c, CG_CLOSE_IDLE);
        close_both(s, 1001, "idle timeout", 1001, "client idle timeout");
        return 0;
    }
    if (lc->keepalive_interval_ms) {
        if (s->ping_at && s->now - s->ping_at >= lc->keepalive_timeout_ms) {
            CG_STAT_ADD(s->c->w->stats.ws_keepalive_timeouts, 1);
            cg_conn_closing(s->c, CG_CLOSE_IDLE);
            close_both(s, 1001, "keepalive timeout", 1001, "client keepalive timeout");
        } else if (!s->ping_at && !s->cl.ping_due &&
                   s->now - s->last_rx >= lc->keepalive_interval_ms) {
            s->cl.ping_due = 1;
        }
    }
    return 0;
}

static void earliest(uint64_t *t, uint64_t at)
{
    if (at && (*t == 0 || at < *t))
        *t = at;
}

/* How long the relay may park: until the next timer due. */
static int64_t park_time(struct sess *s)
{
    const struct cg_listener_conf *lc = s->c->lc;
    uint64_t t = 0;

    if (s->close_at) {
        t = s->close_at;
    } else {
        earliest(&t, s->expire_at);
        if (lc->idle_timeout_ms)
            earliest(&t, s->last_data + lc->idle_timeout_ms);
        /* A ping due but not sent yet waits for a frame boundary, not for a timer. */
        if (lc->keepalive_interval_ms && !s->cl.ping_due)
            earliest(&t, s->ping_at ? s->ping_at + lc->keepalive_timeout_ms
                                    : s->last_rx + lc->keepalive_interval_ms);
    }
    if (s->rate_until > s->now)
        earliest(&t, s->rate_until);
    if (!t)
        return CORO_FOREVER;
    return t > s->now ? (int64_t)(t - s->now) : 0;
}


/* At close_timeout: the close <x> is owed, if nobody sent it: the answer to its own close
 * (its own code), or a failed client's 1002/1007. */
static void owed_close(struct side *x)
{
    struct sess *s = sess_of(x);

    if (x->raw || x->gone || x->close_sent)
        return;
    if (x->client && s->fail) {
        x->close_due = 0;
        start_close(x, 0, NULL);
        send_due(x);
    } else if (x->close_rcvd) {
        send_close(x, x->rcvd_code, NULL, 0);
    }
    flush_out(x);
}

/* 1 when a pass over <x> may find more to read: bytes not parsed yet, or its stream has
 * some. After a pass, a side that had nothing would have nothing still (the stream wakes
 * us when more comes). */
static int side_more(const struct side *x)
{
    if (x->gone || x->eof)
        return 0;
    return (x->in && x->in->off < x->in->len) || coro_stream_readable(st_of(x));
}

void cg_ws__relay(struct sess *s)
{
    struct cg_conn *c = s->c;
    uv_loop_t *loop = coro_sched_loop(s->c->w->sched);
    int progress, burst = 0, err;
    int64_t left;

    coro_stream_watch(&c->client, c->co);
    coro_stream_watch(&c->up, c->co);
    s->now = uv_now(loop);
    s->last_data = s->last_rx = s->now;
    s->expire_at = cg_conn_deadline(c->lc, s->now);
    for (;;) {
        s->now = uv_now(loop);
        if (check_timers(s)) {
            CG_STAT_ADD(s->c->w->stats.ws_close_timeouts, 1);
            /* A peer whose close the other side never answered gets its answer from us. */
            owed_close(&s->cl);
            owed_close(&s->be);
            break;
        }
        progress = pump_ws(&s->cl);
        progress |= s->be.raw ? pump_raw(&s->be) : pump_ws(&s->be);
        send_due(&s->cl);
        send_due(&s->be);
        flush_out(&s->cl);
        flush_out(&s->be);
        if (side_done(&s->cl) && side_done(&s->be))
            break;
        /* Again only while a side has more: a second pass that finds nothing (each
         * message's, before) costs as much as the first. */
        if (progress && !side_more(&s->cl) && !side_more(&s->be))
            progress = 0;
        if (progress && ++burst < WS_BURST)
            continue;
        if (progress) {
            /* A side that always has more (a bulk transfer faster than we relay) lets the
             * loop and the worker's other connections run between bursts. */
            burst = 0;
            err = coro_yield();
        } else {
            burst = 0;
            trim(&s->cl);
            trim(&s->be);
            err = coro_park("ws relay", park_time(s));
        }
        if (err == UV_ECANCELED) {
            /* Drain: close both cleanly; a second cancel (stop) cuts. */
            cg_conn_closing(c, CG_CLOSE_STOPPED);
            if (s->cancels++)
                break;
            s->now = uv_now(loop);
            close_both(s, 1001, "going away", 1001, "going away");
        }
    }
    /* Let the last frames (the closes) leave, within what close_timeout allows. */
    s->now = uv_now(loop);
    left = s->close_at > s->now ? (int64_t)(s->close_at - s->now) : 0;
    if (left < FLUSH_MIN_MS)
        left = FLUSH_MIN_MS;
    if (!s->be.gone)
        coro_flush(&c->up, left);
    if (!s->cl.gone && coro_flush(&c->client, left) == 0 && !s->cl.close_rcvd)
        cg_ws__linger(s, left);        /* the client may still be sending: do not reset */
}

/* ------------------------------------------------------------------ the session */

static void side_free(struct side *x)
{
    work_put(x);
    coro_buf_put(sched_of(x), x->in);
    coro_buf_put(sched_of(x), x->out);
    x->in = x->out = NULL;
}

void cg_ws__sides_free(struct sess *s)
{
    side_free(&s->cl);
    side_free(&s->be);
}

void cg_ws_session(void *arg)
{
    struct cg_conn *c = arg;
    const struct cg_listener_conf *lc = c->lc;
    struct sess *s = NULL;

    c->co = coro_self();
    c->client.wq_high = (uint32_t)lc->high_water;
    s = coro_slab_alloc(&c->w->sess_slab);      /* its worker's: coro/slab.h says why */
    if (!s)
        goto out;
    s->c = c;
    s->cl.client = 1;
    s->be.raw = lc->upstream_protocol == CG_UPROTO_TCP;
    s->now = uv_now(coro_sched_loop(c->w->sched));
    if (lc->message_rate || lc->byte_rate) {
        s->rate = malloc(sizeof(*s->rate));
        if (!s->rate)
            goto out_sess;
        cg_tb_init(&s->rate->msgs, lc->message_rate, lc->message_burst, s->now);
        cg_tb_init(&s->rate->bytes, lc->byte_rate, lc->byte_burst, s->now);
    }
    if (cg_ws__open(s) == 0)
        cg_ws__relay(s);
    /* The connection log's view of the session (core/conn.h). */
    cg_conn_log_ws_end(c, s->cl.close_rcvd ? s->cl.rcvd_code : 0,
                       s->be.close_rcvd ? s->be.rcvd_code : 0);
    cg_ws__sides_free(s);
out_sess:
    free(s->rate);
    coro_slab_free(&c->w->sess_slab, s);
out:
    cg_conn_end(c);
}

void cg_protocols_fill(struct cg_protocols *p)
{
    p->session[CG_MODE_TCP] = cg_tcp_session;
    p->session[CG_MODE_WEBSOCKET] = cg_ws_session;
    p->sess_size = sizeof(struct sess);
    p->worker_end = spares_free;
    p->refuse = cg_refusal_start;
}
