/* gateway/relay.h — a client connection's life on a TCP listener. */
#ifndef CG_RELAY_H
#define CG_RELAY_H

#include "coro/coro-t.h"
#include "core/worker.h"

/* One client connection. Both streams live here, not on the coroutine's stack. */
struct cg_conn {
    struct coro_stream   client;
    struct coro_stream   up;
    struct coro_list     node;     /* in the worker's conns */
    struct cg_worker    *w;
    struct cg_wlistener *l;        /* counters only: a reload may move it (worker.h) */
    struct cg_server    *srv;
    struct coro         *co;
    /* Reload (reload.h): the generation the connection started in (a reference) and its
     * listener's settings there; srv_gen, when set, a reference to the newer generation a
     * reload moved srv's accounting to (NULL: srv is in gen). */
    struct cg_gen       *gen;
    const struct cg_listener_conf *lc;
    struct cg_gen       *srv_gen;
    uint32_t             ip_slot;  /* per-address connection slot held (admission.h), 0 = none */
    uint8_t              up_inited;
};

/* The coroutine body of a TCP listener's connection: picks and connects an upstream server
 * (with retries), relays both ways with backpressure and half-close until both sides are
 * done, the idle timeout, an error or a stop. Owns <arg> (a struct cg_conn whose client
 * stream is open): closes both streams, updates counters and frees it. */
void cg_tcp_session(void *arg);

/* Connects c->up to a server of <up> (the listener's upstream, or the one a WebSocket route
 * chose), trying up to 1 + retries servers. Returns 0 with c->srv set and counted active,
 * or the last error (UV_ETIMEDOUT when the last try timed out, UV_EHOSTUNREACH when no
 * server was eligible, UV_ECANCELED on a stop, a local error of cg_local_error() at once:
 * another server would fail the same way). */
int cg_conn_connect_upstream(struct cg_conn *c, struct cg_upstream *up);

/* 1 when <err> (a libuv error) is a shortage of this process or host (descriptors, memory,
 * buffers, local ports or addresses), not something the server did: such a failure is
 * counted as a local error and never towards a server's ejection or health. */
int cg_local_error(int err);

/* Ends a session of either mode: closes both streams (waits for the closes), takes <c> off
 * the worker's list, updates the counters and frees <c>. The caller has already released
 * c->srv (active count) if it held one. */
void cg_conn_end(struct cg_conn *c);

#endif
