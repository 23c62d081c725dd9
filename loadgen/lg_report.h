/* loadgen/lg_report.h — counters, merged results, live progress and the final report of
 * `corogate-loadgen run` (text, JSON, gnuplot).
 *
 * Counters and histograms are kept per thread, merged per process, then merged over the
 * processes of --procs by the parent (histograms through cg_hist_encode/decode_add). The
 * aggregator holds the latest figures of every process, prints the progress line once a
 * second, keeps the timeline, and writes the report.
 */
#ifndef LG_REPORT_H
#define LG_REPORT_H

#include <stdint.h>
#include <stdio.h>

#include "hist.h"

struct lg_run_cfg;

/* Errors by kind: the connect phase, then established connections. */
enum lg_err {
    LG_ERR_REFUSED = 0,     /* connect(): ECONNREFUSED */
    LG_ERR_CONN_TIMEOUT,    /* connect() or WebSocket handshake took too long */
    LG_ERR_NO_ADDR,         /* EADDRNOTAVAIL/EADDRINUSE: source ports exhausted */
    LG_ERR_NO_FDS,          /* EMFILE/ENFILE: the open-files limit */
    LG_ERR_CONN_OTHER,      /* any other connect failure */
    LG_ERR_HANDSHAKE,       /* TLS handshake failed, WebSocket upgrade refused or malformed */
    LG_ERR_CLOSED,          /* established, then closed by the peer before the stop */
    LG_ERR_RESET,           /* established, then reset (ECONNRESET, EPIPE) */
    LG_ERR_IO,              /* established, other read/write error or a write stall */
    LG_ERR_COUNT
};

/* Short names, also the JSON keys: "refused", "connect_timeout"... */
extern const char *const lg_err_names[LG_ERR_COUNT];

/* Room for the reasons of enum cg_tls_fail (common/tls.h; lg_report.c checks the size). */
#define LG_TLS_FAILS 8

/* All plain counts, so that a process can send them to its parent as they are. */
struct lg_counters {
    uint64_t attempts;          /* connect() calls */
    uint64_t connected;         /* connects that succeeded (handshake included) */
    uint64_t ended;             /* connected ones that have ended since */
    uint64_t dropped;           /* ... of which by an error before the stop */
    uint64_t up_at_steady;      /* up when the ramp was over */
    uint64_t up_at_stop;        /* up when the steady phase ended */
    uint64_t errors[LG_ERR_COUNT];
    uint64_t sent;              /* messages */
    uint64_t received;          /* intact messages accepted in order */
    uint64_t bytes_sent;
    uint64_t bytes_received;
    uint64_t corrupt;
    uint64_t lost;
    uint64_t reordered;
    uint64_t skipped_bytes;     /* bytes thrown away resynchronising after damage */
    uint64_t steady_sent;       /* during the steady phase */
    uint64_t steady_received;
    uint64_t ramp_ns;           /* start to ramp done (the longest) */
    uint64_t steady_ns;         /* length of the steady phase (the longest) */
    uint64_t steady_rate_milli; /* steady messages received per second x 1000 (summed) */
    uint64_t steady_connected;  /* connects during the steady phase (--churn) */
    uint64_t steady_conn_rate_milli; /* ... per second x 1000 (summed) */
    uint64_t tls_full;          /* TLS handshakes done in full (--tls) */
    uint64_t tls_resumed;       /* ... resumed from a session ticket */
    uint64_t tls_v13;           /* ... of either kind that agreed on TLS 1.3 (others: 1.2) */
    uint64_t tls_fail[LG_TLS_FAILS];  /* failed TLS handshakes by enum cg_tls_fail */
    uint64_t ramp_handshakes;   /* TLS handshakes done by the end of the ramp */
    uint64_t steady_handshakes; /* ... during the steady phase (--churn) */
    uint64_t steady_hs_rate_milli;    /* ... per second x 1000 (summed) */
    uint64_t cpu_us;            /* the loadgen's own CPU time, user + system (summed) */
    uint64_t wall_us;           /* the longest process's run time */
    uint64_t threads;           /* event-loop threads (summed) */
    uint64_t procs_done;        /* processes that delivered their result */
    uint64_t interrupted;       /* processes stopped by a signal */
};

/* Adds <src> into <dst>: sums, except the phase lengths (maxima). */
void lg_counters_add(struct lg_counters *dst, const struct lg_counters *src);

/* Connections up now according to <c>. */
uint64_t lg_counters_up(const struct lg_counters *c);

/* A merged result: counters and the latency histograms (ns). */
struct lg_result {
    struct lg_counters c;
    struct cg_hist     connect;   /* connect() to connected (TLS and ws upgrade included) */
    struct cg_hist     rtt;       /* message round trip, from the intended send time */
    struct cg_hist     tls;       /* the TLS handshake alone (--tls), successful ones */
};

#define LG_HIST_HIGHEST (3600ull * 1000000000ull)   /* 1 h in ns */
#define LG_HIST_SIGFIGS 3

/* Initialises a histogram with the run's configuration. Returns 0 or -ENOMEM. */
int lg_hist_init(struct cg_hist *h);

int  lg_result_init(struct lg_result *r);     /* 0 or -ENOMEM; deinit is then safe */
void lg_result_deinit(struct lg_result *r);

/* Adds <src> into <dst>. Returns 0 or -EINVAL (histograms of another configuration). */
int lg_result_merge(struct lg_result *dst, const struct lg_result *src);

/* Serialises <r> into a malloc'ed buffer (the caller frees) of <*len> bytes, or NULL when
 * out of memory. lg_result_decode_add() adds such a buffer into a result. Returns 0 or
 * -EINVAL when malformed. */
void *lg_result_encode(const struct lg_result *r, size_t *len);
int lg_result_decode_add(struct lg_result *r, const void *buf, size_t len);

/* ------------------------------------------------------------------ aggregation */

struct lg_agg;

/* Makes an aggregator for <nsources> processes of the run <cfg> (borrowed for its life),
 * printing progress on <progress_to> (stderr: one refreshing line when it is a terminal,
 * plain lines otherwise; NULL for none). Returns NULL when out of memory. */
struct lg_agg *lg_agg_new(const struct lg_run_cfg *cfg, unsigned nsources, FILE *progress_to);
void lg_agg_free(struct lg_agg *a);   /* NULL-safe */

/* Records process <src>'s latest counters and cumulative round-trip histogram (NULL: keep
 * the previous one). */
void lg_agg_update(struct lg_agg *a, unsigned src, const struct lg_counters *c,
                   const struct cg_hist *rtt);

/* Like lg_agg_update() with the histogram encoded by cg_hist_encode. Returns 0 or -EINVAL. */
int lg_agg_update_encoded(struct lg_agg *a, unsigned src, const struct lg_counters *c,
                          const void *rtt, size_t len);

/* Samples the timeline and prints the progress line: call once a second. */
void lg_agg_tick(struct lg_agg *a);

/* Adds the final result of process <src>. Returns 0 or -EINVAL. */
int lg_agg_final(struct lg_agg *a, unsigned src, const struct lg_result *r);
int lg_agg_final_encoded(struct lg_agg *a, unsigned src, const void *buf, size_t len);

/* Prints the final report on <out>, writes the JSON and plot files the configuration asks
 * for, and returns the exit status: 0 reached, held and no data errors; 1 the connection
 * count was not reached or not held (or the run was interrupted, or a process failed);
 * 3 reached and held but messages were corrupt, lost or reordered. */
int lg_agg_report(struct lg_agg *a, FILE *out);

/* Formats <ns> as milliseconds with three decimals into <buf>. */
const char *lg_fmt_ms(uint64_t ns, char *buf, size_t len);

#endif
