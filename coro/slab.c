/* coro/slab.c — fixed-size object caches in aligned mmap'd chunks (see slab.h).
 *
 * A chunk is CHUNK bytes at a CHUNK-aligned address, so an object finds its chunk by
 * masking its address: no per-object header. Objects never handed out are taken by
 * bumping an index, so a new chunk's pages become resident only as they are used.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coro-int.h"
#include "slab.h"

#define CHUNK ((size_t)256 * 1024)

struct coro_slab_chunk {
    struct coro_slab_chunk *next;   /* in the slab's avail or full list */
    struct coro_slab_chunk *prev;
    void                   *free;   /* objects given back, linked through their first word */
    uint32_t                used;
    uint32_t                bump;   /* objects [bump, per_chunk) were never handed out */
    uint8_t                 full;   /* on the full list (else on avail, or the spare) */
};

/* Where a chunk's objects start. */
#define HDR ((sizeof(struct coro_slab_chunk) + 15) & ~(size_t)15)

void coro_slab_init(struct coro_slab *sl, size_t size)
{
    memset(sl, 0, sizeof(*sl));
    sl->size = (size + 15) & ~(size_t)15;
    if (sl->size < sizeof(void *))
        sl->size = 16;
    sl->per_chunk = (uint32_t)((CHUNK - HDR) / sl->size);
}

#ifdef CORO_ASAN

/* AddressSanitizer: plain heap blocks, so overflows and use after free are still caught. */
void *coro_slab_alloc(struct coro_slab *sl)
{
    void *p = calloc(1, sl->size);

    if (p)
        sl->used++;
    return p;
}

void coro_slab_free(struct coro_slab *sl, void *p)
{
    if (!p)
        return;
    sl->used--;
    free(p);
}

size_t coro_slab_destroy(struct coro_slab *sl)
{
    size_t left = sl->used;

    sl->used = 0;
    return left;
}

#else

static void list_del(struct coro_slab_chunk **head, struct coro_slab_chunk *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        *head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

static void list_push(struct coro_slab_chunk **head, struct coro_slab_chunk *c)
{
    c->prev = NULL;
    c->next = *head;
    if (*head)
        (*head)->prev = c;
    *head = c;
}

static struct coro_slab_chunk *chunk_new(struct coro_slab *sl)
{
    char *m = mmap(NULL, CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    uintptr_t a;

    if (m == MAP_FAILED)
        return NULL;
    /* Mappings are placed top-down, so after one aligned chunk the next one usually is
     * too, right below it: one VMA grows instead of a new one per chunk. */
    if (((uintptr_t)m & (CHUNK - 1)) == 0) {
        sl->nchunks++;
        return (struct coro_slab_chunk *)(void *)m;
    }
    munmap(m, CHUNK);
    m = mmap(NULL, 2 * CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    a = ((uintptr_t)m + CHUNK - 1) & ~(uintptr_t)(CHUNK - 1);
    if (a > (uintptr_t)m)
        munmap(m, a - (uintptr_t)m);
    if (a + CHUNK < (uintptr_t)m + 2 * CHUNK)
        munmap((void *)(a + CHUNK), (uintptr_t)m + 2 * CHUNK - (a + CHUNK));
    sl->nchunks++;
    return (struct coro_slab_chunk *)a;   /* zero-filled: an empty chunk */
}

static void chunk_unmap(struct coro_slab *sl, struct coro_slab_chunk *c)
{
    munmap(c, CHUNK);
    sl->nchunks--;
}

void *coro_slab_alloc(struct coro_slab *sl)
{
    struct coro_slab_chunk *c = sl->avail;
    char *p;

    if (!c) {
        c = sl->spare;
        if (c)
            sl->spare = NULL;
        else if (!(c = chunk_new(sl)))
            return NULL;
        list_push(&sl->avail, c);
    }
    if (c->free) {
        p = c->free;
        c->free = *(void **)(void *)p;
    } else {
        p = (char *)c + HDR + (size_t)c->bump * sl->size;
        c->bump++;
    }
    c->used++;
    sl->used++;
    if (!c->free && c->bump == sl->per_chunk) {
        list_del(&sl->avail, c);
        list_push(&sl->full, c);
        c->full = 1;
    }
    memset(p, 0, sl->size);
    return p;
}

void coro_slab_free(struct coro_slab *sl, void *p)
{
    struct coro_slab_chunk *c;

    if (!p)
        return;
    c = (struct coro_slab_chunk *)((uintptr_t)p & ~(uintptr_t)(CHUNK - 1));
    *(void **)p = c->free;
    c->free = p;
    c->used--;
    sl->used--;
    if (c->full) {
        list_del(&sl->full, c);
        list_push(&sl->avail, c);
        c->full = 0;
    }
    if (c->used == 0) {
        list_del(&sl->avail, c);
        if (sl->spare) {
            chunk_unmap(sl, c);
        } else {
            /* Kept mapped for the next burst, but without its pages: a burst (a ramp of
             * handshakes parked deep) would otherwise stay resident for good. */
            size_t page = (size_t)sysconf(_SC_PAGESIZE), keep = (HDR + page - 1) & ~(page - 1);
            size_t used = HDR + (size_t)c->bump * sl->size;

            if (used > keep)
                madvise((char *)c + keep, ((used + page - 1) & ~(page - 1)) - keep,
                        MADV_DONTNEED);
            c->free = NULL;   /* starts over by bumping */
            c->bump = 0;
            sl->spare = c;
        }
    }
}

size_t coro_slab_destroy(struct coro_slab *sl)
{
    struct coro_slab_chunk *c;
    size_t left = sl->used;

    while ((c = sl->avail) != NULL) {
        list_del(&sl->avail, c);
        chunk_unmap(sl, c);
    }
    while ((c = *&sl->full) != NULL) {
        list_del(&sl->full, c);
        chunk_unmap(sl, c);
    }
    if (sl->spare)
        chunk_unmap(sl, sl->spare);
    sl->spare = NULL;
    sl->used = 0;
    return left;
}

#endif
