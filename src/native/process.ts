import { libc, syscall, addressOf, cString } from './libc.js';
import { NativeError } from './errors.js';
import { Sys } from './syscalls.js';
import { O_APPEND, O_CLOEXEC, O_CREAT, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY } from './flags.js';

const spawnNative = libc.func('int posix_spawn(_Out_ int *pid, const char *path, void *fileActions, void *attr, const char **argv, const char **envp)');
const faInit = libc.func('int posix_spawn_file_actions_init(void *fa)');
const faDestroy = libc.func('int posix_spawn_file_actions_destroy(void *fa)');
const faAddOpen = libc.func('int posix_spawn_file_actions_addopen(void *fa, int fd, const char *path, int oflag, int mode)');
const faAddDup2 = libc.func('int posix_spawn_file_actions_adddup2(void *fa, int fd, int newfd)');
const faAddChdir = libc.func('int posix_spawn_file_actions_addchdir_np(void *fa, const char *path)');
const faAddClosefrom = libc.func('int posix_spawn_file_actions_addclosefrom_np(void *fa, int from)');
const attrInit = libc.func('int posix_spawnattr_init(void *attr)');
const attrDestroy = libc.func('int posix_spawnattr_destroy(void *attr)');
const attrSetFlags = libc.func('int posix_spawnattr_setflags(void *attr, short flags)');
const attrSetSigmask = libc.func('int posix_spawnattr_setsigmask(void *attr, void *sigset)');
const attrSetSigdefault = libc.func('int posix_spawnattr_setsigdefault(void *attr, void *sigset)');

const SPAWN_SETSIGDEF = 0x04;
const SPAWN_SETSIGMASK = 0x08;
const SPAWN_SETSID = 0x80;

/** Where one of the child's standard fds points: a path opened for it, or an fd of ours dup'ed to it. */
export type StdioSpec = { path: string; append?: boolean } | { fd: number } | 'null';

export interface SpawnOptions {
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  stdin?: StdioSpec;
  stdout?: StdioSpec;
  stderr?: StdioSpec;
  /** Start a new session (the child is detached from our terminal and process group). */
  newSession?: boolean;
  /** Start it in this network namespace (a namespace file: /run/netns/NAME, /proc/PID/ns/net). */
  netns?: string;
}

function check(call: string, rc: number): void {
  if (rc !== 0) throw new NativeError(call, rc);
}

/**
 * Starts a program with posix_spawn, outside libuv: libuv would reap it and,
 * once we trace it, its waitpid() calls would steal our ptrace stops. The
 * caller owns the child and must reap it (reap()). Signal dispositions are
 * reset to default and the mask emptied, so the child does not inherit
 * Node's SIGPIPE=SIG_IGN or a worker thread's blocked signals.
 */
export function spawn(path: string, options: SpawnOptions = {}): number {
  if (options.netns) {
    const { netns, ...rest } = options;
    return inNetns(netns, () => spawn(path, rest));
  }
  const fa = Buffer.alloc(256);
  const attr = Buffer.alloc(512);
  check('posix_spawn_file_actions_init', faInit(fa));
  check('posix_spawnattr_init', attrInit(attr));
  try {
    const stdio: Array<[number, StdioSpec]> = [
      [0, options.stdin ?? 'null'],
      [1, options.stdout ?? 'null'],
      [2, options.stderr ?? 'null'],
    ];
    for (const [fd, spec] of stdio) {
      if (spec === 'null') check('posix_spawn_file_actions_addopen', faAddOpen(fa, fd, '/dev/null', fd === 0 ? O_RDONLY : O_WRONLY, 0));
      else if ('fd' in spec) check('posix_spawn_file_actions_adddup2', faAddDup2(fa, spec.fd, fd));
      else {
        const flags = fd === 0 ? O_RDONLY : O_WRONLY | O_CREAT | (spec.append ? O_APPEND : O_TRUNC);
        check('posix_spawn_file_actions_addopen', faAddOpen(fa, fd, spec.path, flags, 0o644));
      }
    }
    // Nothing of ours leaks into the child: an inherited fd would make its checkpoint refuse or drag our pipes along.
    check('posix_spawn_file_actions_addclosefrom_np', faAddClosefrom(fa, 3));
    if (options.cwd) check('posix_spawn_file_actions_addchdir_np', faAddChdir(fa, options.cwd));
    const emptySet = Buffer.alloc(128);
    const defaults = Buffer.alloc(128);
    for (let sig = 1; sig <= 64; sig++) {
      // SIGKILL/SIGSTOP cannot change and glibc reserves 32/33 for itself.
      if (sig === 9 || sig === 19 || sig === 32 || sig === 33) continue;
      defaults[(sig - 1) >> 3] |= 1 << ((sig - 1) & 7);
    }
    check('posix_spawnattr_setsigmask', attrSetSigmask(attr, emptySet));
    check('posix_spawnattr_setsigdefault', attrSetSigdefault(attr, defaults));
    check('posix_spawnattr_setflags', attrSetFlags(attr, SPAWN_SETSIGDEF | SPAWN_SETSIGMASK | (options.newSession ? SPAWN_SETSID : 0)));
    const argv = [...(options.argv ?? [path]), null];
    const env = options.env ?? (process.env as Record<string, string>);
    const envp = [...Object.entries(env).map(([k, v]) => `${k}=${v}`), null];
    const pidOut = [0];
    check(`posix_spawn(${path})`, spawnNative(pidOut, path, fa, attr, argv, envp));
    return pidOut[0]!;
  } finally {
    faDestroy(fa);
    attrDestroy(attr);
  }
}

/**
 * Makes orphans below us come back to us instead of PID 1, which on these
 * machines reaps them slowly: a zombie still holds its pid, and the next
 * restore with that pid would fail.
 */
export function becomeChildSubreaper(): void {
  syscall('prctl(PR_SET_CHILD_SUBREAPER)', Sys.prctl, 36, 1);
}

export function kill(pid: number, signal: number): void {
  syscall(`kill(${pid}, ${signal})`, Sys.kill, pid, signal);
}

export function tgkill(tgid: number, tid: number, signal: number): void {
  syscall(`tgkill(${tgid}, ${tid}, ${signal})`, Sys.tgkill, tgid, tid, signal);
}

export function pidfdOpen(pid: number): number {
  return syscall(`pidfd_open(${pid})`, Sys.pidfd_open, pid, 0);
}

/** Duplicates `targetFd` of the process behind `pidfd` into our fd table (needs PTRACE_MODE_ATTACH_REALCREDS). */
export function pidfdGetfd(pidfd: number, targetFd: number): number {
  return syscall(`pidfd_getfd(${targetFd})`, Sys.pidfd_getfd, pidfd, targetFd, 0);
}

export function pidfdSendSignal(pidfd: number, signal: number): void {
  syscall(`pidfd_send_signal(${signal})`, Sys.pidfd_send_signal, pidfd, signal, 0, 0);
}

export function close(fd: number): void {
  syscall(`close(${fd})`, Sys.close, fd);
}

/** Takes a copy of one of another process's fds, for as long as `use` runs. */
export function withRemoteFd<T>(pid: number, fd: number, use: (localFd: number) => T): T {
  const pidfd = pidfdOpen(pid);
  try {
    const local = pidfdGetfd(pidfd, fd);
    try {
      return use(local);
    } finally {
      close(local);
    }
  } finally {
    close(pidfd);
  }
}

export interface Rlimit {
  soft: bigint;
  hard: bigint;
}

export const RLIM_INFINITY = 0xffffffffffffffffn;

/** prlimit64 on another process: read, and set when `value` is given. */
export function prlimit(pid: number, resource: number, value?: Rlimit): Rlimit {
  const newBuf = value ? Buffer.alloc(16) : null;
  if (newBuf && value) {
    newBuf.writeBigUInt64LE(value.soft, 0);
    newBuf.writeBigUInt64LE(value.hard, 8);
  }
  const oldBuf = Buffer.alloc(16);
  syscall(`prlimit64(${pid}, ${resource})`, Sys.prlimit64, pid, resource, newBuf ? addressOf(newBuf) : 0, addressOf(oldBuf));
  return { soft: oldBuf.readBigUInt64LE(0), hard: oldBuf.readBigUInt64LE(8) };
}

export function setns(fd: number, nstype: number): void {
  syscall(`setns(${fd})`, Sys.setns, fd, nstype);
}

const NAMESPACE_FLAGS = { net: 0x40000000, ipc: 0x08000000 } as const;

/**
 * Runs `fn` with the calling thread in the namespace behind the file
 * `nsPath` (a /proc/PID/ns/<kind> link, or a bind mount of one), then puts
 * it back. setns changes the calling thread only, so nothing else sees the
 * move, and a child spawned meanwhile is born in the thread's namespace.
 */
export function inNamespace<T>(kind: keyof typeof NAMESPACE_FLAGS, nsPath: string, fn: () => T): T {
  const flag = NAMESPACE_FLAGS[kind];
  const ours = open(`/proc/thread-self/ns/${kind}`, O_RDONLY | O_CLOEXEC);
  try {
    const theirs = open(nsPath, O_RDONLY | O_CLOEXEC);
    try {
      setns(theirs, flag);
    } finally {
      close(theirs);
    }
    try {
      return fn();
    } finally {
      setns(ours, flag);
    }
  } finally {
    close(ours);
  }
}

/** inNamespace for the network namespace: where sockets made by `fn` live. */
export function inNetns<T>(nsPath: string, fn: () => T): T {
  return inNamespace('net', nsPath, fn);
}

export function ioctl(fd: number, request: number | bigint, arg: number | bigint | Buffer = 0): number {
  const a = Buffer.isBuffer(arg) ? addressOf(arg) : arg;
  return syscall(`ioctl(${fd}, 0x${request.toString(16)})`, Sys.ioctl, fd, request, a);
}

export function socket(domain: number, type: number, protocol = 0): number {
  return syscall(`socket(${domain}, ${type})`, Sys.socket, domain, type, protocol);
}

export function getsockopt(fd: number, level: number, name: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(size, 0);
  syscall(`getsockopt(${fd}, ${level}, ${name})`, Sys.getsockopt, fd, level, name, addressOf(out), addressOf(len));
  return out.subarray(0, len.readUInt32LE(0));
}

export function setsockopt(fd: number, level: number, name: number, value: Buffer): void {
  syscall(`setsockopt(${fd}, ${level}, ${name})`, Sys.setsockopt, fd, level, name, addressOf(value), value.length);
}

/** Opens a path with raw flags; fs.openSync would refuse flags like O_PATH and hides errno names. */
export function open(path: string, flags: number, mode = 0): number {
  const p = cString(path);
  return syscall(`open(${path})`, Sys.openat, -100, addressOf(p), flags, mode);
}

export const OpenFlags = { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_APPEND, O_TRUNC } as const;

/** get_robust_list(tid): the head of the thread's robust futex list and its size. */
export function getRobustList(tid: number): { head: number; len: number } {
  const head = Buffer.alloc(8);
  const len = Buffer.alloc(8);
  syscall(`get_robust_list(${tid})`, Sys.get_robust_list, tid, addressOf(head), addressOf(len));
  return { head: Number(head.readBigUInt64LE(0)), len: Number(len.readBigUInt64LE(0)) };
}
