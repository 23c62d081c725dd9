/* coro/coro-t.h — coroutine runtime types that other structs embed. Types only. */
#ifndef CORO_CORO_T_H
#define CORO_CORO_T_H

#include <stdint.h>
#include <uv.h>

/* Intrusive circular doubly-linked list; an empty node points at itself. */
struct coro_list {
    struct coro_list *next;
    struct coro_list *prev;
};

/* See coro_event_init(). */
struct coro_event {
    struct coro_list waiters;   /* parked coroutines, FIFO */
    unsigned         signals;   /* signals given while nobody waited */
    unsigned         nwaiters;
};

/* A pooled I/O buffer: data[off, len) are the bytes not yet consumed or written. A
 * stream's write queue links the buffers themselves, so nothing the loop holds points
 * into a coroutine's stack. */
struct coro_buf {
    struct coro_buf *next;      /* free list, a stream's received chunks or its write queue */
    uint32_t         cap;       /* bytes in data[] */
    uint32_t         len;       /* bytes filled */
    uint32_t         off;       /* bytes consumed */
    uint32_t         pooled;    /* 1: came from the pool; 0: malloc'ed for a large size */
    char             data[];
};

/* What a stream's waits are called in coroutine listings ("read client"...). */
struct coro_stream_names {
    const char *read;
    const char *write;
};

struct coro_filter;

/* A TCP stream driven by coroutines: a socket in its scheduler's edge-triggered epoll set,
 * read and written by io.c itself (docs/coro-streams.md says why neither a uv_tcp_t nor a
 * uv_poll_t of its own). Embed it in a heap object (a connection), first if the close
 * callback is to find that object: the callback receives the stream's address. */
struct coro_stream {
    struct coro_sched  *sched;
    struct coro        *reader;   /* woken when data, EOF or an error arrives */
    struct coro        *writer;   /* woken when the write queue drains below wq_high / 2 */
    const struct coro_stream_names *names;
    struct coro_filter *filter;   /* transforms the bytes both ways (TLS); NULL: plain */
    struct coro_buf    *rhead;    /* received chunks not yet taken, oldest first */
    struct coro_buf    *rtail;
    struct coro_buf    *whead;    /* bytes the socket has not taken yet, oldest first */
    struct coro_buf    *wtail;
    uint64_t            bytes_in;
    uint64_t            bytes_out;
    uint32_t            wq_size;  /* bytes in whead..wtail */
    uint32_t            wq_high;  /* writers wait while more than this is queued */
    int32_t             rerr;     /* UV_EOF or a read error, once seen; 0 before */
    int32_t             werr;     /* first write error (or a failed connect's) */
    int32_t             fd;       /* -1 before coro_stream_open()/coro_connect() and after close */
    uint16_t            flags;
    uint8_t             nchunks;  /* chunks in rhead..rtail (at most READ_AHEAD_CHUNKS) */
    uint8_t             waiting;  /* counted in the scheduler's io_waiting */
};

#endif
