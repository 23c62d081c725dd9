/* loadgen/hist.c — log-linear latency histogram (see hist.h).
 *
 * Layout, after HdrHistogram (lowest discernible value 1, so no unit magnitude): with
 * sub_count = 2^(sub_half_mag + 1) sub-buckets per bucket, bucket b holds the values
 * [sub_half << b, sub_count << b) in steps of 2^b, except bucket 0, which also holds
 * [0, sub_half) in steps of 1. The lower half of every later bucket would repeat the previous
 * one, so only the upper sub_half slots are stored: slot = (b + 1) * sub_half + sub - sub_half,
 * where sub = v >> b.
 */
#include "hist.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define HIST_MAGIC0  0xc6
#define HIST_MAGIC1  'H'
#define HIST_VERSION 1

/* ---------------------------------------------------------------- 128-bit sums */

/* 64 x 64 -> 128 bits, in 32-bit halves so that it needs no __int128. */
static void mul_64(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo)
{
    uint64_t a0 = (uint32_t)a, a1 = a >> 32, b0 = (uint32_t)b, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (uint32_t)p01 + (uint32_t)p10;

    *lo = (mid << 32) | (uint32_t)p00;
    *hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

static void add_128(uint64_t *hi, uint64_t *lo, uint64_t add_hi, uint64_t add_lo)
{
    *lo += add_lo;
    *hi += add_hi + (*lo < add_lo);
}

/* Returns -1, 0 or 1 as a is below, equal to or above b. */
static int cmp_128(uint64_t a_hi, uint64_t a_lo, uint64_t b_hi, uint64_t b_lo)
{
    if (a_hi != b_hi)
        return a_hi < b_hi ? -1 : 1;
    return a_lo < b_lo ? -1 : a_lo > b_lo;
}

static double to_double_128(uint64_t hi, uint64_t lo)
{
    return (double)hi * 18446744073709551616.0 + (double)lo;
}

/* ---------------------------------------------------------------- slots */

static uint32_t slot_of(const struct cg_hist *h, uint64_t v)
{
    int bucket = 64 - __builtin_clzll(v | h->sub_mask) - (h->sub_half_mag + 1);

    return ((uint32_t)(bucket + 1) << h->sub_half_mag) + (uint32_t)(v >> bucket) - h->sub_half;
}

static int slot_shift(const struct cg_hist *h, uint32_t slot)
{
    int bucket = (int)(slot >> h->sub_half_mag) - 1;

    return bucket < 0 ? 0 : bucket;
}

static uint64_t slot_lowest(const struct cg_hist *h, uint32_t slot)
{
    uint64_t sub = slot & (h->sub_half - 1);

    if (slot >= h->sub_half)
        sub += h->sub_half;
    return sub << slot_shift(h, slot);
}

static uint64_t slot_highest(const struct cg_hist *h, uint32_t slot)
{
    return slot_lowest(h, slot) + ((uint64_t)1 << slot_shift(h, slot)) - 1;
}

static uint64_t clamp_u64(uint64_t v, uint64_t lo, uint64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The value reported for a slot: its highest equivalent, within what was actually seen. */
static uint64_t slot_value(const struct cg_hist *h, uint32_t slot)
{
    return clamp_u64(slot_highest(h, slot), h->min, h->max);
}

static uint64_t rank_of(const struct cg_hist *h, double p)
{
    double r;

    if (p > 100.0)
        p = 100.0;
    r = p / 100.0 * (double)h->total + 0.5;
    if (!(r >= 1.0))                        /* also NaN */
        return 1;
    if (r >= (double)h->total)
        return h->total;
    return (uint64_t)r;
}

/* ---------------------------------------------------------------- setup */

int cg_hist_init(struct cg_hist *h, uint64_t highest, int sigfigs)
{
    uint64_t single_unit = 2, untrackable;
    int mag = 0, buckets = 1, i;

    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
    if (sigfigs < 1 || sigfigs > 5 || highest < 2 || highest > INT64_MAX)
        return -EINVAL;
    for (i = 0; i < sigfigs; i++)
        single_unit *= 10;
    while (((uint64_t)1 << mag) < single_unit)
        mag++;
    h->sub_half_mag = mag - 1;
    h->sub_half = (uint32_t)1 << h->sub_half_mag;
    h->sub_mask = ((uint64_t)1 << mag) - 1;
    /* Buckets until the first untrackable value exceeds <highest>; the top one may be cut
     * short by 64 bits, as in HdrHistogram. */
    untrackable = (uint64_t)1 << mag;
    while (untrackable <= highest) {
        if (untrackable > INT64_MAX / 2) {
            buckets++;
            break;
        }
        untrackable <<= 1;
        buckets++;
    }
    h->bucket_count = buckets;
    h->counts_len = (uint32_t)(buckets + 1) * h->sub_half;
    h->highest = highest;
    h->sigfigs = sigfigs;
    h->counts = calloc(h->counts_len, sizeof(*h->counts));
    if (!h->counts) {
        memset(h, 0, sizeof(*h));
        h->min = UINT64_MAX;
        return -ENOMEM;
    }
    return 0;
}

void cg_hist_deinit(struct cg_hist *h)
{
    free(h->counts);
    h->counts = NULL;
    h->counts_len = 0;
    cg_hist_reset(h);
}

void cg_hist_reset(struct cg_hist *h)
{
    if (h->counts)
        memset(h->counts, 0, (size_t)h->counts_len * sizeof(*h->counts));
    h->total = 0;
    h->overflow = 0;
    h->min = UINT64_MAX;
    h->max = 0;
    h->sum_lo = 0;
    h->sum_hi = 0;
}

/* ---------------------------------------------------------------- recording */

void cg_hist_record(struct cg_hist *h, uint64_t v)
{
    if (v > h->highest) {
        v = h->highest;
        h->overflow++;
    }
    h->counts[slot_of(h, v)]++;
    h->total++;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    add_128(&h->sum_hi, &h->sum_lo, 0, v);
}

void cg_hist_record_n(struct cg_hist *h, uint64_t v, uint64_t n)
{
    uint64_t hi, lo;

    if (n == 0)
        return;
    if (v > h->highest) {
        v = h->highest;
        h->overflow += n;
    }
    h->counts[slot_of(h, v)] += n;
    h->total += n;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    mul_64(v, n, &hi, &lo);
    add_128(&h->sum_hi, &h->sum_lo, hi, lo);
}

/* Adds first + (first - step) + ... + last, <k> terms, to the sum of <h>. Both ends are at most
 * INT64_MAX, so first + last fits, and it is even whenever k is odd. */
static void sum_series(struct cg_hist *h, uint64_t first, uint64_t last, uint64_t k)
{
    uint64_t hi, lo, ends = first + last;

    if (k % 2 == 0)
        mul_64(k / 2, ends, &hi, &lo);
    else
        mul_64(k, ends / 2, &hi, &lo);
    add_128(&h->sum_hi, &h->sum_lo, hi, lo);
}

void cg_hist_record_corrected(struct cg_hist *h, uint64_t v, uint64_t expected_interval)
{
    uint64_t step = expected_interval, left, x, k, last, over;
    uint32_t slot;

    cg_hist_record(h, v);
    if (step == 0 || v <= step)
        return;
    /* The missing values are v - j * step for j = 1 .. left, all >= step. Rather than one
     * record each, count the run that falls into each slot at once. */
    left = v / step - 1;
    if (left == 0)
        return;
    x = v - step;
    if (x > h->highest) {
        over = (x - h->highest - 1) / step + 1;
        if (over > left)
            over = left;
        cg_hist_record_n(h, x, over);
        left -= over;
        if (left == 0)
            return;
        x -= over * step;
    }
    while (left > 0) {
        slot = slot_of(h, x);
        k = (x - slot_lowest(h, slot)) / step + 1;
        if (k > left)
            k = left;
        last = x - (k - 1) * step;
        h->counts[slot] += k;
        h->total += k;
        sum_series(h, x, last, k);
        if (last < h->min)
            h->min = last;
        left -= k;
        x = last - step;
    }
}

/* ---------------------------------------------------------------- statistics */

uint64_t cg_hist_percentile(const struct cg_hist *h, double p)
{
    uint64_t rank, cum = 0;
    uint32_t i;

    if (h->total == 0)
        return 0;
    if (!(p > 0.0))
        return h->min;
    rank = rank_of(h, p);
    for (i = 0; i < h->counts_len; i++) {
        cum += h->counts[i];
        if (cum >= rank)
            return slot_value(h, i);
    }
    return h->max;                          /* counts disagree with total: cannot happen */
}

uint64_t cg_hist_total_count(const struct cg_hist *h)
{
    return h->total;
}

uint64_t cg_hist_overflow(const struct cg_hist *h)
{
    return h->overflow;
}

uint64_t cg_hist_min(const struct cg_hist *h)
{
    return h->total ? h->min : 0;
}

uint64_t cg_hist_max(const struct cg_hist *h)
{
    return h->total ? h->max : 0;
}

double cg_hist_mean(const struct cg_hist *h)
{
    if (h->total == 0)
        return 0.0;
    return to_double_128(h->sum_hi, h->sum_lo) / (double)h->total;
}

double cg_hist_stddev(const struct cg_hist *h)
{
    double mean, d, acc = 0.0;
    uint64_t mid;
    uint32_t i;

    if (h->total == 0 || h->min == h->max)
        return 0.0;
    mean = cg_hist_mean(h);
    for (i = 0; i < h->counts_len; i++) {
        if (h->counts[i] == 0)
            continue;
        mid = slot_lowest(h, i) + (((uint64_t)1 << slot_shift(h, i)) >> 1);
        d = (double)clamp_u64(mid, h->min, h->max) - mean;
        acc += d * d * (double)h->counts[i];
    }
    return sqrt(acc / (double)h->total);
}

static int same_config(const struct cg_hist *a, const struct cg_hist *b)
{
    return a->highest == b->highest && a->sigfigs == b->sigfigs &&
           a->counts_len == b->counts_len;
}

int cg_hist_merge(struct cg_hist *dst, const struct cg_hist *src)
{
    uint32_t i;

    if (!same_config(dst, src))
        return -EINVAL;
    if (src->total == 0)
        return 0;
    for (i = 0; i < src->counts_len; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    dst->overflow += src->overflow;
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
    add_128(&dst->sum_hi, &dst->sum_lo, src->sum_hi, src->sum_lo);
    return 0;
}

/* ---------------------------------------------------------------- percentile curve */

void cg_hist_pct_iter_init(struct cg_hist_pct_iter *it, const struct cg_hist *h,
                           int ticks_per_half)
{
    memset(it, 0, sizeof(*it));
    it->h = h;
    it->ticks = ticks_per_half < 1 ? 1 : ticks_per_half;
    if (h->total == 0)
        it->ticks = -1;
}

int cg_hist_pct_iter_next(struct cg_hist_pct_iter *it)
{
    const struct cg_hist *h = it->h;
    double p = it->next_pct, half_dist, next;
    uint64_t rank;

    if (it->ticks < 0)
        return 0;
    rank = rank_of(h, p);
    if (p > 0.0 && rank >= h->total) {
        /* The last value is reached: report it as 100 % and stop, as HdrHistogram does. */
        p = 100.0;
        it->ticks = -1;
    }
    while (it->cum < rank && it->slot < h->counts_len)
        it->cum += h->counts[it->slot++];
    it->percentile = p;
    it->count_at = it->cum;
    it->value = p > 0.0 ? slot_value(h, it->slot ? it->slot - 1 : 0) : h->min;
    if (it->ticks > 0) {
        /* 100 / (100 - p) halvings done so far decide the step: ticks per half distance. */
        half_dist = pow(2.0, floor(log2(100.0 / (100.0 - p))) + 1.0);
        next = p + 100.0 / (it->ticks * half_dist);
        it->next_pct = next < 100.0 && next > p ? next : 100.0;
    }
    return 1;
}

/* ---------------------------------------------------------------- serialization */

static size_t varint_size(uint64_t v)
{
    size_t n = 1;

    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *varint_put(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Reads a varint from [*p, end). Returns 0, or -EINVAL when it runs past <end>, is longer than
 * ten bytes or does not fit 64 bits. */
static int varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    const uint8_t *q = *p;
    uint64_t out = 0;
    int shift = 0;
    uint8_t b;

    do {
        if (q == end || shift > 63)
            return -EINVAL;
        b = *q++;
        if (shift == 63 && b > 1)
            return -EINVAL;
        out |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
    } while (b & 0x80);
    *p = q;
    *v = out;
    return 0;
}

struct hist_header {
    uint64_t highest, pairs, overflow, min, max, sum_lo, sum_hi;
};

static void header_of(const struct cg_hist *h, struct hist_header *hd)
{
    uint32_t i;

    hd->highest = h->highest;
    hd->pairs = 0;
    for (i = 0; i < h->counts_len; i++)
        hd->pairs += h->counts[i] != 0;
    hd->overflow = h->overflow;
    hd->min = cg_hist_min(h);
    hd->max = cg_hist_max(h);
    hd->sum_lo = h->sum_lo;
    hd->sum_hi = h->sum_hi;
}

static size_t encoded_size(const struct cg_hist *h, const struct hist_header *hd)
{
    size_t n = 4;
    uint32_t i, next = 0;

    n += varint_size(hd->highest) + varint_size(hd->pairs) + varint_size(hd->overflow);
    n += varint_size(hd->min) + varint_size(hd->max);
    n += varint_size(hd->sum_lo) + varint_size(hd->sum_hi);
    for (i = 0; i < h->counts_len; i++) {
        if (h->counts[i] == 0)
            continue;
        n += varint_size(i - next) + varint_size(h->counts[i]);
        next = i + 1;
    }
    return n;
}

size_t cg_hist_encoded_size(const struct cg_hist *h)
{
    struct hist_header hd;

    header_of(h, &hd);
    return encoded_size(h, &hd);
}

ssize_t cg_hist_encode(const struct cg_hist *h, void *buf, size_t len)
{
    struct hist_header hd;
    uint8_t *p = buf;
    uint32_t i, next = 0;

    header_of(h, &hd);
    if (len < encoded_size(h, &hd))
        return -ENOSPC;
    *p++ = HIST_MAGIC0;
    *p++ = HIST_MAGIC1;
    *p++ = HIST_VERSION;
    *p++ = (uint8_t)h->sigfigs;
    p = varint_put(p, hd.highest);
    p = varint_put(p, hd.pairs);
    p = varint_put(p, hd.overflow);
    p = varint_put(p, hd.min);
    p = varint_put(p, hd.max);
    p = varint_put(p, hd.sum_lo);
    p = varint_put(p, hd.sum_hi);
    for (i = 0; i < h->counts_len; i++) {
        if (h->counts[i] == 0)
            continue;
        p = varint_put(p, i - next);
        p = varint_put(p, h->counts[i]);
        next = i + 1;
    }
    return p - (uint8_t *)buf;
}

/* Walks an encoded histogram: checks everything when <apply> is 0, adds it into <h> when 1
 * (only after a checking pass has returned 0). */
static int decode(struct cg_hist *h, const uint8_t *p, const uint8_t *end, int apply)
{
    struct hist_header hd;
    uint64_t *fields[] = { &hd.highest, &hd.pairs, &hd.overflow, &hd.min, &hd.max,
                           &hd.sum_lo, &hd.sum_hi };
    uint64_t gap, count, total = 0, hi, lo;
    uint64_t j, next = 0, top_count = 0;
    uint32_t top = slot_of(h, h->highest), first = 0, last = 0;
    size_t f;

    if (end - p < 4 || p[0] != HIST_MAGIC0 || p[1] != HIST_MAGIC1 || p[2] != HIST_VERSION ||
        p[3] != h->sigfigs)
        return -EINVAL;
    p += 4;
    for (f = 0; f < sizeof(fields) / sizeof(fields[0]); f++)
        if (varint_get(&p, end, fields[f]) < 0)
            return -EINVAL;
    /* Each pair takes at least two bytes, which bounds the loop by the input too. */
    if (hd.highest != h->highest || hd.pairs > h->counts_len || hd.pairs > (uint64_t)(end - p) / 2)
        return -EINVAL;
    for (j = 0; j < hd.pairs; j++) {
        if (varint_get(&p, end, &gap) < 0 || varint_get(&p, end, &count) < 0)
            return -EINVAL;
        if (count == 0 || gap >= h->counts_len - next || total + count < total)
            return -EINVAL;
        next += gap;
        if (j == 0)
            first = (uint32_t)next;                 /* < counts_len, checked above */
        last = (uint32_t)next;
        if (next == top)
            top_count = count;
        total += count;
        if (apply)
            h->counts[next] += count;
        next++;
    }
    if (!apply) {
        if (p != end || h->total + total < h->total)
            return -EINVAL;
        if (total == 0)
            return hd.overflow || hd.min || hd.max || hd.sum_lo || hd.sum_hi ? -EINVAL : 0;
        /* Min and max must lie in the first and last slots, overflowed values at the top, and
         * the sum between total * min and total * max. */
        if (hd.min < slot_lowest(h, first) || hd.min > slot_highest(h, first) ||
            hd.max < slot_lowest(h, last) || hd.max > slot_highest(h, last) ||
            hd.max > h->highest || hd.overflow > top_count || (hd.overflow && hd.max != h->highest))
            return -EINVAL;
        mul_64(hd.min, total, &hi, &lo);
        if (cmp_128(hd.sum_hi, hd.sum_lo, hi, lo) < 0)
            return -EINVAL;
        mul_64(hd.max, total, &hi, &lo);
        if (cmp_128(hd.sum_hi, hd.sum_lo, hi, lo) > 0)
            return -EINVAL;
        return 0;
    }
    if (total == 0)
        return 0;
    h->total += total;
    h->overflow += hd.overflow;
    if (hd.min < h->min)
        h->min = hd.min;
    if (hd.max > h->max)
        h->max = hd.max;
    add_128(&h->sum_hi, &h->sum_lo, hd.sum_hi, hd.sum_lo);
    return 0;
}

int cg_hist_decode_add(struct cg_hist *h, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    int err;

    if (!buf || len < 4)
        return -EINVAL;
    err = decode(h, p, p + len, 0);
    if (err < 0)
        return err;
    return decode(h, p, p + len, 1);
}

/* ---------------------------------------------------------------- output */

void cg_hist_print(const struct cg_hist *h, FILE *f, double unit_divisor, const char *unit)
{
    static const struct {
        const char *name;
        double      p;
    } rows[] = {
        { "p50", 50.0 }, { "p90", 90.0 }, { "p99", 99.0 }, { "p99.9", 99.9 },
        { "p99.99", 99.99 },
    };
    size_t i;

    if (!(unit_divisor > 0.0))
        unit_divisor = 1.0;
    if (!unit)
        unit = "";
    for (i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
        fprintf(f, "  %-7s %12.3f %s\n", rows[i].name,
                (double)cg_hist_percentile(h, rows[i].p) / unit_divisor, unit);
    fprintf(f, "  %-7s %12.3f %s\n", "max", (double)cg_hist_max(h) / unit_divisor, unit);
}
