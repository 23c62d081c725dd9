/* gateway/core/types.h — the daemon's and its workers' types (worker.h has what they
 * do): what a connection (conn.c), the health checks and the protocols above read of their
 * worker without importing the worker's code. Types only.
 */
#ifndef CG_CORE_TYPES_H
#define CG_CORE_TYPES_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "coro/coro.h"
#include "coro/coro-t.h"
#include "coro/slab.h"
#include "base/counters.h"
#include "core/upstream.h"

struct cg_worker;
struct cg_schedlat;
struct cg_gen;
struct cg_admission;
struct cg_adm_listener;
struct cg_breaker;
struct cg_alog;
struct cg_conn;

/* One listener's socket in one worker. conf and up belong to the worker's generation
 * (reload.h); a connection takes its own settings from the generation it holds. */
struct cg_wlistener {
    struct cg_worker              *w;
    const struct cg_listener_conf *conf;
    struct cg_upstream            *up;
    unsigned                       index;     /* of conf in its configuration */
    struct cg_adm_listener        *adm;       /* its admission state (admission.h), found by
                                               * name at its first connection */
    uv_poll_t                      poll;      /* readable = connections to accept */
    uv_timer_t                     backoff;   /* resumes accepting after EMFILE */
    int                            fd;
    int                            paused;
    int                            handles;   /* poll and backoff initialised, not closed */
    unsigned                       alog_seq;  /* connections started: access_log_sample */
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
    /* The listeners as the main thread sees them (stats, metrics: counters only); from a
     * reload on, the array the worker is about to adopt. Main thread. */
    struct cg_wlistener    *ls;
    unsigned                nls;
    /* Reload (reload.h): the worker's own generation and listeners, on its thread only. */
    struct cg_gen          *gen;          /* a reference */
    struct cg_wlistener    *wls;
    unsigned                nwls;
    struct cg_wlistener     retired;      /* counters of connections whose listener went */
    struct cg_wlistener    *discarded;    /* a switch's array never adopted (stopping) */
    /* Liveness for the systemd watchdog: bumped by a timer of the worker's loop. */
    uv_timer_t              beat;
    _Atomic uint64_t        beats;
    /* Drain: websocket connections are sent 1001 over [gateway] drain_spread. */
    uv_timer_t              spread_timer;
    struct coro_list       *spread_next;  /* next connection to visit; cg_conn_end moves it */
    uint64_t                spread_start;
    unsigned                spread_total; /* websocket connections when the drain began */
    unsigned                spread_done;
    struct coro_list        conns;        /* live connections, to cancel on shutdown */
    struct coro_slab        conn_slab;    /* their struct cg_conn (coro/slab.h says why) */
    struct coro_slab        conn_pp_slab; /* accept_proxy listeners': cg_conn + cg_conn_addr */
    struct coro_slab        sess_slab;    /* the WebSocket ones' session state (ws.c) */
    struct coro_list        checks;       /* health-check coroutines (worker 0) */
    int                     reserve_fd;   /* spent to shed a connection on EMFILE */
    int                     stopping;
    unsigned                rejecting;    /* refused websocket clients being answered */
    struct coro_list        refusing;     /* their coroutines' conns (admission.h) */
    uv_timer_t              brk_timer;    /* worker 0: samples for the breaker */
    uv_check_t              lag_check;    /* after poll: an iteration's callbacks begin */
    uv_prepare_t            lag_prepare;  /* before poll: they ended (stats.loop_busy) */
    uint64_t                lag_start_ns; /* uv_hrtime() at lag_check; 0 = none yet */
    struct cg_worker_stats  stats;
    _Atomic int             tid;          /* gettid(), published once pinned; 0 before */
};

enum {
    CG_WREQ_NONE = 0,
    CG_WREQ_DRAIN,   /* stop accepting; let connections finish within drain_timeout */
    CG_WREQ_STOP,    /* stop accepting and close every connection now */
};

struct cg_wlistener;

/* What core needs of the protocols above it (proto/), handed down by whoever starts the
 * daemon (cg_protocols_fill() in proto/ws.h): core starts sessions and sizes their slabs
 * without importing protocol code. */
struct cg_protocols {
    void               (*session[2])(void *conn);   /* by enum cg_mode: the coroutine body */
    size_t               sess_size;                 /* the worker's session slab's objects */
    void               (*worker_end)(void);         /* on each worker's thread as it ends */
    /* Answers a refused client of a websocket listener (enum cg_reject_reason, Retry-After);
     * 0 once it took <fd>, else the caller closes it. */
    int                (*refuse)(struct cg_wlistener *l, int fd, int reason, unsigned retry_s);
    /* The same answer on a connection's own stream, from its coroutine (refused after its
     * PROXY header, core/conn.c), reading at most <max_head> bytes of its request; the
     * caller then ends the connection. NULL: it is closed unanswered. */
    void               (*refuse_conn)(struct cg_conn *c, int reason, unsigned retry_s,
                                      uint64_t max_head);
};

struct cg_daemon {
    struct cg_protocols  proto;          /* set before cg_daemon_start() */
    /* The generation in force for new connections (reload.h), and its cfg and ups: what
     * the main thread (stats, metrics, reload) reads. Workers read their own w->gen. */
    struct cg_gen       *gen;
    struct cg_config    *cfg;
    struct cg_upstream  *ups;
    struct cg_worker    *workers;
    unsigned             nworkers;
    _Atomic unsigned     conns;          /* established client connections, all workers */
    uint64_t             nofile;         /* RLIMIT_NOFILE in force */
    uv_loop_t           *loop;           /* main thread's */
    struct cg_schedlat  *schedlat;       /* BPF scheduler probes (schedlat.h); main thread */
    struct cg_admission *adm;            /* token buckets at accept (admission.h) */
    struct cg_breaker   *brk;            /* quotas and the overload breaker (breaker.h) */
    struct cg_alog      *alog;           /* the connection log's rings and writer */
    uint64_t             fd_base;        /* descriptors open before any connection */
    uint64_t             beat_ms;        /* workers' heartbeat period; set before start */
    int                  test_hooks;     /* CG_TEST_HOOKS=1: `debug` stats commands */
    /* Workers yet to switch to the latest generation (reload.c counts; 0 once a reload
     * is complete). */
    _Atomic unsigned     reload_pending;
    uv_mutex_t           start_lock;     /* workers report that they accept */
    uv_cond_t            start_cond;
    unsigned             started;
};

/* A new generation for one worker, built by reload.c and applied by cg_worker_switch() on
 * the worker's thread, which then owns it and every part of it. */
struct cg_wswitch {
    struct cg_wcall      call;           /* first; call.fn = cg_worker_switch */
    struct cg_gen       *gen;            /* a reference, the worker's from then on */
    struct cg_wlistener *ls;             /* the listeners under gen: w, conf, up, fd and a
                                          * snapshot of the counters set; handles not yet */
    unsigned             nls;
    /* Called on the worker's thread once applied (or discarded because the worker is
     * stopping), just before <sw> is freed. */
    void               (*done)(struct cg_wswitch *sw, int applied);
    void                *ud;
    struct {
        int              from;           /* same-named listener in the worker's current
                                          * array (counters, connections), or -1 */
        int              keep;           /* 1: ls[i].fd is that listener's socket */
    }                    map[];          /* [nls] */
};

#endif
