/* gateway/core/daemon.c — the daemon as a whole: listening sockets bound for every worker,
 * the workers started, asked to drain or stop, joined; limits applied on reload. The
 * workers themselves (threads, loops, accepting) are core/worker.c. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/gen.h"
#include "core/worker.h"
#include "guard/admission.h"
#include "guard/breaker.h"
#include "base/access-log.h"
#include "base/log.h"

/* ------------------------------------------------------------------ sockets */

int cg_listen_socket(const struct sockaddr *addr, socklen_t len, int backlog)
{
    int fd, one = 1, err;

    fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto out_errno;
    if (addr->sa_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0)
        goto out_errno;
    /* Every accepted connection inherits TCP_NODELAY from its listening socket (Linux
     * copies the listener's options into the child): one system call per listener instead
     * of one per connection. */
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
        goto out_errno;
    if (bind(fd, addr, len) < 0 || listen(fd, backlog) < 0)
        goto out_errno;
    return fd;

out_errno:
    err = -errno;
    close(fd);
    return err;
}

static void format_addr(const struct sockaddr *sa, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

        uv_ip4_name(in, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(buf, size, "%s:%d", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

        uv_ip6_name(in6, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(buf, size, "[%s]:%d", host, port);
    } else {
        snprintf(buf, size, "?");
    }
}

/* ------------------------------------------------------------------ start and stop */

static int bind_listeners(struct cg_daemon *d)
{
    const struct cg_config *cfg = d->cfg;
    unsigned i, k;
    int err;
    char addr[80];

    for (i = 0; i < cfg->nlisteners; i++) {
        struct sockaddr_storage ss = cfg->listeners[i].addr;
        socklen_t len = cfg->listeners[i].addrlen;

        for (k = 0; k < d->nworkers; k++) {
            struct cg_wlistener *l = &d->workers[k].ls[i];
            int fd = cg_listen_socket((struct sockaddr *)&ss, len, (int)l->conf->backlog);

            if (fd < 0) {
                cg_error("listener %s: cannot listen on %s: %s", l->conf->name,
                         l->conf->bind, strerror(-fd));
                return fd;
            }
            /* Port 0: the first socket's port is the one every worker shares. */
            if (k == 0) {
                getsockname(fd, (struct sockaddr *)&ss, &len);
                format_addr((struct sockaddr *)&ss, addr, sizeof(addr));
                cg_notice("listener %s: %s on %s, %u workers, upstream %s", l->conf->name,
                          l->conf->mode == CG_MODE_TCP ? "tcp" : "websocket", addr,
                          d->nworkers, l->up->conf->name);
            }
            l->fd = fd;
            err = cg_wlistener_watch(l, &d->workers[k].loop);
            if (err < 0) {
                close(fd);
                l->fd = -1;
                cg_error("listener %s: cannot watch its socket: %s", l->conf->name,
                         uv_strerror(err));
                return err;
            }
        }
    }
    return 0;
}

/* What the daemon holds beside its workers' own: given back by a failed start and by
 * cg_daemon_join() alike. */
static void release(struct cg_daemon *d)
{
    /* After the workers: the writer writes out what they queued, then ends. */
    cg_alog_free(d->alog);
    d->alog = NULL;
    free(d->workers);
    d->workers = NULL;
    d->nworkers = 0;
    cg_admission_free(d->adm);
    d->adm = NULL;
    cg_breaker_free(d->brk);
    d->brk = NULL;
    uv_cond_destroy(&d->start_cond);
    uv_mutex_destroy(&d->start_lock);
    cg_gen_put(d->gen);
    d->gen = NULL;
    d->cfg = NULL;
    d->ups = NULL;
}

int cg_daemon_start(struct cg_daemon *d)
{
    unsigned i, n = d->cfg->gw.workers;
    int err;

    d->gen = cg_gen_new(d->cfg, n, 1);
    if (!d->gen) {
        cg_config_free(d->cfg);
        d->cfg = NULL;
        return -ENOMEM;
    }
    d->ups = d->gen->ups;
    uv_mutex_init(&d->start_lock);
    uv_cond_init(&d->start_cond);
    d->workers = calloc(n, sizeof(*d->workers));
    d->adm = cg_admission_new(d->cfg);
    d->brk = cg_breaker_new(d->cfg, d->nofile);
    d->alog = cg_alog_new(n, &(struct cg_alog_conf){
        .syslog_path = d->cfg->gw.alog_syslog_path,
        .journal_path = d->cfg->gw.alog_journal_path,
        .queue = d->cfg->gw.alog_queue });
    if (!d->workers || !d->adm || !d->brk || !d->alog) {
        err = -ENOMEM;
        goto out_free;
    }
    if (d->cfg->brk.memory_auto && atomic_load(&d->brk->memory_watermark))
        cg_info("breaker: memory_watermark auto: %llu MiB",
                (unsigned long long)(atomic_load(&d->brk->memory_watermark) >> 20));
    for (i = 0; i < n; i++) {
        err = cg_worker_init(d, &d->workers[i], i);
        if (err < 0) {
            cg_error("worker %u: cannot start: %s", i, strerror(-err));
            goto out_workers;
        }
        d->nworkers = i + 1;
    }
    err = bind_listeners(d);
    if (err < 0)
        goto out_workers;
    for (i = 0; i < n; i++) {
        err = uv_thread_create(&d->workers[i].thread, cg_worker_main, &d->workers[i]);
        if (err < 0) {
            cg_error("worker %u: cannot create thread: %s", i, uv_strerror(err));
            /* Those already running are stopped and joined; the rest abandoned. */
            d->nworkers = i;
            cg_daemon_request(d, CG_WREQ_STOP);
            cg_daemon_join(d);
            return err;
        }
    }
    /* Every worker watches its sockets before the caller says it is ready. */
    uv_mutex_lock(&d->start_lock);
    while (d->started < n)
        uv_cond_wait(&d->start_cond, &d->start_lock);
    uv_mutex_unlock(&d->start_lock);
    return 0;

out_workers:
    for (i = 0; i < d->nworkers; i++)
        cg_worker_abandon(&d->workers[i]);
    d->nworkers = 0;
out_free:
    release(d);
    return err;
}

void cg_daemon_request(struct cg_daemon *d, int how)
{
    unsigned i;

    for (i = 0; i < d->nworkers; i++) {
        struct cg_worker *w = &d->workers[i];
        int cur = atomic_load(&w->request);

        /* A stop overrides a pending drain, never the other way round. */
        while (cur < how && !atomic_compare_exchange_weak(&w->request, &cur, how))
            ;
        uv_mutex_lock(&w->lock);
        if (!w->async_closed)
            uv_async_send(&w->async);
        uv_mutex_unlock(&w->lock);
    }
}

void cg_daemon_join(struct cg_daemon *d)
{
    unsigned i;

    for (i = 0; i < d->nworkers; i++) {
        uv_thread_join(&d->workers[i].thread);
        uv_mutex_destroy(&d->workers[i].lock);
        /* The worker's own array; one the main thread shows but the worker never adopted
         * (a reload while it stopped) was kept for this moment too. */
        free(d->workers[i].wls);
        free(d->workers[i].discarded);
    }
    release(d);
}

void cg_daemon_apply_limits(struct cg_daemon *d, const struct cg_config *cfg)
{
    if (d->adm)
        cg_admission_apply(d->adm, cfg);
    if (d->brk)
        cg_breaker_apply(d->brk, cfg);
    cg_upstreams_apply(d->ups, d->cfg->nupstreams, cfg);
}
