/* tests/fuzz/fuzz_stats_cmd.c — the stats socket's line protocol and the /metrics HTTP
 * listener's request parsing (gateway/observe/stats*.c), through the real server: a real
 * daemon (one worker thread, a TCP listener, an upstream of two servers) started once per
 * process from a config string, the stats server on a private loop with its Unix socket in
 * /tmp and /metrics on 127.0.0.1 (port 0), and each input sent by a real client of ours on
 * that loop, in pieces, followed by a shutdown of our side.
 *
 * Input: one byte of settings, then what the client writes. Settings: bit 7 sends it to the
 * HTTP listener instead of the stats socket; bits 0-6 seed the piece sizes
 * (fuzz_chunks_next(); 0: everything at once). `debug` commands do not exist here (no
 * CG_TEST_HOOKS), and `reload` goes to fuzz_reload(), which records a refused reload as the
 * daemon's would (main.c's reload, which re-reads the configuration file, is not linked:
 * the target checks what the command line reaches, not the loader, which has its own
 * target, fuzz_config). Stats socket inputs that may hold more than WORKER_CMDS_MAX
 * commands that need the workers are rejected unsent.
 *
 * After each input:
 * - the server closed the client by itself (the client had shut its side down: every
 *   answer written, then the close), not through stats_timeout; no client is left;
 * - stats socket: the output is a sequence of answers, so it is empty or, without the
 *   interactive prompts ("> ") at its end, ends with the blank line every answer ends with;
 * - HTTP: the output is empty (no complete request) or exactly one response: a status line
 *   with a code we send, headers, and a body as long as Content-Length (none for HEAD);
 * - an input without a single valid `set` or `reload` line (modelled here as the server
 *   splits and tokenises lines) changed nothing: breaker mode, server states, the
 *   listener's connection rate, the reload count. After an input with one, the state is put
 *   back for the next input.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "base/log.h"
#include "config/config.h"
#include "core/upstream.h"
#include "core/worker.h"
#include "guard/admission.h"
#include "guard/breaker.h"
#include "observe/metrics.h"
#include "observe/stats.h"
#include "observe/stats-int.h"
#include "proto/refusal.h"
#include "proto/ws.h"
#include "fuzz.h"

#define INPUT_MAX   16384
/* Commands that need the workers (`show stats`, `show metrics`, `show coros`) cost a round
 * trip to the worker thread each: about 1 ms on an idle machine, tens of ms on a loaded
 * one, where a 30-minute run met an input of 146 of them that took 11 s (0.2-2 s here) and
 * so reads as a hang. Past a few, more of them cover nothing new: inputs that may hold more
 * than this many are rejected before they are sent. */
#define WORKER_CMDS_MAX 16
#define OUTPUT_MAX  (64u << 20)
#define LISTENER    "front"
#define BASE_RATE   100u
#define BASE_BURST  20u

static uv_loop_t         loop;
static struct cg_daemon  d;
static struct cg_runtime rt;
static struct cg_stats  *st;
static char              sock_path[108];
static struct sockaddr_in http_addr;
static unsigned          reload_calls;

/* The state that `set` and `reload` change. */
struct state {
    int      mode;
    int      srv[2];
    uint32_t rate, burst;
    unsigned reloads;
};

static int fuzz_reload(struct cg_runtime *r, const char *why)
{
    reload_calls++;
    r->reloads++;
    r->last_reload_at = time(NULL);
    r->last_reload_ok = 0;
    snprintf(r->last_reload_msg, sizeof(r->last_reload_msg), "not reloaded (fuzz target)");
    return -ENOSYS;
}

static void cleanup(void)
{
    unlink(sock_path);
}

static void setup(void)
{
    struct cg_errors errs;
    struct sockaddr_storage ss;
    char conf[1024];
    int len = sizeof(ss), err;

    signal(SIGPIPE, SIG_IGN);
    snprintf(sock_path, sizeof(sock_path), "/tmp/corogate-fuzz-stats-%d.sock", (int)getpid());
    snprintf(conf, sizeof(conf),
             "[gateway]\nworkers = 1\nlog_level = error\nstats_socket = %s\n"
             "stats_timeout = 8s\nmetrics_listen = 127.0.0.1:0\n"
             "[listener " LISTENER "]\nbind = 127.0.0.1:0\nmode = tcp\nupstream = u\n"
             "connection_rate = %u\nconnection_burst = %u\n"
             "[upstream u]\nservers = 127.0.0.1:9, 127.0.0.1:10\nhealth_check_interval = 0\n",
             sock_path, BASE_RATE, BASE_BURST);
    uv_loop_init(&loop);
    cg_errors_init(&errs);
    if (cg_config_parse_string("fuzz_stats_cmd", conf, &d.cfg, &errs) != 0) {
        fprintf(stderr, "fuzz_stats_cmd: setup: %s\n", cg_errors_get(&errs, 0));
        abort();
    }
    cg_errors_deinit(&errs);
    cg_log_set_level(d.cfg->gw.log_level);
    d.loop = &loop;
    d.nofile = 1024;
    rt.d = &d;
    rt.started_at = time(NULL);
    rt.started_ms = uv_hrtime() / 1000000;
    rt.reload = fuzz_reload;
    err = cg_stats_start(&loop, &rt, &st);
    if (err == 0) {
        atexit(cleanup);
        cg_protocols_fill(&d.proto);
        d.proto.refuse_conn = cg_refusal_answer;
        err = cg_daemon_start(&d);
    }
    if (err == 0)
        err = uv_tcp_getsockname(&st->http_srv, (struct sockaddr *)&ss, &len);
    if (err < 0) {
        fprintf(stderr, "fuzz_stats_cmd: setup: %s\n", strerror(-err));
        abort();
    }
    memcpy(&http_addr, &ss, sizeof(http_addr));
}

static void state_get(struct state *s)
{
    struct cg_adm_listener *al = cg_admission_listener(d.adm, LISTENER);

    s->mode = atomic_load(&d.brk->mode);
    s->srv[0] = atomic_load(&d.ups[0].servers[0].state);
    s->srv[1] = atomic_load(&d.ups[0].servers[1].state);
    cg_tbs_get(&al->bucket, &s->rate, &s->burst);
    s->reloads = reload_calls;
}

static void state_reset(void)
{
    atomic_store(&d.ups[0].servers[0].state, CG_SERVER_READY);
    atomic_store(&d.ups[0].servers[1].state, CG_SERVER_READY);
    cg_breaker_set_mode(d.brk, CG_BRK_AUTO, uv_hrtime() / 1000000);
    cg_tbs_set(&cg_admission_listener(d.adm, LISTENER)->bucket, BASE_RATE, BASE_BURST);
}

/* ------------------------------------------------------------------ the model */

static int is_count(const char *s)
{
    unsigned long long v;
    char *end;

    if (*s < '0' || *s > '9')
        return 0;
    errno = 0;
    v = strtoull(s, &end, 10);
    return !errno && !*end && v <= 100000000;
}

/* Is <line> a `set` or `reload` command that may change something? Tokenised as
 * cg_stats__run_command() does. Sets *<quit> for `quit`. */
static int is_valid_change(char *line, int *quit)
{
    char *argv[8], *save = NULL, *tok;
    int argc = 0;

    for (tok = strtok_r(line, " \t\r", &save); tok && argc < 8;
         tok = strtok_r(NULL, " \t\r", &save))
        argv[argc++] = tok;
    if (argc == 1 && strcmp(argv[0], "quit") == 0)
        *quit = 1;
    if (argc == 1 && strcmp(argv[0], "reload") == 0)
        return 1;
    if (argc < 3 || strcmp(argv[0], "set") != 0)
        return 0;
    if (argc == 3 && strcmp(argv[1], "breaker") == 0)
        return !strcmp(argv[2], "auto") || !strcmp(argv[2], "force-open") ||
               !strcmp(argv[2], "force-closed");
    if (argc == 5 && strcmp(argv[1], "rate") == 0)
        return !strcmp(argv[2], LISTENER) && is_count(argv[3]) && is_count(argv[4]);
    if (argc == 5 && strcmp(argv[1], "server") == 0)
        return (!strcmp(argv[2], "u/127.0.0.1:9") || !strcmp(argv[2], "u/127.0.0.1:10")) &&
               !strcmp(argv[3], "state") &&
               (!strcmp(argv[4], "ready") || !strcmp(argv[4], "drain") ||
                !strcmp(argv[4], "maint"));
    return 0;
}

/* Does the payload hold a line that may change the state? Lines as the server splits them:
 * at "\n", the last one without it, at most LINE_MAX_BYTES - 1 bytes (longer ones are
 * refused whole), read as C strings, none after `quit`. */
static int any_valid_change(const uint8_t *p, size_t n)
{
    char line[LINE_MAX_BYTES + 1];
    const uint8_t *nl;
    size_t len;
    int quit = 0, any = 0;

    while (n > 0 && !quit) {
        nl = memchr(p, '\n', n);
        len = nl ? (size_t)(nl - p) : n;
        if (len < LINE_MAX_BYTES) {
            memcpy(line, p, len);
            line[len] = '\0';
            any |= is_valid_change(line, &quit);
        }
        p += nl ? len + 1 : len;
        n -= nl ? len + 1 : len;
    }
    return any;
}

/* How many commands that need the workers <p> may hold: every "stats", "metrics" or
 * "coros" counts, wherever it is (an upper bound of what the server would run). */
static unsigned worker_cmds(const uint8_t *p, size_t n)
{
    static const char *const words[] = { "stats", "metrics", "coros" };
    const uint8_t *at, *end = p + n;
    unsigned count = 0;
    size_t i;

    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        for (at = p; (at = memmem(at, (size_t)(end - at), words[i], strlen(words[i])));
             at++)
            count++;
    return count;
}

/* ------------------------------------------------------------------ the client */

struct fclient {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_pipe_t   pipe;
        uv_tcp_t    tcp;
    } u;
    uv_connect_t       conn;
    uv_write_t         wr;
    uv_shutdown_t      sd;
    struct fuzz_chunks chunks;
    char              *out;
    size_t             outlen, outcap;
    int                closed;
    int                write_failed;
};

static void on_fc_closed(uv_handle_t *h)
{
    struct fclient *fc = h->data;

    fc->closed = 1;
}

static void fc_close(struct fclient *fc)
{
    if (!uv_is_closing(&fc->u.h))
        uv_close(&fc->u.h, on_fc_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct fclient *fc = h->data;

    if (fc->outcap - fc->outlen < 65536) {
        fc->outcap = fc->outcap ? fc->outcap * 2 : 131072;
        fc->out = realloc(fc->out, fc->outcap);
        FUZZ_CHECK(fc->out != NULL, "out of memory");
    }
    *buf = uv_buf_init(fc->out + fc->outlen, (unsigned)(fc->outcap - fc->outlen));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct fclient *fc = s->data;

    if (n < 0) {
        fc_close(fc);
        return;
    }
    fc->outlen += (size_t)n;
    FUZZ_CHECK(fc->outlen <= OUTPUT_MAX, "more than %u bytes of answers", OUTPUT_MAX);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
}

static void write_next(struct fclient *fc);

static void on_written(uv_write_t *req, int status)
{
    struct fclient *fc = req->data;

    if (status < 0) {               /* the server closed first (quit, an HTTP answer) */
        fc->write_failed = 1;
        return;
    }
    write_next(fc);
}

/* One piece per write: the server gets them in separate reads as often as not. */
static void write_next(struct fclient *fc)
{
    const uint8_t *p;
    size_t n;
    uv_buf_t buf;

    if (uv_is_closing(&fc->u.h))
        return;
    p = fuzz_chunks_next(&fc->chunks, &n);
    if (!p) {
        fc->sd.data = fc;
        if (uv_shutdown(&fc->sd, &fc->u.s, on_shutdown) < 0)
            fc->write_failed = 1;
        return;
    }
    buf = uv_buf_init((char *)p, (unsigned)n);
    fc->wr.data = fc;
    if (uv_write(&fc->wr, &fc->u.s, &buf, 1, on_written) < 0)
        fc->write_failed = 1;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct fclient *fc = req->data;

    FUZZ_CHECK(status == 0, "connect to the stats server: %s", uv_strerror(status));
    FUZZ_CHECK(uv_read_start(&fc->u.s, on_alloc, on_read) == 0, "read_start");
    write_next(fc);
}

/* ------------------------------------------------------------------ the checks */

/* "...\n\n", then any number of prompts; or only prompts; or nothing. */
static void check_line_output(const char *p, size_t n)
{
    while (n >= 2 && p[n - 2] == '>' && p[n - 1] == ' ')
        n -= 2;
    FUZZ_CHECK(n == 0 || (n >= 2 && p[n - 2] == '\n' && p[n - 1] == '\n'),
               "the output does not end with an answer's blank line (%zu bytes: ...%.*s)", n,
               (int)(n < 40 ? n : 40), p + (n < 40 ? 0 : n - 40));
}

static void check_http_output(const char *p, size_t n)
{
    static const char *const codes[] = { "200 ", "400 ", "404 ", "405 ", "431 ", "500 " };
    const char *end, *cl;
    unsigned long long len;
    size_t i, head, body;
    int known = 0;

    if (n == 0)
        return;
    FUZZ_CHECK(n > 13 && memcmp(p, "HTTP/1.1 ", 9) == 0, "not an HTTP/1.1 response");
    for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        known |= memcmp(p + 9, codes[i], 4) == 0;
    FUZZ_CHECK(known, "status %.3s is not one we send", p + 9);
    end = memmem(p, n, "\r\n\r\n", 4);
    FUZZ_CHECK(end != NULL, "no end of headers");
    head = (size_t)(end - p) + 4;
    body = n - head;
    cl = memmem(p, head, "\r\nContent-Length: ", 18);
    FUZZ_CHECK(cl != NULL, "no Content-Length");
    len = strtoull(cl + 18, NULL, 10);
    FUZZ_CHECK(body == len || body == 0, "a body of %zu bytes for Content-Length %llu",
               body, len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fclient fc;
    struct state before, after;
    uint64_t timeouts;
    int http, change;

    if (!st)
        setup();
    if (size < 1 || size > INPUT_MAX)
        return 0;
    http = data[0] >> 7;
    if (!http && worker_cmds(data + 1, size - 1) > WORKER_CMDS_MAX)
        return -1;              /* not added to the corpus: see WORKER_CMDS_MAX */
    change = !http && any_valid_change(data + 1, size - 1);
    state_get(&before);
    timeouts = rt.stats_timeouts;

    memset(&fc, 0, sizeof(fc));
    fuzz_chunks_init(&fc.chunks, data, size);
    fc.chunks.seed = data[0] & 0x7f;
    if (http) {
        uv_tcp_init(&loop, &fc.u.tcp);
        fc.u.h.data = &fc;
        fc.conn.data = &fc;
        FUZZ_CHECK(uv_tcp_connect(&fc.conn, &fc.u.tcp, (struct sockaddr *)&http_addr,
                                  on_connect) == 0, "tcp_connect");
    } else {
        uv_pipe_init(&loop, &fc.u.pipe, 0);
        fc.u.h.data = &fc;
        fc.conn.data = &fc;
        uv_pipe_connect(&fc.conn, &fc.u.pipe, sock_path, on_connect);
    }
    /* Until our side is closed and the server forgot the client (and its workers' parts). */
    while (!fc.closed || st->nclients > 0 || st->outstanding > 0)
        uv_run(&loop, UV_RUN_ONCE);

    FUZZ_CHECK(rt.stats_timeouts == timeouts, "the server closed the client on its timeout");
    if (http)
        check_http_output(fc.out, fc.outlen);
    else
        check_line_output(fc.out, fc.outlen);
    state_get(&after);
    if (!change)
        FUZZ_CHECK(memcmp(&before, &after, sizeof(before)) == 0,
                   "no valid set/reload line, yet the state changed (mode %d->%d, servers "
                   "%d,%d->%d,%d, rate %u/%u->%u/%u, reloads %u->%u)", before.mode,
                   after.mode, before.srv[0], before.srv[1], after.srv[0], after.srv[1],
                   before.rate, before.burst, after.rate, after.burst, before.reloads,
                   after.reloads);
    else
        state_reset();
    free(fc.out);
    return 0;
}
