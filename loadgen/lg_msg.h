/* loadgen/lg_msg.h — the load generator's self-checking messages.
 *
 * Every message the client sends (and every message `serve --push` sends) is one frame:
 *
 *   offset  size  field
 *        0     4  magic   LG_MSG_MAGIC, little-endian ("\xc0GLG")
 *        4     4  len     the frame's total length in bytes, header included
 *        8     8  seq     0, 1, 2... per connection and direction
 *       16     8  ts      send time in ns: CLOCK_MONOTONIC (the client's own messages; for
 *                         open-loop traffic the intended send time), or CLOCK_REALTIME for
 *                         pushed messages
 *       24     4  conn    the client connection's global index; LG_MSG_CONN_PUSH for pushes
 *       28     4  csum    lg_msg_csum() of the whole frame with this field taken as zero
 *       32   ...  filler  byte i of the frame is (seq + i) & 0x7f: never a magic byte
 *
 * all little-endian. On a byte stream (TCP) the receiver cuts frames of the expected length,
 * checks magic, length, connection and checksum, and resynchronises on the next magic after
 * a damaged frame. Sequence numbers then tell loss (a gap) and reordering (going back).
 */
#ifndef LG_MSG_H
#define LG_MSG_H

#include <stddef.h>
#include <stdint.h>

#define LG_MSG_MAGIC     0x474c47c0u
#define LG_MSG_HDR       32u
#define LG_MSG_MAX       (16u << 20)     /* largest frame the tools accept */
#define LG_MSG_CONN_PUSH 0xffffffffu

/* What the receiving side counted. */
struct lg_msg_stats {
    uint64_t good;        /* intact frames in sequence (or after a gap) */
    uint64_t corrupt;     /* damaged stretches: each resynchronisation counts once */
    uint64_t lost;        /* sequence numbers never seen (not counting damaged frames) */
    uint64_t reordered;   /* intact frames older than one already seen */
    uint64_t skipped;     /* bytes thrown away while resynchronising */
};

/* The receiving state of one connection. <part> holds a partial frame between chunks. */
struct lg_msg_rx {
    uint8_t *part;        /* <size> bytes, owned; NULL until lg_msg_rx_init */
    uint32_t size;        /* frame length expected */
    uint32_t partlen;
    uint32_t conn;        /* expected conn field */
    uint32_t damaged;     /* corrupt stretches since the last good frame */
    uint64_t expected;    /* next sequence number expected */
    uint64_t corrupt;     /* damaged stretches on this connection, ever */
    int      bad;         /* 1 while resynchronising */
};

/* Called for every intact frame accepted in order (not for reordered ones) with its
 * sequence number and timestamp. */
typedef void (*lg_msg_on_frame)(void *ud, uint64_t seq, uint64_t ts);

/* The checksum of the <len>-byte frame at <p>, its csum field taken as zero. */
uint32_t lg_msg_csum(const uint8_t *p, size_t len);

/* Writes a frame of <len> bytes (LG_MSG_HDR .. LG_MSG_MAX) at <p>. */
void lg_msg_write(uint8_t *p, uint32_t len, uint64_t seq, uint64_t ts, uint32_t conn);

/* Checks the frame of <len> bytes at <p> against the expected <size> and <conn>. Returns 1
 * when intact, with <*seq> and <*ts> set; 0 otherwise. */
int lg_msg_check(const uint8_t *p, size_t len, uint32_t size, uint32_t conn, uint64_t *seq,
                 uint64_t *ts);

/* Prepares <rx> for frames of <size> bytes tagged <conn>. Returns 0 or -ENOMEM. */
int lg_msg_rx_init(struct lg_msg_rx *rx, uint32_t size, uint32_t conn);
void lg_msg_rx_deinit(struct lg_msg_rx *rx);   /* idempotent */

/* Feeds <len> stream bytes at <p> into <rx>, counting into <st> and calling <cb> for each
 * frame accepted. Borrows <p> for the call only. */
void lg_msg_rx_feed(struct lg_msg_rx *rx, const uint8_t *p, size_t len,
                    struct lg_msg_stats *st, lg_msg_on_frame cb, void *ud);

/* Counts one whole message (a WebSocket message: no stream framing) of <len> bytes into
 * <rx>/<st> like lg_msg_rx_feed() does for a frame; no resynchronisation needed. */
void lg_msg_rx_message(struct lg_msg_rx *rx, const uint8_t *p, size_t len,
                       struct lg_msg_stats *st, lg_msg_on_frame cb, void *ud);

/* Declares everything up to <upto> (exclusive) lost that has not arrived yet, as a sender
 * does when it gives up waiting (closed-loop reply timeout, end of the run). Returns how
 * many were counted lost. */
uint64_t lg_msg_rx_give_up(struct lg_msg_rx *rx, uint64_t upto, struct lg_msg_stats *st);

#endif
