/* loadgen/lg_tls.h — the loadgen's TLS contexts, from its command-line options.
 *
 * One SSL_CTX per process for `run` (client) and for `serve` (server), prepared with
 * cg_tls_ctx_prepare() (common/tls.h): the handshakes themselves are common/tls.c's, after
 * which the coroutine streams carry plaintext and the traffic code does not know TLS is
 * there.
 */
#ifndef LG_TLS_H
#define LG_TLS_H

#include <stddef.h>

struct ssl_ctx_st;
struct ssl_session_st;

/* What the command line says about TLS; every string borrowed from argv. */
struct lg_tls_opts {
    int         version;        /* 0: TLS 1.2 and 1.3; or TLS1_2_VERSION, TLS1_3_VERSION */
    const char *ciphers;        /* TLS 1.2 cipher list (OpenSSL syntax); NULL: the default */
    const char *ciphersuites;   /* TLS 1.3 ciphersuites; NULL: the default */
    const char *alpn;           /* client: "h2,http/1.1" offered; NULL: no ALPN */
    const char *cert;           /* PEM chain: the server's, or the client's (mTLS) */
    const char *key;            /* its PEM private key */
    const char *ca;             /* client: verify the server against this CA file;
                                 * server: require client certificates signed by it */
};

/* Parses "1.2" or "1.3" for --tls-version. Returns TLS1_2_VERSION, TLS1_3_VERSION, or
 * -EINVAL. */
int lg_tls_parse_version(const char *s);

/* Makes the process's context, client (<server> 0) or server side, from <o>, and prepares
 * it with cg_tls_ctx_prepare(). Returns it (the caller frees it with SSL_CTX_free()), or
 * NULL with a sentence naming the failed option in <err> (a file that cannot be read, a
 * key that does not match the certificate, a cipher list with nothing usable). */
struct ssl_ctx_st *lg_tls_ctx_new(int server, const struct lg_tls_opts *o, char *err,
                                  size_t errlen);

/* Takes a reference to <s> (a client session from cg_tls_connect(), NULL-safe) and
 * returns a session to offer next time: <s> itself when OpenSSL still holds it resumable;
 * otherwise a copy made by an encode/decode round trip (the encoding does not carry
 * OpenSSL's "not resumable" mark), and the reference to <s> is dropped. Returns NULL
 * when out of memory.
 *
 * Why: OpenSSL's client uses a TLS 1.3 session once (RFC 8446, C.4: clients should not
 * reuse a ticket) and marks it not resumable as soon as a handshake resumed it; --tls-resume
 * offers the thread's last ticket on every connection, several at once, as a load tool
 * measuring a server's resumption should. A server enforcing single use answers those
 * with full handshakes, which the report counts. */
struct ssl_session_st *lg_tls_session_keep(struct ssl_session_st *s);

#endif
