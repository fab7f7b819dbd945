/*
 * memhog — holds a block of anonymous memory for the benchmarks.
 *
 *   memhog <MiB> <random|sparse> <ready-file>
 *
 * Maps <MiB> of private anonymous memory and touches every page of it:
 *   random  every byte comes from a PRNG (nothing for an image to squeeze)
 *   sparse  1 page in 64 is random, the rest is written with zeros, so it is
 *           present (allocated) but zero: what "zero pages are sent as a
 *           count" is about
 * Then it writes "READY <checksum> <address> <bytes>" (hex, hex, decimal) to
 * <ready-file> and sleeps in pause().
 *
 * On SIGUSR1 it checksums the block again and writes "CHECK <checksum>" to
 * <ready-file>.check, so a restored copy can prove its memory came back
 * byte for byte without the benchmark reading it. SIGTERM/SIGKILL end it.
 *
 * Both files are written under a temporary name and renamed, so a reader
 * never sees half a line.
 *
 * It dies with its parent (PR_SET_PDEATHSIG), so a benchmark that is killed
 * outright does not leave a gigabyte asleep in pause() behind it.
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
#include <sys/prctl.h>
#include <unistd.h>

#define PAGE 4096UL
#define SPARSE_EVERY 64

static volatile sig_atomic_t check_requested;

static void on_usr1(int sig)
{
    (void)sig;
    check_requested = 1;
}

static void die(const char *what)
{
    fprintf(stderr, "memhog: %s: %s\n", what, strerror(errno));
    exit(2);
}

/* xorshift64*: fast enough that filling 1 GiB costs well under a second. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static inline uint64_t rng(void)
{
    uint64_t x = rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    rng_state = x;
    return x * 0x2545f4914f6cdd1dULL;
}

static void fill_random(uint64_t *w, size_t words)
{
    for (size_t i = 0; i < words; i++)
        w[i] = rng();
}

/*
 * Four independent lanes keep the multiply latency off the critical path;
 * the block is then hashed at memory speed.
 */
static uint64_t checksum(const uint64_t *w, size_t words)
{
    uint64_t h[4] = {1, 2, 3, 4};
    const uint64_t k = 0x100000001b3ULL;
    size_t i = 0;
    for (; i + 4 <= words; i += 4) {
        h[0] = (h[0] ^ w[i]) * k;
        h[1] = (h[1] ^ w[i + 1]) * k;
        h[2] = (h[2] ^ w[i + 2]) * k;
        h[3] = (h[3] ^ w[i + 3]) * k;
    }
    for (; i < words; i++)
        h[0] = (h[0] ^ w[i]) * k;
    return (h[0] * 31 + h[1]) * 31 * 31 + h[2] * 31 + h[3];
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

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: memhog <MiB> <random|sparse> <ready-file>\n");
        return 2;
    }
    char *end;
    unsigned long mib = strtoul(argv[1], &end, 10);
    if (*end || mib == 0) {
        fprintf(stderr, "memhog: bad size '%s'\n", argv[1]);
        return 2;
    }
    int sparse;
    if (strcmp(argv[2], "random") == 0)
        sparse = 0;
    else if (strcmp(argv[2], "sparse") == 0)
        sparse = 1;
    else {
        fprintf(stderr, "memhog: pattern must be random or sparse, not '%s'\n", argv[2]);
        return 2;
    }
    const char *ready = argv[3];
    pid_t parent = getppid();
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0)
        die("prctl(PR_SET_PDEATHSIG)");
    if (getppid() != parent)
        return 2; /* the parent died before the death signal was armed */
    char check_path[4200];
    if (snprintf(check_path, sizeof check_path, "%s.check", ready) >= (int)sizeof check_path) {
        fprintf(stderr, "memhog: ready-file path too long\n");
        return 2;
    }

    size_t len = (size_t)mib << 20;
    uint8_t *block = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (block == MAP_FAILED)
        die("mmap");

    if (!sparse) {
        fill_random((uint64_t *)block, len / 8);
    } else {
        for (size_t off = 0; off < len; off += PAGE) {
            if ((off / PAGE) % SPARSE_EVERY == 0)
                fill_random((uint64_t *)(block + off), PAGE / 8);
            else
                /* A write (not a read) so the page is allocated, not the shared zero page. */
                *(volatile uint8_t *)(block + off) = 0;
        }
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGUSR1, &sa, NULL) != 0)
        die("sigaction");

    char line[128];
    snprintf(line, sizeof line, "READY %016" PRIx64 " %" PRIxPTR " %zu\n", checksum((uint64_t *)block, len / 8), (uintptr_t)block, len);
    write_atomically(ready, line);

    for (;;) {
        pause();
        if (check_requested) {
            check_requested = 0;
            snprintf(line, sizeof line, "CHECK %016" PRIx64 "\n", checksum((uint64_t *)block, len / 8));
            write_atomically(check_path, line);
        }
    }
}
