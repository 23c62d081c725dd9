/* gateway/proto/refusal.h — answering a WebSocket client that admission refused: the
 * guard rooms decide and give a reason (guard/admission.h, guard/breaker.h); this room
 * turns it into HTTP (429 or 503 with Retry-After). */
#ifndef CG_REFUSAL_H
#define CG_REFUSAL_H

#include <stdint.h>

#include "core/conn.h"

/* A websocket connection refused at accept, answered by cg_reject_session(). */
struct cg_reject {
    struct cg_conn  c;          /* first; in the worker's refusing list. Only c.client, c.w
                                 * and c.co are used: a reload may retire c.l meanwhile */
    int             status;     /* 429 (a rate) or 503 (a quota, the breaker) */
    unsigned        retry_s;    /* Retry-After */
    uint64_t        max_head;   /* the listener's max_header_size */
};

/* The coroutine body of a websocket listener's connection refused at accept. <arg> is a
 * struct cg_reject (owned: freed at the end). Reads the opening request (until its empty
 * line, max_header_size bytes or [admission] reject_timeout, whichever first, never more),
 * answers <status> with Retry-After, and closes; never touches an upstream. */
void cg_reject_session(void *arg);

#endif
