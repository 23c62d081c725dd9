/* tests/test_serve.c — `corogate-loadgen serve` as a black box: the real binary (under
 * $CG_BUILD, default build/) started with fork/exec, talked to with plain sockets.
 *
 * The server's stderr comes through a pipe: the start line gives the port when it listens
 * on port 0, and the totals line shows it stopped cleanly. The server dies with the test
 * process (PR_SET_PDEATHSIG), so a failed assertion leaves nothing behind.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "loadgen/net.h"

#define START_TIMEOUT_MS 2000
#define STOP_TIMEOUT_MS  2000
#define IO_TIMEOUT_MS    2000

struct server {
    pid_t    pid;
    int      errfd;          /* read end of the server's stderr */
    uint16_t port;
    char     log[16384];     /* what it wrote on stderr so far */
    size_t   loglen;
};

static struct server srv = { .pid = -1, .errfd = -1 };

static uint64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *loadgen_path(void)
{
    static char path[4096];
    const char *dir = getenv("CG_BUILD");

    snprintf(path, sizeof(path), "%s/corogate-loadgen", dir && *dir ? dir : "build");
    return path;
}

/* Starts `corogate-loadgen <args...>` with stderr on a pipe. Returns the pid and the read
 * end in <*errfd>. */
static pid_t spawn(const char *const *args, int *errfd)
{
    const char *argv[32];
    pid_t parent = getpid(), pid;
    int p[2], i;

    argv[0] = loadgen_path();
    for (i = 0; args[i] && i < 30; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
    pid = fork();
    if (pid < 0)                      /* asserted in the parent only: see th_fork() */
        ck_abort_msg("fork(): %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(p[1], STDOUT_FILENO);           /* usage and help too: not the test's output */
        dup2(p[1], STDERR_FILENO);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    *errfd = p[0];
    return pid;
}

/* Appends what the server wrote to srv.log, waiting up to <timeout_ms> for something.
 * Returns the bytes read, 0 at EOF or timeout. */
static ssize_t read_log(struct server *s, int timeout_ms)
{
    struct pollfd pfd = { .fd = s->errfd, .events = POLLIN };
    ssize_t n;

    if (s->loglen + 1 >= sizeof(s->log) || poll(&pfd, 1, timeout_ms) <= 0)
        return 0;
    n = read(s->errfd, s->log + s->loglen, sizeof(s->log) - 1 - s->loglen);
    if (n <= 0)
        return 0;
    s->loglen += (size_t)n;
    s->log[s->loglen] = '\0';
    return n;
}

/* Waits for <pid> up to <timeout_ms>. Returns its wait status, or -1 after killing it. */
static int wait_exit(pid_t pid, int timeout_ms)
{
    uint64_t until = now_ms() + (uint64_t)timeout_ms;
    int status;

    while (now_ms() < until) {
        if (waitpid(pid, &status, WNOHANG) == pid)
            return status;
        usleep(5000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

/* Starts the server with "serve" <args> and waits for its start line; fills srv.port and
 * returns 0. When the server exits before that, returns its exit code (its words in
 * srv.log); asserts that it did one or the other within START_TIMEOUT_MS. */
static int server_try_start(const char *const *args)
{
    const char *argv[32] = { "serve" };
    struct sockaddr_storage ss;
    uint64_t until = now_ms() + START_TIMEOUT_MS;
    char *line, *end;
    int i, status;

    for (i = 0; args[i] && i < 30; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    srv.loglen = 0;
    srv.log[0] = '\0';
    srv.pid = spawn(argv, &srv.errfd);
    for (;;) {
        line = strstr(srv.log, " echo on ");
        end = line ? strchr(line, ',') : NULL;
        if (end && strchr(end, '\n'))
            break;
        ck_assert_msg(now_ms() < until, "no start line from the server; it said: %s", srv.log);
        if (read_log(&srv, (int)(until - now_ms())) == 0 &&
            waitpid(srv.pid, &status, WNOHANG) == srv.pid) {
            srv.pid = -1;
            while (read_log(&srv, 0) > 0)
                ;
            return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
        }
    }
    *end = '\0';
    ck_assert_int_eq(lg_addr_parse(line + strlen(" echo on "), &ss), 0);
    *end = ',';
    srv.port = lg_addr_port((struct sockaddr *)&ss);
    ck_assert_uint_ne(srv.port, 0);
    return 0;
}

static void server_start(const char *const *args)
{
    int rc = server_try_start(args);

    ck_assert_msg(rc == 0, "the server exited with %d before its start line: %s", rc, srv.log);
}

/* SIGTERM; returns the exit status, asserting that it came within STOP_TIMEOUT_MS. */
static int server_stop(void)
{
    uint64_t until = now_ms() + STOP_TIMEOUT_MS;
    int status;

    ck_assert_int_eq(kill(srv.pid, SIGTERM), 0);
    while (now_ms() < until && read_log(&srv, 50) > 0)
        ;   /* the totals line; EOF once it exited */
    status = wait_exit(srv.pid, (int)(until > now_ms() ? until - now_ms() : 1));
    srv.pid = -1;
    ck_assert_msg(status != -1, "server still running %d ms after SIGTERM", STOP_TIMEOUT_MS);
    while (read_log(&srv, 0) > 0)
        ;
    return status;
}

static void teardown(void)
{
    if (srv.pid > 0) {
        kill(srv.pid, SIGKILL);
        waitpid(srv.pid, NULL, 0);
        srv.pid = -1;
    }
    if (srv.errfd >= 0) {
        close(srv.errfd);
        srv.errfd = -1;
    }
}

/* A port that was free a moment ago (bound to port 0, read, closed). */
static uint16_t free_port(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    ck_assert_int_ge(fd, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

/* A blocking client connection to 127.0.0.1:<port> whose reads and writes time out. */
static int client(uint16_t port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
    struct timeval tv = { .tv_sec = IO_TIMEOUT_MS / 1000 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    ck_assert_msg(connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0, "connect: %s",
                  strerror(errno));
    return fd;
}

static void send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    ssize_t n;

    while (len > 0) {
        n = send(fd, p, len, MSG_NOSIGNAL);
        ck_assert_msg(n > 0, "send: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

static void recv_exact(int fd, void *buf, size_t len)
{
    char *p = buf;
    ssize_t n;

    while (len > 0) {
        n = recv(fd, p, len, 0);
        ck_assert_msg(n > 0, "recv: %s", n == 0 ? "EOF" : strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

/* Asserts that the peer's next event is EOF (not data, not a timeout). */
static void expect_eof(int fd)
{
    char c;
    ssize_t n = recv(fd, &c, 1, 0);

    ck_assert_msg(n == 0, "expected EOF, got %zd (%s)", n, n < 0 ? strerror(errno) : "data");
}

static void fill(char *buf, size_t len, unsigned seed)
{
    uint32_t x = seed * 2654435761u + 1;
    size_t i;

    for (i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (char)(x >> 16);
    }
}

/* Sends <len> bytes and reads the echo at the same time (the echo would fill the socket
 * buffers long before 4 MiB are sent), then half-closes and expects the echo then EOF. */
static void echo_duplex(int fd, const char *out, size_t len)
{
    char *in = malloc(len);
    size_t sent = 0, got = 0;
    uint64_t until = now_ms() + 2500;
    struct pollfd pfd = { .fd = fd };
    ssize_t n;

    ck_assert_ptr_nonnull(in);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    while (got < len) {
        ck_assert_msg(now_ms() < until, "echo stalled: sent %zu, got %zu of %zu", sent, got,
                      len);
        pfd.events = POLLIN | (sent < len ? POLLOUT : 0);
        ck_assert_int_ge(poll(&pfd, 1, 100), 0);
        if (sent < len && (pfd.revents & POLLOUT)) {
            n = send(fd, out + sent, len - sent, MSG_NOSIGNAL);
            ck_assert_msg(n > 0 || errno == EAGAIN, "send: %s", strerror(errno));
            if (n > 0 && (sent += (size_t)n) == len)
                ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
        }
        if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
            n = recv(fd, in + got, len - got, 0);
            ck_assert_msg(n > 0 || (n < 0 && errno == EAGAIN), "recv: %s",
                          n == 0 ? "early EOF" : strerror(errno));
            if (n > 0)
                got += (size_t)n;
        }
    }
    ck_assert_msg(memcmp(in, out, len) == 0, "echo differs from what was sent");
    free(in);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    expect_eof(fd);
}

static const char *const one_thread[] = {
    "--mode", "tcp", "--listen", "127.0.0.1:0", "--threads", "1", NULL
};

START_TEST(test_echo_small)
{
    static const size_t sizes[] = { 1, 5, 100, 1460, 16384, 16385, 65536 };
    char out[65536], in[65536];
    size_t i;
    int fd;

    server_start(one_thread);
    ck_assert_ptr_nonnull(strstr(srv.log, "serve: tcp echo on 127.0.0.1:"));
    fd = client(srv.port);
    send_all(fd, "hello", 5);
    recv_exact(fd, in, 5);
    ck_assert_int_eq(memcmp(in, "hello", 5), 0);
    for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        fill(out, sizes[i], (unsigned)i);
        send_all(fd, out, sizes[i]);
        recv_exact(fd, in, sizes[i]);
        ck_assert_msg(memcmp(in, out, sizes[i]) == 0, "echo of %zu bytes differs", sizes[i]);
    }
    close(fd);
    ck_assert_int_eq(server_stop(), 0);
}
END_TEST

START_TEST(test_echo_4mib_two_threads)
{
    const size_t len = 4u << 20;
    char port[16], listen_at[32], *out = malloc(len);
    const char *args[] = { "--mode", "tcp", "--listen", listen_at, "--threads", "2", NULL };
    int fd, status;

    ck_assert_ptr_nonnull(out);
    snprintf(port, sizeof(port), "%u", free_port());
    snprintf(listen_at, sizeof(listen_at), "127.0.0.1:%s", port);
    server_start(args);
    ck_assert_uint_eq(srv.port, (unsigned)atoi(port));
    ck_assert_ptr_nonnull(strstr(srv.log, ", 2 threads"));
    fill(out, len, 42);
    fd = client(srv.port);
    echo_duplex(fd, out, len);
    close(fd);
    free(out);
    status = server_stop();
    ck_assert_int_eq(status, 0);
    ck_assert_msg(strstr(srv.log, "1 connections, 4194304 bytes in, 4194304 bytes out"),
                  "totals: %s", srv.log);
}
END_TEST

START_TEST(test_twenty_concurrent)
{
    enum { NCONN = 20, LEN = 3000 };
    char out[NCONN][LEN], in[LEN];
    int fds[NCONN], i;

    server_start(one_thread);
    for (i = 0; i < NCONN; i++) {
        fds[i] = client(srv.port);
        fill(out[i], LEN, 100u + (unsigned)i);
    }
    /* First halves on every connection, then second halves in reverse order: all twenty
     * are open and mid-message at once. */
    for (i = 0; i < NCONN; i++)
        send_all(fds[i], out[i], LEN / 2);
    for (i = NCONN - 1; i >= 0; i--)
        send_all(fds[i], out[i] + LEN / 2, LEN - LEN / 2);
    for (i = 0; i < NCONN; i++) {
        recv_exact(fds[i], in, LEN);
        ck_assert_msg(memcmp(in, out[i], LEN) == 0, "connection %d got another's bytes", i);
    }
    for (i = 0; i < NCONN; i++)
        close(fds[i]);
    ck_assert_int_eq(server_stop(), 0);
    ck_assert_msg(strstr(srv.log, "stopped: 20 connections"), "totals: %s", srv.log);
}
END_TEST

START_TEST(test_half_close)
{
    char in[64];
    int fd;

    server_start(one_thread);
    fd = client(srv.port);
    send_all(fd, "last words", 10);
    ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
    recv_exact(fd, in, 10);                 /* the echo still comes after our FIN */
    ck_assert_int_eq(memcmp(in, "last words", 10), 0);
    expect_eof(fd);                         /* then the server's FIN */
    close(fd);
    ck_assert_int_eq(server_stop(), 0);
}
END_TEST

START_TEST(test_sigterm_with_open_connections)
{
    char in[8];
    int idle, busy;

    server_start(one_thread);
    idle = client(srv.port);                /* parked in a read when the stop comes */
    busy = client(srv.port);
    send_all(busy, "ping", 4);
    recv_exact(busy, in, 4);
    ck_assert_int_eq(server_stop(), 0);     /* within 2 s, status 0 */
    ck_assert_msg(strstr(srv.log, "stopped: 2 connections"), "totals: %s", srv.log);
    expect_eof(idle);
    expect_eof(busy);
    close(idle);
    close(busy);
}
END_TEST

START_TEST(test_max_conns)
{
    const char *args[] = { "--listen", "127.0.0.1:0", "--threads", "1", "--max-conns", "1",
                           NULL };
    char in[4];
    int a, b;

    server_start(args);
    a = client(srv.port);
    send_all(a, "one", 3);
    recv_exact(a, in, 3);                   /* <a> is being served */
    b = client(srv.port);                   /* the kernel accepts; the server closes it */
    expect_eof(b);
    close(b);
    close(a);
    ck_assert_int_eq(server_stop(), 0);
    ck_assert_msg(strstr(srv.log, "1 rejected"), "totals: %s", srv.log);
}
END_TEST

/* Runs the binary with <args>, returns its exit code; its stderr lands in srv.log. */
static int run_status(const char *const *args)
{
    int status;

    srv.loglen = 0;
    srv.log[0] = '\0';
    srv.pid = spawn(args, &srv.errfd);
    while (read_log(&srv, IO_TIMEOUT_MS) > 0)
        ;
    status = wait_exit(srv.pid, IO_TIMEOUT_MS);
    srv.pid = -1;
    close(srv.errfd);
    srv.errfd = -1;
    ck_assert_msg(status != -1 && WIFEXITED(status), "did not exit by itself");
    return WEXITSTATUS(status);
}

/* --io io_uring: many connections at once, each a closed loop of checked messages (the
 * loadgen's run: every message carries its sequence number and checksum), of sizes from
 * 64 bytes to several provided buffers (16 KiB each); then 4 MiB sent while the echo is
 * read (a peer that is slower than its echo: the receive pauses and resumes), half-closed
 * (the echo, then our FIN); then SIGTERM with an idle connection open: exit 0. Skipped
 * where io_uring cannot be set up (a sandbox, kernel.io_uring_disabled). First its usage
 * errors (here, not in test_usage_errors, whose 5 s an ASan build on a busy machine fills). */
START_TEST(test_io_uring_echo)
{
    static const struct { const char *conns, *size; } loads[] = {
        { "400", "64" }, { "100", "3000" }, { "40", "40000" }, { "8", "300000" },
    };
    enum { NLOADS = sizeof(loads) / sizeof(loads[0]) };
    static const char *const io_ws[] = { "serve", "--mode", "ws", "--io", "io_uring",
                                         "--listen", "127.0.0.1:0", "--threads", "1", NULL };
    static const char *const io_bad[] = { "serve", "--io", "poll", "--listen", "127.0.0.1:0",
                                          "--threads", "1", NULL };
    const char *args[] = { "--mode", "tcp", "--listen", "127.0.0.1:0", "--threads", "1",
                           "--io", "io_uring", NULL };
    const size_t big = 4u << 20;
    char target[32], log[NLOADS][4096], *out = malloc(big);
    pid_t pids[NLOADS];
    int errfds[NLOADS], i, rc, status, idle, fd;
    ssize_t n;
    size_t len;

    ck_assert_ptr_nonnull(out);
    ck_assert_int_eq(run_status(io_ws), 2);
    ck_assert_ptr_nonnull(strstr(srv.log, "--io io_uring serves --mode tcp only"));
    ck_assert_int_eq(run_status(io_bad), 2);
    ck_assert_ptr_nonnull(strstr(srv.log, "bad --io 'poll'"));
    rc = server_try_start(args);
    if (rc != 0 && strstr(srv.log, "io_uring")) {
        free(out);
        TH_SKIP("io_uring cannot be set up here: %s", srv.log);
    }
    ck_assert_msg(rc == 0, "the server exited with %d: %s", rc, srv.log);
    ck_assert_ptr_nonnull(strstr(srv.log, ", io_uring"));
    snprintf(target, sizeof(target), "127.0.0.1:%u", srv.port);
    for (i = 0; i < NLOADS; i++) {
        const char *run[] = { "run", "--mode", "tcp", "--target", target, "--connections",
                              loads[i].conns, "--connect-rate", "0", "--closed-loop",
                              "--message-size", loads[i].size, "--duration", "1s",
                              "--reply-timeout", "5s", "--quiet", NULL };

        pids[i] = spawn(run, &errfds[i]);
    }
    for (i = 0; i < NLOADS; i++) {
        len = 0;
        while (len + 1 < sizeof(log[i]) &&
               (n = read(errfds[i], log[i] + len, sizeof(log[i]) - 1 - len)) > 0)
            len += (size_t)n;                /* EOF when the loadgen exits */
        log[i][len] = '\0';
        close(errfds[i]);
        status = wait_exit(pids[i], 10000);
        ck_assert_msg(status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "%s x %s bytes: loadgen status %d:\n%s", loads[i].conns, loads[i].size,
                      status, log[i]);
        ck_assert_msg(strstr(log[i], "integrity: 0 corrupt, 0 lost, 0 reordered, 0 bytes "
                             "skipped"), "%s x %s bytes: %s", loads[i].conns, loads[i].size,
                      log[i]);
        ck_assert_msg(strstr(log[i], "errors: none"), "%s", log[i]);
    }
    idle = client(srv.port);
    fill(out, big, 7);
    fd = client(srv.port);
    echo_duplex(fd, out, big);
    close(fd);
    free(out);
    ck_assert_int_eq(server_stop(), 0);
    expect_eof(idle);
    close(idle);
    ck_assert_msg(strstr(srv.log, "stopped: 550 connections") &&
                  strstr(srv.log, "0 ended by an error"), "totals: %s", srv.log);
}
END_TEST

START_TEST(test_usage_errors)
{
    static const char *const unknown[] = { "serve", "--listen", "127.0.0.1:0", "--bogus",
                                           NULL };
    static const char *const bad_addr[] = { "serve", "--listen", "localhost:9000", NULL };
    static const char *const bad_port[] = { "serve", "--listen", "127.0.0.1:65536", NULL };
    static const char *const port0[] = { "serve", "--listen", "127.0.0.1:0", "--threads",
                                         "2", NULL };
    static const char *const ws[] = { "serve", "--mode", "wss", "--listen", "127.0.0.1:0",
                                      NULL };
    static const char *const nocmd[] = { "frobnicate", NULL };
    static const char *const help[] = { "--help", NULL };

    ck_assert_int_eq(run_status(unknown), 2);
    ck_assert_ptr_nonnull(strstr(srv.log, "unknown option '--bogus'"));
    ck_assert_ptr_nonnull(strstr(srv.log, "usage: corogate-loadgen serve"));
    ck_assert_int_eq(run_status(bad_addr), 2);
    ck_assert_ptr_nonnull(strstr(srv.log, "bad --listen address 'localhost:9000'"));
    ck_assert_int_eq(run_status(bad_port), 2);
    ck_assert_int_eq(run_status(port0), 2);
    ck_assert_ptr_nonnull(strstr(srv.log, "port 0 needs --threads 1"));
    ck_assert_int_eq(run_status(ws), 2);
    ck_assert_ptr_nonnull(strstr(srv.log, "unknown --mode 'wss'"));
    ck_assert_int_eq(run_status(nocmd), 2);
    ck_assert_int_eq(run_status(help), 0);
}
END_TEST

START_TEST(test_addr_parse)
{
    struct sockaddr_storage ss;
    char buf[LG_ADDR_STRLEN];

    ck_assert_int_eq(lg_addr_parse("127.0.0.1:9000", &ss), 0);
    ck_assert_str_eq(lg_addr_format((struct sockaddr *)&ss, buf, sizeof(buf)),
                     "127.0.0.1:9000");
    ck_assert_int_eq(lg_addr_parse("[::1]:9000", &ss), 0);
    ck_assert_int_eq(ss.ss_family, AF_INET6);
    ck_assert_str_eq(lg_addr_format((struct sockaddr *)&ss, buf, sizeof(buf)), "[::1]:9000");
    ck_assert_int_eq(lg_addr_parse("0.0.0.0:0", &ss), 0);
    ck_assert_uint_eq(lg_addr_port((struct sockaddr *)&ss), 0);
    ck_assert_int_eq(lg_addr_parse("::1:9000", &ss), -EINVAL);
    ck_assert_int_eq(lg_addr_parse("127.0.0.1", &ss), -EINVAL);
    ck_assert_int_eq(lg_addr_parse("127.0.0.1:", &ss), -EINVAL);
    ck_assert_int_eq(lg_addr_parse("127.0.0.1:+80", &ss), -EINVAL);
    ck_assert_int_eq(lg_addr_parse("127.0.0.1:80x", &ss), -EINVAL);
    ck_assert_int_eq(lg_addr_parse("[::1]9000", &ss), -EINVAL);
    ck_assert_int_eq(lg_addr_parse("[]:9000", &ss), -EINVAL);
    ck_assert_int_eq(lg_addr_parse(":9000", &ss), -EINVAL);
    ck_assert_int_eq(lg_addr_parse(NULL, &ss), -EINVAL);
}
END_TEST

Suite *serve_suite(void)
{
    Suite *s = suite_create("serve");
    TCase *tc = tcase_create("echo");
    TCase *cli = tcase_create("cli");
    TCase *uring = tcase_create("io_uring");

    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_set_timeout(tc, 5);
    tcase_add_test(tc, test_echo_small);
    tcase_add_test(tc, test_echo_4mib_two_threads);
    tcase_add_test(tc, test_twenty_concurrent);
    tcase_add_test(tc, test_half_close);
    tcase_add_test(tc, test_sigterm_with_open_connections);
    tcase_add_test(tc, test_max_conns);
    suite_add_tcase(s, tc);

    tcase_add_checked_fixture(uring, NULL, teardown);
    tcase_set_timeout(uring, 30);            /* 550 connections, 4 MiB, under ASan too */
    tcase_add_test(uring, test_io_uring_echo);
    suite_add_tcase(s, uring);

    tcase_add_checked_fixture(cli, NULL, teardown);
    tcase_set_timeout(cli, 5);
    tcase_add_test(cli, test_usage_errors);
    tcase_add_test(cli, test_addr_parse);
    suite_add_tcase(s, cli);
    return s;
}
