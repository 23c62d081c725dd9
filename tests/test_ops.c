/* tests/test_ops.c — operations: the daemon under a service manager and an operator.
 *
 *   notify      sd_notify over a datagram socket the test binds (abstract name, and a
 *               path): READY, RELOADING + MONOTONIC_USEC then READY, STATUS, WATCHDOG
 *               heartbeats that stop while a worker is stalled through the test hook
 *               (CG_TEST_HOOKS=1, `debug stall-worker`) and resume after, STOPPING;
 *   reload      under continuous closed-loop load (threads here with checksummed
 *               payloads, and corogate-loadgen when built) the upstream servers move from
 *               backend A to backend B and the rates change: no failed connect, no lost
 *               or corrupted byte, established connections stay on A, new ones go to B;
 *               an invalid file keeps the old configuration serving, with file:line
 *               errors in the log and the failure in `show info` and the metrics;
 *               listeners added and removed (the one kept keeps its sockets);
 *   drain       SIGTERM: websocket clients get 1001 spread over drain_spread, a TCP
 *               connection still relays, the daemon exits 0 well within drain_timeout;
 *   install     `make install DESTDIR=...` lays out the tree (files and modes), keeps an
 *               existing config; `systemd-analyze verify` accepts the installed unit.
 *
 * Every daemon is stopped with SIGTERM expecting exit status 0 (under ASan: no leak, so
 * every generation was freed). Failure messages end with the daemon's log tail.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

#define READY_MS   8000
#define STOP_MS    8000
#define IO_MS      5000
#define SWITCH_MS  5000

static const char *strerr(long err)
{
    return err < 0 ? strerror((int)-err) : "no error";
}

/* ------------------------------------------------------------------ the notify socket */

#define NMSG_MAX 4096

struct nmsg {
    int64_t at;                 /* th_now_ms() when read */
    char    text[512];
};

/* The service manager's end: a datagram socket, and every datagram read so far. */
struct nsock {
    int          fd;
    char         env[128];      /* what NOTIFY_SOCKET says */
    struct nmsg *msgs;
    unsigned     n;
};

static void nsock_open(struct nsock *ns, int abstract)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    socklen_t len;
    int on = 1;

    memset(ns, 0, sizeof(*ns));
    ns->msgs = calloc(NMSG_MAX, sizeof(*ns->msgs));
    ck_assert_ptr_nonnull(ns->msgs);
    ns->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(ns->fd, 0);
    if (abstract) {
        snprintf(ns->env, sizeof(ns->env), "@corogate-test-%d-%lld", (int)getpid(),
                 (long long)th_now_ms());
        memcpy(sun.sun_path, ns->env, strlen(ns->env));
        sun.sun_path[0] = '\0';
        len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(ns->env));
    } else {
        snprintf(ns->env, sizeof(ns->env), "%s/notify-%d.sock", th_tmpdir(), (int)getpid());
        unlink(ns->env);
        ck_assert_uint_lt(strlen(ns->env), sizeof(sun.sun_path));
        memcpy(sun.sun_path, ns->env, strlen(ns->env) + 1);
        len = sizeof(sun);
    }
    ck_assert_msg(bind(ns->fd, (struct sockaddr *)&sun, len) == 0, "bind %s: %s", ns->env,
                  strerror(errno));
    /* systemd reads the sender's credentials too; ask for them like it does. */
    setsockopt(ns->fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on));
}

static void nsock_close(struct nsock *ns)
{
    if (ns->fd >= 0)
        close(ns->fd);
    ns->fd = -1;
    if (ns->env[0] == '/')
        unlink(ns->env);
    free(ns->msgs);
    ns->msgs = NULL;
}

/* Reads datagrams until <deadline> (th_now_ms() clock), or until one arrives when
 * <one> is set. Returns how many were read. */
static unsigned nsock_pump(struct nsock *ns, int64_t deadline, int one)
{
    unsigned got = 0;
    struct pollfd p = { .fd = ns->fd, .events = POLLIN };
    int64_t left;
    ssize_t r;

    for (;;) {
        left = deadline - th_now_ms();
        if (left < 0)
            left = 0;
        if (poll(&p, 1, (int)left) != 1)
            return got;
        if (ns->n >= NMSG_MAX)
            return got;
        r = recv(ns->fd, ns->msgs[ns->n].text, sizeof(ns->msgs[ns->n].text) - 1,
                 MSG_DONTWAIT);
        if (r < 0)
            continue;
        ns->msgs[ns->n].text[r] = '\0';
        ns->msgs[ns->n].at = th_now_ms();
        ns->n++;
        got++;
        if (one)
            return got;
    }
}

/* Index of the first message at or after <from> that contains <needle>, or -1. */
static int nsock_find(const struct nsock *ns, unsigned from, const char *needle)
{
    unsigned i;

    for (i = from; i < ns->n; i++)
        if (strstr(ns->msgs[i].text, needle))
            return (int)i;
    return -1;
}

/* Waits up to <timeout_ms> for a message at or after <from> containing <needle>. */
static int nsock_wait(struct nsock *ns, unsigned from, const char *needle, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    int i;

    for (;;) {
        i = nsock_find(ns, from, needle);
        if (i >= 0 || th_now_ms() >= deadline)
            return i;
        nsock_pump(ns, deadline, 1);
    }
}

/* Messages containing <needle> that arrived in [t0, t1). */
static unsigned nsock_count(const struct nsock *ns, const char *needle, int64_t t0, int64_t t1)
{
    unsigned i, n = 0;

    for (i = 0; i < ns->n; i++)
        if (ns->msgs[i].at >= t0 && ns->msgs[i].at < t1 && strstr(ns->msgs[i].text, needle))
            n++;
    return n;
}

/* The last messages, for failure output (static buffer). */
static const char *nsock_dump(const struct nsock *ns)
{
    static char out[3000];
    size_t len = 0;
    unsigned i = ns->n > 24 ? ns->n - 24 : 0;

    out[0] = '\0';
    for (; i < ns->n && len < sizeof(out) - 1; i++)
        len += (size_t)snprintf(out + len, sizeof(out) - len, "  +%lld ms: %s\n",
                                (long long)(ns->msgs[i].at - ns->msgs[0].at),
                                ns->msgs[i].text);
    return out;
}

/* ------------------------------------------------------------------ daemon helpers */

static int unix_connect(const char *path, int timeout_ms)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    int fd, err;

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* Sends one stats command and returns the whole answer (caller frees), never NULL. */
static char *stats_cmd(const char *path, const char *cmd)
{
    char line[512], *buf = malloc(1 << 20);
    size_t len = 0;
    ssize_t r;
    int fd, n;

    ck_assert_ptr_nonnull(buf);
    buf[0] = '\0';
    fd = unix_connect(path, IO_MS);
    if (fd < 0)
        return buf;
    n = snprintf(line, sizeof(line), "%s\n", cmd);
    if (th_send_all(fd, line, (size_t)n) == n) {
        shutdown(fd, SHUT_WR);
        while (len < (1 << 20) - 1 && (r = read(fd, buf + len, (1 << 20) - 1 - len)) > 0)
            len += (size_t)r;
        buf[len] = '\0';
    }
    close(fd);
    return buf;
}

/* Replaces the file at <path> with the text from <fmt>, atomically (a reload must never
 * read half a file). */
static void conf_rewrite(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void conf_rewrite(const char *path, const char *fmt, ...)
{
    char tmp[TH_PATH_MAX + 8];
    va_list ap;
    FILE *f;

    snprintf(tmp, sizeof(tmp), "%s.new", path);
    f = fopen(tmp, "w");
    ck_assert_ptr_nonnull(f);
    va_start(ap, fmt);
    vfprintf(f, fmt, ap);
    va_end(ap);
    ck_assert_int_eq(fclose(f), 0);
    ck_assert_int_eq(rename(tmp, path), 0);
}

/* Starts a daemon on the config written from <fmt> and waits until 127.0.0.1:<port>
 * accepts. Fails the test otherwise. */
static struct th_daemon *start_on(int port, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static struct th_daemon *start_on(int port, const char *fmt, ...)
{
    struct th_daemon_opts opts = { .ready_log = "ready: accepting connections" };
    char path[TH_PATH_MAX], text[8192];
    struct th_daemon *d;
    va_list ap;
    int err;

    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    ck_assert_int_eq(th_conf_write(path, sizeof(path), "%s", text), 0);
    d = th_daemon_start(path, &opts);
    ck_assert_msg(d != NULL, "cannot start %s: %s", th_daemon_path(), strerror(errno));
    err = th_daemon_wait_ready(d, port, READY_MS);
    TH_ASSERT(d, err == 0, "the daemon does not accept on port %d: %s", port,
              err == -ECHILD ? "it exited" : strerror(-err));
    return d;
}

static void stop_clean(struct th_daemon *d)
{
    char how[96];
    int st = th_daemon_stop(d, SIGTERM, STOP_MS);

    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "SIGTERM: %s, expected exit status 0", th_describe_status(st, how, sizeof(how)));
}

/* Sends SIGHUP and waits for generation <id> to be in force on every worker. */
static void reload_and_wait(struct th_daemon *d, unsigned id)
{
    char needle[96];
    int before;

    snprintf(needle, sizeof(needle), "reload: generation %u in force on every worker", id);
    before = th_daemon_log_count(d, needle);
    kill(d->pid, SIGHUP);
    TH_ASSERT(d, th_daemon_wait_log(d, needle, before + 1, SWITCH_MS) == 0,
              "no \"%s\" within %d ms", needle, SWITCH_MS);
}

/* One echo round trip of <len> pattern bytes (seed <seed>) on the open <fd>. Returns 0,
 * -EIO when what came back differs (checksums compared), or a negative errno. */
static int roundtrip_on(int fd, size_t len, uint64_t seed)
{
    char out[8192], in[8192];
    ssize_t n;

    ck_assert_uint_le(len, sizeof(out));
    th_fill_pattern(out, len, seed);
    n = th_send_all(fd, out, len);
    if (n < 0)
        return (int)n;
    n = th_recv_n(fd, in, len);
    if (n < 0)
        return (int)n;
    if ((size_t)n != len)
        return -EPIPE;
    return th_fnv1a64(TH_FNV_INIT, in, len) == th_fnv1a64(TH_FNV_INIT, out, len) ? 0 : -EIO;
}

/* ------------------------------------------------------------------ closed-loop load */

struct load {
    int              port;
    _Atomic int      stop;
    _Atomic unsigned connects;       /* churn: connections made */
    _Atomic unsigned connect_fails;  /* churn: connect() refused or timed out */
    _Atomic unsigned bad;            /* round trips that lost or corrupted bytes */
    _Atomic unsigned roundtrips;
    pthread_mutex_t  lock;
    char             first[256];     /* the first failure, for the message */
};

struct client {
    struct load     *ld;
    unsigned         id;
    int              fd;             /* persistent: its connection */
    _Atomic unsigned done;           /* round trips */
    pthread_t        th;
};

static void load_fail(struct load *ld, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void load_fail(struct load *ld, const char *fmt, ...)
{
    va_list ap;

    pthread_mutex_lock(&ld->lock);
    if (!ld->first[0]) {
        va_start(ap, fmt);
        vsnprintf(ld->first, sizeof(ld->first), fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&ld->lock);
}

/* A connection opened before the reload, echoing until told to stop. */
static void *persistent_main(void *arg)
{
    struct client *c = arg;
    uint64_t seed = (uint64_t)c->id << 32;
    int err;

    while (!atomic_load(&c->ld->stop)) {
        err = roundtrip_on(c->fd, 1 + (size_t)(seed % 4096), seed);
        if (err < 0) {
            atomic_fetch_add(&c->ld->bad, 1);
            load_fail(c->ld, "persistent %u, round trip %u: %s", c->id,
                      atomic_load(&c->done), strerr(err));
            return NULL;
        }
        atomic_fetch_add(&c->done, 1);
        atomic_fetch_add(&c->ld->roundtrips, 1);
        seed++;
    }
    return NULL;
}

/* New connections one after another: connect, one round trip, close. */
static void *churn_main(void *arg)
{
    struct client *c = arg;
    uint64_t seed = ((uint64_t)c->id << 32) | 0x80000000u;
    int fd, err;

    while (!atomic_load(&c->ld->stop)) {
        fd = th_connect(c->ld->port, IO_MS);
        if (fd < 0) {
            atomic_fetch_add(&c->ld->connect_fails, 1);
            load_fail(c->ld, "churn %u: connect: %s", c->id, strerr(fd));
            th_sleep_ms(5);
            continue;
        }
        atomic_fetch_add(&c->ld->connects, 1);
        err = roundtrip_on(fd, 1 + (size_t)(seed % 2048), seed);
        close(fd);
        if (err < 0) {
            atomic_fetch_add(&c->ld->bad, 1);
            load_fail(c->ld, "churn %u: round trip: %s", c->id, strerr(err));
            continue;
        }
        atomic_fetch_add(&c->done, 1);
        atomic_fetch_add(&c->ld->roundtrips, 1);
        seed++;
    }
    return NULL;
}

static void load_init(struct load *ld, int port)
{
    memset(ld, 0, sizeof(*ld));
    ld->port = port;
    pthread_mutex_init(&ld->lock, NULL);
}

/* ------------------------------------------------------------------ 1. sd_notify */

static const char notify_conf[] =
    "[gateway]\n"
    "workers = 2\n"
    "cpu_pinning = off\n"
    "stats_socket = %s/ops-%d.sock\n"
    "%s"
    "[listener t]\n"
    "bind = 127.0.0.1:%d\n"
    "upstream = u\n"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n";

START_TEST(test_notify)
{
    struct th_echo *e = th_echo_new(0);
    struct nsock ns;
    struct th_daemon *d;
    char sock[TH_PATH_MAX], *out;
    unsigned mark;
    unsigned long long mono;
    int port = th_free_port(), i, hb;
    int64_t t0, t_stall;
    struct timespec now;

    ck_assert_ptr_nonnull(e);
    nsock_open(&ns, 1);                              /* the abstract namespace */
    setenv("NOTIFY_SOCKET", ns.env, 1);
    setenv("WATCHDOG_USEC", "400000", 1);           /* a tick every 200 ms */
    unsetenv("WATCHDOG_PID");
    setenv("CG_TEST_HOOKS", "1", 1);
    d = start_on(port, notify_conf, th_tmpdir(), port, "", port, th_echo_port(e));
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("CG_TEST_HOOKS");
    snprintf(sock, sizeof(sock), "%s/ops-%d.sock", th_tmpdir(), port);

    /* READY once every worker accepts, with a STATUS line. */
    i = nsock_wait(&ns, 0, "READY=1", READY_MS);
    TH_ASSERT(d, i >= 0, "no READY=1; got:\n%s", nsock_dump(&ns));
    TH_ASSERT(d, nsock_wait(&ns, 0, "STATUS=accepting", 1000) >= 0, "no STATUS; got:\n%s",
              nsock_dump(&ns));

    /* Heartbeats: about five a second at WATCHDOG_USEC=400000. */
    t0 = th_now_ms();
    nsock_pump(&ns, t0 + 1100, 0);
    hb = (int)nsock_count(&ns, "WATCHDOG=1", t0, t0 + 1100);
    TH_ASSERT(d, hb >= 3 && hb <= 8, "%d WATCHDOG=1 in 1.1 s, want about 5; got:\n%s", hb,
              nsock_dump(&ns));

    /* SIGHUP: RELOADING=1 with the monotonic clock, then READY=1. */
    mark = ns.n;
    kill(d->pid, SIGHUP);
    i = nsock_wait(&ns, mark, "RELOADING=1", IO_MS);
    TH_ASSERT(d, i >= 0, "no RELOADING=1; got:\n%s", nsock_dump(&ns));
    clock_gettime(CLOCK_MONOTONIC, &now);
    TH_ASSERT(d, strstr(ns.msgs[i].text, "MONOTONIC_USEC=") &&
              sscanf(strstr(ns.msgs[i].text, "MONOTONIC_USEC="), "MONOTONIC_USEC=%llu",
                     &mono) == 1 &&
              mono <= (unsigned long long)now.tv_sec * 1000000 + now.tv_nsec / 1000 &&
              mono + 5000000 > (unsigned long long)now.tv_sec * 1000000,
              "RELOADING without a plausible MONOTONIC_USEC: %s", ns.msgs[i].text);
    TH_ASSERT(d, nsock_wait(&ns, (unsigned)i + 1, "READY=1", SWITCH_MS) >= 0,
              "no READY=1 after the reload; got:\n%s", nsock_dump(&ns));
    TH_ASSERT(d, th_daemon_wait_log(d, "generation 2 in force on every worker", 1, 1000) == 0,
              "the log does not say the reload completed");

    /* A worker stalled: no heartbeat while it is stuck, back after. */
    out = stats_cmd(sock, "debug stall-worker 1 2000");
    t_stall = th_now_ms();
    TH_ASSERT(d, strstr(out, "worker 1: stalling for 2000 ms"), "debug stall-worker: %s", out);
    free(out);
    /* A tick may still see the beats from just before the stall; the next one cannot. */
    nsock_pump(&ns, t_stall + 1850, 0);
    hb = (int)nsock_count(&ns, "WATCHDOG=1", t_stall + 500, t_stall + 1850);
    TH_ASSERT(d, hb == 0, "%d WATCHDOG=1 while worker 1 was stalled; got:\n%s", hb,
              nsock_dump(&ns));
    TH_ASSERT(d, th_daemon_log_count(d, "watchdog: worker 1 has not run its loop") == 1,
              "the log does not name the stalled worker");
    nsock_pump(&ns, t_stall + 3000, 0);
    hb = (int)nsock_count(&ns, "WATCHDOG=1", t_stall + 2000, t_stall + 3000);
    TH_ASSERT(d, hb >= 2, "%d WATCHDOG=1 in the second after the stall; got:\n%s", hb,
              nsock_dump(&ns));
    TH_ASSERT(d, th_daemon_log_count(d, "watchdog: every worker runs again") == 1,
              "the log does not say the workers run again");

    /* SIGTERM: STOPPING, then a clean exit. */
    mark = ns.n;
    kill(d->pid, SIGTERM);
    TH_ASSERT(d, nsock_wait(&ns, mark, "STOPPING=1", IO_MS) >= 0, "no STOPPING=1; got:\n%s",
              nsock_dump(&ns));
    stop_clean(d);
    nsock_close(&ns);
}
END_TEST

/* ------------------------------------------------------------------ 2. reload */

static const char load_conf[] =
    "[gateway]\n"
    "workers = 2\n"
    "cpu_pinning = off\n"
    "stats_socket = %s/ops-%d.sock\n"
    "max_connections = %u\n"
    "[listener t]\n"
    "bind = 127.0.0.1:%d\n"
    "upstream = u\n"
    "idle_timeout = %s\n"
    "connection_rate = %u\n"
    "connection_burst = %u\n"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "connect_timeout = %s\n"
    "health_check_interval = 0\n";

#define NPERSIST 4
#define NCHURN   3

/* corogate-loadgen run, closed loop with checked payloads, in the background. */
static pid_t loadgen_start(int port, char *report, size_t size)
{
    char path[TH_PATH_MAX], target[32];
    const char *build = getenv("CG_BUILD") ? getenv("CG_BUILD") : "build";
    pid_t pid;
    int fd;

    snprintf(path, sizeof(path), "%s/corogate-loadgen", build);
    if (access(path, X_OK) != 0) {
        printf("test_reload_under_load: %s not built: load from the test's threads only\n",
               path);
        return -1;
    }
    snprintf(target, sizeof(target), "127.0.0.1:%d", port);
    snprintf(report, size, "%s/loadgen-%d.out", th_tmpdir(), port);
    pid = th_fork();
    if (pid == 0) {
        fd = open(report, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(path, path, "run", "--mode", "tcp", "--target", target, "--connections", "8",
              "--connect-rate", "0", "--closed-loop", "--message-size", "512",
              "--duration", "2500ms", "--quiet", (char *)NULL);
        _exit(127);
    }
    return pid;
}

START_TEST(test_reload_under_load)
{
    struct th_echo *a = th_echo_new(0), *b = th_echo_new(0);
    struct client persist[NPERSIST], churn[NCHURN];
    unsigned before[NPERSIST], a_after, b_after, churn_after, i;
    char sock[TH_PATH_MAX], report[TH_PATH_MAX], how[96], *out, *lg;
    struct th_daemon *d;
    struct load ld;
    pid_t lgpid;
    int port = th_free_port(), st;
    int64_t deadline;

    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    d = start_on(port, load_conf, th_tmpdir(), port, 100000u, port, "300s", 100000u, 100000u,
                 th_echo_port(a), "2s");
    snprintf(sock, sizeof(sock), "%s/ops-%d.sock", th_tmpdir(), port);
    load_init(&ld, port);
    for (i = 0; i < NPERSIST; i++) {
        persist[i] = (struct client){ .ld = &ld, .id = i };
        persist[i].fd = th_connect(port, IO_MS);
        TH_ASSERT(d, persist[i].fd >= 0, "persistent %u: connect: %s", i,
                  strerr(persist[i].fd));
        ck_assert_int_eq(pthread_create(&persist[i].th, NULL, persistent_main, &persist[i]), 0);
    }
    for (i = 0; i < NCHURN; i++) {
        churn[i] = (struct client){ .ld = &ld, .id = 100 + i, .fd = -1 };
        ck_assert_int_eq(pthread_create(&churn[i].th, NULL, churn_main, &churn[i]), 0);
    }
    lgpid = loadgen_start(port, report, sizeof(report));
    for (deadline = th_now_ms() + 10000;
         atomic_load(&ld.roundtrips) == 0 && th_now_ms() < deadline;)
        th_sleep_ms(10);
    TH_ASSERT(d, atomic_load(&ld.roundtrips) > 0 && th_echo_accepted(b) == 0,
              "no traffic before the reload (%u round trips)", atomic_load(&ld.roundtrips));

    /* Backend A -> B; rates, limits and timeouts change too. */
    conf_rewrite(d->conf, load_conf, th_tmpdir(), port, 200000u, port, "200s", 50000u, 50000u,
                 th_echo_port(b), "3s");
    for (i = 0; i < NPERSIST; i++)
        before[i] = atomic_load(&persist[i].done);
    reload_and_wait(d, 2);
    th_sleep_ms(100);               /* connections accepted before the switch have connected */
    a_after = th_echo_accepted(a);
    b_after = th_echo_accepted(b);
    churn_after = atomic_load(&ld.connects);
    /* Traffic after the switch: counts, waited for (a busy machine makes them slow). */
    for (deadline = th_now_ms() + 20000; th_now_ms() < deadline; th_sleep_ms(20)) {
        for (i = 0; i < NPERSIST && atomic_load(&persist[i].done) > before[i] + 10; i++)
            ;
        if (i == NPERSIST && atomic_load(&ld.connects) > churn_after + 10)
            break;
    }
    /* Established connections stay on A (and keep working); new ones go to B only. */
    TH_ASSERT(d, th_echo_active(a) >= NPERSIST, "%u connections open on A, want >= %d",
              th_echo_active(a), NPERSIST);
    atomic_store(&ld.stop, 1);
    for (i = 0; i < NCHURN; i++)
        pthread_join(churn[i].th, NULL);
    for (i = 0; i < NPERSIST; i++) {
        pthread_join(persist[i].th, NULL);
        TH_ASSERT(d, atomic_load(&persist[i].done) > before[i] + 10,
                  "persistent %u: %u round trips before the reload, %u in all", i, before[i],
                  atomic_load(&persist[i].done));
        close(persist[i].fd);
    }
    TH_ASSERT(d, atomic_load(&ld.connect_fails) == 0 && atomic_load(&ld.bad) == 0,
              "%u failed connects, %u bad round trips (of %u); first: %s",
              atomic_load(&ld.connect_fails), atomic_load(&ld.bad),
              atomic_load(&ld.roundtrips), ld.first);
    TH_ASSERT(d, th_echo_accepted(a) == a_after,
              "A accepted %u connections after the switch", th_echo_accepted(a) - a_after);
    TH_ASSERT(d, atomic_load(&ld.connects) > churn_after + 10 &&
              th_echo_accepted(b) - b_after >= atomic_load(&ld.connects) - churn_after,
              "B accepted %u connections while the clients made %u",
              th_echo_accepted(b) - b_after, atomic_load(&ld.connects) - churn_after);
    th_note("reload_under_load: %u round trips, %u new connections (%u after the switch)",
            atomic_load(&ld.roundtrips), atomic_load(&ld.connects),
            atomic_load(&ld.connects) - churn_after);

    out = stats_cmd(sock, "show info");
    TH_ASSERT(d, strstr(out, "generation: 2\n") && strstr(out, "reloads: 1\n") &&
              strstr(out, "reload_failures: 0\n") && strstr(out, " ok: ") &&
              strstr(out, "max_connections: 200000\n"), "show info:\n%s", out);
    free(out);
    if (lgpid > 0) {
        waitpid(lgpid, &st, 0);
        lg = th_read_file(report, NULL);
        TH_ASSERT(d, WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "corogate-loadgen: %s (0: reached, held, every message intact):\n%s",
                  th_describe_status(st, how, sizeof(how)), lg ? th_tail(lg, 2000) : "");
        free(lg);
    }
    stop_clean(d);
}
END_TEST

static const char invalid_conf[] =
    "[gateway]\n"                                   /* 1 */
    "workers = %u\n"                                /* 2 */
    "cpu_pinning = off\n"                           /* 3 */
    "stats_socket = %s/ops-%d.sock\n"               /* 4 */
    "[listener t]\n"                                /* 5 */
    "bind = 127.0.0.1:%d\n"                         /* 6 */
    "upstream = u\n"                                /* 7 */
    "idle_timeout = %s\n"                           /* 8 */
    "[upstream u]\n"                                /* 9 */
    "servers = %s\n"                                /* 10 */
    "health_check_interval = 0\n";                  /* 11 */

START_TEST(test_reload_invalid)
{
    struct th_echo *e = th_echo_new(0);
    char sock[TH_PATH_MAX], servers[64], want[TH_PATH_MAX + 64], *out;
    struct th_daemon *d;
    int port = th_free_port(), fd, tries;

    ck_assert_ptr_nonnull(e);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    d = start_on(port, invalid_conf, 2u, th_tmpdir(), port, port, "300s", servers);
    snprintf(sock, sizeof(sock), "%s/ops-%d.sock", th_tmpdir(), port);
    fd = th_connect(port, IO_MS);                   /* established across every reload */
    TH_ASSERT(d, fd >= 0 && roundtrip_on(fd, 100, 1) == 0, "round trip before");

    /* Two errors, each logged with its file and line; nothing changes. */
    conf_rewrite(d->conf, invalid_conf, 2u, th_tmpdir(), port, port, "banana", "nowhere");
    kill(d->pid, SIGHUP);
    TH_ASSERT(d, th_daemon_wait_log(d, "SIGHUP: reload failed", 1, IO_MS) == 0,
              "no reload failure in the log");
    snprintf(want, sizeof(want), "%s:8: [listener t] idle_timeout:", d->conf);
    TH_ASSERT(d, th_daemon_log_count(d, want) >= 1, "no \"%s\" in the log", want);
    snprintf(want, sizeof(want), "%s:10: [upstream u] servers:", d->conf);
    TH_ASSERT(d, th_daemon_log_count(d, want) >= 1, "no \"%s\" in the log", want);
    TH_ASSERT(d, roundtrip_on(fd, 200, 2) == 0 && th_echo_roundtrip(port, 300, IO_MS) == 0,
              "the old configuration does not serve any more");
    out = stats_cmd(sock, "show info");
    TH_ASSERT(d, strstr(out, "reloads: 1\n") && strstr(out, "reload_failures: 1\n") &&
              strstr(out, " failed: ") && strstr(out, "is invalid (2 errors") &&
              strstr(out, "generation: 1\n"), "show info:\n%s", out);
    free(out);
    out = stats_cmd(sock, "show metrics");
    TH_ASSERT(d, strstr(out, "corogate_config_reloads_total{result=\"failure\"} 1\n") &&
              strstr(out, "corogate_config_reloads_total{result=\"success\"} 0\n"),
              "reload counters not in the metrics");
    free(out);

    /* The same through the stats socket; the test hook does not exist without the env. */
    out = stats_cmd(sock, "reload");
    TH_ASSERT(d, strncmp(out, "error: reload: ", 15) == 0 && strstr(out, "is invalid"),
              "reload: %s", out);
    free(out);
    out = stats_cmd(sock, "debug stall-worker 0 10");
    TH_ASSERT(d, strncmp(out, "error: unknown command", 22) == 0, "debug: %s", out);
    free(out);

    /* Valid again, with a key only a restart changes: applied, and that key kept. */
    conf_rewrite(d->conf, invalid_conf, 3u, th_tmpdir(), port, port, "100s", servers);
    out = stats_cmd(sock, "reload");
    TH_ASSERT(d, strncmp(out, "reload: ", 8) == 0 && strstr(out, "generation 2"),
              "reload: %s", out);
    free(out);
    TH_ASSERT(d, th_daemon_wait_log(d, "generation 2 in force on every worker", 1,
                                    SWITCH_MS) == 0, "the reload did not complete");
    TH_ASSERT(d, th_daemon_log_count(d, "[gateway] workers changed: takes effect at the next "
                                        "restart") == 1, "workers change not reported");
    out = stats_cmd(sock, "show info");
    TH_ASSERT(d, strstr(out, "reload_failures: 2\n") && strstr(out, "reloads: 3\n") &&
              strstr(out, " ok: ") && strstr(out, "workers: 2\n") &&
              strstr(out, "generation: 2\n") && strstr(out, "generation_pending_workers: 0\n"),
              "show info:\n%s", out);
    free(out);
    TH_ASSERT(d, roundtrip_on(fd, 500, 3) == 0, "the first connection after the reloads");
    /* The open connection counts on the new generation's server (leastconn and the
     * per-server limit see it); it leaves with it. */
    snprintf(want, sizeof(want), "server %s: state ready, health up, eligible yes, weight 1, "
             "active 1,", servers);
    out = stats_cmd(sock, "show upstreams");
    TH_ASSERT(d, strstr(out, want), "want \"%s\" in show upstreams:\n%s", want, out);
    free(out);
    close(fd);
    snprintf(want, sizeof(want), "server %s: state ready, health up, eligible yes, weight 1, "
             "active 0,", servers);
    for (tries = 0; tries < 100; tries++) {
        out = stats_cmd(sock, "show upstreams");
        if (strstr(out, want))
            break;
        free(out);
        out = NULL;
        th_sleep_ms(20);
    }
    TH_ASSERT(d, out != NULL, "the server's active count did not go back to 0");
    free(out);
    stop_clean(d);
}
END_TEST

static const char listeners_conf[] =
    "[gateway]\n"
    "workers = 2\n"
    "cpu_pinning = off\n"
    "stats_socket = %s/ops-%d.sock\n"
    "[listener t]\n"
    "bind = 127.0.0.1:%d\n"
    "upstream = u\n"
    "[listener %s]\n"
    "bind = 127.0.0.1:%d\n"
    "upstream = u\n"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n";

START_TEST(test_reload_listeners)
{
    struct th_echo *e = th_echo_new(0);
    int pt = th_free_port(), px = th_free_port(), py = th_free_port(), ft, fx, fy, i;
    char sock[TH_PATH_MAX], needle[96], *out;
    struct client churn[2];
    struct th_daemon *d;
    struct load ld;

    ck_assert_ptr_nonnull(e);
    ck_assert(pt != px && px != py && pt != py);
    d = start_on(pt, listeners_conf, th_tmpdir(), pt, pt, "x", px, th_echo_port(e));
    snprintf(sock, sizeof(sock), "%s/ops-%d.sock", th_tmpdir(), pt);
    ft = th_connect(pt, IO_MS);
    fx = th_connect(px, IO_MS);
    TH_ASSERT(d, ft >= 0 && fx >= 0 && roundtrip_on(ft, 10, 1) == 0 &&
              roundtrip_on(fx, 10, 2) == 0, "round trips before");
    load_init(&ld, pt);
    for (i = 0; i < 2; i++) {
        churn[i] = (struct client){ .ld = &ld, .id = (unsigned)i, .fd = -1 };
        ck_assert_int_eq(pthread_create(&churn[i].th, NULL, churn_main, &churn[i]), 0);
    }
    th_sleep_ms(200);

    /* x goes, y comes, t stays as it is (its sockets kept). */
    conf_rewrite(d->conf, listeners_conf, th_tmpdir(), pt, pt, "y", py, th_echo_port(e));
    reload_and_wait(d, 2);
    TH_ASSERT(d, th_echo_roundtrip(py, 1000, IO_MS) == 0, "the new listener y does not relay");
    fy = th_connect(px, 1000);
    if (fy >= 0)
        close(fy);
    TH_ASSERT(d, fy == -ECONNREFUSED, "connect to the removed listener x: %s, want refused",
              strerr(fy));
    TH_ASSERT(d, roundtrip_on(fx, 300, 3) == 0 && roundtrip_on(ft, 300, 4) == 0,
              "an established connection broke across the reload");
    snprintf(needle, sizeof(needle), "reload: listener y: tcp on 127.0.0.1:%d (added)", py);
    TH_ASSERT(d, th_daemon_log_count(d, needle) == 1, "no \"%s\" in the log", needle);
    TH_ASSERT(d, th_daemon_log_count(d, "reload: listener x (127.0.0.1:") == 1 &&
              th_daemon_log_count(d, "reload: listener t:") == 0,
              "x not reported removed, or t not kept as it was");
    out = stats_cmd(sock, "show stats");
    TH_ASSERT(d, strstr(out, "\"name\":\"y\"") && !strstr(out, "\"name\":\"x\"") &&
              strstr(out, "\"name\":\"t\""), "show stats listeners: %.600s",
              strstr(out, "\"listeners\"") ? strstr(out, "\"listeners\"") : out);
    free(out);

    /* And back: y goes, x comes again on its port. */
    conf_rewrite(d->conf, listeners_conf, th_tmpdir(), pt, pt, "x", px, th_echo_port(e));
    reload_and_wait(d, 3);
    TH_ASSERT(d, th_echo_roundtrip(px, 1000, IO_MS) == 0, "x does not relay again");
    fy = th_connect(py, 1000);
    if (fy >= 0)
        close(fy);
    TH_ASSERT(d, fy == -ECONNREFUSED, "connect to the removed listener y: %s", strerr(fy));
    atomic_store(&ld.stop, 1);
    for (i = 0; i < 2; i++)
        pthread_join(churn[i].th, NULL);
    TH_ASSERT(d, atomic_load(&ld.connect_fails) == 0 && atomic_load(&ld.bad) == 0 &&
              atomic_load(&ld.connects) > 20,
              "t across two reloads: %u failed connects, %u bad round trips, %u connects; "
              "first: %s", atomic_load(&ld.connect_fails), atomic_load(&ld.bad),
              atomic_load(&ld.connects), ld.first);
    TH_ASSERT(d, roundtrip_on(fx, 300, 5) == 0 && roundtrip_on(ft, 300, 6) == 0,
              "an established connection broke across the second reload");
    close(fx);
    close(ft);
    stop_clean(d);
}
END_TEST

/* ------------------------------------------------------------------ 3. drain */

/* A raw WebSocket client: the opening handshake. Returns the descriptor. */
static int ws_open(struct th_daemon *d, int port)
{
    static const char req[] =
        "GET /chat HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n";
    char head[1024];
    size_t len = 0;
    ssize_t r;
    int fd = th_connect(port, IO_MS);

    TH_ASSERT(d, fd >= 0, "ws connect: %s", strerr(fd));
    TH_ASSERT(d, th_send_all(fd, req, sizeof(req) - 1) == (ssize_t)sizeof(req) - 1, "send");
    while (len < sizeof(head) - 1) {             /* byte by byte: nothing past the head */
        r = read(fd, head + len, 1);
        TH_ASSERT(d, r == 1, "handshake answer cut short after %zu bytes", len);
        len++;
        head[len] = '\0';
        if (len >= 4 && memcmp(head + len - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    TH_ASSERT(d, strncmp(head, "HTTP/1.1 101", 12) == 0, "handshake answer: %s", head);
    return fd;
}

/* Sends a masked frame (<len> < 126). */
static void ws_send(int fd, int opcode, const void *p, size_t len)
{
    unsigned char f[2 + 4 + 125];
    const unsigned char mask[4] = { 0x12, 0x34, 0x56, 0x78 };
    size_t i;

    ck_assert_uint_lt(len, 126);
    f[0] = (unsigned char)(0x80 | opcode);
    f[1] = (unsigned char)(0x80 | len);
    memcpy(f + 2, mask, 4);
    for (i = 0; i < len; i++)
        f[6 + i] = ((const unsigned char *)p)[i] ^ mask[i % 4];
    ck_assert_int_eq(th_send_all(fd, f, 6 + len), (ssize_t)(6 + len));
}

/* Reads one frame (pings skipped). Returns its payload length (in <buf> of <cap>), with
 * its opcode in *<op>, or a negative errno. */
static ssize_t ws_recv(int fd, int *op, unsigned char *buf, size_t cap)
{
    unsigned char h[8];
    ssize_t r;
    size_t len;

    for (;;) {
        r = th_recv_n(fd, h, 2);
        if (r != 2)
            return r < 0 ? r : -EPIPE;
        len = h[1] & 0x7f;
        if (len == 126) {
            if (th_recv_n(fd, h + 2, 2) != 2)
                return -EPIPE;
            len = (size_t)h[2] << 8 | h[3];
        }
        if (len > cap || (h[1] & 0x80))
            return -EPROTO;
        if (len && th_recv_n(fd, buf, len) != (ssize_t)len)
            return -EPIPE;
        *op = h[0] & 0x0f;
        if (*op != 0x9)
            return (ssize_t)len;
    }
}

static const char drain_conf[] =
    "[gateway]\n"
    "workers = 1\n"
    "cpu_pinning = off\n"
    "stats_socket = %s/ops-%d.sock\n"
    "drain_timeout = 5s\n"
    "drain_spread = 600ms\n"
    "[listener w]\n"
    "bind = 127.0.0.1:%d\n"
    "mode = websocket\n"
    "upstream_protocol = tcp\n"
    "keepalive_interval = 0\n"
    "close_timeout = 2s\n"
    "upstream = u\n"
    "[listener t]\n"
    "bind = 127.0.0.1:%d\n"
    "upstream = u\n"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n";

#define NWS 3

START_TEST(test_drain)
{
    struct th_echo *e = th_echo_new(0);
    int pw = th_free_port(), pt = th_free_port(), ws[NWS], ft, op, i, st;
    int64_t t0, at[NWS], exited;
    unsigned char buf[256];
    struct th_daemon *d;
    struct nsock ns;
    char how[96];
    ssize_t n;

    ck_assert_ptr_nonnull(e);
    ck_assert_int_ne(pw, pt);
    nsock_open(&ns, 0);                              /* a path this time */
    setenv("NOTIFY_SOCKET", ns.env, 1);
    setenv("WATCHDOG_USEC", "200000", 1);
    setenv("WATCHDOG_PID", "1", 1);                 /* not for us: no heartbeat */
    d = start_on(pw, drain_conf, th_tmpdir(), pw, pw, pt, th_echo_port(e));
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    TH_ASSERT(d, nsock_wait(&ns, 0, "READY=1", READY_MS) >= 0, "no READY=1:\n%s",
              nsock_dump(&ns));
    for (i = 0; i < NWS; i++) {
        ws[i] = ws_open(d, pw);
        ws_send(ws[i], 0x2, "hello", 5);
        n = ws_recv(ws[i], &op, buf, sizeof(buf));
        TH_ASSERT(d, n == 5 && memcmp(buf, "hello", 5) == 0, "ws %d echo: %zd", i, n);
    }
    ft = th_connect(pt, IO_MS);
    TH_ASSERT(d, ft >= 0 && roundtrip_on(ft, 100, 1) == 0, "tcp round trip before");

    t0 = th_now_ms();
    kill(d->pid, SIGTERM);
    TH_ASSERT(d, nsock_wait(&ns, 0, "STOPPING=1", IO_MS) >= 0, "no STOPPING=1:\n%s",
              nsock_dump(&ns));
    /* Every websocket client is told 1001, one after another over drain_spread. */
    for (i = 0; i < NWS; i++) {
        n = ws_recv(ws[i], &op, buf, sizeof(buf));
        at[i] = th_now_ms() - t0;
        TH_ASSERT(d, n >= 2 && op == 0x8 && (buf[0] << 8 | buf[1]) == 1001,
                  "ws %d: frame %zd bytes, opcode %d, code %d; want close 1001", i, n, op,
                  n >= 2 ? buf[0] << 8 | buf[1] : -1);
        ws_send(ws[i], 0x8, "\x03\xe9", 2);
        TH_ASSERT(d, th_wait_closed(ws[i], IO_MS) == 0, "ws %d not closed after the close "
                  "handshake", i);
        close(ws[i]);
    }
    TH_ASSERT(d, at[NWS - 1] - at[0] >= 250 && at[NWS - 1] < 1500,
              "1001 at %lld, %lld, %lld ms: not spread over drain_spread = 600ms",
              (long long)at[0], (long long)at[1], (long long)at[2]);
    /* The TCP connection is left to finish: it still relays, then its client closes. */
    TH_ASSERT(d, th_daemon_is_alive(d), "the daemon did not wait for the TCP connection");
    TH_ASSERT(d, roundtrip_on(ft, 200, 2) == 0, "tcp round trip while draining");
    close(ft);
    st = th_daemon_wait_exit(d, 4000);
    exited = th_now_ms() - t0;
    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "after SIGTERM: %s, want exit status 0", th_describe_status(st, how, sizeof(how)));
    TH_ASSERT(d, exited < 3000, "exited %lld ms after SIGTERM (drain_timeout 5 s; nothing was "
              "left after about 1 s)", (long long)exited);
    TH_ASSERT(d, nsock_count(&ns, "WATCHDOG=1", 0, INT64_MAX) == 0,
              "WATCHDOG=1 sent although WATCHDOG_PID named another process");
    th_note("drain: 1001 at %lld/%lld/%lld ms, exit at %lld ms", (long long)at[0],
            (long long)at[1], (long long)at[2], (long long)exited);
    nsock_close(&ns);
}
END_TEST

/* A second SIGTERM during the drain closes what is left at once. */
START_TEST(test_drain_second_signal)
{
    struct th_echo *e = th_echo_new(0);
    int pw = th_free_port(), pt = th_free_port(), ft, st;
    struct th_daemon *d;
    char how[96];
    int64_t t0;

    ck_assert_ptr_nonnull(e);
    ck_assert_int_ne(pw, pt);
    d = start_on(pt, drain_conf, th_tmpdir(), pt, pw, pt, th_echo_port(e));
    ft = th_connect(pt, IO_MS);
    TH_ASSERT(d, ft >= 0 && roundtrip_on(ft, 100, 1) == 0, "round trip before");
    t0 = th_now_ms();
    kill(d->pid, SIGTERM);
    TH_ASSERT(d, th_daemon_wait_log(d, "draining", 1, IO_MS) == 0, "no drain in the log");
    th_sleep_ms(200);
    TH_ASSERT(d, th_daemon_is_alive(d) && roundtrip_on(ft, 100, 2) == 0,
              "the connection does not relay while draining");
    kill(d->pid, SIGTERM);
    st = th_daemon_wait_exit(d, 15000);
    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "second SIGTERM: %s after %lld ms, want exit status 0",
              th_describe_status(st, how, sizeof(how)), (long long)(th_now_ms() - t0));
    /* It was the second signal that ended it, not drain_timeout (5 s): by the log, not by
     * the clock, which a busy machine stretches. */
    TH_ASSERT(d, th_daemon_log_count(d, "stopping now") == 1 &&
                 th_daemon_log_count(d, "drain timeout: closing") == 0,
              "the drain was not cut by the second signal");
    st = th_wait_closed(ft, 1000);
    TH_ASSERT(d, st == 0 || st == -ECONNRESET, "the connection: %s", strerr(st));
    close(ft);
}
END_TEST

/* ------------------------------------------------------------------ 4. install */

/* Runs the shell command from <fmt>; returns its wait status, output in <out>. */
static int sh(char *out, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int sh(char *out, size_t size, const char *fmt, ...)
{
    char cmd[2048];
    size_t len = 0;
    va_list ap;
    FILE *p;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    out[0] = '\0';
    while (len < size - 1 && fgets(out + len, (int)(size - len), p))
        len = strlen(out);
    while (fgets(cmd, sizeof(cmd), p))       /* the rest, unread, would block the child */
        ;
    return pclose(p);
}

/* make install into a fresh DESTDIR, the binaries under test as they are (-o: never
 * rebuilt, so the ASan run installs its own). */
static void install_into(const char *dest)
{
    static char out[8192];
    const char *build = getenv("CG_BUILD") ? getenv("CG_BUILD") : "build";
    int st;

    st = sh(out, sizeof(out), "make --no-print-directory -o %1$s/corogate "
            "-o %1$s/corogate-loadgen BUILD=%1$s install DESTDIR=%2$s 2>&1", build, dest);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "make install: %d\n%s", st, out);
}

static void assert_file(const char *dest, const char *path, mode_t mode)
{
    char full[TH_PATH_MAX];
    struct stat s;

    snprintf(full, sizeof(full), "%s%s", dest, path);
    ck_assert_msg(stat(full, &s) == 0, "%s: %s", path, strerror(errno));
    ck_assert_msg(S_ISREG(s.st_mode), "%s is not a regular file", path);
    ck_assert_msg((s.st_mode & 07777) == mode, "%s: mode %04o, want %04o", path,
                  (unsigned)(s.st_mode & 07777), (unsigned)mode);
}

START_TEST(test_install_tree)
{
    char dest[TH_PATH_MAX], path[TH_PATH_MAX + 64], *text;
    FILE *f;

    snprintf(dest, sizeof(dest), "%s/destdir", th_tmpdir());
    install_into(dest);
    assert_file(dest, "/usr/sbin/corogate", 0755);
    assert_file(dest, "/usr/bin/corogate-loadgen", 0755);
    assert_file(dest, "/etc/corogate/corogate.ini", 0644);
    assert_file(dest, "/usr/lib/systemd/system/corogate.service", 0644);
    assert_file(dest, "/usr/lib/sysctl.d/99-corogate.conf", 0644);
    assert_file(dest, "/usr/lib/sysusers.d/corogate.conf", 0644);
    assert_file(dest, "/usr/share/man/man8/corogate.8", 0644);
    assert_file(dest, "/usr/share/man/man1/corogate-loadgen.1", 0644);
    assert_file(dest, "/usr/share/doc/corogate/README.md", 0644);

    /* The installed config is valid, and points the stats socket at RuntimeDirectory. */
    snprintf(path, sizeof(path), "%s/etc/corogate/corogate.ini", dest);
    text = th_read_file(path, NULL);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strstr(text, "\nstats_socket = /run/corogate/stats.sock\n"),
                  "installed config: stats_socket not in /run/corogate");
    free(text);
    {
        const char *args[] = { "-t", "-c", path, NULL };
        struct th_run_result r;

        ck_assert_int_eq(th_run_daemon(&r, 5000, args), 0);
        ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
                      "corogate -t on the installed config:\n%s", r.out);
        th_run_result_deinit(&r);
    }
    /* An existing config is the operator's: a second install leaves it alone. */
    f = fopen(path, "a");
    ck_assert_ptr_nonnull(f);
    fputs("; edited by the operator\n", f);
    fclose(f);
    install_into(dest);
    text = th_read_file(path, NULL);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(strstr(text, "; edited by the operator\n"), "install overwrote the config");
    free(text);
}
END_TEST

START_TEST(test_systemd_verify)
{
    static char out[16384];
    char dest[TH_PATH_MAX], unit[TH_PATH_MAX + 64];
    int st;

    if (access("/usr/bin/systemd-analyze", X_OK) != 0)
        TH_SKIP("/usr/bin/systemd-analyze not installed (package systemd)");
    snprintf(dest, sizeof(dest), "%s/destdir", th_tmpdir());
    install_into(dest);
    /* verify checks that the commands exist: point them at the DESTDIR tree, in a copy
     * named like the unit; man: links are looked up in the installed pages. */
    snprintf(unit, sizeof(unit), "%s/verify", th_tmpdir());
    mkdir(unit, 0755);
    st = sh(out, sizeof(out), "sed 's|/usr/sbin/corogate|%1$s/usr/sbin/corogate|g' "
            "%1$s/usr/lib/systemd/system/corogate.service > %2$s/corogate.service 2>&1",
            dest, unit);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "sed: %s", out);
    st = sh(out, sizeof(out), "MANPATH=%s/usr/share/man SYSTEMD_LOG_COLOR=0 "
            "/usr/bin/systemd-analyze verify %s/corogate.service 2>&1", dest, unit);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0 && out[0] == '\0',
                  "systemd-analyze verify: exit %d\n%s", WEXITSTATUS(st), out);
    /* The sandbox's exposure score stays below 2.0 ("OK"); the unit says what is left. */
    st = sh(out, sizeof(out), "SYSTEMD_LOG_COLOR=0 /usr/bin/systemd-analyze security "
            "--offline=true --no-pager %s/corogate.service 2>&1 | "
            "sed -n 's/.*Overall exposure level for corogate.service: \\([0-9.]*\\).*/\\1/p'",
            unit);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0 && out[0] && strtod(out, NULL) < 2.0,
                  "systemd-analyze security: exposure %s", out);
}
END_TEST

Suite *ops_suite(void)
{
    Suite *s = suite_create("ops");
    TCase *notify = tcase_create("notify");
    TCase *reload = tcase_create("reload");
    TCase *drain = tcase_create("drain");
    TCase *install = tcase_create("install");

    th_tcase_add_fixtures(notify);
    tcase_set_timeout(notify, 60);
    tcase_add_test(notify, test_notify);
    suite_add_tcase(s, notify);

    th_tcase_add_fixtures(reload);
    tcase_set_timeout(reload, 90);
    tcase_add_test(reload, test_reload_under_load);
    tcase_add_test(reload, test_reload_invalid);
    tcase_add_test(reload, test_reload_listeners);
    suite_add_tcase(s, reload);

    th_tcase_add_fixtures(drain);
    tcase_set_timeout(drain, 60);
    tcase_add_test(drain, test_drain);
    tcase_add_test(drain, test_drain_second_signal);
    suite_add_tcase(s, drain);

    th_tcase_add_fixtures(install);
    tcase_set_timeout(install, 120);
    tcase_add_test(install, test_install_tree);
    tcase_add_test(install, test_systemd_verify);
    suite_add_tcase(s, install);
    return s;
}
