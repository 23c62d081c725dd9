/* tests/test_slab.c — the fixed-size object caches (coro/slab.h): distinct zeroed objects,
 * freed slots reused, empty chunks given back with one kept, and what destroy reports. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "coro/slab.h"

#define N 5000      /* objects of 200 bytes: several 256 KiB chunks */
#define CHUNK ((size_t)256 * 1024)   /* coro/slab.c's */

#ifndef __SANITIZE_ADDRESS__
/* Resident pages of the CHUNK at <c> (4 KiB pages; the tests run on x86_64 and aarch64
 * with 4 KiB pages). */
static int resident_pages(void *c)
{
    unsigned char vec[CHUNK / 4096];
    int n = 0;
    size_t i;

    ck_assert_int_eq(mincore(c, CHUNK, vec), 0);
    for (i = 0; i < sizeof(vec); i++)
        n += vec[i] & 1;
    return n;
}
#endif

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(void *const *)a, y = (uintptr_t)*(void *const *)b;

    return x < y ? -1 : x > y;
}

/* Bytes are compared with memcmp and asserted once per object: every ck_assert is a write
 * to Check's pipe, and a million of them (one per byte) took longer than Check's timeout
 * under ASan on a busy machine. */
START_TEST(test_slab_distinct_zeroed)
{
    static const unsigned char zero[200];
    struct coro_slab sl;
    void **p = malloc(N * sizeof(*p));
    size_t i;

    ck_assert_ptr_nonnull(p);
    coro_slab_init(&sl, 200);
    ck_assert_uint_eq(sl.size, 208);            /* rounded up to 16 */
    for (i = 0; i < N; i++) {
        p[i] = coro_slab_alloc(&sl);
        ck_assert_ptr_nonnull(p[i]);
        ck_assert_uint_eq((uintptr_t)p[i] % 16, 0);
        ck_assert_msg(memcmp(p[i], zero, sizeof(zero)) == 0, "object %zu not zeroed", i);
        memset(p[i], 0xa5, 200);                 /* dirty, for the reuse check below */
    }
    ck_assert_uint_eq(sl.used, N);
    qsort(p, N, sizeof(*p), cmp_ptr);
    for (i = 1; i < N; i++)                      /* no two objects overlap */
        if ((uintptr_t)p[i] - (uintptr_t)p[i - 1] < 208)
            ck_abort_msg("objects %p and %p overlap", p[i - 1], p[i]);
    /* A freed slot comes back zeroed. */
    coro_slab_free(&sl, p[7]);
    p[7] = coro_slab_alloc(&sl);
    ck_assert_msg(memcmp(p[7], zero, sizeof(zero)) == 0, "a reused slot is not zeroed");
    for (i = 0; i < N; i++)
        coro_slab_free(&sl, p[i]);
    ck_assert_uint_eq(sl.used, 0);
    ck_assert_uint_eq(coro_slab_destroy(&sl), 0);
    free(p);
}
END_TEST

#ifndef __SANITIZE_ADDRESS__
/* Chunks: empty ones are unmapped but one, which the next burst takes first. */
START_TEST(test_slab_chunks_given_back)
{
    struct coro_slab sl;
    void **p = malloc(N * sizeof(*p));
    void *again;
    char *first, *spare;
    size_t i;
    uint32_t peak;

    ck_assert_ptr_nonnull(p);
    coro_slab_init(&sl, 200);
    for (i = 0; i < N; i++)
        p[i] = coro_slab_alloc(&sl);
    peak = sl.nchunks;
    ck_assert_uint_ge(peak, (N * 208) / (256 * 1024) + 1);
    ck_assert_uint_le(peak, (N * 208) / (256 * 1024) + 2);
    first = (char *)((uintptr_t)p[0] & ~(uintptr_t)(CHUNK - 1));
    ck_assert_int_eq(resident_pages(first), CHUNK / 4096);   /* filled: all touched */
    for (i = 0; i < N; i++)
        coro_slab_free(&sl, p[i]);
    ck_assert_uint_eq(sl.nchunks, 1);            /* the spare */
    /* The spare keeps its mapping but not its pages (but the first, with the header);
     * p[0]'s chunk is either the spare or unmapped. */
    again = coro_slab_alloc(&sl);
    spare = (char *)((uintptr_t)again & ~(uintptr_t)(CHUNK - 1));
    ck_assert_int_le(resident_pages(spare), 1);
    coro_slab_free(&sl, again);
    again = coro_slab_alloc(&sl);
    ck_assert_uint_eq(sl.nchunks, 1);            /* taken from the spare */
    coro_slab_free(&sl, again);
    /* Objects still out at destroy are reported. */
    p[0] = coro_slab_alloc(&sl);
    p[1] = coro_slab_alloc(&sl);
    ck_assert_uint_eq(coro_slab_destroy(&sl), 2);
    ck_assert_uint_eq(sl.nchunks, 0);
    free(p);
}
END_TEST
#endif

Suite *slab_suite(void)
{
    Suite *s = suite_create("slab");
    TCase *tc = tcase_create("slab");

    tcase_add_test(tc, test_slab_distinct_zeroed);
#ifndef __SANITIZE_ADDRESS__
    tcase_add_test(tc, test_slab_chunks_given_back);
#endif
    suite_add_tcase(s, tc);
    return s;
}
