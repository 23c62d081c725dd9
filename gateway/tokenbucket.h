/* gateway/tokenbucket.h — a token bucket: <rate> tokens per second, at most <burst> saved.
 *
 * Refilled lazily from a monotonic millisecond clock that the caller passes in (uv_now()
 * in a worker), so a bucket costs no timer and no syscall. Tokens are kept in thousandths
 * so that slow rates (1/s) refill smoothly per millisecond. A bucket is not thread-safe:
 * one owner (a connection, a worker) uses it.
 */
#ifndef CG_TOKENBUCKET_H
#define CG_TOKENBUCKET_H

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

#endif
