/* gateway/core/conn.h — a client connection's life, in one place.
 *
 * A connection is made by cg_conn_start() once admission has said yes, and ends in
 * cg_conn_end(), whichever mode ran it (core/relay.h for TCP, proto/ws.h for WebSocket).
 * Everything it holds is recorded here and released there, once: the daemon's connection
 * count and the client address's slot (taken by admission, handed over at the start), its
 * configuration generation(s), its server's active count, its streams, its memory. Why it
 * ended is recorded once, the first reason given (HAProxy's termination state plays the
 * same part); a later cause, such as the close that follows an error, does not replace it.
 */
#ifndef CG_CONN_H
#define CG_CONN_H

#include <stdint.h>
#include <sys/socket.h>

#include "coro/coro-t.h"
#include "core/types.h"

/* Why a connection ended (cg_close_reason_name()). */
enum cg_close_reason {
    CG_CLOSE_NONE,              /* not recorded (yet) */
    CG_CLOSE_DONE,              /* ended by us, cleanly (a health check answered) */
    CG_CLOSE_CLIENT,            /* the client closed first (EOF, close frame, gone
                                 * mid-handshake) */
    CG_CLOSE_SERVER,            /* the server closed or failed first */
    CG_CLOSE_IDLE,              /* idle_timeout, or a keepalive ping unanswered */
    CG_CLOSE_HANDSHAKE,         /* the client's opening request was refused (4xx) */
    CG_CLOSE_PROTOCOL,          /* the client broke the protocol, or a limit */
    CG_CLOSE_NO_SERVER,         /* no server could be connected */
    CG_CLOSE_UPSTREAM,          /* the server failed the WebSocket handshake */
    CG_CLOSE_LOCAL,             /* a shortage of ours (descriptors, memory, ports) */
    CG_CLOSE_STOPPED,           /* drain or stop */
    CG_CLOSE_ERROR,             /* a read or write error */
    CG_CLOSE_TLS,               /* the client's TLS handshake failed */
    CG_CLOSE_LIFETIME,          /* max_connection_lifetime */
    CG_CLOSE_PROXY,             /* its PROXY protocol header was refused (accept_proxy) */
    CG_CLOSE_REFUSED,           /* admission refused the address a header carried */
    CG_CLOSE_N,
};

/* What the connection log (base/access-log.h) needs of a connection beyond what it keeps
 * anyway: allocated at the start only for a connection that will be logged (access_log on,
 * and the sample picked it), so that an unlogged one pays one NULL pointer. Durations are
 * milliseconds from <start_ns>; CG_ALOG_NONE until reached. */
struct cg_conn_log {
    uint64_t             start_ns;      /* uv_hrtime() at the start */
    uint32_t             hs_ms;         /* the client's handshake (TLS, WebSocket) done */
    uint32_t             connect_ms;    /* the upstream connect took (retries included) */
    uint32_t             msgs_in;       /* WebSocket messages from the client */
    uint32_t             msgs_out;      /* ... to it */
    uint16_t             close_client;  /* WebSocket close codes each peer sent, 0: none */
    uint16_t             close_server;
    uint16_t             client_port;   /* the client's address at the start: a reset */
    uint8_t              family;        /* socket has none left at the end */
    uint8_t              client_addr[16];
    int32_t              upstream;      /* index in the generation's upstreams, -1: none */
    char                *request_id;    /* malloc'ed; NULL: none */
};

/* A client address a PROXY protocol header carried: the bytes of a sockaddr_in6, which a
 * sockaddr_in fits in (28). A connection of an accept_proxy listener is allocated with
 * one right after its struct cg_conn (cg_conn_start(), from the worker's conn_pp_slab):
 * the other connections pay nothing for it. */
union cg_conn_addr {
    struct sockaddr     sa;
    struct sockaddr_in  in;
    struct sockaddr_in6 in6;
};

/* One client connection. Both streams live here, not on the coroutine's stack. */
struct cg_conn {
    struct coro_stream   client;
    struct coro_stream   up;
    struct coro_list     node;     /* in the worker's conns */
    struct cg_worker    *w;
    struct cg_wlistener *l;        /* counters only: a reload may move it (worker.h) */
    struct cg_server    *srv;      /* set once connected: counted in its active */
    struct coro         *co;
    /* Reload (reload.h): the generation the connection started in (a reference) and its
     * listener's settings there; srv_gen, when set, a reference to the newer generation a
     * reload moved srv's accounting to (NULL: srv is in gen). */
    struct cg_gen       *gen;
    const struct cg_listener_conf *lc;
    struct cg_gen       *srv_gen;
    /* A verified client certificate on a websocket listener, for the backend's request:
     * "subject\0sha256-hex", malloc'ed; freed after the upgrade or at the end. */
    char                *peer_cert;
    struct cg_conn_log  *log;      /* NULL: not logged (access_log off, or not sampled) */
    uint32_t             ip_slot;  /* per-address connection slot held (admission.h), 0 = none */
    uint8_t              up_inited;
    uint8_t              reason;   /* enum cg_close_reason, the first recorded */
    /* accept_proxy (core/conn.c): pp_tail 1 when a union cg_conn_addr follows the struct;
     * pp_state what it holds: CG_PP_NONE (no address carried: the socket's peer is the
     * client), CG_PP_PENDING (a pointer to a malloc'ed block with the address, the
     * destination and the TLVs, until the upstream connect), CG_PP_ADDR (the address). */
    uint8_t              pp_tail;
    uint8_t              pp_state;
};

enum { CG_PP_NONE, CG_PP_PENDING, CG_PP_ADDR };

/* The client's address: the one a PROXY protocol header carried, else the socket's
 * peer. Returns 0 with <ss> written, or a negative errno (a v2 LOCAL or UNKNOWN header
 * carries none: then the socket's peer is written and 0 returned). */
int cg_conn_client_addr(const struct cg_conn *c, struct sockaddr_storage *ss);

/* Makes the connection for the accepted, non-blocking <fd> on <l> and starts its coroutine
 * (the daemon's proto.session[] for the listener's mode: core/relay.h for tcp, proto/ws.h
 * for websocket; after a TLS handshake with the client when the listener has tls = on;
 * before both, with accept_proxy, the PROXY header and then the per-address admission
 * checks on the address it carried, which the accept left out). It takes over what admission
 * handed over: one count in d->conns and <ip_slot>. Returns 0; or a negative errno, and
 * then all of it is released and <fd> is closed. */
int cg_conn_start(struct cg_wlistener *l, int fd, uint32_t ip_slot);

/* Connects c->up to a server of <up> (the listener's upstream, or the one a WebSocket route
 * chose), with a TLS handshake when <up> has tls = on, trying up to 1 + retries servers:
 * with balance = hash, the servers of the client's hash key <key> in ring order
 * (cg_upstream_pick_key()); <key> NULL when the request had none (counted in
 * up->hash_fallbacks, round robin instead). Returns 0 with c->srv set and counted active,
 * or the last error (UV_ETIMEDOUT when the last try timed out, UV_EHOSTUNREACH when no
 * server was eligible, UV_ECANCELED on a stop, a local error of cg_local_error() at once:
 * another server would fail the same way). */
int cg_conn_connect_upstream(struct cg_conn *c, struct cg_upstream *up, const uint64_t *key);

/* The hash key of <c>'s client address for balance = hash (hash_key = source): the
 * address without its port (an IPv4-mapped IPv6 address as the IPv4 one), through
 * cg_hash64(). Returns 0, or a negative errno of getpeername(). */
int cg_conn_source_key(const struct cg_conn *c, uint64_t *key);

/* Reload: moves <c>'s server accounting from generation <old> to <g> (its worker's new
 * one), when its server is in <old> and <g> has it too, so that leastconn and
 * max_connections_per_server count it there. Worker thread. */
void cg_conn_move_server(struct cg_conn *c, struct cg_gen *old, struct cg_gen *g);

/* When a connection of <lc> relaying from <now_ms> on must end: max_connection_lifetime
 * less a random part of up to lifetime_jitter of it (connections opened together, after a
 * scale-out or a restart, then end spread out, and reconnect spread over the servers); 0
 * when the listener sets no lifetime. */
uint64_t cg_conn_deadline(const struct cg_listener_conf *lc, uint64_t now_ms);

/* Records why <c> ends, unless a reason is recorded already. */
void cg_conn_closing(struct cg_conn *c, enum cg_close_reason reason);

/* The connection log's marks, each a no-op for a connection not logged: the client's
 * handshake done (TLS, or the WebSocket 101 sent), the request id sent to the backend
 * (<id> is copied), and at a WebSocket session's end the close codes each peer sent (0:
 * none). */
void cg_conn_log_handshake(struct cg_conn *c);
void cg_conn_log_request_id(struct cg_conn *c, const char *id);
void cg_conn_log_ws_end(struct cg_conn *c, unsigned close_client, unsigned close_server);

/* Counts a WebSocket message relayed to the client (<to_client> 1) or from it, for the
 * connection log. */
static inline void cg_conn_log_msg(struct cg_conn *c, int to_client)
{
    if (c->log)
        (*(to_client ? &c->log->msgs_out : &c->log->msgs_in))++;
}

/* "done", "client", "server", "idle", ... for <reason>. */
const char *cg_close_reason_name(int reason);

/* Ends a session of either mode: takes <c> off the worker's list, counts the close and
 * releases everything <c> holds (its server's active count too), then frees it. */
void cg_conn_end(struct cg_conn *c);

/* Takes <c> off its worker's list of connections (not coro_list_del(): the drain spread's
 * cursor, worker.c, steps over it first). cg_conn_end() does; a refused connection's
 * answer (proto/refusal.c), which never became a session, calls it itself. */
void cg_conn_unlink(struct cg_conn *c);

#endif
