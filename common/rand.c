/* common/rand.c — per-thread xorshift128+ (Vigna), seeded from getrandom(). A syscall per
 * mask key or request id would cost more than the frame it masks. */
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/rand.h"

static __thread uint64_t rng[2];

uint64_t cg_rand64(void)
{
    uint64_t a, b;

    if (!rng[0] && !rng[1]) {
        if (getrandom(rng, sizeof(rng), GRND_NONBLOCK) != sizeof(rng)) {
            struct timespec ts;

            clock_gettime(CLOCK_MONOTONIC, &ts);
            rng[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)gettid();
            rng[1] = (uint64_t)ts.tv_sec ^ 0x2545f4914f6cdd1dull;
        }
        rng[0] |= 1;
    }
    a = rng[0];
    b = rng[1];
    rng[0] = b;
    a ^= a << 23;
    rng[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
    return rng[1] + b;
}

void cg_rand_bytes(void *p, size_t n)
{
    uint8_t *o = p;
    uint64_t v = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        if (i % 8 == 0)
            v = cg_rand64();
        o[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t cg_rand_below(uint64_t n)
{
    return n ? cg_rand64() % n : 0;
}
