/*
 * wl_sys.S — race-free blocking syscall for the workloads.
 *
 * long wl_block_syscall(long nr, long a1, long a2, long a3, long a4)
 *
 * Tests wl_term, then issues the syscall and returns the raw kernel result
 * (-errno on failure; errno is not touched, so a leaked -516 is visible).
 * The SIGTERM handler in wl.c moves the PC to wl_block_cancel when it finds
 * it in [wl_block_window_start, wl_block_window_end], i.e. after the flag
 * test but before the syscall instruction ran, or when the kernel rewound the
 * PC onto the syscall instruction to restart the call. Without this, a
 * SIGTERM landing just before the syscall would leave the workload blocked
 * for an hour.
 */
    .text
    .globl wl_block_syscall
    .type wl_block_syscall, @function
    .globl wl_block_window_start
    .globl wl_block_window_end
    .globl wl_block_cancel
wl_block_syscall:
    .cfi_startproc
    mov %rdi, %rax
    mov %rsi, %rdi
    mov %rdx, %rsi
    mov %rcx, %rdx
    mov %r8, %r10
wl_block_window_start:
    cmpl $0, wl_term(%rip)
    jne wl_block_cancel
wl_block_window_end:
    syscall
    ret
wl_block_cancel:
    mov $-4, %rax           /* -EINTR */
    ret
    .cfi_endproc
    .size wl_block_syscall, . - wl_block_syscall

/*
 * long wl_raw_syscall(long nr, long a1, long a2, long a3)
 * A syscall that touches neither errno nor TLS: the crash reporter uses it,
 * so it still works when fs_base is broken.
 */
    .globl wl_raw_syscall
    .type wl_raw_syscall, @function
wl_raw_syscall:
    .cfi_startproc
    mov %rdi, %rax
    mov %rsi, %rdi
    mov %rdx, %rsi
    mov %rcx, %rdx
    syscall
    ret
    .cfi_endproc
    .size wl_raw_syscall, . - wl_raw_syscall

    .section .note.GNU-stack, "", @progbits
