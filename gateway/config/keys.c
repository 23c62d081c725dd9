/* gateway/config/keys.c — the key tables, one per section kind ([gateway], [listener],
 * [upstream], [admission], [breaker], [bpf]), and the setters of the keys that need code of
 * their own (addresses, server lists, routes, source ranges, users and groups...). Adding a
 * key is adding a row here; its default lives in the row and nowhere else. */
#include "config/config.h"
#include "config/config-int.h"
#include "config/route.h"
#include "base/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <ini.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------ custom setters */

static int set_workers(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_gateway_conf *gw = obj;
    char buf[SHOW_MAX + 4];
    const char *end;
    uint64_t v;
    long n;
    int err;

    if (strcmp(value, "auto") == 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        gw->workers = n < 1 ? 1 : n > WORKERS_MAX ? WORKERS_MAX : (unsigned int)n;
        gw->workers_auto = 1;
        return 0;
    }
    err = cg_parse_u64_prefix(value, &v, &end);
    if (err == -EINVAL || *end) {
        cg_conf__key_error(c, "\"%s\" is not a number (expected auto or 1..%d)",
                  cg_conf__show(value, buf, sizeof(buf)), WORKERS_MAX);
        return -1;
    }
    if (err || v < 1 || v > WORKERS_MAX) {
        cg_conf__key_error(c, "\"%s\" is out of range (expected auto or 1..%d)",
                  cg_conf__show(value, buf, sizeof(buf)), WORKERS_MAX);
        return -1;
    }
    gw->workers = (unsigned int)v;
    gw->workers_auto = 0;
    return 0;
}

static const char *const log_level_choices[] = {
    "error", "warn", "notice", "info", "debug", NULL,
};

static int set_log_level(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_gateway_conf *gw = obj;
    int lvl = cg_log_level_parse(value);

    if (lvl < 0) {
        cg_conf__choice_error(c, value, log_level_choices);
        return -1;
    }
    gw->log_level = (enum cg_log_level)lvl;
    return 0;
}

/* Reports a host:port that cg_conf__parse_hostport() refused with <why>. */
static void hostport_error(const struct keyctx *c, const char *value, enum hp_error why,
                           int bind)
{
    char buf[SHOW_MAX + 4];

    cg_conf__show(value, buf, sizeof(buf));
    if (why == HP_HOST)
        cg_conf__key_error(c, "\"%s\" is not host:port (host must be an IPv4 address, [IPv6 address]%s"
                  " or localhost)", buf, bind ? ", *" : "");
    else if (why == HP_PORT)
        cg_conf__key_error(c, "\"%s\" is not host:port (port must be %d..65535)", buf, bind ? 0 : 1);
    else
        cg_conf__key_error(c, "\"%s\" is not host:port", buf);
}

static int set_bind(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_listener_conf *l = obj;
    enum hp_error why;

    why = cg_conf__parse_hostport(value, 1, &l->addr, &l->addrlen);
    if (why != HP_OK || strlen(value) >= sizeof(l->bind)) {
        hostport_error(c, value, why == HP_OK ? HP_FORMAT : why, 1);
        return -1;
    }
    strcpy(l->bind, value);
    return 0;
}

static int set_upstream_ref(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_listener_conf *l = obj;
    char buf[SHOW_MAX + 4];

    if (!cg_conf__is_valid_name(value)) {
        cg_conf__key_error(c, "\"%s\" is not an upstream name (expected [A-Za-z0-9_.-], at most %d"
                  " characters)", cg_conf__show(value, buf, sizeof(buf)), CG_CONF_NAME_MAX - 1);
        return -1;
    }
    strcpy(l->upstream_name, value);
    return 0;
}

/* servers = host:port [weight=N], host:port ... (whitespace and commas separate). */
/* The next item of a list value (blanks or commas between) into <tok> (at least
 * CONF_MAX_LINE + 1 bytes), advancing *<s>. Returns its length; 0 at the end. */
static size_t next_list_item(const char **s, char *tok)
{
    size_t n;

    *s += strspn(*s, " \t,");
    n = strcspn(*s, " \t,");
    memcpy(tok, *s, n);
    tok[n] = '\0';
    *s += n;
    return n;
}

/* Room for item <n> in the array *<arr> of <size>-byte items, *<cap> of them allocated:
 * doubles it when full. Returns 0, or -1 out of memory (noted; *<arr> freed). */
static int list_grow(const struct keyctx *c, void **arr, size_t *cap, size_t n, size_t size)
{
    void *tmp;

    if (n < *cap)
        return 0;
    *cap = *cap ? *cap * 2 : 4;
    tmp = realloc(*arr, *cap * size);
    if (!tmp) {
        c->p->nomem = 1;
        free(*arr);
        *arr = NULL;
        return -1;
    }
    *arr = tmp;
    return 0;
}

static int set_servers(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_upstream_conf *up = obj;
    struct cg_server_conf *servers = NULL, *last = NULL;
    size_t n = 0, cap = 0, tlen, i;
    char tok[CONF_MAX_LINE + 1], buf[SHOW_MAX + 4];
    int weighted = 0, bad = 0, skip_weight = 0;
    const char *s = value, *end;
    enum hp_error why;
    uint64_t w;
    int err;

    while ((tlen = next_list_item(&s, tok)) > 0) {
        if (strncmp(tok, "send_proxy=", 11) == 0) {
            /* A server's own PROXY protocol version, over the upstream's send_proxy. */
            if (skip_weight)
                continue;
            if (!last) {
                cg_conf__key_error(c, "\"%s\" follows no server", cg_conf__show(tok, buf, sizeof(buf)));
                bad = 1;
            } else if (strcmp(tok + 11, "off") == 0) {
                last->send_proxy = 0;
            } else if (strcmp(tok + 11, "v1") == 0) {
                last->send_proxy = 1;
            } else if (strcmp(tok + 11, "v2") == 0) {
                last->send_proxy = 2;
            } else {
                cg_conf__key_error(c, "send_proxy \"%s\" of %s is not off, v1 or v2",
                          cg_conf__show(tok + 11, buf, sizeof(buf)), last->name);
                bad = 1;
            }
            continue;
        }
        if (strncmp(tok, "weight=", 7) == 0) {
            if (skip_weight)            /* its server was already reported */
                continue;
            if (!last) {
                cg_conf__key_error(c, "\"%s\" follows no server", cg_conf__show(tok, buf, sizeof(buf)));
                bad = 1;
                continue;
            }
            if (weighted) {
                cg_conf__key_error(c, "\"%s\": %s already has a weight", cg_conf__show(tok, buf, sizeof(buf)),
                          last->name);
                bad = 1;
                continue;
            }
            weighted = 1;
            err = cg_parse_u64_prefix(tok + 7, &w, &end);
            if (err == -EINVAL || *end) {
                cg_conf__key_error(c, "weight \"%s\" is not a number (expected 1..256)",
                          cg_conf__show(tok + 7, buf, sizeof(buf)));
                bad = 1;
            } else if (err || w < 1 || w > 256) {
                cg_conf__key_error(c, "weight \"%s\" is out of range (expected 1..256)",
                          cg_conf__show(tok + 7, buf, sizeof(buf)));
                bad = 1;
            } else {
                last->weight = (unsigned int)w;
            }
            continue;
        }

        last = NULL;
        weighted = 0;
        skip_weight = 1;
        if (list_grow(c, (void **)&servers, &cap, n, sizeof(*servers)) < 0)
            return -1;
        memset(&servers[n], 0, sizeof(servers[n]));
        why = cg_conf__parse_hostport(tok, 0, &servers[n].addr, &servers[n].addrlen);
        if (why != HP_OK || tlen >= sizeof(servers[n].name)) {
            hostport_error(c, tok, why == HP_OK ? HP_FORMAT : why, 0);
            bad = 1;
            continue;
        }
        for (i = 0; i < n; i++)
            if (cg_conf__same_addr(&servers[i].addr, &servers[n].addr))
                break;
        if (i < n) {
            cg_conf__key_error(c, "\"%s\" is listed twice", cg_conf__show(tok, buf, sizeof(buf)));
            bad = 1;
            continue;
        }
        memcpy(servers[n].name, tok, tlen + 1);
        servers[n].weight = 1;
        servers[n].send_proxy = -1;
        skip_weight = 0;
        last = &servers[n++];
    }
    if (n == 0 && !bad) {
        cg_conf__key_error(c, "no servers listed (expected host:port [weight=N], ...)");
        bad = 1;
    }
    if (bad) {
        free(servers);
        return -1;
    }
    free(up->servers);
    up->servers = servers;
    up->nservers = n;
    return 0;
}

/* An address-block list (base/cidr.h) into the array at <list> and its count at <n>. */
static int set_cidr_list(const struct keyctx *c, struct cg_cidr **list, size_t *n,
                         const char *value)
{
    char bad[64], buf[SHOW_MAX + 4];
    int err = cg_cidr_list_parse(value, list, n, bad, sizeof(bad));

    if (err == -ENOMEM) {
        c->p->nomem = 1;
        return -1;
    }
    if (err < 0) {
        cg_conf__key_error(c, "\"%s\" is not an address or a CIDR block%s",
                           cg_conf__show(bad, buf, sizeof(buf)),
                           err == -ERANGE ? " (prefix out of range)" : "");
        return -1;
    }
    return 0;
}

static int set_proxy_from(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_listener_conf *l = obj;

    free(l->proxy_from);
    l->proxy_from = NULL;
    return set_cidr_list(c, &l->proxy_from, &l->nproxy_from, value);
}

static int set_trusted_proxies(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_listener_conf *l = obj;

    free(l->trusted_proxies);
    l->trusted_proxies = NULL;
    return set_cidr_list(c, &l->trusted_proxies, &l->ntrusted_proxies, value);
}

/* One address of a source list: IPv4, or IPv6 bare or in brackets. Returns its family,
 * or 0 when <tok> is neither. */
static int parse_source_addr(const char *tok, unsigned char out[16])
{
    char buf[INET6_ADDRSTRLEN + 2];
    size_t n = strlen(tok);

    memset(out, 0, 16);
    if (inet_pton(AF_INET, tok, out) == 1)
        return AF_INET;
    if (n >= 2 && tok[0] == '[' && tok[n - 1] == ']' && n - 2 < sizeof(buf)) {
        memcpy(buf, tok + 1, n - 2);
        buf[n - 2] = '\0';
        tok = buf;
    }
    return inet_pton(AF_INET6, tok, out) == 1 ? AF_INET6 : 0;
}

/* The number of addresses from <a> to <b> (network order, <len> bytes), or 0 when <b> is
 * below <a> or they are more than CG_SOURCE_MAX apart. */
static uint32_t source_span(const unsigned char *a, const unsigned char *b, size_t len)
{
    uint64_t d = 0;
    size_t i;
    int borrow = 0;
    unsigned char diff[16];

    for (i = len; i-- > 0;) {           /* diff = b - a, big-endian */
        int v = b[i] - a[i] - borrow;

        borrow = v < 0;
        diff[i] = (unsigned char)(v + (borrow ? 256 : 0));
    }
    if (borrow)
        return 0;
    for (i = 0; i < len; i++) {
        if (d > (CG_SOURCE_MAX >> 8))
            return 0;
        d = d << 8 | diff[i];
    }
    return d < CG_SOURCE_MAX ? (uint32_t)d + 1 : 0;
}

/* Whether this host can bind <family> address <addr>: a source it does not own fails
 * every connect (EADDRNOTAVAIL); better said at load time. Other errors (no descriptor
 * left, no IPv6 at all) are left to the connects to report. */
static int source_bindable(int family, const unsigned char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, one = 1, r;

    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, addr, 4);
        len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, addr, 16);
        len = sizeof(*sin6);
    }
    fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return 1;
    (void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    r = bind(fd, (struct sockaddr *)&ss, len) < 0 && errno == EADDRNOTAVAIL ? 0 : 1;
    close(fd);
    return r;
}

/* hash_key = source | path | header:NAME | cookie:NAME | query:NAME (balance = hash). A
 * header name is kept lowercase (headers compare without case, cookies and query
 * parameters with). */
static int set_hash_key(const struct keyctx *c, void *obj, const char *value)
{
    static const char tchar[] = "!#$%&'*+-.^_`|~0123456789"
                                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    static const struct {
        const char      *prefix;
        enum cg_hash_key key;
    } named[] = {
        { "header:", CG_HASH_HEADER }, { "cookie:", CG_HASH_COOKIE },
        { "query:", CG_HASH_QUERY },
    };
    struct cg_upstream_conf *up = obj;
    char buf[SHOW_MAX + 4];
    const char *name;
    size_t i, n;

    up->hash_key_name[0] = '\0';
    if (strcmp(value, "source") == 0 || strcmp(value, "path") == 0) {
        up->hash_key = value[0] == 's' ? CG_HASH_SOURCE : CG_HASH_PATH;
        return 0;
    }
    for (i = 0; i < sizeof(named) / sizeof(named[0]); i++)
        if (strncmp(value, named[i].prefix, strlen(named[i].prefix)) == 0)
            break;
    if (i == sizeof(named) / sizeof(named[0])) {
        cg_conf__key_error(c, "\"%s\" is not one of: source, header:NAME, cookie:NAME, "
                           "query:NAME, path", cg_conf__show(value, buf, sizeof(buf)));
        return -1;
    }
    name = value + strlen(named[i].prefix);
    n = strlen(name);
    /* A query parameter's name is whatever stands before its '=' (not decoded); headers
     * and cookies are tokens (RFC 9110 section 5.6.2, RFC 6265 section 4.1.1). */
    if (n == 0 || n >= CG_CONF_NAME_MAX ||
        (named[i].key == CG_HASH_QUERY ? strcspn(name, "&=# \t") : strspn(name, tchar)) != n) {
        cg_conf__key_error(c, "\"%s\": expected a %s name of 1 to %d characters%s",
                           cg_conf__show(value, buf, sizeof(buf)), named[i].prefix,
                           CG_CONF_NAME_MAX - 1, named[i].key == CG_HASH_QUERY ?
                           " without &, =, # or blanks" : " (an HTTP token)");
        return -1;
    }
    up->hash_key = named[i].key;
    for (i = 0; i <= n; i++)
        up->hash_key_name[i] = up->hash_key == CG_HASH_HEADER && name[i] >= 'A' &&
                               name[i] <= 'Z' ? (char)(name[i] + 32) : name[i];
    return 0;
}

/* source = ADDR[-ADDR] ... (IPv4 or IPv6, blanks or commas between); empty: none, the
 * kernel picks (the default). */
static int set_source(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_upstream_conf *up = obj;
    struct cg_source_range *v = NULL, *r;
    size_t n = 0, cap = 0, alen;
    uint64_t total4 = 0, total6 = 0;
    char tok[CONF_MAX_LINE + 1], buf[SHOW_MAX + 4], *dash;
    unsigned char last[16];
    const char *s = value;
    int fam, fam2, bad = 0;

    while (next_list_item(&s, tok) > 0) {
        if (list_grow(c, (void **)&v, &cap, n, sizeof(*v)) < 0)
            return -1;
        r = &v[n];
        dash = strchr(tok, '-');
        if (dash)
            *dash = '\0';
        fam = parse_source_addr(tok, r->first);
        fam2 = dash ? parse_source_addr(dash + 1, last) : fam;
        if (dash)
            *dash = '-';
        if (!fam || !fam2) {
            cg_conf__key_error(c, "\"%s\" is not an address or range (expected 10.0.0.2, "
                      "10.0.0.2-10.0.0.250 or an IPv6 address)", cg_conf__show(tok, buf, sizeof(buf)));
            bad = 1;
            continue;
        }
        if (fam != fam2) {
            cg_conf__key_error(c, "\"%s\": a range cannot mix IPv4 and IPv6",
                      cg_conf__show(tok, buf, sizeof(buf)));
            bad = 1;
            continue;
        }
        alen = fam == AF_INET ? 4 : 16;
        r->family = (sa_family_t)fam;
        r->count = dash ? source_span(r->first, last, alen) : 1;
        if (!dash)
            memcpy(last, r->first, alen);
        if (r->count == 0) {
            cg_conf__key_error(c, "\"%s\": the range is reversed or longer than %u addresses",
                      cg_conf__show(tok, buf, sizeof(buf)), CG_SOURCE_MAX);
            bad = 1;
            continue;
        }
        if (!memcmp(r->first, (const unsigned char[16]){ 0 }, alen)) {
            cg_conf__key_error(c, "\"%s\": the unspecified address is not a source (leave source "
                      "out to let the kernel pick)", cg_conf__show(tok, buf, sizeof(buf)));
            bad = 1;
            continue;
        }
        if (!source_bindable(fam, r->first) || !source_bindable(fam, last)) {
            cg_conf__key_error(c, "\"%s\": %s", cg_conf__show(tok, buf, sizeof(buf)), strerror(EADDRNOTAVAIL));
            bad = 1;
            continue;
        }
        *(fam == AF_INET ? &total4 : &total6) += r->count;
        n++;
    }
    if (!bad && (total4 > CG_SOURCE_MAX || total6 > CG_SOURCE_MAX)) {
        cg_conf__key_error(c, "more than %u addresses", CG_SOURCE_MAX);
        bad = 1;
    }
    if (bad) {
        free(v);
        return -1;
    }
    free(up->sources);
    up->sources = n ? v : NULL;
    up->nsources = n;
    if (!n)
        free(v);
    up->nsource4 = (uint32_t)total4;
    up->nsource6 = (uint32_t)total6;
    return 0;
}

static int set_routes(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_listener_conf *l = obj;
    struct cg_route *routes = NULL;
    char msg[256];
    size_t n = 0;
    int err;

    err = cg_routes_parse(value, &routes, &n, msg, sizeof(msg));
    if (err == -ENOMEM) {
        c->p->nomem = 1;
        return -1;
    }
    if (err < 0) {
        cg_conf__key_error(c, "%s", msg);
        return -1;
    }
    cg_routes_free(l->routes);
    l->routes = routes;
    l->nroutes = n;
    return 0;
}

/* allowed_origins = * | ORIGIN ... (scheme://host[:port], blanks or commas between). */
static int set_origins(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_listener_conf *l = obj;
    const char *s = value;
    char *copy;
    size_t n, i;

    for (;;) {
        s += strspn(s, " \t,");
        if (!*s)
            break;
        n = strcspn(s, " \t,");
        if (!(n == 1 && *s == '*') && !memmem(s, n, "://", 3)) {
            cg_conf__key_error(c, "\"%.*s\" is not an origin (expected scheme://host[:port] or *)",
                      (int)(n < SHOW_MAX ? n : SHOW_MAX), s);
            return -1;
        }
        s += n;
    }
    if (strspn(value, " \t,") == strlen(value)) {
        cg_conf__key_error(c, "empty value (use * to allow any origin)");
        return -1;
    }
    free(l->allowed_origins);
    l->allowed_origins = NULL;
    if (strcmp(value, "*") == 0)
        return 0;
    copy = strdup(value);
    if (!copy) {
        c->p->nomem = 1;
        return -1;
    }
    for (i = 0; copy[i]; i++)
        if (copy[i] >= 'A' && copy[i] <= 'Z')
            copy[i] = (char)(copy[i] + 32);
    l->allowed_origins = copy;
    return 0;
}

/* health_path = /PATH | off */
static int set_health_path(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_listener_conf *l = obj;
    char buf[SHOW_MAX + 4];
    size_t n = strlen(value);

    if (strcmp(value, "off") == 0) {
        l->health_path[0] = '\0';
        return 0;
    }
    if (value[0] != '/' || strpbrk(value, "?# \t")) {
        cg_conf__key_error(c, "\"%s\" is not a path (expected /PATH or off)", cg_conf__show(value, buf, sizeof(buf)));
        return -1;
    }
    if (n >= sizeof(l->health_path)) {
        cg_conf__key_error(c, "\"%s\" is too long (at most %zu characters)", cg_conf__show(value, buf, sizeof(buf)),
                  sizeof(l->health_path) - 1);
        return -1;
    }
    memcpy(l->health_path, value, n + 1);
    return 0;
}

/* stats_socket_mode = octal permission bits (0660). */
static int set_sock_mode(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_gateway_conf *gw = obj;
    char buf[SHOW_MAX + 4];
    size_t n = strspn(value, "01234567");
    unsigned long v;

    if (n == 0 || value[n] != '\0' || n > 4 || (v = strtoul(value, NULL, 8)) > 0777) {
        cg_conf__key_error(c, "\"%s\" is not a permission mode (expected octal 0..0777, e.g. 0660)",
                  cg_conf__show(value, buf, sizeof(buf)));
        return -1;
    }
    gw->stats_socket_mode = (unsigned int)v;
    return 0;
}

/* Resolves a user (<group> 0) or group name, or a number, into *<id>; "" = unchanged. */
static int resolve_id(const struct keyctx *c, const char *value, int group, unsigned int *id)
{
    char buf[SHOW_MAX + 4], pwbuf[4096];
    const char *end;
    uint64_t v;

    if (!*value) {
        *id = (unsigned int)-1;
        return 0;
    }
    if (cg_parse_u64_prefix(value, &v, &end) == 0 && !*end && v < UINT_MAX) {
        *id = (unsigned int)v;
        return 0;
    }
    if (group) {
        struct group gr, *res = NULL;

        if (getgrnam_r(value, &gr, pwbuf, sizeof(pwbuf), &res) == 0 && res) {
            *id = (unsigned int)res->gr_gid;
            return 0;
        }
    } else {
        struct passwd pw, *res = NULL;

        if (getpwnam_r(value, &pw, pwbuf, sizeof(pwbuf), &res) == 0 && res) {
            *id = (unsigned int)res->pw_uid;
            return 0;
        }
    }
    cg_conf__key_error(c, "unknown %s \"%s\"", group ? "group" : "user", cg_conf__show(value, buf, sizeof(buf)));
    return -1;
}

static int set_sock_owner(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_gateway_conf *gw = obj;
    unsigned int id;

    if (resolve_id(c, value, 0, &id) < 0)
        return -1;
    gw->stats_socket_uid = (uid_t)id;
    return 0;
}

static int set_sock_group(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_gateway_conf *gw = obj;
    unsigned int id;

    if (resolve_id(c, value, 1, &id) < 0)
        return -1;
    gw->stats_socket_gid = (gid_t)id;
    return 0;
}

/* metrics_listen = host:port | "" (off). */
static int set_metrics_listen(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_gateway_conf *gw = obj;
    enum hp_error why;

    if (!*value || strcmp(value, "off") == 0) {
        gw->metrics_listen[0] = '\0';
        return 0;
    }
    why = cg_conf__parse_hostport(value, 1, &gw->metrics_addr, &gw->metrics_addrlen);
    if (why != HP_OK || strlen(value) >= sizeof(gw->metrics_listen)) {
        hostport_error(c, value, why == HP_OK ? HP_FORMAT : why, 1);
        return -1;
    }
    strcpy(gw->metrics_listen, value);
    return 0;
}

/* A percentage: "90" or "90%", within the key's min..max. */
static int set_percent(const struct keyctx *c, void *obj, unsigned int *field,
                       uint64_t min, uint64_t max, const char *value)
{
    char buf[SHOW_MAX + 4];
    const char *end;
    uint64_t v;
    int err;

    err = cg_parse_u64_prefix(value, &v, &end);
    if (err == -EINVAL || (*end && strcmp(end, "%") != 0)) {
        cg_conf__key_error(c, "\"%s\" is not a percentage (expected %llu..%llu, e.g. 90%%)",
                  cg_conf__show(value, buf, sizeof(buf)), (unsigned long long)min,
                  (unsigned long long)max);
        return -1;
    }
    if (err || v < min || v > max) {
        cg_conf__key_error(c, "\"%s\" is out of range (expected %llu..%llu%%)",
                  cg_conf__show(value, buf, sizeof(buf)), (unsigned long long)min,
                  (unsigned long long)max);
        return -1;
    }
    *field = (unsigned int)v;
    return 0;
}

static int set_resume(const struct keyctx *c, void *obj, const char *value)
{
    return set_percent(c, obj, &((struct cg_breaker_conf *)obj)->resume, 1, 99, value);
}

static int set_fd_watermark(const struct keyctx *c, void *obj, const char *value)
{
    return set_percent(c, obj, &((struct cg_breaker_conf *)obj)->fd_watermark, 0, 100, value);
}

static int set_error_rate(const struct keyctx *c, void *obj, const char *value)
{
    return set_percent(c, obj, &((struct cg_srv_breaker_conf *)obj)->eject_error_rate, 0, 100,
                       value);
}

/* memory_watermark = auto | off | SIZE (0 = off). */
static int set_memory_watermark(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_breaker_conf *b = obj;
    char buf[SHOW_MAX + 4];
    uint64_t v = 0;
    int err;

    if (strcmp(value, "auto") == 0 || strcmp(value, "off") == 0) {
        b->memory_auto = value[0] == 'a';
        b->memory_watermark = 0;
        return 0;
    }
    err = cg_parse_size(value, &v);
    if (err == -EINVAL) {
        cg_conf__key_error(c, "\"%s\" is not a size, auto or off (e.g. 4g)",
                  cg_conf__show(value, buf, sizeof(buf)));
        return -1;
    }
    if (err || (v && v < (1ull << 20)) || v > (1ull << 50)) {
        cg_conf__key_error(c, "\"%s\" is out of range (expected 1m..1048576g, or 0 = off)",
                  cg_conf__show(value, buf, sizeof(buf)));
        return -1;
    }
    b->memory_auto = 0;
    b->memory_watermark = v;
    return 0;
}

/* ------------------------------------------------------------------ key tables */

#define GW(f)  offsetof(struct cg_gateway_conf, f)
/* ------------------------------------------------------------------ tls */

/* The listener's or the upstream's tls block (the same keys, one struct). */
static struct cg_tls_conf *tls_of(const struct keyctx *c, void *obj)
{
    return strncmp(c->label, "listener", 8) == 0 ? &((struct cg_listener_conf *)obj)->tls
                                                 : &((struct cg_upstream_conf *)obj)->tls;
}

/* Keeps <value> (NULL when empty) in <*field>; records the key's line. */
static int tls_string(const struct keyctx *c, void *obj, char **field, enum cg_tls_line which,
                      const char *value)
{
    struct cg_tls_conf *t = tls_of(c, obj);
    char *copy = NULL;

    if (*value && !(copy = strdup(value))) {
        c->p->nomem = 1;
        return -1;
    }
    free(*field);
    *field = copy;
    t->line[which] = *value ? c->line : 0;
    return 0;
}

/* tls, tls_verify (upstream), tls_tickets (listener): on or off. */
static int set_tls_bool(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_tls_conf *t = tls_of(c, obj);
    int *field = strcmp(c->key, "tls") == 0        ? &t->on
               : strcmp(c->key, "tls_verify") == 0 ? &t->verify
                                                    : &t->tickets;

    if (cg_parse_bool(value, field) < 0) {
        cg_conf__key_error(c, "\"%s\" is not on or off", value);
        return -1;
    }
    if (field == &t->on)
        t->line[CG_TLS_L_ON] = c->line;
    return 0;
}

/* tls_certificate = FILE ... (blanks or commas between): PEM files, each a chain and its
 * key (or the key in tls_key); on a listener the first is the default and the others are
 * chosen by SNI. Checked for existence here; their contents by core/tls.c. */
static int set_tls_certs(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_tls_conf *t = tls_of(c, obj);
    char **certs = NULL, **grown;
    const char *s = value;
    size_t n = 0, len, i;

    for (;;) {
        s += strspn(s, " \t,");
        if (!*s)
            break;
        len = strcspn(s, " \t,");
        grown = realloc(certs, (n + 1) * sizeof(*certs));
        if (!grown || !(grown[n] = strndup(s, len))) {
            certs = grown ? grown : certs;
            goto nomem;
        }
        certs = grown;
        n++;
        s += len;
    }
    for (i = 0; i < t->ncerts; i++)
        free(t->certs[i]);
    free(t->certs);
    t->certs = certs;
    t->ncerts = n;
    t->line[CG_TLS_L_CERT] = n ? c->line : 0;
    return 0;
nomem:
    for (i = 0; i < n; i++)
        free(certs[i]);
    free(certs);
    c->p->nomem = 1;
    return -1;
}

/* The tls keys that keep a string (a file, a list in OpenSSL's syntax, a name), by key
 * name: where it goes, and which line an error about it names. */
static const struct {
    const char       *key;
    size_t            off;
    enum cg_tls_line  line;
} tls_strings[] = {
    { "tls_key",          offsetof(struct cg_tls_conf, key),          CG_TLS_L_KEY },
    { "tls_ca",           offsetof(struct cg_tls_conf, ca),           CG_TLS_L_CA },
    { "tls_client_ca",    offsetof(struct cg_tls_conf, ca),           CG_TLS_L_CA },
    { "tls_ticket_keys",  offsetof(struct cg_tls_conf, ticket_keys),  CG_TLS_L_TICKETS },
    { "tls_ciphers",      offsetof(struct cg_tls_conf, ciphers),      CG_TLS_L_CIPHERS },
    { "tls_ciphersuites", offsetof(struct cg_tls_conf, ciphersuites), CG_TLS_L_SUITES },
    { "tls_groups",       offsetof(struct cg_tls_conf, groups),       CG_TLS_L_GROUPS },
    { "tls_alpn",         offsetof(struct cg_tls_conf, alpn),         CG_TLS_L_ALPN },
    { "tls_sni",          offsetof(struct cg_tls_conf, sni),          CG_TLS_L_SNI },
};

static int set_tls_str(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_tls_conf *t = tls_of(c, obj);
    size_t i;

    for (i = 0; i < sizeof(tls_strings) / sizeof(tls_strings[0]); i++)
        if (strcmp(tls_strings[i].key, c->key) == 0)
            return tls_string(c, obj, (char **)((char *)t + tls_strings[i].off),
                              tls_strings[i].line, value);
    return -1;
}

/* tls_alpn = PROTO ... : offered order is the client's, chosen is the first of ours the
 * client offers. Each 1..255 printable bytes (RFC 7301 §3.1). */
static int set_tls_alpn(const struct keyctx *c, void *obj, const char *value)
{
    char buf[SHOW_MAX + 4];
    const char *s = value;
    size_t len;

    for (;;) {
        s += strspn(s, " \t,");
        if (!*s)
            break;
        len = strcspn(s, " \t,");
        if (len > 255) {
            cg_conf__key_error(c, "\"%s\" is longer than 255 bytes",
                               cg_conf__show(s, buf, sizeof(buf)));
            return -1;
        }
        s += len;
    }
    return set_tls_str(c, obj, value);
}

static const char *const tls_protocol_choices[] = { "1.2", "1.3", NULL };

/* tls_protocols = 1.2 1.3 (any of them, blanks or commas between). */
static int set_tls_protocols(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_tls_conf *t = tls_of(c, obj);
    char word[8];
    const char *s = value;
    unsigned int bits = 0;
    size_t len;

    for (;;) {
        s += strspn(s, " \t,");
        if (!*s)
            break;
        len = strcspn(s, " \t,");
        snprintf(word, sizeof(word), "%.*s", (int)(len < 7 ? len : 7), s);
        if (len == 3 && strcmp(word, "1.2") == 0) {
            bits |= CG_TLS_V12;
        } else if (len == 3 && strcmp(word, "1.3") == 0) {
            bits |= CG_TLS_V13;
        } else {
            cg_conf__choice_error(c, word, tls_protocol_choices);
            return -1;
        }
        s += len;
    }
    if (!bits) {
        cg_conf__key_error(c, "empty value (expected 1.2, 1.3 or both)");
        return -1;
    }
    t->protocols = bits;
    return 0;
}

static const char *const tls_verify_client_choices[] = { "off", "optional", "required", NULL };

static int set_tls_verify_client(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_tls_conf *t = tls_of(c, obj);
    int i;

    for (i = 0; tls_verify_client_choices[i]; i++)
        if (strcmp(value, tls_verify_client_choices[i]) == 0) {
            t->verify = i;
            return 0;
        }
    cg_conf__choice_error(c, value, tls_verify_client_choices);
    return -1;
}

#define LS(f)  offsetof(struct cg_listener_conf, f)
#define UP(f)  offsetof(struct cg_upstream_conf, f)
#define AD(f)  offsetof(struct cg_admission_conf, f)
#define BR(f)  offsetof(struct cg_breaker_conf, f)
#define SEC    1000ull
#define MIN    (60 * SEC)
#define HOUR   (60 * MIN)

static const char *const mode_choices[] = { "tcp", "websocket", NULL };
static const char *const balance_choices[] = { "roundrobin", "leastconn", "random", "hash",
                                                NULL };
static const char *const uproto_choices[] = { "websocket", "tcp", NULL };
/* Indexes are the versions' bits (CG_PP_V1 | CG_PP_V2 in base/proxy-proto.h). */
static const char *const accept_proxy_choices[] = { "off", "v1", "v2", "any", NULL };
static const char *const send_proxy_choices[] = { "off", "v1", "v2", NULL };
static const char *const rate_action_choices[] = { "delay", "close", NULL };

static const char *const reject_choices[] = { "close", "rst", NULL };
/* In the order of enum cg_alog_sink and enum cg_alog_format. */
static const char *const alog_sink_choices[] = { "off", "stderr", "syslog", "journal", NULL };
static const char *const alog_format_choices[] = { "text", "json", NULL };

/* The connection log's keys of [gateway] (OFF = GW, INH = NULL) and of [listener]
 * (OFF = LS, inheriting [gateway]'s value when absent). */
#define ALOG_KEYS(OFF, INH)                                                                \
    { .name = "access_log", .type = KEY_ENUM, .offset = OFF(alog.sink), .def = "off",     \
      .choices = alog_sink_choices, .inherit = INH },                                      \
    { .name = "access_log_format", .type = KEY_ENUM, .offset = OFF(alog.format),          \
      .def = "text", .choices = alog_format_choices, .inherit = INH },                     \
    { .name = "access_log_sample", .type = KEY_UINT, .offset = OFF(alog.sample),          \
      .def = "1", .min = 1, .max = 1000000, .inherit = INH }

/* The admission keys a listener may set for itself: rows for [admission] (OFF = AL) and
 * for [listener] (OFF = LA, inheriting [admission]'s value when absent). */
#define AL(f)  offsetof(struct cg_admission_conf, lim.f)
#define LA(f)  offsetof(struct cg_listener_conf, adm.f)
#define ADM_LIMIT_KEYS(OFF, INH)                                                           \
    { .name = "connection_rate", .type = KEY_UINT, .offset = OFF(conn_rate), .def = "0",  \
      .min = 0, .max = 100000000, .inherit = INH },                                       \
    { .name = "connection_burst", .type = KEY_UINT, .offset = OFF(conn_burst), .def = "0",\
      .min = 0, .max = 100000000, .inherit = INH },                                       \
    { .name = "ip_connection_rate", .type = KEY_UINT, .offset = OFF(ip_conn_rate),        \
      .def = "0", .min = 0, .max = 100000000, .inherit = INH },                           \
    { .name = "ip_connection_burst", .type = KEY_UINT, .offset = OFF(ip_conn_burst),      \
      .def = "0", .min = 0, .max = 100000000, .inherit = INH },                           \
    { .name = "max_connections_per_ip", .type = KEY_UINT, .offset = OFF(max_conns_per_ip),\
      .def = "0", .min = 0, .max = UINT_MAX, .inherit = INH },                            \
    { .name = "reject", .type = KEY_ENUM, .offset = OFF(reject), .def = "close",          \
      .choices = reject_choices, .inherit = INH }

/* The per-server breaker keys an upstream may set for itself: [breaker] (BS) and
 * [upstream] (UB) rows. */
#define BS(f)  offsetof(struct cg_breaker_conf, srv.f)
#define UB(f)  offsetof(struct cg_upstream_conf, brk.f)
#define SRV_BREAKER_KEYS(OFF, INH, RATE)                                                   \
    { .name = "max_pending_connects_per_server", .type = KEY_UINT,                        \
      .offset = OFF(max_pending), .def = "0", .min = 0, .max = UINT_MAX, .inherit = INH },\
    { .name = "eject_consecutive_failures", .type = KEY_UINT,                             \
      .offset = OFF(eject_failures), .def = "5", .min = 0, .max = 1000000, .inherit = INH },\
    { .name = "eject_error_rate", .type = KEY_CUSTOM, .def = "0", .set = RATE,            \
      .inherit = INH, .offset = OFF(eject_error_rate) },                                  \
    { .name = "eject_window", .type = KEY_DURATION, .offset = OFF(eject_window_ms),       \
      .def = "10s", .min = 100, .max = HOUR, .inherit = INH },                            \
    { .name = "eject_min_connects", .type = KEY_UINT, .offset = OFF(eject_min_connects),  \
      .def = "20", .min = 1, .max = 1000000, .inherit = INH },                            \
    { .name = "eject_cooldown", .type = KEY_DURATION, .offset = OFF(eject_cooldown_ms),   \
      .def = "10s", .min = 10, .max = HOUR, .inherit = INH }

static int set_up_error_rate(const struct keyctx *c, void *obj, const char *value)
{
    return set_error_rate(c, &((struct cg_upstream_conf *)obj)->brk, value);
}

static int set_brk_error_rate(const struct keyctx *c, void *obj, const char *value)
{
    return set_error_rate(c, &((struct cg_breaker_conf *)obj)->srv, value);
}

static const struct key_desc admission_keys[] = {
    ADM_LIMIT_KEYS(AL, NULL),
    { .name = "ipv4_prefix", .type = KEY_UINT, .offset = AD(ipv4_prefix), .def = "32",
      .min = 1, .max = 32 },
    { .name = "ipv6_prefix", .type = KEY_UINT, .offset = AD(ipv6_prefix), .def = "64",
      .min = 1, .max = 128 },
    { .name = "ip_table_size", .type = KEY_UINT, .offset = AD(ip_table_size), .def = "65536",
      .min = 64, .max = 1u << 24 },
    { .name = "reject_timeout", .type = KEY_DURATION, .offset = AD(reject_timeout_ms),
      .def = "1s", .min = 1, .max = MIN },
    { .name = "max_rejecting", .type = KEY_UINT, .offset = AD(max_rejecting), .def = "1024",
      .min = 0, .max = 1000000 },
};

static const struct key_desc breaker_keys[] = {
    { .name = "max_connections_per_worker", .type = KEY_UINT,
      .offset = BR(max_conns_per_worker), .def = "0", .min = 0, .max = UINT_MAX },
    { .name = "memory_watermark", .type = KEY_CUSTOM, .def = "auto",
      .set = set_memory_watermark },
    { .name = "fd_watermark", .type = KEY_CUSTOM, .def = "0", .set = set_fd_watermark },
    { .name = "open_for", .type = KEY_DURATION, .offset = BR(open_for_ms), .def = "5s",
      .min = 1, .max = HOUR },
    { .name = "resume", .type = KEY_CUSTOM, .def = "90", .set = set_resume },
    { .name = "half_open_rate", .type = KEY_UINT, .offset = BR(half_open_rate), .def = "50",
      .min = 1, .max = 100000000 },
    { .name = "check_interval", .type = KEY_DURATION, .offset = BR(check_interval_ms),
      .def = "250ms", .min = 10, .max = MIN },
    { .name = "sched_latency_threshold", .type = KEY_DURATION,
      .offset = BR(sched_latency_ms), .def = "0", .min = 0, .max = MIN },
    { .name = "sched_latency_window", .type = KEY_DURATION, .offset = BR(sched_window_ms),
      .def = "10s", .min = 100, .max = 10 * MIN },
    SRV_BREAKER_KEYS(BS, NULL, set_brk_error_rate),
};

static const struct key_desc gateway_keys[] = {
    { .name = "workers", .type = KEY_CUSTOM, .def = "auto", .set = set_workers },
    { .name = "cpu_pinning", .type = KEY_BOOL, .offset = GW(cpu_pinning), .def = "on" },
    { .name = "max_connections", .type = KEY_UINT, .offset = GW(max_connections),
      .def = "1000000", .min = 0, .max = UINT_MAX },
    { .name = "log_level", .type = KEY_CUSTOM, .def = "info", .set = set_log_level },
    { .name = "stats_socket", .type = KEY_STRING, .offset = GW(stats_socket),
      .size = CG_CONF_SOCKPATH_MAX, .def = "/run/corogate/stats.sock" },
    { .name = "stats_socket_mode", .type = KEY_CUSTOM, .def = "0660", .set = set_sock_mode },
    { .name = "stats_socket_owner", .type = KEY_CUSTOM, .def = "", .set = set_sock_owner },
    { .name = "stats_socket_group", .type = KEY_CUSTOM, .def = "", .set = set_sock_group },
    { .name = "stats_timeout", .type = KEY_DURATION, .offset = GW(stats_timeout_ms),
      .def = "60s", .min = 100, .max = 24 * HOUR },
    { .name = "stats_max_clients", .type = KEY_UINT, .offset = GW(stats_max_clients),
      .def = "1024", .min = 1, .max = 65536 },
    { .name = "metrics_listen", .type = KEY_CUSTOM, .def = "", .set = set_metrics_listen },
    { .name = "drain_timeout", .type = KEY_DURATION, .offset = GW(drain_timeout_ms),
      .def = "30s", .min = 0, .max = 24 * HOUR },
    { .name = "drain_spread", .type = KEY_DURATION, .offset = GW(drain_spread_ms),
      .def = "0", .min = 0, .max = 24 * HOUR },
    { .name = "coro_stall_threshold", .type = KEY_DURATION,
      .offset = GW(coro_stall_threshold_ms), .def = "60s", .min = 0, .max = 24 * HOUR },
    { .name = "nofile", .type = KEY_SIZE, .offset = GW(nofile), .def = "1048576",
      .min = 64, .max = 1ull << 30 },
    ALOG_KEYS(GW, NULL),
    { .name = "access_log_queue", .type = KEY_UINT, .offset = GW(alog_queue),
      .def = "4096", .min = 1, .max = 1u << 20 },
    { .name = "access_log_syslog_socket", .type = KEY_STRING, .offset = GW(alog_syslog_path),
      .size = CG_CONF_SOCKPATH_MAX, .def = "/dev/log" },
    { .name = "access_log_journal_socket", .type = KEY_STRING,
      .offset = GW(alog_journal_path), .size = CG_CONF_SOCKPATH_MAX,
      .def = "/run/systemd/journal/socket" },
};

/* The tls keys a listener and an upstream share (their struct cg_tls_conf at <F>). */
#define TLS_KEYS(F)                                                                       \
    { .name = "tls", .type = KEY_CUSTOM, .def = "off", .set = set_tls_bool },            \
    { .name = "tls_certificate", .type = KEY_CUSTOM, .def = "", .set = set_tls_certs },  \
    { .name = "tls_key", .type = KEY_CUSTOM, .def = "", .set = set_tls_str },            \
    { .name = "tls_protocols", .type = KEY_CUSTOM, .def = "1.2 1.3",                     \
      .set = set_tls_protocols },                                                          \
    { .name = "tls_ciphers", .type = KEY_CUSTOM, .def = "", .set = set_tls_str },        \
    { .name = "tls_ciphersuites", .type = KEY_CUSTOM, .def = "", .set = set_tls_str },   \
    { .name = "tls_groups", .type = KEY_CUSTOM, .def = "", .set = set_tls_str },         \
    { .name = "tls_handshake_timeout", .type = KEY_DURATION,                              \
      .offset = F(tls.handshake_timeout_ms), .def = "10s", .min = 1, .max = 5 * MIN }

static int set_lifetime_jitter(const struct keyctx *c, void *obj, const char *value)
{
    return set_percent(c, obj, &((struct cg_listener_conf *)obj)->lifetime_jitter, 0, 100,
                       value);
}

static const char *const deflate_choices[] = { "passthrough", "strip", NULL };

static const struct key_desc listener_keys[] = {
    { .name = "bind", .type = KEY_CUSTOM, .def = NULL, .set = set_bind },
    { .name = "mode", .type = KEY_ENUM, .offset = LS(mode), .def = "tcp",
      .choices = mode_choices },
    { .name = "upstream", .type = KEY_CUSTOM, .def = NULL, .set = set_upstream_ref },
    { .name = "idle_timeout", .type = KEY_DURATION, .offset = LS(idle_timeout_ms),
      .def = "300s", .min = 0, .max = 7 * 24 * HOUR },
    { .name = "max_connection_lifetime", .type = KEY_DURATION, .offset = LS(max_lifetime_ms),
      .def = "0", .min = 0, .max = 365 * 24 * HOUR },
    { .name = "lifetime_jitter", .type = KEY_CUSTOM, .def = "10%", .set = set_lifetime_jitter },
    { .name = "backlog", .type = KEY_UINT, .offset = LS(backlog), .def = "511",
      .min = 1, .max = 65535 },
    /* mode = tcp */
    { .name = "half_close", .type = KEY_BOOL, .offset = LS(half_close), .def = "on" },
    /* mode = websocket */
    { .name = "upstream_protocol", .type = KEY_ENUM, .offset = LS(upstream_protocol),
      .def = "websocket", .choices = uproto_choices },
    { .name = "routes", .type = KEY_CUSTOM, .def = "", .set = set_routes },
    { .name = "allowed_origins", .type = KEY_CUSTOM, .def = "*", .set = set_origins },
    { .name = "health_path", .type = KEY_CUSTOM, .def = "/healthz", .set = set_health_path },
    { .name = "handshake_timeout", .type = KEY_DURATION, .offset = LS(handshake_timeout_ms),
      .def = "10s", .min = 1, .max = 5 * MIN },
    { .name = "max_header_size", .type = KEY_SIZE, .offset = LS(max_header_size),
      .def = "8k", .min = 256, .max = 1ull << 20 },
    { .name = "max_headers", .type = KEY_UINT, .offset = LS(max_headers), .def = "64",
      .min = 4, .max = 10000 },
    { .name = "max_request_line", .type = KEY_SIZE, .offset = LS(max_request_line),
      .def = "4k", .min = 16, .max = 1ull << 20 },
    { .name = "upstream_handshake_timeout", .type = KEY_DURATION,
      .offset = LS(upstream_handshake_timeout_ms), .def = "10s", .min = 1, .max = 5 * MIN },
    { .name = "max_message_size", .type = KEY_SIZE, .offset = LS(max_message_size),
      .def = "64m", .min = 125, .max = 1ull << 30 },
    { .name = "keepalive_interval", .type = KEY_DURATION,
      .offset = LS(keepalive_interval_ms), .def = "30s", .min = 0, .max = 24 * HOUR },
    { .name = "keepalive_timeout", .type = KEY_DURATION, .offset = LS(keepalive_timeout_ms),
      .def = "10s", .min = 1, .max = HOUR },
    { .name = "close_timeout", .type = KEY_DURATION, .offset = LS(close_timeout_ms),
      .def = "5s", .min = 1, .max = 5 * MIN },
    { .name = "message_rate", .type = KEY_UINT, .offset = LS(message_rate), .def = "0",
      .min = 0, .max = 100000000 },
    { .name = "message_burst", .type = KEY_UINT, .offset = LS(message_burst), .def = "0",
      .min = 0, .max = 100000000 },
    { .name = "byte_rate", .type = KEY_SIZE, .offset = LS(byte_rate), .def = "0",
      .min = 0, .max = 1ull << 40 },
    { .name = "byte_burst", .type = KEY_SIZE, .offset = LS(byte_burst), .def = "0",
      .min = 0, .max = 1ull << 40 },
    { .name = "rate_limit_action", .type = KEY_ENUM, .offset = LS(rate_limit_action),
      .def = "delay", .choices = rate_action_choices },
    { .name = "high_water", .type = KEY_SIZE, .offset = LS(high_water), .def = "64k",
      .min = 4096, .max = 1ull << 30 },
    { .name = "permessage_deflate", .type = KEY_ENUM, .offset = LS(permessage_deflate),
      .def = "passthrough", .choices = deflate_choices },
    ADM_LIMIT_KEYS(LA, "admission"),
    ALOG_KEYS(LS, "gateway"),
    { .name = "accept_proxy", .type = KEY_ENUM, .offset = LS(accept_proxy), .def = "off",
      .choices = accept_proxy_choices },
    { .name = "accept_proxy_from", .type = KEY_CUSTOM, .def = "", .set = set_proxy_from },
    { .name = "proxy_timeout", .type = KEY_DURATION, .offset = LS(proxy_timeout_ms),
      .def = "5s", .min = 1, .max = 5 * MIN },
    { .name = "trusted_proxies", .type = KEY_CUSTOM, .def = "", .set = set_trusted_proxies },
    TLS_KEYS(LS),
    { .name = "tls_alpn", .type = KEY_CUSTOM, .def = "", .set = set_tls_alpn },
    { .name = "tls_tickets", .type = KEY_CUSTOM, .def = "on", .set = set_tls_bool },
    { .name = "tls_ticket_keys", .type = KEY_CUSTOM, .def = "", .set = set_tls_str },
    { .name = "tls_client_ca", .type = KEY_CUSTOM, .def = "", .set = set_tls_str },
    { .name = "tls_verify_client", .type = KEY_CUSTOM, .def = "off",
      .set = set_tls_verify_client },
};

static const struct key_desc upstream_keys[] = {
    { .name = "servers", .type = KEY_CUSTOM, .def = NULL, .set = set_servers },
    { .name = "source", .type = KEY_CUSTOM, .def = "", .set = set_source },
    { .name = "balance", .type = KEY_ENUM, .offset = UP(balance), .def = "roundrobin",
      .choices = balance_choices },
    { .name = "hash_key", .type = KEY_CUSTOM, .def = "source", .set = set_hash_key },
    { .name = "connect_timeout", .type = KEY_DURATION, .offset = UP(connect_timeout_ms),
      .def = "5s", .min = 1, .max = 5 * MIN },
    { .name = "retries", .type = KEY_UINT, .offset = UP(retries), .def = "2",
      .min = 0, .max = 16 },
    { .name = "max_connections_per_server", .type = KEY_UINT,
      .offset = UP(max_connections_per_server), .def = "0", .min = 0, .max = UINT_MAX },
    { .name = "health_check_interval", .type = KEY_DURATION,
      .offset = UP(health_check_interval_ms), .def = "2s", .min = 0, .max = HOUR },
    { .name = "health_check_timeout", .type = KEY_DURATION,
      .offset = UP(health_check_timeout_ms), .def = "1s", .min = 1, .max = 5 * MIN },
    { .name = "health_check_fall", .type = KEY_UINT, .offset = UP(health_check_fall),
      .def = "3", .min = 1, .max = 100 },
    { .name = "health_check_rise", .type = KEY_UINT, .offset = UP(health_check_rise),
      .def = "2", .min = 1, .max = 100 },
    SRV_BREAKER_KEYS(UB, "breaker", set_up_error_rate),
    { .name = "send_proxy", .type = KEY_ENUM, .offset = UP(send_proxy), .def = "off",
      .choices = send_proxy_choices },
    TLS_KEYS(UP),
    { .name = "tls_verify", .type = KEY_CUSTOM, .def = "on", .set = set_tls_bool },
    { .name = "tls_ca", .type = KEY_CUSTOM, .def = "", .set = set_tls_str },
    { .name = "tls_sni", .type = KEY_CUSTOM, .def = "", .set = set_tls_str },
};

_Static_assert(sizeof(enum cg_listener_mode) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_balance) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_upstream_protocol) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_rate_action) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_deflate) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_reject_how) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_alog_sink) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_alog_format) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(CG_ROUTE_NAME_MAX == CG_CONF_NAME_MAX, "route upstream names are section names");

static void *gateway_create(struct parser *p, const char *name, unsigned int line,
                            size_t *index)
{
    *index = 0;
    return &p->cfg->gw;
}

static void *gateway_get(struct parser *p, size_t index)
{
    return &p->cfg->gw;
}

static void *listener_create(struct parser *p, const char *name, unsigned int line,
                             size_t *index)
{
    struct cg_config *cfg = p->cfg;
    struct cg_listener_conf *ls, *l;

    ls = realloc(cfg->listeners, (cfg->nlisteners + 1) * sizeof(*ls));
    if (!ls)
        return NULL;
    cfg->listeners = ls;
    l = &ls[cfg->nlisteners];
    memset(l, 0, sizeof(*l));
    snprintf(l->name, sizeof(l->name), "%s", name);
    l->line = line;
    *index = cfg->nlisteners++;
    return l;
}

static void *listener_get(struct parser *p, size_t index)
{
    return &p->cfg->listeners[index];
}

static void *upstream_create(struct parser *p, const char *name, unsigned int line,
                             size_t *index)
{
    struct cg_config *cfg = p->cfg;
    struct cg_upstream_conf *ups, *up;

    ups = realloc(cfg->upstreams, (cfg->nupstreams + 1) * sizeof(*ups));
    if (!ups)
        return NULL;
    cfg->upstreams = ups;
    up = &ups[cfg->nupstreams];
    memset(up, 0, sizeof(*up));
    snprintf(up->name, sizeof(up->name), "%s", name);
    up->line = line;
    *index = cfg->nupstreams++;
    return up;
}

static void *upstream_get(struct parser *p, size_t index)
{
    return &p->cfg->upstreams[index];
}

static const char *const bpf_attach_choices[] = {
    "auto", "tp_btf", "raw_tp", "kprobe", "off", NULL,
};

static const struct key_desc bpf_keys[] = {
    { .name = "attach", .type = KEY_ENUM, .offset = offsetof(struct cg_bpf_conf, attach),
      .def = "auto", .choices = bpf_attach_choices },
    { .name = "btf", .type = KEY_STRING, .offset = offsetof(struct cg_bpf_conf, btf),
      .size = sizeof(((struct cg_bpf_conf *)0)->btf), .def = "/sys/kernel/btf/vmlinux" },
};

_Static_assert(sizeof(enum cg_bpf_attach) == sizeof(int), "KEY_ENUM writes an int");

static void *bpf_create(struct parser *p, const char *name, unsigned int line, size_t *index)
{
    *index = 0;
    return &p->cfg->bpf;
}

static void *bpf_get(struct parser *p, size_t index)
{
    return &p->cfg->bpf;
}

static void *admission_create(struct parser *p, const char *name, unsigned int line,
                              size_t *index)
{
    *index = 0;
    return &p->cfg->adm;
}

static void *admission_get(struct parser *p, size_t index)
{
    return &p->cfg->adm;
}

static void *breaker_create(struct parser *p, const char *name, unsigned int line,
                            size_t *index)
{
    *index = 0;
    return &p->cfg->brk;
}

static void *breaker_get(struct parser *p, size_t index)
{
    return &p->cfg->brk;
}

#define KEYS(t) t, sizeof(t) / sizeof(t[0])

const struct section_kind cg_conf__kinds[] = {
    { "gateway",   0, KEYS(gateway_keys),   gateway_create,   gateway_get },
    { "listener",  1, KEYS(listener_keys),  listener_create,  listener_get },
    { "upstream",  1, KEYS(upstream_keys),  upstream_create,  upstream_get },
    { "bpf",       0, KEYS(bpf_keys),       bpf_create,       bpf_get },
    { "admission", 0, KEYS(admission_keys), admission_create, admission_get },
    { "breaker",   0, KEYS(breaker_keys),   breaker_create,   breaker_get },
};

const size_t cg_conf__nkinds = sizeof(cg_conf__kinds) / sizeof(cg_conf__kinds[0]);
