/* gateway/main.c — corogate's command line, limits, signals and lifetime.
 *
 *   corogate -c FILE      run in the foreground (systemd style: logs on stderr)
 *   corogate -t -c FILE   check the configuration, print every error, exit 0 or 1
 *   corogate -V           version and build features
 *   corogate -h           usage
 *
 * SIGTERM/SIGINT drain: listeners close, connections get drain_timeout to finish; a
 * second signal stops at once. SIGHUP re-reads the file and reports whether it is valid
 * (applying it in place is the reload feature's job: until then the running config stays).
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

#include "config.h"
#include "coro/ctx.h"
#include "log.h"
#include "schedlat.h"
#include "stats.h"
#include "worker.h"

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
    printf("context switch: %s\n", CORO_SWITCH_NAME);
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

struct main_ctx {
    struct cg_daemon  d;
    const char       *path;
    uv_signal_t       sigint;
    uv_signal_t       sigterm;
    uv_signal_t       sighup;
    uv_timer_t        watch;     /* notices when every worker has finished */
    int               signals;
    struct cg_runtime rt;        /* what the stats socket shows beyond counters */
    struct cg_stats  *stats;
};

static void close_main_handles(struct main_ctx *m)
{
    uv_close((uv_handle_t *)&m->sigint, NULL);
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sighup, NULL);
    cg_stats_stop(m->stats);
    m->stats = NULL;
}

static void on_stop_signal(uv_signal_t *h, int signum)
{
    struct main_ctx *m = h->data;

    if (m->signals++ == 0) {
        cg_notice("%s: draining (up to %llu ms); send it again to stop now",
                  strsignal(signum), (unsigned long long)m->d.cfg->gw.drain_timeout_ms);
        cg_daemon_request(&m->d, CG_WREQ_DRAIN);
        return;
    }
    cg_notice("%s: stopping now", strsignal(signum));
    cg_daemon_request(&m->d, CG_WREQ_STOP);
}

/* Re-reads the configuration (SIGHUP, or `reload` on the stats socket: <why> says which)
 * and records the outcome in m->rt. Returns 0, or the loader's negative errno. */
static int reload(struct cg_runtime *rt, const char *why)
{
    struct main_ctx *m = rt->ud;
    struct cg_config *cfg = NULL;
    struct cg_errors errs;
    size_t i, n;
    int err;

    cg_errors_init(&errs);
    err = cg_config_load(m->path, &cfg, &errs);
    rt->reloads++;
    rt->last_reload_at = time(NULL);
    rt->last_reload_ok = err == 0;
    if (err < 0) {
        n = cg_errors_count(&errs);
        for (i = 0; i < n; i++)
            cg_error("%s", cg_errors_get(&errs, i));
        rt->reload_failures++;
        snprintf(rt->last_reload_msg, sizeof(rt->last_reload_msg),
                 "%s is invalid (%zu errors%s%s); still running on the previous "
                 "configuration", m->path, n, n ? ", first: " : "",
                 n ? cg_errors_get(&errs, 0) : "");
        cg_error("%s: %s", why, rt->last_reload_msg);
    } else {
        cg_log_set_level(cfg->gw.log_level);
        snprintf(rt->last_reload_msg, sizeof(rt->last_reload_msg),
                 "%s is valid; log_level applied, other changes take effect at restart",
                 m->path);
        cg_notice("%s: %s", why, rt->last_reload_msg);
    }
    cg_config_free(cfg);
    cg_errors_deinit(&errs);
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
    unsigned i, live = 0;

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

    m.rt.d = &m.d;
    m.rt.started_at = time(NULL);
    m.rt.started_ms = uv_hrtime() / 1000000;
    m.rt.reload = reload;
    m.rt.ud = &m;
    /* Before the workers: no other thread runs while the socket is bound under a umask. */
    err = cg_stats_start(loop, &m.rt, &m.stats);
    if (err == 0)
        err = cg_daemon_start(&m.d);
    if (err < 0) {
        cg_stats_stop(m.stats);
        uv_run(loop, UV_RUN_DEFAULT);
        uv_loop_close(loop);
        cg_error("not starting");
        cg_config_free(m.d.cfg);
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
    /* After the workers started: the probes filter on their TIDs. NULL only without
     * memory; disabled probes (no privilege, no BTF) are logged and the daemon runs on. */
    m.d.schedlat = cg_schedlat_start(&m.d);
    if (!m.d.schedlat)
        cg_warn("bpf: scheduler probes not started: %s", strerror(errno));
    cg_notice("ready: accepting connections");

    uv_run(loop, UV_RUN_DEFAULT);
    cg_schedlat_free(m.d.schedlat);
    m.d.schedlat = NULL;
    cg_daemon_join(&m.d);
    uv_loop_close(loop);
    cg_notice("stopped");
    cg_config_free(m.d.cfg);
    return 0;
}
