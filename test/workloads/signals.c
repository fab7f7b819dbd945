/*
 * signals — signal dispositions, mask, pending queues, altstack, itimers.
 *
 *   signals <result-file>
 *
 * Before READY it sets (RT = SIGRTMIN, 34 with glibc):
 *   handlers  SIGUSR1  SA_SIGINFO|SA_RESTART, sa_mask {SIGHUP, SIGWINCH}
 *             SIGUSR2  SA_SIGINFO|SA_NODEFER, sa_mask {SIGINT}
 *             RT+3     SA_SIGINFO|SA_ONSTACK|SA_RESTART, sa_mask {SIGQUIT, RT+5}
 *             RT+4     SA_SIGINFO, sa_mask {}
 *             SIGHUP   plain handler, SA_RESETHAND
 *             SIGINT   plain handler, SA_ONSTACK, sa_mask {SIGUSR1}
 *             SIGALRM, SIGVTALRM, SIGPROF  plain handler, SA_RESTART (must never run)
 *             SIGPIPE, SIGURG  SIG_IGN
 *             (SIGTERM and the crash signals: the protocol's handlers)
 *   mask      SIGUSR2, SIGWINCH, RT+3, RT+4, RT+5 blocked
 *   pending   process-directed (sigqueue): RT+3 value 0x1111, RT+3 value
 *             0x2222, SIGUSR2 value 0x3333; thread-directed
 *             (rt_tgsigqueueinfo): RT+4 value 0x4444
 *   altstack  64 KiB static buffer
 *   itimers   ITIMER_REAL 1000 s/1000 s, ITIMER_VIRTUAL 500 s/500 s,
 *             ITIMER_PROF 700 s/700 s (none can fire during a test)
 * and records the raw kernel sigaction of every signal (handler, flags,
 * restorer, mask) and the Sig* lines of /proc/self/status.
 * Between READY and SIGTERM: sleeps in 10 ms nanosleeps.
 * At SIGTERM: no handler ran yet; /proc/self/status SigPnd (thread), ShdPnd
 * (process), SigBlk, SigIgn, SigCgt as before; every signal's raw sigaction
 * as before; the mask; sigpending() holds exactly SIGUSR2, RT+3, RT+4;
 * sigaltstack as set (and not SS_ONSTACK); each itimer's interval exact and
 * 0 < remaining <= interval (+20 ms for the CPU-time timers, which the
 * kernel rounds up to a tick). Then it unblocks everything and checks what the
 * handlers received: SIGUSR2 once (0x3333, SI_QUEUE, our pid and uid, ran
 * with SIGINT blocked and SIGUSR2 not blocked), RT+3 twice in order (0x1111
 * then 0x2222, on the alternate stack, with SIGQUIT, RT+5 and RT+3 blocked),
 * RT+4 once (0x4444), nothing else; and nothing is left pending.
 */
#include "wl.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#define RT3 (SIGRTMIN + 3)
#define RT4 (SIGRTMIN + 4)
#define RT5 (SIGRTMIN + 5)
#define BIT(s) (1ULL << ((s) - 1))

struct kact {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

struct rec {
    int sig, code, pid, uid, value, on_alt;
    uint64_t mask; /* blocked set while the handler ran */
};

static struct kact table_before[65];
static volatile struct rec rlog[32];
static volatile int nlog, plain_runs, plain_sig;
static char altstack[64 * 1024] __attribute__((aligned(16)));

static const char *const status_keys[] = {"SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt"};
static char status_before[5][32];

static uint64_t cur_mask(void)
{
    uint64_t m = 0;
    syscall(SYS_rt_sigprocmask, SIG_BLOCK, NULL, &m, 8);
    return m;
}

static void h_info(int sig, siginfo_t *si, void *uc)
{
    (void)uc;
    int i = nlog;
    if (i < 32) {
        char here;
        rlog[i].sig = sig;
        rlog[i].code = si->si_code;
        rlog[i].pid = si->si_pid;
        rlog[i].uid = (int)si->si_uid;
        rlog[i].value = si->si_value.sival_int;
        rlog[i].on_alt = &here >= altstack && &here < altstack + sizeof altstack;
        rlog[i].mask = cur_mask();
        nlog = i + 1;
    }
}

static void h_plain(int sig)
{
    plain_runs++;
    plain_sig = sig;
}

static uint64_t mask_of(const int *sigs, int n)
{
    uint64_t m = 0;
    for (int i = 0; i < n; i++)
        m |= BIT(sigs[i]);
    return m;
}

static void to_sigset(uint64_t m, sigset_t *set)
{
    sigemptyset(set);
    for (int s = 1; s <= 64; s++)
        if (m & BIT(s))
            sigaddset(set, s);
}

static void install(int sig, void (*plain)(int), void (*info)(int, siginfo_t *, void *), int flags,
                    uint64_t mask)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    if (info)
        sa.sa_sigaction = info;
    else
        sa.sa_handler = plain;
    sa.sa_flags = flags;
    to_sigset(mask, &sa.sa_mask);
    if (sigaction(sig, &sa, NULL) != 0)
        wl_setup_fail("sigaction(%d): %s", sig, strerror(errno));
}

static int get_kact(int sig, struct kact *k)
{
    memset(k, 0, sizeof *k);
    return (int)syscall(SYS_rt_sigaction, sig, NULL, k, 8);
}

static const char *signame(int s, char *buf, size_t cap)
{
    if (s >= SIGRTMIN && s <= SIGRTMAX)
        snprintf(buf, cap, "SIGRTMIN+%d", s - SIGRTMIN);
    else
        snprintf(buf, cap, "SIG%s", sigabbrev_np(s) ? sigabbrev_np(s) : "?");
    return buf;
}

static uint64_t parse_hex(const char *s)
{
    uint64_t v = 0;
    sscanf(s, "%lx", (unsigned long *)&v);
    return v;
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    const pid_t pid = getpid();
    const uid_t uid = getuid();

    install(SIGUSR1, NULL, h_info, SA_SIGINFO | SA_RESTART, BIT(SIGHUP) | BIT(SIGWINCH));
    install(SIGUSR2, NULL, h_info, SA_SIGINFO | SA_NODEFER, BIT(SIGINT));
    install(RT3, NULL, h_info, SA_SIGINFO | SA_ONSTACK | SA_RESTART, BIT(SIGQUIT) | BIT(RT5));
    install(RT4, NULL, h_info, SA_SIGINFO, 0);
    install(SIGHUP, h_plain, NULL, SA_RESETHAND, 0);
    install(SIGINT, h_plain, NULL, SA_ONSTACK, BIT(SIGUSR1));
    install(SIGALRM, h_plain, NULL, SA_RESTART, 0);
    install(SIGVTALRM, h_plain, NULL, SA_RESTART, 0);
    install(SIGPROF, h_plain, NULL, SA_RESTART, 0);
    if (signal(SIGPIPE, SIG_IGN) == SIG_ERR || signal(SIGURG, SIG_IGN) == SIG_ERR)
        wl_setup_fail("signal(SIG_IGN): %s", strerror(errno));

    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof altstack, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0)
        wl_setup_fail("sigaltstack: %s", strerror(errno));

    const int blocked_sigs[] = {SIGUSR2, SIGWINCH, RT3, RT4, RT5};
    const uint64_t blocked = mask_of(blocked_sigs, 5);
    sigset_t set;
    to_sigset(blocked, &set);
    if (sigprocmask(SIG_SETMASK, &set, NULL) != 0)
        wl_setup_fail("sigprocmask: %s", strerror(errno));

    union sigval v;
    v.sival_int = 0x1111;
    if (sigqueue(pid, RT3, v) != 0)
        wl_setup_fail("sigqueue RT+3: %s", strerror(errno));
    v.sival_int = 0x2222;
    if (sigqueue(pid, RT3, v) != 0)
        wl_setup_fail("sigqueue RT+3: %s", strerror(errno));
    v.sival_int = 0x3333;
    if (sigqueue(pid, SIGUSR2, v) != 0)
        wl_setup_fail("sigqueue SIGUSR2: %s", strerror(errno));
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = RT4;
    si.si_code = SI_QUEUE;
    si.si_pid = pid;
    si.si_uid = uid;
    si.si_value.sival_int = 0x4444;
    if (syscall(SYS_rt_tgsigqueueinfo, pid, gettid(), RT4, &si) != 0)
        wl_setup_fail("rt_tgsigqueueinfo RT+4: %s", strerror(errno));

    const struct itimerval itv[3] = {{{1000, 0}, {1000, 0}}, {{500, 0}, {500, 0}}, {{700, 0}, {700, 0}}};
    const int which[3] = {ITIMER_REAL, ITIMER_VIRTUAL, ITIMER_PROF};
    const char *const wname[3] = {"ITIMER_REAL", "ITIMER_VIRTUAL", "ITIMER_PROF"};
    for (int i = 0; i < 3; i++)
        if (setitimer(which[i], &itv[i], NULL) != 0)
            wl_setup_fail("setitimer(%s): %s", wname[i], strerror(errno));

    /* snapshots */
    for (int s = 1; s <= 64; s++)
        if (s != SIGKILL && s != SIGSTOP && get_kact(s, &table_before[s]) != 0)
            wl_setup_fail("rt_sigaction(%d) query: %s", s, strerror(errno));
    if (!(table_before[SIGUSR1].flags & SA_SIGINFO) || !(table_before[RT3].flags & SA_ONSTACK) ||
        !(table_before[SIGUSR2].flags & SA_NODEFER) || !(table_before[SIGHUP].flags & SA_RESETHAND))
        wl_setup_fail("sigaction flags did not stick");
    for (int i = 0; i < 5; i++)
        if (wl_status_field(status_keys[i], status_before[i], sizeof status_before[i]) != 0)
            wl_setup_fail("/proc/self/status has no %s", status_keys[i]);
    const uint64_t want_thread_pnd = BIT(RT4), want_shared_pnd = BIT(SIGUSR2) | BIT(RT3);
    if (parse_hex(status_before[0]) != want_thread_pnd ||
        parse_hex(status_before[1]) != want_shared_pnd || parse_hex(status_before[2]) != blocked)
        wl_setup_fail("pending/blocked not as intended: SigPnd %s ShdPnd %s SigBlk %s",
                      status_before[0], status_before[1], status_before[2]);
    wl_dbg("SigPnd %s ShdPnd %s SigBlk %s SigIgn %s SigCgt %s", status_before[0],
           status_before[1], status_before[2], status_before[3], status_before[4]);

    wl_ready();
    while (!wl_term) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }

    /* ---- checks before unblocking ---- */
    char n1[32], n2[32];
    check(nlog == 0 && plain_runs == 0,
          "a handler ran before the signals were unblocked: %d info (first %s), %d plain (%s)",
          nlog, nlog ? signame(rlog[0].sig, n1, sizeof n1) : "-", plain_runs,
          plain_runs ? signame(plain_sig, n2, sizeof n2) : "-");
    for (int i = 0; i < 5; i++) {
        char now[32] = "?";
        wl_status_field(status_keys[i], now, sizeof now);
        check(strcmp(now, status_before[i]) == 0, "/proc/self/status %s: expected %s found %s",
              status_keys[i], status_before[i], now);
    }
    for (int s = 1; s <= 64; s++) {
        if (s == SIGKILL || s == SIGSTOP)
            continue;
        struct kact k;
        const struct kact *b = &table_before[s];
        int r = get_kact(s, &k);
        check(r == 0 && k.handler == b->handler && k.flags == b->flags &&
                  k.restorer == b->restorer && k.mask == b->mask,
              "sigaction(%s): expected handler %p flags 0x%lx restorer %p mask 0x%lx, found "
              "handler %p flags 0x%lx restorer %p mask 0x%lx",
              signame(s, n1, sizeof n1), b->handler, b->flags, b->restorer,
              (unsigned long)b->mask, k.handler, k.flags, k.restorer, (unsigned long)k.mask);
    }
    uint64_t m = cur_mask();
    check(m == blocked, "blocked mask: expected 0x%lx found 0x%lx", (unsigned long)blocked,
          (unsigned long)m);
    sigset_t pend;
    sigemptyset(&pend);
    sigpending(&pend);
    for (int s = 1; s <= 64; s++) {
        int want = s == SIGUSR2 || s == RT3 || s == RT4;
        int got = sigismember(&pend, s) == 1;
        check(want == got, "sigpending: %s expected %s found %s", signame(s, n1, sizeof n1),
              want ? "pending" : "not pending", got ? "pending" : "not pending");
    }
    stack_t cur;
    memset(&cur, 0, sizeof cur);
    check(sigaltstack(NULL, &cur) == 0 && cur.ss_sp == (void *)altstack &&
              cur.ss_size == sizeof altstack && cur.ss_flags == 0,
          "sigaltstack: expected sp %p size %zu flags 0, found sp %p size %zu flags 0x%x",
          (void *)altstack, sizeof altstack, cur.ss_sp, cur.ss_size, cur.ss_flags);
    for (int i = 0; i < 3; i++) {
        struct itimerval g;
        memset(&g, 0, sizeof g);
        int r = getitimer(which[i], &g);
        long long val = g.it_value.tv_sec * 1000000LL + g.it_value.tv_usec;
        long long iv = itv[i].it_interval.tv_sec * 1000000LL;
        /* CPU-time timers are rounded up to the tick: allow 20 ms over */
        long long slack = which[i] == ITIMER_REAL ? 0 : 20000;
        check(r == 0 && g.it_interval.tv_sec == itv[i].it_interval.tv_sec &&
                  g.it_interval.tv_usec == 0 && val > 0 && val <= iv + slack,
              "%s: expected interval %ld s and 0 < remaining <= interval (+20 ms for CPU "
              "timers), found interval "
              "%ld.%06ld s remaining %ld.%06ld s",
              wname[i], (long)itv[i].it_interval.tv_sec, (long)g.it_interval.tv_sec,
              (long)g.it_interval.tv_usec, (long)g.it_value.tv_sec, (long)g.it_value.tv_usec);
    }

    /* ---- unblock and see what the handlers get ---- */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    sigprocmask(SIG_SETMASK, &none, NULL); /* any nested delivery has finished */

    int usr2 = 0, rt3 = 0, rt4 = 0;
    for (int i = 0; i < nlog && i < 32; i++) {
        const volatile struct rec *r = &rlog[i];
        const char *nm = signame(r->sig, n1, sizeof n1);
        check(r->code == SI_QUEUE && r->pid == pid && r->uid == (int)uid,
              "%s: expected si_code SI_QUEUE (%d) pid %d uid %d, found si_code %d pid %d uid %d",
              nm, SI_QUEUE, pid, uid, r->code, r->pid, r->uid);
        if (r->sig == SIGUSR2) {
            usr2++;
            check(r->value == 0x3333, "SIGUSR2 si_value: expected 0x3333 found 0x%x", r->value);
            check((r->mask & BIT(SIGINT)) && !(r->mask & BIT(SIGUSR2)),
                  "SIGUSR2 handler mask 0x%lx: expected SIGINT blocked (sa_mask) and SIGUSR2 "
                  "not blocked (SA_NODEFER)", (unsigned long)r->mask);
        } else if (r->sig == RT3) {
            rt3++;
            int want = rt3 == 1 ? 0x1111 : 0x2222;
            check(r->value == want, "SIGRTMIN+3 instance %d si_value: expected 0x%x found 0x%x",
                  rt3, want, r->value);
            check(r->on_alt, "SIGRTMIN+3 (SA_ONSTACK) handler did not run on the alternate stack");
            uint64_t need = BIT(SIGQUIT) | BIT(RT5) | BIT(RT3);
            check((r->mask & need) == need,
                  "SIGRTMIN+3 handler mask 0x%lx: expected SIGQUIT, SIGRTMIN+5 (sa_mask) and "
                  "SIGRTMIN+3 blocked", (unsigned long)r->mask);
        } else if (r->sig == RT4) {
            rt4++;
            check(r->value == 0x4444, "SIGRTMIN+4 si_value: expected 0x4444 found 0x%x", r->value);
            check(r->mask & BIT(RT4), "SIGRTMIN+4 handler mask 0x%lx: expected SIGRTMIN+4 blocked",
                  (unsigned long)r->mask);
        } else {
            check(0, "unexpected signal %s delivered (si_value 0x%x)", nm, r->value);
        }
    }
    check(usr2 == 1, "SIGUSR2 delivered %d times, expected once", usr2);
    check(rt3 == 2, "SIGRTMIN+3 delivered %d times, expected twice", rt3);
    check(rt4 == 1, "SIGRTMIN+4 delivered %d times, expected once", rt4);
    check(plain_runs == 0, "plain handler ran %d times (last %s)", plain_runs,
          signame(plain_sig, n1, sizeof n1));
    sigemptyset(&pend);
    sigpending(&pend);
    for (int s = 1; s <= 64; s++)
        check(sigismember(&pend, s) != 1, "%s still pending after unblocking",
              signame(s, n1, sizeof n1));
    wl_finish();
}
