/* tests/test_breaker.c — the overload breaker's state machine on a clock the test drives,
 * its transitions under threads, the memory sample, the per-server failure breaker, and
 * the [breaker] configuration. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "gateway/guard/breaker.h"
#include "gateway/config/config.h"
#include "gateway/core/upstream.h"

static struct cg_config *parse(const char *extra)
{
    struct cg_config *cfg = NULL;
    struct cg_errors errs;
    char text[2048];

    snprintf(text, sizeof(text), "[listener a]\nbind = 127.0.0.1:0\nupstream = u\n"
             "[upstream u]\nservers = 127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3\n%s", extra);
    cg_errors_init(&errs);
    cg_config_parse_string("t.ini", text, &cfg, &errs);
    ck_assert_msg(cfg != NULL, "%s", cg_errors_count(&errs) ? cg_errors_get(&errs, 0) : "?");
    cg_errors_deinit(&errs);
    return cfg;
}

/* The states the history went through, as "closed>open>half_open...". */
static void sequence(struct cg_breaker *b, char *buf, size_t size)
{
    struct cg_brk_event ev[CG_BRK_HISTORY];
    size_t n = cg_breaker_history(b, ev, CG_BRK_HISTORY), i, len;

    len = (size_t)snprintf(buf, size, "closed");
    for (i = 0; i < n && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, ">%s:%s", cg_brk_state_name(ev[i].to),
                                cg_brk_why_name(ev[i].why));
}

#define USE(conns, max) ((unsigned)((conns) * 1000 / (max)))

/* Opens at the quota, refuses for open_for, half-opens with a trickle, stays half-open in
 * the hysteresis band, closes below resume, and opens again when crossed in half-open. */
START_TEST(test_state_machine)
{
    struct cg_config *cfg = parse("[gateway]\nmax_connections = 20\n[breaker]\nopen_for = 500ms\n"
                                  "resume = 50\nhalf_open_rate = 10\n");
    struct cg_breaker *b = cg_breaker_new(cfg, 1024);
    uint64_t t = 1000000, since;
    unsigned retry = 0, use, i, admitted;
    char seq[512];
    int res = -1, why;

    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_CLOSED);
    use = cg_breaker_use(b, 19, 19, &res, NULL);
    ck_assert_uint_eq(use, 950);
    ck_assert_int_eq(res, CG_BRKW_CONNECTIONS);
    ck_assert_int_eq(cg_breaker_admit(b, use, res, t, &retry), 1);
    /* the 21st connection: at the quota */
    use = cg_breaker_use(b, 20, 20, &res, NULL);
    ck_assert_int_eq(cg_breaker_admit(b, use, res, t, &retry), 0);
    ck_assert_uint_eq(retry, 1);
    ck_assert_int_eq(cg_breaker_state(b, &since, &why), CG_BRK_OPEN);
    ck_assert_uint_eq(since, t);
    ck_assert_int_eq(why, CG_BRKW_CONNECTIONS);
    /* open: everything refused for open_for, even at low use */
    ck_assert_int_eq(cg_breaker_admit(b, 0, CG_BRKW_CONNECTIONS, t + 499, &retry), 0);
    cg_breaker_tick(b, 0, CG_BRKW_CONNECTIONS, t + 499);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_OPEN);
    /* then half-open: 15 of 20 is above resume (50%): a trickle of 10/s gets through */
    use = USE(15, 20);
    for (admitted = 0, i = 0; i < 100; i++)
        admitted += (unsigned)cg_breaker_admit(b, use, CG_BRKW_CONNECTIONS, t + 500, &retry);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_HALF_OPEN);
    ck_assert_uint_eq(admitted, 1);
    for (admitted = 0, i = 0; i < 1000; i++)      /* over 1 s */
        admitted += (unsigned)cg_breaker_admit(b, use, CG_BRKW_CONNECTIONS,
                                               t + 500 + i + 1, &retry);
    ck_assert_uint_eq(admitted, 10);
    cg_breaker_tick(b, use, CG_BRKW_CONNECTIONS, t + 1600);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_HALF_OPEN);
    /* crossed again in half-open: open */
    use = USE(20, 20);
    ck_assert_int_eq(cg_breaker_admit(b, use, CG_BRKW_CONNECTIONS, t + 1700, &retry), 0);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_OPEN);
    /* the timer moves it along without traffic: half-open, then closed below resume */
    cg_breaker_tick(b, USE(9, 20), CG_BRKW_CONNECTIONS, t + 2199);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_OPEN);
    cg_breaker_tick(b, USE(9, 20), CG_BRKW_CONNECTIONS, t + 2200);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_HALF_OPEN);
    cg_breaker_tick(b, USE(9, 20), CG_BRKW_CONNECTIONS, t + 2250);
    ck_assert_int_eq(cg_breaker_state(b, &since, &why), CG_BRK_CLOSED);
    ck_assert_int_eq(why, CG_BRKW_RESUMED);
    ck_assert_int_eq(cg_breaker_admit(b, USE(19, 20), CG_BRKW_CONNECTIONS, t + 2300, &retry), 1);

    sequence(b, seq, sizeof(seq));
    ck_assert_str_eq(seq, "closed>open:connections>half_open:open_for>open:connections"
                          ">half_open:open_for>closed:resumed");
    ck_assert_uint_eq(atomic_load(&b->entered[CG_BRK_OPEN]), 2);
    ck_assert_uint_eq(atomic_load(&b->trips[CG_BRKW_CONNECTIONS]), 2);
    cg_breaker_free(b);
    cg_config_free(cfg);
}
END_TEST

/* Half-open closes at once on a connection when use is below resume. */
START_TEST(test_half_open_closes_on_admit)
{
    struct cg_config *cfg = parse("[breaker]\nopen_for = 10ms\nmax_connections_per_worker = 10\n");
    struct cg_breaker *b = cg_breaker_new(cfg, 1024);
    unsigned retry, use;
    int res;

    use = cg_breaker_use(b, 10, 10, &res, NULL);
    ck_assert_int_eq(res, CG_BRKW_WORKER);
    ck_assert_int_eq(cg_breaker_admit(b, use, res, 100, &retry), 0);
    use = cg_breaker_use(b, 8, 8, &res, NULL);                  /* 80% < 90% */
    ck_assert_int_eq(cg_breaker_admit(b, use, res, 110, &retry), 1);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_CLOSED);
    ck_assert_uint_eq(atomic_load(&b->entered[CG_BRK_HALF_OPEN]), 1);
    ck_assert_uint_eq(atomic_load(&b->trips[CG_BRKW_WORKER]), 1);
    cg_breaker_free(b);
    cg_config_free(cfg);
}
END_TEST

/* Forced open refuses all; forced closed admits all and never opens; auto goes back. */
START_TEST(test_modes)
{
    struct cg_config *cfg = parse("[breaker]\nopen_for = 1s\n");
    struct cg_breaker *b = cg_breaker_new(cfg, 1024);
    unsigned retry;

    ck_assert_int_eq(cg_breaker_set_mode(b, CG_BRK_FORCE_OPEN, 10), CG_BRK_AUTO);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_OPEN);
    ck_assert_int_eq(cg_breaker_admit(b, 0, 0, 5000, &retry), 0);
    ck_assert_int_eq(cg_breaker_set_mode(b, CG_BRK_FORCE_CLOSED, 20), CG_BRK_FORCE_OPEN);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_CLOSED);
    ck_assert_int_eq(cg_breaker_admit(b, 5000, 0, 30, &retry), 1);
    cg_breaker_trip(b, CG_BRKW_MEMORY, 2000, 30);
    cg_breaker_tick(b, 5000, CG_BRKW_MEMORY, 40);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_CLOSED);
    cg_breaker_set_mode(b, CG_BRK_FORCE_OPEN, 50);
    ck_assert_int_eq(cg_breaker_set_mode(b, CG_BRK_AUTO, 60), CG_BRK_FORCE_OPEN);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_HALF_OPEN);
    ck_assert_int_eq(cg_breaker_admit(b, 100, 0, 70, &retry), 1);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_CLOSED);
    ck_assert_uint_eq(atomic_load(&b->trips[CG_BRKW_FORCED]), 2);
    cg_breaker_free(b);
    cg_config_free(cfg);
}
END_TEST

/* A low watermark: the sampled resident memory trips it from the timer. */
START_TEST(test_memory_watermark)
{
    struct cg_config *cfg = parse("[breaker]\nmemory_watermark = 1m\n");
    struct cg_breaker *b = cg_breaker_new(cfg, 1024);
    unsigned use, each[CG_BRKW_NRES];
    int res;

    ck_assert_uint_eq(atomic_load(&b->memory_watermark), 1u << 20);
    ck_assert_int_eq(cg_breaker_sample(b, 10), 0);
    ck_assert_uint_gt(atomic_load(&b->rss), 1u << 20);
    use = cg_breaker_use(b, 0, 0, &res, each);
    ck_assert_int_eq(res, CG_BRKW_MEMORY);
    ck_assert_uint_ge(use, 1000);
    ck_assert_uint_eq(each[CG_BRKW_FDS], 0);        /* off */
    cg_breaker_tick(b, use, res, 1000);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_OPEN);
    ck_assert_uint_eq(atomic_load(&b->trips[CG_BRKW_MEMORY]), 1);
    cg_breaker_free(b);
    cg_config_free(cfg);

    /* auto: 90% of what the machine (or cgroup) has; off: nothing */
    cfg = parse("[breaker]\nmemory_watermark = off\nfd_watermark = 50%\n");
    b = cg_breaker_new(cfg, 1000);
    ck_assert_uint_eq(atomic_load(&b->memory_watermark), 0);
    cg_breaker_sample(b, 400);
    ck_assert_uint_eq(cg_breaker_use(b, 0, 0, &res, NULL), 800);
    ck_assert_int_eq(res, CG_BRKW_FDS);
    cg_breaker_free(b);
    cg_config_free(cfg);
    ck_assert_uint_gt(cg_breaker_memory_auto(), 1u << 20);
}
END_TEST

/* The scheduling-delay resource: the main thread's p99 sample against the threshold,
 * through the same transitions and hysteresis as the others; off by default. */
START_TEST(test_sched_latency)
{
    struct cg_config *cfg = parse("");
    struct cg_breaker *b;
    char seq[256];
    unsigned use, each[CG_BRKW_NRES];
    int res;

    ck_assert_uint_eq(cfg->brk.sched_latency_ms, 0);
    ck_assert_uint_eq(cfg->brk.sched_window_ms, 10000);
    b = cg_breaker_new(cfg, 1024);
    cg_breaker_sched_sample(b, 50000000, 0, 0, 500); /* 50 ms, but off: counts 0 */
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_CLOSED);
    cg_breaker_use(b, 0, 0, &res, each);
    ck_assert_uint_eq(each[CG_BRKW_SCHED], 0);
    cg_breaker_free(b);
    cg_config_free(cfg);

    cfg = parse("[breaker]\nsched_latency_threshold = 2ms\nsched_latency_window = 1s\n"
                "memory_watermark = off\nopen_for = 1s\n");
    ck_assert_uint_eq(cfg->brk.sched_latency_ms, 2);
    ck_assert_uint_eq(cfg->brk.sched_window_ms, 1000);
    b = cg_breaker_new(cfg, 1024);
    ck_assert_uint_eq(atomic_load(&b->sched_threshold_ns), 2000000);
    ck_assert_str_eq(cg_brk_why_name(CG_BRKW_SCHED), "sched_latency");

    cg_breaker_sched_sample(b, 1000000, 0, 0, 1000);   /* p99 1 ms: half the threshold */
    use = cg_breaker_use(b, 0, 0, &res, each);
    ck_assert_uint_eq(use, 500);
    ck_assert_int_eq(res, CG_BRKW_SCHED);
    cg_breaker_tick(b, use, res, 1000);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_CLOSED);

    /* 3 ms on worker 1: the sample itself opens it (the timer that would tick it runs on a
     * worker that may be the starved one), and the tick does not count a second trip. */
    cg_breaker_sched_sample(b, 3000000, 1, 1, 1100);
    ck_assert_int_eq(cg_breaker_state(b, NULL, &res), CG_BRK_OPEN);
    use = cg_breaker_use(b, 0, 0, &res, NULL);
    ck_assert_uint_eq(use, 1500);
    cg_breaker_tick(b, use, res, 1150);
    ck_assert_int_eq(cg_breaker_state(b, NULL, &res), CG_BRK_OPEN);
    ck_assert_int_eq(res, CG_BRKW_SCHED);
    ck_assert_uint_eq(atomic_load(&b->trips[CG_BRKW_SCHED]), 1);

    cg_breaker_sched_sample(b, 1900000, 1, 1, 2000);   /* 95%: above resume */
    use = cg_breaker_use(b, 0, 0, &res, NULL);
    cg_breaker_tick(b, use, res, 2100);                 /* open_for over */
    cg_breaker_tick(b, use, res, 2200);                 /* in the hysteresis band */
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_HALF_OPEN);
    cg_breaker_sched_sample(b, 1000000, 1, 1, 2250);   /* 50%: below resume */
    use = cg_breaker_use(b, 0, 0, &res, NULL);
    cg_breaker_tick(b, use, res, 2300);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_CLOSED);
    sequence(b, seq, sizeof(seq));
    ck_assert_str_eq(seq, "closed>open:sched_latency>half_open:open_for>closed:resumed");

    /* a reload that turns it off forgets the sample */
    cg_config_free(cfg);
    cfg = parse("[breaker]\nmemory_watermark = off\n");
    cg_breaker_sched_sample(b, 1900000, 0, 0, 2400);
    cg_breaker_apply(b, cfg);
    ck_assert_uint_eq(cg_breaker_use(b, 0, 0, NULL, NULL), 0);
    cg_breaker_sched_sample(b, 9000000, 0, 0, 2500);   /* off now: no trip */
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_CLOSED);
    ck_assert_uint_eq(cg_breaker_use(b, 0, 0, NULL, NULL), 0);
    cg_breaker_free(b);
    cg_config_free(cfg);
}
END_TEST

struct racer {
    struct cg_breaker *b;
    _Atomic int       *go;
    unsigned           admitted;
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    unsigned retry, i;

    while (!atomic_load(r->go))
        ;
    for (i = 0; i < 20000; i++)
        r->admitted += (unsigned)cg_breaker_admit(r->b, i % 2 ? 1000 : 999,
                                                  CG_BRKW_CONNECTIONS, 5, &retry);
    return NULL;
}

/* Threads racing across the trip point: one transition, counted and recorded once. */
START_TEST(test_one_transition_under_threads)
{
    struct cg_config *cfg = parse("[breaker]\nopen_for = 1h\n");
    struct cg_breaker *b = cg_breaker_new(cfg, 1024);
    struct racer r[4];
    pthread_t th[4];
    _Atomic int go = 0;
    struct cg_brk_event ev[4];
    int i;

    for (i = 0; i < 4; i++) {
        r[i] = (struct racer){ .b = b, .go = &go };
        ck_assert_int_eq(pthread_create(&th[i], NULL, racer_main, &r[i]), 0);
    }
    atomic_store(&go, 1);
    for (i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    ck_assert_int_eq(cg_breaker_state(b, NULL, NULL), CG_BRK_OPEN);
    ck_assert_uint_eq(atomic_load(&b->entered[CG_BRK_OPEN]), 1);
    ck_assert_uint_eq(cg_breaker_history(b, ev, 4), 1);
    ck_assert_uint_eq(ev[0].use, 1000);
    cg_breaker_free(b);
    cg_config_free(cfg);
}
END_TEST

/* ------------------------------------------------------------------ server breaker */

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* Consecutive failures eject; ejected, a server is not picked; after the cool-down one
 * connection probes it (only one); a failed probe ejects it again, a good one restores. */
START_TEST(test_server_ejection)
{
    struct cg_config *cfg = parse("[breaker]\neject_consecutive_failures = 3\n"
                                  "eject_cooldown = 100ms\n");
    struct cg_upstream *ups = cg_upstreams_new(cfg, 1);
    struct cg_server *s0 = &ups[0].servers[0], *srv;
    uint64_t t = now_ms();
    int probe, i;

    cg_server_report(s0, 0, t, "connection refused");
    cg_server_report(s0, 0, t, "connection refused");
    cg_server_report(s0, 1, t, NULL);                   /* a success resets the count */
    cg_server_report(s0, 0, t, "connection refused");
    cg_server_report(s0, 0, t, "connection refused");
    ck_assert_int_eq(atomic_load(&s0->brk), CG_SRV_IN);
    cg_server_report(s0, 0, t, "connection refused");
    ck_assert_int_eq(atomic_load(&s0->brk), CG_SRV_EJECTED);
    ck_assert_uint_eq(atomic_load(&s0->ejections), 1);
    ck_assert_int_eq(cg_server_is_eligible(s0), 0);
    for (i = 0; i < 30; i++) {
        srv = cg_upstream_pick(&ups[0], 0, 0);
        ck_assert_ptr_nonnull(srv);
        ck_assert_ptr_ne(srv, s0);
    }
    ck_assert_int_eq(cg_server_connect_begin(s0, t + 50, &probe), -EAGAIN);

    /* cool-down over: one probe, the others keep away */
    ck_assert_int_eq(cg_server_connect_begin(s0, t + 100, &probe), 0);
    ck_assert_int_eq(probe, 1);
    ck_assert_int_eq(atomic_load(&s0->brk), CG_SRV_PROBING);
    ck_assert_int_eq(cg_server_connect_begin(s0, t + 100, &probe), -EAGAIN);
    ck_assert_int_eq(cg_server_is_eligible(s0), 0);
    cg_server_connect_done(s0);
    cg_server_report(s0, 0, t + 101, "connection refused");
    ck_assert_int_eq(atomic_load(&s0->brk), CG_SRV_EJECTED);
    ck_assert_uint_eq(atomic_load(&s0->probes_failed), 1);
    ck_assert_uint_eq(atomic_load(&s0->eject_until_ms), t + 201);

    /* a cancelled probe is handed back, then a good one restores */
    ck_assert_int_eq(cg_server_connect_begin(s0, t + 201, &probe), 0);
    cg_server_connect_done(s0);
    cg_server_report(s0, -1, 0, NULL);
    ck_assert_int_eq(atomic_load(&s0->brk), CG_SRV_EJECTED);
    ck_assert_int_eq(cg_server_connect_begin(s0, t + 202, &probe), 0);
    ck_assert_int_eq(probe, 1);
    cg_server_connect_done(s0);
    cg_server_report(s0, 1, t + 203, NULL);
    ck_assert_int_eq(atomic_load(&s0->brk), CG_SRV_IN);
    ck_assert_uint_eq(atomic_load(&s0->restores), 1);
    ck_assert_int_eq(cg_server_is_eligible(s0), 1);
    ck_assert_uint_eq(atomic_load(&s0->pending), 0);
    cg_upstreams_free(ups, cfg->nupstreams);
    cg_config_free(cfg);
}
END_TEST

/* The error rate in a window ejects, once enough connects were made; an upstream's own
 * keys override [breaker]'s; pending connects have their quota. */
START_TEST(test_server_error_rate_and_pending)
{
    struct cg_config *cfg = parse("eject_error_rate = 50%\neject_min_connects = 10\n"
                                  "eject_consecutive_failures = 0\nmax_pending_connects_per_server = 2\n"
                                  "[breaker]\neject_window = 1s\neject_cooldown = 5s\n");
    struct cg_upstream *ups = cg_upstreams_new(cfg, 1);
    struct cg_server *s = &ups[0].servers[1];
    uint64_t t = 1000000;
    int probe, i;

    ck_assert_uint_eq(cfg->upstreams[0].brk.eject_error_rate, 50);
    ck_assert_uint_eq(cfg->upstreams[0].brk.eject_window_ms, 1000);    /* inherited */
    ck_assert_uint_eq(cfg->upstreams[0].brk.eject_cooldown_ms, 5000);
    ck_assert_uint_eq(cfg->brk.srv.eject_failures, 5);
    /* 4 failures of 8: not enough connects yet */
    for (i = 0; i < 8; i++)
        cg_server_report(s, i % 2, t, "reset");
    ck_assert_int_eq(atomic_load(&s->brk), CG_SRV_IN);
    /* a new window forgets them */
    for (i = 0; i < 9; i++)
        cg_server_report(s, i % 3 != 0, t + 1000, "reset");
    ck_assert_int_eq(atomic_load(&s->brk), CG_SRV_IN);
    cg_server_report(s, 0, t + 1001, "reset");          /* 4 of 10 */
    ck_assert_int_eq(atomic_load(&s->brk), CG_SRV_IN);
    cg_server_report(s, 0, t + 1002, "reset");          /* 5 of 11 */
    ck_assert_int_eq(atomic_load(&s->brk), CG_SRV_IN);
    cg_server_report(s, 0, t + 1003, "reset");          /* 6 of 12: 50% */
    ck_assert_int_eq(atomic_load(&s->brk), CG_SRV_EJECTED);

    s = &ups[0].servers[2];
    ck_assert_int_eq(cg_server_connect_begin(s, t, &probe), 0);
    ck_assert_int_eq(cg_server_connect_begin(s, t, &probe), 0);
    ck_assert_int_eq(cg_server_is_eligible(s), 0);
    ck_assert_int_eq(cg_server_connect_begin(s, t, &probe), -EBUSY);
    cg_server_connect_done(s);
    ck_assert_int_eq(cg_server_is_eligible(s), 1);
    cg_server_connect_done(s);
    cg_upstreams_free(ups, cfg->nupstreams);
    cg_config_free(cfg);
}
END_TEST

START_TEST(test_config_breaker)
{
    struct cg_config *cfg = parse("");
    struct cg_errors errs;

    ck_assert_uint_eq(cfg->brk.max_conns_per_worker, 0);
    ck_assert_int_eq(cfg->brk.memory_auto, 1);
    ck_assert_uint_eq(cfg->brk.fd_watermark, 0);
    ck_assert_uint_eq(cfg->brk.open_for_ms, 5000);
    ck_assert_uint_eq(cfg->brk.resume, 90);
    ck_assert_uint_eq(cfg->brk.half_open_rate, 50);
    ck_assert_uint_eq(cfg->brk.check_interval_ms, 250);
    ck_assert_uint_eq(cfg->brk.srv.eject_failures, 5);
    ck_assert_uint_eq(cfg->upstreams[0].brk.eject_failures, 5);
    ck_assert_uint_eq(cfg->upstreams[0].brk.eject_cooldown_ms, 10000);
    cg_config_free(cfg);

    cg_errors_init(&errs);
    ck_assert_int_eq(cg_config_parse_string("t.ini", "[breaker]\nresume = 100\n"
                                            "memory_watermark = lots\nfd_watermark = 101%\n"
                                            "memory_watermark = 4k\n"
                                            "[listener a]\nbind = 127.0.0.1:0\nupstream = u\n"
                                            "[upstream u]\nservers = 127.0.0.1:1\n"
                                            "eject_error_rate = half\n", &cfg, &errs),
                     -EINVAL);
    ck_assert_uint_eq(cg_errors_count(&errs), 5);
    ck_assert_str_eq(cg_errors_get(&errs, 0), "t.ini:2: [breaker] resume: \"100\" is out of "
                     "range (expected 1..99%)");
    ck_assert_str_eq(cg_errors_get(&errs, 1), "t.ini:3: [breaker] memory_watermark: \"lots\" "
                     "is not a size, auto or off (e.g. 4g)");
    ck_assert_str_eq(cg_errors_get(&errs, 2), "t.ini:4: [breaker] fd_watermark: \"101%\" is "
                     "out of range (expected 0..100%)");
    ck_assert_str_eq(cg_errors_get(&errs, 3), "t.ini:5: [breaker] memory_watermark: "
                     "duplicate key (first at line 3)");
    ck_assert_str_eq(cg_errors_get(&errs, 4), "t.ini:11: [upstream u] eject_error_rate: "
                     "\"half\" is not a percentage (expected 0..100, e.g. 90%)");
    cg_errors_deinit(&errs);
}
END_TEST

Suite *breaker_suite(void)
{
    Suite *s = suite_create("breaker");
    TCase *tc = tcase_create("breaker");

    tcase_set_timeout(tc, 30);
    tcase_add_test(tc, test_state_machine);
    tcase_add_test(tc, test_half_open_closes_on_admit);
    tcase_add_test(tc, test_modes);
    tcase_add_test(tc, test_memory_watermark);
    tcase_add_test(tc, test_sched_latency);
    tcase_add_test(tc, test_one_transition_under_threads);
    tcase_add_test(tc, test_server_ejection);
    tcase_add_test(tc, test_server_error_rate_and_pending);
    tcase_add_test(tc, test_config_breaker);
    suite_add_tcase(s, tc);
    return s;
}
