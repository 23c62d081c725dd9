/* tests/test_admission.c — the shared token bucket (GCRA) alone and under threads, client
 * address keys, the bounded address table, and the [admission] configuration. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gateway/guard/admission.h"
#include "gateway/config/config.h"
#include "gateway/guard/tokenbucket.h"

#define MS 1000000ull       /* ns */
#define S  1000000000ull

/* ------------------------------------------------------------------ one thread */

/* Burst at once, then exactly one token per interval, never more than the burst saved. */
START_TEST(test_tbs_burst_then_rate)
{
    struct cg_tb_shared tb;
    uint64_t t0 = 5 * S, wait = 0, t;
    int i, n;

    cg_tbs_init(&tb, 10, 5);                    /* 10/s: one per 100 ms, burst 5 */
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(cg_tbs_take(&tb, t0, NULL), 1);
    ck_assert_int_eq(cg_tbs_take(&tb, t0, &wait), 0);
    ck_assert_uint_eq(wait, 100 * MS);
    ck_assert_int_eq(cg_tbs_take(&tb, t0 + 100 * MS - 1, NULL), 0);
    ck_assert_int_eq(cg_tbs_take(&tb, t0 + 100 * MS, NULL), 1);
    /* Steady: over 2 s of 1 ms steps, 20 more and not one over. */
    for (n = 0, t = t0 + 100 * MS + 1 * MS; t <= t0 + 2100 * MS; t += MS)
        n += cg_tbs_take(&tb, t, NULL);
    ck_assert_int_eq(n, 20);
    /* A long pause saves the burst, no more. */
    ck_assert_uint_eq(cg_tbs_available(&tb, t0 + 60 * S), 5);
    for (n = 0, i = 0; i < 10; i++)
        n += cg_tbs_take(&tb, t0 + 60 * S, NULL);
    ck_assert_int_eq(n, 5);
    /* Burst 0 means one second's worth; rate 0 means no limit. */
    cg_tbs_init(&tb, 3, 0);
    for (n = 0, i = 0; i < 10; i++)
        n += cg_tbs_take(&tb, S, NULL);
    ck_assert_int_eq(n, 3);
    cg_tbs_set(&tb, 0, 0);
    for (n = 0, i = 0; i < 1000; i++)
        n += cg_tbs_take(&tb, S, NULL);
    ck_assert_int_eq(n, 1000);
    ck_assert_uint_eq(cg_tbs_available(&tb, S), UINT64_MAX);
}
END_TEST

/* What `set rate a 1 3` does to a listener's bucket that had no limit (test_set_rate in
 * test_overload.c drives it through the daemon): exactly the burst at once, then one token
 * a second, on a clock the test drives; and "0 0" lifts the limit again. */
START_TEST(test_tbs_set_from_off)
{
    struct cg_tb_shared tb;
    uint64_t t0 = 7 * S, wait = 0;
    uint32_t rate, burst;
    int i, n;

    cg_tbs_init(&tb, 0, 0);
    for (i = 0; i < 100; i++)                   /* no limit: takes leave no trace */
        ck_assert_int_eq(cg_tbs_take(&tb, t0, NULL), 1);
    cg_tbs_set(&tb, 1, 3);
    cg_tbs_get(&tb, &rate, &burst);
    ck_assert_uint_eq(rate, 1);
    ck_assert_uint_eq(burst, 3);
    ck_assert_uint_eq(cg_tbs_available(&tb, t0), 3);
    /* three at once, or spread over less than a second: the same three */
    ck_assert_int_eq(cg_tbs_take(&tb, t0, NULL), 1);
    ck_assert_int_eq(cg_tbs_take(&tb, t0 + 300 * MS, NULL), 1);
    ck_assert_int_eq(cg_tbs_take(&tb, t0 + 600 * MS, NULL), 1);
    ck_assert_int_eq(cg_tbs_take(&tb, t0 + 600 * MS, &wait), 0);
    ck_assert_uint_eq(wait, 400 * MS);          /* a second after the first take */
    ck_assert_int_eq(cg_tbs_take(&tb, t0 + S - 1, NULL), 0);
    ck_assert_int_eq(cg_tbs_take(&tb, t0 + S, NULL), 1);
    /* over the next 10 s of 1 ms steps: 10 more, never 11 */
    for (n = 0, i = 1; i <= 10000; i++)
        n += cg_tbs_take(&tb, t0 + S + (uint64_t)i * MS, NULL);
    ck_assert_int_eq(n, 10);
    cg_tbs_set(&tb, 0, 0);
    for (n = 0, i = 0; i < 6; i++)
        n += cg_tbs_take(&tb, t0 + 11 * S, NULL);
    ck_assert_int_eq(n, 6);
}
END_TEST

/* A rate that does not divide a second: rounding never admits more than the rate. */
START_TEST(test_tbs_odd_rate)
{
    struct cg_tb_shared tb;
    uint64_t t;
    int n = 0;

    cg_tbs_init(&tb, 3, 1);
    for (t = 0; t <= 10 * S; t += MS)
        n += cg_tbs_take(&tb, t, NULL);
    ck_assert_int_ge(n, 30);                    /* 1 + 10 s x 3/s, less the rounding */
    ck_assert_int_le(n, 31);
}
END_TEST

/* Changing rate and burst at run time keeps the recent takes (as the time until full). */
START_TEST(test_tbs_set)
{
    struct cg_tb_shared tb;
    uint32_t rate, burst;
    int n = 0, i;

    cg_tbs_init(&tb, 100, 50);
    cg_tbs_get(&tb, &rate, &burst);
    ck_assert_uint_eq(rate, 100);
    ck_assert_uint_eq(burst, 50);
    cg_tbs_set(&tb, 100, 10);
    for (i = 0; i < 100; i++)
        n += cg_tbs_take(&tb, S, NULL);
    ck_assert_int_eq(n, 10);
    /* 10 taken at 10/s: full again in 100 ms, at whatever rate: 100 of 1000 missing */
    cg_tbs_set(&tb, 1000, 0);                   /* 1 ms a token, burst 1000 */
    cg_tbs_get(&tb, &rate, &burst);
    ck_assert_uint_eq(burst, 1000);
    ck_assert_uint_eq(cg_tbs_available(&tb, S), 900);
    ck_assert_uint_eq(cg_tbs_available(&tb, S + 100 * MS), 1000);
}
END_TEST

/* ------------------------------------------------------------------ threads */

#define THREADS 4

struct hammer {
    struct cg_tb_shared *tb;
    _Atomic uint64_t    *clock;     /* ns, or NULL: uv_hrtime() */
    _Atomic uint64_t    *all_taken; /* shared by the threads, or NULL */
    _Atomic int         *stop;
    uint64_t             taken;
    uint64_t             first, last;   /* real clock: first and last attempt */
};

static void *hammer_main(void *arg)
{
    struct hammer *h = arg;
    uint64_t now;
    int misses = 0;

    for (;;) {
        now = h->clock ? atomic_load(h->clock) : uv_hrtime();
        if (!h->first)
            h->first = now;
        h->last = now;
        if (cg_tbs_take(h->tb, now, NULL)) {
            h->taken++;
            if (h->all_taken)
                atomic_fetch_add(h->all_taken, 1);
            misses = 0;
        } else if (atomic_load(h->stop) && ++misses > 1000) {
            break;      /* stopped, and the bucket stays empty at the final clock */
        }
    }
    return NULL;
}

/* A clock moved one emission interval at a time while 4 threads take: each step is
 * exactly one more token, whatever the interleaving. The clock moves on only once the
 * token of the previous step was taken (or after a long wait): on a loaded machine the
 * takers may fall behind, and a bucket rightly caps what accumulates at its burst. */
START_TEST(test_tbs_exact_under_threads)
{
    struct cg_tb_shared tb;
    _Atomic uint64_t clock = 1 * S;
    _Atomic uint64_t all_taken = 0;
    _Atomic int stop = 0;
    struct hammer h[THREADS];
    pthread_t th[THREADS];
    uint64_t total = 0, steps = 0;
    int i;

    cg_tbs_init(&tb, 1000, 64);                 /* 1 ms a token */
    for (i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){ .tb = &tb, .clock = &clock, .all_taken = &all_taken,
                                .stop = &stop };
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    for (steps = 0; steps < 3000; steps++) {
        uint64_t spins = 0;

        while (atomic_load(&all_taken) < 64 + steps && ++spins < 100000000)
            sched_yield();
        atomic_fetch_add(&clock, MS);
    }
    atomic_store(&stop, 1);
    for (i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += h[i].taken;
    }
    ck_assert_uint_eq(total, 64 + steps);
}
END_TEST

/* The real clock, 4 threads for 300 ms: burst + elapsed x rate, within one token. */
START_TEST(test_tbs_real_clock_threads)
{
    struct cg_tb_shared tb;
    _Atomic int stop = 0;
    struct hammer h[THREADS];
    pthread_t th[THREADS];
    uint64_t total = 0, first = UINT64_MAX, last = 0, expect;
    int i;

    cg_tbs_init(&tb, 200, 20);                  /* 5 ms a token */
    for (i = 0; i < THREADS; i++) {
        h[i] = (struct hammer){ .tb = &tb, .stop = &stop };
        ck_assert_int_eq(pthread_create(&th[i], NULL, hammer_main, &h[i]), 0);
    }
    uv_sleep(300);
    atomic_store(&stop, 1);
    for (i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += h[i].taken;
        if (h[i].first < first)
            first = h[i].first;
        if (h[i].last > last)
            last = h[i].last;
    }
    expect = 20 + (last - first) / (5 * MS);
    ck_assert_msg(total + 1 >= expect && total <= expect + 1,
                  "%llu taken in %llu ms, expected %llu +-1", (unsigned long long)total,
                  (unsigned long long)((last - first) / MS), (unsigned long long)expect);
}
END_TEST

/* ------------------------------------------------------------------ addresses */

static void sa4(struct sockaddr_in *sin, const char *ip)
{
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    ck_assert_int_eq(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
}

static void sa6(struct sockaddr_in6 *sin6, const char *ip)
{
    memset(sin6, 0, sizeof(*sin6));
    sin6->sin6_family = AF_INET6;
    ck_assert_int_eq(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
}

START_TEST(test_ipkey)
{
    struct sockaddr_in a, b;
    struct sockaddr_in6 c, d, m;
    struct cg_ipkey ka, kb, kc, kd, km;
    char buf[64];

    sa4(&a, "10.1.2.3");
    sa4(&b, "10.1.2.200");
    ck_assert_int_eq(cg_ipkey_make(&ka, (struct sockaddr *)&a, 32, 64, 0), 0);
    ck_assert_int_eq(cg_ipkey_make(&kb, (struct sockaddr *)&b, 32, 64, 0), 0);
    ck_assert(ka.lo != kb.lo);
    ck_assert_str_eq(cg_ipkey_format(&ka, 32, 64, buf, sizeof(buf)), "10.1.2.3/32");
    ck_assert_int_eq(cg_ipkey_make(&ka, (struct sockaddr *)&a, 24, 64, 0), 0);
    ck_assert_int_eq(cg_ipkey_make(&kb, (struct sockaddr *)&b, 24, 64, 0), 0);
    ck_assert(ka.lo == kb.lo && ka.hi == kb.hi);
    ck_assert_str_eq(cg_ipkey_format(&ka, 24, 64, buf, sizeof(buf)), "10.1.2.0/24");

    /* IPv6: one /64 is one client by default */
    sa6(&c, "2001:db8:1:2:aaaa::1");
    sa6(&d, "2001:db8:1:2:bbbb::2");
    ck_assert_int_eq(cg_ipkey_make(&kc, (struct sockaddr *)&c, 32, 64, 0), 0);
    ck_assert_int_eq(cg_ipkey_make(&kd, (struct sockaddr *)&d, 32, 64, 0), 0);
    ck_assert(kc.hi == kd.hi && kc.lo == kd.lo);
    ck_assert_str_eq(cg_ipkey_format(&kc, 32, 64, buf, sizeof(buf)), "2001:db8:1:2::/64");
    ck_assert_int_eq(cg_ipkey_make(&kd, (struct sockaddr *)&d, 32, 128, 0), 0);
    ck_assert(kc.lo != kd.lo);

    /* An IPv4-mapped IPv6 address is that IPv4 client; the listener is part of the key */
    sa6(&m, "::ffff:10.1.2.3");
    ck_assert_int_eq(cg_ipkey_make(&km, (struct sockaddr *)&m, 32, 64, 0), 0);
    ck_assert_int_eq(cg_ipkey_make(&ka, (struct sockaddr *)&a, 32, 64, 0), 0);
    ck_assert(km.hi == ka.hi && km.lo == ka.lo && km.tag == ka.tag);
    ck_assert_int_eq(cg_ipkey_make(&km, (struct sockaddr *)&m, 32, 64, 7), 0);
    ck_assert_uint_eq(km.tag, 7);
    c.sin6_family = AF_UNIX;
    ck_assert_int_eq(cg_ipkey_make(&kc, (struct sockaddr *)&c, 32, 64, 0), -EAFNOSUPPORT);
}
END_TEST

static struct cg_ipkey key_of(const char *ip, uint32_t tag)
{
    struct sockaddr_in sin;
    struct cg_ipkey k;

    sa4(&sin, ip);
    ck_assert_int_eq(cg_ipkey_make(&k, (struct sockaddr *)&sin, 32, 64, tag), 0);
    return k;
}

/* One address's bucket and quota; other addresses, and the same one on another listener,
 * are unaffected. */
START_TEST(test_iptable_rate_and_quota)
{
    struct cg_iptable *t = cg_iptable_new(1024, 42);
    struct cg_ipkey a = key_of("127.0.0.2", 0), b = key_of("127.0.0.3", 0);
    struct cg_ipkey a1 = key_of("127.0.0.2", 1);
    uint32_t slot, slots[3];
    uint64_t wait = 0;
    int i;

    ck_assert_ptr_nonnull(t);
    for (i = 0; i < 5; i++) {
        ck_assert_int_eq(cg_iptable_admit(t, &a, 5, 5, 0, S, &slot, NULL), 0);
        ck_assert_uint_eq(slot, 0);             /* no quota: nothing held */
    }
    ck_assert_int_eq(cg_iptable_admit(t, &a, 5, 5, 0, S, &slot, &wait), CG_REJ_IP_RATE);
    ck_assert_uint_eq(wait, 200 * MS);
    ck_assert_int_eq(cg_iptable_admit(t, &b, 5, 5, 0, S, &slot, NULL), 0);
    ck_assert_int_eq(cg_iptable_admit(t, &a1, 5, 5, 0, S, &slot, NULL), 0);
    ck_assert_int_eq(cg_iptable_admit(t, &a, 5, 5, 0, S + 200 * MS, &slot, NULL), 0);

    /* quota: 3 connections of b held, a fourth refused without spending a token */
    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(cg_iptable_admit(t, &b, 0, 0, 3, 2 * S, &slots[i], NULL), 0);
        ck_assert_uint_ne(slots[i], 0);
    }
    ck_assert_uint_eq(cg_iptable_conns(t, &b), 3);
    ck_assert_int_eq(cg_iptable_admit(t, &b, 0, 0, 3, 2 * S, &slot, NULL), CG_REJ_IP_QUOTA);
    ck_assert_int_eq(cg_iptable_admit(t, &a, 0, 0, 3, 2 * S, &slot, NULL), 0);
    cg_iptable_release(t, slot);
    cg_iptable_release(t, slots[1]);
    ck_assert_uint_eq(cg_iptable_conns(t, &b), 2);
    ck_assert_int_eq(cg_iptable_admit(t, &b, 0, 0, 3, 2 * S, &slot, NULL), 0);
    cg_iptable_release(t, slot);
    cg_iptable_release(t, slots[0]);
    cg_iptable_release(t, slots[2]);
    cg_iptable_release(t, 0);                   /* nothing held: nothing done */
    ck_assert_uint_eq(cg_iptable_conns(t, &b), 0);
    cg_iptable_free(t);
    cg_iptable_free(NULL);
}
END_TEST

/* A flood of distinct sources recycles entries: the table never holds more than its
 * capacity, and addresses holding connections are never evicted. */
START_TEST(test_iptable_bounded)
{
    struct cg_iptable *t = cg_iptable_new(64, 7);
    struct cg_iptable_stats st;
    struct cg_ipkey k, held[16];
    uint32_t slot, hslot[16];
    char ip[32];
    unsigned i;

    ck_assert_ptr_nonnull(t);
    for (i = 0; i < 16; i++) {
        snprintf(ip, sizeof(ip), "192.168.0.%u", i + 1);
        held[i] = key_of(ip, 0);
        ck_assert_int_eq(cg_iptable_admit(t, &held[i], 1, 1, 10, S, &hslot[i], NULL), 0);
    }
    for (i = 0; i < 100000; i++) {
        snprintf(ip, sizeof(ip), "10.%u.%u.%u", i >> 16, (i >> 8) & 255, i & 255);
        k = key_of(ip, 0);
        /* every source spends its token: a live entry, not one free for reuse */
        ck_assert_int_eq(cg_iptable_admit(t, &k, 1, 1, 0, S + i, &slot, NULL), 0);
    }
    cg_iptable_stats(t, S + i, &st);
    ck_assert_uint_eq(st.capacity, 64);
    ck_assert_uint_le(st.live, 64);
    ck_assert_uint_ge(st.evictions + st.untracked, 100000 - 64);
    ck_assert_uint_eq(st.holding, 16);
    for (i = 0; i < 16; i++) {
        ck_assert_uint_eq(cg_iptable_conns(t, &held[i]), 1);
        cg_iptable_release(t, hslot[i]);
    }
    /* Once their buckets are full again, entries are free: nothing live. */
    cg_iptable_stats(t, 10 * S, &st);
    ck_assert_uint_eq(st.live, 0);
    cg_iptable_free(t);
}
END_TEST

/* Every entry of a set holding connections: a newcomer is admitted untracked. */
START_TEST(test_iptable_full_set_fails_open)
{
    struct cg_iptable *t = cg_iptable_new(64, 1);
    struct cg_iptable_stats st;
    struct cg_ipkey k;
    uint32_t slot;
    char ip[32];
    unsigned i, held = 0;

    ck_assert_ptr_nonnull(t);
    /* 64 entries: holding 1000 addresses' connections must overflow some sets */
    for (i = 0; i < 1000; i++) {
        snprintf(ip, sizeof(ip), "10.0.%u.%u", i >> 8, i & 255);
        k = key_of(ip, 0);
        ck_assert_int_eq(cg_iptable_admit(t, &k, 0, 0, 1, S, &slot, NULL), 0);
        held += slot != 0;
    }
    cg_iptable_stats(t, S, &st);
    ck_assert_uint_eq(held, 64);
    ck_assert_uint_eq(st.holding, 64);
    ck_assert_uint_eq(st.untracked, 1000 - 64);
    cg_iptable_free(t);
}
END_TEST

struct ipham {
    struct cg_iptable *t;
    struct cg_ipkey    key;
    unsigned           ok;
};

static void *ipham_main(void *arg)
{
    struct ipham *h = arg;
    uint32_t slot;
    int i;

    for (i = 0; i < 20000; i++)
        if (cg_iptable_admit(h->t, &h->key, 100, 500, 0, S, &slot, NULL) == 0)
            h->ok++;
    return NULL;
}

/* One address hammered by 4 threads at one instant: exactly its burst. */
START_TEST(test_iptable_threads)
{
    struct cg_iptable *t = cg_iptable_new(1024, 3);
    struct ipham h[THREADS];
    pthread_t th[THREADS];
    unsigned total = 0;
    int i;

    for (i = 0; i < THREADS; i++) {
        h[i] = (struct ipham){ .t = t, .key = key_of("127.0.0.9", 2) };
        ck_assert_int_eq(pthread_create(&th[i], NULL, ipham_main, &h[i]), 0);
    }
    for (i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        total += h[i].ok;
    }
    ck_assert_uint_eq(total, 500);
    cg_iptable_free(t);
}
END_TEST

/* ------------------------------------------------------------------ configuration */

static struct cg_config *parse(const char *text, struct cg_errors *errs)
{
    struct cg_config *cfg = NULL;

    cg_errors_init(errs);
    cg_config_parse_string("t.ini", text, &cfg, errs);
    return cfg;
}

#define TAIL "[upstream u]\nservers = 127.0.0.1:1\n"

START_TEST(test_config_admission)
{
    struct cg_errors errs;
    struct cg_config *cfg;
    const struct cg_adm_limits *a, *b;

    cfg = parse("[listener a]\nbind = 127.0.0.1:0\nupstream = u\n" TAIL, &errs);
    ck_assert_ptr_nonnull(cfg);
    a = &cfg->listeners[0].adm;
    ck_assert_uint_eq(a->conn_rate, 0);
    ck_assert_uint_eq(a->ip_conn_rate, 0);
    ck_assert_uint_eq(a->max_conns_per_ip, 0);
    ck_assert_int_eq(a->reject, CG_REJECT_CLOSE);
    ck_assert_uint_eq(cfg->adm.ipv4_prefix, 32);
    ck_assert_uint_eq(cfg->adm.ipv6_prefix, 64);
    ck_assert_uint_eq(cfg->adm.ip_table_size, 65536);
    ck_assert_uint_eq(cfg->adm.reject_timeout_ms, 1000);
    ck_assert_uint_eq(cfg->adm.max_rejecting, 1024);
    cg_config_free(cfg);
    cg_errors_deinit(&errs);

    /* [admission] after the listeners still gives them its values; a listener's own keys
     * win, key by key */
    cfg = parse("[listener a]\nbind = 127.0.0.1:0\nupstream = u\nconnection_rate = 7\n"
                "reject = rst\n"
                "[listener b]\nbind = 127.0.0.1:0\nupstream = u\n" TAIL
                "[admission]\nconnection_rate = 100\nconnection_burst = 20\n"
                "ip_connection_rate = 5\nmax_connections_per_ip = 3\nipv6_prefix = 56\n",
                &errs);
    ck_assert_msg(cfg != NULL, "%s", cg_errors_get(&errs, 0));
    a = &cfg->listeners[0].adm;
    b = &cfg->listeners[1].adm;
    ck_assert_uint_eq(a->conn_rate, 7);
    ck_assert_uint_eq(a->conn_burst, 20);
    ck_assert_uint_eq(a->ip_conn_rate, 5);
    ck_assert_uint_eq(a->max_conns_per_ip, 3);
    ck_assert_int_eq(a->reject, CG_REJECT_RST);
    ck_assert_uint_eq(b->conn_rate, 100);
    ck_assert_int_eq(b->reject, CG_REJECT_CLOSE);
    ck_assert_uint_eq(cfg->adm.ipv6_prefix, 56);
    cg_config_free(cfg);
    cg_errors_deinit(&errs);

    cfg = parse("[admission]\nreject = drop\nipv4_prefix = 33\n[admission]\n"
                "[listener a]\nbind = 127.0.0.1:0\nupstream = u\nip_connection_rate = x\n" TAIL,
                &errs);
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(cg_errors_count(&errs), 4);
    ck_assert_str_eq(cg_errors_get(&errs, 0),
                     "t.ini:2: [admission] reject: \"drop\" is not one of: close, rst");
    ck_assert_str_eq(cg_errors_get(&errs, 1), "t.ini:3: [admission] ipv4_prefix: \"33\" is "
                     "out of range (expected 1..32)");
    ck_assert_str_eq(cg_errors_get(&errs, 2),
                     "t.ini:4: [admission]: duplicate section (first at line 1)");
    ck_assert_str_eq(cg_errors_get(&errs, 3), "t.ini:8: [listener a] ip_connection_rate: "
                     "\"x\" is not a number (expected 0..100000000)");
    cg_errors_deinit(&errs);
}
END_TEST

/* Listener state is found by name and outlives reloads: limits change in place, a new
 * listener gets its own; the address table exists only when some listener needs it. */
START_TEST(test_admission_apply)
{
    struct cg_errors errs;
    struct cg_config *c1, *c2;
    struct cg_admission *a;
    struct cg_adm_listener *x, *y;
    uint32_t rate, burst;

    c1 = parse("[listener x]\nbind = 127.0.0.1:0\nupstream = u\nconnection_rate = 5\n"
               "[listener z]\nbind = 127.0.0.1:0\nupstream = u\n" TAIL, &errs);
    ck_assert_ptr_nonnull(c1);
    cg_errors_deinit(&errs);
    c2 = parse("[listener y]\nbind = 127.0.0.1:0\nupstream = u\nreject = rst\n"
               "[listener x]\nbind = 127.0.0.1:0\nupstream = u\nconnection_rate = 50\n"
               "connection_burst = 7\n" TAIL "[admission]\nmax_rejecting = 3\n", &errs);
    ck_assert_ptr_nonnull(c2);
    cg_errors_deinit(&errs);
    a = cg_admission_new(c1);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_null(a->ipt);
    x = cg_admission_listener(a, "x");
    ck_assert_ptr_nonnull(x);
    ck_assert_ptr_null(cg_admission_listener(a, "y"));
    cg_tbs_get(&x->bucket, &rate, &burst);
    ck_assert_uint_eq(rate, 5);
    ck_assert_int_eq(cg_admission_apply(a, c2), 0);
    ck_assert_ptr_eq(cg_admission_listener(a, "x"), x);
    cg_tbs_get(&x->bucket, &rate, &burst);
    ck_assert_uint_eq(rate, 50);
    ck_assert_uint_eq(burst, 7);
    y = cg_admission_listener(a, "y");
    ck_assert_ptr_nonnull(y);
    ck_assert_int_eq(atomic_load(&y->reject), CG_REJECT_RST);
    ck_assert_uint_ne(y->id, x->id);
    ck_assert_uint_eq(atomic_load(&a->max_rejecting), 3);
    /* episodes: the first refusal starts one, the next ones do not */
    ck_assert_int_eq(cg_admission_note(a, x, CG_REJ_RATE, 1000), 1);
    ck_assert_int_eq(cg_admission_note(a, x, CG_REJ_RATE, 1001), 0);
    ck_assert_int_eq(cg_admission_note(a, x, CG_REJ_BREAKER, 1001), 1);
    ck_assert_uint_eq(atomic_load(&x->refused[CG_REJ_RATE]), 2);
    cg_admission_tick(a, 1500);
    ck_assert_uint_eq(atomic_load(&x->since_ms[CG_REJ_RATE]), 1000);
    cg_admission_tick(a, 2001);
    ck_assert_uint_eq(atomic_load(&x->since_ms[CG_REJ_RATE]), 0);
    ck_assert_int_eq(cg_admission_note(a, x, CG_REJ_RATE, 3000), 1);
    cg_admission_free(a);
    cg_admission_free(NULL);
    cg_config_free(c1);
    cg_config_free(c2);
}
END_TEST

/* Every [admission] and [breaker] key, and the overrides, in conf/corogate.ini. */
START_TEST(test_keys_documented)
{
    static const char *const keys[] = {
        "[admission]", "connection_rate", "connection_burst", "ip_connection_rate",
        "ip_connection_burst", "max_connections_per_ip", "reject", "ipv4_prefix",
        "ipv6_prefix", "ip_table_size", "reject_timeout", "max_rejecting",
        "[breaker]", "max_connections_per_worker", "memory_watermark", "fd_watermark",
        "open_for", "resume", "half_open_rate", "check_interval", "sched_latency_threshold",
        "sched_latency_window",
        "max_pending_connects_per_server", "eject_consecutive_failures", "eject_error_rate",
        "eject_window", "eject_min_connects", "eject_cooldown",
    };
    struct cg_config *cfg = NULL;
    char *text, pat[2][80];
    size_t i, n;
    FILE *f;

    f = fopen("conf/corogate.ini", "r");
    ck_assert_ptr_nonnull(f);
    text = calloc(1, 1 << 20);
    ck_assert_ptr_nonnull(text);
    text[0] = '\n';
    n = fread(text + 1, 1, (1 << 20) - 2, f);
    fclose(f);
    text[n + 1] = '\0';
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        if (keys[i][0] == '[') {
            snprintf(pat[0], sizeof(pat[0]), "\n%s\n", keys[i]);
            ck_assert_msg(strstr(text, pat[0]), "%s missing", keys[i]);
            continue;
        }
        snprintf(pat[0], sizeof(pat[0]), "\n%s = ", keys[i]);
        snprintf(pat[1], sizeof(pat[1]), "\n;%s = ", keys[i]);
        ck_assert_msg(strstr(text, pat[0]) || strstr(text, pat[1]), "%s missing", keys[i]);
    }
    free(text);
    ck_assert_int_eq(cg_config_load("conf/corogate.ini", &cfg, NULL), 0);
    cg_config_free(cfg);
}
END_TEST

Suite *admission_suite(void)
{
    Suite *s = suite_create("admission");
    TCase *tc = tcase_create("admission");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_tbs_burst_then_rate);
    tcase_add_test(tc, test_tbs_set_from_off);
    tcase_add_test(tc, test_tbs_odd_rate);
    tcase_add_test(tc, test_tbs_set);
    tcase_add_test(tc, test_tbs_exact_under_threads);
    tcase_add_test(tc, test_tbs_real_clock_threads);
    tcase_add_test(tc, test_ipkey);
    tcase_add_test(tc, test_iptable_rate_and_quota);
    tcase_add_test(tc, test_iptable_bounded);
    tcase_add_test(tc, test_iptable_full_set_fails_open);
    tcase_add_test(tc, test_iptable_threads);
    tcase_add_test(tc, test_config_admission);
    tcase_add_test(tc, test_admission_apply);
    tcase_add_test(tc, test_keys_documented);
    suite_add_tcase(s, tc);
    return s;
}
