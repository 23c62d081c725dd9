/* gateway/guard/breaker.h — connection quotas and the overload circuit breaker.
 *
 * The overload breaker watches how much of each limit is in use, as permille of the point
 * where it trips (1000 = at it): connections against [gateway] max_connections, the
 * accepting worker's against max_connections_per_worker, the resident memory against
 * memory_watermark and (an estimate of) open descriptors against fd_watermark percent of
 * RLIMIT_NOFILE, and the scheduling delay of the workers against sched_latency_threshold:
 * the worst p99, over every worker, of run-queue latency (eBPF) and coroutine ready-to-run
 * delay over the last sched_latency_window (schedlat.h), so that admission reacts to a
 * starved or saturated worker before connection counts reach their quotas. Connection
 * counts are read at each accept; memory and descriptors are sampled every check_interval
 * by one worker's timer, which also moves the states along when no connection arrives; the
 * scheduling delay is sampled as often by the main thread (cg_schedlat_watch()), which
 * opens the breaker itself when the delay reaches its threshold (a starved worker 0 would
 * tick the breaker late, if at all).
 *
 *   CLOSED     admit. Any use at 100%: OPEN.
 *   OPEN       refuse every new connection, for at least open_for; then HALF_OPEN.
 *   HALF_OPEN  use at 100%: OPEN again; use below resume (90%): CLOSED; in between, admit
 *              a trickle of half_open_rate connections/s and refuse the rest.
 *
 * The state, the reason and the time it was entered are one atomic word: whichever
 * thread wins the compare-and-swap of a transition counts it, keeps it in a short history
 * and logs it (rate-limited), so concurrent workers never log one transition twice. An
 * operator may force it open or closed (`set breaker`); forced closed, the quotas
 * themselves still refuse what goes over them.
 */
#ifndef CG_BREAKER_H
#define CG_BREAKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "config/config.h"
#include "guard/tokenbucket.h"

enum cg_brk_state {
    CG_BRK_CLOSED,
    CG_BRK_OPEN,
    CG_BRK_HALF_OPEN,
    CG_BRK_NSTATES,
};

enum cg_brk_mode {
    CG_BRK_AUTO,
    CG_BRK_FORCE_OPEN,
    CG_BRK_FORCE_CLOSED,
};

/* Why a transition happened: the first CG_BRKW_NRES are the watched resources. */
enum cg_brk_why {
    CG_BRKW_CONNECTIONS,        /* connections, all workers, vs max_connections */
    CG_BRKW_WORKER,             /* one worker's connections vs max_connections_per_worker */
    CG_BRKW_MEMORY,             /* resident memory vs memory_watermark */
    CG_BRKW_FDS,                /* open descriptors vs fd_watermark */
    CG_BRKW_SCHED,              /* scheduling delay p99 vs sched_latency_threshold */
    CG_BRKW_NRES,
    CG_BRKW_OPEN_FOR = CG_BRKW_NRES,    /* open_for elapsed */
    CG_BRKW_RESUMED,            /* every use below resume */
    CG_BRKW_FORCED,             /* set breaker */
    CG_BRKW_START,              /* the daemon started */
    CG_BRKW_N,
};

#define CG_BRK_HISTORY 32

struct cg_brk_event {
    uint64_t at_ms;             /* the caller's monotonic clock */
    uint64_t wall_ms;           /* CLOCK_REALTIME */
    unsigned use;               /* permille of the resource named by why, when one */
    uint8_t  from, to, why;
};

struct cg_breaker {
    _Atomic uint64_t    word;           /* since_ms << 8 | why << 2 | state */
    _Atomic int         mode;           /* enum cg_brk_mode */
    struct cg_tb_shared trickle;        /* half_open_rate */
    /* limits, replaced on reload */
    _Atomic unsigned    max_conns;      /* [gateway] max_connections; 0 = none */
    _Atomic unsigned    max_per_worker; /* 0 = none */
    _Atomic uint64_t    memory_watermark;   /* bytes; 0 = off */
    _Atomic int         memory_auto;
    _Atomic unsigned    fd_watermark;   /* percent of nofile; 0 = off */
    _Atomic uint64_t    open_for_ms;
    _Atomic unsigned    resume;         /* permille */
    _Atomic uint64_t    check_interval_ms;
    _Atomic uint64_t    sched_threshold_ns; /* sched_latency_threshold; 0 = off */
    _Atomic uint64_t    sched_window_ms;
    uint64_t            nofile;         /* RLIMIT_NOFILE */
    /* samples, written by the timer */
    _Atomic uint64_t    rss;            /* bytes */
    _Atomic uint64_t    fds;            /* estimated open descriptors */
    _Atomic uint64_t    sched_p99_ns;   /* worst scheduling p99 over the window (main thread) */
    _Atomic unsigned    sched_worker;   /* whose */
    _Atomic int         sched_kind;     /* CG_SCHED_RUNQ or CG_SCHED_CORO (schedlat.h) */
    _Atomic unsigned    use[CG_BRKW_NRES];  /* permille, as of the last tick */
    /* counters */
    _Atomic uint64_t    entered[CG_BRK_NSTATES];
    _Atomic uint64_t    trips[CG_BRKW_N];   /* transitions to OPEN, by why */
    /* history of transitions, newest last; under lock */
    pthread_mutex_t     lock;
    struct cg_brk_event hist[CG_BRK_HISTORY];
    uint64_t            nhist;          /* ever recorded */
};

/* Builds the breaker of <cfg> for a process allowed <nofile> descriptors, CLOSED. Returns
 * it (free with cg_breaker_free()) or NULL (ENOMEM). */
struct cg_breaker *cg_breaker_new(const struct cg_config *cfg, uint64_t nofile);
void cg_breaker_free(struct cg_breaker *b);

/* Applies <cfg>'s [breaker] and [gateway] max_connections to <b> (reload). Any thread. */
void cg_breaker_apply(struct cg_breaker *b, const struct cg_config *cfg);

/* The highest use of <b>'s resources, in permille of their trip points, with <conns>
 * connections open in all and <wconns> in the accepting worker (memory and descriptors as
 * last sampled); *<res> (may be NULL) gets which resource, <each> (NULL, or
 * CG_BRKW_NRES of them) every one. Off resources count 0. */
unsigned cg_breaker_use(struct cg_breaker *b, uint64_t conns, uint64_t wconns, int *res,
                        unsigned *each);

/* Decides for one new connection at <now_ms> (monotonic) when the use is <use> permille of
 * resource <res>, moving the state along. Returns 1 to admit; 0 to refuse, with
 * *<retry_s> (for Retry-After) set. Any thread, lock-free unless it makes a transition. */
int cg_breaker_admit(struct cg_breaker *b, unsigned use, int res, uint64_t now_ms,
                     unsigned *retry_s);

/* A quota was crossed at accept (resource <res>, <use> permille): CLOSED or HALF_OPEN go
 * OPEN. Nothing when forced. */
void cg_breaker_trip(struct cg_breaker *b, int res, unsigned use, uint64_t now_ms);

/* Moves the state along without a connection (the timer): CLOSED trips on a sampled use,
 * OPEN becomes HALF_OPEN after open_for, HALF_OPEN closes below resume. */
void cg_breaker_tick(struct cg_breaker *b, unsigned use, int res, uint64_t now_ms);

/* Sets the mode (`set breaker`): FORCE_OPEN opens now, FORCE_CLOSED closes now, AUTO goes
 * HALF_OPEN from a forced OPEN (so that use decides at once). Returns the previous mode. */
int cg_breaker_set_mode(struct cg_breaker *b, int mode, uint64_t now_ms);

/* Retry-After, in seconds, for a connection refused at <now_ms> while the breaker is in
 * its present state: the time it stays open, plus a jitter of up to open_for / 2 so that
 * refused clients do not return in one wave. Any thread. */
unsigned cg_breaker_retry_after(struct cg_breaker *b, uint64_t now_ms);

/* The state now; *<since_ms> and *<why> (either may be NULL) when and why it began. */
int cg_breaker_state(const struct cg_breaker *b, uint64_t *since_ms, int *why);

/* Samples the resident memory (/proc/self/statm) and records <fds> as the descriptor
 * estimate. Returns 0 or a negative errno (the memory sample is then kept). */
int cg_breaker_sample(struct cg_breaker *b, uint64_t fds);

/* Records the scheduling-delay sample: <p99_ns>, the worst p99 over the window, found on
 * worker <worker> in histogram <kind> (CG_SCHED_RUNQ, CG_SCHED_CORO), at <now_ms>; at or
 * over sched_latency_threshold it opens the breaker at once (cg_breaker_trip()), without
 * waiting for the timer of a worker that may be the starved one. Any thread. */
void cg_breaker_sched_sample(struct cg_breaker *b, uint64_t p99_ns, unsigned worker, int kind,
                             uint64_t now_ms);

/* Copies up to <max> transitions, oldest first, into <out>. Returns how many. */
size_t cg_breaker_history(struct cg_breaker *b, struct cg_brk_event *out, size_t max);

/* Which scheduling delay a sample is of (observe/schedlat.h measures both): the kernel's
 * run-queue latency of a worker thread, or a coroutine's ready-to-run delay. */
enum { CG_SCHED_RUNQ, CG_SCHED_CORO, CG_SCHED_NKINDS };

/* 90% of the memory this process may have: the smaller of the machine's and its cgroup's
 * limit (memory_watermark = auto). 0 when neither can be read. */
uint64_t cg_breaker_memory_auto(void);

const char *cg_brk_state_name(int state);   /* "closed", "open", "half_open" */
const char *cg_brk_mode_name(int mode);     /* "auto", "force-open", "force-closed" */
const char *cg_brk_why_name(int why);       /* "connections", ..., "sched_latency",
                                             * "open_for", "resumed", "forced", "start" */


#endif
