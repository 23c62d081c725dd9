/* loadgen/lg_tls.c — the loadgen's TLS contexts (see lg_tls.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/tls.h"
#include "lg_tls.h"

#define SID_CTX "corogate-loadgen"

int lg_tls_parse_version(const char *s)
{
    if (strcmp(s, "1.2") == 0)
        return TLS1_2_VERSION;
    if (strcmp(s, "1.3") == 0)
        return TLS1_3_VERSION;
    return -EINVAL;
}

/* "<what>: <OpenSSL's reason>" into <err>; empties OpenSSL's error queue. */
static void ssl_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void ssl_fail(char *err, size_t errlen, const char *fmt, ...)
{
    unsigned long e = ERR_peek_last_error();
    const char *reason = e ? ERR_reason_error_string(e) : NULL;
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < errlen)
        snprintf(err + n, errlen - (size_t)n, ": %s", reason ? reason : "failed");
    ERR_clear_error();
}

/* "h2,http/1.1" into ALPN's wire format (length-prefixed names) in <out>. Returns the
 * length, or -EINVAL for an empty name, one over 255 bytes, or too long a list. */
static int alpn_wire(const char *list, unsigned char *out, size_t cap)
{
    const char *p = list, *end;
    size_t n = 0, len;

    for (;;) {
        end = strchr(p, ',');
        len = end ? (size_t)(end - p) : strlen(p);
        if (len == 0 || len > 255 || n + 1 + len > cap)
            return -EINVAL;
        out[n++] = (unsigned char)len;
        memcpy(out + n, p, len);
        n += len;
        if (!end)
            return (int)n;
        p = end + 1;
    }
}

struct ssl_session_st *lg_tls_session_keep(struct ssl_session_st *s)
{
    const unsigned char *in;
    unsigned char *der = NULL;
    SSL_SESSION *copy = NULL;
    int n;

    if (!s || SSL_SESSION_is_resumable(s))
        return s;
    n = i2d_SSL_SESSION(s, &der);
    if (n > 0) {
        in = der;
        copy = d2i_SSL_SESSION(NULL, &in, n);
    }
    OPENSSL_free(der);
    SSL_SESSION_free(s);
    ERR_clear_error();
    return copy;
}

struct ssl_ctx_st *lg_tls_ctx_new(int server, const struct lg_tls_opts *o, char *err,
                                  size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    unsigned char alpn[512];
    int n;

    if (!ctx) {
        ssl_fail(err, errlen, "SSL_CTX_new()");
        return NULL;
    }
    /* Our record layer speaks TLS 1.2 and 1.3 only. */
    if (!SSL_CTX_set_min_proto_version(ctx, o->version ? o->version : TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(ctx, o->version ? o->version : TLS1_3_VERSION)) {
        ssl_fail(err, errlen, "--tls-version");
        goto out_ctx;
    }
    if (o->ciphers && !SSL_CTX_set_cipher_list(ctx, o->ciphers)) {
        ssl_fail(err, errlen, "--tls-ciphers '%s'", o->ciphers);
        goto out_ctx;
    }
    if (o->ciphersuites && !SSL_CTX_set_ciphersuites(ctx, o->ciphersuites)) {
        ssl_fail(err, errlen, "--tls-ciphersuites '%s'", o->ciphersuites);
        goto out_ctx;
    }
    if (o->cert) {
        if (!SSL_CTX_use_certificate_chain_file(ctx, o->cert)) {
            ssl_fail(err, errlen, "--tls-cert %s", o->cert);
            goto out_ctx;
        }
        if (!SSL_CTX_use_PrivateKey_file(ctx, o->key, SSL_FILETYPE_PEM)) {
            ssl_fail(err, errlen, "--tls-key %s", o->key);
            goto out_ctx;
        }
        if (!SSL_CTX_check_private_key(ctx)) {
            ssl_fail(err, errlen, "--tls-key %s does not match --tls-cert %s", o->key,
                     o->cert);
            goto out_ctx;
        }
    }
    if (o->ca) {
        if (!SSL_CTX_load_verify_locations(ctx, o->ca, NULL)) {
            ssl_fail(err, errlen, "%s %s", server ? "--tls-client-ca" : "--tls-verify", o->ca);
            goto out_ctx;
        }
        if (server) {
            STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca);

            if (!names) {
                ssl_fail(err, errlen, "--tls-client-ca %s: no certificate names", o->ca);
                goto out_ctx;
            }
            SSL_CTX_set_client_CA_list(ctx, names);     /* takes <names> */
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        } else {
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        }
    } else if (!server) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);   /* a load tool: trust anyone */
    }
    if (server) {
        /* Resumed sessions must carry the same context, or OpenSSL refuses them when
         * client certificates are verified. */
        SSL_CTX_set_session_id_context(ctx, (const unsigned char *)SID_CTX,
                                       sizeof(SID_CTX) - 1);
    } else {
        /* Sessions are kept by the caller (one ticket per thread), not in the context. */
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
                                            SSL_SESS_CACHE_NO_INTERNAL_STORE);
    }
    if (o->alpn && !server) {
        n = alpn_wire(o->alpn, alpn, sizeof(alpn));
        if (n < 0) {
            snprintf(err, errlen, "--alpn '%s': expected names of 1..255 bytes, "
                     "comma-separated", o->alpn);
            goto out_ctx;
        }
        if (SSL_CTX_set_alpn_protos(ctx, alpn, (unsigned)n) != 0) {   /* 0 is success */
            ssl_fail(err, errlen, "--alpn '%s'", o->alpn);
            goto out_ctx;
        }
    }
    if (cg_tls_ctx_prepare(ctx, server, err, errlen) < 0)
        goto out_ctx;
    return ctx;

out_ctx:
    SSL_CTX_free(ctx);
    return NULL;
}
