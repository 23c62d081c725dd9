/* gateway/config/config.h — the ini configuration: types, loading, validation, value parsers.
 *
 * The file is split into lines and keys by inih; every check is ours. Sections:
 * [gateway], [admission], [breaker] and [bpf] (at most one each), [listener NAME] and
 * [upstream NAME] (any number, NAME unique per kind, [A-Za-z0-9_.-]+, at most
 * CG_CONF_NAME_MAX - 1 characters). Some [admission] and [breaker] keys may also be set in a
 * listener or an upstream, for that one only. conf/corogate.ini documents every key.
 * Defaults live in one place: the key tables in config.c, written as the strings a user
 * would put in the file and parsed by the same code.
 *
 * Every error is collected, one message each, formatted as
 *     FILE:LINE: [SECTION] KEY: message      (a key's value)
 *     FILE:LINE: [SECTION]: message          (a section header)
 *     FILE: message                          (the whole file)
 * and sorted by line number.
 */
#ifndef CG_CONFIG_H
#define CG_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "base/access-log.h"
#include "base/log.h"
#include "config/limits.h"

/* A growable list of error messages (owned copies). */
struct cg_errors {
    char   **msgs;
    size_t   count;
    size_t   cap;
};

enum cg_listener_mode {
    CG_MODE_TCP,
    CG_MODE_WEBSOCKET,
};

/* What a websocket listener speaks to its upstream. */
enum cg_upstream_protocol {
    CG_UPROTO_WEBSOCKET,        /* a WebSocket backend: messages relayed frame by frame */
    CG_UPROTO_TCP,              /* a plain TCP backend: payloads as a byte stream */
};

/* What a websocket connection over its message rate limit gets. */
enum cg_rate_action {
    CG_RATE_DELAY,              /* stop reading it until the buckets refill */
    CG_RATE_CLOSE,              /* close 1008 (policy violation) */
};

struct cg_route;
struct cg_cidr;

/* permessage-deflate (RFC 7692) on websocket listeners: the client's offer goes to the
 * backend and its answer back, compressed frames relay as they are (no compression state
 * in the gateway); or offers are removed. */
enum cg_deflate {
    CG_DEFLATE_PASSTHROUGH,
    CG_DEFLATE_STRIP,
};

enum cg_balance {
    CG_BALANCE_ROUNDROBIN,      /* weighted smooth round robin */
    CG_BALANCE_LEASTCONN,
    CG_BALANCE_RANDOM,          /* power of two random choices */
    CG_BALANCE_HASH,            /* consistent hash of a key of the client (core/chash.h) */
};

/* What balance = hash hashes ([upstream] hash_key). */
enum cg_hash_key {
    CG_HASH_SOURCE,             /* the client's address (no port) */
    CG_HASH_HEADER,             /* a request header's value (websocket listeners) */
    CG_HASH_COOKIE,             /* a cookie's value */
    CG_HASH_QUERY,              /* a query parameter's value, as sent (not decoded) */
    CG_HASH_PATH,               /* the request-target's path */
};

/* The connection log's keys a listener may set for itself ([gateway]'s otherwise). */
struct cg_alog_keys {
    enum cg_alog_sink   sink;           /* access_log */
    enum cg_alog_format format;         /* access_log_format */
    unsigned int        sample;         /* access_log_sample: one connection in N, >= 1 */
};

struct cg_gateway_conf {
    unsigned int     workers;           /* resolved: "auto" is the online CPU count */
    int              workers_auto;      /* 1 when written as "auto" */
    int              cpu_pinning;       /* 0/1 */
    unsigned int     max_connections;   /* 0 = unlimited */
    enum cg_log_level log_level;
    char             stats_socket[CG_CONF_SOCKPATH_MAX];
    unsigned int     stats_socket_mode;      /* permission bits, 0..0777 */
    uid_t            stats_socket_uid;       /* (uid_t)-1 = the daemon's */
    gid_t            stats_socket_gid;       /* (gid_t)-1 = the daemon's */
    uint64_t         stats_timeout_ms;       /* idle or not-reading stats clients closed */
    unsigned int     stats_max_clients;
    char             metrics_listen[CG_CONF_NAME_MAX];  /* "" = no HTTP /metrics */
    struct sockaddr_storage metrics_addr;
    socklen_t        metrics_addrlen;
    uint64_t         drain_timeout_ms;
    uint64_t         drain_spread_ms;   /* websocket 1001s spread over this; 0 = at once */
    uint64_t         coro_stall_threshold_ms;   /* parked this long = stalled; 0 = off */
    uint64_t         nofile;            /* desired RLIMIT_NOFILE */
    /* the connection log (base/access-log.h); a listener may override the first three */
    struct cg_alog_keys alog;
    unsigned int     alog_queue;        /* records per worker's ring (restart) */
    char             alog_syslog_path[CG_CONF_SOCKPATH_MAX];    /* (restart) */
    char             alog_journal_path[CG_CONF_SOCKPATH_MAX];   /* (restart) */
};

/* How a TCP listener refuses a connection (WebSocket listeners answer 429/503). */
enum cg_reject_how {
    CG_REJECT_CLOSE,            /* close at once: the client reads EOF */
    CG_REJECT_RST,              /* SO_LINGER 0, then close: the client gets a reset */
};

/* One listener's admission limits: its own keys, or else [admission]'s (conf/corogate.ini
 * explains each). */
struct cg_adm_limits {
    unsigned int     conn_rate;         /* new connections/s, all workers; 0 = no limit */
    unsigned int     conn_burst;        /* 0 = conn_rate */
    unsigned int     ip_conn_rate;      /* new connections/s per client address; 0 = none */
    unsigned int     ip_conn_burst;     /* 0 = ip_conn_rate */
    unsigned int     max_conns_per_ip;  /* open connections per client address; 0 = any */
    enum cg_reject_how reject;
};

/* [admission]: token buckets at accept. */
struct cg_admission_conf {
    struct cg_adm_limits lim;           /* what listeners without their own keys get */
    unsigned int     ipv4_prefix;       /* bits of an IPv4 address that make a "client" */
    unsigned int     ipv6_prefix;
    unsigned int     ip_table_size;     /* per-address entries, fixed at start */
    uint64_t         reject_timeout_ms; /* a refused WebSocket client's request, at most */
    unsigned int     max_rejecting;     /* refused WebSocket clients answered at once, per
                                         * worker; more are closed */
};

/* The failure breaker and connect quota of each server of one upstream: its own keys, or
 * else [breaker]'s. */
struct cg_srv_breaker_conf {
    unsigned int     max_pending;       /* connects in progress per server; 0 = any */
    unsigned int     eject_failures;    /* consecutive failures that eject; 0 = never */
    unsigned int     eject_error_rate;  /* percent failed in eject_window; 0 = off */
    uint64_t         eject_window_ms;
    unsigned int     eject_min_connects;/* in the window, before the rate counts */
    uint64_t         eject_cooldown_ms; /* ejected this long, then probed */
};

/* [breaker]: connection quotas and the overload circuit breaker. */
struct cg_breaker_conf {
    unsigned int     max_conns_per_worker;  /* 0 = unlimited */
    uint64_t         memory_watermark;      /* RSS bytes that trip it; 0 = off */
    int              memory_auto;           /* 1: watermark is 90% of the memory we have */
    unsigned int     fd_watermark;          /* percent of RLIMIT_NOFILE; 0 = off */
    uint64_t         open_for_ms;           /* OPEN at least this long */
    unsigned int     resume;                /* percent: HALF_OPEN -> CLOSED below this */
    unsigned int     half_open_rate;        /* new connections/s admitted while HALF_OPEN */
    uint64_t         check_interval_ms;     /* memory and descriptors sampled this often */
    uint64_t         sched_latency_ms;      /* scheduling p99 that trips it; 0 = off */
    uint64_t         sched_window_ms;       /* ... over this sliding window */
    struct cg_srv_breaker_conf srv;         /* what upstreams without their own keys get */
};

struct cg_server_conf {
    struct sockaddr_storage addr;
    socklen_t        addrlen;
    char             name[CG_CONF_NAME_MAX];    /* "host:port" as written */
    unsigned int     weight;                    /* 1..256 */
    int              send_proxy;                /* send_proxy=: 0 off, 1 v1, 2 v2; -1: the
                                                 * upstream's send_proxy */
};

/* A run of consecutive local addresses connections to the servers are made from
 * ([upstream] source): "A" is a run of one, "A-B" of B - A + 1. */
struct cg_source_range {
    sa_family_t      family;                    /* AF_INET or AF_INET6 */
    uint32_t         count;                     /* >= 1 */
    unsigned char    first[16];                 /* network order; IPv4 in the first 4 */
};

#define CG_SOURCE_MAX    (1u << 24)             /* addresses in one upstream's source */

struct cg_tls_set;

/* TLS on a listener (the server side) or an upstream (the client side). The config room
 * checks the syntax; core/tls.c loads the files and builds the OpenSSL contexts (a file
 * that is missing, a key that does not match, an expired certificate are its errors, with
 * the key's line from <line>). Strings are owned; NULL when not set. */
enum cg_tls_verify { CG_TLS_VERIFY_OFF, CG_TLS_VERIFY_OPTIONAL, CG_TLS_VERIFY_REQUIRED };
enum { CG_TLS_V12 = 1, CG_TLS_V13 = 2 };
/* The keys whose line an error about a file or a list names (struct cg_tls_conf.line). */
enum cg_tls_line {
    CG_TLS_L_ON, CG_TLS_L_CERT, CG_TLS_L_KEY, CG_TLS_L_CA, CG_TLS_L_TICKETS,
    CG_TLS_L_CIPHERS, CG_TLS_L_SUITES, CG_TLS_L_GROUPS, CG_TLS_L_ALPN, CG_TLS_L_SNI, CG_TLS_L_N,
};
struct cg_tls_conf {
    int              on;
    char           **certs;            /* tls_certificate: PEM files, chain (and key) */
    size_t           ncerts;
    char            *key;              /* tls_key: the first certificate's key file */
    unsigned int     protocols;        /* CG_TLS_V12 | CG_TLS_V13 */
    char            *ciphers;          /* TLS 1.2 cipher list, OpenSSL syntax */
    char            *ciphersuites;     /* TLS 1.3 suites, OpenSSL syntax */
    char            *groups;           /* key exchange groups, "X25519:P-256" */
    char            *alpn;             /* listener: comma-separated; NULL: by mode */
    uint64_t         handshake_timeout_ms;
    int              tickets;          /* listener: stateless session tickets */
    char            *ticket_keys;      /* listener: file of base64 keys; NULL: our own */
    char            *ca;               /* listener: tls_client_ca; upstream: tls_ca */
    int              verify;           /* listener: enum cg_tls_verify (tls_verify_client);
                                        * upstream: tls_verify on/off */
    char            *sni;              /* upstream: the name sent and verified */
    unsigned int     line[CG_TLS_L_N]; /* where each key was set, 0: not set */
};

struct cg_upstream_conf {
    char             name[CG_CONF_NAME_MAX];
    unsigned int     line;                      /* of the section header */
    struct cg_server_conf *servers;             /* owned by the cg_config */
    size_t           nservers;                  /* >= 1 in a loaded config */
    struct cg_source_range *sources;            /* owned by the cg_config; NULL: none */
    size_t           nsources;
    uint32_t         nsource4, nsource6;        /* addresses of each family in them */
    enum cg_balance  balance;
    enum cg_hash_key hash_key;                  /* balance = hash */
    char             hash_key_name[CG_CONF_NAME_MAX];   /* header (lowercase), cookie or
                                                 * query parameter name; "" for the others */
    uint64_t         connect_timeout_ms;
    unsigned int     retries;                   /* other servers to try after a failure */
    unsigned int     max_connections_per_server;    /* 0 = unlimited */
    uint64_t         health_check_interval_ms;  /* 0 = no health checks */
    uint64_t         health_check_timeout_ms;
    unsigned int     health_check_fall;
    unsigned int     health_check_rise;
    struct cg_srv_breaker_conf brk;             /* own keys, else [breaker]'s */
    struct cg_tls_conf tls;                     /* to the servers */
    int              send_proxy;                /* PROXY header to servers: 0 off, 1 v1,
                                                 * 2 v2 (a server's own overrides it) */
};

struct cg_listener_conf {
    char             name[CG_CONF_NAME_MAX];
    unsigned int     line;                      /* of the section header */
    struct sockaddr_storage addr;               /* "*" is 0.0.0.0; port 0 = any */
    socklen_t        addrlen;
    char             bind[CG_CONF_NAME_MAX];    /* as written */
    enum cg_listener_mode mode;
    char             upstream_name[CG_CONF_NAME_MAX];
    size_t           upstream;                  /* index into cg_config.upstreams */
    uint64_t         idle_timeout_ms;           /* 0 = none */
    uint64_t         max_lifetime_ms;           /* max_connection_lifetime; 0 = none */
    unsigned int     lifetime_jitter;           /* percent of it taken off at random */
    unsigned int     backlog;
    int              half_close;                /* mode = tcp: 1 an EOF is passed on as a
                                                 * shutdown, 0 the first EOF ends both */
    /* mode = websocket only (conf/corogate.ini explains each) */
    enum cg_upstream_protocol upstream_protocol;
    struct cg_route *routes;                    /* owned (route.h); NULL when none */
    size_t           nroutes;
    char            *allowed_origins;           /* owned, lowercase; NULL = any origin */
    char             health_path[CG_CONF_PATH_MAX / 16];    /* "" = none */
    uint64_t         handshake_timeout_ms;
    uint64_t         max_header_size;           /* request line + headers, bytes */
    unsigned int     max_headers;
    uint64_t         max_request_line;          /* request-target bytes */
    uint64_t         upstream_handshake_timeout_ms;
    uint64_t         max_message_size;
    uint64_t         keepalive_interval_ms;     /* 0 = no pings */
    uint64_t         keepalive_timeout_ms;
    uint64_t         close_timeout_ms;
    unsigned int     message_rate;              /* messages/s from a client; 0 = no limit */
    unsigned int     message_burst;             /* 0 = message_rate */
    uint64_t         byte_rate;                 /* bytes/s from a client; 0 = no limit */
    uint64_t         byte_burst;                /* 0 = byte_rate */
    enum cg_rate_action rate_limit_action;
    /* The one request header (lowercase) that balance = hash of this listener's upstreams
     * needs kept from the handshake (hash_key = header:NAME); "" = none. Set by the
     * whole-file checks: all its upstreams must agree on it. */
    char             hash_header[CG_CONF_NAME_MAX];
    uint64_t         high_water;                /* stop reading a side above this queue */
    enum cg_deflate  permessage_deflate;        /* RFC 7692: passed through, or stripped */
    struct cg_alog_keys alog;                   /* own keys, else [gateway]'s */
    struct cg_adm_limits adm;                   /* own keys, else [admission]'s */
    struct cg_tls_conf tls;                     /* to the clients */
    /* PROXY protocol from a front balancer (base/proxy-proto.h) */
    int              accept_proxy;              /* 0 off, else CG_PP_V1 | CG_PP_V2 */
    struct cg_cidr  *proxy_from;                /* owned; NULL: any source may send one */
    size_t           nproxy_from;
    uint64_t         proxy_timeout_ms;          /* the whole header, from the accept */
    /* websocket: X-Forwarded-For / Forwarded honoured from these (owned; NULL: none) */
    struct cg_cidr  *trusted_proxies;
    size_t           ntrusted_proxies;
};

/* [bpf] attach: which probes measure the workers' scheduling (see gateway/schedlat.h). */
enum cg_bpf_attach {
    CG_BPF_AUTO,                /* tp_btf, else raw_tp, else kprobe */
    CG_BPF_TP_BTF,
    CG_BPF_RAW_TP,
    CG_BPF_KPROBE,
    CG_BPF_OFF,
};

struct cg_bpf_conf {
    enum cg_bpf_attach attach;
    char             btf[CG_CONF_PATH_MAX / 16];    /* kernel BTF used for CO-RE */
};

/* A loaded configuration. Immutable once loaded: workers may read it without locks while
 * the main thread loads the next one. */
struct cg_config {
    char             path[CG_CONF_PATH_MAX];    /* as given to the loader */
    time_t           loaded_at;
    struct cg_gateway_conf gw;
    struct cg_bpf_conf bpf;
    struct cg_admission_conf adm;
    struct cg_breaker_conf brk;
    struct cg_listener_conf *listeners;
    size_t           nlisteners;
    struct cg_upstream_conf *upstreams;
    size_t           nupstreams;
    /* The OpenSSL contexts of the tls keys above, built by core/tls.c after loading
     * (cg_tls_set_new()); cg_config_free() frees them with <tls_free>, which the builder
     * sets (the config room knows nothing of OpenSSL). */
    struct cg_tls_set *tls;
    void             (*tls_free)(struct cg_tls_set *set);
};

/* Prepares an empty <errs>. */
void cg_errors_init(struct cg_errors *errs);

/* Frees every message of <errs> and leaves it empty (reusable without another init). */
void cg_errors_deinit(struct cg_errors *errs);

/* Appends a message formatted from <fmt> to <errs>. Returns 0, or -ENOMEM (nothing added). */
int cg_errors_add(struct cg_errors *errs, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Returns the number of messages in <errs>. */
size_t cg_errors_count(const struct cg_errors *errs);

/* Returns message <i> of <errs>, valid until cg_errors_deinit(), or NULL when <i> is past
 * the end. */
const char *cg_errors_get(const struct cg_errors *errs, size_t i);

/* Loads and validates the file at <path>. On success returns 0 and sets *<out> to a new
 * config the caller frees with cg_config_free(). Returns -EINVAL when the file has any
 * error, -ENOMEM, or -errno when it cannot be read (EFBIG past 16 MiB); *<out> is then
 * NULL. Every problem is appended to <errs> (which may be NULL), also for -errno:
 * "FILE: cannot open: No such file or directory". */
int cg_config_load(const char *path, struct cg_config **out, struct cg_errors *errs);

/* Same as cg_config_load() for the NUL-terminated <text>; <name> stands for FILE in the
 * messages and is stored as the config's path. */
int cg_config_parse_string(const char *name, const char *text, struct cg_config **out,
                           struct cg_errors *errs);

/* Frees <cfg> and everything it owns. NULL-safe. */
void cg_config_free(struct cg_config *cfg);

/* Returns the upstream that listener <l> of <cfg> relays to. */
static inline const struct cg_upstream_conf *
cg_config_listener_upstream(const struct cg_config *cfg, const struct cg_listener_conf *l)
{
    return &cfg->upstreams[l->upstream];
}

/* Parses a duration into *<ms>: a decimal number with an optional unit, "ms", "s", "m" or
 * "h"; no unit means seconds ("500ms", "5s", "2m", "1h", "30"). Returns 0, -EINVAL when
 * <s> is not a duration, -ERANGE when it overflows. *<ms> is only written on success. */
int cg_parse_duration(const char *s, uint64_t *ms);

/* Parses a size into *<bytes>: a decimal number with an optional suffix "k", "m" or "g"
 * (powers of 1024, either case) ("4096", "64k", "1m"). Returns 0, -EINVAL when <s> is not
 * a size, -ERANGE when it overflows. *<bytes> is only written on success. */
int cg_parse_size(const char *s, uint64_t *bytes);

/* Parses a boolean into *<b> (0/1): on/off, yes/no, true/false, 1/0, in any case.
 * Returns 0 or -EINVAL. */
int cg_parse_bool(const char *s, int *b);

/* Parses "host:port" into *<ss> and *<len>, for a server to connect to. host is an IPv4
 * literal, an IPv6 literal in brackets ("[::1]:8080") or "localhost" (127.0.0.1); port is
 * 1..65535. Returns 0, -EINVAL when <s> is malformed, -ERANGE when the port is out of
 * range. Nothing is resolved through DNS. */
int cg_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len);

/* Same as cg_parse_hostport() for an address to listen on: also accepts "*" for all IPv4
 * addresses (0.0.0.0) and port 0 (the kernel picks one). */
int cg_parse_bind(const char *s, struct sockaddr_storage *ss, socklen_t *len);

/* Formats <ms> into <buf> of <size> as the largest exact unit ("1h", "90s", "1500ms",
 * "0"). Returns <buf>. */
const char *cg_format_duration(uint64_t ms, char *buf, size_t size);

/* "roundrobin", "leastconn", "random", "hash" for <b>. */
const char *cg_balance_name(enum cg_balance b);

/* Formats <uc>'s hash_key as written ("source", "cookie:sid"; a header name lowercase)
 * into <buf> of <size>. Returns <buf>. */
const char *cg_format_hash_key(const struct cg_upstream_conf *uc, char *buf, size_t size);

#endif /* CG_CONFIG_H */
