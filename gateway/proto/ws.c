/* gateway/proto/ws.c — the WebSocket session: after its opening (ws-open.c), a
 * frame-by-frame relay.
 *
 * Relay model. One coroutine drives both sides and never blocks on a write (as the TCP
 * relay: a blocking write in a single coroutine would deadlock against an echo peer). Each
 * side has a wslay frame context: wslay_frame_recv() parses the frames a side sends,
 * wslay_frame_send() writes frames to it. A data frame received from one side is forwarded
 * to the other as a frame with the same opcode, FIN bit and length, its payload passed on
 * chunk by chunk as it arrives (header with the first chunk): fragmentation is preserved,
 * a message of any size streams through, and the only copies are into wslay's 4 KiB
 * receive buffer and into the pooled output buffer. Control frames are ours: pings are
 * answered on the side they came from, pongs end a keepalive wait, and a close is
 * forwarded to the other side, whose answer is forwarded back (so each peer sees the
 * other's close code and reason), bounded by close_timeout.
 *
 * A frame can only start on a side at a frame boundary, so our own control frames (pongs,
 * pings, closes) wait while a forwarded frame is half sent ("due"); a close that never
 * finds a boundary is cut at close_timeout, when both connections are simply closed.
 *
 * Backpressure: a side is read only while the other side's queue (pooled buffers handed
 * to libuv plus the output being gathered) is under high_water, so a slow reader stops
 * its peer through TCP instead of growing our memory.
 *
 * Memory while idle. We use wslay's frame layer rather than its event layer, which
 * buffers whole messages and answers closes by itself. A frame context holds a 4 KiB
 * receive buffer, so each side's context (with our 250 bytes of control-frame payloads)
 * is taken when the side has a frame to parse or to send and given back as soon as the
 * relay is about to park with the side at a frame boundary and nothing buffered: an idle
 * connection holds the cg_conn, this session, and the coroutine's saved stack, no buffer.
 * Contexts given back go to a small per-worker (per-thread) cache, so a busy connection
 * takes and gives back the same warm context per message without malloc, and a burst of
 * messages over many connections needs only as many contexts as are busy at once rather
 * than one per connection that carried traffic in the last second (memory that, once
 * freed, malloc would keep resident). To know that nothing is buffered inside wslay we
 * count the bytes handed to it and the bytes of the frames it returned (header sizes
 * follow from the lengths, since wslay rejects non-minimal length encodings).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <wslay/wslay.h>

#include "coro/io.h"
#include "common/handshake.h"
#include "base/log.h"
#include "common/rand.h"
#include "core/conn.h"
#include "core/relay.h"
#include "core/reload.h"
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

static uint64_t queued(const struct side *x)
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

/* Appends <len> bytes to what <x> will be sent. Returns 0 or UV_ENOMEM. */
static int out_put(struct side *x, const void *data, size_t len)
{
    struct coro_buf *b;
    const char *p = data;
    size_t n;

    while (len > 0) {
        b = x->out;
        if (!b) {
            b = x->out = coro_buf_get(sched_of(x), 0);
            if (!b)
                return UV_ENOMEM;
        }
        n = b->cap - b->len < len ? b->cap - b->len : len;
        memcpy(b->data + b->len, p, n);
        b->len += (uint32_t)n;
        p += n;
        len -= n;
        if (b->len == b->cap)
            flush_out(x);
    }
    return 0;
}

/* ------------------------------------------------------------------ wslay callbacks */

static ssize_t on_send(const uint8_t *data, size_t len, int flags, void *ud)
{
    struct side *x = ((struct work *)ud)->x;

    if (out_put(x, data, len) < 0)
        return -1;          /* wslay reports WANT_WRITE; the caller gives the side up */
    return (ssize_t)len;
}

/* Follows the frames in the <n> bytes at <p> about to be handed to wslay, and returns how
 * many of them to hand over: never past the end of a frame, and at most one header start
 * per hand-over. So wslay never holds bytes of a frame it has not started to return, its
 * header's first bytes are in x->hdr when it reports WSLAY_ERR_PROTO, and at a frame
 * boundary it holds nothing. */
static size_t track(struct side *x, const uint8_t *p, size_t n)
{
    size_t i = 0, k;
    uint64_t v;

    while (i < n) {
        if (x->t_need == 0) {
            if (x->t_rem == 0) {
                if (i > 0)
                    break;          /* the next header goes in the next hand-over */
                x->t_need = 2;
                x->t_have = 0;
                continue;
            }
            k = n - i < x->t_rem ? n - i : (size_t)x->t_rem;
            x->t_rem -= k;
            i += k;
            if (x->t_rem == 0)
                break;              /* the frame ends here */
            continue;
        }
        x->t_hdr[x->t_have++] = p[i++];
        if (x->t_have == 2) {
            x->hdr[0] = x->t_hdr[0];
            x->hdr[1] = x->t_hdr[1];
            x->t_need = (uint8_t)cg_ws_hdr_size(x->t_hdr[1]);
        }
        if (x->t_have >= 2 && x->t_have == x->t_need) {
            v = cg_ws_payload_len(x->t_hdr);
            x->t_rem = v;
            x->t_need = 0;
            if (v == 0)
                break;              /* a frame without payload ends with its header */
        }
    }
    return i;
}

static ssize_t on_recv(uint8_t *buf, size_t len, int flags, void *ud)
{
    struct side *x = ((struct work *)ud)->x;
    struct coro_buf *b = x->in;
    ssize_t r;
    size_t n;

    if (!b) {
        r = coro_try_read(st_of(x), &b);
        if (r == UV_EAGAIN)
            return -1;      /* WANT_READ */
        if (r < 0) {
            x->rerr = (int32_t)r;
            return -1;
        }
        x->in = b;
        if (x->client) {
            struct cg_conn *c = sess_of(x)->c;

            CG_STAT_ADD(c->w->stats.bytes_in, (uint64_t)r);
            CG_STAT_ADD(c->l->stats.bytes_in, (uint64_t)r);
        }
    }
    n = b->len - b->off < len ? b->len - b->off : len;
    n = track(x, (const uint8_t *)b->data + b->off, n);
    memcpy(buf, b->data + b->off, n);
    b->off += (uint32_t)n;
    x->given += n;
    if (b->off == b->len) {
        coro_buf_put(sched_of(x), b);
        x->in = NULL;
    }
    return (ssize_t)n;
}

static int on_genmask(uint8_t *buf, size_t len, void *ud)
{
    cg_rand_bytes(buf, len);
    return 0;
}

static const struct wslay_frame_callbacks frame_callbacks = {
    .send_callback = on_send,
    .recv_callback = on_recv,
    .genmask_callback = on_genmask,
};

/* Frame contexts given back at a frame boundary, for the next frame on this thread (each
 * worker runs its sessions on its own thread). One list per role: wslay keeps its "mask
 * the payload" flag once a masked frame was sent, so a context that sent to a backend
 * (masked) must never send to a client. At most SPARE_MAX per role, kept as long as the
 * worker runs (cg_protocols_fill()'s worker_end empties them): freeing them whenever the
 * thread's last session ended cost a malloc and a free per connection at low
 * concurrency. */
static __thread struct work *spares[2];
static __thread unsigned     nspares[2];

/* <x>'s work state, from the spares or new. NULL when out of memory. A context is handed
 * on only at a frame boundary both ways with nothing buffered (trimmable()), where wslay's
 * state is that of a new context except for its role. */
static struct work *work_of(struct side *x)
{
    struct work *wk = x->wk;
    int role = !x->client;

    if (wk)
        return wk;
    wk = spares[role];
    if (wk) {
        spares[role] = wk->next;
        nspares[role]--;
    } else {
        wk = malloc(sizeof(*wk));
        if (!wk)
            return NULL;
        if (wslay_frame_context_init(&wk->fr, &frame_callbacks, wk) != 0) {
            free(wk);
            return NULL;
        }
    }
    wk->x = x;
    wk->next = NULL;
    wk->ctl_len = 0;
    x->wk = wk;
    return wk;
}

static void work_destroy(struct work *wk)
{
    wslay_frame_context_free(wk->fr);
    free(wk);
}

/* Takes <x>'s work state away: into the spares when <reuse> (only at a frame boundary:
 * see work_of()), freed otherwise or when they are full. */
static void work_put(struct side *x, int reuse)
{
    struct work *wk = x->wk;
    int role = !x->client;

    if (!wk)
        return;
    x->wk = NULL;
    if (!reuse || nspares[role] >= SPARE_MAX) {
        work_destroy(wk);
        return;
    }
    wk->x = NULL;
    wk->next = spares[role];
    spares[role] = wk;
    nspares[role]++;
}

static void spares_free(void)
{
    struct work *wk;
    int role;

    for (role = 0; role < 2; role++) {
        while ((wk = spares[role]) != NULL) {
            spares[role] = wk->next;
            work_destroy(wk);
        }
        nspares[role] = 0;
    }
}

/* 1 when <x> has a frame context it could give back: at a frame boundary both ways,
 * nothing buffered in wslay, nothing due. */
static int trimmable(const struct side *x)
{
    return x->wk && !x->in && !x->in_frame && !x->ping_due && !x->close_due &&
           x->given == x->next_hdr;
}

/* Gives back <x>'s frame context when it is trimmable (the relay is about to park). */
static void trim(struct side *x)
{
    if (trimmable(x))
        work_put(x, 1);
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
    struct wslay_frame_iocb io = {
        .fin = 1, .opcode = op, .mask = !x->client, .payload_length = len,
        .data = data, .data_length = len,
    };

    if (!work_of(x) || wslay_frame_send(x->wk->fr, &io) < 0) {
        side_gone(x);
        return;
    }
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
    send_control(x, WSLAY_CONNECTION_CLOSE, buf, n);
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
        send_control(x, WSLAY_PING, (const uint8_t *)"corogate", 8);
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

static int hdr_len(const struct wslay_frame_iocb *io)
{
    uint64_t n = io->payload_length;

    return 2 + (n < 126 ? 0 : n < 65536 ? 2 : 8) + (io->mask ? 4 : 0);
}

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
static int frame_start(struct side *x, const struct wslay_frame_iocb *io)
{
    struct sess *s = sess_of(x);
    struct side *y = peer_of(x);
    uint8_t op = io->opcode;

    x->in_frame = 1;
    x->in_op = op;
    x->in_fin = io->fin;
    x->in_rsv = io->rsv;
    x->in_len = x->in_rem = io->payload_length;
    x->next_hdr += (uint64_t)hdr_len(io) + io->payload_length;
    x->fwd = 0;
    x->piece_sent = 0;
    if (x->client) {
        s->last_rx = s->now;
        s->ping_at = 0;         /* any frame shows the client is alive */
    }
    if (op >= 8)
        x->wk->ctl_len = 0;
    if (x->input != IN_FRAMES)
        return 0;
    if (x->client && !io->mask)
        return violation(x, CG_WSP_UNMASKED, 0), -1;
    if (!x->client && io->mask)
        return violation(x, CG_WSP_UNMASKED, 0), -1;
    /* RSV1 marks a compressed message when permessage-deflate was negotiated (RFC 7692
     * §6): on the first frame of a data message only. No other bit has a meaning. */
    if ((io->rsv & ~WSLAY_RSV1_BIT) ||
        ((io->rsv & WSLAY_RSV1_BIT) && (!s->deflate || op == WSLAY_CONTINUATION_FRAME ||
                                        op >= 8)))
        return violation(x, CG_WSP_RSV, 0), -1;
    if (op > WSLAY_BINARY_FRAME && op != WSLAY_CONNECTION_CLOSE && op != WSLAY_PING &&
        op != WSLAY_PONG)
        return violation(x, CG_WSP_OPCODE, 0), -1;
    if (op >= 8)
        return 0;
    if ((op == WSLAY_CONTINUATION_FRAME) != (x->msg_op != 0))
        return violation(x, CG_WSP_CONTINUATION, 0), -1;
    if (op != WSLAY_CONTINUATION_FRAME) {
        x->msg_op = op;
        x->msg_z = (io->rsv & WSLAY_RSV1_BIT) != 0;
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
    if (x->client && rate_limit(s, io->payload_length, op != WSLAY_CONTINUATION_FRAME) < 0)
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
static void forward(struct side *x, const struct wslay_frame_iocb *io)
{
    struct side *y = peer_of(x);
    struct wslay_frame_iocb o = {
        .fin = x->in_fin && x->in_rem == 0,
        .rsv = x->piece_sent ? 0 : x->in_rsv,
        .opcode = x->piece_sent ? WSLAY_CONTINUATION_FRAME : x->in_op,
        .mask = !y->client,
        .payload_length = io->data_length, .data = io->data, .data_length = io->data_length,
    };

    if (y->raw) {
        if (out_put(y, io->data, io->data_length) < 0)
            side_gone(y);
        return;
    }
    if (io->data_length == 0 && x->in_rem > 0)
        return;                 /* nothing to pass on yet */
    if (!work_of(y) || wslay_frame_send(y->wk->fr, &o) != (ssize_t)io->data_length) {
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
        if (x->input == IN_FRAMES && x->msg_op == WSLAY_TEXT_FRAME && !x->msg_z &&
            x->utf8 != CG_UTF8_ACCEPT)
            return violation(x, CG_WSP_UTF8, 0);
        x->msg_op = 0;
        if (x->fwd) {
            CG_STAT_ADD(*(x->client ? &s->c->w->stats.ws_msgs_in : &s->c->w->stats.ws_msgs_out), 1);
            cg_conn_log_msg(s->c, !x->client);
        }
        return;
    }
    switch (x->in_op) {
    case WSLAY_PING:
        /* Every ping gets its pong, in order, at once: <x> is always at a frame boundary
         * (forward()), also between the fragments of a message. */
        if (!x->close_sent && !x->close_due && x->input == IN_FRAMES)
            send_control(x, WSLAY_PONG, x->wk->ctl, x->wk->ctl_len);
        break;
    case WSLAY_PONG:
        break;                  /* frame_start() already ended the keepalive wait */
    case WSLAY_CONNECTION_CLOSE:
        on_close_frame(x);
        break;
    }
}

/* One piece of a frame from <x>. */
static void on_piece(struct side *x, const struct wslay_frame_iocb *io)
{
    if (!x->in_frame)
        frame_start(x, io);     /* on error it leaves x->fwd = 0: the frame is dropped */
    x->in_rem -= io->data_length;
    if (x->in_op < 8) {
        if (x->fwd && x->msg_op == WSLAY_TEXT_FRAME && !x->msg_z) {
            x->utf8 = cg_utf8_feed(x->utf8, io->data, io->data_length);
            /* An incomplete character at the very end of the message is an error too;
             * catch it before the last piece goes out. */
            if (x->utf8 == CG_UTF8_REJECT ||
                (x->in_rem == 0 && x->in_fin && x->utf8 != CG_UTF8_ACCEPT))
                violation(x, CG_WSP_UTF8, 0);
        }
        if (x->fwd)
            forward(x, io);
    } else if (io->data_length) {
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
    struct wslay_frame_iocb io;
    size_t budget = PUMP_BUDGET;
    int progress = 0;
    ssize_t r;

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
        if (!x->wk && !x->in && !coro_stream_readable(st_of(x)))
            break;              /* nothing arrived: no need for a context yet */
        if (!work_of(x)) {
            shed(x);
            continue;
        }
        memset(&io, 0, sizeof(io));
        r = wslay_frame_recv(x->wk->fr, &io);
        if (r == WSLAY_ERR_WANT_READ) {
            if (x->rerr)
                on_read_end(x);
            break;
        }
        if (r < 0) {
            /* Only the frame layer's own checks: a control frame fragmented or longer
             * than 125 bytes, or a length not in its shortest form. */
            int ctl = (x->hdr[0] & 0x08) && (!(x->hdr[0] & 0x80) || (x->hdr[1] & 0x7f) > 125);

            if (x->input == IN_FRAMES)
                violation(x, ctl ? CG_WSP_CONTROL : CG_WSP_LENGTH, 1);
            x->input = IN_DRAIN;
            continue;
        }
        progress = 1;
        on_piece(x, &io);
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
    struct wslay_frame_iocb o = { .fin = 1, .opcode = WSLAY_BINARY_FRAME };
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
            o.payload_length = o.data_length = (size_t)n;
            o.data = (const uint8_t *)b->data + b->off;
            if (!work_of(y) || wslay_frame_send(y->wk->fr, &o) != n)
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

void cg_ws__relay(struct sess *s)
{
    struct cg_conn *c = s->c;
    uv_loop_t *loop = coro_sched_loop(s->c->w->sched);
    int progress, err;
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
        if (progress)
            continue;
        trim(&s->cl);
        trim(&s->be);
        err = coro_park("ws relay", park_time(s));
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
    trim(x);                /* a context at a frame boundary can serve another session */
    work_put(x, 0);
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
