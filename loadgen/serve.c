/* loadgen/serve.c — `corogate-loadgen serve`: a multi-threaded echo backend.
 *
 * The main thread parses the command line, starts the workers, waits for SIGINT/SIGTERM on
 * its own uv loop and prints the totals. Each worker owns a uv loop, a coroutine scheduler
 * and a SO_REUSEPORT listening socket bound to the same address, so the kernel spreads the
 * connections and the workers share nothing but the --max-conns counter.
 *
 * The listening socket is watched with a uv_poll_t and accepted with accept4() rather than
 * through uv_listen(): libuv 1.44 cannot pause a listening stream, and on EMFILE it either
 * accepts and drops the pending connections without telling us (its reserved-fd trick) or,
 * once another thread took the reserved fd, calls the connection callback in a loop until
 * the listener is closed. Owning accept() lets us count every EMFILE/ENFILE, stop watching
 * the socket for EMFILE_PAUSE_MS while the kernel keeps the backlog, and resume.
 *
 * TLS (--tls): one server SSL_CTX for all workers (so a ticket issued by one worker resumes
 * on another); each connection's coroutine makes the handshake (cg_tls_accept) before the
 * mode's handler, which then reads and writes plaintext on the same stream.
 *
 * Stop: the main thread's signal callback sends each worker's uv_async; the worker closes
 * its listener, cancels every connection coroutine (their waits return UV_ECANCELED, they
 * close their streams and free themselves), and its loop runs out of handles. The worker
 * then frees its scheduler and closes its loop; the main thread joins it.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <openssl/ssl.h>

#include "common/tls.h"
#include "lg_msg.h"
#include "lg_tls.h"
#include "lg_ws.h"
#include "net.h"
#include "common/parse.h"
#include "serve.h"
#include "serve-log.h"
#include "serve-uring.h"

#define LISTEN_BACKLOG    4096
#define ACCEPT_BATCH      64        /* accepts per wakeup: the loop's other work gets a turn */
#define EMFILE_PAUSE_MS   100       /* no accept() for this long after EMFILE/ENFILE */
#define WARN_INTERVAL_MS  1000      /* at most one accept warning per worker per second */
#define WRITE_TIMEOUT_MS  60000     /* a peer that reads nothing for a minute is dropped */
#define FLUSH_TIMEOUT_MS  10000     /* echo still queued at EOF gets this long to leave */
#define HANDSHAKE_TIMEOUT_MS 10000  /* TLS handshake; ws: the upgrade request, the same again */
#define TLS_ALERT_WAIT_MS 1000      /* a failed TLS handshake's alert gets this long to leave */
#define PUSH_TICK_MS      1
#define PUSH_BATCH        64        /* pushes per connection per tick at most */
#define MAX_THREADS       1024

/* A --mode: how its connections are served. */
struct serve_mode {
    const char      *name;
    const char      *what;        /* for the start line: "tcp echo" */
    const char      *coro_name;   /* labels the connection coroutines in listings */
    lg_serve_handler handler;
};

static const struct serve_mode serve_modes[] = {
    { "tcp", "tcp echo", "echo tcp", lg_serve_echo_tcp },
    { "ws",  "websocket echo", "echo ws", lg_serve_echo_ws },
};

struct serve_stats {
    uint64_t conns;          /* connections accepted and served */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t errors;         /* connections ended by an error (not EOF, not the stop) */
    uint64_t rejected;       /* closed at once: --max-conns reached, or no memory */
    uint64_t emfile;         /* accept() said EMFILE/ENFILE: accepts paused */
    uint64_t accept_errors;  /* other accept() failures (ENOBUFS, ENOMEM...) */
    uint64_t dropped;        /* --fault: chunks (tcp) or messages (ws) not echoed */
    uint64_t flipped;        /* --fault: chunks or messages echoed with a bit flipped */
    uint64_t pushed;         /* --push: messages sent */
    uint64_t push_skipped;   /* --push: not sent, the connection's queue was full */
    uint64_t ws_refused;     /* ws: bad upgrade requests answered with an HTTP error */
    uint64_t tls_full;       /* --tls: handshakes done in full */
    uint64_t tls_resumed;    /* ... resumed from a session ticket */
    uint64_t tls_fail[CG_TLS_FAIL_COUNT];   /* ... failed, by reason (connection closed) */
};

/* What the command line asked for; read-only once the workers run, but for <live>. */
struct serve_cfg {
    struct sockaddr_storage  addr;
    const struct serve_mode *mode;
    unsigned                 threads;
    unsigned long            max_conns;   /* 0 = no limit */
    int                      quiet;
    uint64_t                 delay_ms;    /* --delay: each echo held back this long */
    double                   drop;        /* --fault drop=P */
    double                   flip;        /* --fault flip=P */
    uint64_t                 seed;        /* --fault seed=N */
    double                   push_rate;   /* --push: messages/s per connection; 0 = off */
    uint32_t                 push_size;   /* --push-size */
    atomic_ulong             live;        /* open connections, kept only with max_conns */
    struct lg_tls_opts       tls_opts;    /* --tls-cert, --tls-key, --tls-client-ca... */
    SSL_CTX                 *tls_ctx;     /* --tls: shared by the workers; NULL: plain */
    int                      io_uring;    /* --io io_uring: serve-uring.c does the I/O */
};

enum {
    W_LOOP  = 1 << 0,
    W_ASYNC = 1 << 1,
    W_TIMER = 1 << 2,
    W_POLL  = 1 << 3,
    W_PUSH  = 1 << 4,
};

struct lg_worker {
    struct serve_cfg   *cfg;
    unsigned            id;
    pthread_t           thread;
    uv_sem_t            ready;        /* posted once start_err and port are set */
    int                 start_err;
    const char         *start_op;     /* the call that failed at start */
    uint16_t            port;         /* bound port */
    unsigned            inited;       /* W_*: what is initialised and not yet closed */
    int                 stopping;
    int                 lfd;          /* listening socket; the poll handle watches it */
    uv_loop_t           loop;
    struct coro_sched  *sched;
    uv_async_t          stop;
    uv_timer_t          pause;        /* ends an EMFILE pause */
    uv_poll_t           listener;
    uv_timer_t          push;         /* --push */
    uint64_t            push_start;   /* ns */
    uint64_t            push_ticks;   /* messages per connection sent so far */
    uint64_t            rng;          /* --fault */
    uint8_t            *scratch;      /* --push: one message */
    uint64_t            last_warn_ms;
    struct lg_conn     *conns;        /* live connections */
    struct lg_uring    *uring;        /* --io io_uring: the worker's ring, instead of <listener> */
    struct lg_uring_stats ustats;     /* ... and what it did; read after the join */
    struct serve_stats  stats;        /* written by the worker; read after the join */
};


/* ---------------------------------------------------------------- connections */

static uint64_t next_rand(uint64_t *s)
{
    uint64_t x = *s;

    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

static double rand_unit(uint64_t *s)
{
    return (double)(next_rand(s) >> 11) / 9007199254740992.0;
}

enum { FAULT_NONE = 0, FAULT_DROP, FAULT_FLIP };

/* Decides the fate of <len> bytes at <p> under --fault; flips one bit in place for
 * FAULT_FLIP. */
static int fault_apply(struct lg_worker *w, uint8_t *p, size_t len)
{
    const struct serve_cfg *cfg = w->cfg;

    if (cfg->drop > 0 && rand_unit(&w->rng) < cfg->drop) {
        w->stats.dropped++;
        return FAULT_DROP;
    }
    if (cfg->flip > 0 && len > 0 && rand_unit(&w->rng) < cfg->flip) {
        p[next_rand(&w->rng) % len] ^= (uint8_t)(1u << (next_rand(&w->rng) % 8));
        w->stats.flipped++;
        return FAULT_FLIP;
    }
    return FAULT_NONE;
}

/* --delay: sleeps until <arrived> (loop time) + the delay. Returns 0 or UV_ECANCELED. */
static int delay_until(struct lg_conn *c, uint64_t arrived)
{
    uint64_t due = arrived + c->worker->cfg->delay_ms, now = uv_now(&c->worker->loop);

    return due > now ? coro_sleep(due - now) : 0;
}

int lg_serve_echo_tcp(struct lg_conn *c)
{
    const struct serve_cfg *cfg = c->worker->cfg;
    struct coro_buf *b = NULL;
    uint64_t arrived;
    ssize_t n;
    int err;

    c->ready = 1;
    for (;;) {
        /* No read timeout: capacity tests hold idle connections for as long as they like. */
        n = coro_read(&c->st, &b, CORO_FOREVER);
        if (n < 0)
            return n == UV_EOF ? 0 : (int)n;
        arrived = uv_now(&c->worker->loop);
        if ((cfg->drop > 0 || cfg->flip > 0) &&
            fault_apply(c->worker, (uint8_t *)b->data + b->off, (size_t)n) == FAULT_DROP) {
            coro_buf_put(c->st.sched, b);
            continue;
        }
        if (cfg->delay_ms) {
            err = delay_until(c, arrived);
            if (err < 0) {
                coro_buf_put(c->st.sched, b);
                return err;
            }
        }
        err = coro_write(&c->st, b, WRITE_TIMEOUT_MS);   /* takes <b>: the same bytes back */
        if (err < 0)
            return err;
    }
}

/* ---------------------------------------------------------------- websocket */

/* Gathers frame bytes from wslay into <c->out>; out_flush() writes them. */
static int ws_append(void *ud, const void *p, size_t len)
{
    struct lg_conn *c = ud;

    return coro_write_gather(&c->st, &c->out, p, len);
}

/* Hands wslay's queued frames over and writes them. Never waits: also for callbacks. */
static int ws_flush(struct lg_conn *c)
{
    struct coro_buf *b;
    int err = lg_wsc_flush(c->ws);

    b = c->out;
    c->out = NULL;
    if (b) {
        int werr = coro_write_nowait(&c->st, b);

        if (err == 0)
            err = werr;
    }
    if (err < 0 && !c->werr)
        c->werr = err;
    return err;
}

static void ws_on_msg(void *ud, int text, const uint8_t *p, size_t len)
{
    struct lg_conn *c = ud;
    struct lg_worker *w = c->worker;
    uint8_t *copy = NULL;
    int err, fate = FAULT_NONE;

    if (w->cfg->drop > 0 || w->cfg->flip > 0) {
        copy = malloc(len ? len : 1);
        if (!copy) {
            c->werr = UV_ENOMEM;
            return;
        }
        memcpy(copy, p, len);
        fate = fault_apply(w, copy, len);
        p = copy;
    }
    if (fate != FAULT_DROP) {
        err = lg_wsc_send_op(c->ws, text, p, len);   /* copies */
        if (err < 0 && !c->werr)
            c->werr = err;
    }
    free(copy);
}

int lg_serve_echo_ws(struct lg_conn *c)
{
    const struct serve_cfg *cfg = c->worker->cfg;
    struct coro_buf *b = NULL;
    uint64_t arrived;
    ssize_t n;
    int err, ferr;

    err = lg_wss_accept(&c->st, HANDSHAKE_TIMEOUT_MS, &b);
    if (err == 1) {
        c->worker->stats.ws_refused++;
        return 0;                 /* the error answer is queued: flush and close */
    }
    if (err < 0)
        return err;
    c->ws = lg_ws_new(0, ws_append, ws_on_msg, c);
    if (!c->ws) {
        coro_buf_put(c->st.sched, b);
        return UV_ENOMEM;
    }
    c->ready = 1;
    for (;;) {
        if (!b) {
            n = coro_read(&c->st, &b, CORO_FOREVER);
            if (n < 0)
                return n == UV_EOF ? 0 : (int)n;
        }
        arrived = uv_now(&c->worker->loop);
        err = lg_wsc_feed(c->ws, (const uint8_t *)b->data + b->off, b->len - b->off);
        coro_buf_put(c->st.sched, b);
        b = NULL;
        if (cfg->delay_ms && err == 0) {
            ferr = delay_until(c, arrived);
            if (ferr < 0)
                return ferr;
        }
        ferr = ws_flush(c);       /* echoes, pongs, and the close answer */
        if (err == UV_EOF)
            return 0;             /* close handshake done */
        if (err < 0)
            return err;           /* a protocol error: close 1002 was sent */
        if (ferr < 0)
            return ferr;
        if (c->werr < 0)
            return c->werr;
        if (coro_stream_queued(&c->st) > c->st.wq_high) {
            err = coro_flush(&c->st, WRITE_TIMEOUT_MS);   /* a slow reader: wait */
            if (err < 0)
                return err;
        }
    }
}

/* ---------------------------------------------------------------- push */

static void push_one(struct lg_worker *w, struct lg_conn *c, unsigned n)
{
    uint32_t size = w->cfg->push_size;
    struct coro_buf *b = NULL;
    struct timespec ts;
    uint64_t now;
    unsigned i;
    int err = 0;

    if (!c->ready || c->werr || coro_stream_is_closing(&c->st))
        return;
    if (coro_stream_queued(&c->st) > c->st.wq_high) {
        w->stats.push_skipped += n;
        return;
    }
    clock_gettime(CLOCK_REALTIME, &ts);
    now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    for (i = 0; i < n && err == 0; i++) {
        if (c->ws) {
            lg_msg_write(w->scratch, size, c->push_seq, now, LG_MSG_CONN_PUSH);
            err = lg_wsc_send(c->ws, w->scratch, size);
        } else {
            if (b && b->cap - b->len < size) {
                err = coro_write_nowait(&c->st, b);
                b = NULL;
                if (err < 0)
                    break;
            }
            if (!b) {
                b = coro_buf_get(w->sched, size > coro_buf_size(w->sched) ? size : 0);
                if (!b) {
                    err = UV_ENOMEM;
                    break;
                }
            }
            lg_msg_write((uint8_t *)b->data + b->len, size, c->push_seq, now,
                         LG_MSG_CONN_PUSH);
            b->len += size;
        }
        if (err == 0) {
            c->push_seq++;
            w->stats.pushed++;
        }
    }
    if (c->ws)
        err = ws_flush(c);
    else if (b)
        err = coro_write_nowait(&c->st, b);
    if (err < 0 && !c->werr) {
        c->werr = err;
        if (c->co)
            coro_wake(c->co, 0);   /* a reading handler sees the error from the socket */
    }
}

static void on_push(uv_timer_t *h)
{
    struct lg_worker *w = h->data;
    double el = (double)(uv_hrtime() - w->push_start) / 1e9;
    uint64_t due = (uint64_t)(el * w->cfg->push_rate);
    unsigned n;
    struct lg_conn *c;

    if (due <= w->push_ticks || w->stopping)
        return;
    n = due - w->push_ticks > PUSH_BATCH ? PUSH_BATCH : (unsigned)(due - w->push_ticks);
    w->push_ticks = due;          /* a stall is not made up beyond one batch */
    for (c = w->conns; c; c = c->next)
        push_one(w, c, n);
}

static void conn_unlink(struct lg_worker *w, struct lg_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

static void conn_put_slot(struct lg_worker *w)
{
    if (w->cfg->max_conns)
        atomic_fetch_sub_explicit(&w->cfg->live, 1, memory_order_relaxed);
}

/* --tls: the server side of the handshake on <c>, counted. Returns 0 or its error (the
 * connection is then closed: an alert may be queued). */
static int conn_tls(struct lg_conn *c)
{
    struct lg_worker *w = c->worker;
    struct cg_tls_info info;
    int err, fail;

    memset(&info, 0, sizeof(info));
    err = cg_tls_accept(&c->st, w->cfg->tls_ctx, HANDSHAKE_TIMEOUT_MS, &info);
    if (err == 0) {
        if (info.resumed)
            w->stats.tls_resumed++;
        else
            w->stats.tls_full++;
    } else if (err != UV_ECANCELED) {
        fail = info.fail;
        if (fail <= CG_TLS_OK || fail >= CG_TLS_FAIL_COUNT)
            fail = err == UV_ETIMEDOUT ? CG_TLS_FAIL_TIMEOUT : CG_TLS_FAIL_LOCAL;
        w->stats.tls_fail[fail]++;
    }
    return err;
}

/* The coroutine of one connection; owns <arg> and frees it. */
static void conn_main(void *arg)
{
    struct lg_conn *c = arg;
    struct lg_worker *w = c->worker;
    int err = UV_ECANCELED, tls_failed = 0;

    c->co = coro_self();
    if (!w->stopping) {          /* spawned just before the stop: never started */
        err = w->cfg->tls_ctx ? conn_tls(c) : 0;
        tls_failed = err < 0;
        if (tls_failed && err != UV_ECANCELED)
            coro_flush(&c->st, TLS_ALERT_WAIT_MS);   /* the alert, if any: the peer's reason */
        if (err == 0)
            err = w->cfg->mode->handler(c);
    }
    if (err == 0) {
        /* Clean EOF: what is still queued must reach the peer before the close cancels
         * it. The close then sends our FIN (the shutdown request may not have run yet). */
        err = coro_flush(&c->st, FLUSH_TIMEOUT_MS);
        if (err == 0)
            err = coro_shutdown(&c->st);
    }
    if (err < 0 && err != UV_ECANCELED && !tls_failed)
        w->stats.errors++;       /* a failed handshake is counted by its reason */
    coro_stream_close(&c->st);
    coro_buf_put(w->sched, c->out);
    c->out = NULL;
    lg_wsc_free(c->ws);
    c->ws = NULL;
    w->stats.bytes_in += c->st.bytes_in;
    w->stats.bytes_out += c->st.bytes_out;
    conn_unlink(w, c);
    conn_put_slot(w);
    free(c);
}

/* Takes the accepted socket <fd>: serves it in a new coroutine, or closes it. */
static void conn_start(struct lg_worker *w, int fd)
{
    struct serve_cfg *cfg = w->cfg;
    struct lg_conn *c = NULL;
    int err;

    if (cfg->max_conns &&
        atomic_fetch_add_explicit(&cfg->live, 1, memory_order_relaxed) >= cfg->max_conns) {
        atomic_fetch_sub_explicit(&cfg->live, 1, memory_order_relaxed);
        w->stats.rejected++;
        close(fd);
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c)
        goto out_fd;
    c->worker = w;
    err = coro_stream_init(w->sched, &c->st);
    if (err < 0)
        goto out_free;
    err = coro_stream_open(&c->st, fd);
    fd = -1;                                  /* the stream owns it now, even on failure */
    if (err < 0)
        goto out_stream;
    coro_stream_nodelay(&c->st, 1);           /* echo each chunk now, not after an ACK */
    err = coro_spawn(w->sched, conn_main, c, cfg->mode->coro_name, NULL);
    if (err < 0)
        goto out_stream;
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->stats.conns++;
    return;

out_stream:
    coro_stream_close(&c->st);          /* closes fd */
out_free:
    free(c);
out_fd:
    if (fd >= 0)
        close(fd);
    w->stats.rejected++;
    conn_put_slot(w);
}

/* ---------------------------------------------------------------- accepting */

static void on_acceptable(uv_poll_t *h, int status, int events);

static void on_pause_end(uv_timer_t *t)
{
    struct lg_worker *w = t->data;

    if (!w->stopping && (w->inited & W_POLL))
        uv_poll_start(&w->listener, UV_READABLE, on_acceptable);
}

/* Stops accepting for EMFILE_PAUSE_MS after accept() failed with <err> (an errno). */
static void accept_pause(struct lg_worker *w, int err)
{
    uint64_t now = uv_now(&w->loop);

    uv_poll_stop(&w->listener);
    uv_timer_start(&w->pause, on_pause_end, EMFILE_PAUSE_MS, 0);
    if (w->cfg->quiet || (w->last_warn_ms && now - w->last_warn_ms < WARN_INTERVAL_MS))
        return;
    w->last_warn_ms = now;
    lg_serve_say("worker %u: accept(): %s; not accepting for %d ms (%llu EMFILE/ENFILE, "
        "%llu other errors so far)", w->id, strerror(err), EMFILE_PAUSE_MS,
        (unsigned long long)w->stats.emfile, (unsigned long long)w->stats.accept_errors);
}

static void on_acceptable(uv_poll_t *h, int status, int events)
{
    struct lg_worker *w = h->data;
    int i, fd;

    if (status < 0) {
        w->stats.accept_errors++;
        accept_pause(w, -status);
        return;
    }
    for (i = 0; i < ACCEPT_BATCH && !w->stopping; i++) {
        fd = accept4(w->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            conn_start(w, fd);
            continue;
        }
        switch (errno) {
        case EAGAIN:
            return;
        case EINTR:
        case ECONNABORTED:
        /* Linux reports the new socket's pending network errors through accept(): that
         * connection is gone, the next one may be fine. */
        case EPROTO: case ENOPROTOOPT: case EHOSTDOWN: case ENONET: case EHOSTUNREACH:
        case EOPNOTSUPP: case ENETDOWN: case ENETUNREACH: case ETIMEDOUT:
            continue;
        case EMFILE:
        case ENFILE:
            w->stats.emfile++;
            accept_pause(w, errno);
            return;
        default:
            w->stats.accept_errors++;
            accept_pause(w, errno);
            return;
        }
    }
}

/* ---------------------------------------------------------------- workers */

static void on_listener_closed(uv_handle_t *h)
{
    struct lg_worker *w = h->data;

    close(w->lfd);   /* uv_poll_t watches the fd without owning it */
    w->lfd = -1;
}

/* Closes the worker's own handles (not the connections). Idempotent. */
static void worker_close_handles(struct lg_worker *w)
{
    if (w->inited & W_POLL) {
        w->inited &= ~W_POLL;
        uv_close((uv_handle_t *)&w->listener, on_listener_closed);
    }
    if (w->inited & W_TIMER) {
        w->inited &= ~W_TIMER;
        uv_close((uv_handle_t *)&w->pause, NULL);
    }
    if (w->inited & W_ASYNC) {
        w->inited &= ~W_ASYNC;
        uv_close((uv_handle_t *)&w->stop, NULL);
    }
    if (w->inited & W_PUSH) {
        w->inited &= ~W_PUSH;
        uv_close((uv_handle_t *)&w->push, NULL);
    }
}

static void on_stop(uv_async_t *a)
{
    struct lg_worker *w = a->data;
    struct lg_conn *c;

    w->stopping = 1;
    worker_close_handles(w);
    lg_uring_stop(w->uring);   /* NULL-safe; its handles stop once the kernel gave all back */
    /* Coroutines not started yet have no coro: they see <stopping> and end at once. */
    for (c = w->conns; c; c = c->next)
        if (c->co)
            coro_cancel(c->co);
}

/* Sets up the loop, scheduler and listener. Returns 0, or a negative errno with
 * <w->start_op> naming the failed call; worker_finish() undoes what was done. */
static int worker_start(struct lg_worker *w)
{
    struct sockaddr_storage bound;
    socklen_t len = sizeof(bound);
    int err;

    w->start_op = "uv_loop_init()";
    err = uv_loop_init(&w->loop);
    if (err < 0)
        return err;
    w->inited |= W_LOOP;
    w->start_op = "coro_sched_new()";
    w->sched = coro_sched_new(&w->loop, NULL);
    if (!w->sched)
        return -errno;
    w->lfd = lg_listen_reuseport((const struct sockaddr *)&w->cfg->addr, LISTEN_BACKLOG,
                                 &w->start_op);
    if (w->lfd < 0)
        return w->lfd;
    w->start_op = "getsockname()";
    if (getsockname(w->lfd, (struct sockaddr *)&bound, &len) < 0)
        return -errno;
    w->port = lg_addr_port((const struct sockaddr *)&bound);
    w->start_op = "uv_async_init()";
    err = uv_async_init(&w->loop, &w->stop, on_stop);
    if (err < 0)
        return err;
    w->stop.data = w;
    w->inited |= W_ASYNC;
    uv_timer_init(&w->loop, &w->pause);
    w->pause.data = w;
    w->inited |= W_TIMER;
    w->rng = (w->cfg->seed + 0x9e3779b97f4a7c15ull * (w->id + 1)) | 1;
    if (w->cfg->push_rate > 0) {
        w->start_op = "malloc()";
        w->scratch = malloc(w->cfg->push_size);
        if (!w->scratch)
            return -ENOMEM;
        uv_timer_init(&w->loop, &w->push);
        w->push.data = w;
        w->inited |= W_PUSH;
        w->push_start = uv_hrtime();
        uv_timer_start(&w->push, on_push, PUSH_TICK_MS, PUSH_TICK_MS);
    }
    if (w->cfg->io_uring)
        return lg_uring_start(&w->loop, w->sched, w->lfd, &w->ustats, &w->uring,
                              &w->start_op);
    w->start_op = "uv_poll_init()";
    err = uv_poll_init(&w->loop, &w->listener, w->lfd);
    if (err < 0)
        return err;
    w->listener.data = w;
    w->inited |= W_POLL;
    w->start_op = "uv_poll_start()";
    return uv_poll_start(&w->listener, UV_READABLE, on_acceptable);
}

static void worker_finish(struct lg_worker *w)
{
    int n, err;

    worker_close_handles(w);
    lg_uring_close(w->uring);   /* its buffers go back to the pool before the pool goes */
    w->uring = NULL;
    if (w->sched) {
        n = coro_sched_free(w->sched);   /* closes its handles; run the loop once more */
        w->sched = NULL;
        if (n > 0)
            lg_serve_say("worker %u: %d coroutines still alive at exit", w->id, n);
    }
    if (w->inited & W_LOOP) {
        w->inited &= ~W_LOOP;
        uv_run(&w->loop, UV_RUN_DEFAULT);
        err = uv_loop_close(&w->loop);
        if (err < 0)
            lg_serve_say("worker %u: uv_loop_close(): %s", w->id, uv_strerror(err));
    }
    if (w->lfd >= 0) {
        close(w->lfd);
        w->lfd = -1;
    }
    free(w->scratch);
    w->scratch = NULL;
}

static void *worker_main(void *arg)
{
    struct lg_worker *w = arg;
    int err;

    err = worker_start(w);
    w->start_err = err;
    uv_sem_post(&w->ready);   /* from here the main thread may send the stop */
    if (err == 0)
        uv_run(&w->loop, UV_RUN_DEFAULT);   /* until on_stop and the last connection */
    worker_finish(w);
    return NULL;
}

/* ---------------------------------------------------------------- main thread */

struct serve_run {
    struct lg_worker *workers;
    unsigned          nstarted;
    uv_signal_t       sigint;
    uv_signal_t       sigterm;
    int               quiet;
};

static void stop_workers(struct serve_run *r)
{
    unsigned i;

    for (i = 0; i < r->nstarted; i++)
        if (r->workers[i].start_err == 0)
            uv_async_send(&r->workers[i].stop);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct serve_run *r = h->data;

    if (!r->quiet)
        lg_serve_say("%s: stopping", signum == SIGINT ? "SIGINT" : "SIGTERM");
    stop_workers(r);
    /* The default action comes back: a second signal ends the process at once. */
    if (!uv_is_closing((uv_handle_t *)&r->sigint))
        uv_close((uv_handle_t *)&r->sigint, NULL);
    if (!uv_is_closing((uv_handle_t *)&r->sigterm))
        uv_close((uv_handle_t *)&r->sigterm, NULL);
}

static int serve_run(struct serve_cfg *cfg)
{
    struct serve_run r = { 0 };
    struct serve_stats tot = { 0 };
    struct sockaddr_storage shown;
    char addr[LG_ADDR_STRLEN];
    uint64_t unobufs = 0, upaused = 0, usubmits = 0, uwakeups = 0;
    uv_loop_t loop;
    unsigned i, j;
    int err, failed = 0;

    r.quiet = cfg->quiet;
    r.workers = calloc(cfg->threads, sizeof(*r.workers));
    if (!r.workers) {
        lg_serve_say("out of memory");
        return 1;
    }
    err = uv_loop_init(&loop);
    if (err < 0) {
        lg_serve_say("uv_loop_init(): %s", uv_strerror(err));
        free(r.workers);
        return 1;
    }
    /* Watch the signals before any worker runs; they are served once the loop runs. */
    uv_signal_init(&loop, &r.sigint);
    uv_signal_init(&loop, &r.sigterm);
    r.sigint.data = r.sigterm.data = &r;
    uv_signal_start(&r.sigint, on_signal, SIGINT);
    uv_signal_start(&r.sigterm, on_signal, SIGTERM);

    lg_addr_format((const struct sockaddr *)&cfg->addr, addr, sizeof(addr));
    for (i = 0; i < cfg->threads; i++) {
        struct lg_worker *w = &r.workers[i];

        w->cfg = cfg;
        w->id = i;
        w->lfd = -1;
        uv_sem_init(&w->ready, 0);
        err = pthread_create(&w->thread, NULL, worker_main, w);
        if (err) {
            lg_serve_say("pthread_create(): %s", strerror(err));
            uv_sem_destroy(&w->ready);
            failed = 1;
            break;
        }
        r.nstarted++;
    }
    for (i = 0; i < r.nstarted; i++) {
        struct lg_worker *w = &r.workers[i];

        uv_sem_wait(&w->ready);
        if (w->start_err < 0) {
            if (!failed)   /* the first one says it; the others fail the same way */
                lg_serve_say("worker %u: %s on %s: %s%s", i, w->start_op, addr,
                    strerror(-w->start_err),
                    cfg->io_uring && strncmp(w->start_op, "io_uring", 8) == 0 ?
                    " (no io_uring here: sysctl kernel.io_uring_disabled, a seccomp "
                    "sandbox, or a kernel without multishot receive and buffer rings)" : "");
            failed = 1;
        }
    }
    if (failed) {
        stop_workers(&r);
        uv_close((uv_handle_t *)&r.sigint, NULL);
        uv_close((uv_handle_t *)&r.sigterm, NULL);
    } else {
        shown = cfg->addr;
        lg_addr_set_port((struct sockaddr *)&shown, r.workers[0].port);
        lg_addr_format((const struct sockaddr *)&shown, addr, sizeof(addr));
        lg_serve_say("%s on %s, %u thread%s%s%s", cfg->mode->what, addr, cfg->threads,
            cfg->threads == 1 ? "" : "s", cfg->tls_ctx ? ", tls" : "",
            cfg->io_uring ? ", io_uring" : "");
    }
    uv_run(&loop, UV_RUN_DEFAULT);   /* until a signal closed both watchers */

    for (i = 0; i < r.nstarted; i++) {
        struct lg_worker *w = &r.workers[i];

        pthread_join(w->thread, NULL);
        uv_sem_destroy(&w->ready);
        tot.conns += w->stats.conns;
        tot.bytes_in += w->stats.bytes_in;
        tot.bytes_out += w->stats.bytes_out;
        tot.errors += w->stats.errors;
        tot.rejected += w->stats.rejected;
        tot.emfile += w->stats.emfile;
        tot.accept_errors += w->stats.accept_errors;
        tot.dropped += w->stats.dropped;
        tot.flipped += w->stats.flipped;
        tot.pushed += w->stats.pushed;
        tot.push_skipped += w->stats.push_skipped;
        tot.ws_refused += w->stats.ws_refused;
        tot.tls_full += w->stats.tls_full;
        tot.tls_resumed += w->stats.tls_resumed;
        for (j = 0; j < CG_TLS_FAIL_COUNT; j++)
            tot.tls_fail[j] += w->stats.tls_fail[j];
        tot.conns += w->ustats.conns;
        tot.bytes_in += w->ustats.bytes_in;
        tot.bytes_out += w->ustats.bytes_out;
        tot.errors += w->ustats.errors;
        tot.emfile += w->ustats.emfile;
        tot.accept_errors += w->ustats.accept_errors;
        unobufs += w->ustats.nobufs;
        upaused += w->ustats.paused;
        usubmits += w->ustats.submits;
        uwakeups += w->ustats.wakeups;
    }
    err = uv_loop_close(&loop);
    if (err < 0)
        lg_serve_say("uv_loop_close(): %s", uv_strerror(err));
    free(r.workers);
    if (failed)
        return 1;
    if (!cfg->quiet) {
        char extra[512] = "";
        size_t off = 0;

        if (cfg->drop > 0 || cfg->flip > 0)
            off += (size_t)snprintf(extra + off, sizeof(extra) - off,
                                    "; faults: %llu dropped, %llu flipped",
                                    (unsigned long long)tot.dropped,
                                    (unsigned long long)tot.flipped);
        if (cfg->push_rate > 0 && off < sizeof(extra))
            off += (size_t)snprintf(extra + off, sizeof(extra) - off,
                                    "; %llu pushed, %llu push skipped (queue full)",
                                    (unsigned long long)tot.pushed,
                                    (unsigned long long)tot.push_skipped);
        if (cfg->mode->handler == lg_serve_echo_ws && off < sizeof(extra))
            off += (size_t)snprintf(extra + off, sizeof(extra) - off, "; %llu upgrades refused",
                                    (unsigned long long)tot.ws_refused);
        if (cfg->io_uring && off < sizeof(extra))
            off += (size_t)snprintf(extra + off, sizeof(extra) - off,
                                    "; io_uring: %llu wakeups, %llu submits, %llu receives "
                                    "out of buffers, %llu paused",
                                    (unsigned long long)uwakeups, (unsigned long long)usubmits,
                                    (unsigned long long)unobufs, (unsigned long long)upaused);
        if (cfg->tls_ctx && off < sizeof(extra)) {
            uint64_t nfail = 0;

            off += (size_t)snprintf(extra + off, sizeof(extra) - off,
                                    "; tls: %llu handshakes (%llu full, %llu resumed), failed:",
                                    (unsigned long long)(tot.tls_full + tot.tls_resumed),
                                    (unsigned long long)tot.tls_full,
                                    (unsigned long long)tot.tls_resumed);
            for (j = 1; j < CG_TLS_FAIL_COUNT && off < sizeof(extra); j++) {
                nfail += tot.tls_fail[j];
                if (tot.tls_fail[j])
                    off += (size_t)snprintf(extra + off, sizeof(extra) - off, " %s %llu",
                                            cg_tls_fail_name((enum cg_tls_fail)j),
                                            (unsigned long long)tot.tls_fail[j]);
            }
            if (!nfail && off < sizeof(extra))
                snprintf(extra + off, sizeof(extra) - off, " none");
        }
        lg_serve_say("stopped: %llu connections, %llu bytes in, %llu bytes out, %llu ended by an "
            "error, %llu rejected, %llu EMFILE/ENFILE pauses, %llu other accept errors%s",
            (unsigned long long)tot.conns, (unsigned long long)tot.bytes_in,
            (unsigned long long)tot.bytes_out, (unsigned long long)tot.errors,
            (unsigned long long)tot.rejected, (unsigned long long)tot.emfile,
            (unsigned long long)tot.accept_errors, extra);
    }
    return 0;
}

/* ---------------------------------------------------------------- command line */

static unsigned default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    if (n < 1)
        return 1;
    return n > MAX_THREADS ? MAX_THREADS : (unsigned)n;
}

void lg_serve_usage(FILE *f)
{
    fprintf(f,
        "usage: corogate-loadgen serve [--mode tcp|ws] --listen ADDR:PORT [options]\n"
        "\n"
        "Echo backend: every byte (tcp) or message (ws) received on a connection is sent\n"
        "back on it.\n"
        "\n"
        "  --mode MODE         tcp: echo the bytes as they come (default)\n"
        "                      ws: WebSocket upgrade (any path), then echo each message\n"
        "  --listen ADDR:PORT  address to serve: 127.0.0.1:9000, [::1]:9000; port 0 takes\n"
        "                      a free port (only with --threads 1), shown in the start line\n"
        "  --threads N         worker threads, each with its own SO_REUSEPORT listener\n"
        "                      (1..%d; default: online CPUs, here %u)\n"
        "  --max-conns N       close new connections at once while N are open (0: no limit)\n"
        "  --delay MS          hold every echo back MS milliseconds (a slow backend)\n"
        "  --fault SPEC        test mode: drop=P,flip=P[,seed=N]: each chunk (tcp) or\n"
        "                      message (ws) is dropped with probability P, or echoed with\n"
        "                      one bit flipped\n"
        "  --push R            send every connection R messages/s stamped with\n"
        "                      CLOCK_REALTIME (for `run --push-recv`)\n"
        "  --push-size S       bytes per pushed message, %u..%u (64)\n"
        "  --io epoll|io_uring the I/O path (tcp mode, no other option): epoll is libuv's\n"
        "                      readiness loop with read()/write() (default); io_uring is\n"
        "                      an experiment: multishot accept and receive into provided\n"
        "                      buffers, batched sends and closes (docs/bench.md)\n"
        "  --quiet             print only the start line and errors\n"
        "  --tls               TLS: a handshake on every connection before the echo\n"
        "                      (ws: wss://), with --tls-cert FILE --tls-key FILE (PEM)\n"
        "  --tls-client-ca F   require a client certificate signed by a CA of file F\n"
        "  --tls-version V     1.2 or 1.3 only (default: both)\n"
        "  --tls-ciphers L     TLS 1.2 cipher list; --tls-ciphersuites L: TLS 1.3's\n"
        "  -h, --help          this help\n"
        "\n"
        "Prints `serve: tcp echo on ADDR:PORT, N threads` once listening. SIGINT or SIGTERM\n"
        "stops it and prints the totals. Exit status: 0 stopped by a signal, 1 could not\n"
        "start, 2 usage error.\n", MAX_THREADS, default_threads(), LG_MSG_HDR, LG_MSG_MAX);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    lg_serve_say("%s", msg);
    fputc('\n', stderr);
    lg_serve_usage(stderr);
    return 2;
}

enum {
    OPT_MODE = 256, OPT_LISTEN, OPT_THREADS, OPT_MAX_CONNS, OPT_QUIET, OPT_DELAY, OPT_FAULT,
    OPT_PUSH, OPT_PUSH_SIZE, OPT_TLS, OPT_TLS_CERT, OPT_TLS_KEY, OPT_TLS_CLIENT_CA,
    OPT_TLS_VERSION, OPT_TLS_CIPHERS, OPT_TLS_CIPHERSUITES, OPT_IO,
};

/* Parses "drop=P,flip=P,seed=N" (any subset, any order) into <cfg>. Returns 0 or -EINVAL. */
static int parse_fault(const char *spec, struct serve_cfg *cfg)
{
    char buf[256], *tok, *save = NULL, *end;
    double v;

    if (strlen(spec) >= sizeof(buf))
        return -EINVAL;
    snprintf(buf, sizeof(buf), "%s", spec);
    for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (strncmp(tok, "seed=", 5) == 0) {
            uint64_t v64;

            if (cg_parse_u64(tok + 5, 0, UINT64_MAX, &v64) < 0)
                return -EINVAL;
            cfg->seed = v64;
            continue;
        }
        if (strncmp(tok, "drop=", 5) != 0 && strncmp(tok, "flip=", 5) != 0)
            return -EINVAL;
        errno = 0;
        v = strtod(tok + 5, &end);
        if (errno || end == tok + 5 || *end || !(v >= 0) || !(v <= 1))
            return -EINVAL;
        if (tok[0] == 'd')
            cfg->drop = v;
        else
            cfg->flip = v;
    }
    return 0;
}

int lg_serve_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "mode",      required_argument, NULL, OPT_MODE },
        { "listen",    required_argument, NULL, OPT_LISTEN },
        { "threads",   required_argument, NULL, OPT_THREADS },
        { "max-conns", required_argument, NULL, OPT_MAX_CONNS },
        { "quiet",     no_argument,       NULL, OPT_QUIET },
        { "delay",     required_argument, NULL, OPT_DELAY },
        { "fault",     required_argument, NULL, OPT_FAULT },
        { "push",      required_argument, NULL, OPT_PUSH },
        { "push-size", required_argument, NULL, OPT_PUSH_SIZE },
        { "tls",       no_argument,       NULL, OPT_TLS },
        { "tls-cert",  required_argument, NULL, OPT_TLS_CERT },
        { "tls-key",   required_argument, NULL, OPT_TLS_KEY },
        { "tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA },
        { "tls-version", required_argument, NULL, OPT_TLS_VERSION },
        { "tls-ciphers", required_argument, NULL, OPT_TLS_CIPHERS },
        { "tls-ciphersuites", required_argument, NULL, OPT_TLS_CIPHERSUITES },
        { "io",        required_argument, NULL, OPT_IO },
        { "help",      no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct serve_cfg cfg;
    const char *mode = "tcp", *listen_at = NULL, *tls_opt = NULL;
    char *end, tls_err[256];
    uint64_t v;
    size_t i;
    int opt, tls = 0, rc;

    memset(&cfg, 0, sizeof(cfg));
    cfg.threads = default_threads();
    cfg.push_size = 64;
    opterr = 0;        /* our messages, then the usage */
    optind = 0;        /* glibc: full re-initialisation, whoever parsed before */
    while ((opt = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_MODE:
            mode = optarg;
            break;
        case OPT_LISTEN:
            listen_at = optarg;
            break;
        case OPT_THREADS:
            if (cg_parse_u64(optarg, 1, MAX_THREADS, &v) < 0)
                return usage_error("bad --threads '%s': expected 1..%d", optarg, MAX_THREADS);
            cfg.threads = (unsigned)v;
            break;
        case OPT_MAX_CONNS:
            if (cg_parse_u64(optarg, 0, ULONG_MAX / 2, &v) < 0)
                return usage_error("bad --max-conns '%s': expected a count, 0 for no limit",
                                   optarg);
            cfg.max_conns = v;
            break;
        case OPT_QUIET:
            cfg.quiet = 1;
            break;
        case OPT_DELAY:
            if (cg_parse_u64(optarg, 0, 3600000, &v) < 0)
                return usage_error("bad --delay '%s': expected milliseconds, 0..3600000",
                                   optarg);
            cfg.delay_ms = v;
            break;
        case OPT_FAULT:
            if (parse_fault(optarg, &cfg) < 0)
                return usage_error("bad --fault '%s': expected drop=P,flip=P[,seed=N] with "
                                   "P in 0..1", optarg);
            break;
        case OPT_PUSH:
            errno = 0;
            cfg.push_rate = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(cfg.push_rate > 0) ||
                cfg.push_rate > 1e6)
                return usage_error("bad --push '%s': expected messages per second per "
                                   "connection, up to 1000000", optarg);
            break;
        case OPT_PUSH_SIZE:
            if (cg_parse_u64(optarg, LG_MSG_HDR, LG_MSG_MAX, &v) < 0)
                return usage_error("bad --push-size '%s': expected %u..%u bytes", optarg,
                                   LG_MSG_HDR, LG_MSG_MAX);
            cfg.push_size = (uint32_t)v;
            break;
        case OPT_TLS:
            tls = 1;
            break;
        case OPT_TLS_CERT:
            cfg.tls_opts.cert = optarg;
            tls_opt = "--tls-cert";
            break;
        case OPT_TLS_KEY:
            cfg.tls_opts.key = optarg;
            tls_opt = "--tls-key";
            break;
        case OPT_TLS_CLIENT_CA:
            cfg.tls_opts.ca = optarg;
            tls_opt = "--tls-client-ca";
            break;
        case OPT_TLS_VERSION:
            cfg.tls_opts.version = lg_tls_parse_version(optarg);
            if (cfg.tls_opts.version < 0)
                return usage_error("bad --tls-version '%s': expected 1.2 or 1.3", optarg);
            tls_opt = "--tls-version";
            break;
        case OPT_TLS_CIPHERS:
            cfg.tls_opts.ciphers = optarg;
            tls_opt = "--tls-ciphers";
            break;
        case OPT_TLS_CIPHERSUITES:
            cfg.tls_opts.ciphersuites = optarg;
            tls_opt = "--tls-ciphersuites";
            break;
        case OPT_IO:
            if (strcmp(optarg, "epoll") != 0 && strcmp(optarg, "io_uring") != 0)
                return usage_error("bad --io '%s': expected epoll or io_uring", optarg);
            cfg.io_uring = optarg[0] == 'i';
            break;
        case 'h':
            lg_serve_usage(stdout);
            return 0;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            if (optopt && optopt < OPT_MODE)
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);

    for (i = 0; i < sizeof(serve_modes) / sizeof(serve_modes[0]); i++)
        if (strcmp(serve_modes[i].name, mode) == 0)
            cfg.mode = &serve_modes[i];
    if (!cfg.mode)
        return usage_error("unknown --mode '%s' (tcp, ws)", mode);
    if (!listen_at)
        return usage_error("--listen ADDR:PORT is required");
    if (lg_addr_parse(listen_at, &cfg.addr) < 0) {
        lg_serve_say("bad --listen address '%s': expected IPv4:PORT or [IPv6]:PORT, numeric "
            "(127.0.0.1:9000, [::1]:9000)", listen_at);
        return 2;
    }
    if (lg_addr_port((const struct sockaddr *)&cfg.addr) == 0 && cfg.threads != 1) {
        lg_serve_say("--listen port 0 needs --threads 1: each thread would get its own port");
        return 2;
    }
    if (tls_opt && !tls)
        return usage_error("%s needs --tls", tls_opt);
    if (cfg.io_uring && strcmp(cfg.mode->name, "tcp") != 0)
        return usage_error("--io io_uring serves --mode tcp only, not '%s'", cfg.mode->name);
    if (cfg.io_uring && (tls || cfg.max_conns || cfg.delay_ms || cfg.drop > 0 ||
                         cfg.flip > 0 || cfg.push_rate > 0))
        return usage_error("--io io_uring is the plain echo: no --tls, --max-conns, --delay, "
                           "--fault or --push");
    if (tls && (!cfg.tls_opts.cert || !cfg.tls_opts.key))
        return usage_error("--tls needs --tls-cert FILE and --tls-key FILE");
    if (tls) {
        cfg.tls_ctx = lg_tls_ctx_new(1, &cfg.tls_opts, tls_err, sizeof(tls_err));
        if (!cfg.tls_ctx) {
            lg_serve_say("%s", tls_err);
            return 2;
        }
    }
    /* A peer that went away must surface as EPIPE from write(), not kill us. */
    signal(SIGPIPE, SIG_IGN);
    rc = serve_run(&cfg);
    SSL_CTX_free(cfg.tls_ctx);
    return rc;
}
