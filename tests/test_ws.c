/* tests/test_ws.c — websocket listeners end to end: the real daemon between independent
 * peers. Clients and backends are Debian's python3-websockets (tests/ws_peer.py, run with
 * /usr/bin/python3); what that library will not send (malformed requests, protocol
 * violations, a client that ignores pings) comes from raw sockets here. The TCP bridge
 * runs against the harness's echo server.
 *
 * Each test starts its own daemon and stops it with SIGTERM expecting exit status 0 (under
 * ASan: no leak, no error at exit). Failure messages end with the daemon's log tail.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/ws-frame.h"
#include "harness.h"

#define PYTHON     "/usr/bin/python3"
#define PEER       "tests/ws_peer.py"
#define READY_MS   5000
#define STOP_MS    8000
#define IO_MS      5000
#define CLIENT_MS  60000

/* ------------------------------------------------------------------ python peers */

struct backend {
    struct th_helper h;
    int              port;
    char             log[TH_PATH_MAX];  /* its event log: "open PATH", "close CODE REASON" */
};

/* Starts `ws_peer.py backend` with the extra arguments <a1>, <a2> (NULL = none) and waits
 * for its "READY <port>". */
static void backend_start(struct backend *b, const char *a1, const char *a2)
{
    const char *argv[] = { PYTHON, PEER, "backend", "--log", b->log, a1, a2, NULL };
    int err;

    snprintf(b->log, sizeof(b->log), "%s/backend-%d-%ld.log", th_tmpdir(), (int)getpid(),
             (long)th_now_ms() + rand());
    err = th_helper_start(&b->h, argv, "READY ", 10000);
    ck_assert_msg(err == 0, "the python backend did not start: %s", strerror(-err));
    b->port = b->h.port;
}

static void backend_stop(struct backend *b)
{
    th_helper_stop(&b->h);
}

/* The backend's event log (caller frees). */
static char *backend_log(const struct backend *b)
{
    char *s = th_read_file(b->log, NULL);

    return s ? s : strdup("");
}

/* Waits up to 5 s for <needle> in the backend's log. */
static int backend_wait_log(const struct backend *b, const char *needle)
{
    int64_t end = th_now_ms() + 5000;
    char *s;
    int found;

    do {
        s = backend_log(b);
        found = strstr(s, needle) != NULL;
        free(s);
        if (found)
            return 1;
        th_sleep_ms(20);
    } while (th_now_ms() < end);
    return 0;
}

/* Runs `ws_peer.py client URL SCENARIO ARGS...` (NULL-terminated) to completion, for
 * CLIENT_MS at most; fails the test with the client's output and the daemon's log tail
 * unless it exited 0. */
static void client_run(struct th_daemon *d, int port, const char *path, ...)
{
    const char *argv[16];
    char url[256], out[TH_PATH_MAX], how[96];
    int argc = 0, st = -1, fd;
    int64_t end;
    va_list ap;
    pid_t pid;
    char *text;

    snprintf(url, sizeof(url), "ws://127.0.0.1:%d%s", port, path);
    argv[argc++] = PYTHON;
    argv[argc++] = PEER;
    argv[argc++] = "client";
    argv[argc++] = url;
    va_start(ap, path);
    while (argc < 15 && (argv[argc] = va_arg(ap, const char *)) != NULL)
        argc++;
    va_end(ap);
    argv[argc] = NULL;
    snprintf(out, sizeof(out), "%s/client-%d-%ld.out", th_tmpdir(), (int)getpid(),
             (long)th_now_ms() + rand());
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    pid = th_fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fd, 1);
        dup2(fd, 2);
        execv(PYTHON, (char *const *)argv);
        _exit(127);
    }
    close(fd);
    end = th_now_ms() + CLIENT_MS;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (th_now_ms() > end) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            break;
        }
        th_sleep_ms(10);
    }
    text = th_read_file(out, NULL);
    TH_ASSERT(d, WIFEXITED(st) && WEXITSTATUS(st) == 0, "client %s %s: %s: %s", url, argv[4],
              th_describe_status(st, how, sizeof(how)), text ? text : "");
    free(text);
}

/* ------------------------------------------------------------------ the daemon */

/* Starts a daemon with one websocket [listener w] (its extra lines <listener>) relaying
 * to [upstream u] at <servers>, plus the sections <more> (NULL = none). */
static struct th_daemon *ws_start(const char *listener, const char *servers, const char *more,
                                  int *port)
{
    struct th_daemon_opts opts = { .ready_log = "ready: accepting connections" };
    struct th_daemon *d;
    int err, attempt;

    for (attempt = 0;; attempt++) {
        *port = th_free_port();
        ck_assert_int_gt(*port, 0);
        d = th_daemon_start_conf(&opts,
                                 "[gateway]\nworkers = 2\ncpu_pinning = off\n"
                                 "drain_timeout = 1s\n"
                                 "stats_socket = %s/stats-%d.sock\n"
                                 "[bpf]\nattach = off\n"
                                 "[listener w]\nbind = 127.0.0.1:%d\nmode = websocket\n"
                                 "upstream = u\n%s\n"
                                 "[upstream u]\nservers = %s\nhealth_check_interval = 0\n"
                                 "connect_timeout = 500ms\nretries = 0\n%s\n",
                                 th_tmpdir(), *port, *port, listener ? listener : "", servers,
                                 more ? more : "");
        ck_assert_msg(d != NULL, "cannot start %s: %s", th_daemon_path(), strerror(errno));
        err = th_daemon_wait_ready(d, *port, READY_MS);
        if (err == -ECHILD && attempt < 2 &&
            th_daemon_log_count(d, "Address already in use") > 0) {
            th_daemon_free(d);
            continue;
        }
        TH_ASSERT(d, err == 0, "the daemon does not accept on port %d", *port);
        return d;
    }
}

static void ws_stop_clean(struct th_daemon *d)
{
    char how[96];
    int st = th_daemon_stop(d, SIGTERM, STOP_MS);

    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "SIGTERM: %s, expected exit status 0", th_describe_status(st, how, sizeof(how)));
}

static const char *servers_at(int port, char *buf, size_t size)
{
    snprintf(buf, size, "127.0.0.1:%d", port);
    return buf;
}

/* The sum over workers of the Prometheus series of <family> whose labels hold <label>
 * (NULL: all), e.g. "corogate_websocket_closes_sent_total", "reason=\"1009\"". */
static long metric(int port, const char *family, const char *label)
{
    char sock[TH_PATH_MAX];

    snprintf(sock, sizeof(sock), "%s/stats-%d.sock", th_tmpdir(), port);
    return th_metric_sum(sock, family, label);
}

/* ------------------------------------------------------------------ raw clients */

static const char upgrade_fmt[] =
    "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n%s\r\n";

/* Opens a WebSocket on <path> and reads the 101 head (byte by byte: frames may follow).
 * Returns the descriptor. */
static int raw_open_head(struct th_daemon *d, int port, const char *path, const char *extra,
                         char *head, size_t size)
{
    char req[1024];
    size_t n = 0;
    int fd = th_connect(port, IO_MS);

    TH_ASSERT(d, fd >= 0, "connect: %s", strerror(-fd));
    snprintf(req, sizeof(req), upgrade_fmt, path, extra ? extra : "");
    ck_assert_int_eq(th_send_all(fd, req, strlen(req)), (ssize_t)strlen(req));
    while (n < size - 1 && (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4) != 0)) {
        TH_ASSERT(d, th_recv_n(fd, head + n, 1) == 1, "no 101 (got %zu bytes)", n);
        n++;
    }
    head[n] = '\0';
    TH_ASSERT(d, strncmp(head, "HTTP/1.1 101 ", 13) == 0, "answer: %s", head);
    TH_ASSERT(d, strstr(head, "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"),
              "answer: %s", head);
    return fd;
}

static int raw_open(struct th_daemon *d, int port, const char *path, const char *extra)
{
    char head[2048];

    return raw_open_head(d, port, path, extra, head, sizeof(head));
}

/* Sends one frame; <mask> 1 masks it as a client must. */
static void frame_send(int fd, int fin, int rsv, int op, int mask, const void *data, size_t n)
{
    uint8_t h[14], key[4] = { 0x12, 0x34, 0x56, 0x78 }, *buf;
    size_t hl = 2, i;

    h[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv << 4) | op);
    if (n < 126) {
        h[1] = (uint8_t)n;
    } else if (n < 65536) {
        h[1] = 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        hl = 4;
    } else {
        h[1] = 127;
        for (i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    if (mask) {
        h[1] |= 0x80;
        memcpy(h + hl, key, 4);
        hl += 4;
    }
    buf = malloc(hl + n + 1);
    memcpy(buf, h, hl);
    for (i = 0; i < n; i++)
        buf[hl + i] = ((const uint8_t *)data)[i] ^ (mask ? key[i % 4] : 0);
    ck_assert_int_eq(th_send_all(fd, buf, hl + n), (ssize_t)(hl + n));
    free(buf);
}

/* Receives one frame (servers never mask): its first header byte (FIN, RSV, opcode) in
 * *<b0>. Returns its payload length, or a negative errno (-EPIPE at EOF). */
static ssize_t frame_recv_b0(int fd, uint8_t *b0, uint8_t *buf, size_t cap)
{
    uint8_t h[10];
    uint64_t n;
    ssize_t r;
    int i;

    r = th_recv_n(fd, h, 2);
    if (r != 2)
        return r < 0 ? r : -EPIPE;
    *b0 = h[0];
    n = h[1] & 0x7f;
    if (h[1] & 0x80)
        return -EPROTO;
    if (n >= 126) {
        int k = n == 126 ? 2 : 8;

        if (th_recv_n(fd, h + 2, (size_t)k) != k)
            return -EPIPE;
        for (n = 0, i = 0; i < k; i++)
            n = n << 8 | h[2 + i];
    }
    if (n > cap)
        return -EMSGSIZE;
    if (n && th_recv_n(fd, buf, n) != (ssize_t)n)
        return -EPIPE;
    return (ssize_t)n;
}

static ssize_t frame_recv(int fd, int *op, uint8_t *buf, size_t cap)
{
    uint8_t b0 = 0;
    ssize_t n = frame_recv_b0(fd, &b0, buf, cap);

    *op = b0 & 0x0f;
    return n;
}

/* Reads frames until a close; returns its code (1005: none) and copies its reason. */
static int close_recv(struct th_daemon *d, int fd, char *reason, size_t size)
{
    uint8_t buf[1 << 16];
    ssize_t n;
    int op;

    for (;;) {
        n = frame_recv(fd, &op, buf, sizeof(buf));
        TH_ASSERT(d, n >= 0, "waiting for a close frame: %s", strerror((int)-n));
        if (op != 0x8)
            continue;
        if (reason)
            snprintf(reason, size, "%.*s", n > 2 ? (int)n - 2 : 0, (char *)buf + 2);
        return n >= 2 ? buf[0] << 8 | buf[1] : 1005;
    }
}

/* Expects a close with <code> from the daemon, answers it and expects the TCP close. */
static void expect_close(struct th_daemon *d, int fd, int code)
{
    char reason[128];
    uint8_t ans[2] = { (uint8_t)(code >> 8), (uint8_t)code };
    int got = close_recv(d, fd, reason, sizeof(reason));

    TH_ASSERT(d, got == code, "close %d (%s), expected %d", got, reason, code);
    frame_send(fd, 1, 0, 0x8, 1, ans, 2);
    TH_ASSERT(d, th_wait_closed(fd, IO_MS) == 0, "the daemon kept the connection");
    close(fd);
}

/* Sends <req> raw and returns the whole answer up to EOF (caller frees). */
static char *http_exchange(struct th_daemon *d, int port, const char *req, size_t len)
{
    char *buf = malloc(65536);
    int fd = th_connect(port, IO_MS);
    ssize_t n;

    TH_ASSERT(d, fd >= 0, "connect: %s", strerror(-fd));
    ck_assert_int_eq(th_send_all(fd, req, len), (ssize_t)len);
    n = th_recv_eof(fd, buf, 65535);
    TH_ASSERT(d, n >= 0, "reading the answer: %s", strerror((int)-n));
    buf[n] = '\0';
    close(fd);
    return buf;
}

/* ------------------------------------------------------------------ 1. relaying */

/* Text, binary, empty, fragmented, 1 MiB, 200 in flight; headers to the backend. */
/* The relay's frame layer rules (common/ws-frame.h): headers in their shortest form that
 * read back, and the wide mask against a byte loop at every phase and tail length. */
START_TEST(test_ws_frame_rules)
{
    static const uint64_t lens[] = { 0, 1, 125, 126, 127, 65535, 65536, 1ull << 32 };
    const uint8_t key[4] = { 0x37, 0xfa, 0x21, 0x3d };
    uint8_t h[CG_WS_HDR_MAX], src[64], dst[64], want[64];
    size_t i, n, k;
    unsigned phase;

    for (i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        n = cg_ws_hdr_write(h, 1, CG_WS_RSV1, CG_WS_OP_TEXT, lens[i], NULL);
        ck_assert_uint_eq(n, cg_ws_hdr_size(h[1]));
        ck_assert_uint_eq(n, lens[i] < 126 ? 2 : lens[i] < 65536 ? 4 : 10);
        ck_assert(cg_ws_payload_len(h) == lens[i]);
        ck_assert_uint_eq(h[0], 0xc1);
        n = cg_ws_hdr_write(h, 0, 0, CG_WS_OP_CONT, lens[i], key);
        ck_assert_uint_eq(n, cg_ws_hdr_size(h[1]));
        ck_assert(cg_ws_payload_len(h) == lens[i]);
        ck_assert_uint_eq(h[0], 0x00);
        ck_assert_int_eq(memcmp(h + n - 4, key, 4), 0);
    }
    for (k = 0; k < sizeof(src); k++)
        src[k] = (uint8_t)(k * 29 + 3);
    for (phase = 0; phase < 4; phase++) {
        for (n = 0; n <= 40; n++) {
            for (k = 0; k < n; k++)
                want[k] = src[k] ^ key[(phase + k) & 3];
            cg_ws_mask_copy(dst, src, n, key, phase);
            ck_assert_int_eq(memcmp(dst, want, n), 0);
            cg_ws_mask_copy(dst, dst, n, key, phase);          /* in place: undone */
            ck_assert_int_eq(memcmp(dst, src, n), 0);
        }
    }
}
END_TEST

START_TEST(test_ws_echo)
{
    struct backend be;
    struct th_daemon *d;
    char srv[64];
    int port;

    backend_start(&be, "--subprotocols", "a,b");
    d = ws_start(NULL, servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    client_run(d, port, "/echo", "echo", NULL);
    client_run(d, port, "/chat/room?x=1", "headers", NULL);
    client_run(d, port, "/", "subprotocol", "b,c", "b", NULL);
    client_run(d, port, "/", "subprotocol", "c,a", "a", NULL);
    client_run(d, port, "/", "subprotocol", "c", NULL);
    TH_ASSERT(d, backend_wait_log(&be, "open /chat/room?x=1"), "the backend saw no path");
    TH_ASSERT(d, metric(port, "corogate_websocket_upgrades_total", NULL) >= 6,
              "upgrades counted: %ld", metric(port, "corogate_websocket_upgrades_total", NULL));
    TH_ASSERT(d, metric(port, "corogate_websocket_received_messages_total", NULL) >= 200,
              "messages counted");
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* The bundled backend, `corogate-loadgen serve --mode ws`, behind the daemon: the same
 * echo scenario through an independent client (python) and our own server. */
/* Starts `corogate-loadgen serve --mode ws` (the bundled echo backend) on a free port:
 * returns the port, its pid in *<pid>. */
static int loadgen_ws_start(pid_t *pid)
{
    char bin[TH_PATH_MAX], listen_at[64];
    int bport, fd = -1;
    int64_t end;

    snprintf(bin, sizeof(bin), "%s/corogate-loadgen",
             getenv("CG_BUILD") ? getenv("CG_BUILD") : "build");
    bport = th_free_port();
    ck_assert_int_gt(bport, 0);
    snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%d", bport);
    *pid = th_fork();
    if (*pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(bin, bin, "serve", "--mode", "ws", "--listen", listen_at, "--threads", "1",
              "--quiet", (char *)NULL);
        _exit(127);
    }
    for (end = th_now_ms() + READY_MS; fd < 0 && th_now_ms() < end;) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)bport),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            close(fd);
            fd = -1;
            th_sleep_ms(20);
        }
    }
    ck_assert_msg(fd >= 0, "%s serve --mode ws does not accept on %s", bin, listen_at);
    close(fd);
    return bport;
}

static void loadgen_ws_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
}

START_TEST(test_ws_loadgen_backend)
{
    char srv[64];
    struct th_daemon *d;
    int bport, port;
    pid_t pid;

    bport = loadgen_ws_start(&pid);
    d = ws_start(NULL, servers_at(bport, srv, sizeof(srv)), NULL, &port);
    client_run(d, port, "/echo", "echo", NULL);
    ws_stop_clean(d);
    loadgen_ws_stop(pid);
}
END_TEST

/* Routes pick the backend by path. */
START_TEST(test_ws_routes)
{
    struct backend a, b;
    struct th_daemon *d;
    char srv[64], more[256], lst[128];
    int port;

    backend_start(&a, NULL, NULL);
    backend_start(&b, NULL, NULL);
    snprintf(lst, sizeof(lst), "routes = /b/*=ub 127.0.0.1/exact=ub");
    snprintf(more, sizeof(more), "[upstream ub]\nservers = 127.0.0.1:%d\n"
             "health_check_interval = 0\n", b.port);
    d = ws_start(lst, servers_at(a.port, srv, sizeof(srv)), more, &port);
    client_run(d, port, "/b/x", "echo", NULL);
    client_run(d, port, "/a/y", "echo", NULL);
    client_run(d, port, "/exact?q=1", "echo", NULL);
    TH_ASSERT(d, backend_wait_log(&b, "open /b/x"), "/b/x did not reach backend b");
    TH_ASSERT(d, backend_wait_log(&b, "open /exact?q=1"), "/exact did not reach backend b");
    TH_ASSERT(d, backend_wait_log(&a, "open /a/y"), "/a/y did not reach backend a");
    ws_stop_clean(d);
    backend_stop(&a);
    backend_stop(&b);
}
END_TEST

/* Close codes and reasons travel both ways; pings are answered by the gateway; a backend
 * that drops its connection closes the client with 1014. */
START_TEST(test_ws_close_and_ping)
{
    struct backend be;
    struct th_daemon *d;
    char srv[64];
    int port;

    backend_start(&be, NULL, NULL);
    d = ws_start(NULL, servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    client_run(d, port, "/", "close_client", "4001", "bye now", NULL);
    TH_ASSERT(d, backend_wait_log(&be, "close 4001 bye now"), "the backend did not see 4001");
    client_run(d, port, "/", "close_backend", "4002", "later", NULL);
    client_run(d, port, "/", "close_backend", "1000", "done", NULL);
    client_run(d, port, "/", "ping", NULL);
    client_run(d, port, "/", "backend_abort", NULL);
    TH_ASSERT(d, metric(port, "corogate_websocket_closes_received_total",
                        "reason=\"other\"") >= 1, "close 4001 not counted");
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* upstream_protocol = tcp: message payloads to a TCP stream and back as binary messages. */
START_TEST(test_ws_tcp_bridge)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char srv[64];
    int port;

    ck_assert_ptr_nonnull(e);
    d = ws_start("upstream_protocol = tcp", servers_at(th_echo_port(e), srv, sizeof(srv)), NULL,
                 &port);
    client_run(d, port, "/", "bridge", NULL);
    client_run(d, port, "/", "close_client", "1000", "bye", NULL);
    ws_stop_clean(d);
    th_echo_free(e);
}
END_TEST

/* ------------------------------------------------------------------ 2. handshakes */

struct hs_case {
    const char *req;            /* a full request; "%s" is replaced by 600 bytes */
    int         status;
    const char *header;         /* a line the answer must have, or NULL */
};

static const struct hs_case hs_cases[] = {
    { "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 426, "Upgrade: websocket\r\n" },
    { "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n",
      426, "Sec-WebSocket-Version: 13\r\n" },
    { "POST / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      405, "Allow: GET\r\n" },
    { "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n\r\n", 400, NULL },
    { "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      400, NULL },
    { "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Origin: http://evil.example\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
      403, NULL },
    { "GET /%s HTTP/1.1\r\nHost: x\r\n\r\n", 414, NULL },
    { "GET / HTTP/1.1\r\nHost: x\r\nCookie: %s\r\n\r\n", 431, NULL },
    { "GET / HTTP/1.1\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\nF: 1\r\nG: 1\r\nH: 1\r\n"
      "I: 1\r\n\r\n", 431, NULL },
    { "GET / HTTP/1.1\r\nHost: a\nb\r\n\r\n", 400, NULL },
    { "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200, "Content-Length: 3\r\n" },
    { "GET /healthz HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", 200, NULL },
};

/* Every refusal with its status, a short body and Connection: close, then EOF; counted. */
START_TEST(test_ws_handshake_refusals)
{
    static const char listener[] =
        "max_header_size = 512\nmax_headers = 8\nmax_request_line = 256\n"
        "allowed_origins = http://good.example\n";
    struct th_daemon *d;
    char big[601], req[2048], want[32];
    char *ans;
    size_t i, n = sizeof(hs_cases) / sizeof(hs_cases[0]);
    int port, len;

    memset(big, 'x', 600);
    big[600] = '\0';
    d = ws_start(listener, "127.0.0.1:1", NULL, &port);
    for (i = 0; i < n; i++) {
        len = snprintf(req, sizeof(req), hs_cases[i].req, big);
        ans = http_exchange(d, port, req, (size_t)len);
        snprintf(want, sizeof(want), "HTTP/1.1 %d ", hs_cases[i].status);
        TH_ASSERT(d, strncmp(ans, want, strlen(want)) == 0, "case %zu: %s", i, ans);
        TH_ASSERT(d, strstr(ans, "\r\nConnection: close\r\n"), "case %zu: %s", i, ans);
        TH_ASSERT(d, !hs_cases[i].header || strstr(ans, hs_cases[i].header), "case %zu: %s",
                  i, ans);
        free(ans);
    }
    TH_ASSERT(d, metric(port, "corogate_websocket_handshake_failures_total",
                        "reason=\"431\"") == 2, "431s counted");
    TH_ASSERT(d, metric(port, "corogate_websocket_handshake_failures_total",
                        "reason=\"426\"") == 2, "426s counted");
    TH_ASSERT(d, metric(port, "corogate_websocket_health_checks_total", NULL) == 2,
              "health checks counted");
    ws_stop_clean(d);
}
END_TEST

/* A client dribbling its request one byte at a time is cut at handshake_timeout: the
 * limit is on the whole request, not on the silence between bytes. 200 ms a byte, the
 * request would take 9 s; with handshake_timeout = 1s it is cut before it is complete
 * (by what was sent, not by the clock: a busy machine only delays the cut), and never
 * before the second is over. */
START_TEST(test_ws_slowloris)
{
    static const char req[] = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\n";
    struct th_daemon *d;
    struct pollfd p;
    char ans[1024];
    int64_t t0;
    size_t i;
    ssize_t n;
    int port, fd;

    d = ws_start("handshake_timeout = 1s", "127.0.0.1:1", NULL, &port);
    fd = th_connect(port, IO_MS);
    ck_assert_int_ge(fd, 0);
    p.fd = fd;
    p.events = POLLIN;
    t0 = th_now_ms();
    for (i = 0; i < sizeof(req) - 1; i++) {
        if (poll(&p, 1, 0) == 1 || send(fd, req + i, 1, MSG_NOSIGNAL) != 1)
            break;              /* answered (408), or cut */
        th_sleep_ms(200);
    }
    TH_ASSERT(d, i < sizeof(req) - 1, "the whole request went through uncut");
    n = th_recv_eof(fd, ans, sizeof(ans) - 1);
    TH_ASSERT(d, n > 0, "no answer: %s", strerror((int)-n));
    ans[n] = '\0';
    TH_ASSERT(d, strncmp(ans, "HTTP/1.1 408 ", 13) == 0, "answer: %s", ans);
    TH_ASSERT(d, th_now_ms() - t0 >= 900, "cut after %ld ms", (long)(th_now_ms() - t0));
    close(fd);
    ws_stop_clean(d);
}
END_TEST

/* Backend down: 502; a backend that never answers the connect: 504. */
START_TEST(test_ws_backend_down)
{
    struct th_blackhole *bh = th_blackhole_new();
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char srv[64], more[256];
    int port, dead = th_free_port();

    ck_assert_ptr_nonnull(bh);
    ck_assert_ptr_nonnull(e);
    snprintf(more, sizeof(more), "[upstream hole]\nservers = 127.0.0.1:%d\n"
             "health_check_interval = 0\nconnect_timeout = 300ms\nretries = 0\n"
             "[upstream echo]\nservers = 127.0.0.1:%d\nhealth_check_interval = 0\n",
             bh->port, th_echo_port(e));
    d = ws_start("routes = /hole=hole /echo=echo", servers_at(dead, srv, sizeof(srv)), more,
                 &port);
    client_run(d, port, "/", "refused", "502", NULL);
    client_run(d, port, "/hole", "refused", "504", NULL);
    /* a TCP echo is no WebSocket server: our own request comes back, not a 101 */
    client_run(d, port, "/echo", "refused", "502", NULL);
    TH_ASSERT(d, metric(port, "corogate_websocket_handshake_failures_total",
                        "reason=\"502\"") == 2, "502s counted");
    TH_ASSERT(d, metric(port, "corogate_websocket_upstream_handshake_failures_total", NULL)
                 == 1, "backend handshake failure counted");
    ws_stop_clean(d);
    th_echo_free(e);
    th_blackhole_free(bh);
}
END_TEST

/* ------------------------------------------------------------------ 3. limits */

/* Protocol violations close 1002 (1007 for UTF-8), each counted by kind. */
struct violation {
    int         fin, rsv, op, mask;
    const char *payload;
    size_t      len;
    int         code;
    const char *kind;
    int         raw;        /* 1: <payload> is the whole frame, sent as is */
};

static const struct violation violations[] = {
    { 1, 0, 0x1, 0, "unmasked", 8, 1002, "unmasked", 0 },
    { 1, 4, 0x1, 1, "rsv1", 4, 1002, "rsv", 0 },
    { 1, 0, 0x3, 1, "op3", 3, 1002, "opcode", 0 },
    { 1, 0, 0xb, 1, "opB", 3, 1002, "opcode", 0 },
    { 1, 0, 0x0, 1, "cont", 4, 1002, "continuation", 0 },
    { 0, 0, 0x9, 1, "frag ping", 9, 1002, "control", 0 },
    { 1, 0, 0x9, 1, NULL, 126, 1002, "control", 0 },
    { 1, 0, 0x8, 1, "\x03\xed", 2, 1002, "close", 0 },             /* code 1005 on the wire */
    { 1, 0, 0x8, 1, "\x03", 1, 1002, "close", 0 },
    { 1, 0, 0x1, 1, "bad \xff utf8", 10, 1007, "utf8", 0 },
    { 1, 0, 0x1, 1, "cut \xe2\x9c", 6, 1007, "utf8", 0 },
    { 1, 0, 0x8, 1, "\x03\xe8\xc0\xaf", 4, 1007, "utf8", 0 },     /* reason not UTF-8 */
    /* a 5-byte payload with a 16-bit length: not the shortest form */
    { 0, 0, 0, 0, "\x81\xfe\x00\x05\x00\x00\x00\x00hello", 13, 1002, "length", 1 },
    /* a fragmented message interrupted by a new one */
    { 0, 0, 0, 0, "\x01\x80\x00\x00\x00\x00\x81\x80\x00\x00\x00\x00", 12, 1002,
      "continuation", 1 },
};

START_TEST(test_ws_violations)
{
    const struct violation *v = &violations[_i];
    struct backend be;
    struct th_daemon *d;
    char srv[64], label[64], big[126];
    int port, fd;

    memset(big, 'p', sizeof(big));
    backend_start(&be, NULL, NULL);
    d = ws_start(NULL, servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    fd = raw_open(d, port, "/", NULL);
    if (v->raw)
        ck_assert_int_eq(th_send_all(fd, v->payload, v->len), (ssize_t)v->len);
    else
        frame_send(fd, v->fin, v->rsv, v->op, v->mask, v->payload ? v->payload : big, v->len);
    expect_close(d, fd, v->code);
    snprintf(label, sizeof(label), "reason=\"%s\"", v->kind);
    TH_ASSERT(d, metric(port, "corogate_websocket_protocol_errors_total", label) == 1,
              "violation %d not counted as %s", _i, v->kind);
    /* the backend heard of it as the client going away */
    TH_ASSERT(d, backend_wait_log(&be, "close 1001"), "backend: not closed 1001");
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* Messages over max_message_size: 1009 (a single frame, and fragments adding up). */
START_TEST(test_ws_too_big)
{
    struct backend be;
    struct th_daemon *d;
    char srv[64];
    uint8_t chunk[40000];
    int port, fd;

    memset(chunk, 'z', sizeof(chunk));
    backend_start(&be, NULL, NULL);
    d = ws_start("max_message_size = 64k", servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    client_run(d, port, "/", "too_big", "100000", NULL);
    fd = raw_open(d, port, "/", NULL);
    frame_send(fd, 0, 0, 0x2, 1, chunk, sizeof(chunk));
    frame_send(fd, 1, 0, 0x0, 1, chunk, sizeof(chunk));
    expect_close(d, fd, 1009);
    TH_ASSERT(d, metric(port, "corogate_websocket_closes_sent_total", "reason=\"1009\"") == 2,
              "1009s counted");
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* The message rate limit: close (1008), or delay (everything arrives, later). */
START_TEST(test_ws_rate_limit)
{
    struct backend be;
    struct th_daemon *d;
    char srv[64];
    int port;

    backend_start(&be, NULL, NULL);
    d = ws_start("message_rate = 20\nmessage_burst = 5\nrate_limit_action = close",
                 servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    client_run(d, port, "/", "rate_close", "50", NULL);
    TH_ASSERT(d, metric(port, "corogate_websocket_closes_sent_total", "reason=\"1008\"") == 1,
              "1008 counted");
    ws_stop_clean(d);
    d = ws_start("message_rate = 20\nmessage_burst = 5\nrate_limit_action = delay",
                 servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    /* 25 messages: 5 at once, 20 more at 20/s: about a second */
    client_run(d, port, "/", "rate_delay", "25", "800", NULL);
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* Keepalive: a client answering pings stays; one that does not is closed 1001. Idle
 * connections are closed at idle_timeout. */
START_TEST(test_ws_keepalive)
{
    struct backend be;
    struct th_daemon *d;
    char srv[64];
    uint8_t buf[256];
    int64_t t0;
    ssize_t n;
    int port, fd, op;

    backend_start(&be, NULL, NULL);
    /* keepalive_timeout well above what a busy machine takes a client to answer: the
     * answering client must stay; the silent one is closed all the same, later or not */
    d = ws_start("keepalive_interval = 300ms\nkeepalive_timeout = 2s\nidle_timeout = 10s",
                 servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    client_run(d, port, "/", "keepalive", "1.5", NULL);
    fd = raw_open(d, port, "/", NULL);
    t0 = th_now_ms();
    n = frame_recv(fd, &op, buf, sizeof(buf));
    TH_ASSERT(d, n >= 0 && op == 0x9, "expected a ping, got op %d (%zd)", op, n);
    TH_ASSERT(d, th_now_ms() - t0 >= 250, "ping after %ld ms", (long)(th_now_ms() - t0));
    expect_close(d, fd, 1001);
    TH_ASSERT(d, metric(port, "corogate_websocket_keepalive_timeouts_total", NULL) == 1,
              "keepalive timeout counted");
    ws_stop_clean(d);

    d = ws_start("keepalive_interval = 0\nidle_timeout = 500ms",
                 servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    client_run(d, port, "/", "idle", "3", NULL);
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* SIGTERM: open connections get 1001 "going away" and the daemon exits. */
START_TEST(test_ws_drain)
{
    struct backend be;
    struct th_daemon *d;
    char srv[64], reason[128], how[96];
    int port, fd, code, st;

    backend_start(&be, NULL, NULL);
    d = ws_start("close_timeout = 1s", servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    fd = raw_open(d, port, "/", NULL);
    frame_send(fd, 1, 0, 0x1, 1, "hi", 2);
    kill(d->pid, SIGTERM);
    code = close_recv(d, fd, reason, sizeof(reason));
    TH_ASSERT(d, code == 1001 && strcmp(reason, "going away") == 0, "close %d %s", code,
              reason);
    frame_send(fd, 1, 0, 0x8, 1, "\x03\xe9", 2);
    TH_ASSERT(d, th_wait_closed(fd, IO_MS) == 0, "not closed");
    close(fd);
    st = th_daemon_wait_exit(d, STOP_MS);
    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit: %s",
              th_describe_status(st, how, sizeof(how)));
    TH_ASSERT(d, backend_wait_log(&be, "close 1001 going away"), "backend not told");
    backend_stop(&be);
}
END_TEST

/* A client that never answers the backend's close: at close_timeout the backend gets its
 * own close back (not a dropped connection) and the client's connection is closed. */
START_TEST(test_ws_close_timeout)
{
    static const char cmd[] = "cmd:close 4003 bye";
    struct backend be;
    struct th_daemon *d;
    char srv[64], reason[128];
    int64_t t0;
    int port, fd, code;

    backend_start(&be, NULL, NULL);
    d = ws_start("close_timeout = 500ms", servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    fd = raw_open(d, port, "/", NULL);
    frame_send(fd, 1, 0, 0x1, 1, cmd, sizeof(cmd) - 1);
    code = close_recv(d, fd, reason, sizeof(reason));
    TH_ASSERT(d, code == 4003 && strcmp(reason, "bye") == 0, "close %d %s", code, reason);
    t0 = th_now_ms();
    TH_ASSERT(d, th_wait_closed(fd, IO_MS) == 0, "not closed");
    TH_ASSERT(d, th_now_ms() - t0 >= 300, "closed after %ld ms", (long)(th_now_ms() - t0));
    close(fd);
    TH_ASSERT(d, backend_wait_log(&be, "close 4003 "), "the backend's close was not answered");
    TH_ASSERT(d, metric(port, "corogate_websocket_close_timeouts_total", NULL) == 1,
              "close timeout counted");
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* ------------------------------------------------------------------ 4. memory */

/* ------------------------------------------------------------------ who is to blame */

/* Server <i>'s value of the Prometheus family <family> (per-server families only). */
static long server_metric(int port, const char *family, int backend_port)
{
    char label[64];

    snprintf(label, sizeof(label), "server=\"127.0.0.1:%d\"", backend_port);
    return metric(port, family, label);
}

/* The first line of an answer (caller's buffer). */
static const char *status_line(const char *answer, char *buf, size_t size)
{
    size_t n = strcspn(answer, "\r\n");

    snprintf(buf, size, "%.*s", (int)(n < size ? n : size - 1), answer);
    return buf;
}

/* Issue 14: an upgrade with an empty Host used to reach the backends without a Host, be
 * refused there, and count against the server: 5 ejected a one-server upstream, 12 both
 * servers of two, and every client got 502 meanwhile. Now corogate answers 400 itself, a
 * backend's own refusal (403) passes on to the client without counting against the
 * server, and the next 100 clients are all relayed. */
START_TEST(test_ws_client_cannot_eject)
{
    static const char empty_host[] =
        "GET /echo HTTP/1.1\r\nHost:\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    struct backend be[2];
    struct th_daemon *d;
    char srv[128], line[128], denied[512];
    uint8_t buf[16];
    int port, i, fd, op;
    char *a;

    snprintf(denied, sizeof(denied), upgrade_fmt, "/denied", "");
    backend_start(&be[0], "--refuse", "/denied=403");
    backend_start(&be[1], "--refuse", "/denied=403");
    snprintf(srv, sizeof(srv), "127.0.0.1:%d, 127.0.0.1:%d", be[0].port, be[1].port);
    d = ws_start(NULL, srv, "eject_consecutive_failures = 2\neject_cooldown = 60s\n", &port);
    for (i = 0; i < 12; i++) {
        a = http_exchange(d, port, empty_host, sizeof(empty_host) - 1);
        TH_ASSERT(d, strncmp(a, "HTTP/1.1 400 ", 13) == 0, "empty Host %d: %s", i,
                  status_line(a, line, sizeof(line)));
        free(a);
        a = http_exchange(d, port, denied, strlen(denied));
        TH_ASSERT(d, strncmp(a, "HTTP/1.1 403 ", 13) == 0, "refused path %d: %s", i,
                  status_line(a, line, sizeof(line)));
        free(a);
    }
    for (i = 0; i < 100; i++) {
        fd = raw_open(d, port, "/echo", NULL);
        frame_send(fd, 1, 0, 0x1, 1, "hi", 2);
        TH_ASSERT(d, frame_recv(fd, &op, buf, sizeof(buf)) == 2 && op == 0x1 &&
                     memcmp(buf, "hi", 2) == 0, "client %d after the attack: no echo", i);
        close(fd);
    }
    for (i = 0; i < 2; i++) {
        TH_ASSERT(d, server_metric(port, "corogate_server_ejections_total", be[i].port) == 0,
                  "server %d ejected", i);
        TH_ASSERT(d, server_metric(port, "corogate_server_connect_failures_total",
                                   be[i].port) == 0, "failures counted against server %d", i);
    }
    TH_ASSERT(d, metric(port, "corogate_websocket_upstream_refusals_total", NULL) == 12,
              "backend refusals counted: %ld",
              metric(port, "corogate_websocket_upstream_refusals_total", NULL));
    TH_ASSERT(d, metric(port, "corogate_websocket_handshake_failures_total",
                        "reason=\"400\"") >= 12, "400s not counted");
    ws_stop_clean(d);
    backend_stop(&be[0]);
    backend_stop(&be[1]);
}
END_TEST

/* The other side of the same rule: a backend that fails the upgrade with a 5xx is at
 * fault: the status reaches the client, and eject_consecutive_failures of them eject it. */
START_TEST(test_ws_backend_5xx_ejects)
{
    struct backend be;
    struct th_daemon *d;
    char srv[64], line[128], broken[512];
    int port, i;
    char *a;

    snprintf(broken, sizeof(broken), upgrade_fmt, "/broken", "");
    backend_start(&be, "--refuse", "/broken=500");
    d = ws_start(NULL, servers_at(be.port, srv, sizeof(srv)),
                 "eject_consecutive_failures = 3\neject_cooldown = 60s\n", &port);
    for (i = 0; i < 3; i++) {
        a = http_exchange(d, port, broken, strlen(broken));
        TH_ASSERT(d, strncmp(a, "HTTP/1.1 500 ", 13) == 0, "request %d: %s", i,
                  status_line(a, line, sizeof(line)));
        free(a);
    }
    a = http_exchange(d, port, broken, strlen(broken));
    TH_ASSERT(d, strncmp(a, "HTTP/1.1 502 ", 13) == 0, "after 3 failures: %s",
              status_line(a, line, sizeof(line)));
    free(a);
    TH_ASSERT(d, server_metric(port, "corogate_server_ejections_total", be.port) == 1,
              "ejections: %ld", server_metric(port, "corogate_server_ejections_total", be.port));
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

static long rss_kib(pid_t pid)
{
    char path[64], *s, *p;
    long kib = -1;

    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    s = th_read_file(path, NULL);
    if (s && (p = strstr(s, "VmRSS:")) != NULL)
        kib = strtol(p + 6, NULL, 10);
    free(s);
    return kib;
}

/* A client that stops reading while its backend floods it: the daemon stops reading the
 * backend (TCP pushes back) instead of queueing the flood. */
START_TEST(test_ws_slow_reader)
{
    static const char cmd[] = "cmd:flood 3000 65536";    /* 196 MB */
    struct backend be;
    struct th_daemon *d;
    char srv[64];
    long before, after;
    int port, fd;

    backend_start(&be, NULL, NULL);
    d = ws_start(NULL, servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    client_run(d, port, "/", "echo", NULL);        /* warm the pools */
    before = rss_kib(d->pid);
    fd = raw_open(d, port, "/", NULL);
    frame_send(fd, 1, 0, 0x1, 1, cmd, sizeof(cmd) - 1);
    th_sleep_ms(2000);
    after = rss_kib(d->pid);
    TH_ASSERT(d, before > 0 && after - before < 16 * 1024,
              "RSS grew from %ld to %ld KiB with a slow reader", before, after);
    close(fd);
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* ------------------------------------------------------------------ 5. strictness */

/* Reads frames from <fd> until a close, into <ev>: "P<payload>" per pong, "D<len>" per data
 * frame's payload (summed up per message: "D65536"), "C<code>" for the close. */
static void events(struct th_daemon *d, int fd, char *ev, size_t size)
{
    static uint8_t buf[1 << 17];
    size_t len = 0, msg = 0;
    uint8_t b0;
    ssize_t n;

    ev[0] = '\0';
    for (;;) {
        n = frame_recv_b0(fd, &b0, buf, sizeof(buf));
        TH_ASSERT(d, n >= 0, "after \"%s\": %s", ev, strerror((int)-n));
        if ((b0 & 0x0f) == 0xa) {
            len += (size_t)snprintf(ev + len, size - len, "P%.*s ", (int)n, (char *)buf);
        } else if ((b0 & 0x0f) == 0x8) {
            snprintf(ev + len, size - len, "C%d", n >= 2 ? buf[0] << 8 | buf[1] : 1005);
            return;
        } else if ((b0 & 0x0f) < 8) {
            msg += (size_t)n;
            if (b0 & 0x80) {
                len += (size_t)snprintf(ev + len, size - len, "D%zu ", msg);
                msg = 0;
            }
        }
        TH_ASSERT(d, len < size - 16, "too many events: %s", ev);
    }
}

/* Every ping gets its pong, in order and at once: ten in one write, and pings between
 * the fragments of a message, answered before the message ends (RFC 6455 §5.4, §5.5.2). */
START_TEST(test_ws_pings)
{
    static uint8_t kib[1024];
    uint8_t b0, buf[256];
    struct th_daemon *d;
    char srv[64], ev[512], name[16];
    int bport, port, fd, i;
    pid_t pid;
    ssize_t n;

    memset(kib, 'k', sizeof(kib));
    bport = loadgen_ws_start(&pid);
    d = ws_start(NULL, servers_at(bport, srv, sizeof(srv)), NULL, &port);
    fd = raw_open(d, port, "/", NULL);
    for (i = 0; i < 10; i++) {
        snprintf(name, sizeof(name), "%d", i);
        frame_send(fd, 1, 0, 0x9, 1, name, strlen(name));
    }
    frame_send(fd, 1, 0, 0x8, 1, "\x03\xe8", 2);
    events(d, fd, ev, sizeof(ev));
    TH_ASSERT(d, strcmp(ev, "P0 P1 P2 P3 P4 P5 P6 P7 P8 P9 C1000") == 0, "got: %s", ev);
    close(fd);

    /* the first fragment and a ping: the pong comes before the message is finished */
    fd = raw_open(d, port, "/", NULL);
    frame_send(fd, 0, 0, 0x2, 1, kib, sizeof(kib));
    frame_send(fd, 1, 0, 0x9, 1, "mid", 3);
    n = frame_recv_b0(fd, &b0, buf, sizeof(buf));
    TH_ASSERT(d, n == 3 && (b0 & 0x0f) == 0xa && memcmp(buf, "mid", 3) == 0,
              "no pong while the message is open (%zd, 0x%02x)", n, b0);
    /* 64 fragments of 1 KiB, a ping after every 16th, in one go */
    for (i = 1; i < 64; i++) {
        frame_send(fd, i == 63, 0, 0x0, 1, kib, sizeof(kib));
        if (i % 16 == 15) {
            snprintf(name, sizeof(name), "p%d", i);
            frame_send(fd, 1, 0, 0x9, 1, name, strlen(name));
        }
    }
    frame_send(fd, 1, 0, 0x8, 1, "\x03\xe8", 2);
    events(d, fd, ev, sizeof(ev));
    TH_ASSERT(d, strstr(ev, "Pp15 ") && strstr(ev, "Pp31 ") && strstr(ev, "Pp47 ") &&
                 strstr(ev, "Pp63 ") && strstr(ev, "D65536 ") && strstr(ev, "C1000"),
              "got: %s", ev);
    close(fd);
    ws_stop_clean(d);
    loadgen_ws_stop(pid);
}
END_TEST

/* Close codes registered after RFC 6455 (1012-1014) pass both ways; 1004-1006 and 1015
 * never do. */
START_TEST(test_ws_close_codes)
{
    static const int good[] = { 1000, 1001, 1003, 1007, 1011, 1012, 1013, 1014, 3000, 4999 };
    static const int bad[] = { 0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000 };
    struct th_daemon *d;
    char srv[64], reason[64];
    uint8_t c[5];
    int bport, port, fd;
    pid_t pid;
    size_t i;

    bport = loadgen_ws_start(&pid);
    d = ws_start(NULL, servers_at(bport, srv, sizeof(srv)), NULL, &port);
    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        fd = raw_open(d, port, "/", NULL);
        c[0] = (uint8_t)(good[i] >> 8);
        c[1] = (uint8_t)good[i];
        memcpy(c + 2, "bye", 3);
        frame_send(fd, 1, 0, 0x8, 1, c, 5);
        TH_ASSERT(d, close_recv(d, fd, reason, sizeof(reason)) == good[i] &&
                     strcmp(reason, "bye") == 0, "close %d not echoed (%s)", good[i], reason);
        close(fd);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        fd = raw_open(d, port, "/", NULL);
        c[0] = (uint8_t)(bad[i] >> 8);
        c[1] = (uint8_t)bad[i];
        frame_send(fd, 1, 0, 0x8, 1, c, 2);
        expect_close(d, fd, 1002);
    }
    TH_ASSERT(d, metric(port, "corogate_websocket_closes_received_total",
                        "reason=\"1012\"") == 1, "1012 not counted");
    ws_stop_clean(d);
    loadgen_ws_stop(pid);
}
END_TEST

/* What a client sent before its violation is relayed, and the backend's answers to it come
 * back before the 1002 (the bundled backend answers in order; Python's websockets answers
 * a close before the echoes it still owes); a violation inside a long frame closes the
 * backend with a close frame (1001), not a reset. */
START_TEST(test_ws_fail_after_valid)
{
    static uint8_t big[60000];
    struct backend be;
    struct th_daemon *d;
    char srv[64], ev[256];
    int port, fd, bport;
    pid_t pid;

    bport = loadgen_ws_start(&pid);
    d = ws_start(NULL, servers_at(bport, srv, sizeof(srv)), NULL, &port);
    fd = raw_open(d, port, "/", NULL);
    {
        /* one write: two messages, then a frame with RSV2 set */
        uint8_t w[64];
        size_t n = 0;

        memcpy(w + n, "\x81\x85\0\0\0\0hello", 11);
        n += 11;
        memcpy(w + n, "\x82\x85\0\0\0\0world", 11);
        n += 11;
        memcpy(w + n, "\xa1\x81\0\0\0\0x", 7);
        n += 7;
        ck_assert_int_eq(th_send_all(fd, w, n), (ssize_t)n);
    }
    events(d, fd, ev, sizeof(ev));
    TH_ASSERT(d, strcmp(ev, "D5 D5 C1002") == 0, "got: %s", ev);
    close(fd);
    ws_stop_clean(d);
    loadgen_ws_stop(pid);

    /* invalid UTF-8 in the middle of a 60 kB text frame */
    backend_start(&be, NULL, NULL);
    d = ws_start(NULL, servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    memset(big, 'a', sizeof(big));
    big[30000] = 0xff;
    fd = raw_open(d, port, "/", NULL);
    frame_send(fd, 1, 0, 0x1, 1, big, sizeof(big));
    expect_close(d, fd, 1007);
    TH_ASSERT(d, backend_wait_log(&be, "close 1001 client protocol error"),
              "the backend was not closed with a close frame");
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* permessage-deflate passes through (client and backend negotiate it, compressed frames
 * cross as they are), or is stripped. */
START_TEST(test_ws_deflate)
{
    static const uint8_t hello_z[] = { 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00 };
    struct backend be;
    struct th_daemon *d;
    char srv[64], head[2048];
    uint8_t b0, buf[256];
    long in;
    ssize_t n;
    int port, fd;

    backend_start(&be, "--deflate", NULL);
    d = ws_start(_i ? "permessage_deflate = strip" : NULL,
                 servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    client_run(d, port, "/", "deflate", _i ? "off" : "on", NULL);
    /* 12 messages of 4-64 kB crossed; compressed, a few hundred bytes each */
    in = metric(port, "corogate_worker_received_bytes_total", NULL);
    TH_ASSERT(d, _i ? in > 4 * 65536 : in < 65536, "%ld bytes from the client", in);

    fd = raw_open_head(d, port, "/", "Sec-WebSocket-Extensions: permessage-deflate; "
                       "client_max_window_bits, x-unknown\r\n", head, sizeof(head));
    if (_i) {
        TH_ASSERT(d, !strstr(head, "Sec-WebSocket-Extensions"), "answer: %s", head);
        frame_send(fd, 1, 4, 0x1, 1, hello_z, sizeof(hello_z));     /* RSV1: not agreed */
        expect_close(d, fd, 1002);
    } else {
        TH_ASSERT(d, strstr(head, "Sec-WebSocket-Extensions: permessage-deflate"),
                  "answer: %s", head);
        /* RFC 7692 §7.2.3.1's "Hello", compressed: the backend inflates and echoes it */
        frame_send(fd, 1, 4, 0x1, 1, hello_z, sizeof(hello_z));
        n = frame_recv_b0(fd, &b0, buf, sizeof(buf));
        TH_ASSERT(d, n > 0 && b0 == 0xc1, "echo: %zd bytes, 0x%02x", n, b0);
        /* RSV1 on a control frame or a continuation is still an error */
        frame_send(fd, 1, 4, 0x9, 1, "x", 1);
        expect_close(d, fd, 1002);
    }
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

/* max_connection_lifetime: a WebSocket connection gets a 1001 once it is over its own
 * lifetime (the backend too). */
START_TEST(test_ws_lifetime)
{
    struct backend be;
    struct th_daemon *d;
    char srv[64], reason[64];
    int port, fd;

    backend_start(&be, NULL, NULL);
    d = ws_start("max_connection_lifetime = 300ms\nlifetime_jitter = 50%",
                 servers_at(be.port, srv, sizeof(srv)), NULL, &port);
    fd = raw_open(d, port, "/", NULL);
    frame_send(fd, 1, 0, 0x1, 1, "hi", 2);
    TH_ASSERT(d, close_recv(d, fd, reason, sizeof(reason)) == 1001 &&
                 strcmp(reason, "connection lifetime") == 0, "close reason %s", reason);
    frame_send(fd, 1, 0, 0x8, 1, "\x03\xe9", 2);
    TH_ASSERT(d, th_wait_closed(fd, IO_MS) == 0, "the daemon kept the connection");
    close(fd);
    TH_ASSERT(d, backend_wait_log(&be, "close 1001 client connection lifetime"),
              "backend not closed");
    TH_ASSERT(d, metric(port, "corogate_worker_lifetime_closes_total", NULL) == 1,
              "lifetime close not counted");
    ws_stop_clean(d);
    backend_stop(&be);
}
END_TEST

Suite *ws_suite(void)
{
    Suite *s = suite_create("ws");
    TCase *relay = tcase_create("relay");
    TCase *hs = tcase_create("handshake");
    TCase *lim = tcase_create("limits");
    TCase *mem = tcase_create("memory");

    th_tcase_add_fixtures(relay);
    tcase_set_timeout(relay, 120);
    tcase_add_test(relay, test_ws_frame_rules);
    tcase_add_test(relay, test_ws_echo);
    tcase_add_test(relay, test_ws_loadgen_backend);
    tcase_add_test(relay, test_ws_routes);
    tcase_add_test(relay, test_ws_close_and_ping);
    tcase_add_test(relay, test_ws_tcp_bridge);
    tcase_add_test(relay, test_ws_drain);
    tcase_add_test(relay, test_ws_close_timeout);
    tcase_add_test(relay, test_ws_pings);
    tcase_add_test(relay, test_ws_close_codes);
    tcase_add_test(relay, test_ws_fail_after_valid);
    tcase_add_loop_test(relay, test_ws_deflate, 0, 2);
    tcase_add_test(relay, test_ws_lifetime);
    suite_add_tcase(s, relay);

    th_tcase_add_fixtures(hs);
    tcase_set_timeout(hs, 60);
    tcase_add_test(hs, test_ws_handshake_refusals);
    tcase_add_test(hs, test_ws_slowloris);
    tcase_add_test(hs, test_ws_backend_down);
    tcase_add_test(hs, test_ws_client_cannot_eject);
    tcase_add_test(hs, test_ws_backend_5xx_ejects);
    suite_add_tcase(s, hs);

    th_tcase_add_fixtures(lim);
    tcase_set_timeout(lim, 60);
    tcase_add_loop_test(lim, test_ws_violations, 0,
                        (int)(sizeof(violations) / sizeof(violations[0])));
    tcase_add_test(lim, test_ws_too_big);
    tcase_add_test(lim, test_ws_rate_limit);
    tcase_add_test(lim, test_ws_keepalive);
    suite_add_tcase(s, lim);

    th_tcase_add_fixtures(mem);
    tcase_set_timeout(mem, 60);
    tcase_add_test(mem, test_ws_slow_reader);
    suite_add_tcase(s, mem);
    return s;
}
