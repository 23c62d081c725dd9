/* gateway/core/reload.h — reloading the configuration in place: the next generation
 * (gen.h) built, bound and handed to the workers.
 *
 * A reload (SIGHUP, `reload` on the stats socket) on the main thread:
 *   1. the caller loads and validates the file; an invalid one changes nothing;
 *   2. cg_reload_apply(): keys that only a restart can change are kept as they are (and
 *      logged); the listeners are planned: one with the same name and bind address keeps
 *      its sockets (a new backlog is applied with listen()), others get new sockets, bound
 *      now, before any old one closes; a failure to bind abandons the reload;
 *   3. the next generation is built and the upstream state carried into it
 *      (cg_upstreams_carry()), the daemon's admission and breaker limits are applied;
 *   4. each worker gets a struct cg_wswitch through cg_worker_call() and switches on its
 *      own thread (cg_worker_switch()): new sockets watched, the queues of sockets that go
 *      accepted, then those sockets closed; connections stay on their generation;
 *   5. the main thread learns that every worker has switched from cg_reload_poll().
 */
#ifndef CG_RELOAD_H
#define CG_RELOAD_H

#include <stddef.h>

#include "config/config.h"
#include "core/gen.h"

struct cg_daemon;

struct cg_reload;

/* Prepares reloading for the running daemon <d> (started). Returns the reloader (free it
 * with cg_reload_free() once the workers are joined) or NULL (ENOMEM). */
struct cg_reload *cg_reload_new(struct cg_daemon *d);

/* Applies the loaded and valid <cfg> (taken over, also on failure) to the daemon, as
 * described above. Returns 0 once every worker has been sent the new generation (d->gen,
 * d->cfg and d->ups are the new ones); or -EADDRINUSE and the other errors of binding a
 * new listener, -ENOMEM, -ESHUTDOWN while the daemon drains: nothing changed then. Writes
 * a one-line summary (what changed, or why nothing did) to <msg> of <size>, and logs the
 * details. Main thread. */
int cg_reload_apply(struct cg_reload *r, struct cg_config *cfg, char *msg, size_t size);

/* Returns the id of the latest generation when every worker has switched to it since the
 * last call that returned it, else 0: the main thread polls this to learn that a reload
 * is complete. */
unsigned cg_reload_poll(struct cg_reload *r);

/* Workers that have not switched to the latest generation yet. Any thread. */
unsigned cg_reload_pending(const struct cg_reload *r);

/* Refuses further reloads (the daemon drains). Main thread. */
void cg_reload_shutdown(struct cg_reload *r);

/* Frees <r>. Call once the workers are joined (they report to it until they end).
 * NULL-safe. */
void cg_reload_free(struct cg_reload *r);

#endif
