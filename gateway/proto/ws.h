/* gateway/proto/ws.h — a WebSocket listener's connection: handshake, backend, message relay.
 *
 * One coroutine per connection (cg_ws_session). It reads the opening request under the
 * listener's limits and handshake_timeout, answers health checks and refusals itself,
 * routes by path and Host, connects a backend server (with retries), performs the
 * backend's handshake (upstream_protocol = websocket) and only then answers 101. The relay
 * then forwards frame by frame in both directions with its own frame layer on each side
 * (the client side as a server: frames must be masked; the backend side as a client:
 * frames are masked with fresh keys): a frame's payload streams through as it arrives,
 * so no message is ever held whole. Limits, close handshakes, keepalive pings, rate limits
 * and backpressure are described in ws.c.
 */
#ifndef CG_WS_H
#define CG_WS_H

#include "core/worker.h"
#include "base/counters.h"

/* The coroutine body of a websocket listener's connection. Owns <arg> (a struct cg_conn
 * whose client stream is open): closes both streams, updates counters and frees it. */
void cg_ws_session(void *arg);

/* The session bodies of every listener mode (core/relay.h's for tcp, this one for
 * websocket), the size of a WebSocket session for the workers' slabs, and the end of a
 * worker's frame-context cache: what core needs of the protocols, for cg_daemon_start(). */
void cg_protocols_fill(struct cg_protocols *p);

#endif
