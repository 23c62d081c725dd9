/* tests/test_tokenbucket.c — token buckets on a clock the test drives. */
#include <check.h>
#include <stdint.h>

#include "gateway/guard/tokenbucket.h"

START_TEST(test_tb_take_and_refill)
{
    struct cg_tokenbucket tb;
    int i;

    cg_tb_init(&tb, 10, 5, 1000);           /* 10/s, burst 5, full */
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(cg_tb_take(&tb, 1, 1000), 1);
    ck_assert_int_eq(cg_tb_take(&tb, 1, 1000), 0);
    ck_assert_uint_eq(cg_tb_wait_ms(&tb, 1, 1000), 100);
    ck_assert_int_eq(cg_tb_take(&tb, 1, 1099), 0);
    ck_assert_int_eq(cg_tb_take(&tb, 1, 1100), 1);
    /* never more than the burst, however long it waited */
    ck_assert_uint_eq(cg_tb_available(&tb, 1000000), 5);
    ck_assert_int_eq(cg_tb_take(&tb, 6, 1000000), 0);
    ck_assert_int_eq(cg_tb_take(&tb, 5, 1000000), 1);
    /* a clock going backwards refills nothing */
    ck_assert_uint_eq(cg_tb_available(&tb, 999000), 0);
}
END_TEST

START_TEST(test_tb_slow_rate)
{
    struct cg_tokenbucket tb;

    cg_tb_init(&tb, 1, 1, 0);               /* 1/s */
    ck_assert_int_eq(cg_tb_take(&tb, 1, 0), 1);
    ck_assert_uint_eq(cg_tb_wait_ms(&tb, 1, 0), 1000);
    ck_assert_uint_eq(cg_tb_wait_ms(&tb, 1, 400), 600);
    ck_assert_int_eq(cg_tb_take(&tb, 1, 999), 0);
    ck_assert_int_eq(cg_tb_take(&tb, 1, 1000), 1);
}
END_TEST

START_TEST(test_tb_debt)
{
    struct cg_tokenbucket tb;

    cg_tb_init(&tb, 1000, 1000, 0);         /* bytes: 1000/s, burst 1000 */
    cg_tb_force(&tb, 1500, 0);              /* 500 in debt */
    ck_assert_uint_eq(cg_tb_available(&tb, 0), 0);
    ck_assert_uint_eq(cg_tb_wait_ms(&tb, 1, 0), 501);
    ck_assert_uint_eq(cg_tb_wait_ms(&tb, 1, 500), 1);
    ck_assert_int_eq(cg_tb_take(&tb, 1, 501), 1);
    /* debt is capped at one burst */
    cg_tb_force(&tb, 1000000, 501);
    ck_assert_uint_eq(cg_tb_wait_ms(&tb, 1, 501), 1001);
    /* asking more than the burst waits for a full bucket */
    cg_tb_init(&tb, 100, 10, 0);
    ck_assert_uint_eq(cg_tb_wait_ms(&tb, 1000, 0), 0);
}
END_TEST

START_TEST(test_tb_unlimited_and_defaults)
{
    struct cg_tokenbucket tb;

    cg_tb_init(&tb, 0, 0, 0);
    ck_assert(cg_tb_is_unlimited(&tb));
    ck_assert_int_eq(cg_tb_take(&tb, UINT64_MAX, 0), 1);
    cg_tb_force(&tb, 1000, 0);
    ck_assert_uint_eq(cg_tb_wait_ms(&tb, 1000, 0), 0);
    cg_tb_init(&tb, 50, 0, 0);              /* burst 0 = the rate */
    ck_assert_uint_eq(cg_tb_available(&tb, 0), 50);
    cg_tb_init(&tb, 1ull << 40, 0, 0);      /* huge rates do not overflow */
    ck_assert_int_eq(cg_tb_take(&tb, 1ull << 40, 0), 1);
    ck_assert_int_eq(cg_tb_take(&tb, 1ull << 40, UINT64_MAX / 2), 1);
}
END_TEST

Suite *tokenbucket_suite(void)
{
    Suite *s = suite_create("tokenbucket");
    TCase *tc = tcase_create("tokenbucket");

    tcase_add_test(tc, test_tb_take_and_refill);
    tcase_add_test(tc, test_tb_slow_rate);
    tcase_add_test(tc, test_tb_debt);
    tcase_add_test(tc, test_tb_unlimited_and_defaults);
    suite_add_tcase(s, tc);
    return s;
}
