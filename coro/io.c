/* coro/io.c — TCP streams for coroutines on libuv (see io.h for the model).
 *
 * A stream is a socket in its scheduler's epoll set, registered once, edge-triggered, for
 * input, output and the peer's shutdown; the loop watches that set through one uv_poll_t
 * (an epoll descriptor is itself pollable) and io.c reads, writes, connects and shuts down
 * itself. Nothing is registered or changed per read, per write or per close (closing the
 * socket takes it out of the set): one epoll_ctl() per connection side in all, where a
 * uv_tcp_t costs about four and a uv_poll_t six (uv_poll_start() deletes and re-adds the
 * descriptor at every change). And a stream holds no libuv handle: 112 bytes (104 and
 * the filter pointer).
 * docs/coro-streams.md has the measurements.
 *
 * Edge-triggered means an event says only that something changed: a stream remembers that
 * its socket may have more to read (S_RREADY) until a read says EAGAIN, and reads again
 * when its consumer takes a chunk; writes go straight to the socket until it says EAGAIN,
 * then wait for the next output event.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "coro-int.h"
#include "io.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24      /* linux/in.h; older libc headers lack it */
#endif

enum {
    S_READING   = 1 << 0,   /* the consumer wants data: read when the socket has some */
    S_CLOSING   = 1 << 1,
    S_RREADY    = 1 << 2,   /* the socket may have bytes (or EOF) we have not read yet */
    S_SHUT      = 1 << 3,   /* a shutdown of our sending side was requested */
    S_SHUT_DONE = 1 << 4,   /* ... and has happened (or failed) */
    S_RWAIT     = 1 << 5,   /* <reader> is parked inside coro_read() */
    S_WWAIT     = 1 << 6,   /* <writer> is parked inside wait_queue() or coro_connect() */
    S_OPEN      = 1 << 7,   /* has a socket, registered in the scheduler's epoll set */
    S_CONNECTING = 1 << 8,  /* a non-blocking connect() is in progress */
    S_RDHUP     = 1 << 9,   /* the peer shut down (or an error): an EOF waits behind data */
};

/* The wake result that tells coro_read()/wait_queue() their stream is being closed. */
#define GONE_MARK 2

/* Read ahead at most this many chunks before we stop reading from the socket. */
#define READ_AHEAD_CHUNKS 2
/* Buffers handed to one sendmsg() when the queue holds several. */
#define WRITE_IOV_MAX 16
/* Events taken from the epoll set per epoll_wait(). */
#define EVENTS_MAX 128

static const struct coro_stream_names default_names = { "read", "write" };

/* read(2), sendmsg(2), close(2) and epoll_wait(2) as bare system calls, not libc's
 * wrappers: those are cancellation points, which switch asynchronous cancellation on and
 * off around every call, and no thread here is ever cancelled; read and sendmsg alone
 * cost 6% of the instructions per relayed message (make bench-insn). Under the sanitizers
 * the wrappers stay, so that their interceptors see the buffers and descriptors. */
#ifdef CORO_ASAN
#define sock_read    read
#define sock_sendmsg sendmsg
#define sock_close   close
#define set_wait(epfd, ev, n) epoll_wait(epfd, ev, n, 0)
#else
static inline ssize_t sock_read(int fd, void *buf, size_t len)
{
    return syscall(SYS_read, fd, buf, len);
}

static inline ssize_t sock_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    return syscall(SYS_sendmsg, fd, msg, flags);
}

static inline int sock_close(int fd)
{
    return (int)syscall(SYS_close, fd);
}

/* The events of the set <epfd> ready now, without waiting (epoll_pwait: every
 * architecture has it, not all have epoll_wait). */
static inline int set_wait(int epfd, struct epoll_event *ev, int n)
{
    return (int)syscall(SYS_epoll_pwait, epfd, ev, n, 0, NULL, (size_t)8);
}
#endif

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

/* A stream's chains of buffers (received chunks, the write queue): <b> goes last. */
static void chain_append(struct coro_buf **head, struct coro_buf **tail, struct coro_buf *b)
{
    b->next = NULL;
    if (*tail)
        (*tail)->next = b;
    else
        *head = b;
    *tail = b;
}

/* Every buffer of the chain back to the pool. */
static void chain_drop(struct coro_sched *s, struct coro_buf **head, struct coro_buf **tail)
{
    struct coro_buf *b;

    while ((b = *head) != NULL) {
        *head = b->next;
        coro_buf_put(s, b);
    }
    *tail = NULL;
}

/* Parks the calling coroutine as the stream's <*who> (its reader or writer), with <flag>
 * (S_RWAIT or S_WWAIT) set while it waits, and puts back the one it replaced (a watcher
 * set by coro_stream_watch() stays). Returns the park's result; GONE_MARK when the stream
 * was closed meanwhile: then <st> may be freed already and must not be touched (see
 * wake_closing()). */
static int park_as(struct coro_stream *st, struct coro **who, uint16_t flag, const char *why,
                   int64_t timeout_ms)
{
    struct coro *prev = *who;
    int err;

    *who = coro_self();
    st->flags |= flag;
    err = coro_park(why, timeout_ms);
    if (err == GONE_MARK)
        return err;
    st->flags &= ~flag;
    *who = prev;
    return err;
}

/* ---------------------------------------------------------------- the epoll set */

static void stream_event(struct coro_stream *st, uint32_t ev);

/* The loop says the set has events: hands each to its stream. Streams are closed (and
 * freed) only by coroutines and other callbacks, never while this runs, so every stream
 * in a batch is alive; a closed socket left the set, with any event it had pending. */
static void on_epoll(uv_poll_t *h, int status, int events)
{
    struct coro_sched *s = h->data;
    struct epoll_event ev[EVENTS_MAX];
    int n, i;

    (void)status;
    (void)events;
    do {
        do
            n = set_wait(s->io_epfd, ev, EVENTS_MAX);
        while (n < 0 && errno == EINTR);
        for (i = 0; i < n; i++)
            stream_event(ev[i].data.ptr, ev[i].events);
    } while (n == EVENTS_MAX);
}

static void io_sched_free(struct coro_sched *s);

static int sched_io_init(struct coro_sched *s)
{
    int err;

    if (s->io_epfd >= 0)
        return 0;
    if (s->io_err)
        return s->io_err;
    s->io_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (s->io_epfd < 0) {
        s->io_epfd = -1;
        return -errno;          /* out of descriptors, say: a later stream tries again */
    }
    s->io_free = io_sched_free;
    err = uv_poll_init(s->loop, &s->io_poll, s->io_epfd);
    if (err < 0) {
        close(s->io_epfd);
        s->io_epfd = -1;
        return err;
    }
    s->io_poll.data = s;
    s->handles_open++;
    err = uv_poll_start(&s->io_poll, UV_READABLE, on_epoll);
    if (err < 0) {
        /* The handle is the loop's now: close it, and since its storage cannot be
         * initialised again before that completes, no stream of this scheduler ever
         * works. */
        uv_close((uv_handle_t *)&s->io_poll, coro__sched_handle_closed);
        close(s->io_epfd);
        s->io_epfd = -1;
        s->io_err = err;
        return err;
    }
    uv_unref((uv_handle_t *)&s->io_poll);   /* referenced only while a stream waits */
    return 0;
}

/* Closes the scheduler's epoll set and its poll handle (the scheduler's teardown calls
 * it through s->io_free); the handle's close is counted in handles_open. */
static void io_sched_free(struct coro_sched *s)
{
    if (s->io_epfd < 0)
        return;
    uv_close((uv_handle_t *)&s->io_poll, coro__sched_handle_closed);
    close(s->io_epfd);
    s->io_epfd = -1;
}

/* Keeps the loop alive while the stream waits for an event: reading, writing a queue or
 * connecting (what a libuv handle of its own would have counted as active). */
static void update_waiting(struct coro_stream *st)
{
    struct coro_sched *s = st->sched;
    int want = (st->flags & S_OPEN) && !(st->flags & S_CLOSING) &&
               ((st->flags & (S_READING | S_CONNECTING)) || st->whead);

    if (want == st->waiting)
        return;
    st->waiting = (uint8_t)want;
    if (want && s->io_waiting++ == 0)
        uv_ref((uv_handle_t *)&s->io_poll);
    else if (!want && --s->io_waiting == 0)
        uv_unref((uv_handle_t *)&s->io_poll);
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

/* coro_stream_open(); <ours>: a socket coro_connect_from() just made (no bytes can have
 * arrived yet). */
static int stream_open(struct coro_stream *st, int fd, int ours)
{
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET };
    int err;

    if (st->flags & (S_OPEN | S_CLOSING)) {
        close(fd);
        return UV_EBUSY;
    }
    err = sched_io_init(st->sched);
    if (err < 0) {
        close(fd);
        return err;
    }
    ev.data.ptr = st;
    if (epoll_ctl(st->sched->io_epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    st->fd = fd;
    st->flags |= S_OPEN;
    /* A socket given to us may hold bytes already (a client that sent its request with
     * its connect): the first read tries. Ours has none; if some come before the first
     * read, the registration's own event says so. */
    if (!ours)
        st->flags |= S_RREADY;
    return 0;
}

int coro_stream_open(struct coro_stream *st, int fd)
{
    return stream_open(st, fd, 0);
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

/* Reads chunks while the consumer wants them and the socket may have more: until EAGAIN
 * (which ends S_RREADY: the next input event sets it again), the read-ahead is full, or
 * EOF or an error ends reading. Wakes the reader when it got something to tell. */
static void do_read(struct coro_stream *st)
{
    struct coro_buf *b;
    ssize_t n;
    int got = 0;

    while ((st->flags & (S_READING | S_RREADY)) == (S_READING | S_RREADY)) {
        if (st->nchunks >= READ_AHEAD_CHUNKS) {
            st->flags &= ~S_READING;   /* the consumer is behind: let TCP push back */
            break;
        }
        b = coro_buf_get(st->sched, 0);
        if (!b) {
            st->rerr = UV_ENOBUFS;
            st->flags &= ~S_READING;
            got = 1;
            break;
        }
        do
            n = sock_read(st->fd, b->data, b->cap);
        while (n < 0 && errno == EINTR);
        if (n > 0) {
            b->len = (uint32_t)n;
            b->off = 0;
            chain_append(&st->rhead, &st->rtail, b);
            st->bytes_in += (uint64_t)n;
            st->nchunks++;
            got = 1;
            /* A short read emptied the socket: new bytes will raise a new event. Unless
             * the peer shut down: then its EOF is still to be read. */
            if ((size_t)n < b->cap && !(st->flags & S_RDHUP))
                st->flags &= ~S_RREADY;
            continue;
        }
        coro_buf_put(st->sched, b);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            st->flags &= ~S_RREADY;
            break;
        }
        st->rerr = n == 0 ? UV_EOF : -errno;
        st->flags &= ~(S_READING | S_RREADY);
        got = 1;
    }
    update_waiting(st);
    if (got)
        wake(st->reader, 0);
}

static int read_start(struct coro_stream *st)
{
    if (st->flags & (S_READING | S_CLOSING) || st->rerr)
        return 0;
    if (!(st->flags & S_OPEN)) {
        st->rerr = UV_ENOTCONN;
        return st->rerr;
    }
    st->flags |= S_READING;
    if (st->flags & S_RREADY)
        do_read(st);                   /* no event will come for what is there already */
    else
        update_waiting(st);
    return st->rerr;
}

/* coro_try_read() of the raw bytes: the next received chunk. */
static inline ssize_t raw_read(struct coro_stream *st, struct coro_buf **out)
{
    struct coro_buf *b = st->rhead;

    if (!b) {
        if (st->flags & S_CLOSING)
            return UV_ECANCELED;
        if (st->rerr)
            return st->rerr;
        read_start(st);                /* may read at once what the socket holds */
        b = st->rhead;
        if (!b)
            return st->rerr ? st->rerr : UV_EAGAIN;
    }
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

/* Reading has ended with <err> (the filter's verdict): what was received goes, and the
 * socket is not read any more. */
static void read_failed(struct coro_stream *st, int err)
{
    st->rerr = err;
    st->flags &= ~S_READING;
    chain_drop(st->sched, &st->rhead, &st->rtail);
    st->nchunks = 0;
    update_waiting(st);
}

/* coro_try_read() through the filter: raw chunks are decoded until one yields bytes. */
static ssize_t filtered_read(struct coro_stream *st, struct coro_buf **out)
{
    struct coro_filter *f = st->filter;
    struct coro_buf *b;
    ssize_t n;

    for (;;) {
        b = f->ready;
        if (b) {
            f->ready = b->next;
            b->next = NULL;
            *out = b;
            return (ssize_t)(b->len - b->off);
        }
        if (f->end) {
            read_failed(st, f->end);
            return f->end;
        }
        n = raw_read(st, &b);
        if (n < 0) {
            if (n != UV_EAGAIN && n != UV_ECANCELED && f->ops->end) {
                int e = f->ops->end(f, (int)n);

                if (e != n) {
                    read_failed(st, e);     /* every later read says so too */
                    n = e;
                }
            }
            return n;
        }
        n = f->ops->decode(f, st, b, out);
        if (n > 0)
            return n;
        if (n < 0) {
            chain_drop(st->sched, &f->ready, &b);
            read_failed(st, (int)n);
            return n;
        }
    }
}

ssize_t coro_try_read(struct coro_stream *st, struct coro_buf **out)
{
    if (st->filter)
        return filtered_read(st, out);
    return raw_read(st, out);
}

int coro_stream_readable(const struct coro_stream *st)
{
    return st->rhead != NULL || st->rerr != 0 || (st->flags & S_CLOSING) ||
           (st->filter && (st->filter->ready || st->filter->end));
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
        err = park_as(st, &st->reader, S_RWAIT, st->names->read,
                      remaining(st, start, timeout_ms));
        if (err == GONE_MARK)
            return UV_ECANCELED;
        if (err < 0)
            return err;
    }
}

/* ---------------------------------------------------------------- writing */

/* Drops the write queue (after an error or at close): its bytes will never be written. */
static void drop_queue(struct coro_stream *st)
{
    chain_drop(st->sched, &st->whead, &st->wtail);
    st->wq_size = 0;
    update_waiting(st);
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
            n = sock_sendmsg(st->fd, &msg, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;               /* the next output event resumes */
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
        if (!st->whead) {
            st->wtail = NULL;
            update_waiting(st);
        } else if (sent < want) {
            return 0;                      /* the socket is full: wait for writability */
        }
    }
    if ((st->flags & (S_SHUT | S_SHUT_DONE)) == S_SHUT)
        shutdown_now(st);
    return 0;
}

static int wait_queue(struct coro_stream *st, size_t limit, int64_t timeout_ms)
{
    uint64_t start = now_ms(st);
    int err;

    /* limit 0 = flush: also wait for a requested shutdown to have happened. */
    while (!st->werr && (st->wq_size > limit ||
                         (limit == 0 && (st->flags & (S_SHUT | S_SHUT_DONE)) == S_SHUT))) {
        err = park_as(st, &st->writer, S_WWAIT, st->names->write,
                      remaining(st, start, timeout_ms));
        if (err == GONE_MARK)
            return UV_ECANCELED;
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

/* coro_write_nowait() of raw bytes. */
static inline int write_raw(struct coro_stream *st, struct coro_buf *b)
{
    if (st->werr || (st->flags & (S_CLOSING | S_SHUT)) || !(st->flags & S_OPEN)) {
        coro_buf_put(st->sched, b);
        return st->werr ? st->werr : (st->flags & S_OPEN) ? UV_EPIPE : UV_ENOTCONN;
    }
    if (b->off >= b->len) {
        coro_buf_put(st->sched, b);
        return 0;
    }
    chain_append(&st->whead, &st->wtail, b);
    st->wq_size += b->len - b->off;
    /* Alone in the queue: straight to the socket (what it does not take waits for the next
     * output event); behind others, or while connecting, it waits its turn. */
    if (st->whead == b && !(st->flags & S_CONNECTING))
        write_queue(st);
    update_waiting(st);
    return st->werr;
}

int coro_stream_write_raw(struct coro_stream *st, struct coro_buf *b)
{
    return write_raw(st, b);
}

/* coro_write_nowait() through the filter: the same refusals, then the encoder. */
static int filtered_write(struct coro_stream *st, struct coro_buf *b)
{
    if (st->werr || (st->flags & (S_CLOSING | S_SHUT)) || !(st->flags & S_OPEN) ||
        b->off >= b->len)
        return write_raw(st, b);        /* refuses it, or drops it when empty */
    return st->filter->ops->encode(st->filter, st, b);
}

int coro_write_nowait(struct coro_stream *st, struct coro_buf *b)
{
    if (st->filter)
        return filtered_write(st, b);
    return write_raw(st, b);
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

int coro_shutdown(struct coro_stream *st)
{
    if (st->flags & (S_SHUT | S_CLOSING))
        return 0;
    if (!(st->flags & S_OPEN))
        return UV_ENOTCONN;
    /* The filter's closing bytes (close_notify) go before the FIN; an error writing them
     * is the stream's werr, which the shutdown below reports. */
    if (st->filter && st->filter->ops->close && !st->werr)
        st->filter->ops->close(st->filter, st);
    st->flags |= S_SHUT;
    if (!st->whead && !(st->flags & S_CONNECTING)) {
        shutdown_now(st);
        return st->werr == 0 || st->werr == UV_ENOTCONN ? 0 : st->werr;
    }
    return 0;          /* after the queued bytes (write_queue()) */
}

/* ---------------------------------------------------------------- connecting */

/* An output event (or an error) while connecting: the connect is over, SO_ERROR says
 * how. The socket was registered after its connect(), so the event is the connect's own
 * (an unconnected socket would report output and a hang-up at once), and a hang-up with
 * it is the peer's. */
static void connect_done(struct coro_stream *st)
{
    socklen_t len = sizeof(int);
    int so_err = 0;

    if (getsockopt(st->fd, SOL_SOCKET, SO_ERROR, &so_err, &len) < 0)
        so_err = errno;
    st->flags &= ~S_CONNECTING;
    if (so_err)
        st->werr = -so_err;
    update_waiting(st);
    wake(st->writer, 0);
}

/* connect() on the non-blocking <fd>: 0, -EINPROGRESS or another -errno. */
static int connect_fd(int fd, const struct sockaddr *addr, socklen_t alen)
{
    int r;

    do
        r = connect(fd, addr, alen);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

static socklen_t addr_len(const struct sockaddr *addr)
{
    return addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                       : sizeof(struct sockaddr_in);
}

/* Binds the new socket <fd> to the address of <src> with the port left to connect(): the
 * kernel then picks it per destination, so one source address serves ~28k connections to
 * each server instead of ~28k in all (bind() with port 0 would reserve a port for every
 * destination). Returns 0 or -errno. */
static int bind_source(int fd, const struct sockaddr *src)
{
    int one = 1;

    /* Linux 4.2+; older kernels refuse it and bind() reserves the port there. */
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    return bind(fd, src, addr_len(src)) < 0 ? -errno : 0;
}

int coro_connect(struct coro_stream *st, const struct sockaddr *addr, int64_t timeout_ms)
{
    return coro_connect_from(st, addr, NULL, timeout_ms);
}

int coro_connect_from(struct coro_stream *st, const struct sockaddr *addr,
                      const struct sockaddr *src, int64_t timeout_ms)
{
    uint64_t start = now_ms(st);
    socklen_t alen = addr_len(addr);
    int fd, r, err;

    if (st->flags & S_CLOSING)
        return UV_ECANCELED;
    if (st->flags & S_OPEN)
        return UV_EBUSY;
    fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    r = src ? bind_source(fd, src) : 0;
    if (r == 0)
        r = connect_fd(fd, addr, alen);
    if (r < 0 && r != -EINPROGRESS) {
        close(fd);
        return st->werr = r;
    }
    /* Registered after connect(): its first output event is the connect's own. */
    err = stream_open(st, fd, 1);
    if (err < 0)
        return err;
    if (r == 0)
        return 0;
    st->flags |= S_CONNECTING;
    update_waiting(st);
    while ((st->flags & S_CONNECTING) && !st->werr) {
        err = park_as(st, &st->writer, S_WWAIT, "connect", remaining(st, start, timeout_ms));
        if (err == GONE_MARK)
            return UV_ECANCELED;
        if (err < 0 && (st->flags & S_CONNECTING)) {
            st->flags &= ~S_CONNECTING;   /* unusable now: the caller closes it */
            st->werr = err;
            update_waiting(st);
            return err;
        }
    }
    if (!st->werr && st->whead)
        write_queue(st);
    return st->werr;
}

/* ---------------------------------------------------------------- events */

static void stream_event(struct coro_stream *st, uint32_t ev)
{
    if (st->flags & S_CLOSING)
        return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
        st->flags |= S_RREADY;
    if (ev & (EPOLLRDHUP | EPOLLERR | EPOLLHUP))
        st->flags |= S_RDHUP;
    if (st->flags & S_CONNECTING) {
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            connect_done(st);
        return;        /* the connecting coroutine reads and writes after it resumes */
    }
    if ((ev & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && st->whead) {
        write_queue(st);
        if (st->writer && (st->werr || st->wq_size <= st->wq_high / 2 ||
                           (st->flags & S_SHUT_DONE)))
            coro_wake(st->writer, 0);
    }
    if (st->flags & S_RREADY)
        do_read(st);
}

/* ---------------------------------------------------------------- closing */

/* Wakes <co>, which waits on a stream being closed. When it is parked inside coro_read() or
 * wait_queue() (<inside>), it must return without touching the stream again: the close
 * callback may free the stream before <co> runs. If something else made <co> ready
 * already, its pending result is replaced for the same reason. Other waiters (watchers)
 * get UV_ECANCELED. */
static void wake_closing(struct coro *co, int inside)
{
    if (!inside)
        coro_wake(co, UV_ECANCELED);
    else if (co->state == CORO_PARKED)
        coro_wake(co, GONE_MARK);
    else
        co->wake_result = GONE_MARK;
}

void coro_stream_close(struct coro_stream *st)
{
    struct coro *self = coro_self();

    if (st->flags & S_CLOSING)
        return;
    st->flags |= S_CLOSING;
    st->flags &= ~(S_READING | S_CONNECTING | S_RREADY);
    drop_queue(st);                 /* and no longer waiting: the loop may end */
    chain_drop(st->sched, &st->rhead, &st->rtail);
    st->nchunks = 0;
    coro_stream_set_filter(st, NULL);
    if (!st->werr)
        st->werr = UV_ECANCELED;
    /* Whoever waits on this stream learns now rather than at its timeout. */
    if (st->reader && st->reader != self)
        wake_closing(st->reader, st->flags & S_RWAIT);
    if (st->writer && st->writer != self)
        wake_closing(st->writer, st->flags & S_WWAIT);
    if (st->fd >= 0) {
        sock_close(st->fd); /* leaves the epoll set, with any event it had pending */
        st->fd = -1;
    }
}

int coro_stream_is_closing(const struct coro_stream *st)
{
    return (st->flags & S_CLOSING) != 0;
}

/* ---------------------------------------------------------------- filters */

void coro_stream_set_filter(struct coro_stream *st, struct coro_filter *f)
{
    struct coro_filter *old = st->filter;
    struct coro_buf *tail = NULL;

    st->filter = f;
    if (!old)
        return;
    chain_drop(st->sched, &old->ready, &tail);
    old->ops->free(old, st->sched);
}

struct coro_filter *coro_stream_filter(const struct coro_stream *st)
{
    return st->filter;
}

void coro_stream_unread(struct coro_stream *st, struct coro_buf *b)
{
    if (b->off >= b->len || (st->flags & S_CLOSING)) {
        coro_buf_put(st->sched, b);
        return;
    }
    b->next = st->rhead;
    st->rhead = b;
    if (!st->rtail)
        st->rtail = b;
    st->nchunks++;
}
