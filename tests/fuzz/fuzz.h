/* tests/fuzz/fuzz.h — what the libFuzzer targets share.
 *
 * Each tests/fuzz/fuzz_NAME.c drives the project's real code (linked from the same
 * sources as the daemon, instrumented) with the bytes libFuzzer makes, in process: in
 * memory or over socket pairs, with no threads, except stats_cmd, which needs a running
 * daemon (one worker thread; a Unix socket in /tmp and a listener on 127.0.0.1, both
 * started once per process). `make fuzz FUZZ_S=60` runs every target for FUZZ_S seconds
 * from its seed corpus, tests/fuzz/corpus/NAME/; `make test` replays every corpus (each
 * file once), so a crash once found and added there stays fixed. An invariant that does not
 * hold aborts with FUZZ_CHECK, which libFuzzer reports as a crash with the input.
 */
#ifndef CG_FUZZ_H
#define CG_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond, ...)                                                             \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                                 \
            fputc('\n', stderr);                                                          \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Splits an input into pieces the way a network would deliver it: the first byte seeds
 * the piece sizes (1..64 bytes, or everything at once when it is 0), the rest is the
 * payload. */
struct fuzz_chunks {
    const uint8_t *p;
    size_t         left;
    uint32_t       seed;
};

static inline void fuzz_chunks_init(struct fuzz_chunks *c, const uint8_t *data, size_t size)
{
    c->seed = size ? data[0] : 0;
    c->p = size ? data + 1 : data;
    c->left = size ? size - 1 : 0;
}

/* The next piece (*<len> bytes), or NULL at the end. */
static inline const uint8_t *fuzz_chunks_next(struct fuzz_chunks *c, size_t *len)
{
    const uint8_t *p = c->p;
    size_t n;

    if (!c->left)
        return NULL;
    if (c->seed == 0) {
        n = c->left;
    } else {
        c->seed = c->seed * 1103515245u + 12345u;
        n = 1 + (c->seed >> 16) % 64;
        if (n > c->left)
            n = c->left;
    }
    c->p += n;
    c->left -= n;
    *len = n;
    return p;
}

#endif
