/* common/handshake.c — HTTP/1.1 heads for the WebSocket opening handshake.
 *
 * llhttp does the HTTP grammar (strict mode: bad tokens, CR/LF in values and the like are
 * errors); we count bytes and headers, keep the headers of enum cg_hs_hdr, and pause
 * llhttp at the end of the head so that whatever follows (early frames, a backend's first
 * message right after its 101) stays with the caller.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/handshake.h"

#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum { LIST = 1 };

static const struct {
    const char *name;    /* lowercase */
    int         flags;
} hdr_info[CG_HS_NHDRS] = {
    [CG_HS_HOST]          = { "host", 0 },
    [CG_HS_UPGRADE]       = { "upgrade", LIST },
    [CG_HS_CONNECTION]    = { "connection", LIST },
    [CG_HS_KEY]           = { "sec-websocket-key", 0 },
    [CG_HS_VERSION]       = { "sec-websocket-version", 0 },
    [CG_HS_PROTOCOL]      = { "sec-websocket-protocol", LIST },
    [CG_HS_EXTENSIONS]    = { "sec-websocket-extensions", LIST },
    [CG_HS_ACCEPT]        = { "sec-websocket-accept", 0 },
    [CG_HS_ORIGIN]        = { "origin", 0 },
    [CG_HS_USER_AGENT]    = { "user-agent", 0 },
    [CG_HS_COOKIE]        = { "cookie", LIST },
    [CG_HS_AUTHORIZATION] = { "authorization", 0 },
    [CG_HS_XFF]           = { "x-forwarded-for", LIST },
    [CG_HS_FORWARDED]     = { "forwarded", LIST },
    [CG_HS_REQUEST_ID]    = { "x-request-id", 0 },
    [CG_HS_EXTRA]         = { "", LIST },      /* hs->extra names it */
};

_Static_assert(CG_HS_NHDRS <= 32, "seen/dup are 32-bit masks");

/* ------------------------------------------------------------------ strings */

static int in_arena(const struct cg_handshake *hs, const char *p)
{
    return p && hs->arena && p >= hs->arena && p < hs->arena + hs->arena_cap;
}

/* Room for <need> bytes of string <s>: in the arena (growing it in place when it is the
 * arena's last string, else moving it to the top), or else in a malloc'ed block. */
static int str_reserve(struct cg_handshake *hs, struct cg_hs_str *s, size_t need)
{
    char *np;
    size_t cap;

    if (in_arena(hs, s->p) && s->p + s->cap == hs->arena + hs->arena_used &&
        need - s->cap <= hs->arena_cap - hs->arena_used) {
        hs->arena_used += (uint32_t)(need - s->cap);      /* the top string grows */
        s->cap = (uint32_t)need;
        return 0;
    }
    if (!s->p || in_arena(hs, s->p)) {
        cap = (need + 7) & ~(size_t)7;
        if (hs->arena && cap <= hs->arena_cap - hs->arena_used) {
            np = hs->arena + hs->arena_used;
            hs->arena_used += (uint32_t)cap;
        } else {
            if (cap < 32)
                cap = 32;
            np = malloc(cap);
            if (!np)
                return -ENOMEM;
        }
        if (s->len)
            memcpy(np, s->p, s->len + 1);
        s->p = np;
        s->cap = (uint32_t)cap;
        return 0;
    }
    cap = s->cap;
    while (cap < need)
        cap *= 2;
    if (cap > UINT32_MAX)
        return -ENOMEM;
    np = realloc(s->p, cap);
    if (!np)
        return -ENOMEM;
    s->p = np;
    s->cap = (uint32_t)cap;
    return 0;
}

static int str_append(struct cg_handshake *hs, struct cg_hs_str *s, const char *p, size_t n)
{
    if (n == 0 && s->p)
        return 0;
    if ((size_t)s->len + n + 1 > s->cap && str_reserve(hs, s, (size_t)s->len + n + 1) < 0)
        return -ENOMEM;
    memcpy(s->p + s->len, p, n);
    s->len += (uint32_t)n;
    s->p[s->len] = '\0';
    return 0;
}

static void str_free(struct cg_handshake *hs, struct cg_hs_str *s)
{
    if (!in_arena(hs, s->p))
        free(s->p);
    s->p = NULL;
    s->len = s->cap = 0;
}

/* ------------------------------------------------------------------ llhttp callbacks */

static struct cg_handshake *hs_of(llhttp_t *p)
{
    return p->data;
}

/* Records a refusal and makes llhttp stop with HPE_USER. */
static int refuse(struct cg_handshake *hs, int status, const char *why)
{
    if (!hs->status) {
        hs->status = status;
        hs->error = why;
    }
    return -1;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    struct cg_handshake *hs = hs_of(p);

    if ((size_t)hs->target.len + n > hs->lim.max_target)
        return refuse(hs, 414, "request-target too long");
    if (str_append(hs, &hs->target, at, n) < 0)
        return refuse(hs, 500, "out of memory");
    return 0;
}

static int on_line_done(llhttp_t *p)
{
    hs_of(p)->line_done = 1;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t n)
{
    struct cg_handshake *hs = hs_of(p);
    size_t i;

    hs->line_done = 1;
    if (hs->field_len == 0xff)
        return 0;
    if (hs->field_len + n > sizeof(hs->field)) {
        hs->field_len = 0xff;       /* not a header we keep */
        return 0;
    }
    for (i = 0; i < n; i++) {
        char ch = at[i];

        hs->field[hs->field_len++] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    struct cg_handshake *hs = hs_of(p);
    int i;

    if (++hs->nheaders > hs->lim.max_headers)
        return refuse(hs, 431, "too many header lines");
    hs->cur = -1;
    if (hs->field_len == 0xff)
        return 0;
    for (i = 0; i < CG_HS_EXTRA; i++) {
        if (strlen(hdr_info[i].name) == hs->field_len &&
            memcmp(hdr_info[i].name, hs->field, hs->field_len) == 0)
            break;
    }
    if (i == CG_HS_EXTRA && (!hs->extra || strlen(hs->extra) != hs->field_len ||
                             memcmp(hs->extra, hs->field, hs->field_len) != 0))
        return 0;
    if (hs->seen & (1u << i)) {
        if (!(hdr_info[i].flags & LIST)) {
            hs->dup |= 1u << i;     /* the first value stays */
            return 0;
        }
        if (str_append(hs, &hs->hdr[i], ", ", 2) < 0)
            return refuse(hs, 500, "out of memory");
    }
    hs->seen |= 1u << i;
    hs->cur = (int16_t)i;
    return str_append(hs, &hs->hdr[i], "", 0) < 0 ? refuse(hs, 500, "out of memory") : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n)
{
    struct cg_handshake *hs = hs_of(p);

    if (hs->cur >= 0 && str_append(hs, &hs->hdr[hs->cur], at, n) < 0)
        return refuse(hs, 500, "out of memory");
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct cg_handshake *hs = hs_of(p);
    struct cg_hs_str *s;

    if (hs->cur >= 0) {
        s = &hs->hdr[hs->cur];
        while (s->len && (s->p[s->len - 1] == ' ' || s->p[s->len - 1] == '\t'))
            s->p[--s->len] = '\0';
    }
    hs->cur = -1;
    hs->field_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    hs_of(p)->done = 1;
    return HPE_PAUSED;      /* the rest is not HTTP: leave it to the caller */
}

static const llhttp_settings_t settings = {
    .on_url = on_url,
    .on_url_complete = on_line_done,
    .on_status_complete = on_line_done,
    .on_header_field = on_header_field,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_value,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
};

/* ------------------------------------------------------------------ parsing */

void cg_handshake_init(struct cg_handshake *hs, enum cg_hs_kind kind,
                       const struct cg_hs_limits *lim)
{
    memset(hs, 0, sizeof(*hs));
    hs->lim.max_head = lim && lim->max_head ? lim->max_head : CG_HS_MAX_HEAD_DEFAULT;
    hs->lim.max_headers = lim && lim->max_headers ? lim->max_headers
                                                  : CG_HS_MAX_HEADERS_DEFAULT;
    hs->lim.max_target = lim && lim->max_target ? lim->max_target : CG_HS_MAX_TARGET_DEFAULT;
    hs->cur = -1;
    llhttp_init(&hs->parser, kind == CG_HS_REQUEST ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
    hs->parser.data = hs;
}

void cg_handshake_set_arena(struct cg_handshake *hs, void *mem, size_t size)
{
    hs->arena = mem;
    hs->arena_used = 0;
    hs->arena_cap = size > UINT32_MAX ? UINT32_MAX : (uint32_t)size;
}

void cg_handshake_deinit(struct cg_handshake *hs)
{
    int i;

    str_free(hs, &hs->target);
    for (i = 0; i < CG_HS_NHDRS; i++)
        str_free(hs, &hs->hdr[i]);
    hs->arena_used = 0;
}

static int result_of(const struct cg_handshake *hs)
{
    if (hs->done)
        return 1;
    if (hs->status == 500)
        return -ENOMEM;
    if (hs->status == 414 || hs->status == 431)
        return -EMSGSIZE;
    return -EBADMSG;
}

int cg_handshake_feed(struct cg_handshake *hs, const void *data, size_t len)
{
    size_t room, n, used;
    llhttp_errno_t e;

    if (hs->done || hs->status || hs->error)
        return result_of(hs);
    room = hs->lim.max_head - hs->fed;
    n = len < room ? len : room;
    e = llhttp_execute(&hs->parser, data, n);
    if (e == HPE_PAUSED && hs->done) {
        used = (size_t)(llhttp_get_error_pos(&hs->parser) - (const char *)data);
        hs->fed += (uint32_t)used;
        hs->tail = (uint32_t)(len - used);
        return 1;
    }
    if (e != HPE_OK) {
        if (!hs->status) {
            hs->status = 400;
            hs->error = e == HPE_INVALID_VERSION ? "bad HTTP version"
                      : e == HPE_INVALID_METHOD  ? "bad method"
                      : e == HPE_INVALID_URL     ? "bad request-target"
                                                 : "malformed HTTP head";
        }
        return result_of(hs);
    }
    hs->fed += (uint32_t)n;
    if (hs->fed >= hs->lim.max_head) {
        /* The limit is reached and the head goes on. */
        if (hs->line_done)
            refuse(hs, 431, "head too large");
        else
            refuse(hs, 414, "request line too long");
        return result_of(hs);
    }
    return 0;
}

const char *cg_handshake_get(const struct cg_handshake *hs, enum cg_hs_hdr h)
{
    return (hs->seen & (1u << h)) ? hs->hdr[h].p : NULL;
}

const char *cg_handshake_path(const struct cg_handshake *hs, size_t *len)
{
    const char *q;

    if (!hs->target.p) {
        *len = 0;
        return "";
    }
    q = memchr(hs->target.p, '?', hs->target.len);
    *len = q ? (size_t)(q - hs->target.p) : hs->target.len;
    return hs->target.p;
}

void cg_handshake_keep_header(struct cg_handshake *hs, const char *name)
{
    hs->extra = name && *name && strlen(name) < sizeof(hs->field) ? name : NULL;
}

const char *cg_handshake_header(const struct cg_handshake *hs, const char *name)
{
    int i;

    for (i = 0; i < CG_HS_EXTRA; i++)
        if (strcmp(hdr_info[i].name, name) == 0)
            return cg_handshake_get(hs, (enum cg_hs_hdr)i);
    return hs->extra && strcmp(hs->extra, name) == 0 ? cg_handshake_get(hs, CG_HS_EXTRA)
                                                     : NULL;
}

/* The value of <name> in <s> (<n> bytes) of "name=value" pairs separated by one of <seps>,
 * blanks around pairs skipped when <trim>; *<len> its length. NULL when absent. */
static const char *find_pair(const char *s, size_t n, const char *name, const char *seps,
                             int trim, size_t *len)
{
    size_t nlen = strlen(name), i = 0, a, b, eq;

    while (i < n) {
        for (a = i; a < n && trim && (s[a] == ' ' || s[a] == '\t'); a++)
            ;
        for (b = a; b < n && !strchr(seps, s[b]); b++)
            ;
        i = b + 1;
        while (trim && b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        for (eq = a; eq < b && s[eq] != '='; eq++)
            ;
        if (eq - a == nlen && memcmp(s + a, name, nlen) == 0) {
            *len = eq < b ? b - eq - 1 : 0;
            return eq < b ? s + eq + 1 : s + b;
        }
    }
    return NULL;
}

const char *cg_handshake_cookie(const struct cg_handshake *hs, const char *name, size_t *len)
{
    const char *v = cg_handshake_get(hs, CG_HS_COOKIE);

    /* Several Cookie lines were joined with ", " (a list header here): ',' separates too;
     * a cookie-value never holds one (RFC 6265 section 4.1.1). */
    return v ? find_pair(v, strlen(v), name, ";,", 1, len) : NULL;
}

const char *cg_handshake_query(const struct cg_handshake *hs, const char *name, size_t *len)
{
    const char *q, *end;

    if (!hs->target.p || !(q = memchr(hs->target.p, '?', hs->target.len)))
        return NULL;
    q++;
    end = memchr(q, '#', hs->target.len - (size_t)(q - hs->target.p));
    return find_pair(q, end ? (size_t)(end - q) : hs->target.len - (size_t)(q - hs->target.p),
                     name, "&", 0, len);
}

/* ------------------------------------------------------------------ checks */

int cg_hs_has_token(const char *list, size_t len, const char *token)
{
    size_t tlen = strlen(token), i = 0, a, b;

    while (i < len) {
        while (i < len && (list[i] == ' ' || list[i] == '\t' || list[i] == ','))
            i++;
        a = i;
        while (i < len && list[i] != ',')
            i++;
        b = i;
        while (b > a && (list[b - 1] == ' ' || list[b - 1] == '\t'))
            b--;
        if (b - a == tlen && tlen && strncasecmp(list + a, token, tlen) == 0)
            return 1;
    }
    return 0;
}

static int has_token(const struct cg_handshake *hs, enum cg_hs_hdr h, const char *token)
{
    const char *v = cg_handshake_get(hs, h);

    return v && cg_hs_has_token(v, strlen(v), token);
}

/* 1 when <origin> (as sent) is one of the space-separated, lowercase <allowed>. */
static int origin_allowed(const char *allowed, const char *origin)
{
    size_t olen = strlen(origin), n;
    const char *p = allowed;

    for (;;) {
        p += strspn(p, " \t,");
        if (!*p)
            return 0;
        n = strcspn(p, " \t,");
        if ((n == 1 && *p == '*') || (n == olen && strncasecmp(p, origin, n) == 0))
            return 1;
        p += n;
    }
}

/* 1 when <h> is a Host value RFC 9112 3.2 lets a server accept: uri-host [":" port], the
 * host not empty (RFC 9110 4.2.1), a reg-name of unreserved, percent-encoded and sub-delims
 * characters or a bracketed IPv6 literal, the port at most 5 digits. A server answers 400
 * to anything else; forwarding it would make the backend refuse the request, which must
 * not be laid at the backend's door. */
static int host_is_valid(const char *h)
{
    static const char reg[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                              "0123456789-._~!$&'()*+,;=";
    size_t n;

    if (!h || !*h)
        return 0;
    if (*h == '[') {
        n = strspn(h + 1, "0123456789abcdefABCDEF:.");
        if (n < 2 || h[1 + n] != ']')
            return 0;
        h += n + 2;
    } else {
        for (n = 0; h[n] && h[n] != ':'; n++) {
            if (h[n] == '%') {
                if (!isxdigit((unsigned char)h[n + 1]) || !isxdigit((unsigned char)h[n + 2]))
                    return 0;
                n += 2;
            } else if (!strchr(reg, h[n])) {
                return 0;
            }
        }
        if (n == 0)
            return 0;
        h += n;
    }
    if (!*h)
        return 1;
    if (*h++ != ':')
        return 0;
    n = strspn(h, "0123456789");
    return n <= 5 && h[n] == '\0' && (n == 0 || strtoul(h, NULL, 10) <= 65535);
}

static int key_is_valid(const char *key)
{
    uint8_t raw[18];

    return key && strlen(key) == CG_WS_KEY_LEN &&
           cg_base64_decode(key, CG_WS_KEY_LEN, raw, sizeof(raw)) == 16;
}

int cg_handshake_check_request(struct cg_handshake *hs, const struct cg_hs_policy *pol)
{
    const char *version, *key, *origin;
    size_t plen;
    const char *path = cg_handshake_path(hs, &plen);
    int method = llhttp_get_method(&hs->parser);

    if (!hs->done)
        return refuse(hs, 400, "incomplete head"), -EPROTO;
    if (hs->target.len == 0 || hs->target.p[0] != '/')
        return refuse(hs, 400, "request-target is not a path"), -EPROTO;
    if (pol && pol->health_path && pol->health_path[0] &&
        strlen(pol->health_path) == plen && memcmp(pol->health_path, path, plen) == 0) {
        if (method != HTTP_GET && method != HTTP_HEAD)
            return refuse(hs, 405, "health check takes GET"), -EPROTO;
        return 1;
    }
    if (!has_token(hs, CG_HS_UPGRADE, "websocket"))
        return refuse(hs, 426, "not a WebSocket upgrade"), -EPROTO;
    if (method != HTTP_GET)
        return refuse(hs, 405, "WebSocket upgrade takes GET"), -EPROTO;
    if (hs->parser.http_major != 1 || hs->parser.http_minor < 1)
        return refuse(hs, 400, "WebSocket needs HTTP/1.1"), -EPROTO;
    if (!has_token(hs, CG_HS_CONNECTION, "upgrade"))
        return refuse(hs, 400, "Connection lacks upgrade"), -EPROTO;
    if (hs->parser.content_length > 0 || (hs->parser.flags & F_CHUNKED))
        return refuse(hs, 400, "upgrade request with a body"), -EPROTO;
    if (!cg_handshake_get(hs, CG_HS_HOST) || (hs->dup & (1u << CG_HS_HOST)))
        return refuse(hs, 400, "missing or repeated Host"), -EPROTO;
    if (!host_is_valid(cg_handshake_get(hs, CG_HS_HOST)))
        return refuse(hs, 400, "empty or invalid Host"), -EPROTO;
    version = cg_handshake_get(hs, CG_HS_VERSION);
    if (!version || strcmp(version, "13") != 0 || (hs->dup & (1u << CG_HS_VERSION)))
        return refuse(hs, 426, "Sec-WebSocket-Version is not 13"), -EPROTO;
    key = cg_handshake_get(hs, CG_HS_KEY);
    if (!key_is_valid(key) || (hs->dup & (1u << CG_HS_KEY)))
        return refuse(hs, 400, "bad Sec-WebSocket-Key"), -EPROTO;
    origin = cg_handshake_get(hs, CG_HS_ORIGIN);
    /* Browsers always send Origin; other clients need not, and are not a CSRF vector. */
    if (pol && pol->allowed_origins && origin && !origin_allowed(pol->allowed_origins, origin))
        return refuse(hs, 403, "origin not allowed"), -EPROTO;
    cg_ws_accept(key, strlen(key), hs->accept);
    return 0;
}

static int fail(struct cg_handshake *hs, const char *why)
{
    if (!hs->error)
        hs->error = why;
    return -EPROTO;
}

/* ------------------------------------------------------------------ permessage-deflate */

/* The next element of the comma-separated extension list at *<p> (RFC 6455 §9.1): its
 * bounds, blanks trimmed, in *<a> and *<b>; *<p> moves past it. 0 at the end. Parameter
 * values of permessage-deflate are numbers, so a comma always separates elements. */
static int next_element(const char **p, const char **a, const char **b)
{
    const char *s = *p;

    while (*s == ' ' || *s == '\t' || *s == ',')
        s++;
    if (!*s)
        return 0;
    *a = s;
    while (*s && *s != ',')
        s++;
    *p = s;
    while (s > *a && (s[-1] == ' ' || s[-1] == '\t'))
        s--;
    *b = s;
    return 1;
}

/* 1 when the element [a, b) is permessage-deflate (its extension token, up to ';'). */
static int is_deflate(const char *a, const char *b)
{
    static const char name[] = "permessage-deflate";
    const char *e = memchr(a, ';', (size_t)(b - a));

    if (!e)
        e = b;
    while (e > a && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    return (size_t)(e - a) == sizeof(name) - 1 && strncasecmp(a, name, sizeof(name) - 1) == 0;
}

int cg_ws_deflate_offer(const char *list, char *out, size_t size)
{
    const char *p = list, *a, *b;
    size_t len = 0, n;

    if (size)
        out[0] = '\0';
    while (p && next_element(&p, &a, &b)) {
        if (!is_deflate(a, b))
            continue;
        n = (size_t)(b - a);
        if (len + n + (len ? 2 : 0) + 1 > size)
            return -ENOSPC;
        if (len) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, a, n);
        len += n;
        out[len] = '\0';
    }
    return (int)len;
}

/* 1 when <answer>, a server's Sec-WebSocket-Extensions, accepts one of the permessage-
 * deflate offers in <offered> as RFC 7692 §7 allows: one element, known parameters once
 * each, window bits 8..15, client_max_window_bits only where an offer had it. */
static int deflate_answer_ok(const char *answer, const char *offered)
{
    static const char *const names[] = {
        "server_no_context_takeover", "client_no_context_takeover",
        "server_max_window_bits", "client_max_window_bits",
    };
    const char *p = answer, *a, *b, *q, *e, *v;
    unsigned seen = 0, i, bits;
    size_t n;

    if (!offered || !next_element(&p, &a, &b) || !is_deflate(a, b))
        return 0;
    if (next_element(&p, &q, &e))
        return 0;                   /* a second extension, or the same twice */
    q = memchr(a, ';', (size_t)(b - a));
    while (q && q < b) {
        q++;
        while (q < b && (*q == ' ' || *q == '\t'))
            q++;
        e = memchr(q, ';', (size_t)(b - q));
        if (!e)
            e = b;
        v = memchr(q, '=', (size_t)(e - q));
        n = (size_t)((v ? v : e) - q);
        while (n && (q[n - 1] == ' ' || q[n - 1] == '\t'))
            n--;
        for (i = 0; i < 4; i++)
            if (strlen(names[i]) == n && strncasecmp(q, names[i], n) == 0)
                break;
        if (i == 4 || (seen & (1u << i)))
            return 0;
        seen |= 1u << i;
        if ((i >= 2) != (v != NULL))
            return 0;               /* the window sizes need a value, the others none */
        if (v) {
            v++;
            while (v < e && (*v == ' ' || *v == '\t' || *v == '"'))
                v++;
            for (bits = 0; v < e && *v >= '0' && *v <= '9' && bits < 100; v++)
                bits = bits * 10 + (unsigned)(*v - '0');
            while (v < e && (*v == ' ' || *v == '\t' || *v == '"'))
                v++;
            if (v != e || bits < 8 || bits > 15)
                return 0;
        }
        if (i == 3 && !strcasestr(offered, "client_max_window_bits"))
            return 0;
        q = e;
    }
    return 1;
}

int cg_handshake_check_response(struct cg_handshake *hs, const char *key, const char *offered,
                                const char *offered_ext)
{
    char want[CG_WS_ACCEPT_LEN + 1];

    cg_ws_accept(key, strlen(key), want);
    return cg_handshake_check_response_accept(hs, want, offered, offered_ext);
}

int cg_handshake_check_response_accept(struct cg_handshake *hs, const char *want,
                                       const char *offered, const char *offered_ext)
{
    const char *accept, *proto, *ext;

    if (!hs->done)
        return fail(hs, "incomplete response");
    if (llhttp_get_status_code(&hs->parser) != 101)
        return fail(hs, "status is not 101");
    if (!has_token(hs, CG_HS_UPGRADE, "websocket"))
        return fail(hs, "Upgrade is not websocket");
    if (!has_token(hs, CG_HS_CONNECTION, "upgrade"))
        return fail(hs, "Connection lacks upgrade");
    accept = cg_handshake_get(hs, CG_HS_ACCEPT);
    if (!accept || strcmp(accept, want) != 0 || (hs->dup & (1u << CG_HS_ACCEPT)))
        return fail(hs, "wrong Sec-WebSocket-Accept");
    ext = cg_handshake_get(hs, CG_HS_EXTENSIONS);
    if (ext && *ext && !deflate_answer_ok(ext, offered_ext))
        return fail(hs, offered_ext ? "extension answer not valid for the offer"
                                    : "extension not offered");
    proto = cg_handshake_get(hs, CG_HS_PROTOCOL);
    if (proto && (strchr(proto, ',') || !offered ||
                  !cg_hs_has_token(offered, strlen(offered), proto)))
        return fail(hs, "subprotocol not offered");
    return 0;
}

/* ------------------------------------------------------------------ writing heads */

struct out {
    char  *p;
    size_t size;
    size_t len;
    int    full;
};

/* Appends the strings up to the NULL that ends the list. Not printf: every WebSocket
 * connection writes two heads, and vsnprintf's format parsing was a quarter of the user-space
 * instructions of a proxied connection's opening. */
static void put(struct out *o, ...)
{
    va_list ap;
    const char *p;
    size_t n;

    va_start(ap, o);
    while (!o->full && (p = va_arg(ap, const char *)) != NULL) {
        n = strlen(p);
        if (n >= o->size - o->len) {
            o->full = 1;
            break;
        }
        memcpy(o->p + o->len, p, n);
        o->len += n;
    }
    va_end(ap);
    if (!o->full)
        o->p[o->len] = '\0';
}
#define put(o, ...) put(o, __VA_ARGS__, (const char *)NULL)

static void put_header(struct out *o, const struct cg_handshake *hs, enum cg_hs_hdr h,
                       const char *name)
{
    const char *v = cg_handshake_get(hs, h);

    if (v && *v)
        put(o, name, ": ", v, "\r\n");
}

static int finish(struct out *o)
{
    return o->full ? -ENOSPC : (int)o->len;
}

/* A Forwarded node (RFC 7239 §6): IPv6 addresses are quoted in brackets. */
static void put_forwarded(struct out *o, const struct cg_handshake *hs,
                          const struct cg_hs_forward *f)
{
    const char *prev = f->keep_chain ? cg_handshake_get(hs, CG_HS_FORWARDED) : NULL;
    const char *host = cg_handshake_get(hs, CG_HS_HOST);

    put(o, "Forwarded: ");
    if (prev && *prev)
        put(o, prev, ", ");
    if (strchr(f->client_addr, ':'))
        put(o, "for=\"[", f->client_addr, "]\"");
    else
        put(o, "for=", f->client_addr);
    if (host && *host && !strpbrk(host, "\"\\"))
        put(o, ";host=\"", host, "\"");
    put(o, ";proto=", f->proto, "\r\n");
}

int cg_handshake_backend_request(const struct cg_handshake *hs, const struct cg_hs_forward *f,
                                 char *buf, size_t size)
{
    struct out o = { buf, size, 0, 0 };
    const char *xff = f->keep_chain ? cg_handshake_get(hs, CG_HS_XFF) : NULL;

    put(&o, "GET ", hs->target.p ? hs->target.p : "/", " HTTP/1.1\r\n");
    put_header(&o, hs, CG_HS_HOST, "Host");
    put(&o, "Upgrade: websocket\r\nConnection: Upgrade\r\n");
    put(&o, "Sec-WebSocket-Key: ", f->key, "\r\nSec-WebSocket-Version: 13\r\n");
    put_header(&o, hs, CG_HS_PROTOCOL, "Sec-WebSocket-Protocol");
    if (f->extensions && *f->extensions)
        put(&o, "Sec-WebSocket-Extensions: ", f->extensions, "\r\n");
    put_header(&o, hs, CG_HS_ORIGIN, "Origin");
    put_header(&o, hs, CG_HS_USER_AGENT, "User-Agent");
    put_header(&o, hs, CG_HS_COOKIE, "Cookie");
    put_header(&o, hs, CG_HS_AUTHORIZATION, "Authorization");
    if (xff && *xff)
        put(&o, "X-Forwarded-For: ", xff, ", ", f->client_addr, "\r\n");
    else
        put(&o, "X-Forwarded-For: ", f->client_addr, "\r\n");
    put(&o, "X-Forwarded-Proto: ", f->proto, "\r\n");
    put_forwarded(&o, hs, f);
    if (f->cert_subject && f->cert_sha256)
        put(&o, "X-SSL-Client-Verify: SUCCESS\r\nX-SSL-Client-DN: ", f->cert_subject,
            "\r\nX-SSL-Client-SHA256: ", f->cert_sha256, "\r\n");
    if (f->request_id && *f->request_id)
        put(&o, "X-Request-Id: ", f->request_id, "\r\n");
    put(&o, "\r\n");
    return finish(&o);
}

int cg_handshake_accept_response(const struct cg_handshake *hs, const char *protocol,
                                 const char *extensions, const char *request_id, char *buf,
                                 size_t size)
{
    struct out o = { buf, size, 0, 0 };

    put(&o, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Accept: ", hs->accept, "\r\n");
    if (protocol && *protocol)
        put(&o, "Sec-WebSocket-Protocol: ", protocol, "\r\n");
    if (extensions && *extensions)
        put(&o, "Sec-WebSocket-Extensions: ", extensions, "\r\n");
    if (request_id && *request_id)
        put(&o, "X-Request-Id: ", request_id, "\r\n");
    put(&o, "\r\n");
    return finish(&o);
}

const char *cg_http_reason(int status)
{
    switch (status) {
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}

int cg_http_response(int status, const char *extra, char *buf, size_t size)
{
    struct out o = { buf, size, 0, 0 };
    const char *reason = cg_http_reason(status);
    char code[16], clen[24];

    snprintf(code, sizeof(code), "%d", status);
    snprintf(clen, sizeof(clen), "%zu", strlen(reason) + 1);
    put(&o, "HTTP/1.1 ", code, " ", reason, "\r\nContent-Type: text/plain\r\nContent-Length: ",
        clen, "\r\nConnection: close\r\n");
    if (status == 426)
        put(&o, "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    else if (status == 405)
        put(&o, "Allow: GET\r\n");
    if (extra)
        put(&o, extra);
    put(&o, "\r\n", reason, "\n");
    return finish(&o);
}

/* ------------------------------------------------------------------ SHA-1, base64 */

struct sha1 {
    uint32_t h[5];
    uint64_t len;
    uint8_t  block[64];
    size_t   used;
};

static inline uint32_t rol(uint32_t x, int n)
{
    return (x << n) | (x >> (32 - n));
}

static inline uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One 64-byte block (FIPS 180-4 §6.1.2), unrolled five rounds at a time with the message
 * schedule kept in a 16-word ring, so that the round function and constant are not chosen
 * by a branch in every round and the variables stay in registers: every WebSocket
 * connection pays two of these hashes (our 101's accept value and the check of the
 * backend's), and the looped form cost 2.8k instructions per block. */
#define W(i)  (w[(i) & 15] = rol(w[((i) + 13) & 15] ^ w[((i) + 8) & 15] ^ \
                                 w[((i) + 2) & 15] ^ w[(i) & 15], 1))
#define F0(b, c, d) ((d) ^ ((b) & ((c) ^ (d))))
#define F1(b, c, d) ((b) ^ (c) ^ (d))
#define F2(b, c, d) (((b) & (c)) | ((d) & ((b) | (c))))
#define ROUND(a, b, c, d, e, f, k, x) \
    do {                                                  \
        (e) += rol(a, 5) + f(b, c, d) + (k) + (x);         \
        (b) = rol(b, 30);                                 \
    } while (0)
#define FIVE(i, f, k, x)                                  \
    do {                                                  \
        ROUND(a, b, c, d, e, f, k, x(i));                 \
        ROUND(e, a, b, c, d, f, k, x((i) + 1));           \
        ROUND(d, e, a, b, c, f, k, x((i) + 2));           \
        ROUND(c, d, e, a, b, f, k, x((i) + 3));           \
        ROUND(b, c, d, e, a, f, k, x((i) + 4));           \
    } while (0)
#define R(i) w[i]

static void sha1_block(struct sha1 *s, const uint8_t *p)
{
    uint32_t w[16], a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3], e = s->h[4];
    int i;

    for (i = 0; i < 16; i++)
        w[i] = be32(p + 4 * i);
    FIVE(0, F0, 0x5a827999, R);
    FIVE(5, F0, 0x5a827999, R);
    FIVE(10, F0, 0x5a827999, R);
    ROUND(a, b, c, d, e, F0, 0x5a827999, w[15]);
    ROUND(e, a, b, c, d, F0, 0x5a827999, W(16));
    ROUND(d, e, a, b, c, F0, 0x5a827999, W(17));
    ROUND(c, d, e, a, b, F0, 0x5a827999, W(18));
    ROUND(b, c, d, e, a, F0, 0x5a827999, W(19));
    FIVE(20, F1, 0x6ed9eba1, W);
    FIVE(25, F1, 0x6ed9eba1, W);
    FIVE(30, F1, 0x6ed9eba1, W);
    FIVE(35, F1, 0x6ed9eba1, W);
    FIVE(40, F2, 0x8f1bbcdc, W);
    FIVE(45, F2, 0x8f1bbcdc, W);
    FIVE(50, F2, 0x8f1bbcdc, W);
    FIVE(55, F2, 0x8f1bbcdc, W);
    FIVE(60, F1, 0xca62c1d6, W);
    FIVE(65, F1, 0xca62c1d6, W);
    FIVE(70, F1, 0xca62c1d6, W);
    FIVE(75, F1, 0xca62c1d6, W);
    s->h[0] += a, s->h[1] += b, s->h[2] += c, s->h[3] += d, s->h[4] += e;
}

#undef W
#undef F0
#undef F1
#undef F2
#undef ROUND
#undef FIVE
#undef R

static void sha1_update(struct sha1 *s, const uint8_t *p, size_t n)
{
    size_t take;

    s->len += n;
    while (n > 0) {
        take = 64 - s->used < n ? 64 - s->used : n;
        memcpy(s->block + s->used, p, take);
        s->used += take;
        p += take;
        n -= take;
        if (s->used == 64) {
            sha1_block(s, s->block);
            s->used = 0;
        }
    }
}

void cg_sha1(const void *data, size_t len, uint8_t out[20])
{
    static const uint8_t pad = 0x80, zero[64];
    struct sha1 s = { { 0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0 }, 0,
                      { 0 }, 0 };
    uint64_t bits;
    uint8_t lenbuf[8];
    int i;

    sha1_update(&s, data, len);
    bits = s.len * 8;
    sha1_update(&s, &pad, 1);
    sha1_update(&s, zero, (s.used <= 56 ? 56 : 120) - s.used);
    for (i = 0; i < 8; i++)
        lenbuf[i] = (uint8_t)(bits >> (56 - 8 * i));
    sha1_update(&s, lenbuf, 8);
    for (i = 0; i < 20; i++)
        out[i] = (uint8_t)(s.h[i / 4] >> (24 - 8 * (i % 4)));
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t cg_base64_encode(const void *data, size_t len, char *out)
{
    const uint8_t *p = data;
    size_t i, o = 0;
    uint32_t v;

    for (i = 0; i + 2 < len; i += 3) {
        v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (i < len) {
        v = (uint32_t)p[i] << 16 | (i + 1 < len ? (uint32_t)p[i + 1] << 8 : 0);
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = i + 1 < len ? b64[(v >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        return ch - 'A';
    if (ch >= 'a' && ch <= 'z')
        return ch - 'a' + 26;
    if (ch >= '0' && ch <= '9')
        return ch - '0' + 52;
    return ch == '+' ? 62 : ch == '/' ? 63 : -1;
}

int cg_base64_decode(const char *in, size_t len, uint8_t *out, size_t size)
{
    size_t i, o = 0, pad = 0;
    uint32_t v;
    int k, d;

    if (len % 4)
        return -EINVAL;
    if (len && in[len - 1] == '=')
        pad = (len >= 2 && in[len - 2] == '=') ? 2 : 1;
    if ((len / 4) * 3 - pad > size)
        return -ENOSPC;
    for (i = 0; i < len; i += 4) {
        v = 0;
        for (k = 0; k < 4; k++) {
            if (i + 4 == len && k >= 4 - (int)pad) {
                v <<= 6;
                continue;
            }
            d = b64_value(in[i + k]);
            if (d < 0)
                return -EINVAL;
            v = v << 6 | (uint32_t)d;
        }
        out[o++] = (uint8_t)(v >> 16);
        if (i + 4 < len || pad < 2)
            out[o++] = (uint8_t)(v >> 8);
        if (i + 4 < len || pad < 1)
            out[o++] = (uint8_t)v;
    }
    /* Canonical form only: the bits dropped by padding must be zero. */
    if (pad == 1 && (v & 0xff))
        return -EINVAL;
    if (pad == 2 && (v & 0xffff))
        return -EINVAL;
    return (int)o;
}

void cg_ws_accept(const char *key, size_t len, char out[CG_WS_ACCEPT_LEN + 1])
{
    char buf[256];
    uint8_t digest[20];
    size_t n = len < sizeof(buf) - sizeof(WS_GUID) ? len : sizeof(buf) - sizeof(WS_GUID);

    memcpy(buf, key, n);
    memcpy(buf + n, WS_GUID, sizeof(WS_GUID) - 1);
    cg_sha1(buf, n + sizeof(WS_GUID) - 1, digest);
    cg_base64_encode(digest, sizeof(digest), out);
}
