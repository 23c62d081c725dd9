/* tests/harness.c — helpers for integration tests that run the real daemon (harness.h). */
#include "harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_PROCS   64          /* processes alive at once, over a whole test case */
#define ECHO_BUF    (64 * 1024)

/* ------------------------------------------------------------------ state */

/* Pids of the processes we started. Shared with the runner when th_unchecked_setup()
 * mapped it before Check forked the test, so that the runner can reap what a failed
 * test left behind. */
struct registry {
    volatile pid_t pids[MAX_PROCS];
};

static struct registry   *reg;
static int                reg_shared;
static int                prev_subreaper = -1;
static char               tmpdir[TH_PATH_MAX];
static pid_t              tmpdir_owner;       /* the process that removes it */
static int                tmpdir_lazy;        /* made by th_tmpdir(), not by a fixture */
static struct th_daemon  *daemons;            /* this process's, for th_teardown() */
static struct th_echo    *echos;
static struct th_blackhole *holes;

static void reg_add(pid_t pid)
{
    int i;

    if (!reg) {
        reg = calloc(1, sizeof(*reg));
        if (!reg)
            return;
    }
    for (i = 0; i < MAX_PROCS; i++) {
        if (reg->pids[i] == 0) {
            reg->pids[i] = pid;
            return;
        }
    }
}

static void reg_del(pid_t pid)
{
    int i;

    if (!reg)
        return;
    for (i = 0; i < MAX_PROCS; i++)
        if (reg->pids[i] == pid)
            reg->pids[i] = 0;
}

/* Kills and reaps every registered process that is a child of ours. Only children: a pid
 * that is not ours may already belong to someone else. */
static void reap_registered(void)
{
    pid_t pid;
    int i, st;

    if (!reg)
        return;
    for (i = 0; i < MAX_PROCS; i++) {
        pid = reg->pids[i];
        if (pid <= 0)
            continue;
        if (waitpid(pid, &st, WNOHANG) == 0) {
            kill(pid, SIGKILL);
            while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                ;
        }
        reg->pids[i] = 0;       /* reaped, or not ours to reap */
    }
}

static void remove_tree(const char *dir)
{
    char path[TH_PATH_MAX + 256];
    struct dirent *de;
    DIR *d = opendir(dir);

    if (!d)
        return;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* ------------------------------------------------------------------ fixtures */

static void make_tmpdir(void);

void th_unchecked_setup(void)
{
    void *p;

    p = mmap(NULL, sizeof(*reg), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_msg(p != MAP_FAILED, "mmap: %s", strerror(errno));
    if (reg && !reg_shared)
        free(reg);
    reg = p;
    reg_shared = 1;
    /* Daemons orphaned by a failed test come to us rather than to init. */
    if (prctl(PR_GET_CHILD_SUBREAPER, &prev_subreaper) < 0)
        prev_subreaper = 0;
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (tmpdir[0] && tmpdir_lazy && tmpdir_owner == getpid())
        remove_tree(tmpdir);
    tmpdir[0] = '\0';
    make_tmpdir();
    tmpdir_lazy = 0;
}

void th_unchecked_teardown(void)
{
    th_teardown();              /* no-fork mode: the test's objects live here */
    reap_registered();
    if (prev_subreaper >= 0)
        prctl(PR_SET_CHILD_SUBREAPER, prev_subreaper);
    prev_subreaper = -1;
    if (tmpdir[0] && tmpdir_owner == getpid())
        remove_tree(tmpdir);
    tmpdir[0] = '\0';
    if (reg_shared)
        munmap(reg, sizeof(*reg));
    else
        free(reg);
    reg = NULL;
    reg_shared = 0;
}

void th_setup(void)
{
    th_tmpdir();
}

void th_teardown(void)
{
    while (daemons)
        th_daemon_free(daemons);
    while (echos)
        th_echo_free(echos);
    while (holes)
        th_blackhole_free(holes);
    reap_registered();
}

void th_tcase_add_fixtures(TCase *tc)
{
    tcase_add_unchecked_fixture(tc, th_unchecked_setup, th_unchecked_teardown);
    tcase_add_checked_fixture(tc, th_setup, th_teardown);
}

void th_suite_add(Suite *s, const char *name, const TTest *test, int timeout_s)
{
    TCase *tc = tcase_create(name);

    th_tcase_add_fixtures(tc);
    tcase_set_timeout(tc, timeout_s);
    tcase_add_test(tc, test);
    suite_add_tcase(s, tc);
}

/* ------------------------------------------------------------------ time, files, ports */

int64_t th_now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void th_sleep_ms(int64_t ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

void th_note(const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (!getenv("CG_TEST_VERBOSE"))
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "note: %s\n", line);
}

void th_skip(const char *file, const char *func, const char *fmt, ...)
{
    const char *base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file, *path;
    char line[1024], reason[768];
    size_t slen = strlen(base), flen = strlen(func);
    va_list ap;
    int fd, n;

    /* tests/test_NAME.c -> NAME; test_x_fn -> test_x */
    if (strncmp(base, "test_", 5) == 0)
        base += 5, slen -= 5;
    if (slen > 2 && strcmp(base + slen - 2, ".c") == 0)
        slen -= 2;
    if (flen > 3 && strcmp(func + flen - 3, "_fn") == 0)
        flen -= 3;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof(reason), fmt, ap);
    va_end(ap);
    n = snprintf(line, sizeof(line), "SKIP: %.*s/%.*s: %s\n", (int)slen, base, (int)flen,
                 func, reason);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line))
        n = sizeof(line) - 1;
    fputs(line, stdout);
    fflush(stdout);
    /* One write() of one line with O_APPEND: lines of tests that run in turn never mix. */
    path = getenv("CG_SKIP_FILE");
    if (!path || !*path)
        return;
    fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    if (write(fd, line, (size_t)n) < 0)
        fprintf(stderr, "th_skip: %s: %s\n", path, strerror(errno));
    close(fd);
}

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/corogate-test.XXXXXX");
    tmpdir_owner = 0;                           /* 0: never removed */
    if (mkdtemp(tmpdir))
        tmpdir_owner = getpid();
    else
        snprintf(tmpdir, sizeof(tmpdir), "/tmp");
}

/* A directory made outside the fixtures goes when its process exits normally (a test that
 * passed, in fork mode; the runner, in no-fork mode). */
static void remove_lazy_tmpdir(void)
{
    if (tmpdir[0] && tmpdir_lazy && tmpdir_owner == getpid())
        remove_tree(tmpdir);
}

const char *th_tmpdir(void)
{
    static int registered;

    if (!tmpdir[0]) {
        make_tmpdir();
        tmpdir_lazy = 1;
        if (!registered++)
            atexit(remove_lazy_tmpdir);
    }
    return tmpdir;
}

/* Creates "<tmpdir>/XXXXXX-<name>". Returns the descriptor (close-on-exec) or -errno. */
static int create_temp(char *path, size_t size, const char *name)
{
    int fd, n;

    n = snprintf(path, size, "%s/XXXXXX-%s", th_tmpdir(), name);
    if (n < 0 || (size_t)n >= size)
        return -ENAMETOOLONG;
    fd = mkostemps(path, (int)strlen(name) + 1, O_CLOEXEC | O_APPEND);
    return fd < 0 ? -errno : fd;
}

static int write_all(int fd, const char *s, size_t len)
{
    ssize_t n;

    while (len) {
        n = write(fd, s, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        s += n;
        len -= (size_t)n;
    }
    return 0;
}

static int vwrite_file(char *path, size_t size, const char *name, const char *fmt, va_list ap)
{
    char *text = NULL;
    int fd, n, err;

    n = vasprintf(&text, fmt, ap);
    if (n < 0)
        return -ENOMEM;
    fd = create_temp(path, size, name);
    if (fd < 0) {
        free(text);
        return fd;
    }
    err = write_all(fd, text, (size_t)n);
    close(fd);
    free(text);
    return err;
}

int th_write_file(char *path, size_t size, const char *name, const char *fmt, ...)
{
    va_list ap;
    int err;

    va_start(ap, fmt);
    err = vwrite_file(path, size, name, fmt, ap);
    va_end(ap);
    return err;
}

int th_conf_write(char *path, size_t size, const char *fmt, ...)
{
    va_list ap;
    int err;

    va_start(ap, fmt);
    err = vwrite_file(path, size, "corogate.ini", fmt, ap);
    va_end(ap);
    return err;
}

char *th_read_file(const char *path, size_t *len)
{
    char *buf = NULL, *p;
    size_t n = 0, cap = 0;
    ssize_t r;
    int fd, saved;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    for (;;) {
        if (cap - n < 4096) {
            cap = cap ? cap * 2 : 16384;
            p = realloc(buf, cap);
            if (!p) {
                errno = ENOMEM;
                goto out_err;
            }
            buf = p;
        }
        r = read(fd, buf + n, cap - n - 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            goto out_err;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    if (len)
        *len = n;
    return buf;

out_err:
    saved = errno;
    free(buf);
    close(fd);
    errno = saved;
    return NULL;
}

const char *th_tail(const char *s, size_t max)
{
    size_t n = strlen(s);
    const char *t, *nl;

    if (n <= max)
        return s;
    t = s + n - max;
    nl = strchr(t, '\n');
    return nl && nl[1] ? nl + 1 : t;
}

/* A TCP socket bound to 127.0.0.1 at a port the kernel picks (*<port>), listening with
 * <backlog> unless it is negative. Returns the descriptor or a negative errno. */
static int bound_loopback(int backlog, int *port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof(sin);
    int fd, err;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 ||
        (backlog >= 0 && listen(fd, backlog) < 0) ||
        getsockname(fd, (struct sockaddr *)&sin, &len) < 0) {
        err = -errno;
        close(fd);
        return err;
    }
    *port = ntohs(sin.sin_port);
    return fd;
}

int th_free_port(void)
{
    int port, fd = bound_loopback(-1, &port);

    if (fd < 0)
        return fd;
    close(fd);
    return port;
}

/* ------------------------------------------------------------------ processes */

char *th_build_path(char *buf, size_t size, const char *name)
{
    const char *build = getenv("CG_BUILD");

    if (!build || !*build)
        build = "build";
    snprintf(buf, size, "%s/%s", build, name);
    return buf;
}

const char *th_daemon_path(void)
{
    static char path[TH_PATH_MAX];

    return th_build_path(path, sizeof(path), "corogate");
}

const char *th_describe_status(int status, char *buf, size_t size)
{
    if (status < 0)
        snprintf(buf, size, "not reaped (%s)", strerror(-status));
    else if (WIFEXITED(status))
        snprintf(buf, size, "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(buf, size, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
    else
        snprintf(buf, size, "wait status 0x%x", status);
    return buf;
}

int64_t th_proc_cpu_ms(pid_t pid)
{
    char path[64], *stat, *p;
    unsigned long long utime, stime;
    long tck = sysconf(_SC_CLK_TCK);

    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    stat = th_read_file(path, NULL);
    if (!stat)
        return -errno;
    /* After "pid (comm) ": state is field 3; utime and stime are fields 14 and 15. */
    p = strrchr(stat, ')');
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &utime, &stime) != 2) {
        free(stat);
        return -EPROTO;
    }
    free(stat);
    return (int64_t)((utime + stime) * 1000 / (unsigned long long)(tck > 0 ? tck : 100));
}

int th_proc_fd_count(pid_t pid, const char *prefix)
{
    char path[64], link[320], target[256];
    struct dirent *de;
    ssize_t len;
    DIR *d;
    int n = 0;

    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    d = opendir(path);
    if (!d)
        return -errno;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (prefix) {
            snprintf(link, sizeof(link), "%s/%s", path, de->d_name);
            len = readlink(link, target, sizeof(target) - 1);
            if (len < 0)
                continue;       /* closed meanwhile */
            target[len] = '\0';
            if (strncmp(target, prefix, strlen(prefix)) != 0)
                continue;
        }
        n++;
    }
    closedir(d);
    return n;
}

/* The child's side of fork: async-signal-safe calls only, the parent may have threads. */
__attribute__((noreturn))
static void exec_child(const char *path, char *const argv[], int outfd, rlim_t nofile,
                       pid_t parent)
{
    static const char msg[] = "harness: cannot exec the program\n";
    struct rlimit rl = { nofile, nofile };
    sigset_t all;
    int fd;

    /* Dies with the test, even when a failed assertion ends it before its teardown. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    fd = open("/dev/null", O_RDONLY);
    if (fd >= 0 && fd != 0) {
        dup2(fd, 0);
        close(fd);
    }
    dup2(outfd, 1);
    dup2(outfd, 2);
    if (syscall(SYS_close_range, 3u, ~0u, 0u) < 0)
        for (fd = 3; fd < 65536; fd++)
            close(fd);
    if (nofile && setrlimit(RLIMIT_NOFILE, &rl) < 0)
        _exit(126);
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    execv(path, argv);
    if (write(2, msg, sizeof(msg) - 1) < 0)
        _exit(127);
    _exit(127);
}

pid_t th_fork(void)
{
    pid_t pid = fork();

    if (pid < 0)
        ck_abort_msg("fork(): %s", strerror(errno));
    return pid;
}

/* Forks and execs <path> with <argv>, output to <outfd>, and registers the child.
 * Returns the pid or -errno. */
static pid_t spawn_path(const char *path, char *const argv[], int outfd, rlim_t nofile)
{
    pid_t parent = getpid(), pid;

    if (access(path, X_OK) < 0)
        return -errno;
    pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0)
        exec_child(path, argv, outfd, nofile, parent);
    reg_add(pid);
    return pid;
}

/* Forks and execs the daemon binary with <argv>, output to <outfd>. Returns the pid or
 * -errno. */
static pid_t spawn(char *const argv[], int outfd, rlim_t nofile)
{
    return spawn_path(th_daemon_path(), argv, outfd, nofile);
}

/* Waits up to <timeout_ms> for <pid>. Returns its wait status, -ETIMEDOUT or -errno. */
static int wait_pid(pid_t pid, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    pid_t r;
    int st;

    for (;;) {
        r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            reg_del(pid);
            return st;
        }
        if (r < 0 && errno != EINTR)
            return -errno;
        if (th_now_ms() >= deadline)
            return -ETIMEDOUT;
        th_sleep_ms(2);
    }
}

static void kill_reap(pid_t pid, int *status)
{
    int st = 0;

    kill(pid, SIGKILL);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    reg_del(pid);
    if (status)
        *status = st;
}

struct th_daemon *th_daemon_start(const char *conf, const struct th_daemon_opts *opts)
{
    struct th_daemon *d;
    char *argv[4];
    int fd, err;
    pid_t pid;

    d = calloc(1, sizeof(*d));
    if (!d)
        return NULL;
    d->pid = -1;
    snprintf(d->conf, sizeof(d->conf), "%s", conf);
    if (opts && opts->ready_log)
        snprintf(d->ready_log, sizeof(d->ready_log), "%s", opts->ready_log);
    fd = create_temp(d->log, sizeof(d->log), "corogate.log");
    if (fd < 0) {
        err = fd;
        goto out_free;
    }
    argv[0] = (char *)th_daemon_path();
    argv[1] = (char *)"-c";
    argv[2] = d->conf;
    argv[3] = NULL;
    pid = spawn(argv, fd, opts ? opts->nofile : 0);
    close(fd);
    if (pid < 0) {
        err = (int)pid;
        goto out_free;
    }
    d->pid = pid;
    d->next = daemons;
    daemons = d;
    return d;

out_free:
    free(d);
    errno = -err;
    return NULL;
}

struct th_daemon *th_daemon_start_conf(const struct th_daemon_opts *opts, const char *fmt, ...)
{
    char path[TH_PATH_MAX];
    va_list ap;
    int err;

    va_start(ap, fmt);
    err = vwrite_file(path, sizeof(path), "corogate.ini", fmt, ap);
    va_end(ap);
    if (err < 0) {
        errno = -err;
        return NULL;
    }
    return th_daemon_start(path, opts);
}

int th_daemon_is_alive(struct th_daemon *d)
{
    int st;

    if (d->pid < 0)
        return 0;
    st = wait_pid(d->pid, 0);
    if (st == -ETIMEDOUT)
        return 1;
    if (st >= 0)
        d->status = st;
    d->pid = -1;
    return 0;
}

int th_daemon_wait_ready(struct th_daemon *d, int port, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    int fd, logged = !d->ready_log[0];

    /* The log line first: the probe then meets a daemon done with its start. */
    for (;;) {
        if (!th_daemon_is_alive(d))
            return -ECHILD;
        if (!logged)
            logged = th_daemon_log_count(d, d->ready_log) > 0;
        if (logged) {
            fd = th_connect(port, 200);
            if (fd >= 0) {
                close(fd);
                /* Someone else's listener on the port would accept too: ours is up
                 * when the daemon still runs after it. */
                return th_daemon_is_alive(d) ? 0 : -ECHILD;
            }
        }
        if (th_now_ms() >= deadline)
            return -ETIMEDOUT;
        th_sleep_ms(5);
    }
}

int th_daemon_wait_exit(struct th_daemon *d, int timeout_ms)
{
    int st;

    if (d->pid < 0)
        return -ECHILD;
    st = wait_pid(d->pid, timeout_ms);
    if (st == -ETIMEDOUT)
        return st;
    if (st >= 0)
        d->status = st;
    d->pid = -1;
    return st;
}

int th_daemon_stop(struct th_daemon *d, int sig, int timeout_ms)
{
    int st;

    if (d->pid < 0)
        return -ECHILD;
    kill(d->pid, sig);
    st = th_daemon_wait_exit(d, timeout_ms);
    if (st != -ETIMEDOUT)
        return st;
    kill_reap(d->pid, &d->status);
    d->pid = -1;
    return d->status;
}

void th_daemon_free(struct th_daemon *d)
{
    struct th_daemon **pp;

    if (!d)
        return;
    if (d->pid > 0)
        kill_reap(d->pid, &d->status);
    for (pp = &daemons; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            break;
        }
    }
    free(d);
}

char *th_daemon_log(struct th_daemon *d)
{
    char *log = th_read_file(d->log, NULL);

    return log ? log : strdup("");
}

int th_daemon_log_count(struct th_daemon *d, const char *needle)
{
    char *log = th_daemon_log(d), *p;
    int n = 0;

    if (!log)
        return 0;
    for (p = log; (p = strstr(p, needle)) != NULL; p += strlen(needle))
        n++;
    free(log);
    return n;
}

int th_daemon_wait_log(struct th_daemon *d, const char *needle, int count, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;

    for (;;) {
        if (th_daemon_log_count(d, needle) >= count)
            return 0;
        if (th_now_ms() >= deadline)
            return -ETIMEDOUT;
        th_sleep_ms(10);
    }
}

/* Appends "name state wchan" for each thread of <pid> to <buf> of <size>: where a daemon
 * that does not exit is stuck. */
static void describe_threads(pid_t pid, char *buf, size_t size)
{
    char path[320], *stat, *wchan, *p;
    struct dirent *de;
    size_t len = 0;
    DIR *d;

    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    d = opendir(path);
    if (!d)
        return;
    while ((de = readdir(d)) != NULL && len + 80 < size) {
        if (de->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/%d/task/%s/stat", (int)pid, de->d_name);
        stat = th_read_file(path, NULL);
        snprintf(path, sizeof(path), "/proc/%d/task/%s/wchan", (int)pid, de->d_name);
        wchan = th_read_file(path, NULL);
        p = stat ? strrchr(stat, ')') : NULL;
        if (p && strchr(stat, '('))
            len += (size_t)snprintf(buf + len, size - len, " [%.*s %c %s]",
                                    (int)(p - strchr(stat, '(') - 1), strchr(stat, '(') + 1,
                                    p[2], wchan ? wchan : "?");
        free(stat);
        free(wchan);
    }
    closedir(d);
}

/* Prints every thread's stack of the running daemon <pid> to stderr (gdb, where
 * installed): what a worker that does not answer was doing when a test gave up on it. The
 * failure message only has room for the log's tail; this goes to the test's output. */
static void print_stacks(pid_t pid)
{
    char spid[16];
    const char *argv[] = { "/usr/bin/gdb", "-nx", "-batch", "-p", spid, "-ex",
                           "thread apply all bt 40", NULL };
    struct th_run_result r;

    if (access(argv[0], X_OK) < 0)
        return;
    snprintf(spid, sizeof(spid), "%d", (int)pid);
    if (th_run(&r, 30000, argv) < 0)
        return;
    fprintf(stderr, "---- stacks of daemon pid %d (gdb) ----\n%s----\n", (int)pid, r.out);
    th_run_result_deinit(&r);
}

const char *th_daemon_tail(struct th_daemon *d)
{
    char how[400], *log;
    int n;

    if (!d)
        return "(no daemon)";
    if (d->pid > 0) {
        n = snprintf(how, sizeof(how), "pid %d, running; threads:", (int)d->pid);
        describe_threads(d->pid, how + n, sizeof(how) - (size_t)n);
        print_stacks(d->pid);
    } else {
        th_describe_status(d->status, how, sizeof(how));
    }
    log = th_daemon_log(d);
    snprintf(d->tail, sizeof(d->tail), "---- %s (daemon %s), last lines ----\n%s----",
             d->log, how, log ? th_tail(log, TH_TAIL_MAX - 600) : "(unreadable)\n");
    free(log);
    return d->tail;
}

int th_run_daemon(struct th_run_result *r, int timeout_ms, const char *const *args)
{
    const char *argv[16];
    size_t i;

    argv[0] = th_daemon_path();
    for (i = 0; args[i] && i + 2 < sizeof(argv) / sizeof(argv[0]); i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    return th_run(r, timeout_ms, argv);
}

int th_run(struct th_run_result *r, int timeout_ms, const char *const *argv)
{
    char path[TH_PATH_MAX];
    pid_t pid;
    int fd;

    memset(r, 0, sizeof(*r));
    if (access(argv[0], X_OK) < 0)
        return -errno;
    fd = create_temp(path, sizeof(path), "run.out");
    if (fd < 0)
        return fd;
    pid = spawn_path(argv[0], (char *const *)argv, fd, 0);
    close(fd);
    if (pid < 0) {
        unlink(path);
        return (int)pid;
    }
    r->status = wait_pid(pid, timeout_ms);
    if (r->status == -ETIMEDOUT)
        kill_reap(pid, NULL);
    r->out = th_read_file(path, &r->len);
    if (!r->out) {
        r->out = strdup("");
        r->len = 0;
    }
    unlink(path);
    return 0;
}

void th_run_result_deinit(struct th_run_result *r)
{
    free(r->out);
    r->out = NULL;
    r->len = 0;
}

/* ------------------------------------------------------------------ helper processes */

int th_helper_start(struct th_helper *h, const char *const *argv, const char *after,
                    int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    const char *at;
    char *text;
    int fd, st, found;

    h->pid = -1;
    h->port = 0;
    if (access(argv[0], X_OK) < 0)
        return -errno;
    fd = create_temp(h->out, sizeof(h->out), "helper.out");
    if (fd < 0)
        return fd;
    h->pid = spawn_path(argv[0], (char *const *)argv, fd, 0);
    close(fd);
    if (h->pid < 0) {
        fd = (int)h->pid;
        h->pid = -1;
        return fd;
    }
    while (after) {
        text = th_read_file(h->out, NULL);
        at = text ? strstr(text, after) : NULL;
        found = at && sscanf(at + strlen(after), "%d", &h->port) == 1;
        free(text);
        if (found)
            return 0;
        if (waitpid(h->pid, &st, WNOHANG) == h->pid) {
            reg_del(h->pid);
            h->pid = -1;
            return -ECHILD;
        }
        if (th_now_ms() >= deadline) {
            th_helper_stop(h);
            return -ETIMEDOUT;
        }
        th_sleep_ms(10);
    }
    return 0;
}

void th_helper_stop(struct th_helper *h)
{
    if (h->pid > 0)
        kill_reap(h->pid, NULL);
    h->pid = -1;
}

/* ------------------------------------------------------------------ echo backend */

struct echo_conn {
    struct th_echo   *e;
    int               fd;         /* -1 once closed; guarded by e->lock */
    int               done;       /* the thread has finished; guarded by e->lock */
    pthread_t         thread;
    struct echo_conn *next;
};

struct th_echo {
    int               port;
    int               lfd;
    int               wake[2];    /* a byte here stops the accepting thread */
    int               running;
    pthread_t         thread;
    pthread_mutex_t   lock;
    struct echo_conn *conns;
    _Atomic int       stopping;
    _Atomic unsigned  accepted, served, eofs, active;
    _Atomic unsigned  from_127[256];  /* accepted from 127.0.0.N, by N */
    struct th_echo   *next;       /* the harness's list */
};

static int send_full(int fd, const char *p, size_t len)
{
    ssize_t n;

    while (len) {
        n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *echo_conn_main(void *arg)
{
    struct echo_conn *c = arg;
    struct th_echo *e = c->e;
    char *buf = malloc(ECHO_BUF);
    int served = 0;
    ssize_t n;

    while (buf) {
        n = recv(c->fd, buf, ECHO_BUF, 0);
        if (n > 0) {
            if (!served++)
                atomic_fetch_add(&e->served, 1);
            if (send_full(c->fd, buf, (size_t)n) < 0)
                break;
            continue;
        }
        if (n == 0) {
            if (!atomic_load(&e->stopping))
                atomic_fetch_add(&e->eofs, 1);
            shutdown(c->fd, SHUT_WR);
            break;
        }
        if (errno != EINTR)
            break;
    }
    free(buf);
    pthread_mutex_lock(&e->lock);
    atomic_fetch_sub(&e->active, 1);
    close(c->fd);
    c->fd = -1;
    c->done = 1;
    pthread_mutex_unlock(&e->lock);
    return NULL;
}

/* Joins and frees the finished connections. Called with e->lock held. */
static void echo_reap_done(struct th_echo *e)
{
    struct echo_conn **pp = &e->conns, *c;

    while ((c = *pp) != NULL) {
        if (c->done) {
            *pp = c->next;
            pthread_join(c->thread, NULL);
            free(c);
        } else {
            pp = &c->next;
        }
    }
}

static void *echo_accept_main(void *arg)
{
    struct th_echo *e = arg;
    struct pollfd pf[2];
    struct echo_conn *c;
    struct sockaddr_storage ss;
    const struct sockaddr_in *peer = (const struct sockaddr_in *)&ss;
    socklen_t peer_len;
    uint32_t ip;
    int fd;

    for (;;) {
        pf[0] = (struct pollfd){ .fd = e->lfd, .events = POLLIN };
        pf[1] = (struct pollfd){ .fd = e->wake[0], .events = POLLIN };
        if (poll(pf, 2, -1) < 0 && errno != EINTR)
            break;
        if (pf[1].revents)
            break;
        if (!(pf[0].revents & POLLIN))
            continue;
        peer_len = sizeof(ss);
        fd = accept4(e->lfd, (struct sockaddr *)&ss, &peer_len, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE)
                th_sleep_ms(10);
            continue;
        }
        /* Open before accepted: whoever sees the count sees the connection open. */
        atomic_fetch_add(&e->active, 1);
        ip = ntohl(peer->sin_addr.s_addr);
        if (ss.ss_family == AF_INET && ip >> 8 == 0x7f0000)
            atomic_fetch_add(&e->from_127[ip & 0xff], 1);
        atomic_fetch_add(&e->accepted, 1);
        c = calloc(1, sizeof(*c));
        if (!c) {
            atomic_fetch_sub(&e->active, 1);
            close(fd);
            continue;
        }
        c->e = e;
        c->fd = fd;
        pthread_mutex_lock(&e->lock);
        echo_reap_done(e);
        if (pthread_create(&c->thread, NULL, echo_conn_main, c) != 0) {
            atomic_fetch_sub(&e->active, 1);
            close(fd);
            free(c);
        } else {
            c->next = e->conns;
            e->conns = c;
        }
        pthread_mutex_unlock(&e->lock);
    }
    return NULL;
}

int th_echo_start(struct th_echo *e)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof(sin);
    int one = 1, err;

    if (e->running)
        return -EALREADY;
    e->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (e->lfd < 0)
        return -errno;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)e->port);
    if (setsockopt(e->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(e->lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(e->lfd, 256) < 0 ||
        getsockname(e->lfd, (struct sockaddr *)&sin, &len) < 0)
        goto out_errno;
    e->port = ntohs(sin.sin_port);
    if (pipe2(e->wake, O_CLOEXEC) < 0)
        goto out_errno;
    atomic_store(&e->stopping, 0);
    err = pthread_create(&e->thread, NULL, echo_accept_main, e);
    if (err) {
        close(e->wake[0]);
        close(e->wake[1]);
        close(e->lfd);
        e->lfd = -1;
        return -err;
    }
    e->running = 1;
    return 0;

out_errno:
    err = -errno;
    close(e->lfd);
    e->lfd = -1;
    return err;
}

void th_echo_stop(struct th_echo *e)
{
    struct echo_conn *c;

    if (!e->running)
        return;
    atomic_store(&e->stopping, 1);
    if (write(e->wake[1], "x", 1) < 0)
        abort();
    pthread_join(e->thread, NULL);
    close(e->lfd);
    e->lfd = -1;
    close(e->wake[0]);
    close(e->wake[1]);
    pthread_mutex_lock(&e->lock);
    for (c = e->conns; c; c = c->next)
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);     /* wakes its thread; the thread closes it */
    pthread_mutex_unlock(&e->lock);
    while ((c = e->conns) != NULL) {
        e->conns = c->next;
        pthread_join(c->thread, NULL);
        free(c);
    }
    e->running = 0;
}

struct th_echo *th_echo_new(int port)
{
    struct th_echo *e = calloc(1, sizeof(*e));
    int err;

    if (!e)
        return NULL;
    e->port = port;
    e->lfd = -1;
    pthread_mutex_init(&e->lock, NULL);
    err = th_echo_start(e);
    if (err < 0) {
        pthread_mutex_destroy(&e->lock);
        free(e);
        errno = -err;
        return NULL;
    }
    e->next = echos;
    echos = e;
    return e;
}

void th_echo_free(struct th_echo *e)
{
    struct th_echo **pp;

    if (!e)
        return;
    th_echo_stop(e);
    for (pp = &echos; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            break;
        }
    }
    pthread_mutex_destroy(&e->lock);
    free(e);
}

int th_echo_port(const struct th_echo *e)
{
    return e->port;
}

unsigned th_echo_accepted(const struct th_echo *e)
{
    return atomic_load(&e->accepted);
}

unsigned th_echo_accepted_from(const struct th_echo *e, unsigned n)
{
    return n < 256 ? atomic_load(&e->from_127[n]) : 0;
}

unsigned th_echo_served(const struct th_echo *e)
{
    return atomic_load(&e->served);
}

unsigned th_echo_eofs(const struct th_echo *e)
{
    return atomic_load(&e->eofs);
}

unsigned th_echo_active(const struct th_echo *e)
{
    return atomic_load(&e->active);
}

int th_echo_wait_accepted(const struct th_echo *e, unsigned n, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;

    while (th_echo_accepted(e) < n) {
        if (th_now_ms() >= deadline)
            return -ETIMEDOUT;
        th_sleep_ms(2);
    }
    return 0;
}

/* ------------------------------------------------------------------ blackhole */

/* Starts a non-blocking connect to 127.0.0.1:<port>. Returns the descriptor or -errno. */
static int connect_nowait(int port)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    int fd, err;

    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno != EINPROGRESS) {
        err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

struct th_blackhole *th_blackhole_new(void)
{
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof(sin);
    struct th_blackhole *b;
    struct pollfd pf;
    int i, err = 0, soerr = 0;

    b = calloc(1, sizeof(*b));
    if (!b)
        return NULL;
    for (i = 0; i < 3; i++)
        b->fill[i] = -1;
    b->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (b->lfd < 0)
        goto out_errno;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(b->lfd, (struct sockaddr *)&sin, sizeof(sin)) < 0 || listen(b->lfd, 0) < 0 ||
        getsockname(b->lfd, (struct sockaddr *)&sin, &len) < 0)
        goto out_errno;
    b->port = ntohs(sin.sin_port);
    b->next = holes;
    holes = b;

    /* The first connection fills the queue (backlog 0 holds one); the second one's SYN
     * and every later one are dropped. */
    for (i = 0; i < 2; i++) {
        b->fill[i] = connect_nowait(b->port);
        if (b->fill[i] < 0) {
            err = b->fill[i];
            goto out_free;
        }
        pf = (struct pollfd){ .fd = b->fill[i], .events = POLLOUT };
        poll(&pf, 1, i == 0 ? 1000 : 0);
    }
    /* The proof: a third one must stay pending. */
    b->fill[2] = connect_nowait(b->port);
    if (b->fill[2] < 0) {
        err = b->fill[2];
        goto out_free;
    }
    pf = (struct pollfd){ .fd = b->fill[2], .events = POLLOUT };
    if (poll(&pf, 1, 100) != 0) {
        len = sizeof(soerr);
        getsockopt(b->fill[2], SOL_SOCKET, SO_ERROR, &soerr, &len);
        err = soerr ? -soerr : -EPROTO;
        goto out_free;
    }
    return b;

out_errno:
    err = -errno;
    if (b->lfd >= 0)
        close(b->lfd);
    free(b);
    errno = -err;
    return NULL;
out_free:
    th_blackhole_free(b);
    errno = -err;
    return NULL;
}

void th_blackhole_free(struct th_blackhole *b)
{
    struct th_blackhole **pp;
    int i;

    if (!b)
        return;
    for (i = 0; i < 3; i++)
        if (b->fill[i] >= 0)
            close(b->fill[i]);
    close(b->lfd);
    for (pp = &holes; *pp; pp = &(*pp)->next) {
        if (*pp == b) {
            *pp = b->next;
            break;
        }
    }
    free(b);
}

/* ------------------------------------------------------------------ clients */

static int set_timeouts(int fd, int timeout_ms)
{
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };

    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)
        return -errno;
    return 0;
}

int th_listen(int *port)
{
    return bound_loopback(64, port);
}

int th_accept(int lfd, int timeout_ms)
{
    struct pollfd pf = { .fd = lfd, .events = POLLIN };
    int fd, n, err;

    do
        n = poll(&pf, 1, timeout_ms);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -ETIMEDOUT;
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return -errno;
    err = set_timeouts(fd, timeout_ms);
    if (err < 0) {
        close(fd);
        return err;
    }
    return fd;
}

int th_connect(int port, int timeout_ms)
{
    return th_connect_from(NULL, port, timeout_ms);
}

int th_connect_from(const char *src, int port, int timeout_ms)
{
    struct sockaddr_in sin = { .sin_family = AF_INET }, from = { .sin_family = AF_INET };
    int fd, one = 1, err;

    if (src && inet_pton(AF_INET, src, &from.sin_addr) != 1)
        return -EINVAL;
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sin.sin_port = htons((uint16_t)port);
    err = set_timeouts(fd, timeout_ms);     /* SO_SNDTIMEO bounds connect() too */
    if (err < 0)
        goto out_fd;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (src && bind(fd, (struct sockaddr *)&from, sizeof(from)) < 0) {
        err = -errno;
        goto out_fd;
    }
    while (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0) {
        if (errno == EINTR)
            continue;
        err = errno == EINPROGRESS || errno == EAGAIN ? -ETIMEDOUT : -errno;
        goto out_fd;
    }
    return fd;

out_fd:
    close(fd);
    return err;
}

int th_ws_open(int port, const char *target, const char *headers, int timeout_ms, char *head,
               size_t size)
{
    char req[2048];
    size_t n = 0;
    int fd, len;
    ssize_t r;

    len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                   "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n%s\r\n", target, headers ? headers : "");
    if (len < 0 || (size_t)len >= sizeof(req) || size < 5)
        return -ENOSPC;
    fd = th_connect(port, timeout_ms);
    if (fd < 0)
        return fd;
    if ((r = th_send_all(fd, req, (size_t)len)) < 0)
        goto out_fd;
    /* Byte by byte: frames may follow the head. */
    while (n < size - 1 && (n < 4 || memcmp(head + n - 4, "\r\n\r\n", 4) != 0)) {
        r = th_recv_n(fd, head + n, 1);
        if (r <= 0) {
            r = r == 0 ? -EPIPE : r;
            goto out_fd;
        }
        n++;
    }
    head[n] = '\0';
    if (strncmp(head, "HTTP/1.1 101 ", 13) == 0)
        return fd;
    r = -EPROTO;
out_fd:
    head[n] = '\0';
    close(fd);
    return (int)r;
}

char *th_stats_cmd(const char *path, const char *cmd, int timeout_ms)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    size_t len = 0, cap = 65536;
    char *buf = NULL, *p;
    ssize_t n;
    int fd, err = 0;

    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return NULL;
    if (set_timeouts(fd, timeout_ms) < 0 ||
        connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        th_send_all(fd, cmd, strlen(cmd)) < 0 || th_send_all(fd, "\n", 1) < 0)
        goto out_fd;
    shutdown(fd, SHUT_WR);
    buf = malloc(cap);
    while (buf) {
        if (cap - len < 4096) {
            p = realloc(buf, cap * 2);
            if (!p)
                break;
            buf = p;
            cap *= 2;
        }
        n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = n < 0 ? errno : 0;
            break;
        }
        len += (size_t)n;
    }
    if (buf && !err) {
        buf[len] = '\0';
        close(fd);
        return buf;
    }
    free(buf);
out_fd:
    err = errno;
    close(fd);
    errno = err ? err : EIO;
    return NULL;
}

static int io_error(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
}

ssize_t th_send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    size_t done = 0;
    ssize_t n;

    while (done < len) {
        n = send(fd, p + done, len - done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return io_error();
        done += (size_t)n;
    }
    return (ssize_t)len;
}

ssize_t th_recv_n(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t done = 0;
    ssize_t n;

    while (done < len) {
        n = recv(fd, p + done, len - done, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return io_error();
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

ssize_t th_recv_eof(int fd, void *buf, size_t cap)
{
    char *p = buf, extra;
    size_t done = 0;
    ssize_t n;

    for (;;) {
        if (done == cap)
            n = recv(fd, &extra, 1, 0);
        else
            n = recv(fd, p + done, cap - done, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return io_error();
        if (n == 0)
            return (ssize_t)done;
        if (done == cap)
            return -EMSGSIZE;
        done += (size_t)n;
    }
}

int th_wait_closed(int fd, int timeout_ms)
{
    int64_t deadline = th_now_ms() + timeout_ms;
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    char c;
    ssize_t n;
    int left;

    for (;;) {
        left = (int)(deadline - th_now_ms());
        if (left < 0)
            left = 0;
        n = poll(&pf, 1, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ETIMEDOUT;
        n = recv(fd, &c, 1, MSG_DONTWAIT);
        if (n == 0)
            return 0;
        if (n > 0)
            return -EPROTO;
        if (errno == EINTR || errno == EAGAIN)
            continue;
        return -errno;
    }
}

struct writer {
    int          fd;
    const void  *buf;
    size_t       len;
    int          shut_wr;
    ssize_t      result;
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;

    w->result = th_send_all(w->fd, w->buf, w->len);
    if (w->result >= 0 && w->shut_wr && shutdown(w->fd, SHUT_WR) < 0)
        w->result = -errno;
    return NULL;
}

ssize_t th_exchange(int fd, const void *out, void *in, size_t len, int shut_wr)
{
    struct writer w = { fd, out, len, shut_wr, 0 };
    pthread_t t;
    ssize_t got;
    int err;

    err = pthread_create(&t, NULL, writer_main, &w);
    if (err)
        return -err;
    got = th_recv_n(fd, in, len);
    if (got != (ssize_t)len)
        shutdown(fd, SHUT_RDWR);    /* a writer blocked on a peer that stopped reading */
    pthread_join(t, NULL);
    if (got >= 0 && got < (ssize_t)len && w.result < 0)
        return w.result;
    return got;
}

long th_metric_sum(const char *sock, const char *family, const char *label)
{
    char *text = th_stats_cmd(sock, "show metrics", 10000), *line, *save = NULL, *sp;
    size_t n = strlen(family);
    long sum = 0;

    if (!text)
        return -errno;
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, family, n) != 0 || (line[n] != '{' && line[n] != ' '))
            continue;               /* another family, or one whose name starts so */
        if (label && !strstr(line, label))
            continue;
        sp = strrchr(line, ' ');
        if (sp)
            sum += strtol(sp + 1, NULL, 10);
    }
    free(text);
    return sum;
}

int th_echo_roundtrip_fd(int fd, size_t len)
{
    static _Atomic uint64_t seq;
    char *out = malloc(len ? len : 1), *in = malloc(len ? len : 1);
    ssize_t got;
    int err = 0;

    if (!out || !in) {
        err = -ENOMEM;
        goto out;
    }
    th_fill_pattern(out, len, atomic_fetch_add(&seq, 1) + 1);
    got = th_exchange(fd, out, in, len, 0);
    if (got < 0)
        err = (int)got;
    else if ((size_t)got < len)
        err = -EPIPE;
    else if (memcmp(out, in, len) != 0)
        err = -EIO;
out:
    free(out);
    free(in);
    return err;
}

int th_echo_roundtrip(int port, size_t len, int timeout_ms)
{
    int fd = th_connect(port, timeout_ms), err;

    if (fd < 0)
        return fd;
    err = th_echo_roundtrip_fd(fd, len);
    close(fd);
    return err;
}

/* splitmix64: every seed gives a different stream, fast enough for megabytes. */
void th_fill_pattern(void *buf, size_t len, uint64_t seed)
{
    unsigned char *p = buf;
    uint64_t z, x = seed * 0x9e3779b97f4a7c15ull;
    size_t i, k;

    for (i = 0; i < len; i += 8) {
        x += 0x9e3779b97f4a7c15ull;
        z = x;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        z ^= z >> 31;
        for (k = 0; k < 8 && i + k < len; k++)
            p[i + k] = (unsigned char)(z >> (8 * k));
    }
}

uint64_t th_fnv1a64(uint64_t h, const void *p, size_t len)
{
    const unsigned char *s = p;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}
