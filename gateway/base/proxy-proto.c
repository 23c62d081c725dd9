/* gateway/proto/proxy-proto.c — the PROXY protocol's parser and builder (proxy-proto.h).
 * Section numbers are those of HAProxy's doc/proxy-protocol.txt. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "base/proxy-proto.h"

static const uint8_t v2_sig[12] = {
    0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
};
static const char v1_sig[] = "PROXY ";

const char *cg_pp_error_name(int err)
{
    static const char *const names[CG_PPE_N] = {
        "none", "signature", "version", "too_long", "token", "address", "port", "command",
        "family", "short", "tlv", "truncated",
    };

    if (err < 0)
        err = -err;
    return err < CG_PPE_N ? names[err] : "?";
}

/* ------------------------------------------------------------------ v1 (§2.1) */

/* A port: 1 to 5 digits, no leading zero, at most 65535. Returns it or -1. */
static long v1_port(const char *s, size_t n)
{
    long v = 0;
    size_t i;

    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v <= 65535 ? v : -1;
}

static int v1_addr(int fam, const char *s, size_t n, uint16_t port, struct sockaddr_storage *ss)
{
    char buf[INET6_ADDRSTRLEN];

    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (fam == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)ss;

        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        return inet_pton(AF_INET, buf, &a->sin_addr) == 1 ? 0 : -1;
    } else {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        return inet_pton(AF_INET6, buf, &a->sin6_addr) == 1 ? 0 : -1;
    }
}

static int parse_v1(const char *p, size_t len, struct cg_pp_result *r)
{
    const char *end = NULL, *tok[6];
    size_t ntok = 0, tlen[6], i, n = len < CG_PP_V1_MAX ? len : CG_PP_V1_MAX, hdr;
    long sport, dport;
    int fam;

    for (i = 0; i + 1 < n; i++) {
        if (p[i] == '\r' && p[i + 1] == '\n') {
            end = p + i;
            break;
        }
        if (p[i] == '\r' || p[i] == '\n' || p[i] == '\0')
            return -CG_PPE_TOKEN;         /* a CR or LF alone, a NUL: never in a header */
    }
    if (!end && (p[n - 1] == '\n' || p[n - 1] == '\0'))
        return -CG_PPE_TOKEN;             /* the last byte: an LF without its CR */
    if (!end)
        return len >= CG_PP_V1_MAX ? -CG_PPE_TOO_LONG : 0;
    hdr = (size_t)(end - p) + 2;
    /* Tokens separated by exactly one space (§2.1: "a single space"). */
    for (i = 0; p + i < end && ntok < 6;) {
        size_t j = i;

        while (p + j < end && p[j] != ' ')
            j++;
        tok[ntok] = p + i;
        tlen[ntok++] = j - i;
        if (p + j == end)
            break;
        i = j + 1;
        if (p + i == end && ntok < 6) {
            tok[ntok] = end;              /* a trailing space: an empty last token */
            tlen[ntok++] = 0;
            break;
        }
    }
    r->version = 1;
    if (ntok >= 2 && tlen[1] == 7 && memcmp(tok[1], "UNKNOWN", 7) == 0)
        return (int)hdr;                  /* §2.1: the rest of the line is ignored */
    if (ntok != 6 || tlen[1] != 4 || tok[5] + tlen[5] != end)
        return -CG_PPE_TOKEN;             /* too few, too many */
    if (memcmp(tok[1], "TCP4", 4) == 0)
        fam = AF_INET;
    else if (memcmp(tok[1], "TCP6", 4) == 0)
        fam = AF_INET6;
    else
        return -CG_PPE_TOKEN;
    for (i = 2; i < 6; i++)
        if (tlen[i] == 0)
            return -CG_PPE_TOKEN;
    sport = v1_port(tok[4], tlen[4]);
    dport = v1_port(tok[5], tlen[5]);
    if (sport < 0 || dport < 0)
        return -CG_PPE_PORT;
    if (v1_addr(fam, tok[2], tlen[2], (uint16_t)sport, &r->src) < 0 ||
        v1_addr(fam, tok[3], tlen[3], (uint16_t)dport, &r->dst) < 0)
        return -CG_PPE_ADDRESS;
    r->has_addr = 1;
    return (int)hdr;
}

/* ------------------------------------------------------------------ v2 (§2.2) */

static int parse_tlvs(const uint8_t *p, size_t n, struct cg_pp_result *r)
{
    size_t off = 0, vlen;

    while (off < n) {
        if (n - off < 3)
            return -CG_PPE_TLV;
        vlen = (size_t)p[off + 1] << 8 | p[off + 2];
        if (vlen > n - off - 3)
            return -CG_PPE_TLV;
        if (p[off] == CG_PP2_TYPE_AUTHORITY) {
            if (vlen == 0 || vlen > CG_PP_AUTH_MAX)
                return -CG_PPE_TLV;
            r->authority = p + off + 3;
            r->authority_len = (uint16_t)vlen;
        } else if (p[off] == CG_PP2_TYPE_UNIQUE_ID) {
            if (vlen > CG_PP_ID_MAX)
                return -CG_PPE_TLV;
            r->unique_id = p + off + 3;
            r->unique_id_len = (uint16_t)vlen;
        }
        off += 3 + vlen;
    }
    return 0;
}

static int parse_v2(const uint8_t *p, size_t len, struct cg_pp_result *r)
{
    size_t plen, total, alen;
    unsigned cmd, fam, proto;
    int err;

    if (len < CG_PP_V2_MIN)
        return 0;
    if ((p[12] >> 4) != 2)
        return -CG_PPE_VERSION;
    cmd = p[12] & 0x0f;
    if (cmd > 1)
        return -CG_PPE_COMMAND;
    plen = (size_t)p[14] << 8 | p[15];
    total = CG_PP_V2_MIN + plen;
    if (total > CG_PP_V2_MAX)
        return -CG_PPE_TOO_LONG;
    if (len < total)
        return 0;
    r->version = 2;
    if (cmd == 0) {                       /* LOCAL: the block is skipped (§2.2) */
        r->local = 1;
        return (int)total;
    }
    fam = p[13] >> 4;
    proto = p[13] & 0x0f;
    if (fam == 0)                         /* AF_UNSPEC: like v1 UNKNOWN */
        return (int)total;
    if (fam > 2 || proto != 1)            /* AF_UNIX, unknown families, datagrams */
        return -CG_PPE_FAMILY;
    alen = fam == 1 ? 12 : 36;
    if (plen < alen)
        return -CG_PPE_SHORT;
    memset(&r->src, 0, sizeof(r->src));
    memset(&r->dst, 0, sizeof(r->dst));
    if (fam == 1) {
        struct sockaddr_in *s = (struct sockaddr_in *)&r->src, *d = (struct sockaddr_in *)&r->dst;

        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, p + 16, 4);
        memcpy(&d->sin_addr, p + 20, 4);
        memcpy(&s->sin_port, p + 24, 2);
        memcpy(&d->sin_port, p + 26, 2);
    } else {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&r->src,
                            *d = (struct sockaddr_in6 *)&r->dst;

        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, p + 16, 16);
        memcpy(&d->sin6_addr, p + 32, 16);
        memcpy(&s->sin6_port, p + 48, 2);
        memcpy(&d->sin6_port, p + 50, 2);
    }
    err = parse_tlvs(p + 16 + alen, plen - alen, r);
    if (err < 0)
        return err;
    r->has_addr = 1;
    return (int)total;
}

int cg_pp_parse(const void *buf, size_t len, unsigned versions, struct cg_pp_result *r)
{
    const uint8_t *p = buf;
    size_t n;

    memset(r, 0, sizeof(*r));
    if (len == 0)
        return 0;
    /* Decide on the bytes there are: garbage is refused at its first wrong byte. */
    if (p[0] == 'P') {
        n = len < sizeof(v1_sig) - 1 ? len : sizeof(v1_sig) - 1;
        if (memcmp(p, v1_sig, n) != 0)
            return -CG_PPE_SIGNATURE;
        if (!(versions & CG_PP_V1))
            return -CG_PPE_VERSION;
        return len < sizeof(v1_sig) - 1 ? 0 : parse_v1(buf, len, r);
    }
    n = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
    if (memcmp(p, v2_sig, n) != 0)
        return -CG_PPE_SIGNATURE;
    if (!(versions & CG_PP_V2))
        return -CG_PPE_VERSION;
    return parse_v2(p, len, r);
}

/* ------------------------------------------------------------------ building */

/* <sa>'s address as 16 bytes (IPv4-mapped for IPv4) and its port. Returns 4, 6 or 0. */
static int addr16(const struct sockaddr *sa, uint8_t a[16], uint16_t *port)
{
    memset(a, 0, 16);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *s = (const struct sockaddr_in *)sa;

        a[10] = a[11] = 0xff;
        memcpy(a + 12, &s->sin_addr, 4);
        *port = s->sin_port;
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s = (const struct sockaddr_in6 *)sa;

        memcpy(a, &s->sin6_addr, 16);
        *port = s->sin6_port;
        return 6;
    }
    return 0;
}

int cg_pp_build_v1(char *buf, size_t size, const struct sockaddr *src,
                   const struct sockaddr *dst)
{
    char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
    uint8_t a[16], b[16];
    uint16_t sp, dp;
    int fs, fd, v6, n;

    if (!src) {
        n = snprintf(buf, size, "PROXY UNKNOWN\r\n");
        return n < 0 || (size_t)n >= size ? -ENOSPC : n;
    }
    fs = addr16(src, a, &sp);
    fd = addr16(dst, b, &dp);
    if (!fs || !fd)
        return -EAFNOSUPPORT;
    v6 = fs == 6 || fd == 6;
    if (v6) {
        inet_ntop(AF_INET6, a, s, sizeof(s));
        inet_ntop(AF_INET6, b, d, sizeof(d));
    } else {
        inet_ntop(AF_INET, a + 12, s, sizeof(s));
        inet_ntop(AF_INET, b + 12, d, sizeof(d));
    }
    n = snprintf(buf, size, "PROXY %s %s %s %u %u\r\n", v6 ? "TCP6" : "TCP4", s, d,
                 ntohs(sp), ntohs(dp));
    return n < 0 || (size_t)n >= size ? -ENOSPC : n;
}

int cg_pp_build_v2(uint8_t *buf, size_t size, const struct sockaddr *src,
                   const struct sockaddr *dst, const struct cg_pp_tlv *tlvs, size_t ntlvs)
{
    uint8_t a[16], b[16];
    uint16_t sp = 0, dp = 0;
    size_t total = CG_PP_V2_MIN, i, off;
    int fs = 0, fd = 0, v6 = 0;

    if (src) {
        fs = addr16(src, a, &sp);
        fd = addr16(dst, b, &dp);
        if (!fs || !fd)
            return -EAFNOSUPPORT;
        v6 = fs == 6 || fd == 6;
        total += v6 ? 36 : 12;
        for (i = 0; i < ntlvs; i++)
            total += 3 + (size_t)tlvs[i].len;
    }
    if (total > size || total > CG_PP_V2_MAX)
        return -ENOSPC;
    memcpy(buf, v2_sig, sizeof(v2_sig));
    buf[12] = src ? 0x21 : 0x20;          /* version 2, PROXY or LOCAL */
    buf[13] = src ? (v6 ? 0x21 : 0x11) : 0x00;
    buf[14] = (uint8_t)((total - CG_PP_V2_MIN) >> 8);
    buf[15] = (uint8_t)(total - CG_PP_V2_MIN);
    if (!src)
        return (int)total;
    off = CG_PP_V2_MIN;
    if (v6) {
        memcpy(buf + off, a, 16);
        memcpy(buf + off + 16, b, 16);
        off += 32;
    } else {
        memcpy(buf + off, a + 12, 4);
        memcpy(buf + off + 4, b + 12, 4);
        off += 8;
    }
    memcpy(buf + off, &sp, 2);
    memcpy(buf + off + 2, &dp, 2);
    off += 4;
    for (i = 0; i < ntlvs; i++) {
        buf[off] = tlvs[i].type;
        buf[off + 1] = (uint8_t)(tlvs[i].len >> 8);
        buf[off + 2] = (uint8_t)tlvs[i].len;
        memcpy(buf + off + 3, tlvs[i].value, tlvs[i].len);
        off += 3 + (size_t)tlvs[i].len;
    }
    return (int)total;
}
