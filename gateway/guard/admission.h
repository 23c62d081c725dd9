/* gateway/guard/admission.h — admission control at accept: a token bucket per listener, one per
 * client address in a bounded table, and the refusal of what they turn away.
 *
 * Checked in the accepting worker before a coroutine or any upstream work exists, so that
 * a refusal costs an accept() and a close(). The listener's bucket is shared by every
 * worker and lock-free (struct cg_tb_shared: GCRA in one atomic word, exact under any
 * concurrency). Client addresses (an IPv4 address or an IPv6 /64 by default, per listener)
 * live in a table of fixed capacity: set-associative, 8 entries a set, the sets guarded by
 * striped spinlocks (never one lock for the whole table), the set chosen by a hash keyed
 * with a random seed so that nobody can aim at one set. An entry holds the address's
 * bucket and its open connections; it is free again once its bucket is full and it holds
 * no connection, and a full set gives up the least recently seen of those. A flood of
 * distinct addresses therefore recycles entries and never grows the table; when every
 * entry of a set holds connections, the newcomer is admitted untracked and counted
 * (fail-open: the global quotas still apply).
 *
 * Rejections are counted per worker and listener by reason (base/counters.h) and logged
 * once when a listener starts refusing for a reason and once when it stops (with the
 * count), never per connection.
 */
#ifndef CG_ADMISSION_H
#define CG_ADMISSION_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#include "base/counters.h"
#include "config/config.h"
#include "guard/tokenbucket.h"

struct cg_iptable;

/* A client address as the table keys it: masked to its prefix, IPv4 as ::ffff:a.b.c.d,
 * and the listener it came to. */
struct cg_ipkey {
    uint64_t hi, lo;
    uint32_t tag;           /* listener index */
};

/* Builds <key> for <sa> (AF_INET or AF_INET6) arriving at listener <tag>, keeping
 * <v4_prefix> bits of an IPv4 address and <v6_prefix> of an IPv6 one (IPv4-mapped IPv6
 * addresses count as IPv4). Returns 0 or -EAFNOSUPPORT. */
int cg_ipkey_make(struct cg_ipkey *key, const struct sockaddr *sa, unsigned v4_prefix,
                  unsigned v6_prefix, uint32_t tag);

/* Writes <key>'s address and prefix ("10.1.2.0/24", "2001:db8::/64") into <buf>. */
const char *cg_ipkey_format(const struct cg_ipkey *key, unsigned v4_prefix,
                            unsigned v6_prefix, char *buf, size_t size);

/* A table of <capacity> entries (rounded up to a power of two, at least 64) with hash
 * seed <seed>. Returns it (free with cg_iptable_free()) or NULL (ENOMEM). */
struct cg_iptable *cg_iptable_new(unsigned capacity, uint64_t seed);
void cg_iptable_free(struct cg_iptable *t);

/* One new connection from <key> at <now_ns>: takes a token from its bucket (<rate>/s,
 * <burst>; rate 0 = no bucket) and, when <max_conns> > 0, one of its connection slots.
 * Returns 0 with *<slot> set to what cg_iptable_release() gives back (0 = nothing held),
 * or CG_REJ_IP_RATE with *<wait_ns> until the next token, or CG_REJ_IP_QUOTA (nothing
 * taken for either refusal). Any thread. */
int cg_iptable_admit(struct cg_iptable *t, const struct cg_ipkey *key, uint32_t rate,
                     uint32_t burst, unsigned max_conns, uint64_t now_ns, uint32_t *slot,
                     uint64_t *wait_ns);

/* Gives back the connection slot <slot> of cg_iptable_admit() (0: nothing). Any thread. */
void cg_iptable_release(struct cg_iptable *t, uint32_t slot);

struct cg_iptable_stats {
    uint64_t capacity;
    uint64_t live;          /* entries whose bucket is not full or that hold connections */
    uint64_t holding;       /* entries holding connections */
    uint64_t conns;         /* connections they hold */
    uint64_t evictions;     /* live entries given up for a newcomer */
    uint64_t untracked;     /* newcomers admitted untracked: their set was all held */
};

/* Counts <t>'s entries at <now_ns> (walks the table, set by set). */
void cg_iptable_stats(struct cg_iptable *t, uint64_t now_ns, struct cg_iptable_stats *st);

/* The open-connection count of <key> (0 when it has no entry), for tests. */
unsigned cg_iptable_conns(struct cg_iptable *t, const struct cg_ipkey *key);

/* ------------------------------------------------------------------ per listener */

/* One listener's admission state, shared by every worker, found by the listener's name:
 * it outlives reloads (a listener keeps its bucket and counts through them) and is freed
 * with the daemon's. Workers keep a pointer to it in their struct cg_wlistener. */
struct cg_adm_listener {
    struct cg_adm_listener *_Atomic next;   /* the daemon's list; only ever appended to */
    char                name[CG_CONF_NAME_MAX];
    unsigned            id;                 /* its client addresses' table tag */
    struct cg_tb_shared bucket;             /* connection_rate, connection_burst */
    _Atomic uint64_t    ip_params;          /* ip_connection_rate | ip_connection_burst << 32 */
    _Atomic unsigned    max_conns_per_ip;
    _Atomic int         reject;             /* enum cg_reject_how */
    _Atomic uint64_t    refused[CG_REJ_ALL];    /* all workers, by reason */
    /* refusal episodes, per reason: for logging at the start and the end only */
    _Atomic uint64_t    since_ms[CG_REJ_ALL];   /* 0 = not refusing */
    _Atomic uint64_t    last_ms[CG_REJ_ALL];
    _Atomic uint64_t    base[CG_REJ_ALL];       /* refused[] when it started */
};

struct cg_admission {
    struct cg_adm_listener *_Atomic head;   /* in order of creation */
    unsigned             nls;               /* listeners ever known (main thread) */
    struct cg_iptable   *ipt;               /* NULL unless a listener limited addresses */
    _Atomic unsigned     v4_prefix;
    _Atomic unsigned     v6_prefix;
    _Atomic uint64_t     reject_timeout_ms;
    _Atomic unsigned     max_rejecting;
};

/* Builds the admission state of <cfg>'s listeners. The table of addresses is made only
 * when some listener limits them, with [admission] ip_table_size entries (fixed until a
 * restart). Returns it (free with cg_admission_free()) or NULL (ENOMEM). */
struct cg_admission *cg_admission_new(const struct cg_config *cfg);
void cg_admission_free(struct cg_admission *a);

/* Applies <cfg>'s limits to <a> (a reload): listeners are matched by name, new ones get
 * their state now; a table of addresses cannot appear after the start (logged). Returns 0
 * or -ENOMEM (some new listener got no state: it admits without limits). Main thread;
 * workers go on. */
int cg_admission_apply(struct cg_admission *a, const struct cg_config *cfg);

/* The state of the listener named <name>, or NULL. Any thread, lock-free. */
struct cg_adm_listener *cg_admission_listener(struct cg_admission *a, const char *name);

/* The address checks for a connection from <peer> to listener <al> at <now_ns>: returns 0
 * with *<slot> (release with cg_iptable_release(a->ipt, slot)), or a reason with *<wait_ns>
 * set for CG_REJ_IP_RATE. Cheap when the listener limits no address. */
int cg_admission_check_ip(struct cg_admission *a, struct cg_adm_listener *al,
                          const struct sockaddr *peer, uint64_t now_ns, uint32_t *slot,
                          uint64_t *wait_ns);

/* Counts a refusal by listener <al> for <reason> at <now_ms>. Returns 1 when it starts an
 * episode of refusals for that reason (the caller logs it, rate-limited), else 0. Any
 * thread. */
int cg_admission_note(struct cg_admission *a, struct cg_adm_listener *al, int reason,
                      uint64_t now_ms);

/* Ends the episodes that saw no refusal for a second, logging each with its count. One
 * thread (the breaker's timer). */
void cg_admission_tick(struct cg_admission *a, uint64_t now_ms);

/* ------------------------------------------------------------------ refusing */

/* ------------------------------------------------------------------ the decision */

struct cg_breaker;

/* What was decided about one accepted connection. */
struct cg_verdict {
    int      reason;        /* -1: admitted; else enum cg_reject_reason */
    unsigned retry_s;       /* Retry-After for a refusal */
    uint32_t ip_slot;       /* admitted: the address's connection slot, 0 = none */
    unsigned limit;         /* a refusal: the limit in force (rate, quota) */
};

/* Decides about a connection from <peer> (NULL: unknown) to the listener of <al> (NULL:
 * not known to admission yet), whose worker holds <active> connections: the breaker, the
 * address's bucket and quota, the listener's bucket, the worker's and the daemon's quotas
 * (<conns>: the daemon's count). Admitted (v->reason -1), it is counted in <conns> and
 * holds v->ip_slot, which the connection gives back. The order puts the cheapest and most
 * general check first, and the per-address checks before the listener's bucket, so that
 * one client's flood spends its own tokens and not everybody's. Refused, it says why, the
 * limit in force and the Retry-After. */
void cg_admit(struct cg_admission *a, struct cg_adm_listener *al, struct cg_breaker *b,
              _Atomic unsigned *conns, uint64_t active, const struct sockaddr *peer,
              struct cg_verdict *v);

/* Logs that <listener> starts refusing connections for <v>'s reason, the first from
 * <peer>: once an episode (cg_admission_note()), never per connection. */
void cg_admission_log_refusal(struct cg_admission *a, struct cg_adm_listener *al,
                              struct cg_breaker *b, const char *listener,
                              const struct cg_verdict *v, const struct sockaddr *peer);

/* Closes the accepted <fd> at once, with a reset when <how> is CG_REJECT_RST. */
void cg_reject_fd(int fd, enum cg_reject_how how);

#endif
