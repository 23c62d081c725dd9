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
#include "log.h"
#include "metrics.h"
#include "relay.h"

#define FLUSH_TIMEOUT_MS 5000

static struct cg_ratelimit connect_log = CG_RATELIMIT_INIT(1000, 5);

int cg_conn_connect_upstream(struct cg_conn *c, struct cg_upstream *up)
{
    const struct cg_upstream_conf *uc = up->conf;
    struct cg_worker *w = c->w;
    uint64_t tried = 0;
    unsigned attempt;
    uint64_t t0;
    int err = UV_EHOSTUNREACH, more;

    for (attempt = 0; attempt <= uc->retries; attempt++) {
        struct cg_server *srv = cg_upstream_pick(up, w->id, tried);

        if (!srv)
            break;
        if (srv->index < 64)
            tried |= 1ull << srv->index;
        if (c->up_inited) {
            coro_stream_close(&c->up, NULL);
            c->up_inited = 0;
        }
        err = coro_stream_init(w->sched, &c->up);
        if (err < 0)
            return err;
        c->up_inited = 1;
        c->up.rreason = "read upstream";
        c->up.wreason = "write upstream";
        /* Counted before the connect so leastconn sees connections in progress too. */
        atomic_fetch_add(&srv->active, 1);
        t0 = uv_hrtime();
        err = coro_connect(&c->up, (const struct sockaddr *)&srv->conf->addr,
                           (int64_t)uc->connect_timeout_ms);
        if (err == 0) {
            cg_lat_hist_record(&w->stats.connect_lat, (uv_hrtime() - t0) / 1000);
            uv_tcp_nodelay(&c->up.tcp, 1);
            atomic_fetch_add(&srv->connects, 1);
            c->srv = srv;
            return 0;
        }
        atomic_fetch_sub(&srv->active, 1);
        if (err == UV_ECANCELED)
            return err;
        atomic_fetch_add(&srv->connect_fails, 1);
        if (err == UV_ETIMEDOUT)
            atomic_fetch_add(&srv->connect_timeouts, 1);
        CG_STAT_ADD(w->stats.connect_fails, 1);
        more = attempt < uc->retries && (unsigned)__builtin_popcountll(tried) < up->nservers;
        cg_log_ratelimited(&connect_log, CG_LOG_WARN, "upstream %s: connect() to %s: %s%s",
                           uc->name, srv->conf->name, uv_strerror(err),
                           more ? ", trying another server" : "");
    }
    return err;
}

/* One direction of the relay. */
struct dir {
    struct coro_stream *src;
    struct coro_stream *dst;
    int                 open;     /* src has not reached EOF */
    _Atomic uint64_t   *counter;  /* worker stat for these bytes */
    _Atomic uint64_t   *lcounter; /* listener stat for these bytes */
};

/* Moves what <d>'s source has to its destination. Returns 1 on progress, 0 when there is
 * nothing to do now, or a negative error that ends the session. */
static int pump(struct dir *d)
{
    struct coro_buf *b;
    ssize_t n;
    int err;

    if (!d->open || coro_stream_queued(d->dst) > d->dst->wq_high)
        return 0;
    n = coro_try_read(d->src, &b);
    if (n == UV_EAGAIN)
        return 0;
    if (n == UV_EOF) {
        d->open = 0;
        err = coro_shutdown(d->dst);     /* half-close travels on */
        return err < 0 ? err : 1;
    }
    if (n < 0)
        return (int)n;
    CG_STAT_ADD(*d->counter, (uint64_t)n);
    CG_STAT_ADD(*d->lcounter, (uint64_t)n);
    err = coro_write_nowait(d->dst, b);
    return err < 0 ? err : 1;
}

/* Relays until both directions are closed (0), the idle timeout (UV_ETIMEDOUT), a stop
 * (UV_ECANCELED) or an error on either side. */
static int relay(struct cg_conn *c)
{
    struct cg_worker *w = c->w;
    uint64_t idle = c->l->conf->idle_timeout_ms;
    struct dir dirs[2] = {
        { &c->client, &c->up, 1, &w->stats.bytes_in, &c->l->stats.bytes_in },
        { &c->up, &c->client, 1, &w->stats.bytes_out, &c->l->stats.bytes_out },
    };
    int err, a, b;

    coro_stream_watch(&c->client, c->co);
    coro_stream_watch(&c->up, c->co);
    for (;;) {
        a = pump(&dirs[0]);
        b = pump(&dirs[1]);
        if (a < 0)
            return a;
        if (b < 0)
            return b;
        if (!dirs[0].open && !dirs[1].open)
            return 0;
        if (a || b)
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
    int err;

    c->co = coro_self();
    err = cg_conn_connect_upstream(c, c->l->up);
    if (err < 0) {
        if (err != UV_ECANCELED) {
            atomic_fetch_add(&c->l->up->no_server, 1);
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
        coro_stream_close(&c->up, NULL);
    coro_stream_close(&c->client, NULL);
    coro_list_del(&c->node);
    atomic_fetch_sub(&w->d->conns, 1);
    CG_STAT_ADD(w->stats.active, (uint64_t)-1);
    CG_STAT_ADD(w->stats.closed, 1);
    CG_STAT_ADD(c->l->stats.active, (uint64_t)-1);
    free(c);
}
