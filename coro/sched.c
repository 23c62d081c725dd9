/* coro/sched.c — the scheduler: spawn, resume, park, wake, cancel, timers.
 *
 * Control flow is asymmetric: the scheduler (running on the thread's own stack, inside
 * a libuv callback) resumes a coroutine; the coroutine runs until it parks, yields or
 * returns, and always switches back to the scheduler. All stack copying of the shared
 * model therefore happens on the thread's stack, never on the stack being copied.
 *
 * Ready coroutines run from a uv_check handle, right after the poll phase that woke them;
 * a uv_idle handle is active while any are ready so that the next poll does not block.
 * Timeouts are a binary min-heap of deadlines served by one uv_timer_t per scheduler, so
 * a parked coroutine owns no libuv handle; deadlines are lazy (see the timer heap).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sdt.h>
#include <time.h>
#include <unistd.h>

#include "coro-int.h"

#ifdef CORO_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

__thread struct coro_sched *coro__tls_sched;

#define DEFAULT_STACK_SIZE (256u * 1024)
#define DEFAULT_BUF_SIZE   (16u * 1024)
#define DEFAULT_KEEP       256u
/* Buffers a pool keeps at most. One loop iteration reads into a buffer for every socket
 * that has data before any coroutine runs to pass it on: with 1,000 busy connections a
 * cap of 256 freed and re-malloc'ed ~740 16 KiB buffers per iteration (one per message).
 * The decay (buf.c) frees what a tick did not use, so a high cap costs memory only while
 * a load needs it. */
#define DEFAULT_BUF_KEEP   4096u
#define GUARD_SIZE         (16u * 1024)
/* Coroutines gone from their peak (and at least half of it) before a heap trim is owed. */
#define TRIM_FALL          128u

/* ------------------------------------------------------------------ timer heap */

/* Deadlines are lazy. A coroutine that parks with a timeout keeps its heap entry when it is
 * woken early, and its next timed park only moves co->deadline: the entry's key is left
 * alone when the deadline moved later (the usual case: an idle timeout pushed back by
 * traffic) and lowered when it moved earlier. So the key is never later than the deadline
 * it stands for, and a connection that parks and wakes once per message costs no heap
 * operation and no uv timer restart. When an entry comes due, the timer looks at its
 * coroutine: still parked with that timeout and due, it is woken with UV_ETIMEDOUT; parked
 * with a later deadline, the entry is re-keyed; anything else (running, ready, parked
 * without a timeout), the stale entry is dropped. A dead coroutine's entry is removed when
 * it is reaped. */

static void heap_set(struct coro_sched *s, uint32_t i, struct coro_timer ent)
{
    s->heap[i] = ent;
    ent.co->heap_idx = i;
}

static void heap_up(struct coro_sched *s, uint32_t i)
{
    struct coro_timer ent = s->heap[i];

    while (i > 0) {
        uint32_t parent = (i - 1) / 2;

        if (ent.due >= s->heap[parent].due)
            break;
        heap_set(s, i, s->heap[parent]);
        i = parent;
    }
    heap_set(s, i, ent);
}

static void heap_down(struct coro_sched *s, uint32_t i)
{
    struct coro_timer ent = s->heap[i];

    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = l;

        if (l >= s->heap_len)
            break;
        if (r < s->heap_len && s->heap[r].due < s->heap[l].due)
            m = r;
        if (s->heap[m].due >= ent.due)
            break;
        heap_set(s, i, s->heap[m]);
        i = m;
    }
    heap_set(s, i, ent);
}

static int heap_add(struct coro_sched *s, struct coro *co, uint64_t due)
{
    if (s->heap_len == s->heap_cap) {
        uint32_t cap = s->heap_cap ? s->heap_cap * 2 : 64;
        struct coro_timer *h = realloc(s->heap, cap * sizeof(*h));

        if (!h)
            return -ENOMEM;
        s->heap = h;
        s->heap_cap = cap;
    }
    heap_set(s, s->heap_len++, (struct coro_timer){ due, co });
    heap_up(s, co->heap_idx);
    return 0;
}

static void heap_del(struct coro_sched *s, struct coro *co)
{
    uint32_t i = co->heap_idx;
    struct coro_timer last;

    co->heap_idx = CORO_NO_TIMER;
    last = s->heap[--s->heap_len];
    if (last.co == co)
        return;
    heap_set(s, i, last);
    if (i > 0 && last.due < s->heap[(i - 1) / 2].due)
        heap_up(s, i);
    else
        heap_down(s, i);
}

/* Makes sure the running <co>, about to park until co->deadline, has an entry due no
 * later. Returns 0 or -ENOMEM. */
static int heap_arm(struct coro_sched *s, struct coro *co)
{
    uint32_t i = co->heap_idx;

    if (i == CORO_NO_TIMER)
        return heap_add(s, co, co->deadline);
    if (co->deadline < s->heap[i].due) {
        s->heap[i].due = co->deadline;
        heap_up(s, i);
    }
    return 0;
}

static void on_timer(uv_timer_t *t);

/* Arms the uv timer for the earliest deadline, or stops it when none is left. */
static void timer_rearm(struct coro_sched *s)
{
    uint64_t due, now;

    if (s->heap_len == 0) {
        if (s->timer_due != UINT64_MAX) {
            uv_timer_stop(&s->timer);
            s->timer_due = UINT64_MAX;
        }
        return;
    }
    due = s->heap[0].due;
    if (due == s->timer_due)
        return;
    now = uv_now(s->loop);
    uv_timer_start(&s->timer, on_timer, due > now ? due - now : 0, 0);
    s->timer_due = due;
}

static void on_timer(uv_timer_t *t)
{
    struct coro_sched *s = t->data;
    uint64_t now = uv_now(s->loop);

    s->timer_due = UINT64_MAX;
    while (s->heap_len > 0 && s->heap[0].due <= now) {
        struct coro *co = s->heap[0].co;

        if (co->state != CORO_PARKED || !(co->flags & CORO_F_TIMED)) {
            heap_del(s, co);                    /* stale: woken since */
        } else if (co->deadline > now) {
            s->heap[0].due = co->deadline;      /* parked again, longer */
            heap_down(s, 0);
        } else {
            heap_del(s, co);
            coro_wake(co, UV_ETIMEDOUT);
        }
    }
    timer_rearm(s);
    if (s->nready)
        coro_sched_run(s);
}

/* ------------------------------------------------------------------ switching */

static void coro_entry(void);

/* Frees <co> and its stack memory: the mapping or the saved copy, by model. */
static void coro_free_mem(struct coro_sched *s, struct coro *co)
{
    if (s->model == CORO_STACK_DEDICATED)
        coro__stack_unmap(co->stack, s->stack_size, s->guard);
    else
        coro__saved_free(s, co);
    coro_slab_free(&s->coros, co);
}

static inline void stack_bounds(const struct coro_sched *s, const struct coro *co,
                                const void **lo, size_t *size)
{
    if (s->model == CORO_STACK_SHARED)
        *lo = s->shared_lo;
    else
        *lo = co->stack + s->guard;
    *size = s->stack_size;
}

/* Scheduler side: run <co> until it parks, yields or exits. */
static void resume(struct coro_sched *s, struct coro *co)
{
    struct coro_sched *prev_tls = coro__tls_sched;
    const void *lo;
    size_t size;

    stack_bounds(s, co, &lo, &size);
    if (s->model == CORO_STACK_SHARED && s->owner != co) {
        /* Lazy copy: the previous owner's bytes leave the stack only now that another
         * coroutine needs it, so resuming the same coroutine again copies nothing. */
        if (s->owner && coro__stack_save(s, s->owner) < 0) {
            fprintf(stderr, "coro: out of memory saving the stack of coroutine '%s' "
                    "(id %llu); aborting\n", s->owner->name,
                    (unsigned long long)s->owner->id);
            abort();
        }
        s->owner = co;
        if (!(co->flags & CORO_F_FRESH))
            coro__stack_restore(s, co);
    }
    if (co->flags & CORO_F_FRESH) {
        co->flags &= ~CORO_F_FRESH;
#ifdef CORO_ASAN
        /* A reused stack may carry poison from frames that never returned. */
        ASAN_UNPOISON_MEMORY_REGION(lo, size);
#endif
#if defined(__x86_64__) && !defined(CORO_USE_UCONTEXT)
        *(void **)coro__ctx_sp(&co->ctx) = NULL;   /* the entry's return address: none */
#endif
    }
    co->state = CORO_RUNNING;
    s->current = co;
    coro__tls_sched = s;
    DTRACE_PROBE3(coro, resume, co->id, co->park_reason, s->loop->time - co->park_ms);
#ifdef CORO_ASAN
    __sanitizer_start_switch_fiber(&s->main_fake, lo, size);
#endif
    coro__switch(&s->main_ctx, &co->ctx, co->wake_result);
#ifdef CORO_ASAN
    __sanitizer_finish_switch_fiber(s->main_fake, NULL, NULL);
#endif
    s->current = NULL;
    coro__tls_sched = prev_tls;
    if (co->state != CORO_DEAD)
        return;

    /* Reap. Dead coroutines are kept (with their dedicated stack) for the next spawn. */
    if (co->heap_idx != CORO_NO_TIMER)
        heap_del(s, co);                        /* a lazy entry outlived its last wait */
    coro_list_del(&co->all);
    s->count--;
    /* A burst is over when most of its coroutines are gone: their connections' heap blocks
     * (handshake state, sessions, ...) are free but still resident until a trim,
     * which buffer churn alone would not start. A steady churn never falls this far. */
    if (s->count + TRIM_FALL <= s->count_peak && s->count <= s->count_peak / 2) {
        s->count_peak = s->count;
        if (s->burst_end)
            s->burst_end(s);
    }
    if (s->owner == co)
        s->owner = NULL;
    if (s->nfree < s->stack_keep) {
        co->xfer = s->free_coros;
        s->free_coros = co;
        s->nfree++;
        if (s->model == CORO_STACK_SHARED && co->saved_cap > 4096) {
            /* do not keep a deep coroutine's copy around */
            coro__saved_free(s, co);
        }
        co->saved_len = 0;
        return;
    }
    coro_free_mem(s, co);
}

/* Coroutine side: give control back to the scheduler; returns the wake result when
 * resumed. Without ASan the switch is the last call, so callers can tail-call this. */
static inline int switch_out(struct coro_sched *s, struct coro *co)
{
#ifdef CORO_ASAN
    int ret;

    __sanitizer_start_switch_fiber(co->state == CORO_DEAD ? NULL : &co->asan_fake,
                                   s->main_lo, s->main_size);
    ret = coro__switch(&co->ctx, &s->main_ctx, 0);
    __sanitizer_finish_switch_fiber(co->asan_fake, &s->main_lo, &s->main_size);
    return ret;
#else
    return coro__switch(&co->ctx, &s->main_ctx, 0);
#endif
}

static void coro_entry(void)
{
    struct coro_sched *s = coro__tls_sched;
    struct coro *co = s->current;

#ifdef CORO_ASAN
    __sanitizer_finish_switch_fiber(NULL, &s->main_lo, &s->main_size);
#endif
    co->fn(co->arg);
    /* The scheduler pointer is re-read: the coroutine may have migrated nowhere, but the
     * compiler must not assume <s> survived in a register it restored. */
    s = co->sched;
    co->state = CORO_DEAD;
    co->park_reason = NULL;
    DTRACE_PROBE1(coro, exit, co->id);
    switch_out(s, co);
    abort();   /* a dead coroutine is never resumed */
}

static uint64_t mono_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Single writer: a relaxed load and store, no locked instruction. */
#define READY_ADD(f, n) \
    atomic_store_explicit(&(f), atomic_load_explicit(&(f), memory_order_relaxed) + (n), \
                          memory_order_relaxed)

static void ready_record(struct coro_sched *s, const struct coro *co)
{
    uint64_t ns = mono_ns() - co->deadline, us = ns / 1000;
    unsigned slot = us ? 63u - (unsigned)__builtin_clzll(us) : 0;

    if (slot >= CORO_READY_SLOTS)
        slot = CORO_READY_SLOTS - 1;
    READY_ADD(s->ready_slots[slot], 1);
    READY_ADD(s->ready_count, 1);
    READY_ADD(s->ready_sum_ns, ns);
    if (ns > atomic_load_explicit(&s->ready_max_ns, memory_order_relaxed))
        atomic_store_explicit(&s->ready_max_ns, ns, memory_order_relaxed);
}

void coro_sched_ready_stats(const struct coro_sched *s, struct coro_ready_stats *out)
{
    unsigned i;

    for (i = 0; i < CORO_READY_SLOTS; i++)
        out->slots[i] = atomic_load_explicit(&s->ready_slots[i], memory_order_relaxed);
    out->count = atomic_load_explicit(&s->ready_count, memory_order_relaxed);
    out->sum_ns = atomic_load_explicit(&s->ready_sum_ns, memory_order_relaxed);
    out->max_ns = atomic_load_explicit(&s->ready_max_ns, memory_order_relaxed);
}

unsigned coro_sched_run(struct coro_sched *s)
{
    unsigned n = s->nready, ran = 0;

    if (s->current)   /* called from a coroutine: not a scheduler context */
        return 0;
    while (n-- > 0 && !coro_list_empty(&s->ready)) {
        struct coro *co = coro__container_of(s->ready.next, struct coro, link);

        coro_list_del(&co->link);
        s->nready--;
        if (s->track_ready)
            ready_record(s, co);
        resume(s, co);
        ran++;
    }
    if (s->nready == 0 && uv_is_active((uv_handle_t *)&s->idle))
        uv_idle_stop(&s->idle);
    timer_rearm(s);
    return ran;
}

static void on_check(uv_check_t *h)
{
    struct coro_sched *s = h->data;

    if (s->nready)
        coro_sched_run(s);
}

static void on_idle(uv_idle_t *h)
{
    coro_sched_run(h->data);
}

static void make_ready(struct coro_sched *s, struct coro *co)
{
    if (s->track_ready)
        co->deadline = mono_ns();   /* no timer while ready: see struct coro */
    co->state = CORO_READY;
    coro_list_add_tail(&s->ready, &co->link);
    if (s->nready++ == 0 && !uv_is_active((uv_handle_t *)&s->idle))
        uv_idle_start(&s->idle, on_idle);
}

/* ------------------------------------------------------------------ public */

struct coro_sched *coro_sched_new(uv_loop_t *loop, const struct coro_sched_opts *opts)
{
    struct coro_sched_opts o = { 0 };
    struct coro_sched *s;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    int err;

    if (opts)
        o = *opts;
    if (o.stack_model != CORO_STACK_SHARED && o.stack_model != CORO_STACK_DEDICATED) {
        errno = EINVAL;
        return NULL;
    }
    if (!o.stack_size)
        o.stack_size = DEFAULT_STACK_SIZE;
    if (o.stack_size < 16 * 1024 || o.stack_size > (1u << 30)) {
        errno = EINVAL;
        return NULL;
    }
    o.stack_size = (o.stack_size + page - 1) & ~(page - 1);
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->loop = loop;
    coro_slab_init(&s->coros, sizeof(struct coro));
    for (size_t i = 0; i < CORO_SAVED_SLAB_MAX / CORO_SAVED_STEP; i++)
        coro_slab_init(&s->saved_slabs[i], (i + 1) * CORO_SAVED_STEP);
    s->model = o.stack_model;
    s->stack_size = o.stack_size;
    s->guard = GUARD_SIZE;
    s->buf_size = o.buf_size ? o.buf_size : DEFAULT_BUF_SIZE;
    s->buf_keep = o.buf_keep ? o.buf_keep : DEFAULT_BUF_KEEP;
    s->stack_keep = o.stack_keep ? o.stack_keep : DEFAULT_KEEP;
    s->track_ready = o.track_ready != 0;
    s->timer_due = UINT64_MAX;
    s->next_id = 1;
    coro_list_init(&s->ready);
    coro_list_init(&s->all);

    err = coro__overflow_handler_install();
    if (err < 0)
        goto out_free;
    if (s->model == CORO_STACK_SHARED) {
        err = coro__stack_map(s->stack_size, s->guard, &s->shared_map);
        if (err < 0)
            goto out_handler;
        s->shared_lo = s->shared_map + s->guard;
        s->shared_top = s->shared_lo + s->stack_size;
    }
    uv_check_init(loop, &s->check);
    uv_idle_init(loop, &s->idle);
    uv_timer_init(loop, &s->timer);
    uv_timer_init(loop, &s->pool_timer);
    s->check.data = s->idle.data = s->timer.data = s->pool_timer.data = s;
    s->handles_open = 4;
    s->io_epfd = -1;
    uv_check_start(&s->check, on_check);
    uv_unref((uv_handle_t *)&s->check);   /* a scheduler alone keeps no loop alive */
    uv_unref((uv_handle_t *)&s->pool_timer);
    return s;

out_handler:
    coro__overflow_handler_release();
out_free:
    free(s);
    errno = -err;
    return NULL;
}

void coro__sched_put(struct coro_sched *s)
{
    if (--s->handles_open > 0)
        return;
    free(s);
}

void coro__sched_handle_closed(uv_handle_t *h)
{
    coro__sched_put(h->data);
}

int coro_sched_free(struct coro_sched *s)
{
    struct coro_buf *b;
    int leaked = 0;

    if (!s)
        return 0;
    while (!coro_list_empty(&s->all)) {
        struct coro *co = coro__container_of(s->all.next, struct coro, all);

        coro_list_del(&co->all);
        coro_list_del(&co->link);
        coro_free_mem(s, co);
        leaked++;
    }
    while (s->free_coros) {
        struct coro *co = s->free_coros;

        s->free_coros = co->xfer;
        coro_free_mem(s, co);
    }
    while ((b = s->free_bufs) != NULL) {
        s->free_bufs = b->next;
        free(b);
    }
    s->nbufs_free = 0;
    if (s->shared_map)
        coro__stack_unmap(s->shared_map, s->stack_size, s->guard);
    s->shared_map = NULL;
    free(s->heap);
    s->heap = NULL;
    s->heap_len = s->heap_cap = 0;
    coro_slab_destroy(&s->coros);   /* every coroutine was freed above */
    for (size_t i = 0; i < CORO_SAVED_SLAB_MAX / CORO_SAVED_STEP; i++)
        coro_slab_destroy(&s->saved_slabs[i]);
    coro__overflow_handler_release();
    uv_close((uv_handle_t *)&s->check, coro__sched_handle_closed);
    uv_close((uv_handle_t *)&s->idle, coro__sched_handle_closed);
    uv_close((uv_handle_t *)&s->timer, coro__sched_handle_closed);
    uv_close((uv_handle_t *)&s->pool_timer, coro__sched_handle_closed);
    if (s->io_free)
        s->io_free(s);
    return leaked;
}

uv_loop_t *coro_sched_loop(const struct coro_sched *s)
{
    return s->loop;
}

unsigned coro_sched_count(const struct coro_sched *s)
{
    return s->count;
}

struct coro_sched *coro_sched_current(void)
{
    return coro__tls_sched;
}

void coro_sched_foreach(struct coro_sched *s,
                        int (*cb)(const struct coro_info *ci, void *ud), void *ud)
{
    struct coro_list *l;

    for (l = s->all.next; l != &s->all; l = l->next) {
        const struct coro *co = coro__container_of(l, struct coro, all);
        struct coro_info ci = {
            .id = co->id,
            .name = co->name,
            .arg = co->arg,
            .state = (enum coro_state)co->state,
            .park_reason = co->state == CORO_PARKED ? co->park_reason : NULL,
            .park_since_ms = co->park_ms,
            .spawned_ms = co->spawned_ms,
            .stack_saved = s->model == CORO_STACK_SHARED ? co->saved_len : 0,
        };

        if (cb(&ci, ud))
            break;
    }
}

int coro_spawn(struct coro_sched *s, void (*fn)(void *), void *arg, const char *name,
               struct coro **out)
{
    struct coro *co = s->free_coros;
    const void *lo;
    size_t size;

    if (co) {
        s->free_coros = co->xfer;
        s->nfree--;
    } else {
        co = coro_slab_alloc(&s->coros);
        if (!co)
            return -ENOMEM;
        if (s->model == CORO_STACK_DEDICATED &&
            coro__stack_map(s->stack_size, s->guard, &co->stack) < 0) {
            coro_slab_free(&s->coros, co);
            return -ENOMEM;
        }
    }
    co->sched = s;
    co->fn = fn;
    co->arg = arg;
    co->name = name ? name : "coro";
    co->park_reason = NULL;
    co->id = s->next_id++;
    co->spawned_ms = co->park_ms = s->loop->time;
    co->xfer = NULL;
    co->heap_idx = CORO_NO_TIMER;
    co->wake_result = 0;
    co->flags = CORO_F_FRESH;
    coro_list_init(&co->link);
    stack_bounds(s, co, &lo, &size);
    coro__ctx_make(&co->ctx, (void *)lo, (char *)lo + size, coro_entry);
    coro_list_add_tail(&s->all, &co->all);
    if (++s->count > s->count_peak)
        s->count_peak = s->count;
    DTRACE_PROBE2(coro, spawn, co->id, co->name);
    make_ready(s, co);
    if (out)
        *out = co;
    return 0;
}

struct coro *coro_self(void)
{
    return coro__tls_sched ? coro__tls_sched->current : NULL;
}

uint64_t coro_id(const struct coro *co)
{
    return co->id;
}

const char *coro_name(const struct coro *co)
{
    return co->name;
}

int coro__park(const char *reason, int64_t timeout_ms, int interruptible)
{
    struct coro_sched *s = coro__tls_sched;
    struct coro *co = s ? s->current : NULL;

    if (!co) {
        fprintf(stderr, "coro: park(\"%s\") outside a coroutine; aborting\n", reason);
        abort();
    }
    if (interruptible && (co->flags & CORO_F_CANCEL_PENDING)) {
        co->flags &= ~CORO_F_CANCEL_PENDING;
        return UV_ECANCELED;
    }
    co->state = CORO_PARKED;
    co->park_reason = reason;
    co->park_ms = s->loop->time;   /* uv_now() without the call */
    co->wake_result = 0;
    if (interruptible)
        co->flags &= ~CORO_F_UNINTERRUPTIBLE;
    else
        co->flags |= CORO_F_UNINTERRUPTIBLE;
    co->flags &= ~CORO_F_TIMED;
    if (timeout_ms >= 0) {
        co->deadline = co->park_ms + (uint64_t)timeout_ms;
        if (heap_arm(s, co) < 0) {
            co->state = CORO_RUNNING;
            return -ENOMEM;
        }
        co->flags |= CORO_F_TIMED;
    }
    DTRACE_PROBE2(coro, park, co->id, reason);
    return switch_out(s, co);
}

int coro_park(const char *reason, int64_t timeout_ms)
{
    return coro__park(reason, timeout_ms, 1);
}

int coro_park_uninterruptible(const char *reason, int64_t timeout_ms)
{
    return coro__park(reason, timeout_ms, 0);
}

void coro_wake(struct coro *co, int result)
{
    struct coro_sched *s = co->sched;

    if (co->state != CORO_PARKED)
        return;
    /* Its timer entry, if any, stays: see "Deadlines are lazy" above. */
    coro_list_del(&co->link);      /* from an event's waiters, if it was on one */
    co->wake_result = result;
    make_ready(s, co);
}

void coro_cancel(struct coro *co)
{
    co->flags |= CORO_F_CANCELLED;
    if (co->state == CORO_PARKED && !(co->flags & CORO_F_UNINTERRUPTIBLE))
        coro_wake(co, UV_ECANCELED);
    else if (co->state != CORO_DEAD)
        co->flags |= CORO_F_CANCEL_PENDING;
}

int coro_is_cancelled(const struct coro *co)
{
    return (co->flags & CORO_F_CANCELLED) != 0;
}

int coro_yield(void)
{
    struct coro_sched *s = coro__tls_sched;
    struct coro *co = s->current;

    if (co->flags & CORO_F_CANCEL_PENDING) {
        co->flags &= ~CORO_F_CANCEL_PENDING;
        return UV_ECANCELED;
    }
    co->park_reason = "yield";
    co->park_ms = s->loop->time;
    co->wake_result = 0;
    make_ready(s, co);
    return switch_out(s, co);
}

int coro_sleep(uint64_t ms)
{
    struct coro_sched *s = coro__tls_sched;
    uint64_t until = uv_now(s->loop) + ms;
    int err;

    for (;;) {
        uint64_t now = uv_now(s->loop);

        if (now >= until)
            return 0;
        err = coro_park("sleep", (int64_t)(until - now));
        if (err == UV_ECANCELED)
            return err;
    }
}

const char *coro_switch_name(void)
{
    return CORO_SWITCH_NAME;
}
