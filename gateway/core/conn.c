/* gateway/core/conn.c — a connection's start, its upstream connect with retries, and its
 * end: the one place that releases what a connection holds (core/conn.h). */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/hash.h"
#include "common/rand.h"
#include "common/tls.h"
#include "coro/io.h"
#include "coro/list.h"
#include "core/conn.h"
#include "core/gen.h"
#include "core/tls.h"
#include "core/upstream.h"
#include "guard/admission.h"
#include "base/access-log.h"
#include "base/proxy-proto.h"
#include "base/cidr.h"
#include "base/counters.h"
#include "base/log.h"

static const struct coro_stream_names client_names = { "read client", "write client" };

static void tls_session(void *arg);
static void proxy_session(void *arg);
static void proxy_free(struct cg_conn *c);

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
    if (c->log)
        free(c->log->request_id);
    free(c->log);
    proxy_free(c);
    coro_slab_free(c->pp_tail ? &w->conn_pp_slab : &w->conn_slab, c);
}

/* ------------------------------------------------------------------ connection log */

static uint32_t ms_since(const struct cg_conn_log *lg)
{
    uint64_t ms = (uv_hrtime() - lg->start_ns) / 1000000;

    return ms >= CG_ALOG_NONE ? CG_ALOG_NONE - 1 : (uint32_t)ms;
}

static void note_addr(struct cg_conn_log *lg, const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;

        memcpy(lg->client_addr, &in->sin_addr, 4);
        lg->client_port = ntohs(in->sin_port);
        lg->family = AF_INET;
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;

        memcpy(lg->client_addr, &in6->sin6_addr, 16);
        lg->client_port = ntohs(in6->sin6_port);
        lg->family = AF_INET6;
    }
}

/* Decides whether <c>, just started on <l>, is logged (its listener's access_log and
 * access_log_sample: the 1st, N+1st... connection of the listener in this worker), and if
 * so gives it its log state. Without memory it goes unlogged and counts as dropped. */
static void log_begin(struct cg_conn *c, struct cg_wlistener *l)
{
    const struct cg_alog_keys *k = &c->lc->alog;
    struct sockaddr_storage ss;
    struct cg_conn_log *lg;

    if (k->sink == CG_ALOG_OFF || !c->w->d->alog || l->alog_seq++ % k->sample != 0)
        return;
    lg = calloc(1, sizeof(*lg));
    if (!lg) {
        CG_STAT_ADD(c->w->stats.log_dropped, 1);
        return;
    }
    lg->start_ns = uv_hrtime();
    lg->hs_ms = lg->connect_ms = CG_ALOG_NONE;
    lg->upstream = -1;
    if (cg_conn_client_addr(c, &ss) == 0)
        note_addr(lg, &ss);
    c->log = lg;
}

void cg_conn_log_handshake(struct cg_conn *c)
{
    if (c->log)
        c->log->hs_ms = ms_since(c->log);
}

void cg_conn_log_request_id(struct cg_conn *c, const char *id)
{
    if (!c->log || c->log->request_id)
        return;
    c->log->request_id = strdup(id);        /* none without memory: the line says "-" */
}

void cg_conn_log_ws_end(struct cg_conn *c, unsigned close_client, unsigned close_server)
{
    if (!c->log)
        return;
    c->log->close_client = (uint16_t)close_client;
    c->log->close_server = (uint16_t)close_server;
}

static void copy_name(char *dst, const char *src)
{
    size_t n = strnlen(src, CG_ALOG_NAME_MAX - 1);

    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* Hands <c>'s line to the log writer: a fixed record, formatted on the writer's thread. */
static void log_end(struct cg_conn *c)
{
    struct cg_conn_log *lg = c->log;
    struct cg_alog_rec rec;
    struct sockaddr_storage ss;
    struct timespec ts;
    const char *up = NULL;

    rec.total_ms = ms_since(lg);
    clock_gettime(CLOCK_REALTIME, &ts);
    rec.start_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 - rec.total_ms;
    rec.bytes_in = c->client.bytes_in;
    rec.bytes_out = c->client.bytes_out;
    rec.term = cg_close_reason_name(c->reason);
    rec.hs_ms = lg->hs_ms;
    rec.connect_ms = lg->connect_ms;
    rec.msgs_in = lg->msgs_in;
    rec.msgs_out = lg->msgs_out;
    rec.close_client = lg->close_client;
    rec.close_server = lg->close_server;
    rec.worker = (uint16_t)c->w->id;
    rec.websocket = c->lc->mode == CG_MODE_WEBSOCKET;
    rec.sink = (uint8_t)c->lc->alog.sink;
    rec.format = (uint8_t)c->lc->alog.format;
    /* At the end, for an address a PROXY header brought in meanwhile; the start's when
     * the socket has none left (reset). */
    if (cg_conn_client_addr(c, &ss) == 0)
        note_addr(lg, &ss);
    rec.family = lg->family;
    rec.client_port = lg->client_port;
    memcpy(rec.client_addr, lg->client_addr, sizeof(rec.client_addr));
    copy_name(rec.listener, c->lc->name);
    if (c->srv)
        up = c->srv->up->conf->name;
    else if (lg->upstream >= 0)
        up = c->gen->ups[lg->upstream].conf->name;
    copy_name(rec.upstream, up ? up : "");
    copy_name(rec.server, c->srv ? c->srv->conf->name : "");
    rec.request_id[0] = '\0';
    if (lg->request_id)
        snprintf(rec.request_id, sizeof(rec.request_id), "%s", lg->request_id);
    if (cg_alog_push(c->w->d->alog, c->w->id, &rec) < 0)
        CG_STAT_ADD(c->w->stats.log_dropped, 1);
}

int cg_conn_start(struct cg_wlistener *l, int fd, uint32_t ip_slot)
{
    struct cg_worker *w = l->w;
    void (*body)(void *) = l->conf->accept_proxy ? proxy_session   /* then TLS, session */
                         : l->conf->tls.on ? tls_session            /* then the session */
                         : w->d->proto.session[l->conf->mode];
    int ws = l->conf->mode == CG_MODE_WEBSOCKET, err;
    struct cg_conn *c = coro_slab_alloc(l->conf->accept_proxy ? &w->conn_pp_slab
                                                              : &w->conn_slab);

    if (!c) {
        cg_iptable_release(w->d->adm->ipt, ip_slot);
        atomic_fetch_sub(&w->d->conns, 1);
        close(fd);
        return -ENOMEM;
    }
    c->pp_tail = l->conf->accept_proxy != 0;
    coro_stream_init(w->sched, &c->client);
    c->client.names = &client_names;
    c->w = w;
    c->l = l;
    c->ip_slot = ip_slot;
    c->gen = cg_gen_get(w->gen);          /* the connection's settings, for its life */
    c->lc = l->conf;
    c->log = NULL;
    /* TCP_NODELAY came with the listening socket (cg_listen_socket()). */
    /* The stream owns fd (even when the open fails): closing it closes fd. */
    err = coro_stream_open(&c->client, fd);
    if (err == 0)
        err = body ? coro_spawn(w->sched, body, c, ws ? "ws session" : "tcp session",
                                &c->co) : -ENOSYS;
    if (err < 0) {
        release(c);
        return err;
    }
    log_begin(c, l);
    coro_list_add_tail(&w->conns, &c->node);
    CG_STAT_ADD(w->stats.accepted, 1);
    CG_STAT_ADD(w->stats.active, 1);
    CG_STAT_ADD(l->stats.accepted, 1);
    CG_STAT_ADD(l->stats.active, 1);
    return 0;
}

uint64_t cg_conn_deadline(const struct cg_listener_conf *lc, uint64_t now_ms)
{
    uint64_t life = lc->max_lifetime_ms, span = life / 100 * lc->lifetime_jitter +
                                                life % 100 * lc->lifetime_jitter / 100;

    if (!life)
        return 0;
    life -= cg_rand_below(span + 1);
    return now_ms + (life ? life : 1);
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
        "upstream", "local", "stopped", "error", "tls", "lifetime", "proxy", "refused",
    };

    return reason >= 0 && reason < CG_CLOSE_N ? names[reason] : "?";
}

void cg_conn_unlink(struct cg_conn *c)
{
    struct cg_worker *w = c->w;

    if (w->spread_next == &c->node)
        w->spread_next = c->node.next;
    coro_list_del(&c->node);
}

void cg_conn_end(struct cg_conn *c)
{
    struct cg_worker *w = c->w;

    cg_debug("listener %s: connection closed: %s", c->lc->name,
             cg_close_reason_name(c->reason));
    cg_conn_unlink(c);
    CG_STAT_ADD(w->stats.active, (uint64_t)-1);
    CG_STAT_ADD(w->stats.closed, 1);
    CG_STAT_ADD(c->l->stats.active, (uint64_t)-1);
    if (c->log)
        log_end(c);
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

/* ------------------------------------------------------------------ TLS */

static struct cg_ratelimit tls_log = CG_RATELIMIT_INIT(1000, 5);

/* A verified client certificate, kept for a websocket backend's request (ws-open.c frees
 * it once the request is written): "subject\0sha256". */
static void keep_peer_cert(struct cg_conn *c, const struct cg_tls_info *info)
{
    size_t a = strlen(info->peer_subject), b = strlen(info->peer_sha256);

    if (!info->peer_cert || info->verify_result != X509_V_OK ||
        c->lc->mode != CG_MODE_WEBSOCKET)
        return;
    c->peer_cert = malloc(a + b + 2);
    if (!c->peer_cert)
        return;
    memcpy(c->peer_cert, info->peer_subject, a + 1);
    memcpy(c->peer_cert + a + 1, info->peer_sha256, b + 1);
}

/* The client's TLS handshake, counted by outcome. Not inlined: its struct cg_tls_info
 * (~800 bytes) must be off the stack before the session parks, or every idle connection's
 * saved stack would carry it (docs/coro-stacks.md). Returns 0 or -1 (reason recorded). */
static __attribute__((noinline)) int tls_handshake(struct cg_conn *c)
{
    SSL_CTX *ctx = cg_tls_listener_ctx(c->gen->cfg->tls,
                                       (size_t)(c->lc - c->gen->cfg->listeners));
    struct cg_listener_stats *ls = &c->l->stats;
    struct cg_tls_info info;
    uint64_t t0 = uv_hrtime();
    int err;

    if (!ctx) {
        cg_conn_closing(c, CG_CLOSE_LOCAL);
        return -1;
    }
    err = cg_tls_accept(&c->client, ctx, (int64_t)c->lc->tls.handshake_timeout_ms, &info);
    if (err < 0) {
        CG_STAT_ADD(ls->tls_fail[info.fail < CG_TLS_FAILS ? info.fail : 0], 1);
        cg_conn_closing(c, err == UV_ECANCELED ? CG_CLOSE_STOPPED : CG_CLOSE_TLS);
        cg_log_ratelimited(&tls_log, CG_LOG_INFO, "listener %s: TLS handshake failed: %s: %s",
                           c->lc->name, cg_tls_fail_name(info.fail), info.why);
        return -1;
    }
    cg_lat_hist_record(&c->w->stats.tls_lat, (uv_hrtime() - t0) / 1000);
    CG_STAT_ADD(*(info.resumed ? &ls->tls_resumed : &ls->tls_full), 1);
    CG_STAT_ADD(*(info.version == TLS1_3_VERSION ? &ls->tls_v13 : &ls->tls_v12), 1);
    CG_STAT_ADD(ls->tls_cipher[cg_tls_cipher_slot(info.cipher)], 1);
    if (info.alpn[0])
        cg_debug("listener %s: TLS %s %s, ALPN %s%s", c->lc->name,
                 info.version == TLS1_3_VERSION ? "1.3" : "1.2", info.cipher, info.alpn,
                 info.resumed ? ", resumed" : "");
    keep_peer_cert(c, &info);
    cg_conn_log_handshake(c);
    return 0;
}

/* The coroutine body of a connection on a listener with tls = on: the handshake (admission
 * has counted the connection already; its CPU is loop work the breaker sees as lag), then
 * the listener's mode's session over the decrypted stream. */
static void tls_session(void *arg)
{
    struct cg_conn *c = arg;

    c->co = coro_self();
    if (tls_handshake(c) < 0) {
        cg_conn_end(c);
        return;
    }
    c->w->d->proto.session[c->lc->mode](c);
}

/* The TLS handshake with server <server> that c->up was just connected to. Returns 0, a
 * local error for a shortage of ours (not the server's fault), UV_ECANCELED, or
 * UV_ETIMEDOUT / UV_EPROTO: the server's failure. */
static int tls_connect_upstream(struct cg_conn *c, const struct cg_upstream_conf *uc,
                                const char *server)
{
    SSL_CTX *ctx = cg_tls_upstream_ctx(c->gen->cfg->tls, (size_t)(uc - c->gen->cfg->upstreams));
    struct cg_tls_info info;
    int err;

    if (!ctx)
        return UV_ENOMEM;
    err = cg_tls_connect(&c->up, ctx, uc->tls.sni, uc->tls.verify ? uc->tls.sni : NULL, NULL,
                         (int64_t)uc->tls.handshake_timeout_ms, &info);
    if (err == 0) {
        CG_STAT_ADD(c->w->stats.tls_up_handshakes, 1);
        return 0;
    }
    if (err == UV_ECANCELED)
        return err;
    if (info.fail == CG_TLS_FAIL_LOCAL)
        return UV_ENOMEM;
    CG_STAT_ADD(c->w->stats.tls_up_fails, 1);
    cg_log_ratelimited(&tls_log, CG_LOG_WARN, "upstream %s: TLS handshake with %s failed: "
                       "%s: %s", uc->name, server, cg_tls_fail_name(info.fail), info.why);
    return err == UV_ETIMEDOUT ? UV_ETIMEDOUT : UV_EPROTO;
}

/* ------------------------------------------------------------------ PROXY protocol */

/* What a header carried, until the upstream connect: then only <src> stays, in the
 * connection's tail (proxy_trim()). */
struct pp_pending {
    union cg_conn_addr src;
    union cg_conn_addr dst;
    uint16_t           auth_len;
    uint16_t           id_len;
    uint8_t            tlv[];         /* AUTHORITY's value, then UNIQUE_ID's */
};

static struct cg_ratelimit proxy_log = CG_RATELIMIT_INIT(1000, 5);

_Static_assert(sizeof(struct cg_conn) % _Alignof(struct pp_pending *) == 0,
               "the tail holds a pointer while pending");

/* The union cg_conn_addr after <c> (pp_tail: 8-aligned, as sizeof(struct cg_conn) is). */
static union cg_conn_addr *tail_of(const struct cg_conn *c)
{
    return (union cg_conn_addr *)(uintptr_t)(c + 1);
}

static struct pp_pending *pending_of(const struct cg_conn *c)
{
    struct pp_pending *p = NULL;

    if (c->pp_state == CG_PP_PENDING)
        memcpy(&p, tail_of(c), sizeof(p));
    return p;
}

int cg_conn_client_addr(const struct cg_conn *c, struct sockaddr_storage *ss)
{
    const struct pp_pending *p = pending_of(c);
    const union cg_conn_addr *a = p ? &p->src : c->pp_state == CG_PP_ADDR ? tail_of(c) : NULL;
    socklen_t len = sizeof(*ss);

    memset(ss, 0, sizeof(*ss));
    if (a) {
        memcpy(ss, a, a->sa.sa_family == AF_INET ? sizeof(struct sockaddr_in)
                                                 : sizeof(struct sockaddr_in6));
        return 0;
    }
    if (getpeername(coro_stream_fd(&c->client), (struct sockaddr *)ss, &len) < 0)
        return -errno;
    return 0;
}

/* Keeps only the client's address, in the tail, once the upstream is connected (or not):
 * the destination and the TLVs served send_proxy alone. */
static void proxy_trim(struct cg_conn *c)
{
    struct pp_pending *p = pending_of(c);

    if (!p)
        return;
    memcpy(tail_of(c), &p->src, sizeof(p->src));
    c->pp_state = CG_PP_ADDR;
    free(p);
}

static void proxy_free(struct cg_conn *c)
{
    free(pending_of(c));
    c->pp_state = CG_PP_NONE;
}

static void sa_copy(union cg_conn_addr *to, const struct sockaddr_storage *from)
{
    memset(to, 0, sizeof(*to));
    memcpy(to, from, from->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                : sizeof(struct sockaddr_in6));
}

/* Keeps what header <r> carried, pending until the upstream connect. Returns 0 or
 * -ENOMEM. */
static int proxy_keep(struct cg_conn *c, const struct cg_pp_result *r)
{
    struct pp_pending *p = malloc(sizeof(*p) + r->authority_len + r->unique_id_len);

    if (!p)
        return -ENOMEM;
    sa_copy(&p->src, &r->src);
    sa_copy(&p->dst, &r->dst);
    p->auth_len = r->authority_len;
    p->id_len = r->unique_id_len;
    if (r->authority_len)
        memcpy(p->tlv, r->authority, r->authority_len);
    if (r->unique_id_len)
        memcpy(p->tlv + r->authority_len, r->unique_id, r->unique_id_len);
    memcpy(tail_of(c), &p, sizeof(p));
    c->pp_state = CG_PP_PENDING;
    return 0;
}

static const char *addr_text(const struct sockaddr_storage *ss, char *buf, size_t size)
{
    if (ss->ss_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)ss, buf, size);
    else if (ss->ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)ss, buf, size);
    else
        snprintf(buf, size, "?");
    return buf;
}

/* Refuses <c> for its header: counted by reason, logged (rate-limited), closed. */
static int proxy_refuse(struct cg_conn *c, enum cg_proxy_reject why, const char *what)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char peer[INET6_ADDRSTRLEN] = "?";

    CG_STAT_ADD(c->w->stats.proxy_rejected[why], 1);
    CG_STAT_ADD(c->l->stats.proxy_rejected[why], 1);
    if (getpeername(coro_stream_fd(&c->client), (struct sockaddr *)&ss, &len) == 0)
        addr_text(&ss, peer, sizeof(peer));
    cg_log_ratelimited(&proxy_log, CG_LOG_INFO, "listener %s: PROXY header from %s refused: "
                       "%s", c->lc->name, peer, what);
    cg_conn_closing(c, CG_CLOSE_PROXY);
    return -1;
}

/* The per-address admission checks the accept left out (worker.c), on the client's
 * address now known: the same table, tokens and quota, the same counters and episode
 * log as a refusal at accept. Returns 0 (c->ip_slot taken), or -1 (refused, closed). */
static int proxy_admit(struct cg_conn *c)
{
    struct cg_admission *a = c->w->d->adm;
    struct cg_adm_listener *al = c->l->adm;
    struct cg_verdict v = { .reason = -1 };
    struct sockaddr_storage ss;
    uint64_t now = uv_hrtime(), wait = 0;
    int r;

    if (!al || cg_conn_client_addr(c, &ss) < 0)
        return 0;
    r = cg_admission_check_ip(a, al, (struct sockaddr *)&ss, now, &c->ip_slot, &wait);
    if (r == 0)
        return 0;
    CG_STAT_ADD(c->w->stats.rejected[r], 1);
    CG_STAT_ADD(c->l->stats.rejected[r], 1);
    v.reason = r;
    if (cg_admission_note(a, al, r, now / 1000000))
        cg_admission_log_refusal(a, al, c->w->d->brk, c->lc->name, &v,
                                 (struct sockaddr *)&ss);
    cg_conn_closing(c, CG_CLOSE_REFUSED);
    /* Answered as at accept: a WebSocket client 429 or 503 with Retry-After (proto's
     * answer, reached through the daemon's hooks), a TCP one closed or reset. */
    if (c->lc->mode == CG_MODE_WEBSOCKET && c->w->d->proto.refuse_conn) {
        uint64_t retry = r == CG_REJ_IP_RATE ? wait / 1000000000u + 1 : 1;

        c->w->d->proto.refuse_conn(c, r, retry > 3600 ? 3600 : (unsigned)retry,
                                   c->lc->max_header_size);
    } else if (atomic_load_explicit(&al->reject, memory_order_relaxed) == CG_REJECT_RST) {
        struct linger lg = { 1, 0 };

        setsockopt(coro_stream_fd(&c->client), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    return -1;
}

/* Reads the PROXY header that starts the connection, within proxy_timeout: the bytes
 * after it go back to the stream for TLS or the session. Not inlined, like
 * tls_handshake(): its parse result must be off the stack before the session parks.
 * Returns 0, or -1 (refused or gone: reason recorded, counted). */
static __attribute__((noinline)) int proxy_header(struct cg_conn *c)
{
    const struct cg_listener_conf *lc = c->lc;
    uint64_t deadline = uv_hrtime() / 1000000 + lc->proxy_timeout_ms, now;
    struct coro_buf *b = NULL, *more = NULL;
    struct cg_pp_result r;
    char from[INET6_ADDRSTRLEN], to[INET6_ADDRSTRLEN];
    ssize_t n;
    int rc = 0;

    while (rc == 0) {
        now = uv_hrtime() / 1000000;
        n = now >= deadline ? UV_ETIMEDOUT
                            : coro_read(&c->client, b ? &more : &b, (int64_t)(deadline - now));
        if (n == UV_ETIMEDOUT) {
            coro_buf_put(c->w->sched, b);
            return proxy_refuse(c, CG_PPR_TIMEOUT, "not complete within proxy_timeout");
        }
        if (n < 0) {
            if (b && n == UV_EOF) {
                coro_buf_put(c->w->sched, b);
                return proxy_refuse(c, CG_PPR_BAD, "truncated: the client closed first");
            }
            coro_buf_put(c->w->sched, b);
            cg_conn_closing(c, n == UV_ECANCELED ? CG_CLOSE_STOPPED
                                                 : n == UV_EOF ? CG_CLOSE_CLIENT
                                                               : CG_CLOSE_ERROR);
            return -1;
        }
        if (more) {
            /* A header split over reads: gathered in the first buffer, which is far
             * larger than any header we accept. */
            size_t k = more->len - more->off, room = b->cap - b->len;

            memcpy(b->data + b->len, more->data + more->off, k < room ? k : room);
            b->len += (uint32_t)(k < room ? k : room);
            coro_buf_put(c->w->sched, more);
            more = NULL;
        }
        rc = cg_pp_parse(b->data + b->off, b->len - b->off, (unsigned)lc->accept_proxy, &r);
        if (rc == 0 && b->len == b->cap)
            rc = -CG_PPE_TOO_LONG;
    }
    if (rc < 0) {
        coro_buf_put(c->w->sched, b);
        return proxy_refuse(c, CG_PPR_BAD, cg_pp_error_name(rc));
    }
    CG_STAT_ADD(c->w->stats.bytes_in, (uint64_t)rc);
    CG_STAT_ADD(c->l->stats.bytes_in, (uint64_t)rc);
    if (r.has_addr && proxy_keep(c, &r) < 0) {
        coro_buf_put(c->w->sched, b);
        cg_conn_closing(c, CG_CLOSE_LOCAL);
        return -1;
    }
    if (r.has_addr)
        cg_debug("listener %s: PROXY v%u: client %s, to %s%s%.*s, unique id %u bytes",
                 lc->name, r.version, addr_text(&r.src, from, sizeof(from)),
                 addr_text(&r.dst, to, sizeof(to)), r.authority ? ", authority " : "",
                 (int)r.authority_len, r.authority ? (const char *)r.authority : "",
                 (unsigned)r.unique_id_len);
    else
        cg_debug("listener %s: PROXY v%u %s: the socket's addresses are used", lc->name,
                 r.version, r.local ? "LOCAL" : "UNKNOWN");
    b->off += (uint32_t)rc;
    coro_stream_unread(&c->client, b);    /* TLS or the session reads on from there */
    return proxy_admit(c);
}

/* The coroutine body of a connection on a listener with accept_proxy: the header, the
 * per-address admission on the address it carried, then TLS when on (the header comes
 * before the TLS handshake, as HAProxy reads it) and the listener's mode's session. */
static void proxy_session(void *arg)
{
    struct cg_conn *c = arg;

    c->co = coro_self();
    if (proxy_header(c) < 0 || (c->lc->tls.on && tls_handshake(c) < 0)) {
        cg_conn_end(c);
        return;
    }
    c->w->d->proto.session[c->lc->mode](c);
}

/* Sends server <srv>'s PROXY header, version <v>, on the just connected c->up: the client's
 * address (carried, or the socket's), and the address it connected to (carried, or our
 * socket's); v2 passes on the AUTHORITY and UNIQUE_ID a front balancer sent. Returns 0 or
 * a write error. */
static int proxy_send(struct cg_conn *c, int v, int64_t timeout_ms)
{
    const struct pp_pending *p = pending_of(c);
    struct sockaddr_storage src, dst;
    socklen_t len = sizeof(dst);
    struct cg_pp_tlv tlv[2];
    uint8_t buf[CG_PP_V2_MAX];
    size_t ntlv = 0;
    int n, err;

    err = cg_conn_client_addr(c, &src);
    if (err < 0)
        return UV_EINVAL;
    memset(&dst, 0, sizeof(dst));
    if (p)
        memcpy(&dst, &p->dst, sizeof(p->dst));
    else if (getsockname(coro_stream_fd(&c->client), (struct sockaddr *)&dst, &len) < 0)
        return uv_translate_sys_error(errno);
    if (p && p->auth_len)
        tlv[ntlv++] = (struct cg_pp_tlv){ CG_PP2_TYPE_AUTHORITY, p->auth_len, p->tlv };
    if (p && p->id_len)
        tlv[ntlv++] = (struct cg_pp_tlv){ CG_PP2_TYPE_UNIQUE_ID, p->id_len,
                                          p->tlv + p->auth_len };
    n = v == 1 ? cg_pp_build_v1((char *)buf, sizeof(buf), (struct sockaddr *)&src,
                                (struct sockaddr *)&dst)
               : cg_pp_build_v2(buf, sizeof(buf), (struct sockaddr *)&src,
                                (struct sockaddr *)&dst, tlv, ntlv);
    if (n < 0)
        return UV_EINVAL;
    return coro_write_copy(&c->up, buf, (size_t)n, timeout_ms);
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

int cg_conn_source_key(const struct cg_conn *c, uint64_t *key)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

    if (getpeername(coro_stream_fd(&c->client), (struct sockaddr *)&ss, &len) < 0)
        return -errno;
    if (ss.ss_family == AF_INET) {
        *key = cg_hash64(&((const struct sockaddr_in *)&ss)->sin_addr, 4, 0);
        return 0;
    }
    if (ss.ss_family != AF_INET6)
        return -EAFNOSUPPORT;
    /* A dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d: the same key as on an
     * IPv4 listener. */
    if (IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr))
        *key = cg_hash64(sin6->sin6_addr.s6_addr + 12, 4, 0);
    else
        *key = cg_hash64(&sin6->sin6_addr, 16, 0);
    return 0;
}

int cg_conn_connect_upstream(struct cg_conn *c, struct cg_upstream *up, const uint64_t *key)
{
    const struct cg_upstream_conf *uc = up->conf;
    struct cg_worker *w = c->w;
    struct sockaddr_storage src;
    uint64_t tried = 0;
    unsigned attempt = 0, skipped = 0;
    uint64_t t0, t_begin = uv_hrtime();
    int err = UV_EHOSTUNREACH, more, probe, tls_step;

    if (!key && uc->balance == CG_BALANCE_HASH)
        atomic_fetch_add_explicit(&up->hash_fallbacks, 1, memory_order_relaxed);
    if (c->log)
        c->log->upstream = (int32_t)(up - c->gen->ups);

    while (attempt <= uc->retries) {
        struct cg_server *srv = cg_upstream_pick_key(up, w->id, tried, key);

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
        /* The PROXY header goes first, before TLS (a server's own send_proxy wins). */
        if (err == 0 && (srv->conf->send_proxy >= 0 ? srv->conf->send_proxy : uc->send_proxy))
            err = proxy_send(c, srv->conf->send_proxy >= 0 ? srv->conf->send_proxy
                                                           : uc->send_proxy,
                             (int64_t)uc->connect_timeout_ms);
        tls_step = err == 0 && uc->tls.on;
        if (tls_step)
            err = tls_connect_upstream(c, uc, srv->conf->name);
        if (err == 0) {
            cg_lat_hist_record(&w->stats.connect_lat, (uv_hrtime() - t0) / 1000);
            coro_stream_nodelay(&c->up, 1);
            atomic_fetch_add(&srv->connects, 1);
            if (!defers_report(c))
                cg_server_report(srv, 1, uv_hrtime() / 1000000, NULL);
            c->srv = srv;
            if (c->log)
                c->log->connect_ms = (uint32_t)((uv_hrtime() - t_begin) / 1000000);
            proxy_trim(c);
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
    proxy_trim(c);
    cg_conn_closing(c, CG_CLOSE_NO_SERVER);
    return err;
}
