import { syscall, addressOf } from './libc.js';
import { NativeError } from './errors.js';
import { Errno } from './errno.js';
import { Sys } from './syscalls.js';
import { socket, close } from './process.js';
import { readLink } from './proc.js';
import { SOCK_CLOEXEC } from './flags.js';

/**
 * NETLINK_SOCK_DIAG for AF_UNIX (linux/unix_diag.h): the kernel's own view
 * of every UNIX socket in a network namespace, read without touching any of
 * them. It is the only place that names a socket's peer (by inode), the
 * clients waiting in a listener's accept queue, and the inode of the file a
 * socket is bound to.
 */

const AF_NETLINK = 16;
const AF_UNIX = 1;
const NETLINK_SOCK_DIAG = 4;
const SOCK_RAW = 3;
const SOCK_DIAG_BY_FAMILY = 20;
const NLM_F_REQUEST = 0x1;
const NLM_F_DUMP = 0x300;
const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const NLMSG_HDRLEN = 16;
const UNIX_DIAG_MSG_LEN = 16;

const UDIAG_SHOW_NAME = 0x1;
const UDIAG_SHOW_VFS = 0x2;
const UDIAG_SHOW_PEER = 0x4;
const UDIAG_SHOW_ICONS = 0x8;
const UDIAG_SHOW_RQLEN = 0x10;

const UNIX_DIAG_NAME = 0;
const UNIX_DIAG_VFS = 1;
const UNIX_DIAG_PEER = 2;
const UNIX_DIAG_ICONS = 3;
const UNIX_DIAG_RQLEN = 4;
const UNIX_DIAG_SHUTDOWN = 6;

/** The socket states sock_diag reports for AF_UNIX (borrowed from TCP's numbering). */
export const UNIX_STATE = { ESTABLISHED: 1, CLOSE: 7, LISTEN: 10 } as const;

export type UnixType = 'stream' | 'dgram' | 'seqpacket';
const TYPES: Record<number, UnixType> = { 1: 'stream', 2: 'dgram', 5: 'seqpacket' };

export interface UnixDiag {
  ino: number;
  type: UnixType;
  state: number;
  /** The address as bound (sun_path bytes: a path with its NUL, or an abstract name starting with NUL); absent when unbound. */
  name?: Buffer;
  /** The inode of the socket file behind a path name, with its filesystem as "major:minor" in hex, the way NodeStat.dev prints it. */
  vfs?: { ino: number; dev: string };
  /** The peer's inode; 0 when the peer has no inode of its own (closed, or not yet accepted). */
  peer?: number;
  /** Listening sockets: the inodes of the clients waiting in the accept queue, oldest first (0 for a client that has closed). */
  icons?: number[];
  /** Listening: pending connections; otherwise bytes queued to read (stream, seqpacket) or the first datagram's length. */
  rqueue: number;
  /** Listening: the backlog; otherwise bytes this socket sent that its peer has not read yet (in skb truesize). */
  wqueue: number;
  /** sk_shutdown: RCV_SHUTDOWN 1, SEND_SHUTDOWN 2. */
  shutdown: number;
}

/** The kernel's internal dev_t (12-bit major above a 20-bit minor) in NodeStat's format. */
function kernelDev(dev: number): string {
  return [dev >>> 20, dev & 0xfffff].map((n) => n.toString(16).padStart(2, '0')).join(':');
}

function parseMessage(buf: Buffer, at: number, len: number): UnixDiag | null {
  const type = buf[at] === AF_UNIX ? TYPES[buf[at + 1]!] : undefined;
  if (!type) return null;
  const d: UnixDiag = { ino: buf.readUInt32LE(at + 4), type, state: buf[at + 2]!, rqueue: 0, wqueue: 0, shutdown: 0 };
  for (let a = at + UNIX_DIAG_MSG_LEN; a + 4 <= at + len; ) {
    const alen = buf.readUInt16LE(a);
    if (alen < 4) break;
    const kind = buf.readUInt16LE(a + 2);
    const data = buf.subarray(a + 4, a + alen);
    switch (kind) {
      case UNIX_DIAG_NAME: d.name = Buffer.from(data); break;
      case UNIX_DIAG_VFS: d.vfs = { ino: data.readUInt32LE(0), dev: kernelDev(data.readUInt32LE(4)) }; break;
      case UNIX_DIAG_PEER: d.peer = data.readUInt32LE(0); break;
      case UNIX_DIAG_ICONS: d.icons = Array.from({ length: data.length / 4 }, (_, i) => data.readUInt32LE(i * 4)); break;
      case UNIX_DIAG_RQLEN: d.rqueue = data.readUInt32LE(0); d.wqueue = data.readUInt32LE(4); break;
      case UNIX_DIAG_SHUTDOWN: d.shutdown = data[0]!; break;
    }
    a += (alen + 3) & ~3;
  }
  return d;
}

/**
 * Every UNIX socket of the caller's network namespace that has an inode,
 * by inode. Sockets without one (kernel-internal, or closed but still
 * referenced) cannot be anyone's fd and are left out.
 */
export function unixSockets(): Map<number, UnixDiag> {
  const nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
  const out = new Map<number, UnixDiag>();
  try {
    const req = Buffer.alloc(NLMSG_HDRLEN + 24);
    req.writeUInt32LE(req.length, 0);
    req.writeUInt16LE(SOCK_DIAG_BY_FAMILY, 4);
    req.writeUInt16LE(NLM_F_REQUEST | NLM_F_DUMP, 6);
    req.writeUInt32LE(1, 8);
    req[NLMSG_HDRLEN] = AF_UNIX;
    req.writeUInt32LE(0xffffffff, NLMSG_HDRLEN + 4);
    req.writeUInt32LE(UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN, NLMSG_HDRLEN + 12);
    req.writeUInt32LE(0xffffffff, NLMSG_HDRLEN + 16);
    req.writeUInt32LE(0xffffffff, NLMSG_HDRLEN + 20);
    syscall('sendto(sock_diag)', Sys.sendto, nl, addressOf(req), req.length, 0, 0, 0);
    const buf = Buffer.alloc(256 * 1024);
    for (;;) {
      const n = syscall('recvfrom(sock_diag)', Sys.recvfrom, nl, addressOf(buf), buf.length, 0, 0, 0);
      for (let at = 0; at + NLMSG_HDRLEN <= n; ) {
        const len = buf.readUInt32LE(at);
        const type = buf.readUInt16LE(at + 4);
        if (len < NLMSG_HDRLEN || at + len > n) throw new NativeError('sock_diag', Errno.EIO, `malformed netlink message of ${len} bytes`);
        if (type === NLMSG_DONE) return out;
        if (type === NLMSG_ERROR) {
          const err = -buf.readInt32LE(at + NLMSG_HDRLEN);
          throw new NativeError('sock_diag(AF_UNIX)', err, err === Errno.ENOENT ? 'this kernel has no unix_diag (CONFIG_UNIX_DIAG)' : undefined);
        }
        if (type === SOCK_DIAG_BY_FAMILY && len >= NLMSG_HDRLEN + UNIX_DIAG_MSG_LEN) {
          const d = parseMessage(buf, at + NLMSG_HDRLEN, len - NLMSG_HDRLEN);
          if (d && d.ino) out.set(d.ino, d);
        }
        at += (len + 3) & ~3;
      }
      if (n === 0) return out;
    }
  } finally {
    close(nl);
  }
}

/** sock_diag answers for the namespace of the socket it is asked through: Ferry's own. */
export function inOurNetns(pid: number): boolean {
  return readLink(`/proc/${pid}/ns/net`) === readLink('/proc/self/ns/net');
}
