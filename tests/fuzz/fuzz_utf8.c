/* tests/fuzz/fuzz_utf8.c — the streaming UTF-8 validator (common/utf8.c) against a plain
 * reference decoder written from RFC 3629's table, whole and fed in pieces: they must
 * agree on every input, and the piece boundaries must not matter. */
#include "common/utf8.h"
#include "fuzz.h"

/* RFC 3629 §4, one code point at a time: 1 when <p> (<n> bytes) is valid UTF-8. */
static int reference(const uint8_t *p, size_t n)
{
    size_t i = 0, k, need;
    uint32_t cp, min;

    while (i < n) {
        uint8_t b = p[i];

        if (b < 0x80) {
            i++;
            continue;
        }
        if (b >= 0xc2 && b <= 0xdf) {
            need = 1, cp = b & 0x1f, min = 0x80;
        } else if (b >= 0xe0 && b <= 0xef) {
            need = 2, cp = b & 0x0f, min = 0x800;
        } else if (b >= 0xf0 && b <= 0xf4) {
            need = 3, cp = b & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i - 1 < need)
            return 0;
        for (k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += need + 1;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_chunks ch;
    const uint8_t *p;
    uint8_t st = CG_UTF8_ACCEPT;
    size_t len;
    int want;

    fuzz_chunks_init(&ch, data, size);
    want = reference(ch.p, ch.left);
    FUZZ_CHECK(cg_utf8_is_valid(ch.p, ch.left) == want, "whole: reference says %d", want);
    while ((p = fuzz_chunks_next(&ch, &len)) != NULL)
        st = cg_utf8_feed(st, p, len);
    FUZZ_CHECK((st == CG_UTF8_ACCEPT) == want, "in pieces: state %u, reference says %d", st,
               want);
    return 0;
}
