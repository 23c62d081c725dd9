/* tests/test_log.c — log levels, the line format and the rate limiter. stderr goes to a
 * pipe while a test logs, and what came out is compared. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gateway/base/log.h"

struct capture {
    int       saved;    /* the real stderr */
    int       rd;       /* read end of the pipe now on fd 2 */
    pthread_t reader;
    char     *out;
    size_t    len, cap;
};

/* Drains the pipe as it fills, so that writers never block on a full pipe. */
static void *capture_reader(void *arg)
{
    struct capture *c = arg;
    ssize_t n;

    for (;;) {
        if (c->cap - c->len < 4096) {
            c->cap *= 2;
            c->out = realloc(c->out, c->cap);
            if (!c->out)
                abort();
        }
        n = read(c->rd, c->out + c->len, c->cap - c->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        c->len += (size_t)n;
    }
    c->out[c->len] = '\0';
    return NULL;
}

static void capture_start(struct capture *c)
{
    int fds[2];

    ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
    c->len = 0;
    c->cap = 1 << 16;
    c->out = malloc(c->cap);
    ck_assert_ptr_nonnull(c->out);
    c->rd = fds[0];
    ck_assert_int_eq(pthread_create(&c->reader, NULL, capture_reader, c), 0);
    c->saved = dup(STDERR_FILENO);
    ck_assert_int_ge(c->saved, 0);
    ck_assert_int_ge(dup2(fds[1], STDERR_FILENO), 0);
    close(fds[1]);
}

/* Restores stderr and returns what was written meanwhile (caller frees). */
static char *capture_stop(struct capture *c)
{
    dup2(c->saved, STDERR_FILENO);      /* closes the last write end: the reader sees EOF */
    close(c->saved);
    pthread_join(c->reader, NULL);
    close(c->rd);
    return c->out;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;

    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void setup(void)
{
    cg_log_set_color(0);
    cg_log_set_level(CG_LOG_INFO);
    cg_log_set_worker(-1);
}

START_TEST(test_level_parse)
{
    ck_assert_int_eq(cg_log_level_parse("error"), CG_LOG_ERROR);
    ck_assert_int_eq(cg_log_level_parse("warn"), CG_LOG_WARN);
    ck_assert_int_eq(cg_log_level_parse("warning"), CG_LOG_WARN);
    ck_assert_int_eq(cg_log_level_parse("notice"), CG_LOG_NOTICE);
    ck_assert_int_eq(cg_log_level_parse("info"), CG_LOG_INFO);
    ck_assert_int_eq(cg_log_level_parse("DEBUG"), CG_LOG_DEBUG);
    ck_assert_int_eq(cg_log_level_parse("verbose"), -EINVAL);
    ck_assert_int_eq(cg_log_level_parse(""), -EINVAL);
    ck_assert_int_eq(cg_log_level_parse(NULL), -EINVAL);
    ck_assert_str_eq(cg_log_level_name(CG_LOG_NOTICE), "notice");
    ck_assert_str_eq(cg_log_level_name((enum cg_log_level)42), "?");
}
END_TEST

START_TEST(test_line_format)
{
    struct capture c;
    regex_t re;
    char *out, pattern[512];
    long pid = (long)getpid();

    capture_start(&c);
    cg_info("hello %d", 42);
    cg_log_set_worker(3);
    ck_assert_int_eq(cg_log_get_worker(), 3);
    cg_error("worker line");
    cg_log_set_worker(-1);
    cg_warn("bad\nbyte\033[31m");
    out = capture_stop(&c);

    snprintf(pattern, sizeof(pattern),
             "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z "
             "corogate\\[%ld\\] INFO: hello 42\n"
             "[0-9TZ:.-]{24} corogate\\[%ld\\] ERROR worker=3: worker line\n"
             "[0-9TZ:.-]{24} corogate\\[%ld\\] WARN: bad\\?byte\\?\\[31m\n$", pid, pid, pid);
    ck_assert_int_eq(regcomp(&re, pattern, REG_EXTENDED), 0);
    ck_assert_msg(regexec(&re, out, 0, NULL, 0) == 0, "got: %s", out);
    regfree(&re);
    free(out);
}
END_TEST

START_TEST(test_levels_filter)
{
    struct capture c;
    char *out;
    int evaluated = 0;

    ck_assert_int_eq(cg_log_get_level(), CG_LOG_INFO);
    capture_start(&c);
    cg_error("e");
    cg_warn("w");
    cg_notice("n");
    cg_info("i");
    cg_debug("d %d", ++evaluated);      /* off: arguments not even evaluated */
    cg_log_set_level(CG_LOG_WARN);
    ck_assert_int_eq(cg_log_get_level(), CG_LOG_WARN);
    cg_notice("n2");
    cg_warn("w2");
    cg_log_set_level(CG_LOG_DEBUG);
    cg_debug("d2");
    out = capture_stop(&c);

    ck_assert_int_eq(evaluated, 0);
    ck_assert_uint_eq(count_lines(out), 6);
    ck_assert_ptr_nonnull(strstr(out, " ERROR: e\n"));
    ck_assert_ptr_nonnull(strstr(out, " WARN: w\n"));
    ck_assert_ptr_nonnull(strstr(out, " NOTICE: n\n"));
    ck_assert_ptr_nonnull(strstr(out, " INFO: i\n"));
    ck_assert_ptr_null(strstr(out, ": d 1\n"));
    ck_assert_ptr_null(strstr(out, ": n2\n"));
    ck_assert_ptr_nonnull(strstr(out, " WARN: w2\n"));
    ck_assert_ptr_nonnull(strstr(out, " DEBUG: d2\n"));
    free(out);
}
END_TEST

START_TEST(test_color)
{
    struct capture c;
    char *out;

    unsetenv("NO_COLOR");               /* each test runs in its own process */
    capture_start(&c);
    cg_log_set_color(1);
    cg_error("red");
    cg_info("plain");
    cg_log_set_color(-1);               /* automatic: a pipe is not a TTY */
    cg_error("auto");
    setenv("NO_COLOR", "", 1);          /* set, even empty: no colour, even when forced */
    cg_log_set_color(1);
    cg_error("no color");
    unsetenv("NO_COLOR");
    out = capture_stop(&c);
    ck_assert_ptr_nonnull(strstr(out, " \033[31mERROR\033[0m: red\n"));
    ck_assert_ptr_nonnull(strstr(out, " INFO: plain\n"));
    ck_assert_ptr_nonnull(strstr(out, " ERROR: auto\n"));
    ck_assert_ptr_nonnull(strstr(out, " ERROR: no color\n"));
    free(out);
}
END_TEST

START_TEST(test_long_line_cut)
{
    struct capture c;
    char *out, *big = malloc(10000);
    size_t len;

    ck_assert_ptr_nonnull(big);
    memset(big, 'a', 9999);
    big[9999] = '\0';
    capture_start(&c);
    cg_info("%s", big);
    out = capture_stop(&c);
    len = strlen(out);
    ck_assert_uint_eq(count_lines(out), 1);
    ck_assert_uint_le(len, CG_LOG_LINE_MAX);
    ck_assert_str_eq(out + len - 5, "a...\n");
    free(out);
    free(big);
}
END_TEST

#define THREADS 8
#define PER_THREAD 200

static void *log_thread(void *arg)
{
    int id = (int)(long)arg, i;

    cg_log_set_worker(id);
    for (i = 0; i < PER_THREAD; i++)
        cg_info("%0200d", i);
    return NULL;
}

/* Lines from several threads come out whole. */
START_TEST(test_threads_do_not_interleave)
{
    pthread_t t[THREADS];
    struct capture c;
    char *out, *line, *save = NULL;
    size_t n = 0;
    long i;

    capture_start(&c);
    for (i = 0; i < THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, log_thread, (void *)i), 0);
    for (i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    out = capture_stop(&c);
    for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        ck_assert_ptr_nonnull(strstr(line, " INFO worker="));
        ck_assert_uint_eq(strlen(strstr(line, ": ") + 2), 200);
        n++;
    }
    ck_assert_uint_eq(n, THREADS * PER_THREAD);
    free(out);
}
END_TEST

START_TEST(test_ratelimit_check)
{
    struct cg_ratelimit rl = CG_RATELIMIT_INIT(1000, 3);
    unsigned int missed = 99;
    int i;

    for (i = 0; i < 3; i++) {
        ck_assert_int_eq(cg_ratelimit_check(&rl, 5000 + (uint64_t)i, &missed), 1);
        ck_assert_uint_eq(missed, 0);
    }
    for (i = 0; i < 5; i++)
        ck_assert_int_eq(cg_ratelimit_check(&rl, 5500, &missed), 0);
    ck_assert_int_eq(cg_ratelimit_check(&rl, 5999, &missed), 0);
    /* A new interval: allowed again, and told how many were dropped. */
    ck_assert_int_eq(cg_ratelimit_check(&rl, 6000, &missed), 1);
    ck_assert_uint_eq(missed, 6);
    ck_assert_int_eq(cg_ratelimit_check(&rl, 6001, &missed), 1);
    ck_assert_uint_eq(missed, 0);

    /* interval 0 or burst 0: no limit. */
    cg_ratelimit_init(&rl, 0, 5);
    for (i = 0; i < 100; i++)
        ck_assert_int_eq(cg_ratelimit_check(&rl, 1, &missed), 1);
}
END_TEST

START_TEST(test_ratelimited_log)
{
    static struct cg_ratelimit rl = CG_RATELIMIT_INIT(100, 2);
    struct timespec ts = { 0, 150 * 1000000 };
    struct capture c;
    char *out;
    int i;

    capture_start(&c);
    for (i = 0; i < 10; i++)
        cg_log_ratelimited(&rl, CG_LOG_WARN, "conn %d reset", i);
    cg_log_ratelimited(&rl, CG_LOG_DEBUG, "off: not counted");
    nanosleep(&ts, NULL);
    cg_log_ratelimited(&rl, CG_LOG_WARN, "conn %d reset", 10);
    out = capture_stop(&c);

    ck_assert_uint_eq(count_lines(out), 4);
    ck_assert_ptr_nonnull(strstr(out, " WARN: conn 0 reset\n"));
    ck_assert_ptr_nonnull(strstr(out, " WARN: conn 1 reset\n"));
    ck_assert_ptr_null(strstr(out, "conn 2 reset"));
    ck_assert_ptr_nonnull(strstr(out, " WARN: suppressed 8 messages\n"));
    ck_assert_ptr_nonnull(strstr(out, " WARN: conn 10 reset\n"));
    ck_assert(strstr(out, "suppressed") < strstr(out, "conn 10"));
    free(out);
}
END_TEST

Suite *log_suite(void)
{
    Suite *s = suite_create("log");
    TCase *tc = tcase_create("log");

    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, test_level_parse);
    tcase_add_test(tc, test_line_format);
    tcase_add_test(tc, test_levels_filter);
    tcase_add_test(tc, test_color);
    tcase_add_test(tc, test_long_line_cut);
    tcase_add_test(tc, test_threads_do_not_interleave);
    tcase_add_test(tc, test_ratelimit_check);
    tcase_add_test(tc, test_ratelimited_log);
    suite_add_tcase(s, tc);
    return s;
}
