/* gateway/guard/tokenbucket.c — lazily refilled token buckets. */
#include "guard/tokenbucket.h"

#define NS_PER_S 1000000000ull

#define MILLI 1000

/* Token counts are capped so that a full bucket minus a full debt still fits an int64_t
 * in thousandths: 2^61 / 1000 tokens is more than any rate limit needs. */
#define TOKENS_MAX (((int64_t)1 << 61) / MILLI)

static int64_t clamp_tokens(uint64_t n)
{
    return n > (uint64_t)TOKENS_MAX ? TOKENS_MAX : (int64_t)n;
}

void cg_tb_init(struct cg_tokenbucket *tb, uint64_t rate, uint64_t burst, uint64_t now_ms)
{
    if (burst == 0)
        burst = rate ? rate : 1;
    tb->rate = rate;
    tb->cap = clamp_tokens(burst) * MILLI;
    tb->milli = tb->cap;
    tb->last_ms = now_ms;
}

/* One token per second is one milli-token per millisecond: rate x elapsed_ms milli. */
static void refill(struct cg_tokenbucket *tb, uint64_t now_ms)
{
    uint64_t el, room;

    if (now_ms <= tb->last_ms)
        return;
    el = now_ms - tb->last_ms;
    tb->last_ms = now_ms;
    room = (uint64_t)(tb->cap - tb->milli);     /* > 0 also when in debt */
    if (el >= room / tb->rate + 1)
        tb->milli = tb->cap;
    else
        tb->milli += (int64_t)(el * tb->rate);
    if (tb->milli > tb->cap)
        tb->milli = tb->cap;
}

int cg_tb_take(struct cg_tokenbucket *tb, uint64_t n, uint64_t now_ms)
{
    int64_t want;

    if (tb->rate == 0)
        return 1;
    refill(tb, now_ms);
    want = clamp_tokens(n) * MILLI;
    if (tb->milli < want)
        return 0;
    tb->milli -= want;
    return 1;
}

void cg_tb_force(struct cg_tokenbucket *tb, uint64_t n, uint64_t now_ms)
{
    int64_t want;

    if (tb->rate == 0)
        return;
    refill(tb, now_ms);
    want = clamp_tokens(n) * MILLI;
    /* Debt is bounded by one burst so that a single huge cost cannot stall for hours. */
    if (tb->milli - want < -tb->cap)
        tb->milli = -tb->cap;
    else
        tb->milli -= want;
}

uint64_t cg_tb_wait_ms(struct cg_tokenbucket *tb, uint64_t n, uint64_t now_ms)
{
    int64_t want;
    uint64_t missing;

    if (tb->rate == 0)
        return 0;
    refill(tb, now_ms);
    want = clamp_tokens(n) * MILLI;
    if (want > tb->cap)
        want = tb->cap;
    if (tb->milli >= want)
        return 0;
    missing = (uint64_t)(want - tb->milli);
    return (missing + tb->rate - 1) / tb->rate;
}

uint64_t cg_tb_available(struct cg_tokenbucket *tb, uint64_t now_ms)
{
    if (tb->rate == 0)
        return UINT64_MAX;
    refill(tb, now_ms);
    return tb->milli > 0 ? (uint64_t)tb->milli / MILLI : 0;
}

/* ------------------------------------------------------------------ shared buckets (GCRA) */

static uint64_t pack(uint32_t rate, uint32_t burst)
{
    if (rate && burst == 0)
        burst = rate;
    return (uint64_t)rate | (uint64_t)burst << 32;
}

/* The emission interval: rounded up, so that rounding never admits more than the rate. */
static uint64_t interval_ns(uint32_t rate)
{
    return (NS_PER_S + rate - 1) / rate;
}

void cg_tbs_init(struct cg_tb_shared *tb, uint32_t rate, uint32_t burst)
{
    atomic_init(&tb->tat, 0);
    atomic_init(&tb->params, pack(rate, burst));
}

void cg_tbs_set(struct cg_tb_shared *tb, uint32_t rate, uint32_t burst)
{
    atomic_store(&tb->params, pack(rate, burst));
}

void cg_tbs_get(const struct cg_tb_shared *tb, uint32_t *rate, uint32_t *burst)
{
    uint64_t p = atomic_load_explicit(&tb->params, memory_order_relaxed);

    *rate = (uint32_t)p;
    *burst = (uint32_t)(p >> 32);
}

/* Where the TAT goes after one more token, or 0 when that would pass the burst (then
 * *<wait_ns> says for how long). */
static uint64_t gcra_next(uint64_t tat, uint32_t rate, uint32_t burst, uint64_t now,
                          uint64_t *wait_ns)
{
    uint64_t t = interval_ns(rate), tau = (uint64_t)burst * t, next;

    next = (tat > now ? tat : now) + t;
    if (next - now > tau) {
        if (wait_ns)
            *wait_ns = next - now - tau;
        return 0;
    }
    return next;
}

int cg_gcra_take(uint64_t *tat, uint32_t rate, uint32_t burst, uint64_t now_ns,
                 uint64_t *wait_ns)
{
    uint64_t next;

    if (rate == 0)
        return 1;
    next = gcra_next(*tat, rate, burst ? burst : rate, now_ns, wait_ns);
    if (!next)
        return 0;
    *tat = next;
    return 1;
}

int cg_tbs_take(struct cg_tb_shared *tb, uint64_t now_ns, uint64_t *wait_ns)
{
    uint64_t p = atomic_load_explicit(&tb->params, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&tb->tat, memory_order_relaxed), next;
    uint32_t rate = (uint32_t)p, burst = (uint32_t)(p >> 32);

    if (rate == 0)
        return 1;
    do {
        next = gcra_next(old, rate, burst, now_ns, wait_ns);
        if (!next)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(&tb->tat, &old, next,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    return 1;
}

uint64_t cg_tbs_available(const struct cg_tb_shared *tb, uint64_t now_ns)
{
    uint64_t p = atomic_load_explicit(&tb->params, memory_order_relaxed);
    uint64_t tat = atomic_load_explicit(&tb->tat, memory_order_relaxed), used;
    uint32_t rate = (uint32_t)p, burst = (uint32_t)(p >> 32);

    if (rate == 0)
        return UINT64_MAX;
    used = tat > now_ns ? (tat - now_ns + interval_ns(rate) - 1) / interval_ns(rate) : 0;
    return used >= burst ? 0 : burst - used;
}
