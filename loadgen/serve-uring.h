/* loadgen/serve-uring.h — `serve --io io_uring`: the tcp echo through io_uring.
 *
 * An experiment (issue 21, step 2): does an io_uring I/O path save CPU per message over
 * libuv's epoll + read()/write() on the echo backend? One ring per worker thread, whose fd
 * the worker's uv loop watches, so libuv stays the loop; multishot accept on the listener;
 * multishot receive into a provided buffer ring fed from the worker's coroutine buffer pool;
 * each chunk echoed by a send of the same buffer; the SQEs of one wakeup submitted at once.
 * No coroutines: the echo is a handful of completion handlers. Only the plain tcp echo.
 */
#ifndef LG_SERVE_URING_H
#define LG_SERVE_URING_H

#include <stdint.h>
#include <uv.h>

#include "coro/coro.h"

struct lg_uring;

/* What one worker's ring did; written by the worker's thread only. */
struct lg_uring_stats {
    uint64_t conns;          /* connections accepted and served */
    uint64_t bytes_in;
    uint64_t bytes_out;
    uint64_t errors;         /* connections ended by an error (not EOF, not the stop) */
    uint64_t emfile;         /* accepts that met EMFILE/ENFILE: accepting paused */
    uint64_t accept_errors;  /* other accept failures */
    uint64_t nobufs;         /* receives that found the buffer ring empty */
    uint64_t paused;         /* receives cancelled because a peer did not read its echo */
    uint64_t submits;        /* io_uring_submit() calls */
    uint64_t wakeups;        /* times the loop found completions */
};

/* Serves the tcp echo on the listening socket <lfd> (which stays the caller's: close it
 * only after lg_uring_stop() has let the loop run out) on <loop>, with buffers from
 * <sched>'s pool, counting into <stats> (the caller's, zeroed, until lg_uring_close()).
 * Returns 0 with the ring in <*out>, or a negative errno with <*op> naming the call that
 * failed ("io_uring_queue_init()": no io_uring here, EPERM in a sandbox, ENOSYS...);
 * nothing is left behind on failure. */
int lg_uring_start(uv_loop_t *loop, struct coro_sched *sched, int lfd,
                   struct lg_uring_stats *stats, struct lg_uring **out, const char **op);

/* Stops accepting and ends every connection (what is being sent is cancelled). The ring's
 * handles stop once the last completion came back, so the loop can run out. Idempotent. */
void lg_uring_stop(struct lg_uring *u);

/* Releases the ring and gives its buffers back to the pool, at once (before the scheduler
 * is freed), and closes its handles: <u> is freed by their close callbacks, so the loop
 * must run once more. Call after the loop ran out (lg_uring_stop()), or after a failed
 * start of something else. NULL-safe. */
void lg_uring_close(struct lg_uring *u);

#endif
