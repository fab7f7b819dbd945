/*
 * forest — a process tree with threads and memory, for the tree benchmarks.
 *
 *   forest <procs> <threads> <MiB per process> <ready-file>
 *
 * The root forks <procs> - 1 children, all directly under it (a flat tree).
 * Every process, the root included, then
 *   - maps <MiB> of private anonymous memory and fills every page with
 *     non-zero pseudo-random words seeded by its pid (so no two processes
 *     hold the same bytes and none of it is a zero page);
 *   - starts <threads> - 1 extra pthreads, which block on a condition
 *     variable that is never signalled (pthread_cond_wait in a loop), so a
 *     process has <threads> threads in all;
 *   - a child then writes one byte into a pipe to the root and closes it.
 * When its own memory and threads are up and every child has reported, the
 * root closes the pipe and writes "READY <procs> <threads per process> <MiB>"
 * to <ready-file> (under a temporary name, then renamed). After that no
 * process holds a pipe: every one has only its stdio, its memory and its
 * threads, and its main thread sleeps in pause().
 *
 * Every process dies with its parent (PR_SET_PDEATHSIG, SIGKILL): the root
 * with whoever started it, the children with the root, so a benchmark that
 * dies leaves nothing behind. SIGKILL ends it; there is nothing to verify
 * inside, the benchmark compares /proc before and after.
 *
 * Failures go to stderr and exit 2; the root exits 2 (and its children die
 * with it) when a child does not report.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#define MAX_PROCS 1024
#define MAX_THREADS 1024
#define MAX_MIB 65536

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static pthread_cond_t up = PTHREAD_COND_INITIALIZER;
static int started;

static void die(const char *what)
{
    fprintf(stderr, "forest[%d]: %s: %s\n", (int)getpid(), what, strerror(errno));
    exit(2);
}

static unsigned long arg(const char *s, const char *name, unsigned long min, unsigned long max)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || end == s || v < min || v > max) {
        fprintf(stderr, "forest: %s must be %lu..%lu, not '%s'\n", name, min, max, s);
        exit(2);
    }
    return v;
}

/* Dies with the parent; fails if the parent is already gone (the signal would never come). */
static void die_with_parent(pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        die("prctl(PR_SET_PDEATHSIG)");
    if (getppid() != parent)
        _exit(2);
}

/* xorshift64*, never zero: every word written is non-zero, so every page holds data. */
static void fill(uint64_t *w, size_t words, uint64_t seed)
{
    uint64_t x = seed * 0x9e3779b97f4a7c15ULL | 1;
    for (size_t i = 0; i < words; i++) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t v = x * 0x2545f4914f6cdd1dULL;
        w[i] = v ? v : 1;
    }
}

static void *parked(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&mu);
    started++;
    pthread_cond_signal(&up);
    for (;;)
        pthread_cond_wait(&never, &mu);
    return NULL;
}

/* This process's memory and extra threads; returns once every thread is up. */
static void populate(unsigned long mib, unsigned long threads)
{
    if (mib) {
        size_t len = (size_t)mib << 20;
        void *block = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (block == MAP_FAILED)
            die("mmap");
        fill(block, len / 8, (uint64_t)getpid());
    }
    for (unsigned long i = 1; i < threads; i++) {
        pthread_t t;
        int err = pthread_create(&t, NULL, parked, NULL);
        if (err) {
            errno = err;
            die("pthread_create");
        }
        pthread_detach(t);
    }
    pthread_mutex_lock(&mu);
    while ((unsigned long)started < threads - 1)
        pthread_cond_wait(&up, &mu);
    pthread_mutex_unlock(&mu);
}

static void write_atomically(const char *path, const char *text)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        die(path);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        die(tmp);
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        die(tmp);
    close(fd);
    if (rename(tmp, path) != 0)
        die(path);
}

static void park(void)
{
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: forest <procs> <threads> <MiB per process> <ready-file>\n");
        return 2;
    }
    unsigned long procs = arg(argv[1], "procs", 1, MAX_PROCS);
    unsigned long threads = arg(argv[2], "threads", 1, MAX_THREADS);
    unsigned long mib = arg(argv[3], "MiB per process", 0, MAX_MIB);
    const char *ready = argv[4];

    die_with_parent(getppid());
    pid_t root = getpid();

    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0)
        die("pipe2");
    for (unsigned long i = 1; i < procs; i++) {
        pid_t pid = fork();
        if (pid < 0)
            die("fork");
        if (pid == 0) {
            close(report[0]);
            die_with_parent(root);
            populate(mib, threads);
            char one = 1;
            if (write(report[1], &one, 1) != 1)
                die("write(report)");
            close(report[1]);
            park();
        }
    }
    close(report[1]);
    populate(mib, threads);

    unsigned long reported = 0;
    char buf[256];
    while (reported < procs - 1) {
        ssize_t n = read(report[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("read(report)");
        if (n == 0) {
            fprintf(stderr, "forest: only %lu of %lu children reported\n", reported, procs - 1);
            return 2;
        }
        reported += (unsigned long)n;
    }
    close(report[0]);

    char line[128];
    snprintf(line, sizeof line, "READY %lu %lu %lu\n", procs, threads, mib);
    write_atomically(ready, line);
    park();
}
