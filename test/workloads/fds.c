/*
 * fds — a file descriptor table with one of everything.
 *
 *   fds <result-file> [tmpdir]        (tmpdir default: the result file's directory)
 *
 * Before READY it builds (files live in tmpdir):
 *   10  data.txt, O_RDWR, 4096 pattern bytes, offset 1234
 *   11  log.txt, O_WRONLY|O_APPEND, 100 bytes written (offset 100)
 *   12  unlinked.bin, O_RDWR, 3000 pattern bytes, offset 777, then unlinked
 *   13  tmpdir, O_RDONLY|O_DIRECTORY
 *   14  data.txt, O_PATH
 *   15  /dev/null O_WRONLY       16  /dev/zero O_RDONLY
 *   17  /dev/urandom O_RDONLY, FD_CLOEXEC
 *   20  pipe read end, O_NONBLOCK, pipe size 128 KiB, 3000 unread bytes
 *   21  pipe write end, FD_CLOEXEC
 *   22  fifo (mkfifo in tmpdir), O_RDWR, 2000 unread bytes
 *   25  eventfd, counter 42, EFD_NONBLOCK
 *   26  epoll: 20 EPOLLIN data 0xaaaa000000000014, 25 EPOLLIN|EPOLLET
 *       data 0xbbbb000000000019, 22 EPOLLIN|EPOLLOUT data 0xdddd000000000016,
 *       29 EPOLLIN data 0xcccc00000000001d (never ready)
 *   28  signalfd {SIGUSR1}, SFD_NONBLOCK|SFD_CLOEXEC; SIGUSR1 blocked and one
 *       queued (sigqueue value 0x5151)
 *   29  timerfd CLOCK_MONOTONIC, TFD_CLOEXEC, armed 1000 s, interval 1000 s
 *   30  dup(10): shares the open file description (offset) with 10
 *   31  data.txt opened again (own description), offset 99
 *   3-9, 18, 19, 23, 24, 27: closed (18 and 19 were opened and closed)
 * and records the set of open fds, F_GETFL / F_GETFD of each, and the
 * stable lines of /proc/self/fdinfo (epoll tfd/events/data, signalfd
 * sigmask, timerfd clockid/interval, eventfd count).
 * Between READY and SIGTERM: sleeps in 10 ms nanosleeps.
 * At SIGTERM: the open fd set is unchanged; F_GETFL / F_GETFD unchanged and
 * with the intended bits; offsets; 10 and 31 are data.txt (same inode), 14
 * is an O_PATH to it, 12 is unlinked (nlink 0, "(deleted)") with its
 * content; 13 is tmpdir (dev/ino); 15-17 are the right char devices and
 * /dev/zero reads zeros; fdinfo lines unchanged; epoll_wait returns exactly
 * {20: IN, 25: IN, 22: IN|OUT} with their data; 30 shares its offset with 10
 * and 31 does not; the pipe size and FIONREAD (3000 / 2000), then the exact
 * bytes of the pipe and the fifo and nothing more; the eventfd reads 42 then
 * EAGAIN; the signalfd yields SIGUSR1 with value 0x5151 then EAGAIN; the
 * timerfd is armed with interval 1000 s and 0 < remaining <= 1000 s.
 *
 * Debug prints the fd numbers; writing a byte into /proc/PID/fd/20 (the
 * pipe) must make the check fail.
 */
#include "wl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

enum {
    FD_DATA = 10, FD_LOG = 11, FD_UNL = 12, FD_DIR = 13, FD_OPATH = 14, FD_NULL = 15,
    FD_ZERO = 16, FD_URAND = 17, FD_PIPE_R = 20, FD_PIPE_W = 21, FD_FIFO = 22, FD_EVENT = 25,
    FD_EPOLL = 26, FD_SIGNAL = 28, FD_TIMER = 29, FD_DUP = 30, FD_DATA2 = 31,
};
static const int all_fds[] = {FD_DATA, FD_LOG, FD_UNL, FD_DIR, FD_OPATH, FD_NULL,
                              FD_ZERO, FD_URAND, FD_PIPE_R, FD_PIPE_W, FD_FIFO, FD_EVENT,
                              FD_EPOLL, FD_SIGNAL, FD_TIMER, FD_DUP, FD_DATA2};
#define N_FDS (int)(sizeof all_fds / sizeof all_fds[0])
static const int cloexec_fds[] = {FD_URAND, FD_PIPE_W, FD_SIGNAL, FD_TIMER};

#define S_DATA 0xda7a
#define S_UNL 0x0411
#define S_PIPE 0x919e
#define S_FIFO 0xf1f0
#define DATA_LEN 4096
#define UNL_LEN 3000
#define PIPE_LEN 3000
#define FIFO_LEN 2000
#define PIPE_SZ (128 * 1024)

static char tmpdir[4096];
static char p_data[4200], p_log[4200], p_unl[4200], p_fifo[4200];
static int fl_before[64], fd_before[64];
static char openset_before[256], openset_after[256];
static char fdinfo_before[64][1024];
static uint8_t buf[8192];

struct expect_ev {
    int fd;
    uint32_t events, ready;
    uint64_t data;
};
static const struct expect_ev epoll_set[] = {
    {FD_PIPE_R, EPOLLIN, EPOLLIN, 0xaaaa000000000014ULL},
    {FD_EVENT, EPOLLIN | EPOLLET, EPOLLIN, 0xbbbb000000000019ULL},
    {FD_FIFO, EPOLLIN | EPOLLOUT, EPOLLIN | EPOLLOUT, 0xdddd000000000016ULL},
    {FD_TIMER, EPOLLIN, 0, 0xcccc00000000001dULL},
};

static void place(int fd, int want, const char *what)
{
    if (fd < 0)
        wl_setup_fail("%s: %s", what, strerror(errno));
    if (fd == want)
        return;
    if (dup3(fd, want, 0) != want)
        wl_setup_fail("dup3(%s -> %d): %s", what, want, strerror(errno));
    close(fd);
}

static void place_cloexec(int fd, int want, const char *what)
{
    if (fd < 0)
        wl_setup_fail("%s: %s", what, strerror(errno));
    if (dup3(fd, want, O_CLOEXEC) != want)
        wl_setup_fail("dup3(%s -> %d): %s", what, want, strerror(errno));
    close(fd);
}

static void write_all(int fd, const void *p, size_t n, const char *what)
{
    if (write(fd, p, n) != (ssize_t)n)
        wl_setup_fail("write %s: %s", what, strerror(errno));
}

/* "0 1 2 10 11 ..." of /proc/self/fd, excluding the fd used to list it */
static int list_fds(char *out, size_t cap)
{
    int dfd = open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    static uint8_t present[1024];
    memset(present, 0, sizeof present);
    char d[4096];
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, d, sizeof d);
        if (n <= 0)
            break;
        for (long off = 0; off < n;) {
            struct dirent64 *e = (struct dirent64 *)(d + off);
            if (e->d_name[0] >= '0' && e->d_name[0] <= '9') {
                int fd = atoi(e->d_name);
                if (fd != dfd && fd < 1024)
                    present[fd] = 1;
            }
            off += e->d_reclen;
        }
    }
    close(dfd);
    size_t o = 0;
    out[0] = 0;
    for (int fd = 0; fd < 1024; fd++)
        if (present[fd] && o + 8 < cap)
            o += (size_t)snprintf(out + o, cap - o, "%s%d", o ? " " : "", fd);
    return 0;
}

/* The lines of /proc/self/fdinfo/<fd> that must survive a migration. */
static void stable_fdinfo(int fd, char *out, size_t cap)
{
    char path[64], raw[4096];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
    out[0] = 0;
    if (wl_read_file(path, raw, sizeof raw) < 0) {
        snprintf(out, cap, "<%s: %s>", path, strerror(errno));
        return;
    }
    /*
     * epoll "tfd:" lines come in the order of the kernel's rbtree, keyed by
     * struct file addresses: sort them by fd so that an equivalent epoll set
     * built from new file objects compares equal.
     */
    struct {
        int tfd;
        unsigned ev;
        unsigned long long data;
    } tfds[16];
    int ntfd = 0;
    size_t o = 0;
    for (char *line = raw; *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = 0;
        char tmp[256];
        tmp[0] = 0;
        if (!strncmp(line, "tfd:", 4)) {
            /* keep tfd, events, data; drop pos/ino/sdev (differ for new objects) */
            int tfd = -1;
            unsigned ev = 0;
            unsigned long long data = 0;
            if (sscanf(line, "tfd: %d events: %x data: %llx", &tfd, &ev, &data) == 3 && ntfd < 16) {
                int k = ntfd++;
                while (k > 0 && tfds[k - 1].tfd > tfd) {
                    tfds[k] = tfds[k - 1];
                    k--;
                }
                tfds[k].tfd = tfd;
                tfds[k].ev = ev;
                tfds[k].data = data;
            }
        } else if (!strncmp(line, "sigmask:", 8) || !strncmp(line, "eventfd-count:", 14) ||
                   !strncmp(line, "clockid:", 8) || !strncmp(line, "it_interval:", 12) ||
                   !strncmp(line, "settime flags:", 14)) {
            snprintf(tmp, sizeof tmp, "%.200s; ", line);
        }
        size_t tl = strlen(tmp);
        if (o + tl < cap) {
            memcpy(out + o, tmp, tl + 1);
            o += tl;
        }
        if (!nl)
            break;
        line = nl + 1;
    }
    for (int k = 0; k < ntfd; k++) {
        char tmp[128];
        int tl = snprintf(tmp, sizeof tmp, "tfd %d events %x data %llx; ", tfds[k].tfd,
                          tfds[k].ev, tfds[k].data);
        if (o + (size_t)tl < cap) {
            memcpy(out + o, tmp, (size_t)tl + 1);
            o += (size_t)tl;
        }
    }
}

static int expect_cloexec(int fd)
{
    for (size_t i = 0; i < sizeof cloexec_fds / sizeof cloexec_fds[0]; i++)
        if (cloexec_fds[i] == fd)
            return 1;
    return 0;
}

static off_t offset_of(int fd)
{
    return lseek(fd, 0, SEEK_CUR);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    if (argc > 2 && argv[2][0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s", argv[2]);
    } else {
        snprintf(tmpdir, sizeof tmpdir, "%s", wl_result_path);
        char *sl = strrchr(tmpdir, '/');
        if (sl == tmpdir)
            sl[1] = 0;
        else if (sl)
            *sl = 0;
    }
    snprintf(p_data, sizeof p_data, "%s/data.txt", tmpdir);
    snprintf(p_log, sizeof p_log, "%s/log.txt", tmpdir);
    snprintf(p_unl, sizeof p_unl, "%s/unlinked.bin", tmpdir);
    snprintf(p_fifo, sizeof p_fifo, "%s/fifo", tmpdir);

    /* start from a clean slate above stderr */
    for (int fd = 3; fd < 64; fd++)
        close(fd);

    /* 10: data file */
    int fd = open(p_data, O_RDWR | O_CREAT | O_TRUNC, 0644);
    place(fd, FD_DATA, "open data.txt");
    wl_pattern_fill(buf, DATA_LEN, S_DATA, 0);
    write_all(FD_DATA, buf, DATA_LEN, "data.txt");
    lseek(FD_DATA, 1234, SEEK_SET);
    /* 11: append */
    place(open(p_log, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644), FD_LOG, "open log.txt");
    memset(buf, 'L', 100);
    write_all(FD_LOG, buf, 100, "log.txt");
    /* 12: unlinked */
    place(open(p_unl, O_RDWR | O_CREAT | O_TRUNC, 0644), FD_UNL, "open unlinked.bin");
    wl_pattern_fill(buf, UNL_LEN, S_UNL, 0);
    write_all(FD_UNL, buf, UNL_LEN, "unlinked.bin");
    lseek(FD_UNL, 777, SEEK_SET);
    if (unlink(p_unl) != 0)
        wl_setup_fail("unlink: %s", strerror(errno));
    /* 13, 14 */
    place(open(tmpdir, O_RDONLY | O_DIRECTORY), FD_DIR, "open tmpdir");
    place(open(p_data, O_PATH), FD_OPATH, "open data.txt O_PATH");
    /* 15-17 */
    place(open("/dev/null", O_WRONLY), FD_NULL, "open /dev/null");
    place(open("/dev/zero", O_RDONLY), FD_ZERO, "open /dev/zero");
    place_cloexec(open("/dev/urandom", O_RDONLY), FD_URAND, "open /dev/urandom");
    /* 18, 19: opened and closed again */
    place(open("/dev/null", O_RDONLY), 18, "open 18");
    place(open("/dev/null", O_RDONLY), 19, "open 19");
    close(18);
    close(19);
    /* 20, 21: pipe */
    int p[2];
    if (pipe2(p, 0) != 0)
        wl_setup_fail("pipe2: %s", strerror(errno));
    place(p[0], FD_PIPE_R, "pipe read end");
    place_cloexec(p[1], FD_PIPE_W, "pipe write end");
    if (fcntl(FD_PIPE_R, F_SETFL, O_NONBLOCK) != 0)
        wl_setup_fail("F_SETFL O_NONBLOCK: %s", strerror(errno));
    if (fcntl(FD_PIPE_R, F_SETPIPE_SZ, PIPE_SZ) < PIPE_SZ)
        wl_setup_fail("F_SETPIPE_SZ: %s", strerror(errno));
    wl_pattern_fill(buf, PIPE_LEN, S_PIPE, 0);
    write_all(FD_PIPE_W, buf, PIPE_LEN, "pipe");
    /* 22: fifo */
    unlink(p_fifo);
    if (mkfifo(p_fifo, 0600) != 0)
        wl_setup_fail("mkfifo: %s", strerror(errno));
    place(open(p_fifo, O_RDWR), FD_FIFO, "open fifo");
    wl_pattern_fill(buf, FIFO_LEN, S_FIFO, 0);
    write_all(FD_FIFO, buf, FIFO_LEN, "fifo");
    /* 25: eventfd */
    place(eventfd(42, EFD_NONBLOCK), FD_EVENT, "eventfd");
    /* 29: timerfd (before epoll, which watches it) */
    place(timerfd_create(CLOCK_MONOTONIC, 0), FD_TIMER, "timerfd_create");
    {
        int t = fcntl(FD_TIMER, F_SETFD, FD_CLOEXEC);
        struct itimerspec its = {{1000, 0}, {1000, 0}};
        if (t != 0 || timerfd_settime(FD_TIMER, 0, &its, NULL) != 0)
            wl_setup_fail("timerfd_settime: %s", strerror(errno));
    }
    /* 26: epoll */
    place(epoll_create1(0), FD_EPOLL, "epoll_create1");
    for (size_t i = 0; i < sizeof epoll_set / sizeof epoll_set[0]; i++) {
        struct epoll_event ev = {.events = epoll_set[i].events, .data.u64 = epoll_set[i].data};
        if (epoll_ctl(FD_EPOLL, EPOLL_CTL_ADD, epoll_set[i].fd, &ev) != 0)
            wl_setup_fail("epoll_ctl ADD %d: %s", epoll_set[i].fd, strerror(errno));
    }
    /* 28: signalfd for SIGUSR1, with one queued */
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    if (sigprocmask(SIG_BLOCK, &usr1, NULL) != 0)
        wl_setup_fail("sigprocmask: %s", strerror(errno));
    place(signalfd(-1, &usr1, SFD_NONBLOCK | SFD_CLOEXEC), FD_SIGNAL, "signalfd");
    if (fcntl(FD_SIGNAL, F_SETFD, FD_CLOEXEC) != 0)
        wl_setup_fail("F_SETFD: %s", strerror(errno));
    union sigval sv = {.sival_int = 0x5151};
    if (sigqueue(getpid(), SIGUSR1, sv) != 0)
        wl_setup_fail("sigqueue: %s", strerror(errno));
    /* 30, 31 */
    if (dup2(FD_DATA, FD_DUP) != FD_DUP)
        wl_setup_fail("dup2: %s", strerror(errno));
    place(open(p_data, O_RDONLY), FD_DATA2, "open data.txt again");
    lseek(FD_DATA2, 99, SEEK_SET);

    /* snapshots */
    if (list_fds(openset_before, sizeof openset_before) != 0)
        wl_setup_fail("list /proc/self/fd: %s", strerror(errno));
    for (int i = 0; i < N_FDS; i++) {
        int f = all_fds[i];
        fl_before[f] = fcntl(f, F_GETFL);
        fd_before[f] = fcntl(f, F_GETFD);
        if (fl_before[f] < 0 || fd_before[f] < 0)
            wl_setup_fail("fcntl(%d): %s", f, strerror(errno));
        stable_fdinfo(f, fdinfo_before[f], sizeof fdinfo_before[f]);
    }
    wl_dbg("open fds: %s; pipe read end %d, fifo %d", openset_before, FD_PIPE_R, FD_FIFO);
    wl_dbg("epoll fdinfo: %s", fdinfo_before[FD_EPOLL]);

    wl_ready();
    while (!wl_term) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }

    /* ---- checks ---- */
    if (check(list_fds(openset_after, sizeof openset_after) == 0, "list /proc/self/fd: %s",
              strerror(errno)))
        check(!strcmp(openset_before, openset_after), "open fds: expected {%s} found {%s}",
              openset_before, openset_after);

    for (int i = 0; i < N_FDS; i++) {
        int f = all_fds[i];
        int fl = fcntl(f, F_GETFL), fdf = fcntl(f, F_GETFD);
        check(fl == fl_before[f], "fd %d F_GETFL: expected 0%o found 0%o", f, fl_before[f], fl);
        check(fdf == fd_before[f], "fd %d F_GETFD: expected %d found %d", f, fd_before[f], fdf);
        check(fdf >= 0 && !!(fdf & FD_CLOEXEC) == expect_cloexec(f),
              "fd %d FD_CLOEXEC: expected %s", f, expect_cloexec(f) ? "set" : "clear");
        char now[1024];
        stable_fdinfo(f, now, sizeof now);
        check(!strcmp(now, fdinfo_before[f]), "fd %d fdinfo: expected '%s' found '%s'", f,
              fdinfo_before[f], now);
    }
    int fl;
    fl = fcntl(FD_DATA, F_GETFL);
    check((fl & O_ACCMODE) == O_RDWR && !(fl & O_APPEND), "fd 10 flags 0%o: expected O_RDWR", fl);
    fl = fcntl(FD_LOG, F_GETFL);
    check((fl & O_ACCMODE) == O_WRONLY && (fl & O_APPEND),
          "fd 11 flags 0%o: expected O_WRONLY|O_APPEND", fl);
    fl = fcntl(FD_OPATH, F_GETFL);
    check(fl >= 0 && (fl & O_PATH), "fd 14 flags 0%o: expected O_PATH", fl);
    fl = fcntl(FD_PIPE_R, F_GETFL);
    check((fl & O_ACCMODE) == O_RDONLY && (fl & O_NONBLOCK),
          "fd 20 flags 0%o: expected O_RDONLY|O_NONBLOCK", fl);
    fl = fcntl(FD_PIPE_W, F_GETFL);
    check((fl & O_ACCMODE) == O_WRONLY && !(fl & O_NONBLOCK), "fd 21 flags 0%o: expected O_WRONLY", fl);
    fl = fcntl(FD_FIFO, F_GETFL);
    check((fl & O_ACCMODE) == O_RDWR, "fd 22 flags 0%o: expected O_RDWR", fl);
    fl = fcntl(FD_EVENT, F_GETFL);
    check(fl >= 0 && (fl & O_NONBLOCK), "fd 25 flags 0%o: expected O_NONBLOCK (EFD_NONBLOCK)", fl);

    /* offsets and files */
    off_t o;
    check((o = offset_of(FD_DATA)) == 1234, "fd 10 offset: expected 1234 found %ld", (long)o);
    check((o = offset_of(FD_DUP)) == 1234, "fd 30 (dup of 10) offset: expected 1234 found %ld",
          (long)o);
    check((o = offset_of(FD_DATA2)) == 99, "fd 31 offset: expected 99 found %ld", (long)o);
    check((o = offset_of(FD_LOG)) == 100, "fd 11 offset: expected 100 found %ld", (long)o);
    check((o = offset_of(FD_UNL)) == 777, "fd 12 offset: expected 777 found %ld", (long)o);
    struct stat st, st2;
    if (check(stat(p_data, &st) == 0, "stat %s: %s", p_data, strerror(errno))) {
        check(fstat(FD_DATA, &st2) == 0 && st2.st_ino == st.st_ino && st2.st_dev == st.st_dev,
              "fd 10 is not %s", p_data);
        check(fstat(FD_DATA2, &st2) == 0 && st2.st_ino == st.st_ino && st2.st_dev == st.st_dev,
              "fd 31 is not %s", p_data);
        check(fstat(FD_OPATH, &st2) == 0 && st2.st_ino == st.st_ino && st2.st_dev == st.st_dev,
              "fd 14 (O_PATH) is not %s", p_data);
    }
    check(pread(FD_DATA, buf, DATA_LEN + 1, 0) == DATA_LEN, "data.txt: expected %d bytes",
          DATA_LEN);
    wl_check_pattern("data.txt content (fd 10)", buf, DATA_LEN, S_DATA, 0);
    check(fstat(FD_LOG, &st2) == 0 && st2.st_size == 100, "log.txt size: expected 100 found %ld",
          (long)st2.st_size);
    if (check(fstat(FD_UNL, &st2) == 0, "fstat fd 12: %s", strerror(errno)))
        check(st2.st_nlink == 0 && st2.st_size == UNL_LEN,
              "fd 12: expected an unlinked file (nlink 0) of %d bytes, found nlink %ld size %ld",
              UNL_LEN, (long)st2.st_nlink, (long)st2.st_size);
    {
        char l[4300] = "", want[4300];
        ssize_t n = readlink("/proc/self/fd/12", l, sizeof l - 1);
        if (n >= 0)
            l[n] = 0;
        snprintf(want, sizeof want, "%s (deleted)", p_unl);
        check(!strcmp(l, want), "fd 12 link: expected '%s' found '%s'", want, l);
    }
    memset(buf, 0, sizeof buf);
    check(pread(FD_UNL, buf, UNL_LEN + 1, 0) == UNL_LEN, "unlinked file: expected %d bytes",
          UNL_LEN);
    wl_check_pattern("unlinked file content (fd 12)", buf, UNL_LEN, S_UNL, 0);
    if (check(stat(tmpdir, &st) == 0 && fstat(FD_DIR, &st2) == 0, "stat tmpdir: %s",
              strerror(errno)))
        check(S_ISDIR(st2.st_mode) && st2.st_ino == st.st_ino && st2.st_dev == st.st_dev,
              "fd 13 is not the directory %s (dev/ino %lx/%lu, expected %lx/%lu)", tmpdir,
              (long)st2.st_dev, (long)st2.st_ino, (long)st.st_dev, (long)st.st_ino);
    static const struct {
        int fd, maj, mn;
        const char *name;
    } devs[] = {{FD_NULL, 1, 3, "/dev/null"}, {FD_ZERO, 1, 5, "/dev/zero"},
                {FD_URAND, 1, 9, "/dev/urandom"}};
    for (int i = 0; i < 3; i++) {
        int r = fstat(devs[i].fd, &st2);
        check(r == 0 && S_ISCHR(st2.st_mode) && major(st2.st_rdev) == (unsigned)devs[i].maj &&
                  minor(st2.st_rdev) == (unsigned)devs[i].mn,
              "fd %d: expected %s (char %d:%d), found mode 0%o rdev %u:%u", devs[i].fd,
              devs[i].name, devs[i].maj, devs[i].mn, st2.st_mode, major(st2.st_rdev),
              minor(st2.st_rdev));
    }
    memset(buf, 0xff, 64);
    check(read(FD_ZERO, buf, 64) == 64 && wl_find_nonzero(buf, 64) < 0, "/dev/zero did not read zeros");

    /* epoll, before consuming anything */
    {
        struct epoll_event evs[8];
        memset(evs, 0, sizeof evs);
        int n = epoll_wait(FD_EPOLL, evs, 8, 0);
        int want_n = 0;
        for (size_t i = 0; i < sizeof epoll_set / sizeof epoll_set[0]; i++)
            if (epoll_set[i].ready)
                want_n++;
        check(n == want_n, "epoll_wait: expected %d ready fds found %d (%s)", want_n, n,
              n < 0 ? strerror(errno) : "");
        for (int k = 0; k < n && k < 8; k++) {
            const struct expect_ev *e = NULL;
            for (size_t i = 0; i < sizeof epoll_set / sizeof epoll_set[0]; i++)
                if (epoll_set[i].data == evs[k].data.u64)
                    e = &epoll_set[i];
            if (!check(e && e->ready, "epoll_wait returned unexpected data 0x%lx (events 0x%x)",
                       (unsigned long)evs[k].data.u64, evs[k].events))
                continue;
            check(evs[k].events == e->ready,
                  "epoll_wait: fd %d (data 0x%lx) expected events 0x%x found 0x%x", e->fd,
                  (unsigned long)e->data, e->ready, evs[k].events);
        }
    }

    /* shared vs independent file descriptions */
    lseek(FD_DUP, 2000, SEEK_SET);
    check((o = offset_of(FD_DATA)) == 2000,
          "fd 30 and 10 should share one file description: after lseek(30, 2000) fd 10 is at %ld",
          (long)o);
    check((o = offset_of(FD_DATA2)) == 99,
          "fd 31 should have its own file description: after lseek(30, 2000) it is at %ld",
          (long)o);

    /* pipe */
    int avail = -1;
    check(fcntl(FD_PIPE_R, F_GETPIPE_SZ) == PIPE_SZ, "pipe size: expected %d found %d", PIPE_SZ,
          fcntl(FD_PIPE_R, F_GETPIPE_SZ));
    check(ioctl(FD_PIPE_R, FIONREAD, &avail) == 0 && avail == PIPE_LEN,
          "pipe: expected %d unread bytes found %d", PIPE_LEN, avail);
    memset(buf, 0, sizeof buf);
    ssize_t n = read(FD_PIPE_R, buf, PIPE_LEN);
    if (check(n == PIPE_LEN, "pipe read: expected %d bytes got %zd", PIPE_LEN, n))
        wl_check_pattern("pipe content", buf, PIPE_LEN, S_PIPE, 0);
    n = read(FD_PIPE_R, buf, 16);
    check(n < 0 && errno == EAGAIN, "pipe: expected EAGAIN after the data, got %zd", n);
    /* fifo */
    avail = -1;
    check(ioctl(FD_FIFO, FIONREAD, &avail) == 0 && avail == FIFO_LEN,
          "fifo: expected %d unread bytes found %d", FIFO_LEN, avail);
    memset(buf, 0, sizeof buf);
    n = avail > 0 ? read(FD_FIFO, buf, FIFO_LEN) : -1;
    if (check(n == FIFO_LEN, "fifo read: expected %d bytes got %zd", FIFO_LEN, n))
        wl_check_pattern("fifo content", buf, FIFO_LEN, S_FIFO, 0);
    avail = -1;
    check(ioctl(FD_FIFO, FIONREAD, &avail) == 0 && avail == 0,
          "fifo: expected empty after reading, FIONREAD %d", avail);
    /* eventfd */
    uint64_t cnt = 0;
    n = read(FD_EVENT, &cnt, 8);
    check(n == 8 && cnt == 42, "eventfd: expected counter 42 found %lu (read %zd)",
          (unsigned long)cnt, n);
    n = read(FD_EVENT, &cnt, 8);
    check(n < 0 && errno == EAGAIN, "eventfd: expected EAGAIN after reading the counter, got %zd", n);
    /* signalfd */
    struct signalfd_siginfo ssi;
    memset(&ssi, 0, sizeof ssi);
    n = read(FD_SIGNAL, &ssi, sizeof ssi);
    check(n == sizeof ssi && ssi.ssi_signo == SIGUSR1 && ssi.ssi_code == SI_QUEUE &&
              ssi.ssi_int == 0x5151 && ssi.ssi_pid == (uint32_t)getpid(),
          "signalfd: expected SIGUSR1 (SI_QUEUE, value 0x5151, our pid), read %zd: signo %u "
          "code %d value 0x%x pid %u",
          n, ssi.ssi_signo, ssi.ssi_code, ssi.ssi_int, ssi.ssi_pid);
    n = read(FD_SIGNAL, &ssi, sizeof ssi);
    check(n < 0 && errno == EAGAIN, "signalfd: expected EAGAIN after one signal, got %zd", n);
    /* timerfd */
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    int r = timerfd_gettime(FD_TIMER, &its);
    long long rem_ns = its.it_value.tv_sec * 1000000000LL + its.it_value.tv_nsec;
    check(r == 0 && its.it_interval.tv_sec == 1000 && its.it_interval.tv_nsec == 0 &&
              rem_ns > 0 && rem_ns <= 1000000000000LL,
          "timerfd: expected interval 1000 s and 0 < remaining <= 1000 s, found interval "
          "%ld.%09ld remaining %ld.%09ld",
          (long)its.it_interval.tv_sec, its.it_interval.tv_nsec, (long)its.it_value.tv_sec,
          its.it_value.tv_nsec);
    wl_finish();
}
