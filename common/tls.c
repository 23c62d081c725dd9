/* common/tls.c — TLS on coroutine streams: OpenSSL's handshake over a BIO of ours on the
 * coro_stream, then our own record layer as the stream's filter (see tls.h, docs/tls.md).
 *
 * The handshake. The BIO hands OpenSSL the stream's received chunks (the one being read is
 * hs.in) and gathers what OpenSSL writes into pool buffers (hs.out), written at each flush
 * and before every wait; "want read" means no chunk is there, and the handshake parks in
 * coro_read() for the rest of its timeout. OpenSSL never sees the socket. Read-ahead is
 * off, so OpenSSL reads a record's header, then exactly its body: when the handshake ends,
 * what is left in hs.in belongs to the record layer and goes back to the stream
 * (coro_stream_unread()). Both directions' bytes pass a record-boundary counter, which
 * gives the sequence numbers exactly: the records each side protected under the traffic
 * keys before our record layer takes over.
 *
 * The keys. The keylog callback (installed on every prepared context) hands us the TLS 1.3
 * application traffic secrets, found through the SSL's ex_data; key and IV come from
 * HKDF-Expand-Label. TLS 1.2's key block is the TLS PRF of the session's master secret.
 *
 * The record layer keeps keys, IVs, sequence numbers and (TLS 1.3) the traffic secrets in
 * one object, and nothing else while idle. The cipher contexts are per thread, one per
 * suite and direction, re-keyed only when the key differs from the last one used: records
 * are opened in place in the received chunk, and sealed straight into pool buffers.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/x509.h>

#include "common/tls.h"
#include "coro/slab.h"

#define REC_HDR        5
#define TAG_LEN        16
#define MAX_PLAIN      16384u               /* 2^14: a record's plaintext, at most */
#define MAX_CIPHER13   (MAX_PLAIN + 256)    /* RFC 8446 §5.2 */
#define MAX_CIPHER12   (MAX_PLAIN + 2048)   /* RFC 5246 §6.2.3 */
#define GCM13_KEY_LIMIT (1ull << 24)        /* records per AES-GCM key before a KeyUpdate */
/* Records in a row that carry no application data (empty ones, alerts, post-handshake
 * messages) before the peer is cut off: each costs a decryption, some an answer, and a
 * peer that sends only those is attacking (OpenSSL: 32 empty records, 32 KeyUpdates). */
#define IDLE_RECORDS_MAX 32

/* Record content types, alert levels and descriptions we use. */
enum { CT_CCS = 20, CT_ALERT = 21, CT_HANDSHAKE = 22, CT_APPDATA = 23 };
enum { AL_WARNING = 1, AL_FATAL = 2 };
enum {
    AD_CLOSE_NOTIFY = 0, AD_UNEXPECTED_MESSAGE = 10, AD_BAD_RECORD_MAC = 20,
    AD_RECORD_OVERFLOW = 22, AD_DECODE_ERROR = 50, AD_PROTOCOL_VERSION = 70,
    AD_INTERNAL_ERROR = 80, AD_USER_CANCELED = 90, AD_NO_RENEGOTIATION = 100,
};
enum { HS_NEW_SESSION_TICKET = 4, HS_KEY_UPDATE = 24 };

/* The AEAD suites the record layer knows. */
enum suite { SUITE_AES128GCM, SUITE_AES256GCM, SUITE_CHACHA, SUITE_COUNT };

static const struct suite_def {
    const char *md;          /* the suite's hash: HKDF, the TLS 1.2 PRF */
    uint8_t     keylen;
    uint8_t     hashlen;
    uint8_t     iv12;        /* TLS 1.2 implicit IV: 4 (GCM salt) or 12 (RFC 7905) */
    uint8_t     explicit12;  /* TLS 1.2 explicit nonce bytes in each record */
} suites[SUITE_COUNT] = {
    [SUITE_AES128GCM] = { "SHA256", 16, 32, 4, 8 },
    [SUITE_AES256GCM] = { "SHA384", 32, 48, 4, 8 },
    [SUITE_CHACHA]    = { "SHA256", 32, 32, 12, 0 },
};

static int suite_of_nid(int nid)
{
    switch (nid) {
    case NID_aes_128_gcm:        return SUITE_AES128GCM;
    case NID_aes_256_gcm:        return SUITE_AES256GCM;
    case NID_chacha20_poly1305:  return SUITE_CHACHA;
    default:                     return -1;
    }
}

/* ------------------------------------------------------------------ the record layer */

/* Everything an established TLS connection holds: cg_tls_idle_bytes(). */
struct rl {
    struct coro_filter f;        /* first: the stream's filter pointer is ours */
    struct coro_buf   *part;     /* a record not complete yet, from its header on (at
                                  * part->off); NULL when none: an idle connection */
    uint64_t           rseq;
    uint64_t           wseq;
    uint8_t            rkey[32];
    uint8_t            wkey[32];
    uint8_t            riv[12];  /* TLS 1.2 GCM: the 4-byte salt, then zeros */
    uint8_t            wiv[12];
    uint8_t            rsec[48]; /* TLS 1.3 application traffic secrets (KeyUpdate) */
    uint8_t            wsec[48];
    uint8_t            suite;
    uint8_t            v13;
    uint8_t            client;   /* a NewSessionTicket is ignored, not refused */
    uint8_t            dead;     /* a fatal alert went or came: nothing more is sealed */
    uint8_t            closed;   /* our close_notify is out */
    uint8_t            idle;     /* records in a row without application data */
    uint8_t            reneg;    /* TLS 1.2: a renegotiation was declined already */
    uint8_t            ku_owed;  /* TLS 1.3: the peer asked for our KeyUpdate while we had
                                  * bytes queued: it goes before our next data */
};

/* One thread's cipher contexts: per suite and direction, keyed with the last key used;
 * and its record-layer objects. Those live as long as their connections and are made
 * right after a handshake freed tens of kilobytes of OpenSSL's: from malloc they would
 * land in the middle of those holes and pin them (measured: ~6 KB of RSS per idle TLS
 * connection, for 240 bytes of state); from a slab of their own they stay packed
 * (coro/slab.h says why), and a connection's is freed on the thread that made it (its
 * stream's, when it closes). */
struct tl_crypto {
    EVP_CIPHER_CTX *ctx[SUITE_COUNT][2];
    uint8_t         key[SUITE_COUNT][2][32];
    uint8_t         keyed[SUITE_COUNT][2];
    struct coro_slab rls;
};

static __thread struct tl_crypto *tlc;
static pthread_key_t tlc_key;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static int ssl_idx = -1, ctx_idx = -1;
static BIO_METHOD *bio_meth;
static EVP_KDF *kdf_hkdf, *kdf_prf;
static const EVP_CIPHER *(*const cipher_of[SUITE_COUNT])(void) = {
    EVP_aes_128_gcm, EVP_aes_256_gcm, EVP_chacha20_poly1305,
};

static void tl_free(void *p)
{
    struct tl_crypto *t = p;
    int i, j;

    if (!t)
        return;
    for (i = 0; i < SUITE_COUNT; i++)
        for (j = 0; j < 2; j++)
            EVP_CIPHER_CTX_free(t->ctx[i][j]);
    coro_slab_destroy(&t->rls);     /* every connection of the thread has ended */
    OPENSSL_cleanse(t, sizeof(*t));
    free(t);
}

/* The calling thread's state, made on first use (NULL: out of memory). */
static struct tl_crypto *tl_get(void)
{
    if (!tlc) {
        tlc = calloc(1, sizeof(*tlc));
        if (!tlc)
            return NULL;
        coro_slab_init(&tlc->rls, sizeof(struct rl));
        pthread_setspecific(tlc_key, tlc);      /* freed at the thread's exit */
    }
    return tlc;
}

void cg_tls_thread_cleanup(void)
{
    struct tl_crypto *t = tlc;

    tlc = NULL;
    if (t)
        pthread_setspecific(tlc_key, NULL);
    tl_free(t);
}

/* The calling thread's context for <suite>, <enc>crypting, made on first use. */
static EVP_CIPHER_CTX *tl_ctx(int suite, int enc)
{
    EVP_CIPHER_CTX *c;

    if (!tl_get())
        return NULL;
    c = tlc->ctx[suite][enc];
    if (c)
        return c;
    c = EVP_CIPHER_CTX_new();
    if (!c)
        return NULL;
    if (!EVP_CipherInit_ex(c, cipher_of[suite](), NULL, NULL, NULL, enc)) {
        EVP_CIPHER_CTX_free(c);
        return NULL;
    }
    tlc->ctx[suite][enc] = c;
    return c;
}

/* Starts sealing (<enc>) or opening one record of <r>: nonce <nonce>, additional data
 * <aad>. Re-keys the thread's context unless its last key was the same. Returns the
 * context, or NULL. */
static EVP_CIPHER_CTX *aead_start(struct rl *r, int enc, const uint8_t *nonce,
                                  const uint8_t *aad, int aadlen)
{
    const uint8_t *key = enc ? r->wkey : r->rkey;
    size_t klen = suites[r->suite].keylen;
    EVP_CIPHER_CTX *c = tl_ctx(r->suite, enc);
    int same, outl;

    if (!c)
        return NULL;
    same = tlc->keyed[r->suite][enc] && !CRYPTO_memcmp(tlc->key[r->suite][enc], key, klen);
    if (!EVP_CipherInit_ex(c, NULL, NULL, same ? NULL : key, nonce, enc)) {
        tlc->keyed[r->suite][enc] = 0;
        return NULL;
    }
    if (!same) {
        memcpy(tlc->key[r->suite][enc], key, klen);
        tlc->keyed[r->suite][enc] = 1;
    }
    if (!EVP_CipherUpdate(c, NULL, &outl, aad, aadlen))
        return NULL;
    return c;
}

/* The per-record nonce: <iv> XOR the sequence number (TLS 1.3, ChaCha20 in 1.2), or the
 * salt and the explicit part (TLS 1.2 GCM, whose explicit part is the sequence number). */
static void make_nonce(uint8_t nonce[12], const uint8_t iv[12], uint64_t seq)
{
    int i;

    memcpy(nonce, iv, 12);
    for (i = 0; i < 8; i++)
        nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
}

static void put_be64(uint8_t *p, uint64_t v)
{
    int i;

    for (i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (56 - 8 * i));
}

/* HKDF-Expand-Label(<secret>, <label>, "", <outlen>) with <md> (RFC 8446 §7.1). */
static int expand_label(const char *md, const uint8_t *secret, size_t slen, const char *label,
                        uint8_t *out, size_t outlen)
{
    uint8_t info[2 + 1 + 6 + 32 + 1];
    size_t ll = strlen(label);
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, ok;
    EVP_KDF_CTX *k;
    OSSL_PARAM p[5];

    if (ll > 32 || !kdf_hkdf)
        return -1;
    info[0] = (uint8_t)(outlen >> 8);
    info[1] = (uint8_t)outlen;
    info[2] = (uint8_t)(6 + ll);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, ll);
    info[9 + ll] = 0;                       /* empty context */
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md, 0);
    p[1] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, slen);
    p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 10 + ll);
    p[4] = OSSL_PARAM_construct_end();
    k = EVP_KDF_CTX_new(kdf_hkdf);
    if (!k)
        return -1;
    ok = EVP_KDF_derive(k, out, outlen, p);
    EVP_KDF_CTX_free(k);
    return ok > 0 ? 0 : -1;
}

/* Key and IV of one direction from its TLS 1.3 traffic secret. */
static int keys13(const struct rl *r, const uint8_t *sec, uint8_t *key, uint8_t *iv)
{
    const struct suite_def *d = &suites[r->suite];

    if (expand_label(d->md, sec, d->hashlen, "key", key, d->keylen) < 0 ||
        expand_label(d->md, sec, d->hashlen, "iv", iv, 12) < 0)
        return -1;
    return 0;
}

/* The next generation of the traffic secret <sec> and its keys (a KeyUpdate). */
static int key_update(struct rl *r, int wr)
{
    const struct suite_def *d = &suites[r->suite];
    uint8_t *sec = wr ? r->wsec : r->rsec, next[48];

    if (expand_label(d->md, sec, d->hashlen, "traffic upd", next, d->hashlen) < 0)
        return -1;
    memcpy(sec, next, d->hashlen);
    OPENSSL_cleanse(next, sizeof(next));
    if (keys13(r, sec, wr ? r->wkey : r->rkey, wr ? r->wiv : r->riv) < 0)
        return -1;
    if (wr)
        r->wseq = 0;
    else
        r->rseq = 0;
    return 0;
}

/* Output: records are sealed straight into pool buffers, each written when full. */
struct sink {
    struct coro_stream *st;
    struct coro_buf    *b;
    int                 err;
};

static void sink_flush(struct sink *k)
{
    int err;

    if (!k->b)
        return;
    err = coro_stream_write_raw(k->st, k->b);
    k->b = NULL;
    if (err < 0 && !k->err)
        k->err = err;
}

/* Room at the end of the current buffer (a new one when it is full). NULL: no memory. */
static uint8_t *sink_room(struct sink *k, size_t *room)
{
    if (k->b && k->b->len == k->b->cap)
        sink_flush(k);
    if (!k->b) {
        k->b = coro_buf_get(k->st->sched, 0);
        if (!k->b) {
            k->err = UV_ENOMEM;
            return NULL;
        }
    }
    *room = k->b->cap - k->b->len;
    return (uint8_t *)k->b->data + k->b->len;
}

static int sink_put(struct sink *k, const uint8_t *p, size_t n)
{
    uint8_t *d;
    size_t room;

    while (n > 0) {
        d = sink_room(k, &room);
        if (!d)
            return -1;
        if (room > n)
            room = n;
        memcpy(d, p, room);
        k->b->len += (uint32_t)room;
        p += room;
        n -= room;
    }
    return 0;
}

/* Seals <n> bytes (at most MAX_PLAIN) of content <type> into one record. Returns 0, or -1
 * (the connection is dead: a record may be half out). */
static int seal(struct rl *r, struct sink *k, uint8_t type, const uint8_t *p, size_t n)
{
    const struct suite_def *d = &suites[r->suite];
    size_t expl = r->v13 ? 0 : d->explicit12, len, room, m;
    uint8_t hdr[REC_HDR + 8], aad[13], nonce[12], tag[TAG_LEN], *dst;
    EVP_CIPHER_CTX *c;
    int aadlen, outl;

    len = expl + n + (r->v13 ? 1 : 0) + TAG_LEN;
    hdr[0] = r->v13 ? CT_APPDATA : type;
    hdr[1] = 3;
    hdr[2] = 3;
    hdr[3] = (uint8_t)(len >> 8);
    hdr[4] = (uint8_t)len;
    if (r->v13) {
        memcpy(aad, hdr, REC_HDR);
        aadlen = REC_HDR;
        make_nonce(nonce, r->wiv, r->wseq);
    } else {
        put_be64(aad, r->wseq);
        aad[8] = type;
        aad[9] = 3;
        aad[10] = 3;
        aad[11] = (uint8_t)(n >> 8);
        aad[12] = (uint8_t)n;
        aadlen = 13;
        if (expl) {
            memcpy(nonce, r->wiv, 4);
            put_be64(nonce + 4, r->wseq);
            memcpy(hdr + REC_HDR, nonce + 4, 8);
        } else {
            make_nonce(nonce, r->wiv, r->wseq);
        }
    }
    if (sink_put(k, hdr, REC_HDR + expl) < 0)
        goto dead;
    c = aead_start(r, 1, nonce, aad, aadlen);
    if (!c)
        goto dead;
    while (n > 0) {
        dst = sink_room(k, &room);
        if (!dst)
            goto dead;
        m = n < room ? n : room;
        if (!EVP_CipherUpdate(c, dst, &outl, p, (int)m) || (size_t)outl != m)
            goto dead;
        k->b->len += (uint32_t)m;
        p += m;
        n -= m;
    }
    if (r->v13) {                           /* TLSInnerPlaintext's content type */
        dst = sink_room(k, &room);
        if (!dst || !EVP_CipherUpdate(c, dst, &outl, &type, 1) || outl != 1)
            goto dead;
        k->b->len++;
    }
    if (!EVP_CipherFinal_ex(c, tag, &outl) ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag) ||
        sink_put(k, tag, TAG_LEN) < 0)
        goto dead;
    r->wseq++;
    return 0;
dead:
    r->dead = 1;
    if (!k->err)
        k->err = UV_EPROTO;
    return -1;
}

/* Sends an alert; a fatal one ends what we send. */
static void send_alert(struct rl *r, struct coro_stream *st, uint8_t level, uint8_t desc)
{
    struct sink k = { .st = st };
    uint8_t a[2] = { level, desc };

    if (r->dead || r->closed)
        return;
    seal(r, &k, CT_ALERT, a, 2);
    sink_flush(&k);
    if (level == AL_FATAL)
        r->dead = 1;
}

/* A fatal error: tells the peer (once) and fails the connection. */
static ssize_t fatal(struct rl *r, struct coro_stream *st, uint8_t desc)
{
    send_alert(r, st, AL_FATAL, desc);
    r->dead = 1;
    return UV_EPROTO;
}

/* Sends a TLS 1.3 KeyUpdate (update_not_requested) under the current key, then switches
 * ours. Returns 0 or -1. */
static int send_key_update(struct rl *r, struct sink *k)
{
    static const uint8_t ku[5] = { HS_KEY_UPDATE, 0, 0, 1, 0 };

    if (seal(r, k, CT_HANDSHAKE, ku, sizeof(ku)) < 0)
        return -1;
    if (key_update(r, 1) < 0) {
        r->dead = 1;
        return -1;
    }
    r->ku_owed = 0;         /* any KeyUpdate of ours answers the peer's request */
    return 0;
}

static int rl_encode(struct coro_filter *f, struct coro_stream *st, struct coro_buf *in)
{
    struct rl *r = (struct rl *)f;
    struct sink k = { .st = st };
    const uint8_t *p = (const uint8_t *)in->data + in->off;
    size_t n = in->len - in->off, m;

    if (r->dead) {
        coro_buf_put(st->sched, in);
        return UV_EPROTO;
    }
    while (n > 0) {
        m = n < MAX_PLAIN ? n : MAX_PLAIN;
        /* Ours before the data: one the peer asked for (on_handshake()), or the key's
         * record limit. */
        if ((r->ku_owed ||
             (r->v13 && r->suite != SUITE_CHACHA && r->wseq >= GCM13_KEY_LIMIT)) &&
            send_key_update(r, &k) < 0)
            break;
        if (seal(r, &k, CT_APPDATA, p, m) < 0)
            break;
        p += m;
        n -= m;
    }
    coro_buf_put(st->sched, in);
    sink_flush(&k);
    return k.err;
}

static int rl_close(struct coro_filter *f, struct coro_stream *st)
{
    struct rl *r = (struct rl *)f;

    if (r->dead || r->closed)
        return 0;
    send_alert(r, st, AL_WARNING, AD_CLOSE_NOTIFY);
    r->closed = 1;
    return 0;
}

static void rl_free(struct coro_filter *f, struct coro_sched *s)
{
    struct rl *r = (struct rl *)f;

    coro_buf_put(s, r->part);
    OPENSSL_cleanse(r, sizeof(*r));
    coro_slab_free(&tlc->rls, r);   /* this thread's: the one that made it */
}

/* An alert record's content. */
static ssize_t on_alert(struct rl *r, struct coro_stream *st, const uint8_t *p, size_t n)
{
    if (n != 2)
        return fatal(r, st, AD_DECODE_ERROR);
    if (p[1] == AD_CLOSE_NOTIFY)
        return UV_EOF;
    /* TLS 1.3: every alert but these two is fatal, whatever its level (RFC 8446 §6). */
    if (r->v13 ? p[1] == AD_USER_CANCELED : p[0] == AL_WARNING)
        return 0;
    r->dead = 1;                            /* a fatal alert is not answered */
    return UV_EPROTO;
}

/* A handshake record's content after the handshake. */
static ssize_t on_handshake(struct rl *r, struct coro_stream *st, const uint8_t *p, size_t n)
{
    struct sink k = { .st = st };
    size_t len;

    if (n == 0)
        return fatal(r, st, AD_UNEXPECTED_MESSAGE);
    if (!r->v13) {
        /* A HelloRequest or a ClientHello: a renegotiation. We decline the first (a peer
         * may carry on without it, RFC 5246 §7.2.2); one that asks again is cut off, as
         * nginx and HAProxy cut off the first: each answer is a record queued to a peer
         * that need not read it. */
        if (r->reneg)
            return fatal(r, st, AD_UNEXPECTED_MESSAGE);
        r->reneg = 1;
        send_alert(r, st, AL_WARNING, AD_NO_RENEGOTIATION);
        return 0;
    }
    while (n > 0) {
        if (n < 4)
            return fatal(r, st, AD_UNEXPECTED_MESSAGE);
        len = (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (len > n - 4)        /* a message split across records: not from a sane peer */
            return fatal(r, st, AD_UNEXPECTED_MESSAGE);
        switch (p[0]) {
        case HS_KEY_UPDATE:
            if (len != 1 || p[4] > 1)
                return fatal(r, st, AD_DECODE_ERROR);
            /* The key changes after it: nothing may follow in its record, which the old
             * key protected (RFC 8446 §5.1). */
            if (n != 4 + len)
                return fatal(r, st, AD_UNEXPECTED_MESSAGE);
            if (key_update(r, 0) < 0)
                return fatal(r, st, AD_INTERNAL_ERROR);
            /* update_requested: ours goes out under the old key before anything else;
             * but only before our next data when bytes are already queued to the peer
             * (RFC 8446 §4.6.3 asks no more), so that a peer that sends requests and
             * never reads queues one answer, not one per request. */
            if (p[4] == 1 && !r->closed) {
                r->ku_owed = 1;                 /* send_key_update() pays it */
                if (coro_stream_queued(st) == 0 && send_key_update(r, &k) < 0) {
                    sink_flush(&k);
                    return UV_EPROTO;
                }
                sink_flush(&k);
            }
            break;
        case HS_NEW_SESSION_TICKET:
            if (!r->client)
                return fatal(r, st, AD_UNEXPECTED_MESSAGE);
            break;              /* more tickets: we keep none after the handshake */
        default:
            return fatal(r, st, AD_UNEXPECTED_MESSAGE);
        }
        p += 4 + len;
        n -= 4 + len;
    }
    return 0;
}

/* Checks a record header. Returns the record's total size, or an error (alert sent). */
static ssize_t check_header(struct rl *r, struct coro_stream *st, const uint8_t *h)
{
    size_t len = (size_t)h[3] << 8 | h[4];

    if (r->v13 ? h[0] != CT_APPDATA : (h[0] < CT_CCS || h[0] > CT_APPDATA))
        return fatal(r, st, AD_UNEXPECTED_MESSAGE);
    if (h[1] != 3 || h[2] != 3)
        return fatal(r, st, AD_PROTOCOL_VERSION);
    if (len > (r->v13 ? MAX_CIPHER13 : MAX_CIPHER12))
        return fatal(r, st, AD_RECORD_OVERFLOW);
    return (ssize_t)(REC_HDR + len);
}

/* Opens the complete record at <rec> in place and acts on it. Returns the application
 * data's length with its offset in *<poff> (0: none), or an error (UV_EOF: close_notify). */
static ssize_t open_record(struct rl *r, struct coro_stream *st, uint8_t *rec, size_t *poff)
{
    const struct suite_def *d = &suites[r->suite];
    size_t len = (size_t)rec[3] << 8 | rec[4], expl = r->v13 ? 0 : d->explicit12, clen, n;
    uint8_t type = rec[0], aad[13], nonce[12], *p;
    EVP_CIPHER_CTX *c;
    int aadlen, outl;

    if (len < expl + TAG_LEN + (r->v13 ? 1 : 0))
        return fatal(r, st, AD_BAD_RECORD_MAC);
    clen = len - expl - TAG_LEN;
    p = rec + REC_HDR + expl;
    if (r->v13) {
        memcpy(aad, rec, REC_HDR);
        aadlen = REC_HDR;
        make_nonce(nonce, r->riv, r->rseq);
    } else {
        if (clen > MAX_PLAIN)
            return fatal(r, st, AD_RECORD_OVERFLOW);
        put_be64(aad, r->rseq);
        aad[8] = type;
        aad[9] = 3;
        aad[10] = 3;
        aad[11] = (uint8_t)(clen >> 8);
        aad[12] = (uint8_t)clen;
        aadlen = 13;
        if (expl) {
            memcpy(nonce, r->riv, 4);
            memcpy(nonce + 4, rec + REC_HDR, 8);
        } else {
            make_nonce(nonce, r->riv, r->rseq);
        }
    }
    c = aead_start(r, 0, nonce, aad, aadlen);
    if (!c || !EVP_CipherUpdate(c, p, &outl, p, (int)clen) || (size_t)outl != clen ||
        !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, p + clen))
        return fatal(r, st, AD_INTERNAL_ERROR);
    if (EVP_CipherFinal_ex(c, p + clen, &outl) <= 0)
        return fatal(r, st, AD_BAD_RECORD_MAC);
    r->rseq++;
    n = clen;
    if (r->v13) {                           /* the content type, behind the padding */
        while (n > 0 && p[n - 1] == 0)
            n--;
        if (n == 0)
            return fatal(r, st, AD_UNEXPECTED_MESSAGE);
        type = p[--n];
        if (n > MAX_PLAIN)
            return fatal(r, st, AD_RECORD_OVERFLOW);
    }
    if (type == CT_APPDATA && n > 0)
        r->idle = 0;
    else if (++r->idle > IDLE_RECORDS_MAX)
        return fatal(r, st, AD_UNEXPECTED_MESSAGE);
    switch (type) {
    case CT_APPDATA:
        *poff = (size_t)(p - rec);
        return (ssize_t)n;
    case CT_ALERT:
        return on_alert(r, st, p, n);
    case CT_HANDSHAKE:
        return on_handshake(r, st, p, n);
    default:                                /* a ChangeCipherSpec after the handshake... */
        return fatal(r, st, AD_UNEXPECTED_MESSAGE);
    }
}

/* Adds <in>'s bytes to the partial record. Returns as rl_decode(). */
static ssize_t finish_part(struct rl *r, struct coro_stream *st, struct coro_buf *in,
                           struct coro_buf **out)
{
    struct coro_buf *part = r->part, *nb;
    size_t have, avail = in->len - in->off, k, total;
    ssize_t n;
    size_t poff = 0;

    have = part->len - part->off;
    if (have < REC_HDR) {
        k = REC_HDR - have < avail ? REC_HDR - have : avail;
        memcpy(part->data + part->len, in->data + in->off, k);
        part->len += (uint32_t)k;
        in->off += (uint32_t)k;
        avail -= k;
        if (part->len - part->off < REC_HDR) {
            coro_buf_put(st->sched, in);
            return 0;
        }
    }
    n = check_header(r, st, (uint8_t *)part->data + part->off);
    if (n < 0) {
        coro_buf_put(st->sched, in);
        return n;
    }
    total = (size_t)n;
    if (total > part->cap - part->off) {    /* larger than the buffer it started in */
        nb = coro_buf_get(st->sched, total);
        if (!nb) {
            coro_buf_put(st->sched, in);
            return UV_ENOMEM;
        }
        nb->len = part->len - part->off;
        memcpy(nb->data, part->data + part->off, nb->len);
        coro_buf_put(st->sched, part);
        r->part = part = nb;
    }
    have = part->len - part->off;
    k = total - have < avail ? total - have : avail;
    memcpy(part->data + part->len, in->data + in->off, k);
    part->len += (uint32_t)k;
    in->off += (uint32_t)k;
    if (part->len - part->off < total) {
        coro_buf_put(st->sched, in);
        return 0;
    }
    r->part = NULL;
    coro_stream_unread(st, in);             /* what follows the record: next time */
    n = open_record(r, st, (uint8_t *)part->data + part->off, &poff);
    if (n > 0) {
        part->off += (uint32_t)poff;
        part->len = part->off + (uint32_t)n;
        *out = part;
        return n;
    }
    coro_buf_put(st->sched, part);
    return n;
}

/* Keeps <n> bytes at <p> (the start of a record) as the partial record; <in> is the chunk
 * they are in, reused when nothing else of it is needed (<in_free>). */
static int keep_part(struct rl *r, struct coro_stream *st, struct coro_buf *in, size_t pos,
                     int in_free)
{
    size_t n = in->len - pos, total = REC_HDR;
    struct coro_buf *nb;

    if (n >= REC_HDR)
        total = REC_HDR + ((size_t)(uint8_t)in->data[pos + 3] << 8 | (uint8_t)in->data[pos + 4]);
    if (in_free && total <= in->cap - pos) {
        in->off = (uint32_t)pos;
        r->part = in;
        return 0;
    }
    nb = coro_buf_get(st->sched, total);
    if (!nb)
        return UV_ENOMEM;
    memcpy(nb->data, in->data + pos, n);
    nb->len = (uint32_t)n;
    r->part = nb;
    if (in_free)
        coro_buf_put(st->sched, in);
    return 0;
}

/* Opens the complete records of <in> in place; their application data, moved together,
 * is returned in <in> itself; a partial record at its end is kept aside. */
static ssize_t decode_chunk(struct rl *r, struct coro_stream *st, struct coro_buf *in,
                            struct coro_buf **out)
{
    size_t avail, ostart = 0, oend = 0, poff = 0, total;
    int have_out = 0, err;
    uint8_t *h;
    ssize_t n;

    for (;;) {
        avail = in->len - in->off;
        if (avail < REC_HDR)
            break;
        h = (uint8_t *)in->data + in->off;
        n = check_header(r, st, h);
        if (n < 0)
            goto end;
        total = (size_t)n;
        if (avail < total)
            break;
        n = open_record(r, st, h, &poff);
        if (n < 0)
            goto end;
        if (n > 0) {
            if (!have_out) {
                ostart = in->off + poff;
                oend = ostart + (size_t)n;
                have_out = 1;
            } else {
                memmove(in->data + oend, in->data + in->off + poff, (size_t)n);
                oend += (size_t)n;
            }
        }
        in->off += (uint32_t)total;
    }
    if (in->off < in->len) {
        err = keep_part(r, st, in, in->off, !have_out);
        if (err < 0) {
            n = err;
            goto end;
        }
        if (!have_out)
            return 0;
    }
    if (!have_out) {
        coro_buf_put(st->sched, in);
        return 0;
    }
deliver:
    in->off = (uint32_t)ostart;
    in->len = (uint32_t)oend;
    *out = in;
    return (ssize_t)(oend - ostart);
end:
    /* The read ends here: UV_EOF (a close_notify) or an error. The records before were
     * good: their bytes go on, and the end is reported after them. */
    if (have_out) {
        r->f.end = (int32_t)n;
        goto deliver;
    }
    coro_buf_put(st->sched, in);
    return n;
}

static ssize_t rl_decode(struct coro_filter *f, struct coro_stream *st, struct coro_buf *in,
                         struct coro_buf **out)
{
    struct rl *r = (struct rl *)f;

    if (r->dead) {
        coro_buf_put(st->sched, in);
        return UV_EPROTO;
    }
    if (r->part)
        return finish_part(r, st, in, out);
    return decode_chunk(r, st, in, out);
}

/* The peer's FIN in the middle of a record: the record was cut short (a truncation), which
 * is an error, not the orderly end an EOF between records is. */
static int rl_end(struct coro_filter *f, int err)
{
    struct rl *r = (struct rl *)f;

    return err == UV_EOF && r->part ? UV_EPROTO : err;
}

static const struct coro_filter_ops rl_ops = {
    .decode = rl_decode,
    .encode = rl_encode,
    .close  = rl_close,
    .free   = rl_free,
    .end    = rl_end,
};

int cg_tls_active(const struct coro_stream *st)
{
    const struct coro_filter *f = coro_stream_filter(st);

    return f && f->ops == &rl_ops;
}

size_t cg_tls_idle_bytes(void)
{
    return sizeof(struct rl);
}

int cg_tls_copy(const struct coro_stream *from, struct coro_stream *to)
{
    const struct coro_filter *f = coro_stream_filter(from);
    struct rl *r;

    if (!f || f->ops != &rl_ops || coro_stream_filter(to))
        return -EINVAL;
    r = tl_get() ? coro_slab_alloc(&tlc->rls) : NULL;
    if (!r)
        return -ENOMEM;
    memcpy(r, f, sizeof(*r));
    /* The state, not what <from> holds: its decoded and partial bytes stay its own. */
    r->f.ready = NULL;
    r->f.end = 0;
    r->part = NULL;
    coro_stream_set_filter(to, &r->f);
    return 0;
}

/* ------------------------------------------------------------------ handshake state */

/* Record boundaries in one direction of the handshake's bytes. */
struct track {
    uint8_t  hdr[REC_HDR];
    uint8_t  nhdr;
    uint32_t left;           /* body bytes of the current record still to come */
    uint32_t records;        /* complete records since the last mark */
    uint32_t since_ccs;      /* complete records after the last ChangeCipherSpec */
};

static void track_done(struct track *t)
{
    t->records++;
    t->since_ccs = t->hdr[0] == CT_CCS ? 0 : t->since_ccs + 1;
    t->nhdr = 0;
}

static void track_feed(struct track *t, const uint8_t *p, size_t n)
{
    size_t k;

    while (n > 0) {
        if (t->nhdr < REC_HDR) {
            t->hdr[t->nhdr++] = *p++;
            n--;
            if (t->nhdr == REC_HDR) {
                t->left = (uint32_t)t->hdr[3] << 8 | t->hdr[4];
                if (t->left == 0)
                    track_done(t);
            }
            continue;
        }
        k = n < t->left ? n : t->left;
        t->left -= (uint32_t)k;
        p += k;
        n -= k;
        if (t->left == 0)
            track_done(t);
    }
}

static int track_at_boundary(const struct track *t)
{
    return t->nhdr == 0;
}

/* One handshake, on the calling coroutine's stack (only this coroutine's SSL calls use it). */
struct hs {
    struct coro_stream *st;
    struct coro_sched  *sched;   /* st's: what is returned after the stream may be gone */
    SSL                *ssl;
    struct coro_buf    *in;      /* the chunk OpenSSL reads from */
    struct coro_buf    *out;     /* what OpenSSL wrote, not handed to the stream yet */
    uint64_t            deadline;
    int                 rerr;    /* how reading ended (UV_EOF...), 0 while it goes on */
    int                 werr;
    unsigned            gone : 1;        /* the stream was closed under us: hands off */
    unsigned            ticket_wait : 1; /* client: stop reading once a ticket came */
    unsigned            plain_seen : 1;  /* client: application data came first */
    SSL_SESSION        *sess0;   /* client: the session when the handshake ended */
    struct track        rd, wr;
    uint32_t            wr_app;  /* server, TLS 1.3: records written when the application
                                  * write key came (1 + : none yet, or not at a boundary) */
    uint8_t             csec[48], ssec[48];
    uint8_t             have_csec, have_ssec;
};

static void hs_flush(struct hs *h)
{
    struct coro_buf *b = h->out;
    int err;

    if (!b)
        return;
    h->out = NULL;
    if (h->gone) {
        coro_buf_put(h->sched, b);
        return;
    }
    err = coro_stream_write_raw(h->st, b);
    if (err < 0 && !h->werr)
        h->werr = err;
}

/* Client: the server's ticket has come (OpenSSL makes a new session for each). */
static int ticket_came(const struct hs *h)
{
    const SSL_SESSION *s = SSL_get_session(h->ssl);

    return s && s != h->sess0 && SSL_SESSION_has_ticket(s);
}

static int bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static int bio_read(BIO *b, char *buf, int len)
{
    struct hs *h = BIO_get_data(b);
    struct coro_buf *in;
    size_t n;
    ssize_t r;

    BIO_clear_retry_flags(b);
    if (!h || len <= 0)
        return 0;
    /* Waiting for a ticket, we stop at a record boundary once one has come: what follows
     * is the record layer's. */
    if (h->ticket_wait && track_at_boundary(&h->rd) && ticket_came(h)) {
        BIO_set_retry_read(b);
        return -1;
    }
    if (!h->in) {
        if (h->gone || h->rerr)
            return h->rerr == UV_EOF ? 0 : -1;
        r = coro_try_read(h->st, &h->in);
        if (r == UV_EAGAIN) {
            BIO_set_retry_read(b);
            return -1;
        }
        if (r < 0) {
            h->rerr = (int)r;
            return r == UV_EOF ? 0 : -1;
        }
    }
    in = h->in;
    n = in->len - in->off;
    if (n > (size_t)len)
        n = (size_t)len;
    memcpy(buf, in->data + in->off, n);
    track_feed(&h->rd, (const uint8_t *)buf, n);
    in->off += (uint32_t)n;
    if (in->off == in->len) {
        coro_buf_put(h->sched, in);
        h->in = NULL;
    }
    return (int)n;
}

static int bio_write(BIO *b, const char *data, int len)
{
    struct hs *h = BIO_get_data(b);
    int err;

    BIO_clear_retry_flags(b);
    if (!h || len < 0)
        return -1;
    if (h->gone || h->werr)
        return -1;
    err = coro_write_gather(h->st, &h->out, data, (size_t)len);
    if (err < 0) {
        h->werr = err;
        return -1;
    }
    track_feed(&h->wr, (const uint8_t *)data, (size_t)len);
    return len;
}

static long bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    struct hs *h = BIO_get_data(b);

    (void)num;
    (void)ptr;
    if (cmd == BIO_CTRL_FLUSH) {
        if (h)
            hs_flush(h);
        return 1;
    }
    return 0;
}

static void on_keylog(const SSL *ssl, const char *line);

struct ctx_info {
    size_t  num_tickets;                 /* what the context was set to send */
    SSL_CTX_keylog_cb_func prev;         /* a keylog callback set before ours */
};

static void ctx_info_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
                          void *argp)
{
    (void)parent;
    (void)ad;
    (void)idx;
    (void)argl;
    (void)argp;
    free(ptr);
}

static void key_destroy(void *p)
{
    tl_free(p);
}

static void init_once(void)
{
    BIO_METHOD *m;

    pthread_key_create(&tlc_key, key_destroy);
    ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    ctx_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, ctx_info_free);
    kdf_hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    kdf_prf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
    m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "coro_stream");
    if (m && (!BIO_meth_set_read(m, bio_read) || !BIO_meth_set_write(m, bio_write) ||
              !BIO_meth_set_ctrl(m, bio_ctrl) || !BIO_meth_set_create(m, bio_create))) {
        BIO_meth_free(m);
        m = NULL;
    }
    bio_meth = m;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "LABEL <client_random> <secret>": the secret's bytes into <out> (48 at most). */
static int parse_secret(const char *line, size_t lablen, uint8_t *out)
{
    const char *p = line + lablen, *q;
    size_t n = 0;
    int hi, lo;

    if (*p++ != ' ')
        return -1;
    q = strchr(p, ' ');
    if (!q)
        return -1;
    for (p = q + 1; p[0] && p[1] && n < 48; p += 2) {
        hi = hexval(p[0]);
        lo = hexval(p[1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[n++] = (uint8_t)(hi << 4 | lo);
    }
    return n > 0 && (*p == 0 || *p == '\n') ? (int)n : -1;
}

static void on_keylog(const SSL *ssl, const char *line)
{
    struct hs *h = SSL_get_ex_data(ssl, ssl_idx);
    struct ctx_info *ci = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), ctx_idx);
    static const char cl[] = "CLIENT_TRAFFIC_SECRET_0", sl[] = "SERVER_TRAFFIC_SECRET_0";

    if (ci && ci->prev)
        ci->prev(ssl, line);
    if (!h)
        return;
    if (!strncmp(line, cl, sizeof(cl) - 1) && parse_secret(line, sizeof(cl) - 1, h->csec) > 0)
        h->have_csec = 1;
    else if (!strncmp(line, sl, sizeof(sl) - 1) &&
             parse_secret(line, sizeof(sl) - 1, h->ssec) > 0) {
        h->have_ssec = 1;
        /* A server derives it right after its Finished went into the BIO: what it writes
         * from here on (tickets, whoever asked for them) is under this key. */
        if (SSL_is_server(ssl) && track_at_boundary(&h->wr))
            h->wr_app = 1 + h->wr.records;
    }
}

/* ------------------------------------------------------------------ contexts */

static void errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (!err || !errlen)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Appends <name> to the ':'-separated list <l> of <cap>. Returns 0 or -1 (too long). */
static int list_add(char *l, size_t cap, const char *name)
{
    size_t n = strlen(l), k = strlen(name);

    if (n + k + 2 > cap)
        return -1;
    if (n)
        l[n++] = ':';
    memcpy(l + n, name, k + 1);
    return 0;
}

int cg_tls_ctx_prepare(SSL_CTX *ctx, int server, char *err, size_t errlen)
{
    STACK_OF(SSL_CIPHER) *sk;
    const SSL_CIPHER *c;
    struct ctx_info *ci;
    char l12[4096] = "", l13[256] = "";
    long minv, maxv;
    int i, want12, want13, is13;

    (void)server;
    pthread_once(&once, init_once);
    if (!bio_meth || !kdf_hkdf || !kdf_prf || ssl_idx < 0 || ctx_idx < 0) {
        errf(err, errlen, "OpenSSL lacks what the TLS record layer needs (HKDF, TLS1-PRF)");
        return -1;
    }
    minv = SSL_CTX_get_min_proto_version(ctx);
    maxv = SSL_CTX_get_max_proto_version(ctx);
    if (maxv && maxv < TLS1_2_VERSION) {
        errf(err, errlen, "TLS versions below 1.2 only: the record layer does 1.2 and 1.3");
        return -1;
    }
    if (minv < TLS1_2_VERSION && !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
        errf(err, errlen, "SSL_CTX_set_min_proto_version() failed");
        return -1;
    }
    minv = SSL_CTX_get_min_proto_version(ctx);
    want12 = minv <= TLS1_2_VERSION;
    want13 = !maxv || maxv >= TLS1_3_VERSION;
    sk = SSL_CTX_get_ciphers(ctx);
    for (i = 0; sk && i < sk_SSL_CIPHER_num(sk); i++) {
        c = sk_SSL_CIPHER_value(sk, i);
        if (suite_of_nid(SSL_CIPHER_get_cipher_nid(c)) < 0)
            continue;
        is13 = !strcmp(SSL_CIPHER_get_version(c), "TLSv1.3");
        if (list_add(is13 ? l13 : l12, is13 ? sizeof(l13) : sizeof(l12),
                     SSL_CIPHER_get_name(c)) < 0) {
            errf(err, errlen, "cipher list too long");
            return -1;
        }
    }
    if (want12) {
        /* A context that allows TLS 1.2 without an AEAD cipher is a configuration error
         * (set the minimum version to TLS 1.3 if that is what is meant). */
        if (!*l12) {
            errf(err, errlen, "no AEAD cipher left in the TLS 1.2 cipher list");
            return -1;
        }
        if (!SSL_CTX_set_cipher_list(ctx, l12)) {
            errf(err, errlen, "SSL_CTX_set_cipher_list(\"%s\") failed", l12);
            return -1;
        }
    }
    if (want13) {
        if (!*l13) {
            errf(err, errlen, "no AEAD ciphersuite left for TLS 1.3 (AES-GCM, ChaCha20)");
            return -1;
        }
        if (!SSL_CTX_set_ciphersuites(ctx, l13)) {
            errf(err, errlen, "SSL_CTX_set_ciphersuites(\"%s\") failed", l13);
            return -1;
        }
    }
    ci = SSL_CTX_get_ex_data(ctx, ctx_idx);
    if (!ci) {
        ci = calloc(1, sizeof(*ci));
        if (!ci || !SSL_CTX_set_ex_data(ctx, ctx_idx, ci)) {
            free(ci);
            errf(err, errlen, "out of memory");
            return -1;
        }
        ci->prev = SSL_CTX_get_keylog_callback(ctx);
    }
    ci->num_tickets = SSL_CTX_get_num_tickets(ctx);
    SSL_CTX_set_keylog_callback(ctx, on_keylog);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    SSL_CTX_clear_options(ctx, SSL_OP_ENABLE_KTLS);
    SSL_CTX_set_max_early_data(ctx, 0);
    SSL_CTX_set_recv_max_early_data(ctx, 0);
    SSL_CTX_set_read_ahead(ctx, 0);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return 0;
}

/* ------------------------------------------------------------------ handshakes */

const char *cg_tls_fail_name(enum cg_tls_fail fail)
{
    static const char *const names[CG_TLS_FAIL_COUNT] = {
        [CG_TLS_OK] = "ok",
        [CG_TLS_FAIL_TIMEOUT] = "timeout",
        [CG_TLS_FAIL_CLOSED] = "closed",
        [CG_TLS_FAIL_NOT_TLS] = "not_tls",
        [CG_TLS_FAIL_PROTOCOL] = "protocol",
        [CG_TLS_FAIL_CERT] = "cert",
        [CG_TLS_FAIL_LOCAL] = "local",
    };

    return (unsigned)fail < CG_TLS_FAIL_COUNT ? names[fail] : "?";
}

static int set_fail(struct cg_tls_info *info, enum cg_tls_fail fail, int err, const char *fmt,
                    ...)
{
    va_list ap;

    info->fail = fail;
    va_start(ap, fmt);
    vsnprintf(info->why, sizeof(info->why), fmt, ap);
    va_end(ap);
    return err;
}

/* The failure of a wait or of the stream: <err> from coro_read() or the BIO. */
static int stream_fail(struct hs *h, struct cg_tls_info *info, int err)
{
    if (err == UV_ETIMEDOUT)
        return set_fail(info, CG_TLS_FAIL_TIMEOUT, err, "handshake timeout");
    if (err == UV_ECANCELED) {
        h->gone = 1;
        return set_fail(info, CG_TLS_FAIL_CLOSED, err, "cancelled");
    }
    if (err == UV_ENOMEM || err == UV_ENOBUFS)
        return set_fail(info, CG_TLS_FAIL_LOCAL, err, "out of memory");
    return set_fail(info, CG_TLS_FAIL_CLOSED, err, "peer %s mid-handshake",
                    err == UV_EOF ? "closed" : uv_strerror(err));
}

/* Waits for the next chunk into h->in. Returns 0 or an error. */
static int wait_in(struct hs *h)
{
    uint64_t now = uv_now(coro_sched_loop(h->sched));
    ssize_t n;

    if (h->in)
        return 0;
    if (h->rerr)
        return h->rerr;
    if (now >= h->deadline)
        return UV_ETIMEDOUT;
    n = coro_read(h->st, &h->in, (int64_t)(h->deadline - now));
    if (n < 0) {
        h->in = NULL;
        if (n == UV_ECANCELED)
            h->gone = 1;
        else if (n != UV_ETIMEDOUT)
            h->rerr = (int)n;
        return (int)n;
    }
    return 0;
}

/* Checks the first bytes that came: 1 fine, 0 need more, -1 not TLS. The server wants a
 * handshake record (22) of a sane length holding a ClientHello (1); the client a handshake
 * record or an alert (21). */
static int first_check(const uint8_t *p, size_t n, int server)
{
    size_t len;

    if (n >= 1 && p[0] != CT_HANDSHAKE && (server || p[0] != CT_ALERT))
        return -1;
    if (n >= 2 && p[1] != 3)
        return -1;
    if (!server)
        return n >= 2;
    if (n >= 5) {
        len = (size_t)p[3] << 8 | p[4];
        if (len < 4 || len > MAX_PLAIN)
            return -1;
    }
    if (n >= 6 && p[5] != 1)
        return -1;
    return n >= 6;
}

/* Waits until the first bytes tell whether the peer speaks TLS: 0, an error, or UV_EPROTO
 * for "not TLS" (info set in every case). Chunks too short are merged into h->in. */
static int peek_first(struct hs *h, int server, struct cg_tls_info *info)
{
    struct coro_buf *b;
    size_t k;
    int ok, err;

    for (;;) {
        if (h->in) {
            ok = first_check((const uint8_t *)h->in->data + h->in->off,
                             h->in->len - h->in->off, server);
            if (ok > 0)
                return 0;
            if (ok < 0)
                return set_fail(info, CG_TLS_FAIL_NOT_TLS, UV_EPROTO,
                                server ? "not a TLS ClientHello" : "not a TLS record");
        }
        b = h->in;
        h->in = NULL;
        err = wait_in(h);
        if (err < 0) {
            if (b)
                coro_buf_put(h->sched, b);
            return stream_fail(h, info, err);
        }
        if (b) {                            /* a few bytes, then more: one chunk */
            if (b->off) {
                memmove(b->data, b->data + b->off, b->len - b->off);
                b->len -= b->off;
                b->off = 0;
            }
            k = h->in->len - h->in->off;
            if (k > 8)
                k = 8;                      /* enough to judge; the rest stays in line */
            memcpy(b->data + b->len, h->in->data + h->in->off, k);
            b->len += (uint32_t)k;
            h->in->off += (uint32_t)k;
            coro_stream_unread(h->st, h->in);
            h->in = b;
        }
    }
}

/* Why OpenSSL failed, into <info>. */
static int ssl_fail(struct hs *h, struct cg_tls_info *info, int sslerr)
{
    unsigned long e = ERR_peek_last_error();
    int reason = ERR_GET_REASON(e);
    const char *rs = ERR_reason_error_string(e);
    char buf[120];

    if (h->werr)
        return stream_fail(h, info, h->werr);
    if (h->rerr && (!e || reason == SSL_R_UNEXPECTED_EOF_WHILE_READING ||
                    sslerr == SSL_ERROR_SYSCALL))
        return stream_fail(h, info, h->rerr);
    if (!e) {
        snprintf(buf, sizeof(buf), "SSL_do_handshake(): error %d", sslerr);
        rs = buf;
    }
    if (!rs)
        rs = ERR_error_string(e, buf);
    if (sslerr != SSL_ERROR_SSL && sslerr != SSL_ERROR_SYSCALL)
        return set_fail(info, CG_TLS_FAIL_LOCAL, UV_EPROTO, "%s", rs);
    if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
        (reason == SSL_R_CERTIFICATE_VERIFY_FAILED ||
         reason == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE))
        return set_fail(info, CG_TLS_FAIL_CERT, UV_EPROTO, "%s", rs);
    return set_fail(info, CG_TLS_FAIL_PROTOCOL, UV_EPROTO, "%s", rs);
}

/* Runs SSL_do_handshake() until it is done, parking while it wants input. */
static int drive(struct hs *h, struct cg_tls_info *info, int first, int server)
{
    int r, e, err;

    for (;;) {
        ERR_clear_error();                  /* the queue is the thread's: others ran */
        r = SSL_do_handshake(h->ssl);
        hs_flush(h);
        if (r == 1)
            return h->werr ? stream_fail(h, info, h->werr) : 0;
        e = SSL_get_error(h->ssl, r);
        if (e != SSL_ERROR_WANT_READ || h->werr)
            return ssl_fail(h, info, e);
        if (first && !server) {
            err = peek_first(h, server, info);
            first = 0;
            if (err < 0)
                return err;
            continue;
        }
        err = wait_in(h);
        if (err < 0)
            return stream_fail(h, info, err);
    }
}

/* Client, TLS 1.3: reads until the server's first ticket (or application data) came. */
static int await_ticket(struct hs *h, struct cg_tls_info *info, struct coro_buf **plain)
{
    struct coro_buf *b = NULL;
    int r, e, err;

    h->sess0 = SSL_get_session(h->ssl);
    h->ticket_wait = 1;
    for (;;) {
        if (ticket_came(h) && track_at_boundary(&h->rd)) {
            coro_buf_put(h->sched, b);
            return 0;
        }
        if (!b) {
            b = coro_buf_get(h->sched, MAX_PLAIN);
            if (!b)
                return set_fail(info, CG_TLS_FAIL_LOCAL, UV_ENOMEM, "out of memory");
        }
        ERR_clear_error();
        r = SSL_read(h->ssl, b->data + b->len, (int)(b->cap - b->len));
        hs_flush(h);
        if (r > 0) {
            /* Data before any ticket: it is the application's; no ticket this time. */
            b->len += (uint32_t)r;
            if (SSL_pending(h->ssl) > 0 && b->len < b->cap)
                continue;
            h->plain_seen = 1;
            *plain = b;
            return 0;
        }
        e = SSL_get_error(h->ssl, r);
        if (e != SSL_ERROR_WANT_READ || h->werr) {
            coro_buf_put(h->sched, b);
            return ssl_fail(h, info, e);
        }
        if (ticket_came(h))
            continue;
        err = wait_in(h);
        if (err == UV_ETIMEDOUT) {
            /* No ticket in time: the connection stands; the caller gets no session. */
            coro_buf_put(h->sched, b);
            return 0;
        }
        if (err < 0) {
            coro_buf_put(h->sched, b);
            return stream_fail(h, info, err);
        }
    }
}

static void fill_info(SSL *ssl, struct cg_tls_info *info)
{
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    const char *s;
    X509 *cert;
    int nid;

    info->version = (uint16_t)SSL_version(ssl);
    info->cipher = SSL_CIPHER_get_name(SSL_get_current_cipher(ssl));
    nid = SSL_get_negotiated_group(ssl);
    s = nid ? SSL_group_to_name(ssl, nid) : NULL;
    info->group = s ? s : "";
    info->resumed = SSL_session_reused(ssl) ? 1 : 0;
    SSL_get0_alpn_selected(ssl, &alpn, &alen);
    if (alpn && alen < sizeof(info->alpn)) {
        memcpy(info->alpn, alpn, alen);
        info->alpn[alen] = 0;
    }
    s = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    snprintf(info->sni, sizeof(info->sni), "%s", s ? s : "");
    info->verify_result = SSL_get_verify_result(ssl);
    cert = SSL_get0_peer_certificate(ssl);
    if (cert) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned mdlen = 0, i;
        BIO *mb = BIO_new(BIO_s_mem());
        char *p = NULL;
        long n;

        info->peer_cert = 1;
        if (mb && X509_NAME_print_ex(mb, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253) >= 0) {
            n = BIO_get_mem_data(mb, &p);
            if (n >= (long)sizeof(info->peer_subject))
                n = sizeof(info->peer_subject) - 1;
            if (n > 0)
                memcpy(info->peer_subject, p, (size_t)n);
            info->peer_subject[n > 0 ? n : 0] = 0;
        }
        BIO_free(mb);
        if (X509_digest(cert, EVP_sha256(), md, &mdlen) && mdlen == 32)
            for (i = 0; i < mdlen; i++)
                snprintf(info->peer_sha256 + 2 * i, 3, "%02x", md[i]);
    }
}

/* TLS 1.2: the key block (RFC 5246 §6.3) from the master secret. */
static int keys12(SSL *ssl, struct rl *r, int server)
{
    const struct suite_def *d = &suites[r->suite];
    uint8_t ms[48], seed[13 + 64], kb[2 * 32 + 2 * 12];
    size_t mslen, kblen = 2u * d->keylen + 2u * d->iv12;
    OSSL_PARAM p[4];
    EVP_KDF_CTX *k;
    int ok;

    mslen = SSL_SESSION_get_master_key(SSL_get_session(ssl), ms, sizeof(ms));
    if (mslen != 48)
        return -1;
    memcpy(seed, "key expansion", 13);
    if (SSL_get_server_random(ssl, seed + 13, 32) != 32 ||
        SSL_get_client_random(ssl, seed + 45, 32) != 32)
        return -1;
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)d->md, 0);
    p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, ms, mslen);
    p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed, sizeof(seed));
    p[3] = OSSL_PARAM_construct_end();
    k = EVP_KDF_CTX_new(kdf_prf);
    ok = k && EVP_KDF_derive(k, kb, kblen, p) > 0;
    EVP_KDF_CTX_free(k);
    OPENSSL_cleanse(ms, sizeof(ms));
    if (!ok)
        return -1;
    /* client_write_key, server_write_key, client_write_IV, server_write_IV */
    memcpy(server ? r->rkey : r->wkey, kb, d->keylen);
    memcpy(server ? r->wkey : r->rkey, kb + d->keylen, d->keylen);
    memcpy(server ? r->riv : r->wiv, kb + 2 * d->keylen, d->iv12);
    memcpy(server ? r->wiv : r->riv, kb + 2 * d->keylen + d->iv12, d->iv12);
    OPENSSL_cleanse(kb, sizeof(kb));
    return 0;
}

/* The record layer for the finished handshake of <h>, with its sequence numbers. */
static struct rl *make_rl(struct hs *h, int server, uint64_t rseq, uint64_t wseq,
                          struct cg_tls_info *info)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(h->ssl);
    int suite = c ? suite_of_nid(SSL_CIPHER_get_cipher_nid(c)) : -1;
    struct rl *r;

    if (suite < 0) {
        set_fail(info, CG_TLS_FAIL_LOCAL, UV_EPROTO, "cipher %s has no record layer here",
                 c ? SSL_CIPHER_get_name(c) : "(none)");
        return NULL;
    }
    r = tl_get() ? coro_slab_alloc(&tlc->rls) : NULL;
    if (!r) {
        set_fail(info, CG_TLS_FAIL_LOCAL, UV_ENOMEM, "out of memory");
        return NULL;
    }
    r->f.ops = &rl_ops;
    r->suite = (uint8_t)suite;
    r->client = !server;
    r->rseq = rseq;
    r->wseq = wseq;
    if (SSL_version(h->ssl) == TLS1_3_VERSION) {
        size_t hl = suites[suite].hashlen;

        r->v13 = 1;
        if (!h->have_csec || !h->have_ssec) {
            set_fail(info, CG_TLS_FAIL_LOCAL, UV_EPROTO, "traffic secrets not captured");
            goto fail;
        }
        memcpy(r->rsec, server ? h->csec : h->ssec, hl);
        memcpy(r->wsec, server ? h->ssec : h->csec, hl);
        if (keys13(r, r->rsec, r->rkey, r->riv) < 0 || keys13(r, r->wsec, r->wkey, r->wiv) < 0) {
            set_fail(info, CG_TLS_FAIL_LOCAL, UV_EPROTO, "key derivation failed");
            goto fail;
        }
    } else if (SSL_version(h->ssl) == TLS1_2_VERSION) {
        if (keys12(h->ssl, r, server) < 0) {
            set_fail(info, CG_TLS_FAIL_LOCAL, UV_EPROTO, "key derivation failed");
            goto fail;
        }
    } else {
        set_fail(info, CG_TLS_FAIL_LOCAL, UV_EPROTO, "%s has no record layer here",
                 SSL_get_version(h->ssl));
        goto fail;
    }
    return r;
fail:
    OPENSSL_cleanse(r, sizeof(*r));
    coro_slab_free(&tlc->rls, r);
    return NULL;
}

static int handshake(struct coro_stream *st, SSL_CTX *ctx, int server, const char *sni,
                     const char *verify_name, SSL_SESSION **session, int64_t timeout_ms,
                     struct cg_tls_info *info)
{
    struct hs h;
    struct coro_buf *plain = NULL;
    struct ctx_info *ci;
    struct rl *r = NULL;
    uint64_t rseq, wseq;
    uint32_t rd_mark, wr_mark;
    size_t tickets, i;
    BIO *bio = NULL;
    int err;

    memset(info, 0, sizeof(*info));
    info->cipher = info->group = "";
    memset(&h, 0, sizeof(h));
    h.st = st;
    h.sched = st->sched;
    h.deadline = uv_now(coro_sched_loop(st->sched)) + (timeout_ms < 0 ? (uint64_t)1 << 62
                                                                      : (uint64_t)timeout_ms);
    pthread_once(&once, init_once);
    if (!bio_meth || ssl_idx < 0 || !SSL_CTX_get_ex_data(ctx, ctx_idx))
        return set_fail(info, CG_TLS_FAIL_LOCAL, UV_EINVAL, "context not prepared");
    if (server) {
        err = peek_first(&h, 1, info);
        if (err < 0)
            goto out;
    }
    h.ssl = SSL_new(ctx);
    bio = h.ssl ? BIO_new(bio_meth) : NULL;
    if (!bio || !SSL_set_ex_data(h.ssl, ssl_idx, &h)) {
        BIO_free(bio);
        err = set_fail(info, CG_TLS_FAIL_LOCAL, UV_ENOMEM, "out of memory");
        goto out;
    }
    BIO_set_data(bio, &h);
    SSL_set_bio(h.ssl, bio, bio);
    if (server) {
        SSL_set_accept_state(h.ssl);
        SSL_set_num_tickets(h.ssl, 0);      /* sent below, counted */
    } else {
        SSL_set_connect_state(h.ssl);
        if ((sni && *sni && !SSL_set_tlsext_host_name(h.ssl, sni)) ||
            (verify_name && !SSL_set1_host(h.ssl, verify_name)) ||
            (session && *session && !SSL_set_session(h.ssl, *session))) {
            err = set_fail(info, CG_TLS_FAIL_LOCAL, UV_EINVAL, "bad SNI, name or session");
            goto out;
        }
    }
    err = drive(&h, info, 1, server);
    if (err < 0)
        goto out;
    fill_info(h.ssl, info);
    rd_mark = h.rd.records;                 /* what follows uses the traffic keys */
    wr_mark = h.wr.records;
    if (server && SSL_version(h.ssl) == TLS1_3_VERSION) {
        ci = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(h.ssl), ctx_idx);
        tickets = ci ? ci->num_tickets : 0;
        if (info->resumed && tickets > 1)
            tickets = 1;                    /* as OpenSSL does after a resumption */
        for (i = 0; i < tickets; i++)
            if (!SSL_new_session_ticket(h.ssl))
                break;
        if (i > 0) {
            err = drive(&h, info, 0, server);
            if (err < 0)
                goto out;
        }
    }
    if (!server && session && SSL_version(h.ssl) == TLS1_3_VERSION) {
        err = await_ticket(&h, info, &plain);
        if (err < 0)
            goto out;
    }
    if (!track_at_boundary(&h.rd) || !track_at_boundary(&h.wr)) {
        err = set_fail(info, CG_TLS_FAIL_LOCAL, UV_EPROTO, "handshake ended inside a record");
        goto out;
    }
    if (SSL_version(h.ssl) == TLS1_3_VERSION) {
        rseq = h.rd.records - rd_mark;      /* tickets (client), data before them */
        wseq = h.wr.records - wr_mark;
        if (server) {
            /* The tickets: ours, and any OpenSSL sent itself within the handshake (a
             * context switched by an SNI callback keeps its own ticket count). */
            if (!h.wr_app) {
                err = set_fail(info, CG_TLS_FAIL_LOCAL, UV_EPROTO, "no application key mark");
                goto out;
            }
            wseq = h.wr.records - (h.wr_app - 1);
        }
    } else {
        rseq = h.rd.since_ccs;              /* Finished: 1 */
        wseq = h.wr.since_ccs;
    }
    r = make_rl(&h, server, rseq, wseq, info);
    if (!r) {
        err = UV_EPROTO;
        if (info->fail == CG_TLS_FAIL_LOCAL && !strcmp(info->why, "out of memory"))
            err = UV_ENOMEM;
        goto out;
    }
    if (session && (SSL_version(h.ssl) == TLS1_3_VERSION ? ticket_came(&h)
                                                         : SSL_SESSION_is_resumable(
                                                               SSL_get_session(h.ssl)))) {
        SSL_SESSION *s = SSL_get1_session(h.ssl);

        if (s) {
            SSL_SESSION_free(*session);
            *session = s;
        }
    }
    if (h.in) {                             /* records after the handshake: the layer's */
        coro_stream_unread(st, h.in);
        h.in = NULL;
    }
    r->f.ready = plain;
    plain = NULL;
    coro_stream_set_filter(st, &r->f);
    /* The SSL goes, the connection stays: freed without this, OpenSSL would take the
     * session for a broken one and make it non-resumable (and drop it from a cache). */
    SSL_set_shutdown(h.ssl, SSL_SENT_SHUTDOWN | SSL_RECEIVED_SHUTDOWN);
    err = 0;
out:
    if (err < 0)
        hs_flush(&h);                       /* the alert OpenSSL made, if any: queued */
    coro_buf_put(h.sched, h.in);
    coro_buf_put(h.sched, h.out);
    coro_buf_put(h.sched, plain);
    SSL_free(h.ssl);                        /* and the BIO */
    OPENSSL_cleanse(h.csec, sizeof(h.csec));
    OPENSSL_cleanse(h.ssec, sizeof(h.ssec));
    ERR_clear_error();
    return err;
}

int cg_tls_accept(struct coro_stream *st, SSL_CTX *ctx, int64_t timeout_ms,
                  struct cg_tls_info *info)
{
    return handshake(st, ctx, 1, NULL, NULL, NULL, timeout_ms, info);
}

int cg_tls_connect(struct coro_stream *st, SSL_CTX *ctx, const char *sni,
                   const char *verify_name, SSL_SESSION **session, int64_t timeout_ms,
                   struct cg_tls_info *info)
{
    return handshake(st, ctx, 0, sni, verify_name, session, timeout_ms, info);
}
