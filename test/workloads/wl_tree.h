/*
 * wl_tree.h — helpers for workloads made of several processes (tree.c,
 * session.c, zombie.c). See README.md, "Process trees".
 *
 * Roles. The root builds a table of roles (one per process it expects)
 * before it forks anything; every process inherits it and knows its own
 * index (wt_self; 0 is the root). Role names are what a verdict names.
 *
 * Reports. One pipe, created by the root before the first fork: every
 * descendant keeps the write end, only the root reads it. Each process that
 * reports sends fixed-size records (smaller than PIPE_BUF, so atomic):
 *   SETUP    once its own setup is done: pid, ppid, pgid, sid as recorded;
 *   VERDICT  after its checks at SIGTERM: the first failure (or none).
 * The root writes READY only when every role has sent SETUP; after SIGTERM
 * it collects every VERDICT (a process that died sends none: it is named as
 * vanished) and writes one result naming the process and the check, the
 * first of: a process that vanished (role order); the root's own failure
 * found before it collected the verdicts; a FAIL verdict (role order); the
 * root's failure found after (checks of what the whole tree did, which a
 * child's failure explains better).
 *
 * Failures. pcheck() records the first failure of the calling process
 * (every process has its own; a child starts with none).
 *
 * Crashes. In a child the crash reporter writes to <result>.crash.<role>
 * instead of the root's result file; the root quotes that file when the
 * process vanished (or died during setup).
 *
 * Streams. Sequence-number streams between processes: 16-byte records
 * (DATA seq, check word; END last-seq, value), written whole (atomic on
 * pipes, one skb on sockets). The receiver checks gap-free, duplicate-free,
 * in order, correct check words, a final END equal to the last DATA, then EOF.
 */
#ifndef FERRY_WL_TREE_H
#define FERRY_WL_TREE_H

#include "wl.h"

#include <stdint.h>
#include <sys/types.h>

#define WT_MAX_ROLES 128
#define WT_NAME 32
#define WT_MSG 880

struct wt_role {
    char name[WT_NAME];
    int parent;     /* role index of its parent at READY (-1 for the root) */
    int reports;    /* sends VERDICT (and SETUP unless dynamic) */
    int dynamic;    /* created only after SIGTERM by its parent role: no SETUP, pid learnt later */
    int exit_code;  /* what it exits with after its verdict (64 + index) */
    int aux;        /* free for the workload (tree.c: the parent's fd of its stream) */
    /* ids: set by the process itself, by its forking parent (pid), and by the root from SETUP */
    pid_t pid, ppid, pgid, sid;
    int have_setup;
    /* root side */
    int have_verdict, verdict_ok;
    char vfile[32];
    int vline;
    char vmsg[WT_MSG];
    pid_t extra;      /* pid of the dynamic role it created (from its VERDICT) */
    int reaped;       /* wt_reap() got its status (in the process that reaped it) */
    int wstatus;
};

extern struct wt_role wt_roles[WT_MAX_ROLES];
extern int wt_nroles;
extern int wt_self;          /* role index of the calling process */
extern int wt_report_wfd;    /* write end of the report pipe (every process) */
extern int wt_report_rfd;    /* read end (root only; -1 elsewhere) */

/* Root: after wl_init(). Role 0 = root (its pid, pgid, sid recorded), report pipe, SIGPIPE ignored. */
void wt_root_init(const char *root_name);
/* Adds a role; returns its index. */
int wt_add_role(const char *name, int parent, int reports, int dynamic);

/* fork(): in the child wt_self = role, fresh failure state, crash path, no report read end. */
pid_t wt_fork(int role);
/* Child: close every fd above 2 except the report pipe and the ones given. */
void wt_keep_fds(const int *keep, int n);

/* Child: record own pid/ppid/pgid/sid and send SETUP. */
void wt_send_setup(void);
/*
 * Own ids against the values recorded at SETUP: pid always; for a non-root
 * process also ppid, and pgid/sid: exactly when the recorded value is inside
 * the tree, otherwise "the same as the root's current one" (the root's
 * group/session may belong to the harness, outside the tree).
 */
void wt_check_ids(void);
/* Non-root: getppid() differs from the recorded ppid (records a failure once). */
int wt_parent_gone(void);
/* Send VERDICT (extra: pid of a dynamic child, or 0) and _exit(exit_code). */
void wt_verdict_exit(pid_t extra) __attribute__((noreturn));

/* Root side. */
void wt_root_wait_setup(double timeout_s);   /* wl_setup_fail() on a death or timeout */
void wt_root_drain(void);                    /* non-blocking: read the reports available */
void wt_root_collect(double timeout_s);      /* after SIGTERM: every verdict, or its sender dead */
void wt_root_finish(void) __attribute__((noreturn));

/* Failures. */
void wt_fail_at(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#define pcheck(cond, ...)                                   \
    __extension__({                                         \
        int wt_ok_ = !!(cond);                              \
        if (!wt_ok_)                                        \
            wt_fail_at(__FILE__, __LINE__, __VA_ARGS__);    \
        wt_ok_;                                             \
    })
int wt_failed(void);

/* Processes. */
int wt_pid_dead(pid_t pid);                  /* no /proc/pid, or state Z/X */
const char *wt_wstatus_str(int st, char *buf, size_t cap);
/* waitpid(pid) until deadline; pcheck: exited with wt_roles[role].exit_code. */
int wt_reap(pid_t pid, int role, int64_t deadline_ns);
void wt_sleep_ms(int ms);

/* Streams. */
#define WT_END_BIT (1ULL << 63)
uint64_t wt_check_word(uint64_t seq, int salt);
/* Write one record whole. 1: written; 0: EINTR before anything was written
 * (only when eintr_ok); -errno on error. */
int wt_write_rec(int fd, uint64_t a, uint64_t b, int eintr_ok);

struct wt_sender {
    int fd;
    int salt;       /* role index of the producer */
    uint64_t seq;   /* last seq written */
};
/* One DATA record; returns like wt_write_rec (eintr_ok). */
int wt_send_tick(struct wt_sender *s);
/* After SIGTERM: one more DATA, END(seq, value), close. pchecks errors. */
void wt_send_close(struct wt_sender *s, uint64_t end_value, const char *to_name);

struct wt_stream {
    int fd;
    int salt;             /* role index of the producer of the records */
    char from[80];        /* for messages: "from 'node 0.1' (pid 42)" */
    unsigned char part[16];
    int npart;
    uint64_t last;        /* last DATA seq received */
    uint64_t last_at_setup;
    uint64_t nrec;
    int ended, eof, bad;
    uint64_t end_value;
    int fwd_fd;           /* >= 0: every record is forwarded there unchanged */
};
/* fd is made O_NONBLOCK. */
void wt_stream_init(struct wt_stream *s, int fd, int salt, const char *from);
/* Read what is available; 1 while open, 0 after EOF (or a read error). */
int wt_stream_pump(struct wt_stream *s);
/* After EOF: ended with END, and seq advanced since setup. */
void wt_stream_final_check(struct wt_stream *s);
/* Pump all streams until every one reached EOF or the deadline passed; the
 * root also drains reports. Names the streams still open at the deadline. */
void wt_streams_drain(struct wt_stream *s, int n, int64_t deadline_ns);

#endif
