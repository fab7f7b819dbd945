import fs from 'node:fs';
import { syscall, addressOf } from './libc.js';
import { NativeError, isNativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { asNative } from './memory.js';
import { readLink } from './proc.js';

/**
 * What the kernel tells about another process's file descriptors: the
 * /proc/PID/fd link, /proc/PID/fdinfo, the inode behind the fd, kcmp, and
 * reads through a copy of such an fd taken with pidfd_getfd. Nothing here
 * changes the process.
 */

export interface EpollTarget {
  /** The fd number the target was registered with. */
  tfd: number;
  events: number;
  data: bigint;
}

export interface TimerfdInfo {
  clockid: number;
  /** Expirations not yet read. */
  ticks: bigint;
  /** TFD_TIMER_ABSTIME / TFD_TIMER_CANCEL_ON_SET as last given to timerfd_settime. */
  settimeFlags: number;
  /** Time left until the next expiration (relative, whatever the flags). */
  value: { sec: number; nsec: number };
  interval: { sec: number; nsec: number };
}

export interface FdInfo {
  pos: number;
  /** The file description's f_flags, with O_CLOEXEC folded in for this fd (as the kernel prints it). */
  flags: number;
  /** "lock:" lines: flock/POSIX locks and leases held through this file. */
  locks: string[];
  eventfd?: { count: bigint; semaphore: boolean };
  epoll?: EpollTarget[];
  signalfdMask?: bigint;
  timerfd?: TimerfdInfo;
}

function timePair(s: string, what: string): { sec: number; nsec: number } {
  const m = /^\((\d+), (\d+)\)$/.exec(s.trim());
  if (!m) throw new Error(`unparsable ${what} in fdinfo: ${s}`);
  return { sec: Number(m[1]), nsec: Number(m[2]) };
}

/** Parses /proc/PID/fdinfo/FD. The kind-specific lines are present only for their kind of file. */
export function readFdInfo(pid: number, fd: number): FdInfo {
  let text: string;
  try {
    text = fs.readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8');
  } catch (e) {
    throw asNative(e, `read(/proc/${pid}/fdinfo/${fd})`);
  }
  const info: FdInfo = { pos: 0, flags: 0, locks: [] };
  const timer: Partial<TimerfdInfo> = {};
  let eventfd: { count?: bigint; semaphore: boolean } | undefined;
  for (const line of text.split('\n')) {
    const tfd = /^tfd:\s*(\d+)\s+events:\s*([0-9a-f]+)\s+data:\s*([0-9a-f]+)/.exec(line);
    if (tfd) {
      (info.epoll ??= []).push({ tfd: Number(tfd[1]), events: parseInt(tfd[2]!, 16), data: BigInt('0x' + tfd[3]) });
      continue;
    }
    const i = line.indexOf(':');
    if (i < 0) continue;
    const key = line.slice(0, i);
    const value = line.slice(i + 1).trim();
    switch (key) {
      case 'pos': info.pos = Number(value); break;
      case 'flags': info.flags = parseInt(value, 8); break;
      case 'lock': info.locks.push(value); break;
      case 'eventfd-count': (eventfd ??= { semaphore: false }).count = BigInt('0x' + value); break;
      case 'eventfd-semaphore': (eventfd ??= { semaphore: false }).semaphore = value === '1'; break;
      case 'sigmask': info.signalfdMask = BigInt('0x' + value); break;
      case 'clockid': timer.clockid = Number(value); break;
      case 'ticks': timer.ticks = BigInt(value); break;
      case 'settime flags': timer.settimeFlags = parseInt(value, 8); break;
      case 'it_value': timer.value = timePair(value, 'it_value'); break;
      case 'it_interval': timer.interval = timePair(value, 'it_interval'); break;
    }
  }
  if (eventfd?.count !== undefined) info.eventfd = { count: eventfd.count, semaphore: eventfd.semaphore };
  if (timer.clockid !== undefined && timer.ticks !== undefined && timer.settimeFlags !== undefined && timer.value && timer.interval) {
    info.timerfd = timer as TimerfdInfo;
  }
  return info;
}

/** Where /proc/PID/fd/FD points: a path (with " (deleted)" when unlinked), "pipe:[ino]", "socket:[ino]", "anon_inode:[eventfd]", ... */
export function readFdLink(pid: number, fd: number): string {
  return readLink(`/proc/${pid}/fd/${fd}`);
}

export type NodeType = 'file' | 'dir' | 'chr' | 'blk' | 'fifo' | 'socket' | 'symlink';

export interface NodeStat {
  type: NodeType;
  /** "major:minor" of the filesystem, as /proc/PID/maps prints it (hex, at least two digits each). */
  dev: string;
  ino: number;
  /** "major:minor" of the device, for device nodes, in decimal as ls and /proc/devices show it. */
  rdev: string;
  nlink: number;
  size: number;
  mode: number;
  uid: number;
  gid: number;
  /** statfs f_type of the filesystem holding the inode. */
  fsType: number;
}

const S_IFMT = 0o170000;
const NODE_TYPES: Record<number, NodeType> = {
  0o100000: 'file', 0o040000: 'dir', 0o020000: 'chr', 0o060000: 'blk', 0o010000: 'fifo', 0o140000: 'socket', 0o120000: 'symlink',
};

function majorMinor(dev: bigint): [bigint, bigint] {
  return [((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn), (dev & 0xffn) | ((dev >> 12n) & ~0xffn)];
}

/** A userspace dev_t as /proc/PID/maps prints a filesystem's: hex, at least two digits each. */
function devString(dev: bigint): string {
  return majorMinor(dev)
    .map((n) => n.toString(16).padStart(2, '0'))
    .join(':');
}

function nodeStat(path: string, follow: boolean): NodeStat {
  const st = follow ? fs.statSync(path, { bigint: true }) : fs.lstatSync(path, { bigint: true });
  const type = NODE_TYPES[Number(st.mode) & S_IFMT];
  if (!type) throw new Error(`${path}: unknown file type (mode 0${st.mode.toString(8)})`);
  return {
    type,
    dev: devString(st.dev),
    ino: Number(st.ino),
    rdev: majorMinor(st.rdev).join(':'),
    nlink: Number(st.nlink),
    size: Number(st.size),
    mode: Number(st.mode) & 0o7777,
    uid: Number(st.uid),
    gid: Number(st.gid),
    fsType: type === 'symlink' ? 0 : Number(fs.statfsSync(path, { bigint: true }).type),
  };
}

/** The inode behind a process's fd (what fstat in the process would say). */
export function statFd(pid: number, fd: number): NodeStat {
  const path = `/proc/${pid}/fd/${fd}`;
  try {
    return nodeStat(path, true);
  } catch (e) {
    throw asNative(e, `stat(${path})`);
  }
}

/** The inode at a path (lstat when `follow` is false), or null when nothing is there. */
export function statPath(path: string, follow = true): NodeStat | null {
  try {
    return nodeStat(path, follow);
  } catch (e) {
    const err = asNative(e, `stat(${path})`);
    if (isNativeError(err, 'ENOENT') || isNativeError(err, 'ENOTDIR')) return null;
    throw err;
  }
}

export const FS_MAGIC = { TMPFS: 0x01021994 } as const;

const KCMP_FILE = 0;
const KCMP_EPOLL_TFD = 7;

/** kcmp(): 0 means the two refer to the same kernel object; 1 and 2 order them; 3 means different but unordered. */
function kcmp(pid1: number, pid2: number, type: number, a: number, b: number | bigint): number {
  try {
    return syscall(`kcmp(${pid1}, ${pid2}, ${type}, ${a})`, Sys.kcmp, pid1, pid2, type, a, b);
  } catch (e) {
    if (isNativeError(e, 'ENOSYS')) throw new NativeError('kcmp', Errno.ENOSYS, 'this kernel lacks CONFIG_KCMP, which Ferry needs to tell shared file descriptions apart');
    throw e;
  }
}

/** True when fd1 of pid1 and fd2 of pid2 are the same open file description (dup'ed, inherited or passed). */
export function sameFileDescription(pid1: number, fd1: number, pid2: number, fd2: number): boolean {
  return kcmp(pid1, pid2, KCMP_FILE, fd1, fd2) === 0;
}

/**
 * True when the epoll instance at `epfd` watches, under fd number `tfd`,
 * exactly the file that `fd` holds now. An epoll item outlives the fd it was
 * registered with while the file stays open elsewhere, so the number alone
 * proves nothing.
 */
export function epollWatches(pid: number, epfd: number, tfd: number, fd: number): boolean {
  const slot = Buffer.alloc(12);
  slot.writeUInt32LE(epfd, 0);
  slot.writeUInt32LE(tfd, 4);
  slot.writeUInt32LE(0, 8);
  try {
    return kcmp(pid, pid, KCMP_EPOLL_TFD, fd, addressOf(slot)) === 0;
  } catch (e) {
    if (isNativeError(e, 'ENOENT') || isNativeError(e, 'EBADF')) return false;
    throw e;
  }
}

export interface FdHolder {
  pid: number;
  fd: number;
}

/**
 * Which processes other than `except` have fds whose /proc link is one of
 * `links`. Used for objects a restore recreates rather than reopens (pipes,
 * FIFOs, unlinked files): a holder outside the checkpoint would be left
 * talking to the old object. Processes that vanish or hide their fds while
 * we look are skipped.
 */
export function findFdHolders(links: ReadonlySet<string>, except: ReadonlySet<number>): Map<string, FdHolder[]> {
  const found = new Map<string, FdHolder[]>();
  if (links.size === 0) return found;
  for (const name of fs.readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0 || except.has(pid)) continue;
    let fds: string[];
    try {
      fds = fs.readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const f of fds) {
      let link: string;
      try {
        link = fs.readlinkSync(`/proc/${pid}/fd/${f}`);
      } catch {
        continue;
      }
      if (!links.has(link)) continue;
      let list = found.get(link);
      if (!list) found.set(link, (list = []));
      list.push({ pid, fd: Number(f) });
    }
  }
  return found;
}

/** pread until `into` is full or the file ends; returns the bytes read. */
export function readAt(fd: number, into: Buffer, pos: number): number {
  let done = 0;
  while (done < into.length) {
    let n: number;
    try {
      n = fs.readSync(fd, into, done, into.length - done, pos + done);
    } catch (e) {
      throw asNative(e, `pread(${fd}, ${pos + done})`);
    }
    if (n === 0) break;
    done += n;
  }
  return done;
}

const F_GET_SEALS = 1034;

/** The seals of a memfd (F_SEAL_*); a memfd created without MFD_ALLOW_SEALING has exactly F_SEAL_SEAL. */
export function memfdSeals(fd: number): number {
  return syscall(`fcntl(${fd}, F_GET_SEALS)`, Sys.fcntl, fd, F_GET_SEALS);
}
