/* common/utf8.h — a streaming UTF-8 validator (RFC 3629) for WebSocket text messages.
 *
 * The state is one byte, so a message can be validated chunk by chunk as it streams
 * through, whatever the chunk boundaries: no copy, no lookahead. Rejects overlong forms,
 * UTF-16 surrogates (U+D800..U+DFFF) and code points above U+10FFFF, as RFC 6455 §8.1
 * requires ("a text frame carries UTF-8").
 */
#ifndef CG_UTF8_H
#define CG_UTF8_H

#include <stddef.h>
#include <stdint.h>

#define CG_UTF8_ACCEPT 0     /* at a character boundary: the text so far is valid */
#define CG_UTF8_REJECT 0xff  /* invalid; sticky */

/* Validates <len> bytes at <data> following <state> (CG_UTF8_ACCEPT for a new text).
 * Returns the new state: CG_UTF8_ACCEPT, CG_UTF8_REJECT (stays so), or an in-between
 * state when the bytes end inside a character. A whole text is valid when the final
 * state is CG_UTF8_ACCEPT. */
uint8_t cg_utf8_feed(uint8_t state, const void *data, size_t len);

/* 1 when the <len> bytes at <data> are complete, valid UTF-8. */
static inline int cg_utf8_is_valid(const void *data, size_t len)
{
    return cg_utf8_feed(CG_UTF8_ACCEPT, data, len) == CG_UTF8_ACCEPT;
}

#endif
