/* gateway/config.c — the ini configuration: parsing, validation, defaults.
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
#include "proto/route.h"

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

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24      /* linux/in.h */
#endif

#define CONF_MAX_LINE  4096             /* longest line we accept, newline excluded */
#define CONF_MAX_FILE  (16u << 20)      /* cg_config_load() refuses larger files */
#define WORKERS_MAX    1024
#define SHOW_MAX       80               /* longest value quoted back in a message */

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

/* Parses a plain decimal number (digits only) from the start of <s>; *<end> is set past
 * it. Returns 0, -EINVAL with no digits, -ERANGE on overflow. */
static int parse_u64(const char *s, uint64_t *v, const char **end)
{
    uint64_t n = 0;
    const char *p = s;

    if (*p < '0' || *p > '9')
        return -EINVAL;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (n > (UINT64_MAX - (uint64_t)(*p - '0')) / 10) {
            while (*p >= '0' && *p <= '9')
                p++;
            *end = p;
            return -ERANGE;
        }
        n = n * 10 + (uint64_t)(*p - '0');
    }
    *v = n;
    *end = p;
    return 0;
}

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
    err = parse_u64(s, &v, &end);
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
    err = parse_u64(s, &v, &end);
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

enum hp_error {
    HP_OK,
    HP_FORMAT,      /* not host:port at all */
    HP_HOST,        /* host is not an address we accept */
    HP_PORT,        /* port is not a number in range */
};

/* The common part of cg_parse_hostport() and cg_parse_bind(). */
static enum hp_error parse_hostport(const char *s, int bind, struct sockaddr_storage *ss,
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
    if (parse_u64(colon + 1, &port, &end) != 0 || port > 65535 || (port == 0 && !bind))
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
    switch (parse_hostport(s, 0, ss, len)) {
    case HP_OK:   return 0;
    case HP_PORT: return -ERANGE;
    default:      return -EINVAL;
    }
}

int cg_parse_bind(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    switch (parse_hostport(s, 1, ss, len)) {
    case HP_OK:   return 0;
    case HP_PORT: return -ERANGE;
    default:      return -EINVAL;
    }
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

struct parser;
struct key_desc;

/* Where a value comes from, for messages: "FILE:LINE: [LABEL] KEY: ". */
struct keyctx {
    struct parser         *p;
    const char            *label;
    const char            *key;
    unsigned int           line;
};

enum key_type {
    KEY_UINT,       /* unsigned int, decimal, min..max */
    KEY_BOOL,       /* int 0/1 */
    KEY_DURATION,   /* uint64_t ms, min..max */
    KEY_SIZE,       /* uint64_t, k/m/g suffixes, min..max */
    KEY_ENUM,       /* int-sized enum, index into choices */
    KEY_STRING,     /* char[size], non-empty */
    KEY_CUSTOM,     /* set() does the work */
};

/* One key of a section kind. A row per key; defaults live here and nowhere else. */
struct key_desc {
    const char            *name;
    enum key_type          type;
    size_t                 offset;      /* of the field in the section's struct */
    size_t                 size;        /* KEY_STRING: the field's size */
    const char            *def;         /* default, as written in the file; NULL = required */
    uint64_t               min, max;    /* KEY_UINT, KEY_DURATION, KEY_SIZE */
    const char *const     *choices;     /* KEY_ENUM: NULL-terminated names */
    /* KEY_CUSTOM: parses <value> into <obj>; reports through key_error(); returns 0/-1. */
    int                  (*set)(const struct keyctx *c, void *obj, const char *value);
    /* An override: when absent from its section, the key takes the value of the key of
     * the same name in this section kind ("admission", "breaker"). */
    const char            *inherit;
};

/* One kind of section: [gateway], [listener NAME], [upstream NAME]. */
struct section_kind {
    const char            *kind;
    int                    named;       /* 1: [kind NAME], any number; 0: [kind], at most one */
    const struct key_desc *keys;
    size_t                 nkeys;
    void                *(*create)(struct parser *p, const char *name, unsigned int line,
                                    size_t *index);
    void                *(*get)(struct parser *p, size_t index);
};

/* A section header seen in the file. */
struct section {
    const struct section_kind *kind;    /* NULL: ignored (already reported) */
    char                   label[SHOW_MAX + 16];    /* "listener web", for messages */
    char                   name[CG_CONF_NAME_MAX];
    unsigned int           line;
    size_t                 index;       /* of its object, for kind->get() */
    unsigned int          *key_line;    /* [nkeys]: where each key was set, 0 = not set */
    unsigned char         *key_bad;     /* [nkeys]: 1 when its value was rejected */
};

struct perror_ {
    unsigned int           line;        /* UINT_MAX: about the whole file */
    size_t                 seq;
    char                  *msg;
};

struct parser {
    const char            *file;
    const char            *text;
    size_t                 len, pos;
    unsigned int           lineno;
    unsigned int           key_line;    /* the line handed to inih as a key line, or 0 */
    int                    handled;     /* inih called us back for key_line */
    char                   raw[SHOW_MAX + 4];       /* key_line's text, for messages */
    struct cg_config      *cfg;
    struct section        *sections;
    size_t                 nsections, cap_sections;
    long                   cur;         /* index into sections; -1: before any; -2: ignored */
    unsigned int           listener_headers;
    struct perror_        *errs;
    size_t                 nerrs, cap_errs;
    int                    nomem;
};

#define CUR_NONE    (-1)
#define CUR_IGNORED (-2)

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
static void key_error(const struct keyctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    error_at(c->p, c->line, "[%s] %s: %s", c->label, c->key, msg);
}

/* Copies <s> into <buf> for quoting in a message, cut to SHOW_MAX characters. */
static const char *show(const char *s, char *buf, size_t size)
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
static int is_valid_name(const char *s)
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

    err = parse_u64(value, &v, &end);
    if (err == -EINVAL || *end) {
        key_error(c, "\"%s\" is not a number (expected %llu..%llu)",
                  show(value, buf, sizeof(buf)), (unsigned long long)k->min,
                  (unsigned long long)k->max);
        return -1;
    }
    if (err || v < k->min || v > k->max) {
        key_error(c, "\"%s\" is out of range (expected %llu..%llu)",
                  show(value, buf, sizeof(buf)), (unsigned long long)k->min,
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
        key_error(c, "\"%s\" is not a duration (e.g. 500ms, 5s, 2m)",
                  show(value, buf, sizeof(buf)));
        return -1;
    }
    if (err || v < k->min || v > k->max) {
        key_error(c, "\"%s\" is out of range (expected %s..%s)", show(value, buf, sizeof(buf)),
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
        key_error(c, "\"%s\" is not a size (e.g. 4096, 64k, 1m, 1g)",
                  show(value, buf, sizeof(buf)));
        return -1;
    }
    if (err || v < k->min || v > k->max) {
        key_error(c, "\"%s\" is out of range (expected %s..%s)", show(value, buf, sizeof(buf)),
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
    key_error(c, "\"%s\" is not a boolean (expected on/off, yes/no, true/false, 1/0)",
              show(value, buf, sizeof(buf)));
    return -1;
}

/* Reports "<value> is not one of: a, b, c". */
static void choice_error(const struct keyctx *c, const char *value, const char *const *choices)
{
    char buf[SHOW_MAX + 4], list[256];
    size_t len = 0, i;

    list[0] = '\0';
    for (i = 0; choices[i] && len < sizeof(list); i++)
        len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s", i ? ", " : "",
                                choices[i]);
    key_error(c, "\"%s\" is not one of: %s", show(value, buf, sizeof(buf)), list);
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
    choice_error(c, value, k->choices);
    return -1;
}

static int set_string(const struct keyctx *c, const struct key_desc *k, void *field,
                      const char *value)
{
    char buf[SHOW_MAX + 4];
    size_t n = strlen(value);

    if (n == 0) {
        key_error(c, "empty value");
        return -1;
    }
    if (n >= k->size) {
        key_error(c, "\"%s\" is too long (at most %zu characters)",
                  show(value, buf, sizeof(buf)), k->size - 1);
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
    err = parse_u64(value, &v, &end);
    if (err == -EINVAL || *end) {
        key_error(c, "\"%s\" is not a number (expected auto or 1..%d)",
                  show(value, buf, sizeof(buf)), WORKERS_MAX);
        return -1;
    }
    if (err || v < 1 || v > WORKERS_MAX) {
        key_error(c, "\"%s\" is out of range (expected auto or 1..%d)",
                  show(value, buf, sizeof(buf)), WORKERS_MAX);
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
        choice_error(c, value, log_level_choices);
        return -1;
    }
    gw->log_level = (enum cg_log_level)lvl;
    return 0;
}

/* Reports a host:port that parse_hostport() refused with <why>. */
static void hostport_error(const struct keyctx *c, const char *value, enum hp_error why,
                           int bind)
{
    char buf[SHOW_MAX + 4];

    show(value, buf, sizeof(buf));
    if (why == HP_HOST)
        key_error(c, "\"%s\" is not host:port (host must be an IPv4 address, [IPv6 address]%s"
                  " or localhost)", buf, bind ? ", *" : "");
    else if (why == HP_PORT)
        key_error(c, "\"%s\" is not host:port (port must be %d..65535)", buf, bind ? 0 : 1);
    else
        key_error(c, "\"%s\" is not host:port", buf);
}

static int set_bind(const struct keyctx *c, void *obj, const char *value)
{
    struct cg_listener_conf *l = obj;
    enum hp_error why;

    why = parse_hostport(value, 1, &l->addr, &l->addrlen);
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

    if (!is_valid_name(value)) {
        key_error(c, "\"%s\" is not an upstream name (expected [A-Za-z0-9_.-], at most %d"
                  " characters)", show(value, buf, sizeof(buf)), CG_CONF_NAME_MAX - 1);
        return -1;
    }
    strcpy(l->upstream_name, value);
    return 0;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
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
        if (strncmp(tok, "weight=", 7) == 0) {
            if (skip_weight)            /* its server was already reported */
                continue;
            if (!last) {
                key_error(c, "\"%s\" follows no server", show(tok, buf, sizeof(buf)));
                bad = 1;
                continue;
            }
            if (weighted) {
                key_error(c, "\"%s\": %s already has a weight", show(tok, buf, sizeof(buf)),
                          last->name);
                bad = 1;
                continue;
            }
            weighted = 1;
            err = parse_u64(tok + 7, &w, &end);
            if (err == -EINVAL || *end) {
                key_error(c, "weight \"%s\" is not a number (expected 1..256)",
                          show(tok + 7, buf, sizeof(buf)));
                bad = 1;
            } else if (err || w < 1 || w > 256) {
                key_error(c, "weight \"%s\" is out of range (expected 1..256)",
                          show(tok + 7, buf, sizeof(buf)));
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
        why = parse_hostport(tok, 0, &servers[n].addr, &servers[n].addrlen);
        if (why != HP_OK || tlen >= sizeof(servers[n].name)) {
            hostport_error(c, tok, why == HP_OK ? HP_FORMAT : why, 0);
            bad = 1;
            continue;
        }
        for (i = 0; i < n; i++)
            if (same_addr(&servers[i].addr, &servers[n].addr))
                break;
        if (i < n) {
            key_error(c, "\"%s\" is listed twice", show(tok, buf, sizeof(buf)));
            bad = 1;
            continue;
        }
        memcpy(servers[n].name, tok, tlen + 1);
        servers[n].weight = 1;
        skip_weight = 0;
        last = &servers[n++];
    }
    if (n == 0 && !bad) {
        key_error(c, "no servers listed (expected host:port [weight=N], ...)");
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
            key_error(c, "\"%s\" is not an address or range (expected 10.0.0.2, "
                      "10.0.0.2-10.0.0.250 or an IPv6 address)", show(tok, buf, sizeof(buf)));
            bad = 1;
            continue;
        }
        if (fam != fam2) {
            key_error(c, "\"%s\": a range cannot mix IPv4 and IPv6",
                      show(tok, buf, sizeof(buf)));
            bad = 1;
            continue;
        }
        alen = fam == AF_INET ? 4 : 16;
        r->family = (sa_family_t)fam;
        r->count = dash ? source_span(r->first, last, alen) : 1;
        if (!dash)
            memcpy(last, r->first, alen);
        if (r->count == 0) {
            key_error(c, "\"%s\": the range is reversed or longer than %u addresses",
                      show(tok, buf, sizeof(buf)), CG_SOURCE_MAX);
            bad = 1;
            continue;
        }
        if (!memcmp(r->first, (const unsigned char[16]){ 0 }, alen)) {
            key_error(c, "\"%s\": the unspecified address is not a source (leave source "
                      "out to let the kernel pick)", show(tok, buf, sizeof(buf)));
            bad = 1;
            continue;
        }
        if (!source_bindable(fam, r->first) || !source_bindable(fam, last)) {
            key_error(c, "\"%s\": %s", show(tok, buf, sizeof(buf)), strerror(EADDRNOTAVAIL));
            bad = 1;
            continue;
        }
        *(fam == AF_INET ? &total4 : &total6) += r->count;
        n++;
    }
    if (!bad && (total4 > CG_SOURCE_MAX || total6 > CG_SOURCE_MAX)) {
        key_error(c, "more than %u addresses", CG_SOURCE_MAX);
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
        key_error(c, "%s", msg);
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
            key_error(c, "\"%.*s\" is not an origin (expected scheme://host[:port] or *)",
                      (int)(n < SHOW_MAX ? n : SHOW_MAX), s);
            return -1;
        }
        s += n;
    }
    if (strspn(value, " \t,") == strlen(value)) {
        key_error(c, "empty value (use * to allow any origin)");
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
        key_error(c, "\"%s\" is not a path (expected /PATH or off)", show(value, buf, sizeof(buf)));
        return -1;
    }
    if (n >= sizeof(l->health_path)) {
        key_error(c, "\"%s\" is too long (at most %zu characters)", show(value, buf, sizeof(buf)),
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
        key_error(c, "\"%s\" is not a permission mode (expected octal 0..0777, e.g. 0660)",
                  show(value, buf, sizeof(buf)));
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
    if (parse_u64(value, &v, &end) == 0 && !*end && v < UINT_MAX) {
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
    key_error(c, "unknown %s \"%s\"", group ? "group" : "user", show(value, buf, sizeof(buf)));
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
    why = parse_hostport(value, 1, &gw->metrics_addr, &gw->metrics_addrlen);
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

    err = parse_u64(value, &v, &end);
    if (err == -EINVAL || (*end && strcmp(end, "%") != 0)) {
        key_error(c, "\"%s\" is not a percentage (expected %llu..%llu, e.g. 90%%)",
                  show(value, buf, sizeof(buf)), (unsigned long long)min,
                  (unsigned long long)max);
        return -1;
    }
    if (err || v < min || v > max) {
        key_error(c, "\"%s\" is out of range (expected %llu..%llu%%)",
                  show(value, buf, sizeof(buf)), (unsigned long long)min,
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
        key_error(c, "\"%s\" is not a size, auto or off (e.g. 4g)",
                  show(value, buf, sizeof(buf)));
        return -1;
    }
    if (err || (v && v < (1ull << 20)) || v > (1ull << 50)) {
        key_error(c, "\"%s\" is out of range (expected 1m..1048576g, or 0 = off)",
                  show(value, buf, sizeof(buf)));
        return -1;
    }
    b->memory_auto = 0;
    b->memory_watermark = v;
    return 0;
}

/* ------------------------------------------------------------------ key tables */

#define GW(f)  offsetof(struct cg_gateway_conf, f)
#define LS(f)  offsetof(struct cg_listener_conf, f)
#define UP(f)  offsetof(struct cg_upstream_conf, f)
#define AD(f)  offsetof(struct cg_admission_conf, f)
#define BR(f)  offsetof(struct cg_breaker_conf, f)
#define SEC    1000ull
#define MIN    (60 * SEC)
#define HOUR   (60 * MIN)

static const char *const mode_choices[] = { "tcp", "websocket", NULL };
static const char *const balance_choices[] = { "roundrobin", "leastconn", "random", NULL };
static const char *const uproto_choices[] = { "websocket", "tcp", NULL };
static const char *const rate_action_choices[] = { "delay", "close", NULL };

static const char *const reject_choices[] = { "close", "rst", NULL };

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
};

static const struct key_desc listener_keys[] = {
    { .name = "bind", .type = KEY_CUSTOM, .def = NULL, .set = set_bind },
    { .name = "mode", .type = KEY_ENUM, .offset = LS(mode), .def = "tcp",
      .choices = mode_choices },
    { .name = "upstream", .type = KEY_CUSTOM, .def = NULL, .set = set_upstream_ref },
    { .name = "idle_timeout", .type = KEY_DURATION, .offset = LS(idle_timeout_ms),
      .def = "300s", .min = 0, .max = 7 * 24 * HOUR },
    { .name = "backlog", .type = KEY_UINT, .offset = LS(backlog), .def = "511",
      .min = 1, .max = 65535 },
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
      .def = "1m", .min = 125, .max = 1ull << 30 },
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
    ADM_LIMIT_KEYS(LA, "admission"),
};

static const struct key_desc upstream_keys[] = {
    { .name = "servers", .type = KEY_CUSTOM, .def = NULL, .set = set_servers },
    { .name = "source", .type = KEY_CUSTOM, .def = "", .set = set_source },
    { .name = "balance", .type = KEY_ENUM, .offset = UP(balance), .def = "roundrobin",
      .choices = balance_choices },
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
};

_Static_assert(sizeof(enum cg_listener_mode) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_balance) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_upstream_protocol) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_rate_action) == sizeof(int), "KEY_ENUM writes an int");
_Static_assert(sizeof(enum cg_reject_how) == sizeof(int), "KEY_ENUM writes an int");
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

static const struct section_kind kinds[] = {
    { "gateway",   0, KEYS(gateway_keys),   gateway_create,   gateway_get },
    { "listener",  1, KEYS(listener_keys),  listener_create,  listener_get },
    { "upstream",  1, KEYS(upstream_keys),  upstream_create,  upstream_get },
    { "bpf",       0, KEYS(bpf_keys),       bpf_create,       bpf_get },
    { "admission", 0, KEYS(admission_keys), admission_create, admission_get },
    { "breaker",   0, KEYS(breaker_keys),   breaker_create,   breaker_get },
};

#define KIND_GATEWAY   (&kinds[0])
#define KIND_LISTENER  (&kinds[1])
#define KIND_UPSTREAM  (&kinds[2])
#define KIND_BPF       (&kinds[3])
#define KIND_ADMISSION (&kinds[4])
#define KIND_BREAKER   (&kinds[5])

/* 1 for the kinds that exist once, unnamed, and get their defaults before parsing. */
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
             show(name, shown, sizeof(shown)));

    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
        if (strcmp(kname, kinds[i].kind) == 0)
            kind = &kinds[i];
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
    if (kind->named && !is_valid_name(name)) {
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
                     show(buf, shown, sizeof(shown)));
            p->cur = CUR_IGNORED;
            return str;
        }
        *close = '\0';
        begin_section(p, buf + 1);
        return str;
    }

    p->key_line = p->lineno;
    show(buf, p->raw, sizeof(p->raw));
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

    *exact = same_addr(a, b);
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

static void check_listeners(struct parser *p)
{
    struct cg_config *cfg = p->cfg;
    const struct section *s, *t;
    struct cg_listener_conf *l, *m;
    unsigned int line, tline;
    size_t i, j, k;
    int bad, exact;

    for (i = 0; i < p->nsections; i++) {
        s = &p->sections[i];
        if (s->kind != KIND_LISTENER)
            continue;
        l = &cfg->listeners[s->index];

        line = key_line_of(s, "upstream", &bad);
        if (line && !bad) {
            for (k = 0; k < cfg->nupstreams; k++)
                if (strcmp(cfg->upstreams[k].name, l->upstream_name) == 0)
                    break;
            if (k < cfg->nupstreams)
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

/* Gives the override keys that section <s> left out the value of their [admission] or
 * [breaker] key, set or default. */
static void inherit_keys(struct parser *p, const struct section *s)
{
    const struct section_kind *kind = s->kind, *parent;
    void *obj = kind->get(p, s->index), *pobj;
    size_t k, j;

    for (k = 0; k < kind->nkeys; k++) {
        const struct key_desc *key = &kind->keys[k];

        if (!key->inherit || s->key_line[k])
            continue;
        parent = strcmp(key->inherit, "admission") == 0 ? KIND_ADMISSION : KIND_BREAKER;
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

void cg_config_free(struct cg_config *cfg)
{
    size_t i;

    if (!cfg)
        return;
    for (i = 0; i < cfg->nupstreams; i++) {
        free(cfg->upstreams[i].servers);
        free(cfg->upstreams[i].sources);
    }
    for (i = 0; i < cfg->nlisteners; i++) {
        cg_routes_free(cfg->listeners[i].routes);
        free(cfg->listeners[i].allowed_origins);
    }
    free(cfg->upstreams);
    free(cfg->listeners);
    free(cfg);
}
