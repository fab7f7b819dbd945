import { withRemoteFd, pidfdOpen, pidfdGetfd, close } from '../native/process.js';
import { listFds, readLink } from '../native/proc.js';
import { readFdLink, findFdHolders } from '../native/fdinfo.js';
import { isNativeError } from '../native/errors.js';
import { hasSocketFilter } from '../native/unix.js';
import {
  AF_INET, AF_INET6, AF_PACKET, SOL_SOCKET, SOL_IP, SOL_IPV6, SOL_TCP, IPPROTO_TCP, IPPROTO_UDP, SOCK_STREAM, SOCK_DGRAM, SOCK_RAW,
  socketKind, sockInt, setSockInt, packetProtocol, localAddress, peerAddress, showAddress, isWildcard, type InetFamily, type InetAddress,
} from '../native/inet.js';
import {
  SO, TCP, IP, IPV6, TCP_STATE, TCP_STATE_NAMES, tcpInfo, setRepair, inRepair, queueSeq, queueSizes, peekQueue, repairWindow, peerMss, tcpTimestamp,
  pollState, sockString, sockLinger, sockTimeval, bufferLocks, type TcpInfo,
} from '../native/tcp.js';
import { lockEndpoints, lockTableName, unlockTable, type LockEndpoint } from '../native/nft.js';
import { TcpSocketEntry, TcpLockEntry, type TcpOptions, type TcpState, type TcpConnection } from '../image/tcp.js';
import { PAGE_SIZE } from '../image/constants.js';
import { CheckpointRefused, type Refusal } from './refusal.js';
import type { DumpContext } from './context.js';

/**
 * TCP sockets (and the verdict on every other internet or packet socket).
 *
 * A checkpoint that takes TCP sockets (`--tcp-established`, or any
 * container) first locks them: once every process is stopped, TcpCheckpoint
 * lists their local endpoints and drops every packet to and from them with
 * nftables (src/native/nft.ts), in each network namespace they live in.
 * From then on nothing changes a socket: the process is stopped and the
 * peer's segments never arrive. Each socket is then taken into Ferry with
 * pidfd_getfd and, when connected, put in repair mode (TCP_REPAIR needs
 * CAP_NET_ADMIN, which Ferry has and the process may not), and read:
 * sequence numbers, both queues with MSG_PEEK, the options the handshake
 * negotiated, the window, the timestamp clock, the socket options.
 *
 * Afterwards the sockets stay in repair mode: when the process is killed
 * they vanish without a FIN or RST, and the lock stays until the restored
 * copy runs (the image names it, `tcp-lock`). A checkpoint that leaves the
 * process running (or fails) takes them out of repair mode and unlocks.
 */

const FAMILY_NAME: Record<number, string> = { [AF_INET]: 'IPv4', [AF_INET6]: 'IPv6' };
const PROTOCOLS: Record<number, string> = { 1: 'ICMP', 6: 'TCP', 17: 'UDP', 58: 'ICMPv6', 132: 'SCTP', 136: 'UDP-Lite', 262: 'MPTCP' };
const ETH_P: Record<number, string> = { 0x0003: 'ETH_P_ALL', 0x0800: 'ETH_P_IP', 0x86dd: 'ETH_P_IPV6', 0x0806: 'ETH_P_ARP' };
const MPTCP = 262;
const SET_UP = new Set<number>([TCP_STATE.SYN_SENT, TCP_STATE.SYN_RECV, TCP_STATE.NEW_SYN_RECV]);
const CONNECTED: Record<number, TcpState> = {
  [TCP_STATE.ESTABLISHED]: 'established',
  [TCP_STATE.FIN_WAIT1]: 'fin-wait1',
  [TCP_STATE.FIN_WAIT2]: 'fin-wait2',
  [TCP_STATE.CLOSE_WAIT]: 'close-wait',
  [TCP_STATE.LAST_ACK]: 'last-ack',
  [TCP_STATE.CLOSING]: 'closing',
};
const FIN_SENT = new Set<TcpState>(['fin-wait1', 'fin-wait2', 'last-ack', 'closing']);
/** States whose FIN is still in the send queue (not acknowledged): it counts one in SIOCOUTQ. */
const FIN_UNACKED = new Set<TcpState>(['fin-wait1', 'last-ack', 'closing']);
const FIN_RECEIVED = new Set<TcpState>(['close-wait', 'last-ack', 'closing']);
/** Room beyond the send queue for the already acknowledged head of a segment that MSG_PEEK returns whole. */
const PEEK_SLACK = 1 << 20;

export const TCP_FLAG_HINT = '--tcp-established would take it (it locks the connection with nftables while it moves)';

function inoOf(link: string): string {
  return /^socket:\[(\d+)\]$/.exec(link)?.[1] ?? link;
}

function stateName(state: number): string {
  return TCP_STATE_NAMES[state] ?? `state ${state}`;
}

/** "127.0.0.1:8080 -> 127.0.0.1:40312 (ESTABLISHED)", "listening on 0.0.0.0:8080", "bound to ..., not connected". */
function describeTcp(fd: number, info: TcpInfo): string {
  const local = localAddress(fd);
  if (info.state === TCP_STATE.LISTEN) return `a TCP socket listening on ${local ? showAddress(local) : '?'}`;
  const peer = peerAddress(fd);
  if (peer && local) return `a TCP connection ${showAddress(local)} -> ${showAddress(peer)} (${stateName(info.state)})`;
  if (local?.port) return `a TCP socket bound to ${showAddress(local)}, not connected (${stateName(info.state)})`;
  return `an unbound TCP socket (${stateName(info.state)})`;
}

function describeUdp(fd: number, family: number): string {
  const local = localAddress(fd);
  const peer = peerAddress(fd);
  const what = `${family === AF_INET6 ? 'an IPv6' : 'a'} UDP socket`;
  if (!local?.port) return `an unbound ${what.replace(/^an? /, '')}`;
  return `${what} bound to ${showAddress(local)}${peer ? `, connected to ${showAddress(peer)}` : ''}`;
}

/**
 * Whether an internet or packet socket can travel, seen from outside while
 * the process runs. Null for any other family (the UNIX module's). Only TCP
 * can, and only when the checkpoint takes TCP (`allowTcp`).
 */
export function classifyInetSocket(pid: number, fd: number, link: string, allowTcp: boolean): { kind: 'tcp' } | { refuse: string } | null {
  return withRemoteFd(pid, fd, (local) => {
    const k = socketKind(local);
    if (k.domain === AF_PACKET) {
      const proto = packetProtocol(pid, Number(inoOf(link)));
      const type = k.type === SOCK_RAW ? 'SOCK_RAW' : k.type === SOCK_DGRAM ? 'SOCK_DGRAM' : `type ${k.type}`;
      const ether = proto === null ? '' : `, ethertype 0x${proto.toString(16).padStart(4, '0')}${ETH_P[proto] ? ` ${ETH_P[proto]}` : ''}`;
      return { refuse: `a packet socket (AF_PACKET, ${type}${ether}; ${link}), which Ferry cannot migrate` };
    }
    if (k.domain !== AF_INET && k.domain !== AF_INET6) return null;
    const fam = FAMILY_NAME[k.domain]!;
    if (k.type === SOCK_DGRAM && k.protocol === IPPROTO_UDP) return { refuse: `${describeUdp(local, k.domain)} (${link}); UDP sockets do not migrate yet` };
    if (k.type === SOCK_RAW) return { refuse: `a raw ${fam} socket (protocol ${k.protocol}${PROTOCOLS[k.protocol] ? ` ${PROTOCOLS[k.protocol]}` : ''}; ${link}), which Ferry cannot migrate` };
    if (k.type !== SOCK_STREAM || k.protocol !== IPPROTO_TCP) {
      const name = k.protocol === MPTCP ? 'an MPTCP socket' : `an ${fam} socket of protocol ${PROTOCOLS[k.protocol] ?? k.protocol}`;
      return { refuse: `${name} (${link}), which Ferry cannot migrate: of internet sockets only TCP travels` };
    }
    const info = tcpInfo(local);
    const what = `${describeTcp(local, info)} (${link})`;
    if (!allowTcp) return { refuse: `${what}; ${TCP_FLAG_HINT}` };
    if (SET_UP.has(info.state)) return { refuse: `${what}, whose handshake is not finished: Ferry moves connections, not handshakes; retry once it is established` };
    if (info.state === TCP_STATE.CLOSE && pollState(local).error) return { refuse: `${what}, whose connection failed with an error the program has not read yet, which Ferry can neither read without clearing it nor recreate` };
    if (!CONNECTED[info.state] && info.state !== TCP_STATE.LISTEN && info.state !== TCP_STATE.CLOSE) return { refuse: `${what}, in a state Ferry cannot rebuild` };
    const ulp = sockString(local, SOL_TCP, TCP.ULP);
    if (ulp) return { refuse: `${what}, with the upper-layer protocol "${ulp}" (kernel TLS?) on it, whose state Ferry cannot read` };
    if (hasSocketFilter(local)) return { refuse: `${what}, with a socket filter (SO_ATTACH_FILTER/SO_ATTACH_BPF), which Ferry cannot copy` };
    return { kind: 'tcp' };
  });
}

/** A TCP socket held by a process outside the image would part ways with the restored copy. */
export function checkTcpSockets(pid: number, fds: Array<{ fd: number; link: string }>, refusals: Refusal[], scope: ReadonlySet<number>): void {
  if (!fds.length) return;
  const holders = findFdHolders(new Set(fds.map((s) => s.link)), new Set([pid, ...scope]));
  for (const s of fds) {
    const outside = holders.get(s.link);
    if (!outside?.length) continue;
    const [h] = outside;
    refusals.push({ pid, resource: `fd ${s.fd}`, reason: `the TCP socket ${s.link} is also open in pid ${h!.pid} fd ${h!.fd}${outside.length > 1 ? ` and ${outside.length - 1} more` : ''}, outside the checkpoint` });
  }
}

/** The endpoints a lock must cover: a listener's address, a connection's two. A socket neither listening nor connected gets nothing that a lock could keep. */
function lockEndpointsOf(fd: number, family: InetFamily): LockEndpoint[] {
  const state = tcpInfo(fd).state;
  const local = localAddress(fd);
  if (!local?.port) return [];
  if (state === TCP_STATE.LISTEN) {
    const v6only = family === 'inet6' && isWildcard(local.addr) ? { v6only: sockInt(fd, SOL_IPV6, IPV6.V6ONLY) !== 0 } : {};
    return [{ family, addr: local.addr, port: local.port, ...v6only }];
  }
  const peer = CONNECTED[state] ? peerAddress(fd) : null;
  return peer ? [{ family, addr: local.addr, port: local.port, remote: { addr: peer.addr, port: peer.port } }] : [];
}

interface Lock {
  table: string;
  /** As /proc/PID/ns/net names it. */
  netns: string;
  /** A process of the image living in it. */
  pid: number;
  endpoints: LockEndpoint[];
  removed: boolean;
}

const sessions = new WeakMap<ReadonlySet<number>, TcpCheckpoint>();

/**
 * One checkpoint's TCP sockets: the locks it made, and Ferry's copies of
 * the sockets it put in repair mode. Registered under the checkpoint's
 * scope, where the files module's dump finds it.
 */
export class TcpCheckpoint {
  readonly locks: Lock[] = [];
  /** Ferry's copies, by "pid:fd" of the fd they were taken from. */
  private readonly held = new Map<string, { local: number; repaired: boolean; reuseaddr: number }>();
  private pidfds = new Map<number, number>();
  /** Sockets of the image (descriptions), counted as they are dumped. */
  sockets = 0;

  private constructor(private readonly scope: ReadonlySet<number>) {}

  /**
   * Locks every TCP endpoint the stopped processes `pids` hold, one table
   * per network namespace, and registers the session for their dumps.
   */
  static begin(pids: readonly number[], scope: ReadonlySet<number>): TcpCheckpoint {
    const session = new TcpCheckpoint(scope);
    const byNetns = new Map<string, { pid: number; endpoints: LockEndpoint[]; seen: Set<string> }>();
    for (const pid of pids) {
      let fds: number[];
      try {
        fds = listFds(pid);
      } catch (e) {
        if (isNativeError(e, 'ENOENT')) continue;
        throw e;
      }
      for (const fd of fds) {
        let link: string;
        try {
          link = readFdLink(pid, fd);
        } catch (e) {
          if (isNativeError(e, 'ENOENT')) continue;
          throw e;
        }
        if (!link.startsWith('socket:')) continue;
        const endpoints = withRemoteFd(pid, fd, (local) => {
          const k = socketKind(local);
          if ((k.domain !== AF_INET && k.domain !== AF_INET6) || k.type !== SOCK_STREAM || k.protocol !== IPPROTO_TCP) return [];
          return lockEndpointsOf(local, k.domain === AF_INET ? 'inet' : 'inet6');
        });
        if (!endpoints.length) continue;
        const netns = readLink(`/proc/${pid}/ns/net`);
        let group = byNetns.get(netns);
        if (!group) byNetns.set(netns, (group = { pid, endpoints: [], seen: new Set() }));
        if (group.seen.has(link)) continue;
        group.seen.add(link);
        group.endpoints.push(...endpoints);
      }
    }
    try {
      for (const [netns, g] of byNetns) {
        const table = lockTableName();
        lockEndpoints(table, g.endpoints, { pid: g.pid });
        session.locks.push({ table, netns, pid: g.pid, endpoints: g.endpoints, removed: false });
      }
    } catch (e) {
      session.unlock();
      throw e;
    }
    sessions.set(scope, session);
    return session;
  }

  static of(scope: ReadonlySet<number>): TcpCheckpoint | undefined {
    return sessions.get(scope);
  }

  /** Ferry's copy of a process's socket, kept until the session is released. */
  take(pid: number, fd: number): number {
    const key = `${pid}:${fd}`;
    const known = this.held.get(key);
    if (known) return known.local;
    let pidfd = this.pidfds.get(pid);
    if (pidfd === undefined) this.pidfds.set(pid, (pidfd = pidfdOpen(pid)));
    const local = pidfdGetfd(pidfd, fd);
    this.held.set(key, { local, repaired: false, reuseaddr: 0 });
    return local;
  }

  /** Repair mode on a taken socket; SO_REUSEADDR is kept aside, since leaving repair mode resets it. */
  repair(pid: number, fd: number, reuseaddr: number): void {
    const h = this.held.get(`${pid}:${fd}`)!;
    h.reuseaddr = reuseaddr;
    setRepair(h.local, true);
    h.repaired = true;
  }

  /** Takes every socket out of repair mode, as the program left it: for a process that goes on running. */
  leaveRepair(): void {
    const errors: unknown[] = [];
    for (const h of this.held.values()) {
      if (!h.repaired) continue;
      try {
        setRepair(h.local, false);
        setSockInt(h.local, SOL_SOCKET, SO.REUSEADDR, h.reuseaddr);
        h.repaired = false;
      } catch (e) {
        errors.push(e);
      }
    }
    if (errors.length) throw errors[0];
  }

  /** Closes Ferry's copies. Sockets left in repair mode vanish silently when their process closes them or dies. */
  release(): void {
    for (const h of this.held.values()) close(h.local);
    this.held.clear();
    for (const fd of this.pidfds.values()) close(fd);
    this.pidfds.clear();
    sessions.delete(this.scope);
  }

  /** Removes the locks (idempotent). */
  unlock(): void {
    let first: unknown = null;
    for (const l of this.locks) {
      if (l.removed) continue;
      try {
        unlockTable(l.table, { pid: l.pid });
        l.removed = true;
      } catch (e) {
        first ??= e;
      }
    }
    if (first) throw first;
  }

  /** The locks that stay in place, as the image records them. */
  lockEntries(): TcpLockEntry[] {
    return this.locks.filter((l) => !l.removed).map((l) => TcpLockEntry.make({ table: l.table, netns: l.netns, pid: l.pid, endpoints: l.endpoints }));
  }
}

function readOptions(fd: number, family: InetFamily, listening: boolean): TcpOptions {
  const int = (level: number, name: number, absent?: number) => sockInt(fd, level, name, absent);
  const ip = (() => {
    try {
      return { tos: int(SOL_IP, IP.TOS), ttl: int(SOL_IP, IP.TTL) };
    } catch {
      return undefined;
    }
  })();
  return {
    reuseaddr: int(SOL_SOCKET, SO.REUSEADDR) !== 0,
    reuseport: int(SOL_SOCKET, SO.REUSEPORT) !== 0,
    keepalive: int(SOL_SOCKET, SO.KEEPALIVE) !== 0,
    keepidle: int(SOL_TCP, TCP.KEEPIDLE),
    keepintvl: int(SOL_TCP, TCP.KEEPINTVL),
    keepcnt: int(SOL_TCP, TCP.KEEPCNT),
    nodelay: int(SOL_TCP, TCP.NODELAY) !== 0,
    cork: int(SOL_TCP, TCP.CORK) !== 0,
    linger: sockLinger(fd),
    userTimeout: int(SOL_TCP, TCP.USER_TIMEOUT),
    sndbuf: int(SOL_SOCKET, SO.SNDBUF),
    rcvbuf: int(SOL_SOCKET, SO.RCVBUF),
    bufLock: bufferLocks(fd) ?? 0,
    rcvlowat: int(SOL_SOCKET, SO.RCVLOWAT),
    rcvtimeo: sockTimeval(fd, SO.RCVTIMEO),
    sndtimeo: sockTimeval(fd, SO.SNDTIMEO),
    priority: int(SOL_SOCKET, SO.PRIORITY),
    mark: int(SOL_SOCKET, SO.MARK) >>> 0,
    oobinline: int(SOL_SOCKET, SO.OOBINLINE) !== 0,
    bindToDevice: sockString(fd, SOL_SOCKET, SO.BINDTODEVICE),
    congestion: sockString(fd, SOL_TCP, TCP.CONGESTION),
    notsentLowat: int(SOL_TCP, TCP.NOTSENT_LOWAT) >>> 0,
    linger2: int(SOL_TCP, TCP.LINGER2),
    deferAccept: listening ? int(SOL_TCP, TCP.DEFER_ACCEPT) : 0,
    fastopen: listening ? int(SOL_TCP, TCP.FASTOPEN, 0) : 0,
    inq: int(SOL_TCP, TCP.INQ, 0) !== 0,
    ...(ip ? { ip } : {}),
    ...(family === 'inet6' ? { ipv6: { tclass: int(SOL_IPV6, IPV6.TCLASS), hops: int(SOL_IPV6, IPV6.UNICAST_HOPS), v6only: int(SOL_IPV6, IPV6.V6ONLY) !== 0 } } : {}),
  };
}

function address(a: InetAddress): { addr: string; port: number; scope?: number } {
  return { addr: a.addr, port: a.port, ...(a.scope ? { scope: a.scope } : {}) };
}

async function storeBytes(ctx: DumpContext, data: Buffer): Promise<{ offset: number; length: number } | undefined> {
  if (!data.length) return undefined;
  const padded = Buffer.alloc(Math.ceil(data.length / PAGE_SIZE) * PAGE_SIZE);
  data.copy(padded);
  return { offset: (await ctx.image.writePages(padded)).offset, length: data.length };
}

/**
 * What repair mode shows of a connection. Sequence arithmetic is mod 2^32.
 * SIOCOUTQ counts an unacknowledged FIN of ours, SIOCOUTQNSD one not yet
 * sent; SIOCINQ never counts the peer's FIN, but rcv_nxt does, so the
 * receive queue is recorded as ending at rcv_nxt (see src/image/tcp.ts).
 */
function readConnection(fd: number, state: TcpState, info: TcpInfo, refuse: (r: string) => Error): { conn: Omit<TcpConnection, 'sendQueue' | 'recvQueue'>; send: Buffer; unsent: number; recv: Buffer } {
  const finSent = FIN_SENT.has(state);
  const finUnacked = FIN_UNACKED.has(state);
  const writeSeq = queueSeq(fd, 'send');
  const rcvNxt = queueSeq(fd, 'recv');
  const q = queueSizes(fd);
  const dataOut = q.outq - (finUnacked ? 1 : 0);
  const unsent = finUnacked && q.notsent > 0 ? q.notsent - 1 : q.notsent;
  if (dataOut < 0 || unsent < 0 || unsent > dataOut) throw refuse(`its send queue does not add up (SIOCOUTQ ${q.outq}, SIOCOUTQNSD ${q.notsent} in ${state})`);
  let send = Buffer.alloc(0);
  if (dataOut) {
    let room = dataOut + PEEK_SLACK;
    for (;;) {
      const all = peekQueue(fd, 'send', room);
      if (all.length >= room) {
        room *= 2;
        continue;
      }
      if (all.length < dataOut) throw refuse(`its send queue holds ${dataOut} bytes by the kernel's count but only ${all.length} could be read`);
      send = Buffer.from(all.subarray(all.length - dataOut));
      break;
    }
  }
  let recv = Buffer.alloc(0);
  if (q.inq) {
    recv = Buffer.from(peekQueue(fd, 'recv', q.inq + 1));
    if (recv.length !== q.inq) throw refuse(`its receive queue holds ${q.inq} bytes by the kernel's count but ${recv.length} could be read (urgent data?)`);
  }
  const conn = {
    sndSeq: (writeSeq - dataOut - (finSent ? 1 : 0)) >>> 0,
    rcvSeq: (rcvNxt - q.inq) >>> 0,
    mss: peerMss(fd),
    wscale: info.wscale,
    sack: info.sack,
    timestamps: info.timestamps,
    ecn: info.ecn,
    tsval: tcpTimestamp(fd),
    window: repairWindow(fd),
    windowClamp: sockInt(fd, SOL_TCP, TCP.WINDOW_CLAMP) >>> 0,
    finSent,
    // A restored connection whose peer had sent its FIN is ESTABLISHED with its read side shut (src/target/tcp.ts): the same thing, again.
    finReceived: FIN_RECEIVED.has(state) || pollState(fd).readShut,
  };
  return { conn, send, unsent, recv };
}

/**
 * Writes the entry of the TCP socket behind `fd` (the description `file`).
 * Runs with the process stopped and the lock in place; a connected socket
 * is left in repair mode (the session takes it out again if the process is
 * to go on).
 */
export async function dumpSocket(ctx: DumpContext, file: number, fd: number, link: string, flags: number): Promise<void> {
  const { pid } = ctx;
  const session = TcpCheckpoint.of(ctx.scope);
  const refusal = (reason: string) => new CheckpointRefused([{ pid, resource: `fd ${fd}`, reason }]);
  if (!session) throw refusal(`a TCP socket (${link}) appeared after the checks; ${TCP_FLAG_HINT}`);
  const local = session.take(pid, fd);
  const k = socketKind(local);
  const family: InetFamily = k.domain === AF_INET ? 'inet' : 'inet6';
  const info = tcpInfo(local);
  const what = describeTcp(local, info);
  const refuse = (reason: string) => refusal(`${what} (socket:[${inoOf(link)}]): ${reason}`);
  const listening = info.state === TCP_STATE.LISTEN;
  const options = readOptions(local, family, listening);
  const me = localAddress(local);
  const base = { file, family, flags, options, ...(me?.port ? { local: address(me) } : {}) };
  if (listening) {
    if (info.unacked) {
      throw refuse(
        `${info.unacked} connection${info.unacked === 1 ? '' : 's'} the kernel accepted wait${info.unacked === 1 ? 's' : ''} in its accept queue for the program to accept(); ` +
          'Ferry cannot put connections back into an accept queue (retry when the program has accepted them)',
      );
    }
    ctx.image.addEntry(TcpSocketEntry.make({ ...base, state: 'listen', backlog: info.sacked }));
  } else if (info.state === TCP_STATE.CLOSE) {
    const p = pollState(local);
    if (p.error) throw refuse('its connection failed with an error the program has not read yet');
    ctx.image.addEntry(TcpSocketEntry.make({ ...base, state: 'closed', ...(p.readShut ? { ended: true } : {}) }));
  } else {
    const state = CONNECTED[info.state];
    if (!state) throw refuse(`Ferry cannot rebuild a socket in state ${stateName(info.state)}`);
    const remote = peerAddress(local);
    if (!me?.port || !remote) throw refuse('a connection without both addresses');
    session.repair(pid, fd, sockInt(local, SOL_SOCKET, SO.REUSEADDR));
    const { conn, send, unsent, recv } = readConnection(local, state, info, refuse);
    const sendQueue = await storeBytes(ctx, send);
    const recvQueue = await storeBytes(ctx, recv);
    ctx.image.addEntry(
      TcpSocketEntry.make({
        ...base,
        state,
        remote: address(remote),
        connection: { ...conn, ...(sendQueue ? { sendQueue: { ...sendQueue, unsent } } : {}), ...(recvQueue ? { recvQueue } : {}) },
      }),
    );
  }
  session.sockets++;
}


/**
 * Takes the connected TCP sockets of `pids` out of repair mode: for a copy
 * held frozen after its checkpoint (holdFrozen) that a rollback thaws. Their
 * SO_REUSEADDR then reads 0 (repair mode overrode it), which matters to
 * nobody once a socket is connected. Returns how many it changed.
 */
export function leaveTcpRepair(pids: readonly number[]): number {
  let changed = 0;
  for (const pid of pids) {
    for (const fd of listFds(pid)) {
      let link: string;
      try {
        link = readFdLink(pid, fd);
      } catch {
        continue;
      }
      if (!link.startsWith('socket:')) continue;
      withRemoteFd(pid, fd, (local) => {
        const k = socketKind(local);
        if ((k.domain !== AF_INET && k.domain !== AF_INET6) || k.type !== SOCK_STREAM || k.protocol !== IPPROTO_TCP) return;
        if (!inRepair(local)) return;
        setRepair(local, false);
        changed++;
      });
    }
  }
  return changed;
}
