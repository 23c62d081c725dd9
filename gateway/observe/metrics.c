/* gateway/observe/metrics.c — JSON and Prometheus renderings of the daemon's counters.
 *
 * Latency histograms are ours rather than loadgen/hist.h's HdrHistogram: Prometheus wants
 * fixed `le` buckets anyway, and an HdrHistogram (a 270 KB counts array, plain integers,
 * one thread) could not be read live from the main thread without a data race or a copy
 * through the worker. A fixed array of single-writer atomics costs 152 bytes per worker,
 * one relaxed store per value, and is read like every other counter.
 *
 * Worker counters are listed once, in worker_counters[]: both renderings walk it. Rows of
 * one Prometheus family (same name, different `reason`) must be adjacent.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "guard/admission.h"
#include "guard/breaker.h"
#include "coro/coro.h"
#include "observe/metrics.h"
#include "observe/schedlat.h"
#include "core/tls.h"
#include "core/upstream.h"
#include "core/worker.h"
#include "proto/ws.h"

#ifndef CG_VERSION
#define CG_VERSION "0.0.0"
#endif

/* ------------------------------------------------------------------ histograms */

/* The same bounds in seconds, as Prometheus `le` labels. */
static const char *const lat_le[CG_LAT_BOUNDS] = {
    "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10",
};

/* Reads <h> into cumulative counts <cum> (CG_LAT_BOUNDS + 1 of them, the last = count). */
static void hist_read(const struct cg_lat_hist *h, uint64_t *cum, uint64_t *sum_us)
{
    uint64_t total = 0;
    unsigned i;

    *sum_us = atomic_load_explicit(&h->sum_us, memory_order_relaxed);
    for (i = 0; i <= CG_LAT_BOUNDS; i++) {
        total += atomic_load_explicit(&h->bucket[i], memory_order_relaxed);
        cum[i] = total;
    }
}

/* Appends <s> as a Prometheus label value (quotes not included). */
static void prom_label(struct cg_sbuf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            cg_sbuf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            cg_sbuf_add(b, "\\n", 2);
        else
            cg_sbuf_add(b, s, 1);
    }
}

/* ------------------------------------------------------------------ counter tables */

enum { COUNTER, GAUGE };

struct counter_desc {
    const char *json;       /* key in `show stats` */
    const char *family;     /* Prometheus name */
    const char *reason;     /* the `reason` label, or NULL */
    int         type;
    const char *help;
    size_t      off;
    unsigned    n;          /* > 0: an array of n counters, each labelled reason_of(i) */
    const char *(*reason_of)(unsigned i);
    const char *label;      /* the reason's label name; NULL: "reason" */
    int         tls_only;   /* listener counters shown only for listeners with tls = on */
};

static const char *ws_status_reason(unsigned i)
{
    return cg_http_status_label((enum cg_ws_status_stat)i);
}

static const char *reject_reason(unsigned i)
{
    return cg_reject_label((int)i);
}

/* Slot 0 of tls_fail[] is CG_TLS_OK, never counted: the rows start at slot 1. */
static const char *tls_fail_reason(unsigned i)
{
    return cg_tls_fail_label(i + 1);
}

static const char *tls_cipher_reason(unsigned i)
{
    return cg_tls_cipher_label(i);
}

static const char *proxy_reason(unsigned i)
{
    return cg_proxy_reject_label((int)i);
}

static const char *ws_close_reason(unsigned i)
{
    return cg_ws_close_name((enum cg_ws_close_stat)i);
}

static const char *ws_proto_reason(unsigned i)
{
    return cg_ws_proto_name((enum cg_ws_proto_stat)i);
}

#define WS(f)          offsetof(struct cg_worker_stats, f), 0, NULL, NULL, 0
#define WSA(f, n, fn)  offsetof(struct cg_worker_stats, f), n, fn, NULL, 0
#define LS(f)          offsetof(struct cg_listener_stats, f), 0, NULL, NULL, 0
#define LSA(f, n, fn)  offsetof(struct cg_listener_stats, f), n, fn, NULL, 0
/* With a label name of their own; TLS listener counters (shown for tls = on only). */
#define WSL(f, l)      offsetof(struct cg_worker_stats, f), 0, NULL, l, 0
#define TLS(f, l)      offsetof(struct cg_listener_stats, f), 0, NULL, l, 1
#define TLSA(f, n, fn, l) offsetof(struct cg_listener_stats, f), n, fn, l, 1
#define WSH(f)         offsetof(struct cg_worker_stats, f)

static const struct counter_desc worker_counters[] = {
    { "accepted", "corogate_worker_connections_accepted_total", NULL, COUNTER,
      "Client connections accepted.", WS(accepted) },
    { "active", "corogate_worker_connections_active", NULL, GAUGE,
      "Client connections open now.", WS(active) },
    { "closed", "corogate_worker_connections_closed_total", NULL, COUNTER,
      "Client connections closed.", WS(closed) },
    { "rejected_max", "corogate_worker_connections_rejected_total", "max_connections",
      COUNTER, "Client connections refused at accept, by reason.", WS(rejected_max) },
    { "rejected", "corogate_worker_connections_rejected_total", NULL, COUNTER, NULL,
      WSA(rejected, CG_REJ_N, reject_reason) },
    { "accept_emfile", "corogate_worker_accept_errors_total", "emfile", COUNTER,
      "accept() failures, by reason (emfile: out of descriptors, connection shed).",
      WS(accept_emfile) },
    { "accept_errors", "corogate_worker_accept_errors_total", "other", COUNTER, NULL,
      WS(accept_errors) },
    { "proxy_rejected", "corogate_proxy_rejected_total", NULL, COUNTER,
      "Client connections refused for their PROXY protocol header (accept_proxy), by "
      "reason.", WSA(proxy_rejected, CG_PPR_N, proxy_reason) },
    { "no_server", "corogate_worker_connection_errors_total", "no_server", COUNTER,
      "Client connections ended by an error or a timeout, by reason.", WS(no_server) },
    { "idle_timeouts", "corogate_worker_connection_errors_total", "idle_timeout", COUNTER,
      NULL, WS(idle_timeouts) },
    { "resets", "corogate_worker_connection_errors_total", "reset", COUNTER, NULL,
      WS(resets) },
    { "lifetime_closes", "corogate_worker_lifetime_closes_total", NULL, COUNTER,
      "Client connections closed at max_connection_lifetime (WebSocket: close 1001).",
      WS(lifetime_closes) },
    { "connect_fails", "corogate_worker_upstream_connect_failures_total", NULL, COUNTER,
      "Failed connect attempts to upstream servers (each retry counts).", WS(connect_fails) },
    { "upstream_local_errors", "corogate_worker_upstream_local_errors_total", NULL, COUNTER,
      "Upstream connects given up for a shortage of corogate's own (descriptors, memory, "
      "local ports): never counted against a server.", WS(upstream_local_errors) },
    { "bytes_in", "corogate_worker_received_bytes_total", NULL, COUNTER,
      "Bytes received from clients.", WS(bytes_in) },
    { "bytes_out", "corogate_worker_sent_bytes_total", NULL, COUNTER,
      "Bytes sent to clients.", WS(bytes_out) },
    /* websocket listeners */
    { "ws_upgrades", "corogate_websocket_upgrades_total", NULL, COUNTER,
      "WebSocket handshakes completed (101 sent, relaying).", WS(ws_upgrades) },
    { "ws_health", "corogate_websocket_health_checks_total", NULL, COUNTER,
      "Health-check requests answered 200 on websocket listeners.", WS(ws_health) },
    { "ws_hs_aborted", "corogate_websocket_handshake_failures_total", "aborted", COUNTER,
      "WebSocket handshakes that failed, by reason: the HTTP status sent, or aborted by "
      "the client.", WS(ws_hs_aborted) },
    { "ws_hs_status", "corogate_websocket_handshake_failures_total", NULL, COUNTER, NULL,
      WSA(ws_hs_status, CG_WSS_N, ws_status_reason) },
    { "ws_upstream_fails", "corogate_websocket_upstream_handshake_failures_total", NULL,
      COUNTER, "Backend WebSocket handshakes failed or botched (counted against the server).",
      WS(ws_upstream_fails) },
    { "ws_upstream_refusals", "corogate_websocket_upstream_refusals_total", NULL, COUNTER,
      "Backends that answered the upgrade with an HTTP status of their own (passed on to "
      "the client; only a 5xx counts against the server).", WS(ws_upstream_refusals) },
    { "ws_close_sent", "corogate_websocket_closes_sent_total", NULL, COUNTER,
      "Close frames sent to clients, by close code.", WSA(ws_close_sent, CG_WSC_N, ws_close_reason) },
    { "ws_close_rcvd", "corogate_websocket_closes_received_total", NULL, COUNTER,
      "Close frames received from clients, by close code.", WSA(ws_close_rcvd, CG_WSC_N, ws_close_reason) },
    { "ws_proto_errors", "corogate_websocket_protocol_errors_total", NULL, COUNTER,
      "Protocol violations by clients, by kind.", WSA(ws_proto_errors, CG_WSP_N, ws_proto_reason) },
    { "ws_upstream_proto_errors", "corogate_websocket_upstream_protocol_errors_total", NULL,
      COUNTER, "Protocol violations by backends.", WS(ws_upstream_proto_errors) },
    { "ws_msgs_in", "corogate_websocket_received_messages_total", NULL, COUNTER,
      "WebSocket messages received from clients.", WS(ws_msgs_in) },
    { "ws_msgs_out", "corogate_websocket_sent_messages_total", NULL, COUNTER,
      "WebSocket messages sent to clients.", WS(ws_msgs_out) },
    { "ws_too_big", "corogate_websocket_messages_too_big_total", NULL, COUNTER,
      "Connections closed with 1009: a message over max_message_size.", WS(ws_too_big) },
    { "ws_rate_limited", "corogate_websocket_rate_limited_total", NULL, COUNTER,
      "Messages delayed, or connections closed (1008), by the message rate limit.",
      WS(ws_rate_limited) },
    { "ws_keepalive_timeouts", "corogate_websocket_keepalive_timeouts_total", NULL, COUNTER,
      "Connections closed because a ping went unanswered.", WS(ws_keepalive_timeouts) },
    { "ws_close_timeouts", "corogate_websocket_close_timeouts_total", NULL, COUNTER,
      "Close handshakes cut at close_timeout.", WS(ws_close_timeouts) },
    { "log_lines_dropped", "corogate_log_lines_dropped_total", NULL, COUNTER,
      "Connection log lines dropped: the writer's queue (access_log_queue) was full.",
      WS(log_dropped) },
    /* upstreams with tls = on */
    { "tls_up_handshakes", "corogate_upstream_tls_handshakes_total", "ok", COUNTER,
      "TLS handshakes with upstream servers, by result (a failure counts against the "
      "server).", WSL(tls_up_handshakes, "result") },
    { "tls_up_fails", "corogate_upstream_tls_handshakes_total", "failed", COUNTER, NULL,
      WSL(tls_up_fails, "result") },
};

static const struct counter_desc listener_counters[] = {
    { "accepted", "corogate_listener_connections_accepted_total", NULL, COUNTER,
      "Client connections accepted, per listener and worker.", LS(accepted) },
    { "active", "corogate_listener_connections_active", NULL, GAUGE,
      "Client connections open now, per listener and worker.", LS(active) },
    { "rejected_max", "corogate_listener_connections_rejected_total", "max_connections",
      COUNTER, "Client connections refused at accept, by reason.", LS(rejected_max) },
    { "rejected", "corogate_listener_connections_rejected_total", NULL, COUNTER, NULL,
      LSA(rejected, CG_REJ_N, reject_reason) },
    { "proxy_rejected", "corogate_listener_proxy_rejected_total", NULL, COUNTER,
      "Client connections refused for their PROXY protocol header, per listener and "
      "worker, by reason.", LSA(proxy_rejected, CG_PPR_N, proxy_reason) },
    { "bytes_in", "corogate_listener_received_bytes_total", NULL, COUNTER,
      "Bytes received from clients, per listener and worker.", LS(bytes_in) },
    { "bytes_out", "corogate_listener_sent_bytes_total", NULL, COUNTER,
      "Bytes sent to clients, per listener and worker.", LS(bytes_out) },
    /* tls = on */
    { "tls_full", "corogate_tls_handshakes_total", "full", COUNTER,
      "TLS handshakes with clients, by result: full, resumed (from a ticket), or why it "
      "failed.", TLS(tls_full, "result") },
    { "tls_resumed", "corogate_tls_handshakes_total", "resumed", COUNTER, NULL,
      TLS(tls_resumed, "result") },
    { "tls_fail", "corogate_tls_handshakes_total", NULL, COUNTER, NULL,
      TLSA(tls_fail[1], CG_TLS_FAILS - 1, tls_fail_reason, "result") },
    { "tls_v12", "corogate_tls_protocol_total", "TLSv1.2", COUNTER,
      "TLS handshakes with clients completed, by protocol version.", TLS(tls_v12, "protocol") },
    { "tls_v13", "corogate_tls_protocol_total", "TLSv1.3", COUNTER, NULL, TLS(tls_v13, "protocol") },
    { "tls_cipher", "corogate_tls_cipher_total", NULL, COUNTER,
      "TLS handshakes with clients completed, by cipher suite.",
      TLSA(tls_cipher, CG_TLS_CIPHERS, tls_cipher_reason, "cipher") },
};

struct hist_desc {
    const char *json;
    const char *family;
    const char *help;
    size_t      off;
};

static const struct hist_desc worker_hists[] = {
    { "connect_latency", "corogate_upstream_connect_duration_seconds",
      "Time to connect to an upstream server, successful connects.", WSH(connect_lat) },
    { "handshake_latency", "corogate_websocket_handshake_duration_seconds",
      "Time from a WebSocket request to the 101 response.", WSH(handshake_lat) },
    { "tls_handshake_latency", "corogate_tls_handshake_duration_seconds",
      "Time of a client's TLS handshake, completed ones.", WSH(tls_lat) },
};

/* Log2 histograms of struct cg_worker_stats: rendered with the scheduler's (schedlat.h). */
static const struct hist_desc worker_log2s[] = {
    { "loop_busy", "corogate_loop_busy_seconds",
      "Event-loop lag: how long one loop iteration's callbacks ran, from the return of poll "
      "to the next poll.", WSH(loop_busy) },
};

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

/* Marks <words> 64-bit words from byte offset <off> in <uses>. */
static int cover(unsigned *uses, size_t n, size_t off, size_t words)
{
    size_t i;

    if (off % sizeof(uint64_t) || off / sizeof(uint64_t) + words > n)
        return -ERANGE;
    for (i = 0; i < words; i++)
        uses[off / sizeof(uint64_t) + i]++;
    return 0;
}

int cg_metrics_worker_coverage(unsigned *uses, size_t n)
{
    size_t k;
    int err = 0;

    for (k = 0; k < NELEMS(worker_counters) && !err; k++)
        err = cover(uses, n, worker_counters[k].off,
                    worker_counters[k].n ? worker_counters[k].n : 1);
    for (k = 0; k < NELEMS(worker_hists) && !err; k++)
        err = cover(uses, n, worker_hists[k].off,
                    sizeof(struct cg_lat_hist) / sizeof(uint64_t));
    for (k = 0; k < NELEMS(worker_log2s) && !err; k++)
        err = cover(uses, n, worker_log2s[k].off,
                    sizeof(struct cg_log2_hist) / sizeof(uint64_t));
    return err;
}

static uint64_t load_at(const void *base, size_t off)
{
    return atomic_load_explicit((const _Atomic uint64_t *)((const char *)base + off),
                                memory_order_relaxed);
}

static const char *server_state_name(int state)
{
    switch (state) {
    case CG_SERVER_READY: return "ready";
    case CG_SERVER_DRAIN: return "drain";
    case CG_SERVER_MAINT: return "maint";
    }
    return "?";
}

/* ------------------------------------------------------------------ scheduling */

/* Worker <i>'s scheduling figures (schedlat.h), read once for a rendering. */
struct sched_view {
    struct cg_sched_worker k;       /* the kernel probes' figures */
    struct cg_sched_hist   coro;    /* coroutine ready-to-run delays */
    int                    has_k;
    int                    has_coro;
};

/* Reads every worker's figures: an array of d->nworkers (the caller frees it), or NULL
 * (ENOMEM), <b> then marked overflowed. */
static struct sched_view *sched_read(struct cg_sbuf *b, struct cg_daemon *d)
{
    struct sched_view *v = calloc(d->nworkers ? d->nworkers : 1, sizeof(*v));
    unsigned i;

    if (!v) {
        b->overflow = 1;
        return NULL;
    }
    for (i = 0; i < d->nworkers; i++) {
        v[i].has_k = cg_schedlat_read(d->schedlat, i, &v[i].k) == 0;
        v[i].has_coro = cg_sched_coro_read(d, i, &v[i].coro) == 0;
    }
    return v;
}

static uint64_t log2_total(const struct cg_sched_hist *h)
{
    uint64_t n = 0;
    unsigned i;

    for (i = 0; i < CG_SCHED_SLOTS; i++)
        n += h->slots[i];
    return n;
}

/* ------------------------------------------------------------------ JSON */

static void json_hist(struct cg_sbuf *b, const struct cg_lat_hist *h)
{
    uint64_t cum[CG_LAT_BOUNDS + 1], sum;
    unsigned i;

    hist_read(h, cum, &sum);
    cg_sbuf_add(b, "{\"le_us\":[", 10);
    for (i = 0; i < CG_LAT_BOUNDS; i++)
        cg_sbuf_printf(b, "%s%llu", i ? "," : "", (unsigned long long)cg_lat_bounds_us[i]);
    cg_sbuf_add(b, "],\"cumulative\":[", 16);
    for (i = 0; i < CG_LAT_BOUNDS; i++)
        cg_sbuf_printf(b, "%s%llu", i ? "," : "", (unsigned long long)cum[i]);
    cg_sbuf_printf(b, "],\"count\":%llu,\"sum_us\":%llu}", (unsigned long long)cum[CG_LAT_BOUNDS],
                   (unsigned long long)sum);
}

static void json_listeners(struct cg_sbuf *b, const struct cg_daemon *d)
{
    const struct cg_config *cfg = d->cfg;
    size_t i, k;
    unsigned w;

    cg_sbuf_add(b, "\"listeners\":[", 13);
    for (i = 0; i < cfg->nlisteners; i++) {
        const struct cg_listener_conf *lc = &cfg->listeners[i];

        cg_sbuf_printf(b, "%s{\"name\":", i ? "," : "");
        cg_sbuf_json_str(b, lc->name);
        cg_sbuf_add(b, ",\"bind\":", 8);
        cg_sbuf_json_str(b, lc->bind);
        cg_sbuf_printf(b, ",\"mode\":\"%s\",\"upstream\":",
                       lc->mode == CG_MODE_TCP ? "tcp" : "websocket");
        cg_sbuf_json_str(b, cg_config_listener_upstream(cfg, lc)->name);
        for (k = 0; k < NELEMS(listener_counters); k++) {
            const struct counter_desc *t = &listener_counters[k];
            unsigned e, n = t->n ? t->n : 1;

            if (t->tls_only && !lc->tls.on)
                continue;
            cg_sbuf_printf(b, ",\"%s\":%s", t->json, t->n ? "{" : "");
            for (e = 0; e < n; e++) {
                uint64_t sum = 0;

                for (w = 0; w < d->nworkers; w++)
                    if (i < d->workers[w].nls)
                        sum += load_at(&d->workers[w].ls[i].stats,
                                       t->off + e * sizeof(uint64_t));
                if (t->n)
                    cg_sbuf_printf(b, "%s\"%s\":%llu", e ? "," : "", t->reason_of(e),
                                   (unsigned long long)sum);
                else
                    cg_sbuf_printf(b, "%llu", (unsigned long long)sum);
            }
            if (t->n)
                cg_sbuf_add(b, "}", 1);
        }
        if (d->adm && cg_admission_listener(d->adm, lc->name)) {
            const struct cg_adm_listener *al = cg_admission_listener(d->adm, lc->name);
            uint64_t ip = atomic_load(&al->ip_params);
            uint32_t rate, burst;

            cg_tbs_get(&al->bucket, &rate, &burst);
            cg_sbuf_printf(b, ",\"admission\":{\"connection_rate\":%u,\"connection_burst\":%u,"
                           "\"ip_connection_rate\":%u,\"ip_connection_burst\":%u,"
                           "\"max_connections_per_ip\":%u,\"reject\":\"%s\"}", rate, burst,
                           (uint32_t)ip, (uint32_t)(ip >> 32),
                           atomic_load(&al->max_conns_per_ip),
                           atomic_load(&al->reject) == CG_REJECT_RST ? "rst" : "close");
        }
        cg_sbuf_add(b, "}", 1);
    }
    cg_sbuf_add(b, "]", 1);
}

static void json_upstreams(struct cg_sbuf *b, const struct cg_daemon *d)
{
    char hk[CG_CONF_NAME_MAX + 8];
    size_t i;
    unsigned j;

    cg_sbuf_add(b, "\"upstreams\":[", 13);
    for (i = 0; d->ups && i < d->cfg->nupstreams; i++) {
        const struct cg_upstream *up = &d->ups[i];

        cg_sbuf_printf(b, "%s{\"name\":", i ? "," : "");
        cg_sbuf_json_str(b, up->conf->name);
        cg_sbuf_printf(b, ",\"balance\":\"%s\",\"no_server\":%llu,",
                       cg_balance_name(up->conf->balance),
                       (unsigned long long)atomic_load(&up->no_server));
        if (up->conf->balance == CG_BALANCE_HASH) {
            cg_sbuf_add(b, "\"hash_key\":", 11);
            cg_sbuf_json_str(b, cg_format_hash_key(up->conf, hk, sizeof(hk)));
            cg_sbuf_printf(b, ",\"hash_fallbacks\":%llu,",
                           (unsigned long long)atomic_load(&up->hash_fallbacks));
        }
        cg_sbuf_add(b, "\"servers\":[", 11);
        for (j = 0; j < up->nservers; j++) {
            const struct cg_server *s = &up->servers[j];

            cg_sbuf_printf(b, "%s{\"name\":", j ? "," : "");
            cg_sbuf_json_str(b, s->conf->name);
            cg_sbuf_printf(b, ",\"weight\":%u,\"state\":\"%s\",\"health\":\"%s\","
                           "\"active\":%u,\"connects\":%llu,\"connect_fails\":%llu,"
                           "\"connect_timeouts\":%llu,\"checks_failed\":%llu,"
                           "\"local_errors\":%llu,"
                           "\"breaker\":\"%s\",\"pending\":%u,\"consecutive_failures\":%u,"
                           "\"ejections\":%llu,\"restores\":%llu,\"probes_failed\":%llu}",
                           s->conf->weight, server_state_name(atomic_load(&s->state)),
                           atomic_load(&s->down) ? "down" : "up", atomic_load(&s->active),
                           (unsigned long long)atomic_load(&s->connects),
                           (unsigned long long)atomic_load(&s->connect_fails),
                           (unsigned long long)atomic_load(&s->connect_timeouts),
                           (unsigned long long)atomic_load(&s->checks_failed),
                           (unsigned long long)atomic_load(&s->local_errors),
                           cg_srv_brk_name(atomic_load(&s->brk)), atomic_load(&s->pending),
                           atomic_load(&s->consec_fails),
                           (unsigned long long)atomic_load(&s->ejections),
                           (unsigned long long)atomic_load(&s->restores),
                           (unsigned long long)atomic_load(&s->probes_failed));
        }
        cg_sbuf_add(b, "]}", 2);
    }
    cg_sbuf_add(b, "]", 1);
}

/* Appends `,"key":value` for row <t>: its value summed over the workers of <d> (all of them
 * when <only> is NULL), an object by reason for an array row. */
static void json_counter(struct cg_sbuf *b, const struct cg_daemon *d,
                         const struct cg_worker *only, const struct counter_desc *t, int first)
{
    unsigned i, w, n = t->n ? t->n : 1;

    cg_sbuf_printf(b, "%s\"%s\":%s", first ? "" : ",", t->json, t->n ? "{" : "");
    for (i = 0; i < n; i++) {
        uint64_t sum = 0;

        for (w = 0; w < d->nworkers; w++)
            if (!only || only == &d->workers[w])
                sum += load_at(&d->workers[w].stats, t->off + i * sizeof(uint64_t));
        if (t->n)
            cg_sbuf_printf(b, "%s\"%s\":%llu", i ? "," : "", t->reason_of(i),
                           (unsigned long long)sum);
        else
            cg_sbuf_printf(b, "%llu", (unsigned long long)sum);
    }
    if (t->n)
        cg_sbuf_add(b, "}", 1);
}

/* The scheduling figures of worker <w>: run-queue latency and switches from the kernel
 * probes (when attached), coroutine ready-to-run delays, and its coroutines' census (when
 * it answered). */
static void json_worker_sched(struct cg_sbuf *b, const struct sched_view *v,
                              const struct cg_coro_census *cs)
{
    unsigned i;

    if (v && v->has_coro) {
        cg_sbuf_printf(b, ",\"coro_ready\":");
        cg_sched_hist_json(b, &v->coro, log2_total(&v->coro));
    }
    if (v && v->has_k) {
        cg_sbuf_printf(b, ",\"sched\":{\"tid\":%d,\"runq\":", v->k.tid);
        cg_sched_hist_json(b, &v->k.runq, log2_total(&v->k.runq));
        cg_sbuf_printf(b, ",\"switches\":{\"voluntary\":%llu,\"involuntary\":%llu},"
                       "\"off_cpu_ns\":{\"voluntary\":%llu,\"involuntary\":%llu},"
                       "\"wakeups\":%llu,\"migrations\":%llu}",
                       (unsigned long long)v->k.nvol, (unsigned long long)v->k.ninvol,
                       (unsigned long long)v->k.off_vol_ns,
                       (unsigned long long)v->k.off_invol_ns,
                       (unsigned long long)v->k.wakeups, (unsigned long long)v->k.migrations);
    }
    if (!cs || !cs->answered)
        return;
    cg_sbuf_printf(b, ",\"coroutines\":{\"total\":%u,\"parked\":%u,\"stalled\":%u,"
                   "\"stalled_by_reason\":{", cs->total, cs->parked, cs->stalled);
    for (i = 0; i < cs->nreasons; i++) {
        cg_sbuf_add(b, i ? "," : "", i ? 1 : 0);
        cg_sbuf_json_str(b, cs->by[i].reason);
        cg_sbuf_printf(b, ":%u", cs->by[i].n);
    }
    cg_sbuf_add(b, "}}", 2);
}

static void json_workers(struct cg_sbuf *b, const struct cg_daemon *d,
                         const struct sched_view *v, const struct cg_coro_census *census)
{
    struct cg_sched_hist h;
    unsigned w;
    size_t k;

    cg_sbuf_add(b, "\"workers\":[", 11);
    for (w = 0; w < d->nworkers; w++) {
        const struct cg_worker *wk = &d->workers[w];

        cg_sbuf_printf(b, "%s{\"id\":%u,\"cpu\":%d", w ? "," : "", wk->id, wk->cpu);
        for (k = 0; k < NELEMS(worker_counters); k++)
            json_counter(b, d, wk, &worker_counters[k], 0);
        for (k = 0; k < NELEMS(worker_hists); k++) {
            cg_sbuf_printf(b, ",\"%s\":", worker_hists[k].json);
            json_hist(b, (const struct cg_lat_hist *)((const char *)&wk->stats +
                                                      worker_hists[k].off));
        }
        for (k = 0; k < NELEMS(worker_log2s); k++) {
            cg_sched_hist_load(&h, (const struct cg_log2_hist *)((const char *)&wk->stats +
                                                                 worker_log2s[k].off));
            cg_sbuf_printf(b, ",\"%s\":", worker_log2s[k].json);
            cg_sched_hist_json(b, &h, log2_total(&h));
        }
        json_worker_sched(b, v ? &v[w] : NULL, census ? &census[w] : NULL);
        cg_sbuf_add(b, "}", 1);
    }
    cg_sbuf_add(b, "]", 1);
}

/* `"breaker":{...},"admission":{...}`: a daemon without them (tests) shows nulls. */
static void json_breaker(struct cg_sbuf *b, const struct cg_daemon *d)
{
    struct cg_breaker *brk = d->brk;
    struct cg_iptable_stats ips;
    uint64_t since;
    int why, state;
    unsigned i;

    if (!brk) {
        cg_sbuf_printf(b, "\"breaker\":null,\"admission\":null");
        return;
    }
    state = cg_breaker_state(brk, &since, &why);
    cg_sbuf_printf(b, "\"breaker\":{\"state\":\"%s\",\"mode\":\"%s\",\"reason\":\"%s\","
                   "\"for_ms\":%llu,\"connections\":%u,\"max_connections\":%u,"
                   "\"max_connections_per_worker\":%u,\"rss\":%llu,\"memory_watermark\":%llu,"
                   "\"fds\":%llu,\"fd_limit\":%llu,\"open_for_ms\":%llu,\"resume_pct\":%u,"
                   "\"sched_latency_threshold_ns\":%llu,\"sched_latency_window_ms\":%llu,"
                   "\"sched_latency_p99_ns\":%llu,\"sched_latency_worker\":%u,"
                   "\"sched_latency_kind\":\"%s\",\"use_permille\":{",
                   cg_brk_state_name(state), cg_brk_mode_name(atomic_load(&brk->mode)),
                   cg_brk_why_name(why),
                   (unsigned long long)(uv_hrtime() / 1000000 - since), atomic_load(&d->conns),
                   atomic_load(&brk->max_conns), atomic_load(&brk->max_per_worker),
                   (unsigned long long)atomic_load(&brk->rss),
                   (unsigned long long)atomic_load(&brk->memory_watermark),
                   (unsigned long long)atomic_load(&brk->fds),
                   (unsigned long long)(brk->nofile * atomic_load(&brk->fd_watermark) / 100),
                   (unsigned long long)atomic_load(&brk->open_for_ms),
                   atomic_load(&brk->resume) / 10,
                   (unsigned long long)atomic_load(&brk->sched_threshold_ns),
                   (unsigned long long)atomic_load(&brk->sched_window_ms),
                   (unsigned long long)atomic_load(&brk->sched_p99_ns),
                   atomic_load(&brk->sched_worker),
                   atomic_load(&brk->sched_kind) == CG_SCHED_CORO ? "coro_ready" : "runq");
    for (i = 0; i < CG_BRKW_NRES; i++)
        cg_sbuf_printf(b, "%s\"%s\":%u", i ? "," : "", cg_brk_why_name((int)i),
                       atomic_load(&brk->use[i]));
    cg_sbuf_add(b, "},\"entered\":{", 13);
    for (i = 0; i < CG_BRK_NSTATES; i++)
        cg_sbuf_printf(b, "%s\"%s\":%llu", i ? "," : "", cg_brk_state_name((int)i),
                       (unsigned long long)atomic_load(&brk->entered[i]));
    cg_sbuf_add(b, "},\"trips\":{", 11);
    for (i = 0; i < CG_BRKW_N; i++)
        cg_sbuf_printf(b, "%s\"%s\":%llu", i ? "," : "", cg_brk_why_name((int)i),
                       (unsigned long long)atomic_load(&brk->trips[i]));
    cg_sbuf_add(b, "}}", 2);
    cg_iptable_stats(d->adm ? d->adm->ipt : NULL, uv_hrtime(), &ips);
    cg_sbuf_printf(b, ",\"admission\":{\"ip_table\":%s,\"capacity\":%llu,\"live\":%llu,"
                   "\"holding\":%llu,\"evictions\":%llu,\"untracked\":%llu}",
                   d->adm && d->adm->ipt ? "true" : "false",
                   (unsigned long long)ips.capacity, (unsigned long long)ips.live,
                   (unsigned long long)ips.holding, (unsigned long long)ips.evictions,
                   (unsigned long long)ips.untracked);
}

int cg_metrics_json(struct cg_sbuf *b, const struct cg_runtime *rt,
                    const struct cg_coro_census *census)
{
    const struct cg_daemon *d = rt->d;
    unsigned max = d->cfg->gw.max_connections;
    struct sched_view *v = sched_read(b, rt->d);
    size_t k;

    cg_sbuf_printf(b, "{\"version\":\"%s\",\"pid\":%d,\"uptime_ms\":%llu,\"workers_count\":%u,"
                   "\"connections\":%u,\"max_connections\":%u,\"totals\":{",
                   CG_VERSION, (int)getpid(),
                   (unsigned long long)(uv_hrtime() / 1000000 - rt->started_ms), d->nworkers,
                   atomic_load(&d->conns), max);
    for (k = 0; k < NELEMS(worker_counters); k++)
        json_counter(b, d, NULL, &worker_counters[k], k == 0);
    cg_sbuf_add(b, "},", 2);
    json_listeners(b, d);
    cg_sbuf_add(b, ",", 1);
    json_upstreams(b, d);
    cg_sbuf_add(b, ",", 1);
    json_workers(b, d, v, census);
    free(v);
    cg_sbuf_add(b, ",", 1);
    json_breaker(b, d);
    cg_sbuf_printf(b, ",\"sched_probes\":{\"attach\":");
    cg_sbuf_json_str(b, cg_schedlat_mode(d->schedlat));
    if (cg_schedlat_is_running(d->schedlat)) {
        cg_sbuf_printf(b, ",\"enabled\":true}");
    } else {
        cg_sbuf_printf(b, ",\"enabled\":false,\"reason\":");
        cg_sbuf_json_str(b, cg_schedlat_reason(d->schedlat));
        cg_sbuf_add(b, "}", 1);
    }
    cg_sbuf_printf(b, ",\"coro_stall_threshold_ms\":%llu",
                   (unsigned long long)d->cfg->gw.coro_stall_threshold_ms);
    cg_sbuf_printf(b, ",\"reloads\":%u,\"reload_failures\":%u,\"stats_clients\":%u}\n",
                   rt->reloads, rt->reload_failures, rt->stats_clients);
    return b->overflow ? -ENOBUFS : 0;
}

/* ------------------------------------------------------------------ Prometheus */

static void prom_family(struct cg_sbuf *b, const char *name, const char *type,
                        const char *help)
{
    cg_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void prom_counter_rows(struct cg_sbuf *b, const struct cg_daemon *d,
                              const struct counter_desc *t, size_t n, int per_listener)
{
    const struct cg_config *cfg = d->cfg;
    size_t k, i;
    unsigned w, e;

    for (k = 0; k < n; k++) {
        if (k == 0 || strcmp(t[k].family, t[k - 1].family) != 0)
            prom_family(b, t[k].family, t[k].type == GAUGE ? "gauge" : "counter", t[k].help);
        for (e = 0; e < (t[k].n ? t[k].n : 1); e++) {
            for (i = 0; i < (per_listener ? cfg->nlisteners : 1); i++) {
                for (w = 0; w < d->nworkers; w++) {
                    const struct cg_worker *wk = &d->workers[w];
                    const void *base;
                    const char *reason = t[k].n ? t[k].reason_of(e) : t[k].reason;

                    if (per_listener && (i >= wk->nls ||
                                         (t[k].tls_only && !cfg->listeners[i].tls.on)))
                        continue;
                    cg_sbuf_printf(b, "%s{", t[k].family);
                    if (per_listener) {
                        base = &wk->ls[i].stats;
                        cg_sbuf_add(b, "listener=\"", 10);
                        prom_label(b, cfg->listeners[i].name);
                        cg_sbuf_add(b, "\",", 2);
                    } else {
                        base = &wk->stats;
                    }
                    cg_sbuf_printf(b, "worker=\"%u\"", wk->id);
                    if (reason)
                        cg_sbuf_printf(b, ",%s=\"%s\"", t[k].label ? t[k].label : "reason",
                                       reason);
                    cg_sbuf_printf(b, "} %llu\n",
                                   (unsigned long long)load_at(base, t[k].off +
                                                               e * sizeof(uint64_t)));
                }
            }
        }
    }
}

struct cert_row {
    struct cg_sbuf *b;
    const char     *listener;
};

static void prom_cert_row(void *arg, const struct cg_tls_cert_info *ci)
{
    struct cert_row *r = arg;
    const char *name = ci->names;
    size_t n = strcspn(name, " ");

    cg_sbuf_printf(r->b, "corogate_tls_certificate_expiry_timestamp_seconds{listener=\"");
    prom_label(r->b, r->listener);
    cg_sbuf_add(r->b, "\",name=\"", 8);
    if (n) {
        char first[256];

        snprintf(first, sizeof(first), "%.*s", (int)(n < 255 ? n : 255), name);
        prom_label(r->b, first);
    } else {
        prom_label(r->b, ci->subject);
    }
    cg_sbuf_printf(r->b, "\",file=\"");
    prom_label(r->b, ci->file);
    cg_sbuf_printf(r->b, "\"} %lld\n", (long long)ci->not_after);
}

/* When each listener's certificates expire (the generation new connections get). */
static void prom_tls_certs(struct cg_sbuf *b, const struct cg_daemon *d)
{
    const struct cg_config *cfg = d->cfg;
    struct cert_row r = { b, NULL };
    size_t i;
    int any = 0;

    for (i = 0; i < cfg->nlisteners; i++) {
        if (!cfg->listeners[i].tls.on)
            continue;
        if (!any++)
            prom_family(b, "corogate_tls_certificate_expiry_timestamp_seconds", "gauge",
                        "When a listener's certificate expires (Unix time), by its first "
                        "DNS name.");
        r.listener = cfg->listeners[i].name;
        cg_tls_listener_certs(cfg->tls, i, prom_cert_row, &r);
    }
}

static void prom_hists(struct cg_sbuf *b, const struct cg_daemon *d)
{
    uint64_t cum[CG_LAT_BOUNDS + 1], sum;
    size_t k;
    unsigned w, i;

    for (k = 0; k < NELEMS(worker_hists); k++) {
        const char *f = worker_hists[k].family;

        prom_family(b, f, "histogram", worker_hists[k].help);
        for (w = 0; w < d->nworkers; w++) {
            const struct cg_worker *wk = &d->workers[w];

            hist_read((const struct cg_lat_hist *)((const char *)&wk->stats +
                                                   worker_hists[k].off), cum, &sum);
            for (i = 0; i < CG_LAT_BOUNDS; i++)
                cg_sbuf_printf(b, "%s_bucket{worker=\"%u\",le=\"%s\"} %llu\n", f, wk->id,
                               lat_le[i], (unsigned long long)cum[i]);
            cg_sbuf_printf(b, "%s_bucket{worker=\"%u\",le=\"+Inf\"} %llu\n", f, wk->id,
                           (unsigned long long)cum[CG_LAT_BOUNDS]);
            cg_sbuf_printf(b, "%s_sum{worker=\"%u\"} %llu.%06llu\n", f, wk->id,
                           (unsigned long long)(sum / 1000000),
                           (unsigned long long)(sum % 1000000));
            cg_sbuf_printf(b, "%s_count{worker=\"%u\"} %llu\n", f, wk->id,
                           (unsigned long long)cum[CG_LAT_BOUNDS]);
        }
    }
}

/* The rows of histogram <f> for worker <w> from log2 histogram <h>: slot i ends below
 * 2^(i+1) us, so its cumulative count is the bucket le=2^(i+1) us; the last slot is +Inf. */
static void prom_log2_rows(struct cg_sbuf *b, const char *f, unsigned w,
                           const struct cg_sched_hist *h)
{
    uint64_t cum = 0;
    unsigned i;

    for (i = 0; i + 1 < CG_SCHED_SLOTS; i++) {
        cum += h->slots[i];
        cg_sbuf_printf(b, "%s_bucket{worker=\"%u\",le=\"%.10g\"} %llu\n", f, w,
                       (double)(2ull << i) / 1e6, (unsigned long long)cum);
    }
    cum += h->slots[CG_SCHED_SLOTS - 1];
    cg_sbuf_printf(b, "%s_bucket{worker=\"%u\",le=\"+Inf\"} %llu\n", f, w,
                   (unsigned long long)cum);
    cg_sbuf_printf(b, "%s_sum{worker=\"%u\"} %llu.%09llu\n", f, w,
                   (unsigned long long)(h->sum_ns / 1000000000u),
                   (unsigned long long)(h->sum_ns % 1000000000u));
    cg_sbuf_printf(b, "%s_count{worker=\"%u\"} %llu\n", f, w, (unsigned long long)cum);
}

/* Scheduling, per worker: the kernel probes' run-queue latency, switches, off-CPU time,
 * wake-ups and migrations (when attached); coroutine ready-to-run delays; event-loop lag;
 * coroutines alive and stalled (from the census, for the workers that answered). */
static void prom_sched(struct cg_sbuf *b, struct cg_daemon *d,
                       const struct cg_coro_census *census)
{
    static const char *const kinds[] = { "voluntary", "involuntary" };
    struct sched_view *v = sched_read(b, d);
    struct cg_sched_hist h;
    unsigned w, k, i;

    if (!v)
        return;
    prom_family(b, "corogate_sched_probes_enabled", "gauge",
                "1 when the eBPF scheduler probes are attached ([bpf] attach), by path.");
    cg_sbuf_printf(b, "corogate_sched_probes_enabled{attach=\"%s\"} %d\n",
                   cg_schedlat_mode(d->schedlat), cg_schedlat_is_running(d->schedlat));
    prom_family(b, "corogate_sched_runqueue_latency_seconds", "histogram",
                "Run-queue latency of the worker thread: from wake-up (or preemption) to "
                "running again (eBPF).");
    for (w = 0; w < d->nworkers; w++)
        if (v[w].has_k)
            prom_log2_rows(b, "corogate_sched_runqueue_latency_seconds", d->workers[w].id,
                           &v[w].k.runq);
    prom_family(b, "corogate_sched_switches_total", "counter",
                "Context switches of the worker thread: voluntary (blocked) or involuntary "
                "(preempted).");
    for (k = 0; k < 2; k++)
        for (w = 0; w < d->nworkers; w++)
            if (v[w].has_k)
                cg_sbuf_printf(b, "corogate_sched_switches_total{worker=\"%u\",kind=\"%s\"} "
                               "%llu\n", d->workers[w].id, kinds[k],
                               (unsigned long long)(k ? v[w].k.ninvol : v[w].k.nvol));
    prom_family(b, "corogate_sched_off_cpu_seconds_total", "counter",
                "Time the worker thread spent off its CPU, after blocking or being preempted.");
    for (k = 0; k < 2; k++) {
        for (w = 0; w < d->nworkers; w++) {
            uint64_t ns = k ? v[w].k.off_invol_ns : v[w].k.off_vol_ns;

            if (v[w].has_k)
                cg_sbuf_printf(b, "corogate_sched_off_cpu_seconds_total{worker=\"%u\","
                               "kind=\"%s\"} %llu.%09llu\n", d->workers[w].id, kinds[k],
                               (unsigned long long)(ns / 1000000000u),
                               (unsigned long long)(ns % 1000000000u));
        }
    }
    prom_family(b, "corogate_sched_wakeups_total", "counter", "Wake-ups of the worker thread.");
    for (w = 0; w < d->nworkers; w++)
        if (v[w].has_k)
            cg_sbuf_printf(b, "corogate_sched_wakeups_total{worker=\"%u\"} %llu\n",
                           d->workers[w].id, (unsigned long long)v[w].k.wakeups);
    prom_family(b, "corogate_sched_migrations_total", "counter",
                "Moves of the worker thread to another CPU (none when pinned).");
    for (w = 0; w < d->nworkers; w++)
        if (v[w].has_k)
            cg_sbuf_printf(b, "corogate_sched_migrations_total{worker=\"%u\"} %llu\n",
                           d->workers[w].id, (unsigned long long)v[w].k.migrations);
    prom_family(b, "corogate_coro_ready_latency_seconds", "histogram",
                "Coroutine ready-to-run delay: from its I/O completing or timer firing to it "
                "running.");
    for (w = 0; w < d->nworkers; w++)
        if (v[w].has_coro)
            prom_log2_rows(b, "corogate_coro_ready_latency_seconds", d->workers[w].id,
                           &v[w].coro);
    for (k = 0; k < NELEMS(worker_log2s); k++) {
        prom_family(b, worker_log2s[k].family, "histogram", worker_log2s[k].help);
        for (w = 0; w < d->nworkers; w++) {
            cg_sched_hist_load(&h, (const struct cg_log2_hist *)((const char *)
                                                                 &d->workers[w].stats +
                                                                 worker_log2s[k].off));
            prom_log2_rows(b, worker_log2s[k].family, d->workers[w].id, &h);
        }
    }
    free(v);
    prom_family(b, "corogate_coro_stall_threshold_seconds", "gauge",
                "Parked this long, a coroutine counts as stalled ([gateway] "
                "coro_stall_threshold; 0 = off).");
    cg_sbuf_printf(b, "corogate_coro_stall_threshold_seconds %llu.%03llu\n",
                   (unsigned long long)(d->cfg->gw.coro_stall_threshold_ms / 1000),
                   (unsigned long long)(d->cfg->gw.coro_stall_threshold_ms % 1000));
    prom_family(b, "corogate_coroutines", "gauge",
                "Coroutines alive in the worker (those that answered within the deadline).");
    for (w = 0; census && w < d->nworkers; w++)
        if (census[w].answered)
            cg_sbuf_printf(b, "corogate_coroutines{worker=\"%u\"} %u\n", d->workers[w].id,
                           census[w].total);
    prom_family(b, "corogate_coroutines_stalled", "gauge",
                "Coroutines parked longer than coro_stall_threshold, by park reason.");
    for (w = 0; census && w < d->nworkers; w++) {
        for (i = 0; census[w].answered && i < census[w].nreasons; i++) {
            cg_sbuf_printf(b, "corogate_coroutines_stalled{worker=\"%u\",reason=\"",
                           d->workers[w].id);
            prom_label(b, census[w].by[i].reason);
            cg_sbuf_printf(b, "\"} %u\n", census[w].by[i].n);
        }
    }
}

/* One sample per server of every upstream: <what> picks the value. */
enum server_value {
    SV_UP, SV_ACTIVE, SV_CONNECTS, SV_FAILS, SV_TIMEOUTS, SV_CHECKS, SV_LOCAL, SV_EJECTED,
    SV_PENDING, SV_EJECTIONS, SV_RESTORES,
};

static void prom_servers(struct cg_sbuf *b, const struct cg_daemon *d, const char *family,
                         enum server_value what)
{
    size_t i;
    unsigned j;

    for (i = 0; d->ups && i < d->cfg->nupstreams; i++) {
        const struct cg_upstream *up = &d->ups[i];

        for (j = 0; j < up->nservers; j++) {
            const struct cg_server *s = &up->servers[j];
            unsigned long long v = 0;

            switch (what) {
            case SV_UP:       v = !atomic_load(&s->down); break;
            case SV_ACTIVE:   v = atomic_load(&s->active); break;
            case SV_CONNECTS: v = atomic_load(&s->connects); break;
            case SV_FAILS:    v = atomic_load(&s->connect_fails); break;
            case SV_TIMEOUTS: v = atomic_load(&s->connect_timeouts); break;
            case SV_CHECKS:   v = atomic_load(&s->checks_failed); break;
            case SV_LOCAL:    v = atomic_load(&s->local_errors); break;
            case SV_EJECTED:  v = atomic_load(&s->brk) != CG_SRV_IN; break;
            case SV_PENDING:  v = atomic_load(&s->pending); break;
            case SV_EJECTIONS: v = atomic_load(&s->ejections); break;
            case SV_RESTORES: v = atomic_load(&s->restores); break;
            }
            cg_sbuf_printf(b, "%s{upstream=\"", family);
            prom_label(b, up->conf->name);
            cg_sbuf_add(b, "\",server=\"", 10);
            prom_label(b, s->conf->name);
            cg_sbuf_printf(b, "\"} %llu\n", v);
        }
    }
}

static void prom_upstreams(struct cg_sbuf *b, const struct cg_daemon *d)
{
    static const struct {
        const char *family, *type, *help;
        enum server_value what;
    } rows[] = {
        { "corogate_server_up", "gauge", "1 when health checks find the server up.", SV_UP },
        { "corogate_server_connections_active", "gauge",
          "Connections open to the server now, connects in progress included.", SV_ACTIVE },
        { "corogate_server_connects_total", "counter", "Successful connects to the server.",
          SV_CONNECTS },
        { "corogate_server_connect_failures_total", "counter",
          "Failed connects to the server (refused, reset, timed out).", SV_FAILS },
        { "corogate_server_connect_timeouts_total", "counter",
          "Connects to the server that timed out.", SV_TIMEOUTS },
        { "corogate_server_health_check_failures_total", "counter",
          "Failed health checks of the server.", SV_CHECKS },
        { "corogate_server_local_errors_total", "counter",
          "Connects and health checks to the server that failed for a shortage of "
          "corogate's own (descriptors, memory, local ports): not held against it.",
          SV_LOCAL },
        { "corogate_server_ejected", "gauge",
          "1 while the server's failure breaker keeps it out of balancing (or probes it).",
          SV_EJECTED },
        { "corogate_server_pending_connects", "gauge", "Connects to the server in progress.",
          SV_PENDING },
        { "corogate_server_ejections_total", "counter",
          "Times the failure breaker ejected the server.", SV_EJECTIONS },
        { "corogate_server_restores_total", "counter",
          "Times a probe brought an ejected server back.", SV_RESTORES },
    };
    static const int states[] = { CG_SERVER_READY, CG_SERVER_DRAIN, CG_SERVER_MAINT };
    size_t r, i, k;
    unsigned j;
    int any;

    for (r = 0; r < NELEMS(rows); r++) {
        prom_family(b, rows[r].family, rows[r].type, rows[r].help);
        prom_servers(b, d, rows[r].family, rows[r].what);
    }
    prom_family(b, "corogate_server_admin_state", "gauge",
                "1 for the server's administrative state (set server ... state).");
    for (i = 0; d->ups && i < d->cfg->nupstreams; i++) {
        const struct cg_upstream *up = &d->ups[i];

        for (j = 0; j < up->nservers; j++) {
            int cur = atomic_load(&up->servers[j].state);

            for (k = 0; k < NELEMS(states); k++) {
                cg_sbuf_add(b, "corogate_server_admin_state{upstream=\"", 38);
                prom_label(b, up->conf->name);
                cg_sbuf_add(b, "\",server=\"", 10);
                prom_label(b, up->servers[j].conf->name);
                cg_sbuf_printf(b, "\",state=\"%s\"} %d\n", server_state_name(states[k]),
                               cur == states[k]);
            }
        }
    }
    prom_family(b, "corogate_upstream_no_server_total", "counter",
                "Client connections closed because no server of the upstream could be "
                "reached.");
    for (i = 0; d->ups && i < d->cfg->nupstreams; i++) {
        cg_sbuf_add(b, "corogate_upstream_no_server_total{upstream=\"", 44);
        prom_label(b, d->ups[i].conf->name);
        cg_sbuf_printf(b, "\"} %llu\n", (unsigned long long)atomic_load(&d->ups[i].no_server));
    }
    /* balance = hash upstreams only: no family without a series */
    for (i = 0, any = 0; d->ups && i < d->cfg->nupstreams; i++)
        any |= d->ups[i].conf->balance == CG_BALANCE_HASH;
    if (any)
        prom_family(b, "corogate_upstream_hash_fallbacks_total", "counter",
                    "Client connections to a balance = hash upstream whose request had no "
                    "hash key (balanced by round robin instead).");
    for (i = 0; any && i < d->cfg->nupstreams; i++) {
        if (d->ups[i].conf->balance != CG_BALANCE_HASH)
            continue;
        cg_sbuf_add(b, "corogate_upstream_hash_fallbacks_total{upstream=\"", 49);
        prom_label(b, d->ups[i].conf->name);
        cg_sbuf_printf(b, "\"} %llu\n",
                       (unsigned long long)atomic_load(&d->ups[i].hash_fallbacks));
    }
}

static void prom_breaker(struct cg_sbuf *b, const struct cg_daemon *d)
{
    struct cg_breaker *brk = d->brk;
    struct cg_iptable_stats ips;
    int state, i;

    if (!brk)
        return;
    state = cg_breaker_state(brk, NULL, NULL);
    prom_family(b, "corogate_breaker_state", "gauge",
                "1 for the overload breaker's state (closed, open, half_open).");
    for (i = 0; i < CG_BRK_NSTATES; i++)
        cg_sbuf_printf(b, "corogate_breaker_state{state=\"%s\"} %d\n", cg_brk_state_name(i),
                       state == i);
    prom_family(b, "corogate_breaker_transitions_total", "counter",
                "Overload breaker transitions, by the state entered.");
    for (i = 0; i < CG_BRK_NSTATES; i++)
        cg_sbuf_printf(b, "corogate_breaker_transitions_total{to=\"%s\"} %llu\n",
                       cg_brk_state_name(i), (unsigned long long)atomic_load(&brk->entered[i]));
    prom_family(b, "corogate_breaker_trips_total", "counter",
                "Overload breaker openings, by reason.");
    for (i = 0; i < CG_BRKW_N; i++)
        if (i < CG_BRKW_NRES || i == CG_BRKW_FORCED)
            cg_sbuf_printf(b, "corogate_breaker_trips_total{reason=\"%s\"} %llu\n",
                           cg_brk_why_name(i), (unsigned long long)atomic_load(&brk->trips[i]));
    prom_family(b, "corogate_breaker_use_ratio", "gauge",
                "Use of each watched resource as a fraction of its trip point (0 when off).");
    for (i = 0; i < CG_BRKW_NRES; i++)
        cg_sbuf_printf(b, "corogate_breaker_use_ratio{resource=\"%s\"} %u.%03u\n",
                       cg_brk_why_name(i), atomic_load(&brk->use[i]) / 1000,
                       atomic_load(&brk->use[i]) % 1000);
    prom_family(b, "corogate_resident_memory_bytes", "gauge",
                "Resident memory, as the breaker last sampled it.");
    cg_sbuf_printf(b, "corogate_resident_memory_bytes %llu\n",
                   (unsigned long long)atomic_load(&brk->rss));
    prom_family(b, "corogate_memory_watermark_bytes", "gauge",
                "Resident memory that opens the breaker (0 = off).");
    cg_sbuf_printf(b, "corogate_memory_watermark_bytes %llu\n",
                   (unsigned long long)atomic_load(&brk->memory_watermark));
    prom_family(b, "corogate_open_files_estimate", "gauge",
                "Open descriptors as the breaker estimates them.");
    cg_sbuf_printf(b, "corogate_open_files_estimate %llu\n",
                   (unsigned long long)atomic_load(&brk->fds));
    if (!d->adm || !d->adm->ipt)
        return;
    cg_iptable_stats(d->adm->ipt, uv_hrtime(), &ips);
    prom_family(b, "corogate_admission_ip_entries", "gauge",
                "Client-address entries remembered (a bucket not full, or connections held).");
    cg_sbuf_printf(b, "corogate_admission_ip_entries %llu\n", (unsigned long long)ips.live);
    prom_family(b, "corogate_admission_ip_entries_limit", "gauge",
                "Capacity of the client-address table (ip_table_size).");
    cg_sbuf_printf(b, "corogate_admission_ip_entries_limit %llu\n",
                   (unsigned long long)ips.capacity);
    prom_family(b, "corogate_admission_ip_evictions_total", "counter",
                "Remembered client addresses given up for newcomers.");
    cg_sbuf_printf(b, "corogate_admission_ip_evictions_total %llu\n",
                   (unsigned long long)ips.evictions);
    prom_family(b, "corogate_admission_ip_untracked_total", "counter",
                "Connections admitted untracked: every entry of their set held connections.");
    cg_sbuf_printf(b, "corogate_admission_ip_untracked_total %llu\n",
                   (unsigned long long)ips.untracked);
}

int cg_metrics_prometheus(struct cg_sbuf *b, const struct cg_runtime *rt,
                          const struct cg_coro_census *census)
{
    const struct cg_daemon *d = rt->d;

    prom_family(b, "corogate_build_info", "gauge", "Version and build features; always 1.");
    cg_sbuf_printf(b, "corogate_build_info{version=\"%s\",context_switch=\"%s\"} 1\n",
                   CG_VERSION, coro_switch_name());
    prom_family(b, "corogate_start_time_seconds", "gauge",
                "Start of the process, seconds since the epoch.");
    cg_sbuf_printf(b, "corogate_start_time_seconds %lld\n", (long long)rt->started_at);
    prom_family(b, "corogate_workers", "gauge", "Worker threads.");
    cg_sbuf_printf(b, "corogate_workers %u\n", d->nworkers);
    prom_family(b, "corogate_connections", "gauge", "Client connections open now, all workers.");
    cg_sbuf_printf(b, "corogate_connections %u\n", atomic_load(&d->conns));
    prom_family(b, "corogate_connections_limit", "gauge",
                "max_connections in force (0 = unlimited).");
    cg_sbuf_printf(b, "corogate_connections_limit %u\n", d->cfg->gw.max_connections);
    prom_family(b, "corogate_open_files_limit", "gauge", "RLIMIT_NOFILE in force.");
    cg_sbuf_printf(b, "corogate_open_files_limit %llu\n", (unsigned long long)d->nofile);
    prom_family(b, "corogate_config_reloads_total", "counter",
                "Configuration reloads (SIGHUP or the reload command), by result.");
    cg_sbuf_printf(b, "corogate_config_reloads_total{result=\"success\"} %u\n"
                   "corogate_config_reloads_total{result=\"failure\"} %u\n",
                   rt->reloads - rt->reload_failures, rt->reload_failures);
    prom_family(b, "corogate_stats_clients", "gauge",
                "Stats socket and /metrics clients connected now.");
    cg_sbuf_printf(b, "corogate_stats_clients %u\n", rt->stats_clients);

    prom_breaker(b, d);
    prom_counter_rows(b, d, listener_counters, NELEMS(listener_counters), 1);
    prom_tls_certs(b, d);
    prom_counter_rows(b, d, worker_counters, NELEMS(worker_counters), 0);
    prom_hists(b, d);
    prom_sched(b, rt->d, census);
    prom_upstreams(b, d);
    return b->overflow ? -ENOBUFS : 0;
}
