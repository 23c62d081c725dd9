/* gateway/config/config-int.h — what the configuration's engine (config.c: the reader,
 * the value parsers, the checks) and its key tables (keys.c: one table per section kind,
 * and the setters of keys that need their own code) share. Not for use outside them. */
#ifndef CG_CONFIG_INT_H
#define CG_CONFIG_INT_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/parse.h"
#include "config/limits.h"

struct cg_config;

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24      /* linux/in.h */
#endif

#define CONF_MAX_LINE  4096             /* longest line we accept, newline excluded */
#define CONF_MAX_FILE  (16u << 20)      /* cg_config_load() refuses larger files */
#define WORKERS_MAX    1024
#define SHOW_MAX       80               /* longest value quoted back in a message */

enum hp_error {
    HP_OK,
    HP_FORMAT,      /* not host:port at all */
    HP_HOST,        /* host is not an address we accept */
    HP_PORT,        /* port is not a number in range */
};

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

/* The section kinds and their key tables (keys.c). */
extern const struct section_kind cg_conf__kinds[];
extern const size_t cg_conf__nkinds;

/* The engine's helpers that the key tables' setters use (config.c). */
void cg_conf__choice_error(const struct keyctx *c, const char *value, const char *const *choices);
int cg_conf__is_valid_name(const char *s);
void cg_conf__key_error(const struct keyctx *c, const char *fmt, ...);
enum hp_error cg_conf__parse_hostport(const char *s, int bind, struct sockaddr_storage *ss,
                                    socklen_t *len);
int cg_conf__same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b);
const char *cg_conf__show(const char *s, char *buf, size_t size);

#endif
