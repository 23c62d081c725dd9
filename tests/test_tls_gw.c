/* tests/test_tls_gw.c — TLS termination in the daemon: real clients (Python's ssl,
 * `openssl s_client`, raw sockets for garbage), real backends, certificates made at test
 * time with the openssl CLI (no key is committed). */
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
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/harness.h"

#define IO_MS    10000
#define READY_MS 15000

/* ------------------------------------------------------------------ certificates */

static char certdir[TH_PATH_MAX / 2];

/* Runs a shell command line made from <fmt>; returns its exit status (or -1). */
static int __attribute__((format(printf, 1, 2))) sh(const char *fmt, ...)
{
    char cmd[4096];
    va_list ap;
    int st;

    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* A test CA, and leaf certificates signed by it (each file: chain then key):
 *   default.pem  CN default.test
 *   a.pem        CN a.test, SAN a.test
 *   wild.pem     CN wild.b.test, SAN *.b.test
 *   client.pem   a client certificate, CN client-1
 *   old.pem      expired (2020), other.pem/other.key a mismatched pair */
static void make_certs(void)
{
    const char *d;
    int rc;

    snprintf(certdir, sizeof(certdir), "%s/certs", th_tmpdir());
    d = certdir;
    rc = sh("rm -rf %s && mkdir -p %s && cd %s && "
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout ca.key -out ca.pem -subj /CN=corogate-test-ca -days 2 2>/dev/null && "
        "for n in default:default.test: a:a.test:a.test wild:wild.b.test:*.b.test "
        "client:client-1: ; do f=${n%%%%:*}; r=${n#*:}; cn=${r%%%%:*}; san=${r#*:}; "
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout $f.key -out $f.csr -subj /CN=$cn 2>/dev/null || exit 1; "
        "if [ -n \"$san\" ]; then echo \"subjectAltName=DNS:$san\" > $f.ext; "
        "else echo 'basicConstraints=CA:FALSE' > $f.ext; fi; "
        "openssl x509 -req -in $f.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile $f.ext -out $f.crt 2>/dev/null || exit 1; cat $f.crt $f.key > $f.pem; "
        "done && "
        "touch index.txt && echo 01 > serial && printf '[ca]\\ndefault_ca = d\\n[d]\\n"
        "database = %s/index.txt\\nnew_certs_dir = %s\\nserial = %s/serial\\n"
        "default_md = sha256\\npolicy = p\\n[p]\\ncommonName = supplied\\n' %s %s %s > ca.cnf && "
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout old.key "
        "-out old.csr -subj /CN=old.test 2>/dev/null && openssl ca -batch -config ca.cnf "
        "-selfsign -keyfile old.key -in old.csr -out old.crt -startdate 20200101000000Z "
        "-enddate 20200102000000Z -notext >/dev/null 2>&1 && cat old.crt old.key > old.pem && "
        "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
        "-keyout other.key -out /dev/null -subj /CN=x 2>/dev/null",
        d, d, d, "%s", "%s", "%s", d, d, d);
    ck_assert_msg(rc == 0, "making the test certificates with the openssl CLI failed (%d)", rc);
}

/* ------------------------------------------------------------------ helpers */

/* Runs tests/tls_probe.py with <args>; returns its JSON line (caller frees). */
static char *__attribute__((format(printf, 2, 3))) client(int port, const char *fmt, ...)
{
    char args[2048], cmd[2600], *out = calloc(1, 65536);
    size_t len = 0;
    va_list ap;
    FILE *f;
    size_t n;

    ck_assert_ptr_nonnull(out);
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof(cmd), "timeout 120 /usr/bin/python3 tests/tls_probe.py %d %s 2>&1",
             port, args);
    f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    while (len < 65535 && (n = fread(out + len, 1, 65535 - len, f)) > 0)
        len += n;
    pclose(f);
    return out;
}

static int has(const char *s, const char *needle)
{
    return s && strstr(s, needle) != NULL;
}

static const char tcp_conf[] =
    "[gateway]\n"
    "workers = %u\n"
    "cpu_pinning = off\n"
    "stats_socket = %s/tls-%d.sock\n"
    "[listener t]\n"
    "bind = 127.0.0.1:%d\n"
    "upstream = u\n"
    "tls = on\n"
    "tls_certificate = %s\n"
    "%s"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n";

static struct th_daemon *start_tls(int port, unsigned workers, const char *certs,
                                   const char *extra, int backend)
{
    struct th_daemon *d = th_daemon_start_conf(NULL, tcp_conf, workers, th_tmpdir(), port, port,
                                               certs, extra, backend);

    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    return d;
}

static char *show(int port, const char *cmd)
{
    char sock[TH_PATH_MAX];

    snprintf(sock, sizeof(sock), "%s/tls-%d.sock", th_tmpdir(), port);
    return th_stats_cmd(sock, cmd, IO_MS);
}

/* ------------------------------------------------------------------ tests */

/* TLS 1.3 and 1.2 from Python's ssl, each with a checksummed echo of 300 KB in random
 * pieces, through a tcp listener to a plain echo backend; then `show tls` counts them. */
START_TEST(test_tcp_versions)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX * 2], *out;
    int port = th_free_port();
    struct th_daemon *d;

    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem", certdir);
    d = start_tls(port, 2, certs, "", th_echo_port(e));
    out = client(port, "--version 1.3 --bytes 300000");
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "TLSv1.3"), "1.3: %s", out);
    free(out);
    out = client(port, "--version 1.2 --bytes 300000");
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "TLSv1.2") && has(out, "GCM"),
              "1.2: %s", out);
    free(out);
    out = show(port, "show tls");
    TH_ASSERT(d, has(out, "handshakes: 2 full") && has(out, "TLSv1.3 1, TLSv1.2 1") &&
              has(out, "names: default.test") && has(out, "(default)"), "show tls:\n%s", out);
    free(out);
    out = show(port, "show metrics");
    TH_ASSERT(d, has(out, "corogate_tls_handshakes_total{listener=\"t\"") &&
              has(out, "corogate_tls_certificate_expiry_timestamp_seconds{listener=\"t\","
                  "name=\"default.test\""), "metrics lack the TLS families");
    free(out);
    th_echo_free(e);
}
END_TEST

/* SNI: an exact name, a wildcard, and the default for anything else; verified against
 * the test CA by the client, so a wrong certificate would fail the handshake. */
START_TEST(test_sni)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX * 4], *out;
    int port = th_free_port();
    struct th_daemon *d;

    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem %s/a.pem %s/wild.pem", certdir, certdir,
             certdir);
    d = start_tls(port, 1, certs, "", th_echo_port(e));
    out = client(port, "--sni a.test --ca %s/ca.pem --bytes 100", certdir);
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"cn\": \"a.test\""), "a.test: %s", out);
    free(out);
    out = client(port, "--sni x.b.test --ca %s/ca.pem --bytes 100", certdir);
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"cn\": \"wild.b.test\""),
              "x.b.test: %s", out);
    free(out);
    out = client(port, "--sni elsewhere.test --bytes 100");
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"cn\": \"default.test\""),
              "elsewhere.test: %s", out);
    free(out);
    /* The wildcard covers one label only. */
    out = client(port, "--sni y.x.b.test --ca %s/ca.pem --bytes 100", certdir);
    TH_ASSERT(d, has(out, "\"ok\": false") && has(out, "CERTIFICATE_VERIFY_FAILED"),
              "y.x.b.test: %s", out);
    free(out);
    th_echo_free(e);
}
END_TEST

/* ALPN on a tcp listener: the configured list, our preference; no protocol in common is
 * refused with no_application_protocol. */
START_TEST(test_alpn)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX], *out;
    int port = th_free_port();
    struct th_daemon *d;

    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem", certdir);
    d = start_tls(port, 1, certs, "tls_alpn = imap, smtp\n", th_echo_port(e));
    out = client(port, "--alpn smtp,imap --bytes 10");
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"alpn\": \"imap\""), "%s", out);
    free(out);
    out = client(port, "--alpn h2 --bytes 10");
    TH_ASSERT(d, has(out, "\"ok\": false") && has(out, "no application protocol"), "%s", out);
    free(out);
    out = client(port, "--bytes 10");          /* no ALPN offered: fine */
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"alpn\": \"\""), "%s", out);
    free(out);
    out = show(port, "show tls");
    TH_ASSERT(d, has(out, "protocol 1"), "show tls:\n%s", out);
    free(out);
    th_echo_free(e);
}
END_TEST

/* Client certificates required: without one the handshake fails, with one it works. */
START_TEST(test_mtls)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX], extra[TH_PATH_MAX + 64], *out;
    int port = th_free_port();
    struct th_daemon *d;

    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem", certdir);
    snprintf(extra, sizeof(extra), "tls_client_ca = %s/ca.pem\ntls_verify_client = required\n",
             certdir);
    d = start_tls(port, 1, certs, extra, th_echo_port(e));
    out = client(port, "--cert %s/client.crt --key %s/client.key --bytes 1000", certdir,
                 certdir);
    TH_ASSERT(d, has(out, "\"ok\": true"), "with a certificate: %s", out);
    free(out);
    out = client(port, "--bytes 1000");
    TH_ASSERT(d, has(out, "\"ok\": false"), "without a certificate: %s", out);
    free(out);
    out = client(port, "--cert %s/old.crt --key %s/old.key --bytes 10", certdir, certdir);
    TH_ASSERT(d, has(out, "\"ok\": false"), "a certificate of no CA of ours: %s", out);
    free(out);
    out = show(port, "show tls");
    TH_ASSERT(d, has(out, "handshakes: 1 full") && !has(out, "cert 0"), "show tls:\n%s", out);
    free(out);
    th_echo_free(e);
}
END_TEST

/* Tickets sealed by one worker are opened by the other: 24 connections after the first
 * each offer the last ticket; every one resumes, and (the kernel spreads connections over
 * both workers' sockets) both workers count resumptions. */
START_TEST(test_resume_across_workers)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX], *out, *m, *p;
    int port = th_free_port(), workers_resumed = 0;
    struct th_daemon *d;

    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem", certdir);
    d = start_tls(port, 2, certs, "", th_echo_port(e));
    out = client(port, "--version 1.3 --conns 25 --bytes 100");
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"resumed\": 24"), "%s", out);
    free(out);
    out = client(port, "--version 1.2 --conns 5 --bytes 100");
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"resumed\": 4"), "1.2: %s", out);
    free(out);
    m = show(port, "show metrics");
    for (p = m; (p = strstr(p, "corogate_tls_handshakes_total{listener=\"t\",worker=\""));
         p++) {
        char *line_end = strchr(p, '\n');

        if (line_end && memmem(p, (size_t)(line_end - p), "result=\"resumed\"", 16) &&
            !memmem(p, (size_t)(line_end - p), "} 0", 3))
            workers_resumed++;
    }
    TH_ASSERT(d, workers_resumed == 2, "resumptions on %d workers:\n%s", workers_resumed, m);
    free(m);
    th_echo_free(e);
}
END_TEST

/* A reload with a new certificate: a connection opened before keeps working on the old
 * one; a new connection gets the new one. */
START_TEST(test_reload_swaps_certificate)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX], hold[TH_PATH_MAX], *out, *text;
    int port = th_free_port(), i;
    struct th_daemon *d;
    FILE *f;
    pid_t pid;
    int fds[2];

    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem", certdir);
    d = start_tls(port, 1, certs, "", th_echo_port(e));
    snprintf(hold, sizeof(hold), "%s/hold", th_tmpdir());
    unlink(hold);
    ck_assert_int_eq(pipe(fds), 0);
    pid = th_fork();
    if (pid == 0) {
        char cmd[1024];

        dup2(fds[1], 1);
        close(fds[0]);
        snprintf(cmd, sizeof(cmd), "exec timeout 120 /usr/bin/python3 tests/tls_probe.py %d "
                 "--bytes 1000 --hold-port %s", port, hold);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    for (i = 0; i < 600; i++) {
        text = th_read_file(hold, NULL);
        if (text && strcmp(text, "ready") == 0) {
            free(text);
            break;
        }
        free(text);
        th_sleep_ms(50);
    }
    ck_assert_int_lt(i, 600);
    snprintf(certs, sizeof(certs), "%s/a.pem", certdir);
    f = fopen(d->conf, "w");
    ck_assert_ptr_nonnull(f);
    fprintf(f, tcp_conf, 1u, th_tmpdir(), port, port, certs, "", th_echo_port(e));
    fclose(f);
    kill(d->pid, SIGHUP);
    TH_ASSERT(d, th_daemon_wait_log(d, "generation 2 in force on every worker", 1, IO_MS) == 0,
              "no reload");
    out = client(port, "--bytes 100");
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"cn\": \"a.test\""), "new: %s", out);
    free(out);
    f = fopen(hold, "w");
    fputs("go", f);
    fclose(f);
    out = calloc(1, 4096);
    ck_assert_int_gt(read(fds[0], out, 4095), 0);
    close(fds[0]);
    waitpid(pid, NULL, 0);
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"cn\": \"default.test\"") &&
              has(out, "\"cn_after\": \"default.test\""), "held connection: %s", out);
    free(out);
    th_echo_free(e);
}
END_TEST

/* A client that connects and says nothing is closed at tls_handshake_timeout, counted. */
START_TEST(test_stalled_handshake)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX], *out;
    int port = th_free_port(), fd;
    struct th_daemon *d;

    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem", certdir);
    d = start_tls(port, 1, certs, "tls_handshake_timeout = 300ms\n", th_echo_port(e));
    fd = th_connect(port, IO_MS);
    ck_assert_int_ge(fd, 0);
    TH_ASSERT(d, th_wait_closed(fd, 30000) == 0, "a silent client was not closed");
    close(fd);
    out = show(port, "show tls");
    TH_ASSERT(d, has(out, "timeout 1"), "show tls:\n%s", out);
    free(out);
    ck_assert_uint_eq(th_echo_accepted(e), 0);      /* nothing reached the backend */
    th_echo_free(e);
}
END_TEST

struct garbage {
    int              port;
    unsigned         n;
    _Atomic unsigned sent;
};

static void *garbage_main(void *arg)
{
    struct garbage *g = arg;
    static const char http[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    static const char server_hello[] = "\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00";
    unsigned i;
    int fd;

    for (i = 0; i < g->n; i++) {
        fd = th_connect(g->port, IO_MS);
        if (fd < 0)
            continue;
        /* Three kinds: HTTP to a TLS port, a ServerHello where a ClientHello belongs, junk. */
        if (i % 3 == 0)
            (void)!write(fd, http, sizeof(http) - 1);
        else if (i % 3 == 1)
            (void)!write(fd, server_hello, sizeof(server_hello) - 1);
        else
            (void)!write(fd, "\x00\x01\x02\x03\x04\x05\x06\x07", 8);
        th_wait_closed(fd, IO_MS);
        close(fd);
        atomic_fetch_add(&g->sent, 1);
    }
    return NULL;
}

/* 10,000 garbage first flights are refused (not_tls), while an established connection
 * keeps echoing intact data the whole time. */
START_TEST(test_garbage_hellos)
{
    struct th_echo *e = th_echo_new(0);
    struct garbage g = { .n = 10000 };
    char certs[TH_PATH_MAX], want[32], *out, *text;
    struct th_daemon *d;
    pthread_t th;
    int i;

    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem", certdir);
    g.port = th_free_port();
    d = start_tls(g.port, 2, certs, "", th_echo_port(e));
    ck_assert_int_eq(pthread_create(&th, NULL, garbage_main, &g), 0);
    /* Echo round trips on real TLS connections while the garbage flows. */
    for (i = 0; atomic_load(&g.sent) < g.n; i++) {
        out = client(g.port, "--bytes 20000 --conns 2");
        TH_ASSERT(d, has(out, "\"ok\": true"), "round %d, after %u garbage: %s", i,
                  atomic_load(&g.sent), out);
        free(out);
    }
    pthread_join(th, NULL);
    text = show(g.port, "show tls");
    snprintf(want, sizeof(want), "not_tls %u ", atomic_load(&g.sent));
    TH_ASSERT(d, atomic_load(&g.sent) >= g.n - 10 && has(text, want), "%u sent; show tls:\n%s",
              atomic_load(&g.sent), text);
    free(text);
    th_note("garbage_hellos: %d rounds of TLS echo while 10000 garbage connections came", i);
    th_echo_free(e);
}
END_TEST

/* `openssl s_client`, TLS 1.2 and 1.3, verifying the chain and the name against the test
 * CA: the handshake, the protocol, and bytes through to the echo backend. */
START_TEST(test_s_client)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX * 2], cmd[TH_PATH_MAX * 2], *out;
    static const char *const versions[] = { "-tls1_2", "TLSv1.2", "-tls1_3", "TLSv1.3" };
    int port = th_free_port(), i;
    struct th_daemon *d;
    size_t len;
    FILE *f;

    make_certs();
    snprintf(certs, sizeof(certs), "%s/a.pem %s/default.pem", certdir, certdir);
    d = start_tls(port, 1, certs, "", th_echo_port(e));
    out = malloc(65536);
    ck_assert_ptr_nonnull(out);
    for (i = 0; i < 4; i += 2) {
        /* The echo comes back while s_client waits for stdin's end (sleep keeps it open). */
        snprintf(cmd, sizeof(cmd), "(echo corogate-s_client-%d; sleep 1) | timeout 30 openssl "
                 "s_client -connect 127.0.0.1:%d %s -servername a.test -verify_hostname "
                 "a.test -CAfile %s/ca.pem -verify_return_error 2>&1", i, port, versions[i],
                 certdir);
        f = popen(cmd, "r");
        ck_assert_ptr_nonnull(f);
        len = fread(out, 1, 65535, f);
        out[len] = '\0';
        pclose(f);
        TH_ASSERT(d, strstr(out, versions[i + 1]) && strstr(out, "Verify return code: 0 (ok)") &&
                  strstr(out, "subject=CN = a.test") && strstr(out, "corogate-s_client-"),
                  "s_client %s:\n%s", versions[i], th_tail(out, 3000));
    }
    free(out);
    th_echo_free(e);
}
END_TEST

/* tls_ticket_keys: two daemons (a fleet) with one key file; a ticket the first issued
 * resumes on the second. A daemon with its own keys does not resume it. A bad key file is
 * a configuration error. */
START_TEST(test_ticket_keys_file)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX], extra[TH_PATH_MAX + 32], keys[TH_PATH_MAX / 2 + 16], *out, *text;
    int p1 = th_free_port(), p2 = th_free_port(), p3 = th_free_port();
    struct th_daemon *d1, *d2, *d3;

    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem", certdir);
    snprintf(keys, sizeof(keys), "%s/ticket.keys", certdir);
    ck_assert_int_eq(sh("(echo '# fleet keys'; openssl rand 80 | base64 -w0; echo; "
                        "openssl rand 80 | base64 -w0; echo) > %s", keys), 0);
    snprintf(extra, sizeof(extra), "tls_ticket_keys = %s\n", keys);
    d1 = start_tls(p1, 1, certs, extra, th_echo_port(e));
    d2 = start_tls(p2, 1, certs, extra, th_echo_port(e));
    d3 = start_tls(p3, 1, certs, "", th_echo_port(e));
    /* The probe's second connection offers the first one's ticket to the next port. */
    out = client(p1, "--version 1.3 --bytes 100 --conns 2 --port2 %d", p2);
    TH_ASSERT(d2, has(out, "\"ok\": true") && has(out, "\"resumed\": 1"), "A -> B: %s", out);
    free(out);
    out = client(p1, "--version 1.3 --bytes 100 --conns 2 --port2 %d", p3);
    TH_ASSERT(d3, has(out, "\"ok\": true") && has(out, "\"resumed\": 0"), "A -> C: %s", out);
    free(out);
    text = show(p2, "show tls");
    TH_ASSERT(d2, has(text, "0 full, 1 resumed"), "show tls:\n%s", text);
    free(text);
    (void)d1;
    ck_assert_int_eq(sh("echo 'c2hvcnQ=' > %s", keys), 0);
    {
        char path[TH_PATH_MAX], want[TH_PATH_MAX * 2];
        const char *args[] = { "-t", "-c", path, NULL };
        struct th_run_result r;

        ck_assert_int_eq(th_conf_write(path, sizeof(path), tcp_conf, 1u, th_tmpdir(), p1, p1,
                                       certs, extra, th_echo_port(e)), 0);
        ck_assert_int_eq(th_run_daemon(&r, IO_MS, args), 0);
        snprintf(want, sizeof(want), "[listener t] tls_ticket_keys: %s:1: not a ticket key",
                 keys);
        ck_assert_msg(WEXITSTATUS(r.status) == 1 && has(r.out, want), "bad keys:\n%s", r.out);
        th_run_result_deinit(&r);
    }
    th_echo_free(e);
}
END_TEST

/* -t checks every file: an expired certificate, a key that does not match, a missing
 * file, each named by file, line and key. */
START_TEST(test_check_config)
{
    static const char conf[] =
        "[listener t]\n"                                        /* 1 */
        "bind = 127.0.0.1:1\n"                                  /* 2 */
        "upstream = u\n"                                        /* 3 */
        "tls = on\n"                                            /* 4 */
        "tls_certificate = %s\n"                                /* 5 */
        "tls_key = %s\n"                                        /* 6 */
        "[upstream u]\n"
        "servers = 127.0.0.1:2\n";
    char path[TH_PATH_MAX], a[TH_PATH_MAX], k[TH_PATH_MAX], want[TH_PATH_MAX * 3];
    const char *args[] = { "-t", "-c", path, NULL };
    struct th_run_result r;

    make_certs();
    snprintf(a, sizeof(a), "%s/old.pem", certdir);
    ck_assert_int_eq(th_conf_write(path, sizeof(path), conf, a, a), 0);
    ck_assert_int_eq(th_run_daemon(&r, IO_MS, args), 0);
    snprintf(want, sizeof(want), "%s:5: [listener t] tls_certificate: %s: the certificate "
             "expired on 2020-01-02", path, a);
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 1 && has(r.out, want),
                  "expired:\n%s", r.out);
    th_run_result_deinit(&r);

    snprintf(a, sizeof(a), "%s/a.crt", certdir);
    snprintf(k, sizeof(k), "%s/other.key", certdir);
    ck_assert_int_eq(th_conf_write(path, sizeof(path), conf, a, k), 0);
    ck_assert_int_eq(th_run_daemon(&r, IO_MS, args), 0);
    snprintf(want, sizeof(want), "%s:6: [listener t] tls_key: %s: the private key does not "
             "match", path, k);
    ck_assert_msg(WEXITSTATUS(r.status) == 1 && has(r.out, want), "mismatch:\n%s", r.out);
    th_run_result_deinit(&r);

    snprintf(a, sizeof(a), "%s/nowhere.pem", certdir);
    ck_assert_int_eq(th_conf_write(path, sizeof(path), conf, a, a), 0);
    ck_assert_int_eq(th_run_daemon(&r, IO_MS, args), 0);
    snprintf(want, sizeof(want), "%s:5: [listener t] tls_certificate: %s: no certificate "
             "could be read", path, a);
    ck_assert_msg(WEXITSTATUS(r.status) == 1 && has(r.out, want), "missing:\n%s", r.out);
    th_run_result_deinit(&r);

    snprintf(a, sizeof(a), "%s/a.crt", certdir);
    snprintf(k, sizeof(k), "%s/a.key", certdir);
    ck_assert_int_eq(th_conf_write(path, sizeof(path), conf, a, k), 0);
    ck_assert_int_eq(th_run_daemon(&r, IO_MS, args), 0);
    ck_assert_msg(WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0, "valid:\n%s", r.out);
    th_run_result_deinit(&r);

    /* The syntax: a version we do not speak, on without a certificate, a client
     * certificate asked for without a CA to verify it. */
    ck_assert_int_eq(th_conf_write(path, sizeof(path),
                                   "[listener t]\nbind = 127.0.0.1:1\nupstream = u\n"
                                   "tls_protocols = 1.1 1.2\ntls = on\n"
                                   "tls_verify_client = required\n"
                                   "[upstream u]\nservers = 127.0.0.1:2\n"), 0);
    ck_assert_int_eq(th_run_daemon(&r, IO_MS, args), 0);
    snprintf(want, sizeof(want), "%s:4: [listener t] tls_protocols: \"1.1\" is not one of: "
             "1.2, 1.3", path);
    ck_assert_msg(WEXITSTATUS(r.status) == 1 && has(r.out, want), "1.1:\n%s", r.out);
    snprintf(want, sizeof(want), "%s:5: [listener t] tls: on, but no tls_certificate", path);
    ck_assert_msg(has(r.out, want), "no certificate:\n%s", r.out);
    snprintf(want, sizeof(want), "%s:6: [listener t] tls_verify_client: required, but no "
             "tls_client_ca", path);
    ck_assert_msg(has(r.out, want), "no CA:\n%s", r.out);
    th_run_result_deinit(&r);
}
END_TEST

/* ------------------------------------------------------------------ upstream TLS */

/* Starts <argv>, dying with us, and reads its first line; the port follows <after> there
 * ("READY " for our python peers, "on 127.0.0.1:" for `corogate-loadgen serve`). Returns
 * its pid. */
static pid_t spawn_ready_line(char *const argv[], const char *after, int *port)
{
    const char *at;
    char line[64] = "";
    int fds[2];
    pid_t pid;
    ssize_t n = 0;
    size_t len;
    struct pollfd p;

    ck_assert_int_eq(pipe(fds), 0);
    pid = th_fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(fds[1], 1);
        dup2(fds[1], 2);                /* `serve` says where it listens on stderr */
        close(fds[0]);
        execv(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    p = (struct pollfd){ .fd = fds[0], .events = POLLIN };
    for (len = 0; !memchr(line, '\n', len) && len < sizeof(line) - 1; len += (size_t)n) {
        ck_assert_msg(poll(&p, 1, 20000) == 1, "%s did not start", argv[1]);
        n = read(fds[0], line + len, sizeof(line) - 1 - len);
        if (n <= 0)
            break;
    }
    close(fds[0]);
    at = strstr(line, after);
    ck_assert_msg(at && sscanf(at + strlen(after), "%d", port) == 1, "%s said: %s", argv[1],
                  line);
    return pid;
}

static pid_t spawn_ready(char *const argv[], int *port)
{
    return spawn_ready_line(argv, "READY ", port);
}

/* A TLS echo backend: Python's ssl server with <cert>, one thread per connection. */
static pid_t tls_backend(const char *cert, int *port)
{
    static const char prog[] =
        "import socket,ssl,sys,threading\n"
        "ctx=ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER);ctx.load_cert_chain(sys.argv[1])\n"
        "s=socket.socket();s.bind(('127.0.0.1',0));s.listen(64)\n"
        "print('READY',s.getsockname()[1],flush=True)\n"
        "def serve(c):\n"
        "  try:\n"
        "    t=ctx.wrap_socket(c,server_side=True)\n"
        "    while True:\n"
        "      b=t.recv(65536)\n"
        "      if not b: break\n"
        "      t.sendall(b)\n"
        "  except Exception: pass\n"
        "  c.close()\n"
        "while True:\n"
        "  c,_=s.accept();threading.Thread(target=serve,args=(c,),daemon=True).start()\n";
    char *const argv[] = { "/usr/bin/python3", "-c", (char *)prog, (char *)cert, NULL };

    return spawn_ready(argv, port);
}

static const char up_conf[] =
    "[gateway]\n"
    "workers = 1\n"
    "cpu_pinning = off\n"
    "stats_socket = %s/tls-%d.sock\n"
    "[listener t]\n"
    "bind = 127.0.0.1:%d\n"
    "upstream = u\n"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n"
    "retries = 0\n"
    "tls = on\n"
    "tls_ca = %s/ca.pem\n"
    "tls_sni = %s\n";

/* Upstream TLS with verification: the right name relays; a wrong name is refused and
 * counted against the server. */
START_TEST(test_upstream_tls_verify)
{
    char cert[TH_PATH_MAX], buf[64];
    int bport, port = th_free_port(), fd;
    struct th_daemon *d;
    pid_t bpid;
    char *m, *p;

    make_certs();
    snprintf(cert, sizeof(cert), "%s/a.pem", certdir);
    bpid = tls_backend(cert, &bport);
    d = th_daemon_start_conf(NULL, up_conf, th_tmpdir(), port, port, bport, certdir, "a.test");
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    TH_ASSERT(d, th_echo_roundtrip(port, 100000, IO_MS) == 0, "no echo through TLS upstream");
    th_daemon_stop(d, SIGTERM, IO_MS);

    port = th_free_port();
    d = th_daemon_start_conf(NULL, up_conf, th_tmpdir(), port, port, bport, certdir,
                             "wrong.test");
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    fd = th_connect(port, IO_MS);
    ck_assert_int_ge(fd, 0);
    (void)!write(fd, "hello", 5);
    TH_ASSERT(d, th_recv_eof(fd, buf, sizeof(buf)) <= 0, "data came from a server whose "
              "name was wrong");
    close(fd);
    m = show(port, "show metrics");
    p = strstr(m, "corogate_upstream_tls_handshakes_total{worker=\"0\",result=\"failed\"} ");
    TH_ASSERT(d, p && atoi(p + 67) >= 1, "no failed upstream TLS handshake counted: %.120s",
              p ? p : "(no such line)");
    free(m);
    TH_ASSERT(d, th_daemon_log_count(d, "TLS handshake with") >= 1, "no log line about it");
    kill(bpid, SIGKILL);
    waitpid(bpid, NULL, 0);
}
END_TEST

static const char up_cert_conf[] =
    "[gateway]\n"
    "workers = 1\n"
    "cpu_pinning = off\n"
    "stats_socket = %s/tls-%d.sock\n"
    "[listener t]\n"
    "bind = 127.0.0.1:%d\n"
    "upstream = u\n"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n"
    "retries = 0\n"
    "tls = on\n"
    "tls_ca = %s/ca.pem\n"
    "tls_sni = a.test\n"
    "%s";

/* A backend that requires a client certificate (`corogate-loadgen serve --tls
 * --tls-client-ca`): corogate's tls_certificate gets through; without it, it does not. */
START_TEST(test_upstream_client_cert)
{
    char lg[TH_PATH_MAX], a_crt[TH_PATH_MAX], a_key[TH_PATH_MAX], ca[TH_PATH_MAX];
    char extra[TH_PATH_MAX * 2];
    char *const argv[] = { lg, "serve", "--mode", "tcp", "--listen", "127.0.0.1:0",
                           "--threads", "1", "--tls", "--tls-cert", a_crt, "--tls-key", a_key,
                           "--tls-client-ca", ca, NULL };
    const char *build = getenv("CG_BUILD") ? getenv("CG_BUILD") : "build";
    int bport, port = th_free_port();
    struct th_daemon *d;
    pid_t bpid;

    make_certs();
    snprintf(lg, sizeof(lg), "%s/corogate-loadgen", build);
    snprintf(a_crt, sizeof(a_crt), "%s/a.crt", certdir);
    snprintf(a_key, sizeof(a_key), "%s/a.key", certdir);
    snprintf(ca, sizeof(ca), "%s/ca.pem", certdir);
    bpid = spawn_ready_line(argv, "on 127.0.0.1:", &bport);
    snprintf(extra, sizeof(extra), "tls_certificate = %s/client.crt\ntls_key = %s/client.key\n",
             certdir, certdir);
    d = th_daemon_start_conf(NULL, up_cert_conf, th_tmpdir(), port, port, bport, certdir, extra);
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    TH_ASSERT(d, th_echo_roundtrip(port, 50000, IO_MS) == 0, "no echo with a client certificate");
    th_daemon_stop(d, SIGTERM, IO_MS);
    port = th_free_port();
    d = th_daemon_start_conf(NULL, up_cert_conf, th_tmpdir(), port, port, bport, certdir, "");
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    TH_ASSERT(d, th_echo_roundtrip(port, 100, 3000) != 0, "an echo without a client certificate");
    kill(bpid, SIGKILL);
    waitpid(bpid, NULL, 0);
}
END_TEST

/* HAProxy as a TLS backend behind corogate: corogate (plain in) -> TLS, verified -> haproxy
 * (bind ssl) -> echo. */
START_TEST(test_haproxy_backend)
{
    struct th_echo *e = th_echo_new(0);
    char hcfg[TH_PATH_MAX], *m, *p;
    int port = th_free_port(), hport = th_free_port(), i, ok = -1;
    struct th_daemon *d;
    pid_t hp;

    if (access("/usr/sbin/haproxy", X_OK) != 0)
        TH_SKIP("haproxy is not installed (make deps installs it)");
    make_certs();
    ck_assert_int_eq(th_write_file(hcfg, sizeof(hcfg), "haproxy-be.cfg",
        "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n"
        "  timeout client 30s\n  timeout server 30s\n"
        "frontend f\n  bind 127.0.0.1:%d ssl crt %s/a.pem\n  default_backend b\n"
        "backend b\n  server e 127.0.0.1:%d\n", hport, certdir, th_echo_port(e)), 0);
    hp = th_fork();
    if (hp == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/usr/sbin/haproxy", "haproxy", "-db", "-f", hcfg, (char *)NULL);
        _exit(127);
    }
    d = th_daemon_start_conf(NULL, up_conf, th_tmpdir(), port, port, hport, certdir, "a.test");
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    for (i = 0; i < 100 && ok != 0; i++) {          /* haproxy may still be starting */
        ok = th_echo_roundtrip(port, 50000, IO_MS);
        if (ok != 0)
            th_sleep_ms(100);
    }
    TH_ASSERT(d, ok == 0, "no echo through corogate -> TLS -> haproxy");
    m = show(port, "show metrics");
    p = strstr(m, "corogate_upstream_tls_handshakes_total{worker=\"0\",result=\"ok\"} ");
    TH_ASSERT(d, p && atoi(p + 63) >= 1, "no upstream TLS handshake counted: %.100s",
              p ? p : "(no such line)");
    free(m);
    kill(hp, SIGKILL);
    waitpid(hp, NULL, 0);
    th_echo_free(e);
}
END_TEST

static const char wss_conf[] =
    "[gateway]\n"
    "workers = 1\n"
    "cpu_pinning = off\n"
    "stats_socket = %s/tls-%d.sock\n"
    "[listener w]\n"
    "bind = 127.0.0.1:%d\n"
    "mode = websocket\n"
    "upstream = u\n"
    "tls = on\n"
    "tls_certificate = %s/default.pem\n"
    "tls_client_ca = %s/ca.pem\n"
    "tls_verify_client = optional\n"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n";

/* wss:// through a websocket listener: ALPN http/1.1, X-Forwarded-Proto https, and a
 * verified client certificate passed on as X-SSL-Client-* headers (a client's own headers
 * of those names never are). */
START_TEST(test_wss_client_cert)
{
    char *const argv[] = { "/usr/bin/python3", "tests/ws_peer.py", "backend", NULL };
    int bport, port = th_free_port();
    struct th_daemon *d;
    char *out;
    pid_t bpid;

    make_certs();
    bpid = spawn_ready(argv, &bport);
    d = th_daemon_start_conf(NULL, wss_conf, th_tmpdir(), port, port, certdir, certdir, bport);
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    out = client(port, "--ws /chat --alpn http/1.1 --cert %s/client.crt --key %s/client.key",
                 certdir, certdir);
    TH_ASSERT(d, has(out, "\"ok\": true") && has(out, "\"x-forwarded-proto\": \"https\"") &&
              has(out, "\"x-ssl-client-verify\": \"SUCCESS\"") &&
              has(out, "\"x-ssl-client-dn\": \"CN=client-1\"") &&
              has(out, "\"x-ssl-client-sha256\": \""), "with a certificate: %s", out);
    free(out);
    out = client(port, "--ws /chat --spoof");
    TH_ASSERT(d, has(out, "\"ok\": true") && !has(out, "x-ssl-client") &&
              !has(out, "CN=evil"), "without one, spoofing: %s", out);
    free(out);
    kill(bpid, SIGKILL);
    waitpid(bpid, NULL, 0);
}
END_TEST

/* The browser's listener: no client certificate asked for (a browser would offer a choice
 * to the user, and headless it gives up the handshake). */
static const char browser_conf[] =
    "[gateway]\n"
    "workers = 1\n"
    "cpu_pinning = off\n"
    "stats_socket = %s/tls-%d.sock\n"
    "[listener w]\n"
    "bind = 127.0.0.1:%d\n"
    "mode = websocket\n"
    "upstream = u\n"
    "tls = on\n"
    "tls_certificate = %s/default.pem\n"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n";

/* A real browser through wss://: headless Chromium opens a WebSocket to corogate's TLS
 * listener (certificate pinned with --ignore-certificate-errors-spki-list), sends a text
 * message, checks its echo and closes with 4000 "echo-ok", which the backend logs. */
START_TEST(test_chromium_wss)
{
    const char *chromium = access("/usr/bin/chromium", X_OK) == 0 ? "/usr/bin/chromium" : NULL;
    char page[TH_PATH_MAX], log[TH_PATH_MAX], spki[128] = "", cmd[TH_PATH_MAX * 3], *text;
    char *const argv[] = { "/usr/bin/python3", "tests/ws_peer.py", "backend", "--log", log,
                           NULL };
    int bport, port = th_free_port(), i;
    struct th_daemon *d;
    pid_t bpid, cpid;
    FILE *f;

    if (!chromium)
        TH_SKIP("chromium is not installed (`make check-browser` installs it and runs this "
                "test)");
    make_certs();
    snprintf(log, sizeof(log), "%s/browser-backend.log", th_tmpdir());
    unlink(log);
    bpid = spawn_ready(argv, &bport);
    d = th_daemon_start_conf(NULL, browser_conf, th_tmpdir(), port, port, certdir, bport);
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    snprintf(cmd, sizeof(cmd), "openssl x509 -in %s/default.crt -pubkey -noout | openssl pkey "
             "-pubin -outform der | openssl dgst -sha256 -binary | base64", certdir);
    f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(spki, sizeof(spki), f));
    pclose(f);
    spki[strcspn(spki, "\n")] = '\0';
    ck_assert_int_eq(th_write_file(page, sizeof(page), "browser.html",
        "<!doctype html><script>\n"
        "const ws = new WebSocket('wss://127.0.0.1:%d/browser');\n"
        "ws.onopen = () => ws.send('hello from chromium');\n"
        "ws.onmessage = (e) => ws.close(e.data === 'hello from chromium' ? 4000 : 4001,\n"
        "                               e.data === 'hello from chromium' ? 'echo-ok' : 'bad');\n"
        "</script>\n", port), 0);
    cpid = th_fork();
    if (cpid == 0) {
        char spkiarg[200], userdir[TH_PATH_MAX + 32], url[TH_PATH_MAX + 16];
        char logf[TH_PATH_MAX + 16];
        int fd;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        snprintf(spkiarg, sizeof(spkiarg), "--ignore-certificate-errors-spki-list=%s", spki);
        snprintf(url, sizeof(url), "file://%s", page);
        snprintf(logf, sizeof(logf), "%s/chromium.log", th_tmpdir());
        fd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0644);       /* its chatter */
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        snprintf(userdir, sizeof(userdir), "--user-data-dir=%s/chromium", th_tmpdir());
        execl(chromium, chromium, "--headless=new", "--no-sandbox", "--disable-gpu",
              "--no-first-run", userdir, spkiarg, url, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 1200; i++) {
        text = th_read_file(log, NULL);
        if (text && strstr(text, "close 4000 echo-ok")) {
            free(text);
            break;
        }
        free(text);
        th_sleep_ms(50);
    }
    kill(cpid, SIGKILL);
    waitpid(cpid, NULL, 0);
    text = th_read_file(log, NULL);
    TH_ASSERT(d, i < 1200, "the browser's round trip did not complete; backend log: %s",
              text ? text : "(none)");
    free(text);
    text = show(port, "show tls");
    TH_ASSERT(d, has(text, "TLSv1.3 1"), "show tls:\n%s", text);
    free(text);
    kill(bpid, SIGKILL);
    waitpid(bpid, NULL, 0);
}
END_TEST

/* HAProxy as a TLS client of corogate: haproxy (plain TCP in) -> ssl -> corogate (tls
 * listener) -> echo. */
START_TEST(test_haproxy_client)
{
    struct th_echo *e = th_echo_new(0);
    char certs[TH_PATH_MAX], hcfg[TH_PATH_MAX], *out;
    int port = th_free_port(), hport = th_free_port();
    struct th_daemon *d;
    pid_t hp;

    if (access("/usr/sbin/haproxy", X_OK) != 0)
        TH_SKIP("haproxy is not installed (make deps installs it)");
    make_certs();
    snprintf(certs, sizeof(certs), "%s/default.pem", certdir);
    d = start_tls(port, 1, certs, "", th_echo_port(e));
    ck_assert_int_eq(th_write_file(hcfg, sizeof(hcfg), "haproxy.cfg",
        "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n"
        "  timeout client 30s\n  timeout server 30s\n"
        "frontend f\n  bind 127.0.0.1:%d\n  default_backend b\n"
        "backend b\n  server c 127.0.0.1:%d ssl verify required ca-file %s/ca.pem "
        "sni str(default.test) verifyhost default.test\n", hport, port, certdir), 0);
    hp = th_fork();
    if (hp == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/usr/sbin/haproxy", "haproxy", "-db", "-f", hcfg, (char *)NULL);
        _exit(127);
    }
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    {
        int i, ok = -1;

        for (i = 0; i < 100 && ok != 0; i++) {
            ok = th_echo_roundtrip(hport, 50000, IO_MS);
            if (ok != 0)
                th_sleep_ms(100);
        }
        TH_ASSERT(d, ok == 0, "no echo through haproxy -> corogate TLS");
    }
    out = show(port, "show tls");
    TH_ASSERT(d, has(out, "full"), "show tls:\n%s", out);
    free(out);
    kill(hp, SIGKILL);
    waitpid(hp, NULL, 0);
    th_echo_free(e);
}
END_TEST

Suite *tls_gw_suite(void)
{
    Suite *s = suite_create("tls_gw");
    TCase *tc = tcase_create("listener");
    TCase *up = tcase_create("upstream");

    th_tcase_add_fixtures(tc);
    tcase_set_timeout(tc, 240);
    tcase_add_test(tc, test_tcp_versions);
    tcase_add_test(tc, test_sni);
    tcase_add_test(tc, test_alpn);
    tcase_add_test(tc, test_mtls);
    tcase_add_test(tc, test_resume_across_workers);
    tcase_add_test(tc, test_reload_swaps_certificate);
    tcase_add_test(tc, test_stalled_handshake);
    tcase_add_test(tc, test_garbage_hellos);
    tcase_add_test(tc, test_check_config);
    tcase_add_test(tc, test_s_client);
    tcase_add_test(tc, test_ticket_keys_file);
    suite_add_tcase(s, tc);
    th_tcase_add_fixtures(up);
    tcase_set_timeout(up, 120);
    tcase_add_test(up, test_upstream_tls_verify);
    tcase_add_test(up, test_wss_client_cert);
    tcase_add_test(up, test_chromium_wss);
    tcase_add_test(up, test_haproxy_client);
    tcase_add_test(up, test_upstream_client_cert);
    tcase_add_test(up, test_haproxy_backend);
    suite_add_tcase(s, up);
    return s;
}
