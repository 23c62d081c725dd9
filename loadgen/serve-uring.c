/* loadgen/serve-uring.c — the tcp echo through io_uring, for `serve --io io_uring`.
 *
 * Why this shape (issue 21, step 2; the figures are in docs/bench.md):
 *
 * - libuv stays the loop. The ring's own fd is pollable (readable while its completion
 *   queue holds entries), so a uv_poll_t watches it: no eventfd to read on every wakeup,
 *   and the worker's timers and async stop keep working as they are.
 * - Accepting is one multishot accept on the listener: one SQE, then a completion per
 *   connection, instead of a readiness event plus accept4() per connection.
 * - Receiving is one multishot receive per connection with IOSQE_BUFFER_SELECT: the kernel
 *   picks a buffer from a provided buffer ring when data arrives, so an idle connection
 *   holds no buffer (as coro/io.h's read-ahead promises) and a busy one needs no read().
 *   The ring's buffers are the worker's: taken from the scheduler's pool (BUF_START at
 *   first, more when the ring runs dry, up to BUF_RING_SIZE) and given back at the end.
 * - The echo sends the very buffer the kernel filled (no copy) and puts it back into the
 *   buffer ring when the send completed. One send at a time per connection, the others
 *   queued in order behind it: two sends in flight on one socket could be reordered (the
 *   first parked on a full socket buffer, the second not), and a short send resends its
 *   rest before anything else goes.
 * - A peer that sends but does not read would otherwise drain the whole buffer ring into
 *   its queue: past MAX_QUEUED queued chunks its receive is cancelled, and re-armed once
 *   its queue went down to RESUME_AT; TCP's window then pushes back, as with epoll.
 * - Everything prepared while handling one wakeup's completions (sends, re-arms, closes,
 *   buffers given back) goes to the kernel with one io_uring_submit() at the end.
 * - A connection is freed when the completion of its close came and nothing else of it is
 *   in flight: a multishot receive or a send still holds its user_data (the pointer) and,
 *   for a send, a buffer. So an error or the stop first cancels all of the socket's
 *   requests (IORING_ASYNC_CANCEL_FD | _ALL), and the close waits for their completions.
 *
 * user_data is a struct pointer (8-byte aligned) with the operation in its low 3 bits.
 *
 * liburing 2.3 (Debian 12) has no io_uring_setup_buf_ring(): the buffer ring's memory is
 * page-aligned heap registered with io_uring_register_buf_ring(), which is what the newer
 * helper does.
 */
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "coro/io.h"
#include "serve-log.h"
#include "serve-uring.h"

#define RING_SQES        1024      /* a full SQ is submitted early, so this bounds nothing */
#define RING_CQES        16384     /* every connection's receive may post several at once */
#define BUF_RING_SIZE    4096      /* provided buffers at most (a power of two) */
#define BUF_START        256       /* fed at start; doubled each time the ring runs dry */
#define BUF_GROUP        0
#define CQE_BUDGET       4096      /* completions handled per wakeup; the rest next time */
#define MAX_QUEUED       16        /* echo chunks queued on one connection: pause its receive */
#define RESUME_AT        4         /* ... and re-arm it once no more than this many are left */
#define ACCEPT_PAUSE_MS  100       /* no accept for this long after EMFILE/ENFILE/ENOMEM */
#define NO_BID           UINT32_MAX

enum {
    OP_ACCEPT = 1,     /* (struct lg_uring *) */
    OP_RECV,           /* (struct uconn *) */
    OP_SEND,           /* (struct uconn *) */
    OP_CLOSE,          /* (struct uconn *) */
    OP_IGNORE,         /* cancels: their result shows in the cancelled request's own */
    OP_MASK = 7,
};

/* One provided buffer: the pool's buffer, and the next in its connection's send queue. */
struct ubuf {
    struct coro_buf *b;
    uint32_t         next;     /* NO_BID: last */
};

struct uconn {
    struct lg_uring *u;
    struct uconn    *prev;      /* the worker's connections, to end them on stop */
    struct uconn    *next;
    struct uconn    *wait_next; /* on u->waiting: its receive wants buffers */
    int              fd;
    uint32_t         qhead;     /* send queue, by buffer id; the head is in flight if <sending> */
    uint32_t         qtail;
    unsigned         nqueued;
    unsigned         recv_armed : 1;  /* a multishot receive is in the kernel */
    unsigned         sending : 1;     /* a send of the queue's head is in the kernel */
    unsigned         waiting : 1;     /* on u->waiting */
    unsigned         paused : 1;      /* receive cancelled or left off: too much queued */
    unsigned         cancel_sent : 1; /* the receive's cancel is on its way */
    unsigned         eof : 1;         /* the peer shut down its side */
    unsigned         closing : 1;     /* ending: nothing new, then the close */
    unsigned         close_sent : 1;
    unsigned         failed : 1;      /* ended by an error: counted */
};

struct lg_uring {
    struct io_uring        ring;
    struct io_uring_buf_ring *br;
    struct ubuf           *bufs;      /* by buffer id */
    uint32_t               nbufs;     /* buffer ids handed out so far */
    unsigned               br_added;  /* buffers added to the buffer ring, not yet published */
    uv_poll_t              poll;      /* the ring's fd */
    uv_timer_t             pause;     /* re-arms the accept after EMFILE... */
    struct coro_sched     *sched;
    struct lg_uring_stats *stats;
    struct uconn          *conns;
    struct uconn          *waiting;   /* receives that wait for buffers */
    int                    lfd;
    int                    ring_up;
    int                    accept_armed;
    int                    stopping;
    int                    handles;   /* open uv handles: freed when the last one closed */
};

/* ---------------------------------------------------------------- submission queue */

/* An SQE to fill; when the SQ is full, what it holds is submitted first. The SQ empties on
 * submit unless the kernel refused the whole batch, which with a NODROP completion queue
 * leaves no way on: that is reported and ends the process, a prototype's honesty. */
static struct io_uring_sqe *sqe_get(struct lg_uring *u)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
    int err;

    if (sqe)
        return sqe;
    err = io_uring_submit(&u->ring);
    u->stats->submits++;
    sqe = io_uring_get_sqe(&u->ring);
    if (!sqe) {
        lg_serve_say("io_uring_submit(): %s; the submission queue stays full", strerror(-err));
        abort();
    }
    return sqe;
}

static void sqe_data(struct io_uring_sqe *sqe, void *p, unsigned op)
{
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)p | op);
}

/* ---------------------------------------------------------------- provided buffers */

/* Hands buffer <bid> (back) to the kernel; published by buf_publish(). */
static void buf_recycle(struct lg_uring *u, uint32_t bid)
{
    struct coro_buf *b = u->bufs[bid].b;

    u->bufs[bid].next = NO_BID;
    io_uring_buf_ring_add(u->br, b->data, b->cap, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_RING_SIZE), (int)u->br_added++);
}

static void buf_publish(struct lg_uring *u)
{
    if (u->br_added) {
        io_uring_buf_ring_advance(u->br, (int)u->br_added);
        u->br_added = 0;
    }
}

/* Takes up to <n> more buffers from the pool into the buffer ring. Returns how many. */
static uint32_t buf_grow(struct lg_uring *u, uint32_t n)
{
    uint32_t i;

    if (n > BUF_RING_SIZE - u->nbufs)
        n = BUF_RING_SIZE - u->nbufs;
    for (i = 0; i < n; i++) {
        struct coro_buf *b = coro_buf_get(u->sched, 0);

        if (!b)
            break;
        u->bufs[u->nbufs].b = b;
        buf_recycle(u, u->nbufs++);
    }
    return i;
}

/* ---------------------------------------------------------------- connections */

static void conn_progress(struct uconn *c);

static void recv_arm(struct uconn *c)
{
    struct io_uring_sqe *sqe = sqe_get(c->u);

    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    sqe_data(sqe, c, OP_RECV);
    c->recv_armed = 1;
    c->cancel_sent = 0;
}

/* Sends what is left of the queue's head. */
static void send_head(struct uconn *c)
{
    struct coro_buf *b = c->u->bufs[c->qhead].b;
    struct io_uring_sqe *sqe = sqe_get(c->u);

    io_uring_prep_send(sqe, c->fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
    sqe_data(sqe, c, OP_SEND);
    c->sending = 1;
}

/* Removes the queue's head and gives its buffer back to the kernel. */
static void queue_pop(struct uconn *c)
{
    uint32_t bid = c->qhead;

    c->qhead = c->u->bufs[bid].next;
    if (c->qhead == NO_BID)
        c->qtail = NO_BID;
    c->nqueued--;
    buf_recycle(c->u, bid);
}

static void queue_push(struct uconn *c, uint32_t bid)
{
    c->u->bufs[bid].next = NO_BID;
    if (c->qtail == NO_BID)
        c->qhead = bid;
    else
        c->u->bufs[c->qtail].next = bid;
    c->qtail = bid;
    c->nqueued++;
}

/* Ends <c>: queued echo is dropped, what is in the kernel cancelled; conn_progress() closes
 * it once their completions came. Idempotent. */
static void conn_end(struct uconn *c, int failed)
{
    struct io_uring_sqe *sqe;

    if (c->closing)
        return;
    c->closing = 1;
    c->failed = failed;
    while (c->qhead != NO_BID && !(c->sending && c->nqueued == 1)) {
        if (c->sending) {        /* keep the head: the kernel is sending from it */
            uint32_t bid = c->u->bufs[c->qhead].next;

            c->u->bufs[c->qhead].next = c->u->bufs[bid].next;
            if (c->qtail == bid)
                c->qtail = c->qhead;
            c->nqueued--;
            buf_recycle(c->u, bid);
        } else {
            queue_pop(c);
        }
    }
    if (c->recv_armed || c->sending) {
        sqe = sqe_get(c->u);
        io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
        sqe_data(sqe, NULL, OP_IGNORE);
    }
    conn_progress(c);
}

/* Takes the next step <c>'s state allows: send the queue's head, re-arm or pause its
 * receive, close. Called after every completion of <c>. */
static void conn_progress(struct uconn *c)
{
    struct lg_uring *u = c->u;
    struct io_uring_sqe *sqe;

    if (c->closing) {
        if (!c->recv_armed && !c->sending && !c->close_sent) {
            sqe = sqe_get(u);
            io_uring_prep_close(sqe, c->fd);
            sqe_data(sqe, c, OP_CLOSE);
            c->close_sent = 1;
        }
        return;
    }
    if (!c->sending && c->qhead != NO_BID)
        send_head(c);
    if (c->eof) {
        if (!c->sending)         /* all echoed: our FIN goes with the close */
            conn_end(c, 0);
        return;
    }
    if (c->nqueued > MAX_QUEUED && !c->paused) {
        c->paused = 1;
        u->stats->paused++;
    }
    if (c->paused) {
        if (c->recv_armed && !c->cancel_sent) {
            sqe = sqe_get(u);
            io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)c | OP_RECV, 0);
            sqe_data(sqe, NULL, OP_IGNORE);
            c->cancel_sent = 1;
        }
        if (c->nqueued > RESUME_AT)
            return;
        c->paused = 0;
    }
    if (!c->recv_armed && !c->waiting)
        recv_arm(c);
}

static void conn_free(struct uconn *c)
{
    struct lg_uring *u = c->u;

    if (c->prev)
        c->prev->next = c->next;
    else
        u->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->failed)
        u->stats->errors++;
    free(c);
}

/* The receive ran out of buffers: more from the pool while the ring may grow, else wait on
 * u->waiting until sends give some back (flush() re-arms the waiters). */
static void recv_nobufs(struct uconn *c)
{
    struct lg_uring *u = c->u;

    u->stats->nobufs++;
    if (buf_grow(u, u->nbufs) > 0)
        return;                  /* conn_progress() re-arms at once */
    c->waiting = 1;
    c->wait_next = u->waiting;
    u->waiting = c;
}

static void on_recv(struct uconn *c, const struct io_uring_cqe *cqe)
{
    uint32_t bid;

    if (!(cqe->flags & IORING_CQE_F_MORE))
        c->recv_armed = 0;       /* the kernel ended the multishot: re-armed if still wanted */
    if (cqe->res > 0 && (cqe->flags & IORING_CQE_F_BUFFER)) {
        struct coro_buf *b;

        bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        b = c->u->bufs[bid].b;
        if (c->closing) {
            buf_recycle(c->u, bid);
        } else {
            b->len = (uint32_t)cqe->res;
            b->off = 0;
            c->u->stats->bytes_in += (uint64_t)cqe->res;
            queue_push(c, bid);
        }
    } else if (cqe->res == 0) {
        c->eof = 1;
    } else if (cqe->res == -ENOBUFS) {
        if (!c->closing)
            recv_nobufs(c);
    } else if (cqe->res == -ECANCELED) {
        /* our cancel: the pause or the end */
    } else if (cqe->res < 0) {
        conn_end(c, 1);
    }
    conn_progress(c);
}

static void on_send(struct uconn *c, const struct io_uring_cqe *cqe)
{
    struct coro_buf *b = c->u->bufs[c->qhead].b;

    c->sending = 0;
    if (cqe->res > 0) {
        b->off += (uint32_t)cqe->res;
        c->u->stats->bytes_out += (uint64_t)cqe->res;
        if (b->off < b->len && !c->closing) {
            send_head(c);        /* a short send: the rest before anything else */
            return;
        }
    } else if (!c->closing) {
        /* The peer is gone (0 would be a send that cannot progress). conn_end() drops the
         * whole queue, the head with it, since nothing is in flight from it any more. */
        conn_end(c, cqe->res != -ECANCELED);
        return;
    }
    queue_pop(c);
    conn_progress(c);
}

/* Takes the accepted socket <fd>: a connection with its receive armed. */
static void conn_new(struct lg_uring *u, int fd)
{
    struct uconn *c = calloc(1, sizeof(*c));
    int one = 1;

    if (!c) {
        close(fd);
        u->stats->accept_errors++;
        return;
    }
    /* Each echo leaves at once, not after the peer's ACK of the previous one. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->u = u;
    c->fd = fd;
    c->qhead = c->qtail = NO_BID;
    c->next = u->conns;
    if (u->conns)
        u->conns->prev = c;
    u->conns = c;
    u->stats->conns++;
    recv_arm(c);
}

/* ---------------------------------------------------------------- accepting */

static void accept_arm(struct lg_uring *u)
{
    struct io_uring_sqe *sqe = sqe_get(u);

    io_uring_prep_multishot_accept(sqe, u->lfd, NULL, NULL, SOCK_CLOEXEC);
    sqe_data(sqe, u, OP_ACCEPT);
    u->accept_armed = 1;
}

static void flush(struct lg_uring *u);

static void on_pause_end(uv_timer_t *t)
{
    struct lg_uring *u = t->data;

    if (!u->stopping && !u->accept_armed) {
        accept_arm(u);
        flush(u);
    }
}

static void on_accept(struct lg_uring *u, const struct io_uring_cqe *cqe)
{
    int res = cqe->res;

    if (res >= 0) {
        if (u->stopping)
            close(res);
        else
            conn_new(u, res);
    } else if (res == -EMFILE || res == -ENFILE) {
        u->stats->emfile++;
    } else if (res != -ECANCELED && res != -ECONNABORTED && res != -EINTR) {
        u->stats->accept_errors++;
    }
    if (cqe->flags & IORING_CQE_F_MORE)
        return;
    u->accept_armed = 0;
    if (u->stopping)
        return;
    /* Out of descriptors or memory: let the backlog wait rather than spin on the error. */
    if (res == -EMFILE || res == -ENFILE || res == -ENOMEM || res == -ENOBUFS)
        uv_timer_start(&u->pause, on_pause_end, ACCEPT_PAUSE_MS, 0);
    else
        accept_arm(u);
}

/* ---------------------------------------------------------------- the loop's side */

/* Publishes the buffers given back, re-arms the receives that waited for them, submits
 * everything prepared since the last flush in one io_uring_enter(), and once stopping has
 * nothing left in flight, stops watching the ring so that the loop can run out. */
static void flush(struct lg_uring *u)
{
    struct uconn *c;
    int err;

    if (u->br_added && u->waiting) {
        while ((c = u->waiting) != NULL) {
            u->waiting = c->wait_next;
            c->wait_next = NULL;
            c->waiting = 0;
            conn_progress(c);
        }
    }
    buf_publish(u);
    if (io_uring_sq_ready(&u->ring)) {
        err = io_uring_submit(&u->ring);
        u->stats->submits++;
        if (err < 0)
            lg_serve_say("io_uring_submit(): %s", strerror(-err));
    }
    if (u->stopping && !u->accept_armed && !u->conns) {
        uv_poll_stop(&u->poll);
        uv_timer_stop(&u->pause);
    }
}

static void dispatch(struct lg_uring *u, const struct io_uring_cqe *cqe)
{
    void *p = (void *)(uintptr_t)(cqe->user_data & ~(uint64_t)OP_MASK);

    switch (cqe->user_data & OP_MASK) {
    case OP_ACCEPT:
        on_accept(u, cqe);
        break;
    case OP_RECV:
        on_recv(p, cqe);
        break;
    case OP_SEND:
        on_send(p, cqe);
        break;
    case OP_CLOSE:
        conn_free(p);
        break;
    default:
        break;
    }
}

static void on_ring(uv_poll_t *h, int status, int events)
{
    struct lg_uring *u = h->data;
    struct io_uring_cqe *cqe;
    unsigned head, seen, done = 0;

    (void)status;
    (void)events;
    u->stats->wakeups++;
    /* Sends on a socket with room complete during the submit itself: their completions
     * are handled in the same wakeup rather than after another trip through epoll_wait. */
    do {
        seen = 0;
        io_uring_for_each_cqe(&u->ring, head, cqe) {
            dispatch(u, cqe);
            if (++seen + done >= CQE_BUDGET)
                break;
        }
        io_uring_cq_advance(&u->ring, seen);
        done += seen;
        /* Completions that did not fit the CQ wait in the kernel's overflow list until an
         * enter flushes them; they then make the fd readable again. */
        if (io_uring_cq_has_overflow(&u->ring))
            io_uring_get_events(&u->ring);
        flush(u);
    } while (seen && done < CQE_BUDGET && io_uring_cq_ready(&u->ring));
}

/* ---------------------------------------------------------------- life */

static void on_handle_closed(uv_handle_t *h)
{
    struct lg_uring *u = h->data;

    if (--u->handles == 0)
        free(u);
}

int lg_uring_start(uv_loop_t *loop, struct coro_sched *sched, int lfd,
                   struct lg_uring_stats *stats, struct lg_uring **out, const char **op)
{
    struct io_uring_params params;
    struct io_uring_buf_reg reg;
    struct lg_uring *u = NULL;
    int err;

    *out = NULL;
    *op = "calloc()";
    u = calloc(1, sizeof(*u));
    if (!u)
        return -ENOMEM;
    u->sched = sched;
    u->stats = stats;
    u->lfd = lfd;
    *op = "malloc()";
    u->bufs = calloc(BUF_RING_SIZE, sizeof(*u->bufs));
    if (!u->bufs)
        goto out_free;
    memset(&params, 0, sizeof(params));
    params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
    params.cq_entries = RING_CQES;
    *op = "io_uring_queue_init()";
    err = io_uring_queue_init_params(RING_SQES, &u->ring, &params);
    if (err < 0)
        goto out_err;
    u->ring_up = 1;
    *op = "io_uring features";
    err = -EOPNOTSUPP;
    if (!(params.features & IORING_FEAT_NODROP))
        goto out_err;
    *op = "posix_memalign()";
    err = -posix_memalign((void **)&u->br, (size_t)sysconf(_SC_PAGESIZE),
                          BUF_RING_SIZE * sizeof(struct io_uring_buf));
    if (err < 0) {
        u->br = NULL;
        goto out_err;
    }
    io_uring_buf_ring_init(u->br);
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (uint64_t)(uintptr_t)u->br;
    reg.ring_entries = BUF_RING_SIZE;
    reg.bgid = BUF_GROUP;
    *op = "io_uring_register_buf_ring()";
    err = io_uring_register_buf_ring(&u->ring, &reg, 0);
    if (err < 0)
        goto out_err;
    *op = "coro_buf_get()";
    err = -ENOMEM;
    if (buf_grow(u, BUF_START) == 0)
        goto out_err;
    buf_publish(u);
    *op = "uv_poll_init()";
    err = uv_poll_init(loop, &u->poll, u->ring.ring_fd);
    if (err < 0)
        goto out_err;
    u->poll.data = u;
    u->handles++;
    uv_timer_init(loop, &u->pause);
    u->pause.data = u;
    u->handles++;
    *op = "uv_poll_start()";
    err = uv_poll_start(&u->poll, UV_READABLE, on_ring);
    if (err < 0) {
        lg_uring_close(u);       /* frees <u> in the close callbacks */
        return err;
    }
    accept_arm(u);
    flush(u);
    *out = u;
    return 0;

out_err:
    u->handles = 0;
    lg_uring_close(u);           /* no handle yet: frees <u> at once */
    return err;
out_free:
    free(u);
    return -ENOMEM;
}

void lg_uring_stop(struct lg_uring *u)
{
    struct io_uring_sqe *sqe;
    struct uconn *c;

    if (!u || u->stopping)
        return;
    u->stopping = 1;
    uv_timer_stop(&u->pause);
    if (u->accept_armed) {
        sqe = sqe_get(u);
        io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)u | OP_ACCEPT, 0);
        sqe_data(sqe, NULL, OP_IGNORE);
    }
    for (c = u->conns; c; c = c->next)
        conn_end(c, 0);
    flush(u);
}

void lg_uring_close(struct lg_uring *u)
{
    struct uconn *c;
    uint32_t i;

    if (!u)
        return;
    /* The ring first: its exit cancels and waits for whatever the kernel still holds, so
     * that no buffer given back below is written to afterwards. */
    if (u->ring_up) {
        io_uring_queue_exit(&u->ring);
        u->ring_up = 0;
    }
    while ((c = u->conns) != NULL) {   /* only if the loop ended before the stop did */
        u->conns = c->next;
        close(c->fd);
        free(c);
    }
    for (i = 0; i < u->nbufs; i++)
        coro_buf_put(u->sched, u->bufs[i].b);
    u->nbufs = 0;
    free(u->bufs);
    u->bufs = NULL;
    free(u->br);
    u->br = NULL;
    if (u->handles == 0) {
        free(u);
        return;
    }
    uv_close((uv_handle_t *)&u->poll, on_handle_closed);
    uv_close((uv_handle_t *)&u->pause, on_handle_closed);
}
