/* gateway/base/log.c — leveled logging to stderr; see log.h for the line format. */
#include "base/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

_Atomic int cg__log_level = CG_LOG_INFO;

static _Thread_local int log_worker = -1;
static const char *log_ident = "corogate";
static _Atomic int log_color = -1;          /* -1 = not decided yet */
static _Atomic int log_color_forced = -1;   /* -1 = automatic */

static const char *const level_names[] = {
    [CG_LOG_ERROR]  = "error",
    [CG_LOG_WARN]   = "warn",
    [CG_LOG_NOTICE] = "notice",
    [CG_LOG_INFO]   = "info",
    [CG_LOG_DEBUG]  = "debug",
};

static const char *const level_words[] = {
    [CG_LOG_ERROR]  = "ERROR",
    [CG_LOG_WARN]   = "WARN",
    [CG_LOG_NOTICE] = "NOTICE",
    [CG_LOG_INFO]   = "INFO",
    [CG_LOG_DEBUG]  = "DEBUG",
};

/* SGR sequences: red, yellow, bold, default, dim. */
static const char *const level_colors[] = {
    [CG_LOG_ERROR]  = "\033[31m",
    [CG_LOG_WARN]   = "\033[33m",
    [CG_LOG_NOTICE] = "\033[1m",
    [CG_LOG_INFO]   = "",
    [CG_LOG_DEBUG]  = "\033[2m",
};

#define N_LEVELS ((int)(sizeof(level_names) / sizeof(level_names[0])))

int cg_log_level_parse(const char *s)
{
    int i;

    if (!s)
        return -EINVAL;
    for (i = 0; i < N_LEVELS; i++)
        if (strcasecmp(s, level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return CG_LOG_WARN;
    return -EINVAL;
}

const char *cg_log_level_name(enum cg_log_level lvl)
{
    if ((int)lvl < 0 || (int)lvl >= N_LEVELS)
        return "?";
    return level_names[lvl];
}

void cg_log_set_level(enum cg_log_level lvl)
{
    if ((int)lvl < 0)
        lvl = CG_LOG_ERROR;
    if ((int)lvl >= N_LEVELS)
        lvl = CG_LOG_DEBUG;
    atomic_store_explicit(&cg__log_level, (int)lvl, memory_order_relaxed);
}

enum cg_log_level cg_log_get_level(void)
{
    return (enum cg_log_level)atomic_load_explicit(&cg__log_level, memory_order_relaxed);
}

void cg_log_set_worker(int id)
{
    log_worker = id < 0 ? -1 : id;
}

int cg_log_get_worker(void)
{
    return log_worker;
}

void cg_log_set_color(int on)
{
    atomic_store(&log_color_forced, on < 0 ? -1 : !!on);
    atomic_store(&log_color, -1);
}

static int use_color(void)
{
    int c = atomic_load_explicit(&log_color, memory_order_relaxed);

    if (c >= 0)
        return c;
    /* NO_COLOR (https://no-color.org) wins, even over cg_log_set_color(1). */
    if (getenv("NO_COLOR"))
        c = 0;
    else
        c = atomic_load(&log_color_forced);
    if (c < 0)
        c = isatty(STDERR_FILENO);
    atomic_store(&log_color, c);
    return c;
}

/* Appends to <buf> of <size> at *<len>; keeps *<len> < size so a NUL always fits. */
static void append(char *buf, size_t size, size_t *len, const char *s)
{
    size_t n = strlen(s);

    if (n > size - 1 - *len)
        n = size - 1 - *len;
    memcpy(buf + *len, s, n);
    *len += n;
    buf[*len] = '\0';
}

void cg_vlog(enum cg_log_level lvl, const char *fmt, va_list ap)
{
    char line[CG_LOG_LINE_MAX];
    char head[128];
    struct timespec ts;
    struct tm tm;
    size_t len = 0, start, i;
    int color, n, saved_errno = errno;
    ssize_t w;

    if ((int)lvl < 0 || (int)lvl >= N_LEVELS)
        lvl = CG_LOG_ERROR;
    color = use_color() && level_colors[lvl][0];

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(head, sizeof(head), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %.40s[%ld] ",
                 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                 tm.tm_sec, ts.tv_nsec / 1000000, log_ident, (long)getpid());
    if (n < 0)
        head[0] = '\0';
    append(line, sizeof(line), &len, head);
    if (color)
        append(line, sizeof(line), &len, level_colors[lvl]);
    append(line, sizeof(line), &len, level_words[lvl]);
    if (color)
        append(line, sizeof(line), &len, "\033[0m");
    if (log_worker >= 0) {
        snprintf(head, sizeof(head), " worker=%d", log_worker);
        append(line, sizeof(line), &len, head);
    }
    append(line, sizeof(line), &len, ": ");

    /* The message itself, leaving room for "...\n". */
    start = len;
    errno = saved_errno;                /* so that %m works */
    n = vsnprintf(line + len, sizeof(line) - len - 4, fmt, ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof(line) - len - 4) {
        len = sizeof(line) - 5;
        memcpy(line + len, "...", 3);
        len += 3;
    } else {
        len += (size_t)n;
    }
    /* One event, one line: user-supplied bytes must not forge lines or escape codes. */
    for (i = start; i < len; i++)
        if (((unsigned char)line[i] < 0x20 && line[i] != '\t') || line[i] == 0x7f)
            line[i] = '?';
    line[len++] = '\n';

    /* A single write(2): lines from several threads never interleave (<= PIPE_BUF). */
    do {
        w = write(STDERR_FILENO, line, len);
    } while (w < 0 && errno == EINTR);
    errno = saved_errno;
}

void cg_log(enum cg_log_level lvl, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    cg_vlog(lvl, fmt, ap);
    va_end(ap);
}

void cg_ratelimit_init(struct cg_ratelimit *rl, uint64_t interval_ms, unsigned int burst)
{
    rl->interval_ms = interval_ms;
    rl->burst = burst;
    rl->begin_ms = 0;
    rl->printed = 0;
    atomic_init(&rl->missed, 0);
    atomic_flag_clear(&rl->lock);
}

int cg_ratelimit_check(struct cg_ratelimit *rl, uint64_t now_ms, unsigned int *missed)
{
    int ok;

    *missed = 0;
    if (rl->interval_ms == 0 || rl->burst == 0)
        return 1;
    /* Never wait for another thread: an event that finds the limiter busy is dropped. */
    if (atomic_flag_test_and_set_explicit(&rl->lock, memory_order_acquire)) {
        atomic_fetch_add(&rl->missed, 1);
        return 0;
    }
    if (rl->begin_ms == 0 || now_ms - rl->begin_ms >= rl->interval_ms) {
        rl->begin_ms = now_ms ? now_ms : 1;
        rl->printed = 0;
    }
    ok = rl->printed < rl->burst;
    if (ok) {
        rl->printed++;
        *missed = atomic_exchange(&rl->missed, 0);
    } else {
        atomic_fetch_add(&rl->missed, 1);
    }
    atomic_flag_clear_explicit(&rl->lock, memory_order_release);
    return ok;
}

void cg_log_ratelimited(struct cg_ratelimit *rl, enum cg_log_level lvl, const char *fmt, ...)
{
    struct timespec ts;
    unsigned int missed;
    uint64_t now;
    va_list ap;

    if (!cg_log_enabled(lvl))
        return;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 + 1;
    if (!cg_ratelimit_check(rl, now, &missed))
        return;
    if (missed)
        cg_log(lvl, "suppressed %u messages", missed);
    va_start(ap, fmt);
    cg_vlog(lvl, fmt, ap);
    va_end(ap);
}
