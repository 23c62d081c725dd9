/* bench/bench_coro.c — coroutine runtime micro-benchmarks: one JSON object per line.
 *
 *   switch   ns per one-way switch. coro_ns is half a coro_yield() (out to the scheduler
 *            and back, with its ready-queue work, driven by coro_sched_run() from main);
 *            coro_switch_ns is the raw coro__switch() primitive, which is what the ratios
 *            compare with glibc swapcontext() and Boost.Context's jump_fcontext(): all
 *            three are ping-pongs between two contexts
 *   spawn    ns to spawn a trivial coroutine and run it to exit, pooled, per stack model
 *   parked   memory per coroutine parked forever after touching a shallow stack
 *   summary  pass/fail for each target
 *
 * Timings are the best of RUNS runs of clock_gettime(CLOCK_MONOTONIC). This is a benchmark,
 * not a test: it exits non-zero only when something could not be set up or a coroutine saw
 * its stack come back wrong, never because a target was missed.
 */
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>
#include <uv.h>

#include "coro/coro.h"
#include "coro/coro-int.h"   /* sizeof(struct coro), to explain the parked figure */
#include "coro/ctx.h"        /* the raw switch primitive */

#define RUNS            5
#define SWITCH_ITERS    10000000L  /* round trips (two one-way switches each) */
#define YIELD_ITERS     5000000L
#define UCTX_ITERS      200000L
#define SPAWN_BATCH     1000u
#define SPAWN_BATCHES   1000u
#define RAW_STACK       (64u * 1024)
#define DEDICATED_PARK  10000u

/* Boost.Context's C ABI (libboost_context, fcontext.hpp); <sp> is the top of the stack. */
typedef void *fcontext_t;
typedef struct {
    fcontext_t fctx;
    void      *data;
} transfer_t;
transfer_t jump_fcontext(fcontext_t const to, void *vp);
fcontext_t make_fcontext(void *sp, size_t size, void (*fn)(transfer_t));

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "bench-coro: %s: %s\n", what, strerror(err < 0 ? -err : err));
    exit(1);
}

static char *stack_new(size_t size)
{
    char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);

    if (p == MAP_FAILED)
        die("mmap() of a stack", errno);
    return p;
}

/* ------------------------------------------------------------------ raw switches */

static struct coro_ctx raw_main, raw_co;

static void raw_entry(void)
{
    for (;;)
        coro__switch(&raw_co, &raw_main, 0);
}

/* ns per one-way coro__switch(); the context left behind is abandoned, never resumed. */
static double raw_coro_once(char *stack, size_t size, long iters)
{
    uint64_t t0;
    long i;

    coro__ctx_make(&raw_co, stack, stack + size, raw_entry);
    *(void **)coro__ctx_sp(&raw_co) = NULL;   /* the entry's return address: none */
    coro__switch(&raw_main, &raw_co, 0);      /* first entry out of the timing */
    t0 = now_ns();
    for (i = 0; i < iters; i++)
        coro__switch(&raw_main, &raw_co, 0);
    return (double)(now_ns() - t0) / (2.0 * (double)iters);
}

static ucontext_t uc_main, uc_co;

static void uc_entry(void)
{
    for (;;)
        swapcontext(&uc_co, &uc_main);
}

static double uctx_once(char *stack, size_t size, long iters)
{
    uint64_t t0;
    long i;

    if (getcontext(&uc_co) < 0)
        die("getcontext()", errno);
    uc_co.uc_stack.ss_sp = stack;
    uc_co.uc_stack.ss_size = size;
    uc_co.uc_link = NULL;
    makecontext(&uc_co, uc_entry, 0);
    swapcontext(&uc_main, &uc_co);
    t0 = now_ns();
    for (i = 0; i < iters; i++)
        swapcontext(&uc_main, &uc_co);
    return (double)(now_ns() - t0) / (2.0 * (double)iters);
}

static void fc_entry(transfer_t t)
{
    for (;;)
        t = jump_fcontext(t.fctx, NULL);
}

static double fcontext_once(char *stack, size_t size, long iters)
{
    fcontext_t fc = make_fcontext(stack + size, size, fc_entry);
    uint64_t t0;
    long i;

    fc = jump_fcontext(fc, NULL).fctx;
    t0 = now_ns();
    for (i = 0; i < iters; i++)
        fc = jump_fcontext(fc, NULL).fctx;
    return (double)(now_ns() - t0) / (2.0 * (double)iters);
}

/* ------------------------------------------------------------------ yield */

static long yields_left;

static void yielder(void *arg)
{
    (void)arg;
    while (yields_left-- > 0)
        coro_yield();
}

/* ns per coro_yield() (out to the scheduler and back), driven by coro_sched_run(). */
static double yield_once(struct coro_sched *s, long iters)
{
    uint64_t t0;
    long resumes = 0;
    int err;

    yields_left = iters;
    err = coro_spawn(s, yielder, NULL, "yield", NULL);
    if (err < 0)
        die("coro_spawn()", err);
    coro_sched_run(s);                /* starts it, up to its first yield */
    t0 = now_ns();
    while (coro_sched_count(s) > 0)
        resumes += coro_sched_run(s);
    return (double)(now_ns() - t0) / (double)resumes;
}

/* ------------------------------------------------------------------ spawn */

static void trivial(void *arg)
{
    (void)arg;
}

static uv_loop_t loop;

static struct coro_sched *sched_open(enum coro_stack_model model, unsigned keep)
{
    struct coro_sched_opts o = { .stack_model = model, .stack_keep = keep };
    struct coro_sched *s;
    int err;

    err = uv_loop_init(&loop);
    if (err < 0)
        die("uv_loop_init()", err);
    s = coro_sched_new(&loop, &o);
    if (!s)
        die("coro_sched_new()", errno);
    return s;
}

static void sched_close(struct coro_sched *s)
{
    int leaked = coro_sched_free(s);

    if (leaked)
        fprintf(stderr, "bench-coro: %d coroutines still alive at coro_sched_free()\n", leaked);
    uv_run(&loop, UV_RUN_DEFAULT);    /* the scheduler's close callbacks */
    if (uv_loop_close(&loop) < 0)
        fprintf(stderr, "bench-coro: uv_loop_close(): handles left open\n");
}

static void spawn_batches(struct coro_sched *s, unsigned batches)
{
    unsigned b, i;
    int err;

    for (b = 0; b < batches; b++) {
        for (i = 0; i < SPAWN_BATCH; i++) {
            err = coro_spawn(s, trivial, NULL, "trivial", NULL);
            if (err < 0)
                die("coro_spawn()", err);
        }
        coro_sched_run(s);
    }
}

static double bench_spawn(enum coro_stack_model model)
{
    struct coro_sched *s = sched_open(model, SPAWN_BATCH);   /* a batch fits the pool */
    double best = 1e30;
    int r;

    spawn_batches(s, 2);              /* fills the pool: coroutines and stacks */
    for (r = 0; r < RUNS; r++) {
        uint64_t t0 = now_ns();
        double ns;

        spawn_batches(s, SPAWN_BATCHES);
        ns = (double)(now_ns() - t0) / ((double)SPAWN_BATCHES * SPAWN_BATCH);
        if (ns < best)
            best = ns;
    }
    sched_close(s);
    return best;
}

/* ------------------------------------------------------------------ parked */

static struct coro **parked;
static size_t nparked;
static unsigned long stack_bad;

/* A connection handler a few calls deep: a parsed request line on the stack (a 200-byte
 * frame, 176 bytes written), written before the coroutine parks and checked after it
 * resumes, so the shared stack's copy is verified too. With the runtime's own frames the
 * parked stack is ~300 bytes (saved_stack_bytes_avg says exactly). */
struct fake_req {
    char     line[104];
    uint32_t hdr_off[16];
    uint32_t seed;
    uint32_t nhdr;
};

static __attribute__((noinline)) void req_fill(struct fake_req *r, uint32_t seed)
{
    size_t i;

    for (i = 0; i < sizeof(r->line); i++)
        r->line[i] = (char)(seed + i);
    for (i = 0; i < 16; i++)
        r->hdr_off[i] = seed * 16 + (uint32_t)i;
    r->seed = seed;
    r->nhdr = 16;
}

static __attribute__((noinline)) int req_check(const struct fake_req *r, uint32_t seed)
{
    size_t i;

    for (i = 0; i < sizeof(r->line); i++)
        if (r->line[i] != (char)(seed + i))
            return 0;
    for (i = 0; i < 16; i++)
        if (r->hdr_off[i] != seed * 16 + (uint32_t)i)
            return 0;
    return r->seed == seed && r->nhdr == 16;
}

static __attribute__((noinline)) int conn_wait(void)
{
    parked[nparked++] = coro_self();
    return coro_park("bench", CORO_FOREVER);
}

static __attribute__((noinline)) int conn_request(uint32_t seed)
{
    struct fake_req r;
    int err;

    req_fill(&r, seed);
    err = conn_wait();
    if (!req_check(&r, seed))
        return -EFAULT;
    return err;
}

static void conn_main(void *arg)
{
    if (conn_request((uint32_t)(uintptr_t)arg) != 0)
        stack_bad++;
}

static size_t rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");

    if (!f)
        die("fopen(/proc/self/statm)", errno);
    if (fscanf(f, "%lu %lu", &size, &resident) != 2)
        die("reading /proc/self/statm", EINVAL);
    fclose(f);
    return resident * (size_t)sysconf(_SC_PAGESIZE);
}

static unsigned long count_lines(const char *path)
{
    unsigned long n = 0;
    FILE *f = fopen(path, "r");
    int c;

    if (!f)
        die(path, errno);
    while ((c = getc_unlocked(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static unsigned long read_ulong(const char *path)
{
    unsigned long v = 0;
    FILE *f = fopen(path, "r");

    if (!f)
        die(path, errno);
    if (fscanf(f, "%lu", &v) != 1)
        die(path, EINVAL);
    fclose(f);
    return v;
}

struct saved_sum {
    uint64_t bytes;
    uint64_t parked;
};

static int on_info(const struct coro_info *ci, void *ud)
{
    struct saved_sum *sum = ud;

    if (ci->state == CORO_PARKED) {
        sum->bytes += ci->stack_saved;
        sum->parked++;
    }
    return 0;
}

struct parked_result {
    double        rss_per_coro;
    double        saved_avg;
    unsigned long vmas;
};

static struct parked_result bench_parked(enum coro_stack_model model, size_t n)
{
    struct parked_result res = { 0 };
    struct saved_sum sum = { 0 };
    struct coro_sched *s;
    size_t i, rss0;
    int err;

    parked = malloc(n * sizeof(*parked));
    if (!parked)
        die("malloc() of the parked array", ENOMEM);
    memset(parked, 0, n * sizeof(*parked));   /* faulted in now: not part of the figure */
    nparked = 0;
    s = sched_open(model, 0);
    malloc_trim(0);                           /* what earlier runs freed leaves the RSS */
    rss0 = rss_bytes();

    for (i = 0; i < n; i++) {
        err = coro_spawn(s, conn_main, (void *)(uintptr_t)i, "conn", NULL);
        if (err < 0)
            die("coro_spawn()", err);
    }
    coro_sched_run(s);
    if (nparked != n || coro_sched_count(s) != n) {
        fprintf(stderr, "bench-coro: %zu of %zu coroutines parked\n", nparked, n);
        exit(1);
    }
    res.rss_per_coro = (double)(rss_bytes() - rss0) / (double)n;
    res.vmas = count_lines("/proc/self/maps");
    coro_sched_foreach(s, on_info, &sum);
    res.saved_avg = sum.parked ? (double)sum.bytes / (double)sum.parked : 0;

    for (i = 0; i < nparked; i++)
        coro_wake(parked[i], 0);
    coro_sched_run(s);
    if (coro_sched_count(s) != 0 || stack_bad) {
        fprintf(stderr, "bench-coro: %u coroutines left, %lu saw their stack corrupted\n",
                coro_sched_count(s), stack_bad);
        exit(1);
    }
    sched_close(s);
    free(parked);
    parked = NULL;
    malloc_trim(0);
    return res;
}

/* ------------------------------------------------------------------ main */

static const char *model_name(enum coro_stack_model m)
{
    return m == CORO_STACK_SHARED ? "shared" : "dedicated";
}

static const char *yes(int b)
{
    return b ? "true" : "false";
}

int main(void)
{
    enum coro_stack_model models[2] = { CORO_STACK_SHARED, CORO_STACK_DEDICATED };
    double raw = 1e30, yield = 1e30, uctx = 1e30, fctx = 1e30, spawn[2];
    static const size_t shared_n[2] = { 100000, 1000000 };
    struct parked_result shared[2], dedicated;
    unsigned long max_map, base_vmas, need;
    struct coro_sched *s;
    char *st_raw, *st_uc, *st_fc;
    int r, i, ok_boost, ok_uctx, ok_spawn[2], ok_parked;

    setvbuf(stdout, NULL, _IOLBF, 0);
    st_raw = stack_new(RAW_STACK);
    st_uc = stack_new(RAW_STACK);
    st_fc = stack_new(RAW_STACK);
    s = sched_open(CORO_STACK_SHARED, 0);
    /* Interleaved, so that a noisy moment on the machine hits every contender alike. */
    for (r = 0; r < RUNS; r++) {
        double v;

        if ((v = raw_coro_once(st_raw, RAW_STACK, SWITCH_ITERS)) < raw)
            raw = v;
        if ((v = fcontext_once(st_fc, RAW_STACK, SWITCH_ITERS)) < fctx)
            fctx = v;
        if ((v = uctx_once(st_uc, RAW_STACK, UCTX_ITERS)) < uctx)
            uctx = v;
        if ((v = yield_once(s, YIELD_ITERS)) < yield)
            yield = v;
    }
    sched_close(s);
    munmap(st_raw, RAW_STACK);
    munmap(st_uc, RAW_STACK);
    munmap(st_fc, RAW_STACK);
    ok_boost = raw <= 1.1 * fctx;
    ok_uctx = uctx >= 30.0 * raw;
    printf("{\"name\":\"switch\", \"coro_ns\":%.2f, \"coro_yield_ns\":%.2f, "
           "\"coro_switch_ns\":%.2f, \"swapcontext_ns\":%.2f, \"boost_fcontext_ns\":%.2f, "
           "\"ratio_swapcontext_over_coro\":%.1f, \"ratio_coro_over_boost\":%.2f, "
           "\"ratio_basis\":\"coro_switch_ns\", \"ratio_coro_yield_half_over_boost\":%.2f, "
           "\"switch_impl\":\"%s\", \"model\":\"shared\"}\n",
           yield / 2, yield, raw, uctx, fctx, uctx / raw, raw / fctx, yield / 2 / fctx,
           CORO_SWITCH_NAME);

    for (i = 0; i < 2; i++) {
        spawn[i] = bench_spawn(models[i]);
        ok_spawn[i] = spawn[i] < 60.0;
        printf("{\"name\":\"spawn\", \"ns_per_spawn_run_exit\":%.2f, \"batch\":%u, "
               "\"model\":\"%s\"}\n", spawn[i], SPAWN_BATCH, model_name(models[i]));
    }

    max_map = read_ulong("/proc/sys/vm/max_map_count");
    for (i = 0; i < 2; i++) {
        shared[i] = bench_parked(CORO_STACK_SHARED, shared_n[i]);
        printf("{\"name\":\"parked\", \"coroutines\":%zu, \"rss_bytes_per_coro\":%.1f, "
               "\"saved_stack_bytes_avg\":%.1f, \"struct_coro_bytes\":%zu, "
               "\"vma_count\":%lu, \"max_map_count\":%lu, \"model\":\"shared\"}\n",
               shared_n[i], shared[i].rss_per_coro, shared[i].saved_avg,
               sizeof(struct coro), shared[i].vmas, max_map);
    }
    ok_parked = shared[1].rss_per_coro < 600.0 && shared[1].vmas < max_map;

    base_vmas = count_lines("/proc/self/maps");
    dedicated = bench_parked(CORO_STACK_DEDICATED, DEDICATED_PARK);
    printf("{\"name\":\"parked\", \"coroutines\":%u, \"rss_bytes_per_coro\":%.1f, "
           "\"saved_stack_bytes_avg\":%.1f, \"vma_count\":%lu, \"max_map_count\":%lu, "
           "\"model\":\"dedicated\"}\n",
           DEDICATED_PARK, dedicated.rss_per_coro, dedicated.saved_avg, dedicated.vmas,
           max_map);
    need = base_vmas + 2 * 1000000ul;
    printf("{\"name\":\"parked\", \"coroutines\":1000000, \"model\":\"dedicated\", "
           "\"skipped\":true, \"vma_needed\":%lu, \"max_map_count\":%lu, "
           "\"max_coroutines\":%lu, \"why\":\"2 VMAs per coroutine (guard + stack)\"}\n",
           need, max_map, max_map > base_vmas ? (max_map - base_vmas) / 2 : 0);

    printf("{\"name\":\"summary\", \"switch_le_1.1x_boost\":%s, "
           "\"switch_ge_30x_faster_than_swapcontext\":%s, "
           "\"yield_half_le_1.1x_boost\":%s, \"spawn_shared_lt_60ns\":%s, "
           "\"spawn_dedicated_lt_60ns\":%s, \"parked_shared_1e6_lt_600B\":%s, "
           "\"parked_shared_1e6_within_max_map_count\":%s, \"all\":%s}\n",
           yes(ok_boost), yes(ok_uctx), yes(yield / 2 <= 1.1 * fctx), yes(ok_spawn[0]),
           yes(ok_spawn[1]), yes(shared[1].rss_per_coro < 600.0),
           yes(shared[1].vmas < max_map),
           yes(ok_boost && ok_uctx && ok_spawn[0] && ok_spawn[1] && ok_parked));
    return 0;
}
