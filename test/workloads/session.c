/*
 * session — a session with process groups, a pipeline and reparented orphans.
 *
 *   session <result-file>
 *
 * Setup (role names as the verdict uses them):
 *   root          PR_SET_CHILD_SUBREAPER; stays in the harness's session
 *   └ leader      setsid(): session leader, its own group
 *     ├ pipe 1    setpgid(0, 0): leader of the pipeline group; stdout -> pipe 2
 *     ├ pipe 2    setpgid(0, pipe 1); stdin <- pipe 1, stdout -> pipe 3
 *     ├ pipe 3    setpgid(0, pipe 1); stdin <- pipe 2
 *     ├ loner     setpgid(0, 0): a group of one; streams to the leader
 *     └ middle    forks 'orphan', then exits with 77 (the leader reaps it
 *                 and checks 77); 'orphan' (leader's session and group) is
 *                 reparented to the root, the subreaper, and streams to it
 *   (the parent of every process is also what its own setpgid() was backed by,
 *   as a shell does). Like a shell pipeline, pipe 1 produces a sequence on its
 *   stdout, pipe 2 forwards every record unchanged, pipe 3 consumes it. The
 *   leader streams to the root too. Every process reports SETUP (wl_tree.h);
 *   READY when all have.
 * At SIGTERM: the root forwards it to leader and orphan, the leader to its
 * four children.
 *   - every process: getpid/getppid/getpgid/getsid as recorded (the
 *     pipeline's group is pipe 1's pid, the loner's its own, leader's and
 *     orphan's the leader's pid; every sid is the leader's pid);
 *   - root: still a child subreaper; from outside (getpgid(pid),
 *     getsid(pid)) every process is in its recorded group and session;
 *   - leader: still session and group leader; its children's groups seen
 *     from outside; the loner's stream; reaps its four children (exit 64 +
 *     role index);
 *   - pipe 2 checks the stream from pipe 1 and forwards it, pipe 3 checks it
 *     again after two pipes (gap-free, no duplicates, in order, END, EOF);
 *   - loner: still its group's leader; it forks 'late orphan' and exits; the
 *     late orphan must be reparented to the root (the subreaper property
 *     works after a restore), keeps the loner's group (whose leader is now
 *     gone) and the session;
 *   - root: the streams from leader and orphan; reaps leader, orphan and the
 *     late orphan (exit codes); one verdict naming the process and the check.
 *
 * Debug: one line per process (role, pid, ppid, pgid, sid).
 */
#include "wl_tree.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

enum { R_ROOT, R_LEADER, R_P1, R_P2, R_P3, R_LONER, R_MIDDLE, R_ORPHAN, R_LATE, R_COUNT };
#define MIDDLE_EXIT 77
#define SEC 1000000000LL

static pid_t pidof(int role)
{
    return wt_roles[role].pid;
}

static void child_fail(const char *what, int role)
{
    wl_setup_fail("%s for '%s': %s", what, wt_roles[role].name, strerror(errno));
}

/* ---- leaf-like producers: one record per ms until SIGTERM (or the parent vanished) ---- */

static void produce(struct wt_sender *s, const char *to)
{
    while (!wl_term) {
        poll(NULL, 0, 1);
        if (wl_term)
            break;
        int r = wt_send_tick(s);
        if (r < 0) {
            pcheck(0, "stream to %s: write: %s", to, strerror(-r));
            break;
        }
        if (wt_parent_gone())
            break;
    }
}

static void pipe1_main(void) __attribute__((noreturn));
static void pipe1_main(void)
{
    wt_send_setup();
    struct wt_sender s = {1, R_P1, 0};
    produce(&s, "'pipe 2' (stdout)");
    wt_check_ids();
    wt_send_close(&s, 0, "'pipe 2' (stdout)");
    wt_verdict_exit(0);
}

/* pipe 2 and pipe 3: consume stdin (pipe 2 forwards it to stdout) until EOF after SIGTERM. */
static void pipe_reader_main(int forward) __attribute__((noreturn));
static void pipe_reader_main(int forward)
{
    wt_send_setup();
    struct wt_stream in;
    char from[96];
    snprintf(from, sizeof from, "from 'pipe 1' (pid %d)%s on stdin", (int)pidof(R_P1), forward ? "" : " via 'pipe 2'");
    wt_stream_init(&in, 0, R_P1, from);
    in.fwd_fd = forward ? 1 : -1;
    int64_t t0 = 0;
    int gone = 0;
    for (;;) {
        struct pollfd pf = {0, POLLIN, 0};
        poll(&pf, 1, 10);
        if (!wt_stream_pump(&in))
            break;
        if (wl_term && !t0) {
            t0 = wl_now_ns();
            wt_check_ids();
        }
        if (!t0 && !gone && wt_parent_gone())
            gone = 1;
        if ((t0 && wl_now_ns() > t0 + 3 * SEC) || (gone && !wl_term))
            break;
    }
    if (!t0)
        wt_check_ids();
    if (!in.eof)
        pcheck(0, "stream %s: no EOF within 3 s of SIGTERM (last seq %llu)", in.from, (unsigned long long)in.last);
    wt_stream_final_check(&in);
    if (forward)
        close(1);
    wt_verdict_exit(0);
}

static void late_orphan_main(void) __attribute__((noreturn));
static void late_orphan_main(void)
{
    pid_t loner = pidof(R_LONER), root = pidof(R_ROOT), leader = pidof(R_LEADER);
    int64_t deadline = wl_now_ns() + 3 * SEC;
    while (getppid() == loner && wl_now_ns() < deadline)
        wt_sleep_ms(1);
    pid_t pp = getppid();
    if (pcheck(pp != loner, "its parent 'loner' (pid %d) did not exit within 3 s", (int)loner))
        pcheck(pp == root,
               "after its parent 'loner' exited it was reparented to pid %d, expected the root (pid %d), a child "
               "subreaper: the subreaper property did not survive",
               (int)pp, (int)root);
    pcheck(getpgid(0) == loner, "getpgid(0) is %d, expected %d (the loner's group, whose leader exited)",
           (int)getpgid(0), (int)loner);
    pcheck(getsid(0) == leader, "getsid(0) is %d, expected %d ('leader')", (int)getsid(0), (int)leader);
    wt_verdict_exit(0);
}

static void loner_main(int up) __attribute__((noreturn));
static void loner_main(int up)
{
    wt_send_setup();
    struct wt_sender s = {up, R_LONER, 0};
    produce(&s, "'leader'");
    wt_check_ids();
    pcheck(getpgid(0) == getpid(), "no longer its group's leader: getpgid(0) is %d", (int)getpgid(0));
    pid_t late = wt_fork(R_LATE);
    if (late == 0) {
        wt_keep_fds(NULL, 0);
        late_orphan_main();
    }
    pcheck(late > 0, "fork of 'late orphan': %s", strerror(errno));
    wt_send_close(&s, 0, "'leader'");
    wt_verdict_exit(late > 0 ? late : 0);
}

static void orphan_main(int up) __attribute__((noreturn));
static void orphan_main(int up)
{
    pid_t root = pidof(R_ROOT);
    int64_t deadline = wl_now_ns() + 5 * SEC;
    while (getppid() != root && wl_now_ns() < deadline)
        wt_sleep_ms(1);
    if (getppid() != root)
        wl_setup_fail("after 'middle' exited, 'orphan' was reparented to pid %d, not to the root (pid %d), a child "
                      "subreaper",
                      (int)getppid(), (int)root);
    if (getsid(0) != pidof(R_LEADER) || getpgid(0) != pidof(R_LEADER))
        wl_setup_fail("'orphan' is in session %d group %d, expected the leader's (%d)", (int)getsid(0),
                      (int)getpgid(0), (int)pidof(R_LEADER));
    wt_send_setup();
    struct wt_sender s = {up, R_ORPHAN, 0};
    produce(&s, "the root");
    wt_check_ids();
    wt_send_close(&s, 0, "the root");
    wt_verdict_exit(0);
}

static pid_t fork_role(int role)
{
    pid_t pid = wt_fork(role);
    if (pid < 0)
        child_fail("fork", role);
    return pid;
}

static void leader_main(int up, int orphan_up) __attribute__((noreturn));
static void leader_main(int up, int orphan_up)
{
    if (setsid() < 0)
        wl_setup_fail("setsid: %s", strerror(errno));
    int p12[2], p23[2], pq[2];
    if (pipe2(p12, 0) || pipe2(p23, 0) || pipe2(pq, 0))
        wl_setup_fail("pipe: %s", strerror(errno));

    pid_t p1 = fork_role(R_P1);
    if (p1 == 0) {
        if (setpgid(0, 0) != 0)
            child_fail("setpgid(0, 0)", R_P1);
        if (dup2(p12[1], 1) < 0)
            child_fail("dup2", R_P1);
        wt_keep_fds(NULL, 0);
        pipe1_main();
    }
    if (setpgid(p1, p1) != 0 && errno != EACCES)
        child_fail("setpgid(pipe 1)", R_P1);

    pid_t p2 = fork_role(R_P2);
    if (p2 == 0) {
        if (setpgid(0, p1) != 0)
            child_fail("setpgid(0, pipe 1)", R_P2);
        if (dup2(p12[0], 0) < 0 || dup2(p23[1], 1) < 0)
            child_fail("dup2", R_P2);
        wt_keep_fds(NULL, 0);
        pipe_reader_main(1);
    }
    if (setpgid(p2, p1) != 0 && errno != EACCES)
        child_fail("setpgid(pipe 2)", R_P2);

    pid_t p3 = fork_role(R_P3);
    if (p3 == 0) {
        if (setpgid(0, p1) != 0)
            child_fail("setpgid(0, pipe 1)", R_P3);
        if (dup2(p23[0], 0) < 0)
            child_fail("dup2", R_P3);
        wt_keep_fds(NULL, 0);
        pipe_reader_main(0);
    }
    if (setpgid(p3, p1) != 0 && errno != EACCES)
        child_fail("setpgid(pipe 3)", R_P3);
    close(p12[0]);
    close(p12[1]);
    close(p23[0]);
    close(p23[1]);

    pid_t q = fork_role(R_LONER);
    if (q == 0) {
        if (setpgid(0, 0) != 0)
            child_fail("setpgid(0, 0)", R_LONER);
        int keep[1] = {pq[1]};
        wt_keep_fds(keep, 1);
        loner_main(pq[1]);
    }
    if (setpgid(q, q) != 0 && errno != EACCES)
        child_fail("setpgid(loner)", R_LONER);
    close(pq[1]);
    struct wt_stream in;
    char from[80];
    snprintf(from, sizeof from, "from 'loner' (pid %d)", (int)q);
    wt_stream_init(&in, pq[0], R_LONER, from);

    pid_t m = fork_role(R_MIDDLE);
    if (m == 0) {
        int keep[1] = {orphan_up};
        wt_keep_fds(keep, 1);
        pid_t o = fork_role(R_ORPHAN);
        if (o == 0)
            orphan_main(orphan_up);
        _exit(MIDDLE_EXIT);
    }
    close(orphan_up);
    int st;
    pid_t w;
    while ((w = waitpid(m, &st, 0)) < 0 && errno == EINTR)
        ;
    char ws[64];
    if (w != m || !WIFEXITED(st) || WEXITSTATUS(st) != MIDDLE_EXIT)
        wl_setup_fail("'middle' (pid %d): waitpid returned %d, %s, expected exit %d", (int)m, (int)w,
                      wt_wstatus_str(st, ws, sizeof ws), MIDDLE_EXIT);
    wt_roles[R_MIDDLE].reaped = 1;
    wt_roles[R_MIDDLE].wstatus = st;

    if (getsid(0) != getpid() || getpgid(0) != getpid())
        wl_setup_fail("'leader' is in session %d group %d after setsid()", (int)getsid(0), (int)getpgid(0));
    wt_roles[R_LEADER].aux = m; /* tells the root the pid of 'middle' (debug, messages) */
    wt_send_setup();
    in.last_at_setup = in.last;
    struct wt_sender s = {up, R_LEADER, 0};
    while (!wl_term) {
        struct pollfd pf = {in.fd, POLLIN, 0};
        poll(&pf, in.eof ? 0 : 1, 1);
        wt_stream_pump(&in);
        if (wl_term)
            break;
        int r = wt_send_tick(&s);
        if (r < 0) {
            pcheck(0, "stream to the root: write: %s", strerror(-r));
            break;
        }
        if (wt_parent_gone())
            break;
    }
    int64_t t0 = wl_now_ns();
    wt_check_ids();
    pid_t me = getpid();
    pcheck(getsid(0) == me && getpgid(0) == me, "no longer session and group leader: sid %d pgid %d",
           (int)getsid(0), (int)getpgid(0));
    static const int kids[] = {R_P1, R_P2, R_P3, R_LONER};
    for (int i = 0; i < 4; i++) {
        int k = kids[i];
        pid_t pid = pidof(k);
        if (wt_pid_dead(pid))
            continue; /* reported by wt_reap below, and by the root */
        pid_t want_pg = k == R_LONER ? q : p1;
        pcheck(getpgid(pid) == want_pg, "seen from the leader, getpgid(%d) of '%s' is %d, expected %d", (int)pid,
               wt_roles[k].name, (int)getpgid(pid), (int)want_pg);
        pcheck(getsid(pid) == me, "seen from the leader, getsid(%d) of '%s' is %d, expected %d", (int)pid,
               wt_roles[k].name, (int)getsid(pid), (int)me);
    }
    for (int i = 0; i < 4; i++)
        kill(pidof(kids[i]), SIGTERM);
    wt_send_close(&s, 0, "the root");
    wt_streams_drain(&in, 1, t0 + 3 * SEC);
    wt_stream_final_check(&in);
    for (int i = 0; i < 4; i++)
        wt_reap(pidof(kids[i]), kids[i], t0 + 5 * SEC);
    wt_verdict_exit(0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0);
    if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0)
        wl_setup_fail("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
    wt_root_init("root");
    wt_add_role("leader", R_ROOT, 1, 0);
    wt_add_role("pipe 1", R_LEADER, 1, 0);
    wt_add_role("pipe 2", R_LEADER, 1, 0);
    wt_add_role("pipe 3", R_LEADER, 1, 0);
    wt_add_role("loner", R_LEADER, 1, 0);
    wt_add_role("middle", R_LEADER, 0, 0);
    wt_add_role("orphan", R_ROOT, 1, 0);
    wt_add_role("late orphan", R_LONER, 1, 1);
    wt_roles[R_MIDDLE].exit_code = MIDDLE_EXIT;

    int ps[2], po[2];
    if (pipe2(ps, 0) || pipe2(po, 0))
        wl_setup_fail("pipe: %s", strerror(errno));
    pid_t s = fork_role(R_LEADER);
    if (s == 0) {
        int keep[2] = {ps[1], po[1]};
        wt_keep_fds(keep, 2);
        leader_main(ps[1], po[1]);
    }
    close(ps[1]);
    close(po[1]);
    struct wt_stream in[2];
    wt_stream_init(&in[0], ps[0], R_LEADER, "from 'leader'");
    wt_stream_init(&in[1], po[0], R_ORPHAN, "from 'orphan'");
    wt_root_wait_setup(8);
    snprintf(in[0].from, sizeof in[0].from, "from 'leader' (pid %d)", (int)pidof(R_LEADER));
    snprintf(in[1].from, sizeof in[1].from, "from 'orphan' (pid %d)", (int)pidof(R_ORPHAN));
    wt_roles[R_MIDDLE].pid = wt_roles[R_LEADER].aux;
    if (wt_roles[R_ORPHAN].ppid != getpid())
        wl_setup_fail("'orphan' reports parent %d, expected the root", (int)wt_roles[R_ORPHAN].ppid);
    for (int i = 0; i < 2; i++)
        in[i].last_at_setup = in[i].last;
    for (int i = 0; i < wt_nroles; i++) {
        struct wt_role *r = &wt_roles[i];
        wl_dbg("role %d '%s' pid=%d ppid=%d pgid=%d sid=%d", i, r->name, (int)r->pid, (int)r->ppid, (int)r->pgid,
               (int)r->sid);
    }
    wl_ready();

    while (!wl_term) {
        struct pollfd pf[3] = {{in[0].fd, POLLIN, 0}, {in[1].fd, POLLIN, 0}, {wt_report_rfd, POLLIN, 0}};
        for (int i = 0; i < 2; i++)
            if (in[i].eof)
                pf[i].fd = -1;
        poll(pf, 3, 10);
        wt_stream_pump(&in[0]);
        wt_stream_pump(&in[1]);
        wt_root_drain();
    }

    int64_t t0 = wl_now_ns();
    wt_check_ids();
    int sub = -1;
    pcheck(prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0) == 0 && sub == 1,
           "PR_GET_CHILD_SUBREAPER is %d, expected 1", sub);
    for (int i = 1; i < wt_nroles; i++) {
        struct wt_role *r = &wt_roles[i];
        if (!r->have_setup || i == R_MIDDLE || r->dynamic || wt_pid_dead(r->pid))
            continue;
        pcheck(getpgid(r->pid) == r->pgid, "seen from the root, getpgid(%d) of '%s' is %d, expected %d",
               (int)r->pid, r->name, (int)getpgid(r->pid), (int)r->pgid);
        pcheck(getsid(r->pid) == r->sid, "seen from the root, getsid(%d) of '%s' is %d, expected %d", (int)r->pid,
               r->name, (int)getsid(r->pid), (int)r->sid);
    }
    kill(pidof(R_LEADER), SIGTERM);
    kill(pidof(R_ORPHAN), SIGTERM);
    wt_streams_drain(in, 2, t0 + 3 * SEC);
    wt_stream_final_check(&in[0]);
    wt_stream_final_check(&in[1]);
    wt_root_collect(7);
    wt_reap(pidof(R_LEADER), R_LEADER, t0 + 8 * SEC);
    wt_reap(pidof(R_ORPHAN), R_ORPHAN, t0 + 8 * SEC);
    if (pidof(R_LATE) > 0)
        wt_reap(pidof(R_LATE), R_LATE, t0 + 8 * SEC);
    /* whatever else was reparented to us (children of a process that died) */
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
    wt_root_finish();
}
