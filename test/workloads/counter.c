/*
 * counter — the simplest live workload.
 *
 *   counter <result-file> [sleep-us]      (default 1000; 0 = no sleep, spin)
 *
 * Before READY: fills a 1 MiB malloc'd buffer with a pattern and records its
 * hash. After READY: loops { nanosleep(sleep-us); counter++ } keeping the
 * counter both in a local and in a global; every iteration checks that the
 * global still holds the value the loop last stored.
 * At SIGTERM: the counter advanced past its value at READY (at least one
 * increment always follows the interrupted sleep), the global equals the
 * local, nanosleep never failed with anything but EINTR, and the buffer's
 * hash and every byte of its pattern are unchanged.
 *
 * Debug (FERRY_WL_DEBUG=1) prints "buffer=0x... size=..." so tests can
 * corrupt it on purpose through /proc/PID/mem.
 */
#include "wl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (1u << 20)
#define SEED 0xc0c0a11ce5eedULL

volatile uint64_t g_counter;

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    long sleep_us = argc > 2 ? atol(argv[2]) : 1000;
    if (sleep_us < 0 || sleep_us >= 1000000)
        wl_setup_fail("sleep-us must be in [0, 999999], got %s", argv[2]);

    uint8_t *buf = malloc(BUF_SIZE);
    if (!buf)
        wl_setup_fail("malloc(%u) failed", BUF_SIZE);
    wl_pattern_fill(buf, BUF_SIZE, SEED, 0);
    const uint64_t hash0 = wl_hash(buf, BUF_SIZE);

    uint64_t counter = 0;
    g_counter = counter;
    const uint64_t at_ready = counter;
    int sleep_errno = 0;
    long bad_sleeps = 0;
    struct timespec ts = {0, sleep_us * 1000};

    wl_dbg("buffer=%p size=%u g_counter=%p sleep_us=%ld", (void *)buf, BUF_SIZE,
           (void *)&g_counter, sleep_us);
    wl_ready();

    for (;;) {
        if (g_counter != counter)
            check(0, "global counter changed behind the loop: expected %lu found %lu",
                  (unsigned long)counter, (unsigned long)g_counter);
        if (sleep_us > 0 && nanosleep(&ts, NULL) != 0 && errno != EINTR) {
            if (!bad_sleeps++)
                sleep_errno = errno;
        }
        counter++;
        g_counter = counter;
        if (wl_term)
            break;
    }

    wl_dbg("counter=%lu", (unsigned long)counter);
    check(bad_sleeps == 0, "nanosleep failed %ld times, first with errno %d (%s), expected only EINTR",
          bad_sleeps, sleep_errno, strerror(sleep_errno));
    check(counter > at_ready, "counter did not advance: %lu at READY, %lu at SIGTERM",
          (unsigned long)at_ready, (unsigned long)counter);
    check(g_counter == counter, "global counter %lu differs from the loop's counter %lu",
          (unsigned long)g_counter, (unsigned long)counter);
    /* The byte-wise check names the first wrong byte; the hash backs it up. */
    wl_check_pattern("1 MiB buffer", buf, BUF_SIZE, SEED, 0);
    uint64_t hash1 = wl_hash(buf, BUF_SIZE);
    check(hash1 == hash0, "1 MiB buffer hash changed: expected %016lx found %016lx",
          (unsigned long)hash0, (unsigned long)hash1);
    wl_finish();
}
