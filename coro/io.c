/* coro/io.c — TCP streams for coroutines on libuv (see io.h for the model).
 *
 * Every request the loop holds lives in heap memory: writes use the coro_buf that carries
 * the bytes, connects and shutdowns a small malloc'ed request that outlives a coroutine
 * which gave up waiting (the callback frees it).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "coro-int.h"
#include "io.h"

enum {
    S_READING = 1 << 0,   /* uv_read_start is in force */
    S_CLOSING = 1 << 1,
    S_CLOSED  = 1 << 2,
    S_SHUT    = 1 << 3,   /* a shutdown of our sending side was requested */
    S_SHUT_DONE = 1 << 4, /* ... and has happened (or failed) */
    S_RWAIT   = 1 << 5,   /* <reader> is parked inside coro_read() */
    S_WWAIT   = 1 << 6,   /* <writer> is parked inside wait_queue() */
};

/* The wake result that only the close callback uses (parks otherwise return <= 0). */
#define CLOSED_MARK 1
/* The wake result that tells coro_read()/wait_queue() their stream is being closed. */
#define GONE_MARK 2

/* Read ahead at most this many chunks before we stop reading from the socket. */
#define READ_AHEAD_CHUNKS 2

static inline struct coro_stream *stream_of(void *handle)
{
    return (struct coro_stream *)handle;   /* tcp is the first member */
}

static inline struct coro_buf *buf_of(char *data)
{
    return (struct coro_buf *)(void *)(data - offsetof(struct coro_buf, data));
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

int coro_stream_init(struct coro_sched *s, struct coro_stream *st)
{
    memset(st, 0, sizeof(*st));
    st->sched = s;
    st->wq_high = CORO_WQ_HIGH_DEFAULT;
    st->rreason = "read";
    st->wreason = "write";
    return uv_tcp_init(s->loop, &st->tcp);
}

int coro_stream_accept(uv_stream_t *server, struct coro_stream *st)
{
    return uv_accept(server, (uv_stream_t *)&st->tcp);
}

/* ---------------------------------------------------------------- reading */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct coro_stream *st = stream_of(h);
    struct coro_buf *b = coro_buf_get(st->sched, 0);

    if (!b) {
        *buf = uv_buf_init(NULL, 0);   /* libuv answers with UV_ENOBUFS */
        return;
    }
    *buf = uv_buf_init(b->data, b->cap);
}

static void wake(struct coro *co, int result)
{
    if (co)
        coro_wake(co, result);
}

static void read_stop(struct coro_stream *st)
{
    if (st->flags & S_READING) {
        uv_read_stop((uv_stream_t *)&st->tcp);
        st->flags &= ~S_READING;
    }
}

static void on_read(uv_stream_t *h, ssize_t nread, const uv_buf_t *buf)
{
    struct coro_stream *st = stream_of(h);
    struct coro_buf *b = buf->base ? buf_of(buf->base) : NULL;

    if (nread > 0) {
        b->len = (uint32_t)nread;
        b->off = 0;
        b->next = NULL;
        if (st->rtail)
            st->rtail->next = b;
        else
            st->rhead = b;
        st->rtail = b;
        st->bytes_in += (uint64_t)nread;
        if (++st->nchunks >= READ_AHEAD_CHUNKS)
            read_stop(st);   /* the consumer is behind: let TCP push back */
        wake(st->reader, 0);
        return;
    }
    coro_buf_put(st->sched, b);
    if (nread == 0)           /* EAGAIN: libuv returns the buffer it asked for */
        return;
    st->rerr = (int32_t)nread;
    read_stop(st);
    wake(st->reader, 0);
}

static int read_start(struct coro_stream *st)
{
    int err;

    if (st->flags & (S_READING | S_CLOSING) || st->rerr)
        return 0;
    err = uv_read_start((uv_stream_t *)&st->tcp, on_alloc, on_read);
    if (err < 0) {
        st->rerr = err;
        return err;
    }
    st->flags |= S_READING;
    return 0;
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
        err = coro_park(st->rreason, remaining(st, start, timeout_ms));
        if (err == GONE_MARK)
            return UV_ECANCELED;   /* <st> may be freed already: see wake_closing() */
        st->flags &= ~S_RWAIT;
        st->reader = prev;
        if (err < 0)
            return err;
    }
}

/* ---------------------------------------------------------------- writing */

static void on_write(uv_write_t *req, int status)
{
    struct coro_buf *b = coro__container_of(req, struct coro_buf, req);
    struct coro_stream *st = stream_of(req->handle);

    st->nwrites--;
    if (status < 0) {
        if (!st->werr)
            st->werr = status;
    } else {
        st->bytes_out += b->len - b->off;
    }
    coro_buf_put(st->sched, b);
    if (st->writer && (st->werr || st->nwrites == 0 ||
                       st->tcp.write_queue_size <= st->wq_high / 2))
        coro_wake(st->writer, 0);
}

static int wait_queue(struct coro_stream *st, size_t limit, int64_t timeout_ms)
{
    uint64_t start = now_ms(st);

    struct coro *prev = st->writer;
    int err;

    /* limit 0 = flush: also wait for a requested shutdown to have happened. */
    while (!st->werr && ((st->nwrites > 0 && st->tcp.write_queue_size > limit) ||
                         (limit == 0 && (st->nwrites > 0 ||
                                         (st->flags & (S_SHUT | S_SHUT_DONE)) == S_SHUT)))) {
        st->writer = coro_self();
        st->flags |= S_WWAIT;
        err = coro_park(st->wreason, remaining(st, start, timeout_ms));
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
    uv_buf_t ub;
    int r;

    if (st->werr || (st->flags & (S_CLOSING | S_SHUT))) {
        coro_buf_put(st->sched, b);
        return st->werr ? st->werr : UV_EPIPE;
    }
    if (b->off >= b->len) {
        coro_buf_put(st->sched, b);
        return 0;
    }
    if (st->nwrites == 0) {
        ub = uv_buf_init(b->data + b->off, b->len - b->off);
        r = uv_try_write((uv_stream_t *)&st->tcp, &ub, 1);
        if (r > 0) {
            st->bytes_out += (uint64_t)r;
            b->off += (uint32_t)r;
            if (b->off == b->len) {
                coro_buf_put(st->sched, b);
                return 0;
            }
        } else if (r != UV_EAGAIN && r != UV_ENOSYS) {
            st->werr = r;
            coro_buf_put(st->sched, b);
            return r;
        }
    }
    ub = uv_buf_init(b->data + b->off, b->len - b->off);
    r = uv_write(&b->req, (uv_stream_t *)&st->tcp, &ub, 1, on_write);
    if (r < 0) {
        st->werr = r;
        coro_buf_put(st->sched, b);
        return r;
    }
    st->nwrites++;
    return 0;
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
    return st->tcp.write_queue_size;
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct coro_stream *st = stream_of(req->handle);

    free(req);
    st->flags |= S_SHUT_DONE;
    if (status < 0 && status != UV_ECANCELED && !st->werr)
        st->werr = status;
    if (st->writer)
        coro_wake(st->writer, 0);
}

int coro_shutdown(struct coro_stream *st)
{
    uv_shutdown_t *req;
    int err;

    if (st->flags & (S_SHUT | S_CLOSING))
        return 0;
    req = malloc(sizeof(*req));
    if (!req)
        return UV_ENOMEM;
    err = uv_shutdown(req, (uv_stream_t *)&st->tcp, on_shutdown);
    if (err < 0) {
        free(req);
        return err;
    }
    st->flags |= S_SHUT;
    return 0;
}

/* ---------------------------------------------------------------- connecting */

struct connect_req {
    uv_connect_t req;
    struct coro *co;      /* NULL once the coroutine gave up: the callback frees */
    int          status;
    int          done;
};

static void on_connect(uv_connect_t *req, int status)
{
    struct connect_req *cr = coro__container_of(req, struct connect_req, req);

    if (!cr->co) {
        free(cr);
        return;
    }
    cr->status = status;
    cr->done = 1;
    coro_wake(cr->co, 0);
}

int coro_connect(struct coro_stream *st, const struct sockaddr *addr, int64_t timeout_ms)
{
    struct connect_req *cr;
    uint64_t start = now_ms(st);
    int err;

    cr = calloc(1, sizeof(*cr));
    if (!cr)
        return UV_ENOMEM;
    cr->co = coro_self();
    err = uv_tcp_connect(&cr->req, &st->tcp, addr, on_connect);
    if (err < 0) {
        free(cr);
        return err;
    }
    while (!cr->done) {
        err = coro_park("connect", remaining(st, start, timeout_ms));
        if (err < 0 && !cr->done) {
            cr->co = NULL;      /* on_connect frees it when the close cancels it */
            return err;
        }
    }
    err = cr->status;
    free(cr);
    return err;
}

/* ---------------------------------------------------------------- closing */

static void on_stream_closed(uv_handle_t *h)
{
    struct coro_stream *st = stream_of(h);
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
    /* libuv cancels the stream's pending writes and shutdown just before this callback,
     * and their callbacks wake the writer, which may be <closer>: then it is ready with
     * another result, and a plain wake would be lost (it would park again for good). */
    if (closer && closer->state == CORO_READY)
        closer->wake_result = CLOSED_MARK;
    else if (closer)
        coro_wake(closer, CLOSED_MARK);
    if (cb)
        cb(h);      /* last: it may free the stream */
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
        st->flags &= ~S_READING;
        st->on_closed = on_closed;
        uv_close((uv_handle_t *)&st->tcp, on_stream_closed);
        /* Whoever waits on this stream learns now rather than at its timeout. */
        if (st->reader && st->reader != self)
            wake_closing(st->reader, st->flags & S_RWAIT);
        if (st->writer && st->writer != self)
            wake_closing(st->writer, st->flags & S_WWAIT);
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
