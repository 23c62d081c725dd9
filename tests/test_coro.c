/* tests/test_coro.c — the coroutine runtime: scheduling, waits, stacks, registers, FP state.
 *
 * Most tests run twice, once per stack model (Check loop tests: _i is the model).
 */
#include <check.h>
#include <fenv.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "coro/coro.h"

struct env {
    uv_loop_t          loop;
    struct coro_sched *s;
};

static void env_init(struct env *e, int model)
{
    struct coro_sched_opts o = { .stack_model = (enum coro_stack_model)model };

    ck_assert_int_eq(uv_loop_init(&e->loop), 0);
    e->s = coro_sched_new(&e->loop, &o);
    ck_assert_ptr_nonnull(e->s);
}

static void env_run(struct env *e)
{
    uv_run(&e->loop, UV_RUN_DEFAULT);
}

static void env_deinit(struct env *e)
{
    ck_assert_int_eq(coro_sched_free(e->s), 0);     /* no coroutine left alive */
    uv_run(&e->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&e->loop), 0);   /* every handle closed */
}

/* ------------------------------------------------------------------ basics */

static int order[64];
static int norder;

static void yielder(void *arg)
{
    int id = (int)(intptr_t)arg, i;

    for (i = 0; i < 3; i++) {
        order[norder++] = id * 10 + i;
        ck_assert_int_eq(coro_yield(), 0);
    }
}

START_TEST(test_spawn_and_yield_interleave)
{
    struct env e;
    struct coro *c1 = NULL, *c2 = NULL;
    uint64_t id1, id2;
    static const int want[] = { 10, 20, 11, 21, 12, 22 };
    int i;

    norder = 0;
    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, yielder, (void *)1, "a", &c1), 0);
    ck_assert_int_eq(coro_spawn(e.s, yielder, (void *)2, "b", &c2), 0);
    id1 = coro_id(c1);
    id2 = coro_id(c2);
    ck_assert_str_eq(coro_name(c2), "b");
    ck_assert_uint_eq(id2, id1 + 1);
    ck_assert_uint_eq(coro_sched_count(e.s), 2);
    env_run(&e);
    ck_assert_uint_eq(coro_sched_count(e.s), 0);
    ck_assert_int_eq(norder, 6);
    for (i = 0; i < 6; i++)
        ck_assert_int_eq(order[i], want[i]);
    env_deinit(&e);
}
END_TEST

static uint64_t slept_ms;
static int park_result;

static void sleeper(void *arg)
{
    uv_loop_t *loop = coro_sched_loop(coro_sched_current());
    uint64_t t0;

    uv_update_time(loop);
    t0 = uv_now(loop);
    ck_assert_int_eq(coro_sleep(50), 0);
    uv_update_time(loop);
    slept_ms = uv_now(loop) - t0;
    park_result = coro_park("test timeout", 20);
}

START_TEST(test_sleep_and_timeout)
{
    struct env e;

    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, sleeper, NULL, "sleeper", NULL), 0);
    env_run(&e);
    ck_assert_uint_ge(slept_ms, 50);
    ck_assert_uint_lt(slept_ms, 1000);
    ck_assert_int_eq(park_result, UV_ETIMEDOUT);
    env_deinit(&e);
}
END_TEST

struct waker {
    struct coro *target;
    int          result;
    uv_timer_t   timer;
};

static void parker(void *arg)
{
    struct waker *w = arg;

    w->target = coro_self();
    w->result = coro_park("waiting for the timer", 5000);
    w->target = NULL;
}

static void on_wake_timer(uv_timer_t *t)
{
    struct waker *w = t->data;

    coro_wake(w->target, 42);
    uv_close((uv_handle_t *)t, NULL);
}

START_TEST(test_wake_from_callback_passes_result)
{
    struct env e;
    struct waker w = { 0 };

    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, parker, &w, "parker", NULL), 0);
    uv_timer_init(&e.loop, &w.timer);
    w.timer.data = &w;
    uv_timer_start(&w.timer, on_wake_timer, 10, 0);
    env_run(&e);
    ck_assert_int_eq(w.result, 42);
    env_deinit(&e);
}
END_TEST

static int find_first(const struct coro_info *ci, void *ud)
{
    *(uint64_t *)ud = ci->id;
    return 1;
}

struct cancel_ctx {
    struct coro *target;
    int          res[3];
};

static void cancel_spawner(void *arg)
{
    struct cancel_ctx *c = arg;

    c->target = coro_self();
    c->res[0] = coro_park("cancellable", 5000);
    c->res[1] = coro_is_cancelled(coro_self());
    c->res[2] = coro_park("after cancel", 10);
}

static void cancel_other(void *arg)
{
    struct cancel_ctx *c = arg;

    coro_cancel(c->target);
}

START_TEST(test_cancel_interrupts_wait_once)
{
    struct env e;
    struct cancel_ctx c = { 0 };
    uint64_t first = 0;

    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, cancel_spawner, &c, "target", NULL), 0);
    ck_assert_int_eq(coro_spawn(e.s, cancel_other, &c, "canceller", NULL), 0);
    coro_sched_foreach(e.s, find_first, &first);
    ck_assert_uint_ne(first, 0);
    env_run(&e);
    ck_assert_int_eq(c.res[0], UV_ECANCELED);
    ck_assert_int_eq(c.res[1], 1);
    ck_assert_int_eq(c.res[2], UV_ETIMEDOUT);
    env_deinit(&e);
}
END_TEST

static void self_cancel(void *arg)
{
    int *res = arg;

    coro_cancel(coro_self());                  /* pending: the next wait sees it */
    res[0] = coro_sleep(1000);
    res[1] = coro_park_uninterruptible("unint", 10);
}

START_TEST(test_cancel_pending_before_park)
{
    struct env e;
    int res[2] = { 0, 0 };

    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, self_cancel, res, "self", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(res[0], UV_ECANCELED);
    ck_assert_int_eq(res[1], UV_ETIMEDOUT);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ introspection */

struct listing {
    int         n;
    const char *names[8];
    const char *reasons[8];
    int         states[8];
};

static int collect(const struct coro_info *ci, void *ud)
{
    struct listing *l = ud;

    l->names[l->n] = ci->name;
    l->reasons[l->n] = ci->park_reason;
    l->states[l->n] = ci->state;
    l->n++;
    return 0;
}

static void park_forever_ish(void *arg)
{
    coro_park("read client", 30);
}

START_TEST(test_foreach_lists_name_state_reason)
{
    struct env e;
    struct listing l = { 0 };

    env_init(&e, _i);
    ck_assert_int_eq(coro_spawn(e.s, park_forever_ish, NULL, "conn 127.0.0.1:1", NULL), 0);
    ck_assert_int_eq(coro_spawn(e.s, park_forever_ish, NULL, "conn 127.0.0.1:2", NULL), 0);
    coro_sched_run(e.s);
    coro_sched_foreach(e.s, collect, &l);
    ck_assert_int_eq(l.n, 2);
    ck_assert_str_eq(l.names[0], "conn 127.0.0.1:1");
    ck_assert_str_eq(l.names[1], "conn 127.0.0.1:2");
    ck_assert_int_eq(l.states[0], CORO_PARKED);
    ck_assert_str_eq(l.reasons[1], "read client");
    env_run(&e);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ registers and FP */

#if defined(__x86_64__)
int coro_test_regs(uint64_t seed, int (*yield)(void));

static int regs_bad;

static void regs_coro(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    int i;

    for (i = 0; i < 100; i++)
        regs_bad |= coro_test_regs(seed * 0x100000001ull + (uint64_t)i, coro_yield);
}

START_TEST(test_callee_saved_registers_survive)
{
    struct env e;
    int i;

    regs_bad = 0;
    env_init(&e, _i);
    for (i = 1; i <= 4; i++)
        ck_assert_int_eq(coro_spawn(e.s, regs_coro, (void *)(uintptr_t)(i * 7919), "regs",
                                    NULL), 0);
    env_run(&e);
    ck_assert_int_eq(regs_bad, 0);
    env_deinit(&e);
}
END_TEST

static unsigned read_mxcsr(void)
{
    unsigned v;

    __asm__ volatile("stmxcsr %0" : "=m"(v));
    return v;
}

static unsigned short read_fpucw(void)
{
    unsigned short v;

    __asm__ volatile("fnstcw %0" : "=m"(v));
    return v;
}
#endif

static int fp_bad;

static double divide(double a, double b)
{
    return a / b;
}

/* Called through a volatile pointer, the division cannot be moved across fesetround(). */
static double (*volatile divide_p)(double, double) = divide;

static void fp_coro(void *arg)
{
    int mode = (int)(intptr_t)arg, i;
    volatile double x = 1.0, x2 = 5.0, y = 3.0;
    double q1, q2, r1, r2;

    fesetround(mode);
    for (i = 0; i < 50; i++) {
        coro_yield();
        if (fegetround() != mode)
            fp_bad |= 1;
#if defined(__x86_64__)
        /* Both units carry the rounding mode: SSE in MXCSR bits 13-14, x87 in CW 10-11. */
        if (((read_mxcsr() >> 3) & 0xc00) != ((unsigned)read_fpucw() & 0xc00))
            fp_bad |= 2;
#endif
    }
    /* The arithmetic itself rounds as asked. */
    /* 1/3 rounds down to nearest and 5/3 up, so each directed mode changes one of them. */
    q1 = divide_p(x, y);
    r1 = divide_p(x2, y);
    fesetround(FE_TONEAREST);
    q2 = divide_p(x, y);
    r2 = divide_p(x2, y);
    if (mode != FE_TONEAREST && q1 == q2 && r1 == r2)
        fp_bad |= 4;
    fesetround(mode);
}

START_TEST(test_fp_control_state_survives)
{
    struct env e;
    static const int modes[] = { FE_TOWARDZERO, FE_UPWARD, FE_DOWNWARD, FE_TONEAREST };
    int i;

    fp_bad = 0;
    env_init(&e, _i);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(coro_spawn(e.s, fp_coro, (void *)(intptr_t)modes[i], "fp", NULL), 0);
    env_run(&e);
    ck_assert_int_eq(fp_bad, 0);
    ck_assert_int_eq(fegetround(), FE_TONEAREST);   /* the scheduler's own state */
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ stacks */

static int deep_bad;

static void deep_user(void *arg)
{
    unsigned char pattern = (unsigned char)(uintptr_t)arg;
    volatile unsigned char big[96 * 1024];
    size_t i;
    int round;

    for (round = 0; round < 5; round++) {
        for (i = 0; i < sizeof(big); i++)
            big[i] = (unsigned char)(pattern + i + round);
        coro_yield();   /* the others overwrite the shared stack meanwhile */
        for (i = 0; i < sizeof(big); i++)
            if (big[i] != (unsigned char)(pattern + i + round))
                deep_bad++;
    }
}

START_TEST(test_deep_stacks_are_preserved)
{
    struct env e;
    int i;

    deep_bad = 0;
    env_init(&e, _i);
    for (i = 0; i < 3; i++)
        ck_assert_int_eq(coro_spawn(e.s, deep_user, (void *)(uintptr_t)(i * 50), "deep",
                                    NULL), 0);
    env_run(&e);
    ck_assert_int_eq(deep_bad, 0);
    env_deinit(&e);
}
END_TEST

static unsigned many_done;

static void many_parker(void *arg)
{
    volatile char frame[200];

    memset((char *)frame, (int)(uintptr_t)arg, sizeof(frame));
    coro_park("many", 10);
    if (frame[0] == (char)(uintptr_t)arg && frame[199] == (char)(uintptr_t)arg)
        many_done++;
}

START_TEST(test_ten_thousand_parked)
{
    struct env e;
    unsigned i;

    many_done = 0;
    env_init(&e, _i);
    for (i = 0; i < 10000; i++)
        ck_assert_int_eq(coro_spawn(e.s, many_parker, (void *)(uintptr_t)(i & 0x7f), "many",
                                    NULL), 0);
    coro_sched_run(e.s);
    ck_assert_uint_eq(coro_sched_count(e.s), 10000);
    env_run(&e);
    ck_assert_uint_eq(many_done, 10000);
    env_deinit(&e);
}
END_TEST

static volatile int recurse_limit = 1 << 30;   /* volatile: the compiler cannot see it end */

static int recurse(int depth)
{
    volatile char pad[512];

    pad[0] = (char)depth;
    if (depth >= recurse_limit)
        return 0;
    return recurse(depth + 1) + pad[0];
}

static void overflower(void *arg)
{
    recurse(0);
}

START_TEST(test_stack_overflow_is_reported_by_name)
{
    int fds[2], status;
    char out[512] = "";
    ssize_t n, got = 0;
    pid_t pid;

    ck_assert_int_eq(pipe(fds), 0);
    pid = fork();
    ck_assert_int_ge(pid, 0);         /* one thread: no check lock held at the fork */
    if (pid == 0) {
        struct env e;

        dup2(fds[1], STDERR_FILENO);
        close(fds[0]);
        env_init(&e, _i);
        coro_spawn(e.s, overflower, NULL, "runaway-recursion", NULL);
        env_run(&e);
        _exit(0);   /* not reached: the overflow aborts */
    }
    close(fds[1]);
    while ((n = read(fds[0], out + got, sizeof(out) - 1 - (size_t)got)) > 0)
        got += n;
    close(fds[0]);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFSIGNALED(status));
    ck_assert_int_eq(WTERMSIG(status), SIGABRT);
    ck_assert_msg(strstr(out, "stack overflow in coroutine 'runaway-recursion'") != NULL,
                  "stderr was: %s", out);
}
END_TEST

/* ------------------------------------------------------------------ events and channels */

struct ev_ctx {
    struct coro_event ev;
    int               woke;
    int               timeouts;
};

static void ev_waiter(void *arg)
{
    struct ev_ctx *c = arg;
    int err = coro_event_wait(&c->ev, "event", 200);

    if (err == 0)
        c->woke++;
    else if (err == UV_ETIMEDOUT)
        c->timeouts++;
}

static void ev_signaller(void *arg)
{
    struct ev_ctx *c = arg;

    ck_assert_uint_eq(coro_event_waiters(&c->ev), 3);
    coro_event_signal(&c->ev);      /* one */
    coro_yield();
    coro_event_broadcast(&c->ev);   /* the other two... */
    coro_yield();
    coro_event_signal(&c->ev);      /* ...and a signal nobody waits for is remembered */
}

START_TEST(test_event_signal_broadcast_timeout)
{
    struct env e;
    struct ev_ctx c = { .woke = 0 };
    int i;

    env_init(&e, _i);
    coro_event_init(&c.ev);
    for (i = 0; i < 3; i++)
        coro_spawn(e.s, ev_waiter, &c, "waiter", NULL);
    coro_spawn(e.s, ev_signaller, &c, "signaller", NULL);
    env_run(&e);
    ck_assert_int_eq(c.woke, 3);
    ck_assert_uint_eq(c.ev.signals, 1);
    coro_spawn(e.s, ev_waiter, &c, "late", NULL);   /* consumes the remembered one */
    coro_spawn(e.s, ev_waiter, &c, "timeout", NULL);
    env_run(&e);
    ck_assert_int_eq(c.woke, 4);
    ck_assert_int_eq(c.timeouts, 1);
    env_deinit(&e);
}
END_TEST

struct chan_ctx {
    struct coro_chan *ch;
    long              sum;
    int               recv_end;
    int               send_after_close;
};

static void producer(void *arg)
{
    struct chan_ctx *c = arg;
    intptr_t i;

    for (i = 1; i <= 1000; i++)
        ck_assert_int_eq(coro_chan_send(c->ch, (void *)i, 1000), 0);
    coro_chan_close(c->ch);
    c->send_after_close = coro_chan_send(c->ch, (void *)1, 10);
}

static void consumer(void *arg)
{
    struct chan_ctx *c = arg;
    void *v;
    int err;

    while ((err = coro_chan_recv(c->ch, &v, 1000)) == 0)
        c->sum += (intptr_t)v;
    c->recv_end = err;
}

START_TEST(test_channel_bounded_fifo)
{
    struct env e;
    struct chan_ctx c = { 0 };

    env_init(&e, _i);
    c.ch = coro_chan_new(4);
    ck_assert_ptr_nonnull(c.ch);
    coro_spawn(e.s, consumer, &c, "consumer", NULL);
    coro_spawn(e.s, producer, &c, "producer", NULL);
    env_run(&e);
    ck_assert_int_eq(c.sum, 1000 * 1001 / 2);
    ck_assert_int_eq(c.recv_end, UV_EOF);
    ck_assert_int_eq(c.send_after_close, UV_EPIPE);
    coro_chan_free(c.ch);
    env_deinit(&e);
}
END_TEST

/* ------------------------------------------------------------------ USDT */

START_TEST(test_usdt_probes_present)
{
    char cmd[256], line[256];
    int found = 0;
    FILE *p;

    snprintf(cmd, sizeof(cmd), "readelf -n /proc/%d/exe 2>/dev/null", (int)getpid());
    p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    while (fgets(line, sizeof(line), p)) {
        if (strstr(line, "Name: spawn") || strstr(line, "Name: park") ||
            strstr(line, "Name: resume") || strstr(line, "Name: exit"))
            found++;
    }
    pclose(p);
    ck_assert_int_ge(found, 4);
}
END_TEST

Suite *coro_suite(void)
{
    Suite *s = suite_create("coro");
    TCase *tc = tcase_create("sched");
    TCase *st = tcase_create("stacks");

    tcase_set_timeout(tc, 20);
    tcase_add_loop_test(tc, test_spawn_and_yield_interleave, 0, 2);
    tcase_add_loop_test(tc, test_sleep_and_timeout, 0, 2);
    tcase_add_loop_test(tc, test_wake_from_callback_passes_result, 0, 2);
    tcase_add_loop_test(tc, test_cancel_interrupts_wait_once, 0, 2);
    tcase_add_loop_test(tc, test_cancel_pending_before_park, 0, 2);
    tcase_add_loop_test(tc, test_foreach_lists_name_state_reason, 0, 2);
    tcase_add_loop_test(tc, test_event_signal_broadcast_timeout, 0, 2);
    tcase_add_loop_test(tc, test_channel_bounded_fifo, 0, 2);
    tcase_add_test(tc, test_usdt_probes_present);
    suite_add_tcase(s, tc);

    tcase_set_timeout(st, 60);
#if defined(__x86_64__)
    tcase_add_loop_test(st, test_callee_saved_registers_survive, 0, 2);
#endif
    tcase_add_loop_test(st, test_fp_control_state_survives, 0, 2);
    tcase_add_loop_test(st, test_deep_stacks_are_preserved, 0, 2);
    tcase_add_loop_test(st, test_ten_thousand_parked, 0, 2);
    tcase_add_loop_test(st, test_stack_overflow_is_reported_by_name, 0, 2);
    suite_add_tcase(s, st);
    return s;
}
