/* gateway/proto/ws-open.c — a WebSocket session's opening: the client's request read and
 * checked under the listener's limits (health checks and refusals answered here), routing
 * by path and Host, the backend's connect and its own handshake (whose outcome the
 * server's failure breaker hears, with the blame where it belongs), and our 101. The relay
 * that follows is ws.c. */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "coro/io.h"
#include "common/handshake.h"
#include "common/hash.h"
#include "base/cidr.h"
#include "base/log.h"
#include "common/rand.h"
#include "core/conn.h"
#include "core/relay.h"
#include "core/gen.h"
#include "config/route.h"
#include "guard/tokenbucket.h"
#include "common/utf8.h"
#include "core/worker.h"
#include "proto/refusal.h"
#include "proto/ws.h"
#include "proto/ws-int.h"

static struct cg_ratelimit upstream_log = CG_RATELIMIT_INIT(1000, 5);

/* ------------------------------------------------------------------ handshakes */

static void count_status(struct sess *s, int status)
{
    CG_STAT_ADD(s->c->w->stats.ws_hs_status[cg_http_status_index(status)], 1);
}

/* Reads and drops what the client still sends, briefly, after our last bytes: closing
 * with unread data would reset the connection and could destroy the response in flight. */
void cg_ws__linger(struct sess *s, int64_t ms)
{
    struct coro_stream *st = &s->c->client;
    uv_loop_t *loop = coro_sched_loop(s->c->w->sched);
    uint64_t end = uv_now(loop) + (uint64_t)ms, now;
    struct coro_buf *b;

    if (coro_flush(st, ms) < 0 || coro_shutdown(st) < 0)
        return;
    for (;;) {
        now = uv_now(loop);
        if (now >= end || coro_read(st, &b, (int64_t)(end - now)) < 0)
            return;
        coro_buf_put(s->c->w->sched, b);
    }
}

/* Answers the client with <status> (counted unless 200), then closes. */
static void answer(struct sess *s, int status, const char *why, int head_only)
{
    char buf[512];
    int n = cg_http_response(status, NULL, buf, sizeof(buf));
    char *body;

    if (status != 200)
        count_status(s, status);
    cg_conn_closing(s->c, status == 200 ? CG_CLOSE_DONE : status < 500 ? CG_CLOSE_HANDSHAKE
                                                                     : CG_CLOSE_UPSTREAM);
    cg_debug("listener %s: handshake answered %d: %s", s->c->lc->name, status, why ? why : "");
    if (n < 0)
        return;
    if (head_only && (body = strstr(buf, "\r\n\r\n")) != NULL)
        n = (int)(body + 4 - buf);
    CG_STAT_ADD(s->c->w->stats.bytes_out, (uint64_t)n);
    if (coro_write_copy(&s->c->client, buf, (size_t)n, WRITE_TIMEOUT_MS) == 0)
        cg_ws__linger(s, LINGER_MS);
}

/* Feeds what <st> delivers to <hs> until its head is complete, for <timeout_ms> at most.
 * Leftover bytes after the head go to <x>->in. Returns 0, UV_ETIMEDOUT, a read error
 * (UV_EOF, UV_ECANCELED...), or the parse error of cg_handshake_feed() (negative errno). */
static int read_head(struct sess *s, struct coro_stream *st, struct cg_handshake *hs,
                     struct side *x, uint64_t timeout_ms)
{
    uv_loop_t *loop = coro_sched_loop(s->c->w->sched);
    uint64_t start = uv_now(loop), el;
    struct coro_buf *b;
    ssize_t n;
    int rc;

    for (;;) {
        el = uv_now(loop) - start;
        n = coro_read(st, &b, el >= timeout_ms ? 0 : (int64_t)(timeout_ms - el));
        if (n < 0)
            return (int)n;
        if (x->client) {
            CG_STAT_ADD(s->c->w->stats.bytes_in, (uint64_t)n);
            CG_STAT_ADD(s->c->l->stats.bytes_in, (uint64_t)n);
        }
        rc = cg_handshake_feed(hs, b->data + b->off, (size_t)n);
        if (rc == 1 && hs->tail) {
            b->off = b->len - hs->tail;
            x->in = b;
        } else {
            coro_buf_put(s->c->w->sched, b);
        }
        if (rc != 0)
            return rc == 1 ? 0 : rc;
    }
}

/* A printable token we can pass on as X-Request-Id. */
static int is_sane_id(const char *id)
{
    size_t n = id ? strlen(id) : 0;

    return n > 0 && n <= REQUEST_ID_MAX &&
           strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:+/=")
               == n;
}

static void prepare_forward(struct sess *s, struct hsblock *hb)
{
    const struct cg_listener_conf *lc = s->c->lc;
    struct sockaddr_storage ss;
    char client[64];
    const char *id = cg_handshake_get(&hb->req, CG_HS_REQUEST_ID);
    uint8_t raw[16];
    int i;

    if (is_sane_id(id)) {
        strcpy(hb->request_id, id);
    } else {
        cg_rand_bytes(raw, sizeof(raw));
        for (i = 0; i < 16; i++) {
            hb->request_id[2 * i] = "0123456789abcdef"[raw[i] >> 4];
            hb->request_id[2 * i + 1] = "0123456789abcdef"[raw[i] & 15];
        }
        hb->request_id[32] = '\0';
    }
    strcpy(hb->addr, "unknown");
    hb->trusted = 0;
    /* The client as a PROXY header carried it, else the socket's peer (core/conn.h). */
    if (cg_conn_client_addr(s->c, &ss) == 0) {
        cg_addr_name((struct sockaddr *)&ss, hb->addr, sizeof(hb->addr));
        /* A trusted proxy's X-Forwarded-For and Forwarded are kept (and appended to);
         * anyone else's are replaced. The client is the rightmost untrusted address. */
        hb->trusted = lc->ntrusted_proxies &&
                      cg_cidr_list_match(lc->trusted_proxies, lc->ntrusted_proxies,
                                         (struct sockaddr *)&ss);
        if (hb->trusted && cg_log_enabled(CG_LOG_DEBUG) &&
            cg_cidr_xff_client(lc->trusted_proxies, lc->ntrusted_proxies,
                               cg_handshake_get(&hb->req, CG_HS_XFF), client, sizeof(client)))
            cg_debug("listener %s: client %s (X-Forwarded-For from trusted %s)", lc->name,
                     client, hb->addr);
    }
}

/* How a backend handshake ended, for the server's failure breaker (breaker.h). */
enum blame {
    BLAME_NONE,         /* upgraded, or the server answered HTTP: it works */
    BLAME_SERVER,       /* the server failed: counts towards its ejection */
    BLAME_NEITHER,      /* ours (memory) or a stop: tells nothing about the server */
};

/* The backend's side of the handshake. Returns 0 (upgraded), or the status to answer the
 * client with, or UV_ECANCELED; *<blame> says whose failure it was. A backend that answers
 * the upgrade with a well-formed HTTP status of its own is up and refused this request (a
 * 4xx for a header, a path, a credential the client sent): the status goes to the client,
 * as HAProxy and nginx pass it on, and only a 5xx counts against the server. A client must
 * never be able to eject servers by what it sends. */
static int backend_handshake(struct sess *s, struct hsblock *hb, enum blame *blame)
{
    struct cg_conn *c = s->c;
    const struct cg_listener_conf *lc = s->c->lc;
    struct cg_hs_forward f = {
        .client_addr = hb->addr, .proto = lc->tls.on ? "https" : "http",
        .request_id = hb->request_id,
        /* The client's key goes on, as HAProxy and nginx pass it: the backend's accept
         * value is then our 101's, computed once (one SHA-1 fewer per connection), and
         * checked below. The key proves a server read the request as WebSocket; its
         * randomness is the client's business (RFC 6455 §4.1), a proxy adds nothing by
         * drawing another. */
        .key = cg_handshake_get(&hb->req, CG_HS_KEY),
        .extensions = hb->ext[0] ? hb->ext : NULL,
        .cert_subject = c->peer_cert, .keep_chain = hb->trusted,
        .cert_sha256 = c->peer_cert ? c->peer_cert + strlen(c->peer_cert) + 1 : NULL,
    };
    struct cg_hs_limits lim = { RESP_HEAD_MAX, 100, 0 };
    struct coro_buf *b;
    const char *why;
    int n, err, status = 0;

    *blame = BLAME_NEITHER;
    b = coro_buf_get(s->c->w->sched, 2 * (size_t)hb->req.fed + 2048);   /* Host goes twice */
    if (!b)
        return 503;
    n = cg_handshake_backend_request(&hb->req, &f, b->data, b->cap);
    free(c->peer_cert);                 /* written into the request: not needed after */
    c->peer_cert = NULL;
    if (n < 0) {
        coro_buf_put(s->c->w->sched, b);
        return 500;
    }
    b->len = (uint32_t)n;
    err = coro_write(&c->up, b, (int64_t)lc->upstream_handshake_timeout_ms);
    cg_handshake_init(&hb->resp, CG_HS_RESPONSE, &lim);
    /* The request's strings are final: the response's go after them. */
    cg_handshake_set_arena(&hb->resp, hb->req.arena + hb->req.arena_used,
                           hb->req.arena_cap - hb->req.arena_used);
    if (err == 0)
        err = read_head(s, &c->up, &hb->resp, &s->be, lc->upstream_handshake_timeout_ms);
    if (err == 0 && (status = (int)llhttp_get_status_code(&hb->resp.parser)) != 101 &&
        status >= 100 && status <= 599) {
        *blame = status >= 500 ? BLAME_SERVER : BLAME_NONE;
        CG_STAT_ADD(s->c->w->stats.ws_upstream_refusals, 1);
        cg_log_ratelimited(&upstream_log, CG_LOG_INFO, "listener %s: %s answered the "
                           "WebSocket upgrade with %d", lc->name, c->srv->conf->name, status);
        return status >= 400 ? status : 502;
    }
    if (err == 0)
        err = cg_handshake_check_response_accept(&hb->resp, hb->req.accept,
                                                 cg_handshake_get(&hb->req, CG_HS_PROTOCOL),
                                                 hb->ext[0] ? hb->ext : NULL);
    if (err == 0) {
        *blame = BLAME_NONE;
        return 0;
    }
    if (err == UV_ECANCELED)
        return err;
    *blame = BLAME_SERVER;
    why = err == UV_ETIMEDOUT ? "timed out" : err == UV_EOF ? "connection closed"
        : err == -EPROTO || hb->resp.error ? hb->resp.error : uv_strerror(err);
    atomic_fetch_add(&c->srv->connect_fails, 1);
    CG_STAT_ADD(s->c->w->stats.ws_upstream_fails, 1);
    cg_log_ratelimited(&upstream_log, CG_LOG_WARN, "listener %s: WebSocket handshake with "
                       "%s failed: %s", lc->name, c->srv->conf->name, why ? why : "?");
    return err == UV_ETIMEDOUT ? 504 : 502;
}

/* The hash key of the client's request <hs> for <up> with balance = hash, into *<key>:
 * the hash_key's value through cg_hash64(). Returns 1, or 0 when the request has none (or
 * an empty one: no session to stick to), or <up> does not hash. */
static int request_key(const struct cg_conn *c, const struct cg_upstream *up,
                       const struct cg_handshake *hs, uint64_t *key)
{
    const struct cg_upstream_conf *uc = up->conf;
    const char *v = NULL;
    size_t n = 0;

    if (uc->balance != CG_BALANCE_HASH)
        return 0;
    switch (uc->hash_key) {
    case CG_HASH_SOURCE:
        return cg_conn_source_key(c, key) == 0;
    case CG_HASH_HEADER:
        v = cg_handshake_header(hs, uc->hash_key_name);
        n = v ? strlen(v) : 0;
        break;
    case CG_HASH_COOKIE:
        v = cg_handshake_cookie(hs, uc->hash_key_name, &n);
        break;
    case CG_HASH_QUERY:
        v = cg_handshake_query(hs, uc->hash_key_name, &n);
        break;
    case CG_HASH_PATH:
        v = cg_handshake_path(hs, &n);
        break;
    }
    if (!v || n == 0)
        return 0;
    *key = cg_hash64(v, n, 0);
    return 1;
}

/* The session up to the relay: the client's handshake (health checks and refusals are
 * answered here), routing, the backend's connect and handshake, our 101. Returns 0 when
 * the relay may start, with c->srv counted active; -1 when the session is over (answered
 * or aborted, c->srv released). Not inlined: its frame (limits, the handshake state's
 * pointers, an answer's buffer) must not stay on the stack under the relay's park, which
 * every idle connection's saved stack would carry (docs/coro-stacks.md). */
__attribute__((noinline)) int cg_ws__open(struct sess *s)
{
    struct cg_conn *c = s->c;
    struct cg_worker *w = c->w;
    const struct cg_listener_conf *lc = c->lc;    /* its generation's, for its life */
    struct cg_hs_limits lim = {
        (uint32_t)lc->max_header_size, lc->max_headers, (uint32_t)lc->max_request_line,
    };
    struct cg_hs_policy pol = { lc->health_path, lc->allowed_origins };
    struct hsblock *hb;
    const struct cg_route *rt;
    struct cg_upstream *up;
    uint64_t t0 = uv_hrtime();
    const char *host, *path, *ext;
    size_t plen;
    uint64_t key;
    int err, n;

    /* Zeroed only up to the buffers (ext, head, arena: 2.5 KiB that are written before
     * they are read): zeroing them all cost about 2,500 instructions a connection. */
    hb = malloc(sizeof(*hb));
    if (!hb)
        return -1;
    memset(hb, 0, offsetof(struct hsblock, ext));
    hb->ext[0] = '\0';                /* no offers to pass on unless prepared below */
    cg_handshake_init(&hb->req, CG_HS_REQUEST, &lim);
    cg_handshake_set_arena(&hb->req, hb->arena, sizeof(hb->arena));
    cg_handshake_keep_header(&hb->req, lc->hash_header);       /* balance = hash */
    err = read_head(s, &c->client, &hb->req, &s->cl, lc->handshake_timeout_ms);
    if (err == UV_ETIMEDOUT) {
        answer(s, 408, "handshake timeout", 0);
        goto out;
    }
    if (err == -EMSGSIZE || err == -EBADMSG || err == -ENOMEM) {
        answer(s, hb->req.status, hb->req.error, 0);
        goto out;
    }
    if (err < 0) {
        CG_STAT_ADD(w->stats.ws_hs_aborted, 1);
        cg_conn_closing(c, err == UV_ECANCELED ? CG_CLOSE_STOPPED : CG_CLOSE_CLIENT);
        goto out;
    }
    err = cg_handshake_check_request(&hb->req, &pol);
    if (err == 1) {
        CG_STAT_ADD(w->stats.ws_health, 1);
        answer(s, 200, "health check", llhttp_get_method(&hb->req.parser) == HTTP_HEAD);
        goto out;
    }
    if (err < 0) {
        answer(s, hb->req.status, hb->req.error, 0);
        goto out;
    }

    host = cg_handshake_get(&hb->req, CG_HS_HOST);
    path = cg_handshake_path(&hb->req, &plen);
    rt = cg_route_match(lc->routes, lc->nroutes, host, host ? strlen(host) : 0, path, plen);
    up = &c->gen->ups[rt ? rt->upstream : lc->upstream];
    err = cg_conn_connect_upstream(c, up, request_key(c, up, &hb->req, &key) ? &key : NULL);
    if (err < 0) {
        if (err == UV_ECANCELED || cg_local_error(err)) {
            answer(s, 503, err == UV_ECANCELED ? "stopping" : uv_strerror(err), 0);
            goto out;
        }
        atomic_fetch_add(&up->no_server, 1);
        CG_STAT_ADD(w->stats.no_server, 1);
        answer(s, err == UV_ETIMEDOUT ? 504 : 502, uv_strerror(err), 0);
        goto out;
    }
    c->up.wq_high = (uint32_t)lc->high_water;
    prepare_forward(s, hb);
    /* permessage-deflate end to end: the client's offers go to the backend, whose answer
     * (checked against them) goes to the client; frames relay compressed. Other
     * extensions never pass, nor any to a plain TCP backend. */
    if (!s->be.raw && lc->permessage_deflate == CG_DEFLATE_PASSTHROUGH &&
        cg_ws_deflate_offer(cg_handshake_get(&hb->req, CG_HS_EXTENSIONS), hb->ext,
                            sizeof(hb->ext)) < 0)
        hb->ext[0] = '\0';           /* offers too long to pass on: none */
    cg_conn_log_request_id(c, hb->request_id);
    if (!s->be.raw) {
        enum blame blame;

        err = backend_handshake(s, hb, &blame);
        /* The outcome for the server's failure breaker (relay.c left it to us). */
        cg_server_report(c->srv, blame == BLAME_NONE ? 1 : blame == BLAME_SERVER ? 0 : -1,
                         uv_hrtime() / 1000000, "WebSocket handshake failed");
        if (err != 0) {
            answer(s, err == UV_ECANCELED ? 503 : err, "upstream handshake", 0);
            goto out;
        }
    }
    ext = s->be.raw ? NULL : cg_handshake_get(&hb->resp, CG_HS_EXTENSIONS);
    s->deflate = ext && *ext;       /* checked: it can only be permessage-deflate */
    n = cg_handshake_accept_response(&hb->req, s->be.raw ? NULL
                                     : cg_handshake_get(&hb->resp, CG_HS_PROTOCOL), ext,
                                     hb->request_id, hb->head, sizeof(hb->head));
    if (n < 0 || coro_write_copy(&c->client, hb->head, (size_t)n, WRITE_TIMEOUT_MS) < 0)
        goto out;
    CG_STAT_ADD(w->stats.bytes_out, (uint64_t)n);
    CG_STAT_ADD(w->stats.ws_upgrades, 1);
    cg_lat_hist_record(&w->stats.handshake_lat, (uv_hrtime() - t0) / 1000);
    cg_conn_log_handshake(c);
    cg_handshake_deinit(&hb->req);
    cg_handshake_deinit(&hb->resp);
    free(hb);
    return 0;

out:
    cg_handshake_deinit(&hb->req);
    cg_handshake_deinit(&hb->resp);
    free(hb);
    return -1;
}

