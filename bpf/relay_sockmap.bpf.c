// SPDX-License-Identifier: GPL-2.0
/* bpf/relay_sockmap.bpf.c — the sk_skb verdict of bench/floor_relay.c's --sockmap mode:
 * each skb a relayed socket receives goes out on its peer socket, without waking the relay
 * process (the experiment of docs/bench.md, "sockmap: the kernel relays the bytes").
 * Attached to the map as BPF_SK_SKB_VERDICT (no stream parser: every skb as it comes).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "relay_sockmap.h"

struct {
    __uint(type, BPF_MAP_TYPE_SOCKHASH);
    __uint(max_entries, RELAY_SOCKMAP_MAX);
    __type(key, __u64);     /* the receiving socket's cookie */
    __type(value, __u64);   /* its peer (user space writes the peer's fd) */
} relay_peers SEC(".maps");

SEC("sk_skb")
int relay_verdict(struct __sk_buff *skb)
{
    __u64 cookie = bpf_get_socket_cookie(skb);

    /* SK_DROP when the peer is gone: the pair is being torn down. */
    return bpf_sk_redirect_hash(skb, &relay_peers, &cookie, 0);
}

char LICENSE[] SEC("license") = "GPL";
