import path from 'node:path';
import { Sys } from '../native/syscalls.js';
import { statPath } from '../native/fdinfo.js';
import { unixSockets } from '../native/sockdiag.js';
import { writeMemory } from '../native/memory.js';
import { injectSendmsg, injectAddressCall, injectSockopt, injectSockoptInt, injectSocketpair, AF_UNIX, SOCK_TYPE, SO, type Ucred } from '../native/unix.js';
import { FdEntry } from '../image/files.js';
import { UnixSocketEntry, unixPath, showUnixName, sameUnixName } from '../image/unix.js';
import { PAGE_SIZE } from '../image/constants.js';
import { parkFd, type RestoreContext } from './context.js';
import { MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, SOCK_CLOEXEC } from '../native/flags.js';

/**
 * UNIX domain sockets, recreated inside the husk with the calls that made
 * them: socketpair() for pairs, bind/listen/connect/accept for named
 * connections, so that every name, peer and SO_PEERCRED comes out as the
 * kernel made it the first time. Then the queues are refilled (what a
 * socket has to read is sent again by its peer, or by the socket whose name
 * a datagram came from), shutdowns and options are applied last.
 *
 * Sockets tied to each other (peers, a listener with its connections and
 * waiting clients, datagram senders and receivers) are one group, made
 * whole by the first process in restore order that holds any socket of it:
 * the calls above only work on fds of one process. It parks every socket
 * of the group and registers each as the home of its file description
 * ("file:ID"); the files module of every process holding it, this one
 * included, then fetches it from there onto its fd numbers. The checkpoint
 * made sure no group reaches outside the image.
 *
 * Sockets that exist only to reproduce a state are made and closed here:
 * the other end of a connection whose peer had closed, a listener lending a
 * name to connections whose own listener is gone, an unbound sender of
 * datagrams.
 *
 * Socket files: a path name is bound again, which creates its file; a stale
 * file left at that path by the checkpointed socket (or any socket file no
 * socket in this network namespace is bound to) is removed first, anything
 * else there refuses the restore (preflight). A name whose file had been
 * removed is bound and its file removed again at the end. Files get their
 * recorded mode and owner.
 */

const SOCK_NONBLOCK = 0o4000;
const F_SETFL = 4;
/** The status flags F_SETFL can change: O_APPEND, O_NONBLOCK, O_DIRECT, O_NOATIME. */
const SETFL_MASK = 0o2000 | 0o4000 | 0o40000 | 0o1000000;
const DONOR_BACKLOG = 64;
/** Stream bytes per injected send. */
const STREAM_CHUNK = 1 << 20;

type Sock = UnixSocketEntry;

/** A socket made here: one of the image's, or a stand-in (closed at the end). */
interface Made {
  s: Sock;
  fd: number;
}

function absPath(s: { name?: Uint8Array; bindDir?: string }): string | null {
  const p = unixPath(s.name);
  return p === null ? null : path.resolve(s.bindDir ?? '/', p);
}

/** Stream and seqpacket sockets sharing a name: a listener and the connections it accepted. */
function groupKey(s: { kind: string; name?: Uint8Array; bindDir?: string }): string | null {
  return s.name?.length ? `${s.kind}:${s.bindDir ?? ''}:${Buffer.from(s.name).toString('hex')}` : null;
}

/**
 * The image's sockets as the restore builds them: a socket whose peer had
 * closed gets a stand-in peer (negative inode, closed again at the end), so
 * that it is made like any connected socket and its queue has a sender.
 */
function withStandIns(image: Sock[]): { socks: Sock[]; standIns: Map<number, number> } {
  const socks: Sock[] = [];
  const standIns = new Map<number, number>();
  for (const s of image) {
    if (s.state !== 'peer-closed') {
      socks.push(s);
      continue;
    }
    const ino = -(standIns.size + 1);
    standIns.set(s.ino, ino);
    // A datagram socket without a name was reachable only as half of a socketpair; with one, it was connected one way.
    const pair = s.kind !== 'dgram' || !s.name?.length;
    // A relative name is one an image socket still has (the checkpoint made sure): the peer was accepted from it.
    const lender = unixPath(s.peerName)?.startsWith('/') === false ? image.find((o) => o.kind === s.kind && sameUnixName(o.name, s.peerName)) : undefined;
    socks.push({ ...s, state: 'connected', peer: ino });
    socks.push(UnixSocketEntry.make({
      file: -1,
      ino,
      kind: s.kind,
      flags: 0,
      state: pair ? 'connected' : 'unconnected',
      ...(s.peerName?.length ? { name: s.peerName } : {}),
      ...(lender?.bindDir ? { bindDir: lender.bindDir } : {}),
      ...(pair ? { peer: s.ino } : {}),
      shutdown: 0,
      ...(s.peerCred ? { peerCred: s.peerCred } : {}),
      options: { ...s.options, passcred: false, passsec: false, passpidfd: false, passrights: true, rcvlowat: 1, peekOff: -1, timestamp: 'none', timestamping: 0 },
    }));
  }
  return { socks, standIns };
}

/** Every path and abstract name the restore binds: each once (a listener and its connections share one). */
function namesToBind(image: Sock[]): Array<{ type: string; name: Uint8Array; abs: string | null }> {
  const seen = new Map<string, { type: string; name: Uint8Array; abs: string | null }>();
  for (const s of withStandIns(image).socks) {
    const key = groupKey(s);
    if (key && s.name) seen.set(key, { type: s.kind, name: s.name, abs: absPath(s) });
  }
  return [...seen.values()];
}

/**
 * What is in the way of the names the image binds: a path must be free or a
 * socket file nobody is bound to (a leftover, removed by the restore), and
 * an abstract name must be free in this network namespace.
 */
export function preflight(ctx: Pick<RestoreContext, 'image'>, problems: string[]): void {
  const socks = ctx.image.entriesOf(UnixSocketEntry);
  if (!socks.length) return;
  const table = [...unixSockets().values()];
  for (const n of namesToBind(socks)) {
    if (n.abs) {
      if (statPath(path.dirname(n.abs))?.type !== 'dir') problems.push(`the UNIX socket name ${n.abs}: its directory does not exist here`);
      const here = statPath(n.abs, false);
      if (!here) continue;
      if (here.type !== 'socket') problems.push(`the UNIX socket name ${n.abs} is taken here by a ${here.type}`);
      else if (table.some((d) => d.vfs?.ino === here.ino && d.vfs.dev === here.dev)) problems.push(`the UNIX socket name ${n.abs} is in use here by a live socket`);
    } else if (table.some((d) => d.type === n.type && sameUnixName(d.name, n.name))) {
      problems.push(`the abstract UNIX socket name ${showUnixName(n.name)} is in use here by a live ${n.type} socket`);
    }
  }
}

/** The queue bytes of the image, read once and handed to the husk through one scratch mapping of their largest piece. */
class Staging {
  private addr = 0;

  constructor(private readonly ctx: RestoreContext, private readonly size: number) {}

  /** Copies `data` into the husk; returns its address there. */
  put(data: Buffer): number {
    if (!this.addr) this.addr = this.ctx.injector.call('mmap(unix staging)', Sys.mmap, 0, this.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (data.length) writeMemory(this.ctx.pid, this.addr, data);
    return this.addr;
  }

  free(): void {
    if (this.addr) this.ctx.injector.call('munmap(unix staging)', Sys.munmap, this.addr, this.size);
    this.addr = 0;
  }
}

class Builder {
  readonly made = new Map<number, Made>();
  private readonly byIno: Map<number, Sock>;
  private readonly groups = new Map<string, Sock[]>();
  private readonly donors = new Map<string, number>();
  private readonly removeAtEnd = new Set<string>();
  private readonly fdNumbers = new Map<number, string[]>();
  private unboundSender: number | null = null;
  /** Send buffer of the helper sockets: room for every queued byte of the image. */
  private readonly helperSndbuf: number;

  constructor(private readonly ctx: RestoreContext, readonly socks: Sock[]) {
    this.byIno = new Map(socks.map((s) => [s.ino, s]));
    for (const s of socks) {
      const key = s.kind === 'dgram' ? null : groupKey(s);
      if (key) this.groups.set(key, [...(this.groups.get(key) ?? []), s]);
    }
    for (const e of ctx.image.entriesOf(FdEntry)) {
      this.fdNumbers.set(e.file, [...(this.fdNumbers.get(e.file) ?? []), e.pid === ctx.imagePid ? `fd ${e.fd}` : `pid ${e.pid} fd ${e.fd}`]);
    }
    this.helperSndbuf = 2 * (socks.reduce((n, s) => n + (s.queue?.length ?? 0), 0) + (1 << 16));
  }

  private get inj() {
    return this.ctx.injector;
  }

  /** How an error names a socket: by the fds the processes had it at. */
  what(s: Sock): string {
    if (s.file < 0) return `the stand-in for the closed peer ${showUnixName(s.name)}`;
    return `${(this.fdNumbers.get(s.file) ?? []).join(', ') || 'fd ?'} (UNIX ${s.kind} socket ${showUnixName(s.name)})`;
  }

  peerOf(s: Sock): Sock {
    const p = s.peer !== undefined ? this.byIno.get(s.peer) : undefined;
    if (!p) throw new Error(`${this.what(s)} is connected to socket ${s.peer}, which the image lacks`);
    return p;
  }

  byInode(ino: number, of: Sock): Sock {
    const s = this.byIno.get(ino);
    if (!s) throw new Error(`${this.what(of)} names socket ${ino}, which the image lacks`);
    return s;
  }

  fdOf(s: Sock): number {
    const m = this.made.get(s.ino);
    if (!m) throw new Error(`${this.what(s)} was not created`);
    return m.fd;
  }

  /** Runs `make` with the effective ids SO_PEERCRED should record: socketpair, listen and connect take them from the caller. */
  private as<T>(cred: Ucred | undefined, make: () => T): T {
    const inj = this.inj;
    if (!cred || (cred.uid === 0 && cred.gid === 0)) return make();
    inj.call('setresgid', Sys.setresgid, -1, cred.gid, -1);
    inj.call('setresuid', Sys.setresuid, -1, cred.uid, -1);
    try {
      return make();
    } finally {
      inj.call('setresuid', Sys.setresuid, -1, 0, -1);
      inj.call('setresgid', Sys.setresgid, -1, 0, -1);
    }
  }

  /** Notes a made socket and gives it its buffer sizes before anything is sent through it. */
  private record(s: Sock, fd: number): number {
    this.made.set(s.ino, { s, fd });
    const sndbuf = s.file < 0 ? Math.max(s.options.sndbuf, this.helperSndbuf) : s.options.sndbuf;
    for (const [opt, force, want] of [
      [SO.SNDBUF, SO.SNDBUFFORCE, sndbuf],
      [SO.RCVBUF, SO.RCVBUFFORCE, s.options.rcvbuf],
    ] as const) {
      if (injectSockoptInt(this.inj, fd, opt) !== want) injectSockopt(this.inj, fd, force, want / 2);
    }
    return fd;
  }

  private socket(type: Sock['kind']): number {
    return this.inj.call('socket(AF_UNIX)', Sys.socket, AF_UNIX, SOCK_TYPE[type] | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  }

  private unlink(abs: string): void {
    const inj = this.inj;
    inj.reset();
    inj.call(`unlink(${abs})`, Sys.unlink, inj.put(Buffer.from(abs + '\0')));
    inj.reset();
  }

  /** bind() with the name as the program gave it (a relative one from its directory), then the file's mode and owner. */
  private bind(fd: number, s: Sock): void {
    if (!s.name?.length) return;
    const inj = this.inj;
    if (s.bindDir) {
      inj.reset();
      inj.call(`chdir(${s.bindDir})`, Sys.chdir, inj.put(Buffer.from(s.bindDir + '\0')));
      inj.reset();
    }
    injectAddressCall(inj, 'bind', fd, s.name, showUnixName(s.name));
    const abs = absPath(s);
    if (!abs) return;
    inj.reset();
    const p = inj.put(Buffer.from(abs + '\0'));
    if (s.node) {
      inj.call(`chown(${abs})`, Sys.chown, p, s.node.uid, s.node.gid);
      inj.call(`chmod(${abs})`, Sys.chmod, p, s.node.mode);
    } else {
      // Its file had been removed: anyone may connect through it until it is removed again at the end.
      inj.call(`chmod(${abs})`, Sys.chmod, p, 0o777);
      this.removeAtEnd.add(abs);
    }
    inj.reset();
  }

  /** The address to reach a bound socket at: a relative path resolved, so the husk's directory does not matter. */
  private address(s: Sock): Uint8Array {
    const abs = absPath(s);
    if (abs) return Buffer.from(abs + '\0');
    if (!s.name?.length) throw new Error(`${this.what(s)} has no name to reach it by`);
    return s.name;
  }

  private connect(fd: number, to: Sock): void {
    injectAddressCall(this.inj, 'connect', fd, this.address(to), showUnixName(to.name));
  }

  /** Removes leftover socket files where names are bound (preflight made sure nobody is bound to them). */
  clearNames(image: Sock[]): void {
    for (const n of namesToBind(image)) if (n.abs && statPath(n.abs, false)) this.unlink(n.abs);
  }

  listen(s: Sock): void {
    const fd = this.record(s, this.socket(s.kind));
    this.bind(fd, s);
    this.as(s.peerCred, () => this.inj.call(`listen(${fd})`, Sys.listen, fd, s.backlog ?? 0));
  }

  /** The listener that hands out connections named like `x`: the image's own, or a stand-in bound to the name. */
  private listenerFor(x: Sock, connector: Sock): number {
    const key = groupKey(x)!;
    const own = (this.groups.get(key) ?? []).find((g) => g.state === 'listening');
    if (own) return this.fdOf(own);
    let fd = this.donors.get(key);
    if (fd === undefined) {
      const l = this.socket(x.kind);
      this.donors.set(key, l);
      this.bind(l, x);
      this.as(connector.peerCred, () => this.inj.call(`listen(${l})`, Sys.listen, l, DONOR_BACKLOG));
      fd = l;
    }
    return fd;
  }

  /** The end of a connection that came out of accept(): the one sharing its name with a listener or with other connections. */
  private acceptedEnd(a: Sock, b: Sock): Sock | null {
    for (const x of [a, b]) {
      const group = this.groups.get(groupKey(x) ?? '') ?? [];
      if (group.length > 1 || group.some((g) => g.state === 'listening')) return x;
    }
    return null;
  }

  /** Both ends of a stream or seqpacket connection. */
  connection(a: Sock, b: Sock): void {
    const inj = this.inj;
    const x = this.acceptedEnd(a, b);
    if (!x) {
      const [fa, fb] = this.as(a.peerCred, () => injectSocketpair(inj, SOCK_TYPE[a.kind] | SOCK_NONBLOCK | SOCK_CLOEXEC));
      this.record(a, fa);
      this.record(b, fb);
      this.bind(fa, a);
      this.bind(fb, b);
      return;
    }
    const y = x === a ? b : a;
    const yfd = this.record(y, this.socket(y.kind));
    this.bind(yfd, y);
    const listener = this.listenerFor(x, y);
    // The accepted end's SO_PEERCRED is whoever connected; the connector's is whoever listened.
    this.as(x.peerCred, () => this.connect(yfd, x));
    this.record(x, inj.call(`accept4(${listener})`, Sys.accept4, listener, 0, 0, SOCK_NONBLOCK | SOCK_CLOEXEC));
  }

  /** A client whose connection waits in `l`'s accept queue. */
  pending(c: Sock, l: Sock): void {
    const fd = this.record(c, this.socket(c.kind));
    this.bind(fd, c);
    this.as(l.peerCred, () => this.connect(fd, l));
  }

  datagramPair(a: Sock, b: Sock): void {
    const [fa, fb] = this.as(a.peerCred, () => injectSocketpair(this.inj, SOCK_TYPE.dgram | SOCK_NONBLOCK | SOCK_CLOEXEC));
    this.record(a, fa);
    this.record(b, fb);
    this.bind(fa, a);
    this.bind(fb, b);
  }

  single(s: Sock): void {
    this.bind(this.record(s, this.socket(s.kind)), s);
  }

  connectDatagram(s: Sock): void {
    this.connect(this.fdOf(s), this.peerOf(s));
  }

  /** Whether every datagram queued for `s` came from the socket it is connected to, one way. */
  fromPeerOnly(s: Sock): boolean {
    const p = this.peerOf(s);
    return !!s.queue && p.peer !== s.ino && s.queue.messages.every((m) => sameUnixName(m.from, p.name));
  }

  /** Sends one message (or a piece of a stream) staged at `at`; a message goes whole or not at all. */
  private send(from: number, r: Sock, at: number, length: number, creds: Ucred | undefined): void {
    // A named receiver is addressed, so the sender need not be connected to it (yet); an unnamed one only has its peer.
    const to = r.kind === 'dgram' && r.name?.length ? this.address(r) : undefined;
    for (let done = 0; ; ) {
      // The image has pids as Ferry saw them; the kernel reads SCM_CREDENTIALS in the sender's pid namespace.
      const n = injectSendmsg(this.inj, from, at + done, length - done, { ...(to ? { to } : {}), ...(creds?.pid ? { creds: { ...creds, pid: this.ctx.pids.vpid(creds.pid) } } : {}) });
      done += n;
      if (done === length) return;
      if (r.kind !== 'stream') throw new Error(`the kernel took ${n} bytes of a ${length}-byte message`);
      if (n === 0) throw new Error(`the sender's buffer took nothing more after ${done} of ${length} bytes`);
    }
  }

  /** Sends again what `r` had to read, from whoever sent it. */
  async refill(r: Sock, staging: Staging): Promise<void> {
    const q = r.queue;
    if (!q) return;
    const all = Buffer.from(await this.ctx.image.readPages(q.offset, Math.ceil(q.length / PAGE_SIZE) * PAGE_SIZE)).subarray(0, q.length);
    try {
      let at = 0;
      for (const m of q.messages) {
        const bytes = all.subarray(at, at + m.length);
        at += m.length;
        const from = r.kind === 'dgram' ? this.datagramSender(r, m.from) : this.fdOf(this.peerOf(r));
        for (let off = 0; off < bytes.length || off === 0; off += STREAM_CHUNK) {
          const piece = r.kind === 'stream' ? bytes.subarray(off, off + STREAM_CHUNK) : bytes;
          this.send(from, r, staging.put(piece), piece.length, m.creds);
          if (r.kind !== 'stream') break;
        }
      }
    } catch (e) {
      throw new Error(`restoring the receive queue of ${this.what(r)}: ${(e as Error).message}`, { cause: e });
    }
  }

  /** Who sends a datagram that came from `from`: the socket bound to that name, the unbound peer, or an unbound helper. */
  private datagramSender(r: Sock, from: Uint8Array | undefined): number {
    const named = from?.length ? [...this.made.values()].find((m) => m.s.kind === 'dgram' && sameUnixName(m.s.name, from)) : undefined;
    if (named) return named.fd;
    if (from?.length) throw new Error(`a datagram from ${showUnixName(from)}, which no socket of the image is bound to`);
    const peer = r.peer !== undefined ? this.byIno.get(r.peer) : undefined;
    if (peer && !peer.name?.length && peer.peer === r.ino) return this.fdOf(peer);
    if (!r.name?.length) throw new Error('a datagram from an unbound socket other than its peer, to a socket without a name');
    if (this.unboundSender === null) {
      const fd = this.socket('dgram');
      injectSockopt(this.inj, fd, SO.SNDBUFFORCE, this.helperSndbuf / 2);
      this.unboundSender = fd;
    }
    return this.unboundSender;
  }

  /** Closes a stand-in peer: its real end then sees EOF, EPIPE, and ECONNRESET when the peer had left unread data. */
  closeStandIn(real: Sock, standIn: Sock): void {
    const inj = this.inj;
    if (real.reset) {
      inj.reset();
      injectSendmsg(inj, this.fdOf(real), inj.put(Buffer.from('x')), 1);
    }
    inj.call('close(stand-in)', Sys.close, this.fdOf(standIn));
    this.made.delete(standIn.ino);
  }

  shutdown(s: Sock): void {
    const fd = this.fdOf(s);
    // sk_shutdown's bits (1 receive, 2 send) are shutdown()'s `how` plus one.
    if (s.shutdown) this.inj.call(`shutdown(${fd}, ${s.shutdown - 1})`, Sys.shutdown, fd, s.shutdown - 1);
  }

  /** Options a fresh socket lacks, and the description's flags. SO_PASS* come last: with them, sending from an unbound socket would bind it. */
  options(s: Sock): void {
    const inj = this.inj;
    const fd = this.fdOf(s);
    const o = s.options;
    const ints: Array<[number, number, boolean]> = [
      [SO.RCVLOWAT, o.rcvlowat, o.rcvlowat !== 1],
      [SO.PEEK_OFF, o.peekOff, o.peekOff !== -1],
      [SO.TIMESTAMPING, o.timestamping, o.timestamping !== 0],
      [SO.PASSRIGHTS, 0, !o.passrights],
      [SO.PASSSEC, 1, o.passsec],
      [SO.PASSPIDFD, 1, o.passpidfd],
      [SO.PASSCRED, 1, o.passcred],
    ];
    if (o.timestamp !== 'none') ints.unshift([TIMESTAMP_OPTS[o.timestamp], 1, true]);
    for (const [opt, value, needed] of ints) if (needed) injectSockopt(inj, fd, opt, value);
    if (o.rcvtimeo.sec || o.rcvtimeo.usec) injectSockopt(inj, fd, SO.RCVTIMEO, o.rcvtimeo);
    if (o.sndtimeo.sec || o.sndtimeo.usec) injectSockopt(inj, fd, SO.SNDTIMEO, o.sndtimeo);
    inj.call('fcntl(F_SETFL)', Sys.fcntl, fd, F_SETFL, s.flags & SETFL_MASK);
  }

  /** Closes the helpers and removes the files of names whose files had been removed. */
  finish(): void {
    for (const fd of [...this.donors.values(), ...(this.unboundSender === null ? [] : [this.unboundSender])]) this.inj.call('close(helper)', Sys.close, fd);
    for (const abs of this.removeAtEnd) this.unlink(abs);
  }
}

const TIMESTAMP_OPTS = { SO_TIMESTAMP: SO.TIMESTAMP, SO_TIMESTAMPNS: SO.TIMESTAMPNS, SO_TIMESTAMP_NEW: SO.TIMESTAMP_NEW, SO_TIMESTAMPNS_NEW: SO.TIMESTAMPNS_NEW } as const;

/**
 * `from` and every socket of the image tied to them, wherever they live:
 * what one Builder must make together. Ties: peers (either way), a listener
 * and the clients in its queue, stream and seqpacket sockets sharing a name
 * (a listener and the connections it accepted, or a stand-in listener
 * lending that name), a datagram and the socket bound to the name it came
 * from, a closed peer's relative name and the socket lending it.
 */
function tiedGroup(all: Sock[], from: Sock[]): Sock[] {
  const byIno = new Map(all.map((s) => [s.ino, s]));
  const named = new Map<string, Sock[]>();
  for (const s of all) {
    const key = groupKey(s);
    if (key) named.set(key, [...(named.get(key) ?? []), s]);
  }
  const pointedAt = new Map<number, Sock[]>();
  for (const s of all) if (s.peer !== undefined) pointedAt.set(s.peer, [...(pointedAt.get(s.peer) ?? []), s]);
  const waitingOn = new Map<number, Sock>();
  for (const s of all) for (const c of s.pending ?? []) waitingOn.set(c, s);
  const ties = (s: Sock): Array<Sock | undefined> => [
    s.peer !== undefined ? byIno.get(s.peer) : undefined,
    ...(pointedAt.get(s.ino) ?? []),
    ...(s.pending ?? []).map((c) => byIno.get(c)),
    waitingOn.get(s.ino),
    ...(named.get(groupKey(s) ?? '') ?? []),
    ...(s.queue?.messages ?? []).flatMap((m) => (s.kind === 'dgram' && m.from?.length ? all.filter((o) => o.kind === 'dgram' && sameUnixName(o.name, m.from)) : [])),
    ...(s.state === 'peer-closed' && s.peerName?.length ? all.filter((o) => o.kind === s.kind && sameUnixName(o.name, s.peerName)) : []),
  ];
  const group = new Set(from);
  for (const s of group) for (const t of ties(s)) if (t) group.add(t);
  return all.filter((s) => group.has(s));
}

/**
 * Makes the UNIX sockets this process holds that no earlier process made,
 * with every socket of the image tied to them, in an order where each step
 * finds what it needs: listeners, connections (accepted ones while their
 * listener's queue is still empty), the clients still waiting in accept
 * queues, datagram pairs and the rest; then the queues, the datagram
 * connections (after the queues whose senders could not have reached a
 * connected socket, before those only its peer fills), stand-ins closed,
 * shutdowns, options.
 */
export async function restore(ctx: RestoreContext): Promise<void> {
  const held = new Set(ctx.image.entriesOf(FdEntry).filter((e) => e.pid === ctx.imagePid).map((e) => e.file));
  const all = ctx.image.entriesOf(UnixSocketEntry);
  // A group with a socket made by an earlier process was made whole there, so every socket of it has a home.
  const mine = all.filter((s) => held.has(s.file) && !ctx.shared.homes.has(`file:${s.file}`));
  if (!mine.length) return;
  const image = tiedGroup(all, mine);
  const { socks, standIns } = withStandIns(image);
  const b = new Builder(ctx, socks);
  b.clearNames(image);
  const listeners = socks.filter((s) => s.state === 'listening');
  for (const l of listeners) b.listen(l);
  for (const s of socks) if (s.kind !== 'dgram' && s.state === 'connected' && !b.made.has(s.ino)) b.connection(s, b.peerOf(s));
  for (const l of listeners) for (const c of l.pending ?? []) b.pending(b.byInode(c, l), l);
  for (const s of socks) {
    if (s.kind !== 'dgram' || s.state !== 'connected' || b.made.has(s.ino)) continue;
    const p = b.peerOf(s);
    if (p.peer === s.ino) b.datagramPair(s, p);
  }
  for (const s of socks) if (!b.made.has(s.ino)) b.single(s);

  const oneWay = socks.filter((s) => s.kind === 'dgram' && s.state === 'connected' && b.peerOf(s).peer !== s.ino);
  const late = new Set(oneWay.filter((s) => b.fromPeerOnly(s)));
  // A message is staged whole; stream bytes in pieces.
  const largest = Math.max(1, ...socks.flatMap((s) => s.queue?.messages.map((m) => (s.kind === 'stream' ? Math.min(m.length, STREAM_CHUNK) : m.length)) ?? []));
  const staging = new Staging(ctx, Math.ceil(largest / PAGE_SIZE) * PAGE_SIZE);
  try {
    for (const s of socks) if (!late.has(s)) await b.refill(s, staging);
    for (const s of oneWay) b.connectDatagram(s);
    for (const s of late) await b.refill(s, staging);
  } finally {
    staging.free();
  }
  const real = socks.filter((s) => s.file >= 0);
  for (const s of real) {
    const standIn = standIns.get(s.ino);
    if (standIn !== undefined) b.closeStandIn(s, b.byInode(standIn, s));
  }
  // A closing stream or seqpacket peer shut its other end down both ways already.
  for (const s of real) if (s.kind === 'dgram' || !standIns.has(s.ino)) b.shutdown(s);
  for (const s of real) b.options(s);
  b.finish();
  for (const s of real) ctx.shared.homes.set(`file:${s.file}`, { pid: ctx.pid, fd: parkFd(ctx, b.fdOf(s)) });
}
