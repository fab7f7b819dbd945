/*
 * timers — POSIX timers (timer_create) on every clock, with every kind of
 * notification.
 *
 *   timers <result-file> [other-cpu-clock]
 *
 * Before READY it creates, in this order (raw syscalls, so the ids are the
 * kernel's; a fresh process gets 0, 1, 2, ...):
 *   tick    CLOCK_MONOTONIC, SIGEV_SIGNAL SIGRTMIN+1 value 0x7469636b00000001,
 *           every 20 ms
 *   far     CLOCK_REALTIME, SIGEV_SIGNAL SIGRTMIN+2 value 0x00000000000fa002,
 *           once in 1000 s
 *   gone    CLOCK_MONOTONIC, SIGEV_NONE, deleted at once (its id stays free)
 *   boot    CLOCK_BOOTTIME, SIGEV_NONE value 0xb0b0000000000003, 2000 s then
 *           every 3 s
 *   pcpu    CLOCK_PROCESS_CPUTIME_ID, SIGEV_SIGNAL SIGRTMIN+3 value
 *           0x9c9c000000000004, 100 s of CPU then every 50 s
 *   tcpu    CLOCK_THREAD_CPUTIME_ID, SIGEV_THREAD_ID (itself) SIGRTMIN+4 value
 *           0x7c7c000000000005, 200 s of CPU once
 *   off     CLOCK_MONOTONIC, no sigevent (the kernel's default: SIGALRM, value
 *           = its id), armed 500 s / 5 s, then disarmed
 *   ttick   CLOCK_MONOTONIC, SIGEV_THREAD_ID (itself) SIGRTMIN+5 value
 *           0x7474000000000007, every 30 ms
 * With `other-cpu-clock` it also creates a timer on its parent's CPU clock,
 * which a checkpoint must refuse (the workload still PASSes untouched).
 * It records timer_gettime of each and /proc/self/timers.
 * Between READY and SIGTERM: 10 ms nanosleeps; tick and ttick keep firing,
 * each signal checked in the handler (si_code SI_TIMER, si_timerid,
 * si_value); no other timer may fire.
 * At SIGTERM: /proc/self/timers as before (ID, signal and value, notify with
 * pid/tid, ClockID; compared by id, the listing order is the kernel's); each
 * timer's interval exact; remaining 0 < now <= before for the armed ones
 * (<= interval for tick and ttick), 0/0 for off; `gone` is still no timer
 * (EINVAL); a new timer gets the id after the highest one, as it would have
 * before the checkpoint; tick and ttick still fire (3 more signals each
 * within 2 s of SIGTERM); every delivered signal was right; nothing else
 * fired; timer_getoverrun works on tick.
 * Not checked, because a restore cannot keep them: the overrun count, and
 * the CPU-time clocks' readings (a restored process's CPU clock starts near
 * zero; the CPU timers keep what was left of their budget).
 */
#include "wl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

enum { TICK, FAR, GONE, BOOT, PCPU, TCPU, OFF, TTICK, OTHER, NTIMERS };

struct tdef {
    const char *name;
    clockid_t clock;
    int notify; /* -1: create without a sigevent */
    int signo;
    uint64_t value;
    struct itimerspec arm;
};

#define SEC(s) {(s), 0}
#define MS(m) {0, (m) * 1000000L}

static struct tdef defs[NTIMERS] = {
    [TICK] = {"tick", CLOCK_MONOTONIC, SIGEV_SIGNAL, 0, 0x7469636b00000001ULL, {MS(20), MS(20)}},
    [FAR] = {"far", CLOCK_REALTIME, SIGEV_SIGNAL, 0, 0xfa002ULL, {SEC(0), SEC(1000)}},
    [GONE] = {"gone", CLOCK_MONOTONIC, SIGEV_NONE, 0, 0, {SEC(0), SEC(0)}},
    [BOOT] = {"boot", CLOCK_BOOTTIME, SIGEV_NONE, 0, 0xb0b0000000000003ULL, {SEC(3), SEC(2000)}},
    [PCPU] = {"pcpu", CLOCK_PROCESS_CPUTIME_ID, SIGEV_SIGNAL, 0, 0x9c9c000000000004ULL, {SEC(50), SEC(100)}},
    [TCPU] = {"tcpu", CLOCK_THREAD_CPUTIME_ID, SIGEV_THREAD_ID, 0, 0x7c7c000000000005ULL, {SEC(0), SEC(200)}},
    [OFF] = {"off", CLOCK_MONOTONIC, -1, 0, 0, {SEC(5), SEC(500)}},
    [TTICK] = {"ttick", CLOCK_MONOTONIC, SIGEV_THREAD_ID, 0, 0x7474000000000007ULL, {MS(30), MS(30)}},
    [OTHER] = {"other", 0, SIGEV_NONE, 0, 0, {SEC(0), SEC(0)}},
};

static int ids[NTIMERS];
static struct itimerspec before[NTIMERS];
static int have_other, next_id;

/* What the handler saw. Only tick and ttick may fire. */
static volatile int fired[2];
static volatile int nbad;
static volatile struct {
    int sig, code, timerid, overrun;
    uint64_t value;
} bad;

static char timers_before[4096];

static int sys_timer_create(clockid_t clock, struct sigevent *sev, int *id)
{
    return (int)syscall(SYS_timer_create, clock, sev, id);
}

static int sys_timer_gettime(int id, struct itimerspec *its)
{
    return (int)syscall(SYS_timer_gettime, id, its);
}

static void on_timer(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int k = sig == defs[TICK].signo ? 0 : sig == defs[TTICK].signo ? 1 : -1;
    int want = k == 0 ? TICK : TTICK;
    if (k >= 0 && si->si_code == SI_TIMER && si->si_timerid == ids[want] &&
        (uint64_t)(uintptr_t)si->si_value.sival_ptr == defs[want].value && si->si_overrun >= 0) {
        fired[k] = fired[k] + 1;
        return;
    }
    if (nbad++ == 0) {
        bad.sig = sig;
        bad.code = si->si_code;
        bad.timerid = si->si_timerid;
        bad.overrun = si->si_overrun;
        bad.value = (uint64_t)(uintptr_t)si->si_value.sival_ptr;
    }
}

static long long ns(const struct timespec *t)
{
    return t->tv_sec * 1000000000LL + t->tv_nsec;
}

/*
 * /proc/self/timers lists newest first, and a restore need not create the
 * timers in their original order: compare it as a set, by id.
 */
struct block {
    int id;
    const char *text;
    size_t len;
};

static int by_id(const void *a, const void *b)
{
    return ((const struct block *)a)->id - ((const struct block *)b)->id;
}

static int read_timers_sorted(char *out, size_t cap)
{
    static char raw[4096];
    struct block blocks[64];
    int n = 0;
    if (wl_read_file("/proc/self/timers", raw, sizeof raw) < 0)
        return -1;
    for (char *p = raw; *p && n < 64;) {
        char *end = p;
        for (int lines = 0; lines < 4 && *end; end++)
            if (*end == '\n')
                lines++;
        blocks[n].id = atoi(p + 4); /* "ID: " */
        blocks[n].text = p;
        blocks[n].len = (size_t)(end - p);
        n++;
        p = end;
    }
    qsort(blocks, n, sizeof blocks[0], by_id);
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (at + blocks[i].len + 1 > cap)
            return -1;
        memcpy(out + at, blocks[i].text, blocks[i].len);
        at += blocks[i].len;
    }
    out[at] = 0;
    return n;
}

static void create(int t)
{
    struct tdef *d = &defs[t];
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = d->notify;
    sev.sigev_signo = d->signo;
    sev.sigev_value.sival_ptr = (void *)(uintptr_t)d->value;
    if (d->notify == SIGEV_THREAD_ID)
        sev._sigev_un._tid = gettid(); /* glibc 2.36 has no sigev_notify_thread_id */
    if (sys_timer_create(d->clock, d->notify < 0 ? NULL : &sev, &ids[t]) != 0)
        wl_setup_fail("timer_create(%s): %s", d->name, strerror(errno));
    if ((d->arm.it_value.tv_sec || d->arm.it_value.tv_nsec) &&
        syscall(SYS_timer_settime, ids[t], 0, &d->arm, NULL) != 0)
        wl_setup_fail("timer_settime(%s): %s", d->name, strerror(errno));
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    have_other = argc > 2 && strcmp(argv[2], "other-cpu-clock") == 0;
    defs[TICK].signo = SIGRTMIN + 1;
    defs[FAR].signo = SIGRTMIN + 2;
    defs[PCPU].signo = SIGRTMIN + 3;
    defs[TCPU].signo = SIGRTMIN + 4;
    defs[TTICK].signo = SIGRTMIN + 5;

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_timer;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    for (int s = SIGRTMIN + 1; s <= SIGRTMIN + 5; s++)
        if (sigaction(s, &sa, NULL) != 0)
            wl_setup_fail("sigaction(SIGRTMIN+%d): %s", s - SIGRTMIN, strerror(errno));
    if (sigaction(SIGALRM, &sa, NULL) != 0)
        wl_setup_fail("sigaction(SIGALRM): %s", strerror(errno));

    for (int t = TICK; t <= TTICK; t++) {
        create(t);
        if (t == GONE && syscall(SYS_timer_delete, ids[t]) != 0)
            wl_setup_fail("timer_delete(gone): %s", strerror(errno));
    }
    defs[OFF].value = (uint64_t)ids[OFF];
    const struct itimerspec zero = {{0, 0}, {0, 0}};
    if (syscall(SYS_timer_settime, ids[OFF], 0, &zero, NULL) != 0)
        wl_setup_fail("timer_settime(off, 0): %s", strerror(errno));
    if (have_other) {
        if (clock_getcpuclockid(getppid(), &defs[OTHER].clock) != 0)
            wl_setup_fail("clock_getcpuclockid(parent) failed");
        create(OTHER);
    }
    for (int t = TICK; t < NTIMERS; t++) {
        if (ids[t] > next_id - 1)
            next_id = ids[t] + 1;
        if (t != GONE && (t != OTHER || have_other) && sys_timer_gettime(ids[t], &before[t]) != 0)
            wl_setup_fail("timer_gettime(%s): %s", defs[t].name, strerror(errno));
    }
    if (read_timers_sorted(timers_before, sizeof timers_before) != TTICK + have_other)
        wl_setup_fail("/proc/self/timers does not list the %d timers", TTICK + have_other);
    for (int t = TICK; t < TTICK + 1 + have_other; t++)
        wl_dbg("%s: id %d", defs[t].name, ids[t]);
    wl_dbg("/proc/self/timers:\n%s", timers_before);

    wl_ready();
    while (!wl_term) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }

    static char now[4096];
    read_timers_sorted(now, sizeof now);
    check(strcmp(now, timers_before) == 0, "/proc/self/timers: expected\n%sfound\n%s", timers_before, now);

    for (int t = TICK; t < NTIMERS; t++) {
        const struct tdef *d = &defs[t];
        if (t == GONE || (t == OTHER && !have_other))
            continue;
        struct itimerspec g;
        memset(&g, 0, sizeof g);
        int r = sys_timer_gettime(ids[t], &g);
        check(r == 0, "timer_gettime(%s, id %d): %s", d->name, ids[t], strerror(errno));
        if (r != 0)
            continue;
        const struct timespec *iv = t == OFF || t == OTHER ? &zero.it_interval : &d->arm.it_interval;
        check(ns(&g.it_interval) == ns(iv), "%s (id %d): interval expected %lld ns found %lld ns",
              d->name, ids[t], ns(iv), ns(&g.it_interval));
        long long rem = ns(&g.it_value), was = ns(&before[t].it_value);
        if (t == OFF || t == OTHER)
            check(rem == 0, "%s (id %d): expected disarmed, found %lld ns remaining", d->name, ids[t], rem);
        else if (t == TICK || t == TTICK)
            check(rem > 0 && rem <= ns(iv), "%s (id %d): expected 0 < remaining <= %lld ns, found %lld ns",
                  d->name, ids[t], ns(iv), rem);
        else
            check(rem > 0 && rem <= was, "%s (id %d): expected 0 < remaining <= %lld ns (before READY), found %lld ns",
                  d->name, ids[t], was, rem);
    }
    struct itimerspec g;
    errno = 0;
    check(sys_timer_gettime(ids[GONE], &g) == -1 && errno == EINVAL,
          "deleted timer id %d: timer_gettime expected EINVAL, found %s", ids[GONE],
          errno ? strerror(errno) : "a timer");
    struct sigevent none;
    memset(&none, 0, sizeof none);
    none.sigev_notify = SIGEV_NONE;
    int fresh = -1;
    errno = 0;
    check(sys_timer_create(CLOCK_MONOTONIC, &none, &fresh) == 0 && fresh == next_id,
          "a new timer: expected id %d (after the highest), found %d (%s)", next_id, fresh, strerror(errno));
    syscall(SYS_timer_delete, fresh);
    check(syscall(SYS_timer_getoverrun, ids[TICK]) >= 0, "timer_getoverrun(tick): %s", strerror(errno));

    const char *const tname[2] = {"tick", "ttick"};
    int at_term[2] = {fired[0], fired[1]};
    int64_t deadline = wl_now_ns() + 2000000000LL;
    while ((fired[0] < at_term[0] + 3 || fired[1] < at_term[1] + 3) && wl_now_ns() < deadline) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    }
    for (int k = 0; k < 2; k++) {
        check(fired[k] >= at_term[k] + 3, "%s stopped firing: %d signals at SIGTERM, %d two seconds later",
              tname[k], at_term[k], fired[k]);
    }
    check(nbad == 0,
          "%d wrong timer signals, the first: signal %d si_code %d si_timerid %d si_overrun %d si_value 0x%lx",
          nbad, bad.sig, bad.code, bad.timerid, bad.overrun, (unsigned long)bad.value);
    struct timespec cpu;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &cpu);
    wl_dbg("tick fired %d, ttick %d; process CPU clock %lld ns", fired[0], fired[1], ns(&cpu));
    wl_finish();
}
