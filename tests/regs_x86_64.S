/* tests/regs_x86_64.S — proves the callee-saved registers survive coroutine switches.
 *
 *   int coro_test_regs(uint64_t seed, int (*yield)(void));
 *                      %rdi           %rsi
 *
 * Loads rbx, rbp, r12-r15 with values derived from <seed>, calls <yield> (which switches
 * to other coroutines that load other values), and returns a bitmask of the registers
 * that came back different (0 = all intact). Restores the caller's registers itself.
 */
    .text
    .globl  coro_test_regs
    .type   coro_test_regs, @function
coro_test_regs:
    pushq   %rbx
    pushq   %rbp
    pushq   %r12
    pushq   %r13
    pushq   %r14
    pushq   %r15
    pushq   %rdi                    /* seed at 0(%rsp); 7 pushes: rsp % 16 == 0 */
    movq    %rdi, %rbx
    leaq    1(%rdi), %rbp
    leaq    2(%rdi), %r12
    leaq    3(%rdi), %r13
    leaq    4(%rdi), %r14
    leaq    5(%rdi), %r15
    subq    $8, %rsp                /* keep the call 16-byte aligned */
    call    *%rsi
    addq    $8, %rsp
    movq    0(%rsp), %rdi
    xorl    %eax, %eax
    cmpq    %rdi, %rbx
    je      1f
    orl     $1, %eax
1:  leaq    1(%rdi), %rcx
    cmpq    %rcx, %rbp
    je      2f
    orl     $2, %eax
2:  leaq    2(%rdi), %rcx
    cmpq    %rcx, %r12
    je      3f
    orl     $4, %eax
3:  leaq    3(%rdi), %rcx
    cmpq    %rcx, %r13
    je      4f
    orl     $8, %eax
4:  leaq    4(%rdi), %rcx
    cmpq    %rcx, %r14
    je      5f
    orl     $16, %eax
5:  leaq    5(%rdi), %rcx
    cmpq    %rcx, %r15
    je      6f
    orl     $32, %eax
6:  popq    %rdi
    popq    %r15
    popq    %r14
    popq    %r13
    popq    %r12
    popq    %rbp
    popq    %rbx
    ret
    .size   coro_test_regs, .-coro_test_regs

    .section .note.GNU-stack,"",@progbits
