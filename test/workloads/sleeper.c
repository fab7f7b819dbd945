/*
 * sleeper — blocks in one long nanosleep(2), in a loop.
 *
 *   sleeper <result-file> [seconds] [eintr-ok]     (default 3600 s)
 *
 * The call is issued as the raw syscall (SYS_nanosleep, relative
 * CLOCK_MONOTONIC-like sleep that the kernel restarts through
 * restart_syscall / -ERESTART_RESTARTBLOCK), so the raw kernel result is
 * seen: a leaked -516 is reported as such, not as errno 516.
 *
 * Between READY and SIGTERM it is blocked in nanosleep (a completed sleep,
 * possible only with a short `seconds`, is simply issued again).
 * At SIGTERM it checks:
 *   - every nanosleep returned 0 or -EINTR, and -EINTR only once the SIGTERM
 *     handler had run (a wake-up with -EINTR and no signal fails, unless
 *     `eintr-ok` is given: a restorer that turns restart_syscall into EINTR,
 *     as CRIU does, is then accepted and counted);
 *   - a sleep that returned 0 lasted at least the requested time;
 *   - the remaining time written on EINTR is within [0, requested];
 *   - CLOCK_MONOTONIC never went backwards across a call or since READY.
 */
#include "wl.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0);
    long secs = argc > 2 ? atol(argv[2]) : 3600;
    if (secs <= 0)
        wl_setup_fail("seconds must be > 0, got %s", argv[2]);
    int eintr_ok = 0;
    if (argc > 3) {
        if (strcmp(argv[3], "eintr-ok") != 0)
            wl_setup_fail("unknown option %s (expected eintr-ok)", argv[3]);
        eintr_ok = 1;
    }

    long calls = 0, completed = 0, spurious = 0, unexpected = 0;
    const int64_t t_ready = wl_now_ns();
    wl_ready();

    while (!wl_term) {
        struct timespec req = {secs, 0};
        struct timespec rem = {-1, -1};
        int64_t t0 = wl_now_ns();
        long r;
        if (unexpected > 100)
            r = wl_block_syscall(SYS_pause, 0, 0, 0, 0); /* don't spin on a broken call */
        else
            r = wl_block_syscall(SYS_nanosleep, (long)&req, (long)&rem, 0, 0);
        int64_t t1 = wl_now_ns();
        calls++;
        check(t1 >= t0, "CLOCK_MONOTONIC went backwards across nanosleep: %lld ns",
              (long long)(t1 - t0));
        if (r == 0) {
            completed++;
            check(t1 - t0 >= secs * 1000000000LL,
                  "nanosleep returned 0 after %.3f s, requested %ld s", (t1 - t0) / 1e9, secs);
        } else if (r == -EINTR) {
            if (!wl_term) {
                spurious++;
                if (!eintr_ok)
                    check(0, "nanosleep returned EINTR without a signal (call #%ld, after %.3f s)",
                          calls, (t1 - t0) / 1e9);
            } else if (!(rem.tv_sec == -1 && rem.tv_nsec == -1)) {
                /* rem untouched means the call was cancelled before it started */
                check(rem.tv_sec >= 0 && rem.tv_nsec >= 0 && rem.tv_nsec < 1000000000L &&
                          (rem.tv_sec < secs || (rem.tv_sec == secs && rem.tv_nsec == 0)),
                      "nanosleep remaining time {%ld, %ld} not within [0, %ld s]",
                      (long)rem.tv_sec, (long)rem.tv_nsec, secs);
            }
        } else {
            unexpected++;
            if (r == -516)
                check(0, "nanosleep returned -516 (ERESTART_RESTARTBLOCK leaked to user space), call #%ld",
                      calls);
            else
                check(0, "nanosleep returned %ld (%s), expected only -EINTR from SIGTERM, call #%ld",
                      r, r < 0 ? strerror((int)-r) : "positive", calls);
        }
    }

    int64_t t_end = wl_now_ns();
    wl_dbg("calls=%ld completed=%ld spurious-eintr=%ld unexpected=%ld", calls, completed,
           spurious, unexpected);
    check(t_end >= t_ready, "CLOCK_MONOTONIC went backwards since READY: %lld ns",
          (long long)(t_end - t_ready));
    check(calls >= 1, "the loop never issued nanosleep");
    wl_finish();
}
