/* bench/tls_rekey.c — what re-keying a cipher context per record costs (docs/tls.md, "The
 * record layer"). `make bench-tls-rekey`.
 *
 * The record layer keeps no cipher context per connection: one per thread, suite and
 * direction, keyed for the record at hand. When consecutive records belong to different
 * connections the context is keyed again (EVP_CipherInit_ex() with the key: AES key
 * expansion and the GHASH key, or ChaCha20's key setup); within one connection only the
 * nonce changes. This measures, in thread CPU time, per record:
 *   init(key+iv)  EVP_CipherInit_ex() with key and nonce (a re-key)
 *   init(iv)      EVP_CipherInit_ex() with the nonce only (same key)
 *   seal 1K/16K   a whole seal (init with nonce, AAD, data, tag) of a 1 KiB / 16 KiB record
 * for AES-128-GCM, AES-256-GCM and ChaCha20-Poly1305. Medians of 5 rounds of 200,000
 * inits (20,000 seals of 16 KiB). One JSON line per suite.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#define ROUNDS 5

static double cpu_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

static double median(double *v)
{
    qsort(v, ROUNDS, sizeof(*v), cmp);
    return v[ROUNDS / 2];
}

/* ns per EVP_CipherInit_ex(), with two keys alternating (<rekey>) or the nonce only. */
static double init_ns(EVP_CIPHER_CTX *c, int rekey, int n)
{
    unsigned char k[2][32] = { { 1 }, { 2 } }, iv[12] = { 0 };
    double t0, r[ROUNDS];
    int i, j;

    for (j = 0; j < ROUNDS; j++) {
        t0 = cpu_ns();
        for (i = 0; i < n; i++) {
            iv[11] = (unsigned char)i;
            if (!EVP_CipherInit_ex(c, NULL, NULL, rekey ? k[i & 1] : NULL, iv, 1))
                abort();
        }
        r[j] = (cpu_ns() - t0) / n;
    }
    return median(r);
}

/* ns per sealed record of <len> bytes, re-keyed each time (<rekey>) or not. */
static double seal_ns(EVP_CIPHER_CTX *c, int rekey, size_t len, int n)
{
    static unsigned char in[16384], out[16384 + 16];
    unsigned char k[2][32] = { { 1 }, { 2 } }, iv[12] = { 0 }, aad[13] = { 0 }, tag[16];
    double t0, r[ROUNDS];
    int i, j, outl;

    for (j = 0; j < ROUNDS; j++) {
        t0 = cpu_ns();
        for (i = 0; i < n; i++) {
            iv[11] = (unsigned char)i;
            if (!EVP_CipherInit_ex(c, NULL, NULL, rekey ? k[i & 1] : NULL, iv, 1) ||
                !EVP_CipherUpdate(c, NULL, &outl, aad, sizeof(aad)) ||
                !EVP_CipherUpdate(c, out, &outl, in, (int)len) ||
                !EVP_CipherFinal_ex(c, tag, &outl) ||
                !EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_AEAD_GET_TAG, 16, tag))
                abort();
        }
        r[j] = (cpu_ns() - t0) / n;
    }
    return median(r);
}

int main(void)
{
    static const struct { const char *name; const EVP_CIPHER *(*cipher)(void); } s[] = {
        { "AES-128-GCM", EVP_aes_128_gcm },
        { "AES-256-GCM", EVP_aes_256_gcm },
        { "ChaCha20-Poly1305", EVP_chacha20_poly1305 },
    };
    unsigned char k[32] = { 1 };
    size_t i;

    for (i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
        EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();

        if (!c || !EVP_CipherInit_ex(c, s[i].cipher(), NULL, k, NULL, 1))
            return 1;
        printf("{\"suite\":\"%s\",\"init_key_iv_ns\":%.0f,\"init_iv_ns\":%.0f,"
               "\"seal_1k_same_key_ns\":%.0f,\"seal_1k_rekey_ns\":%.0f,"
               "\"seal_16k_same_key_ns\":%.0f,\"seal_16k_rekey_ns\":%.0f}\n",
               s[i].name, init_ns(c, 1, 200000), init_ns(c, 0, 200000),
               seal_ns(c, 0, 1024, 100000), seal_ns(c, 1, 1024, 100000),
               seal_ns(c, 0, 16384, 20000), seal_ns(c, 1, 16384, 20000));
        EVP_CIPHER_CTX_free(c);
    }
    return 0;
}
