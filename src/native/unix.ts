import { syscall, addressOf } from './libc.js';
import { NativeError, isNativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { close, getsockopt, setsockopt } from './process.js';
import type { Injector } from './inject.js';

/**
 * UNIX domain sockets: what Ferry reads through its own copy of a process's
 * socket (pidfd_getfd), and the struct layouts of the calls a restore
 * injects. A copy shares the socket with the process, so every read here
 * either leaves the socket as it was or puts back what it changed.
 */

export const AF_UNIX = 1;
const SOL_SOCKET = 1;
export const SOCK_TYPE = { stream: 1, dgram: 2, seqpacket: 5 } as const;
export const SO = {
  SNDBUF: 7, RCVBUF: 8, PASSCRED: 16, PEERCRED: 17, RCVLOWAT: 18, RCVTIMEO: 20, SNDTIMEO: 21,
  GET_FILTER: 26, TIMESTAMP: 29, SNDBUFFORCE: 32, RCVBUFFORCE: 33, PASSSEC: 34, TIMESTAMPNS: 35,
  TIMESTAMPING: 37, DOMAIN: 39, PEEK_OFF: 42, TIMESTAMP_NEW: 63, TIMESTAMPNS_NEW: 64, PASSPIDFD: 76,
  PASSRIGHTS: 83,
} as const;

const MSG_PEEK = 0x2;
const MSG_CTRUNC = 0x8;
const MSG_TRUNC = 0x20;
const MSG_DONTWAIT = 0x40;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const SCM_RIGHTS = 1;
const SCM_CREDENTIALS = 2;
const SCM_PIDFD = 4;
const POLLERR = 0x8;
const MSGHDR_SIZE = 56;
const CMSGHDR_SIZE = 16;
const UCRED_SIZE = 12;
const SOCKADDR_UN_SIZE = 110;
const CONTROL_SIZE = 4096;

/** SO_PEERCRED and SCM_CREDENTIALS: a process and its ids as the reader's namespaces see them. */
export interface Ucred {
  pid: number;
  uid: number;
  gid: number;
}

/** A sockaddr_un for `name` (sun_path bytes exactly as the kernel reports them). */
function sockaddrUn(name: Uint8Array): Buffer {
  if (name.length > SOCKADDR_UN_SIZE - 2) throw new RangeError(`a UNIX socket name of ${name.length} bytes does not fit sun_path`);
  const sa = Buffer.alloc(2 + name.length);
  sa.writeUInt16LE(AF_UNIX, 0);
  sa.set(name, 2);
  return sa;
}

/** A connected pair of UNIX sockets of our own. */
export function socketpair(type: number): [number, number] {
  const fds = Buffer.alloc(8);
  syscall('socketpair(AF_UNIX)', Sys.socketpair, AF_UNIX, type, 0, addressOf(fds));
  return [fds.readInt32LE(0), fds.readInt32LE(4)];
}

/** getpeername: the peer's address (empty when it is unbound); null when not connected. */
export function peerName(fd: number): Buffer | null {
  const sa = Buffer.alloc(SOCKADDR_UN_SIZE);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(sa.length, 0);
  try {
    syscall(`getpeername(${fd})`, Sys.getpeername, fd, addressOf(sa), addressOf(len));
    return Buffer.from(sa.subarray(2, Math.max(2, len.readUInt32LE(0))));
  } catch (e) {
    if (isNativeError(e, 'ENOTCONN')) return null;
    throw e;
  }
}

const ENOPROTOOPT = 92;

/** getsockopt(SOL_SOCKET) of an int; `absent` is what a kernel without the option behaves like (SO_PASSPIDFD came in 6.5, SO_PASSRIGHTS in 6.16). */
export function sockoptInt(fd: number, name: number, absent?: number): number {
  try {
    return getsockopt(fd, SOL_SOCKET, name, 4).readInt32LE(0);
  } catch (e) {
    if (absent !== undefined && e instanceof NativeError && e.errno === ENOPROTOOPT) return absent;
    throw e;
  }
}

/** SO_RCVTIMEO / SO_SNDTIMEO as a struct timeval. */
export function sockoptTime(fd: number, name: number): { sec: number; usec: number } {
  const tv = getsockopt(fd, SOL_SOCKET, name, 16);
  return { sec: Number(tv.readBigInt64LE(0)), usec: Number(tv.readBigInt64LE(8)) };
}

function readUcred(b: Buffer, at = 0): Ucred {
  return { pid: b.readInt32LE(at), uid: b.readUInt32LE(at + 4), gid: b.readUInt32LE(at + 8) };
}

/** SO_PEERCRED: who created the connection's other end (or, on a listener, who called listen()); null when nobody did. */
export function peerCred(fd: number): Ucred | null {
  const c = readUcred(getsockopt(fd, SOL_SOCKET, SO.PEERCRED, UCRED_SIZE));
  return c.pid ? c : null;
}

/** Whether a socket filter is attached (SO_ATTACH_FILTER or SO_ATTACH_BPF); asking for zero bytes only counts it. */
export function hasSocketFilter(fd: number): boolean {
  const len = Buffer.alloc(4);
  try {
    syscall(`getsockopt(${fd}, SO_GET_FILTER)`, Sys.getsockopt, fd, SOL_SOCKET, SO.GET_FILTER, 0, addressOf(len));
  } catch (e) {
    // An eBPF program has no classic form to report.
    if (isNativeError(e, 'EACCES')) return true;
    throw e;
  }
  return len.readUInt32LE(0) !== 0;
}

/** A pending socket error (sk_err) shows as POLLERR; reading SO_ERROR would clear it. */
export function hasPendingError(fd: number): boolean {
  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(fd, 0);
  syscall(`poll(${fd})`, Sys.poll, addressOf(pfd), 1, 0);
  return (pfd.readInt16LE(6) & POLLERR) !== 0;
}

export interface PeekedMessage {
  /** Bytes of this message (datagram, record), or of this run of stream bytes that share their credentials. */
  length: number;
  /** Message sockets: the sender's address as recvfrom() would report it (empty when unbound). */
  from?: Buffer;
  /** SCM_CREDENTIALS, delivered only when the socket has SO_PASSCRED. */
  creds?: Ucred;
  /** File descriptors in flight with it (SCM_RIGHTS). */
  rights: number;
}

export interface PeekedQueue {
  data: Buffer;
  messages: PeekedMessage[];
}

interface Received {
  n: number;
  flags: number;
  from: Buffer;
  creds?: Ucred;
  rights: number;
}

/** One recvmsg(MSG_PEEK). Files that arrive with it (SCM_RIGHTS, SCM_PIDFD) land in our fd table and are closed at once. */
function peekOnce(fd: number, into: Buffer, extra: number): Received | null {
  const name = Buffer.alloc(SOCKADDR_UN_SIZE);
  const iov = Buffer.alloc(16);
  const control = Buffer.alloc(CONTROL_SIZE);
  const msg = Buffer.alloc(MSGHDR_SIZE);
  iov.writeBigUInt64LE(addressOf(into), 0);
  iov.writeBigUInt64LE(BigInt(into.length), 8);
  msg.writeBigUInt64LE(addressOf(name), 0);
  msg.writeUInt32LE(name.length, 8);
  msg.writeBigUInt64LE(addressOf(iov), 16);
  msg.writeBigUInt64LE(1n, 24);
  msg.writeBigUInt64LE(addressOf(control), 32);
  msg.writeBigUInt64LE(BigInt(control.length), 40);
  let n: number;
  try {
    n = syscall(`recvmsg(${fd}, MSG_PEEK)`, Sys.recvmsg, fd, addressOf(msg), MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC | extra);
  } catch (e) {
    if (isNativeError(e, 'EAGAIN')) return null;
    throw e;
  }
  const got: Received = { n, flags: msg.readInt32LE(48), from: Buffer.from(name.subarray(2, Math.max(2, msg.readUInt32LE(8)))), rights: 0 };
  const controlLen = Number(msg.readBigUInt64LE(40));
  for (let at = 0; at + CMSGHDR_SIZE <= controlLen; ) {
    const len = Number(control.readBigUInt64LE(at));
    if (len < CMSGHDR_SIZE) break;
    const level = control.readInt32LE(at + 8);
    const type = control.readInt32LE(at + 12);
    if (level === SOL_SOCKET && (type === SCM_RIGHTS || type === SCM_PIDFD)) {
      const fds = (len - CMSGHDR_SIZE) / 4;
      for (let i = 0; i < fds; i++) close(control.readInt32LE(at + CMSGHDR_SIZE + i * 4));
      if (type === SCM_RIGHTS) got.rights += fds;
    } else if (level === SOL_SOCKET && type === SCM_CREDENTIALS) {
      got.creds = readUcred(control, at + CMSGHDR_SIZE);
    }
    at += (len + 7) & ~7;
  }
  // 4 KiB holds every control message a UNIX socket sends (at most 253 fds); a cut would hide what was in flight.
  if (got.flags & MSG_CTRUNC) throw new NativeError(`recvmsg(${fd}, MSG_PEEK)`, Errno.EOVERFLOW, `a queued message carries more than ${CONTROL_SIZE} bytes of control data`);
  return got;
}

function sameCreds(a?: Ucred, b?: Ucred): boolean {
  return a === b || (!!a && !!b && a.pid === b.pid && a.uid === b.uid && a.gid === b.gid);
}

/**
 * Everything queued to be read from a socket, without consuming it:
 * SO_PEEK_OFF makes each MSG_PEEK continue where the last one stopped, and
 * the process's own peek offset is put back afterwards.
 *
 * A stream socket is read up to `bytes` (its queue length by the kernel's
 * count) and not one call further: a read that finds the queue empty
 * returns a pending error, and clears it. Its bytes come in runs of equal
 * credentials, which is where the kernel splits reads too. Datagram and
 * seqpacket sockets are read message by message until EAGAIN (their reads
 * clear a pending error at once: the caller must know there is none); a
 * seqpacket socket shut down for reading answers 0 instead once its queue
 * is empty (`eof`), which a zero-length record cannot be told apart from,
 * by the program either.
 */
export function peekQueue(fd: number, what: { stream: number } | { messages: true; eof: boolean }): PeekedQueue {
  const saved = sockoptInt(fd, SO.PEEK_OFF);
  const peekOff = Buffer.alloc(4);
  const chunks: Buffer[] = [];
  const messages: PeekedMessage[] = [];
  let total = 0;
  let buf = Buffer.alloc(256 * 1024);
  try {
    setsockopt(fd, SOL_SOCKET, SO.PEEK_OFF, peekOff);
    while (!('stream' in what) || total < what.stream) {
      const got = peekOnce(fd, buf, 'stream' in what ? 0 : MSG_TRUNC);
      if (!got) break;
      if ('stream' in what) {
        if (got.n === 0) break;
        const last = messages[messages.length - 1];
        if (last && !last.rights && !got.rights && sameCreds(last.creds, got.creds)) last.length += got.n;
        else messages.push({ length: got.n, ...(got.creds ? { creds: got.creds } : {}), rights: got.rights });
      } else {
        if (got.n === 0 && what.eof) break;
        if (got.n > buf.length) {
          // Truncated: go back to the start of this message and read it whole.
          buf = Buffer.alloc(got.n);
          peekOff.writeInt32LE(total, 0);
          setsockopt(fd, SOL_SOCKET, SO.PEEK_OFF, peekOff);
          continue;
        }
        messages.push({ length: got.n, from: got.from, ...(got.creds ? { creds: got.creds } : {}), rights: got.rights });
      }
      chunks.push(Buffer.from(buf.subarray(0, got.n)));
      total += got.n;
    }
  } finally {
    peekOff.writeInt32LE(saved, 0);
    setsockopt(fd, SOL_SOCKET, SO.PEEK_OFF, peekOff);
  }
  return { data: Buffer.concat(chunks, total), messages };
}

/**
 * sendmsg() injected into a task: `length` bytes at `at` in the task, to
 * `to` (unconnected datagram sockets) and with explicit credentials when
 * given (a task with CAP_SYS_ADMIN, CAP_SETUID and CAP_SETGID may name any
 * existing pid and any ids). Never waits and never raises SIGPIPE. Returns
 * the bytes the kernel took (a stream socket may take fewer).
 */
export function injectSendmsg(inj: Injector, fd: number, at: number, length: number, opts: { to?: Uint8Array; creds?: Ucred } = {}): number {
  inj.reset();
  const iov = Buffer.alloc(16);
  iov.writeBigUInt64LE(BigInt(at), 0);
  iov.writeBigUInt64LE(BigInt(length), 8);
  const msg = Buffer.alloc(MSGHDR_SIZE);
  msg.writeBigUInt64LE(BigInt(inj.put(iov)), 16);
  msg.writeBigUInt64LE(1n, 24);
  if (opts.to) {
    const sa = sockaddrUn(opts.to);
    msg.writeBigUInt64LE(BigInt(inj.put(sa)), 0);
    msg.writeUInt32LE(sa.length, 8);
  }
  if (opts.creds) {
    const cmsg = Buffer.alloc(CMSGHDR_SIZE + 16);
    cmsg.writeBigUInt64LE(BigInt(CMSGHDR_SIZE + UCRED_SIZE), 0);
    cmsg.writeInt32LE(SOL_SOCKET, 8);
    cmsg.writeInt32LE(SCM_CREDENTIALS, 12);
    cmsg.writeInt32LE(opts.creds.pid, 16);
    cmsg.writeUInt32LE(opts.creds.uid, 20);
    cmsg.writeUInt32LE(opts.creds.gid, 24);
    msg.writeBigUInt64LE(BigInt(inj.put(cmsg)), 32);
    msg.writeBigUInt64LE(BigInt(cmsg.length), 40);
  }
  try {
    return inj.call(`sendmsg(${fd}, ${length} bytes)`, Sys.sendmsg, fd, inj.put(msg), MSG_DONTWAIT | MSG_NOSIGNAL);
  } finally {
    inj.reset();
  }
}

/** An injected call that takes a socket address: bind() or connect(). */
export function injectAddressCall(inj: Injector, call: 'bind' | 'connect', fd: number, name: Uint8Array, what: string): void {
  inj.reset();
  const sa = sockaddrUn(name);
  try {
    inj.call(`${call}(${fd}, ${what})`, call === 'bind' ? Sys.bind : Sys.connect, fd, inj.put(sa), sa.length);
  } finally {
    inj.reset();
  }
}

/** setsockopt(SOL_SOCKET) injected, with an int or a struct timeval. */
export function injectSockopt(inj: Injector, fd: number, name: number, value: number | { sec: number; usec: number }): void {
  inj.reset();
  let v: Buffer;
  if (typeof value === 'number') {
    v = Buffer.alloc(4);
    v.writeInt32LE(value, 0);
  } else {
    v = Buffer.alloc(16);
    v.writeBigInt64LE(BigInt(value.sec), 0);
    v.writeBigInt64LE(BigInt(value.usec), 8);
  }
  try {
    inj.call(`setsockopt(${fd}, ${name})`, Sys.setsockopt, fd, SOL_SOCKET, name, inj.put(v), v.length);
  } finally {
    inj.reset();
  }
}

/** getsockopt(SOL_SOCKET) of an int, injected. */
export function injectSockoptInt(inj: Injector, fd: number, name: number): number {
  inj.reset();
  const out = inj.reserve(8);
  const v = Buffer.alloc(4);
  v.writeUInt32LE(4, 0);
  try {
    inj.call(`getsockopt(${fd}, ${name})`, Sys.getsockopt, fd, SOL_SOCKET, name, out, inj.put(v));
    return inj.read(out, 4).readInt32LE(0);
  } finally {
    inj.reset();
  }
}

/** socketpair() injected; returns both fds. */
export function injectSocketpair(inj: Injector, type: number): [number, number] {
  inj.reset();
  const out = inj.reserve(8);
  try {
    inj.call('socketpair(AF_UNIX)', Sys.socketpair, AF_UNIX, type, 0, out);
    const fds = inj.read(out, 8);
    return [fds.readInt32LE(0), fds.readInt32LE(4)];
  } finally {
    inj.reset();
  }
}
