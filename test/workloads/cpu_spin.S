/*
 * cpu_spin.S — the checking spin loop of the cpu workload (see cpu.c).
 *
 * long cpu_spin(struct ctx *ctx)
 *
 * Loads distinctive values into every general register it can own (rbx rcx
 * rdx rsi rbp r8-r15; rdi holds the context, rax is the scratch register),
 * into xmm0-15 / ymm0-15 / zmm0-31 and k1-k7 (by level), and into all eight
 * x87 registers, then loops: every iteration compares all of them, the x87
 * control word, MXCSR, the x87 tag word and TOP, %fs:0 (fs_base), a TLS
 * variable and %gs:0 / %gs:8 against the expected values in the context.
 * Nothing inside the loop calls out, so an interruption anywhere (signal,
 * ptrace stop, injected syscall, checkpoint/restore) must preserve them all.
 * On the first iteration it calls cpu_ready_hook() (which writes READY) with
 * every register saved (xsave64 / fxsave64 and pushes) and restored after;
 * the next iteration is always a full check, so at least one complete check
 * runs after READY. It returns 0 when it sees wl_term set at the end of a
 * fully checked iteration, or the failure code (the value found is stored in
 * the context at CPU_OFF_FOUND).
 */
#include "cpu.h"

    .text

/* compare the qword at ctx+found with ctx+expect; on mismatch fail with code */
.macro CHKMEMQ found, expect, code
    mov \found(%rdi), %rax
    cmp \expect(%rdi), %rax
    je 9f
    mov %rax, CPU_OFF_FOUND(%rdi)
    movq $\code, CPU_OFF_FAIL(%rdi)
    jmp .Lfail
9:
.endm

.macro CHKGPR reg, idx
    cmp CPU_OFF_GPR+8*\idx(%rdi), \reg
    je 9f
    mov \reg, CPU_OFF_FOUND(%rdi)
    movq $(CPU_FAIL_GPR+\idx), CPU_OFF_FAIL(%rdi)
    jmp .Lfail
9:
.endm

.macro CHKRAX expect, code
    cmp \expect(%rdi), %rax
    je 9f
    mov %rax, CPU_OFF_FOUND(%rdi)
    movq $\code, CPU_OFF_FAIL(%rdi)
    jmp .Lfail
9:
.endm

.macro CHKXMM n
    movdqu %xmm\n, CPU_OFF_SCRATCH(%rdi)
    .irp j,0,1
    CHKMEMQ CPU_OFF_SCRATCH+8*\j, CPU_OFF_VEC+64*\n+8*\j, CPU_FAIL_VEC+\n*8+\j
    .endr
.endm

.macro CHKYMM n
    vmovdqu %ymm\n, CPU_OFF_SCRATCH(%rdi)
    .irp j,0,1,2,3
    CHKMEMQ CPU_OFF_SCRATCH+8*\j, CPU_OFF_VEC+64*\n+8*\j, CPU_FAIL_VEC+\n*8+\j
    .endr
.endm

.macro CHKZMM n
    vmovdqu64 %zmm\n, CPU_OFF_SCRATCH(%rdi)
    .irp j,0,1,2,3,4,5,6,7
    CHKMEMQ CPU_OFF_SCRATCH+8*\j, CPU_OFF_VEC+64*\n+8*\j, CPU_FAIL_VEC+\n*8+\j
    .endr
.endm

.macro CHKK n
    kmovq %k\n, %rax
    CHKRAX CPU_OFF_K+8*\n, CPU_FAIL_K+\n
.endm

/* st(i): 8-byte mantissa, then the 2-byte sign/exponent word */
.macro CHKST i
    CHKMEMQ CPU_OFF_FXSAVE+32+16*\i, CPU_OFF_ST+16*\i, CPU_FAIL_ST+2*\i
    movzwl CPU_OFF_FXSAVE+40+16*\i(%rdi), %eax
    cmpw CPU_OFF_ST+16*\i+8(%rdi), %ax
    je 9f
    mov %rax, CPU_OFF_FOUND(%rdi)
    movq $(CPU_FAIL_ST+2*\i+1), CPU_OFF_FAIL(%rdi)
    jmp .Lfail
9:
.endm

    .globl cpu_spin
    .type cpu_spin, @function
cpu_spin:
    .cfi_startproc
    push %rbx
    push %rbp
    push %r12
    push %r13
    push %r14
    push %r15
    mov %rdi, cpu_ctx_g(%rip)

    /* vector registers */
    cmpq $2, CPU_OFF_LEVEL(%rdi)
    je .Lload512
    cmpq $1, CPU_OFF_LEVEL(%rdi)
    je .Lload256
    .irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    movdqu CPU_OFF_VEC+64*\n(%rdi), %xmm\n
    .endr
    jmp .Lloaded
.Lload256:
    .irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    vmovdqu CPU_OFF_VEC+64*\n(%rdi), %ymm\n
    .endr
    jmp .Lloaded
.Lload512:
    .irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    vmovdqu64 CPU_OFF_VEC+64*\n(%rdi), %zmm\n
    .endr
    .irp n,1,2,3,4,5,6,7
    kmovq CPU_OFF_K+8*\n(%rdi), %k\n
    .endr
.Lloaded:
    /* x87: st(i) = expected[i] (push st(7) first) */
    .irp i,7,6,5,4,3,2,1,0
    fldt CPU_OFF_ST+16*\i(%rdi)
    .endr

    /* general registers */
    mov CPU_OFF_GPR+8*0(%rdi), %rbx
    mov CPU_OFF_GPR+8*1(%rdi), %rcx
    mov CPU_OFF_GPR+8*2(%rdi), %rdx
    mov CPU_OFF_GPR+8*3(%rdi), %rsi
    mov CPU_OFF_GPR+8*4(%rdi), %rbp
    mov CPU_OFF_GPR+8*5(%rdi), %r8
    mov CPU_OFF_GPR+8*6(%rdi), %r9
    mov CPU_OFF_GPR+8*7(%rdi), %r10
    mov CPU_OFF_GPR+8*8(%rdi), %r11
    mov CPU_OFF_GPR+8*9(%rdi), %r12
    mov CPU_OFF_GPR+8*10(%rdi), %r13
    mov CPU_OFF_GPR+8*11(%rdi), %r14
    mov CPU_OFF_GPR+8*12(%rdi), %r15

.Lloop:
    cmp cpu_ctx_g(%rip), %rdi
    jne .Lfail_rdi
    CHKGPR %rbx, 0
    CHKGPR %rcx, 1
    CHKGPR %rdx, 2
    CHKGPR %rsi, 3
    CHKGPR %rbp, 4
    CHKGPR %r8, 5
    CHKGPR %r9, 6
    CHKGPR %r10, 7
    CHKGPR %r11, 8
    CHKGPR %r12, 9
    CHKGPR %r13, 10
    CHKGPR %r14, 11
    CHKGPR %r15, 12

    /* control words */
    fnstcw CPU_OFF_SCRATCH(%rdi)
    movzwl CPU_OFF_SCRATCH(%rdi), %eax
    CHKRAX CPU_OFF_FCW, CPU_FAIL_FCW
    stmxcsr CPU_OFF_SCRATCH(%rdi)
    mov CPU_OFF_SCRATCH(%rdi), %eax
    and $~0x3f, %eax
    CHKRAX CPU_OFF_MXCSR, CPU_FAIL_MXCSR

    /* x87 registers, tag word and TOP */
    fxsave64 CPU_OFF_FXSAVE(%rdi)
    movzwl CPU_OFF_FXSAVE+2(%rdi), %eax
    test $0x3800, %eax
    jz 1f
    mov %rax, CPU_OFF_FOUND(%rdi)
    movq $CPU_FAIL_FSW_TOP, CPU_OFF_FAIL(%rdi)
    jmp .Lfail
1:  movzbl CPU_OFF_FXSAVE+4(%rdi), %eax
    cmp $0xff, %eax
    je 1f
    mov %rax, CPU_OFF_FOUND(%rdi)
    movq $CPU_FAIL_FTW, CPU_OFF_FAIL(%rdi)
    jmp .Lfail
1:
    .irp i,0,1,2,3,4,5,6,7
    CHKST \i
    .endr

    /* vector registers */
    cmpq $2, CPU_OFF_LEVEL(%rdi)
    je .Lchk512
    cmpq $1, CPU_OFF_LEVEL(%rdi)
    je .Lchk256
    .irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    CHKXMM \n
    .endr
    jmp .Lchkdone
.Lchk256:
    .irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
    CHKYMM \n
    .endr
    jmp .Lchkdone
.Lchk512:
    .irp n,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    CHKZMM \n
    .endr
    .irp n,1,2,3,4,5,6,7
    CHKK \n
    .endr
.Lchkdone:

    /* fs_base (glibc's TCB starts with a pointer to itself), TLS, gs */
    mov %fs:0, %rax
    CHKRAX CPU_OFF_FSBASE, CPU_FAIL_FS0
    mov %fs:cpu_tls_marker@tpoff, %rax
    CHKRAX CPU_OFF_TLS, CPU_FAIL_TLS
    mov %gs:0, %rax
    CHKRAX CPU_OFF_GS0, CPU_FAIL_GS0
    mov %gs:8, %rax
    CHKRAX CPU_OFF_GS8, CPU_FAIL_GS8

    incq CPU_OFF_ITER(%rdi)
    cmpq $1, CPU_OFF_ITER(%rdi)
    jne .Lnot_first

    /* first iteration: call cpu_ready_hook() with everything saved */
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    mov $-1, %eax
    mov $-1, %edx
    cmpq $0, CPU_OFF_XSAVE_OK(%rdi)
    je 1f
    xsave64 CPU_OFF_XSAVE(%rdi)
    jmp 2f
1:  fxsave64 CPU_OFF_FXSAVE(%rdi)
2:  fninit                          /* the ABI wants an empty x87 stack at calls */
    mov %rsp, cpu_saved_rsp(%rip)
    and $-16, %rsp
    call cpu_ready_hook
    mov cpu_saved_rsp(%rip), %rsp
    mov cpu_ctx_g(%rip), %rdi
    mov $-1, %eax
    mov $-1, %edx
    cmpq $0, CPU_OFF_XSAVE_OK(%rdi)
    je 1f
    xrstor64 CPU_OFF_XSAVE(%rdi)
    jmp 2f
1:  fxrstor64 CPU_OFF_FXSAVE(%rdi)
2:  pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    jmp .Lloop                      /* always one more full check after READY */

.Lnot_first:
    cmpl $0, wl_term(%rip)
    je .Lloop
    xor %eax, %eax
    jmp .Lout

.Lfail_rdi:
    mov %rdi, %rax
    mov cpu_ctx_g(%rip), %rdi
    mov %rax, CPU_OFF_FOUND(%rdi)
    movq $CPU_FAIL_RDI, CPU_OFF_FAIL(%rdi)
.Lfail:
    mov cpu_ctx_g(%rip), %rdi
    mov CPU_OFF_FAIL(%rdi), %rax
.Lout:
    .irp i,0,1,2,3,4,5,6,7
    fstp %st(0)
    .endr
    mov cpu_ctx_g(%rip), %rdi
    cmpq $0, CPU_OFF_LEVEL(%rdi)
    je 1f
    vzeroupper
1:  pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbp
    pop %rbx
    ret
    .cfi_endproc
    .size cpu_spin, . - cpu_spin

    .bss
    .align 8
cpu_ctx_g:
    .quad 0
cpu_saved_rsp:
    .quad 0

    .section .note.GNU-stack, "", @progbits
