/* gateway/core/worker.h — the daemon and its workers: one pinned thread per core, each with its
 * own uv loop, coroutine scheduler and SO_REUSEPORT listening sockets.
 *
 * Workers share nothing on the data path. The main thread talks to them only through
 * uv_async_t (stop, drain) and reads their counters, which each worker alone writes.
 */
#ifndef CG_WORKER_H
#define CG_WORKER_H

#include "core/types.h"

/* Builds generation 1 from d->cfg (which it owns from then on, also on failure: d->cfg is
 * then NULL), binds every listener's sockets (one per worker, SO_REUSEPORT), starts the
 * workers and returns once all accept. Returns 0 or a negative errno; errors are logged
 * with the listener and address. On failure nothing is left running. */
int cg_daemon_start(struct cg_daemon *d);

/* Asks every worker to drain (<how> = CG_WREQ_DRAIN) or stop now (CG_WREQ_STOP). */
void cg_daemon_request(struct cg_daemon *d, int how);

/* Worker <w> (of <d>, number <id>): its loop, scheduler, timers and per-listener state
 * (core/daemon.c binds the sockets in the main thread so that errors surface before
 * anything runs). Returns 0 or a negative errno. */
int cg_worker_init(struct cg_daemon *d, struct cg_worker *w, unsigned id);

/* The worker thread's body (<arg>: its struct cg_worker): runs the loop until stopped,
 * then frees what cg_worker_init() made. */
void cg_worker_main(void *arg);

/* A worker whose thread never ran: closes and frees what cg_worker_init() made. */
void cg_worker_abandon(struct cg_worker *w);

/* Queues <call> (the caller's, kept until call->fn ran) for worker <w> and wakes it.
 * Returns 0, or -ESRCH when the worker has ended (call->fn will not run). Any thread. */
int cg_worker_call(struct cg_worker *w, struct cg_wcall *call);

/* Waits for every worker thread to end and frees what start allocated, the daemon's
 * generation included (d->gen, d->cfg and d->ups are NULL afterwards). */
void cg_daemon_join(struct cg_daemon *d);

/* Applies the admission and breaker settings of <cfg> (a reloaded configuration, which the
 * caller keeps or frees afterwards: nothing of it is kept) to the running daemon <d>:
 * [admission], [breaker], [gateway] max_connections and the listeners' and upstreams'
 * overrides, matched by name. Main thread. */
void cg_daemon_apply_limits(struct cg_daemon *d, const struct cg_config *cfg);

/* The cg_wcall function of a struct cg_wswitch: adopts sw->gen and sw->ls in worker <w>.
 * Queued sockets of listeners that went are accepted under the old generation first, so no
 * connection already queued is refused; established connections keep their generation;
 * their listener counters and server accounting move over to the same-named listener and
 * the same server of the new one (when there is one). */
void cg_worker_switch(struct cg_worker *w, struct cg_wcall *call);

/* Watches <l>'s listening socket (l->fd) from <loop>: its poll and back-off handles.
 * Returns 0 or a libuv error. */
int cg_wlistener_watch(struct cg_wlistener *l, uv_loop_t *loop);

/* Starts accepting on <l> (watched). Its worker's thread. */
void cg_wlistener_accept(struct cg_wlistener *l);

/* Accepts what is queued on <l>, a socket about to close, so that nothing already queued
 * is refused. Its worker's thread. */
void cg_wlistener_accept_queued(struct cg_wlistener *l);


/* Copies every counter of <src> to <dst>. */
void cg_listener_stats_copy(struct cg_listener_stats *dst, const struct cg_listener_stats *src);

/* Test hook (`debug stall-worker`, only with CG_TEST_HOOKS=1): blocks worker <w>'s thread
 * for <ms> milliseconds, as a hung worker would. Returns 0, -ENOMEM or -ESRCH. */
int cg_worker_stall(struct cg_worker *w, unsigned ms);

/* Opens a listening TCP socket on <addr> with SO_REUSEADDR and SO_REUSEPORT, non-blocking,
 * listening with <backlog>. Returns the fd or a negative errno. */
int cg_listen_socket(const struct sockaddr *addr, socklen_t len, int backlog);

#endif
