/*
 * zombie — a child that exited and was not reaped, next to a live one.
 *
 *   zombie <result-file>
 *
 * Setup: the root forks 'zombie', which exits at once with status 42, and
 * waits for that with waitid(WEXITED | WNOWAIT), which does not reap it: it
 * stays a zombie (state Z in /proc, parent the root, exit signal SIGCHLD).
 * Then it forks 'live', which streams sequence numbers to the root through
 * a pipe (wl_tree.h) until SIGTERM. SIGCHLD keeps its default disposition (an
 * ignored SIGCHLD would reap automatically). READY when 'live' sent SETUP.
 * At SIGTERM (the root forwards it to 'live'):
 *   - root: the zombie is still there, still a zombie of ours: /proc/PID/stat
 *     state Z, ppid = root, exit signal 17; waitid(P_PID, WNOHANG | WNOWAIT)
 *     reports CLD_EXITED status 42 for that pid; then waitpid(pid) reaps it:
 *     the same pid, exited with 42; nothing else is waitable;
 *   - live: getpid/getppid/getpgid/getsid as recorded; one more record, END,
 *     close; VERDICT; exits with 66;
 *   - root: the stream from 'live' (gap-free, no duplicates, in order, END,
 *     EOF), its verdict, waitpid: exited with 66.
 * Debug: "zombie=PID live=PID", and "role N 'name' pid=PID" per process.
 */
#include "wl_tree.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { R_ROOT, R_ZOMBIE, R_LIVE };
#define ZOMBIE_STATUS 42
#define SEC 1000000000LL

/* Fields 3 (state), 4 (ppid) and 38 (exit_signal) of /proc/PID/stat. */
static int zombie_stat(pid_t pid, char *state, int *ppid, int *exit_signal)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (wl_read_file(path, buf, sizeof buf) <= 0)
        return -1;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    p += 2; /* field 3 */
    *state = *p;
    int field = 3;
    *ppid = -1;
    *exit_signal = -1;
    for (char *tok = strtok(p, " "); tok; tok = strtok(NULL, " "), field++) {
        if (field == 4)
            *ppid = atoi(tok);
        if (field == 38)
            *exit_signal = atoi(tok);
    }
    return 0;
}

static void live_main(int up) __attribute__((noreturn));
static void live_main(int up)
{
    wt_send_setup();
    struct wt_sender s = {up, R_LIVE, 0};
    while (!wl_term) {
        poll(NULL, 0, 1);
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
    wt_check_ids();
    wt_send_close(&s, 0, "the root");
    wt_verdict_exit(0);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigaction(SIGCHLD, &sa, NULL);
    wt_root_init("root");
    wt_add_role("zombie", R_ROOT, 0, 0);
    wt_add_role("live", R_ROOT, 1, 0);
    wt_roles[R_ZOMBIE].exit_code = ZOMBIE_STATUS;

    pid_t z = wt_fork(R_ZOMBIE);
    if (z < 0)
        wl_setup_fail("fork: %s", strerror(errno));
    if (z == 0)
        _exit(ZOMBIE_STATUS);
    siginfo_t si;
    memset(&si, 0, sizeof si);
    while (waitid(P_PID, (id_t)z, &si, WEXITED | WNOWAIT) != 0)
        if (errno != EINTR)
            wl_setup_fail("waitid(WNOWAIT) for the zombie %d: %s", (int)z, strerror(errno));
    if (si.si_pid != z || si.si_code != CLD_EXITED || si.si_status != ZOMBIE_STATUS)
        wl_setup_fail("zombie %d: waitid says pid %d code %d status %d, expected CLD_EXITED %d", (int)z,
                      (int)si.si_pid, si.si_code, si.si_status, ZOMBIE_STATUS);
    char state = 0;
    int zppid = 0, zsig = 0;
    if (zombie_stat(z, &state, &zppid, &zsig) != 0 || state != 'Z' || zppid != getpid() || zsig != SIGCHLD)
        wl_setup_fail("zombie %d: /proc stat state %c ppid %d exit signal %d, expected Z %d %d", (int)z, state,
                      zppid, zsig, (int)getpid(), SIGCHLD);

    int p[2];
    if (pipe2(p, 0) != 0)
        wl_setup_fail("pipe: %s", strerror(errno));
    pid_t l = wt_fork(R_LIVE);
    if (l < 0)
        wl_setup_fail("fork: %s", strerror(errno));
    if (l == 0) {
        int keep[1] = {p[1]};
        wt_keep_fds(keep, 1);
        live_main(p[1]);
    }
    close(p[1]);
    struct wt_stream in;
    char from[64];
    snprintf(from, sizeof from, "from 'live' (pid %d)", (int)l);
    wt_stream_init(&in, p[0], R_LIVE, from);
    wt_root_wait_setup(8);
    in.last_at_setup = in.last;
    wl_dbg("zombie=%d live=%d", (int)z, (int)l);
    for (int i = 0; i < wt_nroles; i++)
        wl_dbg("role %d '%s' pid=%d", i, wt_roles[i].name, (int)wt_roles[i].pid);
    wl_ready();

    while (!wl_term) {
        struct pollfd pf[2] = {{in.eof ? -1 : in.fd, POLLIN, 0}, {wt_report_rfd, POLLIN, 0}};
        poll(pf, 2, 10);
        wt_stream_pump(&in);
        wt_root_drain();
    }

    int64_t t0 = wl_now_ns();
    wt_check_ids();
    /* The zombie first: still ours, still unreaped, still 42. */
    int zok = pcheck(zombie_stat(z, &state, &zppid, &zsig) == 0,
                     "the zombie (pid %d) is gone: /proc/%d does not exist (reaped or lost)", (int)z, (int)z);
    if (zok) {
        pcheck(state == 'Z', "the zombie (pid %d) is in state %c, expected Z", (int)z, state);
        pcheck(zppid == getpid(), "the zombie (pid %d) has parent %d, expected the root %d", (int)z, zppid,
               (int)getpid());
        pcheck(zsig == SIGCHLD, "the zombie (pid %d) has exit signal %d, expected SIGCHLD (%d)", (int)z, zsig,
               SIGCHLD);
    }
    memset(&si, 0, sizeof si);
    int r = waitid(P_PID, (id_t)z, &si, WEXITED | WNOHANG | WNOWAIT);
    pcheck(r == 0 && si.si_pid == z && si.si_code == CLD_EXITED && si.si_status == ZOMBIE_STATUS,
           "waitid(P_PID %d, WNOHANG|WNOWAIT) returned %d (%s): pid %d code %d status %d, expected the zombie, "
           "CLD_EXITED, status %d",
           (int)z, r, r ? strerror(errno) : "ok", (int)si.si_pid, si.si_code, si.si_status, ZOMBIE_STATUS);
    int st = 0;
    pid_t w = waitpid(z, &st, WNOHANG);
    char ws[64];
    if (w == z)
        wt_wstatus_str(st, ws, sizeof ws);
    else
        snprintf(ws, sizeof ws, "%s", w < 0 ? strerror(errno) : "still running");
    pcheck(w == z && WIFEXITED(st) && WEXITSTATUS(st) == ZOMBIE_STATUS,
           "reaping the zombie: waitpid(%d, WNOHANG) returned %d (%s), expected it exited with %d", (int)z, (int)w,
           ws, ZOMBIE_STATUS);
    pid_t other = waitpid(-1, &st, WNOHANG);
    pcheck(other == 0, "after reaping the zombie, waitpid(-1, WNOHANG) returned %d (%s), expected 0: 'live' "
                       "must still be running",
           (int)other, other > 0 ? wt_wstatus_str(st, ws, sizeof ws) : strerror(errno));
    if (other > 0 && other == l) {
        wt_roles[R_LIVE].reaped = 1;
        wt_roles[R_LIVE].wstatus = st;
    }

    kill(l, SIGTERM);
    wt_streams_drain(&in, 1, t0 + 3 * SEC);
    wt_stream_final_check(&in);
    wt_root_collect(5);
    if (!wt_roles[R_LIVE].reaped)
        wt_reap(l, R_LIVE, t0 + 6 * SEC);
    wt_root_finish();
}
