/* gateway/core/relay.h — a TCP listener's connection: bytes both ways. */
#ifndef CG_RELAY_H
#define CG_RELAY_H


/* The coroutine body of a TCP listener's connection: picks and connects an upstream server
 * (with retries), relays both ways with backpressure and half-close until both sides are
 * done, the idle timeout, an error or a stop. Owns <arg> (a struct cg_conn whose client
 * stream is open): closes both streams, updates counters and frees it. */
void cg_tcp_session(void *arg);

#endif
