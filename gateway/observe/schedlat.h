/* gateway/observe/schedlat.h — scheduler latency of the worker threads, measured in the kernel by
 * bpf/schedlat.bpf.c: the loader (main thread) and the user-side aggregation.
 *
 * Per worker thread: run-queue latency (wake-up, or preemption while runnable, to running
 * again) as a log2 histogram of microseconds with count, sum and max; voluntary and
 * involuntary switches with the off-CPU time that followed them; wake-ups; CPU migrations.
 * The kernel side filters on this process and on a TID -> worker map filled at start, so
 * other tasks cost one compare per scheduler event.
 *
 * Attach paths (enum cg_bpf_attach, `[bpf] attach`): BTF tracepoints (tp_btf), raw
 * tracepoints (raw_tp), kprobes on try_to_wake_up, wake_up_new_task, finish_task_switch
 * and set_task_cpu (names resolved in /proc/kallsyms); CG_BPF_AUTO tries them in that
 * order and keeps the first that loads and attaches. Without privilege (root, or CAP_BPF
 * and CAP_PERFMON) or kernel BTF the probes are disabled with a reason; the daemon runs on.
 *
 * Threads: everything here runs on the main thread, except reads (cg_schedlat_read(),
 * cg_schedlat_format()), which any thread may do while the object lives.
 */
#ifndef CG_SCHEDLAT_H
#define CG_SCHEDLAT_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "guard/breaker.h"
#include "base/counters.h"

struct cg_daemon;
struct cg_sbuf;
struct cg_schedlat;

#define CG_SCHED_SLOTS 32     /* slot 0: 0..1 us; slot i: 2^i..2^(i+1)-1 us; last: above */

/* A log2 histogram of microseconds, as read from the kernel. */
struct cg_sched_hist {
    uint64_t slots[CG_SCHED_SLOTS];
    uint64_t count;
    uint64_t sum_ns;
    uint64_t max_ns;          /* since start: cg_sched_worker_diff() keeps the later one */
};

/* One worker thread's figures since the probes were attached. */
struct cg_sched_worker {
    struct cg_sched_hist runq;          /* run-queue latency */
    uint64_t off_vol_ns;                /* off-CPU time after blocking */
    uint64_t off_invol_ns;              /* off-CPU time after being preempted */
    uint64_t nvol;                      /* voluntary switches (blocked) */
    uint64_t ninvol;                    /* involuntary switches (preempted while runnable) */
    uint64_t wakeups;
    uint64_t migrations;
    uint64_t switch_in;                 /* times put on a CPU */
    int      tid;
    int      cpu;                       /* pinned to, or -1 */
};

struct cg_schedlat_opts {
    enum cg_bpf_attach attach;
    const char        *btf;             /* kernel BTF file; NULL = /sys/kernel/btf/vmlinux */
    const char        *kallsyms;        /* symbol table for kprobes; NULL = /proc/kallsyms */
    int                tgid;            /* process of <tids>; 0 = this one (a benchmark may
                                         * watch another process's threads) */
};

/* Loads the probes for the <n> worker threads whose TIDs are <tids> (worker i is tids[i];
 * <cpus>, which may be NULL, says where each is pinned, -1 for none), as <opts> says (NULL
 * = auto), and attaches them. Never fails for want of privilege, BTF or kernel support:
 * the object is then disabled, cg_schedlat_reason() says why, and one warning is logged
 * (an info line for attach = off). Returns the object (the caller frees it with
 * cg_schedlat_free()), or NULL with errno ENOMEM, or EINVAL when <n> is 0 or above the
 * map size (1024). */
struct cg_schedlat *cg_schedlat_new(const struct cg_schedlat_opts *opts, const int *tids,
                                    const int *cpus, unsigned n);

/* The daemon's way in: waits up to 2 s for every worker of <d> to publish its TID, then
 * calls cg_schedlat_new() with d->cfg's [bpf] section. Returns what that returns. */
struct cg_schedlat *cg_schedlat_start(struct cg_daemon *d);

/* Detaches and unloads the probes and frees <s>. NULL-safe. */
void cg_schedlat_free(struct cg_schedlat *s);

/* 1 when the probes are attached, 0 when disabled (or <s> is NULL). */
int cg_schedlat_is_running(const struct cg_schedlat *s);

/* The attach path in use: "tp_btf", "raw_tp", "kprobe"; "off" when disabled. Static. */
const char *cg_schedlat_mode(const struct cg_schedlat *s);

/* Why the probes are disabled ("" when running), valid while <s> lives. */
const char *cg_schedlat_reason(const struct cg_schedlat *s);

/* Reads worker <i>'s figures into *<out>. Returns 0, -ENODEV when the probes are
 * disabled, -ERANGE when there is no worker <i>, or the map read's negative errno. */
int cg_schedlat_read(const struct cg_schedlat *s, unsigned i, struct cg_sched_worker *out);

/* The kernel's run-time statistics of the programs in use (enabled while some process holds
 * bpf_enable_stats(BPF_STATS_RUN_TIME), or with sysctl kernel.bpf_stats_enabled = 1):
 * *<runs> program runs and *<run_ns> nanoseconds spent in them, summed. Returns 0 (both 0
 * while statistics are off), -ENODEV when the probes are disabled, or a negative errno. */
int cg_schedlat_prog_stats(const struct cg_schedlat *s, uint64_t *runs, uint64_t *run_ns);

/* The <p>th percentile (0 < p <= 100) of <h> in nanoseconds, interpolated linearly within
 * its log2 slot and capped at h->max_ns; 0 when <h> is empty. */
uint64_t cg_sched_hist_percentile(const struct cg_sched_hist *h, double p);

/* *<out> = <now> - <before>, field by field: the interval between two reads of one worker
 * (max_ns, tid and cpu are <now>'s). <out> may alias <now>. */
void cg_sched_worker_diff(struct cg_sched_worker *out, const struct cg_sched_worker *now,
                          const struct cg_sched_worker *before);

/* Reads worker <i> of <d>'s coroutine ready-to-run delays (coro_sched_ready_stats(), from
 * a coroutine being made ready to it running) into *<out>. Any thread. Returns 0, -ERANGE
 * when there is no worker <i> (or <d> is NULL), -ESRCH when it has ended. */
int cg_sched_coro_read(struct cg_daemon *d, unsigned i, struct cg_sched_hist *out);

/* Copies the live log2 histogram <h> (a worker's loop_busy, metrics-t.h) into *<out>. */
void cg_sched_hist_load(struct cg_sched_hist *out, const struct cg_log2_hist *h);

/* Reads worker <i> of <d>'s event-loop lag (stats.loop_busy: per loop iteration, how long
 * its callbacks ran) into *<out>. Any thread. Returns 0, or -ERANGE when there is no worker
 * <i> (or <d> is NULL). */
int cg_sched_loop_read(struct cg_daemon *d, unsigned i, struct cg_sched_hist *out);

/* ------------------------------------------------------------------ breaker signal */

/* A sliding window over the workers' cumulative histograms (run-queue latency, coroutine
 * ready-to-run delay): snapshots kept every window / CG_SCHED_WINDOW_STEPS, so that the
 * difference between now and the snapshot one window old is the window's histogram. */
#define CG_SCHED_WINDOW_STEPS 8
#define CG_SCHED_MIN_SAMPLES  100  /* fewer in a window: its p99 says nothing, counts 0 */


struct cg_sched_window;

/* A window for <n> workers. Returns it (free with cg_sched_window_free()) or NULL (ENOMEM). */
struct cg_sched_window *cg_sched_window_new(unsigned n);
void cg_sched_window_free(struct cg_sched_window *win);    /* NULL-safe */

/* Forgets every snapshot (the window or its length changed, or the signal went off). */
void cg_sched_window_reset(struct cg_sched_window *win);

/* Adds worker <i>'s cumulative histograms of kind <kind> (CG_SCHED_RUNQ, CG_SCHED_CORO) as
 * of <now_ms>, keeping a snapshot when the last one is a step old (<window_ms> /
 * CG_SCHED_WINDOW_STEPS), and returns the <pct>th percentile (ns) of what was added since
 * the snapshot one window old (or the oldest kept, while the window is young): 0 before any
 * snapshot, or with fewer than CG_SCHED_MIN_SAMPLES samples. Call each kind with the same
 * <now_ms> once per tick. */
uint64_t cg_sched_window_add(struct cg_sched_window *win, unsigned i, int kind,
                             const struct cg_sched_hist *h, uint64_t now_ms,
                             uint64_t window_ms, double pct);

/* The breaker's scheduling-delay sample, taken by the main thread every check_interval
 * while [breaker] sched_latency_threshold is set: the worst p99, over every worker, of
 * run-queue latency (when the probes run) and coroutine ready-to-run delay, over the last
 * sched_latency_window; stored in d->brk (cg_breaker_sched_sample()). With the probes
 * disabled the coroutine delays still count; a NULL <s> (never started) does nothing.
 * Main thread. Returns 0 or -ENOMEM. */
int cg_schedlat_watch(struct cg_schedlat *s, struct cg_daemon *d, uint64_t now_ms);

/* `show sched`: the attach path (or why the probes are disabled), then per worker the
 * run-queue latency percentiles, switches with off-CPU time, wake-ups and migrations, the
 * coroutine ready-to-run and event-loop busy percentiles (when <d>, which may be NULL, is
 * given), and the histograms side by side (runqlat style); with <json>, the same as one
 * JSON object on one line; appended to <b>, ending in a newline. Returns 0 or -ENOBUFS.
 * <s> may be NULL (the probes were never started): reported disabled. */
int cg_schedlat_format(const struct cg_schedlat *s, struct cg_daemon *d, int json,
                       struct cg_sbuf *b);

/* Appends <h> as `{"count":..,"sum_ns":..,"max_ns":..,"p50_ns":..,"p99_ns":..,
 * "p999_ns":..,"log2_us":[...]}` with <count> as its count: the one JSON shape of a log2
 * histogram, for `show sched json` and `show stats`. */
void cg_sched_hist_json(struct cg_sbuf *b, const struct cg_sched_hist *h, uint64_t count);

/* Finds the kernel text symbol for function <base> in the kallsyms-format file <path>
 * (NULL = /proc/kallsyms): <base> itself, else a compiler-made clone of it such as
 * "<base>.isra.0" or "<base>.constprop.0" (never ".part"/".cold" pieces, never a
 * module's). Copies the name into <out> of <size>. Returns 0, -ENOENT when not found,
 * -ENAMETOOLONG, or the negative errno of opening <path>. */
int cg_schedlat_find_symbol(const char *path, const char *base, char *out, size_t size);

#endif
