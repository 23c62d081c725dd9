/* loadgen/lg_msg.c — self-checking messages: write, check, and cut from a byte stream. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lg_msg.h"

static const uint8_t magic_bytes[4] = { 0xc0, 'G', 'L', 'G' };

static uint32_t ld32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ld64(const uint8_t *p)
{
    return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32;
}

static void st32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static void st64(uint8_t *p, uint64_t v)
{
    st32(p, (uint32_t)v);
    st32(p + 4, (uint32_t)(v >> 32));
}

/* Each step is a bijection of the running state for a fixed word and of the word for a
 * fixed state, so one changed word always changes the 64-bit state; the finaliser (murmur3's
 * fmix64, also a bijection) spreads every state bit over the 32 bits kept, so a damaged
 * frame passes with a chance of about 2^-32. Eight bytes per step: cheap for large frames.
 * (Without a finaliser, a fold of the last multiply keeps only its low half, which does not
 * depend on the high half of the last word: flips there went unseen.) */
uint32_t lg_msg_csum(const uint8_t *p, size_t len)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (uint64_t)len, w;
    size_t i;

    for (i = 0; i + 8 <= len; i += 8) {
        w = ld64(p + i);
        if (i == 24)
            w &= 0xffffffffull;      /* bytes 28..31: the csum field itself */
        h = (h ^ w) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
    }
    if (i < len) {
        uint8_t tail[8] = { 0 };

        memcpy(tail, p + i, len - i);
        h = (h ^ ld64(tail) ^ ((uint64_t)(len - i) << 56)) * 0xc4ceb9fe1a85ec53ull;
        h ^= h >> 29;
    }
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (uint32_t)h;
}

void lg_msg_write(uint8_t *p, uint32_t len, uint64_t seq, uint64_t ts, uint32_t conn)
{
    uint32_t i;

    st32(p, LG_MSG_MAGIC);
    st32(p + 4, len);
    st64(p + 8, seq);
    st64(p + 16, ts);
    st32(p + 24, conn);
    st32(p + 28, 0);
    for (i = LG_MSG_HDR; i < len; i++)
        p[i] = (uint8_t)((seq + i) & 0x7f);
    st32(p + 28, lg_msg_csum(p, len));
}

int lg_msg_check(const uint8_t *p, size_t len, uint32_t size, uint32_t conn, uint64_t *seq,
                 uint64_t *ts)
{
    if (len != size || len < LG_MSG_HDR)
        return 0;
    if (ld32(p) != LG_MSG_MAGIC || ld32(p + 4) != size || ld32(p + 24) != conn)
        return 0;
    if (ld32(p + 28) != lg_msg_csum(p, len))
        return 0;
    *seq = ld64(p + 8);
    *ts = ld64(p + 16);
    return 1;
}

int lg_msg_rx_init(struct lg_msg_rx *rx, uint32_t size, uint32_t conn)
{
    memset(rx, 0, sizeof(*rx));
    rx->part = malloc(size);
    if (!rx->part)
        return -ENOMEM;
    rx->size = size;
    rx->conn = conn;
    return 0;
}

void lg_msg_rx_deinit(struct lg_msg_rx *rx)
{
    free(rx->part);
    rx->part = NULL;
    rx->partlen = 0;
}

/* The first position at or after <from> where a frame could start: a whole magic, or a
 * prefix of one that the end of the data cuts. <len> when there is none. */
static size_t find_magic(const uint8_t *p, size_t len, size_t from)
{
    const uint8_t *q;
    size_t i = from, n;

    while (i < len) {
        q = memchr(p + i, magic_bytes[0], len - i);
        if (!q)
            return len;
        i = (size_t)(q - p);
        n = len - i < 4 ? len - i : 4;
        if (memcmp(q, magic_bytes, n) == 0)
            return i;
        i++;
    }
    return len;
}

static void accept_frame(struct lg_msg_rx *rx, uint64_t seq, uint64_t ts,
                         struct lg_msg_stats *st, lg_msg_on_frame cb, void *ud)
{
    uint64_t gap;

    rx->bad = 0;
    if (seq < rx->expected) {
        st->reordered++;
        return;
    }
    /* Frames lost inside a damaged stretch were counted as corrupt already. */
    gap = seq - rx->expected;
    st->lost += gap > rx->damaged ? gap - rx->damaged : 0;
    rx->damaged = 0;
    rx->expected = seq + 1;
    st->good++;
    if (cb)
        cb(ud, seq, ts);
}

static void damage(struct lg_msg_rx *rx, struct lg_msg_stats *st)
{
    if (rx->bad)
        return;
    rx->bad = 1;
    rx->damaged++;
    rx->corrupt++;
    st->corrupt++;
}

void lg_msg_rx_feed(struct lg_msg_rx *rx, const uint8_t *p, size_t len,
                    struct lg_msg_stats *st, lg_msg_on_frame cb, void *ud)
{
    uint32_t size = rx->size;
    uint64_t seq, ts;
    size_t i, take;

    while (len > 0) {
        if (rx->partlen == 0) {
            if (rx->bad) {
                i = find_magic(p, len, 0);
                st->skipped += i;
                p += i;
                len -= i;
                if (len == 0)
                    break;
            }
            if (len >= size) {
                if (lg_msg_check(p, size, size, rx->conn, &seq, &ts)) {
                    accept_frame(rx, seq, ts, st, cb, ud);
                    p += size;
                    len -= size;
                } else {
                    damage(rx, st);      /* scan on from the next byte */
                    st->skipped++;
                    p++;
                    len--;
                }
                continue;
            }
            memcpy(rx->part, p, len);
            rx->partlen = (uint32_t)len;
            break;
        }
        take = size - rx->partlen;
        if (take > len)
            take = len;
        memcpy(rx->part + rx->partlen, p, take);
        rx->partlen += (uint32_t)take;
        p += take;
        len -= take;
        if (rx->partlen < size)
            break;
        if (lg_msg_check(rx->part, size, size, rx->conn, &seq, &ts)) {
            rx->partlen = 0;
            accept_frame(rx, seq, ts, st, cb, ud);
            continue;
        }
        damage(rx, st);
        i = find_magic(rx->part, size, 1);
        st->skipped += i;
        memmove(rx->part, rx->part + i, size - i);
        rx->partlen = (uint32_t)(size - i);
    }
}

void lg_msg_rx_message(struct lg_msg_rx *rx, const uint8_t *p, size_t len,
                       struct lg_msg_stats *st, lg_msg_on_frame cb, void *ud)
{
    uint64_t seq, ts;

    if (lg_msg_check(p, len, rx->size, rx->conn, &seq, &ts)) {
        accept_frame(rx, seq, ts, st, cb, ud);
        return;
    }
    rx->damaged++;        /* every message is its own stretch: no resynchronisation */
    rx->corrupt++;
    st->corrupt++;
}

uint64_t lg_msg_rx_give_up(struct lg_msg_rx *rx, uint64_t upto, struct lg_msg_stats *st)
{
    uint64_t n;

    if (upto <= rx->expected)
        return 0;
    n = upto - rx->expected;
    n = n > rx->damaged ? n - rx->damaged : 0;
    st->lost += n;
    rx->damaged = 0;
    rx->expected = upto;
    return n;
}
