/* common/rand.h — fast per-thread pseudo-random numbers for values that must be hard for a
 * peer to guess but need not be secret: WebSocket mask keys, request ids, the jitter of
 * Retry-After. Not for keys or tokens (use getrandom() for those). */
#ifndef CG_RAND_H
#define CG_RAND_H

#include <stddef.h>
#include <stdint.h>

/* The next 64 bits of this thread's xorshift128+, seeded from getrandom() at first use. */
uint64_t cg_rand64(void);

/* Fills <p> with <n> bytes of cg_rand64(). */
void cg_rand_bytes(void *p, size_t n);

/* A number in [0, n) (0 when n is 0); the modulo bias is below 2^-32 for n < 2^32. */
uint64_t cg_rand_below(uint64_t n);

#endif
