/*
 * wl.h — shared protocol helpers for Ferry's test workloads.
 *
 * Protocol (see README.md):
 *   <workload> <result-file> [args...]
 *   setup -> "READY <pid>\n" into <result-file>.ready (temp + rename)
 *   work until SIGTERM -> verify state -> "PASS\n" or "FAIL <reason>\n"
 *   into <result-file> (temp + rename) -> exit 0.
 *
 * Nothing here allocates after wl_init() (no malloc, no stdio streams on the
 * result path), so workloads that compare /proc/self/maps before and after
 * can use every helper freely.
 */
#ifndef FERRY_WL_H
#define FERRY_WL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Set to 1 by the SIGTERM handler; nothing else writes it. */
extern volatile sig_atomic_t wl_term;

/* Program name (basename of argv[0]) and absolute result path. */
extern const char *wl_name;
extern char wl_result_path[4096];

/* 1 when FERRY_WL_DEBUG=1 in the environment. */
extern int wl_debug_on;

/*
 * Close every inherited fd above 2, parse argv[1] (the result file, made
 * absolute so later chdir() does not matter), read FERRY_WL_DEBUG, install
 * the SIGTERM handler with
 * SA_SIGINFO | extra_sa_flags, and install the crash reporters (SIGSEGV,
 * SIGBUS, SIGILL, SIGFPE, SIGABRT: write "FAIL crashed: ..." and die by the
 * signal). Exits with status 2 and a usage line on stderr when argv[1] is
 * missing.
 */
void wl_init(int argc, char **argv, int extra_sa_flags);

/* Write "READY <pid>\n" to <result>.ready (temp + rename). */
void wl_ready(void);

/*
 * Setup failed before READY: write "FAIL setup: <msg>\n" to the result file
 * (and to stderr when debugging) and exit with status 2.
 */
void wl_setup_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Record a failure (only the first one is kept). */
void wl_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* check(cond, fmt, ...): evaluates to cond; records the first failure. */
#define check(cond, ...)                                   \
    __extension__({                                        \
        int wl_ok_ = !!(cond);                             \
        if (!wl_ok_)                                       \
            wl_fail_at(__FILE__, __LINE__, __VA_ARGS__);   \
        wl_ok_;                                            \
    })
int wl_failed(void);

/* Write PASS or FAIL <first failure> to the result file and _exit(0). */
void wl_finish(void) __attribute__((noreturn));

/* Debug line on stderr when FERRY_WL_DEBUG=1. */
void wl_dbg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Hooks run around every write of the .ready/result files (identity.c uses
 * them to raise CAP_DAC_OVERRIDE after it has dropped root).
 */
extern void (*wl_before_write)(void);
extern void (*wl_after_write)(void);

/* ---- patterns and hashes -------------------------------------------- */

/* splitmix64 step: a well-mixed 64-bit value from x. */
static inline uint64_t wl_mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/*
 * Deterministic, position-dependent pattern: byte i of the pattern with seed
 * s depends only on (s, i), so any sub-range can be regenerated and compared
 * without a reference copy. `offset` is the pattern position of buf[0].
 */
void wl_pattern_fill(void *buf, size_t len, uint64_t seed, uint64_t offset);
uint8_t wl_pattern_byte(uint64_t seed, uint64_t pos);
/* Returns the index of the first byte that differs from the pattern, or -1. */
long wl_pattern_find_diff(const void *buf, size_t len, uint64_t seed, uint64_t offset);
/* Returns the index of the first nonzero byte, or -1. */
long wl_find_nonzero(const void *buf, size_t len);

/* 64-bit FNV-1a style hash (word-wise, fast enough for tens of MiB). */
uint64_t wl_hash(const void *buf, size_t len);

/*
 * Verify buf against the pattern; on mismatch record a precise failure
 * ("<what>: byte +off at 0xaddr expected 0xXX found 0xYY") and return 0.
 */
int wl_check_pattern_at(const char *file, int line, const char *what, const void *buf,
                        size_t len, uint64_t seed, uint64_t offset);
#define wl_check_pattern(...) wl_check_pattern_at(__FILE__, __LINE__, __VA_ARGS__)
/* Same for an all-zero range. */
int wl_check_zero_at(const char *file, int line, const char *what, const void *buf, size_t len);
#define wl_check_zero(...) wl_check_zero_at(__FILE__, __LINE__, __VA_ARGS__)

/* ---- small syscall-level helpers (no allocation) ------------------------ */

/* Read a whole (proc) file into buf (NUL-terminated). Returns length or -1. */
ssize_t wl_read_file(const char *path, char *buf, size_t cap);
/* Write the whole buffer to path via temp + rename. 0 on success, -errno. */
int wl_write_atomic(const char *path, const char *data, size_t len);
/* Find "Key:\t<value>" in /proc/self/status; copy the value. 0 on success. */
int wl_status_field(const char *key, char *out, size_t cap);
/* CLOCK_MONOTONIC in nanoseconds. */
int64_t wl_now_ns(void);

/*
 * Blocking syscall without the SIGTERM race (see wl_sys.S): the SIGTERM
 * handler moves the PC to a "return -EINTR" exit when the signal lands after
 * the flag test but before the syscall instruction has run (or when the
 * kernel rewound the PC to re-issue the call). Returns the raw kernel result
 * (-errno on error, never touches errno).
 */
long wl_block_syscall(long nr, long a1, long a2, long a3, long a4);

#endif
