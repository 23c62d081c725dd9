/* gateway/core/relay.c — the TCP session: a server connected (core/conn.h), then a two-way
 * relay.
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
#include "core/conn.h"
#include "core/relay.h"
#include "core/gen.h"
#include "core/upstream.h"
#include "base/counters.h"

#define FLUSH_TIMEOUT_MS 5000
/* Passes (a chunk each way at most) a relay makes while its sources keep having more,
 * before it lets the loop and the worker's other connections run: 16 x 16 KiB each way. */
#define RELAY_BURST      16

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
        /* Who closed first: the connection's termination cause (HAProxy's CD/SD). */
        cg_conn_closing(c, dir == TO_UP ? CG_CLOSE_CLIENT : CG_CLOSE_SERVER);
        /* half_close = off (nginx's default): the first EOF ends the session; what the
         * other side sends from now on is dropped, what was read still goes out. */
        if (!c->lc->half_close)
            *open = 0;
        if (!*open)
            return 1;   /* the last direction: the session's close sends this FIN, after
                         * its flush (one shutdown() fewer per connection) */
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

/* Relays until both directions are closed (0), the idle timeout (UV_ETIMEDOUT), the
 * connection's lifetime (1), a stop (UV_ECANCELED) or an error on either side. */
static int relay(struct cg_conn *c)
{
    uv_loop_t *loop = coro_sched_loop(c->w->sched);
    uint64_t idle = c->lc->idle_timeout_ms, end = cg_conn_deadline(c->lc, uv_now(loop)), now;
    int64_t wait;
    int open = TO_UP | TO_CLIENT, burst = 0, err, a, b;

    coro_stream_watch(&c->client, c->co);
    coro_stream_watch(&c->up, c->co);
    for (;;) {
        if (end && uv_now(loop) >= end)
            return 1;           /* what was read is queued to its peer: flushed after */
        a = pump(c, TO_UP, &open);
        b = pump(c, TO_CLIENT, &open);
        if (a < 0)
            return a;
        if (b < 0)
            return b;
        if (!open)
            return 0;
        /* Again only while a source has more (a second chunk, an EOF): after one pass a
         * stream that had nothing would have nothing still. A stream that always has
         * more (a bulk transfer faster than we relay) gets RELAY_BURST passes, then the
         * loop's turn: its readiness and the other connections of the worker would
         * otherwise wait until this one runs dry. */
        if ((a || b) && (((open & TO_UP) && coro_stream_readable(&c->client)) ||
                         ((open & TO_CLIENT) && coro_stream_readable(&c->up)))) {
            if (++burst < RELAY_BURST)
                continue;
            burst = 0;
            err = coro_yield();
            if (err < 0)
                return err;
            continue;
        }
        burst = 0;
        wait = idle ? (int64_t)idle : CORO_FOREVER;
        if (end) {
            now = uv_now(loop);
            if (now >= end)
                return 1;
            if (wait == CORO_FOREVER || end - now < (uint64_t)wait)
                wait = (int64_t)(end - now);
        }
        err = coro_park("relay", wait);
        if (err == UV_ETIMEDOUT && end && uv_now(loop) >= end)
            return 1;
        if (err < 0)
            return err;
    }
}

/* The server's connect; for balance = hash with the client's address as the key (all a
 * tcp listener may hash: config.c). Not inlined: the key must not stay in the session's
 * frame under the relay's park, which every idle connection's saved stack would carry
 * (docs/coro-stacks.md). */
static __attribute__((noinline)) int connect_upstream(struct cg_conn *c,
                                                      struct cg_upstream *up)
{
    uint64_t key;
    int keyed = up->conf->balance == CG_BALANCE_HASH && cg_conn_source_key(c, &key) == 0;

    return cg_conn_connect_upstream(c, up, keyed ? &key : NULL);
}

void cg_tcp_session(void *arg)
{
    struct cg_conn *c = arg;
    struct cg_worker *w = c->w;
    struct cg_upstream *up = &c->gen->ups[c->lc->upstream];    /* its generation's */
    int err;

    c->co = coro_self();
    err = connect_upstream(c, up);
    if (err < 0) {
        if (err != UV_ECANCELED && !cg_local_error(err)) {
            atomic_fetch_add(&up->no_server, 1);
            CG_STAT_ADD(w->stats.no_server, 1);
        }
        goto out;
    }
    err = relay(c);
    if (err == 1) {
        /* max_connection_lifetime: what was relayed reaches its peer, then both close. */
        cg_conn_closing(c, CG_CLOSE_LIFETIME);
        CG_STAT_ADD(w->stats.lifetime_closes, 1);
        coro_flush(&c->client, FLUSH_TIMEOUT_MS);
        coro_flush(&c->up, FLUSH_TIMEOUT_MS);
    } else if (err == 0) {
        /* Both sides sent EOF: let the last bytes and the shutdowns go out first. */
        cg_conn_closing(c, CG_CLOSE_DONE);
        coro_flush(&c->client, FLUSH_TIMEOUT_MS);
        coro_flush(&c->up, FLUSH_TIMEOUT_MS);
    } else if (err == UV_ETIMEDOUT) {
        cg_conn_closing(c, CG_CLOSE_IDLE);
        CG_STAT_ADD(w->stats.idle_timeouts, 1);
    } else if (err == UV_ECANCELED) {
        cg_conn_closing(c, CG_CLOSE_STOPPED);
    } else {
        cg_conn_closing(c, CG_CLOSE_ERROR);
        CG_STAT_ADD(w->stats.resets, 1);
    }
out:
    cg_conn_end(c);
}
