/*
 * reader — blocks in read(2), poll(2) or pause(2), in a loop.
 *
 *   reader <result-file> [pipe|stdin|poll|pause]      (default pipe)
 *
 *   pipe   creates a pipe (keeps both ends, nobody writes) and blocks in
 *          read() on the read end           (kernel restarts: -ERESTARTSYS)
 *   stdin  blocks in read() on fd 0; the harness must give it a stdin that
 *          never delivers data or EOF (e.g. a pipe it keeps open)
 *   poll   blocks in poll() with an infinite timeout on the read end of its
 *          own empty pipe                   (-ERESTARTNOHAND)
 *   pause  blocks in pause()                (-ERESTARTNOHAND)
 *
 * Calls are raw syscalls (see wl_block_syscall), so a leaked -512/-514/-516
 * shows up as such. The SIGTERM handler has no SA_RESTART, so SIGTERM ends
 * the call with -EINTR.
 * At SIGTERM it checks that every call returned -EINTR and only after the
 * SIGTERM handler ran (no data, no EOF, no poll event, no other errno, no
 * wake-up without a signal), and in pipe/poll mode that the pipe is still the
 * same pipe (fstat dev/ino of both ends) and still empty (FIONREAD 0).
 */
#include "wl.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

enum mode { M_PIPE, M_STDIN, M_POLL, M_PAUSE };

static const char *error_name(long r)
{
    switch (r) {
    case -512: return "ERESTARTSYS leaked";
    case -513: return "ERESTARTNOINTR leaked";
    case -514: return "ERESTARTNOHAND leaked";
    case -516: return "ERESTART_RESTARTBLOCK leaked";
    default: return strerror((int)-r);
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0);
    const char *ms = argc > 2 ? argv[2] : "pipe";
    enum mode mode;
    if (!strcmp(ms, "pipe"))
        mode = M_PIPE;
    else if (!strcmp(ms, "stdin"))
        mode = M_STDIN;
    else if (!strcmp(ms, "poll"))
        mode = M_POLL;
    else if (!strcmp(ms, "pause"))
        mode = M_PAUSE;
    else
        wl_setup_fail("unknown mode '%s' (pipe|stdin|poll|pause)", ms);

    int p[2] = {-1, -1};
    struct stat st_r = {0}, st_w = {0};
    if (mode == M_PIPE || mode == M_POLL) {
        if (pipe2(p, 0) != 0)
            wl_setup_fail("pipe2: %s", strerror(errno));
        if (fstat(p[0], &st_r) || fstat(p[1], &st_w))
            wl_setup_fail("fstat pipe: %s", strerror(errno));
    }
    const char *what = mode == M_POLL ? "poll" : mode == M_PAUSE ? "pause" : "read";

    static char buf[4096];
    long calls = 0, unexpected = 0;
    wl_ready();

    while (!wl_term) {
        long r;
        struct pollfd pfd = {p[0], POLLIN, 0};
        if (unexpected > 0 && mode != M_PAUSE) {
            /* after an unexpected result, stop touching the fd and just wait */
            r = wl_block_syscall(SYS_pause, 0, 0, 0, 0);
        } else {
            switch (mode) {
            case M_PIPE: r = wl_block_syscall(SYS_read, p[0], (long)buf, sizeof buf, 0); break;
            case M_STDIN: r = wl_block_syscall(SYS_read, 0, (long)buf, sizeof buf, 0); break;
            case M_POLL: r = wl_block_syscall(SYS_poll, (long)&pfd, 1, -1, 0); break;
            default: r = wl_block_syscall(SYS_pause, 0, 0, 0, 0); break;
            }
        }
        calls++;
        if (r == -EINTR) {
            check(wl_term, "%s returned EINTR without a signal (call #%ld)", what, calls);
            continue;
        }
        unexpected++;
        if (r >= 0 && mode == M_POLL)
            check(0, "poll returned %ld with revents 0x%x, expected to block until SIGTERM", r,
                  pfd.revents);
        else if (r > 0)
            check(0, "%s returned %ld bytes (first byte 0x%02x), expected to block until SIGTERM",
                  what, r, (unsigned char)buf[0]);
        else if (r == 0)
            check(0, "%s returned 0%s, expected to block until SIGTERM", what,
                  mode == M_PAUSE ? "" : " (EOF)");
        else
            check(0, "%s returned %ld (%s), expected only -EINTR from SIGTERM (call #%ld)",
                  what, r, error_name(r), calls);
    }

    wl_dbg("calls=%ld unexpected=%ld", calls, unexpected);
    if (p[0] >= 0) {
        struct stat a, b;
        if (check(fstat(p[0], &a) == 0 && fstat(p[1], &b) == 0, "fstat of the pipe ends failed: %s",
                  strerror(errno))) {
            /* A restored pipe is a new pipe object with a new inode number (the kernel numbers
             * pipes from one global counter), so "the same pipe" means: both fds are ends of one
             * pipe, on pipefs, with the right access modes. */
            check(S_ISFIFO(a.st_mode) && a.st_dev == st_r.st_dev,
                  "fd %d is no longer a pipe (dev %lx mode %o, expected pipefs dev %lx)", p[0],
                  (long)a.st_dev, a.st_mode, (long)st_r.st_dev);
            check(S_ISFIFO(b.st_mode) && b.st_ino == a.st_ino,
                  "fds %d and %d are no longer the two ends of one pipe (inodes %lu and %lu)", p[0], p[1],
                  (long)a.st_ino, (long)b.st_ino);
            check((fcntl(p[0], F_GETFL) & O_ACCMODE) == O_RDONLY && (fcntl(p[1], F_GETFL) & O_ACCMODE) == O_WRONLY,
                  "pipe ends lost their access modes (read end %#x, write end %#x)", fcntl(p[0], F_GETFL),
                  fcntl(p[1], F_GETFL));
        }
        int avail = -1;
        check(ioctl(p[0], FIONREAD, &avail) == 0 && avail == 0,
              "pipe should be empty: FIONREAD gave %d", avail);
    }
    check(calls >= 1, "the loop never issued %s", what);
    wl_finish();
}
