/* gateway/core/reload.c — a reload: the main thread's half
 * (build the next generation, bind its new sockets, send each worker its switch) and each
 * worker's half (cg_worker_switch(), on the worker's thread); see reload.h. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "base/log.h"
#include "core/reload.h"
#include "coro/list.h"
#include "core/conn.h"
#include "core/health.h"
#include "core/worker.h"

/* ------------------------------------------------------------------ reloading */

struct cg_reload {
    struct cg_daemon *d;
    unsigned          latest;       /* id of the generation sent last */
    unsigned          reported;     /* id cg_reload_poll() last returned */
    int               shutdown;
};

struct cg_reload *cg_reload_new(struct cg_daemon *d)
{
    struct cg_reload *r = calloc(1, sizeof(*r));

    if (!r)
        return NULL;
    r->d = d;
    r->latest = r->reported = d->gen ? d->gen->id : 0;
    return r;
}

void cg_reload_free(struct cg_reload *r)
{
    free(r);
}

unsigned cg_reload_pending(const struct cg_reload *r)
{
    return atomic_load(&r->d->reload_pending);
}

void cg_reload_shutdown(struct cg_reload *r)
{
    r->shutdown = 1;
}

unsigned cg_reload_poll(struct cg_reload *r)
{
    if (atomic_load(&r->d->reload_pending) != 0 || r->reported == r->latest)
        return 0;
    r->reported = r->latest;
    return r->latest;
}

/* Worker thread: one more worker runs the latest generation (or has ended). */
static void on_switched(struct cg_wswitch *sw, int applied)
{
    struct cg_reload *r = sw->ud;

    atomic_fetch_sub(&r->d->reload_pending, 1);
}

/* Keys that only a restart can change keep their running values in <cfg>, each change
 * logged. Returns how many were kept. */
static unsigned keep_restart_only(struct cg_config *cfg, const struct cg_config *cur)
{
    struct cg_gateway_conf *g = &cfg->gw;
    const struct cg_gateway_conf *o = &cur->gw;
    unsigned n = 0;

#define KEPT(sect, key)                                                                    \
    do {                                                                                   \
        cg_warn("reload: %s: [%s] %s changed: takes effect at the next restart; the "      \
                "running value stays", cfg->path, sect, key);                              \
        n++;                                                                               \
    } while (0)
    if (g->workers != o->workers) {
        KEPT("gateway", "workers");
        g->workers = o->workers;
        g->workers_auto = o->workers_auto;
    }
    if (g->cpu_pinning != o->cpu_pinning) {
        KEPT("gateway", "cpu_pinning");
        g->cpu_pinning = o->cpu_pinning;
    }
    if (strcmp(g->stats_socket, o->stats_socket) != 0 ||
        g->stats_socket_mode != o->stats_socket_mode ||
        g->stats_socket_uid != o->stats_socket_uid ||
        g->stats_socket_gid != o->stats_socket_gid) {
        KEPT("gateway", "stats_socket (or its mode, owner, group)");
        memcpy(g->stats_socket, o->stats_socket, sizeof(g->stats_socket));
        g->stats_socket_mode = o->stats_socket_mode;
        g->stats_socket_uid = o->stats_socket_uid;
        g->stats_socket_gid = o->stats_socket_gid;
    }
    if (strcmp(g->metrics_listen, o->metrics_listen) != 0) {
        KEPT("gateway", "metrics_listen");
        memcpy(g->metrics_listen, o->metrics_listen, sizeof(g->metrics_listen));
        g->metrics_addr = o->metrics_addr;
        g->metrics_addrlen = o->metrics_addrlen;
    }
    if (g->nofile != o->nofile) {
        KEPT("gateway", "nofile");
        g->nofile = o->nofile;
    }
    if (cfg->bpf.attach != cur->bpf.attach || strcmp(cfg->bpf.btf, cur->bpf.btf) != 0) {
        KEPT("bpf", "attach (or btf)");
        cfg->bpf = cur->bpf;
    }
#undef KEPT
    return n;
}

/* What becomes of new listener i. */
struct plan {
    int  from;          /* same-named listener of the running config, or -1 */
    int  keep;          /* its sockets are kept */
    int *fds;           /* [nworkers] */
};

static int same_addr(const struct cg_listener_conf *a, const struct cg_listener_conf *b)
{
    return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

/* Closes the sockets bound for the plan (never the kept ones) and frees it. */
static void plan_free(struct plan *p, size_t n, unsigned nworkers)
{
    size_t i;
    unsigned k;

    for (i = 0; p && i < n; i++) {
        for (k = 0; !p[i].keep && p[i].fds && k < nworkers; k++)
            if (p[i].fds[k] >= 0)
                close(p[i].fds[k]);
        free(p[i].fds);
    }
    free(p);
}

static void format_sockname(int fd, char *buf, size_t size)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[64] = "?";

    memset(&ss, 0, sizeof(ss));
    getsockname(fd, (struct sockaddr *)&ss, &len);
    if (ss.ss_family == AF_INET6) {
        uv_ip6_name((struct sockaddr_in6 *)&ss, host, sizeof(host));
        snprintf(buf, size, "[%s]:%d", host, ntohs(((struct sockaddr_in6 *)&ss)->sin6_port));
    } else {
        uv_ip4_name((struct sockaddr_in *)&ss, host, sizeof(host));
        snprintf(buf, size, "%s:%d", host, ntohs(((struct sockaddr_in *)&ss)->sin_port));
    }
}

/* Plans the listeners of <cfg> against the running ones: sockets kept, or bound now (all
 * of them before any old one closes). Returns the plan or NULL with *<err> set, logged. */
static struct plan *plan_listeners(struct cg_daemon *d, const struct cg_config *cfg, int *err)
{
    const struct cg_config *cur = d->cfg;
    struct plan *p = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*p));
    char addr[80];
    size_t i, j;
    unsigned k;

    *err = -ENOMEM;
    if (!p)
        return NULL;
    for (i = 0; i < cfg->nlisteners; i++) {
        const struct cg_listener_conf *lc = &cfg->listeners[i];

        p[i].from = -1;
        p[i].fds = malloc(d->nworkers * sizeof(int));
        if (!p[i].fds)
            goto out_free;
        for (k = 0; k < d->nworkers; k++)
            p[i].fds[k] = -1;
        for (j = 0; j < cur->nlisteners; j++)
            if (strcmp(cur->listeners[j].name, lc->name) == 0)
                p[i].from = (int)j;
        if (p[i].from >= 0 && same_addr(&cur->listeners[p[i].from], lc)) {
            p[i].keep = 1;
            for (k = 0; k < d->nworkers; k++) {
                p[i].fds[k] = d->workers[k].ls[p[i].from].fd;
                /* A new queue length applies to a listening socket as it is. */
                if (lc->backlog != cur->listeners[p[i].from].backlog &&
                    listen(p[i].fds[k], (int)lc->backlog) < 0)
                    cg_warn("reload: listener %s: listen(%u): %s", lc->name, lc->backlog,
                            strerror(errno));
            }
            continue;
        }
        for (k = 0; k < d->nworkers; k++) {
            struct sockaddr_storage ss = lc->addr;
            socklen_t len = lc->addrlen;
            int fd;

            /* Port 0: every worker's socket shares the port the first one got. */
            if (k > 0 && ((struct sockaddr_in *)&ss)->sin_port == 0) {
                len = sizeof(ss);
                getsockname(p[i].fds[0], (struct sockaddr *)&ss, &len);
            }
            fd = cg_listen_socket((struct sockaddr *)&ss, len, (int)lc->backlog);
            if (fd < 0) {
                *err = fd;
                cg_error("reload: %s:%u: [listener %s]: cannot listen on %s: %s", cfg->path,
                         lc->line, lc->name, lc->bind, strerror(-fd));
                goto out_free;
            }
            p[i].fds[k] = fd;
        }
        if (d->nworkers > 0) {
            format_sockname(p[i].fds[0], addr, sizeof(addr));
            cg_notice("reload: listener %s: %s on %s%s", lc->name,
                      lc->mode == CG_MODE_TCP ? "tcp" : "websocket", addr,
                      p[i].from >= 0 ? " (new address: the old sockets close once "
                                       "switched)" : " (added)");
        }
    }
    *err = 0;
    return p;

out_free:
    plan_free(p, cfg->nlisteners, d->nworkers);
    return NULL;
}

/* Builds worker <w>'s switch to <g> as planned. Returns it or NULL (ENOMEM). */
static struct cg_wswitch *build_switch(struct cg_reload *r, struct cg_worker *w,
                                       struct cg_gen *g, const struct plan *p)
{
    const struct cg_config *cfg = g->cfg;
    size_t n = cfg->nlisteners, i;
    struct cg_wswitch *sw;

    sw = calloc(1, sizeof(*sw) + (n ? n : 1) * sizeof(sw->map[0]));
    if (!sw)
        return NULL;
    sw->ls = calloc(n ? n : 1, sizeof(*sw->ls));
    if (!sw->ls) {
        free(sw);
        return NULL;
    }
    sw->nls = (unsigned)n;
    sw->call.fn = cg_worker_switch;
    sw->done = on_switched;
    sw->ud = r;
    for (i = 0; i < n; i++) {
        struct cg_wlistener *l = &sw->ls[i];

        l->w = w;
        l->index = (unsigned)i;
        l->conf = &cfg->listeners[i];
        l->up = &g->ups[l->conf->upstream];
        l->fd = p[i].fds[w->id];
        sw->map[i].from = p[i].from;
        sw->map[i].keep = p[i].keep;
        /* Until the worker switches, what it counted so far (it copies the final values
         * when it switches): the counters never go back. */
        if (p[i].from >= 0)
            cg_listener_stats_copy(&l->stats, &w->ls[p[i].from].stats);
    }
    return sw;
}

/* Closes the sockets <sw> opened for its listeners (those it keeps are the worker's). */
static void close_new_sockets(struct cg_wswitch *sw)
{
    unsigned i;

    for (i = 0; i < sw->nls; i++)
        if (!sw->map[i].keep && sw->ls[i].fd >= 0)
            close(sw->ls[i].fd);
}

/* A switch that will never run (the worker has ended): undone on the main thread. */
static void discard_switch(struct cg_wswitch *sw)
{
    close_new_sockets(sw);
    free(sw->ls);
    cg_gen_put(sw->gen);
    free(sw);
}

/* Logs what the listeners and upstreams of <cfg> change against <cur>. */
static void log_changes(const struct cg_config *cfg, const struct cg_config *cur,
                        const struct plan *p, unsigned *added, unsigned *removed)
{
    size_t i, j;

    *added = *removed = 0;
    for (i = 0; i < cfg->nlisteners; i++)
        if (p[i].from < 0)
            (*added)++;
    for (j = 0; j < cur->nlisteners; j++) {
        for (i = 0; i < cfg->nlisteners && p[i].from != (int)j; i++)
            ;
        if (i == cfg->nlisteners) {
            (*removed)++;
            cg_notice("reload: listener %s (%s) removed: its sockets close once every "
                      "worker has switched; its connections go on", cur->listeners[j].name,
                      cur->listeners[j].bind);
        }
    }
    for (i = 0; i < cfg->nupstreams; i++) {
        const struct cg_upstream_conf *uc = &cfg->upstreams[i];

        for (j = 0; j < cur->nupstreams && strcmp(cur->upstreams[j].name, uc->name); j++)
            ;
        if (j == cur->nupstreams)
            cg_info("reload: upstream %s added (%zu servers)", uc->name, uc->nservers);
        else if (uc->nservers != cur->upstreams[j].nservers)
            cg_info("reload: upstream %s: %zu servers (was %zu)", uc->name, uc->nservers,
                    cur->upstreams[j].nservers);
    }
}

int cg_reload_apply(struct cg_reload *r, struct cg_config *cfg, char *msg, size_t size)
{
    struct cg_daemon *d = r->d;
    struct cg_wswitch **sws = NULL;
    struct plan *p = NULL;
    struct cg_gen *g = NULL, *old = d->gen;
    unsigned kept, added, removed, k, sent = 0;
    size_t i, j;
    int err;

    if (r->shutdown) {
        snprintf(msg, size, "the daemon is draining; nothing changed");
        cg_config_free(cfg);
        return -ESHUTDOWN;
    }
    kept = keep_restart_only(cfg, d->cfg);
    p = plan_listeners(d, cfg, &err);
    if (!p) {
        snprintf(msg, size, "%s: cannot listen (%s); still running generation %u",
                 cfg->path, strerror(-err), old->id);
        cg_config_free(cfg);
        return err;
    }
    g = cg_gen_new(cfg, d->nworkers, old->id + 1);
    sws = calloc(d->nworkers ? d->nworkers : 1, sizeof(*sws));
    if (!g || !sws)
        goto out_nomem;
    for (k = 0; k < d->nworkers; k++) {
        sws[k] = build_switch(r, &d->workers[k], g, p);
        if (!sws[k])
            goto out_nomem;
    }
    log_changes(cfg, d->cfg, p, &added, &removed);

    /* Nothing can fail from here on. Servers that the new generation does not have keep
     * no successor from an earlier reload. */
    for (i = 0; i < d->cfg->nupstreams; i++)
        for (j = 0; j < old->ups[i].nservers; j++)
            old->ups[i].servers[j].succ = NULL;
    cg_upstreams_carry(g->ups, cfg->nupstreams, old->ups, old->cfg->nupstreams);
    cg_log_set_level(cfg->gw.log_level);
    d->gen = g;
    d->cfg = g->cfg;
    d->ups = g->ups;
    cg_daemon_apply_limits(d, cfg);
    r->latest = g->id;
    for (k = 0; k < d->nworkers; k++) {
        struct cg_wswitch *sw = sws[k];
        struct cg_wlistener *ls = sw->ls;
        unsigned nls = sw->nls;

        sw->gen = cg_gen_get(g);
        atomic_fetch_add(&r->d->reload_pending, 1);
        if (cg_worker_call(&d->workers[k], &sw->call) < 0) {
            atomic_fetch_sub(&r->d->reload_pending, 1);
            discard_switch(sw);
            continue;
        }
        /* The stats socket and metrics read the new listeners from now on; the worker
         * owns the array (and frees the one it replaces once it switched). */
        d->workers[k].ls = ls;
        d->workers[k].nls = nls;
        sent++;
    }
    /* The sockets now belong to the switches (kept ones to the workers all along). */
    for (i = 0; i < cfg->nlisteners; i++)
        p[i].keep = 1;
    plan_free(p, cfg->nlisteners, d->nworkers);
    free(sws);
    cg_gen_put(old);
    snprintf(msg, size, "%s is valid: generation %u: %zu listeners (%u added, %u removed), "
             "%zu upstreams%s; established connections keep their generation",
             cfg->path, g->id, cfg->nlisteners, added, removed, cfg->nupstreams,
             kept ? "; some keys take effect at the next restart (see the log)" : "");
    if (sent < d->nworkers)
        cg_warn("reload: %u of %u workers have ended and were not switched",
                d->nworkers - sent, d->nworkers);
    return 0;

out_nomem:
    for (k = 0; sws && k < d->nworkers; k++) {
        if (sws[k]) {
            free(sws[k]->ls);
            free(sws[k]);
        }
    }
    free(sws);
    plan_free(p, cfg->nlisteners, d->nworkers);
    if (g)
        cg_gen_put(g);              /* frees cfg with it */
    else
        cg_config_free(cfg);
    snprintf(msg, size, "out of memory; still running generation %u", old->id);
    return -ENOMEM;
}

/* ------------------------------------------------------------------ the workers' half */

void cg_listener_stats_copy(struct cg_listener_stats *dst, const struct cg_listener_stats *src)
{
    _Atomic uint64_t *to = (_Atomic uint64_t *)dst;
    _Atomic uint64_t *from = (_Atomic uint64_t *)src;
    size_t i;

    _Static_assert(sizeof(*dst) % sizeof(uint64_t) == 0, "listener stats are all counters");
    for (i = 0; i < sizeof(*dst) / sizeof(uint64_t); i++)
        atomic_store_explicit(&to[i], atomic_load_explicit(&from[i], memory_order_relaxed),
                              memory_order_relaxed);
}

/* An array of listeners replaced by a reload: freed once its handles are closed. */
struct retired_ls {
    struct cg_wlistener *ls;
    unsigned             pending;       /* handles not closed yet */
};

static void on_old_closed(uv_handle_t *h)
{
    struct retired_ls *rl = h->data;

    if (--rl->pending == 0) {
        free(rl->ls);
        free(rl);
    }
}

static void retire_handles(struct cg_wlistener *l, struct retired_ls *rl)
{
    if (!l->handles)
        return;
    l->poll.data = l->backoff.data = rl;
    uv_close((uv_handle_t *)&l->poll, on_old_closed);
    uv_close((uv_handle_t *)&l->backoff, on_old_closed);
    rl->pending += 2;
    l->handles = 0;
}

/* A switch that a worker does not apply (out of memory, or stopping): its new sockets
 * close. */
static void refuse_switch(struct cg_worker *w, struct cg_wswitch *sw)
{
    close_new_sockets(sw);
    /* The main thread may show this array (stats): kept until cg_daemon_join() or a later
     * switch, the newest only (the main thread shows no older one). */
    free(w->discarded);
    w->discarded = sw->ls;
    cg_gen_put(sw->gen);
}

void cg_worker_switch(struct cg_worker *w, struct cg_wcall *call)
{
    struct cg_wswitch *sw = (struct cg_wswitch *)call;
    void (*done)(struct cg_wswitch *, int) = sw->done;
    struct cg_wlistener *ols = w->wls;
    struct cg_gen *old = w->gen;
    struct retired_ls *rl = NULL;
    struct coro_list *n;
    unsigned nold = w->nwls, i, j;
    int *to = NULL, err;

    if (!w->stopping) {
        rl = calloc(1, sizeof(*rl));
        to = malloc((nold ? nold : 1) * sizeof(*to));
        if (!rl || !to)
            cg_error("reload: worker %u: out of memory; it stays on generation %u", w->id,
                     old->id);
    }
    if (!rl || !to) {
        free(rl);
        free(to);
        refuse_switch(w, sw);
        done(sw, 0);
        free(sw);
        return;
    }
    for (j = 0; j < nold; j++)
        to[j] = -1;
    for (i = 0; i < sw->nls; i++)
        if (sw->map[i].from >= 0 && (unsigned)sw->map[i].from < nold)
            to[sw->map[i].from] = (int)i;
    /* Sockets that go: what they queued is accepted now, under the old generation. */
    for (j = 0; j < nold; j++)
        if (to[j] < 0 || !sw->map[to[j]].keep)
            cg_wlistener_accept_queued(&ols[j]);
    for (i = 0; i < sw->nls; i++) {
        struct cg_wlistener *l = &sw->ls[i];
        int from = sw->map[i].from;

        if (from >= 0 && (unsigned)from < nold) {
            cg_listener_stats_copy(&l->stats, &ols[from].stats);
            /* One handle per descriptor and loop: the old one goes first. */
            if (sw->map[i].keep) {
                retire_handles(&ols[from], rl);
                ols[from].fd = -1;
            }
        }
        err = cg_wlistener_watch(l, &w->loop);
        if (err < 0) {
            cg_error("reload: listener %s: worker %u cannot watch its socket: %s",
                     l->conf->name, w->id, uv_strerror(err));
            continue;
        }
        cg_wlistener_accept(l);
    }
    for (j = 0; j < nold; j++) {
        retire_handles(&ols[j], rl);
        if (ols[j].fd >= 0)
            close(ols[j].fd);
        ols[j].fd = -1;
    }
    /* Connections stay on their generation; counters follow the listener's name and the
     * server's address into the new one. */
    for (n = w->conns.next; n != &w->conns; n = n->next) {
        struct cg_conn *c = coro_list_entry(n, struct cg_conn, node);
        uintptr_t at = (uintptr_t)c->l, lo = (uintptr_t)ols;

        if (at >= lo && at < lo + nold * sizeof(*ols)) {
            j = (unsigned)((at - lo) / sizeof(*ols));
            c->l = to[j] >= 0 ? &sw->ls[to[j]] : &w->retired;
            if (to[j] < 0)              /* its end takes it off there */
                CG_STAT_ADD(w->retired.stats.active, 1);
        }
        cg_conn_move_server(c, old, sw->gen);
    }
    if (rl->pending == 0) {
        free(ols);
        free(rl);
    } else {
        rl->ls = ols;
    }
    free(to);
    free(w->discarded);             /* the main thread shows sw->ls now */
    w->discarded = NULL;
    w->wls = sw->ls;
    w->nwls = sw->nls;
    w->gen = sw->gen;
    if (w->id == 0) {
        /* Health checks follow the servers of the new generation. */
        cg_health_stop(w);
        cg_health_start(w);
    }
    cg_info("reload: worker %u runs generation %u", w->id, w->gen->id);
    cg_gen_put(old);
    done(sw, 1);
    free(sw);
}
