/* tests/test_gateway.c — the daemon end to end: `corogate -c FILE` started on free ports
 * in front of in-process echo backends (tests/harness.h), driven by blocking clients.
 *
 * Each test starts its own daemon (2 workers, or 1 where per-worker state would make the
 * expected counts inexact), health checks off unless tested, and stops it at the end
 * expecting exit status 0: under ASan that also catches leaks and errors at exit. Every
 * failure message ends with the tail of the daemon's log.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define MiB           (1024u * 1024)
#define READY_MS      5000
#define STOP_MS       5000
#define IO_MS         5000

/* A test's daemon: one [listener t] relaying to one [upstream u]. */
struct gw {
    unsigned     workers;
    const char  *gateway;       /* extra [gateway] lines, or NULL */
    const char  *listener;      /* extra [listener t] lines, or NULL */
    const char  *servers;       /* the servers = value */
    const char  *upstream;      /* extra [upstream u] lines, or NULL */
    const char  *health;        /* health check lines; NULL = health_check_interval = 0 */
    rlim_t       nofile;        /* RLIMIT_NOFILE for the daemon, 0 = inherited */
};

/* Starts the daemon <g> describes on a free port and waits until it accepts; fails the
 * test otherwise. Returns the daemon; its port goes to *<port>. A port taken between
 * th_free_port() and the daemon's bind() is retried with another. */
static struct th_daemon *gw_start(const struct gw *g, int *port)
{
    struct th_daemon_opts opts = { .nofile = g->nofile,
                                   .ready_log = "ready: accepting connections" };
    struct th_daemon *d;
    int err, attempt;

    for (attempt = 0;; attempt++) {
        *port = th_free_port();
        ck_assert_msg(*port > 0, "th_free_port: %s", strerror(-*port));
        d = th_daemon_start_conf(&opts,
                                 "[gateway]\n"
                                 "workers = %u\n"
                                 "cpu_pinning = off\n"
                                 "stats_socket = %s/stats-%d.sock\n"
                                 "%s\n"
                                 "[listener t]\n"
                                 "bind = 127.0.0.1:%d\n"
                                 "upstream = u\n"
                                 "%s\n"
                                 "[upstream u]\n"
                                 "servers = %s\n"
                                 "%s\n"
                                 "%s\n",
                                 g->workers ? g->workers : 2, th_tmpdir(), *port,
                                 g->gateway ? g->gateway : "", *port,
                                 g->listener ? g->listener : "", g->servers,
                                 g->upstream ? g->upstream : "",
                                 g->health ? g->health : "health_check_interval = 0");
        ck_assert_msg(d != NULL, "cannot start %s: %s", th_daemon_path(), strerror(errno));
        err = th_daemon_wait_ready(d, *port, READY_MS);
        if (err == -ECHILD && attempt < 2 &&
            th_daemon_log_count(d, "Address already in use") > 0) {
            th_daemon_free(d);
            continue;
        }
        TH_ASSERT(d, err == 0, "the daemon does not accept on port %d: %s", *port,
                  err == -ECHILD ? "it exited" : strerror(-err));
        return d;
    }
}

/* Stops <d> with SIGTERM and asserts that it exits 0 within STOP_MS. */
static void gw_stop_clean(struct th_daemon *d)
{
    char how[96];
    int st;

    st = th_daemon_stop(d, SIGTERM, STOP_MS);
    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "SIGTERM: %s, expected exit status 0", th_describe_status(st, how, sizeof(how)));
}

/* Waits until the echo servers have accepted <n> connections between them and closed them
 * all: the readiness probe has gone through, so counts start from a known point. */
static void settle(struct th_daemon *d, struct th_echo *a, struct th_echo *b, unsigned n)
{
    int64_t deadline = th_now_ms() + 3000;
    unsigned acc, act;

    for (;;) {
        acc = th_echo_accepted(a) + (b ? th_echo_accepted(b) : 0);
        act = th_echo_active(a) + (b ? th_echo_active(b) : 0);
        if (acc >= n && act == 0)
            break;
        TH_ASSERT(d, th_now_ms() < deadline,
                  "backends: %u accepted (want %u), %u open (want 0) after 3 s", acc, n, act);
        th_sleep_ms(5);
    }
}

/* Waits until the daemon's count of sockets holds still for 100 ms (connections from
 * before, such as the readiness probe, are closed) and returns it. Sockets only: libuv
 * keeps a spare descriptor per loop, opened at the loop's first connection. */
static int quiet_socket_count(struct th_daemon *d)
{
    int64_t deadline = th_now_ms() + 3000;
    int n, prev = -1, same = 0;

    for (;;) {
        n = th_proc_fd_count(d->pid, "socket:");
        TH_ASSERT(d, n > 0, "/proc/%d/fd: %s", (int)d->pid, strerror(-n));
        same = n == prev ? same + 1 : 0;
        if (same == 10)
            return n;
        TH_ASSERT(d, th_now_ms() < deadline, "the daemon's descriptor count keeps changing");
        prev = n;
        th_sleep_ms(10);
    }
}

static const char *strerr(ssize_t err)
{
    return err < 0 ? strerror((int)-err) : "ok";
}

/* ------------------------------------------------------------------ 1. bulk */

struct bulk {
    int          port;
    size_t       len;
    uint64_t     seed;
    char        *out, *in;
    ssize_t      got;           /* th_exchange() */
    int          closed;        /* th_wait_closed() after our shutdown */
    int          connect_err;
    int64_t      ms;
};

/* 10 MiB out while reading it back, then shutdown(SHUT_WR) and EOF expected. */
static void *bulk_main(void *arg)
{
    struct bulk *b = arg;
    int64_t t0 = th_now_ms();
    int fd;

    b->got = -1;
    b->closed = -1;
    fd = th_connect(b->port, 10000);
    b->connect_err = fd < 0 ? fd : 0;
    if (fd >= 0) {
        b->got = th_exchange(fd, b->out, b->in, b->len, 1);
        if (b->got == (ssize_t)b->len)
            b->closed = th_wait_closed(fd, IO_MS);
        close(fd);
    }
    b->ms = th_now_ms() - t0;
    return NULL;
}

static void bulk_init(struct bulk *b, int port, size_t len, uint64_t seed)
{
    memset(b, 0, sizeof(*b));
    b->port = port;
    b->len = len;
    b->seed = seed;
    b->out = malloc(len);
    b->in = malloc(len);
    ck_assert(b->out && b->in);
    th_fill_pattern(b->out, len, seed);
    memset(b->in, 0, len);
}

static void bulk_check(struct th_daemon *d, struct bulk *b)
{
    uint64_t sum_out = th_fnv1a64(TH_FNV_INIT, b->out, b->len);
    uint64_t sum_in = th_fnv1a64(TH_FNV_INIT, b->in, b->len);
    size_t i;

    TH_ASSERT(d, b->connect_err == 0, "connection %llu: connect: %s",
              (unsigned long long)b->seed, strerr(b->connect_err));
    TH_ASSERT(d, b->got == (ssize_t)b->len, "connection %llu: %zd of %zu bytes came back (%s)",
              (unsigned long long)b->seed, b->got, b->len, strerr(b->got));
    for (i = 0; i < b->len && b->out[i] == b->in[i]; i++)
        ;
    TH_ASSERT(d, sum_in == sum_out && i == b->len,
              "connection %llu: echo differs from byte %zu (fnv %016llx, sent %016llx)",
              (unsigned long long)b->seed, i, (unsigned long long)sum_in,
              (unsigned long long)sum_out);
    TH_ASSERT(d, b->closed == 0, "connection %llu: after our shutdown: %s, expected EOF",
              (unsigned long long)b->seed, strerr(b->closed));
    free(b->out);
    free(b->in);
}

START_TEST(test_bulk_roundtrip)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    struct bulk one, par[3];
    pthread_t t[3];
    char servers[64];
    int port, i;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    d = gw_start(&(struct gw){ .workers = 2, .servers = servers }, &port);

    bulk_init(&one, port, 10 * MiB, 1);
    bulk_main(&one);
    bulk_check(d, &one);

    for (i = 0; i < 3; i++) {
        bulk_init(&par[i], port, 10 * MiB, 2 + (uint64_t)i);
        ck_assert_int_eq(pthread_create(&t[i], NULL, bulk_main, &par[i]), 0);
    }
    for (i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    th_note("bulk: 1 x 10 MiB in %lld ms, 3 x 10 MiB in %lld/%lld/%lld ms", (long long)one.ms,
            (long long)par[0].ms, (long long)par[1].ms, (long long)par[2].ms);
    for (i = 0; i < 3; i++)
        bulk_check(d, &par[i]);
    gw_stop_clean(d);
}
END_TEST

/* ------------------------------------------------------------------ 2. half-close */

START_TEST(test_half_close)
{
    const size_t len = 100 * 1024;
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64], *out, *in;
    int port, fd, base, n;
    unsigned eofs;
    int64_t deadline;
    ssize_t got;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    d = gw_start(&(struct gw){ .workers = 2, .servers = servers }, &port);
    settle(d, e, NULL, 1);
    eofs = th_echo_eofs(e);
    base = quiet_socket_count(d);

    out = malloc(len);
    in = malloc(len + 1);
    ck_assert(out && in);
    th_fill_pattern(out, len, 42);
    fd = th_connect(port, IO_MS);
    TH_ASSERT(d, fd >= 0, "connect: %s", strerr(fd));
    /* All of it goes before we read anything: 100 KB fits the socket buffers on the way. */
    got = th_send_all(fd, out, len);
    TH_ASSERT(d, got == (ssize_t)len, "send: %s", strerr(got));
    TH_ASSERT(d, shutdown(fd, SHUT_WR) == 0, "shutdown: %s", strerror(errno));
    got = th_recv_eof(fd, in, len + 1);
    TH_ASSERT(d, got == (ssize_t)len, "after our shutdown: %zd bytes then EOF (%s), want %zu",
              got, strerr(got), len);
    TH_ASSERT(d, memcmp(in, out, len) == 0, "the echo differs");
    close(fd);
    free(out);
    free(in);

    /* The backend saw our EOF, and the daemon let go of both sockets. */
    deadline = th_now_ms() + 2000;
    for (;;) {
        n = th_proc_fd_count(d->pid, "socket:");
        if ((th_echo_eofs(e) > eofs && n == base) || th_now_ms() >= deadline)
            break;
        th_sleep_ms(5);
    }
    TH_ASSERT(d, th_echo_eofs(e) == eofs + 1, "the backend read no EOF (%u, before %u)",
              th_echo_eofs(e), eofs);
    TH_ASSERT(d, n == base, "the daemon has %d sockets open 2 s after both sides "
              "closed, %d before the connection", n, base);
    gw_stop_clean(d);
}
END_TEST

/* half_close = off (nginx's default): the first EOF ends the connection. The backend is the
 * test itself and never closes on its own. With the default (on) the client's shutdown
 * reaches the backend and the client still reads what the backend sends after it; with
 * off the client reads EOF at once, and the backend reads EOF too. */
START_TEST(test_half_close_off)
{
    struct th_daemon *d;
    char servers[64], buf[8];
    int lfd, bport, port, fd, bfd, off, err, base, n;
    int64_t deadline;
    ssize_t got;

    for (off = 0; off <= 1; off++) {
        lfd = th_listen(&bport);
        ck_assert_msg(lfd >= 0, "listen: %s", strerr(lfd));
        snprintf(servers, sizeof(servers), "127.0.0.1:%d", bport);
        d = gw_start(&(struct gw){ .workers = 1, .servers = servers,
                                   .listener = off ? "half_close = off" : NULL }, &port);
        /* the readiness probe's connection came through to us: its EOF too, then ours
         * closes it and the daemon's count of sockets holds still */
        bfd = th_accept(lfd, IO_MS);
        TH_ASSERT(d, bfd >= 0, "the probe's connection did not reach the backend: %s",
                  strerr(bfd));
        err = th_wait_closed(bfd, IO_MS);
        TH_ASSERT(d, err == 0, "the probe's connection: %s, expected EOF", strerr(err));
        close(bfd);
        base = quiet_socket_count(d);
        fd = th_connect(port, IO_MS);
        TH_ASSERT(d, fd >= 0, "connect: %s", strerr(fd));
        bfd = th_accept(lfd, IO_MS);
        TH_ASSERT(d, bfd >= 0, "the backend accepted nothing: %s", strerr(bfd));
        got = th_send_all(fd, "ping", 4);
        TH_ASSERT(d, got == 4, "send: %s", strerr(got));
        got = th_recv_n(bfd, buf, 4);
        TH_ASSERT(d, got == 4 && memcmp(buf, "ping", 4) == 0, "the backend read %zd", got);
        got = th_send_all(bfd, "pong", 4);
        TH_ASSERT(d, got == 4, "backend send: %s", strerr(got));
        got = th_recv_n(fd, buf, 4);
        TH_ASSERT(d, got == 4 && memcmp(buf, "pong", 4) == 0, "the client read %zd", got);

        TH_ASSERT(d, shutdown(fd, SHUT_WR) == 0, "shutdown: %s", strerror(errno));
        err = th_wait_closed(bfd, IO_MS);
        TH_ASSERT(d, err == 0, "half_close = %s: the backend read no EOF after the "
                  "client's: %s", off ? "off" : "on", strerr(err));
        if (!off) {
            /* the other direction is still open */
            got = th_send_all(bfd, "late", 4);
            TH_ASSERT(d, got == 4, "backend send after EOF: %s", strerr(got));
            got = th_recv_n(fd, buf, 4);
            TH_ASSERT(d, got == 4 && memcmp(buf, "late", 4) == 0,
                      "half_close = on: the client read %zd bytes (%s) after its shutdown, "
                      "want the backend's 4", got, strerr(got));
            close(bfd);
            bfd = -1;
        }
        err = th_wait_closed(fd, IO_MS);
        TH_ASSERT(d, err == 0, "half_close = %s: the client read no EOF: %s",
                  off ? "off" : "on", strerr(err));
        /* and the daemon let go of both sockets */
        deadline = th_now_ms() + 2000;
        while ((n = th_proc_fd_count(d->pid, "socket:")) != base && th_now_ms() < deadline)
            th_sleep_ms(5);
        TH_ASSERT(d, n == base, "half_close = %s: %d sockets open after the close, %d "
                  "before", off ? "off" : "on", n, base);
        close(fd);
        if (bfd >= 0)
            close(bfd);
        close(lfd);
        gw_stop_clean(d);
    }
}
END_TEST

/* ------------------------------------------------------------------ 3. balancing */

/* 20 sequential connections through a daemon with one worker (the smooth weighted round
 * robin state is per worker) in front of <a> and <b>; expects <want_a> of them on <a>. */
static void balance(const char *weight_a, unsigned want_a)
{
    struct th_echo *a = th_echo_new(0), *b = th_echo_new(0);
    struct th_daemon *d;
    char servers[128];
    unsigned a0, b0, na, nb;
    int port, i, err;

    ck_assert_msg(a && b, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d%s, 127.0.0.1:%d", th_echo_port(a),
             weight_a, th_echo_port(b));
    d = gw_start(&(struct gw){ .workers = 1, .servers = servers }, &port);
    settle(d, a, b, 1);
    a0 = th_echo_accepted(a);
    b0 = th_echo_accepted(b);
    for (i = 0; i < 20; i++) {
        err = th_echo_roundtrip(port, 100, IO_MS);
        TH_ASSERT(d, err == 0, "connection %d: %s", i, strerr(err));
    }
    na = th_echo_accepted(a) - a0;
    nb = th_echo_accepted(b) - b0;
    TH_ASSERT(d, na == want_a && nb == 20 - want_a,
              "servers = %s: %u / %u connections, want %u / %u", servers, na, nb, want_a,
              20 - want_a);
    gw_stop_clean(d);
}

START_TEST(test_balance_roundrobin)
{
    balance("", 10);
}
END_TEST

START_TEST(test_balance_weighted)
{
    balance(" weight=3", 15);
}
END_TEST

/* ------------------------------------------------------------------ 4. dead server */

START_TEST(test_dead_server_retry)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[128], refused[96];
    int port, dead = th_free_port(), i, err;
    unsigned s0;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    ck_assert_int_gt(dead, 0);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d, 127.0.0.1:%d", dead, th_echo_port(e));
    d = gw_start(&(struct gw){ .workers = 2, .servers = servers }, &port);
    settle(d, e, NULL, 1);
    s0 = th_echo_served(e);
    for (i = 0; i < 20; i++) {
        err = th_echo_roundtrip(port, 100, IO_MS);
        TH_ASSERT(d, err == 0, "connection %d: %s", i, strerr(err));
    }
    TH_ASSERT(d, th_echo_served(e) - s0 == 20, "the live server served %u of 20",
              th_echo_served(e) - s0);
    snprintf(refused, sizeof(refused), "connect() to 127.0.0.1:%d: connection refused, "
             "trying another server", dead);
    TH_ASSERT(d, th_daemon_log_count(d, refused) > 0, "no \"%s\" in the log", refused);
    gw_stop_clean(d);
}
END_TEST

START_TEST(test_health_checks)
{
    struct th_echo *e = th_echo_new(0), *back;
    struct th_daemon *d;
    char servers[128], down[96], up[96];
    int port, dead = th_free_port(), i, err;
    int64_t t0, ms;
    unsigned s0, s1;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    ck_assert_int_gt(dead, 0);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d, 127.0.0.1:%d", dead, th_echo_port(e));
    snprintf(down, sizeof(down), "server 127.0.0.1:%d is DOWN", dead);
    snprintf(up, sizeof(up), "server 127.0.0.1:%d is UP", dead);
    t0 = th_now_ms();
    d = gw_start(&(struct gw){
                     .workers = 2, .servers = servers,
                     .health = "health_check_interval = 200ms\n"
                               "health_check_timeout = 100ms\n"
                               "health_check_fall = 2\n"
                               "health_check_rise = 2" },
                 &port);

    /* Two failed checks 200 ms apart. */
    /* (upper bounds on the clock are left to the wait: a busy machine stretches them) */
    err = th_daemon_wait_log(d, down, 1, 10000);
    ms = th_now_ms() - t0;
    TH_ASSERT(d, err == 0, "no \"%s\" 10 s after the start", down);
    th_note("health_checks: DOWN after %lld ms", (long long)ms);

    /* Down: every connection goes to the live one. */
    s0 = th_echo_served(e);
    for (i = 0; i < 6; i++) {
        err = th_echo_roundtrip(port, 100, IO_MS);
        TH_ASSERT(d, err == 0, "connection %d while down: %s", i, strerr(err));
    }
    TH_ASSERT(d, th_echo_served(e) - s0 == 6, "the live server served %u of 6",
              th_echo_served(e) - s0);

    /* Back: two good checks, then it takes its share again. */
    back = th_echo_new(dead);
    ck_assert_msg(back != NULL, "echo server on port %d: %s", dead, strerror(errno));
    t0 = th_now_ms();
    err = th_daemon_wait_log(d, up, 1, 10000);
    ms = th_now_ms() - t0;
    TH_ASSERT(d, err == 0, "no \"%s\" 10 s after it came back", up);
    th_note("health_checks: UP after %lld ms", (long long)ms);
    s0 = th_echo_served(back);
    s1 = th_echo_served(e);
    for (i = 0; i < 10; i++) {
        err = th_echo_roundtrip(port, 100, IO_MS);
        TH_ASSERT(d, err == 0, "connection %d after up: %s", i, strerr(err));
    }
    TH_ASSERT(d, th_echo_served(back) - s0 >= 3,
              "the server that came back served %u of 10 (the other %u)",
              th_echo_served(back) - s0, th_echo_served(e) - s1);

    /* And down again when it goes away. */
    th_echo_stop(back);
    err = th_daemon_wait_log(d, down, 2, 1500);
    TH_ASSERT(d, err == 0, "no second \"%s\" 1.5 s after it went away", down);
    gw_stop_clean(d);
}
END_TEST

/* source = ...: connections to the servers (and their health checks) leave from the
 * listed addresses in turn, none from the kernel's choice (127.0.0.1). */
START_TEST(test_source_addresses)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64];
    unsigned a0, n[3], i, sum;
    int port, k, err;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    d = gw_start(&(struct gw){ .workers = 1, .servers = servers,
                               .upstream = "source = 127.0.0.5-127.0.0.6, 127.0.0.7",
                               .health = "health_check_interval = 100ms\n"
                                         "health_check_timeout = 50ms" },
                 &port);
    settle(d, e, NULL, 1);
    a0 = th_echo_accepted(e);
    for (k = 0; k < 30; k++) {
        err = th_echo_roundtrip(port, 100, IO_MS);
        TH_ASSERT(d, err == 0, "connection %d: %s", k, strerr(err));
    }
    /* a few health checks too (every 100 ms: waited for, not slept on) */
    th_echo_wait_accepted(e, a0 + 31, 10000);
    for (i = 0, sum = 0; i < 3; i++) {
        n[i] = th_echo_accepted_from(e, 5 + i);
        sum += n[i];
    }
    TH_ASSERT(d, sum == th_echo_accepted(e) && th_echo_accepted_from(e, 1) == 0,
              "%u connections from 127.0.0.5-7 of %u accepted (%u from 127.0.0.1)", sum,
              th_echo_accepted(e), th_echo_accepted_from(e, 1));
    TH_ASSERT(d, th_echo_accepted(e) - a0 > 30, "no health checks among %u connections",
              th_echo_accepted(e) - a0);
    /* In turn: the checks interleave with the clients, so each gets about a third. */
    for (i = 0; i < 3; i++)
        TH_ASSERT(d, n[i] * 4 >= sum, "127.0.0.%u made %u of %u connections", 5 + i, n[i],
                  sum);
    th_note("source: %u / %u / %u connections from 127.0.0.5 / .6 / .7", n[0], n[1], n[2]);
    gw_stop_clean(d);
}
END_TEST

/* ------------------------------------------------------------------ 5. connect timeout */

START_TEST(test_connect_timeout)
{
    struct th_blackhole *b = th_blackhole_new();
    struct th_daemon *d;
    char servers[64], timedout[96];
    int port, fd, err;
    int64_t t0, ms;

    ck_assert_msg(b != NULL, "blackhole: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", b->port);
    d = gw_start(&(struct gw){ .workers = 2, .servers = servers,
                               .upstream = "connect_timeout = 300ms\nretries = 0" },
                 &port);
    t0 = th_now_ms();
    fd = th_connect(port, IO_MS);
    TH_ASSERT(d, fd >= 0, "connect: %s", strerr(fd));
    err = th_wait_closed(fd, 10000);
    ms = th_now_ms() - t0;
    close(fd);
    TH_ASSERT(d, err == 0 || err == -ECONNRESET,
              "waiting for the daemon to close: %s after %lld ms", strerr(err), (long long)ms);
    TH_ASSERT(d, ms >= 250, "closed after %lld ms, before connect_timeout", (long long)ms);
    th_note("connect_timeout: closed after %lld ms", (long long)ms);
    snprintf(timedout, sizeof(timedout), "connect() to 127.0.0.1:%d: connection timed out",
             b->port);
    TH_ASSERT(d, th_daemon_log_count(d, timedout) > 0, "no \"%s\" in the log", timedout);
    gw_stop_clean(d);
}
END_TEST

/* ------------------------------------------------------------------ 6. idle timeout */

START_TEST(test_idle_timeout)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64], c;
    int port, fd, err, i;
    int64_t t0, ms, deadline;
    ssize_t n;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    d = gw_start(&(struct gw){ .workers = 2, .servers = servers,
                               .listener = "idle_timeout = 1s" },
                 &port);
    settle(d, e, NULL, 1);

    /* Silent: closed by the daemon, backend side too. */
    t0 = th_now_ms();
    fd = th_connect(port, IO_MS);
    TH_ASSERT(d, fd >= 0, "connect: %s", strerr(fd));
    err = th_wait_closed(fd, 10000);
    ms = th_now_ms() - t0;
    close(fd);
    TH_ASSERT(d, err == 0 || err == -ECONNRESET, "silent connection: %s after %lld ms",
              strerr(err), (long long)ms);
    TH_ASSERT(d, ms >= 900, "silent connection closed after %lld ms, before idle_timeout",
              (long long)ms);
    th_note("idle_timeout: closed after %lld ms", (long long)ms);
    deadline = th_now_ms() + 5000;
    while (th_echo_active(e) && th_now_ms() < deadline)
        th_sleep_ms(5);
    TH_ASSERT(d, th_echo_active(e) == 0, "%u backend connections still open",
              th_echo_active(e));

    /* Talking every 100 ms: open for 2 s and more, twice idle_timeout. */
    fd = th_connect(port, IO_MS);
    TH_ASSERT(d, fd >= 0, "connect: %s", strerr(fd));
    for (i = 0; i < 21; i++) {
        c = (char)('a' + i);
        n = th_send_all(fd, &c, 1);
        TH_ASSERT(d, n == 1, "byte %d: send: %s", i, strerr(n));
        n = th_recv_n(fd, &c, 1);
        TH_ASSERT(d, n == 1 && c == 'a' + i, "byte %d: recv: %zd (%s)", i, n, strerr(n));
        th_sleep_ms(100);
    }
    err = th_wait_closed(fd, 0);
    TH_ASSERT(d, err == -ETIMEDOUT, "the talking connection was closed: %s", strerr(err));
    close(fd);
    gw_stop_clean(d);
}
END_TEST

/* ------------------------------------------------------------------ 7. EMFILE */

#define EMFILE_CONNS 60

START_TEST(test_emfile)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64], buf[4], msg[16];
    int held[EMFILE_CONNS], nheld = 0, nshed = 0, port, fd, i, err;
    int64_t t0, ms, phase0 = 0, cpu0 = 0, cpu1, wall;
    ssize_t n;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    /* nofile in the file too: the daemon raises its limit to that (1m by default). */
    d = gw_start(&(struct gw){ .workers = 1, .servers = servers, .gateway = "nofile = 64",
                               .nofile = 64 },
                 &port);
    settle(d, e, NULL, 1);

    for (i = 0; i < EMFILE_CONNS; i++) {
        snprintf(msg, sizeof(msg), "%04d", i);
        t0 = th_now_ms();
        fd = th_connect(port, 2000);
        TH_ASSERT(d, fd >= 0, "connection %d: connect: %s", i, strerr(fd));
        n = th_send_all(fd, msg, 4);
        if (n == 4)
            n = th_recv_n(fd, buf, 4);
        ms = th_now_ms() - t0;
        if (n == 4) {
            TH_ASSERT(d, memcmp(buf, msg, 4) == 0, "connection %d: wrong echo", i);
            TH_ASSERT(d, nshed == 0, "connection %d works after %d were shed", i, nshed);
            held[nheld++] = fd;
            continue;
        }
        /* Shed: EOF or a reset, promptly. */
        TH_ASSERT(d, n >= 0 || n == -ECONNRESET || n == -EPIPE,
                  "connection %d (%d working before it): %s after %lld ms, expected to be "
                  "shed", i, nheld, strerr(n), (long long)ms);
        TH_ASSERT(d, ms < 5000, "connection %d: shed after %lld ms", i, (long long)ms);
        close(fd);
        if (nshed++ == 0) {
            phase0 = th_now_ms();
            cpu0 = th_proc_cpu_ms(d->pid);
        }
    }
    TH_ASSERT(d, nheld >= 10 && nshed >= 1, "%d connections worked, %d were shed", nheld,
              nshed);
    /* Each working connection takes two descriptors: with an odd number left over, the
     * last one goes to an accepted client whose upstream connect then fails, and accept()
     * itself never meets EMFILE. */
    TH_ASSERT(d, th_daemon_log_count(d, "accept(): Too many open files") > 0,
              "the log does not mention the accept error (%d upstream connects failed "
              "with EMFILE instead)", th_daemon_log_count(d, "too many open files"));

    /* Out of descriptors for a while longer: the daemon must not spin. */
    while (th_now_ms() - phase0 < 1000)
        th_sleep_ms(20);
    cpu1 = th_proc_cpu_ms(d->pid);
    wall = th_now_ms() - phase0;
    TH_ASSERT(d, cpu0 >= 0 && cpu1 >= 0, "/proc/%d/stat unreadable", (int)d->pid);
    TH_ASSERT(d, (cpu1 - cpu0) * 2 < wall, "%lld ms of CPU in %lld ms out of descriptors",
              (long long)(cpu1 - cpu0), (long long)wall);
    th_note("emfile: %d worked, %d shed, %lld ms of CPU in %lld ms", nheld, nshed,
            (long long)(cpu1 - cpu0), (long long)wall);
    TH_ASSERT(d, th_daemon_is_alive(d), "the daemon died");

    /* Descriptors back: it serves again. */
    for (i = 0; i < nheld; i++)
        close(held[i]);
    t0 = th_now_ms();
    do {
        th_sleep_ms(20);
        err = th_echo_roundtrip(port, 100, 2000);
    } while (err != 0 && th_now_ms() - t0 < 3000);
    TH_ASSERT(d, err == 0, "3 s after closing the held connections: %s", strerr(err));
    for (i = 0; i < 5; i++) {
        err = th_echo_roundtrip(port, 1000, 2000);
        TH_ASSERT(d, err == 0, "connection %d after recovery: %s", i, strerr(err));
    }
    gw_stop_clean(d);
}
END_TEST

/* At the open-files limit with a healthy backend: the daemon's own EMFILE is not the
 * server's failure (issue 14). Descriptors are used up by websocket clients that never send
 * their request (one descriptor each, no upstream yet), so that health checks, upstream
 * connects and accepts all meet EMFILE. The server must stay UP and in balancing, the
 * local errors must be counted under their own name, the accept warning must not flood
 * the log, and the first connection after the pressure must go through. */
#define LIMIT_HELD_MAX 64

static char *gw_stats(int port, const char *cmd)
{
    char path[TH_PATH_MAX];
    char *s;

    snprintf(path, sizeof(path), "%s/stats-%d.sock", th_tmpdir(), port);
    s = th_stats_cmd(path, cmd, IO_MS);
    return s ? s : strdup("");
}

/* The number after "<key>": in <json>, or -1. */
static long long json_num(const char *json, const char *key)
{
    char pat[64];
    const char *p;

    snprintf(pat, sizeof(pat), "\"%s\":", key);
    p = strstr(json, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : -1;
}

/* A client the daemon has shed: EOF or a reset within <ms>. */
static int shed_within(int fd, int ms)
{
    int r = th_wait_closed(fd, ms);

    return r == 0 || r == -ECONNRESET;
}

START_TEST(test_emfile_not_the_servers_fault)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64], health[512], buf[4];
    int held[LIMIT_HELD_MAX], nheld = 0, port, wport, fd, i, lines, shed = 0, base, err;
    int64_t t0, elapsed;
    long long emfile;
    char *js, *up, *m;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    wport = th_free_port();
    ck_assert_int_gt(wport, 0);
    /* Checks every 50 ms, down after 2 failures; ejected at the first failed connect. */
    snprintf(health, sizeof(health),
             "health_check_interval = 50ms\nhealth_check_timeout = 50ms\n"
             "health_check_fall = 2\nhealth_check_rise = 1\n"
             "eject_consecutive_failures = 1\neject_cooldown = 60s\nretries = 0\n"
             "[listener w]\nbind = 127.0.0.1:%d\nmode = websocket\nupstream = u\n"
             "handshake_timeout = 60s\n", wport);
    d = gw_start(&(struct gw){ .workers = 1, .servers = servers, .gateway = "nofile = 64",
                               .nofile = 64, .health = health },
                 &port);
    base = quiet_socket_count(d);

    /* Fill: pending websocket clients until accept() meets EMFILE and so does a health
     * check. Which of the two meets the limit first is a race: when accept() meets it
     * while a health check holds the last descriptor, that descriptor is free again once
     * the check ends, and every later check succeeds. So a client that accept() sheds is
     * dropped, one that is held takes the descriptor, until a check meets the limit. */
    for (i = 0; th_daemon_log_count(d, "accept(): Too many open files") == 0 ||
                th_daemon_log_count(d, "not made: too many open files") == 0; i++) {
        TH_ASSERT(d, nheld < LIMIT_HELD_MAX && i < 4 * LIMIT_HELD_MAX,
                  "%d pending clients, %d shed, and accept() and the health checks have "
                  "not both met EMFILE", nheld, i - nheld);
        fd = th_connect(wport, IO_MS);
        TH_ASSERT(d, fd >= 0, "pending client %d: connect: %s", i, strerr(fd));
        if (th_daemon_log_count(d, "accept(): Too many open files") > 0 &&
            shed_within(fd, 4 * 100)) {   /* shed when accept() resumes (100 ms pauses) */
            close(fd);
            continue;
        }
        held[nheld++] = fd;
        th_daemon_wait_log(d, "accept(): Too many open files", 1, 200);
    }
    /* Health checks cannot be made: counted as ours, never as the server's. */
    TH_ASSERT(d, th_daemon_wait_log(d, "not made: too many open files", 3, 10000) == 0,
              "no health check met EMFILE (%d pending clients)", nheld);

    /* The accept warning at the limit: each refused client below pauses accept() and is
     * shed; the warning comes once per 10 s, however many pauses. */
    t0 = th_now_ms();
    for (i = 0; i < 20; i++) {
        fd = th_connect(port, IO_MS);
        TH_ASSERT(d, fd >= 0, "client %d at the limit: connect: %s", i, strerr(fd));
        if (shed_within(fd, IO_MS))
            shed++;
        close(fd);
    }
    elapsed = th_now_ms() - t0;
    TH_ASSERT(d, shed == 20, "%d of 20 clients at the limit were shed", shed);

    /* One descriptor back: a client is accepted and its upstream connect meets EMFILE
     * (or the health check takes that descriptor); either way nothing is the server's. */
    close(held[--nheld]);
    for (i = 0; i < 5; i++) {
        fd = th_connect(port, IO_MS);
        TH_ASSERT(d, fd >= 0, "client %d with one descriptor left: %s", i, strerr(fd));
        (void)th_send_all(fd, "ping", 4);       /* may meet the daemon's close */
        TH_ASSERT(d, th_recv_n(fd, buf, 4) <= 0, "client %d was relayed with one descriptor "
                  "left", i);
        close(fd);
    }

    /* The pressure ends. */
    while (nheld)
        close(held[--nheld]);
    for (t0 = th_now_ms(); th_proc_fd_count(d->pid, "socket:") > base;) {
        TH_ASSERT(d, th_now_ms() - t0 < IO_MS, "the daemon still holds %d sockets (%d before)",
                  th_proc_fd_count(d->pid, "socket:"), base);
        th_sleep_ms(10);
    }
    /* The very first connection goes through: the server was never marked down or
     * ejected (before the fix it stayed DOWN, and every connection was refused). */
    err = th_echo_roundtrip(port, 100, IO_MS);
    TH_ASSERT(d, err == 0, "first connection after the pressure: %s", strerr(err));

    js = gw_stats(port, "show stats");
    up = strstr(js, "\"upstreams\":");
    TH_ASSERT(d, up != NULL, "show stats: %s", js);
    TH_ASSERT(d, strstr(up, "\"health\":\"up\"") && strstr(up, "\"breaker\":\"in\""),
              "the server was held responsible: %s", up);
    TH_ASSERT(d, json_num(up, "connect_fails") == 0 && json_num(up, "checks_failed") == 0 &&
                 json_num(up, "ejections") == 0, "failures counted against the server: %s", up);
    TH_ASSERT(d, json_num(up, "local_errors") >= 3, "local errors not counted: %s", up);
    free(js);
    m = gw_stats(port, "show metrics");
    TH_ASSERT(d, strstr(m, "corogate_server_local_errors_total{upstream=\"u\""),
              "no local-error metric:\n%s", m);
    emfile = 0;
    {
        const char *p = strstr(m, "corogate_worker_accept_errors_total{worker=\"0\","
                                  "reason=\"emfile\"} ");

        if (p)
            emfile = strtoll(strchr(p, ' ') + 1, NULL, 10);
    }
    free(m);
    lines = th_daemon_log_count(d, "accept(): Too many open files");
    th_note("emfile_blame: %lld accept EMFILE pauses, %d warnings in %lld ms", emfile, lines,
            (long long)elapsed);
    TH_ASSERT(d, emfile >= 20, "accept EMFILE counted %lld times for 20 shed clients", emfile);
    TH_ASSERT(d, lines <= 2 + elapsed / 10000, "%d accept warnings for %lld pauses in %lld ms",
              lines, emfile, (long long)elapsed);
    gw_stop_clean(d);
}
END_TEST

/* ------------------------------------------------------------------ 8. command line */

static void run(struct th_run_result *r, const char *const *args)
{
    int err = th_run_daemon(r, 10000, args);

    ck_assert_msg(err == 0, "cannot run %s: %s", th_daemon_path(), strerror(-err));
}

static int exited(const struct th_run_result *r, int code)
{
    return r->status >= 0 && WIFEXITED(r->status) && WEXITSTATUS(r->status) == code;
}

START_TEST(test_config_errors)
{
    char path[TH_PATH_MAX], want[8192], how[96];
    struct th_run_result r;
    int err;

    err = th_conf_write(path, sizeof(path),
                        "; one error of each class\n"                  /* 1 */
                        "[gateway]\n"                                  /* 2 */
                        "workers = 2\n"                                /* 3 */
                        "drain_timeout = 5 fortnights\n"               /* 4: bad duration */
                        "colour = blue\n"                              /* 5: unknown key */
                        "[listener a]\n"                               /* 6 */
                        "bind = localhost\n"                           /* 7: bad host:port */
                        "upstream = nowhere\n"                         /* 8: unknown ref */
                        "[upstream b]\n"                               /* 9: servers missing */
                        "balance = roundrobin\n"                       /* 10 */
                        "[frobnicator]\n"                              /* 11: unknown section */
                        "key = value\n");                              /* 12: ignored */
    ck_assert_int_eq(err, 0);
    run(&r, (const char *const[]){ "-t", "-c", path, NULL });
    snprintf(want, sizeof(want),
             "%1$s:4: [gateway] drain_timeout: \"5 fortnights\" is not a duration "
             "(e.g. 500ms, 5s, 2m)\n"
             "%1$s:5: [gateway] colour: unknown key\n"
             "%1$s:7: [listener a] bind: \"localhost\" is not host:port\n"
             "%1$s:8: [listener a] upstream: unknown upstream \"nowhere\"\n"
             "%1$s:9: [upstream b] servers: required key missing\n"
             "%1$s:11: [frobnicator]: unknown section\n"
             "%1$s: configuration is invalid\n",
             path);
    ck_assert_msg(exited(&r, 1), "-t on a bad file: %s, want exit status 1; output:\n%s",
                  th_describe_status(r.status, how, sizeof(how)), r.out);
    ck_assert_str_eq(r.out, want);
    th_run_result_deinit(&r);

    err = th_conf_write(path, sizeof(path),
                        "[listener a]\nbind = 127.0.0.1:1\nupstream = b\n"
                        "[upstream b]\nservers = 127.0.0.1:2\n");
    ck_assert_int_eq(err, 0);
    run(&r, (const char *const[]){ "-t", "-c", path, NULL });
    snprintf(want, sizeof(want), "%s: configuration is valid (1 listeners, 1 upstreams)\n",
             path);
    ck_assert_msg(exited(&r, 0), "-t on a valid file: %s, want 0; output:\n%s",
                  th_describe_status(r.status, how, sizeof(how)), r.out);
    ck_assert_str_eq(r.out, want);
    th_run_result_deinit(&r);
}
END_TEST

START_TEST(test_command_line)
{
    struct th_run_result r;
    char how[96];

    run(&r, (const char *const[]){ NULL });
    ck_assert_msg(exited(&r, 2) && strstr(r.out, "usage: corogate"),
                  "no arguments: %s, want 2 and usage; output:\n%s",
                  th_describe_status(r.status, how, sizeof(how)), r.out);
    th_run_result_deinit(&r);

    run(&r, (const char *const[]){ "-Z", NULL });
    ck_assert_msg(exited(&r, 2) && strstr(r.out, "usage: corogate"),
                  "-Z: %s, want 2 and usage; output:\n%s",
                  th_describe_status(r.status, how, sizeof(how)), r.out);
    th_run_result_deinit(&r);

    run(&r, (const char *const[]){ "-V", NULL });
    ck_assert_msg(exited(&r, 0) && strncmp(r.out, "corogate ", 9) == 0 &&
                  strstr(r.out, "context switch"),
                  "-V: %s, want 0, \"corogate\" and \"context switch\"; output:\n%s",
                  th_describe_status(r.status, how, sizeof(how)), r.out);
    th_run_result_deinit(&r);

    run(&r, (const char *const[]){ "-c", "/nonexistent/corogate.ini", NULL });
    ck_assert_msg(exited(&r, 1) &&
                  strstr(r.out, "/nonexistent/corogate.ini: cannot open: No such file"),
                  "missing file: %s, want 1 and the open error; output:\n%s",
                  th_describe_status(r.status, how, sizeof(how)), r.out);
    th_run_result_deinit(&r);
}
END_TEST

/* ------------------------------------------------------------------ 9. SIGTERM */

/* Whether a socket listens on 127.0.0.1:<port> (/proc/net/tcp: state 0A). */
static int is_listening(int port)
{
    char *tab = th_read_file("/proc/net/tcp", NULL), pat[32];
    int found;

    snprintf(pat, sizeof(pat), "0100007F:%04X 00000000:0000 0A", port);
    found = tab && strstr(tab, pat) != NULL;
    free(tab);
    return found;
}

/* Waits up to <ms> until nothing listens on 127.0.0.1:<port>: 0 or -ETIMEDOUT. */
static int wait_not_listening(int port, int ms)
{
    int64_t deadline = th_now_ms() + ms;

    while (is_listening(port)) {
        if (th_now_ms() > deadline)
            return -ETIMEDOUT;
        th_sleep_ms(5);
    }
    return 0;
}

START_TEST(test_sigterm_drain)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64], how[96];
    int port, fd, fd2, err, st;
    int64_t t0, ms;
    ssize_t n;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    /* The window between SIGTERM and drain_timeout must hold the checks below (the
     * listening sockets gone, a refused connect, an echo) on a busy machine: 5 s, not a
     * fraction of one (500 ms was overrun once under load, and the echo then met the
     * drain's end instead of the drain). */
    d = gw_start(&(struct gw){ .workers = 2, .servers = servers,
                               .gateway = "drain_timeout = 5s" },
                 &port);
    settle(d, e, NULL, 1);
    fd = th_connect(port, IO_MS);
    TH_ASSERT(d, fd >= 0, "connect: %s", strerr(fd));
    n = th_send_all(fd, "hello", 5);
    if (n == 5)
        n = th_recv_n(fd, how, 5);
    TH_ASSERT(d, n == 5, "echo before SIGTERM: %zd (%s)", n, strerr(n));

    t0 = th_now_ms();
    kill(d->pid, SIGTERM);
    /* The workers close their listening sockets soon after the signal: waited for in
     * /proc/net/tcp, not slept on, and without a connection that the drain would count. */
    TH_ASSERT(d, wait_not_listening(port, 10000) == 0, "still listening 10 s after SIGTERM");
    /* Draining: no new connections, the open one still relays. */
    fd2 = th_connect(port, 1000);
    if (fd2 >= 0)
        close(fd2);
    TH_ASSERT(d, fd2 == -ECONNREFUSED, "connect while draining: %s, want refused",
              strerr(fd2));
    n = th_send_all(fd, "again", 5);
    if (n == 5)
        n = th_recv_n(fd, how, 5);
    TH_ASSERT(d, n == 5, "echo while draining: %zd (%s)", n, strerr(n));

    st = th_daemon_wait_exit(d, 15000);    /* beyond the window: slow or stuck? */
    ms = th_now_ms() - t0;
    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "after SIGTERM: %s, want exit status 0",
              th_describe_status(st, how, sizeof(how)));
    /* not before drain_timeout; that it was drain_timeout that ended it, the log says */
    TH_ASSERT(d, ms >= 4900, "exited %lld ms after SIGTERM, before drain_timeout (5 s)",
              (long long)ms);
    th_note("sigterm_drain: exited after %lld ms", (long long)ms);
    err = th_wait_closed(fd, 1000);
    close(fd);
    TH_ASSERT(d, err == 0 || err == -ECONNRESET, "the open connection: %s", strerr(err));
    TH_ASSERT(d, th_daemon_log_count(d, "drain timeout: closing 1 remaining connections"),
              "the log does not mention the connection closed at the drain timeout");
}
END_TEST

START_TEST(test_sigterm_idle)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64], how[96];
    int64_t t0, ms;
    int port, st;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    d = gw_start(&(struct gw){ .workers = 2, .servers = servers }, &port);
    settle(d, e, NULL, 1);
    t0 = th_now_ms();
    /* with nothing to drain it exits at once, far inside drain_timeout (30 s): the stop
     * window (10 s) is the bound, not a figure of a quiet machine */
    st = th_daemon_stop(d, SIGTERM, 10000);
    ms = th_now_ms() - t0;
    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "SIGTERM with no connections: %s, want exit status 0 within 10 s",
              th_describe_status(st, how, sizeof(how)));
    th_note("sigterm_idle: exited after %lld ms", (long long)ms);
}
END_TEST

/* ------------------------------------------------------------------ suite */

/* max_connection_lifetime: a busy connection is closed too, once over its lifetime, after
 * what it relayed has been written; each byte sent before is echoed. */
START_TEST(test_lifetime)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64], c, *json;
    int port, fd, i, err = -ETIMEDOUT;
    ssize_t n;

    ck_assert_msg(e != NULL, "echo server: %s", strerror(errno));
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    d = gw_start(&(struct gw){ .workers = 2, .servers = servers,
                               .listener = "max_connection_lifetime = 200ms\n"
                                           "lifetime_jitter = 0" },
                 &port);
    settle(d, e, NULL, 1);
    fd = th_connect(port, IO_MS);
    TH_ASSERT(d, fd >= 0, "connect: %s", strerr(fd));
    for (i = 0; i < 500 && err == -ETIMEDOUT; i++) {
        c = (char)('a' + i % 26);
        if (th_send_all(fd, &c, 1) != 1)
            break;
        n = th_recv_n(fd, &c, 1);
        if (n == 1)
            TH_ASSERT(d, c == 'a' + i % 26, "byte %d: got %c", i, c);
        else
            break;
        err = th_wait_closed(fd, 20);
    }
    TH_ASSERT(d, i < 500, "a busy connection outlived max_connection_lifetime");
    close(fd);
    json = gw_stats(port, "show stats\n");
    TH_ASSERT(d, json_num(json, "lifetime_closes") == 1, "lifetime_closes: %s", json);
    free(json);
    gw_stop_clean(d);
    th_echo_free(e);
}
END_TEST

Suite *gateway_suite(void)
{
    Suite *s = suite_create("gateway");

    th_suite_add(s, "bulk", test_bulk_roundtrip, 60);
    th_suite_add(s, "half_close", test_half_close, 60);
    th_suite_add(s, "half_close_off", test_half_close_off, 60);
    th_suite_add(s, "balance_roundrobin", test_balance_roundrobin, 60);
    th_suite_add(s, "balance_weighted", test_balance_weighted, 60);
    th_suite_add(s, "dead_server_retry", test_dead_server_retry, 60);
    th_suite_add(s, "health_checks", test_health_checks, 60);
    th_suite_add(s, "source_addresses", test_source_addresses, 60);
    th_suite_add(s, "connect_timeout", test_connect_timeout, 60);
    th_suite_add(s, "idle_timeout", test_idle_timeout, 60);
    th_suite_add(s, "lifetime", test_lifetime, 60);
    th_suite_add(s, "emfile", test_emfile, 60);
    th_suite_add(s, "emfile_not_the_servers_fault", test_emfile_not_the_servers_fault, 60);
    th_suite_add(s, "config_errors", test_config_errors, 60);
    th_suite_add(s, "command_line", test_command_line, 60);
    th_suite_add(s, "sigterm_drain", test_sigterm_drain, 60);
    th_suite_add(s, "sigterm_idle", test_sigterm_idle, 60);
    return s;
}
