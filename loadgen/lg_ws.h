/* loadgen/lg_ws.h — WebSocket for the load generator: the opening handshake on a coroutine
 * stream (client and server ends) and a thin wrapper over wslay's event API.
 *
 * The head parsing, Sec-WebSocket-Accept (SHA-1 + base64) and response checks are the
 * gateway's (gateway/handshake.c, linked into the loadgen). Frames are wslay's: the client
 * masks every frame it sends (RFC 6455 §5.3), the server never does. Bytes to send go to a
 * callback (the owner gathers them and writes); whole data messages come to another.
 * Control frames are answered by wslay: ping gets a pong, close gets a close.
 */
#ifndef LG_WS_H
#define LG_WS_H

#include <stddef.h>
#include <stdint.h>

#include "coro/coro.h"
#include "coro/io.h"

struct lg_run_cfg;
struct lg_wsc;

/* Takes <len> bytes to send (copied before returning). Returns 0 or a libuv error. */
typedef int (*lg_ws_send_fn)(void *ud, const void *p, size_t len);
/* Receives a whole data message (<text> 1: text, 0: binary), borrowed for the call. */
typedef void (*lg_ws_msg_fn)(void *ud, int text, const uint8_t *p, size_t len);

/* ------------------------------------------------------------------ both ends */

/* Makes a wslay context, client side (<client> 1: masked frames) or server side. Returns
 * it, or NULL when out of memory. */
struct lg_wsc *lg_ws_new(int client, lg_ws_send_fn send, lg_ws_msg_fn on_msg, void *ud);

/* Parses <len> received bytes (borrowed for the call), delivering messages and queueing
 * control answers. Returns 0; UV_EOF once a close frame came (the close answer is queued);
 * UV_EPROTO for a protocol error (a close 1002 is queued); UV_ENOMEM. */
int lg_wsc_feed(struct lg_wsc *w, const uint8_t *p, size_t len);

/* Queues a binary data message of <len> bytes (copied). Returns 0, UV_EPIPE after the close
 * was queued, or UV_ENOMEM. */
int lg_wsc_send(struct lg_wsc *w, const void *p, size_t len);

/* Like lg_wsc_send() with a text (<text> 1) or binary opcode. */
int lg_wsc_send_op(struct lg_wsc *w, int text, const void *p, size_t len);

/* Hands every queued frame to the send callback. Returns 0 or the callback's error. */
int lg_wsc_flush(struct lg_wsc *w);

/* Queues a close frame with <code> and hands it over. Idempotent. */
void lg_wsc_close(struct lg_wsc *w, uint16_t code);

/* 1 once a close frame was received and answered, or the context failed: nothing more
 * will be read or written. */
int lg_wsc_is_done(const struct lg_wsc *w);

void lg_wsc_free(struct lg_wsc *w);   /* NULL-safe */

/* ------------------------------------------------------------------ handshakes */

/* Client: sends the upgrade request for <cfg> (path, Host = target, extra headers) on the
 * connected <st> and checks the 101 answer, all within <timeout_ms>. Returns 0 with the
 * bytes that followed the head (frames the server sent at once) in <*tail>, NULL when none
 * (the caller feeds them to its context, then puts the buffer back); UV_ETIMEDOUT;
 * UV_EPROTO when the server refused or answered something malformed, or closed first;
 * another libuv error. The context is the caller's to make (lg_ws_new), when it needs one:
 * an idle connection does without its ~9 KB. */
int lg_wsc_handshake(struct coro_stream *st, const struct lg_run_cfg *cfg, int64_t timeout_ms,
                     struct coro_buf **tail);

/* Server: reads an upgrade request from <st> within <timeout_ms> and answers it: 101, or
 * an HTTP error for a bad request. Returns 0 after a 101, with the bytes that followed the
 * head in <*tail> (NULL when none; the caller feeds then puts it); 1 after answering with
 * an error status (close the connection after a flush); UV_ETIMEDOUT, UV_EOF, or another
 * libuv error. */
int lg_wss_accept(struct coro_stream *st, int64_t timeout_ms, struct coro_buf **tail);

#endif
