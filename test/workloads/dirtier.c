/*
 * dirtier — writes exactly the pages it is told to, for dirty-tracking tests.
 *
 *   dirtier <result-file> [MiB] [threads] [no-userfaultfd]
 *
 * Setup: region "main" of MiB MiB (default 4) of private anonymous memory,
 * every page filled with its pattern, MADV_NOHUGEPAGE so that one write is
 * one 4 KiB page to the kernel. `threads` writer threads (default 0: main
 * writes itself) share every write command. `no-userfaultfd` installs a
 * seccomp filter under which userfaultfd(2) fails with EPERM, as Docker's
 * default profile does. Then READY, and main waits for commands.
 *
 * Commands: the harness writes `<seq> <command>` to <result>.cmd (temp +
 * rename) and sends SIGUSR1; the answer is `<seq> OK <text>` or
 * `<seq> ERR <text>` in <result>.ack (temp + rename). One command at a time.
 * Pages are given as SPEC: comma-separated `N`, `A-B` or `A-B/S` (inclusive,
 * stride S), indexes from the region's start.
 *
 *   addr NAME                    -> addr=0x.. pages=N
 *   map NAME PAGES [touch] [room=N]
 *                                new private anonymous region, untouched
 *                                (zero) unless `touch`; `room` pages (default
 *                                PAGES) are left unmapped behind it so `grow`
 *                                can extend it in place -> addr=0x.. pages=N
 *   write NAME SPEC              writes each page once (page word 0 = its new
 *                                generation, word 1 = a check word), split
 *                                over the writer threads -> pages=K
 *   read NAME SPEC               reads a word of each page -> sum=..
 *   discard NAME SPEC            MADV_DONTNEED: the pages read as zero again
 *   grow NAME PAGES              mremap in place (no move) -> addr, pages
 *   move NAME                    mremap to a new address -> addr, pages
 *   unmap NAME
 *   spin NAME SPEC               writer threads (or main, with 0 threads:
 *                                refused) rewrite their share of SPEC in a
 *                                loop until `stop` -> spinning
 *   stop                         -> writes=K (writes made while spinning)
 *   loop NAME SECONDS [STRIDE]   main writes one page after the other over
 *                                the region (every STRIDE-th page, default
 *                                1) for SECONDS -> writes=K ns=T (benchmarks:
 *                                the write rate with and without tracking)
 *
 * Checks at SIGTERM: every page of every live region holds what the model
 * says: generation 0 pages their initial content (pattern or zero),
 * written pages their generation, check word and the untouched rest.
 *
 * Debug: each command and its answer.
 */
#include "wl.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PAGE 4096UL
#define MAXR 16
#define MAXT 64
#define SEED 0xd1e7e4ULL

struct region {
    char name[32];
    uint8_t *addr;
    size_t pages;
    int live;
    uint64_t seed;
    uint32_t *gen;      /* generation of each page; 0 = never written */
    uint8_t *patterned; /* 1: the page's base content is the pattern, 0: zero */
};

static struct region R[MAXR];
static int nthreads;
static char cmd_path[4200], ack_path[4200];
static volatile sig_atomic_t usr1;

/* The current job for the writer threads. */
static pthread_mutex_t jm = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jc = PTHREAD_COND_INITIALIZER, jdone = PTHREAD_COND_INITIALIZER;
static struct {
    unsigned long seq;
    int spin;
    struct region *r;
    long *pages;
    size_t n;
    int done;
    volatile int stop;
    uint64_t writes;
} job;

static void on_usr1(int sig)
{
    (void)sig;
    usr1 = 1;
}

static uint64_t check_word(const struct region *r, size_t page, uint32_t gen)
{
    return wl_mix(r->seed ^ ((uint64_t)page << 20) ^ gen);
}

static void write_page(struct region *r, size_t p)
{
    uint32_t g = ++r->gen[p];
    uint64_t *w = (uint64_t *)(r->addr + p * PAGE);
    w[0] = g;
    w[1] = check_word(r, p, g);
}

static struct region *find(const char *name)
{
    for (int i = 0; i < MAXR; i++)
        if (R[i].live && strcmp(R[i].name, name) == 0)
            return &R[i];
    return NULL;
}

static struct region *new_region(const char *name, size_t pages, uint8_t *addr, int touch)
{
    for (int i = 0; i < MAXR; i++) {
        struct region *r = &R[i];
        if (r->live || r->gen)
            continue;
        snprintf(r->name, sizeof r->name, "%s", name);
        r->addr = addr;
        r->pages = pages;
        r->seed = SEED + (uint64_t)i * 0x1000193;
        r->gen = calloc(pages, sizeof *r->gen);
        r->patterned = calloc(pages, 1);
        if (!r->gen || !r->patterned)
            return NULL;
        if (madvise(addr, pages * PAGE, MADV_NOHUGEPAGE) != 0)
            return NULL;
        if (touch) {
            wl_pattern_fill(addr, pages * PAGE, r->seed, 0);
            memset(r->patterned, 1, pages);
        }
        r->live = 1;
        return r;
    }
    return NULL;
}

static int resize_model(struct region *r, size_t pages)
{
    uint32_t *g = realloc(r->gen, pages * sizeof *g);
    uint8_t *p = realloc(r->patterned, pages);
    if (!g || !p)
        return -1;
    if (pages > r->pages) {
        memset(g + r->pages, 0, (pages - r->pages) * sizeof *g);
        memset(p + r->pages, 0, pages - r->pages);
    }
    r->gen = g;
    r->patterned = p;
    r->pages = pages;
    return 0;
}

/* SPEC -> page list; returns the count or -1 (message in err). */
static long parse_spec(const char *spec, size_t limit, long **out, char *err, size_t errcap)
{
    size_t cap = 64, n = 0;
    long *v = malloc(cap * sizeof *v);
    if (!v)
        return -1;
    const char *s = spec;
    while (*s) {
        char *end;
        long a = strtol(s, &end, 10), b = a, step = 1;
        if (end == s)
            goto bad;
        if (*end == '-') {
            s = end + 1;
            b = strtol(s, &end, 10);
            if (end == s)
                goto bad;
            if (*end == '/') {
                s = end + 1;
                step = strtol(s, &end, 10);
                if (end == s || step < 1)
                    goto bad;
            }
        }
        if (a < 0 || b < a || (size_t)b >= limit) {
            snprintf(err, errcap, "pages %ld-%ld outside the region's %zu pages", a, b, limit);
            free(v);
            return -1;
        }
        for (long p = a; p <= b; p += step) {
            if (n == cap) {
                cap *= 2;
                long *nv = realloc(v, cap * sizeof *v);
                if (!nv) {
                    free(v);
                    return -1;
                }
                v = nv;
            }
            v[n++] = p;
        }
        s = end;
        if (*s == ',')
            s++;
        else if (*s)
            goto bad;
    }
    *out = v;
    return (long)n;
bad:
    snprintf(err, errcap, "bad page spec %.200s", spec);
    free(v);
    return -1;
}

/* Thread t's share of the job: every nthreads-th page of the list. */
static uint64_t do_share(int t, int spin)
{
    uint64_t writes = 0;
    do {
        for (size_t i = (size_t)t; i < job.n; i += (size_t)nthreads) {
            write_page(job.r, (size_t)job.pages[i]);
            writes++;
            if (spin && job.stop)
                break;
        }
    } while (spin && !job.stop);
    return writes;
}

static void *writer(void *arg)
{
    int t = (int)(intptr_t)arg;
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&jm);
        while (job.seq == seen)
            pthread_cond_wait(&jc, &jm);
        seen = job.seq;
        int spin = job.spin;
        pthread_mutex_unlock(&jm);
        if (!job.r)
            return NULL; /* seq bumped with no region: exit */
        uint64_t w = do_share(t, spin);
        pthread_mutex_lock(&jm);
        job.writes += w;
        job.done++;
        pthread_cond_signal(&jdone);
        pthread_mutex_unlock(&jm);
    }
}

static void start_job(struct region *r, long *pages, size_t n, int spin)
{
    pthread_mutex_lock(&jm);
    job.r = r;
    job.pages = pages;
    job.n = n;
    job.spin = spin;
    job.stop = 0;
    job.done = 0;
    job.writes = 0;
    job.seq++;
    pthread_cond_broadcast(&jc);
    pthread_mutex_unlock(&jm);
}

static uint64_t wait_job(void)
{
    pthread_mutex_lock(&jm);
    while (job.done < nthreads)
        pthread_cond_wait(&jdone, &jm);
    uint64_t w = job.writes;
    free(job.pages);
    job.pages = NULL;
    job.n = 0;
    pthread_mutex_unlock(&jm);
    return w;
}

static int spinning;

static void reply(const char *seq, const char *status, const char *text)
{
    char line[512];
    int n = snprintf(line, sizeof line, "%s %s %s\n", seq, status, text);
    wl_dbg("-> %s", line);
    if (wl_write_atomic(ack_path, line, (size_t)n) != 0)
        check(0, "cannot write %s: %s", ack_path, strerror(errno));
}

static void addr_reply(char *out, size_t cap, const struct region *r)
{
    snprintf(out, cap, "addr=%p pages=%zu", (void *)r->addr, r->pages);
}

static void run_command(void)
{
    char buf[8192];
    if (wl_read_file(cmd_path, buf, sizeof buf) < 0) {
        check(0, "SIGUSR1 without a readable %s: %s", cmd_path, strerror(errno));
        return;
    }
    buf[strcspn(buf, "\n")] = 0;
    wl_dbg("<- %s", buf);
    char seq[32] = "", verb[32] = "", name[32] = "", arg[4096] = "", arg2[64] = "";
    int nf = sscanf(buf, "%31s %31s %31s %4095s %63s", seq, verb, name, arg, arg2);
    char out[256] = "", err[256] = "";
    struct region *r = nf >= 3 ? find(name) : NULL;

    if (strcmp(verb, "stop") == 0) {
        if (!spinning) {
            reply(seq, "ERR", "not spinning");
            return;
        }
        job.stop = 1;
        uint64_t w = wait_job();
        spinning = 0;
        snprintf(out, sizeof out, "writes=%llu", (unsigned long long)w);
        reply(seq, "OK", out);
        return;
    }
    if (spinning) {
        reply(seq, "ERR", "spinning: send stop first");
        return;
    }
    if (strcmp(verb, "map") == 0 && nf >= 4) {
        size_t pages = strtoul(arg, NULL, 10), room = pages;
        int touch = strstr(buf, " touch") != NULL;
        const char *rp = strstr(buf, " room=");
        if (rp)
            room = strtoul(rp + 6, NULL, 10);
        if (find(name) || pages == 0) {
            reply(seq, "ERR", "exists or empty");
            return;
        }
        uint8_t *a = mmap(NULL, (pages + room) * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (a == MAP_FAILED) {
            snprintf(err, sizeof err, "mmap: %s", strerror(errno));
            reply(seq, "ERR", err);
            return;
        }
        if (room)
            munmap(a + pages * PAGE, room * PAGE);
        r = new_region(name, pages, a, touch);
        if (!r) {
            reply(seq, "ERR", "no room for another region");
            return;
        }
        addr_reply(out, sizeof out, r);
        reply(seq, "OK", out);
        return;
    }
    if (!r) {
        snprintf(err, sizeof err, "unknown command or region: %.200s", buf);
        reply(seq, "ERR", err);
        return;
    }
    if (strcmp(verb, "addr") == 0) {
        addr_reply(out, sizeof out, r);
        reply(seq, "OK", out);
    } else if (strcmp(verb, "write") == 0 || strcmp(verb, "spin") == 0 || strcmp(verb, "discard") == 0 ||
               strcmp(verb, "read") == 0) {
        long *pages;
        long n = parse_spec(arg, r->pages, &pages, err, sizeof err);
        if (n < 0) {
            reply(seq, "ERR", err);
            return;
        }
        if (strcmp(verb, "read") == 0) {
            uint64_t sum = 0;
            for (long i = 0; i < n; i++)
                sum += *(volatile uint64_t *)(r->addr + (size_t)pages[i] * PAGE + 64);
            free(pages);
            snprintf(out, sizeof out, "sum=%llu", (unsigned long long)sum);
            reply(seq, "OK", out);
        } else if (strcmp(verb, "discard") == 0) {
            for (long i = 0; i < n; i++) {
                if (madvise(r->addr + (size_t)pages[i] * PAGE, PAGE, MADV_DONTNEED) != 0) {
                    snprintf(err, sizeof err, "madvise: %s", strerror(errno));
                    break;
                }
                r->gen[pages[i]] = 0;
                r->patterned[pages[i]] = 0;
            }
            free(pages);
            snprintf(out, sizeof out, "pages=%ld", n);
            reply(seq, err[0] ? "ERR" : "OK", err[0] ? err : out);
        } else if (strcmp(verb, "spin") == 0) {
            if (nthreads == 0) {
                free(pages);
                reply(seq, "ERR", "spin needs writer threads");
                return;
            }
            start_job(r, pages, (size_t)n, 1);
            spinning = 1;
            reply(seq, "OK", "spinning");
        } else if (nthreads == 0) {
            for (long i = 0; i < n; i++)
                write_page(r, (size_t)pages[i]);
            free(pages);
            snprintf(out, sizeof out, "pages=%ld", n);
            reply(seq, "OK", out);
        } else {
            start_job(r, pages, (size_t)n, 0);
            wait_job();
            snprintf(out, sizeof out, "pages=%ld", n);
            reply(seq, "OK", out);
        }
    } else if (strcmp(verb, "grow") == 0 && nf >= 4) {
        size_t pages = strtoul(arg, NULL, 10);
        void *a = mremap(r->addr, r->pages * PAGE, pages * PAGE, 0);
        if (a == MAP_FAILED || resize_model(r, pages) != 0) {
            snprintf(err, sizeof err, "mremap in place: %s", strerror(errno));
            reply(seq, "ERR", err);
            return;
        }
        addr_reply(out, sizeof out, r);
        reply(seq, "OK", out);
    } else if (strcmp(verb, "move") == 0) {
        /* A fresh place of the same size, then a move onto it: never the old address. */
        uint8_t *to = mmap(NULL, r->pages * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        void *a = to == MAP_FAILED ? MAP_FAILED
                                   : mremap(r->addr, r->pages * PAGE, r->pages * PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, to);
        if (a == MAP_FAILED) {
            snprintf(err, sizeof err, "mremap: %s", strerror(errno));
            reply(seq, "ERR", err);
            return;
        }
        r->addr = a;
        addr_reply(out, sizeof out, r);
        reply(seq, "OK", out);
    } else if (strcmp(verb, "unmap") == 0) {
        munmap(r->addr, r->pages * PAGE);
        r->live = 0;
        reply(seq, "OK", "unmapped");
    } else if (strcmp(verb, "loop") == 0 && nf >= 4) {
        double secs = strtod(arg, NULL);
        size_t stride = nf >= 5 ? strtoul(arg2, NULL, 10) : 1;
        if (stride < 1)
            stride = 1;
        int64_t t0 = wl_now_ns(), until = t0 + (int64_t)(secs * 1e9);
        uint64_t writes = 0;
        size_t p = 0;
        while (wl_now_ns() < until) {
            for (int k = 0; k < 256; k++) {
                write_page(r, p);
                writes++;
                p += stride;
                if (p >= r->pages)
                    p = 0;
            }
        }
        snprintf(out, sizeof out, "writes=%llu ns=%lld", (unsigned long long)writes, (long long)(wl_now_ns() - t0));
        reply(seq, "OK", out);
    } else {
        snprintf(err, sizeof err, "unknown command: %.200s", buf);
        reply(seq, "ERR", err);
    }
}

static void forbid_userfaultfd(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_userfaultfd, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof f / sizeof f[0], f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        wl_setup_fail("seccomp filter: %s", strerror(errno));
    if (syscall(SYS_userfaultfd, 0) != -1 || errno != EPERM)
        wl_setup_fail("userfaultfd still works under the seccomp filter");
}

static void verify(const struct region *r)
{
    for (size_t p = 0; p < r->pages; p++) {
        const uint8_t *page = r->addr + p * PAGE;
        char what[128];
        snprintf(what, sizeof what, "region %.31s page %zu (generation %u)", r->name, p, r->gen[p]);
        size_t from = 0;
        if (r->gen[p]) {
            const uint64_t *w = (const uint64_t *)page;
            if (!check(w[0] == r->gen[p] && w[1] == check_word(r, p, r->gen[p]),
                       "%s: words 0-1 are %016llx %016llx, expected %016llx %016llx", what,
                       (unsigned long long)w[0], (unsigned long long)w[1], (unsigned long long)r->gen[p],
                       (unsigned long long)check_word(r, p, r->gen[p])))
                return;
            from = 16;
        }
        int ok = r->patterned[p] ? wl_check_pattern(what, page + from, PAGE - from, r->seed, p * PAGE + from)
                                 : wl_check_zero(what, page + from, PAGE - from);
        if (!ok)
            return;
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0);
    size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 4;
    nthreads = argc > 3 ? atoi(argv[3]) : 0;
    if (mib < 1 || mib > 65536)
        wl_setup_fail("MiB must be in [1, 65536], got %s", argv[2]);
    if (nthreads < 0 || nthreads > MAXT)
        wl_setup_fail("threads must be in [0, %d], got %s", MAXT, argv[3]);
    if (argc > 4 && strcmp(argv[4], "no-userfaultfd") == 0)
        forbid_userfaultfd();
    else if (argc > 4)
        wl_setup_fail("unknown option '%s'", argv[4]);
    snprintf(cmd_path, sizeof cmd_path, "%s.cmd", wl_result_path);
    snprintf(ack_path, sizeof ack_path, "%s.ack", wl_result_path);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        wl_setup_fail("sigaction(SIGUSR1): %s", strerror(errno));
    /* Commands and SIGTERM are only taken in sigsuspend, and only by main: no wake-up is lost. */
    sigset_t block, waitmask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigaddset(&block, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &block, &waitmask) != 0)
        wl_setup_fail("sigprocmask: %s", strerror(errno));
    sigdelset(&waitmask, SIGUSR1);
    sigdelset(&waitmask, SIGTERM);

    size_t pages = mib << 8;
    uint8_t *a = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (a == MAP_FAILED)
        wl_setup_fail("mmap %zu MiB: %s", mib, strerror(errno));
    if (!new_region("main", pages, a, 1))
        wl_setup_fail("region 'main': %s", strerror(errno));
    pthread_t th[MAXT];
    for (int t = 0; t < nthreads; t++) {
        int e = pthread_create(&th[t], NULL, writer, (void *)(intptr_t)t);
        if (e)
            wl_setup_fail("pthread_create: %s", strerror(e));
    }
    wl_dbg("main=%p pages=%zu threads=%d", (void *)a, pages, nthreads);
    wl_ready();

    while (!wl_term) {
        sigsuspend(&waitmask);
        if (usr1 && !wl_term) {
            usr1 = 0;
            run_command();
        }
    }

    if (spinning) {
        job.stop = 1;
        wait_job();
    }
    start_job(NULL, NULL, 0, 0); /* no region: the writers exit */
    for (int t = 0; t < nthreads; t++)
        pthread_join(th[t], NULL);
    for (int i = 0; i < MAXR; i++)
        if (R[i].live)
            verify(&R[i]);
    wl_finish();
}
