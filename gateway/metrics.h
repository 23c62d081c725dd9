/* gateway/metrics.h — the daemon's counters rendered as JSON (`show stats`) and as the
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

#include "metrics-t.h"

struct cg_daemon;

/* Upper bounds of struct cg_lat_hist's buckets, microseconds, increasing. */
extern const uint64_t cg_lat_bounds_us[CG_LAT_BOUNDS];

/* Counts <us> in <h>. Only the thread that owns <h> calls this. */
void cg_lat_hist_record(struct cg_lat_hist *h, uint64_t us);

/* Counts <ns> in <h> (its log2 slot of microseconds). Only the thread that owns <h> calls
 * this. */
void cg_log2_hist_record(struct cg_log2_hist *h, uint64_t ns);

#define CG_STALL_REASONS 16     /* park reasons told apart; more are counted as "other" */

/* One worker's coroutines as that worker counted them, on its own thread (only it may walk
 * its scheduler), for `show stats` and `show metrics`: a coroutine is stalled when it has
 * been parked for at least [gateway] coro_stall_threshold. */
struct cg_coro_census {
    int          answered;      /* 0: the worker had stopped, or did not answer in time */
    unsigned     total;         /* coroutines alive */
    unsigned     parked;
    unsigned     stalled;
    uint64_t     threshold_ms;  /* the worker's coro_stall_threshold; 0 = off */
    unsigned     nreasons;
    struct {
        const char *reason;     /* a park reason (static string of the runtime), or "other" */
        unsigned    n;
    } by[CG_STALL_REASONS];     /* stalled coroutines by park reason, in order of discovery */
};

/* Counts one coroutine into <cs>: <parked> 1 when it is parked, for <reason> (a static
 * string, kept), since <parked_ms>; stalled when that is at least cs->threshold_ms (never
 * when that is 0). Returns 1 when it is stalled. Worker thread. */
int cg_coro_census_add(struct cg_coro_census *cs, int parked, const char *reason,
                       uint64_t parked_ms);

/* A growable text buffer that refuses to grow past <max> bytes: the first append that
 * would sets <overflow> and is dropped, as are all later ones. */
struct cg_sbuf {
    char   *p;          /* NUL-terminated while len > 0; owned */
    size_t  len;
    size_t  cap;
    size_t  max;
    int     overflow;   /* 1: past <max>, or out of memory */
};

/* Prepares an empty <b> (caller's storage) that holds at most <max> bytes. */
void cg_sbuf_init(struct cg_sbuf *b, size_t max);

/* Frees what <b> holds and leaves it empty. Idempotent. */
void cg_sbuf_deinit(struct cg_sbuf *b);

/* Appends <len> bytes at <s> / formatted text. Return 0 or -ENOBUFS (overflow set). */
int cg_sbuf_add(struct cg_sbuf *b, const void *s, size_t len);
int cg_sbuf_printf(struct cg_sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends <s> as a JSON string, quotes included. Returns 0 or -ENOBUFS. */
int cg_sbuf_json_str(struct cg_sbuf *b, const char *s);

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
