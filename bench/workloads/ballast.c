/*
 * ballast — a container workload that holds a block of non-zero memory, for
 * the migration benchmark.
 *
 *   ballast <result-file> <MiB>
 *
 * Maps <MiB> of private anonymous memory and fills every byte from a PRNG
 * (no zero page, nothing for an image to squeeze), then follows the test
 * workloads' protocol (test/workloads/README.md): writes "READY <pid>" to
 * <result-file>.ready, sleeps until SIGTERM, then regenerates the PRNG
 * stream and compares every word of the block with it, and writes "PASS"
 * or "FAIL <reason>" to <result-file>. A block that crossed hosts any
 * number of times must come back byte for byte.
 *
 * Unlike memhog it has no parent-death signal: as a container's init its
 * parent is whichever agent last started or restored it, and that changes
 * with every migration. Files are written under a temporary name and
 * renamed, so a reader never sees half a line.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define SEED 0x9e3779b97f4a7c15ULL

static volatile sig_atomic_t terminated;

static void on_term(int sig)
{
    (void)sig;
    terminated = 1;
}

/* xorshift64*: never yields 0 from a non-zero state, so no word (let alone a page) is zero. */
static inline uint64_t next(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static void write_atomically(const char *path, const char *text)
{
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
        exit(3);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        exit(3);
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len || close(fd) != 0 || rename(tmp, path) != 0)
        exit(3);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ballast <result-file> <MiB>\n");
        return 2;
    }
    const char *result = argv[1];
    char line[256];
    char *end;
    unsigned long mib = strtoul(argv[2], &end, 10);
    if (*end || mib == 0) {
        snprintf(line, sizeof line, "FAIL setup: bad size '%s'\n", argv[2]);
        write_atomically(result, line);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0) {
        snprintf(line, sizeof line, "FAIL setup: sigaction: %s\n", strerror(errno));
        write_atomically(result, line);
        return 2;
    }

    size_t words = ((size_t)mib << 20) / sizeof(uint64_t);
    uint64_t *block = mmap(NULL, words * sizeof(uint64_t), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED) {
        snprintf(line, sizeof line, "FAIL setup: mmap of %lu MiB: %s\n", mib, strerror(errno));
        write_atomically(result, line);
        return 2;
    }
    uint64_t state = SEED;
    for (size_t i = 0; i < words; i++)
        block[i] = next(&state);

    char ready[4200];
    if (snprintf(ready, sizeof ready, "%s.ready", result) >= (int)sizeof ready)
        return 2;
    snprintf(line, sizeof line, "READY %d\n", (int)getpid());
    write_atomically(ready, line);

    /* SIGTERM cuts the sleep short (no SA_RESTART); the flag is checked after every sleep. */
    struct timespec tick = {0, 100 * 1000 * 1000};
    while (!terminated)
        nanosleep(&tick, NULL);

    state = SEED;
    for (size_t i = 0; i < words; i++) {
        uint64_t want = next(&state);
        if (block[i] != want) {
            snprintf(line, sizeof line, "FAIL block byte %zu (of %lu MiB): expected %016" PRIx64 " found %016" PRIx64 "\n",
                     i * sizeof(uint64_t), mib, want, block[i]);
            write_atomically(result, line);
            return 0;
        }
    }
    write_atomically(result, "PASS\n");
    return 0;
}
