import path from 'node:path';
import { Sys } from '../native/syscalls.js';
import { statPath } from '../native/fdinfo.js';
import { isNativeError } from '../native/errors.js';
import { FileEntry, FdEntry, PipeEntry, GhostFileEntry } from '../image/files.js';
import { fromHex } from '../image/fields.js';
import { unpackPageRuns } from '../image/pages.js';
import { PAGE_SIZE } from '../image/constants.js';
import { parkFd, fetchFd, openInHusk, type RestoreContext } from './context.js';
import { shmemFd } from './memory.js';
import { isContainerLog, pathHere } from './container.js';
import { O_ACCMODE, O_CLOEXEC, O_CREAT, O_EXCL, O_NONBLOCK, O_RDONLY, O_RDWR, O_TMPFILE, O_WRONLY } from '../native/flags.js';

const F_SETFD = 2;
const F_SETFL = 4;
const F_SETPIPE_SZ = 1031;
const FD_CLOEXEC = 1;
/** The status flags F_SETFL can change: O_APPEND, O_NONBLOCK, O_DIRECT, O_NOATIME, O_ASYNC. */
const SETFL_MASK = 0o2000 | 0o4000 | 0o40000 | 0o1000000 | 0o20000;
const EFD_SEMAPHORE = 1;
const EPOLL_CTL_ADD = 1;
const TFD_TIMER_ABSTIME = 1;
const TFD_IOC_SET_TICKS = 0x40085400;
const SEEK_SET = 0;
/** Bytes per injected write or pwrite: the injection scratch is 1 MiB. */
const WRITE_CHUNK = 512 * 1024;

function fdsByFile(ctx: Pick<RestoreContext, 'image'>, pid?: number): Map<number, FdEntry[]> {
  const out = new Map<number, FdEntry[]>();
  for (const e of ctx.image.entriesOf(FdEntry)) {
    if (pid !== undefined && e.pid !== pid) continue;
    const list = out.get(e.file) ?? [];
    list.push(e);
    out.set(e.file, list);
  }
  return out;
}

/** Files the image reopens by path must be there, and be the same kind of thing, before any husk exists. */
export function preflight(ctx: Pick<RestoreContext, 'image'>, problems: string[]): void {
  const fds = fdsByFile(ctx);
  const where = (id: number) => `fd ${(fds.get(id) ?? []).map((f) => f.fd).join(',') || '?'}`;
  const pipes = new Map(ctx.image.entriesOf(PipeEntry).map((p) => [p.id, p]));
  const ghosts = new Map(ctx.image.entriesOf(GhostFileEntry).map((g) => [g.id, g]));
  for (const f of ctx.image.entriesOf(FileEntry)) {
    // A file of a container's private mount comes back with that mount's contents, not from the host.
    if (f.inside) continue;
    if (f.kind === 'path' && f.path && f.node && !isContainerLog(ctx.image, f.path)) {
      const st = statPath(f.path, f.node.type !== 'any');
      if (!st) problems.push(`${where(f.id)}: ${f.path} does not exist here`);
      else if (f.node.type !== 'any' && st.type !== f.node.type) problems.push(`${where(f.id)}: ${f.path} is a ${st.type} here, a ${f.node.type} in the image`);
      else if (f.node.rdev && st.rdev !== f.node.rdev) problems.push(`${where(f.id)}: ${f.path} is device ${st.rdev} here, ${f.node.rdev} in the image`);
    } else if (f.kind === 'pipe' && f.pipe !== undefined) {
      const p = pipes.get(f.pipe);
      if (!p) problems.push(`${where(f.id)}: the image lacks pipe ${f.pipe}`);
      else if (p.path && statPath(p.path)?.type !== 'fifo') problems.push(`${where(f.id)}: ${p.path} is not a FIFO here`);
    } else if (f.kind === 'unlinked' && f.ghost !== undefined) {
      const g = ghosts.get(f.ghost);
      if (!g) problems.push(`${where(f.id)}: the image lacks ghost file ${f.ghost}`);
      else if (statPath(path.dirname(g.path))?.type !== 'dir') problems.push(`${where(f.id)}: the directory of the unlinked file ${g.path} does not exist here`);
    }
  }
}

/** Writes `length` bytes of pages.bin at `offset` through a husk fd, in pieces that fit the scratch. */
async function writeFromImage(ctx: RestoreContext, fd: number, offset: number, length: number, at: number | null): Promise<void> {
  const inj = ctx.injector;
  for (let done = 0; done < length; done += WRITE_CHUNK) {
    const n = Math.min(WRITE_CHUNK, length - done);
    const data = await ctx.image.readPages(offset + done, Math.ceil(n / PAGE_SIZE) * PAGE_SIZE);
    inj.reset();
    const buf = inj.put(data.subarray(0, n));
    const wrote = at === null ? inj.call('write', Sys.write, fd, buf, n) : inj.call('pwrite64', Sys.pwrite64, fd, buf, n, at + done);
    inj.reset();
    if (wrote !== n) throw new Error(`restoring fd data: wrote ${wrote} of ${n} bytes`);
  }
}

/** A pipe buffer recreated in the husk: its ends, parked, until every description of the pipe exists. */
interface LivePipe {
  /** Read end of an anonymous pipe, or an O_RDWR fd of a FIFO. */
  reader: number;
  /** Write end of an anonymous pipe (the FIFO's `reader` writes too). */
  writer: number | null;
  /** pipe2's own descriptions go to the first read and first write description, image-wide: reopened ends would gain O_LARGEFILE. */
  used: { reader: boolean; writer: boolean };
}

/**
 * Recreated objects shared by several descriptions, possibly of several
 * processes. Their fds are parked above the restored fd numbers; the
 * restore closes them once every process is done, so each process holds
 * exactly what it held: a pipe whose write end it did not hold has no
 * writer again. A later process fetches what an earlier one made.
 */
class Objects {
  private readonly pipes = new Map<number, LivePipe>();
  private readonly ghosts = new Map<number, number>();

  constructor(private readonly ctx: RestoreContext) {}

  async pipe(id: number): Promise<LivePipe> {
    const known = this.pipes.get(id);
    if (known) return known;
    const ctx = this.ctx;
    const inj = ctx.injector;
    const readerHome = ctx.shared.homes.get(`pipe:${id}:reader`);
    if (readerHome) {
      const writerHome = ctx.shared.homes.get(`pipe:${id}:writer`);
      const live = { reader: fetchFd(ctx, readerHome), writer: writerHome ? fetchFd(ctx, writerHome) : null, used: ctx.shared.pipeEndsUsed.get(id)! };
      this.pipes.set(id, live);
      return live;
    }
    const p = ctx.image.entriesOf(PipeEntry).find((e) => e.id === id);
    if (!p) throw new Error(`the image lacks pipe ${id}`);
    let live: LivePipe;
    if (p.path) {
      // O_RDWR never waits for a peer and keeps the buffer alive until every description is open.
      live = { reader: parkFd(ctx, openInHusk(ctx, p.path, O_RDWR | O_NONBLOCK)), writer: null, used: { reader: true, writer: true } };
    } else {
      inj.reset();
      const ends = inj.reserve(8);
      inj.call('pipe2', Sys.pipe2, ends, O_NONBLOCK);
      const both = inj.read(ends, 8);
      inj.reset();
      live = { reader: parkFd(ctx, both.readInt32LE(0)), writer: parkFd(ctx, both.readInt32LE(4)), used: { reader: false, writer: false } };
    }
    inj.call(`fcntl(F_SETPIPE_SZ, ${p.size})`, Sys.fcntl, live.reader, F_SETPIPE_SZ, p.size);
    if (p.data) await writeFromImage(ctx, live.writer ?? live.reader, p.data.offset, p.data.length, null);
    ctx.shared.homes.set(`pipe:${id}:reader`, { pid: ctx.pid, fd: live.reader });
    if (live.writer !== null) ctx.shared.homes.set(`pipe:${id}:writer`, { pid: ctx.pid, fd: live.writer });
    ctx.shared.pipeEndsUsed.set(id, live.used);
    this.pipes.set(id, live);
    return live;
  }

  /**
   * The unlinked file, created under its old name and unlinked at once, so
   * /proc shows the same "(deleted)" path and a failed restore leaves
   * nothing behind; O_TMPFILE when that name is taken now.
   */
  async ghost(id: number): Promise<number> {
    const known = this.ghosts.get(id);
    if (known !== undefined) return known;
    const ctx = this.ctx;
    const home = ctx.shared.homes.get(`ghost:${id}`);
    if (home) {
      const fd = fetchFd(ctx, home);
      this.ghosts.set(id, fd);
      return fd;
    }
    const inj = ctx.injector;
    const g = ctx.image.entriesOf(GhostFileEntry).find((e) => e.id === id);
    if (!g) throw new Error(`the image lacks ghost file ${id}`);
    let fd: number;
    try {
      fd = openInHusk(ctx, g.path, O_RDWR | O_CREAT | O_EXCL, g.mode);
      inj.reset();
      inj.call(`unlink(${g.path})`, Sys.unlink, inj.put(Buffer.from(g.path + '\0')));
      inj.reset();
    } catch (e) {
      if (!isNativeError(e, 'EEXIST')) throw e;
      fd = openInHusk(ctx, path.dirname(g.path), O_RDWR | O_TMPFILE, g.mode);
    }
    inj.call('ftruncate', Sys.ftruncate, fd, g.size);
    for (const seg of g.segments) {
      let page = seg.page;
      for (const run of unpackPageRuns(seg.runs)) {
        if (run.kind === 'data') {
          const at = page * PAGE_SIZE;
          await writeFromImage(ctx, fd, run.offset, Math.min(run.pages * PAGE_SIZE, g.size - at), at);
        }
        page += run.pages;
      }
    }
    inj.call('fchown', Sys.fchown, fd, g.uid, g.gid);
    inj.call('fchmod', Sys.fchmod, fd, g.mode);
    const parked = parkFd(ctx, fd);
    this.ghosts.set(id, parked);
    ctx.shared.homes.set(`ghost:${id}`, { pid: ctx.pid, fd: parked });
    return parked;
  }
}

/** A husk fd holding a description: `fresh` ones are ours to close once placed, parked ones stay until Objects.close. */
interface Made {
  fd: number;
  fresh: boolean;
}

async function make(ctx: RestoreContext, f: FileEntry, objects: Objects): Promise<Made> {
  const inj = ctx.injector;
  const flags = f.flags & ~O_CLOEXEC;
  switch (f.kind) {
    case 'path':
      return { fd: openInHusk(ctx, pathHere(ctx.image, f.path!), flags), fresh: true };
    case 'unlinked':
      return { fd: openInHusk(ctx, `/proc/self/fd/${await objects.ghost(f.ghost!)}`, flags), fresh: true };
    case 'memfd': {
      const held = await shmemFd(ctx, f.shmem!);
      // A fresh description with this one's access mode and offset; the memory module's fd is its own.
      return { fd: openInHusk(ctx, `/proc/self/fd/${held}`, flags), fresh: true };
    }
    case 'pipe': {
      const p = await objects.pipe(f.pipe!);
      const mode = f.flags & O_ACCMODE;
      if (mode === O_RDONLY && !p.used.reader) {
        p.used.reader = true;
        return { fd: p.reader, fresh: false };
      }
      if (mode === O_WRONLY && !p.used.writer && p.writer !== null) {
        p.used.writer = true;
        return { fd: p.writer, fresh: false };
      }
      // Opening a pipe end never blocks with O_NONBLOCK; F_SETFL puts the real flag back.
      return { fd: openInHusk(ctx, `/proc/self/fd/${p.reader}`, flags | O_NONBLOCK), fresh: true };
    }
    case 'eventfd': {
      const e = f.eventfd!;
      const fd = inj.call('eventfd2', Sys.eventfd2, 0, e.semaphore ? EFD_SEMAPHORE : 0);
      const count = fromHex(e.count);
      if (count) {
        // eventfd2 takes a 32-bit initial value; a write sets the full 64-bit counter.
        const v = Buffer.alloc(8);
        v.writeBigUInt64LE(count);
        inj.reset();
        inj.call('write(eventfd)', Sys.write, fd, inj.put(v), 8);
        inj.reset();
      }
      return { fd, fresh: true };
    }
    case 'signalfd': {
      const mask = Buffer.alloc(8);
      mask.writeBigUInt64LE(fromHex(f.signalfd!.mask));
      inj.reset();
      const fd = inj.call('signalfd4', Sys.signalfd4, -1, inj.put(mask), 8, 0);
      inj.reset();
      return { fd, fresh: true };
    }
    case 'timerfd':
      return { fd: makeTimerfd(ctx, f.timerfd!), fresh: true };
    case 'epoll':
      return { fd: inj.call('epoll_create1', Sys.epoll_create1, 0), fresh: true };
  }
}

/**
 * The timer runs on from the time it had left at the checkpoint: the
 * downtime of a migration is not added. An absolute timer is set to now +
 * that time on this host's clock, which keeps TFD_TIMER_ABSTIME (and
 * CANCEL_ON_SET) as the process set them.
 */
function makeTimerfd(ctx: RestoreContext, t: NonNullable<FileEntry['timerfd']>): number {
  const inj = ctx.injector;
  const fd = inj.call('timerfd_create', Sys.timerfd_create, t.clock, 0);
  let value = t.value;
  const armed = value.sec !== 0 || value.nsec !== 0;
  if (armed && t.settimeFlags & TFD_TIMER_ABSTIME) {
    inj.reset();
    const out = inj.reserve(16);
    inj.call('clock_gettime', Sys.clock_gettime, t.clock, out);
    const now = inj.read(out, 16);
    const nsec = Number(now.readBigInt64LE(8)) + value.nsec;
    value = { sec: Number(now.readBigInt64LE(0)) + value.sec + Math.floor(nsec / 1e9), nsec: nsec % 1e9 };
  }
  if (armed || t.settimeFlags || t.interval.sec || t.interval.nsec) {
    const its = Buffer.alloc(32);
    its.writeBigInt64LE(BigInt(t.interval.sec), 0);
    its.writeBigInt64LE(BigInt(t.interval.nsec), 8);
    its.writeBigInt64LE(BigInt(value.sec), 16);
    its.writeBigInt64LE(BigInt(value.nsec), 24);
    inj.reset();
    inj.call('timerfd_settime', Sys.timerfd_settime, fd, t.settimeFlags, inj.put(its), 0);
  }
  const ticks = fromHex(t.ticks);
  if (ticks) {
    const v = Buffer.alloc(8);
    v.writeBigUInt64LE(ticks);
    inj.reset();
    inj.call('ioctl(TFD_IOC_SET_TICKS)', Sys.ioctl, fd, TFD_IOC_SET_TICKS, inj.put(v));
  }
  inj.reset();
  return fd;
}

/** Puts a description at each of its fd numbers. A fresh fd is the lowest free number, so it is either one of them or closed here: it never takes a number a later description needs. */
function place(ctx: RestoreContext, made: Made, fds: FdEntry[]): void {
  const inj = ctx.injector;
  let kept = false;
  for (const e of fds) {
    if (made.fresh && e.fd === made.fd) {
      kept = true;
      if (e.cloexec) inj.call('fcntl(F_SETFD)', Sys.fcntl, e.fd, F_SETFD, FD_CLOEXEC);
    } else {
      inj.call(`dup3(${made.fd}, ${e.fd})`, Sys.dup3, made.fd, e.fd, e.cloexec ? O_CLOEXEC : 0);
    }
  }
  if (made.fresh && !kept) inj.call('close', Sys.close, made.fd);
}

/**
 * Rebuilds the fd table. Runs after memory (memfds exist) and before the
 * process's own credentials are taken on, so every path opens as root.
 * The husk's own fds below the restored range go first; epoll items are
 * added last, once every fd number they name holds its file.
 */
/**
 * Which descriptions a pass makes. A process outside a container gets them
 * all at once; a container's processes get those whose paths resolve on the
 * host first, while the restore has not entered the container's root (its
 * log is writable only from outside), and those of its private mounts (its
 * /tmp) once it has. Epoll items are added in the last pass, when every fd
 * number they name holds its file.
 */
export type FilesPass = 'all' | 'host' | 'inside';

export async function restore(ctx: RestoreContext, pass: FilesPass = 'all'): Promise<void> {
  const inj = ctx.injector;
  const files = new Map(ctx.image.entriesOf(FileEntry).map((f) => [f.id, f]));
  const fds = fdsByFile(ctx, ctx.imagePid);
  if (pass !== 'inside') inj.call('close_range', Sys.close_range, 0, ctx.fdFloor - 1, 0);
  const objects = new Objects(ctx);
  for (const [id, list] of fds) {
    const f = files.get(id);
    if (pass !== 'all' && (f?.inside === true) !== (pass === 'inside')) continue;
    const home = ctx.shared.homes.get(`file:${id}`);
    if (home) {
      // Inherited through fork, or a UNIX socket the unix module made: the very description, offset, flags and epoll items included.
      place(ctx, { fd: fetchFd(ctx, home), fresh: false }, list);
      continue;
    }
    if (!f) throw new Error(`fd ${list[0]!.fd} refers to file ${id}, which the image lacks`);
    const made = await make(ctx, f, objects);
    if (f.kind === 'path' || f.kind === 'unlinked' || f.kind === 'memfd') {
      if (f.pos) inj.call('lseek', Sys.lseek, made.fd, f.pos, SEEK_SET);
    } else {
      inj.call('fcntl(F_SETFL)', Sys.fcntl, made.fd, F_SETFL, f.flags & SETFL_MASK);
    }
    place(ctx, made, list);
    ctx.shared.homes.set(`file:${id}`, { pid: ctx.pid, fd: list[0]!.fd });
  }
  if (pass === 'host') return;
  for (const [id, list] of fds) {
    const f = files.get(id);
    // Only the process that made an epoll instance fills it; the others share it, items and all.
    if (f?.kind !== 'epoll' || ctx.shared.homes.get(`file:${id}`)?.pid !== ctx.pid) continue;
    const epfd = list[0]!.fd;
    for (const t of f.epoll!) {
      const ev = Buffer.alloc(12);
      ev.writeUInt32LE(t.events >>> 0, 0);
      ev.writeBigUInt64LE(fromHex(t.data), 4);
      inj.reset();
      inj.call(`epoll_ctl(${epfd}, ADD, ${t.fd})`, Sys.epoll_ctl, epfd, EPOLL_CTL_ADD, t.fd, inj.put(ev));
    }
  }
  inj.reset();
}
