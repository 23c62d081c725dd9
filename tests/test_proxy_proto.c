/* tests/test_proxy_proto.c — the PROXY protocol (gateway/base/proxy-proto.h) and trusted
 * client addresses: the parser from memory (every refusal, whole and byte by byte), the
 * builder in round trips, the address lists (base/cidr.h); then the real daemon between
 * real peers: headers from the test's clients and from a real HAProxy in front, a capture
 * backend that parses what corogate sends it (its own minimal reader, not ours), another
 * HAProxy behind, and the refusals counted by reason.
 */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "base/cidr.h"
#include "config/config.h"
#include "base/proxy-proto.h"

#define READY_MS 5000
#define IO_MS    5000
#define STOP_MS  5000

/* ------------------------------------------------------------------ parser */

static const char v2sig[] = "\r\n\r\n\0\r\nQUIT\n";

/* A v2 header: <cmd> (0 LOCAL, 1 PROXY), <fam> byte, then <plen> payload bytes. */
static size_t v2(uint8_t *out, unsigned cmd, uint8_t fam, const void *payload, size_t plen)
{
    memcpy(out, v2sig, 12);
    out[12] = (uint8_t)(0x20 | cmd);
    out[13] = fam;
    out[14] = (uint8_t)(plen >> 8);
    out[15] = (uint8_t)plen;
    if (plen)
        memcpy(out + 16, payload, plen);
    return 16 + plen;
}

/* Parses <s> whole, then byte by byte: every prefix must ask for more (or fail the same
 * way at the same point: garbage fails early). Returns the whole parse's result. */
static int parse_both(const void *s, size_t len, unsigned versions, struct cg_pp_result *r)
{
    int whole = cg_pp_parse(s, len, versions, r), part = 0;
    struct cg_pp_result r2;
    size_t i;

    for (i = 1; i <= len; i++) {
        part = cg_pp_parse(s, i, versions, &r2);
        if (part != 0)
            break;
    }
    if (whole > 0)
        ck_assert_msg(part == whole && i == (size_t)whole, "byte by byte: %d at %zu, whole: %d",
                      part, i, whole);
    else
        ck_assert_msg(part == whole, "byte by byte: %d at %zu, whole: %d (%zu: %.*s)", part, i,
                      whole, len, (int)len, (const char *)s);
    return whole;
}

static int parse_str(const char *s, unsigned versions, struct cg_pp_result *r)
{
    return parse_both(s, strlen(s), versions, r);
}

static const char *ntop(const struct sockaddr_storage *ss, char *buf, size_t size)
{
    char a[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, a, sizeof(a));
    else
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, a, sizeof(a));
    snprintf(buf, size, "%s:%u", a, ntohs(ss->ss_family == AF_INET
                                          ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port));
    return buf;
}

START_TEST(test_parse_v1)
{
    static const char tcp4[] = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\nGET /";
    static const char tcp6[] = "PROXY TCP6 2001:db8::1 2001:db8::2 65535 0\r\n";
    struct cg_pp_result r;
    char a[64];

    ck_assert_int_eq(parse_str(tcp4, CG_PP_V1, &r), (int)strlen(tcp4) - 5);
    ck_assert_uint_eq(r.version, 1);
    ck_assert_int_eq(r.has_addr, 1);
    ck_assert_str_eq(ntop(&r.src, a, sizeof(a)), "192.0.2.1:56324");
    ck_assert_str_eq(ntop(&r.dst, a, sizeof(a)), "198.51.100.2:443");
    ck_assert_int_eq(parse_str(tcp6, CG_PP_V1 | CG_PP_V2, &r), (int)strlen(tcp6));
    ck_assert_str_eq(ntop(&r.src, a, sizeof(a)), "2001:db8::1:65535");
    ck_assert_str_eq(ntop(&r.dst, a, sizeof(a)), "2001:db8::2:0");
    /* UNKNOWN: the rest of the line is ignored, no address */
    ck_assert_int_eq(parse_str("PROXY UNKNOWN\r\n", CG_PP_V1, &r), 15);
    ck_assert_int_eq(r.has_addr, 0);
    ck_assert_int_eq(parse_str("PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", CG_PP_V1, &r), 35);
    ck_assert_int_eq(r.has_addr, 0);
}
END_TEST

START_TEST(test_parse_v1_refusals)
{
    struct cg_pp_result r;
    char big[200];

    /* not a header: refused at the first wrong byte */
    ck_assert_int_eq(parse_str("GET / HTTP/1.1\r\n\r\n", 3, &r), -CG_PPE_SIGNATURE);
    ck_assert_int_eq(parse_str("PROXZ TCP4", 3, &r), -CG_PPE_SIGNATURE);
    ck_assert_int_eq(parse_str("\x16\x03\x01", 3, &r), -CG_PPE_SIGNATURE);   /* TLS */
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", CG_PP_V2, &r),
                     -CG_PPE_VERSION);
    /* tokens */
    ck_assert_int_eq(parse_str("PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 3, &r), -CG_PPE_TOKEN);
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 3, &r), -CG_PPE_TOKEN);
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 3, &r), -CG_PPE_TOKEN);
    ck_assert_int_eq(parse_str("PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 3, &r), -CG_PPE_TOKEN);
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 3, &r), -CG_PPE_TOKEN);
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 3, &r), -CG_PPE_TOKEN);
    ck_assert_int_eq(parse_str("PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 3, &r), -CG_PPE_TOKEN);
    /* wrong family for the addresses */
    ck_assert_int_eq(parse_str("PROXY TCP4 ::1 ::2 1 2\r\n", 3, &r), -CG_PPE_ADDRESS);
    ck_assert_int_eq(parse_str("PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", 3, &r), -CG_PPE_ADDRESS);
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", 3, &r),
                     -CG_PPE_ADDRESS);
    /* ports */
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", 3, &r), -CG_PPE_PORT);
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", 3, &r), -CG_PPE_PORT);
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", 3, &r), -CG_PPE_PORT);
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", 3, &r), -CG_PPE_PORT);
    ck_assert_int_eq(parse_str("PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n", 3, &r), -CG_PPE_PORT);
    /* oversized: no CRLF within 107 bytes */
    memset(big, 'x', sizeof(big));
    memcpy(big, "PROXY UNKNOWN ", 14);
    big[sizeof(big) - 1] = '\0';
    ck_assert_int_eq(parse_str(big, 3, &r), -CG_PPE_TOO_LONG);
    ck_assert_int_eq(cg_pp_parse(big, CG_PP_V1_MAX - 1, 3, &r), 0);       /* truncated */
    ck_assert_int_eq(cg_pp_parse(big, CG_PP_V1_MAX, 3, &r), -CG_PPE_TOO_LONG);
    /* the longest legal line is 107 bytes */
    snprintf(big, sizeof(big), "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
             "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n");
    ck_assert_uint_eq(strlen(big), 104);
    ck_assert_int_eq(parse_str(big, 3, &r), 104);
    ck_assert_str_eq(cg_pp_error_name(-CG_PPE_PORT), "port");
}
END_TEST

START_TEST(test_parse_v2)
{
    static const uint8_t in4[] = { 192, 0, 2, 1, 198, 51, 100, 2, 0xdc, 0x04, 0x01, 0xbb,
                                   0x02, 0x00, 0x05, 'a', '.', 'e', 'x', 'y',     /* AUTHORITY */
                                   0x05, 0x00, 0x03, 1, 2, 3,                    /* UNIQUE_ID */
                                   0xee, 0x00, 0x00 };                            /* other */
    uint8_t in6[36] = { 0x20, 0x01, 0x0d, 0xb8 }, buf[2048];
    struct cg_pp_result r;
    char a[64];
    size_t n;

    n = v2(buf, 1, 0x11, in4, sizeof(in4));
    memcpy(buf + n, "tail", 4);
    ck_assert_int_eq(parse_both(buf, n + 4, CG_PP_V2, &r), (int)n);
    ck_assert_uint_eq(r.version, 2);
    ck_assert_int_eq(r.has_addr, 1);
    ck_assert_int_eq(r.local, 0);
    ck_assert_str_eq(ntop(&r.src, a, sizeof(a)), "192.0.2.1:56324");
    ck_assert_str_eq(ntop(&r.dst, a, sizeof(a)), "198.51.100.2:443");
    ck_assert_uint_eq(r.authority_len, 5);
    ck_assert_int_eq(memcmp(r.authority, "a.exy", 5), 0);
    ck_assert_uint_eq(r.unique_id_len, 3);
    in6[15] = 1;
    in6[19] = 2;
    in6[32] = 0x12;
    in6[35] = 0x01;
    n = v2(buf, 1, 0x21, in6, sizeof(in6));
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V1 | CG_PP_V2, &r), (int)n);
    ck_assert_str_eq(ntop(&r.src, a, sizeof(a)), "2001:db8::1:4608");
    /* LOCAL: accepted, its block skipped whatever it holds */
    n = v2(buf, 0, 0x00, "junk", 4);
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), (int)n);
    ck_assert_int_eq(r.local, 1);
    ck_assert_int_eq(r.has_addr, 0);
    /* AF_UNSPEC PROXY: like UNKNOWN */
    n = v2(buf, 1, 0x00, NULL, 0);
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), 16);
    ck_assert_int_eq(r.has_addr, 0);
}
END_TEST

START_TEST(test_parse_v2_refusals)
{
    static const uint8_t in4[12] = { 192, 0, 2, 1, 198, 51, 100, 2, 0, 1, 0, 2 };
    uint8_t buf[4096], p[2048];
    struct cg_pp_result r;
    size_t n;

    n = v2(buf, 1, 0x11, in4, sizeof(in4));
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V1, &r), -CG_PPE_VERSION);
    buf[12] = 0x31;                                          /* version 3 */
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_VERSION);
    buf[12] = 0x22;                                          /* command 2 */
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_COMMAND);
    buf[5] = 'X';                                            /* signature */
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_SIGNATURE);
    /* families: AF_UNIX, datagrams, unknown */
    n = v2(buf, 1, 0x31, p, 216);
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_FAMILY);
    n = v2(buf, 1, 0x12, in4, sizeof(in4));
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_FAMILY);
    n = v2(buf, 1, 0x41, in4, sizeof(in4));
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_FAMILY);
    /* a length shorter than the family's block */
    n = v2(buf, 1, 0x21, in4, sizeof(in4));
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_SHORT);
    /* TLV overruns: a header cut inside a TLV, a TLV longer than what is left */
    memcpy(p, in4, 12);
    memcpy(p + 12, "\x05\x00", 2);
    n = v2(buf, 1, 0x11, p, 14);
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_TLV);
    memcpy(p + 12, "\x05\x00\x09xy", 5);
    n = v2(buf, 1, 0x11, p, 17);
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_TLV);
    /* a UNIQUE_ID over 128 bytes */
    memset(p + 15, 'u', 129);
    memcpy(p + 12, "\x05\x00\x81", 3);
    n = v2(buf, 1, 0x11, p, 12 + 3 + 129);
    ck_assert_int_eq(parse_both(buf, n, CG_PP_V2, &r), -CG_PPE_TLV);
    /* oversized: refused from the length alone, before the bytes come */
    memset(p, 0, sizeof(p));
    memcpy(p, in4, 12);
    n = v2(buf, 1, 0x11, p, CG_PP_V2_MAX - 16 + 1);
    ck_assert_int_eq(cg_pp_parse(buf, 16, CG_PP_V2, &r), -CG_PPE_TOO_LONG);
    /* truncated: needs more, never done */
    n = v2(buf, 1, 0x11, in4, sizeof(in4));
    ck_assert_int_eq(cg_pp_parse(buf, n - 1, CG_PP_V2, &r), 0);
    ck_assert_int_eq(cg_pp_parse(buf, 15, CG_PP_V2, &r), 0);
}
END_TEST

START_TEST(test_build_roundtrip)
{
    struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons(1234) };
    struct sockaddr_in d4 = { .sin_family = AF_INET, .sin_port = htons(80) };
    struct sockaddr_in6 d6 = { .sin6_family = AF_INET6, .sin6_port = htons(443) };
    struct cg_pp_tlv tlv[2] = { { CG_PP2_TYPE_AUTHORITY, 8, "host.exy" },
                                { CG_PP2_TYPE_UNIQUE_ID, 4, "\x00\x01\x02\x03" } };
    struct cg_pp_result r;
    uint8_t buf[CG_PP_V2_MAX];
    char a[64];
    int n;

    inet_pton(AF_INET, "203.0.113.9", &s4.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &d4.sin_addr);
    inet_pton(AF_INET6, "2001:db8::7", &d6.sin6_addr);
    n = cg_pp_build_v1((char *)buf, sizeof(buf), (struct sockaddr *)&s4,
                       (struct sockaddr *)&d4);
    ck_assert_int_eq(n, (int)strlen("PROXY TCP4 203.0.113.9 127.0.0.1 1234 80\r\n"));
    ck_assert_int_eq(memcmp(buf, "PROXY TCP4 203.0.113.9 127.0.0.1 1234 80\r\n", (size_t)n), 0);
    ck_assert_int_eq(cg_pp_parse(buf, (size_t)n, CG_PP_V1, &r), n);
    ck_assert_str_eq(ntop(&r.src, a, sizeof(a)), "203.0.113.9:1234");
    /* mixed families: IPv4-mapped in TCP6 */
    n = cg_pp_build_v1((char *)buf, sizeof(buf), (struct sockaddr *)&s4,
                       (struct sockaddr *)&d6);
    ck_assert_int_eq(memcmp(buf, "PROXY TCP6 ::ffff:203.0.113.9 2001:db8::7 1234 443\r\n",
                            (size_t)n), 0);
    ck_assert_int_eq(cg_pp_build_v1((char *)buf, 10, (struct sockaddr *)&s4,
                                    (struct sockaddr *)&d4), -ENOSPC);
    n = cg_pp_build_v1((char *)buf, sizeof(buf), NULL, NULL);
    ck_assert_int_eq(cg_pp_parse(buf, (size_t)n, CG_PP_V1, &r), 15);
    /* v2 with TLVs, both families */
    n = cg_pp_build_v2(buf, sizeof(buf), (struct sockaddr *)&s4, (struct sockaddr *)&d4, tlv, 2);
    ck_assert_int_eq(n, 16 + 12 + 11 + 7);
    ck_assert_int_eq(cg_pp_parse(buf, (size_t)n, CG_PP_V2, &r), n);
    ck_assert_str_eq(ntop(&r.src, a, sizeof(a)), "203.0.113.9:1234");
    ck_assert_str_eq(ntop(&r.dst, a, sizeof(a)), "127.0.0.1:80");
    ck_assert_int_eq(memcmp(r.authority, "host.exy", 8), 0);
    ck_assert_int_eq(memcmp(r.unique_id, "\x00\x01\x02\x03", 4), 0);
    n = cg_pp_build_v2(buf, sizeof(buf), (struct sockaddr *)&s4, (struct sockaddr *)&d6, NULL, 0);
    ck_assert_int_eq(n, 16 + 36);
    ck_assert_int_eq(cg_pp_parse(buf, (size_t)n, CG_PP_V2, &r), n);
    ck_assert_str_eq(ntop(&r.src, a, sizeof(a)), "::ffff:203.0.113.9:1234");
    /* LOCAL */
    n = cg_pp_build_v2(buf, sizeof(buf), NULL, NULL, NULL, 0);
    ck_assert_int_eq(n, 16);
    ck_assert_int_eq(cg_pp_parse(buf, 16, CG_PP_V2, &r), 16);
    ck_assert_int_eq(r.local, 1);
    ck_assert_int_eq(cg_pp_build_v2(buf, 20, (struct sockaddr *)&s4, (struct sockaddr *)&d4,
                                    NULL, 0), -ENOSPC);
}
END_TEST

START_TEST(test_cidr)
{
    struct sockaddr_in a4 = { .sin_family = AF_INET };
    struct sockaddr_in6 a6 = { .sin6_family = AF_INET6 };
    struct cg_cidr *l = NULL, c;
    char bad[64], out[64];
    size_t n;

    ck_assert_int_eq(cg_cidr_list_parse("10.0.0.0/8, 192.0.2.7 2001:db8::/32 [::1]", &l, &n,
                                        bad, sizeof(bad)), 0);
    ck_assert_uint_eq(n, 4);
    inet_pton(AF_INET, "10.200.3.4", &a4.sin_addr);
    ck_assert_int_eq(cg_cidr_list_match(l, n, (struct sockaddr *)&a4), 1);
    inet_pton(AF_INET, "192.0.2.8", &a4.sin_addr);
    ck_assert_int_eq(cg_cidr_list_match(l, n, (struct sockaddr *)&a4), 0);
    inet_pton(AF_INET6, "::ffff:10.1.1.1", &a6.sin6_addr);        /* IPv4-mapped */
    ck_assert_int_eq(cg_cidr_list_match(l, n, (struct sockaddr *)&a6), 1);
    inet_pton(AF_INET6, "2001:db9::1", &a6.sin6_addr);
    ck_assert_int_eq(cg_cidr_list_match(l, n, (struct sockaddr *)&a6), 0);
    /* realip: the rightmost untrusted address of the chain */
    ck_assert_int_eq(cg_cidr_xff_client(l, n, "198.51.100.1, 203.0.113.5, 10.0.0.1, 192.0.2.7",
                                        out, sizeof(out)), 1);
    ck_assert_str_eq(out, "203.0.113.5");
    ck_assert_int_eq(cg_cidr_xff_client(l, n, "10.0.0.2,10.0.0.1", out, sizeof(out)), 1);
    ck_assert_str_eq(out, "10.0.0.2");
    ck_assert_int_eq(cg_cidr_xff_client(l, n, "nonsense", out, sizeof(out)), 0);
    free(l);
    /* The text form: IPv4 by hand, against inet_ntop() over every octet value. */
    {
        char want[INET6_ADDRSTRLEN];
        unsigned v;

        for (v = 0; v < 256; v++) {
            uint32_t ip = v << 24 | (255 - v) << 16 | (v * 7 % 256) << 8 | (v % 10);

            a4.sin_addr.s_addr = htonl(ip);
            inet_ntop(AF_INET, &a4.sin_addr, want, sizeof(want));
            ck_assert_int_eq(cg_addr_name((struct sockaddr *)&a4, out, sizeof(out)), 0);
            ck_assert_str_eq(out, want);
        }
        inet_pton(AF_INET, "255.255.255.255", &a4.sin_addr);
        ck_assert_int_eq(cg_addr_name((struct sockaddr *)&a4, out, 15), -ENOSPC);
        ck_assert_int_eq(cg_addr_name((struct sockaddr *)&a4, out, 16), 0);
        ck_assert_str_eq(out, "255.255.255.255");
        inet_pton(AF_INET6, "2001:db8::1", &a6.sin6_addr);
        ck_assert_int_eq(cg_addr_name((struct sockaddr *)&a6, out, sizeof(out)), 0);
        ck_assert_str_eq(out, "2001:db8::1");
        a6.sin6_family = AF_UNIX;
        ck_assert_int_eq(cg_addr_name((struct sockaddr *)&a6, out, sizeof(out)), -EAFNOSUPPORT);
        a6.sin6_family = AF_INET6;
    }
    ck_assert_int_eq(cg_cidr_list_parse("10.0.0.0/33", &l, &n, bad, sizeof(bad)), -ERANGE);
    ck_assert_str_eq(bad, "10.0.0.0/33");
    ck_assert_ptr_null(l);
    ck_assert_int_eq(cg_cidr_list_parse("10.0.0.1 host.example", &l, &n, bad, sizeof(bad)),
                     -EINVAL);
    ck_assert_str_eq(bad, "host.example");
    ck_assert_int_eq(cg_cidr_parse("10.0.0.0/", &c), -EINVAL);
    ck_assert_int_eq(cg_cidr_list_parse("", &l, &n, bad, sizeof(bad)), 0);
    ck_assert_uint_eq(n, 0);
}
END_TEST

START_TEST(test_config_keys)
{
    static const char base[] =
        "[listener l]\nbind = 127.0.0.1:1\nupstream = u\nmode = %s\n%s\n"
        "[upstream u]\nservers = 127.0.0.1:2%s\n%s\n";
    struct cg_config *cfg = NULL;
    struct cg_errors errs;
    char text[1024];

    cg_errors_init(&errs);
    snprintf(text, sizeof(text), base, "websocket", "accept_proxy = any\n"
             "accept_proxy_from = 10.0.0.0/8 ::1\nproxy_timeout = 2s\n"
             "trusted_proxies = 10.1.0.0/16", " send_proxy=v1, 127.0.0.1:3", "send_proxy = v2");
    ck_assert_int_eq(cg_config_parse_string("t.ini", text, &cfg, &errs), 0);
    ck_assert_int_eq(cfg->listeners[0].accept_proxy, CG_PP_V1 | CG_PP_V2);
    ck_assert_uint_eq(cfg->listeners[0].nproxy_from, 2);
    ck_assert_uint_eq(cfg->listeners[0].proxy_timeout_ms, 2000);
    ck_assert_uint_eq(cfg->listeners[0].ntrusted_proxies, 1);
    ck_assert_int_eq(cfg->upstreams[0].send_proxy, 2);
    ck_assert_int_eq(cfg->upstreams[0].servers[0].send_proxy, 1);
    ck_assert_int_eq(cfg->upstreams[0].servers[1].send_proxy, -1);
    cg_config_free(cfg);
    cfg = NULL;
    /* defaults */
    snprintf(text, sizeof(text), base, "tcp", "", "", "");
    ck_assert_int_eq(cg_config_parse_string("t.ini", text, &cfg, &errs), 0);
    ck_assert_int_eq(cfg->listeners[0].accept_proxy, 0);
    ck_assert_uint_eq(cfg->listeners[0].proxy_timeout_ms, 5000);
    ck_assert_int_eq(cfg->upstreams[0].send_proxy, 0);
    cg_config_free(cfg);
    cfg = NULL;
    /* errors name the file, the line and the key */
    snprintf(text, sizeof(text), base, "tcp", "accept_proxy = v3\naccept_proxy_from = 10.0.0.0/99\n"
             "trusted_proxies = 10.0.0.1", " send_proxy=v9", "");
    ck_assert_int_eq(cg_config_parse_string("t.ini", text, &cfg, &errs), -EINVAL);
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(cg_errors_count(&errs), 4);
    ck_assert_ptr_nonnull(strstr(cg_errors_get(&errs, 0), "t.ini:5: [listener l] accept_proxy:"));
    ck_assert_ptr_nonnull(strstr(cg_errors_get(&errs, 1), "t.ini:6: [listener l] "
                                 "accept_proxy_from: \"10.0.0.0/99\" is not an address"));
    ck_assert_ptr_nonnull(strstr(cg_errors_get(&errs, 2), "t.ini:7: [listener l] "
                                 "trusted_proxies: only for mode = websocket"));
    ck_assert_ptr_nonnull(strstr(cg_errors_get(&errs, 3), "t.ini:9: [upstream u] servers: "
                                 "send_proxy \"v9\""));
    cg_errors_deinit(&errs);
    cg_errors_init(&errs);
    snprintf(text, sizeof(text), base, "tcp", "accept_proxy_from = 10.0.0.1", "", "");
    ck_assert_int_eq(cg_config_parse_string("t.ini", text, &cfg, &errs), -EINVAL);
    ck_assert_ptr_nonnull(strstr(cg_errors_get(&errs, 0), "accept_proxy is off"));
    cg_errors_deinit(&errs);
}
END_TEST

/* ------------------------------------------------------------------ real peers */

/* A capture backend: accepts connections one after another; from each it reads until
 * <until> (a string) has come, or EOF, keeps the bytes, answers "ok\n" and closes. */
struct capture {
    int             lfd;
    int             port;
    const char     *until;
    const void     *want;           /* only connections starting with these bytes count */
    size_t          want_len;
    pthread_t       thread;
    pthread_mutex_t lock;
    char            last[4096];     /* the last connection's bytes */
    size_t          last_len;
    unsigned        conns;          /* connections captured */
    int             stop;
};

static void *capture_main(void *arg)
{
    struct capture *cp = arg;
    char buf[4096];

    for (;;) {
        struct timeval tv = { 10, 0 };
        size_t len = 0;
        ssize_t n;
        int fd = accept(cp->lfd, NULL, NULL);

        if (fd < 0)
            break;
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        while (len < sizeof(buf) - 1) {
            n = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
            if (n <= 0)
                break;
            len += (size_t)n;
            buf[len] = '\0';
            if (memmem(buf, len, cp->until, strlen(cp->until)))
                break;
        }
        if (send(fd, "ok\n", 3, MSG_NOSIGNAL) < 0)
            len = len + 0;
        close(fd);
        pthread_mutex_lock(&cp->lock);
        if (len && (!cp->want || (len >= cp->want_len && !memcmp(buf, cp->want, cp->want_len)))) {
            memcpy(cp->last, buf, len);
            cp->last_len = len;
            cp->conns++;
        }
        pthread_mutex_unlock(&cp->lock);
    }
    return NULL;
}

static void capture_start(struct capture *cp, const char *until, const void *want,
                          size_t want_len)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof(a);

    memset(cp, 0, sizeof(*cp));
    cp->until = until;
    cp->want = want;
    cp->want_len = want_len;
    pthread_mutex_init(&cp->lock, NULL);
    cp->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(cp->lfd, 0);
    ck_assert_int_eq(bind(cp->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    ck_assert_int_eq(listen(cp->lfd, 64), 0);
    getsockname(cp->lfd, (struct sockaddr *)&a, &len);
    cp->port = ntohs(a.sin_port);
    ck_assert_int_eq(pthread_create(&cp->thread, NULL, capture_main, cp), 0);
}

static void capture_stop(struct capture *cp)
{
    shutdown(cp->lfd, SHUT_RDWR);
    pthread_join(cp->thread, NULL);
    close(cp->lfd);
    pthread_mutex_destroy(&cp->lock);
}

/* Waits until <cp> has captured <n> connections; copies the last one's bytes into <out>. */
static int capture_wait(struct capture *cp, unsigned n, char *out, size_t size, size_t *len)
{
    int64_t deadline = th_now_ms() + IO_MS;

    for (;;) {
        pthread_mutex_lock(&cp->lock);
        if (cp->conns >= n) {
            *len = cp->last_len < size ? cp->last_len : size;
            memcpy(out, cp->last, *len);
            pthread_mutex_unlock(&cp->lock);
            return 0;
        }
        pthread_mutex_unlock(&cp->lock);
        if (th_now_ms() > deadline)
            return -ETIMEDOUT;
        th_sleep_ms(10);
    }
}

/* Decodes a v2 header at <p> (<len> bytes) the way the spec lays it out, independently of
 * corogate's parser: its source "a.b.c.d:port" into <src>. Returns the header's length or
 * -1. */
static int backend_v2(const uint8_t *p, size_t len, char *src, size_t size)
{
    char a[INET_ADDRSTRLEN];
    size_t plen;

    if (len < 16 || memcmp(p, v2sig, 12) != 0 || p[12] != 0x21 || p[13] != 0x11)
        return -1;
    plen = (size_t)p[14] << 8 | p[15];
    if (len < 16 + plen || plen < 12)
        return -1;
    inet_ntop(AF_INET, p + 16, a, sizeof(a));
    snprintf(src, size, "%s:%u", a, (unsigned)(p[24] << 8 | p[25]));
    return (int)(16 + plen);
}

/* Connects from 127.0.0.<from> to 127.0.0.1:<port>. Returns the descriptor or -errno. */
static int connect_from(unsigned from, int port)
{
    struct sockaddr_in src = { .sin_family = AF_INET };
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    struct timeval tv = { IO_MS / 1000, 0 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

    if (fd < 0)
        return -errno;
    src.sin_addr.s_addr = htonl(0x7f000000u | from);
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof(dst)) < 0) {
        int err = -errno;

        close(fd);
        return err;
    }
    return fd;
}

/* Sends <len> bytes on a new connection from 127.0.0.<from> and returns what came back
 * until EOF (into <out>), or a negative errno. */
static ssize_t exchange(unsigned from, int port, const void *data, size_t len, char *out,
                        size_t size)
{
    int fd = connect_from(from, port);
    ssize_t n;

    if (fd < 0)
        return fd;
    n = th_send_all(fd, data, len);
    if (n >= 0)
        n = th_recv_eof(fd, out, size - 1);
    if (n >= 0)
        out[n] = '\0';
    close(fd);
    return n;
}

static char *show(int port, const char *cmd)
{
    char sock[TH_PATH_MAX];

    snprintf(sock, sizeof(sock), "%s/pp-%d.sock", th_tmpdir(), port);
    return th_stats_cmd(sock, cmd, IO_MS);
}

/* The sum of corogate_proxy_rejected_total{...,reason="<reason>"} over the workers. */
static long rejected(int port, const char *reason)
{
    char *m = show(port, "show metrics"), *p, want[64];
    long sum = 0;

    if (!m)
        return -1;
    snprintf(want, sizeof(want), "reason=\"%s\"}", reason);
    for (p = m; (p = strstr(p, "\ncorogate_proxy_rejected_total{")) != NULL; p++) {
        char *eol = strchr(p + 1, '\n'), *lab = strstr(p + 1, want);

        if (lab && (!eol || lab < eol))
            sum += atol(lab + strlen(want));
    }
    free(m);
    return sum;
}

/* Waits until rejected(<port>, <reason>) reaches <n>. Returns the last count. */
static long wait_rejected(int port, const char *reason, long n)
{
    int64_t deadline = th_now_ms() + IO_MS;
    long got;

    while ((got = rejected(port, reason)) < n && th_now_ms() < deadline)
        th_sleep_ms(20);
    return got;
}

/* A daemon: [listener t] with <listener> lines (mode included), [upstream u] on <servers>
 * with <upstream> lines; 1 worker so that per-address counts are exact. */
static struct th_daemon *start(int *port, const char *listener, const char *servers,
                               const char *upstream)
{
    struct th_daemon_opts opts = { .ready_log = "ready: accepting connections" };
    struct th_daemon *d;

    *port = th_free_port();
    d = th_daemon_start_conf(&opts, "[gateway]\nworkers = 1\ncpu_pinning = off\n"
                             "log_level = debug\nstats_socket = %s/pp-%d.sock\n"
                             "[listener t]\nbind = 127.0.0.1:%d\nupstream = u\n%s\n"
                             "[upstream u]\nservers = %s\nhealth_check_interval = 0\n%s\n",
                             th_tmpdir(), *port, *port, listener, servers, upstream);
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, *port, READY_MS) == 0, "not ready");
    return d;
}

static void stop_clean(struct th_daemon *d)
{
    char how[96];
    int st = th_daemon_stop(d, SIGTERM, STOP_MS);

    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: %s",
              th_describe_status(st, how, sizeof(how)));
}

/* v1 and v2 from the client, v2 and (a server's override) v1 to a tcp backend, which sees
 * the carried client address, then the payload unchanged. */
START_TEST(test_tcp_send_proxy)
{
    static const char h1[] = "PROXY TCP4 192.0.2.10 198.51.100.1 4242 8000\r\nhello";
    struct capture cp;
    struct th_daemon *d;
    char servers[64], got[4096], out[64], src[64], *coros;
    uint8_t h2[64];
    size_t len;
    int port, n, fd;

    capture_start(&cp, "hello", NULL, 0);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", cp.port);
    d = start(&port, "accept_proxy = any", servers, "send_proxy = v2");
    TH_ASSERT(d, exchange(1, port, h1, strlen(h1), out, sizeof(out)) == 3, "no answer");
    TH_ASSERT(d, capture_wait(&cp, 1, got, sizeof(got), &len) == 0, "backend saw nothing");
    n = backend_v2((uint8_t *)got, len, src, sizeof(src));
    TH_ASSERT(d, n > 0, "no v2 header at the backend: %.*s", (int)len, got);
    TH_ASSERT(d, strcmp(src, "192.0.2.10:4242") == 0, "backend saw %s", src);
    TH_ASSERT(d, len - (size_t)n == 5 && memcmp(got + n, "hello", 5) == 0, "payload");
    /* a v2 client, held open while `show coros` lists it by its carried address */
    {
        static const uint8_t in4[12] = { 203, 0, 113, 77, 127, 0, 0, 1, 0x30, 0x39, 0, 80 };
        size_t k = v2(h2, 1, 0x11, in4, sizeof(in4));

        fd = connect_from(1, port);
        TH_ASSERT(d, fd >= 0, "connect");
        TH_ASSERT(d, th_send_all(fd, h2, k) == (ssize_t)k, "send");
        TH_ASSERT(d, th_daemon_wait_log(d, "client 203.0.113.77", 1, IO_MS) == 0,
                  "header not logged at debug");
        coros = show(port, "show coros");
        TH_ASSERT(d, coros && strstr(coros, "peer=203.0.113.77"), "show coros:\n%s", coros);
        free(coros);
        TH_ASSERT(d, th_send_all(fd, "hello", 5) == 5, "send");
        TH_ASSERT(d, th_recv_eof(fd, out, sizeof(out)) == 3, "no answer");
        close(fd);
    }
    TH_ASSERT(d, capture_wait(&cp, 2, got, sizeof(got), &len) == 0, "backend saw nothing");
    n = backend_v2((uint8_t *)got, len, src, sizeof(src));
    TH_ASSERT(d, n > 0 && strcmp(src, "203.0.113.77:12345") == 0, "backend saw %s", src);
    stop_clean(d);

    /* the server's send_proxy=v1 over the upstream's v2 */
    snprintf(servers, sizeof(servers), "127.0.0.1:%d send_proxy=v1", cp.port);
    d = start(&port, "accept_proxy = v1", servers, "send_proxy = v2");
    TH_ASSERT(d, exchange(1, port, h1, strlen(h1), out, sizeof(out)) == 3, "no answer");
    TH_ASSERT(d, capture_wait(&cp, 3, got, sizeof(got), &len) == 0, "backend saw nothing");
    got[len] = '\0';
    TH_ASSERT(d, strncmp(got, "PROXY TCP4 192.0.2.10 198.51.100.1 4242 8000\r\nhello",
                         len) == 0, "backend saw %s", got);
    stop_clean(d);
    capture_stop(&cp);
}
END_TEST

/* A WebSocket backend sees the carried address in X-Forwarded-For and Forwarded: the
 * client's own X-Forwarded-For replaced, unless the address is a trusted proxy's; and the
 * client's Sec-WebSocket-Key. */
START_TEST(test_ws_forwarded_for)
{
    static const char req[] =
        "PROXY TCP4 203.0.113.5 127.0.0.1 5555 80\r\n"
        "GET /chat HTTP/1.1\r\nHost: h.exy\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        "X-Forwarded-For: 6.6.6.6\r\n\r\n";
    struct capture cp;
    struct th_daemon *d;
    char servers[64], got[4096], out[1024];
    size_t len;
    int port;

    capture_start(&cp, "\r\n\r\n", NULL, 0);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", cp.port);
    d = start(&port, "mode = websocket\naccept_proxy = v1", servers, "");
    exchange(1, port, req, strlen(req), out, sizeof(out));
    TH_ASSERT(d, capture_wait(&cp, 1, got, sizeof(got), &len) == 0, "backend saw nothing");
    got[len] = '\0';
    TH_ASSERT(d, strstr(got, "\r\nX-Forwarded-For: 203.0.113.5\r\n") &&
                 strstr(got, "\r\nForwarded: for=203.0.113.5;"), "backend request:\n%s", got);
    TH_ASSERT(d, !strstr(got, "6.6.6.6"), "the client's own X-Forwarded-For passed:\n%s", got);
    /* the client's key goes on: the backend's accept value is then our 101's */
    TH_ASSERT(d, strstr(got, "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
              "backend request:\n%s", got);
    stop_clean(d);

    d = start(&port, "mode = websocket\naccept_proxy = v1\ntrusted_proxies = 203.0.113.0/24",
              servers, "");
    exchange(1, port, req, strlen(req), out, sizeof(out));
    TH_ASSERT(d, capture_wait(&cp, 2, got, sizeof(got), &len) == 0, "backend saw nothing");
    got[len] = '\0';
    TH_ASSERT(d, strstr(got, "\r\nX-Forwarded-For: 6.6.6.6, 203.0.113.5\r\n"),
              "backend request:\n%s", got);
    TH_ASSERT(d, th_daemon_wait_log(d, "client 6.6.6.6 (X-Forwarded-For from trusted "
                                    "203.0.113.5)", 1, IO_MS) == 0, "realip client not logged");
    stop_clean(d);
    capture_stop(&cp);
}
END_TEST

/* accept_proxy_from: others are refused at accept and counted; garbage and a header too
 * slow are refused and counted by reason; a client that connects and closes without a
 * byte (a balancer's TCP check) is not a refusal. */
START_TEST(test_refusals)
{
    static const char h1[] = "PROXY TCP4 192.0.2.10 198.51.100.1 4242 8000\r\nhi";
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64], out[64];
    long base;
    int port, fd;

    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    d = start(&port, "accept_proxy = v1\naccept_proxy_from = 127.0.0.2/32\n"
              "proxy_timeout = 300ms", servers, "");
    base = rejected(port, "untrusted");             /* the readiness probe's, from .1 */
    /* refused: closed (or reset) before a byte of the echo */
    TH_ASSERT(d, exchange(1, port, h1, strlen(h1), out, sizeof(out)) <= 0, "not refused");
    TH_ASSERT(d, wait_rejected(port, "untrusted", base + 1) == base + 1, "not counted");
    fd = connect_from(2, port);
    TH_ASSERT(d, fd >= 0, "connect");
    TH_ASSERT(d, th_send_all(fd, h1, strlen(h1)) == (ssize_t)strlen(h1), "send");
    TH_ASSERT(d, th_recv_n(fd, out, 2) == 2 && memcmp(out, "hi", 2) == 0,
              "no echo from a trusted source");
    close(fd);
    /* garbage: refused at once */
    TH_ASSERT(d, exchange(2, port, "GET / HTTP/1.1\r\n\r\n", 18, out, sizeof(out)) <= 0,
              "garbage not refused");
    TH_ASSERT(d, wait_rejected(port, "bad_header", 1) == 1, "garbage not counted");
    /* a header that never ends: closed at proxy_timeout */
    fd = connect_from(2, port);
    TH_ASSERT(d, fd >= 0 && th_send_all(fd, "PROXY TCP4 1.2", 14) == 14, "send");
    TH_ASSERT(d, th_wait_closed(fd, IO_MS) == 0, "a stalled header was not closed");
    close(fd);
    TH_ASSERT(d, wait_rejected(port, "timeout", 1) == 1, "timeout not counted");
    /* a connect and a close without a byte: nothing counted */
    fd = connect_from(2, port);
    close(fd);
    TH_ASSERT(d, rejected(port, "bad_header") == 1, "an empty connection counted");
    {
        char *info = show(port, "show info");

        TH_ASSERT(d, info && strstr(info, "proxy_rejected: bad_header 1 untrusted ") &&
                     strstr(info, " timeout 1\n"), "show info:\n%s", info);
        free(info);
    }
    stop_clean(d);
    th_echo_free(e);
}
END_TEST

/* Per-address limits apply to the carried address, once the header is read: one
 * connection per address, so a second from 192.0.2.1 is refused, one from 192.0.2.2 not,
 * though all come from the same socket peer. */
START_TEST(test_admission_by_carried_address)
{
    struct th_echo *e = th_echo_new(0);
    struct th_daemon *d;
    char servers[64], out[16];
    int port, a, b, c;

    snprintf(servers, sizeof(servers), "127.0.0.1:%d", th_echo_port(e));
    d = start(&port, "accept_proxy = v1\nmax_connections_per_ip = 1", servers, "");
    a = connect_from(1, port);
    TH_ASSERT(d, a >= 0 && th_send_all(a, "PROXY TCP4 192.0.2.1 127.0.0.1 1 2\r\nx", 37) == 37,
              "send");
    TH_ASSERT(d, th_recv_n(a, out, 1) == 1, "first connection not relayed");
    b = connect_from(1, port);
    TH_ASSERT(d, b >= 0 && th_send_all(b, "PROXY TCP4 192.0.2.1 127.0.0.1 3 2\r\nx", 37) == 37,
              "send");
    TH_ASSERT(d, th_wait_closed(b, IO_MS) == 0, "a second connection of 192.0.2.1 relayed");
    c = connect_from(1, port);
    TH_ASSERT(d, c >= 0 && th_send_all(c, "PROXY TCP4 192.0.2.2 127.0.0.1 1 2\r\ny", 37) == 37,
              "send");
    TH_ASSERT(d, th_recv_n(c, out, 1) == 1 && out[0] == 'y', "192.0.2.2 refused");
    {
        char *m = show(port, "show metrics");

        TH_ASSERT(d, m && strstr(m, "corogate_listener_connections_rejected_total{listener=\"t\","
                                    "worker=\"0\",reason=\"ip_quota\"} 1"),
                  "ip_quota refusal not counted:\n%s", m ? th_tail(m, 2000) : "");
        free(m);
    }
    close(a);
    close(b);
    close(c);
    stop_clean(d);
    th_echo_free(e);
}
END_TEST

/* On a websocket listener the client refused for its carried address is answered as at
 * accept: 429 with Retry-After for ip_connection_rate. */
START_TEST(test_ws_refused_by_carried_address)
{
    static const char req[] =
        "PROXY TCP4 192.0.2.1 127.0.0.1 5555 80\r\n"
        "GET /chat HTTP/1.1\r\nHost: h.exy\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    struct capture cp;
    struct th_daemon *d;
    char servers[64], got[4096], out[1024];
    size_t len;
    ssize_t n;
    int port;

    capture_start(&cp, "\r\n\r\n", NULL, 0);
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", cp.port);
    d = start(&port, "mode = websocket\naccept_proxy = v1\nip_connection_rate = 1\n"
              "ip_connection_burst = 1", servers, "");
    exchange(1, port, req, strlen(req), out, sizeof(out));
    TH_ASSERT(d, capture_wait(&cp, 1, got, sizeof(got), &len) == 0, "first not relayed");
    n = exchange(1, port, req, strlen(req), out, sizeof(out));
    TH_ASSERT(d, n > 0 && strncmp(out, "HTTP/1.1 429 ", 13) == 0 && strstr(out, "Retry-After: "),
              "second of 192.0.2.1 answered: %s", n > 0 ? out : "nothing");
    stop_clean(d);
    capture_stop(&cp);
}
END_TEST

/* With tls = on the header comes first, in clear, then the TLS handshake (as HAProxy
 * reads it): a python3 ssl client behind a header sent on the raw socket; the backend
 * sees the carried address and the decrypted payload. */
START_TEST(test_header_before_tls)
{
    struct th_daemon_opts opts = { .ready_log = "ready: accepting connections" };
    struct capture cp;
    struct th_daemon *d;
    char dir[TH_PATH_MAX], py[TH_PATH_MAX], cmd[TH_PATH_MAX * 3], got[4096];
    int port = th_free_port(), st;
    size_t len;

    if (access("/usr/bin/python3", X_OK) != 0)
        TH_SKIP("no /usr/bin/python3 (apt-get install python3)");
    snprintf(dir, sizeof(dir), "%s/pp-cert", th_tmpdir());
    snprintf(cmd, sizeof(cmd), "mkdir -p %s && cd %s && openssl req -x509 -newkey ec "
             "-pkeyopt ec_paramgen_curve:P-256 -nodes -keyout k.pem -out c.pem "
             "-subj /CN=pp.test -days 2 2>/dev/null && cat c.pem k.pem > both.pem", dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    ck_assert_int_eq(th_write_file(py, sizeof(py), "pp-tls.py",
        "import socket, ssl, sys\n"
        "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)\n"
        "s.sendall(b'PROXY TCP4 192.0.2.44 127.0.0.1 4444 443\\r\\n')\n"
        "ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)\n"
        "ctx.check_hostname = False\nctx.verify_mode = ssl.CERT_NONE\n"
        "t = ctx.wrap_socket(s)\nt.sendall(b'hello')\n"
        "sys.exit(0 if t.recv(16) == b'ok\\n' else 1)\n"), 0);
    capture_start(&cp, "hello", NULL, 0);
    d = th_daemon_start_conf(&opts, "[gateway]\nworkers = 1\ncpu_pinning = off\n"
                             "stats_socket = %s/pp-%d.sock\n"
                             "[listener t]\nbind = 127.0.0.1:%d\nupstream = u\n"
                             "accept_proxy = v1\ntls = on\ntls_certificate = %s/both.pem\n"
                             "[upstream u]\nservers = 127.0.0.1:%d\n"
                             "health_check_interval = 0\nsend_proxy = v1\n",
                             th_tmpdir(), port, port, dir, cp.port);
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %d", py, port);
    st = system(cmd);
    TH_ASSERT(d, st == 0, "the TLS client behind a header failed (%d)", st);
    TH_ASSERT(d, capture_wait(&cp, 1, got, sizeof(got), &len) == 0, "backend saw nothing");
    got[len] = '\0';
    TH_ASSERT(d, strncmp(got, "PROXY TCP4 192.0.2.44 127.0.0.1 4444 443\r\nhello", len) == 0 &&
                 len == 47, "backend saw %s", got);
    stop_clean(d);
    capture_stop(&cp);
}
END_TEST

/* A real HAProxy in front (send-proxy-v2) and another behind (accept-proxy, then
 * send-proxy to the capture backend): the client bound to 127.0.0.2 is the one seen behind
 * both, though every socket between them is from 127.0.0.1. corogate's health checks reach
 * the HAProxy behind too, as v2 LOCAL headers it accepts. */
START_TEST(test_haproxy_both_sides)
{
    struct capture cp;
    struct th_daemon *d;
    char front[TH_PATH_MAX], back[TH_PATH_MAX], servers[64], got[4096], out[64];
    int port, fport = th_free_port(), bport = th_free_port(), i, fd = -1;
    pid_t hf, hb;
    size_t len;

    if (access("/usr/sbin/haproxy", X_OK) != 0)
        TH_SKIP("haproxy is not installed (make deps installs it)");
    capture_start(&cp, "hello", NULL, 0);
    ck_assert_int_eq(th_write_file(back, sizeof(back), "haproxy-back.cfg",
        "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n"
        "  timeout client 30s\n  timeout server 30s\n"
        "frontend f\n  bind 127.0.0.1:%d accept-proxy\n  default_backend b\n"
        "backend b\n  server c 127.0.0.1:%d send-proxy\n", bport, cp.port), 0);
    hb = th_fork();
    if (hb == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/usr/sbin/haproxy", "haproxy", "-db", "-f", back, (char *)NULL);
        _exit(127);
    }
    snprintf(servers, sizeof(servers), "127.0.0.1:%d", bport);
    d = start(&port, "accept_proxy = v2", servers, "send_proxy = v2");
    ck_assert_int_eq(th_write_file(front, sizeof(front), "haproxy-front.cfg",
        "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n"
        "  timeout client 30s\n  timeout server 30s\n"
        "frontend f\n  bind 127.0.0.1:%d\n  default_backend b\n"
        "backend b\n  server g 127.0.0.1:%d send-proxy-v2\n", fport, port), 0);
    hf = th_fork();
    if (hf == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl("/usr/sbin/haproxy", "haproxy", "-db", "-f", front, (char *)NULL);
        _exit(127);
    }
    for (i = 0; i < 100 && fd < 0; i++) {          /* the haproxies may still be starting */
        fd = connect_from(2, fport);
        if (fd >= 0 && (th_send_all(fd, "hello", 5) != 5 || th_recv_eof(fd, out, 8) != 3)) {
            close(fd);
            fd = -1;
        }
        if (fd < 0)
            th_sleep_ms(100);
    }
    TH_ASSERT(d, fd >= 0, "no answer through haproxy -> corogate -> haproxy");
    close(fd);
    TH_ASSERT(d, capture_wait(&cp, 1, got, sizeof(got), &len) == 0, "backend saw nothing");
    got[len] = '\0';
    TH_ASSERT(d, strncmp(got, "PROXY TCP4 127.0.0.2 127.0.0.1 ", 31) == 0 &&
                 strstr(got, "\r\nhello"), "behind both: %s", got);
    TH_ASSERT(d, rejected(port, "bad_header") == 0, "haproxy's header refused");
    kill(hf, SIGKILL);
    waitpid(hf, NULL, 0);
    kill(hb, SIGKILL);
    waitpid(hb, NULL, 0);
    stop_clean(d);
    capture_stop(&cp);
}
END_TEST

/* Health checks to a server with send_proxy open with a LOCAL header (v2) or UNKNOWN (v1),
 * which the capture backend receives. */
START_TEST(test_health_check_local)
{
    struct th_daemon_opts opts = { .ready_log = "ready: accepting connections" };
    struct capture cp;
    struct th_daemon *d;
    char got[4096];
    size_t len;
    int port = th_free_port();

    /* The readiness probe is relayed too (with a TCP4 header): only the checks count. */
    capture_start(&cp, "\r\n", "PROXY UNKNOWN\r\n", 15);
    d = th_daemon_start_conf(&opts, "[gateway]\nworkers = 1\ncpu_pinning = off\n"
                             "stats_socket = %s/pp-%d.sock\n"
                             "[listener t]\nbind = 127.0.0.1:%d\nupstream = u\n"
                             "[upstream u]\nservers = 127.0.0.1:%d send_proxy=v1\n"
                             "health_check_interval = 100ms\nhealth_check_timeout = 50ms\n"
                             "send_proxy = v2\n", th_tmpdir(), port, port, cp.port);
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    TH_ASSERT(d, capture_wait(&cp, 1, got, sizeof(got), &len) == 0, "no check arrived");
    TH_ASSERT(d, len == 15 && memcmp(got, "PROXY UNKNOWN\r\n", 15) == 0, "check sent %.*s",
              (int)len, got);
    stop_clean(d);
    capture_stop(&cp);

    capture_start(&cp, "QUIT\n", "\r\n\r\n\0\r\nQUIT\n\x20", 13);
    port = th_free_port();
    d = th_daemon_start_conf(&opts, "[gateway]\nworkers = 1\ncpu_pinning = off\n"
                             "stats_socket = %s/pp-%d.sock\n"
                             "[listener t]\nbind = 127.0.0.1:%d\nupstream = u\n"
                             "[upstream u]\nservers = 127.0.0.1:%d\n"
                             "health_check_interval = 100ms\nhealth_check_timeout = 50ms\n"
                             "send_proxy = v2\n", th_tmpdir(), port, port, cp.port);
    ck_assert_ptr_nonnull(d);
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready");
    TH_ASSERT(d, capture_wait(&cp, 1, got, sizeof(got), &len) == 0, "no check arrived");
    TH_ASSERT(d, len == 16 && memcmp(got, v2sig, 12) == 0 && got[12] == 0x20 && got[13] == 0 &&
                 got[14] == 0 && got[15] == 0, "not a v2 LOCAL header (%zu bytes)", len);
    stop_clean(d);
    capture_stop(&cp);
}
END_TEST

Suite *proxy_proto_suite(void)
{
    Suite *s = suite_create("proxy_proto");
    TCase *unit = tcase_create("unit");
    TCase *gw = tcase_create("daemon");

    tcase_add_test(unit, test_parse_v1);
    tcase_add_test(unit, test_parse_v1_refusals);
    tcase_add_test(unit, test_parse_v2);
    tcase_add_test(unit, test_parse_v2_refusals);
    tcase_add_test(unit, test_build_roundtrip);
    tcase_add_test(unit, test_cidr);
    tcase_add_test(unit, test_config_keys);
    suite_add_tcase(s, unit);
    th_tcase_add_fixtures(gw);
    tcase_set_timeout(gw, 120);
    tcase_add_test(gw, test_tcp_send_proxy);
    tcase_add_test(gw, test_ws_forwarded_for);
    tcase_add_test(gw, test_refusals);
    tcase_add_test(gw, test_admission_by_carried_address);
    tcase_add_test(gw, test_ws_refused_by_carried_address);
    tcase_add_test(gw, test_header_before_tls);
    tcase_add_test(gw, test_haproxy_both_sides);
    tcase_add_test(gw, test_health_check_local);
    suite_add_tcase(s, gw);
    return s;
}
