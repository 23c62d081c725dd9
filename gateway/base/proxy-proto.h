/* gateway/base/proxy-proto.h — the PROXY protocol, versions 1 and 2 (HAProxy's
 * doc/proxy-protocol.txt): a strict parser and a builder, pure functions over the caller's
 * buffers (no I/O, no allocation), so that a fuzz target can drive them.
 *
 * Bounds: a v1 line is at most 107 bytes, CRLF included (the spec's own maximum); a v2
 * header at most CG_PP_V2_MAX bytes (the spec allows 64 KiB; the TLVs any front balancer
 * sends fit in far less, and a larger one is refused rather than buffered).
 */
#ifndef CG_PROXY_PROTO_H
#define CG_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CG_PP_V1_MAX     107
#define CG_PP_V2_MIN     16             /* signature, version/command, family, length */
#define CG_PP_V2_MAX     (16 + 1024)
#define CG_PP_ID_MAX     128            /* UNIQUE_ID's longest value (spec §2.2.5) */
#define CG_PP_AUTH_MAX   255            /* AUTHORITY: a host name */

/* The v2 TLV types we keep and pass on. */
#define CG_PP2_TYPE_AUTHORITY  0x02
#define CG_PP2_TYPE_UNIQUE_ID  0x05

/* Which versions a listener accepts: accept_proxy = v1 | v2 | any. */
enum { CG_PP_V1 = 1, CG_PP_V2 = 2 };

/* Why a header was refused (cg_pp_error_name()). 0 is not an error. */
enum cg_pp_error {
    CG_PPE_NONE,
    CG_PPE_SIGNATURE,       /* neither "PROXY " nor the v2 signature: not a PROXY header */
    CG_PPE_VERSION,         /* a version the listener does not accept, or v2 not 2 */
    CG_PPE_TOO_LONG,        /* v1 line over 107 bytes, v2 over CG_PP_V2_MAX */
    CG_PPE_TOKEN,           /* v1: a token missing, extra, or not as the spec writes it */
    CG_PPE_ADDRESS,         /* v1: an address that does not parse in its family */
    CG_PPE_PORT,            /* v1: a port out of 0..65535, or with leading zeros */
    CG_PPE_COMMAND,         /* v2: a command other than LOCAL and PROXY */
    CG_PPE_FAMILY,          /* v2 PROXY: AF_UNIX or a datagram transport */
    CG_PPE_SHORT,           /* v2: length shorter than its family's address block */
    CG_PPE_TLV,             /* v2: a TLV running past the header, or a kept one too long */
    CG_PPE_TRUNCATED,       /* the peer closed before the header was complete (caller) */
    CG_PPE_N,
};

/* What a complete header said. Pointers are into the parsed buffer: valid as long as it. */
struct cg_pp_result {
    unsigned                version;    /* 1 or 2 */
    int                     local;      /* v2 LOCAL: the front balancer's own connection */
    int                     has_addr;   /* 0: LOCAL, UNKNOWN, or v2 AF_UNSPEC */
    struct sockaddr_storage src;        /* has_addr: the client */
    struct sockaddr_storage dst;        /* has_addr: the address the client connected to */
    const uint8_t          *authority;  /* v2 AUTHORITY value, or NULL */
    uint16_t                authority_len;
    const uint8_t          *unique_id;  /* v2 UNIQUE_ID value, or NULL */
    uint16_t                unique_id_len;
};

/* Parses the <len> bytes at <buf>, which start at the connection's first byte, accepting
 * the versions in <versions> (CG_PP_V1 | CG_PP_V2). Returns the header's length (> 0) with
 * <r> filled: the bytes after it belong to the next protocol; 0 when more bytes are needed
 * (never once <len> reaches the bounds above); or -<enum cg_pp_error>. Garbage is refused
 * at its first byte that cannot begin a header. */
int cg_pp_parse(const void *buf, size_t len, unsigned versions, struct cg_pp_result *r);

/* "signature", "version" ... for <err> (enum cg_pp_error). */
const char *cg_pp_error_name(int err);

/* Writes a v1 line for a connection from <src> to <dst> (both AF_INET or AF_INET6; an IPv4
 * one is written IPv4-mapped when the other is IPv6) into <buf> of <size>; <src> NULL
 * writes "PROXY UNKNOWN\r\n". Returns the length or -ENOSPC, -EAFNOSUPPORT. */
int cg_pp_build_v1(char *buf, size_t size, const struct sockaddr *src,
                   const struct sockaddr *dst);

/* One TLV to send. */
struct cg_pp_tlv {
    uint8_t         type;
    uint16_t        len;
    const void     *value;
};

/* Writes a v2 header into <buf> of <size>: PROXY from <src> to <dst> (families as for v1,
 * TCP over IPv4 or IPv6) with the <ntlvs> TLVs of <tlvs>; <src> NULL writes a LOCAL header
 * (a health check), with no address and no TLV. Returns the length or -ENOSPC (larger than
 * <size> or than CG_PP_V2_MAX), -EAFNOSUPPORT. */
int cg_pp_build_v2(uint8_t *buf, size_t size, const struct sockaddr *src,
                   const struct sockaddr *dst, const struct cg_pp_tlv *tlvs, size_t ntlvs);

#endif
