/* wl_tree.c — helpers for multi-process workloads (see wl_tree.h). */
#include "wl_tree.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct wt_role wt_roles[WT_MAX_ROLES];
int wt_nroles;
int wt_self;
int wt_report_wfd = -1;
int wt_report_rfd = -1;

static char root_result[4000];

/* ---- failures --------------------------------------------------------------- */

static int my_failed;
static char my_file[32];
static int my_line;
static char my_msg[WT_MSG];

static void sanitize(char *s)
{
    for (; *s; s++)
        if (*s == '\n' || *s == '\r')
            *s = ' ';
}

static void copy_base(char *dst, size_t cap, const char *file)
{
    const char *b = strrchr(file, '/');
    snprintf(dst, cap, "%s", b ? b + 1 : file);
}

void wt_fail_at(const char *file, int line, const char *fmt, ...)
{
    if (my_failed)
        return;
    my_failed = 1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(my_msg, sizeof my_msg, fmt, ap);
    va_end(ap);
    sanitize(my_msg);
    copy_base(my_file, sizeof my_file, file);
    my_line = line;
    wl_dbg("%s: FAIL %s [%s:%d]", wt_roles[wt_self].name, my_msg, my_file, my_line);
}

int wt_failed(void)
{
    return my_failed;
}

/* ---- records on the report pipe --------------------------------------------- */

#define WT_MAGIC 0x46745274u /* "tRtF" */
enum { REC_SETUP = 1, REC_VERDICT = 2 };

struct wt_rec {
    uint32_t magic;
    uint16_t kind, role;
    int32_t pid, ppid, pgid, sid;
    int32_t ok, line, extra, pad;
    char file[32];
    char msg[1024 - 72];
};
_Static_assert(sizeof(struct wt_rec) == 1024, "record size");
_Static_assert(sizeof(struct wt_rec) <= 4096, "records must be atomic pipe writes");

static int write_all(int fd, const void *p, size_t len)
{
    const char *c = p;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, c + off, len - off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        off += (size_t)w;
    }
    return 0;
}

static void send_rec(struct wt_rec *r)
{
    r->magic = WT_MAGIC;
    r->role = (uint16_t)wt_self;
    if (wt_report_wfd < 0)
        return;
    int e = write_all(wt_report_wfd, r, sizeof *r);
    if (e)
        wl_dbg("%s: report write failed: %s", wt_roles[wt_self].name, strerror(-e));
}

/* ---- roles --------------------------------------------------------------------- */

void wt_root_init(const char *root_name)
{
    snprintf(root_result, sizeof root_result, "%.3999s", wl_result_path);
    wt_nroles = 0;
    wt_self = wt_add_role(root_name, -1, 0, 0);
    struct wt_role *r = &wt_roles[0];
    r->pid = getpid();
    r->ppid = getppid();
    r->pgid = getpgid(0);
    r->sid = getsid(0);
    r->have_setup = 1;
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        wl_setup_fail("report pipe: %s", strerror(errno));
    wt_report_rfd = p[0];
    wt_report_wfd = p[1];
    if (fcntl(p[0], F_SETFL, O_NONBLOCK) != 0)
        wl_setup_fail("report pipe O_NONBLOCK: %s", strerror(errno));
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_IGN;
    sigaction(SIGPIPE, &sa, NULL);
}

int wt_add_role(const char *name, int parent, int reports, int dynamic)
{
    if (wt_nroles >= WT_MAX_ROLES)
        wl_setup_fail("too many processes (at most %d)", WT_MAX_ROLES);
    int i = wt_nroles++;
    struct wt_role *r = &wt_roles[i];
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    r->parent = parent;
    r->reports = reports;
    r->dynamic = dynamic;
    r->exit_code = 64 + i;
    r->aux = -1;
    return i;
}

static void crash_path(int role, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s.crash.%d", root_result, role);
}

pid_t wt_fork(int role)
{
    pid_t pid = fork();
    if (pid == 0) {
        wt_self = role;
        my_failed = 0;
        my_msg[0] = 0;
        wt_roles[role].pid = getpid();
        crash_path(role, wl_result_path, sizeof wl_result_path);
        if (wt_report_rfd >= 0) {
            close(wt_report_rfd);
            wt_report_rfd = -1;
        }
    } else if (pid > 0) {
        wt_roles[role].pid = pid;
    }
    return pid;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return x < y ? -1 : x > y;
}

void wt_keep_fds(const int *keep, int n)
{
    int k[64], m = 0;
    for (int i = 0; i < n && m < 63; i++)
        if (keep[i] > 2)
            k[m++] = keep[i];
    if (wt_report_wfd > 2)
        k[m++] = wt_report_wfd;
    qsort(k, (size_t)m, sizeof k[0], cmp_int);
    unsigned from = 3;
    for (int i = 0; i < m; i++) {
        if ((unsigned)k[i] > from)
            close_range(from, (unsigned)k[i] - 1, 0);
        if ((unsigned)k[i] + 1 > from)
            from = (unsigned)k[i] + 1;
    }
    close_range(from, ~0U, 0);
}

void wt_send_setup(void)
{
    struct wt_role *me = &wt_roles[wt_self];
    me->pid = getpid();
    me->ppid = getppid();
    me->pgid = getpgid(0);
    me->sid = getsid(0);
    me->have_setup = 1;
    struct wt_rec r;
    memset(&r, 0, sizeof r);
    r.kind = REC_SETUP;
    r.pid = me->pid;
    r.ppid = me->ppid;
    r.pgid = me->pgid;
    r.sid = me->sid;
    r.extra = me->aux;
    send_rec(&r);
}

static const char *role_of_pid(pid_t pid)
{
    for (int i = 0; i < wt_nroles; i++)
        if (wt_roles[i].pid == pid && pid > 0)
            return wt_roles[i].name;
    return NULL;
}

static void check_group(const char *what, pid_t now, pid_t rec, pid_t root_rec, pid_t root_now)
{
    struct wt_role *root = &wt_roles[0];
    /* Inside the tree: the recorded value is a tree pid (a leader we know), or any value other
     * than the root's own (outside) one. Outside: the root's group/session, not ours to fix. */
    int outside = rec == root_rec && root_rec != root->pid;
    if (!outside) {
        const char *who = role_of_pid(rec);
        pcheck(now == rec, "%s is %d, expected %d%s%s%s", what, (int)now, (int)rec, who ? " ('" : "",
               who ? who : "", who ? "')" : "");
    } else {
        pcheck(now == root_now,
               "%s is %d, expected the root's (recorded %d, outside the tree; the root's is now %d)",
               what, (int)now, (int)rec, (int)root_now);
    }
}

void wt_check_ids(void)
{
    struct wt_role *me = &wt_roles[wt_self];
    pid_t pid = getpid();
    pcheck(pid == me->pid, "getpid() is %d, expected %d", (int)pid, (int)me->pid);
    if (wt_self == 0)
        return;
    pid_t pp = getppid();
    const char *pn = role_of_pid(me->ppid);
    pcheck(pp == me->ppid, "getppid() is %d, expected %d%s%s%s", (int)pp, (int)me->ppid,
           pn ? " ('" : "", pn ? pn : "", pn ? "')" : "");
    pid_t root = wt_roles[0].pid;
    check_group("getpgid(0)", getpgid(0), me->pgid, wt_roles[0].pgid, getpgid(root));
    check_group("getsid(0)", getsid(0), me->sid, wt_roles[0].sid, getsid(root));
}

int wt_parent_gone(void)
{
    struct wt_role *me = &wt_roles[wt_self];
    pid_t pp = getppid();
    if (pp == me->ppid)
        return 0;
    const char *pn = role_of_pid(me->ppid);
    pcheck(0, "parent '%s' (pid %d) vanished before SIGTERM: now a child of pid %d",
           pn ? pn : "?", (int)me->ppid, (int)pp);
    return 1;
}

void wt_verdict_exit(pid_t extra)
{
    struct wt_rec r;
    memset(&r, 0, sizeof r);
    r.kind = REC_VERDICT;
    r.pid = getpid();
    r.ppid = getppid();
    r.ok = !my_failed;
    r.extra = extra;
    if (my_failed) {
        snprintf(r.file, sizeof r.file, "%s", my_file);
        r.line = my_line;
        snprintf(r.msg, sizeof r.msg, "%s", my_msg);
    }
    send_rec(&r);
    wl_dbg("%s: verdict %s, exit %d", wt_roles[wt_self].name, my_failed ? "FAIL" : "PASS",
           wt_roles[wt_self].exit_code);
    _exit(wt_roles[wt_self].exit_code);
}

/* ---- root side --------------------------------------------------------------------- */

static unsigned char rbuf[sizeof(struct wt_rec)];
static size_t rhave;

static void handle_rec(const struct wt_rec *r)
{
    if (r->magic != WT_MAGIC || r->role >= wt_nroles || r->role == 0) {
        pcheck(0, "garbage on the report pipe (magic %#x role %u kind %u)", r->magic, r->role, r->kind);
        return;
    }
    struct wt_role *w = &wt_roles[r->role];
    if (r->kind == REC_SETUP) {
        pcheck(!w->have_setup, "process '%s' sent SETUP twice (pids %d and %d)", w->name, (int)w->pid,
               (int)r->pid);
        w->pid = r->pid;
        w->ppid = r->ppid;
        w->pgid = r->pgid;
        w->sid = r->sid;
        w->aux = r->extra;
        w->have_setup = 1;
    } else if (r->kind == REC_VERDICT) {
        if (w->have_verdict) {
            pcheck(0, "process '%s' sent two verdicts (pids %d and %d)", w->name, (int)w->pid, (int)r->pid);
            return;
        }
        if (w->pid == 0)
            w->pid = r->pid;
        w->have_verdict = 1;
        w->verdict_ok = r->ok;
        w->extra = r->extra;
        snprintf(w->vfile, sizeof w->vfile, "%.31s", r->file);
        w->vline = r->line;
        snprintf(w->vmsg, sizeof w->vmsg, "%.*s", (int)sizeof w->vmsg - 1, r->msg);
        if (r->extra > 0)
            for (int i = 1; i < wt_nroles; i++)
                if (wt_roles[i].dynamic && wt_roles[i].parent == r->role && wt_roles[i].pid == 0)
                    wt_roles[i].pid = r->extra;
        wl_dbg("verdict from '%s' (pid %d): %s", w->name, (int)r->pid, r->ok ? "PASS" : r->msg);
    } else {
        pcheck(0, "unknown record kind %u from '%s' on the report pipe", r->kind, w->name);
    }
}

void wt_root_drain(void)
{
    if (wt_report_rfd < 0)
        return;
    for (;;) {
        ssize_t n = read(wt_report_rfd, rbuf + rhave, sizeof rbuf - rhave);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                pcheck(0, "reading the report pipe: %s", strerror(errno));
            return;
        }
        if (n == 0)
            return; /* cannot happen: the root holds a write end */
        rhave += (size_t)n;
        if (rhave == sizeof rbuf) {
            struct wt_rec r;
            memcpy(&r, rbuf, sizeof r);
            rhave = 0;
            handle_rec(&r);
        }
    }
}

static int read_crash(int role, char *buf, size_t cap)
{
    char path[4200];
    crash_path(role, path, sizeof path);
    if (wl_read_file(path, buf, cap) <= 0)
        return 0;
    sanitize(buf);
    size_t l = strlen(buf);
    while (l && buf[l - 1] == ' ')
        buf[--l] = 0;
    return 1;
}

void wt_root_wait_setup(double timeout_s)
{
    int64_t deadline = wl_now_ns() + (int64_t)(timeout_s * 1e9);
    for (;;) {
        wt_root_drain();
        if (my_failed)
            wl_setup_fail("%s [%s:%d]", my_msg, my_file, my_line);
        int missing = -1;
        for (int i = 1; i < wt_nroles; i++) {
            struct wt_role *r = &wt_roles[i];
            if (!r->reports || r->dynamic || r->have_setup)
                continue;
            char crash[1024];
            if (read_crash(i, crash, sizeof crash))
                wl_setup_fail("process '%s' (pid %d): %s", r->name, (int)r->pid, crash);
            if (r->pid > 0 && wt_pid_dead(r->pid)) {
                wt_root_drain();
                if (!r->have_setup)
                    wl_setup_fail("process '%s' (pid %d) died during setup", r->name, (int)r->pid);
            }
            if (missing < 0)
                missing = i;
        }
        if (missing < 0)
            return;
        if (wl_now_ns() > deadline)
            wl_setup_fail("process '%s' (pid %d) did not finish its setup within %.0f s",
                          wt_roles[missing].name, (int)wt_roles[missing].pid, timeout_s);
        wt_sleep_ms(2);
    }
}

/* Whether the root's own first failure came before it collected the verdicts (its own state) or
 * after (checks of the whole tree's results, e.g. a shared file, which the children's failures explain). */
static int root_failed_early = -1;

void wt_root_collect(double timeout_s)
{
    root_failed_early = my_failed;
    int64_t deadline = wl_now_ns() + (int64_t)(timeout_s * 1e9);
    for (;;) {
        wt_root_drain();
        int waiting = 0;
        for (int i = 1; i < wt_nroles; i++) {
            struct wt_role *r = &wt_roles[i];
            if (!r->reports || r->have_verdict)
                continue;
            if (r->pid > 0) {
                if (wt_pid_dead(r->pid))
                    continue; /* its records, if any, were written before it died: drained above */
            } else if (r->dynamic) {
                struct wt_role *p = &wt_roles[r->parent];
                if (p->have_verdict ? p->extra <= 0 : (p->pid > 0 && wt_pid_dead(p->pid)))
                    continue; /* its creator never created it */
            }
            waiting++;
        }
        if (!waiting)
            break;
        if (wl_now_ns() > deadline)
            break;
        wt_sleep_ms(2);
    }
    wt_root_drain();
}

void wt_root_finish(void)
{
    char desc[1100];
    for (int i = 1; i < wt_nroles; i++) {
        struct wt_role *r = &wt_roles[i];
        if (!r->reports || r->have_verdict)
            continue;
        size_t n = 0;
        char crash[1024];
        if (r->pid <= 0) {
            n += (size_t)snprintf(desc + n, sizeof desc - n,
                                  "process '%s' never appeared (no verdict after SIGTERM)", r->name);
        } else if (wt_pid_dead(r->pid)) {
            n += (size_t)snprintf(desc + n, sizeof desc - n, "process '%s' vanished (pid %d): no verdict",
                                  r->name, (int)r->pid);
        } else {
            char st[512], state = '?';
            snprintf(st, sizeof st, "/proc/%d/stat", (int)r->pid);
            if (wl_read_file(st, st, sizeof st) > 0) {
                char *p = strrchr(st, ')');
                if (p && p[1])
                    state = p[2];
            }
            n += (size_t)snprintf(desc + n, sizeof desc - n,
                                  "process '%s' sent no verdict (pid %d, still alive, state %c) after SIGTERM",
                                  r->name, (int)r->pid, state);
        }
        if (n < sizeof desc && r->reaped) {
            char ws[64];
            n += (size_t)snprintf(desc + n, sizeof desc - n, "; the root reaped it: %s",
                                  wt_wstatus_str(r->wstatus, ws, sizeof ws));
        }
        if (n < sizeof desc && read_crash(i, crash, sizeof crash))
            n += (size_t)snprintf(desc + n, sizeof desc - n, "; it wrote: %s", crash);
        struct wt_role *p = r->parent >= 0 ? &wt_roles[r->parent] : NULL;
        if (n < sizeof desc && p && r->parent > 0 && p->have_verdict && !p->verdict_ok)
            n += (size_t)snprintf(desc + n, sizeof desc - n, "; its parent '%s' reports: %s [%s:%d]",
                                  p->name, p->vmsg, p->vfile, p->vline);
        wl_fail_at(__FILE__, __LINE__, "%s", desc);
        break;
    }
    if (my_failed && root_failed_early != 0)
        wl_fail_at(my_file, my_line, "%s (pid %d): %s", wt_roles[0].name, (int)getpid(), my_msg);
    for (int i = 1; i < wt_nroles; i++) {
        struct wt_role *r = &wt_roles[i];
        if (r->have_verdict && !r->verdict_ok)
            wl_fail_at(r->vfile, r->vline, "process '%s' (pid %d): %s", r->name, (int)r->pid, r->vmsg);
    }
    if (my_failed)
        wl_fail_at(my_file, my_line, "%s (pid %d): %s", wt_roles[0].name, (int)getpid(), my_msg);
    wl_finish();
}

/* ---- processes ------------------------------------------------------------------------ */

int wt_pid_dead(pid_t pid)
{
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (wl_read_file(path, buf, sizeof buf) <= 0)
        return 1;
    char *p = strrchr(buf, ')');
    if (!p || !p[1])
        return 1;
    return p[2] == 'Z' || p[2] == 'X';
}

const char *wt_wstatus_str(int st, char *buf, size_t cap)
{
    if (WIFEXITED(st))
        snprintf(buf, cap, "exited with %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(buf, cap, "killed by SIG%s (%d)%s", sigabbrev_np(WTERMSIG(st)) ? sigabbrev_np(WTERMSIG(st)) : "?",
                 WTERMSIG(st), WCOREDUMP(st) ? ", core dumped" : "");
    else
        snprintf(buf, cap, "wait status %#x", st);
    return buf;
}

void wt_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

int wt_reap(pid_t pid, int role, int64_t deadline_ns)
{
    struct wt_role *r = &wt_roles[role];
    int st = 0;
    for (;;) {
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid)
            break;
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return pcheck(0, "waitpid(%d) for child '%s': %s", (int)pid, r->name, strerror(errno));
        if (wl_now_ns() > deadline_ns)
            return pcheck(0, "child '%s' (pid %d) did not exit after its SIGTERM check", r->name, (int)pid);
        if (wt_report_rfd >= 0)
            wt_root_drain(); /* keep the report pipe from filling while we wait */
        wt_sleep_ms(2);
    }
    r->reaped = 1;
    r->wstatus = st;
    char ws[64];
    return pcheck(WIFEXITED(st) && WEXITSTATUS(st) == r->exit_code,
                  "child '%s' (pid %d) %s, expected exit code %d", r->name, (int)pid,
                  wt_wstatus_str(st, ws, sizeof ws), r->exit_code);
}

/* ---- streams ------------------------------------------------------------------------------ */

uint64_t wt_check_word(uint64_t seq, int salt)
{
    return wl_mix(seq * 0x9e3779b97f4a7c15ULL ^ ((uint64_t)(unsigned)salt << 48) ^ 0x5eb0u);
}

int wt_write_rec(int fd, uint64_t a, uint64_t b, int eintr_ok)
{
    uint64_t rec[2] = {a, b};
    const char *p = (const char *)rec;
    size_t off = 0;
    while (off < sizeof rec) {
        ssize_t w = write(fd, p + off, sizeof rec - off);
        if (w < 0) {
            if (errno == EINTR) {
                if (off == 0 && eintr_ok)
                    return 0;
                continue;
            }
            return -errno;
        }
        off += (size_t)w;
    }
    return 1;
}

int wt_send_tick(struct wt_sender *s)
{
    int r = wt_write_rec(s->fd, s->seq + 1, wt_check_word(s->seq + 1, s->salt), 1);
    if (r == 1)
        s->seq++;
    return r;
}

void wt_send_close(struct wt_sender *s, uint64_t end_value, const char *to_name)
{
    if (s->fd < 0)
        return;
    int r = wt_write_rec(s->fd, s->seq + 1, wt_check_word(s->seq + 1, s->salt), 0);
    if (r == 1) {
        s->seq++;
        r = wt_write_rec(s->fd, WT_END_BIT | s->seq, end_value, 0);
    }
    pcheck(r == 1, "stream to %s: write after SIGTERM: %s", to_name, strerror(-r));
    close(s->fd);
    s->fd = -1;
}

void wt_stream_init(struct wt_stream *s, int fd, int salt, const char *from)
{
    memset(s, 0, sizeof *s);
    s->fd = fd;
    s->salt = salt;
    s->fwd_fd = -1;
    snprintf(s->from, sizeof s->from, "%s", from);
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0)
        wl_setup_fail("stream %s: O_NONBLOCK: %s", from, strerror(errno));
}

static void stream_record(struct wt_stream *s, uint64_t a, uint64_t b)
{
    if (s->bad)
        return;
    s->nrec++;
    if (s->ended) {
        s->bad = 1;
        pcheck(0, "stream %s: record %#llx after END (last seq %llu)", s->from, (unsigned long long)a,
               (unsigned long long)s->last);
        return;
    }
    if (a & WT_END_BIT) {
        uint64_t seq = a & ~WT_END_BIT;
        if (!pcheck(seq == s->last, "stream %s: END says the last seq is %llu but the last received is %llu",
                    s->from, (unsigned long long)seq, (unsigned long long)s->last)) {
            s->bad = 1;
            return;
        }
        s->ended = 1;
        s->end_value = b;
    } else {
        if (a != s->last + 1) {
            s->bad = 1;
            if (a <= s->last)
                pcheck(0, "stream %s: expected seq %llu, found %llu (duplicate or out of order)", s->from,
                       (unsigned long long)s->last + 1, (unsigned long long)a);
            else
                pcheck(0, "stream %s: expected seq %llu, found %llu (gap: %llu records lost)", s->from,
                       (unsigned long long)s->last + 1, (unsigned long long)a,
                       (unsigned long long)(a - s->last - 1));
            return;
        }
        uint64_t want = wt_check_word(a, s->salt);
        if (!pcheck(b == want, "stream %s: seq %llu carries check word %016llx, expected %016llx", s->from,
                    (unsigned long long)a, (unsigned long long)b, (unsigned long long)want)) {
            s->bad = 1;
            return;
        }
        s->last = a;
    }
    if (s->fwd_fd >= 0) {
        int r = wt_write_rec(s->fwd_fd, a, b, 0);
        if (!pcheck(r == 1, "forwarding seq %llu (stream %s): %s", (unsigned long long)(a & ~WT_END_BIT),
                    s->from, strerror(-r)))
            s->bad = 1;
    }
}

int wt_stream_pump(struct wt_stream *s)
{
    if (s->eof)
        return 0;
    unsigned char buf[4096];
    for (;;) {
        ssize_t n = read(s->fd, buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 1;
            pcheck(0, "stream %s: read: %s", s->from, strerror(errno));
            s->eof = s->bad = 1;
            return 0;
        }
        if (n == 0) {
            s->eof = 1;
            if (!s->bad) {
                if (s->npart)
                    pcheck(0, "stream %s: EOF inside a record (%d stray bytes after seq %llu)", s->from, s->npart,
                           (unsigned long long)s->last);
                else
                    pcheck(s->ended, "stream %s: EOF without END after seq %llu (writer gone)", s->from,
                           (unsigned long long)s->last);
            }
            return 0;
        }
        for (ssize_t i = 0; i < n; i++) {
            s->part[s->npart++] = buf[i];
            if (s->npart == 16) {
                uint64_t a, b;
                memcpy(&a, s->part, 8);
                memcpy(&b, s->part + 8, 8);
                s->npart = 0;
                stream_record(s, a, b);
            }
        }
    }
}

void wt_stream_final_check(struct wt_stream *s)
{
    if (s->bad || !s->eof || !s->ended)
        return; /* already reported */
    pcheck(s->last > s->last_at_setup, "stream %s: did not advance: seq %llu at setup, %llu at the end",
           s->from, (unsigned long long)s->last_at_setup, (unsigned long long)s->last);
}

void wt_streams_drain(struct wt_stream *s, int n, int64_t deadline_ns)
{
    struct pollfd pf[WT_MAX_ROLES];
    for (;;) {
        int open = 0;
        for (int i = 0; i < n; i++)
            if (!s[i].eof) {
                wt_stream_pump(&s[i]);
                if (!s[i].eof)
                    pf[open++] = (struct pollfd){s[i].fd, POLLIN, 0};
            }
        if (wt_report_rfd >= 0)
            wt_root_drain();
        if (!open)
            return;
        if (wl_now_ns() > deadline_ns) {
            for (int i = 0; i < n; i++)
                if (!s[i].eof) {
                    pcheck(0, "stream %s: still open (no END/EOF) long after SIGTERM, last seq %llu%s", s[i].from,
                           (unsigned long long)s[i].last, s[i].ended ? " (END seen)" : "");
                    break;
                }
            return;
        }
        poll(pf, (nfds_t)open, 10);
    }
}
