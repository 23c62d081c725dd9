/* gateway/proto/ws-int.h — what the WebSocket session's two files share: the session and
 * side state, and the opening (ws-open.c: the client's request, routing, the backend's
 * connect and handshake, our 101) that precedes the relay (ws.c). Not for use outside
 * them. */
#ifndef CG_WS_INT_H
#define CG_WS_INT_H

#include <stddef.h>
#include <stdint.h>

#include "common/handshake.h"
#include "coro/io.h"
#include "core/conn.h"
#include "guard/tokenbucket.h"

#define SPARE_MAX        16        /* control-frame buffers cached per worker (work_put()) */
#define LINGER_MS        1000      /* reading after an error response, so it is not reset */
#define WRITE_TIMEOUT_MS 5000      /* writing a handshake response */
#define FLUSH_MIN_MS     200       /* at the end, for the last frames to leave, at least */
#define PUMP_BUDGET      (256u * 1024)  /* payload bytes per side per pass */
#define WS_BURST         4         /* passes with progress before the loop gets a turn */
#define REQUEST_ID_MAX   128
#define RESP_HEAD_MAX    16384     /* a backend's 101 response */

enum input_mode {
    IN_FRAMES = 0,   /* parse and forward */
    IN_DISCARD,      /* after an error: parse (to find the close answer), forward nothing */
    IN_DRAIN,        /* after a framing error: read and drop bytes until EOF */
};

/* The payload of the control frame a side is sending us, held only while one arrives
 * (see trim()): 126 bytes that an idle connection does not carry. */
struct work {
    struct work            *next;       /* in the worker's spares */
    uint8_t                 ctl[125];
    uint8_t                 ctl_len;
};

/* One piece of a frame as the relay's parser returns it (ws.c frame_recv()): the frame's
 * header fields, and <data_length> bytes of its payload (unmasked) at <data>, which point
 * into the side's input buffer. The first piece of a frame comes as soon as its header is
 * complete, with what of the payload came in the same read (none, when the header came
 * alone). */
struct piece {
    uint8_t        fin;
    uint8_t        rsv;            /* RSV1-3 as bits 2-0 (CG_WS_RSV1) */
    uint8_t        opcode;
    uint8_t        mask;           /* the frame was masked */
    uint64_t       payload_length;
    const uint8_t *data;
    size_t         data_length;
};

struct sess;

struct side {
    struct work         *wk;        /* NULL unless a control frame is arriving */
    struct coro_buf     *in;        /* received bytes not yet parsed */
    struct coro_buf     *out;       /* bytes being gathered for st */
    uint64_t             t_rem;     /* frame_recv(): payload bytes left of the current frame */
    uint64_t             in_len;    /* payload length of the frame being received */
    uint64_t             in_rem;    /* ... still due */
    uint64_t             msg_len;   /* payload of the message being received, so far */
    const char          *close_reason;  /* our close, while due */
    uint16_t             close_code;
    uint16_t             rcvd_code;     /* of the close it sent (1005: none) */
    int32_t              rerr;      /* UV_EOF or the read error, once seen */
    uint8_t              t_hdr[14]; /* frame_recv(): the current frame's header */
    uint8_t              t_have;    /* ... bytes of it received */
    uint8_t              t_need;    /* ... its size once known (2 before); 0 = complete */
    uint8_t              t_phase;   /* payload bytes received so far, modulo 4 (the mask's) */
    uint8_t              client;    /* the client: we are its server */
    uint8_t              raw;       /* a plain TCP backend (upstream_protocol = tcp) */
    uint8_t              in_frame;  /* a frame is being received */
    uint8_t              in_op;
    uint8_t              in_fin;
    uint8_t              in_rsv;    /* its RSV bits (RSV1: a compressed message begins) */
    uint8_t              fwd;       /* the frame being received is forwarded */
    uint8_t              piece_sent;/* a piece of it was forwarded already (forward()) */
    uint8_t              msg_op;    /* opcode of the message in progress; 0 = none */
    uint8_t              msg_z;     /* ... compressed (permessage-deflate): not UTF-8 checked */
    uint8_t              utf8;      /* validator state of a text message */
    uint8_t              input;     /* enum input_mode */
    uint8_t              ping_due;
    uint8_t              close_due;
    uint8_t              close_sent;
    uint8_t              close_rcvd;
    uint8_t              eof;       /* nothing more will be read */
    uint8_t              shut;      /* raw backend: our sending side was shut down */
    uint8_t              gone;      /* failed or abandoned: nothing more to or from it */
};

/* The client's rate limits, allocated only for a listener that sets one. */
struct rate {
    struct cg_tokenbucket msgs;
    struct cg_tokenbucket bytes;
};

struct sess {
    struct cg_conn                *c;            /* c->w: the worker; c->lc: settings */
    struct side                    cl;
    struct side                    be;
    struct rate                   *rate;         /* NULL: no message or byte rate limit */
    uint64_t                       now;          /* loop ms, refreshed each pass */
    uint64_t                       last_data;    /* last data frame either way */
    uint64_t                       last_rx;      /* last frame from the client */
    uint64_t                       ping_at;      /* our ping went out; 0 = none waiting */
    uint64_t                       close_at;     /* close_timeout expires; 0 = open */
    uint64_t                       rate_until;   /* client reads paused until then */
    uint64_t                       expire_at;    /* max_connection_lifetime; 0 = none */
    unsigned                       cancels;
    uint8_t                        rate_noted;   /* this pause was counted */
    uint8_t                        deflate;      /* permessage-deflate negotiated end to end */
    uint8_t                        fail;         /* the client broke the protocol: enum fail */
};

/* Why a client is failed: a protocol violation or a limit. Its close waits until the
 * backend has answered ours, so that what the client sent before (and the backend's answers
 * to it) still reach it (ws.c, fail_client()). */
enum fail {
    FAIL_NONE = 0,
    FAIL_PROTOCOL,      /* close 1002 */
    FAIL_UTF8,          /* close 1007 */
    FAIL_TOO_BIG,       /* close 1009: max_message_size */
    FAIL_RATE,          /* close 1008: message_rate / byte_rate with rate_limit_action = close */
};

/* A side's session, other side and stream follow from which side it is: three pointers
 * fewer per side, for every idle connection. */
static inline struct sess *sess_of(const struct side *x)
{
    return x->client ? (struct sess *)(void *)((char *)x - offsetof(struct sess, cl))
                     : (struct sess *)(void *)((char *)x - offsetof(struct sess, be));
}

static inline struct side *peer_of(const struct side *x)
{
    struct sess *s = sess_of(x);

    return x->client ? &s->be : &s->cl;
}

static inline struct coro_stream *st_of(const struct side *x)
{
    struct sess *s = sess_of(x);

    return x->client ? &s->c->client : &s->c->up;
}

static inline struct coro_sched *sched_of(const struct side *x)
{
    return sess_of(x)->c->w->sched;
}

/* Room in the handshake state for the strings the two heads keep (cg_handshake_set_arena()):
 * one block per handshake instead of one per header kept; longer heads spill to malloc. */
#define HS_ARENA 1024

/* The handshake state, freed before the relay starts. cg_ws__open() zeroes what comes
 * before ext; what follows is written before it is read (ext there, trusted by
 * prepare_forward(), head by the 101's writer, arena by the heads' parsers). */
struct hsblock {
    struct cg_handshake req;
    struct cg_handshake resp;
    char                request_id[REQUEST_ID_MAX + 1];
    char                addr[64];                       /* the client's IP address */
    char                ext[512];   /* the client's permessage-deflate offers, for the backend */
    int                 trusted;                        /* addr is in trusted_proxies */
    char                head[1024];                     /* our 101 */
    char                arena[HS_ARENA];                /* the heads' strings */
};

/* ws-open.c: the session up to the relay. Returns 0 when the relay may start, with
 * c->srv connected; -1 when the session is over (answered or aborted). */
int cg_ws__open(struct sess *s);

/* ws.c: the relay, from the upgrade to the end of both sides (c->client and c->up open,
 * c->co the running coroutine); then what the sides hold, given back. Apart for the relay's
 * fuzz target (tests/fuzz/fuzz_ws_relay.c), which drives them over in-memory peers. */
void cg_ws__relay(struct sess *s);
void cg_ws__sides_free(struct sess *s);

/* ws-open.c: reads and drops what the client still sends, for <ms> at most, after our
 * last bytes, so that closing does not reset the answer away. */
void cg_ws__linger(struct sess *s, int64_t ms);

#endif
