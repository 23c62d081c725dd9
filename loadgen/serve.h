/* loadgen/serve.h — `corogate-loadgen serve`: the echo backend.
 *
 * One worker thread per CPU (--threads), each with its own uv loop, coroutine scheduler and
 * SO_REUSEPORT listening socket on the same address; one coroutine per accepted connection
 * runs the mode's handler (tcp: echo every chunk back as it is, zero-copy). SIGINT/SIGTERM
 * cancel every connection, close everything and exit 0 with the totals.
 *
 * A mode is a handler run inside the connection's coroutine (tcp: lg_serve_echo_tcp; ws:
 * lg_serve_echo_ws, an HTTP upgrade then every data message echoed with its opcode).
 *
 * Test and measurement knobs, all off by default: --delay holds every echo back for a fixed
 * time (a slow backend of known latency); --fault drop=P,flip=P loses or damages received
 * chunks (tcp) or messages (ws) with probability P, so that the client's checks can be
 * tested; --push R sends every ready connection R self-checking messages a second
 * (lg_msg.h, stamped with CLOCK_REALTIME) for `run --push-recv`.
 */
#ifndef LG_SERVE_H
#define LG_SERVE_H

#include <stdint.h>
#include <stdio.h>

#include "coro/coro.h"
#include "coro/io.h"

struct lg_worker;
struct lg_wsc;

/* One accepted connection, owned by its coroutine from spawn to free. */
struct lg_conn {
    struct coro_stream st;
    struct lg_worker  *worker;
    struct coro       *co;       /* its coroutine, once it runs; NULL before */
    struct lg_conn    *prev;     /* the worker's live connections, to cancel on stop */
    struct lg_conn    *next;
    struct lg_wsc     *ws;       /* ws mode, after the upgrade */
    struct coro_buf   *out;      /* ws: frames gathered for one write */
    uint64_t           push_seq; /* --push: next sequence number */
    int                ready;    /* 1 once pushes may be sent (after the ws upgrade) */
    int                werr;     /* first error of a write made from a callback */
};

/* Serves <c> from inside its coroutine until the peer is done. Returns 0 after a clean end
 * of stream (the caller then flushes what is queued, shuts down and closes), or a libuv
 * error such as UV_ECANCELED on stop (the caller closes at once). Must not close or free
 * <c>; every buffer it took is written or put back. */
typedef int (*lg_serve_handler)(struct lg_conn *c);

/* The tcp mode: echoes every chunk read back on the same connection until EOF. */
int lg_serve_echo_tcp(struct lg_conn *c);

/* The ws mode: answers the opening handshake (101, or an HTTP error for a bad request),
 * then echoes every data message with its opcode until the close handshake or EOF. */
int lg_serve_echo_ws(struct lg_conn *c);

/* Runs `serve` with its own <argc>/<argv> (argv[0] = "serve"). Returns the exit status:
 * 0 after a clean stop by SIGINT/SIGTERM, 1 when the server could not start (bind...),
 * 2 for a usage error (unknown option, bad address, unsupported mode). */
int lg_serve_main(int argc, char **argv);

/* Writes the usage of `serve` to <f>. */
void lg_serve_usage(FILE *f);

#endif
