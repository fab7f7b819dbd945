import { z } from 'zod';
import { defineEntry, type Entry } from './entry.js';

/**
 * TCP sockets (IPv4 and IPv6). One `tcp-socket` entry per socket, which
 * is always one open file description: `fd` entries point at it through
 * `file`, in the id space of `file` entries, like `unix-socket`.
 *
 * States, by what a restore has to make:
 *  - `closed`: never connected (bound to `local`, or not bound at all), or
 *    a connection that has ended (`ended`: reads give EOF);
 *  - `listen`: bound to `local`, with its `backlog`. Its accept queue was
 *    empty (a checkpoint refuses otherwise);
 *  - the connected states, named as the kernel names them: `established`,
 *    `fin-wait1`/`fin-wait2` (this side shut its writing), `close-wait`
 *    (the peer did), `last-ack`/`closing` (both did). `connection` holds
 *    what TCP_REPAIR rebuilds them from.
 *
 * Sequence numbers are the connection's own, so the peer never notices a
 * difference: the send queue starts at `sndSeq` (the first byte the peer
 * has not acknowledged), the receive queue at `rcvSeq` (the first byte the
 * program has not read). A FIN this side sent takes the sequence number
 * after the send queue; a FIN it received is counted before the receive
 * queue, so that the restored socket acknowledges it as the original did
 * (see src/target/tcp.ts for why).
 *
 * `tcp-lock` records the network lock a checkpoint left in place (one per
 * network namespace): the nftables table to remove once the restored
 * processes run, and where.
 */

export const TCP_STATES = ['closed', 'listen', 'established', 'fin-wait1', 'fin-wait2', 'close-wait', 'last-ack', 'closing'] as const;
export type TcpState = (typeof TCP_STATES)[number];
export const TCP_FAMILIES = ['inet', 'inet6'] as const;

const Port = z.number().int().min(0).max(65535);
const U32 = z.number().int().min(0).max(2 ** 32 - 1);
const Int = z.number().int().min(-(2 ** 31)).max(2 ** 31 - 1);
/** An address as inet_ntop writes it (IPv6: RFC 5952, IPv4-mapped with its dotted tail); `scope` an IPv6 scope id. */
export const TcpAddress = z.strictObject({ addr: z.string().min(2).max(64), port: Port, scope: U32.optional() });
const Timeval = z.strictObject({ sec: z.number().int().nonnegative(), usec: z.number().int().min(0).max(999_999) });
const PageData = z.strictObject({ offset: z.number().int().nonnegative(), length: z.number().int().positive() });

/** Socket options, as getsockopt reported them on the checkpointed socket. */
export const TcpOptions = z.strictObject({
  /** SO_REUSEADDR as the program set it (read before repair mode, which overrides it). */
  reuseaddr: z.boolean(),
  reuseport: z.boolean(),
  keepalive: z.boolean(),
  /** TCP_KEEPIDLE / TCP_KEEPINTVL (seconds) and TCP_KEEPCNT, whether or not keepalive is on. */
  keepidle: Int,
  keepintvl: Int,
  keepcnt: Int,
  nodelay: z.boolean(),
  cork: z.boolean(),
  linger: z.strictObject({ on: z.boolean(), seconds: Int }),
  /** TCP_USER_TIMEOUT, ms; 0 = the system's. */
  userTimeout: Int,
  /** SO_SNDBUF / SO_RCVBUF as getsockopt reports them (twice what setsockopt was given). */
  sndbuf: z.number().int().positive(),
  rcvbuf: z.number().int().positive(),
  /** SO_BUF_LOCK: 1 the send buffer size was set by the program (SOCK_SNDBUF_LOCK), 2 the receive buffer's; otherwise the kernel tunes it. */
  bufLock: z.number().int().min(0).max(3),
  rcvlowat: Int,
  rcvtimeo: Timeval,
  sndtimeo: Timeval,
  priority: Int,
  mark: U32,
  oobinline: z.boolean(),
  /** SO_BINDTODEVICE; '' when not bound to a device. */
  bindToDevice: z.string().max(16),
  congestion: z.string().min(1).max(16),
  notsentLowat: U32,
  /** TCP_LINGER2, seconds (-1: no FIN_WAIT2 timeout). */
  linger2: Int,
  /** TCP_DEFER_ACCEPT (seconds) and TCP_FASTOPEN (queue length): listeners. */
  deferAccept: Int,
  fastopen: Int,
  inq: z.boolean(),
  /** IP_TOS and IP_TTL as getsockopt reports them (a TTL the program never set reads as the system's). */
  ip: z.strictObject({ tos: Int, ttl: Int }).optional(),
  /** IPv6 sockets: IPV6_TCLASS, IPV6_UNICAST_HOPS, IPV6_V6ONLY. */
  ipv6: z.strictObject({ tclass: Int, hops: Int, v6only: z.boolean() }).optional(),
});
export type TcpOptions = z.infer<typeof TcpOptions>;

/** What TCP_REPAIR rebuilds a connection from. */
export const TcpConnection = z.strictObject({
  /** TCP_QUEUE_SEQ of the send queue: the first byte the peer has not acknowledged (or our FIN, once all data is acknowledged). */
  sndSeq: U32,
  /** TCP_QUEUE_SEQ of the receive queue: the first byte the program has not read. */
  rcvSeq: U32,
  /** TCP_REPAIR_OPTIONS: the MSS the peer announced, window scaling (null when not negotiated), SACK, timestamps. */
  mss: z.number().int().positive().max(65535),
  wscale: z.strictObject({ snd: z.number().int().min(0).max(14), rcv: z.number().int().min(0).max(14) }).nullable(),
  sack: z.boolean(),
  timestamps: z.boolean(),
  /** ECN was negotiated; repair mode cannot set it again, so the restored connection runs without it. */
  ecn: z.boolean(),
  /** TCP_TIMESTAMP: the clock of the TSval option, so the peer's PAWS check never sees it go back. */
  tsval: U32,
  /** TCP_REPAIR_WINDOW. */
  window: z.strictObject({ sndWl1: U32, sndWnd: U32, maxWindow: U32, rcvWnd: U32, rcvWup: U32 }),
  windowClamp: U32,
  /** This side shut its writing: its FIN follows the send queue. */
  finSent: z.boolean(),
  /** The peer shut its writing: after the receive queue, reads give EOF. */
  finReceived: z.boolean(),
  /** The send queue in pages.bin: bytes from `sndSeq` on; its last `unsent` bytes were never transmitted. */
  sendQueue: PageData.extend({ unsent: z.number().int().nonnegative() }).optional(),
  /** The receive queue in pages.bin: bytes from `rcvSeq` on, unread. */
  recvQueue: PageData.optional(),
});
export type TcpConnection = z.infer<typeof TcpConnection>;

export const TcpSocketEntry = defineEntry(
  'tcp-socket',
  1,
  z.strictObject({
    /** The description's id, shared with `file` entries: `fd` entries name it. */
    file: z.number().int().nonnegative(),
    family: z.enum(TCP_FAMILIES),
    /** The description's f_flags (O_RDWR, O_NONBLOCK), never O_CLOEXEC. */
    flags: z.number().int().nonnegative(),
    state: z.enum(TCP_STATES),
    /** getsockname; absent for a socket that is not bound. Listeners and connections always have one. */
    local: TcpAddress.optional(),
    /** getpeername: connections only. */
    remote: TcpAddress.optional(),
    /** Listeners only. */
    backlog: z.number().int().nonnegative().optional(),
    /** A closed socket whose connection ended: both directions are shut. */
    ended: z.boolean().optional(),
    options: TcpOptions,
    /** Exactly the connected states. */
    connection: TcpConnection.optional(),
  }),
);
export type TcpSocketEntry = Entry<typeof TcpSocketEntry>;

/** A local endpoint the lock drops packets of; `remote` narrows it to one connection. */
export const TcpLockEndpoint = z.strictObject({
  family: z.enum(TCP_FAMILIES),
  addr: z.string().min(2).max(64),
  port: Port,
  v6only: z.boolean().optional(),
  remote: z.strictObject({ addr: z.string().min(2).max(64), port: Port }).optional(),
});

export const TcpLockEntry = defineEntry(
  'tcp-lock',
  1,
  z.strictObject({
    /** The nftables table (family inet) holding the lock's rules. */
    table: z.string().regex(/^ferry-lock-[A-Za-z0-9_-]{1,64}$/),
    /** The network namespace it is in, as /proc/PID/ns/net names it on the checkpointed host ("net:[4026532...]"). */
    netns: z.string().min(1),
    /** An image pid living in that namespace: the restore unlocks in the namespace of its restored process. */
    pid: z.number().int().positive(),
    endpoints: z.array(TcpLockEndpoint),
  }),
);
export type TcpLockEntry = Entry<typeof TcpLockEntry>;

/** How a person names a TCP socket: "127.0.0.1:8080 -> 127.0.0.1:40312 (established)", "listening on [::]:8080". */
export function showTcp(s: Pick<TcpSocketEntry, 'state' | 'local' | 'remote'>): string {
  const at = (a: { addr: string; port: number }) => (a.addr.includes(':') ? `[${a.addr}]:${a.port}` : `${a.addr}:${a.port}`);
  if (s.state === 'listen' && s.local) return `listening on ${at(s.local)}`;
  if (s.local && s.remote) return `${at(s.local)} -> ${at(s.remote)} (${s.state})`;
  return s.local ? `bound to ${at(s.local)}, not connected` : 'not bound, not connected';
}
