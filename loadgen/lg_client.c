/* loadgen/lg_client.c — one process's share of `corogate-loadgen run` (see lg_client.h).
 *
 * Threads. Each runs a uv loop and a coroutine scheduler. A ramp timer spawns the thread's
 * connections at its part of the connect rate; each connection is one coroutine that
 * connects (binding its source address), upgrades (ws), then runs its traffic until the
 * thread stops. Open-loop senders are woken by the thread's pacer: a timerfd armed at the
 * earliest send time of a min-heap of connections, so send times are kept to about 50 µs
 * rather than the loop's millisecond timers (latency is measured from the intended send
 * time, so timer slack would show up as latency).
 *
 * The process's main thread talks to the threads through atomics and uv_async: it sends
 * CMD_STEADY when every thread's ramp is over, CMD_STOP when the steady phase ends, and
 * CMD_CANCEL on a second signal; threads publish counters and a round-trip histogram
 * under their mutex every PUBLISH_MS and notify the main thread when their ramp is over
 * and when they have finished. Results are read after the join.
 */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <openssl/ssl.h>

#include "common/tls.h"
#include "coro/coro.h"
#include "coro/io.h"
#include "lg_client.h"
#include "lg_msg.h"
#include "lg_ws.h"

#define RAMP_TICK_MS     1
#define SPAWN_PER_TICK   4096      /* new coroutines per ramp tick at most */
#define PUBLISH_MS       250
#define PROGRESS_MS      1000
#define SEND_BATCH       64        /* messages one wake-up sends at most when behind */
#ifndef PACER_SLACK_NS
/* The pacer wakes every connection due within this window at once, and they send at once:
 * fewer wake-ups at high rates; a message sent early carries its actual send time. */
#define PACER_SLACK_NS   100000
#endif
#define CLOSE_WAIT_MS    1000      /* ws: how long our close waits for the answer */
#define NO_HEAP          UINT32_MAX

enum { CMD_STEADY = 1, CMD_STOP = 2, CMD_CANCEL = 4 };

enum {
    T_LOOP    = 1 << 0,
    T_ASYNC   = 1 << 1,
    T_RAMP    = 1 << 2,
    T_PUBLISH = 1 << 3,
    T_PACER   = 1 << 4,
    T_MUTEX   = 1 << 5,
};

struct lg_thread;

/* One simulated client connection; owned by its coroutine. */
struct lg_cconn {
    struct coro_stream st;        /* first: its address is the connection's */
    struct lg_thread  *t;
    struct coro       *co;
    struct lg_cconn   *prev;      /* the thread's live connections */
    struct lg_cconn   *next;
    struct coro_buf   *out;       /* bytes being gathered for one write */
    struct lg_wsc     *ws;        /* ws mode: made when the first frame comes or goes */
    struct coro_buf   *pending;   /* ws: what followed the 101, fed before any read */
    struct lg_msg_rx   rx;
    uint64_t           next_send; /* ns: intended time of the next message (open loop) */
    uint64_t           seq;       /* next sequence number to send */
    uint32_t           gid;       /* global index: the conn field of its messages */
    uint32_t           heap_idx;  /* in the pacer heap, or NO_HEAP */
    int                up;
};

struct lg_proc;

struct pace_ent {
    uint64_t         at;          /* ns: when the pacer wakes <c> */
    struct lg_cconn *c;
};

struct lg_thread {
    struct lg_proc          *proc;
    const struct lg_run_cfg *cfg;
    unsigned                 id;
    unsigned                 share;      /* global share index */
    unsigned                 nshares;
    pthread_t                thread;
    uv_sem_t                 ready;
    int                      start_err;
    const char              *start_op;
    unsigned                 inited;
    uv_loop_t                loop;
    struct coro_sched       *sched;
    uv_async_t               cmd_async;
    atomic_uint              cmd;
    uv_timer_t               ramp;
    uv_timer_t               publish;
    /* pacer */
    int                      tfd;
    uv_poll_t                pacer;
    struct pace_ent         *heap;
    uint32_t                 nheap;
    uint32_t                 capheap;
    uint64_t                 armed_at;
    uint64_t                 interval_ns;
    /* ramp */
    uint64_t                 count;      /* connections of this thread */
    uint64_t                 spawned;
    uint64_t                 settled;    /* attempts over (or skipped by the stop) */
    uint64_t                 ramp_start;
    double                   rate;
    int                      ramp_reported;
    int                      steady;
    int                      stopping;
    int                      closing;
    struct lg_cconn         *conns;
    uint64_t                 live;
    uint64_t                 base_sent;      /* at CMD_STEADY */
    uint64_t                 base_received;
    uint64_t                 base_connected;
    uint64_t                 base_handshakes;
    SSL_SESSION             *tls_session;    /* --tls-resume: the last ticket the thread got */
    uint8_t                 *scratch;        /* one message, for ws payloads */
    /* counting, thread only */
    struct lg_counters       c;
    struct lg_msg_stats      ms;
    struct cg_hist           connect_h;
    struct cg_hist           tls_h;          /* TLS handshakes alone */
    struct cg_hist           rtt_h;
    struct cg_hist           iv_rtt;         /* since the last publish */
    uint64_t                 now_ns;         /* clock read for the data being fed */
    /* published, under <mu> */
    pthread_mutex_t          mu;
    struct lg_counters       snap;
    struct cg_hist           snap_rtt;
    int                      async_closed;
    atomic_int               ramp_done;
    atomic_int               finished;
};

enum { PH_RAMP = 0, PH_STEADY, PH_STOPPING, PH_DONE };

struct lg_proc {
    const struct lg_run_cfg *cfg;
    unsigned                 index;
    struct lg_thread        *threads;
    unsigned                 nstarted;
    uv_loop_t                loop;
    uv_async_t               notify;
    uv_timer_t               progress;
    uv_timer_t               hold;
    uv_signal_t              sigint;
    uv_signal_t              sigterm;
    struct lg_sink          *sink;
    int                      phase;
    int                      signals;
    int                      handles_closed;
    uint64_t                 start_ns;
    uint64_t                 steady_ns;
    uint64_t                 stop_ns;
    struct cg_hist           prog_rtt;
};

static void thread_publish(struct lg_thread *t);
static void thread_maybe_close(struct lg_thread *t);
static int conn_flush(struct lg_cconn *c);

/* ------------------------------------------------------------------ helpers */

static int cfg_ws(const struct lg_thread *t)
{
    return t->cfg->mode == LG_MODE_WS;
}

static enum lg_err connect_error_kind(int err)
{
    switch (err) {
    case UV_ECONNREFUSED:  return LG_ERR_REFUSED;
    case UV_ETIMEDOUT:     return LG_ERR_CONN_TIMEOUT;
    case UV_EADDRNOTAVAIL:
    case UV_EADDRINUSE:    return LG_ERR_NO_ADDR;
    case UV_EMFILE:
    case UV_ENFILE:        return LG_ERR_NO_FDS;
    case UV_EPROTO:        return LG_ERR_HANDSHAKE;
    default:               return LG_ERR_CONN_OTHER;
    }
}

static enum lg_err io_error_kind(int err)
{
    switch (err) {
    case UV_EOF:          return LG_ERR_CLOSED;
    case UV_ECONNRESET:
    case UV_EPIPE:        return LG_ERR_RESET;
    default:              return LG_ERR_IO;
    }
}

/* ------------------------------------------------------------------ pacer */

/* Heap entries carry their deadline: sifting compares without touching the connections. */
static void heap_set(struct lg_thread *t, uint32_t i, struct pace_ent e)
{
    t->heap[i] = e;
    e.c->heap_idx = i;
}

static void heap_up(struct lg_thread *t, uint32_t i)
{
    struct pace_ent e = t->heap[i];

    while (i > 0) {
        uint32_t p = (i - 1) / 2;

        if (t->heap[p].at <= e.at)
            break;
        heap_set(t, i, t->heap[p]);
        i = p;
    }
    heap_set(t, i, e);
}

static void heap_down(struct lg_thread *t, uint32_t i)
{
    struct pace_ent e = t->heap[i];

    for (;;) {
        uint32_t l = 2 * i + 1, m = i;
        uint64_t best = e.at;

        if (l < t->nheap && t->heap[l].at < best) {
            m = l;
            best = t->heap[l].at;
        }
        if (l + 1 < t->nheap && t->heap[l + 1].at < best)
            m = l + 1;
        if (m == i)
            break;
        heap_set(t, i, t->heap[m]);
        i = m;
    }
    heap_set(t, i, e);
}

static void heap_del(struct lg_thread *t, struct lg_cconn *c)
{
    uint32_t i = c->heap_idx;
    struct pace_ent last;

    if (i == NO_HEAP)
        return;
    c->heap_idx = NO_HEAP;
    last = t->heap[--t->nheap];
    if (last.c == c)
        return;
    heap_set(t, i, last);
    heap_down(t, i);
    heap_up(t, last.c->heap_idx);
}

/* Arms the timerfd at the earliest deadline, when it changed. */
static void pacer_program(struct lg_thread *t)
{
    struct itimerspec its = { { 0, 0 }, { 0, 0 } };
    uint64_t at;

    if (t->nheap == 0)
        return;                   /* a fire with nothing due is harmless */
    at = t->heap[0].at;
    if (at == t->armed_at)
        return;
    t->armed_at = at;
    if (at == 0)
        at = 1;                   /* 0 would disarm */
    its.it_value.tv_sec = (time_t)(at / 1000000000u);
    its.it_value.tv_nsec = (long)(at % 1000000000u);
    timerfd_settime(t->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Wakes <c> at <at> (ns, uv_hrtime clock) unless something else wakes it first. */
static int pacer_arm(struct lg_thread *t, struct lg_cconn *c, uint64_t at)
{
    if (c->heap_idx != NO_HEAP)
        heap_del(t, c);
    if (t->nheap == t->capheap) {
        uint32_t cap = t->capheap ? t->capheap * 2 : 1024;
        struct pace_ent *h = realloc(t->heap, cap * sizeof(*h));

        if (!h)
            return UV_ENOMEM;
        t->heap = h;
        t->capheap = cap;
    }
    t->heap[t->nheap] = (struct pace_ent){ at, c };
    c->heap_idx = t->nheap++;
    heap_up(t, c->heap_idx);
    if (t->heap[0].c == c)
        pacer_program(t);
    return 0;
}

static void on_pacer(uv_poll_t *h, int status, int events)
{
    struct lg_thread *t = h->data;
    uint64_t expirations, now;
    struct lg_cconn *c;

    if (read(t->tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
        return;
    t->armed_at = 0;
    now = uv_hrtime();
    while (t->nheap > 0 && t->heap[0].at <= now + PACER_SLACK_NS) {
        c = t->heap[0].c;
        heap_del(t, c);
        coro_wake(c->co, 0);
    }
    pacer_program(t);
}

/* ------------------------------------------------------------------ sending and receiving */

static void on_frame(void *ud, uint64_t seq, uint64_t ts)
{
    struct lg_cconn *c = ud;
    struct lg_thread *t = c->t;
    uint64_t now = t->now_ns;

    if (t->cfg->traffic == LG_TRAFFIC_PUSH) {
        struct timespec ts_now;

        clock_gettime(CLOCK_REALTIME, &ts_now);
        now = (uint64_t)ts_now.tv_sec * 1000000000u + (uint64_t)ts_now.tv_nsec;
    }
    if (now < ts)
        now = ts;
    cg_hist_record(&t->rtt_h, now - ts);
    cg_hist_record(&t->iv_rtt, now - ts);
}

static void on_ws_message(void *ud, int text, const uint8_t *p, size_t len);
static int ws_send_bytes(void *ud, const void *p, size_t len);

/* The connection's wslay context, made on first use; NULL when out of memory. */
static struct lg_wsc *conn_ws(struct lg_cconn *c)
{
    if (!c->ws)
        c->ws = lg_ws_new(1, ws_send_bytes, on_ws_message, c);
    return c->ws;
}

/* Where the WebSocket layer hands over a whole received data message. */
static void on_ws_message(void *ud, int text, const uint8_t *p, size_t len)
{
    struct lg_cconn *c = ud;

    lg_msg_rx_message(&c->rx, p, len, &c->t->ms, on_frame, c);
}

/* Feeds received bytes to the frame cutter (tcp) or the WebSocket parser. Returns 0, or
 * UV_EPROTO when the WebSocket layer failed (protocol error, close). */
static int conn_feed(struct lg_cconn *c, const uint8_t *p, size_t len)
{
    struct lg_thread *t = c->t;

    t->c.bytes_received += len;
    if (t->cfg->mode == LG_MODE_WS) {
        if (!conn_ws(c))
            return UV_ENOMEM;
        return lg_wsc_feed(c->ws, p, len);
    }
    if (t->cfg->traffic == LG_TRAFFIC_IDLE)
        return 0;             /* nothing expected: counted, dropped */
    lg_msg_rx_feed(&c->rx, p, len, &t->ms, on_frame, c);
    return 0;
}

/* Reads and feeds everything that has arrived. Returns 0, or UV_EOF / a read error. */
static int conn_read_all(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    struct coro_buf *b = NULL;
    ssize_t n;
    int err;

    t->now_ns = uv_hrtime();
    if (c->pending) {
        b = c->pending;
        c->pending = NULL;
        err = conn_feed(c, (const uint8_t *)b->data + b->off, b->len - b->off);
        coro_buf_put(t->sched, b);
        if (err < 0)
            return err;
    }
    while ((n = coro_try_read(&c->st, &b)) > 0) {
        err = conn_feed(c, (const uint8_t *)b->data + b->off, (size_t)n);
        coro_buf_put(t->sched, b);
        if (err < 0)
            return err;
    }
    if (c->ws) {
        err = lg_wsc_flush(c->ws);       /* pongs and close replies */
        if (err == 0)
            err = conn_flush(c);
        if (err < 0)
            return err;
    }
    return n == UV_EAGAIN ? 0 : (int)n;
}

/* Sends the gathered bytes. Returns 0 or a write error. */
static int conn_flush(struct lg_cconn *c)
{
    struct coro_buf *b = c->out;

    c->out = NULL;
    if (!b)
        return 0;
    return coro_write_nowait(&c->st, b);
}

/* Appends <len> bytes to the gathering buffer, writing it out when full. For the ws
 * layer's send callback too. Returns 0 or a libuv error. */
static int conn_append(struct lg_cconn *c, const void *p, size_t len)
{
    return coro_write_gather(&c->st, &c->out, p, len);
}

static int ws_send_bytes(void *ud, const void *p, size_t len)
{
    return conn_append(ud, p, len);
}

/* Queues one message with timestamp <ts>. Returns 0 or a libuv error. */
static int conn_put_msg(struct lg_cconn *c, uint64_t ts)
{
    struct lg_thread *t = c->t;
    uint32_t size = t->cfg->message_size;
    struct coro_buf *b;
    int err;

    if (t->cfg->mode == LG_MODE_WS) {
        if (!conn_ws(c))
            return UV_ENOMEM;
        lg_msg_write(t->scratch, size, c->seq, ts, c->gid);
        err = lg_wsc_send(c->ws, t->scratch, size);
    } else {
        b = c->out;
        if (b && b->cap - b->len < size) {
            err = conn_flush(c);
            if (err < 0)
                return err;
            b = NULL;
        }
        if (!b) {
            b = c->out = coro_buf_get(t->sched, size > coro_buf_size(t->sched) ? size : 0);
            if (!b)
                return UV_ENOMEM;
        }
        lg_msg_write((uint8_t *)b->data + b->len, size, c->seq, ts, c->gid);
        b->len += size;
        err = 0;
    }
    if (err < 0)
        return err;
    c->seq++;
    t->c.sent++;
    t->c.bytes_sent += size;
    return 0;
}

static int conn_send_flush(struct lg_cconn *c)
{
    int err = 0;

    if (c->ws)
        err = lg_wsc_flush(c->ws);
    if (err == 0)
        err = conn_flush(c);
    return err;
}

/* ------------------------------------------------------------------ traffic */

/* After the stop: waits up to drain_ms for the replies still in flight, then counts the
 * missing ones lost. Returns 0 (errors while draining are not the run's failures). */
static int conn_drain(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    uint64_t start = uv_now(&t->loop), el;
    int err;

    while (c->rx.expected < c->seq) {
        el = uv_now(&t->loop) - start;
        if (el >= (uint64_t)t->cfg->drain_ms)
            break;
        err = coro_park("drain", t->cfg->drain_ms - (int64_t)el);
        if (err == UV_ECANCELED)
            break;
        if (conn_read_all(c) < 0)
            break;
    }
    lg_msg_rx_give_up(&c->rx, c->seq, &t->ms);
    return 0;
}

/* Holds the connection open and silent until the stop; the server may say nothing either. */
static int traffic_idle(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    int err;

    coro_stream_watch(&c->st, coro_self());
    for (;;) {
        err = conn_read_all(c);          /* also starts reading: EOF and RST show up */
        if (err < 0)
            return err;
        if (t->stopping)
            return 0;
        err = coro_park("hold", CORO_FOREVER);
        if (err == UV_ECANCELED)
            return err;
    }
}

/* After the last of --messages: reads on (late echoes, EOF) until the stop, then drains. */
static int traffic_done(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    int err;

    while (!t->stopping) {
        err = coro_park("done", CORO_FOREVER);
        if (err == UV_ECANCELED)
            return err;
        err = conn_read_all(c);
        if (err < 0)
            return err;
    }
    return conn_drain(c);
}

/* Open loop: message i leaves at start + i * interval, or as soon after as possible; its
 * timestamp is the intended time, so a stall of ours or the server's counts in full. */
static int traffic_rate(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    uint64_t now, iv = t->interval_ns;
    unsigned n;
    int err;

    /* Spread the connections' phases over one interval (golden-ratio sequence). */
    c->next_send = uv_hrtime() + (uint64_t)((double)iv * ((double)((c->gid * 2654435761u)
                                                                    & 0xffffff) / 16777216.0));
    coro_stream_watch(&c->st, coro_self());
    for (;;) {
        if (t->stopping)
            break;
        if (t->cfg->messages && c->seq >= t->cfg->messages)
            return traffic_done(c);
        now = uv_hrtime();
        n = 0;
        if (coro_stream_queued(&c->st) <= c->st.wq_high) {
            while (c->next_send <= now + PACER_SLACK_NS && n < SEND_BATCH &&
                   (!t->cfg->messages || c->seq < t->cfg->messages)) {
                /* Late: stamped with the intended time (the stall counts); early, within
                 * the pacer's window: with the actual time (never flattering). */
                err = conn_put_msg(c, c->next_send > now ? now : c->next_send);
                if (err < 0)
                    return err;
                c->next_send += iv;
                n++;
            }
            if (n) {
                err = conn_send_flush(c);
                if (err < 0)
                    return err;
            }
        }
        err = 0;
        if (c->next_send > now + PACER_SLACK_NS)
            err = pacer_arm(t, c, c->next_send);
        else if (coro_stream_queued(&c->st) <= c->st.wq_high)
            err = pacer_arm(t, c, now);   /* behind: after the others had their turn */
        /* else the write queue's drain wakes us */
        if (err < 0)
            return err;
        err = coro_park("rate", CORO_FOREVER);
        heap_del(t, c);
        if (err == UV_ECANCELED)
            return err;
        err = conn_read_all(c);
        if (err < 0)
            return err;
    }
    return conn_drain(c);
}

/* Sends one message and waits for its echo. Returns 0 once it is back, damaged, or given
 * up after reply_timeout_ms (counted lost), or at the stop; a read error otherwise. */
static int round_trip(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    uint64_t want, corrupt0, start, el;
    int err;

    err = conn_put_msg(c, uv_hrtime());
    if (err == 0)
        err = conn_send_flush(c);
    if (err < 0)
        return err;
    want = c->seq;
    corrupt0 = c->rx.corrupt;
    start = uv_now(&t->loop);
    for (;;) {
        err = conn_read_all(c);
        if (err < 0)
            return err;
        /* A damaged echo will not come back whole: move on (every way out of this loop
         * but the timeout needs new data, so the coroutine parks). */
        if (c->rx.expected >= want || c->rx.corrupt != corrupt0 || t->stopping)
            return 0;
        el = uv_now(&t->loop) - start;
        if (el >= (uint64_t)t->cfg->reply_timeout_ms) {
            lg_msg_rx_give_up(&c->rx, want, &t->ms);
            return 0;
        }
        err = coro_park("reply", t->cfg->reply_timeout_ms - (int64_t)el);
        if (err == UV_ECANCELED)
            return err;
    }
}

/* Closed loop: one message in flight; the next leaves when its echo is back. A reply not
 * back within reply_timeout_ms counts lost; a damaged one moves on at once. */
static int traffic_closed(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    int err;

    coro_stream_watch(&c->st, coro_self());
    while (!t->stopping) {
        if (t->cfg->messages && c->seq >= t->cfg->messages)
            return traffic_done(c);
        err = round_trip(c);
        if (err < 0)
            return err;
    }
    return conn_drain(c);
}

/* Receives what `serve --push` sends until the stop. */
static int traffic_push(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    int err;

    coro_stream_watch(&c->st, coro_self());
    for (;;) {
        err = conn_read_all(c);
        if (err < 0)
            return err;
        if (t->stopping)
            return 0;
        err = coro_park("push", CORO_FOREVER);
        if (err == UV_ECANCELED)
            return err;
    }
}

/* ------------------------------------------------------------------ connections */

/* The WebSocket close handshake from our side: close 1000, then the peer's close (or EOF)
 * within CLOSE_WAIT_MS; best effort, errors are not the run's. A connection that never
 * needed a wslay context (idle) sends a hand-made frame and skips the answer's bytes, so
 * that saying goodbye does not cost every idle connection a context. */
static void ws_goodbye(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    uint64_t start = uv_now(&t->loop), el, r = (uv_hrtime() ^ c->gid) * 0x9e3779b97f4a7c15ull;
    struct coro_buf *b = NULL;
    uint8_t frame[8];
    ssize_t n;
    int i;

    if (c->ws) {
        lg_wsc_close(c->ws, 1000);
    } else {
        frame[0] = 0x88;                  /* FIN, close */
        frame[1] = 0x82;                  /* masked, 2 bytes: the status code */
        for (i = 0; i < 4; i++)
            frame[2 + i] = (uint8_t)(r >> (8 * i));
        frame[6] = 0x03 ^ frame[2];       /* 1000, big-endian, masked */
        frame[7] = 0xe8 ^ frame[3];
        if (conn_append(c, frame, sizeof(frame)) < 0)
            return;
    }
    if (conn_flush(c) < 0)
        return;
    for (;;) {
        el = uv_now(&t->loop) - start;
        if (el >= CLOSE_WAIT_MS)
            return;
        n = coro_read(&c->st, &b, CLOSE_WAIT_MS - (int64_t)el);
        if (n < 0)
            return;                       /* EOF, error, timeout, cancel */
        t->c.bytes_received += (uint64_t)n;
        if (c->ws)
            n = lg_wsc_feed(c->ws, (const uint8_t *)b->data + b->off, (size_t)n);
        coro_buf_put(t->sched, b);
        if (n < 0)
            return;                       /* UV_EOF: the close answer came */
    }
}

static int conn_connect(struct lg_cconn *c)
{
    const struct lg_run_cfg *cfg = c->t->cfg;
    const struct sockaddr *sa = (const struct sockaddr *)&cfg->target;
    struct sockaddr_in src = { .sin_family = AF_INET };
    int err;

    if (cfg->nsources && sa->sa_family == AF_INET)
        src.sin_addr.s_addr = cfg->sources[c->gid % cfg->nsources];
    err = coro_connect_from(&c->st, sa, src.sin_addr.s_addr ? (struct sockaddr *)&src : NULL,
                            cfg->connect_timeout_ms);
    if (err == 0)
        coro_stream_nodelay(&c->st, 1);
    return err;
}

static void thread_check_ramp(struct lg_thread *t)
{
    if (t->ramp_reported || t->settled < t->count)
        return;
    t->ramp_reported = 1;
    thread_publish(t);
    atomic_store(&t->ramp_done, 1);
    uv_async_send(&t->proc->notify);
}

static void conn_unlink(struct lg_thread *t, struct lg_cconn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        t->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
}

/* The TLS handshake on <c>'s connected stream within <timeout_ms>, offering the thread's
 * last session ticket with --tls-resume (and keeping the one the server issues). Counts
 * its time, whether it was resumed, or its failure by reason. Returns 0 or the error of
 * cg_tls_connect(). */
static int conn_tls(struct lg_cconn *c, int64_t timeout_ms)
{
    struct lg_thread *t = c->t;
    const struct lg_run_cfg *cfg = t->cfg;
    struct cg_tls_info info;
    SSL_SESSION *sess = NULL;
    uint64_t t0 = uv_hrtime();
    int err, fail;

    if (cfg->tls_resume && t->tls_session) {
        /* A TLS 1.3 session is single-use to OpenSSL: re-armed when a handshake has
         * resumed it since (lg_tls_session_keep()). cg_tls_connect() offers it before it
         * first parks, so no other connection marks it in between. */
        t->tls_session = lg_tls_session_keep(t->tls_session);
        sess = t->tls_session;            /* our own reference, whatever the call does */
        if (sess)
            SSL_SESSION_up_ref(sess);
    }
    memset(&info, 0, sizeof(info));
    err = cg_tls_connect(&c->st, cfg->tls_ctx, cfg->sni, cfg->tls_opts.ca ? cfg->sni : NULL,
                         cfg->tls_resume ? &sess : NULL, timeout_ms < 1 ? 1 : timeout_ms,
                         &info);
    if (err == 0) {
        cg_hist_record(&t->tls_h, uv_hrtime() - t0);
        if (info.resumed)
            t->c.tls_resumed++;
        else
            t->c.tls_full++;
        if (info.version == TLS1_3_VERSION)
            t->c.tls_v13++;
        if (sess && sess != t->tls_session) {     /* a new ticket: the thread's from now */
            SSL_SESSION_free(t->tls_session);
            t->tls_session = sess;
            sess = NULL;
        }
    } else if (err != UV_ECANCELED) {
        fail = info.fail;
        if (fail <= CG_TLS_OK || fail >= CG_TLS_FAIL_COUNT)
            fail = err == UV_ETIMEDOUT ? CG_TLS_FAIL_TIMEOUT : CG_TLS_FAIL_LOCAL;
        t->c.tls_fail[fail]++;
    }
    SSL_SESSION_free(sess);               /* NULL-safe */
    return err;
}

/* Initialises <c>'s stream, connects it (binding the source), makes the TLS handshake
 * (--tls), upgrades it (ws), and counts the attempt, its latency or its error. Returns 0
 * or the error. The stream must be closed afterwards either way. */
static int conn_open(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;
    const struct lg_run_cfg *cfg = t->cfg;
    enum lg_err kind;
    uint64_t t0;
    int err;

    err = coro_stream_init(t->sched, &c->st);
    if (err < 0)
        return err;
    t->c.attempts++;
    t0 = uv_hrtime();
    err = conn_connect(c);
    kind = connect_error_kind(err);
    if (err == 0 && cfg->tls) {
        err = conn_tls(c, cfg->connect_timeout_ms - (int64_t)((uv_hrtime() - t0) / 1000000));
        kind = err == UV_ETIMEDOUT ? LG_ERR_CONN_TIMEOUT : LG_ERR_HANDSHAKE;
    }
    if (err == 0 && cfg->mode == LG_MODE_WS) {
        err = lg_wsc_handshake(&c->st, cfg,
                               cfg->connect_timeout_ms - (int64_t)((uv_hrtime() - t0) / 1000000),
                               &c->pending);
        kind = connect_error_kind(err);
    }
    if (err == 0) {
        cg_hist_record(&t->connect_h, uv_hrtime() - t0);
        t->c.connected++;
    } else if (err != UV_ECANCELED) {
        t->c.errors[kind]++;
    }
    return err;
}

/* Frees what a connection holds besides its (closed) stream, unlinks and frees it. */
static void conn_release(struct lg_cconn *c)
{
    struct lg_thread *t = c->t;

    heap_del(t, c);
    coro_buf_put(t->sched, c->out);
    c->out = NULL;
    lg_wsc_free(c->ws);
    c->ws = NULL;
    coro_buf_put(t->sched, c->pending);
    c->pending = NULL;
    lg_msg_rx_deinit(&c->rx);
    conn_unlink(t, c);
    t->live--;
    free(c);
    thread_maybe_close(t);
}

static void settle_once(struct lg_thread *t, int *settled)
{
    if (*settled)
        return;
    *settled = 1;
    t->settled++;
    thread_check_ramp(t);
}

/* --churn: connect, one round trip, close, again until the stop: new connections/s with
 * the whole cost of each (accept, upstream connect, relay, both closes). */
static void churn_main(void *arg)
{
    struct lg_cconn *c = arg;
    struct lg_thread *t = c->t;
    int err = 0, settled = 0;

    if (!t->stopping && lg_msg_rx_init(&c->rx, t->cfg->message_size, c->gid) < 0) {
        t->c.errors[LG_ERR_CONN_OTHER]++;
        goto out;
    }
    while (!t->stopping) {
        err = conn_open(c);
        settle_once(t, &settled);
        if (err == 0) {
            c->seq = 0;
            c->rx.expected = 0;
            c->rx.partlen = 0;
            c->rx.bad = 0;
            c->rx.damaged = 0;
            coro_stream_watch(&c->st, coro_self());
            err = round_trip(c);
            if (err == 0 && t->stopping)
                err = conn_drain(c);      /* the echo in flight at the stop */
            if (err == 0 && cfg_ws(t))
                ws_goodbye(c);
            t->c.ended++;
            if (err < 0 && err != UV_ECANCELED)
                t->c.errors[io_error_kind(err)]++;
        }
        coro_stream_close(&c->st);
        lg_wsc_free(c->ws);
        c->ws = NULL;
        coro_buf_put(t->sched, c->out);
        c->out = NULL;
        coro_buf_put(t->sched, c->pending);
        c->pending = NULL;
        if (err == UV_ECANCELED)
            break;
        if (err < 0 && !t->stopping && coro_sleep(10) == UV_ECANCELED)
            break;                        /* after an error: no tight loop */
    }
out:
    settle_once(t, &settled);
    conn_release(c);
}

/* The coroutine of one client connection; owns <arg> and frees it. */
static void conn_main(void *arg)
{
    struct lg_cconn *c = arg;
    struct lg_thread *t = c->t;
    const struct lg_run_cfg *cfg = t->cfg;
    int err, settled = 0;

    if (t->stopping) {
        settle_once(t, &settled);
        conn_release(c);
        return;
    }
    err = conn_open(c);
    settle_once(t, &settled);
    if (err < 0)
        goto out;
    c->up = 1;
    if (cfg->traffic != LG_TRAFFIC_IDLE) {
        err = lg_msg_rx_init(&c->rx, cfg->message_size,
                             cfg->traffic == LG_TRAFFIC_PUSH ? LG_MSG_CONN_PUSH : c->gid);
        if (err < 0)
            err = UV_ENOMEM;
    }
    if (err == 0) {
        switch (cfg->traffic) {
        case LG_TRAFFIC_IDLE:   err = traffic_idle(c); break;
        case LG_TRAFFIC_RATE:   err = traffic_rate(c); break;
        case LG_TRAFFIC_CLOSED: err = traffic_closed(c); break;
        case LG_TRAFFIC_PUSH:   err = traffic_push(c); break;
        case LG_TRAFFIC_CHURN:  break;    /* churn_main */
        }
    }
    t->c.ended++;
    if (err < 0 && err != UV_ECANCELED) {
        t->c.errors[io_error_kind(err)]++;
        if (!t->stopping)
            t->c.dropped++;
    }
    if (err == 0 && cfg_ws(t))
        ws_goodbye(c);
out:
    coro_stream_close(&c->st);
    conn_release(c);
}

static int spawn_one(struct lg_thread *t)
{
    struct lg_cconn *c = calloc(1, sizeof(*c));
    int err;

    if (!c)
        return UV_ENOMEM;
    c->t = t;
    c->gid = (uint32_t)(t->share + t->spawned * t->nshares);
    c->heap_idx = NO_HEAP;
    err = coro_spawn(t->sched, t->cfg->traffic == LG_TRAFFIC_CHURN ? churn_main : conn_main,
                     c, "lg client", &c->co);
    if (err < 0) {
        free(c);
        return err;
    }
    c->next = t->conns;
    if (t->conns)
        t->conns->prev = c;
    t->conns = c;
    t->live++;
    return 0;
}

/* ------------------------------------------------------------------ threads */

static void on_ramp(uv_timer_t *h)
{
    struct lg_thread *t = h->data;
    double el = (double)(uv_hrtime() - t->ramp_start) / 1e9;
    uint64_t due = (uint64_t)(el * t->rate) + 1;
    unsigned n = 0;

    if (due > t->count || t->rate <= 0)
        due = t->count;
    while (t->spawned < due && n < SPAWN_PER_TICK && !t->stopping) {
        if (spawn_one(t) < 0) {       /* out of memory: counted as a failed attempt */
            t->c.attempts++;
            t->c.errors[LG_ERR_CONN_OTHER]++;
            t->settled++;
        }
        t->spawned++;
        n++;
    }
    if (t->spawned == t->count) {
        uv_timer_stop(&t->ramp);
        thread_check_ramp(t);
    }
}

static void fold_counters(struct lg_thread *t)
{
    t->c.received = t->ms.good;
    t->c.corrupt = t->ms.corrupt;
    t->c.lost = t->ms.lost;
    t->c.reordered = t->ms.reordered;
    t->c.skipped_bytes = t->ms.skipped;
}

static void thread_publish(struct lg_thread *t)
{
    fold_counters(t);
    pthread_mutex_lock(&t->mu);
    t->snap = t->c;
    cg_hist_merge(&t->snap_rtt, &t->iv_rtt);
    pthread_mutex_unlock(&t->mu);
    cg_hist_reset(&t->iv_rtt);
}

static void on_publish(uv_timer_t *h)
{
    thread_publish(h->data);
}

/* Once stopping and the last connection is gone: closes the thread's handles, after which
 * its loop ends. */
static void thread_maybe_close(struct lg_thread *t)
{
    if (!t->stopping || t->live > 0 || t->closing)
        return;
    t->closing = 1;
    if (t->inited & T_ASYNC) {
        pthread_mutex_lock(&t->mu);
        t->async_closed = 1;
        pthread_mutex_unlock(&t->mu);
        uv_close((uv_handle_t *)&t->cmd_async, NULL);
    }
    if (t->inited & T_RAMP)
        uv_close((uv_handle_t *)&t->ramp, NULL);
    if (t->inited & T_PUBLISH)
        uv_close((uv_handle_t *)&t->publish, NULL);
    if (t->inited & T_PACER)
        uv_close((uv_handle_t *)&t->pacer, NULL);
    t->inited &= ~(unsigned)(T_ASYNC | T_RAMP | T_PUBLISH | T_PACER);
}

static void on_cmd(uv_async_t *h)
{
    struct lg_thread *t = h->data;
    unsigned cmd = atomic_exchange(&t->cmd, 0);
    struct lg_cconn *c;

    if (cmd & CMD_STEADY && !t->steady && !t->stopping) {
        t->steady = 1;
        fold_counters(t);
        t->c.up_at_steady = lg_counters_up(&t->c);
        t->base_sent = t->c.sent;
        t->base_received = t->c.received;
        t->base_connected = t->c.connected;
        t->base_handshakes = t->c.tls_full + t->c.tls_resumed;
        t->c.ramp_handshakes = t->base_handshakes;
    }
    if (cmd & (CMD_STOP | CMD_CANCEL) && !t->stopping) {
        fold_counters(t);
        if (t->steady) {
            t->c.up_at_stop = lg_counters_up(&t->c);
            t->c.steady_sent = t->c.sent - t->base_sent;
            t->c.steady_received = t->c.received - t->base_received;
            t->c.steady_connected = t->c.connected - t->base_connected;
            t->c.steady_handshakes = t->c.tls_full + t->c.tls_resumed - t->base_handshakes;
        }
        t->stopping = 1;
        uv_timer_stop(&t->ramp);
        for (c = t->conns; c; c = c->next)
            if (c->co)
                coro_wake(c->co, 0);
    }
    if (cmd & CMD_CANCEL)
        for (c = t->conns; c; c = c->next)
            if (c->co)
                coro_cancel(c->co);
    thread_maybe_close(t);
}

static int thread_start(struct lg_thread *t)
{
    const struct lg_run_cfg *cfg = t->cfg;
    struct coro_sched_opts so = { .stack_model = CORO_STACK_SHARED };
    uint64_t n = cfg->connections, ns = t->nshares;
    int err;

    t->count = n / ns + (t->share < n % ns ? 1 : 0);
    t->rate = cfg->connect_rate / (double)ns;
    if (cfg->traffic == LG_TRAFFIC_RATE) {
        double iv = 1e9 / cfg->message_rate;

        t->interval_ns = iv < 1 ? 1 : (uint64_t)iv;
    }
    t->start_op = "uv_loop_init()";
    err = uv_loop_init(&t->loop);
    if (err < 0)
        return err;
    t->inited |= T_LOOP;
    t->start_op = "coro_sched_new()";
    t->sched = coro_sched_new(&t->loop, &so);
    if (!t->sched)
        return -errno;
    t->start_op = "malloc()";
    t->scratch = malloc(cfg->message_size > LG_MSG_HDR ? cfg->message_size : LG_MSG_HDR);
    if (!t->scratch)
        return -ENOMEM;
    t->start_op = "uv_async_init()";
    err = uv_async_init(&t->loop, &t->cmd_async, on_cmd);
    if (err < 0)
        return err;
    t->cmd_async.data = t;
    t->inited |= T_ASYNC;
    uv_timer_init(&t->loop, &t->ramp);
    t->ramp.data = t;
    t->inited |= T_RAMP;
    uv_timer_init(&t->loop, &t->publish);
    t->publish.data = t;
    t->inited |= T_PUBLISH;
    if (cfg->traffic == LG_TRAFFIC_RATE) {
        t->start_op = "timerfd_create()";
        t->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (t->tfd < 0)
            return -errno;
        t->start_op = "uv_poll_init()";
        err = uv_poll_init(&t->loop, &t->pacer, t->tfd);
        if (err < 0)
            return err;
        t->pacer.data = t;
        t->inited |= T_PACER;
        err = uv_poll_start(&t->pacer, UV_READABLE, on_pacer);
        if (err < 0)
            return err;
    }
    return 0;
}

static void *thread_main(void *arg)
{
    struct lg_thread *t = arg;
    int err, n;

    /* Timer slack of 1 ns: epoll and the pacer wake when asked, not up to 50 µs later. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    err = thread_start(t);
    t->start_err = err;
    uv_sem_post(&t->ready);
    if (err == 0) {
        t->ramp_start = uv_hrtime();
        uv_timer_start(&t->ramp, on_ramp, 0, RAMP_TICK_MS);
        uv_timer_start(&t->publish, on_publish, PUBLISH_MS, PUBLISH_MS);
        if (t->count == 0)
            thread_check_ramp(t);
        uv_run(&t->loop, UV_RUN_DEFAULT);
    } else {
        t->stopping = 1;
        thread_maybe_close(t);
    }
    if (t->sched) {
        n = coro_sched_free(t->sched);
        t->sched = NULL;
        if (n > 0)
            fprintf(stderr, "run: thread %u: %d coroutines still alive at exit\n", t->id, n);
    }
    if (t->inited & T_LOOP) {
        uv_run(&t->loop, UV_RUN_DEFAULT);
        uv_loop_close(&t->loop);
        t->inited &= ~(unsigned)T_LOOP;
    }
    if (t->tfd >= 0)
        close(t->tfd);
    t->tfd = -1;
    fold_counters(t);
    if (err == 0) {
        thread_publish(t);
        atomic_store(&t->finished, 1);
        uv_async_send(&t->proc->notify);
    }
    return NULL;
}

/* Sends <cmd> to <t> unless its async handle is gone (it is then stopping anyway). */
static void thread_send(struct lg_thread *t, unsigned cmd)
{
    pthread_mutex_lock(&t->mu);
    if (!t->async_closed) {
        atomic_fetch_or(&t->cmd, cmd);
        uv_async_send(&t->cmd_async);
    }
    pthread_mutex_unlock(&t->mu);
}

/* ------------------------------------------------------------------ the process */

static void proc_send_all(struct lg_proc *p, unsigned cmd)
{
    unsigned i;

    for (i = 0; i < p->nstarted; i++)
        thread_send(&p->threads[i], cmd);
}

/* Sums the threads' published counters (and histograms into <rtt>, when not NULL). */
static void proc_sum(struct lg_proc *p, struct lg_counters *c, struct cg_hist *rtt)
{
    unsigned i;

    memset(c, 0, sizeof(*c));
    if (rtt)
        cg_hist_reset(rtt);
    for (i = 0; i < p->nstarted; i++) {
        struct lg_thread *t = &p->threads[i];

        pthread_mutex_lock(&t->mu);
        lg_counters_add(c, &t->snap);
        if (rtt)
            cg_hist_merge(rtt, &t->snap_rtt);
        pthread_mutex_unlock(&t->mu);
    }
}

static void proc_stop(struct lg_proc *p)
{
    if (p->phase >= PH_STOPPING)
        return;
    p->phase = PH_STOPPING;
    p->stop_ns = uv_hrtime();
    uv_timer_stop(&p->hold);
    proc_send_all(p, CMD_STOP);
}

static void on_hold_end(uv_timer_t *h)
{
    proc_stop(h->data);
}

static void proc_close_handles(struct lg_proc *p)
{
    if (p->handles_closed)
        return;
    p->handles_closed = 1;
    uv_close((uv_handle_t *)&p->notify, NULL);
    uv_close((uv_handle_t *)&p->progress, NULL);
    uv_close((uv_handle_t *)&p->hold, NULL);
    if (!uv_is_closing((uv_handle_t *)&p->sigint))
        uv_close((uv_handle_t *)&p->sigint, NULL);
    if (!uv_is_closing((uv_handle_t *)&p->sigterm))
        uv_close((uv_handle_t *)&p->sigterm, NULL);
}

static void on_notify(uv_async_t *h)
{
    struct lg_proc *p = h->data;
    struct lg_counters c;
    unsigned i, ramped = 0, finished = 0;

    for (i = 0; i < p->nstarted; i++) {
        ramped += (unsigned)atomic_load(&p->threads[i].ramp_done);
        finished += (unsigned)atomic_load(&p->threads[i].finished);
    }
    if (p->phase == PH_RAMP && ramped == p->nstarted) {
        p->phase = PH_STEADY;
        p->steady_ns = uv_hrtime();
        proc_send_all(p, CMD_STEADY);
        proc_sum(p, &c, NULL);
        /* Nothing up: there is nothing to hold or to measure. */
        if (lg_counters_up(&c) == 0 || p->cfg->duration_ms == 0)
            proc_stop(p);
        else
            uv_timer_start(&p->hold, on_hold_end, p->cfg->duration_ms, 0);
    }
    if (finished == p->nstarted && p->phase != PH_DONE) {
        p->phase = PH_DONE;
        for (i = 0; i < p->nstarted; i++)
            pthread_join(p->threads[i].thread, NULL);
        p->nstarted = 0;
        proc_close_handles(p);
    }
}

static void on_progress(uv_timer_t *h)
{
    struct lg_proc *p = h->data;
    struct lg_counters c;

    proc_sum(p, &c, &p->prog_rtt);
    if (p->sink && p->sink->progress)
        p->sink->progress(p->sink, &c, &p->prog_rtt);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct lg_proc *p = h->data;

    if (p->signals++ == 0) {
        if (!p->cfg->quiet && p->cfg->procs == 1)
            fprintf(stderr, "\nrun: %s: stopping (again to cancel at once)\n",
                    signum == SIGINT ? "SIGINT" : "SIGTERM");
        if (p->phase < PH_STOPPING)
            proc_stop(p);
        return;
    }
    proc_send_all(p, CMD_CANCEL);
    uv_close((uv_handle_t *)&p->sigint, NULL);
    uv_close((uv_handle_t *)&p->sigterm, NULL);
}

static void thread_deinit(struct lg_thread *t)
{
    cg_hist_deinit(&t->connect_h);
    cg_hist_deinit(&t->tls_h);
    cg_hist_deinit(&t->rtt_h);
    SSL_SESSION_free(t->tls_session);
    t->tls_session = NULL;
    cg_hist_deinit(&t->iv_rtt);
    cg_hist_deinit(&t->snap_rtt);
    free(t->heap);
    t->heap = NULL;
    free(t->scratch);
    t->scratch = NULL;
    if (t->inited & T_MUTEX)
        pthread_mutex_destroy(&t->mu);
    t->inited = 0;
}

int lg_client_run(const struct lg_run_cfg *cfg, unsigned proc, struct lg_sink *sink,
                  struct lg_result *res)
{
    struct lg_proc p;
    struct rusage ru;
    unsigned i, ncreated = 0;
    int err = 0;

    memset(&p, 0, sizeof(p));
    p.cfg = cfg;
    p.index = proc;
    p.sink = sink;
    p.threads = calloc(cfg->threads, sizeof(*p.threads));
    if (!p.threads || lg_hist_init(&p.prog_rtt) < 0) {
        fprintf(stderr, "run: out of memory\n");
        free(p.threads);
        return -ENOMEM;
    }
    err = uv_loop_init(&p.loop);
    if (err < 0) {
        fprintf(stderr, "run: uv_loop_init(): %s\n", uv_strerror(err));
        cg_hist_deinit(&p.prog_rtt);
        free(p.threads);
        return err;
    }
    uv_async_init(&p.loop, &p.notify, on_notify);
    p.notify.data = &p;
    uv_timer_init(&p.loop, &p.progress);
    p.progress.data = &p;
    uv_timer_init(&p.loop, &p.hold);
    p.hold.data = &p;
    uv_signal_init(&p.loop, &p.sigint);
    uv_signal_init(&p.loop, &p.sigterm);
    p.sigint.data = p.sigterm.data = &p;
    uv_signal_start(&p.sigint, on_signal, SIGINT);
    uv_signal_start(&p.sigterm, on_signal, SIGTERM);

    for (i = 0; i < cfg->threads; i++) {
        struct lg_thread *t = &p.threads[i];

        t->proc = &p;
        t->cfg = cfg;
        t->id = i;
        t->tfd = -1;
        t->share = proc * cfg->threads + i;
        t->nshares = cfg->procs * cfg->threads;
        if (lg_hist_init(&t->connect_h) < 0 || lg_hist_init(&t->tls_h) < 0 ||
            lg_hist_init(&t->rtt_h) < 0 ||
            lg_hist_init(&t->iv_rtt) < 0 || lg_hist_init(&t->snap_rtt) < 0) {
            thread_deinit(t);
            err = -ENOMEM;
            fprintf(stderr, "run: out of memory\n");
            break;
        }
        pthread_mutex_init(&t->mu, NULL);
        t->inited |= T_MUTEX;
        uv_sem_init(&t->ready, 0);
        ncreated++;
        err = pthread_create(&t->thread, NULL, thread_main, t);
        if (err) {
            fprintf(stderr, "run: pthread_create(): %s\n", strerror(err));
            err = -err;
            uv_sem_destroy(&t->ready);
            break;
        }
        p.nstarted++;
    }
    for (i = 0; i < p.nstarted; i++) {
        struct lg_thread *t = &p.threads[i];

        uv_sem_wait(&t->ready);
        uv_sem_destroy(&t->ready);
        if (t->start_err < 0 && err == 0) {
            err = t->start_err;
            fprintf(stderr, "run: thread %u: %s: %s\n", i, t->start_op, uv_strerror(err));
        }
    }
    p.start_ns = uv_hrtime();
    if (err < 0) {
        proc_send_all(&p, CMD_CANCEL);
        for (i = 0; i < p.nstarted; i++)
            pthread_join(p.threads[i].thread, NULL);
        p.nstarted = 0;
        proc_close_handles(&p);
    } else {
        uv_timer_start(&p.progress, on_progress, PROGRESS_MS, PROGRESS_MS);
    }
    uv_run(&p.loop, UV_RUN_DEFAULT);

    if (err == 0) {
        uint64_t stop = p.stop_ns ? p.stop_ns : uv_hrtime();

        for (i = 0; i < cfg->threads; i++) {
            struct lg_thread *t = &p.threads[i];

            lg_counters_add(&res->c, &t->c);
            cg_hist_merge(&res->connect, &t->connect_h);
            cg_hist_merge(&res->tls, &t->tls_h);
            cg_hist_merge(&res->rtt, &t->rtt_h);
        }
        res->c.ramp_ns = p.steady_ns ? p.steady_ns - p.start_ns : 0;
        res->c.steady_ns = p.steady_ns && stop > p.steady_ns ? stop - p.steady_ns : 0;
        if (res->c.steady_ns) {
            res->c.steady_rate_milli = (uint64_t)((double)res->c.steady_received * 1e12 /
                                                  (double)res->c.steady_ns);
            res->c.steady_conn_rate_milli = (uint64_t)((double)res->c.steady_connected *
                                                       1e12 / (double)res->c.steady_ns);
            res->c.steady_hs_rate_milli = (uint64_t)((double)res->c.steady_handshakes *
                                                     1e12 / (double)res->c.steady_ns);
        }
        res->c.procs_done = 1;
        res->c.interrupted = p.signals > 0;
        if (getrusage(RUSAGE_SELF, &ru) == 0)
            res->c.cpu_us = (uint64_t)ru.ru_utime.tv_sec * 1000000 + (uint64_t)ru.ru_utime.tv_usec +
                            (uint64_t)ru.ru_stime.tv_sec * 1000000 + (uint64_t)ru.ru_stime.tv_usec;
        res->c.wall_us = (uv_hrtime() - p.start_ns) / 1000;
        res->c.threads = cfg->threads;
    }
    for (i = 0; i < ncreated; i++)
        thread_deinit(&p.threads[i]);
    uv_loop_close(&p.loop);
    cg_hist_deinit(&p.prog_rtt);
    free(p.threads);
    return err;
}
