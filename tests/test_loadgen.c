/* tests/test_loadgen.c — `corogate-loadgen run` against its own `serve`, as black boxes
 * (the binaries under $CG_BUILD, default build/), plus the message layer in memory.
 *
 * TLS (the "tls" case): certificates are made at test time with the openssl CLI in the
 * harness's scratch directory (a CA, a server certificate for localhost and 127.0.0.1, a
 * client certificate, and an unrelated CA); the interop peer is Debian's python3 ssl
 * module (/usr/bin/python3), an independent use of OpenSSL's own record layer.
 *
 * Every run is bounded: short durations, tens of connections, 127.0.0.0/8 only. The JSON
 * report is parsed with the small parser below and checked key by key.
 */
#include <arpa/inet.h>
#include <check.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "loadgen/lg_msg.h"
#include "loadgen/net.h"

#define START_TIMEOUT_MS 3000
#define RUN_TIMEOUT_MS   20000

/* ------------------------------------------------------------------ processes */

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

struct proc {
    pid_t  pid;
    int    fd;              /* read end of its stdout+stderr */
    char  *out;             /* what it wrote so far, NUL-terminated */
    size_t len;
    size_t cap;
};

static struct proc server = { .pid = -1, .fd = -1 };
static char json_path[128];
static char tmp_dir[64];

static void proc_spawn(struct proc *p, const char *const *args)
{
    const char *argv[64];
    pid_t parent = getpid();
    int fds[2], i;

    argv[0] = loadgen_path();
    for (i = 0; args[i] && i < 62; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    p->len = 0;
    if (!p->out) {
        p->cap = 1 << 16;
        p->out = malloc(p->cap);
        ck_assert_ptr_nonnull(p->out);
    }
    p->out[0] = '\0';
    p->pid = fork();
    if (p->pid < 0)                   /* asserted in the parent only: see th_fork() */
        ck_abort_msg("fork(): %s", strerror(errno));
    if (p->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        execv(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(fds[1]);
    p->fd = fds[0];
}

/* Appends output, waiting up to <timeout_ms>. Returns bytes read; 0 at EOF or timeout. */
static ssize_t proc_read(struct proc *p, int timeout_ms)
{
    struct pollfd pfd = { .fd = p->fd, .events = POLLIN };
    ssize_t n;

    if (p->fd < 0 || poll(&pfd, 1, timeout_ms) <= 0)
        return 0;
    if (p->cap - p->len < 4096) {
        p->cap *= 2;
        p->out = realloc(p->out, p->cap);
        ck_assert_ptr_nonnull(p->out);
    }
    n = read(p->fd, p->out + p->len, p->cap - 1 - p->len);
    if (n <= 0) {
        close(p->fd);
        p->fd = -1;
        return 0;
    }
    p->len += (size_t)n;
    p->out[p->len] = '\0';
    return n;
}

/* Reads until EOF and reaps; returns the wait status (killed after <timeout_ms>). */
static int proc_wait(struct proc *p, int timeout_ms)
{
    uint64_t until = now_ms() + (uint64_t)timeout_ms;
    int status = -1;

    while (p->fd >= 0 && now_ms() < until)
        proc_read(p, 100);
    while (now_ms() < until) {
        if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
            p->pid = -1;
            return status;
        }
        usleep(5000);
    }
    kill(p->pid, SIGKILL);
    waitpid(p->pid, &status, 0);
    p->pid = -1;
    ck_abort_msg("still running after %d ms; it said:\n%s", timeout_ms, p->out);
    return -1;
}

static void proc_kill(struct proc *p)
{
    if (p->pid > 0) {
        kill(p->pid, SIGKILL);
        waitpid(p->pid, NULL, 0);
        p->pid = -1;
    }
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
}

/* Starts `serve <args>` and returns its port, from the start line. */
static uint16_t server_start(const char *const *args)
{
    const char *argv[32] = { "serve" };
    struct sockaddr_storage ss;
    uint64_t until = now_ms() + START_TIMEOUT_MS;
    char *line, *end;
    int i;

    for (i = 0; args[i] && i < 30; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    proc_spawn(&server, argv);
    for (;;) {
        line = strstr(server.out, " echo on ");
        end = line ? strchr(line, ',') : NULL;
        if (end && strchr(end, '\n'))
            break;
        ck_assert_msg(now_ms() < until && proc_read(&server, (int)(until - now_ms())) > 0,
                      "no start line from the server; it said: %s", server.out);
    }
    *end = '\0';
    ck_assert_int_eq(lg_addr_parse(line + strlen(" echo on "), &ss), 0);
    *end = ',';
    return lg_addr_port((struct sockaddr *)&ss);
}

/* SIGTERM, then the totals line; asserts a clean exit. */
static void server_stop(void)
{
    int status;

    ck_assert_int_eq(kill(server.pid, SIGTERM), 0);
    status = proc_wait(&server, 5000);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "server: %s", server.out);
}

/* The server's totals: connections, bytes in, bytes out. */
static void server_totals(unsigned long long *conns, unsigned long long *in,
                          unsigned long long *out)
{
    const char *s = strstr(server.out, "stopped: ");

    ck_assert_msg(s, "no totals line: %s", server.out);
    ck_assert_int_eq(sscanf(s, "stopped: %llu connections, %llu bytes in, %llu bytes out",
                            conns, in, out), 3);
}

/* Runs `run <args>` to the end; returns its exit status, output in <p>. */
static int run_loadgen(struct proc *p, const char *const *args)
{
    const char *argv[64] = { "run" };
    int i, status;

    for (i = 0; args[i] && i < 62; i++)
        argv[i + 1] = args[i];
    argv[i + 1] = NULL;
    proc_spawn(p, argv);
    status = proc_wait(p, RUN_TIMEOUT_MS);
    ck_assert_msg(WIFEXITED(status), "run did not exit by itself: %s", p->out);
    return WEXITSTATUS(status);
}

static void setup(void)
{
    snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/cg-loadgen-test.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp_dir));
    snprintf(json_path, sizeof(json_path), "%s/report.json", tmp_dir);
}

static void teardown(void)
{
    proc_kill(&server);
    free(server.out);
    server.out = NULL;
    unlink(json_path);
    rmdir(tmp_dir);
}

/* ------------------------------------------------------------------ a small JSON parser */

enum jtype { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };

struct jnode {
    enum jtype    type;
    char         *key;       /* inside an object */
    char         *str;
    double        num;
    int           boolean;
    struct jnode *child;     /* first member or element */
    struct jnode *next;
};

struct jparser {
    const char *p;
    const char *err;
};

static void jfree(struct jnode *n)
{
    while (n) {
        struct jnode *next = n->next;

        jfree(n->child);
        free(n->key);
        free(n->str);
        free(n);
        n = next;
    }
}

static void jws(struct jparser *j)
{
    while (*j->p == ' ' || *j->p == '\n' || *j->p == '\t' || *j->p == '\r')
        j->p++;
}

static char *jstring(struct jparser *j)
{
    size_t cap = 64, n = 0;
    char *s = malloc(cap);

    if (*j->p != '"') {
        j->err = "expected a string";
        free(s);
        return NULL;
    }
    j->p++;
    while (*j->p && *j->p != '"') {
        char ch = *j->p++;

        if ((unsigned char)ch < 0x20) {
            j->err = "control character in a string";
            free(s);
            return NULL;
        }
        if (ch == '\\') {
            ch = *j->p++;
            switch (ch) {
            case '"': case '\\': case '/': break;
            case 'n': ch = '\n'; break;
            case 't': ch = '\t'; break;
            case 'r': ch = '\r'; break;
            case 'b': ch = '\b'; break;
            case 'f': ch = '\f'; break;
            case 'u':
                if (!isxdigit((unsigned char)j->p[0]) || !isxdigit((unsigned char)j->p[1]) ||
                    !isxdigit((unsigned char)j->p[2]) || !isxdigit((unsigned char)j->p[3])) {
                    j->err = "bad \\u escape";
                    free(s);
                    return NULL;
                }
                ch = (char)strtol((char[]){ j->p[2], j->p[3], 0 }, NULL, 16);
                j->p += 4;
                break;
            default:
                j->err = "bad escape";
                free(s);
                return NULL;
            }
        }
        if (n + 2 > cap)
            s = realloc(s, cap *= 2);
        s[n++] = ch;
    }
    if (*j->p != '"') {
        j->err = "unterminated string";
        free(s);
        return NULL;
    }
    j->p++;
    s[n] = '\0';
    return s;
}

static struct jnode *jvalue(struct jparser *j, int depth)
{
    struct jnode *n = calloc(1, sizeof(*n)), **tail;
    char *end;

    jws(j);
    if (depth > 32) {
        j->err = "too deep";
        goto fail;
    }
    if (*j->p == '{' || *j->p == '[') {
        char close = *j->p == '{' ? '}' : ']';

        n->type = *j->p == '{' ? J_OBJ : J_ARR;
        j->p++;
        tail = &n->child;
        jws(j);
        if (*j->p == close) {
            j->p++;
            return n;
        }
        for (;;) {
            char *key = NULL;
            struct jnode *m;

            jws(j);
            if (n->type == J_OBJ) {
                key = jstring(j);
                if (!key)
                    goto fail;
                jws(j);
                if (*j->p++ != ':') {
                    free(key);
                    j->err = "expected ':'";
                    goto fail;
                }
            }
            m = jvalue(j, depth + 1);
            if (!m) {
                free(key);
                goto fail;
            }
            m->key = key;
            *tail = m;
            tail = &m->next;
            jws(j);
            if (*j->p == ',') {
                j->p++;
                continue;
            }
            if (*j->p == close) {
                j->p++;
                return n;
            }
            j->err = "expected ',' or a closing bracket";
            goto fail;
        }
    }
    if (*j->p == '"') {
        n->type = J_STR;
        n->str = jstring(j);
        if (!n->str)
            goto fail;
        return n;
    }
    if (strncmp(j->p, "true", 4) == 0 || strncmp(j->p, "false", 5) == 0) {
        n->type = J_BOOL;
        n->boolean = *j->p == 't';
        j->p += n->boolean ? 4 : 5;
        return n;
    }
    if (strncmp(j->p, "null", 4) == 0) {
        n->type = J_NULL;
        j->p += 4;
        return n;
    }
    if (*j->p == '-' || isdigit((unsigned char)*j->p)) {
        n->type = J_NUM;
        n->num = strtod(j->p, &end);
        if (end == j->p || !isfinite(n->num)) {
            j->err = "bad number";
            goto fail;
        }
        j->p = end;
        return n;
    }
    j->err = "unexpected character";
fail:
    jfree(n);
    return NULL;
}

/* Parses the whole file at <path>; fails the test when it is not valid JSON. */
static struct jnode *jparse_file(const char *path)
{
    FILE *f = fopen(path, "r");
    struct jparser j = { NULL, NULL };
    struct jnode *root;
    char *buf;
    long len;

    ck_assert_msg(f != NULL, "no JSON file %s", path);
    fseek(f, 0, SEEK_END);
    len = ftell(f);
    rewind(f);
    buf = malloc((size_t)len + 1);
    ck_assert_int_eq(fread(buf, 1, (size_t)len, f), len);
    buf[len] = '\0';
    fclose(f);
    j.p = buf;
    root = jvalue(&j, 0);
    if (root) {
        jws(&j);
        if (*j.p)
            j.err = "trailing bytes";
    }
    ck_assert_msg(root && !j.err, "invalid JSON (%s) at offset %ld of:\n%s",
                  j.err ? j.err : "?", (long)(j.p - buf), buf);
    free(buf);
    return root;
}

static struct jnode *jget(const struct jnode *obj, const char *key)
{
    struct jnode *m;

    for (m = obj ? obj->child : NULL; m; m = m->next)
        if (m->key && strcmp(m->key, key) == 0)
            return m;
    return NULL;
}

/* The member at "a.b.c" of <root>, which must exist with type <type>. */
static struct jnode *jreq(const struct jnode *root, const char *path, enum jtype type)
{
    char buf[128], *tok, *save = NULL;
    const struct jnode *n = root;

    snprintf(buf, sizeof(buf), "%s", path);
    for (tok = strtok_r(buf, ".", &save); tok; tok = strtok_r(NULL, ".", &save)) {
        ck_assert_msg(n && n->type == J_OBJ, "%s: parent of '%s' is not an object", path, tok);
        n = jget(n, tok);
        ck_assert_msg(n != NULL, "JSON report lacks %s", path);
    }
    ck_assert_msg(n->type == type, "JSON %s has type %d, expected %d", path, n->type, type);
    return (struct jnode *)n;
}

static double jnum(const struct jnode *root, const char *path)
{
    return jreq(root, path, J_NUM)->num;
}

/* ------------------------------------------------------------------ message layer */

static uint64_t frames_seen;

static void count_frame(void *ud, uint64_t seq, uint64_t ts)
{
    (void)ud;
    (void)ts;
    ck_assert_uint_eq(seq, frames_seen);     /* in order, each once */
    frames_seen++;
}

/* Frames cut from a stream fed in pieces of every size from 1 byte to all at once. */
START_TEST(test_msg_stream_pieces)
{
    enum { SIZE = 48, N = 40 };
    uint8_t stream[SIZE * N];
    struct lg_msg_stats st;
    struct lg_msg_rx rx;
    size_t piece, off, n;
    int i;

    for (i = 0; i < N; i++)
        lg_msg_write(stream + i * SIZE, SIZE, (uint64_t)i, 1000u + (uint64_t)i, 7);
    for (piece = 1; piece <= sizeof(stream); piece += piece < 64 ? 1 : 97) {
        memset(&st, 0, sizeof(st));
        frames_seen = 0;
        ck_assert_int_eq(lg_msg_rx_init(&rx, SIZE, 7), 0);
        for (off = 0; off < sizeof(stream); off += n) {
            n = sizeof(stream) - off < piece ? sizeof(stream) - off : piece;
            lg_msg_rx_feed(&rx, stream + off, n, &st, count_frame, NULL);
        }
        ck_assert_uint_eq(st.good, N);
        ck_assert_uint_eq(frames_seen, N);
        ck_assert_uint_eq(st.corrupt + st.lost + st.reordered + st.skipped, 0);
        lg_msg_rx_deinit(&rx);
    }
}
END_TEST

/* One flipped bit, one dropped byte, one dropped frame, one frame repeated: each is
 * detected, counted once, and the frames after it are accepted again. */
START_TEST(test_msg_damage)
{
    enum { SIZE = 64, N = 20 };
    uint8_t good[SIZE * N], bad[SIZE * N + SIZE];
    struct lg_msg_stats st;
    struct lg_msg_rx rx;
    size_t len = 0, i;

    for (i = 0; i < N; i++)
        lg_msg_write(good + i * SIZE, SIZE, i, 0, 3);
    /* frames 0-2 intact; 3 with a bit flipped; 4 intact; 5 missing its 10th byte;
     * 6, 7 intact; 8 missing; 9 intact; then 9 again (reordered); 10..19 intact */
    memcpy(bad, good, 5 * SIZE);
    bad[3 * SIZE + 40] ^= 0x10;
    len = 5 * SIZE;
    memcpy(bad + len, good + 5 * SIZE, 9);
    memcpy(bad + len + 9, good + 5 * SIZE + 10, SIZE - 10);
    len += SIZE - 1;
    memcpy(bad + len, good + 6 * SIZE, 2 * SIZE);
    len += 2 * SIZE;
    memcpy(bad + len, good + 9 * SIZE, SIZE);
    len += SIZE;
    memcpy(bad + len, good + 9 * SIZE, SIZE);
    len += SIZE;
    memcpy(bad + len, good + 10 * SIZE, 10 * SIZE);
    len += 10 * SIZE;
    ck_assert_uint_le(len, sizeof(bad));

    for (i = 1; i <= len; i = i < 8 ? i + 1 : i * 3) {     /* whole, and in pieces */
        size_t off, n;

        memset(&st, 0, sizeof(st));
        ck_assert_int_eq(lg_msg_rx_init(&rx, SIZE, 3), 0);
        for (off = 0; off < len; off += n) {
            n = len - off < i ? len - off : i;
            lg_msg_rx_feed(&rx, bad + off, n, &st, NULL, NULL);
        }
        ck_assert_uint_eq(st.corrupt, 2);       /* the flipped and the short frame */
        ck_assert_uint_eq(st.lost, 1);          /* frame 8 */
        ck_assert_uint_eq(st.reordered, 1);     /* the second 9 */
        ck_assert_uint_eq(st.good, N - 3);
        ck_assert_uint_eq(rx.expected, N);
        lg_msg_rx_deinit(&rx);
    }
    /* A frame of another connection is damage, not data. */
    memset(&st, 0, sizeof(st));
    ck_assert_int_eq(lg_msg_rx_init(&rx, SIZE, 4), 0);
    lg_msg_rx_feed(&rx, good, SIZE, &st, NULL, NULL);
    ck_assert_uint_eq(st.good, 0);
    ck_assert_uint_eq(st.corrupt, 1);
    ck_assert_uint_eq(lg_msg_rx_give_up(&rx, 5, &st), 4);   /* 0 was the damaged one */
    lg_msg_rx_deinit(&rx);
}
END_TEST

/* Every single-bit flip anywhere in a frame fails the check, for sizes with and without a
 * partial last word. */
START_TEST(test_msg_every_bit)
{
    static const uint32_t sizes[] = { 32, 33, 39, 64, 100, 257 };
    uint8_t buf[300];
    uint64_t seq, ts;
    size_t i, k;
    int bit;

    for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        lg_msg_write(buf, sizes[k], 12345 + k, 987654321, 42);
        ck_assert(lg_msg_check(buf, sizes[k], sizes[k], 42, &seq, &ts));
        ck_assert_uint_eq(seq, 12345 + k);
        ck_assert_uint_eq(ts, 987654321);
        for (i = 0; i < sizes[k]; i++)
            for (bit = 0; bit < 8; bit++) {
                buf[i] ^= (uint8_t)(1u << bit);
                ck_assert_msg(!lg_msg_check(buf, sizes[k], sizes[k], 42, &seq, &ts),
                              "size %u: flip of bit %d of byte %zu not seen", sizes[k], bit, i);
                buf[i] ^= (uint8_t)(1u << bit);
            }
    }
}
END_TEST

/* ------------------------------------------------------------------ runs */

static const char *const echo1[] = { "--mode", "tcp", "--listen", "127.0.0.1:0", "--threads",
                                     "1", NULL };

/* Every message sent comes back exactly once, and the loadgen's byte counts are the
 * server's: what one side counts, the other saw. */
START_TEST(test_exact_counts)
{
    struct proc run = { .pid = -1, .fd = -1 };
    unsigned long long conns, in, out;
    char target[32];
    struct jnode *j;
    double sent, recv;
    uint16_t port = server_start(echo1);
    const char *args[] = { "--target", target, "--connections", "20", "--connect-rate", "2000",
                           "--duration", "1s", "--message-rate", "50", "--message-size", "100",
                           "--json", json_path, "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
    ck_assert_ptr_nonnull(strstr(run.out, "RESULT: PASS: 20 of 20 connections reached"));
    server_stop();
    server_totals(&conns, &in, &out);
    j = jparse_file(json_path);
    sent = jnum(j, "messages.sent");
    recv = jnum(j, "messages.received");
    ck_assert_msg(sent >= 20 * 50 * 0.6, "only %.0f messages sent", sent);
    ck_assert(sent == recv);
    ck_assert_uint_eq(conns, 20);
    ck_assert(jnum(j, "messages.bytes_sent") == sent * 100);
    ck_assert(jnum(j, "messages.bytes_received") == recv * 100);
    ck_assert_uint_eq(in, (unsigned long long)sent * 100);
    ck_assert_uint_eq(out, in);
    ck_assert(jnum(j, "messages.corrupt") == 0 && jnum(j, "messages.lost") == 0 &&
              jnum(j, "messages.reordered") == 0);
    ck_assert(jnum(j, "latency_ms.round_trip.count") == recv);
    jfree(j);
    free(run.out);
}
END_TEST

/* Closed loop: also exact, and every echo timed. */
START_TEST(test_closed_loop_counts)
{
    struct proc run = { .pid = -1, .fd = -1 };
    unsigned long long conns, in, out;
    char target[32];
    struct jnode *j;
    uint16_t port = server_start(echo1);
    const char *args[] = { "--target", target, "--connections", "8", "--duration", "500ms",
                           "--closed-loop", "--json", json_path, "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
    server_stop();
    server_totals(&conns, &in, &out);
    j = jparse_file(json_path);
    ck_assert(jnum(j, "messages.sent") > 1000);
    ck_assert(jnum(j, "messages.sent") == jnum(j, "messages.received"));
    ck_assert_uint_eq(in, (unsigned long long)jnum(j, "messages.sent") * 64);
    ck_assert(jnum(j, "throughput.msgs_per_s") > 1000);
    jfree(j);
    free(run.out);
}
END_TEST

/* --procs 2 x --threads 2: the merged counts are the sum of what each process did, which is
 * what the server saw. */
START_TEST(test_procs_merge)
{
    struct proc run = { .pid = -1, .fd = -1 };
    unsigned long long conns, in, out;
    char target[32];
    struct jnode *j;
    const char *two[] = { "--listen", "127.0.0.1:0", "--threads", "1", NULL };
    uint16_t port = server_start(two);
    const char *args[] = { "--target", target, "--connections", "30", "--connect-rate", "3000",
                           "--duration", "1s", "--message-rate", "20", "--procs", "2",
                           "--threads", "2", "--json", json_path, "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
    server_stop();
    server_totals(&conns, &in, &out);
    j = jparse_file(json_path);
    ck_assert_uint_eq(conns, 30);
    ck_assert(jnum(j, "connections.connected") == 30);
    ck_assert(jnum(j, "connections.attempts") == 30);
    ck_assert(jnum(j, "connections.up_at_end") == 30);
    ck_assert(jnum(j, "config.procs") == 2);
    ck_assert_uint_eq(in, (unsigned long long)jnum(j, "messages.sent") * 64);
    ck_assert(jnum(j, "messages.received") == jnum(j, "messages.sent"));
    ck_assert(jnum(j, "latency_ms.round_trip.count") == jnum(j, "messages.received"));
    ck_assert(jnum(j, "latency_ms.connect.count") == 30);
    jfree(j);
    free(run.out);
}
END_TEST

/* The plain statement and the exit status when nothing listens. */
START_TEST(test_failing_ramp)
{
    struct proc run = { .pid = -1, .fd = -1 };
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof(sin);
    char target[32];
    struct jnode *j;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    const char *args[] = { "--target", target, "--connections", "5", "--duration", "5s",
                           "--closed-loop", "--json", json_path, NULL };
    uint64_t t0;

    /* A port that was free a moment ago: bound, never listened on, closed. */
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    snprintf(target, sizeof(target), "127.0.0.1:%u", ntohs(sin.sin_port));
    t0 = now_ms();
    ck_assert_int_eq(run_loadgen(&run, args), 1);
    ck_assert_uint_lt(now_ms() - t0, 4000);    /* nothing up: no point holding 5 s */
    ck_assert_msg(strstr(run.out, "RESULT: FAIL: the requested 5 connections were NOT "
                                  "reached"), "%s", run.out);
    ck_assert_ptr_nonnull(strstr(run.out, "refused 5"));
    j = jparse_file(json_path);
    ck_assert(!jreq(j, "result.pass", J_BOOL)->boolean);
    ck_assert(!jreq(j, "result.reached", J_BOOL)->boolean);
    ck_assert(jnum(j, "result.status") == 1);
    ck_assert(jnum(j, "errors.refused") == 5);
    jfree(j);
    free(run.out);
}
END_TEST

/* Every required key with its type; values consistent with each other. */
START_TEST(test_json_schema)
{
    static const char *const nums[] = {
        "config.connections", "config.connect_rate", "config.duration_s",
        "config.message_size", "config.message_rate", "config.sources", "config.threads",
        "config.procs", "result.status", "connections.requested", "connections.attempts",
        "connections.connected", "connections.up_after_ramp", "connections.up_at_end",
        "connections.dropped", "connections.ramp_s", "connections.steady_s",
        "errors.refused", "errors.connect_timeout", "errors.no_source_port", "errors.no_fds",
        "errors.connect_other", "errors.handshake", "errors.closed_by_peer", "errors.reset",
        "errors.io", "errors.total", "messages.sent", "messages.received", "messages.corrupt",
        "messages.lost", "messages.reordered", "messages.bytes_sent",
        "messages.bytes_received", "messages.skipped_bytes", "throughput.msgs_per_s",
        "throughput.bytes_per_s", "throughput.steady_sent", "throughput.steady_received",
        "throughput.window_s", "throughput.connections_per_s", "throughput.steady_connected",
        "config.messages_per_connection", "loadgen.cpu_s", "loadgen.wall_s",
        "loadgen.threads", "loadgen.utilisation",
    };
    static const char *const hkeys[] = { "count", "min", "mean", "p50", "p90", "p99",
                                         "p99_9", "p99_99", "max" };
    static const char *const hists[] = { "latency_ms.connect", "latency_ms.round_trip" };
    static const char *const tkeys[] = { "t_s", "up", "attempts", "msgs_per_s", "p50_ms",
                                         "p99_ms" };
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32], key[64];
    struct jnode *j, *tl, *pt;
    size_t i, k;
    double prev;
    uint16_t port = server_start(echo1);
    const char *args[] = { "--target", target, "--connections", "10", "--duration", "1500ms",
                           "--message-rate", "100", "--source", "127.0.0.2-127.0.0.3",
                           "--json", json_path, "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
    j = jparse_file(json_path);
    ck_assert_str_eq(jreq(j, "schema", J_STR)->str, "corogate-loadgen.run/1");
    ck_assert_str_eq(jreq(j, "config.mode", J_STR)->str, "tcp");
    ck_assert_str_eq(jreq(j, "config.target", J_STR)->str, target);
    ck_assert_str_eq(jreq(j, "config.traffic", J_STR)->str, "rate");
    jreq(j, "config.path", J_NULL);
    for (i = 0; i < sizeof(nums) / sizeof(nums[0]); i++)
        ck_assert(jnum(j, nums[i]) >= 0);
    ck_assert(jreq(j, "result.pass", J_BOOL)->boolean);
    ck_assert(jreq(j, "result.reached", J_BOOL)->boolean);
    ck_assert(jreq(j, "result.held", J_BOOL)->boolean);
    ck_assert(!jreq(j, "result.data_errors", J_BOOL)->boolean);
    ck_assert(!jreq(j, "result.interrupted", J_BOOL)->boolean);
    ck_assert_ptr_nonnull(strstr(jreq(j, "result.statement", J_STR)->str, "PASS"));
    ck_assert(jnum(j, "config.sources") == 2);
    jreq(j, "loadgen.busy", J_BOOL);
    ck_assert(jnum(j, "loadgen.threads") == 1);
    ck_assert(jnum(j, "loadgen.wall_s") >= 1.5);
    for (i = 0; i < 2; i++) {
        prev = 0;
        for (k = 0; k < sizeof(hkeys) / sizeof(hkeys[0]); k++) {
            snprintf(key, sizeof(key), "%s.%s", hists[i], hkeys[k]);
            ck_assert(jnum(j, key) >= 0);
            if (k >= 3) {                       /* percentiles never decrease */
                ck_assert_msg(jnum(j, key) >= prev, "%s below the one before", key);
                prev = jnum(j, key);
            }
        }
    }
    ck_assert(jnum(j, "latency_ms.round_trip.p50") > 0);
    ck_assert(jnum(j, "latency_ms.round_trip.p50") < 100);
    tl = jreq(j, "timeline", J_ARR);
    for (pt = tl->child, i = 0; pt; pt = pt->next, i++) {
        ck_assert_int_eq(pt->type, J_OBJ);
        for (k = 0; k < sizeof(tkeys) / sizeof(tkeys[0]); k++)
            ck_assert_msg(jget(pt, tkeys[k]) && jget(pt, tkeys[k])->type == J_NUM,
                          "timeline point lacks %s", tkeys[k]);
    }
    ck_assert_uint_ge(i, 1);             /* one point a second */
    jfree(j);
    free(run.out);
    server_stop();
}
END_TEST

/* ------------------------------------------------------------------ source addresses */

struct acceptor {
    int       lfd;
    unsigned  want;
    unsigned  got;
    uint32_t  peers[64];     /* network order */
    int       fds[64];
};

static void *accept_main(void *arg)
{
    struct acceptor *a = arg;
    struct sockaddr_in sin;
    socklen_t len;
    int fd;

    while (a->got < a->want) {
        len = sizeof(sin);
        fd = accept(a->lfd, (struct sockaddr *)&sin, &len);
        if (fd < 0)
            break;
        a->peers[a->got] = sin.sin_addr.s_addr;
        a->fds[a->got++] = fd;     /* held open: the loadgen holds them too */
    }
    return NULL;
}

/* --source spreads the connections round-robin over the range: the server sees each
 * address equally often. */
START_TEST(test_source_spread)
{
    enum { N = 12 };
    struct proc run = { .pid = -1, .fd = -1 };
    struct acceptor a = { .want = N };
    struct sockaddr_in sin = { .sin_family = AF_INET };
    socklen_t len = sizeof(sin);
    unsigned per[4] = { 0 }, i;
    pthread_t th;
    char target[32];
    const char *args[] = { "--target", target, "--connections", "12", "--duration", "300ms",
                           "--hold", "--source", "127.0.0.2-127.0.0.5", "--threads", "2",
                           "--quiet", NULL };

    a.lfd = socket(AF_INET, SOCK_STREAM, 0);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ck_assert_int_eq(bind(a.lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    ck_assert_int_eq(listen(a.lfd, 64), 0);
    ck_assert_int_eq(getsockname(a.lfd, (struct sockaddr *)&sin, &len), 0);
    ck_assert_int_eq(pthread_create(&th, NULL, accept_main, &a), 0);
    snprintf(target, sizeof(target), "127.0.0.1:%u", ntohs(sin.sin_port));
    ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
    pthread_join(th, NULL);
    ck_assert_uint_eq(a.got, N);
    for (i = 0; i < a.got; i++) {
        uint32_t h = ntohl(a.peers[i]);

        ck_assert_msg(h >= 0x7f000002 && h <= 0x7f000005, "peer %08x outside the range", h);
        per[h - 0x7f000002]++;
        close(a.fds[i]);
    }
    for (i = 0; i < 4; i++)
        ck_assert_uint_eq(per[i], N / 4);
    close(a.lfd);
    free(run.out);
}
END_TEST

/* ------------------------------------------------------------------ WebSocket, faults */

static uint16_t start_with(const char *mode, const char *extra1, const char *extra2)
{
    const char *args[] = { "--mode", mode, "--listen", "127.0.0.1:0", "--threads", "1",
                           extra1, extra2, NULL };

    return server_start(args);
}

/* The ws client against the ws server: upgrade with a path and a header, masked binary
 * messages echoed back, exact counts, clean close handshakes. */
START_TEST(test_ws_echo)
{
    struct proc run = { .pid = -1, .fd = -1 };
    unsigned long long conns, in, out;
    char target[32];
    struct jnode *j;
    uint16_t port = start_with("ws", NULL, NULL);
    const char *args[] = { "--mode", "ws", "--target", target, "--path", "/echo?x=1",
                           "--header", "X-Test: yes", "--connections", "12",
                           "--duration", "1s", "--message-rate", "40", "--message-size", "200",
                           "--json", json_path, "--quiet", NULL };
    const char *closed[] = { "--mode", "ws", "--target", target, "--connections", "4",
                             "--duration", "300ms", "--closed-loop", "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_msg(run_loadgen(&run, args) == 0, "ws run failed:\n%s", run.out);
    j = jparse_file(json_path);
    ck_assert_str_eq(jreq(j, "config.mode", J_STR)->str, "ws");
    ck_assert_str_eq(jreq(j, "config.path", J_STR)->str, "/echo?x=1");
    ck_assert(jnum(j, "messages.sent") >= 12 * 40 * 0.6);   /* a stall before the stop costs */
    ck_assert(jnum(j, "messages.sent") == jnum(j, "messages.received"));
    ck_assert(jnum(j, "errors.total") == 0);
    ck_assert(jnum(j, "latency_ms.connect.count") == 12);   /* connect + upgrade */
    jfree(j);
    ck_assert_msg(run_loadgen(&run, closed) == 0, "ws closed loop failed:\n%s", run.out);
    server_stop();
    server_totals(&conns, &in, &out);
    ck_assert_uint_eq(conns, 16);
    ck_assert_msg(strstr(server.out, " 0 ended by an error") &&
                  strstr(server.out, "0 upgrades refused"), "server: %s", server.out);
    free(run.out);
}
END_TEST

/* A request that is not an upgrade gets an HTTP error, and the client says "handshake". */
START_TEST(test_ws_refused)
{
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32];
    uint16_t port = start_with("tcp", NULL, NULL);   /* echoes the request: not a 101 */
    const char *args[] = { "--mode", "ws", "--target", target, "--connections", "3",
                           "--duration", "1s", "--closed-loop", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_int_eq(run_loadgen(&run, args), 1);
    ck_assert_msg(strstr(run.out, "handshake 3"), "%s", run.out);
    ck_assert_ptr_nonnull(strstr(run.out, "NOT reached"));
    free(run.out);
}
END_TEST

static unsigned long long server_fault(const char *what)
{
    const char *p = strstr(server.out, "faults: ");
    unsigned long long dropped, flipped;

    ck_assert_msg(p, "no fault counts: %s", server.out);
    ck_assert_int_eq(sscanf(p, "faults: %llu dropped, %llu flipped", &dropped, &flipped), 2);
    return strcmp(what, "dropped") == 0 ? dropped : flipped;
}

/* tcp: the server drops or damages whole chunks; the client detects both, every message
 * is accounted for (intact + damaged + lost = sent), and the exit status says so. */
START_TEST(test_fault_tcp)
{
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32];
    struct jnode *j;
    uint16_t port = start_with("tcp", "--fault", "drop=0.03,flip=0.03,seed=7");
    const char *args[] = { "--target", target, "--connections", "10", "--duration", "1s",
                           "--message-rate", "100", "--json", json_path, "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_int_eq(run_loadgen(&run, args), 3);
    ck_assert_ptr_nonnull(strstr(run.out, "but messages were damaged"));
    server_stop();
    j = jparse_file(json_path);
    ck_assert(jreq(j, "result.data_errors", J_BOOL)->boolean);
    ck_assert(jreq(j, "result.held", J_BOOL)->boolean);
    ck_assert(jnum(j, "result.status") == 3);
    ck_assert_uint_gt(server_fault("dropped"), 0);
    ck_assert_uint_gt(server_fault("flipped"), 0);
    ck_assert(jnum(j, "messages.corrupt") > 0);
    ck_assert(jnum(j, "messages.lost") > 0);
    ck_assert(jnum(j, "messages.received") + jnum(j, "messages.corrupt") +
              jnum(j, "messages.lost") == jnum(j, "messages.sent"));
    /* at most one damaged stretch per damaged chunk */
    ck_assert(jnum(j, "messages.corrupt") <= server_fault("flipped") + server_fault("dropped"));
    jfree(j);
    free(run.out);
}
END_TEST

/* ws: faults hit whole messages, so the counts match the server's exactly. */
START_TEST(test_fault_ws)
{
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32];
    struct jnode *j;
    uint16_t port = start_with("ws", "--fault", "drop=0.04,flip=0.04,seed=11");
    const char *args[] = { "--mode", "ws", "--target", target, "--connections", "10",
                           "--duration", "1s", "--message-rate", "100", "--json", json_path,
                           "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_int_eq(run_loadgen(&run, args), 3);
    server_stop();
    j = jparse_file(json_path);
    ck_assert_uint_gt(server_fault("dropped"), 0);
    ck_assert_uint_gt(server_fault("flipped"), 0);
    ck_assert_uint_eq((unsigned long long)jnum(j, "messages.lost"), server_fault("dropped"));
    ck_assert_uint_eq((unsigned long long)jnum(j, "messages.corrupt"), server_fault("flipped"));
    ck_assert(jnum(j, "messages.received") + jnum(j, "messages.corrupt") +
              jnum(j, "messages.lost") == jnum(j, "messages.sent"));
    jfree(j);
    free(run.out);
}
END_TEST

/* Closed loop: a dropped echo is given up after --reply-timeout and counted lost; a damaged
 * one is counted at once; the loop goes on either way. An echo that comes back after it was
 * given up (a stalled machine) is counted lost and, if damaged, corrupt too: only bounds
 * are exact here. A fixed number of messages, not a duration: 1 s of a busy machine under
 * ASan once carried fewer than 20 echoes; 25 per connection (about 5 drops of 200 ms each)
 * take about 1.2 s on a quiet one, and the 5 s bound is a deadline, not the measure. */
START_TEST(test_fault_closed_loop)
{
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32];
    struct jnode *j;
    uint16_t port = start_with("tcp", "--fault", "drop=0.2,flip=0.2,seed=3");
    const char *args[] = { "--target", target, "--connections", "4", "--duration", "5s",
                           "--closed-loop", "--messages", "25", "--reply-timeout", "200ms",
                           "--json", json_path, "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_int_eq(run_loadgen(&run, args), 3);
    server_stop();
    j = jparse_file(json_path);
    ck_assert(jnum(j, "messages.lost") > 0);
    ck_assert(jnum(j, "messages.corrupt") > 0);
    ck_assert(jnum(j, "messages.received") > 20);
    ck_assert(jnum(j, "messages.sent") == 100);
    ck_assert(jnum(j, "messages.received") + jnum(j, "messages.lost") <=
              jnum(j, "messages.sent"));
    ck_assert(jnum(j, "messages.received") + jnum(j, "messages.corrupt") +
              jnum(j, "messages.lost") >= jnum(j, "messages.sent"));
    jfree(j);
    free(run.out);
}
END_TEST

/* A backend that answers after exactly 20 ms: the reported percentiles say 20 ms (open loop,
 * well below saturation, so nothing queues). This machine is shared: a stall of the whole
 * machine is a real latency that the loadgen rightly reports, so a run may be repeated
 * (three tries) before the tolerance fails the test. */
START_TEST(test_delay_percentiles)
{
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32];
    struct jnode *j;
    double p50 = 0, p99 = 0, min = 0;
    int try, ok = 0;
    uint16_t port = start_with("tcp", "--delay", "20");
    const char *args[] = { "--target", target, "--connections", "20", "--duration", "1500ms",
                           "--message-rate", "20", "--json", json_path, "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    for (try = 0; try < 3 && !ok; try++) {
        ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
        j = jparse_file(json_path);
        p50 = jnum(j, "latency_ms.round_trip.p50");
        p99 = jnum(j, "latency_ms.round_trip.p99");
        min = jnum(j, "latency_ms.round_trip.min");
        jfree(j);
        /* The server's sleep runs on millisecond loop time: 19-21 ms, plus the round trip. */
        ok = min >= 19.0 && p50 >= 19.5 && p50 <= 23.0 && p99 >= p50 && p99 <= 40.0;
    }
    ck_assert_msg(min >= 19.0, "min %.3f ms below the delay", min);
    ck_assert_msg(p50 >= 19.5 && p50 <= 23.0, "p50 %.3f ms, expected about 20", p50);
    ck_assert_msg(p99 >= p50 && p99 <= 40.0, "p99 %.3f ms, expected 20..40", p99);
    free(run.out);
}
END_TEST

/* serve --push: every connection receives the server's stamped messages, checked in order;
 * the latency is the server's stamp to our receipt. tcp and ws. */
START_TEST(test_push)
{
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32];
    struct jnode *j;
    int ws;

    for (ws = 0; ws < 2; ws++) {
        const char *sargs[] = { "--mode", ws ? "ws" : "tcp", "--listen", "127.0.0.1:0",
                                "--threads", "1", "--push", "50", "--push-size", "80", NULL };
        uint16_t port = server_start(sargs);
        const char *args[] = { "--mode", ws ? "ws" : "tcp", "--target", target,
                               "--connections", "10", "--duration", "1s", "--push-recv",
                               "--message-size", "80", "--json", json_path, "--quiet", NULL };

        snprintf(target, sizeof(target), "127.0.0.1:%u", port);
        ck_assert_msg(run_loadgen(&run, args) == 0, "push run failed:\n%s", run.out);
        server_stop();
        ck_assert_ptr_nonnull(strstr(server.out, " pushed, 0 push skipped"));
        j = jparse_file(json_path);
        ck_assert_str_eq(jreq(j, "config.traffic", J_STR)->str, "push");
        ck_assert(jnum(j, "messages.sent") == 0);
        ck_assert_msg(jnum(j, "messages.received") >= 10 * 50 * 0.6, "%s: %.0f received",
                      ws ? "ws" : "tcp", jnum(j, "messages.received"));
        ck_assert(jnum(j, "messages.corrupt") + jnum(j, "messages.lost") == 0);
        ck_assert(jnum(j, "latency_ms.round_trip.p50") < 10);
        jfree(j);
    }
    free(run.out);
}
END_TEST

/* SIGINT during the steady phase: a report anyway, and a failure exit (not held). */
START_TEST(test_interrupt)
{
    struct proc run = { .pid = -1, .fd = -1 };
    const char *argv[] = { "run", "--target", NULL, "--connections", "5", "--duration",
                           "30s", "--message-rate", "10", NULL };
    char target[32];
    int status;
    uint16_t port = server_start(echo1);

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    argv[2] = target;
    proc_spawn(&run, argv);
    while (!strstr(run.out, "up 5/5"))
        ck_assert_msg(proc_read(&run, 3000) > 0, "no progress: %s", run.out);
    kill(run.pid, SIGINT);
    status = proc_wait(&run, 5000);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    ck_assert_msg(strstr(run.out, "NOT held (interrupted)"), "%s", run.out);
    free(run.out);
}
END_TEST

/* --messages N: exactly N round trips per connection, then silence; the counts are exact
 * on both sides, for tcp and ws. */
START_TEST(test_messages_exact)
{
    struct proc run = { .pid = -1, .fd = -1 };
    unsigned long long conns, in, out;
    char target[32];
    struct jnode *j;
    int ws;

    for (ws = 0; ws < 2; ws++) {
        const char *sargs[] = { "--mode", ws ? "ws" : "tcp", "--listen", "127.0.0.1:0",
                                "--threads", "1", NULL };
        uint16_t port = server_start(sargs);
        const char *args[] = { "--mode", ws ? "ws" : "tcp", "--target", target,
                               "--connections", "10", "--duration", "300ms", "--closed-loop",
                               "--messages", "3", "--message-size", "1024", "--json",
                               json_path, "--quiet", NULL };

        snprintf(target, sizeof(target), "127.0.0.1:%u", port);
        ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
        server_stop();
        server_totals(&conns, &in, &out);
        j = jparse_file(json_path);
        ck_assert(jnum(j, "messages.sent") == 30);
        ck_assert(jnum(j, "messages.received") == 30);
        ck_assert(jnum(j, "config.messages_per_connection") == 3);
        ck_assert_uint_eq(conns, 10);
        if (!ws)
            ck_assert_uint_eq(in, 30 * 1024);
        jfree(j);
    }
    free(run.out);
}
END_TEST

/* --churn: connection after connection, each with one intact round trip; the server saw
 * every one of them. */
START_TEST(test_churn)
{
    struct proc run = { .pid = -1, .fd = -1 };
    unsigned long long conns, in, out;
    char target[32];
    struct jnode *j;
    uint16_t port = server_start(echo1);
    const char *args[] = { "--target", target, "--connections", "4", "--duration", "500ms",
                           "--churn", "--source", "127.0.0.2-127.0.0.9", "--json", json_path,
                           "--quiet", NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
    ck_assert_ptr_nonnull(strstr(run.out, "new connections/s"));
    server_stop();
    server_totals(&conns, &in, &out);
    j = jparse_file(json_path);
    ck_assert_str_eq(jreq(j, "config.traffic", J_STR)->str, "churn");
    ck_assert(jnum(j, "throughput.connections_per_s") > 100);
    ck_assert_uint_eq(conns, (unsigned long long)jnum(j, "connections.connected"));
    ck_assert(jnum(j, "messages.sent") == jnum(j, "connections.connected"));
    ck_assert(jnum(j, "messages.received") == jnum(j, "messages.sent"));
    ck_assert_uint_eq(in, (unsigned long long)jnum(j, "messages.sent") * 64);
    ck_assert(jnum(j, "latency_ms.connect.count") == jnum(j, "connections.connected"));
    jfree(j);
    free(run.out);
}
END_TEST

START_TEST(test_usage_errors)
{
    static const char *const none[] = { "--connections", "3", NULL };
    static const char *const both[] = { "--target", "127.0.0.1:1", "--closed-loop",
                                        "--message-rate", "5", NULL };
    static const char *const hold[] = { "--target", "127.0.0.1:1", "--hold", "--closed-loop",
                                        NULL };
    static const char *const size[] = { "--target", "127.0.0.1:1", "--message-size", "8",
                                        NULL };
    static const char *const src[] = { "--target", "127.0.0.1:1", "--source",
                                       "127.0.0.9-127.0.0.2", NULL };
    static const char *const dur[] = { "--target", "127.0.0.1:1", "--duration", "5x", NULL };
    static const char *const hdr[] = { "--target", "127.0.0.1:1", "--header", "X: y", NULL };
    struct proc run = { .pid = -1, .fd = -1 };

    ck_assert_int_eq(run_loadgen(&run, none), 2);
    ck_assert_ptr_nonnull(strstr(run.out, "--target ADDR:PORT is required"));
    ck_assert_int_eq(run_loadgen(&run, both), 2);
    ck_assert_int_eq(run_loadgen(&run, hold), 2);
    ck_assert_int_eq(run_loadgen(&run, size), 2);
    ck_assert_ptr_nonnull(strstr(run.out, "bad --message-size '8'"));
    ck_assert_int_eq(run_loadgen(&run, src), 2);
    ck_assert_int_eq(run_loadgen(&run, dur), 2);
    ck_assert_int_eq(run_loadgen(&run, hdr), 2);
    ck_assert_ptr_nonnull(strstr(run.out, "need --mode ws"));
    free(run.out);
}
END_TEST


/* ------------------------------------------------------------------ TLS */

/* Runs `sh -c <cmd>` in the scratch directory, its output in <out>. Returns the wait
 * status. */
static int sh_run(const char *cmd, char *out, size_t cap)
{
    struct proc p = { .pid = -1, .fd = -1 };
    const char *argv[] = { "/bin/sh", "-c", cmd, NULL };
    pid_t parent = getpid();
    int fds[2], status;

    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    p.cap = 1 << 14;
    p.out = malloc(p.cap);
    ck_assert_ptr_nonnull(p.out);
    p.out[0] = '\0';
    p.pid = th_fork();
    if (p.pid < 0)
        ck_abort_msg("fork(): %s", strerror(errno));
    if (p.pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent || chdir(th_tmpdir()) < 0)
            _exit(127);
        dup2(fds[1], STDOUT_FILENO);
        dup2(fds[1], STDERR_FILENO);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(fds[1]);
    p.fd = fds[0];
    status = proc_wait(&p, 20000);
    snprintf(out, cap, "%s", p.out);
    free(p.out);
    return status;
}

/* The scratch directory's certificates (made once per test process). */
static char tls_dir[TH_PATH_MAX];

static const char *tls_file(const char *name)
{
    static char paths[8][TH_PATH_MAX + 64];
    static unsigned next;
    char *p = paths[next++ % 8];

    snprintf(p, sizeof(paths[0]), "%s/%s", tls_dir, name);
    return p;
}

/* ca.pem signs srv.pem (CN localhost, SAN DNS:localhost, IP:127.0.0.1) and cli.pem;
 * other-ca.pem signs nothing we use. ECDSA P-256: fast to make. */
static void make_certs(void)
{
    static const char script[] =
        "set -e\n"
        "k='-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes'\n"
        "openssl req -x509 $k -keyout ca.key -out ca.pem -days 2 -subj /CN=loadgen-test-ca "
        "  -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign 2>/dev/null\n"
        "openssl req -x509 $k -keyout other-ca.key -out other-ca.pem -days 2 "
        "  -subj /CN=other-ca 2>/dev/null\n"
        "printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > srv.ext\n"
        "openssl req $k -keyout srv.key -out srv.csr -subj /CN=localhost 2>/dev/null\n"
        "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 2 "
        "  -extfile srv.ext -out srv.pem 2>/dev/null\n"
        "openssl req $k -keyout cli.key -out cli.csr -subj /CN=loadgen-client 2>/dev/null\n"
        "openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca.key -set_serial 3 -days 2 "
        "  -out cli.pem 2>/dev/null\n"
        "test -s srv.pem && test -s cli.pem\n";
    char out[4096];
    int status;

    if (tls_dir[0])
        return;
    snprintf(tls_dir, sizeof(tls_dir), "%s", th_tmpdir());
    status = sh_run(script, out, sizeof(out));
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                  "making test certificates with the openssl CLI failed: %s", out);
}

/* `serve --tls` in <mode> with the test server certificate, and <extra> (NULL-ended, up to
 * 4 arguments). Returns its port. */
static uint16_t tls_server_start(const char *mode, const char *const *extra)
{
    const char *args[16] = { "--mode", mode, "--listen", "127.0.0.1:0", "--threads", "2",
                             "--tls", "--tls-cert", tls_file("srv.pem"), "--tls-key",
                             tls_file("srv.key") };
    int i, n = 11;

    /* port 0 needs one thread */
    args[5] = "1";
    for (i = 0; extra && extra[i] && n < 15; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    return server_start(args);
}

/* The server's TLS totals: "tls: N handshakes (F full, R resumed), failed: ..." */
static void server_tls_totals(unsigned long long *full, unsigned long long *resumed)
{
    const char *s = strstr(server.out, "; tls: ");
    unsigned long long n;

    ck_assert_msg(s, "no tls totals: %s", server.out);
    ck_assert_int_eq(sscanf(s, "; tls: %llu handshakes (%llu full, %llu resumed)", &n, full,
                            resumed), 3);
    ck_assert_uint_eq(n, *full + *resumed);
}

/* serve --tls and run --tls, tcp and ws (wss://, the upgrade over TLS), several processes
 * for ws: every message intact and counted on both sides, one handshake per connection,
 * the handshake histogram next to the connect one, exit status 0. */
START_TEST(test_tls_echo)
{
    struct proc run = { .pid = -1, .fd = -1 };
    unsigned long long conns, in, out, full, resumed;
    char target[32];
    struct jnode *j;
    int ws;

    make_certs();
    for (ws = 0; ws < 2; ws++) {
        uint16_t port = tls_server_start(ws ? "ws" : "tcp", NULL);
        const char *args[] = { "--mode", ws ? "ws" : "tcp", "--target", target, "--tls",
                               "--connections", "6", "--closed-loop", "--messages", "20",
                               "--message-size", ws ? "3000" : "100", "--duration", "300ms",
                               "--procs", ws ? "2" : "1", "--json", json_path, "--quiet",
                               NULL };

        snprintf(target, sizeof(target), "127.0.0.1:%u", port);
        ck_assert_msg(run_loadgen(&run, args) == 0, "%s run failed:\n%s", ws ? "wss" : "tls",
                      run.out);
        ck_assert_msg(strstr(run.out, ws ? "run: wss 127.0.0.1:" : "run: tcp+tls 127.0.0.1:") &&
                      strstr(run.out, "\n  handshake ") &&
                      strstr(run.out, "tls handshakes: 6 (6 full, 0 resumed;") &&
                      strstr(run.out, "failures: none"), "report:\n%s", run.out);
        server_stop();
        server_totals(&conns, &in, &out);
        server_tls_totals(&full, &resumed);
        ck_assert_uint_eq(conns, 6);
        ck_assert_uint_eq(full, 6);
        ck_assert_uint_eq(resumed, 0);
        ck_assert_msg(strstr(server.out, " 0 ended by an error") &&
                      strstr(server.out, "failed: none"), "server: %s", server.out);
        j = jparse_file(json_path);
        ck_assert(jnum(j, "messages.sent") == 120);
        ck_assert(jnum(j, "messages.received") == 120);
        ck_assert(jnum(j, "messages.corrupt") + jnum(j, "messages.lost") +
                  jnum(j, "messages.reordered") == 0);
        ck_assert(jnum(j, "errors.total") == 0);
        ck_assert(jnum(j, "tls.handshakes") == 6);
        ck_assert(jnum(j, "tls.full") == 6);
        ck_assert(jnum(j, "tls.resumed") == 0);
        ck_assert(jnum(j, "tls.tls1_3") == 6);        /* both sides allow 1.3 */
        ck_assert(jnum(j, "tls.failures.total") == 0);
        ck_assert(jnum(j, "tls.ramp_handshakes_per_s") > 0);
        ck_assert(jnum(j, "latency_ms.tls_handshake.count") == 6);
        ck_assert(jnum(j, "latency_ms.connect.count") == 6);
        /* the connect time contains the handshake's */
        ck_assert(jnum(j, "latency_ms.connect.max") >= jnum(j, "latency_ms.tls_handshake.min"));
        ck_assert(!jreq(j, "tls.resume", J_BOOL)->boolean);
        ck_assert(!jreq(j, "tls.verify", J_BOOL)->boolean);
        jreq(j, "tls.sni", J_NULL);
        ck_assert_str_eq(jreq(j, "tls.version", J_STR)->str, "1.2-1.3");
        jfree(j);
    }
    free(run.out);
}
END_TEST

/* A plain run prints nothing about TLS and its JSON has no "tls" keys. */
START_TEST(test_tls_plain_unchanged)
{
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32];
    struct jnode *j;
    uint16_t port = server_start(echo1);
    const char *args[] = { "--target", target, "--connections", "2", "--closed-loop",
                           "--messages", "2", "--duration", "200ms", "--json", json_path,
                           NULL };

    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
    ck_assert_msg(!strstr(run.out, "tls") && !strstr(run.out, "handshake "), "%s", run.out);
    j = jparse_file(json_path);
    ck_assert_ptr_null(jget(j, "tls"));
    ck_assert_ptr_null(jget(jget(j, "latency_ms"), "tls_handshake"));
    jfree(j);
    server_stop();
    ck_assert_ptr_null(strstr(server.out, "tls"));
    free(run.out);
}
END_TEST

/* --tls-resume: one churning connection, so each handshake but the first has the ticket
 * of the one before: exactly one full handshake, every other one resumed, on both sides;
 * TLS 1.3 and 1.2 (stateless tickets either way). Then several churners on one thread,
 * offering the same ticket at once. */
START_TEST(test_tls_resume)
{
    struct proc run = { .pid = -1, .fd = -1 };
    unsigned long long full, resumed;
    char target[32];
    struct jnode *j;
    int v12;

    make_certs();
    for (v12 = 0; v12 < 2; v12++) {
        uint16_t port = tls_server_start("tcp", NULL);
        const char *args[] = { "--target", target, "--tls", "--tls-resume", "--tls-version",
                               v12 ? "1.2" : "1.3", "--connections", "1", "--churn",
                               "--duration", "700ms", "--json", json_path, "--quiet", NULL };
        double n;

        snprintf(target, sizeof(target), "127.0.0.1:%u", port);
        ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
        ck_assert_msg(strstr(run.out, "/s in the steady phase; failures: none"), "%s",
                      run.out);
        server_stop();
        server_tls_totals(&full, &resumed);
        j = jparse_file(json_path);
        n = jnum(j, "connections.connected");
        ck_assert_msg(n >= 2, "only %.0f churn cycles", n);
        ck_assert(jnum(j, "tls.handshakes") == n);
        ck_assert(jnum(j, "tls.full") == 1);
        ck_assert(jnum(j, "tls.resumed") == n - 1);
        ck_assert(jnum(j, v12 ? "tls.tls1_2" : "tls.tls1_3") == n);
        ck_assert(jreq(j, "tls.resume", J_BOOL)->boolean);
        ck_assert_str_eq(jreq(j, "tls.version", J_STR)->str, v12 ? "1.2" : "1.3");
        ck_assert(jnum(j, "tls.steady_handshakes") > 0);
        ck_assert(jnum(j, "tls.handshakes_per_s") > 0);
        ck_assert(jnum(j, "messages.received") == n);
        ck_assert_uint_eq(full, 1);
        ck_assert_uint_eq(resumed, (unsigned long long)n - 1);
        jfree(j);
    }
    /* Four churners sharing their thread's ticket: a full handshake only while no ticket
     * had come yet, so at most one per churner. */
    {
        uint16_t port = tls_server_start("tcp", NULL);
        const char *args[] = { "--target", target, "--tls", "--tls-resume", "--connections",
                               "4", "--churn", "--duration", "700ms", "--json", json_path,
                               "--quiet", NULL };
        double n;

        snprintf(target, sizeof(target), "127.0.0.1:%u", port);
        ck_assert_msg(run_loadgen(&run, args) == 0, "run failed:\n%s", run.out);
        server_stop();
        j = jparse_file(json_path);
        n = jnum(j, "connections.connected");
        ck_assert_msg(n >= 8, "only %.0f churn cycles", n);
        ck_assert_msg(jnum(j, "tls.full") >= 1 && jnum(j, "tls.full") <= 4, "%.0f full",
                      jnum(j, "tls.full"));
        ck_assert(jnum(j, "tls.resumed") == n - jnum(j, "tls.full"));
        jfree(j);
    }
    free(run.out);
}
END_TEST

/* --tls-verify: the right CA and name pass; a wrong --sni, or another CA, fail every
 * handshake with a certificate failure counted (text, JSON, exit status 1). */
START_TEST(test_tls_verify)
{
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32];
    struct jnode *j;
    uint16_t port;
    int k;

    make_certs();
    port = tls_server_start("tcp", NULL);
    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    {
        const char *good[] = { "--target", target, "--tls", "--tls-verify", tls_file("ca.pem"),
                               "--sni", "localhost", "--alpn", "h2,http/1.1", "--connections",
                               "3", "--closed-loop", "--messages", "5", "--duration", "200ms",
                               "--json", json_path, "--quiet", NULL };

        ck_assert_msg(run_loadgen(&run, good) == 0, "verified run failed:\n%s", run.out);
        j = jparse_file(json_path);
        ck_assert(jnum(j, "tls.handshakes") == 3);
        ck_assert(jreq(j, "tls.verify", J_BOOL)->boolean);
        ck_assert_str_eq(jreq(j, "tls.sni", J_STR)->str, "localhost");
        ck_assert_str_eq(jreq(j, "tls.alpn", J_STR)->str, "h2,http/1.1");
        jfree(j);
    }
    for (k = 0; k < 2; k++) {
        const char *bad[] = { "--target", target, "--tls", "--tls-verify",
                              tls_file(k ? "other-ca.pem" : "ca.pem"), "--sni",
                              k ? "localhost" : "wrong.example", "--connections", "4",
                              "--closed-loop", "--duration", "200ms", "--json", json_path,
                              NULL };

        ck_assert_int_eq(run_loadgen(&run, bad), 1);
        ck_assert_msg(strstr(run.out, "NOT reached") && strstr(run.out, "handshake 4") &&
                      strstr(run.out, "failures: cert 4"), "%s", run.out);
        j = jparse_file(json_path);
        ck_assert(jnum(j, "tls.failures.cert") == 4);
        ck_assert(jnum(j, "tls.failures.total") == 4);
        ck_assert(jnum(j, "tls.handshakes") == 0);
        ck_assert(jnum(j, "errors.handshake") == 4);
        ck_assert(jnum(j, "latency_ms.tls_handshake.count") == 0);
        jfree(j);
    }
    server_stop();
    free(run.out);
}
END_TEST

/* --tls-ciphers and --tls-ciphersuites reach OpenSSL on both ends: a server that takes
 * only ChaCha20-Poly1305 serves clients that offer it and refuses, with a protocol
 * failure counted, those that offer AES-GCM only; TLS 1.3 and 1.2. */
START_TEST(test_tls_ciphers)
{
    struct proc run = { .pid = -1, .fd = -1 };
    const char *extra[] = { "--tls-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256",
                            "--tls-ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305", NULL };
    static const char *const picks[][3] = {
        /* version, option, value: the first two match the server, the others do not */
        { "1.3", "--tls-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256" },
        { "1.2", "--tls-ciphers", "ECDHE-ECDSA-CHACHA20-POLY1305" },
        { "1.3", "--tls-ciphersuites", "TLS_AES_128_GCM_SHA256" },
        { "1.2", "--tls-ciphers", "ECDHE-ECDSA-AES128-GCM-SHA256" },
    };
    char target[32];
    struct jnode *j;
    uint16_t port;
    int k;

    make_certs();
    port = tls_server_start("tcp", extra);
    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    for (k = 0; k < 4; k++) {
        const char *args[] = { "--target", target, "--tls", "--tls-version", picks[k][0],
                               picks[k][1], picks[k][2], "--connections", "2",
                               "--closed-loop", "--messages", "5", "--duration", "200ms",
                               "--json", json_path, "--quiet", NULL };

        ck_assert_int_eq(run_loadgen(&run, args), k < 2 ? 0 : 1);
        j = jparse_file(json_path);
        if (k < 2) {
            ck_assert(jnum(j, "messages.received") == 10);
            ck_assert(jnum(j, picks[k][0][2] == '3' ? "tls.tls1_3" : "tls.tls1_2") == 2);
        } else {
            ck_assert_msg(jnum(j, "tls.failures.protocol") == 2, "%s %s: %s", picks[k][1],
                          picks[k][2], run.out);
            ck_assert(jnum(j, "errors.handshake") == 2);
        }
        jfree(j);
    }
    server_stop();
    ck_assert_msg(strstr(server.out, "tls: 4 handshakes (4 full, 0 resumed), failed: "
                                     "protocol 4"), "server: %s", server.out);
    free(run.out);
}
END_TEST

/* serve --tls-client-ca: a client with a certificate from that CA passes (ws: the
 * upgrade after the mutual handshake); one without is refused, and the server counts a
 * certificate failure for each. */
START_TEST(test_tls_client_cert)
{
    struct proc run = { .pid = -1, .fd = -1 };
    const char *extra[] = { "--tls-client-ca", NULL, NULL };
    unsigned long long full, resumed;
    char target[32];
    struct jnode *j;
    uint16_t port;

    make_certs();
    extra[1] = tls_file("ca.pem");
    port = tls_server_start("ws", extra);
    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    {
        const char *with[] = { "--mode", "ws", "--target", target, "--tls", "--tls-cert",
                               tls_file("cli.pem"), "--tls-key", tls_file("cli.key"),
                               "--connections", "3", "--closed-loop", "--messages", "4",
                               "--duration", "200ms", "--json", json_path, "--quiet", NULL };
        /* TLS 1.2: the client learns of the refusal within its handshake */
        const char *without[] = { "--mode", "ws", "--target", target, "--tls",
                                  "--tls-version", "1.2", "--connections", "2",
                                  "--closed-loop", "--duration", "200ms", "--quiet", NULL };

        ck_assert_msg(run_loadgen(&run, with) == 0, "mTLS run failed:\n%s", run.out);
        j = jparse_file(json_path);
        ck_assert(jnum(j, "messages.received") == 12);
        ck_assert(jreq(j, "tls.client_cert", J_BOOL)->boolean);
        jfree(j);
        ck_assert_int_eq(run_loadgen(&run, without), 1);
        ck_assert_msg(strstr(run.out, "NOT reached") && strstr(run.out, "handshake 2"), "%s",
                      run.out);
    }
    server_stop();
    server_tls_totals(&full, &resumed);
    ck_assert_uint_eq(full, 3);
    ck_assert_msg(strstr(server.out, "failed: cert 2"), "server: %s", server.out);
    free(run.out);
}
END_TEST

/* A TLS echo peer in python3's ssl module (OpenSSL's own record layer), and a client for
 * our server. */
static const char py_peer[] =
    "import socket, socketserver, ssl, sys, os\n"
    "d = sys.argv[2]\n"
    "if sys.argv[1] == 'server':\n"
    "    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n"
    "    ctx.load_cert_chain(d + '/srv.pem', d + '/srv.key')\n"
    "    class H(socketserver.BaseRequestHandler):\n"
    "        def handle(self):\n"
    "            try:\n"
    "                s = ctx.wrap_socket(self.request, server_side=True)\n"
    "                while True:\n"
    "                    b = s.recv(65536)\n"
    "                    if not b:\n"
    "                        break\n"
    "                    s.sendall(b)\n"
    "            except (OSError, ssl.SSLError):\n"
    "                pass\n"
    "    socketserver.ThreadingTCPServer.daemon_threads = True\n"
    "    srv = socketserver.ThreadingTCPServer(('127.0.0.1', 0), H)\n"
    "    print('serve: python tls echo on 127.0.0.1:%d, 1 thread' % srv.server_address[1],\n"
    "          flush=True)\n"
    "    srv.serve_forever()\n"
    "else:\n"
    "    port, ver = int(sys.argv[3]), sys.argv[4]\n"
    "    ctx = ssl.create_default_context(cafile=d + '/ca.pem')\n"
    "    v = ssl.TLSVersion.TLSv1_2 if ver == '1.2' else ssl.TLSVersion.TLSv1_3\n"
    "    ctx.minimum_version = ctx.maximum_version = v\n"
    "    data = os.urandom(200000)\n"
    "    with socket.create_connection(('127.0.0.1', port), timeout=10) as raw:\n"
    "        with ctx.wrap_socket(raw, server_hostname='localhost') as s:\n"
    "            got = b''\n"
    "            for off in range(0, len(data), 16384):\n"
    "                s.sendall(data[off:off + 16384])\n"
    "                while len(got) < min(off + 16384, len(data)):\n"
    "                    b = s.recv(65536)\n"
    "                    assert b, 'EOF after %d bytes' % len(got)\n"
    "                    got += b\n"
    "            assert got == data, 'echo differs: %d of %d bytes' % (len(got), len(data))\n"
    "            print('ok', s.version())\n";

/* Interop both ways: run --tls against python's TLS echo server (checksummed messages,
 * and --tls-resume taken, 1.2 and 1.3), and python's TLS client against serve --tls
 * (200 kB echoed and compared, 1.2 and 1.3). */
START_TEST(test_tls_interop)
{
    struct proc run = { .pid = -1, .fd = -1 };
    char target[32], path[TH_PATH_MAX], cmd[2 * TH_PATH_MAX + 64], out[4096];
    struct jnode *j;
    uint16_t port;
    int k, status;

    if (access("/usr/bin/python3", X_OK) != 0)
        TH_SKIP("no /usr/bin/python3 (apt-get install python3)");
    make_certs();
    ck_assert_int_eq(th_write_file(path, sizeof(path), "peer.py", "%s", py_peer), 0);
    {
        const char *argv[] = { "/usr/bin/python3", path, "server", tls_dir, NULL };
        struct sockaddr_storage ss;
        uint64_t until = now_ms() + 10000;
        char *line, *end;
        pid_t parent = getpid();
        int fds[2];

        /* proc_spawn() runs the loadgen; this peer is another program */
        ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
        server.out = malloc(server.cap = 1 << 16);
        ck_assert_ptr_nonnull(server.out);
        server.out[0] = '\0';
        server.len = 0;
        server.pid = th_fork();
        if (server.pid < 0)
            ck_abort_msg("fork(): %s", strerror(errno));
        if (server.pid == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent)
                _exit(127);
            dup2(fds[1], STDOUT_FILENO);
            dup2(fds[1], STDERR_FILENO);
            execv(argv[0], (char *const *)argv);
            _exit(127);
        }
        close(fds[1]);
        server.fd = fds[0];
        while (!(line = strstr(server.out, " echo on ")) || !strchr(line, ','))
            ck_assert_msg(now_ms() < until && proc_read(&server, 1000) >= 0 &&
                          server.fd >= 0, "python peer did not start: %s", server.out);
        end = strchr(line, ',');
        *end = '\0';
        ck_assert_int_eq(lg_addr_parse(line + strlen(" echo on "), &ss), 0);
        *end = ',';
        port = lg_addr_port((struct sockaddr *)&ss);
    }
    snprintf(target, sizeof(target), "127.0.0.1:%u", port);
    for (k = 0; k < 2; k++) {
        const char *args[] = { "--target", target, "--tls", "--tls-version", k ? "1.2" : "1.3",
                               "--connections", "4", "--closed-loop", "--messages", "25",
                               "--message-size", "5000", "--duration", "200ms", "--json",
                               json_path, "--quiet", NULL };
        const char *resume[] = { "--target", target, "--tls", "--tls-version",
                                 k ? "1.2" : "1.3", "--tls-resume", "--connections", "1",
                                 "--churn", "--duration", "500ms", "--json", json_path,
                                 "--quiet", NULL };
        double n;

        ck_assert_msg(run_loadgen(&run, args) == 0, "run against python (TLS %s) failed:\n%s",
                      k ? "1.2" : "1.3", run.out);
        j = jparse_file(json_path);
        ck_assert(jnum(j, "messages.received") == 100);
        ck_assert(jnum(j, "messages.corrupt") + jnum(j, "messages.lost") == 0);
        ck_assert(jnum(j, k ? "tls.tls1_2" : "tls.tls1_3") == 4);
        jfree(j);
        /* python's server takes our tickets back: one full handshake, then resumed ones */
        ck_assert_msg(run_loadgen(&run, resume) == 0, "resuming against python (TLS %s) "
                      "failed:\n%s", k ? "1.2" : "1.3", run.out);
        j = jparse_file(json_path);
        n = jnum(j, "connections.connected");
        ck_assert_msg(n >= 2, "only %.0f churn cycles", n);
        ck_assert(jnum(j, "tls.full") == 1);
        ck_assert(jnum(j, "tls.resumed") == n - 1);
        jfree(j);
    }
    proc_kill(&server);

    port = tls_server_start("tcp", NULL);
    for (k = 0; k < 2; k++) {
        snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s client %s %u %s", path, tls_dir, port,
                 k ? "1.2" : "1.3");
        status = sh_run(cmd, out, sizeof(out));
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
                      strstr(out, k ? "ok TLSv1.2" : "ok TLSv1.3"),
                      "python client against serve --tls: %s", out);
    }
    server_stop();
    ck_assert_msg(strstr(server.out, "tls: 2 handshakes (2 full, 0 resumed), failed: none"),
                  "server: %s", server.out);
    free(run.out);
}
END_TEST

/* Bad TLS options: usage errors (status 2), before any connection. */
START_TEST(test_tls_usage_errors)
{
    static const char *const sni[] = { "--target", "127.0.0.1:1", "--sni", "x", NULL };
    static const char *const half[] = { "--target", "127.0.0.1:1", "--tls", "--tls-cert",
                                        "/nonexistent.pem", NULL };
    static const char *const ver[] = { "--target", "127.0.0.1:1", "--tls", "--tls-version",
                                       "1.1", NULL };
    static const char *const ca[] = { "--target", "127.0.0.1:1", "--tls", "--tls-verify",
                                      "/nonexistent-ca.pem", NULL };
    static const char *const ciphers[] = { "--target", "127.0.0.1:1", "--tls",
                                           "--tls-version", "1.2", "--tls-ciphers",
                                           "AES128-SHA", NULL };
    static const char *const alpn[] = { "--target", "127.0.0.1:1", "--tls", "--alpn",
                                        "h2,,x", NULL };
    struct proc run = { .pid = -1, .fd = -1 };
    const char *snocert[] = { "serve", "--listen", "127.0.0.1:0", "--threads", "1", "--tls",
                              NULL };
    int status;

    ck_assert_int_eq(run_loadgen(&run, sni), 2);
    ck_assert_ptr_nonnull(strstr(run.out, "--sni needs --tls"));
    ck_assert_int_eq(run_loadgen(&run, half), 2);
    ck_assert_ptr_nonnull(strstr(run.out, "--tls-cert and --tls-key go together"));
    ck_assert_int_eq(run_loadgen(&run, ver), 2);
    ck_assert_int_eq(run_loadgen(&run, ca), 2);
    ck_assert_msg(strstr(run.out, "--tls-verify /nonexistent-ca.pem"), "%s", run.out);
    ck_assert_int_eq(run_loadgen(&run, ciphers), 2);   /* no AEAD suite left */
    ck_assert_int_eq(run_loadgen(&run, alpn), 2);
    proc_spawn(&run, snocert);
    status = proc_wait(&run, 5000);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 2, "%s", run.out);
    ck_assert_ptr_nonnull(strstr(run.out, "--tls needs --tls-cert FILE and --tls-key FILE"));
    free(run.out);
}
END_TEST

Suite *loadgen_suite(void)
{
    Suite *s = suite_create("loadgen");
    TCase *msg = tcase_create("msg");
    TCase *runs = tcase_create("run");
    TCase *tls = tcase_create("tls");

    tcase_add_test(msg, test_msg_stream_pieces);
    tcase_add_test(msg, test_msg_damage);
    tcase_add_test(msg, test_msg_every_bit);
    suite_add_tcase(s, msg);

    tcase_add_checked_fixture(runs, setup, teardown);
    tcase_set_timeout(runs, 30);
    tcase_add_test(runs, test_exact_counts);
    tcase_add_test(runs, test_closed_loop_counts);
    tcase_add_test(runs, test_procs_merge);
    tcase_add_test(runs, test_failing_ramp);
    tcase_add_test(runs, test_json_schema);
    tcase_add_test(runs, test_source_spread);
    tcase_add_test(runs, test_usage_errors);
    tcase_add_test(runs, test_ws_echo);
    tcase_add_test(runs, test_ws_refused);
    tcase_add_test(runs, test_fault_tcp);
    tcase_add_test(runs, test_fault_ws);
    tcase_add_test(runs, test_fault_closed_loop);
    tcase_add_test(runs, test_delay_percentiles);
    tcase_add_test(runs, test_push);
    tcase_add_test(runs, test_interrupt);
    tcase_add_test(runs, test_messages_exact);
    tcase_add_test(runs, test_churn);
    suite_add_tcase(s, runs);

    tcase_add_checked_fixture(tls, setup, teardown);
    tcase_set_timeout(tls, 60);
    tcase_add_test(tls, test_tls_usage_errors);
    tcase_add_test(tls, test_tls_plain_unchanged);
    tcase_add_test(tls, test_tls_echo);
    tcase_add_test(tls, test_tls_resume);
    tcase_add_test(tls, test_tls_verify);
    tcase_add_test(tls, test_tls_ciphers);
    tcase_add_test(tls, test_tls_client_cert);
    tcase_add_test(tls, test_tls_interop);
    suite_add_tcase(s, tls);
    return s;
}
