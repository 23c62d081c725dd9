/* gateway/core/health.c — active health checks: one coroutine per server on worker 0, a
 * TCP connect every health_check_interval from the upstream's source addresses; rise and
 * fall move the server's health (core/upstream.h). A check that corogate could not make
 * (its own shortage of descriptors, memory or ports) counts neither way. */
#include <stdlib.h>

#include "coro/io.h"
#include "coro/list.h"
#include "core/health.h"
#include "core/types.h"
#include "core/gen.h"
#include "core/upstream.h"
#include "base/proxy-proto.h"
#include "base/log.h"


static struct cg_ratelimit check_log = CG_RATELIMIT_INIT(10000, 5);

struct check {
    struct coro_stream st;        /* heap: a pending connect may outlive a parked stack */
    struct coro_list   node;
    struct cg_server  *srv;
    struct cg_gen     *gen;       /* srv's */
    struct coro       *co;
};

/* A server that expects a PROXY header gets one on a check too, saying that the check is
 * ours and carries no client (v2 LOCAL, v1 UNKNOWN), as HAProxy's check-send-proxy does:
 * else a strict server counts each check as a protocol error. Returns 0 or a write error. */
static int proxy_local(struct check *ck, const struct cg_upstream_conf *uc)
{
    int v = ck->srv->conf->send_proxy >= 0 ? ck->srv->conf->send_proxy : uc->send_proxy;
    uint8_t buf[CG_PP_V2_MIN];
    int n;

    if (!v)
        return 0;
    n = v == 1 ? cg_pp_build_v1((char *)buf, sizeof(buf), NULL, NULL)
               : cg_pp_build_v2(buf, sizeof(buf), NULL, NULL, NULL, 0);
    if (n < 0)
        return UV_EINVAL;
    return coro_write_copy(&ck->st, buf, (size_t)n, (int64_t)uc->health_check_timeout_ms);
}

static void health_check(void *arg)
{
    struct check *ck = arg;
    struct cg_server *srv = ck->srv;
    const struct cg_upstream_conf *uc = srv->up->conf;
    struct sockaddr_storage src;
    int err;

    ck->co = coro_self();
    for (;;) {
        if (coro_sleep(uc->health_check_interval_ms) == UV_ECANCELED)
            break;
        if (atomic_load_explicit(&srv->state, memory_order_relaxed) == CG_SERVER_MAINT)
            continue;
        err = coro_stream_init(coro_sched_current(), &ck->st);
        if (err == 0) {
            /* From the upstream's source addresses too: a check must test the path the
             * connections take. Worker 0 runs the checks (cg_health_start()). */
            err = coro_connect_from(&ck->st, (const struct sockaddr *)&srv->conf->addr,
                                    cg_upstream_source(srv->up, 0, srv, &src),
                                    (int64_t)uc->health_check_timeout_ms);
            if (err == 0)
                err = proxy_local(ck, uc);
            coro_stream_close(&ck->st);
        }
        if (err == UV_ECANCELED)
            break;
        /* A check we could not make (no descriptor, no memory, no local port) says nothing
         * about the server: its health stays as it was (issue: a healthy server was marked
         * DOWN at our open-files limit and stayed DOWN after it). */
        if (cg_local_error(err)) {
            atomic_fetch_add(&srv->local_errors, 1);
            cg_log_ratelimited(&check_log, CG_LOG_WARN, "upstream %s: health check of %s "
                               "not made: %s (a shortage of ours, not counted against the "
                               "server)", uc->name, srv->conf->name, uv_strerror(err));
            continue;
        }
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
    cg_gen_put(ck->gen);
    free(ck);
}

void cg_health_start(struct cg_worker *w)
{
    struct cg_gen *g = w->gen;
    size_t i, j;

    for (i = 0; i < g->cfg->nupstreams; i++) {
        struct cg_upstream *up = &g->ups[i];

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
            ck->gen = cg_gen_get(g);
            coro_list_init(&ck->node);
            coro_list_add_tail(&w->checks, &ck->node);
        }
    }
}

void cg_health_stop(struct cg_worker *w)
{
    struct coro_list *n;

    for (n = w->checks.next; n != &w->checks; n = n->next) {
        struct check *ck = coro_list_entry(n, struct check, node);

        if (ck->co)
            coro_cancel(ck->co);
    }
}
