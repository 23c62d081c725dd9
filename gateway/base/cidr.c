/* gateway/base/cidr.c — address blocks: parsing and matching (base/cidr.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cidr.h"

/* <a> (IPv4 or IPv6 text, brackets allowed around IPv6, <len> bytes) as 16 bytes,
 * IPv4-mapped for IPv4. Returns 4 or 6, or 0 when it is not an address. */
static int parse_addr(const char *a, size_t len, uint8_t out[16])
{
    char buf[INET6_ADDRSTRLEN + 1];

    if (len >= 2 && a[0] == '[' && a[len - 1] == ']') {
        a++;
        len -= 2;
        if (len >= sizeof(buf) || !memchr(a, ':', len))
            return 0;
    }
    if (len == 0 || len >= sizeof(buf))
        return 0;
    memcpy(buf, a, len);
    buf[len] = '\0';
    memset(out, 0, 16);
    if (inet_pton(AF_INET, buf, out + 12) == 1) {
        out[10] = out[11] = 0xff;
        return 4;
    }
    return inet_pton(AF_INET6, buf, out) == 1 ? 6 : 0;
}

static void mask(uint8_t a[16], unsigned bits)
{
    unsigned i;

    for (i = 0; i < 16; i++) {
        if (bits >= 8) {
            bits -= 8;
        } else {
            a[i] &= (uint8_t)(0xff00 >> bits);
            bits = 0;
        }
    }
}

int cg_cidr_parse(const char *s, struct cg_cidr *c)
{
    const char *slash = strchr(s, '/');
    size_t len = slash ? (size_t)(slash - s) : strlen(s);
    unsigned long bits;
    char *end;
    int fam = parse_addr(s, len, c->addr);

    if (!fam)
        return -EINVAL;
    if (!slash) {
        c->bits = 128;
        return 0;
    }
    if (slash[1] < '0' || slash[1] > '9')
        return -EINVAL;
    errno = 0;
    bits = strtoul(slash + 1, &end, 10);
    if (*end)
        return -EINVAL;
    if (errno || bits > (fam == 4 ? 32u : 128u))
        return -ERANGE;
    c->bits = (uint8_t)(fam == 4 ? bits + 96 : bits);
    mask(c->addr, c->bits);
    return 0;
}

int cg_cidr_list_parse(const char *s, struct cg_cidr **out, size_t *n, char *bad,
                       size_t badsize)
{
    struct cg_cidr *list = NULL, *tmp;
    size_t cap = 0, len;
    char tok[INET6_ADDRSTRLEN + 8];
    int err;

    *out = NULL;
    *n = 0;
    for (;;) {
        s += strspn(s, " \t,");
        len = strcspn(s, " \t,");
        if (len == 0)
            break;
        if (len >= sizeof(tok)) {
            err = -EINVAL;
            snprintf(bad, badsize, "%.*s", (int)(len > 40 ? 40 : len), s);
            goto out_free;
        }
        memcpy(tok, s, len);
        tok[len] = '\0';
        s += len;
        if (*n == cap) {
            cap = cap ? 2 * cap : 4;
            tmp = realloc(list, cap * sizeof(*list));
            if (!tmp) {
                err = -ENOMEM;
                goto out_free;
            }
            list = tmp;
        }
        err = cg_cidr_parse(tok, &list[*n]);
        if (err < 0) {
            snprintf(bad, badsize, "%s", tok);
            goto out_free;
        }
        (*n)++;
    }
    *out = list;
    return 0;

out_free:
    free(list);
    *n = 0;
    return err;
}

static int match16(const struct cg_cidr *list, size_t n, const uint8_t a[16])
{
    uint8_t m[16];
    size_t i;

    for (i = 0; i < n; i++) {
        memcpy(m, a, 16);
        mask(m, list[i].bits);
        if (memcmp(m, list[i].addr, 16) == 0)
            return 1;
    }
    return 0;
}

int cg_cidr_list_match(const struct cg_cidr *list, size_t n, const struct sockaddr *sa)
{
    uint8_t a[16] = { 0 };

    if (sa->sa_family == AF_INET) {
        a[10] = a[11] = 0xff;
        memcpy(a + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6) {
        memcpy(a, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
    } else {
        return 0;
    }
    return match16(list, n, a);
}

int cg_cidr_list_match_text(const struct cg_cidr *list, size_t n, const char *s, size_t len)
{
    uint8_t a[16];

    return parse_addr(s, len, a) ? match16(list, n, a) : 0;
}

int cg_cidr_xff_client(const struct cg_cidr *list, size_t n, const char *xff, char *out,
                       size_t size)
{
    const char *end, *a, *b;
    uint8_t tmp[16];
    int found = 0;

    if (!xff)
        return 0;
    end = xff + strlen(xff);
    /* Right to left, item by item: blanks and commas separate. */
    while (end > xff) {
        while (end > xff && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == ','))
            end--;
        b = end;
        while (b > xff && b[-1] != ',' && b[-1] != ' ' && b[-1] != '\t')
            b--;
        a = b;
        if (a == end)
            break;
        if (!parse_addr(a, (size_t)(end - a), tmp))
            break;
        snprintf(out, size, "%.*s", (int)(end - a), a);
        found = 1;
        if (!match16(list, n, tmp))
            return 1;
        end = a;
    }
    return found;
}

int cg_addr_name(const struct sockaddr *sa, char *buf, size_t size)
{
    char tmp[INET6_ADDRSTRLEN], *p = tmp;
    const uint8_t *a;
    int i;

    if (sa->sa_family == AF_INET6) {
        if (!inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, tmp,
                       sizeof(tmp)))
            return -errno;
    } else if (sa->sa_family == AF_INET) {
        a = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
        for (i = 0; i < 4; i++) {
            if (a[i] >= 100)
                *p++ = (char)('0' + a[i] / 100);
            if (a[i] >= 10)
                *p++ = (char)('0' + a[i] / 10 % 10);
            *p++ = (char)('0' + a[i] % 10);
            *p++ = '.';
        }
        p[-1] = '\0';
    } else {
        return -EAFNOSUPPORT;
    }
    if (strlen(tmp) >= size)
        return -ENOSPC;
    strcpy(buf, tmp);
    return 0;
}
