/* loadgen/lg_ws.c — WebSocket handshakes on coroutine streams and a wslay wrapper.
 *
 * wslay's event layer does the framing, except for the peer's close frame, which we take
 * out of the byte stream before wslay sees it (lg_wsc_feed()): wslay refuses the close
 * codes registered after RFC 6455 (1012 service restart, 1013 try again later, 1014 bad
 * gateway) with a 1002, and an echo server used to test gateways must echo every valid
 * code back. Everything before the close goes to wslay as it came; our answer to the close
 * is queued once wslay has sent every message before it (wslay sends control frames ahead
 * of queued messages, which would lose the echoes of what came just before the close). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <wslay/wslay.h>

#include "common/handshake.h"
#include "common/utf8.h"
#include "common/ws-frame.h"
#include "lg_client.h"
#include "lg_msg.h"
#include "lg_ws.h"

#define HEAD_MAX 8192

struct lg_wsc {
    wslay_event_context_ptr ctx;
    lg_ws_send_fn           send;
    lg_ws_msg_fn            on_msg;
    void                   *ud;
    const uint8_t          *in;        /* bytes being parsed, borrowed during a feed */
    size_t                  inlen;
    uint64_t                rng;       /* masks */
    int                     send_err;
    /* Following the peer's frames (scan()): the header being read, then the payload bytes
     * left of the frame; at a frame boundary both are 0. */
    uint64_t                skip;
    uint8_t                 hdr[14];
    uint8_t                 hlen;
    uint8_t                 client;
    uint8_t                 in_close;  /* a close frame is being gathered into cbuf */
    uint8_t                 close_rcvd;/* 1: a valid close, 2: a bad one */
    uint8_t                 close_due; /* its answer waits for the messages queued before */
    uint16_t                close_code;/* the answer: code (0: none), reason in cbuf */
    uint8_t                 reason_off;
    uint8_t                 reason_len;
    uint8_t                 clen;
    uint8_t                 cbuf[14 + 125];
};

/* ------------------------------------------------------------------ wslay callbacks */

static ssize_t on_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags,
                       void *ud)
{
    struct lg_wsc *w = ud;
    size_t n = w->inlen < len ? w->inlen : len;

    if (n == 0) {
        wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
        return -1;
    }
    memcpy(buf, w->in, n);
    w->in += n;
    w->inlen -= n;
    return (ssize_t)n;
}

static ssize_t on_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len,
                       int flags, void *ud)
{
    struct lg_wsc *w = ud;
    int err = w->send(w->ud, data, len);

    if (err < 0) {
        w->send_err = err;
        wslay_event_set_error(ctx, WSLAY_ERR_CALLBACK_FAILURE);
        return -1;
    }
    return (ssize_t)len;
}

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static int on_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *ud)
{
    struct lg_wsc *w = ud;
    size_t i;

    for (i = 0; i < len; i++)
        buf[i] = (uint8_t)(next_rand(&w->rng) >> 56);
    return 0;
}

static void on_msg_recv(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
                        void *ud)
{
    struct lg_wsc *w = ud;

    if (a->opcode == WSLAY_TEXT_FRAME || a->opcode == WSLAY_BINARY_FRAME)
        w->on_msg(w->ud, a->opcode == WSLAY_TEXT_FRAME, a->msg, a->msg_length);
}

static const struct wslay_event_callbacks callbacks = {
    .recv_callback = on_recv,
    .send_callback = on_send,
    .genmask_callback = on_genmask,
    .on_msg_recv_callback = on_msg_recv,
};

/* ------------------------------------------------------------------ both ends */

struct lg_wsc *lg_ws_new(int client, lg_ws_send_fn send, lg_ws_msg_fn on_msg, void *ud)
{
    struct lg_wsc *w = calloc(1, sizeof(*w));
    int err;

    if (!w)
        return NULL;
    w->send = send;
    w->client = (uint8_t)!!client;
    w->on_msg = on_msg;
    w->ud = ud;
    w->rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)w) | 1;
    if (client)
        err = wslay_event_context_client_init(&w->ctx, &callbacks, w);
    else
        err = wslay_event_context_server_init(&w->ctx, &callbacks, w);
    if (err != 0) {
        free(w);
        return NULL;
    }
    wslay_event_config_set_max_recv_msg_length(w->ctx, LG_MSG_MAX);
    return w;
}

/* How many of the <n> bytes at <p> belong to frames before a close frame (all of them when
 * none starts here); a close frame found sets w->in_close. */
static size_t scan(struct lg_wsc *w, const uint8_t *p, size_t n)
{
    size_t i = 0, k;

    while (i < n) {
        if (w->hlen == 0 && w->skip == 0) {
            if ((p[i] & 0x0f) == WSLAY_CONNECTION_CLOSE) {
                w->in_close = 1;
                break;
            }
        }
        if (w->skip == 0) {
            w->hdr[w->hlen++] = p[i++];
            if (w->hlen >= 2 && w->hlen == cg_ws_hdr_size(w->hdr[1])) {
                w->skip = cg_ws_payload_len(w->hdr);
                w->hlen = 0;
            }
            continue;
        }
        k = n - i < w->skip ? n - i : (size_t)w->skip;
        w->skip -= k;
        i += k;
    }
    return i;
}

/* Gathers the close frame from the <n> bytes at <p>; once it is whole, answers it (its
 * code and reason echoed, or 1002/1007 for a bad one) and stops reading. */
static void take_close(struct lg_wsc *w, const uint8_t *p, size_t n)
{
    uint8_t *h = w->cbuf, *pl;
    unsigned need, code = 0, i;
    uint64_t len;

    while (n && !w->close_rcvd) {
        w->cbuf[w->clen++] = *p++;
        n--;
        if (w->clen < 2)
            continue;
        need = cg_ws_hdr_size(h[1]);
        len = cg_ws_payload_len(h);
        if ((h[1] & 0x7f) > 125 || !(h[0] & 0x80) || (h[0] & 0x70) ||
            ((h[1] & 0x80) != 0) == w->client) {
            code = 1002;        /* too long, fragmented, reserved bits, masking wrong */
        } else if (w->clen < need + len) {
            continue;
        } else {
            pl = h + need;
            if (h[1] & 0x80)
                for (i = 0; i < len; i++)
                    pl[i] ^= h[need - 4 + i % 4];
            code = len == 0 ? 0 : len == 1 ? 1002 : (unsigned)pl[0] << 8 | pl[1];
            if (len >= 2 && !cg_ws_close_code_is_valid(code))
                code = 1002;
            else if (len > 2 && !cg_utf8_is_valid(pl + 2, len - 2))
                code = 1007;
            else {
                w->close_rcvd = 1;
                w->reason_off = (uint8_t)(need + 2);
                w->reason_len = (uint8_t)(len > 2 ? len - 2 : 0);
                break;
            }
        }
        w->close_rcvd = 2;      /* a protocol error */
        break;
    }
    if (w->close_rcvd) {
        w->close_code = (uint16_t)code;
        w->close_due = 1;
        wslay_event_shutdown_read(w->ctx);
    }
}

int lg_wsc_feed(struct lg_wsc *w, const uint8_t *p, size_t len)
{
    size_t pass;
    int err;

    if (w->close_rcvd)
        return w->close_rcvd == 1 ? UV_EOF : UV_EPROTO;
    if (!wslay_event_get_read_enabled(w->ctx))
        return wslay_event_get_close_received(w->ctx) ? UV_EOF : UV_EPROTO;
    pass = w->in_close ? 0 : scan(w, p, len);
    w->in = p;
    w->inlen = pass;
    err = pass ? wslay_event_recv(w->ctx) : 0;
    w->in = NULL;
    w->inlen = 0;
    if (err == WSLAY_ERR_NOMEM)
        return UV_ENOMEM;
    if (err != 0)
        return UV_EPROTO;
    if (!wslay_event_get_read_enabled(w->ctx))
        return wslay_event_get_close_received(w->ctx) ? UV_EOF : UV_EPROTO;
    if (w->in_close) {
        take_close(w, p + pass, len - pass);
        if (w->close_rcvd)
            return w->close_rcvd == 1 ? UV_EOF : UV_EPROTO;
    }
    return 0;
}

int lg_wsc_send_op(struct lg_wsc *w, int text, const void *p, size_t len)
{
    struct wslay_event_msg m = { text ? WSLAY_TEXT_FRAME : WSLAY_BINARY_FRAME, p, len };
    int err = wslay_event_queue_msg(w->ctx, &m);

    if (err == WSLAY_ERR_NOMEM)
        return UV_ENOMEM;
    return err == 0 ? 0 : UV_EPIPE;
}

int lg_wsc_send(struct lg_wsc *w, const void *p, size_t len)
{
    return lg_wsc_send_op(w, 0, p, len);
}

int lg_wsc_flush(struct lg_wsc *w)
{
    int err;

    if (!wslay_event_want_write(w->ctx) && !w->close_due)
        return 0;
    err = wslay_event_send(w->ctx);
    if (err == 0 && w->close_due && wslay_event_get_queued_msg_count(w->ctx) == 0) {
        w->close_due = 0;
        wslay_event_queue_close(w->ctx, w->close_code,
                                w->reason_len ? w->cbuf + w->reason_off : NULL, w->reason_len);
        err = wslay_event_send(w->ctx);
    }
    if (err == 0)
        return 0;
    if (w->send_err < 0)
        return w->send_err;
    return err == WSLAY_ERR_NOMEM ? UV_ENOMEM : UV_EPROTO;
}

void lg_wsc_close(struct lg_wsc *w, uint16_t code)
{
    if (!w)
        return;
    if (!wslay_event_get_close_sent(w->ctx) && !w->close_due)
        wslay_event_queue_close(w->ctx, code, NULL, 0);
    lg_wsc_flush(w);
}

int lg_wsc_is_done(const struct lg_wsc *w)
{
    return !wslay_event_want_read(w->ctx) && !wslay_event_want_write(w->ctx) && !w->close_due;
}

void lg_wsc_free(struct lg_wsc *w)
{
    if (!w)
        return;
    wslay_event_context_free(w->ctx);
    free(w);
}

/* ------------------------------------------------------------------ handshakes */

static int64_t time_left(struct coro_stream *st, uint64_t start, int64_t timeout_ms)
{
    uint64_t el = uv_now(coro_sched_loop(st->sched)) - start;

    return el >= (uint64_t)timeout_ms ? 0 : timeout_ms - (int64_t)el;
}

/* Reads into <hs> until its head is complete. Returns 1 with <*last> the chunk that
 * completed it (the caller owns it; its last hs->tail bytes follow the head), a negative
 * feed error (the head is bad), or a read error. */
static int read_head(struct coro_stream *st, struct cg_handshake *hs, int64_t timeout_ms,
                     struct coro_buf **last)
{
    uint64_t start = uv_now(coro_sched_loop(st->sched));
    struct coro_buf *b = NULL;
    ssize_t n;
    int rc;

    for (;;) {
        n = coro_read(st, &b, time_left(st, start, timeout_ms));
        if (n < 0)
            return (int)n;
        rc = cg_handshake_feed(hs, b->data + b->off, (size_t)n);
        if (rc == 0) {
            coro_buf_put(st->sched, b);
            continue;
        }
        if (rc < 0) {
            coro_buf_put(st->sched, b);
            return rc;
        }
        *last = b;
        return 1;
    }
}

static int has_host_header(const struct lg_run_cfg *cfg)
{
    unsigned i;

    for (i = 0; i < cfg->nheaders; i++)
        if (strncasecmp(cfg->headers[i], "host:", 5) == 0)
            return 1;
    return 0;
}

int lg_wsc_handshake(struct coro_stream *st, const struct lg_run_cfg *cfg, int64_t timeout_ms,
                     struct coro_buf **tail)
{
    struct cg_handshake *hs = NULL;
    struct coro_buf *req = NULL, *last = NULL;
    uint8_t raw[16];
    char key[CG_WS_KEY_LEN + 1];
    uint64_t rng = (uv_hrtime() ^ (uint64_t)(uintptr_t)st) | 1;
    unsigned i;
    int n, err;

    *tail = NULL;
    if (timeout_ms < 1)
        timeout_ms = 1;
    for (i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(next_rand(&rng) >> 56);
    cg_base64_encode(raw, sizeof(raw), key);
    req = coro_buf_get(st->sched, HEAD_MAX);
    if (!req)
        return UV_ENOMEM;
    n = snprintf(req->data, req->cap, "GET %s HTTP/1.1\r\n", cfg->path ? cfg->path : "/");
    if (!has_host_header(cfg))
        n += snprintf(req->data + n, req->cap - (size_t)n, "Host: %s\r\n", cfg->target_str);
    n += snprintf(req->data + n, req->cap - (size_t)n,
                  "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                  "Sec-WebSocket-Version: 13\r\n", key);
    for (i = 0; i < cfg->nheaders && n < (int)req->cap; i++)
        n += snprintf(req->data + n, req->cap - (size_t)n, "%s\r\n", cfg->headers[i]);
    if (n < (int)req->cap)
        n += snprintf(req->data + n, req->cap - (size_t)n, "\r\n");
    if (n >= (int)req->cap) {
        coro_buf_put(st->sched, req);
        return UV_E2BIG;
    }
    req->len = (uint32_t)n;
    err = coro_write(st, req, timeout_ms);      /* takes <req> */
    if (err < 0)
        return err;

    hs = malloc(sizeof(*hs));
    if (!hs)
        return UV_ENOMEM;
    cg_handshake_init(hs, CG_HS_RESPONSE, NULL);
    err = read_head(st, hs, timeout_ms, &last);
    if (err == 1)
        err = cg_handshake_check_response(hs, key, NULL, NULL) == 0 ? 0 : UV_EPROTO;
    else if (err != UV_ETIMEDOUT && err != UV_ECANCELED && err != UV_ENOMEM)
        err = UV_EPROTO;          /* a bad head, or the server closed on us */
    if (err == 0 && hs->tail > 0) {
        last->off = last->len - hs->tail;
        *tail = last;
        last = NULL;
    }
    coro_buf_put(st->sched, last);
    cg_handshake_deinit(hs);
    free(hs);
    return err;
}

int lg_wss_accept(struct coro_stream *st, int64_t timeout_ms, struct coro_buf **tail)
{
    struct cg_handshake *hs = malloc(sizeof(*hs));
    struct coro_buf *last = NULL, *resp = NULL;
    int err, n, status = 0;

    *tail = NULL;
    if (!hs)
        return UV_ENOMEM;
    cg_handshake_init(hs, CG_HS_REQUEST, NULL);
    err = read_head(st, hs, timeout_ms, &last);
    if (err == 1) {
        err = cg_handshake_check_request(hs, NULL);
        if (err < 0)
            status = hs->status ? hs->status : 400;
        else if (err == 1)
            status = 200;          /* no health path is configured: cannot happen */
    } else if (err < 0 && hs->status) {
        status = hs->status;       /* the head itself was bad or too large */
    }
    if (err < 0 && !status) {
        coro_buf_put(st->sched, last);
        cg_handshake_deinit(hs);
        free(hs);
        return err;
    }
    resp = coro_buf_get(st->sched, 0);
    if (!resp) {
        err = UV_ENOMEM;
        goto out;
    }
    if (status)
        n = cg_http_response(status, NULL, resp->data, resp->cap);
    else
        n = cg_handshake_accept_response(hs, NULL, NULL, NULL, resp->data, resp->cap);
    if (n < 0) {
        coro_buf_put(st->sched, resp);
        err = UV_E2BIG;
        goto out;
    }
    resp->len = (uint32_t)n;
    err = coro_write(st, resp, timeout_ms);
    if (err == 0 && status)
        err = 1;
    if (err == 0 && hs->tail > 0) {
        last->off = last->len - hs->tail;
        *tail = last;
        last = NULL;
    }
out:
    coro_buf_put(st->sched, last);
    cg_handshake_deinit(hs);
    free(hs);
    return err;
}
