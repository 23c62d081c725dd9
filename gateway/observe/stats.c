/* gateway/stats.c — the stats socket, its commands, and the /metrics HTTP listener.
 *
 * Everything here runs on the main thread. A client is a uv stream (a pipe for the stats
 * socket, TCP for /metrics) plus a timer; both are closed together and the client freed
 * when the second close callback ran. Answers are rendered whole into a buffer (bounded by
 * REPLY_MAX) and handed to uv_write(); the client is not read again while more than
 * OUT_HIGH bytes of answers wait, so a client that does not read holds at most one answer
 * and a line of input, and its timer closes it after stats_timeout without a completed
 * write.
 *
 * `show coros`, `show stats`, `show metrics` and GET /metrics need the workers: only a
 * worker may walk its coroutines (to list them, or to count those stalled for metrics). One
 * request per worker goes through cg_worker_call(); each worker fills its part on its own
 * thread and pushes it on our `done` list, guarded by a mutex, with a uv_async_send(). The
 * answer is written when all parts are back or after CALL_TIMEOUT_MS, whichever comes
 * first (a worker that did not answer is shown without its coroutines); parts arriving
 * after that, or after their client went away, are freed on arrival. The server itself is
 * freed only when no part is outstanding.
 */
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
#include "observe/log.h"
#include "core/conn.h"
#include "core/reload.h"
#include "observe/schedlat.h"
#include "observe/stats.h"
#include "core/upstream.h"
#include "core/worker.h"

#ifndef CG_VERSION
#define CG_VERSION "0.0.0"
#endif

#define LINE_MAX_BYTES  4096            /* longest command line, newline included */
#define OUT_HIGH        (64u * 1024)    /* take no command while more than this waits */
#define REPLY_MAX       (32u << 20)     /* largest answer we render */
#define CALL_TIMEOUT_MS 2000            /* workers' share of `show coros` */
#define COROS_DEFAULT   10
#define COROS_MAX       1000
#define URL_MAX         1024
#define HTTP_REQ_MAX    (16u * 1024)    /* request line and headers */
#define LISTEN_BACKLOG  511

struct client;

/* One worker's part of a `show coros`. */
struct coro_item {
    uint64_t    id;
    const char *name;           /* static strings of the coroutine runtime */
    const char *reason;
    int         state;
    uint64_t    parked_ms;
    uint64_t    age_ms;
    size_t      stack_saved;
    int         stalled;        /* parked at least coro_stall_threshold */
    const void *arg;            /* compared only, dereferenced on the worker's thread */
    char        label[256];     /* filled when arg is a connection of the worker */
};

struct coros_call {
    struct cg_wcall     call;       /* first: the worker gets &call */
    struct cg_stats    *st;
    struct coros_req   *req;        /* main thread only; NULL once abandoned */
    struct coros_call  *next_done;  /* on st->done, under st->lock */
    unsigned            worker;
    unsigned            want;
    struct cg_coro_census census;   /* results, written by the worker */
    unsigned            n;
    struct coro_item    items[];
};

/* What a request to the workers answers. */
enum req_kind {
    REQ_COROS,          /* show coros */
    REQ_STATS,          /* show stats */
    REQ_METRICS,        /* show metrics */
    REQ_HTTP,           /* GET (or HEAD) /metrics */
};

struct coros_req {
    struct client      *c;
    int                 kind;       /* enum req_kind */
    int                 head;       /* REQ_HTTP: a HEAD request */
    unsigned            nparts;
    unsigned            waiting;
    unsigned            want;
    struct coros_call **parts;      /* [nparts]; NULL where the worker had stopped */
    unsigned char      *back;       /* [nparts]: 1 once that part came back */
};

struct wreq {
    uv_write_t      req;
    struct client  *c;
    size_t          len;
    char           *data;           /* owned */
};

struct client {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_pipe_t   pipe;
        uv_tcp_t    tcp;
    } u;
    uv_timer_t        timer;
    struct cg_stats  *st;
    struct client    *prev, *next;
    struct coros_req *req;          /* a command waiting for the workers */
    size_t            queued;       /* bytes in writes not yet completed */
    int               handles;      /* open handles; freed at 0 */
    uint8_t           http;
    uint8_t           closing;
    uint8_t           reading;
    uint8_t           prompt;
    uint8_t           eof;          /* the client shut its side down */
    uint8_t           quit;         /* close once every answer is written */
    uint8_t           skipping;     /* dropping the rest of an over-long line */
    size_t            inlen;
    char              in[LINE_MAX_BYTES];
    /* HTTP only */
    llhttp_t          parser;
    size_t            req_bytes;
    size_t            urllen;
    char              url[URL_MAX];
};

struct cg_stats {
    uv_loop_t          *loop;
    struct cg_runtime  *rt;
    uv_pipe_t           unix_srv;
    uv_tcp_t            http_srv;
    uv_async_t          replies;
    uv_mutex_t          lock;
    struct coros_call  *done;       /* under lock */
    struct client      *clients;
    llhttp_settings_t   http_settings;
    unsigned            nclients;
    unsigned            outstanding;    /* coros parts not yet back (main thread) */
    int                 handles;        /* open server handles (unix, http, async) */
    int                 async_open;
    int                 stopping;
    int                 own_path;       /* the socket file is ours to remove */
    dev_t               dev;
    ino_t               ino;
    char                path[CG_CONF_SOCKPATH_MAX];
};

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

static void client_close(struct client *c);
static void client_process(struct client *c);
static void maybe_free(struct cg_stats *st);
static void http_metrics_reply(struct client *c, struct cg_sbuf *body, int err, int head);

/* ------------------------------------------------------------------ output */

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void on_timer(uv_timer_t *t);

/* Restarts <c>'s deadline: stats_timeout from now, or the workers' deadline while a
 * command waits for them. */
static void client_touch(struct client *c)
{
    uint64_t ms = c->st->rt->d->cfg->gw.stats_timeout_ms;

    if (c->closing)
        return;
    uv_timer_start(&c->timer, on_timer, c->req ? CALL_TIMEOUT_MS : ms, 0);
}

static void on_written(uv_write_t *req, int status)
{
    struct wreq *wr = req->data;
    struct client *c = wr->c;

    c->queued -= wr->len;
    free(wr->data);
    free(wr);
    if (status < 0) {
        client_close(c);
        return;
    }
    client_touch(c);
    client_process(c);
}

/* Queues the bytes of <b> for <c>, taking them (b is left empty). */
static void client_send(struct client *c, struct cg_sbuf *b)
{
    struct wreq *wr;
    uv_buf_t buf;

    if (c->closing || b->len == 0) {
        cg_sbuf_deinit(b);
        return;
    }
    wr = malloc(sizeof(*wr));
    if (!wr) {
        cg_sbuf_deinit(b);
        client_close(c);
        return;
    }
    wr->c = c;
    wr->len = b->len;
    wr->data = b->p;
    wr->req.data = wr;
    b->p = NULL;
    cg_sbuf_deinit(b);
    buf = uv_buf_init(wr->data, (unsigned)wr->len);
    c->queued += wr->len;
    if (uv_write(&wr->req, &c->u.s, &buf, 1, on_written) < 0) {
        c->queued -= wr->len;
        free(wr->data);
        free(wr);
        client_close(c);
    }
}

/* Ends an answer: the blank line, then the prompt in interactive mode; and sends it. */
static void client_answer(struct client *c, struct cg_sbuf *b)
{
    if (b->overflow) {
        cg_sbuf_deinit(b);
        cg_sbuf_printf(b, "error: the answer is larger than %u bytes\n", REPLY_MAX);
    }
    if (b->len == 0 || b->p[b->len - 1] != '\n')
        cg_sbuf_add(b, "\n", 1);
    cg_sbuf_add(b, "\n", 1);
    if (c->prompt)
        cg_sbuf_add(b, "> ", 2);
    client_send(c, b);
}

/* ------------------------------------------------------------------ clients */

static void on_client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    struct cg_stats *st = c->st;

    if (--c->handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        st->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    st->nclients--;
    st->rt->stats_clients = st->nclients;
    free(c);
    maybe_free(st);
}

/* Answers with what came back (if the client still listens); late parts are freed when
 * they arrive. */
static void finish_req(struct coros_req *r);

static void client_close(struct client *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->req) {
        struct coros_req *r = c->req;

        c->req = NULL;
        finish_req(r);
    }
    uv_close(&c->u.h, on_client_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void on_timer(uv_timer_t *t)
{
    struct client *c = t->data;
    struct cg_stats *st = c->st;
    char ms[32];

    if (c->req) {
        struct coros_req *r = c->req;

        c->req = NULL;
        finish_req(r);         /* answers with what came back */
        client_touch(c);
        client_process(c);
        return;
    }
    st->rt->stats_timeouts++;
    cg_info("stats client closed: %s for %s", c->queued ? "not reading its answers" : "idle",
            cg_format_duration(st->rt->d->cfg->gw.stats_timeout_ms, ms, sizeof(ms)));
    client_close(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct client *c = h->data;
    static char http_scratch[4096];

    if (c->http) {
        /* The parser keeps nothing of the bytes after its callbacks; main thread only. */
        *buf = uv_buf_init(http_scratch, sizeof(http_scratch));
        return;
    }
    *buf = uv_buf_init(c->in + c->inlen, (unsigned)(sizeof(c->in) - c->inlen));
}

static void http_feed(struct client *c, const char *data, size_t len);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;

    if (n == 0)
        return;
    if (n < 0) {
        c->eof = 1;
        if (n != UV_EOF) {
            client_close(c);
            return;
        }
        uv_read_stop(s);
        c->reading = 0;
        if (c->http) {
            client_close(c);
            return;
        }
        client_process(c);
        return;
    }
    client_touch(c);
    if (c->http) {
        http_feed(c, buf->base, (size_t)n);
        return;
    }
    c->inlen += (size_t)n;
    client_process(c);
}

/* Reads from <c> only while it may send a command that we would take now. */
static void client_update_reading(struct client *c)
{
    int want = !c->closing && !c->eof && !c->quit && !c->req && c->queued <= OUT_HIGH &&
               c->inlen < sizeof(c->in);

    if (want && !c->reading) {
        if (uv_read_start(&c->u.s, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop(&c->u.s);
        c->reading = 0;
    }
}

/* ------------------------------------------------------------------ commands */

static void run_command(struct client *c, char *line);

/* Takes the complete lines of <c>'s input while it may (no command waiting for workers,
 * little output waiting for the client), then decides whether to read on or close. */
static void client_process(struct client *c)
{
    char *nl, line[LINE_MAX_BYTES + 1];
    size_t n;

    if (c->closing)
        return;
    if (c->http) {
        if (c->quit && c->queued == 0)
            client_close(c);
        return;
    }
    while (!c->closing && !c->req && !c->quit && c->queued <= OUT_HIGH) {
        nl = memchr(c->in, '\n', c->inlen);
        if (!nl) {
            if (c->inlen == sizeof(c->in)) {
                c->skipping = 1;            /* over-long: drop it, answer at its end */
                c->inlen = 0;
                continue;
            }
            if (!c->eof || c->inlen == 0)
                break;
            nl = c->in + c->inlen;          /* the last line, without its newline */
        }
        n = (size_t)(nl - c->in);
        memcpy(line, c->in, n);
        line[n] = '\0';
        if (n < c->inlen)
            n++;
        memmove(c->in, c->in + n, c->inlen - n);
        c->inlen -= n;
        if (c->skipping) {
            struct cg_sbuf b;

            c->skipping = 0;
            cg_sbuf_init(&b, REPLY_MAX);
            cg_sbuf_printf(&b, "error: line too long (at most %d bytes)\n",
                           LINE_MAX_BYTES - 1);
            client_answer(c, &b);
            continue;
        }
        run_command(c, line);
    }
    if (c->closing)
        return;
    if (c->eof && !c->req && c->inlen == 0)
        c->quit = 1;
    if (c->quit && !c->req && c->queued == 0) {
        client_close(c);
        return;
    }
    client_update_reading(c);
}

static const char *fmt_time(time_t t, char *buf, size_t size)
{
    struct tm tm;

    if (t == 0 || !gmtime_r(&t, &tm) || strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, size, "never");
    return buf;
}

static void cmd_info(struct cg_stats *st, struct cg_sbuf *b)
{
    const struct cg_runtime *rt = st->rt;
    const struct cg_daemon *d = rt->d;
    const struct cg_config *cfg = d->cfg;
    uint64_t up = now_ms() - rt->started_ms;
    char t1[40], t2[40];
    unsigned i;

    cg_sbuf_printf(b, "name: corogate\nversion: %s\ncontext_switch: %s\nlibuv: %s\n"
                   "features: tcp websocket stats-socket metrics-http\n"
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
    if (d->brk)
        cg_sbuf_printf(b, "breaker: %s (mode %s)\nadmission: client-address table %s\n",
                       cg_brk_state_name(cg_breaker_state(d->brk, NULL, NULL)),
                       cg_brk_mode_name(atomic_load(&d->brk->mode)),
                       d->adm && d->adm->ipt ? "on" : "off");
    /* Reload (reload.h): the generation new connections get, and how many workers have
     * not switched to it yet (0 once a reload is complete). */
    cg_sbuf_printf(b, "generation: %u\ngeneration_pending_workers: %u\n",
                   d->gen ? d->gen->id : 0, d->reload ? cg_reload_pending(d->reload) : 0);
}

static const char *state_name(int s)
{
    return s == CG_SERVER_READY ? "ready" : s == CG_SERVER_DRAIN ? "drain" : "maint";
}

static void cmd_upstreams(struct cg_stats *st, struct cg_sbuf *b)
{
    const struct cg_daemon *d = st->rt->d;
    size_t i;
    unsigned j;

    for (i = 0; d->ups && i < d->cfg->nupstreams; i++) {
        const struct cg_upstream *up = &d->ups[i];
        const struct cg_upstream_conf *uc = up->conf;

        cg_sbuf_printf(b, "upstream %s: %u servers, balance %s, no_server %llu, "
                       "health checks %s\n", uc->name, up->nservers,
                       uc->balance == CG_BALANCE_LEASTCONN ? "leastconn" :
                       uc->balance == CG_BALANCE_RANDOM ? "random" : "roundrobin",
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
        socklen_t len = sizeof(ss);
        char peer[INET6_ADDRSTRLEN + 8];

        hit = bsearch(&kp, by_arg, cc->n, sizeof(*by_arg), cmp_arg);
        if (!hit)
            continue;
        memset(&ss, 0, sizeof(ss));
        if (getpeername(coro_stream_fd(&c->client), (struct sockaddr *)&ss, &len) < 0)
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

/* Renders the answer of <r> into <b> from the parts that came back, and frees <r>; parts
 * still out are left to be freed when they arrive. Returns 0, or -ENOBUFS when the answer
 * did not fit (or memory ran out). */
static int render_req(struct coros_req *r, struct cg_sbuf *b)
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

/* Answers <r>'s client (when it is still there) and frees <r>. */
static void finish_req(struct coros_req *r)
{
    struct client *c = r->c;
    int kind = r->kind, head = r->head, err;
    struct cg_sbuf b;

    cg_sbuf_init(&b, REPLY_MAX);
    err = render_req(r, &b);
    if (!c || c->closing)
        cg_sbuf_deinit(&b);
    else if (kind == REQ_HTTP)
        http_metrics_reply(c, &b, err, head);
    else
        client_answer(c, &b);
}

static void on_replies(uv_async_t *a)
{
    struct cg_stats *st = a->data;
    struct coros_call *list, *cc;

    uv_mutex_lock(&st->lock);
    list = st->done;
    st->done = NULL;
    uv_mutex_unlock(&st->lock);
    while ((cc = list)) {
        struct coros_req *r = cc->req;

        list = cc->next_done;
        st->outstanding--;
        if (!r) {
            free(cc);
            continue;
        }
        r->back[cc->worker] = 1;
        if (--r->waiting == 0) {
            struct client *c = r->c;

            c->req = NULL;
            finish_req(r);
            client_touch(c);
            client_process(c);
        }
    }
    maybe_free(st);
}

/* Asks every worker for its part of a <kind> answer for <c> (<want> coroutines listed, for
 * show coros; <head>: an HTTP HEAD). Returns 1 when <c> now waits for them (c->req, answered
 * by finish_req()), or 0 when the answer is in <b> already: every worker had stopped, or
 * memory ran out (metrics are then rendered without the workers' coroutine counts). */
static int start_req(struct client *c, int kind, int head, unsigned want, struct cg_sbuf *b)
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
        render_req(r, b);           /* every worker stopped: say so */
        return 0;
    }
    c->req = r;
    client_touch(c);
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

static int cmd_coros(struct client *c, char **argv, int argc, struct cg_sbuf *b)
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
    return start_req(c, REQ_COROS, 0, (unsigned)want, b);
}

/* debug stall-worker N MS: only when the daemon started with CG_TEST_HOOKS=1 (main.c);
 * otherwise the command does not exist. */
static void cmd_debug(struct cg_stats *st, char **argv, int argc, struct cg_sbuf *b)
{
    struct cg_daemon *d = st->rt->d;
    unsigned long id, ms;
    char *end1 = NULL, *end2 = NULL;
    int err;

    if (argc != 4 || strcmp(argv[1], "stall-worker") != 0) {
        cg_sbuf_printf(b, "error: usage: debug stall-worker WORKER MILLISECONDS\n");
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

static void run_command(struct client *c, char *line)
{
    struct cg_stats *st = c->st;
    struct cg_runtime *rt = st->rt;
    char *argv[8], *save = NULL, *tok, copy[LINE_MAX_BYTES + 1];
    struct cg_sbuf b;
    int argc = 0, err;

    snprintf(copy, sizeof(copy), "%s", line);
    for (tok = strtok_r(line, " \t\r", &save); tok && argc < 8;
         tok = strtok_r(NULL, " \t\r", &save))
        argv[argc++] = tok;
    cg_sbuf_init(&b, REPLY_MAX);
    if (argc == 0) {
        if (c->prompt)
            cg_sbuf_add(&b, "> ", 2);
        client_send(c, &b);
        return;
    }
#define IS(i, s) (argc > (i) && strcmp(argv[i], (s)) == 0)
    if (IS(0, "help") && argc == 1) {
        cg_sbuf_add(&b, help_text, sizeof(help_text) - 1);
    } else if (IS(0, "prompt") && argc == 1) {
        c->prompt = !c->prompt;
        if (c->prompt)
            cg_sbuf_add(&b, "> ", 2);
        client_send(c, &b);
        return;
    } else if (IS(0, "quit") && argc == 1) {
        c->quit = 1;
        cg_sbuf_deinit(&b);
        return;
    } else if (IS(0, "show") && IS(1, "info") && argc == 2) {
        cmd_info(st, &b);
    } else if (IS(0, "show") && (IS(1, "stats") || IS(1, "metrics")) && argc == 2) {
        if (start_req(c, IS(1, "stats") ? REQ_STATS : REQ_METRICS, 0, 0, &b)) {
            cg_sbuf_deinit(&b);         /* answered when the workers are back */
            return;
        }
    } else if (IS(0, "show") && IS(1, "coros")) {
        if (cmd_coros(c, argv, argc, &b)) {
            cg_sbuf_deinit(&b);         /* answered when the workers are back */
            return;
        }
    } else if (IS(0, "show") && IS(1, "upstreams") && argc == 2) {
        cmd_upstreams(st, &b);
    } else if (IS(0, "show") && IS(1, "breaker") && argc == 2) {
        cmd_breaker(st, &b);
    } else if (IS(0, "show") && IS(1, "sched") && (argc == 2 || (argc == 3 && IS(2, "json")))) {
        char *text = cg_schedlat_format(rt->d->schedlat, rt->d, argc == 3);  /* schedlat.h */

        if (text)
            cg_sbuf_add(&b, text, strlen(text));
        else
            cg_sbuf_printf(&b, "error: out of memory\n");
        free(text);
    } else if (IS(0, "set") && IS(1, "server")) {
        cmd_set_server(st, argv, argc, &b);
    } else if (IS(0, "set") && IS(1, "breaker")) {
        cmd_set_breaker(st, argv, argc, &b);
    } else if (IS(0, "set") && IS(1, "rate")) {
        cmd_set_rate(st, argv, argc, &b);
    } else if (IS(0, "debug") && rt->d->test_hooks) {
        cmd_debug(st, argv, argc, &b);
    } else if (IS(0, "reload") && argc == 1) {
        err = rt->reload ? rt->reload(rt, "stats socket") : -ENOSYS;
        if (err < 0)
            cg_sbuf_printf(&b, "error: reload: %s\n", rt->last_reload_msg[0] ?
                           rt->last_reload_msg : strerror(-err));
        else
            cg_sbuf_printf(&b, "reload: %s\n", rt->last_reload_msg);
    } else {
        cg_sbuf_add(&b, "error: unknown command \"", 24);
        cg_sbuf_add(&b, copy, strnlen(copy, 200));
        cg_sbuf_add(&b, "\"\n", 2);
        cg_sbuf_add(&b, help_text, sizeof(help_text) - 1);
    }
#undef IS
    client_answer(c, &b);
}

/* ------------------------------------------------------------------ HTTP /metrics */

static int on_http_url(llhttp_t *p, const char *at, size_t len)
{
    struct client *c = p->data;

    if (c->urllen + len >= sizeof(c->url))
        return -1;
    memcpy(c->url + c->urllen, at, len);
    c->urllen += len;
    c->url[c->urllen] = '\0';
    return 0;
}

static int on_http_complete(llhttp_t *p)
{
    return HPE_PAUSED;      /* one request per connection: answer it, then close */
}

static void http_reply(struct client *c, const char *status, const char *extra,
                       const char *ctype, struct cg_sbuf *body, int head)
{
    struct cg_sbuf b;

    cg_sbuf_init(&b, REPLY_MAX + 1024);
    cg_sbuf_printf(&b, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n%s\r\n", status, ctype, body->len, extra);
    if (!head && body->len)
        cg_sbuf_add(&b, body->p, body->len);
    cg_sbuf_deinit(body);
    c->quit = 1;
    if (c->reading) {
        uv_read_stop(&c->u.s);
        c->reading = 0;
    }
    if (b.overflow) {
        cg_sbuf_deinit(&b);
        client_close(c);
        return;
    }
    client_send(c, &b);
}

static void http_feed(struct client *c, const char *data, size_t len)
{
    static const char text[] = "text/plain; charset=utf-8";
    struct cg_sbuf body;
    llhttp_errno_t err;
    char *q;
    int m;

    if (c->quit || c->req)
        return;
    c->req_bytes += len;
    err = llhttp_execute(&c->parser, data, len);
    cg_sbuf_init(&body, REPLY_MAX);
    if (err == HPE_OK) {
        if (c->req_bytes <= HTTP_REQ_MAX)
            return;
        cg_sbuf_printf(&body, "request too large\n");
        http_reply(c, "431 Request Header Fields Too Large", "", text, &body, 0);
        return;
    }
    if (err != HPE_PAUSED) {
        cg_sbuf_printf(&body, "bad request: %s\n", llhttp_errno_name(err));
        http_reply(c, "400 Bad Request", "", text, &body, 0);
        return;
    }
    m = llhttp_get_method(&c->parser);
    q = strchr(c->url, '?');
    if (q)
        *q = '\0';
    if (m != HTTP_GET && m != HTTP_HEAD) {
        cg_sbuf_printf(&body, "method not allowed: use GET\n");
        http_reply(c, "405 Method Not Allowed", "Allow: GET, HEAD\r\n", text, &body, 0);
    } else if (strcmp(c->url, "/metrics") != 0) {
        cg_sbuf_printf(&body, "not found: metrics are at /metrics\n");
        http_reply(c, "404 Not Found", "", text, &body, m == HTTP_HEAD);
    } else {
        if (c->reading) {           /* one request per connection: nothing more to read */
            uv_read_stop(&c->u.s);
            c->reading = 0;
        }
        if (!start_req(c, REQ_HTTP, m == HTTP_HEAD, 0, &body))
            http_metrics_reply(c, &body, body.overflow ? -ENOBUFS : 0, m == HTTP_HEAD);
        else
            cg_sbuf_deinit(&body);  /* answered when the workers are back */
    }
}

/* Answers GET /metrics with <body> (taken), or 500 when rendering failed with <err>. */
static void http_metrics_reply(struct client *c, struct cg_sbuf *body, int err, int head)
{
    if (err < 0) {
        cg_sbuf_deinit(body);
        cg_sbuf_printf(body, "metrics larger than %u bytes\n", REPLY_MAX);
        http_reply(c, "500 Internal Server Error", "", "text/plain; charset=utf-8", body, 0);
        return;
    }
    http_reply(c, "200 OK", "", "text/plain; version=0.0.4; charset=utf-8", body, head);
}

/* ------------------------------------------------------------------ accepting */

static void on_connection(uv_stream_t *server, int status)
{
    struct cg_stats *st = server->data;
    int http = server == (uv_stream_t *)&st->http_srv;
    struct client *c;
    int err;

    if (status < 0) {
        cg_warn("stats: accept: %s", uv_strerror(status));
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        cg_error("stats: cannot take a client: out of memory");
        return;
    }
    c->st = st;
    c->http = (uint8_t)http;
    err = http ? uv_tcp_init(st->loop, &c->u.tcp) : uv_pipe_init(st->loop, &c->u.pipe, 0);
    if (err < 0) {
        free(c);
        return;
    }
    uv_timer_init(st->loop, &c->timer);
    c->u.h.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->next = st->clients;
    if (st->clients)
        st->clients->prev = c;
    st->clients = c;
    st->nclients++;
    st->rt->stats_clients = st->nclients;
    err = uv_accept(server, &c->u.s);
    if (err < 0) {
        cg_warn("stats: accept: %s", uv_strerror(err));
        client_close(c);
        return;
    }
    if (st->nclients > st->rt->d->cfg->gw.stats_max_clients) {
        static const char msg[] = "error: too many stats clients; try again later\n\n";
        uv_buf_t buf = uv_buf_init((char *)msg, sizeof(msg) - 1);

        st->rt->stats_refused++;
        if (!http)
            uv_try_write(&c->u.s, &buf, 1);
        client_close(c);
        return;
    }
    st->rt->stats_accepted++;
    if (http) {
        llhttp_init(&c->parser, HTTP_REQUEST, &st->http_settings);
        c->parser.data = c;
        uv_tcp_nodelay(&c->u.tcp, 1);
    }
    client_touch(c);
    client_update_reading(c);
}

static void on_server_closed(uv_handle_t *h)
{
    struct cg_stats *st = h->data;

    st->handles--;
    maybe_free(st);
}

static void maybe_free(struct cg_stats *st)
{
    if (!st->stopping)
        return;
    if (st->outstanding == 0 && st->async_open) {
        st->async_open = 0;
        uv_close((uv_handle_t *)&st->replies, on_server_closed);
        return;
    }
    if (st->handles > 0 || st->nclients > 0 || st->outstanding > 0)
        return;
    uv_mutex_destroy(&st->lock);
    free(st);
}

/* Is the socket at <path> in use? 0: stale (connect refused), 1: someone accepts on it,
 * negative errno: cannot tell. */
static int socket_in_use(const char *path)
{
    struct sockaddr_un sun;
    int fd, err = 0;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 || errno == EAGAIN)
        err = 1;
    else if (errno != ECONNREFUSED)
        err = -errno;
    close(fd);
    return err;
}

static int open_unix(struct cg_stats *st)
{
    const struct cg_gateway_conf *gw = &st->rt->d->cfg->gw;
    const char *path = gw->stats_socket;
    struct stat sb;
    mode_t old;
    int err;

    snprintf(st->path, sizeof(st->path), "%s", path);
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            cg_error("stats socket %s: the path exists and is not a socket; not replacing it",
                     path);
            return -EEXIST;
        }
        err = socket_in_use(path);
        if (err == 1) {
            cg_error("stats socket %s: a process accepts connections on it (another "
                     "corogate?); not replacing it", path);
            return -EADDRINUSE;
        }
        if (err < 0) {
            cg_error("stats socket %s: connect() to the existing socket: %s; not replacing it",
                     path, strerror(-err));
            return err;
        }
        if (unlink(path) < 0) {
            err = -errno;
            cg_error("stats socket %s: unlink() of the stale socket: %s", path, strerror(-err));
            return err;
        }
        cg_notice("stats socket %s: removed a stale socket", path);
    } else if (errno != ENOENT) {
        err = -errno;
        cg_error("stats socket %s: lstat(): %s", path, strerror(-err));
        return err;
    }
    err = uv_pipe_init(st->loop, &st->unix_srv, 0);
    if (err < 0)
        return err;
    st->unix_srv.data = st;
    st->handles++;
    /* Nobody may connect before the mode is set: bind under 0177, then chmod. */
    old = umask(0177);
    err = uv_pipe_bind(&st->unix_srv, path);
    umask(old);
    if (err < 0) {
        cg_error("stats socket %s: bind(): %s", path, uv_strerror(err));
        return err;
    }
    if (lstat(path, &sb) == 0) {
        st->own_path = 1;
        st->dev = sb.st_dev;
        st->ino = sb.st_ino;
    }
    if ((gw->stats_socket_uid != (uid_t)-1 || gw->stats_socket_gid != (gid_t)-1) &&
        lchown(path, gw->stats_socket_uid, gw->stats_socket_gid) < 0) {
        err = -errno;
        cg_error("stats socket %s: chown(%d, %d): %s", path, (int)gw->stats_socket_uid,
                 (int)gw->stats_socket_gid, strerror(-err));
        return err;
    }
    if (chmod(path, gw->stats_socket_mode) < 0) {
        err = -errno;
        cg_error("stats socket %s: chmod(%04o): %s", path, gw->stats_socket_mode,
                 strerror(-err));
        return err;
    }
    err = uv_listen((uv_stream_t *)&st->unix_srv, LISTEN_BACKLOG, on_connection);
    if (err < 0) {
        cg_error("stats socket %s: listen(): %s", path, uv_strerror(err));
        return err;
    }
    cg_notice("stats socket: %s (mode %04o)", path, gw->stats_socket_mode);
    return 0;
}

static int open_http(struct cg_stats *st)
{
    const struct cg_gateway_conf *gw = &st->rt->d->cfg->gw;
    int err;

    llhttp_settings_init(&st->http_settings);
    st->http_settings.on_url = on_http_url;
    st->http_settings.on_message_complete = on_http_complete;
    err = uv_tcp_init(st->loop, &st->http_srv);
    if (err < 0)
        return err;
    st->http_srv.data = st;
    st->handles++;
    err = uv_tcp_bind(&st->http_srv, (const struct sockaddr *)&gw->metrics_addr, 0);
    if (err == 0)
        err = uv_listen((uv_stream_t *)&st->http_srv, LISTEN_BACKLOG, on_connection);
    if (err < 0) {
        cg_error("metrics_listen %s: %s", gw->metrics_listen, uv_strerror(err));
        return err;
    }
    cg_notice("metrics: http://%s/metrics", gw->metrics_listen);
    return 0;
}

int cg_stats_start(uv_loop_t *loop, struct cg_runtime *rt, struct cg_stats **out)
{
    struct cg_stats *st;
    int err;

    *out = NULL;
    st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->loop = loop;
    st->rt = rt;
    uv_mutex_init(&st->lock);
    err = uv_async_init(loop, &st->replies, on_replies);
    if (err < 0) {
        uv_mutex_destroy(&st->lock);
        free(st);
        return err;
    }
    st->replies.data = st;
    st->async_open = 1;
    st->handles++;
    err = open_unix(st);
    if (err == 0 && rt->d->cfg->gw.metrics_listen[0])
        err = open_http(st);
    if (err < 0) {
        cg_stats_stop(st);
        return err;
    }
    *out = st;
    return 0;
}

void cg_stats_stop(struct cg_stats *st)
{
    struct stat sb;
    struct client *c, *next;

    if (!st || st->stopping)
        return;
    st->stopping = 1;
    if (st->own_path && lstat(st->path, &sb) == 0 && sb.st_dev == st->dev &&
        sb.st_ino == st->ino)
        unlink(st->path);
    st->own_path = 0;
    if (st->unix_srv.loop && !uv_is_closing((uv_handle_t *)&st->unix_srv))
        uv_close((uv_handle_t *)&st->unix_srv, on_server_closed);
    if (st->http_srv.loop && !uv_is_closing((uv_handle_t *)&st->http_srv))
        uv_close((uv_handle_t *)&st->http_srv, on_server_closed);
    for (c = st->clients; c; c = next) {
        next = c->next;
        client_close(c);
    }
    maybe_free(st);
}
