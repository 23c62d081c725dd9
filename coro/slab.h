/* coro/slab.h — fixed-size object caches for objects that live as long as a connection.
 *
 * Why not malloc: a connection's long-lived blocks (its conn, session, coroutine) are
 * allocated between its short-lived ones (a handshake's state, a deeper park's saved
 * stack). Freed, the short-lived blocks leave holes that malloc splits for the next
 * connections' long-lived blocks, and the remainders stay as unusable slivers between
 * them: measured 200-250 bytes per idle WebSocket connection. A slab keeps each kind of
 * long-lived object densely packed in its own mmap'd chunks, away from the heap, and
 * gives a chunk back to the system once it is empty (keeping one spare).
 *
 * One cache per thread: no locks; alloc and free on the thread that owns the cache.
 * Under AddressSanitizer the cache is plain calloc/free, so ASan still sees every object.
 */
#ifndef CORO_SLAB_H
#define CORO_SLAB_H

#include <stddef.h>
#include <stdint.h>

struct coro_slab_chunk;

struct coro_slab {
    size_t                  size;      /* bytes per object, rounded up to 16 */
    uint32_t                per_chunk; /* objects per chunk */
    uint32_t                nchunks;
    size_t                  used;      /* objects handed out */
    struct coro_slab_chunk *avail;     /* chunks with a free object, most recent first */
    struct coro_slab_chunk *full;      /* chunks without one */
    struct coro_slab_chunk *spare;     /* one empty chunk kept for the next burst */
};

/* Prepares <sl> for objects of <size> bytes. Allocates nothing yet. */
void coro_slab_init(struct coro_slab *sl, size_t size);

/* A zeroed object, or NULL when out of memory. */
void *coro_slab_alloc(struct coro_slab *sl);

/* Gives <p> (from coro_slab_alloc() on the same <sl>; NULL-safe) back. */
void coro_slab_free(struct coro_slab *sl, void *p);

/* Unmaps every chunk; objects still out are lost (returns how many were, 0 when none). */
size_t coro_slab_destroy(struct coro_slab *sl);

#endif
