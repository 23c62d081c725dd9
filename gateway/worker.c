/* gateway/worker.c — worker threads, their listeners, accepting, health checks, stopping.
 *
 * Accepting is ours, not libuv's uv_listen(): each worker watches its own SO_REUSEPORT
 * socket with a uv_poll_t and calls accept4() a bounded number of times per wakeup. That
 * lets a worker stop watching the socket for a moment when the process runs out of file
 * descriptors (EMFILE/ENFILE), as nginx does, instead of being woken again at once for
 * the same pending connection: the loop cannot spin. One pending connection is shed by
 * spending a reserve descriptor, so the client learns at once rather than at its timeout.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "coro/io.h"
#include "coro/list.h"
#include "log.h"
#include "relay.h"
#include "worker.h"
#include "ws.h"

#define ACCEPTS_PER_WAKEUP 64
#define EMFILE_PAUSE_MS    100

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

/* ------------------------------------------------------------------ accepting */

static void on_acceptable(uv_poll_t *p, int status, int events);

static void on_backoff_done(uv_timer_t *t)
{
    struct cg_wlistener *l = t->data;

    if (l->w->stopping || !l->paused)
        return;
    l->paused = 0;
    uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
}

/* Out of descriptors: shed one pending connection and stop accepting for a moment. */
static void accept_emfile(struct cg_wlistener *l, int err)
{
    struct cg_worker *w = l->w;
    int fd;

    CG_STAT_ADD(w->stats.accept_emfile, 1);
    if (w->reserve_fd >= 0) {
        close(w->reserve_fd);
        fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd >= 0)
            close(fd);
        w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if (!l->paused) {
        cg_warn("listener %s: accept(): %s; shedding connections for %d ms",
                l->conf->name, strerror(-err), EMFILE_PAUSE_MS);
        l->paused = 1;
        uv_poll_stop(&l->poll);
        uv_timer_start(&l->backoff, on_backoff_done, EMFILE_PAUSE_MS, 0);
    }
}

static void start_conn(struct cg_wlistener *l, int fd)
{
    struct cg_worker *w = l->w;
    struct cg_daemon *d = w->d;
    unsigned max = d->cfg->gw.max_connections;
    struct cg_conn *c;
    int one = 1, ws = l->conf->mode == CG_MODE_WEBSOCKET;

    if (max && atomic_fetch_add(&d->conns, 1) >= max) {
        atomic_fetch_sub(&d->conns, 1);
        CG_STAT_ADD(w->stats.rejected_max, 1);
        CG_STAT_ADD(l->stats.rejected_max, 1);
        close(fd);
        return;
    }
    if (!max)
        atomic_fetch_add(&d->conns, 1);
    c = calloc(1, sizeof(*c));
    if (!c)
        goto out_fd;
    if (coro_stream_init(w->sched, &c->client) < 0) {
        free(c);
        goto out_fd;
    }
    c->client.rreason = "read client";
    c->client.wreason = "write client";
    c->w = w;
    c->l = l;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (uv_tcp_open(&c->client.tcp, fd) < 0 ||
        coro_spawn(w->sched, ws ? cg_ws_session : cg_tcp_session, c,
                   ws ? "ws session" : "tcp session", &c->co) < 0) {
        /* The handle owns fd once opened; closing it closes fd, and frees c after. */
        CG_STAT_ADD(w->stats.accept_errors, 1);
        atomic_fetch_sub(&d->conns, 1);
        coro_stream_close(&c->client, (uv_close_cb)free);
        return;
    }
    coro_list_add_tail(&w->conns, &c->node);
    CG_STAT_ADD(w->stats.accepted, 1);
    CG_STAT_ADD(w->stats.active, 1);
    CG_STAT_ADD(l->stats.accepted, 1);
    CG_STAT_ADD(l->stats.active, 1);
    return;

out_fd:
    atomic_fetch_sub(&d->conns, 1);
    CG_STAT_ADD(w->stats.accept_errors, 1);
    close(fd);
}

static void on_acceptable(uv_poll_t *p, int status, int events)
{
    struct cg_wlistener *l = p->data;
    int i, fd;

    if (status < 0) {
        cg_error("listener %s: poll: %s", l->conf->name, uv_strerror(status));
        return;
    }
    for (i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            start_conn(l, fd);
            continue;
        }
        switch (errno) {
        case EAGAIN:
        case EINTR:
            return;
        case ECONNABORTED:
        case EPROTO:
            continue;
        case EMFILE:
        case ENFILE:
        case ENOBUFS:
        case ENOMEM:
            accept_emfile(l, -errno);
            return;
        default:
            CG_STAT_ADD(l->w->stats.accept_errors, 1);
            cg_error("listener %s: accept(): %s", l->conf->name, strerror(errno));
            return;
        }
    }
}

/* ------------------------------------------------------------------ health checks */

struct check {
    struct coro_stream st;        /* heap: a pending connect may outlive a parked stack */
    struct coro_list   node;
    struct cg_server  *srv;
    struct coro       *co;
};

static void health_check(void *arg)
{
    struct check *ck = arg;
    struct cg_server *srv = ck->srv;
    const struct cg_upstream_conf *uc = srv->up->conf;
    int err;

    ck->co = coro_self();
    for (;;) {
        if (coro_sleep(uc->health_check_interval_ms) == UV_ECANCELED)
            break;
        if (atomic_load_explicit(&srv->state, memory_order_relaxed) == CG_SERVER_MAINT)
            continue;
        err = coro_stream_init(coro_sched_current(), &ck->st);
        if (err == 0) {
            err = coro_connect(&ck->st, (const struct sockaddr *)&srv->conf->addr,
                               (int64_t)uc->health_check_timeout_ms);
            coro_stream_close(&ck->st, NULL);
        }
        if (err == UV_ECANCELED)
            break;
        if (cg_server_check_result(srv, err == 0)) {
            if (err == 0)
                cg_notice("upstream %s: server %s is UP (%u successful checks)", uc->name,
                          srv->conf->name, uc->health_check_rise);
            else
                cg_warn("upstream %s: server %s is DOWN (%u failed checks, last: %s)",
                        uc->name, srv->conf->name, uc->health_check_fall, uv_strerror(err));
        }
    }
    coro_list_del(&ck->node);
    free(ck);
}

static void start_health_checks(struct cg_worker *w)
{
    struct cg_daemon *d = w->d;
    size_t i, j;

    for (i = 0; i < d->cfg->nupstreams; i++) {
        struct cg_upstream *up = &d->ups[i];

        if (up->conf->health_check_interval_ms == 0)
            continue;
        for (j = 0; j < up->nservers; j++) {
            struct check *ck = calloc(1, sizeof(*ck));

            if (!ck || coro_spawn(w->sched, health_check, ck, "health check", &ck->co) < 0) {
                free(ck);
                cg_error("upstream %s: cannot start health checks: out of memory",
                         up->conf->name);
                return;
            }
            ck->srv = &up->servers[j];
            coro_list_init(&ck->node);
            coro_list_add_tail(&w->checks, &ck->node);
        }
    }
}

/* ------------------------------------------------------------------ stopping */

static void close_listeners(struct cg_worker *w)
{
    unsigned i;

    for (i = 0; i < w->nls; i++) {
        struct cg_wlistener *l = &w->ls[i];

        if (l->fd < 0)
            continue;
        uv_close((uv_handle_t *)&l->poll, NULL);
        uv_close((uv_handle_t *)&l->backoff, NULL);
        close(l->fd);
        l->fd = -1;
    }
}

static void cancel_all(struct cg_worker *w)
{
    struct coro_list *n;

    for (n = w->conns.next; n != &w->conns; n = n->next) {
        struct cg_conn *c = coro_list_entry(n, struct cg_conn, node);

        if (c->co)
            coro_cancel(c->co);
    }
    for (n = w->checks.next; n != &w->checks; n = n->next) {
        struct check *ck = coro_list_entry(n, struct check, node);

        if (ck->co)
            coro_cancel(ck->co);
    }
}

static void on_drain_timeout(uv_timer_t *t)
{
    struct cg_worker *w = t->data;

    if (!coro_list_empty(&w->conns))
        cg_notice("drain timeout: closing %llu remaining connections",
                  (unsigned long long)atomic_load(&w->stats.active));
    cancel_all(w);
}

/* Runs the calls queued in <w>, oldest first. */
static void run_calls(struct cg_worker *w)
{
    struct cg_wcall *list, *prev = NULL, *next;

    uv_mutex_lock(&w->lock);
    list = w->calls;
    w->calls = NULL;
    uv_mutex_unlock(&w->lock);
    for (; list; list = next) {     /* reverse: queued newest first */
        next = list->next;
        list->next = prev;
        prev = list;
    }
    for (list = prev; list; list = next) {
        next = list->next;
        list->next = NULL;
        list->fn(w, list);
    }
}

int cg_worker_call(struct cg_worker *w, struct cg_wcall *call)
{
    int err = 0;

    uv_mutex_lock(&w->lock);
    if (w->async_closed) {
        err = -ESRCH;
    } else {
        call->next = w->calls;
        w->calls = call;
        uv_async_send(&w->async);
    }
    uv_mutex_unlock(&w->lock);
    return err;
}

static void on_request(uv_async_t *a)
{
    struct cg_worker *w = a->data;
    int how = atomic_exchange(&w->request, CG_WREQ_NONE);

    run_calls(w);
    if (how == CG_WREQ_NONE)
        return;
    if (!w->stopping) {
        w->stopping = 1;
        close_listeners(w);
        /* Kept open for a later stop request, but no reason to keep the loop running. */
        uv_unref((uv_handle_t *)&w->async);
        /* Health checks stop with the listeners; connections get the drain time. */
        for (struct coro_list *n = w->checks.next; n != &w->checks; n = n->next) {
            struct check *ck = coro_list_entry(n, struct check, node);

            if (ck->co)
                coro_cancel(ck->co);
        }
    }
    if (how == CG_WREQ_STOP) {
        cancel_all(w);
        if (uv_is_active((uv_handle_t *)&w->drain_timer))
            uv_timer_stop(&w->drain_timer);
    } else if (!uv_is_active((uv_handle_t *)&w->drain_timer)) {
        uv_timer_start(&w->drain_timer, on_drain_timeout, w->d->cfg->gw.drain_timeout_ms, 0);
    }
    uv_unref((uv_handle_t *)&w->drain_timer);   /* it must not keep an idle loop alive */
}

/* ------------------------------------------------------------------ the thread */

static void pin(struct cg_worker *w)
{
    cpu_set_t set;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int err;

    if (!w->d->cfg->gw.cpu_pinning || ncpu <= 0) {
        w->cpu = -1;
        return;
    }
    w->cpu = (int)(w->id % (unsigned)ncpu);
    CPU_ZERO(&set);
    CPU_SET(w->cpu, &set);
    err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (err) {
        cg_warn("cannot pin worker %u to CPU %d: %s", w->id, w->cpu, strerror(err));
        w->cpu = -1;
    }
}

static void worker_main(void *arg)
{
    struct cg_worker *w = arg;
    char name[16];
    unsigned i;
    int leaked;

    cg_log_set_worker((int)w->id);
    snprintf(name, sizeof(name), "corogate/w%u", w->id);
    pthread_setname_np(pthread_self(), name);
    pin(w);
    /* For the scheduler probes' TID filter (schedlat.h), once on the CPU it stays on. */
    atomic_store(&w->tid, (int)gettid());
    for (i = 0; i < w->nls; i++)
        uv_poll_start(&w->ls[i].poll, UV_READABLE, on_acceptable);
    if (w->id == 0)
        start_health_checks(w);
    uv_run(&w->loop, UV_RUN_DEFAULT);

    uv_mutex_lock(&w->lock);
    w->async_closed = 1;
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_mutex_unlock(&w->lock);
    run_calls(w);       /* those queued since the last wakeup still get their answer */
    leaked = coro_sched_free(w->sched);
    if (leaked)
        cg_error("%d coroutines still alive at exit", leaked);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop) != 0)
        cg_error("worker loop closed with handles still open");
    if (w->reserve_fd >= 0)
        close(w->reserve_fd);
    w->reserve_fd = -1;
}

/* Creates worker <w>'s loop, scheduler and listener sockets (bound in the main thread so
 * that errors surface before anything runs). */
static int worker_init(struct cg_daemon *d, struct cg_worker *w, unsigned id)
{
    const struct cg_config *cfg = d->cfg;
    /* track_ready: the coroutine ready-to-run delays of `show sched` (schedlat.h). */
    struct coro_sched_opts opts = { .stack_model = CORO_STACK_SHARED, .track_ready = 1 };
    unsigned i;
    int err;

    w->d = d;
    w->id = id;
    w->reserve_fd = -1;
    coro_list_init(&w->conns);
    coro_list_init(&w->checks);
    err = uv_loop_init(&w->loop);
    if (err < 0)
        return err;
    w->sched = coro_sched_new(&w->loop, &opts);
    if (!w->sched) {
        err = -errno;
        uv_loop_close(&w->loop);
        return err;
    }
    uv_mutex_init(&w->lock);
    uv_async_init(&w->loop, &w->async, on_request);
    w->async.data = w;
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    w->ls = calloc(cfg->nlisteners, sizeof(*w->ls));
    if (!w->ls && cfg->nlisteners)
        return -ENOMEM;
    w->nls = (unsigned)cfg->nlisteners;
    for (i = 0; i < w->nls; i++) {
        struct cg_wlistener *l = &w->ls[i];

        l->w = w;
        l->conf = &cfg->listeners[i];
        l->up = &d->ups[l->conf->upstream];
        l->fd = -1;
    }
    return 0;
}

static int bind_listeners(struct cg_daemon *d)
{
    const struct cg_config *cfg = d->cfg;
    unsigned i, k;
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
            uv_poll_init(&d->workers[k].loop, &l->poll, fd);
            l->poll.data = l;
            uv_timer_init(&d->workers[k].loop, &l->backoff);
            l->backoff.data = l;
        }
    }
    return 0;
}

static void worker_abandon(struct cg_worker *w)
{
    /* Start failed before the thread ran: close what init/bind created and the loop. */
    close_listeners(w);
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    coro_sched_free(w->sched);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    uv_mutex_destroy(&w->lock);
    if (w->reserve_fd >= 0)
        close(w->reserve_fd);
    free(w->ls);
}

int cg_daemon_start(struct cg_daemon *d)
{
    unsigned i, n = d->cfg->gw.workers;
    int err;

    d->ups = cg_upstreams_new(d->cfg, n);
    d->workers = calloc(n, sizeof(*d->workers));
    if (!d->ups || !d->workers) {
        err = -ENOMEM;
        goto out_free;
    }
    for (i = 0; i < n; i++) {
        err = worker_init(d, &d->workers[i], i);
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
        err = uv_thread_create(&d->workers[i].thread, worker_main, &d->workers[i]);
        if (err < 0) {
            cg_error("worker %u: cannot create thread: %s", i, uv_strerror(err));
            /* Those already running are stopped and joined; the rest abandoned. */
            d->nworkers = i;
            cg_daemon_request(d, CG_WREQ_STOP);
            cg_daemon_join(d);
            return err;
        }
    }
    return 0;

out_workers:
    for (i = 0; i < d->nworkers; i++)
        worker_abandon(&d->workers[i]);
    d->nworkers = 0;
out_free:
    free(d->workers);
    d->workers = NULL;
    cg_upstreams_free(d->ups, d->cfg->nupstreams);
    d->ups = NULL;
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
        free(d->workers[i].ls);
    }
    free(d->workers);
    d->workers = NULL;
    d->nworkers = 0;
    cg_upstreams_free(d->ups, d->cfg->nupstreams);
    d->ups = NULL;
}
