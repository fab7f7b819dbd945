/* wl.c — shared protocol helpers for Ferry's test workloads (see wl.h). */
#include "wl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

volatile sig_atomic_t wl_term;
const char *wl_name = "workload";
char wl_result_path[4096];
int wl_debug_on;
void (*wl_before_write)(void);
void (*wl_after_write)(void);

static char fail_msg[1024];
static volatile int failed;

/* Labels in wl_sys.S (the race-free blocking syscall). */
extern char wl_block_window_start[], wl_block_window_end[], wl_block_cancel[];

static void term_handler(int sig, siginfo_t *si, void *ucv)
{
    (void)sig;
    (void)si;
    ucontext_t *uc = ucv;
    wl_term = 1;
    /*
     * If the signal landed between the flag test and the syscall
     * instruction, or the kernel rewound the PC onto the syscall
     * instruction to restart it (SA_RESTART), leave through the
     * "return -EINTR" exit instead of blocking forever.
     */
    greg_t pc = uc->uc_mcontext.gregs[REG_RIP];
    if (pc >= (greg_t)wl_block_window_start && pc <= (greg_t)wl_block_window_end)
        uc->uc_mcontext.gregs[REG_RIP] = (greg_t)wl_block_cancel;
}

/* ---- async-signal-safe formatting for the crash reporter ------------------ */

__attribute__((no_stack_protector)) static size_t put_str(char *b, size_t at, size_t cap, const char *s)
{
    while (*s && at + 1 < cap)
        b[at++] = *s++;
    b[at] = 0;
    return at;
}

__attribute__((no_stack_protector)) static size_t put_hex(char *b, size_t at, size_t cap, uint64_t v)
{
    char tmp[19];
    int n = 0;
    tmp[n++] = '0';
    tmp[n++] = 'x';
    int started = 0;
    for (int sh = 60; sh >= 0; sh -= 4) {
        int d = (v >> sh) & 0xf;
        if (d || started || sh == 0) {
            tmp[n++] = "0123456789abcdef"[d];
            started = 1;
        }
    }
    tmp[n] = 0;
    return put_str(b, at, cap, tmp);
}

__attribute__((no_stack_protector)) static size_t put_dec(char *b, size_t at, size_t cap, long v)
{
    char tmp[24];
    int n = sizeof tmp - 1;
    tmp[n] = 0;
    int neg = v < 0;
    unsigned long u = neg ? -(unsigned long)v : (unsigned long)v;
    do {
        tmp[--n] = '0' + u % 10;
        u /= 10;
    } while (u);
    if (neg)
        tmp[--n] = '-';
    return put_str(b, at, cap, tmp + n);
}

__attribute__((no_stack_protector)) static const char *sig_name(int sig)
{
    switch (sig) {
    case SIGSEGV: return "SIGSEGV";
    case SIGBUS: return "SIGBUS";
    case SIGILL: return "SIGILL";
    case SIGFPE: return "SIGFPE";
    case SIGABRT: return "SIGABRT";
    default: return "signal";
    }
}

long wl_raw_syscall(long nr, long a1, long a2, long a3);

/*
 * temp + rename with raw syscalls only (no errno, no TLS, no stack
 * protector): usable from the crash handler even when fs_base is broken.
 */
__attribute__((no_stack_protector)) static void write_atomic_raw(const char *path,
                                                                 const char *data, size_t len)
{
    char tmp[4200];
    size_t pl = 0;
    while (path[pl] && pl < sizeof tmp - 8)
        tmp[pl] = path[pl], pl++;
    const char *suf = ".tmp";
    for (int i = 0; i < 5; i++)
        tmp[pl + i] = suf[i];
    long fd = wl_raw_syscall(SYS_open, (long)tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return;
    size_t off = 0;
    while (off < len) {
        long w = wl_raw_syscall(SYS_write, fd, (long)(data + off), (long)(len - off));
        if (w == -EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    wl_raw_syscall(SYS_close, fd, 0, 0);
    wl_raw_syscall(SYS_rename, (long)tmp, (long)path, 0);
}

__attribute__((no_stack_protector)) static void crash_handler(int sig, siginfo_t *si, void *ucv)
{
    ucontext_t *uc = ucv;
    char b[256];
    size_t n = put_str(b, 0, sizeof b, "FAIL crashed: ");
    n = put_str(b, n, sizeof b, sig_name(sig));
    n = put_str(b, n, sizeof b, " (");
    n = put_dec(b, n, sizeof b, sig);
    n = put_str(b, n, sizeof b, ") si_code ");
    n = put_dec(b, n, sizeof b, si->si_code);
    n = put_str(b, n, sizeof b, " addr ");
    n = put_hex(b, n, sizeof b, (uint64_t)(uintptr_t)si->si_addr);
    n = put_str(b, n, sizeof b, " pc ");
    n = put_hex(b, n, sizeof b, (uint64_t)uc->uc_mcontext.gregs[REG_RIP]);
    n = put_str(b, n, sizeof b, " sp ");
    n = put_hex(b, n, sizeof b, (uint64_t)uc->uc_mcontext.gregs[REG_RSP]);
    if (wl_term)
        n = put_str(b, n, sizeof b, " (during the SIGTERM check)");
    n = put_str(b, n, sizeof b, "\n");
    if (wl_before_write)
        wl_before_write();
    write_atomic_raw(wl_result_path, b, n);
    if (wl_debug_on)
        wl_raw_syscall(SYS_write, 2, (long)b, (long)n);
    /* SA_RESETHAND: returning re-executes the fault with the default action. */
    if (sig == SIGABRT || si->si_code <= 0)
        wl_raw_syscall(SYS_kill, wl_raw_syscall(SYS_getpid, 0, 0, 0), sig, 0);
}

void wl_init(int argc, char **argv, int extra_sa_flags)
{
    const char *slash = argv[0] ? strrchr(argv[0], '/') : NULL;
    wl_name = slash ? slash + 1 : (argv[0] ? argv[0] : "workload");
    const char *dbg = getenv("FERRY_WL_DEBUG");
    wl_debug_on = dbg && strcmp(dbg, "1") == 0;
    if (argc < 2 || !argv[1][0]) {
        fprintf(stderr, "usage: %s <result-file> [args...]\n", wl_name);
        _exit(2);
    }
    if (argv[1][0] == '/') {
        snprintf(wl_result_path, sizeof wl_result_path, "%s", argv[1]);
    } else {
        char cwd[2048];
        if (!getcwd(cwd, sizeof cwd)) {
            fprintf(stderr, "%s: getcwd: %s\n", wl_name, strerror(errno));
            _exit(2);
        }
        snprintf(wl_result_path, sizeof wl_result_path, "%s/%s", cwd, argv[1]);
    }

    /*
     * Start from a known fd table: whatever the harness leaked above stderr
     * (an epoll fd, a socket, ...) is not part of the workload's state and
     * could make a checkpoint fail for the wrong reason.
     */
    if (close_range(3, ~0U, 0) != 0) {
        fprintf(stderr, "%s: close_range: %s\n", wl_name, strerror(errno));
        _exit(2);
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = term_handler;
    sa.sa_flags = SA_SIGINFO | extra_sa_flags;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0)
        wl_setup_fail("sigaction(SIGTERM): %s", strerror(errno));

    static const int crash_sigs[] = {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof crash_sigs / sizeof crash_sigs[0]; i++) {
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = crash_handler;
        sa.sa_flags = SA_SIGINFO | SA_RESETHAND | SA_NODEFER | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        if (sigaction(crash_sigs[i], &sa, NULL) != 0)
            wl_setup_fail("sigaction(%d): %s", crash_sigs[i], strerror(errno));
    }
    wl_dbg("started, result file %s", wl_result_path);
}

int wl_write_atomic(const char *path, const char *data, size_t len)
{
    char tmp[4200];
    size_t pl = strlen(path);
    if (pl + 5 >= sizeof tmp)
        return -ENAMETOOLONG;
    memcpy(tmp, path, pl);
    memcpy(tmp + pl, ".tmp", 5);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            unlink(tmp);
            return -e;
        }
        off += (size_t)w;
    }
    if (close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return -e;
    }
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return -e;
    }
    return 0;
}

static int write_with_hooks(const char *path, const char *data, size_t len)
{
    if (wl_before_write)
        wl_before_write();
    int r = wl_write_atomic(path, data, len);
    if (wl_after_write)
        wl_after_write();
    return r;
}

void wl_ready(void)
{
    char path[4200], line[64];
    snprintf(path, sizeof path, "%s.ready", wl_result_path);
    int n = snprintf(line, sizeof line, "READY %d\n", (int)getpid());
    int r = write_with_hooks(path, line, (size_t)n);
    if (r != 0)
        wl_setup_fail("writing %s: %s", path, strerror(-r));
    wl_dbg("READY written");
}

static void sanitize(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

void wl_setup_fail(const char *fmt, ...)
{
    char msg[1024], line[1100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sanitize(msg);
    int n = snprintf(line, sizeof line, "FAIL setup: %s\n", msg);
    if (n > (int)sizeof line - 1)
        n = sizeof line - 1;
    if (wl_result_path[0])
        write_with_hooks(wl_result_path, line, (size_t)n);
    if (wl_debug_on)
        fprintf(stderr, "[%s %d] %s", wl_name, (int)getpid(), line);
    _exit(2);
}

void wl_fail_at(const char *file, int line, const char *fmt, ...)
{
    if (failed)
        return;
    failed = 1;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(fail_msg, sizeof fail_msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n < sizeof fail_msg - 1) {
        const char *base = strrchr(file, '/');
        snprintf(fail_msg + n, sizeof fail_msg - (size_t)n, " [%s:%d]",
                 base ? base + 1 : file, line);
    }
    sanitize(fail_msg);
    wl_dbg("FAIL %s", fail_msg);
}

int wl_failed(void)
{
    return failed;
}

void wl_finish(void)
{
    char line[1100];
    int n;
    if (failed)
        n = snprintf(line, sizeof line, "FAIL %s\n", fail_msg);
    else
        n = snprintf(line, sizeof line, "PASS\n");
    if (n > (int)sizeof line - 1) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    int r = write_with_hooks(wl_result_path, line, (size_t)n);
    if (r != 0 && wl_debug_on)
        fprintf(stderr, "[%s %d] cannot write %s: %s\n", wl_name, (int)getpid(),
                wl_result_path, strerror(-r));
    wl_dbg("result: %.*s", n - 1, line);
    _exit(r == 0 ? 0 : 3);
}

void wl_dbg(const char *fmt, ...)
{
    if (!wl_debug_on)
        return;
    char msg[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char line[1300];
    int n = snprintf(line, sizeof line, "[%s %d] %s\n", wl_name, (int)getpid(), msg);
    if (n > (int)sizeof line - 1)
        n = sizeof line - 1;
    ssize_t r = write(2, line, (size_t)n);
    (void)r;
}

/* ---- patterns ----------------------------------------------------------- */

static inline uint64_t pattern_word(uint64_t seed, uint64_t w)
{
    return wl_mix(seed * 0x100000001b3ULL + w);
}

uint8_t wl_pattern_byte(uint64_t seed, uint64_t pos)
{
    return (uint8_t)(pattern_word(seed, pos >> 3) >> ((pos & 7) * 8));
}

void wl_pattern_fill(void *bufv, size_t len, uint64_t seed, uint64_t offset)
{
    uint8_t *buf = bufv;
    size_t i = 0;
    while (i < len && ((offset + i) & 7))
        buf[i] = wl_pattern_byte(seed, offset + i), i++;
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word(seed, (offset + i) >> 3);
        memcpy(buf + i, &w, 8);
    }
    for (; i < len; i++)
        buf[i] = wl_pattern_byte(seed, offset + i);
}

long wl_pattern_find_diff(const void *bufv, size_t len, uint64_t seed, uint64_t offset)
{
    const uint8_t *buf = bufv;
    size_t i = 0;
    while (i < len && ((offset + i) & 7)) {
        if (buf[i] != wl_pattern_byte(seed, offset + i))
            return (long)i;
        i++;
    }
    for (; i + 8 <= len; i += 8) {
        uint64_t w = pattern_word(seed, (offset + i) >> 3), have;
        memcpy(&have, buf + i, 8);
        if (w != have)
            break;
    }
    for (; i < len; i++)
        if (buf[i] != wl_pattern_byte(seed, offset + i))
            return (long)i;
    return -1;
}

long wl_find_nonzero(const void *bufv, size_t len)
{
    const uint8_t *buf = bufv;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t have;
        memcpy(&have, buf + i, 8);
        if (have)
            break;
    }
    for (; i < len; i++)
        if (buf[i])
            return (long)i;
    return -1;
}

uint64_t wl_hash(const void *bufv, size_t len)
{
    const uint8_t *buf = bufv;
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
        uint64_t w;
        memcpy(&w, buf + i, 8);
        h = (h ^ w) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    for (; i < len; i++)
        h = (h ^ buf[i]) * 0x100000001b3ULL;
    return h ^ len;
}

int wl_check_pattern_at(const char *file, int line, const char *what, const void *buf,
                        size_t len, uint64_t seed, uint64_t offset)
{
    long d = wl_pattern_find_diff(buf, len, seed, offset);
    if (d < 0)
        return 1;
    const uint8_t *p = buf;
    size_t bad = 1;
    while ((size_t)d + bad < len &&
           p[d + bad] != wl_pattern_byte(seed, offset + (uint64_t)d + bad) && bad < 1u << 30)
        bad++;
    wl_fail_at(file, line,
               "%s: byte +0x%lx (address %p) expected 0x%02x found 0x%02x "
               "(%zu consecutive wrong bytes from there)",
               what, d, (const void *)(p + d),
               wl_pattern_byte(seed, offset + (uint64_t)d), p[d], bad);
    return 0;
}

int wl_check_zero_at(const char *file, int line, const char *what, const void *buf, size_t len)
{
    long d = wl_find_nonzero(buf, len);
    if (d < 0)
        return 1;
    const uint8_t *p = buf;
    wl_fail_at(file, line,
               "%s: byte +0x%lx (address %p) expected 0x00 found 0x%02x", what, d,
               (const void *)(p + d), p[d]);
    return 0;
}

/* ---- small helpers -------------------------------------------------------- */

ssize_t wl_read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t off = 0;
    while (off + 1 < cap) {
        ssize_t r = read(fd, buf + off, cap - 1 - off);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = errno;
            close(fd);
            errno = e;
            return -1;
        }
        if (r == 0)
            break;
        off += (size_t)r;
    }
    buf[off] = 0;
    close(fd);
    if (off + 1 >= cap) {
        errno = EFBIG;
        return -1;
    }
    return (ssize_t)off;
}

int wl_status_field(const char *key, char *out, size_t cap)
{
    static char status[16384];
    if (wl_read_file("/proc/self/status", status, sizeof status) < 0)
        return -1;
    size_t kl = strlen(key);
    for (char *line = status; line && *line;) {
        char *nl = strchr(line, '\n');
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            char *v = line + kl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vl = nl ? (size_t)(nl - v) : strlen(v);
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = 0;
            return 0;
        }
        line = nl ? nl + 1 : NULL;
    }
    return -1;
}

int64_t wl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
