/*
 * memory — every kind of memory mapping, filled with deterministic patterns.
 *
 *   memory <result-file> [tmpdir] [churn-pages-per-tick]
 *
 *   tmpdir       where it creates memory-file.bin (default: the result
 *                file's directory)
 *   churn-pages  pages of the churn region rewritten per 1 ms tick
 *                (default 16, i.e. ~64 MB/s; 0 = no churn)
 *
 * Before READY it sets up (all patterns are position-dependent, see wl.h):
 *   heap      1000 small mallocs (brk heap) + one 4 MiB malloc (mmap'd)
 *   brk       sbrk(2 MiB + 3 pages) past the malloc heap
 *   stack     a 256 KiB array in main's frame; the stack is pre-grown by
 *             512 KiB so the checks never extend [stack]
 *   anon16    16 MiB private anonymous, MAP_NORESERVE: pages 0..2047 pattern
 *             except every 17th (written, then zeroed again), pages
 *             2048..4095 never touched except 3000 and 4095 (pattern)
 *   shanon    1 MiB MAP_SHARED|MAP_ANONYMOUS, MADV_DONTDUMP
 *   file      <tmpdir>/memory-file.bin, 256 pages: MAP_SHARED of pages
 *             16..143 (offset 64 KiB) through which pages 20..29 are
 *             rewritten (reaching the file), and MAP_PRIVATE of the whole
 *             file with pages 3, 25, 100, 255 modified (COW)
 *   memfd     512 KiB memfd "ferry-wl-memfd" mapped shared, fd closed
 *   guard     64 KiB RW | 64 KiB PROT_NONE (filled before mprotect) | 64 KiB RW
 *   ro        256 KiB private anonymous, filled, then mprotect(PROT_READ)
 *   growsdown 64 KiB MAP_GROWSDOWN
 *   churn     4 MiB private anonymous rewritten continuously (see below)
 * then snapshots /proc/self/maps and the VmFlags of /proc/self/smaps.
 *
 * Between READY and SIGTERM: every 1 ms it rewrites the next churn-pages
 * pages of the churn region with the pattern of the current generation.
 * Invariant: pages [0, cursor) hold generation `gen`, pages [cursor, 1024)
 * hold `gen - 1`; a page missed by pre-copy dirty tracking shows up as a
 * page of an older generation.
 *
 * At SIGTERM, in this order:
 *   - /proc/self/maps equals the snapshot (start, end, perms, offset, path;
 *     dev/inode ignored, they may differ on another host), and the guard is
 *     ---p; VmFlags of every mapping equal the snapshot, ignoring "sd"
 *     (soft-dirty) and "ac" (accounting, differs when a read-only private
 *     region is recreated read-only);
 *   - sbrk(0) is unchanged;
 *   - every byte of every region (zero pages included); the PROT_NONE guard
 *     content through /proc/self/mem, and that touching it faults;
 *   - memory-file.bin on disk equals the expected content and the shared
 *     mapping; the private mapping shows COW'd pages where modified and the
 *     file elsewhere;
 *   - file-mapping semantics: after pwrite() to the file, an untouched
 *     private page and the shared mapping show the new bytes (they map the
 *     file by reference) while a COW'd private page does not;
 *   - the churn invariant, every byte of every churn page.
 *
 * Debug prints the addresses (e.g. "anon16=0x...") so tests can corrupt a
 * region on purpose through /proc/PID/mem.
 */
#include "wl.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PG 4096UL
#define KiB 1024UL
#define MiB (1024UL * 1024UL)

enum {
    S_SMALL = 0x5a11, S_BIG = 0xb16, S_BRK = 0xb4c, S_STACK = 0x57ac, S_ANON = 0xa4a4,
    S_SHANON = 0x54a4, S_FILE = 0xf11e, S_SHW = 0x54f1, S_COW = 0xc0c0, S_MEMFD = 0x3efd,
    S_GUARD = 0x6a4d, S_RO = 0x40, S_GROWS = 0x640, S_CHURN = 0xc4c4, S_LATE = 0x1a7e,
};

#define N_SMALL 1000
#define BIG_SIZE (4 * MiB)
#define BRK_SIZE (2 * MiB + 3 * PG)
#define STACK_SIZE (256 * KiB)
#define ANON_SIZE (16 * MiB)
#define ANON_PAGES (ANON_SIZE / PG)
#define SHANON_SIZE (1 * MiB)
#define FILE_PAGES 256
#define FILE_SIZE (FILE_PAGES * PG)
#define SH_FIRST 16 /* shared mapping covers file pages [16, 144) */
#define SH_PAGES 128
#define SHW_FIRST 20 /* pages [20, 30) rewritten through the shared mapping */
#define SHW_END 30
#define MEMFD_SIZE (512 * KiB)
#define GUARD_PART (64 * KiB)
#define RO_SIZE (256 * KiB)
#define GROWS_SIZE (64 * KiB)
#define CHURN_PAGES 1024
#define CHURN_SIZE (CHURN_PAGES * PG)

static const int cow_pages[] = {3, 25, 100, 255};

static uint8_t *small[N_SMALL];
static size_t small_len[N_SMALL];
static uint8_t *big, *brk_base, *anon, *shanon, *fsh, *fpriv, *memfd_map, *guard, *ro,
    *grows, *churn;
static void *brk_end;
static char file_path[4200];

/* churn state: pages [0, cursor) hold gen, [cursor, N) hold gen-1 */
static volatile uint64_t churn_gen = 1;
static volatile uint64_t churn_cursor;

/* maps / smaps snapshots (static: no allocation at check time) */
static char maps_before[256 * 1024], maps_after[256 * 1024];
static char smaps_buf[2 * 1024 * 1024];
struct vmflags {
    unsigned long start, end;
    char flags[160];
};
#define MAX_VMAS 512
static struct vmflags vmf_before[MAX_VMAS], vmf_after[MAX_VMAS];
static int n_vmf_before, n_vmf_after;

static uint8_t filebuf[FILE_SIZE];
static uint8_t guardbuf[GUARD_PART];

static int anon_page_kind(size_t p)
{
    /* 0 = zero never touched, 1 = pattern, 2 = written then zeroed */
    if (p < ANON_PAGES / 2)
        return p % 17 == 5 ? 2 : 1;
    return (p == 3000 || p == ANON_PAGES - 1) ? 1 : 0;
}

static int is_cow(int p)
{
    for (size_t i = 0; i < sizeof cow_pages / sizeof cow_pages[0]; i++)
        if (cow_pages[i] == p)
            return 1;
    return 0;
}

/* expected content of file page p: S_SHW for the rewritten pages, else S_FILE */
static uint64_t file_seed(int p)
{
    return (p >= SHW_FIRST && p < SHW_END) ? S_SHW : S_FILE;
}

static void *map(size_t len, int prot, int flags, int fd, off_t off, const char *what)
{
    void *p = mmap(NULL, len, prot, flags, fd, off);
    if (p == MAP_FAILED)
        wl_setup_fail("mmap %s (%zu bytes): %s", what, len, strerror(errno));
    return p;
}

__attribute__((noinline)) static void grow_stack(size_t bytes)
{
    volatile char *p = alloca(bytes);
    for (size_t i = 0; i < bytes; i += PG)
        p[i] = 1;
    p[bytes - 1] = 1;
}

/* ---- /proc parsing ------------------------------------------------------ */

struct mline {
    const char *s; /* start of the line */
    int len;
    unsigned long start, end, off;
    const char *perms; /* 4 chars */
    const char *path;  /* may be empty */
    int path_len;
};

/* Parse one maps line starting at *pos; returns 0 at the end. */
static int next_mline(const char **pos, struct mline *m)
{
    const char *s = *pos;
    if (!*s)
        return 0;
    const char *nl = strchr(s, '\n');
    int len = nl ? (int)(nl - s) : (int)strlen(s);
    *pos = nl ? nl + 1 : s + len;
    m->s = s;
    m->len = len;
    char *e;
    m->start = strtoul(s, &e, 16);
    m->end = strtoul(e + 1, &e, 16);
    m->perms = e + 1;
    m->off = strtoul(e + 6, &e, 16);
    /* skip dev and inode */
    while (*e == ' ')
        e++;
    while (*e != ' ' && *e != '\n' && *e)
        e++;
    while (*e == ' ')
        e++;
    while (*e != ' ' && *e != '\n' && *e)
        e++;
    while (*e == ' ')
        e++;
    m->path = e;
    m->path_len = (int)((s + len) - e);
    if (m->path_len < 0)
        m->path_len = 0;
    return 1;
}

static int mline_same(const struct mline *a, const struct mline *b)
{
    return a->start == b->start && a->end == b->end && a->off == b->off &&
           memcmp(a->perms, b->perms, 4) == 0 && a->path_len == b->path_len &&
           memcmp(a->path, b->path, (size_t)a->path_len) == 0;
}

static void compare_maps(void)
{
    const char *pa = maps_before, *pb = maps_after;
    struct mline a, b;
    int i = 0;
    for (;; i++) {
        int ha = next_mline(&pa, &a), hb = next_mline(&pb, &b);
        if (!ha && !hb)
            break;
        if (!hb) {
            check(0, "/proc/self/maps entry #%d missing after READY: expected '%.*s'", i, a.len,
                  a.s);
            return;
        }
        if (!ha) {
            check(0, "/proc/self/maps has an extra entry #%d: '%.*s'", i, b.len, b.s);
            return;
        }
        if (!mline_same(&a, &b)) {
            check(0, "/proc/self/maps entry #%d: expected '%.*s' found '%.*s'", i, a.len, a.s,
                  b.len, b.s);
            return;
        }
    }
}

/* Parse smaps into (start, end, VmFlags minus ignored flags). */
static int parse_smaps(struct vmflags *out)
{
    if (wl_read_file("/proc/self/smaps", smaps_buf, sizeof smaps_buf) < 0)
        return -1;
    int n = -1;
    for (const char *line = smaps_buf; *line;) {
        const char *nl = strchr(line, '\n');
        int len = nl ? (int)(nl - line) : (int)strlen(line);
        char *e;
        unsigned long st = strtoul(line, &e, 16);
        if (*e == '-' && e > line) {
            if (++n >= MAX_VMAS)
                return -1;
            out[n].start = st;
            out[n].end = strtoul(e + 1, NULL, 16);
            out[n].flags[0] = 0;
        } else if (n >= 0 && strncmp(line, "VmFlags:", 8) == 0) {
            size_t o = 0;
            for (const char *f = line + 8; f < line + len;) {
                while (f < line + len && *f == ' ')
                    f++;
                if (f + 2 > line + len)
                    break;
                if (!(f[0] == 's' && f[1] == 'd') && !(f[0] == 'a' && f[1] == 'c') &&
                    o + 4 < sizeof out[n].flags) {
                    out[n].flags[o++] = f[0];
                    out[n].flags[o++] = f[1];
                    out[n].flags[o++] = ' ';
                }
                f += 2;
            }
            out[n].flags[o] = 0;
        }
        line = nl ? nl + 1 : line + len;
    }
    return n + 1;
}

static void compare_vmflags(void)
{
    n_vmf_after = parse_smaps(vmf_after);
    if (!check(n_vmf_after >= 0, "cannot read /proc/self/smaps: %s", strerror(errno)))
        return;
    if (!check(n_vmf_after == n_vmf_before, "/proc/self/smaps has %d mappings, expected %d",
               n_vmf_after, n_vmf_before))
        return;
    for (int i = 0; i < n_vmf_before; i++) {
        const struct vmflags *a = &vmf_before[i], *b = &vmf_after[i];
        if (!check(a->start == b->start && a->end == b->end && !strcmp(a->flags, b->flags),
                   "VmFlags of mapping #%d %lx-%lx: expected '%s' found '%s' (at %lx-%lx; "
                   "sd/ac ignored)",
                   i, a->start, a->end, a->flags, b->flags, b->start, b->end))
            return;
    }
}

static void check_guard_perms(void)
{
    const char *p = maps_after;
    struct mline m;
    unsigned long g = (unsigned long)(guard + GUARD_PART);
    while (next_mline(&p, &m)) {
        if (m.start == g) {
            check(m.end == g + GUARD_PART && memcmp(m.perms, "---p", 4) == 0,
                  "guard mapping: expected '%lx-%lx ---p' found '%.*s'", g, g + GUARD_PART, m.len,
                  m.s);
            return;
        }
    }
    check(0, "guard mapping at %lx not found in /proc/self/maps", g);
}

static sigjmp_buf probe_jmp;
static void probe_handler(int sig)
{
    (void)sig;
    siglongjmp(probe_jmp, 1);
}

/* Does reading *addr fault? */
static int probe_faults(volatile const uint8_t *addr)
{
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = probe_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old);
    volatile int faulted = 0;
    if (sigsetjmp(probe_jmp, 1) == 0)
        (void)*addr;
    else
        faulted = 1;
    sigaction(SIGSEGV, &old, NULL);
    return faulted;
}

/* ---- churn ------------------------------------------------------------- */

static void churn_step(long pages)
{
    for (long k = 0; k < pages; k++) {
        uint64_t c = churn_cursor, g = churn_gen;
        wl_pattern_fill(churn + c * PG, PG, S_CHURN + g, c * PG);
        if (c + 1 == CHURN_PAGES) {
            churn_gen = g + 1;
            churn_cursor = 0;
        } else {
            churn_cursor = c + 1;
        }
    }
}

static void check_churn(void)
{
    uint64_t g = churn_gen, c = churn_cursor;
    if (!check(c < CHURN_PAGES && g >= 1, "churn state corrupt: gen %lu cursor %lu",
               (unsigned long)g, (unsigned long)c))
        return;
    for (uint64_t p = 0; p < CHURN_PAGES; p++) {
        uint64_t want = p < c ? g : g - 1;
        if (wl_pattern_find_diff(churn + p * PG, PG, S_CHURN + want, p * PG) < 0)
            continue;
        /* which generation does it hold? (a missed dirty page = older one) */
        long found = -1;
        for (uint64_t o = 0; o <= g && o < 1000000; o++)
            if (wl_pattern_find_diff(churn + p * PG, PG, S_CHURN + o, p * PG) < 0) {
                found = (long)o;
                break;
            }
        char what[200];
        snprintf(what, sizeof what,
                 "churn page %lu (gen %lu, cursor %lu: expected generation %lu, page holds %s%ld)",
                 (unsigned long)p, (unsigned long)g, (unsigned long)c, (unsigned long)want,
                 found < 0 ? "no generation " : "generation ", found);
        wl_check_pattern(what, churn + p * PG, PG, S_CHURN + want, p * PG);
        return;
    }
}

/* ---- main ---------------------------------------------------------------- */

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);

    char tmpdir[4096];
    if (argc > 2 && argv[2][0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s", argv[2]);
    } else {
        snprintf(tmpdir, sizeof tmpdir, "%s", wl_result_path);
        char *sl = strrchr(tmpdir, '/');
        if (sl == tmpdir)
            sl[1] = 0;
        else if (sl)
            *sl = 0;
    }
    long churn_pages = argc > 3 ? atol(argv[3]) : 16;
    if (churn_pages < 0 || churn_pages > CHURN_PAGES)
        wl_setup_fail("churn-pages-per-tick must be in [0, %d]", CHURN_PAGES);
    snprintf(file_path, sizeof file_path, "%s/memory-file.bin", tmpdir);

    /* heap: small mallocs in the brk heap, then one big (mmap'd) */
    for (int i = 0; i < N_SMALL; i++) {
        small_len[i] = 16 + (size_t)(wl_mix(i) % 2033);
        small[i] = malloc(small_len[i]);
        if (!small[i])
            wl_setup_fail("malloc small %d", i);
        wl_pattern_fill(small[i], small_len[i], S_SMALL + i, 0);
    }
    big = malloc(BIG_SIZE);
    if (!big)
        wl_setup_fail("malloc(4 MiB)");
    wl_pattern_fill(big, BIG_SIZE, S_BIG, 0);

    /* brk growth */
    brk_base = sbrk(BRK_SIZE);
    if (brk_base == (void *)-1)
        wl_setup_fail("sbrk: %s", strerror(errno));
    wl_pattern_fill(brk_base, BRK_SIZE, S_BRK, 0);
    brk_end = sbrk(0);

    /* stack */
    uint8_t stackbuf[STACK_SIZE];
    wl_pattern_fill(stackbuf, STACK_SIZE, S_STACK, 0);
    grow_stack(512 * KiB);

    /* anon16 */
    anon = map(ANON_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
               -1, 0, "anon16");
    for (size_t p = 0; p < ANON_PAGES; p++) {
        int k = anon_page_kind(p);
        if (k == 0)
            continue;
        wl_pattern_fill(anon + p * PG, PG, S_ANON, p * PG);
        if (k == 2)
            memset(anon + p * PG, 0, PG);
    }

    /* shared anonymous */
    shanon = map(SHANON_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0,
                 "shared anon");
    if (madvise(shanon, SHANON_SIZE, MADV_DONTDUMP) != 0)
        wl_setup_fail("madvise(DONTDUMP): %s", strerror(errno));
    wl_pattern_fill(shanon, SHANON_SIZE, S_SHANON, 0);

    /* file: create, map shared (rewrite pages 20..29), map private (COW) */
    {
        int fd = open(file_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            wl_setup_fail("open %s: %s", file_path, strerror(errno));
        wl_pattern_fill(filebuf, FILE_SIZE, S_FILE, 0);
        if (write(fd, filebuf, FILE_SIZE) != (ssize_t)FILE_SIZE)
            wl_setup_fail("write %s: %s", file_path, strerror(errno));
        fsh = map(SH_PAGES * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, SH_FIRST * PG,
                  "shared file");
        for (int p = SHW_FIRST; p < SHW_END; p++)
            wl_pattern_fill(fsh + (p - SH_FIRST) * PG, PG, S_SHW, p * PG);
        fpriv = map(FILE_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0, "private file");
        for (size_t i = 0; i < sizeof cow_pages / sizeof cow_pages[0]; i++)
            wl_pattern_fill(fpriv + cow_pages[i] * PG, PG, S_COW, cow_pages[i] * PG);
        /* touch (read) a few untouched private pages so some are present */
        volatile uint8_t sink = 0;
        for (int p = 0; p < FILE_PAGES; p += 7)
            sink ^= fpriv[p * PG];
        (void)sink;
        close(fd);
    }

    /* memfd */
    {
        int fd = memfd_create("ferry-wl-memfd", MFD_CLOEXEC);
        if (fd < 0)
            wl_setup_fail("memfd_create: %s", strerror(errno));
        if (ftruncate(fd, MEMFD_SIZE) != 0)
            wl_setup_fail("ftruncate memfd: %s", strerror(errno));
        memfd_map = map(MEMFD_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0, "memfd");
        wl_pattern_fill(memfd_map, MEMFD_SIZE, S_MEMFD, 0);
        close(fd);
    }

    /* RW | PROT_NONE | RW */
    guard = map(3 * GUARD_PART, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0,
                "guard");
    wl_pattern_fill(guard, 3 * GUARD_PART, S_GUARD, 0);
    if (mprotect(guard + GUARD_PART, GUARD_PART, PROT_NONE) != 0)
        wl_setup_fail("mprotect(PROT_NONE): %s", strerror(errno));

    /* read-only private anonymous */
    ro = map(RO_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "ro");
    wl_pattern_fill(ro, RO_SIZE, S_RO, 0);
    if (mprotect(ro, RO_SIZE, PROT_READ) != 0)
        wl_setup_fail("mprotect(PROT_READ): %s", strerror(errno));

    /* MAP_GROWSDOWN */
    grows = map(GROWS_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN,
                -1, 0, "growsdown");
    wl_pattern_fill(grows, GROWS_SIZE, S_GROWS, 0);

    /* churn: all pages generation 0 */
    churn = map(CHURN_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0, "churn");
    for (uint64_t p = 0; p < CHURN_PAGES; p++)
        wl_pattern_fill(churn + p * PG, PG, S_CHURN + 0, p * PG);

    wl_dbg("big=%p brk=%p stack=%p anon16=%p shanon=%p fshared=%p fprivate=%p memfd=%p "
           "guard=%p ro=%p growsdown=%p churn=%p file=%s",
           (void *)big, (void *)brk_base, (void *)stackbuf, (void *)anon, (void *)shanon,
           (void *)fsh, (void *)fpriv, (void *)memfd_map, (void *)guard, (void *)ro,
           (void *)grows, (void *)churn, file_path);

    /* snapshots, last thing before READY */
    if (wl_read_file("/proc/self/maps", maps_before, sizeof maps_before) < 0)
        wl_setup_fail("read /proc/self/maps: %s", strerror(errno));
    n_vmf_before = parse_smaps(vmf_before);
    if (n_vmf_before < 0)
        wl_setup_fail("read /proc/self/smaps: %s", strerror(errno));
    wl_ready();

    struct timespec tick = {0, 1000000};
    while (!wl_term) {
        nanosleep(&tick, NULL);
        if (churn_pages && !wl_term)
            churn_step(churn_pages);
    }

    /* ---- checks ---- */
    ssize_t ml = wl_read_file("/proc/self/maps", maps_after, sizeof maps_after);
    if (check(ml >= 0, "read /proc/self/maps: %s", strerror(errno))) {
        compare_maps();
        check_guard_perms();
    }
    compare_vmflags();
    void *brk_now = sbrk(0);
    check(brk_now == brk_end, "brk moved: expected %p found %p", brk_end, brk_now);

    char what[64];
    for (int i = 0; i < N_SMALL && !wl_failed(); i++) {
        snprintf(what, sizeof what, "heap small allocation #%d", i);
        wl_check_pattern(what, small[i], small_len[i], S_SMALL + i, 0);
    }
    wl_check_pattern("heap 4 MiB allocation", big, BIG_SIZE, S_BIG, 0);
    wl_check_pattern("sbrk region", brk_base, BRK_SIZE, S_BRK, 0);
    wl_check_pattern("256 KiB stack array", stackbuf, STACK_SIZE, S_STACK, 0);
    for (size_t p = 0; p < ANON_PAGES && !wl_failed(); p++) {
        int k = anon_page_kind(p);
        snprintf(what, sizeof what, "anon16 page %zu (%s)", p,
                 k == 1 ? "pattern" : k == 2 ? "written then zeroed" : "never touched");
        if (k == 1)
            wl_check_pattern(what, anon + p * PG, PG, S_ANON, p * PG);
        else
            wl_check_zero(what, anon + p * PG, PG);
    }
    wl_check_pattern("MAP_SHARED|MAP_ANONYMOUS region", shanon, SHANON_SIZE, S_SHANON, 0);
    wl_check_pattern("memfd mapping", memfd_map, MEMFD_SIZE, S_MEMFD, 0);
    wl_check_pattern("RW region below the guard", guard, GUARD_PART, S_GUARD, 0);
    wl_check_pattern("RW region above the guard", guard + 2 * GUARD_PART, GUARD_PART, S_GUARD,
                     2 * GUARD_PART);
    {
        int fd = open("/proc/self/mem", O_RDONLY | O_CLOEXEC);
        ssize_t r = fd < 0 ? -1 : pread(fd, guardbuf, GUARD_PART, (off_t)(uintptr_t)(guard + GUARD_PART));
        if (check(r == (ssize_t)GUARD_PART, "reading the PROT_NONE guard through /proc/self/mem: %zd (%s)",
                  r, strerror(errno)))
            wl_check_pattern("PROT_NONE guard content (via /proc/self/mem)", guardbuf, GUARD_PART,
                             S_GUARD, GUARD_PART);
        if (fd >= 0)
            close(fd);
        check(probe_faults(guard + GUARD_PART) && probe_faults(guard + 2 * GUARD_PART - 1),
              "reading the PROT_NONE guard did not fault");
    }
    wl_check_pattern("read-only region", ro, RO_SIZE, S_RO, 0);
    wl_check_pattern("MAP_GROWSDOWN region", grows, GROWS_SIZE, S_GROWS, 0);

    /* file, shared and private mappings */
    {
        int fd = open(file_path, O_RDWR | O_CLOEXEC);
        ssize_t r = fd < 0 ? -1 : pread(fd, filebuf, FILE_SIZE, 0);
        if (check(r == (ssize_t)FILE_SIZE, "reading %s: %zd (%s)", file_path, r, strerror(errno))) {
            for (int p = 0; p < FILE_PAGES && !wl_failed(); p++) {
                snprintf(what, sizeof what, "memory-file.bin page %d on disk", p);
                wl_check_pattern(what, filebuf + p * PG, PG, file_seed(p), p * PG);
            }
            for (int p = SH_FIRST; p < SH_FIRST + SH_PAGES && !wl_failed(); p++) {
                long d = -1;
                for (size_t i = 0; i < PG; i++)
                    if (fsh[(p - SH_FIRST) * PG + i] != filebuf[p * PG + i]) {
                        d = (long)i;
                        break;
                    }
                check(d < 0, "shared file mapping and file disagree at file page %d byte %ld: "
                      "mapping 0x%02x file 0x%02x", p, d, d < 0 ? 0 : fsh[(p - SH_FIRST) * PG + d],
                      d < 0 ? 0 : filebuf[p * PG + d]);
            }
            for (int p = 0; p < FILE_PAGES && !wl_failed(); p++) {
                snprintf(what, sizeof what, "private file mapping page %d (%s)", p,
                         is_cow(p) ? "COW-modified" : "as in the file");
                wl_check_pattern(what, fpriv + p * PG, PG, is_cow(p) ? S_COW : file_seed(p),
                                 p * PG);
            }
            /* by-reference semantics: write new bytes into the file */
            if (!wl_failed()) {
                static const int late[] = {50, 40, 100};
                for (int i = 0; i < 3; i++) {
                    wl_pattern_fill(filebuf, PG, S_LATE, late[i] * PG);
                    check(pwrite(fd, filebuf, PG, late[i] * PG) == (ssize_t)PG,
                          "pwrite %s page %d: %s", file_path, late[i], strerror(errno));
                }
                wl_check_pattern("untouched private file page 50 after pwrite to the file "
                                 "(must map the file, not a copy)",
                                 fpriv + 50 * PG, PG, S_LATE, 50 * PG);
                wl_check_pattern("shared file mapping page 40 after pwrite to the file",
                                 fsh + (40 - SH_FIRST) * PG, PG, S_LATE, 40 * PG);
                wl_check_pattern("COW'd private file page 100 after pwrite to the file "
                                 "(must keep its private copy)",
                                 fpriv + 100 * PG, PG, S_COW, 100 * PG);
            }
        }
        if (fd >= 0)
            close(fd);
    }

    check_churn();
    wl_dbg("churn gen=%lu cursor=%lu", (unsigned long)churn_gen, (unsigned long)churn_cursor);
    wl_finish();
}
