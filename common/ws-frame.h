/* common/ws-frame.h — RFC 6455 framing (§5.2) for code that reads and writes frames
 * itself (the gateway's relay, proto/ws.c; the loadgen's echo server takes close frames out
 * of wslay's hands): opcodes, header sizes, payload lengths, writing a header, masking, and
 * the close codes a close frame may carry. */
#ifndef CG_WS_FRAME_H
#define CG_WS_FRAME_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum {
    CG_WS_OP_CONT = 0x0,
    CG_WS_OP_TEXT = 0x1,
    CG_WS_OP_BINARY = 0x2,
    CG_WS_OP_CLOSE = 0x8,
    CG_WS_OP_PING = 0x9,
    CG_WS_OP_PONG = 0xa,
};

#define CG_WS_RSV1      0x4     /* the RSV bits as (byte 0 >> 4) & 7 holds them */
#define CG_WS_HDR_MAX   14      /* 2 + 8 bytes of length + 4 of mask key */

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

/* Writes the header of a frame into <out> (CG_WS_HDR_MAX bytes): FIN <fin>, RSV bits <rsv>
 * (0-7), opcode <op>, payload length <len> in its shortest form, and the mask key <key>
 * when not NULL. Returns the header's size. */
static inline size_t cg_ws_hdr_write(uint8_t *out, int fin, unsigned rsv, unsigned op,
                                     uint64_t len, const uint8_t *key)
{
    size_t n = 2;
    int i;

    out[0] = (uint8_t)((fin ? 0x80 : 0) | (rsv & 7) << 4 | (op & 0xf));
    if (len < 126) {
        out[1] = (uint8_t)len;
    } else if (len < 65536) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        n = 4;
    } else {
        out[1] = 127;
        for (i = 0; i < 8; i++)
            out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
        n = 10;
    }
    if (key) {
        out[1] |= 0x80;
        memcpy(out + n, key, 4);
        n += 4;
    }
    return n;
}

/* XORs the mask <key> into the <n> bytes at <src>, written to <dst> (the same, or not
 * overlapping); <phase> is the offset of <src> in the payload, modulo 4. Eight bytes at a
 * time: a byte loop with a modulo per byte (wslay's) costs several instructions a byte.
 * The key is rotated to <phase> as one word (byte j of the result is key[(phase + j) & 3]
 * in memory order on either byte order), not built a byte at a time. */
static inline void cg_ws_mask_copy(uint8_t *dst, const uint8_t *src, size_t n,
                                   const uint8_t key[4], unsigned phase)
{
    unsigned sh = (phase & 3) * 8;
    uint32_t k32;
    uint64_t k64, v;
    size_t i = 0;

    memcpy(&k32, key, 4);
    if (sh) {
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        k32 = k32 >> sh | k32 << (32 - sh);
#else
        k32 = k32 << sh | k32 >> (32 - sh);
#endif
    }
    k64 = (uint64_t)k32 << 32 | k32;
    for (; i + 8 <= n; i += 8) {
        memcpy(&v, src + i, 8);
        v ^= k64;
        memcpy(dst + i, &v, 8);
    }
    if (i < n) {
        uint8_t k[8];

        memcpy(k, &k64, 8);
        for (unsigned j = 0; i < n; i++, j++)
            dst[i] = src[i] ^ k[j];
    }
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
