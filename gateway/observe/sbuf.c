/* gateway/observe/sbuf.c — the bounded text buffer (observe/sbuf.h). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "observe/sbuf.h"

void cg_sbuf_init(struct cg_sbuf *b, size_t max)
{
    b->p = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max;
    b->overflow = 0;
}

void cg_sbuf_deinit(struct cg_sbuf *b)
{
    free(b->p);
    cg_sbuf_init(b, b->max);
}

static int sbuf_reserve(struct cg_sbuf *b, size_t more)
{
    size_t cap;
    char *p;

    if (b->overflow)
        return -ENOBUFS;
    if (more > b->max || b->len + more > b->max) {
        b->overflow = 1;
        return -ENOBUFS;
    }
    if (b->len + more + 1 <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    p = realloc(b->p, cap);
    if (!p) {
        b->overflow = 1;
        return -ENOBUFS;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

int cg_sbuf_add(struct cg_sbuf *b, const void *s, size_t len)
{
    if (sbuf_reserve(b, len) < 0)
        return -ENOBUFS;
    memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

int cg_sbuf_printf(struct cg_sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->overflow)
        return -ENOBUFS;
    va_start(ap, fmt);
    n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->overflow = 1;
        return -ENOBUFS;
    }
    if (b->p && (size_t)n < b->cap - b->len) {
        if (b->len + (size_t)n > b->max) {
            b->p[b->len] = '\0';
            b->overflow = 1;
            return -ENOBUFS;
        }
        b->len += (size_t)n;
        return 0;
    }
    if (sbuf_reserve(b, (size_t)n) < 0)
        return -ENOBUFS;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int cg_sbuf_json_str(struct cg_sbuf *b, const char *s)
{
    const unsigned char *p;

    cg_sbuf_add(b, "\"", 1);
    for (p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            cg_sbuf_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            cg_sbuf_printf(b, "\\u%04x", *p);
        else
            cg_sbuf_add(b, p, 1);
    }
    return cg_sbuf_add(b, "\"", 1);
}
