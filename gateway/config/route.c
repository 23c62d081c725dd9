/* gateway/config/route.c — parsing and matching a listener's routes (syntax in route.h). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/route.h"

#define NAME_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-"
#define HOST_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.-:[]"

/* Parses one "HOST/PATH=UPSTREAM" item of <len> bytes at <s> into <r>. Returns 0 or -1
 * with a message in <err>. */
static int parse_item(const char *s, size_t len, struct cg_route *r, char *err, size_t esz)
{
    const char *eq = memchr(s, '=', len), *slash, *name;
    size_t hlen, plen, nlen, i;

    memset(r, 0, sizeof(*r));
    if (!eq) {
        snprintf(err, esz, "\"%.*s\": expected [HOST]/PATH=UPSTREAM", (int)len, s);
        return -1;
    }
    slash = memchr(s, '/', (size_t)(eq - s));
    if (!slash) {
        snprintf(err, esz, "\"%.*s\": the path must start with '/'", (int)len, s);
        return -1;
    }
    hlen = (size_t)(slash - s);
    plen = (size_t)(eq - slash);
    name = eq + 1;
    nlen = len - (size_t)(name - s);
    if (hlen >= sizeof(r->host) || strspn(s, HOST_CHARS) < hlen) {
        snprintf(err, esz, "\"%.*s\": bad host", (int)len, s);
        return -1;
    }
    for (i = 0; i < plen; i++) {
        unsigned char ch = (unsigned char)slash[i];

        if (ch <= ' ' || ch >= 0x7f || ch == '?' || ch == '#' ||
            (ch == '*' && i != plen - 1)) {
            snprintf(err, esz, "\"%.*s\": bad path (a '*' may only end it)", (int)len, s);
            return -1;
        }
    }
    if (plen >= sizeof(r->path)) {
        snprintf(err, esz, "\"%.*s\": path too long (at most %d characters)", (int)len, s,
                 CG_ROUTE_PATH_MAX - 1);
        return -1;
    }
    if (nlen == 0 || nlen >= sizeof(r->upstream_name) || strspn(name, NAME_CHARS) < nlen) {
        snprintf(err, esz, "\"%.*s\": bad upstream name", (int)len, s);
        return -1;
    }
    for (i = 0; i < hlen; i++)
        r->host[i] = (s[i] >= 'A' && s[i] <= 'Z') ? (char)(s[i] + 32) : s[i];
    r->prefix = slash[plen - 1] == '*';
    memcpy(r->path, slash, plen - (size_t)r->prefix);
    memcpy(r->upstream_name, name, nlen);
    return 0;
}

int cg_routes_parse(const char *spec, struct cg_route **out, size_t *n, char *err,
                    size_t errsize)
{
    struct cg_route *routes = NULL, *tmp;
    size_t count = 0, cap = 0, len;
    const char *s = spec;

    for (;;) {
        s += strspn(s, " \t,");
        if (!*s)
            break;
        len = strcspn(s, " \t,");
        if (count == cap) {
            cap = cap ? cap * 2 : 4;
            tmp = realloc(routes, cap * sizeof(*routes));
            if (!tmp) {
                free(routes);
                snprintf(err, errsize, "out of memory");
                return -ENOMEM;
            }
            routes = tmp;
        }
        if (parse_item(s, len, &routes[count], err, errsize) < 0) {
            free(routes);
            return -EINVAL;
        }
        count++;
        s += len;
    }
    *out = routes;
    *n = count;
    return 0;
}

void cg_routes_free(struct cg_route *routes)
{
    free(routes);
}

/* Length of host <h> (<len> bytes) without its ":port"; IPv6 literals keep brackets. */
static size_t host_len(const char *h, size_t len)
{
    const char *p = h, *colon;

    if (len && h[0] == '[') {
        p = memchr(h, ']', len);
        if (!p)
            return len;
    }
    colon = memchr(p, ':', len - (size_t)(p - h));
    return colon ? (size_t)(colon - h) : len;
}

/* 1 when the route host <rh> names the request host <h> (<hlen> bytes, maybe ":port"):
 * the port counts only when the route names one. */
static int host_matches(const char *rh, const char *h, size_t hlen)
{
    size_t rlen = strlen(rh);

    if (host_len(rh, rlen) == rlen)
        hlen = host_len(h, hlen);
    return rlen == hlen && strncasecmp(rh, h, hlen) == 0;
}

/* Best route among those with (<with_host> = 1) or without a host. */
static const struct cg_route *best(const struct cg_route *routes, size_t n, int with_host,
                                   const char *host, size_t hostlen,
                                   const char *path, size_t pathlen)
{
    const struct cg_route *found = NULL;
    size_t i, plen, found_len = 0;

    for (i = 0; i < n; i++) {
        const struct cg_route *r = &routes[i];

        if ((r->host[0] != '\0') != with_host)
            continue;
        if (with_host && (!host || !host_matches(r->host, host, hostlen)))
            continue;
        plen = strlen(r->path);
        if (!r->prefix) {
            if (plen == pathlen && memcmp(r->path, path, plen) == 0)
                return r;           /* exact beats any prefix */
            continue;
        }
        if (plen <= pathlen && memcmp(r->path, path, plen) == 0 &&
            (!found || plen > found_len)) {
            found = r;
            found_len = plen;
        }
    }
    return found;
}

const struct cg_route *cg_route_match(const struct cg_route *routes, size_t n,
                                      const char *host, size_t hostlen,
                                      const char *path, size_t pathlen)
{
    const struct cg_route *r = NULL;

    if (host && hostlen)
        r = best(routes, n, 1, host, hostlen, path, pathlen);
    if (!r)
        r = best(routes, n, 0, NULL, 0, path, pathlen);
    return r;
}
