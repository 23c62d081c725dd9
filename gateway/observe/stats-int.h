/* gateway/observe/stats-int.h — what the stats socket's three files share: the server and
 * its clients (stats.c), the commands (stats-commands.c), and the requests that need the
 * workers' own view, such as `show coros` (stats-coros.c). Not for use outside them. */
#ifndef CG_STATS_INT_H
#define CG_STATS_INT_H

#include <llhttp.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "config/config.h"
#include "core/worker.h"
#include "observe/metrics.h"

#ifndef CG_VERSION
#define CG_VERSION "0.0.0"
#endif

#define LINE_MAX_BYTES  4096            /* longest command line, newline included */
#define OUT_HIGH        (64u * 1024)    /* take no command while more than this waits */
#define REPLY_MAX       (32u << 20)     /* largest answer we render */
#define CALL_TIMEOUT_MS 2000            /* workers' share of `show coros` */
#define COROS_DEFAULT   10
#define COROS_MAX       1000
#define URL_MAX         1024
#define HTTP_REQ_MAX    (16u * 1024)    /* request line and headers */
#define LISTEN_BACKLOG  511

struct client;

/* One worker's part of a `show coros`. */
struct coro_item {
    uint64_t    id;
    const char *name;           /* static strings of the coroutine runtime */
    const char *reason;
    int         state;
    uint64_t    parked_ms;
    uint64_t    age_ms;
    size_t      stack_saved;
    int         stalled;        /* parked at least coro_stall_threshold */
    const void *arg;            /* compared only, dereferenced on the worker's thread */
    char        label[256];     /* filled when arg is a connection of the worker */
};

struct coros_call {
    struct cg_wcall     call;       /* first: the worker gets &call */
    struct cg_stats    *st;
    struct coros_req   *req;        /* main thread only; NULL once abandoned */
    struct coros_call  *next_done;  /* on st->done, under st->lock */
    unsigned            worker;
    unsigned            want;
    struct cg_coro_census census;   /* results, written by the worker */
    unsigned            n;
    struct coro_item    items[];
};

/* What a request to the workers answers. */
enum req_kind {
    REQ_COROS,          /* show coros */
    REQ_STATS,          /* show stats */
    REQ_METRICS,        /* show metrics */
    REQ_HTTP,           /* GET (or HEAD) /metrics */
};

struct coros_req {
    struct client      *c;
    int                 kind;       /* enum req_kind */
    int                 head;       /* REQ_HTTP: a HEAD request */
    unsigned            nparts;
    unsigned            waiting;
    unsigned            want;
    struct coros_call **parts;      /* [nparts]; NULL where the worker had stopped */
    unsigned char      *back;       /* [nparts]: 1 once that part came back */
};

struct wreq {
    uv_write_t      req;
    struct client  *c;
    size_t          len;
    char           *data;           /* owned */
};

struct client {
    union {
        uv_handle_t h;
        uv_stream_t s;
        uv_pipe_t   pipe;
        uv_tcp_t    tcp;
    } u;
    uv_timer_t        timer;
    struct cg_stats  *st;
    struct client    *prev, *next;
    struct coros_req *req;          /* a command waiting for the workers */
    size_t            queued;       /* bytes in writes not yet completed */
    int               handles;      /* open handles; freed at 0 */
    uint8_t           http;
    uint8_t           closing;
    uint8_t           reading;
    uint8_t           prompt;
    uint8_t           eof;          /* the client shut its side down */
    uint8_t           quit;         /* close once every answer is written */
    uint8_t           skipping;     /* dropping the rest of an over-long line */
    size_t            inlen;
    char              in[LINE_MAX_BYTES];
    /* HTTP only */
    llhttp_t          parser;
    size_t            req_bytes;
    size_t            urllen;
    char              url[URL_MAX];
};

struct cg_stats {
    uv_loop_t          *loop;
    struct cg_runtime  *rt;
    uv_pipe_t           unix_srv;
    uv_tcp_t            http_srv;
    uv_async_t          replies;
    uv_mutex_t          lock;
    struct coros_call  *done;       /* under lock */
    struct client      *clients;
    llhttp_settings_t   http_settings;
    unsigned            nclients;
    unsigned            outstanding;    /* coros parts not yet back (main thread) */
    int                 handles;        /* open server handles (unix, http, async) */
    int                 async_open;
    int                 stopping;
    int                 own_path;       /* the socket file is ours to remove */
    dev_t               dev;
    ino_t               ino;
    char                path[CG_CONF_SOCKPATH_MAX];
};

static inline uint64_t cg_stats__now_ms(void)
{
    return uv_hrtime() / 1000000;
}

/* The files of the stats socket, from the top: stats.c (the server, its clients, their
 * input and output) runs commands (stats-commands.c), which, like stats.c's /metrics, may
 * need the workers (stats-coros.c). Neither of those two writes to a client: they fill a
 * buffer and say what stats.c is to do with it. */

/* stats-commands.c: runs the command <line> (modified) of <c> into <b>, which it
 * initialises. Returns what the caller does with <b>: */
enum {
    CG_STATS_ANSWER,    /* an answer: send it with its blank line (and the prompt) */
    CG_STATS_RAW,       /* send it as it is (an empty line's prompt) */
    CG_STATS_NONE,      /* nothing now: quit, or the workers were asked (c->req) and
                         * stats.c answers once they are back; <b> is only freed */
};
int cg_stats__run_command(struct client *c, char *line, struct cg_sbuf *b);

/* stats-coros.c: requests answered with the workers' help */
int cg_stats__cmd_coros(struct client *c, char **argv, int argc, struct cg_sbuf *b);
/* Asks every worker for its part of a <kind> answer for <c> (<want> coroutines listed, for
 * show coros; <head>: an HTTP HEAD). Returns 1 when <c> now waits for them (c->req; each
 * part comes back on st->done, st->replies wakes stats.c, which renders the answer with
 * cg_stats__render_req()), or 0 when the answer is in <b> already: every worker had
 * stopped, or memory ran out (metrics are then rendered without the workers' coroutine
 * counts). */
int cg_stats__start_req(struct client *c, int kind, int head, unsigned want, struct cg_sbuf *b);
/* Renders the answer of <r> into <b> from the parts that came back, and frees <r>; parts
 * still out are left to be freed when they arrive. Returns 0, or -ENOBUFS when the answer
 * did not fit (or memory ran out). */
int cg_stats__render_req(struct coros_req *r, struct cg_sbuf *b);

#endif
