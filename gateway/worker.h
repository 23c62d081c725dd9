/* gateway/worker.h — the daemon and its workers: one pinned thread per core, each with its
 * own uv loop, coroutine scheduler and SO_REUSEPORT listening sockets.
 *
 * Workers share nothing on the data path. The main thread talks to them only through
 * uv_async_t (stop, drain) and reads their counters, which each worker alone writes.
 */
#ifndef CG_WORKER_H
#define CG_WORKER_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "config.h"
#include "coro/coro.h"
#include "coro/coro-t.h"
#include "metrics-t.h"
#include "upstream.h"
#include "ws-t.h"

/* Counters of one worker. Written by that worker only (relaxed load + store, no locked
 * instruction), read by anyone. */
struct cg_worker_stats {
    _Atomic uint64_t accepted;
    _Atomic uint64_t active;
    _Atomic uint64_t closed;
    _Atomic uint64_t rejected_max;     /* over max_connections */
    _Atomic uint64_t accept_emfile;    /* EMFILE/ENFILE: shed and paused */
    _Atomic uint64_t accept_errors;
    _Atomic uint64_t no_server;        /* no upstream server could be reached */
    _Atomic uint64_t connect_fails;
    _Atomic uint64_t idle_timeouts;
    _Atomic uint64_t resets;           /* closed on a read/write error */
    _Atomic uint64_t bytes_in;         /* from clients */
    _Atomic uint64_t bytes_out;        /* to clients */
    struct cg_lat_hist connect_lat;    /* successful upstream connects */
    struct cg_lat_hist handshake_lat;  /* WebSocket handshakes, request to 101 sent */
    /* websocket listeners (indexes in ws-t.h; names from ws.h) */
    _Atomic uint64_t ws_upgrades;      /* 101 sent: relaying */
    _Atomic uint64_t ws_health;        /* health checks answered 200 */
    _Atomic uint64_t ws_hs_aborted;    /* the client left during the handshake */
    _Atomic uint64_t ws_hs_status[CG_WSS_N];      /* handshakes answered with an error */
    _Atomic uint64_t ws_upstream_fails;/* backend refused or botched its handshake */
    _Atomic uint64_t ws_close_sent[CG_WSC_N];     /* close frames sent to clients */
    _Atomic uint64_t ws_close_rcvd[CG_WSC_N];     /* close frames received from clients */
    _Atomic uint64_t ws_proto_errors[CG_WSP_N];   /* client protocol violations by kind */
    _Atomic uint64_t ws_upstream_proto_errors;    /* backend protocol violations */
    _Atomic uint64_t ws_msgs_in;       /* messages from clients */
    _Atomic uint64_t ws_msgs_out;      /* messages to clients */
    _Atomic uint64_t ws_too_big;       /* closed 1009 */
    _Atomic uint64_t ws_rate_limited;  /* closed 1008 or delayed by the message rate limit */
    _Atomic uint64_t ws_keepalive_timeouts;
    _Atomic uint64_t ws_close_timeouts;/* close handshakes cut at close_timeout */
};

/* Counters of one listener in one worker, written by that worker only. */
struct cg_listener_stats {
    _Atomic uint64_t accepted;
    _Atomic uint64_t active;
    _Atomic uint64_t rejected_max;     /* over max_connections */
    _Atomic uint64_t bytes_in;         /* from clients */
    _Atomic uint64_t bytes_out;        /* to clients */
};

#define CG_STAT_ADD(field, n)                                                      \
    atomic_store_explicit(&(field),                                                \
                          atomic_load_explicit(&(field), memory_order_relaxed) + (n), \
                          memory_order_relaxed)

struct cg_worker;
struct cg_schedlat;

/* One listener's socket in one worker. */
struct cg_wlistener {
    struct cg_worker              *w;
    const struct cg_listener_conf *conf;
    struct cg_upstream            *up;
    uv_poll_t                      poll;      /* readable = connections to accept */
    uv_timer_t                     backoff;   /* resumes accepting after EMFILE */
    int                            fd;
    int                            paused;
    struct cg_listener_stats       stats;
};

/* A function run on a worker's thread on behalf of another thread: how the main thread
 * asks a worker about what only the worker may touch (its coroutines). */
struct cg_wcall {
    struct cg_wcall *next;
    /* Runs once on <w>'s thread, from its loop or, when the worker is stopping, after its
     * loop ended (its scheduler still there). Hands its result back itself. */
    void           (*fn)(struct cg_worker *w, struct cg_wcall *call);
};

struct cg_worker {
    struct cg_daemon       *d;
    unsigned                id;
    int                     cpu;          /* pinned to, or -1 */
    uv_thread_t             thread;
    uv_loop_t               loop;
    struct coro_sched      *sched;
    uv_async_t              async;        /* stop / drain requests from the main thread */
    uv_mutex_t              lock;         /* guards async_closed against a late request */
    int                     async_closed;
    struct cg_wcall        *calls;        /* queued calls, newest first; under lock */
    uv_timer_t              drain_timer;
    _Atomic int             request;      /* CG_WREQ_* */
    struct cg_wlistener    *ls;
    unsigned                nls;
    struct coro_list        conns;        /* live connections, to cancel on shutdown */
    struct coro_list        checks;       /* health-check coroutines (worker 0) */
    int                     reserve_fd;   /* spent to shed a connection on EMFILE */
    int                     stopping;
    struct cg_worker_stats  stats;
    _Atomic int             tid;          /* gettid(), published once pinned; 0 before */
};

enum {
    CG_WREQ_NONE = 0,
    CG_WREQ_DRAIN,   /* stop accepting; let connections finish within drain_timeout */
    CG_WREQ_STOP,    /* stop accepting and close every connection now */
};

struct cg_daemon {
    struct cg_config    *cfg;
    struct cg_upstream  *ups;
    struct cg_worker    *workers;
    unsigned             nworkers;
    _Atomic unsigned     conns;          /* established client connections, all workers */
    uint64_t             nofile;         /* RLIMIT_NOFILE in force */
    uv_loop_t           *loop;           /* main thread's */
    struct cg_schedlat  *schedlat;       /* BPF scheduler probes (schedlat.h); main thread */
};

/* Binds every listener's sockets (one per worker, SO_REUSEPORT), starts the workers and
 * returns once all accept. Returns 0 or a negative errno; errors are logged with the
 * listener and address. On failure nothing is left running. */
int cg_daemon_start(struct cg_daemon *d);

/* Asks every worker to drain (<how> = CG_WREQ_DRAIN) or stop now (CG_WREQ_STOP). */
void cg_daemon_request(struct cg_daemon *d, int how);

/* Queues <call> (the caller's, kept until call->fn ran) for worker <w> and wakes it.
 * Returns 0, or -ESRCH when the worker has ended (call->fn will not run). Any thread. */
int cg_worker_call(struct cg_worker *w, struct cg_wcall *call);

/* Waits for every worker thread to end and frees what start allocated. */
void cg_daemon_join(struct cg_daemon *d);

/* Opens a listening TCP socket on <addr> with SO_REUSEADDR and SO_REUSEPORT, non-blocking,
 * listening with <backlog>. Returns the fd or a negative errno. */
int cg_listen_socket(const struct sockaddr *addr, socklen_t len, int backlog);

#endif
