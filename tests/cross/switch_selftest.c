/* tests/cross/switch_selftest.c — the context switch alone, for other architectures.
 *
 * Built with a cross compiler and run under qemu-user (`make check-cross`), so that the
 * aarch64 switch is exercised on an x86_64 machine. Needs only libc: two contexts
 * ping-pong; values the compiler keeps in callee-saved registers (general and FP) must
 * survive every switch, each side keeps its own FP rounding mode, and the value passed
 * through the switch arrives. Prints "N passed, M failed" and exits non-zero on failure.
 */
#include <fenv.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "coro/ctx.h"

#define ROUNDS 10000

static struct coro_ctx main_ctx, co_ctx;
static int failures, checks;

static void check(int ok, const char *what)
{
    checks++;
    if (!ok) {
        failures++;
        if (failures < 10)
            fprintf(stderr, "FAIL: %s\n", what);
    }
}

/* Many values live across the switch: the compiler has to keep them in callee-saved
 * registers (x19-x28 / rbx, r12-r15; d8-d15 / spilled) or on the stack. */
static void co_entry(void)
{
    volatile uint64_t seed = 0x1234;
    uint64_t a = seed * 3, b = seed * 5, c = seed * 7, d = seed * 11, e = seed * 13;
    uint64_t f = seed * 17, g = seed * 19, h = seed * 23, i = seed * 29, j = seed * 31;
    double x = (double)seed / 3.0, y = (double)seed / 7.0, z = (double)seed / 9.0;
    int n, got;

    fesetround(FE_TOWARDZERO);
    for (n = 0; n < ROUNDS; n++) {
        got = coro__switch(&co_ctx, &main_ctx, n);
        check(got == n + 1000, "value passed into the coroutine");
        check(fegetround() == FE_TOWARDZERO, "coroutine rounding mode");
        a += 1; b += 1; c += 1; d += 1; e += 1; f += 1; g += 1; h += 1; i += 1; j += 1;
        x += 1.0; y += 1.0; z += 1.0;
    }
    check(a == seed * 3 + ROUNDS && j == seed * 31 + ROUNDS && e == seed * 13 + ROUNDS,
          "general registers in the coroutine");
    check(b + c + d + f + g + h + i == seed * (5 + 7 + 11 + 17 + 19 + 23 + 29) + 7 * ROUNDS,
          "more general registers in the coroutine");
    check(x == (double)seed / 3.0 + ROUNDS && z == (double)seed / 9.0 + ROUNDS &&
          y == (double)seed / 7.0 + ROUNDS, "FP registers in the coroutine");
    coro__switch(&co_ctx, &main_ctx, -1);
    abort();
}

int main(void)
{
    size_t size = 256 * 1024;
    char *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    volatile uint64_t seed = 0x9876;
    uint64_t a = seed * 3, b = seed * 5, c = seed * 7, d = seed * 11, e = seed * 13;
    uint64_t f = seed * 17, g = seed * 19, h = seed * 23, i = seed * 29, j = seed * 31;
    double x = (double)seed / 3.0, y = (double)seed / 7.0, z = (double)seed / 9.0;
    int n, got;

    if (stack == MAP_FAILED)
        return 2;
    fesetround(FE_UPWARD);
    coro__ctx_make(&co_ctx, stack, stack + size, co_entry);
    fesetround(FE_TONEAREST);
    for (n = 0; n < ROUNDS; n++) {
        got = coro__switch(&main_ctx, &co_ctx, n == 0 ? 0 : n - 1 + 1000);
        check(got == n, "value passed out of the coroutine");
        check(fegetround() == FE_TONEAREST, "main rounding mode");
        a += 2; b += 2; c += 2; d += 2; e += 2; f += 2; g += 2; h += 2; i += 2; j += 2;
        x += 2.0; y += 2.0; z += 2.0;
    }
    got = coro__switch(&main_ctx, &co_ctx, ROUNDS - 1 + 1000);
    check(got == -1, "coroutine finished");
    check(a == seed * 3 + 2 * ROUNDS && j == seed * 31 + 2 * ROUNDS, "general registers");
    check(b + c + d + e + f + g + h + i ==
          seed * (5 + 7 + 11 + 13 + 17 + 19 + 23 + 29) + 8 * 2 * ROUNDS, "more registers");
    check(x == (double)seed / 3.0 + 2 * ROUNDS && y == (double)seed / 7.0 + 2 * ROUNDS &&
          z == (double)seed / 9.0 + 2 * ROUNDS, "FP registers");
    printf("switch selftest (%s): %d passed, %d failed\n", CORO_SWITCH_NAME,
           checks - failures, failures);
    return failures ? 1 : 0;
}
