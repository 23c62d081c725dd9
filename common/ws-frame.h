/* common/ws-frame.h — RFC 6455 framing rules both ends apply to bytes they follow
 * themselves (the gateway's relay tracks frame boundaries ahead of wslay; the loadgen's
 * echo server takes close frames out of wslay's hands): header sizes, payload lengths, and
 * the close codes a close frame may carry. */
#ifndef CG_WS_FRAME_H
#define CG_WS_FRAME_H

#include <stdint.h>

/* The size of a frame header whose second byte is <b1>: 2, the extended length (2 or 8
 * bytes), the mask key (4 bytes) when set. */
static inline unsigned cg_ws_hdr_size(uint8_t b1)
{
    unsigned len7 = b1 & 0x7f;

    return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((b1 & 0x80) ? 4 : 0);
}

/* The payload length of the complete frame header <h> (cg_ws_hdr_size(h[1]) bytes). */
static inline uint64_t cg_ws_payload_len(const uint8_t *h)
{
    unsigned len7 = h[1] & 0x7f, i, n = len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
    uint64_t v = 0;

    if (!n)
        return len7;
    for (i = 0; i < n; i++)
        v = v << 8 | h[2 + i];
    return v;
}

/* 1 when <code> may appear in a close frame: RFC 6455 §7.4 (1000-1003, 1007-1011), the
 * codes IANA registered after it (1012 service restart, 1013 try again later, 1014 bad
 * gateway), and those for libraries and applications (3000-4999). Never 1004-1006 or
 * 1015: reserved, or meant only for an endpoint's own reporting. */
static inline int cg_ws_close_code_is_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

#endif
