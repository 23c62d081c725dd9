/* gateway/relay.h — a client connection's life on a TCP listener. */
#ifndef CG_RELAY_H
#define CG_RELAY_H

#include "coro/coro-t.h"
#include "worker.h"

/* One client connection. Both streams live here, not on the coroutine's stack. */
struct cg_conn {
    struct coro_stream   client;   /* first: its handle's address is the conn's */
    struct coro_stream   up;
    struct coro_list     node;     /* in the worker's conns */
    struct cg_worker    *w;
    struct cg_wlistener *l;
    struct cg_server    *srv;
    struct coro         *co;
    uint8_t              up_inited;
};

/* The coroutine body of a TCP listener's connection: picks and connects an upstream server
 * (with retries), relays both ways with backpressure and half-close until both sides are
 * done, the idle timeout, an error or a stop. Owns <arg> (a struct cg_conn whose client
 * stream is open): closes both streams, updates counters and frees it. */
void cg_tcp_session(void *arg);

/* Connects c->up to a server of the listener's upstream, trying up to 1 + retries servers.
 * Returns 0 with c->srv set and counted active, or the last error. */
int cg_conn_connect_upstream(struct cg_conn *c);

#endif
