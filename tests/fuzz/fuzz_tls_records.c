/* tests/fuzz/fuzz_tls_records.c — the TLS record layer's receive side (common/tls.c) against
 * a peer that sends what the input says: good records, damaged ones, alerts, KeyUpdate,
 * close_notify, renegotiation, garbage, in pieces.
 *
 * Once per process, for each of four suites (TLS 1.3 AES-128-GCM and ChaCha20-Poly1305,
 * TLS 1.2 ECDHE-ECDSA AES-256-GCM and ChaCha20-Poly1305), a real handshake in memory:
 * cg_tls_accept() and cg_tls_connect() in two coroutines over a socket pair, with a
 * certificate made here. The client's context logs its secrets (and its message callback
 * the ServerHello's random), so this file knows both directions' keys and seals the peer's
 * records itself, with OpenSSL's AEAD directly: an implementation independent of the one
 * under test. Each input gets a fresh copy of the server's record layer (cg_tls_copy()),
 * on a new socket pair, so every input starts from the same keys and sequence numbers.
 *
 * Input: one byte of settings (bits 0-1 the suite, bits 2-7 seed the piece sizes the peer
 * writes, 0 = all at once), then operations, each a byte (low 3 bits the kind, high 5 bits
 * its flags) and its operands; see build_wire(). The peer writes the records and shuts its
 * side down, and reads what the server sends back all the while; the server side is an
 * application coroutine reading plaintext until coro_read() fails, then flushing.
 *
 * Invariants, from a model of what a correct receiver does with the records built:
 * - the plaintext delivered is a prefix of the authenticated application data sent before
 *   the stream's end, and all of it when the stream ended in an orderly way;
 * - the read ends as it must: UV_EOF (close_notify, or the peer's EOF between records),
 *   or UV_EPROTO after a bad record (our fatal alert, the right one, is the last record we
 *   sent) or after the peer's fatal alert (we send no alert then);
 * - the 33rd record in a row without application data, and a second renegotiation, fail
 *   with unexpected_message;
 * - everything the server sent authenticates under its keys: the no_renegotiation warning
 *   (TLS 1.2) when asked, KeyUpdates (TLS 1.3, update_requested) no more than asked and at
 *   least one when asked (an answer waits while bytes are queued);
 * - no leak: the record layer's pool buffers are all back after each input.
 */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "common/tls.h"
#include "coro/coro.h"
#include "coro/io.h"
#include "fuzz.h"

#define INPUT_MAX   65536
#define WIRE_MAX    (4u << 20)
#define MAX_PLAIN   16384u
#define READ_MS     5000        /* the setup handshakes only: see peer_main() */

enum { CT_CCS = 20, CT_ALERT = 21, CT_HANDSHAKE = 22, CT_APPDATA = 23 };
enum {
    AD_CLOSE_NOTIFY = 0, AD_UNEXPECTED_MESSAGE = 10, AD_BAD_RECORD_MAC = 20,
    AD_RECORD_OVERFLOW = 22, AD_DECODE_ERROR = 50, AD_PROTOCOL_VERSION = 70,
    AD_USER_CANCELED = 90, AD_NO_RENEGOTIATION = 100,
};

static const struct suite {
    const char *name;
    int         v13;
    const char *cipher;         /* TLS 1.3 ciphersuite or TLS 1.2 cipher list */
    const char *md;
    int         keylen, hashlen, iv12, explicit12;
    const EVP_CIPHER *(*evp)(void);
} suites[4] = {
    { "TLS 1.3 AES-128-GCM", 1, "TLS_AES_128_GCM_SHA256", "SHA256", 16, 32, 12, 0,
      EVP_aes_128_gcm },
    { "TLS 1.3 ChaCha20", 1, "TLS_CHACHA20_POLY1305_SHA256", "SHA256", 32, 32, 12, 0,
      EVP_chacha20_poly1305 },
    { "TLS 1.2 AES-256-GCM", 0, "ECDHE-ECDSA-AES256-GCM-SHA384", "SHA384", 32, 48, 4, 8,
      EVP_aes_256_gcm },
    { "TLS 1.2 ChaCha20", 0, "ECDHE-ECDSA-CHACHA20-POLY1305", "SHA256", 32, 32, 12, 0,
      EVP_chacha20_poly1305 },
};

/* One direction's keys, as the peer keeps them. */
struct dir {
    const struct suite *s;
    uint8_t  key[32], iv[12], sec[48];
    uint64_t seq;
};

/* What a handshake left: the server's stream (the template) and both directions' keys. */
struct tmpl {
    struct coro_stream srv, cli;
    struct dir         c2s, s2c;    /* s2c.seq unknown: found on the first record */
};

static uv_loop_t          loop;
static struct coro_sched *sched;
static struct tmpl        tmpls[4];
static unsigned           base_bufs;

/* ------------------------------------------------------------------ keys */

/* Secrets the client's context logged during the setup handshake. */
static struct {
    uint8_t csec[48], ssec[48], master[48], crand[32], srand[32];
    int     have;
} logged;

static int hexbytes(const char *h, uint8_t *out, size_t n)
{
    size_t i;
    unsigned v;

    for (i = 0; i < n; i++) {
        if (sscanf(h + 2 * i, "%2x", &v) != 1)
            return -1;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static void on_keylog(const SSL *ssl, const char *line)
{
    const char *sp = strchr(line, ' '), *sec = sp ? strchr(sp + 1, ' ') : NULL;
    size_t hl = strlen(sec ? sec + 1 : "") / 2;

    if (!sec || hl > 48)
        return;
    if (!strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) && !hexbytes(sec + 1, logged.csec, hl))
        logged.have |= 1;
    else if (!strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) &&
             !hexbytes(sec + 1, logged.ssec, hl))
        logged.have |= 2;
    else if (!strncmp(line, "CLIENT_RANDOM ", 14) && !hexbytes(sp + 1, logged.crand, 32) &&
             !hexbytes(sec + 1, logged.master, 48))
        logged.have |= 4;
}

static void on_msg(int write_p, int version, int type, const void *buf, size_t len, SSL *ssl,
                   void *arg)
{
    const uint8_t *p = buf;

    if (!write_p && type == SSL3_RT_HANDSHAKE && len >= 38 && p[0] == 2) {  /* ServerHello */
        memcpy(logged.srand, p + 6, 32);
        logged.have |= 8;
    }
}

/* HKDF-Expand-Label (RFC 8446 §7.1), empty context. */
static void expand_label(const char *md, const uint8_t *secret, size_t slen, const char *label,
                         uint8_t *out, size_t outlen)
{
    uint8_t info[64];
    size_t ll = strlen(label), il = 0;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *k = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM p[5];

    info[il++] = (uint8_t)(outlen >> 8);
    info[il++] = (uint8_t)outlen;
    info[il++] = (uint8_t)(6 + ll);
    memcpy(info + il, "tls13 ", 6);
    il += 6;
    memcpy(info + il, label, ll);
    il += ll;
    info[il++] = 0;
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)md, 0);
    p[1] = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, slen);
    p[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, il);
    p[4] = OSSL_PARAM_construct_end();
    FUZZ_CHECK(k && EVP_KDF_derive(k, out, outlen, p) > 0, "HKDF");
    EVP_KDF_CTX_free(k);
    EVP_KDF_free(kdf);
}

static void dir13_keys(struct dir *d)
{
    expand_label(d->s->md, d->sec, d->s->hashlen, "key", d->key, d->s->keylen);
    expand_label(d->s->md, d->sec, d->s->hashlen, "iv", d->iv, 12);
}

/* A KeyUpdate in this direction: the next secret, its keys, sequence 0. */
static void dir13_update(struct dir *d)
{
    uint8_t next[48];

    expand_label(d->s->md, d->sec, d->s->hashlen, "traffic upd", next, d->s->hashlen);
    memcpy(d->sec, next, d->s->hashlen);
    dir13_keys(d);
    d->seq = 0;
}

/* TLS 1.2: the key block from the master secret (RFC 5246 §6.3). */
static void keys12(struct tmpl *t, const struct suite *s)
{
    uint8_t seed[13 + 64], kb[2 * 32 + 2 * 12];
    size_t kl = (size_t)s->keylen, il = (size_t)s->iv12;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
    EVP_KDF_CTX *k = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM p[4];

    memcpy(seed, "key expansion", 13);
    memcpy(seed + 13, logged.srand, 32);
    memcpy(seed + 45, logged.crand, 32);
    p[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)s->md, 0);
    p[1] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, logged.master, 48);
    p[2] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed, sizeof(seed));
    p[3] = OSSL_PARAM_construct_end();
    FUZZ_CHECK(k && EVP_KDF_derive(k, kb, 2 * kl + 2 * il, p) > 0, "TLS PRF");
    EVP_KDF_CTX_free(k);
    EVP_KDF_free(kdf);
    memcpy(t->c2s.key, kb, kl);
    memcpy(t->s2c.key, kb + kl, kl);
    memcpy(t->c2s.iv, kb + 2 * kl, il);
    memcpy(t->s2c.iv, kb + 2 * kl + il, il);
}

/* ------------------------------------------------------------------ records */

struct bytes {
    uint8_t *p;
    size_t   len, cap;
};

static void put(struct bytes *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->cap - b->len < n) {
        while (b->cap - b->len < n)
            b->cap = b->cap ? 2 * b->cap : 65536;
        b->p = realloc(b->p, b->cap);
        FUZZ_CHECK(b->p != NULL, "out of memory");
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void nonce_of(const struct dir *d, uint64_t seq, uint8_t nonce[12])
{
    int i;

    memset(nonce, 0, 12);
    memcpy(nonce, d->iv, d->s->v13 ? 12 : (size_t)d->s->iv12);
    if (!d->s->v13 && d->s->explicit12) {       /* GCM: salt, then the explicit part */
        for (i = 0; i < 8; i++)
            nonce[4 + i] = (uint8_t)(seq >> (56 - 8 * i));
        return;
    }
    for (i = 0; i < 8; i++)
        nonce[4 + i] ^= (uint8_t)(seq >> (56 - 8 * i));
}

/* One AEAD operation: <n> bytes at <in> to <out>; the tag written (seal) or checked
 * (open). Returns 1, or 0 when the tag is wrong. */
static int aead(const struct dir *d, int enc, const uint8_t nonce[12], const uint8_t *aad,
                int aadlen, const uint8_t *in, size_t n, uint8_t *out, uint8_t tag[16])
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int outl, ok;

    FUZZ_CHECK(c && EVP_CipherInit_ex(c, d->s->evp(), NULL, d->key, nonce, enc), "AEAD init");
    ok = EVP_CipherUpdate(c, NULL, &outl, aad, aadlen) &&
         (n == 0 || EVP_CipherUpdate(c, out, &outl, in, (int)n));
    FUZZ_CHECK(ok, "AEAD update");
    if (enc) {
        ok = EVP_CipherFinal_ex(c, out + n, &outl) &&
             EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, tag);
        FUZZ_CHECK(ok, "AEAD seal");
    } else {
        ok = EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_SET_TAG, 16, tag) &&
             EVP_CipherFinal_ex(c, out + n, &outl) > 0;
    }
    EVP_CIPHER_CTX_free(c);
    return ok;
}

/* How a sealed record is damaged (an operation's flags & 7). */
enum damage {
    DMG_NONE, DMG_TAG_BIT, DMG_TAG_SHORT, DMG_SEQ, DMG_VERSION, DMG_TYPE, DMG_OVERSIZE,
    DMG_TOO_SHORT,
};

/* Seals <n> bytes of content <type> as one record of <d> onto <w>, with <pad> zeros
 * (TLS 1.3) and damage <dmg>; the sequence number advances (the receiver's does only for
 * a record that opened, but a damaged record ends the stream anyway). */
static void seal(struct dir *d, struct bytes *w, uint8_t type, const uint8_t *p, size_t n,
                 size_t pad, int dmg)
{
    size_t expl = d->s->v13 ? 0 : (size_t)d->s->explicit12, inner = n, len;
    uint64_t seq = d->seq + (dmg == DMG_SEQ);
    uint8_t hdr[5 + 8], aad[13], nonce[12], tag[16], *buf;
    int aadlen, i;

    if (d->s->v13)
        inner = n + 1 + pad;
    len = expl + inner + 16;
    buf = malloc(inner + 16);
    FUZZ_CHECK(buf != NULL, "out of memory");
    memcpy(buf, p, n);
    if (d->s->v13) {
        buf[n] = type;
        memset(buf + n + 1, 0, pad);
    }
    hdr[0] = d->s->v13 ? CT_APPDATA : type;
    hdr[1] = 3;
    hdr[2] = 3;
    hdr[3] = (uint8_t)(len >> 8);
    hdr[4] = (uint8_t)len;
    nonce_of(d, seq, nonce);
    if (d->s->v13) {
        memcpy(aad, hdr, 5);
        aadlen = 5;
    } else {
        for (i = 0; i < 8; i++)
            aad[i] = (uint8_t)(seq >> (56 - 8 * i));
        aad[8] = type;
        aad[9] = 3;
        aad[10] = 3;
        aad[11] = (uint8_t)(n >> 8);
        aad[12] = (uint8_t)n;
        aadlen = 13;
        memcpy(hdr + 5, nonce + 4, expl);
    }
    aead(d, 1, nonce, aad, aadlen, buf, inner, buf, tag);
    d->seq++;
    switch (dmg) {
    case DMG_TAG_BIT:
        tag[n % 16] ^= 0x40;
        break;
    case DMG_TAG_SHORT:                         /* the length says so: one byte short */
        len--;
        hdr[3] = (uint8_t)(len >> 8);
        hdr[4] = (uint8_t)len;
        break;
    case DMG_VERSION:
        hdr[2] = 1;
        break;
    case DMG_TYPE:
        hdr[0] = d->s->v13 ? CT_HANDSHAKE : 24;
        break;
    case DMG_OVERSIZE:                          /* a header alone, over the limit */
        len = d->s->v13 ? MAX_PLAIN + 256 + 1 : MAX_PLAIN + 2048 + 1;
        hdr[3] = (uint8_t)(len >> 8);
        hdr[4] = (uint8_t)len;
        put(w, hdr, 5);
        free(buf);
        return;
    case DMG_TOO_SHORT:                         /* shorter than a tag */
        len = expl + 15;
        hdr[3] = 0;
        hdr[4] = (uint8_t)len;
        put(w, hdr, 5 + expl);
        put(w, tag, 15);
        free(buf);
        return;
    }
    put(w, hdr, 5 + expl);
    put(w, buf, inner);
    put(w, tag, dmg == DMG_TAG_SHORT ? 15 : 16);
    free(buf);
}

/* ------------------------------------------------------------------ the model */

struct model {
    struct dir   c2s;           /* the peer's sealing state */
    struct bytes plain;         /* authenticated application data, in order */
    int          ended;         /* the receiver must have stopped at some record */
    int          unknown;       /* garbage was sent: only weak checks hold after it */
    int          end;           /* UV_EOF or UV_EPROTO */
    int          alert;         /* our fatal alert expected last, or -1 */
    unsigned     norenego;      /* TLS 1.2 no_renegotiation warnings expected (0 or 1) */
    unsigned     idle;          /* records in a row without application data */
    unsigned     key_updates;   /* TLS 1.3 KeyUpdates expected from the server */
};

static void model_fail(struct model *m, int alert)
{
    if (m->ended || m->unknown)
        return;
    m->ended = 1;
    m->end = UV_EPROTO;
    m->alert = alert;
}

/* A record that authenticated and carries <data> bytes of application data (0: none, or
 * not application data): the 33rd in a row without any fails with unexpected_message
 * before its content counts (common/tls.c, IDLE_RECORDS_MAX). Returns 0 when it failed. */
static int model_idle(struct model *m, size_t data)
{
    if (m->ended || m->unknown)
        return 1;
    if (data) {
        m->idle = 0;
        return 1;
    }
    if (++m->idle > 32) {
        model_fail(m, AD_UNEXPECTED_MESSAGE);
        return 0;
    }
    return 1;
}

/* The alert a record of <n> bytes of content (<pad> zeros, damage <dmg>) must bring, in
 * the order a receiver finds out: the header (type, version, length), then the
 * authentication (TLS 1.2 checks the plaintext length before), then the content's length.
 * 0: none, the record is good. */
static int record_alert(const struct suite *s, size_t n, size_t pad, int dmg)
{
    size_t expl = s->v13 ? 0 : (size_t)s->explicit12;
    size_t len = expl + n + (s->v13 ? 1 + pad : 0) + 16 - (dmg == DMG_TAG_SHORT);

    if (dmg == DMG_TYPE)
        return AD_UNEXPECTED_MESSAGE;
    if (dmg == DMG_VERSION)
        return AD_PROTOCOL_VERSION;
    if (dmg == DMG_OVERSIZE)
        return AD_RECORD_OVERFLOW;
    if (dmg == DMG_TOO_SHORT)                   /* its header says so, whatever <n> */
        return AD_BAD_RECORD_MAC;
    if (len > (s->v13 ? MAX_PLAIN + 256 : MAX_PLAIN + 2048))
        return AD_RECORD_OVERFLOW;
    if (len < expl + 16 + (size_t)s->v13)
        return AD_BAD_RECORD_MAC;
    if (!s->v13 && len - expl - 16 > MAX_PLAIN)
        return AD_RECORD_OVERFLOW;
    if (dmg != DMG_NONE)
        return AD_BAD_RECORD_MAC;
    return n > MAX_PLAIN ? AD_RECORD_OVERFLOW : 0;
}

/* An alert's content as a receiver must take it (RFC 8446 §6, RFC 5246 §7.2). */
static void model_alert(struct model *m, const uint8_t *p, size_t n)
{
    if (m->ended || m->unknown)
        return;
    if (n != 2) {
        model_fail(m, AD_DECODE_ERROR);
    } else if (p[1] == AD_CLOSE_NOTIFY) {
        m->ended = 1;
        m->end = UV_EOF;
        m->alert = -1;
    } else if (m->c2s.s->v13 ? p[1] != AD_USER_CANCELED : p[0] != 1) {
        model_fail(m, -1);      /* the peer's fatal alert: not answered */
    }
}

/* A handshake record's content after the handshake: a renegotiation (TLS 1.2: refused with
 * a warning), or TLS 1.3 post-handshake messages, of which a server takes KeyUpdate only;
 * a KeyUpdate must end its record (RFC 8446 §5.1). Applies KeyUpdates to the peer's keys. */
static void model_handshake(struct model *m, const uint8_t *p, size_t n)
{
    size_t len;

    if (m->ended || m->unknown)
        return;
    if (n == 0) {
        model_fail(m, AD_UNEXPECTED_MESSAGE);
        return;
    }
    if (!m->c2s.s->v13) {
        if (m->norenego)        /* the second renegotiation */
            model_fail(m, AD_UNEXPECTED_MESSAGE);
        else
            m->norenego++;
        return;
    }
    while (n > 0) {
        if (n < 4) {
            model_fail(m, AD_UNEXPECTED_MESSAGE);
            return;
        }
        len = (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3];
        if (len > n - 4 || p[0] != 24) {
            model_fail(m, AD_UNEXPECTED_MESSAGE);
            return;
        }
        if (len != 1 || p[4] > 1) {
            model_fail(m, AD_DECODE_ERROR);
            return;
        }
        if (n != 5) {
            model_fail(m, AD_UNEXPECTED_MESSAGE);
            return;
        }
        dir13_update(&m->c2s);
        m->key_updates += p[4];
        return;
    }
}

/* Reads an operand byte (0 past the end). */
static uint8_t take(const uint8_t **p, const uint8_t *end)
{
    return *p < end ? *(*p)++ : 0;
}

/* Builds the wire bytes of <data> (operations, see the file's comment) into <w>, and what a
 * correct receiver makes of them into <m>. */
static void build_wire(const uint8_t *data, const uint8_t *end, struct bytes *w,
                       struct model *m)
{
    static uint8_t big[MAX_PLAIN + 512];
    const int v13 = m->c2s.s->v13;
    uint8_t op, kind, flags, content[300];
    size_t n, pad;
    int dmg;

    for (n = 0; n < sizeof(big); n++)
        big[n] = (uint8_t)(n * 7 + 1);
    while (data < end && w->len < WIRE_MAX - 70000) {
        op = *data++;
        kind = op & 7;
        flags = op >> 3;
        dmg = flags & 7;
        pad = (flags & 8) && v13 ? 32 : 0;
        switch (kind) {
        case 0:                 /* application data, up to 255 bytes from the input */
        case 1:                 /* application data, up to 16 KiB + 511 of a pattern */
            if (kind == 0) {
                n = take(&data, end);
                if (n > (size_t)(end - data))
                    n = (size_t)(end - data);
                memcpy(content, data, n);
                data += n;
            } else {
                n = (size_t)take(&data, end) << 8;
                n = (n | take(&data, end)) % (MAX_PLAIN + 512);
            }
            seal(&m->c2s, w, CT_APPDATA, kind ? big : content, n, pad, dmg);
            if (record_alert(m->c2s.s, n, pad, dmg))
                model_fail(m, record_alert(m->c2s.s, n, pad, dmg));
            else if (model_idle(m, n) && !m->ended && !m->unknown)
                put(&m->plain, kind ? big : content, n);
            break;
        case 2:                 /* an alert: level, description (flags & 1: a third byte) */
            content[0] = take(&data, end);
            content[1] = take(&data, end);
            content[2] = 0;
            n = 2 + (flags & 1);
            seal(&m->c2s, w, CT_ALERT, content, n, pad, DMG_NONE);
            if (model_idle(m, 0))
                model_alert(m, content, n);
            break;
        case 3:                 /* TLS 1.3 KeyUpdate (flags & 1: update_requested; & 2: a bad
                                 * value; & 4: another message after it in the record);
                                 * TLS 1.2 a HelloRequest */
            content[0] = v13 ? 24 : 0;
            content[1] = content[2] = 0;
            content[3] = v13 ? 1 : 0;
            content[4] = (flags & 2) ? 2 : flags & 1;
            n = v13 ? 5 : 4;
            if (v13 && (flags & 4)) {
                memcpy(content + 5, "\x18\x00\x00\x01\x00", 5);
                n += 5;
            }
            seal(&m->c2s, w, CT_HANDSHAKE, content, n, pad, DMG_NONE);
            if (model_idle(m, 0))
                model_handshake(m, content, n);
            break;
        case 4:                 /* a handshake record with content from the input */
            n = take(&data, end);
            if (n > (size_t)(end - data))
                n = (size_t)(end - data);
            memcpy(content, data, n);
            data += n;
            seal(&m->c2s, w, CT_HANDSHAKE, content, n, pad, DMG_NONE);
            if (model_idle(m, 0))
                model_handshake(m, content, n);
            break;
        case 5:                 /* close_notify */
            seal(&m->c2s, w, CT_ALERT, (const uint8_t *)"\x01\x00", 2, pad, DMG_NONE);
            if (model_idle(m, 0))
                model_alert(m, (const uint8_t *)"\x01\x00", 2);
            break;
        case 6:                 /* garbage from the input */
            n = take(&data, end);
            if (n > (size_t)(end - data))
                n = (size_t)(end - data);
            put(w, data, n);
            data += n;
            if (n > 0 && !m->ended)
                m->unknown = 1;
            break;
        case 7:                 /* a ChangeCipherSpec after the handshake */
            seal(&m->c2s, w, CT_CCS, (const uint8_t *)"\x01", 1, pad, DMG_NONE);
            model_fail(m, AD_UNEXPECTED_MESSAGE);
            break;
        }
    }
    if (!m->ended && !m->unknown) {         /* the peer's EOF between records */
        m->ended = 1;
        m->end = UV_EOF;
        m->alert = -1;
    }
}

/* ------------------------------------------------------------------ one connection */

struct conn {
    struct coro_stream srv, peer;
    const uint8_t     *wire;
    size_t             wire_len;
    uint32_t           seed;
    struct bytes       plain, back;     /* what the application read; what the peer got */
    int                end;
    int                app_done;        /* the application's read ended: it flushes, closes */
    int                peer_ends;       /* the peer's writer and reader: the last closes */
    int                done;            /* coroutines finished, of 3 */
};

static void app_main(void *arg)
{
    struct conn *c = arg;
    struct coro_buf *b;
    ssize_t n;

    for (;;) {
        n = coro_read(&c->srv, &b, CORO_FOREVER);   /* the peer always ends: see peer_main() */
        if (n < 0)
            break;
        put(&c->plain, b->data + b->off, (size_t)n);
        coro_buf_put(sched, b);
    }
    c->end = (int)n;
    c->app_done = 1;
    /* What the record layer queued (warnings, KeyUpdates, our fatal alert) reaches the
     * peer, which reads all along: closing drops queued writes, and a peer that sends
     * renegotiations faster than its socket takes our answers has some queued. */
    coro_flush(&c->srv, CORO_FOREVER);
    coro_stream_close(&c->srv);
    c->done++;
}

static void peer_end(struct conn *c)
{
    if (++c->peer_ends == 2)
        coro_stream_close(&c->peer);
    c->done++;
}

/* The peer's reader: what the server sends, while the writer writes (as a real peer reads:
 * the server's answers never wait for the peer to finish writing). */
static void peer_reader(void *arg)
{
    struct conn *c = arg;
    struct coro_buf *b;

    while (coro_read(&c->peer, &b, CORO_FOREVER) >= 0) {
        put(&c->back, b->data + b->off, b->len - b->off);
        coro_buf_put(sched, b);
    }
    peer_end(c);
}

static void peer_main(void *arg)
{
    struct conn *c = arg;
    struct fuzz_chunks ch = { c->wire, c->wire_len, c->seed };
    const uint8_t *p;
    size_t n;

    /* No timeouts here: the application reads until its read fails, then flushes and
     * closes; so a write can only fail once it has, and the reader ends when it has. A
     * timeout would only fire on a busy machine, and a write cut short by one sends less
     * than the model was built from (a stream that ends between records: UV_EOF where the
     * model expects the records still unsent to end it). A record layer that stops reading
     * is a hang, which libFuzzer's -timeout reports as one. */
    while ((p = fuzz_chunks_next(&ch, &n)) != NULL) {
        if (coro_write_copy(&c->peer, p, n, CORO_FOREVER) < 0) {
            FUZZ_CHECK(c->app_done, "the peer's write failed while the server still reads");
            break;
        }
        if (c->seed)
            coro_sleep(0);      /* the receiver takes each piece apart */
    }
    coro_shutdown(&c->peer);
    peer_end(c);
}

/* ------------------------------------------------------------------ setup */

static EVP_PKEY *key;
static X509     *cert;

static void make_cert(void)
{
    X509_NAME *name;

    key = EVP_EC_gen("P-256");
    cert = X509_new();
    FUZZ_CHECK(key && cert, "key or certificate");
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 86400);
    X509_set_pubkey(cert, key);
    name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"fuzz", -1,
                               -1, 0);
    X509_set_issuer_name(cert, name);
    FUZZ_CHECK(X509_sign(cert, key, EVP_sha256()) > 0, "X509_sign");
}

static SSL_CTX *make_ctx(const struct suite *s, int server)
{
    SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    char err[200];
    int ok;

    FUZZ_CHECK(ctx != NULL, "SSL_CTX_new");
    if (s->v13) {
        ok = SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) &&
             SSL_CTX_set_ciphersuites(ctx, s->cipher);
    } else {
        ok = SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION) &&
             SSL_CTX_set_cipher_list(ctx, s->cipher);
    }
    if (server)
        ok = ok && SSL_CTX_use_certificate(ctx, cert) && SSL_CTX_use_PrivateKey(ctx, key);
    else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_keylog_callback(ctx, on_keylog);
        SSL_CTX_set_msg_callback(ctx, on_msg);
    }
    FUZZ_CHECK(ok, "context for %s", s->name);
    FUZZ_CHECK(cg_tls_ctx_prepare(ctx, server, err, sizeof(err)) == 0, "prepare: %s", err);
    return ctx;
}

struct hs_arg {
    struct coro_stream *st;
    SSL_CTX            *ctx;
    int                 server;
    int                 rc;
    struct cg_tls_info  info;
};

static void hs_main(void *arg)
{
    struct hs_arg *h = arg;

    h->rc = h->server ? cg_tls_accept(h->st, h->ctx, READ_MS, &h->info)
                      : cg_tls_connect(h->st, h->ctx, NULL, NULL, NULL, READ_MS, &h->info);
}

static void setup_suite(int i)
{
    const struct suite *s = &suites[i];
    struct tmpl *t = &tmpls[i];
    struct hs_arg hs[2];
    SSL_CTX *sctx = make_ctx(s, 1), *cctx = make_ctx(s, 0);
    int sv[2];

    memset(&logged, 0, sizeof(logged));
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
               "socketpair");
    coro_stream_init(sched, &t->srv);
    coro_stream_init(sched, &t->cli);
    coro_stream_open(&t->srv, sv[0]);
    coro_stream_open(&t->cli, sv[1]);
    hs[0] = (struct hs_arg){ .st = &t->srv, .ctx = sctx, .server = 1, .rc = 1 };
    hs[1] = (struct hs_arg){ .st = &t->cli, .ctx = cctx, .server = 0, .rc = 1 };
    coro_spawn(sched, hs_main, &hs[0], "server", NULL);
    coro_spawn(sched, hs_main, &hs[1], "client", NULL);
    while (hs[0].rc == 1 || hs[1].rc == 1)
        uv_run(&loop, UV_RUN_ONCE);
    FUZZ_CHECK(hs[0].rc == 0 && hs[1].rc == 0, "%s handshake: %s / %s", s->name,
               hs[0].info.why, hs[1].info.why);
    t->c2s.s = t->s2c.s = s;
    if (s->v13) {
        FUZZ_CHECK((logged.have & 3) == 3, "%s: traffic secrets not logged", s->name);
        memcpy(t->c2s.sec, logged.csec, sizeof(logged.csec));
        memcpy(t->s2c.sec, logged.ssec, sizeof(logged.ssec));
        dir13_keys(&t->c2s);
        dir13_keys(&t->s2c);
        t->c2s.seq = 0;
    } else {
        FUZZ_CHECK((logged.have & 12) == 12, "%s: master secret not logged", s->name);
        keys12(t, s);
        t->c2s.seq = 1;                         /* after the client's Finished */
    }
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
}

static void setup(void)
{
    int i;

    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    sched = coro_sched_new(&loop, NULL);
    FUZZ_CHECK(sched != NULL, "scheduler");
    make_cert();
    for (i = 0; i < 4; i++)
        setup_suite(i);
    base_bufs = coro_buf_outstanding(sched);
}

/* ------------------------------------------------------------------ the checks */

/* Opens every record the server sent (<c>->back) with its keys, checking each, and counts
 * what they are. Returns the last record's alert description if it is a fatal alert, or
 * -1. */
static int check_back(const struct conn *c, struct dir *d, const struct model *m)
{
    const uint8_t *p = c->back.p;
    size_t left = c->back.len, len, expl = d->s->v13 ? 0 : (size_t)d->s->explicit12, clen, n;
    unsigned warnings = 0, updates = 0, seq_tries = 64;
    uint8_t aad[13], nonce[12], *buf, type;
    int last_fatal = -1, ok, i;

    while (left > 0) {
        FUZZ_CHECK(left >= 5, "%zu bytes after the last record", left);
        len = (size_t)p[3] << 8 | p[4];
        FUZZ_CHECK(left >= 5 + len && len >= expl + 16, "a cut or short record (%zu)", len);
        clen = len - expl - 16;
        buf = malloc(clen + 16);
        FUZZ_CHECK(buf != NULL, "out of memory");
        for (;;) {
            nonce_of(d, d->seq, nonce);
            if (d->s->v13) {
                memcpy(aad, p, 5);
            } else {
                for (i = 0; i < 8; i++)
                    aad[i] = (uint8_t)(d->seq >> (56 - 8 * i));
                memcpy(aad + 8, p, 3);
                aad[11] = (uint8_t)(clen >> 8);
                aad[12] = (uint8_t)clen;
                if (expl)
                    memcpy(nonce + 4, p + 5, 8);
            }
            ok = aead(d, 0, nonce, aad, d->s->v13 ? 5 : 13, p + 5 + expl, clen, buf,
                      (uint8_t *)p + 5 + expl + clen);
            if (ok || --seq_tries == 0)
                break;
            d->seq++;               /* the first record: the server's sequence is not known */
        }
        FUZZ_CHECK(ok, "a record from the server does not authenticate");
        seq_tries = 1;
        d->seq++;
        n = clen;
        type = p[0];
        if (d->s->v13) {
            while (n > 0 && buf[n - 1] == 0)
                n--;
            FUZZ_CHECK(n > 0, "a server record without content type");
            type = buf[--n];
        }
        last_fatal = -1;
        if (type == CT_ALERT) {
            FUZZ_CHECK(n == 2, "an alert of %zu bytes", n);
            if (buf[0] == 1 && buf[1] == AD_NO_RENEGOTIATION)
                warnings++;
            else if (buf[0] == 2)
                last_fatal = buf[1];
            else
                FUZZ_CHECK(0, "alert %u/%u from the server", buf[0], buf[1]);
        } else if (type == CT_HANDSHAKE) {
            FUZZ_CHECK(d->s->v13 && n == 5 && buf[0] == 24 && buf[4] == 0,
                       "a handshake message from the server that is not KeyUpdate");
            updates++;
            dir13_update(d);
        } else {
            FUZZ_CHECK(0, "record type %u from the server", type);
        }
        free(buf);
        p += 5 + len;
        left -= 5 + len;
    }
    if (!m->unknown) {
        FUZZ_CHECK(warnings == m->norenego, "%u no_renegotiation warnings, expected %u",
                   warnings, m->norenego);
        /* An answer waits for our next data record while bytes are queued to the peer
         * (common/tls.c), and the server here sends none: fewer may come, never more,
         * and the first request finds nothing queued. */
        FUZZ_CHECK(updates <= m->key_updates && (updates > 0 || m->key_updates == 0),
                   "%u KeyUpdates, expected %u", updates, m->key_updates);
    }
    return last_fatal;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct model m;
    struct bytes wire = { 0 };
    struct conn c;
    struct tmpl *t;
    struct dir s2c;
    int sv[2], fatal;

    if (!sched)
        setup();
    if (size < 1 || size > INPUT_MAX)
        return 0;
    t = &tmpls[data[0] & 3];
    memset(&m, 0, sizeof(m));
    m.c2s = t->c2s;
    m.alert = -1;
    build_wire(data + 1, data + size, &wire, &m);

    memset(&c, 0, sizeof(c));
    c.wire = wire.p;
    c.wire_len = wire.len;
    c.seed = data[0] >> 2;
    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0,
               "socketpair");
    coro_stream_init(sched, &c.srv);
    coro_stream_init(sched, &c.peer);
    coro_stream_open(&c.srv, sv[0]);
    coro_stream_open(&c.peer, sv[1]);
    FUZZ_CHECK(cg_tls_copy(&t->srv, &c.srv) == 0, "cg_tls_copy");
    FUZZ_CHECK(coro_spawn(sched, app_main, &c, "app", NULL) == 0, "spawn");
    FUZZ_CHECK(coro_spawn(sched, peer_main, &c, "peer", NULL) == 0, "spawn");
    FUZZ_CHECK(coro_spawn(sched, peer_reader, &c, "peer reader", NULL) == 0, "spawn");
    while (c.done < 3)
        uv_run(&loop, UV_RUN_ONCE);

    /* Never a byte that was not authenticated; all of them when the stream ended well. */
    FUZZ_CHECK(c.plain.len == 0 || (c.plain.len <= m.plain.len &&
                                     !memcmp(c.plain.p, m.plain.p, c.plain.len)),
               "delivered %zu bytes that are not the first of the %zu authenticated",
               c.plain.len, m.plain.len);
    s2c = t->s2c;
    fatal = check_back(&c, &s2c, &m);
    if (m.unknown) {
        FUZZ_CHECK(c.end == UV_EOF || c.end == UV_EPROTO, "after garbage: ended with %s",
                   uv_err_name(c.end));
        /* Either may come without our alert: UV_EPROTO also when the garbage ended in the
         * middle of a record (a truncation: the peer's FIN came where its bytes should). */
    } else {
        FUZZ_CHECK(c.end == m.end, "ended with %s, expected %s", uv_err_name(c.end),
                   uv_err_name(m.end));
        FUZZ_CHECK(fatal == m.alert, "our last alert: %d, expected %d", fatal, m.alert);
        if (m.end == UV_EOF)
            FUZZ_CHECK(c.plain.len == m.plain.len, "delivered %zu of %zu bytes before the "
                       "end", c.plain.len, m.plain.len);
    }
    FUZZ_CHECK(coro_sched_count(sched) == 0, "%u coroutines left", coro_sched_count(sched));
    FUZZ_CHECK(coro_buf_outstanding(sched) == base_bufs, "%u pooled buffers not given back",
               coro_buf_outstanding(sched) - base_bufs);
    free(wire.p);
    free(c.plain.p);
    free(c.back.p);
    free(m.plain.p);
    return 0;
}
