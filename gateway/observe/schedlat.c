/* gateway/observe/schedlat.c — loads bpf/schedlat.bpf.c for the worker threads, reads and formats
 * its per-worker figures.
 *
 * One skeleton, three sets of programs. For each attach path tried, the object is opened
 * afresh, the other paths' programs get autoload off (so they are neither verified nor
 * loaded), the TID -> worker map is filled and the path's programs are attached by hand
 * (the kprobes need the names found in /proc/kallsyms). A failure undoes that try whole
 * (schedlat_bpf__destroy) and, for attach = auto, the next path is tried. Missing
 * privilege ends the tries at once: the other paths need the same.
 *
 * libbpf's own messages go to the debug log: the decision is logged once, here.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <linux/types.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf/schedlat.h"
#include "guard/breaker.h"
#include "base/log.h"
#include "observe/sbuf.h"
#include "observe/schedlat.h"
#include "schedlat.skel.h"
#include "core/worker.h"

#define DEFAULT_BTF       "/sys/kernel/btf/vmlinux"
#define DEFAULT_KALLSYMS  "/proc/kallsyms"
#define MAX_LINKS         8
#define SYM_MAX           128
#define REASON_MAX        768
#define TID_WAIT_MS       2000

_Static_assert(CG_SCHED_SLOTS == SCHEDLAT_SLOTS, "one histogram layout");

struct cg_schedlat {
    struct schedlat_bpf *skel;
    struct bpf_link     *links[MAX_LINKS];
    unsigned             nlinks;
    enum cg_bpf_attach   mode;          /* in use; CG_BPF_OFF when disabled */
    unsigned             n;
    int                 *tids;
    int                 *cpus;
    char                 hooks[4 * SYM_MAX];   /* what is attached, for show sched */
    char                 reason[REASON_MAX];   /* why disabled */
    struct cg_sched_window *win;        /* the breaker's signal (cg_schedlat_watch()) */
    uint64_t             win_ms;        /* the window length <win> was made for */
};

static const char *const mode_names[] = {
    [CG_BPF_AUTO] = "auto", [CG_BPF_TP_BTF] = "tp_btf", [CG_BPF_RAW_TP] = "raw_tp",
    [CG_BPF_KPROBE] = "kprobe", [CG_BPF_OFF] = "off",
};

/* ------------------------------------------------------------------ libbpf messages */

static int on_libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
    char *msg = NULL, *line, *save = NULL;

    if (!cg_log_enabled(CG_LOG_DEBUG) || vasprintf(&msg, fmt, ap) < 0)
        return 0;
    /* Messages start with "libbpf: " already; a verifier log comes as one message. */
    for (line = strtok_r(msg, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
        cg_debug("%s", line);
    free(msg);
    return 0;
}

/* ------------------------------------------------------------------ kallsyms */

/* 1 when <name> is <base> followed by a clone suffix a kprobe may use as the function. */
static int is_clone_of(const char *name, const char *base)
{
    static const char *const ok[] = { ".isra.", ".constprop.", ".llvm.", NULL };
    size_t n = strlen(base);
    int i;

    if (strncmp(name, base, n) != 0 || name[n] != '.')
        return 0;
    for (i = 0; ok[i]; i++)
        if (strncmp(name + n, ok[i], strlen(ok[i])) == 0)
            return 1;
    return 0;
}

int cg_schedlat_find_symbol(const char *path, const char *base, char *out, size_t size)
{
    char line[512], name[SYM_MAX * 2], clone[SYM_MAX * 2] = "", type;
    unsigned long long addr;
    int found = 0, err;
    FILE *f;

    f = fopen(path ? path : DEFAULT_KALLSYMS, "re");
    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        /* "ffffffff813a4380 t finish_task_switch.isra.0" ["\t[module]"] */
        if (sscanf(line, "%llx %c %255s", &addr, &type, name) != 3)
            continue;
        if ((type != 't' && type != 'T') || strchr(line, '['))
            continue;
        if (strcmp(name, base) == 0) {
            found = 1;
            break;
        }
        if (!clone[0] && is_clone_of(name, base))
            snprintf(clone, sizeof(clone), "%s", name);
    }
    fclose(f);
    if (!found && !clone[0])
        return -ENOENT;
    err = snprintf(out, size, "%s", found ? base : clone);
    return err < 0 || (size_t)err >= size ? -ENAMETOOLONG : 0;
}

/* ------------------------------------------------------------------ loading */

enum { P_WAKEUP, P_WAKEUP_NEW, P_SWITCH, P_MIGRATE, NPROGS };

/* The programs of <mode>, by role; the kprobe set has one program for both wake-ups. */
static void progs_of(struct schedlat_bpf *skel, enum cg_bpf_attach mode,
                     struct bpf_program *p[NPROGS])
{
    switch (mode) {
    case CG_BPF_TP_BTF:
        p[P_WAKEUP] = skel->progs.btf_wakeup;
        p[P_WAKEUP_NEW] = skel->progs.btf_wakeup_new;
        p[P_SWITCH] = skel->progs.btf_switch;
        p[P_MIGRATE] = skel->progs.btf_migrate;
        break;
    case CG_BPF_RAW_TP:
        p[P_WAKEUP] = skel->progs.raw_wakeup;
        p[P_WAKEUP_NEW] = skel->progs.raw_wakeup_new;
        p[P_SWITCH] = skel->progs.raw_switch;
        p[P_MIGRATE] = skel->progs.raw_migrate;
        break;
    default:
        p[P_WAKEUP] = skel->progs.kp_wakeup;
        p[P_WAKEUP_NEW] = skel->progs.kp_wakeup;
        p[P_SWITCH] = skel->progs.kp_switch;
        p[P_MIGRATE] = skel->progs.kp_migrate;
        break;
    }
}

static void set_autoload(struct schedlat_bpf *skel, enum cg_bpf_attach mode)
{
    static const enum cg_bpf_attach all[] = { CG_BPF_TP_BTF, CG_BPF_RAW_TP, CG_BPF_KPROBE };
    struct bpf_program *p[NPROGS];
    size_t i, k;

    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        progs_of(skel, all[i], p);
        for (k = 0; k < NPROGS; k++)
            bpf_program__set_autoload(p[k], all[i] == mode);
    }
}

static void unload(struct cg_schedlat *s)
{
    while (s->nlinks > 0)
        bpf_link__destroy(s->links[--s->nlinks]);
    schedlat_bpf__destroy(s->skel);     /* NULL-safe */
    s->skel = NULL;
}

static int add_link(struct cg_schedlat *s, struct bpf_link *link)
{
    if (!link)
        return -errno;
    s->links[s->nlinks++] = link;
    return 0;
}

/* The tracepoint paths: libbpf attaches by the section name. */
static int attach_tracepoints(struct cg_schedlat *s, enum cg_bpf_attach mode, char *why,
                              size_t size)
{
    struct bpf_program *p[NPROGS];
    int k, err;

    progs_of(s->skel, mode, p);
    for (k = 0; k < NPROGS; k++) {
        err = add_link(s, bpf_program__attach(p[k]));
        if (err < 0) {
            snprintf(why, size, "attach %s: %s", bpf_program__section_name(p[k]),
                     strerror(-err));
            return err;
        }
    }
    snprintf(s->hooks, sizeof(s->hooks), "%s sched_wakeup, sched_wakeup_new, sched_switch, "
             "sched_migrate_task", mode == CG_BPF_TP_BTF ? "BTF tracepoints" :
             "raw tracepoints");
    return 0;
}

/* The kprobe path: every symbol is looked up first, so a kernel that lacks one fails
 * before anything is attached. */
static int attach_kprobes(struct cg_schedlat *s, const char *kallsyms, char *why, size_t size)
{
    static const struct { const char *base; int role; } hooks[] = {
        { "try_to_wake_up", P_WAKEUP },
        { "wake_up_new_task", P_WAKEUP_NEW },
        { "finish_task_switch", P_SWITCH },
        { "set_task_cpu", P_MIGRATE },
    };
    char syms[4][SYM_MAX];
    struct bpf_program *p[NPROGS];
    size_t i, len = 0;
    int err;

    for (i = 0; i < 4; i++) {
        err = cg_schedlat_find_symbol(kallsyms, hooks[i].base, syms[i], sizeof(syms[i]));
        if (err < 0) {
            snprintf(why, size, "no kernel function %s in %s: %s", hooks[i].base,
                     kallsyms ? kallsyms : DEFAULT_KALLSYMS, strerror(-err));
            return err;
        }
    }
    progs_of(s->skel, CG_BPF_KPROBE, p);
    for (i = 0; i < 4; i++) {
        err = add_link(s, bpf_program__attach_kprobe(p[hooks[i].role], false, syms[i]));
        if (err < 0) {
            snprintf(why, size, "attach kprobe %.127s: %s%s", syms[i], strerror(-err),
                     access("/sys/bus/event_source/devices/kprobe", F_OK) < 0 ?
                     " (this kernel has no kprobe support)" : "");
            return err;
        }
    }
    len = (size_t)snprintf(s->hooks, sizeof(s->hooks), "kprobes");
    for (i = 0; i < 4 && len < sizeof(s->hooks); i++)
        len += (size_t)snprintf(s->hooks + len, sizeof(s->hooks) - len, "%s %s",
                                i ? "," : "", syms[i]);
    return 0;
}

/* Opens, loads and attaches <mode>'s programs. Returns 0, or a negative errno with the
 * failed step in <why>; nothing stays loaded then. */
static int try_mode(struct cg_schedlat *s, enum cg_bpf_attach mode,
                    const struct cg_schedlat_opts *o, char *why, size_t size)
{
    LIBBPF_OPTS(bpf_object_open_opts, oo);
    __u32 i, tid;
    int err;

    /* libbpf finds the running kernel's BTF by itself; a file named in the config is used
     * for CO-RE instead (a kernel without /sys/kernel/btf, BTF from elsewhere). */
    if (o->btf && strcmp(o->btf, DEFAULT_BTF) != 0)
        oo.btf_custom_path = o->btf;
    s->skel = schedlat_bpf__open_opts(&oo);
    if (!s->skel) {
        err = -errno;
        snprintf(why, size, "open: %s", strerror(-err));
        return err;
    }
    s->skel->rodata->targ_tgid = (__u32)(o->tgid > 0 ? o->tgid : getpid());
    set_autoload(s->skel, mode);
    err = bpf_map__set_max_entries(s->skel->maps.stats, s->n);
    if (err == 0)
        err = bpf_map__set_max_entries(s->skel->maps.tstate, s->n);
    if (err == 0) {
        err = schedlat_bpf__load(s->skel);
        if (err < 0)
            snprintf(why, size, "load: %s", strerror(-err));
    } else {
        snprintf(why, size, "map size: %s", strerror(-err));
    }
    for (i = 0; err == 0 && i < s->n; i++) {
        tid = (__u32)s->tids[i];
        err = bpf_map__update_elem(s->skel->maps.workers_by_tid, &tid, sizeof(tid), &i,
                                   sizeof(i), BPF_ANY);
        if (err < 0)
            snprintf(why, size, "worker map: %s", strerror(-err));
    }
    if (err == 0 && mode == CG_BPF_KPROBE)
        err = attach_kprobes(s, o->kallsyms, why, size);
    else if (err == 0)
        err = attach_tracepoints(s, mode, why, size);
    if (err < 0)
        unload(s);
    return err;
}

/* Appends "<fmt>" to s->reason, "; " between parts. */
__attribute__((format(printf, 2, 3)))
static void add_reason(struct cg_schedlat *s, const char *fmt, ...)
{
    size_t len = strlen(s->reason);
    va_list ap;

    if (len && len + 2 < sizeof(s->reason)) {
        memcpy(s->reason + len, "; ", 3);
        len += 2;
    }
    va_start(ap, fmt);
    vsnprintf(s->reason + len, sizeof(s->reason) - len, fmt, ap);
    va_end(ap);
}

struct cg_schedlat *cg_schedlat_new(const struct cg_schedlat_opts *opts, const int *tids,
                                    const int *cpus, unsigned n)
{
    static const enum cg_bpf_attach order[] = { CG_BPF_TP_BTF, CG_BPF_RAW_TP, CG_BPF_KPROBE };
    struct cg_schedlat_opts o = { .attach = CG_BPF_AUTO };
    struct cg_schedlat *s;
    const char *btf;
    char why[REASON_MAX / 2];
    size_t i, first = 0, last = 2;
    unsigned k;
    int err;

    if (n == 0 || n > SCHEDLAT_MAX_WORKERS) {
        errno = EINVAL;
        return NULL;
    }
    if (opts)
        o = *opts;
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->tids = calloc(n, sizeof(*s->tids));
    s->cpus = calloc(n, sizeof(*s->cpus));
    if (!s->tids || !s->cpus) {
        cg_schedlat_free(s);
        errno = ENOMEM;
        return NULL;
    }
    s->n = n;
    for (k = 0; k < n; k++) {
        s->tids[k] = tids[k];
        s->cpus[k] = cpus ? cpus[k] : -1;
    }
    s->mode = CG_BPF_OFF;

    if (o.attach == CG_BPF_OFF) {
        add_reason(s, "[bpf] attach = off");
        cg_info("bpf: scheduler probes off ([bpf] attach = off)");
        return s;
    }
    btf = o.btf ? o.btf : DEFAULT_BTF;
    if (access(btf, R_OK) < 0) {
        add_reason(s, "no kernel BTF (%s: %s)", btf, strerror(errno));
        goto out_disabled;
    }
    libbpf_set_print(on_libbpf_print);
    if (o.attach != CG_BPF_AUTO) {
        for (first = 0; order[first] != o.attach; first++)
            continue;
        last = first;
    }
    for (i = first; i <= last; i++) {
        err = try_mode(s, order[i], &o, why, sizeof(why));
        if (err == 0) {
            s->mode = order[i];
            if (s->reason[0])       /* auto fell back: say from what, once */
                cg_info("bpf: scheduler probes: %s", s->reason);
            s->reason[0] = '\0';
            cg_notice("bpf: scheduler probes attached to %u worker threads: %s (%s)", n,
                      mode_names[s->mode], s->hooks);
            return s;
        }
        if (err == -EPERM) {    /* EACCES is the verifier's refusal */
            s->reason[0] = '\0';
            add_reason(s, "no privilege for BPF (needs root, or CAP_BPF and CAP_PERFMON): "
                       "%s: %s", mode_names[order[i]], why);
            goto out_disabled;
        }
        add_reason(s, "%s: %s", mode_names[order[i]], why);
    }
out_disabled:
    cg_warn("bpf: scheduler probes disabled: %s; running without them", s->reason);
    return s;
}

struct cg_schedlat *cg_schedlat_start(struct cg_daemon *d)
{
    struct cg_schedlat_opts o = { .attach = d->cfg->bpf.attach, .btf = d->cfg->bpf.btf };
    struct timespec ts = { 0, 1000000 };
    int *tids, *cpus, waited = 0;
    struct cg_schedlat *s;
    unsigned i;

    tids = calloc(d->nworkers ? d->nworkers : 1, sizeof(*tids));
    cpus = calloc(d->nworkers ? d->nworkers : 1, sizeof(*cpus));
    if (!tids || !cpus) {
        free(tids);
        free(cpus);
        return NULL;
    }
    for (i = 0; i < d->nworkers; i++) {
        while ((tids[i] = atomic_load(&d->workers[i].tid)) == 0 && waited < TID_WAIT_MS &&
               o.attach != CG_BPF_OFF) {
            nanosleep(&ts, NULL);
            waited++;
        }
        cpus[i] = d->workers[i].cpu;    /* written before the TID was published */
    }
    for (i = 0; i < d->nworkers && tids[i] != 0; i++)
        continue;
    if (i < d->nworkers && o.attach != CG_BPF_OFF) {
        cg_warn("bpf: worker %u did not start within %d ms; scheduler probes disabled", i,
                TID_WAIT_MS);
        o.attach = CG_BPF_OFF;
    }
    s = cg_schedlat_new(&o, tids, cpus, d->nworkers);
    free(tids);
    free(cpus);
    return s;
}

void cg_schedlat_free(struct cg_schedlat *s)
{
    if (!s)
        return;
    unload(s);
    cg_sched_window_free(s->win);
    free(s->tids);
    free(s->cpus);
    free(s);
}

int cg_schedlat_is_running(const struct cg_schedlat *s)
{
    return s && s->mode != CG_BPF_OFF;
}

const char *cg_schedlat_mode(const struct cg_schedlat *s)
{
    return s ? mode_names[s->mode] : "off";
}

const char *cg_schedlat_reason(const struct cg_schedlat *s)
{
    return s ? s->reason : "not started";
}

/* ------------------------------------------------------------------ reading */

int cg_schedlat_read(const struct cg_schedlat *s, unsigned i, struct cg_sched_worker *out)
{
    struct schedlat_worker v;
    __u32 key = i;
    int err;

    if (!cg_schedlat_is_running(s))
        return -ENODEV;
    if (i >= s->n)
        return -ERANGE;
    err = bpf_map__lookup_elem(s->skel->maps.stats, &key, sizeof(key), &v, sizeof(v), 0);
    if (err < 0)
        return err;
    memset(out, 0, sizeof(*out));
    memcpy(out->runq.slots, v.runq_slots, sizeof(out->runq.slots));
    out->runq.count = v.runq_count;
    out->runq.sum_ns = v.runq_sum_ns;
    out->runq.max_ns = v.runq_max_ns;
    out->off_vol_ns = v.off_vol_ns;
    out->off_invol_ns = v.off_invol_ns;
    out->nvol = v.nvol;
    out->ninvol = v.ninvol;
    out->wakeups = v.wakeups;
    out->migrations = v.migrations;
    out->switch_in = v.switch_in;
    out->tid = s->tids[i];
    out->cpu = s->cpus[i];
    return 0;
}

int cg_schedlat_prog_stats(const struct cg_schedlat *s, uint64_t *runs, uint64_t *run_ns)
{
    struct bpf_program *p[NPROGS];
    struct bpf_prog_info info;
    __u32 len;
    int k, err;

    *runs = 0;
    *run_ns = 0;
    if (!cg_schedlat_is_running(s))
        return -ENODEV;
    progs_of(s->skel, s->mode, p);
    for (k = 0; k < NPROGS; k++) {
        if (k > 0 && p[k] == p[k - 1])         /* kp_wakeup serves two hooks */
            continue;
        memset(&info, 0, sizeof(info));
        len = sizeof(info);
        err = bpf_obj_get_info_by_fd(bpf_program__fd(p[k]), &info, &len);
        if (err < 0)
            return err;
        *runs += info.run_cnt;
        *run_ns += info.run_time_ns;
    }
    return 0;
}

/* Slot <i> holds [lo, hi) nanoseconds. */
static void slot_bounds(unsigned i, uint64_t *lo, uint64_t *hi)
{
    *lo = i == 0 ? 0 : (1ull << i) * 1000;
    *hi = (1ull << (i + 1)) * 1000;
}

uint64_t cg_sched_hist_percentile(const struct cg_sched_hist *h, double p)
{
    uint64_t total = 0, cum = 0, lo, hi, v;
    double rank;
    unsigned i;

    for (i = 0; i < CG_SCHED_SLOTS; i++)
        total += h->slots[i];
    if (total == 0)
        return 0;
    rank = p / 100.0 * (double)total;
    if (rank < 1.0)
        rank = 1.0;
    for (i = 0; i < CG_SCHED_SLOTS; i++) {
        if (h->slots[i] == 0 || (double)(cum + h->slots[i]) < rank) {
            cum += h->slots[i];
            continue;
        }
        slot_bounds(i, &lo, &hi);
        if (i == CG_SCHED_SLOTS - 1 && h->max_ns > lo)
            hi = h->max_ns;
        v = lo + (uint64_t)((rank - (double)cum) / (double)h->slots[i] * (double)(hi - lo));
        return h->max_ns && v > h->max_ns ? h->max_ns : v;
    }
    return h->max_ns;
}

void cg_sched_worker_diff(struct cg_sched_worker *out, const struct cg_sched_worker *now,
                          const struct cg_sched_worker *before)
{
    unsigned i;

#define SUB(f) out->f = now->f >= before->f ? now->f - before->f : 0
    for (i = 0; i < CG_SCHED_SLOTS; i++)
        SUB(runq.slots[i]);
    SUB(runq.count);
    SUB(runq.sum_ns);
    SUB(off_vol_ns);
    SUB(off_invol_ns);
    SUB(nvol);
    SUB(ninvol);
    SUB(wakeups);
    SUB(migrations);
    SUB(switch_in);
#undef SUB
    out->runq.max_ns = now->runq.max_ns;
    out->tid = now->tid;
    out->cpu = now->cpu;
}

/* ------------------------------------------------------------------ formatting */

/* "850ns", "12.3us", "4.56ms", "1.23s". */
static const char *fmt_ns(uint64_t ns, char *buf, size_t size)
{
    if (ns < 1000)
        snprintf(buf, size, "%lluns", (unsigned long long)ns);
    else if (ns < 1000000)
        snprintf(buf, size, "%.3gus", (double)ns / 1e3);
    else if (ns < 1000000000)
        snprintf(buf, size, "%.3gms", (double)ns / 1e6);
    else
        snprintf(buf, size, "%.3gs", (double)ns / 1e9);
    return buf;
}

int cg_sched_coro_read(struct cg_daemon *d, unsigned i, struct cg_sched_hist *out)
{
    struct cg_worker *w;
    struct coro_ready_stats rs;
    int err = 0;

    if (!d || i >= d->nworkers)
        return -ERANGE;
    w = &d->workers[i];
    if (!w->sched)
        return -ESRCH;
    /* The scheduler is freed once the worker closed its async handle: check under the
     * lock the worker takes to do so. */
    uv_mutex_lock(&w->lock);
    if (w->async_closed)
        err = -ESRCH;
    else
        coro_sched_ready_stats(w->sched, &rs);
    uv_mutex_unlock(&w->lock);
    if (err < 0)
        return err;
    _Static_assert(CORO_READY_SLOTS == CG_SCHED_SLOTS, "one histogram layout");
    memcpy(out->slots, rs.slots, sizeof(out->slots));
    out->count = rs.count;
    out->sum_ns = rs.sum_ns;
    out->max_ns = rs.max_ns;
    return 0;
}

void cg_sched_hist_load(struct cg_sched_hist *out, const struct cg_log2_hist *h)
{
    unsigned i;

    _Static_assert(CG_LOG2_SLOTS == CG_SCHED_SLOTS, "one histogram layout");
    out->count = 0;
    for (i = 0; i < CG_SCHED_SLOTS; i++) {
        out->slots[i] = atomic_load_explicit(&h->slots[i], memory_order_relaxed);
        out->count += out->slots[i];
    }
    out->sum_ns = atomic_load_explicit(&h->sum_ns, memory_order_relaxed);
    out->max_ns = atomic_load_explicit(&h->max_ns, memory_order_relaxed);
}

int cg_sched_loop_read(struct cg_daemon *d, unsigned i, struct cg_sched_hist *out)
{
    if (!d || i >= d->nworkers)
        return -ERANGE;
    cg_sched_hist_load(out, &d->workers[i].stats.loop_busy);
    return 0;
}

/* ------------------------------------------------------------------ breaker signal */

#define WIN_RING (CG_SCHED_WINDOW_STEPS + 2)

struct win_snap {
    uint64_t at_ms;
    uint64_t slots[CG_SCHED_SLOTS];
};

struct win_ring {
    struct win_snap snap[WIN_RING];
    unsigned        first;              /* the oldest */
    unsigned        len;
};

struct cg_sched_window {
    unsigned        n;
    struct win_ring ring[];             /* [n * CG_SCHED_NKINDS] */
};

struct cg_sched_window *cg_sched_window_new(unsigned n)
{
    struct cg_sched_window *win;

    win = calloc(1, sizeof(*win) + (size_t)(n ? n : 1) * CG_SCHED_NKINDS *
                                   sizeof(win->ring[0]));
    if (win)
        win->n = n;
    return win;
}

void cg_sched_window_free(struct cg_sched_window *win)
{
    free(win);
}

void cg_sched_window_reset(struct cg_sched_window *win)
{
    unsigned i;

    for (i = 0; win && i < win->n * CG_SCHED_NKINDS; i++)
        win->ring[i].len = 0;
}

uint64_t cg_sched_window_add(struct cg_sched_window *win, unsigned i, int kind,
                             const struct cg_sched_hist *h, uint64_t now_ms,
                             uint64_t window_ms, double pct)
{
    struct win_ring *r;
    const struct win_snap *base = NULL, *newest;
    struct win_snap *put;
    struct cg_sched_hist d;
    uint64_t step = window_ms / CG_SCHED_WINDOW_STEPS, p = 0;
    unsigned k;

    if (!win || i >= win->n || kind < 0 || kind >= CG_SCHED_NKINDS)
        return 0;
    r = &win->ring[i * CG_SCHED_NKINDS + (unsigned)kind];
    /* The newest snapshot at least a window old, else the oldest one. */
    for (k = 0; k < r->len; k++) {
        const struct win_snap *sn = &r->snap[(r->first + k) % WIN_RING];

        if (k == 0 || sn->at_ms + window_ms <= now_ms)
            base = sn;
        else
            break;
    }
    if (base) {
        memset(&d, 0, sizeof(d));
        for (k = 0; k < CG_SCHED_SLOTS; k++) {
            d.slots[k] = h->slots[k] >= base->slots[k] ? h->slots[k] - base->slots[k] : 0;
            d.count += d.slots[k];
        }
        d.max_ns = h->max_ns;
        if (d.count >= CG_SCHED_MIN_SAMPLES)
            p = cg_sched_hist_percentile(&d, pct);
    }
    newest = r->len ? &r->snap[(r->first + r->len - 1) % WIN_RING] : NULL;
    if (!newest || now_ms >= newest->at_ms + (step ? step : 1)) {
        if (r->len == WIN_RING) {
            r->first = (r->first + 1) % WIN_RING;
            r->len--;
        }
        put = &r->snap[(r->first + r->len++) % WIN_RING];
        put->at_ms = now_ms;
        memcpy(put->slots, h->slots, sizeof(put->slots));
    }
    return p;
}

int cg_schedlat_watch(struct cg_schedlat *s, struct cg_daemon *d, uint64_t now_ms)
{
    struct cg_breaker *b = d ? d->brk : NULL;
    uint64_t thr, win_ms, p, worst = 0;
    struct cg_sched_worker w;
    struct cg_sched_hist h;
    unsigned i, worker = 0;
    int kind = CG_SCHED_RUNQ;

    if (!s || !b)
        return 0;
    thr = atomic_load(&b->sched_threshold_ns);
    win_ms = atomic_load(&b->sched_window_ms);
    if (!thr) {                     /* off: nothing kept */
        cg_sched_window_free(s->win);
        s->win = NULL;
        cg_breaker_sched_sample(b, 0, 0, 0, now_ms);
        return 0;
    }
    if (!s->win || s->win_ms != win_ms) {
        cg_sched_window_free(s->win);
        s->win = cg_sched_window_new(d->nworkers);
        s->win_ms = win_ms;
        if (!s->win)
            return -ENOMEM;
    }
    for (i = 0; i < d->nworkers; i++) {
        if (cg_schedlat_read(s, i, &w) == 0) {
            p = cg_sched_window_add(s->win, i, CG_SCHED_RUNQ, &w.runq, now_ms, win_ms, 99);
            if (p > worst) {
                worst = p;
                worker = i;
                kind = CG_SCHED_RUNQ;
            }
        }
        if (cg_sched_coro_read(d, i, &h) == 0) {
            p = cg_sched_window_add(s->win, i, CG_SCHED_CORO, &h, now_ms, win_ms, 99);
            if (p > worst) {
                worst = p;
                worker = i;
                kind = CG_SCHED_CORO;
            }
        }
    }
    cg_breaker_sched_sample(b, worst, worker, kind, now_ms);
    return 0;
}

/* "N samples, avg A, p50 B, p99 C, p99.9 D, max E" */
static void put_ch(struct cg_sbuf *b, char c)
{
    cg_sbuf_add(b, &c, 1);
}

static void print_summary(struct cg_sbuf *f, const struct cg_sched_hist *h, const char *what)
{
    char a[5][32];

    cg_sbuf_printf(f, "%llu %s, avg %s, p50 %s, p99 %s, p99.9 %s, max %s\n",
            (unsigned long long)h->count, what,
            fmt_ns(h->count ? h->sum_ns / h->count : 0, a[0], 32),
            fmt_ns(cg_sched_hist_percentile(h, 50), a[1], 32),
            fmt_ns(cg_sched_hist_percentile(h, 99), a[2], 32),
            fmt_ns(cg_sched_hist_percentile(h, 99.9), a[3], 32),
            fmt_ns(h->max_ns, a[4], 32));
}

static void print_bar(struct cg_sbuf *f, uint64_t v, uint64_t top)
{
    unsigned k, stars = top ? (unsigned)(v * 20 / top) : 0;

    put_ch(f, '|');
    for (k = 0; k < 20; k++)
        put_ch(f, k < stars ? '*' : ' ');
    put_ch(f, '|');
}

/* runqlat's histogram, one line per slot up to the last non-empty one, for up to three
 * histograms side by side on the same scale of microseconds (a NULL one is left out):
 * run-queue latency, coroutine ready-to-run delay, event-loop busy time. */
static void print_hist(struct cg_sbuf *f, const struct cg_sched_hist *h, const struct cg_sched_hist *coro,
                       const struct cg_sched_hist *loop)
{
    static const char *const names[] = { "run-queue", "coroutine", "loop busy" };
    const struct cg_sched_hist *hs[3] = { h, coro, loop };
    uint64_t top[3] = { 0, 0, 0 };
    unsigned i, k, last = 0, ncols = 0, col;

    for (k = 0; k < 3; k++) {
        if (!hs[k])
            continue;
        ncols++;
        for (i = 0; i < CG_SCHED_SLOTS; i++) {
            if (hs[k]->slots[i] && i > last)
                last = i;
            if (hs[k]->slots[i] > top[k])
                top[k] = hs[k]->slots[i];
        }
    }
    if (!top[0] && !top[1] && !top[2])
        return;
    cg_sbuf_printf(f, "    %20s :", "usecs");
    for (k = 0, col = 0; k < 3; k++) {
        if (!hs[k])
            continue;
        col++;
        cg_sbuf_printf(f, " %-10s %-*s", names[k], col < ncols ? 22 : 0, "distribution");
    }
    put_ch(f, '\n');
    for (i = 0; i <= last; i++) {
        char range[48];

        if (i == CG_SCHED_SLOTS - 1)
            snprintf(range, sizeof(range), "%llu -> ...", 1ull << i);
        else
            snprintf(range, sizeof(range), "%llu -> %llu", i ? 1ull << i : 0ull,
                     (1ull << (i + 1)) - 1);
        cg_sbuf_printf(f, "    %20s :", range);
        for (k = 0; k < 3; k++) {
            if (!hs[k])
                continue;
            cg_sbuf_printf(f, " %-10llu ", (unsigned long long)hs[k]->slots[i]);
            print_bar(f, hs[k]->slots[i], top[k]);
        }
        put_ch(f, '\n');
    }
}

static void format_text(struct cg_sbuf *f, const struct cg_schedlat *s, struct cg_daemon *d)
{
    struct cg_sched_worker w;
    struct cg_sched_hist coro, loop;
    unsigned i, n = d ? d->nworkers : 0;
    int running = cg_schedlat_is_running(s), err, have_coro, have_loop;
    char a[2][32];

    if (!running)
        cg_sbuf_printf(f, "sched: disabled: %s\n", cg_schedlat_reason(s));
    else
        cg_sbuf_printf(f, "sched: attach %s (%s), %u workers\n", mode_names[s->mode], s->hooks, s->n);
    if (running && s->n > n)
        n = s->n;
    for (i = 0; i < n; i++) {
        err = running ? cg_schedlat_read(s, i, &w) : -ENODEV;
        have_coro = cg_sched_coro_read(d, i, &coro) == 0;
        have_loop = cg_sched_loop_read(d, i, &loop) == 0;
        if (err == 0 && w.cpu >= 0)
            cg_sbuf_printf(f, "worker %u (tid %d, cpu %d)\n", i, w.tid, w.cpu);
        else if (err == 0)
            cg_sbuf_printf(f, "worker %u (tid %d, not pinned)\n", i, w.tid);
        else
            cg_sbuf_printf(f, "worker %u\n", i);
        if (err == 0) {
            cg_sbuf_add(f, "  run-queue latency: ", strlen("  run-queue latency: "));
            print_summary(f, &w.runq, "samples");
            cg_sbuf_printf(f, "  off-CPU: voluntary %llu switches, %s; involuntary %llu switches, "
                    "%s\n", (unsigned long long)w.nvol, fmt_ns(w.off_vol_ns, a[0], 32),
                    (unsigned long long)w.ninvol, fmt_ns(w.off_invol_ns, a[1], 32));
            cg_sbuf_printf(f, "  wake-ups %llu, migrations %llu\n", (unsigned long long)w.wakeups,
                    (unsigned long long)w.migrations);
        } else if (running) {
            cg_sbuf_printf(f, "  probes: read failed: %s\n", strerror(-err));
        }
        if (have_coro) {
            cg_sbuf_add(f, "  coroutine ready-to-run: ", strlen("  coroutine ready-to-run: "));
            print_summary(f, &coro, "resumes");
        }
        if (have_loop) {
            cg_sbuf_add(f, "  event-loop busy: ", strlen("  event-loop busy: "));
            print_summary(f, &loop, "iterations");
        }
        print_hist(f, err == 0 ? &w.runq : NULL, have_coro ? &coro : NULL,
                   have_loop ? &loop : NULL);
    }
}

void cg_sched_hist_json(struct cg_sbuf *b, const struct cg_sched_hist *h, uint64_t count)
{
    unsigned k;

    cg_sbuf_printf(b, "{\"count\":%llu,\"sum_ns\":%llu,\"max_ns\":%llu,\"p50_ns\":%llu,"
                   "\"p99_ns\":%llu,\"p999_ns\":%llu,\"log2_us\":[",
                   (unsigned long long)count, (unsigned long long)h->sum_ns,
                   (unsigned long long)h->max_ns,
                   (unsigned long long)cg_sched_hist_percentile(h, 50),
                   (unsigned long long)cg_sched_hist_percentile(h, 99),
                   (unsigned long long)cg_sched_hist_percentile(h, 99.9));
    for (k = 0; k < CG_SCHED_SLOTS; k++)
        cg_sbuf_printf(b, "%s%llu", k ? "," : "", (unsigned long long)h->slots[k]);
    cg_sbuf_add(b, "]}", 2);
}

static void json_hist(struct cg_sbuf *f, const char *name, const struct cg_sched_hist *h)
{
    cg_sbuf_printf(f, "\"%s\":", name);
    cg_sched_hist_json(f, h, h->count);
}

static void format_json(struct cg_sbuf *f, const struct cg_schedlat *s, struct cg_daemon *d)
{
    struct cg_sched_worker w;
    struct cg_sched_hist coro, loop;
    unsigned i, n = d ? d->nworkers : 0;
    int running = cg_schedlat_is_running(s);

    cg_sbuf_add(f, "{\"attach\":", strlen("{\"attach\":"));
    cg_sbuf_json_str(f, cg_schedlat_mode(s));
    if (running) {
        cg_sbuf_add(f, ",\"enabled\":true,\"hooks\":", strlen(",\"enabled\":true,\"hooks\":"));
        cg_sbuf_json_str(f, s->hooks);
        if (s->n > n)
            n = s->n;
    } else {
        cg_sbuf_add(f, ",\"enabled\":false,\"reason\":", strlen(",\"enabled\":false,\"reason\":"));
        cg_sbuf_json_str(f, cg_schedlat_reason(s));
    }
    if (n == 0) {
        cg_sbuf_add(f, "}\n", strlen("}\n"));
        return;
    }
    cg_sbuf_add(f, ",\"workers\":[", strlen(",\"workers\":["));
    for (i = 0; i < n; i++) {
        cg_sbuf_printf(f, "%s{\"worker\":%u", i ? "," : "", i);
        if (running && cg_schedlat_read(s, i, &w) == 0) {
            cg_sbuf_printf(f, ",\"tid\":%d,\"cpu\":%d,", w.tid, w.cpu);
            json_hist(f, "runq", &w.runq);
            cg_sbuf_printf(f, ",\"voluntary\":{\"switches\":%llu,\"off_cpu_ns\":%llu},"
                    "\"involuntary\":{\"switches\":%llu,\"off_cpu_ns\":%llu},"
                    "\"wakeups\":%llu,\"migrations\":%llu",
                    (unsigned long long)w.nvol, (unsigned long long)w.off_vol_ns,
                    (unsigned long long)w.ninvol, (unsigned long long)w.off_invol_ns,
                    (unsigned long long)w.wakeups, (unsigned long long)w.migrations);
        }
        if (cg_sched_coro_read(d, i, &coro) == 0) {
            put_ch(f, ',');
            json_hist(f, "coro_ready", &coro);
        }
        if (cg_sched_loop_read(d, i, &loop) == 0) {
            put_ch(f, ',');
            json_hist(f, "loop_busy", &loop);
        }
        put_ch(f, '}');
    }
    cg_sbuf_add(f, "]}\n", strlen("]}\n"));
}

int cg_schedlat_format(const struct cg_schedlat *s, struct cg_daemon *d, int json,
                       struct cg_sbuf *b)
{
    if (json)
        format_json(b, s, d);
    else
        format_text(b, s, d);
    return b->overflow ? -ENOBUFS : 0;
}
