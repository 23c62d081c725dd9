/* tests/harness.h — helpers for integration tests that run the real daemon.
 *
 * What a test gets:
 *   - fixtures that make the test leave nothing behind, whether it passes or fails, in
 *     Check's fork and no-fork modes (th_tcase_add_fixtures());
 *   - a scratch directory, config files written from printf-style templates, free ports;
 *   - the daemon, `$CG_BUILD/corogate -c FILE` (CG_BUILD defaults to "build", so the ASan
 *     run exercises the ASan daemon), started with fork/exec, its stdout and stderr in a
 *     log file that tests grep and quote in failure messages, stopped with a deadline;
 *   - one-shot runs of the daemon's command line (`-t -c FILE`, `-V`) with their output;
 *   - an in-process echo backend that can go down and come back on the same port, and a
 *     "blackhole" listener whose handshakes never complete;
 *   - blocking client helpers with timeouts, a data pattern and a checksum.
 *
 * Cleanup. Every process, echo server and blackhole started through the harness is
 * registered. th_teardown() (the checked teardown: in the test's process) kills and reaps
 * every daemon still running, stops every echo server and closes every blackhole. In fork
 * mode a failed assertion ends the test's process before its teardown runs; for that case
 * each daemon gets PR_SET_PDEATHSIG = SIGKILL, so it dies with the test's process, and the
 * test runner, a child subreaper between th_unchecked_setup() and th_unchecked_teardown(),
 * inherits and reaps it in th_unchecked_teardown(), which also removes the scratch
 * directory. A test that wants a clean exit status stops its daemon itself and asserts it.
 *
 * Conventions: functions return 0 (or a count, a descriptor) or a negative errno; every
 * descriptor is close-on-exec, so a daemon never inherits a test's sockets; times are
 * milliseconds on CLOCK_MONOTONIC.
 */
#ifndef TH_HARNESS_H
#define TH_HARNESS_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/types.h>

#define TH_PATH_MAX 512
#define TH_TAIL_MAX 3000    /* bytes of a log quoted in a failure message */

/* ------------------------------------------------------------------ fixtures */

/* Adds the harness's fixtures to <tc>: the unchecked pair (in the runner: subreaper,
 * scratch directory, reaping what a failed test left) and the checked pair (in the test's
 * process: th_teardown()). */
void th_tcase_add_fixtures(TCase *tc);

/* Adds to <s> a test case <name> of the one test <test>, with the fixtures above and a
 * timeout of <timeout_s> seconds. */
void th_suite_add(Suite *s, const char *name, const TTest *test, int timeout_s);

void th_unchecked_setup(void);
void th_unchecked_teardown(void);
void th_setup(void);
void th_teardown(void);

/* ------------------------------------------------------------------ time, files, ports */

/* CLOCK_MONOTONIC in milliseconds. */
int64_t th_now_ms(void);

void th_sleep_ms(int64_t ms);

/* Prints a line to stderr ("note: ...") when CG_TEST_VERBOSE is set in the environment:
 * timings and counts that pass but are worth seeing when tuning margins. */
void th_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ------------------------------------------------------------------ skips
 *
 * A check that cannot be made here (not root, no kprobes, a figure that needs a quiet
 * machine) is a skip, never a pass: th_skip() prints "SKIP: suite/test: reason" to stdout
 * and appends the same line to $CG_SKIP_FILE (tests/main.c sets it, counts the lines and
 * lists them before Check's summary). TH_SKIP() then returns from the test; TH_SKIP_CHECK()
 * skips one check and lets the test go on with the rest, so that a skipped measurement
 * never hides a functional assertion. <file> and <func> name the test (__FILE__, and the
 * test's function as Check's START_TEST names it: NAME_fn). */
void th_skip(const char *file, const char *func, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TH_SKIP_CHECK(...) th_skip(__FILE__, __func__, __VA_ARGS__)
#define TH_SKIP(...)                                \
    do {                                            \
        th_skip(__FILE__, __func__, __VA_ARGS__);   \
        return;                                     \
    } while (0)

/* The scratch directory: made by th_unchecked_setup() and removed with everything in it
 * by th_unchecked_teardown(); without the fixtures, made on first use and removed when the
 * process exits normally (a failed test in fork mode leaves it). */
const char *th_tmpdir(void);

/* Writes the text formatted from <fmt> to a new file of the scratch directory named
 * "XXXXXX-<name>" (the X's made unique); its path goes to <path> of <size>. Returns 0 or a
 * negative errno. */
int th_write_file(char *path, size_t size, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Same as th_write_file() for a config file ("XXXXXX-corogate.ini"). */
int th_conf_write(char *path, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Reads the whole file at <path>. Returns a NUL-terminated copy the caller frees (*<len>,
 * which may be NULL, gets its length), or NULL with errno set. */
char *th_read_file(const char *path, size_t *len);

/* Returns the last <max> bytes of <s> at most, starting at a line when one starts there. */
const char *th_tail(const char *s, size_t max);

/* Returns a TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, read back,
 * closed), or a negative errno. */
int th_free_port(void);

/* fork() for a test. The child must not call check (ck_assert and friends): check's own
 * mutex may have been held by another of the test's threads at the fork, and the child
 * would wait on it forever. So the failure is asserted in the parent only. */
pid_t th_fork(void);

/* ------------------------------------------------------------------ processes */

/* <name> under the build directory, getenv("CG_BUILD") (default "build"), into <buf>
 * of <size>. Returns <buf>. */
char *th_build_path(char *buf, size_t size, const char *name);

/* The daemon binary: th_build_path() of "corogate". */
const char *th_daemon_path(void);

/* Fills <buf> with "exited with status N" / "killed by signal N (NAME)". Returns <buf>. */
const char *th_describe_status(int status, char *buf, size_t size);

/* CPU time (user + system) the process <pid> has used, in milliseconds, or -errno. */
int64_t th_proc_cpu_ms(pid_t pid);

/* Number of open descriptors of process <pid> whose /proc/PID/fd link starts with
 * <prefix> ("socket:"; NULL counts all), or -errno. */
int th_proc_fd_count(pid_t pid, const char *prefix);

struct th_daemon_opts {
    rlim_t       nofile;    /* RLIMIT_NOFILE (soft and hard) in the child; 0 = inherited */
    const char  *ready_log; /* th_daemon_wait_ready() also waits for this in the log */
};

/* A daemon started by the harness. Fields are read-only to tests. */
struct th_daemon {
    pid_t        pid;                   /* -1 once reaped */
    int          status;                /* wait status, once reaped */
    char         conf[TH_PATH_MAX];     /* its config file */
    char         log[TH_PATH_MAX];      /* its stdout and stderr */
    char         ready_log[128];        /* from th_daemon_opts, "" = none */
    char         tail[TH_TAIL_MAX + 1]; /* th_daemon_tail()'s buffer */
    struct th_daemon *next;             /* the harness's list */
};

/* Starts `corogate -c <conf>` with <opts> (may be NULL). Returns the daemon (the harness
 * owns it: th_daemon_free() or th_teardown() reaps and frees it), or NULL with errno set
 * (ENOENT: no binary; see th_daemon_path()). The child dies with the calling thread. */
struct th_daemon *th_daemon_start(const char *conf, const struct th_daemon_opts *opts);

/* Writes a config from <fmt> and starts a daemon on it, like th_daemon_start(). */
struct th_daemon *th_daemon_start_conf(const struct th_daemon_opts *opts, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Waits until the daemon's ready_log text (if any) is in its log, then until
 * 127.0.0.1:<port> accepts a connection (each try is connected and closed at once, so the
 * daemon sees one short connection), for <timeout_ms> in all; then checks that the daemon
 * still runs. Returns 0,
 * -ECHILD when the daemon exited meanwhile (d->status tells how), or -ETIMEDOUT. */
int th_daemon_wait_ready(struct th_daemon *d, int port, int timeout_ms);

/* 1 while the daemon runs; reaps it (and records its status) when it has exited. */
int th_daemon_is_alive(struct th_daemon *d);

/* Waits up to <timeout_ms> for the daemon to exit. Returns its wait status, or
 * -ETIMEDOUT (it still runs), or -ECHILD when it was already reaped. */
int th_daemon_wait_exit(struct th_daemon *d, int timeout_ms);

/* Sends <sig> and waits up to <timeout_ms> for the daemon to exit; after that, SIGKILL.
 * Returns the wait status (a SIGKILLed daemon reads as killed by signal 9), or -ECHILD
 * when it was already reaped (its earlier status stays in d->status). */
int th_daemon_stop(struct th_daemon *d, int sig, int timeout_ms);

/* SIGKILLs the daemon if it runs, reaps it and frees <d>. NULL-safe. */
void th_daemon_free(struct th_daemon *d);

/* The daemon's whole log so far (the caller frees), never NULL ("" when unreadable). */
char *th_daemon_log(struct th_daemon *d);

/* How many times <needle> occurs in the daemon's log. */
int th_daemon_log_count(struct th_daemon *d, const char *needle);

/* Waits up to <timeout_ms> until <needle> occurs at least <count> times in the log.
 * Returns 0 or -ETIMEDOUT. */
int th_daemon_wait_log(struct th_daemon *d, const char *needle, int count, int timeout_ms);

/* The end of the log and how the daemon ended, for failure messages: valid until the next
 * call for <d>. NULL-safe. */
const char *th_daemon_tail(struct th_daemon *d);

/* Fails the test with "<expr>: <fmt...>" and the end of <d>'s log when <expr> is false. */
#define TH_ASSERT(d, expr, fmt, ...)                                                     \
    ck_assert_msg((expr), "%s: " fmt "\n%s", #expr, ##__VA_ARGS__, th_daemon_tail(d))

/* The result of a one-shot run. */
struct th_run_result {
    int          status;    /* wait status; -ETIMEDOUT when it was killed at the deadline */
    char        *out;       /* stdout and stderr, interleaved as written; caller frees */
    size_t       len;
};

/* Runs the daemon binary with the NULL-terminated <args> (argv[1...]), for <timeout_ms>
 * at most (SIGKILL after), and captures its output in <r>. Returns 0 or a negative errno
 * (the binary could not be started). */
int th_run_daemon(struct th_run_result *r, int timeout_ms, const char *const *args);

void th_run_result_deinit(struct th_run_result *r);

/* Runs <argv> (argv[0] a path: "/usr/bin/python3", "build/corogate-loadgen") like
 * th_run_daemon(): to completion, for <timeout_ms> at most (SIGKILL after), output in <r>.
 * Returns 0 or a negative errno (it could not be started). */
int th_run(struct th_run_result *r, int timeout_ms, const char *const *argv);

/* ------------------------------------------------------------------ helper processes
 *
 * Peers that run beside the daemon for a whole test (a Python backend, the loadgen's echo
 * server) and say where they listen in their first lines. */

struct th_helper {
    pid_t        pid;                   /* -1 once stopped */
    int          port;                  /* where it said it listens */
    char         out[TH_PATH_MAX];      /* its stdout and stderr */
};

/* Starts <argv> (argv[0] a path) with its output in a scratch file, dying with the test
 * and killed at teardown if still running, then waits up to <timeout_ms> until its output
 * holds <after> followed by a port number ("READY " for our Python peers, "on 127.0.0.1:"
 * for `corogate-loadgen serve`); with <after> NULL, returns once it is started (a browser).
 * Returns 0 (h->port set), -ECHILD when it exited first, -ETIMEDOUT, or another negative
 * errno (h->pid is then -1; h->out has what it said). */
int th_helper_start(struct th_helper *h, const char *const *argv, const char *after,
                    int timeout_ms);

/* Kills the helper (SIGKILL) and reaps it. Idempotent. */
void th_helper_stop(struct th_helper *h);

/* ------------------------------------------------------------------ echo backend */

/* A thread with its own listening socket on 127.0.0.1; a thread per connection echoes
 * until EOF, then shuts its sending side down and closes. */
struct th_echo;

/* Starts an echo server on <port> (0 = any free port). Returns it (the harness frees it at
 * teardown, or th_echo_free()), or NULL with errno set. */
struct th_echo *th_echo_new(int port);

/* Goes down: closes the listening socket (the port refuses connections) and every open
 * connection (shutdown, so their peers read EOF), and waits for its threads. Idempotent. */
void th_echo_stop(struct th_echo *e);

/* Comes back on the same port (SO_REUSEADDR). Returns 0, -EALREADY when it runs, or a
 * negative errno (EADDRINUSE: someone else took the port meanwhile). */
int th_echo_start(struct th_echo *e);

/* Stops and frees <e>. NULL-safe. */
void th_echo_free(struct th_echo *e);

int th_echo_port(const struct th_echo *e);
unsigned th_echo_accepted(const struct th_echo *e);   /* connections accepted, ever */
/* of those, from 127.0.0.<n> */
unsigned th_echo_accepted_from(const struct th_echo *e, unsigned n);
unsigned th_echo_served(const struct th_echo *e);     /* of those, that carried data */
unsigned th_echo_eofs(const struct th_echo *e);       /* that read EOF from the peer */
unsigned th_echo_active(const struct th_echo *e);     /* open now */

/* Waits up to <timeout_ms> until th_echo_accepted(<e>) >= <n>. Returns 0 or -ETIMEDOUT. */
int th_echo_wait_accepted(const struct th_echo *e, unsigned n, int timeout_ms);

/* ------------------------------------------------------------------ blackhole */

/* A listener with backlog 0 whose queue is filled by a couple of connections that are
 * never accepted: further SYNs are dropped, so a connect() to it neither succeeds nor
 * fails until the client's timeout. */
struct th_blackhole {
    int          port;
    int          lfd;
    int          fill[3];
    struct th_blackhole *next;      /* the harness's list */
};

/* Opens a blackhole on 127.0.0.1 (port picked by the kernel) and checks that a further
 * connect stays pending. Returns it (the harness frees it at teardown, or
 * th_blackhole_free()), or NULL with errno set (EPROTO: the kernel completed a connect
 * anyway). */
struct th_blackhole *th_blackhole_new(void);

/* Closes every descriptor of <b> and frees it. NULL-safe. */
void th_blackhole_free(struct th_blackhole *b);

/* ------------------------------------------------------------------ clients */

/* Connects to 127.0.0.1:<port> (blocking, TCP_NODELAY) and sets SO_RCVTIMEO and
 * SO_SNDTIMEO to <timeout_ms>. Returns the descriptor or a negative errno. */
int th_connect(int port, int timeout_ms);

/* th_connect() from the local address <src> ("127.0.0.2"; NULL: the kernel picks), so
 * that the daemon sees several clients. Returns the descriptor or a negative errno. */
int th_connect_from(const char *src, int port, int timeout_ms);

/* Opens a WebSocket to 127.0.0.1:<port>: GET <target> with the RFC 6455 example key and
 * the extra header lines <headers> (each ending in CRLF; NULL = none), then reads the
 * answer's head into <head> of <size> (byte by byte: frames may follow). Returns the
 * descriptor once the answer is 101; else -EPROTO (<head> has the answer), -EPIPE (closed
 * first) or another negative errno, the descriptor closed. */
int th_ws_open(int port, const char *target, const char *headers, int timeout_ms, char *head,
               size_t size);

/* A listening socket on 127.0.0.1 at a port the kernel picks (*<port>): a backend a test
 * plays itself. Returns the descriptor or a negative errno. */
int th_listen(int *port);

/* Accepts one connection on <lfd> within <timeout_ms> and sets its SO_RCVTIMEO and
 * SO_SNDTIMEO to <timeout_ms>. Returns the descriptor or a negative errno (-ETIMEDOUT). */
int th_accept(int lfd, int timeout_ms);

/* Sends all <len> bytes. Returns <len> or a negative errno (-ETIMEDOUT). */
ssize_t th_send_all(int fd, const void *buf, size_t len);

/* Receives exactly <len> bytes unless EOF comes first. Returns the count received (less
 * than <len> only at EOF) or a negative errno (-ETIMEDOUT, -ECONNRESET...). */
ssize_t th_recv_n(int fd, void *buf, size_t len);

/* Receives until EOF into <buf> of <cap>. Returns the count, -EMSGSIZE when more than
 * <cap> bytes came, or a negative errno. */
ssize_t th_recv_eof(int fd, void *buf, size_t cap);

/* Waits up to <timeout_ms> for the peer to close: returns 0 at EOF, -ECONNRESET on a
 * reset, -EPROTO when data came instead, -ETIMEDOUT, or another negative errno. */
int th_wait_closed(int fd, int timeout_ms);

/* Sends <len> bytes of <out> from a helper thread while receiving <len> bytes into <in>
 * (so an echo peer never blocks on us); with <shut_wr>, shuts the sending side down after
 * the last byte. Returns the count received (== <len> unless EOF came early) or a negative
 * errno; a send error is returned when fewer bytes came back. */
ssize_t th_exchange(int fd, const void *out, void *in, size_t len, int shut_wr);

/* Sends <cmd> and a newline to the stats socket at <path>, shuts the sending side down and
 * returns everything that came back until EOF (the caller frees it), or NULL (errno set);
 * each read or write waits at most <timeout_ms>. */
char *th_stats_cmd(const char *path, const char *cmd, int timeout_ms);

/* The sum of the samples of the Prometheus family <family> (e.g.
 * "corogate_websocket_protocol_errors_total") in `show metrics` from the stats socket at
 * <sock>, over the series whose line contains <label> (e.g. "reason=\"403\""; NULL: every
 * series), or a negative errno when the socket does not answer. */
long th_metric_sum(const char *sock, const char *family, const char *label);

/* Connects, sends <len> bytes of a pattern, checks the echo and closes. Returns 0, -EIO on
 * a mismatch, -EPIPE when the peer closed early, or a negative errno. */
int th_echo_roundtrip(int port, size_t len, int timeout_ms);

/* The same on the open connection <fd>, which stays open. */
int th_echo_roundtrip_fd(int fd, size_t len);

/* Fills <buf> with <len> pseudo-random bytes determined by <seed>. */
void th_fill_pattern(void *buf, size_t len, uint64_t seed);

/* FNV-1a 64 of <len> bytes at <p>, continuing from <h> (start with TH_FNV_INIT). */
#define TH_FNV_INIT 0xcbf29ce484222325ull
uint64_t th_fnv1a64(uint64_t h, const void *p, size_t len);

#endif /* TH_HARNESS_H */
