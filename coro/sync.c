/* coro/sync.c — events and channels between coroutines of one scheduler.
 *
 * Waiters queue through the link node inside struct coro, never through a node on their
 * own stack: with the shared stack model a parked coroutine's stack is elsewhere.
 */
#include <errno.h>
#include <stdlib.h>

#include "coro-int.h"

void coro_event_init(struct coro_event *ev)
{
    coro_list_init(&ev->waiters);
    ev->signals = 0;
    ev->nwaiters = 0;
}

int coro_event_wait(struct coro_event *ev, const char *reason, int64_t timeout_ms)
{
    struct coro *co = coro_self();
    int err;

    if (ev->signals > 0) {
        ev->signals--;
        return 0;
    }
    coro_list_add_tail(&ev->waiters, &co->link);
    ev->nwaiters++;
    err = coro_park(reason, timeout_ms);
    /* coro_wake() took us off the list whatever woke us; a cancel that found us not yet
     * parked returns before queueing, so fix the count in both cases here. */
    ev->nwaiters--;
    if (!coro_list_empty(&co->link))
        coro_list_del(&co->link);
    return err;
}

void coro_event_signal(struct coro_event *ev)
{
    struct coro *co;

    if (coro_list_empty(&ev->waiters)) {
        ev->signals++;
        return;
    }
    co = coro__container_of(ev->waiters.next, struct coro, link);
    coro_wake(co, 0);
}

void coro_event_broadcast(struct coro_event *ev)
{
    while (!coro_list_empty(&ev->waiters))
        coro_wake(coro__container_of(ev->waiters.next, struct coro, link), 0);
}

unsigned coro_event_waiters(const struct coro_event *ev)
{
    return ev->nwaiters;
}

/* ------------------------------------------------------------------ channels */

struct coro_chan {
    struct coro_event readable;   /* signalled per item or on close */
    struct coro_event writable;   /* signalled per free slot or on close */
    unsigned          cap;
    unsigned          head;
    unsigned          len;
    int               closed;
    void             *items[];
};

struct coro_chan *coro_chan_new(unsigned capacity)
{
    struct coro_chan *ch;

    if (capacity == 0 || capacity > (1u << 24)) {
        errno = EINVAL;
        return NULL;
    }
    ch = calloc(1, sizeof(*ch) + capacity * sizeof(void *));
    if (!ch)
        return NULL;
    coro_event_init(&ch->readable);
    coro_event_init(&ch->writable);
    ch->cap = capacity;
    return ch;
}

void coro_chan_free(struct coro_chan *ch)
{
    free(ch);
}

int coro_chan_send(struct coro_chan *ch, void *v, int64_t timeout_ms)
{
    int err;

    while (!ch->closed && ch->len == ch->cap) {
        ch->writable.signals = 0;   /* only a wait that finds it full may consume a slot */
        err = coro_event_wait(&ch->writable, "chan send", timeout_ms);
        if (err < 0)
            return err;
    }
    if (ch->closed)
        return UV_EPIPE;
    ch->items[(ch->head + ch->len) % ch->cap] = v;
    ch->len++;
    coro_event_signal(&ch->readable);
    return 0;
}

int coro_chan_recv(struct coro_chan *ch, void **v, int64_t timeout_ms)
{
    int err;

    while (ch->len == 0) {
        if (ch->closed)
            return UV_EOF;
        ch->readable.signals = 0;
        err = coro_event_wait(&ch->readable, "chan recv", timeout_ms);
        if (err < 0)
            return err;
    }
    *v = ch->items[ch->head];
    ch->head = (ch->head + 1) % ch->cap;
    ch->len--;
    coro_event_signal(&ch->writable);
    return 0;
}

void coro_chan_close(struct coro_chan *ch)
{
    ch->closed = 1;
    coro_event_broadcast(&ch->readable);
    coro_event_broadcast(&ch->writable);
}

