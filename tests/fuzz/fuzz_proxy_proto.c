/* tests/fuzz/fuzz_proxy_proto.c — the PROXY protocol parser and builder
 * (gateway/base/proxy-proto.c). A header arrives in pieces: every prefix of the input must
 * say "more" until the whole answer, and agree with it (never an error before the end of
 * a header that the whole input accepts, never a different length). What it accepts,
 * written back by the builder (v1 and v2, its TLVs passed on), parses to the same
 * addresses and TLVs. */
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "base/proxy-proto.h"
#include "fuzz.h"

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    return memcmp(a, b, a->ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                 : sizeof(struct sockaddr_in6)) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct cg_pp_result whole, part, again;
    struct cg_pp_tlv tlvs[2];
    uint8_t buf[CG_PP_V2_MAX + 16];
    unsigned versions;
    size_t i, nt = 0;
    int rc, n, r;

    if (size < 1)
        return 0;
    versions = (data[0] & 3) ? (data[0] & 3) : CG_PP_V1 | CG_PP_V2;
    data++;
    size--;
    rc = cg_pp_parse(data, size, versions, &whole);
    FUZZ_CHECK(rc <= (int)size, "a %d-byte header in %zu bytes", rc, size);
    FUZZ_CHECK(rc > -CG_PPE_N, "unknown error %d", rc);
    if (rc == 0)
        FUZZ_CHECK(size < CG_PP_V2_MAX, "still asking for more after %zu bytes", size);
    for (i = 0; i < size && i < (size_t)(rc > 0 ? rc : (int)size); i++) {
        r = cg_pp_parse(data, i, versions, &part);
        if (rc > 0)
            FUZZ_CHECK(r == 0, "prefix of %zu: %d, the whole header is %d bytes", i, r, rc);
        else if (r != 0)
            FUZZ_CHECK(r < 0, "prefix of %zu accepted (%d), the whole refused (%d)", i, r, rc);
    }
    if (rc <= 0 || !whole.has_addr)
        return 0;
    n = cg_pp_build_v1((char *)buf, sizeof(buf), (struct sockaddr *)&whole.src,
                       (struct sockaddr *)&whole.dst);
    FUZZ_CHECK(n > 0, "v1 build: %d", n);
    r = cg_pp_parse(buf, (size_t)n, CG_PP_V1, &again);
    FUZZ_CHECK(r == n && again.has_addr, "v1 round trip: %d of %d", r, n);
    if (whole.src.ss_family == whole.dst.ss_family)
        FUZZ_CHECK(same_addr(&whole.src, &again.src) && same_addr(&whole.dst, &again.dst),
                   "v1 round trip: addresses differ");
    if (whole.authority)
        tlvs[nt++] = (struct cg_pp_tlv){ CG_PP2_TYPE_AUTHORITY, whole.authority_len,
                                         whole.authority };
    if (whole.unique_id)
        tlvs[nt++] = (struct cg_pp_tlv){ CG_PP2_TYPE_UNIQUE_ID, whole.unique_id_len,
                                         whole.unique_id };
    n = cg_pp_build_v2(buf, sizeof(buf), (struct sockaddr *)&whole.src,
                       (struct sockaddr *)&whole.dst, tlvs, nt);
    FUZZ_CHECK(n > 0, "v2 build: %d", n);
    r = cg_pp_parse(buf, (size_t)n, CG_PP_V2, &again);
    FUZZ_CHECK(r == n && again.has_addr, "v2 round trip: %d of %d", r, n);
    if (whole.src.ss_family == whole.dst.ss_family)
        FUZZ_CHECK(same_addr(&whole.src, &again.src) && same_addr(&whole.dst, &again.dst),
                   "v2 round trip: addresses differ");
    FUZZ_CHECK(!whole.authority || (again.authority_len == whole.authority_len &&
                                    memcmp(again.authority, whole.authority,
                                           whole.authority_len) == 0),
               "v2 round trip: AUTHORITY differs");
    FUZZ_CHECK(!whole.unique_id || (again.unique_id_len == whole.unique_id_len &&
                                    memcmp(again.unique_id, whole.unique_id,
                                           whole.unique_id_len) == 0),
               "v2 round trip: UNIQUE_ID differs");
    return 0;
}
