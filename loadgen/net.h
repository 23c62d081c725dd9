/* loadgen/net.h — socket addresses and listening sockets for corogate-loadgen.
 *
 * Addresses are numeric only ("127.0.0.1:9000", "[::1]:9000"): a load generator must say
 * exactly which address it uses, and no resolver runs on a worker thread.
 */
#ifndef LG_NET_H
#define LG_NET_H

#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* Room for "[<IPv6>]:65535" and its NUL. */
#define LG_ADDR_STRLEN (INET6_ADDRSTRLEN + 9)

/* Parses <s>, "IPv4:PORT" or "[IPv6]:PORT" with PORT 0..65535 in decimal, into <out>
 * (zeroed first). Returns 0, or -EINVAL for anything else (NULL, missing port, trailing
 * bytes, a host name). */
int lg_addr_parse(const char *s, struct sockaddr_storage *out);

/* Writes <sa> (AF_INET or AF_INET6) as "1.2.3.4:80" or "[::1]:80" into <buf> of <len>
 * bytes (LG_ADDR_STRLEN is enough) and returns <buf>; "?" for another family. */
char *lg_addr_format(const struct sockaddr *sa, char *buf, size_t len);

/* The port of <sa> in host order; 0 for a family other than AF_INET/AF_INET6. */
uint16_t lg_addr_port(const struct sockaddr *sa);

/* Sets the port of <sa> (AF_INET or AF_INET6) to <port>, given in host order. */
void lg_addr_set_port(struct sockaddr *sa, uint16_t port);

/* socklen_t of <sa>'s family: sizeof(struct sockaddr_in) or sizeof(struct sockaddr_in6). */
socklen_t lg_addr_len(const struct sockaddr *sa);

/* Opens a non-blocking, close-on-exec TCP socket with SO_REUSEADDR and SO_REUSEPORT, binds
 * it to <sa> and listens with <backlog>. Several such sockets on one address form a
 * reuseport group: the kernel spreads new connections across them. Returns the fd (the
 * caller owns it), or a negative errno with <*failed> naming the call that failed
 * ("socket()", "setsockopt(SO_REUSEPORT)", "bind()"...). */
int lg_listen_reuseport(const struct sockaddr *sa, int backlog, const char **failed);

#endif
