/* gateway/relay.c — the TCP session: upstream connect with retries, then a two-way relay.
 *
 * One coroutine drives both directions. It never blocks on a write: a chunk read from one
 * side is written (or queued) to the other at once, and a side is simply not read while
 * the other side's queue is above its high-water mark. Blocking writes in a single
 * coroutine would deadlock an echo-like peer: we would wait for the backend to read while
 * it waits for us to read. The coroutine parks only when neither direction can progress,
 * and the streams wake it on data, EOF, errors and drained queues.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "coro/io.h"
#include "coro/list.h"
#include "guard/admission.h"
#include "guard/breaker.h"
#include "observe/log.h"
#include "observe/metrics.h"
#include "core/relay.h"
#include "core/reload.h"

#define FLUSH_TIMEOUT_MS 5000

static struct cg_ratelimit connect_log = CG_RATELIMIT_INIT(1000, 5);
static const struct coro_stream_names upstream_names = { "read upstream", "write upstream" };

/* 1 when a connect to a server is only half the story: a WebSocket backend must also
 * complete its handshake, and ws.c reports that outcome to the server's breaker. */
static int defers_report(const struct cg_conn *c)
{
    return c->lc->mode == CG_MODE_WEBSOCKET &&
           c->lc->upstream_protocol == CG_UPROTO_WEBSOCKET;
}

int cg_local_error(int err)
{
    return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOBUFS || err == UV_ENOMEM ||
           err == UV_EADDRNOTAVAIL || err == UV_EADDRINUSE;
}

int cg_conn_connect_upstream(struct cg_conn *c, struct cg_upstream *up)
{
    const struct cg_upstream_conf *uc = up->conf;
    struct cg_worker *w = c->w;
    struct sockaddr_storage src;
    uint64_t tried = 0;
    unsigned attempt = 0, skipped = 0;
    uint64_t t0;
    int err = UV_EHOSTUNREACH, more, probe;

    while (attempt <= uc->retries) {
        struct cg_server *srv = cg_upstream_pick(up, w->id, tried);

        if (!srv)
            break;
        if (srv->index < 64)
            tried |= 1ull << srv->index;
        /* Its pending connects full, or its probe taken, since it was picked: not a try. */
        if (cg_server_connect_begin(srv, uv_hrtime() / 1000000, &probe) < 0) {
            if (++skipped > up->nservers)
                break;
            continue;
        }
        attempt++;
        if (c->up_inited) {
            coro_stream_close(&c->up);
            c->up_inited = 0;
        }
        err = coro_stream_init(w->sched, &c->up);
        if (err < 0) {
            cg_server_connect_done(srv);
            cg_server_report(srv, -1, 0, NULL);
            atomic_fetch_add(&srv->local_errors, 1);
            CG_STAT_ADD(w->stats.upstream_local_errors, 1);
            return err;
        }
        c->up_inited = 1;
        c->up.names = &upstream_names;
        /* Counted before the connect so leastconn sees connections in progress too. */
        atomic_fetch_add(&srv->active, 1);
        t0 = uv_hrtime();
        err = coro_connect_from(&c->up, (const struct sockaddr *)&srv->conf->addr,
                                cg_upstream_source(up, w->id, srv, &src),
                                (int64_t)uc->connect_timeout_ms);
        cg_server_connect_done(srv);
        if (err == 0) {
            cg_lat_hist_record(&w->stats.connect_lat, (uv_hrtime() - t0) / 1000);
            coro_stream_nodelay(&c->up, 1);
            atomic_fetch_add(&srv->connects, 1);
            if (!defers_report(c))
                cg_server_report(srv, 1, uv_hrtime() / 1000000, NULL);
            c->srv = srv;
            return 0;
        }
        atomic_fetch_sub(&srv->active, 1);
        if (err == UV_ECANCELED) {
            cg_server_report(srv, -1, 0, NULL);
            return err;
        }
        /* Our own shortage (descriptors, memory, ports) is not the server's failure, and
         * another server would meet the same shortage: counted apart, and given up. */
        if (cg_local_error(err)) {
            cg_server_report(srv, -1, 0, NULL);
            atomic_fetch_add(&srv->local_errors, 1);
            CG_STAT_ADD(w->stats.upstream_local_errors, 1);
            cg_log_ratelimited(&connect_log, CG_LOG_WARN, "upstream %s: connect() to %s: %s "
                               "(a shortage of ours, not counted against the server)",
                               uc->name, srv->conf->name, uv_strerror(err));
            return err;
        }
        cg_server_report(srv, 0, uv_hrtime() / 1000000, uv_strerror(err));
        atomic_fetch_add(&srv->connect_fails, 1);
        if (err == UV_ETIMEDOUT)
            atomic_fetch_add(&srv->connect_timeouts, 1);
        CG_STAT_ADD(w->stats.connect_fails, 1);
        more = attempt <= uc->retries && (unsigned)__builtin_popcountll(tried) < up->nservers;
        cg_log_ratelimited(&connect_log, CG_LOG_WARN, "upstream %s: connect() to %s: %s%s%s",
                           uc->name, srv->conf->name, uv_strerror(err),
                           probe ? " (probe of an ejected server)" : "",
                           more ? ", trying another server" : "");
    }
    return err;
}

/* The two directions of the relay, as bits of the set of those still open. Nothing about
 * a direction is kept on the coroutine's stack but this set: every parked connection's
 * stack is copied aside (docs/coro-stacks.md), so the rest is found from the conn. */
enum { TO_UP = 1, TO_CLIENT = 2 };

/* Moves what direction <dir>'s source has to its destination. Returns 1 on progress, 0
 * when there is nothing to do now, or a negative error that ends the session. Clears
 * <dir> in <*open> at the source's EOF. */
static int pump(struct cg_conn *c, int dir, int *open)
{
    struct coro_stream *src = dir == TO_UP ? &c->client : &c->up;
    struct coro_stream *dst = dir == TO_UP ? &c->up : &c->client;
    struct coro_buf *b;
    ssize_t n;
    int err;

    if (!(*open & dir) || coro_stream_queued(dst) > dst->wq_high)
        return 0;
    n = coro_try_read(src, &b);
    if (n == UV_EAGAIN)
        return 0;
    if (n == UV_EOF) {
        *open &= ~dir;
        err = coro_shutdown(dst);        /* half-close travels on */
        return err < 0 ? err : 1;
    }
    if (n < 0)
        return (int)n;
    /* c->l: its listener's counters, looked up each time (a reload moves it). */
    if (dir == TO_CLIENT) {
        CG_STAT_ADD(c->w->stats.bytes_out, (uint64_t)n);
        CG_STAT_ADD(c->l->stats.bytes_out, (uint64_t)n);
    } else {
        CG_STAT_ADD(c->w->stats.bytes_in, (uint64_t)n);
        CG_STAT_ADD(c->l->stats.bytes_in, (uint64_t)n);
    }
    err = coro_write_nowait(dst, b);
    return err < 0 ? err : 1;
}

/* Relays until both directions are closed (0), the idle timeout (UV_ETIMEDOUT), a stop
 * (UV_ECANCELED) or an error on either side. */
static int relay(struct cg_conn *c)
{
    uint64_t idle = c->lc->idle_timeout_ms;
    int open = TO_UP | TO_CLIENT, err, a, b;

    coro_stream_watch(&c->client, c->co);
    coro_stream_watch(&c->up, c->co);
    for (;;) {
        a = pump(c, TO_UP, &open);
        b = pump(c, TO_CLIENT, &open);
        if (a < 0)
            return a;
        if (b < 0)
            return b;
        if (!open)
            return 0;
        /* Again only while a source has more (a second chunk, an EOF): after one pass a
         * stream that had nothing would have nothing still. */
        if ((a || b) && (((open & TO_UP) && coro_stream_readable(&c->client)) ||
                         ((open & TO_CLIENT) && coro_stream_readable(&c->up))))
            continue;
        err = coro_park("relay", idle ? (int64_t)idle : CORO_FOREVER);
        if (err < 0)
            return err;
    }
}

void cg_tcp_session(void *arg)
{
    struct cg_conn *c = arg;
    struct cg_worker *w = c->w;
    struct cg_upstream *up = &c->gen->ups[c->lc->upstream];    /* its generation's */
    int err;

    c->co = coro_self();
    err = cg_conn_connect_upstream(c, up);
    if (err < 0) {
        if (err != UV_ECANCELED && !cg_local_error(err)) {
            atomic_fetch_add(&up->no_server, 1);
            CG_STAT_ADD(w->stats.no_server, 1);
        }
        goto out;
    }
    err = relay(c);
    if (err == 0) {
        /* Both sides sent EOF: let the last bytes and the shutdowns go out first. */
        coro_flush(&c->client, FLUSH_TIMEOUT_MS);
        coro_flush(&c->up, FLUSH_TIMEOUT_MS);
    } else if (err == UV_ETIMEDOUT) {
        CG_STAT_ADD(w->stats.idle_timeouts, 1);
    } else if (err != UV_ECANCELED) {
        CG_STAT_ADD(w->stats.resets, 1);
    }
    atomic_fetch_sub(&c->srv->active, 1);
out:
    cg_conn_end(c);
}

void cg_conn_end(struct cg_conn *c)
{
    struct cg_worker *w = c->w;

    if (c->up_inited)
        coro_stream_close(&c->up);
    coro_stream_close(&c->client);
    cg_worker_unlink(w, &c->node);
    cg_iptable_release(w->d->adm->ipt, c->ip_slot);
    atomic_fetch_sub(&w->d->conns, 1);
    CG_STAT_ADD(w->stats.active, (uint64_t)-1);
    CG_STAT_ADD(w->stats.closed, 1);
    CG_STAT_ADD(c->l->stats.active, (uint64_t)-1);
    cg_gen_put(c->srv_gen);
    cg_gen_put(c->gen);
    coro_slab_free(&w->conn_slab, c);
}
