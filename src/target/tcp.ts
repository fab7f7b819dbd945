import { Sys } from '../native/syscalls.js';
import { pidfdOpen, pidfdGetfd, close } from '../native/process.js';
import { NativeError, isNativeError } from '../native/errors.js';
import { SOCK_CLOEXEC } from '../native/flags.js';
import { SOL_SOCKET, SOL_IP, SOL_IPV6, SOL_TCP, IPPROTO_TCP, SOCK_STREAM, SHUT, sockInt, setSockInt, bindTo, connectTo, listenOn, shutdownSocket, injectInetSocket } from '../native/inet.js';
import {
  SO, TCP, IP, IPV6, setRepair, setQueueSeq, fillQueue, sendSome, setRepairOptions, setTcpTimestamp, setRepairWindow, sockString, setSockString,
  sockLinger, setSockLinger, sockTimeval, setSockTimeval, forceBuffer, setBufferLocks,
} from '../native/tcp.js';
import { lockEndpoints, unlockTable } from '../native/nft.js';
import { FdEntry } from '../image/files.js';
import { TcpSocketEntry, TcpLockEntry, showTcp } from '../image/tcp.js';
import { PAGE_SIZE } from '../image/constants.js';
import type { ImageReader } from '../image/format.js';
import { parkFd, type RestoreContext, type SharedObjects, type PidTranslation } from './context.js';

/**
 * TCP sockets, rebuilt in the restored process's network namespace: each
 * is created by an injected socket() (a socket belongs to the namespace of
 * whoever creates it), and Ferry takes a copy with pidfd_getfd and does the
 * rest itself, since repair mode needs CAP_NET_ADMIN and the process may
 * not have it.
 *
 * A listener is bound and listens again; a closed socket is bound if it was.
 * A connection is made in repair mode, where nothing reaches the wire:
 * sequence numbers first (TCP_QUEUE_SEQ), then bind and connect (no SYN),
 * the options the handshake had negotiated (TCP_REPAIR_OPTIONS), the
 * timestamp clock, the receive queue (what the program has yet to read),
 * the part of the send queue that had been transmitted (it waits for its
 * acknowledgement as retransmittable data), the window. The peer sees
 * nothing of this; to it the connection only went quiet.
 *
 * Just before the processes run, the network lock comes off (unlock();
 * relock() puts it back if the restore fails after all), and resume()
 * takes the connections out of repair mode (the kernel then sends a window
 * probe, and the peer answers with its current acknowledgement), sends the
 * part of the send queue that had never been transmitted as ordinary data,
 * and shuts the directions that were shut:
 *  - a FIN this side had sent is sent again now, after the data, at its
 *    original sequence number (the restored send queue starts there): the
 *    peer takes it as a retransmission, so FIN_WAIT1/FIN_WAIT2, LAST_ACK
 *    and CLOSING come back as FIN_WAIT1 and move on when it is acknowledged;
 *  - a FIN the peer had sent cannot be received again: repair mode has no
 *    way to queue one. The restored receive queue therefore ends at the
 *    original rcv_nxt, FIN included, so every acknowledgement is exactly the
 *    original's, and the read side is shut with shutdown(SHUT_RD): the
 *    program reads the queued bytes, then EOF, as it would have. The kernel
 *    calls the state ESTABLISHED (or FIN_WAIT1) rather than CLOSE_WAIT
 *    (LAST_ACK, CLOSING); a program sees no difference in reads, writes or
 *    poll. When it closes, its FIN is acknowledged, and the socket waits in
 *    FIN_WAIT2 for a FIN the peer will not send again until the kernel's
 *    FIN_WAIT2 timeout (tcp_fin_timeout) ends it quietly.
 *
 * Buffer sizes are raised while the queues are refilled and put back at
 * the end, with SO_BUF_LOCK as the program had it (a size it never set
 * stays the kernel's to tune). Ferry's copies are closed once everything
 * runs; on a failed restore they are put back in repair mode first, so the
 * killed husks' sockets vanish without a FIN or RST.
 */

const F_SETFL = 4;
/** The status flags F_SETFL can change: O_APPEND, O_NONBLOCK, O_DIRECT, O_NOATIME. */
const SETFL_MASK = 0o2000 | 0o4000 | 0o40000 | 0o1000000;
/** Bytes per send() while refilling a queue. */
const CHUNK = 1 << 20;
const BUFFER_SLACK = 256 * 1024;
const ENOPROTOOPT = 92;

type Sock = TcpSocketEntry;

interface Made {
  s: Sock;
  /** Ferry's copy. */
  local: number;
  what: string;
  /** The never transmitted end of the send queue, sent once repair mode is off. */
  unsent: Buffer;
  done: boolean;
}

const restores = new WeakMap<SharedObjects, Made[]>();

function isConnected(s: Sock): boolean {
  return s.state !== 'closed' && s.state !== 'listen';
}

/** The image's TCP sockets must say what their state needs: a restore that found out halfway would leave less than it promised. */
export function preflight(ctx: Pick<RestoreContext, 'image'>, problems: string[]): void {
  for (const s of ctx.image.entriesOf(TcpSocketEntry)) {
    const where = `the TCP socket ${showTcp(s)} (file ${s.file})`;
    if (isConnected(s) && (!s.connection || !s.local || !s.remote)) problems.push(`${where} is ${s.state} but the image lacks its connection or addresses`);
    if (!isConnected(s) && s.connection) problems.push(`${where} is ${s.state} but the image gives it a connection`);
    if (s.state === 'listen' && (!s.local || s.backlog === undefined)) problems.push(`${where} listens but the image lacks its address or backlog`);
  }
}

function fdNames(ctx: RestoreContext): Map<number, string[]> {
  const names = new Map<number, string[]>();
  for (const e of ctx.image.entriesOf(FdEntry)) names.set(e.file, [...(names.get(e.file) ?? []), e.pid === ctx.imagePid ? `fd ${e.fd}` : `pid ${e.pid} fd ${e.fd}`]);
  return names;
}

async function queueBytes(image: ImageReader, q: { offset: number; length: number } | undefined): Promise<Buffer> {
  if (!q) return Buffer.alloc(0);
  return Buffer.from(await image.readPages(q.offset, Math.ceil(q.length / PAGE_SIZE) * PAGE_SIZE)).subarray(0, q.length);
}

function fill(fd: number, q: 'send' | 'recv', data: Buffer): void {
  for (let off = 0; off < data.length; ) {
    const n = fillQueue(fd, q, data.subarray(off, off + CHUNK));
    if (n <= 0) throw new Error(`the ${q} queue took ${off} of ${data.length} bytes and then nothing more`);
    off += n;
  }
}

/** Sets an int option only where the fresh socket differs: an option set to its default would otherwise read as set by the program (IP_TTL, for one). */
function setInt(fd: number, level: number, name: number, want: number): void {
  if (sockInt(fd, level, name) !== want) setSockInt(fd, level, name, want);
}

/** The options that do not depend on the state, set once the socket is bound (or connected). */
function applyOptions(fd: number, s: Sock): void {
  const o = s.options;
  setInt(fd, SOL_SOCKET, SO.KEEPALIVE, o.keepalive ? 1 : 0);
  setInt(fd, SOL_TCP, TCP.KEEPIDLE, o.keepidle);
  setInt(fd, SOL_TCP, TCP.KEEPINTVL, o.keepintvl);
  setInt(fd, SOL_TCP, TCP.KEEPCNT, o.keepcnt);
  setInt(fd, SOL_TCP, TCP.NODELAY, o.nodelay ? 1 : 0);
  setInt(fd, SOL_TCP, TCP.USER_TIMEOUT, o.userTimeout);
  const linger = sockLinger(fd);
  if (linger.on !== o.linger.on || linger.seconds !== o.linger.seconds) setSockLinger(fd, o.linger);
  setInt(fd, SOL_SOCKET, SO.RCVLOWAT, o.rcvlowat);
  for (const [name, want] of [[SO.RCVTIMEO, o.rcvtimeo], [SO.SNDTIMEO, o.sndtimeo]] as const) {
    const now = sockTimeval(fd, name);
    if (now.sec !== want.sec || now.usec !== want.usec) setSockTimeval(fd, name, want);
  }
  // IP_TOS sets the priority as well (rt_tos2priority): SO_PRIORITY after it.
  if (o.ip) {
    setInt(fd, SOL_IP, IP.TOS, o.ip.tos);
    setInt(fd, SOL_IP, IP.TTL, o.ip.ttl);
  }
  if (o.ipv6) {
    setInt(fd, SOL_IPV6, IPV6.TCLASS, o.ipv6.tclass);
    setInt(fd, SOL_IPV6, IPV6.UNICAST_HOPS, o.ipv6.hops);
  }
  setInt(fd, SOL_SOCKET, SO.PRIORITY, o.priority);
  setInt(fd, SOL_SOCKET, SO.OOBINLINE, o.oobinline ? 1 : 0);
  if (sockString(fd, SOL_TCP, TCP.CONGESTION) !== o.congestion) {
    try {
      setSockString(fd, SOL_TCP, TCP.CONGESTION, o.congestion);
    } catch (e) {
      // The algorithm is most often just the checkpointed host's default (getsockopt cannot tell); one this kernel lacks leaves its own.
      if (!isNativeError(e, 'ENOENT')) throw e;
    }
  }
  if (sockInt(fd, SOL_TCP, TCP.NOTSENT_LOWAT) >>> 0 !== o.notsentLowat) setSockInt(fd, SOL_TCP, TCP.NOTSENT_LOWAT, o.notsentLowat | 0);
  setInt(fd, SOL_TCP, TCP.LINGER2, o.linger2);
  if (s.state === 'listen') {
    setInt(fd, SOL_TCP, TCP.DEFER_ACCEPT, o.deferAccept);
    if (o.fastopen) setInt(fd, SOL_TCP, TCP.FASTOPEN, o.fastopen);
  }
  if (o.inq) setInt(fd, SOL_TCP, TCP.INQ, 1);
  // Cork last: it holds back what is sent from now on, and nothing needs sending until resume.
  setInt(fd, SOL_TCP, TCP.CORK, o.cork ? 1 : 0);
}

/** Builds one socket on Ferry's copy `fd` (see the module comment for the order). */
async function build(ctx: RestoreContext, m: Made): Promise<void> {
  const { s, local: fd } = m;
  const o = s.options;
  // Only before bind(); binding to an IPv6 address that is not IPv4-mapped sets it anyway (a connection's shows 1 after the restore, to no effect).
  if (o.ipv6) setInt(fd, SOL_IPV6, IPV6.V6ONLY, o.ipv6.v6only ? 1 : 0);
  if (o.reuseport) setSockInt(fd, SOL_SOCKET, SO.REUSEPORT, 1);
  if (o.bindToDevice) setSockString(fd, SOL_SOCKET, SO.BINDTODEVICE, o.bindToDevice);
  if (o.mark) setSockInt(fd, SOL_SOCKET, SO.MARK, o.mark | 0);
  const c = s.connection;
  // Room for every queued byte while refilling; resume() puts the program's sizes back.
  forceBuffer(fd, 'snd', Math.max(o.sndbuf, 4 * (c?.sendQueue?.length ?? 0) + BUFFER_SLACK));
  forceBuffer(fd, 'rcv', Math.max(o.rcvbuf, 4 * (c?.recvQueue?.length ?? 0) + BUFFER_SLACK));
  if (!c) {
    if (s.local) {
      // Connections already restored may hold this port (a listener's accepted ones); SO_REUSEADDR lets it be bound beside them, resume() puts the program's value back.
      setSockInt(fd, SOL_SOCKET, SO.REUSEADDR, 1);
      bindTo(fd, s.family, s.local);
    }
    if (s.state === 'listen') listenOn(fd, s.backlog ?? 0);
    if (s.ended) {
      try {
        // On a socket that is not connected shutdown() fails with ENOTCONN but still marks both directions shut, as an ended connection has them.
        shutdownSocket(fd, SHUT.RDWR);
      } catch (e) {
        if (!isNativeError(e, 'ENOTCONN')) throw e;
      }
    }
    applyOptions(fd, s);
    return;
  }
  setRepair(fd, true);
  setQueueSeq(fd, 'send', c.sndSeq);
  setQueueSeq(fd, 'recv', c.rcvSeq);
  bindTo(fd, s.family, s.local!);
  connectTo(fd, s.family, s.remote!);
  setRepairOptions(fd, { mss: c.mss, wscale: c.wscale, sack: c.sack, timestamps: c.timestamps });
  if (c.timestamps) setTcpTimestamp(fd, c.tsval);
  fill(fd, 'recv', await queueBytes(ctx.image, c.recvQueue));
  const sendQueue = await queueBytes(ctx.image, c.sendQueue);
  const unsent = c.sendQueue?.unsent ?? 0;
  fill(fd, 'send', sendQueue.subarray(0, sendQueue.length - unsent));
  m.unsent = sendQueue.subarray(sendQueue.length - unsent);
  setRepairWindow(fd, c.window);
  if (c.windowClamp) setInt(fd, SOL_TCP, TCP.WINDOW_CLAMP, c.windowClamp);
  applyOptions(fd, s);
}

/**
 * Makes the TCP sockets this process holds that no earlier process made
 * (a description inherited through fork is made once and fetched by the
 * others through its home, like every shared file).
 */
export async function restore(ctx: RestoreContext): Promise<void> {
  const held = new Set(ctx.image.entriesOf(FdEntry).filter((e) => e.pid === ctx.imagePid).map((e) => e.file));
  const mine = ctx.image.entriesOf(TcpSocketEntry).filter((s) => held.has(s.file) && !ctx.shared.homes.has(`file:${s.file}`));
  if (!mine.length) return;
  let made = restores.get(ctx.shared);
  if (!made) restores.set(ctx.shared, (made = []));
  const names = fdNames(ctx);
  const inj = ctx.injector;
  // Listeners first: a connection restored before its listener would not stop it from binding, but this way round reads as it happened.
  const order = [...mine.filter((s) => s.state === 'listen'), ...mine.filter((s) => s.state !== 'listen')];
  const pidfd = pidfdOpen(ctx.pid);
  try {
    for (const s of order) {
      const what = `${(names.get(s.file) ?? []).join(', ') || 'fd ?'} (TCP ${showTcp(s)})`;
      try {
        const huskFd = injectInetSocket(inj, s.family, SOCK_STREAM | SOCK_CLOEXEC, IPPROTO_TCP);
        const m: Made = { s, local: pidfdGetfd(pidfd, huskFd), what, unsent: Buffer.alloc(0), done: false };
        made.push(m);
        inj.call('fcntl(F_SETFL)', Sys.fcntl, huskFd, F_SETFL, s.flags & SETFL_MASK);
        await build(ctx, m);
        ctx.shared.homes.set(`file:${s.file}`, { pid: ctx.pid, fd: parkFd(ctx, huskFd) });
      } catch (e) {
        throw new Error(`restoring ${what}: ${(e as Error).message}`, { cause: e });
      }
    }
  } finally {
    close(pidfd);
  }
}

/** How many TCP sockets the restore made. */
export function count(shared: SharedObjects): number {
  return restores.get(shared)?.length ?? 0;
}

/**
 * The last step before the processes run: connections leave repair mode,
 * the untransmitted rest of each send queue is sent, the shut directions
 * are shut again, and every socket gets the buffer sizes and SO_REUSEADDR
 * the program had. Ferry's copies are closed.
 */
export function resume(shared: SharedObjects): void {
  for (const m of restores.get(shared) ?? []) {
    if (m.done) continue;
    const { s, local: fd } = m;
    const o = s.options;
    try {
      const c = s.connection;
      if (c) {
        setRepair(fd, false);
        for (let off = 0; off < m.unsent.length; ) {
          const n = sendSome(fd, m.unsent.subarray(off, off + CHUNK));
          if (n <= 0) throw new Error(`the send queue took ${off} of the ${m.unsent.length} bytes never sent, and then nothing more`);
          off += n;
        }
        if (c.finSent) shutdownSocket(fd, SHUT.WR);
        if (c.finReceived) shutdownSocket(fd, SHUT.RD);
      }
      setInt(fd, SOL_SOCKET, SO.REUSEADDR, o.reuseaddr ? 1 : 0);
      forceBuffer(fd, 'snd', o.sndbuf);
      forceBuffer(fd, 'rcv', o.rcvbuf);
      try {
        setBufferLocks(fd, o.bufLock);
      } catch (e) {
        // A kernel before 5.14 has no SO_BUF_LOCK: the sizes stay fixed, as the forced ones are.
        if (!(e instanceof NativeError && e.errno === ENOPROTOOPT)) throw e;
      }
    } catch (e) {
      throw new Error(`resuming ${m.what}: ${(e as Error).message}`, { cause: e });
    }
    m.done = true;
    close(fd);
  }
  restores.delete(shared);
}

/** A failed restore: connections back into repair mode, so that the husks' deaths send nothing; Ferry's copies closed. */
export function abort(shared: SharedObjects): void {
  for (const m of restores.get(shared) ?? []) {
    if (m.done) continue;
    try {
      if (m.s.connection) setRepair(m.local, true);
    } catch {
      // closing it anyway is all that is left to do
    }
    close(m.local);
    m.done = true;
  }
  restores.delete(shared);
}

/**
 * Removes the network locks the checkpoint left (the image's `tcp-lock`
 * entries), each in the network namespace of the restored process that
 * stands for it. A lock already gone, or made in a namespace that is not
 * this one, is not an error.
 */
export function unlock(image: ImageReader, pids: PidTranslation): LockState[] {
  return image.entriesOf(TcpLockEntry).map((l) => {
    const pid = pids.liveOf(l.pid);
    try {
      return { table: l.table, pid, removed: unlockTable(l.table, { pid }) };
    } catch (e) {
      return { table: l.table, pid, removed: false, error: (e as Error).message };
    }
  });
}

/** Puts the locks back, as the checkpoint made them, for a restore that failed after unlock(); best effort: the restore's own error is the one to report. */
export function relock(image: ImageReader, pids: PidTranslation): void {
  for (const l of image.entriesOf(TcpLockEntry)) {
    try {
      lockEndpoints(l.table, l.endpoints, { pid: pids.liveOf(l.pid) });
    } catch {
      // the husk standing for the namespace is gone already
    }
  }
}

/** The image's locks as they stand, for a restore that leaves its processes frozen: whoever thaws them unlocks. */
export function locks(image: ImageReader, pids: PidTranslation): LockState[] {
  return image.entriesOf(TcpLockEntry).map((l) => ({ table: l.table, pid: pids.liveOf(l.pid), removed: false }));
}

/** A lock after the restore: its table, the live pid whose network namespace holds it, whether it was removed. */
export interface LockState {
  table: string;
  pid: number;
  removed: boolean;
  error?: string;
}
