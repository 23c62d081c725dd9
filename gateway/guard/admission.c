/* gateway/guard/admission.c — listener and client-address token buckets, the bounded
 * address table, refusal episodes for the log, and closing refused TCP connections. What
 * a refused WebSocket client is answered is protocol work: proto/refusal.c. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include <uv.h>

#include "guard/admission.h"
#include "guard/breaker.h"
#include "base/log.h"
#include "base/log.h"

#define WAYS          8         /* entries per set */
#define MAX_LOCKS     1024      /* stripes: sets share a lock modulo this */
#define EPISODE_MS    1000      /* a second without a refusal ends an episode */

_Static_assert(CG_REJ_IP_RATE != 0 && CG_REJ_IP_QUOTA != 0, "0 means admitted");

/* ------------------------------------------------------------------ addresses */

int cg_ipkey_make(struct cg_ipkey *key, const struct sockaddr *sa, unsigned v4_prefix,
                  unsigned v6_prefix, uint32_t tag)
{
    const uint8_t *a;
    uint8_t b[16];
    unsigned bits, i;

    if (sa->sa_family == AF_INET) {
        memset(b, 0, 10);
        b[10] = b[11] = 0xff;
        memcpy(b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        bits = 96 + (v4_prefix > 32 ? 32 : v4_prefix);
    } else if (sa->sa_family == AF_INET6) {
        a = ((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr;
        memcpy(b, a, 16);
        if (IN6_IS_ADDR_V4MAPPED((const struct in6_addr *)a))
            bits = 96 + (v4_prefix > 32 ? 32 : v4_prefix);
        else
            bits = v6_prefix > 128 ? 128 : v6_prefix;
    } else {
        return -EAFNOSUPPORT;
    }
    for (i = 0; i < 16; i++) {
        if (bits >= 8)
            bits -= 8;
        else {
            b[i] &= (uint8_t)(0xff00 >> bits);
            bits = 0;
        }
    }
    key->hi = key->lo = 0;
    for (i = 0; i < 8; i++) {
        key->hi = key->hi << 8 | b[i];
        key->lo = key->lo << 8 | b[8 + i];
    }
    key->tag = tag;
    return 0;
}

const char *cg_ipkey_format(const struct cg_ipkey *key, unsigned v4_prefix,
                            unsigned v6_prefix, char *buf, size_t size)
{
    uint8_t b[16];
    char host[INET6_ADDRSTRLEN];
    unsigned i;

    for (i = 0; i < 8; i++) {
        b[i] = (uint8_t)(key->hi >> (56 - 8 * i));
        b[8 + i] = (uint8_t)(key->lo >> (56 - 8 * i));
    }
    if (key->hi == 0 && (key->lo >> 32) == 0xffff) {
        inet_ntop(AF_INET, b + 12, host, sizeof(host));
        snprintf(buf, size, "%s/%u", host, v4_prefix);
    } else {
        inet_ntop(AF_INET6, b, host, sizeof(host));
        snprintf(buf, size, "%s/%u", host, v6_prefix);
    }
    return buf;
}

/* ------------------------------------------------------------------ the table */

struct entry {
    uint64_t hi, lo;
    uint64_t tat;           /* the address's bucket (cg_gcra_take()) */
    uint64_t seen_ns;       /* last admitted */
    uint32_t conns;         /* open connections it holds */
    uint32_t tag;           /* listener index + 1; 0 = free */
};

struct stripe {
    pthread_spinlock_t lock;
    char               pad[64 - sizeof(pthread_spinlock_t)];
};

struct cg_iptable {
    struct entry     *e;            /* [nsets * WAYS] */
    struct stripe    *locks;        /* [nlocks] */
    uint64_t          seed;
    uint32_t          nsets;        /* a power of two */
    uint32_t          nlocks;       /* a power of two */
    _Atomic uint64_t  evictions;
    _Atomic uint64_t  untracked;
};

/* MurmurHash3's finaliser: every input bit moves every output bit. */
static uint64_t fmix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint32_t set_of(const struct cg_iptable *t, const struct cg_ipkey *key)
{
    uint64_t h = fmix64(key->lo ^ t->seed);

    h = fmix64(h ^ key->hi ^ ((uint64_t)key->tag << 40) ^ (t->seed >> 7));
    return (uint32_t)h & (t->nsets - 1);
}

struct cg_iptable *cg_iptable_new(unsigned capacity, uint64_t seed)
{
    struct cg_iptable *t;
    uint32_t nsets = 8, i;

    while ((uint64_t)nsets * WAYS < capacity && nsets < (1u << 28))
        nsets <<= 1;
    t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->nsets = nsets;
    t->nlocks = nsets < MAX_LOCKS ? nsets : MAX_LOCKS;
    t->seed = seed;
    t->e = calloc((size_t)nsets * WAYS, sizeof(*t->e));
    t->locks = aligned_alloc(64, t->nlocks * sizeof(*t->locks));
    if (!t->e || !t->locks) {
        free(t->e);
        free(t->locks);
        free(t);
        errno = ENOMEM;
        return NULL;
    }
    for (i = 0; i < t->nlocks; i++)
        pthread_spin_init(&t->locks[i].lock, PTHREAD_PROCESS_PRIVATE);
    return t;
}

void cg_iptable_free(struct cg_iptable *t)
{
    uint32_t i;

    if (!t)
        return;
    for (i = 0; i < t->nlocks; i++)
        pthread_spin_destroy(&t->locks[i].lock);
    free(t->locks);
    free(t->e);
    free(t);
}

static pthread_spinlock_t *lock_of(struct cg_iptable *t, uint32_t set)
{
    return &t->locks[set & (t->nlocks - 1)].lock;
}

static int is_key(const struct entry *e, const struct cg_ipkey *key)
{
    return e->tag == key->tag + 1 && e->hi == key->hi && e->lo == key->lo;
}

int cg_iptable_admit(struct cg_iptable *t, const struct cg_ipkey *key, uint32_t rate,
                     uint32_t burst, unsigned max_conns, uint64_t now_ns, uint32_t *slot,
                     uint64_t *wait_ns)
{
    uint32_t set = set_of(t, key);
    pthread_spinlock_t *lock = lock_of(t, set);
    struct entry *base = &t->e[(size_t)set * WAYS], *hit = NULL, *spare = NULL, *victim = NULL;
    int i, rc = 0;

    *slot = 0;
    pthread_spin_lock(lock);
    for (i = 0; i < WAYS; i++) {
        struct entry *e = &base[i];

        if (is_key(e, key)) {
            hit = e;
            break;
        }
        if (spare)
            continue;
        /* Free, or nothing to remember: a full bucket and no connection. */
        if (e->tag == 0 || (e->conns == 0 && e->tat <= now_ns))
            spare = e;
        else if (e->conns == 0 && (!victim || e->seen_ns < victim->seen_ns))
            victim = e;
    }
    if (!hit) {
        hit = spare ? spare : victim;
        if (!hit) {
            /* Every entry of the set holds connections: fail open, counted. */
            pthread_spin_unlock(lock);
            atomic_fetch_add_explicit(&t->untracked, 1, memory_order_relaxed);
            return 0;
        }
        if (hit == victim)
            atomic_fetch_add_explicit(&t->evictions, 1, memory_order_relaxed);
        hit->hi = key->hi;
        hit->lo = key->lo;
        hit->tag = key->tag + 1;
        hit->tat = 0;
        hit->conns = 0;
    }
    if (max_conns && hit->conns >= max_conns)
        rc = CG_REJ_IP_QUOTA;
    else if (!cg_gcra_take(&hit->tat, rate, burst, now_ns, wait_ns))
        rc = CG_REJ_IP_RATE;
    if (rc == 0) {
        hit->seen_ns = now_ns;
        if (max_conns) {
            hit->conns++;
            *slot = (uint32_t)(hit - t->e) + 1;
        }
    }
    pthread_spin_unlock(lock);
    return rc;
}

void cg_iptable_release(struct cg_iptable *t, uint32_t slot)
{
    pthread_spinlock_t *lock;
    struct entry *e;

    if (!t || slot == 0)
        return;
    e = &t->e[slot - 1];
    lock = lock_of(t, (slot - 1) / WAYS);
    pthread_spin_lock(lock);
    if (e->conns)
        e->conns--;
    pthread_spin_unlock(lock);
}

void cg_iptable_stats(struct cg_iptable *t, uint64_t now_ns, struct cg_iptable_stats *st)
{
    uint32_t set;
    int i;

    memset(st, 0, sizeof(*st));
    if (!t)
        return;
    st->capacity = (uint64_t)t->nsets * WAYS;
    st->evictions = atomic_load(&t->evictions);
    st->untracked = atomic_load(&t->untracked);
    for (set = 0; set < t->nsets; set++) {
        pthread_spinlock_t *lock = lock_of(t, set);

        pthread_spin_lock(lock);
        for (i = 0; i < WAYS; i++) {
            const struct entry *e = &t->e[(size_t)set * WAYS + i];

            if (e->tag == 0 || (e->conns == 0 && e->tat <= now_ns))
                continue;
            st->live++;
            if (e->conns) {
                st->holding++;
                st->conns += e->conns;
            }
        }
        pthread_spin_unlock(lock);
    }
}

unsigned cg_iptable_conns(struct cg_iptable *t, const struct cg_ipkey *key)
{
    uint32_t set = set_of(t, key);
    pthread_spinlock_t *lock = lock_of(t, set);
    unsigned n = 0;
    int i;

    pthread_spin_lock(lock);
    for (i = 0; i < WAYS; i++)
        if (is_key(&t->e[(size_t)set * WAYS + i], key))
            n = t->e[(size_t)set * WAYS + i].conns;
    pthread_spin_unlock(lock);
    return n;
}

/* ------------------------------------------------------------------ per listener */

static struct cg_ratelimit episode_log = CG_RATELIMIT_INIT(10000, 20);

static uint64_t pack2(uint32_t lo, uint32_t hi)
{
    return (uint64_t)lo | (uint64_t)hi << 32;
}

static int limits_addresses(const struct cg_adm_limits *lim)
{
    return lim->ip_conn_rate || lim->max_conns_per_ip;
}

static void listener_set(struct cg_adm_listener *al, const struct cg_adm_limits *lim)
{
    cg_tbs_set(&al->bucket, lim->conn_rate, lim->conn_burst);
    atomic_store(&al->ip_params, pack2(lim->ip_conn_rate, lim->ip_conn_burst));
    atomic_store(&al->max_conns_per_ip, lim->max_conns_per_ip);
    atomic_store(&al->reject, (int)lim->reject);
}

static uint64_t random_seed(void)
{
    uint64_t seed = 0;

    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed))
        seed = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(uintptr_t)&seed;
    return seed;
}

struct cg_adm_listener *cg_admission_listener(struct cg_admission *a, const char *name)
{
    struct cg_adm_listener *al;

    for (al = atomic_load_explicit(&a->head, memory_order_acquire); al;
         al = atomic_load_explicit(&al->next, memory_order_acquire))
        if (strcmp(al->name, name) == 0)
            return al;
    return NULL;
}

/* Adds a listener named <name> with <lim> at the end of <a>'s list. Main thread. */
static struct cg_adm_listener *listener_add(struct cg_admission *a, const char *name,
                                            const struct cg_adm_limits *lim)
{
    struct cg_adm_listener *al = aligned_alloc(64, (sizeof(*al) + 63) / 64 * 64), *last;

    if (!al)
        return NULL;
    memset(al, 0, sizeof(*al));
    snprintf(al->name, sizeof(al->name), "%s", name);
    al->id = a->nls++;
    cg_tbs_init(&al->bucket, lim->conn_rate, lim->conn_burst);
    listener_set(al, lim);
    last = atomic_load(&a->head);
    while (last && atomic_load(&last->next))
        last = atomic_load(&last->next);
    /* Fully built before it is reachable. */
    if (last)
        atomic_store_explicit(&last->next, al, memory_order_release);
    else
        atomic_store_explicit(&a->head, al, memory_order_release);
    return al;
}

struct cg_admission *cg_admission_new(const struct cg_config *cfg)
{
    struct cg_admission *a;
    size_t i;
    int need = 0;

    a = calloc(1, sizeof(*a));
    if (!a)
        return NULL;
    for (i = 0; i < cfg->nlisteners; i++) {
        if (!listener_add(a, cfg->listeners[i].name, &cfg->listeners[i].adm))
            goto out_nomem;
        need |= limits_addresses(&cfg->listeners[i].adm);
    }
    if (need) {
        a->ipt = cg_iptable_new(cfg->adm.ip_table_size, random_seed());
        if (!a->ipt)
            goto out_nomem;
    }
    atomic_store(&a->v4_prefix, cfg->adm.ipv4_prefix);
    atomic_store(&a->v6_prefix, cfg->adm.ipv6_prefix);
    atomic_store(&a->reject_timeout_ms, cfg->adm.reject_timeout_ms);
    atomic_store(&a->max_rejecting, cfg->adm.max_rejecting);
    return a;

out_nomem:
    cg_admission_free(a);
    errno = ENOMEM;
    return NULL;
}

void cg_admission_free(struct cg_admission *a)
{
    struct cg_adm_listener *al, *next;

    if (!a)
        return;
    for (al = atomic_load(&a->head); al; al = next) {
        next = atomic_load(&al->next);
        free(al);
    }
    cg_iptable_free(a->ipt);
    free(a);
}

int cg_admission_apply(struct cg_admission *a, const struct cg_config *cfg)
{
    struct cg_adm_listener *al;
    size_t i;
    int err = 0;

    for (i = 0; i < cfg->nlisteners; i++) {
        const struct cg_adm_limits *lim = &cfg->listeners[i].adm;

        if (!a->ipt && limits_addresses(lim))
            cg_warn("listener %s: ip_connection_rate and max_connections_per_ip take effect "
                    "at the next restart (no listener limited client addresses at the "
                    "start)", cfg->listeners[i].name);
        al = cg_admission_listener(a, cfg->listeners[i].name);
        if (al)
            listener_set(al, lim);
        else if (!listener_add(a, cfg->listeners[i].name, lim))
            err = -ENOMEM;
    }
    atomic_store(&a->v4_prefix, cfg->adm.ipv4_prefix);
    atomic_store(&a->v6_prefix, cfg->adm.ipv6_prefix);
    atomic_store(&a->reject_timeout_ms, cfg->adm.reject_timeout_ms);
    atomic_store(&a->max_rejecting, cfg->adm.max_rejecting);
    return err;
}

int cg_admission_check_ip(struct cg_admission *a, struct cg_adm_listener *al,
                          const struct sockaddr *peer, uint64_t now_ns, uint32_t *slot,
                          uint64_t *wait_ns)
{
    uint64_t p = atomic_load_explicit(&al->ip_params, memory_order_relaxed);
    unsigned max = atomic_load_explicit(&al->max_conns_per_ip, memory_order_relaxed);
    struct cg_ipkey key;

    *slot = 0;
    if (!a->ipt || (!(uint32_t)p && !max) || !peer ||
        cg_ipkey_make(&key, peer, atomic_load_explicit(&a->v4_prefix, memory_order_relaxed),
                      atomic_load_explicit(&a->v6_prefix, memory_order_relaxed), al->id) < 0)
        return 0;
    return cg_iptable_admit(a->ipt, &key, (uint32_t)p, (uint32_t)(p >> 32), max, now_ns, slot,
                            wait_ns);
}

int cg_admission_note(struct cg_admission *a, struct cg_adm_listener *al, int reason,
                      uint64_t now_ms)
{
    uint64_t since = 0, n;

    n = atomic_fetch_add_explicit(&al->refused[reason], 1, memory_order_relaxed);
    /* One store a millisecond at most: workers refusing at once share this line. */
    if (atomic_load_explicit(&al->last_ms[reason], memory_order_relaxed) != now_ms)
        atomic_store_explicit(&al->last_ms[reason], now_ms, memory_order_relaxed);
    if (atomic_load_explicit(&al->since_ms[reason], memory_order_relaxed) != 0 ||
        !atomic_compare_exchange_strong(&al->since_ms[reason], &since, now_ms ? now_ms : 1))
        return 0;
    atomic_store(&al->base[reason], n);
    return 1;
}

void cg_admission_tick(struct cg_admission *a, uint64_t now_ms)
{
    struct cg_adm_listener *al;
    uint64_t n;
    int r;

    for (al = atomic_load(&a->head); al; al = atomic_load(&al->next)) {
        for (r = 0; r < CG_REJ_ALL; r++) {
            uint64_t since = atomic_load(&al->since_ms[r]);
            uint64_t last = atomic_load(&al->last_ms[r]);

            if (since == 0 || now_ms < last + EPISODE_MS)
                continue;
            if (!atomic_compare_exchange_strong(&al->since_ms[r], &since, 0))
                continue;
            n = atomic_load(&al->refused[r]) - atomic_load(&al->base[r]);
            cg_log_ratelimited(&episode_log, CG_LOG_NOTICE, "listener %s: %s: admitting "
                               "again; %llu refused in %.1f s", al->name, cg_reject_name(r),
                               (unsigned long long)n,
                               (double)(last > since ? last - since : 0) / 1000.0);
        }
    }
}

/* ------------------------------------------------------------------ refusing */

void cg_reject_fd(int fd, enum cg_reject_how how)
{
    struct linger lg = { 1, 0 };

    if (how == CG_REJECT_RST)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

/* ------------------------------------------------------------------ the decision */

#define NS_PER_MS 1000000ull

static unsigned wait_s(uint64_t wait_ns)
{
    uint64_t s = (wait_ns + 999999999ull) / 1000000000ull;

    return s == 0 ? 1 : s > 3600 ? 3600 : (unsigned)s;
}

static struct cg_ratelimit refusal_log = CG_RATELIMIT_INIT(10000, 20);

void cg_admit(struct cg_admission *a, struct cg_adm_listener *al, struct cg_breaker *b,
              _Atomic unsigned *conns, uint64_t active, const struct sockaddr *peer,
              struct cg_verdict *v)
{
    unsigned use, max, wmax;
    uint64_t now_ns = uv_hrtime(), now_ms = now_ns / NS_PER_MS, wait = 0;
    int res, r;

    v->reason = -1;
    v->ip_slot = 0;
    v->limit = 0;
    use = cg_breaker_use(b, atomic_load_explicit(conns, memory_order_relaxed), active, &res,
                         NULL);
    if (!cg_breaker_admit(b, use, res, now_ms, &v->retry_s)) {
        v->reason = CG_REJ_BREAKER;
        return;
    }
    r = al ? cg_admission_check_ip(a, al, peer, now_ns, &v->ip_slot, &wait) : 0;
    if (r) {
        v->reason = r;
        v->retry_s = r == CG_REJ_IP_RATE ? wait_s(wait) : 1;
        return;
    }
    if (al && !cg_tbs_take(&al->bucket, now_ns, &wait)) {
        v->reason = CG_REJ_RATE;
        v->retry_s = wait_s(wait);
        goto out_ip;
    }
    wmax = atomic_load_explicit(&b->max_per_worker, memory_order_relaxed);
    if (wmax && active >= wmax) {
        v->reason = CG_REJ_WORKER_QUOTA;
        v->limit = wmax;
        cg_breaker_trip(b, CG_BRKW_WORKER, 1000, now_ms);
        v->retry_s = cg_breaker_retry_after(b, now_ms);
        goto out_ip;
    }
    max = atomic_load_explicit(&b->max_conns, memory_order_relaxed);
    if (max && atomic_fetch_add(conns, 1) >= max) {
        atomic_fetch_sub(conns, 1);
        v->reason = CG_REJ_MAX_CONNS;
        v->limit = max;
        cg_breaker_trip(b, CG_BRKW_CONNECTIONS, 1000, now_ms);
        v->retry_s = cg_breaker_retry_after(b, now_ms);
        goto out_ip;
    }
    if (!max)
        atomic_fetch_add(conns, 1);
    return;

out_ip:
    cg_iptable_release(a->ipt, v->ip_slot);
    v->ip_slot = 0;
}

void cg_admission_log_refusal(struct cg_admission *a, struct cg_adm_listener *al,
                              struct cg_breaker *b, const char *listener,
                              const struct cg_verdict *v, const struct sockaddr *peer)
{
    char what[128], who[80] = "?";
    struct cg_ipkey key;
    uint32_t rate, burst;
    uint64_t ip;
    int why, state;

    if (peer && cg_ipkey_make(&key, peer, atomic_load(&a->v4_prefix),
                              atomic_load(&a->v6_prefix), 0) == 0)
        cg_ipkey_format(&key, atomic_load(&a->v4_prefix), atomic_load(&a->v6_prefix), who,
                        sizeof(who));
    switch (v->reason) {
    case CG_REJ_RATE:
        cg_tbs_get(&al->bucket, &rate, &burst);
        snprintf(what, sizeof(what), "connection_rate %u/s (burst %u) exceeded", rate, burst);
        break;
    case CG_REJ_IP_RATE:
        ip = atomic_load(&al->ip_params);
        snprintf(what, sizeof(what), "ip_connection_rate %u/s (burst %u) exceeded by %s",
                 (uint32_t)ip, (uint32_t)(ip >> 32) ? (uint32_t)(ip >> 32) : (uint32_t)ip,
                 who);
        break;
    case CG_REJ_IP_QUOTA:
        snprintf(what, sizeof(what), "max_connections_per_ip %u reached by %s",
                 atomic_load(&al->max_conns_per_ip), who);
        break;
    case CG_REJ_BREAKER:
        /* The state first: why is its output (argument order is unspecified in C, and gcc
         * read why before cg_breaker_state() had set it: "open (?)"). */
        state = cg_breaker_state(b, NULL, &why);
        snprintf(what, sizeof(what), "the breaker is %s (%s); Retry-After %u s",
                 cg_brk_state_name(state), cg_brk_why_name(why), v->retry_s);
        break;
    default:
        snprintf(what, sizeof(what), "%s %u reached", cg_reject_name(v->reason), v->limit);
        break;
    }
    cg_log_ratelimited(&refusal_log, CG_LOG_WARN, "listener %s: refusing new connections: %s",
                       listener, what);
}
