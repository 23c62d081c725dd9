/* tests/test_access_log.c — the connection log end to end: the real daemon, real clients
 * and backends, and the lines it writes (base/access-log.h): every field of a TCP
 * connection's text line and of a WebSocket connection's JSON line (parsed), each
 * termination cause, sampling by count, syslog and journald datagrams received on sockets
 * the test binds, and lines dropped (and counted) when the writer's queue is full.
 *
 * Lines are told apart by the client's port (each test knows its sockets' local ports), so
 * the probe connection th_daemon_wait_ready() makes never confuses a count. Nothing here
 * measures time: durations are checked for order and sign only.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define PYTHON     "/usr/bin/python3"
#define PEER       "tests/ws_peer.py"
#define READY_MS   5000
#define STOP_MS    8000
#define IO_MS      5000
#define WAIT_MS    10000

/* ------------------------------------------------------------------ the daemon */

/* One daemon for every test: listeners for each case, relaying to the harness's echo
 * server, a websocket backend (python), and a port where nothing listens. */
struct al {
    struct th_daemon *d;
    struct th_echo   *echo;
    struct th_helper  wsb;                          /* the python websocket backend */
    int               t, w, big, idle, dead, s;     /* listener ports */
    char              sock[TH_PATH_MAX];            /* stats socket */
};

/* Starts `ws_peer.py backend` and reads its "READY <port>". */
static void wsb_start(struct al *a)
{
    static const char *const argv[] = { PYTHON, PEER, "backend", NULL };
    int err = th_helper_start(&a->wsb, argv, "READY ", 10000);

    ck_assert_msg(err == 0, "the python backend did not start: %s", strerror(-err));
}

/* Starts the daemon with <gateway> as extra [gateway] lines (NULL: access_log = stderr,
 * the default format text); <with_wsb>: a websocket
 * backend for listener w too. */
static void al_start(struct al *a, const char *gateway, int with_wsb)
{
    struct th_daemon_opts opts = { .ready_log = "ready: accepting connections" };
    int err;

    memset(a, 0, sizeof(*a));
    a->wsb.pid = -1;
    a->echo = th_echo_new(0);
    ck_assert_ptr_nonnull(a->echo);
    if (with_wsb)
        wsb_start(a);
    a->t = th_free_port();
    a->w = th_free_port();
    a->big = th_free_port();
    a->idle = th_free_port();
    a->dead = th_free_port();
    a->s = th_free_port();
    snprintf(a->sock, sizeof(a->sock), "%s/al-%d.sock", th_tmpdir(), a->t);
    a->d = th_daemon_start_conf(&opts,
        "[gateway]\nworkers = 1\ncpu_pinning = off\nstats_socket = %s\n"
        "%s\n"
        "[listener t]\nbind = 127.0.0.1:%d\nupstream = e\n"
        "[listener w]\nbind = 127.0.0.1:%d\nmode = websocket\nupstream = wsb\n"
        "access_log_format = json\n"
        "[listener big]\nbind = 127.0.0.1:%d\nmode = websocket\nupstream = e\n"
        "upstream_protocol = tcp\nmax_message_size = 125\n"
        "[listener idle]\nbind = 127.0.0.1:%d\nupstream = e\nidle_timeout = 300ms\n"
        "[listener dead]\nbind = 127.0.0.1:%d\nupstream = dead\n"
        "[listener s]\nbind = 127.0.0.1:%d\nupstream = e\naccess_log_sample = 3\n"
        "[upstream e]\nservers = 127.0.0.1:%d\nhealth_check_interval = 0\n"
        "[upstream wsb]\nservers = 127.0.0.1:%d\nhealth_check_interval = 0\n"
        "[upstream dead]\nservers = 127.0.0.1:%d\nhealth_check_interval = 0\nretries = 0\n",
        a->sock, gateway ? gateway : "access_log = stderr", a->t, a->w, a->big, a->idle, a->dead, a->s,
        th_echo_port(a->echo), with_wsb ? a->wsb.port : th_echo_port(a->echo),
        th_free_port());
    ck_assert_msg(a->d != NULL, "cannot start %s: %s", th_daemon_path(), strerror(errno));
    err = th_daemon_wait_ready(a->d, a->t, READY_MS);
    TH_ASSERT(a->d, err == 0, "the daemon does not accept: %s", strerror(-err));
}

/* Stops the daemon with SIGTERM, expecting exit status 0 (ASan: no leak). */
static void al_stop(struct al *a)
{
    char how[96];
    int st = th_daemon_stop(a->d, SIGTERM, STOP_MS);

    TH_ASSERT(a->d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "stop: %s",
              th_describe_status(st, how, sizeof(how)));
    th_helper_stop(&a->wsb);
}

static int local_port(int fd)
{
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);

    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    return ntohs(sin.sin_port);
}

/* Waits for a line of the daemon's log holding <needle>; copies the first to <out>.
 * Returns 0 or -ETIMEDOUT. */
static int wait_line(struct th_daemon *d, const char *needle, char *out, size_t size)
{
    int64_t end = th_now_ms() + WAIT_MS;
    char *log, *p, *bol, *eol;

    do {
        log = th_daemon_log(d);
        p = strstr(log, needle);
        if (p) {
            for (bol = p; bol > log && bol[-1] != '\n'; bol--)
                ;
            eol = strchr(p, '\n');
            if (eol) {
                snprintf(out, size, "%.*s", (int)(eol - bol), bol);
                free(log);
                return 0;
            }
        }
        free(log);
        th_sleep_ms(20);
    } while (th_now_ms() < end);
    return -ETIMEDOUT;
}

/* The text line of the connection from client port <port>. */
static void text_line(struct al *a, int port, char *out, size_t size)
{
    char needle[32];

    snprintf(needle, sizeof(needle), "Z 127.0.0.1:%d ", port);
    TH_ASSERT(a->d, wait_line(a->d, needle, out, size) == 0, "no log line for port %d", port);
}

/* The sum of the samples of metric <family> (every label set). */
static long long metric_sum(struct al *a, const char *family)
{
    char *s = th_stats_cmd(a->sock, "show metrics", IO_MS), *p;
    size_t n = strlen(family);
    long long sum = 0;

    ck_assert_ptr_nonnull(s);
    for (p = s; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, family, n) == 0 && (p[n] == '{' || p[n] == ' '))
            sum += strtoll(strchr(p + n, ' ') + 1, NULL, 10);
    free(s);
    return sum;
}

/* The value of "<key>: N" in `show info`. */
static long long info_value(struct al *a, const char *key)
{
    char *s = th_stats_cmd(a->sock, "show info", IO_MS), *p, k[64];
    long long v = -1;

    ck_assert_ptr_nonnull(s);
    snprintf(k, sizeof(k), "\n%s: ", key);
    p = strstr(s, k);
    if (p)
        v = strtoll(p + strlen(k), NULL, 10);
    free(s);
    return v;
}

/* Waits until metric <family> sums to at least <want>. */
static void wait_metric(struct al *a, const char *family, long long want)
{
    int64_t end = th_now_ms() + WAIT_MS;
    long long v;

    while ((v = metric_sum(a, family)) < want && th_now_ms() < end)
        th_sleep_ms(20);
    TH_ASSERT(a->d, v >= want, "%s is %lld, want %lld", family, v, want);
}

/* Splits <line> at spaces into at most <max> fields. Returns the count. */
static int split(char *line, char **f, int max)
{
    int n = 0;
    char *save = NULL, *tok;

    for (tok = strtok_r(line, " ", &save); tok && n < max; tok = strtok_r(NULL, " ", &save))
        f[n++] = tok;
    return n;
}

/* 1 when <s> is an ISO 8601 UTC time with milliseconds within a minute of now. */
static int is_recent_time(const char *s)
{
    struct tm tm = { 0 };
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    time_t t;

    if (!end || end[0] != '.' || strspn(end + 1, "0123456789") != 3 || end[4] != 'Z')
        return 0;
    t = timegm(&tm);
    return t <= time(NULL) + 1 && t >= time(NULL) - 60;
}

/* A TCP connection through <port> that sends and gets back <n> bytes, then closes first
 * (EOF), and waits for the daemon's close. Returns the client's port. */
static int tcp_conn(struct al *a, int port, size_t n)
{
    char out[256], in[256];
    int fd = th_connect(port, IO_MS), lp;

    TH_ASSERT(a->d, fd >= 0, "connect: %s", strerror(-fd));
    lp = local_port(fd);
    th_fill_pattern(out, n, (uint64_t)lp);
    TH_ASSERT(a->d, th_exchange(fd, out, in, n, 1) == (ssize_t)n, "no echo");
    TH_ASSERT(a->d, memcmp(out, in, n) == 0, "echo differs");
    TH_ASSERT(a->d, th_wait_closed(fd, IO_MS) == 0, "not closed after our EOF");
    close(fd);
    return lp;
}

/* ------------------------------------------------------------------ websocket client */

static const char upgrade_fmt[] =
    "GET /chat HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n";

/* Bytes a websocket test client sent and received, to compare with the line's. */
struct wsc {
    int    fd;
    size_t sent, rcvd;
};

static void wsc_send(struct wsc *c, const void *p, size_t n)
{
    ck_assert_int_eq(th_send_all(c->fd, p, n), (ssize_t)n);
    c->sent += n;
}

/* Opens a websocket through <port> with <extra> header lines; reads the 101. */
static void wsc_open(struct al *a, struct wsc *c, int port, const char *extra)
{
    char req[512], resp[2048];
    size_t n = 0;
    ssize_t r;

    c->sent = c->rcvd = 0;
    c->fd = th_connect(port, IO_MS);
    TH_ASSERT(a->d, c->fd >= 0, "connect: %s", strerror(-c->fd));
    snprintf(req, sizeof(req), upgrade_fmt, port, extra);
    wsc_send(c, req, strlen(req));
    while (n < sizeof(resp) - 1) {      /* byte by byte: nothing of a frame is read */
        r = recv(c->fd, resp + n, 1, 0);
        TH_ASSERT(a->d, r == 1, "the 101 did not come (%zd)", r);
        n++;
        resp[n] = '\0';
        if (n >= 4 && memcmp(resp + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    c->rcvd += n;
    TH_ASSERT(a->d, strncmp(resp, "HTTP/1.1 101", 12) == 0, "answer: %s", resp);
}

/* Sends one masked frame. */
static void wsc_frame(struct wsc *c, int op, const void *data, size_t n)
{
    uint8_t f[16 + 256], mask[4] = { 1, 2, 3, 4 };
    size_t h = 2, i;

    ck_assert_uint_le(n, 256);
    f[0] = (uint8_t)(0x80 | op);
    if (n < 126) {
        f[1] = (uint8_t)(0x80 | n);
    } else {
        f[1] = 0x80 | 126;
        f[2] = (uint8_t)(n >> 8);
        f[3] = (uint8_t)n;
        h = 4;
    }
    memcpy(f + h, mask, 4);
    for (i = 0; i < n; i++)
        f[h + 4 + i] = ((const uint8_t *)data)[i] ^ mask[i % 4];
    wsc_send(c, f, h + 4 + n);
}

/* Receives one unmasked frame (payload < 126). Returns its opcode, payload in <buf>. */
static int wsc_recv(struct al *a, struct wsc *c, uint8_t *buf, size_t *len)
{
    uint8_t h[2];

    TH_ASSERT(a->d, th_recv_n(c->fd, h, 2) == 2, "no frame");
    TH_ASSERT(a->d, (h[1] & 0x80) == 0 && (h[1] & 0x7f) < 126, "unexpected frame header");
    *len = h[1] & 0x7f;
    TH_ASSERT(a->d, th_recv_n(c->fd, buf, *len) == (ssize_t)*len, "short frame");
    c->rcvd += 2 + *len;
    return h[0] & 0x0f;
}

/* Reads until EOF, counting the bytes. */
static void wsc_eof(struct al *a, struct wsc *c)
{
    char buf[512];
    ssize_t r;

    while ((r = recv(c->fd, buf, sizeof(buf), 0)) > 0)
        c->rcvd += (size_t)r;
    TH_ASSERT(a->d, r == 0, "no EOF: %s", strerror(errno));
    close(c->fd);
}

/* ------------------------------------------------------------------ a flat JSON object */

#define JMAX 32

struct jobj {
    int   n;
    char  key[JMAX][32];
    char  val[JMAX][160];      /* a string's contents, a number's digits, or "null" */
    int   str[JMAX];           /* 1: val was a string */
};

/* Parses one flat object of string, integer and null values. Returns 0 or -1. */
static int json_parse(const char *s, struct jobj *o)
{
    const char *p = s, *q;

    o->n = 0;
    if (*p++ != '{')
        return -1;
    while (*p != '}') {
        if (o->n == JMAX || *p++ != '"' || !(q = strchr(p, '"')) || q - p >= 32)
            return -1;
        snprintf(o->key[o->n], 32, "%.*s", (int)(q - p), p);
        p = q + 1;
        if (*p++ != ':')
            return -1;
        if (*p == '"') {
            q = strchr(++p, '"');
            if (!q || q - p >= 160 || memchr(p, '\\', (size_t)(q - p)))
                return -1;
            snprintf(o->val[o->n], 160, "%.*s", (int)(q - p), p);
            o->str[o->n] = 1;
            p = q + 1;
        } else {
            q = p + strspn(p, "-0123456789");
            if (q == p) {
                if (strncmp(p, "null", 4) != 0)
                    return -1;
                q = p + 4;
            }
            snprintf(o->val[o->n], 160, "%.*s", (int)(q - p), p);
            o->str[o->n] = 0;
            p = q;
        }
        o->n++;
        if (*p == ',')
            p++;
        else if (*p != '}')
            return -1;
    }
    return p[1] == '\0' ? 0 : -1;
}

/* The value of <key> (NULL when absent). */
static const char *jget(const struct jobj *o, const char *key, int *is_str)
{
    int i;

    for (i = 0; i < o->n; i++)
        if (strcmp(o->key[i], key) == 0) {
            if (is_str)
                *is_str = o->str[i];
            return o->val[i];
        }
    return NULL;
}

static void jexpect_str(struct al *a, const struct jobj *o, const char *key, const char *want)
{
    int s = 0;
    const char *v = jget(o, key, &s);

    TH_ASSERT(a->d, v && s && strcmp(v, want) == 0, "%s: %s, want \"%s\"", key,
              v ? v : "(absent)", want);
}

static long long jexpect_num(struct al *a, const struct jobj *o, const char *key)
{
    int s = 1;
    const char *v = jget(o, key, &s);

    TH_ASSERT(a->d, v && !s && strcmp(v, "null") != 0, "%s: %s, want a number", key,
              v ? v : "(absent)");
    return strtoll(v, NULL, 10);
}

/* ------------------------------------------------------------------ tests */

/* A TCP connection's text line, field by field. */
START_TEST(test_tcp_text)
{
    struct al a;
    char line[1024], copy[1024], want[128], *f[16];
    int lp, n, hs, conn, total;

    al_start(&a, NULL, 0);
    lp = tcp_conn(&a, a.t, 100);
    text_line(&a, lp, line, sizeof(line));
    snprintf(copy, sizeof(copy), "%s", line);
    n = split(copy, f, 16);
    TH_ASSERT(a.d, n == 12, "%d fields in: %s", n, line);
    TH_ASSERT(a.d, is_recent_time(f[0]), "time: %s", f[0]);
    snprintf(want, sizeof(want), "127.0.0.1:%d", lp);
    TH_ASSERT(a.d, strcmp(f[1], want) == 0, "client: %s", line);
    TH_ASSERT(a.d, strcmp(f[2], "t") == 0, "listener: %s", line);
    TH_ASSERT(a.d, strcmp(f[3], "0") == 0, "worker: %s", line);
    snprintf(want, sizeof(want), "e/127.0.0.1:%d", th_echo_port(a.echo));
    TH_ASSERT(a.d, strcmp(f[4], want) == 0, "upstream/server: %s", line);
    TH_ASSERT(a.d, sscanf(f[5], "%d/%d/%d", &hs, &conn, &total) == 3, "timers: %s", line);
    TH_ASSERT(a.d, hs == -1 && conn >= 0 && total >= conn, "timers: %s", line);
    TH_ASSERT(a.d, strcmp(f[6], "100") == 0 && strcmp(f[7], "100") == 0, "bytes: %s", line);
    TH_ASSERT(a.d, strcmp(f[8], "-/-") == 0, "messages: %s", line);
    TH_ASSERT(a.d, strcmp(f[9], "client") == 0, "termination: %s", line);
    TH_ASSERT(a.d, strcmp(f[10], "-/-") == 0, "close codes: %s", line);
    TH_ASSERT(a.d, strcmp(f[11], "-") == 0, "request id: %s", line);
    al_stop(&a);
}
END_TEST

/* A WebSocket connection's JSON line, parsed: bytes as the client counted them, messages
 * both ways, both close codes, the request id it sent. */
START_TEST(test_ws_json)
{
    struct al a;
    struct wsc c;
    struct jobj o;
    char needle[64], line[2048], want[64];
    uint8_t buf[256];
    size_t len;
    int lp, op;
    long long hs, conn, total;

    al_start(&a, NULL, 1);
    wsc_open(&a, &c, a.w, "X-Request-Id: req-42.abc\r\n");
    lp = local_port(c.fd);
    wsc_frame(&c, 1, "hello", 5);
    op = wsc_recv(&a, &c, buf, &len);
    TH_ASSERT(a.d, op == 1 && len == 5 && memcmp(buf, "hello", 5) == 0, "echo 1");
    wsc_frame(&c, 2, "\x01\x02\x03", 3);
    op = wsc_recv(&a, &c, buf, &len);
    TH_ASSERT(a.d, op == 2 && len == 3, "echo 2");
    wsc_frame(&c, 8, "\x03\xe8" "bye", 5);                 /* 1000 */
    op = wsc_recv(&a, &c, buf, &len);
    TH_ASSERT(a.d, op == 8 && len >= 2 && (buf[0] << 8 | buf[1]) == 1000, "close answer");
    wsc_eof(&a, &c);

    snprintf(needle, sizeof(needle), "\"client_port\":%d,", lp);
    TH_ASSERT(a.d, wait_line(a.d, needle, line, sizeof(line)) == 0, "no line for %d", lp);
    TH_ASSERT(a.d, json_parse(line, &o) == 0, "not a flat JSON object: %s", line);
    TH_ASSERT(a.d, o.n == 18, "%d fields: %s", o.n, line);
    TH_ASSERT(a.d, is_recent_time(jget(&o, "time", NULL)), "time: %s", line);
    jexpect_str(&a, &o, "client", "127.0.0.1");
    TH_ASSERT(a.d, jexpect_num(&a, &o, "client_port") == lp, "client_port");
    jexpect_str(&a, &o, "listener", "w");
    TH_ASSERT(a.d, jexpect_num(&a, &o, "worker") == 0, "worker");
    jexpect_str(&a, &o, "upstream", "wsb");
    snprintf(want, sizeof(want), "127.0.0.1:%d", a.wsb.port);
    jexpect_str(&a, &o, "server", want);
    hs = jexpect_num(&a, &o, "handshake_ms");
    conn = jexpect_num(&a, &o, "connect_ms");
    total = jexpect_num(&a, &o, "duration_ms");
    TH_ASSERT(a.d, conn >= 0 && hs >= conn && total >= hs, "timers: %s", line);
    TH_ASSERT(a.d, jexpect_num(&a, &o, "bytes_in") == (long long)c.sent, "bytes_in: %s "
              "(client sent %zu)", line, c.sent);
    TH_ASSERT(a.d, jexpect_num(&a, &o, "bytes_out") == (long long)c.rcvd, "bytes_out: %s "
              "(client received %zu)", line, c.rcvd);
    TH_ASSERT(a.d, jexpect_num(&a, &o, "msgs_in") == 2, "msgs_in: %s", line);
    TH_ASSERT(a.d, jexpect_num(&a, &o, "msgs_out") == 2, "msgs_out: %s", line);
    jexpect_str(&a, &o, "termination", "client");
    TH_ASSERT(a.d, jexpect_num(&a, &o, "ws_close_client") == 1000, "%s", line);
    TH_ASSERT(a.d, jexpect_num(&a, &o, "ws_close_server") == 1000, "%s", line);
    jexpect_str(&a, &o, "request_id", "req-42.abc");
    al_stop(&a);
}
END_TEST

/* Each termination cause, once: the server closing first, the idle timeout, a limit
 * (max_message_size), no server, an error (the client's reset). (The client closing first
 * is test_tcp_text's and test_ws_json's.) */
START_TEST(test_terminations)
{
    struct al a;
    struct wsc c;
    struct linger lg = { 1, 0 };
    char line[1024], big[200], buf[128], *f[16];
    size_t len;
    int fd, lp, n, op;

    al_start(&a, NULL, 0);

    /* server: the echo server goes away under an open connection */
    fd = th_connect(a.t, IO_MS);
    ck_assert_int_ge(fd, 0);
    lp = local_port(fd);
    ck_assert_int_eq(th_send_all(fd, "x", 1), 1);
    ck_assert_int_eq(th_recv_n(fd, buf, 1), 1);
    th_echo_stop(a.echo);
    TH_ASSERT(a.d, th_wait_closed(fd, IO_MS) == 0, "not closed after the server left");
    close(fd);
    text_line(&a, lp, line, sizeof(line));
    n = split(line, f, 16);
    TH_ASSERT(a.d, n == 12 && strcmp(f[9], "server") == 0, "server first: %s", f[9]);
    ck_assert_int_eq(th_echo_start(a.echo), 0);

    /* idle: nothing sent for idle_timeout (300 ms) */
    fd = th_connect(a.idle, IO_MS);
    ck_assert_int_ge(fd, 0);
    lp = local_port(fd);
    TH_ASSERT(a.d, th_wait_closed(fd, WAIT_MS) == 0, "the idle connection stayed open");
    close(fd);
    text_line(&a, lp, line, sizeof(line));
    n = split(line, f, 16);
    TH_ASSERT(a.d, n == 12 && strcmp(f[9], "idle") == 0, "idle: %s", f[9]);

    /* a limit: a message over max_message_size is closed 1009 */
    wsc_open(&a, &c, a.big, "");
    lp = local_port(c.fd);
    memset(big, 'a', sizeof(big));
    wsc_frame(&c, 2, big, sizeof(big));
    op = wsc_recv(&a, &c, (uint8_t *)buf, &len);
    TH_ASSERT(a.d, op == 8 && len >= 2 && ((uint8_t)buf[0] << 8 | (uint8_t)buf[1]) == 1009,
              "want a close 1009");
    close(c.fd);
    text_line(&a, lp, line, sizeof(line));
    n = split(line, f, 16);
    TH_ASSERT(a.d, n == 12 && strcmp(f[9], "protocol") == 0, "limit: %s", f[9]);
    TH_ASSERT(a.d, strcmp(f[8], "0/0") == 0, "messages: %s", f[8]);
    TH_ASSERT(a.d, strcmp(f[10], "-/-") == 0, "close codes: %s", f[10]);

    /* no server: nothing listens behind listener dead */
    fd = th_connect(a.dead, IO_MS);
    ck_assert_int_ge(fd, 0);
    lp = local_port(fd);
    TH_ASSERT(a.d, th_wait_closed(fd, WAIT_MS) == 0, "not closed without a server");
    close(fd);
    text_line(&a, lp, line, sizeof(line));
    n = split(line, f, 16);
    TH_ASSERT(a.d, n == 12 && strcmp(f[9], "no_server") == 0, "no server: %s", f[9]);
    TH_ASSERT(a.d, strcmp(f[4], "dead/-") == 0, "upstream/server: %s", f[4]);
    TH_ASSERT(a.d, strncmp(f[5], "-1/-1/", 6) == 0, "timers: %s", f[5]);

    /* error: the client resets the connection */
    fd = th_connect(a.t, IO_MS);
    ck_assert_int_ge(fd, 0);
    lp = local_port(fd);
    ck_assert_int_eq(th_send_all(fd, "y", 1), 1);
    ck_assert_int_eq(th_recv_n(fd, buf, 1), 1);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
    close(fd);
    text_line(&a, lp, line, sizeof(line));
    n = split(line, f, 16);
    TH_ASSERT(a.d, n == 12 && strcmp(f[9], "error") == 0, "reset: %s", f[9]);
    al_stop(&a);
}
END_TEST

/* access_log_sample = 3: the 1st, 4th and 7th of nine connections, and no other. */
START_TEST(test_sample)
{
    struct al a;
    char line[1024], needle[32];
    int ports[9], i, lines = 0;
    long long before;

    al_start(&a, NULL, 0);
    TH_ASSERT(a.d, wait_line(a.d, "Z 127.0.0.1:", line, sizeof(line)) == 0, "no probe line");
    before = info_value(&a, "log_lines_written");
    for (i = 0; i < 9; i++)
        ports[i] = tcp_conn(&a, a.s, 10);
    /* every one of them closed (the probe too), then every line queued written */
    wait_metric(&a, "corogate_worker_connections_closed_total", 10);
    for (i = 0; i < 9; i += 3)
        text_line(&a, ports[i], line, sizeof(line));
    TH_ASSERT(a.d, info_value(&a, "log_lines_written") == before + 3, "lines written: %lld, "
              "want %lld", info_value(&a, "log_lines_written"), before + 3);
    for (i = 0; i < 9; i++) {
        snprintf(needle, sizeof(needle), "Z 127.0.0.1:%d ", ports[i]);
        lines += th_daemon_log_count(a.d, needle);
        TH_ASSERT(a.d, th_daemon_log_count(a.d, needle) == (i % 3 == 0), "connection %d "
                  "(port %d): %d lines", i, ports[i], th_daemon_log_count(a.d, needle));
    }
    TH_ASSERT(a.d, lines == 3, "%d lines of 9 connections, want 3", lines);
    al_stop(&a);
}
END_TEST

/* Binds a datagram socket at <path> in the scratch directory. */
static int dgram_bind(char *path, size_t size, const char *name)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct timeval tv = { 10, 0 };
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    snprintf(path, size, "%s/%s", th_tmpdir(), name);
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    unlink(path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    return fd;
}

/* Receives datagrams on <fd> until one holds <needle>; copies it to <buf>. */
static void dgram_wait(struct al *a, int fd, const char *needle, char *buf, size_t size)
{
    int i;
    ssize_t n;

    for (i = 0; i < 20; i++) {
        n = recv(fd, buf, size - 1, 0);
        TH_ASSERT(a->d, n > 0, "no datagram: %s", strerror(errno));
        buf[n] = '\0';
        if (strstr(buf, needle))
            return;
    }
    ck_abort_msg("no datagram with %s", needle);
}

/* access_log = syslog: RFC 3164 datagrams on the socket given, the text line as message. */
START_TEST(test_syslog)
{
    struct al a;
    char path[TH_PATH_MAX], gw[TH_PATH_MAX + 64], dg[4096], needle[64];
    int fd, lp;

    fd = dgram_bind(path, sizeof(path), "dev-log");
    snprintf(gw, sizeof(gw), "access_log = syslog\naccess_log_syslog_socket = %s", path);
    al_start(&a, gw, 0);
    lp = tcp_conn(&a, a.t, 7);
    snprintf(needle, sizeof(needle), " 127.0.0.1:%d ", lp);
    dgram_wait(&a, fd, needle, dg, sizeof(dg));
    TH_ASSERT(a.d, strncmp(dg, "<134>", 5) == 0, "priority (local0.info): %s", dg);
    snprintf(needle, sizeof(needle), " corogate[%d]: ", (int)a.d->pid);
    TH_ASSERT(a.d, strstr(dg, needle) != NULL, "tag: %s", dg);
    snprintf(needle, sizeof(needle), "Z 127.0.0.1:%d t 0 e/", lp);
    TH_ASSERT(a.d, strstr(dg, needle) && strstr(dg, " 7 7 -/- client -/- -"), "line: %s", dg);
    TH_ASSERT(a.d, !strchr(dg, '\n'), "a newline in: %s", dg);
    al_stop(&a);
    close(fd);
}
END_TEST

/* The value of journal field <key> in datagram <dg> (into <buf>), or NULL. */
static const char *jfield(const char *dg, const char *key, char *buf, size_t size)
{
    const char *p = dg, *eol;
    size_t n = strlen(key);

    for (; p && *p; p = eol ? eol + 1 : NULL) {
        eol = strchr(p, '\n');
        if (strncmp(p, key, n) == 0 && p[n] == '=') {
            snprintf(buf, size, "%.*s", (int)(eol ? (long)(eol - p) - (long)n - 1 : (long)strlen(p + n + 1)),
                     p + n + 1);
            return buf;
        }
    }
    return NULL;
}

/* access_log = journal: journald's native datagram with structured fields. */
START_TEST(test_journal)
{
    static const struct { const char *key, *want; } fields[] = {
        { "PRIORITY", "6" }, { "SYSLOG_IDENTIFIER", "corogate" }, { "CLIENT_ADDR", "127.0.0.1" },
        { "LISTENER", "t" }, { "WORKER", "0" }, { "UPSTREAM", "e" }, { "BYTES_IN", "9" },
        { "BYTES_OUT", "9" }, { "TERMINATION", "client" }, { "HANDSHAKE_MS", "-1" },
    };
    struct al a;
    char path[TH_PATH_MAX], gw[TH_PATH_MAX + 64], dg[4096], needle[64], v[256], want[64];
    int fd, lp;
    size_t i;

    fd = dgram_bind(path, sizeof(path), "journal-socket");
    snprintf(gw, sizeof(gw), "access_log = journal\naccess_log_journal_socket = %s", path);
    al_start(&a, gw, 0);
    lp = tcp_conn(&a, a.t, 9);
    snprintf(needle, sizeof(needle), "\nCLIENT_PORT=%d\n", lp);
    dgram_wait(&a, fd, needle, dg, sizeof(dg));
    for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
        TH_ASSERT(a.d, jfield(dg, fields[i].key, v, sizeof(v)) &&
                  strcmp(v, fields[i].want) == 0, "%s: want %s in:\n%s", fields[i].key,
                  fields[i].want, dg);
    snprintf(want, sizeof(want), "127.0.0.1:%d", th_echo_port(a.echo));
    TH_ASSERT(a.d, jfield(dg, "SERVER", v, sizeof(v)) && strcmp(v, want) == 0, "%s", dg);
    snprintf(needle, sizeof(needle), "Z 127.0.0.1:%d t 0 e/", lp);
    TH_ASSERT(a.d, jfield(dg, "MESSAGE", v, sizeof(v)) && strstr(v, needle) &&
              strstr(v, " 9 9 -/- client -/- -"), "MESSAGE: %s", dg);
    TH_ASSERT(a.d, jfield(dg, "CONNECT_MS", v, sizeof(v)) && atoi(v) >= 0, "%s", dg);
    TH_ASSERT(a.d, jfield(dg, "DURATION_MS", v, sizeof(v)) && atoi(v) >= 0, "%s", dg);
    TH_ASSERT(a.d, !jfield(dg, "REQUEST_ID", v, sizeof(v)), "a request id for TCP: %s", dg);
    al_stop(&a);
    close(fd);
}
END_TEST

/* The writer paused (test hook) with access_log_queue = 4: of ten connections four are
 * queued and six dropped and counted; resumed, the four are written. */
START_TEST(test_dropped)
{
    struct al a;
    char line[1024], *s;
    int ports[10], i;
    long long before;

    setenv("CG_TEST_HOOKS", "1", 1);
    al_start(&a, "access_log = stderr\naccess_log_queue = 4", 0);
    unsetenv("CG_TEST_HOOKS");
    TH_ASSERT(a.d, wait_line(a.d, "Z 127.0.0.1:", line, sizeof(line)) == 0, "no probe line");
    before = info_value(&a, "log_lines_written");
    s = th_stats_cmd(a.sock, "debug log-writer pause", IO_MS);
    TH_ASSERT(a.d, s && strstr(s, "log writer: paused"), "pause: %s", s ? s : "?");
    free(s);
    for (i = 0; i < 10; i++)
        ports[i] = tcp_conn(&a, a.t, 10);
    wait_metric(&a, "corogate_worker_connections_closed_total", 11);
    TH_ASSERT(a.d, metric_sum(&a, "corogate_log_lines_dropped_total") == 6, "dropped: %lld",
              metric_sum(&a, "corogate_log_lines_dropped_total"));
    TH_ASSERT(a.d, info_value(&a, "log_lines_dropped") == 6, "show info: %lld",
              info_value(&a, "log_lines_dropped"));
    TH_ASSERT(a.d, info_value(&a, "log_lines_written") == before, "written while paused");
    s = th_stats_cmd(a.sock, "show stats", IO_MS);
    TH_ASSERT(a.d, s && strstr(s, "\"log_lines_dropped\":6"), "show stats: %s", s ? s : "?");
    free(s);
    s = th_stats_cmd(a.sock, "debug log-writer resume", IO_MS);
    free(s);
    for (i = 0; i < 4; i++)
        text_line(&a, ports[i], line, sizeof(line));
    TH_ASSERT(a.d, info_value(&a, "log_lines_written") == before + 4, "written: %lld",
              info_value(&a, "log_lines_written"));
    for (i = 4; i < 10; i++) {
        snprintf(line, sizeof(line), "Z 127.0.0.1:%d ", ports[i]);
        TH_ASSERT(a.d, th_daemon_log_count(a.d, line) == 0, "a dropped line written: %d",
                  ports[i]);
    }
    al_stop(&a);
}
END_TEST

/* ------------------------------------------------------------------ suite */

Suite *access_log_suite(void)
{
    Suite *s = suite_create("access_log");

    th_suite_add(s, "tcp_text", test_tcp_text, 60);
    th_suite_add(s, "ws_json", test_ws_json, 60);
    th_suite_add(s, "terminations", test_terminations, 60);
    th_suite_add(s, "sample", test_sample, 60);
    th_suite_add(s, "syslog", test_syslog, 60);
    th_suite_add(s, "journal", test_journal, 60);
    th_suite_add(s, "dropped", test_dropped, 60);
    return s;
}
