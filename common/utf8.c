/* common/utf8.c — streaming UTF-8 validation.
 *
 * States name what the next byte must be (RFC 3629 §4 table):
 *   ACCEPT   any lead byte or ASCII
 *   C1..C3   1, 2 or 3 continuation bytes (80..BF) still due
 *   E0       second byte of E0 xx xx must be A0..BF (no overlong 3-byte forms)
 *   ED       second byte of ED xx xx must be 80..9F (no surrogates)
 *   F0       second byte of F0 xx xx xx must be 90..BF (no overlong 4-byte forms)
 *   F4       second byte of F4 xx xx xx must be 80..8F (nothing above U+10FFFF)
 * ASCII runs in state ACCEPT are skipped eight bytes at a time.
 */
#include <string.h>

#include "common/utf8.h"

enum { C1 = 1, C2, C3, E0, ED, F0, F4 };

static uint8_t lead(uint8_t b)
{
    if (b < 0x80)
        return CG_UTF8_ACCEPT;
    if (b < 0xc2)               /* continuation byte, or C0/C1 (overlong 2-byte) */
        return CG_UTF8_REJECT;
    if (b < 0xe0)
        return C1;
    if (b == 0xe0)
        return E0;
    if (b == 0xed)
        return ED;
    if (b < 0xf0)
        return C2;
    if (b == 0xf0)
        return F0;
    if (b < 0xf4)
        return C3;
    if (b == 0xf4)
        return F4;
    return CG_UTF8_REJECT;      /* F5..FF never appear in UTF-8 */
}

static uint8_t step(uint8_t state, uint8_t b)
{
    switch (state) {
    case CG_UTF8_ACCEPT:
        return lead(b);
    case C1:
        return (b & 0xc0) == 0x80 ? CG_UTF8_ACCEPT : CG_UTF8_REJECT;
    case C2:
        return (b & 0xc0) == 0x80 ? C1 : CG_UTF8_REJECT;
    case C3:
        return (b & 0xc0) == 0x80 ? C2 : CG_UTF8_REJECT;
    case E0:
        return b >= 0xa0 && b <= 0xbf ? C1 : CG_UTF8_REJECT;
    case ED:
        return b >= 0x80 && b <= 0x9f ? C1 : CG_UTF8_REJECT;
    case F0:
        return b >= 0x90 && b <= 0xbf ? C2 : CG_UTF8_REJECT;
    case F4:
        return b >= 0x80 && b <= 0x8f ? C2 : CG_UTF8_REJECT;
    default:
        return CG_UTF8_REJECT;
    }
}

uint8_t cg_utf8_feed(uint8_t state, const void *data, size_t len)
{
    const uint8_t *p = data, *end = p + len;
    uint64_t w;

    while (p < end && state != CG_UTF8_REJECT) {
        if (state == CG_UTF8_ACCEPT) {
            while (end - p >= 8) {
                memcpy(&w, p, 8);
                if (w & 0x8080808080808080ull)
                    break;
                p += 8;
            }
            if (p == end)
                break;
        }
        state = step(state, *p++);
    }
    return state;
}
