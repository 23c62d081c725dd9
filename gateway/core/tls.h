/* gateway/core/tls.h — TLS for a listener's clients and an upstream's servers.
 *
 * The OpenSSL contexts of one configuration (struct cg_tls_set) are built from its tls
 * keys after the file was parsed: certificates and keys loaded and checked (readable, the
 * key matching, valid today), one context per certificate with SNI choosing among them,
 * ALPN, protocol versions, ciphers, groups, client certificate verification, session
 * tickets. A set belongs to its configuration's generation (core/reload.h): a reload
 * builds a new one for new connections, and established connections keep the keys they
 * have (after the handshake a connection holds no reference to any context at all:
 * common/tls.h).
 *
 * Session tickets are sealed with keys that every worker shares, and that outlive a
 * reload: our own random keys, rotated every hour (a ticket stays good for two more
 * rotations), or a listener's tls_ticket_keys file, re-read on reload, so that a fleet
 * can share them.
 *
 * The handshake runs in the connection's coroutine before its session (cg_tls_session());
 * admission has counted the connection already, and the handshake's CPU shows in the
 * worker's loop lag as any other work does, where the breaker sees it.
 */
#ifndef CG_CORE_TLS_H
#define CG_CORE_TLS_H

#include <stddef.h>
#include <time.h>

#include "config/config.h"
#include "core/conn.h"

struct cg_upstream;

/* Builds the contexts of every listener and upstream of <cfg> with tls = on into
 * cfg->tls (cg_config_free() frees them). Returns 0; or -1 with one "FILE:LINE: [SECTION]
 * KEY: why" message per problem added to <errs> (none: out of memory), cfg->tls NULL. */
int cg_tls_load(struct cg_config *cfg, struct cg_errors *errs);

/* The coroutine body of a connection on a listener with tls = on: the handshake within
 * tls_handshake_timeout, counted by outcome, then the listener's mode's session (the
 * daemon's proto.session[]) over the now decrypted stream. Owns <arg>, a struct cg_conn,
 * as the session bodies do. */
void cg_tls_session(void *arg);

/* The TLS handshake with the server <c->up> was just connected to (<server>, its name for
 * logs), for an upstream <up> with tls = on. Returns 0, or a negative libuv error: one
 * that cg_local_error() accepts for a shortage of ours, another for the server's failure
 * (UV_ETIMEDOUT, UV_EPROTO for a refused handshake or certificate), UV_ECANCELED. */
int cg_tls_connect_upstream(struct cg_conn *c, const struct cg_upstream *up,
                            const char *server);

/* 1 when <up>'s servers are spoken to over TLS. */
int cg_tls_upstream_on(const struct cg_conn *c, const struct cg_upstream *up);

/* One certificate of a listener, for `show tls` and the metrics. */
struct cg_tls_cert_info {
    const char *file;
    const char *names;          /* its DNS names, blank-separated ("" when none) */
    const char *subject;        /* RFC 2253 */
    time_t      not_after;
};

/* Calls <fn> for each certificate of listener <li> of the set, in order (the first is the
 * default). Returns how many there are (0: no TLS on that listener). */
size_t cg_tls_listener_certs(const struct cg_tls_set *set, size_t li,
                             void (*fn)(void *arg, const struct cg_tls_cert_info *ci),
                             void *arg);

/* The label of TLS cipher slot <i> of the listener counters (base/counters.h), and the
 * label of failure reason <i> ("timeout", ...). */
const char *cg_tls_cipher_label(unsigned i);
const char *cg_tls_fail_label(unsigned i);

#endif
