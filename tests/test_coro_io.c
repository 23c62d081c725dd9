/* tests/test_coro_io.c — coroutine TCP streams on real sockets: echo, many connections,
 * buffer accounting, the read-ahead bound, connect/read/write timeouts, cancel, close
 * (also with an on_closed that frees the stream under parked coroutines), backpressure,
 * resets.
 *
 * Every test listens on 127.0.0.1 port 0 with a plain socket watched by a uv_poll_t; each
 * accepted connection is a heap struct sconn (a coro_stream and the coroutine serving
 * it). Client streams are heap objects too: nothing the loop holds points into a
 * coroutine stack. Every test runs once per stack model (Check loop tests: _i is the
 * model).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "coro/coro.h"
#include "coro/io.h"

#define MiB       (1024u * 1024)
#define BIG_WRITE (64u * 1024)   /* the backpressure tests' write size */

struct env {
    uv_loop_t          loop;
    struct coro_sched *s;
};

static void env_init(struct env *e, int model)
{
    struct coro_sched_opts o = { .stack_model = (enum coro_stack_model)model };

    ck_assert_int_eq(uv_loop_init(&e->loop), 0);
    e->s = coro_sched_new(&e->loop, &o);
    ck_assert_ptr_nonnull(e->s);
}

static void env_run(struct env *e)
{
    uv_run(&e->loop, UV_RUN_DEFAULT);
}

static void env_deinit(struct env *e)
{
    ck_assert_uint_eq(coro_buf_outstanding(e->s), 0);  /* every buffer went back */
    ck_assert_int_eq(coro_sched_free(e->s), 0);         /* no coroutine left alive */
    uv_run(&e->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&e->loop), 0);       /* every handle closed */
}

static uint64_t ms_since(uint64_t t0_ns)
{
    return (uv_hrtime() - t0_ns) / 1000000;
}

/* ------------------------------------------------------------------ data pattern */

static uint64_t splitmix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Byte <pos> of the pseudo-random stream <seed>: random access, so a reader can check any
 * chunk without replaying the writer's piece sizes. */
static unsigned char pattern_at(uint64_t seed, uint64_t pos)
{
    return (unsigned char)(splitmix(seed * 0x100000001b3ULL + (pos >> 3)) >> ((pos & 7) * 8));
}

static void pattern_fill(uint64_t seed, uint64_t pos, char *p, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        p[i] = (char)pattern_at(seed, pos + i);
}

static uint64_t fnv1a(uint64_t h, const char *p, size_t n)   /* start with FNV_INIT */
{
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ULL;
    return h;
}

#define FNV_INIT 0xcbf29ce484222325ULL

/* ------------------------------------------------------------------ test server */

enum srv_mode {
    SRV_ECHO,    /* writes back what it reads; at EOF flushes, shuts down, closes */
    SRV_SINK,    /* reads and checks the pattern <seed>; never sends; closes at EOF */
    SRV_DEAF,    /* never reads; closes once <release> is signalled */
    SRV_RESET,   /* reads one chunk, then closes with SO_LINGER 0 (the peer gets a RST) */
    SRV_SEND,    /* sends <send_len> bytes of the pattern <seed>, shuts down, reads to EOF */
};

struct srv {
    uv_poll_t          poll;        /* on the listening socket */
    int                lfd;
    struct sockaddr_in addr;        /* where it listens */
    struct coro_sched *s;
    enum srv_mode      mode;
    uint64_t           seed;        /* SRV_SINK, SRV_SEND */
    size_t             send_len;    /* SRV_SEND */
    struct coro_event  release;     /* SRV_DEAF */
    unsigned           accepted;
    unsigned           finished;    /* serving coroutines that closed and freed their conn */
    uint64_t           bytes_in;    /* summed over finished connections */
    uint64_t           bytes_out;
    uint64_t           mismatches;  /* SRV_SINK: bytes that broke the pattern */
    int                read_end;    /* how the last connection's reading ended */
};

struct sconn {
    struct coro_stream st;          /* first: its address is the conn's */
    struct srv        *srv;
};

static void serve(void *arg)       /* coroutine; owns <c> */
{
    struct sconn *c = arg;
    struct srv *sv = c->srv;
    struct coro_buf *b = NULL;
    uint64_t pos = 0;
    ssize_t n = 0;
    size_t i;
    int fd;

    static const struct coro_stream_names names = { "read peer", "write peer" };

    c->st.names = &names;
    switch (sv->mode) {
    case SRV_ECHO:
        while ((n = coro_read(&c->st, &b, 5000)) > 0)
            if (coro_write(&c->st, b, 5000) < 0)   /* takes b */
                break;
        break;
    case SRV_SINK:
        while ((n = coro_read(&c->st, &b, 5000)) > 0) {
            for (i = 0; i < (size_t)n; i++)
                if ((unsigned char)b->data[b->off + i] != pattern_at(sv->seed, pos + i))
                    sv->mismatches++;
            pos += (uint64_t)n;
            coro_buf_put(sv->s, b);
        }
        break;
    case SRV_DEAF:
        coro_event_wait(&sv->release, "deaf", 10000);
        break;
    case SRV_SEND:
        while (pos < sv->send_len) {
            b = coro_buf_get(sv->s, 0);
            ck_assert_ptr_nonnull(b);
            b->len = (uint32_t)(sv->send_len - pos < b->cap ? sv->send_len - pos : b->cap);
            pattern_fill(sv->seed, pos, b->data, b->len);
            pos += b->len;
            if (coro_write(&c->st, b, 5000) < 0)
                break;
        }
        coro_shutdown(&c->st);
        while ((n = coro_read(&c->st, &b, 5000)) > 0)
            coro_buf_put(sv->s, b);
        break;
    case SRV_RESET: {
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };

        n = coro_read(&c->st, &b, 5000);
        if (n > 0)
            coro_buf_put(sv->s, b);
        fd = coro_stream_fd(&c->st);
        ck_assert_int_ge(fd, 0);
        ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
        break;
    }
    }
    sv->read_end = (int)n;
    if (n == UV_EOF && sv->mode != SRV_RESET) {   /* SRV_SEND: shuts down again, a no-op */
        coro_flush(&c->st, 5000);
        coro_shutdown(&c->st);
    }
    coro_stream_close(&c->st);   /* returns once closed: the counters are final */
    sv->bytes_in += c->st.bytes_in;
    sv->bytes_out += c->st.bytes_out;
    sv->finished++;
    free(c);
}

static void on_connection(uv_poll_t *p, int status, int events)
{
    struct srv *sv = p->data;
    struct sconn *c;
    int fd;

    (void)events;
    ck_assert_int_eq(status, 0);
    while ((fd = accept4(sv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        c = calloc(1, sizeof(*c));
        ck_assert_ptr_nonnull(c);
        c->srv = sv;
        ck_assert_int_eq(coro_stream_init(sv->s, &c->st), 0);
        ck_assert_int_eq(coro_stream_open(&c->st, fd), 0);
        ck_assert_int_eq(coro_spawn(sv->s, serve, c, "serve", NULL), 0);
        sv->accepted++;
    }
    ck_assert(errno == EAGAIN || errno == EWOULDBLOCK);
}

static void srv_start(struct srv *sv, struct env *e, enum srv_mode mode)
{
    socklen_t len = sizeof(sv->addr);

    memset(sv, 0, sizeof(*sv));
    sv->s = e->s;
    sv->mode = mode;
    coro_event_init(&sv->release);
    ck_assert_int_eq(uv_ip4_addr("127.0.0.1", 0, &sv->addr), 0);
    sv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(sv->lfd, 0);
    ck_assert_int_eq(bind(sv->lfd, (const struct sockaddr *)&sv->addr, sizeof(sv->addr)), 0);
    ck_assert_int_eq(listen(sv->lfd, 128), 0);
    ck_assert_int_eq(getsockname(sv->lfd, (struct sockaddr *)&sv->addr, &len), 0);
    ck_assert_uint_ne(ntohs(sv->addr.sin_port), 0);
    ck_assert_int_eq(uv_poll_init_socket(&e->loop, &sv->poll, sv->lfd), 0);
    sv->poll.data = sv;
    ck_assert_int_eq(uv_poll_start(&sv->poll, UV_READABLE, on_connection), 0);
}

static void srv_stop(struct srv *sv)
{
    if (!uv_is_closing((uv_handle_t *)&sv->poll)) {
        uv_close((uv_handle_t *)&sv->poll, NULL);
        close(sv->lfd);
    }
}

/* ------------------------------------------------------------------ client helpers */

/* A heap stream connected to <addr>; <*err> says how the connect went. Close it with
 * client_close() whatever <*err> is. */
static struct coro_stream *client_open(const struct sockaddr_in *addr, int64_t timeout_ms,
                                       int *err)
{
    struct coro_stream *st = calloc(1, sizeof(*st));

    ck_assert_ptr_nonnull(st);
    ck_assert_int_eq(coro_stream_init(coro_sched_current(), st), 0);
    *err = coro_connect(st, (const struct sockaddr *)addr, timeout_ms);
    return st;
}

static void client_close(struct coro_stream *st)
{
    coro_stream_close(st);
    free(st);
}

/* ------------------------------------------------------------------ echo */

struct echo_group;

struct echo_ctx {
    struct echo_group  *g;
    struct coro_stream *st;
    uint64_t            seed;
    size_t              total;        /* bytes to send and get back */
    size_t              sent, got;
    uint64_t            sum_out, sum_in;
    size_t              mismatches;
    struct coro_event   echoed;       /* the reader got it all: the writer may shut down */
    struct coro_event   writer_done;  /* the writer no longer touches the stream */
    int                 connect_err;
    int                 write_err;
    int                 shutdown_err;
    ssize_t             read_end;     /* the read after the last byte: UV_EOF */
    uint64_t            bytes_in, bytes_out;
};

struct echo_group {
    struct srv        *sv;
    struct echo_ctx   *c;
    unsigned           n;
    unsigned           echoed;       /* clients that got everything back */
    unsigned           finished;
    unsigned           idle_bufs;    /* coro_buf_outstanding() while all sat idle */
    unsigned           idle_open;    /* connections open at that moment (server side) */
    struct coro_event  go;           /* all echoed and checked: shut down now */
};

static void echo_writer(void *arg)
{
    struct echo_ctx *c = arg;
    struct coro_sched *s = coro_sched_current();
    uint64_t rnd = c->seed;
    int err = 0;

    while (c->sent < c->total && err == 0) {
        struct coro_buf *b = coro_buf_get(s, 0);
        size_t n;

        ck_assert_ptr_nonnull(b);
        rnd = splitmix(rnd);
        n = 1 + rnd % b->cap;                         /* pieces of 1..buf_size bytes */
        if (n > c->total - c->sent)
            n = c->total - c->sent;
        pattern_fill(c->seed, c->sent, b->data, n);
        b->len = (uint32_t)n;
        c->sum_out = fnv1a(c->sum_out, b->data, n);
        c->sent += n;
        err = coro_write(c->st, b, 5000);
    }
    c->write_err = err;
    if (err == 0)
        coro_event_wait(&c->echoed, "wait echo", 5000);
    c->shutdown_err = coro_shutdown(c->st);   /* the server sees EOF and shuts down too */
    coro_event_signal(&c->writer_done);
}

static void echo_client(void *arg)     /* coroutine: connects, spawns the writer, reads */
{
    struct echo_ctx *c = arg;
    struct echo_group *g = c->g;
    struct coro_sched *s = coro_sched_current();
    struct coro_buf *b = NULL;
    ssize_t n;
    size_t i;

    c->sum_out = c->sum_in = FNV_INIT;
    coro_event_init(&c->echoed);
    coro_event_init(&c->writer_done);
    c->st = client_open(&g->sv->addr, 2000, &c->connect_err);
    if (c->connect_err == 0) {
        ck_assert_int_eq(coro_spawn(s, echo_writer, c, "echo writer", NULL), 0);
        while (c->got < c->total && (n = coro_read(c->st, &b, 5000)) > 0) {
            const char *p = b->data + b->off;

            for (i = 0; i < (size_t)n; i++)
                if ((unsigned char)p[i] != pattern_at(c->seed, c->got + i))
                    c->mismatches++;
            c->sum_in = fnv1a(c->sum_in, p, (size_t)n);
            c->got += (size_t)n;
            coro_buf_put(s, b);
        }
        /* Everyone idles at this barrier with every connection open: nothing is in flight,
         * so no buffer may be held (reading holds none until data arrives). */
        if (++g->echoed == g->n) {
            coro_sleep(50);           /* the last queued writes go out meanwhile */
            g->idle_bufs = coro_buf_outstanding(s);
            g->idle_open = g->sv->accepted - g->sv->finished;
            coro_event_broadcast(&g->go);
        } else {
            coro_event_wait(&g->go, "barrier", 10000);
        }
        coro_event_signal(&c->echoed);
        c->read_end = coro_read(c->st, &b, 5000);
        if (c->read_end > 0)
            coro_buf_put(s, b);       /* counted as a failure below: more than was sent */
        coro_event_wait(&c->writer_done, "writer", 10000);
    }
    coro_stream_close(c->st);
    c->bytes_in = c->st->bytes_in;    /* final once closed */
    c->bytes_out = c->st->bytes_out;
    free(c->st);
    c->st = NULL;
    if (++g->finished == g->n)
        srv_stop(g->sv);
}

static void echo_run(int model, unsigned nconn, size_t (*size_of)(unsigned i))
{
    struct env e;
    struct srv sv;
    struct echo_group g = { .n = nconn };
    uint64_t total = 0;
    unsigned i;

    env_init(&e, model);
    srv_start(&sv, &e, SRV_ECHO);
    g.sv = &sv;
    g.c = calloc(nconn, sizeof(*g.c));
    ck_assert_ptr_nonnull(g.c);
    coro_event_init(&g.go);
    for (i = 0; i < nconn; i++) {
        g.c[i].g = &g;
        g.c[i].seed = 1000 + i;
        g.c[i].total = size_of(i);
        total += g.c[i].total;
        ck_assert_int_eq(coro_spawn(e.s, echo_client, &g.c[i], "echo client", NULL), 0);
    }
    env_run(&e);
    for (i = 0; i < nconn; i++) {
        struct echo_ctx *c = &g.c[i];

        ck_assert_int_eq(c->connect_err, 0);
        ck_assert_int_eq(c->write_err, 0);
        ck_assert_int_eq(c->shutdown_err, 0);
        ck_assert_uint_eq(c->sent, c->total);
        ck_assert_uint_eq(c->got, c->total);
        ck_assert_uint_eq(c->mismatches, 0);
        ck_assert_uint_eq(c->sum_in, c->sum_out);
        ck_assert_int_eq(c->read_end, UV_EOF);
        ck_assert_uint_eq(c->bytes_out, c->total);
        ck_assert_uint_eq(c->bytes_in, c->total);
    }
    ck_assert_uint_eq(g.finished, nconn);
    ck_assert_uint_eq(g.idle_open, nconn);
    ck_assert_uint_eq(g.idle_bufs, 0);
    ck_assert_uint_eq(sv.accepted, nconn);
    ck_assert_uint_eq(sv.finished, nconn);
    ck_assert_int_eq(sv.read_end, UV_EOF);
    ck_assert_uint_eq(sv.bytes_in, total);
    ck_assert_uint_eq(sv.bytes_out, total);
    ck_assert_uint_eq(coro_buf_outstanding(e.s), 0);
    free(g.c);
    env_deinit(&e);
}

static size_t ten_mib(unsigned i)
{
    return 10 * MiB;
}

/* Different sizes, none a multiple of the buffer size. */
static size_t varied(unsigned i)
{
    return 64 * 1024 + (size_t)i * 4099 + 1;
}

START_TEST(test_echo_10mib_round_trip)
{
    echo_run(_i, 1, ten_mib);
}
END_TEST

START_TEST(test_echo_50_concurrent)
{
    echo_run(_i, 50, varied);
}
END_TEST

/* ------------------------------------------------------------------ connect errors */

struct conn_ctx {
    struct sockaddr_in addr;
    int                err;
    uint64_t           ms;
};

static void connect_once(void *arg)
{
    struct conn_ctx *c = arg;
    struct coro_stream *st;
    uint64_t t0 = uv_hrtime();

    st = client_open(&c->addr, 200, &c->err);
    c->ms = ms_since(t0);
    client_close(st);   /* frees the connect request too (ASan's leak check says so) */
}

START_TEST(test_connect_refused)
{
    struct env e;
    struct conn_ctx c;
    socklen_t len = sizeof(c.addr);
    int fd;

    /* A port that was free a moment ago and that nobody listens on. */
    memset(&c, 0, sizeof(c));
    c.addr.sin_family = AF_INET;
    c.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&c.addr, sizeof(c.addr)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&c.addr, &len), 0);
    close(fd);

    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, connect_once, &c, "connect", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.err, UV_ECONNREFUSED);
    ck_assert_uint_lt(c.ms, 1000);
    env_deinit(&e);
}
END_TEST

START_TEST(test_connect_timeout)
{
    struct env e;
    struct conn_ctx c;
    socklen_t len = sizeof(c.addr);
    int lfd, fill[4], i;

    /* A blackhole: a listener that never accepts, its backlog full, so further SYNs are
     * dropped and connects hang until the SYN retransmit gives up (seconds). */
    memset(&c, 0, sizeof(c));
    c.addr.sin_family = AF_INET;
    c.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(bind(lfd, (struct sockaddr *)&c.addr, sizeof(c.addr)), 0);
    ck_assert_int_eq(listen(lfd, 0), 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&c.addr, &len), 0);
    for (i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        ck_assert_int_ge(fill[i], 0);
        if (connect(fill[i], (struct sockaddr *)&c.addr, sizeof(c.addr)) < 0)
            ck_assert_int_eq(errno, EINPROGRESS);
    }

    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, connect_once, &c, "connect", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.err, UV_ETIMEDOUT);
    ck_assert_uint_ge(c.ms, 150);
    ck_assert_uint_le(c.ms, 2000);
    env_deinit(&e);
    for (i = 0; i < 4; i++)
        close(fill[i]);
    close(lfd);
}
END_TEST

/* ------------------------------------------------------------------ read: timeout, cancel */

struct read_ctx {
    struct srv         *sv;
    struct coro_stream *st;
    struct coro        *reader;
    int                 connect_err;
    ssize_t             res[2];
    int                 cancelled;
    uint64_t            ms;
    int                 handle_found[2];   /* close_wakes_reader: before, after the close */
};

static void read_timeout_client(void *arg)
{
    struct read_ctx *c = arg;
    struct coro_buf *b = NULL;
    struct coro_stream *st = client_open(&c->sv->addr, 2000, &c->connect_err);
    uint64_t t0 = uv_hrtime();

    c->res[0] = coro_read(st, &b, 100);     /* the server never sends */
    c->ms = ms_since(t0);
    c->res[1] = coro_stream_readable(st);
    client_close(st);
    srv_stop(c->sv);
}

START_TEST(test_read_timeout)
{
    struct env e;
    struct srv sv;
    struct read_ctx c = { .sv = &sv };

    env_init(&e, _i);
    srv_start(&sv, &e, SRV_SINK);
    ck_assert_int_eq(coro_spawn(e.s, read_timeout_client, &c, "reader", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.connect_err, 0);
    ck_assert_int_eq(c.res[0], UV_ETIMEDOUT);
    ck_assert_int_eq(c.res[1], 0);
    ck_assert_uint_ge(c.ms, 80);
    ck_assert_uint_lt(c.ms, 1000);
    ck_assert_uint_eq(sv.finished, 1);
    ck_assert_int_eq(sv.read_end, UV_EOF);
    env_deinit(&e);
}
END_TEST

static void cancel_reader(void *arg)
{
    struct read_ctx *c = arg;
    struct coro_buf *b = NULL;
    struct coro_stream *st = client_open(&c->sv->addr, 2000, &c->connect_err);
    uint64_t t0 = uv_hrtime();

    c->reader = coro_self();
    c->res[0] = coro_read(st, &b, 5000);
    c->ms = ms_since(t0);
    c->reader = NULL;
    c->cancelled = coro_is_cancelled(coro_self());
    c->res[1] = coro_read(st, &b, 30);      /* the cancel was used up; the stream still works */
    client_close(st);
    srv_stop(c->sv);
}

static void canceller(void *arg)
{
    struct read_ctx *c = arg;

    while (!c->reader)
        coro_sleep(5);
    coro_sleep(20);                         /* well into its read */
    coro_cancel(c->reader);
}

START_TEST(test_read_cancel)
{
    struct env e;
    struct srv sv;
    struct read_ctx c = { .sv = &sv };

    env_init(&e, _i);
    srv_start(&sv, &e, SRV_SINK);
    ck_assert_int_eq(coro_spawn(e.s, cancel_reader, &c, "reader", NULL), 0);
    ck_assert_int_eq(coro_spawn(e.s, canceller, &c, "canceller", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.connect_err, 0);
    ck_assert_int_eq(c.res[0], UV_ECANCELED);
    ck_assert_uint_lt(c.ms, 1000);
    ck_assert_int_eq(c.cancelled, 1);
    ck_assert_int_eq(c.res[1], UV_ETIMEDOUT);
    ck_assert_uint_eq(sv.finished, 1);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ close wakes a reader */

/* 1 when <fd> is an open descriptor. */
static int fd_open(int fd)
{
    return fd >= 0 && fcntl(fd, F_GETFD) >= 0;
}

static void close_reader(void *arg)
{
    struct read_ctx *c = arg;
    struct coro_buf *b = NULL;
    uint64_t t0;

    c->st = client_open(&c->sv->addr, 2000, &c->connect_err);
    t0 = uv_hrtime();
    c->reader = coro_self();
    c->res[0] = coro_read(c->st, &b, 5000);   /* the closer frees the stream, not us */
    c->ms = ms_since(t0);
    c->reader = NULL;
}

static void closer(void *arg)
{
    struct read_ctx *c = arg;
    int fd;

    while (!c->reader)
        coro_sleep(5);
    coro_sleep(20);
    fd = coro_stream_fd(c->st);
    c->handle_found[0] = fd_open(fd);
    coro_stream_close(c->st);
    /* The close is complete when it returns: the socket is closed, the stream is done
     * with (the reader, woken, will not touch it again). */
    c->handle_found[1] = fd_open(fd) || coro_stream_fd(c->st) != -1;
    free(c->st);
    coro_yield();
    c->res[1] = c->reader == NULL;    /* the reader ran right after, with UV_ECANCELED */
    c->st = NULL;
    srv_stop(c->sv);
}

START_TEST(test_close_wakes_reader)
{
    struct env e;
    struct srv sv;
    struct read_ctx c = { .sv = &sv };

    env_init(&e, _i);
    srv_start(&sv, &e, SRV_SINK);
    ck_assert_int_eq(coro_spawn(e.s, close_reader, &c, "reader", NULL), 0);
    ck_assert_int_eq(coro_spawn(e.s, closer, &c, "closer", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.connect_err, 0);
    ck_assert_int_eq(c.res[0], UV_ECANCELED);
    ck_assert_uint_lt(c.ms, 1000);
    ck_assert_int_eq(c.handle_found[0], 1);
    ck_assert_int_eq(c.handle_found[1], 0);
    ck_assert_int_eq(c.res[1], 1);
    ck_assert_uint_eq(sv.finished, 1);
    env_deinit(&e);
}
END_TEST

/* A relay's situation: coroutine B, woken by I/O on its own connection X (so it runs in
 * the check phase, right before the loop closes handles), closes connection Y with an
 * on_closed that frees Y, while A is parked reading Y and W parked writing to Y (its peer
 * never reads). The close callback frees Y before A and W run again: they must come back
 * with UV_ECANCELED without touching Y (ASan watches). */
struct gone_ctx {
    struct srv         *deaf, *echo;
    struct coro_stream *y;
    size_t              wq_high;
    int                 connect_err[2];
    ssize_t             read_res;
    int                 write_res;
    int                 readers_done;   /* A and W returned */
    ssize_t             x_res;
};

static void gone_reader(void *arg)
{
    struct gone_ctx *c = arg;
    struct coro_buf *b = NULL;

    c->read_res = coro_read(c->y, &b, 5000);   /* <y> may be gone when this returns */
    c->readers_done++;
}

static void gone_writer(void *arg)
{
    struct gone_ctx *c = arg;
    struct coro_sched *s = coro_sched_current();
    struct coro_stream *y = c->y;
    int err = 0;

    while (err == 0) {
        struct coro_buf *b = coro_buf_get(s, BIG_WRITE);

        ck_assert_ptr_nonnull(b);
        memset(b->data, 'y', BIG_WRITE);
        b->len = BIG_WRITE;
        err = coro_write(y, b, 5000);             /* <y> may be gone when this fails */
    }
    c->write_res = err;
    c->readers_done++;
}

static void gone_closer(void *arg)
{
    struct gone_ctx *c = arg;
    struct coro_sched *s = coro_sched_current();
    struct coro_stream *x;
    struct coro_buf *b = NULL;

    c->y = client_open(&c->deaf->addr, 2000, &c->connect_err[0]);
    c->wq_high = c->y->wq_high;
    x = client_open(&c->echo->addr, 2000, &c->connect_err[1]);
    ck_assert_int_eq(coro_spawn(s, gone_reader, c, "reader", NULL), 0);
    ck_assert_int_eq(coro_spawn(s, gone_writer, c, "writer", NULL), 0);
    while (coro_stream_queued(c->y) <= c->wq_high)   /* W is parked in its write */
        coro_sleep(5);
    ck_assert_int_eq(coro_write_copy(x, "!", 1, 1000), 0);
    c->x_res = coro_read(x, &b, 1000);          /* resumed from the poll phase */
    if (c->x_res > 0)
        coro_buf_put(s, b);
    coro_stream_close(c->y);
    free(c->y);                                 /* the close returned: it may go */
    c->y = NULL;
    coro_event_signal(&c->deaf->release);
    client_close(x);
    srv_stop(c->deaf);
    srv_stop(c->echo);
}

START_TEST(test_close_frees_under_parked_reader_writer)
{
    struct env e;
    struct srv deaf, echo;
    struct gone_ctx c = { .deaf = &deaf, .echo = &echo };

    env_init(&e, _i);
    srv_start(&deaf, &e, SRV_DEAF);
    srv_start(&echo, &e, SRV_ECHO);
    ck_assert_int_eq(coro_spawn(e.s, gone_closer, &c, "closer", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.connect_err[0], 0);
    ck_assert_int_eq(c.connect_err[1], 0);
    ck_assert_int_eq(c.x_res, 1);
    ck_assert_int_eq(c.read_res, UV_ECANCELED);
    ck_assert_int_eq(c.write_res, UV_ECANCELED);
    ck_assert_int_eq(c.readers_done, 2);
    ck_assert_uint_eq(deaf.finished, 1);
    ck_assert_uint_eq(echo.finished, 1);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ writing */

struct write_ctx {
    struct srv *sv;
    int         connect_err;
    int         err;            /* how the write loop ended */
    int         err_again;      /* a write after that */
    ssize_t     read_res;
    unsigned    writes;
    size_t      max_queued;     /* coro_stream_queued() after any write returned */
    size_t      wq_high;
    uint64_t    ms;             /* the write that gave up */
    uint64_t    bytes_out;
};

static void backpressure_writer(void *arg)
{
    struct write_ctx *c = arg;
    struct coro_sched *s = coro_sched_current();
    struct coro_stream *st = client_open(&c->sv->addr, 2000, &c->connect_err);
    uint64_t t0 = 0;
    size_t q;

    c->wq_high = st->wq_high;
    /* 4096 writes = 256 MiB: far more than any socket buffer; the loop ends long before. */
    while (c->connect_err == 0 && c->err == 0 && c->writes < 4096) {
        struct coro_buf *b = coro_buf_get(s, BIG_WRITE);

        ck_assert_ptr_nonnull(b);
        memset(b->data, 'x', BIG_WRITE);
        b->len = BIG_WRITE;
        t0 = uv_hrtime();
        c->err = coro_write(st, b, 300);
        c->writes++;
        q = coro_stream_queued(st);
        if (q > c->max_queued)
            c->max_queued = q;
    }
    c->ms = ms_since(t0);
    coro_event_signal(&c->sv->release);
    client_close(st);                 /* cancels the queued writes; their buffers go back */
    srv_stop(c->sv);
}

START_TEST(test_write_backpressure)
{
    struct env e;
    struct srv sv;
    struct write_ctx c = { .sv = &sv };

    env_init(&e, _i);
    srv_start(&sv, &e, SRV_DEAF);
    ck_assert_int_eq(coro_spawn(e.s, backpressure_writer, &c, "writer", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.connect_err, 0);
    ck_assert_int_eq(c.err, UV_ETIMEDOUT);
    ck_assert_uint_ge(c.ms, 250);
    ck_assert_uint_lt(c.ms, 2000);
    ck_assert_uint_gt(c.writes, 1);
    ck_assert_uint_gt(c.max_queued, 0);
    ck_assert_uint_le(c.max_queued, c.wq_high + BIG_WRITE);
    ck_assert_uint_eq(sv.finished, 1);
    env_deinit(&e);
}
END_TEST

static void reset_writer(void *arg)
{
    struct write_ctx *c = arg;
    struct coro_stream *st = client_open(&c->sv->addr, 2000, &c->connect_err);
    static const char block[16384];
    struct coro_buf *b = NULL;

    while (c->connect_err == 0 && c->err == 0 && c->writes < 100000) {
        c->err = coro_write_copy(st, block, sizeof(block), 1000);
        c->writes++;
    }
    c->err_again = coro_write_copy(st, block, sizeof(block), 1000);
    c->read_res = coro_read(st, &b, 1000);
    if (c->read_res > 0)
        coro_buf_put(coro_sched_current(), b);
    client_close(st);
    srv_stop(c->sv);
}

START_TEST(test_peer_reset)
{
    struct env e;
    struct srv sv;
    struct write_ctx c = { .sv = &sv };

    env_init(&e, _i);
    srv_start(&sv, &e, SRV_RESET);
    ck_assert_int_eq(coro_spawn(e.s, reset_writer, &c, "writer", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.connect_err, 0);
    ck_assert_msg(c.err == UV_EPIPE || c.err == UV_ECONNRESET, "write: %s", uv_strerror(c.err));
    ck_assert_msg(c.err_again == UV_EPIPE || c.err_again == UV_ECONNRESET, "again: %s",
                  uv_strerror(c.err_again));
    ck_assert_msg(c.read_res == UV_EOF || (c.read_res < 0 && c.read_res != UV_ETIMEDOUT),
                  "read: %zd", c.read_res);
    ck_assert_uint_eq(sv.finished, 1);
    env_deinit(&e);
}
END_TEST

/* The coroutine watching its stream (so it is the stream's writer) closes it with a
 * shutdown still pending: libuv cancels the shutdown just before the close callback, the
 * cancellation wakes the writer, and the close must return all the same. */
static void shut_closer(void *arg)
{
    struct write_ctx *c = arg;
    struct coro_stream *st = client_open(&c->sv->addr, 2000, &c->connect_err);

    coro_stream_watch(st, coro_self());
    c->err = coro_shutdown(st);      /* done at the next poll at the earliest */
    coro_stream_close(st);     /* so this cancels it */
    c->writes = 1;                   /* the close returned */
    free(st);
    srv_stop(c->sv);
}

START_TEST(test_close_cancels_shutdown)
{
    struct env e;
    struct srv sv;
    struct write_ctx c = { .sv = &sv };

    env_init(&e, _i);
    srv_start(&sv, &e, SRV_SINK);
    ck_assert_int_eq(coro_spawn(e.s, shut_closer, &c, "closer", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.connect_err, 0);
    ck_assert_int_eq(c.err, 0);
    ck_assert_uint_eq(c.writes, 1);
    env_deinit(&e);
}
END_TEST

static void copy_writer(void *arg)
{
    struct write_ctx *c = arg;
    struct coro_stream *st = client_open(&c->sv->addr, 2000, &c->connect_err);
    struct coro_buf *b = NULL;
    char *block = malloc(MiB);

    ck_assert_ptr_nonnull(block);
    pattern_fill(c->sv->seed, 0, block, MiB);
    c->err = coro_write_copy(st, block, MiB, 5000);
    free(block);                       /* copied: ours again as soon as the call returns */
    c->err_again = coro_shutdown(st);
    c->read_res = coro_read(st, &b, 5000);   /* EOF once the server has read it all */
    if (c->read_res > 0)
        coro_buf_put(coro_sched_current(), b);
    coro_stream_close(st);
    c->bytes_out = st->bytes_out;
    free(st);
    srv_stop(c->sv);
}

START_TEST(test_write_copy_1mib)
{
    struct env e;
    struct srv sv;
    struct write_ctx c = { .sv = &sv };

    env_init(&e, _i);
    srv_start(&sv, &e, SRV_SINK);
    sv.seed = 77;
    ck_assert_int_eq(coro_spawn(e.s, copy_writer, &c, "writer", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.connect_err, 0);
    ck_assert_int_eq(c.err, 0);
    ck_assert_int_eq(c.err_again, 0);
    ck_assert_int_eq(c.read_res, UV_EOF);
    ck_assert_uint_eq(c.bytes_out, MiB);
    ck_assert_uint_eq(sv.finished, 1);
    ck_assert_int_eq(sv.read_end, UV_EOF);
    ck_assert_uint_eq(sv.bytes_in, MiB);
    ck_assert_uint_eq(sv.mismatches, 0);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ read-ahead bound */

struct slow_ctx {
    struct srv *sv;
    int         connect_err;
    unsigned    held_chunks;     /* queued in the stream while the consumer slept */
    uint64_t    held_bytes_in;   /* bytes taken from the socket by then */
    size_t      buf_size;
    size_t      got, mismatches;
    ssize_t     read_end;
};

static void slow_reader(void *arg)
{
    struct slow_ctx *c = arg;
    struct coro_sched *s = coro_sched_current();
    struct coro_stream *st = client_open(&c->sv->addr, 2000, &c->connect_err);
    struct coro_buf *b = NULL, *first = NULL;
    ssize_t n;
    size_t i;

    c->buf_size = coro_buf_size(s);
    n = coro_read(st, &first, 5000);
    ck_assert_int_gt(n, 0);
    coro_sleep(100);                         /* a slow consumer: the peer keeps sending */
    c->held_chunks = st->nchunks;
    c->held_bytes_in = st->bytes_in;
    for (;;) {
        if (first) {
            b = first;
            first = NULL;
        } else if ((n = coro_read(st, &b, 5000)) <= 0) {
            break;
        }
        n = (ssize_t)(b->len - b->off);
        for (i = 0; i < (size_t)n; i++)
            if ((unsigned char)b->data[b->off + i] != pattern_at(c->sv->seed, c->got + i))
                c->mismatches++;
        c->got += (size_t)n;
        coro_buf_put(s, b);
    }
    c->read_end = n;
    client_close(st);
    srv_stop(c->sv);
}

START_TEST(test_slow_reader_bounded_read_ahead)
{
    struct env e;
    struct srv sv;
    struct slow_ctx c = { .sv = &sv };

    env_init(&e, _i);
    srv_start(&sv, &e, SRV_SEND);
    sv.seed = 5;
    sv.send_len = 2 * MiB;
    ck_assert_int_eq(coro_spawn(e.s, slow_reader, &c, "slow reader", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(c.connect_err, 0);
    /* One chunk in the consumer's hands, at most two read ahead: TCP holds the rest. */
    ck_assert_uint_le(c.held_chunks, 2);
    ck_assert_uint_le(c.held_bytes_in, 3 * c.buf_size);
    ck_assert_uint_eq(c.got, 2 * MiB);
    ck_assert_uint_eq(c.mismatches, 0);
    ck_assert_int_eq(c.read_end, UV_EOF);
    ck_assert_uint_eq(sv.finished, 1);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ buffer pool */

#define BURST 1000

static void burst_main(void *arg)
{
    struct env *e = arg;
    struct coro_buf *b[BURST];
    unsigned i;

    for (i = 0; i < BURST; i++) {
        b[i] = coro_buf_get(e->s, 100);
        ck_assert_ptr_nonnull(b[i]);
    }
    for (i = 0; i < BURST; i++)
        coro_buf_put(e->s, b[i]);
    ck_assert_uint_eq(coro_buf_pooled(e->s), BURST);     /* a burst is kept for the next */
    ck_assert_uint_eq(coro_buf_trims(e->s), 0);
    coro_sleep(1300);                                   /* a few decay ticks */
}

/* After a burst the pool decays to its floor of 8 buffers and has the heap trimmed once
 * (on the thread pool: the loop, which waits for it, ends only once the trim is done). */
START_TEST(test_pool_decay_and_trim)
{
    struct env e;

    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, burst_main, &e, "burst", NULL), 0);
    env_run(&e);
    ck_assert_uint_le(coro_buf_pooled(e.s), 8);
    ck_assert_uint_eq(coro_buf_trims(e.s), 1);
    env_deinit(&e);
}
END_TEST

#define CROWD 300

static void crowd_member(void *arg)
{
    (void)arg;
    coro_sleep(10);
}

static void crowd_main(void *arg)
{
    struct env *e = arg;
    unsigned i;

    /* The pool in use, as with any stream, but no churn: one buffer, given back. */
    coro_buf_put(e->s, coro_buf_get(e->s, 0));
    for (i = 0; i < CROWD; i++)
        ck_assert_int_eq(coro_spawn(e->s, crowd_member, NULL, "member", NULL), 0);
    coro_sleep(1300);               /* the crowd ends, then a few decay ticks */
}

/* A burst of coroutines that ends (300 alive, then 1) owes a heap trim, with no buffer
 * churn at all: their connections' heap blocks are free and would stay resident. */
START_TEST(test_trim_after_coroutine_burst)
{
    struct env e;

    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, crowd_main, &e, "crowd", NULL), 0);
    env_run(&e);
    ck_assert_uint_eq(coro_buf_trims(e.s), 1);
    env_deinit(&e);
}
END_TEST

Suite *coro_io_suite(void)
{
    Suite *s = suite_create("coro_io");
    TCase *echo = tcase_create("echo");
    TCase *err = tcase_create("errors");

    tcase_set_timeout(echo, 30);
    tcase_add_loop_test(echo, test_echo_10mib_round_trip, 0, 2);
    tcase_add_loop_test(echo, test_echo_50_concurrent, 0, 2);
    tcase_add_loop_test(echo, test_write_copy_1mib, 0, 2);
    tcase_add_loop_test(echo, test_slow_reader_bounded_read_ahead, 0, 2);
    tcase_add_loop_test(echo, test_pool_decay_and_trim, 0, 2);
    tcase_add_loop_test(echo, test_trim_after_coroutine_burst, 0, 2);
    suite_add_tcase(s, echo);

    tcase_set_timeout(err, 30);
    tcase_add_loop_test(err, test_connect_refused, 0, 2);
    tcase_add_loop_test(err, test_connect_timeout, 0, 2);
    tcase_add_loop_test(err, test_read_timeout, 0, 2);
    tcase_add_loop_test(err, test_read_cancel, 0, 2);
    tcase_add_loop_test(err, test_close_wakes_reader, 0, 2);
    tcase_add_loop_test(err, test_close_frees_under_parked_reader_writer, 0, 2);
    tcase_add_loop_test(err, test_write_backpressure, 0, 2);
    tcase_add_loop_test(err, test_peer_reset, 0, 2);
    tcase_add_loop_test(err, test_close_cancels_shutdown, 0, 2);
    suite_add_tcase(s, err);
    return s;
}
