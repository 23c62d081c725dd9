/* tests/test_hist.c — the latency histogram: percentile math against exact answers, merge,
 * coordinated-omission correction, overflow, the percentile curve and the wire format. */
#include <check.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loadgen/hist.h"

#define HOUR_NS   3600000000000ULL
#define MS        1000000ULL

static uint64_t rng_state;

static uint64_t rng(void)                    /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);

    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(void)                 /* (0, 1] */
{
    return ((double)(rng() >> 11) + 1.0) / 9007199254740992.0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* The nearest-rank percentile of sorted <v>, with the rank rounding cg_hist_percentile uses. */
static uint64_t exact_percentile(const uint64_t *v, size_t n, double p)
{
    double r = p / 100.0 * (double)n + 0.5;
    size_t rank = r < 1.0 ? 1 : r >= (double)n ? n : (size_t)r;

    return v[rank - 1];
}

static void assert_close(uint64_t got, uint64_t want, double rel)
{
    double err = fabs((double)got - (double)want);

    ck_assert_msg(err <= rel * (double)want, "got %llu, want %llu within %g",
                  (unsigned long long)got, (unsigned long long)want, rel);
}

static void assert_hist_eq(const struct cg_hist *a, const struct cg_hist *b)
{
    uint32_t i;

    ck_assert_uint_eq(a->counts_len, b->counts_len);
    /* One assertion for all slots: each Check assertion costs a write to its pipe. */
    for (i = 0; i < a->counts_len && a->counts[i] == b->counts[i]; i++)
        continue;
    ck_assert_msg(i == a->counts_len, "slot %u: %llu != %llu", i,
                  (unsigned long long)a->counts[i], (unsigned long long)b->counts[i]);
    ck_assert_uint_eq(a->total, b->total);
    ck_assert_uint_eq(a->overflow, b->overflow);
    ck_assert_uint_eq(a->min, b->min);
    ck_assert_uint_eq(a->max, b->max);
    ck_assert_uint_eq(a->sum_lo, b->sum_lo);
    ck_assert_uint_eq(a->sum_hi, b->sum_hi);
}

static uint64_t counts_sum(const struct cg_hist *h)
{
    uint64_t s = 0;
    uint32_t i;

    for (i = 0; i < h->counts_len; i++)
        s += h->counts[i];
    return s;
}

START_TEST(test_init_args)
{
    struct cg_hist h;

    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 0), -EINVAL);
    cg_hist_deinit(&h);
    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 6), -EINVAL);
    ck_assert_int_eq(cg_hist_init(&h, 1, 3), -EINVAL);
    ck_assert_int_eq(cg_hist_init(&h, (uint64_t)INT64_MAX + 1, 3), -EINVAL);
    ck_assert_ptr_null(h.counts);
    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    ck_assert_uint_eq(h.sub_half, 1024);            /* 2 * 10^3 -> 2048 sub-buckets */
    ck_assert_int_eq(h.bucket_count, 32);           /* 2048 << 31 > 3.6e12 */
    ck_assert_uint_eq(h.counts_len, 33 * 1024);
    ck_assert_uint_eq(sizeof(h) + h.counts_len * sizeof(*h.counts), 96 + 270336);
    cg_hist_deinit(&h);
    cg_hist_deinit(&h);                             /* idempotent */
    ck_assert_ptr_null(h.counts);
}
END_TEST

START_TEST(test_empty)
{
    struct cg_hist h, d;
    struct cg_hist_pct_iter it;
    uint8_t buf[128];
    ssize_t n;

    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&d, HOUR_NS, 3), 0);
    ck_assert_uint_eq(cg_hist_total_count(&h), 0);
    ck_assert_uint_eq(cg_hist_percentile(&h, 0), 0);
    ck_assert_uint_eq(cg_hist_percentile(&h, 50), 0);
    ck_assert_uint_eq(cg_hist_percentile(&h, 100), 0);
    ck_assert_uint_eq(cg_hist_min(&h), 0);
    ck_assert_uint_eq(cg_hist_max(&h), 0);
    ck_assert(cg_hist_mean(&h) == 0.0);
    ck_assert(cg_hist_stddev(&h) == 0.0);
    cg_hist_pct_iter_init(&it, &h, 5);
    ck_assert_int_eq(cg_hist_pct_iter_next(&it), 0);
    n = cg_hist_encode(&h, buf, sizeof(buf));
    ck_assert_int_gt(n, 0);
    ck_assert_uint_eq((size_t)n, cg_hist_encoded_size(&h));
    ck_assert_int_eq(cg_hist_decode_add(&d, buf, (size_t)n), 0);
    assert_hist_eq(&d, &h);
    cg_hist_deinit(&d);
    cg_hist_deinit(&h);
}
END_TEST

START_TEST(test_uniform)
{
    struct cg_hist h;
    uint64_t v;

    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    for (v = 1; v <= 1000000; v++)
        cg_hist_record(&h, v);
    ck_assert_uint_eq(cg_hist_total_count(&h), 1000000);
    assert_close(cg_hist_percentile(&h, 50), 500000, 0.001);
    assert_close(cg_hist_percentile(&h, 90), 900000, 0.001);
    assert_close(cg_hist_percentile(&h, 99), 990000, 0.001);
    assert_close(cg_hist_percentile(&h, 99.9), 999000, 0.001);
    ck_assert_uint_eq(cg_hist_percentile(&h, 0), 1);
    ck_assert_uint_eq(cg_hist_percentile(&h, 100), 1000000);
    ck_assert_uint_eq(cg_hist_percentile(&h, 250), 1000000);    /* clamped to 100 */
    ck_assert_uint_eq(cg_hist_percentile(&h, -3), 1);
    ck_assert_uint_eq(cg_hist_min(&h), 1);
    ck_assert_uint_eq(cg_hist_max(&h), 1000000);
    ck_assert(cg_hist_mean(&h) == 500000.5);
    /* stddev of 1..N is sqrt((N^2 - 1) / 12) */
    ck_assert_double_eq_tol(cg_hist_stddev(&h), sqrt((1e12 - 1) / 12), 0.001 * 288675.0);
    cg_hist_deinit(&h);
}
END_TEST

START_TEST(test_all_equal_and_single)
{
    static const double ps[] = { 0, 1, 25, 50, 90, 99, 99.99, 100 };
    struct cg_hist h;
    struct cg_hist_pct_iter it;
    size_t i;

    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    cg_hist_record(&h, 123456789);
    for (i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        ck_assert_uint_eq(cg_hist_percentile(&h, ps[i]), 123456789);
    ck_assert(cg_hist_mean(&h) == 123456789.0);
    ck_assert(cg_hist_stddev(&h) == 0.0);
    cg_hist_pct_iter_init(&it, &h, 1);
    ck_assert_int_eq(cg_hist_pct_iter_next(&it), 1);
    ck_assert(it.percentile == 0.0);
    ck_assert_uint_eq(it.value, 123456789);
    ck_assert_int_eq(cg_hist_pct_iter_next(&it), 1);
    ck_assert(it.percentile == 100.0);
    ck_assert_uint_eq(it.value, 123456789);
    ck_assert_uint_eq(it.count_at, 1);
    ck_assert_int_eq(cg_hist_pct_iter_next(&it), 0);

    for (i = 1; i < 1000; i++)
        cg_hist_record(&h, 123456789);
    cg_hist_record_n(&h, 123456789, 1000);
    ck_assert_uint_eq(cg_hist_total_count(&h), 2000);
    for (i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        ck_assert_uint_eq(cg_hist_percentile(&h, ps[i]), 123456789);
    ck_assert_uint_eq(cg_hist_min(&h), 123456789);
    ck_assert_uint_eq(cg_hist_max(&h), 123456789);
    ck_assert(cg_hist_mean(&h) == 123456789.0);
    ck_assert(cg_hist_stddev(&h) == 0.0);
    cg_hist_reset(&h);
    ck_assert_uint_eq(cg_hist_total_count(&h), 0);
    ck_assert_uint_eq(counts_sum(&h), 0);
    ck_assert_uint_eq(cg_hist_percentile(&h, 50), 0);
    cg_hist_deinit(&h);
}
END_TEST

START_TEST(test_exponential_vs_sorted)
{
    static const double ps[] = { 0, 0.1, 1, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.99,
                                 99.999, 100 };
    static const double levels[] = { 0, 50, 75, 87.5, 93.75 };
    enum { N = 200000 };
    struct cg_hist h;
    struct cg_hist_pct_iter it;
    uint64_t *v = malloc(N * sizeof(*v)), sum = 0, prev = 0;
    double mean, var = 0, prev_p = -1;
    size_t i, points = 0;

    ck_assert_ptr_nonnull(v);
    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    rng_state = 42;
    for (i = 0; i < N; i++) {
        /* Exponential around 1 ms, with a 1 % tail around 200 ms and a few small values. */
        double m = rng() % 100 == 0 ? 200e6 : i % 1000 == 0 ? 500 : 1e6;

        v[i] = (uint64_t)(-m * log(rng_unit()));
        cg_hist_record(&h, v[i]);
        sum += v[i];
    }
    qsort(v, N, sizeof(*v), cmp_u64);
    for (i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
        assert_close(cg_hist_percentile(&h, ps[i]), exact_percentile(v, N, ps[i]), 0.001);
    ck_assert_uint_eq(cg_hist_min(&h), v[0]);
    ck_assert_uint_eq(cg_hist_max(&h), v[N - 1]);
    mean = (double)sum / N;
    ck_assert(cg_hist_mean(&h) == mean);
    for (i = 0; i < N; i++)
        var += ((double)v[i] - mean) * ((double)v[i] - mean);
    ck_assert_double_eq_tol(cg_hist_stddev(&h), sqrt(var / N), 0.001 * sqrt(var / N));

    /* The curve: levels 0, 50, 75, 87.5, ... then 100; each point is the percentile itself. */
    cg_hist_pct_iter_init(&it, &h, 1);
    while (cg_hist_pct_iter_next(&it)) {
        if (points < sizeof(levels) / sizeof(levels[0]))
            ck_assert(it.percentile == levels[points]);
        ck_assert(it.percentile > prev_p);
        ck_assert_uint_ge(it.value, prev);
        ck_assert_uint_eq(it.value, cg_hist_percentile(&h, it.percentile));
        assert_close(it.value, exact_percentile(v, N, it.percentile), 0.001);
        prev_p = it.percentile;
        prev = it.value;
        points++;
    }
    ck_assert(prev_p == 100.0);
    ck_assert_uint_eq(prev, v[N - 1]);
    ck_assert_uint_gt(points, 15);
    ck_assert_uint_lt(points, 40);
    cg_hist_deinit(&h);
    free(v);
}
END_TEST

START_TEST(test_merge)
{
    struct cg_hist a, b, both, other;
    uint64_t x;
    int i;

    ck_assert_int_eq(cg_hist_init(&a, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&b, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&both, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&other, HOUR_NS, 2), 0);
    rng_state = 7;
    for (i = 0; i < 50000; i++) {
        x = rng() % (i % 2 ? 1000000 : 5000000000ULL);
        cg_hist_record(i % 3 ? &a : &b, x);
        cg_hist_record(&both, x);
    }
    cg_hist_record(&b, HOUR_NS * 2);                /* overflow travels too */
    cg_hist_record(&both, HOUR_NS * 2);
    ck_assert_int_eq(cg_hist_merge(&a, &b), 0);
    assert_hist_eq(&a, &both);
    ck_assert_int_eq(cg_hist_merge(&a, &other), -EINVAL);
    assert_hist_eq(&a, &both);
    cg_hist_reset(&b);
    ck_assert_int_eq(cg_hist_merge(&a, &b), 0);     /* empty source changes nothing */
    assert_hist_eq(&a, &both);
    ck_assert_int_eq(cg_hist_merge(&b, &a), 0);     /* into an empty one copies */
    assert_hist_eq(&b, &both);
    cg_hist_deinit(&other);
    cg_hist_deinit(&both);
    cg_hist_deinit(&b);
    cg_hist_deinit(&a);
}
END_TEST

/* What HdrHistogram's recordCorrectedValue does, one record per value. */
static void record_corrected_naive(struct cg_hist *h, uint64_t v, uint64_t step)
{
    uint64_t m;

    cg_hist_record(h, v);
    if (step == 0 || v <= step)
        return;
    for (m = v - step; m >= step; m -= step)
        cg_hist_record(h, m);
}

START_TEST(test_corrected_known)
{
    struct cg_hist h, naive;
    uint64_t i;

    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&naive, HOUR_NS, 3), 0);
    cg_hist_record_corrected(&h, 1000 * MS, 10 * MS);
    ck_assert_uint_eq(cg_hist_total_count(&h), 100);    /* 1 s plus 990, 980, ... 10 ms */
    ck_assert_uint_eq(cg_hist_min(&h), 10 * MS);
    ck_assert_uint_eq(cg_hist_max(&h), 1000 * MS);
    ck_assert(cg_hist_mean(&h) == 505.0 * MS);
    for (i = 1; i <= 100; i++)                         /* rank i holds i * 10 ms */
        assert_close(cg_hist_percentile(&h, (double)i), i * 10 * MS, 0.001);
    ck_assert_uint_eq(cg_hist_percentile(&h, 100), 1000 * MS);
    record_corrected_naive(&naive, 1000 * MS, 10 * MS);
    assert_hist_eq(&h, &naive);

    /* Below or at the interval nothing is added; 0 turns correction off. */
    cg_hist_reset(&h);
    cg_hist_record_corrected(&h, 10 * MS, 10 * MS);
    cg_hist_record_corrected(&h, 19 * MS, 10 * MS);
    cg_hist_record_corrected(&h, 5 * MS, 0);
    ck_assert_uint_eq(cg_hist_total_count(&h), 3);
    cg_hist_record_corrected(&h, 20 * MS, 10 * MS);
    ck_assert_uint_eq(cg_hist_total_count(&h), 5);
    cg_hist_deinit(&naive);
    cg_hist_deinit(&h);
}
END_TEST

START_TEST(test_corrected_matches_naive)
{
    struct cg_hist h, naive;
    uint64_t v, step;
    int i;

    ck_assert_int_eq(cg_hist_init(&h, 100000000, 3), 0);        /* 100 ms, to overflow */
    ck_assert_int_eq(cg_hist_init(&naive, 100000000, 3), 0);
    rng_state = 99;
    for (i = 0; i < 300; i++) {
        step = 1 + rng() % (i % 3 == 0 ? 50 : 5000000);
        v = rng() % (step * (1 + rng() % 20000));               /* up to 20000 values */
        if (i % 10 == 0)
            v += 100000000 - step * 3;                          /* crosses the top */
        cg_hist_record_corrected(&h, v, step);
        record_corrected_naive(&naive, v, step);
        assert_hist_eq(&h, &naive);
    }
    ck_assert_uint_gt(h.overflow, 0);
    cg_hist_deinit(&naive);
    cg_hist_deinit(&h);
}
END_TEST

START_TEST(test_overflow)
{
    struct cg_hist h;

    ck_assert_int_eq(cg_hist_init(&h, 1000000, 3), 0);
    cg_hist_record(&h, 10);
    cg_hist_record(&h, 1000000);                    /* highest itself is not overflow */
    ck_assert_uint_eq(cg_hist_overflow(&h), 0);
    cg_hist_record(&h, 1000001);
    cg_hist_record(&h, UINT64_MAX);
    cg_hist_record_n(&h, 5000000, 6);
    ck_assert_uint_eq(cg_hist_overflow(&h), 8);
    ck_assert_uint_eq(cg_hist_total_count(&h), 10);
    ck_assert_uint_eq(cg_hist_max(&h), 1000000);
    ck_assert_uint_eq(cg_hist_percentile(&h, 50), 1000000);
    ck_assert_uint_eq(cg_hist_percentile(&h, 100), 1000000);
    ck_assert_uint_eq(cg_hist_percentile(&h, 5), 10);
    ck_assert(cg_hist_mean(&h) == (10 + 9 * 1000000.0) / 10);
    cg_hist_deinit(&h);
}
END_TEST

START_TEST(test_extreme_configs)
{
    struct cg_hist h;
    uint64_t x;
    int s, i;

    for (s = 1; s <= 5; s++) {
        ck_assert_int_eq(cg_hist_init(&h, INT64_MAX, s), 0);
        cg_hist_record(&h, 0);
        cg_hist_record(&h, INT64_MAX);
        cg_hist_record(&h, UINT64_MAX);
        ck_assert_uint_eq(cg_hist_overflow(&h), 1);
        ck_assert_uint_eq(cg_hist_percentile(&h, 100), INT64_MAX);
        ck_assert_uint_eq(cg_hist_percentile(&h, 10), 0);
        rng_state = (uint64_t)s;
        for (i = 0; i < (s < 4 ? 2000 : 100); i++) {    /* a reset clears 49 MB at s = 5 */
            cg_hist_reset(&h);
            x = rng() >> (1 + rng() % 63);
            cg_hist_record(&h, x);
            cg_hist_record(&h, INT64_MAX);
            /* rank 1 of 2: the highest value equivalent to x, clamped to max */
            assert_close(cg_hist_percentile(&h, 50), x, pow(10, -s));
        }
        cg_hist_record_corrected(&h, INT64_MAX, 1);         /* one pass over the slots */
        ck_assert_uint_eq(cg_hist_total_count(&h), 2 + (uint64_t)INT64_MAX);
        cg_hist_deinit(&h);
    }
    ck_assert_int_eq(cg_hist_init(&h, 2, 1), 0);
    cg_hist_record(&h, 2);
    cg_hist_record(&h, 3);
    ck_assert_uint_eq(cg_hist_percentile(&h, 100), 2);
    cg_hist_deinit(&h);
}
END_TEST

static void fill_random(struct cg_hist *h, int n)
{
    int i;

    for (i = 0; i < n; i++)
        cg_hist_record_n(h, rng() >> (20 + rng() % 44), 1 + rng() % 3);
    cg_hist_record(h, HOUR_NS + 5);
}

START_TEST(test_encode_round_trip)
{
    struct cg_hist h, d, other;
    uint8_t *buf;
    size_t need;
    ssize_t n;

    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&d, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&other, HOUR_NS / 2, 3), 0);
    rng_state = 3;
    fill_random(&h, 20000);
    need = cg_hist_encoded_size(&h);
    buf = malloc(need);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(cg_hist_encode(&h, buf, need - 1), -ENOSPC);
    n = cg_hist_encode(&h, buf, need);
    ck_assert_int_eq(n, (ssize_t)need);
    ck_assert_int_eq(cg_hist_decode_add(&d, buf, need), 0);
    assert_hist_eq(&d, &h);
    ck_assert_int_eq(cg_hist_decode_add(&other, buf, need), -EINVAL);  /* other config */
    ck_assert_uint_eq(cg_hist_total_count(&other), 0);

    /* Decoding adds: twice equals h merged with itself. */
    ck_assert_int_eq(cg_hist_decode_add(&d, buf, need), 0);
    ck_assert_int_eq(cg_hist_merge(&h, &h), 0);
    assert_hist_eq(&d, &h);
    free(buf);
    cg_hist_deinit(&other);
    cg_hist_deinit(&d);
    cg_hist_deinit(&h);
}
END_TEST

START_TEST(test_decode_truncated)
{
    struct cg_hist h, d, snap;
    uint8_t *buf, *cut;
    size_t need, len;

    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&d, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&snap, HOUR_NS, 3), 0);
    rng_state = 11;
    fill_random(&h, 300);
    cg_hist_record(&d, 777);                        /* a failed decode must leave this alone */
    cg_hist_record(&snap, 777);
    need = cg_hist_encoded_size(&h);
    buf = malloc(need + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_int_eq(cg_hist_encode(&h, buf, need), (ssize_t)need);
    for (len = 0; len < need; len++) {
        cut = malloc(len ? len : 1);                /* exact size, so ASan sees overreads */
        ck_assert_ptr_nonnull(cut);
        memcpy(cut, buf, len);
        ck_assert_int_eq(cg_hist_decode_add(&d, cut, len), -EINVAL);
        free(cut);
    }
    buf[need] = 0;                                  /* trailing garbage */
    ck_assert_int_eq(cg_hist_decode_add(&d, buf, need + 1), -EINVAL);
    ck_assert_int_eq(cg_hist_decode_add(&d, NULL, 0), -EINVAL);
    assert_hist_eq(&d, &snap);
    free(buf);
    cg_hist_deinit(&snap);
    cg_hist_deinit(&d);
    cg_hist_deinit(&h);
}
END_TEST

START_TEST(test_decode_fuzz)
{
    struct cg_hist h, d, snap;
    uint8_t *valid, *buf;
    size_t need, len, j;
    int i, rc, ok = 0, bad = 0;

    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&d, HOUR_NS, 3), 0);
    ck_assert_int_eq(cg_hist_init(&snap, HOUR_NS, 3), 0);
    rng_state = 2024;
    fill_random(&h, 200);
    need = cg_hist_encoded_size(&h);
    valid = malloc(need);
    ck_assert_ptr_nonnull(valid);
    ck_assert_int_eq(cg_hist_encode(&h, valid, need), (ssize_t)need);
    for (i = 0; i < 6000; i++) {
        switch (i % 3) {
        case 0:                                     /* pure garbage */
            len = rng() % 300;
            buf = malloc(len ? len : 1);
            ck_assert_ptr_nonnull(buf);
            for (j = 0; j < len; j++)
                buf[j] = (uint8_t)rng();
            break;
        case 1:                                     /* a valid header, then garbage */
            len = 4 + rng() % 300;
            buf = malloc(len);
            ck_assert_ptr_nonnull(buf);
            for (j = 0; j < len; j++)
                buf[j] = j < 4 ? valid[j] : (uint8_t)rng();
            break;
        default:                                    /* a valid encoding with a few bytes hit */
            len = need;
            buf = malloc(len);
            ck_assert_ptr_nonnull(buf);
            memcpy(buf, valid, len);
            for (j = 1 + rng() % 3; j > 0; j--)
                buf[rng() % len] ^= (uint8_t)(1 + rng() % 255);
            break;
        }
        rc = cg_hist_decode_add(&d, buf, len);
        free(buf);
        ck_assert_msg(rc == 0 || rc == -EINVAL, "rc %d", rc);
        if (rc == 0) {
            ok++;
            ck_assert_uint_eq(counts_sum(&d), d.total);
            ck_assert_uint_le(d.min, d.max);
            cg_hist_reset(&d);
        } else {
            bad++;
            assert_hist_eq(&d, &snap);
        }
    }
    ck_assert_int_gt(bad, 4000);
    ck_assert_int_lt(ok, 2000);
    free(valid);
    cg_hist_deinit(&snap);
    cg_hist_deinit(&d);
    cg_hist_deinit(&h);
}
END_TEST

START_TEST(test_print)
{
    struct cg_hist h;
    char *out = NULL;
    size_t len = 0;
    FILE *f;
    uint64_t v;

    ck_assert_int_eq(cg_hist_init(&h, HOUR_NS, 3), 0);
    for (v = 1; v <= 10000; v++)
        cg_hist_record(&h, v * 1000);               /* 1 us .. 10 ms */
    f = open_memstream(&out, &len);
    ck_assert_ptr_nonnull(f);
    cg_hist_print(&h, f, 1e6, "ms");
    fclose(f);
    ck_assert_str_eq(out,
                     "  p50            5.001 ms\n"
                     "  p90            9.003 ms\n"
                     "  p99            9.904 ms\n"     /* 9.9 ms in a 8192 ns slot */
                     "  p99.9          9.994 ms\n"
                     "  p99.99        10.000 ms\n"
                     "  max           10.000 ms\n");
    free(out);
    cg_hist_deinit(&h);
}
END_TEST

Suite *hist_suite(void)
{
    Suite *s = suite_create("hist");
    TCase *tc = tcase_create("core");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_init_args);
    tcase_add_test(tc, test_empty);
    tcase_add_test(tc, test_uniform);
    tcase_add_test(tc, test_all_equal_and_single);
    tcase_add_test(tc, test_exponential_vs_sorted);
    tcase_add_test(tc, test_merge);
    tcase_add_test(tc, test_corrected_known);
    tcase_add_test(tc, test_corrected_matches_naive);
    tcase_add_test(tc, test_overflow);
    tcase_add_test(tc, test_extreme_configs);
    tcase_add_test(tc, test_encode_round_trip);
    tcase_add_test(tc, test_decode_truncated);
    tcase_add_test(tc, test_decode_fuzz);
    tcase_add_test(tc, test_print);
    suite_add_tcase(s, tc);
    return s;
}
