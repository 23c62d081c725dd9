/* loadgen/hist.h — log-linear latency histogram in the manner of HdrHistogram.
 *
 * Values (nanoseconds, usually) are counted in buckets of sub-buckets: the first bucket holds
 * every value below 2^(m+1) with unit resolution, each later bucket covers twice the range of
 * the one before with half the resolution, where 2^(m+1) is the smallest power of two at least
 * 2 * 10^sigfigs. Any value is therefore known to within 10^-sigfigs of itself (3 significant
 * figures: 0.1 %). The lowest discernible value is 1; values above <highest> are clamped to it
 * and also counted in `overflow`.
 *
 * Not thread-safe and lock-free by confinement: give each thread its own histogram and merge
 * them (cg_hist_merge, or cg_hist_encode/cg_hist_decode_add through a pipe) at the end.
 */
#ifndef CG_LOADGEN_HIST_H
#define CG_LOADGEN_HIST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

/* Types are public so that a histogram can be embedded; read the fields through the functions
 * below. One histogram of 1 h in ns with 3 figures takes 96 bytes here plus a 270,336-byte
 * counts array (33 * 1024 slots of 8 bytes), allocated once by cg_hist_init. */
struct cg_hist {
    uint64_t *counts;           /* counts_len slots, owned, allocated by cg_hist_init */
    uint64_t  highest;          /* highest trackable value; larger ones are clamped to it */
    uint64_t  total;            /* values recorded, overflowed ones included */
    uint64_t  overflow;         /* values that were above <highest> */
    uint64_t  min;              /* exact; UINT64_MAX while empty */
    uint64_t  max;              /* exact; 0 while empty */
    uint64_t  sum_lo;           /* exact 128-bit sum of the (clamped) values */
    uint64_t  sum_hi;
    uint64_t  sub_mask;         /* (sub_count - 1): values under it index slot = value */
    uint32_t  counts_len;       /* (bucket_count + 1) * sub_half */
    uint32_t  sub_half;         /* sub-buckets per bucket that are not shared with the previous */
    int       sub_half_mag;     /* log2(sub_half) */
    int       bucket_count;
    int       sigfigs;
};

/* A walk over the percentile curve, log-spaced like HdrHistogram's percentile distribution
 * output: with <ticks_per_half> 1 the levels are 0, 50, 75, 87.5, 93.75, ... and the walk ends
 * with a 100 % point once a level's rank reaches the last value. Fields after the first four
 * are the current point, valid after cg_hist_pct_iter_next returned 1. */
struct cg_hist_pct_iter {
    const struct cg_hist *h;
    double                next_pct;     /* level to report next */
    uint64_t              cum;          /* sum of counts[0 .. slot - 1] */
    uint32_t              slot;         /* next slot to add to <cum> */
    int                   ticks;        /* ticks per half distance; -1 once finished */
    double                percentile;   /* the level, 0 .. 100 */
    uint64_t              value;        /* cg_hist_percentile(h, percentile) */
    uint64_t              count_at;     /* values at or below <value>'s slot */
};

/* Prepares <h> (caller's storage) to track values 0 .. <highest> with <sigfigs> significant
 * decimal figures. Accepts <highest> 2 .. INT64_MAX and <sigfigs> 1 .. 5. Returns 0; -EINVAL
 * for arguments out of range; -ENOMEM. On failure <h> holds nothing and cg_hist_deinit is a
 * no-op on it. */
int cg_hist_init(struct cg_hist *h, uint64_t highest, int sigfigs);

/* Frees the counts of <h>, which stays usable only for another cg_hist_init. Idempotent. */
void cg_hist_deinit(struct cg_hist *h);

/* Forgets every value recorded in <h>, keeping its configuration and memory. */
void cg_hist_reset(struct cg_hist *h);

/* Counts <v> once in <h>. A <v> above the highest trackable value is recorded as that value
 * and counted in the overflow counter as well. */
void cg_hist_record(struct cg_hist *h, uint64_t v);

/* Counts <v> <n> times in <h>, as <n> calls of cg_hist_record would. */
void cg_hist_record_n(struct cg_hist *h, uint64_t v, uint64_t n);

/* Records <v>, correcting for coordinated omission as HdrHistogram's recordCorrectedValue and
 * wrk2 do: when <v> exceeds <expected_interval> (the intended gap between requests, 0 = no
 * correction) it also records v - i, v - 2i, ... down to the last one still >= i, the requests
 * that a stalled sender failed to send. 1 s at 10 ms adds 99 values. Takes time in the number
 * of slots touched (<= counts_len), not in the number of values added. */
void cg_hist_record_corrected(struct cg_hist *h, uint64_t v, uint64_t expected_interval);

/* Returns the value at percentile <p> (0 .. 100, clamped) of <h>: the highest value equivalent
 * to the slot holding rank max(1, round(p / 100 * total)), as HdrHistogram does, limited to the
 * exact max; p = 0 gives the exact min. Returns 0 when <h> is empty. */
uint64_t cg_hist_percentile(const struct cg_hist *h, double p);

/* Returns the number of values recorded in <h>, overflowed ones included. */
uint64_t cg_hist_total_count(const struct cg_hist *h);

/* Returns how many recorded values were above the highest trackable value of <h>. */
uint64_t cg_hist_overflow(const struct cg_hist *h);

/* Return the exact smallest and largest (clamped) values recorded in <h>, 0 when empty. */
uint64_t cg_hist_min(const struct cg_hist *h);
uint64_t cg_hist_max(const struct cg_hist *h);

/* Returns the mean of the values recorded in <h>, from their exact sum; 0 when empty. */
double cg_hist_mean(const struct cg_hist *h);

/* Returns the population standard deviation of <h> around the exact mean, each slot standing
 * for its middle value kept within [min, max] (as HdrHistogram, so to within the slot width);
 * 0 when empty or when all values are equal. */
double cg_hist_stddev(const struct cg_hist *h);

/* Adds every value of <src> into <dst>. Returns 0, or -EINVAL when the two were not
 * initialised with the same highest value and significant figures (<dst> is then unchanged).
 * Keeps no reference to <src>. */
int cg_hist_merge(struct cg_hist *dst, const struct cg_hist *src);

/* Starts a walk over the percentile curve of <h> with <ticks_per_half> levels per halving of
 * the distance to 100 % (values below 1 count as 1). <it> borrows <h>, which must not be
 * recorded into until the walk is over. */
void cg_hist_pct_iter_init(struct cg_hist_pct_iter *it, const struct cg_hist *h,
                           int ticks_per_half);

/* Moves <it> to the next point of the curve. Returns 1 with it->percentile, it->value and
 * it->count_at set, or 0 when the walk is over (at once for an empty histogram). */
int cg_hist_pct_iter_next(struct cg_hist_pct_iter *it);

/* Returns the number of bytes cg_hist_encode needs for <h> as it is now. */
size_t cg_hist_encoded_size(const struct cg_hist *h);

/* Writes <h> into <buf> of <len> bytes: a header (magic, version, configuration, overflow, min,
 * max, sum) then every non-zero slot as a varint (gap from the previous slot, count) pair.
 * Returns the number of bytes written, or -ENOSPC when <len> is under
 * cg_hist_encoded_size(h) (nothing useful is written then). */
ssize_t cg_hist_encode(const struct cg_hist *h, void *buf, size_t len);

/* Adds the histogram encoded in the <len> bytes at <buf> into <h>. The input is fully checked
 * before <h> is touched and never read past <len>. Returns 0, or -EINVAL when it is malformed,
 * truncated, followed by extra bytes, inconsistent, encoded with another configuration than
 * <h>'s or would overflow the total count; <h> is then unchanged. Keeps no reference to <buf>. */
int cg_hist_decode_add(struct cg_hist *h, const void *buf, size_t len);

/* Writes p50, p90, p99, p99.9, p99.99 and max of <h> to <f>, one per line, each value divided
 * by <unit_divisor> (1 if not positive) and followed by <unit> (may be NULL), e.g.
 * cg_hist_print(h, stdout, 1e6, "ms"). */
void cg_hist_print(const struct cg_hist *h, FILE *f, double unit_divisor, const char *unit);

#endif
