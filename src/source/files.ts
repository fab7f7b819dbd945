import path from 'node:path';
import { listFds } from '../native/proc.js';
import {
  readFdLink,
  readFdInfo,
  statFd,
  statPath,
  sameFileDescription,
  epollWatches,
  findFdHolders,
  readAt,
  memfdSeals,
  FS_MAGIC,
  type FdInfo,
  type FdHolder,
  type NodeStat,
} from '../native/fdinfo.js';
import { peekPipe, pipeState, pipePeerExists } from '../native/pipe.js';
import { pidfdOpen, pidfdGetfd, close, withRemoteFd } from '../native/process.js';
import { isNativeError } from '../native/errors.js';
import { FileEntry, FdEntry, PipeEntry, GhostFileEntry, NODE_TYPES } from '../image/files.js';
import { ShmemEntry } from '../image/memory.js';
import { countPageRuns, isAllZero, packPageRuns, type PackedPageRuns } from '../image/pages.js';
import { PAGE_SIZE } from '../image/constants.js';
import { hex } from '../image/fields.js';
import { CheckpointRefused, type Refusal } from './refusal.js';
import type { DumpContext } from './context.js';
import { classifySocket, checkSockets, dumpSocket } from './unix.js';
import { classifyInetSocket, checkTcpSockets, dumpSocket as dumpTcpSocket, TcpCheckpoint } from './tcp.js';
import { pathInRoot } from '../native/namespaces.js';
import { O_ACCMODE, O_CLOEXEC, O_DIRECT, O_PATH, O_RDONLY, O_WRONLY } from '../native/flags.js';

const FASYNC = 0o20000;
const F_SEAL_SEAL = 1;
const EPOLLEXCLUSIVE = 1 << 28;
const EPOLLWAKEUP = 1 << 29;
const EPOLLONESHOT = 1 << 30;
const EPOLLET = 1 << 31;
/** The bits a fired EPOLLONESHOT item keeps; an armed item always has EPOLLERR|EPOLLHUP besides, added by the kernel. */
const EPOLL_PRIVATE = EPOLLEXCLUSIVE | EPOLLWAKEUP | EPOLLONESHOT | EPOLLET;
const CONTENT_CHUNK_PAGES = 256;

/** Character devices that behave the same on every host and hold no state: reopening them by path is a full restore. */
const PORTABLE_DEVICES = new Map([
  ['1:3', '/dev/null'],
  ['1:5', '/dev/zero'],
  ['1:8', '/dev/random'],
  ['1:9', '/dev/urandom'],
]);

const ANON_KINDS = new Map([
  ['anon_inode:[eventfd]', 'eventfd'],
  ['anon_inode:[eventpoll]', 'epoll'],
  ['anon_inode:[signalfd]', 'signalfd'],
  ['anon_inode:[timerfd]', 'timerfd'],
] as const);

const ANON_NAMES: Record<string, string> = {
  inotify: 'an inotify instance',
  '[fanotify]': 'a fanotify group',
  '[io_uring]': 'an io_uring instance',
  '[userfaultfd]': 'a userfaultfd',
  '[perf_event]': 'a perf event',
  '[pidfd]': 'a pidfd',
  '[bpf-map]': 'a BPF map',
  '[bpf-prog]': 'a BPF program',
};

type Supported =
  | { kind: 'path'; path: string; node: { type: (typeof NODE_TYPES)[number]; rdev?: string }; inside?: boolean }
  | { kind: 'unlinked'; path: string; stat: NodeStat }
  | { kind: 'memfd'; name: string; stat: NodeStat }
  /** An anonymous pipe (`key` is its link, pipe:[ino]) or a FIFO (`path`). */
  | { kind: 'pipe'; key: string; path?: string; stat?: NodeStat }
  | { kind: 'eventfd' | 'epoll' | 'signalfd' | 'timerfd' }
  /** A UNIX socket: the unix module dumps it. */
  | { kind: 'socket' }
  /** A TCP socket: the tcp module dumps it. */
  | { kind: 'tcp' };

interface OpenFd {
  fd: number;
  link: string;
  info: FdInfo;
}

/** One open file description and the fds that point at it. */
interface Description {
  fds: OpenFd[];
  what: Supported;
}

function refusal(pid: number, fd: number, reason: string): Refusal {
  return { pid, resource: `fd ${fd}`, reason };
}

/** The same inode at the same path as Ferry sees it, so a restore that opens the path opens this file. */
function reachable(p: string, st: NodeStat): boolean {
  const here = statPath(p, st.type !== 'symlink');
  return !!here && here.dev === st.dev && here.ino === st.ino;
}

/**
 * The same inode at that path as the process sees it, through its own root:
 * a file in a container's private mount (its /tmp), which a restore reopens
 * once it has entered the container's root.
 */
function reachableInside(pid: number, p: string, st: NodeStat): boolean {
  return reachable(pathInRoot(pid, p), st);
}

/** What an fd is, or why it cannot travel. TCP sockets travel only when the checkpoint takes them (`allowTcp`). */
function classify(pid: number, o: OpenFd, allowTcp: boolean): Supported | { refuse: string } {
  const { link, info } = o;
  if (info.flags & FASYNC) return { refuse: `${link} is in signal-driven I/O mode (O_ASYNC), whose owner and signal do not travel` };
  if (info.locks.length) return { refuse: `${link} holds a file lock or lease (${info.locks[0]}), which does not travel` };
  if (link.startsWith('socket:')) return classifyInetSocket(pid, o.fd, link, allowTcp) ?? classifySocket(pid, o.fd, link);
  if (link.startsWith('pipe:')) {
    if (info.flags & O_DIRECT) return { refuse: `a packet-mode (O_DIRECT) pipe (${link}), whose message boundaries do not travel` };
    return { kind: 'pipe', key: link };
  }
  const anon = ANON_KINDS.get(link as never);
  if (anon) return { kind: anon };
  if (link.startsWith('anon_inode:')) {
    const name = link.slice('anon_inode:'.length);
    return { refuse: `${ANON_NAMES[name] ?? `an anonymous-inode file of type ${name}`} (${link}), which Ferry cannot migrate` };
  }
  if (!link.startsWith('/')) return { refuse: `an unsupported kind of file (${link})` };
  const deleted = link.endsWith(' (deleted)');
  const p = deleted ? link.slice(0, -' (deleted)'.length) : link;
  const st = statFd(pid, o.fd);
  if (info.flags & O_PATH) {
    if (deleted || !reachable(p, st)) return { refuse: `an O_PATH fd of ${link}, which is no longer reachable under that name` };
    return { kind: 'path', path: p, node: { type: 'any' } };
  }
  switch (st.type) {
    case 'file':
      if (deleted && p.startsWith('/memfd:')) {
        if (st.fsType !== FS_MAGIC.TMPFS) return { refuse: `a memfd on a filesystem other than tmpfs (${link}, hugetlbfs?), which Ferry cannot recreate` };
        return { kind: 'memfd', name: p.slice('/memfd:'.length), stat: st };
      }
      if (deleted && (p === '/dev/zero' || p.startsWith('/SYSV'))) return { refuse: `shared memory opened as a file (${link}), which Ferry cannot reattach to its mappings` };
      if (deleted) {
        if (st.nlink > 0) return { refuse: `the file ${link}: its name was removed but it has ${st.nlink} other link(s) Ferry cannot find` };
        if (statPath(path.dirname(p))?.type !== 'dir') return { refuse: `the unlinked file ${link}, whose directory is gone too` };
        return { kind: 'unlinked', path: p, stat: st };
      }
      if (reachable(p, st)) return { kind: 'path', path: p, node: { type: 'file' } };
      if (reachableInside(pid, p, st)) return { kind: 'path', path: p, node: { type: 'file' }, inside: true };
      return { refuse: `the file ${link}, which is no longer reachable under that name (renamed, or in another mount namespace)` };
    case 'dir':
      if (!deleted && reachable(p, st)) return { kind: 'path', path: p, node: { type: 'dir' } };
      if (!deleted && reachableInside(pid, p, st)) return { kind: 'path', path: p, node: { type: 'dir' }, inside: true };
      return { refuse: `the directory ${link}, which is no longer reachable under that name` };
    case 'chr': {
      // These devices are the same everywhere: the restore opens the host's own node for the number, whatever name the fd shows
      // (in a restored container it shows "/null": the host's /dev is not in its mount tree).
      const canonical = PORTABLE_DEVICES.get(st.rdev);
      if (!canonical) return { refuse: `a device (${link}, char ${st.rdev}); of devices only ${[...PORTABLE_DEVICES.values()].join(', ')} are supported` };
      return { kind: 'path', path: canonical, node: { type: 'chr', rdev: st.rdev } };
    }
    case 'fifo':
      if (deleted || !reachable(p, st)) return { refuse: `the FIFO ${link}, which is no longer reachable under that name` };
      return { kind: 'pipe', key: `fifo:${st.dev}:${st.ino}`, path: p, stat: st };
    default:
      return { refuse: `a ${st.type} (${link}), which Ferry cannot migrate` };
  }
}

function readOpenFds(pid: number): OpenFd[] {
  const out: OpenFd[] = [];
  for (const fd of listFds(pid)) {
    try {
      out.push({ fd, link: readFdLink(pid, fd), info: readFdInfo(pid, fd) });
    } catch (e) {
      // closed between the listing and the look: the process is still running during inspect
      if (!isNativeError(e, 'ENOENT')) throw e;
    }
  }
  return out;
}

/** Groups fds into open file descriptions. dup'ed fds show the same link, so kcmp only has to compare fds within one link. */
function describe(pid: number, open: Array<{ o: OpenFd; what: Supported }>): Description[] {
  const byLink = new Map<string, Description[]>();
  const out: Description[] = [];
  for (const { o, what } of open) {
    const candidates = byLink.get(o.link) ?? [];
    const same = candidates.find((d) => sameFileDescription(pid, d.fds[0]!.fd, pid, o.fd));
    if (same) {
      same.fds.push(o);
      continue;
    }
    const d: Description = { fds: [o], what };
    candidates.push(d);
    byLink.set(o.link, candidates);
    out.push(d);
  }
  return out;
}

function accessOf(d: Description): number {
  return d.fds[0]!.info.flags & O_ACCMODE;
}

function holderText(holders: FdHolder[]): string {
  if (!holders.length) return 'a process Ferry cannot see';
  const [h] = holders;
  return `pid ${h!.pid} fd ${h!.fd}${holders.length > 1 ? ` and ${holders.length - 1} more` : ''}`;
}

/**
 * Objects that a restore recreates (pipes, FIFOs' buffers, unlinked files)
 * must not be shared with anything outside the checkpoint, or the two would
 * silently part ways. A pipe held by one end only is fine when nothing else
 * holds the other end: its reader then gets the unread data and EOF, its
 * writer EPIPE, exactly as before.
 */
function checkSharedObjects(pid: number, descriptions: Description[], refusals: Refusal[], scope: Set<number>): void {
  const links = new Set<string>();
  for (const d of descriptions) if (d.what.kind === 'pipe' || d.what.kind === 'unlinked') links.add(d.fds[0]!.link);
  // Holders inside the image travel with it; only those outside would part ways with the restored copy.
  const everyone = findFdHolders(links, new Set([pid]));
  const holders = new Map([...everyone].map(([link, hs]) => [link, hs.filter((h) => !scope.has(h.pid))]));
  const inside = new Map([...everyone].map(([link, hs]) => [link, hs.filter((h) => scope.has(h.pid))]));
  const sameInode = (h: FdHolder, st: NodeStat | undefined): boolean => {
    if (!st) return true;
    try {
      const o = statFd(h.pid, h.fd);
      return o.dev === st.dev && o.ino === st.ino;
    } catch {
      return false;
    }
  };
  const holding = (others: FdHolder[], end: 'read' | 'write'): FdHolder[] =>
    others.filter((h) => {
      try {
        return (readFdInfo(h.pid, h.fd).flags & O_ACCMODE) !== (end === 'read' ? O_WRONLY : O_RDONLY);
      } catch {
        return false;
      }
    });
  const pipes = new Map<string, Description[]>();
  for (const d of descriptions) {
    if (d.what.kind === 'unlinked') {
      const st = d.what.stat;
      const others = (holders.get(d.fds[0]!.link) ?? []).filter((h) => sameInode(h, st));
      if (others.length) refusals.push(refusal(pid, d.fds[0]!.fd, `the unlinked file ${d.fds[0]!.link} is also open in ${holderText(others)}, outside the checkpoint`));
    } else if (d.what.kind === 'pipe') {
      const list = pipes.get(d.what.key) ?? [];
      list.push(d);
      pipes.set(d.what.key, list);
    }
  }
  for (const list of pipes.values()) {
    const first = list[0]!;
    const what = first.what as Extract<Supported, { kind: 'pipe' }>;
    const link = first.fds[0]!.link;
    const others = (holders.get(link) ?? []).filter((h) => sameInode(h, what.stat));
    const insiders = (inside.get(link) ?? []).filter((h) => sameInode(h, what.stat));
    const readable = list.find((d) => accessOf(d) !== O_WRONLY) ?? holding(insiders, 'read')[0];
    const writable = list.find((d) => accessOf(d) !== O_RDONLY) ?? holding(insiders, 'write')[0];
    const anonymous = !what.path;
    if (anonymous && !readable && withRemoteFd(pid, first.fds[0]!.fd, (fd) => pipePeerExists(fd, 'write'))) {
      refusals.push(refusal(pid, first.fds[0]!.fd, `the write end of ${link}, whose reader is outside the checkpoint (${holderText(holding(others, 'read'))})`));
    } else if (anonymous && !writable && withRemoteFd(pid, first.fds[0]!.fd, (fd) => pipePeerExists(fd, 'read'))) {
      refusals.push(refusal(pid, first.fds[0]!.fd, `the read end of ${link}, whose writer is outside the checkpoint (${holderText(holding(others, 'write'))})`));
    } else if (others.length) {
      refusals.push(refusal(pid, first.fds[0]!.fd, `${anonymous ? link : `the FIFO ${link}`} is also open in ${holderText(others)}, outside the checkpoint`));
    }
  }
}

/** Every epoll item must watch the file its fd number holds now: the restore registers targets by number. */
function checkEpolls(pid: number, descriptions: Description[], open: Set<number>, supported: Set<number>, refusals: Refusal[]): void {
  for (const d of descriptions) {
    if (d.what.kind !== 'epoll') continue;
    const epfd = d.fds[0]!.fd;
    const targets = d.fds[0]!.info.epoll ?? [];
    const seen = new Set<number>();
    for (const t of targets) {
      // A target that is refused itself is reported on its own fd.
      if (open.has(t.tfd) && !supported.has(t.tfd)) continue;
      if (seen.has(t.tfd) || !open.has(t.tfd) || !epollWatches(pid, epfd, t.tfd, t.tfd)) {
        refusals.push(refusal(pid, epfd, `an epoll instance watching a file registered as fd ${t.tfd} that is no longer open under that number`));
      } else if ((t.events & ~EPOLL_PRIVATE) === 0 && (t.events & EPOLLONESHOT) !== 0) {
        refusals.push(refusal(pid, epfd, `an epoll instance whose EPOLLONESHOT item for fd ${t.tfd} has fired and is disarmed, a state a restore cannot recreate`));
      }
      seen.add(t.tfd);
    }
  }
}

/** A restored memfd comes from memfd_create without MFD_ALLOW_SEALING: its seals are F_SEAL_SEAL and nothing else. */
function checkMemfds(pid: number, descriptions: Description[], refusals: Refusal[]): void {
  for (const d of descriptions) {
    if (d.what.kind !== 'memfd') continue;
    const seals = withRemoteFd(pid, d.fds[0]!.fd, memfdSeals);
    if (seals !== F_SEAL_SEAL) refusals.push(refusal(pid, d.fds[0]!.fd, `the memfd ${d.fds[0]!.link} has seals 0x${seals.toString(16)}; restored memfds cannot carry seals yet`));
  }
}

/** Reads and classifies the fd table; everything that cannot travel lands in `refusals`. */
function analyze(pid: number, refusals: Refusal[], scope: Set<number>, allowTcp: boolean): Description[] {
  const all = readOpenFds(pid);
  const open: Array<{ o: OpenFd; what: Supported }> = [];
  for (const o of all) {
    const what = classify(pid, o, allowTcp);
    if ('refuse' in what) refusals.push(refusal(pid, o.fd, what.refuse));
    else open.push({ o, what });
  }
  const descriptions = describe(pid, open);
  checkSharedObjects(pid, descriptions, refusals, scope);
  checkEpolls(pid, descriptions, new Set(all.map((o) => o.fd)), new Set(open.map((x) => x.o.fd)), refusals);
  checkMemfds(pid, descriptions, refusals);
  checkSockets(pid, descriptions.filter((d) => d.what.kind === 'socket').map((d) => d.fds[0]!), refusals, scope);
  checkTcpSockets(pid, descriptions.filter((d) => d.what.kind === 'tcp').map((d) => d.fds[0]!), refusals, scope);
  return descriptions;
}

export function inspect(pid: number, refusals: Refusal[], scope: Set<number> = new Set([pid]), opts: { tcp?: boolean } = {}): void {
  analyze(pid, refusals, scope, opts.tcp === true);
}

/** A read end of the pipe behind `link` held by another process of the image, to read the buffer through. */
function readerInScope(pid: number, link: string, scope: Set<number>): FdHolder | undefined {
  const holders = findFdHolders(new Set([link]), new Set([pid])).get(link) ?? [];
  return holders.find((h) => {
    if (!scope.has(h.pid)) return false;
    try {
      return (readFdInfo(h.pid, h.fd).flags & O_ACCMODE) !== O_WRONLY;
    } catch {
      return false;
    }
  });
}

/** A copy of one of the process's fds in Ferry, for reading what only an fd gives (pipe buffers, unlinked files). */
class RemoteFds {
  private readonly pidfd: number;

  constructor(pid: number) {
    this.pidfd = pidfdOpen(pid);
  }

  async with<T>(fd: number, use: (local: number) => T | Promise<T>): Promise<T> {
    const local = pidfdGetfd(this.pidfd, fd);
    try {
      return await use(local);
    } finally {
      close(local);
    }
  }

  close(): void {
    close(this.pidfd);
  }
}

/** The non-zero pages of a file's contents, in image page segments. */
async function dumpContents(ctx: DumpContext, fd: number, size: number): Promise<Array<{ page: number; runs: PackedPageRuns }>> {
  const segments: Array<{ page: number; runs: PackedPageRuns }> = [];
  const buf = Buffer.alloc(CONTENT_CHUNK_PAGES * PAGE_SIZE);
  for (let pos = 0; pos < size; pos += buf.length) {
    const n = readAt(fd, buf, pos);
    const pages = Math.ceil(n / PAGE_SIZE);
    const chunk = buf.subarray(0, pages * PAGE_SIZE);
    chunk.fill(0, n);
    if (!isAllZero(chunk)) {
      const runs = await ctx.image.writePageRuns(chunk);
      const c = countPageRuns(runs);
      ctx.stats.pages += c.pages;
      ctx.stats.dataPages += c.dataPages;
      ctx.stats.zeroPages += c.zeroPages;
      segments.push({ page: pos / PAGE_SIZE, runs: packPageRuns(runs) });
    }
    if (n < buf.length) break;
  }
  return segments;
}

export async function dump(ctx: DumpContext): Promise<void> {
  const { pid } = ctx;
  const refusals: Refusal[] = [];
  // The checkpoint took TCP sockets exactly when it locked them (TcpCheckpoint.begin).
  const descriptions = analyze(pid, refusals, ctx.scope, TcpCheckpoint.of(ctx.scope) !== undefined);
  if (refusals.length) throw new CheckpointRefused(refusals.map((r) => ({ ...r, reason: `${r.reason} (it appeared after the checks)` })));
  const remote = new RemoteFds(pid);
  try {
    const { pipeIds, ghostIds } = ctx;
    for (const d of descriptions) {
      const o = d.fds[0]!;
      // A description inherited through fork is one object in several processes: it travels once.
      const known = ctx.fileIds.find((f) => f.pid !== pid && f.link === o.link && sameFileDescription(f.pid, f.fd, pid, o.fd));
      if (known) {
        for (const f of d.fds) ctx.image.addEntry(FdEntry.make({ pid, fd: f.fd, file: known.id, cloexec: (f.info.flags & O_CLOEXEC) !== 0 }));
        continue;
      }
      const id = ctx.fileIds.length;
      ctx.fileIds.push({ id, pid, fd: o.fd, link: o.link });
      if (d.what.kind === 'socket' || d.what.kind === 'tcp') {
        await (d.what.kind === 'tcp' ? dumpTcpSocket : dumpSocket)(ctx, id, o.fd, o.link, o.info.flags & ~O_CLOEXEC);
        for (const f of d.fds) ctx.image.addEntry(FdEntry.make({ pid, fd: f.fd, file: id, cloexec: (f.info.flags & O_CLOEXEC) !== 0 }));
        continue;
      }
      const base = { id, kind: d.what.kind, flags: o.info.flags & ~O_CLOEXEC, pos: o.info.pos };
      const w = d.what;
      if (w.kind === 'path') {
        ctx.image.addEntry(FileEntry.make({ ...base, path: w.path, node: w.node, ...(w.inside ? { inside: true } : {}) }));
      } else if (w.kind === 'unlinked') {
        const key = `${w.stat.dev}:${w.stat.ino}`;
        let ghost = ghostIds.get(key);
        if (ghost === undefined) {
          ghost = ghostIds.size;
          ghostIds.set(key, ghost);
          const st = w.stat;
          const segments = await remote.with(o.fd, (fd) => dumpContents(ctx, fd, st.size));
          ctx.image.addEntry(GhostFileEntry.make({ id: ghost, path: w.path, mode: st.mode, uid: st.uid, gid: st.gid, size: st.size, segments }));
        }
        ctx.image.addEntry(FileEntry.make({ ...base, path: w.path, ghost }));
      } else if (w.kind === 'memfd') {
        // The memory module keys shared objects by the dev:inode /proc/PID/maps shows; a memfd that is also mapped is already in the image.
        const key = `${w.stat.dev}:${w.stat.ino}`;
        let shmem = ctx.shmemIds.get(key);
        if (shmem === undefined) {
          shmem = ctx.shmemIds.size;
          ctx.shmemIds.set(key, shmem);
          const size = w.stat.size;
          const segments = await remote.with(o.fd, (fd) => dumpContents(ctx, fd, size));
          ctx.image.addEntry(ShmemEntry.make({ id: shmem, kind: 'memfd', name: w.name, size, key, segments }));
        }
        ctx.image.addEntry(FileEntry.make({ ...base, shmem }));
      } else if (w.kind === 'pipe') {
        let pipe = pipeIds.get(w.key);
        if (pipe === undefined) {
          pipe = pipeIds.size;
          pipeIds.set(w.key, pipe);
          const ends = descriptions.filter((x) => x.what.kind === 'pipe' && x.what.key === w.key);
          const reader = ends.find((x) => accessOf(x) !== O_WRONLY);
          // Without a reader anywhere (checked by analyze) nobody can ever read what is left in the buffer.
          const elsewhere = reader ? undefined : readerInScope(pid, o.link, ctx.scope);
          const read = (fd: number) => ({ size: pipeState(fd).size, data: reader || elsewhere ? peekPipe(fd) : Buffer.alloc(0) });
          const { size, data } = elsewhere ? withRemoteFd(elsewhere.pid, elsewhere.fd, read) : await remote.with((reader ?? d).fds[0]!.fd, read);
          let stored: { offset: number; length: number } | undefined;
          if (data.length) {
            const padded = Buffer.alloc(Math.ceil(data.length / PAGE_SIZE) * PAGE_SIZE);
            data.copy(padded);
            stored = { offset: (await ctx.image.writePages(padded)).offset, length: data.length };
          }
          ctx.image.addEntry(PipeEntry.make({ id: pipe, ...(w.path ? { path: w.path } : {}), size, ...(stored ? { data: stored } : {}) }));
        }
        ctx.image.addEntry(FileEntry.make({ ...base, pipe }));
      } else if (w.kind === 'eventfd') {
        const e = o.info.eventfd;
        if (!e) throw new Error(`pid ${pid} fd ${o.fd}: fdinfo of the eventfd has no eventfd-count`);
        ctx.image.addEntry(FileEntry.make({ ...base, eventfd: { count: hex(e.count), semaphore: e.semaphore } }));
      } else if (w.kind === 'epoll') {
        const epoll = (o.info.epoll ?? []).map((t) => ({ fd: t.tfd, events: t.events, data: hex(t.data) }));
        ctx.image.addEntry(FileEntry.make({ ...base, epoll }));
      } else if (w.kind === 'signalfd') {
        if (o.info.signalfdMask === undefined) throw new Error(`pid ${pid} fd ${o.fd}: fdinfo of the signalfd has no sigmask`);
        ctx.image.addEntry(FileEntry.make({ ...base, signalfd: { mask: hex(o.info.signalfdMask) } }));
      } else {
        const t = o.info.timerfd;
        if (!t) throw new Error(`pid ${pid} fd ${o.fd}: fdinfo of the timerfd lacks its settings`);
        ctx.image.addEntry(FileEntry.make({ ...base, timerfd: { clock: t.clockid, settimeFlags: t.settimeFlags, value: t.value, interval: t.interval, ticks: hex(t.ticks) } }));
      }
      for (const f of d.fds) ctx.image.addEntry(FdEntry.make({ pid, fd: f.fd, file: id, cloexec: (f.info.flags & O_CLOEXEC) !== 0 }));
    }
  } finally {
    remote.close();
  }
}
