/* loadgen/lg_client.h — the client side of `corogate-loadgen run`: one process's share.
 *
 * A process runs cfg->threads threads, each with its own uv loop and coroutine scheduler;
 * every simulated connection is one coroutine on one of them. The connections of the whole
 * run (all processes) have global indices 0..N-1; index g belongs to share g mod (P * T),
 * share s = proc * T + thread, and binds source address g mod nsources. Each thread opens
 * its share at its part of the connect rate.
 *
 * Phases of a process: ramp (every connection attempted once; done when each attempt has
 * succeeded or failed), steady (held for the duration: idle, or traffic), stop (no new
 * messages; replies still in flight get cfg->drain_ms), close. Traffic starts on each
 * connection as soon as it is up, ramp included; throughput is taken over the steady phase.
 */
#ifndef LG_CLIENT_H
#define LG_CLIENT_H

#include <stdint.h>
#include <sys/socket.h>

#include "lg_report.h"
#include "lg_tls.h"
#include "net.h"

enum lg_mode {
    LG_MODE_TCP = 0,
    LG_MODE_WS,
};

enum lg_traffic {
    LG_TRAFFIC_IDLE = 0,   /* --hold: connections stay open and silent */
    LG_TRAFFIC_RATE,       /* --message-rate: open loop, constant rate per connection */
    LG_TRAFFIC_CLOSED,     /* --closed-loop: next message when the echo is back */
    LG_TRAFFIC_PUSH,       /* --push-recv: send nothing, check what `serve --push` sends */
    LG_TRAFFIC_CHURN,      /* --churn: connect, one round trip, close; again until the end */
};

#define LG_MAX_HEADERS 16

/* What `run` was asked to do. Read-only once the run starts. */
struct lg_run_cfg {
    enum lg_mode     mode;
    enum lg_traffic  traffic;
    struct sockaddr_storage target;
    char             target_str[LG_ADDR_STRLEN];
    const char      *path;                  /* ws: request target, "/" by default */
    const char      *headers[LG_MAX_HEADERS];   /* ws: extra "K: V" lines */
    unsigned         nheaders;
    uint64_t         connections;
    double           connect_rate;          /* per second, whole run */
    uint64_t         duration_ms;           /* steady phase */
    uint32_t         message_size;
    double           message_rate;          /* per connection per second (open loop) */
    uint64_t         messages;              /* per connection, then silent; 0 = no limit */
    uint32_t        *sources;               /* IPv4, network order; NULL: no bind */
    uint32_t         nsources;
    unsigned         threads;
    unsigned         procs;
    int64_t          connect_timeout_ms;    /* TCP connect, TLS and WebSocket handshakes */
    int64_t          reply_timeout_ms;      /* closed loop: echo not back, counted lost */
    int64_t          drain_ms;              /* after the stop: wait for replies in flight */
    const char      *json_path;
    const char      *plot_path;
    int              quiet;                 /* no progress lines */
    /* --tls: a TLS handshake (common/tls.h) after each TCP connect, before the ws upgrade */
    int              tls;
    struct lg_tls_opts tls_opts;            /* what tls_ctx was made from */
    const char      *sni;                   /* server name sent, and verified with --tls-verify;
                                             * NULL: none */
    int              tls_resume;            /* offer the thread's last session ticket */
    struct ssl_ctx_st *tls_ctx;             /* the process's context, made before the threads
                                             * (before the fork with --procs) */
};

/* Where a process's progress and result go: printed by this process (procs = 1) or sent
 * to the parent through a pipe. Called on the process's main thread. */
struct lg_sink {
    /* Once a second: the process's counters and round-trip histogram so far. */
    void (*progress)(struct lg_sink *s, const struct lg_counters *c,
                     const struct cg_hist *rtt);
    void  *ud;
};

/* Runs share <proc> (0 .. cfg->procs - 1) of <cfg> in this process and fills <res>
 * (initialised with lg_result_init by the caller) with its merged counters and histograms.
 * SIGINT/SIGTERM stop it gracefully (a second one cancels at once). Returns 0 when the run
 * took place (whatever its outcome: <res> tells), or a negative errno when it could not
 * start (a message was printed). */
int lg_client_run(const struct lg_run_cfg *cfg, unsigned proc, struct lg_sink *sink,
                  struct lg_result *res);

#endif
