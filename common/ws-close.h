/* common/ws-close.h — which close codes a WebSocket close frame may carry, for both ends
 * (the gateway's relay and the loadgen's echo server check what a peer sends). */
#ifndef CG_WS_CLOSE_H
#define CG_WS_CLOSE_H

/* 1 when <code> may appear in a close frame: RFC 6455 §7.4 (1000-1003, 1007-1011), the
 * codes IANA registered after it (1012 service restart, 1013 try again later, 1014 bad
 * gateway), and those for libraries and applications (3000-4999). Never 1004-1006 or
 * 1015: reserved, or meant only for an endpoint's own reporting. */
static inline int cg_ws_close_code_is_valid(unsigned code)
{
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) ||
           (code >= 3000 && code <= 4999);
}

#endif
