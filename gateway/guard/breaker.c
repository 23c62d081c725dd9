/* gateway/guard/breaker.c — the overload breaker's state machine and its samples of memory
 * and descriptors. (Each server's failure breaker is core/upstream.c's.) */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "guard/breaker.h"
#include "base/log.h"
#include "common/rand.h"

#define PERMILLE   1000u
#define NS_PER_MS  1000000ull

static struct cg_ratelimit transition_log = CG_RATELIMIT_INIT(10000, 30);

/* ------------------------------------------------------------------ names */

const char *cg_brk_state_name(int state)
{
    static const char *const names[] = { "closed", "open", "half_open" };

    return state >= 0 && state < CG_BRK_NSTATES ? names[state] : "?";
}

const char *cg_brk_mode_name(int mode)
{
    static const char *const names[] = { "auto", "force-open", "force-closed" };

    return mode >= 0 && mode <= CG_BRK_FORCE_CLOSED ? names[mode] : "?";
}

const char *cg_brk_why_name(int why)
{
    static const char *const names[] = {
        "connections", "worker_connections", "memory", "fds", "sched_latency", "open_for",
        "resumed", "forced", "start",
    };

    _Static_assert(sizeof(names) / sizeof(names[0]) == CG_BRKW_N, "one name per reason");
    return why >= 0 && why < CG_BRKW_N ? names[why] : "?";
}

/* ------------------------------------------------------------------ memory */

/* Reads the first number of the file at <path> ("max" reads as 0). */
static uint64_t read_number(const char *path)
{
    char buf[64];
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return 0;
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtoull(buf, NULL, 10);
}

uint64_t cg_breaker_memory_auto(void)
{
    struct sysinfo si;
    uint64_t total = 0, cg;

    if (sysinfo(&si) == 0)
        total = (uint64_t)si.totalram * si.mem_unit;
    /* cgroup v2, then v1 (whose "no limit" is a huge number) */
    cg = read_number("/sys/fs/cgroup/memory.max");
    if (!cg)
        cg = read_number("/sys/fs/cgroup/memory/memory.limit_in_bytes");
    if (cg && (!total || cg < total))
        total = cg;
    return total / 10 * 9;
}

int cg_breaker_sample(struct cg_breaker *b, uint64_t fds)
{
    char buf[128];
    unsigned long long size, resident;
    ssize_t n;
    int fd, err = 0;

    atomic_store_explicit(&b->fds, fds, memory_order_relaxed);
    fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    n = read(fd, buf, sizeof(buf) - 1);
    if (n < 0)
        err = -errno;
    close(fd);
    if (n <= 0)
        return err ? err : -EIO;
    buf[n] = '\0';
    if (sscanf(buf, "%llu %llu", &size, &resident) != 2)
        return -EIO;
    atomic_store_explicit(&b->rss, (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE),
                          memory_order_relaxed);
    return 0;
}

/* ------------------------------------------------------------------ the breaker */

#define W_STATE(w)  ((int)((w) & 3))
#define W_WHY(w)    ((int)(((w) >> 2) & 63))
#define W_SINCE(w)  ((w) >> 8)
#define W_MAKE(since, why, state) \
    ((uint64_t)(since) << 8 | (uint64_t)(why) << 2 | (uint64_t)(state))

static void set_limits(struct cg_breaker *b, const struct cg_config *cfg)
{
    const struct cg_breaker_conf *bc = &cfg->brk;

    atomic_store(&b->max_conns, cfg->gw.max_connections);
    atomic_store(&b->max_per_worker, bc->max_conns_per_worker);
    atomic_store(&b->memory_auto, bc->memory_auto);
    atomic_store(&b->memory_watermark, bc->memory_auto ? cg_breaker_memory_auto()
                                                       : bc->memory_watermark);
    atomic_store(&b->fd_watermark, bc->fd_watermark);
    atomic_store(&b->open_for_ms, bc->open_for_ms);
    atomic_store(&b->resume, bc->resume * 10);
    atomic_store(&b->check_interval_ms, bc->check_interval_ms);
    atomic_store(&b->sched_window_ms, bc->sched_window_ms);
    atomic_store(&b->sched_threshold_ns, bc->sched_latency_ms * NS_PER_MS);
    if (!bc->sched_latency_ms)
        atomic_store(&b->sched_p99_ns, 0);      /* off: no stale sample trips it */
    cg_tbs_set(&b->trickle, bc->half_open_rate, 1);
}

struct cg_breaker *cg_breaker_new(const struct cg_config *cfg, uint64_t nofile)
{
    struct cg_breaker *b = calloc(1, sizeof(*b));

    if (!b)
        return NULL;
    if (pthread_mutex_init(&b->lock, NULL) != 0) {
        free(b);
        errno = ENOMEM;
        return NULL;
    }
    b->nofile = nofile;
    atomic_init(&b->word, W_MAKE(uv_hrtime() / NS_PER_MS, CG_BRKW_START, CG_BRK_CLOSED));
    cg_tbs_init(&b->trickle, cfg->brk.half_open_rate, 1);
    set_limits(b, cfg);
    return b;
}

void cg_breaker_free(struct cg_breaker *b)
{
    if (!b)
        return;
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void cg_breaker_apply(struct cg_breaker *b, const struct cg_config *cfg)
{
    set_limits(b, cfg);
}

static unsigned permille(uint64_t used, uint64_t limit)
{
    uint64_t p;

    if (!limit)
        return 0;
    p = used >= UINT64_MAX / PERMILLE ? UINT32_MAX : used * PERMILLE / limit;
    return p > UINT32_MAX ? UINT32_MAX : (unsigned)p;
}

unsigned cg_breaker_use(struct cg_breaker *b, uint64_t conns, uint64_t wconns, int *res,
                        unsigned *each)
{
    unsigned u[CG_BRKW_NRES], best = 0, i;
    uint64_t fdlim = b->nofile * atomic_load_explicit(&b->fd_watermark, memory_order_relaxed)
                     / 100;
    int which = CG_BRKW_CONNECTIONS;

    u[CG_BRKW_CONNECTIONS] = permille(conns, atomic_load_explicit(&b->max_conns,
                                                                  memory_order_relaxed));
    u[CG_BRKW_WORKER] = permille(wconns, atomic_load_explicit(&b->max_per_worker,
                                                              memory_order_relaxed));
    u[CG_BRKW_MEMORY] = permille(atomic_load_explicit(&b->rss, memory_order_relaxed),
                                 atomic_load_explicit(&b->memory_watermark,
                                                      memory_order_relaxed));
    u[CG_BRKW_FDS] = permille(atomic_load_explicit(&b->fds, memory_order_relaxed), fdlim);
    u[CG_BRKW_SCHED] = permille(atomic_load_explicit(&b->sched_p99_ns, memory_order_relaxed),
                                atomic_load_explicit(&b->sched_threshold_ns,
                                                     memory_order_relaxed));
    for (i = 0; i < CG_BRKW_NRES; i++) {
        if (u[i] > best) {
            best = u[i];
            which = (int)i;
        }
    }
    if (res)
        *res = which;
    if (each)
        memcpy(each, u, sizeof(u));
    return best;
}

/* Logs and records a transition that this thread won. */
static void record(struct cg_breaker *b, int from, int to, int why, unsigned use,
                   uint64_t now_ms)
{
    struct cg_brk_event *ev;
    struct timespec ts;
    char what[160];

    atomic_fetch_add(&b->entered[to], 1);
    if (to == CG_BRK_OPEN)
        atomic_fetch_add(&b->trips[why], 1);
    clock_gettime(CLOCK_REALTIME, &ts);
    pthread_mutex_lock(&b->lock);
    ev = &b->hist[b->nhist++ % CG_BRK_HISTORY];
    ev->at_ms = now_ms;
    ev->wall_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / NS_PER_MS;
    ev->use = use;
    ev->from = (uint8_t)from;
    ev->to = (uint8_t)to;
    ev->why = (uint8_t)why;
    pthread_mutex_unlock(&b->lock);

    if (why == CG_BRKW_SCHED)
        snprintf(what, sizeof(what), "sched latency: %s p99 of worker %u at %u.%u%% of "
                 "sched_latency_threshold (%llu us)",
                 atomic_load(&b->sched_kind) == CG_SCHED_CORO ? "coroutine ready-to-run"
                                                              : "run-queue",
                 atomic_load(&b->sched_worker), use / 10, use % 10,
                 (unsigned long long)atomic_load(&b->sched_threshold_ns) / 1000);
    else if (why < CG_BRKW_NRES)
        snprintf(what, sizeof(what), "%s at %u.%u%% of the limit", cg_brk_why_name(why),
                 use / 10, use % 10);
    else if (why == CG_BRKW_RESUMED)
        snprintf(what, sizeof(what), "use %u.%u%% below resume %u%%", use / 10, use % 10,
                 atomic_load(&b->resume) / 10);
    else
        snprintf(what, sizeof(what), "%s", cg_brk_why_name(why));
    if (to == CG_BRK_OPEN)
        cg_log_ratelimited(&transition_log, CG_LOG_WARN, "breaker: %s -> %s: %s; refusing new "
                           "connections for at least %llu ms", cg_brk_state_name(from),
                           cg_brk_state_name(to), what,
                           (unsigned long long)atomic_load(&b->open_for_ms));
    else if (to == CG_BRK_HALF_OPEN)
        cg_log_ratelimited(&transition_log, CG_LOG_NOTICE, "breaker: %s -> %s: %s; admitting "
                           "a trickle", cg_brk_state_name(from), cg_brk_state_name(to), what);
    else
        cg_log_ratelimited(&transition_log, CG_LOG_NOTICE, "breaker: %s -> %s: %s",
                           cg_brk_state_name(from), cg_brk_state_name(to), what);
}

/* Moves <b> from the state in *<w> to <to>. Returns 1 when this thread did it (*<w> then
 * holds the new word), 0 when another changed the word first (*<w> holds that). */
static int transition(struct cg_breaker *b, uint64_t *w, int to, int why, unsigned use,
                      uint64_t now_ms)
{
    uint64_t nw = W_MAKE(now_ms, why, to);
    int from = W_STATE(*w);

    if (!atomic_compare_exchange_strong(&b->word, w, nw))
        return 0;
    *w = nw;
    record(b, from, to, why, use, now_ms);
    return 1;
}

/* Retry-After for a refusal at <now_ms> while the breaker's word is <w>: the time the
 * breaker stays open (open_for when forced open, a second when a half-open trickle is
 * spent), plus a jitter of up to half of open_for. Refused clients would otherwise all
 * come back in the second the breaker half-opens, the next wave it must refuse. */
static unsigned retry_after_s(struct cg_breaker *b, uint64_t w, uint64_t now_ms)
{
    uint64_t open_for = atomic_load_explicit(&b->open_for_ms, memory_order_relaxed);
    uint64_t left = 1000, end = W_SINCE(w) + open_for;

    if (atomic_load_explicit(&b->mode, memory_order_relaxed) == CG_BRK_FORCE_OPEN)
        left = open_for > 1000 ? open_for : 1000;
    else if (W_STATE(w) == CG_BRK_OPEN && end > now_ms)
        left = end - now_ms;
    left += cg_rand_below(open_for / 2 + 1);
    left = (left + 999) / 1000;
    return left < 1 ? 1 : left > 3600 ? 3600 : (unsigned)left;
}

unsigned cg_breaker_retry_after(struct cg_breaker *b, uint64_t now_ms)
{
    return retry_after_s(b, atomic_load_explicit(&b->word, memory_order_acquire), now_ms);
}

int cg_breaker_admit(struct cg_breaker *b, unsigned use, int res, uint64_t now_ms,
                     unsigned *retry_s)
{
    int mode = atomic_load_explicit(&b->mode, memory_order_relaxed);
    uint64_t w = atomic_load_explicit(&b->word, memory_order_acquire);

    if (mode == CG_BRK_FORCE_CLOSED)
        return 1;
    if (mode == CG_BRK_FORCE_OPEN) {
        *retry_s = retry_after_s(b, w, now_ms);
        return 0;
    }
    for (;;) {
        switch (W_STATE(w)) {
        case CG_BRK_CLOSED:
            if (use < PERMILLE)
                return 1;
            if (!transition(b, &w, CG_BRK_OPEN, res, use, now_ms))
                continue;
            *retry_s = retry_after_s(b, w, now_ms);
            return 0;
        case CG_BRK_OPEN:
            if (now_ms < W_SINCE(w) + atomic_load_explicit(&b->open_for_ms,
                                                           memory_order_relaxed)) {
                *retry_s = retry_after_s(b, w, now_ms);
                return 0;
            }
            transition(b, &w, CG_BRK_HALF_OPEN, CG_BRKW_OPEN_FOR, use, now_ms);
            continue;
        default:        /* CG_BRK_HALF_OPEN */
            if (use >= PERMILLE) {
                if (!transition(b, &w, CG_BRK_OPEN, res, use, now_ms))
                    continue;
                *retry_s = retry_after_s(b, w, now_ms);
                return 0;
            }
            if (use < atomic_load_explicit(&b->resume, memory_order_relaxed)) {
                if (!transition(b, &w, CG_BRK_CLOSED, CG_BRKW_RESUMED, use, now_ms))
                    continue;
                return 1;
            }
            if (cg_tbs_take(&b->trickle, now_ms * NS_PER_MS, NULL))
                return 1;
            *retry_s = retry_after_s(b, w, now_ms);
            return 0;
        }
    }
}

void cg_breaker_trip(struct cg_breaker *b, int res, unsigned use, uint64_t now_ms)
{
    uint64_t w = atomic_load(&b->word);

    if (atomic_load(&b->mode) != CG_BRK_AUTO)
        return;
    while (W_STATE(w) != CG_BRK_OPEN && !transition(b, &w, CG_BRK_OPEN, res, use, now_ms))
        ;
}

void cg_breaker_tick(struct cg_breaker *b, unsigned use, int res, uint64_t now_ms)
{
    uint64_t w = atomic_load(&b->word);

    if (atomic_load(&b->mode) != CG_BRK_AUTO)
        return;
    switch (W_STATE(w)) {
    case CG_BRK_CLOSED:
        if (use >= PERMILLE)
            transition(b, &w, CG_BRK_OPEN, res, use, now_ms);
        break;
    case CG_BRK_OPEN:
        if (now_ms >= W_SINCE(w) + atomic_load(&b->open_for_ms))
            transition(b, &w, CG_BRK_HALF_OPEN, CG_BRKW_OPEN_FOR, use, now_ms);
        break;
    default:
        if (use >= PERMILLE)
            transition(b, &w, CG_BRK_OPEN, res, use, now_ms);
        else if (use < atomic_load(&b->resume))
            transition(b, &w, CG_BRK_CLOSED, CG_BRKW_RESUMED, use, now_ms);
        break;
    }
}

int cg_breaker_set_mode(struct cg_breaker *b, int mode, uint64_t now_ms)
{
    int old = atomic_exchange(&b->mode, mode);
    uint64_t w = atomic_load(&b->word);
    int to = mode == CG_BRK_FORCE_OPEN ? CG_BRK_OPEN : mode == CG_BRK_FORCE_CLOSED
                                                       ? CG_BRK_CLOSED : CG_BRK_HALF_OPEN;

    /* Back to auto: only a forced open hands over to half-open; otherwise the state in
     * force stays and use moves it on. */
    if (mode == CG_BRK_AUTO && !(old == CG_BRK_FORCE_OPEN && W_STATE(w) == CG_BRK_OPEN))
        return old;
    while (W_STATE(w) != to && !transition(b, &w, to, CG_BRKW_FORCED, 0, now_ms))
        ;
    return old;
}

int cg_breaker_state(const struct cg_breaker *b, uint64_t *since_ms, int *why)
{
    uint64_t w = atomic_load(&b->word);

    if (since_ms)
        *since_ms = W_SINCE(w);
    if (why)
        *why = W_WHY(w);
    return W_STATE(w);
}

void cg_breaker_sched_sample(struct cg_breaker *b, uint64_t p99_ns, unsigned worker, int kind,
                             uint64_t now_ms)
{
    uint64_t thr = atomic_load_explicit(&b->sched_threshold_ns, memory_order_relaxed);

    atomic_store_explicit(&b->sched_worker, worker, memory_order_relaxed);
    atomic_store_explicit(&b->sched_kind, kind, memory_order_relaxed);
    atomic_store_explicit(&b->sched_p99_ns, p99_ns, memory_order_relaxed);
    /* Open now, from the sampling thread: the breaker's timer runs on worker 0, which may
     * be the very worker that does not get the CPU (seen: starved for seconds behind CPU
     * hogs, its timer with it, while the p99 read 13 ms). */
    if (thr && p99_ns >= thr)
        cg_breaker_trip(b, CG_BRKW_SCHED, permille(p99_ns, thr), now_ms);
}

size_t cg_breaker_history(struct cg_breaker *b, struct cg_brk_event *out, size_t max)
{
    uint64_t first, i;
    size_t n = 0;

    pthread_mutex_lock(&b->lock);
    first = b->nhist > CG_BRK_HISTORY ? b->nhist - CG_BRK_HISTORY : 0;
    if (b->nhist - first > max)
        first = b->nhist - max;
    for (i = first; i < b->nhist; i++)
        out[n++] = b->hist[i % CG_BRK_HISTORY];
    pthread_mutex_unlock(&b->lock);
    return n;
}
