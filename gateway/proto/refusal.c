/* gateway/proto/refusal.c — the coroutine that answers a refused WebSocket client: it reads
 * no more of the request than it must, answers, and lingers briefly so that the answer is
 * not reset away. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "coro/io.h"
#include "coro/list.h"
#include "common/handshake.h"
#include "core/worker.h"
#include "guard/admission.h"
#include "proto/refusal.h"

#define LINGER_MS     200       /* after a refusal's answer, for the client to close */

static const struct coro_stream_names refused_names = { "read refused client",
                                                        "write refused client" };

int cg_refusal_start(struct cg_wlistener *l, int fd, int reason, unsigned retry_s)
{
    struct cg_worker *w = l->w;
    struct cg_reject *r = calloc(1, sizeof(*r));

    if (!r)
        return -ENOMEM;
    if (coro_stream_init(w->sched, &r->c.client) < 0) {
        free(r);
        return -ENOMEM;
    }
    r->reason = reason;
    r->retry_s = retry_s;
    r->max_head = l->conf->max_header_size;
    r->c.client.names = &refused_names;
    r->c.w = w;
    r->c.l = l;
    if (coro_stream_open(&r->c.client, fd) < 0 ||
        coro_spawn(w->sched, cg_reject_session, r, "ws refusal", &r->c.co) < 0) {
        coro_stream_close(&r->c.client);    /* closes fd */
        free(r);
        return 0;
    }
    w->rejecting++;
    coro_list_add_tail(&w->refusing, &r->c.node);
    return 0;
}

/* Advances a match of "\r\n\r\n" (<m> bytes matched so far) over <n> bytes at <p>;
 * returns 4 once the whole of it went by. */
static unsigned scan_head_end(const char *p, size_t n, unsigned m)
{
    static const char end[] = "\r\n\r\n";
    size_t i;

    for (i = 0; i < n && m < 4; i++) {
        if (p[i] == end[m])
            m++;
        else
            m = p[i] == '\r' ? 1 : 0;
    }
    return m;
}

void cg_refusal_answer(struct cg_conn *c, int reason, unsigned retry_s, uint64_t max_head)
{
    struct cg_worker *w = c->w;
    uv_loop_t *loop = coro_sched_loop(w->sched);
    uint64_t timeout = atomic_load(&w->d->adm->reject_timeout_ms);
    uint64_t start = uv_now(loop), max = max_head, seen = 0, el, end;
    int status = reason == CG_REJ_RATE || reason == CG_REJ_IP_RATE ? 429 : 503;
    struct coro_buf *b;
    char extra[48], out[512];
    unsigned m = 0;
    ssize_t n = 0;
    int len;

    /* The request, and not a byte more than we must: up to its empty line. */
    while (m < 4 && seen <= max) {
        el = uv_now(loop) - start;
        if (el >= timeout) {
            n = UV_ETIMEDOUT;
            break;
        }
        n = coro_read(&c->client, &b, (int64_t)(timeout - el));
        if (n < 0)
            break;
        m = scan_head_end(b->data + b->off, (size_t)n, m);
        seen += (uint64_t)n;
        coro_buf_put(w->sched, b);
    }
    CG_STAT_ADD(w->stats.bytes_in, seen);
    if (n >= 0 || n == UV_ETIMEDOUT) {
        snprintf(extra, sizeof(extra), "Retry-After: %u\r\n", retry_s ? retry_s : 1);
        len = cg_http_response(status, extra, out, sizeof(out));
        if (len > 0 && coro_write_copy(&c->client, out, (size_t)len, (int64_t)timeout) == 0) {
            CG_STAT_ADD(w->stats.ws_hs_status[cg_http_status_index(status)], 1);
            CG_STAT_ADD(w->stats.bytes_out, (uint64_t)len);
            /* Closing with unread bytes would reset the answer away: let the client read
             * it and close first, briefly. */
            if (coro_shutdown(&c->client) == 0 && coro_flush(&c->client, LINGER_MS) == 0) {
                end = uv_now(loop) + LINGER_MS;
                while (uv_now(loop) < end &&
                       coro_read(&c->client, &b, (int64_t)(end - uv_now(loop))) > 0)
                    coro_buf_put(w->sched, b);
            }
        }
    } else if (n == UV_EOF) {
        CG_STAT_ADD(w->stats.ws_hs_aborted, 1);
    }
}

void cg_reject_session(void *arg)
{
    struct cg_reject *r = arg;
    struct cg_conn *c = &r->c;
    struct cg_worker *w = c->w;

    c->co = coro_self();
    cg_refusal_answer(c, r->reason, r->retry_s, r->max_head);
    coro_stream_close(&c->client);
    cg_conn_unlink(c);
    w->rejecting--;
    free(r);
}
