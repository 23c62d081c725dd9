/* gateway/ws-t.h — WebSocket counter indexes, for struct cg_worker_stats. Types only. */
#ifndef CG_WS_T_H
#define CG_WS_T_H

/* Opening handshakes refused or failed, by the HTTP status sent (cg_ws_status_index()). */
enum cg_ws_status_stat {
    CG_WSS_400, CG_WSS_403, CG_WSS_404, CG_WSS_405, CG_WSS_408, CG_WSS_414, CG_WSS_426,
    CG_WSS_429, CG_WSS_431, CG_WSS_500, CG_WSS_502, CG_WSS_503, CG_WSS_504, CG_WSS_OTHER,
    CG_WSS_N,
};

/* Close codes sent to or received from clients (cg_ws_close_index()). */
enum cg_ws_close_stat {
    CG_WSC_1000, CG_WSC_1001, CG_WSC_1002, CG_WSC_1003, CG_WSC_1005 /* no code */,
    CG_WSC_1007, CG_WSC_1008, CG_WSC_1009, CG_WSC_1010, CG_WSC_1011, CG_WSC_1014,
    CG_WSC_OTHER,
    CG_WSC_N,
};

/* Protocol violations by clients, by kind; each closes the connection with 1002, except
 * CG_WSP_UTF8 (1007). */
enum cg_ws_proto_stat {
    CG_WSP_UNMASKED,       /* a client frame without a mask */
    CG_WSP_RSV,            /* reserved bits set (no extension is ever negotiated) */
    CG_WSP_OPCODE,         /* a reserved opcode */
    CG_WSP_CONTROL,        /* a control frame fragmented or longer than 125 bytes */
    CG_WSP_CONTINUATION,   /* continuation outside a message, or a new one inside one */
    CG_WSP_LENGTH,         /* a length not in its shortest form, or with the top bit set */
    CG_WSP_CLOSE,          /* a close frame of 1 byte or with a code not allowed on the wire */
    CG_WSP_UTF8,           /* a text message or close reason that is not UTF-8 */
    CG_WSP_N,
};

#endif
