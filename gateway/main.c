/* gateway/main.c — corogate's command line, limits, signals and lifetime.
 *
 *   corogate -c FILE      run in the foreground (systemd style: logs on stderr)
 *   corogate -t -c FILE   check the configuration, print every error, exit 0 or 1
 *   corogate -V           version and build features
 *   corogate -h           usage
 *
 * SIGTERM/SIGINT drain: listeners close, websocket clients get 1001 (spread over
 * drain_spread), connections get drain_timeout to finish; a second signal stops at once.
 * SIGHUP (or `reload` on the stats socket) re-reads the file: an invalid one changes
 * nothing, a valid one becomes the next generation (reload.h) without dropping anything.
 *
 * Under systemd (Type=notify) the state goes out over $NOTIFY_SOCKET (notify.h): READY=1
 * once every worker accepts, RELOADING=1 + MONOTONIC_USEC then READY=1 around a reload,
 * STOPPING=1 on drain, STATUS= lines at each change and every 5 s, and WATCHDOG=1 at half
 * of $WATCHDOG_USEC while every worker loop keeps beating (a hung worker stops it, and
 * systemd restarts the service).
 *
 * CG_TEST_HOOKS=1 in the environment enables `debug` commands on the stats socket (a
 * worker can be made to hang, for the watchdog's tests). Never set it in production; the
 * unit file unsets it.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "guard/breaker.h"
#include "config/config.h"
#include "coro/coro.h"
#include "base/log.h"
#include "observe/notify.h"
#include "core/reload.h"
#include "core/tls.h"
#include "observe/schedlat.h"
#include "observe/stats.h"
#include "proto/refusal.h"
#include "proto/ws.h"
#include "core/worker.h"

#ifndef CG_VERSION
#define CG_VERSION "0.0.0"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: corogate [-t] -c FILE\n"
            "       corogate -V | -h\n"
            "\n"
            "  -c FILE   configuration file (ini; see conf/corogate.ini)\n"
            "  -t        check the configuration and exit: 0 when valid, 1 otherwise\n"
            "  -V        print version and build features\n"
            "  -h        this help\n");
}

static void version(void)
{
    printf("corogate %s\n", CG_VERSION);
    printf("context switch: %s\n", coro_switch_name());
    printf("stacks: shared (copy-on-park) for connections, dedicated available\n");
    printf("libuv: %s\n", uv_version_string());
    printf("bpf: libbpf; scheduler latency probes: tp_btf, raw_tp, kprobe ([bpf] attach)\n");
}

/* Raises RLIMIT_NOFILE towards <want>: the soft limit up to the hard one, and the hard one
 * too where we are allowed (CAP_SYS_RESOURCE). Returns the soft limit in force. */
static uint64_t raise_nofile(uint64_t want)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 0;
    if (rl.rlim_cur >= want)
        return rl.rlim_cur;
    if (rl.rlim_max < want) {
        struct rlimit hard = { want, want };

        if (setrlimit(RLIMIT_NOFILE, &hard) == 0)
            return want;
    }
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
        getrlimit(RLIMIT_NOFILE, &rl);
    return rl.rlim_cur;
}

#define STATUS_EVERY_MS 5000

struct main_ctx {
    struct cg_daemon  d;
    const char       *path;
    uv_signal_t       sigint;
    uv_signal_t       sigterm;
    uv_signal_t       sighup;
    uv_timer_t        watch;     /* notices when every worker has finished, or switched */
    uv_timer_t        status;    /* STATUS= every STATUS_EVERY_MS */
    uv_timer_t        watchdog;  /* WATCHDOG=1 at half the period, while workers beat */
    uv_timer_t        schedwatch;/* the breaker's scheduling-delay sample, every
                                  * check_interval (schedlat.h) */
    int               signals;
    int               draining;
    int               stalled;   /* a worker missed the last watchdog tick */
    uint64_t         *beats;     /* each worker's heartbeat count at the last tick */
    struct cg_notify  notify;
    struct cg_reload *reload;
    struct cg_runtime rt;        /* what the stats socket shows beyond counters */
    struct cg_stats  *stats;
};

/* One STATUS= line: what systemctl status shows. */
static void send_status(struct main_ctx *m, const char *state)
{
    cg_notify_send(&m->notify, "STATUS=%s: %u connections, %u workers, generation %u%s",
                   state, atomic_load(&m->d.conns), m->d.nworkers,
                   m->d.gen ? m->d.gen->id : 0, m->stalled ? ", a worker is stalled" : "");
}

static const char *state_word(const struct main_ctx *m)
{
    if (m->draining)
        return "draining";
    return m->reload && cg_reload_pending(m->reload) ? "reloading" : "accepting";
}

static void on_status(uv_timer_t *t)
{
    struct main_ctx *m = t->data;

    send_status(m, state_word(m));
}

/* Every worker loop must have run its heartbeat timer since the last tick (or ended) for
 * WATCHDOG=1 to go out: a worker stuck in a callback stops the heartbeat of the whole
 * service, and systemd restarts it once WatchdogSec runs out. */
static void on_watchdog(uv_timer_t *t)
{
    struct main_ctx *m = t->data;
    unsigned i, stuck = m->d.nworkers;
    uint64_t b;
    int ended;

    for (i = 0; i < m->d.nworkers; i++) {
        struct cg_worker *w = &m->d.workers[i];

        b = atomic_load(&w->beats);
        uv_mutex_lock(&w->lock);
        ended = w->async_closed;
        uv_mutex_unlock(&w->lock);
        if (b == m->beats[i] && !ended && stuck == m->d.nworkers)
            stuck = i;
        m->beats[i] = b;
    }
    if (stuck < m->d.nworkers) {
        if (!m->stalled) {
            m->stalled = 1;
            cg_error("watchdog: worker %u has not run its loop for %llu ms: WATCHDOG=1 "
                     "withheld (systemd restarts corogate if it lasts WatchdogSec)", stuck,
                     (unsigned long long)uv_timer_get_repeat(t));
            send_status(m, state_word(m));
        }
        return;
    }
    if (m->stalled) {
        m->stalled = 0;
        cg_notice("watchdog: every worker runs again");
        send_status(m, state_word(m));
    }
    cg_notify_send(&m->notify, "WATCHDOG=1");
}

/* The breaker's scheduling-delay signal: sampled here, on the main thread that owns the
 * probes; worker 0's breaker timer moves the state along with it. */
static void on_schedwatch(uv_timer_t *t)
{
    struct main_ctx *m = t->data;
    uint64_t iv = atomic_load(&m->d.brk->check_interval_ms);

    if (cg_schedlat_watch(m->d.schedlat, &m->d, uv_hrtime() / 1000000) < 0)
        cg_warn("breaker: scheduling-delay sample: out of memory");
    if (iv != uv_timer_get_repeat(t))
        uv_timer_set_repeat(t, iv);
}

static void close_main_handles(struct main_ctx *m)
{
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sighup, NULL);
    uv_close((uv_handle_t *)&m->status, NULL);
    uv_close((uv_handle_t *)&m->watchdog, NULL);
    uv_close((uv_handle_t *)&m->schedwatch, NULL);
    cg_stats_stop(m->stats);
    m->stats = NULL;
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    struct main_ctx *m = h->data;

    if (m->signals++ == 0) {
        cg_notice("%s: draining (up to %llu ms); send it again to stop now",
                  strsignal(signum), (unsigned long long)m->d.cfg->gw.drain_timeout_ms);
        m->draining = 1;
        cg_reload_shutdown(m->reload);
        cg_notify_send(&m->notify, "STOPPING=1");
        send_status(m, "draining");
        cg_daemon_request(&m->d, CG_WREQ_DRAIN);
        return;
    }
    cg_notice("%s: stopping now", strsignal(signum));
    send_status(m, "stopping now");
    cg_daemon_request(&m->d, CG_WREQ_STOP);
}

/* Re-reads the configuration (SIGHUP, or `reload` on the stats socket: <why> says which),
 * applies it as the next generation when it is valid, and records the outcome in m->rt.
 * Returns 0 (the workers are switching), or the loader's or cg_reload_apply()'s negative
 * errno (nothing changed); -ESHUTDOWN while draining. */
static int reload(struct cg_runtime *rt, const char *why)
{
    struct main_ctx *m = rt->ud;
    struct cg_config *cfg = NULL;
    struct cg_errors errs;
    size_t i, n;
    int err;

    rt->reloads++;
    rt->last_reload_at = time(NULL);
    if (m->draining) {
        rt->last_reload_ok = 0;
        rt->reload_failures++;
        snprintf(rt->last_reload_msg, sizeof(rt->last_reload_msg),
                 "the daemon is draining; nothing changed");
        cg_warn("%s: %s", why, rt->last_reload_msg);
        return -ESHUTDOWN;
    }
    cg_notify_send(&m->notify, "RELOADING=1\nMONOTONIC_USEC=%llu",
                   (unsigned long long)cg_notify_monotonic_usec());
    send_status(m, "reloading");
    cg_errors_init(&errs);
    err = cg_config_load(m->path, &cfg, &errs);
    if (err == 0 && cg_tls_load(cfg, &errs) < 0) {
        cg_config_free(cfg);
        err = -EINVAL;
    }
    if (err < 0) {
        n = cg_errors_count(&errs);
        for (i = 0; i < n; i++)
            cg_error("%s", cg_errors_get(&errs, i));        /* each "FILE:LINE: ..." */
        snprintf(rt->last_reload_msg, sizeof(rt->last_reload_msg),
                 "%s is invalid (%zu errors%s%s); still running generation %u", m->path, n,
                 n ? ", first: " : "", n ? cg_errors_get(&errs, 0) : "", m->d.gen->id);
    } else {
        /* Takes cfg over; when it returns 0 the workers switch, and on_watch() sends
         * READY=1 once they all have. */
        err = cg_reload_apply(m->reload, cfg, rt->last_reload_msg,
                              sizeof(rt->last_reload_msg));
    }
    cg_errors_deinit(&errs);
    rt->last_reload_ok = err == 0;
    if (err < 0) {
        rt->reload_failures++;
        cg_error("%s: reload failed: %s", why, rt->last_reload_msg);
        cg_notify_send(&m->notify, "READY=1");
        send_status(m, "reload failed, still accepting");
    } else {
        cg_notice("%s: reload: %s", why, rt->last_reload_msg);
    }
    return err;
}

static void on_hup(uv_signal_t *h, int signum)
{
    struct main_ctx *m = h->data;

    reload(&m->rt, "SIGHUP");
}

/* The main loop has nothing of its own to wait for but the workers; this polls whether
 * they are all done, so that the signal handles can be closed and the loop can end. */
static void on_watch(uv_timer_t *t)
{
    struct main_ctx *m = t->data;
    unsigned i, live = 0, id = cg_reload_poll(m->reload);

    if (id) {
        cg_notice("reload: generation %u in force on every worker", id);
        cg_notify_send(&m->notify, "READY=1");
        send_status(m, state_word(m));
    }
    for (i = 0; i < m->d.nworkers; i++) {
        uv_mutex_lock(&m->d.workers[i].lock);
        if (!m->d.workers[i].async_closed)
            live++;
        uv_mutex_unlock(&m->d.workers[i].lock);
    }
    if (live == 0) {
        uv_close((uv_handle_t *)t, NULL);
        close_main_handles(m);
    }
}

static int check_config(const char *path, struct cg_config **out)
{
    struct cg_errors errs;
    size_t i;
    int err;

    cg_errors_init(&errs);
    err = cg_config_load(path, out, &errs);
    /* Certificates, keys, CA files, ticket keys: read and checked now, with -t too. */
    if (err == 0 && cg_tls_load(*out, &errs) < 0) {
        cg_config_free(*out);
        *out = NULL;
        err = -EINVAL;
    }
    for (i = 0; i < cg_errors_count(&errs); i++)
        fprintf(stderr, "%s\n", cg_errors_get(&errs, i));
    cg_errors_deinit(&errs);
    return err;
}

int main(int argc, char **argv)
{
    struct main_ctx m;
    uv_loop_t *loop = uv_default_loop();
    const char *path = NULL;
    int opt, test_only = 0, err;

    memset(&m, 0, sizeof(m));
    while ((opt = getopt(argc, argv, "c:tVh")) != -1) {
        switch (opt) {
        case 'c':
            path = optarg;
            break;
        case 't':
            test_only = 1;
            break;
        case 'V':
            version();
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!path || optind != argc) {
        usage(stderr);
        return 2;
    }
    if (check_config(path, &m.d.cfg) < 0) {
        if (test_only)
            fprintf(stderr, "%s: configuration is invalid\n", path);
        else
            cg_error("%s: configuration is invalid; not starting", path);
        return 1;
    }
    if (test_only) {
        printf("%s: configuration is valid (%zu listeners, %zu upstreams)\n", path,
               m.d.cfg->nlisteners, m.d.cfg->nupstreams);
        cg_config_free(m.d.cfg);
        return 0;
    }
    m.path = path;
    cg_log_set_level(m.d.cfg->gw.log_level);
    signal(SIGPIPE, SIG_IGN);
    m.d.loop = loop;
    m.d.nofile = raise_nofile(m.d.cfg->gw.nofile);
    if (m.d.nofile < m.d.cfg->gw.nofile)
        cg_warn("open files limit: %llu (wanted %llu; raise LimitNOFILE= or the hard limit)",
                (unsigned long long)m.d.nofile, (unsigned long long)m.d.cfg->gw.nofile);
    else
        cg_info("open files limit: %llu", (unsigned long long)m.d.nofile);
    cg_notice("corogate %s starting: %u workers, config %s, pid %d", CG_VERSION,
              m.d.cfg->gw.workers, path, (int)getpid());
    cg_notify_init(&m.notify);           /* logs what is wrong; runs on without it */
    if (m.notify.watchdog_usec) {
        /* Four heartbeats a tick: one late timer does not read as a hung worker. */
        m.d.beat_ms = m.notify.watchdog_usec / 1000 / 2 / 4;
        m.d.beat_ms = m.d.beat_ms < 5 ? 5 : m.d.beat_ms > 1000 ? 1000 : m.d.beat_ms;
    }
    if (getenv("CG_TEST_HOOKS") && strcmp(getenv("CG_TEST_HOOKS"), "1") == 0) {
        m.d.test_hooks = 1;
        cg_warn("CG_TEST_HOOKS=1: test hooks enabled (`debug` commands on the stats "
                "socket can hang a worker); never in production");
    }

    m.rt.d = &m.d;
    m.rt.started_at = time(NULL);
    m.rt.started_ms = uv_hrtime() / 1000000;
    m.rt.reload = reload;
    m.rt.ud = &m;
    /* Before the workers: no other thread runs while the socket is bound under a umask. */
    err = cg_stats_start(loop, &m.rt, &m.stats);
    if (err < 0)
        cg_config_free(m.d.cfg);     /* cg_daemon_start() owns it, even when it fails */
    else {
        cg_protocols_fill(&m.d.proto);
        m.d.proto.refuse_conn = cg_refusal_answer;      /* proto/refusal.h */
        err = cg_daemon_start(&m.d);
    }
    if (err == 0) {
        m.reload = cg_reload_new(&m.d);
        m.beats = calloc(m.d.nworkers, sizeof(*m.beats));
        if (!m.reload || !m.beats) {
            err = -ENOMEM;
            cg_daemon_request(&m.d, CG_WREQ_STOP);
            cg_daemon_join(&m.d);
        }
    }
    if (err < 0) {
        cg_stats_stop(m.stats);
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        cg_error("not starting");
        cg_reload_free(m.reload);
        free(m.beats);
        cg_notify_deinit(&m.notify);
        return 1;
    }
    uv_signal_init(loop, &m.sigint);
    uv_signal_init(loop, &m.sigterm);
    uv_signal_init(loop, &m.sighup);
    m.sigint.data = m.sigterm.data = m.sighup.data = &m;
    uv_signal_start(&m.sigint, on_stop_signal, SIGINT);
    uv_signal_start(&m.sigterm, on_stop_signal, SIGTERM);
    uv_signal_start(&m.sighup, on_hup, SIGHUP);
    uv_timer_init(loop, &m.watch);
    m.watch.data = &m;
    uv_timer_start(&m.watch, on_watch, 50, 50);
    uv_timer_init(loop, &m.status);
    m.status.data = &m;
    uv_timer_start(&m.status, on_status, STATUS_EVERY_MS, STATUS_EVERY_MS);
    uv_timer_init(loop, &m.watchdog);
    m.watchdog.data = &m;
    if (m.notify.watchdog_usec) {
        uint64_t half = m.notify.watchdog_usec / 2000;

        uv_timer_start(&m.watchdog, on_watchdog, half ? half : 1, half ? half : 1);
    }
    /* After the workers started: the probes filter on their TIDs. NULL only without
     * memory; disabled probes (no privilege, no BTF) are logged and the daemon runs on. */
    m.d.schedlat = cg_schedlat_start(&m.d);
    if (!m.d.schedlat)
        cg_warn("bpf: scheduler probes not started: %s", strerror(errno));
    uv_timer_init(loop, &m.schedwatch);
    m.schedwatch.data = &m;
    uv_timer_start(&m.schedwatch, on_schedwatch, atomic_load(&m.d.brk->check_interval_ms),
                   atomic_load(&m.d.brk->check_interval_ms));
    cg_notice("ready: accepting connections");
    cg_notify_send(&m.notify, "READY=1\nMAINPID=%d", (int)getpid());
    send_status(&m, "accepting");

    uv_run(loop, UV_RUN_DEFAULT);
    cg_schedlat_free(m.d.schedlat);
    m.d.schedlat = NULL;
    cg_daemon_join(&m.d);               /* frees the generation in force, and its config */
    cg_reload_free(m.reload);
    free(m.beats);
    uv_loop_close(loop);
    cg_notice("stopped");
    cg_notify_deinit(&m.notify);
    return 0;
}
