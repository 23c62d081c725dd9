/* gateway/guard/tokenbucket.h — a token bucket: <rate> tokens per second, at most <burst> saved.
 *
 * Refilled lazily from a monotonic millisecond clock that the caller passes in (uv_now()
 * in a worker), so a bucket costs no timer and no syscall. Tokens are kept in thousandths
 * so that slow rates (1/s) refill smoothly per millisecond. A bucket is not thread-safe:
 * one owner (a connection, a worker) uses it.
 */
#ifndef CG_TOKENBUCKET_H
#define CG_TOKENBUCKET_H

#include <stdatomic.h>
#include <stdint.h>

struct cg_tokenbucket {
    int64_t  milli;      /* tokens x 1000; negative = debt (cg_tb_force) */
    int64_t  cap;        /* burst x 1000 */
    uint64_t rate;       /* tokens per second; 0 = unlimited */
    uint64_t last_ms;    /* clock of the last refill */
};

/* Sets <tb> to <rate> tokens/s (0 = unlimited: every take succeeds) holding at most
 * <burst> tokens (0 means <rate>, and at least 1), full at <now_ms>. */
void cg_tb_init(struct cg_tokenbucket *tb, uint64_t rate, uint64_t burst, uint64_t now_ms);

/* Takes <n> tokens if the bucket holds them at <now_ms>: returns 1, or 0 (nothing taken). */
int cg_tb_take(struct cg_tokenbucket *tb, uint64_t n, uint64_t now_ms);

/* Takes <n> tokens whatever the bucket holds, going into debt if need be (a cost known
 * only after the fact, such as bytes already read). */
void cg_tb_force(struct cg_tokenbucket *tb, uint64_t n, uint64_t now_ms);

/* Milliseconds from <now_ms> until the bucket holds <n> tokens (0: now). <n> above the
 * burst is clamped to the burst. Unlimited buckets always return 0. */
uint64_t cg_tb_wait_ms(struct cg_tokenbucket *tb, uint64_t n, uint64_t now_ms);

/* Whole tokens available at <now_ms> (0 when in debt). */
uint64_t cg_tb_available(struct cg_tokenbucket *tb, uint64_t now_ms);

static inline int cg_tb_is_unlimited(const struct cg_tokenbucket *tb)
{
    return tb->rate == 0;
}

/* ------------------------------------------------------------------ shared buckets
 *
 * A bucket taken from by several threads at once (a listener's new connections, taken by
 * every worker): GCRA, the "virtual scheduling" form of a token bucket. The whole state is
 * one atomic 64-bit word, the theoretical arrival time (TAT) of the next token in
 * nanoseconds of the caller's monotonic clock; a take is a compare-and-swap that moves it
 * one emission interval (1e9 / rate ns, rounded up) into the future, allowed while the
 * TAT stays within the burst (burst x interval) of now. It refills lazily by the passing
 * of time, never admits more than burst + rate x elapsed, and is exact under any number of
 * threads: each successful CAS is one token. Rate and burst live in a second atomic word
 * so that they can change at run time (set rate, reload) without a lock.
 */

struct cg_tb_shared {
    _Atomic uint64_t tat;       /* ns; <= now means a full bucket */
    _Atomic uint64_t params;    /* rate (low 32 bits, 0 = unlimited) | burst << 32 */
};

/* Sets <tb> to <rate> tokens/s (0 = unlimited) holding at most <burst> (0 means <rate>,
 * and at least 1), full. Not concurrent with takes: at creation. */
void cg_tbs_init(struct cg_tb_shared *tb, uint32_t rate, uint32_t burst);

/* Changes <tb>'s rate and burst (same meaning as cg_tbs_init()) while other threads take
 * from it. Recent takes stay taken, as the time until the bucket is full again. Any
 * thread. */
void cg_tbs_set(struct cg_tb_shared *tb, uint32_t rate, uint32_t burst);

/* The rate and burst in force (the burst resolved: never 0 unless the rate is). */
void cg_tbs_get(const struct cg_tb_shared *tb, uint32_t *rate, uint32_t *burst);

/* Takes one token at <now_ns> (a monotonic clock, e.g. uv_hrtime()): returns 1, or 0 with
 * *<wait_ns> (may be NULL) set to how long until one is there. Any thread, lock-free. */
int cg_tbs_take(struct cg_tb_shared *tb, uint64_t now_ns, uint64_t *wait_ns);

/* Whole tokens available at <now_ns> (UINT64_MAX when unlimited). */
uint64_t cg_tbs_available(const struct cg_tb_shared *tb, uint64_t now_ns);

/* The same GCRA step on a plain TAT word that the caller guards (a per-IP entry under its
 * stripe lock): <rate> 0 = unlimited, <burst> as in cg_tbs_init(). Returns 1 (token taken,
 * *<tat> advanced) or 0 with *<wait_ns> (may be NULL) set. */
int cg_gcra_take(uint64_t *tat, uint32_t rate, uint32_t burst, uint64_t now_ns,
                 uint64_t *wait_ns);

#endif
