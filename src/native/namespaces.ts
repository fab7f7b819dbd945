/**
 * Linux namespaces: the clone flags that create them, their identities as
 * /proc shows them, and the setup calls that only a task inside a new
 * namespace can make (run through its Injector).
 */
import fs from 'node:fs';
import path from 'node:path';
import { cString, syscall, addressOf } from './libc.js';
import { Sys } from './syscalls.js';
import { readLink } from './proc.js';
import { inNamespace } from './process.js';
import { SOCK_CLOEXEC } from './flags.js';
import type { Injector } from './inject.js';

/** CLONE_NEW* flags. CLONE_NEWTIME (0x80) overlaps the exit-signal byte of clone(2), so only clone3 and unshare take it. */
export const CLONE_NEW = {
  TIME: 0x80, NS: 0x20000, CGROUP: 0x02000000, UTS: 0x04000000, IPC: 0x08000000,
  USER: 0x10000000, PID: 0x20000000, NET: 0x40000000,
} as const;

export const NAMESPACE_KINDS = ['pid', 'mnt', 'uts', 'ipc', 'net', 'cgroup', 'time', 'user'] as const;
export type NamespaceKind = (typeof NAMESPACE_KINDS)[number];

/**
 * The inode number of each namespace the process is in: two processes share
 * a namespace exactly when these are equal.
 */
export function namespaceIds(pid: number | 'self'): Record<NamespaceKind, number> {
  const ids = {} as Record<NamespaceKind, number>;
  for (const kind of NAMESPACE_KINDS) {
    const link = readLink(`/proc/${pid}/ns/${kind}`);
    const m = /\[(\d+)\]$/.exec(link);
    if (!m) throw new Error(`unexpected namespace link /proc/${pid}/ns/${kind} -> ${link}`);
    ids[kind] = Number(m[1]);
  }
  return ids;
}

/** HOST_NAME_MAX: longer names are EINVAL. */
export const HOSTNAME_MAX = 64;

/** sethostname in the task's UTS namespace. */
export function setHostnameIn(inj: Injector, hostname: string): void {
  inj.reset();
  try {
    const bytes = Buffer.from(hostname, 'utf8');
    inj.call(`sethostname(${hostname})`, Sys.sethostname, inj.put(bytes), bytes.length);
  } finally {
    inj.reset();
  }
}

const AF_INET = 2;
const SOCK_DGRAM = 2;
const SIOCGIFFLAGS = 0x8913;
const SIOCSIFFLAGS = 0x8914;
const IFF_UP = 0x1;
const IFREQ_SIZE = 40;
const IFR_FLAGS_OFFSET = 16;

/**
 * Brings the loopback interface of the task's network namespace up: a new
 * namespace has `lo` and nothing else, and `lo` starts down, so even
 * 127.0.0.1 is unreachable until someone does this.
 */
export function bringUpLoopbackIn(inj: Injector): void {
  inj.reset();
  try {
    const ifreq = Buffer.alloc(IFREQ_SIZE);
    cString('lo').copy(ifreq, 0);
    const addr = inj.put(ifreq);
    const fd = inj.call('socket(AF_INET, SOCK_DGRAM)', Sys.socket, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    try {
      inj.call('ioctl(SIOCGIFFLAGS, lo)', Sys.ioctl, fd, SIOCGIFFLAGS, addr);
      const current = inj.read(addr, IFREQ_SIZE);
      current.writeUInt16LE(current.readUInt16LE(IFR_FLAGS_OFFSET) | IFF_UP, IFR_FLAGS_OFFSET);
      inj.call('ioctl(SIOCSIFFLAGS, lo)', Sys.ioctl, fd, SIOCSIFFLAGS, inj.put(current));
    } finally {
      inj.call('close', Sys.close, fd);
    }
  } finally {
    inj.reset();
  }
}

/** A path as the process sees it, reachable from the host through /proc/PID/root. */
export function pathInRoot(pid: number, p: string): string {
  return `/proc/${pid}/root${p.startsWith('/') ? p : `/${p}`}`;
}

/**
 * Runs `fn` with this thread in the IPC namespace of `pid`, then puts it
 * back. /proc/sysvipc lists the objects of the reader's namespace, whatever
 * procfs mount it is read through, so only a reader inside sees a
 * container's objects. setns changes the calling thread only.
 */
function inIpcNamespaceOf<T>(pid: number, fn: () => T): T {
  return inNamespace('ipc', `/proc/${pid}/ns/ipc`, fn);
}

/** The System V IPC objects of a process's IPC namespace, by kind. */
export function sysvIpcObjects(pid: number): Record<'shm' | 'sem' | 'msg', number> {
  return inIpcNamespaceOf(pid, () => {
    const count = (kind: string): number => {
      try {
        return fs.readFileSync(`/proc/sysvipc/${kind}`, 'utf8').trim().split('\n').length - 1;
      } catch {
        return 0;
      }
    };
    return { shm: count('shm'), sem: count('sem'), msg: count('msg') };
  });
}

/** POSIX message queues of a process's IPC namespace (its /dev/mqueue). */
export function mqueueNames(pid: number): string[] {
  try {
    return fs.readdirSync(pathInRoot(pid, '/dev/mqueue'));
  } catch {
    return [];
  }
}

/** One entry of a directory tree inside a process's root. */
export interface TreeNode {
  /** Relative to the directory listed; parents come before children. */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  target?: string;
}

/** Every file, directory and symlink below `dir` as the process sees it, without following symlinks. */
export function listTreeIn(pid: number, dir: string): TreeNode[] {
  const root = pathInRoot(pid, dir);
  const out: TreeNode[] = [];
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const relPath = rel ? `${rel}/${name}` : name;
      const full = path.join(root, relPath);
      const st = fs.lstatSync(full);
      const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : 'other';
      out.push({ path: relPath, type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, size: st.size, ...(type === 'symlink' ? { target: fs.readlinkSync(full) } : {}) });
      if (type === 'dir') walk(relPath);
    }
  };
  walk('');
  return out;
}

export function readFileIn(pid: number, file: string): Buffer {
  return fs.readFileSync(pathInRoot(pid, file));
}

/** Recreates a tree below `dir` inside a process's root (from the host, through /proc/PID/root). */
export function writeTreeNodeIn(pid: number, dir: string, node: TreeNode, contents?: Buffer): void {
  const full = pathInRoot(pid, `${dir}/${node.path}`);
  if (node.type === 'dir') fs.mkdirSync(full, { mode: node.mode });
  else if (node.type === 'symlink') fs.symlinkSync(node.target!, full);
  else fs.writeFileSync(full, contents ?? Buffer.alloc(0), { mode: node.mode });
  fs.lchownSync(full, node.uid, node.gid);
  if (node.type !== 'symlink') fs.chmodSync(full, node.mode);
}

export const CLOCK_MONOTONIC = 1;
export const CLOCK_BOOTTIME = 7;

export interface Timespec {
  sec: number;
  nsec: number;
}

/** a + b (b may be negative), normalized. */
export function addTime(a: Timespec, b: Timespec): Timespec {
  const ns = BigInt(a.sec) * 1_000_000_000n + BigInt(a.nsec) + BigInt(b.sec) * 1_000_000_000n + BigInt(b.nsec);
  const sec = ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n);
  return { sec: Number(sec), nsec: Number(ns - sec * 1_000_000_000n) };
}

/** a - b, normalized. */
export function subTime(a: Timespec, b: Timespec): Timespec {
  return addTime(a, { sec: -b.sec - (b.nsec ? 1 : 0), nsec: b.nsec ? 1_000_000_000 - b.nsec : 0 });
}

/** A clock as this thread (the host's time namespace) reads it. */
export function clockGettime(clock: number): Timespec {
  const out = Buffer.alloc(16);
  syscall(`clock_gettime(${clock})`, Sys.clock_gettime, clock, addressOf(out));
  return { sec: Number(out.readBigInt64LE(0)), nsec: Number(out.readBigInt64LE(8)) };
}

/** How far a process's time namespace sets CLOCK_MONOTONIC and CLOCK_BOOTTIME from the host's. */
export function timeOffsets(pid: number): { monotonic: Timespec; boottime: Timespec } {
  const out = { monotonic: { sec: 0, nsec: 0 }, boottime: { sec: 0, nsec: 0 } };
  for (const line of fs.readFileSync(`/proc/${pid}/timens_offsets`, 'utf8').split('\n')) {
    const [name, sec, nsec] = line.trim().split(/\s+/);
    if (name === 'monotonic' || name === 'boottime') out[name] = { sec: Number(sec), nsec: Number(nsec) };
  }
  return out;
}

/**
 * Sets the offsets of the time namespace `pid`'s children will be born in
 * (after it called unshare(CLONE_NEWTIME)); the kernel takes them only
 * while no task has entered that namespace yet.
 */
export function setTimeOffsetsForChildren(pid: number, offsets: { monotonic: Timespec; boottime: Timespec }): void {
  const text = `monotonic ${offsets.monotonic.sec} ${offsets.monotonic.nsec}\nboottime ${offsets.boottime.sec} ${offsets.boottime.nsec}\n`;
  fs.writeFileSync(`/proc/${pid}/timens_offsets`, text);
}
