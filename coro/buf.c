/* coro/buf.c — the per-scheduler I/O buffer pool.
 *
 * Fixed-size buffers on a free list, bounded by buf_keep; larger requests are plain malloc.
 * One pool per scheduler, so no locks. A burst (many reads in one poll) fills the pool
 * with buffers whose first pages are resident, and malloc would keep them resident after
 * a free too; so the pool decays: buffers that stayed unused during a whole DECAY_MS tick,
 * beyond the FLOOR most recently used ones, are freed; and once the pool has settled
 * (a tick that freed nothing after some that did, or one that brought the pool back to
 * its floor), malloc_trim() gives the free pages of the heap back to the system: the
 * pool's, and those the burst's other short-lived allocations left behind.
 *
 * The trim is also owed when a burst of coroutines ends (most of those alive at the peak
 * are gone, sched.c): their connections' other heap blocks are free then, with no buffer
 * churn to start it. A soak's worker arenas held 3.8 MB of free, resident pages after
 * its faults (malloc_stats(): 240 kB in use) until this.
 *
 * The trim runs on libuv's thread pool, never on the loop: it walks every arena's free
 * chunks and madvise()s each, which took 70-660 us here after a 1,000-connection burst
 * (and grows with the heap), time in which no connection of the loop moves. One trim at
 * a time in the process (it covers every arena); a scheduler whose turn was taken asks
 * again at its next tick.
 */
#include <stdatomic.h>
#include <stdlib.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

#include "buf.h"
#include "coro-int.h"

#define DECAY_MS   250u             /* a pool's tick: what stayed unused during one is surplus */
#define FLOOR      8u               /* idle buffers kept however long they are unused */
#define TRIM_MIN   (256u * 1024)    /* pooled bytes freed before malloc_trim() is worth it */

static atomic_int trim_busy;         /* a trim is running somewhere in the process */

static void trim_work(uv_work_t *req)
{
    (void)req;
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

static void trim_done(uv_work_t *req, int status)
{
    struct coro_sched *s = req->data;

    (void)status;
    atomic_store(&trim_busy, 0);
    s->trimming = 0;
    coro__sched_put(s);      /* the work request held the scheduler like a handle */
}

/* Starts a trim on the thread pool. Returns 1 when it started (or cannot ever), 0 when
 * another one is running: ask again later. */
static int trim_start(struct coro_sched *s)
{
    if (s->trimming || atomic_exchange(&trim_busy, 1))
        return 0;
    s->trim_req.data = s;
    s->handles_open++;
    s->trimming = 1;
    if (uv_queue_work(s->loop, &s->trim_req, trim_work, trim_done) < 0) {
        s->trimming = 0;
        s->handles_open--;
        atomic_store(&trim_busy, 0);
    }
    s->trims++;
    return 1;
}

/* The pool's tick: frees what was never taken since the last one (the coldest buffers, at
 * the list's tail); once TRIM_MIN bytes were and the pool has settled (see above), has
 * the heap's free pages given back. malloc_trim() walks every arena's free chunks under
 * its lock, so it runs only after a burst that large: at most once a tick, and only as
 * often as such bursts come and go. Ticks while the pool holds more than FLOOR buffers or
 * a trim is owed. */
static void on_decay(uv_timer_t *t)
{
    struct coro_sched *s = t->data;
    unsigned keep = s->nbufs_free - (s->nbufs_low > FLOOR ? s->nbufs_low - FLOOR : 0);
    struct coro_buf **pp = &s->free_bufs, *b;
    int settled = 1;

    while (*pp && keep-- > 0)
        pp = &(*pp)->next;
    while ((b = *pp) != NULL) {
        *pp = b->next;
        s->nbufs_free--;
        s->bufs_freed += sizeof(*b) + b->cap;
        free(b);
        settled = 0;
    }
    s->nbufs_low = s->nbufs_free;
    /* Trim once the burst is over: a tick that freed nothing, or one that brought the pool
     * back down to its floor (no need to wait another tick to see it settle). */
    if ((settled || s->nbufs_free <= FLOOR) && s->bufs_freed >= TRIM_MIN && trim_start(s))
        s->bufs_freed = 0;
    if (s->nbufs_free <= FLOOR && s->bufs_freed < TRIM_MIN) {
        uv_timer_stop(t);
        s->pool_ticking = 0;
    }
}

static void decay_start(struct coro_sched *s)
{
    if (s->pool_ticking)
        return;
    s->pool_ticking = 1;
    s->nbufs_low = s->nbufs_free;
    uv_timer_start(&s->pool_timer, on_decay, DECAY_MS, DECAY_MS);
}

/* A burst of coroutines has ended (most of them are gone, sched.c): what they allocated
 * is free now, and the heap's free pages are given back once the pool has settled. */
static void pool_trim_owed(struct coro_sched *s)
{
    if (s->bufs_freed < TRIM_MIN)
        s->bufs_freed = TRIM_MIN;
    decay_start(s);
}

struct coro_buf *coro_buf_get(struct coro_sched *s, size_t size)
{
    struct coro_buf *b;

    if (size <= s->buf_size) {
        b = s->free_bufs;
        if (b) {
            s->free_bufs = b->next;
            if (--s->nbufs_free < s->nbufs_low)
                s->nbufs_low = s->nbufs_free;
        } else {
            b = malloc(sizeof(*b) + s->buf_size);
            if (!b)
                return NULL;
            /* The pool is in use (its first buffer is always this one): it answers
             * bursts of coroutines ending (sched.c). Not on every get: a store on the
             * per-message path for a pointer that never changes. */
            s->burst_end = pool_trim_owed;
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
        if (++s->nbufs_free > FLOOR)
            decay_start(s);
        return;
    }
    if (b->pooled) {            /* a burst beyond buf_keep */
        s->bufs_freed += sizeof(*b) + b->cap;
        decay_start(s);
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

unsigned coro_buf_pooled(const struct coro_sched *s)
{
    return s->nbufs_free;
}

unsigned coro_buf_trims(const struct coro_sched *s)
{
    return s->trims;
}
