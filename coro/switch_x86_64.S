/* coro/switch_x86_64.S — context switch for x86_64 (System V AMD64 ABI).
 *
 *   int coro__switch(struct coro_ctx *from, struct coro_ctx *to, int ret);
 *                    %rdi                    %rsi                 %edx
 *
 * <to>'s own call of coro__switch returns <ret> (in %eax).
 *
 * ABI reference: System V AMD64 psABI 1.0, §3.2.1 "Registers": rbx, rbp, r12-r15, rsp
 * belong to the caller and must be preserved; "the control bits of the MXCSR register
 * are callee-saved, while the status bits are caller-saved"; the x87 control word is
 * callee-saved. Everything else (rax, rcx, rdx, rsi, rdi, r8-r11, xmm0-15, flags) is
 * clobbered by any call, so the compiler already assumes it lost.
 *
 * Saved layout (struct coro_ctx in coro/ctx.h, offsets checked by _Static_assert):
 *   0x00 rip     return address of this call: where <from> continues
 *   0x08 rsp     stack pointer as it will be after that return
 *   0x10 rbx
 *   0x18 rbp
 *   0x20 r12
 *   0x28 r13
 *   0x30 r14
 *   0x38 r15
 *   0x40 mxcsr   (32 bits)
 *   0x44 x87 cw  (16 bits)
 *
 * We return with a jmp to the saved rip and an rsp already past the return address,
 * which is what `ret` would have done, without making the return-address predictor
 * mispredict every switch for nothing (it does anyway: that is the nature of a switch).
 */
    .text
    .globl  coro__switch
    .hidden coro__switch
    .type   coro__switch, @function
    .p2align 4
coro__switch:
    .cfi_startproc
    movq    (%rsp), %rax            /* our return address ... */
    leaq    8(%rsp), %rcx           /* ... and the caller's rsp once it has returned */
    movq    %rax, 0x00(%rdi)        /* save rip */
    movq    %rcx, 0x08(%rdi)        /* save rsp */
    movq    %rbx, 0x10(%rdi)        /* save rbx */
    movq    %rbp, 0x18(%rdi)        /* save rbp */
    movq    %r12, 0x20(%rdi)        /* save r12 */
    movq    %r13, 0x28(%rdi)        /* save r13 */
    movq    %r14, 0x30(%rdi)        /* save r14 */
    movq    %r15, 0x38(%rdi)        /* save r15 */
    stmxcsr 0x40(%rdi)              /* save MXCSR (rounding, FTZ/DAZ, exception masks) */
    fnstcw  0x44(%rdi)              /* save x87 control word (precision, rounding) */

    movq    0x10(%rsi), %rbx        /* restore rbx */
    movq    0x18(%rsi), %rbp        /* restore rbp */
    movq    0x20(%rsi), %r12        /* restore r12 */
    movq    0x28(%rsi), %r13        /* restore r13 */
    movq    0x30(%rsi), %r14        /* restore r14 */
    movq    0x38(%rsi), %r15        /* restore r15 */
    ldmxcsr 0x40(%rsi)              /* restore MXCSR */
    fldcw   0x44(%rsi)              /* restore x87 control word */
    movl    %edx, %eax              /* what <to>'s coro__switch returns */
    movq    0x08(%rsi), %rsp        /* restore rsp: from here on we are on <to>'s stack */
    jmpq    *0x00(%rsi)             /* continue <to> where it called coro__switch */
    .cfi_endproc
    .size   coro__switch, .-coro__switch

    .section .note.GNU-stack,"",@progbits
