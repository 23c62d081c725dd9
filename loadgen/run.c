/* loadgen/run.c — `corogate-loadgen run`: command line, processes, merging.
 *
 * With --procs 1 the process runs the connections itself and prints. With --procs P it
 * forks P children, each running share k of the connections (lg_client_run) and sending
 * the parent, through its own pipe, a progress record once a second and a result record at
 * the end; the parent merges them (counters summed, histograms through
 * cg_hist_encode/decode_add), prints the progress line and the report. Children run in
 * their own process group, so a terminal's Ctrl-C reaches only the parent, which passes
 * SIGINT/SIGTERM on; they die with the parent (PR_SET_PDEATHSIG: SIGTERM, a graceful stop).
 *
 * Pipe records: u32 type, u32 zero, u64 payload length, payload.
 *   REC_PROGRESS  struct lg_counters, then the round-trip histogram (cg_hist_encode)
 *   REC_RESULT    lg_result_encode()
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>
#include <openssl/ssl.h>

#include "lg_client.h"
#include "lg_msg.h"
#include "lg_report.h"
#include "lg_tls.h"
#include "net.h"
#include "common/parse.h"
#include "run.h"

#define MAX_THREADS      256
#define MAX_PROCS        256
#define MAX_SOURCES      (1u << 20)

enum { REC_PROGRESS = 1, REC_RESULT = 2 };

struct rec_head {
    uint32_t type;
    uint32_t zero;
    uint64_t len;
};

/* ------------------------------------------------------------------ usage */

void lg_run_usage(FILE *f)
{
    fprintf(f,
        "usage: corogate-loadgen run --target ADDR:PORT [options]\n"
        "\n"
        "Opens --connections connections at --connect-rate, holds them for --duration\n"
        "after the ramp (idle, or with traffic), checks every message that comes back and\n"
        "reports latency percentiles, throughput, errors, and whether the requested count\n"
        "was reached and held.\n"
        "\n"
        "  --mode tcp|ws          raw TCP echo, or WebSocket (binary messages) (tcp)\n"
        "  --target ADDR:PORT     server: 127.0.0.1:9000, [::1]:9000\n"
        "  --path PATH            ws: request target (/)\n"
        "  --header 'K: V'        ws: extra request header; repeatable (up to %d)\n"
        "  --connections N        connections in all processes (1)\n"
        "  --connect-rate R       new connections per second, whole run; 0: at once (1000)\n"
        "  --duration D           steady phase after the ramp: 10, 10s, 500ms, 2m (10s)\n"
        "  --hold                 no traffic: connections stay open and silent (default\n"
        "                         when no traffic option is given)\n"
        "  --message-size S       bytes per message, %u..%u (64)\n"
        "  --message-rate R       open loop: R messages/s per connection at constant\n"
        "                         intervals; latency from the intended send time\n"
        "  --closed-loop          next message as soon as the echo is back\n"
        "  --push-recv            send nothing; check messages from `serve --push`\n"
        "                         (latency from the server's CLOCK_REALTIME stamp)\n"
        "  --churn                each connection slot connects, does one round trip,\n"
        "                         closes, and again: new connections/s\n"
        "  --messages N           with --message-rate/--closed-loop: N messages per\n"
        "                         connection, then silent until the end\n"
        "  --source RANGES        bind source addresses round-robin, IPv4:\n"
        "                         127.0.0.2-127.0.0.250[,127.1.0.1-127.1.0.9...]\n"
        "  --threads T            event-loop threads per process (1)\n"
        "  --procs P              processes, each with its share of the connections (1)\n"
        "  --connect-timeout D    connect (and TLS handshake, ws upgrade) time limit (10s)\n"
        "  --reply-timeout D      closed loop: echo not back in D counts lost (10s)\n"
        "  --drain D              after the steady phase: wait for echoes in flight (2s)\n"
        "  --json FILE            write the report as JSON (schema in loadgen/README.md)\n"
        "  --plot FILE.png        latency-percentile and timeline plots (needs gnuplot)\n"
        "  --quiet                no progress lines\n"
        "\n"
        "TLS (tcp and ws modes; ws: wss://, the upgrade goes over TLS):\n"
        "  --tls                  a TLS handshake after each connect\n"
        "  --sni NAME             server name to send (default: none, the target is an IP)\n"
        "  --tls-resume           offer each thread's last session ticket: resumed\n"
        "                         handshakes after the first of each thread\n"
        "  --tls-verify CAFILE    verify the server's certificate against CAFILE, and its\n"
        "                         name against --sni if given (default: no verification)\n"
        "  --tls-version V        1.2 or 1.3 only (default: both)\n"
        "  --tls-ciphers LIST     TLS 1.2 cipher list, OpenSSL syntax (AEAD suites only)\n"
        "  --tls-ciphersuites L   TLS 1.3 ciphersuites, OpenSSL syntax\n"
        "  --alpn LIST            ALPN protocols to offer: h2,http/1.1\n"
        "  --tls-cert FILE        client certificate chain (PEM), with --tls-key FILE\n"
        "\n"
        "Progress once a second on stderr. Exit status: 0 reached, held, messages intact;\n"
        "1 not reached or not held (or interrupted, or could not start); 2 usage error;\n"
        "3 reached and held but messages were corrupt, lost or reordered.\n",
        LG_MAX_HEADERS, LG_MSG_HDR, LG_MSG_MAX);
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void say(const char *fmt, ...)
{
    va_list ap;

    fputs("run: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    say("%s", msg);
    fputc('\n', stderr);
    lg_run_usage(stderr);
    return 2;
}

/* ------------------------------------------------------------------ parsing */

static int parse_double(const char *s, double min, double max, double *out)
{
    char *end = NULL;
    double v;

    if (!s || !*s)
        return -EINVAL;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !(v >= min) || !(v <= max))
        return -EINVAL;
    *out = v;
    return 0;
}

/* "10" (seconds), "1.5s", "500ms", "2m", "1h" into milliseconds. */
static int parse_duration(const char *s, int64_t *ms)
{
    char *end = NULL;
    double v, mul = 1000;

    if (!s || !*s || *s == '-')
        return -EINVAL;
    errno = 0;
    v = strtod(s, &end);
    if (errno || end == s || !(v >= 0))
        return -EINVAL;
    if (strcmp(end, "ms") == 0)
        mul = 1;
    else if (strcmp(end, "s") == 0 || *end == '\0')
        mul = 1000;
    else if (strcmp(end, "m") == 0)
        mul = 60000;
    else if (strcmp(end, "h") == 0)
        mul = 3600000;
    else
        return -EINVAL;
    v *= mul;
    if (v > 1e12)
        return -EINVAL;
    *ms = (int64_t)llround(v);
    return 0;
}

/* "A-B,C,D-E" of IPv4 addresses into a malloc'ed array (network order). */
static int parse_sources(const char *s, uint32_t **out, uint32_t *count)
{
    char *copy = strdup(s), *tok, *save = NULL, *dash;
    uint32_t *v = NULL, n = 0, cap = 0, a, b, x;
    struct in_addr ia, ib;
    int err = -EINVAL;

    if (!copy)
        return -ENOMEM;
    for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        dash = strchr(tok, '-');
        if (dash)
            *dash = '\0';
        if (inet_pton(AF_INET, tok, &ia) != 1)
            goto out;
        ib = ia;
        if (dash && inet_pton(AF_INET, dash + 1, &ib) != 1)
            goto out;
        a = ntohl(ia.s_addr);
        b = ntohl(ib.s_addr);
        if (b < a || b - a >= MAX_SOURCES || n + (b - a + 1) > MAX_SOURCES)
            goto out;
        if (n + (b - a + 1) > cap) {
            uint32_t *nv;

            cap = n + (b - a + 1);
            nv = realloc(v, cap * sizeof(*v));
            if (!nv) {
                err = -ENOMEM;
                goto out;
            }
            v = nv;
        }
        for (x = a;; x++) {
            v[n++] = htonl(x);
            if (x == b)
                break;
        }
    }
    if (n == 0)
        goto out;
    *out = v;
    *count = n;
    v = NULL;
    err = 0;
out:
    free(v);
    free(copy);
    return err;
}

static unsigned nofile_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return 1024;
    if (rl.rlim_cur < rl.rlim_max) {        /* take what we are allowed */
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur > 0x7fffffff ? 0x7fffffff : (unsigned)rl.rlim_cur;
}

/* ------------------------------------------------------------------ one process */

static void local_progress(struct lg_sink *s, const struct lg_counters *c,
                           const struct cg_hist *rtt)
{
    struct lg_agg *a = s->ud;

    lg_agg_update(a, 0, c, rtt);
    lg_agg_tick(a);
}

static int run_local(const struct lg_run_cfg *cfg)
{
    struct lg_agg *agg = lg_agg_new(cfg, 1, cfg->quiet ? NULL : stderr);
    struct lg_sink sink = { local_progress, agg };
    struct lg_result res;
    int err, rc;

    if (!agg || lg_result_init(&res) < 0) {
        say("out of memory");
        lg_agg_free(agg);
        return 1;
    }
    err = lg_client_run(cfg, 0, &sink, &res);
    if (err < 0) {
        lg_result_deinit(&res);
        lg_agg_free(agg);
        return 1;
    }
    lg_agg_final(agg, 0, &res);
    rc = lg_agg_report(agg, stdout);
    lg_result_deinit(&res);
    lg_agg_free(agg);
    return rc;
}

/* ------------------------------------------------------------------ several processes */

static int write_all(int fd, const void *p, size_t len)
{
    const char *s = p;
    ssize_t n;

    while (len > 0) {
        n = write(fd, s, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_record(int fd, uint32_t type, const void *a, size_t alen, const void *b,
                       size_t blen)
{
    struct rec_head h = { type, 0, alen + blen };
    int err = write_all(fd, &h, sizeof(h));

    if (err == 0 && alen)
        err = write_all(fd, a, alen);
    if (err == 0 && blen)
        err = write_all(fd, b, blen);
    return err;
}

struct child_sink {
    struct lg_sink base;
    int            fd;
    void          *buf;
    size_t         cap;
};

static void child_progress(struct lg_sink *s, const struct lg_counters *c,
                           const struct cg_hist *rtt)
{
    struct child_sink *cs = (struct child_sink *)s;
    size_t need = cg_hist_encoded_size(rtt);
    ssize_t n;

    if (need > cs->cap) {
        void *nb = realloc(cs->buf, need);

        if (!nb)
            return;
        cs->buf = nb;
        cs->cap = need;
    }
    n = cg_hist_encode(rtt, cs->buf, cs->cap);
    if (n >= 0)
        send_record(cs->fd, REC_PROGRESS, c, sizeof(*c), cs->buf, (size_t)n);
}

/* The body of child <k>: its share, then the result record. Returns its exit status. */
static int child_main(const struct lg_run_cfg *cfg, unsigned k, int fd)
{
    struct child_sink cs = { { child_progress, NULL }, fd, NULL, 0 };
    struct lg_result res;
    void *enc;
    size_t len = 0;
    int err;

    if (lg_result_init(&res) < 0)
        return 1;
    err = lg_client_run(cfg, k, &cs.base, &res);
    if (err == 0) {
        enc = lg_result_encode(&res, &len);
        err = enc ? send_record(fd, REC_RESULT, enc, len, NULL, 0) : -ENOMEM;
        free(enc);
    }
    free(cs.buf);
    lg_result_deinit(&res);
    return err == 0 ? 0 : 1;
}

struct kid {
    pid_t    pid;
    int      fd;          /* read end; -1 at EOF */
    char    *buf;         /* bytes received and not parsed yet */
    size_t   len;
    size_t   cap;
    int      bad;         /* a malformed record: ignore the rest */
};

static volatile sig_atomic_t got_signal;

static void on_parent_signal(int sig)
{
    got_signal = sig;
}

/* Parses the complete records in <kid>'s buffer. */
static void kid_parse(struct kid *kd, unsigned k, struct lg_agg *agg)
{
    struct rec_head h;
    size_t off = 0;

    while (!kd->bad && kd->len - off >= sizeof(h)) {
        memcpy(&h, kd->buf + off, sizeof(h));
        if (h.len > (1u << 28)) {
            kd->bad = 1;
            break;
        }
        if (kd->len - off - sizeof(h) < h.len)
            break;
        off += sizeof(h);
        if (h.type == REC_PROGRESS && h.len >= sizeof(struct lg_counters)) {
            struct lg_counters c;

            memcpy(&c, kd->buf + off, sizeof(c));
            lg_agg_update_encoded(agg, k, &c, kd->buf + off + sizeof(c),
                                  (size_t)h.len - sizeof(c));
        } else if (h.type == REC_RESULT) {
            if (lg_agg_final_encoded(agg, k, kd->buf + off, (size_t)h.len) < 0)
                say("process %u: malformed result", k);
        }
        off += (size_t)h.len;
    }
    memmove(kd->buf, kd->buf + off, kd->len - off);
    kd->len -= off;
}

static int kid_read(struct kid *kd, unsigned k, struct lg_agg *agg)
{
    ssize_t n;

    if (kd->cap - kd->len < 65536) {
        size_t cap = kd->cap ? kd->cap * 2 : 262144;
        char *nb = realloc(kd->buf, cap);

        if (!nb)
            return -ENOMEM;
        kd->buf = nb;
        kd->cap = cap;
    }
    n = read(kd->fd, kd->buf + kd->len, kd->cap - kd->len);
    if (n < 0)
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    if (n == 0) {
        close(kd->fd);
        kd->fd = -1;
        return 0;
    }
    kd->len += (size_t)n;
    kid_parse(kd, k, agg);
    return 0;
}

static void free_cfg(struct lg_run_cfg *cfg)
{
    free(cfg->sources);
    cfg->sources = NULL;
    SSL_CTX_free(cfg->tls_ctx);
    cfg->tls_ctx = NULL;
}

static int run_procs(struct lg_run_cfg *cfg)
{
    struct kid *kids = calloc(cfg->procs, sizeof(*kids));
    struct pollfd *pfd = calloc(cfg->procs, sizeof(*pfd));
    struct sigaction sa, old_int, old_term;
    struct lg_agg *agg = NULL;
    unsigned k, j, open_fds, nfork = 0;
    uint64_t next_tick;
    int p[2], rc = 1, status, forwarded = 0;

    agg = lg_agg_new(cfg, cfg->procs, cfg->quiet ? NULL : stderr);
    if (!kids || !pfd || !agg) {
        say("out of memory");
        goto out;
    }
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_parent_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    fflush(NULL);
    for (k = 0; k < cfg->procs; k++) {
        kids[k].fd = -1;
        if (pipe2(p, O_CLOEXEC) < 0) {
            say("pipe(): %s", strerror(errno));
            break;
        }
        kids[k].pid = fork();
        if (kids[k].pid < 0) {
            say("fork(): %s", strerror(errno));
            close(p[0]);
            close(p[1]);
            break;
        }
        if (kids[k].pid == 0) {
            pid_t parent = getppid();

            sigaction(SIGINT, &old_int, NULL);
            sigaction(SIGTERM, &old_term, NULL);
            setpgid(0, 0);
            prctl(PR_SET_PDEATHSIG, SIGTERM);
            if (getppid() != parent)
                _exit(1);
            close(p[0]);
            for (j = 0; j < k; j++)
                if (kids[j].fd >= 0)
                    close(kids[j].fd);
            free(kids);
            free(pfd);
            lg_agg_free(agg);
            rc = child_main(cfg, k, p[1]);
            close(p[1]);
            free_cfg(cfg);
            exit(rc);
        }
        close(p[1]);
        kids[k].fd = p[0];
        nfork++;
    }
    if (nfork < cfg->procs)
        for (k = 0; k < nfork; k++)
            kill(kids[k].pid, SIGTERM);
    next_tick = uv_hrtime() / 1000000 + 1000;
    for (;;) {
        uint64_t now = uv_hrtime() / 1000000;

        if (got_signal && !forwarded) {
            if (!cfg->quiet)
                say("%s: stopping the %u processes (again to cancel at once)",
                    got_signal == SIGINT ? "SIGINT" : "SIGTERM", nfork);
            for (k = 0; k < nfork; k++)
                kill(kids[k].pid, got_signal);
            forwarded = got_signal;
            got_signal = 0;
        } else if (got_signal) {
            for (k = 0; k < nfork; k++)
                kill(kids[k].pid, SIGINT);  /* the children's second signal: cancel */
            got_signal = 0;
        }
        if (now >= next_tick) {
            lg_agg_tick(agg);
            next_tick = now + 1000;
        }
        for (k = 0, open_fds = 0; k < nfork; k++) {
            pfd[k].fd = kids[k].fd;           /* -1: poll ignores it */
            pfd[k].events = POLLIN;
            pfd[k].revents = 0;
            open_fds += kids[k].fd >= 0;
        }
        if (open_fds == 0)
            break;
        if (poll(pfd, nfork, (int)(next_tick > now ? next_tick - now : 0)) < 0 &&
            errno != EINTR) {
            say("poll(): %s", strerror(errno));
            break;
        }
        for (k = 0; k < nfork; k++)
            if (kids[k].fd >= 0 && (pfd[k].revents & (POLLIN | POLLHUP | POLLERR)) &&
                kid_read(&kids[k], k, agg) < 0) {
                close(kids[k].fd);
                kids[k].fd = -1;
            }
    }
    for (k = 0; k < nfork; k++) {
        if (kids[k].fd >= 0)
            close(kids[k].fd);
        while (waitpid(kids[k].pid, &status, 0) < 0 && errno == EINTR)
            ;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            say("process %u (pid %d) %s %d", k, (int)kids[k].pid,
                WIFEXITED(status) ? "exited with status" : "was killed by signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    rc = lg_agg_report(agg, stdout);
out:
    if (kids)
        for (k = 0; k < cfg->procs; k++)
            free(kids[k].buf);
    free(kids);
    free(pfd);
    lg_agg_free(agg);
    return rc;
}

/* ------------------------------------------------------------------ main */

enum {
    OPT_MODE = 256, OPT_TARGET, OPT_PATH, OPT_HEADER, OPT_CONNECTIONS, OPT_CONNECT_RATE,
    OPT_DURATION, OPT_HOLD, OPT_MESSAGE_SIZE, OPT_MESSAGE_RATE, OPT_CLOSED_LOOP,
    OPT_PUSH_RECV, OPT_SOURCE, OPT_THREADS, OPT_PROCS, OPT_CONNECT_TIMEOUT,
    OPT_REPLY_TIMEOUT, OPT_DRAIN, OPT_JSON, OPT_PLOT, OPT_QUIET, OPT_CHURN, OPT_MESSAGES,
    OPT_TLS, OPT_SNI, OPT_TLS_RESUME, OPT_TLS_VERIFY, OPT_TLS_VERSION, OPT_TLS_CIPHERS,
    OPT_TLS_CIPHERSUITES, OPT_ALPN, OPT_TLS_CERT, OPT_TLS_KEY,
};

int lg_run_main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "mode",            required_argument, NULL, OPT_MODE },
        { "target",          required_argument, NULL, OPT_TARGET },
        { "path",            required_argument, NULL, OPT_PATH },
        { "header",          required_argument, NULL, OPT_HEADER },
        { "connections",     required_argument, NULL, OPT_CONNECTIONS },
        { "connect-rate",    required_argument, NULL, OPT_CONNECT_RATE },
        { "duration",        required_argument, NULL, OPT_DURATION },
        { "hold",            no_argument,       NULL, OPT_HOLD },
        { "message-size",    required_argument, NULL, OPT_MESSAGE_SIZE },
        { "message-rate",    required_argument, NULL, OPT_MESSAGE_RATE },
        { "closed-loop",     no_argument,       NULL, OPT_CLOSED_LOOP },
        { "push-recv",       no_argument,       NULL, OPT_PUSH_RECV },
        { "churn",           no_argument,       NULL, OPT_CHURN },
        { "messages",        required_argument, NULL, OPT_MESSAGES },
        { "source",          required_argument, NULL, OPT_SOURCE },
        { "threads",         required_argument, NULL, OPT_THREADS },
        { "procs",           required_argument, NULL, OPT_PROCS },
        { "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
        { "reply-timeout",   required_argument, NULL, OPT_REPLY_TIMEOUT },
        { "drain",           required_argument, NULL, OPT_DRAIN },
        { "json",            required_argument, NULL, OPT_JSON },
        { "plot",            required_argument, NULL, OPT_PLOT },
        { "quiet",           no_argument,       NULL, OPT_QUIET },
        { "tls",             no_argument,       NULL, OPT_TLS },
        { "sni",             required_argument, NULL, OPT_SNI },
        { "tls-resume",      no_argument,       NULL, OPT_TLS_RESUME },
        { "tls-verify",      required_argument, NULL, OPT_TLS_VERIFY },
        { "tls-version",     required_argument, NULL, OPT_TLS_VERSION },
        { "tls-ciphers",     required_argument, NULL, OPT_TLS_CIPHERS },
        { "tls-ciphersuites", required_argument, NULL, OPT_TLS_CIPHERSUITES },
        { "alpn",            required_argument, NULL, OPT_ALPN },
        { "tls-cert",        required_argument, NULL, OPT_TLS_CERT },
        { "tls-key",         required_argument, NULL, OPT_TLS_KEY },
        { "help",            no_argument,       NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    struct lg_run_cfg cfg;
    const char *mode = "tcp", *target = NULL, *sources = NULL, *tls_opt = NULL;
    char tls_err[256];
    int ntraffic = 0, hold = 0, opt, rc, err;
    int64_t ms;
    uint64_t v;
    unsigned limit;

    memset(&cfg, 0, sizeof(cfg));
    cfg.connections = 1;
    cfg.connect_rate = 1000;
    cfg.duration_ms = 10000;
    cfg.message_size = 64;
    cfg.threads = 1;
    cfg.procs = 1;
    cfg.connect_timeout_ms = 10000;
    cfg.reply_timeout_ms = 10000;
    cfg.drain_ms = 2000;
    cfg.path = "/";
    opterr = 0;
    optind = 0;
    while ((opt = getopt_long(argc, argv, "+:h", opts, NULL)) != -1) {
        switch (opt) {
        case OPT_MODE:
            mode = optarg;
            break;
        case OPT_TARGET:
            target = optarg;
            break;
        case OPT_PATH:
            if (optarg[0] != '/' || strpbrk(optarg, " \r\n"))
                return usage_error("bad --path '%s': expected /something without blanks",
                                   optarg);
            cfg.path = optarg;
            break;
        case OPT_HEADER:
            if (cfg.nheaders == LG_MAX_HEADERS)
                return usage_error("too many --header options (at most %d)", LG_MAX_HEADERS);
            if (!strchr(optarg, ':') || strpbrk(optarg, "\r\n") || optarg[0] == ':')
                return usage_error("bad --header '%s': expected 'Name: value'", optarg);
            cfg.headers[cfg.nheaders++] = optarg;
            break;
        case OPT_CONNECTIONS:
            if (cg_parse_u64(optarg, 1, UINT32_MAX, &v) < 0)
                return usage_error("bad --connections '%s': expected 1..%u", optarg,
                                   UINT32_MAX);
            cfg.connections = v;
            break;
        case OPT_CONNECT_RATE:
            if (parse_double(optarg, 0, 1e9, &cfg.connect_rate) < 0)
                return usage_error("bad --connect-rate '%s': expected connections per "
                                   "second, 0 for all at once", optarg);
            break;
        case OPT_DURATION:
            if (parse_duration(optarg, &ms) < 0)
                return usage_error("bad --duration '%s': expected 10, 10s, 500ms, 2m", optarg);
            cfg.duration_ms = (uint64_t)ms;
            break;
        case OPT_HOLD:
            hold = 1;
            break;
        case OPT_MESSAGE_SIZE:
            if (cg_parse_u64(optarg, LG_MSG_HDR, LG_MSG_MAX, &v) < 0)
                return usage_error("bad --message-size '%s': expected %u..%u bytes (a "
                                   "message carries a %u-byte header)", optarg, LG_MSG_HDR,
                                   LG_MSG_MAX, LG_MSG_HDR);
            cfg.message_size = (uint32_t)v;
            break;
        case OPT_MESSAGE_RATE:
            if (parse_double(optarg, 1e-3, 1e7, &cfg.message_rate) < 0)
                return usage_error("bad --message-rate '%s': expected messages per second "
                                   "per connection, 0.001..10000000", optarg);
            cfg.traffic = LG_TRAFFIC_RATE;
            ntraffic++;
            break;
        case OPT_CLOSED_LOOP:
            cfg.traffic = LG_TRAFFIC_CLOSED;
            ntraffic++;
            break;
        case OPT_PUSH_RECV:
            cfg.traffic = LG_TRAFFIC_PUSH;
            ntraffic++;
            break;
        case OPT_CHURN:
            cfg.traffic = LG_TRAFFIC_CHURN;
            ntraffic++;
            break;
        case OPT_MESSAGES:
            if (cg_parse_u64(optarg, 1, UINT64_MAX / 2, &v) < 0)
                return usage_error("bad --messages '%s': expected a count", optarg);
            cfg.messages = v;
            break;
        case OPT_SOURCE:
            sources = optarg;
            break;
        case OPT_THREADS:
            if (cg_parse_u64(optarg, 1, MAX_THREADS, &v) < 0)
                return usage_error("bad --threads '%s': expected 1..%d", optarg, MAX_THREADS);
            cfg.threads = (unsigned)v;
            break;
        case OPT_PROCS:
            if (cg_parse_u64(optarg, 1, MAX_PROCS, &v) < 0)
                return usage_error("bad --procs '%s': expected 1..%d", optarg, MAX_PROCS);
            cfg.procs = (unsigned)v;
            break;
        case OPT_CONNECT_TIMEOUT:
        case OPT_REPLY_TIMEOUT:
        case OPT_DRAIN:
            if (parse_duration(optarg, &ms) < 0 || (opt != OPT_DRAIN && ms < 1))
                return usage_error("bad %s '%s': expected a duration such as 5s or 500ms",
                                   argv[optind - 1], optarg);
            if (opt == OPT_CONNECT_TIMEOUT)
                cfg.connect_timeout_ms = ms;
            else if (opt == OPT_REPLY_TIMEOUT)
                cfg.reply_timeout_ms = ms;
            else
                cfg.drain_ms = ms;
            break;
        case OPT_JSON:
            cfg.json_path = optarg;
            break;
        case OPT_PLOT:
            cfg.plot_path = optarg;
            break;
        case OPT_QUIET:
            cfg.quiet = 1;
            break;
        case OPT_TLS:
            cfg.tls = 1;
            break;
        case OPT_SNI:
            if (!*optarg || strlen(optarg) > 255 || strpbrk(optarg, " \r\n/:"))
                return usage_error("bad --sni '%s': expected a host name", optarg);
            cfg.sni = optarg;
            tls_opt = "--sni";
            break;
        case OPT_TLS_RESUME:
            cfg.tls_resume = 1;
            tls_opt = "--tls-resume";
            break;
        case OPT_TLS_VERIFY:
            cfg.tls_opts.ca = optarg;
            tls_opt = "--tls-verify";
            break;
        case OPT_TLS_VERSION:
            cfg.tls_opts.version = lg_tls_parse_version(optarg);
            if (cfg.tls_opts.version < 0)
                return usage_error("bad --tls-version '%s': expected 1.2 or 1.3", optarg);
            tls_opt = "--tls-version";
            break;
        case OPT_TLS_CIPHERS:
            cfg.tls_opts.ciphers = optarg;
            tls_opt = "--tls-ciphers";
            break;
        case OPT_TLS_CIPHERSUITES:
            cfg.tls_opts.ciphersuites = optarg;
            tls_opt = "--tls-ciphersuites";
            break;
        case OPT_ALPN:
            cfg.tls_opts.alpn = optarg;
            tls_opt = "--alpn";
            break;
        case OPT_TLS_CERT:
            cfg.tls_opts.cert = optarg;
            tls_opt = "--tls-cert";
            break;
        case OPT_TLS_KEY:
            cfg.tls_opts.key = optarg;
            tls_opt = "--tls-key";
            break;
        case 'h':
            lg_run_usage(stdout);
            return 0;
        case ':':
            return usage_error("option '%s' needs a value", argv[optind - 1]);
        default:
            if (optopt && optopt < OPT_MODE)
                return usage_error("unknown option '-%c'", optopt);
            return usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument '%s'", argv[optind]);
    if (strcmp(mode, "tcp") == 0)
        cfg.mode = LG_MODE_TCP;
    else if (strcmp(mode, "ws") == 0)
        cfg.mode = LG_MODE_WS;
    else
        return usage_error("unknown --mode '%s' (tcp, ws)", mode);
    if (!target)
        return usage_error("--target ADDR:PORT is required");
    if (lg_addr_parse(target, &cfg.target) < 0 ||
        lg_addr_port((const struct sockaddr *)&cfg.target) == 0)
        return usage_error("bad --target '%s': expected IPv4:PORT or [IPv6]:PORT, numeric, "
                           "port 1..65535", target);
    lg_addr_format((const struct sockaddr *)&cfg.target, cfg.target_str,
                   sizeof(cfg.target_str));
    if (ntraffic > 1)
        return usage_error("choose one of --message-rate, --closed-loop, --push-recv and "
                           "--churn");
    if (hold && ntraffic)
        return usage_error("--hold keeps connections silent: it excludes --message-rate, "
                           "--closed-loop, --push-recv and --churn");
    if (cfg.messages && cfg.traffic != LG_TRAFFIC_RATE && cfg.traffic != LG_TRAFFIC_CLOSED)
        return usage_error("--messages goes with --message-rate or --closed-loop");
    if (cfg.mode == LG_MODE_TCP && (cfg.nheaders || strcmp(cfg.path, "/") != 0))
        return usage_error("--path and --header need --mode ws");
    if ((uint64_t)cfg.procs * cfg.threads > 1024)
        return usage_error("--procs x --threads is at most 1024");
    if (sources) {
        if (cfg.target.ss_family != AF_INET)
            return usage_error("--source needs an IPv4 --target");
        err = parse_sources(sources, &cfg.sources, &cfg.nsources);
        if (err < 0)
            return usage_error("bad --source '%s': expected IPv4 addresses or ranges "
                               "A-B, comma-separated", sources);
    }
    if (tls_opt && !cfg.tls)
        return usage_error("%s needs --tls", tls_opt);
    if (!cfg.tls_opts.cert != !cfg.tls_opts.key)
        return usage_error("--tls-cert and --tls-key go together");
    if (cfg.tls) {
        cfg.tls_ctx = lg_tls_ctx_new(0, &cfg.tls_opts, tls_err, sizeof(tls_err));
        if (!cfg.tls_ctx) {
            say("%s", tls_err);
            free_cfg(&cfg);
            return 2;
        }
    }
    limit = nofile_limit();
    if (cfg.connections / cfg.procs + 64 > limit && !cfg.quiet)
        say("warning: %llu connections per process exceed the open-files limit (%u): "
            "use --procs %llu or more", (unsigned long long)(cfg.connections / cfg.procs),
            limit, (unsigned long long)(cfg.connections / (limit > 128 ? limit - 64 : 1) + 1));
    /* A server that went away must surface as EPIPE from write(), not kill us. */
    signal(SIGPIPE, SIG_IGN);
    rc = cfg.procs > 1 ? run_procs(&cfg) : run_local(&cfg);
    free_cfg(&cfg);
    return rc;
}
