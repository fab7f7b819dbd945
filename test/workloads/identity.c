/*
 * identity — process attributes: credentials, capabilities, prctl flags,
 * rlimits, personality, cwd, umask, comm.
 *
 *   identity <result-file> [cwd-dir] [uid] [gid]
 *        cwd-dir default: the result file's directory; uid/gid default 1000/1000
 *
 * Must start as root. Before READY, in this order:
 *   umask 027; chdir(cwd-dir); comm "ferry-ident" (PR_SET_NAME);
 *   RLIMIT_NOFILE soft 200 (hard unchanged), RLIMIT_CORE {0, 4 MiB} (hard
 *   lowered when above), RLIMIT_STACK soft 16 MiB (or the hard limit if lower);
 *   personality PER_LINUX | UNAME26 | ADDR_NO_RANDOMIZE (UNAME26 makes uname()
 *   report a 2.6.x release: checked live); nice 7; timer slack 123456 ns;
 *   PR_SET_NO_NEW_PRIVS 1; bounding set without CAP_SYS_BOOT and CAP_MKNOD;
 *   setgroups {gid, 27}, setresgid(gid x3), PR_SET_KEEPCAPS 1, setresuid(uid x3);
 *   capabilities permitted {NET_BIND_SERVICE, DAC_OVERRIDE}, effective
 *   {NET_BIND_SERVICE}, inheritable {NET_BIND_SERVICE}, ambient
 *   {NET_BIND_SERVICE}; PR_SET_DUMPABLE 0 (the uid change already does
 *   that with the default suid_dumpable; set explicitly so it is a checked
 *   value: root with CAP_SYS_PTRACE can still trace and read /proc/PID/mem,
 *   but the files under /proc/PID become root-owned); PR_SET_PDEATHSIG SIGUSR1 (set last:
 *   a credential change clears it).
 * CAP_DAC_OVERRIDE stays permitted (not effective) only so the workload can
 * write its .ready and result files into a root-owned directory: it is raised
 * around those writes and dropped again (wl_before_write / wl_after_write).
 * Then it records all of the above plus getpid(), readlink(/proc/self/exe),
 * the cwd's dev/ino and the Uid, Gid, Groups, Cap..., NoNewPrivs, Seccomp, Umask
 * lines of /proc/self/status.
 * Between READY and SIGTERM: sleeps in 10 ms nanosleeps.
 * At SIGTERM: every recorded value is compared with its current value, and
 * against the intended value where one was set (uid, gid, groups, comm,
 * umask, caps, flags); getppid() != 0.
 */
#include "wl.h"

#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define CAPBIT(c) (1ULL << (c))

struct caps {
    uint64_t eff, prm, inh;
};

struct ident {
    char comm[16];
    char cwd[4096];
    dev_t cwd_dev;
    ino_t cwd_ino;
    char exe[4096];
    pid_t pid;
    uid_t ruid, euid, suid, fsuid;
    gid_t rgid, egid, sgid, fsgid;
    int ngroups;
    gid_t groups[64];
    struct rlimit rl[RLIM_NLIMITS];
    int persona;
    int nice;
    long timerslack;
    int no_new_privs, dumpable, pdeathsig, keepcaps;
    struct caps caps;
    uint64_t ambient, bounding;
    char status[9][64];
    char uname_release[65];
};

static const char *const status_keys[9] = {"Uid", "Gid", "Groups", "CapInh", "CapPrm",
                                           "CapEff", "CapBnd", "CapAmb", "NoNewPrivs"};
static const char *const extra_keys[2] = {"Seccomp", "Umask"};
static char extra_before[2][64];
static const char *const rl_names[RLIM_NLIMITS] = {
    "CPU", "FSIZE", "DATA", "STACK", "CORE", "RSS", "NPROC", "NOFILE",
    "MEMLOCK", "AS", "LOCKS", "SIGPENDING", "MSGQUEUE", "NICE", "RTPRIO", "RTTIME"};

static int last_cap;

static int get_caps(struct caps *c)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    memset(d, 0, sizeof d);
    if (syscall(SYS_capget, &h, d) != 0)
        return -1;
    c->eff = d[0].effective | ((uint64_t)d[1].effective << 32);
    c->prm = d[0].permitted | ((uint64_t)d[1].permitted << 32);
    c->inh = d[0].inheritable | ((uint64_t)d[1].inheritable << 32);
    return 0;
}

static int set_caps(uint64_t eff, uint64_t prm, uint64_t inh)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    d[0].effective = (uint32_t)eff;
    d[1].effective = (uint32_t)(eff >> 32);
    d[0].permitted = (uint32_t)prm;
    d[1].permitted = (uint32_t)(prm >> 32);
    d[0].inheritable = (uint32_t)inh;
    d[1].inheritable = (uint32_t)(inh >> 32);
    return (int)syscall(SYS_capset, &h, d);
}

static const uint64_t CAPS_EFF = CAPBIT(CAP_NET_BIND_SERVICE);
static const uint64_t CAPS_PRM = CAPBIT(CAP_NET_BIND_SERVICE) | CAPBIT(CAP_DAC_OVERRIDE);
static const uint64_t CAPS_INH = CAPBIT(CAP_NET_BIND_SERVICE);

static void raise_dac(void)
{
    set_caps(CAPS_EFF | CAPBIT(CAP_DAC_OVERRIDE), CAPS_PRM, CAPS_INH);
}

static void lower_dac(void)
{
    set_caps(CAPS_EFF, CAPS_PRM, CAPS_INH);
}

static void capture(struct ident *id)
{
    memset(id, 0, sizeof *id);
    prctl(PR_GET_NAME, id->comm, 0, 0, 0);
    if (!getcwd(id->cwd, sizeof id->cwd))
        snprintf(id->cwd, sizeof id->cwd, "<getcwd: %s>", strerror(errno));
    struct stat st;
    if (stat("/proc/self/cwd", &st) == 0) {
        id->cwd_dev = st.st_dev;
        id->cwd_ino = st.st_ino;
    }
    ssize_t n = readlink("/proc/self/exe", id->exe, sizeof id->exe - 1);
    if (n < 0)
        snprintf(id->exe, sizeof id->exe, "<readlink: %s>", strerror(errno));
    id->pid = getpid();
    getresuid(&id->ruid, &id->euid, &id->suid);
    getresgid(&id->rgid, &id->egid, &id->sgid);
    id->fsuid = (uid_t)setfsuid((uid_t)-1);
    id->fsgid = (gid_t)setfsgid((gid_t)-1);
    id->ngroups = getgroups(64, id->groups);
    for (int r = 0; r < RLIM_NLIMITS; r++)
        getrlimit(r, &id->rl[r]);
    id->persona = personality(0xffffffff);
    errno = 0;
    id->nice = getpriority(PRIO_PROCESS, 0);
    id->timerslack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
    id->no_new_privs = prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0);
    id->dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    prctl(PR_GET_PDEATHSIG, &id->pdeathsig, 0, 0, 0);
    id->keepcaps = prctl(PR_GET_KEEPCAPS, 0, 0, 0, 0);
    get_caps(&id->caps);
    for (int c = 0; c <= last_cap; c++) {
        if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1)
            id->ambient |= CAPBIT(c);
        if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1)
            id->bounding |= CAPBIT(c);
    }
    for (int i = 0; i < 9; i++)
        if (wl_status_field(status_keys[i], id->status[i], sizeof id->status[i]) != 0)
            snprintf(id->status[i], sizeof id->status[i], "<missing>");
    struct utsname u;
    if (uname(&u) == 0)
        snprintf(id->uname_release, sizeof id->uname_release, "%s", u.release);
}

static struct ident before, after;

int main(int argc, char **argv)
{
    wl_init(argc, argv, SA_RESTART);
    if (geteuid() != 0)
        wl_setup_fail("must start as root (euid %d)", (int)geteuid());
    char dir[4096];
    if (argc > 2 && argv[2][0]) {
        snprintf(dir, sizeof dir, "%s", argv[2]);
    } else {
        snprintf(dir, sizeof dir, "%s", wl_result_path);
        char *sl = strrchr(dir, '/');
        if (sl == dir)
            sl[1] = 0;
        else if (sl)
            *sl = 0;
    }
    const uid_t uid = argc > 3 ? (uid_t)atoi(argv[3]) : 1000;
    const gid_t gid = argc > 4 ? (gid_t)atoi(argv[4]) : 1000;
    if (uid == 0 || gid == 0)
        wl_setup_fail("uid and gid must be non-root");
    char buf[32];
    if (wl_read_file("/proc/sys/kernel/cap_last_cap", buf, sizeof buf) < 0)
        wl_setup_fail("read cap_last_cap: %s", strerror(errno));
    last_cap = atoi(buf);
    if (last_cap < CAP_MKNOD || last_cap > 63)
        wl_setup_fail("odd cap_last_cap %d", last_cap);

    umask(027);
    if (chdir(dir) != 0)
        wl_setup_fail("chdir %s: %s", dir, strerror(errno));
    if (prctl(PR_SET_NAME, "ferry-ident", 0, 0, 0) != 0)
        wl_setup_fail("PR_SET_NAME: %s", strerror(errno));

    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_max < 200)
        wl_setup_fail("RLIMIT_NOFILE hard limit %lu < 200", (unsigned long)rl.rlim_max);
    rl.rlim_cur = 200;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        wl_setup_fail("setrlimit(NOFILE): %s", strerror(errno));
    getrlimit(RLIMIT_CORE, &rl);
    rl.rlim_cur = 0;
    if (rl.rlim_max > 4 * 1024 * 1024)
        rl.rlim_max = 4 * 1024 * 1024;
    if (setrlimit(RLIMIT_CORE, &rl) != 0)
        wl_setup_fail("setrlimit(CORE): %s", strerror(errno));
    getrlimit(RLIMIT_STACK, &rl);
    rl.rlim_cur = 16 * 1024 * 1024;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur)
        rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_STACK, &rl) != 0)
        wl_setup_fail("setrlimit(STACK): %s", strerror(errno));

    const int want_persona = PER_LINUX | UNAME26 | ADDR_NO_RANDOMIZE;
    if (personality(want_persona) == -1)
        wl_setup_fail("personality: %s", strerror(errno));
    if (setpriority(PRIO_PROCESS, 0, 7) != 0)
        wl_setup_fail("setpriority: %s", strerror(errno));
    if (prctl(PR_SET_TIMERSLACK, 123456, 0, 0, 0) != 0)
        wl_setup_fail("PR_SET_TIMERSLACK: %s", strerror(errno));
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
        wl_setup_fail("PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
    if (prctl(PR_CAPBSET_DROP, CAP_SYS_BOOT, 0, 0, 0) != 0 ||
        prctl(PR_CAPBSET_DROP, CAP_MKNOD, 0, 0, 0) != 0)
        wl_setup_fail("PR_CAPBSET_DROP: %s", strerror(errno));

    const gid_t groups[2] = {gid, 27};
    if (setgroups(2, groups) != 0)
        wl_setup_fail("setgroups: %s", strerror(errno));
    if (setresgid(gid, gid, gid) != 0)
        wl_setup_fail("setresgid: %s", strerror(errno));
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
        wl_setup_fail("PR_SET_KEEPCAPS: %s", strerror(errno));
    if (setresuid(uid, uid, uid) != 0)
        wl_setup_fail("setresuid: %s", strerror(errno));
    if (set_caps(CAPS_EFF, CAPS_PRM, CAPS_INH) != 0)
        wl_setup_fail("capset: %s", strerror(errno));
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0) != 0)
        wl_setup_fail("PR_CAP_AMBIENT_RAISE: %s", strerror(errno));
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
        wl_setup_fail("PR_SET_DUMPABLE: %s", strerror(errno));
    if (prctl(PR_SET_PDEATHSIG, SIGUSR1, 0, 0, 0) != 0)
        wl_setup_fail("PR_SET_PDEATHSIG: %s", strerror(errno));
    wl_before_write = raise_dac;
    wl_after_write = lower_dac;

    capture(&before);
    for (int i = 0; i < 2; i++)
        wl_status_field(extra_keys[i], extra_before[i], sizeof extra_before[i]);

    /* the setup must have produced exactly what we asked for */
    if (strcmp(before.comm, "ferry-ident") != 0 || before.ruid != uid || before.euid != uid ||
        before.suid != uid || before.fsuid != uid || before.rgid != gid || before.egid != gid ||
        before.sgid != gid || before.fsgid != gid || before.ngroups != 2 ||
        before.persona != want_persona || before.nice != 7 || before.timerslack != 123456 ||
        before.no_new_privs != 1 || before.dumpable != 0 || before.pdeathsig != SIGUSR1 ||
        before.keepcaps != 1 || before.caps.eff != CAPS_EFF || before.caps.prm != CAPS_PRM ||
        before.caps.inh != CAPS_INH || before.ambient != CAPBIT(CAP_NET_BIND_SERVICE) ||
        (before.bounding & (CAPBIT(CAP_SYS_BOOT) | CAPBIT(CAP_MKNOD))) ||
        strcmp(extra_before[1], "0027") != 0 || strncmp(before.uname_release, "2.6.", 4) != 0)
        wl_setup_fail("identity setup did not stick (comm %s uid %d/%d/%d persona 0x%x umask %s "
                      "caps %lx/%lx/%lx release %s)",
                      before.comm, (int)before.ruid, (int)before.euid, (int)before.suid,
                      before.persona, extra_before[1], (unsigned long)before.caps.eff,
                      (unsigned long)before.caps.prm, (unsigned long)before.caps.inh,
                      before.uname_release);
    wl_dbg("uid %d gid %d comm %s cwd %s exe %s persona 0x%x release %s", (int)before.ruid,
           (int)before.rgid, before.comm, before.cwd, before.exe, before.persona,
           before.uname_release);

    wl_ready();
    while (!wl_term) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }

    capture(&after);
    const struct ident *b = &before, *a = &after;
    check(a->pid == b->pid, "getpid(): expected %d found %d", b->pid, a->pid);
    pid_t ppid = getppid();
    check(ppid != 0, "getppid() returned 0");
    check(!strcmp(a->comm, b->comm), "comm: expected '%s' found '%s'", b->comm, a->comm);
    {
        char comm_file[64] = "";
        wl_read_file("/proc/self/comm", comm_file, sizeof comm_file);
        check(!strcmp(comm_file, "ferry-ident\n"), "/proc/self/comm: expected 'ferry-ident' found '%.*s'",
              (int)strcspn(comm_file, "\n"), comm_file);
    }
    check(!strcmp(a->exe, b->exe), "/proc/self/exe: expected '%s' found '%s'", b->exe, a->exe);
    check(!strcmp(a->cwd, b->cwd), "cwd: expected '%s' found '%s'", b->cwd, a->cwd);
    check(a->cwd_dev == b->cwd_dev && a->cwd_ino == b->cwd_ino,
          "cwd dev/ino: expected %lx/%lu found %lx/%lu", (long)b->cwd_dev, (long)b->cwd_ino,
          (long)a->cwd_dev, (long)a->cwd_ino);
    for (int i = 0; i < 2; i++) {
        char now[64] = "<missing>";
        wl_status_field(extra_keys[i], now, sizeof now);
        check(!strcmp(now, extra_before[i]), "/proc/self/status %s: expected '%s' found '%s'",
              extra_keys[i], extra_before[i], now);
    }
    for (int i = 0; i < 9; i++)
        check(!strcmp(a->status[i], b->status[i]), "/proc/self/status %s: expected '%s' found '%s'",
              status_keys[i], b->status[i], a->status[i]);
    check(a->ruid == uid && a->euid == uid && a->suid == uid && a->fsuid == uid,
          "uids (real/effective/saved/fs): expected %d found %d/%d/%d/%d", (int)uid, (int)a->ruid,
          (int)a->euid, (int)a->suid, (int)a->fsuid);
    check(a->rgid == gid && a->egid == gid && a->sgid == gid && a->fsgid == gid,
          "gids (real/effective/saved/fs): expected %d found %d/%d/%d/%d", (int)gid, (int)a->rgid,
          (int)a->egid, (int)a->sgid, (int)a->fsgid);
    check(a->ngroups == b->ngroups && !memcmp(a->groups, b->groups, sizeof(gid_t) * 2),
          "supplementary groups: expected %d {%d, %d} found %d {%d, %d}", b->ngroups,
          (int)b->groups[0], (int)b->groups[1], a->ngroups, a->ngroups > 0 ? (int)a->groups[0] : -1,
          a->ngroups > 1 ? (int)a->groups[1] : -1);
    for (int r = 0; r < RLIM_NLIMITS; r++)
        check(a->rl[r].rlim_cur == b->rl[r].rlim_cur && a->rl[r].rlim_max == b->rl[r].rlim_max,
              "RLIMIT_%s: expected soft %lld hard %lld found soft %lld hard %lld", rl_names[r],
              (long long)b->rl[r].rlim_cur, (long long)b->rl[r].rlim_max,
              (long long)a->rl[r].rlim_cur, (long long)a->rl[r].rlim_max);
    check(a->rl[RLIMIT_NOFILE].rlim_cur == 200, "RLIMIT_NOFILE soft: expected 200 found %lld",
          (long long)a->rl[RLIMIT_NOFILE].rlim_cur);
    check(a->persona == b->persona, "personality: expected 0x%x found 0x%x", b->persona, a->persona);
    check(!strcmp(a->uname_release, b->uname_release),
          "uname release (UNAME26): expected '%s' found '%s'", b->uname_release, a->uname_release);
    check(a->nice == b->nice, "nice: expected %d found %d", b->nice, a->nice);
    check(a->timerslack == b->timerslack, "timer slack: expected %ld found %ld", b->timerslack,
          a->timerslack);
    check(a->no_new_privs == 1, "no_new_privs: expected 1 found %d", a->no_new_privs);
    check(a->dumpable == 0, "dumpable: expected 0 found %d", a->dumpable);
    check(a->pdeathsig == SIGUSR1, "pdeathsig: expected %d (SIGUSR1) found %d", SIGUSR1,
          a->pdeathsig);
    check(a->keepcaps == 1, "keepcaps: expected 1 found %d", a->keepcaps);
    check(a->caps.eff == b->caps.eff && a->caps.prm == b->caps.prm && a->caps.inh == b->caps.inh,
          "capabilities eff/prm/inh: expected %lx/%lx/%lx found %lx/%lx/%lx",
          (unsigned long)b->caps.eff, (unsigned long)b->caps.prm, (unsigned long)b->caps.inh,
          (unsigned long)a->caps.eff, (unsigned long)a->caps.prm, (unsigned long)a->caps.inh);
    check(a->ambient == b->ambient, "ambient capabilities: expected %lx found %lx",
          (unsigned long)b->ambient, (unsigned long)a->ambient);
    check(a->bounding == b->bounding, "bounding set: expected %lx found %lx",
          (unsigned long)b->bounding, (unsigned long)a->bounding);
    wl_finish();
}
