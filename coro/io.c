/* coro/io.c — TCP streams for coroutines on libuv (see io.h for the model).
 *
 * A stream is a socket and a uv_poll_t: libuv tells us when the socket is readable or
 * writable, and we read, write, connect and shut down ourselves. That keeps a stream at
 * 280 bytes instead of a uv_tcp_t's 248 plus our own fields, and it puts every queued
 * byte in our own list of pool buffers (docs/coro-streams.md has the measurements).
 * The poll watches only what is wanted now (reading while under the read-ahead, writing
 * while bytes are queued or a connect is in progress), so a parked idle stream costs no
 * wakeups; libuv's uv_poll_start() re-registers the socket, so we change the watched set
 * only when it really changes (never in the steady state of a relay).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "coro-int.h"
#include "io.h"

enum {
    S_READING   = 1 << 0,   /* we want to read: the poll watches readability */
    S_CLOSING   = 1 << 1,
    S_CLOSED    = 1 << 2,
    S_SHUT      = 1 << 3,   /* a shutdown of our sending side was requested */
    S_SHUT_DONE = 1 << 4,   /* ... and has happened (or failed) */
    S_RWAIT     = 1 << 5,   /* <reader> is parked inside coro_read() */
    S_WWAIT     = 1 << 6,   /* <writer> is parked inside wait_queue() or coro_connect() */
    S_POLL      = 1 << 7,   /* the poll handle is initialised (it needs closing) */
    S_CONNECTING = 1 << 8,  /* a non-blocking connect() is in progress */
};

/* The wake result that only the close callback uses (parks otherwise return <= 0). */
#define CLOSED_MARK 1
/* The wake result that tells coro_read()/wait_queue() their stream is being closed. */
#define GONE_MARK 2

/* Read ahead at most this many chunks before we stop reading from the socket. */
#define READ_AHEAD_CHUNKS 2
/* Buffers handed to one sendmsg() when the queue holds several. */
#define WRITE_IOV_MAX 16

static const struct coro_stream_names default_names = { "read", "write" };

static inline struct coro_stream *stream_of(void *handle)
{
    return (struct coro_stream *)handle;   /* poll is the first member */
}

static inline uint64_t now_ms(const struct coro_stream *st)
{
    return uv_now(st->sched->loop);
}

/* Remaining time of a wait that started at <start>, for park after a spurious wake. */
static int64_t remaining(const struct coro_stream *st, uint64_t start, int64_t timeout_ms)
{
    uint64_t el;

    if (timeout_ms < 0)
        return CORO_FOREVER;
    el = now_ms(st) - start;
    return el >= (uint64_t)timeout_ms ? 0 : timeout_ms - (int64_t)el;
}

static void wake(struct coro *co, int result)
{
    if (co)
        coro_wake(co, result);
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Makes the poll watch what the stream wants now: readability while reading, writability
 * while bytes are queued or a connect is in progress. */
static void update_poll(struct coro_stream *st)
{
    int want = 0, err;

    if (!(st->flags & S_POLL) || (st->flags & S_CLOSING))
        return;
    if (st->flags & S_READING)
        want |= UV_READABLE;
    if (st->whead || (st->flags & S_CONNECTING))
        want |= UV_WRITABLE;
    if (want == st->events)
        return;
    err = want ? uv_poll_start(&st->poll, want, on_poll) : uv_poll_stop(&st->poll);
    if (err < 0) {
        /* Not expected (only UV_EEXIST for a socket another handle watches): fail both ways
         * rather than wait for events that will not come. */
        if (!st->rerr)
            st->rerr = err;
        if (!st->werr)
            st->werr = err;
        st->flags &= ~S_READING;
        wake(st->reader, 0);
        wake(st->writer, 0);
        return;
    }
    st->events = (uint8_t)want;
}

int coro_stream_init(struct coro_sched *s, struct coro_stream *st)
{
    memset(st, 0, sizeof(*st));
    st->sched = s;
    st->fd = -1;
    st->wq_high = CORO_WQ_HIGH_DEFAULT;
    st->names = &default_names;
    return 0;
}

int coro_stream_open(struct coro_stream *st, int fd)
{
    int err;

    if (st->flags & (S_POLL | S_CLOSING)) {
        close(fd);
        return UV_EBUSY;
    }
    /* Sets O_NONBLOCK; fails with UV_EEXIST when the loop watches fd already. */
    err = uv_poll_init_socket(st->sched->loop, &st->poll, fd);
    if (err < 0) {
        close(fd);
        return err;
    }
    st->fd = fd;
    st->flags |= S_POLL;
    return 0;
}

int coro_stream_fd(const struct coro_stream *st)
{
    return st->fd;
}

int coro_stream_nodelay(struct coro_stream *st, int on)
{
    if (st->fd < 0)
        return UV_EBADF;
    return setsockopt(st->fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) < 0 ? -errno : 0;
}

/* ---------------------------------------------------------------- reading */

static int read_start(struct coro_stream *st)
{
    if (st->flags & (S_READING | S_CLOSING) || st->rerr)
        return 0;
    if (!(st->flags & S_POLL)) {
        st->rerr = UV_ENOTCONN;
        return st->rerr;
    }
    st->flags |= S_READING;
    update_poll(st);
    return st->rerr;
}

/* The socket is readable: reads chunks until it has no more, the read-ahead is full, or
 * EOF or an error ends reading. One chunk is the usual case: a short read means the
 * socket is drained (the poll is level-triggered, so anything left is reported again). */
static void do_read(struct coro_stream *st)
{
    struct coro_buf *b;
    ssize_t n;
    int got = 0;

    while (st->flags & S_READING) {
        b = coro_buf_get(st->sched, 0);
        if (!b) {
            st->rerr = UV_ENOBUFS;
            st->flags &= ~S_READING;
            got = 1;
            break;
        }
        do
            n = read(st->fd, b->data, b->cap);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
            b->len = (uint32_t)n;
            b->off = 0;
            b->next = NULL;
            if (st->rtail)
                st->rtail->next = b;
            else
                st->rhead = b;
            st->rtail = b;
            st->bytes_in += (uint64_t)n;
            got = 1;
            if (++st->nchunks >= READ_AHEAD_CHUNKS)
                st->flags &= ~S_READING;   /* the consumer is behind: let TCP push back */
            if ((size_t)n < b->cap)
                break;
            continue;
        }
        coro_buf_put(st->sched, b);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            break;
        st->rerr = n == 0 ? UV_EOF : -errno;
        st->flags &= ~S_READING;
        got = 1;
    }
    if (got)                               /* else a spurious wakeup: nothing new to tell */
        wake(st->reader, 0);
}

ssize_t coro_try_read(struct coro_stream *st, struct coro_buf **out)
{
    struct coro_buf *b = st->rhead;

    if (b) {
        st->rhead = b->next;
        if (!st->rhead)
            st->rtail = NULL;
        st->nchunks--;
        b->next = NULL;
        *out = b;
        if (st->nchunks < READ_AHEAD_CHUNKS)
            read_start(st);
        return (ssize_t)(b->len - b->off);
    }
    if (st->flags & S_CLOSING)
        return UV_ECANCELED;
    if (st->rerr)
        return st->rerr;
    read_start(st);
    return st->rerr ? st->rerr : UV_EAGAIN;
}

int coro_stream_readable(const struct coro_stream *st)
{
    return st->rhead != NULL || st->rerr != 0 || (st->flags & S_CLOSING);
}

void coro_stream_watch(struct coro_stream *st, struct coro *co)
{
    st->reader = co;
    st->writer = co;
    if (st->nchunks < READ_AHEAD_CHUNKS)
        read_start(st);
}

ssize_t coro_read(struct coro_stream *st, struct coro_buf **out, int64_t timeout_ms)
{
    uint64_t start = now_ms(st);
    ssize_t n;
    int err;

    for (;;) {
        n = coro_try_read(st, out);
        if (n != UV_EAGAIN)
            return n;
        struct coro *prev = st->reader;   /* a watcher set by coro_stream_watch stays */

        st->reader = coro_self();
        st->flags |= S_RWAIT;
        err = coro_park(st->names->read, remaining(st, start, timeout_ms));
        if (err == GONE_MARK)
            return UV_ECANCELED;   /* <st> may be freed already: see wake_closing() */
        st->flags &= ~S_RWAIT;
        st->reader = prev;
        if (err < 0)
            return err;
    }
}

/* ---------------------------------------------------------------- writing */

/* Drops the write queue (after an error or at close): its bytes will never be written. */
static void drop_queue(struct coro_stream *st)
{
    struct coro_buf *b;

    while ((b = st->whead) != NULL) {
        st->whead = b->next;
        coro_buf_put(st->sched, b);
    }
    st->wtail = NULL;
    st->wq_size = 0;
}

static void shutdown_now(struct coro_stream *st)
{
    st->flags |= S_SHUT_DONE;
    if (shutdown(st->fd, SHUT_WR) < 0 && !st->werr)
        st->werr = -errno;
}

/* Writes what the queue holds until the socket takes no more. Returns 0 or the error
 * (also kept in werr, with the queue dropped). */
static int write_queue(struct coro_stream *st)
{
    struct iovec iov[WRITE_IOV_MAX];
    struct msghdr msg = { .msg_iov = iov };
    struct coro_buf *b;
    size_t want, sent;
    ssize_t n;

    while (st->whead) {
        want = 0;
        msg.msg_iovlen = 0;
        for (b = st->whead; b && msg.msg_iovlen < WRITE_IOV_MAX; b = b->next) {
            iov[msg.msg_iovlen].iov_base = b->data + b->off;
            iov[msg.msg_iovlen].iov_len = b->len - b->off;
            want += b->len - b->off;
            msg.msg_iovlen++;
        }
        do
            n = sendmsg(st->fd, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            st->werr = -errno;
            drop_queue(st);
            return st->werr;
        }
        sent = (size_t)n;
        st->bytes_out += sent;
        st->wq_size -= (uint32_t)sent;
        while (n > 0) {
            b = st->whead;
            if ((size_t)n < b->len - b->off) {
                b->off += (uint32_t)n;
                break;
            }
            n -= b->len - b->off;
            st->whead = b->next;
            coro_buf_put(st->sched, b);
        }
        if (!st->whead)
            st->wtail = NULL;
        else if (sent < want)
            return 0;                      /* the socket is full: wait for writability */
    }
    if ((st->flags & (S_SHUT | S_SHUT_DONE)) == S_SHUT)
        shutdown_now(st);
    return 0;
}

static int wait_queue(struct coro_stream *st, size_t limit, int64_t timeout_ms)
{
    uint64_t start = now_ms(st);

    struct coro *prev = st->writer;
    int err;

    /* limit 0 = flush: also wait for a requested shutdown to have happened. */
    while (!st->werr && (st->wq_size > limit ||
                         (limit == 0 && (st->flags & (S_SHUT | S_SHUT_DONE)) == S_SHUT))) {
        st->writer = coro_self();
        st->flags |= S_WWAIT;
        err = coro_park(st->names->write, remaining(st, start, timeout_ms));
        if (err == GONE_MARK)
            return UV_ECANCELED;   /* <st> may be freed already: see wake_closing() */
        st->flags &= ~S_WWAIT;
        st->writer = prev;
        if (err < 0)
            return err;
    }
    return st->werr;
}

int coro_write(struct coro_stream *st, struct coro_buf *b, int64_t timeout_ms)
{
    int err = coro_write_nowait(st, b);

    if (err < 0)
        return err;
    return wait_queue(st, st->wq_high, timeout_ms);
}

int coro_write_nowait(struct coro_stream *st, struct coro_buf *b)
{
    ssize_t n;

    if (st->werr || (st->flags & (S_CLOSING | S_SHUT)) || !(st->flags & S_POLL)) {
        coro_buf_put(st->sched, b);
        return st->werr ? st->werr : (st->flags & S_POLL) ? UV_EPIPE : UV_ENOTCONN;
    }
    if (b->off >= b->len) {
        coro_buf_put(st->sched, b);
        return 0;
    }
    if (!st->whead && !(st->flags & S_CONNECTING)) {
        do
            n = send(st->fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
            st->bytes_out += (uint64_t)n;
            b->off += (uint32_t)n;
            if (b->off == b->len) {
                coro_buf_put(st->sched, b);
                return 0;
            }
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            st->werr = -errno;
            coro_buf_put(st->sched, b);
            return st->werr;
        }
    }
    b->next = NULL;
    if (st->wtail)
        st->wtail->next = b;
    else
        st->whead = b;
    st->wtail = b;
    st->wq_size += b->len - b->off;
    update_poll(st);
    return st->werr;
}

int coro_write_gather(struct coro_stream *st, struct coro_buf **pending, const void *data,
                      size_t len)
{
    struct coro_sched *s = st->sched;
    const char *src = data;
    size_t n;
    int err;

    while (len > 0) {
        if (*pending && (*pending)->len == (*pending)->cap) {
            err = coro_write_nowait(st, *pending);
            *pending = NULL;
            if (err < 0)
                return err;
        }
        if (!*pending) {
            *pending = coro_buf_get(s, len > s->buf_size ? len : 0);
            if (!*pending)
                return UV_ENOMEM;
        }
        n = (*pending)->cap - (*pending)->len;
        if (n > len)
            n = len;
        memcpy((*pending)->data + (*pending)->len, src, n);
        (*pending)->len += (uint32_t)n;
        src += n;
        len -= n;
    }
    return 0;
}

int coro_write_copy(struct coro_stream *st, const void *data, size_t len, int64_t timeout_ms)
{
    const char *p = data;
    int err;

    while (len > 0) {
        struct coro_buf *b = coro_buf_get(st->sched, 0);
        size_t n;

        if (!b)
            return UV_ENOMEM;
        n = len < b->cap ? len : b->cap;
        memcpy(b->data, p, n);
        b->len = (uint32_t)n;
        err = coro_write(st, b, timeout_ms);
        if (err < 0)
            return err;
        p += n;
        len -= n;
    }
    return 0;
}

int coro_flush(struct coro_stream *st, int64_t timeout_ms)
{
    return wait_queue(st, 0, timeout_ms);
}

size_t coro_stream_queued(const struct coro_stream *st)
{
    return st->wq_size;
}

int coro_shutdown(struct coro_stream *st)
{
    if (st->flags & (S_SHUT | S_CLOSING))
        return 0;
    if (!(st->flags & S_POLL))
        return UV_ENOTCONN;
    st->flags |= S_SHUT;
    if (!st->whead && !(st->flags & S_CONNECTING)) {
        shutdown_now(st);
        return st->werr == 0 || st->werr == UV_ENOTCONN ? 0 : st->werr;
    }
    return 0;          /* after the queued bytes (write_queue()) */
}

/* ---------------------------------------------------------------- connecting */

static void connect_done(struct coro_stream *st)
{
    int so_err = 0;
    socklen_t len = sizeof(so_err);

    if (getsockopt(st->fd, SOL_SOCKET, SO_ERROR, &so_err, &len) < 0)
        so_err = errno;
    if (so_err == EINPROGRESS || so_err == EALREADY)
        return;        /* not yet after all */
    st->flags &= ~S_CONNECTING;
    if (so_err)
        st->werr = -so_err;
    wake(st->writer, 0);
}

int coro_connect(struct coro_stream *st, const struct sockaddr *addr, int64_t timeout_ms)
{
    uint64_t start = now_ms(st);
    socklen_t alen = addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                                 : sizeof(struct sockaddr_in);
    struct coro *prev;
    int fd, r, err;

    if (st->flags & S_CLOSING)
        return UV_ECANCELED;
    if (!(st->flags & S_POLL)) {
        fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        err = coro_stream_open(st, fd);
        if (err < 0)
            return err;
    }
    do
        r = connect(st->fd, addr, alen);
    while (r < 0 && errno == EINTR);
    if (r == 0)
        return 0;
    if (errno != EINPROGRESS)
        return st->werr = -errno;
    st->flags |= S_CONNECTING;
    update_poll(st);
    prev = st->writer;
    while ((st->flags & S_CONNECTING) && !st->werr) {
        st->writer = coro_self();
        st->flags |= S_WWAIT;
        err = coro_park("connect", remaining(st, start, timeout_ms));
        if (err == GONE_MARK)
            return UV_ECANCELED;   /* <st> may be freed already: see wake_closing() */
        st->flags &= ~S_WWAIT;
        st->writer = prev;
        if (err < 0 && (st->flags & S_CONNECTING)) {
            st->flags &= ~S_CONNECTING;   /* unusable now: the caller closes it */
            st->werr = err;
            update_poll(st);
            return err;
        }
    }
    update_poll(st);
    if (!st->werr && st->whead)
        write_queue(st);
    return st->werr;
}

/* ---------------------------------------------------------------- events */

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct coro_stream *st = stream_of(h);

    if (status < 0) {
        /* libuv reports a socket error (EPOLLERR: a refused connect, a reset) as UV_EBADF
         * and stops watching: the socket's own error says what happened. */
        int so_err = 0;
        socklen_t len = sizeof(so_err);

        if (getsockopt(st->fd, SOL_SOCKET, SO_ERROR, &so_err, &len) == 0 && so_err)
            status = -so_err;
        st->events = 0;
        if (!st->rerr)
            st->rerr = status;
        if (!st->werr)
            st->werr = status;
        st->flags &= ~(S_READING | S_CONNECTING);
        drop_queue(st);
        wake(st->reader, 0);
        wake(st->writer, 0);
        return;
    }
    if (st->flags & S_CONNECTING) {
        connect_done(st);
        update_poll(st);
        return;        /* the connecting coroutine reads and writes after it resumes */
    }
    if ((events & UV_WRITABLE) && st->whead) {
        write_queue(st);
        if (st->writer && (st->werr || st->wq_size <= st->wq_high / 2 ||
                           (st->flags & S_SHUT_DONE)))
            coro_wake(st->writer, 0);
    }
    if (events & UV_READABLE)
        do_read(st);
    update_poll(st);
}

/* ---------------------------------------------------------------- closing */

static void finish_close(struct coro_stream *st);

static void on_stream_closed(uv_handle_t *h)
{
    finish_close(stream_of(h));
}

/* The end of a close: the handle is closed (or there never was one). */
static void finish_close(struct coro_stream *st)
{
    struct coro *closer = st->closer;
    uv_close_cb cb = st->on_closed;
    struct coro_buf *b;

    while ((b = st->rhead) != NULL) {
        st->rhead = b->next;
        coro_buf_put(st->sched, b);
    }
    st->rtail = NULL;
    st->nchunks = 0;
    st->flags |= S_CLOSED;
    st->closer = NULL;
    st->on_closed = NULL;
    /* Another stream the closer watches may have made it ready with another result: a
     * plain wake would then be lost (it would park again for good). */
    if (closer && closer->state == CORO_READY)
        closer->wake_result = CLOSED_MARK;
    else if (closer)
        coro_wake(closer, CLOSED_MARK);
    if (cb)
        cb((uv_handle_t *)&st->poll);      /* last: it may free the stream */
}

/* Wakes <co>, which waits on a stream being closed. When it is parked inside coro_read() or
 * wait_queue() (<inside>), it must return without touching the stream again: the close
 * callback, which may free the stream, can run before <co> does (when the closer ran in
 * the check phase). If something else made <co> ready already, its pending result is
 * replaced for the same reason. Other waiters (watchers) get UV_ECANCELED as before. */
static void wake_closing(struct coro *co, int inside)
{
    if (!inside)
        coro_wake(co, UV_ECANCELED);
    else if (co->state == CORO_PARKED)
        coro_wake(co, GONE_MARK);
    else
        co->wake_result = GONE_MARK;
}

void coro_stream_close(struct coro_stream *st, uv_close_cb on_closed)
{
    struct coro *self = coro_self();

    if (!(st->flags & S_CLOSING)) {
        st->flags |= S_CLOSING;
        st->flags &= ~(S_READING | S_CONNECTING);
        st->on_closed = on_closed;
        drop_queue(st);
        if (!st->werr)
            st->werr = UV_ECANCELED;
        /* Whoever waits on this stream learns now rather than at its timeout. */
        if (st->reader && st->reader != self)
            wake_closing(st->reader, st->flags & S_RWAIT);
        if (st->writer && st->writer != self)
            wake_closing(st->writer, st->flags & S_WWAIT);
        if (!(st->flags & S_POLL)) {
            finish_close(st);       /* never had a socket: nothing to wait for */
            return;
        }
        /* Stops the poll (the socket leaves the epoll set now), so the socket can close
         * at once: the peer sees the close without waiting for the loop's close phase. */
        uv_close((uv_handle_t *)&st->poll, on_stream_closed);
        close(st->fd);
        st->fd = -1;
    }
    if (!self || self->sched != st->sched || st->closer || (st->flags & S_CLOSED))
        return;
    st->closer = self;
    /* Only the close callback wakes us with CLOSED_MARK: other streams this coroutine
     * watches may wake it meanwhile, and <st> may be freed by <on_closed> by then. */
    while (coro_park_uninterruptible("close", CORO_FOREVER) != CLOSED_MARK)
        ;
}

int coro_stream_is_closing(const struct coro_stream *st)
{
    return (st->flags & S_CLOSING) != 0;
}
