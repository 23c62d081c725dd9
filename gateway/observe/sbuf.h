/* gateway/observe/sbuf.h — a bounded, growable text buffer for the answers of the stats
 * socket and the metrics renderings, with JSON string escaping. */
#ifndef CG_SBUF_H
#define CG_SBUF_H

#include <stddef.h>

/* A growable text buffer that refuses to grow past <max> bytes: the first append that
 * would sets <overflow> and is dropped, as are all later ones. */
struct cg_sbuf {
    char   *p;          /* NUL-terminated while len > 0; owned */
    size_t  len;
    size_t  cap;
    size_t  max;
    int     overflow;   /* 1: past <max>, or out of memory */
};

/* Prepares an empty <b> (caller's storage) that holds at most <max> bytes. */
void cg_sbuf_init(struct cg_sbuf *b, size_t max);

/* Frees what <b> holds and leaves it empty. Idempotent. */
void cg_sbuf_deinit(struct cg_sbuf *b);

/* Appends <len> bytes at <s> / formatted text. Return 0 or -ENOBUFS (overflow set). */
int cg_sbuf_add(struct cg_sbuf *b, const void *s, size_t len);
int cg_sbuf_printf(struct cg_sbuf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends <s> as a JSON string, quotes included. Returns 0 or -ENOBUFS. */
int cg_sbuf_json_str(struct cg_sbuf *b, const char *s);

#endif
