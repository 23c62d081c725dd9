/* tests/fuzz/fuzz_handshake_request.c — a client's opening request, as the daemon takes it
 * (common/handshake.c): fed in network-sized pieces under limits, checked against a
 * policy, the sticky-routing keys looked up (a kept header, a cookie, a query parameter),
 * then the backend's request and our 101 written from it. */
#include <errno.h>
#include <string.h>

#include "common/handshake.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct cg_hs_limits lim = { 2048, 32, 512 };
    static const struct cg_hs_policy pol = { "/healthz", "https://a.example http://b:8080" };
    static char out[8192];
    struct cg_hs_forward f = {
        .client_addr = "192.0.2.1", .proto = "http", .request_id = "fuzz",
        .key = "dGhlIHNhbXBsZSBub25jZQ==",
    };
    struct cg_handshake hs;
    struct fuzz_chunks ch;
    const uint8_t *p;
    char arena[512], ext[256];
    size_t len, plen;
    int rc = 0, n;

    cg_handshake_init(&hs, CG_HS_REQUEST, &lim);
    cg_handshake_keep_header(&hs, "x-session");
    if (size && (data[0] & 1))
        cg_handshake_set_arena(&hs, arena, sizeof(arena));
    fuzz_chunks_init(&ch, data, size);
    while (rc == 0 && (p = fuzz_chunks_next(&ch, &len)) != NULL)
        rc = cg_handshake_feed(&hs, p, len);
    if (rc < 0) {
        FUZZ_CHECK(rc == -EMSGSIZE || rc == -EBADMSG || rc == -ENOMEM, "feed gave %d", rc);
        FUZZ_CHECK(hs.status >= 400 && hs.status <= 599 && hs.error, "status %d", hs.status);
        FUZZ_CHECK(hs.fed <= lim.max_head + 1, "fed %u past the limit", hs.fed);
    }
    if (rc == 1) {
        FUZZ_CHECK(hs.fed <= lim.max_head, "a %u-byte head accepted", hs.fed);
        cg_handshake_path(&hs, &plen);
        cg_handshake_header(&hs, "x-session");
        if ((p = (const uint8_t *)cg_handshake_cookie(&hs, "sid", &len)) != NULL)
            FUZZ_CHECK(memchr(p, ';', len) == NULL, "cookie value runs on: %.*s", (int)len, p);
        if ((p = (const uint8_t *)cg_handshake_query(&hs, "room", &len)) != NULL)
            FUZZ_CHECK(memchr(p, '&', len) == NULL, "query value runs on: %.*s", (int)len, p);
        rc = cg_handshake_check_request(&hs, &pol);
        if (rc < 0)
            FUZZ_CHECK(hs.status >= 400 && hs.status <= 499 && hs.error, "status %d",
                       hs.status);
        if (rc == 0) {
            FUZZ_CHECK(strlen(hs.accept) == CG_WS_ACCEPT_LEN, "accept %s", hs.accept);
            if (cg_ws_deflate_offer(cg_handshake_get(&hs, CG_HS_EXTENSIONS), ext,
                                    sizeof(ext)) > 0)
                f.extensions = ext;
            n = cg_handshake_backend_request(&hs, &f, out, sizeof(out));
            /* nothing of the client's may end the head early or add a line of its own */
            if (n > 0)
                FUZZ_CHECK(strstr(out, "\r\n\r\n") == out + n - 4, "head ends early");
            n = cg_handshake_accept_response(&hs, cg_handshake_get(&hs, CG_HS_PROTOCOL),
                                             NULL, "fuzz", out, sizeof(out));
            if (n > 0)
                FUZZ_CHECK(strstr(out, "\r\n\r\n") == out + n - 4, "101 ends early");
        }
    }
    cg_handshake_deinit(&hs);
    return 0;
}
