/* common/handshake.h — the WebSocket opening handshake (RFC 6455 §4), both ends.
 *
 * A struct cg_handshake parses one HTTP/1.1 head with llhttp, fed in whatever pieces the
 * network delivers, under limits (total head bytes, header count, request-target length),
 * and keeps only the headers a gateway needs. Then:
 *   - a client's request is checked as RFC 6455 §4.2.1 asks (cg_handshake_check_request),
 *     giving the 101 accept value or the HTTP status to refuse with;
 *   - the request to the backend is written from it (cg_handshake_backend_request);
 *   - the backend's response is checked against what we sent (cg_handshake_check_response).
 * Nothing here does I/O; the struct lives in heap memory (a coroutine may park between
 * feeds) and owns small strings freed by cg_handshake_deinit().
 */
#ifndef CG_HANDSHAKE_H
#define CG_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>
#include <llhttp.h>

#define CG_HS_MAX_HEAD_DEFAULT    8192u
#define CG_HS_MAX_HEADERS_DEFAULT 64u
#define CG_HS_MAX_TARGET_DEFAULT  4096u
#define CG_WS_ACCEPT_LEN          28     /* base64 of a SHA-1 digest */
#define CG_WS_KEY_LEN             24     /* base64 of 16 bytes */

/* The headers we keep, by lowercase name. List headers seen twice are joined with ", "
 * (RFC 9110 §5.3); a singleton seen twice is recorded as a duplicate. */
enum cg_hs_hdr {
    CG_HS_HOST,
    CG_HS_UPGRADE,           /* list */
    CG_HS_CONNECTION,        /* list */
    CG_HS_KEY,               /* Sec-WebSocket-Key */
    CG_HS_VERSION,           /* Sec-WebSocket-Version */
    CG_HS_PROTOCOL,          /* Sec-WebSocket-Protocol, list */
    CG_HS_EXTENSIONS,        /* Sec-WebSocket-Extensions, list */
    CG_HS_ACCEPT,            /* Sec-WebSocket-Accept (responses) */
    CG_HS_ORIGIN,
    CG_HS_USER_AGENT,
    CG_HS_COOKIE,            /* list ("; " would be right, but a second line is rare) */
    CG_HS_AUTHORIZATION,
    CG_HS_XFF,               /* X-Forwarded-For, list */
    CG_HS_FORWARDED,         /* list */
    CG_HS_REQUEST_ID,        /* X-Request-Id */
    CG_HS_EXTRA,             /* the one of cg_handshake_keep_header(), list */
    CG_HS_NHDRS,
};

struct cg_hs_limits {
    uint32_t max_head;       /* request/status line + headers + blank line, bytes */
    uint32_t max_headers;    /* header lines */
    uint32_t max_target;     /* request-target (path + query) bytes */
};

struct cg_hs_str {
    char    *p;              /* NUL-terminated once anything was appended */
    uint32_t len;
    uint32_t cap;
};

enum cg_hs_kind {
    CG_HS_REQUEST,
    CG_HS_RESPONSE,
};

struct cg_handshake {
    llhttp_t            parser;
    struct cg_hs_limits lim;
    uint32_t            fed;        /* head bytes consumed so far */
    uint32_t            nheaders;
    uint32_t            tail;       /* after completion: bytes of the last feed past the head */
    int                 status;     /* request refused: the HTTP status to answer; else 0 */
    const char         *error;      /* why it was refused or failed (static text), or NULL */
    uint32_t            seen;       /* bit per enum cg_hs_hdr */
    uint32_t            dup;        /* bit per singleton header seen more than once */
    int16_t             cur;        /* header whose value is being read, or -1 */
    uint8_t             field_len;  /* 0xff: longer than any header we keep */
    uint8_t             line_done;  /* the request/status line was parsed */
    uint8_t             done;       /* the head is complete */
    char                field[64];  /* lowercase name being read */
    const char         *extra;      /* cg_handshake_keep_header()'s name, or NULL */
    struct cg_hs_str    target;     /* request-target */
    struct cg_hs_str    hdr[CG_HS_NHDRS];
    char                accept[CG_WS_ACCEPT_LEN + 1];   /* after a good request check */
    /* Where the strings go first (cg_handshake_set_arena()); malloc once it is full. */
    char               *arena;
    uint32_t            arena_used;
    uint32_t            arena_cap;
};

/* What a listener allows, for cg_handshake_check_request(). */
struct cg_hs_policy {
    const char *health_path;     /* answered 200 without upgrading; NULL or "" = none */
    const char *allowed_origins; /* space-separated origins, lowercase; NULL = any */
};

/* What the backend request adds (cg_handshake_backend_request). */
struct cg_hs_forward {
    const char *client_addr;     /* the client's IP address as text ("192.0.2.1", "::1") */
    const char *proto;           /* scheme the client used: "http" */
    const char *request_id;      /* X-Request-Id to send (the client's or a new one) */
    const char *key;             /* the Sec-WebSocket-Key for the backend */
    const char *extensions;      /* Sec-WebSocket-Extensions to offer (NULL: none) */
    /* A client certificate verified by our TLS (NULL: none): sent as X-SSL-Client-Verify,
     * X-SSL-Client-DN and X-SSL-Client-SHA256. A client's own headers of those names are
     * never forwarded (only the headers listed at cg_handshake_backend_request() are). */
    const char *cert_subject;    /* RFC 2253 */
    const char *cert_sha256;     /* hex */
    /* 1: <client_addr> is a trusted proxy (trusted_proxies): the request's X-Forwarded-For
     * and Forwarded are kept and <client_addr> is appended to them. 0 (the default): a
     * client could write anything there, so they are replaced by <client_addr> alone. */
    int         keep_chain;
};

/* Prepares <hs> to parse a <kind> head under <lim> (NULL: the defaults above; zero
 * fields also take their default). */
void cg_handshake_init(struct cg_handshake *hs, enum cg_hs_kind kind,
                       const struct cg_hs_limits *lim);

/* Makes <hs> keep its strings in <mem> (<size> bytes, which must outlive <hs>'s use)
 * rather than in malloc'ed blocks, as long as they fit. A handshake is short-lived and
 * its strings are small: in the heap they would leave small holes between the blocks of
 * connections that live on; in a pool buffer they leave nothing. */
void cg_handshake_set_arena(struct cg_handshake *hs, void *mem, size_t size);

/* Frees the strings <hs> holds. Idempotent; <hs> may be initialised again afterwards. */
void cg_handshake_deinit(struct cg_handshake *hs);

/* Parses <len> more bytes at <data>. Returns 1 when the head is complete (hs->tail = the
 * bytes of this call that follow it, which belong to the next protocol), 0 when more is
 * needed, or an error after which hs->status (requests) and hs->error are set:
 * -EMSGSIZE for a limit (414 request-target, 431 head or header count), -EBADMSG for
 * anything malformed (400), -ENOMEM (500). Feeding a completed or failed head returns the
 * same result again without reading <data>. */
int cg_handshake_feed(struct cg_handshake *hs, const void *data, size_t len);

/* The value of header <h>, trailing blanks removed, or NULL when absent. */
const char *cg_handshake_get(const struct cg_handshake *hs, enum cg_hs_hdr h);

/* The request-target's path (before any '?'); *<len> gets its length. "" before a
 * request-target was parsed. */
const char *cg_handshake_path(const struct cg_handshake *hs, size_t *len);

/* Makes <hs> keep header <name> too (lowercase, at most 63 characters; NULL or "": none),
 * under CG_HS_EXTRA; a name of enum cg_hs_hdr is kept anyway. <name> must outlive <hs>'s
 * parsing. Call before the first feed. */
void cg_handshake_keep_header(struct cg_handshake *hs, const char *name);

/* The value of the kept header <name> (lowercase), trailing blanks removed: one of enum
 * cg_hs_hdr or the one of cg_handshake_keep_header(). NULL when absent or not kept. */
const char *cg_handshake_header(const struct cg_handshake *hs, const char *name);

/* The value of cookie <name> (case-sensitive, RFC 6265 section 5.4) in the request's
 * Cookie header(s), as sent (quotes kept), *<len> its length; NULL when absent. */
const char *cg_handshake_cookie(const struct cg_handshake *hs, const char *name, size_t *len);

/* The value of query parameter <name> (case-sensitive, matched as sent: not decoded) in
 * the request-target, *<len> its length ("" for "?name" without '='); NULL when absent.
 * The first of repeated parameters counts. */
const char *cg_handshake_query(const struct cg_handshake *hs, const char *name, size_t *len);

/* Checks a complete request against RFC 6455 §4.2.1 and <pol>. Returns 0 for a valid
 * upgrade (hs->accept holds the Sec-WebSocket-Accept value), 1 for a health check to
 * answer 200, or -EPROTO with hs->status and hs->error set: 400 malformed, 403 origin not
 * allowed, 405 not GET, 426 not an upgrade or a version other than 13. */
int cg_handshake_check_request(struct cg_handshake *hs, const struct cg_hs_policy *pol);

/* Checks a complete backend response to a request sent with <key>, which offered the
 * subprotocols <offered> and the extensions <offered_ext> (header values; NULL = none):
 * status 101, Upgrade: websocket, Connection: upgrade, the right Sec-WebSocket-Accept, no
 * subprotocol that was not offered, and no extension but one permessage-deflate answer
 * that RFC 7692 allows for the offer. Returns 0 or -EPROTO with hs->error set. */
int cg_handshake_check_response(struct cg_handshake *hs, const char *key, const char *offered,
                                const char *offered_ext);

/* cg_handshake_check_response() against the Sec-WebSocket-Accept value <accept> the key
 * sent gives (cg_ws_accept()), already computed: a gateway that passes the client's key
 * on has it from the client's request (hs->accept there), and hashes once. */
int cg_handshake_check_response_accept(struct cg_handshake *hs, const char *accept,
                                       const char *offered, const char *offered_ext);

/* Copies the permessage-deflate offers (RFC 7692) of the Sec-WebSocket-Extensions value
 * <list> (NULL: none) into <out> of <size>, comma-separated, parameters as sent; every
 * other extension is left out: a gateway that relays frames cannot carry an extension it
 * does not know. Returns the length (0: none offered) or -ENOSPC. */
int cg_ws_deflate_offer(const char *list, char *out, size_t size);

/* Writes the backend's opening request for the checked client request <hs> into <buf> of
 * <size>: same request-target and Host, the key <f> gives, the client's subprotocols, Origin,
 * User-Agent, Cookie and Authorization, X-Forwarded-For/-Proto, Forwarded (RFC 7239) and
 * X-Request-Id from <f> (the client's X-Forwarded-For and Forwarded only with
 * f->keep_chain), and <f>'s extensions. Returns the length or -ENOSPC. */
int cg_handshake_backend_request(const struct cg_handshake *hs, const struct cg_hs_forward *f,
                                 char *buf, size_t size);

/* Writes the 101 answer to the checked client request <hs>, selecting <protocol> and the
 * <extensions> (the backend's answer; NULL or "" = none) and echoing <request_id> (NULL =
 * none). Returns the length or -ENOSPC. */
int cg_handshake_accept_response(const struct cg_handshake *hs, const char *protocol,
                                 const char *extensions, const char *request_id, char *buf,
                                 size_t size);

/* Writes a complete non-upgrade response with status <status>: a one-line text body,
 * Content-Length and Connection: close, plus what the status needs (426: Upgrade and
 * Sec-WebSocket-Version: 13; 405: Allow: GET) and <extra> (NULL, or header lines each
 * ending in CRLF, e.g. "Retry-After: 1\r\n"). Returns the length or -ENOSPC. */
int cg_http_response(int status, const char *extra, char *buf, size_t size);

/* The reason phrase of <status> ("Bad Request"), "Unknown" for codes we never send. */
const char *cg_http_reason(int status);

/* 1 when the comma-separated list <list> (<len> bytes) holds <token>, compared without
 * case, blanks around items ignored. */
int cg_hs_has_token(const char *list, size_t len, const char *token);

/* Sec-WebSocket-Accept for <key> (<len> bytes, as received): base64(SHA-1(key + GUID)),
 * written NUL-terminated to <out>. */
void cg_ws_accept(const char *key, size_t len, char out[CG_WS_ACCEPT_LEN + 1]);

/* SHA-1 (FIPS 180-4) of <len> bytes at <data> into <out>. */
void cg_sha1(const void *data, size_t len, uint8_t out[20]);

/* Base64 (RFC 4648, with padding) of <len> bytes into <out>, which must hold
 * 4 * ((len + 2) / 3) + 1 bytes; returns the length written (NUL not counted). */
size_t cg_base64_encode(const void *data, size_t len, char *out);

/* Decodes exactly the <len> characters at <in> (padding required, no blanks) into <out>
 * of <size> bytes. Returns the decoded length, or -EINVAL (malformed), -ENOSPC. */
int cg_base64_decode(const char *in, size_t len, uint8_t *out, size_t size);

#endif
