/* loadgen/lg_report.c — merging, progress, the final report, JSON and plots. */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "common/tls.h"
#include "lg_client.h"
#include "lg_report.h"

_Static_assert(CG_TLS_FAIL_COUNT <= LG_TLS_FAILS, "LG_TLS_FAILS is too small");

const char *const lg_err_names[LG_ERR_COUNT] = {
    [LG_ERR_REFUSED]      = "refused",
    [LG_ERR_CONN_TIMEOUT] = "connect_timeout",
    [LG_ERR_NO_ADDR]      = "no_source_port",
    [LG_ERR_NO_FDS]       = "no_fds",
    [LG_ERR_CONN_OTHER]   = "connect_other",
    [LG_ERR_HANDSHAKE]    = "handshake",
    [LG_ERR_CLOSED]       = "closed_by_peer",
    [LG_ERR_RESET]        = "reset",
    [LG_ERR_IO]           = "io",
};

/* ------------------------------------------------------------------ counters, results */

void lg_counters_add(struct lg_counters *d, const struct lg_counters *s)
{
    unsigned i;

    d->attempts += s->attempts;
    d->connected += s->connected;
    d->ended += s->ended;
    d->dropped += s->dropped;
    d->up_at_steady += s->up_at_steady;
    d->up_at_stop += s->up_at_stop;
    for (i = 0; i < LG_ERR_COUNT; i++)
        d->errors[i] += s->errors[i];
    d->sent += s->sent;
    d->received += s->received;
    d->bytes_sent += s->bytes_sent;
    d->bytes_received += s->bytes_received;
    d->corrupt += s->corrupt;
    d->lost += s->lost;
    d->reordered += s->reordered;
    d->skipped_bytes += s->skipped_bytes;
    d->steady_sent += s->steady_sent;
    d->steady_received += s->steady_received;
    if (s->ramp_ns > d->ramp_ns)
        d->ramp_ns = s->ramp_ns;
    if (s->steady_ns > d->steady_ns)
        d->steady_ns = s->steady_ns;
    d->steady_rate_milli += s->steady_rate_milli;
    d->steady_connected += s->steady_connected;
    d->steady_conn_rate_milli += s->steady_conn_rate_milli;
    d->tls_full += s->tls_full;
    d->tls_resumed += s->tls_resumed;
    d->tls_v13 += s->tls_v13;
    for (i = 0; i < LG_TLS_FAILS; i++)
        d->tls_fail[i] += s->tls_fail[i];
    d->ramp_handshakes += s->ramp_handshakes;
    d->steady_handshakes += s->steady_handshakes;
    d->steady_hs_rate_milli += s->steady_hs_rate_milli;
    d->cpu_us += s->cpu_us;
    if (s->wall_us > d->wall_us)
        d->wall_us = s->wall_us;
    d->threads += s->threads;
    d->procs_done += s->procs_done;
    d->interrupted += s->interrupted;
}

uint64_t lg_counters_up(const struct lg_counters *c)
{
    return c->connected > c->ended ? c->connected - c->ended : 0;
}

int lg_hist_init(struct cg_hist *h)
{
    return cg_hist_init(h, LG_HIST_HIGHEST, LG_HIST_SIGFIGS);
}

int lg_result_init(struct lg_result *r)
{
    memset(&r->c, 0, sizeof(r->c));
    if (lg_hist_init(&r->connect) < 0)
        goto out_err;
    if (lg_hist_init(&r->rtt) < 0)
        goto out_connect;
    if (lg_hist_init(&r->tls) < 0)
        goto out_rtt;
    return 0;

out_rtt:
    cg_hist_deinit(&r->rtt);
out_connect:
    cg_hist_deinit(&r->connect);
out_err:
    memset(&r->rtt, 0, sizeof(r->rtt));
    memset(&r->tls, 0, sizeof(r->tls));
    return -ENOMEM;
}

void lg_result_deinit(struct lg_result *r)
{
    cg_hist_deinit(&r->connect);
    cg_hist_deinit(&r->rtt);
    cg_hist_deinit(&r->tls);
}

int lg_result_merge(struct lg_result *dst, const struct lg_result *src)
{
    int err;

    err = cg_hist_merge(&dst->connect, &src->connect);
    if (err == 0)
        err = cg_hist_merge(&dst->rtt, &src->rtt);
    if (err == 0)
        err = cg_hist_merge(&dst->tls, &src->tls);
    if (err == 0)
        lg_counters_add(&dst->c, &src->c);
    return err;
}

#define RESULT_HISTS 3

/* Layout: counters, then for each histogram (connect, rtt, tls) a u64 length and its
 * encoding (cg_hist_encode). */
void *lg_result_encode(const struct lg_result *r, size_t *len)
{
    const struct cg_hist *h[RESULT_HISTS] = { &r->connect, &r->rtt, &r->tls };
    size_t n[RESULT_HISTS], total = sizeof(r->c);
    uint64_t l;
    char *buf, *p;
    unsigned i;

    for (i = 0; i < RESULT_HISTS; i++) {
        n[i] = cg_hist_encoded_size(h[i]);
        total += 8 + n[i];
    }
    buf = malloc(total);
    if (!buf)
        return NULL;
    memcpy(buf, &r->c, sizeof(r->c));
    p = buf + sizeof(r->c);
    for (i = 0; i < RESULT_HISTS; i++) {
        l = n[i];
        memcpy(p, &l, 8);
        if (cg_hist_encode(h[i], p + 8, n[i]) < 0) {
            free(buf);
            return NULL;
        }
        p += 8 + n[i];
    }
    *len = total;
    return buf;
}

int lg_result_decode_add(struct lg_result *r, const void *buf, size_t len)
{
    struct cg_hist *h[RESULT_HISTS];
    const char *p = buf;
    struct lg_counters c;
    struct lg_result tmp;
    size_t left;
    uint64_t n;
    unsigned i;
    int err;

    if (len < sizeof(c))
        return -EINVAL;
    memcpy(&c, p, sizeof(c));
    /* Decode into a scratch result first so that <r> stays untouched on error. */
    err = lg_result_init(&tmp);
    if (err < 0)
        return err;
    h[0] = &tmp.connect;
    h[1] = &tmp.rtt;
    h[2] = &tmp.tls;
    p += sizeof(c);
    left = len - sizeof(c);
    for (i = 0; i < RESULT_HISTS && err == 0; i++) {
        if (left < 8) {
            err = -EINVAL;
            break;
        }
        memcpy(&n, p, 8);
        if (n > left - 8) {
            err = -EINVAL;
            break;
        }
        err = cg_hist_decode_add(h[i], p + 8, (size_t)n);
        p += 8 + n;
        left -= 8 + (size_t)n;
    }
    if (err == 0 && left != 0)
        err = -EINVAL;
    if (err == 0) {
        tmp.c = c;
        err = lg_result_merge(r, &tmp);
    }
    lg_result_deinit(&tmp);
    return err;
}

/* ------------------------------------------------------------------ formatting */

const char *lg_fmt_ms(uint64_t ns, char *buf, size_t len)
{
    snprintf(buf, len, "%.3f", (double)ns / 1e6);
    return buf;
}

/* "12.3k" style for rates in the progress line. */
static const char *fmt_count(double v, char *buf, size_t len)
{
    if (v >= 1e6)
        snprintf(buf, len, "%.2fM", v / 1e6);
    else if (v >= 1e4)
        snprintf(buf, len, "%.1fk", v / 1e3);
    else
        snprintf(buf, len, "%.0f", v);
    return buf;
}

/* Appends "refused 3, no_fds 2" (or "none") for the non-zero error counts of <c>. */
static void fmt_errors(const struct lg_counters *c, char *buf, size_t len)
{
    size_t off = 0;
    unsigned i;
    int n;

    buf[0] = '\0';
    for (i = 0; i < LG_ERR_COUNT && off < len; i++) {
        if (!c->errors[i])
            continue;
        n = snprintf(buf + off, len - off, "%s%s %llu", off ? ", " : "", lg_err_names[i],
                     (unsigned long long)c->errors[i]);
        if (n < 0)
            break;
        off += (size_t)n;
    }
    if (off == 0)
        snprintf(buf, len, "none");
}

static uint64_t errors_total(const struct lg_counters *c)
{
    uint64_t n = 0;
    unsigned i;

    for (i = 0; i < LG_ERR_COUNT; i++)
        n += c->errors[i];
    return n;
}

/* ------------------------------------------------------------------ aggregator */

struct tl_point {
    double   t;            /* seconds since the start */
    uint64_t up;
    uint64_t attempts;
    double   msgs_per_s;   /* received in the last interval */
    uint64_t p50;          /* round trip so far, ns */
    uint64_t p99;
};

struct agg_src {
    struct lg_counters c;
    struct cg_hist     rtt;      /* latest cumulative progress histogram */
    int                final;
};

struct lg_agg {
    const struct lg_run_cfg *cfg;
    FILE            *out;         /* progress; NULL: none */
    int              tty;
    int              line_open;   /* a refreshing line waits for its newline */
    unsigned         nsrc;
    struct agg_src  *src;
    struct cg_hist   scratch;     /* progress merge */
    struct lg_result fin;         /* final results merged */
    uint64_t         start_ns;
    uint64_t         last_ns;
    uint64_t         last_received;
    uint64_t         last_sent;
    struct tl_point *tl;
    size_t           ntl;
    size_t           captl;
};

struct lg_agg *lg_agg_new(const struct lg_run_cfg *cfg, unsigned nsources, FILE *progress_to)
{
    struct lg_agg *a = calloc(1, sizeof(*a));
    unsigned i;

    if (!a)
        return NULL;
    a->cfg = cfg;
    a->out = progress_to;
    a->tty = progress_to && isatty(fileno(progress_to));
    a->nsrc = nsources;
    a->src = calloc(nsources, sizeof(*a->src));
    if (!a->src || lg_hist_init(&a->scratch) < 0 || lg_result_init(&a->fin) < 0)
        goto out_free;
    for (i = 0; i < nsources; i++)
        if (lg_hist_init(&a->src[i].rtt) < 0)
            goto out_free;
    a->start_ns = a->last_ns = uv_hrtime();
    return a;

out_free:
    lg_agg_free(a);
    return NULL;
}

void lg_agg_free(struct lg_agg *a)
{
    unsigned i;

    if (!a)
        return;
    if (a->src)
        for (i = 0; i < a->nsrc; i++)
            cg_hist_deinit(&a->src[i].rtt);
    free(a->src);
    cg_hist_deinit(&a->scratch);
    lg_result_deinit(&a->fin);
    free(a->tl);
    free(a);
}

void lg_agg_update(struct lg_agg *a, unsigned src, const struct lg_counters *c,
                   const struct cg_hist *rtt)
{
    if (src >= a->nsrc)
        return;
    a->src[src].c = *c;
    if (rtt) {
        cg_hist_reset(&a->src[src].rtt);
        cg_hist_merge(&a->src[src].rtt, rtt);
    }
}

int lg_agg_update_encoded(struct lg_agg *a, unsigned src, const struct lg_counters *c,
                          const void *rtt, size_t len)
{
    int err;

    if (src >= a->nsrc)
        return -EINVAL;
    cg_hist_reset(&a->scratch);
    err = cg_hist_decode_add(&a->scratch, rtt, len);
    if (err < 0)
        return err;
    lg_agg_update(a, src, c, &a->scratch);
    return 0;
}

static void agg_sum(const struct lg_agg *a, struct lg_counters *sum, struct cg_hist *rtt)
{
    unsigned i;

    memset(sum, 0, sizeof(*sum));
    if (rtt)
        cg_hist_reset(rtt);
    for (i = 0; i < a->nsrc; i++) {
        lg_counters_add(sum, &a->src[i].c);
        if (rtt)
            cg_hist_merge(rtt, &a->src[i].rtt);
    }
}

void lg_agg_tick(struct lg_agg *a)
{
    struct lg_counters c;
    struct tl_point pt;
    uint64_t now = uv_hrtime();
    double dt = (double)(now - a->last_ns) / 1e9;
    char line[512], errs[256], r1[32], r2[32], p50[32], p99[32];
    double sent_rate;

    agg_sum(a, &c, &a->scratch);
    memset(&pt, 0, sizeof(pt));
    pt.t = (double)(now - a->start_ns) / 1e9;
    pt.up = lg_counters_up(&c);
    pt.attempts = c.attempts;
    pt.msgs_per_s = dt > 0 && c.received >= a->last_received
                    ? (double)(c.received - a->last_received) / dt : 0;
    pt.p50 = cg_hist_percentile(&a->scratch, 50);
    pt.p99 = cg_hist_percentile(&a->scratch, 99);
    sent_rate = dt > 0 && c.sent >= a->last_sent ? (double)(c.sent - a->last_sent) / dt : 0;
    a->last_ns = now;
    a->last_received = c.received;
    a->last_sent = c.sent;
    if (a->ntl == a->captl) {
        size_t cap = a->captl ? a->captl * 2 : 64;
        struct tl_point *tl = realloc(a->tl, cap * sizeof(*tl));

        if (tl) {
            a->tl = tl;
            a->captl = cap;
        }
    }
    if (a->ntl < a->captl)
        a->tl[a->ntl++] = pt;
    if (!a->out)
        return;
    fmt_errors(&c, errs, sizeof(errs));
    snprintf(line, sizeof(line),
                 "[%6.1fs] up %llu/%llu  attempts %llu  errors %s  msgs/s %s sent %s recv"
                 "  rtt p50 %s p99 %s ms",
                 pt.t, (unsigned long long)pt.up, (unsigned long long)a->cfg->connections,
                 (unsigned long long)c.attempts, errs,
                 fmt_count(sent_rate, r1, sizeof(r1)), fmt_count(pt.msgs_per_s, r2, sizeof(r2)),
                 lg_fmt_ms(pt.p50, p50, sizeof(p50)), lg_fmt_ms(pt.p99, p99, sizeof(p99)));
    if (a->tty) {
        fprintf(a->out, "\r%s\033[K", line);
        a->line_open = 1;
    } else {
        fprintf(a->out, "%s\n", line);
    }
    fflush(a->out);
}

int lg_agg_final(struct lg_agg *a, unsigned src, const struct lg_result *r)
{
    int err;

    if (src >= a->nsrc || a->src[src].final)
        return -EINVAL;
    err = lg_result_merge(&a->fin, r);
    if (err < 0)
        return err;
    a->src[src].final = 1;
    a->src[src].c = r->c;
    cg_hist_reset(&a->src[src].rtt);
    cg_hist_merge(&a->src[src].rtt, &r->rtt);
    return 0;
}

int lg_agg_final_encoded(struct lg_agg *a, unsigned src, const void *buf, size_t len)
{
    struct lg_result r;
    int err;

    err = lg_result_init(&r);
    if (err < 0)
        return err;
    err = lg_result_decode_add(&r, buf, len);
    if (err == 0)
        err = lg_agg_final(a, src, &r);
    lg_result_deinit(&r);
    return err;
}

/* ------------------------------------------------------------------ verdict */

struct verdict {
    int  status;
    int  reached;
    int  held;
    int  data_errors;
    char text[512];
};

static void judge(const struct lg_agg *a, const struct lg_counters *c, struct verdict *v)
{
    const struct lg_run_cfg *cfg = a->cfg;
    uint64_t n = cfg->connections;
    char errs[256];

    fmt_errors(c, errs, sizeof(errs));
    memset(v, 0, sizeof(*v));
    v->reached = c->up_at_steady == n && c->procs_done == cfg->procs;
    v->held = v->reached && c->up_at_stop == n && !c->interrupted;
    v->data_errors = c->corrupt + c->lost + c->reordered > 0;
    if (cfg->traffic == LG_TRAFFIC_CHURN && c->procs_done == cfg->procs) {
        /* Connections come and go: the verdict is whether every cycle worked. */
        v->reached = v->held = errors_total(c) == 0 && c->connected > 0 && !c->interrupted;
        if (!v->reached) {
            v->status = 1;
            snprintf(v->text, sizeof(v->text),
                     "FAIL: %llu of %llu churn cycles failed%s; errors: %s",
                     (unsigned long long)errors_total(c), (unsigned long long)c->attempts,
                     c->interrupted ? " (interrupted)" : "", errs);
        } else if (v->data_errors) {
            v->status = 3;
            snprintf(v->text, sizeof(v->text),
                     "FAIL: messages were damaged: %llu corrupt, %llu lost, %llu reordered",
                     (unsigned long long)c->corrupt, (unsigned long long)c->lost,
                     (unsigned long long)c->reordered);
        } else {
            snprintf(v->text, sizeof(v->text),
                     "PASS: %llu connections by %llu churners, %.0f new connections/s, every "
                     "echo intact", (unsigned long long)c->connected,
                     (unsigned long long)n, (double)c->steady_conn_rate_milli / 1000.0);
        }
        return;
    }
    if (c->procs_done < cfg->procs) {
        v->status = 1;
        snprintf(v->text, sizeof(v->text),
                 "FAIL: %llu of %u load processes did not deliver a result",
                 (unsigned long long)(cfg->procs - c->procs_done), cfg->procs);
    } else if (!v->reached) {
        v->status = 1;
        snprintf(v->text, sizeof(v->text),
                 "FAIL: the requested %llu connections were NOT reached%s: %llu up at the end "
                 "of the ramp, %llu attempts, %llu connected; errors: %s",
                 (unsigned long long)n, c->interrupted && !c->ramp_ns ? " (interrupted)" : "",
                 (unsigned long long)c->up_at_steady, (unsigned long long)c->attempts,
                 (unsigned long long)c->connected, errs);
    } else if (!v->held) {
        v->status = 1;
        snprintf(v->text, sizeof(v->text),
                 "FAIL: %llu connections were reached in %.2f s but NOT held%s: %llu up after "
                 "%.2f s of %.2f s; errors: %s",
                 (unsigned long long)n, (double)c->ramp_ns / 1e9,
                 c->interrupted ? " (interrupted)" : "", (unsigned long long)c->up_at_stop,
                 (double)c->steady_ns / 1e9, (double)cfg->duration_ms / 1e3, errs);
    } else if (v->data_errors) {
        v->status = 3;
        snprintf(v->text, sizeof(v->text),
                 "FAIL: %llu connections reached and held for %.2f s, but messages were "
                 "damaged: %llu corrupt, %llu lost, %llu reordered",
                 (unsigned long long)n, (double)c->steady_ns / 1e9,
                 (unsigned long long)c->corrupt, (unsigned long long)c->lost,
                 (unsigned long long)c->reordered);
    } else {
        snprintf(v->text, sizeof(v->text),
                 "PASS: %llu of %llu connections reached in %.2f s and held for %.2f s",
                 (unsigned long long)n, (unsigned long long)n, (double)c->ramp_ns / 1e9,
                 (double)c->steady_ns / 1e9);
    }
}

/* ------------------------------------------------------------------ text */

/* Above this share of its threads' time, the loadgen itself may have limited the run. */
#define LOADGEN_BUSY 0.85

static double loadgen_util(const struct lg_counters *c)
{
    if (!c->wall_us || !c->threads)
        return 0;
    return (double)c->cpu_us / ((double)c->wall_us * (double)c->threads);
}

static const double pcts[] = { 50, 90, 99, 99.9, 99.99 };
static const char *const pct_names[] = { "p50", "p90", "p99", "p99.9", "p99.99" };
#define NPCTS (sizeof(pcts) / sizeof(pcts[0]))

static void print_hist_row(FILE *out, const char *name, const struct cg_hist *h)
{
    char b[32];
    size_t i;

    fprintf(out, "  %-12s", name);
    if (cg_hist_total_count(h) == 0) {
        fprintf(out, "  (no samples)\n");
        return;
    }
    for (i = 0; i < NPCTS; i++)
        fprintf(out, " %10s", lg_fmt_ms(cg_hist_percentile(h, pcts[i]), b, sizeof(b)));
    fprintf(out, " %10s", lg_fmt_ms(cg_hist_max(h), b, sizeof(b)));
    fprintf(out, " %12llu\n", (unsigned long long)cg_hist_total_count(h));
}

static const char *mode_name(const struct lg_run_cfg *cfg)
{
    if (cfg->tls)
        return cfg->mode == LG_MODE_WS ? "wss" : "tcp+tls";
    return cfg->mode == LG_MODE_WS ? "ws" : "tcp";
}

static uint64_t tls_handshakes(const struct lg_counters *c)
{
    return c->tls_full + c->tls_resumed;
}

static uint64_t tls_failures(const struct lg_counters *c)
{
    uint64_t n = 0;
    unsigned i;

    for (i = 0; i < LG_TLS_FAILS; i++)
        n += c->tls_fail[i];
    return n;
}

/* Handshakes per second during the ramp (all processes, the longest ramp). */
static double tls_ramp_rate(const struct lg_counters *c)
{
    return c->ramp_ns ? (double)c->ramp_handshakes * 1e9 / (double)c->ramp_ns : 0;
}

static const char *tls_version_name(int version)
{
    switch (version) {
    case TLS1_2_VERSION: return "1.2";
    case TLS1_3_VERSION: return "1.3";
    }
    return "1.2-1.3";
}

/* The report's TLS lines: what was asked, handshakes by kind, rates, failures by reason. */
static void print_tls(const struct lg_agg *a, FILE *out)
{
    const struct lg_run_cfg *cfg = a->cfg;
    const struct lg_counters *c = &a->fin.c;
    unsigned i;
    int any = 0;

    fprintf(out, "tls: version %s, %s%s, %s, resumption %s%s%s%s\n",
            tls_version_name(cfg->tls_opts.version), cfg->sni ? "SNI " : "no SNI",
            cfg->sni ? cfg->sni : "",
            cfg->tls_opts.ca ? "server certificate verified" : "no verification",
            cfg->tls_resume ? "on" : "off", cfg->tls_opts.cert ? ", client certificate" : "",
            cfg->tls_opts.alpn ? ", ALPN " : "", cfg->tls_opts.alpn ? cfg->tls_opts.alpn : "");
    fprintf(out, "tls handshakes: %llu (%llu full, %llu resumed; TLS 1.3 %llu, TLS 1.2 %llu), "
            "%.0f/s in the ramp",
            (unsigned long long)tls_handshakes(c), (unsigned long long)c->tls_full,
            (unsigned long long)c->tls_resumed, (unsigned long long)c->tls_v13,
            (unsigned long long)(tls_handshakes(c) - c->tls_v13), tls_ramp_rate(c));
    if (cfg->traffic == LG_TRAFFIC_CHURN)
        fprintf(out, ", %.0f/s in the steady phase", (double)c->steady_hs_rate_milli / 1000.0);
    fprintf(out, "; failures: ");
    for (i = 1; i < CG_TLS_FAIL_COUNT; i++) {
        if (!c->tls_fail[i])
            continue;
        fprintf(out, "%s%s %llu", any ? ", " : "", cg_tls_fail_name((enum cg_tls_fail)i),
                (unsigned long long)c->tls_fail[i]);
        any = 1;
    }
    fprintf(out, "%s\n", any ? "" : "none");
}

static const char *traffic_name(const struct lg_run_cfg *cfg)
{
    switch (cfg->traffic) {
    case LG_TRAFFIC_IDLE:   return "idle (hold)";
    case LG_TRAFFIC_RATE:   return "open loop";
    case LG_TRAFFIC_CLOSED: return "closed loop";
    case LG_TRAFFIC_PUSH:   return "server push";
    case LG_TRAFFIC_CHURN:  return "churn (connect, one round trip, close)";
    }
    return "?";
}

static void print_report(const struct lg_agg *a, const struct verdict *v, FILE *out)
{
    const struct lg_run_cfg *cfg = a->cfg;
    const struct lg_counters *c = &a->fin.c;
    double win = (double)c->steady_ns / 1e9;
    double rate = (double)c->steady_rate_milli / 1000.0;
    char errs[256];
    size_t i;

    fprintf(out, "\ncorogate-loadgen run: %s %s, %llu connections at %.0f/s, %u process%s x "
            "%u thread%s, %s",
            mode_name(cfg), cfg->target_str,
            (unsigned long long)cfg->connections, cfg->connect_rate, cfg->procs,
            cfg->procs == 1 ? "" : "es", cfg->threads, cfg->threads == 1 ? "" : "s",
            traffic_name(cfg));
    if (cfg->traffic == LG_TRAFFIC_RATE)
        fprintf(out, ", %u-byte messages at %g/s per connection", cfg->message_size,
                cfg->message_rate);
    else if (cfg->traffic == LG_TRAFFIC_CLOSED || cfg->traffic == LG_TRAFFIC_CHURN)
        fprintf(out, ", %u-byte messages", cfg->message_size);
    if (cfg->messages)
        fprintf(out, ", %llu per connection", (unsigned long long)cfg->messages);
    fprintf(out, ", steady phase %.1f s\n", (double)cfg->duration_ms / 1e3);
    fprintf(out, "connections: %llu attempts, %llu connected, %llu up after the ramp "
            "(%.2f s), %llu up at the end of the steady phase (%.2f s), %llu dropped\n",
            (unsigned long long)c->attempts, (unsigned long long)c->connected,
            (unsigned long long)c->up_at_steady, (double)c->ramp_ns / 1e9,
            (unsigned long long)c->up_at_stop, win, (unsigned long long)c->dropped);
    fprintf(out, "latency (ms)  ");
    for (i = 0; i < NPCTS; i++)
        fprintf(out, " %10s", pct_names[i]);
    fprintf(out, " %10s %12s\n", "max", "count");
    print_hist_row(out, "connect", &a->fin.connect);
    if (cfg->tls)
        print_hist_row(out, "handshake", &a->fin.tls);   /* TLS alone */
    if (cfg->traffic != LG_TRAFFIC_IDLE)
        print_hist_row(out, "round trip", &a->fin.rtt);
    if (cfg->traffic != LG_TRAFFIC_IDLE) {
        fprintf(out, "throughput: %.0f msgs/s received (steady phase), %.2f MB/s; sent %llu, "
                "received %llu messages in all\n", rate,
                rate * cfg->message_size / 1e6, (unsigned long long)c->sent,
                (unsigned long long)c->received);
        if (cfg->traffic == LG_TRAFFIC_CHURN)
            fprintf(out, "new connections: %.0f/s (steady phase), %llu in all\n",
                    (double)c->steady_conn_rate_milli / 1000.0,
                    (unsigned long long)c->connected);
        fprintf(out, "integrity: %llu corrupt, %llu lost, %llu reordered, %llu bytes "
                "skipped\n", (unsigned long long)c->corrupt, (unsigned long long)c->lost,
                (unsigned long long)c->reordered, (unsigned long long)c->skipped_bytes);
    }
    if (cfg->tls)
        print_tls(a, out);
    fmt_errors(c, errs, sizeof(errs));
    fprintf(out, "errors: %s\n", errs);
    if (c->wall_us && c->threads) {
        double util = loadgen_util(c);

        fprintf(out, "loadgen: %.2f s CPU in %.2f s, %.0f%% of its %llu thread%s%s\n",
                (double)c->cpu_us / 1e6, (double)c->wall_us / 1e6, util * 100,
                (unsigned long long)c->threads, c->threads == 1 ? "" : "s",
                util > LOADGEN_BUSY ? ": it may have been the bottleneck (add --threads or "
                                      "--procs, or spare it a CPU)" : "");
    }
    fprintf(out, "RESULT: %s\n", v->text);
}

/* ------------------------------------------------------------------ JSON */

static void json_str(FILE *f, const char *s)
{
    fputc('"', f);
    for (; s && *s; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

static void json_hist(FILE *f, const char *name, const struct cg_hist *h, int last)
{
    size_t i;

    fprintf(f, "    \"%s\": {\"count\": %llu, \"min\": %.6f, \"mean\": %.6f", name,
            (unsigned long long)cg_hist_total_count(h), (double)cg_hist_min(h) / 1e6,
            cg_hist_mean(h) / 1e6);
    for (i = 0; i < NPCTS; i++) {
        char key[16];
        char *p;

        snprintf(key, sizeof(key), "%s", pct_names[i]);
        for (p = key; *p; p++)
            if (*p == '.')
                *p = '_';
        fprintf(f, ", \"%s\": %.6f", key, (double)cg_hist_percentile(h, pcts[i]) / 1e6);
    }
    fprintf(f, ", \"max\": %.6f}%s\n", (double)cg_hist_max(h) / 1e6, last ? "" : ",");
}

static const char *traffic_key(enum lg_traffic t)
{
    switch (t) {
    case LG_TRAFFIC_IDLE:   return "idle";
    case LG_TRAFFIC_RATE:   return "rate";
    case LG_TRAFFIC_CLOSED: return "closed_loop";
    case LG_TRAFFIC_PUSH:   return "push";
    case LG_TRAFFIC_CHURN:  return "churn";
    }
    return "?";
}

/* "tls": only in the reports of --tls runs. */
static void json_tls(FILE *f, const struct lg_agg *a)
{
    const struct lg_run_cfg *cfg = a->cfg;
    const struct lg_counters *c = &a->fin.c;
    unsigned i;

    fprintf(f, "  \"tls\": {\"version\": \"%s\", \"sni\": ",
            tls_version_name(cfg->tls_opts.version));
    if (cfg->sni)
        json_str(f, cfg->sni);
    else
        fprintf(f, "null");
    fprintf(f, ", \"alpn\": ");
    if (cfg->tls_opts.alpn)
        json_str(f, cfg->tls_opts.alpn);
    else
        fprintf(f, "null");
    fprintf(f, ", \"verify\": %s, \"client_cert\": %s, \"resume\": %s, "
            "\"handshakes\": %llu, \"full\": %llu, \"resumed\": %llu, "
            "\"tls1_3\": %llu, \"tls1_2\": %llu, \"ramp_handshakes_per_s\": %.3f, "
            "\"steady_handshakes\": %llu, \"handshakes_per_s\": %.3f, \"failures\": {",
            cfg->tls_opts.ca ? "true" : "false", cfg->tls_opts.cert ? "true" : "false",
            cfg->tls_resume ? "true" : "false", (unsigned long long)tls_handshakes(c),
            (unsigned long long)c->tls_full, (unsigned long long)c->tls_resumed,
            (unsigned long long)c->tls_v13,
            (unsigned long long)(tls_handshakes(c) - c->tls_v13), tls_ramp_rate(c),
            (unsigned long long)c->steady_handshakes,
            (double)c->steady_hs_rate_milli / 1000.0);
    for (i = 1; i < CG_TLS_FAIL_COUNT; i++)
        fprintf(f, "\"%s\": %llu, ", cg_tls_fail_name((enum cg_tls_fail)i),
                (unsigned long long)c->tls_fail[i]);
    fprintf(f, "\"total\": %llu}},\n", (unsigned long long)tls_failures(c));
}

/* The schema is documented in loadgen/README.md ("JSON report"). */
static int write_json(const struct lg_agg *a, const struct verdict *v, const char *path)
{
    const struct lg_run_cfg *cfg = a->cfg;
    const struct lg_counters *c = &a->fin.c;
    FILE *f = fopen(path, "w");
    size_t i;
    int err;

    if (!f)
        return -errno;
    fprintf(f, "{\n  \"schema\": \"corogate-loadgen.run/1\",\n");
    fprintf(f, "  \"config\": {\"mode\": \"%s\", \"target\": ",
            cfg->mode == LG_MODE_WS ? "ws" : "tcp");
    json_str(f, cfg->target_str);
    fprintf(f, ", \"path\": ");
    if (cfg->mode == LG_MODE_WS)
        json_str(f, cfg->path);
    else
        fprintf(f, "null");
    fprintf(f, ", \"connections\": %llu, \"connect_rate\": %g, \"duration_s\": %g, "
            "\"traffic\": \"%s\", \"message_size\": %u, \"message_rate\": %g, "
            "\"messages_per_connection\": %llu, "
            "\"sources\": %u, \"threads\": %u, \"procs\": %u},\n",
            (unsigned long long)cfg->connections, cfg->connect_rate,
            (double)cfg->duration_ms / 1e3, traffic_key(cfg->traffic), cfg->message_size,
            cfg->traffic == LG_TRAFFIC_RATE ? cfg->message_rate : 0.0,
            (unsigned long long)cfg->messages, cfg->nsources,
            cfg->threads, cfg->procs);
    fprintf(f, "  \"result\": {\"status\": %d, \"pass\": %s, \"reached\": %s, \"held\": %s, "
            "\"data_errors\": %s, \"interrupted\": %s, \"statement\": ", v->status,
            v->status == 0 ? "true" : "false", v->reached ? "true" : "false",
            v->held ? "true" : "false", v->data_errors ? "true" : "false",
            c->interrupted ? "true" : "false");
    json_str(f, v->text);
    fprintf(f, "},\n");
    fprintf(f, "  \"connections\": {\"requested\": %llu, \"attempts\": %llu, "
            "\"connected\": %llu, \"up_after_ramp\": %llu, \"up_at_end\": %llu, "
            "\"dropped\": %llu, \"ramp_s\": %.6f, \"steady_s\": %.6f},\n",
            (unsigned long long)cfg->connections, (unsigned long long)c->attempts,
            (unsigned long long)c->connected, (unsigned long long)c->up_at_steady,
            (unsigned long long)c->up_at_stop, (unsigned long long)c->dropped,
            (double)c->ramp_ns / 1e9, (double)c->steady_ns / 1e9);
    fprintf(f, "  \"errors\": {");
    for (i = 0; i < LG_ERR_COUNT; i++)
        fprintf(f, "%s\"%s\": %llu", i ? ", " : "", lg_err_names[i],
                (unsigned long long)c->errors[i]);
    fprintf(f, ", \"total\": %llu},\n", (unsigned long long)errors_total(c));
    if (cfg->tls)
        json_tls(f, a);
    fprintf(f, "  \"messages\": {\"sent\": %llu, \"received\": %llu, \"corrupt\": %llu, "
            "\"lost\": %llu, \"reordered\": %llu, \"bytes_sent\": %llu, "
            "\"bytes_received\": %llu, \"skipped_bytes\": %llu},\n",
            (unsigned long long)c->sent, (unsigned long long)c->received,
            (unsigned long long)c->corrupt, (unsigned long long)c->lost,
            (unsigned long long)c->reordered, (unsigned long long)c->bytes_sent,
            (unsigned long long)c->bytes_received, (unsigned long long)c->skipped_bytes);
    fprintf(f, "  \"throughput\": {\"msgs_per_s\": %.3f, \"bytes_per_s\": %.3f, "
            "\"connections_per_s\": %.3f, \"steady_sent\": %llu, "
            "\"steady_received\": %llu, \"steady_connected\": %llu, \"window_s\": %.6f},\n",
            (double)c->steady_rate_milli / 1000.0,
            (double)c->steady_rate_milli / 1000.0 * cfg->message_size,
            (double)c->steady_conn_rate_milli / 1000.0,
            (unsigned long long)c->steady_sent, (unsigned long long)c->steady_received,
            (unsigned long long)c->steady_connected, (double)c->steady_ns / 1e9);
    fprintf(f, "  \"loadgen\": {\"cpu_s\": %.6f, \"wall_s\": %.6f, \"threads\": %llu, "
            "\"utilisation\": %.4f, \"busy\": %s},\n", (double)c->cpu_us / 1e6,
            (double)c->wall_us / 1e6, (unsigned long long)c->threads, loadgen_util(c),
            loadgen_util(c) > LOADGEN_BUSY ? "true" : "false");
    fprintf(f, "  \"latency_ms\": {\n");
    json_hist(f, "connect", &a->fin.connect, 0);
    if (cfg->tls)
        json_hist(f, "tls_handshake", &a->fin.tls, 0);
    json_hist(f, "round_trip", &a->fin.rtt, 1);
    fprintf(f, "  },\n  \"timeline\": [");
    for (i = 0; i < a->ntl; i++) {
        const struct tl_point *p = &a->tl[i];

        fprintf(f, "%s\n    {\"t_s\": %.3f, \"up\": %llu, \"attempts\": %llu, "
                "\"msgs_per_s\": %.1f, \"p50_ms\": %.6f, \"p99_ms\": %.6f}", i ? "," : "",
                p->t, (unsigned long long)p->up, (unsigned long long)p->attempts,
                p->msgs_per_s, (double)p->p50 / 1e6, (double)p->p99 / 1e6);
    }
    fprintf(f, "%s]\n}\n", a->ntl ? "\n  " : "");
    err = ferror(f) ? -EIO : 0;
    if (fclose(f) != 0 && err == 0)
        err = -errno;
    return err;
}

/* ------------------------------------------------------------------ plot */

static int have_program(const char *name)
{
    const char *path = getenv("PATH");
    char buf[4096];
    const char *p, *end;

    if (!path || !*path)
        path = "/usr/local/bin:/usr/bin:/bin";
    for (p = path; *p; p = *end ? end + 1 : end) {
        end = strchr(p, ':');
        if (!end)
            end = p + strlen(p);
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)(end - p), p, name);
        if (access(buf, X_OK) == 0)
            return 1;
    }
    return 0;
}

/* Two panels: the round-trip (or connect) percentile curve on the usual 1/(1-p) axis, and
 * connections up and messages/s over time. Data files lie next to the image. */
static int write_plot(const struct lg_agg *a, const char *png)
{
    const struct cg_hist *h = a->cfg->traffic == LG_TRAFFIC_IDLE ? &a->fin.connect
                                                                  : &a->fin.rtt;
    char pct_path[4096], tl_path[4096], cmd[64];
    struct cg_hist_pct_iter it;
    double top_up = 0, top_rate = 0;
    FILE *f, *gp;
    size_t i;
    int status;

    snprintf(pct_path, sizeof(pct_path), "%s.percentiles.dat", png);
    snprintf(tl_path, sizeof(tl_path), "%s.timeline.dat", png);
    f = fopen(pct_path, "w");
    if (!f)
        return -errno;
    fprintf(f, "# percentile  1/(1-p)  latency_ms\n");
    cg_hist_pct_iter_init(&it, h, 5);
    while (cg_hist_pct_iter_next(&it) && it.percentile < 100.0)
        fprintf(f, "%.6f %.6f %.6f\n", it.percentile, 1.0 / (1.0 - it.percentile / 100.0),
                (double)it.value / 1e6);
    fclose(f);
    f = fopen(tl_path, "w");
    if (!f)
        return -errno;
    fprintf(f, "# t_s up msgs_per_s\n");
    for (i = 0; i < a->ntl; i++) {
        if ((double)a->tl[i].up > top_up)
            top_up = (double)a->tl[i].up;
        if (a->tl[i].msgs_per_s > top_rate)
            top_rate = a->tl[i].msgs_per_s;
    }
    for (i = 0; i < a->ntl; i++)
        fprintf(f, "%.3f %llu %.1f\n", a->tl[i].t, (unsigned long long)a->tl[i].up,
                a->tl[i].msgs_per_s);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "gnuplot");
    gp = popen(cmd, "w");
    if (!gp)
        return -errno;
    fprintf(gp,
            "set terminal pngcairo size 1200,500 noenhanced\n"
            "set output '%s'\n"
            "set multiplot layout 1,2\n"
            "set title '%s latency by percentile'\n"
            "set logscale x\n"
            "set xlabel 'percentile'\n"
            "set ylabel 'ms'\n"
            /* tic labels are formats to gnuplot: a percent sign is written twice */
            "set xtics ('50%%%%' 2, '90%%%%' 10, '99%%%%' 100, '99.9%%%%' 1000, "
            "'99.99%%%%' 10000, '99.999%%%%' 100000)\n"
            "plot '%s' using 2:3 with lines title 'latency'\n"
            "unset logscale x\n"
            "set xtics auto\n"
            "set title 'connections and throughput'\n"
            "set yrange [0:%.0f]\n"
            "set y2range [0:%.0f]\n"
            "set xlabel 'seconds'\n"
            "set ylabel 'connections up'\n"
            "set y2label 'messages/s'\n"
            "set y2tics\n"
            "plot '%s' using 1:2 with lines title 'up', '' using 1:3 axes x1y2 with lines "
            "title 'msgs/s'\n"
            "unset multiplot\n",
            png, a->cfg->traffic == LG_TRAFFIC_IDLE ? "connect" : "round-trip", pct_path,
            top_up * 1.15 + 1, top_rate * 1.15 + 1, tl_path);
    status = pclose(gp);
    if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return -EIO;
    return 0;
}

int lg_agg_report(struct lg_agg *a, FILE *out)
{
    struct verdict v;
    int err;

    if (a->line_open && a->out) {
        fputc('\n', a->out);
        a->line_open = 0;
    }
    judge(a, &a->fin.c, &v);
    print_report(a, &v, out);
    fflush(out);
    if (a->cfg->json_path) {
        err = write_json(a, &v, a->cfg->json_path);
        if (err < 0)
            fprintf(stderr, "run: writing %s: %s\n", a->cfg->json_path, strerror(-err));
    }
    if (a->cfg->plot_path) {
        if (!have_program("gnuplot")) {
            fprintf(stderr, "run: gnuplot is not installed: no plot written to %s "
                    "(apt-get install gnuplot-nox)\n", a->cfg->plot_path);
        } else {
            err = write_plot(a, a->cfg->plot_path);
            if (err < 0)
                fprintf(stderr, "run: plotting %s with gnuplot failed: %s\n",
                        a->cfg->plot_path, strerror(-err));
        }
    }
    return v.status;
}
