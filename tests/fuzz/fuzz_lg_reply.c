/* tests/fuzz/fuzz_lg_reply.c — what the load generator parses of a peer's replies: its
 * self-checking frames on a TCP stream (loadgen/lg_msg.c: cut, checked, resynchronised on
 * damage), and WebSocket frames through its wslay wrapper in both roles
 * (loadgen/lg_ws.c, with the close frames it takes out of wslay's hands). */
#include <string.h>

#include "loadgen/lg_msg.h"
#include "loadgen/lg_ws.h"
#include "fuzz.h"

static size_t sent;

static int on_send(void *ud, const void *p, size_t len)
{
    sent += len;
    return 0;
}

static void on_msg(void *ud, int text, const uint8_t *p, size_t len)
{
    FUZZ_CHECK(len <= LG_MSG_MAX, "a %zu-byte message", len);
}

static void on_frame(void *ud, uint64_t seq, uint64_t ts)
{
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct lg_msg_stats st = { 0 };
    struct lg_msg_rx rx;
    struct fuzz_chunks ch;
    struct lg_wsc *w;
    const uint8_t *p;
    size_t len;
    int role, err;

    if (lg_msg_rx_init(&rx, 64, 7) == 0) {
        fuzz_chunks_init(&ch, data, size);
        while ((p = fuzz_chunks_next(&ch, &len)) != NULL)
            lg_msg_rx_feed(&rx, p, len, &st, on_frame, NULL);
        FUZZ_CHECK(st.good * 64 + st.skipped <= size, "%llu good frames in %zu bytes",
                   (unsigned long long)st.good, size);
        lg_msg_rx_deinit(&rx);
    }
    for (role = 0; role < 2; role++) {
        w = lg_ws_new(role, on_send, on_msg, NULL);
        if (!w)
            continue;
        fuzz_chunks_init(&ch, data, size);
        err = 0;
        while (err == 0 && (p = fuzz_chunks_next(&ch, &len)) != NULL) {
            err = lg_wsc_feed(w, p, len);
            if (lg_wsc_flush(w) < 0)
                break;
        }
        lg_wsc_free(w);
    }
    return 0;
}
