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

/* A pooled I/O buffer. The uv_write_t lives here so that a write in flight points only at
 * heap memory; data[off, len) are the bytes not yet consumed or written. */
struct coro_buf {
    uv_write_t       req;
    struct coro_buf *next;      /* free list, or a stream's queue of received chunks */
    uint32_t         cap;       /* bytes in data[] */
    uint32_t         len;       /* bytes filled */
    uint32_t         off;       /* bytes consumed */
    uint32_t         pooled;    /* 1: came from the pool; 0: malloc'ed for a large size */
    char             data[];
};

/* A TCP stream driven by coroutines. Embed it in a heap object (a connection); tcp must
 * stay first so the handle's address is the stream's. See coro/io.h. */
struct coro_stream {
    uv_tcp_t            tcp;
    struct coro_sched  *sched;
    struct coro        *reader;   /* woken when data, EOF or an error arrives */
    struct coro        *writer;   /* woken when the write queue drains below wq_low */
    struct coro        *closer;   /* woken from the close callback */
    uv_close_cb         on_closed;/* the owner's close callback, called last */
    const char         *rreason;  /* park reasons shown in listings: "read client"... */
    const char         *wreason;
    struct coro_buf    *rhead;    /* received chunks not yet taken, oldest first */
    struct coro_buf    *rtail;
    uint64_t            bytes_in;
    uint64_t            bytes_out;
    uint32_t            wq_high;  /* writers wait while more than this is queued */
    uint32_t            nwrites;  /* uv_write requests in flight */
    int32_t             rerr;     /* UV_EOF or a read error, once seen; 0 before */
    int32_t             werr;     /* first write error */
    uint16_t            nchunks;  /* chunks in rhead..rtail */
    uint16_t            flags;
};

#endif
