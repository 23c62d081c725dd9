/* gateway/admission-t.h — why a connection was refused at accept, for the counters that
 * struct cg_worker_stats and struct cg_listener_stats embed. Types only. */
#ifndef CG_ADMISSION_T_H
#define CG_ADMISSION_T_H

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

#endif
