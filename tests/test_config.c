/* tests/test_config.c — the ini configuration: values, defaults and every error message. */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gateway/config/config.h"
#include "harness.h"

/* A valid listener + upstream, appended after the lines under test so that their line
 * numbers stay small and obvious. */
#define TAIL "[listener l]\nbind = 127.0.0.1:8000\nupstream = u\n" \
             "[upstream u]\nservers = 127.0.0.1:9000\n"

static struct cg_config *parse_ok(const char *text)
{
    struct cg_config *cfg = NULL;
    struct cg_errors errs;
    size_t i;
    int rc;

    cg_errors_init(&errs);
    rc = cg_config_parse_string("t.ini", text, &cfg, &errs);
    for (i = 0; i < cg_errors_count(&errs); i++)
        fprintf(stderr, "unexpected: %s\n", cg_errors_get(&errs, i));
    ck_assert_int_eq(rc, 0);
    ck_assert_ptr_nonnull(cfg);
    ck_assert_uint_eq(cg_errors_count(&errs), 0);
    cg_errors_deinit(&errs);
    return cfg;
}

/* Asserts that <text> fails with exactly the messages <want> (NULL-terminated), in order. */
static void expect_errors(const char *text, const char *const *want)
{
    struct cg_config *cfg = (void *)1;
    struct cg_errors errs;
    size_t i, n = 0;
    int rc;

    while (want[n])
        n++;
    cg_errors_init(&errs);
    rc = cg_config_parse_string("t.ini", text, &cfg, &errs);
    for (i = 0; i < cg_errors_count(&errs); i++)
        if (i >= n || strcmp(cg_errors_get(&errs, i), want[i]) != 0)
            fprintf(stderr, "got: %s\n", cg_errors_get(&errs, i));
    ck_assert_int_eq(rc, -EINVAL);
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(cg_errors_count(&errs), n);
    for (i = 0; i < n; i++)
        ck_assert_str_eq(cg_errors_get(&errs, i), want[i]);
    cg_errors_deinit(&errs);
}

#define EXPECT(text, ...) expect_errors(text, (const char *const[]){ __VA_ARGS__, NULL })

static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t size)
{
    const struct sockaddr_in *sin = (const void *)ss;
    const struct sockaddr_in6 *sin6 = (const void *)ss;
    char ip[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        inet_ntop(AF_INET, &sin->sin_addr, ip, sizeof(ip));
        snprintf(buf, size, "%s:%u", ip, ntohs(sin->sin_port));
    } else {
        inet_ntop(AF_INET6, &sin6->sin6_addr, ip, sizeof(ip));
        snprintf(buf, size, "[%s]:%u", ip, ntohs(sin6->sin6_port));
    }
    return buf;
}

/* ------------------------------------------------------------------ value parsers */

START_TEST(test_parse_duration)
{
    uint64_t ms = 7;

    ck_assert_int_eq(cg_parse_duration("500ms", &ms), 0);
    ck_assert_uint_eq(ms, 500);
    ck_assert_int_eq(cg_parse_duration("5s", &ms), 0);
    ck_assert_uint_eq(ms, 5000);
    ck_assert_int_eq(cg_parse_duration("2m", &ms), 0);
    ck_assert_uint_eq(ms, 120000);
    ck_assert_int_eq(cg_parse_duration("1h", &ms), 0);
    ck_assert_uint_eq(ms, 3600000);
    ck_assert_int_eq(cg_parse_duration("30", &ms), 0);
    ck_assert_uint_eq(ms, 30000);
    ck_assert_int_eq(cg_parse_duration("0", &ms), 0);
    ck_assert_uint_eq(ms, 0);
    ck_assert_int_eq(cg_parse_duration("10MS", &ms), 0);
    ck_assert_uint_eq(ms, 10);

    ms = 7;
    ck_assert_int_eq(cg_parse_duration("", &ms), -EINVAL);
    ck_assert_int_eq(cg_parse_duration("abc", &ms), -EINVAL);
    ck_assert_int_eq(cg_parse_duration("5 s", &ms), -EINVAL);
    ck_assert_int_eq(cg_parse_duration("-5s", &ms), -EINVAL);
    ck_assert_int_eq(cg_parse_duration("1.5s", &ms), -EINVAL);
    ck_assert_int_eq(cg_parse_duration("5d", &ms), -EINVAL);
    ck_assert_int_eq(cg_parse_duration("s", &ms), -EINVAL);
    ck_assert_int_eq(cg_parse_duration(NULL, &ms), -EINVAL);
    ck_assert_int_eq(cg_parse_duration("99999999999999999999", &ms), -ERANGE);
    ck_assert_int_eq(cg_parse_duration("18446744073709551615s", &ms), -ERANGE);
    ck_assert_uint_eq(ms, 7);
}
END_TEST

START_TEST(test_parse_size)
{
    uint64_t v = 7;

    ck_assert_int_eq(cg_parse_size("4096", &v), 0);
    ck_assert_uint_eq(v, 4096);
    ck_assert_int_eq(cg_parse_size("64k", &v), 0);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(cg_parse_size("64K", &v), 0);
    ck_assert_uint_eq(v, 65536);
    ck_assert_int_eq(cg_parse_size("16m", &v), 0);
    ck_assert_uint_eq(v, 16777216);
    ck_assert_int_eq(cg_parse_size("2g", &v), 0);
    ck_assert_uint_eq(v, 2147483648ull);
    ck_assert_int_eq(cg_parse_size("0", &v), 0);
    ck_assert_uint_eq(v, 0);

    v = 7;
    ck_assert_int_eq(cg_parse_size("", &v), -EINVAL);
    ck_assert_int_eq(cg_parse_size("k", &v), -EINVAL);
    ck_assert_int_eq(cg_parse_size("12q", &v), -EINVAL);
    ck_assert_int_eq(cg_parse_size("1kb", &v), -EINVAL);
    ck_assert_int_eq(cg_parse_size(" 1k", &v), -EINVAL);
    ck_assert_int_eq(cg_parse_size("17179869184g", &v), -ERANGE);
    ck_assert_uint_eq(v, 7);
}
END_TEST

START_TEST(test_parse_bool)
{
    static const char *const yes[] = { "on", "yes", "true", "1", "ON", "True" };
    static const char *const no[] = { "off", "no", "false", "0", "OFF", "No" };
    size_t i;
    int b;

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        b = -1;
        ck_assert_int_eq(cg_parse_bool(yes[i], &b), 0);
        ck_assert_int_eq(b, 1);
        b = -1;
        ck_assert_int_eq(cg_parse_bool(no[i], &b), 0);
        ck_assert_int_eq(b, 0);
    }
    ck_assert_int_eq(cg_parse_bool("maybe", &b), -EINVAL);
    ck_assert_int_eq(cg_parse_bool("", &b), -EINVAL);
    ck_assert_int_eq(cg_parse_bool("2", &b), -EINVAL);
}
END_TEST

START_TEST(test_parse_hostport)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    char buf[64];

    ck_assert_int_eq(cg_parse_hostport("127.0.0.1:8080", &ss, &len), 0);
    ck_assert_uint_eq(len, sizeof(struct sockaddr_in));
    ck_assert_str_eq(addr_str(&ss, buf, sizeof(buf)), "127.0.0.1:8080");
    ck_assert_int_eq(cg_parse_hostport("[::1]:8080", &ss, &len), 0);
    ck_assert_uint_eq(len, sizeof(struct sockaddr_in6));
    ck_assert_str_eq(addr_str(&ss, buf, sizeof(buf)), "[::1]:8080");
    ck_assert_int_eq(cg_parse_hostport("[2001:db8::7]:65535", &ss, &len), 0);
    ck_assert_str_eq(addr_str(&ss, buf, sizeof(buf)), "[2001:db8::7]:65535");
    ck_assert_int_eq(cg_parse_hostport("localhost:9000", &ss, &len), 0);
    ck_assert_str_eq(addr_str(&ss, buf, sizeof(buf)), "127.0.0.1:9000");

    ck_assert_int_eq(cg_parse_hostport("10.0.0.1", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport(":80", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport("10.0.0.1:", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport("10.0.0.1:http", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport("example.com:80", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport("::1:8080", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport("[::1]8080", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport("[127.0.0.1]:80", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport("1.2.3:80", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport("*:80", &ss, &len), -EINVAL);
    ck_assert_int_eq(cg_parse_hostport("10.0.0.1:0", &ss, &len), -ERANGE);
    ck_assert_int_eq(cg_parse_hostport("10.0.0.1:65536", &ss, &len), -ERANGE);
    ck_assert_int_eq(cg_parse_hostport("10.0.0.1:123456", &ss, &len), -ERANGE);

    ck_assert_int_eq(cg_parse_bind("*:8080", &ss, &len), 0);
    ck_assert_str_eq(addr_str(&ss, buf, sizeof(buf)), "0.0.0.0:8080");
    ck_assert_int_eq(cg_parse_bind("127.0.0.1:0", &ss, &len), 0);
    ck_assert_str_eq(addr_str(&ss, buf, sizeof(buf)), "127.0.0.1:0");
    ck_assert_int_eq(cg_parse_bind("[::]:443", &ss, &len), 0);
    ck_assert_str_eq(addr_str(&ss, buf, sizeof(buf)), "[::]:443");
}
END_TEST

START_TEST(test_format_duration)
{
    char buf[32];

    ck_assert_str_eq(cg_format_duration(0, buf, sizeof(buf)), "0");
    ck_assert_str_eq(cg_format_duration(1500, buf, sizeof(buf)), "1500ms");
    ck_assert_str_eq(cg_format_duration(90000, buf, sizeof(buf)), "90s");
    ck_assert_str_eq(cg_format_duration(120000, buf, sizeof(buf)), "2m");
    ck_assert_str_eq(cg_format_duration(7200000, buf, sizeof(buf)), "2h");
}
END_TEST

START_TEST(test_errors_list)
{
    struct cg_errors errs;
    int i;

    cg_errors_init(&errs);
    ck_assert_uint_eq(cg_errors_count(&errs), 0);
    ck_assert_ptr_null(cg_errors_get(&errs, 0));
    for (i = 0; i < 20; i++)
        ck_assert_int_eq(cg_errors_add(&errs, "error %d", i), 0);
    ck_assert_uint_eq(cg_errors_count(&errs), 20);
    ck_assert_str_eq(cg_errors_get(&errs, 13), "error 13");
    cg_errors_deinit(&errs);
    ck_assert_uint_eq(cg_errors_count(&errs), 0);
    cg_errors_deinit(&errs);        /* twice is fine */
}
END_TEST

/* ------------------------------------------------------------------ good configs */

START_TEST(test_defaults)
{
    struct cg_config *cfg = parse_ok(TAIL);
    const struct cg_upstream_conf *up;
    const struct cg_listener_conf *l;
    char buf[64];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);

    ck_assert_str_eq(cfg->path, "t.ini");
    ck_assert_int_ne(cfg->loaded_at, 0);
    ck_assert_uint_eq(cfg->gw.workers, cpus > 1024 ? 1024 : cpus);
    ck_assert_int_eq(cfg->gw.workers_auto, 1);
    ck_assert_int_eq(cfg->gw.cpu_pinning, 1);
    ck_assert_uint_eq(cfg->gw.max_connections, 1000000);
    ck_assert_int_eq(cfg->gw.log_level, CG_LOG_INFO);
    ck_assert_str_eq(cfg->gw.stats_socket, "/run/corogate/stats.sock");
    ck_assert_uint_eq(cfg->gw.drain_timeout_ms, 30000);
    ck_assert_uint_eq(cfg->gw.coro_stall_threshold_ms, 60000);
    ck_assert_uint_eq(cfg->gw.nofile, 1048576);

    ck_assert_uint_eq(cfg->nlisteners, 1);
    l = &cfg->listeners[0];
    ck_assert_str_eq(l->name, "l");
    ck_assert_uint_eq(l->line, 1);
    ck_assert_str_eq(l->bind, "127.0.0.1:8000");
    ck_assert_str_eq(addr_str(&l->addr, buf, sizeof(buf)), "127.0.0.1:8000");
    ck_assert_uint_eq(l->addrlen, sizeof(struct sockaddr_in));
    ck_assert_int_eq(l->mode, CG_MODE_TCP);
    ck_assert_str_eq(l->upstream_name, "u");
    ck_assert_uint_eq(l->upstream, 0);
    ck_assert_uint_eq(l->idle_timeout_ms, 300000);
    ck_assert_uint_eq(l->backlog, 511);

    ck_assert_uint_eq(cfg->nupstreams, 1);
    up = cg_config_listener_upstream(cfg, l);
    ck_assert_ptr_eq(up, &cfg->upstreams[0]);
    ck_assert_str_eq(up->name, "u");
    ck_assert_uint_eq(up->line, 4);
    ck_assert_uint_eq(up->nservers, 1);
    ck_assert_str_eq(up->servers[0].name, "127.0.0.1:9000");
    ck_assert_uint_eq(up->servers[0].weight, 1);
    ck_assert_int_eq(up->balance, CG_BALANCE_ROUNDROBIN);
    ck_assert_uint_eq(up->connect_timeout_ms, 5000);
    ck_assert_uint_eq(up->retries, 2);
    ck_assert_uint_eq(up->max_connections_per_server, 0);
    ck_assert_uint_eq(up->health_check_interval_ms, 2000);
    ck_assert_uint_eq(up->health_check_timeout_ms, 1000);
    ck_assert_uint_eq(up->health_check_fall, 3);
    ck_assert_uint_eq(up->health_check_rise, 2);
    cg_config_free(cfg);
}
END_TEST

START_TEST(test_every_key)
{
    static const char text[] =
        "[gateway]\n"
        "workers = 8\n"
        "cpu_pinning = no\n"
        "max_connections = 0\n"
        "log_level = debug\n"
        "stats_socket = /tmp/x.sock\n"
        "drain_timeout = 1500ms\n"
        "nofile = 64k\n"
        "[upstream api]\n"
        "servers = 10.0.0.1:9000 weight=3, [::1]:9001,localhost:9002 weight=256\n"
        "balance = leastconn\n"
        "connect_timeout = 2m\n"
        "retries = 0\n"
        "max_connections_per_server = 5000\n"
        "health_check_interval = 1h\n"
        "health_check_timeout = 20\n"
        "health_check_fall = 1\n"
        "health_check_rise = 100\n"
        "[upstream b]\n"
        "servers = 127.0.0.1:1\n"
        "balance = random\n"
        "health_check_interval = 0\n"
        "[listener ws]\n"
        "bind = [::1]:8080\n"
        "mode = websocket\n"
        "upstream = b\n"
        "idle_timeout = 0\n"
        "backlog = 65535\n"
        "[listener all]\n"
        "bind = *:80\n"
        "upstream = api\n";
    struct cg_config *cfg = parse_ok(text);
    const struct cg_upstream_conf *up;
    const struct cg_listener_conf *l;
    char buf[64];

    ck_assert_uint_eq(cfg->gw.workers, 8);
    ck_assert_int_eq(cfg->gw.workers_auto, 0);
    ck_assert_int_eq(cfg->gw.cpu_pinning, 0);
    ck_assert_uint_eq(cfg->gw.max_connections, 0);
    ck_assert_int_eq(cfg->gw.log_level, CG_LOG_DEBUG);
    ck_assert_str_eq(cfg->gw.stats_socket, "/tmp/x.sock");
    ck_assert_uint_eq(cfg->gw.drain_timeout_ms, 1500);
    ck_assert_uint_eq(cfg->gw.nofile, 65536);

    ck_assert_uint_eq(cfg->nupstreams, 2);
    up = &cfg->upstreams[0];
    ck_assert_str_eq(up->name, "api");
    ck_assert_uint_eq(up->nservers, 3);
    ck_assert_str_eq(up->servers[0].name, "10.0.0.1:9000");
    ck_assert_str_eq(addr_str(&up->servers[0].addr, buf, sizeof(buf)), "10.0.0.1:9000");
    ck_assert_uint_eq(up->servers[0].addrlen, sizeof(struct sockaddr_in));
    ck_assert_uint_eq(up->servers[0].weight, 3);
    ck_assert_str_eq(up->servers[1].name, "[::1]:9001");
    ck_assert_str_eq(addr_str(&up->servers[1].addr, buf, sizeof(buf)), "[::1]:9001");
    ck_assert_uint_eq(up->servers[1].addrlen, sizeof(struct sockaddr_in6));
    ck_assert_uint_eq(up->servers[1].weight, 1);
    ck_assert_str_eq(up->servers[2].name, "localhost:9002");
    ck_assert_str_eq(addr_str(&up->servers[2].addr, buf, sizeof(buf)), "127.0.0.1:9002");
    ck_assert_uint_eq(up->servers[2].weight, 256);
    ck_assert_int_eq(up->balance, CG_BALANCE_LEASTCONN);
    ck_assert_uint_eq(up->connect_timeout_ms, 120000);
    ck_assert_uint_eq(up->retries, 0);
    ck_assert_uint_eq(up->max_connections_per_server, 5000);
    ck_assert_uint_eq(up->health_check_interval_ms, 3600000);
    ck_assert_uint_eq(up->health_check_timeout_ms, 20000);
    ck_assert_uint_eq(up->health_check_fall, 1);
    ck_assert_uint_eq(up->health_check_rise, 100);
    up = &cfg->upstreams[1];
    ck_assert_int_eq(up->balance, CG_BALANCE_RANDOM);
    ck_assert_uint_eq(up->health_check_interval_ms, 0);

    ck_assert_uint_eq(cfg->nlisteners, 2);
    l = &cfg->listeners[0];
    ck_assert_str_eq(l->name, "ws");
    ck_assert_uint_eq(l->line, 23);
    ck_assert_str_eq(addr_str(&l->addr, buf, sizeof(buf)), "[::1]:8080");
    ck_assert_uint_eq(l->addrlen, sizeof(struct sockaddr_in6));
    ck_assert_int_eq(l->mode, CG_MODE_WEBSOCKET);
    ck_assert_uint_eq(l->upstream, 1);
    ck_assert_uint_eq(l->idle_timeout_ms, 0);
    ck_assert_uint_eq(l->backlog, 65535);
    l = &cfg->listeners[1];
    ck_assert_str_eq(l->bind, "*:80");
    ck_assert_str_eq(addr_str(&l->addr, buf, sizeof(buf)), "0.0.0.0:80");
    ck_assert_uint_eq(l->upstream, 0);
    ck_assert_str_eq(cg_config_listener_upstream(cfg, l)->name, "api");
    cg_config_free(cfg);
}
END_TEST

START_TEST(test_suffixes)
{
    static const char *const dur[][2] = {
        { "250ms", "250" }, { "7s", "7000" }, { "7", "7000" }, { "3m", "180000" },
        { "2h", "7200000" },
    };
    static const char *const size[][2] = {
        { "1024", "1024" }, { "2k", "2048" }, { "1m", "1048576" }, { "1g", "1073741824" },
    };
    struct cg_config *cfg;
    char text[512];
    size_t i;

    for (i = 0; i < sizeof(dur) / sizeof(dur[0]); i++) {
        snprintf(text, sizeof(text), "[gateway]\ndrain_timeout = %s\n" TAIL, dur[i][0]);
        cfg = parse_ok(text);
        ck_assert_uint_eq(cfg->gw.drain_timeout_ms, strtoull(dur[i][1], NULL, 10));
        cg_config_free(cfg);
    }
    for (i = 0; i < sizeof(size) / sizeof(size[0]); i++) {
        snprintf(text, sizeof(text), "[gateway]\nnofile = %s\n" TAIL, size[i][0]);
        cfg = parse_ok(text);
        ck_assert_uint_eq(cfg->gw.nofile, strtoull(size[i][1], NULL, 10));
        cg_config_free(cfg);
    }
}
END_TEST

START_TEST(test_crlf_comments_bom)
{
    static const char text[] =
        "\xEF\xBB\xBF; leading comment\r\n"
        "# another comment\r\n"
        "\r\n"
        "[gateway] ; trailing comment on a header\r\n"
        "  workers = 3   \r\n"
        "log_level = warn ; inline comment\r\n"
        "\t;indented comment\r\n"
        "[listener l]\r\n"
        "bind = 127.0.0.1:8000\r\n"
        "upstream = u\r\n"
        "[ upstream   u ]\r\n"
        "servers = 127.0.0.1:9000\r\n"
        "    ; indented comment after a key is not a continuation\r\n"
        "balance = leastconn";                  /* no newline at the end */
    struct cg_config *cfg = parse_ok(text);

    ck_assert_uint_eq(cfg->gw.workers, 3);
    ck_assert_int_eq(cfg->gw.log_level, CG_LOG_WARN);
    ck_assert_str_eq(cfg->listeners[0].bind, "127.0.0.1:8000");
    ck_assert_str_eq(cfg->upstreams[0].name, "u");
    ck_assert_uint_eq(cfg->upstreams[0].line, 11);
    ck_assert_int_eq(cfg->upstreams[0].balance, CG_BALANCE_LEASTCONN);
    cg_config_free(cfg);

    /* Line numbers count CRLF lines too. */
    EXPECT("\r\n\r\n[gateway]\r\nworkerz = 4\r\n" TAIL,
           "t.ini:4: [gateway] workerz: unknown key");
}
END_TEST

START_TEST(test_long_servers_line)
{
    char text[4096], *p = text;
    struct cg_config *cfg;
    int i;

    p += sprintf(p, "[upstream u]\nservers =");
    for (i = 0; i < 40; i++)
        p += sprintf(p, " 10.0.%d.%d:9000 weight=%d,", i, i + 1, i + 1);
    sprintf(p, "\n[listener l]\nbind = 127.0.0.1:8000\nupstream = u\n");
    ck_assert_uint_gt(strlen(text), 1000);
    cfg = parse_ok(text);
    ck_assert_uint_eq(cfg->upstreams[0].nservers, 40);
    ck_assert_str_eq(cfg->upstreams[0].servers[39].name, "10.0.39.40:9000");
    ck_assert_uint_eq(cfg->upstreams[0].servers[39].weight, 40);
    cg_config_free(cfg);
}
END_TEST

/* The test runs with the repository root as its working directory. */
START_TEST(test_default_file_parses_clean)
{
    struct cg_config *cfg = NULL;
    struct cg_errors errs;
    size_t i;
    int rc;

    cg_errors_init(&errs);
    rc = cg_config_load("conf/corogate.ini", &cfg, &errs);
    for (i = 0; i < cg_errors_count(&errs); i++)
        fprintf(stderr, "conf/corogate.ini: %s\n", cg_errors_get(&errs, i));
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_eq(cg_errors_count(&errs), 0);
    ck_assert_str_eq(cfg->path, "conf/corogate.ini");
    ck_assert_str_eq(cfg->gw.stats_socket, "/tmp/corogate.sock");
    ck_assert_uint_eq(cfg->nlisteners, 1);
    ck_assert_str_eq(cfg->listeners[0].name, "tcp");
    ck_assert_str_eq(cfg->listeners[0].bind, "127.0.0.1:8000");
    ck_assert_int_eq(cfg->listeners[0].mode, CG_MODE_TCP);
    ck_assert_str_eq(cg_config_listener_upstream(cfg, &cfg->listeners[0])->name, "echo");
    ck_assert_uint_eq(cfg->nupstreams, 1);
    ck_assert_str_eq(cfg->upstreams[0].servers[0].name, "127.0.0.1:9000");
    cg_config_free(cfg);
    cg_errors_deinit(&errs);
}
END_TEST

/* Every key of every section appears in conf/corogate.ini, set or commented out. */
START_TEST(test_default_file_documents_every_key)
{
    static const char *const keys[] = {
        "workers", "cpu_pinning", "max_connections", "log_level", "stats_socket",
        "drain_timeout", "nofile", "coro_stall_threshold", "bind", "mode", "upstream",
        "idle_timeout", "backlog", "half_close",
        "servers", "source", "balance", "hash_key", "connect_timeout", "retries",
        "max_connections_per_server",
        "health_check_interval", "health_check_timeout", "health_check_fall",
        "health_check_rise",
    };
    char *text, pat[2][64];
    size_t i;

    text = th_read_file("conf/corogate.ini", NULL);
    ck_assert_msg(text != NULL, "conf/corogate.ini: %s", strerror(errno));
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        snprintf(pat[0], sizeof(pat[0]), "\n%s = ", keys[i]);
        snprintf(pat[1], sizeof(pat[1]), "\n;%s = ", keys[i]);
        ck_assert_msg(strstr(text, pat[0]) || strstr(text, pat[1]), "%s missing", keys[i]);
    }
    free(text);
}
END_TEST

START_TEST(test_load_errors)
{
    struct cg_config *cfg = (void *)1;
    struct cg_errors errs;
    char path[] = "/tmp/cg-test-XXXXXX";
    int fd;

    cg_errors_init(&errs);
    ck_assert_int_eq(cg_config_load("/nonexistent/corogate.ini", &cfg, &errs), -ENOENT);
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(cg_errors_count(&errs), 1);
    ck_assert_str_eq(cg_errors_get(&errs, 0),
                     "/nonexistent/corogate.ini: cannot open: No such file or directory");
    cg_errors_deinit(&errs);

    ck_assert_int_eq(cg_config_load("/tmp", &cfg, &errs), -EISDIR);
    ck_assert_str_eq(cg_errors_get(&errs, 0), "/tmp: cannot read: Is a directory");
    cg_errors_deinit(&errs);

    /* FILE in messages is the path as given. */
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "[gateway]\nworkers = 0\n", 22), 22);
    close(fd);
    ck_assert_int_eq(cg_config_load(path, &cfg, &errs), -EINVAL);
    ck_assert_ptr_null(cfg);
    ck_assert_uint_eq(cg_errors_count(&errs), 2);
    ck_assert_str_eq(cg_errors_get(&errs, 0) + strlen(path),
                     ":2: [gateway] workers: \"0\" is out of range (expected auto or 1..1024)");
    ck_assert_str_eq(cg_errors_get(&errs, 1) + strlen(path), ": no [listener] section");
    ck_assert_int_eq(strncmp(cg_errors_get(&errs, 0), path, strlen(path)), 0);
    cg_errors_deinit(&errs);

    /* errs may be NULL. */
    ck_assert_int_eq(cg_config_load(path, &cfg, NULL), -EINVAL);

    fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "[gateway]\0\n", 11), 11);
    close(fd);
    ck_assert_int_eq(cg_config_load(path, &cfg, &errs), -EINVAL);
    ck_assert_str_eq(cg_errors_get(&errs, 0) + strlen(path),
                     ": not a text file (contains a NUL byte)");
    cg_errors_deinit(&errs);
    unlink(path);
    cg_config_free(NULL);
}
END_TEST

/* ------------------------------------------------------------------ each class of error */

START_TEST(test_error_unknown_key)
{
    EXPECT("[gateway]\nworkers = 2\nworkerz = 4\n" TAIL,
           "t.ini:3: [gateway] workerz: unknown key");
    EXPECT(TAIL "connect_timout = 1s\n",
           "t.ini:6: [upstream u] connect_timout: unknown key");
}
END_TEST

START_TEST(test_error_unknown_section)
{
    EXPECT(TAIL "\n\n\n[listner x]\nbind = 1.2.3.4:5\n",
           "t.ini:9: [listner x]: unknown section");
    EXPECT("[listener]\nbind = 1:2\n" TAIL,
           "t.ini:1: [listener]: missing name (expected [listener NAME])");
    EXPECT("[gateway main]\n" TAIL, "t.ini:1: [gateway main]: takes no name (expected [gateway])");
    EXPECT("[upstream a/b]\n" TAIL,
           "t.ini:1: [upstream a/b]: invalid name (expected [A-Za-z0-9_.-], at most 63 "
           "characters)");
    EXPECT("[upstream x\nservers = 1.2.3.4:5\n" TAIL,
           "t.ini:1: malformed section header \"[upstream x\" (expected [kind NAME])");
}
END_TEST

START_TEST(test_error_bad_duration)
{
    EXPECT("[gateway]\ndrain_timeout = abc\n" TAIL,
           "t.ini:2: [gateway] drain_timeout: \"abc\" is not a duration (e.g. 500ms, 5s, 2m)");
    EXPECT("[gateway]\ndrain_timeout = 5d\n" TAIL,
           "t.ini:2: [gateway] drain_timeout: \"5d\" is not a duration (e.g. 500ms, 5s, 2m)");
    EXPECT("[gateway]\ndrain_timeout =\n" TAIL,
           "t.ini:2: [gateway] drain_timeout: \"\" is not a duration (e.g. 500ms, 5s, 2m)");
    EXPECT(TAIL "connect_timeout = 0\n",
           "t.ini:6: [upstream u] connect_timeout: \"0\" is out of range (expected 1ms..5m)");
    EXPECT(TAIL "connect_timeout = 99999999999999999999h\n",
           "t.ini:6: [upstream u] connect_timeout: \"99999999999999999999h\" is out of range "
           "(expected 1ms..5m)");
}
END_TEST

START_TEST(test_error_bad_size)
{
    EXPECT("[gateway]\nnofile = 12q\n" TAIL,
           "t.ini:2: [gateway] nofile: \"12q\" is not a size (e.g. 4096, 64k, 1m, 1g)");
    EXPECT("[gateway]\nnofile = 2g\n" TAIL,
           "t.ini:2: [gateway] nofile: \"2g\" is out of range (expected 64..1g)");
}
END_TEST

START_TEST(test_error_bad_hostport)
{
    EXPECT("[upstream api]\nservers = 10.0.0.1\n" TAIL,
           "t.ini:2: [upstream api] servers: \"10.0.0.1\" is not host:port");
    EXPECT("[upstream api]\nservers = example.com:80\n" TAIL,
           "t.ini:2: [upstream api] servers: \"example.com:80\" is not host:port (host must be "
           "an IPv4 address, [IPv6 address] or localhost)");
    EXPECT("[upstream api]\nservers = 10.0.0.1:0\n" TAIL,
           "t.ini:2: [upstream api] servers: \"10.0.0.1:0\" is not host:port (port must be "
           "1..65535)");
    EXPECT("[listener x]\nbind = ::1:80\nupstream = u\n" TAIL,
           "t.ini:2: [listener x] bind: \"::1:80\" is not host:port (host must be an IPv4 "
           "address, [IPv6 address], * or localhost)");
    EXPECT("[listener x]\nbind = *:65536\nupstream = u\n" TAIL,
           "t.ini:2: [listener x] bind: \"*:65536\" is not host:port (port must be 0..65535)");
}
END_TEST

START_TEST(test_error_servers_list)
{
    /* Every bad entry of the list is reported. */
    EXPECT("[upstream api]\n"
           "servers = weight=2 1.1.1.1:1 weight=0, 1.1.1.1:2 weight=x 1.1.1.1:1 bad weight=3,"
           " 1.1.1.1:3 weight=2 weight=4\n" TAIL,
           "t.ini:2: [upstream api] servers: \"weight=2\" follows no server",
           "t.ini:2: [upstream api] servers: weight \"0\" is out of range (expected 1..256)",
           "t.ini:2: [upstream api] servers: weight \"x\" is not a number (expected 1..256)",
           "t.ini:2: [upstream api] servers: \"1.1.1.1:1\" is listed twice",
           "t.ini:2: [upstream api] servers: \"bad\" is not host:port",
           "t.ini:2: [upstream api] servers: \"weight=4\": 1.1.1.1:3 already has a weight");
    EXPECT("[upstream api]\nservers = localhost:80 127.0.0.1:80\n" TAIL,
           "t.ini:2: [upstream api] servers: \"127.0.0.1:80\" is listed twice");
    EXPECT("[upstream api]\nservers = , ,\n" TAIL,
           "t.ini:2: [upstream api] servers: no servers listed (expected host:port [weight=N], "
           "...)");
}
END_TEST

START_TEST(test_source)
{
    struct cg_config *cfg = parse_ok("[upstream u]\n"
                                     "servers = 127.0.0.1:9000, [::1]:9001\n"
                                     "source = 127.0.0.2-127.0.0.9, [::1] 127.0.1.1\n"
                                     "[listener l]\nbind = 127.0.0.1:8000\nupstream = u\n");
    const struct cg_upstream_conf *up = &cfg->upstreams[0];
    char buf[INET6_ADDRSTRLEN];

    ck_assert_uint_eq(up->nsources, 3);
    ck_assert_uint_eq(up->nsource4, 9);
    ck_assert_uint_eq(up->nsource6, 1);
    ck_assert_int_eq(up->sources[0].family, AF_INET);
    ck_assert_uint_eq(up->sources[0].count, 8);
    ck_assert_str_eq(inet_ntop(AF_INET, up->sources[0].first, buf, sizeof(buf)), "127.0.0.2");
    ck_assert_int_eq(up->sources[1].family, AF_INET6);
    ck_assert_uint_eq(up->sources[1].count, 1);
    ck_assert_str_eq(inet_ntop(AF_INET6, up->sources[1].first, buf, sizeof(buf)), "::1");
    ck_assert_uint_eq(up->sources[2].count, 1);
    cg_config_free(cfg);

    cfg = parse_ok(TAIL);                       /* none by default */
    ck_assert_ptr_null(cfg->upstreams[0].sources);
    ck_assert_uint_eq(cfg->upstreams[0].nsource4, 0);
    cg_config_free(cfg);
}
END_TEST

START_TEST(test_error_source)
{
    /* 192.0.2.1 is TEST-NET-1: no host owns it. */
    EXPECT("[upstream api]\nservers = 127.0.0.1:1\n"
           "source = x 127.0.0.9-127.0.0.2 127.0.0.1-::1 0.0.0.0 192.0.2.1 127.0.0.1-128.0.0.1"
           " 127.0.0.2-127.0.0.3-4\n" TAIL,
           "t.ini:3: [upstream api] source: \"x\" is not an address or range (expected "
           "10.0.0.2, 10.0.0.2-10.0.0.250 or an IPv6 address)",
           "t.ini:3: [upstream api] source: \"127.0.0.9-127.0.0.2\": the range is reversed or "
           "longer than 16777216 addresses",
           "t.ini:3: [upstream api] source: \"127.0.0.1-::1\": a range cannot mix IPv4 and "
           "IPv6",
           "t.ini:3: [upstream api] source: \"0.0.0.0\": the unspecified address is not a "
           "source (leave source out to let the kernel pick)",
           "t.ini:3: [upstream api] source: \"192.0.2.1\": Cannot assign requested address",
           "t.ini:3: [upstream api] source: \"127.0.0.1-128.0.0.1\": the range is reversed or "
           "longer than 16777216 addresses",
           "t.ini:3: [upstream api] source: \"127.0.0.2-127.0.0.3-4\" is not an address or "
           "range (expected 10.0.0.2, 10.0.0.2-10.0.0.250 or an IPv6 address)");
    /* A server of a family the sources lack. */
    EXPECT("[upstream api]\nservers = 127.0.0.1:1 [::1]:2\nsource = 127.0.0.2\n" TAIL,
           "t.ini:3: [upstream api] source: no IPv6 address for server [::1]:2");
}
END_TEST

START_TEST(test_error_bad_bool)
{
    EXPECT("[gateway]\ncpu_pinning = maybe\n" TAIL,
           "t.ini:2: [gateway] cpu_pinning: \"maybe\" is not a boolean (expected on/off, "
           "yes/no, true/false, 1/0)");
}
END_TEST

/* half_close: on by default, off where set, and only on tcp listeners. */
START_TEST(test_half_close)
{
    struct cg_config *cfg = parse_ok("[listener x]\nbind = 127.0.0.1:1\nupstream = u\n"
                                     "half_close = off\n" TAIL);

    ck_assert_int_eq(cfg->listeners[0].half_close, 0);
    ck_assert_int_eq(cfg->listeners[1].half_close, 1);
    cg_config_free(cfg);
    EXPECT("[listener x]\nbind = 127.0.0.1:1\nupstream = u\nmode = websocket\n"
           "half_close = off\n" TAIL,
           "t.ini:5: [listener x] half_close: only for mode = tcp (a WebSocket connection "
           "ends with its closing handshake)");
    EXPECT("[listener x]\nbind = 127.0.0.1:1\nupstream = u\nhalf_close = sometimes\n" TAIL,
           "t.ini:4: [listener x] half_close: \"sometimes\" is not a boolean (expected on/off, "
           "yes/no, true/false, 1/0)");
}
END_TEST

START_TEST(test_error_out_of_range)
{
    EXPECT("[gateway]\nworkers = 2000\n" TAIL,
           "t.ini:2: [gateway] workers: \"2000\" is out of range (expected auto or 1..1024)");
    EXPECT("[gateway]\nworkers = many\n" TAIL,
           "t.ini:2: [gateway] workers: \"many\" is not a number (expected auto or 1..1024)");
    EXPECT("[gateway]\nmax_connections = 4294967296\n" TAIL,
           "t.ini:2: [gateway] max_connections: \"4294967296\" is out of range (expected "
           "0..4294967295)");
    EXPECT("[gateway]\nmax_connections = -1\n" TAIL,
           "t.ini:2: [gateway] max_connections: \"-1\" is not a number (expected "
           "0..4294967295)");
    EXPECT(TAIL "retries = 17\n",
           "t.ini:6: [upstream u] retries: \"17\" is out of range (expected 0..16)");
    EXPECT(TAIL "retries = 2x\n",
           "t.ini:6: [upstream u] retries: \"2x\" is not a number (expected 0..16)");
    EXPECT("[listener x]\nbind = 127.0.0.1:1\nupstream = u\nbacklog = 0\n" TAIL,
           "t.ini:4: [listener x] backlog: \"0\" is out of range (expected 1..65535)");
}
END_TEST

START_TEST(test_error_bad_choice)
{
    EXPECT("[gateway]\nlog_level = verbose\n" TAIL,
           "t.ini:2: [gateway] log_level: \"verbose\" is not one of: error, warn, notice, info, "
           "debug");
    EXPECT("[listener x]\nbind = 127.0.0.1:1\nupstream = u\nmode = udp\n" TAIL,
           "t.ini:4: [listener x] mode: \"udp\" is not one of: tcp, websocket");
    EXPECT(TAIL "balance = first\n",
           "t.ini:6: [upstream u] balance: \"first\" is not one of: roundrobin, leastconn, "
           "random, hash");
}
END_TEST

/* balance = hash and its hash_key: each form, the default (source), a header name kept
 * lowercase for the listener's handshake, and the one header a websocket listener keeps. */
START_TEST(test_hash_key)
{
    struct cg_config *cfg = parse_ok(
        "[listener t]\nbind = 127.0.0.1:8000\nupstream = src\n"
        "[listener w]\nbind = 127.0.0.1:8001\nmode = websocket\nupstream = hdr\n"
        "routes = /c=cook /q=qry /p=pth /h=hdr2\n"
        "[upstream src]\nservers = 127.0.0.1:9000\nbalance = hash\n"
        "[upstream hdr]\nservers = 127.0.0.1:9000\nbalance = hash\nhash_key = header:X-Sticky\n"
        "[upstream hdr2]\nservers = 127.0.0.1:9000\nbalance = hash\nhash_key = header:x-STICKY\n"
        "[upstream cook]\nservers = 127.0.0.1:9000\nbalance = hash\nhash_key = cookie:SID\n"
        "[upstream qry]\nservers = 127.0.0.1:9000\nbalance = hash\nhash_key = query:room[]\n"
        "[upstream pth]\nservers = 127.0.0.1:9000\nbalance = hash\nhash_key = path\n");
    char buf[80];

    ck_assert_int_eq(cfg->upstreams[0].balance, CG_BALANCE_HASH);
    ck_assert_int_eq(cfg->upstreams[0].hash_key, CG_HASH_SOURCE);
    ck_assert_str_eq(cfg->upstreams[0].hash_key_name, "");
    ck_assert_int_eq(cfg->upstreams[1].hash_key, CG_HASH_HEADER);
    ck_assert_str_eq(cfg->upstreams[1].hash_key_name, "x-sticky");
    ck_assert_int_eq(cfg->upstreams[3].hash_key, CG_HASH_COOKIE);
    ck_assert_str_eq(cfg->upstreams[3].hash_key_name, "SID");           /* case kept */
    ck_assert_int_eq(cfg->upstreams[4].hash_key, CG_HASH_QUERY);
    ck_assert_str_eq(cfg->upstreams[4].hash_key_name, "room[]");
    ck_assert_int_eq(cfg->upstreams[5].hash_key, CG_HASH_PATH);
    ck_assert_str_eq(cg_format_hash_key(&cfg->upstreams[3], buf, sizeof(buf)), "cookie:SID");
    ck_assert_str_eq(cg_format_hash_key(&cfg->upstreams[5], buf, sizeof(buf)), "path");
    ck_assert_str_eq(cg_balance_name(cfg->upstreams[5].balance), "hash");
    ck_assert_str_eq(cfg->listeners[0].hash_header, "");
    ck_assert_str_eq(cfg->listeners[1].hash_header, "x-sticky");
    cg_config_free(cfg);
}
END_TEST

START_TEST(test_error_hash_key)
{
    EXPECT(TAIL "balance = hash\nhash_key = cookie\n",
           "t.ini:7: [upstream u] hash_key: \"cookie\" is not one of: source, header:NAME, "
           "cookie:NAME, query:NAME, path");
    EXPECT(TAIL "balance = hash\nhash_key = header:\n",
           "t.ini:7: [upstream u] hash_key: \"header:\": expected a header: name of 1 to 63 "
           "characters (an HTTP token)");
    EXPECT(TAIL "balance = hash\nhash_key = cookie:a;b\n",
           "t.ini:7: [upstream u] hash_key: \"cookie:a;b\": expected a cookie: name of 1 to 63 "
           "characters (an HTTP token)");
    EXPECT(TAIL "balance = hash\nhash_key = query:a&b\n",
           "t.ini:7: [upstream u] hash_key: \"query:a&b\": expected a query: name of 1 to 63 "
           "characters without &, =, # or blanks");
    EXPECT(TAIL "hash_key = path\n",
           "t.ini:6: [upstream u] hash_key: set, but balance is not hash (hash_key chooses "
           "what balance = hash hashes)");
    /* A tcp listener has no request: only the source address. */
    EXPECT(TAIL "balance = hash\nhash_key = cookie:sid\n",
           "t.ini:3: [listener l] upstream: \"u\" has balance = hash with hash_key = "
           "cookie:sid (line 7), but a tcp listener has no request to take it from: use "
           "hash_key = source there");
    /* One listener, one header. */
    EXPECT("[listener w]\nbind = 127.0.0.1:8000\nmode = websocket\nupstream = a\n"
           "routes = /b=b\n"
           "[upstream a]\nservers = 127.0.0.1:9000\nbalance = hash\nhash_key = header:x-a\n"
           "[upstream b]\nservers = 127.0.0.1:9000\nbalance = hash\nhash_key = header:x-b\n",
           "t.ini:5: [listener w] routes: upstreams \"a\" and \"b\" hash on different headers "
           "(x-a, x-b); the upstreams of one listener may hash on one header only");
}
END_TEST

START_TEST(test_error_missing_required)
{
    EXPECT("[listener web]\nmode = websocket\n" TAIL,
           "t.ini:1: [listener web] bind: required key missing",
           "t.ini:1: [listener web] upstream: required key missing");
    EXPECT(TAIL "[upstream empty]\n",
           "t.ini:6: [upstream empty] servers: required key missing");
}
END_TEST

START_TEST(test_error_unknown_upstream)
{
    EXPECT("[listener web]\nbind = 127.0.0.1:1\n\nupstream = apx\n" TAIL,
           "t.ini:4: [listener web] upstream: unknown upstream \"apx\"");
    EXPECT("[listener web]\nbind = 127.0.0.1:1\nupstream = a b\n" TAIL,
           "t.ini:3: [listener web] upstream: \"a b\" is not an upstream name (expected "
           "[A-Za-z0-9_.-], at most 63 characters)");
}
END_TEST

START_TEST(test_error_duplicates)
{
    EXPECT("[gateway]\nworkers = 2\nworkers = 3\n" TAIL,
           "t.ini:3: [gateway] workers: duplicate key (first at line 2)");
    EXPECT(TAIL "[upstream u]\nservers = 127.0.0.1:1\n",
           "t.ini:6: [upstream u]: duplicate section (first at line 4)");
    EXPECT("[gateway]\n[gateway]\n" TAIL,
           "t.ini:2: [gateway]: duplicate section (first at line 1)");
}
END_TEST

START_TEST(test_listener_and_upstream_share_a_name)
{
    cg_config_free(parse_ok(TAIL "[listener u]\nbind = 127.0.0.1:1\nupstream = u\n"));
}
END_TEST

START_TEST(test_error_duplicate_bind)
{
    EXPECT(TAIL "[listener b]\nbind = 127.0.0.1:8000\nupstream = u\n",
           "t.ini:7: [listener b] bind: \"127.0.0.1:8000\" is already used by [listener l] "
           "(line 2)");
    EXPECT(TAIL "[listener b]\nbind = *:8000\nupstream = u\n",
           "t.ini:7: [listener b] bind: \"*:8000\" overlaps \"127.0.0.1:8000\" of [listener l] "
           "(line 2)");
    EXPECT(TAIL "[listener b]\nbind = localhost:8000\nupstream = u\n",
           "t.ini:7: [listener b] bind: \"localhost:8000\" is already used by [listener l] "
           "(line 2)");
}
END_TEST

START_TEST(test_no_duplicate_bind_false_positives)
{
    struct cg_config *cfg;

    /* Other port, other family, or port 0 (the kernel picks): no conflict. */
    cfg = parse_ok(TAIL "[listener b]\nbind = 127.0.0.1:8001\nupstream = u\n"
                        "[listener c]\nbind = [::]:8000\nupstream = u\n"
                        "[listener d]\nbind = 127.0.0.1:0\nupstream = u\n"
                        "[listener e]\nbind = 127.0.0.1:0\nupstream = u\n");
    ck_assert_uint_eq(cfg->nlisteners, 5);
    cg_config_free(cfg);
}
END_TEST

START_TEST(test_error_no_listener)
{
    EXPECT("[upstream u]\nservers = 127.0.0.1:9000\n", "t.ini: no [listener] section");
    EXPECT("", "t.ini: no [listener] section");
}
END_TEST

START_TEST(test_error_syntax)
{
    EXPECT("[gateway]\nworkers 4\n" TAIL,
           "t.ini:2: [gateway]: expected \"key = value\", got \"workers 4\"");
    EXPECT("= 4\n" TAIL, "t.ini:1: expected \"key = value\", got \"= 4\"");
    EXPECT("workers = 4\n" TAIL, "t.ini:1: workers: key outside any section");
    EXPECT(TAIL "trailing junk", "t.ini:6: [upstream u]: expected \"key = value\", got "
           "\"trailing junk\"");
}
END_TEST

START_TEST(test_error_health_timeout)
{
    EXPECT(TAIL "health_check_interval = 1s\nhealth_check_timeout = 2s\n",
           "t.ini:7: [upstream u] health_check_timeout: 2s is longer than "
           "health_check_interval (1s)");
    EXPECT(TAIL "health_check_interval = 500ms\n",
           "t.ini:4: [upstream u] health_check_timeout: 1s is longer than "
           "health_check_interval (500ms)");
}
END_TEST

START_TEST(test_error_line_too_long)
{
    char *text = malloc(8192), want[256];

    ck_assert_ptr_nonnull(text);
    strcpy(text, "[gateway]\nstats_socket = ");
    memset(text + 25, 'x', 5000);
    strcpy(text + 25 + 5000, "\n" TAIL);
    EXPECT(text, "t.ini:2: line too long (at most 4096 characters)");

    /* Values quoted back in messages are cut to 80 characters. */
    memset(text + 25, 'x', 200);
    strcpy(text + 25 + 200, "\n" TAIL);
    strcpy(want, "t.ini:2: [gateway] stats_socket: \"");
    memset(want + strlen(want), 'x', 80);
    strcpy(want + 34 + 80, "...\" is too long (at most 107 characters)");
    EXPECT(text, want);
    free(text);
}
END_TEST

START_TEST(test_many_errors_all_reported)
{
    static const char text[] =
        "[gateway]\n"                           /* 1 */
        "workerz = 4\n"                         /* 2 */
        "drain_timeout = soon\n"                /* 3 */
        "cpu_pinning = perhaps\n"               /* 4 */
        "[listner x]\n"                         /* 5 */
        "bind = nowhere\n"                      /* 6: ignored, its section was reported */
        "[listener web]\n"                      /* 7 */
        "mode = websocket\n"                    /* 8 */
        "upstream = api\n"                      /* 9 */
        "mode = tcp\n"                          /* 10 */
        "[listener other]\n"                    /* 11 */
        "bind = 0.0.0.0:80\n"                   /* 12 */
        "upstream = nope\n"                     /* 13 */
        "[upstream api]\n"                      /* 14 */
        "servers = 10.0.0.1, 10.0.0.2:9000\n"   /* 15 */
        "retries = 1000\n";                     /* 16 */

    EXPECT(text,
           "t.ini:2: [gateway] workerz: unknown key",
           "t.ini:3: [gateway] drain_timeout: \"soon\" is not a duration (e.g. 500ms, 5s, 2m)",
           "t.ini:4: [gateway] cpu_pinning: \"perhaps\" is not a boolean (expected on/off, "
           "yes/no, true/false, 1/0)",
           "t.ini:5: [listner x]: unknown section",
           "t.ini:7: [listener web] bind: required key missing",
           "t.ini:10: [listener web] mode: duplicate key (first at line 8)",
           "t.ini:13: [listener other] upstream: unknown upstream \"nope\"",
           "t.ini:15: [upstream api] servers: \"10.0.0.1\" is not host:port",
           "t.ini:16: [upstream api] retries: \"1000\" is out of range (expected 0..16)");
}
END_TEST

Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc;

    tc = tcase_create("values");
    tcase_add_test(tc, test_parse_duration);
    tcase_add_test(tc, test_parse_size);
    tcase_add_test(tc, test_parse_bool);
    tcase_add_test(tc, test_parse_hostport);
    tcase_add_test(tc, test_format_duration);
    tcase_add_test(tc, test_errors_list);
    suite_add_tcase(s, tc);

    tc = tcase_create("good");
    tcase_add_test(tc, test_defaults);
    tcase_add_test(tc, test_every_key);
    tcase_add_test(tc, test_suffixes);
    tcase_add_test(tc, test_crlf_comments_bom);
    tcase_add_test(tc, test_long_servers_line);
    tcase_add_test(tc, test_source);
    tcase_add_test(tc, test_default_file_parses_clean);
    tcase_add_test(tc, test_default_file_documents_every_key);
    tcase_add_test(tc, test_no_duplicate_bind_false_positives);
    tcase_add_test(tc, test_listener_and_upstream_share_a_name);
    suite_add_tcase(s, tc);

    tc = tcase_create("errors");
    tcase_add_test(tc, test_load_errors);
    tcase_add_test(tc, test_error_unknown_key);
    tcase_add_test(tc, test_error_unknown_section);
    tcase_add_test(tc, test_error_bad_duration);
    tcase_add_test(tc, test_error_bad_size);
    tcase_add_test(tc, test_error_bad_hostport);
    tcase_add_test(tc, test_error_servers_list);
    tcase_add_test(tc, test_error_source);
    tcase_add_test(tc, test_error_bad_bool);
    tcase_add_test(tc, test_half_close);
    tcase_add_test(tc, test_error_out_of_range);
    tcase_add_test(tc, test_error_bad_choice);
    tcase_add_test(tc, test_error_hash_key);
    tcase_add_test(tc, test_hash_key);
    tcase_add_test(tc, test_error_missing_required);
    tcase_add_test(tc, test_error_unknown_upstream);
    tcase_add_test(tc, test_error_duplicates);
    tcase_add_test(tc, test_error_duplicate_bind);
    tcase_add_test(tc, test_error_no_listener);
    tcase_add_test(tc, test_error_syntax);
    tcase_add_test(tc, test_error_health_timeout);
    tcase_add_test(tc, test_error_line_too_long);
    tcase_add_test(tc, test_many_errors_all_reported);
    suite_add_tcase(s, tc);
    return s;
}
