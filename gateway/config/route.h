/* gateway/config/route.h — a WebSocket listener's routes: request path (and Host) to upstream.
 *
 * Written in one config key as a list of [HOST]PATH=UPSTREAM items separated by blanks
 * or commas (conf/corogate.ini has examples):
 *
 *   PATH          starts with '/'; matched exactly against the request path (the part of
 *                 the request-target before '?'): "/chat=chat"
 *   PATH + '*'    a '*' ending the path makes it a prefix: "/api/" + "*" matches "/api/"
 *                 and "/api/v1/feed", not "/api"
 *   HOST + PATH   only for requests whose Host is HOST, without case and whatever the port
 *                 unless HOST names one: "example.com/ws=web", "example.com:8080/ws=web"
 *
 * Matching: routes naming the request's Host come first, then routes without a host;
 * within each, an exact path beats a prefix and the longest prefix wins; ties go to the
 * route written first. No match: the listener's own upstream.
 */
#ifndef CG_ROUTE_H
#define CG_ROUTE_H

#include <stddef.h>

#define CG_ROUTE_HOST_MAX 256      /* NUL included */
#define CG_ROUTE_PATH_MAX 512
#define CG_ROUTE_NAME_MAX 64       /* = CG_CONF_NAME_MAX */

struct cg_route {
    char   host[CG_ROUTE_HOST_MAX];        /* lowercase; "" = any host */
    char   path[CG_ROUTE_PATH_MAX];        /* without the '*' of a prefix */
    char   upstream_name[CG_ROUTE_NAME_MAX];
    size_t upstream;                       /* index in the config, set by the loader */
    int    prefix;                         /* 1: path is a prefix */
};

/* Parses <spec> (the syntax above; "" gives no routes). On success returns 0 with a new
 * array in *<out> (NULL when empty) of *<n> routes, owned by the caller (cg_routes_free).
 * Returns -EINVAL with a message in <err> (<errsize> bytes) naming the bad item, or
 * -ENOMEM; *<out> and *<n> are then untouched. */
int cg_routes_parse(const char *spec, struct cg_route **out, size_t *n, char *err,
                    size_t errsize);

/* Frees <routes> (NULL-safe). */
void cg_routes_free(struct cg_route *routes);

/* The route of <n> in <routes> for a request with Host <host> (<hostlen> bytes; NULL or
 * empty = none) and path <path> (<pathlen> bytes, no query). Returns the route or NULL
 * when none matches (use the default upstream). */
const struct cg_route *cg_route_match(const struct cg_route *routes, size_t n,
                                      const char *host, size_t hostlen,
                                      const char *path, size_t pathlen);

#endif
