/* common/tls.h — TLS on coroutine streams, both ends (the daemon's listeners and upstreams,
 * the loadgen's client and echo server).
 *
 * OpenSSL does the handshake in the calling coroutine, over the coro_stream itself: a BIO
 * of ours hands it the bytes the stream received and gathers what it writes into pool
 * buffers; "want read" parks the coroutine, and OpenSSL never touches the socket. Once the
 * handshake is done (and, on a server, the session tickets are out), the traffic keys are
 * taken from it, the SSL object is freed, and our own record layer is installed on the
 * stream as a coro filter (coro/io.h): coro_read()/coro_try_read() return plaintext and
 * coro_write*() seal, so the relay and the WebSocket code do not know TLS is there. An
 * idle TLS connection then holds its keys, IVs, sequence numbers and traffic secrets
 * (about 200 bytes), nothing else: docs/tls.md gives the measurement that decided it.
 *
 * The record layer speaks TLS 1.3 and TLS 1.2 with the AEAD suites only (AES-128-GCM,
 * AES-256-GCM, ChaCha20-Poly1305); cg_tls_ctx_prepare() removes anything else from a
 * context. After the handshake it answers KeyUpdate (TLS 1.3), turns a close_notify into
 * EOF and sends one on coro_shutdown(), refuses TLS 1.2 renegotiation with a
 * no_renegotiation warning, and fails the connection on a bad record (bad_record_mac) or a
 * fatal alert.
 */
#ifndef CG_TLS_H
#define CG_TLS_H

#include <stdint.h>
#include <openssl/ssl.h>

#include "coro/io.h"

/* Why a handshake failed, for counters and logs. */
enum cg_tls_fail {
    CG_TLS_OK = 0,
    CG_TLS_FAIL_TIMEOUT,    /* not done within the timeout (a stalled or slow peer) */
    CG_TLS_FAIL_CLOSED,     /* the peer closed or reset the connection mid-handshake */
    CG_TLS_FAIL_NOT_TLS,    /* the first bytes are not a TLS ClientHello record (server) or
                             * not a TLS record (client): refused before OpenSSL sees them */
    CG_TLS_FAIL_PROTOCOL,   /* no common version, cipher, group or ALPN protocol; a
                             * malformed handshake message; an alert from the peer */
    CG_TLS_FAIL_CERT,       /* the peer's certificate was required and missing, or it
                             * failed verification (the client's, or the server's on an
                             * upstream with verification on) */
    CG_TLS_FAIL_LOCAL,      /* ours: out of memory, a suite our record layer lacks */
    CG_TLS_FAIL_COUNT
};

/* What a handshake established (or why it failed). Lives on the caller's stack during
 * the handshake; copy out what is needed. */
struct cg_tls_info {
    uint16_t    version;           /* TLS1_2_VERSION or TLS1_3_VERSION */
    const char *cipher;            /* OpenSSL's static name, "TLS_AES_128_GCM_SHA256" */
    const char *group;             /* key exchange group, static name ("x25519"), or "" */
    unsigned    resumed : 1;       /* from a session ticket */
    unsigned    peer_cert : 1;     /* the peer presented a certificate */
    long        verify_result;     /* X509_V_OK, or why the peer's certificate failed */
    char        alpn[32];          /* the protocol chosen by ALPN, "" when none */
    char        sni[256];          /* server: the name the client asked for; client: the
                                    * name sent; "" when none */
    char        peer_subject[256]; /* the peer certificate's subject, RFC 2253, or "" */
    char        peer_sha256[65];   /* hex SHA-256 of the peer certificate (DER), or "" */
    enum cg_tls_fail fail;         /* CG_TLS_OK on success */
    char        why[128];          /* on failure: OpenSSL's reason or ours, for a log line */
};

/* Makes <ctx> usable by cg_tls_accept()/cg_tls_connect() (call once per context, before
 * any handshake; every context an SNI callback may switch to needs it too): installs the
 * key-capture callback, turns off what our record layer does not do (renegotiation,
 * compression, read-ahead, early data), keeps only the AEAD suites of the TLS 1.2 cipher
 * list and TLS 1.3 ciphersuites already set on it, and remembers how many session tickets
 * a server sends after a full handshake (SSL_CTX_set_num_tickets() set before this call,
 * OpenSSL's default 2; 1 after a resumption, as OpenSSL does). Raises the minimum version
 * to TLS 1.2. Returns 0, or -1 with a sentence in <err> (for a config error: "no AEAD cipher
 * left in the TLS 1.2 cipher list"; a context meant for TLS 1.3 only says so with its
 * minimum version). A keylog callback set before is still called. */
int cg_tls_ctx_prepare(SSL_CTX *ctx, int server, char *err, size_t errlen);

/* Server side of a handshake on <st> (connected, nothing read from it yet by anyone else),
 * in the calling coroutine, within <timeout_ms> in all. The first record is checked before
 * OpenSSL is involved (a handshake record holding a ClientHello, of a sane length): garbage
 * costs no SSL object. On success the stream carries plaintext from then on (bytes that
 * came after the client's Finished are kept, in order) and 0 is returned. On failure
 * returns a negative libuv error (UV_ETIMEDOUT, UV_ECANCELED, UV_EPROTO, UV_ECONNRESET,
 * UV_EOF, UV_ENOMEM), with info->fail and info->why set; an alert OpenSSL produced has been
 * queued on the stream; the caller closes the stream.
 * Afterwards: coro_read() returns UV_EOF at the peer's close_notify (and, like TCP, at an EOF
 * without one), UV_EPROTO after a bad record or a fatal alert (ours has been sent);
 * coro_shutdown() sends our close_notify before the FIN; the stream's bytes_in/bytes_out
 * and coro_stream_queued() count bytes on the wire. */
int cg_tls_accept(struct coro_stream *st, SSL_CTX *ctx, int64_t timeout_ms,
                  struct cg_tls_info *info);

/* Client side: like cg_tls_accept(). <sni>: the server name to send (NULL or "": none);
 * verification (and the name to verify) is the context's and the caller's business
 * (SSL_CTX_set_verify(); for the host name, <verify_name> non-NULL sets
 * SSL_set1_host()). <session>: when non-NULL, *session (if non-NULL) is offered for
 * resumption, and on success *session is replaced by the session the server issued (a
 * TLS 1.3 client waits, within the same timeout, for the first NewSessionTicket that
 * follows the handshake), to be freed with SSL_SESSION_free(); when NULL no ticket is
 * awaited. If no ticket comes within the timeout, the connection stands (0) and *session
 * is left as it was. */
int cg_tls_connect(struct coro_stream *st, SSL_CTX *ctx, const char *sni,
                   const char *verify_name, SSL_SESSION **session, int64_t timeout_ms,
                   struct cg_tls_info *info);

/* A short name for <fail> ("timeout", "closed", "not_tls", "protocol", "cert", "local"). */
const char *cg_tls_fail_name(enum cg_tls_fail fail);

/* 1 when <st> carries TLS (a record layer installed by cg_tls_accept/connect). */
int cg_tls_active(const struct coro_stream *st);

/* Bytes of TLS state an idle connection holds (the record layer's object): for docs and
 * the memory test. */
size_t cg_tls_idle_bytes(void);

/* Gives <to> (a stream without a filter) a record layer in the state of <from>'s: the same
 * suite, keys, IVs and sequence numbers, in both directions; nothing <from> had received
 * and not yet delivered. For tests and fuzz targets that play many connections against
 * one handshake's keys. Call it on the thread that made <from>'s layer, and close <to>
 * there too. Returns 0, -EINVAL (<from> carries no TLS, or <to> has a filter already), or
 * -ENOMEM. */
int cg_tls_copy(const struct coro_stream *from, struct coro_stream *to);

/* Frees the calling thread's cipher contexts (the record layer keeps one per suite and
 * direction per thread, made on first use). A thread's exit frees them too; call it
 * before the end of a thread that is not joined normally, or to keep a leak checker
 * quiet. The thread may use TLS again afterwards (they are made again). The record-layer
 * objects of the thread's connections go with them: call it only once every TLS stream the
 * thread made is closed. */
void cg_tls_thread_cleanup(void);

#endif
