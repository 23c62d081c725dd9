/* gateway/tokenbucket.c — lazily refilled token buckets. */
#include "tokenbucket.h"

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
