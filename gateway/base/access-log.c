/* gateway/base/access-log.c — the connection log's rings, writer thread, line formats and
 * destinations (base/access-log.h). */
#include "base/access-log.h"
#include "base/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LINE_MAX_BYTES  2048    /* a formatted line; a record's fields fit in far less */
#define BATCH_BYTES     4096    /* stderr lines gathered per write(2) (<= PIPE_BUF) */
#define PASS_MAX        256     /* records taken from one ring per pass: fairness */
#define SEND_TIMEOUT_MS 100     /* a syslog/journald socket that stops reading */
/* The writer naps NAP_MS between passes, so that a worker need not wake it for each line
 * (a syscall on the worker's path, and a thread switch per line); after DEEP_AFTER empty
 * passes (a second) it sleeps until woken, so that an idle daemon stays idle. */
#define NAP_MS          10
#define DEEP_AFTER      100

enum { AWAKE, NAPPING, ASLEEP };

#define DEFAULT_SYSLOG  "/dev/log"
#define DEFAULT_JOURNAL "/run/systemd/journal/socket"

/* One worker's ring: it alone moves head, the writer alone moves tail. Both count records
 * ever, so head - tail is the fill and never ambiguous. Apart on their own cache lines,
 * so that producer and consumer do not share one. */
struct ring {
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) _Atomic uint64_t tail;
    struct cg_alog_rec           *slots;
};

/* A datagram destination, connected on first use and again after a failure. */
struct dgram {
    const char *path;
    int         fd;
};

struct cg_alog {
    struct ring        *rings;
    unsigned            nrings;
    unsigned            cap;
    pthread_t           thread;
    int                 efd;            /* the writer sleeps on it */
    _Atomic int         sleeping;       /* AWAKE, NAPPING or ASLEEP (on efd) */
    _Atomic int         stop;
    _Atomic uint64_t    written;
    /* the pause test hook */
    pthread_mutex_t     lock;
    pthread_cond_t      cond;
    int                 pause_req;
    int                 pause_ack;
    /* the writer's own */
    struct dgram        syslog;
    struct dgram        journal;
    char                batch[BATCH_BYTES];
    size_t              batch_len;
    char                syslog_path[108];
    char                journal_path[108];
};

static struct cg_ratelimit sink_log = CG_RATELIMIT_INIT(10000, 1);

const char *cg_alog_sink_name(int sink)
{
    static const char *const names[] = { "off", "stderr", "syslog", "journal" };

    return sink >= 0 && sink < 4 ? names[sink] : "?";
}

const char *cg_alog_format_name(int format)
{
    return format == CG_ALOG_JSON ? "json" : format == CG_ALOG_TEXT ? "text" : "?";
}

/* ------------------------------------------------------------------ formatting */

/* Appends like snprintf at *<len>, never past <size> - 1. */
static void put(char *buf, size_t size, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void put(char *buf, size_t size, size_t *len, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (*len >= size - 1)
        return;
    va_start(ap, fmt);
    n = vsnprintf(buf + *len, size - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n < size - *len ? (size_t)n : size - *len - 1;
}

static void fmt_time(uint64_t ms, char *buf, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    gmtime_r(&t, &tm);
    snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (unsigned)(ms % 1000));
}

static void fmt_addr(const struct cg_alog_rec *r, char *buf, size_t size)
{
    if (r->family != AF_INET && r->family != AF_INET6)
        snprintf(buf, size, "-");
    else if (!inet_ntop(r->family, r->client_addr, buf, (socklen_t)size))
        snprintf(buf, size, "-");
}

/* A duration: "-1" when not reached, as HAProxy writes timers that did not run. */
static long long dur(uint32_t ms)
{
    return ms == CG_ALOG_NONE ? -1 : (long long)ms;
}

/* Copies <s> so that nothing in it can break a line or a JSON string (config names and
 * request ids are restricted already: this is the last guard). */
static const char *clean(const char *s, char *buf, size_t size)
{
    size_t i;

    for (i = 0; s[i] && i < size - 1; i++)
        buf[i] = (unsigned char)s[i] < 0x21 || s[i] == '"' || s[i] == '\\' ||
                 (unsigned char)s[i] >= 0x7f ? '?' : s[i];
    buf[i] = '\0';
    return buf;
}

static size_t format_text(const struct cg_alog_rec *r, char *buf, size_t size)
{
    char t[80], addr[INET6_ADDRSTRLEN], ls[CG_ALOG_NAME_MAX], up[CG_ALOG_NAME_MAX];
    char srv[CG_ALOG_NAME_MAX], id[CG_ALOG_ID_MAX];
    size_t len = 0;

    fmt_time(r->start_ms, t, sizeof(t));
    fmt_addr(r, addr, sizeof(addr));
    put(buf, size, &len, r->family == AF_INET6 ? "%s [%s]:%u" : "%s %s:%u", t, addr,
        r->client_port);
    put(buf, size, &len, " %s %u %s/%s %lld/%lld/%lld %" PRIu64 " %" PRIu64,
        clean(r->listener, ls, sizeof(ls)), r->worker,
        r->upstream[0] ? clean(r->upstream, up, sizeof(up)) : "-",
        r->server[0] ? clean(r->server, srv, sizeof(srv)) : "-",
        dur(r->hs_ms), dur(r->connect_ms), dur(r->total_ms), r->bytes_in, r->bytes_out);
    if (r->websocket)
        put(buf, size, &len, " %u/%u", r->msgs_in, r->msgs_out);
    else
        put(buf, size, &len, " -/-");
    put(buf, size, &len, " %s", r->term);
    if (r->websocket && r->close_client)
        put(buf, size, &len, " %u/", r->close_client);
    else
        put(buf, size, &len, " -/");
    if (r->websocket && r->close_server)
        put(buf, size, &len, "%u", r->close_server);
    else
        put(buf, size, &len, "-");
    put(buf, size, &len, " %s", r->request_id[0] ? clean(r->request_id, id, sizeof(id)) : "-");
    return len;
}

static void json_str(char *buf, size_t size, size_t *len, const char *key, const char *v)
{
    char tmp[CG_ALOG_ID_MAX];

    if (v && v[0])
        put(buf, size, len, ",\"%s\":\"%s\"", key, clean(v, tmp, sizeof(tmp)));
    else
        put(buf, size, len, ",\"%s\":null", key);
}

static void json_num(char *buf, size_t size, size_t *len, const char *key, int present,
                     long long v)
{
    if (present)
        put(buf, size, len, ",\"%s\":%lld", key, v);
    else
        put(buf, size, len, ",\"%s\":null", key);
}

static size_t format_json(const struct cg_alog_rec *r, char *buf, size_t size)
{
    char t[80], addr[INET6_ADDRSTRLEN];
    size_t len = 0;
    int ws = r->websocket;

    fmt_time(r->start_ms, t, sizeof(t));
    fmt_addr(r, addr, sizeof(addr));
    put(buf, size, &len, "{\"time\":\"%s\"", t);
    json_str(buf, size, &len, "client", r->family ? addr : NULL);
    json_num(buf, size, &len, "client_port", r->family != 0, r->client_port);
    json_str(buf, size, &len, "listener", r->listener);
    json_num(buf, size, &len, "worker", 1, r->worker);
    json_str(buf, size, &len, "upstream", r->upstream);
    json_str(buf, size, &len, "server", r->server);
    json_num(buf, size, &len, "handshake_ms", 1, dur(r->hs_ms));
    json_num(buf, size, &len, "connect_ms", 1, dur(r->connect_ms));
    json_num(buf, size, &len, "duration_ms", 1, dur(r->total_ms));
    json_num(buf, size, &len, "bytes_in", 1, (long long)r->bytes_in);
    json_num(buf, size, &len, "bytes_out", 1, (long long)r->bytes_out);
    json_num(buf, size, &len, "msgs_in", ws, r->msgs_in);
    json_num(buf, size, &len, "msgs_out", ws, r->msgs_out);
    json_str(buf, size, &len, "termination", r->term);
    json_num(buf, size, &len, "ws_close_client", ws && r->close_client, r->close_client);
    json_num(buf, size, &len, "ws_close_server", ws && r->close_server, r->close_server);
    json_str(buf, size, &len, "request_id", r->request_id);
    put(buf, size, &len, "}");
    return len;
}

size_t cg_alog_format(const struct cg_alog_rec *rec, char *buf, size_t size)
{
    return rec->format == CG_ALOG_JSON ? format_json(rec, buf, size)
                                       : format_text(rec, buf, size);
}

/* ------------------------------------------------------------------ destinations */

static void flush_stderr(struct cg_alog *a)
{
    size_t off = 0;
    ssize_t w;

    while (off < a->batch_len) {
        w = write(STDERR_FILENO, a->batch + off, a->batch_len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;              /* stderr gone: nothing better to do with the lines */
        off += (size_t)w;
    }
    a->batch_len = 0;
}

static void to_stderr(struct cg_alog *a, const char *line, size_t len)
{
    if (a->batch_len + len + 1 > sizeof(a->batch))
        flush_stderr(a);
    memcpy(a->batch + a->batch_len, line, len);
    a->batch[a->batch_len + len] = '\n';
    a->batch_len += len + 1;
}

/* Sends <len> bytes at <p> to <dg>, (re)connecting first when needed. */
static void dgram_send(struct dgram *dg, const char *what, const void *p, size_t len)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct timeval tv = { 0, SEND_TIMEOUT_MS * 1000 };
    ssize_t n;

    if (dg->fd < 0) {
        dg->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        if (dg->fd < 0)
            goto fail;
        setsockopt(dg->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", dg->path);
        if (connect(dg->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
            goto fail_close;
    }
    do
        n = send(dg->fd, p, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n >= 0)
        return;
    if (errno == EAGAIN)        /* the reader is behind: the line is lost, the socket fine */
        goto fail;
fail_close:
    close(dg->fd);
    dg->fd = -1;
fail:
    cg_log_ratelimited(&sink_log, CG_LOG_WARN, "access log: %s %s: %s (lines lost)", what,
                       dg->path, strerror(errno));
}

/* RFC 3164, as glibc's syslog(3) writes it to /dev/log: <PRI>TIMESTAMP TAG[PID]: MSG,
 * facility local0 (16), severity info (6). */
static void to_syslog(struct cg_alog *a, const char *line, size_t len)
{
    char buf[LINE_MAX_BYTES + 64], ts[32];
    time_t now = time(NULL);
    struct tm tm;
    int n;

    localtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%b %e %H:%M:%S", &tm);
    n = snprintf(buf, sizeof(buf), "<%d>%s corogate[%ld]: %.*s", 16 * 8 + 6, ts,
                 (long)getpid(), (int)len, line);
    if (n > 0)
        dgram_send(&a->syslog, "syslog", buf, (size_t)n < sizeof(buf) ? (size_t)n
                                                                      : sizeof(buf) - 1);
}

/* journald's native protocol (systemd's sd_journal_send(3) on the wire): one datagram of
 * KEY=VALUE lines; no value here holds a newline, so none needs the binary form. */
static void to_journal(struct cg_alog *a, const struct cg_alog_rec *r, const char *line,
                       size_t len)
{
    char buf[LINE_MAX_BYTES * 2], addr[INET6_ADDRSTRLEN], tmp[CG_ALOG_ID_MAX];
    size_t n = 0;

    fmt_addr(r, addr, sizeof(addr));
    put(buf, sizeof(buf), &n, "MESSAGE=%.*s\nPRIORITY=6\nSYSLOG_FACILITY=16\n"
        "SYSLOG_IDENTIFIER=corogate\nCOROGATE_EVENT=connection\n", (int)len, line);
    put(buf, sizeof(buf), &n, "CLIENT_ADDR=%s\nCLIENT_PORT=%u\nLISTENER=%s\nWORKER=%u\n",
        addr, r->client_port, clean(r->listener, tmp, sizeof(tmp)), r->worker);
    if (r->upstream[0])
        put(buf, sizeof(buf), &n, "UPSTREAM=%s\n", clean(r->upstream, tmp, sizeof(tmp)));
    if (r->server[0])
        put(buf, sizeof(buf), &n, "SERVER=%s\n", clean(r->server, tmp, sizeof(tmp)));
    put(buf, sizeof(buf), &n, "HANDSHAKE_MS=%lld\nCONNECT_MS=%lld\nDURATION_MS=%lld\n"
        "BYTES_IN=%" PRIu64 "\nBYTES_OUT=%" PRIu64 "\nTERMINATION=%s\n", dur(r->hs_ms),
        dur(r->connect_ms), dur(r->total_ms), r->bytes_in, r->bytes_out, r->term);
    if (r->websocket) {
        put(buf, sizeof(buf), &n, "MSGS_IN=%u\nMSGS_OUT=%u\n", r->msgs_in, r->msgs_out);
        if (r->close_client)
            put(buf, sizeof(buf), &n, "WS_CLOSE_CLIENT=%u\n", r->close_client);
        if (r->close_server)
            put(buf, sizeof(buf), &n, "WS_CLOSE_SERVER=%u\n", r->close_server);
    }
    if (r->request_id[0])
        put(buf, sizeof(buf), &n, "REQUEST_ID=%s\n", clean(r->request_id, tmp, sizeof(tmp)));
    dgram_send(&a->journal, "journal", buf, n);
}

static void write_rec(struct cg_alog *a, const struct cg_alog_rec *r)
{
    char line[LINE_MAX_BYTES];
    size_t len = cg_alog_format(r, line, sizeof(line));

    switch (r->sink) {
    case CG_ALOG_STDERR:
        to_stderr(a, line, len);
        break;
    case CG_ALOG_SYSLOG:
        to_syslog(a, line, len);
        break;
    case CG_ALOG_JOURNAL:
        to_journal(a, r, line, len);
        break;
    default:
        return;
    }
    atomic_fetch_add_explicit(&a->written, 1, memory_order_relaxed);
}

/* ------------------------------------------------------------------ the writer */

/* Takes up to PASS_MAX records from every ring. Returns how many were taken. */
static unsigned pass(struct cg_alog *a)
{
    unsigned i, k, taken = 0;

    for (i = 0; i < a->nrings; i++) {
        struct ring *rg = &a->rings[i];
        uint64_t tail = atomic_load_explicit(&rg->tail, memory_order_relaxed);
        uint64_t head = atomic_load_explicit(&rg->head, memory_order_acquire);

        for (k = 0; k < PASS_MAX && tail != head; k++, tail++)
            write_rec(a, &rg->slots[tail % a->cap]);
        /* The slots are the worker's again only once written out. */
        atomic_store_explicit(&rg->tail, tail, memory_order_release);
        taken += k;
    }
    if (a->batch_len)
        flush_stderr(a);
    return taken;
}

static int rings_empty(struct cg_alog *a)
{
    unsigned i;

    for (i = 0; i < a->nrings; i++)
        if (atomic_load(&a->rings[i].head) != atomic_load(&a->rings[i].tail))
            return 0;
    return 1;
}

/* Honours the pause hook. Returns once not paused (or stopping). */
static void pause_point(struct cg_alog *a)
{
    pthread_mutex_lock(&a->lock);
    if (a->pause_ack != a->pause_req) {
        a->pause_ack = a->pause_req;
        pthread_cond_broadcast(&a->cond);
    }
    while (a->pause_req && !atomic_load(&a->stop))
        pthread_cond_wait(&a->cond, &a->lock);
    if (a->pause_ack != a->pause_req) {
        a->pause_ack = a->pause_req;
        pthread_cond_broadcast(&a->cond);
    }
    pthread_mutex_unlock(&a->lock);
}

static void *writer_main(void *arg)
{
    struct cg_alog *a = arg;
    struct pollfd pfd = { .fd = a->efd, .events = POLLIN };
    unsigned idle = 0, n;
    int deep;
    uint64_t v;

    cg_log_set_worker(-1);
    for (;;) {
        pause_point(a);
        n = pass(a);
        if (atomic_load(&a->stop)) {
            if (!n)
                break;
            continue;
        }
        idle = n ? 0 : idle + 1;
        deep = idle >= DEEP_AFTER;
        /* Asleep: Dekker with cg_alog_push(), which stores head then reads sleeping while
         * we store sleeping then read the heads: one of us sees the other. Napping needs
         * no such care: the nap ends by itself. */
        atomic_store(&a->sleeping, deep ? ASLEEP : NAPPING);
        if (deep && !rings_empty(a)) {
            atomic_store(&a->sleeping, AWAKE);
            continue;
        }
        if (poll(&pfd, 1, deep ? -1 : NAP_MS) > 0)
            while (read(a->efd, &v, sizeof(v)) < 0 && errno == EINTR)
                ;
        atomic_store(&a->sleeping, AWAKE);
    }
    return NULL;
}

static void wake(struct cg_alog *a)
{
    uint64_t one = 1;
    ssize_t n;

    do
        n = write(a->efd, &one, sizeof(one));
    while (n < 0 && errno == EINTR);
}

struct cg_alog *cg_alog_new(unsigned nworkers, const struct cg_alog_conf *conf)
{
    struct cg_alog *a = calloc(1, sizeof(*a));
    unsigned i;
    int err;

    if (!a)
        return NULL;
    a->efd = -1;
    a->syslog.fd = a->journal.fd = -1;
    snprintf(a->syslog_path, sizeof(a->syslog_path), "%s",
             conf->syslog_path && conf->syslog_path[0] ? conf->syslog_path : DEFAULT_SYSLOG);
    snprintf(a->journal_path, sizeof(a->journal_path), "%s",
             conf->journal_path && conf->journal_path[0] ? conf->journal_path
                                                         : DEFAULT_JOURNAL);
    a->syslog.path = a->syslog_path;
    a->journal.path = a->journal_path;
    a->cap = conf->queue ? conf->queue : 1;
    a->nrings = nworkers;
    a->rings = calloc(nworkers ? nworkers : 1, sizeof(*a->rings));
    if (!a->rings)
        goto out_nomem;
    for (i = 0; i < nworkers; i++) {
        a->rings[i].slots = calloc(a->cap, sizeof(struct cg_alog_rec));
        if (!a->rings[i].slots)
            goto out_nomem;
    }
    a->efd = eventfd(0, EFD_CLOEXEC);
    if (a->efd < 0)
        goto out_errno;
    pthread_mutex_init(&a->lock, NULL);
    pthread_cond_init(&a->cond, NULL);
    err = pthread_create(&a->thread, NULL, writer_main, a);
    if (err) {
        pthread_cond_destroy(&a->cond);
        pthread_mutex_destroy(&a->lock);
        errno = err;
        goto out_errno;
    }
    return a;

out_nomem:
    errno = ENOMEM;
out_errno:
    err = errno;
    if (a->efd >= 0)
        close(a->efd);
    for (i = 0; a->rings && i < nworkers; i++)
        free(a->rings[i].slots);
    free(a->rings);
    free(a);
    errno = err;
    return NULL;
}

void cg_alog_free(struct cg_alog *a)
{
    unsigned i;

    if (!a)
        return;
    atomic_store(&a->stop, 1);
    pthread_mutex_lock(&a->lock);
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    wake(a);
    pthread_join(a->thread, NULL);
    pthread_cond_destroy(&a->cond);
    pthread_mutex_destroy(&a->lock);
    close(a->efd);
    if (a->syslog.fd >= 0)
        close(a->syslog.fd);
    if (a->journal.fd >= 0)
        close(a->journal.fd);
    for (i = 0; i < a->nrings; i++)
        free(a->rings[i].slots);
    free(a->rings);
    free(a);
}

int cg_alog_push(struct cg_alog *a, unsigned worker, const struct cg_alog_rec *rec)
{
    struct ring *rg = &a->rings[worker];
    uint64_t head = atomic_load_explicit(&rg->head, memory_order_relaxed);

    uint64_t fill = head - atomic_load_explicit(&rg->tail, memory_order_acquire);
    int state;

    if (fill >= a->cap)
        return -ENOBUFS;
    rg->slots[head % a->cap] = *rec;
    atomic_store(&rg->head, head + 1);          /* seq_cst: see writer_main() */
    /* Asleep, it must be woken; napping, only when the ring is half full already. */
    state = atomic_load(&a->sleeping);
    if ((state == ASLEEP || (state == NAPPING && 2 * (fill + 1) >= a->cap)) &&
        atomic_exchange(&a->sleeping, AWAKE) != AWAKE)
        wake(a);
    return 0;
}

void cg_alog_pause(struct cg_alog *a, int paused)
{
    pthread_mutex_lock(&a->lock);
    a->pause_req = !!paused;
    pthread_cond_broadcast(&a->cond);
    pthread_mutex_unlock(&a->lock);
    wake(a);
    pthread_mutex_lock(&a->lock);
    while (a->pause_ack != a->pause_req)
        pthread_cond_wait(&a->cond, &a->lock);
    pthread_mutex_unlock(&a->lock);
}

uint64_t cg_alog_written(const struct cg_alog *a)
{
    return a ? atomic_load_explicit(&((struct cg_alog *)a)->written, memory_order_relaxed)
             : 0;
}
