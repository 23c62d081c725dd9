/* tests/test_utf8.c — the streaming UTF-8 validator, whole and byte by byte. */
#include <check.h>
#include <string.h>

#include "common/utf8.h"

struct vec {
    const char *bytes;
    size_t      len;     /* 0: strlen */
    int         valid;
};

static const struct vec vecs[] = {
    { "", 0, 1 },
    { "plain ASCII, long enough to take the eight-byte path twice over", 0, 1 },
    { "h\xc3\xa9llo w\xc3\xb6rld", 0, 1 },                  /* 2-byte */
    { "\xe2\x9c\x93 \xe2\x82\xac", 0, 1 },                  /* 3-byte: check mark, euro */
    { "\xf0\x9d\x84\x9e", 0, 1 },                           /* U+1D11E */
    { "\xf4\x8f\xbf\xbf", 0, 1 },                           /* U+10FFFF, the last */
    { "\xef\xbb\xbf", 0, 1 },                               /* BOM is a character */
    { "\xed\x9f\xbf", 0, 1 },                               /* U+D7FF, before surrogates */
    { "\xee\x80\x80", 0, 1 },                               /* U+E000, after them */
    { "\x00", 1, 1 },                                       /* NUL is valid UTF-8 */
    { "\x80", 0, 0 },                                       /* lone continuation */
    { "\xbf", 0, 0 },
    { "\xc0\xaf", 0, 0 },                                   /* overlong '/' */
    { "\xc1\xbf", 0, 0 },
    { "\xe0\x80\xaf", 0, 0 },                               /* overlong 3-byte */
    { "\xe0\x9f\xbf", 0, 0 },
    { "\xf0\x80\x80\xaf", 0, 0 },                           /* overlong 4-byte */
    { "\xf0\x8f\xbf\xbf", 0, 0 },
    { "\xed\xa0\x80", 0, 0 },                               /* U+D800 surrogate */
    { "\xed\xbf\xbf", 0, 0 },                               /* U+DFFF */
    { "\xf4\x90\x80\x80", 0, 0 },                           /* U+110000 */
    { "\xf5\x80\x80\x80", 0, 0 },
    { "\xfe", 0, 0 },
    { "\xff", 0, 0 },
    { "\xc3", 0, 0 },                                       /* truncated */
    { "\xe2\x9c", 0, 0 },
    { "\xf0\x9d\x84", 0, 0 },
    { "\xc3\x28", 0, 0 },                                   /* bad continuation */
    { "\xe2\x28\xa1", 0, 0 },
    { "\xf0\x90\x28\xbc", 0, 0 },
    { "abcdefgh\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5-edited\xed\xa0\x80", 0, 0 },
    { "abcdefghijklmnop\x80", 0, 0 },                       /* error after the fast path */
};

START_TEST(test_utf8_whole)
{
    const struct vec *v = &vecs[_i];
    size_t len = v->len ? v->len : strlen(v->bytes);

    ck_assert_msg(cg_utf8_is_valid(v->bytes, len) == v->valid, "vector %d", _i);
}
END_TEST

START_TEST(test_utf8_byte_by_byte)
{
    const struct vec *v = &vecs[_i];
    size_t len = v->len ? v->len : strlen(v->bytes), i;
    uint8_t st = CG_UTF8_ACCEPT;

    for (i = 0; i < len; i++)
        st = cg_utf8_feed(st, v->bytes + i, 1);
    ck_assert_msg((st == CG_UTF8_ACCEPT) == v->valid, "vector %d", _i);
}
END_TEST

/* Every split point of a valid text gives the same answer as the whole. */
START_TEST(test_utf8_splits)
{
    static const char text[] = "ascii \xc3\xa9\xe2\x9c\x93\xf0\x9d\x84\x9e end of text";
    size_t n = sizeof(text) - 1, cut;
    uint8_t st;

    for (cut = 0; cut <= n; cut++) {
        st = cg_utf8_feed(CG_UTF8_ACCEPT, text, cut);
        ck_assert_int_ne(st, CG_UTF8_REJECT);
        st = cg_utf8_feed(st, text + cut, n - cut);
        ck_assert_int_eq(st, CG_UTF8_ACCEPT);
    }
}
END_TEST

/* Once rejected, always rejected; mid-character is neither accept nor reject. */
START_TEST(test_utf8_states)
{
    uint8_t st = cg_utf8_feed(CG_UTF8_ACCEPT, "\xe2", 1);

    ck_assert_int_ne(st, CG_UTF8_ACCEPT);
    ck_assert_int_ne(st, CG_UTF8_REJECT);
    st = cg_utf8_feed(st, "\x9c\x93", 2);
    ck_assert_int_eq(st, CG_UTF8_ACCEPT);
    st = cg_utf8_feed(st, "\xff", 1);
    ck_assert_int_eq(st, CG_UTF8_REJECT);
    st = cg_utf8_feed(st, "abc", 3);
    ck_assert_int_eq(st, CG_UTF8_REJECT);
}
END_TEST

Suite *utf8_suite(void)
{
    Suite *s = suite_create("utf8");
    TCase *tc = tcase_create("utf8");
    int n = (int)(sizeof(vecs) / sizeof(vecs[0]));

    tcase_add_loop_test(tc, test_utf8_whole, 0, n);
    tcase_add_loop_test(tc, test_utf8_byte_by_byte, 0, n);
    tcase_add_test(tc, test_utf8_splits);
    tcase_add_test(tc, test_utf8_states);
    suite_add_tcase(s, tc);
    return s;
}
