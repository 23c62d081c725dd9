/* loadgen/serve-log.h — `serve`'s lines on stderr, shared by its epoll path (serve.c) and
 * its io_uring path (serve-uring.c). */
#ifndef LG_SERVE_LOG_H
#define LG_SERVE_LOG_H

/* One line on stderr, "serve: " and <fmt>, with a single write(2), so that lines of
 * different threads never mix. */
void lg_serve_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
