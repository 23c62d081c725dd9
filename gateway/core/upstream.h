/* gateway/core/upstream.h — upstream servers at run time: balancing, health, connection counts.
 *
 * An upstream's servers are shared by every worker. What all workers must agree on (up or
 * down, active connections) is atomic; what only steers one worker's choices (the smooth
 * weighted round-robin state, the random generator) is per worker, so picking a server
 * takes no lock.
 */
#ifndef CG_UPSTREAM_H
#define CG_UPSTREAM_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/config.h"

struct cg_chash;

#define CG_MAX_WORKERS 1024

/* Administrative state of a server, set at run time (stats socket `set server`). */
enum cg_server_state {
    CG_SERVER_READY = 0,    /* takes new connections */
    CG_SERVER_DRAIN,        /* no new connections; established ones go on; health checked */
    CG_SERVER_MAINT,        /* no new connections; established ones go on; not checked */
};

struct cg_server {
    const struct cg_server_conf *conf;      /* in the daemon's config */
    struct cg_upstream *up;
    unsigned           index;
    _Atomic int        down;                /* set by health checks */
    _Atomic int        state;               /* enum cg_server_state */
    _Atomic unsigned   active;              /* established connections through us */
    _Atomic uint64_t   connects;            /* successful connects, total */
    _Atomic uint64_t   connect_fails;       /* refused, reset, timed out */
    _Atomic uint64_t   connect_timeouts;
    _Atomic uint64_t   checks_failed;
    _Atomic uint64_t   local_errors;        /* connects and checks failed for a shortage of
                                             * ours (cg_local_error()): never held
                                             * against the server */
    unsigned           check_fails;         /* consecutive, health-check worker only */
    unsigned           check_oks;
    /* reload: this server in the next generation (reload.h), set when that one is built;
     * read only by workers moving their connections over to it */
    struct cg_server  *succ;
    /* failure breaker and connect quota (breaker.h) */
    _Atomic unsigned   pending;             /* connects in progress */
    _Atomic int        brk;                 /* enum cg_srv_brk: in, ejected, probing */
    _Atomic uint64_t   eject_until_ms;      /* ejected: probed from then on */
    _Atomic unsigned   consec_fails;        /* connects failed in a row */
    _Atomic uint64_t   win_start_ms;        /* the error-rate window */
    _Atomic unsigned   win_total;
    _Atomic unsigned   win_fails;
    _Atomic uint64_t   ejections;
    _Atomic uint64_t   restores;
    _Atomic uint64_t   probes_failed;
};

struct cg_upstream {
    const struct cg_upstream_conf *conf;
    struct cg_server  *servers;
    unsigned           nservers;
    _Atomic uint64_t   no_server;           /* client closed: no server could be reached */
    _Atomic uint64_t   hash_fallbacks;      /* balance = hash, but the request had no key:
                                             * round robin instead */
    struct cg_chash   *ring;                /* balance = hash (chash.h); else NULL */
    /* per-server breaker settings, replaced on reload (cg_upstream_breaker_set()) */
    _Atomic unsigned   max_pending;         /* 0 = no limit */
    _Atomic unsigned   eject_failures;      /* 0 = off */
    _Atomic unsigned   eject_error_rate;    /* percent; 0 = off */
    _Atomic unsigned   eject_min_connects;
    _Atomic uint64_t   eject_window_ms;
    _Atomic uint64_t   eject_cooldown_ms;
    /* per worker: smooth weighted round-robin current weights, then the RNG state */
    int               *wrr;                 /* [worker][server] */
    uint64_t          *rng;                 /* [worker] */
    uint32_t          *src_next;            /* [worker][IPv4, IPv6]: the next source
                                             * address of that family, mod their count */
    unsigned           nworkers;
};

/* Builds the run-time state of every upstream of <cfg> for <nworkers> workers. Returns an
 * array of cfg->nupstreams upstreams (free with cg_upstreams_free), or NULL (ENOMEM). */
struct cg_upstream *cg_upstreams_new(const struct cg_config *cfg, unsigned nworkers);
void cg_upstreams_free(struct cg_upstream *ups, size_t n);

/* Picks a server of <up> for worker <worker> by the upstream's balance method, skipping
 * servers that are down, at their connection limit, or set in <tried> (a bitmask of server
 * indexes; servers past 63 are never excluded). Returns NULL when none is eligible. */
struct cg_server *cg_upstream_pick(struct cg_upstream *up, unsigned worker, uint64_t tried);

/* cg_upstream_pick() for a client whose hash key (balance = hash) is *<key>: the first
 * server on the ring from the key's place that is eligible and not in <tried>, so a key
 * keeps its server while that server can take it, and a retry moves on to the key's next
 * one. <key> NULL (the request had no such key), or another balance method: as
 * cg_upstream_pick(), which for balance = hash is the weighted round robin. */
struct cg_server *cg_upstream_pick_key(struct cg_upstream *up, unsigned worker, uint64_t tried,
                                       const uint64_t *key);

/* The local address worker <worker>'s next connection to <srv> is made from, written to
 * <ss>: the upstream's source addresses of <srv>'s family in turn. NULL when it has none
 * (the kernel picks). */
const struct sockaddr *cg_upstream_source(struct cg_upstream *up, unsigned worker,
                                          const struct cg_server *srv,
                                          struct sockaddr_storage *ss);

/* 1 when <err> (a libuv error) is a shortage of this process or host (descriptors, memory,
 * buffers, local ports or addresses), not something the server did: such a failure is
 * counted in srv->local_errors and never towards a server's ejection or health. */
int cg_local_error(int err);

/* 1 when <srv> may take one more connection (ready, not down, not ejected or due for its
 * probe, below its per-server connection and pending-connect limits). */
int cg_server_is_eligible(const struct cg_server *srv);

/* Applies <cfg>'s per-server breaker settings to the upstreams of the same names in <ups>
 * (<n> of them): a reload. */
void cg_upstreams_apply(struct cg_upstream *ups, size_t n, const struct cg_config *cfg);

/* Reload: carries the run-time state of <old> (<nold> upstreams, the generation in force)
 * into <ups> (<n>, just built for the next one). Servers are matched by upstream name and
 * server address; a matched server gets the old one's health (down), administrative state,
 * breaker state and cumulative counters, and the old server's succ points at it. What is
 * not carried: active and pending (connections of the old generation stay counted there
 * until the workers move them, see worker.c), the health-check streaks (a server needs a
 * full rise/fall run again) and the balancers' per-worker state. Main thread. */
void cg_upstreams_carry(struct cg_upstream *ups, size_t n, struct cg_upstream *old,
                        size_t nold);

/* Records a health-check result for <srv>; returns 1 when it changed the server's state
 * (the caller logs it), 0 otherwise. Only the health-check worker calls this. */
int cg_server_check_result(struct cg_server *srv, int ok);

/* ------------------------------------------------------------------ server breaker
 *
   A server's failure breaker: consecutive failed connects (or WebSocket handshakes), or a
 * failure rate over a window, eject the server from balancing for eject_cooldown. Then the
 * next connection that picks it is the probe (only one at a time): success restores the
 * server, failure ejects it again. The server's state and counters are atomics of struct
 * cg_server (upstream.h).
 */

/* struct cg_server.brk */
enum cg_srv_brk {
    CG_SRV_IN,              /* balanced normally */
    CG_SRV_EJECTED,         /* out until eject_until_ms, then probed */
    CG_SRV_PROBING,         /* one connection is finding out */
};

/* Applies <uc>'s per-server breaker settings to <up> (start and reload). */
void cg_upstream_breaker_set(struct cg_upstream *up, const struct cg_srv_breaker_conf *uc);

/* Before connecting to <srv> at <now_ms>: returns 0 with a pending connect counted (give
 * it back with cg_server_connect_done()), *<probe> set when this connect is the probe of an
 * ejected server; -EBUSY when the server has max_pending_connects_per_server connects in
 * progress; -EAGAIN when it is ejected, or another connection probes it. */
int cg_server_connect_begin(struct cg_server *srv, uint64_t now_ms, int *probe);

/* The connect of cg_server_connect_begin() is over, whatever its result. */
void cg_server_connect_done(struct cg_server *srv);

/* Records a connect's (or backend handshake's) outcome for <srv> at <now_ms>: <ok> 1, 0 for
 * a failure described by <what> ("connection refused"), or -1 for neither (cancelled: a
 * probe is given back). Ejects or restores the server (logged, counted). */
void cg_server_report(struct cg_server *srv, int ok, uint64_t now_ms, const char *what);

const char *cg_srv_brk_name(int brk);       /* "in", "ejected", "probing" */

#endif
