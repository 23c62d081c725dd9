/* coro/ctx.h — the machine context a switch saves, and the switch itself.
 *
 * coro__switch(from, to) saves the callee-saved state of the caller into <from> and
 * resumes <to>; it returns when something switches back to <from>. Only what the ABI
 * says a callee must preserve is saved: everything else is dead across a call.
 * The byte offsets below are used by coro/switch_<arch>.S; _Static_asserts tie them to
 * the struct so the two cannot drift apart.
 */
#ifndef CORO_CTX_H
#define CORO_CTX_H

#include <stddef.h>
#include <stdint.h>

#if defined(CORO_USE_UCONTEXT)
#include <ucontext.h>

struct coro_ctx {
    ucontext_t uc;
    void      *sp;   /* lowest stack byte still needed while parked (with a margin) */
    int        ret;  /* what the switch into this context returns */
};
#define CORO_SWITCH_NAME "ucontext"

#elif defined(__x86_64__)
/* System V AMD64 ABI §3.2.1: rbx, rbp, r12-r15 and rsp are callee-saved, as are the
 * control bits of MXCSR and the x87 control word. */
struct coro_ctx {
    void    *rip;    /* 0x00 where to continue */
    void    *rsp;    /* 0x08 stack pointer after the return */
    void    *rbx;    /* 0x10 */
    void    *rbp;    /* 0x18 */
    void    *r12;    /* 0x20 */
    void    *r13;    /* 0x28 */
    void    *r14;    /* 0x30 */
    void    *r15;    /* 0x38 */
    uint32_t mxcsr;  /* 0x40 SSE control/status */
    uint16_t fpucw;  /* 0x44 x87 control word */
    uint16_t pad;
};
#define CORO_CTX_RIP   0x00
#define CORO_CTX_RSP   0x08
#define CORO_CTX_MXCSR 0x40
#define CORO_CTX_FPUCW 0x44
_Static_assert(offsetof(struct coro_ctx, rip) == CORO_CTX_RIP, "rip offset");
_Static_assert(offsetof(struct coro_ctx, rsp) == CORO_CTX_RSP, "rsp offset");
_Static_assert(offsetof(struct coro_ctx, rbx) == 0x10, "rbx offset");
_Static_assert(offsetof(struct coro_ctx, r15) == 0x38, "r15 offset");
_Static_assert(offsetof(struct coro_ctx, mxcsr) == CORO_CTX_MXCSR, "mxcsr offset");
_Static_assert(offsetof(struct coro_ctx, fpucw) == CORO_CTX_FPUCW, "fpucw offset");
#define CORO_SWITCH_NAME "asm-x86_64"

#elif defined(__aarch64__)
/* AAPCS64 §6.1.1: x19-x29, x30 (lr) and sp are callee-saved, and the low 64 bits of
 * v8-v15 (d8-d15); FPCR (rounding, flush-to-zero) is preserved across calls too. */
struct coro_ctx {
    uint64_t x19_x28[10]; /* 0x00 */
    uint64_t fp;          /* 0x50 x29 */
    uint64_t lr;          /* 0x58 x30: where to continue */
    uint64_t sp;          /* 0x60 */
    uint64_t fpcr;        /* 0x68 */
    uint64_t d8_d15[8];   /* 0x70 */
};
#define CORO_CTX_FP   0x50
#define CORO_CTX_LR   0x58
#define CORO_CTX_SP   0x60
#define CORO_CTX_FPCR 0x68
#define CORO_CTX_D8   0x70
_Static_assert(offsetof(struct coro_ctx, fp) == CORO_CTX_FP, "fp offset");
_Static_assert(offsetof(struct coro_ctx, lr) == CORO_CTX_LR, "lr offset");
_Static_assert(offsetof(struct coro_ctx, sp) == CORO_CTX_SP, "sp offset");
_Static_assert(offsetof(struct coro_ctx, fpcr) == CORO_CTX_FPCR, "fpcr offset");
_Static_assert(offsetof(struct coro_ctx, d8_d15) == CORO_CTX_D8, "d8 offset");
#define CORO_SWITCH_NAME "asm-aarch64"

#else
#error "no assembly context switch for this architecture: build with CORO_SWITCH=ucontext"
#endif

/* Saves the caller's context in <from> and continues <to>, whose own coro__switch() call
 * then returns <ret>. Returning the wake result through the switch lets park sites end
 * in a tail call: a resumed coroutine lands directly in its caller, which saves the
 * mispredicted returns of extra frames and the bytes they would add to a saved stack. */
int coro__switch(struct coro_ctx *from, struct coro_ctx *to, int ret);

/* Prepares <ctx> so that switching to it calls <entry>() on the stack ending at <top>
 * (exclusive; 16-byte aligned). <entry> must never return. Captures the caller's FP
 * control state, so a coroutine starts with the rounding mode of its creator's thread. */
void coro__ctx_make(struct coro_ctx *ctx, void *stack_lo, void *top, void (*entry)(void));

/* The stack pointer <ctx> will resume with (its parked coroutine's lowest live byte). */
void *coro__ctx_sp(const struct coro_ctx *ctx);

#endif
