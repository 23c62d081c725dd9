/* gateway/core/conn.c — a connection's start, its upstream connect with retries, and its
 * end: the one place that releases what a connection holds (core/conn.h). */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "coro/io.h"
#include "coro/list.h"
#include "core/conn.h"
#include "core/reload.h"
#include "core/tls.h"
#include "core/upstream.h"
#include "guard/admission.h"
#include "base/counters.h"
#include "base/log.h"

static const struct coro_stream_names client_names = { "read client", "write client" };

/* ------------------------------------------------------------------ start and end */

/* Everything <c> holds, given back: its server's count, its streams (closing the socket),
 * the admission's slot and count, its generations, its memory. */
static void release(struct cg_conn *c)
{
    struct cg_worker *w = c->w;

    if (c->srv)
        atomic_fetch_sub(&c->srv->active, 1);
    if (c->up_inited)
        coro_stream_close(&c->up);
    coro_stream_close(&c->client);
    cg_iptable_release(w->d->adm->ipt, c->ip_slot);
    atomic_fetch_sub(&w->d->conns, 1);
    cg_gen_put(c->srv_gen);
    cg_gen_put(c->gen);
    free(c->peer_cert);
    coro_slab_free(&w->conn_slab, c);
}

int cg_conn_start(struct cg_wlistener *l, int fd, uint32_t ip_slot)
{
    struct cg_worker *w = l->w;
    void (*body)(void *) = l->conf->tls.on ? cg_tls_session         /* then the session */
                                           : w->d->proto.session[l->conf->mode];
    int one = 1, ws = l->conf->mode == CG_MODE_WEBSOCKET, err;
    struct cg_conn *c = coro_slab_alloc(&w->conn_slab);

    if (!c) {
        cg_iptable_release(w->d->adm->ipt, ip_slot);
        atomic_fetch_sub(&w->d->conns, 1);
        close(fd);
        return -ENOMEM;
    }
    coro_stream_init(w->sched, &c->client);
    c->client.names = &client_names;
    c->w = w;
    c->l = l;
    c->ip_slot = ip_slot;
    c->gen = cg_gen_get(w->gen);          /* the connection's settings, for its life */
    c->lc = l->conf;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* The stream owns fd (even when the open fails): closing it closes fd. */
    err = coro_stream_open(&c->client, fd);
    if (err == 0)
        err = body ? coro_spawn(w->sched, body, c, ws ? "ws session" : "tcp session",
                                &c->co) : -ENOSYS;
    if (err < 0) {
        release(c);
        return err;
    }
    coro_list_add_tail(&w->conns, &c->node);
    CG_STAT_ADD(w->stats.accepted, 1);
    CG_STAT_ADD(w->stats.active, 1);
    CG_STAT_ADD(l->stats.accepted, 1);
    CG_STAT_ADD(l->stats.active, 1);
    return 0;
}

void cg_conn_closing(struct cg_conn *c, enum cg_close_reason reason)
{
    if (c->reason == CG_CLOSE_NONE)
        c->reason = (uint8_t)reason;
}

const char *cg_close_reason_name(int reason)
{
    static const char *const names[CG_CLOSE_N] = {
        "none", "done", "client", "server", "idle", "handshake", "protocol", "no_server",
        "upstream", "local", "stopped", "error", "tls",
    };

    return reason >= 0 && reason < CG_CLOSE_N ? names[reason] : "?";
}

void cg_conn_end(struct cg_conn *c)
{
    struct cg_worker *w = c->w;

    cg_debug("listener %s: connection closed: %s", c->lc->name,
             cg_close_reason_name(c->reason));
    cg_worker_unlink(w, &c->node);
    CG_STAT_ADD(w->stats.active, (uint64_t)-1);
    CG_STAT_ADD(w->stats.closed, 1);
    CG_STAT_ADD(c->l->stats.active, (uint64_t)-1);
    release(c);
}

/* Moves connection <c>'s server accounting from generation <old> to <g>, when its server
 * is in <old> and <g> has it too: leastconn and max_connections_per_server then count it. */
void cg_conn_move_server(struct cg_conn *c, struct cg_gen *old, struct cg_gen *g)
{
    struct cg_gen *sg = c->srv_gen ? c->srv_gen : c->gen;
    struct cg_server *to;

    if (!c->srv || sg != old || !(to = c->srv->succ))
        return;
    atomic_fetch_add(&to->active, 1);
    atomic_fetch_sub(&c->srv->active, 1);
    c->srv = to;
    cg_gen_put(c->srv_gen);         /* never the last: the worker holds <old> */
    c->srv_gen = cg_gen_get(g);
}

/* ------------------------------------------------------------------ upstream connect */

static struct cg_ratelimit connect_log = CG_RATELIMIT_INIT(1000, 5);
static const struct coro_stream_names upstream_names = { "read upstream", "write upstream" };

/* 1 when a connect to a server is only half the story: a WebSocket backend must also
 * complete its handshake, and ws.c reports that outcome to the server's breaker. */
static int defers_report(const struct cg_conn *c)
{
    return c->lc->mode == CG_MODE_WEBSOCKET &&
           c->lc->upstream_protocol == CG_UPROTO_WEBSOCKET;
}

int cg_conn_connect_upstream(struct cg_conn *c, struct cg_upstream *up)
{
    const struct cg_upstream_conf *uc = up->conf;
    struct cg_worker *w = c->w;
    struct sockaddr_storage src;
    uint64_t tried = 0;
    unsigned attempt = 0, skipped = 0;
    uint64_t t0;
    int err = UV_EHOSTUNREACH, more, probe, tls_step;

    while (attempt <= uc->retries) {
        struct cg_server *srv = cg_upstream_pick(up, w->id, tried);

        if (!srv)
            break;
        if (srv->index < 64)
            tried |= 1ull << srv->index;
        /* Its pending connects full, or its probe taken, since it was picked: not a try. */
        if (cg_server_connect_begin(srv, uv_hrtime() / 1000000, &probe) < 0) {
            if (++skipped > up->nservers)
                break;
            continue;
        }
        attempt++;
        if (c->up_inited) {
            coro_stream_close(&c->up);
            c->up_inited = 0;
        }
        err = coro_stream_init(w->sched, &c->up);
        if (err < 0) {
            cg_server_connect_done(srv);
            cg_server_report(srv, -1, 0, NULL);
            atomic_fetch_add(&srv->local_errors, 1);
            CG_STAT_ADD(w->stats.upstream_local_errors, 1);
            cg_conn_closing(c, CG_CLOSE_LOCAL);
            return err;
        }
        c->up_inited = 1;
        c->up.names = &upstream_names;
        /* Counted before the connect so leastconn sees connections in progress too. */
        atomic_fetch_add(&srv->active, 1);
        t0 = uv_hrtime();
        err = coro_connect_from(&c->up, (const struct sockaddr *)&srv->conf->addr,
                                cg_upstream_source(up, w->id, srv, &src),
                                (int64_t)uc->connect_timeout_ms);
        cg_server_connect_done(srv);
        tls_step = err == 0 && cg_tls_upstream_on(c, up);
        if (tls_step)
            err = cg_tls_connect_upstream(c, up, srv->conf->name);
        if (err == 0) {
            cg_lat_hist_record(&w->stats.connect_lat, (uv_hrtime() - t0) / 1000);
            coro_stream_nodelay(&c->up, 1);
            atomic_fetch_add(&srv->connects, 1);
            if (!defers_report(c))
                cg_server_report(srv, 1, uv_hrtime() / 1000000, NULL);
            c->srv = srv;
            return 0;
        }
        atomic_fetch_sub(&srv->active, 1);
        if (err == UV_ECANCELED) {
            cg_server_report(srv, -1, 0, NULL);
            cg_conn_closing(c, CG_CLOSE_STOPPED);
            return err;
        }
        /* Our own shortage (descriptors, memory, ports) is not the server's failure, and
         * another server would meet the same shortage: counted apart, and given up. */
        if (cg_local_error(err)) {
            cg_server_report(srv, -1, 0, NULL);
            atomic_fetch_add(&srv->local_errors, 1);
            CG_STAT_ADD(w->stats.upstream_local_errors, 1);
            cg_log_ratelimited(&connect_log, CG_LOG_WARN, "upstream %s: connect() to %s: %s "
                               "(a shortage of ours, not counted against the server)",
                               uc->name, srv->conf->name, uv_strerror(err));
            cg_conn_closing(c, CG_CLOSE_LOCAL);
            return err;
        }
        cg_server_report(srv, 0, uv_hrtime() / 1000000, uv_strerror(err));
        atomic_fetch_add(&srv->connect_fails, 1);
        if (err == UV_ETIMEDOUT)
            atomic_fetch_add(&srv->connect_timeouts, 1);
        CG_STAT_ADD(w->stats.connect_fails, 1);
        more = attempt <= uc->retries && (unsigned)__builtin_popcountll(tried) < up->nservers;
        cg_log_ratelimited(&connect_log, CG_LOG_WARN, "upstream %s: %s %s: %s%s%s",
                           uc->name, tls_step ? "TLS handshake with" : "connect() to",
                           srv->conf->name, uv_strerror(err),
                           probe ? " (probe of an ejected server)" : "",
                           more ? ", trying another server" : "");
    }
    cg_conn_closing(c, CG_CLOSE_NO_SERVER);
    return err;
}
