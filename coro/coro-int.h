/* coro/coro-int.h — the runtime's private structures, shared by the coro/ sources only. */
#ifndef CORO_CORO_INT_H
#define CORO_CORO_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "coro.h"
#include "ctx.h"
#include "list.h"
#include "slab.h"

#if defined(CORO_SANITIZE_ADDRESS) || defined(__SANITIZE_ADDRESS__)
#define CORO_ASAN 1
#endif

#define CORO_NO_TIMER UINT32_MAX

enum {
    CORO_F_FRESH          = 1 << 0,  /* never ran: its context starts at the entry */
    CORO_F_CANCEL_PENDING = 1 << 1,  /* the next cancellable wait returns UV_ECANCELED */
    CORO_F_CANCELLED      = 1 << 2,  /* coro_cancel() was called, ever */
    CORO_F_UNINTERRUPTIBLE= 1 << 3,  /* the current park ignores coro_cancel() */
    CORO_F_TIMED          = 1 << 4,  /* the current park has a timeout: <deadline> */
};

/* One coroutine. Kept small: with the shared stack model this plus the saved stack bytes
 * is all a parked coroutine costs (see docs/coro-stacks.md). */
struct coro {
    struct coro_ctx    ctx;
    struct coro_list   link;       /* in the ready queue, or an event's waiters, or none */
    struct coro_list   all;        /* the scheduler's live coroutines, spawn order */
    struct coro_sched *sched;
    void             (*fn)(void *);
    void              *arg;
    const char        *name;
    const char        *park_reason;
    uint64_t           id;
    uint64_t           spawned_ms;
    uint64_t           park_ms;
    uint64_t           deadline;   /* loop ms while PARKED with CORO_F_TIMED; while READY
                                    * with track_ready: CLOCK_MONOTONIC ns when made ready
                                    * (a ready coroutine waits for no timer: the field is
                                    * free; its heap entry has its own key) */
    void              *xfer;       /* a value handed over by a channel; free-list link */
    union {                        /* one per model: a coroutine struct costs 224 bytes */
        char          *stack;      /* dedicated model: the mapping (guard first) */
        char          *saved;      /* shared model: copy of the parked stack bytes */
    };
    uint32_t           saved_len;
    uint32_t           saved_cap;
    uint32_t           heap_idx;   /* its entry in the timer heap, or CORO_NO_TIMER */
    int32_t            wake_result;
    uint8_t            state;      /* enum coro_state */
    uint8_t            flags;
#ifdef CORO_ASAN
    void              *asan_fake;
#endif
};

/* A timer heap entry: <due> is never later than co->deadline while <co> waits with a
 * timeout, and may be earlier (sched.c: "Deadlines are lazy"). */
struct coro_timer {
    uint64_t     due;
    struct coro *co;
};

#define CORO_SAVED_STEP     32u
#define CORO_SAVED_SLAB_MAX 1024u

struct coro_sched {
    uv_loop_t         *loop;
    struct coro_slab   coros;      /* every struct coro of this scheduler (slab.h) */
    /* Saved stack copies up to CORO_SAVED_SLAB_MAX bytes, one slab per CORO_SAVED_STEP
     * size class (stack.c says why); larger ones are malloc'ed. */
    struct coro_slab   saved_slabs[CORO_SAVED_SLAB_MAX / CORO_SAVED_STEP];
    struct coro       *current;
    struct coro_ctx    main_ctx;
    struct coro_list   ready;
    struct coro_list   all;
    unsigned           nready;
    unsigned           count;      /* live coroutines */
    uint64_t           next_id;
    uv_check_t         check;      /* runs ready coroutines right after poll */
    uv_idle_t          idle;       /* active while some are ready: poll must not block */
    uv_timer_t         timer;      /* armed for the earliest deadline in heap */
    uint64_t           timer_due;
    struct coro_timer *heap;       /* min-heap on due; lazy (sched.c) */
    uint32_t           heap_len;
    uint32_t           heap_cap;
    int                handles_open;
    enum coro_stack_model model;
    size_t             stack_size;
    size_t             guard;
    /* shared model: one mapping [guard | stack], the coroutine whose bytes are on it */
    char              *shared_map;
    char              *shared_lo;
    char              *shared_top;
    struct coro       *owner;
    /* dead coroutines kept for reuse (with their dedicated stack), linked by xfer */
    struct coro       *free_coros;
    unsigned           nfree;
    unsigned           stack_keep;
    /* I/O buffers */
    struct coro_buf   *free_bufs;  /* most recently put first */
    unsigned           nbufs_free;
    unsigned           nbufs_low;  /* the fewest in free_bufs since the last decay tick */
    unsigned           buf_keep;
    size_t             bufs_freed; /* pooled bytes freed since the last malloc_trim() */
    unsigned           count_peak; /* most coroutines alive since the last trim was owed */
    /* The services built on the scheduler tell it what to call, so that it imports
     * neither: buf.c's answer to a burst of coroutines ending (set once the pool is used:
     * every stream reads into it) and io.c's teardown of its epoll set (set with it). */
    void             (*burst_end)(struct coro_sched *s);
    void             (*io_free)(struct coro_sched *s);
    int                pool_ticking; /* pool_timer runs */
    int                trimming;   /* trim_req is on the thread pool */
    unsigned           trims;      /* trims started */
    uv_work_t          trim_req;   /* malloc_trim() off the loop (buf.c) */
    uv_timer_t         pool_timer; /* the pool's decay tick (buf.c), while it has surplus */
    unsigned           bufs_out;
    size_t             buf_size;
    /* Streams (io.c): their sockets are in this epoll set, edge-triggered, registered once;
     * the loop watches the set itself through io_poll, referenced while some stream waits
     * for an event (io_waiting), so that an idle stream does not keep the loop alive. */
    int                io_epfd;    /* -1 until the first stream */
    int                io_err;     /* io_poll could not start: streams fail with this */
    uv_poll_t          io_poll;
    unsigned           io_waiting;
    /* ready-to-run delays (opts.track_ready): written here only, read by any thread */
    int                track_ready;
    _Atomic uint64_t   ready_slots[CORO_READY_SLOTS];
    _Atomic uint64_t   ready_count;
    _Atomic uint64_t   ready_sum_ns;
    _Atomic uint64_t   ready_max_ns;
#ifdef CORO_ASAN
    const void        *main_lo;
    size_t             main_size;
    void              *main_fake;
#endif
};

#define coro__container_of(p, type, member) \
    ((type *)(void *)((char *)(p) - offsetof(type, member)))

/* The scheduler whose coroutine runs on this thread now (NULL in loop callbacks). */
extern __thread struct coro_sched *coro__tls_sched;

/* stack.c: mappings, the overflow report, the shared stack copy. */
int  coro__stack_map(size_t size, size_t guard, char **map);
void coro__stack_unmap(char *map, size_t size, size_t guard);
int  coro__overflow_handler_install(void);
void coro__overflow_handler_release(void);
/* Close callback of the scheduler's own handles: the last one frees the scheduler. */
void coro__sched_handle_closed(uv_handle_t *h);

/* The same for what else holds the scheduler (a trim on the thread pool, buf.c): counted
 * in handles_open. */
void coro__sched_put(struct coro_sched *s);
int  coro__stack_save(struct coro_sched *s, struct coro *co);
/* Frees <co>'s saved copy (shared model), from its size class's slab or the heap. */
void coro__saved_free(struct coro_sched *s, struct coro *co);
void coro__stack_restore(struct coro_sched *s, struct coro *co);

/* Parks the running coroutine; the common body of every wait. */
int coro__park(const char *reason, int64_t timeout_ms, int interruptible);

#endif
