/*
 * tcp_peer — the other end of `tcp`'s connections: a program that is never
 * checkpointed and must not notice that its peer was. It says READY at
 * once (tests start it before `tcp`, which needs it to get ready itself)
 * and writes its own verdict.
 *
 *   tcp_peer <result-file> states <port>
 *   tcp_peer <result-file> stream client|server <port> [6]
 *
 * states: connects C0..C6 to 127.0.0.1:port and C7 to [::1]:port+1, each
 * introduced by its id byte, and plays its part of `tcp states` (see
 * tcp.c): 200000 bytes on C1, 1000 bytes and FIN on C4, 100 bytes and FIN
 * on C5, 5000 bytes on C7, and once C0 says '6', 100 bytes and FIN on C6.
 * It reads nothing until SIGTERM. At SIGTERM: C1 yields exactly 1 MiB,
 * then 8 bytes go and 8 come back; C2 yields 3000 bytes and EOF, then 1000
 * bytes are sent; C3 yields 1 MiB and EOF, then 100 bytes are sent; C4
 * yields 500 bytes; C5 and C6 yield 1 MiB and EOF; C7 yields 5000 bytes; C0
 * exchanges a byte; new connections to both listeners exchange a byte. No
 * read or write on any of them failed, before or after.
 *
 * stream: connects to (client) or accepts on (server) the loopback address
 * and streams numbered 64-byte records, one per millisecond with at most
 * 512 unanswered, while reading back the echo: every record must come back
 * once, in order, unchanged. <result-file>.progress is a 64-byte file the
 * test reads while it runs, eight little-endian u64: records sent, records
 * echoed, longest gap between two echoes (us), tcpi_total_retrans, TCP
 * state, errno of the first failed read or write (0: none), 1 once
 * connected, tcpi_unacked. At SIGTERM: sends no more, waits for every echo
 * (15 s at most), writes "records=N maxgap_ms=X" to <result-file>.stats,
 * closes the connection.
 */
#include "tcp_wl.h"

#include <stdlib.h>

static int port;

/* ---- states ---------------------------------------------------------- */

enum { C0, C1, C2, C3, C4, C5, C6, C7, NCONN };
static int conn[NCONN];
static int setup_done;

static void choreography(void)
{
    for (int i = 0; i < NCONN; i++) {
        conn[i] = twl_connect(i == C7 ? AF_INET6 : AF_INET, i == C7 ? port + 1 : port, TWL_TIMEOUT_MS);
        uint8_t id = (uint8_t)i;
        if (!check(conn[i] >= 0, "connecting C%d: %s", i, strerror(errno)) || twl_write_all(conn[i], &id, 1, "id") != 0)
            return;
    }
    int big = 2 << 20;
    setsockopt(conn[C1], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
    if (twl_write_pattern(conn[C1], 200000, 1, "C1 setup") != 0 || twl_write_pattern(conn[C4], 1000, 11, "C4 setup") != 0)
        return;
    check(shutdown(conn[C4], SHUT_WR) == 0, "C4: shutdown: %s", strerror(errno));
    if (twl_write_pattern(conn[C5], 100, 12, "C5 setup") != 0)
        return;
    check(shutdown(conn[C5], SHUT_WR) == 0, "C5: shutdown: %s", strerror(errno));
    if (twl_write_pattern(conn[C7], 5000, 14, "C7 setup") != 0)
        return;
    uint8_t b = 0;
    if (twl_read_exact(conn[C0], &b, 1, "C0 (waiting for C6 to be shut)") != 0 || !check(b == '6', "C0: got 0x%02x instead of '6'", b))
        return;
    if (twl_write_pattern(conn[C6], 100, 13, "C6 setup") != 0)
        return;
    check(shutdown(conn[C6], SHUT_WR) == 0, "C6: shutdown: %s", strerror(errno));
    setup_done = 1;
}

/* A new connection to a listener of `tcp`: 'n' goes, 'y' comes back. */
static void new_connection(int family, int p)
{
    int c = twl_connect(family, p, TWL_TIMEOUT_MS);
    if (!check(c >= 0, "a new connection to port %d after the restore: %s", p, strerror(errno)))
        return;
    uint8_t b = 0;
    if (twl_write_all(c, "n", 1, "new connection") == 0 && twl_read_exact(c, &b, 1, "new connection") == 0)
        check(b == 'y', "new connection to port %d: got 0x%02x", p, b);
    close(c);
}

static void states_verify(void)
{
    if (!check(setup_done, "the setup never finished"))
        return;
    uint8_t word[8];
    if (twl_read_pattern(conn[C1], 1 << 20, 2, "C1 (1 MiB)") == 0 && twl_write_all(conn[C1], "p-c1-end", 8, "C1") == 0 &&
        twl_read_exact(conn[C1], word, 8, "C1 (end)") == 0)
        check(memcmp(word, "w-c1-end", 8) == 0, "C1: the last 8 bytes are not w-c1-end");
    if (wl_failed())
        return;
    if (twl_read_pattern(conn[C2], 3000, 4, "C2 (3000 bytes before the FIN)") == 0 && twl_expect_eof(conn[C2], "C2 (the FIN)") == 0)
        twl_write_pattern(conn[C2], 1000, 3, "C2 (1000 bytes after the FIN)");
    if (wl_failed())
        return;
    if (twl_read_pattern(conn[C3], 1 << 20, 5, "C3 (1 MiB before the FIN)") == 0 && twl_expect_eof(conn[C3], "C3 (the FIN)") == 0)
        twl_write_pattern(conn[C3], 100, 6, "C3 (100 bytes after the FIN)");
    if (wl_failed())
        return;
    twl_read_pattern(conn[C4], 500, 7, "C4 (500 bytes after our FIN)");
    if (wl_failed())
        return;
    if (twl_read_pattern(conn[C5], 1 << 20, 8, "C5 (1 MiB)") == 0)
        twl_expect_eof(conn[C5], "C5 (the FIN)");
    if (wl_failed())
        return;
    if (twl_read_pattern(conn[C6], 1 << 20, 9, "C6 (1 MiB)") == 0)
        twl_expect_eof(conn[C6], "C6 (the FIN)");
    if (wl_failed())
        return;
    twl_read_pattern(conn[C7], 5000, 10, "C7 (5000 bytes over IPv6)");
    uint8_t b = 0;
    if (wl_failed())
        return;
    if (twl_write_all(conn[C0], "z", 1, "C0") == 0 && twl_read_exact(conn[C0], &b, 1, "C0") == 0)
        check(b == 'Z', "C0: got 0x%02x", b);
    if (wl_failed())
        return;
    new_connection(AF_INET, port);
    if (wl_failed())
        return;
    new_connection(AF_INET6, port + 1);
}

static void states(void)
{
    wl_ready();
    choreography();
    while (!wl_term) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    states_verify();
}

/* ---- stream ---------------------------------------------------------- */

#define RECORD 64
#define WINDOW 512

enum { P_SENT, P_ECHOED, P_MAXGAP, P_RETRANS, P_STATE, P_ERROR, P_CONNECTED, P_UNACKED, P_FIELDS };
static uint64_t progress[P_FIELDS];
static int progress_fd = -1;

/* A file written in place rather than a shared mapping: a checkpoint carries open files of a container's /tmp, not mappings of them. */
static void publish(void)
{
    if (pwrite(progress_fd, progress, sizeof progress, 0) != (ssize_t)sizeof progress)
        check(0, "writing the progress file: %s", strerror(errno));
}

static void make_record(uint8_t *r, uint64_t seq)
{
    memcpy(r, &seq, 8);
    wl_pattern_fill(r + 8, RECORD - 8, seq, 0);
}

static void fail_io(const char *what, uint64_t at)
{
    if (!progress[P_ERROR]) {
        progress[P_ERROR] = (uint64_t)errno;
        publish();
    }
    check(0, "stream: %s failed at record %llu: %s", what, (unsigned long long)at, strerror(errno));
}

static void stream(int family, int server)
{
    char path[4200];
    snprintf(path, sizeof path, "%s.progress", wl_result_path);
    progress_fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (progress_fd < 0)
        wl_setup_fail("%s: %s", path, strerror(errno));
    publish();
    int l = server ? twl_listen(family, port, 4) : -1;
    if (server && l < 0)
        wl_setup_fail("listen on port %d: %s", port, strerror(errno));
    wl_ready();
    int fd = server ? twl_accept(l, TWL_TIMEOUT_MS) : twl_connect(family, port, TWL_TIMEOUT_MS);
    if (!check(fd >= 0, "stream: no connection on port %d: %s", port, strerror(errno)))
        goto out;
    if (l >= 0)
        close(l);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    progress[P_CONNECTED] = 1;
    publish();

    static uint8_t out[RECORD], in[RECORD], want[RECORD];
    size_t out_done = RECORD, in_have = 0;
    uint64_t sent = 0, echoed = 0, maxgap = 0;
    int64_t last_send = 0, last_echo = 0, last_info = 0, term_at = 0;
    for (;;) {
        int64_t now = wl_now_ns();
        if (wl_term && !term_at)
            term_at = now;
        if (term_at && echoed == sent && out_done == RECORD)
            break;
        if (term_at && now - term_at > (int64_t)TWL_TIMEOUT_MS * 1000000) {
            check(0, "stream: %llu of %llu records still unanswered %d s after SIGTERM", (unsigned long long)(sent - echoed), (unsigned long long)sent,
                  TWL_TIMEOUT_MS / 1000);
            break;
        }
        if (out_done == RECORD && !term_at && sent - echoed < WINDOW && now - last_send >= 1000000) {
            make_record(out, sent);
            out_done = 0;
            last_send = now;
        }
        if (out_done < RECORD) {
            ssize_t w = send(fd, out + out_done, RECORD - out_done, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w > 0) {
                out_done += (size_t)w;
                if (out_done == RECORD)
                    sent++;
            } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
                fail_io("write", sent);
                break;
            }
        }
        ssize_t r = recv(fd, in + in_have, RECORD - in_have, MSG_DONTWAIT);
        if (r == 0) {
            check(0, "stream: EOF after %llu echoed records", (unsigned long long)echoed);
            break;
        } else if (r < 0 && errno != EAGAIN && errno != EINTR) {
            fail_io("read", echoed);
            break;
        } else if (r > 0 && (in_have += (size_t)r) == RECORD) {
            make_record(want, echoed);
            uint64_t seq;
            memcpy(&seq, in, 8);
            if (!check(memcmp(in, want, RECORD) == 0, "stream: echo #%llu came back as record %llu%s", (unsigned long long)echoed,
                       (unsigned long long)seq, seq == echoed ? " with other bytes" : ""))
                break;
            in_have = 0;
            echoed++;
            if (last_echo && (uint64_t)(now - last_echo) / 1000 > maxgap)
                maxgap = (uint64_t)(now - last_echo) / 1000;
            last_echo = now;
        }
        if (now - last_info > 2000000) {
            struct tcp_info ti;
            socklen_t len = sizeof ti;
            if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0) {
                progress[P_RETRANS] = ti.tcpi_total_retrans;
                progress[P_STATE] = ti.tcpi_state;
                progress[P_UNACKED] = ti.tcpi_unacked;
            }
            last_info = now;
        }
        progress[P_SENT] = sent;
        progress[P_ECHOED] = echoed;
        progress[P_MAXGAP] = maxgap;
        publish();
        if (r <= 0 || out_done == RECORD) {
            struct pollfd p = {.fd = fd, .events = (short)(POLLIN | (out_done < RECORD ? POLLOUT : 0))};
            poll(&p, 1, 1);
        }
    }
    check(echoed > 0, "stream: nothing was ever echoed");
    char stats[128];
    int n = snprintf(stats, sizeof stats, "records=%llu maxgap_ms=%.1f\n", (unsigned long long)echoed, (double)maxgap / 1000.0);
    char spath[4200];
    snprintf(spath, sizeof spath, "%s.stats", wl_result_path);
    wl_write_atomic(spath, stats, (size_t)n);
    close(fd);
out:
    while (!wl_term) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    const char *mode = argc > 2 ? argv[2] : "";
    if (!strcmp(mode, "states") && argc > 3) {
        port = atoi(argv[3]);
        states();
    } else if (!strcmp(mode, "stream") && argc > 4) {
        port = atoi(argv[4]);
        stream(argc > 5 && !strcmp(argv[5], "6") ? AF_INET6 : AF_INET, !strcmp(argv[3], "server"));
    } else {
        wl_setup_fail("usage: tcp_peer <result> states <port> | stream client|server <port> [6]");
    }
    wl_finish();
}
