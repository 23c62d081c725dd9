/* coro/ctx.c — context creation for the assembly switches, and the ucontext fallback. */
#include <string.h>

#include "ctx.h"

#if defined(CORO_USE_UCONTEXT)

void coro__ctx_make(struct coro_ctx *ctx, void *stack_lo, void *top, void (*entry)(void))
{
    memset(ctx, 0, sizeof(*ctx));
    getcontext(&ctx->uc);      /* also captures the FP control state of this thread */
    ctx->uc.uc_stack.ss_sp = stack_lo;
    ctx->uc.uc_stack.ss_size = (size_t)((char *)top - (char *)stack_lo);
    ctx->uc.uc_link = NULL;
    makecontext(&ctx->uc, entry, 0);
    ctx->sp = top;
}

int coro__switch(struct coro_ctx *from, struct coro_ctx *to, int ret)
{
    volatile char marker = 0;

    /* swapcontext saves registers in the ucontext_t, not on the stack, so what a parked
     * context needs of its stack lies above this frame; keep a margin for our own. */
    from->sp = (char *)((uintptr_t)&marker - 256);
    to->ret = ret;
    swapcontext(&from->uc, &to->uc);
    (void)marker;
    return from->ret;
}

void *coro__ctx_sp(const struct coro_ctx *ctx)
{
    return ctx->sp;
}

#elif defined(__x86_64__)

void coro__ctx_make(struct coro_ctx *ctx, void *stack_lo, void *top, void (*entry)(void))
{
    (void)stack_lo;
    memset(ctx, 0, sizeof(*ctx));
    ctx->rip = (void *)entry;
    /* As if <entry> had just been called: rsp + 8 is 16-byte aligned. The slot at rsp is
     * the (never used) return address; the scheduler zeroes it before the first run so
     * unwinders stop there. rbp = 0 ends frame-pointer chains. */
    ctx->rsp = (char *)top - 8;
    __asm__ volatile("stmxcsr %0" : "=m"(ctx->mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(ctx->fpucw));
}

void *coro__ctx_sp(const struct coro_ctx *ctx)
{
    return ctx->rsp;
}

#elif defined(__aarch64__)

void coro__ctx_make(struct coro_ctx *ctx, void *stack_lo, void *top, void (*entry)(void))
{
    uint64_t fpcr;

    (void)stack_lo;
    memset(ctx, 0, sizeof(*ctx));
    ctx->lr = (uint64_t)(uintptr_t)entry;
    ctx->sp = (uint64_t)(uintptr_t)top;   /* AAPCS64: sp 16-byte aligned at a call */
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    ctx->fpcr = fpcr;
}

void *coro__ctx_sp(const struct coro_ctx *ctx)
{
    return (void *)(uintptr_t)ctx->sp;
}

#endif
