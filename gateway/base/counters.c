/* gateway/base/counters.c — histogram recording, coroutine census, and the labels of
 * the dimensions counters are kept by (base/counters.h). */
#include <string.h>

#include "base/counters.h"

/* ------------------------------------------------------------------ labels */

const char *cg_reject_name(int reason)
{
    static const char *const names[CG_REJ_ALL] = {
        "connection_rate", "ip_connection_rate", "max_connections_per_ip",
        "max_connections_per_worker", "breaker", "max_connections",
    };

    return reason >= 0 && reason < CG_REJ_ALL ? names[reason] : "?";
}

const char *cg_reject_label(int reason)
{
    static const char *const labels[CG_REJ_ALL] = {
        "rate", "ip_rate", "ip_quota", "worker_quota", "breaker", "max_connections",
    };

    return reason >= 0 && reason < CG_REJ_ALL ? labels[reason] : "?";
}

const char *cg_proxy_reject_label(int reason)
{
    static const char *const labels[CG_PPR_N] = { "bad_header", "untrusted", "timeout" };

    return reason >= 0 && reason < CG_PPR_N ? labels[reason] : "?";
}

static const int status_codes[CG_WSS_N] = {
    400, 403, 404, 405, 408, 414, 426, 429, 431, 500, 502, 503, 504, 0,
};

enum cg_ws_status_stat cg_http_status_index(int status)
{
    int i;

    for (i = 0; i < CG_WSS_OTHER; i++)
        if (status_codes[i] == status)
            return (enum cg_ws_status_stat)i;
    return CG_WSS_OTHER;
}

const char *cg_http_status_label(enum cg_ws_status_stat i)
{
    static const char *const names[CG_WSS_N] = {
        "400", "403", "404", "405", "408", "414", "426", "429", "431", "500", "502", "503",
        "504", "other",
    };

    return i < CG_WSS_N ? names[i] : "other";
}

static const char *const close_names[CG_WSC_N] = {
    "1000", "1001", "1002", "1003", "1005", "1007", "1008", "1009", "1010", "1011", "1012",
    "1013", "1014",
    "other",
};

enum cg_ws_close_stat cg_ws_close_index(unsigned code)
{
    switch (code) {
    case 1000: return CG_WSC_1000;
    case 1001: return CG_WSC_1001;
    case 1002: return CG_WSC_1002;
    case 1003: return CG_WSC_1003;
    case 1005: return CG_WSC_1005;
    case 1007: return CG_WSC_1007;
    case 1008: return CG_WSC_1008;
    case 1009: return CG_WSC_1009;
    case 1010: return CG_WSC_1010;
    case 1011: return CG_WSC_1011;
    case 1012: return CG_WSC_1012;
    case 1013: return CG_WSC_1013;
    case 1014: return CG_WSC_1014;
    default:   return CG_WSC_OTHER;
    }
}

const char *cg_ws_close_name(enum cg_ws_close_stat i)
{
    return i < CG_WSC_N ? close_names[i] : "?";
}

static const char *const proto_names[CG_WSP_N] = {
    "unmasked", "rsv", "opcode", "control", "continuation", "length", "close", "utf8",
};

const char *cg_ws_proto_name(enum cg_ws_proto_stat i)
{
    return i < CG_WSP_N ? proto_names[i] : "?";
}

/* ------------------------------------------------------------------ histograms */

const uint64_t cg_lat_bounds_us[CG_LAT_BOUNDS] = {
    25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000,
};

void cg_lat_hist_record(struct cg_lat_hist *h, uint64_t us)
{
    unsigned i = 0;

    while (i < CG_LAT_BOUNDS && us > cg_lat_bounds_us[i])
        i++;
    CG_STAT_ADD(h->bucket[i], 1);
    CG_STAT_ADD(h->sum_us, us);
}

void cg_log2_hist_record(struct cg_log2_hist *h, uint64_t ns)
{
    uint64_t us = ns / 1000;
    unsigned slot = us ? 63u - (unsigned)__builtin_clzll(us) : 0;

    if (slot >= CG_LOG2_SLOTS)
        slot = CG_LOG2_SLOTS - 1;
    CG_STAT_ADD(h->slots[slot], 1);
    CG_STAT_ADD(h->sum_ns, ns);
    if (ns > atomic_load_explicit(&h->max_ns, memory_order_relaxed))
        atomic_store_explicit(&h->max_ns, ns, memory_order_relaxed);
}

/* ------------------------------------------------------------------ coroutine census */

int cg_coro_census_add(struct cg_coro_census *cs, int parked, const char *reason,
                       uint64_t parked_ms)
{
    unsigned i;

    cs->total++;
    if (!parked)
        return 0;
    cs->parked++;
    if (!cs->threshold_ms || parked_ms < cs->threshold_ms)
        return 0;
    cs->stalled++;
    if (!reason)
        reason = "?";
    /* Reasons are static strings: the same pointer, mostly; the text decides. */
    for (i = 0; i < cs->nreasons; i++)
        if (cs->by[i].reason == reason || strcmp(cs->by[i].reason, reason) == 0)
            break;
    if (i == cs->nreasons) {
        if (cs->nreasons == CG_STALL_REASONS - 1)
            reason = "other";       /* the last entry takes the rest */
        if (cs->nreasons < CG_STALL_REASONS)
            cs->by[cs->nreasons++].reason = reason;
        else
            i = CG_STALL_REASONS - 1;
    }
    cs->by[i].n++;
    return 1;
}
