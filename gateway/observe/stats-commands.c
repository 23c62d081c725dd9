/* gateway/observe/stats-commands.c — the stats socket's commands: one line in, one answer
 * out (help, show info/upstreams/breaker/sched, set server/breaker/rate, reload, debug). */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "guard/admission.h"
#include "guard/breaker.h"
#include "coro/coro.h"
#include "coro/io.h"
#include "coro/list.h"
#include "base/access-log.h"
#include "base/log.h"
#include "core/conn.h"
#include "core/gen.h"
#include "core/tls.h"
#include "observe/schedlat.h"
#include "observe/stats.h"
#include "observe/stats-int.h"
#include "core/upstream.h"
#include "core/worker.h"


static const char help_text[] =
    "Commands (one per line):\n"
    "  help                                    this list\n"
    "  prompt                                  interactive mode: a \"> \" prompt, stay open\n"
    "  quit                                    close the connection\n"
    "  show info                               version, pid, uptime, workers, limits, config\n"
    "  show stats                              every counter, as JSON\n"
    "  show metrics                            every counter, Prometheus text format\n"
    "  show coros [N]                          per worker, the N longest-parked coroutines"
    " (default 10),\n"
    "                                          stalled ones (coro_stall_threshold) marked\n"
    "  show upstreams                          servers: state, health, connections\n"
    "  show breaker                            the breaker: state, use, quotas, history,\n"
    "                                          refusals; admission limits; server ejections\n"
    "  show tls                                per TLS listener: certificates (names, days\n"
    "                                          to expiry), handshakes, resumptions,\n"
    "                                          failures by reason, protocols, ciphers\n"
    "  show sched [json]                       per worker: run-queue latency, off-CPU time,\n"
    "                                          switches, migrations (eBPF, [bpf] attach);\n"
    "                                          coroutine ready-to-run delays; event-loop\n"
    "                                          busy time per iteration\n"
    "  set server UPSTREAM/SERVER state ready|drain|maint\n"
    "                                          take a server in or out of balancing\n"
    "  set breaker force-open|force-closed|auto\n"
    "                                          refuse all, admit all (quotas still apply),\n"
    "                                          or let use decide\n"
    "  set rate LISTENER RATE BURST            a listener's new connections/s (0 = no\n"
    "                                          limit) until the next reload\n"
    "  reload                                  re-read the configuration, as SIGHUP does\n";

/* ------------------------------------------------------------------ commands */


static const char *fmt_time(time_t t, char *buf, size_t size)
{
    struct tm tm;

    if (t == 0 || !gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "never");
    return buf;
}

/* Connection log lines the workers dropped, all together. */
static uint64_t log_dropped(const struct cg_daemon *d)
{
    uint64_t n = 0;
    unsigned i;

    for (i = 0; i < d->nworkers; i++)
        n += atomic_load_explicit(&d->workers[i].stats.log_dropped, memory_order_relaxed);
    return n;
}

static void cmd_info(struct cg_stats *st, struct cg_sbuf *b)
{
    const struct cg_runtime *rt = st->rt;
    const struct cg_daemon *d = rt->d;
    const struct cg_config *cfg = d->cfg;
    uint64_t up = cg_stats__now_ms() - rt->started_ms;
    char t1[40], t2[40];
    unsigned i;
    int k;

    cg_sbuf_printf(b, "name: corogate\nversion: %s\ncontext_switch: %s\nlibuv: %s\n"
                   "features: tcp websocket tls stats-socket metrics-http\n"
                   "pid: %d\nstarted: %s\nuptime_ms: %llu\nworkers: %u\n",
                   CG_VERSION, coro_switch_name(), uv_version_string(), (int)getpid(),
                   fmt_time(rt->started_at, t1, sizeof(t1)), (unsigned long long)up,
                   d->nworkers);
    for (i = 0; i < d->nworkers; i++) {
        if (d->workers[i].cpu >= 0)
            cg_sbuf_printf(b, "worker %u: cpu %d\n", i, d->workers[i].cpu);
        else
            cg_sbuf_printf(b, "worker %u: not pinned\n", i);
    }
    cg_sbuf_printf(b, "nofile: %llu\nmax_connections: %u\nconnections: %u\n"
                   "listeners: %zu\nupstreams: %zu\n"
                   "config: %s\nconfig_loaded: %s\nreloads: %u\nreload_failures: %u\n"
                   "last_reload: %s%s%s\nstats_clients: %u\nstats_timeouts: %llu\n"
                   "stats_refused: %llu\n",
                   (unsigned long long)d->nofile,
                   d->brk ? atomic_load(&d->brk->max_conns) : cfg->gw.max_connections,
                   atomic_load(&d->conns), cfg->nlisteners, cfg->nupstreams, cfg->path,
                   fmt_time(cfg->loaded_at, t2, sizeof(t2)), rt->reloads, rt->reload_failures,
                   fmt_time(rt->last_reload_at, t1, sizeof(t1)),
                   rt->last_reload_at ? (rt->last_reload_ok ? " ok: " : " failed: ") : "",
                   rt->last_reload_at ? rt->last_reload_msg : "", rt->stats_clients,
                   (unsigned long long)rt->stats_timeouts,
                   (unsigned long long)rt->stats_refused);
    cg_sbuf_printf(b, "log_lines_written: %llu\nlog_lines_dropped: %llu\n",
                   (unsigned long long)cg_alog_written(d->alog),
                   (unsigned long long)log_dropped(d));
    if (d->brk)
        cg_sbuf_printf(b, "breaker: %s (mode %s)\nadmission: client-address table %s\n",
                       cg_brk_state_name(cg_breaker_state(d->brk, NULL, NULL)),
                       cg_brk_mode_name(atomic_load(&d->brk->mode)),
                       d->adm && d->adm->ipt ? "on" : "off");
    /* PROXY protocol headers refused (accept_proxy), all workers, by reason. */
    cg_sbuf_printf(b, "proxy_rejected:");
    for (k = 0; k < CG_PPR_N; k++) {
        uint64_t n = 0;

        for (i = 0; i < d->nworkers; i++)
            n += atomic_load(&d->workers[i].stats.proxy_rejected[k]);
        cg_sbuf_printf(b, " %s %llu", cg_proxy_reject_label(k), (unsigned long long)n);
    }
    cg_sbuf_printf(b, "\n");
    /* Reload (reload.h): the generation new connections get, and how many workers have
     * not switched to it yet (0 once a reload is complete). */
    cg_sbuf_printf(b, "generation: %u\ngeneration_pending_workers: %u\n",
                   d->gen ? d->gen->id : 0, atomic_load(&d->reload_pending));
}

struct tls_cert_line {
    struct cg_sbuf *b;
    time_t          now;
    unsigned        i;
};

static void tls_cert_line(void *arg, const struct cg_tls_cert_info *ci)
{
    struct tls_cert_line *t = arg;
    char when[40];

    cg_sbuf_printf(t->b, "  certificate %u%s: %s\n    names: %s\n    subject: %s\n"
                   "    expires: %s (%lld days)\n", t->i, t->i ? "" : " (default)", ci->file,
                   *ci->names ? ci->names : "-", ci->subject,
                   fmt_time(ci->not_after, when, sizeof(when)),
                   (long long)(ci->not_after - t->now) / 86400);
    t->i++;
}

/* The sum over the workers of the listener counter at byte offset <off> of listener <li>. */
static uint64_t listener_sum(const struct cg_daemon *d, size_t li, size_t off)
{
    uint64_t sum = 0;
    unsigned w;

    for (w = 0; w < d->nworkers; w++)
        if (li < d->workers[w].nls)
            sum += atomic_load_explicit((const _Atomic uint64_t *)
                                        ((const char *)&d->workers[w].ls[li].stats + off),
                                        memory_order_relaxed);
    return sum;
}

#define LSUM(field) listener_sum(d, i, offsetof(struct cg_listener_stats, field))

static void cmd_tls(struct cg_stats *st, struct cg_sbuf *b)
{
    const struct cg_daemon *d = st->rt->d;
    const struct cg_config *cfg = d->cfg;
    struct tls_cert_line t = { b, time(NULL), 0 };
    uint64_t n;
    size_t i;
    unsigned k, any = 0;

    for (i = 0; i < cfg->nlisteners; i++) {
        const struct cg_listener_conf *lc = &cfg->listeners[i];

        if (!lc->tls.on)
            continue;
        any++;
        cg_sbuf_printf(b, "listener %s (%s, %s):\n", lc->name, lc->bind,
                       lc->mode == CG_MODE_TCP ? "tcp" : "websocket");
        t.i = 0;
        cg_tls_listener_certs(cfg->tls, i, tls_cert_line, &t);
        cg_sbuf_printf(b, "  handshakes: %llu full, %llu resumed\n  failures:",
                       (unsigned long long)LSUM(tls_full), (unsigned long long)LSUM(tls_resumed));
        for (k = 1; k < CG_TLS_FAILS; k++)
            cg_sbuf_printf(b, " %s %llu", cg_tls_fail_label(k),
                           (unsigned long long)LSUM(tls_fail[k]));
        cg_sbuf_printf(b, "\n  protocols: TLSv1.3 %llu, TLSv1.2 %llu\n  ciphers:",
                       (unsigned long long)LSUM(tls_v13), (unsigned long long)LSUM(tls_v12));
        for (k = 0; k < CG_TLS_CIPHERS; k++)
            if ((n = LSUM(tls_cipher[k])) != 0)
                cg_sbuf_printf(b, " %s %llu", cg_tls_cipher_label(k), (unsigned long long)n);
        cg_sbuf_add(b, "\n", 1);
    }
    if (!any)
        cg_sbuf_printf(b, "no listener has tls = on\n");
}

#undef LSUM

static const char *state_name(int s)
{
    return s == CG_SERVER_READY ? "ready" : s == CG_SERVER_DRAIN ? "drain" : "maint";
}

static void cmd_upstreams(struct cg_stats *st, struct cg_sbuf *b)
{
    const struct cg_daemon *d = st->rt->d;
    char key[CG_CONF_NAME_MAX + 8], hk[2 * CG_CONF_NAME_MAX];
    size_t i;
    unsigned j;

    for (i = 0; d->ups && i < d->cfg->nupstreams; i++) {
        const struct cg_upstream *up = &d->ups[i];
        const struct cg_upstream_conf *uc = up->conf;

        hk[0] = '\0';
        if (uc->balance == CG_BALANCE_HASH)
            snprintf(hk, sizeof(hk), " (hash_key %s, hash_fallbacks %llu)",
                     cg_format_hash_key(uc, key, sizeof(key)),
                     (unsigned long long)atomic_load(&up->hash_fallbacks));
        cg_sbuf_printf(b, "upstream %s: %u servers, balance %s%s, no_server %llu, "
                       "health checks %s\n", uc->name, up->nservers,
                       cg_balance_name(uc->balance), hk,
                       (unsigned long long)atomic_load(&up->no_server),
                       uc->health_check_interval_ms ? "on" : "off");
        for (j = 0; j < up->nservers; j++) {
            const struct cg_server *s = &up->servers[j];
            int state = atomic_load(&s->state);

            cg_sbuf_printf(b, "  server %s: state %s, health %s, eligible %s, weight %u, "
                           "active %u, connects %llu, connect_fails %llu, "
                           "connect_timeouts %llu, checks_failed %llu, "
                           "local_errors %llu\n",
                           s->conf->name, state_name(state),
                           atomic_load(&s->down) ? "down" : "up",
                           cg_server_is_eligible(s) ? "yes" : "no", s->conf->weight,
                           atomic_load(&s->active),
                           (unsigned long long)atomic_load(&s->connects),
                           (unsigned long long)atomic_load(&s->connect_fails),
                           (unsigned long long)atomic_load(&s->connect_timeouts),
                           (unsigned long long)atomic_load(&s->checks_failed),
                           (unsigned long long)atomic_load(&s->local_errors));
        }
    }
}

/* "12.5%" for <permille>, "off" when <limit> is 0. */
static const char *pct(unsigned permille, uint64_t limit, char *buf, size_t size)
{
    if (!limit)
        snprintf(buf, size, "off");
    else
        snprintf(buf, size, "%u.%u%%", permille / 10, permille % 10);
    return buf;
}

/* "100/s burst 20", or "off" for <rate> 0. */
static const char *rate_str(uint32_t rate, uint32_t burst, char *buf, size_t size)
{
    if (!rate)
        snprintf(buf, size, "off");
    else
        snprintf(buf, size, "%u/s burst %u", rate, burst ? burst : rate);
    return buf;
}

static void breaker_state(struct cg_sbuf *b, const struct cg_daemon *d)
{
    struct cg_breaker *brk = d->brk;
    struct cg_brk_event ev[CG_BRK_HISTORY];
    uint64_t since, now = uv_hrtime() / 1000000, wm = atomic_load(&brk->memory_watermark);
    uint64_t fdlim = brk->nofile * atomic_load(&brk->fd_watermark) / 100;
    unsigned use[CG_BRKW_NRES], mpw = atomic_load(&brk->max_per_worker), i;
    char p[5][16], t[40];
    uint64_t sthr = atomic_load(&brk->sched_threshold_ns);
    size_t n;
    int why, state = cg_breaker_state(brk, &since, &why);
    uint32_t rate, burst;

    for (i = 0; i < CG_BRKW_NRES; i++)
        use[i] = atomic_load(&brk->use[i]);
    cg_sbuf_printf(b, "breaker: %s (mode %s) for %.1f s, reason: %s\n", cg_brk_state_name(state),
                   cg_brk_mode_name(atomic_load(&brk->mode)),
                   (double)(now > since ? now - since : 0) / 1000.0, cg_brk_why_name(why));
    cg_sbuf_printf(b, "use: connections %s, worker_connections %s, memory %s, fds %s, "
                   "sched_latency %s (trips at 100%%, resumes below %u%%)\n",
                   pct(use[0], atomic_load(&brk->max_conns), p[0], sizeof(p[0])),
                   pct(use[1], mpw, p[1], sizeof(p[1])), pct(use[2], wm, p[2], sizeof(p[2])),
                   pct(use[3], fdlim, p[3], sizeof(p[3])),
                   pct(use[CG_BRKW_SCHED], sthr, p[4], sizeof(p[4])),
                   atomic_load(&brk->resume) / 10);
    if (sthr)
        cg_sbuf_printf(b, "sched_latency: p99 %llu us (%s, worker %u) over %llu ms, threshold "
                       "%llu us\n", (unsigned long long)atomic_load(&brk->sched_p99_ns) / 1000,
                       atomic_load(&brk->sched_kind) == CG_SCHED_CORO ? "coroutine ready-to-run"
                                                                       : "run-queue",
                       atomic_load(&brk->sched_worker),
                       (unsigned long long)atomic_load(&brk->sched_window_ms),
                       (unsigned long long)sthr / 1000);
    else
        cg_sbuf_printf(b, "sched_latency: off\n");
    if (mpw)
        cg_sbuf_printf(b, "max_connections_per_worker: %u\n", mpw);
    else
        cg_sbuf_printf(b, "max_connections_per_worker: unlimited\n");
    cg_sbuf_printf(b, "memory: rss %.1f MiB, watermark ", (double)atomic_load(&brk->rss) / 1048576);
    if (wm)
        cg_sbuf_printf(b, "%.1f MiB%s\n", (double)wm / 1048576,
                       atomic_load(&brk->memory_auto) ? " (auto)" : "");
    else
        cg_sbuf_printf(b, "off\n");
    cg_sbuf_printf(b, "fds: about %llu of %llu, watermark ",
                   (unsigned long long)atomic_load(&brk->fds), (unsigned long long)brk->nofile);
    if (fdlim)
        cg_sbuf_printf(b, "%u%% (%llu)\n", atomic_load(&brk->fd_watermark),
                       (unsigned long long)fdlim);
    else
        cg_sbuf_printf(b, "off\n");
    cg_tbs_get(&brk->trickle, &rate, &burst);
    cg_sbuf_printf(b, "open_for: %llu ms, resume: %u%%, half_open_rate: %u/s, check_interval: "
                   "%llu ms\n", (unsigned long long)atomic_load(&brk->open_for_ms),
                   atomic_load(&brk->resume) / 10, rate,
                   (unsigned long long)atomic_load(&brk->check_interval_ms));
    cg_sbuf_printf(b, "transitions: to closed %llu, to open %llu, to half_open %llu; trips:",
                   (unsigned long long)atomic_load(&brk->entered[CG_BRK_CLOSED]),
                   (unsigned long long)atomic_load(&brk->entered[CG_BRK_OPEN]),
                   (unsigned long long)atomic_load(&brk->entered[CG_BRK_HALF_OPEN]));
    for (i = 0; i < CG_BRKW_N; i++)
        if (i < CG_BRKW_NRES || i == CG_BRKW_FORCED)
            cg_sbuf_printf(b, " %s %llu", cg_brk_why_name((int)i),
                           (unsigned long long)atomic_load(&brk->trips[i]));
    cg_sbuf_add(b, "\n", 1);
    n = cg_breaker_history(brk, ev, CG_BRK_HISTORY);
    cg_sbuf_printf(b, "history (%zu, oldest first):\n", n);
    for (i = 0; i < n; i++) {
        time_t sec = (time_t)(ev[i].wall_ms / 1000);
        struct tm tm;

        if (!gmtime_r(&sec, &tm) || !strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S", &tm))
            snprintf(t, sizeof(t), "?");
        cg_sbuf_printf(b, "  %s.%03uZ %s -> %s: %s", t, (unsigned)(ev[i].wall_ms % 1000),
                       cg_brk_state_name(ev[i].from), cg_brk_state_name(ev[i].to),
                       cg_brk_why_name(ev[i].why));
        if (ev[i].why < CG_BRKW_NRES || ev[i].why == CG_BRKW_RESUMED)
            cg_sbuf_printf(b, " (%u.%u%%)", ev[i].use / 10, ev[i].use % 10);
        cg_sbuf_add(b, "\n", 1);
    }
}

static void admission_state(struct cg_sbuf *b, const struct cg_daemon *d)
{
    struct cg_admission *a = d->adm;
    struct cg_adm_listener *al;
    struct cg_iptable_stats ips;
    char r1[48], r2[48];
    int k;

    for (al = a ? atomic_load(&a->head) : NULL; al; al = atomic_load(&al->next)) {
        uint64_t ip = atomic_load(&al->ip_params);
        uint32_t rate, burst;
        unsigned mpi = atomic_load(&al->max_conns_per_ip);

        cg_tbs_get(&al->bucket, &rate, &burst);
        cg_sbuf_printf(b, "listener %s: connection_rate %s, ip_connection_rate %s, "
                       "max_connections_per_ip ", al->name,
                       rate_str(rate, burst, r1, sizeof(r1)),
                       rate_str((uint32_t)ip, (uint32_t)(ip >> 32), r2, sizeof(r2)));
        if (mpi)
            cg_sbuf_printf(b, "%u", mpi);
        else
            cg_sbuf_printf(b, "off");
        cg_sbuf_printf(b, ", reject %s; refused:",
                       atomic_load(&al->reject) == CG_REJECT_RST ? "rst" : "close");
        for (k = 0; k < CG_REJ_ALL; k++)
            cg_sbuf_printf(b, " %s %llu", cg_reject_label(k),
                           (unsigned long long)atomic_load(&al->refused[k]));
        cg_sbuf_add(b, "\n", 1);
    }
    if (a && a->ipt) {
        cg_iptable_stats(a->ipt, uv_hrtime(), &ips);
        cg_sbuf_printf(b, "client addresses (/%u IPv4, /%u IPv6): %llu remembered of %llu, "
                       "%llu holding %llu connections, %llu evicted, %llu admitted untracked\n",
                       atomic_load(&a->v4_prefix), atomic_load(&a->v6_prefix),
                       (unsigned long long)ips.live, (unsigned long long)ips.capacity,
                       (unsigned long long)ips.holding, (unsigned long long)ips.conns,
                       (unsigned long long)ips.evictions, (unsigned long long)ips.untracked);
    } else {
        cg_sbuf_printf(b, "client addresses: no limit configured (no table)\n");
    }
}

static void server_breakers(struct cg_sbuf *b, const struct cg_daemon *d)
{
    size_t i;
    unsigned j;

    for (i = 0; d->ups && i < d->cfg->nupstreams; i++) {
        const struct cg_upstream *up = &d->ups[i];
        unsigned pmax = atomic_load(&up->max_pending);

        cg_sbuf_printf(b, "upstream %s: max_pending_connects_per_server %u%s, eject after %u "
                       "consecutive failures or %u%% of >= %u connects in %llu ms, cooldown "
                       "%llu ms\n", up->conf->name, pmax, pmax ? "" : " (unlimited)",
                       atomic_load(&up->eject_failures), atomic_load(&up->eject_error_rate),
                       atomic_load(&up->eject_min_connects),
                       (unsigned long long)atomic_load(&up->eject_window_ms),
                       (unsigned long long)atomic_load(&up->eject_cooldown_ms));
        for (j = 0; j < up->nservers; j++) {
            const struct cg_server *s = &up->servers[j];

            cg_sbuf_printf(b, "  server %s: %s, pending %u, consecutive failures %u, "
                           "ejections %llu, restores %llu, probes failed %llu\n",
                           s->conf->name, cg_srv_brk_name(atomic_load(&s->brk)),
                           atomic_load(&s->pending), atomic_load(&s->consec_fails),
                           (unsigned long long)atomic_load(&s->ejections),
                           (unsigned long long)atomic_load(&s->restores),
                           (unsigned long long)atomic_load(&s->probes_failed));
        }
    }
}

static void cmd_breaker(struct cg_stats *st, struct cg_sbuf *b)
{
    const struct cg_daemon *d = st->rt->d;
    unsigned max = d->brk ? atomic_load(&d->brk->max_conns) : d->cfg->gw.max_connections;
    unsigned used = atomic_load(&d->conns), i;
    uint64_t rejected = 0, refused;
    int k;

    if (d->brk)
        breaker_state(b, d);
    for (i = 0; i < d->nworkers; i++)
        rejected += atomic_load(&d->workers[i].stats.rejected_max);
    if (max)
        cg_sbuf_printf(b, "max_connections: %u used of %u (%.1f%%), %llu refused\n", used,
                       max, 100.0 * used / max, (unsigned long long)rejected);
    else
        cg_sbuf_printf(b, "max_connections: unlimited, %u used\n", used);
    for (i = 0; i < d->nworkers; i++) {
        const struct cg_worker_stats *ws = &d->workers[i].stats;
        uint64_t active = atomic_load(&ws->active);

        refused = atomic_load(&ws->rejected_max);
        for (k = 0; k < CG_REJ_N; k++)
            refused += atomic_load(&ws->rejected[k]);
        cg_sbuf_printf(b, "worker %u: %llu connections", i, (unsigned long long)active);
        if (max)
            cg_sbuf_printf(b, " (%.1f%% of max_connections)", 100.0 * (double)active / max);
        cg_sbuf_printf(b, ", %llu refused\n", (unsigned long long)refused);
    }
    admission_state(b, d);
    server_breakers(b, d);
}

/* set breaker force-open|force-closed|auto */
static int cmd_set_breaker(struct cg_stats *st, char **argv, int argc, struct cg_sbuf *b)
{
    static const char *const modes[] = { "auto", "force-open", "force-closed" };
    struct cg_breaker *brk = st->rt->d->brk;
    int mode = -1, old, i;

    for (i = 0; argc == 3 && i < 3; i++)
        if (strcmp(argv[2], modes[i]) == 0)
            mode = i;
    if (mode < 0) {
        cg_sbuf_printf(b, "error: usage: set breaker force-open|force-closed|auto\n");
        return -EINVAL;
    }
    if (!brk) {
        cg_sbuf_printf(b, "error: set breaker: the daemon has no breaker\n");
        return -ENOENT;
    }
    old = cg_breaker_set_mode(brk, mode, uv_hrtime() / 1000000);
    cg_notice("stats socket: set breaker %s (was %s)", modes[mode], cg_brk_mode_name(old));
    cg_sbuf_printf(b, "breaker: mode %s (was %s), state %s\n", modes[mode],
                   cg_brk_mode_name(old),
                   cg_brk_state_name(cg_breaker_state(brk, NULL, NULL)));
    return 0;
}

/* set rate LISTENER RATE BURST */
static int cmd_set_rate(struct cg_stats *st, char **argv, int argc, struct cg_sbuf *b)
{
    const struct cg_daemon *d = st->rt->d;
    struct cg_adm_listener *al;
    unsigned long long v[2];
    uint32_t rate, burst;
    char *end, r1[48], r2[48];
    int k;

    if (argc != 5) {
        cg_sbuf_printf(b, "error: usage: set rate LISTENER RATE BURST (connections/s; 0 = no "
                       "limit; BURST 0 = RATE)\n");
        return -EINVAL;
    }
    al = d->adm ? cg_admission_listener(d->adm, argv[2]) : NULL;
    if (!al) {
        cg_sbuf_printf(b, "error: no listener \"%s\" (see show stats)\n", argv[2]);
        return -ENOENT;
    }
    for (k = 0; k < 2; k++) {
        errno = 0;
        v[k] = strtoull(argv[3 + k], &end, 10);
        if (errno || *end || argv[3 + k][0] < '0' || argv[3 + k][0] > '9' || v[k] > 100000000) {
            cg_sbuf_printf(b, "error: \"%s\" is not a %s (expected 0..100000000)\n",
                           argv[3 + k], k ? "burst" : "rate");
            return -EINVAL;
        }
    }
    cg_tbs_get(&al->bucket, &rate, &burst);
    rate_str(rate, burst, r2, sizeof(r2));
    cg_tbs_set(&al->bucket, (uint32_t)v[0], (uint32_t)v[1]);
    cg_tbs_get(&al->bucket, &rate, &burst);
    rate_str(rate, burst, r1, sizeof(r1));
    cg_notice("stats socket: set rate %s: connection_rate %s (was %s)", argv[2], r1, r2);
    cg_sbuf_printf(b, "listener %s: connection_rate %s (was %s), until the next reload\n",
                   argv[2], r1, r2);
    return 0;
}

/* set server UPSTREAM/SERVER state ready|drain|maint */
static int cmd_set_server(struct cg_stats *st, char **argv, int argc, struct cg_sbuf *b)
{
    const struct cg_daemon *d = st->rt->d;
    static const char *const states[] = { "ready", "drain", "maint" };
    struct cg_upstream *up = NULL;
    struct cg_server *srv = NULL;
    char *slash;
    size_t i;
    int state = -1, old;

    if (argc != 5 || strcmp(argv[3], "state") != 0) {
        cg_sbuf_printf(b, "error: usage: set server UPSTREAM/SERVER state ready|drain|maint\n");
        return -EINVAL;
    }
    slash = strchr(argv[2], '/');
    if (!slash) {
        cg_sbuf_printf(b, "error: \"%s\" is not UPSTREAM/SERVER (e.g. echo/127.0.0.1:9000)\n",
                       argv[2]);
        return -EINVAL;
    }
    *slash = '\0';
    for (i = 0; d->ups && i < d->cfg->nupstreams; i++)
        if (strcmp(d->ups[i].conf->name, argv[2]) == 0)
            up = &d->ups[i];
    if (!up) {
        cg_sbuf_printf(b, "error: no upstream \"%s\" (see show upstreams)\n", argv[2]);
        return -ENOENT;
    }
    for (i = 0; i < up->nservers; i++)
        if (strcmp(up->servers[i].conf->name, slash + 1) == 0)
            srv = &up->servers[i];
    if (!srv) {
        cg_sbuf_printf(b, "error: upstream %s has no server \"%s\" (see show upstreams)\n",
                       argv[2], slash + 1);
        return -ENOENT;
    }
    for (i = 0; i < 3; i++)
        if (strcmp(argv[4], states[i]) == 0)
            state = (int)i;
    if (state < 0) {
        cg_sbuf_printf(b, "error: \"%s\" is not a state (expected ready, drain or maint)\n",
                       argv[4]);
        return -EINVAL;
    }
    old = atomic_exchange(&srv->state, state);
    cg_notice("stats socket: set server %s/%s state %s (was %s)", up->conf->name,
              srv->conf->name, states[state], state_name(old));
    cg_sbuf_printf(b, "server %s/%s: state %s (was %s)%s\n", up->conf->name, srv->conf->name,
                   states[state], state_name(old),
                   state == CG_SERVER_READY ? "" :
                   "; no new connections, established ones go on");
    return 0;
}

/* debug stall-worker N MS, debug log-writer pause|resume: only when the daemon started with CG_TEST_HOOKS=1 (main.c);
 * otherwise the command does not exist. */
static void cmd_debug(struct cg_stats *st, char **argv, int argc, struct cg_sbuf *b)
{
    struct cg_daemon *d = st->rt->d;
    unsigned long id, ms;
    char *end1 = NULL, *end2 = NULL;
    int err;

    if (argc == 3 && strcmp(argv[1], "log-writer") == 0 &&
        (strcmp(argv[2], "pause") == 0 || strcmp(argv[2], "resume") == 0)) {
        cg_warn("stats socket: debug log-writer %s (test hook)", argv[2]);
        cg_alog_pause(d->alog, argv[2][0] == 'p');
        cg_sbuf_printf(b, "log writer: %sd\n", argv[2]);
        return;
    }
    if (argc != 4 || strcmp(argv[1], "stall-worker") != 0) {
        cg_sbuf_printf(b, "error: usage: debug stall-worker WORKER MILLISECONDS | "
                       "debug log-writer pause|resume\n");
        return;
    }
    id = strtoul(argv[2], &end1, 10);
    ms = strtoul(argv[3], &end2, 10);
    if (*end1 || *end2 || id >= d->nworkers || ms == 0 || ms > 600000) {
        cg_sbuf_printf(b, "error: debug stall-worker: WORKER is 0..%u, MILLISECONDS "
                       "1..600000\n", d->nworkers ? d->nworkers - 1 : 0);
        return;
    }
    cg_warn("stats socket: debug stall-worker %lu %lu (test hook)", id, ms);
    err = cg_worker_stall(&d->workers[id], (unsigned)ms);
    if (err < 0)
        cg_sbuf_printf(b, "error: debug stall-worker: %s\n", strerror(-err));
    else
        cg_sbuf_printf(b, "worker %lu: stalling for %lu ms\n", id, ms);
}

int cg_stats__run_command(struct client *c, char *line, struct cg_sbuf *b)
{
    struct cg_stats *st = c->st;
    struct cg_runtime *rt = st->rt;
    char *argv[8], *save = NULL, *tok, copy[LINE_MAX_BYTES + 1];
    int argc = 0, err;

    snprintf(copy, sizeof(copy), "%s", line);
    for (tok = strtok_r(line, " \t\r", &save); tok && argc < 8;
         tok = strtok_r(NULL, " \t\r", &save))
        argv[argc++] = tok;
    cg_sbuf_init(b, REPLY_MAX);
    if (argc == 0) {
        if (c->prompt)
            cg_sbuf_add(b, "> ", 2);
        return CG_STATS_RAW;
    }
#define IS(i, s) (argc > (i) && strcmp(argv[i], (s)) == 0)
    if (IS(0, "help") && argc == 1) {
        cg_sbuf_add(b, help_text, sizeof(help_text) - 1);
    } else if (IS(0, "prompt") && argc == 1) {
        c->prompt = !c->prompt;
        if (c->prompt)
            cg_sbuf_add(b, "> ", 2);
        return CG_STATS_RAW;
    } else if (IS(0, "quit") && argc == 1) {
        c->quit = 1;
        return CG_STATS_NONE;
    } else if (IS(0, "show") && IS(1, "info") && argc == 2) {
        cmd_info(st, b);
    } else if (IS(0, "show") && (IS(1, "stats") || IS(1, "metrics")) && argc == 2) {
        if (cg_stats__start_req(c, IS(1, "stats") ? REQ_STATS : REQ_METRICS, 0, 0, b))
            return CG_STATS_NONE;       /* answered when the workers are back */
    } else if (IS(0, "show") && IS(1, "coros")) {
        if (cg_stats__cmd_coros(c, argv, argc, b))
            return CG_STATS_NONE;       /* answered when the workers are back */
    } else if (IS(0, "show") && IS(1, "upstreams") && argc == 2) {
        cmd_upstreams(st, b);
    } else if (IS(0, "show") && IS(1, "breaker") && argc == 2) {
        cmd_breaker(st, b);
    } else if (IS(0, "show") && IS(1, "tls") && argc == 2) {
        cmd_tls(st, b);
    } else if (IS(0, "show") && IS(1, "sched") && (argc == 2 || (argc == 3 && IS(2, "json")))) {
        cg_schedlat_format(rt->d->schedlat, rt->d, argc == 3, b);  /* schedlat.h */
    } else if (IS(0, "set") && IS(1, "server")) {
        cmd_set_server(st, argv, argc, b);
    } else if (IS(0, "set") && IS(1, "breaker")) {
        cmd_set_breaker(st, argv, argc, b);
    } else if (IS(0, "set") && IS(1, "rate")) {
        cmd_set_rate(st, argv, argc, b);
    } else if (IS(0, "debug") && rt->d->test_hooks) {
        cmd_debug(st, argv, argc, b);
    } else if (IS(0, "reload") && argc == 1) {
        err = rt->reload ? rt->reload(rt, "stats socket") : -ENOSYS;
        if (err < 0)
            cg_sbuf_printf(b, "error: reload: %s\n", rt->last_reload_msg[0] ?
                           rt->last_reload_msg : strerror(-err));
        else
            cg_sbuf_printf(b, "reload: %s\n", rt->last_reload_msg);
    } else {
        cg_sbuf_add(b, "error: unknown command \"", 24);
        cg_sbuf_add(b, copy, strnlen(copy, 200));
        cg_sbuf_add(b, "\"\n", 2);
        cg_sbuf_add(b, help_text, sizeof(help_text) - 1);
    }
#undef IS
    return CG_STATS_ANSWER;
}

