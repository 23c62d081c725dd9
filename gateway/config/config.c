/* gateway/config/config.c — the ini configuration: parsing, validation, defaults.
 *
 * inih splits "key = value" lines (whitespace and " ;" inline comments stripped); we feed
 * it one line at a time through a reader callback, so we always know the line number, and
 * we handle section headers ourselves (inih drops empty sections, truncates long names and
 * keeps the previous section after a malformed header).
 *
 * Each section kind has a table of key descriptors: name, type, offset of the field it
 * sets, default (written as in the file and parsed by the same code; NULL = required) and
 * range. Adding a key is adding a row. The defaults in these tables are the only ones; the
 * annotated conf/corogate.ini repeats them for the reader.
 */
#include "config/config.h"
#include "config/config-int.h"
#include "common/parse.h"
#include "config/route.h"

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

/* ------------------------------------------------------------------ addresses */

/* 1 when <a> and <b> are the same address and port (a server listed twice, a source). */
int cg_conf__same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    const struct sockaddr_in *a4 = (const void *)a, *b4 = (const void *)b;
    const struct sockaddr_in6 *a6 = (const void *)a, *b6 = (const void *)b;

    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return a4->sin_port == b4->sin_port && a4->sin_addr.s_addr == b4->sin_addr.s_addr;
    return a6->sin6_port == b6->sin6_port &&
           memcmp(&a6->sin6_addr, &b6->sin6_addr, sizeof(a6->sin6_addr)) == 0;
}

/* ------------------------------------------------------------------ errors */

void cg_errors_init(struct cg_errors *errs)
{
    errs->msgs = NULL;
    errs->count = 0;
    errs->cap = 0;
}

void cg_errors_deinit(struct cg_errors *errs)
{
    size_t i;

    for (i = 0; i < errs->count; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    cg_errors_init(errs);
}

static int errors_vadd(struct cg_errors *errs, const char *fmt, va_list ap)
{
    char *msg = NULL, **msgs;
    size_t cap;

    if (errs->count == errs->cap) {
        cap = errs->cap ? errs->cap * 2 : 8;
        msgs = realloc(errs->msgs, cap * sizeof(*msgs));
        if (!msgs)
            return -ENOMEM;
        errs->msgs = msgs;
        errs->cap = cap;
    }
    if (vasprintf(&msg, fmt, ap) < 0)
        return -ENOMEM;
    errs->msgs[errs->count++] = msg;
    return 0;
}

int cg_errors_add(struct cg_errors *errs, const char *fmt, ...)
{
    va_list ap;
    int err;

    va_start(ap, fmt);
    err = errors_vadd(errs, fmt, ap);
    va_end(ap);
    return err;
}

size_t cg_errors_count(const struct cg_errors *errs)
{
    return errs->count;
}

const char *cg_errors_get(const struct cg_errors *errs, size_t i)
{
    return i < errs->count ? errs->msgs[i] : NULL;
}

/* ------------------------------------------------------------------ value parsers */

/* Multiplies *<v> by <mul>. Returns 0 or -ERANGE. */
static int scale(uint64_t *v, uint64_t mul)
{
    if (mul && *v > UINT64_MAX / mul)
        return -ERANGE;
    *v *= mul;
    return 0;
}

int cg_parse_duration(const char *s, uint64_t *ms)
{
    static const struct { const char *unit; uint64_t ms; } units[] = {
        { "",   1000 }, { "ms", 1 }, { "s", 1000 }, { "m", 60000 }, { "h", 3600000 },
    };
    const char *end;
    uint64_t v;
    size_t i;
    int err;

    if (!s)
        return -EINVAL;
    err = cg_parse_u64_prefix(s, &v, &end);
    if (err == -EINVAL)
        return err;
    for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcasecmp(end, units[i].unit) != 0)
            continue;
        if (err == 0)
            err = scale(&v, units[i].ms);
        if (err == 0)
            *ms = v;
        return err;
    }
    return -EINVAL;
}

int cg_parse_size(const char *s, uint64_t *bytes)
{
    const char *end;
    uint64_t v, mul;
    int err;

    if (!s)
        return -EINVAL;
    err = cg_parse_u64_prefix(s, &v, &end);
    if (err == -EINVAL)
        return err;
    switch (end[0]) {
    case '\0':          mul = 1; break;
    case 'k': case 'K': mul = 1ull << 10; break;
    case 'm': case 'M': mul = 1ull << 20; break;
    case 'g': case 'G': mul = 1ull << 30; break;
    default:            return -EINVAL;
    }
    if (end[0] && end[1])
        return -EINVAL;
    if (err == 0)
        err = scale(&v, mul);
    if (err == 0)
        *bytes = v;
    return err;
}

int cg_parse_bool(const char *s, int *b)
{
    static const char *const yes[] = { "on", "yes", "true", "1" };
    static const char *const no[] = { "off", "no", "false", "0" };
    size_t i;

    if (!s)
        return -EINVAL;
    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *b = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *b = 0;
            return 0;
        }
    }
    return -EINVAL;
}

/* The common part of cg_parse_hostport() and cg_parse_bind(). */
enum hp_error cg_conf__parse_hostport(const char *s, int bind, struct sockaddr_storage *ss,
                                    socklen_t *len)
{
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    char host[INET6_ADDRSTRLEN + 2];
    const char *colon, *end;
    uint64_t port;
    size_t hlen;

    if (!s)
        return HP_FORMAT;
    colon = strrchr(s, ':');
    if (!colon || colon == s)
        return HP_FORMAT;
    hlen = (size_t)(colon - s);
    if (colon[1] == '\0' || colon[1 + strspn(colon + 1, "0123456789")] != '\0')
        return HP_FORMAT;
    if (cg_parse_u64_prefix(colon + 1, &port, &end) != 0 || port > 65535 || (port == 0 && !bind))
        return HP_PORT;

    memset(ss, 0, sizeof(*ss));
    if (s[0] == '[') {
        if (s[hlen - 1] != ']')
            return HP_FORMAT;
        if (hlen < 3 || hlen - 2 >= sizeof(host))
            return HP_HOST;
        memcpy(host, s + 1, hlen - 2);
        host[hlen - 2] = '\0';
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return HP_HOST;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*sin6);
        return HP_OK;
    }
    if (hlen >= sizeof(host))
        return HP_HOST;
    memcpy(host, s, hlen);
    host[hlen] = '\0';
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    *len = sizeof(*sin);
    if (strcasecmp(host, "localhost") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (bind && strcmp(host, "*") == 0)
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
        return HP_HOST;
    return HP_OK;
}

int cg_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    switch (cg_conf__parse_hostport(s, 0, ss, len)) {
    case HP_OK:   return 0;
    case HP_PORT: return -ERANGE;
    default:      return -EINVAL;
    }
}

int cg_parse_bind(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    switch (cg_conf__parse_hostport(s, 1, ss, len)) {
    case HP_OK:   return 0;
    case HP_PORT: return -ERANGE;
    default:      return -EINVAL;
    }
}

const char *cg_balance_name(enum cg_balance b)
{
    switch (b) {
    case CG_BALANCE_ROUNDROBIN: return "roundrobin";
    case CG_BALANCE_LEASTCONN:  return "leastconn";
    case CG_BALANCE_RANDOM:     return "random";
    case CG_BALANCE_HASH:       return "hash";
    }
    return "?";
}

const char *cg_format_hash_key(const struct cg_upstream_conf *uc, char *buf, size_t size)
{
    static const char *const kinds[] = {
        [CG_HASH_SOURCE] = "source", [CG_HASH_HEADER] = "header:",
        [CG_HASH_COOKIE] = "cookie:", [CG_HASH_QUERY] = "query:", [CG_HASH_PATH] = "path",
    };

    snprintf(buf, size, "%s%s", uc->hash_key <= CG_HASH_PATH ? kinds[uc->hash_key] : "?",
             uc->hash_key_name);
    return buf;
}

const char *cg_format_duration(uint64_t ms, char *buf, size_t size)
{
    if (ms == 0)
        snprintf(buf, size, "0");
    else if (ms % 3600000 == 0)
        snprintf(buf, size, "%lluh", (unsigned long long)(ms / 3600000));
    else if (ms % 60000 == 0)
        snprintf(buf, size, "%llum", (unsigned long long)(ms / 60000));
    else if (ms % 1000 == 0)
        snprintf(buf, size, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(buf, size, "%llums", (unsigned long long)ms);
    return buf;
}

static const char *format_size(uint64_t v, char *buf, size_t size)
{
    static const char suffix[] = "gmk";
    int i;

    for (i = 0; i < 3; i++) {
        uint64_t unit = 1ull << (10 * (3 - i));

        if (v && v % unit == 0) {
            snprintf(buf, size, "%llu%c", (unsigned long long)(v / unit), suffix[i]);
            return buf;
        }
    }
    snprintf(buf, size, "%llu", (unsigned long long)v);
    return buf;
}

/* ------------------------------------------------------------------ parser state */


static void verror_at(struct parser *p, unsigned int line, const char *fmt, va_list ap)
{
    struct perror_ *errs;
    char *msg = NULL, *full = NULL;
    size_t cap;

    if (vasprintf(&msg, fmt, ap) < 0)
        goto out_nomem;
    if (line == UINT_MAX) {
        if (asprintf(&full, "%s: %s", p->file, msg) < 0)
            goto out_msg;
    } else if (asprintf(&full, "%s:%u: %s", p->file, line, msg) < 0) {
        goto out_msg;
    }
    free(msg);
    if (p->nerrs == p->cap_errs) {
        cap = p->cap_errs ? p->cap_errs * 2 : 8;
        errs = realloc(p->errs, cap * sizeof(*errs));
        if (!errs) {
            free(full);
            goto out_nomem;
        }
        p->errs = errs;
        p->cap_errs = cap;
    }
    p->errs[p->nerrs].line = line;
    p->errs[p->nerrs].seq = p->nerrs;
    p->errs[p->nerrs].msg = full;
    p->nerrs++;
    return;
out_msg:
    free(msg);
out_nomem:
    p->nomem = 1;
}

/* Reports "FILE:LINE: <fmt>" (or "FILE: <fmt>" when <line> is UINT_MAX). */
__attribute__((format(printf, 3, 4)))
static void error_at(struct parser *p, unsigned int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    verror_at(p, line, fmt, ap);
    va_end(ap);
}

/* Reports "FILE:LINE: [LABEL] KEY: <fmt>" for the value being set through <c>. */
__attribute__((format(printf, 2, 3)))
void cg_conf__key_error(const struct keyctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    error_at(c->p, c->line, "[%s] %s: %s", c->label, c->key, msg);
}

/* Copies <s> into <buf> for quoting in a message, cut to SHOW_MAX characters. */
const char *cg_conf__show(const char *s, char *buf, size_t size)
{
    size_t n = strlen(s);

    if (n < size && n <= SHOW_MAX) {
        memcpy(buf, s, n + 1);
    } else {
        n = size - 4 < SHOW_MAX ? size - 4 : SHOW_MAX;
        memcpy(buf, s, n);
        memcpy(buf + n, "...", 4);
    }
    return buf;
}

/* 1 when <s> is a valid section name: [A-Za-z0-9_.-]+, shorter than CG_CONF_NAME_MAX. */
int cg_conf__is_valid_name(const char *s)
{
    size_t n = strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-");

    return n > 0 && s[n] == '\0' && n < CG_CONF_NAME_MAX;
}

/* ------------------------------------------------------------------ typed setters */

static int set_uint(const struct keyctx *c, const struct key_desc *k, void *field,
                    const char *value)
{
    char buf[SHOW_MAX + 4];
    const char *end;
    uint64_t v;
    int err;

    err = cg_parse_u64_prefix(value, &v, &end);
    if (err == -EINVAL || *end) {
        cg_conf__key_error(c, "\"%s\" is not a number (expected %llu..%llu)",
                  cg_conf__show(value, buf, sizeof(buf)), (unsigned long long)k->min,
                  (unsigned long long)k->max);
        return -1;
    }
    if (err || v < k->min || v > k->max) {
        cg_conf__key_error(c, "\"%s\" is out of range (expected %llu..%llu)",
                  cg_conf__show(value, buf, sizeof(buf)), (unsigned long long)k->min,
                  (unsigned long long)k->max);
        return -1;
    }
    *(unsigned int *)field = (unsigned int)v;
    return 0;
}

static int set_duration(const struct keyctx *c, const struct key_desc *k, void *field,
                        const char *value)
{
    char buf[SHOW_MAX + 4], lo[32], hi[32];
    uint64_t v = 0;
    int err;

    err = cg_parse_duration(value, &v);
    if (err == -EINVAL) {
        cg_conf__key_error(c, "\"%s\" is not a duration (e.g. 500ms, 5s, 2m)",
                  cg_conf__show(value, buf, sizeof(buf)));
        return -1;
    }
    if (err || v < k->min || v > k->max) {
        cg_conf__key_error(c, "\"%s\" is out of range (expected %s..%s)", cg_conf__show(value, buf, sizeof(buf)),
                  cg_format_duration(k->min, lo, sizeof(lo)),
                  cg_format_duration(k->max, hi, sizeof(hi)));
        return -1;
    }
    *(uint64_t *)field = v;
    return 0;
}

static int set_size(const struct keyctx *c, const struct key_desc *k, void *field,
                    const char *value)
{
    char buf[SHOW_MAX + 4], lo[32], hi[32];
    uint64_t v = 0;
    int err;

    err = cg_parse_size(value, &v);
    if (err == -EINVAL) {
        cg_conf__key_error(c, "\"%s\" is not a size (e.g. 4096, 64k, 1m, 1g)",
                  cg_conf__show(value, buf, sizeof(buf)));
        return -1;
    }
    if (err || v < k->min || v > k->max) {
        cg_conf__key_error(c, "\"%s\" is out of range (expected %s..%s)", cg_conf__show(value, buf, sizeof(buf)),
                  format_size(k->min, lo, sizeof(lo)), format_size(k->max, hi, sizeof(hi)));
        return -1;
    }
    *(uint64_t *)field = v;
    return 0;
}

static int set_bool(const struct keyctx *c, void *field, const char *value)
{
    char buf[SHOW_MAX + 4];

    if (cg_parse_bool(value, (int *)field) == 0)
        return 0;
    cg_conf__key_error(c, "\"%s\" is not a boolean (expected on/off, yes/no, true/false, 1/0)",
              cg_conf__show(value, buf, sizeof(buf)));
    return -1;
}

/* Reports "<value> is not one of: a, b, c". */
void cg_conf__choice_error(const struct keyctx *c, const char *value, const char *const *choices)
{
    char buf[SHOW_MAX + 4], list[256];
    size_t len = 0, i;

    list[0] = '\0';
    for (i = 0; choices[i] && len < sizeof(list); i++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "",
                                choices[i]);
    cg_conf__key_error(c, "\"%s\" is not one of: %s", cg_conf__show(value, buf, sizeof(buf)), list);
}

static int set_enum(const struct keyctx *c, const struct key_desc *k, void *field,
                    const char *value)
{
    int i;

    for (i = 0; k->choices[i]; i++) {
        if (strcmp(value, k->choices[i]) == 0) {
            *(int *)field = i;
            return 0;
        }
    }
    cg_conf__choice_error(c, value, k->choices);
    return -1;
}

static int set_string(const struct keyctx *c, const struct key_desc *k, void *field,
                      const char *value)
{
    char buf[SHOW_MAX + 4];
    size_t n = strlen(value);

    if (n == 0) {
        cg_conf__key_error(c, "empty value");
        return -1;
    }
    if (n >= k->size) {
        cg_conf__key_error(c, "\"%s\" is too long (at most %zu characters)",
                  cg_conf__show(value, buf, sizeof(buf)), k->size - 1);
        return -1;
    }
    memcpy(field, value, n + 1);
    return 0;
}

/* Sets key <k> of <obj> from <value>. Returns 0, or -1 after reporting through <c>. */
static int set_key(const struct keyctx *c, const struct key_desc *k, void *obj,
                   const char *value)
{
    void *field = (char *)obj + k->offset;

    switch (k->type) {
    case KEY_UINT:     return set_uint(c, k, field, value);
    case KEY_BOOL:     return set_bool(c, field, value);
    case KEY_DURATION: return set_duration(c, k, field, value);
    case KEY_SIZE:     return set_size(c, k, field, value);
    case KEY_ENUM:     return set_enum(c, k, field, value);
    case KEY_STRING:   return set_string(c, k, field, value);
    case KEY_CUSTOM:   return k->set(c, obj, value);
    }
    return -1;
}


#define KIND_GATEWAY   (&cg_conf__kinds[0])
#define KIND_LISTENER  (&cg_conf__kinds[1])
#define KIND_UPSTREAM  (&cg_conf__kinds[2])
#define KIND_BPF       (&cg_conf__kinds[3])
#define KIND_ADMISSION (&cg_conf__kinds[4])
#define KIND_BREAKER   (&cg_conf__kinds[5])

/* 1 for the cg_conf__kinds that exist once, unnamed, and get their defaults before parsing. */
static int is_singleton(const struct section_kind *kind)
{
    return kind == KIND_GATEWAY || kind == KIND_BPF || kind == KIND_ADMISSION ||
           kind == KIND_BREAKER;
}

/* Sets every key of <kind> that has a default in <obj>. */
static void apply_defaults(struct parser *p, const struct section_kind *kind, void *obj,
                           const char *label, unsigned int line)
{
    struct keyctx c = { .p = p, .label = label, .line = line };
    size_t i;

    for (i = 0; i < kind->nkeys; i++) {
        if (!kind->keys[i].def)
            continue;
        c.key = kind->keys[i].name;
        set_key(&c, &kind->keys[i], obj, kind->keys[i].def);
    }
}

/* ------------------------------------------------------------------ sections */

static struct section *find_section(struct parser *p, const struct section_kind *kind,
                                    const char *name)
{
    size_t i;

    for (i = 0; i < p->nsections; i++)
        if (p->sections[i].kind == kind && strcmp(p->sections[i].name, name) == 0)
            return &p->sections[i];
    return NULL;
}

/* Handles the header "[<inside>]" of line p->lineno. */
static void begin_section(struct parser *p, char *inside)
{
    const struct section_kind *kind = NULL;
    struct section *s, *dup;
    char *kname, *name, *end, label[SHOW_MAX + 16], shown[SHOW_MAX + 4];
    unsigned int line = p->lineno;
    size_t i;
    void *obj;

    p->cur = CUR_IGNORED;

    /* "  listener   web " -> kind "listener", name "web" */
    kname = inside + strspn(inside, " \t");
    end = kname + strlen(kname);
    while (end > kname && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    name = kname + strcspn(kname, " \t");
    if (*name) {
        *name++ = '\0';
        name += strspn(name, " \t");
    }
    snprintf(label, sizeof(label), "%s%s%s", kname, *name ? " " : "",
             cg_conf__show(name, shown, sizeof(shown)));

    for (i = 0; i < cg_conf__nkinds; i++)
        if (strcmp(kname, cg_conf__kinds[i].kind) == 0)
            kind = &cg_conf__kinds[i];
    if (!kind) {
        error_at(p, line, "[%s]: unknown section", label);
        return;
    }
    if (kind == KIND_LISTENER)
        p->listener_headers++;
    if (kind->named && !*name) {
        error_at(p, line, "[%s]: missing name (expected [%s NAME])", label, kname);
        return;
    }
    if (!kind->named && *name) {
        error_at(p, line, "[%s]: takes no name (expected [%s])", label, kname);
        return;
    }
    if (kind->named && !cg_conf__is_valid_name(name)) {
        error_at(p, line, "[%s]: invalid name (expected [A-Za-z0-9_.-], at most %d characters)",
                 label, CG_CONF_NAME_MAX - 1);
        return;
    }
    dup = find_section(p, kind, name);
    if (dup) {
        error_at(p, line, "[%s]: duplicate section (first at line %u)", label, dup->line);
        return;
    }

    if (p->nsections == p->cap_sections) {
        size_t cap = p->cap_sections ? p->cap_sections * 2 : 8;
        struct section *ss = realloc(p->sections, cap * sizeof(*ss));

        if (!ss)
            goto out_nomem;
        p->sections = ss;
        p->cap_sections = cap;
    }
    s = &p->sections[p->nsections];
    memset(s, 0, sizeof(*s));
    s->kind = kind;
    s->line = line;
    snprintf(s->label, sizeof(s->label), "%s", label);
    snprintf(s->name, sizeof(s->name), "%s", name);
    s->key_line = calloc(kind->nkeys, sizeof(*s->key_line));
    s->key_bad = calloc(kind->nkeys, sizeof(*s->key_bad));
    if (!s->key_line || !s->key_bad)
        goto out_keys;
    obj = kind->create(p, name, line, &s->index);
    if (!obj)
        goto out_keys;
    /* [gateway], [bpf], [admission] and [breaker] were given their defaults before
     * parsing, in case of absence. */
    if (!is_singleton(kind))
        apply_defaults(p, kind, obj, s->label, line);
    p->cur = (long)p->nsections++;
    return;
out_keys:
    free(s->key_line);
    free(s->key_bad);
out_nomem:
    p->nomem = 1;
}

/* ------------------------------------------------------------------ inih glue */

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct parser *p = user;
    const struct section_kind *kind;
    struct section *s;
    struct keyctx c;
    size_t i;

    p->handled = 1;
    if (!*name) {
        p->handled = 0;         /* reported by the reader as a syntax error */
        return 1;
    }
    if (p->cur == CUR_IGNORED)
        return 1;
    if (p->cur == CUR_NONE) {
        error_at(p, p->lineno, "%s: key outside any section", name);
        return 1;
    }
    s = &p->sections[p->cur];
    kind = s->kind;
    for (i = 0; i < kind->nkeys; i++)
        if (strcmp(name, kind->keys[i].name) == 0)
            break;
    if (i == kind->nkeys) {
        error_at(p, p->lineno, "[%s] %s: unknown key", s->label, name);
        return 1;
    }
    if (s->key_line[i]) {
        error_at(p, p->lineno, "[%s] %s: duplicate key (first at line %u)", s->label, name,
                 s->key_line[i]);
        return 1;
    }
    s->key_line[i] = p->lineno;
    c.p = p;
    c.label = s->label;
    c.key = name;
    c.line = p->lineno;
    if (set_key(&c, &kind->keys[i], kind->get(p, s->index), value) != 0)
        s->key_bad[i] = 1;
    return 1;
}

/* Reports the previous key line if inih found no "key = value" in it. */
static void finish_line(struct parser *p)
{
    if (p->key_line && !p->handled) {
        if (p->cur >= 0)
            error_at(p, p->key_line, "[%s]: expected \"key = value\", got \"%s\"",
                     p->sections[p->cur].label, p->raw);
        else
            error_at(p, p->key_line, "expected \"key = value\", got \"%s\"", p->raw);
    }
    p->key_line = 0;
    p->handled = 0;
}

/* inih's reader: hands over one line of p->text per call, so p->lineno is always the line
 * inih is working on. Handles section headers itself and passes inih only key lines. */
static char *next_line(char *str, int num, void *stream)
{
    struct parser *p = stream;
    const char *line, *nl;
    char *close, *after, buf[CONF_MAX_LINE + 1], shown[SHOW_MAX + 4];
    size_t n;

    finish_line(p);
    if (p->pos >= p->len)
        return NULL;
    line = p->text + p->pos;
    nl = memchr(line, '\n', p->len - p->pos);
    n = nl ? (size_t)(nl - line) : p->len - p->pos;
    p->pos += n + (nl ? 1 : 0);
    p->lineno++;
    if (p->lineno == 1 && n >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0) {
        line += 3;
        n -= 3;
    }
    /* Leading blanks go: inih would take an indented line as a continuation. */
    while (n && (*line == ' ' || *line == '\t')) {
        line++;
        n--;
    }
    while (n && (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
        n--;
    str[0] = '\n';
    str[1] = '\0';
    if (n == 0 || *line == ';' || *line == '#')
        return str;
    if (n > CONF_MAX_LINE || (int)n > num - 3) {
        error_at(p, p->lineno, "line too long (at most %d characters)",
                 num - 3 < CONF_MAX_LINE ? num - 3 : CONF_MAX_LINE);
        return str;
    }
    memcpy(buf, line, n);
    buf[n] = '\0';

    if (buf[0] == '[') {
        close = strchr(buf, ']');
        after = close ? close + 1 + strspn(close + 1, " \t") : NULL;
        if (!close || (*after && *after != ';' && *after != '#')) {
            error_at(p, p->lineno, "malformed section header \"%s\" (expected [kind NAME])",
                     cg_conf__show(buf, shown, sizeof(shown)));
            p->cur = CUR_IGNORED;
            return str;
        }
        *close = '\0';
        begin_section(p, buf + 1);
        return str;
    }

    p->key_line = p->lineno;
    cg_conf__show(buf, p->raw, sizeof(p->raw));
    memcpy(str, buf, n);
    str[n] = '\n';
    str[n + 1] = '\0';
    return str;
}

/* ------------------------------------------------------------------ whole-file checks */

static unsigned int key_line_of(const struct section *s, const char *key, int *bad)
{
    size_t i;

    for (i = 0; i < s->kind->nkeys; i++) {
        if (strcmp(s->kind->keys[i].name, key) == 0) {
            if (bad)
                *bad = s->key_bad[i];
            return s->key_line[i];
        }
    }
    return 0;
}

/* 1 when two listening addresses collide: same family and port, and the same address or
 * either is the wildcard. Port 0 never collides (the kernel picks a free one). */
static int binds_overlap(const struct sockaddr_storage *a, const struct sockaddr_storage *b,
                         int *exact)
{
    const struct sockaddr_in *a4 = (const void *)a, *b4 = (const void *)b;
    const struct sockaddr_in6 *a6 = (const void *)a, *b6 = (const void *)b;

    *exact = cg_conf__same_addr(a, b);
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        if (a4->sin_port != b4->sin_port || a4->sin_port == 0)
            return 0;
        return *exact || a4->sin_addr.s_addr == htonl(INADDR_ANY) ||
               b4->sin_addr.s_addr == htonl(INADDR_ANY);
    }
    if (a6->sin6_port != b6->sin6_port || a6->sin6_port == 0)
        return 0;
    return *exact || IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr) ||
           IN6_IS_ADDR_UNSPECIFIED(&b6->sin6_addr);
}

static void check_upstream(struct parser *p, const struct section *s)
{
    const struct cg_upstream_conf *up = &p->cfg->upstreams[s->index];
    char a[32], b[32];
    unsigned int line;
    int bad = 0, bad_iv = 0;
    size_t i;

    line = key_line_of(s, "source", &bad);
    for (i = 0; up->nsources && !bad && i < up->nservers; i++) {
        int fam = up->servers[i].addr.ss_family;

        if ((fam == AF_INET ? up->nsource4 : up->nsource6) == 0) {
            error_at(p, line, "[%s] source: no %s address for server %s", s->label,
                     fam == AF_INET ? "IPv4" : "IPv6", up->servers[i].name);
            break;
        }
    }
    bad = 0;
    line = key_line_of(s, "hash_key", &bad);
    key_line_of(s, "balance", &bad_iv);
    if (line && !bad && !bad_iv && up->balance != CG_BALANCE_HASH)
        error_at(p, line, "[%s] hash_key: set, but balance is not hash (hash_key chooses "
                 "what balance = hash hashes)", s->label);
    bad = bad_iv = 0;
    line = key_line_of(s, "health_check_timeout", &bad);
    key_line_of(s, "health_check_interval", &bad_iv);
    if (bad || bad_iv || up->health_check_interval_ms == 0 ||
        up->health_check_timeout_ms <= up->health_check_interval_ms)
        return;
    error_at(p, line ? line : s->line,
             "[%s] health_check_timeout: %s is longer than health_check_interval (%s)",
             s->label, cg_format_duration(up->health_check_timeout_ms, a, sizeof(a)),
             cg_format_duration(up->health_check_interval_ms, b, sizeof(b)));
}

/* The section of the upstream at <index> of the configuration. */
static const struct section *upstream_section(const struct parser *p, size_t index)
{
    size_t i;

    for (i = 0; i < p->nsections; i++)
        if (p->sections[i].kind == KIND_UPSTREAM && p->sections[i].index == index)
            return &p->sections[i];
    return NULL;
}

/* balance = hash across listener <s>'s upstream (known: <up_ok>) and its routes' upstreams:
 * a tcp listener has only the client's address to hash; a websocket listener keeps one
 * extra request header from the handshake, so all its upstreams must hash on the same
 * one (its name goes to l->hash_header). */
static void check_hash_keys(struct parser *p, const struct section *s, int up_ok)
{
    struct cg_config *cfg = p->cfg;
    struct cg_listener_conf *l = &cfg->listeners[s->index];
    const struct cg_upstream_conf *uc, *first = NULL;
    const struct section *us;
    char hk[CG_CONF_NAME_MAX + 8];
    unsigned int line;
    size_t j;
    int bad;

    l->hash_header[0] = '\0';
    if (l->mode == CG_MODE_TCP) {
        if (!up_ok)
            return;
        uc = &cfg->upstreams[l->upstream];
        if (uc->balance != CG_BALANCE_HASH || uc->hash_key == CG_HASH_SOURCE)
            return;
        us = upstream_section(p, l->upstream);
        error_at(p, key_line_of(s, "upstream", &bad), "[%s] upstream: \"%s\" has balance "
                 "= hash with hash_key = %s (line %u), but a tcp listener has no request "
                 "to take it from: use hash_key = source there", s->label, uc->name,
                 cg_format_hash_key(uc, hk, sizeof(hk)),
                 us ? key_line_of(us, "hash_key", &bad) : 0);
        return;
    }
    line = key_line_of(s, "routes", &bad);
    for (j = 0; j <= l->nroutes; j++) {
        if (j == 0 && !up_ok)
            continue;
        /* a route whose upstream is unknown is reported already */
        if (j > 0 && (!line || bad || l->routes[j - 1].upstream >= cfg->nupstreams ||
                      strcmp(cfg->upstreams[l->routes[j - 1].upstream].name,
                             l->routes[j - 1].upstream_name) != 0))
            continue;
        uc = &cfg->upstreams[j == 0 ? l->upstream : l->routes[j - 1].upstream];
        if (uc->balance != CG_BALANCE_HASH || uc->hash_key != CG_HASH_HEADER)
            continue;
        if (!first) {
            first = uc;
            strcpy(l->hash_header, uc->hash_key_name);
        } else if (strcmp(first->hash_key_name, uc->hash_key_name) != 0) {
            error_at(p, line, "[%s] routes: upstreams \"%s\" and \"%s\" hash on different "
                     "headers (%s, %s); the upstreams of one listener may hash on one header "
                     "only", s->label, first->name, uc->name, first->hash_key_name,
                     uc->hash_key_name);
            return;
        }
    }
}

static void check_listeners(struct parser *p)
{
    struct cg_config *cfg = p->cfg;
    const struct section *s, *t;
    struct cg_listener_conf *l, *m;
    unsigned int line, tline;
    size_t i, j, k;
    int bad, exact, up_ok;

    for (i = 0; i < p->nsections; i++) {
        s = &p->sections[i];
        if (s->kind != KIND_LISTENER)
            continue;
        l = &cfg->listeners[s->index];

        line = key_line_of(s, "upstream", &bad);
        up_ok = 0;
        if (line && !bad) {
            for (k = 0; k < cfg->nupstreams; k++)
                if (strcmp(cfg->upstreams[k].name, l->upstream_name) == 0)
                    break;
            up_ok = k < cfg->nupstreams;
            if (up_ok)
                l->upstream = k;
            else
                error_at(p, line, "[%s] upstream: unknown upstream \"%s\"", s->label,
                         l->upstream_name);
        }

        line = key_line_of(s, "routes", &bad);
        for (j = 0; line && !bad && j < l->nroutes; j++) {
            struct cg_route *r = &l->routes[j];

            for (k = 0; k < cfg->nupstreams; k++)
                if (strcmp(cfg->upstreams[k].name, r->upstream_name) == 0)
                    break;
            if (k < cfg->nupstreams)
                r->upstream = k;
            else
                error_at(p, line, "[%s] routes: unknown upstream \"%s\"", s->label,
                         r->upstream_name);
        }
        check_hash_keys(p, s, up_ok);

        /* tls = on needs a certificate; a client certificate needs a CA to verify it. */
        line = key_line_of(s, "tls", &bad);
        if (l->tls.on && !bad && l->tls.ncerts == 0)
            error_at(p, line, "[%s] tls: on, but no tls_certificate", s->label);
        line = key_line_of(s, "tls_verify_client", &bad);
        if (l->tls.on && !bad && l->tls.verify != CG_TLS_VERIFY_OFF && !l->tls.ca)
            error_at(p, line, "[%s] tls_verify_client: %s, but no tls_client_ca", s->label,
                     l->tls.verify == CG_TLS_VERIFY_REQUIRED ? "required" : "optional");
        line = key_line_of(s, "tls_key", &bad);
        if (l->tls.key && !bad && l->tls.ncerts > 1)
            error_at(p, line, "[%s] tls_key: with %zu certificates: put each key in its "
                     "certificate's file", s->label, l->tls.ncerts);

        /* accept_proxy_from limits who may send a header: meaningless without one. */
        line = key_line_of(s, "accept_proxy_from", &bad);
        if (line && !bad && l->nproxy_from && !l->accept_proxy)
            error_at(p, line, "[%s] accept_proxy_from: set, but accept_proxy is off",
                     s->label);
        line = key_line_of(s, "half_close", &bad);
        if (line && !bad && l->mode != CG_MODE_TCP)
            error_at(p, line, "[%s] half_close: only for mode = tcp (a WebSocket connection "
                     "ends with its closing handshake)", s->label);
        line = key_line_of(s, "trusted_proxies", &bad);
        if (line && !bad && l->ntrusted_proxies && l->mode != CG_MODE_WEBSOCKET)
            error_at(p, line, "[%s] trusted_proxies: only for mode = websocket (a tcp "
                     "listener reads no X-Forwarded-For)", s->label);

        line = key_line_of(s, "bind", &bad);
        if (!line || bad)
            continue;
        for (j = 0; j < i; j++) {
            t = &p->sections[j];
            if (t->kind != KIND_LISTENER)
                continue;
            tline = key_line_of(t, "bind", &bad);
            if (!tline || bad)
                continue;
            m = &cfg->listeners[t->index];
            if (!binds_overlap(&l->addr, &m->addr, &exact))
                continue;
            if (exact)
                error_at(p, line, "[%s] bind: \"%s\" is already used by [%s] (line %u)",
                         s->label, l->bind, t->label, tline);
            else
                error_at(p, line, "[%s] bind: \"%s\" overlaps \"%s\" of [%s] (line %u)",
                         s->label, l->bind, m->bind, t->label, tline);
            break;
        }
    }
}

/* The bytes a key's field takes (for copying an inherited value). */
static size_t key_field_size(const struct key_desc *k)
{
    switch (k->type) {
    case KEY_DURATION:
    case KEY_SIZE:
        return sizeof(uint64_t);
    case KEY_UINT:
    case KEY_CUSTOM:            /* the percentages: unsigned int */
        return sizeof(unsigned int);
    case KEY_BOOL:
    case KEY_ENUM:
        return sizeof(int);
    case KEY_STRING:
        return k->size;
    }
    return 0;
}

/* Gives the override keys that section <s> left out the value of their [admission],
 * [breaker] or [gateway] key, set or default. */
static void inherit_keys(struct parser *p, const struct section *s)
{
    const struct section_kind *kind = s->kind, *parent;
    void *obj = kind->get(p, s->index), *pobj;
    size_t k, j;

    for (k = 0; k < kind->nkeys; k++) {
        const struct key_desc *key = &kind->keys[k];

        if (!key->inherit || s->key_line[k])
            continue;
        parent = strcmp(key->inherit, "admission") == 0 ? KIND_ADMISSION :
                 strcmp(key->inherit, "gateway") == 0 ? KIND_GATEWAY : KIND_BREAKER;
        pobj = parent->get(p, 0);
        for (j = 0; j < parent->nkeys; j++) {
            if (strcmp(parent->keys[j].name, key->name) != 0)
                continue;
            memcpy((char *)obj + key->offset, (const char *)pobj + parent->keys[j].offset,
                   key_field_size(key));
            break;
        }
    }
}

static void check_all(struct parser *p)
{
    const struct section *s;
    size_t i, k;

    for (i = 0; i < p->nsections; i++) {
        s = &p->sections[i];
        inherit_keys(p, s);
        for (k = 0; k < s->kind->nkeys; k++)
            if (!s->kind->keys[k].def && !s->key_line[k])
                error_at(p, s->line, "[%s] %s: required key missing", s->label,
                         s->kind->keys[k].name);
        if (s->kind == KIND_UPSTREAM)
            check_upstream(p, s);
    }
    check_listeners(p);
    if (p->cfg->nlisteners == 0 && p->listener_headers == 0)
        error_at(p, UINT_MAX, "no [listener] section");
}

static int cmp_errors(const void *a, const void *b)
{
    const struct perror_ *x = a, *y = b;

    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* ------------------------------------------------------------------ entry points */

int cg_config_parse_string(const char *name, const char *text, struct cg_config **out,
                           struct cg_errors *errs)
{
    struct parser p;
    struct cg_config *cfg;
    size_t i;
    int err = 0;

    *out = NULL;
    cfg = calloc(1, sizeof(*cfg));
    if (!cfg)
        return -ENOMEM;
    snprintf(cfg->path, sizeof(cfg->path), "%s", name);
    cfg->loaded_at = time(NULL);

    memset(&p, 0, sizeof(p));
    p.file = name;
    p.text = text;
    p.len = strlen(text);
    p.cfg = cfg;
    p.cur = CUR_NONE;
    apply_defaults(&p, KIND_GATEWAY, &cfg->gw, "gateway", 0);
    apply_defaults(&p, KIND_BPF, &cfg->bpf, "bpf", 0);
    apply_defaults(&p, KIND_ADMISSION, &cfg->adm, "admission", 0);
    apply_defaults(&p, KIND_BREAKER, &cfg->brk, "breaker", 0);

    /* Debian's libinih reads its line limit at run time (a VLA of ini_max_line bytes);
     * the default of 200 is too short for a long servers list. */
    if (ini_max_line < CONF_MAX_LINE + 3)
        ini_max_line = CONF_MAX_LINE + 3;
    if (ini_parse_stream(next_line, &p, on_key, &p) < 0)
        p.nomem = 1;
    finish_line(&p);
    if (!p.nomem)
        check_all(&p);

    if (p.nerrs)
        qsort(p.errs, p.nerrs, sizeof(*p.errs), cmp_errors);
    for (i = 0; i < p.nerrs; i++) {
        if (errs && cg_errors_add(errs, "%s", p.errs[i].msg) < 0)
            p.nomem = 1;
        free(p.errs[i].msg);
    }
    free(p.errs);
    for (i = 0; i < p.nsections; i++) {
        free(p.sections[i].key_line);
        free(p.sections[i].key_bad);
    }
    free(p.sections);

    if (p.nomem)
        err = -ENOMEM;
    else if (p.nerrs)
        err = -EINVAL;
    if (err < 0)
        cg_config_free(cfg);
    else
        *out = cfg;
    return err;
}

int cg_config_load(const char *path, struct cg_config **out, struct cg_errors *errs)
{
    struct stat st;
    char *text = NULL, *t;
    size_t len = 0, cap = 4096;
    ssize_t n;
    int fd, err;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        err = -errno;
        if (errs)
            cg_errors_add(errs, "%s: cannot open: %s", path, strerror(-err));
        return err;
    }
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size < CONF_MAX_FILE)
        cap = (size_t)st.st_size + 2;   /* + the NUL, + 1 to see the end in one read */
    for (;;) {
        if (!text || cap - len < 2) {
            if (text && len > CONF_MAX_FILE) {
                err = -EFBIG;
                if (errs)
                    cg_errors_add(errs, "%s: cannot read: larger than %u bytes", path,
                                  CONF_MAX_FILE);
                goto out_text;
            }
            cap = text ? cap * 2 : cap;
            t = realloc(text, cap);
            if (!t) {
                err = -ENOMEM;
                goto out_text;
            }
            text = t;
        }
        n = read(fd, text + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = -errno;
            if (errs)
                cg_errors_add(errs, "%s: cannot read: %s", path, strerror(-err));
            goto out_text;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    text[len] = '\0';
    if (memchr(text, '\0', len)) {
        err = -EINVAL;
        if (errs)
            cg_errors_add(errs, "%s: not a text file (contains a NUL byte)", path);
        goto out_text;
    }
    close(fd);
    fd = -1;
    err = cg_config_parse_string(path, text, out, errs);
out_text:
    free(text);
    if (fd >= 0)
        close(fd);
    return err;
}

static void tls_conf_free(struct cg_tls_conf *t)
{
    size_t i;

    for (i = 0; i < t->ncerts; i++)
        free(t->certs[i]);
    free(t->certs);
    free(t->key);
    free(t->ciphers);
    free(t->ciphersuites);
    free(t->groups);
    free(t->alpn);
    free(t->ticket_keys);
    free(t->ca);
    free(t->sni);
}

void cg_config_free(struct cg_config *cfg)
{
    size_t i;

    if (!cfg)
        return;
    if (cfg->tls && cfg->tls_free)
        cfg->tls_free(cfg->tls);
    for (i = 0; i < cfg->nupstreams; i++) {
        free(cfg->upstreams[i].servers);
        free(cfg->upstreams[i].sources);
        tls_conf_free(&cfg->upstreams[i].tls);
    }
    for (i = 0; i < cfg->nlisteners; i++) {
        cg_routes_free(cfg->listeners[i].routes);
        free(cfg->listeners[i].allowed_origins);
        free(cfg->listeners[i].proxy_from);
        free(cfg->listeners[i].trusted_proxies);
        tls_conf_free(&cfg->listeners[i].tls);
    }
    free(cfg->upstreams);
    free(cfg->listeners);
    free(cfg);
}
