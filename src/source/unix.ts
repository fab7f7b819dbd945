import path from 'node:path';
import { unixSockets, inOurNetns, UNIX_STATE, type UnixDiag } from '../native/sockdiag.js';
import { peerName, sockoptInt, sockoptTime, peerCred, hasSocketFilter, hasPendingError, peekQueue, AF_UNIX, SO, type Ucred, type PeekedQueue } from '../native/unix.js';
import { statPath, findFdHolders, readFdLink, type FdHolder } from '../native/fdinfo.js';
import { withRemoteFd } from '../native/process.js';
import { readLink, listFds } from '../native/proc.js';
import { isNativeError } from '../native/errors.js';
import { UnixSocketEntry, UNIX_TIMESTAMPS, unixPath, showUnixName, sameUnixName } from '../image/unix.js';
import { PAGE_SIZE } from '../image/constants.js';
import { CheckpointRefused, type Refusal } from './refusal.js';
import type { DumpContext } from './context.js';

/**
 * UNIX domain sockets. The files module owns the fd table and hands every
 * socket description here: classifySocket() says whether it can travel,
 * checkSockets() looks at them together (peers, listeners and their
 * clients, names, filters, errors), dumpSocket() writes one socket's entry.
 * The kernel's view comes from sock_diag; queues are read through a copy of
 * the fd with MSG_PEEK, which needs the process stopped, so what only a
 * queue shows (SCM_RIGHTS in flight, datagrams nobody could send again) is
 * refused at dump time.
 *
 * Peers, listeners, clients and holders may be any process of the image
 * (its `scope`): entries name peers by inode, wherever they live, and a
 * description several processes hold is dumped once by the files module.
 * Only what ties a socket to a process outside the image is refused.
 */

const FAMILIES: Record<number, string> = { 2: 'AF_INET', 10: 'AF_INET6', 16: 'AF_NETLINK', 17: 'AF_PACKET', 40: 'AF_VSOCK' };
const RCV_SHUTDOWN = 1;

function inoOf(link: string): number {
  const m = /^socket:\[(\d+)\]$/.exec(link);
  if (!m) throw new Error(`not a socket link: ${link}`);
  return Number(m[1]);
}

/** Whether a socket fd can travel at all: only AF_UNIX sockets can. */
export function classifySocket(pid: number, fd: number, link: string): { kind: 'socket' } | { refuse: string } {
  const domain = withRemoteFd(pid, fd, (local) => sockoptInt(local, SO.DOMAIN));
  if (domain !== AF_UNIX) return { refuse: `a socket (${link}, ${FAMILIES[domain] ?? `address family ${domain}`}); of sockets only UNIX domain sockets are supported yet` };
  return { kind: 'socket' };
}

/** What a socket is connected to. */
type Link =
  | { state: 'unconnected' }
  | { state: 'listening'; pending: number[] }
  | { state: 'connected'; peer: number }
  | { state: 'pending'; listener: UnixDiag }
  | { state: 'peer-closed' };

/** sock_diag's table, with what the checks and the dump derive from it. */
interface View {
  table: Map<number, UnixDiag>;
  /** Client inode -> the listener whose accept queue holds its connection. */
  waiting: Map<number, UnixDiag>;
  /** The inodes of the sockets any process of the image holds: these travel with it. */
  inside: Set<number>;
  cwd: string;
}

/** The inodes of the sockets `pid` and the processes of `scope` hold. */
function socketsOf(pid: number, scope: ReadonlySet<number>): Set<number> {
  const inside = new Set<number>();
  for (const p of new Set([pid, ...scope])) {
    // Another process of the image may exit while the tree still runs (inspect); the next look sees it gone.
    let fds: number[] = [];
    try {
      fds = listFds(p);
    } catch (e) {
      if (p === pid || !isNativeError(e, 'ENOENT')) throw e;
    }
    for (const fd of fds) {
      try {
        const link = readFdLink(p, fd);
        if (link.startsWith('socket:')) inside.add(inoOf(link));
      } catch (e) {
        if (!isNativeError(e, 'ENOENT')) throw e;
      }
    }
  }
  return inside;
}

function view(pid: number, scope: ReadonlySet<number>, inside = socketsOf(pid, scope)): View {
  const table = unixSockets();
  const waiting = new Map<number, UnixDiag>();
  for (const d of table.values()) for (const c of d.icons ?? []) if (c) waiting.set(c, d);
  return { table, waiting, inside, cwd: readLink(`/proc/${pid}/cwd`) };
}

/**
 * `hasPeer`: getpeername() answers. The kernel keeps pointing at a peer that
 * closed (getpeername still names it), but its inode is gone. A datagram
 * socket's state says little: connect() marks both sockets established.
 */
function linkOf(d: UnixDiag, v: View, hasPeer: boolean): Link {
  if (d.state === UNIX_STATE.LISTEN) return { state: 'listening', pending: d.icons ?? [] };
  if (d.peer) return { state: 'connected', peer: d.peer };
  const listener = d.type === 'dgram' ? undefined : v.waiting.get(d.ino);
  if (listener) return { state: 'pending', listener };
  if (hasPeer && (d.type === 'dgram' || d.state === UNIX_STATE.ESTABLISHED)) return { state: 'peer-closed' };
  return { state: 'unconnected' };
}

/** Where a path name's socket file is, and whether it is still this socket's. */
type Place = { abs: string; bindDir?: string; live: boolean } | { refuse: string };

function placeOf(d: UnixDiag, v: View): Place | null {
  const name = unixPath(d.name);
  if (name === null) return null;
  const relative = !name.startsWith('/');
  const abs = path.resolve(v.cwd, name);
  const here = statPath(abs, false);
  const live = !!here && !!d.vfs && here.type === 'socket' && here.dev === d.vfs.dev && here.ino === d.vfs.ino;
  if (live) return { abs, live, ...(relative ? { bindDir: v.cwd } : {}) };
  if (relative) return { refuse: `bound to the relative name ${name}, which no longer leads to its socket file from the process's directory ${v.cwd}` };
  if (here) return { refuse: `bound to ${name}, whose socket file was replaced by another ${here.type}` };
  if (statPath(path.dirname(abs))?.type !== 'dir') return { refuse: `bound to ${name}, whose directory is gone` };
  return { abs, live };
}

function holderText(holders: FdHolder[] | undefined): string {
  if (!holders?.length) return 'a process Ferry cannot see';
  const [h] = holders;
  return `pid ${h!.pid} fd ${h!.fd}${holders.length > 1 ? ` and ${holders.length - 1} more` : ''}`;
}

/**
 * Everything about a process's UNIX sockets that cannot travel, found from
 * the kernel's tables without changing anything. Both ends of every
 * connection, every client waiting on a listener and every listener a
 * client waits on must be sockets of the image (`scope`); nothing outside
 * may hold one of them or be connected to one.
 */
export function checkSockets(pid: number, fds: Array<{ fd: number; link: string }>, refusals: Refusal[], scope: ReadonlySet<number> = new Set([pid])): void {
  if (!fds.length) return;
  const refuse = (fd: number, reason: string) => refusals.push({ pid, resource: `fd ${fd}`, reason });
  if (!inOurNetns(pid)) {
    for (const s of fds) refuse(s.fd, `a UNIX socket (${s.link}) in another network namespace; Ferry reads socket state through sock_diag in its own`);
    return;
  }
  const v = view(pid, scope);
  const sockets = fds.map((s) => ({ ...s, ino: inoOf(s.link) }));
  // Whoever holds the sockets these are tied to, to name them when they are outside.
  const links = new Set(sockets.map((s) => s.link));
  const tied = (ino: number) => links.add(`socket:[${ino}]`);
  for (const s of sockets) {
    const d = v.table.get(s.ino);
    if (d?.peer) tied(d.peer);
    for (const c of d?.icons ?? []) if (c) tied(c);
    const listener = v.waiting.get(s.ino);
    if (listener) tied(listener.ino);
  }
  for (const d of v.table.values()) if (d.peer && v.inside.has(d.peer)) tied(d.ino);
  const holders = findFdHolders(links, new Set([pid, ...scope]));
  const outside = (ino: number) => holderText(holders.get(`socket:[${ino}]`));
  const paths = new Map<string, { fd: number; vfs?: number }>();
  for (const s of sockets) {
    const d = v.table.get(s.ino);
    if (!d) {
      refuse(s.fd, `the UNIX socket ${s.link} vanished from the kernel's socket table while Ferry looked`);
      continue;
    }
    const reasons: string[] = [];
    const seen = withRemoteFd(pid, s.fd, (local) => ({ hasPeer: peerName(local) !== null, filter: hasSocketFilter(local), error: hasPendingError(local) }));
    const elsewhere = holders.get(s.link);
    if (elsewhere?.length) reasons.push(`the socket is also open in ${holderText(elsewhere)}, outside the checkpoint`);
    const l = linkOf(d, v, seen.hasPeer);
    if (l.state === 'connected' && !v.inside.has(l.peer)) {
      reasons.push(`connected to socket:[${l.peer}] in ${outside(l.peer)}, outside the checkpoint`);
    } else if (l.state === 'connected' && d.type === 'dgram') {
      const p = v.table.get(l.peer);
      if (p && p.peer !== d.ino && !p.name) reasons.push(`connected to the unbound datagram socket socket:[${l.peer}], which is connected elsewhere: a state only a socketpair and a later connect make, and Ferry cannot`);
    } else if (l.state === 'pending' && !v.inside.has(l.listener.ino)) {
      reasons.push(`its connection waits to be accepted by ${showUnixName(l.listener.name)} (socket:[${l.listener.ino}] in ${outside(l.listener.ino)}), outside the checkpoint`);
    } else if (l.state === 'pending' && d.wqueue) {
      reasons.push(`it sent data on a connection that ${showUnixName(l.listener.name)} has not accepted yet; those bytes cannot be read without accepting it`);
    } else if (l.state === 'listening') {
      for (const c of l.pending) {
        if (!c) reasons.push('a connection waits in its accept queue whose client has closed; what the client sent cannot be read without accepting it');
        else if (!v.inside.has(c)) reasons.push(`a connection from socket:[${c}] in ${outside(c)}, outside the checkpoint, waits in its accept queue`);
      }
    }
    for (const other of v.table.values()) {
      if (other.peer === d.ino && !v.inside.has(other.ino) && !(l.state === 'connected' && l.peer === other.ino)) {
        reasons.push(`socket:[${other.ino}] in ${outside(other.ino)}, outside the checkpoint, is connected to it`);
      }
    }
    const place = placeOf(d, v);
    if (place && 'refuse' in place) reasons.push(place.refuse);
    else if (place) {
      // A listener and the connections it accepted share one file; two files under one path means one was removed.
      const same = paths.get(place.abs);
      if (same && same.vfs !== d.vfs?.ino) reasons.push(`bound to ${place.abs} like fd ${same.fd}, but to another socket file: one of them was removed, and both cannot be recreated under one path`);
      paths.set(place.abs, { fd: s.fd, vfs: d.vfs?.ino });
    }
    if (seen.filter) reasons.push('a socket filter (SO_ATTACH_FILTER/SO_ATTACH_BPF) is attached, which Ferry cannot copy');
    // A stream socket's error is recreated by closing its stand-in peer with data unread; any other would be lost to the first read.
    if (seen.error && (l.state !== 'peer-closed' || d.type !== 'stream')) reasons.push('it holds a pending socket error, which Ferry can neither read without clearing it nor recreate');
    for (const r of reasons) refuse(s.fd, `${r} (UNIX ${d.type} socket ${showUnixName(d.name)})`);
  }
}

const views = new WeakMap<DumpContext, View>();
/** The image's sockets, looked up once per dump: with every process stopped they cannot change. */
const dumpedScopes = new WeakMap<ReadonlySet<number>, Set<number>>();

function creds(c: Ucred | null | undefined): { pid: number; uid: number; gid: number } | undefined {
  return c ? { pid: c.pid, uid: c.uid, gid: c.gid } : undefined;
}

function timestampOf(fd: number): (typeof UNIX_TIMESTAMPS)[number] {
  for (const [name, opt] of [
    ['SO_TIMESTAMP', SO.TIMESTAMP],
    ['SO_TIMESTAMPNS', SO.TIMESTAMPNS],
    ['SO_TIMESTAMP_NEW', SO.TIMESTAMP_NEW],
    ['SO_TIMESTAMPNS_NEW', SO.TIMESTAMPNS_NEW],
  ] as const) {
    if (sockoptInt(fd, opt)) return name;
  }
  return 'none';
}

/**
 * Why the datagrams queued for a socket could not be sent again, if so. A
 * restore sends each from a socket bearing its sender's name (or from any
 * unbound socket), addressed to this one's name; a connected socket takes
 * datagrams only from its peer once connected, and a socketpair is
 * connected from birth.
 */
function datagramProblem(d: UnixDiag, l: Link, messages: Array<{ from?: Buffer }>, v: View, closedPeer: Buffer | null): string | null {
  let peer: { name?: Uint8Array; mutual: boolean } | null = null;
  if (l.state === 'connected') {
    const p = v.table.get(l.peer);
    peer = { ...(p?.name ? { name: p.name } : {}), mutual: p?.peer === d.ino };
  } else if (l.state === 'peer-closed') {
    peer = { ...(closedPeer?.length ? { name: closedPeer } : {}), mutual: !d.name };
  }
  const imageNames = [...v.inside].map((i) => v.table.get(i)).filter((o) => o?.type === 'dgram' && o.name);
  let fromPeer = 0;
  for (const m of messages) {
    if (peer && sameUnixName(m.from, peer.name) && (m.from?.length || peer.mutual)) {
      fromPeer++;
      continue;
    }
    if (m.from?.length && !imageNames.some((o) => sameUnixName(o!.name, m.from))) return `a datagram from ${showUnixName(m.from)}, a socket outside the checkpoint, is queued for it`;
    if (!m.from?.length && !d.name) return 'a datagram from an unbound socket other than its peer is queued for it, and it has no name to be sent to again';
  }
  if (peer?.mutual && fromPeer < messages.length) return 'datagrams from other senders than its socketpair peer are queued for it';
  if (peer && fromPeer && fromPeer < messages.length) return 'datagrams from its peer and from other senders are queued for it, which a restore cannot interleave';
  return null;
}

/**
 * Writes the entry of the socket behind `fd` (the description `file`).
 * Runs with the process stopped: the queue is read with MSG_PEEK through a
 * copy of the fd, message by message, and is refused when it carries what
 * cannot be sent again (file descriptors, credentials of another process,
 * datagrams from senders outside the checkpoint).
 */
export async function dumpSocket(ctx: DumpContext, file: number, fd: number, link: string, flags: number): Promise<void> {
  const { pid } = ctx;
  let v = views.get(ctx);
  if (!v) {
    v = view(pid, ctx.scope, dumpedScopes.get(ctx.scope));
    dumpedScopes.set(ctx.scope, v.inside);
    views.set(ctx, v);
  }
  const ino = inoOf(link);
  const d = v.table.get(ino);
  if (!d) throw new CheckpointRefused([{ pid, resource: `fd ${fd}`, reason: `the UNIX socket ${link} vanished from the kernel's socket table while Ferry looked` }]);
  const refuse = (reason: string) => new CheckpointRefused([{ pid, resource: `fd ${fd}`, reason: `${reason} (UNIX ${d.type} socket ${showUnixName(d.name)})` }]);
  const state = withRemoteFd(pid, fd, (local) => {
    const closedPeer = peerName(local);
    const l = linkOf(d, v, closedPeer !== null);
    const options = {
      passcred: sockoptInt(local, SO.PASSCRED) !== 0,
      passsec: sockoptInt(local, SO.PASSSEC) !== 0,
      passpidfd: sockoptInt(local, SO.PASSPIDFD, 0) !== 0,
      passrights: sockoptInt(local, SO.PASSRIGHTS, 1) !== 0,
      sndbuf: sockoptInt(local, SO.SNDBUF),
      rcvbuf: sockoptInt(local, SO.RCVBUF),
      rcvlowat: sockoptInt(local, SO.RCVLOWAT),
      peekOff: sockoptInt(local, SO.PEEK_OFF),
      timestamp: timestampOf(local),
      timestamping: sockoptInt(local, SO.TIMESTAMPING),
      rcvtimeo: sockoptTime(local, SO.RCVTIMEO),
      sndtimeo: sockoptTime(local, SO.SNDTIMEO),
    };
    const reset = l.state === 'peer-closed' && d.type === 'stream' && hasPendingError(local);
    // A stream or seqpacket socket has a queue only once connected; reading an unconnected one fails.
    const connected = l.state === 'connected' || l.state === 'pending' || l.state === 'peer-closed';
    let peeked: PeekedQueue | null = null;
    if (d.type === 'stream' && connected && d.rqueue) peeked = peekQueue(local, { stream: d.rqueue });
    else if (d.type === 'dgram' || (d.type === 'seqpacket' && connected)) peeked = peekQueue(local, { messages: true, eof: d.type === 'seqpacket' && (d.shutdown & RCV_SHUTDOWN) !== 0 });
    return { l, closedPeer, options, reset, peerCred: creds(peerCred(local)), peeked };
  });
  const { l, closedPeer, peeked } = state;
  const place = placeOf(d, v);
  if (place && 'refuse' in place) throw refuse(place.refuse);
  if (l.state === 'peer-closed' && unixPath(closedPeer ?? undefined)?.startsWith('/') === false) {
    const lender = [...v.inside].map((i) => v.table.get(i)).find((o) => o?.type === d.type && sameUnixName(o.name, closedPeer ?? undefined));
    if (!lender) throw refuse(`its closed peer was bound to the relative name ${showUnixName(closedPeer ?? undefined)}, which Ferry cannot place`);
  }
  const node = place?.live ? statPath(place.abs, false) : null;
  let queue: UnixSocketEntry['queue'];
  if (peeked?.messages.length) {
    const rights = peeked.messages.reduce((n, m) => n + m.rights, 0);
    if (rights) throw refuse(`${rights} file descriptor${rights === 1 ? ' is' : 's are'} in flight in its receive queue (SCM_RIGHTS), which Ferry cannot carry`);
    const foreign = peeked.messages.find((m) => m.creds && m.creds.pid !== 0 && m.creds.pid !== pid && !ctx.scope.has(m.creds.pid));
    if (foreign) throw refuse(`a queued message carries the credentials of pid ${foreign.creds!.pid}, a process outside the checkpoint`);
    const expected = d.type === 'dgram' ? peeked.messages[0]!.length : peeked.data.length;
    if (d.rqueue !== expected) throw refuse(`its receive queue holds ${d.rqueue} bytes by the kernel's count but ${expected} could be read without consuming them (out-of-band data?)`);
    const problem = d.type === 'dgram' ? datagramProblem(d, l, peeked.messages, v, closedPeer) : null;
    if (problem) throw refuse(problem);
    let offset = 0;
    if (peeked.data.length) {
      const padded = Buffer.alloc(Math.ceil(peeked.data.length / PAGE_SIZE) * PAGE_SIZE);
      peeked.data.copy(padded);
      offset = (await ctx.image.writePages(padded)).offset;
    }
    queue = {
      offset,
      length: peeked.data.length,
      // Only a datagram's sender can be another than the peer; its name is what recvfrom() reports.
      messages: peeked.messages.map((m) => ({ length: m.length, ...(d.type === 'dgram' && m.from?.length ? { from: new Uint8Array(m.from) } : {}), ...(m.creds ? { creds: creds(m.creds) } : {}) })),
    };
  } else if (peeked && d.rqueue) {
    throw refuse(`its receive queue holds ${d.rqueue} bytes by the kernel's count that could not be read without consuming them (out-of-band data?)`);
  }
  ctx.image.addEntry(
    UnixSocketEntry.make({
      file,
      ino,
      kind: d.type,
      flags,
      state: l.state,
      ...(d.name?.length ? { name: new Uint8Array(d.name) } : {}),
      ...(place?.bindDir ? { bindDir: place.bindDir } : {}),
      ...(node ? { node: { mode: node.mode, uid: node.uid, gid: node.gid } } : {}),
      ...(l.state === 'connected' ? { peer: l.peer } : {}),
      ...(l.state === 'listening' ? { backlog: d.wqueue, pending: l.pending } : {}),
      shutdown: d.shutdown & 3,
      ...(state.peerCred ? { peerCred: state.peerCred } : {}),
      ...(l.state === 'peer-closed' ? { peerName: new Uint8Array(closedPeer ?? []), reset: state.reset } : {}),
      options: state.options,
      ...(queue ? { queue } : {}),
    }),
  );
}
