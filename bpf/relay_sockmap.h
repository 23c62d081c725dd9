/* bpf/relay_sockmap.h — what bench/floor_relay.c and its sk_skb program share.
 *
 * The sockhash maps a socket's cookie (SO_COOKIE) to the socket its bytes go to: a relayed
 * pair (client C, backend B) is two entries, cookie(C) -> B and cookie(B) -> C. The verdict
 * program runs for every skb that reaches a socket in the map and redirects it to the
 * egress of the socket stored under the receiving socket's cookie.
 */
#ifndef RELAY_SOCKMAP_H
#define RELAY_SOCKMAP_H

#define RELAY_SOCKMAP_MAX 65536     /* entries: two per relayed connection */

#endif
