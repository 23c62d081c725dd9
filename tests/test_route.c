/* tests/test_route.c — a listener's routes: the config syntax, matching, and the config
 * keys that carry them. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gateway/config/config.h"
#include "gateway/config/route.h"

static struct cg_route *parse_ok(const char *spec, size_t *n)
{
    struct cg_route *r = (void *)1;
    char err[256] = "";
    int rc = cg_routes_parse(spec, &r, n, err, sizeof(err));

    ck_assert_msg(rc == 0, "%s: %s", spec, err);
    return r;
}

static void parse_bad(const char *spec, const char *msg)
{
    struct cg_route *r = (void *)1;
    size_t n = 99;
    char err[256] = "";

    ck_assert_int_eq(cg_routes_parse(spec, &r, &n, err, sizeof(err)), -EINVAL);
    ck_assert_ptr_eq(r, (void *)1);
    ck_assert_uint_eq(n, 99);
    ck_assert_str_eq(err, msg);
}

START_TEST(test_routes_parse)
{
    struct cg_route *r;
    size_t n;

    r = parse_ok("/chat=chat  /api/*=api,Example.COM/ws=web example.com:8080/*=site", &n);
    ck_assert_uint_eq(n, 4);
    ck_assert_str_eq(r[0].host, "");
    ck_assert_str_eq(r[0].path, "/chat");
    ck_assert_int_eq(r[0].prefix, 0);
    ck_assert_str_eq(r[0].upstream_name, "chat");
    ck_assert_str_eq(r[1].path, "/api/");
    ck_assert_int_eq(r[1].prefix, 1);
    ck_assert_str_eq(r[2].host, "example.com");
    ck_assert_str_eq(r[2].path, "/ws");
    ck_assert_str_eq(r[3].host, "example.com:8080");
    ck_assert_str_eq(r[3].path, "/");
    ck_assert_int_eq(r[3].prefix, 1);
    cg_routes_free(r);

    r = parse_ok("  ", &n);
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(r);
    cg_routes_free(r);
}
END_TEST

START_TEST(test_routes_parse_errors)
{
    parse_bad("/chat", "\"/chat\": expected [HOST]/PATH=UPSTREAM");
    parse_bad("chat=up", "\"chat=up\": the path must start with '/'");
    parse_bad("/a*b=up", "\"/a*b=up\": bad path (a '*' may only end it)");
    parse_bad("/a?x=up", "\"/a?x=up\": bad path (a '*' may only end it)");
    parse_bad("/a=", "\"/a=\": bad upstream name");
    parse_bad("/a=up!", "\"/a=up!\": bad upstream name");
    parse_bad("ex_ample.com/a=up", "\"ex_ample.com/a=up\": bad host");
    parse_bad("/ok=up /bad", "\"/bad\": expected [HOST]/PATH=UPSTREAM");
}
END_TEST

static const char *match(const struct cg_route *r, size_t n, const char *host,
                         const char *path)
{
    const struct cg_route *m = cg_route_match(r, n, host, host ? strlen(host) : 0, path,
                                              strlen(path));

    return m ? m->upstream_name : "default";
}

START_TEST(test_routes_match)
{
    struct cg_route *r;
    size_t n;

    r = parse_ok("/chat=chat /chat/*=chatrooms /api/*=api /api/v2/*=api2 /*=catchall "
                 "example.com/chat=ex-chat example.com/*=ex-any "
                 "other.example:8080/*=other8080 [::1]/v6=v6", &n);
    /* exact beats prefix; longest prefix wins */
    ck_assert_str_eq(match(r, n, NULL, "/chat"), "chat");
    ck_assert_str_eq(match(r, n, NULL, "/chat/"), "chatrooms");
    ck_assert_str_eq(match(r, n, NULL, "/chat/42"), "chatrooms");
    ck_assert_str_eq(match(r, n, NULL, "/chatx"), "catchall");
    ck_assert_str_eq(match(r, n, NULL, "/api/v1"), "api");
    ck_assert_str_eq(match(r, n, NULL, "/api/v2/feed"), "api2");
    ck_assert_str_eq(match(r, n, NULL, "/api"), "catchall");
    /* host routes first, any port unless named, no case */
    ck_assert_str_eq(match(r, n, "example.com", "/chat"), "ex-chat");
    ck_assert_str_eq(match(r, n, "EXAMPLE.com:443", "/chat"), "ex-chat");
    ck_assert_str_eq(match(r, n, "example.com", "/anything"), "ex-any");
    ck_assert_str_eq(match(r, n, "example.org", "/chat"), "chat");
    ck_assert_str_eq(match(r, n, "other.example:8080", "/x"), "other8080");
    ck_assert_str_eq(match(r, n, "other.example:8081", "/x"), "catchall");
    ck_assert_str_eq(match(r, n, "other.example", "/x"), "catchall");
    ck_assert_str_eq(match(r, n, "[::1]:9000", "/v6"), "v6");
    ck_assert_str_eq(match(r, n, "[::1]", "/v6"), "v6");
    cg_routes_free(r);

    /* without a catch-all, the default */
    r = parse_ok("/chat=chat example.com/*=ex", &n);
    ck_assert_str_eq(match(r, n, NULL, "/other"), "default");
    ck_assert_str_eq(match(r, n, "", "/other"), "default");
    ck_assert_str_eq(match(r, n, "example.com", "/other"), "ex");
    ck_assert_str_eq(match(NULL, 0, "example.com", "/other"), "default");
    cg_routes_free(r);

    /* ties: the first written */
    r = parse_ok("/a/*=first /a/*=second", &n);
    ck_assert_str_eq(match(r, n, NULL, "/a/b"), "first");
    cg_routes_free(r);
}
END_TEST

/* The config keys: routes resolve to upstream indexes; unknown names are errors. */
START_TEST(test_routes_config)
{
    static const char text[] =
        "[listener w]\nbind = 127.0.0.1:0\nmode = websocket\nupstream = main\n"
        "routes = /chat=chat /api/*=api\n"
        "[upstream main]\nservers = 127.0.0.1:9000\n"
        "[upstream chat]\nservers = 127.0.0.1:9001\n"
        "[upstream api]\nservers = 127.0.0.1:9002\n";
    struct cg_config *cfg = NULL;
    struct cg_errors errs;

    cg_errors_init(&errs);
    ck_assert_int_eq(cg_config_parse_string("t.ini", text, &cfg, &errs), 0);
    ck_assert_uint_eq(cfg->listeners[0].nroutes, 2);
    ck_assert_uint_eq(cfg->listeners[0].routes[0].upstream, 1);
    ck_assert_uint_eq(cfg->listeners[0].routes[1].upstream, 2);
    ck_assert_uint_eq(cfg->listeners[0].upstream, 0);
    cg_config_free(cfg);

    ck_assert_int_eq(cg_config_parse_string("t.ini",
        "[listener w]\nbind = 127.0.0.1:0\nmode = websocket\nupstream = main\n"
        "routes = /chat=nope /x=y!\n[upstream main]\nservers = 127.0.0.1:9000\n",
        &cfg, &errs), -EINVAL);
    ck_assert_uint_eq(cg_errors_count(&errs), 1);
    ck_assert_str_eq(cg_errors_get(&errs, 0), "t.ini:5: [listener w] routes: \"/x=y!\": "
                     "bad upstream name");
    cg_errors_deinit(&errs);
    ck_assert_int_eq(cg_config_parse_string("t.ini",
        "[listener w]\nbind = 127.0.0.1:0\nmode = websocket\nupstream = main\n"
        "routes = /chat=nope\n[upstream main]\nservers = 127.0.0.1:9000\n",
        &cfg, &errs), -EINVAL);
    ck_assert_str_eq(cg_errors_get(&errs, 0), "t.ini:5: [listener w] routes: unknown "
                     "upstream \"nope\"");
    cg_errors_deinit(&errs);
}
END_TEST

/* The other websocket keys: defaults, custom values and errors. */
START_TEST(test_ws_config_keys)
{
    struct cg_config *cfg = NULL;
    struct cg_errors errs;
    const struct cg_listener_conf *l;

    cg_errors_init(&errs);
    ck_assert_int_eq(cg_config_parse_string("t.ini",
        "[listener w]\nbind = 127.0.0.1:0\nmode = websocket\nupstream = u\n"
        "[upstream u]\nservers = 127.0.0.1:9000\n", &cfg, &errs), 0);
    l = &cfg->listeners[0];
    ck_assert_int_eq(l->upstream_protocol, CG_UPROTO_WEBSOCKET);
    ck_assert_str_eq(l->health_path, "/healthz");
    ck_assert_ptr_null(l->allowed_origins);
    ck_assert_ptr_null(l->routes);
    ck_assert_uint_eq(l->handshake_timeout_ms, 10000);
    ck_assert_uint_eq(l->max_header_size, 8192);
    ck_assert_uint_eq(l->max_headers, 64);
    ck_assert_uint_eq(l->max_request_line, 4096);
    ck_assert_uint_eq(l->max_message_size, 64u << 20);
    ck_assert_uint_eq(l->keepalive_interval_ms, 30000);
    ck_assert_uint_eq(l->keepalive_timeout_ms, 10000);
    ck_assert_uint_eq(l->close_timeout_ms, 5000);
    ck_assert_uint_eq(l->message_rate, 0);
    ck_assert_int_eq(l->rate_limit_action, CG_RATE_DELAY);
    ck_assert_uint_eq(l->high_water, 65536);
    cg_config_free(cfg);

    ck_assert_int_eq(cg_config_parse_string("t.ini",
        "[listener w]\nbind = 127.0.0.1:0\nmode = websocket\nupstream = u\n"
        "upstream_protocol = tcp\nhealth_path = off\n"
        "allowed_origins = https://A.example, http://b.example:8080\n"
        "message_rate = 100\nmessage_burst = 10\nbyte_rate = 1m\nrate_limit_action = close\n"
        "[upstream u]\nservers = 127.0.0.1:9000\n", &cfg, &errs), 0);
    l = &cfg->listeners[0];
    ck_assert_int_eq(l->upstream_protocol, CG_UPROTO_TCP);
    ck_assert_str_eq(l->health_path, "");
    ck_assert_str_eq(l->allowed_origins, "https://a.example, http://b.example:8080");
    ck_assert_uint_eq(l->byte_rate, 1 << 20);
    ck_assert_int_eq(l->rate_limit_action, CG_RATE_CLOSE);
    cg_config_free(cfg);

    ck_assert_int_eq(cg_config_parse_string("t.ini",
        "[listener w]\nbind = 127.0.0.1:0\nmode = websocket\nupstream = u\n"
        "health_path = healthz\nallowed_origins = example.com\nrate_limit_action = drop\n"
        "[upstream u]\nservers = 127.0.0.1:9000\n", &cfg, &errs), -EINVAL);
    ck_assert_uint_eq(cg_errors_count(&errs), 3);
    ck_assert_str_eq(cg_errors_get(&errs, 0), "t.ini:5: [listener w] health_path: "
                     "\"healthz\" is not a path (expected /PATH or off)");
    ck_assert_str_eq(cg_errors_get(&errs, 1), "t.ini:6: [listener w] allowed_origins: "
                     "\"example.com\" is not an origin (expected scheme://host[:port] or *)");
    ck_assert_str_eq(cg_errors_get(&errs, 2), "t.ini:7: [listener w] rate_limit_action: "
                     "\"drop\" is not one of: delay, close");
    cg_errors_deinit(&errs);
}
END_TEST

/* Every websocket key appears in conf/corogate.ini, set or commented out, and the file
 * loads. */
START_TEST(test_ws_keys_documented)
{
    static const char *const keys[] = {
        "upstream_protocol", "routes", "allowed_origins", "health_path",
        "handshake_timeout", "max_header_size", "max_headers", "max_request_line",
        "upstream_handshake_timeout", "max_message_size", "keepalive_interval",
        "keepalive_timeout", "close_timeout", "message_rate", "message_burst", "byte_rate",
        "byte_burst", "rate_limit_action", "high_water",
    };
    static char text[65536];
    char pat[2][64];
    struct cg_config *cfg = NULL;
    size_t i, n;
    FILE *f;

    f = fopen("conf/corogate.ini", "r");
    ck_assert_ptr_nonnull(f);
    n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        snprintf(pat[0], sizeof(pat[0]), "\n%s = ", keys[i]);
        snprintf(pat[1], sizeof(pat[1]), "\n;%s = ", keys[i]);
        ck_assert_msg(strstr(text, pat[0]) || strstr(text, pat[1]), "%s missing", keys[i]);
    }
    ck_assert_int_eq(cg_config_load("conf/corogate.ini", &cfg, NULL), 0);
    cg_config_free(cfg);
}
END_TEST

Suite *route_suite(void)
{
    Suite *s = suite_create("route");
    TCase *tc = tcase_create("route");

    tcase_add_test(tc, test_routes_parse);
    tcase_add_test(tc, test_routes_parse_errors);
    tcase_add_test(tc, test_routes_match);
    tcase_add_test(tc, test_routes_config);
    tcase_add_test(tc, test_ws_config_keys);
    tcase_add_test(tc, test_ws_keys_documented);
    suite_add_tcase(s, tc);
    return s;
}
