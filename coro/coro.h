/* coro/coro.h — stackful coroutines on a libuv loop.
 *
 * One scheduler per uv_loop_t (so one per thread); nothing is shared between schedulers.
 * A coroutine runs until it parks (waits for I/O, a timer, an event) or yields; libuv
 * callbacks make parked coroutines ready and the scheduler resumes them right after the
 * loop's poll phase. Switching is asymmetric: a coroutine always switches back to the
 * scheduler, never directly to another coroutine.
 *
 * Two stack models, chosen per scheduler (docs/coro-stacks.md has the figures):
 *   CORO_STACK_SHARED     all coroutines run on one shared stack; a parked coroutine's
 *                         used bytes are copied aside when another one needs the stack
 *                         (libaco's copy-stack model): ~0.5 KB per parked coroutine.
 *   CORO_STACK_DEDICATED  each coroutine has its own mmap'd stack with a guard page,
 *                         pooled: at least one 4 KiB page and two VMAs per coroutine.
 *
 * Rule for both models, and the reason the API looks the way it does: nothing that the
 * loop or another coroutine holds may point into a coroutine's stack. With the shared
 * model, a parked coroutine's stack is not at its address. Requests, timers and buffers
 * live in heap objects (the coroutine itself, a coro_stream, a coro_buf).
 *
 * Errors are libuv error codes (negative errno): UV_ETIMEDOUT when a wait's timeout
 * expired, UV_ECANCELED when coro_cancel() interrupted it.
 */
#ifndef CORO_CORO_H
#define CORO_CORO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "coro-t.h"

struct coro;
struct coro_sched;

#define CORO_FOREVER (-1)  /* timeout_ms meaning "no timeout" */

enum coro_stack_model {
    CORO_STACK_SHARED = 0,
    CORO_STACK_DEDICATED = 1,
};

enum coro_state {
    CORO_READY = 0,   /* runnable, waiting for the scheduler */
    CORO_RUNNING,
    CORO_PARKED,      /* waiting; see park_reason */
    CORO_DEAD,
};

struct coro_sched_opts {
    enum coro_stack_model stack_model; /* default CORO_STACK_SHARED */
    size_t   stack_size;   /* usable bytes; default 256 KiB, rounded up to pages */
    size_t   buf_size;     /* bytes per pooled I/O buffer; default 16 KiB */
    unsigned buf_keep;     /* idle buffers kept in the pool, at most; default 4096. Those
                            * unused for a 250 ms tick beyond 8 are freed (coro/buf.c) */
    unsigned stack_keep;   /* idle dedicated stacks kept; default 256 */
    unsigned track_ready;  /* 1: time every ready-to-run delay (coro_sched_ready_stats()),
                            * at two clock reads per resume; default 0 */
};

#define CORO_READY_SLOTS 32

/* A scheduler's ready-to-run delays: from the moment a coroutine became ready (coro_wake()
 * from its I/O callback, its timer, its spawn) to the moment it runs. A log2 histogram of
 * microseconds: slot 0 counts 0..1 us, slot i 2^i..2^(i+1)-1 us, the last one all above. */
struct coro_ready_stats {
    uint64_t slots[CORO_READY_SLOTS];
    uint64_t count;
    uint64_t sum_ns;
    uint64_t max_ns;
};

/* What coro_sched_foreach() reports about one coroutine. Strings are static. */
struct coro_info {
    uint64_t        id;
    const char     *name;
    void           *arg;          /* the spawn argument, to label it (peer address...) */
    enum coro_state state;
    const char     *park_reason;  /* NULL unless parked */
    uint64_t        park_since_ms;/* loop time (uv_now) when it parked */
    uint64_t        spawned_ms;   /* loop time when it was spawned */
    size_t          stack_saved;  /* bytes saved aside (shared model) */
};

/* Creates a scheduler on <loop> (which it does not own) with <opts> (NULL = defaults).
 * Call from the loop's thread. Returns the scheduler, or NULL with errno set (ENOMEM,
 * EINVAL for a bad option, or what mmap() said). */
struct coro_sched *coro_sched_new(uv_loop_t *loop, const struct coro_sched_opts *opts);

/* Closes the scheduler's handles; the memory is freed from their close callbacks, so run
 * the loop once more afterwards. Coroutines still alive are an error in the caller: they
 * are freed without being resumed, and their count is returned (0 when clean). */
int coro_sched_free(struct coro_sched *s);

/* Runs every coroutine that is ready now (not those made ready meanwhile); the loop does
 * this by itself after each poll. Returns how many were resumed. */
unsigned coro_sched_run(struct coro_sched *s);

/* Copies <s>'s ready-to-run delays into *<out> (all 0 unless opts.track_ready). Any thread
 * may call it while <s> lives: only the scheduler's thread writes them (relaxed atomics),
 * so each value reads whole, though not all from one instant. */
void coro_sched_ready_stats(const struct coro_sched *s, struct coro_ready_stats *out);

uv_loop_t *coro_sched_loop(const struct coro_sched *s);
unsigned coro_sched_count(const struct coro_sched *s);   /* coroutines alive */

/* Calls <cb> for every live coroutine, in spawn order, until it returns non-zero. */
void coro_sched_foreach(struct coro_sched *s,
                        int (*cb)(const struct coro_info *ci, void *ud), void *ud);

/* The scheduler of the calling thread's running coroutine, or NULL outside one. */
struct coro_sched *coro_sched_current(void);

/* Creates a coroutine that will run <fn>(<arg>) on <s>; <name> (static string) labels it
 * in listings and crash reports. It starts when the scheduler next runs (after the current
 * coroutine parks, or after this loop iteration's poll). Returns 0 and, when <out> is not
 * NULL, the coroutine in <out> (valid until <fn> returns: whoever keeps it must forget it
 * then, e.g. at the end of <fn>), so that it can be cancelled before it ever ran; or
 * -ENOMEM. The coroutine frees itself when <fn> returns. */
int coro_spawn(struct coro_sched *s, void (*fn)(void *), void *arg, const char *name,
               struct coro **out);

/* The running coroutine, or NULL when called from a loop callback. */
struct coro *coro_self(void);
uint64_t coro_id(const struct coro *co);
const char *coro_name(const struct coro *co);

/* Lets other ready coroutines and the loop run, then continues. Returns 0, or
 * UV_ECANCELED when a cancel was pending. */
int coro_yield(void);

/* Parks the running coroutine until coro_wake() or <timeout_ms> (CORO_FOREVER = none).
 * <reason> (static string) shows in listings and USDT probes. Returns what the waker
 * passed (0 normally), UV_ETIMEDOUT, or UV_ECANCELED if coro_cancel() was called before
 * or during the wait. Wakes may be spurious: park sites re-check their condition. */
int coro_park(const char *reason, int64_t timeout_ms);

/* Like coro_park() but coro_cancel() does not interrupt it (the cancel stays pending for
 * the next cancellable wait). For waits that must finish, such as closing a handle. */
int coro_park_uninterruptible(const char *reason, int64_t timeout_ms);

/* Makes <co> ready if it is parked, so its coro_park() returns <result>; otherwise does
 * nothing. Callable from loop callbacks and from other coroutines of the same scheduler. */
void coro_wake(struct coro *co, int result);

/* Interrupts <co>'s current cancellable wait with UV_ECANCELED, or its next one if it is
 * not waiting now. The coroutine decides what to do (drain, close, return). Sticky flag
 * readable with coro_is_cancelled(). */
void coro_cancel(struct coro *co);
int coro_is_cancelled(const struct coro *co);

/* Sleeps <ms> milliseconds of loop time. Returns 0 or UV_ECANCELED. */
int coro_sleep(uint64_t ms);

/* ---------------------------------------------------------------------------------------
 * Events and channels between coroutines of one scheduler.
 */

/* A wait queue with a "signalled" count: coro_event_signal() wakes one waiter, or, when
 * nobody waits, lets the next wait return at once. The struct may live anywhere but on a
 * coroutine stack (embed it in a heap object). */
void coro_event_init(struct coro_event *ev);

/* Waits for a signal. Returns 0, UV_ETIMEDOUT or UV_ECANCELED. */
int coro_event_wait(struct coro_event *ev, const char *reason, int64_t timeout_ms);
void coro_event_signal(struct coro_event *ev);     /* wake one, or remember one signal */
void coro_event_broadcast(struct coro_event *ev);  /* wake all current waiters */
unsigned coro_event_waiters(const struct coro_event *ev);

/* A bounded FIFO of pointers. Returns NULL (errno ENOMEM/EINVAL) on failure. */
struct coro_chan *coro_chan_new(unsigned capacity);
/* Frees the channel (NULL-safe); its waiters must be gone: close it and let them run. */
void coro_chan_free(struct coro_chan *ch);
/* Sends <v>, waiting while full. Returns 0, UV_EPIPE when closed, UV_ETIMEDOUT or
 * UV_ECANCELED. The channel keeps the pointer, not what it points to. */
int coro_chan_send(struct coro_chan *ch, void *v, int64_t timeout_ms);
/* Receives into <*v>, waiting while empty. Returns 0, UV_EOF when closed and drained,
 * UV_ETIMEDOUT or UV_ECANCELED. */
int coro_chan_recv(struct coro_chan *ch, void **v, int64_t timeout_ms);
/* Wakes every waiter; later sends fail with UV_EPIPE, receives drain then UV_EOF. */
void coro_chan_close(struct coro_chan *ch);

/* The context switch this build uses: "asm-x86_64", "asm-aarch64" or "ucontext". */
const char *coro_switch_name(void);

#endif
