/*
 * tcp — TCP sockets with a live peer: the program Ferry checkpoints. Its
 * peer is `tcp_peer`, a separate program that is never checkpointed and
 * writes its own verdict; tests start the peer first (it says READY at
 * once and then waits for this one), then this one.
 *
 *   tcp <result-file> states <port>
 *   tcp <result-file> echo server|client <port> [6]
 *   tcp <result-file> pending <port>
 *
 * states (peer: `tcp_peer <r> states <port>`): listeners on 127.0.0.1:port
 * and [::1]:port+1 (V6ONLY), and the peer's connections to them, each
 * named by the first byte the peer sends on it:
 *   C0  idle, used to pace the setup ('6' tells the peer C6 is shut).
 *   C1  queues both ways: 1 MiB sent to the peer, which does not read it
 *       (unacknowledged and never transmitted bytes in the send queue); the
 *       peer's 200000 bytes left unread here. Options: SO_KEEPALIVE with
 *       TCP_KEEPIDLE 77, TCP_KEEPINTVL 11, TCP_KEEPCNT 5, TCP_NODELAY,
 *       TCP_USER_TIMEOUT 123456, IP_TOS 0x10, IP_TTL 33, SO_RCVBUF 65536,
 *       SO_LINGER {1, 7}, SO_PRIORITY 3.
 *   C2  3000 bytes sent, then shutdown(SHUT_WR): FIN_WAIT2 (the peer
 *       reads nothing before SIGTERM). O_NONBLOCK.
 *   C3  1 MiB sent, then shutdown(SHUT_WR) with most of it never
 *       transmitted: FIN_WAIT1.
 *   C4  the peer sent 1000 bytes and shut its side: CLOSE_WAIT, unread.
 *   C5  the peer sent 100 bytes and shut its side, then 1 MiB sent and
 *       shutdown(SHUT_WR): LAST_ACK.
 *   C6  1 MiB sent and shutdown(SHUT_WR), then the peer sent 100 bytes and
 *       shut its side: CLOSING.
 *   C7  IPv6: 5000 bytes each way, unread on both sides. TCP_NODELAY,
 *       SO_KEEPALIVE with TCP_KEEPIDLE 300, IPV6_TCLASS 0x20, TCP_CORK.
 *   B   bound to 127.0.0.1:port+2 (SO_REUSEADDR, SO_REUSEPORT), not
 *       connected.  U  never bound, O_NONBLOCK.
 * Each state is checked with TCP_INFO before READY, and for every socket
 * its options (above and the defaults of the rest), SO_TYPE/DOMAIN/
 * PROTOCOL, F_GETFL/F_GETFD and its addresses are recorded.
 * At SIGTERM: all of that unchanged (not the TCP state: a restore may pass
 * through other states on the way; nor IPV6_V6ONLY of a connection, which
 * binding its address sets and which means nothing once connected); then C1 yields exactly the peer's
 * 200000 bytes and, after the peer has read the 1 MiB, 8 more, and 8 are
 * sent back; C2 gets 1000 bytes from the peer (which read the 3000 and EOF);
 * C3 gets 100 (the peer read 1 MiB and EOF); C4 yields 1000 bytes and EOF,
 * then 500 bytes are sent; C5 and C6 yield 100 bytes and EOF; C7 yields
 * 5000 bytes; C0 exchanges a byte; both listeners accept a new connection
 * from the peer and exchange a byte on it; B listens and accepts a
 * connection from a new socket and from U.
 *
 * echo (peer: `tcp_peer <r> stream client|server <port> [6]`): as server,
 * listens on the loopback address and accepts the peer; as client,
 * connects to the peer. Either way it then echoes every byte back
 * (TCP_NODELAY), READY once connected. At SIGTERM: no read or write ever
 * failed, bytes were echoed since READY, TCP_NODELAY and the addresses are
 * unchanged. An EOF from the peer (it closes after its own verdict) ends
 * the echo without failing.
 *
 * pending: a listener on 127.0.0.1:port and a connection to it that is
 * never accepted (it waits in the accept queue). At SIGTERM: accept() gives
 * it, the two ends are each other's peers, and a byte crosses.
 */
#include "tcp_wl.h"

#include <stdlib.h>
#include <sys/ioctl.h>

enum { C0, C1, C2, C3, C4, C5, C6, C7, NCONN };
enum { LIS4 = NCONN, LIS6, BND, UNB, NSOCK };

static const char *const names[NSOCK] = {"C0", "C1", "C2", "C3", "C4", "C5", "C6", "C7", "listener", "listener6", "B", "U"};

struct opt {
    int level, name;
    const char *what;
};

static const struct opt common_opts[] = {
    {SOL_SOCKET, SO_TYPE, "SO_TYPE"},         {SOL_SOCKET, SO_DOMAIN, "SO_DOMAIN"},
    {SOL_SOCKET, SO_PROTOCOL, "SO_PROTOCOL"}, {SOL_SOCKET, SO_KEEPALIVE, "SO_KEEPALIVE"},
    {IPPROTO_TCP, TCP_KEEPIDLE, "TCP_KEEPIDLE"}, {IPPROTO_TCP, TCP_KEEPINTVL, "TCP_KEEPINTVL"},
    {IPPROTO_TCP, TCP_KEEPCNT, "TCP_KEEPCNT"}, {IPPROTO_TCP, TCP_NODELAY, "TCP_NODELAY"},
    {IPPROTO_TCP, TCP_CORK, "TCP_CORK"},      {IPPROTO_TCP, TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT"},
    {SOL_SOCKET, SO_REUSEADDR, "SO_REUSEADDR"}, {SOL_SOCKET, SO_REUSEPORT, "SO_REUSEPORT"},
    {SOL_SOCKET, SO_PRIORITY, "SO_PRIORITY"}, {SOL_SOCKET, SO_RCVLOWAT, "SO_RCVLOWAT"},
    {SOL_SOCKET, SO_OOBINLINE, "SO_OOBINLINE"}, {SOL_SOCKET, SO_ACCEPTCONN, "SO_ACCEPTCONN"},
};
static const struct opt v4_opts[] = {{IPPROTO_IP, IP_TOS, "IP_TOS"}, {IPPROTO_IP, IP_TTL, "IP_TTL"}};
static const struct opt v6_opts[] = {{IPPROTO_IPV6, IPV6_V6ONLY, "IPV6_V6ONLY"}, {IPPROTO_IPV6, IPV6_TCLASS, "IPV6_TCLASS"}};
#define NCOMMON (sizeof common_opts / sizeof common_opts[0])

struct rec {
    int family, fl, fdfl, connected;
    int values[NCOMMON], fam_values[2];
    /* SO_SNDBUF / SO_RCVBUF, when this program set them (otherwise the kernel tunes them). */
    int sndbuf, rcvbuf;
    struct linger linger;
    struct sockaddr_storage name, peer;
    socklen_t namelen, peerlen;
};

static int fds[NSOCK];
static struct rec before[NSOCK];
static int set_sndbuf[NSOCK], set_rcvbuf[NSOCK];
static int port;

static void record(int i, struct rec *r)
{
    int fd = fds[i];
    memset(r, 0, sizeof *r);
    r->family = twl_getint(fd, SOL_SOCKET, SO_DOMAIN);
    r->fl = fcntl(fd, F_GETFL);
    r->fdfl = fcntl(fd, F_GETFD);
    for (size_t k = 0; k < NCOMMON; k++)
        r->values[k] = twl_getint(fd, common_opts[k].level, common_opts[k].name);
    const struct opt *fo = r->family == AF_INET6 ? v6_opts : v4_opts;
    for (int k = 0; k < 2; k++)
        r->fam_values[k] = twl_getint(fd, fo[k].level, fo[k].name);
    r->sndbuf = set_sndbuf[i] ? twl_getint(fd, SOL_SOCKET, SO_SNDBUF) : 0;
    r->rcvbuf = set_rcvbuf[i] ? twl_getint(fd, SOL_SOCKET, SO_RCVBUF) : 0;
    socklen_t len = sizeof r->linger;
    getsockopt(fd, SOL_SOCKET, SO_LINGER, &r->linger, &len);
    r->namelen = sizeof r->name;
    getsockname(fd, (struct sockaddr *)&r->name, &r->namelen);
    r->peerlen = sizeof r->peer;
    r->connected = getpeername(fd, (struct sockaddr *)&r->peer, &r->peerlen) == 0;
}

static void compare(int i)
{
    struct rec now;
    record(i, &now);
    const struct rec *b = &before[i];
    const char *n = names[i];
    check(now.fl == b->fl, "%s: F_GETFL 0x%x, was 0x%x", n, now.fl, b->fl);
    check(now.fdfl == b->fdfl, "%s: F_GETFD 0x%x, was 0x%x", n, now.fdfl, b->fdfl);
    for (size_t k = 0; k < NCOMMON; k++)
        check(now.values[k] == b->values[k], "%s: %s is %d, was %d", n, common_opts[k].what, now.values[k], b->values[k]);
    const struct opt *fo = b->family == AF_INET6 ? v6_opts : v4_opts;
    for (int k = 0; k < 2; k++) {
        /* Binding to an IPv6 address that is not IPv4-mapped sets IPV6_V6ONLY, which then means nothing on a connection: a restore that binds it shows 1. */
        if (b->connected && fo == v6_opts && fo[k].name == IPV6_V6ONLY)
            continue;
        check(now.fam_values[k] == b->fam_values[k], "%s: %s is %d, was %d", n, fo[k].what, now.fam_values[k], b->fam_values[k]);
    }
    check(now.sndbuf == b->sndbuf, "%s: SO_SNDBUF is %d, was %d", n, now.sndbuf, b->sndbuf);
    check(now.rcvbuf == b->rcvbuf, "%s: SO_RCVBUF is %d, was %d", n, now.rcvbuf, b->rcvbuf);
    check(now.linger.l_onoff == b->linger.l_onoff && now.linger.l_linger == b->linger.l_linger, "%s: SO_LINGER {%d, %d}, was {%d, %d}", n,
          now.linger.l_onoff, now.linger.l_linger, b->linger.l_onoff, b->linger.l_linger);
    check(now.namelen == b->namelen && memcmp(&now.name, &b->name, b->namelen) == 0, "%s: getsockname changed", n);
    check(now.connected == b->connected, "%s: getpeername %s", n, now.connected ? "answers now" : "fails now");
    if (b->connected)
        check(now.peerlen == b->peerlen && memcmp(&now.peer, &b->peer, b->peerlen) == 0, "%s: getpeername changed", n);
}

static void setint(int i, int level, int name, int value, const char *what)
{
    if (setsockopt(fds[i], level, name, &value, sizeof value) != 0)
        wl_setup_fail("%s: setsockopt %s: %s", names[i], what, strerror(errno));
    if (level == SOL_SOCKET && (name == SO_SNDBUF || name == SO_SNDBUFFORCE))
        set_sndbuf[i] = 1;
    if (level == SOL_SOCKET && (name == SO_RCVBUF || name == SO_RCVBUFFORCE))
        set_rcvbuf[i] = 1;
}

static void send_setup(int i, size_t n, uint64_t seed)
{
    if (twl_write_pattern(fds[i], n, seed, names[i]) != 0)
        wl_setup_fail("sending %zu bytes on %s", n, names[i]);
}

static void shut_wr(int i)
{
    if (shutdown(fds[i], SHUT_WR) != 0)
        wl_setup_fail("shutdown(%s): %s", names[i], strerror(errno));
}

/* Waits until the connection reaches `state` (the peer's part of the setup may still be under way). */
static void await_state(int i, int state, const char *what)
{
    int64_t deadline = wl_now_ns() + (int64_t)TWL_TIMEOUT_MS * 1000000;
    while (twl_state(fds[i]) != state) {
        if (twl_ms_left(deadline) == 0)
            wl_setup_fail("%s did not reach %s (TCP state %d)", names[i], what, twl_state(fds[i]));
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void await_inq(int i, int bytes)
{
    int64_t deadline = wl_now_ns() + (int64_t)TWL_TIMEOUT_MS * 1000000;
    int inq = 0;
    while (ioctl(fds[i], FIONREAD, &inq) == 0 && inq < bytes) {
        if (twl_ms_left(deadline) == 0)
            break;
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    if (inq < bytes)
        wl_setup_fail("%s: only %d of the peer's %d bytes arrived", names[i], inq, bytes);
}

static void idle(void)
{
    while (!wl_term) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

/* ---- states ---------------------------------------------------------- */

static void states_setup(void)
{
    fds[LIS4] = twl_listen(AF_INET, port, 16);
    fds[LIS6] = twl_listen(AF_INET6, port + 1, 16);
    if (fds[LIS4] < 0 || fds[LIS6] < 0)
        wl_setup_fail("listen on port %d/%d: %s", port, port + 1, strerror(errno));
    for (int i = 0; i < NCONN; i++)
        fds[i] = -1;
    for (int n = 0; n < NCONN; n++) {
        int c = twl_accept(n < C7 ? fds[LIS4] : fds[LIS6], TWL_TIMEOUT_MS);
        uint8_t id = 0xff;
        if (c < 0 || twl_read_exact(c, &id, 1, "connection id") != 0 || id >= NCONN || fds[id] >= 0)
            wl_setup_fail("accepting the peer's connection #%d (id %d): %s", n, id, strerror(errno));
        fds[id] = c;
    }

    setint(C1, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    setint(C1, IPPROTO_TCP, TCP_KEEPIDLE, 77, "TCP_KEEPIDLE");
    setint(C1, IPPROTO_TCP, TCP_KEEPINTVL, 11, "TCP_KEEPINTVL");
    setint(C1, IPPROTO_TCP, TCP_KEEPCNT, 5, "TCP_KEEPCNT");
    setint(C1, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    setint(C1, IPPROTO_TCP, TCP_USER_TIMEOUT, 123456, "TCP_USER_TIMEOUT");
    setint(C1, IPPROTO_IP, IP_TOS, 0x10, "IP_TOS");
    setint(C1, IPPROTO_IP, IP_TTL, 33, "IP_TTL");
    setint(C1, SOL_SOCKET, SO_RCVBUF, 65536, "SO_RCVBUF");
    setint(C1, SOL_SOCKET, SO_PRIORITY, 3, "SO_PRIORITY");
    struct linger lg = {1, 7};
    if (setsockopt(fds[C1], SOL_SOCKET, SO_LINGER, &lg, sizeof lg) != 0)
        wl_setup_fail("SO_LINGER: %s", strerror(errno));
    /* Room for the whole MiB while the peer reads nothing. */
    setint(C1, SOL_SOCKET, SO_SNDBUFFORCE, 2 << 20, "SO_SNDBUFFORCE");
    send_setup(C1, 1 << 20, 2);

    send_setup(C2, 3000, 4);
    shut_wr(C2);
    fcntl(fds[C2], F_SETFL, fcntl(fds[C2], F_GETFL) | O_NONBLOCK);
    await_state(C2, TCP_FIN_WAIT2, "FIN_WAIT2");

    setint(C3, SOL_SOCKET, SO_SNDBUFFORCE, 2 << 20, "SO_SNDBUFFORCE");
    send_setup(C3, 1 << 20, 5);
    shut_wr(C3);
    await_state(C3, TCP_FIN_WAIT1, "FIN_WAIT1");

    await_state(C4, TCP_CLOSE_WAIT, "CLOSE_WAIT");
    await_inq(C4, 1000);

    await_state(C5, TCP_CLOSE_WAIT, "CLOSE_WAIT");
    setint(C5, SOL_SOCKET, SO_SNDBUFFORCE, 2 << 20, "SO_SNDBUFFORCE");
    send_setup(C5, 1 << 20, 8);
    shut_wr(C5);
    await_state(C5, TCP_LAST_ACK, "LAST_ACK");

    setint(C6, SOL_SOCKET, SO_SNDBUFFORCE, 2 << 20, "SO_SNDBUFFORCE");
    send_setup(C6, 1 << 20, 9);
    shut_wr(C6);
    await_state(C6, TCP_FIN_WAIT1, "FIN_WAIT1");
    if (twl_write_all(fds[C0], "6", 1, "C0") != 0)
        wl_setup_fail("telling the peer C6 is shut");
    await_state(C6, TCP_CLOSING, "CLOSING");

    send_setup(C7, 5000, 10);
    await_inq(C7, 5000);
    setint(C7, IPPROTO_TCP, TCP_NODELAY, 1, "TCP_NODELAY");
    setint(C7, SOL_SOCKET, SO_KEEPALIVE, 1, "SO_KEEPALIVE");
    setint(C7, IPPROTO_TCP, TCP_KEEPIDLE, 300, "TCP_KEEPIDLE");
    setint(C7, IPPROTO_IPV6, IPV6_TCLASS, 0x20, "IPV6_TCLASS");
    setint(C7, IPPROTO_TCP, TCP_CORK, 1, "TCP_CORK");

    await_inq(C1, 1);

    fds[BND] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_storage ss;
    socklen_t len = twl_addr(&ss, AF_INET, "127.0.0.1", port + 2);
    setint(BND, SOL_SOCKET, SO_REUSEADDR, 1, "SO_REUSEADDR");
    setint(BND, SOL_SOCKET, SO_REUSEPORT, 1, "SO_REUSEPORT");
    if (bind(fds[BND], (struct sockaddr *)&ss, len) != 0)
        wl_setup_fail("bind B: %s", strerror(errno));
    fds[UNB] = socket(AF_INET, SOCK_STREAM, 0);
    fcntl(fds[UNB], F_SETFL, O_NONBLOCK);
    for (int i = 0; i < NSOCK; i++)
        record(i, &before[i]);
    wl_dbg("states: C0..C7 fds %d %d %d %d %d %d %d %d", fds[0], fds[1], fds[2], fds[3], fds[4], fds[5], fds[6], fds[7]);
}

/* Accepts a new connection on listener `l` and answers the peer's 'n' with 'y'. */
static void answer_new(int l)
{
    int c = twl_accept(fds[l], TWL_TIMEOUT_MS);
    if (!check(c >= 0, "%s: no new connection accepted after the restore: %s", names[l], strerror(errno)))
        return;
    uint8_t b = 0;
    if (twl_read_exact(c, &b, 1, names[l]) == 0 && check(b == 'n', "%s: the new connection sent 0x%02x", names[l], b))
        twl_write_all(c, "y", 1, names[l]);
    close(c);
}

/* B listens now; a fresh socket and U connect to it. */
static void use_unconnected(void)
{
    if (!check(listen(fds[BND], 4) == 0, "B: listen: %s", strerror(errno)))
        return;
    struct sockaddr_storage ss;
    socklen_t len = twl_addr(&ss, AF_INET, "127.0.0.1", port + 2);
    int fresh = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    check(connect(fresh, (struct sockaddr *)&ss, len) == 0, "connecting to B: %s", strerror(errno));
    int r = connect(fds[UNB], (struct sockaddr *)&ss, len);
    check(r == 0 || errno == EINPROGRESS, "U: connect to B: %s", strerror(errno));
    for (int k = 0; k < 2; k++) {
        int c = twl_accept(fds[BND], TWL_TIMEOUT_MS);
        check(c >= 0, "B: accept #%d: %s", k, strerror(errno));
        if (c >= 0)
            close(c);
    }
    check(twl_wait(fds[UNB], POLLOUT, TWL_TIMEOUT_MS) == 1 && twl_getint(fds[UNB], SOL_SOCKET, SO_ERROR) == 0, "U: its connection to B failed");
    close(fresh);
}

static void states_verify(void)
{
    for (int i = 0; i < NSOCK; i++)
        compare(i);
    if (wl_failed())
        return;
    uint8_t word[8];
    if (twl_read_pattern(fds[C1], 200000, 1, "C1 (the peer's 200000 bytes)") == 0 && twl_read_exact(fds[C1], word, 8, "C1 (end)") == 0 &&
        check(memcmp(word, "p-c1-end", 8) == 0, "C1: the peer's last 8 bytes are not p-c1-end"))
        twl_write_all(fds[C1], "w-c1-end", 8, "C1");
    if (wl_failed())
        return;
    twl_read_pattern(fds[C2], 1000, 3, "C2 (the peer's 1000 bytes after our FIN)");
    if (wl_failed())
        return;
    twl_read_pattern(fds[C3], 100, 6, "C3 (the peer's 100 bytes after our FIN)");
    if (wl_failed())
        return;
    if (twl_read_pattern(fds[C4], 1000, 11, "C4 (the peer's 1000 bytes before its FIN)") == 0 && twl_expect_eof(fds[C4], "C4 (the peer's FIN)") == 0)
        twl_write_pattern(fds[C4], 500, 7, "C4 (500 bytes after the peer's FIN)");
    if (wl_failed())
        return;
    if (twl_read_pattern(fds[C5], 100, 12, "C5 (the peer's 100 bytes)") == 0)
        twl_expect_eof(fds[C5], "C5 (the peer's FIN)");
    if (wl_failed())
        return;
    if (twl_read_pattern(fds[C6], 100, 13, "C6 (the peer's 100 bytes)") == 0)
        twl_expect_eof(fds[C6], "C6 (the peer's FIN)");
    if (wl_failed())
        return;
    twl_read_pattern(fds[C7], 5000, 14, "C7 (the peer's 5000 bytes over IPv6)");
    uint8_t b = 0;
    if (wl_failed())
        return;
    if (twl_read_exact(fds[C0], &b, 1, "C0") == 0 && check(b == 'z', "C0: the peer sent 0x%02x", b))
        twl_write_all(fds[C0], "Z", 1, "C0");
    if (wl_failed())
        return;
    answer_new(LIS4);
    if (wl_failed())
        return;
    answer_new(LIS6);
    if (wl_failed())
        return;
    use_unconnected();
}

/* ---- echo ------------------------------------------------------------ */

static uint8_t ebuf[1 << 16];

static void echo(int fd)
{
    static uint64_t echoed_at_ready, echoed;
    static int eof;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fds[C0] = fd;
    record(C0, &before[C0]);
    echoed_at_ready = echoed;
    wl_ready();
    size_t len = 0;
    while (!wl_term && !wl_failed()) {
        struct pollfd p = {.fd = fd, .events = (short)((!eof && len < sizeof ebuf ? POLLIN : 0) | (len ? POLLOUT : 0))};
        if (!p.events)
            break;
        if (poll(&p, 1, 100) < 0)
            continue;
        if (!eof && len < sizeof ebuf) {
            ssize_t r = recv(fd, ebuf + len, sizeof ebuf - len, MSG_DONTWAIT);
            if (r == 0)
                eof = 1;
            else if (r > 0)
                len += (size_t)r;
            else if (errno != EAGAIN && errno != EINTR)
                check(0, "echo: read failed after %llu bytes: %s", (unsigned long long)echoed, strerror(errno));
        }
        if (len) {
            ssize_t w = send(fd, ebuf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) {
                memmove(ebuf, ebuf + w, len - (size_t)w);
                len -= (size_t)w;
                echoed += (uint64_t)w;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                check(0, "echo: write failed after %llu bytes: %s", (unsigned long long)echoed, strerror(errno));
            }
        }
    }
    /* The peer closes once it has its verdict; the verdict here waits for SIGTERM (in a container this is the init, whose end would end the peer). */
    idle();
    check(echoed > echoed_at_ready, "echo: nothing echoed since READY (%llu bytes in all)", (unsigned long long)echoed);
    compare(C0);
}

/* ---- pending --------------------------------------------------------- */

static void pending(void)
{
    fds[LIS4] = twl_listen(AF_INET, port, 4);
    int c = twl_connect(AF_INET, port, TWL_TIMEOUT_MS);
    if (fds[LIS4] < 0 || c < 0)
        wl_setup_fail("listen/connect on port %d: %s", port, strerror(errno));
    struct sockaddr_storage mine;
    socklen_t minelen = sizeof mine;
    getsockname(c, (struct sockaddr *)&mine, &minelen);
    wl_ready();
    idle();
    int a = twl_accept(fds[LIS4], TWL_TIMEOUT_MS);
    if (!check(a >= 0, "pending: the waiting connection was not accepted: %s", strerror(errno)))
        return;
    struct sockaddr_storage peer;
    socklen_t peerlen = sizeof peer;
    getpeername(a, (struct sockaddr *)&peer, &peerlen);
    check(peerlen == minelen && memcmp(&peer, &mine, minelen) == 0, "pending: the accepted connection is not the waiting client's");
    uint8_t b = 0;
    if (twl_write_all(c, "p", 1, "pending") == 0 && twl_read_exact(a, &b, 1, "pending") == 0)
        check(b == 'p', "pending: 0x%02x crossed instead of 'p'", b);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    const char *mode = argc > 2 ? argv[2] : "";
    if (!strcmp(mode, "states") && argc > 3) {
        port = atoi(argv[3]);
        states_setup();
        wl_ready();
        idle();
        states_verify();
    } else if (!strcmp(mode, "echo") && argc > 4) {
        int family = argc > 5 && !strcmp(argv[5], "6") ? AF_INET6 : AF_INET;
        port = atoi(argv[4]);
        int fd = -1;
        if (!strcmp(argv[3], "server")) {
            int l = twl_listen(family, port, 4);
            fd = l < 0 ? -1 : twl_accept(l, TWL_TIMEOUT_MS);
            if (l >= 0)
                close(l);
        } else {
            fd = twl_connect(family, port, TWL_TIMEOUT_MS);
        }
        if (fd < 0)
            wl_setup_fail("echo %s on port %d: %s", argv[3], port, strerror(errno));
        echo(fd);
    } else if (!strcmp(mode, "pending") && argc > 3) {
        port = atoi(argv[3]);
        pending();
    } else {
        wl_setup_fail("usage: tcp <result> states <port> | echo server|client <port> [6] | pending <port>");
    }
    wl_finish();
}
