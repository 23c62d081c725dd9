/* gateway/core/tls.c — the OpenSSL contexts of a configuration, the ticket keys, and the
 * handshakes of listeners and upstreams (core/tls.h). */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "common/tls.h"
#include "core/tls.h"
#include "base/counters.h"

_Static_assert(CG_TLS_FAIL_COUNT == CG_TLS_FAILS, "counters.h sizes tls_fail[] by it");

#define TICKET_ROTATE_S   3600      /* our own keys: a new one every hour */
#define TICKET_KEYS_MAX   8         /* from a file: the first seals, all of them open */
#define SESSION_LIFETIME  7200      /* the ticket lifetime hint, seconds */

/* ------------------------------------------------------------------ ticket keys */

/* One ticket key, nginx's layout of a key file's 80 (or 48) bytes: name, HMAC key, AES key
 * (AES-256-CBC with 32-byte keys, AES-128-CBC with 16). */
struct ticket_key {
    unsigned char name[16];
    unsigned char hmac[32];
    unsigned char aes[32];
    unsigned      keylen;       /* 32 or 16 */
};

struct ticket_keys {
    pthread_rwlock_t  lock;
    struct ticket_key key[TICKET_KEYS_MAX];
    unsigned          n;
    time_t            rotated_at;   /* 0: from a file, never rotated */
};

/* Our own keys, one store for every listener without a file and for the life of the
 * process: a reload does not cut the tickets already issued. */
static struct ticket_keys own_keys = { .lock = PTHREAD_RWLOCK_INITIALIZER };

static int ticket_key_random(struct ticket_key *k)
{
    k->keylen = 32;
    return RAND_bytes(k->name, sizeof(k->name)) == 1 &&
           RAND_bytes(k->hmac, sizeof(k->hmac)) == 1 &&
           RAND_bytes(k->aes, sizeof(k->aes)) == 1 ? 0 : -1;
}

/* Our store: the first key at the first use, a new first key every TICKET_ROTATE_S, the
 * two before it kept for opening. Takes the write lock; the caller holds none. */
static void own_keys_rotate(time_t now)
{
    struct ticket_key k;

    pthread_rwlock_wrlock(&own_keys.lock);
    if (own_keys.n == 0 || now - own_keys.rotated_at >= TICKET_ROTATE_S) {
        if (ticket_key_random(&k) == 0) {
            memmove(&own_keys.key[1], &own_keys.key[0], 2 * sizeof(k));
            own_keys.key[0] = k;
            own_keys.n = own_keys.n < 3 ? own_keys.n + 1 : 3;
            own_keys.rotated_at = now;
        }
    }
    pthread_rwlock_unlock(&own_keys.lock);
}

static int ticket_set_mac(EVP_MAC_CTX *hctx, const struct ticket_key *k)
{
    OSSL_PARAM params[3];

    params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, (void *)k->hmac,
                                                  k->keylen);
    params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0);
    params[2] = OSSL_PARAM_construct_end();
    return EVP_MAC_CTX_set_params(hctx, params);
}

static int ticket_ex_index = -1;

/* OpenSSL's ticket callback: seal with the first key; open with any key of the store (2:
 * and ask for a new ticket when it was not the first), or no resumption (0). */
static int ticket_cb(SSL *ssl, unsigned char name[16], unsigned char *iv,
                     EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
    struct ticket_keys *tk = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ticket_ex_index);
    const struct ticket_key *k = NULL;
    struct ticket_key copy;
    time_t now = time(NULL);
    unsigned i;
    int first = 0;

    if (!tk)
        return enc ? -1 : 0;
    pthread_rwlock_rdlock(&tk->lock);
    if (tk == &own_keys && (tk->n == 0 || now - tk->rotated_at >= TICKET_ROTATE_S)) {
        pthread_rwlock_unlock(&tk->lock);
        own_keys_rotate(now);           /* checks again under the write lock */
        pthread_rwlock_rdlock(&tk->lock);
    }
    if (enc) {
        if (tk->n)
            k = &tk->key[0];
    } else {
        for (i = 0; i < tk->n && !k; i++)
            if (memcmp(tk->key[i].name, name, 16) == 0) {
                k = &tk->key[i];
                first = i == 0;
            }
    }
    if (k)
        copy = *k;
    pthread_rwlock_unlock(&tk->lock);
    if (!k)
        return enc ? -1 : 0;
    if (enc) {
        memcpy(name, copy.name, 16);
        if (RAND_bytes(iv, 16) != 1 ||
            EVP_EncryptInit_ex(cctx, copy.keylen == 32 ? EVP_aes_256_cbc() : EVP_aes_128_cbc(),
                               NULL, copy.aes, iv) != 1 ||
            ticket_set_mac(hctx, &copy) != 1)
            return -1;
        return 1;
    }
    if (EVP_DecryptInit_ex(cctx, copy.keylen == 32 ? EVP_aes_256_cbc() : EVP_aes_128_cbc(),
                           NULL, copy.aes, iv) != 1 ||
        ticket_set_mac(hctx, &copy) != 1)
        return -1;
    OPENSSL_cleanse(&copy, sizeof(copy));
    return first ? 1 : 2;
}

/* ------------------------------------------------------------------ errors */

struct builder {
    const struct cg_config *cfg;
    struct cg_errors       *errs;
    const char             *label;     /* "listener NAME" */
    const struct cg_tls_conf *t;
    int                     failed;
};

/* "FILE:LINE: [SECTION] KEY: <fmt>" plus OpenSSL's first queued reason, if any. */
static void __attribute__((format(printf, 4, 5)))
berr(struct builder *b, enum cg_tls_line which, const char *key, const char *fmt, ...)
{
    char msg[512], ossl[256] = "";
    unsigned long e = ERR_peek_last_error();
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (e) {
        ERR_error_string_n(e, ossl, sizeof(ossl));
        ERR_clear_error();
    }
    cg_errors_add(b->errs, "%s:%u: [%s] %s: %s%s%s", b->cfg->path, b->t->line[which],
                  b->label, key, msg, *ossl ? " (" : "", *ossl ? ossl : "");
    b->failed = 1;
}

/* ------------------------------------------------------------------ the set */

/* The AEAD suites counted apart (tls_cipher[]); the last slot is every other. */
static const char *const cipher_names[CG_TLS_CIPHERS] = {
    "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256",
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305", "other",
};

const char *cg_tls_cipher_label(unsigned i)
{
    return i < CG_TLS_CIPHERS ? cipher_names[i] : "?";
}

const char *cg_tls_fail_label(unsigned i)
{
    return i < CG_TLS_FAILS ? cg_tls_fail_name((enum cg_tls_fail)i) : "?";
}

unsigned cg_tls_cipher_slot(const char *name)
{
    unsigned i;

    for (i = 0; name && i < CG_TLS_CIPHERS - 1; i++)
        if (strcmp(cipher_names[i], name) == 0)
            return i;
    return CG_TLS_CIPHERS - 1;
}

struct cert {
    SSL_CTX *ctx;
    char    *file;
    char    *names;             /* DNS names, blank-separated, lowercase */
    char    *subject;
    time_t   not_after;
};

struct tls_listener {
    struct cert        *certs;
    size_t              ncerts;
    unsigned char      *alpn;   /* wire format (length-prefixed), NULL: no ALPN */
    unsigned            alpn_len;
    struct ticket_keys *keys;   /* &own_keys or its own (from a file) */
    int                 own_keys_file;
};

struct tls_upstream {
    SSL_CTX *ctx;
};

struct cg_tls_set {
    struct tls_listener *l;     /* by listener index; ncerts 0: no TLS */
    size_t               nl;
    struct tls_upstream *u;     /* by upstream index; ctx NULL: no TLS */
    size_t               nu;
};

/* 1 when <name> (lowercase) is matched by the certificate name <pat>: equal, or "*.rest"
 * for a name of one more label ending in ".rest". */
static int name_matches(const char *pat, size_t plen, const char *name)
{
    const char *dot;

    if (strlen(name) == plen && strncasecmp(pat, name, plen) == 0)
        return 1;
    if (plen > 2 && pat[0] == '*' && pat[1] == '.') {
        dot = strchr(name, '.');
        return dot && dot != name && strlen(dot) == plen - 1 &&
               strncasecmp(dot, pat + 1, plen - 1) == 0;
    }
    return 0;
}

/* The certificate for <name>: an exact name first, then a wildcard, else the first. */
static const struct cert *cert_for(const struct tls_listener *tl, const char *name)
{
    const char *p;
    size_t i, n;
    int pass;

    for (pass = 0; name && pass < 2; pass++)
        for (i = 0; i < tl->ncerts; i++)
            for (p = tl->certs[i].names; *p; p += n) {
                p += strspn(p, " ");
                n = strcspn(p, " ");
                if (n && (pass == 0 ? p[0] != '*' : p[0] == '*') && name_matches(p, n, name))
                    return &tl->certs[i];
            }
    return &tl->certs[0];
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    const struct tls_listener *tl = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    const struct cert *c;

    if (!name || tl->ncerts < 2)
        return SSL_TLSEXT_ERR_OK;
    c = cert_for(tl, name);
    if (c->ctx != SSL_get_SSL_CTX(ssl) && !SSL_set_SSL_CTX(ssl, c->ctx)) {
        *alert = SSL_AD_INTERNAL_ERROR;
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    }
    return SSL_TLSEXT_ERR_OK;
}

/* ALPN (RFC 7301): the first of our protocols the client offers; none in common is a
 * no_application_protocol alert, as §3.2 asks. */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    const struct tls_listener *tl = arg;
    unsigned char *sel;

    if (!tl->alpn)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_select_next_proto(&sel, outlen, tl->alpn, tl->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

/* "h2, http/1.1" -> wire format. Returns 0 or -1 (ENOMEM). */
static int alpn_wire(const char *list, unsigned char **out, unsigned *outlen)
{
    size_t cap = strlen(list) + 1, n, len = 0;
    unsigned char *w = malloc(cap);
    const char *s = list;

    if (!w)
        return -1;
    for (;;) {
        s += strspn(s, " \t,");
        if (!*s)
            break;
        n = strcspn(s, " \t,");
        w[len++] = (unsigned char)n;
        memcpy(w + len, s, n);
        len += n;
        s += n;
    }
    if (!len) {
        free(w);
        w = NULL;
    }
    *out = w;
    *outlen = (unsigned)len;
    return 0;
}

/* Versions, ciphers, suites, groups: the parts every context of a listener or an upstream
 * shares. Returns 0 or -1 (reported). */
static int ctx_common(struct builder *b, SSL_CTX *ctx, int server)
{
    const struct cg_tls_conf *t = b->t;
    char why[160];

    SSL_CTX_set_min_proto_version(ctx, t->protocols & CG_TLS_V12 ? TLS1_2_VERSION
                                                                 : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, t->protocols & CG_TLS_V13 ? TLS1_3_VERSION
                                                                 : TLS1_2_VERSION);
    if (t->ciphers && SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
        berr(b, CG_TLS_L_CIPHERS, "tls_ciphers", "\"%s\" selects no cipher", t->ciphers);
        return -1;
    }
    if (t->ciphersuites && SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
        berr(b, CG_TLS_L_SUITES, "tls_ciphersuites", "\"%s\" is not a TLS 1.3 suite list",
             t->ciphersuites);
        return -1;
    }
    if (t->groups && SSL_CTX_set1_groups_list(ctx, t->groups) != 1) {
        berr(b, CG_TLS_L_GROUPS, "tls_groups", "\"%s\" is not a group list", t->groups);
        return -1;
    }
    if (cg_tls_ctx_prepare(ctx, server, why, sizeof(why)) < 0) {
        berr(b, t->ciphers ? CG_TLS_L_CIPHERS : CG_TLS_L_ON, t->ciphers ? "tls_ciphers" : "tls",
             "%s", why);
        return -1;
    }
    return 0;
}

/* The DNS names of <x> (subjectAltName, else the CN), blank-separated, lowercase. */
static char *cert_names(X509 *x)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    char *out = calloc(1, 1), *grown, cn[256];
    size_t len = 0, n;
    int i, count = sans ? sk_GENERAL_NAME_num(sans) : 0;

    for (i = 0; out && i < count; i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        const unsigned char *d;

        if (g->type != GEN_DNS)
            continue;
        d = ASN1_STRING_get0_data(g->d.dNSName);
        n = (size_t)ASN1_STRING_length(g->d.dNSName);
        if (memchr(d, '\0', n) || memchr(d, ' ', n))
            continue;
        grown = realloc(out, len + n + 2);
        if (!grown) {
            free(out);
            out = NULL;
            break;
        }
        out = grown;
        if (len)
            out[len++] = ' ';
        memcpy(out + len, d, n);
        len += n;
        out[len] = '\0';
    }
    GENERAL_NAMES_free(sans);
    if (out && len == 0 &&
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)) > 0 &&
        !strchr(cn, ' ')) {
        free(out);
        out = strdup(cn);
    }
    for (n = 0; out && out[n]; n++)
        if (out[n] >= 'A' && out[n] <= 'Z')
            out[n] = (char)(out[n] + 32);
    return out;
}

static char *subject_of(X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL, *p;
    long n;

    if (!bio)
        return NULL;
    if (X509_NAME_print_ex(bio, X509_get_subject_name(x), 0,
                           XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        n = BIO_get_mem_data(bio, &p);
        out = strndup(p, (size_t)n);
    }
    BIO_free(bio);
    return out;
}

static time_t asn1_time(const ASN1_TIME *t)
{
    struct tm tm;

    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

/* Reads the private key in <keyfile> and gives it to <ctx>, whose certificate (from
 * <certfile>) it must match. <own>: the key came from tls_key. Returns 0 or -1. */
static int use_key(struct builder *b, SSL_CTX *ctx, const char *keyfile, int own,
                   const char *certfile)
{
    enum cg_tls_line line = own ? CG_TLS_L_KEY : CG_TLS_L_CERT;
    const char *key = own ? "tls_key" : "tls_certificate";
    EVP_PKEY *pk = NULL;
    FILE *f = fopen(keyfile, "r");
    int ok;

    if (f) {
        pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (!pk) {
        berr(b, line, key, "%s: no private key could be read%s", keyfile,
             own ? "" : " (set tls_key if it is elsewhere)");
        return -1;
    }
    ERR_clear_error();
    ok = SSL_CTX_use_PrivateKey(ctx, pk) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(pk);
    if (!ok) {
        ERR_clear_error();
        berr(b, line, key, "%s: the private key does not match the certificate of %s",
             keyfile, certfile);
        return -1;
    }
    return 0;
}

/* Loads certificate <i> of the listener into a new server context. Returns 0 or -1. */
static int load_cert(struct builder *b, struct tls_listener *tl, size_t i)
{
    const struct cg_tls_conf *t = b->t;
    struct cert *c = &tl->certs[i];
    const char *keyfile = i == 0 && t->key ? t->key : t->certs[i];
    char when[64];
    X509 *x;
    time_t now = time(NULL);

    c->file = strdup(t->certs[i]);
    c->ctx = SSL_CTX_new(TLS_server_method());
    if (!c->file || !c->ctx)
        return -1;
    if (SSL_CTX_use_certificate_chain_file(c->ctx, t->certs[i]) != 1) {
        berr(b, CG_TLS_L_CERT, "tls_certificate", "%s: no certificate could be read",
             t->certs[i]);
        return -1;
    }
    if (use_key(b, c->ctx, keyfile, keyfile == t->key, t->certs[i]) < 0)
        return -1;
    x = SSL_CTX_get0_certificate(c->ctx);
    c->not_after = asn1_time(X509_get0_notAfter(x));
    if (X509_cmp_time(X509_get0_notAfter(x), &now) < 0) {
        strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", gmtime(&c->not_after));
        berr(b, CG_TLS_L_CERT, "tls_certificate", "%s: the certificate expired on %s",
             t->certs[i], when);
        return -1;
    }
    if (X509_cmp_time(X509_get0_notBefore(x), &now) > 0) {
        berr(b, CG_TLS_L_CERT, "tls_certificate", "%s: the certificate is not valid yet",
             t->certs[i]);
        return -1;
    }
    c->names = cert_names(x);
    c->subject = subject_of(x);
    if (!c->names || !c->subject)
        return -1;
    SSL_CTX_set_session_id_context(c->ctx, (const unsigned char *)b->label,
                                   (unsigned)(strlen(b->label) < SSL_MAX_SID_CTX_LENGTH ?
                                              strlen(b->label) : SSL_MAX_SID_CTX_LENGTH));
    /* Stateless tickets only: no server-side cache. */
    SSL_CTX_set_session_cache_mode(c->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_timeout(c->ctx, SESSION_LIFETIME);
    if (t->tickets) {
        SSL_CTX_set_num_tickets(c->ctx, 1);
        SSL_CTX_set_ex_data(c->ctx, ticket_ex_index, tl->keys);
        SSL_CTX_set_tlsext_ticket_key_evp_cb(c->ctx, ticket_cb);
    } else {
        SSL_CTX_set_num_tickets(c->ctx, 0);
        SSL_CTX_set_options(c->ctx, SSL_OP_NO_TICKET);
    }
    if (t->ca && t->verify != CG_TLS_VERIFY_OFF) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(t->ca);

        if (!names || SSL_CTX_load_verify_locations(c->ctx, t->ca, NULL) != 1) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            berr(b, CG_TLS_L_CA, "tls_client_ca", "%s: no CA certificate could be read",
                 t->ca);
            return -1;
        }
        SSL_CTX_set_client_CA_list(c->ctx, names);
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER | (t->verify == CG_TLS_VERIFY_REQUIRED ?
                                                      SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
                           NULL);
    }
    SSL_CTX_set_alpn_select_cb(c->ctx, alpn_cb, tl);
    SSL_CTX_set_tlsext_servername_callback(c->ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(c->ctx, tl);
    return ctx_common(b, c->ctx, 1);
}

/* Reads a tls_ticket_keys file: one key per line, base64 of 80 bytes (name, HMAC key,
 * AES-256 key) or 48 (AES-128), as `openssl rand 80 | base64 -w0` makes; '#' comments.
 * The first key seals new tickets; every key opens. Returns 0 or -1 (reported). */
static int load_ticket_keys(struct builder *b, struct ticket_keys *tk, const char *path)
{
    unsigned char raw[128];
    char line[256];
    FILE *f = fopen(path, "r");
    unsigned lineno = 0;
    int n;

    if (!f) {
        berr(b, CG_TLS_L_TICKETS, "tls_ticket_keys", "%s: %s", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f)) {
        char *s = line + strspn(line, " \t");
        size_t len = strcspn(s, " \t\r\n");

        lineno++;
        if (len == 0 || *s == '#')
            continue;
        s[len] = '\0';
        n = EVP_DecodeBlock(raw, (const unsigned char *)s, (int)len);
        /* EVP_DecodeBlock counts the padding's bytes as data. */
        if (n > 0 && len >= 2 && s[len - 1] == '=')
            n -= s[len - 2] == '=' ? 2 : 1;
        if (n != 80 && n != 48) {
            berr(b, CG_TLS_L_TICKETS, "tls_ticket_keys", "%s:%u: not a ticket key (base64 "
                 "of 80 or 48 bytes, as `openssl rand 80 | base64 -w0` makes)", path, lineno);
            fclose(f);
            return -1;
        }
        if (tk->n == TICKET_KEYS_MAX) {
            berr(b, CG_TLS_L_TICKETS, "tls_ticket_keys", "%s: more than %d keys", path,
                 TICKET_KEYS_MAX);
            fclose(f);
            return -1;
        }
        struct ticket_key *k = &tk->key[tk->n++];

        k->keylen = n == 80 ? 32 : 16;
        memcpy(k->name, raw, 16);
        memcpy(k->hmac, raw + 16, k->keylen);
        memcpy(k->aes, raw + 16 + k->keylen, k->keylen);
    }
    fclose(f);
    OPENSSL_cleanse(raw, sizeof(raw));
    if (tk->n == 0) {
        berr(b, CG_TLS_L_TICKETS, "tls_ticket_keys", "%s: no key in the file", path);
        return -1;
    }
    return 0;
}

static int build_listener(struct builder *b, struct tls_listener *tl,
                          const struct cg_listener_conf *lc)
{
    const struct cg_tls_conf *t = &lc->tls;
    const char *alpn = t->alpn ? t->alpn : lc->mode == CG_MODE_WEBSOCKET ? "http/1.1" : NULL;
    size_t i;

    b->t = t;
    tl->keys = &own_keys;
    if (t->tickets && t->ticket_keys) {
        tl->keys = calloc(1, sizeof(*tl->keys));
        if (!tl->keys)
            return -1;
        pthread_rwlock_init(&tl->keys->lock, NULL);
        tl->own_keys_file = 1;
        if (load_ticket_keys(b, tl->keys, t->ticket_keys) < 0)
            return -1;
    }
    if (alpn && alpn_wire(alpn, &tl->alpn, &tl->alpn_len) < 0)
        return -1;
    tl->certs = calloc(t->ncerts, sizeof(*tl->certs));
    if (!tl->certs)
        return -1;
    tl->ncerts = t->ncerts;
    for (i = 0; i < t->ncerts; i++)
        if (load_cert(b, tl, i) < 0)
            return -1;
    return 0;
}

static int build_upstream(struct builder *b, struct tls_upstream *tu,
                          const struct cg_upstream_conf *uc)
{
    const struct cg_tls_conf *t = &uc->tls;

    b->t = t;
    tu->ctx = SSL_CTX_new(TLS_client_method());
    if (!tu->ctx)
        return -1;
    if (t->verify) {
        if (t->ca ? SSL_CTX_load_verify_locations(tu->ctx, t->ca, NULL) != 1
                  : SSL_CTX_set_default_verify_paths(tu->ctx) != 1) {
            berr(b, CG_TLS_L_CA, "tls_ca", "%s: no CA certificate could be read",
                 t->ca ? t->ca : "the system's CA store");
            return -1;
        }
        SSL_CTX_set_verify(tu->ctx, SSL_VERIFY_PEER, NULL);
    }
    if (t->ncerts) {
        if (SSL_CTX_use_certificate_chain_file(tu->ctx, t->certs[0]) != 1) {
            berr(b, CG_TLS_L_CERT, "tls_certificate", "%s: no certificate could be read",
                 t->certs[0]);
            return -1;
        }
        if (use_key(b, tu->ctx, t->key ? t->key : t->certs[0], t->key != NULL,
                    t->certs[0]) < 0)
            return -1;
    }
    /* The upstream side never resumes: no ticket is kept. */
    SSL_CTX_set_session_cache_mode(tu->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(tu->ctx, SSL_OP_NO_TICKET);
    return ctx_common(b, tu->ctx, 0);
}

static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static void index_init(void)
{
    ticket_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
}

static void set_free(struct cg_tls_set *set);

static struct cg_tls_set *set_new(const struct cg_config *cfg, struct cg_errors *errs)
{
    struct cg_tls_set *set = calloc(1, sizeof(*set));
    struct builder b = { .cfg = cfg, .errs = errs };
    char label[CG_CONF_NAME_MAX + 16];
    size_t i;

    pthread_once(&index_once, index_init);
    if (!set)
        return NULL;
    set->l = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof(*set->l));
    set->u = calloc(cfg->nupstreams ? cfg->nupstreams : 1, sizeof(*set->u));
    if (!set->l || !set->u)
        goto fail;
    set->nl = cfg->nlisteners;
    set->nu = cfg->nupstreams;
    ERR_clear_error();
    for (i = 0; i < cfg->nlisteners; i++) {
        if (!cfg->listeners[i].tls.on)
            continue;
        snprintf(label, sizeof(label), "listener %s", cfg->listeners[i].name);
        b.label = label;
        if (build_listener(&b, &set->l[i], &cfg->listeners[i]) < 0 && !b.failed)
            goto fail;
    }
    for (i = 0; i < cfg->nupstreams; i++) {
        if (!cfg->upstreams[i].tls.on)
            continue;
        snprintf(label, sizeof(label), "upstream %s", cfg->upstreams[i].name);
        b.label = label;
        if (build_upstream(&b, &set->u[i], &cfg->upstreams[i]) < 0 && !b.failed)
            goto fail;
    }
    if (b.failed)
        goto fail;
    return set;
fail:
    set_free(set);
    return NULL;
}

int cg_tls_load(struct cg_config *cfg, struct cg_errors *errs)
{
    struct cg_tls_set *set = set_new(cfg, errs);

    if (!set) {
        if (cg_errors_count(errs) == 0)
            cg_errors_add(errs, "%s: out of memory building the TLS contexts", cfg->path);
        return -1;
    }
    cfg->tls = set;
    cfg->tls_free = set_free;
    return 0;
}

/* Any thread, once no handshake uses it (its generation is released). NULL-safe. */
static void set_free(struct cg_tls_set *set)
{
    size_t i, j;

    if (!set)
        return;
    for (i = 0; set->l && i < set->nl; i++) {
        struct tls_listener *tl = &set->l[i];

        for (j = 0; tl->certs && j < tl->ncerts; j++) {
            SSL_CTX_free(tl->certs[j].ctx);
            free(tl->certs[j].file);
            free(tl->certs[j].names);
            free(tl->certs[j].subject);
        }
        free(tl->certs);
        free(tl->alpn);
        if (tl->own_keys_file) {
            OPENSSL_cleanse(tl->keys->key, sizeof(tl->keys->key));
            pthread_rwlock_destroy(&tl->keys->lock);
            free(tl->keys);
        }
    }
    for (i = 0; set->u && i < set->nu; i++)
        SSL_CTX_free(set->u[i].ctx);
    free(set->l);
    free(set->u);
    free(set);
}

size_t cg_tls_listener_certs(const struct cg_tls_set *set, size_t li,
                             void (*fn)(void *arg, const struct cg_tls_cert_info *ci),
                             void *arg)
{
    const struct tls_listener *tl;
    struct cg_tls_cert_info ci;
    size_t i;

    if (!set || li >= set->nl)
        return 0;
    tl = &set->l[li];
    for (i = 0; i < tl->ncerts; i++) {
        ci = (struct cg_tls_cert_info){ tl->certs[i].file, tl->certs[i].names,
                                        tl->certs[i].subject, tl->certs[i].not_after };
        fn(arg, &ci);
    }
    return tl->ncerts;
}

SSL_CTX *cg_tls_listener_ctx(const struct cg_tls_set *set, size_t li)
{
    return set && li < set->nl && set->l[li].ncerts ? set->l[li].certs[0].ctx : NULL;
}

SSL_CTX *cg_tls_upstream_ctx(const struct cg_tls_set *set, size_t ui)
{
    return set && ui < set->nu ? set->u[ui].ctx : NULL;
}
