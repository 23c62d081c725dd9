/* tests/test_upstream.c — server selection (round robin, leastconn, random, consistent hash)
 * and health state.
 *
 * Configs are parsed from memory; servers are named a, b, c, ... by their index in the
 * servers list, so a pick sequence reads as a string ("aabacaa"). Load simulations use the
 * test's own fixed-seed generator, so every run sees the same numbers.
 */
#include <arpa/inet.h>
#include <check.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "harness.h"
#include "gateway/config/config.h"
#include "gateway/core/chash.h"
#include "gateway/core/upstream.h"

static struct cg_config   *cfg;
static struct cg_upstream *ups;

static void teardown(void)
{
    if (cfg)
        cg_upstreams_free(ups, cfg->nupstreams);
    cg_config_free(cfg);
    cfg = NULL;
    ups = NULL;
}

/* Parses a listener plus "[upstream u]" followed by <body> and builds the run-time state
 * for <nworkers> workers. Returns upstream u. */
static struct cg_upstream *up_new(const char *body, unsigned nworkers)
{
    struct cg_errors errs;
    char text[8192];
    size_t i;
    int rc;

    snprintf(text, sizeof(text),
             "[listener l]\nbind = 127.0.0.1:8000\nupstream = u\n[upstream u]\n%s", body);
    cg_errors_init(&errs);
    rc = cg_config_parse_string("t.ini", text, &cfg, &errs);
    for (i = 0; i < cg_errors_count(&errs); i++)
        fprintf(stderr, "unexpected: %s\n", cg_errors_get(&errs, i));
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(cg_errors_count(&errs), 0);
    cg_errors_deinit(&errs);
    ck_assert_uint_eq(cfg->nupstreams, 1);
    ups = cg_upstreams_new(cfg, nworkers);
    ck_assert_ptr_nonnull(ups);
    ck_assert_uint_eq(ups[0].nworkers, nworkers);
    return &ups[0];
}

/* The letter of one pick: 'a' + server index, '-' for none. */
static char pick_c(struct cg_upstream *up, unsigned worker, uint64_t tried)
{
    struct cg_server *srv = cg_upstream_pick(up, worker, tried);

    if (!srv)
        return '-';
    ck_assert_ptr_eq(srv->up, up);
    ck_assert_ptr_eq(srv, &up->servers[srv->index]);
    return (char)('a' + srv->index);
}

/* <n> picks by <worker> as a string in <buf> (n + 1 bytes). */
static const char *picks(struct cg_upstream *up, unsigned worker, uint64_t tried, char *buf,
                         size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        buf[i] = pick_c(up, worker, tried);
    buf[n] = '\0';
    return buf;
}

/* Counts of <n> picks by worker 0 per server into <cnt> (up->nservers entries). */
static void count_picks(struct cg_upstream *up, uint64_t tried, unsigned n, unsigned *cnt)
{
    unsigned i;

    memset(cnt, 0, up->nservers * sizeof(*cnt));
    for (i = 0; i < n; i++) {
        struct cg_server *srv = cg_upstream_pick(up, 0, tried);

        ck_assert_ptr_nonnull(srv);
        cnt[srv->index]++;
    }
}

static void set_active(struct cg_upstream *up, unsigned i, unsigned n)
{
    atomic_store(&up->servers[i].active, n);
}

static uint64_t test_rng = 88172645463325252ull;

static unsigned rnd(unsigned n)
{
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return (unsigned)(test_rng % n);
}

#define SERVERS3 "servers = 127.0.0.1:9001, 127.0.0.1:9002, 127.0.0.1:9003\n"
#define SERVERS4 "servers = 127.0.0.1:9001 127.0.0.1:9002 127.0.0.1:9003 127.0.0.1:9004\n"

static const char *const balances[] = { "roundrobin", "leastconn", "random", "hash" };

/* ------------------------------------------------------------------ the run-time state */

START_TEST(test_new_state)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=7, [::1]:9002\n"
                                    "max_connections_per_server = 10\n", 4);
    unsigned i;

    ck_assert_ptr_eq(up->conf, &cfg->upstreams[0]);
    ck_assert_uint_eq(up->nservers, 2);
    for (i = 0; i < up->nservers; i++) {
        ck_assert_ptr_eq(up->servers[i].conf, &cfg->upstreams[0].servers[i]);
        ck_assert_ptr_eq(up->servers[i].up, up);
        ck_assert_uint_eq(up->servers[i].index, i);
        ck_assert_int_eq(atomic_load(&up->servers[i].down), 0);
        ck_assert_uint_eq(atomic_load(&up->servers[i].active), 0);
        ck_assert_int_eq(cg_server_is_eligible(&up->servers[i]), 1);
    }
    ck_assert_str_eq(up->servers[0].conf->name, "127.0.0.1:9001");
    ck_assert_uint_eq(up->servers[0].conf->weight, 7);
    ck_assert_str_eq(up->servers[1].conf->name, "[::1]:9002");
    ck_assert_uint_eq(up->servers[1].conf->weight, 1);
    for (i = 0; i < 4; i++)          /* every worker's generator is seeded, and distinctly */
        ck_assert_uint_ne(up->rng[i], 0);
    ck_assert_uint_ne(up->rng[0], up->rng[1]);
    /* a worker past nworkers gets nothing */
    ck_assert_ptr_nonnull(cg_upstream_pick(up, 3, 0));
    ck_assert_ptr_null(cg_upstream_pick(up, 4, 0));
}
END_TEST

START_TEST(test_new_several_upstreams)
{
    const char *text =
        "[listener l]\nbind = 127.0.0.1:8000\nupstream = v\n"
        "[upstream u]\nservers = 127.0.0.1:9001\n"
        "[upstream v]\nservers = 127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103\n"
        "balance = leastconn\n";
    size_t i;

    ck_assert_int_eq(cg_config_parse_string("t.ini", text, &cfg, NULL), 0);
    ups = cg_upstreams_new(cfg, 2);
    ck_assert_ptr_nonnull(ups);
    ck_assert_uint_eq(ups[0].nservers, 1);
    ck_assert_uint_eq(ups[1].nservers, 3);
    ck_assert_int_eq(ups[1].conf->balance, CG_BALANCE_LEASTCONN);
    for (i = 0; i < 3; i++)
        ck_assert_ptr_eq(ups[1].servers[i].up, &ups[1]);
    ck_assert_ptr_eq(cg_upstream_pick(&ups[0], 1, 0), &ups[0].servers[0]);
    ck_assert_ptr_nonnull(cg_upstream_pick(&ups[1], 1, 0));
}
END_TEST

START_TEST(test_free_null)
{
    cg_upstreams_free(NULL, 3);
}
END_TEST

/* ------------------------------------------------------------------ round robin */

START_TEST(test_rr_equal_weights)
{
    struct cg_upstream *up = up_new(SERVERS3, 1);
    char buf[16];

    ck_assert_int_eq(up->conf->balance, CG_BALANCE_ROUNDROBIN);
    ck_assert_str_eq(picks(up, 0, 0, buf, 9), "abcabcabc");
}
END_TEST

START_TEST(test_rr_smooth_weights)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=5, 127.0.0.1:9002, "
                                    "127.0.0.1:9003\nbalance = roundrobin\n", 1);
    unsigned cnt[3];
    char buf[16];

    /* nginx's smooth weighted round robin, ngx_http_upstream_get_peer() */
    ck_assert_str_eq(picks(up, 0, 0, buf, 7), "aabacaa");
    ck_assert_str_eq(picks(up, 0, 0, buf, 7), "aabacaa");  /* back to all-zero weights */
    count_picks(up, 0, 700, cnt);
    ck_assert_uint_eq(cnt[0], 500);
    ck_assert_uint_eq(cnt[1], 100);
    ck_assert_uint_eq(cnt[2], 100);
}
END_TEST

START_TEST(test_rr_weights_two_servers)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=2, 127.0.0.1:9002 "
                                    "weight=3\n", 1);
    char buf[16];

    /* current weights after adding: (2,3) b, (4,1) a, (1,4) b, (3,2) a, (0,5) b, back to 0 */
    ck_assert_str_eq(picks(up, 0, 0, buf, 10), "babab" "babab");
}
END_TEST

START_TEST(test_rr_per_worker)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=5, 127.0.0.1:9002, "
                                    "127.0.0.1:9003\n", 3);
    char w0[8], w1[8], w2[8];
    unsigned i;

    /* interleaved picks: each worker walks its own sequence */
    for (i = 0; i < 7; i++) {
        w0[i] = pick_c(up, 0, 0);
        w1[i] = pick_c(up, 1, 0);
        if (i == 3)  /* worker 2 starts late and still sees the sequence from its start */
            ck_assert_str_eq(picks(up, 2, 0, w2, 7), "aabacaa");
    }
    w0[7] = w1[7] = '\0';
    ck_assert_str_eq(w0, "aabacaa");
    ck_assert_str_eq(w1, "aabacaa");
}
END_TEST

START_TEST(test_rr_down)
{
    struct cg_upstream *up = up_new(SERVERS3, 1);
    char buf[16];

    atomic_store(&up->servers[1].down, 1);
    ck_assert_int_eq(cg_server_is_eligible(&up->servers[1]), 0);
    ck_assert_str_eq(picks(up, 0, 0, buf, 6), "acacac");
    atomic_store(&up->servers[0].down, 1);
    ck_assert_str_eq(picks(up, 0, 0, buf, 3), "ccc");
    atomic_store(&up->servers[2].down, 1);
    ck_assert_str_eq(picks(up, 0, 0, buf, 3), "---");
    atomic_store(&up->servers[1].down, 0);       /* back up: picked again */
    ck_assert_str_eq(picks(up, 0, 0, buf, 3), "bbb");
}
END_TEST

START_TEST(test_rr_down_weighted)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=5, 127.0.0.1:9002, "
                                    "127.0.0.1:9003\n", 1);
    unsigned cnt[3];

    atomic_store(&up->servers[0].down, 1);
    count_picks(up, 0, 1000, cnt);
    ck_assert_uint_eq(cnt[0], 0);
    ck_assert_uint_eq(cnt[1], 500);
    ck_assert_uint_eq(cnt[2], 500);
}
END_TEST

START_TEST(test_rr_tried)
{
    struct cg_upstream *up = up_new(SERVERS3, 1);
    char buf[16];

    ck_assert_str_eq(picks(up, 0, 1u << 0, buf, 4), "bcbc");
    ck_assert_str_eq(picks(up, 0, (1u << 0) | (1u << 2), buf, 3), "bbb");
    ck_assert_str_eq(picks(up, 0, 7, buf, 2), "--");
    ck_assert_str_eq(picks(up, 0, ~(uint64_t)0, buf, 2), "--");
    ck_assert_str_eq(picks(up, 0, 1u << 5, buf, 3), "abc");   /* no such server */
}
END_TEST

START_TEST(test_rr_max_connections)
{
    struct cg_upstream *up = up_new(SERVERS3 "max_connections_per_server = 2\n", 1);
    char buf[16];

    set_active(up, 0, 2);
    set_active(up, 1, 1);
    ck_assert_int_eq(cg_server_is_eligible(&up->servers[0]), 0);
    ck_assert_int_eq(cg_server_is_eligible(&up->servers[1]), 1);
    ck_assert_str_eq(picks(up, 0, 0, buf, 4), "bcbc");
    set_active(up, 1, 5);                         /* over the limit: also skipped */
    ck_assert_str_eq(picks(up, 0, 0, buf, 2), "cc");
    set_active(up, 2, 2);
    ck_assert_str_eq(picks(up, 0, 0, buf, 2), "--");
    set_active(up, 0, 1);
    ck_assert_int_eq(cg_server_is_eligible(&up->servers[0]), 1);
    ck_assert_str_eq(picks(up, 0, 0, buf, 2), "aa");
}
END_TEST

START_TEST(test_no_limit)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001\n", 1);

    set_active(up, 0, 4000000000u);               /* max_connections_per_server = 0 */
    ck_assert_int_eq(cg_server_is_eligible(&up->servers[0]), 1);
    ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), &up->servers[0]);
}
END_TEST

/* Every method: down, tried, over the limit are never picked; nothing eligible is NULL. */
START_TEST(test_exclusions_every_method)
{
    char body[512];
    struct cg_upstream *up;
    unsigned i, cnt[4];

    snprintf(body, sizeof(body), SERVERS4 "balance = %s\nmax_connections_per_server = 3\n",
             balances[_i]);
    up = up_new(body, 2);
    ck_assert_int_eq(up->conf->balance, (int)_i);
    atomic_store(&up->servers[1].down, 1);
    set_active(up, 3, 3);
    count_picks(up, 1u << 2, 400, cnt);           /* b down, c tried, d full: a only */
    ck_assert_uint_eq(cnt[0], 400);
    count_picks(up, 0, 400, cnt);
    ck_assert_uint_eq(cnt[1], 0);
    ck_assert_uint_eq(cnt[3], 0);
    ck_assert_uint_ge(cnt[0], 100);
    ck_assert_uint_ge(cnt[2], 100);
    ck_assert_ptr_null(cg_upstream_pick(up, 0, (1u << 0) | (1u << 2)));
    ck_assert_ptr_null(cg_upstream_pick(up, 1, ~(uint64_t)0));
    for (i = 0; i < 4; i++)
        atomic_store(&up->servers[i].down, 1);
    ck_assert_ptr_null(cg_upstream_pick(up, 0, 0));
    ck_assert_ptr_null(cg_upstream_pick(up, 1, 0));
    atomic_store(&up->servers[3].down, 0);        /* up but full */
    ck_assert_ptr_null(cg_upstream_pick(up, 0, 0));
    set_active(up, 3, 2);
    ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), &up->servers[3]);
}
END_TEST

/* tried only covers indexes 0..63: server 64 (the 65th) is never excluded. */
START_TEST(test_tried_past_63)
{
    char body[4096];
    size_t off;
    struct cg_upstream *up;
    unsigned i;

    off = (size_t)snprintf(body, sizeof(body), "balance = %s\nservers =", balances[_i]);
    for (i = 0; i < 65; i++)
        off += (size_t)snprintf(body + off, sizeof(body) - off, " 127.0.0.1:%u", 9000 + i);
    snprintf(body + off, sizeof(body) - off, "\n");
    up = up_new(body, 1);
    ck_assert_uint_eq(up->nservers, 65);
    for (i = 0; i < 100; i++)
        ck_assert_ptr_eq(cg_upstream_pick(up, 0, ~(uint64_t)0), &up->servers[64]);
    atomic_store(&up->servers[64].down, 1);
    ck_assert_ptr_null(cg_upstream_pick(up, 0, ~(uint64_t)0));
}
END_TEST

/* ------------------------------------------------------------------ leastconn */

START_TEST(test_leastconn_fewest)
{
    struct cg_upstream *up = up_new(SERVERS3 "balance = leastconn\n", 1);
    unsigned i;

    ck_assert_int_eq(up->conf->balance, CG_BALANCE_LEASTCONN);
    set_active(up, 0, 3);
    set_active(up, 1, 1);
    set_active(up, 2, 2);
    for (i = 0; i < 100; i++)
        ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), &up->servers[1]);
    /* the least loaded one tried: next least */
    for (i = 0; i < 100; i++)
        ck_assert_ptr_eq(cg_upstream_pick(up, 0, 1u << 1), &up->servers[2]);
    atomic_store(&up->servers[2].down, 1);
    for (i = 0; i < 100; i++)
        ck_assert_ptr_eq(cg_upstream_pick(up, 0, 1u << 1), &up->servers[0]);
}
END_TEST

/* Picking and counting the connection as the caller does fills the servers evenly. */
START_TEST(test_leastconn_fills_evenly)
{
    struct cg_upstream *up = up_new(SERVERS3 "balance = leastconn\n", 1);
    unsigned i, k;

    for (i = 0; i < 300; i++) {
        struct cg_server *srv = cg_upstream_pick(up, 0, 0);
        unsigned a = atomic_fetch_add(&srv->active, 1);

        for (k = 0; k < 3; k++)     /* it had the fewest */
            ck_assert_uint_le(a, atomic_load(&up->servers[k].active));
    }
    for (k = 0; k < 3; k++)
        ck_assert_uint_eq(atomic_load(&up->servers[k].active), 100);
}
END_TEST

START_TEST(test_leastconn_weighted)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=2, 127.0.0.1:9002\n"
                                    "balance = leastconn\n", 1);
    unsigned i, cnt[2];

    set_active(up, 0, 4);           /* 4/2 < 3/1 */
    set_active(up, 1, 3);
    for (i = 0; i < 100; i++)
        ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), &up->servers[0]);
    set_active(up, 0, 5);           /* 5/2 > 2/1 */
    set_active(up, 1, 2);
    for (i = 0; i < 100; i++)
        ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), &up->servers[1]);
    set_active(up, 0, 4);           /* 4/2 == 2/1: a tie, shared */
    count_picks(up, 0, 1000, cnt);
    ck_assert_uint_ge(cnt[0], 400);
    ck_assert_uint_ge(cnt[1], 400);
    set_active(up, 0, 0);           /* idle servers: a tie whatever the weights */
    set_active(up, 1, 0);
    count_picks(up, 0, 1000, cnt);
    ck_assert_uint_ge(cnt[0], 400);
    ck_assert_uint_ge(cnt[1], 400);
}
END_TEST

/* Close ratios are told apart exactly (a scaled integer division ties 1/200 and 1/150). */
START_TEST(test_leastconn_weight_precision)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=200, 127.0.0.1:9002 "
                                    "weight=150, 127.0.0.1:9003 weight=256\n"
                                    "balance = leastconn\n", 1);
    unsigned i;

    set_active(up, 0, 1);           /* 1/200 < 1/150 < 2/256 */
    set_active(up, 1, 1);
    set_active(up, 2, 2);
    for (i = 0; i < 100; i++)
        ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), &up->servers[0]);
    set_active(up, 0, 2);           /* 1/256 < 1/150 < 2/200 */
    set_active(up, 2, 1);
    for (i = 0; i < 100; i++)
        ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), &up->servers[2]);
    set_active(up, 2, 2);           /* 1/150 < 2/256 < 2/200 */
    for (i = 0; i < 100; i++)
        ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), &up->servers[1]);
}
END_TEST

START_TEST(test_leastconn_ties_spread)
{
    struct cg_upstream *up;
    unsigned i, n = _i ? 4 : 3, cnt[4];

    up = up_new(_i ? SERVERS4 "balance = leastconn\n" : SERVERS3 "balance = leastconn\n", 2);
    for (i = 0; i < n; i++)
        set_active(up, i, 7);
    count_picks(up, 0, 1000, cnt);
    for (i = 0; i < n; i++)
        ck_assert_uint_ge(cnt[i], 200);
}
END_TEST

/* ------------------------------------------------------------------ random (two choices) */

static unsigned active_of(struct cg_upstream *up, unsigned i)
{
    return atomic_load(&up->servers[i].active);
}

/* 10,000 picks against a simulated load: each pick opens a connection on the picked server,
 * and once 1000 are open each pick is matched by a close on a server chosen at random (any
 * server with a connection, uniformly, so the picker alone has to even things out). Every
 * server stays within 10% of the mean at every step; one random choice instead of two
 * strays past 80% with this load. */
START_TEST(test_random_load_even)
{
    struct cg_upstream *up = up_new(SERVERS4 "balance = random\n", 1);
    const unsigned n = 4, target = 1000, mean = target / n;
    unsigned i, k, total = 0, worst = 0;

    ck_assert_int_eq(up->conf->balance, CG_BALANCE_RANDOM);
    for (i = 0; i < 10000; i++) {
        struct cg_server *srv = cg_upstream_pick(up, 0, 0);
        unsigned max = 0, min = ~0u;

        ck_assert_ptr_nonnull(srv);
        atomic_fetch_add(&srv->active, 1);
        if (++total > target) {
            do
                k = rnd(n);
            while (active_of(up, k) == 0);
            atomic_fetch_sub(&up->servers[k].active, 1);
            total--;
        }
        if (total < target)
            continue;
        for (k = 0; k < n; k++) {
            if (active_of(up, k) > max)
                max = active_of(up, k);
            if (active_of(up, k) < min)
                min = active_of(up, k);
        }
        if (max - min > worst)
            worst = max - min;
        ck_assert_uint_le(max, mean + mean / 10);
        ck_assert_uint_ge(min, mean - mean / 10);
    }
    ck_assert_uint_eq(total, target);
    ck_assert_uint_le(worst, mean * 15 / 100);
}
END_TEST

START_TEST(test_random_weights)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=3, 127.0.0.1:9002\n"
                                    "balance = random\n", 1);
    unsigned cnt[2];

    set_active(up, 0, 10);          /* equal load: the weights alone decide */
    set_active(up, 1, 10);
    count_picks(up, 0, 10000, cnt);
    ck_assert_uint_ge(cnt[0], 7000);
    ck_assert_uint_le(cnt[0], 8000);
    ck_assert_uint_eq(cnt[0] + cnt[1], 10000);
}
END_TEST

START_TEST(test_random_less_loaded)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001, 127.0.0.1:9002\n"
                                    "balance = random\n", 1);
    unsigned cnt[2];

    /* the busier server wins only when both choices land on it: about 1/4 */
    set_active(up, 0, 50);
    set_active(up, 1, 10);
    count_picks(up, 0, 10000, cnt);
    ck_assert_uint_ge(cnt[0], 2000);
    ck_assert_uint_le(cnt[0], 3000);
}
END_TEST

START_TEST(test_random_workers_differ)
{
    struct cg_upstream *up = up_new(SERVERS4 "balance = random\n", 2);
    char w0[65], w1[65];

    ck_assert_str_ne(picks(up, 0, 0, w0, 64), picks(up, 1, 0, w1, 64));
}
END_TEST

/* ------------------------------------------------------------------ health checks */

/* The source address of each connection: the upstream's addresses of the server's family
 * in turn, per worker; none without a source list. */
static const char *src_of(struct cg_upstream *up, unsigned worker, unsigned server,
                          char *buf, size_t size)
{
    struct sockaddr_storage ss;
    const struct sockaddr *sa = cg_upstream_source(up, worker, &up->servers[server], &ss);

    if (!sa)
        return "none";
    if (sa->sa_family == AF_INET)
        return inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, buf,
                         (socklen_t)size);
    return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, buf,
                     (socklen_t)size);
}

START_TEST(test_source_in_turn)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:1, [::1]:2\n"
                                    "source = 127.0.0.254-127.0.1.1, ::1, 127.0.0.9\n", 2);
    static const char *const v4[] = { "127.0.0.254", "127.0.0.255", "127.0.1.0",
                                      "127.0.1.1", "127.0.0.9", "127.0.0.254" };
    struct cg_source_range *r6 = &cfg->upstreams[0].sources[1];
    char buf[INET6_ADDRSTRLEN];
    size_t i;

    for (i = 0; i < 6; i++)
        ck_assert_str_eq(src_of(up, 0, 0, buf, sizeof(buf)), v4[i]);
    /* The other worker starts its round half-way. */
    ck_assert_str_eq(src_of(up, 1, 0, buf, sizeof(buf)), "127.0.1.0");
    ck_assert_str_eq(src_of(up, 0, 1, buf, sizeof(buf)), "::1");
    ck_assert_str_eq(src_of(up, 0, 1, buf, sizeof(buf)), "::1");

    /* IPv6 runs carry across bytes (a range this host cannot bind, set behind the
     * parser's back). */
    inet_pton(AF_INET6, "fd00::1:fffe", r6->first);
    r6->count = 3;
    cfg->upstreams[0].nsource6 = 3;
    ck_assert_str_eq(src_of(up, 0, 1, buf, sizeof(buf)), "fd00::2:0");      /* 3rd call */
    ck_assert_str_eq(src_of(up, 0, 1, buf, sizeof(buf)), "fd00::1:fffe");
    ck_assert_str_eq(src_of(up, 0, 1, buf, sizeof(buf)), "fd00::1:ffff");
    ck_assert_str_eq(src_of(up, 0, 1, buf, sizeof(buf)), "fd00::2:0");
    /* Each family keeps its own turn: the IPv6 picks did not move IPv4's. */
    ck_assert_str_eq(src_of(up, 0, 0, buf, sizeof(buf)), "127.0.0.255");
}
END_TEST

START_TEST(test_source_none)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:1\n", 1);
    char buf[INET6_ADDRSTRLEN];

    ck_assert_str_eq(src_of(up, 0, 0, buf, sizeof(buf)), "none");
}
END_TEST

START_TEST(test_check_fall_rise)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001\nhealth_check_fall = 3\n"
                                    "health_check_rise = 2\n", 1);
    struct cg_server *srv = &up->servers[0];
    /* result fed, expected return, expected down after it */
    static const struct { int ok, ret, down; } steps[] = {
        { 1, 0, 0 },                            /* up stays up */
        { 0, 0, 0 }, { 0, 0, 0 }, { 1, 0, 0 },  /* a success resets the count */
        { 0, 0, 0 }, { 0, 0, 0 }, { 0, 1, 1 },  /* third in a row: DOWN */
        { 0, 0, 1 }, { 0, 0, 1 }, { 0, 0, 1 },  /* stays down, no more transitions */
        { 1, 0, 1 }, { 0, 0, 1 },               /* a failure resets the successes */
        { 1, 0, 1 }, { 1, 1, 0 },               /* second in a row: UP */
        { 1, 0, 0 }, { 1, 0, 0 },
        { 0, 0, 0 }, { 0, 0, 0 }, { 0, 1, 1 },  /* and down again after three */
        { 1, 0, 1 }, { 1, 1, 0 },
    };
    unsigned i, transitions = 0, fails = 0;

    ck_assert_uint_eq(up->conf->health_check_fall, 3);
    ck_assert_uint_eq(up->conf->health_check_rise, 2);
    for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        int ret = cg_server_check_result(srv, steps[i].ok);

        if (ret != steps[i].ret || atomic_load(&srv->down) != steps[i].down)
            fprintf(stderr, "step %u: returned %d, down %d\n", i, ret, atomic_load(&srv->down));
        ck_assert_int_eq(ret, steps[i].ret);
        ck_assert_int_eq(atomic_load(&srv->down), steps[i].down);
        ck_assert_int_eq(cg_server_is_eligible(srv), !steps[i].down);
        transitions += (unsigned)ret;
        fails += !steps[i].ok;
    }
    ck_assert_uint_eq(transitions, 4);
    ck_assert_uint_eq(atomic_load(&srv->checks_failed), fails);
}
END_TEST

START_TEST(test_check_fall_rise_one)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001, 127.0.0.1:9002\n"
                                    "health_check_fall = 1\nhealth_check_rise = 1\n", 1);
    struct cg_server *a = &up->servers[0], *b = &up->servers[1];

    ck_assert_int_eq(cg_server_check_result(a, 0), 1);
    ck_assert_int_eq(cg_server_check_result(a, 0), 0);
    ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), b);       /* a down: not picked */
    ck_assert_ptr_eq(cg_upstream_pick(up, 0, 0), b);
    ck_assert_int_eq(cg_server_check_result(b, 1), 0);     /* b untouched by a's results */
    ck_assert_int_eq(cg_server_check_result(a, 1), 1);
    ck_assert_int_eq(cg_server_check_result(a, 1), 0);
    ck_assert_int_eq(atomic_load(&a->down), 0);
    ck_assert_int_eq(atomic_load(&b->down), 0);
}
END_TEST

/* Defaults from config.c: fall 3, rise 2; a server set down elsewhere (startup) rises. */
START_TEST(test_check_defaults)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001\n", 1);
    struct cg_server *srv = &up->servers[0];

    ck_assert_int_eq(cg_server_check_result(srv, 0), 0);
    ck_assert_int_eq(cg_server_check_result(srv, 0), 0);
    ck_assert_int_eq(cg_server_check_result(srv, 0), 1);
    ck_assert_int_eq(cg_server_check_result(srv, 1), 0);
    ck_assert_int_eq(cg_server_check_result(srv, 1), 1);
    ck_assert_int_eq(atomic_load(&srv->down), 0);
    atomic_store(&srv->down, 1);                /* set down elsewhere */
    ck_assert_int_eq(cg_server_check_result(srv, 1), 0);
    ck_assert_int_eq(cg_server_check_result(srv, 1), 1);
    ck_assert_int_eq(atomic_load(&srv->down), 0);
}
END_TEST

/* ------------------------------------------------------------------ consistent hash */

#define NKEYS 20000

/* The hash key of test key <i> ("sid-<i>", as a cookie value would be). */
static uint64_t key_of(unsigned i)
{
    char k[32];
    int n = snprintf(k, sizeof(k), "sid-%u", i);

    return cg_hash64(k, (size_t)n, 0);
}

/* The server index of each of NKEYS keys, picked by <worker> with <tried>, into <out>
 * (-1: none). */
static void map_keys(struct cg_upstream *up, unsigned worker, uint64_t tried, int *out)
{
    unsigned i;

    for (i = 0; i < NKEYS; i++) {
        uint64_t k = key_of(i);
        struct cg_server *srv = cg_upstream_pick_key(up, worker, tried, &k);

        out[i] = srv ? (int)srv->index : -1;
    }
}

/* A second configuration and its upstreams, for comparisons between two rings. */
struct other {
    struct cg_config   *cfg;
    struct cg_upstream *ups;
};

static struct cg_upstream *other_new(struct other *o, const char *body)
{
    char text[4096];

    snprintf(text, sizeof(text),
             "[listener l]\nbind = 127.0.0.1:8000\nupstream = u\n[upstream u]\n%s", body);
    ck_assert_int_eq(cg_config_parse_string("t.ini", text, &o->cfg, NULL), 0);
    o->ups = cg_upstreams_new(o->cfg, 1);
    ck_assert_ptr_nonnull(o->ups);
    return &o->ups[0];
}

static void other_free(struct other *o)
{
    cg_upstreams_free(o->ups, o->cfg->nupstreams);
    cg_config_free(o->cfg);
}

/* The published XXH64 vectors (xxhash's test suite, python-xxhash's documentation): the
 * 0..3-byte tail, the 4- and 8-byte steps and the 32-byte stripes all checked. */
START_TEST(test_hash64_vectors)
{
    const char *nobody = "Nobody inspects the spammish repetition";

    ck_assert_uint_eq(cg_hash64("", 0, 0), 0xEF46DB3751D8E999ull);
    ck_assert_uint_eq(cg_hash64("a", 1, 0), 0xD24EC4F1A98C6E5Bull);
    ck_assert_uint_eq(cg_hash64("abc", 3, 0), 0x44BC2CF5AD770999ull);
    ck_assert_uint_eq(cg_hash64("xxhash", 6, 0), 0x32DD38952C4BC720ull);
    ck_assert_uint_eq(cg_hash64(nobody, strlen(nobody), 0), 0xFBCEA83C8A378BF1ull);
}
END_TEST

/* Weights 1, 2, 3, 4: each server's share of 20,000 keys within 10% of its weight's share
 * (the ring has 160 points per unit of weight). */
START_TEST(test_hash_weights)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=1, 127.0.0.1:9002 "
                                    "weight=2, 127.0.0.1:9003 weight=3, 127.0.0.1:9004 "
                                    "weight=4\nbalance = hash\n", 1);
    static int map[NKEYS];
    unsigned cnt[4] = { 0 }, i;

    ck_assert_int_eq(up->conf->balance, CG_BALANCE_HASH);
    ck_assert_uint_eq(cg_chash_points(up->ring), 10 * CG_CHASH_POINTS);
    map_keys(up, 0, 0, map);
    for (i = 0; i < NKEYS; i++) {
        ck_assert_int_ge(map[i], 0);
        cnt[map[i]]++;
    }
    th_note("hash weights 1:2:3:4 over %u keys: %u %u %u %u", NKEYS, cnt[0], cnt[1], cnt[2],
            cnt[3]);
    for (i = 0; i < 4; i++) {
        double want = NKEYS * (i + 1) / 10.0;

        ck_assert_msg(cnt[i] >= want * 0.9 && cnt[i] <= want * 1.1,
                      "server %u (weight %u): %u keys, want %.0f +- 10%%", i, i + 1, cnt[i],
                      want);
    }
}
END_TEST

/* The same key, the same server: in every worker, in another build of the ring (another
 * process), and at a fixed place, so that two gateways (and two versions) agree. */
START_TEST(test_hash_deterministic)
{
    struct cg_upstream *up = up_new(SERVERS4 "balance = hash\n", 4);
    struct other o;
    struct cg_upstream *up2 = other_new(&o, SERVERS4 "balance = hash\n");
    static int a[NKEYS], b[NKEYS];
    unsigned w, i;
    uint64_t k = cg_hash64("alice", 5, 0);
    char pinned[9];

    map_keys(up, 0, 0, a);
    for (w = 1; w < 4; w++) {
        map_keys(up, w, 0, b);
        ck_assert_mem_eq(a, b, sizeof(a));
    }
    map_keys(up2, 0, 0, b);
    ck_assert_mem_eq(a, b, sizeof(a));
    /* Pinned: a change here moves every client of every deployment on upgrade. */
    ck_assert_uint_eq(cg_upstream_pick_key(up, 0, 0, &k)->index, 2);
    for (i = 0; i < 8; i++)
        pinned[i] = (char)('a' + cg_upstream_pick_key(up, 0, 0, &(uint64_t){ key_of(i) })->index);
    pinned[8] = '\0';
    ck_assert_str_eq(pinned, "accabbcb");
    other_free(&o);
}
END_TEST

/* A 5th server added to 4: between 0.5/5 and 1.5/5 of the keys move, all of them onto the
 * new server; the others keep theirs. */
START_TEST(test_hash_add_server)
{
    struct cg_upstream *up4 = up_new(SERVERS4 "balance = hash\n", 1), *up5;
    struct other o;
    static int a[NKEYS], b[NKEYS];
    unsigned moved = 0, i;

    up5 = other_new(&o, "servers = 127.0.0.1:9001 127.0.0.1:9002 127.0.0.1:9003 "
                        "127.0.0.1:9004 127.0.0.1:9005\nbalance = hash\n");
    map_keys(up4, 0, 0, a);
    map_keys(up5, 0, 0, b);
    for (i = 0; i < NKEYS; i++) {
        if (a[i] == b[i])
            continue;
        moved++;
        ck_assert_msg(b[i] == 4, "key %u moved from server %d to %d, not to the new one",
                      i, a[i], b[i]);
    }
    th_note("hash: a 5th server added to 4 moved %u of %u keys (1/N = %u)", moved, NKEYS,
            NKEYS / 5);
    ck_assert_msg(moved >= NKEYS / 10 && moved <= NKEYS * 3 / 10,
                  "%u of %u keys moved, want 0.5/N..1.5/N (N = 5)", moved, NKEYS);
    other_free(&o);
}
END_TEST

/* Servers listed in another order: the same server for every key (points come from the
 * server's name, not its place). */
START_TEST(test_hash_order_free)
{
    struct cg_upstream *up = up_new(SERVERS4 "balance = hash\n", 1), *rev;
    struct other o;
    static int a[NKEYS], b[NKEYS];
    unsigned i;

    rev = other_new(&o, "servers = 127.0.0.1:9004 127.0.0.1:9003 127.0.0.1:9002 "
                        "127.0.0.1:9001\nbalance = hash\n");
    map_keys(up, 0, 0, a);
    map_keys(rev, 0, 0, b);
    for (i = 0; i < NKEYS; i++)
        ck_assert_int_eq(a[i], 3 - b[i]);
    other_free(&o);
}
END_TEST

/* One server out (down, maintenance, drain, ejected, at its connection limit): its keys go
 * to the others, spread over more than one; no other key moves, not one. Back in: every
 * key is where it was. */
START_TEST(test_hash_server_out)
{
    struct cg_upstream *up = up_new(SERVERS4 "balance = hash\n"
                                    "max_connections_per_server = 5\n", 1);
    struct cg_server *b = &up->servers[1];
    static int before[NKEYS], after[NKEYS];
    unsigned i, theirs = 0, to[4] = { 0 };

    map_keys(up, 0, 0, before);
    switch (_i) {
    case 0: atomic_store(&b->down, 1); break;
    case 1: atomic_store(&b->state, CG_SERVER_MAINT); break;
    case 2: atomic_store(&b->state, CG_SERVER_DRAIN); break;
    case 3:
        atomic_store(&b->eject_until_ms, UINT64_MAX);
        atomic_store(&b->brk, CG_SRV_EJECTED);
        break;
    case 4: set_active(up, 1, 5); break;
    }
    ck_assert_int_eq(cg_server_is_eligible(b), 0);
    map_keys(up, 0, 0, after);
    for (i = 0; i < NKEYS; i++) {
        if (before[i] != 1) {
            ck_assert_msg(after[i] == before[i], "case %d: key %u of server %d moved to %d",
                          _i, i, before[i], after[i]);
            continue;
        }
        theirs++;
        ck_assert_int_ne(after[i], 1);
        to[after[i]]++;
    }
    th_note("hash: server b out (case %d): its %u keys went to a %u, c %u, d %u; 0 others "
            "moved", _i, theirs, to[0], to[2], to[3]);
    ck_assert_uint_gt(theirs, NKEYS / 10);
    ck_assert_msg((to[0] > 0) + (to[2] > 0) + (to[3] > 0) >= 2,
                  "server b's keys went to one server only: %u %u %u", to[0], to[2], to[3]);
    atomic_store(&b->down, 0);
    atomic_store(&b->state, CG_SERVER_READY);
    atomic_store(&b->brk, CG_SRV_IN);
    set_active(up, 1, 0);
    map_keys(up, 0, 0, after);
    ck_assert_mem_eq(before, after, sizeof(before));
}
END_TEST

/* Retries: the tried mask moves a key on to its next server on the ring, which is where
 * the key goes when its server is out; every server once, then none. */
START_TEST(test_hash_tried)
{
    struct cg_upstream *up = up_new(SERVERS4 "balance = hash\n", 1);
    unsigned i, n;

    for (i = 0; i < 200; i++) {
        uint64_t k = key_of(i), tried = 0;
        struct cg_server *first = cg_upstream_pick_key(up, 0, 0, &k), *next, *srv;

        for (n = 0; n < 4; n++) {
            srv = cg_upstream_pick_key(up, 0, tried, &k);
            ck_assert_ptr_nonnull(srv);
            ck_assert_uint_eq(tried & (1ull << srv->index), 0);
            ck_assert_ptr_eq(cg_upstream_pick_key(up, 0, tried, &k), srv);     /* stable */
            tried |= 1ull << srv->index;
        }
        ck_assert_uint_eq(tried, 0xf);
        ck_assert_ptr_null(cg_upstream_pick_key(up, 0, tried, &k));
        /* the retry after <first> = the pick with <first> down */
        next = cg_upstream_pick_key(up, 0, 1ull << first->index, &k);
        atomic_store(&first->down, 1);
        ck_assert_ptr_eq(cg_upstream_pick_key(up, 0, 0, &k), next);
        atomic_store(&first->down, 0);
    }
}
END_TEST

/* More than 64 servers: those past 63 are never excluded by tried (as the other methods),
 * and the walk still finds them when everything else is out. */
START_TEST(test_hash_past_63)
{
    char body[4096];
    size_t off;
    struct cg_upstream *up;
    unsigned i;
    uint64_t k = key_of(7);

    off = (size_t)snprintf(body, sizeof(body), "balance = hash\nservers =");
    for (i = 0; i < 66; i++)
        off += (size_t)snprintf(body + off, sizeof(body) - off, " 127.0.0.1:%u", 9001 + i);
    snprintf(body + off, sizeof(body) - off, "\n");
    up = up_new(body, 1);
    for (i = 0; i < 66; i++)
        if (i != 65)
            atomic_store(&up->servers[i].down, 1);
    ck_assert_ptr_eq(cg_upstream_pick_key(up, 0, ~(uint64_t)0, &k), &up->servers[65]);
    atomic_store(&up->servers[65].down, 1);
    ck_assert_ptr_null(cg_upstream_pick_key(up, 0, 0, &k));
}
END_TEST

/* No key (the request had no such cookie, header, parameter): the weighted round robin. */
START_TEST(test_hash_no_key)
{
    struct cg_upstream *up = up_new("servers = 127.0.0.1:9001 weight=5, 127.0.0.1:9002, "
                                    "127.0.0.1:9003\nbalance = hash\n", 1);
    char buf[16];
    size_t i;

    for (i = 0; i < 7; i++)
        buf[i] = (char)('a' + cg_upstream_pick_key(up, 0, 0, NULL)->index);
    buf[7] = '\0';
    ck_assert_str_eq(buf, "aabacaa");
    ck_assert_str_eq(picks(up, 0, 0, buf, 7), "aabacaa");
    ck_assert_str_eq(picks(up, 0, 1u << 0, buf, 4), "bcbc");
}
END_TEST

/* A key for an upstream that does not hash is ignored: its own method. */
START_TEST(test_hash_key_other_method)
{
    struct cg_upstream *up = up_new(SERVERS3, 1);
    uint64_t k = key_of(1);
    char buf[8];
    size_t i;

    ck_assert_ptr_null(up->ring);
    for (i = 0; i < 6; i++)
        buf[i] = (char)('a' + cg_upstream_pick_key(up, 0, 0, &k)->index);
    buf[6] = '\0';
    ck_assert_str_eq(buf, "abcabc");
}
END_TEST

Suite *upstream_suite(void)
{
    Suite *s = suite_create("upstream");
    TCase *tc;

    tc = tcase_create("state");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_new_state);
    tcase_add_test(tc, test_source_in_turn);
    tcase_add_test(tc, test_source_none);
    tcase_add_test(tc, test_new_several_upstreams);
    tcase_add_test(tc, test_free_null);
    tcase_add_test(tc, test_no_limit);
    tcase_add_loop_test(tc, test_exclusions_every_method, 0, 4);
    tcase_add_loop_test(tc, test_tried_past_63, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("roundrobin");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_rr_equal_weights);
    tcase_add_test(tc, test_rr_smooth_weights);
    tcase_add_test(tc, test_rr_weights_two_servers);
    tcase_add_test(tc, test_rr_per_worker);
    tcase_add_test(tc, test_rr_down);
    tcase_add_test(tc, test_rr_down_weighted);
    tcase_add_test(tc, test_rr_tried);
    tcase_add_test(tc, test_rr_max_connections);
    suite_add_tcase(s, tc);

    tc = tcase_create("leastconn");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_leastconn_fewest);
    tcase_add_test(tc, test_leastconn_fills_evenly);
    tcase_add_test(tc, test_leastconn_weighted);
    tcase_add_test(tc, test_leastconn_weight_precision);
    tcase_add_loop_test(tc, test_leastconn_ties_spread, 0, 2);
    suite_add_tcase(s, tc);

    tc = tcase_create("random");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_random_load_even);
    tcase_add_test(tc, test_random_weights);
    tcase_add_test(tc, test_random_less_loaded);
    tcase_add_test(tc, test_random_workers_differ);
    suite_add_tcase(s, tc);

    tc = tcase_create("hash");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_hash64_vectors);
    tcase_add_test(tc, test_hash_weights);
    tcase_add_test(tc, test_hash_deterministic);
    tcase_add_test(tc, test_hash_add_server);
    tcase_add_test(tc, test_hash_order_free);
    tcase_add_loop_test(tc, test_hash_server_out, 0, 5);
    tcase_add_test(tc, test_hash_tried);
    tcase_add_test(tc, test_hash_past_63);
    tcase_add_test(tc, test_hash_no_key);
    tcase_add_test(tc, test_hash_key_other_method);
    suite_add_tcase(s, tc);

    tc = tcase_create("health");
    tcase_add_checked_fixture(tc, NULL, teardown);
    tcase_add_test(tc, test_check_fall_rise);
    tcase_add_test(tc, test_check_fall_rise_one);
    tcase_add_test(tc, test_check_defaults);
    suite_add_tcase(s, tc);
    return s;
}
