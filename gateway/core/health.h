/* gateway/core/health.h — active health checks of the upstream servers (core/health.c). */
#ifndef CG_HEALTH_H
#define CG_HEALTH_H

struct cg_worker;

/* Starts one check coroutine per server of worker <w>'s generation (worker 0 only), in
 * w->checks. */
void cg_health_start(struct cg_worker *w);

/* Cancels every check coroutine of <w>; each leaves w->checks as it ends. */
void cg_health_stop(struct cg_worker *w);

#endif
