/* tests/test_tls.c — TLS on coroutine streams (common/tls.h) against real peers.
 *
 * Our side is a coroutine on a real loopback socket: a server calling cg_tls_accept() (then
 * echoing through coro_read()/coro_write()) or a client calling cg_tls_connect(). The other
 * side is real OpenSSL, in a thread: an SSL object on memory BIOs pumped by a non-blocking
 * socket (so one thread reads and writes at once, and the test sees every byte it sends:
 * data in the same segment as the Finished, a tampered record), or /usr/bin/python3's ssl
 * module. Certificates are made at test time with the openssl CLI in th_tmpdir().
 *
 * Everything is counts and events: no timing is asserted. A guard timer ends the loop if
 * a peer never comes.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/tls.h"
#include "coro/coro.h"
#include "coro/io.h"
#include "harness.h"

#define MiB        (1024u * 1024)
#define PEER_MS    30000        /* a peer thread gives up after this */
#define IO_MS      20000        /* our coroutines' read/write timeouts */

/* ------------------------------------------------------------------ data pattern */

static uint64_t splitmix(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Byte <pos> of the stream <seed>: random access, whatever the chunk sizes. */
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

/* ------------------------------------------------------------------ certificates */

struct certs {
    char srv_cert[TH_PATH_MAX], srv_key[TH_PATH_MAX];
    char cli_cert[TH_PATH_MAX], cli_key[TH_PATH_MAX];
};

static void make_cert(const char *cert, const char *key, const char *subj, const char *san)
{
    char cmd[4 * TH_PATH_MAX];
    int rc;

    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
             "-keyout '%s' -out '%s' -days 2 -subj '%s' %s%s >/dev/null 2>&1",
             key, cert, subj, san ? "-addext subjectAltName=" : "", san ? san : "");
    rc = system(cmd);
    ck_assert_msg(rc == 0, "%s: exit %d", cmd, rc);
}

static void make_certs(struct certs *c)
{
    const char *d = th_tmpdir();

    snprintf(c->srv_cert, sizeof(c->srv_cert), "%s/srv.pem", d);
    snprintf(c->srv_key, sizeof(c->srv_key), "%s/srv.key", d);
    snprintf(c->cli_cert, sizeof(c->cli_cert), "%s/cli.pem", d);
    snprintf(c->cli_key, sizeof(c->cli_key), "%s/cli.key", d);
    make_cert(c->srv_cert, c->srv_key, "/CN=tls.test", "DNS:tls.test");
    make_cert(c->cli_cert, c->cli_key, "/O=corogate tests/CN=client", NULL);
}

/* ------------------------------------------------------------------ suites */

struct suite_case {
    int         version;
    const char *name;      /* what OpenSSL reports, and what the peer is limited to */
};

static const struct suite_case cases[] = {
    { TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256" },
    { TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384" },
    { TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256" },
    { TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256" },
    { TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384" },
    { TLS1_2_VERSION, "ECDHE-ECDSA-CHACHA20-POLY1305" },
};
#define NCASES ((int)(sizeof(cases) / sizeof(cases[0])))

/* Limits <ctx> to <version> and, when <suite> is set, to that suite. */
static void ctx_limit(SSL_CTX *ctx, int version, const char *suite)
{
    ck_assert_int_eq(SSL_CTX_set_min_proto_version(ctx, version), 1);
    ck_assert_int_eq(SSL_CTX_set_max_proto_version(ctx, version), 1);
    if (!suite)
        return;
    if (version == TLS1_3_VERSION)
        ck_assert_int_eq(SSL_CTX_set_ciphersuites(ctx, suite), 1);
    else
        ck_assert_int_eq(SSL_CTX_set_cipher_list(ctx, suite), 1);
}

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned inlen, void *arg)
{
    static const unsigned char want[] = "\x08http/1.1";

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen, want, sizeof(want) - 1, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

/* A server context for either side: our cg_tls_accept() (<ours>: prepared) or a peer. */
static SSL_CTX *server_ctx(const struct certs *c, int ours)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    char err[200] = "";

    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(ctx, c->srv_cert), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(ctx, c->srv_key, SSL_FILETYPE_PEM), 1);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
    if (ours)
        ck_assert_msg(cg_tls_ctx_prepare(ctx, 1, err, sizeof(err)) == 0, "%s", err);
    return ctx;
}

static SSL_CTX *client_ctx(int ours)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    char err[200] = "";

    ck_assert_ptr_nonnull(ctx);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    if (ours)
        ck_assert_msg(cg_tls_ctx_prepare(ctx, 0, err, sizeof(err)) == 0, "%s", err);
    return ctx;
}

/* SSL objects made in this process, counted through an ex_data index's constructor. */
static atomic_uint ssl_made;

static void count_ssl(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                      void *argp)
{
    (void)parent;
    (void)ptr;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    atomic_fetch_add(&ssl_made, 1);
}

static void count_ssl_objects(void)
{
    static int done;

    if (!done)
        SSL_get_ex_new_index(0, NULL, count_ssl, NULL, NULL);
    done = 1;
}

/* ------------------------------------------------------------------ the OpenSSL peer */

/* Counts the post-handshake messages a peer received (msg callback). */
struct peer_msgs {
    atomic_uint key_updates;
    atomic_uint tickets;
};

static void on_msg(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
    struct peer_msgs *m = SSL_get_app_data(ssl);
    const unsigned char *p = buf;

    (void)version;
    (void)arg;
    if (!m || write_p || content_type != SSL3_RT_HANDSHAKE || len < 1)
        return;
    if (p[0] == SSL3_MT_KEY_UPDATE)
        atomic_fetch_add(&m->key_updates, 1);
    else if (p[0] == SSL3_MT_NEWSESSION_TICKET)
        atomic_fetch_add(&m->tickets, 1);
}

/* A real OpenSSL endpoint in a thread. As a client it sends <total> bytes of the pattern
 * <seed> in random pieces, checks the echo, then sends close_notify and waits for the
 * server's. As a server it echoes until close_notify, then answers with its own. */
struct peer {
    /* set by the test */
    SSL_CTX          *ctx;
    int               server;
    int               port;          /* client: where to connect */
    int               lfd;           /* server: where to accept */
    const char       *sni;
    const char       *alpn;          /* wire format */
    size_t            alpn_len;
    SSL_SESSION      *session;       /* client: offered */
    size_t            total;
    uint64_t          seed;
    size_t            max_piece;     /* client: pieces of 1..max_piece bytes */
    int               key_update;    /* request a KeyUpdate (update_requested) at half */
    int               tamper;        /* client: flip a bit of data record number <tamper> */
    size_t            first_piece;   /* client: the size of its first data record */
    int               ku_run;        /* client, TLS 1.3: this many KeyUpdates in a row after
                                      * the first data record, ... */
    int               ku_run_req;    /* ... with update_requested */
    int               no_close;      /* client: close the socket without close_notify */
    int               truncate;      /* client: the last record's last bytes never go: a FIN
                                      * comes in their place */
    int               renegotiate;   /* client, TLS 1.2: try to renegotiate at half */
    int               close_early;   /* client: close_notify right behind the last data */
    /* results */
    pthread_t         th;
    int               ok;
    char              why[256];
    size_t            sent, got;
    uint64_t          sum_out, sum_in;
    size_t            mismatches;
    int               close_notify;  /* the other side's close_notify came */
    int               alert;         /* reason of an alert received (SSL_R_...), 0 if none */
    int               resumed;
    int               version;
    char              cipher[64];
    SSL_SESSION      *session_out;   /* client: the session at the end */
    struct peer_msgs  msgs;
};

static void peer_fail(struct peer *p, const char *fmt, const char *arg)
{
    if (!p->why[0])
        snprintf(p->why, sizeof(p->why), fmt, arg);
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Sends what <wb> holds, as much as the socket takes. Returns 0 or -1. */
static int peer_send(struct peer *p, int fd, BIO *wb)
{
    char *data, drop[16384];
    long n;
    ssize_t k;

    while ((n = BIO_get_mem_data(wb, &data)) > 0) {
        k = send(fd, data, (size_t)n, MSG_NOSIGNAL);
        if (k < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            peer_fail(p, "send: %s", strerror(errno));
            return -1;
        }
        while (k > 0) {
            int m = BIO_read(wb, drop, k < (ssize_t)sizeof(drop) ? (int)k : (int)sizeof(drop));

            if (m <= 0)
                return -1;
            k -= m;
        }
    }
    return 0;
}

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    struct sockaddr_in a = { .sin_family = AF_INET };
    SSL *ssl = NULL;
    BIO *rb, *wb;
    char *buf = malloc(65536);
    uint64_t rnd = p->seed ^ 0x5555;
    int64_t deadline = th_now_ms() + PEER_MS;
    int fd = -1, r, e, eof = 0, shut = 0, ku = 0, tampered = 0, hs_done = 0, one = 1, i;
    size_t n;

    if (!buf)
        return NULL;
    if (p->server) {
        struct pollfd pf = { .fd = p->lfd, .events = POLLIN };

        if (poll(&pf, 1, PEER_MS) != 1 || (fd = accept(p->lfd, NULL, NULL)) < 0) {
            peer_fail(p, "accept: %s", "nothing came");
            goto out;
        }
    } else {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        a.sin_port = htons((uint16_t)p->port);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            peer_fail(p, "connect: %s", strerror(errno));
            goto out;
        }
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    set_nonblock(fd);
    ssl = SSL_new(p->ctx);
    rb = BIO_new(BIO_s_mem());
    wb = BIO_new(BIO_s_mem());
    if (!ssl || !rb || !wb) {
        peer_fail(p, "%s", "SSL_new");
        goto out;
    }
    BIO_set_mem_eof_return(rb, -1);
    SSL_set_bio(ssl, rb, wb);
    SSL_set_app_data(ssl, &p->msgs);
    SSL_set_msg_callback(ssl, on_msg);
    if (p->server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        if (p->sni)
            SSL_set_tlsext_host_name(ssl, p->sni);
        if (p->alpn)
            SSL_set_alpn_protos(ssl, (const unsigned char *)p->alpn, (unsigned)p->alpn_len);
        if (p->session)
            SSL_set_session(ssl, p->session);
    }
    while (th_now_ms() < deadline) {
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        ssize_t k;

        if (!hs_done) {
            ERR_clear_error();
            r = SSL_do_handshake(ssl);
            if (r == 1) {
                hs_done = 1;
                p->version = SSL_version(ssl);
                p->resumed = SSL_session_reused(ssl);
                snprintf(p->cipher, sizeof(p->cipher), "%s",
                         SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
            } else if (SSL_get_error(ssl, r) != SSL_ERROR_WANT_READ) {
                p->alert = ERR_GET_REASON(ERR_peek_last_error());
                peer_fail(p, "handshake: %s", ERR_reason_error_string(ERR_peek_last_error()));
                break;
            }
        }
        /* Client: more data while little is pending (right after the handshake, in the
         * same send as the Finished). */
        while (hs_done && !p->server && p->sent < p->total && BIO_ctrl_pending(wb) < 65536 &&
               !(p->renegotiate && ku)) {
            rnd = splitmix(rnd);
            n = 1 + rnd % p->max_piece;
            if (n > p->total - p->sent)
                n = p->total - p->sent;
            if (n > 65536)
                n = 65536;
            pattern_fill(p->seed, p->sent, buf, n);
            r = SSL_write(ssl, buf, (int)n);
            if (r != (int)n) {
                peer_fail(p, "%s", "SSL_write");
                goto done;
            }
            p->sum_out = th_fnv1a64(p->sum_out, buf, n);
            if (!p->sent)
                p->first_piece = n;
            p->sent += n;
            if (p->truncate && p->sent == p->total) {
                char *d;
                long m = BIO_get_mem_data(wb, &d);

                if (m <= 5 || send(fd, d, (size_t)(m - 5), MSG_NOSIGNAL) != m - 5) {
                    peer_fail(p, "%s", "send (truncated)");
                    goto done;
                }
                (void)BIO_reset(wb);
                shutdown(fd, SHUT_WR);
                /* the server's close, before ours: ours with its echo unread would reset */
                while (th_now_ms() < deadline) {
                    struct pollfd tp = { .fd = fd, .events = POLLIN };

                    if (poll(&tp, 1, 100) > 0 && recv(fd, buf, 65536, 0) <= 0 &&
                        errno != EAGAIN)
                        break;
                }
                goto done;
            }
            if (p->tamper && ++tampered == p->tamper) {
                char *d;
                long m = BIO_get_mem_data(wb, &d);

                d[m - 1] ^= 1;          /* the last byte of the tag */
            }
            for (i = 0; p->ku_run && i < p->ku_run; i++) {
                if (!SSL_key_update(ssl, p->ku_run_req ? SSL_KEY_UPDATE_REQUESTED
                                                      : SSL_KEY_UPDATE_NOT_REQUESTED) ||
                    SSL_do_handshake(ssl) != 1) {
                    peer_fail(p, "%s", "SSL_key_update (run)");
                    goto done;
                }
                if (i + 1 == p->ku_run)
                    p->ku_run = 0;      /* once */
            }
            if (p->renegotiate && !ku && p->sent >= p->total / 2) {
                if (!SSL_renegotiate(ssl)) {
                    peer_fail(p, "%s", "SSL_renegotiate");
                    goto done;
                }
                SSL_do_handshake(ssl);  /* the ClientHello goes out; the answer comes */
                ku = 1;
            }
            if (p->key_update && !ku && p->sent >= p->total / 2) {
                if (!SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) || SSL_do_handshake(ssl) != 1) {
                    peer_fail(p, "%s", "SSL_key_update");
                    goto done;
                }
                ku = 1;
            }
        }
        /* Everything that can be read. */
        while (hs_done) {
            ERR_clear_error();
            r = SSL_read(ssl, buf, 65536);
            if (r > 0) {
                if (p->server) {
                    if (SSL_write(ssl, buf, r) != r) {
                        peer_fail(p, "%s", "SSL_write (echo)");
                        goto done;
                    }
                    p->got += (size_t)r;
                    if (p->key_update && !ku && p->got >= p->total / 2) {
                        if (!SSL_key_update(ssl, SSL_KEY_UPDATE_REQUESTED) ||
                            SSL_do_handshake(ssl) != 1) {
                            peer_fail(p, "%s", "SSL_key_update");
                            goto done;
                        }
                        ku = 1;
                    }
                    continue;
                }
                for (n = 0; n < (size_t)r; n++)
                    if ((unsigned char)buf[n] != pattern_at(p->seed, p->got + n))
                        p->mismatches++;
                p->sum_in = th_fnv1a64(p->sum_in, buf, (size_t)r);
                p->got += (size_t)r;
                continue;
            }
            e = SSL_get_error(ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                break;
            if (e == SSL_ERROR_ZERO_RETURN) {
                p->close_notify = 1;
                break;
            }
            p->alert = ERR_GET_REASON(ERR_peek_last_error());
            peer_fail(p, "SSL_read: %s", ERR_reason_error_string(ERR_peek_last_error()));
            goto done;
        }
        if (hs_done && !shut && !p->no_close &&
            ((!p->server && (p->got >= p->total || (p->close_early && p->sent >= p->total))) ||
             (p->server && p->close_notify))) {
            SSL_shutdown(ssl);          /* our close_notify */
            shut = 1;
        }
        if (peer_send(p, fd, wb) < 0)
            break;
        if (!p->server && p->no_close && p->got >= p->total)
            break;
        if (shut && p->close_notify && BIO_ctrl_pending(wb) == 0 &&
            (p->server || p->got >= p->total)) {
            p->ok = 1;
            break;
        }
        if (eof) {
            peer_fail(p, "%s", "EOF before the close_notify exchange");
            break;
        }
        if (BIO_ctrl_pending(wb))
            pf.events |= POLLOUT;
        if (poll(&pf, 1, 100) < 0)
            continue;
        while ((k = recv(fd, buf, 65536, 0)) > 0)
            BIO_write(rb, buf, (int)k);
        if (k == 0)
            eof = 1;
    }
    if (th_now_ms() >= deadline)
        peer_fail(p, "%s", "peer timeout");
done:
    if (ssl && !p->ok)
        peer_send(p, fd, SSL_get_wbio(ssl));     /* an alert it made, best effort */
    if (!p->server && ssl)
        p->session_out = SSL_get1_session(ssl);
out:
    if (ssl)
        SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

static void peer_start(struct peer *p)
{
    ck_assert_int_eq(pthread_create(&p->th, NULL, peer_main, p), 0);
}

static void peer_join(struct peer *p)
{
    ck_assert_int_eq(pthread_join(p->th, NULL), 0);
}

/* ------------------------------------------------------------------ our server */

enum srv_mode {
    SRV_ECHO,        /* echo until EOF (close_notify), then our close_notify */
    SRV_IDLE_CHECK,  /* SRV_ECHO, counting the pool's buffers after the first echo */
};

#define MAX_CONNS 4

struct tsrv {
    uv_poll_t          poll;
    uv_timer_t         guard;
    int                lfd;
    struct sockaddr_in addr;
    struct coro_sched *s;
    SSL_CTX           *ctx;
    int64_t            hs_timeout;
    enum srv_mode      mode;
    unsigned           expect;       /* connections to serve before stopping */
    unsigned           accepted, finished;
    int                stopped, guard_fired;
    /* per connection, in accept order */
    int                hs_err[MAX_CONNS];
    struct cg_tls_info info[MAX_CONNS];
    int                active[MAX_CONNS];
    int                readable[MAX_CONNS];   /* bytes were there right after the handshake */
    ssize_t            read_end[MAX_CONNS];
    uint64_t           echoed[MAX_CONNS];
    unsigned           idle_bufs[MAX_CONNS];
};

struct tconn {
    struct coro_stream st;
    struct tsrv       *sv;
    unsigned           idx;
};

static void srv_stop(struct tsrv *sv)
{
    if (sv->stopped)
        return;
    sv->stopped = 1;
    uv_close((uv_handle_t *)&sv->poll, NULL);
    uv_close((uv_handle_t *)&sv->guard, NULL);
    close(sv->lfd);
}

static void tls_serve(void *arg)        /* coroutine; owns <c> */
{
    struct tconn *c = arg;
    struct tsrv *sv = c->sv;
    struct cg_tls_info info;
    struct coro_buf *b;
    unsigned i = c->idx;
    ssize_t n = 0;
    int err;

    err = cg_tls_accept(&c->st, sv->ctx, sv->hs_timeout, &info);
    sv->info[i] = info;
    sv->hs_err[i] = err;
    if (err == 0) {
        sv->active[i] = cg_tls_active(&c->st);
        sv->readable[i] = coro_stream_readable(&c->st);
        while ((n = coro_read(&c->st, &b, IO_MS)) > 0) {
            sv->echoed[i] += (uint64_t)n;
            if (coro_write(&c->st, b, IO_MS) < 0)
                break;
            if (sv->mode == SRV_IDLE_CHECK && sv->idle_bufs[i] == 0) {
                coro_flush(&c->st, IO_MS);
                sv->idle_bufs[i] = 1 + coro_buf_outstanding(sv->s);
            }
        }
        sv->read_end[i] = n;
        if (n == UV_EOF) {
            coro_shutdown(&c->st);      /* close_notify, then FIN */
            coro_flush(&c->st, IO_MS);
        }
    }
    coro_stream_close(&c->st);
    free(c);
    if (++sv->finished == sv->expect)
        srv_stop(sv);
}

static void on_conn(uv_poll_t *p, int status, int events)
{
    struct tsrv *sv = p->data;
    struct tconn *c;
    int fd;

    (void)events;
    (void)status;
    while ((fd = accept4(sv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        c = calloc(1, sizeof(*c));
        ck_assert_ptr_nonnull(c);
        ck_assert_uint_lt(sv->accepted, MAX_CONNS);
        c->sv = sv;
        c->idx = sv->accepted++;
        ck_assert_int_eq(coro_stream_init(sv->s, &c->st), 0);
        ck_assert_int_eq(coro_stream_open(&c->st, fd), 0);
        ck_assert_int_eq(coro_spawn(sv->s, tls_serve, c, "tls serve", NULL), 0);
    }
}

static void on_guard(uv_timer_t *t)
{
    struct tsrv *sv = t->data;

    sv->guard_fired = 1;
    srv_stop(sv);
}

struct env {
    uv_loop_t          loop;
    struct coro_sched *s;
};

static void env_init(struct env *e)
{
    ck_assert_int_eq(uv_loop_init(&e->loop), 0);
    e->s = coro_sched_new(&e->loop, NULL);
    ck_assert_ptr_nonnull(e->s);
}

static void env_deinit(struct env *e)
{
    ck_assert_uint_eq(coro_buf_outstanding(e->s), 0);  /* every buffer went back */
    ck_assert_int_eq(coro_sched_free(e->s), 0);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&e->loop), 0);
    cg_tls_thread_cleanup();
}

static void srv_start(struct tsrv *sv, struct env *e, SSL_CTX *ctx, unsigned expect)
{
    socklen_t len = sizeof(sv->addr);

    memset(sv, 0, sizeof(*sv));
    sv->s = e->s;
    sv->ctx = ctx;
    sv->expect = expect;
    sv->hs_timeout = IO_MS;
    sv->addr.sin_family = AF_INET;
    sv->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(sv->lfd, 0);
    ck_assert_int_eq(bind(sv->lfd, (struct sockaddr *)&sv->addr, sizeof(sv->addr)), 0);
    ck_assert_int_eq(listen(sv->lfd, 16), 0);
    ck_assert_int_eq(getsockname(sv->lfd, (struct sockaddr *)&sv->addr, &len), 0);
    ck_assert_int_eq(uv_poll_init_socket(&e->loop, &sv->poll, sv->lfd), 0);
    sv->poll.data = sv;
    ck_assert_int_eq(uv_poll_start(&sv->poll, UV_READABLE, on_conn), 0);
    ck_assert_int_eq(uv_timer_init(&e->loop, &sv->guard), 0);
    sv->guard.data = sv;
    ck_assert_int_eq(uv_timer_start(&sv->guard, on_guard, 2 * PEER_MS, 0), 0);
}

static int srv_port(const struct tsrv *sv)
{
    return ntohs(sv->addr.sin_port);
}

static void client_peer_init(struct peer *p, SSL_CTX *ctx, int port, size_t total,
                             uint64_t seed)
{
    memset(p, 0, sizeof(*p));
    p->ctx = ctx;
    p->port = port;
    p->total = total;
    p->seed = seed;
    p->max_piece = 40000;
}

/* Asserts that the client peer <p> echoed everything through connection <i> of <sv>. */
static void assert_echoed(const struct tsrv *sv, unsigned i, const struct peer *p)
{
    ck_assert_msg(!sv->guard_fired, "the guard timer fired");
    ck_assert_msg(sv->hs_err[i] == 0, "handshake %u: %s (%s)", i, uv_strerror(sv->hs_err[i]),
                  sv->info[i].why);
    ck_assert_msg(p->ok, "peer: %s", p->why);
    ck_assert_uint_eq(p->got, p->total);
    ck_assert_uint_eq(p->sent, p->total);
    ck_assert_uint_eq(p->mismatches, 0);
    ck_assert(p->sum_in == p->sum_out);
    ck_assert_uint_eq(sv->echoed[i], p->total);
    ck_assert_int_eq(sv->read_end[i], UV_EOF);    /* the peer's close_notify */
    ck_assert_int_eq(p->close_notify, 1);         /* ours */
    ck_assert_int_eq(sv->active[i], 1);
}

/* ------------------------------------------------------------------ accept: echo */

/* TLS 1.3 and 1.2 with each AEAD suite: 1 MiB in random pieces both ways through
 * cg_tls_accept()'s record layer, close_notify both ways. */
START_TEST(test_accept_echo)
{
    const struct suite_case *sc = &cases[_i];
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, sc->version, sc->name);
    srv_start(&sv, &e, sctx, 1);
    client_peer_init(&p, pctx, srv_port(&sv), MiB, 17 + (uint64_t)_i);
    peer_start(&p);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    peer_join(&p);
    assert_echoed(&sv, 0, &p);
    ck_assert_int_eq(sv.info[0].version, sc->version);
    ck_assert_str_eq(sv.info[0].cipher, sc->name);
    ck_assert_str_eq(p.cipher, sc->name);
    ck_assert_int_eq(sv.info[0].fail, CG_TLS_OK);
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ connect: echo */

struct tcli {
    struct coro_sched  *s;
    struct sockaddr_in  addr;
    SSL_CTX            *ctx;
    const char         *sni;
    SSL_SESSION        *session;      /* in and out */
    int                 want_session;
    size_t              total;
    uint64_t            seed;
    struct coro_stream *st;
    struct coro_event   writer_done;
    /* results */
    int                 conn_err, hs_err, write_err, shut_err;
    struct cg_tls_info  info;
    int                 active;
    size_t              sent, got, mismatches;
    uint64_t            sum_out, sum_in;
    ssize_t             read_end;     /* after the echo: UV_EOF (the server's close_notify) */
    int                 done;
};

static void cli_writer(void *arg)
{
    struct tcli *t = arg;
    uint64_t rnd = t->seed;
    int err = 0;

    while (t->sent < t->total && err == 0) {
        struct coro_buf *b = coro_buf_get(t->s, 0);
        size_t n;

        rnd = splitmix(rnd);
        n = 1 + rnd % b->cap;
        if (n > t->total - t->sent)
            n = t->total - t->sent;
        pattern_fill(t->seed, t->sent, b->data, n);
        b->len = (uint32_t)n;
        t->sum_out = th_fnv1a64(t->sum_out, b->data, n);
        t->sent += n;
        err = coro_write(t->st, b, IO_MS);
    }
    t->write_err = err;
    coro_event_signal(&t->writer_done);
}

static void tls_client(void *arg)       /* coroutine */
{
    struct tcli *t = arg;
    struct coro_buf *b;
    ssize_t n = 0;
    size_t i;

    t->st = calloc(1, sizeof(*t->st));
    ck_assert_ptr_nonnull(t->st);
    coro_event_init(&t->writer_done);
    coro_stream_init(t->s, t->st);
    t->conn_err = coro_connect(t->st, (struct sockaddr *)&t->addr, IO_MS);
    if (t->conn_err == 0)
        t->hs_err = cg_tls_connect(t->st, t->ctx, t->sni, NULL,
                                   t->want_session ? &t->session : NULL, IO_MS, &t->info);
    if (t->conn_err == 0 && t->hs_err == 0) {
        t->active = cg_tls_active(t->st);
        ck_assert_int_eq(coro_spawn(t->s, cli_writer, t, "tls writer", NULL), 0);
        while (t->got < t->total && (n = coro_read(t->st, &b, IO_MS)) > 0) {
            for (i = 0; i < (size_t)n; i++)
                if ((unsigned char)b->data[b->off + i] != pattern_at(t->seed, t->got + i))
                    t->mismatches++;
            t->sum_in = th_fnv1a64(t->sum_in, b->data + b->off, (size_t)n);
            t->got += (size_t)n;
            coro_buf_put(t->s, b);
        }
        coro_event_wait(&t->writer_done, "writer", IO_MS);
        t->shut_err = coro_shutdown(t->st);    /* close_notify, FIN */
        n = coro_read(t->st, &b, IO_MS);
        if (n > 0)
            coro_buf_put(t->s, b);
        t->read_end = n;
    }
    coro_stream_close(t->st);
    free(t->st);
    t->st = NULL;
    t->done = 1;
}

static void server_peer_init(struct peer *p, SSL_CTX *ctx, size_t total, struct sockaddr_in *a)
{
    socklen_t len = sizeof(*a);

    memset(p, 0, sizeof(*p));
    p->ctx = ctx;
    p->server = 1;
    p->total = total;
    memset(a, 0, sizeof(*a));
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(p->lfd, 0);
    ck_assert_int_eq(bind(p->lfd, (struct sockaddr *)a, sizeof(*a)), 0);
    ck_assert_int_eq(listen(p->lfd, 4), 0);
    ck_assert_int_eq(getsockname(p->lfd, (struct sockaddr *)a, &len), 0);
}

/* One cg_tls_connect() connection to a fresh OpenSSL server peer on <pctx>. */
static void run_client(struct env *e, struct tcli *t, SSL_CTX *cctx, SSL_CTX *pctx,
                       size_t total, uint64_t seed, int key_update, struct peer *p)
{
    server_peer_init(p, pctx, total, &t->addr);
    p->key_update = key_update;
    t->s = e->s;
    t->ctx = cctx;
    t->total = total;
    t->seed = seed;
    t->done = 0;
    t->sent = t->got = t->mismatches = 0;
    t->sum_in = t->sum_out = 0;
    peer_start(p);
    ck_assert_int_eq(coro_spawn(e->s, tls_client, t, "tls client", NULL), 0);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    peer_join(p);
    close(p->lfd);
    ck_assert_int_eq(t->done, 1);
    ck_assert_msg(t->conn_err == 0, "connect: %s", uv_strerror(t->conn_err));
    ck_assert_msg(t->hs_err == 0, "handshake: %s (%s: %s)", uv_strerror(t->hs_err),
                  cg_tls_fail_name(t->info.fail), t->info.why);
    ck_assert_msg(p->ok, "peer: %s", p->why);
    ck_assert_int_eq(t->active, 1);
    ck_assert_int_eq(t->write_err, 0);
    ck_assert_int_eq(t->shut_err, 0);
    ck_assert_uint_eq(t->got, total);
    ck_assert_uint_eq(t->mismatches, 0);
    ck_assert(t->sum_in == t->sum_out);
    ck_assert_uint_eq(p->got, total);
    ck_assert_int_eq(p->close_notify, 1);           /* ours reached it */
    ck_assert_int_eq(t->read_end, UV_EOF);          /* its reached us */
}

/* cg_tls_connect() against an OpenSSL server, each version and suite: 1 MiB echoed. */
START_TEST(test_connect_echo)
{
    const struct suite_case *sc = &cases[_i];
    struct certs c;
    struct env e;
    struct tcli t;
    struct peer p;
    SSL_CTX *cctx, *pctx;

    make_certs(&c);
    env_init(&e);
    memset(&t, 0, sizeof(t));
    cctx = client_ctx(1);
    pctx = server_ctx(&c, 0);
    ctx_limit(pctx, sc->version, sc->name);
    t.sni = "tls.test";
    run_client(&e, &t, cctx, pctx, MiB, 31 + (uint64_t)_i, 0, &p);
    ck_assert_int_eq(t.info.version, sc->version);
    ck_assert_str_eq(t.info.cipher, sc->name);
    ck_assert_int_eq(t.info.peer_cert, 1);
    ck_assert_str_eq(t.info.peer_subject, "CN=tls.test");
    ck_assert_uint_eq(strlen(t.info.peer_sha256), 64);
    SSL_CTX_free(cctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ handshake details */

/* TLS 1.3: the client's first data in the same send as its Finished. The handshake reads
 * exactly to the end of the Finished; the rest is the record layer's: in the stream when
 * cg_tls_accept() returns, in order. Two session tickets went out (the context's count),
 * under the sequence numbers the record layer then continues. */
START_TEST(test_data_with_finished)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, TLS1_3_VERSION, NULL);
    srv_start(&sv, &e, sctx, 1);
    client_peer_init(&p, pctx, srv_port(&sv), 64 * 1024, 5);
    p.max_piece = 300;
    peer_start(&p);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    peer_join(&p);
    assert_echoed(&sv, 0, &p);
    ck_assert_int_eq(sv.readable[0], 1);
    ck_assert_uint_eq(atomic_load(&p.msgs.tickets), 2);
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* Serves one connection of the client peer <p> on a new listener of <sctx>. */
static void serve_one(struct env *e, struct tsrv *sv, SSL_CTX *sctx, struct peer *p,
                      enum srv_mode mode)
{
    srv_start(sv, e, sctx, 1);
    sv->mode = mode;
    p->port = srv_port(sv);
    peer_start(p);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    peer_join(p);
}

/* A second connection resumes the first one's session (cg_tls_accept() side), TLS 1.3 and
 * 1.2. The TLS 1.2 client's Finished comes last in a resumption: its data comes with it.
 * After a resumption OpenSSL's server sends one ticket, and so do we. */
START_TEST(test_accept_resume)
{
    int version = _i ? TLS1_2_VERSION : TLS1_3_VERSION;
    struct certs c;
    struct env e;
    struct tsrv sv1, sv2;
    struct peer p1, p2;
    SSL_CTX *sctx, *pctx;

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, version, NULL);
    client_peer_init(&p1, pctx, 0, 100 * 1000, 7);
    serve_one(&e, &sv1, sctx, &p1, SRV_ECHO);
    assert_echoed(&sv1, 0, &p1);
    ck_assert_int_eq(sv1.info[0].resumed, 0);
    ck_assert_ptr_nonnull(p1.session_out);
    client_peer_init(&p2, pctx, 0, 100 * 1000, 8);
    p2.session = p1.session_out;
    p2.max_piece = 500;
    serve_one(&e, &sv2, sctx, &p2, SRV_ECHO);
    assert_echoed(&sv2, 0, &p2);
    ck_assert_int_eq(p2.resumed, 1);
    ck_assert_int_eq(sv2.info[0].resumed, 1);
    ck_assert_int_eq(sv2.readable[0], 1);
    if (version == TLS1_3_VERSION) {
        ck_assert_uint_eq(atomic_load(&p1.msgs.tickets), 2);
        ck_assert_uint_eq(atomic_load(&p2.msgs.tickets), 1);
    }
    SSL_SESSION_free(p1.session_out);
    SSL_SESSION_free(p2.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* cg_tls_connect() keeps the session the server issued (TLS 1.3: waiting for its first
 * ticket) and resumes it on the next connection. */
START_TEST(test_connect_resume)
{
    int version = _i ? TLS1_2_VERSION : TLS1_3_VERSION;
    struct certs c;
    struct env e;
    struct tcli t;
    struct peer p;
    SSL_CTX *cctx, *pctx;

    make_certs(&c);
    env_init(&e);
    memset(&t, 0, sizeof(t));
    cctx = client_ctx(1);
    pctx = server_ctx(&c, 0);
    ctx_limit(pctx, version, NULL);
    t.want_session = 1;
    run_client(&e, &t, cctx, pctx, 50 * 1000, 3, 0, &p);
    ck_assert_int_eq(t.info.resumed, 0);
    ck_assert_ptr_nonnull(t.session);
    ck_assert_int_eq(SSL_SESSION_is_resumable(t.session), 1);
    run_client(&e, &t, cctx, pctx, 50 * 1000, 4, 0, &p);
    ck_assert_int_eq(t.info.resumed, 1);
    ck_assert_int_eq(p.resumed, 1);
    ck_assert_int_eq(t.info.version, version);
    SSL_SESSION_free(t.session);
    SSL_CTX_free(cctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* What the handshake established, in cg_tls_info: SNI, ALPN, the client's certificate
 * (subject, fingerprint, verification), the group. */
START_TEST(test_accept_info_sni_alpn_client_cert)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;
    X509 *x;
    FILE *f;
    unsigned char md[32];
    unsigned mdlen = 0, i;
    char hex[65];

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    ck_assert_int_eq(SSL_CTX_load_verify_locations(sctx, c.cli_cert, NULL), 1);
    pctx = client_ctx(0);
    ck_assert_int_eq(SSL_CTX_use_certificate_file(pctx, c.cli_cert, SSL_FILETYPE_PEM), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(pctx, c.cli_key, SSL_FILETYPE_PEM), 1);
    client_peer_init(&p, pctx, 0, 10 * 1000, 9);
    p.sni = "tls.test";
    p.alpn = "\x02h2\x08http/1.1";
    p.alpn_len = 12;
    serve_one(&e, &sv, sctx, &p, SRV_ECHO);
    assert_echoed(&sv, 0, &p);
    ck_assert_str_eq(sv.info[0].sni, "tls.test");
    ck_assert_str_eq(sv.info[0].alpn, "http/1.1");
    ck_assert_str_eq(sv.info[0].group, "x25519");
    ck_assert_int_eq(sv.info[0].peer_cert, 1);
    ck_assert_int_eq(sv.info[0].verify_result, X509_V_OK);
    ck_assert_str_eq(sv.info[0].peer_subject, "CN=client,O=corogate tests");
    f = fopen(c.cli_cert, "r");
    ck_assert_ptr_nonnull(f);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    ck_assert_ptr_nonnull(x);
    ck_assert_int_eq(X509_digest(x, EVP_sha256(), md, &mdlen), 1);
    X509_free(x);
    for (i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    ck_assert_str_eq(sv.info[0].peer_sha256, hex);
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* The client's close_notify right behind its last data, in the same send: the data is
 * delivered (and echoed) first, then the read ends with UV_EOF; the client still reads the
 * echo after its close_notify, then ours. */
START_TEST(test_close_notify_behind_data)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, _i ? TLS1_2_VERSION : TLS1_3_VERSION, NULL);
    client_peer_init(&p, pctx, 0, 3000, 15);
    p.max_piece = 1000;
    p.close_early = 1;
    serve_one(&e, &sv, sctx, &p, SRV_ECHO);
    assert_echoed(&sv, 0, &p);
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* An SNI callback switches the SSL to another prepared context (its certificate, its ticket
 * count): the handshake, the tickets and the record layer follow it. */
static SSL_CTX *sni_ctx2;

static int on_servername(SSL *ssl, int *al, void *arg)
{
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);

    (void)al;
    (void)arg;
    if (name && !strcmp(name, "other.test"))
        SSL_set_SSL_CTX(ssl, sni_ctx2);
    return SSL_TLSEXT_ERR_OK;
}

START_TEST(test_sni_switches_context)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;
    char err[200] = "";

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    SSL_CTX_set_tlsext_servername_callback(sctx, on_servername);
    sni_ctx2 = SSL_CTX_new(TLS_server_method());
    ck_assert_ptr_nonnull(sni_ctx2);
    ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(sni_ctx2, c.cli_cert), 1);
    ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(sni_ctx2, c.cli_key, SSL_FILETYPE_PEM), 1);
    ck_assert_int_eq(SSL_CTX_set_num_tickets(sni_ctx2, 3), 1);
    ck_assert_msg(cg_tls_ctx_prepare(sni_ctx2, 1, err, sizeof(err)) == 0, "%s", err);
    pctx = client_ctx(0);
    ctx_limit(pctx, TLS1_3_VERSION, NULL);
    client_peer_init(&p, pctx, 0, 200000, 16);
    p.sni = "other.test";
    serve_one(&e, &sv, sctx, &p, SRV_ECHO);
    assert_echoed(&sv, 0, &p);
    ck_assert_str_eq(sv.info[0].sni, "other.test");
    ck_assert_uint_eq(atomic_load(&p.msgs.tickets), 3);
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(sni_ctx2);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ after the handshake */

/* TLS 1.3 KeyUpdate with update_requested from the peer, mid-stream: we switch our read
 * key, answer with our own KeyUpdate under the old write key, and the rest of the 1 MiB
 * still goes both ways. _i: 0 the peer is the client (cg_tls_accept), 1 the server. */
START_TEST(test_key_update)
{
    struct certs c;
    struct env e;
    struct peer p;
    SSL_CTX *ours, *pctx;

    make_certs(&c);
    env_init(&e);
    if (_i == 0) {
        struct tsrv sv;

        ours = server_ctx(&c, 1);
        pctx = client_ctx(0);
        ctx_limit(pctx, TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384");
        client_peer_init(&p, pctx, 0, MiB, 11);
        p.key_update = 1;
        serve_one(&e, &sv, ours, &p, SRV_ECHO);
        assert_echoed(&sv, 0, &p);
        SSL_SESSION_free(p.session_out);
    } else {
        struct tcli t;

        memset(&t, 0, sizeof(t));
        ours = client_ctx(1);
        pctx = server_ctx(&c, 0);
        ctx_limit(pctx, TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256");
        run_client(&e, &t, ours, pctx, MiB, 12, 1, &p);
    }
    ck_assert_uint_eq(atomic_load(&p.msgs.key_updates), 1);     /* our answer */
    SSL_CTX_free(ours);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* A record changed on the way: the connection fails with bad_record_mac to the peer. */
START_TEST(test_tampered_record)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, _i ? TLS1_2_VERSION : TLS1_3_VERSION, NULL);
    client_peer_init(&p, pctx, 0, 1000, 13);
    p.max_piece = 100;
    p.tamper = 1;
    serve_one(&e, &sv, sctx, &p, SRV_ECHO);
    ck_assert_int_eq(sv.hs_err[0], 0);
    ck_assert_int_eq(sv.read_end[0], UV_EPROTO);
    ck_assert_uint_eq(sv.echoed[0], 0);
    ck_assert_int_eq(p.ok, 0);
    ck_assert_msg(p.alert == SSL_R_SSLV3_ALERT_BAD_RECORD_MAC, "peer: %s", p.why);
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* Records cut short behind good ones, all in one read: the good records' bytes go on, then
 * the read fails (they were lost with the read before). _i bit 0: TLS 1.2 (else 1.3); bit
 * 1: the last record's last bytes never come, a FIN in their place (a truncation: an
 * error, not the orderly end an EOF between records is), else the third record's tag is
 * damaged (our bad_record_mac to the peer). */
START_TEST(test_records_cut_short)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, (_i & 1) ? TLS1_2_VERSION : TLS1_3_VERSION, NULL);
    client_peer_init(&p, pctx, 0, 1000, 13);
    p.max_piece = 100;          /* all pieces go in one send: 1000 bytes, one segment */
    if (_i & 2)
        p.truncate = 1;
    else
        p.tamper = 3;
    serve_one(&e, &sv, sctx, &p, SRV_ECHO);
    ck_assert_int_eq(sv.hs_err[0], 0);
    ck_assert_uint_gt(sv.echoed[0], 0);
    ck_assert_uint_lt(sv.echoed[0], 1000);
    if (_i & 2) {
        ck_assert_int_eq(sv.read_end[0], UV_EPROTO);
    } else {
        /* the good bytes were read; then the read failed, or their echo did (our fatal
         * alert ended what we may send) */
        ck_assert(sv.read_end[0] == UV_EPROTO || sv.read_end[0] > 0);
        ck_assert_uint_ge(sv.echoed[0], p.first_piece + 1);    /* two records at least */
        ck_assert_int_eq(p.ok, 0);
        ck_assert_msg(p.alert == SSL_R_SSLV3_ALERT_BAD_RECORD_MAC, "peer: %s", p.why);
    }
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* TLS 1.3: KeyUpdates in a row with no data between them. 20 are served (with
 * update_requested: answered), and the echo completes; 40 cut the peer off with
 * unexpected_message at the 33rd (each costs key derivations, and with update_requested
 * an answer). _i: 0 20 requested, 1 40 not requested, 2 40 requested. */
START_TEST(test_key_update_run)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, TLS1_3_VERSION, NULL);
    /* One data record, then the run: nothing more, so that the server reads all of it
     * before it closes (a close with unread bytes resets, and the reset would take our
     * alert with it). */
    client_peer_init(&p, pctx, 0, 1000, 31);
    p.max_piece = 1000;
    p.ku_run = _i == 0 ? 20 : 40;
    p.ku_run_req = _i != 1;
    serve_one(&e, &sv, sctx, &p, SRV_ECHO);
    if (_i == 0) {
        assert_echoed(&sv, 0, &p);
        ck_assert_uint_ge(atomic_load(&p.msgs.key_updates), 1);
    } else {
        ck_assert_int_eq(sv.hs_err[0], 0);
        /* as in test_records_cut_short */
        ck_assert(sv.read_end[0] == UV_EPROTO || sv.read_end[0] > 0);
        ck_assert_int_eq(p.ok, 0);
        ck_assert_msg(p.alert == SSL_R_SSLV3_ALERT_UNEXPECTED_MESSAGE,
                      "peer: %s (read_end %zd, echoed %llu, first %zu, got %zu)", p.why,
                      sv.read_end[0], (unsigned long long)sv.echoed[0], p.first_piece, p.got);
        ck_assert_uint_le(sv.echoed[0], p.first_piece);
    }
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* An idle TLS connection holds its record layer's object only: no pool buffer. */
START_TEST(test_idle_holds_no_buffer)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;

    ck_assert_uint_le(cg_tls_idle_bytes(), 256);
    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, _i ? TLS1_2_VERSION : TLS1_3_VERSION, NULL);
    client_peer_init(&p, pctx, 0, 100, 14);
    p.max_piece = 100;
    serve_one(&e, &sv, sctx, &p, SRV_IDLE_CHECK);
    assert_echoed(&sv, 0, &p);
    ck_assert_uint_eq(sv.idle_bufs[0], 1);      /* 1 + buffers outstanding after an echo */
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* Python's ssl module as the client (another OpenSSL user, its own record handling):
 * echo, SNI and ALPN, close_notify both ways (its unwrap() waits for ours). */
START_TEST(test_python_client)
{
    const char *ver = _i ? "1.2" : "1.3";
    char out[TH_PATH_MAX], port[16], *text;
    struct certs c;
    struct env e;
    struct tsrv sv;
    SSL_CTX *sctx;
    int fd, status = 0;
    pid_t pid;

    if (access("/usr/bin/python3", X_OK) != 0)
        TH_SKIP("no /usr/bin/python3");
    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    srv_start(&sv, &e, sctx, 1);
    snprintf(port, sizeof(port), "%d", srv_port(&sv));
    snprintf(out, sizeof(out), "%s/python.out", th_tmpdir());
    fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    ck_assert_int_ge(fd, 0);
    pid = th_fork();
    if (pid == 0) {
        dup2(fd, 1);
        dup2(fd, 2);
        execl("/usr/bin/python3", "python3", "tests/tls_client.py", port, ver, "300000", "42",
              (char *)NULL);
        _exit(127);
    }
    close(fd);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    text = th_read_file(out, NULL);
    ck_assert_ptr_nonnull(text);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "python: %s", text);
    ck_assert_msg(!strncmp(text, _i ? "OK TLSv1.2 " : "OK TLSv1.3 ", 11), "python: %s", text);
    ck_assert_msg(strstr(text, " http/1.1 300000") != NULL, "python: %s", text);
    free(text);
    ck_assert_int_eq(sv.hs_err[0], 0);
    ck_assert_uint_eq(sv.echoed[0], 300000);
    ck_assert_int_eq(sv.read_end[0], UV_EOF);
    ck_assert_str_eq(sv.info[0].sni, "tls.test");
    ck_assert_str_eq(sv.info[0].alpn, "http/1.1");
    SSL_CTX_free(sctx);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ the relay's loop */

/* gateway/core/relay.c's loop, as it is, between a TLS client stream and a plain upstream:
 * one coroutine watching both streams, coro_try_read() / coro_write_nowait() /
 * coro_stream_readable(), parking when neither side can move. A raw chunk that holds only
 * part of a record makes a stream readable and then yields nothing: the loop must park
 * (not spin) and wake when the rest comes. */
struct relay_t {
    struct tsrv        *sv;
    int                 up_port;
    struct coro_stream  client, up;
    struct coro        *co;
    int                 hs_err, result;
    unsigned            passes, parks;
    uint64_t            to_up, to_client;
};

enum { TO_UP = 1, TO_CLIENT = 2 };

static int relay_pump(struct relay_t *r, int dir, int *open)
{
    struct coro_stream *src = dir == TO_UP ? &r->client : &r->up;
    struct coro_stream *dst = dir == TO_UP ? &r->up : &r->client;
    struct coro_buf *b;
    ssize_t n;
    int err;

    if (!(*open & dir) || coro_stream_queued(dst) > dst->wq_high)
        return 0;
    n = coro_try_read(src, &b);
    if (n == UV_EAGAIN)
        return 0;
    if (n == UV_EOF) {
        *open &= ~dir;
        err = coro_shutdown(dst);
        return err < 0 ? err : 1;
    }
    if (n < 0)
        return (int)n;
    if (dir == TO_UP)
        r->to_up += (uint64_t)n;
    else
        r->to_client += (uint64_t)n;
    err = coro_write_nowait(dst, b);
    return err < 0 ? err : 1;
}

static void relay_co(void *arg)
{
    struct relay_t *r = arg;
    struct cg_tls_info info;
    struct sockaddr_in a = { .sin_family = AF_INET };
    int open = TO_UP | TO_CLIENT, err = 0, x, y;

    r->co = coro_self();
    r->hs_err = cg_tls_accept(&r->client, r->sv->ctx, IO_MS, &info);
    if (r->hs_err < 0)
        goto out;
    a.sin_port = htons((uint16_t)r->up_port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    coro_stream_init(r->sv->s, &r->up);
    err = coro_connect(&r->up, (struct sockaddr *)&a, IO_MS);
    if (err < 0)
        goto out_up;
    coro_stream_watch(&r->client, r->co);
    coro_stream_watch(&r->up, r->co);
    for (;;) {
        r->passes++;
        x = relay_pump(r, TO_UP, &open);
        y = relay_pump(r, TO_CLIENT, &open);
        if (x < 0 || y < 0) {
            err = x < 0 ? x : y;
            break;
        }
        if (!open)
            break;
        if ((x || y) && (((open & TO_UP) && coro_stream_readable(&r->client)) ||
                         ((open & TO_CLIENT) && coro_stream_readable(&r->up))))
            continue;
        r->parks++;
        err = coro_park("relay", IO_MS);
        if (err < 0)
            break;
    }
    if (err == 0) {
        coro_flush(&r->client, IO_MS);
        coro_flush(&r->up, IO_MS);
    }
out_up:
    coro_stream_close(&r->up);
out:
    r->result = err;
    coro_stream_close(&r->client);
    srv_stop(r->sv);
}

static struct relay_t *the_relay;

static void on_relay_conn(uv_poll_t *p, int status, int events)
{
    struct tsrv *sv = p->data;
    int fd;

    (void)status;
    (void)events;
    while ((fd = accept4(sv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
        ck_assert_uint_eq(sv->accepted++, 0);
        ck_assert_int_eq(coro_stream_init(sv->s, &the_relay->client), 0);
        ck_assert_int_eq(coro_stream_open(&the_relay->client, fd), 0);
        ck_assert_int_eq(coro_spawn(sv->s, relay_co, the_relay, "relay", NULL), 0);
    }
}

START_TEST(test_relay_loop_over_tls)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    struct relay_t *r = calloc(1, sizeof(*r));
    struct th_echo *echo = th_echo_new(0);
    SSL_CTX *sctx, *pctx;

    ck_assert_ptr_nonnull(r);
    ck_assert_ptr_nonnull(echo);
    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, _i ? TLS1_2_VERSION : TLS1_3_VERSION, NULL);
    srv_start(&sv, &e, sctx, 1);
    uv_poll_stop(&sv.poll);
    ck_assert_int_eq(uv_poll_start(&sv.poll, UV_READABLE, on_relay_conn), 0);
    r->sv = &sv;
    r->up_port = th_echo_port(echo);
    the_relay = r;
    client_peer_init(&p, pctx, srv_port(&sv), MiB, 21);
    peer_start(&p);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    peer_join(&p);
    ck_assert(!sv.guard_fired);
    ck_assert_int_eq(r->hs_err, 0);
    ck_assert_msg(r->result == 0, "relay: %s", uv_strerror(r->result));
    ck_assert_msg(p.ok, "peer: %s", p.why);
    ck_assert_uint_eq(p.got, MiB);
    ck_assert_uint_eq(p.mismatches, 0);
    ck_assert(p.sum_in == p.sum_out);
    ck_assert_uint_eq(r->to_up, MiB);
    ck_assert_uint_eq(r->to_client, MiB);
    ck_assert_int_eq(p.close_notify, 1);
    /* Bounded: each pass moves a chunk or parks; a spin would run into the millions. */
    ck_assert_msg(r->passes < 4 * r->parks + 4096, "passes %u, parks %u", r->passes, r->parks);
    th_note("relay over TLS: %u passes, %u parks", r->passes, r->parks);
    free(r);
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* TLS 1.2: a client's renegotiation is declined with a no_renegotiation warning (OpenSSL's
 * client then gives up with its own alert, which fails the connection on our side). */
START_TEST(test_renegotiation_refused)
{
    struct certs c;
    struct env e;
    struct tsrv sv;
    struct peer p;
    SSL_CTX *sctx, *pctx;

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    pctx = client_ctx(0);
    ctx_limit(pctx, TLS1_2_VERSION, NULL);
    client_peer_init(&p, pctx, 0, 100000, 23);
    p.renegotiate = 1;
    serve_one(&e, &sv, sctx, &p, SRV_ECHO);
    ck_assert_int_eq(sv.hs_err[0], 0);
    ck_assert_int_eq(p.ok, 0);
    ck_assert_msg(p.alert == SSL_R_NO_RENEGOTIATION, "peer: %s", p.why);
    ck_assert_int_eq(sv.read_end[0], UV_EPROTO);      /* its fatal alert */
    SSL_SESSION_free(p.session_out);
    SSL_CTX_free(sctx);
    SSL_CTX_free(pctx);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ refusals */

/* cg_tls_ctx_prepare(): AEAD suites only, an error when none is left. */
START_TEST(test_ctx_prepare)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    STACK_OF(SSL_CIPHER) *sk;
    char err[200] = "";
    int i, nid;

    ck_assert_ptr_nonnull(ctx);
    ck_assert_int_eq(SSL_CTX_set_cipher_list(ctx, "AES128-SHA:ECDHE-RSA-AES256-GCM-SHA384"), 1);
    ck_assert_int_eq(SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_CCM_SHA256:"
                                                   "TLS_CHACHA20_POLY1305_SHA256"), 1);
    ck_assert_msg(cg_tls_ctx_prepare(ctx, 1, err, sizeof(err)) == 0, "%s", err);
    sk = SSL_CTX_get_ciphers(ctx);
    ck_assert_int_eq(sk_SSL_CIPHER_num(sk), 2);
    for (i = 0; i < sk_SSL_CIPHER_num(sk); i++) {
        nid = SSL_CIPHER_get_cipher_nid(sk_SSL_CIPHER_value(sk, i));
        ck_assert(nid == NID_aes_256_gcm || nid == NID_chacha20_poly1305);
    }
    ck_assert_int_eq(SSL_CTX_get_read_ahead(ctx), 0);
    ck_assert(SSL_CTX_get_options(ctx) & SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_free(ctx);

    ctx = SSL_CTX_new(TLS_server_method());
    ck_assert_int_eq(SSL_CTX_set_cipher_list(ctx, "AES128-SHA"), 1);
    ck_assert_int_eq(cg_tls_ctx_prepare(ctx, 1, err, sizeof(err)), -1);
    ck_assert_str_eq(err, "no AEAD cipher left in the TLS 1.2 cipher list");
    ck_assert_int_eq(SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION), 1);
    ck_assert_int_eq(cg_tls_ctx_prepare(ctx, 1, err, sizeof(err)), 0);   /* 1.2 is off */
    SSL_CTX_free(ctx);

    ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_int_eq(SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_CCM_SHA256"), 1);
    ck_assert_int_eq(cg_tls_ctx_prepare(ctx, 0, err, sizeof(err)), -1);
    SSL_CTX_free(ctx);
    ck_assert_str_eq(cg_tls_fail_name(CG_TLS_FAIL_NOT_TLS), "not_tls");
}
END_TEST

/* Not TLS: refused from the first bytes, before any SSL object exists. */
START_TEST(test_garbage_not_tls)
{
    static const struct { const char *p; size_t n; } junk[] = {
        { "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27 },
        { "\x16\x03\x01\x00\x05\x02hello", 11 },   /* a handshake record, no ClientHello */
        { "\x16\x03\x01\xff\xff\x01", 6 },          /* a length no ClientHello has */
    };
    struct certs c;
    struct env e;
    struct tsrv sv;
    SSL_CTX *sctx;
    unsigned made, i;
    int fd[3];

    make_certs(&c);
    count_ssl_objects();
    env_init(&e);
    sctx = server_ctx(&c, 1);
    srv_start(&sv, &e, sctx, 3);
    for (i = 0; i < 3; i++) {
        fd[i] = th_connect(srv_port(&sv), 5000);
        ck_assert_int_ge(fd[i], 0);
        ck_assert_int_gt(th_send_all(fd[i], junk[i].p, junk[i].n), 0);
    }
    made = atomic_load(&ssl_made);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    ck_assert_uint_eq(atomic_load(&ssl_made), made);      /* no SSL object for any */
    for (i = 0; i < 3; i++) {
        ck_assert_msg(sv.info[i].fail == CG_TLS_FAIL_NOT_TLS, "%u: %s (%s)", i,
                      cg_tls_fail_name(sv.info[i].fail), sv.info[i].why);
        ck_assert_int_eq(sv.hs_err[i], UV_EPROTO);
        ck_assert_int_eq(th_wait_closed(fd[i], 5000), 0);
        close(fd[i]);
    }
    SSL_CTX_free(sctx);
    env_deinit(&e);
}
END_TEST

/* A handshake that stalls fails with CG_TLS_FAIL_TIMEOUT: a client that sends nothing,
 * and one that stops inside its ClientHello (then OpenSSL is waiting). */
START_TEST(test_handshake_timeout)
{
    static const char hello_start[] = "\x16\x03\x01\x00\xc8\x01\x00\x00";
    struct certs c;
    struct env e;
    struct tsrv sv;
    SSL_CTX *sctx;
    unsigned i;
    int fd[2];

    make_certs(&c);
    env_init(&e);
    sctx = server_ctx(&c, 1);
    srv_start(&sv, &e, sctx, 2);
    sv.hs_timeout = 200;
    fd[0] = th_connect(srv_port(&sv), 5000);
    fd[1] = th_connect(srv_port(&sv), 5000);
    ck_assert_int_ge(fd[0], 0);
    ck_assert_int_ge(fd[1], 0);
    ck_assert_int_eq(th_send_all(fd[1], hello_start, 8), 8);
    uv_run(&e.loop, UV_RUN_DEFAULT);
    ck_assert(!sv.guard_fired);
    for (i = 0; i < 2; i++) {
        ck_assert_msg(sv.info[i].fail == CG_TLS_FAIL_TIMEOUT, "%u: %s (%s)", i,
                      cg_tls_fail_name(sv.info[i].fail), sv.info[i].why);
        ck_assert_int_eq(sv.hs_err[i], UV_ETIMEDOUT);
        close(fd[i]);
    }
    SSL_CTX_free(sctx);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ suite */

Suite *tls_suite(void)
{
    Suite *s = suite_create("tls");
    TCase *echo = tcase_create("echo");
    TCase *refuse = tcase_create("refuse");

    th_tcase_add_fixtures(echo);
    tcase_set_timeout(echo, 120);
    tcase_add_loop_test(echo, test_accept_echo, 0, NCASES);
    tcase_add_loop_test(echo, test_connect_echo, 0, NCASES);
    tcase_add_test(echo, test_data_with_finished);
    tcase_add_loop_test(echo, test_accept_resume, 0, 2);
    tcase_add_loop_test(echo, test_connect_resume, 0, 2);
    tcase_add_test(echo, test_accept_info_sni_alpn_client_cert);
    tcase_add_loop_test(echo, test_close_notify_behind_data, 0, 2);
    tcase_add_test(echo, test_sni_switches_context);
    tcase_add_loop_test(echo, test_key_update, 0, 2);
    tcase_add_loop_test(echo, test_key_update_run, 0, 3);
    tcase_add_loop_test(echo, test_idle_holds_no_buffer, 0, 2);
    tcase_add_loop_test(echo, test_python_client, 0, 2);
    tcase_add_loop_test(echo, test_relay_loop_over_tls, 0, 2);
    suite_add_tcase(s, echo);
    th_tcase_add_fixtures(refuse);
    tcase_set_timeout(refuse, 60);
    tcase_add_test(refuse, test_ctx_prepare);
    tcase_add_test(refuse, test_garbage_not_tls);
    tcase_add_test(refuse, test_handshake_timeout);
    tcase_add_loop_test(refuse, test_tampered_record, 0, 2);
    tcase_add_loop_test(refuse, test_records_cut_short, 0, 4);
    tcase_add_test(refuse, test_renegotiation_refused);
    suite_add_tcase(s, refuse);
    return s;
}
