/*
 * tree — a fork tree whose processes stream sequence numbers to their parents.
 *
 *   tree <result-file> [depth] [fanout] [pipes|mixed] [tmpdir]
 *        depth 0..6 (default 2), fanout 1..8 (default 2), at most 127
 *        processes; pipes (default): every parent-child link is a pipe;
 *        mixed: by role index % 3 a pipe, an AF_UNIX SOCK_STREAM or a
 *        SOCK_SEQPACKET socketpair; tmpdir defaults to the result's directory.
 *
 * Setup: the root opens tmpdir/tree-shared.dat (O_RDWR, no O_APPEND) and forks
 * the tree depth-first: every node creates one channel per child, forks it,
 * and the child keeps only its own write end, the shared file and the report
 * pipe (wl_tree.h). Every process writes a 64-byte setup record through the
 * shared file description (one offset for everyone), then reports SETUP; the
 * root writes READY when all have.
 * Meanwhile: every non-root process sends DATA seq, seq+1, ... (with a check
 * word) to its parent, one per loop (1 ms poll); every parent reads its
 * children's streams continuously.
 * At SIGTERM (the root forwards it to its children, every parent to its own):
 *   - every process: getpid/getppid as recorded, getpgid/getsid as recorded
 *     (or the same as the root's, when the root's lie outside the tree); the
 *     shared fd is still O_RDWR without O_APPEND, the same file as the path,
 *     and its offset covers every setup record written before READY (a
 *     process whose offset is no longer shared sees its own);
 *   - every child: one more DATA, its final 64-byte record through the
 *     shared offset, END(last seq, offset after that write), close;
 *   - every parent: from each child a gap-free, duplicate-free, in-order
 *     stream with valid check words, ending with END == last seq, then EOF,
 *     and advanced since setup; after a child's END its own offset is at
 *     least the child's (the child's write moved the offset it sees);
 *     waitpid of each child: exited with its own code (64 + role index);
 *   - the root, after every verdict: the file holds exactly one setup and
 *     one final record per process (a lost shared offset makes writes
 *     overwrite each other), its size is the shared offset.
 * The verdict names the process ('root', 'node 0', 'node 0.1', ...) and the
 * check; a process that died is named as vanished.
 *
 * Debug: one line per process: role, pid, ppid, its channel kind and the
 * fd of the channel in its parent ("parent_fd=N"), and "shared_fd=N".
 */
#include "wl_tree.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define REC 64
#define MAXFAN 8

static int depth = 2, fanout = 2, mixed;
static int shared_fd = -1;
static char shared_path[4200];
static int kids[WT_MAX_ROLES][MAXFAN], nkids[WT_MAX_ROLES], height[WT_MAX_ROLES];

struct node {
    int role;
    int n;
    int child[MAXFAN];
    struct wt_stream in[MAXFAN];
    struct wt_sender up;
};

static const char *chan_kind(int role)
{
    if (!mixed)
        return "pipe";
    switch (role % 3) {
    case 0: return "pipe";
    case 1: return "stream socket";
    default: return "seqpacket socket";
    }
}

static void build(int parent, int level)
{
    height[parent] = depth - level;
    if (level == depth)
        return;
    for (int i = 0; i < fanout; i++) {
        char name[WT_NAME];
        if (parent == 0)
            snprintf(name, sizeof name, "node %d", i & 7);
        else
            snprintf(name, sizeof name, "%.24s.%d", wt_roles[parent].name, i & 7);
        int c = wt_add_role(name, parent, 1, 0);
        kids[parent][nkids[parent]++] = c;
        build(c, level + 1);
    }
}

/* One 64-byte record through the shared offset; returns the offset after it. */
static uint64_t file_record(char kind)
{
    char rec[REC], tmp[REC];
    memset(rec, ' ', sizeof rec);
    int n = snprintf(tmp, sizeof tmp, "%c role=%d pid=%d", kind, wt_self, (int)getpid());
    memcpy(rec, tmp, (size_t)n);
    rec[REC - 1] = '\n';
    ssize_t w;
    do
        w = write(shared_fd, rec, REC);
    while (w < 0 && errno == EINTR);
    pcheck(w == REC, "shared file: writing the %s record returned %ld (%s)", kind == 'S' ? "setup" : "final",
           (long)w, w < 0 ? strerror(errno) : "short");
    off_t after = lseek(shared_fd, 0, SEEK_CUR);
    return after < 0 ? 0 : (uint64_t)after;
}

static void check_shared_fd(void)
{
    int fl = fcntl(shared_fd, F_GETFL);
    pcheck(fl >= 0 && (fl & O_ACCMODE) == O_RDWR && !(fl & O_APPEND),
           "shared file fd %d: flags %#x, expected O_RDWR without O_APPEND", shared_fd, fl);
    struct stat a, b;
    if (pcheck(fstat(shared_fd, &a) == 0 && stat(shared_path, &b) == 0, "shared file: fstat/stat: %s",
               strerror(errno)))
        pcheck(a.st_dev == b.st_dev && a.st_ino == b.st_ino, "shared file fd %d is no longer %s", shared_fd,
               shared_path);
    off_t cur = lseek(shared_fd, 0, SEEK_CUR);
    pcheck(cur >= (off_t)REC * wt_nroles,
           "shared file offset is %ld, expected at least %d: all %d processes wrote a %d-byte record through "
           "one shared offset before READY (this fd no longer shares it)",
           (long)cur, REC * wt_nroles, wt_nroles, REC);
}

static void node_main(int role, int up_fd) __attribute__((noreturn));

static void spawn_children(struct node *nd)
{
    int r = nd->role;
    nd->n = nkids[r];
    for (int i = 0; i < nd->n; i++) {
        int c = kids[r][i];
        int fds[2];
        const char *kind = chan_kind(c);
        int ok;
        if (!strcmp(kind, "pipe"))
            ok = pipe2(fds, 0) == 0;
        else
            ok = socketpair(AF_UNIX, !strcmp(kind, "stream socket") ? SOCK_STREAM : SOCK_SEQPACKET, 0, fds) == 0;
        if (!ok)
            wl_setup_fail("%s for '%s': %s", kind, wt_roles[c].name, strerror(errno));
        wt_roles[c].aux = fds[0];
        pid_t pid = wt_fork(c);
        if (pid < 0)
            wl_setup_fail("fork of '%s': %s", wt_roles[c].name, strerror(errno));
        if (pid == 0) {
            int keep[2] = {fds[1], shared_fd};
            wt_keep_fds(keep, 2);
            node_main(c, fds[1]);
        }
        close(fds[1]);
        char from[80];
        snprintf(from, sizeof from, "from '%s' (pid %d, %s)", wt_roles[c].name, (int)pid, kind);
        wt_stream_init(&nd->in[i], fds[0], c, from);
        nd->child[i] = c;
    }
}

static void pump_all(struct node *nd, int timeout_ms)
{
    struct pollfd pf[MAXFAN + 1];
    int k = 0;
    for (int i = 0; i < nd->n; i++)
        if (!nd->in[i].eof)
            pf[k++] = (struct pollfd){nd->in[i].fd, POLLIN, 0};
    if (wt_report_rfd >= 0)
        pf[k++] = (struct pollfd){wt_report_rfd, POLLIN, 0};
    poll(pf, (nfds_t)k, timeout_ms);
    for (int i = 0; i < nd->n; i++)
        wt_stream_pump(&nd->in[i]);
    if (wt_report_rfd >= 0)
        wt_root_drain();
}

/* After SIGTERM: forward it, close our stream, drain the children's, reap them. */
static void finish_children(struct node *nd, int64_t t0)
{
    for (int i = 0; i < nd->n; i++)
        kill(wt_roles[nd->child[i]].pid, SIGTERM);
    if (nd->up.fd >= 0) {
        uint64_t pos = file_record('F');
        char to[80];
        int p = wt_roles[nd->role].parent;
        snprintf(to, sizeof to, "parent '%s' (pid %d)", wt_roles[p].name, (int)wt_roles[p].pid);
        wt_send_close(&nd->up, pos, to);
    }
    wt_streams_drain(nd->in, nd->n, t0 + 3000000000LL);
    for (int i = 0; i < nd->n; i++)
        wt_stream_final_check(&nd->in[i]);
    off_t cur = lseek(shared_fd, 0, SEEK_CUR);
    for (int i = 0; i < nd->n; i++) {
        struct wt_stream *s = &nd->in[i];
        if (s->ended && !s->bad)
            pcheck(cur >= (off_t)s->end_value,
                   "shared file offset is %ld here, but child '%s' wrote up to %llu through it: the offset is "
                   "no longer shared",
                   (long)cur, wt_roles[nd->child[i]].name, (unsigned long long)s->end_value);
    }
    for (int i = 0; i < nd->n; i++)
        wt_reap(wt_roles[nd->child[i]].pid, nd->child[i],
                t0 + (4 + (int64_t)height[nd->role]) * 1000000000LL);
}

static void node_main(int role, int up_fd)
{
    struct node nd;
    memset(&nd, 0, sizeof nd);
    nd.role = role;
    nd.up = (struct wt_sender){up_fd, role, 0};
    spawn_children(&nd);
    file_record('S');
    if (wt_failed())
        wl_setup_fail("shared file write failed");
    wt_send_setup();
    for (int i = 0; i < nd.n; i++)
        nd.in[i].last_at_setup = nd.in[i].last;

    while (!wl_term) {
        pump_all(&nd, 1);
        if (wl_term)
            break;
        int r = wt_send_tick(&nd.up);
        if (r < 0) {
            pcheck(0, "stream to parent '%s': write: %s", wt_roles[wt_roles[role].parent].name, strerror(-r));
            break;
        }
        if (wt_parent_gone())
            break;
    }
    int64_t t0 = wl_now_ns();
    wt_check_ids();
    check_shared_fd();
    finish_children(&nd, t0);
    wt_verdict_exit(0);
}

static void check_shared_file(void)
{
    static char buf[2 * WT_MAX_ROLES * REC + 4 * REC];
    static int cnt[2][WT_MAX_ROLES];
    struct stat st;
    if (!pcheck(fstat(shared_fd, &st) == 0, "shared file: fstat: %s", strerror(errno)))
        return;
    off_t cur = lseek(shared_fd, 0, SEEK_CUR);
    size_t want = (size_t)2 * (size_t)wt_nroles * REC;
    size_t len = (size_t)st.st_size < sizeof buf ? (size_t)st.st_size : sizeof buf;
    ssize_t r = pread(shared_fd, buf, len, 0);
    if (!pcheck(r == (ssize_t)len, "shared file: pread: %s", r < 0 ? strerror(errno) : "short"))
        return;
    long junk = -1;
    for (size_t off = 0; off + REC <= len; off += REC) {
        char kind = 0;
        int role = -1, pid = -1;
        char slot[REC + 1];
        memcpy(slot, buf + off, REC);
        slot[REC] = 0;
        if (sscanf(slot, "%c role=%d pid=%d", &kind, &role, &pid) != 3 || (kind != 'S' && kind != 'F') ||
            role < 0 || role >= wt_nroles || pid != wt_roles[role].pid || slot[REC - 1] != '\n') {
            if (junk < 0)
                junk = (long)off;
            continue;
        }
        cnt[kind == 'F'][role]++;
    }
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < wt_nroles; i++)
            pcheck(cnt[k][i] == 1,
                   "shared file: the %s record of '%s' (pid %d) is there %d times, expected once (%ld bytes, "
                   "offset %ld): writes through the shared offset overwrote each other",
                   k ? "final" : "setup", wt_roles[i].name, (int)wt_roles[i].pid, cnt[k][i], (long)st.st_size,
                   (long)cur);
    pcheck(junk < 0, "shared file: bytes at offset %ld are not a record", junk);
    pcheck((size_t)st.st_size == want, "shared file: %ld bytes, expected %zu (2 records of %d bytes per process)",
           (long)st.st_size, want, REC);
    pcheck(cur == st.st_size, "shared file: the root's offset is %ld but the file has %ld bytes", (long)cur,
           (long)st.st_size);
}

int main(int argc, char **argv)
{
    wl_init(argc, argv, 0);
    if (argc > 2 && argv[2][0])
        depth = atoi(argv[2]);
    if (argc > 3 && argv[3][0])
        fanout = atoi(argv[3]);
    const char *mode = argc > 4 ? argv[4] : "pipes";
    if (depth < 0 || depth > 6)
        wl_setup_fail("depth must be in [0, 6], got %s", argv[2]);
    if (fanout < 1 || fanout > MAXFAN)
        wl_setup_fail("fanout must be in [1, %d], got %s", MAXFAN, argv[3]);
    long total = 1, level = 1;
    for (int d = 0; d < depth; d++) {
        level *= fanout;
        total += level;
    }
    if (total > WT_MAX_ROLES - 1)
        wl_setup_fail("depth %d fanout %d makes %ld processes, at most %d", depth, fanout, total, WT_MAX_ROLES - 1);
    if (!strcmp(mode, "pipes"))
        mixed = 0;
    else if (!strcmp(mode, "mixed"))
        mixed = 1;
    else
        wl_setup_fail("unknown mode '%s' (pipes|mixed)", mode);
    char dir[4096];
    if (argc > 5) {
        snprintf(dir, sizeof dir, "%s", argv[5]);
    } else {
        char tmp[4096];
        snprintf(tmp, sizeof tmp, "%s", wl_result_path);
        snprintf(dir, sizeof dir, "%s", dirname(tmp));
    }
    snprintf(shared_path, sizeof shared_path, "%s/tree-shared.dat", dir);
    shared_fd = open(shared_path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (shared_fd < 0)
        wl_setup_fail("open %s: %s", shared_path, strerror(errno));

    wt_root_init("root");
    build(0, 0);
    file_record('S');
    if (wt_failed())
        wl_setup_fail("shared file write failed");
    struct node root;
    memset(&root, 0, sizeof root);
    root.role = 0;
    root.up.fd = -1;
    spawn_children(&root);
    wt_root_wait_setup(8);
    for (int i = 0; i < root.n; i++)
        root.in[i].last_at_setup = root.in[i].last;
    wl_dbg("shared_fd=%d path=%s processes=%d mode=%s", shared_fd, shared_path, wt_nroles, mode);
    for (int i = 0; i < wt_nroles; i++) {
        struct wt_role *r = &wt_roles[i];
        wl_dbg("role %d '%s' pid=%d ppid=%d pgid=%d sid=%d kind=%s parent_fd=%d", i, r->name, (int)r->pid,
               (int)r->ppid, (int)r->pgid, (int)r->sid, i ? chan_kind(i) : "-", r->aux);
    }
    wl_ready();

    while (!wl_term)
        pump_all(&root, 10);

    int64_t t0 = wl_now_ns();
    wt_check_ids();
    check_shared_fd();
    finish_children(&root, t0);
    file_record('F');
    wt_root_collect(5 + depth);
    check_shared_file();
    wt_root_finish();
}
