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
 * The handshakes themselves are the connection's (core/conn.c, over common/tls.h).
 */
#ifndef CG_CORE_TLS_H
#define CG_CORE_TLS_H

#include <stddef.h>
#include <time.h>

#include <openssl/ssl.h>

#include "config/config.h"

/* Builds the contexts of every listener and upstream of <cfg> with tls = on into
 * cfg->tls (cg_config_free() frees them). Returns 0; or -1 with one "FILE:LINE: [SECTION]
 * KEY: why" message per problem added to <errs> (none: out of memory), cfg->tls NULL. */
int cg_tls_load(struct cg_config *cfg, struct cg_errors *errs);

/* The server context of listener <li> (its default certificate's; SNI switches from it),
 * and the client context of upstream <ui>: NULL when that one has no TLS. */
SSL_CTX *cg_tls_listener_ctx(const struct cg_tls_set *set, size_t li);
SSL_CTX *cg_tls_upstream_ctx(const struct cg_tls_set *set, size_t ui);

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

/* The slot of cipher suite <name> in the listener counters' tls_cipher[] (base/counters.h);
 * the label of slot <i>, and of failure reason <i> ("timeout", ...). */
unsigned cg_tls_cipher_slot(const char *name);
const char *cg_tls_cipher_label(unsigned i);
const char *cg_tls_fail_label(unsigned i);

#endif
