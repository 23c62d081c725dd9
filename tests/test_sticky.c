/* tests/test_sticky.c — balance = hash through the real daemon: the same key lands on the
 * same server every time, keys spread over the servers, and a server taken out (by the
 * stats socket, by stopping its backend, or by a reload without it) moves its own keys
 * only.
 *
 * Backends are the harness's echo servers, whose accept counts (in total, and per client
 * address 127.0.0.n) say which server a connection reached. WebSocket listeners bridge to
 * them (upstream_protocol = tcp): the daemon connects to the server before its 101, so
 * once the 101 is read, one backend has accepted or is about to. Two workers: a key must
 * land on the same server whichever worker the kernel hands the connection to. Health
 * checks are off, so that the backends count the clients' connections only.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

#define READY_MS 5000
#define STOP_MS  8000
#define IO_MS    5000
#define NB       3          /* servers */

struct fleet {
    struct th_echo   *e[NB];
    unsigned          seen[NB];     /* accepts counted so far, per backend */
    struct th_daemon *d;
    int               port;
    char              sock[TH_PATH_MAX];
    const char       *listener, *upstream;
};

/* The daemon's config: [listener s] (its extra lines f->listener) relaying to the backends
 * of <mask> (bit i: f->e[i]) with balance = hash and the extra lines f->upstream. */
static void fleet_conf(const struct fleet *f, unsigned mask, char *buf, size_t size)
{
    char servers[128];
    size_t n = 0;
    int i;

    servers[0] = '\0';
    for (i = 0; i < NB; i++)
        if (mask & (1u << i))
            n += (size_t)snprintf(servers + n, sizeof(servers) - n, "%s127.0.0.1:%d",
                                  n ? ", " : "", th_echo_port(f->e[i]));
    snprintf(buf, size,
             "[gateway]\nworkers = 2\ncpu_pinning = off\ndrain_timeout = 1s\n"
             "stats_socket = %s\n"
             "[bpf]\nattach = off\n"
             "[listener s]\nbind = 127.0.0.1:%d\nupstream = u\n%s\n"
             "[upstream u]\nservers = %s\nbalance = hash\nhealth_check_interval = 0\n"
             "connect_timeout = 1s\nretries = 2\n%s\n",
             f->sock, f->port, f->listener, servers, f->upstream);
}

/* Starts NB echo backends and a daemon relaying to them all (fleet_conf()). */
static void fleet_start(struct fleet *f, const char *listener, const char *upstream)
{
    struct th_daemon_opts opts = { .ready_log = "ready: accepting connections" };
    char text[4096], path[TH_PATH_MAX];
    int i, err, attempt;

    memset(f, 0, sizeof(*f));
    f->listener = listener;
    f->upstream = upstream;
    for (i = 0; i < NB; i++) {
        f->e[i] = th_echo_new(0);
        ck_assert_msg(f->e[i] != NULL, "echo server: %s", strerror(errno));
    }
    for (attempt = 0;; attempt++) {
        f->port = th_free_port();
        ck_assert_int_gt(f->port, 0);
        snprintf(f->sock, sizeof(f->sock), "%s/stats-%d.sock", th_tmpdir(), f->port);
        fleet_conf(f, (1u << NB) - 1, text, sizeof(text));
        ck_assert_int_eq(th_conf_write(path, sizeof(path), "%s", text), 0);
        f->d = th_daemon_start(path, &opts);
        ck_assert_msg(f->d != NULL, "cannot start %s: %s", th_daemon_path(), strerror(errno));
        err = th_daemon_wait_ready(f->d, f->port, READY_MS);
        if (err == -ECHILD && attempt < 2 &&
            th_daemon_log_count(f->d, "Address already in use") > 0) {
            th_daemon_free(f->d);
            continue;
        }
        TH_ASSERT(f->d, err == 0, "the daemon does not accept on port %d", f->port);
        return;
    }
}

/* Rewrites the daemon's config for the backends of <mask> (atomically: a reload must not
 * read half a file), sends SIGHUP and waits for generation <gen> on every worker. */
static void fleet_reload(struct fleet *f, unsigned mask, unsigned gen)
{
    char text[4096], tmp[TH_PATH_MAX + 8], needle[96];
    FILE *fp;

    fleet_conf(f, mask, text, sizeof(text));
    snprintf(tmp, sizeof(tmp), "%s.new", f->d->conf);
    fp = fopen(tmp, "w");
    ck_assert_ptr_nonnull(fp);
    ck_assert_int_eq(fputs(text, fp) >= 0, 1);
    ck_assert_int_eq(fclose(fp), 0);
    ck_assert_int_eq(rename(tmp, f->d->conf), 0);
    snprintf(needle, sizeof(needle), "reload: generation %u in force on every worker", gen);
    kill(f->d->pid, SIGHUP);
    TH_ASSERT(f->d, th_daemon_wait_log(f->d, needle, 1, 10000) == 0, "no \"%s\" in 10 s",
              needle);
}

static void fleet_stop(struct fleet *f)
{
    char how[96];
    int st = th_daemon_stop(f->d, SIGTERM, STOP_MS), i;

    TH_ASSERT(f->d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "SIGTERM: %s, expected exit status 0", th_describe_status(st, how, sizeof(how)));
    for (i = 0; i < NB; i++)
        th_echo_free(f->e[i]);
}

/* The backend that accepted the one connection made since the last call (waits for its
 * accept, 5 s at most). */
static int next_server(struct fleet *f)
{
    int64_t end = th_now_ms() + IO_MS;
    unsigned now;
    int i;

    for (;;) {
        for (i = 0; i < NB; i++) {
            now = th_echo_accepted(f->e[i]);
            if (now == f->seen[i])
                continue;
            TH_ASSERT(f->d, now == f->seen[i] + 1, "backend %d accepted %u connections, "
                      "want one", i, now - f->seen[i]);
            f->seen[i] = now;
            return i;
        }
        TH_ASSERT(f->d, th_now_ms() < end, "no backend accepted the connection in 5 s");
        th_sleep_ms(2);
    }
}

/* Opens a WebSocket on <target> with the header lines <headers> and returns the server
 * that got it; closes it. */
static int ws_server(struct fleet *f, const char *target, const char *headers)
{
    char head[2048];
    int fd = th_ws_open(f->port, target, headers, IO_MS, head, sizeof(head)), srv;

    TH_ASSERT(f->d, fd >= 0, "%s %s: %s (answer: %s)", target, headers ? headers : "",
              strerror(-fd), head);
    srv = next_server(f);
    close(fd);
    return srv;
}

/* Sets server <i> of upstream u to <state> through the stats socket. */
static void set_state(struct fleet *f, int i, const char *state)
{
    char cmd[128], *ans;

    snprintf(cmd, sizeof(cmd), "set server u/127.0.0.1:%d state %s", th_echo_port(f->e[i]),
             state);
    ans = th_stats_cmd(f->sock, cmd, IO_MS);
    TH_ASSERT(f->d, ans && strncmp(ans, "error", 5) != 0, "%s: %s", cmd, ans ? ans : "?");
    free(ans);
}

/* The stats socket's answer to <cmd> holds <needle>. */
static void expect_answer(struct fleet *f, const char *cmd, const char *needle)
{
    char *ans = th_stats_cmd(f->sock, cmd, IO_MS);

    TH_ASSERT(f->d, ans && strstr(ans, needle), "%s has no \"%s\":\n%s", cmd, needle,
              ans ? ans : "?");
    free(ans);
}

static void expect_upstreams(struct fleet *f, const char *needle)
{
    expect_answer(f, "show upstreams", needle);
}

/* How many distinct servers the <n> keys of <map> are on. */
static int spread(const int *map, int n)
{
    int used[NB] = { 0 }, i, k = 0;

    for (i = 0; i < n; i++)
        used[map[i]] = 1;
    for (i = 0; i < NB; i++)
        k += used[i];
    return k;
}

#define NKEYS 12

/* A websocket listener with hash_key = cookie:sid: each cookie sticks to one server over
 * three connections, the cookies use more than one server; with that server in
 * maintenance, then with its backend stopped, its keys move (to the same next server both
 * times) and no other key moves; back ready, every key is home again. A request without
 * the cookie is balanced by round robin and counted. */
START_TEST(test_sticky_ws_cookie)
{
    struct fleet f;
    int home[NKEYS], moved[NKEYS], k, rep, s, x, nx = 0;
    char hdr[128];

    fleet_start(&f, "mode = websocket\nupstream_protocol = tcp", "hash_key = cookie:sid");
    expect_upstreams(&f, "balance hash (hash_key cookie:sid, hash_fallbacks 0)");
    for (k = 0; k < NKEYS; k++) {
        snprintf(hdr, sizeof(hdr), "Cookie: theme=dark; sid=user-%d\r\n", k);
        for (rep = 0; rep < 3; rep++) {
            s = ws_server(&f, "/chat", hdr);
            if (rep == 0)
                home[k] = s;
            TH_ASSERT(f.d, s == home[k], "sid=user-%d: server %d, before %d", k, s, home[k]);
        }
    }
    TH_ASSERT(f.d, spread(home, NKEYS) >= 2, "%d cookies all on server %d", NKEYS, home[0]);

    x = home[0];
    set_state(&f, x, "maint");
    for (k = 0; k < NKEYS; k++) {
        snprintf(hdr, sizeof(hdr), "Cookie: sid=user-%d\r\n", k);
        moved[k] = s = ws_server(&f, "/chat", hdr);
        if (home[k] == x) {
            nx++;
            TH_ASSERT(f.d, s != x, "sid=user-%d: still on server %d in maintenance", k, x);
        } else {
            TH_ASSERT(f.d, s == home[k], "sid=user-%d moved from %d to %d though only %d "
                      "is in maintenance", k, home[k], s, x);
        }
    }
    ck_assert_int_ge(nx, 1);
    set_state(&f, x, "ready");
    for (k = 0; k < NKEYS; k++) {
        snprintf(hdr, sizeof(hdr), "Cookie: sid=user-%d\r\n", k);
        s = ws_server(&f, "/chat", hdr);
        TH_ASSERT(f.d, s == home[k], "sid=user-%d: server %d after maintenance, home %d", k, s,
                  home[k]);
    }

    /* The backend stopped: connects to it are refused, the retry goes on along the ring. */
    th_echo_stop(f.e[x]);
    for (k = 0; k < NKEYS; k++) {
        snprintf(hdr, sizeof(hdr), "Cookie: sid=user-%d\r\n", k);
        s = ws_server(&f, "/chat", hdr);
        TH_ASSERT(f.d, s == moved[k], "sid=user-%d: server %d with server %d stopped, want %d "
                  "(as in its maintenance)", k, s, x, moved[k]);
    }

    ws_server(&f, "/chat", "Cookie: theme=dark\r\n");          /* no sid: round robin */
    ws_server(&f, "/chat", "Cookie: sid=\r\n");                 /* empty: the same */
    expect_upstreams(&f, "hash_fallbacks 2)");
    expect_answer(&f, "show stats", "\"hash_key\":\"cookie:sid\",\"hash_fallbacks\":2,");
    expect_answer(&f, "show metrics", "corogate_upstream_hash_fallbacks_total{upstream=\"u\"} 2\n");
    fleet_stop(&f);
}
END_TEST

/* query:room and header:X-Tenant (sent in lowercase): the same value, the same server;
 * values spread; a request without it falls back to round robin, counted. */
START_TEST(test_sticky_ws_query_header)
{
    struct fleet f;
    int home[NKEYS], k, rep, s;
    char target[64], hdr[64];

    fleet_start(&f, "mode = websocket\nupstream_protocol = tcp",
                _i == 0 ? "hash_key = query:room" : "hash_key = header:X-Tenant");
    for (k = 0; k < NKEYS; k++) {
        snprintf(target, sizeof(target), "/ws?v=1&room=r%d", k);
        snprintf(hdr, sizeof(hdr), "x-tenant: t%d\r\n", k);
        for (rep = 0; rep < 3; rep++) {
            s = _i == 0 ? ws_server(&f, target, NULL) : ws_server(&f, "/ws", hdr);
            if (rep == 0)
                home[k] = s;
            TH_ASSERT(f.d, s == home[k], "key %d: server %d, before %d", k, s, home[k]);
        }
    }
    TH_ASSERT(f.d, spread(home, NKEYS) >= 2, "%d keys all on server %d", NKEYS, home[0]);
    ws_server(&f, "/ws?v=1", NULL);
    expect_upstreams(&f, "hash_fallbacks 1)");
    fleet_stop(&f);
}
END_TEST

/* Reload: the ring is rebuilt for each generation. Without the server of the first key,
 * only that server's keys move; with it back, every key is home again. */
START_TEST(test_sticky_reload)
{
    struct fleet f;
    int home[NKEYS], k, s, x;
    char hdr[128];

    fleet_start(&f, "mode = websocket\nupstream_protocol = tcp", "hash_key = cookie:sid");
    for (k = 0; k < NKEYS; k++) {
        snprintf(hdr, sizeof(hdr), "Cookie: sid=user-%d\r\n", k);
        home[k] = ws_server(&f, "/chat", hdr);
    }
    x = home[0];
    fleet_reload(&f, ((1u << NB) - 1) & ~(1u << x), 2);
    for (k = 0; k < NKEYS; k++) {
        snprintf(hdr, sizeof(hdr), "Cookie: sid=user-%d\r\n", k);
        s = ws_server(&f, "/chat", hdr);
        if (home[k] == x)
            TH_ASSERT(f.d, s != x, "sid=user-%d: on removed server %d", k, x);
        else
            TH_ASSERT(f.d, s == home[k], "sid=user-%d moved from %d to %d when %d was "
                      "removed", k, home[k], s, x);
    }
    fleet_reload(&f, (1u << NB) - 1, 3);
    for (k = 0; k < NKEYS; k++) {
        snprintf(hdr, sizeof(hdr), "Cookie: sid=user-%d\r\n", k);
        s = ws_server(&f, "/chat", hdr);
        TH_ASSERT(f.d, s == home[k], "sid=user-%d: server %d after the server came back, "
                  "home %d", k, s, home[k]);
    }
    fleet_stop(&f);
}
END_TEST

#define NSRC 8

/* A tcp listener, hash_key = source: clients from 127.0.0.2 .. 127.0.0.9, three
 * connections each (data echoed through each), every address on one server, the
 * addresses on more than one. */
START_TEST(test_sticky_tcp_source)
{
    struct fleet f;
    char src[32], out[256], in[256];
    int home[NSRC], n, rep, s, fd;
    int64_t end = th_now_ms() + IO_MS;

    fleet_start(&f, "mode = tcp", "");
    /* The readiness probe (from 127.0.0.1) was relayed to a server too: counted first. */
    while (th_echo_accepted(f.e[0]) + th_echo_accepted(f.e[1]) + th_echo_accepted(f.e[2]) < 1) {
        TH_ASSERT(f.d, th_now_ms() < end, "the readiness probe reached no backend");
        th_sleep_ms(2);
    }
    next_server(&f);
    th_fill_pattern(out, sizeof(out), 7);
    for (n = 0; n < NSRC; n++) {
        snprintf(src, sizeof(src), "127.0.0.%d", n + 2);
        for (rep = 0; rep < 3; rep++) {
            fd = th_connect_from(src, f.port, IO_MS);
            TH_ASSERT(f.d, fd >= 0, "connect from %s: %s", src, strerror(-fd));
            TH_ASSERT(f.d, th_exchange(fd, out, in, sizeof(out), 1) == (ssize_t)sizeof(out) &&
                      memcmp(in, out, sizeof(out)) == 0, "from %s: no echo", src);
            close(fd);
            s = next_server(&f);
            if (rep == 0)
                home[n] = s;
            TH_ASSERT(f.d, s == home[n], "from %s: server %d, before %d", src, s, home[n]);
        }
    }
    TH_ASSERT(f.d, spread(home, NSRC) >= 2, "%d addresses all on server %d", NSRC, home[0]);
    expect_upstreams(&f, "balance hash (hash_key source, hash_fallbacks 0)");
    fleet_stop(&f);
}
END_TEST

Suite *sticky_suite(void)
{
    Suite *s = suite_create("sticky");
    TCase *tc = tcase_create("hash");

    th_tcase_add_fixtures(tc);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_sticky_ws_cookie);
    tcase_add_loop_test(tc, test_sticky_ws_query_header, 0, 2);
    tcase_add_test(tc, test_sticky_tcp_source);
    tcase_add_test(tc, test_sticky_reload);
    suite_add_tcase(s, tc);
    return s;
}
