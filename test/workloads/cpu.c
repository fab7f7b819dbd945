/*
 * cpu — register state that must survive checkpoint/restore and injection.
 *
 *   cpu <result-file> [auto|sse|avx|avx512]     (default auto: the best available)
 *
 * Before READY it sets:
 *   - expected values for rbx rcx rdx rsi rbp r8-r15 (13 registers);
 *   - xmm0-15 (sse), ymm0-15 (avx) or zmm0-31 and k1-k7 (avx512: needs
 *     AVX512F + AVX512BW and the OS enabling the state in XCR0);
 *   - eight distinct 80-bit values in st(0)-st(7);
 *   - x87 control word 0x0f7f (round toward zero; default 0x037f) and MXCSR
 *     0xbf80 (round down + flush-to-zero, + DAZ when supported; default 0x1f80);
 *   - a TLS variable (cpu_tls_marker, addressed %fs-relative) and reads
 *     fs_base; sets gs_base (arch_prctl ARCH_SET_GS, unused by glibc) to a
 *     block holding a magic and its own address.
 * Then it enters cpu_spin (cpu_spin.S), which loads all registers and spins,
 * comparing every one of them on every iteration; READY is written from
 * inside the loop after the first fully checked iteration (with all state
 * saved and restored around the call). Between READY and SIGTERM it spins
 * at 100% CPU.
 * At SIGTERM (checked at the end of an iteration): no check ever failed (the
 * first mismatch stops the loop, the process then idles until SIGTERM and
 * reports the register name, expected and found value), the loop completed at least one full check after READY,
 * and fs_base / gs_base (arch_prctl) and the TLS variable still hold their
 * values.
 */
#include "wl.h"
#include "cpu.h"

#include <asm/prctl.h>
#include <cpuid.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

__thread uint64_t cpu_tls_marker __attribute__((tls_model("local-exec")));

static uint8_t ctx[CPU_CTX_SIZE] __attribute__((aligned(64)));
static uint64_t gs_block[4] __attribute__((aligned(64)));

_Static_assert(CPU_OFF_SCRATCH % 64 == 0, "scratch alignment");
_Static_assert(CPU_OFF_FXSAVE % 16 == 0, "fxsave alignment");
_Static_assert(CPU_OFF_XSAVE % 64 == 0, "xsave alignment");
_Static_assert(CPU_OFF_VEC + 32 * 64 <= CPU_OFF_K, "layout");
_Static_assert(CPU_OFF_GPR + CPU_NGPR * 8 <= CPU_OFF_FCW, "layout");

#define Q(off) (*(uint64_t *)(ctx + (off)))

static const char *const gpr_names[CPU_NGPR] = {"rbx", "rcx", "rdx", "rsi", "rbp", "r8", "r9",
                                                "r10", "r11", "r12", "r13", "r14", "r15"};

void cpu_ready_hook(void)
{
    Q(CPU_OFF_READY_ITER) = Q(CPU_OFF_ITER);
    wl_ready();
}

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static uint16_t get_fcw(void)
{
    uint16_t cw;
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    return cw;
}

static uint32_t get_mxcsr(void)
{
    uint32_t m;
    __asm__ volatile("stmxcsr %0" : "=m"(m));
    return m;
}

static void set_fcw(uint16_t cw)
{
    __asm__ volatile("fldcw %0" : : "m"(cw));
}

static void set_mxcsr(uint32_t m)
{
    __asm__ volatile("ldmxcsr %0" : : "m"(m));
}

static void describe(long code, char *out, size_t cap, const char *vecname)
{
    uint64_t found = Q(CPU_OFF_FOUND);
    if (code == CPU_FAIL_RDI) {
        snprintf(out, cap, "register rdi (context pointer): expected 0x%lx found 0x%lx",
                 (unsigned long)(uintptr_t)ctx, (unsigned long)found);
    } else if (code >= CPU_FAIL_GPR && code < CPU_FAIL_GPR + CPU_NGPR) {
        int i = (int)(code - CPU_FAIL_GPR);
        snprintf(out, cap, "register %s: expected 0x%016lx found 0x%016lx", gpr_names[i],
                 (unsigned long)Q(CPU_OFF_GPR + 8 * i), (unsigned long)found);
    } else if (code == CPU_FAIL_FCW) {
        snprintf(out, cap, "x87 control word: expected 0x%04lx found 0x%04lx",
                 (unsigned long)Q(CPU_OFF_FCW), (unsigned long)found);
    } else if (code == CPU_FAIL_MXCSR) {
        snprintf(out, cap, "MXCSR (flags masked): expected 0x%08lx found 0x%08lx",
                 (unsigned long)Q(CPU_OFF_MXCSR), (unsigned long)found);
    } else if (code == CPU_FAIL_FSW_TOP) {
        snprintf(out, cap, "x87 status word: expected TOP=0 (8 values pushed) found FSW 0x%04lx",
                 (unsigned long)found);
    } else if (code == CPU_FAIL_FTW) {
        snprintf(out, cap, "x87 tag word (abridged): expected 0xff (8 valid) found 0x%02lx",
                 (unsigned long)found);
    } else if (code == CPU_FAIL_FS0) {
        snprintf(out, cap, "%%fs:0 (fs_base self pointer): expected 0x%lx found 0x%lx",
                 (unsigned long)Q(CPU_OFF_FSBASE), (unsigned long)found);
    } else if (code == CPU_FAIL_TLS) {
        snprintf(out, cap, "TLS variable cpu_tls_marker: expected 0x%016lx found 0x%016lx",
                 (unsigned long)Q(CPU_OFF_TLS), (unsigned long)found);
    } else if (code == CPU_FAIL_GS0 || code == CPU_FAIL_GS8) {
        int o = code == CPU_FAIL_GS0 ? 0 : 8;
        snprintf(out, cap, "%%gs:%d (gs_base block): expected 0x%016lx found 0x%016lx", o,
                 (unsigned long)Q(o ? CPU_OFF_GS8 : CPU_OFF_GS0), (unsigned long)found);
    } else if (code >= CPU_FAIL_ST && code < CPU_FAIL_ST + 16) {
        int i = (int)(code - CPU_FAIL_ST) / 2, hiw = (int)(code - CPU_FAIL_ST) % 2;
        if (hiw)
            snprintf(out, cap, "x87 st(%d) sign/exponent: expected 0x%04x found 0x%04lx", i,
                     *(uint16_t *)(ctx + CPU_OFF_ST + 16 * i + 8), (unsigned long)found);
        else
            snprintf(out, cap, "x87 st(%d) mantissa: expected 0x%016lx found 0x%016lx", i,
                     (unsigned long)Q(CPU_OFF_ST + 16 * i), (unsigned long)found);
    } else if (code >= CPU_FAIL_K && code < CPU_FAIL_K + 8) {
        int k = (int)(code - CPU_FAIL_K);
        snprintf(out, cap, "opmask k%d: expected 0x%016lx found 0x%016lx", k,
                 (unsigned long)Q(CPU_OFF_K + 8 * k), (unsigned long)found);
    } else if (code >= CPU_FAIL_VEC && code < CPU_FAIL_VEC + 32 * 8) {
        int n = (int)(code - CPU_FAIL_VEC) / 8, j = (int)(code - CPU_FAIL_VEC) % 8;
        snprintf(out, cap, "%s%d qword %d: expected 0x%016lx found 0x%016lx", vecname, n, j,
                 (unsigned long)Q(CPU_OFF_VEC + 64 * n + 8 * j), (unsigned long)found);
    } else {
        snprintf(out, cap, "unknown failure code %ld (found 0x%lx)", code, (unsigned long)found);
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    const char *want = argc > 2 ? argv[2] : "auto";

    unsigned a, b, c, d;
    __cpuid(1, a, b, c, d);
    int osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
    uint64_t xcr0 = osxsave ? xgetbv0() : 0;
    int have_avx = avx && osxsave && (xcr0 & 6) == 6;
    int have_512 = 0;
    if (have_avx && __get_cpuid_max(0, NULL) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        have_512 = ((b >> 16) & 1) && ((b >> 30) & 1) && (xcr0 & 0xe6) == 0xe6;
    }
    int level;
    if (!strcmp(want, "auto"))
        level = have_512 ? 2 : have_avx ? 1 : 0;
    else if (!strcmp(want, "sse"))
        level = 0;
    else if (!strcmp(want, "avx"))
        level = 1;
    else if (!strcmp(want, "avx512"))
        level = 2;
    else
        wl_setup_fail("unknown level '%s' (auto|sse|avx|avx512)", want);
    if (level == 1 && !have_avx)
        wl_setup_fail("AVX requested but not available (cpuid/XCR0)");
    if (level == 2 && !have_512)
        wl_setup_fail("AVX-512 requested but AVX512F/BW or its XCR0 state is not available");
    const char *vecname = level == 2 ? "zmm" : level == 1 ? "ymm" : "xmm";

    Q(CPU_OFF_SELF) = (uint64_t)(uintptr_t)ctx;
    Q(CPU_OFF_LEVEL) = (uint64_t)level;
    if (osxsave) {
        __cpuid_count(0xd, 0, a, b, c, d);
        if (b > CPU_XSAVE_MAX)
            wl_setup_fail("xsave area of %u bytes exceeds %d", b, CPU_XSAVE_MAX);
        Q(CPU_OFF_XSAVE_OK) = 1;
    }
    for (int i = 0; i < CPU_NGPR; i++)
        Q(CPU_OFF_GPR + 8 * i) = wl_mix(0x6770 + i) | 1; /* never 0 */
    for (int n = 0; n < 32; n++)
        for (int j = 0; j < 8; j++)
            Q(CPU_OFF_VEC + 64 * n + 8 * j) = wl_mix(0x7ec0 + n * 8 + j);
    for (int k = 0; k < 8; k++)
        Q(CPU_OFF_K + 8 * k) = wl_mix(0x4b00 + k);
    for (int i = 0; i < 8; i++) {
        long double v = (i + 1) * 1234.5678901234567890L + 1.0L / (i + 3);
        if (i & 1)
            v = -v;
        memset(ctx + CPU_OFF_ST + 16 * i, 0, 16);
        memcpy(ctx + CPU_OFF_ST + 16 * i, &v, 10);
    }

    /* MXCSR: round down + FTZ (+ DAZ if the mask says it exists) */
    static uint8_t fx[512] __attribute__((aligned(16)));
    __asm__ volatile("fxsave64 %0" : "=m"(fx));
    uint32_t mxcsr_mask;
    memcpy(&mxcsr_mask, fx + 28, 4);
    if (!mxcsr_mask)
        mxcsr_mask = 0xffbf;
    uint32_t mxcsr = 0xbf80 | ((mxcsr_mask & 0x40) ? 0x40 : 0);
    const uint16_t fcw = 0x0f7f;
    Q(CPU_OFF_FCW) = fcw;
    Q(CPU_OFF_MXCSR) = mxcsr & ~0x3fu;

    /* TLS, fs_base, gs_base */
    cpu_tls_marker = wl_mix(0x715) | 1;
    Q(CPU_OFF_TLS) = cpu_tls_marker;
    unsigned long fsbase = 0, gsbase = 0;
    if (syscall(SYS_arch_prctl, ARCH_GET_FS, &fsbase) != 0)
        wl_setup_fail("arch_prctl(ARCH_GET_FS): %s", strerror(errno));
    Q(CPU_OFF_FSBASE) = fsbase;
    gs_block[0] = 0x6762617365ULL ^ wl_mix(0x65); /* magic */
    gs_block[1] = (uint64_t)(uintptr_t)gs_block;
    if (syscall(SYS_arch_prctl, ARCH_SET_GS, (unsigned long)gs_block) != 0)
        wl_setup_fail("arch_prctl(ARCH_SET_GS): %s", strerror(errno));
    if (syscall(SYS_arch_prctl, ARCH_GET_GS, &gsbase) != 0 || gsbase != (uintptr_t)gs_block)
        wl_setup_fail("arch_prctl(ARCH_GET_GS) gave 0x%lx, expected %p", gsbase, (void *)gs_block);
    Q(CPU_OFF_GS0) = gs_block[0];
    Q(CPU_OFF_GS8) = gs_block[1];

    wl_dbg("level=%s xcr0=0x%lx xsave=%lu fs_base=0x%lx gs_base=0x%lx ctx=%p", vecname,
           (unsigned long)xcr0, (unsigned long)Q(CPU_OFF_XSAVE_OK), fsbase, gsbase, (void *)ctx);

    set_fcw(fcw);
    set_mxcsr(mxcsr);
    long code = cpu_spin(ctx);
    uint16_t fcw_now = get_fcw();
    uint32_t mxcsr_now = get_mxcsr();
    set_fcw(0x037f);
    set_mxcsr(0x1f80);
    /* a failed check stops the loop early: stay alive until SIGTERM anyway */
    while (!wl_term) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }

    uint64_t iter = Q(CPU_OFF_ITER), ready_iter = Q(CPU_OFF_READY_ITER);
    wl_dbg("stopped with code %ld after %lu iterations (READY at %lu)", code,
           (unsigned long)iter, (unsigned long)ready_iter);
    if (code != 0) {
        char msg[300];
        describe(code, msg, sizeof msg, vecname);
        check(0, "%s (failed in iteration %lu, READY at iteration %lu)", msg,
              (unsigned long)iter + 1, (unsigned long)ready_iter);
    }
    check(ready_iter >= 1 && iter > ready_iter,
          "loop did not complete a full check after READY: %lu iterations, READY at %lu",
          (unsigned long)iter, (unsigned long)ready_iter);
    check(fcw_now == fcw, "x87 control word after the loop: expected 0x%04x found 0x%04x", fcw,
          fcw_now);
    check((mxcsr_now & ~0x3fu) == (mxcsr & ~0x3fu),
          "MXCSR after the loop: expected 0x%08x found 0x%08x", mxcsr, mxcsr_now);
    unsigned long fs2 = 0, gs2 = 0;
    check(syscall(SYS_arch_prctl, ARCH_GET_FS, &fs2) == 0 && fs2 == fsbase,
          "fs_base: expected 0x%lx found 0x%lx", fsbase, fs2);
    check(syscall(SYS_arch_prctl, ARCH_GET_GS, &gs2) == 0 && gs2 == gsbase,
          "gs_base: expected 0x%lx found 0x%lx", gsbase, gs2);
    check(cpu_tls_marker == Q(CPU_OFF_TLS), "TLS variable: expected 0x%lx found 0x%lx",
          (unsigned long)Q(CPU_OFF_TLS), (unsigned long)cpu_tls_marker);
    wl_finish();
}
