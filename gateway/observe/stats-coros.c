/* gateway/observe/stats-coros.c — requests the workers answer on their own threads: the
 * coroutine dump of `show coros` (the longest-parked first, kept in a bounded heap per
 * worker) and the coroutine census that `show stats`, `show metrics` and GET /metrics
 * carry. One part per worker goes out through cg_worker_call(); stats.c writes the answer
 * when every part is back or CALL_TIMEOUT_MS has passed. */
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
#include "base/log.h"
#include "core/conn.h"
#include "core/gen.h"
#include "observe/schedlat.h"
#include "observe/stats.h"
#include "observe/stats-int.h"
#include "core/upstream.h"
#include "core/worker.h"


/* ------------------------------------------------------------------ show coros */

/* Which of two items ranks first: longer parked, then older. */
static int item_before(const struct coro_item *a, const struct coro_item *b)
{
    if (a->parked_ms != b->parked_ms)
        return a->parked_ms > b->parked_ms;
    return a->age_ms > b->age_ms;
}

struct collect {
    struct coros_call *cc;
    uint64_t           now;
};

/* Keeps the <want> best items as a heap whose root is the worst kept. */
static void heap_sift_down(struct coro_item *h, unsigned n, unsigned i)
{
    struct coro_item tmp;

    for (;;) {
        unsigned l = 2 * i + 1, r = l + 1, worst = i;

        if (l < n && item_before(&h[worst], &h[l]))
            worst = l;
        if (r < n && item_before(&h[worst], &h[r]))
            worst = r;
        if (worst == i)
            return;
        tmp = h[i];
        h[i] = h[worst];
        h[worst] = tmp;
        i = worst;
    }
}

static void heap_sift_up(struct coro_item *h, unsigned i)
{
    struct coro_item tmp;

    while (i > 0) {
        unsigned p = (i - 1) / 2;

        if (!item_before(&h[p], &h[i]))
            return;
        tmp = h[i];
        h[i] = h[p];
        h[p] = tmp;
        i = p;
    }
}

static int on_coro(const struct coro_info *ci, void *ud)
{
    struct collect *col = ud;
    struct coros_call *cc = col->cc;
    struct coro_item it;
    uint64_t parked_ms;
    int stalled;

    parked_ms = ci->state == CORO_PARKED && col->now > ci->park_since_ms ?
                col->now - ci->park_since_ms : 0;
    stalled = cg_coro_census_add(&cc->census, ci->state == CORO_PARKED, ci->park_reason,
                                 parked_ms);
    if (cc->want == 0)
        return 0;
    memset(&it, 0, sizeof(it));
    it.id = ci->id;
    it.name = ci->name;
    it.reason = ci->park_reason;
    it.state = (int)ci->state;
    it.parked_ms = parked_ms;
    it.stalled = stalled;
    it.age_ms = col->now > ci->spawned_ms ? col->now - ci->spawned_ms : 0;
    it.stack_saved = ci->stack_saved;
    it.arg = ci->arg;
    if (cc->n < cc->want) {
        cc->items[cc->n] = it;
        heap_sift_up(cc->items, cc->n++);
    } else if (item_before(&it, &cc->items[0])) {
        cc->items[0] = it;
        heap_sift_down(cc->items, cc->n, 0);
    }
    return 0;
}

static int cmp_item(const void *a, const void *b)
{
    const struct coro_item *x = a, *y = b;

    return item_before(x, y) ? -1 : item_before(y, x) ? 1 : 0;
}

static int cmp_arg(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)(*(const struct coro_item *const *)a)->arg;
    uintptr_t y = (uintptr_t)(*(const struct coro_item *const *)b)->arg;

    return x < y ? -1 : x > y;
}

static void format_peer(const struct sockaddr_storage *ss, char *buf, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

        uv_ip4_name(in, host, sizeof(host));
        snprintf(buf, size, "%s:%u", host, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

        uv_ip6_name(in6, host, sizeof(host));
        snprintf(buf, size, "[%s]:%u", host, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, size, "?");
    }
}

/* Labels the items whose coroutine argument is one of <w>'s connections: the argument is
 * dereferenced only once found in w->conns, so other coroutines' arguments stay opaque. */
static void label_conns(struct cg_worker *w, struct coros_call *cc)
{
    struct coro_item **by_arg;
    struct coro_list *node;
    unsigned i;

    if (cc->n == 0)
        return;
    by_arg = malloc(cc->n * sizeof(*by_arg));
    if (!by_arg)
        return;
    for (i = 0; i < cc->n; i++)
        by_arg[i] = &cc->items[i];
    qsort(by_arg, cc->n, sizeof(*by_arg), cmp_arg);
    for (node = w->conns.next; node != &w->conns; node = node->next) {
        struct cg_conn *c = coro_list_entry(node, struct cg_conn, node);
        struct coro_item key = { .arg = c }, *kp = &key, **hit;
        struct sockaddr_storage ss;
        char peer[INET6_ADDRSTRLEN + 8];

        hit = bsearch(&kp, by_arg, cc->n, sizeof(*by_arg), cmp_arg);
        if (!hit)
            continue;
        /* The client as a PROXY header carried it, else the socket's peer. */
        if (cg_conn_client_addr(c, &ss) < 0)
            ss.ss_family = AF_UNSPEC;
        format_peer(&ss, peer, sizeof(peer));
        snprintf((*hit)->label, sizeof((*hit)->label), "peer=%s listener=%s server=%s", peer,
                 c->l->conf->name, c->srv ? c->srv->conf->name : "-");
    }
    free(by_arg);
}

/* Runs on worker <w>'s thread: fills its part and hands it back to the main thread. */
static void collect_coros(struct cg_worker *w, struct cg_wcall *call)
{
    struct coros_call *cc = (struct coros_call *)call;
    struct cg_stats *st = cc->st;
    struct collect col = { cc, uv_now(&w->loop) };

    cc->census.answered = 1;
    cc->census.threshold_ms = w->gen->cfg->gw.coro_stall_threshold_ms;
    coro_sched_foreach(w->sched, on_coro, &col);
    qsort(cc->items, cc->n, sizeof(cc->items[0]), cmp_item);
    label_conns(w, cc);
    uv_mutex_lock(&st->lock);
    cc->next_done = st->done;
    st->done = cc;
    uv_async_send(&st->replies);
    uv_mutex_unlock(&st->lock);
}

static const char *coro_state_name(int s)
{
    switch (s) {
    case CORO_READY:   return "ready";
    case CORO_RUNNING: return "running";
    case CORO_PARKED:  return "parked";
    case CORO_DEAD:    return "dead";
    }
    return "?";
}

/* Renders `show coros` from the parts of <r> that came back. */
static void render_coros(struct coros_req *r, struct cg_sbuf *b)
{
    char dur[32];
    unsigned i, k;

    for (i = 0; i < r->nparts; i++) {
        struct coros_call *cc = r->parts[i];

        if (!cc) {
            cg_sbuf_printf(b, "worker %u: stopped\n", i);
            continue;
        }
        if (!r->back[i]) {
            cg_sbuf_printf(b, "worker %u: no answer within %d ms\n", i, CALL_TIMEOUT_MS);
            continue;
        }
        cg_sbuf_printf(b, "worker %u: %u coroutines, %u parked", i, cc->census.total,
                       cc->census.parked);
        if (cc->census.threshold_ms)
            cg_sbuf_printf(b, ", %u stalled (parked over %s)", cc->census.stalled,
                           cg_format_duration(cc->census.threshold_ms, dur, sizeof(dur)));
        cg_sbuf_printf(b, "; %u longest parked:\n", cc->n);
        for (k = 0; k < cc->n; k++) {
            const struct coro_item *it = &cc->items[k];

            cg_sbuf_printf(b, "  id=%llu name=\"%s\" state=%s reason=\"%s\" parked_ms=%llu "
                           "age_ms=%llu stack_saved=%zu stalled=%d%s%s\n",
                           (unsigned long long)it->id, it->name ? it->name : "?",
                           coro_state_name(it->state), it->reason ? it->reason : "",
                           (unsigned long long)it->parked_ms, (unsigned long long)it->age_ms,
                           it->stack_saved, it->stalled, it->label[0] ? " " : "", it->label);
        }
    }
}

int cg_stats__render_req(struct coros_req *r, struct cg_sbuf *b)
{
    const struct cg_runtime *rt = r->c->st->rt;
    struct cg_coro_census *census = NULL;
    unsigned i;
    int err = 0;

    if (r->kind == REQ_COROS) {
        render_coros(r, b);
    } else if (!r->c->closing) {        /* nobody to answer: no rendering */
        census = calloc(r->nparts ? r->nparts : 1, sizeof(*census));
        for (i = 0; census && i < r->nparts; i++)
            if (r->parts[i] && r->back[i])
                census[i] = r->parts[i]->census;
        /* nparts < nworkers only when memory ran out midway: no census then */
        if (r->nparts < rt->d->nworkers) {
            free(census);
            census = NULL;
        }
        if (r->kind == REQ_STATS)
            err = cg_metrics_json(b, rt, census);
        else
            err = cg_metrics_prometheus(b, rt, census);
        free(census);
    }
    for (i = 0; i < r->nparts; i++) {
        if (!r->parts[i])
            continue;
        if (r->back[i])
            free(r->parts[i]);
        else
            r->parts[i]->req = NULL;    /* freed when it comes back */
    }
    free(r->parts);
    free(r->back);
    free(r);
    return err < 0 || b->overflow ? -ENOBUFS : 0;
}

int cg_stats__start_req(struct client *c, int kind, int head, unsigned want, struct cg_sbuf *b)
{
    struct cg_stats *st = c->st;
    struct cg_daemon *d = st->rt->d;
    struct coros_req *r;
    unsigned i;

    r = calloc(1, sizeof(*r));
    if (r) {
        r->nparts = d->nworkers;
        r->parts = calloc(d->nworkers + 1, sizeof(*r->parts));
        r->back = calloc(d->nworkers + 1, 1);
    }
    if (!r || !r->parts || !r->back)
        goto out_nomem;
    r->c = c;
    r->kind = kind;
    r->head = head;
    r->want = want;
    for (i = 0; i < d->nworkers; i++) {
        struct coros_call *cc = calloc(1, sizeof(*cc) + want * sizeof(cc->items[0]));

        if (!cc)
            break;
        cc->call.fn = collect_coros;
        cc->st = st;
        cc->req = r;
        cc->worker = i;
        cc->want = want;
        if (cg_worker_call(&d->workers[i], &cc->call) < 0) {
            free(cc);
            continue;
        }
        r->parts[i] = cc;
        r->waiting++;
        st->outstanding++;
    }
    if (i < d->nworkers) {          /* out of memory midway: wait for those sent */
        r->nparts = i;
        if (kind == REQ_COROS)
            cg_sbuf_printf(b, "error: out of memory; showing workers 0..%u only\n", i);
    }
    if (r->waiting == 0) {
        cg_stats__render_req(r, b); /* every worker stopped: say so */
        return 0;
    }
    c->req = r;
    return 1;

out_nomem:
    if (r) {
        free(r->parts);
        free(r->back);
        free(r);
    }
    if (kind == REQ_COROS)
        cg_sbuf_printf(b, "error: out of memory\n");
    else if (kind == REQ_STATS)
        cg_metrics_json(b, st->rt, NULL);
    else
        cg_metrics_prometheus(b, st->rt, NULL);
    return 0;
}

int cg_stats__cmd_coros(struct client *c, char **argv, int argc, struct cg_sbuf *b)
{
    unsigned long want = COROS_DEFAULT;
    char *end;

    if (argc > 3) {
        cg_sbuf_printf(b, "error: usage: show coros [N]\n");
        return 0;
    }
    if (argc == 3) {
        errno = 0;
        want = strtoul(argv[2], &end, 10);
        if (errno || *end || end == argv[2] || want > COROS_MAX) {
            cg_sbuf_printf(b, "error: \"%s\" is not a count (expected 0..%d)\n", argv[2],
                           COROS_MAX);
            return 0;
        }
    }
    return cg_stats__start_req(c, REQ_COROS, 0, (unsigned)want, b);
}

