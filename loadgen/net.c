/* loadgen/net.c — numeric socket addresses and SO_REUSEPORT listening sockets. */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net.h"

/* Parses a decimal port, all of <s>: no sign, no spaces, 0..65535. */
static int parse_port(const char *s, uint16_t *port)
{
    unsigned long v = 0;
    const char *p;

    if (*s == '\0' || strlen(s) > 5)
        return -EINVAL;
    for (p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return -EINVAL;
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v > 65535)
        return -EINVAL;
    *port = (uint16_t)v;
    return 0;
}

int lg_addr_parse(const char *s, struct sockaddr_storage *out)
{
    char host[INET6_ADDRSTRLEN];
    const char *colon, *end;
    uint16_t port;
    size_t n;

    if (!s || !out)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (s[0] == '[') {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;

        end = strchr(s, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        n = (size_t)(end - (s + 1));
        if (n == 0 || n >= sizeof(host))
            return -EINVAL;
        memcpy(host, s + 1, n);
        host[n] = '\0';
        if (parse_port(end + 2, &port) < 0)
            return -EINVAL;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
            return -EINVAL;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        return 0;
    }
    colon = strrchr(s, ':');
    if (!colon || strchr(s, ':') != colon)   /* a bare IPv6 address needs brackets */
        return -EINVAL;
    n = (size_t)(colon - s);
    if (n == 0 || n >= sizeof(host))
        return -EINVAL;
    memcpy(host, s, n);
    host[n] = '\0';
    if (parse_port(colon + 1, &port) < 0)
        return -EINVAL;
    {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;

        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
            return -EINVAL;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
    }
    return 0;
}

char *lg_addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN];

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(sin->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(sin6->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
    return buf;
}

uint16_t lg_addr_port(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)sa)->sin_port);
    if (sa->sa_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    return 0;
}

void lg_addr_set_port(struct sockaddr *sa, uint16_t port)
{
    if (sa->sa_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons(port);
    else if (sa->sa_family == AF_INET6)
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(port);
}

socklen_t lg_addr_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                     : sizeof(struct sockaddr_in);
}

int lg_listen_reuseport(const struct sockaddr *sa, int backlog, const char **failed)
{
    int fd = -1, one = 1, err;
    const char *op;

    op = "socket()";
    fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
    if (fd < 0)
        goto out_err;
    op = "setsockopt(SO_REUSEADDR)";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto out_close;
    op = "setsockopt(SO_REUSEPORT)";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto out_close;
    op = "bind()";
    if (bind(fd, sa, lg_addr_len(sa)) < 0)
        goto out_close;
    op = "listen()";
    if (listen(fd, backlog) < 0)
        goto out_close;
    return fd;

out_close:
    err = errno;
    close(fd);
    errno = err;
out_err:
    if (failed)
        *failed = op;
    return -errno;
}
