/* coro/buf.h — the scheduler's pool of I/O buffers (struct coro_buf, coro-t.h): what a
 * stream reads into and writes from (io.h), taken and given back by whoever holds one. An
 * idle pool decays to a floor and has the heap trimmed (buf.c says when).
 */
#ifndef CORO_BUF_H
#define CORO_BUF_H

#include <stddef.h>

#include "coro.h"
#include "coro-t.h"

/* A buffer from <s>'s pool (capacity = the scheduler's buf_size), or a malloc'ed one when
 * <size> is larger; len = off = 0. Returns NULL when out of memory. */
struct coro_buf *coro_buf_get(struct coro_sched *s, size_t size);

/* Gives <b> back (NULL-safe): to the pool, or free() when the pool is full or it was large. */
void coro_buf_put(struct coro_sched *s, struct coro_buf *b);

/* Buffers handed out and not yet put back: a leak or a held-idle buffer shows here. */
unsigned coro_buf_outstanding(const struct coro_sched *s);
size_t coro_buf_size(const struct coro_sched *s);
/* Buffers on the pool's free list now. */
unsigned coro_buf_pooled(const struct coro_sched *s);
/* Heap trims the pool's decay has started (on libuv's thread pool) since the start. */
unsigned coro_buf_trims(const struct coro_sched *s);

#endif
