/* coro/list.h — the intrusive circular list used by the runtime and its users. */
#ifndef CORO_LIST_H
#define CORO_LIST_H

#include <stddef.h>

#include "coro-t.h"

static inline void coro_list_init(struct coro_list *l)
{
    l->next = l->prev = l;
}

static inline int coro_list_empty(const struct coro_list *l)
{
    return l->next == l;
}

static inline void coro_list_add_tail(struct coro_list *head, struct coro_list *n)
{
    n->prev = head->prev;
    n->next = head;
    head->prev->next = n;
    head->prev = n;
}

static inline void coro_list_del(struct coro_list *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->next = n->prev = n;
}

#define coro_list_entry(p, type, member) \
    ((type *)(void *)((char *)(p) - offsetof(type, member)))

#endif
