/* gateway/base/counters.h — the ground floor: every counter and histogram of the daemon,
 * the dimensions they are counted by, and the cheap single-writer ways to bump them.
 *
 * Every room that counts imports this and nothing above it; observe/metrics.c renders what
 * is here. Worker and listener counters are written by their worker alone (a relaxed load
 * and store, no locked instruction) and read live by the main thread.
 */
#ifndef CG_COUNTERS_H
#define CG_COUNTERS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Adds <n> to a counter that only the calling thread writes. */
#define CG_STAT_ADD(field, n)                                                      \
    atomic_store_explicit(&(field),                                                \
                          atomic_load_explicit(&(field), memory_order_relaxed) + (n), \
                          memory_order_relaxed)

/* ------------------------------------------------------------------ dimensions */

/* Reasons counted in the rejected[] arrays (names: cg_reject_name()). A refusal over
 * [gateway] max_connections keeps its older counter, rejected_max. */
enum cg_reject_reason {
    CG_REJ_RATE,            /* the listener's connection_rate bucket is empty */
    CG_REJ_IP_RATE,         /* the client address's ip_connection_rate bucket is empty */
    CG_REJ_IP_QUOTA,        /* the client address holds max_connections_per_ip */
    CG_REJ_WORKER_QUOTA,    /* the worker holds max_connections_per_worker */
    CG_REJ_BREAKER,         /* the breaker is open, or half-open past its trickle */
    CG_REJ_N,
    CG_REJ_MAX_CONNS = CG_REJ_N,    /* [gateway] max_connections (rejected_max) */
    CG_REJ_ALL,
};

/* Connections refused for their PROXY protocol header (accept_proxy), by reason
 * (cg_proxy_reject_label()). */
enum cg_proxy_reject {
    CG_PPR_BAD,             /* not a header, a malformed one, a version not accepted, or
                             * the client closed before it was complete */
    CG_PPR_UNTRUSTED,       /* from a source outside accept_proxy_from */
    CG_PPR_TIMEOUT,         /* not complete within proxy_timeout */
    CG_PPR_N,
};

/* "bad_header", "untrusted", "timeout". */
const char *cg_proxy_reject_label(int reason);

/* cg_reject_name(): the [admission]/[breaker] key a reason refers to ("connection_rate",
 * ... "max_connections"), for logs; cg_reject_label(): the metrics label ("rate", ...). */
const char *cg_reject_name(int reason);
const char *cg_reject_label(int reason);

/* Opening handshakes refused or failed, by the HTTP status sent (cg_ws_status_index()). */
enum cg_ws_status_stat {
    CG_WSS_400, CG_WSS_403, CG_WSS_404, CG_WSS_405, CG_WSS_408, CG_WSS_414, CG_WSS_426,
    CG_WSS_429, CG_WSS_431, CG_WSS_500, CG_WSS_502, CG_WSS_503, CG_WSS_504, CG_WSS_OTHER,
    CG_WSS_N,
};

/* Close codes sent to or received from clients (cg_ws_close_index()). */
enum cg_ws_close_stat {
    CG_WSC_1000, CG_WSC_1001, CG_WSC_1002, CG_WSC_1003, CG_WSC_1005 /* no code */,
    CG_WSC_1007, CG_WSC_1008, CG_WSC_1009, CG_WSC_1010, CG_WSC_1011, CG_WSC_1012,
    CG_WSC_1013, CG_WSC_1014,
    CG_WSC_OTHER,
    CG_WSC_N,
};

/* Protocol violations by clients, by kind; each closes the connection with 1002, except
 * CG_WSP_UTF8 (1007). */
enum cg_ws_proto_stat {
    CG_WSP_UNMASKED,       /* a client frame without a mask */
    CG_WSP_RSV,            /* reserved bits set (no extension is ever negotiated) */
    CG_WSP_OPCODE,         /* a reserved opcode */
    CG_WSP_CONTROL,        /* a control frame fragmented or longer than 125 bytes */
    CG_WSP_CONTINUATION,   /* continuation outside a message, or a new one inside one */
    CG_WSP_LENGTH,         /* a length not in its shortest form, or with the top bit set */
    CG_WSP_CLOSE,          /* a close frame of 1 byte or with a code not allowed on the wire */
    CG_WSP_UTF8,           /* a text message or close reason that is not UTF-8 */
    CG_WSP_N,
};

/* HTTP status -> index; the index's label ("400" ... "other"). */
enum cg_ws_status_stat cg_http_status_index(int status);
const char *cg_http_status_label(enum cg_ws_status_stat i);
/* Close code -> index; the index's label ("1000" ... "1005" ... "other"). */
enum cg_ws_close_stat cg_ws_close_index(unsigned code);
const char *cg_ws_close_name(enum cg_ws_close_stat i);
/* A violation's label ("unmasked", "rsv" ...). */
const char *cg_ws_proto_name(enum cg_ws_proto_stat i);

/* ------------------------------------------------------------------ histograms */

/* Upper bounds (microseconds) of a latency histogram's buckets, Prometheus style: 25us,
 * 50us, 100us ... 10s; one more bucket counts what lies above the last bound (+Inf). */
#define CG_LAT_BOUNDS 18

/* A latency histogram written by one thread (relaxed load + store, like the worker
 * counters) and read live by any other. Buckets are not cumulative here; the exposition
 * adds them up. A reader may see a value's bucket before its sum, never a torn number. */
struct cg_lat_hist {
    _Atomic uint64_t bucket[CG_LAT_BOUNDS + 1];
    _Atomic uint64_t sum_us;
};

/* Slots of a log2 histogram of microseconds, runqlat style: slot 0 counts 0..1 us, slot i
 * (i >= 1) 2^i .. 2^(i+1)-1 us, the last one everything above. The layout of the kernel's
 * run-queue histogram (bpf/schedlat.h) and of coro_sched_ready_stats(). */
#define CG_LOG2_SLOTS 32

/* A log2 histogram of durations written by one thread (relaxed load + store) and read live
 * by any other, like struct cg_lat_hist. */
struct cg_log2_hist {
    _Atomic uint64_t slots[CG_LOG2_SLOTS];
    _Atomic uint64_t sum_ns;
    _Atomic uint64_t max_ns;
};

/* Upper bounds of struct cg_lat_hist's buckets, microseconds, increasing. */
extern const uint64_t cg_lat_bounds_us[CG_LAT_BOUNDS];

/* Counts <us> in <h>. Only the thread that owns <h> calls this. */
void cg_lat_hist_record(struct cg_lat_hist *h, uint64_t us);

/* Counts <ns> in <h> (its log2 slot of microseconds). Only the thread that owns <h> calls
 * this. */
void cg_log2_hist_record(struct cg_log2_hist *h, uint64_t ns);

/* ------------------------------------------------------------------ the counters */

/* Counters of one worker. Written by that worker only (relaxed load + store, no locked
 * instruction), read by anyone. */
struct cg_worker_stats {
    _Atomic uint64_t accepted;
    _Atomic uint64_t active;
    _Atomic uint64_t closed;
    _Atomic uint64_t rejected_max;     /* over max_connections */
    _Atomic uint64_t rejected[CG_REJ_N];   /* refused at accept, by reason (above) */
    _Atomic uint64_t accept_emfile;    /* EMFILE/ENFILE: shed and paused */
    _Atomic uint64_t accept_errors;
    _Atomic uint64_t proxy_rejected[CG_PPR_N];  /* PROXY protocol headers refused */
    _Atomic uint64_t no_server;        /* no upstream server could be reached */
    _Atomic uint64_t connect_fails;
    _Atomic uint64_t upstream_local_errors; /* connects given up for a shortage of ours */
    _Atomic uint64_t idle_timeouts;
    _Atomic uint64_t lifetime_closes;  /* closed at max_connection_lifetime */
    _Atomic uint64_t resets;           /* closed on a read/write error */
    _Atomic uint64_t bytes_in;         /* from clients */
    _Atomic uint64_t bytes_out;        /* to clients */
    struct cg_lat_hist connect_lat;    /* successful upstream connects */
    struct cg_lat_hist handshake_lat;  /* WebSocket handshakes, request to 101 sent */
    struct cg_lat_hist tls_lat;        /* client TLS handshakes completed */
    _Atomic uint64_t tls_up_handshakes;/* TLS handshakes with servers completed */
    _Atomic uint64_t tls_up_fails;     /* ... failed (counted against the server) */
    /* websocket listeners (indexes and labels above) */
    _Atomic uint64_t ws_upgrades;      /* 101 sent: relaying */
    _Atomic uint64_t ws_health;        /* health checks answered 200 */
    _Atomic uint64_t ws_hs_aborted;    /* the client left during the handshake */
    _Atomic uint64_t ws_hs_status[CG_WSS_N];      /* handshakes answered with an error */
    _Atomic uint64_t ws_upstream_fails;/* backend failed or botched its handshake */
    _Atomic uint64_t ws_upstream_refusals; /* backend answered an HTTP status, passed on */
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
    _Atomic uint64_t log_dropped;      /* connection log lines dropped: the ring was full */
    /* event-loop lag: per loop iteration, the time from returning from poll to entering the
     * next poll, i.e. how long that iteration's callbacks (coroutines included) ran */
    struct cg_log2_hist loop_busy;
};

/* TLS dimensions of the listener counters: the reasons of common/tls.h's enum cg_tls_fail
 * (slot 0, CG_TLS_OK, unused) and the AEAD cipher suites (core/tls.c's table; the last
 * slot counts any other). Labels: cg_tls_fail_label(), cg_tls_cipher_label(). */
#define CG_TLS_FAILS   7
#define CG_TLS_CIPHERS 10

/* Counters of one listener in one worker, written by that worker only. */
struct cg_listener_stats {
    _Atomic uint64_t accepted;
    _Atomic uint64_t active;
    _Atomic uint64_t rejected_max;     /* over max_connections */
    _Atomic uint64_t rejected[CG_REJ_N];   /* refused at accept, by reason (above) */
    _Atomic uint64_t proxy_rejected[CG_PPR_N];  /* PROXY protocol headers refused */
    _Atomic uint64_t bytes_in;         /* from clients */
    _Atomic uint64_t bytes_out;        /* to clients */
    /* tls = on: handshakes by outcome, protocol and cipher */
    _Atomic uint64_t tls_full;         /* full handshakes completed */
    _Atomic uint64_t tls_resumed;      /* resumed from a session ticket */
    _Atomic uint64_t tls_fail[CG_TLS_FAILS];
    _Atomic uint64_t tls_v12;
    _Atomic uint64_t tls_v13;
    _Atomic uint64_t tls_cipher[CG_TLS_CIPHERS];
};

/* ------------------------------------------------------------------ coroutine census */

#define CG_STALL_REASONS 16     /* park reasons told apart; more are counted as "other" */

/* One worker's coroutines as that worker counted them, on its own thread (only it may walk
 * its scheduler), for `show stats` and `show metrics`: a coroutine is stalled when it has
 * been parked for at least [gateway] coro_stall_threshold. */
struct cg_coro_census {
    int          answered;      /* 0: the worker had stopped, or did not answer in time */
    unsigned     total;         /* coroutines alive */
    unsigned     parked;
    unsigned     stalled;
    uint64_t     threshold_ms;  /* the worker's coro_stall_threshold; 0 = off */
    unsigned     nreasons;
    struct {
        const char *reason;     /* a park reason (static string of the runtime), or "other" */
        unsigned    n;
    } by[CG_STALL_REASONS];     /* stalled coroutines by park reason, in order of discovery */
};

/* Counts one coroutine into <cs>: <parked> 1 when it is parked, for <reason> (a static
 * string, kept), since <parked_ms>; stalled when that is at least cs->threshold_ms (never
 * when that is 0). Returns 1 when it is stalled. Worker thread. */
int cg_coro_census_add(struct cg_coro_census *cs, int parked, const char *reason,
                       uint64_t parked_ms);

#endif
