/* gateway/base/log.h — leveled logging to stderr, one line per event.
 *
 * Every line is written with a single write(2), so lines from different threads never
 * interleave:
 *
 *     2026-11-27T13:50:01.123Z corogate[1234] INFO worker=3: message
 *
 * The timestamp is UTC with milliseconds; " worker=N" appears only on threads that called
 * cg_log_set_worker() with N >= 0. The level word is coloured only when stderr is a TTY
 * and NO_COLOR is not set (set to anything, even empty, it turns colour off). A line is at
 * most CG_LOG_LINE_MAX bytes; longer messages are cut and end with "...". Control
 * characters in the message become '?'.
 */
#ifndef CG_LOG_H
#define CG_LOG_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>

#define CG_LOG_LINE_MAX 4096    /* bytes per line, newline included (<= PIPE_BUF) */

/* Ordered from most to least severe: a level enables itself and every level above it. */
enum cg_log_level {
    CG_LOG_ERROR,
    CG_LOG_WARN,
    CG_LOG_NOTICE,
    CG_LOG_INFO,
    CG_LOG_DEBUG,
};

/* The current level; read it through cg_log_enabled(), write it with cg_log_set_level(). */
extern _Atomic int cg__log_level;

/* 1 when a line at <lvl> would be written, 0 otherwise. Cheap: one relaxed atomic load. */
#define cg_log_enabled(lvl) \
    ((int)(lvl) <= atomic_load_explicit(&cg__log_level, memory_order_relaxed))

/* The macros skip formatting (and evaluating the arguments) when the level is off. */
#define cg_error(...)  cg__log_if(CG_LOG_ERROR, __VA_ARGS__)
#define cg_warn(...)   cg__log_if(CG_LOG_WARN, __VA_ARGS__)
#define cg_notice(...) cg__log_if(CG_LOG_NOTICE, __VA_ARGS__)
#define cg_info(...)   cg__log_if(CG_LOG_INFO, __VA_ARGS__)
#define cg_debug(...)  cg__log_if(CG_LOG_DEBUG, __VA_ARGS__)

#define cg__log_if(lvl, ...)                     \
    do {                                         \
        if (cg_log_enabled(lvl))                 \
            cg_log((lvl), __VA_ARGS__);          \
    } while (0)

/* Parses a level name ("error", "warn", "notice", "info", "debug"; case-insensitive;
 * "warning" is accepted for "warn"). Returns the level, or -EINVAL for anything else
 * (including NULL). */
int cg_log_level_parse(const char *s);

/* Returns the lowercase name of <lvl> ("info"), or "?" when <lvl> is out of range. */
const char *cg_log_level_name(enum cg_log_level lvl);

/* Sets the level for every thread. Safe to call from any thread at any time (reload). */
void cg_log_set_level(enum cg_log_level lvl);

/* Returns the current level. */
enum cg_log_level cg_log_get_level(void);

/* Tags the lines of the calling thread with " worker=<id>"; -1 (the default, for the main
 * thread) removes the tag. Thread-local. */
void cg_log_set_worker(int id);

/* Returns the calling thread's worker id, -1 when none is set. */
int cg_log_get_worker(void);

/* Forces colour on (1) or off (0), or back to automatic (-1: on when stderr is a TTY),
 * decided at the first line written after this call. NO_COLOR in the environment always
 * turns colour off. */
void cg_log_set_color(int on);

/* Writes one line at <lvl> unconditionally (the macros check the level first). */
void cg_log(enum cg_log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Same as cg_log() with a va_list. */
void cg_vlog(enum cg_log_level lvl, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* A rate limit for one kind of event: at most <burst> lines per <interval_ms>. Embed one
 * per event kind (per listener, per worker, ...), initialise it with CG_RATELIMIT_INIT or
 * cg_ratelimit_init(). Shareable between threads: a call that finds another thread inside
 * counts as suppressed. */
struct cg_ratelimit {
    uint64_t         interval_ms;
    unsigned int     burst;
    uint64_t         begin_ms;      /* start of the current interval, 0 = none yet */
    unsigned int     printed;       /* lines allowed in the current interval */
    _Atomic unsigned missed;        /* lines suppressed since the last report */
    atomic_flag      lock;
};

#define CG_RATELIMIT_INIT(interval, n) \
    { .interval_ms = (interval), .burst = (n), .lock = ATOMIC_FLAG_INIT }

/* Sets <rl> to allow <burst> lines per <interval_ms> milliseconds. */
void cg_ratelimit_init(struct cg_ratelimit *rl, uint64_t interval_ms, unsigned int burst);

/* Decides whether an event at <now_ms> (a monotonic clock, > 0) may be logged. Returns 1 to
 * log it, 0 to suppress it (counted). When it returns 1 after suppressing, *<missed> is set
 * to how many events were suppressed since the last report (else 0), and the count restarts.
 * Exported for tests; cg_log_ratelimited() is the usual entry point. */
int cg_ratelimit_check(struct cg_ratelimit *rl, uint64_t now_ms, unsigned int *missed);

/* Logs like cg_log() when <lvl> is enabled and <rl> allows it. The first line allowed after
 * a suppression is preceded by "suppressed K messages" at the same level. Lines skipped
 * because <lvl> is off are not counted. */
void cg_log_ratelimited(struct cg_ratelimit *rl, enum cg_log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* CG_LOG_H */
