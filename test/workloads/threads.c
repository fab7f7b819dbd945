/*
 * threads — a multi-threaded process: per-thread state and a futex queue.
 *
 *   threads <result-file> [nthreads]      (worker threads, default 4, 1..64)
 *
 * Threads: main (index 0) and workers 1..n. Odd workers produce, even ones
 * consume (with n = 1 the main thread drains the queue at the end).
 * Setup, per thread (by the thread itself):
 *   - name (pthread_setname_np): "thr-main", "thr-w<i>-prod", "thr-w<i>-cons";
 *   - blocked mask, different for every thread: main {SIGHUP, SIGTERM, RT+2};
 *     worker i: RT+2, SIGTERM (except worker n), SIGUSR1 if i&1, SIGUSR2 if
 *     i&2, SIGWINCH if i&4, RT+8+((i-1)%20)  (RT = SIGRTMIN);
 *   - TLS: a counter and 16 pattern words; the counter is mirrored in a
 *     shared array; fs_base, the TLS address, get_robust_list(),
 *     PR_GET_TID_ADDRESS (clear_child_tid) and an rseq re-registration probe
 *     (-EBUSY: glibc's rseq area is registered) are recorded;
 *   - worker 1 locks a robust mutex and holds it until it exits.
 *   Then main queues one thread-directed RT+2 to every thread with
 *   pthread_sigqueue (value 0x7000 + index), blocked there: it stays pending
 *   in that thread only.
 * Meanwhile: producers push an item every 1 ms into a bounded queue (mutex +
 *   two condition variables, capacity 64) with a global sequence number, a
 *   per-producer sequence number and a check word; consumers block in
 *   pthread_cond_wait until an item comes and verify, under the mutex, that
 *   items come out gap-free, duplicate-free and in order. Main blocks in a
 *   raw FUTEX_WAIT (1 s timeout). Every thread counts its work in TLS and in
 *   the shared array.
 * At SIGTERM: only worker n has SIGTERM unblocked, so its handler runs; it
 * sets the flag and FUTEX_WAKEs main, which coordinates:
 *   - main, while every thread is still in its loop: /proc/self/task lists
 *     exactly the recorded tids; per thread /proc comm = its name, SigBlk =
 *     its mask, SigPnd = {RT+2}; ShdPnd empty; the robust mutex's owner word
 *     is worker 1's tid; the SIGTERM handler ran in worker n;
 *   - main sets stop and broadcasts: every producer pushes one more item,
 *     consumers (or main) drain the queue;
 *   - every thread checks itself: gettid, pthread_self, name (PR_GET_NAME),
 *     blocked mask, sigpending() = {RT+2} exactly, TLS address and values,
 *     fs_base, TLS counter = shared counter, robust list head, clear_child_tid,
 *     rseq: pinned in turn to (up to) two allowed CPUs, the rseq area's cpu_id,
 *     getcpu() and sched_getcpu() agree, and the re-registration probe gives
 *     what it gave before READY (a lost registration makes it succeed);
 *     then it unblocks RT+2: the handler must run once, in this thread, with
 *     its own value, SI_QUEUE and our pid; one more count; exit;
 *   - main joins every worker (5 s each; a thread that is gone from
 *     /proc but does not join means a lost clear_child_tid), checks each
 *     counter advanced past its value at READY, the queue totals (pushed =
 *     popped, nothing left, advanced since READY), and locks the robust
 *     mutex: worker 1 exited holding it, so the lock must return EOWNERDEAD
 *     (a restore that lost the robust list makes it time out after 3 s).
 * The verdict names the thread ('thr-w2-cons' (tid N)) of the earliest
 * failure.
 * Debug: one line per thread (index, tid, name, mask).
 */
#include "wl.h"

#include <asm/prctl.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAXT 64
#define QCAP 64
#define SEC 1000000000LL
#define RSEQ_LEN 32
#define SIG_PEND (SIGRTMIN + 2)

enum { ROLE_MAIN, ROLE_PROD, ROLE_CONS };

struct thr {
    int idx, role;
    pthread_t th;
    char name[16];
    sigset_t mask;
    /* recorded by the thread itself before READY */
    pid_t tid;
    unsigned long fs_base;
    void *tls_addr;
    void *robust_head;
    size_t robust_len;
    int *tid_addr;
    int have_tid_addr;
    long rseq_probe0;
    uint64_t counter_at_ready;
    /* written by the RT+2 handler running in this thread */
    volatile int sig_count, sig_code, sig_pid, sig_val[4];
    volatile pid_t sig_tid;
    /* protocol */
    volatile int ready;
    /* first failure of this thread (order: global sequence) */
    int failed;
    char ffile[32];
    int fline;
    char fmsg[700];
};

static struct thr T[MAXT + 1];
static int nthr = 4, nprod, ncons;
static struct {
    volatile uint64_t v;
    char pad[56];
} counters[MAXT + 1];

static __thread uint64_t tls_counter;
static __thread uint64_t tls_pattern[16];
static __thread struct thr *tls_self;

/* ---- failures -------------------------------------------------------------- */

static pthread_mutex_t fail_mu = PTHREAD_MUTEX_INITIALIZER;
static int fail_seq;

static void thr_fail_at(struct thr *t, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void thr_fail_at(struct thr *t, const char *file, int line, const char *fmt, ...)
{
    pthread_mutex_lock(&fail_mu);
    if (!t->failed) {
        t->failed = ++fail_seq;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->fmsg, sizeof t->fmsg, fmt, ap);
        va_end(ap);
        const char *b = strrchr(file, '/');
        snprintf(t->ffile, sizeof t->ffile, "%s", b ? b + 1 : file);
        t->fline = line;
        wl_dbg("thread %d '%s': FAIL %s [%s:%d]", t->idx, t->name, t->fmsg, t->ffile, t->fline);
    }
    pthread_mutex_unlock(&fail_mu);
}
#define tcheck(t, cond, ...)                                        \
    __extension__({                                                 \
        int ok_ = !!(cond);                                         \
        if (!ok_)                                                   \
            thr_fail_at((t), __FILE__, __LINE__, __VA_ARGS__);      \
        ok_;                                                        \
    })

static const char *sig_name(int sig, char *buf, size_t cap)
{
    if (sig >= SIGRTMIN && sig <= SIGRTMAX)
        snprintf(buf, cap, "SIGRTMIN+%d", sig - SIGRTMIN);
    else if (sigabbrev_np(sig))
        snprintf(buf, cap, "SIG%s", sigabbrev_np(sig));
    else
        snprintf(buf, cap, "signal %d", sig);
    return buf;
}

static uint64_t set_bits(const sigset_t *s)
{
    uint64_t b = 0;
    for (int sig = 1; sig <= 64; sig++)
        if (sig != 32 && sig != 33 && sigismember(s, sig) == 1)
            b |= 1ULL << (sig - 1);
    return b;
}

/* First signal whose bit differs, described: "SIGUSR1 is set, expected clear". */
static const char *bits_diff(uint64_t found, uint64_t want, char *buf, size_t cap)
{
    for (int sig = 1; sig <= 64; sig++) {
        uint64_t m = 1ULL << (sig - 1);
        if ((found & m) != (want & m)) {
            char n[32];
            snprintf(buf, cap, "%s is %s, expected %s", sig_name(sig, n, sizeof n), found & m ? "set" : "clear",
                     want & m ? "set" : "clear");
            return buf;
        }
    }
    snprintf(buf, cap, "no difference");
    return buf;
}

/* ---- signals ------------------------------------------------------------------ */

static volatile int term_word;
static volatile pid_t term_tid;

static void term_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)si, (void)uc;
    int e = errno;
    wl_term = 1;
    term_tid = (pid_t)syscall(SYS_gettid);
    term_word = 1;
    syscall(SYS_futex, &term_word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
    errno = e;
}

static void pend_handler(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)uc;
    int e = errno;
    struct thr *t = tls_self;
    if (t) {
        int k = t->sig_count;
        if (k < 4)
            t->sig_val[k] = si->si_value.sival_int;
        t->sig_count = k + 1;
        t->sig_tid = (pid_t)syscall(SYS_gettid);
        t->sig_code = si->si_code;
        t->sig_pid = si->si_pid;
    }
    errno = e;
}

/* ---- the queue ------------------------------------------------------------------ */

struct item {
    uint64_t gseq, pseq, check;
    int producer;
};

static struct {
    pthread_mutex_t m;
    pthread_cond_t not_empty, not_full;
    struct item ring[QCAP];
    unsigned head, count;
    uint64_t pushed, popped;
    uint64_t last_pseq[MAXT + 1];
    uint64_t pushed_by[MAXT + 1];
    int stop, producers_done;
} Q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER};

static pthread_mutex_t robust;

static uint64_t item_check(const struct item *it)
{
    return wl_mix(it->gseq * 0x100000001b3ULL ^ ((uint64_t)it->producer << 40) ^ it->pseq);
}

static void bump(void)
{
    tls_counter++;
    counters[tls_self->idx].v = tls_counter;
}

/* Q.m held. */
static void push(struct thr *t)
{
    struct item *it = &Q.ring[(Q.head + Q.count) % QCAP];
    it->gseq = ++Q.pushed;
    it->producer = t->idx;
    it->pseq = ++Q.pushed_by[t->idx];
    it->check = item_check(it);
    Q.count++;
}

/* Q.m held. */
static void pop(struct thr *t)
{
    struct item it = Q.ring[Q.head];
    Q.head = (Q.head + 1) % QCAP;
    Q.count--;
    tcheck(t, it.gseq == Q.popped + 1,
           "queue: popped the item with global seq %llu, expected %llu (an item was lost or duplicated)",
           (unsigned long long)it.gseq, (unsigned long long)Q.popped + 1);
    tcheck(t, it.check == item_check(&it), "queue: item %llu has check word %016llx, expected %016llx",
           (unsigned long long)it.gseq, (unsigned long long)it.check, (unsigned long long)item_check(&it));
    if (tcheck(t, it.producer >= 1 && it.producer <= nthr && T[it.producer].role == ROLE_PROD,
               "queue: item %llu names producer %d", (unsigned long long)it.gseq, it.producer)) {
        tcheck(t, it.pseq == Q.last_pseq[it.producer] + 1,
               "queue: item %llu is producer %d's #%llu, expected #%llu (out of order)",
               (unsigned long long)it.gseq, it.producer, (unsigned long long)it.pseq,
               (unsigned long long)Q.last_pseq[it.producer] + 1);
        Q.last_pseq[it.producer] = it.pseq;
    }
    Q.popped = it.gseq > Q.popped ? it.gseq : Q.popped + 1;
}

static void consume(struct thr *t)
{
    pthread_mutex_lock(&Q.m);
    for (;;) {
        while (Q.count == 0 && !(Q.stop && Q.producers_done == nprod))
            pthread_cond_wait(&Q.not_empty, &Q.m);
        if (Q.count == 0)
            break;
        pop(t);
        pthread_cond_signal(&Q.not_full);
        bump();
    }
    pthread_mutex_unlock(&Q.m);
}

static void produce(struct thr *t)
{
    for (;;) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        pthread_mutex_lock(&Q.m);
        while (Q.count == QCAP && !Q.stop)
            pthread_cond_wait(&Q.not_full, &Q.m);
        if (Q.stop) {
            pthread_mutex_unlock(&Q.m);
            break;
        }
        push(t);
        pthread_cond_signal(&Q.not_empty);
        pthread_mutex_unlock(&Q.m);
        bump();
    }
    /* one more item after the stop, then done */
    pthread_mutex_lock(&Q.m);
    while (Q.count == QCAP)
        pthread_cond_wait(&Q.not_full, &Q.m);
    push(t);
    Q.producers_done++;
    pthread_cond_broadcast(&Q.not_empty);
    pthread_mutex_unlock(&Q.m);
    bump();
}

/* ---- per-thread state ---------------------------------------------------------------- */

static long rseq_probe(void)
{
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    long r = syscall(SYS_rseq, rs, RSEQ_LEN, 0, RSEQ_SIG);
    return r < 0 ? -errno : r;
}

static void tls_fill(struct thr *t)
{
    tls_self = t;
    tls_counter = 0;
    /* Through a laundered pointer: GCC 12 at -O1 folds the loop's induction variable into the
     * TPOFF32 relocation of tls_pattern otherwise ("relocation truncated to fit"). */
    uint64_t *p = tls_pattern;
    __asm__("" : "+r"(p));
    for (int k = 0; k < 16; k++)
        p[k] = wl_mix((uint64_t)t->idx * 1000 + (uint64_t)k);
}

/* Runs in the thread: name, mask, TLS, and the kernel's per-thread registrations. */
static void thread_setup(struct thr *t)
{
    t->tid = gettid();
    pthread_setname_np(pthread_self(), t->name);
    pthread_sigmask(SIG_SETMASK, &t->mask, NULL);
    tls_fill(t);
    t->tls_addr = (void *)&tls_counter;
    syscall(SYS_arch_prctl, ARCH_GET_FS, &t->fs_base);
    syscall(SYS_get_robust_list, 0, &t->robust_head, &t->robust_len);
    t->have_tid_addr = prctl(PR_GET_TID_ADDRESS, &t->tid_addr, 0, 0, 0) == 0;
    t->rseq_probe0 = __rseq_size ? rseq_probe() : 0;
}

static void rseq_check(struct thr *t)
{
    if (!__rseq_size)
        return; /* glibc did not register rseq (glibc.pthread.rseq=0) */
    struct rseq *rs = (struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
    cpu_set_t orig;
    if (!tcheck(t, pthread_getaffinity_np(pthread_self(), sizeof orig, &orig) == 0, "getaffinity failed"))
        return;
    int tried = 0;
    for (int c = 0; c < CPU_SETSIZE && tried < 2; c++) {
        if (!CPU_ISSET(c, &orig))
            continue;
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(c, &one);
        if (pthread_setaffinity_np(pthread_self(), sizeof one, &one) != 0)
            continue;
        sched_yield();
        unsigned cpu = ~0u;
        syscall(SYS_getcpu, &cpu, NULL, NULL);
        uint32_t rcpu = __atomic_load_n(&rs->cpu_id, __ATOMIC_RELAXED);
        int gl = sched_getcpu();
        tcheck(t, cpu == (unsigned)c, "pinned to CPU %d, getcpu() says %u", c, cpu);
        tcheck(t, rcpu == cpu,
               "rseq: the rseq area's cpu_id is %u but getcpu() says %u (pinned to CPU %d): the rseq "
               "registration is lost",
               rcpu, cpu, c);
        tcheck(t, gl == (int)cpu, "sched_getcpu() returned %d, getcpu() says %u", gl, cpu);
        tried++;
    }
    pthread_setaffinity_np(pthread_self(), sizeof orig, &orig);
    long r = rseq_probe();
    tcheck(t, r == t->rseq_probe0,
           "rseq: re-registering glibc's rseq area returned %ld (%s), before READY %ld (%s)%s", r,
           r < 0 ? strerror((int)-r) : "registered now", t->rseq_probe0,
           t->rseq_probe0 < 0 ? strerror((int)-t->rseq_probe0) : "ok",
           r == 0 ? ": the thread had no rseq registration" : "");
}

/* Runs in the thread after the stop. */
static void self_check(struct thr *t)
{
    pid_t tid = gettid();
    tcheck(t, tid == t->tid, "gettid() is %d, expected %d", (int)tid, (int)t->tid);
    tcheck(t, pthread_equal(pthread_self(), t->th), "pthread_self() is %#lx, expected %#lx",
           (unsigned long)pthread_self(), (unsigned long)t->th);
    char nm[17] = {0};
    prctl(PR_GET_NAME, nm, 0, 0, 0);
    tcheck(t, strcmp(nm, t->name) == 0, "name (PR_GET_NAME) is '%s', expected '%s'", nm, t->name);
    sigset_t cur, pend;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    char d[96];
    uint64_t cb = set_bits(&cur), wb = set_bits(&t->mask);
    tcheck(t, cb == wb, "blocked mask %016llx, expected %016llx: %s", (unsigned long long)cb,
           (unsigned long long)wb, bits_diff(cb, wb, d, sizeof d));
    sigpending(&pend);
    uint64_t pb = set_bits(&pend), want_p = 1ULL << (SIG_PEND - 1);
    tcheck(t, pb == want_p, "sigpending() %016llx, expected %016llx (SIGRTMIN+2 only): %s",
           (unsigned long long)pb, (unsigned long long)want_p, bits_diff(pb, want_p, d, sizeof d));
    tcheck(t, tls_self == t, "TLS self pointer is %p, expected %p", (void *)tls_self, (void *)t);
    tcheck(t, (void *)&tls_counter == t->tls_addr, "TLS counter is at %p, expected %p", (void *)&tls_counter,
           t->tls_addr);
    for (int k = 0; k < 16; k++)
        if (!tcheck(t, tls_pattern[k] == wl_mix((uint64_t)t->idx * 1000 + (uint64_t)k),
                    "TLS pattern word %d is %016llx, expected %016llx", k, (unsigned long long)tls_pattern[k],
                    (unsigned long long)wl_mix((uint64_t)t->idx * 1000 + (uint64_t)k)))
            break;
    unsigned long fs = 0;
    syscall(SYS_arch_prctl, ARCH_GET_FS, &fs);
    tcheck(t, fs == t->fs_base, "fs_base is %#lx, expected %#lx", fs, t->fs_base);
    tcheck(t, tls_counter == counters[t->idx].v, "TLS counter %llu differs from the shared counter %llu",
           (unsigned long long)tls_counter, (unsigned long long)counters[t->idx].v);
    void *head = NULL;
    size_t len = 0;
    syscall(SYS_get_robust_list, 0, &head, &len);
    tcheck(t, head == t->robust_head && len == t->robust_len,
           "get_robust_list: head %p len %zu, expected %p len %zu", head, len, t->robust_head, t->robust_len);
    if (t->have_tid_addr) {
        int *ta = NULL;
        prctl(PR_GET_TID_ADDRESS, &ta, 0, 0, 0);
        tcheck(t, ta == t->tid_addr, "clear_child_tid (PR_GET_TID_ADDRESS) is %p, expected %p", (void *)ta,
               (void *)t->tid_addr);
    }
    rseq_check(t);

    /* the thread-directed signal queued before READY */
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, SIG_PEND);
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    int cnt = t->sig_count;
    if (tcheck(t, cnt == 1, "SIGRTMIN+2 handler ran %d times after unblocking (values %#x %#x), expected once", cnt,
               cnt > 0 ? t->sig_val[0] : 0, cnt > 1 ? t->sig_val[1] : 0)) {
        tcheck(t, t->sig_tid == tid, "SIGRTMIN+2 handler ran in tid %d, expected this thread %d",
               (int)t->sig_tid, (int)tid);
        tcheck(t, t->sig_val[0] == 0x7000 + t->idx, "SIGRTMIN+2 value %#x, expected %#x", t->sig_val[0],
               0x7000 + t->idx);
        tcheck(t, t->sig_code == SI_QUEUE && t->sig_pid == getpid(),
               "SIGRTMIN+2 si_code %d si_pid %d, expected SI_QUEUE (%d) from %d", t->sig_code, t->sig_pid,
               SI_QUEUE, (int)getpid());
    }
    bump();
}

static void *worker(void *arg)
{
    struct thr *t = arg;
    thread_setup(t);
    if (t->idx == 1)
        pthread_mutex_lock(&robust); /* held until this thread exits */
    __atomic_store_n(&t->ready, 1, __ATOMIC_RELEASE);
    if (t->role == ROLE_PROD)
        produce(t);
    else
        consume(t);
    self_check(t);
    void *ret = (void *)(uintptr_t)(0xabc000 + t->idx);
    if (t->idx == 1)
        pthread_exit(ret); /* still holding the robust mutex */
    return ret;
}

/* ---- main's checks -------------------------------------------------------------------------- */

static void copy_out(char *out, size_t cap, const char *v)
{
    size_t l = strlen(v);
    if (l >= cap)
        l = cap - 1;
    memcpy(out, v, l);
    out[l] = 0;
}

static int task_field(pid_t tid, const char *file, const char *key, char *out, size_t cap)
{
    char path[96], buf[8192];
    snprintf(path, sizeof path, "/proc/self/task/%d/%s", (int)tid, file);
    if (wl_read_file(path, buf, sizeof buf) < 0)
        return -1;
    if (!key) {
        size_t l = strcspn(buf, "\n");
        buf[l] = 0;
        copy_out(out, cap, buf);
        return 0;
    }
    size_t kl = strlen(key);
    for (char *line = buf; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        if (!strncmp(line, key, kl) && line[kl] == ':') {
            char *v = line + kl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            copy_out(out, cap, v);
            return 0;
        }
        line = nl ? nl + 1 : NULL;
    }
    return -1;
}

static void check_tasks(void)
{
    struct thr *m = &T[0];
    pid_t seen[4 * MAXT];
    int ns = 0;
    DIR *d = opendir("/proc/self/task");
    if (!tcheck(m, d != NULL, "opendir /proc/self/task: %s", strerror(errno)))
        return;
    struct dirent *e;
    while ((e = readdir(d)) && ns < 4 * MAXT)
        if (e->d_name[0] != '.')
            seen[ns++] = atoi(e->d_name);
    closedir(d);
    for (int i = 0; i <= nthr; i++) {
        int found = 0;
        for (int k = 0; k < ns; k++)
            found |= seen[k] == T[i].tid;
        tcheck(&T[i], found, "tid %d is missing from /proc/self/task (%d threads listed, %d expected)",
               (int)T[i].tid, ns, nthr + 1);
    }
    for (int k = 0; k < ns; k++) {
        int known = 0;
        for (int i = 0; i <= nthr; i++)
            known |= seen[k] == T[i].tid;
        char comm[32] = "?";
        if (!known)
            task_field(seen[k], "comm", NULL, comm, sizeof comm);
        tcheck(m, known, "/proc/self/task lists an unknown thread %d ('%s')", (int)seen[k], comm);
    }
    char v[128];
    for (int i = 0; i <= nthr; i++) {
        struct thr *t = &T[i];
        if (task_field(t->tid, "comm", NULL, v, sizeof v) != 0)
            continue; /* missing: reported above */
        tcheck(t, strcmp(v, t->name) == 0, "/proc/self/task/%d/comm is '%s', expected '%s'", (int)t->tid, v,
               t->name);
        char d2[96];
        if (task_field(t->tid, "status", "SigBlk", v, sizeof v) == 0) {
            uint64_t f = strtoull(v, NULL, 16) & ~(3ULL << 31), w = set_bits(&t->mask);
            tcheck(t, f == w, "/proc SigBlk %s, expected %016llx: %s", v, (unsigned long long)w,
                   bits_diff(f, w, d2, sizeof d2));
        }
        if (task_field(t->tid, "status", "SigPnd", v, sizeof v) == 0) {
            uint64_t f = strtoull(v, NULL, 16), w = 1ULL << (SIG_PEND - 1);
            tcheck(t, f == w, "/proc SigPnd (pending for this thread) %s, expected %016llx (SIGRTMIN+2): %s", v,
                   (unsigned long long)w, bits_diff(f, w, d2, sizeof d2));
        }
    }
    if (task_field(m->tid, "status", "ShdPnd", v, sizeof v) == 0) {
        char d2[96];
        uint64_t f = strtoull(v, NULL, 16);
        tcheck(m, f == 0, "/proc ShdPnd (process-wide pending) %s, expected none: %s", v,
               bits_diff(f, 0, d2, sizeof d2));
    }
}

static void join_all(int *joined)
{
    for (int i = 1; i <= nthr; i++) {
        struct thr *t = &T[i];
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 5;
        void *ret = NULL;
        int r = pthread_timedjoin_np(t->th, &ret, &dl);
        if (r == 0) {
            joined[i] = 1;
            tcheck(t, ret == (void *)(uintptr_t)(0xabc000 + i), "pthread_join returned %p, expected %#x", ret,
                   0xabc000 + i);
            continue;
        }
        char st[64] = "", sc[64] = "";
        if (task_field(t->tid, "stat", NULL, st, sizeof st) == 0) {
            task_field(t->tid, "syscall", NULL, sc, sizeof sc);
            char *p = strrchr(st, ')');
            tcheck(t, 0, "did not finish within 5 s of the stop (state %c, /proc syscall: %s)",
                   p && p[1] ? p[2] : '?', sc);
        } else {
            tcheck(t, 0,
                   "the thread is gone from /proc but pthread_join timed out (%s): its clear_child_tid was not "
                   "cleared and woken at exit",
                   strerror(r));
        }
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    if (argc > 2 && argv[2][0])
        nthr = atoi(argv[2]);
    if (nthr < 1 || nthr > MAXT)
        wl_setup_fail("nthreads must be in [1, %d], got %s", MAXT, argv[2]);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = term_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0)
        wl_setup_fail("sigaction(SIGTERM): %s", strerror(errno));
    sa.sa_sigaction = pend_handler;
    if (sigaction(SIG_PEND, &sa, NULL) != 0)
        wl_setup_fail("sigaction(SIGRTMIN+2): %s", strerror(errno));

    pthread_mutexattr_t ma;
    pthread_mutexattr_init(&ma);
    if (pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST) != 0 || pthread_mutex_init(&robust, &ma) != 0)
        wl_setup_fail("robust mutex: %s", strerror(errno));

    /* main thread */
    struct thr *m = &T[0];
    m->idx = 0;
    m->role = ROLE_MAIN;
    m->th = pthread_self();
    snprintf(m->name, sizeof m->name, "thr-main");
    sigemptyset(&m->mask);
    sigaddset(&m->mask, SIGHUP);
    sigaddset(&m->mask, SIGTERM);
    sigaddset(&m->mask, SIG_PEND);
    thread_setup(m); /* workers start with main's mask, then set their own */

    for (int i = 1; i <= nthr; i++) {
        struct thr *t = &T[i];
        t->idx = i;
        t->role = i % 2 ? ROLE_PROD : ROLE_CONS;
        if (t->role == ROLE_PROD)
            nprod++;
        else
            ncons++;
        snprintf(t->name, sizeof t->name, "thr-w%d-%s", i & 127, t->role == ROLE_PROD ? "prod" : "cons");
        sigemptyset(&t->mask);
        sigaddset(&t->mask, SIG_PEND);
        if (i != nthr)
            sigaddset(&t->mask, SIGTERM);
        if (i & 1)
            sigaddset(&t->mask, SIGUSR1);
        if (i & 2)
            sigaddset(&t->mask, SIGUSR2);
        if (i & 4)
            sigaddset(&t->mask, SIGWINCH);
        sigaddset(&t->mask, SIGRTMIN + 8 + (i - 1) % 20);
        int r = pthread_create(&t->th, NULL, worker, t);
        if (r != 0)
            wl_setup_fail("pthread_create %d: %s", i, strerror(r));
    }
    int64_t deadline = wl_now_ns() + 5 * SEC;
    for (int i = 1; i <= nthr; i++)
        while (!__atomic_load_n(&T[i].ready, __ATOMIC_ACQUIRE)) {
            if (wl_now_ns() > deadline)
                wl_setup_fail("thread %d did not start within 5 s", i);
            usleep(1000);
        }
    for (int i = 0; i <= nthr; i++) {
        int r = pthread_sigqueue(T[i].th, SIG_PEND, (union sigval){.sival_int = 0x7000 + i});
        if (r != 0)
            wl_setup_fail("pthread_sigqueue to thread %d: %s", i, strerror(r));
    }
    for (int i = 0; i <= nthr; i++) {
        char v[64];
        if (task_field(T[i].tid, "status", "SigPnd", v, sizeof v) != 0 ||
            strtoull(v, NULL, 16) != 1ULL << (SIG_PEND - 1))
            wl_setup_fail("thread %d (tid %d): SigPnd is %s after pthread_sigqueue, expected only SIGRTMIN+2", i,
                          (int)T[i].tid, v);
        wl_dbg("thread %d tid=%d name=%s mask=%016llx robust=%p tid_addr=%p rseq_probe=%ld", i, (int)T[i].tid,
               T[i].name, (unsigned long long)set_bits(&T[i].mask), T[i].robust_head, (void *)T[i].tid_addr,
               T[i].rseq_probe0);
    }
    if (__rseq_size == 0)
        wl_dbg("glibc did not register rseq: rseq checks skipped");
    pthread_mutex_lock(&Q.m);
    uint64_t popped_at_ready = Q.popped;
    pthread_mutex_unlock(&Q.m);
    for (int i = 0; i <= nthr; i++)
        T[i].counter_at_ready = counters[i].v;
    wl_ready();

    while (!term_word) {
        struct timespec ts = {1, 0};
        syscall(SYS_futex, &term_word, FUTEX_WAIT_PRIVATE, 0, &ts, NULL, 0);
        bump();
    }

    /* The SIGTERM thread may still be inside its handler (SIGTERM blocked there): wait until it
     * returned, i.e. until /proc shows SIGTERM unblocked in it again (at most 1 s). */
    for (int64_t until = wl_now_ns() + SEC; wl_now_ns() < until; usleep(1000)) {
        char v[64];
        if (task_field(T[nthr].tid, "status", "SigBlk", v, sizeof v) != 0 ||
            !(strtoull(v, NULL, 16) & (1ULL << (SIGTERM - 1))))
            break;
    }
    /* Everything that needs every thread alive and in its loop. */
    check_tasks();
    tcheck(m, term_tid == T[nthr].tid,
           "SIGTERM was handled by tid %d, expected '%s' (tid %d), the only thread that does not block it",
           (int)term_tid, T[nthr].name, (int)T[nthr].tid);
    int owner = robust.__data.__lock;
    tcheck(&T[1], (owner & FUTEX_TID_MASK) == T[1].tid && !(owner & FUTEX_OWNER_DIED),
           "robust mutex word %#x, expected held by tid %d", owner, (int)T[1].tid);

    pthread_mutex_lock(&Q.m);
    Q.stop = 1;
    pthread_cond_broadcast(&Q.not_empty);
    pthread_cond_broadcast(&Q.not_full);
    pthread_mutex_unlock(&Q.m);
    if (ncons == 0)
        consume(m);
    int joined[MAXT + 1] = {0};
    join_all(joined);
    self_check(m);

    for (int i = 0; i <= nthr; i++)
        tcheck(&T[i], counters[i].v > T[i].counter_at_ready, "counter did not advance: %llu at READY, %llu now",
               (unsigned long long)T[i].counter_at_ready, (unsigned long long)counters[i].v);
    int all_joined = 1;
    for (int i = 1; i <= nthr; i++)
        all_joined &= joined[i];
    if (all_joined) {
        tcheck(m, Q.count == 0 && Q.pushed == Q.popped && Q.producers_done == nprod,
               "queue: %u items left, %llu pushed, %llu popped, %d of %d producers done", Q.count,
               (unsigned long long)Q.pushed, (unsigned long long)Q.popped, Q.producers_done, nprod);
        tcheck(m, Q.popped > popped_at_ready, "queue: nothing popped since READY (%llu)",
               (unsigned long long)Q.popped);
        for (int i = 1; i <= nthr; i++)
            if (T[i].role == ROLE_PROD)
                tcheck(m, Q.last_pseq[i] == Q.pushed_by[i], "queue: producer %d pushed %llu items, %llu popped", i,
                       (unsigned long long)Q.pushed_by[i], (unsigned long long)Q.last_pseq[i]);
    }
    if (joined[1]) {
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 3;
        int r = pthread_mutex_timedlock(&robust, &dl);
        tcheck(&T[1], r == EOWNERDEAD,
               "robust mutex: '%s' exited holding it, but locking it returned %s, expected EOWNERDEAD%s", T[1].name,
               r ? strerror(r) : "0 (success)",
               r == ETIMEDOUT ? ": the kernel did not release it at the thread's exit (robust list lost)" : "");
        if (r == EOWNERDEAD)
            pthread_mutex_consistent(&robust);
        if (r == 0 || r == EOWNERDEAD)
            pthread_mutex_unlock(&robust);
    }

    struct thr *first = NULL;
    for (int i = 0; i <= nthr; i++)
        if (T[i].failed && (!first || T[i].failed < first->failed))
            first = &T[i];
    if (first)
        wl_fail_at(first->ffile, first->fline, "thread '%s' (tid %d%s): %s", first->name, (int)first->tid,
                   first->idx == 0 ? ", main" : "", first->fmsg);
    wl_finish();
}
