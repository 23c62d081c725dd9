/* gateway/observe/notify.h — the sd_notify protocol, spoken directly (no libsystemd).
 *
 * The service manager passes $NOTIFY_SOCKET: the path of an AF_UNIX datagram socket, or,
 * when it starts with '@', a name in the abstract namespace. Each state change is one
 * datagram of newline-separated VAR=VALUE assignments ("READY=1\nSTATUS=..."); nothing is
 * ever read back. Sends never block: a full socket buffer drops the datagram (logged once),
 * as does a manager that went away.
 *
 * The watchdog: $WATCHDOG_USEC (and, when set, $WATCHDOG_PID naming this process) asks for
 * WATCHDOG=1 at least that often; corogate sends it at half the period, and only while
 * every worker loop has proved it is alive (gateway/main.c).
 */
#ifndef CG_NOTIFY_H
#define CG_NOTIFY_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

struct cg_notify {
    int                fd;              /* -1: no manager to talk to */
    struct sockaddr_un addr;
    socklen_t          addrlen;
    uint64_t           watchdog_usec;   /* 0: no watchdog asked for (or not for us) */
    unsigned           dropped;         /* datagrams that could not be sent */
};

/* Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID into <n> (caller's storage) and
 * opens the socket. Without $NOTIFY_SOCKET, returns 0 and every send is a no-op. Returns 0,
 * or -EINVAL when $NOTIFY_SOCKET is malformed (not '/' or '@', or too long) or
 * $WATCHDOG_USEC is not a positive number, or the socket() error; <n> is then inert (but
 * the watchdog period is kept when only the socket was wrong). Logs why it failed. */
int cg_notify_init(struct cg_notify *n);

/* Closes what init opened. Idempotent. */
void cg_notify_deinit(struct cg_notify *n);

/* Sends the assignments formatted from <fmt> as one datagram (at most 4 KiB). Returns 0
 * (also when notifications are off), or a negative errno (-EAGAIN: the manager's queue
 * is full; the datagram is dropped and counted). */
int cg_notify_send(struct cg_notify *n, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* CLOCK_MONOTONIC in microseconds, as MONOTONIC_USEC= wants it. */
uint64_t cg_notify_monotonic_usec(void);

#endif
