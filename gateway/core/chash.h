/* gateway/core/chash.h — the consistent-hash ring of an upstream with balance = hash.
 *
 * A ring (Karger et al. 1997, as ketama, HAProxy's hash-type consistent and Envoy's
 * ring_hash do it) rather than a Maglev table: what decides is the failover. A key whose
 * server is down, ejected, drained or full must go to another server while every other
 * key stays where it is, and a retry must move on again. On a ring that is simply the next
 * point clockwise that belongs to a server still usable: its order of servers for each key
 * is fixed by the configuration alone, so the keys of healthy servers never move, and no
 * table has to be rebuilt when a server's state changes (it changes in any worker, at any
 * time, and the table is shared). Maglev would need one table per set of usable servers,
 * or rehashing with its own, less even, failover. The price is memory and balance: a
 * server of weight w has w * CG_CHASH_POINTS points (fewer for very large upstreams, see
 * chash.c), enough for a spread within a few percent of the weights.
 *
 * Built once per configuration generation (cg_upstreams_new()) and never changed after:
 * workers read it without locks. Points are placed by cg_hash64() of the server's name as
 * written ("host:port"), so they depend neither on the process nor on the server's
 * position in the list: two gateways agree, and adding a server moves only the keys that
 * now land on its points (about 1/N of them).
 */
#ifndef CG_CHASH_H
#define CG_CHASH_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define CG_CHASH_POINTS     160             /* points per unit of weight (ketama's 160) */
#define CG_CHASH_MAX_POINTS (1u << 20)      /* a ring's points at most (16 MiB) */

struct cg_chash;

/* Builds the ring of the <n> servers at <servers> (their names and weights). Returns it
 * (free with cg_chash_free()), or NULL with errno ENOMEM. */
struct cg_chash *cg_chash_new(const struct cg_server_conf *servers, size_t n);
void cg_chash_free(struct cg_chash *ch);

/* Walks the ring clockwise from <key>'s place and returns the index of the first server
 * (an index into the servers the ring was built from) for which <usable>(<arg>, index)
 * says 1, asking about each server once; -1 when none is usable. */
int cg_chash_walk(const struct cg_chash *ch, uint64_t key,
                  int (*usable)(void *arg, unsigned server), void *arg);

/* The points of the ring (the tests check the weights' shares). */
size_t cg_chash_points(const struct cg_chash *ch);

#endif
