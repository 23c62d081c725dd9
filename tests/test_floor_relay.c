/* tests/test_floor_relay.c — bench/floor_relay.c, `make bench`'s reference relay: bytes
 * through it intact both ways, a slow reader held back rather than buffered without bound,
 * EOF and errors closing both sides, and the --sockmap mode relaying through the kernel
 * (skipped, with the reason, where the sk_skb program does not load).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "harness.h"

#define IO_MS 10000

static const char *floor_path(void)
{
    static char path[TH_PATH_MAX];

    return th_build_path(path, sizeof(path), "bench/floor-relay");
}

/* Starts floor-relay with <extra> (NULL-terminated, may be empty) in front of 127.0.0.1:
 * <backend>; returns its port, or a negative errno with <h>->out holding what it said. */
static int floor_start(struct th_helper *h, int backend, const char *const *extra)
{
    char listen[32], target[32];
    const char *argv[16];
    int n = 0, port = th_free_port(), err;

    ck_assert_int_gt(port, 0);
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
    snprintf(target, sizeof(target), "127.0.0.1:%d", backend);
    argv[n++] = floor_path();
    while (*extra && n < 12)
        argv[n++] = *extra++;
    argv[n++] = listen;
    argv[n++] = target;
    argv[n] = NULL;
    err = th_helper_start(h, argv, "floor-relay: 127.0.0.1:", IO_MS);
    return err ? err : port;
}

static char *said(const struct th_helper *h)
{
    static char buf[2048];
    char *s = th_read_file(h->out, NULL);

    snprintf(buf, sizeof(buf), "%s", s ? th_tail(s, sizeof(buf) - 1) : "(nothing)");
    free(s);
    return buf;
}

/* A client with a 4 KiB receive buffer (set before connect, so the window is small from
 * the start), so that what stalls is mostly the relay's and the backend's buffers. */
static int small_window_client(int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct timeval tv = { .tv_sec = IO_MS / 1000 };
    int fd = socket(AF_INET, SOCK_STREAM, 0), small = 4096;

    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)), 0);
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)), 0);
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

/* <len> patterned bytes through <fd> and back, compared (-EPIPE: fewer came back, -EIO:
 * changed). */
static void roundtrip(int fd, size_t len)
{
    int err = th_echo_roundtrip_fd(fd, len);

    ck_assert_msg(err == 0, "%zu bytes through and back: %s", len, strerror(-err));
}

struct sender {
    int fd;
    const char *buf;
    size_t len;
    _Atomic size_t sent;
    ssize_t err;
};

static void *send_all(void *arg)
{
    struct sender *s = arg;

    while (atomic_load(&s->sent) < s->len) {
        size_t at = atomic_load(&s->sent), chunk = s->len - at < 65536 ? s->len - at : 65536;
        ssize_t n = send(s->fd, s->buf + at, chunk, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            s->err = n < 0 ? -errno : -EPIPE;
            return NULL;
        }
        atomic_fetch_add(&s->sent, (size_t)n);
    }
    return NULL;
}

/* <len> bytes sent by a thread while this one does not read: every buffer on the way
 * fills (the relay's write to us comes up short, it keeps the rest and stops reading the
 * backend, the backend stops reading, the relay's write to it comes up short, it stops
 * reading us) until the sender stands still. Only then are the bytes read and compared:
 * a relay that lost or reordered what it kept fails here. */
static void stalled_roundtrip(int fd, size_t len, uint64_t seed)
{
    struct sender s = { .fd = fd, .len = len };
    char *out = malloc(len), *in = malloc(len);
    size_t last = (size_t)-1, got = 0;
    int still = 0, i;
    pthread_t t;

    ck_assert_ptr_nonnull(out);
    ck_assert_ptr_nonnull(in);
    th_fill_pattern(out, len, seed);
    s.buf = out;
    ck_assert_int_eq(pthread_create(&t, NULL, send_all, &s), 0);
    /* Stood still: the same count for 5 looks 20 ms apart (at most 10 s). */
    for (i = 0; i < 500 && still < 5; i++) {
        size_t now = atomic_load(&s.sent);
        still = now == last ? still + 1 : 0;
        last = now;
        th_sleep_ms(20);
    }
    ck_assert_msg(last < len, "all %zu bytes went out with nobody reading: no buffer filled",
                  len);
    while (got < len) {
        ssize_t n = recv(fd, in + got, len - got, 0);
        ck_assert_msg(n > 0, "after %zu of %zu bytes: %s", got, len, n ? strerror(errno) : "EOF");
        got += (size_t)n;
    }
    pthread_join(t, NULL);
    ck_assert_int_eq(s.err, 0);
    ck_assert_msg(memcmp(out, in, len) == 0, "the bytes came back changed");
    free(out);
    free(in);
}

START_TEST(test_relays_both_ways)
{
    static const char *const none[] = { NULL };
    struct th_helper h;
    struct th_echo *echo = th_echo_new(0);
    int port, fd[3], i;

    ck_assert_ptr_nonnull(echo);
    port = floor_start(&h, th_echo_port(echo), none);
    ck_assert_msg(port > 0, "floor-relay did not start (%s): %s", strerror(-port), said(&h));
    /* Three at once: one loop serves them all; the third stops reading for a while. */
    fd[0] = th_connect(port, IO_MS);
    fd[1] = th_connect(port, IO_MS);
    fd[2] = small_window_client(port);
    roundtrip(fd[0], 1);
    stalled_roundtrip(fd[2], 64u << 20, 2);
    roundtrip(fd[1], 300000);
    roundtrip(fd[0], 64);
    ck_assert_uint_eq(th_echo_accepted(echo), 3);
    /* A client's EOF closes its backend connection (no half-close carried)... */
    close(fd[0]);
    for (i = 0; i < 500 && th_echo_eofs(echo) < 1; i++)
        th_sleep_ms(10);
    ck_assert_uint_ge(th_echo_eofs(echo), 1);
    /* ...and the backend going away closes its clients. */
    th_echo_stop(echo);
    ck_assert_int_eq(th_wait_closed(fd[1], IO_MS), 0);
    ck_assert_int_eq(th_wait_closed(fd[2], IO_MS), 0);
    close(fd[1]);
    close(fd[2]);
    /* A backend that refuses: the client is closed, the relay lives on. */
    fd[0] = th_connect(port, IO_MS);
    ck_assert_int_ge(fd[0], 0);
    i = th_wait_closed(fd[0], IO_MS);
    ck_assert_msg(i == 0 || i == -ECONNRESET, "%s", strerror(-i));
    close(fd[0]);
    ck_assert_int_eq(th_echo_start(echo), 0);
    fd[0] = th_connect(port, IO_MS);
    roundtrip(fd[0], 1000);
    close(fd[0]);
    th_helper_stop(&h);
}
END_TEST

START_TEST(test_sockmap_relays)
{
    static const char *const sockmap[] = { "--sockmap", NULL };
    struct th_helper h;
    struct th_echo *echo = th_echo_new(0);
    char first[64], back[64];
    int port, fd, i;

    ck_assert_ptr_nonnull(echo);
    port = floor_start(&h, th_echo_port(echo), sockmap);
    if (port < 0 && strstr(said(&h), "sk_skb")) {
        TH_SKIP("the sk_skb program cannot be loaded here: %s", said(&h));
    }
    ck_assert_msg(port > 0, "floor-relay --sockmap did not start (%s): %s", strerror(-port),
                  said(&h));
    /* Bytes sent at once, likely before the backend connect is done, wait in the client's
     * socket and go the user-space way; then the kernel carries the rest. */
    fd = th_connect(port, IO_MS);
    ck_assert_int_ge(fd, 0);
    th_fill_pattern(first, sizeof(first), 9);
    ck_assert_int_eq(th_send_all(fd, first, sizeof(first)), (ssize_t)sizeof(first));
    ck_assert_int_eq(th_recv_n(fd, back, sizeof(back)), (ssize_t)sizeof(back));
    ck_assert(memcmp(first, back, sizeof(first)) == 0);
    for (i = 0; i < 100; i++)
        roundtrip(fd, 64);
    roundtrip(fd, 1u << 20);
    /* The EOF still reaches the relay, which closes the backend side. */
    close(fd);
    for (i = 0; i < 500 && th_echo_eofs(echo) < 1; i++)
        th_sleep_ms(10);
    ck_assert_uint_ge(th_echo_eofs(echo), 1);
    th_helper_stop(&h);
}
END_TEST

START_TEST(test_usage)
{
    static const char *const bad[][4] = {
        { "127.0.0.1:1", NULL },
        { "--threads", "0", "127.0.0.1:1", "127.0.0.1:2" },
        { "--source", "127.0.0.9-127.0.0.1", "127.0.0.1:1", "127.0.0.1:2" },
        { "localhost:1", "127.0.0.1:2", NULL },
    };
    static const char *const want[] = { "usage:", "usage:", "--source", "want IPv4" };

    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        const char *argv[6] = { floor_path() };
        struct th_run_result r;

        for (int j = 0; j < 4 && bad[k][j]; j++)
            argv[j + 1] = bad[k][j];
        ck_assert_int_eq(th_run(&r, IO_MS, argv), 0);
        ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 1, "case %zu: %s", k,
                      r.out);
        ck_assert_msg(strstr(r.out, want[k]), "case %zu: %s", k, r.out);
        th_run_result_deinit(&r);
    }
}
END_TEST

Suite *floor_relay_suite(void)
{
    Suite *s = suite_create("floor_relay");

    th_suite_add(s, "relays_both_ways", test_relays_both_ways, 60);
    th_suite_add(s, "sockmap_relays", test_sockmap_relays, 60);
    th_suite_add(s, "usage", test_usage, 20);
    return s;
}
