/* gateway/observe/stats.c — the stats socket server and the /metrics HTTP listener; the
 * commands are stats-commands.c, the requests that need the workers stats-coros.c.
 *
 * Everything here runs on the main thread. A client is a uv stream (a pipe for the stats
 * socket, TCP for /metrics) plus a timer; both are closed together and the client freed
 * when the second close callback ran. Answers are rendered whole into a buffer (bounded by
 * REPLY_MAX) and handed to uv_write(); the client is not read again while more than
 * OUT_HIGH bytes of answers wait, so a client that does not read holds at most one answer
 * and a line of input, and its timer closes it after stats_timeout without a completed
 * write.
 *
 * `show coros`, `show stats`, `show metrics` and GET /metrics need the workers: only a
 * worker may walk its coroutines (to list them, or to count those stalled for metrics). One
 * request per worker goes through cg_worker_call(); each worker fills its part on its own
 * thread and pushes it on our `done` list, guarded by a mutex, with a uv_async_send(). The
 * answer is written when all parts are back or after CALL_TIMEOUT_MS, whichever comes
 * first (a worker that did not answer is shown without its coroutines); parts arriving
 * after that, or after their client went away, are freed on arrival. The server itself is
 * freed only when no part is outstanding.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "guard/admission.h"
#include "guard/breaker.h"
#include "coro/coro.h"
#include "coro/io.h"
#include "coro/list.h"
#include "base/log.h"
#include "core/conn.h"
#include "core/gen.h"
#include "observe/schedlat.h"
#include "observe/stats.h"
#include "observe/stats-int.h"
#include "core/upstream.h"
#include "core/worker.h"


static void on_timer(uv_timer_t *t);
static void http_feed(struct client *c, const char *data, size_t len);
static void client_close(struct client *c);
static void client_process(struct client *c);
static void http_metrics_reply(struct client *c, struct cg_sbuf *body, int err, int head);
static void maybe_free(struct cg_stats *st);

/* ------------------------------------------------------------------ output */



/* Restarts <c>'s deadline: stats_timeout from now, or the workers' deadline while a
 * command waits for them. */
static void client_touch(struct client *c)
{
    uint64_t ms = c->st->rt->d->cfg->gw.stats_timeout_ms;

    if (c->closing)
        return;
    uv_timer_start(&c->timer, on_timer, c->req ? CALL_TIMEOUT_MS : ms, 0);
}

static void on_written(uv_write_t *req, int status)
{
    struct wreq *wr = req->data;
    struct client *c = wr->c;

    c->queued -= wr->len;
    free(wr->data);
    free(wr);
    if (status < 0) {
        client_close(c);
        return;
    }
    client_touch(c);
    client_process(c);
}

/* Queues the bytes of <b> for <c>, taking them (b is left empty). */
static void client_send(struct client *c, struct cg_sbuf *b)
{
    struct wreq *wr;
    uv_buf_t buf;

    if (c->closing || b->len == 0) {
        cg_sbuf_deinit(b);
        return;
    }
    wr = malloc(sizeof(*wr));
    if (!wr) {
        cg_sbuf_deinit(b);
        client_close(c);
        return;
    }
    wr->c = c;
    wr->len = b->len;
    wr->data = b->p;
    wr->req.data = wr;
    b->p = NULL;
    cg_sbuf_deinit(b);
    buf = uv_buf_init(wr->data, (unsigned)wr->len);
    c->queued += wr->len;
    if (uv_write(&wr->req, &c->u.s, &buf, 1, on_written) < 0) {
        c->queued -= wr->len;
        free(wr->data);
        free(wr);
        client_close(c);
    }
}

/* Ends an answer: the blank line, then the prompt in interactive mode; and sends it. */
static void client_answer(struct client *c, struct cg_sbuf *b)
{
    if (b->overflow) {
        cg_sbuf_deinit(b);
        cg_sbuf_printf(b, "error: the answer is larger than %u bytes\n", REPLY_MAX);
    }
    if (b->len == 0 || b->p[b->len - 1] != '\n')
        cg_sbuf_add(b, "\n", 1);
    cg_sbuf_add(b, "\n", 1);
    if (c->prompt)
        cg_sbuf_add(b, "> ", 2);
    client_send(c, b);
}

/* Ends <c>'s request to the workers (c->req) with what came back: the answer (unless <c>
 * is closing), then <c>'s deadline restarts and its next command may run. */
static void finish_req(struct client *c)
{
    struct coros_req *r = c->req;
    int kind = r->kind, head = r->head, err;
    struct cg_sbuf b;

    c->req = NULL;
    cg_sbuf_init(&b, REPLY_MAX);
    err = cg_stats__render_req(r, &b);
    if (c->closing) {
        cg_sbuf_deinit(&b);
        return;
    }
    if (kind == REQ_HTTP)
        http_metrics_reply(c, &b, err, head);
    else
        client_answer(c, &b);
    client_touch(c);
    client_process(c);
}

/* The workers' parts are back (stats-coros.c queued them on st->done): a request whose
 * last part this is gets its answer, and its client's next command may run. */
static void on_replies(uv_async_t *a)
{
    struct cg_stats *st = a->data;
    struct coros_call *list, *cc;

    uv_mutex_lock(&st->lock);
    list = st->done;
    st->done = NULL;
    uv_mutex_unlock(&st->lock);
    while ((cc = list)) {
        struct coros_req *r = cc->req;

        list = cc->next_done;
        st->outstanding--;
        if (!r) {
            free(cc);
            continue;
        }
        r->back[cc->worker] = 1;
        if (--r->waiting == 0)
            finish_req(r->c);
    }
    maybe_free(st);
}

/* Runs the command <line> of <c> and sends what it says to send. */
static void run_line(struct client *c, char *line)
{
    struct cg_sbuf b;

    switch (cg_stats__run_command(c, line, &b)) {
    case CG_STATS_ANSWER:
        client_answer(c, &b);
        break;
    case CG_STATS_RAW:
        client_send(c, &b);
        break;
    default:
        cg_sbuf_deinit(&b);
        if (c->req)
            client_touch(c);    /* the workers' deadline, not stats_timeout */
        break;
    }
}

/* ------------------------------------------------------------------ clients */

static void on_client_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    struct cg_stats *st = c->st;

    if (--c->handles > 0)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        st->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    st->nclients--;
    st->rt->stats_clients = st->nclients;
    free(c);
    maybe_free(st);
}

/* Answers with what came back (if the client still listens); late parts are freed when
 * they arrive. */

static void client_close(struct client *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    if (c->req)
        finish_req(c);
    uv_close(&c->u.h, on_client_closed);
    uv_close((uv_handle_t *)&c->timer, on_client_closed);
}

static void on_timer(uv_timer_t *t)
{
    struct client *c = t->data;
    struct cg_stats *st = c->st;
    char ms[32];

    if (c->req) {
        finish_req(c);          /* answers with what came back */
        return;
    }
    st->rt->stats_timeouts++;
    cg_info("stats client closed: %s for %s", c->queued ? "not reading its answers" : "idle",
            cg_format_duration(st->rt->d->cfg->gw.stats_timeout_ms, ms, sizeof(ms)));
    client_close(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    struct client *c = h->data;
    static char http_scratch[4096];

    if (c->http) {
        /* The parser keeps nothing of the bytes after its callbacks; main thread only. */
        *buf = uv_buf_init(http_scratch, sizeof(http_scratch));
        return;
    }
    *buf = uv_buf_init(c->in + c->inlen, (unsigned)(sizeof(c->in) - c->inlen));
}


static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    struct client *c = s->data;

    if (n == 0)
        return;
    if (n < 0) {
        c->eof = 1;
        if (n != UV_EOF) {
            client_close(c);
            return;
        }
        uv_read_stop(s);
        c->reading = 0;
        if (c->http) {
            client_close(c);
            return;
        }
        client_process(c);
        return;
    }
    client_touch(c);
    if (c->http) {
        http_feed(c, buf->base, (size_t)n);
        return;
    }
    c->inlen += (size_t)n;
    client_process(c);
}

/* Reads from <c> only while it may send a command that we would take now. */
static void client_update_reading(struct client *c)
{
    int want = !c->closing && !c->eof && !c->quit && !c->req && c->queued <= OUT_HIGH &&
               c->inlen < sizeof(c->in);

    if (want && !c->reading) {
        if (uv_read_start(&c->u.s, on_alloc, on_read) == 0)
            c->reading = 1;
    } else if (!want && c->reading) {
        uv_read_stop(&c->u.s);
        c->reading = 0;
    }
}

/* Takes the complete lines of <c>'s input while it may (no command waiting for workers,
 * little output waiting for the client), then decides whether to read on or close. */
static void client_process(struct client *c)
{
    char *nl, line[LINE_MAX_BYTES + 1];
    size_t n;

    if (c->closing)
        return;
    if (c->http) {
        if (c->quit && c->queued == 0)
            client_close(c);
        return;
    }
    while (!c->closing && !c->req && !c->quit && c->queued <= OUT_HIGH) {
        nl = memchr(c->in, '\n', c->inlen);
        if (!nl) {
            if (c->inlen == sizeof(c->in)) {
                c->skipping = 1;            /* over-long: drop it, answer at its end */
                c->inlen = 0;
                continue;
            }
            if (!c->eof || c->inlen == 0)
                break;
            nl = c->in + c->inlen;          /* the last line, without its newline */
        }
        n = (size_t)(nl - c->in);
        memcpy(line, c->in, n);
        line[n] = '\0';
        if (n < c->inlen)
            n++;
        memmove(c->in, c->in + n, c->inlen - n);
        c->inlen -= n;
        if (c->skipping) {
            struct cg_sbuf b;

            c->skipping = 0;
            cg_sbuf_init(&b, REPLY_MAX);
            cg_sbuf_printf(&b, "error: line too long (at most %d bytes)\n",
                           LINE_MAX_BYTES - 1);
            client_answer(c, &b);
            continue;
        }
        run_line(c, line);
    }
    if (c->closing)
        return;
    if (c->eof && !c->req && c->inlen == 0)
        c->quit = 1;
    if (c->quit && !c->req && c->queued == 0) {
        client_close(c);
        return;
    }
    client_update_reading(c);
}

/* ------------------------------------------------------------------ HTTP /metrics */

static int on_http_url(llhttp_t *p, const char *at, size_t len)
{
    struct client *c = p->data;

    if (c->urllen + len >= sizeof(c->url))
        return -1;
    memcpy(c->url + c->urllen, at, len);
    c->urllen += len;
    c->url[c->urllen] = '\0';
    return 0;
}

static int on_http_complete(llhttp_t *p)
{
    return HPE_PAUSED;      /* one request per connection: answer it, then close */
}

static void http_reply(struct client *c, const char *status, const char *extra,
                       const char *ctype, struct cg_sbuf *body, int head)
{
    struct cg_sbuf b;

    cg_sbuf_init(&b, REPLY_MAX + 1024);
    cg_sbuf_printf(&b, "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                   "Connection: close\r\n%s\r\n", status, ctype, body->len, extra);
    if (!head && body->len)
        cg_sbuf_add(&b, body->p, body->len);
    cg_sbuf_deinit(body);
    c->quit = 1;
    if (c->reading) {
        uv_read_stop(&c->u.s);
        c->reading = 0;
    }
    if (b.overflow) {
        cg_sbuf_deinit(&b);
        client_close(c);
        return;
    }
    client_send(c, &b);
}

static void http_feed(struct client *c, const char *data, size_t len)
{
    static const char text[] = "text/plain; charset=utf-8";
    struct cg_sbuf body;
    llhttp_errno_t err;
    char *q;
    int m;

    if (c->quit || c->req)
        return;
    c->req_bytes += len;
    err = llhttp_execute(&c->parser, data, len);
    cg_sbuf_init(&body, REPLY_MAX);
    if (err == HPE_OK) {
        if (c->req_bytes <= HTTP_REQ_MAX)
            return;
        cg_sbuf_printf(&body, "request too large\n");
        http_reply(c, "431 Request Header Fields Too Large", "", text, &body, 0);
        return;
    }
    if (err != HPE_PAUSED) {
        cg_sbuf_printf(&body, "bad request: %s\n", llhttp_errno_name(err));
        http_reply(c, "400 Bad Request", "", text, &body, 0);
        return;
    }
    m = llhttp_get_method(&c->parser);
    q = strchr(c->url, '?');
    if (q)
        *q = '\0';
    if (m != HTTP_GET && m != HTTP_HEAD) {
        cg_sbuf_printf(&body, "method not allowed: use GET\n");
        http_reply(c, "405 Method Not Allowed", "Allow: GET, HEAD\r\n", text, &body, 0);
    } else if (strcmp(c->url, "/metrics") != 0) {
        cg_sbuf_printf(&body, "not found: metrics are at /metrics\n");
        http_reply(c, "404 Not Found", "", text, &body, m == HTTP_HEAD);
    } else {
        if (c->reading) {           /* one request per connection: nothing more to read */
            uv_read_stop(&c->u.s);
            c->reading = 0;
        }
        if (!cg_stats__start_req(c, REQ_HTTP, m == HTTP_HEAD, 0, &body)) {
            http_metrics_reply(c, &body, body.overflow ? -ENOBUFS : 0, m == HTTP_HEAD);
        } else {
            cg_sbuf_deinit(&body);  /* answered when the workers are back */
            client_touch(c);        /* ... or at the workers' deadline */
        }
    }
}

/* Answers GET /metrics with <body> (taken), or 500 when rendering failed with <err>. */
static void http_metrics_reply(struct client *c, struct cg_sbuf *body, int err, int head)
{
    if (err < 0) {
        cg_sbuf_deinit(body);
        cg_sbuf_printf(body, "metrics larger than %u bytes\n", REPLY_MAX);
        http_reply(c, "500 Internal Server Error", "", "text/plain; charset=utf-8", body, 0);
        return;
    }
    http_reply(c, "200 OK", "", "text/plain; version=0.0.4; charset=utf-8", body, head);
}

/* ------------------------------------------------------------------ accepting */

static void on_connection(uv_stream_t *server, int status)
{
    struct cg_stats *st = server->data;
    int http = server == (uv_stream_t *)&st->http_srv;
    struct client *c;
    int err;

    if (status < 0) {
        cg_warn("stats: accept: %s", uv_strerror(status));
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        cg_error("stats: cannot take a client: out of memory");
        return;
    }
    c->st = st;
    c->http = (uint8_t)http;
    err = http ? uv_tcp_init(st->loop, &c->u.tcp) : uv_pipe_init(st->loop, &c->u.pipe, 0);
    if (err < 0) {
        free(c);
        return;
    }
    uv_timer_init(st->loop, &c->timer);
    c->u.h.data = c;
    c->timer.data = c;
    c->handles = 2;
    c->next = st->clients;
    if (st->clients)
        st->clients->prev = c;
    st->clients = c;
    st->nclients++;
    st->rt->stats_clients = st->nclients;
    err = uv_accept(server, &c->u.s);
    if (err < 0) {
        cg_warn("stats: accept: %s", uv_strerror(err));
        client_close(c);
        return;
    }
    if (st->nclients > st->rt->d->cfg->gw.stats_max_clients) {
        static const char msg[] = "error: too many stats clients; try again later\n\n";
        uv_buf_t buf = uv_buf_init((char *)msg, sizeof(msg) - 1);

        st->rt->stats_refused++;
        if (!http)
            uv_try_write(&c->u.s, &buf, 1);
        client_close(c);
        return;
    }
    st->rt->stats_accepted++;
    if (http) {
        llhttp_init(&c->parser, HTTP_REQUEST, &st->http_settings);
        c->parser.data = c;
        uv_tcp_nodelay(&c->u.tcp, 1);
    }
    client_touch(c);
    client_update_reading(c);
}

static void on_server_closed(uv_handle_t *h)
{
    struct cg_stats *st = h->data;

    st->handles--;
    maybe_free(st);
}

static void maybe_free(struct cg_stats *st)
{
    if (!st->stopping)
        return;
    if (st->outstanding == 0 && st->async_open) {
        st->async_open = 0;
        uv_close((uv_handle_t *)&st->replies, on_server_closed);
        return;
    }
    if (st->handles > 0 || st->nclients > 0 || st->outstanding > 0)
        return;
    uv_mutex_destroy(&st->lock);
    free(st);
}

/* Is the socket at <path> in use? 0: stale (connect refused), 1: someone accepts on it,
 * negative errno: cannot tell. */
static int socket_in_use(const char *path)
{
    struct sockaddr_un sun;
    int fd, err = 0;

    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == 0 || errno == EAGAIN)
        err = 1;
    else if (errno != ECONNREFUSED)
        err = -errno;
    close(fd);
    return err;
}

static int open_unix(struct cg_stats *st)
{
    const struct cg_gateway_conf *gw = &st->rt->d->cfg->gw;
    const char *path = gw->stats_socket;
    struct stat sb;
    mode_t old;
    int err;

    snprintf(st->path, sizeof(st->path), "%s", path);
    if (lstat(path, &sb) == 0) {
        if (!S_ISSOCK(sb.st_mode)) {
            cg_error("stats socket %s: the path exists and is not a socket; not replacing it",
                     path);
            return -EEXIST;
        }
        err = socket_in_use(path);
        if (err == 1) {
            cg_error("stats socket %s: a process accepts connections on it (another "
                     "corogate?); not replacing it", path);
            return -EADDRINUSE;
        }
        if (err < 0) {
            cg_error("stats socket %s: connect() to the existing socket: %s; not replacing it",
                     path, strerror(-err));
            return err;
        }
        if (unlink(path) < 0) {
            err = -errno;
            cg_error("stats socket %s: unlink() of the stale socket: %s", path, strerror(-err));
            return err;
        }
        cg_notice("stats socket %s: removed a stale socket", path);
    } else if (errno != ENOENT) {
        err = -errno;
        cg_error("stats socket %s: lstat(): %s", path, strerror(-err));
        return err;
    }
    err = uv_pipe_init(st->loop, &st->unix_srv, 0);
    if (err < 0)
        return err;
    st->unix_srv.data = st;
    st->handles++;
    /* Nobody may connect before the mode is set: bind under 0177, then chmod. */
    old = umask(0177);
    err = uv_pipe_bind(&st->unix_srv, path);
    umask(old);
    if (err < 0) {
        cg_error("stats socket %s: bind(): %s", path, uv_strerror(err));
        return err;
    }
    if (lstat(path, &sb) == 0) {
        st->own_path = 1;
        st->dev = sb.st_dev;
        st->ino = sb.st_ino;
    }
    if ((gw->stats_socket_uid != (uid_t)-1 || gw->stats_socket_gid != (gid_t)-1) &&
        lchown(path, gw->stats_socket_uid, gw->stats_socket_gid) < 0) {
        err = -errno;
        cg_error("stats socket %s: chown(%d, %d): %s", path, (int)gw->stats_socket_uid,
                 (int)gw->stats_socket_gid, strerror(-err));
        return err;
    }
    if (chmod(path, gw->stats_socket_mode) < 0) {
        err = -errno;
        cg_error("stats socket %s: chmod(%04o): %s", path, gw->stats_socket_mode,
                 strerror(-err));
        return err;
    }
    err = uv_listen((uv_stream_t *)&st->unix_srv, LISTEN_BACKLOG, on_connection);
    if (err < 0) {
        cg_error("stats socket %s: listen(): %s", path, uv_strerror(err));
        return err;
    }
    cg_notice("stats socket: %s (mode %04o)", path, gw->stats_socket_mode);
    return 0;
}

static int open_http(struct cg_stats *st)
{
    const struct cg_gateway_conf *gw = &st->rt->d->cfg->gw;
    int err;

    llhttp_settings_init(&st->http_settings);
    st->http_settings.on_url = on_http_url;
    st->http_settings.on_message_complete = on_http_complete;
    err = uv_tcp_init(st->loop, &st->http_srv);
    if (err < 0)
        return err;
    st->http_srv.data = st;
    st->handles++;
    err = uv_tcp_bind(&st->http_srv, (const struct sockaddr *)&gw->metrics_addr, 0);
    if (err == 0)
        err = uv_listen((uv_stream_t *)&st->http_srv, LISTEN_BACKLOG, on_connection);
    if (err < 0) {
        cg_error("metrics_listen %s: %s", gw->metrics_listen, uv_strerror(err));
        return err;
    }
    cg_notice("metrics: http://%s/metrics", gw->metrics_listen);
    return 0;
}

int cg_stats_start(uv_loop_t *loop, struct cg_runtime *rt, struct cg_stats **out)
{
    struct cg_stats *st;
    int err;

    *out = NULL;
    st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->loop = loop;
    st->rt = rt;
    uv_mutex_init(&st->lock);
    err = uv_async_init(loop, &st->replies, on_replies);
    if (err < 0) {
        uv_mutex_destroy(&st->lock);
        free(st);
        return err;
    }
    st->replies.data = st;
    st->async_open = 1;
    st->handles++;
    err = open_unix(st);
    if (err == 0 && rt->d->cfg->gw.metrics_listen[0])
        err = open_http(st);
    if (err < 0) {
        cg_stats_stop(st);
        return err;
    }
    *out = st;
    return 0;
}

void cg_stats_stop(struct cg_stats *st)
{
    struct stat sb;
    struct client *c, *next;

    if (!st || st->stopping)
        return;
    st->stopping = 1;
    if (st->own_path && lstat(st->path, &sb) == 0 && sb.st_dev == st->dev &&
        sb.st_ino == st->ino)
        unlink(st->path);
    st->own_path = 0;
    if (st->unix_srv.loop && !uv_is_closing((uv_handle_t *)&st->unix_srv))
        uv_close((uv_handle_t *)&st->unix_srv, on_server_closed);
    if (st->http_srv.loop && !uv_is_closing((uv_handle_t *)&st->http_srv))
        uv_close((uv_handle_t *)&st->http_srv, on_server_closed);
    for (c = st->clients; c; c = next) {
        next = c->next;
        client_close(c);
    }
    maybe_free(st);
}
