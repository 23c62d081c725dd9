/* tests/test_handshake.c — the opening handshake: parsing under limits, RFC 6455 §4.2.1
 * checks, the backend's response, the heads we write, SHA-1 and base64. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/handshake.h"

/* RFC 6455 §1.3 */
static const char rfc6455_req[] =
    "GET /chat HTTP/1.1\r\n"
    "Host: server.example.com\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Origin: http://example.com\r\n"
    "Sec-WebSocket-Protocol: chat, superchat\r\n"
    "Sec-WebSocket-Version: 13\r\n"
    "\r\n";

/* ------------------------------------------------------------------ helpers */

/* Feeds <text> whole (<bytewise> 0) or byte by byte; returns the last feed's result. */
static int feed(struct cg_handshake *hs, const char *text, size_t n, int bytewise)
{
    size_t i;
    int rc = 0;

    if (!bytewise)
        return cg_handshake_feed(hs, text, n);
    for (i = 0; i < n && rc == 0; i++)
        rc = cg_handshake_feed(hs, text + i, 1);
    return rc;
}

/* Parses and checks the request <text>; returns the check's result, and the status in
 * *<status> (0 for a good upgrade, 200 for a health check). */
static int check_req(const char *text, const struct cg_hs_policy *pol,
                     const struct cg_hs_limits *lim, int bytewise, int *status)
{
    struct cg_handshake hs;
    int rc;

    cg_handshake_init(&hs, CG_HS_REQUEST, lim);
    rc = feed(&hs, text, strlen(text), bytewise);
    if (rc == 1) {
        rc = cg_handshake_check_request(&hs, pol);
        *status = rc == 0 ? 0 : rc == 1 ? 200 : hs.status;
    } else {
        *status = hs.status;
    }
    ck_assert_ptr_nonnull(hs.error ? hs.error : "ok");
    cg_handshake_deinit(&hs);
    return rc;
}

/* A request from the RFC example with line <from> replaced by <to> ("" removes it). */
static char *variant(const char *from, const char *to)
{
    const char *at = strstr(rfc6455_req, from);
    size_t n = strlen(rfc6455_req) + strlen(to) + 1;
    char *out = malloc(n);

    ck_assert_ptr_nonnull(at);
    snprintf(out, n, "%.*s%s%s", (int)(at - rfc6455_req), rfc6455_req, to,
             at + strlen(from));
    return out;
}

/* ------------------------------------------------------------------ the RFC example */

START_TEST(test_handshake_whole)
{
    struct cg_handshake hs;
    size_t n = strlen(rfc6455_req);

    cg_handshake_init(&hs, CG_HS_REQUEST, NULL);
    ck_assert_int_eq(cg_handshake_feed(&hs, rfc6455_req, n), 1);
    ck_assert_uint_eq(hs.tail, 0);
    ck_assert_uint_eq(hs.fed, n);
    ck_assert_int_eq(cg_handshake_check_request(&hs, NULL), 0);
    ck_assert_str_eq(hs.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_HOST), "server.example.com");
    ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_PROTOCOL), "chat, superchat");
    ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_ORIGIN), "http://example.com");
    ck_assert_ptr_null(cg_handshake_get(&hs, CG_HS_COOKIE));
    cg_handshake_deinit(&hs);
}
END_TEST

START_TEST(test_handshake_byte_by_byte)
{
    struct cg_handshake hs;
    size_t i, n = strlen(rfc6455_req);   /* RFC 6455 §1.3 example */
    int rc = 0;

    cg_handshake_init(&hs, CG_HS_REQUEST, NULL);
    for (i = 0; i < n && rc == 0; i++)
        rc = cg_handshake_feed(&hs, rfc6455_req + i, 1);
    ck_assert_int_eq(rc, 1);             /* 1 = complete */
    ck_assert_uint_eq(i, n);
    ck_assert_int_eq(cg_handshake_check_request(&hs, NULL), 0);
    ck_assert_str_eq(hs.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_PROTOCOL), "chat, superchat");
    cg_handshake_deinit(&hs);
}
END_TEST

/* Strings in an arena: fed byte by byte (so every string grows in steps, and a string that
 * is not the arena's last one moves), and with arenas too small for all of them (the rest
 * spills to malloc, a moved string included). The values are the same every time; ASan
 * checks that nothing in the arena is freed and nothing malloc'ed leaks. */
START_TEST(test_handshake_arena)
{
    static const size_t sizes[] = { 4096, 200, 64, 8 };
    char *req = variant("Origin: http://example.com\r\n",
                        "Origin: http://example.com\r\nSec-WebSocket-Protocol: third\r\n");
    size_t n = strlen(req), k;
    char arena[4096];
    struct cg_handshake hs;
    const char *path;
    size_t plen;

    for (k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        cg_handshake_init(&hs, CG_HS_REQUEST, NULL);
        memset(arena, 0x5a, sizeof(arena));
        cg_handshake_set_arena(&hs, arena, sizes[k]);
        ck_assert_int_eq(feed(&hs, req, n, (int)(k & 1) == 0), 1);
        ck_assert_uint_le(hs.arena_used, sizes[k]);
        ck_assert_int_eq(cg_handshake_check_request(&hs, NULL), 0);
        ck_assert_str_eq(hs.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_HOST), "server.example.com");
        ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_PROTOCOL), "third, chat, superchat");
        ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_ORIGIN), "http://example.com");
        path = cg_handshake_path(&hs, &plen);
        ck_assert_int_eq((int)plen, 5);
        ck_assert(memcmp(path, "/chat", 5) == 0);
        if (sizes[k] >= 4096)
            ck_assert_ptr_eq(cg_handshake_get(&hs, CG_HS_HOST) >= arena &&
                             cg_handshake_get(&hs, CG_HS_HOST) < arena + sizeof(arena)
                             ? arena : NULL, arena);
        ck_assert_uint_eq((unsigned char)arena[sizes[k] < sizeof(arena) ? sizes[k] : 0],
                          sizes[k] < sizeof(arena) ? 0x5a : (unsigned char)arena[0]);
        cg_handshake_deinit(&hs);
    }
    free(req);
}
END_TEST

/* Bytes after the head stay with the caller; the path excludes the query. */
START_TEST(test_handshake_tail_and_path)
{
    char *req = variant("GET /chat HTTP", "GET /chat/room?a=1&b=2 HTTP");
    char buf[1024];
    struct cg_handshake hs;
    const char *path;
    size_t plen, n;

    n = (size_t)snprintf(buf, sizeof(buf), "%s\x81\x85" "abcdefghi", req);
    cg_handshake_init(&hs, CG_HS_REQUEST, NULL);
    ck_assert_int_eq(cg_handshake_feed(&hs, buf, n), 1);
    ck_assert_uint_eq(hs.tail, 11);
    path = cg_handshake_path(&hs, &plen);
    ck_assert_int_eq((int)plen, 10);
    ck_assert(memcmp(path, "/chat/room", 10) == 0);
    ck_assert_str_eq(hs.target.p, "/chat/room?a=1&b=2");
    /* complete: further feeds read nothing */
    ck_assert_int_eq(cg_handshake_feed(&hs, "junk", 4), 1);
    cg_handshake_deinit(&hs);
    free(req);
}
END_TEST

/* Header names without case, lists joined, trailing blanks trimmed. */
START_TEST(test_handshake_headers)
{
    static const char req[] =
        "GET / HTTP/1.1\r\nhOsT: a.example:8080  \r\n"
        "UPGRADE: WebSocket\r\nconnection: keep-alive\r\nConnection: Upgrade\r\n"
        "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "X-Forwarded-For: 192.0.2.1\r\nX-Forwarded-For: 192.0.2.2\r\n"
        "X-Unknown-Header-With-A-Rather-Long-Name: whatever\r\n\r\n";
    struct cg_handshake hs;

    cg_handshake_init(&hs, CG_HS_REQUEST, NULL);
    ck_assert_int_eq(feed(&hs, req, strlen(req), _i), 1);
    ck_assert_int_eq(cg_handshake_check_request(&hs, NULL), 0);
    ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_HOST), "a.example:8080");
    ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_CONNECTION), "keep-alive, Upgrade");
    ck_assert_str_eq(cg_handshake_get(&hs, CG_HS_XFF), "192.0.2.1, 192.0.2.2");
    ck_assert_uint_eq(hs.nheaders, 9);
    cg_handshake_deinit(&hs);
}
END_TEST

/* The values balance = hash takes from a request (gateway/proto/ws-open.c): one extra
 * header kept by name (long names too, repeated lines joined), cookies from one or two
 * Cookie lines, query parameters as sent; fed whole and byte by byte. */
START_TEST(test_handshake_hash_values)
{
    static const char req[] =
        "GET /room/7?a=1&sid=x%20y&empty=&flag&sid=second#frag HTTP/1.1\r\n"
        "Host: h\r\n"
        "X-Tenant-Identifier-For-Sticky-Routing: acme\r\n"
        "x-tenant-identifier-for-sticky-routing: eu\r\n"
        "X-Other: no\r\n"
        "Cookie: theme=dark; sid=abc123 ;Sid=upper\r\n"
        "Cookie: last=\"q\"\r\n"
        "\r\n";
    const char *name = "x-tenant-identifier-for-sticky-routing";
    struct cg_handshake hs;
    const char *v;
    size_t n;

    cg_handshake_init(&hs, CG_HS_REQUEST, NULL);
    cg_handshake_keep_header(&hs, name);
    ck_assert_int_eq(feed(&hs, req, strlen(req), _i), 1);
    ck_assert_str_eq(cg_handshake_header(&hs, name), "acme, eu");
    ck_assert_str_eq(cg_handshake_header(&hs, "host"), "h");        /* a kept one */
    ck_assert_ptr_null(cg_handshake_header(&hs, "x-other"));        /* not kept */
    v = cg_handshake_cookie(&hs, "sid", &n);
    ck_assert_ptr_nonnull(v);
    ck_assert_uint_eq(n, 6);
    ck_assert_int_eq(memcmp(v, "abc123", 6), 0);
    v = cg_handshake_cookie(&hs, "Sid", &n);
    ck_assert_int_eq(n == 5 && memcmp(v, "upper", 5) == 0, 1);
    v = cg_handshake_cookie(&hs, "last", &n);                       /* the second line */
    ck_assert_int_eq(n == 3 && memcmp(v, "\"q\"", 3) == 0, 1);
    ck_assert_ptr_null(cg_handshake_cookie(&hs, "si", &n));
    ck_assert_ptr_null(cg_handshake_cookie(&hs, "dark", &n));
    v = cg_handshake_query(&hs, "sid", &n);                         /* the first, as sent */
    ck_assert_int_eq(n == 5 && memcmp(v, "x%20y", 5) == 0, 1);
    v = cg_handshake_query(&hs, "a", &n);
    ck_assert_int_eq(n == 1 && *v == '1', 1);
    ck_assert_ptr_nonnull(cg_handshake_query(&hs, "empty", &n));
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_nonnull(cg_handshake_query(&hs, "flag", &n));
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(cg_handshake_query(&hs, "frag", &n));
    ck_assert_ptr_null(cg_handshake_query(&hs, "room", &n));
    cg_handshake_deinit(&hs);

    /* Nothing kept, no cookie, no query. */
    cg_handshake_init(&hs, CG_HS_REQUEST, NULL);
    ck_assert_int_eq(feed(&hs, rfc6455_req, strlen(rfc6455_req), _i), 1);
    ck_assert_ptr_null(cg_handshake_header(&hs, name));
    ck_assert_ptr_null(cg_handshake_cookie(&hs, "sid", &n));
    ck_assert_ptr_null(cg_handshake_query(&hs, "sid", &n));
    cg_handshake_deinit(&hs);
}
END_TEST

/* ------------------------------------------------------------------ refusals */

struct refusal {
    const char *from;       /* line of the RFC example to replace */
    const char *to;
    int         status;
};

static const struct refusal refusals[] = {
    { "GET /chat HTTP/1.1", "POST /chat HTTP/1.1", 405 },
    { "GET /chat HTTP/1.1", "GET /chat HTTP/1.0", 400 },
    { "GET /chat HTTP/1.1", "GET http://x/chat HTTP/1.1", 400 },
    { "Upgrade: websocket\r\n", "", 426 },
    { "Upgrade: websocket", "Upgrade: h2c", 426 },
    { "Connection: Upgrade", "Connection: keep-alive", 400 },
    { "Host: server.example.com\r\n", "", 400 },
    { "Host: server.example.com\r\n", "Host: a\r\nHost: b\r\n", 400 },
    { "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "", 400 },
    { "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZQ", 400 },       /* no padding */
    { "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j", 400 },         /* 15 bytes */
    { "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25jZR==", 400 },     /* not canonical */
    { "dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j!Q==", 400 },
    { "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", 400 },
    { "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", 426 },
    { "Sec-WebSocket-Version: 13\r\n", "", 426 },
    { "Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 13\r\nContent-Length: 3", 400 },
    { "Origin: http://example.com", "Origin: http://evil.example", 403 },
    { "GET /chat HTTP/1.1", "BLAH /chat HTTP/1.1", 400 },
    { "Host: server.example.com", "Host: a\nb", 400 },
    /* Empty or invalid Host (RFC 9112 3.2): ours to refuse, never the backend's. */
    { "Host: server.example.com", "Host:", 400 },
    { "Host: server.example.com", "Host:   ", 400 },
    { "Host: server.example.com", "Host: :8080", 400 },
    { "Host: server.example.com", "Host: a b", 400 },
    { "Host: server.example.com", "Host: a/b", 400 },
    { "Host: server.example.com", "Host: user@a", 400 },
    { "Host: server.example.com", "Host: a:80:80", 400 },
    { "Host: server.example.com", "Host: a:123456", 400 },
    { "Host: server.example.com", "Host: a:65536", 400 },
    { "Host: server.example.com", "Host: a:8x", 400 },
    { "Host: server.example.com", "Host: a%zz", 400 },
    { "Host: server.example.com", "Host: [::1", 400 },
    { "Host: server.example.com", "Host: []", 400 },
    { "Host: server.example.com", "Host: [::1]x", 400 },
    { "Host: server.example.com", "Host: a\"b", 400 },
    { "GET /chat HTTP/1.1", "GET /chat HTTP/1.1 extra", 400 },
};

START_TEST(test_handshake_refusals)
{
    const struct refusal *r = &refusals[_i / 2];
    struct cg_hs_policy pol = { "/healthz", "http://example.com https://example.com" };
    char *req = variant(r->from, r->to);
    int status = -1;

    ck_assert_int_lt(check_req(req, &pol, NULL, _i % 2, &status), 0);
    ck_assert_msg(status == r->status, "refusal %d (%s): status %d, expected %d", _i / 2,
                  r->to, status, r->status);
    free(req);
}
END_TEST

/* Host values a server must take (RFC 9110 4.2.1, RFC 3986 3.2.2). */
static const char *const good_hosts[] = {
    "Host: a", "Host: server.example.com:8080", "Host: 127.0.0.1", "Host: 127.0.0.1:1",
    "Host: [::1]", "Host: [2001:db8::1]:443", "Host: xn--bcher-kva.example",
    "Host: a_b.example", "Host: a%41b", "Host: a:", "Host: a:65535", "Host: A.EXAMPLE",
};

START_TEST(test_handshake_hosts)
{
    char *req = variant("Host: server.example.com", good_hosts[_i]);
    int status = -1;

    ck_assert_msg(check_req(req, NULL, NULL, 0, &status) == 0, "%s refused with %d",
                  good_hosts[_i], status);
    free(req);
}
END_TEST

START_TEST(test_handshake_origins)
{
    struct cg_hs_policy pol = { NULL, "https://a.example http://b.example:8080" };
    char *ok = variant("Origin: http://example.com", "Origin: HTTP://B.example:8080");
    char *none = variant("Origin: http://example.com\r\n", "");
    char *bad = variant("Origin: http://example.com", "Origin: http://b.example");
    int status;

    ck_assert_int_eq(check_req(ok, &pol, NULL, 0, &status), 0);
    ck_assert_int_eq(check_req(none, &pol, NULL, 0, &status), 0);  /* no Origin: allowed */
    ck_assert_int_lt(check_req(bad, &pol, NULL, 0, &status), 0);
    ck_assert_int_eq(status, 403);
    pol.allowed_origins = "*";
    ck_assert_int_eq(check_req(bad, &pol, NULL, 0, &status), 0);
    pol.allowed_origins = NULL;
    ck_assert_int_eq(check_req(bad, &pol, NULL, 0, &status), 0);
    free(ok);
    free(none);
    free(bad);
}
END_TEST

START_TEST(test_handshake_health)
{
    struct cg_hs_policy pol = { "/healthz", NULL };
    int status;

    ck_assert_int_eq(check_req("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &pol, NULL, _i,
                               &status), 1);
    ck_assert_int_eq(check_req("HEAD /healthz?probe=1 HTTP/1.0\r\n\r\n", &pol, NULL, _i,
                               &status), 1);
    ck_assert_int_lt(check_req("POST /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &pol, NULL, _i,
                               &status), 0);
    ck_assert_int_eq(status, 405);
    /* a plain GET elsewhere is not an upgrade */
    ck_assert_int_lt(check_req("GET /other HTTP/1.1\r\nHost: x\r\n\r\n", &pol, NULL, _i,
                               &status), 0);
    ck_assert_int_eq(status, 426);
    pol.health_path = NULL;
    ck_assert_int_lt(check_req("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", &pol, NULL, _i,
                               &status), 0);
    ck_assert_int_eq(status, 426);
}
END_TEST

/* ------------------------------------------------------------------ limits */

START_TEST(test_handshake_limits)
{
    struct cg_hs_limits lim = { 512, 8, 64 };
    char req[4096];
    int status, i, n;

    /* the RFC example fits */
    ck_assert_int_eq(check_req(rfc6455_req, NULL, &lim, _i, &status), 0);

    /* a long request-target: 414 */
    n = snprintf(req, sizeof(req), "GET /%065d HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    ck_assert_int_lt(n, (int)sizeof(req));
    ck_assert_int_eq(check_req(req, NULL, &lim, _i, &status), -EMSGSIZE);
    ck_assert_int_eq(status, 414);

    /* too many header lines: 431 */
    n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\n");
    for (i = 0; i < 9; i++)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "X-H%d: v\r\n", i);
    snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    ck_assert_int_eq(check_req(req, NULL, &lim, _i, &status), -EMSGSIZE);
    ck_assert_int_eq(status, 431);

    /* a head over max_head bytes: 431 */
    n = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nCookie: ");
    memset(req + n, 'c', 600);
    snprintf(req + n + 600, sizeof(req) - (size_t)n - 600, "\r\n\r\n");
    ck_assert_int_eq(check_req(req, NULL, &lim, _i, &status), -EMSGSIZE);
    ck_assert_int_eq(status, 431);

    /* a request line that does not end within max_head: 414 */
    lim.max_target = 4096;
    n = snprintf(req, sizeof(req), "GET /");
    memset(req + n, 'p', 700);
    snprintf(req + n + 700, sizeof(req) - (size_t)n - 700, " HTTP/1.1\r\n\r\n");
    ck_assert_int_eq(check_req(req, NULL, &lim, _i, &status), -EMSGSIZE);
    ck_assert_int_eq(status, 414);
}
END_TEST

/* A head exactly at the limit passes; one byte more does not. */
START_TEST(test_handshake_limit_edge)
{
    struct cg_hs_limits lim = { 0, 0, 0 };
    size_t n = strlen(rfc6455_req);
    int status;

    lim.max_head = (uint32_t)n;
    ck_assert_int_eq(check_req(rfc6455_req, NULL, &lim, _i, &status), 0);
    lim.max_head = (uint32_t)n - 1;
    ck_assert_int_eq(check_req(rfc6455_req, NULL, &lim, _i, &status), -EMSGSIZE);
    ck_assert_int_eq(status, 431);
}
END_TEST

/* ------------------------------------------------------------------ the backend side */

static const char good_resp[] =
    "HTTP/1.1 101 Switching Protocols\r\n"
    "Upgrade: websocket\r\n"
    "Connection: Upgrade\r\n"
    "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    "Sec-WebSocket-Protocol: chat\r\n"
    "\r\n";

static int check_resp_ext(const char *text, const char *offered, const char *offered_ext,
                          int bytewise, uint32_t *tail)
{
    struct cg_handshake hs;
    int rc;

    cg_handshake_init(&hs, CG_HS_RESPONSE, NULL);
    rc = feed(&hs, text, strlen(text), bytewise);
    if (tail)
        *tail = hs.tail;
    if (rc == 1)
        rc = cg_handshake_check_response(&hs, "dGhlIHNhbXBsZSBub25jZQ==", offered, offered_ext);
    if (rc < 0)
        ck_assert_ptr_nonnull(hs.error);
    cg_handshake_deinit(&hs);
    return rc;
}

static int check_resp(const char *text, const char *offered, int bytewise, uint32_t *tail)
{
    return check_resp_ext(text, offered, NULL, bytewise, tail);
}

/* A 101 answering with Sec-WebSocket-Extensions: <ext>, checked against <offered>. */
static int check_ext(const char *ext, const char *offered)
{
    char buf[512];

    snprintf(buf, sizeof(buf), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
             "Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
             "Sec-WebSocket-Extensions: %s\r\n\r\n", ext);
    return check_resp_ext(buf, NULL, offered, 0, NULL);
}

/* permessage-deflate (RFC 7692) passes through: only its offers go to the backend, and
 * only an answer the RFC allows for them comes back. */
START_TEST(test_handshake_deflate)
{
    const char *chromium = "permessage-deflate; client_max_window_bits";
    char out[256];

    ck_assert_int_eq(cg_ws_deflate_offer("x-webkit-deflate-frame, permessage-deflate; "
                                         "client_max_window_bits, foo; bar=1, "
                                         "Permessage-Deflate ; server_no_context_takeover",
                                         out, sizeof(out)), 91);
    ck_assert_str_eq(out, "permessage-deflate; client_max_window_bits, "
                          "Permessage-Deflate ; server_no_context_takeover");
    ck_assert_int_eq(cg_ws_deflate_offer("foo, bar", out, sizeof(out)), 0);
    ck_assert_str_eq(out, "");
    ck_assert_int_eq(cg_ws_deflate_offer(NULL, out, sizeof(out)), 0);
    ck_assert_int_eq(cg_ws_deflate_offer("permessage-deflate-x, xpermessage-deflate", out,
                                         sizeof(out)), 0);
    ck_assert_int_eq(cg_ws_deflate_offer(chromium, out, 10), -ENOSPC);

    ck_assert_int_eq(check_ext("permessage-deflate", chromium), 0);
    ck_assert_int_eq(check_ext("permessage-deflate; client_max_window_bits=15", chromium), 0);
    ck_assert_int_eq(check_ext("permessage-deflate; server_no_context_takeover; "
                               "client_no_context_takeover; server_max_window_bits=\"10\"",
                               chromium), 0);
    /* not offered at all, or not allowed for this offer */
    ck_assert_int_eq(check_ext("permessage-deflate", NULL), -EPROTO);
    ck_assert_int_eq(check_ext("permessage-deflate; client_max_window_bits=10",
                               "permessage-deflate"), -EPROTO);
    /* malformed answers */
    ck_assert_int_eq(check_ext("x-webkit-deflate-frame", chromium), -EPROTO);
    ck_assert_int_eq(check_ext("permessage-deflate, permessage-deflate", chromium), -EPROTO);
    ck_assert_int_eq(check_ext("permessage-deflate; server_max_window_bits=16", chromium),
                     -EPROTO);
    ck_assert_int_eq(check_ext("permessage-deflate; server_max_window_bits=7", chromium),
                     -EPROTO);
    ck_assert_int_eq(check_ext("permessage-deflate; server_max_window_bits", chromium),
                     -EPROTO);
    ck_assert_int_eq(check_ext("permessage-deflate; client_no_context_takeover=1", chromium),
                     -EPROTO);
    ck_assert_int_eq(check_ext("permessage-deflate; server_no_context_takeover; "
                               "server_no_context_takeover", chromium), -EPROTO);
    ck_assert_int_eq(check_ext("permessage-deflate; foo", chromium), -EPROTO);
    ck_assert_int_eq(check_ext("permessage-deflate;", chromium), -EPROTO);
}
END_TEST

START_TEST(test_handshake_response)
{
    char buf[512];
    uint32_t tail = 0;

    ck_assert_int_eq(check_resp(good_resp, "chat, superchat", _i, &tail), 0);
    ck_assert_uint_eq(tail, 0);
    snprintf(buf, sizeof(buf), "%s\x81\x02hi", good_resp);
    ck_assert_int_eq(check_resp(buf, "chat", 0, &tail), 0);
    ck_assert_uint_eq(tail, 4);
    /* each defect */
    ck_assert_int_eq(check_resp(good_resp, NULL, _i, NULL), -EPROTO);     /* not offered */
    ck_assert_int_eq(check_resp(good_resp, "superchat", _i, NULL), -EPROTO);
    ck_assert_int_eq(check_resp("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", NULL, _i,
                                NULL), -EPROTO);
    ck_assert_int_eq(check_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
                                NULL, _i, NULL), -EPROTO);
    ck_assert_int_eq(check_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                                "Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
                                NULL, _i, NULL), -EPROTO);
    ck_assert_int_eq(check_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                                NULL, _i, NULL), -EPROTO);
    ck_assert_int_eq(check_resp("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                "Connection: Upgrade\r\n"
                                "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                                NULL, _i, NULL), 0);
    ck_assert_int_eq(check_resp("garbage\r\n\r\n", NULL, _i, NULL), -EBADMSG);
}
END_TEST

START_TEST(test_handshake_backend_request)
{
    static const char want[] =
        "GET /chat?room=1 HTTP/1.1\r\n"
        "Host: server.example.com\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAAAA==\r\n"
        "Sec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: chat, superchat\r\n"
        "Origin: http://example.com\r\n"
        "X-Forwarded-For: 192.0.2.9, 2001:db8::1\r\n"
        "X-Forwarded-Proto: http\r\n"
        "Forwarded: for=192.0.2.9, for=\"[2001:db8::1]\";host=\"server.example.com\";"
        "proto=http\r\n"
        "X-Request-Id: abc-123\r\n"
        "\r\n";
    struct cg_hs_forward f = { "2001:db8::1", "http", "abc-123", "AAAAAAAAAAAAAAAAAAAAAA==",
                               NULL, NULL, NULL, 1 };     /* from a trusted proxy: kept */
    char *req = variant("GET /chat HTTP/1.1\r\n", "GET /chat?room=1 HTTP/1.1\r\n"
                        "X-Forwarded-For: 192.0.2.9\r\nForwarded: for=192.0.2.9\r\n");
    struct cg_handshake hs;
    char buf[1024];
    int n;

    cg_handshake_init(&hs, CG_HS_REQUEST, NULL);
    ck_assert_int_eq(cg_handshake_feed(&hs, req, strlen(req)), 1);
    ck_assert_int_eq(cg_handshake_check_request(&hs, NULL), 0);
    n = cg_handshake_backend_request(&hs, &f, buf, sizeof(buf));
    ck_assert_int_eq(n, (int)strlen(want));
    ck_assert_str_eq(buf, want);
    ck_assert_int_eq(cg_handshake_backend_request(&hs, &f, buf, 100), -ENOSPC);

    /* From anyone else the client's own X-Forwarded-For and Forwarded are replaced:
     * otherwise a client could pass for any address it writes there. */
    f.keep_chain = 0;
    n = cg_handshake_backend_request(&hs, &f, buf, sizeof(buf));
    ck_assert_int_gt(n, 0);
    ck_assert_ptr_nonnull(strstr(buf, "X-Forwarded-For: 2001:db8::1\r\n"));
    ck_assert_ptr_nonnull(strstr(buf, "Forwarded: for=\"[2001:db8::1]\";host="));
    ck_assert_ptr_null(strstr(buf, "192.0.2.9"));

    n = cg_handshake_accept_response(&hs, "chat", NULL, "abc-123", buf, sizeof(buf));
    ck_assert_int_gt(n, 0);
    ck_assert_str_eq(buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
                          "Sec-WebSocket-Protocol: chat\r\nX-Request-Id: abc-123\r\n\r\n");
    n = cg_handshake_accept_response(&hs, NULL, NULL, NULL, buf, sizeof(buf));
    ck_assert_str_eq(buf, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: Upgrade\r\n"
                          "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n");
    cg_handshake_deinit(&hs);
    free(req);
}
END_TEST

START_TEST(test_http_response)
{
    char buf[512];
    int n;

    n = cg_http_response(426, NULL, buf, sizeof(buf));
    ck_assert_int_eq(n, (int)strlen(buf));
    ck_assert_str_eq(buf, "HTTP/1.1 426 Upgrade Required\r\nContent-Type: text/plain\r\n"
                          "Content-Length: 17\r\nConnection: close\r\n"
                          "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n"
                          "Upgrade Required\n");
    cg_http_response(503, "Retry-After: 2\r\n", buf, sizeof(buf));
    ck_assert_str_eq(buf, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                          "Content-Length: 20\r\nConnection: close\r\nRetry-After: 2\r\n\r\n"
                          "Service Unavailable\n");
    cg_http_response(405, NULL, buf, sizeof(buf));
    ck_assert_ptr_nonnull(strstr(buf, "\r\nAllow: GET\r\n"));
    ck_assert_int_eq(cg_http_response(400, NULL, buf, 20), -ENOSPC);
    ck_assert_str_eq(cg_http_reason(431), "Request Header Fields Too Large");
}
END_TEST

START_TEST(test_has_token)
{
    ck_assert_int_eq(cg_hs_has_token("Upgrade", 7, "upgrade"), 1);
    ck_assert_int_eq(cg_hs_has_token("keep-alive, Upgrade", 19, "upgrade"), 1);
    ck_assert_int_eq(cg_hs_has_token(" keep-alive ,\tUPGRADE\t", 22, "upgrade"), 1);
    ck_assert_int_eq(cg_hs_has_token("upgrades", 8, "upgrade"), 0);
    ck_assert_int_eq(cg_hs_has_token("up grade", 8, "upgrade"), 0);
    ck_assert_int_eq(cg_hs_has_token("", 0, "upgrade"), 0);
    ck_assert_int_eq(cg_hs_has_token(",,", 2, "upgrade"), 0);
    ck_assert_int_eq(cg_hs_has_token("websocket, h2c", 14, "h2c"), 1);
}
END_TEST

/* ------------------------------------------------------------------ SHA-1, base64 */

static void hex(const uint8_t *d, size_t n, char *out)
{
    size_t i;

    for (i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", d[i]);
}

START_TEST(test_sha1)
{
    static const struct { const char *in; const char *out; } v[] = {
        { "", "da39a3ee5e6b4b0d3255bfef95601890afd80709" },
        { "abc", "a9993e364706816aba3e25717850c26c9cd0d89d" },
        { "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
          "84983e441c3bd26ebaae4aa1f95129e5e54670f1" },
        { "The quick brown fox jumps over the lazy dog",
          "2fd4e1c67a2d28fced849ee1bb76e7391b93eb12" },
    };
    uint8_t d[20];
    char h[41];
    char *million;
    size_t i;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        cg_sha1(v[i].in, strlen(v[i].in), d);
        hex(d, 20, h);
        ck_assert_str_eq(h, v[i].out);
    }
    million = malloc(1000000);
    memset(million, 'a', 1000000);
    cg_sha1(million, 1000000, d);
    hex(d, 20, h);
    ck_assert_str_eq(h, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    /* lengths around the padding boundary */
    for (i = 54; i < 66; i++) {
        uint8_t d2[20];

        cg_sha1(million, i, d);
        cg_sha1(million, i, d2);
        ck_assert(memcmp(d, d2, 20) == 0);
    }
    cg_sha1(million, 55, d);
    hex(d, 20, h);
    ck_assert_str_eq(h, "c1c8bbdc22796e28c0e15163d20899b65621d65a");
    cg_sha1(million, 64, d);
    hex(d, 20, h);
    ck_assert_str_eq(h, "0098ba824b5c16427bd7a1122a5a442a25ec644d");
    free(million);
}
END_TEST

START_TEST(test_base64)
{
    static const struct { const char *raw; const char *enc; } v[] = {
        { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
        { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
    };
    uint8_t out[16];
    char enc[16];
    size_t i;

    for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        ck_assert_uint_eq(cg_base64_encode(v[i].raw, strlen(v[i].raw), enc),
                          strlen(v[i].enc));
        ck_assert_str_eq(enc, v[i].enc);
        ck_assert_int_eq(cg_base64_decode(v[i].enc, strlen(v[i].enc), out, sizeof(out)),
                         (int)strlen(v[i].raw));
        ck_assert(memcmp(out, v[i].raw, strlen(v[i].raw)) == 0);
    }
    ck_assert_int_eq(cg_base64_decode("Zm9", 3, out, sizeof(out)), -EINVAL);
    ck_assert_int_eq(cg_base64_decode("Zm=v", 4, out, sizeof(out)), -EINVAL);
    ck_assert_int_eq(cg_base64_decode("Zh==", 4, out, sizeof(out)), -EINVAL);   /* bits */
    ck_assert_int_eq(cg_base64_decode("Zm9vYmFy", 8, out, 5), -ENOSPC);
    ck_assert_int_eq(cg_base64_decode("Zm 9", 4, out, sizeof(out)), -EINVAL);
}
END_TEST

START_TEST(test_ws_accept)
{
    char out[CG_WS_ACCEPT_LEN + 1];

    cg_ws_accept("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

Suite *handshake_suite(void)
{
    Suite *s = suite_create("handshake");
    TCase *tc = tcase_create("request");
    TCase *bk = tcase_create("backend");
    TCase *pr = tcase_create("primitives");
    int nref = (int)(sizeof(refusals) / sizeof(refusals[0]));

    tcase_add_test(tc, test_handshake_whole);
    tcase_add_test(tc, test_handshake_byte_by_byte);
    tcase_add_test(tc, test_handshake_tail_and_path);
    tcase_add_test(tc, test_handshake_arena);
    tcase_add_loop_test(tc, test_handshake_headers, 0, 2);
    tcase_add_loop_test(tc, test_handshake_hash_values, 0, 2);
    tcase_add_loop_test(tc, test_handshake_refusals, 0, 2 * nref);
    tcase_add_loop_test(tc, test_handshake_hosts, 0,
                        (int)(sizeof(good_hosts) / sizeof(good_hosts[0])));
    tcase_add_test(tc, test_handshake_origins);
    tcase_add_test(tc, test_handshake_deflate);
    tcase_add_loop_test(tc, test_handshake_health, 0, 2);
    tcase_add_loop_test(tc, test_handshake_limits, 0, 2);
    tcase_add_loop_test(tc, test_handshake_limit_edge, 0, 2);
    suite_add_tcase(s, tc);
    tcase_add_loop_test(bk, test_handshake_response, 0, 2);
    tcase_add_test(bk, test_handshake_backend_request);
    tcase_add_test(bk, test_http_response);
    suite_add_tcase(s, bk);
    tcase_add_test(pr, test_has_token);
    tcase_add_test(pr, test_sha1);
    tcase_add_test(pr, test_base64);
    tcase_add_test(pr, test_ws_accept);
    suite_add_tcase(s, pr);
    return s;
}
