/*
 * cpu.h — layout of the context shared by cpu.c and cpu_spin.S.
 * Offsets are fixed here so the assembly and the C agree; cpu.c checks them
 * with _Static_assert.
 */
#ifndef FERRY_CPU_H
#define FERRY_CPU_H

#define CPU_OFF_SELF      0    /* u64: address of the context (expected %rdi) */
#define CPU_OFF_ITER      8    /* u64: completed, fully checked iterations */
#define CPU_OFF_LEVEL     16   /* u64: 0 = SSE, 1 = AVX, 2 = AVX-512 */
#define CPU_OFF_FAIL      24   /* u64: failure code, 0 = none */
#define CPU_OFF_FOUND     32   /* u64: value found by the failed check */
#define CPU_OFF_XSAVE_OK  40   /* u64: 1 = save with xsave64, 0 = fxsave64 */
#define CPU_OFF_READY_ITER 48  /* u64: iteration count when READY was written */
#define CPU_OFF_FSBASE    56   /* u64: expected %fs:0 (= fs_base, glibc's TCB self pointer) */
#define CPU_OFF_TLS       64   /* u64: expected value of the TLS variable cpu_tls_marker */
#define CPU_OFF_GS0       72   /* u64: expected %gs:0 */
#define CPU_OFF_GS8       80   /* u64: expected %gs:8 */
#define CPU_OFF_GPR       128  /* 13 x u64: rbx rcx rdx rsi rbp r8 r9 r10 r11 r12 r13 r14 r15 */
#define CPU_OFF_FCW       256  /* u64: expected x87 control word */
#define CPU_OFF_MXCSR     264  /* u64: expected MXCSR, exception flag bits (0x3f) cleared */
#define CPU_OFF_ST        320  /* 8 x 16 bytes: expected st(0)..st(7) (80-bit, zero padded) */
#define CPU_OFF_VEC       512  /* 32 x 64 bytes: expected zmm0..31 (xmm/ymm use the low part) */
#define CPU_OFF_K         2560 /* 8 x u64: expected k0..k7 (k1..k7 checked) */
#define CPU_OFF_SCRATCH   2624 /* 64 bytes, 64-aligned */
#define CPU_OFF_FXSAVE    2752 /* 512 bytes, 16-aligned */
#define CPU_OFF_XSAVE     3328 /* xsave area, 64-aligned */
#define CPU_XSAVE_MAX     12288
#define CPU_CTX_SIZE      (CPU_OFF_XSAVE + CPU_XSAVE_MAX)

#define CPU_NGPR 13

/* Failure codes written to CPU_OFF_FAIL */
#define CPU_FAIL_RDI      1
#define CPU_FAIL_GPR      10   /* + index into CPU_OFF_GPR */
#define CPU_FAIL_FCW      30
#define CPU_FAIL_MXCSR    31
#define CPU_FAIL_FSW_TOP  32
#define CPU_FAIL_FTW      33
#define CPU_FAIL_FS0      34
#define CPU_FAIL_TLS      35
#define CPU_FAIL_GS0      36
#define CPU_FAIL_GS8      37
#define CPU_FAIL_ST       40   /* + 2*i (+1 for the exponent word) */
#define CPU_FAIL_K        60   /* + k index */
#define CPU_FAIL_VEC      100  /* + reg*8 + qword */

#ifndef __ASSEMBLER__
/* Runs the checking spin loop; returns the failure code (0 when it stopped on SIGTERM). */
long cpu_spin(void *ctx);
/* Called once from inside the loop, with the whole register state saved. */
void cpu_ready_hook(void);
#endif

#endif
