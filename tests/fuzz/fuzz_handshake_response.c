/* tests/fuzz/fuzz_handshake_response.c — a backend's answer to our upgrade
 * (common/handshake.c): its head parsed in pieces, then checked against the key,
 * subprotocols and permessage-deflate offers we sent. */
#include <errno.h>
#include <string.h>

#include "common/handshake.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct cg_hs_limits lim = { 4096, 64, 0 };
    struct cg_handshake hs;
    struct fuzz_chunks ch;
    const uint8_t *p;
    size_t len;
    int rc = 0;

    cg_handshake_init(&hs, CG_HS_RESPONSE, &lim);
    fuzz_chunks_init(&ch, data, size);
    while (rc == 0 && (p = fuzz_chunks_next(&ch, &len)) != NULL)
        rc = cg_handshake_feed(&hs, p, len);
    if (rc == 1) {
        FUZZ_CHECK(hs.tail <= len, "tail %u of a %zu-byte piece", hs.tail, len);
        rc = cg_handshake_check_response(&hs, "dGhlIHNhbXBsZSBub25jZQ==", "chat, superchat",
                                         size && (data[0] & 2)
                                             ? "permessage-deflate; client_max_window_bits"
                                             : NULL);
        FUZZ_CHECK(rc == 0 || (rc == -EPROTO && hs.error), "check gave %d", rc);
    } else if (rc < 0) {
        FUZZ_CHECK(hs.error, "error %d without a reason", rc);
    }
    cg_handshake_deinit(&hs);
    return 0;
}
