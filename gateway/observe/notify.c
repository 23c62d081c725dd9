/* gateway/observe/notify.c — sd_notify over a datagram socket; see notify.h. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/parse.h"
#include "base/log.h"
#include "observe/notify.h"

#define NOTIFY_MAX 4096

static int read_watchdog(struct cg_notify *n)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    uint64_t v, p;

    if (!usec)
        return 0;
    if (cg_parse_u64(usec, 0, UINT64_MAX, &v) < 0 || v == 0) {
        cg_error("sd_notify: WATCHDOG_USEC=\"%s\" is not a positive number; no watchdog",
                 usec);
        return -EINVAL;
    }
    /* Set for another process (a shell that started us): not ours to feed. */
    if (pid && (cg_parse_u64(pid, 0, UINT64_MAX, &p) < 0 || p != (uint64_t)getpid())) {
        cg_info("sd_notify: WATCHDOG_PID=%s is not this process; no watchdog", pid);
        return 0;
    }
    n->watchdog_usec = v;
    return 0;
}

int cg_notify_init(struct cg_notify *n)
{
    const char *path = getenv("NOTIFY_SOCKET");
    size_t len;
    int err;

    memset(n, 0, sizeof(*n));
    n->fd = -1;
    err = read_watchdog(n);
    if (!path)
        return err;
    len = strlen(path);
    if ((path[0] != '/' && path[0] != '@') || len < 2 || len >= sizeof(n->addr.sun_path)) {
        cg_error("sd_notify: NOTIFY_SOCKET=\"%s\" is not an absolute path or an @abstract "
                 "name of at most %zu bytes; not notifying", path,
                 sizeof(n->addr.sun_path) - 1);
        return -EINVAL;
    }
    n->addr.sun_family = AF_UNIX;
    memcpy(n->addr.sun_path, path, len);
    if (path[0] == '@')
        n->addr.sun_path[0] = '\0';      /* abstract: the name is the bytes after the NUL */
    /* An abstract name is exactly <len> bytes long; a path ends at its NUL. */
    n->addrlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                             (path[0] == '/' ? 1 : 0));
    n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (n->fd < 0) {
        err = -errno;
        cg_error("sd_notify: socket(): %s; not notifying", strerror(-err));
        return err;
    }
    cg_info("sd_notify: notifying %s%s", path,
            n->watchdog_usec ? ", watchdog on" : "");
    return err;
}

void cg_notify_deinit(struct cg_notify *n)
{
    if (n->fd >= 0)
        close(n->fd);
    n->fd = -1;
}

int cg_notify_send(struct cg_notify *n, const char *fmt, ...)
{
    char msg[NOTIFY_MAX];
    va_list ap;
    int len, err;

    if (n->fd < 0)
        return 0;
    va_start(ap, fmt);
    len = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (len < 0)
        return -EINVAL;
    if ((size_t)len >= sizeof(msg))
        len = sizeof(msg) - 1;       /* a STATUS= cut short beats no message */
    for (;;) {
        if (sendto(n->fd, msg, (size_t)len, MSG_NOSIGNAL, (struct sockaddr *)&n->addr,
                   n->addrlen) >= 0)
            return 0;
        if (errno != EINTR)
            break;
    }
    err = -errno;
    if (n->dropped++ == 0)
        cg_warn("sd_notify: sendto(): %s; notification dropped (logged once)",
                strerror(-err));
    return err;
}

uint64_t cg_notify_monotonic_usec(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}
