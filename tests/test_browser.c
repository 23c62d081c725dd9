/* tests/test_browser.c — a real browser through corogate: headless Chromium (Debian's
 * chromium; `make check-browser` installs it, elsewhere the test skips and says so).
 *
 * Chromium loads a page from a file that opens a WebSocket through a websocket listener to
 * tests/ws_peer.py (python3-websockets 10.x, the backend) and checks, in the page: text,
 * binary and a 256 KiB message echoed; the subprotocol the backend selected (ws.protocol,
 * and the backend's own view of it); permessage-deflate negotiated end to end
 * (ws.extensions); and a second listener whose allowed_origins refuses the page's origin
 * (the WebSocket fails without opening). The page then reports "name=ok" or
 * "name=FAIL(why)" per check over a WebSocket straight to the backend, which logs it; the
 * test asserts each check, that the backend received compressed frames (RSV1) from the
 * browser through the gateway, and that the daemon counted the 403.
 *
 * The page bounds every step with its own timeout, so a step that hangs is reported as
 * such; the test's deadline only catches a browser that never reports at all.
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

#define CHROMIUM   "/usr/bin/chromium"
#define PYTHON     "/usr/bin/python3"
#define READY_MS   15000
#define STOP_MS    8000
#define REPORT_MS  180000    /* a deadline for a browser that never reports */

static const char conf_fmt[] =
    "[gateway]\n"
    "workers = 1\n"
    "cpu_pinning = off\n"
    "drain_timeout = 1s\n"
    "stats_socket = %s/browser-%d.sock\n"
    "[bpf]\n"
    "attach = off\n"
    "[listener w]\n"
    "bind = 127.0.0.1:%d\n"
    "mode = websocket\n"
    "upstream = u\n"
    "[listener strict]\n"
    "bind = 127.0.0.1:%d\n"
    "mode = websocket\n"
    "upstream = u\n"
    "allowed_origins = https://allowed.example\n"
    "[upstream u]\n"
    "servers = 127.0.0.1:%d\n"
    "health_check_interval = 0\n";

/* The page. Arguments: the listener's port, the strict listener's port, the backend's. */
static const char page_fmt[] =
    "<!doctype html><meta charset=utf-8><title>corogate</title><script>\n"
    "const results = [];\n"
    "const note = (name, ok, why) =>\n"
    "    results.push(name + '=' + (ok ? 'ok' : 'FAIL(' + why + ')'));\n"
    "const limit = (p, what) => Promise.race([p, new Promise((_, no) =>\n"
    "    setTimeout(() => no(new Error(what + ': no answer in 30 s')), 30000))]);\n"
    "function connect(url, protocols) {\n"
    "  return limit(new Promise((yes, no) => {\n"
    "    const ws = new WebSocket(url, protocols);\n"
    "    ws.binaryType = 'arraybuffer';\n"
    "    ws.onopen = () => yes(ws);\n"
    "    ws.onclose = (e) => no(new Error('closed ' + e.code));\n"
    "  }), 'open ' + url);\n"
    "}\n"
    "function reply(ws, what) {\n"
    "  return limit(new Promise((yes, no) => {\n"
    "    ws.onmessage = (e) => yes(e.data);\n"
    "    ws.onclose = (e) => no(new Error('closed ' + e.code));\n"
    "  }), what);\n"
    "}\n"
    "function same(a, b) {\n"
    "  if (!(a instanceof ArrayBuffer) || a.byteLength !== b.length) return false;\n"
    "  const x = new Uint8Array(a);\n"
    "  for (let i = 0; i < x.length; i++) if (x[i] !== b[i]) return false;\n"
    "  return true;\n"
    "}\n"
    "async function step(name, fn) {\n"
    "  try { const why = await fn(); note(name, why === true, why); }\n"
    "  catch (e) { note(name, false, e.message); }\n"
    "}\n"
    "async function main() {\n"
    "  let ws = null;\n"
    "  await step('open', async () => {\n"
    "    ws = await connect('ws://127.0.0.1:%d/browser', ['chat.v1', 'chat.v2']);\n"
    "    return true;\n"
    "  });\n"
    "  if (ws) {\n"
    "    await step('protocol', async () => ws.protocol === 'chat.v2' ||\n"
    "                                        'ws.protocol ' + JSON.stringify(ws.protocol));\n"
    "    await step('extensions', async () => ws.extensions.includes('permessage-deflate') ||\n"
    "                                          'ws.extensions ' + JSON.stringify(ws.extensions));\n"
    "    await step('text', async () => {\n"
    "      const t = 'hello from chromium \\u2713 '.repeat(20);\n"
    "      ws.send(t);\n"
    "      const got = await reply(ws, 'text');\n"
    "      return got === t || 'got ' + JSON.stringify(String(got).slice(0, 40));\n"
    "    });\n"
    "    await step('binary', async () => {\n"
    "      const b = new Uint8Array(256).map((_, i) => i);\n"
    "      ws.send(b);\n"
    "      return same(await reply(ws, 'binary'), b) || 'different bytes';\n"
    "    });\n"
    "    await step('big', async () => {\n"
    "      const b = new Uint8Array(256 * 1024).map((_, i) => (i * 31 + (i >> 10)) & 255);\n"
    "      ws.send(b);\n"
    "      return same(await reply(ws, 'big'), b) || 'different bytes';\n"
    "    });\n"
    "    await step('backend-subprotocol', async () => {\n"
    "      ws.send('cmd:subprotocol');\n"
    "      const got = await reply(ws, 'cmd:subprotocol');\n"
    "      return got === 'chat.v2' || 'the backend says ' + JSON.stringify(got);\n"
    "    });\n"
    "    ws.onclose = null;\n"
    "    ws.close(1000, 'done');\n"
    "  }\n"
    "  await step('origin-refused', async () => {\n"
    "    try { (await connect('ws://127.0.0.1:%d/strict')).close(); }\n"
    "    catch (e) { return e.message === 'closed 1006' || e.message; }\n"
    "    return 'it opened';\n"
    "  });\n"
    "  const r = await connect('ws://127.0.0.1:%d/report');\n"
    "  r.send('cmd:report ' + results.join(' ') + ' end');\n"
    "  await reply(r, 'report');\n"
    "  r.close();\n"
    "}\n"
    "main();\n"
    "</script>\n";

/* The number of times <needle> occurs in <s> before <end> (NULL: anywhere). */
static int count_before(const char *s, const char *end, const char *needle)
{
    int n = 0;

    for (s = strstr(s, needle); s && (!end || s < end); s = strstr(s + 1, needle))
        n++;
    return n;
}

START_TEST(test_chromium_ws)
{
    char page[TH_PATH_MAX], log[TH_PATH_MAX], sock[TH_PATH_MAX], url[TH_PATH_MAX + 8];
    char userdir[TH_PATH_MAX + 32], how[96], *text = NULL, *report = NULL, *said;
    const char *backend_argv[] = { PYTHON, "tests/ws_peer.py", "backend", "--log", log,
                                   "--subprotocols", "chat.v2", "--deflate", NULL };
    const char *chromium_argv[] = { CHROMIUM, "--headless=new", "--no-sandbox",
                                    "--disable-gpu", "--no-first-run", userdir, url, NULL };
    static const char *const checks[] = { "open", "protocol", "extensions", "text", "binary",
                                          "big", "backend-subprotocol", "origin-refused" };
    char want[64], failed[256] = "";
    struct th_helper backend, browser;
    struct th_daemon *d;
    int port, strict, err, st, compressed;
    int64_t end;
    size_t i;

    if (access(CHROMIUM, X_OK) != 0)
        TH_SKIP("chromium is not installed (`make check-browser` installs it and runs this "
                "suite)");
    snprintf(log, sizeof(log), "%s/browser-backend.log", th_tmpdir());
    err = th_helper_start(&backend, backend_argv, "READY ", READY_MS);
    said = th_read_file(backend.out, NULL);
    ck_assert_msg(err == 0, "ws_peer.py backend: %s: %s", strerror(-err), said ? said : "");
    free(said);

    port = th_free_port();
    strict = th_free_port();
    ck_assert_int_gt(port, 0);
    ck_assert_int_gt(strict, 0);
    d = th_daemon_start_conf(NULL, conf_fmt, th_tmpdir(), port, port, strict, backend.port);
    ck_assert_msg(d != NULL, "cannot start %s: %s", th_daemon_path(), strerror(errno));
    TH_ASSERT(d, th_daemon_wait_ready(d, port, READY_MS) == 0, "not ready on %d", port);
    TH_ASSERT(d, th_daemon_wait_ready(d, strict, READY_MS) == 0, "not ready on %d", strict);

    ck_assert_int_eq(th_write_file(page, sizeof(page), "browser.html", page_fmt, port, strict,
                                   backend.port), 0);
    snprintf(url, sizeof(url), "file://%s", page);
    snprintf(userdir, sizeof(userdir), "--user-data-dir=%s/chromium", th_tmpdir());
    err = th_helper_start(&browser, chromium_argv, NULL, 0);
    ck_assert_msg(err == 0, "%s: %s", CHROMIUM, strerror(-err));

    for (end = th_now_ms() + REPORT_MS; th_now_ms() < end; th_sleep_ms(100)) {
        free(text);
        text = th_read_file(log, NULL);
        report = text ? strstr(text, "report ") : NULL;
        if (report && strstr(report, " end\n"))
            break;
        report = NULL;
        if (browser.pid > 0 && waitpid(browser.pid, &st, WNOHANG) == browser.pid) {
            browser.pid = -1;   /* reaped: nothing for th_helper_stop() to kill */
            break;
        }
    }
    said = th_read_file(browser.out, NULL);
    TH_ASSERT(d, report != NULL, "the page never reported; backend log:\n%s\nchromium:\n%s",
              text ? text : "(none)", said ? th_tail(said, 1500) : "(nothing)");
    free(said);
    /* SIGTERM first: Chromium then ends its own helper processes rather than leaving them
     * to the runner; SIGKILL after 5 s. */
    if (browser.pid > 0) {
        kill(browser.pid, SIGTERM);
        for (end = th_now_ms() + 5000; th_now_ms() < end; th_sleep_ms(20))
            if (waitpid(browser.pid, &st, WNOHANG) == browser.pid) {
                browser.pid = -1;
                break;
            }
    }
    th_helper_stop(&browser);

    for (i = 0; i < sizeof(checks) / sizeof(checks[0]); i++) {
        snprintf(want, sizeof(want), " %s=ok ", checks[i]);
        if (!strstr(report, want))
            snprintf(failed + strlen(failed), sizeof(failed) - strlen(failed), " %s",
                     checks[i]);
    }
    TH_ASSERT(d, failed[0] == '\0', "failed in the page:%s; it reports: %.*s", failed,
              (int)strcspn(report, "\n"), report);
    TH_ASSERT(d, strstr(text, "open /browser\nnegotiated chat.v2 permessage-deflate\n"),
              "the backend's view of the browser's connection:\n%s", text);
    /* The messages the page sent through the gateway (text, binary, big, the command) came
     * compressed; the report's own connection, straight to the backend, comes later. */
    compressed = count_before(text, strstr(text, "open /report"), "compressed ");
    TH_ASSERT(d, compressed >= 4, "%d compressed messages reached the backend:\n%s",
              compressed, text);
    free(text);

    snprintf(sock, sizeof(sock), "%s/browser-%d.sock", th_tmpdir(), port);
    TH_ASSERT(d, th_metric_sum(sock, "corogate_websocket_handshake_failures_total",
                               "reason=\"403\"") >= 1, "no 403 counted");
    st = th_daemon_stop(d, SIGTERM, STOP_MS);
    TH_ASSERT(d, st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "SIGTERM: %s",
              th_describe_status(st, how, sizeof(how)));
    th_helper_stop(&backend);
}
END_TEST

Suite *browser_suite(void)
{
    Suite *s = suite_create("browser");
    TCase *tc = tcase_create("chromium");

    th_tcase_add_fixtures(tc);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, test_chromium_ws);
    suite_add_tcase(s, tc);
    return s;
}
