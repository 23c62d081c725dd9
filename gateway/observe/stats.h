/* gateway/observe/stats.h — the runtime API: a Unix stream socket taking one text command per line
 * (HAProxy's stats socket in spirit), and an optional HTTP listener serving GET /metrics.
 *
 * Both run on the main thread's loop, never on a worker's. Counters are read live (see
 * metrics.h); what only a worker may touch (its coroutines, for `show coros`) is asked of
 * it through cg_worker_call() and answered back through a uv_async_t, with a deadline.
 * Every client has a bounded input line, stops being read while more than a bounded amount
 * of output waits for it, and is closed after stats_timeout without progress: a silent or
 * slow client costs a descriptor and a few KB, and blocks nobody.
 *
 * Protocol: a command per line ("\n" or "\r\n"); every answer ends with an empty line;
 * errors start with "error: ". `prompt` switches to interactive mode ("> " after each
 * answer, for `socat - UNIX:PATH`); `quit` closes. Without prompt, the connection closes
 * once the client has shut its side down and every answer was sent, so
 * `echo "show info" | socat - UNIX:PATH` works.
 */
#ifndef CG_STATS_H
#define CG_STATS_H

#include <uv.h>

#include "observe/metrics.h"

struct cg_stats;

/* Opens the stats socket at rt->d->cfg->gw.stats_socket with the configured mode and
 * owner, and the metrics_listen HTTP listener when configured, on <loop>. A path that
 * exists is replaced only when it is a stale socket (connecting to it is refused); a
 * regular file, or a socket that some process still accepts on, is left alone and is an
 * error. Call before the workers start: the socket is bound under a restrictive umask.
 * Returns 0 with the server in *<out>, or a negative errno after logging why; nothing is
 * left open then. <rt> must outlive the server. */
int cg_stats_start(uv_loop_t *loop, struct cg_runtime *rt, struct cg_stats **out);

/* Closes the listeners (removing the socket file, if it is still ours) and every client.
 * The memory goes once the handles are closed and every worker answered what it was asked,
 * so run the loop afterwards. NULL-safe; idempotent. */
void cg_stats_stop(struct cg_stats *st);

#endif
