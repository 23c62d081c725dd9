/* gateway/observe/metrics.h — the daemon's counters rendered as JSON (`show stats`) and as the
 * Prometheus text exposition format (`show metrics`, GET /metrics); latency histograms.
 *
 * Rendering runs on the main thread and reads every counter live: worker counters are
 * single-writer atomics, upstream and server counters shared atomics, so nothing on the
 * data path takes a lock or is paused for it. Values of different counters are not a
 * snapshot taken at one instant.
 */
#ifndef CG_METRICS_H
#define CG_METRICS_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "base/counters.h"
#include "observe/sbuf.h"

struct cg_daemon;

/* What the main thread knows beyond the daemon's counters. main.c owns it; the stats
 * socket reads and updates it, on the main thread only. */
struct cg_runtime {
    struct cg_daemon *d;
    time_t      started_at;
    uint64_t    started_ms;         /* uv_hrtime() / 1e6 at start: uptime */
    unsigned    reloads;            /* SIGHUP or `reload`, both outcomes */
    unsigned    reload_failures;
    time_t      last_reload_at;     /* 0 = never */
    int         last_reload_ok;
    char        last_reload_msg[256];
    /* Reloads the configuration as SIGHUP does, logging why (<why>: "SIGHUP"...). Returns
     * 0 or a negative errno; the outcome is in the fields above. */
    int       (*reload)(struct cg_runtime *rt, const char *why);
    void       *ud;                 /* for reload */
    unsigned    stats_clients;      /* stats socket and /metrics clients connected now */
    uint64_t    stats_accepted;
    uint64_t    stats_refused;      /* over stats_max_clients */
    uint64_t    stats_timeouts;     /* closed for being idle or not reading */
};

/* Appends `show stats`: one JSON object, then a newline. <census> (NULL when not taken)
 * holds each worker's coroutine counts, rt->d->nworkers of them. Returns 0 or -ENOBUFS. */
int cg_metrics_json(struct cg_sbuf *b, const struct cg_runtime *rt,
                    const struct cg_coro_census *census);

/* Appends `show metrics`: Prometheus text exposition format 0.0.4, <census> as for
 * cg_metrics_json(). Returns 0 or -ENOBUFS. */
int cg_metrics_prometheus(struct cg_sbuf *b, const struct cg_runtime *rt,
                          const struct cg_coro_census *census);

/* Adds to <uses>[i] how many rows of the renderers' tables read the i-th 64-bit word of
 * struct cg_worker_stats, for <n> words. Tests want every word read exactly once: a
 * counter added to the struct and forgotten in the tables reads 0, a row listed twice 2.
 * Returns 0, or -ERANGE when a row reads past <n> words. */
int cg_metrics_worker_coverage(unsigned *uses, size_t n);

#endif
