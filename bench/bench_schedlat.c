/* bench/bench_schedlat.c — what the eBPF scheduler probes cost: echo messages/s through one
 * pinned corogate worker, with the probes attached and without, in one run.
 *
 *   build/bench-schedlat [-w WINDOW_MS] [-n CYCLES] [-c CONNS] [-p DEPTH] [-s SIZE] [-S]
 *   make bench-bpf [BENCH_ARGS="..."]
 *
 * One daemon runs with [bpf] attach = off, one worker pinned to CPU 0; the echo backend
 * (corogate-loadgen serve) and the client threads run on CPU 1. Each client connection
 * keeps DEPTH messages of SIZE bytes in flight (a new one per echo received). The load
 * runs throughout, and the benchmark itself loads the same probes the daemon would
 * (gateway/observe/schedlat.c, aimed at the daemon's process and worker TID) for some windows:
 * windows go off, tp_btf, raw_tp, raw_tp, tp_btf, off (ABCCBA, so that a drift of the
 * machine falls on every mode alike), CYCLES times. A shared machine is noisy; comparing
 * each probed window with the unprobed windows next to it, and taking the median of those
 * ratios, keeps most of that noise out. Besides messages/s it reports the worker thread's
 * CPU time per message (from /proc), and the probes' own cost as the kernel measures it
 * (BPF run-time statistics, on during probed windows): runs/s, ns per run, share of the
 * CPUs, ns per message; that figure does not depend on the noise. Output: one JSON line
 * per window, then a summary.
 * Needs root (the probes; without it they are disabled, and the run says so).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "gateway/base/log.h"
#include "gateway/observe/schedlat.h"

#define MAX_CONNS  64
#define MAX_CYCLES 64

static const char *const modes[] = { "none", "tp_btf", "raw_tp" };
#define NMODES 3

static int opt_stats = 1;
static int opt_window_ms = 300, opt_cycles = 10, opt_conns = 8, opt_depth = 4, opt_size = 64;
static const char *build = "build";

static int64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_ms(int ms)
{
    struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void pin_to(int cpu)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

static int free_port(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
        port = ntohs(sin.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static int connect_to(int port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        close(fd);
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

/* Starts <argv> with stdout and stderr to <log> (NULL: inherited), pinned to <cpu> (-1:
 * not). Returns the pid or -1. */
static pid_t spawn(char *const argv[], const char *log, int cpu)
{
    pid_t pid = fork();

    if (pid == 0) {
        if (log && (!freopen(log, "w", stdout) || dup2(fileno(stdout), 2) < 0))
            _exit(127);
        if (cpu >= 0)
            pin_to(cpu);
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

static int wait_port(int port, int ms)
{
    int64_t end = now_ns() + (int64_t)ms * 1000000;
    int fd;

    while (now_ns() < end) {
        fd = connect_to(port);
        if (fd >= 0) {
            close(fd);
            return 0;
        }
        sleep_ms(20);
    }
    return -1;
}

/* ------------------------------------------------------------------ clients */

struct client {
    int                 port;
    _Atomic int        *stop;
    _Atomic uint64_t   *msgs;
    int                 failed;
};

static void *client_main(void *arg)
{
    struct client *c = arg;
    char out[4096 * 4], in[65536];
    size_t size = (size_t)opt_size, pending = 0;
    uint64_t total = 0, done = 0, n;
    int fd = connect_to(c->port), k;
    ssize_t r;

    if (fd < 0) {
        c->failed = 1;
        return NULL;
    }
    memset(out, 'm', sizeof(out));
    for (k = 0; k < opt_depth; k++)
        if (send(fd, out, size, MSG_NOSIGNAL) != (ssize_t)size)
            c->failed = 1;
    while (!atomic_load(c->stop) && !c->failed) {
        r = recv(fd, in, sizeof(in), 0);
        if (r <= 0) {
            c->failed = 1;
            break;
        }
        total += (uint64_t)r;
        n = total / size - done;        /* whole messages echoed since last time */
        done += n;
        atomic_fetch_add(c->msgs, n);
        pending += n * size;            /* as many new ones to send */
        while (pending > 0) {
            size_t chunk = pending < sizeof(out) ? pending : sizeof(out);

            r = send(fd, out, chunk, MSG_NOSIGNAL);
            if (r <= 0) {
                c->failed = 1;
                break;
            }
            pending -= (size_t)r;
        }
    }
    close(fd);
    return NULL;
}

/* ------------------------------------------------------------------ measuring */

/* utime + stime of thread <tid> of <pid>, in clock ticks. */
static long long thread_ticks(pid_t pid, int tid)
{
    char path[96], buf[1024], *p;
    unsigned long long ut = 0, st = 0;
    FILE *f;

    snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, tid);
    f = fopen(path, "re");
    if (!f)
        return -1;
    if (!fgets(buf, sizeof(buf), f)) {
        fclose(f);
        return -1;
    }
    fclose(f);
    p = strrchr(buf, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut,
                     &st) != 2)
        return -1;
    return (long long)(ut + st);
}

/* The TID of the daemon's thread named corogate/w0, or -1. */
static int worker_tid(pid_t pid)
{
    char path[96], name[64];
    int tid;
    FILE *f;

    for (tid = pid; tid < pid + 64; tid++) {
        snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", (int)pid, tid);
        f = fopen(path, "re");
        if (!f)
            continue;
        if (fgets(name, sizeof(name), f) && strncmp(name, "corogate/w0", 11) == 0) {
            fclose(f);
            return tid;
        }
        fclose(f);
    }
    return -1;
}

struct window {
    int    mode;               /* index into modes[] */
    double secs;
    double msgs;
    double prog_runs;          /* the probes' programs: runs and time in them (BPF stats) */
    double prog_ns;
    double msgs_per_s;
    double cpu_ns_per_msg;     /* worker thread CPU time per message */
    double worker_cpu_pct;
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The mean of the unprobed windows next to window <i> (before and after), or 0. */
static double neighbours_off(const struct window *w, int n, int i, int cpu)
{
    double sum = 0;
    int j, k, cnt = 0;

    for (k = -1; k <= 1; k += 2) {
        for (j = i + k; j >= 0 && j < n && w[j].mode != 0; j += k)
            continue;
        if (j >= 0 && j < n) {
            sum += cpu ? w[j].cpu_ns_per_msg : w[j].msgs_per_s;
            cnt++;
        }
    }
    return cnt ? sum / cnt : 0;
}

int main(int argc, char **argv)
{
    static const int abccba[] = { 0, 1, 2, 2, 1, 0 };
    struct window w[6 * MAX_CYCLES];
    double rate[NMODES][6 * MAX_CYCLES], ratio[NMODES][6 * MAX_CYCLES];
    double cost[NMODES][6 * MAX_CYCLES], cratio[NMODES][6 * MAX_CYCLES];
    int nrate[NMODES] = { 0 }, nratio[NMODES] = { 0 };
    char lg[512], daemon[512], port_arg[32], conf[128], log[128], *bargv[8], *dargv[4];
    struct client cl[MAX_CONNS];
    pthread_t th[MAX_CONNS];
    _Atomic int stop = 0;
    _Atomic uint64_t msgs = 0;
    int opt, i, m, n, backend_port, port, tid, failed = 0, attached_all = 1;
    pid_t backend, pid;
    FILE *f;

    if (getenv("CG_BUILD"))
        build = getenv("CG_BUILD");
    while ((opt = getopt(argc, argv, "w:n:c:p:s:Sh")) != -1) {
        switch (opt) {
        case 'S': opt_stats = 0; break;
        case 'w': opt_window_ms = atoi(optarg); break;
        case 'n': opt_cycles = atoi(optarg); break;
        case 'c': opt_conns = atoi(optarg); break;
        case 'p': opt_depth = atoi(optarg); break;
        case 's': opt_size = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: bench-schedlat [-w WINDOW_MS] [-n CYCLES] [-c CONNS] "
                    "[-p DEPTH] [-s SIZE] [-S]\n  -S  no BPF run-time statistics (they cost "
                    "two clock reads per program run)\n");
            return opt == 'h' ? 0 : 2;
        }
    }
    if (opt_window_ms < 100 || opt_cycles < 1 || opt_cycles > MAX_CYCLES || opt_conns < 1 ||
        opt_conns > MAX_CONNS || opt_depth < 1 || opt_size < 1 || opt_size > 4096) {
        fprintf(stderr, "bench-schedlat: option out of range\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    cg_log_set_level(CG_LOG_WARN);
    pin_to(sysconf(_SC_NPROCESSORS_ONLN) > 1 ? 1 : 0);    /* clients; the worker takes 0 */

    backend_port = free_port();
    snprintf(lg, sizeof(lg), "%s/corogate-loadgen", build);
    snprintf(port_arg, sizeof(port_arg), "127.0.0.1:%d", backend_port);
    bargv[0] = lg;
    bargv[1] = "serve";
    bargv[2] = "--listen";
    bargv[3] = port_arg;
    bargv[4] = "--threads";
    bargv[5] = "1";
    bargv[6] = "--quiet";
    bargv[7] = NULL;
    backend = spawn(bargv, "/dev/null", -1);
    if (backend < 0 || wait_port(backend_port, 5000) < 0) {
        fprintf(stderr, "bench-schedlat: %s did not start\n", lg);
        return 1;
    }

    port = free_port();
    snprintf(conf, sizeof(conf), "/tmp/bench-schedlat-%d.ini", (int)getpid());
    snprintf(log, sizeof(log), "/tmp/bench-schedlat-%d.log", (int)getpid());
    f = fopen(conf, "w");
    if (!f)
        return 1;
    fprintf(f, "[gateway]\nworkers = 1\ncpu_pinning = on\n"
            "stats_socket = /tmp/bench-schedlat-%d.sock\n"
            "[listener a]\nbind = 127.0.0.1:%d\nupstream = u\n"
            "[upstream u]\nservers = 127.0.0.1:%d\nhealth_check_interval = 0\n"
            "[bpf]\nattach = off\n", (int)getpid(), port, backend_port);
    fclose(f);
    snprintf(daemon, sizeof(daemon), "%s/corogate", build);
    dargv[0] = daemon;
    dargv[1] = "-c";
    dargv[2] = conf;
    dargv[3] = NULL;
    pid = spawn(dargv, log, -1);
    if (pid < 0 || wait_port(port, 5000) < 0 || (tid = worker_tid(pid)) < 0) {
        fprintf(stderr, "bench-schedlat: %s did not start (see %s)\n", daemon, log);
        failed = 1;
        goto out_daemon;
    }
    for (i = 0; i < opt_conns; i++) {
        cl[i] = (struct client){ .port = port, .stop = &stop, .msgs = &msgs };
        pthread_create(&th[i], NULL, client_main, &cl[i]);
    }
    sleep_ms(500);                  /* warm up */

    n = 6 * opt_cycles;
    for (i = 0; i < n; i++) {
        struct cg_schedlat_opts o = { .attach = CG_BPF_TP_BTF, .tgid = pid };
        struct cg_schedlat *s = NULL;
        uint64_t runs = 0, run_ns = 0;
        int stats_fd = -1;
        long long t0, t1;
        uint64_t m0, m1;
        int64_t s0, s1;

        w[i].mode = abccba[i % 6];
        if (w[i].mode != 0) {
            /* The kernel times each program run while this fd is open. */
            stats_fd = opt_stats ? bpf_enable_stats(BPF_STATS_RUN_TIME) : -1;
            o.attach = w[i].mode == 1 ? CG_BPF_TP_BTF : CG_BPF_RAW_TP;
            s = cg_schedlat_new(&o, &tid, NULL, 1);
            if (!cg_schedlat_is_running(s)) {
                fprintf(stderr, "bench-schedlat: %s: %s\n", modes[w[i].mode],
                        cg_schedlat_reason(s));
                attached_all = 0;
            }
        }
        sleep_ms(100);              /* settle after loading or unloading */
        m0 = atomic_load(&msgs);
        t0 = thread_ticks(pid, tid);
        s0 = now_ns();
        sleep_ms(opt_window_ms);
        m1 = atomic_load(&msgs);
        t1 = thread_ticks(pid, tid);
        s1 = now_ns();
        if (s && cg_schedlat_prog_stats(s, &runs, &run_ns) < 0)
            runs = run_ns = 0;
        cg_schedlat_free(s);
        if (stats_fd >= 0)
            close(stats_fd);
        w[i].secs = (double)(s1 - s0) / 1e9;
        w[i].msgs = (double)(m1 - m0);
        w[i].prog_runs = (double)runs;
        w[i].prog_ns = (double)run_ns;
        w[i].msgs_per_s = (double)(m1 - m0) * 1e9 / (double)(s1 - s0);
        w[i].cpu_ns_per_msg = (t0 >= 0 && t1 >= 0 && m1 > m0) ?
            (double)(t1 - t0) * 1e9 / (double)sysconf(_SC_CLK_TCK) / (double)(m1 - m0) : 0;
        w[i].worker_cpu_pct = (t0 >= 0 && t1 >= 0) ?
            (double)(t1 - t0) * 1e9 / (double)sysconf(_SC_CLK_TCK) / (double)(s1 - s0) * 100 : 0;
        printf("{\"bench\":\"schedlat\",\"window\":%d,\"probes\":\"%s\",\"conns\":%d,"
               "\"depth\":%d,\"size\":%d,\"window_ms\":%d,\"msgs_per_s\":%.0f,"
               "\"worker_cpu_pct\":%.1f,\"worker_cpu_ns_per_msg\":%.0f,\"prog_runs\":%.0f,"
               "\"prog_ns\":%.0f}\n", i, modes[w[i].mode], opt_conns, opt_depth, opt_size,
               opt_window_ms, w[i].msgs_per_s, w[i].worker_cpu_pct, w[i].cpu_ns_per_msg,
               w[i].prog_runs, w[i].prog_ns);
        fflush(stdout);
    }
    atomic_store(&stop, 1);
    for (i = 0; i < opt_conns; i++) {
        pthread_join(th[i], NULL);
        failed |= cl[i].failed;
    }

    for (i = 0; i < n; i++) {
        double off = neighbours_off(w, n, i, 0), coff = neighbours_off(w, n, i, 1);

        m = w[i].mode;
        rate[m][nrate[m]] = w[i].msgs_per_s;
        cost[m][nrate[m]++] = w[i].cpu_ns_per_msg;
        if (m != 0 && off > 0 && coff > 0) {
            ratio[m][nratio[m]] = w[i].msgs_per_s / off;
            cratio[m][nratio[m]++] = w[i].cpu_ns_per_msg / coff;
        }
    }
    printf("summary (%d windows of %d ms, %d conns x %d in flight, %d-byte messages): "
           "no probes %.0f msgs/s, %.0f ns worker CPU/msg (medians)", n, opt_window_ms,
           opt_conns, opt_depth, opt_size, median(rate[0], nrate[0]), median(cost[0], nrate[0]));
    printf("%s\n", attached_all ? "" : " (probes did NOT attach: see above)");
    for (m = 1; m < NMODES; m++) {
        double secs = 0, nmsgs = 0, runs = 0, ns = 0;

        for (i = 0; i < n; i++) {
            if (w[i].mode != m)
                continue;
            secs += w[i].secs;
            nmsgs += w[i].msgs;
            runs += w[i].prog_runs;
            ns += w[i].prog_ns;
        }
        printf("  %s: %.0f msgs/s (median), %+.1f%% msgs/s and %+.1f%% worker CPU/msg against "
               "the unprobed windows beside it (median ratio); in-kernel cost: %.0f program "
               "runs/s, %.0f ns/run, %.3f%% of the machine's %ld CPUs, %.0f ns per message\n",
               modes[m], median(rate[m], nrate[m]), (median(ratio[m], nratio[m]) - 1) * 100,
               (median(cratio[m], nratio[m]) - 1) * 100, secs > 0 ? runs / secs : 0,
               runs > 0 ? ns / runs : 0,
               secs > 0 ? ns / (secs * 1e9 * (double)sysconf(_SC_NPROCESSORS_ONLN)) * 100 : 0,
               sysconf(_SC_NPROCESSORS_ONLN), nmsgs > 0 ? ns / nmsgs : 0);
    }

out_daemon:
    if (pid > 0) {
        kill(pid, SIGINT);
        waitpid(pid, NULL, 0);
    }
    unlink(conf);
    if (!failed)
        unlink(log);
    kill(backend, SIGINT);
    waitpid(backend, NULL, 0);
    return failed ? 1 : 0;
}
