/* tests/fuzz/fuzz_route.c — a listener's routes (gateway/config/route.c): the spec parsed,
 * then a request's Host and path matched. Input: SPEC \0 HOST \0 PATH. */
#include <string.h>
#include <strings.h>

#include "config/route.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size + 3), *host, *path, err[256];
    const struct cg_route *r;
    struct cg_route *routes = NULL;
    size_t n = 0, hl, pl;

    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = buf[size + 2] = '\0';
    host = buf + strlen(buf) + 1;
    path = host + strlen(host) + 1;
    if (host > buf + size)
        host = path = buf + size + 1;
    else if (path > buf + size + 1)
        path = buf + size + 2;
    hl = strlen(host);
    pl = strlen(path);
    if (cg_routes_parse(buf, &routes, &n, err, sizeof(err)) == 0) {
        r = cg_route_match(routes, n, hl ? host : NULL, hl, path, pl);
        if (r) {
            FUZZ_CHECK(r >= routes && r < routes + n, "a route outside the table");
            FUZZ_CHECK(r->prefix ? strncmp(path, r->path, strlen(r->path)) == 0
                                 : strcmp(path, r->path) == 0,
                       "path %s matched route %s", path, r->path);
        }
        cg_routes_free(routes);
    } else {
        FUZZ_CHECK(err[0], "a refused spec without a message");
    }
    free(buf);
    return 0;
}
