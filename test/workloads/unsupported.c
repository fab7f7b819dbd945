/*
 * unsupported — holds a resource Ferry must refuse to checkpoint, and
 * otherwise counts like `counter`.
 *
 *   unsupported <result-file> <mode> [tmpdir]
 *
 *   tty          a pseudo-terminal pair: master (posix_openpt) at fd 40,
 *                slave at fd 41
 *   iouring      an io_uring instance (io_uring_setup, 8 entries) at fd 40,
 *                its SQ/CQ rings mmap'd
 *   inotify      inotify_init1 at fd 40 watching tmpdir (default: the result
 *                file's directory)
 *   perf         perf_event_open(PERF_COUNT_SW_TASK_CLOCK, this process) at fd 40
 *   userfaultfd  userfaultfd (after UFFDIO_API) at fd 40
 *   udp          a UDP socket bound to 0.0.0.0:5353 at fd 40 (run it in a
 *                network namespace of its own: the port may be taken)
 *   packet       an AF_PACKET SOCK_RAW socket for ETH_P_ALL at fd 40
 *
 * Used to test that a checkpoint is refused, names the resource, and leaves
 * the process running unharmed. Between READY and SIGTERM: counter loop with
 * a 1 ms nanosleep. At SIGTERM: the counter advanced since READY, and fd 40
 * (and 41) still point at the same object (readlink of /proc/self/fd/N
 * unchanged).
 */
#include "wl.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <netinet/in.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define FD_A 40
#define FD_B 41

static void place(int fd, int want, const char *what)
{
    if (fd < 0)
        wl_setup_fail("%s: %s", what, strerror(errno));
    if (fd != want) {
        if (dup2(fd, want) != want)
            wl_setup_fail("dup2(%s -> %d): %s", what, want, strerror(errno));
        close(fd);
    }
}

static void fd_link(int fd, char *out, size_t cap)
{
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(p, out, cap - 1);
    if (n < 0)
        snprintf(out, cap, "<%s>", strerror(errno));
    else
        out[n] = 0;
}

volatile uint64_t g_counter;

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    if (argc < 3)
        wl_setup_fail("usage: unsupported <result-file> <tty|iouring|inotify|perf|userfaultfd|udp|packet> [tmpdir]");
    const char *mode = argv[2];
    char tmpdir[4096];
    if (argc > 3 && argv[3][0]) {
        snprintf(tmpdir, sizeof tmpdir, "%s", argv[3]);
    } else {
        snprintf(tmpdir, sizeof tmpdir, "%s", wl_result_path);
        char *sl = strrchr(tmpdir, '/');
        if (sl == tmpdir)
            sl[1] = 0;
        else if (sl)
            *sl = 0;
    }
    int nfd = 1;

    if (!strcmp(mode, "tty")) {
        int m = posix_openpt(O_RDWR | O_NOCTTY);
        if (m < 0 || grantpt(m) != 0 || unlockpt(m) != 0)
            wl_setup_fail("posix_openpt: %s", strerror(errno));
        char *name = ptsname(m);
        if (!name)
            wl_setup_fail("ptsname: %s", strerror(errno));
        int s = open(name, O_RDWR | O_NOCTTY);
        place(m, FD_A, "pty master");
        place(s, FD_B, name);
        nfd = 2;
    } else if (!strcmp(mode, "iouring")) {
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        int fd = (int)syscall(SYS_io_uring_setup, 8, &p);
        if (fd < 0)
            wl_setup_fail("io_uring_setup: %s", strerror(errno));
        size_t sq_len = p.sq_off.array + p.sq_entries * sizeof(uint32_t);
        if (mmap(NULL, sq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                 IORING_OFF_SQ_RING) == MAP_FAILED)
            wl_setup_fail("mmap SQ ring: %s", strerror(errno));
        if (!(p.features & IORING_FEAT_SINGLE_MMAP)) {
            size_t cq_len = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
            if (mmap(NULL, cq_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                     IORING_OFF_CQ_RING) == MAP_FAILED)
                wl_setup_fail("mmap CQ ring: %s", strerror(errno));
        }
        place(fd, FD_A, "io_uring");
    } else if (!strcmp(mode, "inotify")) {
        int fd = inotify_init1(IN_NONBLOCK);
        if (fd < 0 || inotify_add_watch(fd, tmpdir, IN_CREATE | IN_DELETE | IN_MODIFY) < 0)
            wl_setup_fail("inotify on %s: %s", tmpdir, strerror(errno));
        place(fd, FD_A, "inotify");
    } else if (!strcmp(mode, "perf")) {
        struct perf_event_attr a;
        memset(&a, 0, sizeof a);
        a.type = PERF_TYPE_SOFTWARE;
        a.size = sizeof a;
        a.config = PERF_COUNT_SW_TASK_CLOCK;
        a.exclude_kernel = 1;
        a.exclude_hv = 1;
        int fd = (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0);
        place(fd, FD_A, "perf_event_open");
    } else if (!strcmp(mode, "userfaultfd")) {
        int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
        if (fd < 0)
            wl_setup_fail("userfaultfd: %s", strerror(errno));
        struct uffdio_api api = {.api = UFFD_API, .features = 0};
        if (ioctl(fd, UFFDIO_API, &api) != 0)
            wl_setup_fail("UFFDIO_API: %s", strerror(errno));
        place(fd, FD_A, "userfaultfd");
    } else if (!strcmp(mode, "udp")) {
        int fd = socket(AF_INET, SOCK_DGRAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(5353), .sin_addr = {htonl(INADDR_ANY)}};
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0)
            wl_setup_fail("UDP socket on 0.0.0.0:5353: %s", strerror(errno));
        place(fd, FD_A, "UDP socket");
    } else if (!strcmp(mode, "packet")) {
        int fd = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
        if (fd < 0)
            wl_setup_fail("AF_PACKET socket: %s", strerror(errno));
        place(fd, FD_A, "packet socket");
    } else {
        wl_setup_fail("unknown mode '%s' (tty|iouring|inotify|perf|userfaultfd|udp|packet)", mode);
    }

    char link_before[2][256], link_after[2][256];
    for (int i = 0; i < nfd; i++)
        fd_link(FD_A + i, link_before[i], sizeof link_before[i]);
    wl_dbg("mode %s: fd %d -> %s", mode, FD_A, link_before[0]);

    uint64_t counter = 0;
    g_counter = counter;
    const uint64_t at_ready = counter;
    struct timespec ts = {0, 1000000};
    wl_ready();
    for (;;) {
        nanosleep(&ts, NULL);
        counter++;
        g_counter = counter;
        if (wl_term)
            break;
    }

    check(counter > at_ready, "counter did not advance: %lu at READY, %lu at SIGTERM",
          (unsigned long)at_ready, (unsigned long)counter);
    check(g_counter == counter, "global counter %lu differs from the loop's counter %lu",
          (unsigned long)g_counter, (unsigned long)counter);
    for (int i = 0; i < nfd; i++) {
        fd_link(FD_A + i, link_after[i], sizeof link_after[i]);
        check(!strcmp(link_before[i], link_after[i]), "fd %d: expected '%s' found '%s'", FD_A + i,
              link_before[i], link_after[i]);
    }
    wl_finish();
}
