/* coro/stack.c — stack mappings, overflow detection, and the shared stack's copies.
 *
 * Every stack (the shared one, or each dedicated one) is one mapping whose lowest
 * GUARD bytes are PROT_NONE. Code is built with -fstack-clash-protection, so a frame
 * larger than a page still touches every page on the way down and an overflow faults in
 * the guard instead of writing over a neighbour. The SIGSEGV handler runs on an
 * alternate signal stack (the faulting stack is unusable), recognises a fault in the
 * running coroutine's guard, names the coroutine, and aborts. Other faults go to the
 * handler that was installed before ours.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coro-int.h"

#ifdef CORO_ASAN
#include <sanitizer/asan_interface.h>
#endif

int coro__stack_map(size_t size, size_t guard, char **map)
{
    char *p;

    p = mmap(NULL, guard + size, PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (p == MAP_FAILED)
        return -errno;
    if (mprotect(p, guard, PROT_NONE) < 0) {
        int err = -errno;

        munmap(p, guard + size);
        return err;
    }
    *map = p;
    return 0;
}

void coro__stack_unmap(char *map, size_t size, size_t guard)
{
    if (map)
        munmap(map, guard + size);
}

/* ------------------------------------------------------------------ shared stack */

/* Bytes a saved copy may exceed its need by before it is shrunk: a coroutine alternating
 * between two park depths closer than this does not realloc at every switch. */
#define SAVED_SLACK 128u

/* Saved copies come from size-class slabs (32-byte steps up to 1 KiB), not the heap. A
 * connection parks deeper while it connects or reads a handshake (~800 bytes) than where
 * it spends its life (128-224 bytes): in the heap, the small life-long copy is carved out
 * of a freed deeper one and the rest stays a hole; in slabs, each class reuses its own
 * slots. Measured on 8,000 idle WebSocket connections: 240 bytes of holes per connection
 * before, none after. */
static struct coro_slab *saved_slab(struct coro_sched *s, size_t cap)
{
    return cap > 0 && cap <= CORO_SAVED_SLAB_MAX ? &s->saved_slabs[(cap - 1) / CORO_SAVED_STEP]
                                                 : NULL;
}

void coro__saved_free(struct coro_sched *s, struct coro *co)
{
    struct coro_slab *sl;

    if (!co->saved)
        return;
    sl = saved_slab(s, co->saved_cap);
    if (sl)
        coro_slab_free(sl, co->saved);
    else
        free(co->saved);
    co->saved = NULL;
    co->saved_cap = 0;
}

int coro__stack_save(struct coro_sched *s, struct coro *co)
{
    char *sp = coro__ctx_sp(&co->ctx);
    size_t n;

    if (sp < s->shared_lo)          /* the ucontext margin may reach below the stack */
        sp = s->shared_lo;
    n = (size_t)(s->shared_top - sp);
    if (n > co->saved_cap || co->saved_cap > n + SAVED_SLACK) {
        /* Exact-ish size, so that a million parked coroutines cost what they use; a
         * buffer larger than needed (after a deeper park: a connect, a handshake read) is
         * shrunk back, since the park where a connection spends its life is usually its
         * shallowest. */
        size_t cap = n ? (n + CORO_SAVED_STEP - 1) & ~(size_t)(CORO_SAVED_STEP - 1)
                       : CORO_SAVED_STEP;
        struct coro_slab *sl;
        char *p;

        if (cap > CORO_SAVED_SLAB_MAX)
            cap = (n + 15) & ~(size_t)15;
        sl = saved_slab(s, cap);
        /* A new block, then the old one freed: the bytes are copied below anyway. */
        p = sl ? coro_slab_alloc(sl) : malloc(cap);
        if (!p)
            return -ENOMEM;
        coro__saved_free(s, co);
        co->saved = p;
        co->saved_cap = (uint32_t)cap;
    }
#ifdef CORO_ASAN
    /* The bytes include ASan redzones of the parked frames; reading them is the point. */
    ASAN_UNPOISON_MEMORY_REGION(sp, n);
#endif
    memcpy(co->saved, sp, n);
    co->saved_len = (uint32_t)n;
    return 0;
}

void coro__stack_restore(struct coro_sched *s, struct coro *co)
{
#ifdef CORO_ASAN
    /* The previous owner's frames left their poison on the shared stack. */
    ASAN_UNPOISON_MEMORY_REGION(s->shared_lo, s->stack_size);
#endif
    memcpy(s->shared_top - co->saved_len, co->saved, co->saved_len);
}

/* ------------------------------------------------------------------ overflow report */

static pthread_mutex_t   handler_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned          handler_users;
static struct sigaction  prev_segv;
static __thread void    *altstack;        /* ours, if this thread had none */
static __thread unsigned altstack_users;

#define ALTSTACK_SIZE (64u * 1024)

/* Fills <buf> with "<text><decimal>" without stdio (we are in a signal handler). */
static size_t put_str(char *buf, size_t at, size_t cap, const char *str)
{
    while (*str && at < cap)
        buf[at++] = *str++;
    return at;
}

static size_t put_u64(char *buf, size_t at, size_t cap, uint64_t v)
{
    char tmp[24];
    size_t n = 0;

    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n && at < cap)
        buf[at++] = tmp[--n];
    return at;
}

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    struct coro_sched *s = coro__tls_sched;
    struct coro *co = s ? s->current : NULL;
    char *addr = si->si_addr, *guard_lo = NULL;
    char msg[256];
    size_t n = 0;

    if (co)
        guard_lo = s->model == CORO_STACK_SHARED ? s->shared_map : co->stack;
    if (guard_lo && addr >= guard_lo && addr < guard_lo + s->guard) {
        n = put_str(msg, n, sizeof(msg), "coro: stack overflow in coroutine '");
        n = put_str(msg, n, sizeof(msg), co->name);
        n = put_str(msg, n, sizeof(msg), "' (id ");
        n = put_u64(msg, n, sizeof(msg), co->id);
        n = put_str(msg, n, sizeof(msg), ", stack ");
        n = put_u64(msg, n, sizeof(msg), s->stack_size);
        n = put_str(msg, n, sizeof(msg), " bytes, ");
        n = put_str(msg, n, sizeof(msg),
                    s->model == CORO_STACK_SHARED ? "shared" : "dedicated");
        n = put_str(msg, n, sizeof(msg), " model); aborting\n");
        if (write(STDERR_FILENO, msg, n) < 0)
            n = 0;
        signal(SIGABRT, SIG_DFL);
        abort();
    }
    /* Not ours: hand it to whoever was there before (or the default, which dumps core
     * when the faulting instruction runs again after we return). */
    if (prev_segv.sa_flags & SA_SIGINFO) {
        if (prev_segv.sa_sigaction) {
            prev_segv.sa_sigaction(sig, si, uctx);
            return;
        }
    } else if (prev_segv.sa_handler != SIG_DFL && prev_segv.sa_handler != SIG_IGN) {
        prev_segv.sa_handler(sig);
        return;
    }
    signal(SIGSEGV, SIG_DFL);
}

int coro__overflow_handler_install(void)
{
    stack_t ss;
    int err = 0;

    /* The handler needs a stack of its own on every thread that runs coroutines. */
    if (altstack_users++ == 0 && sigaltstack(NULL, &ss) == 0 && (ss.ss_flags & SS_DISABLE)) {
        void *p = mmap(NULL, ALTSTACK_SIZE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

        if (p == MAP_FAILED) {
            altstack_users--;
            return -errno;
        }
        ss.ss_sp = p;
        ss.ss_size = ALTSTACK_SIZE;
        ss.ss_flags = 0;
        if (sigaltstack(&ss, NULL) < 0) {
            err = -errno;
            munmap(p, ALTSTACK_SIZE);
            altstack_users--;
            return err;
        }
        altstack = p;
    }
    pthread_mutex_lock(&handler_lock);
    if (handler_users++ == 0) {
        struct sigaction sa;

        memset(&sa, 0, sizeof(sa));
        sa.sa_sigaction = on_segv;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGSEGV, &sa, &prev_segv) < 0) {
            err = -errno;
            handler_users--;
        }
    }
    pthread_mutex_unlock(&handler_lock);
    return err;
}

void coro__overflow_handler_release(void)
{
    pthread_mutex_lock(&handler_lock);
    if (handler_users > 0 && --handler_users == 0)
        sigaction(SIGSEGV, &prev_segv, NULL);
    pthread_mutex_unlock(&handler_lock);
    if (altstack_users > 0 && --altstack_users == 0 && altstack) {
        stack_t ss = { .ss_flags = SS_DISABLE };

        sigaltstack(&ss, NULL);
        munmap(altstack, ALTSTACK_SIZE);
        altstack = NULL;
    }
}
