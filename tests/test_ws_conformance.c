/* tests/test_ws_conformance.c — RFC 6455 conformance of the WebSocket relay, case by case.
 *
 * tests/ws_conformance.py (a raw-frame client, Autobahn fuzzingclient style: framing,
 * fragmentation, ping/pong, reserved bits and opcodes, control frames, UTF-8, close codes,
 * sizes; its docstring lists what it checks) runs through the real daemon to the bundled
 * echo backend (`corogate-loadgen serve --mode ws`), and, on the path /peer, to the
 * script's own raw Python peer, which echoes in order and records what reaches the
 * backend; a second listener with permessage_deflate = strip leads to the same peer. The
 * test fails with the script's lines for the failed cases.
 *
 * Afterwards the daemon must still run, have counted the protocol errors, and exit 0 on
 * SIGTERM (under ASan: no leak, no error).
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "harness.h"

#define PYTHON     "/usr/bin/python3"
#define SCRIPT     "tests/ws_conformance.py"
#define READY_MS   15000
#define STOP_MS    8000
#define SCRIPT_MS  (10 * 60 * 1000)     /* a deadline for a hung run, not a speed figure */
#define MAX_MSG    (512 * 1024)         /* the listener's max_message_size */

static const char conf_fmt[] =
    "[gateway]\n"
    "workers = 2\n"
    "cpu_pinning = off\n"
    "drain_timeout = 1s\n"
    "stats_socket = %s/conformance-%d.sock\n"
    "[bpf]\n"
    "attach = off\n"
    "[listener w]\n"
    "bind = 127.0.0.1:%d\n"
    "mode = websocket\n"
    "upstream = echo\n"
    "routes = /peer=peer\n"
    "max_message_size = %d\n"
    "keepalive_interval = 0\n"       /* no pings of ours among the frames a case expects */
    "[listener strip]\n"
    "bind = 127.0.0.1:%d\n"
    "mode = websocket\n"
    "upstream = peer\n"
    "permessage_deflate = strip\n"
    "keepalive_interval = 0\n"
    "[upstream echo]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n"
    "retries = 0\n"
    "[upstream peer]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n"
    "retries = 0\n";

START_TEST(test_ws_conformance)
{
    char loadgen[TH_PATH_MAX], peer_log[TH_PATH_MAX], sock[TH_PATH_MAX], addr[64], max[32];
    char strip_addr[64];
    const char *serve_argv[] = { loadgen, "serve", "--mode", "ws", "--listen", "127.0.0.1:0",
                                 "--threads", "1", "--quiet", NULL };
    const char *peer_argv[] = { PYTHON, SCRIPT, "peer", peer_log, NULL };
    const char *run_argv[] = { PYTHON, SCRIPT, "run", addr, "--max-message-size", max,
                               "--peer-path", "/peer", "--peer-log", peer_log,
                               "--strip-addr", strip_addr, NULL };
    struct th_daemon_opts opts = { .ready_log = "ready: accepting connections" };
    struct th_helper echo, peer;
    struct th_run_result r;
    struct th_daemon *d;
    char how[96], *said;
    int port, strip, err, st;

    snprintf(loadgen, sizeof(loadgen), "%s/corogate-loadgen",
             getenv("CG_BUILD") ? getenv("CG_BUILD") : "build");
    snprintf(peer_log, sizeof(peer_log), "%s/conformance-peer.log", th_tmpdir());
    err = th_helper_start(&echo, serve_argv, "on 127.0.0.1:", READY_MS);
    said = th_read_file(echo.out, NULL);
    ck_assert_msg(err == 0, "%s serve: %s: %s", loadgen, strerror(-err), said ? said : "");
    free(said);
    err = th_helper_start(&peer, peer_argv, "READY ", READY_MS);
    said = th_read_file(peer.out, NULL);
    ck_assert_msg(err == 0, "%s peer: %s: %s", SCRIPT, strerror(-err), said ? said : "");
    free(said);

    port = th_free_port();
    strip = th_free_port();
    ck_assert_int_gt(port, 0);
    ck_assert_int_gt(strip, 0);
    d = th_daemon_start_conf(&opts, conf_fmt, th_tmpdir(), port, port, MAX_MSG, strip,
                             echo.port, peer.port);
    ck_assert_msg(d != NULL, "cannot start %s: %s", th_daemon_path(), strerror(errno));
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready on %d", port);
    TH_ASSERT(d, th_daemon_wait_ready(d, strip, READY_MS) == 0, "not ready on %d", strip);

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    snprintf(strip_addr, sizeof(strip_addr), "127.0.0.1:%d", strip);
    snprintf(max, sizeof(max), "%d", MAX_MSG);
    ck_assert_int_eq(th_run(&r, SCRIPT_MS, run_argv), 0);
    TH_ASSERT(d, r.status >= 0 && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0,
              "%s run %s: %s\n%s", SCRIPT, addr, th_describe_status(r.status, how, sizeof(how)),
              r.out);
    TH_ASSERT(d, strstr(r.out, ", failed: 0") != NULL, "no summary line:\n%s", r.out);
    th_run_result_deinit(&r);

    /* Every violation closed only its own connection, and was counted. */
    TH_ASSERT(d, th_daemon_is_alive(d), "the daemon is gone");
    snprintf(sock, sizeof(sock), "%s/conformance-%d.sock", th_tmpdir(), port);
    TH_ASSERT(d, th_metric_sum(sock, "corogate_websocket_protocol_errors_total", NULL) > 0,
              "no protocol error counted");
    TH_ASSERT(d, th_metric_sum(sock, "corogate_websocket_messages_too_big_total", NULL) > 0,
              "no message too big counted");

    st = th_daemon_stop(d, SIGTERM, STOP_MS);
    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: %s",
              th_describe_status(st, how, sizeof(how)));
    th_helper_stop(&peer);
    th_helper_stop(&echo);
}
END_TEST

Suite *ws_conformance_suite(void)
{
    Suite *s = suite_create("ws_conformance");
    TCase *tc = tcase_create("rfc6455");

    th_tcase_add_fixtures(tc);
    tcase_set_timeout(tc, 900);
    tcase_add_test(tc, test_ws_conformance);
    suite_add_tcase(s, tc);
    return s;
}
