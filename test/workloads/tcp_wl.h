/*
 * tcp_wl.h — TCP helpers shared by `tcp` (the checkpointed workload) and
 * `tcp_peer` (the program at the other end, never checkpointed). Every
 * wait has a deadline: a connection that stalls makes the check fail with
 * a message, never hang. Failures are recorded with check() (wl.h) and the
 * helpers return -1, so the caller can stop at the first one.
 */
#ifndef FERRY_TCP_WL_H
#define FERRY_TCP_WL_H

#include "wl.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* How long any one step may wait for the other side. */
#define TWL_TIMEOUT_MS 15000

static uint8_t twl_buf[1 << 20];

static inline int64_t twl_ms_left(int64_t deadline_ns)
{
    int64_t left = (deadline_ns - wl_now_ns()) / 1000000;
    return left < 0 ? 0 : left;
}

/* Waits for `events` on fd; 1 ready, 0 timed out, -1 poll failed. */
static inline int twl_wait(int fd, short events, int ms)
{
    int64_t deadline = wl_now_ns() + (int64_t)ms * 1000000;
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, (int)twl_ms_left(deadline));
        if (n > 0)
            return 1;
        if (n == 0)
            return 0;
        if (errno != EINTR)
            return -1;
    }
}

/* A sockaddr for addr:port; returns its length. */
static inline socklen_t twl_addr(struct sockaddr_storage *ss, int family, const char *addr, int port)
{
    memset(ss, 0, sizeof *ss);
    if (family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        inet_pton(AF_INET6, addr, &a->sin6_addr);
        return sizeof *a;
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, addr, &a->sin_addr);
    return sizeof *a;
}

static inline const char *twl_loopback(int family)
{
    return family == AF_INET6 ? "::1" : "127.0.0.1";
}

/* A listener on the loopback address of `family` (IPv6: V6ONLY). */
static inline int twl_listen(int family, int port, int backlog)
{
    struct sockaddr_storage ss;
    socklen_t len = twl_addr(&ss, family, twl_loopback(family), port);
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, backlog) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Connects to the loopback address of `family`, retrying while nobody listens yet; -1 after `ms`. */
static inline int twl_connect(int family, int port, int ms)
{
    struct sockaddr_storage ss;
    socklen_t len = twl_addr(&ss, family, twl_loopback(family), port);
    int64_t deadline = wl_now_ns() + (int64_t)ms * 1000000;
    for (;;) {
        int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        if (connect(fd, (struct sockaddr *)&ss, len) == 0)
            return fd;
        int e = errno;
        close(fd);
        if ((e != ECONNREFUSED && e != EINTR) || twl_ms_left(deadline) == 0) {
            errno = e;
            return -1;
        }
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static inline int twl_accept(int lfd, int ms)
{
    if (twl_wait(lfd, POLLIN, ms) != 1)
        return -1;
    return accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
}

/* Reads exactly n bytes into buf (n <= sizeof twl_buf when buf is NULL). */
static inline int twl_read_exact(int fd, void *buf, size_t n, const char *what)
{
    int64_t deadline = wl_now_ns() + (int64_t)TWL_TIMEOUT_MS * 1000000;
    size_t got = 0;
    while (got < n) {
        if (twl_wait(fd, POLLIN, (int)twl_ms_left(deadline)) != 1) {
            check(0, "%s: timed out after %zu of %zu bytes", what, got, n);
            return -1;
        }
        ssize_t r = recv(fd, (uint8_t *)buf + got, n - got, MSG_DONTWAIT);
        if (r == 0) {
            check(0, "%s: EOF after %zu of %zu bytes", what, got, n);
            return -1;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            check(0, "%s: read failed after %zu of %zu bytes: %s", what, got, n, strerror(errno));
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* Reads n bytes and checks them against the pattern (seed, from offset 0), each piece as it arrives: a wrong byte fails at once. */
static inline int twl_read_pattern(int fd, size_t n, uint64_t seed, const char *what)
{
    int64_t deadline = wl_now_ns() + (int64_t)TWL_TIMEOUT_MS * 1000000;
    size_t done = 0;
    while (done < n) {
        if (twl_wait(fd, POLLIN, (int)twl_ms_left(deadline)) != 1) {
            check(0, "%s: timed out after %zu of %zu bytes", what, done, n);
            return -1;
        }
        size_t want = n - done < sizeof twl_buf ? n - done : sizeof twl_buf;
        ssize_t r = recv(fd, twl_buf, want, MSG_DONTWAIT);
        if (r == 0) {
            check(0, "%s: EOF after %zu of %zu bytes", what, done, n);
            return -1;
        }
        if (r < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            check(0, "%s: read failed after %zu of %zu bytes: %s", what, done, n, strerror(errno));
            return -1;
        }
        long diff = wl_pattern_find_diff(twl_buf, (size_t)r, seed, done);
        if (!check(diff < 0, "%s: byte %zu of %zu differs from what was sent (expected 0x%02x, found 0x%02x)", what, done + (size_t)(diff < 0 ? 0 : diff), n,
                   wl_pattern_byte(seed, done + (size_t)(diff < 0 ? 0 : diff)), twl_buf[diff < 0 ? 0 : diff]))
            return -1;
        done += (size_t)r;
    }
    return 0;
}

/* The next read gives EOF (and nothing before it). */
static inline int twl_expect_eof(int fd, const char *what)
{
    if (twl_wait(fd, POLLIN, TWL_TIMEOUT_MS) != 1) {
        check(0, "%s: timed out waiting for EOF", what);
        return -1;
    }
    uint8_t b;
    ssize_t r = recv(fd, &b, 1, MSG_DONTWAIT);
    if (!check(r == 0, "%s: expected EOF, got %s", what, r > 0 ? "data" : strerror(errno)))
        return -1;
    return 0;
}

static inline int twl_write_all(int fd, const void *buf, size_t n, const char *what)
{
    int64_t deadline = wl_now_ns() + (int64_t)TWL_TIMEOUT_MS * 1000000;
    size_t done = 0;
    while (done < n) {
        ssize_t w = send(fd, (const uint8_t *)buf + done, n - done, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            done += (size_t)w;
            continue;
        }
        if (w < 0 && errno != EAGAIN && errno != EINTR) {
            check(0, "%s: write failed after %zu of %zu bytes: %s", what, done, n, strerror(errno));
            return -1;
        }
        if (twl_wait(fd, POLLOUT, (int)twl_ms_left(deadline)) != 1) {
            check(0, "%s: timed out writing, %zu of %zu bytes taken", what, done, n);
            return -1;
        }
    }
    return 0;
}

/* Writes n pattern bytes (seed, from offset 0). */
static inline int twl_write_pattern(int fd, size_t n, uint64_t seed, const char *what)
{
    for (size_t done = 0; done < n;) {
        size_t chunk = n - done < sizeof twl_buf ? n - done : sizeof twl_buf;
        wl_pattern_fill(twl_buf, chunk, seed, done);
        if (twl_write_all(fd, twl_buf, chunk, what) != 0)
            return -1;
        done += chunk;
    }
    return 0;
}

static inline int twl_state(int fd)
{
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
        return -1;
    return ti.tcpi_state;
}

static inline int twl_getint(int fd, int level, int name)
{
    int v = -12345;
    socklen_t len = sizeof v;
    if (getsockopt(fd, level, name, &v, &len) != 0)
        return -12345;
    return v;
}

#endif
