/* gateway/base/access-log.h — the connection log: one line per connection when it ends, in
 * the manner of HAProxy's log, to stderr, syslog (/dev/log) or journald's native socket.
 *
 * The worker never blocks on it and never formats: it copies a fixed record
 * (struct cg_alog_rec) into its own bounded ring (one producer, one consumer) and goes on.
 * One writer thread empties every ring, formats the line (text or JSON) and writes it.
 * When a ring is full the record is dropped and the worker counts it
 * (cg_worker_stats.log_dropped: corogate_log_lines_dropped_total), so an overloaded or
 * blocked destination costs lines, never latency.
 *
 * Text (one line, fields separated by one space, "-" for what does not apply):
 *
 *     TIME CLIENT:PORT LISTENER WORKER UPSTREAM/SERVER HS/CONNECT/TOTAL BYTES_IN BYTES_OUT
 *     MSGS_IN/MSGS_OUT TERMINATION CLOSE_CLIENT/CLOSE_SERVER REQUEST_ID
 *
 * JSON: one object per line with the same fields by name (null for "-"). README.md
 * ("Connection log") shows both with an example.
 */
#ifndef CG_ACCESS_LOG_H
#define CG_ACCESS_LOG_H

#include <stddef.h>
#include <stdint.h>

/* [gateway] access_log: where the lines go. */
enum cg_alog_sink {
    CG_ALOG_OFF,
    CG_ALOG_STDERR,
    CG_ALOG_SYSLOG,             /* RFC 3164 datagrams to /dev/log, facility local0 */
    CG_ALOG_JOURNAL,            /* journald's native protocol, structured fields */
};

/* [gateway] access_log_format */
enum cg_alog_format {
    CG_ALOG_TEXT,
    CG_ALOG_JSON,
};

#define CG_ALOG_NAME_MAX  64    /* listener, upstream, server: config names, NUL included */
#define CG_ALOG_ID_MAX    129   /* X-Request-Id (REQUEST_ID_MAX + 1) */
#define CG_ALOG_NONE      UINT32_MAX    /* a duration not reached: "-1" */

/* One ended connection, as a worker hands it over: fixed size, no pointers to anything
 * that could go away (names are copied; <term> is a static string). */
struct cg_alog_rec {
    uint64_t     start_ms;          /* accepted at, wall clock, ms since the epoch */
    uint64_t     bytes_in;          /* from the client, on its socket */
    uint64_t     bytes_out;         /* to the client */
    const char  *term;              /* termination cause ("client", "idle"...) */
    uint32_t     hs_ms;             /* accept to the client's handshake done, or NONE */
    uint32_t     connect_ms;        /* upstream connect (retries included), or NONE */
    uint32_t     total_ms;          /* accept to close */
    uint32_t     msgs_in;           /* WebSocket messages from the client */
    uint32_t     msgs_out;          /* ... to the client */
    uint16_t     client_port;
    uint16_t     close_client;      /* close code the client sent (0: none) */
    uint16_t     close_server;      /* close code the server sent (0: none) */
    uint16_t     worker;
    uint8_t      family;            /* AF_INET, AF_INET6, or 0: unknown */
    uint8_t      websocket;         /* 1: msgs and close codes apply */
    uint8_t      sink;              /* enum cg_alog_sink, not OFF */
    uint8_t      format;            /* enum cg_alog_format */
    uint8_t      client_addr[16];   /* network order; IPv4 in the first 4 */
    char         listener[CG_ALOG_NAME_MAX];
    char         upstream[CG_ALOG_NAME_MAX];    /* "" = none */
    char         server[CG_ALOG_NAME_MAX];      /* "" = none connected */
    char         request_id[CG_ALOG_ID_MAX];    /* "" = none */
};

struct cg_alog;

/* The destinations' paths (a test or a chroot sets its own), the queue per worker. */
struct cg_alog_conf {
    const char  *syslog_path;       /* NULL: /dev/log */
    const char  *journal_path;      /* NULL: /run/systemd/journal/socket */
    unsigned     queue;             /* records per worker ring, >= 1 */
};

/* Makes the log for <nworkers> producers with <conf> (copied) and starts its writer
 * thread. Returns it, or NULL with errno set. The rings' memory is only touched as lines
 * flow (calloc: an idle ring costs address space, not resident memory). */
struct cg_alog *cg_alog_new(unsigned nworkers, const struct cg_alog_conf *conf);

/* Stops the writer once it has written every record queued (call it after the producers
 * ended) and frees <a>. NULL-safe. */
void cg_alog_free(struct cg_alog *a);

/* Queues a copy of <rec> on ring <worker>: only that worker's thread calls this. Never
 * blocks. Returns 0, or -ENOBUFS when the ring is full (the caller counts the drop). */
int cg_alog_push(struct cg_alog *a, unsigned worker, const struct cg_alog_rec *rec);

/* Test hook (`debug log-writer pause|resume`, CG_TEST_HOOKS=1): <paused> 1 stops the
 * writer taking records (the rings fill), 0 lets it go on. Returns once the writer has
 * seen it: after a pause, it takes nothing more until resumed. */
void cg_alog_pause(struct cg_alog *a, int paused);

/* Lines written since the start (all destinations; a datagram a socket refused counts
 * as written: it left us). */
uint64_t cg_alog_written(const struct cg_alog *a);

/* Formats <rec> as one line without its newline into <buf> of <size> (text or JSON by
 * rec->format). Returns the length (cut to size - 1). Exported for tests. */
size_t cg_alog_format(const struct cg_alog_rec *rec, char *buf, size_t size);

/* "off", "stderr", ... for enum cg_alog_sink; "text", "json" for enum cg_alog_format. */
const char *cg_alog_sink_name(int sink);
const char *cg_alog_format_name(int format);

#endif
