import { syscall, addressOf } from './libc.js';
import { isNativeError } from './errors.js';
import { Sys } from './syscalls.js';
import { getsockopt, setsockopt, ioctl } from './process.js';
import { SOL_SOCKET, SOL_TCP, sockInt, setSockInt } from './inet.js';

/**
 * TCP sockets seen and rebuilt through TCP_REPAIR (tcp(7), the kernel's
 * net/ipv4/tcp.c). In repair mode a socket sends nothing of its own: its
 * sequence numbers can be read and set (TCP_QUEUE_SEQ, per queue chosen
 * with TCP_REPAIR_QUEUE), its queues read with MSG_PEEK and filled with
 * send(), connect() makes it established without a handshake, and closing
 * it makes it vanish without a FIN or RST. It needs CAP_NET_ADMIN in the
 * socket's network namespace, which Ferry has and the process may not, so
 * every call here is made on Ferry's own copy of the socket.
 */

export const SO = {
  REUSEADDR: 2, KEEPALIVE: 9, OOBINLINE: 10, PRIORITY: 12, LINGER: 13, REUSEPORT: 15,
  RCVLOWAT: 18, RCVTIMEO: 20, SNDTIMEO: 21, BINDTODEVICE: 25, SNDBUF: 7, RCVBUF: 8,
  SNDBUFFORCE: 32, RCVBUFFORCE: 33, MARK: 36, BUF_LOCK: 72,
} as const;

export const TCP = {
  NODELAY: 1, CORK: 3, KEEPIDLE: 4, KEEPINTVL: 5, KEEPCNT: 6, LINGER2: 8, DEFER_ACCEPT: 9,
  WINDOW_CLAMP: 10, INFO: 11, CONGESTION: 13, USER_TIMEOUT: 18, REPAIR: 19, REPAIR_QUEUE: 20,
  QUEUE_SEQ: 21, REPAIR_OPTIONS: 22, FASTOPEN: 23, TIMESTAMP: 24, NOTSENT_LOWAT: 25,
  REPAIR_WINDOW: 29, ULP: 31, INQ: 36, MAXSEG: 2,
} as const;

export const IP = { TOS: 1, TTL: 2 } as const;
export const IPV6 = { UNICAST_HOPS: 16, V6ONLY: 26, TCLASS: 67 } as const;

/** tcpi_state, the kernel's TCP_* states. */
export const TCP_STATE = {
  ESTABLISHED: 1, SYN_SENT: 2, SYN_RECV: 3, FIN_WAIT1: 4, FIN_WAIT2: 5, TIME_WAIT: 6,
  CLOSE: 7, CLOSE_WAIT: 8, LAST_ACK: 9, LISTEN: 10, CLOSING: 11, NEW_SYN_RECV: 12,
} as const;

export const TCP_STATE_NAMES: Record<number, string> = Object.fromEntries(Object.entries(TCP_STATE).map(([k, v]) => [v, k]));

const TCPI_OPT_TIMESTAMPS = 1;
const TCPI_OPT_SACK = 2;
const TCPI_OPT_WSCALE = 4;
const TCPI_OPT_ECN = 8;
const TCP_INFO_SIZE = 104;

const TCP_REPAIR_ON = 1;
const TCP_REPAIR_OFF = 0;
const TCP_RECV_QUEUE = 1;
const TCP_SEND_QUEUE = 2;
const TCPOPT_MSS = 2;
const TCPOPT_WINDOW = 3;
const TCPOPT_SACK_PERM = 4;
const TCPOPT_TIMESTAMP = 8;

const SIOCINQ = 0x541b;
const SIOCOUTQ = 0x5411;
const SIOCOUTQNSD = 0x894b;
const MSG_PEEK = 0x2;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const POLLERR = 0x8;
const POLLRDHUP = 0x2000;

export interface TcpInfo {
  state: number;
  timestamps: boolean;
  sack: boolean;
  /** Window scaling as negotiated: what the peer shifts its windows by (snd) and what we shift ours by (rcv). */
  wscale: { snd: number; rcv: number } | null;
  ecn: boolean;
  /** A listener: connections waiting in its accept queue. Otherwise segments in flight. */
  unacked: number;
  /** A listener: its backlog. */
  sacked: number;
  totalRetrans: number;
}

export function tcpInfo(fd: number): TcpInfo {
  const b = getsockopt(fd, SOL_TCP, TCP.INFO, TCP_INFO_SIZE);
  const options = b[5]!;
  return {
    state: b[0]!,
    timestamps: (options & TCPI_OPT_TIMESTAMPS) !== 0,
    sack: (options & TCPI_OPT_SACK) !== 0,
    // struct tcp_info's bitfield: tcpi_snd_wscale in the low nibble, tcpi_rcv_wscale in the high one.
    wscale: options & TCPI_OPT_WSCALE ? { snd: b[6]! & 0xf, rcv: b[6]! >> 4 } : null,
    ecn: (options & TCPI_OPT_ECN) !== 0,
    unacked: b.readUInt32LE(24),
    sacked: b.readUInt32LE(28),
    totalRetrans: b.readUInt32LE(100),
  };
}

/** TCP_REPAIR on or off. Turning it off on an established socket sends a window probe, which makes the peer answer with its current ACK. */
export function setRepair(fd: number, on: boolean): void {
  setSockInt(fd, SOL_TCP, TCP.REPAIR, on ? TCP_REPAIR_ON : TCP_REPAIR_OFF);
}

export function inRepair(fd: number): boolean {
  return sockInt(fd, SOL_TCP, TCP.REPAIR) !== 0;
}

export type TcpQueue = 'send' | 'recv';

function selectQueue(fd: number, q: TcpQueue): void {
  setSockInt(fd, SOL_TCP, TCP.REPAIR_QUEUE, q === 'send' ? TCP_SEND_QUEUE : TCP_RECV_QUEUE);
}

/** In repair mode: the send queue's write_seq (the sequence number after its last byte) or the receive queue's rcv_nxt. */
export function queueSeq(fd: number, q: TcpQueue): number {
  selectQueue(fd, q);
  return getsockopt(fd, SOL_TCP, TCP.QUEUE_SEQ, 4).readUInt32LE(0);
}

/** In repair mode, before connect(): where the queue starts. */
export function setQueueSeq(fd: number, q: TcpQueue, seq: number): void {
  selectQueue(fd, q);
  const v = Buffer.alloc(4);
  v.writeUInt32LE(seq >>> 0, 0);
  setsockopt(fd, SOL_TCP, TCP.QUEUE_SEQ, v);
}

/** Bytes to read (SIOCINQ; a received FIN is not counted), bytes not yet acknowledged (SIOCOUTQ; our FIN counts one) and of those not yet sent (SIOCOUTQNSD). */
export function queueSizes(fd: number): { inq: number; outq: number; notsent: number } {
  const v = Buffer.alloc(4);
  const read = (req: number) => {
    ioctl(fd, req, v);
    return v.readInt32LE(0);
  };
  return { inq: read(SIOCINQ), outq: read(SIOCOUTQ), notsent: read(SIOCOUTQNSD) };
}

/**
 * In repair mode: a copy of a queue. The receive queue is read from its
 * first unread byte; the send queue comes whole skb by skb, so its first
 * bytes may be ones the peer acknowledged already (a partly acknowledged
 * segment is kept whole until all of it is): `room` must hold them too.
 */
export function peekQueue(fd: number, q: TcpQueue, room: number): Buffer {
  selectQueue(fd, q);
  const buf = Buffer.alloc(Math.max(room, 1));
  const n = syscall(`recv(${fd}, MSG_PEEK, ${q} queue)`, Sys.recvfrom, fd, addressOf(buf), buf.length, MSG_PEEK | MSG_DONTWAIT, 0, 0);
  return buf.subarray(0, n);
}

/**
 * In repair mode: appends to a queue. The receive queue takes what the
 * program will read; the send queue takes data as already sent (it waits
 * in the retransmission queue until acknowledged). The kernel may take
 * less than given; returns what it took.
 */
export function fillQueue(fd: number, q: TcpQueue, data: Buffer): number {
  selectQueue(fd, q);
  return sendSome(fd, data);
}

/** One non-blocking send(); returns the bytes taken (0 when the buffer is full). */
export function sendSome(fd: number, data: Buffer): number {
  try {
    return syscall(`send(${fd}, ${data.length} bytes)`, Sys.sendto, fd, addressOf(data), data.length, MSG_DONTWAIT | MSG_NOSIGNAL, 0, 0);
  } catch (e) {
    if (isNativeError(e, 'EAGAIN')) return 0;
    throw e;
  }
}

export interface RepairWindow {
  sndWl1: number;
  sndWnd: number;
  maxWindow: number;
  rcvWnd: number;
  rcvWup: number;
}

export function repairWindow(fd: number): RepairWindow {
  const b = getsockopt(fd, SOL_TCP, TCP.REPAIR_WINDOW, 20);
  return { sndWl1: b.readUInt32LE(0), sndWnd: b.readUInt32LE(4), maxWindow: b.readUInt32LE(8), rcvWnd: b.readUInt32LE(12), rcvWup: b.readUInt32LE(16) };
}

export function setRepairWindow(fd: number, w: RepairWindow): void {
  const b = Buffer.alloc(20);
  [w.sndWl1, w.sndWnd, w.maxWindow, w.rcvWnd, w.rcvWup].forEach((v, i) => b.writeUInt32LE(v >>> 0, i * 4));
  setsockopt(fd, SOL_TCP, TCP.REPAIR_WINDOW, b);
}

/** In repair mode, TCP_MAXSEG reports the MSS the peer announced (mss_clamp). */
export function peerMss(fd: number): number {
  return sockInt(fd, SOL_TCP, TCP.MAXSEG);
}

/** What the handshake negotiated, given again to a socket connected in repair mode (before anything is queued). */
export function setRepairOptions(fd: number, o: { mss: number; wscale: { snd: number; rcv: number } | null; sack: boolean; timestamps: boolean }): void {
  const opts: Array<[number, number]> = [[TCPOPT_MSS, o.mss]];
  if (o.wscale) opts.push([TCPOPT_WINDOW, o.wscale.snd | (o.wscale.rcv << 16)]);
  if (o.sack) opts.push([TCPOPT_SACK_PERM, 0]);
  if (o.timestamps) opts.push([TCPOPT_TIMESTAMP, 0]);
  const b = Buffer.alloc(opts.length * 8);
  opts.forEach(([code, val], i) => {
    b.writeUInt32LE(code, i * 8);
    b.writeUInt32LE(val >>> 0, i * 8 + 4);
  });
  setsockopt(fd, SOL_TCP, TCP.REPAIR_OPTIONS, b);
}

/** TCP_TIMESTAMP: the timestamp clock the socket stamps segments with (read), or its new reading (set, repair mode only). */
export function tcpTimestamp(fd: number): number {
  return getsockopt(fd, SOL_TCP, TCP.TIMESTAMP, 4).readUInt32LE(0);
}

export function setTcpTimestamp(fd: number, value: number): void {
  const v = Buffer.alloc(4);
  v.writeUInt32LE(value >>> 0, 0);
  setsockopt(fd, SOL_TCP, TCP.TIMESTAMP, v);
}

/** What poll() says without waiting: a pending error (sk_err; reading SO_ERROR would clear it) and a shut read side (after a FIN, or shutdown(SHUT_RD)). */
export function pollState(fd: number): { error: boolean; readShut: boolean } {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  pfd.writeInt16LE(POLLRDHUP, 4);
  syscall(`poll(${fd})`, Sys.poll, addressOf(pfd), 1, 0);
  const revents = pfd.readInt16LE(6);
  return { error: (revents & POLLERR) !== 0, readShut: (revents & POLLRDHUP) !== 0 };
}

/** A NUL-terminated string option (TCP_CONGESTION, TCP_ULP, SO_BINDTODEVICE); '' when unset. */
export function sockString(fd: number, level: number, name: number): string {
  const b = getsockopt(fd, level, name, 64);
  const nul = b.indexOf(0);
  return b.subarray(0, nul < 0 ? b.length : nul).toString('latin1');
}

export function setSockString(fd: number, level: number, name: number, value: string): void {
  setsockopt(fd, level, name, Buffer.from(value + '\0', 'latin1'));
}

export function sockLinger(fd: number): { on: boolean; seconds: number } {
  const b = getsockopt(fd, SOL_SOCKET, SO.LINGER, 8);
  return { on: b.readInt32LE(0) !== 0, seconds: b.readInt32LE(4) };
}

export function setSockLinger(fd: number, l: { on: boolean; seconds: number }): void {
  const b = Buffer.alloc(8);
  b.writeInt32LE(l.on ? 1 : 0, 0);
  b.writeInt32LE(l.seconds, 4);
  setsockopt(fd, SOL_SOCKET, SO.LINGER, b);
}

export function sockTimeval(fd: number, name: number): { sec: number; usec: number } {
  const b = getsockopt(fd, SOL_SOCKET, name, 16);
  return { sec: Number(b.readBigInt64LE(0)), usec: Number(b.readBigInt64LE(8)) };
}

export function setSockTimeval(fd: number, name: number, t: { sec: number; usec: number }): void {
  const b = Buffer.alloc(16);
  b.writeBigInt64LE(BigInt(t.sec), 0);
  b.writeBigInt64LE(BigInt(t.usec), 8);
  setsockopt(fd, SOL_SOCKET, name, b);
}

/** SO_SNDBUF/SO_RCVBUF to exactly `bytes` as getsockopt will report them, whatever the sysctl limits (the FORCE variants, CAP_NET_ADMIN). */
export function forceBuffer(fd: number, which: 'snd' | 'rcv', bytes: number): void {
  setSockInt(fd, SOL_SOCKET, which === 'snd' ? SO.SNDBUFFORCE : SO.RCVBUFFORCE, Math.ceil(bytes / 2));
}

/** SO_BUF_LOCK (5.14+): which buffer sizes the user fixed (SOCK_SNDBUF_LOCK 1, SOCK_RCVBUF_LOCK 2; autotuning keeps off them); null on a kernel without it. */
export function bufferLocks(fd: number): number | null {
  const v = sockInt(fd, SOL_SOCKET, SO.BUF_LOCK, -1);
  return v < 0 ? null : v;
}

export function setBufferLocks(fd: number, locks: number): void {
  setSockInt(fd, SOL_SOCKET, SO.BUF_LOCK, locks);
}
