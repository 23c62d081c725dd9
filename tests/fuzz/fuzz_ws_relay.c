/* tests/fuzz/fuzz_ws_relay.c — the WebSocket relay's state machine (gateway/proto/ws.c),
 * both directions at once: fragmentation, control frames, closes, limits, UTF-8, RSV bits,
 * through the real relay on a real coroutine scheduler, with in-memory peers (socket
 * pairs) on both sides instead of a client and a backend.
 *
 * Input: one byte of settings, then records: a byte whose top bit says which peer sends
 * (0 the client, 1 the backend) and whose low 7 bits give a length, then that many bytes.
 * Settings: bits 0-1 pick the listener (a WebSocket backend; a plain TCP backend; one with
 * a small max_message_size and a close-action rate limit; permessage-deflate agreed), bit
 * 2 leaves the client's side open after its bytes (else it ends with EOF), bit 3 the
 * backend's.
 *
 * After each input: the relay ended, and every pooled buffer went back (the scheduler's
 * count of buffers out is 0), so a leak of the relay's shows up as an invariant failure
 * at once, not only as LeakSanitizer's report at exit. */
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "config/config.h"
#include "coro/coro.h"
#include "coro/io.h"
#include "core/conn.h"
#include "core/worker.h"
#include "proto/ws-int.h"
#include "fuzz.h"

static const char conf[] =
    "[listener ws]\nbind = 127.0.0.1:1\nmode = websocket\nupstream = u\n"
    "close_timeout = 20ms\nkeepalive_interval = 0\nidle_timeout = 0\n"
    "[listener bridge]\nbind = 127.0.0.1:2\nmode = websocket\nupstream = u\n"
    "upstream_protocol = tcp\nclose_timeout = 20ms\nkeepalive_interval = 0\n"
    "[listener strict]\nbind = 127.0.0.1:3\nmode = websocket\nupstream = u\n"
    "close_timeout = 20ms\nkeepalive_interval = 0\nmax_message_size = 1k\n"
    "message_rate = 50\nmessage_burst = 20\nrate_limit_action = close\nhigh_water = 4k\n"
    "[listener deflate]\nbind = 127.0.0.1:4\nmode = websocket\nupstream = u\n"
    "close_timeout = 20ms\nkeepalive_interval = 0\n"
    "[upstream u]\nservers = 127.0.0.1:9\n";

static uv_loop_t          loop;
static struct coro_sched *sched;
static struct cg_config  *cfg;
static struct cg_worker   worker;
static struct cg_wlistener wl;

struct peer {
    struct coro_stream st;
    const uint8_t     *data;
    size_t             size;
    int                dir;        /* which records are this peer's */
    int                keep_open;
};

static struct peer peers[2];
static struct cg_conn conn;
static int relay_done;

/* A peer: writes its records, ends with EOF unless told not to, then reads and drops what
 * the relay sends until the relay closes its end. */
static void peer_main(void *arg)
{
    struct peer *p = arg;
    size_t i = 1, n;
    struct coro_buf *b;

    while (i < p->size) {
        n = p->data[i] & 0x7f;
        if (n > p->size - i - 1)
            n = p->size - i - 1;
        if ((p->data[i] >> 7) == p->dir && n &&
            coro_write_copy(&p->st, p->data + i + 1, n, 1000) < 0)
            break;
        i += 1 + n;
    }
    if (!p->keep_open)
        coro_shutdown(&p->st);
    while (coro_read(&p->st, &b, 2000) >= 0)
        coro_buf_put(sched, b);
    coro_stream_close(&p->st);
}

static void relay_main(void *arg)
{
    struct sess *s = arg;

    conn.co = coro_self();
    cg_ws__relay(s);
    cg_ws__sides_free(s);
    coro_stream_close(&conn.client);
    coro_stream_close(&conn.up);
    relay_done = 1;
}

static void setup(void)
{
    struct cg_errors errs;

    uv_loop_init(&loop);
    sched = coro_sched_new(&loop, NULL);
    cg_errors_init(&errs);
    if (!sched || cg_config_parse_string("fuzz_ws_relay", conf, &cfg, &errs) != 0) {
        fprintf(stderr, "fuzz_ws_relay: setup: %s\n",
                cg_errors_count(&errs) ? cg_errors_get(&errs, 0) : "no scheduler");
        abort();
    }
    cg_errors_deinit(&errs);
    worker.sched = sched;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct sess *s;
    int cl[2], be[2], which;

    if (!sched)
        setup();
    if (size < 1 || size > 65536)
        return 0;
    which = data[0] & 3;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, cl) < 0)
        return 0;
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, be) < 0) {
        close(cl[0]);
        close(cl[1]);
        return 0;
    }
    memset(&conn, 0, sizeof(conn));
    conn.w = &worker;
    conn.l = &wl;
    conn.lc = &cfg->listeners[which];
    coro_stream_init(sched, &conn.client);
    coro_stream_init(sched, &conn.up);
    coro_stream_open(&conn.client, cl[0]);
    coro_stream_open(&conn.up, be[0]);
    conn.client.wq_high = conn.up.wq_high = (uint32_t)conn.lc->high_water;
    s = calloc(1, sizeof(*s));
    FUZZ_CHECK(s != NULL, "out of memory");
    s->c = &conn;
    s->cl.client = 1;
    s->be.raw = conn.lc->upstream_protocol == CG_UPROTO_TCP;
    s->deflate = which == 3;
    s->now = uv_now(&loop);
    if (conn.lc->message_rate) {
        s->rate = calloc(1, sizeof(*s->rate));
        FUZZ_CHECK(s->rate != NULL, "out of memory");
        cg_tb_init(&s->rate->msgs, conn.lc->message_rate, conn.lc->message_burst, s->now);
        cg_tb_init(&s->rate->bytes, conn.lc->byte_rate, conn.lc->byte_burst, s->now);
    }
    for (int i = 0; i < 2; i++) {
        struct peer *p = &peers[i];

        memset(p, 0, sizeof(*p));
        p->data = data;
        p->size = size;
        p->dir = i;
        p->keep_open = (data[0] >> (2 + i)) & 1;
        coro_stream_init(sched, &p->st);
        coro_stream_open(&p->st, i ? be[1] : cl[1]);
        FUZZ_CHECK(coro_spawn(sched, peer_main, p, "peer", NULL) == 0, "spawn");
    }
    relay_done = 0;
    FUZZ_CHECK(coro_spawn(sched, relay_main, s, "relay", NULL) == 0, "spawn");
    uv_run(&loop, UV_RUN_DEFAULT);
    FUZZ_CHECK(relay_done, "the relay did not end");
    FUZZ_CHECK(coro_sched_count(sched) == 0, "%u coroutines left", coro_sched_count(sched));
    FUZZ_CHECK(coro_buf_outstanding(sched) == 0, "%zu pooled buffers not given back",
               (size_t)coro_buf_outstanding(sched));
    free(s->rate);
    free(s);
    return 0;
}
