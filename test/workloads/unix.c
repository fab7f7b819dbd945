/*
 * unix — UNIX domain sockets of every shape, with data queued in them.
 *
 *   unix <result-file> [tmpdir] [rights]
 *
 * Before READY it builds (socket files live in tmpdir/s, which is also the
 * process's cwd; tmpdir is made 0755 so that other uids can reach them):
 *   40/41  socketpair STREAM; 40 O_NONBLOCK, SO_SNDBUF 64 KiB; 41 FD_CLOEXEC,
 *          SO_RCVBUF 32 KiB. Queued: 3000 bytes to 40 (three writes), 1500
 *          bytes to 41.
 *   42/43  socketpair SEQPACKET; 43 SO_SNDBUF 1 MiB. Queued to 42: records of
 *          100, 1, 300000 (more than a default send buffer holds) and 7
 *          bytes; to 43: 50 and 60. 42 has SO_PEEK_OFF 100 (it peeked the
 *          first record).
 *   44/45  socketpair DGRAM; 44 SO_PASSCRED before it sends (so it autobinds
 *          to an abstract name). Queued to 44: 10, 0 and 2000 bytes (with
 *          SCM_CREDENTIALS); to 45: 33 bytes from 44's autobound name. 45
 *          SO_RCVTIMEO 3.5 s.
 *   46     STREAM listener on s/listen.sock (mode 0777), backlog 5; 47's
 *          connection waits in its accept queue.
 *   47     STREAM client of 46, not accepted yet.
 *   48/49  48 bound to s/client.sock, connected to 46 as euid/egid 1001; 49
 *          the accepted end, SO_PASSCRED. Queued: 700 bytes to 49 (with
 *          credentials), 400 bytes to 48. 48 SO_RCVLOWAT 5.
 *   50     SEQPACKET listener on @ferry-wl-unix-<pid>.
 *   51/52  51 connected to 50, 52 accepted. Queued to 52: records of 20, 30.
 *   53     DGRAM bound to @ferry-wl-dgram-<pid>, SO_TIMESTAMPNS. Queued, in
 *          order: "m54-1" from 54, "m55-1" from 55, "m54-2" from 54.
 *   54     DGRAM unbound, connected to 53 (one way).
 *   55     DGRAM bound to s/dgram.sock.
 *   56/57  socketpair STREAM made as euid/egid 1000; 256 bytes queued to 57,
 *          then shutdown(56, SHUT_WR).
 *   58     STREAM whose peer closed after sending 300 bytes.
 *   59     STREAM whose peer closed after sending 20 bytes while 10 bytes
 *          it had not read were queued to it (pending ECONNRESET).
 *   60     DGRAM bound to @ferry-wl-dgram2-<pid>, connected to a socket bound
 *          to @ferry-wl-gone-<pid> that sent it 2 datagrams and closed.
 *   61     STREAM, never bound or connected.
 *   62     STREAM listener bound to the relative name "rel.sock" (from s/).
 *   63     STREAM listener bound to s/gone.sock, whose file was then removed.
 *   64/65, 66/67  clients (64, 66) of a listener on s/closed.sock, and the
 *          ends it accepted (65, 67: named like it), after the listener
 *          closed. Queued: 90 bytes to 65.
 *   68     STREAM client of 46 whose accepted end sent it 5 bytes and closed.
 *   with "rights": 70/71 socketpair STREAM; 71 sent 5 bytes to 70 with
 *          fd 61 attached (SCM_RIGHTS), left unread.
 * and records, for every socket: fstat type, F_GETFL/F_GETFD, SO_TYPE,
 * SO_DOMAIN, getsockname, getpeername, SO_ACCEPTCONN, SO_SNDBUF/RCVBUF,
 * SO_PASSCRED, SO_PEEK_OFF, SO_RCVLOWAT, SO_RCVTIMEO, SO_TIMESTAMPNS,
 * SO_PEERCRED; the mode and owner of the socket files; the credentials of
 * the first message queued to 44 and to 49.
 * Between READY and SIGTERM: 10 ms nanosleeps.
 * At SIGTERM: all of the above unchanged; then every queue yields exactly
 * its bytes, in order, record and datagram boundaries kept, datagrams from
 * the same senders (recvfrom), credentials unchanged, and then nothing
 * (EAGAIN); 57 then reads EOF and 56 gets EPIPE; 58 reads EOF; 59 reads its
 * bytes, then ECONNRESET, then EOF; 60 gets ECONNREFUSED on send; every
 * connected pair still talks both ways; 46 accepts 47's waiting connection,
 * and 46, 50 and 62 accept new clients connecting by name (path, abstract,
 * relative); 61 can still connect; s/gone.sock is still absent; with
 * "rights", 70 receives its bytes and a working fd of 61's socket.
 */
#include "wl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define N_SOCK 31
static const int all_fds[N_SOCK] = {40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
                                    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 70, 71};

#define SEQ_BIG 300000

struct sockstate {
    int present, fl, fdfl, type, domain, acceptconn, sndbuf, rcvbuf, passcred, peekoff, rcvlowat,
        tsns;
    socklen_t namelen, peerlen;
    int peer_errno;
    char name[sizeof(struct sockaddr_un)], peer[sizeof(struct sockaddr_un)];
    struct timeval rcvtimeo;
    struct ucred cred;
    dev_t dev;
    ino_t ino;
};

static struct sockstate before[N_SOCK];
static char dir[4096], sdir[4200];
static char p_listen[4300], p_client[4300], p_dgram[4300], p_rel[4300], p_gone[4300], p_closed[4300];
static char a_seq[64], a_dgram[64], a_dgram2[64], a_gone[64];
static struct stat st_before[5];
static struct ucred cred44, cred49;
static int rights;
static uint8_t big[SEQ_BIG + 4096];

static socklen_t path_addr(struct sockaddr_un *sa, const char *path)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    snprintf(sa->sun_path, sizeof sa->sun_path, "%s", path);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
}

static socklen_t abstract_addr(struct sockaddr_un *sa, const char *name)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    size_t n = strlen(name);
    memcpy(sa->sun_path + 1, name, n);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static void place(int fd, int want, int cloexec, const char *what)
{
    if (fd < 0)
        wl_setup_fail("%s: %s", what, strerror(errno));
    if (fd == want)
        return;
    if (dup3(fd, want, cloexec ? O_CLOEXEC : 0) != want)
        wl_setup_fail("dup3(%s -> %d): %s", what, want, strerror(errno));
    close(fd);
}

static void pair(int type, int a, int b, const char *what)
{
    int sv[2];
    if (socketpair(AF_UNIX, type, 0, sv) != 0)
        wl_setup_fail("socketpair %s: %s", what, strerror(errno));
    place(sv[0], a, 0, what);
    place(sv[1], b, 0, what);
}

static void opt(int fd, int name, int value, const char *what)
{
    if (setsockopt(fd, SOL_SOCKET, name, &value, sizeof value) != 0)
        wl_setup_fail("setsockopt(%d, %s): %s", fd, what, strerror(errno));
}

static void sendp(int fd, uint64_t seed, size_t off, size_t len, const char *what)
{
    wl_pattern_fill(big, len, seed, off);
    if (send(fd, big, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len)
        wl_setup_fail("send %s (%zu bytes): %s", what, len, strerror(errno));
}

static void sendto_p(int fd, const struct sockaddr_un *to, socklen_t tolen, const char *text)
{
    if (sendto(fd, text, strlen(text), MSG_DONTWAIT, (const struct sockaddr *)to, tolen) !=
        (ssize_t)strlen(text))
        wl_setup_fail("sendto %s: %s", text, strerror(errno));
}

static void snapshot(int fd, struct sockstate *s)
{
    memset(s, 0, sizeof *s);
    struct stat st;
    if (fstat(fd, &st) != 0)
        return;
    s->present = S_ISSOCK(st.st_mode);
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    s->fl = fcntl(fd, F_GETFL);
    s->fdfl = fcntl(fd, F_GETFD);
    socklen_t l = sizeof(int);
#define GETI(opt, field) (l = sizeof(int), getsockopt(fd, SOL_SOCKET, opt, &s->field, &l))
    GETI(SO_TYPE, type);
    GETI(SO_DOMAIN, domain);
    GETI(SO_ACCEPTCONN, acceptconn);
    GETI(SO_SNDBUF, sndbuf);
    GETI(SO_RCVBUF, rcvbuf);
    GETI(SO_PASSCRED, passcred);
    GETI(SO_PEEK_OFF, peekoff);
    GETI(SO_RCVLOWAT, rcvlowat);
    GETI(SO_TIMESTAMPNS, tsns);
#undef GETI
    l = sizeof s->rcvtimeo;
    getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &s->rcvtimeo, &l);
    l = sizeof s->cred;
    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &s->cred, &l);
    s->namelen = sizeof s->name;
    getsockname(fd, (struct sockaddr *)s->name, &s->namelen);
    s->peerlen = sizeof s->peer;
    if (getpeername(fd, (struct sockaddr *)s->peer, &s->peerlen) != 0) {
        s->peer_errno = errno;
        s->peerlen = 0;
    }
}

static const char *show(const char *sa, socklen_t len)
{
    static char out[2][256];
    static int k;
    char *o = out[k++ & 1];
    size_t n = len > 2 ? len - 2 : 0, w = 0;
    const char *p = sa + 2;
    if (!n)
        return "(unbound)";
    for (size_t i = 0; i < n && w + 5 < sizeof out[0]; i++) {
        if (p[i] == 0 && i + 1 == n && p[0] != 0)
            break;
        w += (size_t)snprintf(o + w, sizeof out[0] - w, p[i] >= 32 && p[i] < 127 ? "%c" : "\\x%02x",
                              (unsigned char)p[i]);
    }
    return o;
}

static void compare(int fd, const struct sockstate *b, const struct sockstate *a)
{
#define SAME(field, what)                                                                   \
    check(a->field == b->field, "fd %d: %s was %ld, now %ld", fd, what, (long)b->field, \
          (long)a->field)
    if (!check(a->present, "fd %d: no longer a socket", fd))
        return;
    SAME(fl, "F_GETFL");
    SAME(fdfl, "F_GETFD");
    SAME(type, "SO_TYPE");
    SAME(domain, "SO_DOMAIN");
    SAME(acceptconn, "SO_ACCEPTCONN");
    SAME(sndbuf, "SO_SNDBUF");
    SAME(rcvbuf, "SO_RCVBUF");
    SAME(passcred, "SO_PASSCRED");
    SAME(peekoff, "SO_PEEK_OFF");
    SAME(rcvlowat, "SO_RCVLOWAT");
    SAME(tsns, "SO_TIMESTAMPNS");
    SAME(rcvtimeo.tv_sec, "SO_RCVTIMEO seconds");
    SAME(rcvtimeo.tv_usec, "SO_RCVTIMEO microseconds");
    SAME(cred.pid, "SO_PEERCRED pid");
    SAME(cred.uid, "SO_PEERCRED uid");
    SAME(cred.gid, "SO_PEERCRED gid");
    SAME(peer_errno, "getpeername errno");
#undef SAME
    check(a->namelen == b->namelen && !memcmp(a->name, b->name, a->namelen),
          "fd %d: getsockname was '%s' (%u bytes), now '%s' (%u bytes)", fd,
          show(b->name, b->namelen), b->namelen, show(a->name, a->namelen), a->namelen);
    check(a->peerlen == b->peerlen && !memcmp(a->peer, b->peer, a->peerlen),
          "fd %d: getpeername was '%s' (%u bytes), now '%s' (%u bytes)", fd,
          show(b->peer, b->peerlen), b->peerlen, show(a->peer, a->peerlen), a->peerlen);
}

/* Reads exactly len bytes from a stream socket (a few reads at most) and checks the pattern. */
static void recv_stream(int fd, uint64_t seed, size_t len, const char *what)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = recv(fd, big + got, len - got, MSG_DONTWAIT);
        if (!check(n > 0, "%s (fd %d): read %zd after %zu of %zu bytes: %s", what, fd, n, got,
                   len, n < 0 ? strerror(errno) : "EOF"))
            return;
        got += (size_t)n;
    }
    wl_check_pattern(what, big, len, seed, 0);
}

static void expect_empty(int fd, const char *what)
{
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
    check(n < 0 && errno == EAGAIN, "%s (fd %d): expected nothing more (EAGAIN), got %zd %s", what,
          fd, n, n < 0 ? strerror(errno) : "");
}

/* One record or datagram: exactly `len` pattern bytes (seed, offset), nothing cut. */
static void recv_record(int fd, uint64_t seed, size_t off, size_t len, const char *what)
{
    ssize_t n = recv(fd, big, sizeof big, MSG_DONTWAIT | MSG_TRUNC);
    if (check(n == (ssize_t)len, "%s (fd %d): expected a %zu-byte message, got %zd %s", what, fd,
              len, n, n < 0 ? strerror(errno) : ""))
        wl_check_pattern(what, big, len, seed, off);
}

static void recv_from(int fd, const char *text, const char *from, socklen_t fromlen, const char *what)
{
    struct sockaddr_un sa;
    socklen_t l = sizeof sa;
    char b[64];
    ssize_t n = recvfrom(fd, b, sizeof b, MSG_DONTWAIT, (struct sockaddr *)&sa, &l);
    if (!check(n == (ssize_t)strlen(text) && !memcmp(b, text, (size_t)n),
               "%s (fd %d): expected '%s', got %zd bytes %s", what, fd, text, n,
               n < 0 ? strerror(errno) : ""))
        return;
    check(l == fromlen && !memcmp(&sa, from, l), "%s (fd %d): expected from '%s', got '%s'", what,
          fd, show(from, fromlen), show((char *)&sa, l));
}

static int recv_creds(int fd, void *b, size_t len, struct ucred *c, int peek)
{
    char control[CMSG_SPACE(sizeof(struct ucred))];
    struct iovec iov = {b, len};
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    ssize_t n = recvmsg(fd, &m, MSG_DONTWAIT | (peek ? MSG_PEEK : 0));
    memset(c, 0, sizeof *c);
    for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
        if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_CREDENTIALS)
            memcpy(c, CMSG_DATA(h), sizeof *c);
    return (int)n;
}

/* Both ends still talk: a byte each way. */
static void talk(int a, int b, const char *what)
{
    char c = 0;
    check(send(a, "A", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1, "%s: send %d -> %d: %s", what, a, b,
          strerror(errno));
    check(recv(b, &c, 1, MSG_DONTWAIT) == 1 && c == 'A', "%s: %d did not receive from %d", what,
          b, a);
    check(send(b, "B", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1, "%s: send %d -> %d: %s", what, b, a,
          strerror(errno));
    check(recv(a, &c, 1, MSG_DONTWAIT) == 1 && c == 'B', "%s: %d did not receive from %d", what,
          a, b);
}

/* A new client connects to a listener by `sa` and the listener accepts it. */
static void new_client(int listener, int type, const struct sockaddr_un *sa, socklen_t len,
                       const char *what)
{
    int c = socket(AF_UNIX, type, 0);
    if (!check(connect(c, (const struct sockaddr *)sa, len) == 0, "%s: connect: %s", what,
               strerror(errno))) {
        close(c);
        return;
    }
    int s = accept4(listener, NULL, NULL, SOCK_NONBLOCK);
    if (check(s >= 0, "%s: accept: %s", what, strerror(errno))) {
        talk(c, s, what);
        close(s);
    }
    close(c);
}

static void file_state(const char *p, struct stat *st)
{
    if (lstat(p, st) != 0)
        memset(st, 0, sizeof *st);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    if (argc > 2 && argv[2][0]) {
        snprintf(dir, sizeof dir, "%s", argv[2]);
    } else {
        snprintf(dir, sizeof dir, "%s", wl_result_path);
        char *sl = strrchr(dir, '/');
        if (sl)
            *sl = 0;
    }
    rights = argc > 3 && !strcmp(argv[3], "rights");
    snprintf(sdir, sizeof sdir, "%s/s", dir);
    if (chmod(dir, 0755) != 0 || (mkdir(sdir, 0755) != 0 && errno != EEXIST) || chdir(sdir) != 0)
        wl_setup_fail("%s: %s", sdir, strerror(errno));
    snprintf(p_listen, sizeof p_listen, "%s/listen.sock", sdir);
    snprintf(p_client, sizeof p_client, "%s/client.sock", sdir);
    snprintf(p_dgram, sizeof p_dgram, "%s/dgram.sock", sdir);
    snprintf(p_rel, sizeof p_rel, "%s/rel.sock", sdir);
    snprintf(p_gone, sizeof p_gone, "%s/gone.sock", sdir);
    snprintf(p_closed, sizeof p_closed, "%s/closed.sock", sdir);
    snprintf(a_seq, sizeof a_seq, "ferry-wl-unix-%d", getpid());
    snprintf(a_dgram, sizeof a_dgram, "ferry-wl-dgram-%d", getpid());
    snprintf(a_dgram2, sizeof a_dgram2, "ferry-wl-dgram2-%d", getpid());
    snprintf(a_gone, sizeof a_gone, "ferry-wl-gone-%d", getpid());
    struct sockaddr_un sa;
    socklen_t len;

    /* 40/41 */
    pair(SOCK_STREAM, 40, 41, "stream pair");
    fcntl(40, F_SETFL, O_NONBLOCK);
    fcntl(41, F_SETFD, FD_CLOEXEC);
    opt(40, SO_SNDBUF, 64 * 1024, "SO_SNDBUF");
    opt(41, SO_RCVBUF, 32 * 1024, "SO_RCVBUF");
    for (int i = 0; i < 3; i++)
        sendp(41, 0x4040, (size_t)i * 1000, 1000, "41 -> 40");
    sendp(40, 0x4141, 0, 1500, "40 -> 41");

    /* 42/43 */
    pair(SOCK_SEQPACKET, 42, 43, "seqpacket pair");
    opt(43, SO_SNDBUF, 1 << 20, "SO_SNDBUF 1 MiB");
    sendp(43, 0x4242, 0, 100, "43 -> 42 #1");
    sendp(43, 0x4242, 100, 1, "43 -> 42 #2");
    sendp(43, 0x4242, 101, SEQ_BIG, "43 -> 42 #3");
    sendp(43, 0x4242, 101 + SEQ_BIG, 7, "43 -> 42 #4");
    sendp(42, 0x4343, 0, 50, "42 -> 43 #1");
    sendp(42, 0x4343, 50, 60, "42 -> 43 #2");
    opt(42, SO_PEEK_OFF, 0, "SO_PEEK_OFF");
    if (recv(42, big, sizeof big, MSG_PEEK | MSG_DONTWAIT) != 100)
        wl_setup_fail("peek 42: %s", strerror(errno));

    /* 44/45 */
    pair(SOCK_DGRAM, 44, 45, "dgram pair");
    opt(44, SO_PASSCRED, 1, "SO_PASSCRED");
    {
        struct timeval tv = {3, 500000};
        setsockopt(45, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    }
    sendp(45, 0x4444, 0, 10, "45 -> 44 #1");
    sendp(45, 0x4444, 10, 0, "45 -> 44 #2");
    sendp(45, 0x4444, 10, 2000, "45 -> 44 #3");
    sendp(44, 0x4545, 0, 33, "44 -> 45");

    /* 46, 47, 48/49 */
    unlink(p_listen);
    unlink(p_client);
    place(socket(AF_UNIX, SOCK_STREAM, 0), 46, 0, "listener");
    len = path_addr(&sa, p_listen);
    if (bind(46, (struct sockaddr *)&sa, len) != 0 || chmod(p_listen, 0777) != 0 || listen(46, 5) != 0)
        wl_setup_fail("listen on %s: %s", p_listen, strerror(errno));
    place(socket(AF_UNIX, SOCK_STREAM, 0), 48, 0, "client");
    {
        struct sockaddr_un ca;
        socklen_t cl = path_addr(&ca, p_client);
        if (bind(48, (struct sockaddr *)&ca, cl) != 0)
            wl_setup_fail("bind %s: %s", p_client, strerror(errno));
    }
    if (setresgid(-1, 1001, -1) || setresuid(-1, 1001, -1))
        wl_setup_fail("become 1001: %s", strerror(errno));
    int rc = connect(48, (struct sockaddr *)&sa, len);
    if (setresuid(-1, 0, -1) || setresgid(-1, 0, -1))
        wl_setup_fail("become root again: %s", strerror(errno));
    if (rc != 0)
        wl_setup_fail("connect 48 as uid 1001: %s", strerror(errno));
    place(accept(46, NULL, NULL), 49, 0, "accept 49");
    opt(49, SO_PASSCRED, 1, "SO_PASSCRED");
    opt(48, SO_RCVLOWAT, 5, "SO_RCVLOWAT");
    sendp(48, 0x4848, 0, 700, "48 -> 49");
    sendp(49, 0x4949, 0, 400, "49 -> 48");
    place(socket(AF_UNIX, SOCK_STREAM, 0), 68, 0, "68");
    if (connect(68, (struct sockaddr *)&sa, len) != 0)
        wl_setup_fail("connect 68: %s", strerror(errno));
    {
        int s68 = accept(46, NULL, NULL);
        if (s68 < 0)
            wl_setup_fail("accept 68: %s", strerror(errno));
        sendp(s68, 0x6868, 0, 5, "server end -> 68");
        close(s68);
    }
    place(socket(AF_UNIX, SOCK_STREAM, 0), 47, 0, "pending client");
    if (connect(47, (struct sockaddr *)&sa, len) != 0)
        wl_setup_fail("connect 47: %s", strerror(errno));

    /* 50, 51/52 */
    place(socket(AF_UNIX, SOCK_SEQPACKET, 0), 50, 0, "seqpacket listener");
    len = abstract_addr(&sa, a_seq);
    if (bind(50, (struct sockaddr *)&sa, len) != 0 || listen(50, 3) != 0)
        wl_setup_fail("listen on @%s: %s", a_seq, strerror(errno));
    place(socket(AF_UNIX, SOCK_SEQPACKET, 0), 51, 0, "seqpacket client");
    if (connect(51, (struct sockaddr *)&sa, len) != 0)
        wl_setup_fail("connect 51: %s", strerror(errno));
    place(accept(50, NULL, NULL), 52, 0, "accept 52");
    sendp(51, 0x5151, 0, 20, "51 -> 52 #1");
    sendp(51, 0x5151, 20, 30, "51 -> 52 #2");

    /* 53, 54, 55 */
    place(socket(AF_UNIX, SOCK_DGRAM, 0), 53, 0, "dgram server");
    len = abstract_addr(&sa, a_dgram);
    if (bind(53, (struct sockaddr *)&sa, len) != 0)
        wl_setup_fail("bind @%s: %s", a_dgram, strerror(errno));
    opt(53, SO_TIMESTAMPNS, 1, "SO_TIMESTAMPNS");
    place(socket(AF_UNIX, SOCK_DGRAM, 0), 54, 0, "dgram client");
    if (connect(54, (struct sockaddr *)&sa, len) != 0)
        wl_setup_fail("connect 54: %s", strerror(errno));
    unlink(p_dgram);
    place(socket(AF_UNIX, SOCK_DGRAM, 0), 55, 0, "dgram named");
    {
        struct sockaddr_un da;
        socklen_t dl = path_addr(&da, p_dgram);
        if (bind(55, (struct sockaddr *)&da, dl) != 0)
            wl_setup_fail("bind %s: %s", p_dgram, strerror(errno));
    }
    if (send(54, "m54-1", 5, 0) != 5)
        wl_setup_fail("send 54: %s", strerror(errno));
    sendto_p(55, &sa, len, "m55-1");
    if (send(54, "m54-2", 5, 0) != 5)
        wl_setup_fail("send 54: %s", strerror(errno));

    /* 56/57 as uid 1000 */
    if (setresgid(-1, 1000, -1) || setresuid(-1, 1000, -1))
        wl_setup_fail("become 1000: %s", strerror(errno));
    {
        int sv[2];
        rc = socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        if (setresuid(-1, 0, -1) || setresgid(-1, 0, -1))
            wl_setup_fail("become root again: %s", strerror(errno));
        if (rc != 0)
            wl_setup_fail("socketpair as 1000: %s", strerror(errno));
        place(sv[0], 56, 0, "56");
        place(sv[1], 57, 0, "57");
    }
    sendp(56, 0x5656, 0, 256, "56 -> 57");
    shutdown(56, SHUT_WR);

    /* 58, 59 */
    {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
            wl_setup_fail("socketpair: %s", strerror(errno));
        place(sv[0], 58, 0, "58");
        sendp(sv[1], 0x5858, 0, 300, "peer -> 58");
        close(sv[1]);
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
            wl_setup_fail("socketpair: %s", strerror(errno));
        place(sv[0], 59, 0, "59");
        sendp(59, 0x0059, 0, 10, "59 -> peer");
        sendp(sv[1], 0x5959, 0, 20, "peer -> 59");
        close(sv[1]);
    }

    /* 60 */
    {
        struct sockaddr_un ga, ma;
        socklen_t gl = abstract_addr(&ga, a_gone), ml = abstract_addr(&ma, a_dgram2);
        int z = socket(AF_UNIX, SOCK_DGRAM, 0);
        place(socket(AF_UNIX, SOCK_DGRAM, 0), 60, 0, "60");
        if (bind(z, (struct sockaddr *)&ga, gl) != 0 || bind(60, (struct sockaddr *)&ma, ml) != 0 ||
            connect(60, (struct sockaddr *)&ga, gl) != 0)
            wl_setup_fail("dgram to a peer that closes: %s", strerror(errno));
        sendto_p(z, &ma, ml, "gone-1");
        sendto_p(z, &ma, ml, "gone-2");
        close(z);
    }

    /* 61, 62, 63 */
    place(socket(AF_UNIX, SOCK_STREAM, 0), 61, 0, "61");
    unlink(p_rel);
    place(socket(AF_UNIX, SOCK_STREAM, 0), 62, 0, "62");
    len = path_addr(&sa, "rel.sock");
    if (bind(62, (struct sockaddr *)&sa, len) != 0 || listen(62, 2) != 0)
        wl_setup_fail("listen on rel.sock: %s", strerror(errno));
    unlink(p_gone);
    place(socket(AF_UNIX, SOCK_STREAM, 0), 63, 0, "63");
    len = path_addr(&sa, p_gone);
    if (bind(63, (struct sockaddr *)&sa, len) != 0 || listen(63, 2) != 0 || unlink(p_gone) != 0)
        wl_setup_fail("listen on %s: %s", p_gone, strerror(errno));

    /* 64-67: connections of a listener that is gone */
    unlink(p_closed);
    {
        int l = socket(AF_UNIX, SOCK_STREAM, 0);
        len = path_addr(&sa, p_closed);
        if (bind(l, (struct sockaddr *)&sa, len) != 0 || listen(l, 2) != 0)
            wl_setup_fail("listen on %s: %s", p_closed, strerror(errno));
        for (int fd = 64; fd <= 66; fd += 2) {
            place(socket(AF_UNIX, SOCK_STREAM, 0), fd, 0, "client of closed.sock");
            if (connect(fd, (struct sockaddr *)&sa, len) != 0)
                wl_setup_fail("connect to %s: %s", p_closed, strerror(errno));
            place(accept(l, NULL, NULL), fd + 1, 0, "accept from closed.sock");
        }
        close(l);
        sendp(64, 0x6464, 0, 90, "64 -> 65");
    }

    if (rights) {
        pair(SOCK_STREAM, 70, 71, "rights pair");
        char cbuf[CMSG_SPACE(sizeof(int))];
        memset(cbuf, 0, sizeof cbuf);
        struct iovec iov = {"fds!!", 5};
        struct msghdr m = {0};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = cbuf;
        m.msg_controllen = sizeof cbuf;
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        h->cmsg_level = SOL_SOCKET;
        h->cmsg_type = SCM_RIGHTS;
        h->cmsg_len = CMSG_LEN(sizeof(int));
        int passed = 61;
        memcpy(CMSG_DATA(h), &passed, sizeof passed);
        if (sendmsg(71, &m, 0) != 5)
            wl_setup_fail("sendmsg SCM_RIGHTS: %s", strerror(errno));
    }

    for (int i = 0; i < N_SOCK; i++)
        snapshot(all_fds[i], &before[i]);
    file_state(p_listen, &st_before[0]);
    file_state(p_client, &st_before[1]);
    file_state(p_dgram, &st_before[2]);
    file_state(p_rel, &st_before[3]);
    file_state(p_closed, &st_before[4]);
    if (recv_creds(44, big, sizeof big, &cred44, 1) != 10 || !cred44.pid)
        wl_setup_fail("no credentials with the first datagram to 44");
    if (recv_creds(49, big, sizeof big, &cred49, 1) != 700 || !cred49.pid)
        wl_setup_fail("no credentials with the stream data to 49");
    wl_dbg("sockets in %s; 44 is %s", sdir, show(before[4].name, before[4].namelen));

    struct timespec ts = {0, 10 * 1000 * 1000};
    wl_ready();
    while (!wl_term)
        nanosleep(&ts, NULL);

    /* Nothing read yet: the sockets as they were. */
    for (int i = 0; i < N_SOCK; i++) {
        if (!before[i].present)
            continue;
        struct sockstate now;
        snapshot(all_fds[i], &now);
        compare(all_fds[i], &before[i], &now);
    }
    const char *files[] = {p_listen, p_client, p_dgram, p_rel, p_closed};
    for (int i = 0; i < 5; i++) {
        struct stat st;
        file_state(files[i], &st);
        check(S_ISSOCK(st.st_mode) && st.st_mode == st_before[i].st_mode &&
                  st.st_uid == st_before[i].st_uid && st.st_gid == st_before[i].st_gid,
              "%s: was a socket file mode 0%o owner %d:%d, now mode 0%o owner %d:%d", files[i],
              st_before[i].st_mode, st_before[i].st_uid, st_before[i].st_gid, st.st_mode, st.st_uid,
              st.st_gid);
    }
    {
        struct stat st;
        check(lstat(p_gone, &st) != 0 && errno == ENOENT, "%s: its file was removed, now it exists",
              p_gone);
    }
    {
        struct ucred c;
        int n = recv_creds(44, big, sizeof big, &c, 1);
        check(n == 10 && c.pid == cred44.pid && c.uid == cred44.uid && c.gid == cred44.gid,
              "44: first datagram of %d bytes with credentials %d:%d:%d, expected 10 bytes with %d:%d:%d",
              n, c.pid, c.uid, c.gid, cred44.pid, cred44.uid, cred44.gid);
        n = recv_creds(49, big, sizeof big, &c, 1);
        check(n == 700 && c.pid == cred49.pid && c.uid == cred49.uid && c.gid == cred49.gid,
              "49: stream data of %d bytes with credentials %d:%d:%d, expected 700 bytes with %d:%d:%d",
              n, c.pid, c.uid, c.gid, cred49.pid, cred49.uid, cred49.gid);
    }
    /* 42 peeked one record: its next peek is the second. */
    check(recv(42, big, sizeof big, MSG_PEEK | MSG_DONTWAIT) == 1,
          "42: with SO_PEEK_OFF 100 a peek should return the 1-byte second record");

    /* The queues, exactly. */
    recv_stream(40, 0x4040, 3000, "stream to 40");
    expect_empty(40, "stream to 40");
    recv_stream(41, 0x4141, 1500, "stream to 41");
    expect_empty(41, "stream to 41");
    recv_record(42, 0x4242, 0, 100, "record 1 to 42");
    recv_record(42, 0x4242, 100, 1, "record 2 to 42");
    recv_record(42, 0x4242, 101, SEQ_BIG, "record 3 to 42");
    recv_record(42, 0x4242, 101 + SEQ_BIG, 7, "record 4 to 42");
    expect_empty(42, "records to 42");
    recv_record(43, 0x4343, 0, 50, "record 1 to 43");
    recv_record(43, 0x4343, 50, 60, "record 2 to 43");
    expect_empty(43, "records to 43");
    recv_record(44, 0x4444, 0, 10, "datagram 1 to 44");
    recv_record(44, 0x4444, 10, 0, "datagram 2 (empty) to 44");
    recv_record(44, 0x4444, 10, 2000, "datagram 3 to 44");
    expect_empty(44, "datagrams to 44");
    {
        struct sockaddr_un from;
        socklen_t fl = sizeof from;
        ssize_t n = recvfrom(45, big, sizeof big, MSG_DONTWAIT, (struct sockaddr *)&from, &fl);
        if (check(n == 33, "datagram to 45: expected 33 bytes, got %zd", n))
            wl_check_pattern("datagram to 45", big, 33, 0x4545, 0);
        check(fl == before[4].namelen && !memcmp(&from, before[4].name, fl),
              "datagram to 45: from '%s', expected 44's name '%s'", show((char *)&from, fl),
              show(before[4].name, before[4].namelen));
        expect_empty(45, "datagrams to 45");
    }
    recv_stream(49, 0x4848, 700, "stream to 49");
    expect_empty(49, "stream to 49");
    recv_stream(48, 0x4949, 400, "stream to 48");
    expect_empty(48, "stream to 48");
    recv_stream(65, 0x6464, 90, "stream to 65");
    expect_empty(65, "stream to 65");
    recv_stream(68, 0x6868, 5, "stream to 68");
    check(recv(68, big, 1, MSG_DONTWAIT) == 0, "68: expected EOF, its accepted end closed");
    recv_record(52, 0x5151, 0, 20, "record 1 to 52");
    recv_record(52, 0x5151, 20, 30, "record 2 to 52");
    expect_empty(52, "records to 52");
    {
        /* recvfrom() reports no address at all for an unbound sender. */
        recv_from(53, "m54-1", "", 0, "datagram 1 to 53");
        recv_from(53, "m55-1", before[15].name, before[15].namelen, "datagram 2 to 53");
        recv_from(53, "m54-2", "", 0, "datagram 3 to 53");
        expect_empty(53, "datagrams to 53");
    }
    recv_stream(57, 0x5656, 256, "stream to 57");
    check(recv(57, big, 1, MSG_DONTWAIT) == 0, "57: expected EOF after 56's shutdown");
    check(send(56, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EPIPE,
          "56: send after SHUT_WR should fail with EPIPE");
    recv_stream(58, 0x5858, 300, "stream to 58");
    check(recv(58, big, 1, MSG_DONTWAIT) == 0, "58: expected EOF, its peer closed");
    check(send(58, "x", 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EPIPE,
          "58: send to a closed peer should fail with EPIPE");
    recv_stream(59, 0x5959, 20, "stream to 59");
    {
        ssize_t n = recv(59, big, 1, MSG_DONTWAIT);
        check(n < 0 && errno == ECONNRESET, "59: expected ECONNRESET after the data, got %zd %s", n,
              n < 0 ? strerror(errno) : "");
        check(recv(59, big, 1, MSG_DONTWAIT) == 0, "59: expected EOF after ECONNRESET");
    }
    {
        char from[sizeof(struct sockaddr_un)];
        struct sockaddr_un ga;
        socklen_t gl = abstract_addr(&ga, a_gone);
        memcpy(from, &ga, gl);
        recv_from(60, "gone-1", from, gl, "datagram 1 to 60");
        recv_from(60, "gone-2", from, gl, "datagram 2 to 60");
        expect_empty(60, "datagrams to 60");
        check(send(60, "x", 1, MSG_DONTWAIT) < 0 && errno == ECONNREFUSED,
              "60: send to its closed peer should fail with ECONNREFUSED");
    }
    if (rights) {
        char b[8], control[CMSG_SPACE(sizeof(int))];
        struct iovec iov = {b, sizeof b};
        struct msghdr m = {0};
        m.msg_iov = &iov;
        m.msg_iovlen = 1;
        m.msg_control = control;
        m.msg_controllen = sizeof control;
        ssize_t n = recvmsg(70, &m, MSG_DONTWAIT);
        struct cmsghdr *h = CMSG_FIRSTHDR(&m);
        int got = -1;
        if (h && h->cmsg_type == SCM_RIGHTS)
            memcpy(&got, CMSG_DATA(h), sizeof got);
        struct stat a, b61;
        check(n == 5 && got >= 0 && fstat(got, &a) == 0 && fstat(61, &b61) == 0 && a.st_ino == b61.st_ino,
              "70: expected 5 bytes and an fd of 61's socket, got %zd bytes and fd %d", n, got);
        talk(70, 71, "70/71");
    }

    /* Still connected, both ways. */
    talk(40, 41, "40/41");
    talk(42, 43, "42/43");
    talk(44, 45, "44/45");
    talk(48, 49, "48/49");
    talk(51, 52, "51/52");
    talk(64, 65, "64/65");
    talk(66, 67, "66/67");
    check(send(57, "y", 1, MSG_DONTWAIT | MSG_NOSIGNAL) == 1 && recv(56, big, 1, MSG_DONTWAIT) == 1,
          "57 -> 56 should still work after 56's SHUT_WR");
    {
        struct sockaddr_un da;
        socklen_t dl = path_addr(&da, p_dgram);
        check(send(54, "n54", 3, MSG_DONTWAIT) == 3, "54: send to 53: %s", strerror(errno));
        recv_from(53, "n54", "", 0, "new datagram from 54");
        struct sockaddr_un ma;
        socklen_t ml = abstract_addr(&ma, a_dgram);
        sendto_p(55, &ma, ml, "n55");
        recv_from(53, "n55", before[15].name, before[15].namelen, "new datagram from 55");
        check(sendto(53, "n53", 3, MSG_DONTWAIT, (struct sockaddr *)&da, dl) == 3, "53 -> 55: %s",
              strerror(errno));
        recv_from(55, "n53", before[13].name, before[13].namelen, "new datagram from 53");
    }

    /* Listeners: the waiting connection, then new ones by name (never waiting for one). */
    fcntl(46, F_SETFL, O_NONBLOCK);
    fcntl(50, F_SETFL, O_NONBLOCK);
    fcntl(62, F_SETFL, O_NONBLOCK);
    {
        int s = accept4(46, NULL, NULL, SOCK_NONBLOCK);
        if (check(s >= 0, "46: the connection from 47 should be waiting: %s", strerror(errno))) {
            talk(47, s, "47 and its accepted end");
            close(s);
        }
        check(accept4(46, NULL, NULL, SOCK_NONBLOCK) < 0 && errno == EAGAIN,
              "46: only one connection should have been waiting");
    }
    len = path_addr(&sa, p_listen);
    new_client(46, SOCK_STREAM, &sa, len, "new client of 46 by path");
    len = abstract_addr(&sa, a_seq);
    new_client(50, SOCK_SEQPACKET, &sa, len, "new client of 50 by abstract name");
    len = path_addr(&sa, p_rel);
    new_client(62, SOCK_STREAM, &sa, len, "new client of 62 (bound to a relative name)");
    len = path_addr(&sa, p_listen);
    if (check(connect(61, (struct sockaddr *)&sa, len) == 0, "61: connect: %s", strerror(errno))) {
        int s = accept4(46, NULL, NULL, SOCK_NONBLOCK);
        if (check(s >= 0, "46: accept 61: %s", strerror(errno))) {
            talk(61, s, "61 and its accepted end");
            close(s);
        }
    }
    wl_finish();
}
