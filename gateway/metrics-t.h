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

#endif
