/* coro/switch_aarch64.S — context switch for aarch64 (AAPCS64).
 *
 *   int coro__switch(struct coro_ctx *from, struct coro_ctx *to, int ret);
 *                    x0                      x1                   w2
 *
 * <to>'s own call of coro__switch returns <ret> (in w0).
 *
 * ABI reference: Procedure Call Standard for the Arm 64-bit Architecture, §6.1.1
 * "General-purpose registers": x19-x29 and sp are callee-saved, x30 (lr) holds our
 * return address; §6.1.2 "SIMD and floating-point registers": the bottom 64 bits of
 * v8-v15 (d8-d15) are callee-saved; FPCR mode bits are preserved across calls.
 *
 * Saved layout (struct coro_ctx in coro/ctx.h, offsets checked by _Static_assert):
 *   0x00 x19 .. 0x48 x28   (10 x 8 bytes)
 *   0x50 x29 (fp)
 *   0x58 x30 (lr)   where <from> continues
 *   0x60 sp
 *   0x68 fpcr
 *   0x70 d8 .. 0xa8 d15
 */
    .text
    .globl  coro__switch
    .hidden coro__switch
    .type   coro__switch, %function
    .p2align 4
coro__switch:
    .cfi_startproc
    stp     x19, x20, [x0, #0x00]   /* save x19, x20 */
    stp     x21, x22, [x0, #0x10]   /* save x21, x22 */
    stp     x23, x24, [x0, #0x20]   /* save x23, x24 */
    stp     x25, x26, [x0, #0x30]   /* save x25, x26 */
    stp     x27, x28, [x0, #0x40]   /* save x27, x28 */
    stp     x29, x30, [x0, #0x50]   /* save fp and lr (our return address) */
    mov     x9, sp
    str     x9,       [x0, #0x60]   /* save sp */
    mrs     x9, fpcr
    str     x9,       [x0, #0x68]   /* save FPCR (rounding, flush-to-zero) */
    stp     d8,  d9,  [x0, #0x70]   /* save d8, d9 */
    stp     d10, d11, [x0, #0x80]   /* save d10, d11 */
    stp     d12, d13, [x0, #0x90]   /* save d12, d13 */
    stp     d14, d15, [x0, #0xa0]   /* save d14, d15 */

    ldp     x19, x20, [x1, #0x00]   /* restore x19, x20 */
    ldp     x21, x22, [x1, #0x10]   /* restore x21, x22 */
    ldp     x23, x24, [x1, #0x20]   /* restore x23, x24 */
    ldp     x25, x26, [x1, #0x30]   /* restore x25, x26 */
    ldp     x27, x28, [x1, #0x40]   /* restore x27, x28 */
    ldp     x29, x30, [x1, #0x50]   /* restore fp and lr */
    ldr     x9,       [x1, #0x60]
    mov     sp, x9                  /* restore sp: from here on we are on <to>'s stack */
    ldr     x9,       [x1, #0x68]
    msr     fpcr, x9                /* restore FPCR */
    ldp     d8,  d9,  [x1, #0x70]   /* restore d8, d9 */
    ldp     d10, d11, [x1, #0x80]   /* restore d10, d11 */
    ldp     d12, d13, [x1, #0x90]   /* restore d12, d13 */
    ldp     d14, d15, [x1, #0xa0]   /* restore d14, d15 */
    mov     w0, w2                  /* what <to>'s coro__switch returns */
    ret                             /* to lr: where <to> called coro__switch */
    .cfi_endproc
    .size   coro__switch, .-coro__switch

    .section .note.GNU-stack,"",%progbits
