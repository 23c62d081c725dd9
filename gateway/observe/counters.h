/* gateway/metrics-t.h — types that counters structs embed. Types only. */
#ifndef CG_METRICS_T_H
#define CG_METRICS_T_H

#include <stdatomic.h>
#include <stdint.h>

/* Upper bounds (microseconds) of a latency histogram's buckets, Prometheus style: 25us,
 * 50us, 100us ... 10s; one more bucket counts what lies above the last bound (+Inf). */
#define CG_LAT_BOUNDS 18

/* A latency histogram written by one thread (relaxed load + store, like the worker
 * counters) and read live by any other. Buckets are not cumulative here; the exposition
 * adds them up. A reader may see a value's bucket before its sum, never a torn number. */
struct cg_lat_hist {
    _Atomic uint64_t bucket[CG_LAT_BOUNDS + 1];
    _Atomic uint64_t sum_us;
};

/* Slots of a log2 histogram of microseconds, runqlat style: slot 0 counts 0..1 us, slot i
 * (i >= 1) 2^i .. 2^(i+1)-1 us, the last one everything above. The layout of the kernel's
 * run-queue histogram (bpf/schedlat.h) and of coro_sched_ready_stats(). */
#define CG_LOG2_SLOTS 32

/* A log2 histogram of durations written by one thread (relaxed load + store) and read live
 * by any other, like struct cg_lat_hist. */
struct cg_log2_hist {
    _Atomic uint64_t slots[CG_LOG2_SLOTS];
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t max_ns;
};

#endif
