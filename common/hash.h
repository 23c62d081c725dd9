/* common/hash.h — a fixed 64-bit hash of bytes, the same in every process and on every
 * machine: the consistent-hash balancing of upstreams (gateway/core/chash.h) places servers
 * and client keys with it, so two gateways with the same configuration send a key to the
 * same server. Not for hash tables a peer can flood (it has no secret seed: those use a
 * per-process seed, as guard/admission.c does). */
#ifndef CG_HASH_H
#define CG_HASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH64 (Yann Collet's xxHash, 64-bit variant, as specified in xxhash's doc/
 * xxhash_spec.md) of the <len> bytes at <data> with <seed>; the bytes are read as
 * little-endian words on any host. */
uint64_t cg_hash64(const void *data, size_t len, uint64_t seed);

#endif
