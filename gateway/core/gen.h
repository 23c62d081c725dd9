/* gateway/core/gen.h — configuration generations.
 *
 * A generation (struct cg_gen) is a loaded configuration with the run-time state of its
 * upstreams built for it. It is reference-counted: the daemon holds the one in force for
 * new connections (d->gen), each worker the one it accepts with (w->gen), each connection
 * the one it started in, until it ends: its listener's settings (timeouts, limits, rates),
 * its routes, its upstream and server come from there, so a reload (reload.h) never changes
 * what an established connection does. A generation is freed with its last reference, on
 * whichever thread drops it.
 */
#ifndef CG_GEN_H
#define CG_GEN_H

#include <stdatomic.h>

#include "config/config.h"
#include "core/upstream.h"

struct cg_gen {
    struct cg_config   *cfg;        /* owned */
    struct cg_upstream *ups;        /* owned: cfg->nupstreams of them */
    unsigned            id;         /* 1 at start, one more per applied reload */
    _Atomic unsigned    refs;
};

/* Builds a generation of <cfg> (taken over on success only) with upstream state for
 * <nworkers> workers, numbered <id>, holding one reference. Returns it, or NULL (ENOMEM). */
struct cg_gen *cg_gen_new(struct cg_config *cfg, unsigned nworkers, unsigned id);

/* Takes a reference to <g> and returns it. Any thread. NULL-safe. */
struct cg_gen *cg_gen_get(struct cg_gen *g);

/* Drops a reference to <g>; the last one frees it with its cfg and ups. Any thread.
 * NULL-safe. */
void cg_gen_put(struct cg_gen *g);

#endif
