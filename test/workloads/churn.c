/*
 * churn — keeps writing its memory at a steady rate, for live migration.
 *
 *   churn <result-file> <MiB> <MB/s | max | 0> [remap]
 *
 * Setup: MiB MiB of private anonymous memory, every 4 KiB page holding its
 * index and generation 0 in its first words and a pattern derived from both
 * in the rest. Then READY, and a loop that rewrites pages one after another
 * (page i gets generation g+1 and the pattern for it) at MB/s megabytes per
 * second (paced against CLOCK_MONOTONIC), as fast as it can with `max`, or
 * never with 0 (idle). With `remap`, every 50 ms it also maps a new 1 MiB
 * region, fills it, and unmaps the oldest of eight: mappings come and go
 * while pre-copy runs.
 *
 * Checks at SIGTERM: every page of the main region is consistent (its index
 * word, and the pattern of the generation it holds); generations never went
 * down between passes, and they add up to the number of writes made (a page
 * restored from an older copy would be short); the live remap regions hold their fill; the writer
 * made progress after READY. A page left behind from an older round by a
 * lossy migration has the wrong pattern or an older generation, and fails.
 */
#include "wl.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define RING 8
#define RING_BYTES (1 << 20)

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static void fill(uint64_t *page, uint64_t index, uint64_t gen)
{
    page[0] = index;
    page[1] = gen;
    uint64_t seed = mix(index * 0x9e3779b97f4a7c15ULL + gen);
    for (int w = 2; w < WORDS; w++)
        page[w] = seed + w;
}

static int consistent(const uint64_t *page, uint64_t index)
{
    if (page[0] != index)
        return 0;
    uint64_t seed = mix(index * 0x9e3779b97f4a7c15ULL + page[1]);
    for (int w = 2; w < WORDS; w++)
        if (page[w] != seed + w)
            return 0;
    return 1;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    if (argc < 4)
        wl_setup_fail("usage: churn <result> <MiB> <MB/s|max|0> [remap]");
    long mib = atol(argv[2]);
    if (mib <= 0 || mib > 65536)
        wl_setup_fail("MiB must be in [1, 65536], got %s", argv[2]);
    int max = strcmp(argv[3], "max") == 0;
    double rate = max ? 0 : atof(argv[3]);
    if (!max && rate < 0)
        wl_setup_fail("MB/s must be >= 0, 'max' or 0, got %s", argv[3]);
    int remap = argc > 4 && strcmp(argv[4], "remap") == 0;

    size_t pages = (size_t)mib * (1 << 20) / PAGE;
    uint64_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED)
        wl_setup_fail("mmap of %ld MiB failed", mib);
    for (size_t i = 0; i < pages; i++)
        fill(mem + i * WORDS, i, 0);

    uint64_t *ring[RING] = {0};
    uint64_t ring_tag[RING] = {0};
    uint64_t next_tag = 1;
    double last_remap = now();

    wl_ready();
    double start = now();
    uint64_t written = 0;
    size_t cursor = 0;
    uint64_t *last_gen = calloc(pages, sizeof(uint64_t));
    if (!last_gen)
        wl_setup_fail("calloc failed");
    while (!wl_term) {
        if (max || (rate > 0 && written * PAGE < rate * 1e6 * (now() - start))) {
            uint64_t *p = mem + cursor * WORDS;
            check(consistent(p, cursor), "page %zu is inconsistent before a write (generation %lu)", cursor, (unsigned long)p[1]);
            check(p[1] >= last_gen[cursor], "page %zu went back from generation %lu to %lu", cursor, (unsigned long)last_gen[cursor], (unsigned long)p[1]);
            fill(p, cursor, p[1] + 1);
            last_gen[cursor] = p[1];
            written++;
            cursor = (cursor + 1) % pages;
        } else {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        if (remap && now() - last_remap > 0.05) {
            last_remap = now();
            int slot = (int)(next_tag % RING);
            if (ring[slot]) {
                for (int w = 0; w < RING_BYTES / 8; w += WORDS)
                    check(ring[slot][w] == ring_tag[slot], "remapped region %lu lost its fill", (unsigned long)ring_tag[slot]);
                munmap(ring[slot], RING_BYTES);
            }
            ring[slot] = mmap(NULL, RING_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (ring[slot] == MAP_FAILED) {
                check(0, "mmap of a remap region failed");
                ring[slot] = NULL;
            } else {
                ring_tag[slot] = next_tag;
                for (int w = 0; w < RING_BYTES / 8; w++)
                    ring[slot][w] = next_tag;
            }
            next_tag++;
        }
    }
    uint64_t generations = 0;
    for (size_t i = 0; i < pages; i++) {
        if (!check(consistent(mem + i * WORDS, i), "page %zu is inconsistent at the end (generation %lu)", i, (unsigned long)mem[i * WORDS + 1]))
            break;
        generations += mem[i * WORDS + 1];
    }
    /* Every write raised one page's generation by one: a page restored from an older copy is short. */
    check(generations == written || wl_failed(), "the pages' generations add up to %lu, but %lu writes were made", (unsigned long)generations, (unsigned long)written);
    for (int s = 0; s < RING; s++)
        if (ring[s])
            for (int w = 0; w < RING_BYTES / 8; w++)
                if (!check(ring[s][w] == ring_tag[s], "remap region %lu lost its fill", (unsigned long)ring_tag[s]))
                    break;
    if (rate > 0 || max)
        check(written > 0, "the writer never wrote");
    wl_finish();
}
