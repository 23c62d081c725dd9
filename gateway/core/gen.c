/* gateway/core/gen.c — configuration generations: built, referenced, freed (see gen.h). */
#include <errno.h>
#include <stdlib.h>

#include "core/gen.h"

struct cg_gen *cg_gen_new(struct cg_config *cfg, unsigned nworkers, unsigned id)
{
    struct cg_gen *g = calloc(1, sizeof(*g));

    if (!g)
        return NULL;
    g->ups = cg_upstreams_new(cfg, nworkers);
    if (!g->ups) {
        free(g);
        errno = ENOMEM;
        return NULL;
    }
    g->cfg = cfg;
    g->id = id;
    atomic_init(&g->refs, 1);
    return g;
}

struct cg_gen *cg_gen_get(struct cg_gen *g)
{
    if (g)
        atomic_fetch_add_explicit(&g->refs, 1, memory_order_relaxed);
    return g;
}

void cg_gen_put(struct cg_gen *g)
{
    if (!g || atomic_fetch_sub_explicit(&g->refs, 1, memory_order_acq_rel) != 1)
        return;
    cg_upstreams_free(g->ups, g->cfg ? g->cfg->nupstreams : 0);
    cg_config_free(g->cfg);
    free(g);
}
