/* gateway/core/upstream.c — server selection and health state. */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/chash.h"
#include "core/upstream.h"
#include "base/log.h"

struct cg_upstream *cg_upstreams_new(const struct cg_config *cfg, unsigned nworkers)
{
    struct cg_upstream *ups;
    size_t i, j;

    ups = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*ups));
    if (!ups)
        return NULL;
    for (i = 0; i < cfg->nupstreams; i++) {
        struct cg_upstream *up = &ups[i];
        const struct cg_upstream_conf *uc = &cfg->upstreams[i];

        up->conf = uc;
        up->nservers = (unsigned)uc->nservers;
        up->nworkers = nworkers;
        up->servers = calloc(uc->nservers, sizeof(*up->servers));
        up->wrr = calloc((size_t)nworkers * uc->nservers, sizeof(*up->wrr));
        up->rng = calloc(nworkers, sizeof(*up->rng));
        up->src_next = calloc((size_t)nworkers * 2, sizeof(*up->src_next));
        /* The ring is this generation's, read by every worker, never changed. */
        if (uc->balance == CG_BALANCE_HASH)
            up->ring = cg_chash_new(uc->servers, uc->nservers);
        if (!up->servers || !up->wrr || !up->rng || !up->src_next ||
            (uc->balance == CG_BALANCE_HASH && !up->ring)) {
            cg_upstreams_free(ups, i + 1);
            errno = ENOMEM;
            return NULL;
        }
        for (j = 0; j < uc->nservers; j++) {
            up->servers[j].conf = &uc->servers[j];
            up->servers[j].up = up;
            up->servers[j].index = (unsigned)j;
        }
        cg_upstream_breaker_set(up, &uc->brk);
        for (j = 0; j < nworkers; j++) { /* distinct, non-zero xorshift seeds */
            up->rng[j] = 0x9e3779b97f4a7c15ull * (j + 1) ^ ((uint64_t)i << 32) ^ 0x2545f491;
            /* workers start their rounds of the source addresses apart */
            up->src_next[2 * j] = (uint32_t)((uint64_t)j * uc->nsource4 / nworkers);
            up->src_next[2 * j + 1] = (uint32_t)((uint64_t)j * uc->nsource6 / nworkers);
        }
    }
    return ups;
}

void cg_upstreams_free(struct cg_upstream *ups, size_t n)
{
    size_t i;

    if (!ups)
        return;
    for (i = 0; i < n; i++) {
        free(ups[i].servers);
        free(ups[i].wrr);
        free(ups[i].rng);
        free(ups[i].src_next);
        cg_chash_free(ups[i].ring);
    }
    free(ups);
}

void cg_upstreams_apply(struct cg_upstream *ups, size_t n, const struct cg_config *cfg)
{
    size_t i, j;

    for (i = 0; ups && i < n; i++)
        for (j = 0; j < cfg->nupstreams; j++)
            if (strcmp(ups[i].conf->name, cfg->upstreams[j].name) == 0)
                cg_upstream_breaker_set(&ups[i], &cfg->upstreams[j].brk);
}

int cg_server_is_eligible(const struct cg_server *srv)
{
    const struct cg_upstream *up = srv->up;
    unsigned max = up->conf->max_connections_per_server;
    unsigned pmax = atomic_load_explicit(&up->max_pending, memory_order_relaxed);
    int brk = atomic_load_explicit(&srv->brk, memory_order_relaxed);

    if (atomic_load_explicit(&srv->down, memory_order_relaxed) ||
        atomic_load_explicit(&srv->state, memory_order_relaxed) != CG_SERVER_READY)
        return 0;
    /* Ejected: only once its cool-down is over, for the probe. */
    if (brk == CG_SRV_PROBING ||
        (brk == CG_SRV_EJECTED && uv_hrtime() / 1000000 <
                                  atomic_load_explicit(&srv->eject_until_ms,
                                                       memory_order_relaxed)))
        return 0;
    if (pmax && atomic_load_explicit(&srv->pending, memory_order_relaxed) >= pmax)
        return 0;
    return max == 0 || atomic_load_explicit(&srv->active, memory_order_relaxed) < max;
}

static int usable(const struct cg_server *srv, uint64_t tried)
{
    if (srv->index < 64 && (tried & (1ull << srv->index)))
        return 0;
    return cg_server_is_eligible(srv);
}

static uint64_t xorshift(uint64_t *state)
{
    uint64_t x = *state;

    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* nginx's smooth weighted round robin: every eligible server gains its weight, the
 * largest wins and pays the total back. Spreads a 5:1:1 weighting as a,a,b,a,c,a,a. */
static struct cg_server *pick_wrr(struct cg_upstream *up, unsigned worker, uint64_t tried)
{
    int *cur = &up->wrr[(size_t)worker * up->nservers];
    struct cg_server *best = NULL;
    int total = 0;
    unsigned i;

    for (i = 0; i < up->nservers; i++) {
        struct cg_server *srv = &up->servers[i];

        if (!usable(srv, tried))
            continue;
        cur[i] += (int)srv->conf->weight;
        total += (int)srv->conf->weight;
        if (!best || cur[i] > cur[best->index])
            best = srv;
    }
    if (best)
        cur[best->index] -= total;
    return best;
}

/* Fewest active connections relative to weight; ties go round the list from a rotating
 * start so that equal servers share the load. */
static struct cg_server *pick_leastconn(struct cg_upstream *up, unsigned worker,
                                        uint64_t tried)
{
    struct cg_server *best = NULL;
    uint64_t best_active = 0;
    unsigned i, start = (unsigned)(xorshift(&up->rng[worker]) % up->nservers);

    for (i = 0; i < up->nservers; i++) {
        struct cg_server *srv = &up->servers[(start + i) % up->nservers];
        uint64_t active;

        if (!usable(srv, tried))
            continue;
        /* active / weight, compared without division: a/w < b/v as a*v < b*w */
        active = atomic_load_explicit(&srv->active, memory_order_relaxed);
        if (!best || active * best->conf->weight < best_active * srv->conf->weight) {
            best = srv;
            best_active = active;
        }
    }
    return best;
}

/* Power of two random choices: two eligible servers at random (weighted), keep the less
 * loaded. Nearly as even as leastconn, without every worker herding onto one server. */
static struct cg_server *pick_random2(struct cg_upstream *up, unsigned worker, uint64_t tried)
{
    struct cg_server *cand[2] = { NULL, NULL };
    unsigned total = 0, i, k;

    for (i = 0; i < up->nservers; i++)
        if (usable(&up->servers[i], tried))
            total += up->servers[i].conf->weight;
    if (total == 0)
        return NULL;
    for (k = 0; k < 2; k++) {
        unsigned r = (unsigned)(xorshift(&up->rng[worker]) % total);

        for (i = 0; i < up->nservers; i++) {
            struct cg_server *srv = &up->servers[i];

            if (!usable(srv, tried))
                continue;
            if (r < srv->conf->weight) {
                cand[k] = srv;
                break;
            }
            r -= srv->conf->weight;
        }
    }
    if (!cand[1] || (cand[0] && atomic_load(&cand[0]->active) <= atomic_load(&cand[1]->active)))
        return cand[0];
    return cand[1];
}

struct pick_ctx {
    struct cg_upstream *up;
    uint64_t            tried;
};

static int on_ring_server(void *arg, unsigned server)
{
    struct pick_ctx *x = arg;

    return server < x->up->nservers && usable(&x->up->servers[server], x->tried);
}

struct cg_server *cg_upstream_pick_key(struct cg_upstream *up, unsigned worker, uint64_t tried,
                                       const uint64_t *key)
{
    struct pick_ctx x = { up, tried };
    int s;

    if (!key || !up->ring || up->conf->balance != CG_BALANCE_HASH)
        return cg_upstream_pick(up, worker, tried);
    if (up->nservers == 0 || worker >= up->nworkers)
        return NULL;
    s = cg_chash_walk(up->ring, *key, on_ring_server, &x);
    return s < 0 ? NULL : &up->servers[s];
}

struct cg_server *cg_upstream_pick(struct cg_upstream *up, unsigned worker, uint64_t tried)
{
    if (up->nservers == 0 || worker >= up->nworkers)
        return NULL;
    switch (up->conf->balance) {
    case CG_BALANCE_LEASTCONN:
        return pick_leastconn(up, worker, tried);
    case CG_BALANCE_RANDOM:
        return pick_random2(up, worker, tried);
    case CG_BALANCE_HASH:       /* no key: round robin, as HAProxy falls back */
    case CG_BALANCE_ROUNDROBIN:
    default:
        return pick_wrr(up, worker, tried);
    }
}

int cg_server_check_result(struct cg_server *srv, int ok)
{
    const struct cg_upstream_conf *uc = srv->up->conf;
    int down = atomic_load(&srv->down);

    if (ok) {
        srv->check_fails = 0;
        if (down && ++srv->check_oks >= uc->health_check_rise) {
            srv->check_oks = 0;
            atomic_store(&srv->down, 0);
            return 1;
        }
        return 0;
    }
    atomic_fetch_add(&srv->checks_failed, 1);
    srv->check_oks = 0;
    if (!down && ++srv->check_fails >= uc->health_check_fall) {
        srv->check_fails = 0;
        atomic_store(&srv->down, 1);
        return 1;
    }
    return 0;
}

static int same_addr(const struct cg_server_conf *a, const struct cg_server_conf *b)
{
    return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

#define CARRY(dst, src, field) \
    atomic_store(&(dst)->field, atomic_load(&(src)->field))

void cg_upstreams_carry(struct cg_upstream *ups, size_t n, struct cg_upstream *old,
                        size_t nold)
{
    size_t i, k;
    unsigned j, m;

    for (i = 0; i < n; i++) {
        struct cg_upstream *up = &ups[i];

        for (k = 0; k < nold && strcmp(old[k].conf->name, up->conf->name) != 0; k++)
            ;
        if (k == nold)
            continue;
        CARRY(up, &old[k], no_server);
        CARRY(up, &old[k], hash_fallbacks);
        for (j = 0; j < up->nservers; j++) {
            struct cg_server *s = &up->servers[j];

            for (m = 0; m < old[k].nservers; m++) {
                struct cg_server *o = &old[k].servers[m];

                if (!same_addr(s->conf, o->conf))
                    continue;
                CARRY(s, o, down);
                CARRY(s, o, state);
                CARRY(s, o, connects);
                CARRY(s, o, connect_fails);
                CARRY(s, o, connect_timeouts);
                CARRY(s, o, checks_failed);
                CARRY(s, o, local_errors);
                CARRY(s, o, eject_until_ms);
                /* A probe in flight belongs to the old generation: the new one probes
                 * again (ejected, cool-down over). */
                atomic_store(&s->brk, atomic_load(&o->brk) == CG_SRV_PROBING ?
                             CG_SRV_EJECTED : atomic_load(&o->brk));
                CARRY(s, o, consec_fails);
                CARRY(s, o, ejections);
                CARRY(s, o, restores);
                CARRY(s, o, probes_failed);
                o->succ = s;
                break;
            }
        }
    }
}

const struct sockaddr *cg_upstream_source(struct cg_upstream *up, unsigned worker,
                                          const struct cg_server *srv,
                                          struct sockaddr_storage *ss)
{
    const struct cg_upstream_conf *uc = up->conf;
    int fam = srv->conf->addr.ss_family;
    uint32_t total = fam == AF_INET ? uc->nsource4 : uc->nsource6;
    uint32_t k;
    size_t i;

    if (total == 0)
        return NULL;
    k = up->src_next[2 * worker + (fam == AF_INET6)]++ % total;
    for (i = 0; i < uc->nsources; i++) {
        const struct cg_source_range *r = &uc->sources[i];

        if (r->family != fam)
            continue;
        if (k < r->count)
            break;
        k -= r->count;
    }
    memset(ss, 0, sizeof(*ss));
    if (fam == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        uint32_t a;

        memcpy(&a, uc->sources[i].first, 4);
        sin->sin_family = AF_INET;
        sin->sin_addr.s_addr = htonl(ntohl(a) + k);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        unsigned char *b = sin6->sin6_addr.s6_addr;
        unsigned carry = k;
        int j;

        sin6->sin6_family = AF_INET6;
        memcpy(b, uc->sources[i].first, 16);
        for (j = 15; j >= 0 && carry; j--) {     /* b += k, big-endian */
            carry += b[j];
            b[j] = (unsigned char)carry;
            carry >>= 8;
        }
    }
    return (const struct sockaddr *)ss;
}

int cg_local_error(int err)
{
    return err == UV_EMFILE || err == UV_ENFILE || err == UV_ENOBUFS || err == UV_ENOMEM ||
           err == UV_EADDRNOTAVAIL || err == UV_EADDRINUSE;
}

/* ------------------------------------------------------------------ server breaker */

static struct cg_ratelimit server_log = CG_RATELIMIT_INIT(10000, 30);

const char *cg_srv_brk_name(int brk)
{
    static const char *const names[] = { "in", "ejected", "probing" };

    return brk >= 0 && brk <= CG_SRV_PROBING ? names[brk] : "?";
}


void cg_upstream_breaker_set(struct cg_upstream *up, const struct cg_srv_breaker_conf *uc)
{
    atomic_store(&up->max_pending, uc->max_pending);
    atomic_store(&up->eject_failures, uc->eject_failures);
    atomic_store(&up->eject_error_rate, uc->eject_error_rate);
    atomic_store(&up->eject_min_connects, uc->eject_min_connects);
    atomic_store(&up->eject_window_ms, uc->eject_window_ms);
    atomic_store(&up->eject_cooldown_ms, uc->eject_cooldown_ms);
}

int cg_server_connect_begin(struct cg_server *srv, uint64_t now_ms, int *probe)
{
    unsigned pmax = atomic_load_explicit(&srv->up->max_pending, memory_order_relaxed);
    int brk = atomic_load(&srv->brk);

    *probe = 0;
    if (brk == CG_SRV_PROBING)
        return -EAGAIN;
    if (brk == CG_SRV_EJECTED) {
        if (now_ms < atomic_load(&srv->eject_until_ms) ||
            !atomic_compare_exchange_strong(&srv->brk, &brk, CG_SRV_PROBING))
            return -EAGAIN;
        *probe = 1;
    }
    if (atomic_fetch_add(&srv->pending, 1) >= pmax && pmax) {
        atomic_fetch_sub(&srv->pending, 1);
        if (*probe)
            atomic_store(&srv->brk, CG_SRV_EJECTED);    /* its cool-down is over: next */
        *probe = 0;
        return -EBUSY;
    }
    return 0;
}

void cg_server_connect_done(struct cg_server *srv)
{
    atomic_fetch_sub(&srv->pending, 1);
}

/* Ejects <srv> for its cool-down from state <from> (in, or probing). Returns 1 when this
 * thread did it. */
static int eject(struct cg_server *srv, int from, uint64_t now_ms)
{
    uint64_t cool = atomic_load(&srv->up->eject_cooldown_ms);

    atomic_store(&srv->eject_until_ms, now_ms + cool);
    if (!atomic_compare_exchange_strong(&srv->brk, &from, CG_SRV_EJECTED))
        return 0;
    atomic_store(&srv->consec_fails, 0);
    return 1;
}

void cg_server_report(struct cg_server *srv, int ok, uint64_t now_ms, const char *what)
{
    struct cg_upstream *up = srv->up;
    unsigned fails, total, nfail, rate = atomic_load(&up->eject_error_rate);
    unsigned max_fails = atomic_load(&up->eject_failures);
    uint64_t start = atomic_load(&srv->win_start_ms), window = atomic_load(&up->eject_window_ms);
    uint64_t cool = atomic_load(&up->eject_cooldown_ms);
    int brk = atomic_load(&srv->brk);

    if (ok < 0) {
        /* Neither way: a probe is given back for the next connection to make. */
        if (brk == CG_SRV_PROBING)
            atomic_compare_exchange_strong(&srv->brk, &brk, CG_SRV_EJECTED);
        return;
    }
    if (brk == CG_SRV_PROBING) {
        if (ok) {
            atomic_store(&srv->consec_fails, 0);
            atomic_store(&srv->win_total, 0);
            atomic_store(&srv->win_fails, 0);
            atomic_store(&srv->win_start_ms, now_ms);
            if (atomic_compare_exchange_strong(&srv->brk, &brk, CG_SRV_IN)) {
                atomic_fetch_add(&srv->restores, 1);
                cg_log_ratelimited(&server_log, CG_LOG_NOTICE, "upstream %s: server %s "
                                   "restored: the probe connected", up->conf->name,
                                   srv->conf->name);
            }
        } else if (eject(srv, CG_SRV_PROBING, now_ms)) {
            atomic_fetch_add(&srv->probes_failed, 1);
            cg_log_ratelimited(&server_log, CG_LOG_WARN, "upstream %s: server %s still "
                               "failing (probe: %s); ejected for another %llu ms",
                               up->conf->name, srv->conf->name, what ? what : "failed",
                               (unsigned long long)cool);
        }
        return;
    }
    if (brk != CG_SRV_IN)
        return;         /* ejected meanwhile by another connection */

    /* The error-rate window: fixed windows, restarted by whoever sees it expired. */
    if (now_ms >= start + window && atomic_compare_exchange_strong(&srv->win_start_ms, &start,
                                                                   now_ms)) {
        atomic_store(&srv->win_total, 0);
        atomic_store(&srv->win_fails, 0);
    }
    total = atomic_fetch_add(&srv->win_total, 1) + 1;
    nfail = ok ? atomic_load(&srv->win_fails) : atomic_fetch_add(&srv->win_fails, 1) + 1;
    if (ok) {
        atomic_store(&srv->consec_fails, 0);
        return;
    }
    fails = atomic_fetch_add(&srv->consec_fails, 1) + 1;
    if (max_fails && fails >= max_fails) {
        if (eject(srv, CG_SRV_IN, now_ms)) {
            atomic_fetch_add(&srv->ejections, 1);
            cg_log_ratelimited(&server_log, CG_LOG_WARN, "upstream %s: server %s ejected "
                               "for %llu ms: %u consecutive failures (last: %s)",
                               up->conf->name, srv->conf->name, (unsigned long long)cool,
                               fails, what ? what : "failed");
        }
        return;
    }
    if (rate && total >= atomic_load(&up->eject_min_connects) &&
        (uint64_t)nfail * 100 >= (uint64_t)rate * total && eject(srv, CG_SRV_IN, now_ms)) {
        atomic_fetch_add(&srv->ejections, 1);
        cg_log_ratelimited(&server_log, CG_LOG_WARN, "upstream %s: server %s ejected for "
                           "%llu ms: %u of %u connects failed in %llu ms (last: %s)",
                           up->conf->name, srv->conf->name, (unsigned long long)cool, nfail,
                           total, (unsigned long long)window, what ? what : "failed");
    }
}
