/* coro/buf.c — the per-scheduler I/O buffer pool.
 *
 * Fixed-size buffers on a free list, bounded by buf_keep so that a burst does not pin its
 * peak forever; larger requests are plain malloc. One pool per scheduler, so no locks.
 */
#include <stdlib.h>

#include "coro-int.h"
#include "io.h"

struct coro_buf *coro_buf_get(struct coro_sched *s, size_t size)
{
    struct coro_buf *b;

    if (size <= s->buf_size) {
        b = s->free_bufs;
        if (b) {
            s->free_bufs = b->next;
            s->nbufs_free--;
        } else {
            b = malloc(sizeof(*b) + s->buf_size);
            if (!b)
                return NULL;
            b->cap = (uint32_t)s->buf_size;
            b->pooled = 1;
        }
    } else {
        if (size > UINT32_MAX)
            return NULL;
        b = malloc(sizeof(*b) + size);
        if (!b)
            return NULL;
        b->cap = (uint32_t)size;
        b->pooled = 0;
    }
    b->next = NULL;
    b->len = b->off = 0;
    s->bufs_out++;
    return b;
}

void coro_buf_put(struct coro_sched *s, struct coro_buf *b)
{
    if (!b)
        return;
    s->bufs_out--;
    if (b->pooled && s->nbufs_free < s->buf_keep) {
        b->next = s->free_bufs;
        s->free_bufs = b;
        s->nbufs_free++;
        return;
    }
    free(b);
}

unsigned coro_buf_outstanding(const struct coro_sched *s)
{
    return s->bufs_out;
}

size_t coro_buf_size(const struct coro_sched *s)
{
    return s->buf_size;
}
