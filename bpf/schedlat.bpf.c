// SPDX-License-Identifier: GPL-2.0
/* bpf/schedlat.bpf.c — scheduler latency of corogate's own worker threads.
 *
 * For each worker thread (a TID -> worker index map filled by the loader before attach):
 *   - run-queue latency: from wake-up, or from being preempted while still runnable, to
 *     running again (log2 histogram, count, sum, max);
 *   - off-CPU time and switch counts, split voluntary (blocked) / involuntary (preempted);
 *   - wake-ups and CPU migrations.
 * Every other task costs one tgid compare (the process filter) per event.
 *
 * One object, three attach variants; the loader turns off the autoload of the two it does
 * not use, so only one set is verified and attached:
 *   tp_btf   BTF tracepoints sched_wakeup, sched_wakeup_new, sched_switch,
 *            sched_migrate_task: typed arguments, the cheapest (what runqlat uses);
 *   raw_tp   the same tracepoints through raw tracepoints, for kernels without BTF
 *            tracepoint support;
 *   kprobe   try_to_wake_up, wake_up_new_task, finish_task_switch (whatever its name is on
 *            the running kernel, e.g. finish_task_switch.isra.0) and set_task_cpu, attached
 *            by name from user space. finish_task_switch runs in the next task's context
 *            and has no preempt flag: a switch counts as involuntary when prev is still
 *            TASK_RUNNING, which a concurrent wake-up of prev can blur.
 *
 * Ordering per worker (all its updates are serialised: a task is switched in and out on
 * one CPU at a time, and set_task_cpu() runs under its pi_lock):
 *   switch out  voluntary: off_ns = now, ready_ns = 0      involuntary: off_ns = ready_ns = now
 *   wake-up     ready_ns = now
 *   switch in   runq += now - ready_ns (when set); off-CPU += now - off_ns (when set)
 * Counters shared with other CPUs (wake-ups come from the waker's CPU) use atomic adds.
 */
#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "schedlat.h"

_Static_assert((SCHEDLAT_SLOTS & (SCHEDLAT_SLOTS - 1)) == 0, "a power of two");

#define TASK_RUNNING 0

#ifndef barrier_var
#define barrier_var(var) asm volatile("" : "+r"(var))
#endif

/* Set by the loader between open and load. */
const volatile __u32 targ_tgid = 0;

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, SCHEDLAT_MAX_WORKERS);
    __type(key, __u32);                 /* TID */
    __type(value, __u32);               /* worker index */
} workers_by_tid SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);             /* resized to the worker count before load */
    __type(key, __u32);
    __type(value, struct schedlat_worker);
} stats SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);             /* resized to the worker count before load */
    __type(key, __u32);
    __type(value, struct schedlat_task);
} tstate SEC(".maps");

/* Kernel differences, resolved by CO-RE at load time. */
struct task_struct___new {              /* 5.14+: state became __state (unsigned int) */
    unsigned int __state;
} __attribute__((preserve_access_index));

struct task_struct___old {
    long state;
} __attribute__((preserve_access_index));

struct thread_info___cpu {              /* THREAD_INFO_IN_TASK, 5.16+ */
    unsigned int cpu;
} __attribute__((preserve_access_index));

struct task_struct___ti {
    struct thread_info___cpu thread_info;
} __attribute__((preserve_access_index));

struct task_struct___cpu {              /* before 5.16 */
    unsigned int cpu;
} __attribute__((preserve_access_index));

/* Reads <p>->field: a plain load where <p> is a BTF pointer the verifier trusts (<btf>, a
 * tp_btf program: the cheapest), bpf_probe_read_kernel() otherwise. <btf> is a constant in
 * every inlined copy, so the other branch is compiled out. */
#define TASK_READ(btf, p, field) ((btf) ? (p)->field : BPF_CORE_READ(p, field))

static __always_inline long task_state(struct task_struct *p, const int btf)
{
    struct task_struct___new *n = (void *)p;
    struct task_struct___old *o = (void *)p;

    if (bpf_core_field_exists(n->__state))
        return TASK_READ(btf, n, __state);
    return TASK_READ(btf, o, state);
}

static __always_inline __u32 task_cpu(struct task_struct *p, const int btf)
{
    struct task_struct___ti *t = (void *)p;
    struct task_struct___cpu *c = (void *)p;

    if (bpf_core_field_exists(t->thread_info.cpu))
        return TASK_READ(btf, t, thread_info.cpu);
    return TASK_READ(btf, c, cpu);
}

/* The process filter, then the worker map. Returns 1 and the worker's index in *<idx>
 * when <p> is one of our worker threads. */
static __always_inline int worker_of(struct task_struct *p, __u32 *idx, const int btf)
{
    __u32 tid, *w;

    if (!p || (__u32)TASK_READ(btf, p, tgid) != targ_tgid)
        return 0;
    tid = TASK_READ(btf, p, pid);
    w = bpf_map_lookup_elem(&workers_by_tid, &tid);
    if (!w)
        return 0;
    *idx = *w;
    return 1;
}

static __always_inline __u32 log2_u64(__u64 v)
{
    __u32 r = 0, shift;

    shift = (v > 0xffffffffULL) << 5; v >>= shift; r |= shift;
    shift = (v > 0xffff) << 4;        v >>= shift; r |= shift;
    shift = (v > 0xff) << 3;          v >>= shift; r |= shift;
    shift = (v > 0xf) << 2;           v >>= shift; r |= shift;
    shift = (v > 0x3) << 1;           v >>= shift; r |= shift;
    r |= (v >> 1);
    return r;
}

static __always_inline int on_wakeup(struct task_struct *p, const int btf)
{
    struct schedlat_worker *w;
    struct schedlat_task *t;
    __u32 idx;

    if (!worker_of(p, &idx, btf))
        return 0;
    t = bpf_map_lookup_elem(&tstate, &idx);
    w = bpf_map_lookup_elem(&stats, &idx);
    if (!t || !w)
        return 0;
    t->ready_ns = bpf_ktime_get_ns();
    __sync_fetch_and_add(&w->wakeups, 1);
    return 0;
}

/* <prev> leaves the CPU for <next>; <preempt> is the tracepoint's flag (0 when unknown). */
static __always_inline int on_switch(int preempt, struct task_struct *prev,
                                     struct task_struct *next, const int btf)
{
    struct schedlat_worker *w;
    struct schedlat_task *t;
    __u64 now = 0, delta;
    __u32 idx, slot, invol;

    if (worker_of(prev, &idx, btf)) {
        t = bpf_map_lookup_elem(&tstate, &idx);
        w = bpf_map_lookup_elem(&stats, &idx);
        if (t && w) {
            now = bpf_ktime_get_ns();
            /* Preempted, or left the CPU while still runnable (sched_yield, a signal
             * that cancelled the sleep): it waits in the run queue from now on. */
            invol = preempt || task_state(prev, btf) == TASK_RUNNING;
            t->off_ns = now;
            t->off_invol = invol;
            t->ready_ns = invol ? now : 0;
            if (invol)
                __sync_fetch_and_add(&w->ninvol, 1);
            else
                __sync_fetch_and_add(&w->nvol, 1);
        }
    }
    if (!worker_of(next, &idx, btf))
        return 0;
    t = bpf_map_lookup_elem(&tstate, &idx);
    w = bpf_map_lookup_elem(&stats, &idx);
    if (!t || !w)
        return 0;
    if (!now)
        now = bpf_ktime_get_ns();
    if (t->ready_ns && now > t->ready_ns) {
        delta = now - t->ready_ns;
        slot = log2_u64(delta / 1000);
        if (slot >= SCHEDLAT_SLOTS)
            slot = SCHEDLAT_SLOTS - 1;
        /* The verifier may not see the clamp above in the register used as index. */
        barrier_var(slot);
        slot &= SCHEDLAT_SLOTS - 1;
        __sync_fetch_and_add(&w->runq_slots[slot], 1);
        __sync_fetch_and_add(&w->runq_count, 1);
        __sync_fetch_and_add(&w->runq_sum_ns, delta);
        if (delta > w->runq_max_ns)
            w->runq_max_ns = delta;
    }
    if (t->off_ns && now > t->off_ns) {
        delta = now - t->off_ns;
        if (t->off_invol)
            __sync_fetch_and_add(&w->off_invol_ns, delta);
        else
            __sync_fetch_and_add(&w->off_vol_ns, delta);
    }
    t->ready_ns = 0;
    t->off_ns = 0;
    __sync_fetch_and_add(&w->switch_in, 1);
    return 0;
}

static __always_inline int on_migrate(struct task_struct *p, __u32 dest_cpu, const int btf)
{
    struct schedlat_worker *w;
    __u32 idx;

    if (!worker_of(p, &idx, btf))
        return 0;
    /* set_task_cpu() fires the tracepoint also when the CPU does not change. */
    if (task_cpu(p, btf) == dest_cpu)
        return 0;
    w = bpf_map_lookup_elem(&stats, &idx);
    if (w)
        __sync_fetch_and_add(&w->migrations, 1);
    return 0;
}

/* ------------------------------------------------------------------ tp_btf */

SEC("tp_btf/sched_wakeup")
int BPF_PROG(btf_wakeup, struct task_struct *p)
{
    return on_wakeup(p, 1);
}

SEC("tp_btf/sched_wakeup_new")
int BPF_PROG(btf_wakeup_new, struct task_struct *p)
{
    return on_wakeup(p, 1);
}

SEC("tp_btf/sched_switch")
int BPF_PROG(btf_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
    return on_switch(preempt, prev, next, 1);
}

SEC("tp_btf/sched_migrate_task")
int BPF_PROG(btf_migrate, struct task_struct *p, int dest_cpu)
{
    return on_migrate(p, (__u32)dest_cpu, 1);
}

/* ------------------------------------------------------------------ raw_tp */

SEC("raw_tp/sched_wakeup")
int BPF_PROG(raw_wakeup, struct task_struct *p)
{
    return on_wakeup(p, 0);
}

SEC("raw_tp/sched_wakeup_new")
int BPF_PROG(raw_wakeup_new, struct task_struct *p)
{
    return on_wakeup(p, 0);
}

SEC("raw_tp/sched_switch")
int BPF_PROG(raw_switch, bool preempt, struct task_struct *prev, struct task_struct *next)
{
    return on_switch(preempt, prev, next, 0);
}

SEC("raw_tp/sched_migrate_task")
int BPF_PROG(raw_migrate, struct task_struct *p, int dest_cpu)
{
    return on_migrate(p, (__u32)dest_cpu, 0);
}

/* ------------------------------------------------------------------ kprobe
 * No target in the section names: the loader attaches them to the symbols it resolved in
 * /proc/kallsyms. kp_wakeup goes on try_to_wake_up and on wake_up_new_task (both take the
 * task first). */

SEC("kprobe")
int BPF_KPROBE(kp_wakeup, struct task_struct *p)
{
    /* Entry of try_to_wake_up(): a task that is running already is not being woken. */
    if (task_state(p, 0) == TASK_RUNNING)
        return 0;
    return on_wakeup(p, 0);
}

SEC("kprobe")
int BPF_KPROBE(kp_switch, struct task_struct *prev)
{
    return on_switch(0, prev, (struct task_struct *)bpf_get_current_task(), 0);
}

SEC("kprobe")
int BPF_KPROBE(kp_migrate, struct task_struct *p, unsigned int new_cpu)
{
    return on_migrate(p, new_cpu, 0);
}

char LICENSE[] SEC("license") = "GPL";
