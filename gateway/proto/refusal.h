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
    int             reason;     /* enum cg_reject_reason */
    unsigned        retry_s;    /* Retry-After */
    uint64_t        max_head;   /* the listener's max_header_size */
};

/* Answers the WebSocket client on <fd>, which admission refused on <l> for <reason> (enum
 * cg_reject_reason), with 429 or 503 and Retry-After: <retry_s>, in a coroutine of <l>'s
 * worker. Returns 0 once <fd> is taken (closed already, should the coroutine not start),
 * or -ENOMEM with <fd> left to the caller. */
int cg_refusal_start(struct cg_wlistener *l, int fd, int reason, unsigned retry_s);

/* Answers the WebSocket client of <c> (its coroutine's caller; <c> stays the caller's, its
 * stream open) for <reason>: reads its opening request (until its empty line,
 * <max_head> bytes or [admission] reject_timeout, whichever first, never more), answers
 * 429 (a rate: come back later) or 503 (a quota, the breaker) with Retry-After: <retry_s>,
 * and lingers briefly for the client to close first. Counted like any refusal's answer.
 * Also for a connection refused after its PROXY header (core/conn.c). */
void cg_refusal_answer(struct cg_conn *c, int reason, unsigned retry_s, uint64_t max_head);

/* The coroutine body of a websocket listener's connection refused at accept. <arg> is a
 * struct cg_reject (owned: freed at the end). Reads the opening request (until its empty
 * line, max_header_size bytes or [admission] reject_timeout, whichever first, never more),
 * answers <status> with Retry-After, and closes; never touches an upstream. */
void cg_reject_session(void *arg);

#endif
