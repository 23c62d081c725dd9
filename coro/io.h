/* coro/io.h — TCP streams that suspend only the calling coroutine (their buffers: buf.h).
 *
 * Reading: a stream reads ahead at most a couple of chunks into buffers taken from the
 * scheduler's pool at the moment the socket is readable, then stops reading it until
 * they are taken. An idle connection therefore holds no buffer, and a slow consumer
 * holds at most two: backpressure reaches the peer through TCP.
 * Writing: coro_write() first tries a direct write; what the kernel does not take is
 * queued (the buffers themselves, linked) and written as the socket becomes writable,
 * and the writer parks only while the stream's queued bytes exceed its high-water mark.
 * Filtering: a stream may carry a filter (TLS's record layer) that turns what arrives into
 * what coro_read() returns and what is written into what goes out; see "filters" below.
 */
#ifndef CORO_IO_H
#define CORO_IO_H

#include <sys/types.h>
#include <uv.h>

#include "buf.h"
#include "coro.h"
#include "coro-t.h"

#define CORO_WQ_HIGH_DEFAULT (64u * 1024)

/* ---------------------------------------------------------------- streams */

/* Initialises <st> (storage owned by the caller, not on a coroutine stack) on <s>'s loop,
 * without a socket yet: coro_stream_open() gives it one, or coro_connect() makes one.
 * Returns 0. From then on <st> must be closed with coro_stream_close(); its storage may be
 * freed once that returned. */
int coro_stream_init(struct coro_sched *s, struct coro_stream *st);

/* Gives the initialised <st> the connected, non-blocking socket <fd> (accept4() with
 * SOCK_NONBLOCK), which it owns from now on, even on failure (then it is closed). Returns
 * 0 or a libuv error. */
int coro_stream_open(struct coro_stream *st, int fd);

/* The socket, or -1 before it has one and once it is closed. */
int coro_stream_fd(const struct coro_stream *st);

/* Sets TCP_NODELAY (each write goes out at once). Returns 0 or a libuv error. */
int coro_stream_nodelay(struct coro_stream *st, int on);

/* Connects <st>, which has no socket yet (else UV_EBUSY), to <addr> (an IPv4 or IPv6
 * address) on a new socket, waiting at most <timeout_ms>. Returns 0, a libuv error,
 * UV_ETIMEDOUT or UV_ECANCELED. After a failure the stream is unusable: close it. */
int coro_connect(struct coro_stream *st, const struct sockaddr *addr, int64_t timeout_ms);

/* coro_connect() from the local address <src> (its port is ignored: connect() picks one
 * per destination, IP_BIND_ADDRESS_NO_PORT). <src> NULL is coro_connect(). A source the
 * host does not own fails with UV_EADDRNOTAVAIL. */
int coro_connect_from(struct coro_stream *st, const struct sockaddr *addr,
                      const struct sockaddr *src, int64_t timeout_ms);

/* Waits up to <timeout_ms> for data. Returns the byte count (> 0) with the chunk in <*out>
 * (the caller owns it: write it on, or coro_buf_put() it); UV_EOF when the peer shut down
 * its side; a libuv error; UV_ETIMEDOUT; or UV_ECANCELED. */
ssize_t coro_read(struct coro_stream *st, struct coro_buf **out, int64_t timeout_ms);

/* Like coro_read() without waiting: UV_EAGAIN when nothing has arrived. Starts reading. */
ssize_t coro_try_read(struct coro_stream *st, struct coro_buf **out);

/* Makes <co> the coroutine woken when data, EOF or an error arrives on <st>, or when its
 * write queue drains below half of wq_high, and starts reading. One coroutine can watch several streams and park once for all of them. */
void coro_stream_watch(struct coro_stream *st, struct coro *co);

/* 1 when coro_try_read() would not return UV_EAGAIN. */
int coro_stream_readable(const struct coro_stream *st);

/* Writes <b>->data[off, len). Always takes <b> (back to the pool once written or on
 * error). Returns 0 once the bytes are written or queued with the queue at most
 * wq_high; waits while it is above, up to <timeout_ms>. Errors: a libuv write error
 * (UV_EPIPE, UV_ECONNRESET...), UV_ETIMEDOUT, UV_ECANCELED. */
int coro_write(struct coro_stream *st, struct coro_buf *b, int64_t timeout_ms);

/* Like coro_write() but never waits: the bytes are written or queued whatever the queue
 * holds. For code that watches several streams and applies backpressure itself by not
 * reading while coro_stream_queued() is above wq_high. Returns 0 or a libuv error. */
int coro_write_nowait(struct coro_stream *st, struct coro_buf *b);

/* Gathers small writes: appends <len> bytes from <data> to *<pending> (a buffer the
 * caller keeps between calls, NULL when empty), taking a pool buffer (or one of <len>
 * bytes when larger) as needed and writing each one that fills with coro_write_nowait().
 * The caller sends the last, partly filled one itself (coro_write_nowait(st, *pending)).
 * Never waits. Returns 0, UV_ENOMEM or a write error. */
int coro_write_gather(struct coro_stream *st, struct coro_buf **pending, const void *data,
                      size_t len);

/* Copies <len> bytes from <data> into pool buffers and writes them like coro_write(). */
int coro_write_copy(struct coro_stream *st, const void *data, size_t len, int64_t timeout_ms);

/* Waits until every queued byte was handed to the kernel and a requested shutdown has
 * happened, up to <timeout_ms>. Returns 0, the first write error, UV_ETIMEDOUT or
 * UV_ECANCELED. */
int coro_flush(struct coro_stream *st, int64_t timeout_ms);

/* Bytes queued in user space, waiting for the socket to accept them. Inline: a relay asks
 * before every frame or chunk it moves. */
static inline size_t coro_stream_queued(const struct coro_stream *st)
{
    return st->wq_size;
}

/* Half-closes: after the queued writes, shuts down our sending side (the peer reads EOF).
 * Returns 0 or a libuv error; does not wait (coro_flush() does). Closing the stream before
 * the shutdown happened cancels it: the peer then sees the close instead. */
int coro_shutdown(struct coro_stream *st);

/* Closes <st> at once, from a coroutine or a loop callback: the socket closes, queued
 * writes are dropped, held chunks go back to the pool, and any coroutine parked on the
 * stream wakes with UV_ECANCELED (and does not touch the stream again). Once it returns
 * the stream's storage may be freed. Idempotent. */
void coro_stream_close(struct coro_stream *st);

/* 1 once coro_stream_close() has been called. */
int coro_stream_is_closing(const struct coro_stream *st);

/* ---------------------------------------------------------------- filters
 *
 * A filter transforms a stream's bytes both ways, after a handshake done on the raw
 * stream: once set, coro_read(), coro_try_read() and coro_stream_readable() deliver what
 * the filter decodes, coro_write*() hand the buffers to the filter's encoder, and
 * coro_shutdown() first lets the filter queue its closing bytes. The plain path pays one
 * NULL test. Received raw chunks still come from the pool and still bound the read-ahead;
 * decoding happens in the consumer's coroutine when it takes data, so a chunk that decodes
 * to nothing (a partial record, a control record) is simply consumed: coro_try_read()
 * goes on with the next raw chunk and says UV_EAGAIN when none is left, and a reader parks
 * until more raw bytes come. coro_stream_readable() may thus say 1 and the next
 * coro_try_read() UV_EAGAIN (only once per arrival: taking a raw chunk consumes it).
 * stream->bytes_in/bytes_out count raw (wire) bytes; coro_stream_queued() too. */

struct coro_filter;

struct coro_filter_ops {
    /* Decodes the raw chunk <in>, which it takes (to keep, to return, or to put back with
     * coro_stream_unread() when it holds bytes after a unit it decoded). Returns the count
     * of decoded bytes (> 0) with the chunk in *<out> (the caller owns it); 0 when nothing
     * came out of <in> (incomplete, or a control unit handled here); or a negative error,
     * UV_EOF for the peer's orderly close: the stream then keeps that error as its read end
     * and drops what it has received. May write with coro_stream_write_raw(); never waits. */
    ssize_t (*decode)(struct coro_filter *f, struct coro_stream *st, struct coro_buf *in,
                      struct coro_buf **out);
    /* Encodes <in>[off, len) (not empty), which it takes, and writes the result with
     * coro_stream_write_raw(). Never waits. Returns 0 or a negative error. */
    int (*encode)(struct coro_filter *f, struct coro_stream *st, struct coro_buf *in);
    /* Writes the filter's closing bytes (once, from coro_shutdown(), before the socket's
     * shutdown). Returns 0 or a negative error. May be NULL. */
    int (*close)(struct coro_filter *f, struct coro_stream *st);
    /* Frees <f> and what it holds (buffers back to <s>'s pool). */
    void (*free)(struct coro_filter *f, struct coro_sched *s);
    /* How reading ends when the raw bytes ended with <err> (UV_EOF: the peer's FIN):
     * <err>, or the filter's own error (a unit cut short by the FIN). May be NULL. */
    int (*end)(struct coro_filter *f, int err);
};

/* Embedded first in a filter's own object. */
struct coro_filter {
    const struct coro_filter_ops *ops;
    struct coro_buf *ready;     /* decoded chunks to deliver before decoding more (linked) */
    int32_t          end;       /* 0, or the read end (UV_EOF) to report once <ready> is
                                 * empty: a close that came behind decoded bytes */
};

/* Sets <f> (NULL: none) as <st>'s filter; the stream owns it from now on and frees it
 * (ops->free) when closed or when another filter replaces it. Raw chunks already received
 * and not taken are decoded by <f>. */
void coro_stream_set_filter(struct coro_stream *st, struct coro_filter *f);

/* <st>'s filter, or NULL. */
struct coro_filter *coro_stream_filter(const struct coro_stream *st);

/* Puts the raw chunk <b> back in front of what <st> received (a handshake that read past
 * its end; a filter that decoded a unit from the front of <b>): the next read takes it
 * first (decoded by the filter, if one is set by then). Takes <b> (an empty one goes back
 * to the pool). */
void coro_stream_unread(struct coro_stream *st, struct coro_buf *b);

/* coro_write_nowait() without the filter: for the filter's own output and for a
 * handshake's bytes. Same contract. */
int coro_stream_write_raw(struct coro_stream *st, struct coro_buf *b);

#endif
