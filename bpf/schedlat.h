/* bpf/schedlat.h — layouts shared by bpf/schedlat.bpf.c and the loader gateway/schedlat.c.
 *
 * Types only, __u32/__u64, widest first, no pointers. The includer provides the types:
 * vmlinux.h in the BPF object, <linux/types.h> in user space.
 *
 * Run-queue latency is kept as a log2 histogram of microseconds, runqlat style: slot 0
 * counts 0..1 us, slot i (i >= 1) counts 2^i .. 2^(i+1)-1 us, the last slot everything
 * above. Off-CPU time is kept as sums and counts, split by how the thread left the CPU.
 */
#ifndef CG_BPF_SCHEDLAT_H
#define CG_BPF_SCHEDLAT_H

#define SCHEDLAT_SLOTS        32
#define SCHEDLAT_MAX_WORKERS  1024     /* the [gateway] workers maximum */

/* One worker thread's counters: the `stats` array map, indexed by worker. Each field only
 * grows; readers subtract two reads to get an interval. */
struct schedlat_worker {
    __u64 runq_slots[SCHEDLAT_SLOTS]; /* run-queue latency, log2 us */
    __u64 runq_count;                 /* = sum of runq_slots */
    __u64 runq_sum_ns;
    __u64 runq_max_ns;
    __u64 off_vol_ns;                 /* off-CPU time after blocking */
    __u64 off_invol_ns;               /* off-CPU time after being preempted */
    __u64 nvol;                       /* voluntary switches: blocked (sleep, I/O wait) */
    __u64 ninvol;                     /* involuntary switches: preempted while runnable */
    __u64 wakeups;
    __u64 migrations;                 /* moved to another CPU */
    __u64 switch_in;                  /* times it was put on a CPU */
};

/* One worker thread's state between two events: the `tstate` array map (kernel only). */
struct schedlat_task {
    __u64 ready_ns;      /* runnable since (woken, or preempted); 0 = not runnable */
    __u64 off_ns;        /* left the CPU at; 0 = on a CPU, or not seen leaving */
    __u32 off_invol;     /* 1 when it left the CPU preempted */
    __u32 pad;
};

#endif
