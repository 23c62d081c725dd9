/* gateway/base/cidr.h — lists of address blocks ("10.0.0.0/8 ::1 192.0.2.7"), parsed from
 * config values and matched against a client's address: accept_proxy_from and
 * trusted_proxies; and an address's text form. Pure functions over the caller's memory;
 * no I/O. */
#ifndef CG_CIDR_H
#define CG_CIDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* One block: IPv4 is kept as IPv4-mapped IPv6 (::ffff:a.b.c.d, prefix + 96), so that an
 * IPv4 client seen on a dual-stack socket matches an IPv4 block. */
struct cg_cidr {
    uint8_t  addr[16];      /* masked to <bits> */
    uint8_t  bits;          /* 0..128 */
};

/* Parses one block, "A", "A/N" (A IPv4 or IPv6, brackets allowed around IPv6) into <c>.
 * Returns 0, or -EINVAL (not an address), -ERANGE (prefix out of range). */
int cg_cidr_parse(const char *s, struct cg_cidr *c);

/* Parses the blank- or comma-separated list <s> into a malloc'ed array (*<out>, freed by
 * the caller with free(); NULL when the list is empty) of *<n> blocks. On an error returns
 * -EINVAL or -ERANGE with the offending item copied into <bad> (<badsize> bytes), or
 * -ENOMEM; *<out> is then NULL. */
int cg_cidr_list_parse(const char *s, struct cg_cidr **out, size_t *n, char *bad,
                       size_t badsize);

/* 1 when <sa> (AF_INET or AF_INET6) lies in one of the <n> blocks of <list>, else 0. */
int cg_cidr_list_match(const struct cg_cidr *list, size_t n, const struct sockaddr *sa);

/* Same for the address text <s> ("192.0.2.1", "2001:db8::1", "[::1]"): 0 when it is not
 * an address. */
int cg_cidr_list_match_text(const struct cg_cidr *list, size_t n, const char *s, size_t len);

/* The client of an X-Forwarded-For value <xff> (NULL: none) received from a trusted proxy,
 * as nginx's realip with real_ip_recursive finds it: the rightmost address not in the <n>
 * blocks of <list> (or the leftmost when all are trusted), copied into <out> of <size>.
 * Returns 1, or 0 when <xff> holds no address (an item that is not one ends the walk). */
int cg_cidr_xff_client(const struct cg_cidr *list, size_t n, const char *xff, char *out,
                       size_t size);

/* The text form of <sa>'s address ("192.0.2.1", "2001:db8::1") into <buf> of <size> (46
 * bytes hold any). Returns 0, or -EAFNOSUPPORT (neither AF_INET nor AF_INET6: <buf>
 * untouched), -ENOSPC. IPv4 without inet_ntop(), whose snprintf() was a tenth of a
 * WebSocket connection's user-space instructions. */
int cg_addr_name(const struct sockaddr *sa, char *buf, size_t size);

#endif
