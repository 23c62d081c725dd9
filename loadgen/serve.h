/* loadgen/serve.h — `corogate-loadgen serve`: the echo backend.
 *
 * One worker thread per CPU (--threads), each with its own uv loop, coroutine scheduler and
 * SO_REUSEPORT listening socket on the same address; one coroutine per accepted connection
 * runs the mode's handler (tcp: echo every chunk back as it is, zero-copy). SIGINT/SIGTERM
 * cancel every connection, close everything and exit 0 with the totals.
 *
 * A mode is a handler run inside the connection's coroutine: adding one (ws) means writing
 * an lg_serve_handler and filling its row of the mode table in serve.c.
 */
#ifndef LG_SERVE_H
#define LG_SERVE_H

#include <stdio.h>

#include "coro/coro.h"
#include "coro/io.h"

struct lg_worker;

/* One accepted connection, owned by its coroutine from spawn to free. */
struct lg_conn {
    struct coro_stream st;       /* first: the uv handle's address is the connection's */
    struct lg_worker  *worker;
    struct coro       *co;       /* its coroutine, once it runs; NULL before */
    struct lg_conn    *prev;     /* the worker's live connections, to cancel on stop */
    struct lg_conn    *next;
};

/* Serves <c> from inside its coroutine until the peer is done. Returns 0 after a clean end
 * of stream (the caller then flushes what is queued, shuts down and closes), or a libuv
 * error such as UV_ECANCELED on stop (the caller closes at once). Must not close or free
 * <c>; every buffer it took is written or put back. */
typedef int (*lg_serve_handler)(struct lg_conn *c);

/* The tcp mode: echoes every chunk read back on the same connection until EOF. */
int lg_serve_echo_tcp(struct lg_conn *c);

/* Runs `serve` with its own <argc>/<argv> (argv[0] = "serve"). Returns the exit status:
 * 0 after a clean stop by SIGINT/SIGTERM, 1 when the server could not start (bind...),
 * 2 for a usage error (unknown option, bad address, unsupported mode). */
int lg_serve_main(int argc, char **argv);

/* Writes the usage of `serve` to <f>. */
void lg_serve_usage(FILE *f);

#endif
