/* bench/tls_bench.c — what a TLS library costs corogate: memory per idle server connection,
 * handshakes/s, AES-GCM record throughput. One source, one binary per library:
 *
 *   -DTLS_OPENSSL   OpenSSL 3.0 (libssl-dev)
 *   -DTLS_WOLFSSL   wolfSSL 5.5 (libwolfssl-dev)
 *   -DTLS_GNUTLS    GnuTLS 3.7 (libgnutls28-dev)
 *
 * (mbedTLS 2.28 is not built: Debian's build has no TLS 1.3, see docs/tls.md.)
 *
 * Server and client live in one process and one thread and talk through two in-memory byte
 * pipes: the library never touches a socket, as in the daemon, where a coroutine moves the
 * bytes. The pipes are the bench's, not the library's, so an OpenSSL connection has a
 * custom BIO (not a BIO_s_mem, which would hold a buffer of its own), a wolfSSL one I/O
 * callbacks, a GnuTLS one push/pull functions.
 *
 * Usage: tls-bench-LIB EC_CERT EC_KEY RSA_CERT RSA_KEY [CONNS]
 * Output: one line per figure, "lib<TAB>metric<TAB>value<TAB>spread", for
 * scripts/bench-tls.sh to put into one table. Rates are the median of ROUNDS rounds, the
 * spread is min..max.
 *
 * Memory is counted two ways. (1) The library's allocator hooks, when it has them, route
 * every allocation through cnt_malloc() below, which tags it with the side (server, client,
 * none) that was running: server bytes are exact requested bytes, whatever the client does.
 * (2) glibc's mallinfo2() before and after, with every client freed, for all libraries: it
 * includes malloc's chunk overhead (and, with hooks, our 16-byte tag per allocation, which
 * is subtracted), and is the only way for GnuTLS 3.7, whose gnutls_global_set_mem_functions
 * has been a no-op since 3.3.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>

#if defined(TLS_OPENSSL)
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#define LIB_NAME "openssl-" OPENSSL_VERSION_STR
#elif defined(TLS_WOLFSSL)
#include <wolfssl/options.h>
#include <wolfssl/ssl.h>
#include <wolfssl/wolfcrypt/aes.h>
#include <wolfssl/wolfcrypt/memory.h>
#define LIB_NAME "wolfssl-" LIBWOLFSSL_VERSION_STRING
#elif defined(TLS_GNUTLS)
#include <gnutls/gnutls.h>
#define LIB_NAME "gnutls-" GNUTLS_VERSION
#else
#error "build with one of -DTLS_OPENSSL -DTLS_WOLFSSL -DTLS_GNUTLS"
#endif

#define ROUNDS      3
#define ROUND_NS    400000000ull   /* each rate round runs this long (wall) */
#define CONNS       2000u          /* idle server connections for the memory figures */
#define MSG_LEN     1024u          /* the "one application record each way" */
#define REC_LEN     16384u         /* records for the throughput figures */
#define PIPE_CAP    (256u * 1024)
#define SAVED_CAP   2048u          /* a client's 1 KiB record, as ciphertext */

/* ------------------------------------------------------------------ counting allocator */

enum side { SIDE_NONE, SIDE_SERVER, SIDE_CLIENT, SIDE_N };

struct tag {                       /* in front of every hooked allocation; 16 bytes */
    size_t size;
    size_t side;
};

#define HIST_MAX    65536u         /* live server allocations by size; larger ones share the last */

static enum side cur_side = SIDE_NONE;
static long long live_bytes[SIDE_N];
static long long live_allocs[SIDE_N];

#if !defined(TLS_GNUTLS)
static long long srv_hist[HIST_MAX + 1];

static void hist_add(const struct tag *t, long long k)
{
    if (t->side == SIDE_SERVER)
        srv_hist[t->size < HIST_MAX ? t->size : HIST_MAX] += k;
}

static void *cnt_malloc(size_t n)
{
    struct tag *t = malloc(sizeof(*t) + n);

    if (!t)
        return NULL;
    t->size = n;
    t->side = cur_side;
    live_bytes[cur_side] += (long long)n;
    live_allocs[cur_side]++;
    hist_add(t, 1);
    return t + 1;
}

static void cnt_free(void *p)
{
    struct tag *t;

    if (!p)
        return;
    t = (struct tag *)p - 1;
    live_bytes[t->side] -= (long long)t->size;
    live_allocs[t->side]--;
    hist_add(t, -1);
    free(t);
}

/* A block keeps the side it was first allocated by. */
static void *cnt_realloc(void *p, size_t n)
{
    struct tag *t, *nt;

    if (!p)
        return cnt_malloc(n);
    t = (struct tag *)p - 1;
    live_bytes[t->side] -= (long long)t->size;
    hist_add(t, -1);
    nt = realloc(t, sizeof(*nt) + n);
    if (!nt) {
        live_bytes[t->side] += (long long)t->size;
        hist_add(t, 1);
        return NULL;
    }
    nt->size = n;
    live_bytes[nt->side] += (long long)n;
    hist_add(nt, 1);
    return nt + 1;
}
#endif

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();

    return mi.uordblks + mi.hblkhd;
}

/* ------------------------------------------------------------------ pipes and clocks */

struct pipe {
    unsigned char buf[PIPE_CAP];
    size_t        off, len;
};

struct end {                       /* one side's view: it reads <in>, writes <out> */
    struct pipe *in, *out;
};

static struct pipe c2s, s2c;
static struct end srv_end = { &c2s, &s2c };
static struct end cli_end = { &s2c, &c2s };

/* Returns the bytes copied, or 0 when the pipe is empty (the library's "want read"). */
static size_t pipe_read(struct pipe *p, void *dst, size_t n)
{
    if (n > p->len - p->off)
        n = p->len - p->off;
    memcpy(dst, p->buf + p->off, n);
    p->off += n;
    if (p->off == p->len)
        p->off = p->len = 0;
    return n;
}

static size_t pipe_write(struct pipe *p, const void *src, size_t n)
{
    if (n > PIPE_CAP - p->len)
        n = PIPE_CAP - p->len;
    memcpy(p->buf + p->len, src, n);
    p->len += n;
    return n;
}

static void pipes_clear(void)
{
    c2s.off = c2s.len = s2c.off = s2c.len = 0;
}

static uint64_t ns_of(clockid_t clk)
{
    struct timespec ts;

    clock_gettime(clk, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    fprintf(stderr, "tls-bench(%s): %s\n", LIB_NAME, what);
#if defined(TLS_OPENSSL)
    ERR_print_errors_fp(stderr);
#endif
    exit(1);
}

/* ------------------------------------------------------------------ library glue
 *
 * Each library provides, with <ctx> and <conn> opaque to the driver:
 *   lib_init()                          global init, allocator hooks
 *   ctx_new(server, cert, key, p)       a context for one side with parameters <p>
 *   conn_new(ctx, server, end)          a connection doing I/O on <end>
 *   conn_handshake(c)                   1 done, 0 wants input, -1 failed
 *   conn_read(c, buf, n)                bytes, 0 wants input, -1 failed
 *   conn_write(c, buf, n)               bytes (all of them), -1 failed
 *   conn_idle(c)                        frees what the library can free while idle
 *   conn_resumed(c)                     1 when the handshake was a resumption
 *   sess_get(c) / sess_set(c, s) / sess_free(s)   the client's ticket
 *   conn_free(c), ctx_free(ctx)
 */
struct bparams {
    int aes256;     /* TLS_AES_256_GCM_SHA384 instead of TLS_AES_128_GCM_SHA256 */
    int p256;       /* key exchange on P-256 instead of X25519 */
    int lean;       /* the library's runtime options to hold less while idle */
};

#if defined(TLS_OPENSSL)

static void *ossl_malloc(size_t n, const char *file, int line)
{
    return cnt_malloc(n);
}

static void *ossl_realloc(void *p, size_t n, const char *file, int line)
{
    return cnt_realloc(p, n);
}

static void ossl_free(void *p, const char *file, int line)
{
    cnt_free(p);
}

static BIO_METHOD *pipe_method;

static int bio_pipe_write(BIO *b, const char *src, int n)
{
    struct end *e = BIO_get_data(b);

    BIO_clear_retry_flags(b);
    return (int)pipe_write(e->out, src, (size_t)n);
}

static int bio_pipe_read(BIO *b, char *dst, int n)
{
    struct end *e = BIO_get_data(b);
    size_t got = pipe_read(e->in, dst, (size_t)n);

    BIO_clear_retry_flags(b);
    if (got == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    return (int)got;
}

static long bio_pipe_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int bio_pipe_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void lib_init(void)
{
    if (!CRYPTO_set_mem_functions(ossl_malloc, ossl_realloc, ossl_free))
        die("CRYPTO_set_mem_functions");
    OPENSSL_init_ssl(0, NULL);
    pipe_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "pipe");
    if (!pipe_method)
        die("BIO_meth_new");
    BIO_meth_set_write(pipe_method, bio_pipe_write);
    BIO_meth_set_read(pipe_method, bio_pipe_read);
    BIO_meth_set_ctrl(pipe_method, bio_pipe_ctrl);
    BIO_meth_set_create(pipe_method, bio_pipe_create);
}

static void *ctx_new(int server, const char *cert, const char *key, const struct bparams *p)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());

    if (!ctx)
        die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (!SSL_CTX_set_ciphersuites(ctx, p->aes256 ? "TLS_AES_256_GCM_SHA384"
                                                 : "TLS_AES_128_GCM_SHA256") ||
        !SSL_CTX_set1_groups_list(ctx, p->p256 ? "P-256" : "X25519"))
        die("ciphersuites/groups");
    if (server) {
        if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
            SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1)
            die("certificate/key");
        /* stateless tickets only: no server-side session cache */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
        if (p->lean)
            SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    }
    return ctx;
}

static void *conn_new(void *ctx, int server, struct end *e)
{
    SSL *s = SSL_new(ctx);
    BIO *b = BIO_new(pipe_method);

    if (!s || !b)
        die("SSL_new/BIO_new");
    BIO_set_data(b, e);
    SSL_set_bio(s, b, b);
    if (server)
        SSL_set_accept_state(s);
    else
        SSL_set_connect_state(s);
    return s;
}

static int conn_handshake(void *c)
{
    int rc = SSL_do_handshake(c);

    if (rc == 1)
        return 1;
    if (SSL_get_error(c, rc) == SSL_ERROR_WANT_READ)
        return 0;
    return -1;
}

static ssize_t conn_read(void *c, void *buf, size_t n)
{
    int rc = SSL_read(c, buf, (int)n);

    if (rc > 0)
        return rc;
    return SSL_get_error(c, rc) == SSL_ERROR_WANT_READ ? 0 : -1;
}

static ssize_t conn_write(void *c, const void *buf, size_t n)
{
    int rc = SSL_write(c, buf, (int)n);

    return rc == (int)n ? rc : -1;
}

static void conn_idle(void *c)
{
    (void)c;   /* SSL_MODE_RELEASE_BUFFERS already frees the record buffers when idle */
}

static int conn_resumed(void *c)
{
    return SSL_session_reused(c);
}

static void *sess_get(void *c)
{
    return SSL_get1_session(c);
}

static void sess_set(void *c, void *s)
{
    if (SSL_set_session(c, s) != 1)
        die("SSL_set_session");
}

static void sess_free(void *s)
{
    SSL_SESSION_free(s);
}

/* Without a close_notify sent, SSL_free() marks the session not resumable; the bench (like
 * a peer that just goes away) does not exchange one. */
static void conn_free(void *c)
{
    SSL_set_shutdown(c, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    SSL_free(c);
}

static void ctx_free(void *ctx)
{
    SSL_CTX_free(ctx);
}

/* What keeping only the traffic keys would cost with OpenSSL's own AES-GCM: two
 * EVP_CIPHER_CTX (seal and open) keyed with AES-128-GCM, counted by the hooks. The first
 * pair warms OpenSSL 3's provider caches, the second is measured. */
static void lib_extra(void)
{
    static const unsigned char key[32], iv[12];
    EVP_CIPHER_CTX *e[4] = { NULL };
    long long before = 0;
    int i, bits;

    for (bits = 128; bits <= 256; bits += 128) {
        for (i = 0; i < 4; i++) {
            if (i == 2)
                before = live_bytes[SIDE_NONE];
            e[i] = EVP_CIPHER_CTX_new();
            if (!e[i] || EVP_CipherInit_ex(e[i], bits == 128 ? EVP_aes_128_gcm()
                                                              : EVP_aes_256_gcm(),
                                           NULL, key, iv, i & 1) != 1)
                die("EVP_CipherInit_ex");
        }
        printf("%s\tevp_aes%d_gcm_ctx_pair_bytes\t%lld\t-\n", LIB_NAME, bits,
               live_bytes[SIDE_NONE] - before);
        for (i = 0; i < 4; i++)
            EVP_CIPHER_CTX_free(e[i]);
    }
}

#elif defined(TLS_WOLFSSL)

static int wolf_group;     /* the client context's key exchange group */

static int wolf_recv(WOLFSSL *ssl, char *buf, int n, void *arg)
{
    struct end *e = arg;
    size_t got = pipe_read(e->in, buf, (size_t)n);

    return got ? (int)got : WOLFSSL_CBIO_ERR_WANT_READ;
}

static int wolf_send(WOLFSSL *ssl, char *buf, int n, void *arg)
{
    struct end *e = arg;

    return (int)pipe_write(e->out, buf, (size_t)n);
}

static void lib_init(void)
{
    if (wolfSSL_SetAllocators(cnt_malloc, cnt_free, cnt_realloc) != 0)
        die("wolfSSL_SetAllocators");
    if (wolfSSL_Init() != WOLFSSL_SUCCESS)
        die("wolfSSL_Init");
}

static void *ctx_new(int server, const char *cert, const char *key, const struct bparams *p)
{
    WOLFSSL_CTX *ctx = wolfSSL_CTX_new(server ? wolfTLSv1_3_server_method()
                                              : wolfTLSv1_3_client_method());
    int group = p->p256 ? WOLFSSL_ECC_SECP256R1 : WOLFSSL_ECC_X25519;

    if (!ctx)
        die("wolfSSL_CTX_new");
    if (wolfSSL_CTX_set_cipher_list(ctx, p->aes256 ? "TLS13-AES256-GCM-SHA384"
                                                   : "TLS13-AES128-GCM-SHA256") != 1 ||
        wolfSSL_CTX_set_groups(ctx, &group, 1) != 1)
        die("cipher list/groups");
    wolfSSL_CTX_SetIORecv(ctx, wolf_recv);
    wolfSSL_CTX_SetIOSend(ctx, wolf_send);
    if (server) {
        if (wolfSSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
            wolfSSL_CTX_use_PrivateKey_file(ctx, key, WOLFSSL_FILETYPE_PEM) != 1)
            die("certificate/key");
        wolfSSL_CTX_set_session_cache_mode(ctx, WOLFSSL_SESS_CACHE_OFF);
    } else {
        wolfSSL_CTX_set_verify(ctx, WOLFSSL_VERIFY_NONE, NULL);
        wolf_group = group;
    }
    return ctx;
}

static void *conn_new(void *ctx, int server, struct end *e)
{
    WOLFSSL *s = wolfSSL_new(ctx);

    if (!s)
        die("wolfSSL_new");
    wolfSSL_SetIOReadCtx(s, e);
    wolfSSL_SetIOWriteCtx(s, e);
    /* one key share, in the configured group: no HelloRetryRequest */
    if (!server && wolfSSL_UseKeyShare(s, (word16)wolf_group) != WOLFSSL_SUCCESS)
        die("wolfSSL_UseKeyShare");
    return s;
}

static int conn_handshake(void *c)
{
    int rc = wolfSSL_GetSide(c) == WOLFSSL_SERVER_END ? wolfSSL_accept(c)
                                                        : wolfSSL_connect(c);

    if (rc == WOLFSSL_SUCCESS)
        return 1;
    return wolfSSL_get_error(c, rc) == WOLFSSL_ERROR_WANT_READ ? 0 : -1;
}

static ssize_t conn_read(void *c, void *buf, size_t n)
{
    int rc = wolfSSL_read(c, buf, (int)n);

    if (rc > 0)
        return rc;
    return wolfSSL_get_error(c, rc) == WOLFSSL_ERROR_WANT_READ ? 0 : -1;
}

static ssize_t conn_write(void *c, const void *buf, size_t n)
{
    int rc = wolfSSL_write(c, buf, (int)n);

    return rc == (int)n ? rc : -1;
}

static void conn_idle(void *c)
{
    /* The only runtime call: the handshake's arrays (normally already freed with the
     * other handshake resources unless wolfSSL_KeepArrays() was called). */
    wolfSSL_FreeArrays(c);
}

static int conn_resumed(void *c)
{
    return wolfSSL_session_reused(c);
}

static void *sess_get(void *c)
{
    return wolfSSL_get1_session(c);
}

static void sess_set(void *c, void *s)
{
    if (wolfSSL_set_session(c, s) != WOLFSSL_SUCCESS)
        die("wolfSSL_set_session");
}

static void sess_free(void *s)
{
    wolfSSL_SESSION_free(s);
}

static void conn_free(void *c)
{
    wolfSSL_free(c);
}

static void ctx_free(void *ctx)
{
    wolfSSL_CTX_free(ctx);
}

static void lib_extra(void)
{
    /* wolfCrypt's AES context (with GCM's H table) is a plain struct: one per direction */
    printf("%s\taes_gcm_ctx_pair_bytes\t%zu\t-\n", LIB_NAME, 2 * sizeof(Aes));
}

#elif defined(TLS_GNUTLS)

struct gctx {
    gnutls_certificate_credentials_t cred;
    gnutls_priority_t                prio;
    gnutls_datum_t                   ticket_key;   /* server only */
    int                              server;
};

static ssize_t gnu_pull(gnutls_transport_ptr_t arg, void *buf, size_t n)
{
    struct end *e = arg;
    size_t got = pipe_read(e->in, buf, n);

    if (got)
        return (ssize_t)got;
    errno = EAGAIN;
    return -1;
}

static ssize_t gnu_push(gnutls_transport_ptr_t arg, const void *buf, size_t n)
{
    struct end *e = arg;

    return (ssize_t)pipe_write(e->out, buf, n);
}

static int gnu_pull_timeout(gnutls_transport_ptr_t arg, unsigned int ms)
{
    struct end *e = arg;

    return e->in->len > e->in->off;
}

static void lib_init(void)
{
    if (gnutls_global_init() < 0)
        die("gnutls_global_init");
}

static void *ctx_new(int server, const char *cert, const char *key, const struct bparams *p)
{
    struct gctx *g = calloc(1, sizeof(*g));
    char prio[256];

    if (!g)
        die("calloc");
    g->server = server;
    snprintf(prio, sizeof(prio),
             "NORMAL:-VERS-ALL:+VERS-TLS1.3:-GROUP-ALL:+GROUP-%s:-CIPHER-ALL:+%s",
             p->p256 ? "SECP256R1" : "X25519", p->aes256 ? "AES-256-GCM" : "AES-128-GCM");
    if (gnutls_certificate_allocate_credentials(&g->cred) < 0 ||
        gnutls_priority_init2(&g->prio, prio, NULL, 0) < 0)
        die("credentials/priority");
    if (server) {
        if (gnutls_certificate_set_x509_key_file2(g->cred, cert, key, GNUTLS_X509_FMT_PEM,
                                                  NULL, 0) < 0 ||
            gnutls_session_ticket_key_generate(&g->ticket_key) < 0)
            die("certificate/key/ticket key");
    }
    return g;
}

static void *conn_new(void *ctx, int server, struct end *e)
{
    struct gctx *g = ctx;
    gnutls_session_t s;

    if (gnutls_init(&s, server ? GNUTLS_SERVER : GNUTLS_CLIENT) < 0 ||
        gnutls_priority_set(s, g->prio) < 0 ||
        gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, g->cred) < 0)
        die("gnutls_init");
    if (server && gnutls_session_ticket_enable_server(s, &g->ticket_key) < 0)
        die("gnutls_session_ticket_enable_server");
    gnutls_transport_set_ptr(s, e);
    gnutls_transport_set_pull_function(s, gnu_pull);
    gnutls_transport_set_push_function(s, gnu_push);
    gnutls_transport_set_pull_timeout_function(s, gnu_pull_timeout);
    return s;
}

static int conn_handshake(void *c)
{
    int rc = gnutls_handshake(c);

    if (rc == 0)
        return 1;
    return rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED ? 0 : -1;
}

/* gnutls_record_recv() returns GNUTLS_E_AGAIN after a post-handshake message (a ticket)
 * even when a record follows in the input: try again while there is input. */
static ssize_t conn_read(void *c, void *buf, size_t n)
{
    struct end *e = gnutls_transport_get_ptr(c);
    ssize_t rc;

    do
        rc = gnutls_record_recv(c, buf, n);
    while ((rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED) && e->in->len > e->in->off);
    if (rc > 0)
        return rc;
    return rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED ? 0 : -1;
}

static ssize_t conn_write(void *c, const void *buf, size_t n)
{
    ssize_t rc = gnutls_record_send(c, buf, n);

    return rc == (ssize_t)n ? rc : -1;
}

static void conn_idle(void *c)
{
    (void)c;   /* no runtime knob */
}

static int conn_resumed(void *c)
{
    return gnutls_session_is_resumed(c);
}

static void *sess_get(void *c)
{
    gnutls_datum_t *d = calloc(1, sizeof(*d));

    if (!d || gnutls_session_get_data2(c, d) < 0)
        die("gnutls_session_get_data2");
    return d;
}

static void sess_set(void *c, void *s)
{
    gnutls_datum_t *d = s;

    if (gnutls_session_set_data(c, d->data, d->size) < 0)
        die("gnutls_session_set_data");
}

static void sess_free(void *s)
{
    gnutls_datum_t *d = s;

    if (d)
        gnutls_free(d->data);
    free(d);
}

static void conn_free(void *c)
{
    gnutls_deinit(c);
}

static void ctx_free(void *ctx)
{
    struct gctx *g = ctx;

    gnutls_certificate_free_credentials(g->cred);
    gnutls_priority_deinit(g->prio);
    if (g->server)
        gnutls_free(g->ticket_key.data);
    free(g);
}

static void lib_extra(void)
{
}

#endif

/* ------------------------------------------------------------------ driver */

static uint64_t srv_cpu_ns;        /* server-side CPU accumulated by the timed steps */

/* Runs one step of <c> as side <sd>, charging the server's CPU time to srv_cpu_ns. */
#define STEP(sd, call) ({                                               \
    uint64_t t0_ = (sd) == SIDE_SERVER ? ns_of(CLOCK_THREAD_CPUTIME_ID) : 0; \
    __typeof__(call) r_;                                                \
    cur_side = (sd);                                                    \
    r_ = (call);                                                        \
    cur_side = SIDE_NONE;                                               \
    if ((sd) == SIDE_SERVER)                                            \
        srv_cpu_ns += ns_of(CLOCK_THREAD_CPUTIME_ID) - t0_;             \
    r_; })

static void handshake(void *s, void *c)
{
    int sd = 0, cd = 0, rounds;

    for (rounds = 0; !(sd && cd); rounds++) {
        if (rounds > 16)
            die("handshake does not finish");
        if (!cd && (cd = STEP(SIDE_CLIENT, conn_handshake(c))) < 0)
            die("client handshake failed");
        if (!sd && (sd = STEP(SIDE_SERVER, conn_handshake(s))) < 0)
            die("server handshake failed");
    }
}

/* The client reads what the server sent after the handshake (TLS 1.3 tickets). */
static void client_drain(void *c)
{
    unsigned char b[64];

    if (STEP(SIDE_CLIENT, conn_read(c, b, sizeof(b))) != 0)
        die("unexpected data or error after the handshake");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static void report(const char *metric, double v[ROUNDS])
{
    qsort(v, ROUNDS, sizeof(v[0]), cmp_double);
    printf("%s\t%s\t%.0f\t%.0f..%.0f\n", LIB_NAME, metric, v[ROUNDS / 2], v[0],
           v[ROUNDS - 1]);
    fflush(stdout);
}

/* Full (or, with <resume>, resumed) handshakes, each a new server and client connection,
 * for ROUND_NS of wall time per round. Reports the server's handshakes per CPU-second and
 * pairs per wall-second (both sides on one core). */
static void bench_handshakes(const char *name, const char *cert, const char *key,
                             const struct bparams *p, int resume)
{
    void *sctx = ctx_new(1, cert, key, p), *cctx = ctx_new(0, NULL, NULL, p);
    void *sess = NULL, *s, *c;
    double per_cpu[ROUNDS], per_wall[ROUNDS];
    char metric[96];
    uint64_t t0, n;
    int r;

    if (resume) {              /* one full handshake to get a ticket */
        s = conn_new(sctx, 1, &srv_end);
        c = conn_new(cctx, 0, &cli_end);
        handshake(s, c);
        client_drain(c);
        sess = sess_get(c);
        conn_free(c);
        conn_free(s);
        pipes_clear();
    }
    for (r = 0; r < ROUNDS; r++) {
        srv_cpu_ns = 0;
        t0 = ns_of(CLOCK_MONOTONIC);
        for (n = 0; ns_of(CLOCK_MONOTONIC) - t0 < ROUND_NS; n++) {
            s = STEP(SIDE_SERVER, conn_new(sctx, 1, &srv_end));
            c = conn_new(cctx, 0, &cli_end);
            if (sess)
                sess_set(c, sess);
            handshake(s, c);
            if (conn_resumed(s) != resume)
                die(resume ? "not resumed" : "resumed unexpectedly");
            conn_free(c);
            STEP(SIDE_SERVER, (conn_free(s), 0));
            pipes_clear();
        }
        per_cpu[r] = (double)n * 1e9 / (double)srv_cpu_ns;
        per_wall[r] = (double)n * 1e9 / (double)(ns_of(CLOCK_MONOTONIC) - t0);
    }
    snprintf(metric, sizeof(metric), "%s_server_hs_per_cpu_s", name);
    report(metric, per_cpu);
    snprintf(metric, sizeof(metric), "%s_pair_hs_per_s", name);
    report(metric, per_wall);
    if (sess)
        sess_free(sess);
    ctx_free(cctx);
    ctx_free(sctx);
}

/* 16 KiB records from server to client: MB/s (10^6) of plaintext per CPU-second, sealing
 * (the server's writes) and opening (the client's reads) timed apart. */
static void bench_records(const char *name, const char *cert, const char *key,
                          const struct bparams *p)
{
    static unsigned char msg[REC_LEN], got[REC_LEN];
    void *sctx = ctx_new(1, cert, key, p), *cctx = ctx_new(0, NULL, NULL, p);
    void *s = conn_new(sctx, 1, &srv_end), *c = conn_new(cctx, 0, &cli_end);
    double seal[ROUNDS], open[ROUNDS];
    uint64_t t0, ts, tc, seal_ns, open_ns, n;
    char metric[96];
    ssize_t k;
    size_t have;
    int r;

    handshake(s, c);
    client_drain(c);
    memset(msg, 0x5a, sizeof(msg));
    for (r = 0; r < ROUNDS; r++) {
        seal_ns = open_ns = 0;
        t0 = ns_of(CLOCK_MONOTONIC);
        for (n = 0; ns_of(CLOCK_MONOTONIC) - t0 < ROUND_NS; n++) {
            ts = ns_of(CLOCK_THREAD_CPUTIME_ID);
            if (conn_write(s, msg, REC_LEN) < 0)
                die("record write");
            tc = ns_of(CLOCK_THREAD_CPUTIME_ID);
            for (have = 0; have < REC_LEN; have += (size_t)k)
                if ((k = conn_read(c, got + have, REC_LEN - have)) <= 0)
                    die("record read");
            open_ns += ns_of(CLOCK_THREAD_CPUTIME_ID) - tc;
            seal_ns += tc - ts;
        }
        seal[r] = (double)n * REC_LEN * 1e3 / (double)seal_ns;
        open[r] = (double)n * REC_LEN * 1e3 / (double)open_ns;
    }
    snprintf(metric, sizeof(metric), "%s_seal_MB_s", name);
    report(metric, seal);
    snprintf(metric, sizeof(metric), "%s_open_MB_s", name);
    report(metric, open);
    conn_free(c);
    conn_free(s);
    ctx_free(cctx);
    ctx_free(sctx);
    pipes_clear();
}

static void print_mem(const char *mode, const char *when, long long bytes, long long allocs,
                      long long heap, unsigned int n)
{
#if !defined(TLS_GNUTLS)     /* no allocator hooks: mallinfo2() only */
    printf("%s\tmem_%s_%s_hooked_B\t%lld\t-\n", LIB_NAME, mode, when, bytes / n);
    printf("%s\tmem_%s_%s_allocs\t%.1f\t-\n", LIB_NAME, mode, when, (double)allocs / n);
#endif
    printf("%s\tmem_%s_%s_mallinfo_B\t%lld\t-\n", LIB_NAME, mode, when, heap / n);
    fflush(stdout);
}

/* The live server allocations that every connection holds (at least <n> of a size), with
 * how many per connection: the field by field view of the idle figure. */
static void print_sizes(const char *mode, unsigned int n)
{
#if !defined(TLS_GNUTLS)
    unsigned int sz;

    printf("%s\tsizes_%s\t", LIB_NAME, mode);
    for (sz = 0; sz <= HIST_MAX; sz++)
        if (srv_hist[sz] >= (long long)n)
            printf(" %u%s%s", sz, sz == HIST_MAX ? "+" : "",
                   srv_hist[sz] >= 2 * (long long)n ? "x2" : "");
    printf("\t-\n");
#endif
}

/* <n> idle server connections (ECDSA P-256, X25519, AES-128-GCM), every client freed: the
 * server's live heap per connection right after the handshake, after conn_idle(), and after
 * one 1 KiB record each way (the client's, written before it was freed, saved as bytes). */
static void bench_memory(const char *cert, const char *key, unsigned int n, int lean)
{
    static unsigned char msg[MSG_LEN];
    const char *mode = lean ? "lean" : "default";
    struct bparams p = { .lean = lean };
    void *sctx = ctx_new(1, cert, key, &p), *cctx = ctx_new(0, NULL, NULL, &p);
    void **srv = calloc(n, sizeof(*srv));
    unsigned char *saved = malloc((size_t)n * SAVED_CAP);
    size_t *saved_len = calloc(n, sizeof(*saved_len));
    long long b0, a0, tag_bytes;
    size_t h0;
    unsigned int i;
    void *c;

    if (!srv || !saved || !saved_len)
        die("out of memory");
    memset(saved, 0, (size_t)n * SAVED_CAP);   /* touched now, not counted later */
    memset(msg, 0x5a, sizeof(msg));
    malloc_trim(0);
    b0 = live_bytes[SIDE_SERVER];
    a0 = live_allocs[SIDE_SERVER];
    h0 = heap_in_use();
    for (i = 0; i < n; i++) {
        srv[i] = STEP(SIDE_SERVER, conn_new(sctx, 1, &srv_end));
        c = conn_new(cctx, 0, &cli_end);
        handshake(srv[i], c);
        if (STEP(SIDE_CLIENT, conn_write(c, msg, MSG_LEN)) < 0 || c2s.len > SAVED_CAP)
            die("client write");
        memcpy(saved + (size_t)i * SAVED_CAP, c2s.buf, c2s.len);
        saved_len[i] = c2s.len;
        STEP(SIDE_CLIENT, (conn_free(c), 0));
        pipes_clear();
    }
#define MEM(when) do {                                                          \
        tag_bytes = (live_allocs[SIDE_SERVER] + live_allocs[SIDE_NONE] -       \
                     a0) * (long long)sizeof(struct tag);                       \
        print_mem(mode, when, live_bytes[SIDE_SERVER] - b0,                     \
                  live_allocs[SIDE_SERVER] - a0,                                \
                  (long long)heap_in_use() - (long long)h0 - tag_bytes, n);    \
    } while (0)
    a0 += live_allocs[SIDE_NONE];
    MEM("handshake");
    if (lean) {
        for (i = 0; i < n; i++)
            STEP(SIDE_SERVER, (conn_idle(srv[i]), 0));
        MEM("idle");
    }
    for (i = 0; i < n; i++) {
        unsigned char got[MSG_LEN];
        size_t have;
        ssize_t k;

        pipe_write(&c2s, saved + (size_t)i * SAVED_CAP, saved_len[i]);
        for (have = 0; have < MSG_LEN; have += (size_t)k)
            if ((k = STEP(SIDE_SERVER, conn_read(srv[i], got + have, MSG_LEN - have))) <= 0)
                die("server read");
        if (STEP(SIDE_SERVER, conn_write(srv[i], msg, MSG_LEN)) < 0)
            die("server write");
        if (lean)
            STEP(SIDE_SERVER, (conn_idle(srv[i]), 0));
        pipes_clear();
    }
    MEM("1KiB");
#undef MEM
    print_sizes(mode, n);
    for (i = 0; i < n; i++)
        STEP(SIDE_SERVER, (conn_free(srv[i]), 0));
    ctx_free(cctx);
    ctx_free(sctx);
    free(saved_len);
    free(saved);
    free(srv);
}

int main(int argc, char **argv)
{
    struct bparams def = { 0 }, p256 = { .p256 = 1 }, a256 = { .aes256 = 1 };
    unsigned int n = CONNS;

    if (argc < 5) {
        fprintf(stderr, "usage: %s EC_CERT EC_KEY RSA_CERT RSA_KEY [CONNS]\n", argv[0]);
        return 2;
    }
    if (argc > 5)
        n = (unsigned int)strtoul(argv[5], NULL, 10);
    if (n == 0)
        n = 1;
    lib_init();
    lib_extra();
    bench_memory(argv[1], argv[2], n, 0);
    bench_memory(argv[1], argv[2], n, 1);
    bench_handshakes("full_ecdsa_x25519", argv[1], argv[2], &def, 0);
    bench_handshakes("full_rsa2048_x25519", argv[3], argv[4], &def, 0);
    bench_handshakes("full_ecdsa_p256", argv[1], argv[2], &p256, 0);
    bench_handshakes("resumed_ecdsa_x25519", argv[1], argv[2], &def, 1);
    bench_records("aes128gcm_16k", argv[1], argv[2], &def);
    bench_records("aes256gcm_16k", argv[1], argv[2], &a256);
    return 0;
}
