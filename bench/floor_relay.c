/* bench/floor_relay.c — the least a TCP proxy that reads and writes the bytes can do, as a
 * reference peer for `make bench` ("floor") and the sockmap experiment (`make
 * bench-sockmap`; docs/bench.md).
 *
 *   floor-relay [--threads N] [--source A-B] [--sockmap] LISTEN BACKEND
 *
 * Per thread one epoll loop and one SO_REUSEPORT listener; per accepted connection one
 * non-blocking connect to BACKEND (bound round-robin to the --source addresses, as the
 * bench's proxies are), then read() into one scratch buffer per thread and write() of what
 * was read to the other side. Nothing else: no configuration, no timeouts, no logs, no
 * counters, no half-close (the first EOF or error closes both sides, as nginx's stream proxy
 * does by default and the bench runs corogate). A short write keeps the rest in a buffer
 * of its own and stops reading the other side until it has gone (so one slow reader costs
 * one buffer, not unbounded memory). That is the system-call and copy floor of a
 * user-space relay: read + write per chunk per direction, epoll_wait per wakeup.
 *
 * --sockmap: after the backend connect, both sockets go into a sockhash whose sk_skb
 * verdict program (bpf/relay_sockmap.bpf.c) redirects every skb one of them receives to
 * the other's egress; the kernel relays, and this process only waits for the EOF that ends
 * the pair. An experiment, not a proxy: bytes queued before the sockets entered the map are
 * relayed from here, and nothing orders them against the redirected ones.
 *
 * Stops at SIGTERM or SIGINT, closing everything. Exit status 1 when it cannot start.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "relay_sockmap.skel.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24      /* linux/in.h */
#endif

#define SCRATCH     16384u
#define EVENTS      256
#define MAX_THREADS 64

struct pair;

/* One socket of a relayed pair. `pending` holds what the last write() to it left over. */
struct side {
    int fd;
    struct pair *pair;
    struct side *other;
    char *pending;
    size_t pending_off, pending_len;
    uint32_t events;            /* what epoll watches now */
};

struct pair {
    struct side client, backend;
    bool connected, dead;
    struct pair *prev, *next;   /* the thread's pairs: all closed at the end */
};

struct worker {
    pthread_t thread;
    int epfd, listen_fd, stop_fd;
    unsigned next_source;
    struct pair *pairs;         /* open pairs */
    struct pair *dead;          /* closed in this batch of events, freed after it */
    char scratch[SCRATCH];
};

static struct sockaddr_in listen_addr, backend_addr;
static uint32_t source_first, source_count;     /* host order; count 0: no bind */
static bool use_sockmap;
static int sockmap_fd = -1;
static struct worker workers[MAX_THREADS];
static unsigned nworkers = 1;

/* epoll's data for the listener and the stop eventfd: never a side's address. */
static char tag_listen, tag_stop;

static int parse_addr(const char *s, struct sockaddr_in *sa)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    char *end;
    long port;

    if (!colon || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    port = strtol(colon + 1, &end, 10);
    if (*end || port < 1 || port > 65535)
        return -1;
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    return inet_pton(AF_INET, host, &sa->sin_addr) == 1 ? 0 : -1;
}

static int parse_sources(const char *s)
{
    char first[32];
    const char *dash = strchr(s, '-');
    struct in_addr a, b;

    if (!dash || (size_t)(dash - s) >= sizeof(first))
        return -1;
    memcpy(first, s, (size_t)(dash - s));
    first[dash - s] = '\0';
    if (inet_pton(AF_INET, first, &a) != 1 || inet_pton(AF_INET, dash + 1, &b) != 1 ||
        ntohl(b.s_addr) < ntohl(a.s_addr))
        return -1;
    source_first = ntohl(a.s_addr);
    source_count = ntohl(b.s_addr) - source_first + 1;
    return 0;
}

/* Makes epoll watch <events> (never 0) on <s>: added the first time, changed after. */
static int watch(struct worker *w, struct side *s, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = s };
    int op = s->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;

    if (s->events == events)
        return 0;
    s->events = events;
    return epoll_ctl(w->epfd, op, s->fd, &ev);
}

/* What epoll watches on each side of <p>, from its state: the EOF always; the bytes while
 * the other side has none waiting (not at all with --sockmap: the kernel moves them); room
 * to write while this side has some waiting. */
static int rewatch(struct worker *w, struct pair *p)
{
    struct side *sides[2] = { &p->client, &p->backend };

    for (int i = 0; i < 2; i++) {
        uint32_t ev = EPOLLRDHUP;
        if (!use_sockmap && !sides[i]->other->pending)
            ev |= EPOLLIN;
        if (sides[i]->pending)
            ev |= EPOLLOUT;
        if (watch(w, sides[i], ev))
            return -1;
    }
    return 0;
}

static void close_pair(struct worker *w, struct pair *p)
{
    struct side *sides[2] = { &p->client, &p->backend };

    if (p->dead)
        return;
    p->dead = true;
    for (int i = 0; i < 2; i++) {
        close(sides[i]->fd);    /* which drops it from epoll and from the sockhash */
        free(sides[i]->pending);
        sides[i]->pending = NULL;
    }
    if (p->prev)
        p->prev->next = p->next;
    else
        w->pairs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = NULL;
    p->next = w->dead;
    w->dead = p;
}

/* Writes s's pending bytes; 0 when they all went, 1 when some wait, -1 on error. */
static int flush_pending(struct side *s)
{
    while (s->pending_off < s->pending_len) {
        ssize_t n = write(s->fd, s->pending + s->pending_off, s->pending_len - s->pending_off);
        if (n < 0)
            return errno == EAGAIN ? 1 : -1;
        s->pending_off += (size_t)n;
    }
    free(s->pending);
    s->pending = NULL;
    s->pending_off = s->pending_len = 0;
    return 0;
}

/* Reads from `from` and writes to its other side until `from` has no more, the other side
 * is full, or the pair ends. */
static void relay(struct worker *w, struct side *from)
{
    struct side *to = from->other;

    while (!from->pair->dead && !to->pending) {
        ssize_t n = read(from->fd, w->scratch, SCRATCH), m;

        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0) {
            close_pair(w, from->pair);
            return;
        }
        m = write(to->fd, w->scratch, (size_t)n);
        if (m < 0 && errno != EAGAIN) {
            close_pair(w, from->pair);
            return;
        }
        if (m < 0)
            m = 0;
        if (m < n) {
            /* The rest waits for `to` to drain; `from` is not read meanwhile. */
            to->pending = malloc((size_t)(n - m));
            if (!to->pending) {
                close_pair(w, from->pair);
                return;
            }
            memcpy(to->pending, w->scratch + m, (size_t)(n - m));
            to->pending_len = (size_t)(n - m);
            if (rewatch(w, from->pair))
                close_pair(w, from->pair);
            return;
        }
        if ((size_t)n < SCRATCH)
            return;     /* the socket had no more: read() would say EAGAIN */
    }
}

static int sockmap_add(struct pair *p)
{
    uint64_t cookie[2], peer;
    socklen_t len = sizeof(cookie[0]);

    if (getsockopt(p->client.fd, SOL_SOCKET, SO_COOKIE, &cookie[0], &len))
        return -1;
    len = sizeof(cookie[1]);
    if (getsockopt(p->backend.fd, SOL_SOCKET, SO_COOKIE, &cookie[1], &len))
        return -1;
    peer = (uint64_t)p->backend.fd;
    if (bpf_map_update_elem(sockmap_fd, &cookie[0], &peer, BPF_ANY))
        return -1;
    peer = (uint64_t)p->client.fd;
    return bpf_map_update_elem(sockmap_fd, &cookie[1], &peer, BPF_ANY);
}

static void on_connected(struct worker *w, struct pair *p)
{
    int err = 0;
    socklen_t len = sizeof(err);

    if (getsockopt(p->backend.fd, SOL_SOCKET, SO_ERROR, &err, &len) || err) {
        close_pair(w, p);
        return;
    }
    p->connected = true;
    /* With --sockmap, rewatch() leaves EPOLLIN out: the kernel wakes a redirecting
     * socket's pollers after each skb it moved (sk_psock_verdict_data_ready), which would
     * wake this process once per message to read nothing. */
    if ((use_sockmap && sockmap_add(p)) || rewatch(w, p)) {
        close_pair(w, p);
        return;
    }
    relay(w, &p->client);   /* what the client sent while the backend connect was on */
}

static void on_accept(struct worker *w)
{
    for (;;) {
        int one = 1, c = accept4(w->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), b;
        struct pair *p;

        if (c < 0)
            return;     /* EAGAIN, or an aborted connection: the next event says more */
        b = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        p = calloc(1, sizeof(*p));
        if (b < 0 || !p) {
            close(c);
            if (b >= 0)
                close(b);
            free(p);
            continue;
        }
        /* The accepted socket has TCP_NODELAY from the listener (worker_init()). */
        (void)setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (source_count) {
            struct sockaddr_in src = { .sin_family = AF_INET };
            src.sin_addr.s_addr = htonl(source_first + w->next_source++ % source_count);
            (void)setsockopt(b, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
            (void)bind(b, (struct sockaddr *)&src, sizeof(src));
        }
        p->client = (struct side){ .fd = c, .pair = p, .other = &p->backend };
        p->backend = (struct side){ .fd = b, .pair = p, .other = &p->client };
        p->next = w->pairs;
        if (w->pairs)
            w->pairs->prev = p;
        w->pairs = p;
        if (connect(b, (struct sockaddr *)&backend_addr, sizeof(backend_addr)) == 0)
            on_connected(w, p);
        else if (errno != EINPROGRESS || watch(w, &p->backend, EPOLLOUT))
            close_pair(w, p);
    }
}

static void on_event(struct worker *w, struct side *s, uint32_t ev)
{
    struct pair *p = s->pair;

    if (p->dead)
        return;
    if (!p->connected) {
        on_connected(w, p);
        return;
    }
    if (ev & EPOLLOUT) {
        int r = flush_pending(s);
        if (r < 0) {
            close_pair(w, p);
            return;
        }
        if (r == 0 && rewatch(w, p)) {
            close_pair(w, p);
            return;
        }
        if (r == 0)
            relay(w, s->other);     /* it was not read while s was full */
    }
    if (p->dead)
        return;
    if (ev & (EPOLLERR | EPOLLHUP))
        close_pair(w, p);
    else if (ev & EPOLLIN)
        relay(w, s);            /* reads up to the EOF, which closes the pair */
    else if (ev & EPOLLRDHUP)
        close_pair(w, p);       /* its reads are paused behind a full peer; EOF ends it */
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct epoll_event evs[EVENTS];

    for (;;) {
        int n = epoll_wait(w->epfd, evs, EVENTS, -1);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            break;
        for (int i = 0; i < n; i++) {
            void *d = evs[i].data.ptr;
            if (d == &tag_stop)
                goto out;
            if (d == &tag_listen)
                on_accept(w);
            else
                on_event(w, d, evs[i].events);
        }
        while (w->dead) {
            struct pair *p = w->dead;
            w->dead = p->next;
            free(p);
        }
    }
out:
    while (w->pairs)
        close_pair(w, w->pairs);
    while (w->dead) {
        struct pair *p = w->dead;
        w->dead = p->next;
        free(p);
    }
    return NULL;
}

static int worker_init(struct worker *w)
{
    int one = 1;
    struct epoll_event lev = { .events = EPOLLIN, .data.ptr = &tag_listen };
    struct epoll_event sev = { .events = EPOLLIN, .data.ptr = &tag_stop };

    w->epfd = epoll_create1(EPOLL_CLOEXEC);
    w->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    w->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (w->epfd < 0 || w->stop_fd < 0 || w->listen_fd < 0)
        return -1;
    (void)setsockopt(w->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    /* Linux copies it into every accepted socket: one system call per listener, not per
     * connection (as corogate does). */
    (void)setsockopt(w->listen_fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (setsockopt(w->listen_fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
        bind(w->listen_fd, (struct sockaddr *)&listen_addr, sizeof(listen_addr)) ||
        listen(w->listen_fd, 4096))
        return -1;
    if (epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->listen_fd, &lev) ||
        epoll_ctl(w->epfd, EPOLL_CTL_ADD, w->stop_fd, &sev))
        return -1;
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: floor-relay [--threads N] [--source A-B] [--sockmap] LISTEN BACKEND\n"
            "  LISTEN, BACKEND  IPv4 ADDR:PORT\n"
            "  --threads N      epoll loops, each with its own SO_REUSEPORT listener (1)\n"
            "  --source A-B     bind backend connections round-robin to addresses A..B\n"
            "  --sockmap        the kernel relays the bytes (sk_skb redirect); needs BPF\n");
}

int main(int argc, char **argv)
{
    struct relay_sockmap_bpf *skel = NULL;
    sigset_t stop;
    int sig, i, rc = 1;
    unsigned started = 0;

    for (i = 1; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            nworkers = (unsigned)atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--source") && i + 1 < argc) {
            if (parse_sources(argv[++i])) {
                fprintf(stderr, "floor-relay: --source %s: want A-B, IPv4\n", argv[i]);
                return 1;
            }
        } else if (!strcmp(argv[i], "--sockmap")) {
            use_sockmap = true;
        } else {
            usage();
            return 1;
        }
    }
    if (argc - i != 2 || nworkers < 1 || nworkers > MAX_THREADS) {
        usage();
        return 1;
    }
    if (parse_addr(argv[i], &listen_addr) || parse_addr(argv[i + 1], &backend_addr)) {
        fprintf(stderr, "floor-relay: %s, %s: want IPv4 ADDR:PORT\n", argv[i], argv[i + 1]);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&stop);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);    /* the threads inherit it; main waits */

    if (use_sockmap) {
        skel = relay_sockmap_bpf__open_and_load();
        if (!skel) {
            fprintf(stderr, "floor-relay: loading the sk_skb program: %s\n", strerror(errno));
            return 1;
        }
        sockmap_fd = bpf_map__fd(skel->maps.relay_peers);
        if (bpf_prog_attach(bpf_program__fd(skel->progs.relay_verdict), sockmap_fd,
                            BPF_SK_SKB_VERDICT, 0)) {
            fprintf(stderr, "floor-relay: attaching the sk_skb verdict: %s\n", strerror(errno));
            goto out;
        }
    }
    for (started = 0; started < nworkers; started++) {
        struct worker *w = &workers[started];
        if (worker_init(w)) {
            fprintf(stderr, "floor-relay: listening on %s: %s\n", argv[i], strerror(errno));
            goto stop;
        }
        if (pthread_create(&w->thread, NULL, worker_main, w)) {
            fprintf(stderr, "floor-relay: starting a thread failed\n");
            goto stop;
        }
    }
    printf("floor-relay: %s -> %s, %u thread(s)%s\n", argv[i], argv[i + 1], nworkers,
           use_sockmap ? ", sockmap" : "");
    fflush(stdout);
    sigwait(&stop, &sig);
    rc = 0;
stop:
    for (unsigned k = 0; k < nworkers; k++) {
        struct worker *w = &workers[k];
        if (k < started) {
            (void)!write(w->stop_fd, &(uint64_t){ 1 }, sizeof(uint64_t));
            pthread_join(w->thread, NULL);
        }
        if (w->listen_fd > 0)
            close(w->listen_fd);
        if (w->stop_fd > 0)
            close(w->stop_fd);
        if (w->epfd > 0)
            close(w->epfd);
    }
out:
    relay_sockmap_bpf__destroy(skel);
    return rc;
}
