/* gateway/core/chash.c — the consistent-hash ring: sorted points, a binary search, a walk
 * clockwise (why a ring: chash.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "core/chash.h"

struct cg_chash_point {
    uint64_t hash;
    uint32_t server;
};

struct cg_chash {
    struct cg_chash_point *points;      /* sorted by hash, then server */
    size_t                 npoints;
    size_t                 nservers;
};

static int cmp_point(const void *a, const void *b)
{
    const struct cg_chash_point *x = a, *y = b;

    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->server < y->server ? -1 : x->server > y->server;
}

struct cg_chash *cg_chash_new(const struct cg_server_conf *servers, size_t n)
{
    struct cg_chash *ch = calloc(1, sizeof(*ch));
    uint64_t total = 0, per = CG_CHASH_POINTS;
    size_t i, k, m;

    if (!ch)
        goto out_nomem;
    for (i = 0; i < n; i++)
        total += servers[i].weight;
    /* A very large upstream gets fewer points per unit of weight rather than a ring of
     * hundreds of MiB; at least one each, so every weight still counts. */
    if (total * per > CG_CHASH_MAX_POINTS)
        per = CG_CHASH_MAX_POINTS / (total ? total : 1);
    if (per == 0)
        per = 1;
    ch->nservers = n;
    ch->npoints = (size_t)(total * per);
    ch->points = calloc(ch->npoints ? ch->npoints : 1, sizeof(*ch->points));
    if (!ch->points)
        goto out_ring;
    for (i = 0, m = 0; i < n; i++) {
        size_t len = strlen(servers[i].name);

        /* Point k of a server: its name hashed with seed k. Nothing else (no index, no
         * process state) goes in, so a server keeps its points whatever is added. */
        for (k = 0; k < servers[i].weight * per; k++, m++) {
            ch->points[m].hash = cg_hash64(servers[i].name, len, k);
            ch->points[m].server = (uint32_t)i;
        }
    }
    qsort(ch->points, ch->npoints, sizeof(*ch->points), cmp_point);
    return ch;

out_ring:
    free(ch);
out_nomem:
    errno = ENOMEM;
    return NULL;
}

void cg_chash_free(struct cg_chash *ch)
{
    if (!ch)
        return;
    free(ch->points);
    free(ch);
}

size_t cg_chash_points(const struct cg_chash *ch)
{
    return ch ? ch->npoints : 0;
}

/* The first point at or after <key>, wrapping to 0 past the last. */
static size_t find(const struct cg_chash *ch, uint64_t key)
{
    size_t lo = 0, hi = ch->npoints;

    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;

        if (ch->points[mid].hash < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == ch->npoints ? 0 : lo;
}

int cg_chash_walk(const struct cg_chash *ch, uint64_t key,
                  int (*usable)(void *arg, unsigned server), void *arg)
{
    uint64_t asked = 0;         /* servers 0..63 already refused: not asked twice */
    size_t i, n, seen = 0;

    if (!ch || ch->npoints == 0)
        return -1;
    i = find(ch, key);
    for (n = 0; n < ch->npoints; n++, i = i + 1 == ch->npoints ? 0 : i + 1) {
        unsigned s = ch->points[i].server;

        if (s < 64) {
            if (asked & (1ull << s))
                continue;
            asked |= 1ull << s;
            seen++;
        }
        if (usable(arg, s))
            return (int)s;
        /* Every server asked (all of them below 64): the rest of the ring has no other. */
        if (ch->nservers <= 64 && seen == ch->nservers)
            break;
    }
    return -1;
}
