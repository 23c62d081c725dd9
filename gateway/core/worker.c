/* gateway/core/worker.c — worker threads, their listeners, accepting, stopping.
 *
 * Accepting is ours, not libuv's uv_listen(): each worker watches its own SO_REUSEPORT
 * socket with a uv_poll_t and calls accept4() a bounded number of times per wakeup. That
 * lets a worker stop watching the socket for a moment when the process runs out of file
 * descriptors (EMFILE/ENFILE), as nginx does, instead of being woken again at once for
 * the same pending connection: the loop cannot spin. One pending connection is shed by
 * spending a reserve descriptor, so the client learns at once rather than at its timeout.
 *
 * Each accepted connection then goes through admission (admission.h, breaker.h) before a
 * coroutine exists: the breaker's state (one atomic load while closed), the client
 * address's bucket and quota, the listener's bucket, the worker's and the daemon's
 * connection quotas. A refused connection is closed at once (or reset) on a TCP listener;
 * a websocket listener answers it 429 or 503 from a small coroutine that reads only the
 * request. Worker 0's breaker timer samples memory and descriptors, moves the breaker
 * along and ends the admission log's refusal episodes.
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
#include <time.h>
#include <unistd.h>

#include <dirent.h>

#include "guard/admission.h"
#include "guard/breaker.h"
#include "coro/io.h"
#include "coro/list.h"
#include "base/cidr.h"
#include "base/log.h"
#include "core/conn.h"
#include "core/health.h"
#include "core/gen.h"
#include "core/worker.h"

#define ACCEPTS_PER_WAKEUP 64
#define EMFILE_PAUSE_MS    100

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

static struct cg_ratelimit emfile_log = CG_RATELIMIT_INIT(10000, 1);

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
        /* At the limit this pauses ten times a second: a line every few seconds tells the
         * operator as much (the count is in accept_errors{reason="emfile"}). */
        cg_log_ratelimited(&emfile_log, CG_LOG_WARN, "listener %s: accept(): %s; shedding "
                           "connections for %d ms", l->conf->name, strerror(-err),
                           EMFILE_PAUSE_MS);
        l->paused = 1;
        uv_poll_stop(&l->poll);
        uv_timer_start(&l->backoff, on_backoff_done, EMFILE_PAUSE_MS, 0);
    }
}

/* ------------------------------------------------------------------ admission */

#define NS_PER_MS 1000000ull

/* Asks admission about a connection from <peer> to <l> (guard/admission.h). With
 * accept_proxy the socket's peer is the front balancer, not the client: the per-address
 * checks wait for the header (core/conn.c), everything else is decided here. */
static void admit(struct cg_wlistener *l, const struct sockaddr *peer, struct cg_verdict *v)
{
    struct cg_worker *w = l->w;
    struct cg_daemon *d = w->d;

    if (!l->adm)    /* the listener's first connection (since the start or a reload) */
        l->adm = cg_admission_listener(d->adm, l->conf->name);
    cg_admit(d->adm, l->adm, d->brk, &d->conns,
             atomic_load_explicit(&w->stats.active, memory_order_relaxed),
             l->conf->accept_proxy ? NULL : peer, v);
}

static struct cg_ratelimit untrusted_log = CG_RATELIMIT_INIT(10000, 5);

/* accept_proxy_from: 1 when <peer> may send <l> a PROXY header; else counts it, logs it
 * (rate-limited) and closes <fd>, as cheaply as an admission refusal. */
static int proxy_source_ok(struct cg_wlistener *l, int fd, const struct sockaddr *peer)
{
    const struct cg_listener_conf *lc = l->conf;
    char who[INET6_ADDRSTRLEN] = "?";

    if (!lc->accept_proxy || !lc->nproxy_from ||
        (peer && cg_cidr_list_match(lc->proxy_from, lc->nproxy_from, peer)))
        return 1;
    CG_STAT_ADD(l->w->stats.proxy_rejected[CG_PPR_UNTRUSTED], 1);
    CG_STAT_ADD(l->stats.proxy_rejected[CG_PPR_UNTRUSTED], 1);
    if (peer && peer->sa_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)peer, who, sizeof(who));
    else if (peer && peer->sa_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)peer, who, sizeof(who));
    cg_log_ratelimited(&untrusted_log, CG_LOG_WARN, "listener %s: connection from %s "
                       "refused: not in accept_proxy_from", lc->name, who);
    cg_reject_fd(fd, CG_REJECT_CLOSE);
    return 0;
}

/* Refuses <fd> as <v> says: counted, logged when an episode starts, then closed (or reset)
 * on a TCP listener, answered 429/503 on a websocket one while the worker answers fewer
 * than max_rejecting at once. */
static void refuse(struct cg_wlistener *l, int fd, const struct cg_verdict *v,
                   const struct sockaddr *peer)
{
    struct cg_worker *w = l->w;
    struct cg_admission *a = w->d->adm;
    struct cg_adm_listener *al = l->adm;     /* found by admit() */

    if (v->reason == CG_REJ_MAX_CONNS) {
        CG_STAT_ADD(w->stats.rejected_max, 1);
        CG_STAT_ADD(l->stats.rejected_max, 1);
    } else {
        CG_STAT_ADD(w->stats.rejected[v->reason], 1);
        CG_STAT_ADD(l->stats.rejected[v->reason], 1);
    }
    if (al && cg_admission_note(a, al, v->reason, uv_hrtime() / NS_PER_MS))
        cg_admission_log_refusal(a, al, w->d->brk, l->conf->name, v, peer);
    /* A WebSocket client is answered (429, 503) while the worker answers fewer than
     * max_rejecting at once; the protocol room owns the answer. */
    if (l->conf->mode == CG_MODE_WEBSOCKET && w->d->proto.refuse &&
        w->rejecting < atomic_load_explicit(&a->max_rejecting, memory_order_relaxed) &&
        w->d->proto.refuse(l, fd, v->reason, v->retry_s) == 0)
        return;
    cg_reject_fd(fd, al ? (enum cg_reject_how)atomic_load_explicit(&al->reject,
                                                                   memory_order_relaxed)
                        : CG_REJECT_CLOSE);
}

static void start_conn(struct cg_wlistener *l, int fd, const struct sockaddr *peer)
{
    struct cg_verdict v;

    if (!proxy_source_ok(l, fd, peer))
        return;
    admit(l, peer, &v);
    if (v.reason >= 0) {
        refuse(l, fd, &v, peer);
        return;
    }
    /* Admitted: the connection takes over the count and the slot (core/conn.h). */
    if (cg_conn_start(l, fd, v.ip_slot) < 0)
        CG_STAT_ADD(l->w->stats.accept_errors, 1);
}

static void on_acceptable(uv_poll_t *p, int status, int events)
{
    struct cg_wlistener *l = p->data;
    struct sockaddr_storage peer;
    socklen_t len;
    int i, fd;

    if (status < 0) {
        cg_error("listener %s: poll: %s", l->conf->name, uv_strerror(status));
        return;
    }
    for (i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        len = sizeof(peer);
        fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0) {
            start_conn(l, fd, len > 0 && len <= sizeof(peer) ? (struct sockaddr *)&peer
                                                             : NULL);
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

int cg_wlistener_watch(struct cg_wlistener *l, uv_loop_t *loop)
{
    int err = uv_poll_init(loop, &l->poll, l->fd);

    if (err < 0)
        return err;
    l->poll.data = l;
    uv_timer_init(loop, &l->backoff);
    l->backoff.data = l;
    l->handles = 1;
    return 0;
}

void cg_wlistener_accept(struct cg_wlistener *l)
{
    uv_poll_start(&l->poll, UV_READABLE, on_acceptable);
}

/* Accepts what is queued on <l>, a socket about to close, so that nothing already queued
 * is refused: bounded by the queue's length. */
void cg_wlistener_accept_queued(struct cg_wlistener *l)
{
    unsigned i, n = 1 + l->conf->backlog / ACCEPTS_PER_WAKEUP;

    for (i = 0; i < n && l->fd >= 0 && !l->paused; i++)
        on_acceptable(&l->poll, 0, UV_READABLE);
}

/* ------------------------------------------------------------------ breaker timer */

/* Descriptors open now, from /proc/self/fd (only while there are few). */
static uint64_t count_fds(void)
{
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    uint64_t n = 0;

    if (!dir)
        return 0;
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(dir);
    return n ? n - 1 : 0;       /* less the directory's own */
}

/* Worker 0, every check_interval: samples memory and descriptors, moves the breaker
 * along, ends the admission log's refusal episodes. Descriptors are estimated (counting
 * them at a million connections would cost too much): those open before the first
 * connection, and two per client connection (its own, and its server's or connect's). */
static void on_brk_timer(uv_timer_t *t)
{
    struct cg_worker *w = t->data;
    struct cg_daemon *d = w->d;
    struct cg_breaker *b = d->brk;
    uint64_t now_ms = uv_hrtime() / NS_PER_MS, conns, wmax = 0, a, iv;
    unsigned i, use, each[CG_BRKW_NRES];
    int res;

    conns = atomic_load(&d->conns);
    if (d->fd_base == 0) {
        a = count_fds();
        d->fd_base = a > 2 * conns ? a - 2 * conns : 1;
    }
    cg_breaker_sample(b, d->fd_base + 2 * conns);
    for (i = 0; i < d->nworkers; i++) {
        a = atomic_load_explicit(&d->workers[i].stats.active, memory_order_relaxed);
        if (a > wmax)
            wmax = a;
    }
    use = cg_breaker_use(b, conns, wmax, &res, each);
    for (i = 0; i < CG_BRKW_NRES; i++)
        atomic_store_explicit(&b->use[i], each[i], memory_order_relaxed);
    cg_breaker_tick(b, use, res, now_ms);
    cg_admission_tick(d->adm, now_ms);
    iv = atomic_load(&b->check_interval_ms);
    if (iv != uv_timer_get_repeat(t))
        uv_timer_set_repeat(t, iv);
}

/* ------------------------------------------------------------------ liveness */

/* What the counters of connections whose listener a reload removed belong to
 * (w->retired); never used to accept. */
static const struct cg_listener_conf retired_conf = {
    .name = "(removed by reload)",
    .max_header_size = 8192,
};

/* Event-loop lag. libuv runs check handles newest first, so lag_check, started after the
 * scheduler's own check handle (coro_sched_new()), runs before the ready coroutines do: it
 * marks the return from poll. lag_prepare marks the entry into the next poll; in between ran
 * the iteration's check callbacks (coroutines), closes, timers, pending and idle callbacks. */
static void on_lag_check(uv_check_t *h)
{
    struct cg_worker *w = h->data;

    w->lag_start_ns = uv_hrtime();
}

static void on_lag_prepare(uv_prepare_t *h)
{
    struct cg_worker *w = h->data;

    if (w->lag_start_ns)
        cg_log2_hist_record(&w->stats.loop_busy, uv_hrtime() - w->lag_start_ns);
    w->lag_start_ns = 0;
}

static void on_beat(uv_timer_t *t)
{
    struct cg_worker *w = t->data;

    CG_STAT_ADD(w->beats, 1);
}

struct stall {
    struct cg_wcall call;
    unsigned        ms;
};

static void do_stall(struct cg_worker *w, struct cg_wcall *call)
{
    struct stall *st = (struct stall *)call;
    struct timespec ts = { st->ms / 1000, (long)(st->ms % 1000) * 1000000L };

    cg_warn("debug: worker %u stalls for %u ms (test hook)", w->id, st->ms);
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
    cg_warn("debug: worker %u runs again", w->id);
    free(st);
}

int cg_worker_stall(struct cg_worker *w, unsigned ms)
{
    struct stall *st = calloc(1, sizeof(*st));
    int err;

    if (!st)
        return -ENOMEM;
    st->call.fn = do_stall;
    st->ms = ms;
    err = cg_worker_call(w, &st->call);
    if (err < 0)
        free(st);
    return err;
}

/* ------------------------------------------------------------------ drain spread */

static int is_ws(const struct cg_conn *c)
{
    return c->lc && c->lc->mode == CG_MODE_WEBSOCKET;
}

/* Sends the websocket connections due by now their 1001 (a cancel: ws.c closes it). */
static void spread_step(struct cg_worker *w)
{
    uint64_t spread = w->gen->cfg->gw.drain_spread_ms;
    uint64_t el = uv_now(&w->loop) - w->spread_start, due = w->spread_total;

    if (spread && el < spread)
        due = ((uint64_t)w->spread_total * el + spread - 1) / spread;
    while (w->spread_done < due && w->spread_next && w->spread_next != &w->conns) {
        struct cg_conn *c = coro_list_entry(w->spread_next, struct cg_conn, node);

        w->spread_next = w->spread_next->next;
        if (!is_ws(c) || !c->co)
            continue;
        w->spread_done++;
        coro_cancel(c->co);
    }
    if (w->spread_done >= w->spread_total || !w->spread_next || w->spread_next == &w->conns) {
        w->spread_next = NULL;
        if (uv_is_active((uv_handle_t *)&w->spread_timer))
            uv_timer_stop(&w->spread_timer);
    }
}

static void on_spread(uv_timer_t *t)
{
    spread_step(t->data);
}

static void start_spread(struct cg_worker *w)
{
    uint64_t spread = w->gen->cfg->gw.drain_spread_ms, tick;
    struct coro_list *n;
    char dur[32];

    w->spread_total = w->spread_done = 0;
    for (n = w->conns.next; n != &w->conns; n = n->next)
        if (is_ws(coro_list_entry(n, struct cg_conn, node)))
            w->spread_total++;
    if (w->spread_total == 0)
        return;
    if (spread)
        cg_notice("drain: %u websocket connections get 1001 over %s", w->spread_total,
                  cg_format_duration(spread, dur, sizeof(dur)));
    w->spread_start = uv_now(&w->loop);
    w->spread_next = w->conns.next;
    spread_step(w);
    if (!w->spread_next)
        return;
    tick = spread / 100 < 10 ? 10 : spread / 100 > 1000 ? 1000 : spread / 100;
    uv_timer_start(&w->spread_timer, on_spread, tick, tick);
    uv_unref((uv_handle_t *)&w->spread_timer);
}

/* ------------------------------------------------------------------ stopping */

static void close_listeners(struct cg_worker *w)
{
    unsigned i;

    for (i = 0; i < w->nwls; i++) {
        struct cg_wlistener *l = &w->wls[i];

        if (l->fd < 0)
            continue;
        if (l->handles) {
            uv_close((uv_handle_t *)&l->poll, NULL);
            uv_close((uv_handle_t *)&l->backoff, NULL);
            l->handles = 0;
        }
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
    for (n = w->refusing.next; n != &w->refusing; n = n->next) {
        struct cg_conn *c = coro_list_entry(n, struct cg_conn, node);

        if (c->co)
            coro_cancel(c->co);
    }
    cg_health_stop(w);
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
        uv_timer_stop(&w->brk_timer);
        if (how == CG_WREQ_DRAIN)
            start_spread(w);
        /* Health checks stop with the listeners; connections get the drain time. */
        cg_health_stop(w);
    }
    if (how == CG_WREQ_STOP) {
        if (uv_is_active((uv_handle_t *)&w->spread_timer))
            uv_timer_stop(&w->spread_timer);
        cancel_all(w);
        if (uv_is_active((uv_handle_t *)&w->drain_timer))
            uv_timer_stop(&w->drain_timer);
    } else if (!uv_is_active((uv_handle_t *)&w->drain_timer)) {
        uv_timer_start(&w->drain_timer, on_drain_timeout, w->gen->cfg->gw.drain_timeout_ms,
                       0);
    }
    uv_unref((uv_handle_t *)&w->drain_timer);   /* it must not keep an idle loop alive */
}

/* ------------------------------------------------------------------ the thread */

static void pin(struct cg_worker *w)
{
    cpu_set_t set;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    int err;

    if (!w->gen->cfg->gw.cpu_pinning || ncpu <= 0) {
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

/* Closes the worker's own handles (timers, loop-lag watchers) and its listeners. */
static void close_handles(struct cg_worker *w)
{
    uv_close((uv_handle_t *)&w->drain_timer, NULL);
    uv_close((uv_handle_t *)&w->brk_timer, NULL);
    uv_close((uv_handle_t *)&w->beat, NULL);
    uv_close((uv_handle_t *)&w->spread_timer, NULL);
    uv_close((uv_handle_t *)&w->lag_check, NULL);
    uv_close((uv_handle_t *)&w->lag_prepare, NULL);
    close_listeners(w);
}

void cg_worker_main(void *arg)
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
    for (i = 0; i < w->nwls; i++)
        cg_wlistener_accept(&w->wls[i]);
    uv_timer_start(&w->beat, on_beat, 0, w->d->beat_ms ? w->d->beat_ms : 1000);
    uv_unref((uv_handle_t *)&w->beat);
    if (w->id == 0) {
        cg_health_start(w);
        uv_timer_start(&w->brk_timer, on_brk_timer, atomic_load(&w->d->brk->check_interval_ms),
                       atomic_load(&w->d->brk->check_interval_ms));
    }
    uv_mutex_lock(&w->d->start_lock);       /* cg_daemon_start() waits for every worker */
    w->d->started++;
    uv_cond_signal(&w->d->start_cond);
    uv_mutex_unlock(&w->d->start_lock);
    uv_run(&w->loop, UV_RUN_DEFAULT);

    uv_mutex_lock(&w->lock);
    w->async_closed = 1;
    uv_close((uv_handle_t *)&w->async, NULL);
    uv_mutex_unlock(&w->lock);
    run_calls(w);       /* those queued since the last wakeup still get their answer */
    leaked = coro_sched_free(w->sched);
    if (w->d->proto.worker_end)
        w->d->proto.worker_end();       /* the protocols' per-worker caches */
    if (leaked)
        cg_error("%d coroutines still alive at exit", leaked);
    if (coro_slab_destroy(&w->conn_slab) || coro_slab_destroy(&w->conn_pp_slab) ||
        coro_slab_destroy(&w->sess_slab))
        cg_error("connections still allocated at exit");
    close_handles(w);               /* the listeners: a stop before any drain leaves none */
    uv_run(&w->loop, UV_RUN_DEFAULT);
    cg_gen_put(w->gen);
    w->gen = NULL;
    if (uv_loop_close(&w->loop) != 0)
        cg_error("worker loop closed with handles still open");
    if (w->reserve_fd >= 0)
        close(w->reserve_fd);
    w->reserve_fd = -1;
}

int cg_worker_init(struct cg_daemon *d, struct cg_worker *w, unsigned id)
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
    coro_slab_init(&w->conn_slab, sizeof(struct cg_conn));
    coro_slab_init(&w->conn_pp_slab, sizeof(struct cg_conn) + sizeof(union cg_conn_addr));
    coro_slab_init(&w->sess_slab, d->proto.sess_size);
    coro_list_init(&w->refusing);
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
    uv_timer_init(&w->loop, &w->brk_timer);
    w->brk_timer.data = w;
    uv_timer_init(&w->loop, &w->beat);
    w->beat.data = w;
    uv_timer_init(&w->loop, &w->spread_timer);
    w->spread_timer.data = w;
    /* After coro_sched_new(): see on_lag_check(). Neither keeps the loop alive. */
    uv_check_init(&w->loop, &w->lag_check);
    w->lag_check.data = w;
    uv_check_start(&w->lag_check, on_lag_check);
    uv_unref((uv_handle_t *)&w->lag_check);
    uv_prepare_init(&w->loop, &w->lag_prepare);
    w->lag_prepare.data = w;
    uv_prepare_start(&w->lag_prepare, on_lag_prepare);
    uv_unref((uv_handle_t *)&w->lag_prepare);
    w->gen = cg_gen_get(d->gen);
    w->retired.w = w;
    w->retired.conf = &retired_conf;
    w->retired.fd = -1;
    w->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    w->ls = calloc(cfg->nlisteners, sizeof(*w->ls));
    if (!w->ls && cfg->nlisteners)
        return -ENOMEM;
    w->nls = (unsigned)cfg->nlisteners;
    w->wls = w->ls;
    w->nwls = w->nls;
    for (i = 0; i < w->nls; i++) {
        struct cg_wlistener *l = &w->ls[i];

        l->w = w;
        l->index = i;
        l->conf = &cfg->listeners[i];
        l->up = &d->ups[l->conf->upstream];
        l->fd = -1;
    }
    return 0;
}

void cg_worker_abandon(struct cg_worker *w)
{
    /* Start failed before the thread ran: close what init/bind created and the loop. */
    uv_close((uv_handle_t *)&w->async, NULL);
    close_handles(w);
    coro_sched_free(w->sched);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    uv_mutex_destroy(&w->lock);
    if (w->reserve_fd >= 0)
        close(w->reserve_fd);
    free(w->ls);
    cg_gen_put(w->gen);
    w->gen = NULL;
}
